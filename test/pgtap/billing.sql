-- pgTAP: billing's arithmetic (docs/billing.md): periods stepped from an anchor with month-end
-- clamping and leap years, proration to the second from what was billed, and their errors
-- (ZFA01, ZFA02).  UTC instants throughout.
BEGIN;
SET search_path = fincore, public;
SET LOCAL timezone = 'UTC';
SELECT plan(68);

CREATE FUNCTION pg_temp.bal(n int) RETURNS text LANGUAGE sql AS $$
    SELECT format('dp=%s dpo=%s cp=%s cpo=%s', debits_pending, debits_posted, credits_pending, credits_posted)
      FROM fincore.accounts WHERE id = ('ac000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
CREATE FUNCTION pg_temp.rows_before() RETURNS text LANGUAGE sql AS $$
    SELECT format('subscriptions=%s lines=%s events=%s', (SELECT count(*) FROM fincore.subscriptions),
                  (SELECT count(*) FROM fincore.subscription_lines), (SELECT count(*) FROM fincore.outbox_events)) $$;
CREATE FUNCTION pg_temp.bounds(anchor timestamptz, unit text, count int, at timestamptz) RETURNS text
    LANGUAGE sql AS $$
    SELECT format('%s [%s, %s)', p.period_index, to_char(p.period_start, 'YYYY-MM-DD HH24:MI'),
                  to_char(p.period_end, 'YYYY-MM-DD HH24:MI'))
      FROM fincore.billing_period(anchor, unit, count, at) p $$;

-- Stripe's billing_cycle_anchor example: an anchor on Jan 31 bills Feb 28/29, Mar 31, Apr 30.
SELECT is(pg_temp.bounds('2024-01-31 10:00', 'month', 1, '2024-02-15'), '0 [2024-01-31 10:00, 2024-02-29 10:00)',
    'Jan 31 + 1 month is Feb 29 in a leap year');
SELECT is(pg_temp.bounds('2024-01-31 10:00', 'month', 1, '2024-03-01'), '1 [2024-02-29 10:00, 2024-03-31 10:00)',
    '... and + 2 months is Mar 31 again: the clamp does not stick');
SELECT is(pg_temp.bounds('2024-01-31 10:00', 'month', 1, '2024-04-30 09:59'), '2 [2024-03-31 10:00, 2024-04-30 10:00)',
    '... Apr 30');
SELECT is(pg_temp.bounds('2023-01-31 00:00', 'month', 1, '2023-02-28 00:00'), '1 [2023-02-28 00:00, 2023-03-31 00:00)',
    'Feb 28 in a common year; a boundary belongs to the period it starts');
SELECT is(pg_temp.bounds('2024-02-29 12:00', 'year', 1, '2025-06-01'), '1 [2025-02-28 12:00, 2026-02-28 12:00)',
    'a yearly anchor on Feb 29 bills Feb 28 in common years');
SELECT is(pg_temp.bounds('2024-02-29 12:00', 'year', 1, '2028-03-01'), '4 [2028-02-29 12:00, 2029-02-28 12:00)',
    '... and Feb 29 again in leap years');
SELECT is(pg_temp.bounds('2024-08-31 00:00', 'month', 3, '2024-12-01'), '1 [2024-11-30 00:00, 2025-02-28 00:00)',
    'quarterly from Aug 31: Nov 30, Feb 28');
SELECT is(pg_temp.bounds('2026-01-05 08:00', 'week', 2, '2026-01-20'), '1 [2026-01-19 08:00, 2026-02-02 08:00)',
    'every two weeks');
SELECT is(pg_temp.bounds('2026-01-05 08:00', 'day', 1, '2026-01-05 07:59'), '-1 [2026-01-04 08:00, 2026-01-05 08:00)',
    'before the anchor: a negative index');
SELECT is(pg_temp.bounds('2024-01-31 10:00', 'month', 1, '2023-12-31 10:00'), '-1 [2023-12-31 10:00, 2024-01-31 10:00)',
    'stepping back from Jan 31: Dec 31');

SELECT throws_ok($$SELECT fincore.billing_period(now(), 'fortnight', 1, now())$$, 'ZFA01', NULL, 'an unknown unit');
SELECT throws_ok($$SELECT fincore.billing_period(now(), 'month', 0, now())$$, 'ZFA01', NULL, 'a count below 1');
SELECT throws_ok($$SELECT fincore.billing_period('infinity', 'month', 1, now())$$, 'ZFA01', NULL, 'an infinite anchor');

-- Stripe's proration example: $10 a month, upgraded to $20 at the middle of the month: a credit
-- of $5 for the unused half, a debit of $10 for the rest at the new price.
SELECT is((SELECT format('%s %s', credit, debit) FROM fincore.proration(1000, '2026-04-01', '2026-04-01', '2026-05-01',
                                                                       2000, '2026-04-16')),
    '500 1000', '$10 -> $20 at mid-month: credit $5, debit $10');
-- To the second: one second of a 30-day month.
SELECT is((SELECT format('%s %s', credit, debit) FROM fincore.proration(2592000, '2026-04-01', '2026-04-01', '2026-05-01',
                                                                       2592000, '2026-04-30 23:59:59')),
    '1 1', 'one second of a 30-day month is 1/2,592,000 of it');
SELECT is((SELECT credit FROM fincore.proration(1000, '2026-04-01', '2026-04-01', '2026-05-01', 0, '2026-04-01 00:00:00.999')),
    1000::bigint, 'instants count in whole seconds: a change within the first second credits it all');
SELECT is((SELECT format('%s %s', credit, debit) FROM fincore.proration(1, '2026-04-01', '2026-04-01', '2026-05-01', 1,
                                                                       '2026-04-16', 'half_even')),
    '0 0', 'half of a cent rounds to even (0) by default');
SELECT is((SELECT format('%s %s', credit, debit) FROM fincore.proration(1, '2026-04-01', '2026-04-01', '2026-05-01', 1,
                                                                       '2026-04-16', 'half_up')),
    '1 1', '... and to 1 half_up');

-- Three changes in one period: each credits what the last one billed, never today's price.
CREATE TEMP TABLE changes AS
WITH c1 AS (SELECT * FROM fincore.proration(3000, '2026-04-01', '2026-04-01', '2026-05-01', 6000, '2026-04-11')),
     c2 AS (SELECT * FROM fincore.proration((SELECT debit FROM c1), '2026-04-11', '2026-04-01', '2026-05-01', 1500, '2026-04-21')),
     c3 AS (SELECT * FROM fincore.proration((SELECT debit FROM c2), '2026-04-21', '2026-04-01', '2026-05-01', 9000, '2026-04-26'))
SELECT 1 AS n, * FROM c1 UNION ALL SELECT 2, * FROM c2 UNION ALL SELECT 3, * FROM c3;
SELECT is((SELECT string_agg(format('%s/%s', credit, debit), ' ' ORDER BY n) FROM changes),
    '2000/4000 2000/500 250/1500', 'each credit is a share of what the previous change billed');
SELECT ok((SELECT sum(credit) FROM changes) <= 3000 + (SELECT sum(debit) FROM changes WHERE n < 3),
    'the credits never exceed what was billed');

SELECT throws_ok($$SELECT fincore.proration(100, '2026-04-11', '2026-04-01', '2026-05-01', 100, '2026-04-05')$$,
    'ZFA02', NULL, 'a change before what it credits is refused');
SELECT throws_ok($$SELECT fincore.proration(100, '2026-05-02', '2026-04-01', '2026-05-01', 100, '2026-05-02')$$,
    'ZFA02', NULL, 'billed_from outside the period is refused');
SELECT throws_ok($$SELECT fincore.proration(-1, '2026-04-01', '2026-04-01', '2026-05-01', 100, '2026-04-05')$$,
    'ZFA02', NULL, 'a negative amount is refused');
SELECT throws_ok($$SELECT fincore.proration(9223372036854775807, '2026-04-01', '2026-04-01', '2026-05-01', 1, '2026-04-02', 'sideways')$$,
    'ZF107', NULL, 'an unknown rounding mode is the money module''s ZF107');

-- ---------------------------------------------------------------------------
-- The subscription state machine: every status against every action (Stripe Billing's rules)
-- ---------------------------------------------------------------------------
CREATE FUNCTION pg_temp.try(status text, action text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN fincore.subscription_transition(status, action);
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT results_eq($$SELECT s, a, pg_temp.try(s, a) FROM (VALUES
    ('incomplete', 'payment_succeeded', 'active'),
    ('incomplete', 'payment_failed', 'ZFA03'),
    ('incomplete', 'first_payment_expired', 'incomplete_expired'),
    ('incomplete', 'trial_ended', 'ZFA03'),
    ('incomplete', 'trial_ended_unpaid', 'ZFA03'),
    ('incomplete', 'retries_exhausted_cancel', 'ZFA03'),
    ('incomplete', 'retries_exhausted_unpaid', 'ZFA03'),
    ('incomplete', 'change', 'incomplete'),
    ('incomplete', 'pause', 'ZFA03'),
    ('incomplete', 'resume', 'ZFA03'),
    ('incomplete', 'cancel', 'canceled'),
    ('incomplete_expired', 'payment_succeeded', 'ZFA03'),
    ('incomplete_expired', 'payment_failed', 'ZFA03'),
    ('incomplete_expired', 'first_payment_expired', 'ZFA03'),
    ('incomplete_expired', 'trial_ended', 'ZFA03'),
    ('incomplete_expired', 'trial_ended_unpaid', 'ZFA03'),
    ('incomplete_expired', 'retries_exhausted_cancel', 'ZFA03'),
    ('incomplete_expired', 'retries_exhausted_unpaid', 'ZFA03'),
    ('incomplete_expired', 'change', 'ZFA03'),
    ('incomplete_expired', 'pause', 'ZFA03'),
    ('incomplete_expired', 'resume', 'ZFA03'),
    ('incomplete_expired', 'cancel', 'ZFA03'),
    ('trialing', 'payment_succeeded', 'ZFA03'),
    ('trialing', 'payment_failed', 'ZFA03'),
    ('trialing', 'first_payment_expired', 'ZFA03'),
    ('trialing', 'trial_ended', 'active'),
    ('trialing', 'trial_ended_unpaid', 'past_due'),
    ('trialing', 'retries_exhausted_cancel', 'ZFA03'),
    ('trialing', 'retries_exhausted_unpaid', 'ZFA03'),
    ('trialing', 'change', 'trialing'),
    ('trialing', 'pause', 'paused'),
    ('trialing', 'resume', 'ZFA03'),
    ('trialing', 'cancel', 'canceled'),
    ('active', 'payment_succeeded', 'active'),
    ('active', 'payment_failed', 'past_due'),
    ('active', 'first_payment_expired', 'ZFA03'),
    ('active', 'trial_ended', 'ZFA03'),
    ('active', 'trial_ended_unpaid', 'ZFA03'),
    ('active', 'retries_exhausted_cancel', 'ZFA03'),
    ('active', 'retries_exhausted_unpaid', 'ZFA03'),
    ('active', 'change', 'active'),
    ('active', 'pause', 'paused'),
    ('active', 'resume', 'ZFA03'),
    ('active', 'cancel', 'canceled'),
    ('past_due', 'payment_succeeded', 'active'),
    ('past_due', 'payment_failed', 'past_due'),
    ('past_due', 'first_payment_expired', 'ZFA03'),
    ('past_due', 'trial_ended', 'ZFA03'),
    ('past_due', 'trial_ended_unpaid', 'ZFA03'),
    ('past_due', 'retries_exhausted_cancel', 'canceled'),
    ('past_due', 'retries_exhausted_unpaid', 'unpaid'),
    ('past_due', 'change', 'past_due'),
    ('past_due', 'pause', 'ZFA03'),
    ('past_due', 'resume', 'ZFA03'),
    ('past_due', 'cancel', 'canceled'),
    ('canceled', 'payment_succeeded', 'ZFA03'),
    ('canceled', 'payment_failed', 'ZFA03'),
    ('canceled', 'first_payment_expired', 'ZFA03'),
    ('canceled', 'trial_ended', 'ZFA03'),
    ('canceled', 'trial_ended_unpaid', 'ZFA03'),
    ('canceled', 'retries_exhausted_cancel', 'ZFA03'),
    ('canceled', 'retries_exhausted_unpaid', 'ZFA03'),
    ('canceled', 'change', 'ZFA03'),
    ('canceled', 'pause', 'ZFA03'),
    ('canceled', 'resume', 'ZFA03'),
    ('canceled', 'cancel', 'ZFA03'),
    ('unpaid', 'payment_succeeded', 'active'),
    ('unpaid', 'payment_failed', 'ZFA03'),
    ('unpaid', 'first_payment_expired', 'ZFA03'),
    ('unpaid', 'trial_ended', 'ZFA03'),
    ('unpaid', 'trial_ended_unpaid', 'ZFA03'),
    ('unpaid', 'retries_exhausted_cancel', 'ZFA03'),
    ('unpaid', 'retries_exhausted_unpaid', 'ZFA03'),
    ('unpaid', 'change', 'ZFA03'),
    ('unpaid', 'pause', 'ZFA03'),
    ('unpaid', 'resume', 'ZFA03'),
    ('unpaid', 'cancel', 'canceled'),
    ('paused', 'payment_succeeded', 'ZFA03'),
    ('paused', 'payment_failed', 'ZFA03'),
    ('paused', 'first_payment_expired', 'ZFA03'),
    ('paused', 'trial_ended', 'ZFA03'),
    ('paused', 'trial_ended_unpaid', 'ZFA03'),
    ('paused', 'retries_exhausted_cancel', 'ZFA03'),
    ('paused', 'retries_exhausted_unpaid', 'ZFA03'),
    ('paused', 'change', 'ZFA03'),
    ('paused', 'pause', 'ZFA03'),
    ('paused', 'resume', 'active'),
    ('paused', 'cancel', 'canceled')) AS t(s, a, expected) ORDER BY s, a$$,
    $$SELECT s, a, expected FROM (VALUES
    ('incomplete', 'payment_succeeded', 'active'),
    ('incomplete', 'payment_failed', 'ZFA03'),
    ('incomplete', 'first_payment_expired', 'incomplete_expired'),
    ('incomplete', 'trial_ended', 'ZFA03'),
    ('incomplete', 'trial_ended_unpaid', 'ZFA03'),
    ('incomplete', 'retries_exhausted_cancel', 'ZFA03'),
    ('incomplete', 'retries_exhausted_unpaid', 'ZFA03'),
    ('incomplete', 'change', 'incomplete'),
    ('incomplete', 'pause', 'ZFA03'),
    ('incomplete', 'resume', 'ZFA03'),
    ('incomplete', 'cancel', 'canceled'),
    ('incomplete_expired', 'payment_succeeded', 'ZFA03'),
    ('incomplete_expired', 'payment_failed', 'ZFA03'),
    ('incomplete_expired', 'first_payment_expired', 'ZFA03'),
    ('incomplete_expired', 'trial_ended', 'ZFA03'),
    ('incomplete_expired', 'trial_ended_unpaid', 'ZFA03'),
    ('incomplete_expired', 'retries_exhausted_cancel', 'ZFA03'),
    ('incomplete_expired', 'retries_exhausted_unpaid', 'ZFA03'),
    ('incomplete_expired', 'change', 'ZFA03'),
    ('incomplete_expired', 'pause', 'ZFA03'),
    ('incomplete_expired', 'resume', 'ZFA03'),
    ('incomplete_expired', 'cancel', 'ZFA03'),
    ('trialing', 'payment_succeeded', 'ZFA03'),
    ('trialing', 'payment_failed', 'ZFA03'),
    ('trialing', 'first_payment_expired', 'ZFA03'),
    ('trialing', 'trial_ended', 'active'),
    ('trialing', 'trial_ended_unpaid', 'past_due'),
    ('trialing', 'retries_exhausted_cancel', 'ZFA03'),
    ('trialing', 'retries_exhausted_unpaid', 'ZFA03'),
    ('trialing', 'change', 'trialing'),
    ('trialing', 'pause', 'paused'),
    ('trialing', 'resume', 'ZFA03'),
    ('trialing', 'cancel', 'canceled'),
    ('active', 'payment_succeeded', 'active'),
    ('active', 'payment_failed', 'past_due'),
    ('active', 'first_payment_expired', 'ZFA03'),
    ('active', 'trial_ended', 'ZFA03'),
    ('active', 'trial_ended_unpaid', 'ZFA03'),
    ('active', 'retries_exhausted_cancel', 'ZFA03'),
    ('active', 'retries_exhausted_unpaid', 'ZFA03'),
    ('active', 'change', 'active'),
    ('active', 'pause', 'paused'),
    ('active', 'resume', 'ZFA03'),
    ('active', 'cancel', 'canceled'),
    ('past_due', 'payment_succeeded', 'active'),
    ('past_due', 'payment_failed', 'past_due'),
    ('past_due', 'first_payment_expired', 'ZFA03'),
    ('past_due', 'trial_ended', 'ZFA03'),
    ('past_due', 'trial_ended_unpaid', 'ZFA03'),
    ('past_due', 'retries_exhausted_cancel', 'canceled'),
    ('past_due', 'retries_exhausted_unpaid', 'unpaid'),
    ('past_due', 'change', 'past_due'),
    ('past_due', 'pause', 'ZFA03'),
    ('past_due', 'resume', 'ZFA03'),
    ('past_due', 'cancel', 'canceled'),
    ('canceled', 'payment_succeeded', 'ZFA03'),
    ('canceled', 'payment_failed', 'ZFA03'),
    ('canceled', 'first_payment_expired', 'ZFA03'),
    ('canceled', 'trial_ended', 'ZFA03'),
    ('canceled', 'trial_ended_unpaid', 'ZFA03'),
    ('canceled', 'retries_exhausted_cancel', 'ZFA03'),
    ('canceled', 'retries_exhausted_unpaid', 'ZFA03'),
    ('canceled', 'change', 'ZFA03'),
    ('canceled', 'pause', 'ZFA03'),
    ('canceled', 'resume', 'ZFA03'),
    ('canceled', 'cancel', 'ZFA03'),
    ('unpaid', 'payment_succeeded', 'active'),
    ('unpaid', 'payment_failed', 'ZFA03'),
    ('unpaid', 'first_payment_expired', 'ZFA03'),
    ('unpaid', 'trial_ended', 'ZFA03'),
    ('unpaid', 'trial_ended_unpaid', 'ZFA03'),
    ('unpaid', 'retries_exhausted_cancel', 'ZFA03'),
    ('unpaid', 'retries_exhausted_unpaid', 'ZFA03'),
    ('unpaid', 'change', 'ZFA03'),
    ('unpaid', 'pause', 'ZFA03'),
    ('unpaid', 'resume', 'ZFA03'),
    ('unpaid', 'cancel', 'canceled'),
    ('paused', 'payment_succeeded', 'ZFA03'),
    ('paused', 'payment_failed', 'ZFA03'),
    ('paused', 'first_payment_expired', 'ZFA03'),
    ('paused', 'trial_ended', 'ZFA03'),
    ('paused', 'trial_ended_unpaid', 'ZFA03'),
    ('paused', 'retries_exhausted_cancel', 'ZFA03'),
    ('paused', 'retries_exhausted_unpaid', 'ZFA03'),
    ('paused', 'change', 'ZFA03'),
    ('paused', 'pause', 'ZFA03'),
    ('paused', 'resume', 'active'),
    ('paused', 'cancel', 'canceled')) AS t(s, a, expected) ORDER BY s, a$$,
    'the transitions are exactly Stripe''s: 88 status and action pairs');
SELECT throws_ok($$SELECT fincore.subscription_transition('gone', 'cancel')$$, 'ZFA04', NULL, 'an unknown status');
SELECT throws_ok($$SELECT fincore.subscription_transition('active', 'upgrade')$$, 'ZFA04', NULL, 'an unknown action');
SELECT throws_ok($$SELECT fincore.subscription_transition('canceled', 'resume')$$, 'ZFA03',
    'a subscription cannot resume when it is canceled', 'a refusal names the action and the status');
SELECT is((SELECT array_agg(s ORDER BY s) FROM unnest(ARRAY['incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused']) s WHERE fincore.subscription_entitles(s)),
    ARRAY['active', 'past_due', 'trialing'], 'trialing, active and past_due grant entitlements; nothing else does');

-- ---------------------------------------------------------------------------
-- Catalogue and subscriptions
-- ---------------------------------------------------------------------------
SELECT fincore.create_tenant('Billing A', 'ab000000-0000-4000-8000-00000000000a');
SELECT fincore.create_tenant('Billing B', 'ab000000-0000-4000-8000-00000000000b');
SELECT fincore.set_tenant('ab000000-0000-4000-8000-00000000000a');
SELECT fincore.create_account('USD', id => 'ac000000-0000-4000-8000-000000000001');
SELECT fincore.create_account('EUR', id => 'ac000000-0000-4000-8000-000000000002');
SELECT fincore.create_product('Pro', 'ad000000-0000-4000-8000-000000000001');
SELECT throws_ok($$SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', -1, 'USD')$$, 'ZFA05', NULL,
    'a negative price is refused');
SELECT throws_ok($$SELECT fincore.create_price('ad000000-0000-4000-8000-0000000000ff', 1, 'USD')$$, 'ZFA06', NULL,
    'a price of an unknown product is refused');
SELECT throws_ok($$SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', 1, 'XQZ')$$, 'ZF102', NULL,
    'an unknown currency is refused');
SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', 3000, 'USD', id => 'ae000000-0000-4000-8000-000000000001');
SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', 1000, 'USD', scheme => 'per_seat',
                            id => 'ae000000-0000-4000-8000-000000000002');
SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', 500, 'USD', trial_days => 14,
                            id => 'ae000000-0000-4000-8000-000000000003');
SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', 30000, 'USD', interval_unit => 'year',
                            id => 'ae000000-0000-4000-8000-000000000004');

SELECT is((SELECT format('%s %s %s', status, to_char(period_start, 'MM-DD'), to_char(period_end, 'MM-DD'))
             FROM fincore.create_subscription('ac000000-0000-4000-8000-000000000001', 'ae000000-0000-4000-8000-000000000001',
                                              anchor => date_trunc('month', now()) , idempotency_key => 'sub-1',
                                              id => 'af000000-0000-4000-8000-000000000001')),
    format('incomplete %s %s', to_char(date_trunc('month', now()), 'MM-DD'),
           to_char(date_trunc('month', now()) + interval '1 month', 'MM-DD')),
    'a subscription without a trial starts incomplete, in the anchor''s period');
SELECT is((SELECT id FROM fincore.create_subscription('ac000000-0000-4000-8000-000000000001', 'ae000000-0000-4000-8000-000000000001',
                                                      idempotency_key => 'sub-1')),
    'af000000-0000-4000-8000-000000000001'::uuid, 'the same idempotency key returns the subscription');
SELECT throws_ok($$SELECT fincore.create_subscription('ac000000-0000-4000-8000-000000000001',
                     'ae000000-0000-4000-8000-000000000002', idempotency_key => 'sub-1')$$, 'ZFA07', NULL,
    'the key with another price is refused');
SELECT throws_ok($$SELECT fincore.create_subscription('ac000000-0000-4000-8000-000000000002',
                     'ae000000-0000-4000-8000-000000000001')$$, 'ZF301', NULL,
    'the customer''s account must be in the price''s currency');
SELECT is((SELECT status FROM fincore.create_subscription('ac000000-0000-4000-8000-000000000001',
            'ae000000-0000-4000-8000-000000000003', id => 'af000000-0000-4000-8000-000000000003')), 'trialing',
    'a price with a trial starts trialing');
SELECT is((SELECT billed FROM fincore.subscriptions WHERE id = 'af000000-0000-4000-8000-000000000003'), 0::bigint,
    '... billed nothing');

-- A fixed history: the subscription is rewound to a known period to check the lines exactly.
UPDATE fincore.subscriptions SET status = 'active', period_start = '2026-04-01', period_end = '2026-05-01',
       billed = 3000, billed_from = '2026-04-01' WHERE id = 'af000000-0000-4000-8000-000000000001';
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.preview_change('af000000-0000-4000-8000-000000000001',
            'ae000000-0000-4000-8000-000000000002', 6, '2026-04-11')),
    '2000/4000', 'preview: 3,000 a month -> 6 seats at 1,000 on day 10 of 30: credit 2,000, debit 4,000');
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.change_subscription('af000000-0000-4000-8000-000000000001',
            'ae000000-0000-4000-8000-000000000002', 6, '2026-04-11')),
    '2000/4000', 'the change bills exactly what the preview said');
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.preview_change('af000000-0000-4000-8000-000000000001',
            NULL, 2, '2026-04-21')),
    '2000/667', 'then 2 seats on day 20: the credit is half of what the change billed (4,000), not of a price');
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.change_subscription('af000000-0000-4000-8000-000000000001',
            NULL, 2, '2026-04-21')), '2000/667', '... and the change agrees');
SELECT is((SELECT string_agg(format('%s:%s', kind, amount), ' ' ORDER BY line_no) FROM fincore.subscription_lines
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000001' AND line_no > 1),
    'credit:2000 debit:4000 credit:2000 debit:667', 'each change is a credit line and a debit line');
SELECT pg_temp.rows_before() AS billing_rows \gset
SELECT throws_ok($$SELECT fincore.change_subscription('af000000-0000-4000-8000-000000000001', NULL, 3, '2026-04-15')$$,
    'ZFA02', NULL, 'a change before the last one is refused');
SELECT throws_ok($$SELECT fincore.change_subscription('af000000-0000-4000-8000-000000000001',
                     'ae000000-0000-4000-8000-000000000004', 1, '2026-04-25')$$, 'ZFA04', NULL,
    'a change to another interval is refused');
SELECT is(pg_temp.rows_before(), :'billing_rows', 'the refusals wrote nothing');

SELECT is((fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'pause')).status, 'paused', 'pause');
SELECT throws_ok($$SELECT fincore.change_subscription('af000000-0000-4000-8000-000000000001', NULL, 1, '2026-04-25')$$,
    'ZFA03', NULL, 'a paused subscription is not changed');
SELECT is((fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'resume')).status, 'active', 'resume');
SELECT is((fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'cancel')).status, 'canceled', 'cancel');
SELECT throws_ok($$SELECT fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'resume')$$,
    'ZFA03', NULL, 'a canceled subscription is final');
SELECT is((SELECT string_agg(type, ',' ORDER BY seq) FROM fincore.outbox_events
            WHERE aggregateid = 'af000000-0000-4000-8000-000000000001'),
    'subscription.created,subscription.updated,subscription.updated,subscription.updated,subscription.updated,subscription.updated',
    'an event for every change');
SELECT fincore.set_tenant('ab000000-0000-4000-8000-00000000000b');
SELECT throws_ok($$SELECT fincore.preview_change('af000000-0000-4000-8000-000000000001')$$, 'ZFA06', NULL,
    'another tenant does not see the subscription');

-- ---------------------------------------------------------------------------
-- Renewals, invoices, collection (billing_run), pay_invoice
-- ---------------------------------------------------------------------------
SELECT fincore.set_tenant('ab000000-0000-4000-8000-00000000000a');
SELECT fincore.create_account('USD', id => 'ac000000-0000-4000-8000-000000000010');   -- receivable
SELECT fincore.create_account('USD', id => 'ac000000-0000-4000-8000-000000000011');   -- revenue
SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}', id => 'ac000000-0000-4000-8000-000000000012');
SELECT throws_ok($$SELECT fincore.set_billing_accounts('USD', 'ac000000-0000-4000-8000-000000000010',
                     'ac000000-0000-4000-8000-000000000002')$$, 'ZF301', NULL, 'billing accounts are in the currency');
SELECT lives_ok($$SELECT fincore.set_billing_accounts('USD', 'ac000000-0000-4000-8000-000000000010',
                    'ac000000-0000-4000-8000-000000000011')$$, 'receivable and revenue for USD');
-- Two subscriptions whose period ended: one customer can pay, one (debits must not exceed credits) cannot.
SELECT fincore.create_subscription('ac000000-0000-4000-8000-000000000001', 'ae000000-0000-4000-8000-000000000002', 2,
                                   id => 'af000000-0000-4000-8000-000000000011');
SELECT fincore.create_subscription('ac000000-0000-4000-8000-000000000012', 'ae000000-0000-4000-8000-000000000001',
                                   id => 'af000000-0000-4000-8000-000000000012');
UPDATE fincore.subscription_lines SET invoice_id = '00000000-0000-0000-0000-000000000000'
 WHERE subscription_id IN ('af000000-0000-4000-8000-000000000011', 'af000000-0000-4000-8000-000000000012');
UPDATE fincore.subscriptions SET status = 'active', anchor = '2026-03-01', period_start = '2026-03-01',
       period_end = '2026-04-01', billed_from = '2026-03-01', billed = 0
 WHERE id IN ('af000000-0000-4000-8000-000000000011', 'af000000-0000-4000-8000-000000000012');
SELECT is(fincore.billing_run('2026-04-01 00:00:01'), 2, 'billing_run renews both');
SELECT is((SELECT format('%s %s %s', status, to_char(period_start, 'MM-DD'), to_char(period_end, 'MM-DD'))
             FROM fincore.subscriptions WHERE id = 'af000000-0000-4000-8000-000000000011'),
    'active 04-01 05-01', 'the next period');
SELECT is((SELECT format('%s %s', status, total) FROM fincore.invoices WHERE subscription_id = 'af000000-0000-4000-8000-000000000011'),
    'paid 2000', 'its invoice: 2 seats at 1,000, paid from the customer''s account');
SELECT is(format('%s | %s', pg_temp.bal(10), pg_temp.bal(11)),
    'dp=0 dpo=5000 cp=0 cpo=2000 | dp=0 dpo=0 cp=0 cpo=5000', 'receivable <- revenue for both invoices; one paid');
SELECT is((SELECT format('%s %s', s.status, i.status) FROM fincore.subscriptions s JOIN fincore.invoices i ON i.subscription_id = s.id
            WHERE s.id = 'af000000-0000-4000-8000-000000000012'), 'past_due open',
    'a customer the ledger refuses: the invoice stays open, the subscription past_due');
SELECT is(fincore.billing_run('2026-04-01 00:00:02'), 0, 'a second run bills nothing: each period once');
SELECT throws_ok(format($$SELECT fincore.pay_invoice(%L)$$, (SELECT id FROM fincore.invoices
                   WHERE subscription_id = 'af000000-0000-4000-8000-000000000012')), 'ZFA08', NULL,
    'paying it still fails without funds');
SELECT fincore.transfer('ac000000-0000-4000-8000-000000000001', 'ac000000-0000-4000-8000-000000000012', 5000);
SELECT is((SELECT status FROM fincore.pay_invoice((SELECT id FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000012'))), 'paid', 'with funds it is paid');
SELECT is((SELECT status FROM fincore.subscriptions WHERE id = 'af000000-0000-4000-8000-000000000012'), 'active',
    '... and the subscription is active again');
SELECT is((SELECT string_agg(type, ',' ORDER BY seq) FROM fincore.outbox_events
            WHERE aggregatetype = 'invoice' AND payload->>'subscription_id' = 'af000000-0000-4000-8000-000000000012'),
    'invoice.created,invoice.payment_failed,invoice.paid', 'invoice events');
SELECT is((SELECT count(*) FROM fincore.verify())::int, 0, 'verify() is clean');
SELECT ok(EXISTS (SELECT 1 FROM fincore.maintenance_steps WHERE step = 'billing_run'
                   AND fn = 'fincore.billing_run_step(interval)'), 'billing_run is a maintenance step');
SELECT is((SELECT format('%s %s', done > 0, error) FROM fincore.maintenance() WHERE step = 'billing_run'), 't ',
    'the maintenance step runs billing_run: the April periods are long over by now');

SELECT * FROM finish();
ROLLBACK;
