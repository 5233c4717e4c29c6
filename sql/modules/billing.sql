-- ---------------------------------------------------------------------------
-- Billing (docs/billing.md): the arithmetic first.  Periods stepped from an
-- anchor with month-end clamping, and proration to the second, in C
-- (src/billing_engine.c); the catalogue, subscriptions and invoices that use
-- them come next.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.billing_period(anchor timestamptz, unit text, count integer, at timestamptz,
                                       OUT period_index bigint, OUT period_start timestamptz,
                                       OUT period_end timestamptz)
    RETURNS record
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_billing_period';
COMMENT ON FUNCTION fincore.billing_period(timestamptz, text, integer, timestamptz) IS
    'The billing period of count units (day, week, month, year) from anchor that contains at: its index (negative before the anchor) and [start, end). Months and years step from the anchor, the day clamped to the month''s last (anchor Jan 31: Feb 28/29, Mar 31, Apr 30). UTC instants. ZFA01.';

CREATE FUNCTION fincore.proration(billed bigint, billed_from timestamptz, period_start timestamptz,
                                  period_end timestamptz, new_amount bigint, at timestamptz,
                                  rounding text DEFAULT 'half_even', OUT credit bigint, OUT debit bigint)
    RETURNS record
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_proration';
COMMENT ON FUNCTION fincore.proration(bigint, timestamptz, timestamptz, timestamptz, bigint, timestamptz, text) IS
    'A change at `at` of a subscription billed `billed` for [billed_from, period_end): credit = billed x (period_end - at) / (period_end - billed_from), from what was billed and never more; debit = new_amount (a full period''s price) x (period_end - at) / (period_end - period_start). Whole seconds, exact, rounded once (half_even by default). ZFA02, ZF104, ZF107.';

CREATE FUNCTION fincore.subscription_transition(status text, action text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_subscription_transition';
COMMENT ON FUNCTION fincore.subscription_transition(text, text) IS
    'The subscription state machine (C, Stripe Billing''s statuses and the transitions it allows): the status action leads to from status, or ZFA03 if it is not allowed (ZFA04 for an unknown status or action). Writes nothing.';

CREATE FUNCTION fincore.subscription_entitles(status text) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_subscription_entitles';
COMMENT ON FUNCTION fincore.subscription_entitles(text) IS
    'Whether a subscription in this status grants its entitlements: trialing, active, and past_due while its retries run. ZFA04.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.subscription_transition(text,text)', 'app'),
    ('fincore.subscription_entitles(text)', 'app'),
    ('fincore.billing_period(timestamptz,text,integer,timestamptz)', 'app'),
    ('fincore.proration(bigint,timestamptz,timestamptz,timestamptz,bigint,timestamptz,text)', 'app');
