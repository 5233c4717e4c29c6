-- pgTAP: the fee engine - catalogue, behaviour as the roles an application uses,
-- the per-backend cache and its invalidation, and every fee SQLSTATE (ZF401-ZF413)
-- plus the money and tenancy codes a fee call can raise.
BEGIN;
SET search_path = fincore, public;
SELECT plan(160);

GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
CREATE ROLE tap_fee_backend NOLOGIN;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.grant_app_role('tap_fee_backend', trusted => true);
SELECT fincore.create_tenant('Fee tenant A', 'fa000000-0000-4000-8000-00000000000a');
SELECT fincore.create_tenant('Fee tenant B', 'fb000000-0000-4000-8000-00000000000b');
CREATE FUNCTION pg_temp.claims_of(t text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE t WHEN 'A' THEN '{"sub":"fa000000-1111-4000-8000-00000000000a","role":"authenticated","tenant_id":"fa000000-0000-4000-8000-00000000000a"}'
                  WHEN 'B' THEN '{"sub":"fb000000-1111-4000-8000-00000000000b","role":"authenticated","tenant_id":"fb000000-0000-4000-8000-00000000000b"}'
           END $$;

-- ---------------------------------------------------------------------------
-- Catalogue
-- ---------------------------------------------------------------------------
SELECT has_table('fincore', 'fee_schedules', 'table fee_schedules exists');
SELECT has_type('fincore', 'fee_component', 'type fee_component exists');
SELECT has_function('fincore', 'define_fee_schedule', ARRAY['text', 'text', 'jsonb', 'timestamp with time zone', 'timestamp with time zone', 'text']);
SELECT has_function('fincore', 'check_fee_schedule', ARRAY['text', 'text', 'jsonb', 'timestamp with time zone', 'timestamp with time zone', 'text']);
SELECT has_function('fincore', 'end_fee_schedule', ARRAY['text', 'timestamp with time zone']);
SELECT has_function('fincore', 'calculate_fee', ARRAY['text', 'bigint', 'jsonb', 'timestamp with time zone']);
SELECT has_function('fincore', 'fee_breakdown', ARRAY['text', 'bigint', 'jsonb', 'timestamp with time zone']);
SELECT has_function('fincore', 'gross_up', ARRAY['text', 'bigint', 'jsonb', 'timestamp with time zone']);
SELECT has_function('fincore', 'quote_fee', ARRAY['text', 'bigint', 'text', 'jsonb', 'timestamp with time zone', 'text']);
SELECT function_returns('fincore', 'calculate_fee', ARRAY['text', 'bigint', 'jsonb', 'timestamp with time zone'], 'bigint');
SELECT function_returns('fincore', 'fee_breakdown', ARRAY['text', 'bigint', 'jsonb', 'timestamp with time zone'], 'setof fee_component');
SELECT function_returns('fincore', 'define_fee_schedule', ARRAY['text', 'text', 'jsonb', 'timestamp with time zone', 'timestamp with time zone', 'text'], 'uuid');
SELECT is((SELECT pg_get_function_arguments('fincore.calculate_fee(text,bigint,jsonb,timestamptz)'::regprocedure)),
    $$schedule text, amount bigint, context jsonb DEFAULT '{}'::jsonb, at timestamp with time zone DEFAULT now()$$,
    'calculate_fee(schedule, amount, context default {}, at default now())');
SELECT is((SELECT pg_get_function_arguments('fincore.define_fee_schedule(text,text,jsonb,timestamptz,timestamptz,text)'::regprocedure)),
    $$code text, currency text, rules jsonb, effective_from timestamp with time zone DEFAULT now(), effective_until timestamp with time zone DEFAULT NULL::timestamp with time zone, rounding text DEFAULT 'half_even'::text$$,
    'define_fee_schedule defaults: now(), open-ended, half_even');
SELECT volatility_is('fincore', 'calculate_fee', ARRAY['text', 'bigint', 'jsonb', 'timestamp with time zone'], 'stable');
SELECT volatility_is('fincore', 'gross_up', ARRAY['text', 'bigint', 'jsonb', 'timestamp with time zone'], 'stable');
SELECT volatility_is('fincore', 'define_fee_schedule', ARRAY['text', 'text', 'jsonb', 'timestamp with time zone', 'timestamp with time zone', 'text'], 'volatile');
SELECT is_strict('fincore', 'calculate_fee', ARRAY['text', 'bigint', 'jsonb', 'timestamp with time zone']);
SELECT isnt_strict('fincore', 'define_fee_schedule', ARRAY['text', 'text', 'jsonb', 'timestamp with time zone', 'timestamp with time zone', 'text']);
SELECT ok((SELECT prosecdef FROM pg_proc WHERE oid = 'fincore.define_fee_schedule(text,text,jsonb,timestamptz,timestamptz,text)'::regprocedure),
    'define_fee_schedule is SECURITY DEFINER');
SELECT ok(EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'fincore.fee_schedules'::regclass
                   AND conname = 'fee_schedules_no_overlap' AND contype = 'x'),
    'versions of a code cannot overlap: an exclusion constraint');
SELECT ok((SELECT 'fincore.fee_schedules'::regclass = ANY (extconfig) FROM pg_extension WHERE extname = 'fincore'),
    'fee_schedules is dumped by pg_dump');
SELECT has_trigger('fincore', 'fee_schedules', 'fee_schedules_changed', 'the cache invalidation trigger exists');
SELECT ok(has_function_privilege('authenticated', 'fincore.calculate_fee(text,bigint,jsonb,timestamptz)', 'EXECUTE'),
    'app roles may calculate fees');
SELECT ok(has_function_privilege('authenticated', 'fincore.quote_fee(text,bigint,text,jsonb,timestamptz,text)', 'EXECUTE'),
    'app roles may quote fees');
SELECT ok(NOT has_function_privilege('authenticated', 'fincore.define_fee_schedule(text,text,jsonb,timestamptz,timestamptz,text)', 'EXECUTE'),
    'app roles may not define fee schedules');
SELECT ok(NOT has_function_privilege('authenticated', 'fincore.end_fee_schedule(text,timestamptz)', 'EXECUTE'),
    'app roles may not end fee schedules');
SELECT ok(has_function_privilege('tap_fee_backend', 'fincore.define_fee_schedule(text,text,jsonb,timestamptz,timestamptz,text)', 'EXECUTE'),
    'trusted roles may define fee schedules');
SELECT ok(NOT has_function_privilege('public', 'fincore.define_fee_schedule(text,text,jsonb,timestamptz,timestamptz,text)', 'EXECUTE'),
    'PUBLIC may not define fee schedules');

-- ---------------------------------------------------------------------------
-- A trusted backend defines schedules for two tenants, with the same code.
-- ---------------------------------------------------------------------------
SAVEPOINT setup;
SET LOCAL ROLE tap_fee_backend;
SELECT fincore.set_tenant('fa000000-0000-4000-8000-00000000000a');
SELECT isa_ok(fincore.define_fee_schedule('card', 'USD',
    '{"components": [{"type": "percentage", "rate": 0.029}, {"type": "flat", "amount": 30},
                     {"type": "percentage", "name": "international", "rate": 0.015, "when": {"card": "international"}}]}',
    '2020-01-01'), 'uuid', 'define_fee_schedule returns the version id');
SELECT fincore.define_fee_schedule('payout', 'USD', '{"components": [{"type": "volume", "tiers": [
    {"up_to": 100000, "rate": 0.01}, {"up_to": 1000000, "rate": 0.0075}, {"rate": 0.005}]}], "maximum": 2500}', '2020-01-01');
SELECT fincore.set_tenant('fb000000-0000-4000-8000-00000000000b');
SELECT fincore.define_fee_schedule('card', 'USD', '{"components": [{"type": "flat", "amount": 99}]}', '2020-01-01');
SELECT fincore.set_tenant(NULL);    -- set_tenant would win over the claims below
RELEASE SAVEPOINT setup;
RESET ROLE;

-- ---------------------------------------------------------------------------
-- As an application user (PostgREST style): own tenant's schedules only.
-- ---------------------------------------------------------------------------
SAVEPOINT a_user;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', pg_temp.claims_of('A'), true);
SELECT is(fincore.calculate_fee('card', 10000), 320::bigint, 'A: 2.9% + 30 of 100.00 is 3.20');
SELECT is(fincore.calculate_fee('card', 10000, '{"card": "international", "country": "FR"}'), 470::bigint,
    'A: +1.5% when the context contains {"card": "international"}');
SELECT results_eq($$SELECT component, amount FROM fincore.fee_breakdown('card', 10000, '{"card": "international"}')$$,
    $$VALUES ('percentage', 290::bigint), ('flat', 30::bigint), ('international', 150::bigint)$$,
    'A: the breakdown lists the components in order');
SELECT is(fincore.gross_up('card', 10000), 10330::bigint, 'A: 100.00 net needs a 103.30 charge');
SELECT is(fincore.calculate_fee('payout', 100000), 1000::bigint, 'volume: exactly at up_to stays in the tier');
SELECT is(fincore.calculate_fee('payout', 100001), 750::bigint, 'volume: one above up_to takes the next tier');
SELECT is(fincore.calculate_fee('payout', 10000000), 2500::bigint, 'the maximum caps the fee');
SELECT results_eq($$SELECT count(*)::int FROM fincore.fee_schedules$$, ARRAY[2], 'A sees only its own schedules');
SELECT throws_ok($$INSERT INTO fincore.fee_schedules (code, currency, rules, rounding, effective_from)
                   VALUES ('x', 'USD', '{"components": [{"type": "flat", "amount": 0}]}', 'half_even', now())$$,
    '42501', NULL, 'an app role cannot write fee_schedules directly');
SELECT throws_ok($$UPDATE fincore.fee_schedules SET rules = '{"components": [{"type": "flat", "amount": 0}]}'$$,
    '42501', NULL, 'an app role cannot change its fees');
SELECT throws_ok($$SELECT fincore.define_fee_schedule('mine', 'USD', '{"components": [{"type": "flat", "amount": 0}]}')$$,
    '42501', NULL, 'an app role cannot define a schedule');
-- The same code in tenant B is B's schedule, in the same backend.
SELECT set_config('request.jwt.claims', pg_temp.claims_of('B'), true);
SELECT is(fincore.calculate_fee('card', 10000), 99::bigint, 'B: its own card schedule, not A''s (the cache is per tenant)');
SELECT throws_ok($$SELECT fincore.calculate_fee('payout', 1)$$, 'ZF401', NULL, 'B cannot use A''s payout schedule');
SELECT results_eq($$SELECT count(*)::int FROM fincore.fee_schedules$$, ARRAY[1], 'B sees only its own schedule');
SELECT set_config('request.jwt.claims', pg_temp.claims_of('A'), true);
SELECT is(fincore.calculate_fee('card', 10000), 320::bigint, 'back to A: A''s schedule again');
SELECT set_config('request.jwt.claims', '', true);
SELECT throws_ok($$SELECT fincore.calculate_fee('card', 1)$$, 'ZF203', NULL, 'no tenant: ZF203');
ROLLBACK TO SAVEPOINT a_user;
RESET ROLE;

-- ---------------------------------------------------------------------------
-- The cache: a new version, an ended version, a rolled-back definition.
-- ---------------------------------------------------------------------------
SELECT fincore.set_tenant('fa000000-0000-4000-8000-00000000000a');
SELECT fincore.define_fee_schedule('plan', 'USD', '{"components": [{"type": "flat", "amount": 100}]}', '2020-01-01');
SELECT is(fincore.calculate_fee('plan', 1), 100::bigint, 'plan v1');
SELECT isnt(fincore.end_fee_schedule('plan', now() + interval '1 day'), NULL, 'end_fee_schedule returns the version ended');
SELECT fincore.define_fee_schedule('plan', 'USD', '{"components": [{"type": "flat", "amount": 200}]}', now() + interval '1 day');
SELECT is(fincore.calculate_fee('plan', 1), 100::bigint, 'plan v1 still in force today');
SELECT is(fincore.calculate_fee('plan', 1, at => now() + interval '1 day'), 200::bigint, 'plan v2 from tomorrow');
SELECT is(fincore.calculate_fee('plan', 1, at => now() + interval '1 day' - interval '1 microsecond'), 100::bigint,
    'v1 until the last microsecond before v2');
SELECT is((SELECT count(*)::int FROM fincore.fee_schedules WHERE code = 'plan'), 2, 'two versions of plan');
SAVEPOINT rolled_back;
SELECT fincore.define_fee_schedule('temp', 'USD', '{"components": [{"type": "flat", "amount": 7}]}', '2020-01-01');
SELECT is(fincore.calculate_fee('temp', 1), 7::bigint, 'a schedule defined in this transaction is used at once');
ROLLBACK TO SAVEPOINT rolled_back;
SELECT throws_ok($$SELECT fincore.calculate_fee('temp', 1)$$, 'ZF401', NULL,
    'a rolled-back definition is gone from the cache too');
SAVEPOINT ended_now;
SELECT fincore.end_fee_schedule('card', now());
SELECT throws_ok($$SELECT fincore.calculate_fee('card', 1)$$, 'ZF401', NULL, 'a version ended now is no longer in force');
SELECT is(fincore.calculate_fee('card', 1, at => now() - interval '1 second'), 30::bigint, 'but was a second ago');
ROLLBACK TO SAVEPOINT ended_now;
SELECT is(fincore.calculate_fee('card', 10000), 320::bigint, 'after the rollback the card schedule is back');

-- In parallel workers too (they load with the transaction's snapshot and cache for it only).
CREATE TEMP TABLE serial_fees AS
    SELECT sum(fincore.calculate_fee('card', g * 37)) AS total, count(*) AS n FROM generate_series(1, 20000) g;
SELECT is((SELECT n FROM serial_fees), 20000::bigint, 'a serial scan of 20000 fees');
SAVEPOINT parallel;
SET LOCAL force_parallel_mode = on;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SELECT is((SELECT sum(fincore.calculate_fee('card', g * 37)) FROM generate_series(1, 20000) g),
          (SELECT total FROM serial_fees), 'the same fees under force_parallel_mode');
ROLLBACK TO SAVEPOINT parallel;

-- ---------------------------------------------------------------------------
-- Errors, by SQLSTATE.
-- ---------------------------------------------------------------------------
CREATE FUNCTION pg_temp.chk(rules text, currency text DEFAULT 'USD') RETURNS void LANGUAGE sql AS $$
    SELECT fincore.check_fee_schedule('x', currency, rules::jsonb) $$;

-- ZF401 fee_schedule_not_found
SELECT throws_ok($$SELECT fincore.calculate_fee('no_such', 1)$$, 'ZF401', 'fee schedule "no_such" does not exist', 'ZF401: unknown code');
SELECT throws_ok($$SELECT fincore.calculate_fee('card', 1, at => '2019-12-31')$$, 'ZF401', NULL, 'ZF401: before the first version');
SELECT throws_ok($$SELECT * FROM fincore.fee_breakdown('no_such', 1)$$, 'ZF401', NULL, 'ZF401: fee_breakdown');
SELECT throws_ok($$SELECT fincore.gross_up('no_such', 1)$$, 'ZF401', NULL, 'ZF401: gross_up');
SELECT throws_ok($$SELECT fincore.quote_fee('no_such', 1)$$, 'ZF401', NULL, 'ZF401: quote_fee');
SELECT throws_ok($$SELECT fincore.end_fee_schedule('no_such', now() + interval '1 hour')$$, 'ZF401', NULL, 'ZF401: end_fee_schedule');
SELECT throws_ok($$SELECT fincore.calculate_fee(repeat('x', 65), 1)$$, 'ZF402', NULL, 'ZF402: a code too long to exist');

-- ZF402 invalid_fee_schedule
SELECT throws_ok($$SELECT fincore.check_fee_schedule('bad code', 'USD', '{"components": [{"type": "flat", "amount": 1}]}')$$,
    'ZF402', NULL, 'ZF402: a code with a space');
SELECT throws_ok($$SELECT fincore.check_fee_schedule('', 'USD', '{"components": [{"type": "flat", "amount": 1}]}')$$,
    'ZF402', NULL, 'ZF402: an empty code');
SELECT throws_ok($$SELECT fincore.define_fee_schedule(NULL, 'USD', '{"components": [{"type": "flat", "amount": 1}]}')$$,
    'ZF402', NULL, 'ZF402: a NULL code');
SELECT throws_ok($$SELECT fincore.define_fee_schedule('x', 'USD', NULL)$$, 'ZF402', NULL, 'ZF402: NULL rules');
SELECT throws_ok($$SELECT fincore.define_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": 1}]}', NULL)$$,
    'ZF402', NULL, 'ZF402: a NULL effective_from');
SELECT throws_ok($$SELECT pg_temp.chk('[]')$$, 'ZF402', 'fee rules must be a JSON object', 'ZF402: rules not an object');
SELECT throws_ok($$SELECT pg_temp.chk('{}')$$, 'ZF402', NULL, 'ZF402: no components');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": {}}')$$, 'ZF402', NULL, 'ZF402: components not an array');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": []}')$$, 'ZF402', NULL, 'ZF402: no component');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [' || repeat('{"type": "flat", "amount": 1},', 32) || '{"type": "flat", "amount": 1}]}')$$,
    'ZF402', NULL, 'ZF402: more than 32 components');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}], "cap": 5}')$$,
    'ZF402', 'unknown key "cap" in the fee rules', 'ZF402: an unknown key in the rules');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1, "currency": "USD"}]}')$$,
    'ZF402', NULL, 'ZF402: an unknown key in a component');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1, "rate": 0.1}]}')$$,
    'ZF402', NULL, 'ZF402: a key of another component type');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage"}]}')$$,
    'ZF402', 'component "percentage", a percentage component, needs "rate"', 'ZF402: a required field missing');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"amount": 1}]}')$$, 'ZF402', NULL, 'ZF402: no type');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": 1, "amount": 1}]}')$$, 'ZF402', NULL, 'ZF402: type not a string');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [1]}')$$, 'ZF402', NULL, 'ZF402: a component not an object');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1, "when": "international"}]}')$$,
    'ZF402', NULL, 'ZF402: when not an object');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}, {"type": "flat", "amount": 2}]}')$$,
    'ZF402', 'two components are named "flat"', 'ZF402: duplicate component names');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "name": "maximum", "amount": 1}]}')$$,
    'ZF402', NULL, 'ZF402: a reserved component name');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "name": "", "amount": 1}]}')$$,
    'ZF402', NULL, 'ZF402: an empty component name');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": true}]}')$$,
    'ZF402', NULL, 'ZF402: an amount that is neither a number nor text');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}], "description": 5}')$$,
    'ZF402', NULL, 'ZF402: a description that is not a string');
SELECT throws_ok($$SELECT fincore.check_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": 1}]}', '2024-01-01', '2024-01-01')$$,
    'ZF402', NULL, 'ZF402: an empty effective period');
SELECT throws_ok($$SELECT fincore.end_fee_schedule('card', now() - interval '1 day')$$, 'ZF402', NULL,
    'ZF402: ending a version in the past');

-- ZF403 unknown_fee_component
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "tiered", "tiers": []}]}')$$,
    'ZF403', 'unknown fee component type "tiered" in component 1', 'ZF403: an unknown component type');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}, {"type": "Percentage", "rate": 0.1}]}')$$,
    'ZF403', NULL, 'ZF403: types are case-sensitive');

-- ZF404 invalid_fee_rate
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage", "rate": -0.029}]}')$$,
    'ZF404', 'rate of component "percentage" must not be negative: -0.029', 'ZF404: a negative rate');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "graduated", "tiers": [{"rate": "-0.01"}]}]}')$$,
    'ZF404', NULL, 'ZF404: a negative tier rate');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage", "rate": 0.0000000000000000001}]}')$$,
    'ZF404', NULL, 'ZF404: more than 18 decimal places');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage", "rate": 10.000000000000000001}]}')$$,
    'ZF404', NULL, 'ZF404: above 10 (1000%)');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage", "rate": "2.9%"}]}')$$,
    'ZF404', NULL, 'ZF404: a rate text that is not a decimal');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage", "rate": "1e-3"}]}')$$,
    'ZF404', NULL, 'ZF404: exponent notation in a rate text');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage", "rate": null}]}')$$,
    'ZF404', NULL, 'ZF404: a null rate');
SELECT lives_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage", "rate": "10.000000000000000000"}]}')$$,
    'a rate of exactly 10 with 18 zeros is accepted');
SELECT lives_ok($$SELECT pg_temp.chk('{"components": [{"type": "percentage", "rate": 0.123456789012345678}]}')$$,
    'a rate with 18 decimal places is accepted');

-- ZF405 invalid_fee_limits
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}], "minimum": 100, "maximum": 99}')$$,
    'ZF405', 'minimum fee 1.00 USD is above the maximum fee 0.99 USD', 'ZF405: minimum above maximum');
SELECT lives_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}], "minimum": 100, "maximum": 100}')$$,
    'minimum = maximum is accepted');

-- ZF406 invalid_fee_tiers
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "volume", "tiers": {}}]}')$$, 'ZF406', NULL, 'ZF406: tiers not an array');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "volume", "tiers": []}]}')$$, 'ZF406', NULL, 'ZF406: no tiers');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "graduated", "tiers": [' ||
                   (SELECT string_agg(format('{"up_to": %s}', i), ',') FROM generate_series(1, 100) i) || ', {}]}]}')$$,
    'ZF406', NULL, 'ZF406: more than 100 tiers');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "graduated", "tiers": [{"up_to": 100}, {"up_to": 50}, {}]}]}')$$,
    'ZF406', 'tiers of component "graduated" are out of order: up_to 50 follows 100', 'ZF406: decreasing up_to');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "volume", "tiers": [{"up_to": 100}, {"up_to": 100}, {}]}]}')$$,
    'ZF406', NULL, 'ZF406: equal up_to');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "volume", "tiers": [{"rate": 0.1}, {"up_to": 100}]}]}')$$,
    'ZF406', NULL, 'ZF406: an unbounded tier before the last');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "volume", "tiers": [{"up_to": 100, "rate": 0.1}]}]}')$$,
    'ZF406', NULL, 'ZF406: a bounded last tier');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "volume", "tiers": [1]}]}')$$, 'ZF406', NULL, 'ZF406: a tier not an object');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "volume", "tiers": [{"upto": 5}, {}]}]}')$$,
    'ZF402', NULL, 'an unknown key in a tier is ZF402');

-- ZF407 fee_currency_mismatch
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": "0.30 EUR"}]}')$$,
    'ZF407', NULL, 'ZF407: a flat amount in another currency');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "volume", "tiers": [{"up_to": "1000 JPY"}, {}]}]}')$$,
    'ZF407', NULL, 'ZF407: a tier bound in another currency');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}], "maximum": "5.00 GBP"}')$$,
    'ZF407', NULL, 'ZF407: a limit in another currency');
SELECT throws_ok($$SELECT fincore.quote_fee('card', 100, currency => 'EUR')$$, 'ZF407',
    'fee schedule "card" charges in USD, not EUR', 'ZF407: the transfer''s currency is not the schedule''s');
SELECT is((SELECT fee FROM fincore.quote_fee('card', 100, currency => 'USD')), 33::bigint, 'the schedule''s own currency passes');

-- ZF408 fee_schedule_overlap
SELECT throws_ok($$SELECT fincore.define_fee_schedule('card', 'USD', '{"components": [{"type": "flat", "amount": 1}]}', '2030-01-01')$$,
    'ZF408', NULL, 'ZF408: a later version while the current one is open-ended');
SELECT throws_ok($$SELECT fincore.define_fee_schedule('plan', 'USD', '{"components": [{"type": "flat", "amount": 1}]}', '2019-01-01', '2020-01-02')$$,
    'ZF408', NULL, 'ZF408: an earlier version overlapping by a day');
SELECT lives_ok($$SELECT fincore.define_fee_schedule('plan', 'USD', '{"components": [{"type": "flat", "amount": 1}]}', '2019-01-01', '2020-01-01')$$,
    'a version ending exactly where the next begins does not overlap');

-- ZF409 invalid_fee_amount
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": -1}]}')$$, 'ZF409', NULL, 'ZF409: a negative flat');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 2.5}]}')$$, 'ZF409', NULL, 'ZF409: a fraction of a minor unit');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 9223372036854775808}]}')$$, 'ZF409', NULL, 'ZF409: beyond int64');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": "-0.30 USD"}]}')$$, 'ZF409', NULL, 'ZF409: negative amount text');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}], "minimum": -5}')$$, 'ZF409', NULL, 'ZF409: a negative minimum');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "graduated", "tiers": [{"up_to": -1}, {}]}]}')$$, 'ZF409', NULL, 'ZF409: a negative up_to');
SELECT throws_ok($$SELECT fincore.calculate_fee('card', -1)$$, 'ZF409', NULL, 'ZF409: a negative amount');
SELECT throws_ok($$SELECT * FROM fincore.fee_breakdown('card', -1)$$, 'ZF409', NULL, 'ZF409: fee_breakdown of a negative amount');
SELECT throws_ok($$SELECT fincore.gross_up('card', -1)$$, 'ZF409', NULL, 'ZF409: a negative net');
SELECT throws_ok($$SELECT fincore.quote_fee('card', -1)$$, 'ZF409', NULL, 'ZF409: quote_fee of a negative amount');

-- ZF410 fee_exceeds_amount
SELECT throws_ok($$SELECT fincore.quote_fee('card', 30, 'deducted')$$, 'ZF410',
    'fee 31 exceeds the amount 30 it is deducted from', 'ZF410: a deducted fee larger than the amount');
SELECT results_eq($$SELECT fee, charge, delivered FROM fincore.quote_fee('card', 31, 'deducted')$$,
    $$VALUES (31::bigint, 31::bigint, 0::bigint)$$, 'a deducted fee equal to the amount delivers nothing');
SELECT results_eq($$SELECT fee, charge, delivered FROM fincore.quote_fee('card', 30, 'on_top')$$,
    $$VALUES (31::bigint, 61::bigint, 30::bigint)$$, 'on top, the payer pays amount + fee');

-- ZF411 invalid_fee_mode
SELECT throws_ok($$SELECT fincore.quote_fee('card', 100, 'on-top')$$, 'ZF411', 'invalid fee mode: "on-top"', 'ZF411: an unknown fee mode');
SELECT throws_ok($$SELECT fincore.quote_fee('card', 100, '')$$, 'ZF411', NULL, 'ZF411: an empty fee mode');

-- ZF412 gross_up_impossible
SELECT fincore.define_fee_schedule('steep', 'USD', '{"components": [{"type": "percentage", "rate": 1.5}]}', '2020-01-01');
SELECT fincore.define_fee_schedule('whole', 'USD', '{"components": [{"type": "percentage", "rate": 1}, {"type": "flat", "amount": 1}]}', '2020-01-01');
SELECT throws_ok($$SELECT fincore.gross_up('steep', 100)$$, 'ZF412', NULL, 'ZF412: a 150% rate leaves nothing');
SELECT throws_ok($$SELECT fincore.gross_up('whole', 100)$$, 'ZF412', NULL, 'ZF412: 100% + 1 never converges');
SELECT throws_ok($$SELECT fincore.gross_up('card', 9223372036854775000)$$, 'ZF412', NULL, 'ZF412: no charge within int64');
SELECT is(fincore.gross_up('steep', 0), 0::bigint, 'a zero net needs no charge, even at 150%');

-- ZF413 invalid_fee_context
SELECT throws_ok($$SELECT fincore.calculate_fee('card', 1, '["international"]')$$, 'ZF413', NULL, 'ZF413: an array context');
SELECT throws_ok($$SELECT fincore.calculate_fee('card', 1, '"international"')$$, 'ZF413', NULL, 'ZF413: a string context');
SELECT throws_ok($$SELECT fincore.gross_up('card', 1, 'null')$$, 'ZF413', NULL, 'ZF413: gross_up with a null JSON context');
SELECT throws_ok($$SELECT fincore.quote_fee('card', 1, 'on_top', '5')$$, 'ZF413', NULL, 'ZF413: quote_fee with a number context');

-- Money and tenancy codes a fee call raises.
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}]}', 'XAU')$$, 'ZF102', NULL, 'ZF102: an unknown currency');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": 1}]}', 'usd')$$, 'ZF109', NULL, 'ZF109: a malformed currency code');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": "30USD"}]}')$$, 'ZF101', NULL, 'ZF101: malformed amount text');
SELECT throws_ok($$SELECT pg_temp.chk('{"components": [{"type": "flat", "amount": "0.305 USD"}]}')$$, 'ZF105', NULL, 'ZF105: amount text finer than the currency');
SELECT throws_ok($$SELECT fincore.check_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": 1}]}', now(), NULL, 'bankers')$$,
    'ZF107', NULL, 'ZF107: an unknown rounding mode');
SELECT throws_ok($$SELECT fincore.define_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": 1}]}', now(), NULL, NULL)$$,
    'ZF402', NULL, 'ZF402: a NULL rounding mode');
SELECT fincore.define_fee_schedule('huge', 'USD', '{"components": [{"type": "percentage", "rate": 10}]}', '2020-01-01');
SELECT throws_ok($$SELECT fincore.calculate_fee('huge', 9223372036854775807)$$, 'ZF104', NULL, 'ZF104: a fee beyond int64');
SELECT is(fincore.calculate_fee('huge', 922337203685477580), 9223372036854775800::bigint, 'a fee just within int64');
SELECT fincore.set_tenant(NULL);
SELECT throws_ok($$SELECT fincore.define_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": 1}]}')$$,
    'ZF203', NULL, 'ZF203: defining without a tenant');

-- gross_up is bounded in time on any valid schedule.  On the largest schedules (32 graduated
-- components of 100 tiers) with rates that take 99.99% of the charge, the search skips ahead on the
-- fee's least growth and finds the exact answer in a fraction of a second (0.1.0: 2.4 s); at
-- 99.9999% it stops at its work limit with ZF412 after about half a second (0.1.0 searched for
-- minutes).  The statement timeout, far above both, catches a search that runs on.
SELECT fincore.set_tenant('fa000000-0000-4000-8000-00000000000a');
CREATE FUNCTION pg_temp.extreme_rules(rate text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('components',
        (SELECT jsonb_agg(jsonb_build_object('type', 'graduated', 'name', 'g' || c, 'tiers',
            (SELECT jsonb_agg(CASE WHEN t < 100 THEN jsonb_build_object('up_to', t * 1000000000000, 'rate', rate)
                                   ELSE jsonb_build_object('rate', rate) END ORDER BY t)
               FROM generate_series(1, 100) t)))
           FROM generate_series(1, 32) c)) $$;
SELECT fincore.define_fee_schedule('extreme', 'USD', pg_temp.extreme_rules('0.0312468750'), '2020-01-01');
SELECT fincore.define_fee_schedule('extreme_slow', 'USD', pg_temp.extreme_rules('0.0312499687'), '2020-01-01');
SET LOCAL statement_timeout = '5s';
SELECT is(fincore.gross_up('extreme', 100), 840004::bigint, 'the largest schedule at 99.99% grosses up a small amount exactly');
SELECT is(fincore.gross_up('extreme', 1000000000), 9999999840000::bigint, 'and 10^9');
SELECT is(fincore.gross_up('extreme', 500000000000), 4999999999840000::bigint, 'and 5 x 10^11, beyond every tier');
SELECT is(fincore.gross_up('extreme', 900000000000000), 8999999999999840000::bigint, 'and 9 x 10^14, near the end of int64');
SELECT throws_ok($$SELECT fincore.gross_up('extreme', 1000000000000000)$$, 'ZF412',
    'no charge up to 9223372036854775807 leaves 1000000000000000 after the fee', 'ZF412: a net no charge in int64 leaves');
SELECT throws_ok($$SELECT fincore.gross_up('extreme_slow', 1000000000)$$, 'ZF412', 'gross-up of 1000000000 did not converge',
    'ZF412: at 99.9999% the search stops at its work limit');
RESET statement_timeout;

-- A rejected definition writes nothing.
SELECT is((SELECT count(*)::int FROM fincore.fee_schedules WHERE code = 'x'), 0, 'no rejected definition left a row');

SELECT * FROM finish();
ROLLBACK;
