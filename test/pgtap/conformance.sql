-- pgTAP: the ledger against TigerBeetle's rules (src/state_machine.zig, create_transfers and
-- create_accounts results).  Each test names the rule it mirrors; every refusal is checked to write
-- nothing: no transfer, no hold, no counter change, no delta, no history row, no event.
BEGIN;
SET search_path = fincore, public;
SELECT plan(75);

SELECT fincore.create_tenant('Conformance', 'aaaaaaaa-c0f0-4000-8000-000000000001');
SELECT fincore.set_tenant('aaaaaaaa-c0f0-4000-8000-000000000001');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c0f0-4000-8000-0000000000a1');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c0f0-4000-8000-0000000000a2', flags => '{history}');
CREATE FUNCTION pg_temp.state() RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM fincore.transfers)::text || '/' || (SELECT count(*) FROM fincore.pending_holds)::text
           || '/' || (SELECT count(*) FROM fincore.account_deltas)::text || '/' || (SELECT count(*) FROM fincore.account_history)::text
           || '/' || (SELECT coalesce(sum(debits_pending + debits_posted + credits_pending + credits_posted), 0) FROM fincore.accounts)::text
           || '/' || (SELECT count(*) FROM fincore.accounts)::text
           || '/' || (SELECT count(*) FROM fincore.outbox_stream WHERE type LIKE 'transfer.%')::text $$;
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 100);
CREATE TEMP TABLE before AS SELECT pg_temp.state() AS s;

-- ---- id_must_not_be_zero, id_must_not_be_int_max (transfers and accounts) -------------------------
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           '00000000-0000-0000-0000-000000000000')$$,
    'ZF329', 'transfer id 00000000-0000-0000-0000-000000000000 is reserved', 'TigerBeetle id_must_not_be_zero: the nil UUID (ZF329)');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           'ffffffff-ffff-ffff-ffff-ffffffffffff')$$,
    'ZF329', NULL, 'TigerBeetle id_must_not_be_int_max: the all-ones UUID (ZF329)');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           '00000000-0000-0000-0000-000000000000', pending => true)$$,
    'ZF329', NULL, 'id_must_not_be_zero for a hold');
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('00000000-0000-0000-0000-000000000000', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('ffffffff-ffff-ffff-ffff-ffffffffffff', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        -- precedence: the reserved id comes before every other check, here a zero amount and one account
        ROW('00000000-0000-0000-0000-000000000000', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', -5, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('id_must_not_be_zero'::text), ('id_must_not_be_int_max'), ('id_must_not_be_zero')$$,
    'a batch: id_must_not_be_zero and id_must_not_be_int_max per item, before any other check');
SELECT throws_ok($$SELECT fincore.create_account('USD', id => '00000000-0000-0000-0000-000000000000')$$, 'ZF329',
    'account id 00000000-0000-0000-0000-000000000000 is reserved', 'TigerBeetle create_accounts id_must_not_be_zero (ZF329)');
SELECT throws_ok($$SELECT fincore.create_account('USD', id => 'ffffffff-ffff-ffff-ffff-ffffffffffff')$$, 'ZF329',
    NULL, 'TigerBeetle create_accounts id_must_not_be_int_max (ZF329)');
SELECT throws_ok($$SELECT fincore.create_account('no such currency', id => '00000000-0000-0000-0000-000000000000')$$, 'ZF329',
    NULL, 'TigerBeetle precedence for accounts: the reserved id before the currency');
SELECT throws_ok($$SELECT fincore.create_account('USD', flags => '{hot,history}', id => 'ffffffff-ffff-ffff-ffff-ffffffffffff')$$, 'ZF329',
    NULL, '... and before the flags');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'no reserved id wrote anything');

-- ---- overflows_timeout ----------------------------------------------------------------------------
-- TigerBeetle refuses a hold whose timeout would carry its expiry past the largest timestamp; a
-- PostgreSQL timestamp ends in the year 294276.
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           pending => true, timeout => '300000 years')$$,
    'ZF318', 'timeout 300000 years overflows: the hold would expire after the last representable time',
    'TigerBeetle overflows_timeout: months beyond the last timestamp (ZF318, not a raw 22008)');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           pending => true, timeout => '110000000 days')$$,
    'ZF318', NULL, 'overflows_timeout: days');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           pending => true, timeout => '2562047788 hours')$$,
    'ZF318', NULL, 'overflows_timeout: time');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           pending => true, timeout => '2147483647 mons 2147483647 days')$$,
    'ZF318', NULL, 'overflows_timeout: the largest interval there is');
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000b1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, true, '300000 years', NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000b2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, true, '1 hour', NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000b3', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, true, '2147483647 days', NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('overflows_timeout'::text), ('linked_event_failed'), ('overflows_timeout')$$,
    'a batch: overflows_timeout per item, and it fails its linked chain');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'no overflowing timeout wrote anything');
SELECT lives_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                          'aaaaaaaa-c0f0-4000-8000-0000000000b4', pending => true, timeout => '250000 years')$$,
    'a timeout that ends before the last timestamp is a hold like any other');
SELECT is((SELECT expires_at FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000b4'),
          (SELECT created_at + interval '250000 years' FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000b4'),
    'its expiry is what PostgreSQL''s timestamptz + interval gives');
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                       'aaaaaaaa-c0f0-4000-8000-0000000000b5', pending => true, timeout => '1 mon 3 days 04:05:06.789');
SELECT is((SELECT expires_at FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000b5'),
          (SELECT created_at + interval '1 mon 3 days 04:05:06.789' FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000b5'),
    'and so is an ordinary one, months, days and time');
-- ---- duplicate ids inside one batch ---------------------------------------------------------------
-- TigerBeetle applies a batch in order: a later event with the id of an earlier one that was created
-- is a replay of it (exists, or exists_with_different_<field>); the rest of the batch is unaffected.
-- (fincore 0.1.0 raised XX000 and lost the whole batch.)
UPDATE before SET s = pg_temp.state();
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 5, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 5, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 6, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 7, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('ok'::text), ('exists'), ('exists_with_different_amount'), ('ok')$$,
    'TigerBeetle exists / exists_with_different_amount for a duplicate id inside one batch, the rest unaffected');
SELECT is((SELECT count(*)::int FROM fincore.transfers WHERE id IN ('aaaaaaaa-c0f0-4000-8000-0000000000d1', 'aaaaaaaa-c0f0-4000-8000-0000000000d2')), 2,
    'one row for the duplicated id, one for the other');
SELECT is((SELECT debits_posted FROM fincore.accounts WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000a1'), 100::bigint + 5 + 7,
    'the counters moved once for the duplicated id');
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d3', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 5, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d3', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 5, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('accounts_must_be_different'::text), ('ok')$$,
    'an id whose first event failed is free for a later one of the batch (that failure does not depend on state)');

-- ---- exists_with_different_ledger (the currency) -----------------------------------------------------
UPDATE before SET s = pg_temp.state();
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2',
                                           '0.07 EUR'::fincore.amount, 'aaaaaaaa-c0f0-4000-8000-0000000000d2')$$,
    'ZF317', 'transfer aaaaaaaa-c0f0-4000-8000-0000000000d2 already exists with a different currency',
    'TigerBeetle exists_with_different_ledger: a replay in another currency (before the accounts'' currency is even checked)');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'and it wrote nothing');

-- ---- exists comes first: a replay is recognised before the request is validated ---------------------
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 7, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', -7, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 7, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('exists'::text), ('exists_with_different_amount'), ('exists_with_different_credit_account_id')$$,
    'TigerBeetle precedence: exists_with_different_* before amount_must_not_be_zero and accounts_must_be_different');
SELECT fincore.freeze_account('aaaaaaaa-c0f0-4000-8000-0000000000a2');
SELECT is((SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 7, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[])), 'exists', 'an exact replay is exists even though its account was frozen since');
SELECT fincore.unfreeze_account('aaaaaaaa-c0f0-4000-8000-0000000000a2');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'no replay wrote anything');

-- ---- exists fails its linked chain ------------------------------------------------------------------
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 7, 1, false, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000d4', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 7, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('exists'::text), ('linked_event_failed')$$,
    'TigerBeetle: an event that exists fails its linked chain like any other result but ok');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'and the chain wrote nothing');

-- ---- post and void must match their hold ------------------------------------------------------------
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 50,
                       'aaaaaaaa-c0f0-4000-8000-0000000000e1', code => 3, pending => true);
UPDATE before SET s = pg_temp.state();
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000e2', NULL, NULL, NULL, 9, false, NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000e1', NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000e3', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', NULL, NULL, NULL, false, NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000e1', NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000e4', NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000a1', NULL, NULL, false, NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000e1', NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000e5', NULL, NULL, 10, NULL, false, NULL, NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000e1', NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000e6', NULL, NULL, 60, 9, false, NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000e1', NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('pending_transfer_has_different_code'::text), ('pending_transfer_has_different_debit_account_id'),
             ('pending_transfer_has_different_credit_account_id'), ('pending_transfer_has_different_amount'),
             ('pending_transfer_has_different_code')$$,
    'TigerBeetle pending_transfer_has_different_{code,debit_account_id,credit_account_id,amount}; the code before exceeds_pending_transfer_amount');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'no mismatched post or void wrote anything');
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000e8', NULL, NULL, 20, 0, false, NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000e1', NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000e8', NULL, NULL, 20, 0, false, NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000e1', NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000e8', NULL, NULL, 20, 3, false, NULL, 'aaaaaaaa-c0f0-4000-8000-0000000000e1', NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('ok'::text), ('exists'), ('exists')$$,
    'code 0 means the hold''s code; replaying the post (code 0, or the hold''s) is exists, not pending_transfer_already_posted');
SELECT is((SELECT code FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000e8'), 3, 'the post carries its hold''s code');
-- ---- zero amounts (TigerBeetle 0.16) ----------------------------------------------------------------
-- A transfer of 0 is created and moves nothing; posting 0 of a hold releases it all.
CREATE TEMP TABLE a1_before AS
    SELECT debits_pending, debits_posted FROM fincore.accounts WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000a1';
SELECT is((SELECT result FROM fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 0,
                                               'aaaaaaaa-c0f0-4000-8000-0000000000f1')), 'created',
    'TigerBeetle 0.16: a zero-amount transfer is created');
SELECT is((SELECT amount FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000f1'), 0::bigint, 'with amount 0');
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 30,
                       'aaaaaaaa-c0f0-4000-8000-0000000000f2', pending => true);
SELECT is((SELECT result FROM fincore.post_pending('aaaaaaaa-c0f0-4000-8000-0000000000f2', 0, 'aaaaaaaa-c0f0-4000-8000-0000000000f3')),
    'created', 'posting 0 of a hold is a post');
SELECT is((SELECT row(a.debits_pending, a.debits_posted)::text FROM fincore.accounts a WHERE a.id = 'aaaaaaaa-c0f0-4000-8000-0000000000a1'),
          (SELECT row(b.debits_pending, b.debits_posted)::text FROM a1_before b),
    'the zero transfer moved nothing, and the hold of 30 was released with nothing posted');
SELECT is_empty($$SELECT * FROM fincore.verify()$$, 'and the books prove');
-- ---- get_account_transfers / get_account_balances with an AccountFilter ---------------------------
-- a2 has history; its transfers so far: credits from a1 (codes 1 and 7, holds, posts), no debits.
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 4,
                       'aaaaaaaa-c0f0-4000-8000-0000000000f4', code => 42);
CREATE TEMP TABLE a2 AS SELECT t.*, t.debit_account_id = 'aaaaaaaa-c0f0-4000-8000-0000000000a2' AS is_debit
  FROM fincore.transfers t WHERE 'aaaaaaaa-c0f0-4000-8000-0000000000a2' IN (t.debit_account_id, t.credit_account_id);
SELECT results_eq($$SELECT id FROM fincore.account_transfers('aaaaaaaa-c0f0-4000-8000-0000000000a2', lim => 1000)$$,
    $$SELECT id FROM a2 ORDER BY created_at, id$$, 'account_transfers: every transfer of the account, oldest first');
SELECT results_eq($$SELECT id FROM fincore.account_transfers('aaaaaaaa-c0f0-4000-8000-0000000000a2', lim => 1000, reversed => true)$$,
    $$SELECT id FROM a2 ORDER BY created_at DESC, id DESC$$, 'AccountFilter reversed: newest first');
SELECT results_eq($$SELECT id FROM fincore.account_transfers('aaaaaaaa-c0f0-4000-8000-0000000000a2', lim => 1000, credits => false)$$,
    $$SELECT id FROM a2 WHERE is_debit ORDER BY created_at, id$$, 'AccountFilter debits only');
SELECT results_eq($$SELECT id FROM fincore.account_transfers('aaaaaaaa-c0f0-4000-8000-0000000000a2', lim => 1000, debits => false)$$,
    $$SELECT id FROM a2 WHERE NOT is_debit ORDER BY created_at, id$$, 'AccountFilter credits only');
SELECT is_empty($$SELECT * FROM fincore.account_transfers('aaaaaaaa-c0f0-4000-8000-0000000000a2', debits => false, credits => false)$$,
    'neither debits nor credits: nothing (TigerBeetle: an invalid filter)');
SELECT results_eq($$SELECT id FROM fincore.account_transfers('aaaaaaaa-c0f0-4000-8000-0000000000a2', code => 42)$$,
    $$VALUES ('aaaaaaaa-c0f0-4000-8000-0000000000f4'::uuid)$$, 'AccountFilter code');
SELECT results_eq($$SELECT id FROM fincore.account_transfers('aaaaaaaa-c0f0-4000-8000-0000000000a2', lim => 2)$$,
    $$SELECT id FROM a2 ORDER BY created_at, id LIMIT 2$$, 'AccountFilter limit');
SELECT results_eq($$SELECT id FROM fincore.account_transfers('aaaaaaaa-c0f0-4000-8000-0000000000a2',
                        since => (SELECT min(created_at) + interval '1 microsecond' FROM a2),
                        until => (SELECT max(created_at) FROM a2), lim => 1000)$$,
    $$SELECT id FROM a2 WHERE created_at > (SELECT min(created_at) FROM a2) AND created_at < (SELECT max(created_at) FROM a2)
       ORDER BY created_at, id$$, 'AccountFilter timestamp range: since inclusive, until exclusive');
SELECT results_eq($$SELECT transfer_id, debits_posted, credits_posted
                      FROM fincore.account_balances('aaaaaaaa-c0f0-4000-8000-0000000000a2', lim => 1000, reversed => true, debits => false)$$,
    $$SELECT h.transfer_id, h.debits_posted, h.credits_posted FROM fincore.account_history h JOIN a2 ON a2.id = h.transfer_id
       WHERE h.account_id = 'aaaaaaaa-c0f0-4000-8000-0000000000a2' AND NOT a2.is_debit ORDER BY h.at DESC, h.transfer_id DESC$$,
    'get_account_balances: the history snapshots, credits only, newest first');
SELECT is_empty($$SELECT * FROM fincore.account_balances('aaaaaaaa-c0f0-4000-8000-0000000000a1')$$,
    'get_account_balances of an account without history: nothing');
-- ---- create_accounts -------------------------------------------------------------------------------
-- TigerBeetle's create_accounts: a result per request, linked chains created whole or not at all,
-- exists failing its chain.
CREATE TEMP TABLE acct_before AS SELECT count(*) AS n FROM fincore.accounts;
SELECT results_eq($$SELECT result FROM fincore.create_accounts(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c1', 'USD', 1, NULL, NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c1', 'USD', 1, NULL, NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c1', 'USD', 2, NULL, NULL, NULL, NULL, false, NULL, NULL),
        ROW('00000000-0000-0000-0000-000000000000', 'USD', 1, NULL, NULL, NULL, NULL, false, NULL, NULL),
        ROW('ffffffff-ffff-ffff-ffff-ffffffffffff', 'USD', 1, NULL, NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c2', 'USD', 1, '{debits_must_not_exceed_credits,credits_must_not_exceed_debits}', NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c3', 'USD', 1, '{bogus}', NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c4', 'XQZ', 1, NULL, NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c5', 'usd!', 1, NULL, NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c6', 'USD', 1, NULL, 100, NULL, NULL, false, NULL, NULL)
    ]::fincore.account_request[]) ORDER BY index$$,
    $$VALUES ('ok'::text), ('exists'), ('exists_with_different_code'), ('id_must_not_be_zero'), ('id_must_not_be_int_max'),
             ('flags_are_mutually_exclusive'), ('invalid_flags'), ('unknown_currency'), ('invalid_currency'), ('invalid_credit_limit')$$,
    'TigerBeetle create_accounts: ok, exists, exists_with_different_code, id_must_not_be_zero, id_must_not_be_int_max, flags_are_mutually_exclusive, and fincore''s own');
SELECT is((SELECT count(*) FROM fincore.accounts) - (SELECT n FROM acct_before), 1::bigint, 'one account was created');
SELECT results_eq($$SELECT result FROM fincore.create_accounts(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c7', 'USD', 1, NULL, NULL, NULL, NULL, true, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c8', 'USD', 1, NULL, NULL, NULL, NULL, true, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c9', 'USD', 1, '{bogus}', NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000ca', 'USD', 1, NULL, NULL, NULL, NULL, true, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000c1', 'USD', 1, NULL, NULL, NULL, NULL, false, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000cb', 'USD', 1, NULL, NULL, NULL, NULL, true, NULL, NULL)
    ]::fincore.account_request[]) ORDER BY index$$,
    $$VALUES ('linked_event_failed'::text), ('linked_event_failed'), ('invalid_flags'),
             ('linked_event_failed'), ('exists'), ('linked_event_chain_open')$$,
    'a failed chain creates none of its accounts; exists fails its chain; a chain left open is linked_event_chain_open');
SELECT is((SELECT count(*) FROM fincore.accounts) - (SELECT n FROM acct_before), 1::bigint, 'and no chain created anything');
SELECT is((SELECT array_agg(result ORDER BY index) FROM fincore.create_accounts(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000cc', 'EUR', 5, '{history}', NULL, 'ext-1', '{"k": 1}', true, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000cd', 'EUR', 5, '{debits_must_not_exceed_credits}', 500, 'ext-2', NULL, false, NULL, NULL)
    ]::fincore.account_request[])), '{ok,ok}', 'a chain that succeeds creates all its accounts');
SELECT results_eq($$SELECT currency, code, flags, credit_limit, external_ref FROM fincore.account_balances
                     WHERE id IN ('aaaaaaaa-c0f0-4000-8000-0000000000cc', 'aaaaaaaa-c0f0-4000-8000-0000000000cd') ORDER BY id$$,
    $$VALUES ('EUR'::text, 5, '{history}'::text[], NULL::bigint, 'ext-1'::text),
             ('EUR', 5, '{debits_must_not_exceed_credits}', 500, 'ext-2')$$,
    'with every field as requested');
SELECT throws_ok($$SELECT * FROM fincore.create_accounts(array_fill(NULL::fincore.account_request, ARRAY[8191]))$$, 'ZF321', NULL,
    'ZF321: more than 8,190 accounts a call');
SELECT fincore.set_tenant(NULL);
SELECT throws_ok($$SELECT * FROM fincore.create_accounts(ARRAY[ROW(NULL, 'USD', 1, NULL, NULL, NULL, NULL, false, NULL, NULL)]::fincore.account_request[])$$,
    'ZF203', NULL, 'ZF203: a batch of accounts needs a tenant, for the whole call');
-- ---- an account created closed (TigerBeetle's closed flag) -----------------------------------------
SELECT fincore.set_tenant('aaaaaaaa-c0f0-4000-8000-000000000001');
SELECT is(fincore.create_account('USD', flags => '{closed}', id => 'aaaaaaaa-c0f0-4000-8000-0000000000d9'),
          'aaaaaaaa-c0f0-4000-8000-0000000000d9'::uuid, 'create_account(flags => {closed})');
SELECT is((SELECT status FROM fincore.accounts WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000d9'), 'closed',
    'the account is created closed');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000d9', 1)$$,
    'ZF307', NULL, 'credit_account_closed: it takes no transfer');
SELECT is(fincore.create_account('USD', flags => '{closed}', id => 'aaaaaaaa-c0f0-4000-8000-0000000000d9'),
          'aaaaaaaa-c0f0-4000-8000-0000000000d9'::uuid, 'replaying the creation with the closed flag is idempotent');
SELECT throws_ok($$SELECT fincore.create_account('USD', id => 'aaaaaaaa-c0f0-4000-8000-0000000000d9')$$,
    'ZF325', 'account aaaaaaaa-c0f0-4000-8000-0000000000d9 already exists with a different flags',
    'TigerBeetle exists_with_different_flags: the same id without closed');
SELECT is((SELECT result FROM fincore.create_accounts(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000da', 'USD', 0, '{closed,history}', NULL, NULL, NULL, false, NULL, NULL)]::fincore.account_request[])),
    'ok', 'create_accounts takes the closed flag too');
-- ---- balancing transfers (TigerBeetle's balancing_debit / balancing_credit) -----------------------
SELECT fincore.set_tenant('aaaaaaaa-c0f0-4000-8000-000000000001');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c0f0-4000-8000-0000000001b0', flags => '{debits_must_not_exceed_credits}');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c0f0-4000-8000-0000000001bc', flags => '{credits_must_not_exceed_debits}');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c0f0-4000-8000-0000000001bd', flags => '{debits_must_not_exceed_credits}', credit_limit => 20);
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000001b0', 100);
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000001bc', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 30);
CREATE FUNCTION pg_temp.bal(id uuid, d uuid, c uuid, amount bigint, bd boolean, bc boolean, pending boolean DEFAULT false)
    RETURNS text LANGUAGE sql AS $$
    SELECT result FROM fincore.create_transfers(ARRAY[ROW(id, d, c, amount, 1, pending, NULL, NULL, NULL, NULL, false,
                                                          NULL, NULL, NULL, NULL, NULL, bd, bc, NULL, NULL, NULL, NULL)]::fincore.transfer_request[]) $$;
SELECT is(pg_temp.bal('aaaaaaaa-c0f0-4000-8000-0000000001b1', 'aaaaaaaa-c0f0-4000-8000-0000000001b0',
                      'aaaaaaaa-c0f0-4000-8000-0000000000a1', 1000, true, false), 'ok',
    'TigerBeetle balancing_debit: a transfer of 1000 from an account with 100 is ok ...');
SELECT is((SELECT amount FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000001b1'), 100::bigint,
    '... and moves the 100 there are');
SELECT is(pg_temp.bal('aaaaaaaa-c0f0-4000-8000-0000000001b1', 'aaaaaaaa-c0f0-4000-8000-0000000001b0',
                      'aaaaaaaa-c0f0-4000-8000-0000000000a1', 1000, true, false), 'exists',
    'replaying it is exists (it moved at most what it asked for)');
SELECT is(pg_temp.bal('aaaaaaaa-c0f0-4000-8000-0000000001b1', 'aaaaaaaa-c0f0-4000-8000-0000000001b0',
                      'aaaaaaaa-c0f0-4000-8000-0000000000a1', 50, true, false), 'exists_with_different_amount',
    'asking for less than it moved is exists_with_different_amount');
SELECT is(pg_temp.bal('aaaaaaaa-c0f0-4000-8000-0000000001b2', 'aaaaaaaa-c0f0-4000-8000-0000000001b0',
                      'aaaaaaaa-c0f0-4000-8000-0000000000a1', 9223372036854775807, true, false, true), 'ok',
    'balancing_debit with amount = max on an empty account: a hold of 0 ...');
SELECT is((SELECT amount FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000001b2'), 0::bigint, '... (zero amounts are transfers)');
SELECT is(pg_temp.bal('aaaaaaaa-c0f0-4000-8000-0000000001b3', 'aaaaaaaa-c0f0-4000-8000-0000000000a1',
                      'aaaaaaaa-c0f0-4000-8000-0000000001bc', 100, false, true), 'ok',
    'TigerBeetle balancing_credit: 100 to an account whose credits must stay within its 30 of debits ...');
SELECT is((SELECT amount FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000001b3'), 30::bigint, '... moves 30');
SELECT pg_temp.bal('aaaaaaaa-c0f0-4000-8000-0000000001b4', 'aaaaaaaa-c0f0-4000-8000-0000000001bd',
                   'aaaaaaaa-c0f0-4000-8000-0000000000a1', 9223372036854775807, true, false) AS b4_result \gset
SELECT is((SELECT amount FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000001b4'), 20::bigint,
    'balancing_debit counts a credit limit: an empty account with a limit of 20 moves 20');
SELECT is(pg_temp.bal('aaaaaaaa-c0f0-4000-8000-0000000001b5', NULL, NULL, 5, true, false), 'invalid_request',
    'balancing applies to a transfer or hold with both accounts');
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000001b0', 7);
SELECT is((SELECT amount FROM fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000001b0', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 1000,
                                               'aaaaaaaa-c0f0-4000-8000-0000000001b6', balancing_debit => true)), 7::bigint,
    'the single call takes balancing_debit too, and returns what it moved');
SELECT is((SELECT result FROM fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000001b0', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 1000,
                                               'aaaaaaaa-c0f0-4000-8000-0000000001b6', balancing_debit => true)), 'exists',
    'and its replay is exists');
SELECT is(format('%s %s %s %s %s', fincore.transfer_result_sqlstate('ok'), fincore.transfer_result_sqlstate('exists'),
                 fincore.transfer_result_sqlstate('exceeds_credits'), fincore.transfer_result_sqlstate('debit_account_frozen'),
                 coalesce(fincore.transfer_result_sqlstate('no_such_result'), 'NULL')),
    '00000 00000 ZF304 ZF306 NULL', 'transfer_result_sqlstate: a batch result as the single call''s SQLSTATE');
SELECT * FROM finish();
ROLLBACK;
