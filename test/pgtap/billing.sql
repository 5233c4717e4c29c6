-- pgTAP: billing's arithmetic (docs/billing.md): periods stepped from an anchor with month-end
-- clamping and leap years, proration to the second from what was billed, and their errors
-- (ZFA01, ZFA02).  UTC instants throughout.
BEGIN;
SET search_path = fincore, public;
SET LOCAL timezone = 'UTC';
SELECT plan(163);

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
-- The invoice state machine: every status against every action (Stripe's rules)
-- ---------------------------------------------------------------------------
CREATE FUNCTION pg_temp.try_invoice(status text, action text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN fincore.invoice_transition(status, action);
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT results_eq($$SELECT s || ' ' || a || ' ' || pg_temp.try_invoice(s, a)
                      FROM unnest('{draft,open,paid,void,uncollectible}'::text[]) s,
                           unnest('{finalize,pay,void,mark_uncollectible}'::text[]) a ORDER BY s, a$$,
    $$VALUES ('draft finalize open'), ('draft mark_uncollectible ZFA10'), ('draft pay ZFA10'), ('draft void void'),
             ('open finalize ZFA10'), ('open mark_uncollectible uncollectible'), ('open pay paid'), ('open void void'),
             ('paid finalize ZFA10'), ('paid mark_uncollectible ZFA10'), ('paid pay ZFA10'), ('paid void ZFA10'),
             ('uncollectible finalize ZFA10'), ('uncollectible mark_uncollectible ZFA10'),
             ('uncollectible pay paid'), ('uncollectible void void'),
             ('void finalize ZFA10'), ('void mark_uncollectible ZFA10'), ('void pay ZFA10'), ('void void ZFA10')$$,
    'invoices: a draft is finalised or voided, an open one paid, voided or written off, paid and void are final');
SELECT throws_ok($$SELECT fincore.invoice_transition('sent', 'pay')$$, 'ZFA11', NULL, 'an unknown invoice status');
SELECT throws_ok($$SELECT fincore.invoice_transition('open', 'refund')$$, 'ZFA11', NULL, 'an unknown invoice action');

-- ---------------------------------------------------------------------------
-- Catalogue and subscriptions
-- ---------------------------------------------------------------------------
SELECT fincore.create_tenant('Billing A', 'ab000000-0000-4000-8000-00000000000a');
SELECT fincore.create_tenant('Billing B', 'ab000000-0000-4000-8000-00000000000b');
SELECT fincore.set_tenant('ab000000-0000-4000-8000-00000000000a');
SELECT fincore.create_account('USD', id => 'ac000000-0000-4000-8000-000000000001');
SELECT fincore.create_account('EUR', id => 'ac000000-0000-4000-8000-000000000002');
SELECT fincore.create_account('USD', id => 'ac000000-0000-4000-8000-000000000010');   -- receivable
SELECT fincore.create_account('USD', id => 'ac000000-0000-4000-8000-000000000011');   -- revenue
-- A customer who cannot pay: its debits must not exceed its credits, and it has none.
SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}', id => 'ac000000-0000-4000-8000-000000000012');
SELECT throws_ok($$SELECT fincore.set_billing_accounts('USD', 'ac000000-0000-4000-8000-000000000010',
                     'ac000000-0000-4000-8000-000000000002')$$, 'ZF301', NULL, 'billing accounts are in the currency');
SELECT lives_ok($$SELECT fincore.set_billing_accounts('USD', 'ac000000-0000-4000-8000-000000000010',
                    'ac000000-0000-4000-8000-000000000011')$$, 'receivable and revenue for USD');
SELECT fincore.create_product('Pro', 'ad000000-0000-4000-8000-000000000001');
SELECT throws_ok($$SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', -1, 'USD')$$, 'ZFA05', NULL,
    'a negative price is refused');
SELECT throws_ok($$SELECT fincore.create_price('ad000000-0000-4000-8000-0000000000ff', 1, 'USD')$$, 'ZFA06', NULL,
    'a price of an unknown product is refused');
SELECT throws_ok($$SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', 1, 'XQZ')$$, 'ZF102', NULL,
    'an unknown currency is refused');
-- Tiered (graduated) and volume prices: Stripe's tiers.
CREATE FUNCTION pg_temp.price(scheme text, tiers text, q int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN fincore.billing_price_amount(scheme, 0, tiers::jsonb, q)::text;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT is(format('%s %s %s %s', pg_temp.price('tiered', t, 1), pg_temp.price('tiered', t, 5), pg_temp.price('tiered', t, 6),
                 pg_temp.price('tiered', t, 12)), '500 2500 2900 5100',
    'tiered: 5 units at 500, 5 at 400, the rest at 300, each unit by its tier')
  FROM (VALUES ('[{"up_to": 5, "unit_amount": 500}, {"up_to": 10, "unit_amount": 400}, {"up_to": null, "unit_amount": 300}]')) v(t);
SELECT is(format('%s %s %s', pg_temp.price('volume', t, 5), pg_temp.price('volume', t, 6), pg_temp.price('volume', t, 12)),
    '2500 2400 3600', 'volume: every unit at the tier the quantity falls in')
  FROM (VALUES ('[{"up_to": 5, "unit_amount": 500}, {"up_to": 10, "unit_amount": 400}, {"up_to": "inf", "unit_amount": 300}]')) v(t);
SELECT is(format('%s %s %s', pg_temp.price('tiered', t, 3), pg_temp.price('tiered', t, 14), pg_temp.price('volume', t, 14)),
    '2000 2600 2100', 'flat amounts: the first 10 units for 2,000, then 150 each (tiered), or 14 at 150 (volume)')
  FROM (VALUES ('[{"up_to": 10, "flat_amount": 2000}, {"unit_amount": 150}]')) v(t);
SELECT results_eq($$SELECT pg_temp.price(s, t, q) FROM (VALUES
    ('tiered', '[{"up_to": 5, "unit_amount": 1}]', 1),
    ('tiered', '[{"up_to": 5, "unit_amount": 1}, {"up_to": 4, "unit_amount": 1}, {"unit_amount": 1}]', 1),
    ('tiered', '[{"up_to": 5, "unit_price": 1}, {"unit_amount": 1}]', 1),
    ('tiered', '[{"up_to": 5, "unit_amount": 1.5}, {"unit_amount": 1}]', 1),
    ('tiered', '[{"up_to": null, "unit_amount": 1}, {"unit_amount": 1}]', 1),
    ('volume', '[]', 1),
    ('volume', NULL, 1),
    ('flat', '[{"unit_amount": 1}]', 1),
    ('tiered', '[{"unit_amount": 9223372036854775807}]', 2),
    ('tiered', '[{"unit_amount": 1}]', 0)) v(s, t, q)$$,
    $$VALUES ('ZFA05'), ('ZFA05'), ('ZFA05'), ('ZFA05'), ('ZFA05'), ('ZFA05'), ('ZFA05'), ('ZFA05'), ('ZF104'), ('ZFA04')$$,
    'bad tiers are refused (ZFA05: the last bounded, out of order, an unknown field, a fraction, an unbounded tier before the last, none, tiers on a flat price), an overflow is ZF104, no quantity ZFA04');
SELECT throws_ok($$SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', 0, 'USD', scheme => 'tiered')$$,
    'ZFA05', NULL, 'a tiered price needs its tiers');
SELECT lives_ok($$SELECT fincore.create_price('ad000000-0000-4000-8000-000000000001', 0, 'USD', scheme => 'volume',
                    tiers => '[{"up_to": 5, "unit_amount": 500}, {"unit_amount": 300}]')$$, 'a volume price');
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
    format('active %s %s', to_char(date_trunc('month', now()), 'MM-DD'),
           to_char(date_trunc('month', now()) + interval '1 month', 'MM-DD')),
    'a subscription without a trial is invoiced at once, in the anchor''s period: active once paid');
SELECT is((SELECT format('%s %s', i.status, i.total = s.billed) FROM fincore.invoices i
             JOIN fincore.subscriptions s ON s.id = i.subscription_id WHERE s.id = 'af000000-0000-4000-8000-000000000001'),
    'paid t', '... its first invoice is what is left of the period, paid');
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
SELECT is((SELECT format('%s %s', billed, (SELECT count(*) FROM fincore.invoices WHERE subscription_id = s.id))
             FROM fincore.subscriptions s WHERE id = 'af000000-0000-4000-8000-000000000003'), '0 0',
    '... billed nothing, invoiced nothing');
SELECT is((SELECT status FROM fincore.create_subscription('ac000000-0000-4000-8000-000000000012',
            'ae000000-0000-4000-8000-000000000001', id => 'af000000-0000-4000-8000-000000000002')), 'incomplete',
    'a customer who cannot pay the first invoice: incomplete');
SELECT is((SELECT format('%s attempts=%s %s next=%s', status, attempts, failure_code, next_attempt_at) FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000002'),
    'open attempts=1 ZF304 next=', '... its invoice open, the refusal recorded, no dunning for a first invoice');
SELECT is(fincore.billing_run(now() + interval '22 hours'), 0, 'incomplete for less than 23 hours: left alone');
SELECT is(fincore.billing_run(now() + interval '23 hours'), 1, 'after 23 hours billing_run expires it');
SELECT is((SELECT format('%s %s %s', s.status, i.status, i.void_transfer_id IS NOT NULL) FROM fincore.subscriptions s
             JOIN fincore.invoices i ON i.subscription_id = s.id WHERE s.id = 'af000000-0000-4000-8000-000000000002'),
    'incomplete_expired void t', '... incomplete_expired, its invoice voided and the posting reversed');

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
SELECT throws_ok($$SELECT fincore.change_subscription('af000000-0000-4000-8000-000000000001', NULL, 1, '2026-04-25',
                     proration_behavior => 'sometimes')$$, 'ZFA04', NULL, 'an unknown proration behaviour is refused');
SELECT is(pg_temp.rows_before(), :'billing_rows', 'the refusals wrote nothing');
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.preview_change('af000000-0000-4000-8000-000000000001',
            NULL, 5, '2026-04-25', proration_behavior => 'none')), '0/0', 'proration_behavior none: the preview bills nothing');
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.change_subscription('af000000-0000-4000-8000-000000000001',
            NULL, 5, '2026-04-25', proration_behavior => 'none')), '0/0', '... and neither does the change');
SELECT is((SELECT format('q=%s billed=%s lines=%s', quantity, billed, lines) FROM fincore.subscriptions
            WHERE id = 'af000000-0000-4000-8000-000000000001'), 'q=5 billed=667 lines=5',
    '... the quantity changed, what was billed and the lines did not');

SELECT is((fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'pause')).status, 'paused', 'pause');
SELECT throws_ok($$SELECT fincore.change_subscription('af000000-0000-4000-8000-000000000001', NULL, 1, '2026-04-25')$$,
    'ZFA03', NULL, 'a paused subscription is not changed');
SELECT is((fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'resume')).status, 'active', 'resume');
SELECT is((fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'cancel')).status, 'canceled', 'cancel');
SELECT throws_ok($$SELECT fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'resume')$$,
    'ZFA03', NULL, 'a canceled subscription is final');
SELECT throws_ok($$SELECT fincore.update_subscription_status('af000000-0000-4000-8000-000000000001', 'cancel_at_period_end')$$,
    'ZFA03', NULL, '... and is not cancelled again at its period''s end');
SELECT is((SELECT string_agg(type, ',' ORDER BY seq) FROM fincore.outbox_events
            WHERE aggregateid = 'af000000-0000-4000-8000-000000000001'),
    'subscription.created,subscription.updated,subscription.updated,subscription.updated,subscription.updated,subscription.updated,subscription.updated,subscription.updated',
    'an event for every change (the first payment''s activation, three changes, pause, resume, cancel)');
SELECT fincore.set_tenant('ab000000-0000-4000-8000-00000000000b');
SELECT throws_ok($$SELECT fincore.preview_change('af000000-0000-4000-8000-000000000001')$$, 'ZFA06', NULL,
    'another tenant does not see the subscription');

-- ---------------------------------------------------------------------------
-- Renewals, invoices, collection (billing_run), pay_invoice
-- ---------------------------------------------------------------------------
SELECT fincore.set_tenant('ab000000-0000-4000-8000-00000000000a');
-- Renewals post to their own receivable and revenue, so that their balances show only them.
SELECT fincore.create_account('USD', id => 'ac000000-0000-4000-8000-000000000013');   -- receivable
SELECT fincore.create_account('USD', id => 'ac000000-0000-4000-8000-000000000014');   -- revenue
SELECT fincore.create_subscription('ac000000-0000-4000-8000-000000000001', 'ae000000-0000-4000-8000-000000000002', 2,
                                   id => 'af000000-0000-4000-8000-000000000011');
SELECT fincore.create_subscription('ac000000-0000-4000-8000-000000000012', 'ae000000-0000-4000-8000-000000000001',
                                   id => 'af000000-0000-4000-8000-000000000012');
SELECT fincore.set_billing_accounts('USD', 'ac000000-0000-4000-8000-000000000013', 'ac000000-0000-4000-8000-000000000014');
-- Rewound: both were active in March, all their lines invoiced.
UPDATE fincore.subscriptions SET status = 'active', anchor = '2026-03-01', period_start = '2026-03-01',
       period_end = '2026-04-01', billed_from = '2026-03-01', billed = 0, created_at = '2026-03-01'
 WHERE id IN ('af000000-0000-4000-8000-000000000011', 'af000000-0000-4000-8000-000000000012');
SELECT is(fincore.billing_run('2026-04-01 00:00:01'), 2, 'billing_run renews both');
SELECT is((SELECT format('%s %s %s', status, to_char(period_start, 'MM-DD'), to_char(period_end, 'MM-DD'))
             FROM fincore.subscriptions WHERE id = 'af000000-0000-4000-8000-000000000011'),
    'active 04-01 05-01', 'the next period');
SELECT is((SELECT format('%s %s', status, total) FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000011' AND period_start = '2026-04-01'),
    'paid 2000', 'its invoice: 2 seats at 1,000, paid from the customer''s account');
SELECT is(format('%s | %s', pg_temp.bal(13), pg_temp.bal(14)),
    'dp=0 dpo=5000 cp=0 cpo=2000 | dp=0 dpo=0 cp=0 cpo=5000', 'receivable <- revenue for both invoices; one paid');
SELECT is((SELECT format('%s %s attempts=%s next in %s', s.status, i.status, i.attempts, i.next_attempt_at - now())
             FROM fincore.subscriptions s JOIN fincore.invoices i ON i.subscription_id = s.id AND i.period_start = '2026-04-01'
            WHERE s.id = 'af000000-0000-4000-8000-000000000012'), 'past_due open attempts=1 next in 1 day',
    'a customer the ledger refuses: the invoice stays open, the subscription past_due, a retry in a day (the default policy)');
SELECT is((SELECT format('%s %s %s', queue, payload->>'attempt', run_at - now()) FROM fincore.jobs
            WHERE payload->>'invoice_id' = (SELECT id::text FROM fincore.invoices
                                             WHERE subscription_id = 'af000000-0000-4000-8000-000000000012'
                                               AND period_start = '2026-04-01')),
    'billing:dunning 1 1 day', '... the retry is a job on the queue');
SELECT ok(fincore.entitled('anything') IS FALSE, 'entitled() without a user is false');
SELECT is(fincore.billing_run('2026-04-01 00:00:02'), 0, 'a second run bills nothing: each period once');
SELECT throws_ok(format($$SELECT fincore.pay_invoice(%L)$$, (SELECT id FROM fincore.invoices
                   WHERE subscription_id = 'af000000-0000-4000-8000-000000000012' AND period_start = '2026-04-01')),
    'ZFA08', NULL, 'paying it still fails without funds');
SELECT is((SELECT attempts FROM fincore.invoices WHERE subscription_id = 'af000000-0000-4000-8000-000000000012'
             AND period_start = '2026-04-01'), 1, '... and wrote nothing');
SELECT fincore.transfer('ac000000-0000-4000-8000-000000000001', 'ac000000-0000-4000-8000-000000000012', 5000);
SELECT is((SELECT status FROM fincore.pay_invoice((SELECT id FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000012' AND period_start = '2026-04-01'))), 'paid',
    'with funds it is paid');
SELECT is((SELECT status FROM fincore.subscriptions WHERE id = 'af000000-0000-4000-8000-000000000012'), 'active',
    '... and the subscription is active again');
SELECT is((SELECT attempts FROM fincore.retry_invoice((SELECT id FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000012' AND period_start = '2026-04-01'), 1)), 1,
    'the pending dunning retry is then a no-op');
SELECT is((SELECT string_agg(type, ',' ORDER BY seq) FROM fincore.outbox_events
            WHERE aggregatetype = 'invoice' AND payload->>'invoice_id' = (SELECT id::text FROM fincore.invoices
                  WHERE subscription_id = 'af000000-0000-4000-8000-000000000012' AND period_start = '2026-04-01')),
    'invoice.created,invoice.finalized,invoice.payment_failed,invoice.paid', 'invoice events');

-- ---------------------------------------------------------------------------
-- Dunning: retries as jobs, exhaustion by the policy, hard declines
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT fincore.set_dunning_policy('{1 day, 0 days}')$$, 'ZFA09', NULL, 'a wait of nothing is refused');
SELECT throws_ok($$SELECT fincore.set_dunning_policy('{1,2,3,4,5,6,7,8,9}'::int[]::text[]::interval[])$$, 'ZFA09', NULL,
    'more than 8 retries are refused');
SELECT throws_ok($$SELECT fincore.set_dunning_policy(on_exhausted => 'forgive')$$, 'ZFA09', NULL,
    'an unknown outcome is refused');
SELECT lives_ok($$SELECT fincore.set_dunning_policy('{1 hour, 2 hours}', 'unpaid')$$, 'a policy of two retries, then unpaid');
-- The subscriptions so far are done with, so that each billing_run below renews only what it names.
SELECT fincore.update_subscription_status(id, 'cancel') FROM fincore.subscriptions
 WHERE id IN ('af000000-0000-4000-8000-000000000003', 'af000000-0000-4000-8000-000000000011',
              'af000000-0000-4000-8000-000000000012');
-- A customer with 1,000 and a subscription of 3,000: the renewal fails and is retried.
SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}', id => 'ac000000-0000-4000-8000-000000000015');
SELECT fincore.transfer('ac000000-0000-4000-8000-000000000001', 'ac000000-0000-4000-8000-000000000015', 1000);
SELECT fincore.create_product('Premium', 'ad000000-0000-4000-8000-000000000002');
SELECT fincore.set_product_features('ad000000-0000-4000-8000-000000000002', '{reports,export}');
SELECT fincore.create_price('ad000000-0000-4000-8000-000000000002', 3000, 'USD', id => 'ae000000-0000-4000-8000-000000000005');
SELECT is((SELECT status FROM fincore.create_subscription('ac000000-0000-4000-8000-000000000015',
            'ae000000-0000-4000-8000-000000000005', anchor => now() - interval '1 month' + interval '1 hour',
            id => 'af000000-0000-4000-8000-000000000015', subscriber => 'a0000000-0000-4000-8000-000000000015')),
    'active', 'a subscriber''s subscription, its first (short) invoice paid');
SELECT fincore.set_user('a0000000-0000-4000-8000-000000000015');
SELECT ok(fincore.entitled('reports') AND fincore.entitled('export') AND NOT fincore.entitled('admin'),
    'entitled() to the product''s features, and no other');
SELECT fincore.set_user('a0000000-0000-4000-8000-0000000000ff');
SELECT ok(NOT fincore.entitled('reports'), '... another user is not');
SELECT fincore.set_user('a0000000-0000-4000-8000-000000000015');
SELECT is(fincore.billing_run(now() + interval '2 hours'), 1, 'the renewal');
SELECT is((SELECT format('%s %s attempts=%s next in %s', s.status, i.status, i.attempts, i.next_attempt_at - now())
             FROM fincore.subscriptions s JOIN fincore.invoices i ON i.subscription_id = s.id AND i.status <> 'paid'
            WHERE s.id = 'af000000-0000-4000-8000-000000000015'), 'past_due open attempts=1 next in 01:00:00',
    'fails: past_due, a retry in an hour (the policy)');
SELECT ok(fincore.entitled('reports'), 'past_due still entitles while the retries run');
UPDATE fincore.jobs SET run_at = now() - interval '1 second', scheduled = false WHERE queue = 'billing:dunning';  -- due
SELECT is(fincore.dunning_run(), 2, 'dunning_run runs the due retries (this one, and the paid invoice''s no-op)');
SELECT is((SELECT format('%s %s attempts=%s next in %s', s.status, i.status, i.attempts, i.next_attempt_at - now())
             FROM fincore.subscriptions s JOIN fincore.invoices i ON i.subscription_id = s.id AND i.status <> 'paid'
            WHERE s.id = 'af000000-0000-4000-8000-000000000015'), 'past_due open attempts=2 next in 02:00:00',
    'the retry fails too: the next in two hours');
SELECT is((SELECT attempts FROM fincore.retry_invoice((SELECT id FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000015' AND status = 'open'), 1)), 2,
    'a stale retry (attempt 1 again) is a no-op');
UPDATE fincore.jobs SET run_at = now() - interval '1 second', scheduled = false WHERE queue = 'billing:dunning';  -- due
SELECT is(fincore.dunning_run(), 1, 'the last retry');
SELECT is((SELECT format('%s %s attempts=%s next=%s', s.status, i.status, i.attempts, i.next_attempt_at)
             FROM fincore.subscriptions s JOIN fincore.invoices i ON i.subscription_id = s.id AND i.status <> 'paid'
            WHERE s.id = 'af000000-0000-4000-8000-000000000015'), 'unpaid open attempts=3 next=',
    'retries exhausted: unpaid (the policy), the invoice still open');
SELECT ok(NOT fincore.entitled('reports'), 'unpaid does not entitle');
SELECT fincore.transfer('ac000000-0000-4000-8000-000000000001', 'ac000000-0000-4000-8000-000000000015', 5000);
SELECT is((SELECT status FROM fincore.pay_invoice((SELECT id FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000015' AND status = 'open'))), 'paid',
    'a payment pays the invoice the retries gave up on ...');
SELECT is((SELECT status FROM fincore.subscriptions WHERE id = 'af000000-0000-4000-8000-000000000015'), 'active',
    '... and makes the subscription active again');
SELECT ok(fincore.entitled('reports'), '... and entitles again');
-- A hard decline: the customer's account frozen; the default outcome, cancel.
SELECT fincore.set_dunning_policy();
SELECT fincore.freeze_account('ac000000-0000-4000-8000-000000000015');
SELECT is(fincore.billing_run(now() + interval '1 month 2 hours'), 1, 'the next renewal');
SELECT is((SELECT format('%s %s %s attempts=%s', s.status, i.status, i.failure_code, i.attempts)
             FROM fincore.subscriptions s JOIN fincore.invoices i ON i.subscription_id = s.id AND i.status <> 'paid'
            WHERE s.id = 'af000000-0000-4000-8000-000000000015'), 'canceled uncollectible ZF306 attempts=1',
    'a hard decline (frozen) ends the retries at once: canceled, the invoice uncollectible');
SELECT ok(NOT fincore.entitled('reports'), 'canceled does not entitle');

-- ---------------------------------------------------------------------------
-- Changes and cancellation at the period's end, always_invoice, drafts, void
-- ---------------------------------------------------------------------------
SELECT fincore.create_subscription('ac000000-0000-4000-8000-000000000001', 'ae000000-0000-4000-8000-000000000002', 1,
                                   anchor => now() - interval '1 month' + interval '1 hour',
                                   id => 'af000000-0000-4000-8000-000000000016');
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.change_subscription('af000000-0000-4000-8000-000000000016',
            NULL, 4, at_period_end => true)), '0/0', 'a change at the period''s end bills nothing now');
SELECT is((SELECT format('q=%s pending=%s', quantity, pending_quantity) FROM fincore.subscriptions
            WHERE id = 'af000000-0000-4000-8000-000000000016'), 'q=1 pending=4', '... it is scheduled');
SELECT is(fincore.billing_run(now() + interval '2 hours'), 1, 'the renewal');
SELECT is((SELECT format('q=%s pending=%s billed=%s', quantity, pending_quantity, billed) FROM fincore.subscriptions
            WHERE id = 'af000000-0000-4000-8000-000000000016'), 'q=4 pending= billed=4000',
    '... renews at the scheduled quantity');
SELECT is((fincore.update_subscription_status('af000000-0000-4000-8000-000000000016', 'cancel_at_period_end')).status,
    'active', 'cancel at the period''s end: still active');
SELECT is((fincore.update_subscription_status('af000000-0000-4000-8000-000000000016', 'uncancel')).cancel_at_period_end,
    false, 'uncancel undoes it');
SELECT fincore.update_subscription_status('af000000-0000-4000-8000-000000000016', 'cancel_at_period_end');
SELECT is(fincore.billing_run(now() + interval '1 month 2 hours'), 1, 'at the period''s end');
SELECT is((SELECT format('%s %s', status, (SELECT count(*) FROM fincore.invoices WHERE subscription_id = s.id))
             FROM fincore.subscriptions s WHERE id = 'af000000-0000-4000-8000-000000000016'), 'canceled 2',
    '... it is canceled, and not invoiced again');
SELECT fincore.create_subscription('ac000000-0000-4000-8000-000000000001', 'ae000000-0000-4000-8000-000000000002', 1,
                                   anchor => '2026-01-01', id => 'af000000-0000-4000-8000-000000000017');
UPDATE fincore.subscriptions SET period_start = '2026-04-01', period_end = '2026-05-01', billed = 1000,
       billed_from = '2026-04-01' WHERE id = 'af000000-0000-4000-8000-000000000017';
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.change_subscription('af000000-0000-4000-8000-000000000017',
            NULL, 3, '2026-04-16', proration_behavior => 'always_invoice')), '500/1500',
    'always_invoice: an upgrade on day 15 of 30 ...');
SELECT is((SELECT format('%s %s', status, total) FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000017' ORDER BY created_at DESC, id DESC LIMIT 1),
    'paid 1000', '... is invoiced and collected at once: 1,500 less the 500 credit');
SELECT is((SELECT format('%s/%s', credit, debit) FROM fincore.change_subscription('af000000-0000-4000-8000-000000000017',
            NULL, 2, '2026-04-25')), '600/400', 'a downgrade with 6 days left: credit 600 (of the 1,500 billed for 15 days), debit 400');
SELECT ok(fincore.create_invoice('af000000-0000-4000-8000-000000000017') IS NULL,
    'create_invoice: a net credit is not invoiced, it waits');
SELECT fincore.change_subscription('af000000-0000-4000-8000-000000000017', NULL, 5, '2026-04-28');
SELECT is((SELECT format('%s %s %s', status, total, transfer_id IS NULL)
             FROM fincore.create_invoice('af000000-0000-4000-8000-000000000017', finalize => false)),
    'draft 100 t', 'a draft: credit 600, debit 400, credit 200, debit 500 netted; nothing posted');
SELECT throws_ok(format($$SELECT fincore.pay_invoice(%L)$$, (SELECT id FROM fincore.invoices
                   WHERE subscription_id = 'af000000-0000-4000-8000-000000000017' AND status = 'draft')),
    'ZFA10', NULL, 'a draft is not paid');
SELECT is((SELECT format('%s %s', status, transfer_id IS NOT NULL) FROM fincore.finalize_invoice((SELECT id FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000017' AND status = 'draft'))),
    'paid t', 'finalize_invoice posts and collects it');
SELECT pg_temp.bal(13) AS receivable_before \gset
SELECT fincore.change_subscription('af000000-0000-4000-8000-000000000017', NULL, 6, '2026-04-29');
SELECT status FROM fincore.create_invoice('af000000-0000-4000-8000-000000000017', finalize => false);
SELECT is((SELECT status FROM fincore.update_invoice_status((SELECT id FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000017' AND status = 'draft'), 'void')), 'void',
    'a draft is voided');
SELECT is(pg_temp.bal(13), :'receivable_before', '... nothing was posted for it');
SELECT throws_ok(format($$SELECT fincore.update_invoice_status(%L, 'void')$$, (SELECT id FROM fincore.invoices
                   WHERE subscription_id = 'af000000-0000-4000-8000-000000000017' AND status = 'paid' LIMIT 1)),
    'ZFA10', NULL, 'a paid invoice is final');
SELECT throws_ok($$SELECT fincore.update_invoice_status(gen_random_uuid(), 'refund')$$, 'ZFA11', NULL,
    'an unknown invoice action');
-- ---------------------------------------------------------------------------
-- Stripe in sync
-- ---------------------------------------------------------------------------
CREATE FUNCTION pg_temp.stripe(n int, created int, kind text, obj jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT fincore.apply_stripe_event(jsonb_build_object('id', 'evt_' || n, 'type', kind, 'created', created,
                                                         'data', jsonb_build_object('object', obj))) $$;
CREATE FUNCTION pg_temp.stripe_sub(status text, qty int DEFAULT 1) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', 'sub_9', 'customer', 'cus_9', 'status', status,
                              'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                                  'price', jsonb_build_object('id', 'price_9'), 'quantity', qty))),
                              'current_period_start', 1767225600, 'current_period_end', 1769904000,
                              'billing_cycle_anchor', 1767225600, 'cancel_at_period_end', false) $$;
SELECT throws_ok($$SELECT pg_temp.stripe(1, 100, 'customer.subscription.created', pg_temp.stripe_sub('active'))$$,
    'ZFA13', NULL, 'a subscription to a price fincore does not know waits (ZFA13: the job retries)');
SELECT fincore.create_price('ad000000-0000-4000-8000-000000000002', 2500, 'USD', external_id => 'price_9');
SELECT is(pg_temp.stripe(1, 100, 'customer.subscription.created', pg_temp.stripe_sub('active')), 'applied',
    'then it is applied');
SELECT is(pg_temp.stripe(1, 100, 'customer.subscription.created', pg_temp.stripe_sub('active')), 'unchanged',
    'a duplicate changes nothing');
SELECT is(pg_temp.stripe(2, 200, 'customer.subscription.updated', pg_temp.stripe_sub('past_due', 2)), 'applied',
    'a newer event is applied');
SELECT is(pg_temp.stripe(3, 150, 'customer.subscription.updated', pg_temp.stripe_sub('active', 5)), 'unchanged',
    'an older one, delivered late, is stale');
SELECT is((SELECT format('%s q=%s %s', s.status, s.quantity, a.external_ref) FROM fincore.subscriptions s
             JOIN fincore.accounts a ON a.tenant_id = s.tenant_id AND a.id = s.customer_account
            WHERE s.external_id = 'sub_9'), 'past_due q=2 stripe:cus_9',
    'the subscription mirrors the newest event; the Stripe customer has an account');
SELECT is(pg_temp.stripe(4, 210, 'checkout.session.completed',
            '{"id": "cs_9", "mode": "subscription", "subscription": "sub_9", "client_reference_id": "a0000000-0000-4000-8000-000000000099"}'),
    'applied', 'a checkout names the subscriber');
SELECT fincore.set_user('a0000000-0000-4000-8000-000000000099');
SELECT ok(fincore.entitled('reports'), '... who is entitled while Stripe says past_due');
SELECT throws_ok($$SELECT pg_temp.stripe(5, 220, 'invoice.paid',
                     '{"id": "in_9", "subscription": "sub_404", "status": "paid", "total": 5000, "currency": "usd"}')$$,
    'ZFA13', NULL, 'an invoice of a subscription not known yet waits');
SELECT is(pg_temp.stripe(6, 230, 'invoice.paid',
            '{"id": "in_9", "subscription": "sub_9", "status": "paid", "total": 5000, "currency": "usd"}'), 'applied',
    'an invoice is mirrored');
SELECT is(pg_temp.stripe(7, 225, 'invoice.payment_failed',
            '{"id": "in_9", "subscription": "sub_9", "status": "open", "total": 5000, "currency": "usd"}'), 'unchanged',
    '... and an older failure does not reopen it');
SELECT is((SELECT format('%s %s %s', status, total, transfer_id IS NULL) FROM fincore.invoices WHERE external_id = 'in_9'),
    'paid 5000 t', '... paid at Stripe, nothing posted here');
SELECT throws_ok(format($$SELECT fincore.pay_invoice(%L)$$, (SELECT id FROM fincore.invoices WHERE external_id = 'in_9')),
    'ZFA12', NULL, 'fincore does not collect an invoice Stripe bills');
SELECT throws_ok(format($$SELECT fincore.change_subscription(%L, NULL, 3)$$,
                        (SELECT id FROM fincore.subscriptions WHERE external_id = 'sub_9')),
    'ZFA12', NULL, 'nor change a subscription Stripe bills');
SELECT fincore.billing_run(now(), 1000, 'ab000000-0000-4000-8000-00000000000a');
SELECT is((SELECT format('lines=%s %s', (SELECT count(*) FROM fincore.subscription_lines l
                                         WHERE l.subscription_id = s.id), to_char(period_end, 'YYYY-MM-DD'))
             FROM fincore.subscriptions s WHERE external_id = 'sub_9'), 'lines=0 2026-02-01',
    'billing_run never renews what Stripe bills, its period long over');
SELECT is(pg_temp.stripe(8, 300, 'customer.subscription.deleted', pg_temp.stripe_sub('active', 2)), 'applied',
    'deleted: canceled');
SELECT is(pg_temp.stripe(9, 400, 'customer.subscription.updated', pg_temp.stripe_sub('active', 2)), 'unchanged',
    'a canceled subscription stays canceled');
SELECT ok(NOT fincore.entitled('reports'), 'no longer entitled');
SELECT fincore.set_user(NULL);
SELECT is(pg_temp.stripe(10, 500, 'charge.refunded', '{"id": "ch_9"}'), 'ignored', 'other events are ignored');
SELECT throws_ok($$SELECT fincore.apply_stripe_event('{"id": "evt_x", "type": "invoice.paid"}')$$, 'ZFA14', NULL,
    'an event without data is refused');
SELECT throws_ok($$SELECT pg_temp.stripe(11, 600, 'customer.subscription.updated', pg_temp.stripe_sub('sleeping'))$$,
    'ZFA04', NULL, 'an unknown subscription status is refused');

-- An open invoice written off by hand, then voided (its posting reversed).
SELECT is((SELECT status FROM fincore.update_invoice_status((SELECT id FROM fincore.invoices
            WHERE subscription_id = 'af000000-0000-4000-8000-000000000012' AND status = 'open'), 'mark_uncollectible')),
    'uncollectible', 'mark_uncollectible: an open invoice written off');
SELECT is((SELECT format('%s %s', status, void_transfer_id IS NOT NULL) FROM fincore.update_invoice_status((SELECT id
            FROM fincore.invoices WHERE subscription_id = 'af000000-0000-4000-8000-000000000012'
             AND status = 'uncollectible'), 'void')), 'void t', '... then voided, its posting reversed');

-- The refusals of this module's later codes write nothing.
CREATE FUNCTION pg_temp.billing_rows() RETURNS text LANGUAGE sql AS $$
    SELECT format('%s invoices=%s policies=%s features=%s jobs=%s transfers=%s', pg_temp.rows_before(),
                  (SELECT count(*) FROM fincore.invoices), (SELECT count(*) FROM fincore.dunning_policies),
                  (SELECT count(*) FROM fincore.billing_features), (SELECT count(*) FROM fincore.jobs),
                  (SELECT count(*) FROM fincore.transfers)) $$;
SELECT pg_temp.billing_rows() AS billing_rows_2 \gset
SELECT throws_ok($$SELECT fincore.set_dunning_policy('{1 hour}', 'unpaid', '{not-a-code}')$$, 'ZFA09', NULL,
    'a hard decline code that is not a SQLSTATE is refused');
SELECT throws_ok($$SELECT fincore.set_product_features('ad000000-0000-4000-8000-000000000002', '{reports, ""}')$$,
    'ZFA05', NULL, 'an empty feature name is refused');
SELECT throws_ok(format($$SELECT fincore.update_invoice_status(%L, 'mark_uncollectible')$$, (SELECT id FROM fincore.invoices
                   WHERE subscription_id = 'af000000-0000-4000-8000-000000000012' AND status = 'void' LIMIT 1)),
    'ZFA10', NULL, 'a void invoice is final');
SELECT throws_ok($$SELECT pg_temp.stripe(20, 900, 'checkout.session.completed',
                     '{"id": "cs_x", "mode": "subscription", "subscription": "sub_9", "client_reference_id": "user-7"}')$$,
    'ZFA14', NULL, 'a checkout whose client_reference_id is not a user id is refused');
SELECT throws_ok($$SELECT pg_temp.stripe(21, 900, 'invoice.created',
                     '{"id": "in_x", "subscription": "sub_9", "status": "open", "total": 100, "currency": "eur"}')$$,
    'ZFA14', NULL, 'an invoice in another currency than its subscription''s is refused');
SELECT is(pg_temp.billing_rows(), :'billing_rows_2', 'the refusals (ZFA05, ZFA09, ZFA10, ZFA14) wrote nothing');

SELECT is((SELECT count(*) FROM fincore.verify())::int, 0, 'verify() is clean');
SELECT ok(EXISTS (SELECT 1 FROM fincore.maintenance_steps WHERE step = 'billing_run'
                   AND fn = 'fincore.billing_run_step(interval)'), 'billing_run is a maintenance step');
SELECT ok(EXISTS (SELECT 1 FROM fincore.maintenance_steps WHERE step = 'dunning_run'
                   AND fn = 'fincore.dunning_run_step(interval)'), 'dunning_run is a maintenance step');
SELECT is((SELECT format('%s %s', done > 0, error) FROM fincore.maintenance() WHERE step = 'billing_run'), 't ',
    'the maintenance step runs billing_run: the April periods are long over by now');

SELECT * FROM finish();
ROLLBACK;
