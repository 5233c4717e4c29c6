-- pgTAP: fincore.verify() finds each broken invariant (docs/ledger.md, "verify()").  The books
-- are made right through the engine, then broken one way at a time by the owner, behind the
-- engine's back (a savepoint each), and verify() must name the invariant, in the right tenant;
-- another tenant's clean books stay clean.
BEGIN;
SET search_path = fincore, public;
SELECT plan(10);

SELECT fincore.create_tenant('Verify', 'aaaaaaaa-7e71-4000-8000-000000000001');
SELECT fincore.create_tenant('Verify other', 'aaaaaaaa-7e71-4000-8000-000000000002');
SELECT fincore.set_tenant('aaaaaaaa-7e71-4000-8000-000000000002');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-7e71-4000-8000-0000000000a1');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-7e71-4000-8000-0000000000a2');
SELECT fincore.transfer('aaaaaaaa-7e71-4000-8000-0000000000a1', 'aaaaaaaa-7e71-4000-8000-0000000000a2', 5);
SELECT fincore.set_tenant('aaaaaaaa-7e71-4000-8000-000000000001');
-- The same account ids in the first tenant (ids are unique within a tenant).
SELECT fincore.create_account('USD', id => 'aaaaaaaa-7e71-4000-8000-0000000000a1');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-7e71-4000-8000-0000000000a2',
                              flags => '{debits_must_not_exceed_credits}');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-7e71-4000-8000-0000000000a3', flags => '{history}');
SELECT fincore.transfer('aaaaaaaa-7e71-4000-8000-0000000000a1', 'aaaaaaaa-7e71-4000-8000-0000000000a2', 100,
                        id => 'aaaaaaaa-7e71-4000-8000-0000000000f1');
SELECT fincore.transfer('aaaaaaaa-7e71-4000-8000-0000000000a2', 'aaaaaaaa-7e71-4000-8000-0000000000a3', 40,
                        id => 'aaaaaaaa-7e71-4000-8000-0000000000f2');
SELECT fincore.transfer('aaaaaaaa-7e71-4000-8000-0000000000a1', 'aaaaaaaa-7e71-4000-8000-0000000000a3', 7,
                        id => 'aaaaaaaa-7e71-4000-8000-0000000000f3', pending => true);

CREATE FUNCTION pg_temp.broken() RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(DISTINCT v.invariant ORDER BY v.invariant), '{}') FROM fincore.verify() v
     WHERE v.tenant_id = 'aaaaaaaa-7e71-4000-8000-000000000001' $$;
CREATE FUNCTION pg_temp.other_broken() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM fincore.verify() v WHERE v.tenant_id = 'aaaaaaaa-7e71-4000-8000-000000000002' $$;

SELECT is(pg_temp.broken(), '{}', 'the books hold');

SAVEPOINT s;
UPDATE fincore.accounts SET credits_posted = credits_posted + 1
 WHERE tenant_id = 'aaaaaaaa-7e71-4000-8000-000000000001' AND id = 'aaaaaaaa-7e71-4000-8000-0000000000a1';
SELECT is(pg_temp.broken(), '{counters_match_transfers,debits_equal_credits}',
    'a counter changed behind the engine: the counters and the double entry');
SELECT is(pg_temp.other_broken(), 0::bigint, 'the other tenant''s books, with the same account ids, hold');
ROLLBACK TO s;

SAVEPOINT s;
UPDATE fincore.accounts SET debits_posted = debits_posted + 1000, credits_posted = credits_posted + 1000
 WHERE tenant_id = 'aaaaaaaa-7e71-4000-8000-000000000001' AND id = 'aaaaaaaa-7e71-4000-8000-0000000000a2';
UPDATE fincore.accounts SET debits_posted = debits_posted + 1000
 WHERE tenant_id = 'aaaaaaaa-7e71-4000-8000-000000000001' AND id = 'aaaaaaaa-7e71-4000-8000-0000000000a2';
SELECT ok('debits_must_not_exceed_credits' = ANY (pg_temp.broken()), 'a limit exceeded');
ROLLBACK TO s;

SAVEPOINT s;
INSERT INTO fincore.transfers (id, tenant_id, debit_account_id, credit_account_id, amount, currency, kind, created_at)
VALUES ('aaaaaaaa-7e71-4000-8000-0000000000f9', 'aaaaaaaa-7e71-4000-8000-000000000001',
        'aaaaaaaa-7e71-4000-8000-0000000000ff', 'aaaaaaaa-7e71-4000-8000-0000000000a1', 0, 'USD', 'posted',
        clock_timestamp());
SELECT ok('transfer_accounts_exist' = ANY (pg_temp.broken()), 'a transfer names an account that does not exist');
ROLLBACK TO s;

SAVEPOINT s;
INSERT INTO fincore.account_history (account_id, tenant_id, at, transfer_id, debits_pending, debits_posted,
                                     credits_pending, credits_posted)
VALUES ('aaaaaaaa-7e71-4000-8000-0000000000a3', 'aaaaaaaa-7e71-4000-8000-000000000001', 'infinity',
        'aaaaaaaa-7e71-4000-8000-0000000000f2', 0, 0, 0, 1);
SELECT ok('history_matches_counters' = ANY (pg_temp.broken()), 'the latest history row differs from the counters');
ROLLBACK TO s;

SAVEPOINT s;
INSERT INTO fincore.transfers (id, tenant_id, debit_account_id, credit_account_id, amount, currency, kind, created_at)
VALUES ('aaaaaaaa-7e71-4000-8000-0000000000f8', 'aaaaaaaa-7e71-4000-8000-000000000001',
        'aaaaaaaa-7e71-4000-8000-0000000000a1', 'aaaaaaaa-7e71-4000-8000-0000000000a3', 0, 'USD', 'posted',
        clock_timestamp());
SELECT ok('history_covers_transfers' = ANY (pg_temp.broken()), 'a transfer of a history account without its row');
ROLLBACK TO s;

SAVEPOINT s;
DELETE FROM fincore.pending_holds
 WHERE tenant_id = 'aaaaaaaa-7e71-4000-8000-000000000001' AND transfer_id = 'aaaaaaaa-7e71-4000-8000-0000000000f3';
SELECT is(pg_temp.broken(), '{open_holds_listed}', 'an open hold missing from pending_holds');
ROLLBACK TO s;

SAVEPOINT s;
INSERT INTO fincore.transfers (id, tenant_id, debit_account_id, credit_account_id, amount, currency, kind,
                               reversal_of, created_at)
VALUES ('aaaaaaaa-7e71-4000-8000-0000000000f7', 'aaaaaaaa-7e71-4000-8000-000000000001',
        'aaaaaaaa-7e71-4000-8000-0000000000a2', 'aaaaaaaa-7e71-4000-8000-0000000000a1', 101, 'USD', 'reversal',
        'aaaaaaaa-7e71-4000-8000-0000000000f1', clock_timestamp());
SELECT ok('reversals_within_original' = ANY (pg_temp.broken()), 'reversals beyond the original''s amount');
ROLLBACK TO s;

SELECT is(pg_temp.broken(), '{}', 'and the books hold again');

SELECT * FROM finish();
ROLLBACK;
