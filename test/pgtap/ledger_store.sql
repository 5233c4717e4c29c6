-- pgTAP: the ledger's two stores (docs/ledger.md, "Stores: SQL and direct").  The direct store
-- writes fincore's tables through the heap; a table with a trigger the write would fire is
-- written by the SQL store, so that a user's trigger still runs.  Both write the same rows
-- (test/integration/test_ledger_store.py compares them on random workloads).
BEGIN;
SET search_path = fincore, public;
SELECT plan(17);

SELECT fincore.create_tenant('Stores', 'aaaaaaaa-5707-4000-8000-000000000001');
SELECT fincore.set_tenant('aaaaaaaa-5707-4000-8000-000000000001');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-5707-4000-8000-0000000000a1');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-5707-4000-8000-0000000000a2', flags => '{history}');

SELECT is((SELECT boot_val FROM pg_settings WHERE name = 'fincore.ledger_store'), 'auto',
    'the direct store is the default (fincore.ledger_store = auto)');
SELECT throws_ok($$SET fincore.ledger_store = 'heap'$$, '22023', NULL, 'fincore.ledger_store takes auto or sql');

-- ---- the same transfers through both stores ----------------------------------------------------
SET LOCAL fincore.ledger_store = 'auto';
SELECT lives_ok($$SELECT fincore.transfer('aaaaaaaa-5707-4000-8000-0000000000a1', 'aaaaaaaa-5707-4000-8000-0000000000a2', 100)$$,
    'a transfer through the direct store');
SET LOCAL fincore.ledger_store = 'sql';
SELECT lives_ok($$SELECT fincore.transfer('aaaaaaaa-5707-4000-8000-0000000000a1', 'aaaaaaaa-5707-4000-8000-0000000000a2', 10)$$,
    'a transfer through the SQL store');
SELECT lives_ok($$SELECT fincore.create_transfers(ARRAY[
        ROW(NULL, 'aaaaaaaa-5707-4000-8000-0000000000a2', 'aaaaaaaa-5707-4000-8000-0000000000a1', 1, NULL, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW(NULL, 'aaaaaaaa-5707-4000-8000-0000000000a1', 'aaaaaaaa-5707-4000-8000-0000000000a2', 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[])$$, 'a batch through the SQL store');
SET LOCAL fincore.ledger_store = 'auto';
SELECT lives_ok($$SELECT fincore.create_transfers(ARRAY[
        ROW(NULL, 'aaaaaaaa-5707-4000-8000-0000000000a2', 'aaaaaaaa-5707-4000-8000-0000000000a1', 1, NULL, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW(NULL, 'aaaaaaaa-5707-4000-8000-0000000000a1', 'aaaaaaaa-5707-4000-8000-0000000000a2', 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[])$$, 'the same batch through the direct store');
SELECT results_eq($$SELECT id::text, debits_posted, credits_posted FROM fincore.accounts
                    WHERE tenant_id = 'aaaaaaaa-5707-4000-8000-000000000001' ORDER BY id$$,
    $$VALUES ('aaaaaaaa-5707-4000-8000-0000000000a1', 114::bigint, 2::bigint),
             ('aaaaaaaa-5707-4000-8000-0000000000a2', 2::bigint, 114::bigint)$$,
    'both stores set the same counters');
SELECT is((SELECT count(*) FROM fincore.account_history WHERE account_id = 'aaaaaaaa-5707-4000-8000-0000000000a2'),
    6::bigint, 'and the history account has a row per transfer from both');
SELECT is_empty($$SELECT * FROM fincore.verify()$$, 'verify() finds nothing wrong');

-- ---- a user's trigger still fires: the SQL store writes that table -----------------------------
SET LOCAL fincore.ledger_store = 'auto';
CREATE TABLE public.store_trigger_log (tbl text, op text, n int);
-- SECURITY DEFINER: the trigger runs as whoever writes the table, here fincore's owner.
CREATE FUNCTION public.store_trigger_log() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.store_trigger_log VALUES (TG_TABLE_NAME, TG_OP, 1);
    RETURN NEW;
END $$;
CREATE TRIGGER user_insert_trigger AFTER INSERT ON fincore.transfers
    FOR EACH ROW EXECUTE FUNCTION public.store_trigger_log();
SELECT lives_ok($$SELECT fincore.transfer('aaaaaaaa-5707-4000-8000-0000000000a1', 'aaaaaaaa-5707-4000-8000-0000000000a2', 3)$$,
    'a transfer with a user''s INSERT trigger on fincore.transfers');
SELECT results_eq($$SELECT tbl, op, count(*) FROM public.store_trigger_log GROUP BY 1, 2$$,
    $$VALUES ('transfers'::text, 'INSERT'::text, 1::bigint)$$, 'the trigger fired for the transfer row');
DROP TRIGGER user_insert_trigger ON fincore.transfers;
TRUNCATE public.store_trigger_log;

-- An UPDATE trigger on the balance columns fires; one on other columns (as fincore's own
-- accounts_immutable) does not, and the direct store may write the balances.
CREATE TRIGGER user_update_trigger BEFORE UPDATE OF debits_posted ON fincore.accounts
    FOR EACH ROW EXECUTE FUNCTION public.store_trigger_log();
SELECT lives_ok($$SELECT fincore.transfer('aaaaaaaa-5707-4000-8000-0000000000a1', 'aaaaaaaa-5707-4000-8000-0000000000a2', 4)$$,
    'a transfer with a user''s UPDATE OF debits_posted trigger on fincore.accounts');
SELECT results_eq($$SELECT tbl, op, count(*) FROM public.store_trigger_log GROUP BY 1, 2$$,
    $$VALUES ('accounts'::text, 'UPDATE'::text, 2::bigint)$$, 'it fired for both accounts');
DROP TRIGGER user_update_trigger ON fincore.accounts;
SELECT results_eq($$SELECT debits_posted, credits_posted FROM fincore.accounts
                    WHERE id = 'aaaaaaaa-5707-4000-8000-0000000000a1'$$,
    $$VALUES (121::bigint, 2::bigint)$$, 'and the balances are right');

-- ---- the internal functions of transfer events refuse made-up input with a ZF code -------------
SELECT throws_ok($$SELECT fincore._ledger_event_id(1, 'infinity')$$, 'ZF501', NULL,
    'an event id needs a finite time (ZF501)');
SELECT throws_ok($$SELECT fincore._transfer_event_payload(jsonb_populate_record(NULL::fincore.transfers, '{"amount": 1}'))$$,
    'ZF321', 'a transfer event needs the transfer''s id', 'a payload needs the row''s columns (ZF321)');
SELECT throws_ok($$SELECT fincore._transfer_event_payload(jsonb_populate_record(t, '{"kind": "gift"}'))
                     FROM fincore.transfers t LIMIT 1$$,
    'ZF321', '"gift" is not a kind of transfer', 'and a kind the ledger writes (ZF321)');

SELECT * FROM finish();
ROLLBACK;
