-- pgTAP: the ledger's totals are checked before a write, never after (ZF319 overflows_balance).
--
-- TigerBeetle's rules: each counter, and pending + posted on each side, must fit, so that an
-- accepted hold can always be posted; fincore adds the available balance every reader computes
-- (credits_posted + credit_limit), and a hot account's row plus its deltas.  The test drives
-- counters to the edge of int64, checks each refusal wrote nothing, and then runs every read and
-- maintenance function over the stored state: none may fail.
BEGIN;
SET search_path = fincore, public;
SELECT plan(28);

SELECT fincore.create_tenant('Overflow', 'aaaaaaaa-0f10-4000-8000-000000000001');
SELECT fincore.set_tenant('aaaaaaaa-0f10-4000-8000-000000000001');
SELECT fincore.set_ledger_events(false);
CREATE TEMP TABLE ids (name text PRIMARY KEY, id uuid);
INSERT INTO ids SELECT n, fincore.create_account('USD', 1, f, l)
  FROM (VALUES ('src1', NULL::text[], NULL::bigint), ('dst1', NULL, NULL), ('src2', NULL, NULL), ('dst2', NULL, NULL),
               ('src3', NULL, NULL), ('dst3', NULL, NULL), ('src4', NULL, NULL),
               ('lim', '{debits_must_not_exceed_credits}', 9223372036854775797),
               ('hot', '{hot}', NULL), ('src5', NULL, NULL), ('hotsrc', '{hot}', NULL)) AS v(n, f, l);
CREATE FUNCTION pg_temp.acct(n text) RETURNS uuid LANGUAGE sql AS $$ SELECT id FROM ids WHERE name = n $$;
CREATE FUNCTION pg_temp.state() RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM fincore.transfers)::text || '/' || (SELECT count(*) FROM fincore.pending_holds)::text
           || '/' || (SELECT count(*) FROM fincore.account_deltas)::text || '/' || (SELECT count(*) FROM fincore.account_history)::text
           || '/' || (SELECT coalesce(sum(debits_pending + debits_posted + credits_pending + credits_posted), 0) FROM fincore.accounts)::text
           || '/' || (SELECT count(*) FROM fincore.outbox_stream)::text $$;

-- 1. A counter at the edge.
SELECT lives_ok($$SELECT fincore.transfer(pg_temp.acct('src1'), pg_temp.acct('dst1'), 9223372036854775807)$$,
    'a transfer of the largest amount');
CREATE TEMP TABLE before AS SELECT pg_temp.state() AS s;
SELECT throws_ok($$SELECT fincore.transfer(pg_temp.acct('src1'), pg_temp.acct('dst1'), 1)$$, 'ZF319', NULL,
    'ZF319: one more unit would overflow debits_posted and credits_posted');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'the refusal wrote nothing');

-- 2. Pending + posted must fit: an accepted hold can always be posted.
SELECT lives_ok($$SELECT fincore.transfer(pg_temp.acct('src2'), pg_temp.acct('dst2'), 9223372036854775807,
                                          'aaaaaaaa-0f10-4000-8000-0000000000b1', pending => true)$$,
    'a hold of the largest amount');
UPDATE before SET s = pg_temp.state();
SELECT throws_ok($$SELECT fincore.transfer(pg_temp.acct('src2'), pg_temp.acct('dst2'), 1)$$, 'ZF319', NULL,
    'ZF319: a posted transfer while a hold fills the range (pending + posted must fit)');
SELECT throws_ok($$SELECT fincore.transfer(pg_temp.acct('src2'), pg_temp.acct('dst2'), 1, pending => true)$$, 'ZF319', NULL,
    'ZF319: a second hold too');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'the refusals wrote nothing');
SELECT lives_ok($$SELECT fincore.post_pending('aaaaaaaa-0f10-4000-8000-0000000000b1')$$, 'the hold posts in full');

-- 3. A hold beside a posted balance.
SELECT lives_ok($$SELECT fincore.transfer(pg_temp.acct('src3'), pg_temp.acct('dst3'), 9223372036854775802)$$,
    'posted up to 5 below the edge');
UPDATE before SET s = pg_temp.state();
SELECT throws_ok($$SELECT fincore.transfer(pg_temp.acct('src3'), pg_temp.acct('dst3'), 6, pending => true)$$, 'ZF319', NULL,
    'ZF319: a hold that could not be posted is refused when it is made');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'the refusal wrote nothing');
SELECT lives_ok($$SELECT fincore.transfer(pg_temp.acct('src3'), pg_temp.acct('dst3'), 5,
                                          'aaaaaaaa-0f10-4000-8000-0000000000b2', pending => true, timeout => '1 second')$$,
    'a hold that fits exactly');

-- 4. The available balance (credits_posted + credit_limit) must fit.
UPDATE before SET s = pg_temp.state();
SELECT throws_ok($$SELECT fincore.transfer(pg_temp.acct('src4'), pg_temp.acct('lim'), 11)$$, 'ZF319', NULL,
    'ZF319: credits_posted + credit_limit would pass the edge');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'the refusal wrote nothing');
SELECT lives_ok($$SELECT fincore.transfer(pg_temp.acct('src4'), pg_temp.acct('lim'), 10)$$, 'credits up to the edge');

-- 5. A hot account: the row plus its deltas must fit.
SELECT lives_ok($$SELECT fincore.transfer(pg_temp.acct('src5'), pg_temp.acct('hot'), 9223372036854775707)$$,
    'a large credit to a hot account (locks the row)');
UPDATE before SET s = pg_temp.state();
SELECT throws_ok($$SELECT fincore.transfer(pg_temp.acct('src5'), pg_temp.acct('hot'), 101)$$, 'ZF319', NULL,
    'ZF319: a small leg to a hot account near the edge is checked under its lock');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'the refusal wrote nothing');
SELECT lives_ok($$SELECT fincore.transfer(pg_temp.acct('hotsrc'), pg_temp.acct('hot'), 100)$$,
    'a leg that fits, from another hot account');
SELECT lives_ok($$SELECT fincore.transfer(pg_temp.acct('src4'), pg_temp.acct('hotsrc'), 500,
                                          'aaaaaaaa-0f10-4000-8000-0000000000b3', pending => true);
                  SELECT fincore.post_pending('aaaaaaaa-0f10-4000-8000-0000000000b3', 200)$$,
    'a hold on a hot account far from the edge posts through its deltas (pending shrinks below the row)');

-- 6. In a batch: one item is refused, the others are not.
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-0f10-4000-8000-0000000000c1', pg_temp.acct('src4'), pg_temp.acct('dst1'), 1, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-0f10-4000-8000-0000000000c2', pg_temp.acct('src4'), pg_temp.acct('src1'), 1, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('overflows_balance'::text), ('ok')$$, 'a batch: overflows_balance for the item that would overflow, ok for the next');

-- 7. Every read and maintenance function over the stored state.
SELECT lives_ok($$SELECT count(*) FROM ids, fincore.balance(ids.id)$$, 'balance() of every account');
SELECT lives_ok($$SELECT count(*) FROM ids, fincore.balance(ids.id, now() + interval '1 hour')$$, 'balance(as_of) of every account');
SELECT lives_ok($$SELECT count(*) FROM fincore.account_balances$$, 'account_balances');
SELECT is_empty($$SELECT * FROM fincore.verify()$$, 'verify() runs and finds nothing wrong');
SELECT lives_ok($$SELECT fincore.rollup_hot_accounts(100)$$, 'rollup_hot_accounts');
SELECT is((SELECT posted FROM fincore.balance(pg_temp.acct('hot'))), 9223372036854775807, 'the hot account is at the edge, exactly');
SELECT lives_ok($$SELECT pg_sleep(1.1); SELECT fincore.expire_pending(100); SELECT * FROM fincore.maintenance()$$,
    'expire_pending and maintenance');
SELECT * FROM finish();
ROLLBACK;
