--
-- fees: schedules, every component type, tier modes and their boundaries,
-- limits, conditions, effective dates, rounding modes, gross-up.
--
SET search_path = fincore, public;
-- Errors show their message; test/pgtap/fees.sql checks every SQLSTATE.
\set VERBOSITY terse

SELECT create_tenant('Fees regress', 'fee00000-0000-4000-8000-000000000001') IS NOT NULL AS tenant;
SELECT set_config('request.jwt.claims', '{"tenant_id":"fee00000-0000-4000-8000-000000000001"}', false) IS NOT NULL AS claims;

-- Cards: 2.9% + 30 cents, plus 1.5% for international cards (a conditional component).
SELECT define_fee_schedule('card', 'USD', '{
    "description": "card payments",
    "components": [
        {"type": "percentage", "rate": 0.029},
        {"type": "flat", "amount": "0.30 USD"},
        {"type": "percentage", "name": "international", "rate": "0.015", "when": {"card": "international"}}
    ]}', '2020-01-01') IS NOT NULL AS defined;
SELECT a, calculate_fee('card', a, at => '2024-06-01') AS domestic,
       calculate_fee('card', a, '{"card":"international"}', '2024-06-01') AS international
  FROM unnest(ARRAY[0, 1, 100, 1000, 10000, 123456]) AS a;
-- The breakdown lists each applying component; it sums to the fee.
SELECT * FROM fee_breakdown('card', 10000, '{"card":"international","region":"eu"}', '2024-06-01');
SELECT * FROM fee_breakdown('card', 10000, '{"card":"domestic"}', '2024-06-01');
-- A condition is jsonb containment: other keys do not matter, nested objects and arrays work.
SELECT define_fee_schedule('cond', 'USD', '{"components": [
    {"type": "flat", "name": "base", "amount": 100},
    {"type": "flat", "name": "vip_discount_free", "amount": 0, "when": {"tags": ["vip"]}},
    {"type": "flat", "name": "risky", "amount": 50, "when": {"risk": {"level": "high"}}},
    {"type": "flat", "name": "instant", "amount": 25, "when": {"instant": true}}]}', '2020-01-01') IS NOT NULL AS defined;
SELECT c AS context, calculate_fee('cond', 1, c::jsonb, '2024-06-01') AS fee
  FROM unnest(ARRAY['{}', '{"tags":["new","vip"]}', '{"risk":{"level":"high","score":9}}',
                    '{"risk":"high"}', '{"instant":true}', '{"instant":"true"}', '{"instant":1}']) AS c;

-- Rates are exact decimals: 18 decimal places, no floating point anywhere.
SELECT define_fee_schedule('tiny', 'USD', '{"components": [{"type": "percentage", "rate": "0.000000000000000001"}]}',
                           '2020-01-01', rounding => 'up') IS NOT NULL AS defined;
SELECT calculate_fee('tiny', 1, at => '2024-06-01') AS up_from_1e_18, calculate_fee('tiny', 0, at => '2024-06-01') AS zero;
SELECT define_fee_schedule('precise', 'USD', '{"components": [{"type": "percentage", "rate": 0.0123456789}]}',
                           '2020-01-01') IS NOT NULL AS defined;
SELECT calculate_fee('precise', 9223372036854775807, at => '2024-06-01') AS on_int64_max;

-- Graduated tiers (Stripe semantics): each tier charges the part of the amount inside it,
-- up_to is inclusive, a tier's flat amount is charged once the amount reaches the tier.
SELECT define_fee_schedule('grad', 'USD', '{"components": [{"type": "graduated", "tiers": [
    {"up_to": 10000, "rate": 0.03},
    {"up_to": 50000, "rate": 0.02, "flat": 100},
    {"up_to": null,  "rate": 0.01, "flat": 500}]}]}', '2020-01-01') IS NOT NULL AS defined;
SELECT a, calculate_fee('grad', a, at => '2024-06-01') AS fee
  FROM unnest(ARRAY[0, 1, 9999, 10000, 10001, 50000, 50001, 1000000]) AS a;
-- Volume tiers: the whole amount at the rate of the tier it falls in.
SELECT define_fee_schedule('vol', 'USD', '{"components": [{"type": "volume", "tiers": [
    {"up_to": 10000, "rate": 0.03},
    {"up_to": 50000, "rate": 0.02, "flat": 100},
    {"up_to": "inf", "rate": 0.01, "flat": 500}]}]}', '2020-01-01') IS NOT NULL AS defined;
SELECT a, calculate_fee('vol', a, at => '2024-06-01') AS fee
  FROM unnest(ARRAY[0, 1, 9999, 10000, 10001, 50000, 50001, 1000000]) AS a;

-- Minimum and maximum: the breakdown shows the adjustment.
SELECT define_fee_schedule('capped', 'EUR', '{"components": [{"type": "percentage", "rate": 0.01}],
    "minimum": "0.50 EUR", "maximum": 2500}', '2020-01-01') IS NOT NULL AS defined;
SELECT a, calculate_fee('capped', a, at => '2024-06-01') AS fee
  FROM unnest(ARRAY[0, 4999, 5000, 5050, 250000, 250001, 10000000]) AS a;
SELECT * FROM fee_breakdown('capped', 1000, at => '2024-06-01');
SELECT * FROM fee_breakdown('capped', 10000000, at => '2024-06-01');
SELECT * FROM fee_breakdown('capped', 100000, at => '2024-06-01');

-- Currencies with 0, 3 and 4 decimals; amounts in the rules may be written as text.
SELECT define_fee_schedule('jpy', 'JPY', '{"components": [{"type": "percentage", "rate": 0.035}, {"type": "flat", "amount": "40 JPY"}]}',
                           '2020-01-01') IS NOT NULL AS defined;
SELECT define_fee_schedule('bhd', 'BHD', '{"components": [{"type": "percentage", "rate": 0.0125}, {"type": "flat", "amount": "0.125 BHD"}]}',
                           '2020-01-01') IS NOT NULL AS defined;
SELECT define_fee_schedule('clf', 'CLF', '{"components": [{"type": "percentage", "rate": 0.00375}], "minimum": "0.0001 CLF"}',
                           '2020-01-01') IS NOT NULL AS defined;
SELECT calculate_fee('jpy', 10000, at => '2024-06-01') AS jpy, calculate_fee('bhd', 10000, at => '2024-06-01') AS bhd,
       calculate_fee('clf', 10000, at => '2024-06-01') AS clf, calculate_fee('clf', 1, at => '2024-06-01') AS clf_minimum;

-- Rounding: once per component, with the schedule's mode.  1.5% of 50 = 0.75 and
-- 1.5% of 150 = 2.25, 0.5% of 100 = 0.5 (a tie), 0.5% of 300 = 1.5 (a tie).
SELECT count(define_fee_schedule('r_' || m, 'USD', '{"components": [{"type": "percentage", "rate": 0.015}]}', '2020-01-01', NULL, m))
     + count(define_fee_schedule('h_' || m, 'USD', '{"components": [{"type": "percentage", "rate": 0.005}]}', '2020-01-01', NULL, m)) AS defined
  FROM unnest(ARRAY['half_even', 'half_up', 'half_down', 'up', 'down', 'ceiling', 'floor']) AS m;
SELECT m AS mode, calculate_fee('r_' || m, 50, at => '2024-06-01') AS "0.75",
       calculate_fee('r_' || m, 150, at => '2024-06-01') AS "2.25",
       calculate_fee('h_' || m, 100, at => '2024-06-01') AS "0.5",
       calculate_fee('h_' || m, 300, at => '2024-06-01') AS "1.5"
  FROM unnest(ARRAY['half_even', 'half_up', 'half_down', 'up', 'down', 'ceiling', 'floor']) AS m;
-- Two components are rounded separately: 0.4 + 0.4 rounds to 0 + 0, not to 1.
SELECT define_fee_schedule('twice', 'USD', '{"components": [{"type": "percentage", "name": "a", "rate": 0.004},
                                                             {"type": "percentage", "name": "b", "rate": 0.004}]}',
                           '2020-01-01') IS NOT NULL AS defined;
SELECT * FROM fee_breakdown('twice', 100, at => '2024-06-01');
-- A graduated component is rounded once, not per tier: 0.5 + 0.5 = 1.
SELECT define_fee_schedule('grad_once', 'USD', '{"components": [{"type": "graduated", "tiers": [
    {"up_to": 100, "rate": 0.005}, {"rate": 0.005}]}]}', '2020-01-01', rounding => 'down') IS NOT NULL AS defined;
SELECT calculate_fee('grad_once', 200, at => '2024-06-01') AS "0.5 + 0.5, down";

-- Effective dates: a new version takes over where the old one ends; [from, until).
SELECT define_fee_schedule('plan', 'USD', '{"components": [{"type": "flat", "amount": 100}]}',
                           '2024-01-01', '2024-07-01') IS NOT NULL AS v1,
       define_fee_schedule('plan', 'USD', '{"components": [{"type": "flat", "amount": 200}]}',
                           '2024-07-01') IS NOT NULL AS v2;
SELECT t, calculate_fee('plan', 1, at => t::timestamptz) AS fee
  FROM unnest(ARRAY['2024-01-01 00:00:00', '2024-06-30 23:59:59.999999', '2024-07-01 00:00:00', '2099-01-01']) AS t;
SELECT calculate_fee('plan', 1, at => '2023-12-31 23:59:59');               -- before v1: ZF401
SELECT define_fee_schedule('plan', 'USD', '{"components": [{"type": "flat", "amount": 300}]}',
                           '2024-06-01', '2024-08-01');                     -- overlaps: ZF408
-- The version used is recorded: quote_fee gives its id and the breakdown for a transfer's metadata.
SELECT q.schedule_id = s.id AS version_recorded, q.fee, q.charge, q.delivered,
       q.breakdown - 'schedule_id' AS breakdown
  FROM quote_fee('plan', 1000, 'on_top', '{}', '2024-08-01') AS q
  JOIN fee_schedules s ON s.code = 'plan' AND s.effective_from = '2024-07-01';
SELECT fee, charge, delivered FROM quote_fee('card', 10000, 'deducted', at => '2024-06-01');
SELECT fee, charge, delivered FROM quote_fee('plan', 150, 'deducted', '{}', '2024-08-01');
SELECT fee, charge, delivered FROM quote_fee('plan', 200, 'deducted', '{}', '2024-08-01');  -- fee = amount
SELECT fee, charge, delivered FROM quote_fee('plan', 199, 'deducted', '{}', '2024-08-01');  -- ZF410

-- Gross-up: the smallest charge that leaves net after its fee.  $100.00 at 2.9% + 30c
-- is $103.30: 103.30 - 3.30 = 100.00, while 103.29 - 3.30 (2.9% of 103.29 = 2.99541) = 99.99.
SELECT gross_up('card', 10000, at => '2024-06-01') AS charge,
       calculate_fee('card', 10330, at => '2024-06-01') AS fee_at_charge,
       10329 - calculate_fee('card', 10329, at => '2024-06-01') AS net_one_cent_less;
SELECT gross_up('card', 10000, '{"card":"international"}', '2024-06-01') AS international,
       gross_up('card', 0, at => '2024-06-01') AS for_nothing;
-- Volume fees are not monotone (50000 costs 1100, 50001 only 1000): still the smallest charge.
SELECT n, gross_up('vol', n, at => '2024-06-01') AS charge FROM unnest(ARRAY[0, 9600, 9700, 9701, 9800, 48900, 49000]) AS n;
-- With a cap, a 150% rate can still be grossed up.
SELECT define_fee_schedule('steep', 'USD', '{"components": [{"type": "percentage", "rate": 1.5}], "maximum": 1000}',
                           '2020-01-01') IS NOT NULL AS defined;
SELECT gross_up('steep', 5000, at => '2024-06-01') AS charge;

-- Ending a version: the schedule stops at the given time.
SELECT end_fee_schedule('card', '2099-01-01') IS NOT NULL AS ended;
SELECT effective_until FROM fee_schedules WHERE code = 'card';
SELECT calculate_fee('card', 100, at => '2099-01-01');                      -- ZF401

-- Schedules belong to a tenant: another tenant does not see them.
SELECT create_tenant('Other', 'fee00000-0000-4000-8000-000000000002') IS NOT NULL AS tenant;
SELECT set_config('request.jwt.claims', '{"tenant_id":"fee00000-0000-4000-8000-000000000002"}', false) IS NOT NULL AS claims;
SELECT calculate_fee('card', 100, at => '2024-06-01');                      -- ZF401
SELECT count(*) AS of_this_tenant FROM fee_schedules WHERE tenant_id = tenant_id();   -- (a superuser sees past RLS)
SELECT set_config('request.jwt.claims', '', false) IS NOT NULL AS claims;
SELECT calculate_fee('card', 100, at => '2024-06-01');                      -- ZF203

-- Errors (each SQLSTATE in test/pgtap/fees.sql).
SELECT set_config('request.jwt.claims', '{"tenant_id":"fee00000-0000-4000-8000-000000000001"}', false) IS NOT NULL AS claims;
SELECT check_fee_schedule('x', 'USD', '{"components": [{"type": "tiered"}]}');
SELECT check_fee_schedule('x', 'USD', '{"components": [{"type": "percentage", "rate": -0.01}]}');
SELECT check_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": 1}], "minimum": 100, "maximum": 99}');
SELECT check_fee_schedule('x', 'USD', '{"components": [{"type": "volume", "tiers": [{"up_to": 100}, {"up_to": 100}, {}]}]}');
SELECT check_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": "0.30 EUR"}]}');
SELECT check_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": 1.5}]}');
SELECT check_fee_schedule('x', 'USD', '{"components": [{"type": "flat", "amount": 1, "when": "international"}]}');
SELECT calculate_fee('card', 100, '"international"', '2024-06-01');
SELECT calculate_fee('card', -1, at => '2024-06-01');
SELECT define_fee_schedule('nope', 'USD', '{"components": [{"type": "percentage", "rate": 1}]}', '2020-01-01') IS NOT NULL AS defined;
SELECT gross_up('nope', 100, at => '2024-06-01');
SELECT quote_fee('card', 100, 'on-top', at => '2024-06-01');
