-- pgTAP: TigerBeetle's features beyond the results of one transfer (docs/ledger.md): closing
-- transfers, id_already_failed, imported transfers and accounts, stored flags, and the
-- multi-debit, single-credit recipe.  Each test names the rule it mirrors; every refusal is checked
-- to write nothing: no transfer, no hold, no counter change, no status change, no history row, no
-- event (a failure on the state writes its id to fincore.failed_transfers, and nothing else).
BEGIN;
SET search_path = fincore, public;
SELECT plan(78);

SELECT fincore.create_tenant('Features', 'aaaaaaaa-c1f0-4000-8000-000000000001');
SELECT fincore.set_tenant('aaaaaaaa-c1f0-4000-8000-000000000001');
-- a1: a funding account; w1, w2: wallets (debits must not exceed credits); x: a destination;
-- h: a hot account; k: a history account.
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000000a1');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000000b1', flags => '{debits_must_not_exceed_credits}');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000000b2', flags => '{debits_must_not_exceed_credits}');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000000c1');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000000d1', flags => '{hot}');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000000e1', flags => '{history}');
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b1', 100);

-- A request of create_transfers by name (code 1).
CREATE FUNCTION pg_temp.req(id uuid, d uuid DEFAULT NULL, c uuid DEFAULT NULL, amount bigint DEFAULT NULL,
        pending boolean DEFAULT NULL, post_id uuid DEFAULT NULL, void_id uuid DEFAULT NULL, linked boolean DEFAULT NULL,
        closing_debit boolean DEFAULT NULL, closing_credit boolean DEFAULT NULL, imported boolean DEFAULT NULL,
        ts timestamptz DEFAULT NULL, timeout interval DEFAULT NULL, rev_id uuid DEFAULT NULL,
        bd boolean DEFAULT NULL, bc boolean DEFAULT NULL, fee_schedule text DEFAULT NULL, fee_account uuid DEFAULT NULL)
    RETURNS fincore.transfer_request LANGUAGE sql AS $$
    SELECT ROW(id, d, c, amount, 1, pending, timeout, post_id, void_id, rev_id, linked, NULL, fee_schedule, fee_account,
               NULL, NULL, bd, bc, closing_debit, closing_credit, imported, ts)::fincore.transfer_request $$;
CREATE FUNCTION pg_temp.results(reqs fincore.transfer_request[]) RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(result ORDER BY index) FROM fincore.create_transfers(reqs) $$;
CREATE FUNCTION pg_temp.state() RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM fincore.transfers)::text || '/' || (SELECT count(*) FROM fincore.pending_holds)::text
           || '/' || (SELECT count(*) FROM fincore.account_deltas)::text || '/' || (SELECT count(*) FROM fincore.account_history)::text
           || '/' || (SELECT coalesce(sum(debits_pending + debits_posted + credits_pending + credits_posted), 0) FROM fincore.accounts)::text
           || '/' || (SELECT string_agg(left(status, 1), '' ORDER BY id) FROM fincore.accounts)
           || '/' || (SELECT count(*) FROM fincore.outbox_stream)::text $$;
CREATE FUNCTION pg_temp.status(id uuid) RETURNS text LANGUAGE sql AS $$ SELECT status FROM fincore.accounts a WHERE a.id = status.id $$;

-- ---- closing transfers (TigerBeetle's closing_debit / closing_credit) -----------------------------
SELECT is((SELECT result FROM fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000b1', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 0,
                                               'aaaaaaaa-c1f0-4000-8000-000000000101', pending => true, closing_debit => true)),
    'created', 'TigerBeetle closing_debit: a hold of 0 with closing_debit ...');
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000b1'), 'closed', '... closes its debit account');
SELECT is((SELECT type FROM fincore.outbox_stream WHERE aggregateid = 'aaaaaaaa-c1f0-4000-8000-0000000000b1' ORDER BY seq DESC LIMIT 1),
    'account.closed', 'and says so in the outbox (account.closed)');
CREATE TEMP TABLE before AS SELECT pg_temp.state() AS s;
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000b1', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 1)$$,
    'ZF307', 'debit account aaaaaaaa-c1f0-4000-8000-0000000000b1 is closed', 'debit_account_already_closed: no debit of a closed account');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b1', 1)$$,
    'ZF307', NULL, 'credit_account_already_closed: no credit of it either');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000b1', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 0,
                                           pending => true, closing_debit => true)$$,
    'ZF307', NULL, 'a closed account cannot be closed again by another closing hold');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000c1', 5,
                                           closing_debit => true)$$,
    'ZF321', 'a closing transfer must be pending', 'TigerBeetle closing_transfer_must_be_pending (ZF321)');
SELECT is(pg_temp.results(ARRAY[pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000102', 'aaaaaaaa-c1f0-4000-8000-0000000000a1',
                                            'aaaaaaaa-c1f0-4000-8000-0000000000c1', 5, closing_credit => true),
                                pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000103', 'aaaaaaaa-c1f0-4000-8000-0000000000a1',
                                            'aaaaaaaa-c1f0-4000-8000-0000000000b1', 5)]),
    '{closing_transfer_must_be_pending,credit_account_closed}', 'the same results in a batch');
SELECT throws_ok($$SELECT fincore.close_account('aaaaaaaa-c1f0-4000-8000-0000000000b1')$$, 'ZF326', NULL,
    'close_account() does not make final an account its closing hold still holds (voiding would open it)');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'no refusal of a closed account wrote anything');
SELECT is((SELECT result FROM fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000b1', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 0,
                                               'aaaaaaaa-c1f0-4000-8000-000000000101', pending => true, closing_debit => true)),
    'exists', 'a replay of the closing hold is exists');
SELECT is(pg_temp.results(ARRAY[pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000101', 'aaaaaaaa-c1f0-4000-8000-0000000000b1',
                                            'aaaaaaaa-c1f0-4000-8000-0000000000a1', 0, pending => true)]),
    '{exists_with_different_flags}', 'TigerBeetle exists_with_different_flags: the same hold without closing_debit');
SELECT is((SELECT result FROM fincore.void_pending('aaaaaaaa-c1f0-4000-8000-000000000101')), 'created',
    'voiding the closing hold ...');
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000b1'), 'active', '... opens the account again');
SELECT is((SELECT type FROM fincore.outbox_stream WHERE aggregateid = 'aaaaaaaa-c1f0-4000-8000-0000000000b1' ORDER BY seq DESC LIMIT 1),
    'account.reopened', 'and says so (account.reopened)');
SELECT lives_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000b1', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 1)$$,
    'an open account takes debits again');

-- A closed account's other holds can be voided, not posted; the closing hold itself can be posted.
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000c1', 7,
                        'aaaaaaaa-c1f0-4000-8000-000000000111', pending => true);
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000c1', 8,
                        'aaaaaaaa-c1f0-4000-8000-000000000112', pending => true);
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000c1', 3,
                        'aaaaaaaa-c1f0-4000-8000-000000000113', pending => true, closing_credit => true);
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000c1'), 'closed', 'closing_credit closes the credit account');
SELECT throws_ok($$SELECT fincore.post_pending('aaaaaaaa-c1f0-4000-8000-000000000111')$$, 'ZF307', NULL,
    'a hold on a closed account cannot be posted');
SELECT lives_ok($$SELECT fincore.void_pending('aaaaaaaa-c1f0-4000-8000-000000000112')$$, 'but it can be voided');
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000c1'), 'closed', 'voiding another hold leaves the account closed');
SELECT is((SELECT amount FROM fincore.post_pending('aaaaaaaa-c1f0-4000-8000-000000000113')), 3::bigint,
    'the closing hold itself can be posted ...');
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000c1'), 'closed', '... and the account stays closed');
SELECT lives_ok($$SELECT fincore.void_pending('aaaaaaaa-c1f0-4000-8000-000000000111')$$, 'its last hold is voided');
SELECT is((SELECT debits_pending + credits_pending FROM fincore.accounts WHERE id = 'aaaaaaaa-c1f0-4000-8000-0000000000c1'),
    0::bigint, 'the closed account has nothing pending');

-- In a batch: a closing hold closes the account for the items after it; a failed chain closes nothing.
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000121', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2',
                    0, pending => true, closing_credit => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000122', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 5),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000123', void_id => 'aaaaaaaa-c1f0-4000-8000-000000000121'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000124', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 5)]),
    '{ok,credit_account_closed,ok,ok}', 'a batch sees the account closed by an earlier item, and opened by a void');
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000b2'), 'active', 'closed and opened in one batch: active');
CREATE TEMP TABLE before_chain AS SELECT pg_temp.state() AS s;
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000125', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 'aaaaaaaa-c1f0-4000-8000-0000000000a1',
                    0, pending => true, closing_debit => true, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000126', 'aaaaaaaa-c1f0-4000-8000-0000000000b1', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 1000)]),
    '{linked_event_failed,exceeds_credits}', 'a linked chain whose closing hold fails with it ...');
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000b2'), 'active', '... leaves the account open');
SELECT is(pg_temp.state(), (SELECT s FROM before_chain), '... and writes nothing');
SELECT fincore.freeze_account('aaaaaaaa-c1f0-4000-8000-0000000000b2');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000b2', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 0,
                                           pending => true, closing_debit => true)$$,
    'ZF306', NULL, 'a frozen account cannot be closed by a hold');
SELECT fincore.unfreeze_account('aaaaaaaa-c1f0-4000-8000-0000000000b2');

-- A hot account is closed under its lock, and a closing hold that expires opens it again.
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000d1', 4,
                        'aaaaaaaa-c1f0-4000-8000-000000000131', pending => true, closing_credit => true, timeout => '1 millisecond');
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000d1'), 'closed', 'a hot account is closed by a closing hold');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000d1', 1)$$,
    'ZF307', NULL, 'a lock-free credit of a closed hot account is refused');
SELECT pg_sleep(0.01);
SELECT is(fincore.expire_pending(), 1, 'the closing hold expires ...');
SELECT is(pg_temp.status('aaaaaaaa-c1f0-4000-8000-0000000000d1'), 'active', '... and its expiry opens the account again');
SELECT is((SELECT count(*) FROM fincore.verify()), 0::bigint, 'the books hold after closing and opening');

-- ---- id_already_failed (TigerBeetle's transient errors) -------------------------------------------
CREATE TEMP TABLE before_failed AS SELECT pg_temp.state() AS s;
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000201', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 1000),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000201', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 1),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000202', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000ff', 1),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000203', post_id => 'aaaaaaaa-c1f0-4000-8000-0000000000ff'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000204', rev_id => 'aaaaaaaa-c1f0-4000-8000-0000000000ff'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000205', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000c1', 1),
        -- validation failures (the request alone) are not recorded:
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000206', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 1),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000207', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', -1)]),
    '{exceeds_credits,id_already_failed,credit_account_not_found,pending_transfer_not_found,transfer_not_found,credit_account_closed,accounts_must_be_different,amount_must_not_be_negative}',
    'TigerBeetle id_already_failed: a later item with an id that failed on the state in the same batch');
SELECT is(pg_temp.state(), (SELECT s FROM before_failed), 'failures write no transfer, hold, counter, history row or event ...');
SELECT bag_eq($$SELECT id::text, result FROM fincore.failed_transfers WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-00000000020_'$$,
    $$VALUES ('aaaaaaaa-c1f0-4000-8000-000000000201', 'exceeds_credits'), ('aaaaaaaa-c1f0-4000-8000-000000000202', 'credit_account_not_found'),
             ('aaaaaaaa-c1f0-4000-8000-000000000203', 'pending_transfer_not_found'), ('aaaaaaaa-c1f0-4000-8000-000000000204', 'transfer_not_found'),
             ('aaaaaaaa-c1f0-4000-8000-000000000205', 'credit_account_closed')$$,
    '... only the ids that failed on the state, with the reason');
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 5000);
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000201', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 1000),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000206', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 1),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000207', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 1)]),
    '{id_already_failed,ok,ok}', 'once funds arrived, the failed id stays failed; corrected requests with the refused ids pass');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000b2', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 1000,
                                           'aaaaaaaa-c1f0-4000-8000-000000000201')$$,
    'ZF331', 'transfer id aaaaaaaa-c1f0-4000-8000-000000000201 already failed', 'a single call with a failed id: ZF331');
SELECT is(pg_temp.results(ARRAY[pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000201', 'aaaaaaaa-c1f0-4000-8000-0000000000b2',
                                            'aaaaaaaa-c1f0-4000-8000-0000000000b2', 1)]),
    '{id_already_failed}', 'TigerBeetle precedence: id_already_failed before validation of the request');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000b2', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 999999,
                                           'aaaaaaaa-c1f0-4000-8000-000000000208')$$, 'ZF304', NULL, 'a single call that fails raises ...');
SELECT is((SELECT count(*) FROM fincore.failed_transfers WHERE id = 'aaaaaaaa-c1f0-4000-8000-000000000208'), 0::bigint,
    '... and records nothing: its transaction (here its savepoint) is rolled back');
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000211', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 1, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000212', 'aaaaaaaa-c1f0-4000-8000-0000000000b1', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 999999)]),
    '{linked_event_failed,exceeds_credits}', 'in a failed chain ...');
SELECT is((SELECT array_agg(id::text ORDER BY id) FROM fincore.failed_transfers WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-00000000021_'),
    '{aaaaaaaa-c1f0-4000-8000-000000000212}', '... only the item that failed on the state is recorded');
SELECT is(pg_temp.results(ARRAY[pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000211', 'aaaaaaaa-c1f0-4000-8000-0000000000a1',
                                            'aaaaaaaa-c1f0-4000-8000-0000000000b2', 1)]),
    '{ok}', 'the others may be sent again');

-- ---- imported accounts and transfers (TigerBeetle's imported flag) --------------------------------
SELECT is((SELECT array_agg(result ORDER BY index) FROM fincore.create_accounts(ARRAY[
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a1', 'USD', 0, NULL, NULL, NULL, NULL, false, true, '2020-01-01 00:00Z'),
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a2', 'USD', 0, '{debits_must_not_exceed_credits,history}', NULL, NULL, NULL, false, true, '2020-01-02 00:00Z'),
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a3', 'USD', 0, NULL, NULL, NULL, NULL, false, true, '2020-01-02 00:00Z'),
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a4', 'USD', 0, NULL, NULL, NULL, NULL, false, true, NULL),
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a5', 'USD', 0, NULL, NULL, NULL, NULL, false, true, 'infinity'),
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a6', 'USD', 0, NULL, NULL, NULL, NULL, false, true, '2999-01-01 00:00Z'),
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a7', 'USD', 0, NULL, NULL, NULL, NULL, false, false, NULL)
    ]::fincore.account_request[])),
    '{ok,ok,imported_event_timestamp_must_not_regress,imported_event_timestamp_out_of_range,imported_event_timestamp_out_of_range,imported_event_timestamp_must_not_advance,imported_event_expected}',
    'TigerBeetle imported accounts: past times in increasing order; every other item refused');
SELECT is((SELECT created_at FROM fincore.accounts WHERE id = 'aaaaaaaa-c1f0-4000-8000-0000000003a2'), '2020-01-02 00:00Z'::timestamptz,
    'an imported account was created when the import says');
SELECT is((SELECT array_agg(result ORDER BY index) FROM fincore.create_accounts(ARRAY[
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a8', 'USD', 0, NULL, NULL, NULL, NULL, false, NULL, '2020-01-01 00:00Z'),
        ROW('aaaaaaaa-c1f0-4000-8000-0000000003a9', 'USD', 0, NULL, NULL, NULL, NULL, false, true, '2020-01-01 00:00Z')
    ]::fincore.account_request[])),
    '{timestamp_must_be_zero,imported_event_not_expected}', 'timestamp_must_be_zero and imported_event_not_expected');
CREATE TEMP TABLE before_import AS SELECT pg_temp.state() AS s;
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000301', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 10,
                    imported => true, ts => '2020-01-01 12:00Z'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000302', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 10,
                    imported => true, ts => '2020-01-01 12:00Z'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000303', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 10,
                    pending => true, timeout => '1 day', imported => true, ts => '2020-01-03 00:00Z'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000304', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 10,
                    imported => true, ts => now() + interval '1 hour'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000305', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 10,
                    imported => true, ts => '2020-01-03 00:00Z', fee_schedule => 'none', fee_account => 'aaaaaaaa-c1f0-4000-8000-0000000000a1'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000306', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 10,
                    ts => '2020-01-03 00:00Z')]),
    '{imported_event_timestamp_must_postdate_credit_account,imported_event_timestamp_must_postdate_debit_account,imported_event_timeout_must_be_zero,imported_event_timestamp_must_not_advance,invalid_request,imported_event_expected}',
    'TigerBeetle imported transfers: after both accounts, no timeout, in the past, no fee, the whole batch imported');
SELECT is(pg_temp.state(), (SELECT s FROM before_import), 'refused imports write nothing');
CREATE TEMP TABLE before_import2 AS SELECT pg_temp.state() AS s;
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000307', 'aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000000b2', 10),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000308', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 10,
                    imported => true, ts => '2020-01-05 00:00Z')]),
    '{ok,imported_event_not_expected}', 'TigerBeetle imported_event_not_expected: in a batch that is not imported ...');
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000309', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 10,
                    imported => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-00000000030a', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 10,
                    imported => true, ts => '-infinity')]),
    '{imported_event_timestamp_out_of_range,imported_event_timestamp_out_of_range}', '... imported_event_timestamp_out_of_range');
SELECT is((SELECT count(*) FROM fincore.transfers WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-00000000030_'), 1::bigint,
    'only the item that is not imported was written');
SELECT is((SELECT count(*) FROM fincore.failed_transfers WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-00000000030_'), 0::bigint,
    'refused imports are not failures on the state: their ids are not recorded');
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000311', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 100,
                    imported => true, ts => '2020-02-01 00:00Z'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000312', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 30,
                    pending => true, imported => true, ts => '2020-02-02 00:00Z'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000313', post_id => 'aaaaaaaa-c1f0-4000-8000-000000000312', amount => 20,
                    imported => true, ts => '2020-02-03 00:00Z'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000314', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 1,
                    imported => true, ts => '2020-02-02 12:00Z')]),
    '{ok,ok,ok,imported_event_timestamp_must_not_regress}',
    'a migration: a transfer, a hold and its post at their own times; an earlier one after them must_not_regress');
SELECT is((SELECT count(*) FROM fincore.transfers WHERE id = 'aaaaaaaa-c1f0-4000-8000-000000000314'), 0::bigint,
    'the refused import wrote no transfer ...');
SELECT is((SELECT count(*) FROM fincore.account_history WHERE transfer_id = 'aaaaaaaa-c1f0-4000-8000-000000000314'), 0::bigint,
    '... and no history row');
SELECT is((SELECT array_agg(created_at ORDER BY created_at) FROM fincore.transfers WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-00000000031_'),
    ARRAY['2020-02-01 00:00Z', '2020-02-02 00:00Z', '2020-02-03 00:00Z']::timestamptz[], 'the transfers carry the imported times');
SELECT is((SELECT array_agg(flags ORDER BY created_at) FROM fincore.transfers WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-00000000031_'), '{16,16,16}',
    'and the imported flag');
SELECT is((SELECT posted FROM fincore.balance('aaaaaaaa-c1f0-4000-8000-0000000003a2', '2020-02-02 06:00Z')), 100::bigint,
    'balance as of an imported time (history account)');
SELECT is((SELECT available FROM fincore.balance('aaaaaaaa-c1f0-4000-8000-0000000003a2', '2020-02-02 06:00Z')), 70::bigint,
    '... with the imported hold');
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000311', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 100,
                    imported => true, ts => '2020-02-01 00:00Z'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000311', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 100,
                    ts => '2020-02-01 00:00Z')]),
    '{exists,imported_event_expected}', 'replaying an import is exists; TigerBeetle checks the import mode before the id');
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000321', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 1,
                    imported => true, ts => '2020-03-01 00:00Z', linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000322', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 1000000,
                    imported => true, ts => '2020-03-02 00:00Z'),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000323', 'aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 1,
                    imported => true, ts => '2020-03-01 12:00Z')]),
    '{linked_event_failed,exceeds_credits,ok}', 'a failed chain of imported items does not advance the import''s time');
SELECT is((SELECT result FROM fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 2,
                                               'aaaaaaaa-c1f0-4000-8000-000000000331', imported => true, "timestamp" => '2020-04-01 00:00Z')),
    'created', 'the single call imports too');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 2,
                                           imported => true, "timestamp" => '2020-03-31 00:00Z')$$,
    'ZF332', NULL, 'imported_event_timestamp_must_not_regress in a single call (ZF332)');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000003a1', 'aaaaaaaa-c1f0-4000-8000-0000000003a2', 2,
                                           "timestamp" => '2020-05-01 00:00Z')$$,
    'ZF332', NULL, 'timestamp_must_be_zero in a single call');
SELECT is((SELECT count(*) FROM fincore.verify()), 0::bigint, 'the books hold after the import');

-- ---- recipe: multi-debit, single-credit (TigerBeetle's docs, with balancing transfers) ------------
-- Gather up to 100 from b1 and then b2 into c1, through a control account: the control account
-- pays 100 first, each source pays it what it can of what is left (balancing_debit for the source's
-- funds, balancing_credit for the control's remaining debt), and the shortfall is returned from c1
-- (balancing_credit again), so that c1 receives exactly what was gathered and the control account
-- ends at zero.  All in one linked chain.
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000004c0');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000004b1', flags => '{debits_must_not_exceed_credits}');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000004b2', flags => '{debits_must_not_exceed_credits}');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c1f0-4000-8000-0000000004c1');
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000004b1', 60);
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000004b2', 25);
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000401', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 'aaaaaaaa-c1f0-4000-8000-0000000004c1', 100, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000402', 'aaaaaaaa-c1f0-4000-8000-0000000004b1', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 100,
                    bd => true, bc => true, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000403', 'aaaaaaaa-c1f0-4000-8000-0000000004b2', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 100,
                    bd => true, bc => true, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000404', 'aaaaaaaa-c1f0-4000-8000-0000000004c1', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 100,
                    bc => true)]),
    '{ok,ok,ok,ok}', 'TigerBeetle recipe multi-debit, single-credit: one linked chain');
SELECT is((SELECT array_agg(amount ORDER BY id) FROM fincore.transfers WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-00000000040_'), '{100,60,25,15}',
    'b1 paid all its 60, b2 all its 25, and the 15 short went back');
SELECT is((SELECT array[(SELECT posted FROM fincore.balance('aaaaaaaa-c1f0-4000-8000-0000000004c1')),
                        (SELECT posted FROM fincore.balance('aaaaaaaa-c1f0-4000-8000-0000000004c0'))]),
    ARRAY[85, 0]::bigint[], 'c1 received the 85 gathered; the control account is square');
SELECT fincore.transfer('aaaaaaaa-c1f0-4000-8000-0000000000a1', 'aaaaaaaa-c1f0-4000-8000-0000000004b1', 500);
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000411', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 'aaaaaaaa-c1f0-4000-8000-0000000004c1', 100, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000412', 'aaaaaaaa-c1f0-4000-8000-0000000004b1', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 100,
                    bd => true, bc => true, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000413', 'aaaaaaaa-c1f0-4000-8000-0000000004b2', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 100,
                    bd => true, bc => true, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000414', 'aaaaaaaa-c1f0-4000-8000-0000000004c1', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 100,
                    bc => true)]),
    '{ok,ok,ok,ok}', 'with enough in b1 ...');
SELECT is((SELECT array_agg(amount ORDER BY id) FROM fincore.transfers WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-00000000041_'), '{100,100,0,0}',
    '... b1 pays it all: b2 and the return move 0');
-- The fixed-amount form: every leg exact, the chain all or nothing.
SELECT is(pg_temp.results(ARRAY[
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000421', 'aaaaaaaa-c1f0-4000-8000-0000000004b1', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 60, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000422', 'aaaaaaaa-c1f0-4000-8000-0000000004b2', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 40, linked => true),
        pg_temp.req('aaaaaaaa-c1f0-4000-8000-000000000423', 'aaaaaaaa-c1f0-4000-8000-0000000004c0', 'aaaaaaaa-c1f0-4000-8000-0000000004c1', 100)]),
    '{linked_event_failed,exceeds_credits,linked_event_failed}', 'the fixed-amount recipe fails whole when a source is short');
SELECT is((SELECT count(*) FROM fincore.verify()), 0::bigint, 'the books hold');

-- ---- a large batch: the engine finds accounts and holds by id through an index -----------------
SELECT count(fincore.create_account('USD', id => ('aaaaaaaa-c1f0-4000-8000-0000000005' || lpad(g::text, 2, '0'))::uuid))
  FROM generate_series(0, 59) g \gset
CREATE FUNCTION pg_temp.acct5(g int) RETURNS uuid LANGUAGE sql AS $$
    SELECT ('aaaaaaaa-c1f0-4000-8000-0000000005' || lpad((g % 60)::text, 2, '0'))::uuid $$;
CREATE FUNCTION pg_temp.hold5(g int) RETURNS uuid LANGUAGE sql AS $$
    SELECT ('aaaaaaaa-c1f0-4000-8000-0000000006' || lpad(g::text, 2, '0'))::uuid $$;
SELECT is((SELECT array_agg(DISTINCT result) FROM fincore.create_transfers(ARRAY(
        SELECT pg_temp.req(pg_temp.hold5(g), pg_temp.acct5(g), pg_temp.acct5(g + 7), g + 1, pending => true) FROM generate_series(0, 99) g
        UNION ALL
        SELECT pg_temp.req(NULL, post_id => pg_temp.hold5(g), amount => g) FROM generate_series(0, 99) g
        UNION ALL
        SELECT pg_temp.req(NULL, pg_temp.acct5(g), pg_temp.acct5(g + 1), 1) FROM generate_series(0, 299) g))),
    '{ok}', 'a batch of 500 items over 60 accounts: 100 holds, their posts in the same batch, 300 transfers');
SELECT is((SELECT sum(debits_posted) FROM fincore.accounts WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-0000000005__'),
    (4950 + 300)::numeric, 'every post moved what it posted (0 + 1 + ... + 99) and every transfer 1');
SELECT is((SELECT sum(debits_pending) FROM fincore.accounts WHERE id::text LIKE 'aaaaaaaa-c1f0-4000-8000-0000000005__'),
    0::numeric, 'and released the rest of its hold');

SELECT * FROM finish();
ROLLBACK;
