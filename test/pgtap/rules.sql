-- pgTAP: rules in the posting path (docs/limits.md, "Rules"): the language's validation
-- (ZF805), active rejections (ZF334 / rule_rejected) that write nothing, flags, shadow mode
-- that never changes an outcome, fincore.decisions and the decision events, backtests,
-- and who may manage rules.
BEGIN;
SET search_path = fincore, public;
SELECT plan(58);

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.create_tenant('Rules A', '2a000000-0000-4000-8000-00000000000a');
SELECT set_config('request.jwt.claims', '{"tenant_id":"2a000000-0000-4000-8000-00000000000a"}', true);
SELECT fincore.create_account('USD', 1, id => 'a1000000-0000-4000-8000-000000000001');
SELECT fincore.create_account('USD', 2, id => 'a2000000-0000-4000-8000-000000000002');
CREATE FUNCTION pg_temp.req(d uuid, c uuid, amount bigint, metadata jsonb DEFAULT NULL)
    RETURNS fincore.transfer_request LANGUAGE sql AS $$
    SELECT ROW(NULL, d, c, amount, 0, NULL, NULL, NULL, NULL, NULL, NULL, metadata, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request $$;

-- ---------------------------------------------------------------------------
-- The language
-- ---------------------------------------------------------------------------
SELECT lives_ok($$SELECT fincore.check_rule('{"all": [{"field": "amount", "op": "ge", "value": 100},
                          {"not": {"field": "metadata.country", "op": "in", "value": ["DE", "FR"]}},
                          {"any": [{"field": "local_hour", "op": "lt", "value": 6},
                                   {"field": "local_weekday", "op": "ge", "value": 6}]},
                          {"field": "debit_account", "op": "eq", "value": "a1000000-0000-4000-8000-000000000001"},
                          {"field": "currency", "op": "eq", "value": "USD"},
                          {"field": "kind", "op": "eq", "value": "pending"},
                          {"field": "code", "op": "not_in", "value": [1, 2]},
                          {"field": "metadata.vip", "op": "eq", "value": true},
                          {"field": "metadata.score", "op": "gt", "value": 0.75}]}')$$,
    'every kind of condition compiles');
SELECT throws_like($$SELECT fincore.check_rule('{"field": "amount", "op": "gte", "value": 1}')$$,
    '%unknown op "gte"%', 'an unknown operator is named (ZF805)');
SELECT throws_ok($$SELECT fincore.check_rule('{"field": "amount", "op": "gt", "value": 1.5}')$$, 'ZF805', NULL,
    'amount compares with integers only');
SELECT throws_like($$SELECT fincore.check_rule('{"field": "colour", "op": "eq", "value": "red"}')$$,
    '%unknown field "colour"%', 'an unknown field is named');
SELECT throws_like($$SELECT fincore.check_rule('{"all": [{"field": "amount", "op": "gt", "value": 1}, {"field": "debit_account", "op": "eq", "value": "x"}]}')$$,
    '%rule.all[1].value%', 'the path says which condition is wrong');
SELECT throws_ok($$SELECT fincore.check_rule('{"any": []}')$$, 'ZF805', NULL, 'an empty any is ZF805');
SELECT throws_ok($$SELECT fincore.check_rule('{"field": "currency", "op": "lt", "value": "USD"}')$$, 'ZF805', NULL,
    'lt orders numbers only');
SELECT throws_ok($$SELECT fincore.check_rule('{"field": "amount", "op": "eq", "value": 1, "extra": 2}')$$, 'ZF805', NULL,
    'an unknown key is ZF805');
SELECT throws_ok($$SELECT fincore.check_rule('"amount > 5"')$$, 'ZF805', NULL, 'a condition is an object, never SQL text');
SELECT throws_ok($$SELECT fincore.check_rule('{"field": "kind", "op": "eq", "value": "refund"}')$$, 'ZF805', NULL,
    'kind is posted or pending');
SELECT throws_ok($$SELECT fincore.check_rule('{"field": "currency", "op": "eq", "value": "XQZ"}')$$, 'ZF102', NULL,
    'an unknown currency is ZF102');
SELECT throws_ok($$SELECT fincore.check_rule((SELECT ('{"not": ' || repeat('{"not": ', 20) || '{"field": "amount", "op": "eq", "value": 1}' || repeat('}', 21))::jsonb))$$,
    'ZF805', NULL, 'conditions nest at most 16 deep');
SELECT throws_ok($$SELECT fincore.create_rule('r', '{"field": "amount", "op": "gt", "value": 1}', outcome => 'review',
                                               review_timeout => '40 days')$$,
    'ZF805', NULL, 'a review waits at most 31 days: ZF805');
SELECT throws_ok($$SELECT fincore.create_rule('r', '{"field": "amount", "op": "gt", "value": 1}', mode => 'on')$$,
    'ZF805', NULL, 'an unknown mode is ZF805');
SELECT throws_ok($$SELECT fincore.update_rule('ffffffff-0000-4000-8000-000000000000', mode => 'active')$$,
    'ZF806', NULL, 'updating an unknown rule is ZF806');

-- ---------------------------------------------------------------------------
-- In the posting path
-- ---------------------------------------------------------------------------
SELECT fincore.create_rule('big', '{"field": "amount", "op": "gt", "value": 1000}', 'reject', 'active',
                           id => 'b0000000-0000-4000-8000-000000000001');
SELECT throws_ok($$SELECT fincore.create_rule('big', '{"field": "amount", "op": "gt", "value": 1}')$$, 'ZF804', NULL,
    'a rule name in use is ZF804');
CREATE TEMP TABLE before_refusal AS
    SELECT (SELECT count(*) FROM fincore.transfers) AS transfers, (SELECT count(*) FROM fincore.decisions) AS decisions,
           (SELECT count(*) FROM fincore.account_history) AS history;
SELECT throws_ok($$SELECT fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 1001)$$,
    'ZF334', NULL, 'an active reject rule refuses a single call (ZF334)');
SELECT throws_like($$SELECT fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 1001)$$,
    '%rejected by rule "big"%', 'the error names the rule');
SELECT ok((SELECT transfers = (SELECT count(*) FROM fincore.transfers) AND decisions = (SELECT count(*) FROM fincore.decisions)
              AND history = (SELECT count(*) FROM fincore.account_history) FROM before_refusal),
    'a refused single call leaves no transfer, history or decision');
SELECT is((fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 1000)).result,
    'created', 'at the rule''s edge the transfer passes');
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        pg_temp.req('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 5000),
        pg_temp.req('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 5)]) ORDER BY index$$,
    ARRAY['rule_rejected', 'ok'], 'a batch: rule_rejected for the item the rule meets');
SELECT is((SELECT outcome || '/' || mode || '/' || (seen->>'amount') FROM fincore.decisions
            WHERE rule_id = 'b0000000-0000-4000-8000-000000000001'),
    'reject/active/5000', 'the refusal is a decision: the rule, outcome, mode and the values seen');
SELECT is((SELECT result FROM fincore.failed_transfers ORDER BY failed_at DESC LIMIT 1), 'rule_rejected',
    'the refused id stays failed');

SELECT fincore.create_rule('to-code-2', '{"field": "credit_code", "op": "eq", "value": 2}', 'flag', 'active');
SELECT fincore.create_rule('sanctioned', '{"field": "metadata.country", "op": "in", "value": ["KP", "IR"]}', 'reject', 'shadow');
SELECT is((fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 7,
                            metadata => '{"country": "KP"}', id => 'c0000000-0000-4000-8000-000000000001')).result,
    'created', 'a shadow reject never changes the outcome');
SELECT results_eq($$SELECT r.name, d.outcome, d.mode FROM fincore.decisions d JOIN fincore.rules r ON r.id = d.rule_id
                     WHERE d.transfer_id = 'c0000000-0000-4000-8000-000000000001' ORDER BY r.name$$,
    $$VALUES ('sanctioned', 'reject', 'shadow'), ('to-code-2', 'flag', 'active')$$,
    'the flag and the shadow reject are recorded');
SELECT results_eq($$SELECT type FROM fincore.outbox_events WHERE aggregateid = 'c0000000-0000-4000-8000-000000000001'
                     AND topic = 'risk' ORDER BY seq$$,
    ARRAY['decision.shadow', 'decision.flagged'], 'each decision is an outbox event, in the rules'' order by name (a shadow one says so)');
SELECT is((fincore.transfer('a2000000-0000-4000-8000-000000000002', 'a1000000-0000-4000-8000-000000000001', 7,
                            metadata => '{"country": 7}', id => 'c0000000-0000-4000-8000-000000000002')).result,
    'created', 'a metadata member of another type meets no comparison');
SELECT is((SELECT count(*) FROM fincore.decisions WHERE transfer_id = 'c0000000-0000-4000-8000-000000000002'), 0::bigint,
    'no decision for a plain accept');
SELECT lives_ok($$SELECT fincore.update_rule(id, mode => 'active') FROM fincore.rules WHERE name = 'sanctioned'$$,
    'a shadow rule goes active');
SELECT throws_ok($$SELECT fincore.transfer('a2000000-0000-4000-8000-000000000002', 'a1000000-0000-4000-8000-000000000001', 7,
                                           metadata => '{"country": "IR"}')$$,
    'ZF334', NULL, 'and rejects what it only recorded before');
SELECT lives_ok($$SELECT fincore.update_rule(id, enabled => false) FROM fincore.rules WHERE name = 'sanctioned'$$, 'disabled');
SELECT is((fincore.transfer('a2000000-0000-4000-8000-000000000002', 'a1000000-0000-4000-8000-000000000001', 7,
                            metadata => '{"country": "IR"}')).result, 'created', 'a disabled rule decides nothing');

-- Review: an active review rule makes the transfer a hold and enqueues a review job.
SELECT fincore.create_rule('manual', '{"field": "metadata.review", "op": "eq", "value": true}', 'review', 'active',
                           review_timeout => '2 hours');
SELECT is((SELECT (r).kind FROM (SELECT fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 300,
                            metadata => '{"review": true}', id => 'd0000000-0000-4000-8000-000000000001') AS r) x),
    'pending', 'a transfer a review rule meets is a hold');
SELECT ok((SELECT expires_at BETWEEN now() + interval '119 minutes' AND now() + interval '121 minutes'
             FROM fincore.transfers WHERE id = 'd0000000-0000-4000-8000-000000000001'),
    'that waits review_timeout');
SELECT is((SELECT payload->>'rule' FROM fincore.jobs WHERE queue = 'fincore.review'
            AND payload->>'transfer_id' = 'd0000000-0000-4000-8000-000000000001'), 'manual',
    'a review job is on the queue fincore.review');
SELECT is((SELECT d.outcome || '/' || d.mode FROM fincore.decisions d JOIN fincore.rules r ON r.id = d.rule_id
            WHERE d.transfer_id = 'd0000000-0000-4000-8000-000000000001' AND r.name = 'manual'), 'review/active',
    'the review is a decision');
SELECT is((fincore.approve_review('d0000000-0000-4000-8000-000000000001')).kind, 'post', 'approving posts the hold');
SELECT fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 300,
                        metadata => '{"review": true}', id => 'd0000000-0000-4000-8000-000000000002');
SELECT is((fincore.reject_review('d0000000-0000-4000-8000-000000000002')).kind, 'void', 'rejecting voids it');
SELECT throws_ok($$SELECT fincore.approve_review('c0000000-0000-4000-8000-000000000002')$$, 'ZF807', NULL,
    'a transfer no review rule held cannot be approved');
SELECT throws_ok($$SELECT fincore.approve_review('d0000000-0000-4000-8000-000000000001')$$, 'ZF310', NULL,
    'an approved review cannot be approved again');

-- Aggregates: the count or sum of an account's transfers in a trailing window, this one included.
SELECT throws_like($$SELECT fincore.check_rule('{"aggregate": "count", "window_seconds": 60, "op": "gt", "value": 3}')$$,
    '%needs "of"%', 'an aggregate needs "of" (ZF805)');
SELECT throws_ok($$SELECT fincore.check_rule('{"aggregate": "count", "of": "debit_account", "window_seconds": 5, "op": "gt", "value": 3}')$$,
    'ZF805', NULL, 'an aggregate''s window is 10 seconds or more');
SELECT throws_ok($$SELECT fincore.check_rule('{"aggregate": "avg", "of": "debit_account", "window_seconds": 60, "op": "gt", "value": 3}')$$,
    'ZF805', NULL, 'count or sum');
SELECT throws_ok($$SELECT fincore.check_rule('{"aggregate": "count", "of": "debit_account", "window_seconds": 60, "op": "in", "value": [3]}')$$,
    'ZF805', NULL, 'an aggregate compares with eq ... ge');
SELECT throws_ok($$SELECT fincore.check_rule('{"aggregate": "distinct_counterparties", "of": "debit_account", "window": "day", "op": "gt", "value": 3}')$$,
    'ZF805', NULL, 'distinct counterparties take a trailing window');
SELECT throws_ok($$SELECT fincore.check_rule('{"aggregate": "count", "of": "debit_account", "window": "day", "window_seconds": 60, "op": "gt", "value": 3}')$$,
    'ZF805', NULL, 'window or window_seconds, not both');
SELECT lives_ok($$SELECT fincore.check_rule('{"aggregate": "sum", "of": "credit_account", "window": "month", "op": "gt", "value": 3}')$$,
    'a sum over the calendar month');
SELECT fincore.create_account('USD', 3, id => 'a3000000-0000-4000-8000-000000000003');
SELECT fincore.create_rule('velocity', '{"all": [{"field": "debit_code", "op": "eq", "value": 3},
                                                 {"aggregate": "count", "of": "debit_account", "window_seconds": 600,
                                                  "op": "gt", "value": 2}]}', 'reject', 'active');
SELECT is((SELECT count(*) FROM (SELECT fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a2000000-0000-4000-8000-000000000002', 5)
                                   FROM generate_series(1, 2)) x), 2::bigint, 'two debits of a3 in ten minutes pass');
SELECT throws_ok($$SELECT fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a2000000-0000-4000-8000-000000000002', 5)$$,
    'ZF334', NULL, 'the third is refused: its count would be 3');
SELECT is((fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 5)).result,
    'created', 'another account has its own count');
SELECT fincore.create_account('USD', 4, id => 'a5000000-0000-4000-8000-000000000005');
SELECT fincore.create_rule('fan-out', '{"all": [{"field": "debit_account", "op": "eq", "value": "a5000000-0000-4000-8000-000000000005"},
                                                {"aggregate": "distinct_counterparties", "of": "debit_account",
                                                 "window_seconds": 3600, "op": "gt", "value": 2}]}', 'reject', 'active');
SELECT is((SELECT count(*) FROM (SELECT fincore.transfer('a5000000-0000-4000-8000-000000000005', c, 1)
                                   FROM unnest(ARRAY['a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002',
                                                     'a1000000-0000-4000-8000-000000000001']::uuid[]) c) x), 3::bigint,
    'two distinct counterparties (one paid twice) pass');
SELECT throws_ok($$SELECT fincore.transfer('a5000000-0000-4000-8000-000000000005', 'a3000000-0000-4000-8000-000000000003', 1)$$,
    'ZF334', NULL, 'a third distinct counterparty in the hour is refused');
SELECT is((fincore.transfer('a5000000-0000-4000-8000-000000000005', 'a2000000-0000-4000-8000-000000000002', 1)).result,
    'created', 'paying one it already paid is not a new counterparty');
SELECT is((SELECT count(*) FROM fincore.backtest_rule('{"aggregate": "count", "of": "debit_account", "window_seconds": 600, "op": "eq", "value": 2}',
                                                      now() - interval '1 hour', now() + interval '1 hour') b
            JOIN fincore.transfers t ON t.id = b.transfer_id WHERE t.debit_account_id = 'a3000000-0000-4000-8000-000000000003'),
    1::bigint, 'a backtest counts the history as the ledger did: a3''s second debit had a count of 2');

-- A backtest judges past transfers as the rule would have, and writes nothing.
SELECT results_eq($$SELECT transfer_id FROM fincore.backtest_rule('{"field": "metadata.country", "op": "in", "value": ["KP", "IR"]}',
                                                                   now() - interval '1 hour', now() + interval '1 hour')
                     ORDER BY created_at LIMIT 1$$,
    ARRAY['c0000000-0000-4000-8000-000000000001'::uuid], 'backtest finds the transfer the shadow rule recorded');
SELECT is((SELECT count(*) FROM fincore.backtest_rule('{"field": "amount", "op": "gt", "value": 1000}',
                                                      now() - interval '1 hour', now() + interval '1 hour')), 0::bigint,
    'backtest: what the active rule refused was never written, so nothing is found');

-- Tenants and admins
SELECT set_config('request.jwt.claims', '{"tenant_id":"2a000000-0000-4000-8000-00000000000a","sub":"c0000000-0000-4000-8000-0000000000aa","role":"authenticated"}', true);
SET LOCAL ROLE authenticated;
SELECT throws_ok($$SELECT fincore.create_rule('by-member', '{"field": "amount", "op": "gt", "value": 1}')$$, 'ZF803', NULL,
    'a member who is not an admin cannot create a rule');
SELECT is(count(*), 6::bigint, 'an app role reads its tenant''s rules') FROM fincore.rules;
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
