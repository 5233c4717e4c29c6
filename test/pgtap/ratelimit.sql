-- pgTAP: the shared-memory rate limiter (docs/rate-limits.md): CL.THROTTLE's semantics at
-- given times, argument errors, keys scoped to the tenant, in-flight slots, policies and the
-- PostgREST pre-request hook.  Needs fincore in shared_preload_libraries (scripts/lib.sh).
BEGIN;
SET search_path = fincore, public;
SELECT plan(66);

GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');
-- A key of its own for this run: the table in shared memory outlives the transaction.
CREATE TEMP TABLE run AS SELECT 'tap-' || gen_random_uuid() AS k, gen_random_uuid() AS sub, gen_random_uuid() AS pro_sub;
GRANT SELECT ON run TO PUBLIC;
CREATE FUNCTION pg_temp.at(key text, cost integer, ms integer)
    RETURNS TABLE (allowed boolean, "limit" integer, remaining integer, retry_after interval, reset_after interval)
    LANGUAGE sql AS $$
    SELECT * FROM fincore._rate_limit_at((SELECT k FROM run) || key, 10, '1 second', 4, cost,
                                         '2030-01-01 00:00:00+00'::timestamptz + ms * interval '1 millisecond') $$;

-- ---- GCRA: 10 per second with a burst of 4 (limit 5, one arrival every 100 ms) ----
SELECT results_eq($$SELECT * FROM pg_temp.at('a', 1, 0)$$,
    $$VALUES (true, 5, 4, NULL::interval, interval '0.1 s')$$, 'a first arrival: allowed, 4 remain, whole again in 100 ms');
SELECT results_eq($$SELECT allowed, remaining FROM pg_temp.at('a', 1, 0)$$, $$VALUES (true, 3)$$, 'second');
SELECT results_eq($$SELECT allowed, remaining FROM pg_temp.at('a', 2, 0)$$, $$VALUES (true, 1)$$, 'a cost of 2 takes two');
SELECT results_eq($$SELECT * FROM pg_temp.at('a', 1, 0)$$,
    $$VALUES (true, 5, 0, NULL::interval, interval '0.5 s')$$, 'the fifth at the same instant: allowed, none remain');
SELECT results_eq($$SELECT * FROM pg_temp.at('a', 1, 0)$$,
    $$VALUES (false, 5, 0, interval '0.1 s', interval '0.5 s')$$, 'the sixth: limited, retry after 100 ms, whole after 500 ms');
SELECT results_eq($$SELECT * FROM pg_temp.at('a', 1, 50)$$,
    $$VALUES (false, 5, 0, interval '0.05 s', interval '0.45 s')$$, '50 ms later: still limited, 50 ms to wait');
SELECT results_eq($$SELECT * FROM pg_temp.at('a', 1, 100)$$,
    $$VALUES (true, 5, 0, NULL::interval, interval '0.5 s')$$, 'at 100 ms: allowed again');
SELECT results_eq($$SELECT * FROM pg_temp.at('a', 0, 300)$$,
    $$VALUES (true, 5, 2, NULL::interval, interval '0.3 s')$$, 'a cost of 0 looks without taking: 2 remain at 300 ms');
SELECT results_eq($$SELECT * FROM pg_temp.at('a', 1, 10000)$$,
    $$VALUES (true, 5, 4, NULL::interval, interval '0.1 s')$$, 'long idle: the whole burst is back');
SELECT results_eq($$SELECT * FROM pg_temp.at('b', 6, 0)$$,
    $$VALUES (false, 5, 5, NULL::interval, interval '0 s')$$, 'a cost above the limit: limited, never to be allowed (retry_after NULL)');
SELECT results_eq($$SELECT * FROM pg_temp.at('b', 5, 0)$$,
    $$VALUES (true, 5, 0, NULL::interval, interval '0.5 s')$$, 'a cost of exactly the limit on a fresh key: allowed');
SELECT results_eq($$SELECT allowed, remaining FROM pg_temp.at('a', 1, 9999)$$, $$VALUES (true, 2)$$,
    'a clock that steps back: decided against the key''s time, nothing breaks');
SELECT results_eq($$SELECT "limit", remaining FROM fincore._rate_limit_at((SELECT k FROM run) || 'c', 3, '1 second', 0, 1, '2030-01-01')$$,
    $$VALUES (1, 0)$$, 'burst 0: limit 1, nothing remains after one');
SELECT results_eq($$SELECT retry_after FROM fincore._rate_limit_at((SELECT k FROM run) || 'c', 3, '1 second', 0, 1, '2030-01-01')$$,
    $$VALUES (interval '0.333334 s')$$, 'T = 1 s / 3, rounded down to a nanosecond; retry_after rounded up to a microsecond');

-- ---- the wall clock ----
SELECT ok((SELECT allowed FROM fincore.rate_limit((SELECT k FROM run) || 'w', 1, '1 hour', 1)), 'rate_limit: allowed');
SELECT ok((SELECT allowed FROM fincore.rate_limit((SELECT k FROM run) || 'w', 1, '1 hour', 1)), 'within the burst');
SELECT ok(NOT (SELECT allowed FROM fincore.rate_limit((SELECT k FROM run) || 'w', 1, '1 hour', 1)), 'then limited, in the same transaction: the wall clock, not now()');
SELECT ok((SELECT retry_after BETWEEN interval '59 min' AND interval '1 hour' FROM fincore.rate_limit((SELECT k FROM run) || 'w', 1, '1 hour', 1)),
    'retry_after is about an hour');
SELECT is(fincore.rate_limit_or_raise((SELECT k FROM run) || 'r', 1, '1 hour', 2), 2, 'rate_limit_or_raise returns what remains');
SELECT throws_ok($$SELECT fincore.rate_limit_or_raise((SELECT k FROM run) || 'w', 1, '1 hour', 1)$$, 'ZF753', NULL,
    'rate_limit_or_raise when limited: ZF753');
SELECT throws_ok($$SELECT fincore.rate_limit_or_raise((SELECT k FROM run) || 'w', 1, '1 hour', 1, 5)$$, 'ZF753', NULL,
    'and for a cost that is never allowed');
CREATE FUNCTION pg_temp.error_detail(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || ' / ' || d;
END $$;
SELECT matches(pg_temp.error_detail($$SELECT fincore.rate_limit_or_raise('tap-detail', 1, '1 hour', 0, 1), fincore.rate_limit_or_raise('tap-detail', 1, '1 hour', 0, 1)$$),
    '^ZF753: rate limit exceeded for key "tap-detail" / Retry after (3599\.\d+|3600) seconds \(limit 1, cost 1\)\.$',
    'ZF753 names the key; the detail gives the seconds to wait');
SELECT fincore.rate_limit_reset('tap-detail');
SELECT ok(fincore.rate_limit_reset((SELECT k FROM run) || 'w'), 'rate_limit_reset: true when some allowance was in use');
SELECT ok((SELECT allowed FROM fincore.rate_limit((SELECT k FROM run) || 'w', 1, '1 hour', 1)), 'and the whole allowance is back');
SELECT ok(NOT fincore.rate_limit_reset((SELECT k FROM run) || 'never-seen'), 'false for a key never seen');

-- ---- bad arguments: ZF752 naming the value, and no key is touched ----
SELECT throws_ok($$SELECT fincore.rate_limit('k', 0, '1 second', 1)$$, 'ZF752', 'invalid rate limit: rate 0 is not a positive number of arrivals', 'rate 0');
SELECT throws_ok($$SELECT fincore.rate_limit('k', 1, '0 seconds', 1)$$, 'ZF752', 'invalid rate limit: per 00:00:00 is not a positive interval of at most 31 years', 'per 0');
SELECT throws_ok($$SELECT fincore.rate_limit('k', 1, '-1 second', 1)$$, 'ZF752', NULL, 'a negative per');
SELECT throws_ok($$SELECT fincore.rate_limit('k', 1, '1 month', 1)$$, 'ZF752', 'invalid rate limit: per must be given in days or shorter units, not months or years', 'per in months');
SELECT throws_ok($$SELECT fincore.rate_limit('k', 1, '1 second', -1)$$, 'ZF752', 'invalid rate limit: burst -1 is not between 0 and 2147483646', 'burst -1');
SELECT throws_ok($$SELECT fincore.rate_limit('k', 1, '1 second', 1, -2)$$, 'ZF752', 'invalid rate limit: cost -2 is negative', 'cost -2');
SELECT throws_ok($$SELECT fincore.rate_limit('', 1, '1 second', 1)$$, 'ZF752', 'invalid rate limit: the key is 0 bytes long, not 1 to 1024', 'an empty key');
SELECT throws_ok($$SELECT fincore.rate_limit(repeat('x', 1025), 1, '1 second', 1)$$, 'ZF752', NULL, 'a key of 1025 bytes');
SELECT throws_ok($$SELECT fincore.rate_limit('k', 2000000, '1 ms', 1)$$, 'ZF752', NULL, 'more than one arrival a nanosecond');
SELECT throws_ok($$SELECT fincore.rate_limit('k', 1, '365 days', 100)$$, 'ZF752', NULL, 'a tolerance of more than 31 years');
SELECT throws_ok($$SELECT fincore._rate_limit_at('k', 1, '1 second', 1, 1, 'infinity')$$, 'ZF752',
    'invalid rate limit: at must be a time between 2000 and 2200', 'the test clock stays between 2000 and 2200');
SELECT throws_ok($$SELECT fincore.concurrency_acquire('k', 0)$$, 'ZF752', 'invalid rate limit: max 0 is not a positive number of slots', 'concurrency max 0');
SELECT is((SELECT count(*) FROM fincore._rate_limit_at('k', 1, '1 second', 1, 1, '2030-01-01')), 1::bigint,
    'a valid call after the refusals works');

-- ---- keys are per tenant ----
SELECT fincore.create_tenant('RL A', 'aaaaaaaa-7500-4000-8000-000000000001');
SELECT fincore.create_tenant('RL B', 'bbbbbbbb-7500-4000-8000-000000000002');
SELECT fincore.set_tenant('aaaaaaaa-7500-4000-8000-000000000001');
SELECT ok((SELECT allowed FROM fincore.rate_limit((SELECT k FROM run) || 't', 1, '1 hour', 0)), 'tenant A uses key t');
SELECT ok(NOT (SELECT allowed FROM fincore.rate_limit((SELECT k FROM run) || 't', 1, '1 hour', 0)), 'and has used it up');
SELECT fincore.set_tenant('bbbbbbbb-7500-4000-8000-000000000002');
SELECT ok((SELECT allowed FROM fincore.rate_limit((SELECT k FROM run) || 't', 1, '1 hour', 0)), 'tenant B''s key t is another key');
SELECT fincore.set_tenant(NULL);
SELECT ok((SELECT allowed FROM fincore.rate_limit((SELECT k FROM run) || 't', 1, '1 hour', 0)), 'and so is key t without a tenant');

-- ---- in-flight slots ----
SELECT ok(fincore.concurrency_acquire((SELECT k FROM run) || 'c', 2), 'concurrency_acquire: the first of 2 slots');
SELECT ok(fincore.concurrency_acquire((SELECT k FROM run) || 'c', 2), 'the second');
SELECT ok(NOT fincore.concurrency_acquire((SELECT k FROM run) || 'c', 2), 'no third');
SELECT ok(fincore.concurrency_release((SELECT k FROM run) || 'c'), 'concurrency_release gives one back');
SELECT ok(fincore.concurrency_acquire((SELECT k FROM run) || 'c', 2), 'and it can be taken again');
SELECT ok(NOT fincore.concurrency_release((SELECT k FROM run) || 'not-held'), 'releasing a slot not held: false');
SELECT ok((SELECT in_flight >= 2 AND used >= live AND slots >= 1024 FROM fincore.rate_limit_stats()),
    'rate_limit_stats counts the slots in flight');

-- ---- policies ----
SELECT throws_ok($$SELECT fincore.set_rate_limit_policy('Bad Name', 1, '1 second', 1)$$, 'ZF754', NULL, 'a policy name that is not a word');
SELECT throws_ok($$SELECT fincore.set_rate_limit_policy('p', 1, '1 second', 1, key_by => 'ip')$$, 'ZF754',
    'invalid rate limit policy p: key_by ''ip'' is not subject, tenant or address', 'key_by must be subject, tenant or address');
SELECT throws_ok($$SELECT fincore.set_rate_limit_policy('p', 0, '1 second', 1)$$, 'ZF752', NULL, 'a bad quota: ZF752');
SELECT is((SELECT count(*) FROM fincore.rate_limit_default_policies) + (SELECT count(*) FROM fincore.rate_limit_policies),
    0::bigint, 'nothing was written by the refusals');
SELECT lives_ok($$SELECT fincore.set_rate_limit_policy('anon-default', 1000, '1 second', 100, priority => 1000)$$,
    'a default policy for every request');
SELECT lives_ok($$SELECT fincore.set_rate_limit_policy('rpc-transfer', 2, '1 hour', 1, tenant => 'aaaaaaaa-7500-4000-8000-000000000001',
                                                     path_pattern => '/rpc/transfer%')$$,
    'a policy of tenant A for one endpoint');
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"' || gen_random_uuid() || '","role":"authenticated","tenant_id":"bbbbbbbb-7500-4000-8000-000000000002"}', true);
SELECT throws_ok($$SELECT fincore.set_rate_limit_policy('mine', 1, '1 second', 1)$$, 'ZF803', NULL,
    'an app role may not set a default policy');
SELECT throws_ok($$SELECT fincore.set_rate_limit_policy('mine', 1, '1 second', 1, tenant => 'bbbbbbbb-7500-4000-8000-000000000002')$$, 'ZF803', NULL,
    'nor a tenant''s policy without being its admin');
SELECT is((SELECT count(*) FROM fincore.rate_limit_policies), 0::bigint, 'an app role of tenant B does not see A''s policies');
-- The PostgREST path: a request of tenant A to /rpc/transfer, three times.
SELECT set_config('request.jwt.claims', '{"sub":"' || (SELECT sub FROM run) || '","role":"authenticated","tenant_id":"aaaaaaaa-7500-4000-8000-000000000001"}', true);
SELECT set_config('request.path', '/rpc/transfer', true);
SELECT lives_ok($$SELECT fincore.pre_request()$$, 'pre_request: the first request passes');
SELECT lives_ok($$SELECT fincore.pre_request()$$, 'the second (burst 1)');
SELECT throws_ok($$SELECT fincore.pre_request()$$, 'PGRST', NULL, 'the third: SQLSTATE PGRST, which PostgREST answers with its detail''s status');
SELECT matches(pg_temp.error_detail($$SELECT fincore.pre_request()$$),
    '^PGRST: \{"code": "ZF753", "hint": null, "details": "policy rpc-transfer allows 2 requests per 01:00:00 with a burst of 1; retry after [0-9.]+ seconds", "message": "rate limit exceeded"\} / \{"status": 429, "headers": \{"Retry-After": "(1799|1800)"\}, "status_text": "Too Many Requests"\}$',
    'the error: code ZF753 in the message, HTTP 429 with Retry-After in the detail');
SELECT set_config('request.path', '/rpc/balance', true);
SELECT lives_ok($$SELECT fincore.pre_request(); SELECT fincore.pre_request()$$, 'another path falls to the default policy');
RESET ROLE;

-- Limits that follow the plan: a subscriber entitled to 'api-pro' gets the 'pro' policy.
SELECT fincore.set_tenant('aaaaaaaa-7500-4000-8000-000000000001');
SELECT fincore.create_product('Pro', 'ad750000-0000-4000-8000-000000000001');
SELECT fincore.set_product_features('ad750000-0000-4000-8000-000000000001', '{api-pro}');
SELECT fincore.create_price('ad750000-0000-4000-8000-000000000001', 1000, 'USD', trial_days => 14,
                            id => 'ae750000-0000-4000-8000-000000000001');
SELECT fincore.create_account('USD', id => 'ac750000-0000-4000-8000-000000000001');
SELECT is((SELECT status FROM fincore.create_subscription('ac750000-0000-4000-8000-000000000001',
            'ae750000-0000-4000-8000-000000000001', subscriber => (SELECT pro_sub FROM run))), 'trialing',
    'a subscriber on the Pro plan''s trial');
SELECT fincore.set_rate_limit_policy('pro', 100, '1 hour', 50, tenant => 'aaaaaaaa-7500-4000-8000-000000000001',
                                     path_pattern => '/rpc/transfer%', feature => 'api-pro', priority => 1);
SELECT fincore.set_tenant(NULL);
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"' || (SELECT pro_sub FROM run) || '","role":"authenticated","tenant_id":"aaaaaaaa-7500-4000-8000-000000000001"}', true);
SELECT set_config('request.path', '/rpc/transfer', true);
SELECT lives_ok($$SELECT fincore.pre_request(); SELECT fincore.pre_request(); SELECT fincore.pre_request()$$,
    'the Pro subscriber''s three requests pass: the pro policy, not rpc-transfer');
SELECT set_config('request.jwt.claims', '{"sub":"' || (SELECT sub FROM run) || '","role":"authenticated","tenant_id":"aaaaaaaa-7500-4000-8000-000000000001"}', true);
SELECT throws_ok($$SELECT fincore.pre_request()$$, 'PGRST', NULL, 'the user without the plan is still limited by rpc-transfer');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
