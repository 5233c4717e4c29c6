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

-- ---------------------------------------------------------------------------
-- The catalogue: products and their prices.  A price is immutable (no function changes one):
-- a new price is a new row, and a subscription moves to it.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.billing_products (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    name       text        NOT NULL CHECK (pg_catalog.length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.billing_products IS 'What a tenant sells by subscription.';
SELECT fincore.protect('fincore.billing_products');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_products', '');

-- The features a product's subscribers are entitled to (fincore.entitled(feature)).
CREATE TABLE fincore.billing_features (
    tenant_id  uuid NOT NULL,
    product_id uuid NOT NULL,
    feature    text NOT NULL CHECK (pg_catalog.length(feature) BETWEEN 1 AND 100),
    PRIMARY KEY (tenant_id, product_id, feature),
    FOREIGN KEY (tenant_id, product_id) REFERENCES fincore.billing_products (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.billing_features IS
    'The features a product grants while a subscription to one of its prices entitles (trialing, active, past_due): what fincore.entitled(feature) reads.';
SELECT fincore.protect('fincore.billing_features');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_features', '');

CREATE TABLE fincore.billing_prices (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    product_id     uuid        NOT NULL,
    currency       text        NOT NULL,
    unit_amount    bigint      NOT NULL CHECK (unit_amount >= 0),
    scheme         text        NOT NULL CHECK (scheme IN ('flat', 'per_seat', 'tiered', 'volume')),
    tiers          jsonb,      -- Stripe's tiers of a tiered or volume price (fincore.billing_price_amount)
    interval_unit  text        NOT NULL CHECK (interval_unit IN ('day', 'week', 'month', 'year')),
    interval_count integer     NOT NULL CHECK (interval_count BETWEEN 1 AND 366),
    trial_days     integer     NOT NULL DEFAULT 0 CHECK (trial_days BETWEEN 0 AND 730),
    external_id    text        CHECK (pg_catalog.length(external_id) BETWEEN 1 AND 255),  -- Stripe's price id
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, external_id),
    FOREIGN KEY (tenant_id, product_id) REFERENCES fincore.billing_products (tenant_id, id),
    CHECK ((scheme IN ('tiered', 'volume')) = (tiers IS NOT NULL))
);
COMMENT ON TABLE fincore.billing_prices IS
    'Prices of products: an amount per interval (flat, per seat, or by tiers: graduated or volume), a currency, a trial. Immutable: a change is a new price.';
SELECT fincore.protect('fincore.billing_prices');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_prices', '');

-- A subscription: its price and quantity, status, anchor and current period, and what was
-- billed for the rest of the period from billed_from (what a change credits from).
CREATE TABLE fincore.subscriptions (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    idempotency_key text        CHECK (pg_catalog.length(idempotency_key) BETWEEN 1 AND 255),
    customer_account uuid       NOT NULL,
    price_id        uuid        NOT NULL,
    quantity        integer     NOT NULL CHECK (quantity >= 1),
    status          text        NOT NULL,
    anchor          timestamptz NOT NULL,
    trial_end       timestamptz,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    billed          bigint      NOT NULL CHECK (billed >= 0),
    billed_from     timestamptz NOT NULL,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    pending_price_id uuid,                              -- a change scheduled for the period's end
    pending_quantity integer    CHECK (pending_quantity >= 1),
    subscriber      uuid,                               -- the user entitled (fincore.uid()), if any
    external_id     text,                               -- Stripe's subscription id: Stripe bills it
    external_version bigint,                            -- the created time of the last Stripe event applied
    -- The payment method (fincore.set_payment_method): what the customer's credit does not cover
    -- is charged through this provider, from this payer account (docs/payments.md).
    payment_provider text,
    payment_account uuid,
    lines           integer     NOT NULL DEFAULT 0,     -- the number of its lines: the last line_no
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    UNIQUE (tenant_id, external_id),
    FOREIGN KEY (tenant_id, price_id) REFERENCES fincore.billing_prices (tenant_id, id),
    FOREIGN KEY (tenant_id, pending_price_id) REFERENCES fincore.billing_prices (tenant_id, id),
    FOREIGN KEY (tenant_id, payment_provider) REFERENCES fincore.payment_providers (tenant_id, name),
    CHECK ((payment_provider IS NULL) = (payment_account IS NULL)),
    CHECK (period_start <= billed_from AND billed_from <= period_end),
    CHECK ((pending_price_id IS NULL) = (pending_quantity IS NULL))
);
-- fincore.entitled(): a user's subscriptions in the tenant.
CREATE INDEX subscriptions_subscriber_idx ON fincore.subscriptions (tenant_id, subscriber) WHERE subscriber IS NOT NULL;
-- billing_run: the subscriptions due for renewal, and the incomplete ones due to expire.
CREATE INDEX subscriptions_due_idx ON fincore.subscriptions (tenant_id, period_end)
    WHERE status IN ('trialing', 'active', 'past_due') AND external_id IS NULL;
CREATE INDEX subscriptions_incomplete_idx ON fincore.subscriptions (tenant_id, created_at)
    WHERE status = 'incomplete' AND external_id IS NULL;
COMMENT ON TABLE fincore.subscriptions IS
    'Subscriptions: price, quantity, status (subscription_transition), anchor, current period, and what was billed for [billed_from, period_end). Written only by fincore''s billing functions, under the row''s lock.';
SELECT fincore.protect('fincore.subscriptions');
SELECT pg_catalog.pg_extension_config_dump('fincore.subscriptions', '');

-- What a subscription owes or is owed, line by line, until an invoice takes the lines.
CREATE TABLE fincore.subscription_lines (
    tenant_id       uuid        NOT NULL,
    subscription_id uuid        NOT NULL,
    line_no         integer     NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('period', 'credit', 'debit')),
    amount          bigint      NOT NULL CHECK (amount >= 0),   -- a credit is owed to the customer
    price_id        uuid        NOT NULL,
    quantity        integer     NOT NULL,
    span_start      timestamptz NOT NULL,
    span_end        timestamptz NOT NULL,
    invoice_id      uuid,       -- the invoice that took the line (NULL: not invoiced yet)
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, subscription_id, line_no),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES fincore.subscriptions (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.subscription_lines IS
    'The lines of a subscription: a period billed, and the credit and debit of each change (proration), for the invoices to come.';
SELECT fincore.protect('fincore.subscription_lines');
SELECT pg_catalog.pg_extension_config_dump('fincore.subscription_lines', '');

-- A price's amount for a full interval at a quantity; ZF104 if it overflows.
CREATE FUNCTION fincore.billing_price_amount(scheme text, unit_amount bigint, tiers jsonb, quantity integer)
    RETURNS bigint
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_billing_price_amount';
COMMENT ON FUNCTION fincore.billing_price_amount(text, bigint, jsonb, integer) IS
    'What a price charges for quantity units for a full interval (C): flat (unit_amount), per_seat (unit_amount x quantity), tiered (Stripe''s graduated tiers: each unit at its tier''s unit_amount, plus the flat_amount of every tier reached) or volume (every unit at the unit_amount of the tier the quantity falls in, plus its flat_amount). ZFA05 for a bad scheme, amount or tiers, ZFA04 for a quantity below 1, ZF104 on overflow.';

CREATE FUNCTION fincore._billing_amount(price fincore.billing_prices, quantity integer) RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    RETURN fincore.billing_price_amount(price.scheme, price.unit_amount, price.tiers, quantity);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._billing_amount(fincore.billing_prices, integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore._billing_amount(fincore.billing_prices, integer) IS
    'Internal: a price''s amount for a full interval at a quantity (fincore.billing_price_amount).';

CREATE FUNCTION fincore.create_product(name text, id uuid DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    new_id uuid := coalesce(id, fincore.uuidv7());
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR pg_catalog.length(name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid product name' USING ERRCODE = 'ZFA05', HINT = '1 to 200 characters.';
    END IF;
    INSERT INTO fincore.billing_products (tenant_id, id, name) VALUES (tenant, new_id, name);
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_product(text, uuid) IS
    'Creates a product of the current tenant and returns its id. Tenant admins only (ZF803). ZFA05.';

CREATE FUNCTION fincore.create_price(product_id uuid, unit_amount bigint, currency text,
        interval_unit text DEFAULT 'month', interval_count integer DEFAULT 1, scheme text DEFAULT 'flat',
        trial_days integer DEFAULT 0, id uuid DEFAULT NULL, external_id text DEFAULT NULL, tiers jsonb DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    new_id uuid := coalesce(id, fincore.uuidv7());
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    PERFORM FROM fincore.billing_products x WHERE x.tenant_id = tenant AND x.id = product_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'product % not found', coalesce(product_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    IF unit_amount IS NULL OR unit_amount < 0 OR scheme IS NULL OR scheme NOT IN ('flat', 'per_seat', 'tiered', 'volume')
       OR interval_unit IS NULL OR interval_unit NOT IN ('day', 'week', 'month', 'year')
       OR interval_count IS NULL OR interval_count NOT BETWEEN 1 AND 366
       OR trial_days IS NULL OR trial_days NOT BETWEEN 0 AND 730 THEN
        RAISE EXCEPTION 'invalid price: unit_amount >= 0, scheme flat, per_seat, tiered or volume, interval day/week/month/year x 1 to 366, trial 0 to 730 days'
            USING ERRCODE = 'ZFA05';
    END IF;
    PERFORM fincore.billing_price_amount(scheme, unit_amount, tiers, 1);    -- ZFA05 for bad tiers
    PERFORM fincore.currency_exponent(currency);     -- ZF102 for an unknown currency
    IF external_id IS NOT NULL AND pg_catalog.length(external_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid external price id' USING ERRCODE = 'ZFA05', HINT = '1 to 255 characters.';
    END IF;
    INSERT INTO fincore.billing_prices (tenant_id, id, product_id, currency, unit_amount, scheme, tiers,
                                        interval_unit, interval_count, trial_days, external_id)
    VALUES (tenant, new_id, product_id, currency, unit_amount, scheme, tiers, interval_unit, interval_count,
            trial_days, external_id);
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_price(uuid, bigint, text, text, integer, text, integer, uuid, text, jsonb) IS
    'Creates an immutable price of a product: unit_amount minor units per interval (flat, or per seat), or tiers (tiered or volume: Stripe''s tiers, fincore.billing_price_amount), a currency, a trial; external_id is the price''s id at Stripe when Stripe bills it (apply_stripe_event). Tenant admins only (ZF803). ZFA05, ZFA06, ZF102.';

CREATE FUNCTION fincore.set_product_features(product_id uuid, features text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    bad text;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    PERFORM FROM fincore.billing_products x WHERE x.tenant_id = tenant AND x.id = product_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'product % not found', coalesce(product_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    SELECT f INTO bad FROM pg_catalog.unnest(features) f WHERE f IS NULL OR pg_catalog.length(f) NOT BETWEEN 1 AND 100 LIMIT 1;
    IF features IS NULL OR FOUND THEN
        RAISE EXCEPTION 'invalid feature %', coalesce(pg_catalog.quote_literal(bad), 'NULL')
            USING ERRCODE = 'ZFA05', HINT = 'A feature is a name of 1 to 100 characters.';
    END IF;
    DELETE FROM fincore.billing_features x WHERE x.tenant_id = tenant AND x.product_id = product_id
       AND x.feature <> ALL (features);
    INSERT INTO fincore.billing_features (tenant_id, product_id, feature)
    SELECT DISTINCT tenant, product_id, f FROM pg_catalog.unnest(features) f
    ON CONFLICT DO NOTHING;
END
$fn$;
COMMENT ON FUNCTION fincore.set_product_features(uuid, text[]) IS
    'Sets the features a product grants its subscribers (replacing the ones it had): what fincore.entitled(feature) checks. Tenant admins only (ZF803). ZFA05, ZFA06.';

-- Whether the current user may use a feature: for row level security policies of an app's own
-- tables, e.g. USING (NOT premium OR fincore.entitled('premium')).
CREATE FUNCTION fincore.entitled(feature text) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.tenant_id();
    who uuid := fincore.uid();
BEGIN
    IF tenant IS NULL OR who IS NULL OR feature IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT FROM fincore.subscriptions s
          JOIN fincore.billing_prices p ON p.tenant_id = tenant AND p.id = s.price_id
          JOIN fincore.billing_features f ON f.tenant_id = tenant AND f.product_id = p.product_id
         WHERE s.tenant_id = tenant AND s.subscriber = who AND f.feature = feature
           AND fincore.subscription_entitles(s.status));
END
$fn$;
COMMENT ON FUNCTION fincore.entitled(text) IS
    'Whether the current user (fincore.uid()) of the current tenant has a subscription whose status entitles (trialing, active, past_due) to a product granting the feature; false without a tenant or a user. For row level security policies.';

-- The tenant's subscription, locked; ZFA06 if there is none.
CREATE FUNCTION fincore._subscription_lock(tenant uuid, subscription_id uuid) RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    s fincore.subscriptions;
BEGIN
    SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.id = subscription_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', coalesce(subscription_id::text, 'NULL')
            USING ERRCODE = 'ZFA06', HINT = 'Subscriptions are visible only in their own tenant.';
    END IF;
    PERFORM fincore._billing_not_external(s);
    RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._subscription_lock(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._subscription_lock(uuid, uuid) IS 'Internal: the tenant''s subscription, locked FOR UPDATE (ZFA06 if none, ZFA12 if Stripe bills it).';

-- ZFA12 for a subscription Stripe bills: its events change it (apply_stripe_event), not fincore's functions.
CREATE FUNCTION fincore._billing_not_external(s fincore.subscriptions) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF s.external_id IS NOT NULL THEN
        RAISE EXCEPTION 'subscription % is billed by Stripe (%)', s.id, s.external_id
            USING ERRCODE = 'ZFA12', HINT = 'Change it at Stripe: its events update it here (fincore.apply_stripe_event).';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._billing_not_external(fincore.subscriptions) FROM PUBLIC;
COMMENT ON FUNCTION fincore._billing_not_external(fincore.subscriptions) IS 'Internal: ZFA12 if Stripe bills the subscription.';

CREATE FUNCTION fincore.create_subscription(customer_account uuid, price_id uuid, quantity integer DEFAULT 1,
        anchor timestamptz DEFAULT NULL, idempotency_key text DEFAULT NULL, id uuid DEFAULT NULL,
        subscriber uuid DEFAULT NULL)
    RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    price fincore.billing_prices;
    s fincore.subscriptions;
    per record;
    at timestamptz := pg_catalog.now();
BEGIN
    SELECT * INTO price FROM fincore.billing_prices x WHERE x.tenant_id = tenant AND x.id = price_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'price % not found', coalesce(price_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = customer_account AND a.currency = price.currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % not found in %', coalesce(customer_account::text, 'NULL'), price.currency
            USING ERRCODE = 'ZF301', HINT = 'The customer''s account is the tenant''s, in the price''s currency.';
    END IF;
    IF quantity IS NULL OR quantity < 1 OR (idempotency_key IS NOT NULL AND pg_catalog.length(idempotency_key) NOT BETWEEN 1 AND 255) THEN
        RAISE EXCEPTION 'invalid subscription: quantity >= 1, an idempotency key of 1 to 255 characters'
            USING ERRCODE = 'ZFA04';
    END IF;
    s.tenant_id := tenant;
    s.id := coalesce(id, fincore.uuidv7());
    s.idempotency_key := idempotency_key;
    s.customer_account := customer_account;
    s.price_id := price_id;
    s.quantity := quantity;
    s.anchor := coalesce(anchor, at);
    IF price.trial_days > 0 THEN
        s.status := 'trialing';
        s.trial_end := at + pg_catalog.make_interval(days => price.trial_days);
    ELSE
        s.status := 'incomplete';
    END IF;
    per := fincore.billing_period(s.anchor, price.interval_unit, price.interval_count, at);
    s.period_start := per.period_start;
    s.period_end := per.period_end;
    -- The first period from now: billed for what is left of it (nothing while trialing).
    s.billed_from := at;
    s.billed := CASE WHEN s.status = 'trialing' THEN 0
                     ELSE (fincore.proration(0, per.period_start, per.period_start, per.period_end,
                                             fincore._billing_amount(price, quantity), at)).debit END;
    s.cancel_at_period_end := false;
    s.subscriber := subscriber;
    s.lines := 1;
    s.created_at := at;
    s.updated_at := at;
    INSERT INTO fincore.subscriptions VALUES (s.*) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO s FROM fincore.subscriptions x
         WHERE x.tenant_id = tenant AND (x.idempotency_key = create_subscription.idempotency_key OR x.id = create_subscription.id)
         ORDER BY (x.idempotency_key = create_subscription.idempotency_key) DESC NULLS LAST LIMIT 1;
        IF s.price_id <> price_id OR s.quantity <> quantity OR s.customer_account <> customer_account
           OR s.idempotency_key IS DISTINCT FROM idempotency_key OR s.subscriber IS DISTINCT FROM subscriber THEN
            RAISE EXCEPTION 'subscription % exists with other fields', s.id
                USING ERRCODE = 'ZFA07', HINT = 'An idempotency key (or id) names one subscription.';
        END IF;
        RETURN s;
    END IF;
    INSERT INTO fincore.subscription_lines (tenant_id, subscription_id, line_no, kind, amount, price_id, quantity,
                                            span_start, span_end)
    VALUES (tenant, s.id, 1, 'period', s.billed, price_id, quantity, at, s.period_end);
    PERFORM fincore.emit('billing', 'subscription.created', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                       'price_id', price_id, 'quantity', quantity,
                                                       'period_end', s.period_end, 'billed', s.billed));
    IF s.status = 'incomplete' THEN
        -- The first invoice, at once, and its collection: active when it is paid; else it stays
        -- incomplete until pay_invoice, or expires after 23 hours (billing_run).
        s := fincore._invoice_and_collect(s, true);
        PERFORM fincore._subscription_save_status(s, 'incomplete');
    END IF;
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.create_subscription(uuid, uuid, integer, timestamptz, text, uuid, uuid) IS
    'Subscribes a customer account (and its subscriber, the user fincore.entitled() serves) to a price: trialing when the price has a trial, else its first invoice is made and collected at once (active when paid, incomplete until then). The period is the anchor''s (default now) that contains now, billed for what is left of it. Idempotent by idempotency_key (or id; ZFA07 with other fields). ZFA04, ZFA06, ZF301.';

-- The lines a change of price and/or quantity at `at` makes: the credit for what was billed for
-- the rest of the period, and the debit at the new price (none with proration_behavior none, or
-- for a change at the period's end).  Checks the change; writes nothing.
CREATE FUNCTION fincore._subscription_change_lines(s fincore.subscriptions, new_price fincore.billing_prices,
        new_quantity integer, at timestamptz, proration_behavior text, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    old_price fincore.billing_prices;
    r record;
BEGIN
    IF proration_behavior IS NULL OR proration_behavior NOT IN ('create_prorations', 'always_invoice', 'none') THEN
        RAISE EXCEPTION 'invalid proration behaviour %', coalesce(pg_catalog.quote_literal(proration_behavior), 'NULL')
            USING ERRCODE = 'ZFA04', HINT = 'create_prorations, always_invoice or none.';
    END IF;
    IF new_quantity IS NULL OR new_quantity < 1 THEN
        RAISE EXCEPTION 'invalid quantity %', coalesce(new_quantity::text, 'NULL') USING ERRCODE = 'ZFA04';
    END IF;
    SELECT * INTO old_price FROM fincore.billing_prices x WHERE x.tenant_id = s.tenant_id AND x.id = s.price_id;
    IF new_price.currency <> old_price.currency OR new_price.interval_unit <> old_price.interval_unit
       OR new_price.interval_count <> old_price.interval_count THEN
        RAISE EXCEPTION 'subscription %: a change keeps the currency and the interval (% % %, not % % %)', s.id,
                old_price.currency, old_price.interval_count, old_price.interval_unit,
                new_price.currency, new_price.interval_count, new_price.interval_unit
            USING ERRCODE = 'ZFA04', HINT = 'Cancel and create a new subscription to change them.';
    END IF;
    IF at < s.billed_from OR at > s.period_end THEN
        RAISE EXCEPTION 'subscription %: a change at % is outside its current period (from % to %)', s.id, at,
                s.billed_from, s.period_end
            USING ERRCODE = 'ZFA02';
    END IF;
    -- Nothing is left of the period at its end (nor after a change there, billed_from = period_end).
    IF proration_behavior = 'none' OR at = s.period_end THEN
        credit := 0;
        debit := 0;
        RETURN;
    END IF;
    r := fincore.proration(s.billed, s.billed_from, s.period_start, s.period_end,
                           CASE WHEN s.status = 'trialing' THEN 0 ELSE fincore._billing_amount(new_price, new_quantity) END,
                           at);
    credit := r.credit;
    debit := r.debit;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._subscription_change_lines(fincore.subscriptions, fincore.billing_prices, integer, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._subscription_change_lines(fincore.subscriptions, fincore.billing_prices, integer, timestamptz, text) IS
    'Internal: checks a change and returns its credit and debit (the same code for preview_change and change_subscription).';

-- The price a change names (the subscription's own when NULL); ZFA06 if the tenant has none.
CREATE FUNCTION fincore._billing_price(tenant uuid, price_id uuid) RETURNS fincore.billing_prices
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    p fincore.billing_prices;
BEGIN
    SELECT * INTO p FROM fincore.billing_prices x WHERE x.tenant_id = tenant AND x.id = price_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'price % not found', coalesce(price_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    RETURN p;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._billing_price(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._billing_price(uuid, uuid) IS 'Internal: the tenant''s price (ZFA06 if none).';

CREATE FUNCTION fincore.preview_change(subscription_id uuid, price_id uuid DEFAULT NULL, quantity integer DEFAULT NULL,
        at timestamptz DEFAULT NULL, proration_behavior text DEFAULT 'create_prorations',
        at_period_end boolean DEFAULT false, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions;
    r record;
BEGIN
    SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.id = subscription_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', coalesce(subscription_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    PERFORM fincore._billing_not_external(s);
    PERFORM fincore.subscription_transition(s.status, 'change');
    r := fincore._subscription_change_lines(s, fincore._billing_price(tenant, coalesce(price_id, s.price_id)),
                                            coalesce(quantity, s.quantity),
                                            CASE WHEN at_period_end THEN s.period_end ELSE coalesce(at, pg_catalog.now()) END,
                                            proration_behavior);
    credit := r.credit;
    debit := r.debit;
END
$fn$;
COMMENT ON FUNCTION fincore.preview_change(uuid, uuid, integer, timestamptz, text, boolean) IS
    'What change_subscription with the same arguments would bill, from the same code: the credit for the unused rest of what was billed and the debit at the new price (0 and 0 with proration_behavior none or at the period''s end). Writes nothing. ZFA02-ZFA06.';

CREATE FUNCTION fincore.change_subscription(subscription_id uuid, price_id uuid DEFAULT NULL, quantity integer DEFAULT NULL,
        at timestamptz DEFAULT NULL, proration_behavior text DEFAULT 'create_prorations',
        at_period_end boolean DEFAULT false, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    p fincore.billing_prices := fincore._billing_price(tenant, coalesce(price_id, s.price_id));
    q integer := coalesce(quantity, s.quantity);
    t timestamptz := CASE WHEN at_period_end THEN s.period_end ELSE coalesce(at, pg_catalog.now()) END;
    r record;
BEGIN
    s.status := fincore.subscription_transition(s.status, 'change');
    r := fincore._subscription_change_lines(s, p, q, t, proration_behavior);
    credit := r.credit;
    debit := r.debit;
    IF at_period_end THEN
        -- Scheduled: billing_run renews the subscription at the new price and quantity.
        UPDATE fincore.subscriptions x SET pending_price_id = p.id, pending_quantity = q, updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id;
    ELSIF proration_behavior = 'none' THEN
        -- What was billed stays as it was; the next period is billed at the new price.
        UPDATE fincore.subscriptions x SET price_id = p.id, quantity = q, pending_price_id = NULL,
               pending_quantity = NULL, updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id;
    ELSE
        INSERT INTO fincore.subscription_lines (tenant_id, subscription_id, line_no, kind, amount, price_id, quantity,
                                                span_start, span_end)
        VALUES (tenant, s.id, s.lines + 1, 'credit', credit, s.price_id, s.quantity, t, s.period_end),
               (tenant, s.id, s.lines + 2, 'debit', debit, p.id, q, t, s.period_end);
        s.price_id := p.id;
        s.quantity := q;
        s.billed := debit;
        s.billed_from := t;
        s.lines := s.lines + 2;
        IF proration_behavior = 'always_invoice' THEN
            s := fincore._invoice_and_collect(s, true);
        END IF;
        UPDATE fincore.subscriptions x
           SET status = s.status, price_id = s.price_id, quantity = s.quantity, billed = s.billed,
               billed_from = s.billed_from, lines = s.lines, pending_price_id = NULL, pending_quantity = NULL,
               updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id;
    END IF;
    PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status, 'price_id', p.id,
                                                       'quantity', q, 'credit', credit, 'debit', debit, 'at', t,
                                                       'proration_behavior', proration_behavior,
                                                       'at_period_end', at_period_end));
END
$fn$;
COMMENT ON FUNCTION fincore.change_subscription(uuid, uuid, integer, timestamptz, text, boolean) IS
    'Changes a subscription''s price and/or quantity at `at` (default now): with create_prorations a credit line for the unused rest of what was billed and a debit line at the new price, exactly what preview_change returned, for the next invoice; always_invoice invoices and collects them at once; none bills nothing now. at_period_end schedules the change for the renewal. ZFA02-ZFA06.';

-- pause, resume, cancel (now or at the period's end): the state machine's transitions, written.
CREATE FUNCTION fincore.update_subscription_status(subscription_id uuid, action text) RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    before text := s.status;
BEGIN
    IF action IS NULL OR action NOT IN ('pause', 'resume', 'cancel', 'cancel_at_period_end', 'uncancel') THEN
        RAISE EXCEPTION 'invalid subscription action %', coalesce(pg_catalog.quote_literal(action), 'NULL')
            USING ERRCODE = 'ZFA04',
                  HINT = 'pause, resume, cancel, cancel_at_period_end or uncancel; payments and dunning move the other statuses.';
    END IF;
    IF action IN ('cancel_at_period_end', 'uncancel') THEN
        -- Only a subscription that could be cancelled now can be at its period's end.
        PERFORM fincore.subscription_transition(s.status, 'cancel');
        s.cancel_at_period_end := action = 'cancel_at_period_end';
    ELSE
        s.status := fincore.subscription_transition(s.status, action);
        IF action = 'cancel' THEN
            s.cancel_at_period_end := false;
        END IF;
    END IF;
    UPDATE fincore.subscriptions x
       SET status = s.status, cancel_at_period_end = s.cancel_at_period_end, updated_at = pg_catalog.now()
     WHERE x.tenant_id = tenant AND x.id = s.id;
    PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                       'previous_status', before, 'action', action,
                                                       'cancel_at_period_end', s.cancel_at_period_end));
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.update_subscription_status(uuid, text) IS
    'Pauses, resumes or cancels a subscription now, or cancels it at its period''s end (cancel_at_period_end; uncancel undoes that), as the state machine allows (ZFA03 otherwise). ZFA04, ZFA06.';

-- A subscription's payment method: a provider of the payments module and the payer account it
-- charges.  NULL for both: invoices are collected from the customer's account alone.
CREATE FUNCTION fincore.set_payment_method(subscription_id uuid, provider text, payer_account uuid)
    RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    price fincore.billing_prices := fincore._billing_price(tenant, s.price_id);
    prov fincore.payment_providers;
    settlement_currency text;
    payer_currency text;
BEGIN
    IF (provider IS NULL) <> (payer_account IS NULL) THEN
        RAISE EXCEPTION 'invalid payment method: provider % and payer account %',
                coalesce(pg_catalog.quote_literal(provider), 'NULL'), coalesce(payer_account::text, 'NULL')
            USING ERRCODE = 'ZFA04', HINT = 'Both, or neither (invoices are then collected from the customer''s account alone).';
    END IF;
    IF provider IS NOT NULL THEN
        SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = provider;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'payment provider % not found', pg_catalog.quote_literal(provider)
                USING ERRCODE = 'ZF908', HINT = 'Create it with fincore.create_payment_provider().';
        END IF;
        SELECT a.currency INTO settlement_currency FROM fincore.accounts a
         WHERE a.tenant_id = tenant AND a.id = prov.settlement_account;
        SELECT a.currency INTO payer_currency FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = payer_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found', payer_account
                USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
        END IF;
        IF payer_currency <> price.currency OR settlement_currency <> price.currency THEN
            RAISE EXCEPTION 'payment method in % (payer) and % (provider %) for a subscription in %',
                    payer_currency, settlement_currency, provider, price.currency
                USING ERRCODE = 'ZF103';
        END IF;
    END IF;
    UPDATE fincore.subscriptions x SET payment_provider = provider, payment_account = payer_account,
                                       updated_at = pg_catalog.now()
     WHERE x.tenant_id = tenant AND x.id = s.id
    RETURNING * INTO s;
    PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                       'payment_provider', provider));
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.set_payment_method(uuid, text, uuid) IS
    'Sets (or, with NULLs, clears) a subscription''s payment method: its invoices use the customer''s credit balance first and charge the rest through the provider, from the payer account (authorize and capture, docs/payments.md). ZFA04, ZFA06, ZFA12, ZF908, ZF301, ZF103.';

-- ---------------------------------------------------------------------------
-- Invoices: a subscription's lines not invoiced yet, netted (credits first), posted to the
-- ledger as receivable <- revenue when the invoice is finalised, and paid by a transfer from
-- the customer's account to the receivable.  A net credit waits for the next invoice.  A failed
-- collection is retried by the tenant's dunning policy, each retry a job on the queue.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.billing_accounts (
    tenant_id          uuid NOT NULL,
    currency           text NOT NULL,
    receivable_account uuid NOT NULL,
    revenue_account    uuid NOT NULL,
    PRIMARY KEY (tenant_id, currency),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.billing_accounts IS
    'Where a tenant''s invoices post, per currency: the receivable (debited when an invoice is finalised, credited when it is paid) and the revenue account.';
SELECT fincore.protect('fincore.billing_accounts');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_accounts', '');

CREATE TABLE fincore.invoices (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    subscription_id  uuid        NOT NULL,
    customer_account uuid        NOT NULL,
    currency         text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
    total            bigint      NOT NULL CHECK (total >= 0),
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    transfer_id      uuid,                      -- receivable <- revenue (NULL while a draft)
    payment_transfer_id uuid,                   -- customer -> receivable (or settlement -> receivable)
    payment_id       uuid,                      -- the provider payment of the last attempt, if any
    void_transfer_id uuid,                      -- the reversal of transfer_id, when voided
    attempts         integer     NOT NULL DEFAULT 0,    -- failed collections
    next_attempt_at  timestamptz,               -- the dunning retry due, if any
    failure_code     text,                      -- the ledger's SQLSTATE, or the provider's code, at the last failure
    external_id      text,                      -- Stripe's invoice id: Stripe bills it, nothing is posted
    external_version bigint,                    -- the created time of the last Stripe event applied
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finalized_at     timestamptz,
    paid_at          timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, external_id),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES fincore.subscriptions (tenant_id, id),
    -- fincore's own invoices: more than nothing, posted once finalised; Stripe's are mirrored.
    CHECK (external_id IS NOT NULL OR (total > 0 AND CASE status WHEN 'draft' THEN transfer_id IS NULL
                                                                 WHEN 'void' THEN true
                                                                 ELSE transfer_id IS NOT NULL END))
);
COMMENT ON TABLE fincore.invoices IS
    'Invoices of subscriptions: their total (lines netted), status (invoice_transition), the ledger transfers that posted, paid or voided them, and their dunning state.';
SELECT fincore.protect('fincore.invoices');
SELECT pg_catalog.pg_extension_config_dump('fincore.invoices', '');

-- A tenant's dunning policy (none: the defaults of fincore.set_dunning_policy()).
CREATE TABLE fincore.dunning_policies (
    tenant_id          uuid        NOT NULL PRIMARY KEY,
    retry_intervals    interval[]  NOT NULL,    -- the wait before retry 1, 2, ...: at most 8
    hard_decline_codes text[]      NOT NULL,    -- ledger SQLSTATEs that end the retries at once
    on_exhausted       text        NOT NULL CHECK (on_exhausted IN ('cancel', 'unpaid')),
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    CHECK (pg_catalog.cardinality(retry_intervals) <= 8)
);
COMMENT ON TABLE fincore.dunning_policies IS
    'How a tenant retries a failed renewal payment: the waits between retries, the codes that stop them, and what the subscription becomes when they run out (canceled, or unpaid).';
SELECT fincore.protect('fincore.dunning_policies');
SELECT pg_catalog.pg_extension_config_dump('fincore.dunning_policies', '');

CREATE FUNCTION fincore.invoice_transition(status text, action text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_invoice_transition';
COMMENT ON FUNCTION fincore.invoice_transition(text, text) IS
    'The invoice state machine (C, Stripe''s rules): the status an action (finalize, pay, void, mark_uncollectible) leads to from a status (draft, open, paid, void, uncollectible). ZFA10 if not allowed, ZFA11 for an unknown status or action.';

CREATE FUNCTION fincore.set_billing_accounts(currency text, receivable_account uuid, revenue_account uuid)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    acc uuid;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    FOREACH acc IN ARRAY ARRAY[receivable_account, revenue_account] LOOP
        PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = acc AND a.currency = set_billing_accounts.currency;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found in %', coalesce(acc::text, 'NULL'), coalesce(currency, 'NULL')
                USING ERRCODE = 'ZF301', HINT = 'The receivable and revenue accounts are the tenant''s, in the currency.';
        END IF;
    END LOOP;
    INSERT INTO fincore.billing_accounts (tenant_id, currency, receivable_account, revenue_account)
    VALUES (tenant, currency, receivable_account, revenue_account)
    ON CONFLICT ON CONSTRAINT billing_accounts_pkey DO UPDATE
       SET receivable_account = excluded.receivable_account, revenue_account = excluded.revenue_account;
END
$fn$;
COMMENT ON FUNCTION fincore.set_billing_accounts(text, uuid, uuid) IS
    'Sets where the tenant''s invoices in a currency post: the receivable and the revenue account. Tenant admins only (ZF803). ZF301.';

CREATE FUNCTION fincore.set_dunning_policy(
        retry_intervals interval[] DEFAULT '{1 day, 3 days, 5 days, 7 days}',
        on_exhausted text DEFAULT 'cancel', hard_decline_codes text[] DEFAULT '{ZF306, ZF307}')
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF retry_intervals IS NULL OR pg_catalog.cardinality(retry_intervals) > 8
       OR EXISTS (SELECT FROM pg_catalog.unnest(retry_intervals) i
                   WHERE i IS NULL OR i OPERATOR(pg_catalog.<=) '0'::interval OR i OPERATOR(pg_catalog.>) '60 days'::interval) THEN
        RAISE EXCEPTION 'invalid retry schedule %', coalesce(retry_intervals::text, 'NULL')
            USING ERRCODE = 'ZFA09', HINT = 'At most 8 waits, each more than 0 and at most 60 days.';
    END IF;
    IF on_exhausted IS NULL OR on_exhausted NOT IN ('cancel', 'unpaid') THEN
        RAISE EXCEPTION 'invalid outcome of exhausted retries %', coalesce(pg_catalog.quote_literal(on_exhausted), 'NULL')
            USING ERRCODE = 'ZFA09', HINT = 'cancel (the subscription is canceled) or unpaid (it is kept, without entitlements).';
    END IF;
    IF hard_decline_codes IS NULL OR EXISTS (SELECT FROM pg_catalog.unnest(hard_decline_codes) c
                                              WHERE c IS NULL OR c !~ '^[0-9A-Za-z_]{1,64}$') THEN
        RAISE EXCEPTION 'invalid hard decline codes %', coalesce(hard_decline_codes::text, 'NULL')
            USING ERRCODE = 'ZFA09',
                  HINT = 'SQLSTATEs the ledger refuses a payment with, e.g. ZF306 (frozen), or a provider''s decline codes, e.g. stolen_card.';
    END IF;
    INSERT INTO fincore.dunning_policies (tenant_id, retry_intervals, hard_decline_codes, on_exhausted)
    VALUES (tenant, retry_intervals, hard_decline_codes, on_exhausted)
    ON CONFLICT ON CONSTRAINT dunning_policies_pkey DO UPDATE
       SET retry_intervals = excluded.retry_intervals, hard_decline_codes = excluded.hard_decline_codes,
           on_exhausted = excluded.on_exhausted, updated_at = pg_catalog.now();
END
$fn$;
COMMENT ON FUNCTION fincore.set_dunning_policy(interval[], text, text[]) IS
    'Sets the tenant''s dunning policy: the waits before each retry of a failed renewal payment (at most 8), what the subscription becomes when they run out (cancel or unpaid), and the codes that stop the retries at once (the ledger''s SQLSTATEs, or a provider''s decline codes). Without one, the defaults apply. Tenant admins only (ZF803). ZFA09.';

-- Invoice the subscription's lines not invoiced yet (the subscription locked by the caller):
-- a draft, or finalised (posted as receivable <- revenue); NULL when they net to nothing or a
-- credit.
CREATE FUNCTION fincore._invoice_lines(s fincore.subscriptions, finalize boolean) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    inv fincore.invoices;
    cur text;
BEGIN
    SELECT p.currency INTO cur FROM fincore.billing_prices p WHERE p.tenant_id = s.tenant_id AND p.id = s.price_id;
    SELECT coalesce(sum(CASE WHEN l.kind = 'credit' THEN -l.amount ELSE l.amount END), 0)
      INTO inv.total FROM fincore.subscription_lines l
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.invoice_id IS NULL;
    IF inv.total <= 0 THEN
        RETURN NULL;    -- nothing owed: a credit waits for the next invoice
    END IF;
    inv.tenant_id := s.tenant_id;
    inv.id := fincore.uuidv7();
    inv.subscription_id := s.id;
    inv.customer_account := s.customer_account;
    inv.currency := cur;
    inv.status := 'draft';
    inv.period_start := s.period_start;
    inv.period_end := s.period_end;
    inv.attempts := 0;
    inv.created_at := pg_catalog.now();
    INSERT INTO fincore.invoices VALUES (inv.*);
    UPDATE fincore.subscription_lines l SET invoice_id = inv.id
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.invoice_id IS NULL;
    PERFORM fincore.emit('billing', 'invoice.created', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id,
                                                       'total', inv.total, 'currency', cur));
    IF finalize THEN
        inv := fincore._finalize_invoice(inv);
    END IF;
    RETURN inv;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_lines(fincore.subscriptions, boolean) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_lines(fincore.subscriptions, boolean) IS
    'Internal: invoices a subscription''s open lines (a draft, or finalised), or returns NULL when they net to nothing or a credit.';

-- A draft finalised: posted as receivable <- revenue, open.
CREATE FUNCTION fincore._finalize_invoice(inv fincore.invoices) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    acc fincore.billing_accounts;
BEGIN
    inv.status := fincore.invoice_transition(inv.status, 'finalize');
    SELECT * INTO acc FROM fincore.billing_accounts b WHERE b.tenant_id = inv.tenant_id AND b.currency = inv.currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no billing accounts for % in tenant %', inv.currency, inv.tenant_id
            USING ERRCODE = 'ZFA06', HINT = 'Set them with fincore.set_billing_accounts().';
    END IF;
    inv.transfer_id := (fincore.transfer(acc.receivable_account, acc.revenue_account, inv.total,
                                         id => fincore._payment_transfer_id(inv.id, 0, 'invoice'),
                                         metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id,
                                                                                   'subscription_id', inv.subscription_id))).id;
    inv.finalized_at := pg_catalog.now();
    UPDATE fincore.invoices x SET status = inv.status, transfer_id = inv.transfer_id, finalized_at = inv.finalized_at
     WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
    PERFORM fincore.emit('billing', 'invoice.finalized', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', inv.subscription_id,
                                                       'total', inv.total, 'transfer_id', inv.transfer_id));
    RETURN inv;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._finalize_invoice(fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._finalize_invoice(fincore.invoices) IS
    'Internal: finalises a draft invoice: posts receivable <- revenue and makes it open.';

-- An invoice paid by the transfer tid: the invoice paid, the subscription active
-- (payment_succeeded); s.status moves, the caller writes it.
CREATE FUNCTION fincore._invoice_paid(INOUT s fincore.subscriptions, inv fincore.invoices, tid uuid)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    inv.status := fincore.invoice_transition(inv.status, 'pay');
    UPDATE fincore.invoices x
       SET status = inv.status, payment_transfer_id = tid, paid_at = pg_catalog.now(), next_attempt_at = NULL
     WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
    IF s.status IN ('incomplete', 'active', 'past_due', 'unpaid') THEN
        s.status := fincore.subscription_transition(s.status, 'payment_succeeded');
    END IF;
    PERFORM fincore.emit('billing', 'invoice.paid', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id, 'total', inv.total,
                                                       'attempts', inv.attempts + 1));
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_paid(fincore.subscriptions, fincore.invoices, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_paid(fincore.subscriptions, fincore.invoices, uuid) IS
    'Internal: records an invoice''s payment and moves the subscription''s status (payment_succeeded).';

-- A collection the ledger refused with code (ZF304-ZF307): the failed attempt counted, and
-- dunning: the retry scheduled as a job, or the retries ended by the policy.  s.status moves,
-- the caller writes it.
CREATE FUNCTION fincore._invoice_payment_failed(INOUT s fincore.subscriptions, inv fincore.invoices, code text)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    pol fincore.dunning_policies;
    exhausted boolean;
BEGIN
    inv.attempts := inv.attempts + 1;
    inv.failure_code := code;
    inv.next_attempt_at := NULL;
    IF s.status IN ('active', 'past_due') THEN
        s.status := fincore.subscription_transition(s.status, 'payment_failed');
    END IF;
    IF s.status = 'past_due' THEN
        -- Dunning: retry after the policy's next wait, or stop (a hard decline, or no waits left).
        SELECT * INTO pol FROM fincore.dunning_policies d WHERE d.tenant_id = inv.tenant_id;
        IF NOT FOUND THEN
            pol.retry_intervals := '{1 day, 3 days, 5 days, 7 days}';
            pol.hard_decline_codes := '{ZF306, ZF307}';
            pol.on_exhausted := 'cancel';
        END IF;
        exhausted := code = ANY (pol.hard_decline_codes)
                     OR inv.attempts > pg_catalog.cardinality(pol.retry_intervals);
        IF exhausted THEN
            s.status := fincore.subscription_transition(s.status, 'retries_exhausted_' || pol.on_exhausted);
            IF pol.on_exhausted = 'cancel' AND inv.status = 'open' THEN
                inv.status := fincore.invoice_transition(inv.status, 'mark_uncollectible');
            END IF;
        ELSE
            inv.next_attempt_at := pg_catalog.now() + pol.retry_intervals[inv.attempts];
            PERFORM fincore.enqueue('billing:dunning',
                                    pg_catalog.jsonb_build_object('invoice_id', inv.id, 'attempt', inv.attempts),
                                    run_at => inv.next_attempt_at,
                                    unique_key => inv.id::text || ':' || inv.attempts::text);
        END IF;
    END IF;
    UPDATE fincore.invoices x
       SET status = inv.status, attempts = inv.attempts, failure_code = inv.failure_code,
           next_attempt_at = inv.next_attempt_at
     WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
    PERFORM fincore.emit('billing', 'invoice.payment_failed', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id,
                                                       'total', inv.total, 'code', code, 'attempts', inv.attempts,
                                                       'next_attempt_at', inv.next_attempt_at,
                                                       'subscription_status', s.status));
    IF inv.status = 'uncollectible' THEN
        PERFORM fincore.emit('billing', 'invoice.marked_uncollectible', 'invoice', inv.id::text,
                             pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id));
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_payment_failed(fincore.subscriptions, fincore.invoices, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_payment_failed(fincore.subscriptions, fincore.invoices, text) IS
    'Internal: records a refused collection and runs dunning (a retry job, or the policy''s outcome); moves the subscription''s status.';

-- The id of an invoice's attempt n to collect it: a refused attempt's id stays failed in a batch
-- (id_already_failed), so each attempt has its own; a replay of one attempt is "exists".
CREATE FUNCTION fincore._invoice_payment_id(inv fincore.invoices) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        SELECT fincore._payment_transfer_id(inv.id, inv.attempts OPERATOR(pg_catalog.+) 1, 'payment');
    END;
REVOKE ALL ON FUNCTION fincore._invoice_payment_id(fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_payment_id(fincore.invoices) IS
    'Internal: the ledger transfer id of an invoice''s next collection attempt.';

-- Collect an open (or uncollectible) invoice from the customer's account: paid, or a refused
-- attempt that dunning retries.  With a payment method, what the customer's credit does not
-- cover is charged through the payments module instead: the credit is held, a payment is
-- created and confirmed, and the invoice stays open until the provider answers
-- (fincore._invoice_payment_result).  Moves s.status; the caller writes it.
CREATE FUNCTION fincore._collect_invoice(INOUT s fincore.subscriptions, inv fincore.invoices, OUT paid boolean,
                                         OUT pending boolean)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    acc fincore.billing_accounts;
    tid uuid;
    code text;
    credit bigint := inv.total;
    attempt integer := inv.attempts + 1;
    credit_hold uuid;
    pay fincore.payments;
BEGIN
    pending := false;
    SELECT * INTO acc FROM fincore.billing_accounts b WHERE b.tenant_id = inv.tenant_id AND b.currency = inv.currency;
    IF s.payment_provider IS NOT NULL THEN
        -- The customer's credit balance goes first; the provider is charged the rest.
        SELECT LEAST(inv.total, GREATEST(0, b.posted - b.debits_pending)) INTO credit
          FROM fincore.balance(inv.customer_account) b;
    END IF;
    BEGIN
        IF credit = inv.total THEN
            tid := (fincore.transfer(inv.customer_account, acc.receivable_account, inv.total,
                                     id => fincore._invoice_payment_id(inv),
                                     metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id))).id;
            paid := true;
        ELSE
            IF credit > 0 THEN
                credit_hold := (fincore.transfer(inv.customer_account, acc.receivable_account, credit,
                                                 id => fincore._payment_transfer_id(inv.id, attempt, 'credit'),
                                                 pending => true,
                                                 metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id))).id;
            END IF;
            pay := fincore.create_payment(inv.total - credit, inv.currency, s.payment_provider,
                                          payer_account => s.payment_account, confirm => true,
                                          metadata => pg_catalog.jsonb_build_object(
                                              'invoice_id', inv.id, 'subscription_id', s.id, 'attempt', attempt,
                                              'credit', credit, 'credit_hold', credit_hold));
            UPDATE fincore.invoices x SET payment_id = pay.id WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
            paid := false;
            pending := true;
            RETURN;
        END IF;
    EXCEPTION WHEN SQLSTATE 'ZF304' OR SQLSTATE 'ZF305' OR SQLSTATE 'ZF306' OR SQLSTATE 'ZF307' THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE;
        paid := false;
    END;
    IF paid THEN
        s := fincore._invoice_paid(s, inv, tid);
    ELSE
        s := fincore._invoice_payment_failed(s, inv, code);
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._collect_invoice(fincore.subscriptions, fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._collect_invoice(fincore.subscriptions, fincore.invoices) IS
    'Internal: pays an invoice from the customer''s account (customer -> receivable), or, with a payment method, holds the customer''s credit and charges the rest through the payments module (pending: the provider answers later); or records the failed attempt and schedules its dunning retry (or ends the retries); moves the subscription''s status.';

-- Whether an invoice has a provider payment in flight: no other attempt starts meanwhile.
CREATE FUNCTION fincore._invoice_payment_in_flight(inv fincore.invoices) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    -- PL/pgSQL, not SQL: Citus cannot plan a SQL function's parameters (one shard, by tenant).
    IF inv.payment_id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM FROM fincore.payments p
     WHERE p.tenant_id = inv.tenant_id AND p.id = inv.payment_id
       AND p.status IN ('requires_confirmation', 'processing', 'requires_action', 'requires_capture');
    RETURN FOUND;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_payment_in_flight(fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_payment_in_flight(fincore.invoices) IS
    'Internal: whether the invoice''s provider payment still waits for the provider.';

-- The provider's answer to an invoice's payment (called by the payments module when a payment
-- whose metadata names an invoice is captured or fails): the held credit posted and the
-- settlement moved to the receivable, and the invoice paid; or the credit released and the
-- attempt failed, which dunning retries.  Only the invoice's own payment counts (invoices.payment_id:
-- anyone's metadata may name an invoice).  An invoice no longer payable meanwhile changes nothing:
-- a captured payment is reported as invoice.payment_unapplied, for a refund or reconciliation.
CREATE FUNCTION fincore._invoice_payment_result(p fincore.payments, succeeded boolean, code text) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    invoice_id uuid := (p.metadata OPERATOR(pg_catalog.->>) 'invoice_id')::uuid;
    attempt integer := (p.metadata OPERATOR(pg_catalog.->>) 'attempt')::integer;
    credit_hold uuid := (p.metadata OPERATOR(pg_catalog.->>) 'credit_hold')::uuid;
    l record;
    s fincore.subscriptions;
    before text;
    inv fincore.invoices;
    acc fincore.billing_accounts;
    tid uuid;
BEGIN
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = p.tenant_id AND x.id = invoice_id;
    IF NOT FOUND THEN
        RETURN;     -- not an invoice's payment (its metadata names no invoice of the tenant)
    END IF;
    l := fincore._invoice_lock(p.tenant_id, invoice_id);
    s := l.s;
    before := s.status;
    inv := l.inv;
    IF inv.payment_id IS DISTINCT FROM p.id THEN
        RETURN;     -- not the invoice's payment: its metadata merely names the invoice
    END IF;
    IF inv.status NOT IN ('open', 'uncollectible') THEN
        IF succeeded THEN
            PERFORM fincore.emit('billing', 'invoice.payment_unapplied', 'invoice', inv.id::text,
                                 pg_catalog.jsonb_build_object('invoice_id', inv.id, 'payment_id', p.id,
                                                               'amount', p.captured, 'status', inv.status));
        END IF;
        RETURN;
    END IF;
    IF succeeded THEN
        SELECT * INTO acc FROM fincore.billing_accounts b WHERE b.tenant_id = inv.tenant_id AND b.currency = inv.currency;
        IF credit_hold IS NOT NULL THEN
            PERFORM fincore.post_pending(credit_hold, NULL, fincore._payment_transfer_id(inv.id, attempt, 'credit_post'));
        END IF;
        tid := (fincore.transfer(p.settlement_account, acc.receivable_account, p.captured,
                                 id => fincore._payment_transfer_id(inv.id, attempt, 'payment'),
                                 metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id, 'payment_id', p.id))).id;
        s := fincore._invoice_paid(s, inv, tid);
    ELSE
        IF credit_hold IS NOT NULL THEN
            PERFORM fincore.void_pending(credit_hold, fincore._payment_transfer_id(inv.id, attempt, 'credit_void'));
        END IF;
        s := fincore._invoice_payment_failed(s, inv, coalesce(code, 'payment_failed'));
    END IF;
    PERFORM fincore._subscription_save_status(s, before);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_payment_result(fincore.payments, boolean, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_payment_result(fincore.payments, boolean, text) IS
    'Internal: applies the provider''s answer to an invoice''s payment: paid (credit posted, settlement -> receivable), or a failed attempt that dunning retries (credit released); a payment no longer the invoice''s changes nothing but emits invoice.payment_unapplied if captured.';

-- Invoice the subscription's open lines and, when finalised, collect the invoice.
CREATE FUNCTION fincore._invoice_and_collect(s fincore.subscriptions, finalize boolean) RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    inv fincore.invoices := fincore._invoice_lines(s, finalize);
BEGIN
    IF inv.id IS NOT NULL AND inv.status = 'open' THEN
        s := (fincore._collect_invoice(s, inv)).s;
    END IF;
    RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_and_collect(fincore.subscriptions, boolean) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_and_collect(fincore.subscriptions, boolean) IS
    'Internal: invoices a subscription''s open lines and collects the invoice when it is finalised; returns the subscription with its new status.';

-- The tenant's invoice, with its subscription locked first (every writer of an invoice holds
-- its subscription's lock); ZFA06 if there is none.
CREATE FUNCTION fincore._invoice_lock(tenant uuid, invoice_id uuid, OUT s fincore.subscriptions,
                                      OUT inv fincore.invoices)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % not found', coalesce(invoice_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    s := fincore._subscription_lock(tenant, inv.subscription_id);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_lock(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_lock(uuid, uuid) IS
    'Internal: the tenant''s invoice as it is under its subscription''s lock (ZFA06 if none).';

CREATE FUNCTION fincore._subscription_save_status(s fincore.subscriptions, before text) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF s.status IS DISTINCT FROM before THEN
        UPDATE fincore.subscriptions x SET status = s.status, updated_at = pg_catalog.now()
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
        PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                             pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                           'previous_status', before));
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._subscription_save_status(fincore.subscriptions, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._subscription_save_status(fincore.subscriptions, text) IS
    'Internal: writes a subscription''s new status and emits subscription.updated, if it changed.';

CREATE FUNCTION fincore.create_invoice(subscription_id uuid, finalize boolean DEFAULT true) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    before text := s.status;
    inv fincore.invoices;
BEGIN
    IF finalize IS NULL THEN
        RAISE EXCEPTION 'invalid invoice: finalize is true or false' USING ERRCODE = 'ZFA11';
    END IF;
    inv := fincore._invoice_lines(s, finalize);
    IF inv.status = 'open' THEN
        s := (fincore._collect_invoice(s, inv)).s;
        PERFORM fincore._subscription_save_status(s, before);
    END IF;
    IF inv.id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = inv.id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.create_invoice(uuid, boolean) IS
    'Invoices a subscription''s lines not invoiced yet, now: a draft (finalize => false), or finalised, posted and collected at once (the dunning policy retries a refusal). NULL when they net to nothing or a credit. ZFA06, ZFA11.';

CREATE FUNCTION fincore.finalize_invoice(invoice_id uuid) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    l record := fincore._invoice_lock(tenant, invoice_id);
    s fincore.subscriptions := l.s;
    before text := s.status;
    inv fincore.invoices := l.inv;
BEGIN
    IF inv.status <> 'draft' AND inv.finalized_at IS NOT NULL THEN
        RETURN inv;     -- finalised already: a replay
    END IF;
    inv := fincore._finalize_invoice(inv);
    s := (fincore._collect_invoice(s, inv)).s;
    PERFORM fincore._subscription_save_status(s, before);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.finalize_invoice(uuid) IS
    'Finalises a draft invoice: posts it (receivable <- revenue) and collects it. A finalised invoice is returned as it is. ZFA06, ZFA10 (a voided draft).';

CREATE FUNCTION fincore.pay_invoice(invoice_id uuid) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    l record := fincore._invoice_lock(tenant, invoice_id);
    s fincore.subscriptions := l.s;
    before text := s.status;
    inv fincore.invoices := l.inv;
    r record;
BEGIN
    IF inv.status IN ('paid', 'void') THEN
        RETURN inv;     -- paid (or voided) already: a replay
    END IF;
    IF inv.status = 'draft' THEN
        RAISE EXCEPTION 'invoice % is a draft', inv.id
            USING ERRCODE = 'ZFA10', HINT = 'Finalise it with fincore.finalize_invoice(), which collects it.';
    END IF;
    IF fincore._invoice_payment_in_flight(inv) THEN
        RETURN inv;     -- the provider's answer to the payment in flight settles it
    END IF;
    -- The customer's own attempt: a refusal writes nothing and leaves the dunning as it was.
    r := fincore._collect_invoice(s, inv);
    IF NOT r.paid AND NOT r.pending THEN
        RAISE EXCEPTION 'invoice % could not be paid from account %', inv.id, inv.customer_account
            USING ERRCODE = 'ZFA08', HINT = 'The ledger refused the payment (funds, or a frozen or closed account).';
    END IF;
    PERFORM fincore._subscription_save_status(r.s, before);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.pay_invoice(uuid) IS
    'Pays an open or uncollectible invoice from its customer''s account (with a payment method: its credit, and a payment through the provider for the rest, which settles the invoice when the provider answers); the subscription becomes active (payment_succeeded) and the invoice''s dunning retries stop. A paid or void invoice, or one with a payment in flight, is returned as it is. ZFA06, ZFA08, ZFA10 (a draft).';

-- Void an invoice (its posting reversed): the lines it took stay with it.
CREATE FUNCTION fincore._void_invoice(inv fincore.invoices) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF fincore._invoice_payment_in_flight(inv) THEN
        RAISE EXCEPTION 'invoice % has payment % in flight', inv.id, inv.payment_id
            USING ERRCODE = 'ZFA10', HINT = 'Void it once the provider has answered (the payment''s step deadline bounds the wait).';
    END IF;
    inv.status := fincore.invoice_transition(inv.status, 'void');
    IF inv.transfer_id IS NOT NULL THEN
        inv.void_transfer_id := (fincore.reverse_transfer(inv.transfer_id, NULL,
                                                 fincore._payment_transfer_id(inv.id, 0, 'void'))).id;
    END IF;
    inv.next_attempt_at := NULL;
    UPDATE fincore.invoices x SET status = inv.status, void_transfer_id = inv.void_transfer_id, next_attempt_at = NULL
     WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
    PERFORM fincore.emit('billing', 'invoice.voided', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', inv.subscription_id,
                                                       'total', inv.total, 'void_transfer_id', inv.void_transfer_id));
    RETURN inv;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._void_invoice(fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._void_invoice(fincore.invoices) IS
    'Internal: voids an invoice: its receivable <- revenue posting reversed, its retries stopped.';

CREATE FUNCTION fincore.update_invoice_status(invoice_id uuid, action text) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    l record;
    inv fincore.invoices;
BEGIN
    IF action IS NULL OR action NOT IN ('void', 'mark_uncollectible') THEN
        RAISE EXCEPTION 'invalid invoice action %', coalesce(pg_catalog.quote_literal(action), 'NULL')
            USING ERRCODE = 'ZFA11', HINT = 'void or mark_uncollectible; finalize_invoice and pay_invoice do the others.';
    END IF;
    l := fincore._invoice_lock(tenant, invoice_id);
    inv := l.inv;
    IF action = 'void' THEN
        inv := fincore._void_invoice(inv);
    ELSE
        inv.status := fincore.invoice_transition(inv.status, action);
        UPDATE fincore.invoices x SET status = inv.status, next_attempt_at = NULL
         WHERE x.tenant_id = tenant AND x.id = inv.id;
        PERFORM fincore.emit('billing', 'invoice.marked_uncollectible', 'invoice', inv.id::text,
                             pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', inv.subscription_id));
    END IF;
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.update_invoice_status(uuid, text) IS
    'Voids an invoice (a draft, or a finalised one whose posting is then reversed) or marks an open one uncollectible; either stops its dunning retries. As the invoice state machine allows (ZFA10 otherwise). ZFA06, ZFA11.';

-- A dunning retry (the job billing:dunning carries invoice_id and attempt): collects the invoice
-- again, unless it was paid, voided or retried meanwhile (then a no-op).
CREATE FUNCTION fincore.retry_invoice(invoice_id uuid, attempt integer DEFAULT NULL) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    l record := fincore._invoice_lock(tenant, invoice_id);
    s fincore.subscriptions := l.s;
    before text := s.status;
    inv fincore.invoices := l.inv;
BEGIN
    IF inv.status <> 'open' OR s.status <> 'past_due' OR (attempt IS NOT NULL AND attempt <> inv.attempts)
       OR fincore._invoice_payment_in_flight(inv) THEN
        RETURN inv;
    END IF;
    s := (fincore._collect_invoice(s, inv)).s;
    PERFORM fincore._subscription_save_status(s, before);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.retry_invoice(uuid, integer) IS
    'A dunning retry of an open invoice of a past_due subscription: collects it again (paid: the subscription is active; refused: the next retry is scheduled, or the policy''s outcome applies; with a payment method, the provider''s answer decides). A no-op when the invoice was paid, voided or retried meanwhile, or has a payment in flight (attempt is the job''s). Trusted roles. ZFA06.';

-- The dunning worker in the database: claims billing:dunning jobs, retries their invoices in
-- their tenants, completes them.
CREATE FUNCTION fincore.dunning_run(max_jobs integer DEFAULT 100) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    saved text := pg_catalog.current_setting('fincore.tenant', true);
    j fincore.job;
    n integer := 0;
BEGIN
    FOR j IN SELECT * FROM fincore.dequeue('billing:dunning', max_jobs, '5 minutes', 'fincore.dunning_run') LOOP
        PERFORM fincore._use_tenant(j.tenant_id);
        PERFORM fincore.retry_invoice((j.payload ->> 'invoice_id')::uuid, (j.payload ->> 'attempt')::integer);
        PERFORM fincore.complete(j.id, NULL, j.attempt);
        n := n + 1;
    END LOOP;
    PERFORM fincore._use_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.dunning_run(integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore.dunning_run(integer) IS
    'Runs up to max_jobs due dunning retries (jobs of queue billing:dunning): each retries its invoice (retry_invoice) in its tenant and completes. Returns how many ran.';

CREATE FUNCTION fincore.dunning_run_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.dunning_run(100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.dunning_run_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.dunning_run_step(interval) IS
    'Maintenance step: dunning_run in batches of 100 until none is due or the budget is spent.';

-- Renew the tenant's subscriptions ids (locked by the caller, due, neither incomplete nor set to
-- cancel): the next period of each, at a price and quantity scheduled for it if any, billed in
-- full as a period line; then an invoice per subscription whose open lines net to more than
-- nothing, finalised; both legs of every invoice (receivable <- revenue, customer ->
-- receivable) in one create_transfers call; paid invoices and the refused ones' dunning.  One
-- statement per table for the whole batch, not per subscription.  Returns the invoices.
CREATE FUNCTION fincore._renew_subscriptions(t uuid, ids uuid[]) RETURNS fincore.invoices[]
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    invs fincore.invoices[];
    leg_ids uuid[];
    leg_results text[];
    currencies text[];
    receivables uuid[];
    revenues uuid[];
    inv_ids uuid[];
    missing text;
    s fincore.subscriptions;
    before text;
    code text;
BEGIN
    -- The next periods, and their lines.
    WITH nxt AS (
        SELECT x.id, p.id AS price_id, coalesce(x.pending_quantity, x.quantity) AS quantity,
               per.period_start, per.period_end,
               fincore.billing_price_amount(p.scheme, p.unit_amount, p.tiers,
                                            coalesce(x.pending_quantity, x.quantity)) AS billed,
               CASE WHEN x.status = 'trialing' THEN fincore.subscription_transition(x.status, 'trial_ended')
                    ELSE x.status END AS status
          FROM fincore.subscriptions x
          JOIN fincore.billing_prices p ON p.tenant_id = t AND p.id = coalesce(x.pending_price_id, x.price_id)
         CROSS JOIN LATERAL fincore.billing_period(x.anchor, p.interval_unit, p.interval_count, x.period_end) per
         WHERE x.tenant_id = t AND x.id = ANY (ids)),
    upd AS (
        UPDATE fincore.subscriptions x
           SET price_id = nxt.price_id, quantity = nxt.quantity, pending_price_id = NULL, pending_quantity = NULL,
               period_start = nxt.period_start, period_end = nxt.period_end, billed = nxt.billed,
               billed_from = nxt.period_start, lines = x.lines + 1, status = nxt.status,
               updated_at = pg_catalog.now()
          FROM nxt
         WHERE x.tenant_id = t AND x.id = nxt.id
        RETURNING x.id, x.lines, x.billed, x.price_id, x.quantity, x.period_start, x.period_end)
    INSERT INTO fincore.subscription_lines (tenant_id, subscription_id, line_no, kind, amount, price_id, quantity,
                                            span_start, span_end)
    SELECT t, u.id, u.lines, 'period', u.billed, u.price_id, u.quantity, u.period_start, u.period_end FROM upd u;

    -- The invoices: each subscription's open lines netted, finalised at once.  (Each statement
    -- below reads or writes the tenant's rows alone, by arrays: on Citus, one shard's.)
    SELECT pg_catalog.array_agg(ROW(t, fincore.uuidv7(), x.id, x.customer_account, p.currency,
                                    fincore.invoice_transition('draft', 'finalize'), net.total::bigint,
                                    x.period_start, x.period_end, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL,
                                    pg_catalog.now(), pg_catalog.now(), NULL)::fincore.invoices ORDER BY x.id)
      INTO invs
      FROM (SELECT l.subscription_id, sum(CASE WHEN l.kind = 'credit' THEN -l.amount ELSE l.amount END) AS total
              FROM fincore.subscription_lines l
             WHERE l.tenant_id = t AND l.subscription_id = ANY (ids) AND l.invoice_id IS NULL
             GROUP BY l.subscription_id) net
      JOIN fincore.subscriptions x ON x.tenant_id = t AND x.id = net.subscription_id
      JOIN fincore.billing_prices p ON p.tenant_id = t AND p.id = x.price_id
     WHERE net.total > 0;
    IF invs IS NULL THEN
        RETURN '{}';
    END IF;
    SELECT pg_catalog.array_agg(b.currency), pg_catalog.array_agg(b.receivable_account),
           pg_catalog.array_agg(b.revenue_account)
      INTO currencies, receivables, revenues
      FROM fincore.billing_accounts b WHERE b.tenant_id = t;
    SELECT i.currency INTO missing FROM unnest(invs) i
     WHERE pg_catalog.array_position(currencies, i.currency) IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'no billing accounts for % in tenant %', missing, t
            USING ERRCODE = 'ZFA06', HINT = 'Set them with fincore.set_billing_accounts().';
    END IF;

    -- The ledger: every invoice's posting and its collection, in one batch.  The ledger makes
    -- the ids (a renewal is billed once by its subscription's lock, not by a transfer id), which
    -- spares the batch the look-up of ids it was given.
    SELECT pg_catalog.array_agg(c.id ORDER BY c.index), pg_catalog.array_agg(c.result ORDER BY c.index)
      INTO leg_ids, leg_results
      FROM fincore.create_transfers(ARRAY(
               SELECT ROW(NULL,
                          CASE WHEN leg.k = 1 THEN receivables[a.pos] ELSE i.customer_account END,
                          CASE WHEN leg.k = 1 THEN revenues[a.pos] ELSE receivables[a.pos] END,
                          i.total, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                          CASE WHEN leg.k = 1
                               THEN pg_catalog.jsonb_build_object('invoice_id', i.id, 'subscription_id', i.subscription_id)
                               ELSE pg_catalog.jsonb_build_object('invoice_id', i.id) END,
                          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request
                 FROM pg_catalog.generate_subscripts(invs, 1) g(ord)
                CROSS JOIN LATERAL (SELECT (invs[g.ord]).*) i
                CROSS JOIN LATERAL (SELECT pg_catalog.array_position(currencies, i.currency) AS pos) a
                CROSS JOIN (VALUES (1), (2)) leg(k)
                ORDER BY g.ord, leg.k)) c;
    FOR k IN 1 .. pg_catalog.cardinality(invs) LOOP
        IF leg_results[2 * k - 1] <> 'ok' THEN
            RAISE EXCEPTION 'the ledger refused the posting of invoice %: %', (invs[k]).id, leg_results[2 * k - 1]
                USING ERRCODE = coalesce(fincore.transfer_result_sqlstate(leg_results[2 * k - 1]), 'ZF301');
        END IF;
        invs[k].transfer_id := leg_ids[2 * k - 1];
        IF leg_results[2 * k] = 'ok' THEN
            invs[k].status := fincore.invoice_transition(invs[k].status, 'pay');
            invs[k].payment_transfer_id := leg_ids[2 * k];
            invs[k].paid_at := pg_catalog.now();
        END IF;
    END LOOP;
    INSERT INTO fincore.invoices SELECT * FROM unnest(invs);
    inv_ids := ARRAY(SELECT i.id FROM unnest(invs) i);
    UPDATE fincore.subscription_lines l SET invoice_id = i.id
      FROM fincore.invoices i
     WHERE i.tenant_id = t AND i.id = ANY (inv_ids)
       AND l.tenant_id = t AND l.subscription_id = i.subscription_id AND l.invoice_id IS NULL;
    -- A paid renewal makes its subscription active (payment_succeeded).
    UPDATE fincore.subscriptions x SET status = fincore.subscription_transition(x.status, 'payment_succeeded')
     WHERE x.tenant_id = t AND x.status IN ('incomplete', 'past_due', 'unpaid')
       AND x.id = ANY (ARRAY(SELECT i.subscription_id FROM unnest(invs) i WHERE i.status = 'paid'));
    PERFORM fincore.emit('billing', e.type, 'invoice', i.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', i.id, 'subscription_id', i.subscription_id,
                                                       'total', i.total, 'currency', i.currency,
                                                       'transfer_id', CASE WHEN e.k = 3 THEN i.payment_transfer_id
                                                                           ELSE i.transfer_id END))
       FROM unnest(invs) i
       JOIN (VALUES (1, 'invoice.created'), (2, 'invoice.finalized'), (3, 'invoice.paid')) e(k, type)
         ON e.k < 3 OR i.status = 'paid'
      ORDER BY i.id, e.k;

    -- The refused collections (ZF304-ZF307) go to a payment method's provider or to dunning, one
    -- by one.
    FOR k IN 1 .. pg_catalog.cardinality(invs) LOOP
        CONTINUE WHEN leg_results[2 * k] = 'ok';
        code := fincore.transfer_result_sqlstate(leg_results[2 * k]);
        IF code IS NULL OR code NOT IN ('ZF304', 'ZF305', 'ZF306', 'ZF307') THEN
            RAISE EXCEPTION 'the ledger refused the collection of invoice %: %', (invs[k]).id, leg_results[2 * k]
                USING ERRCODE = coalesce(code, 'ZF301');
        END IF;
        SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = t AND x.id = (invs[k]).subscription_id;
        before := s.status;
        IF s.payment_provider IS NOT NULL THEN
            -- Its credit, and a payment through the provider for the rest.
            s := (fincore._collect_invoice(s, invs[k])).s;
        ELSE
            s := fincore._invoice_payment_failed(s, invs[k], code);
        END IF;
        IF s.status IS DISTINCT FROM before THEN
            UPDATE fincore.subscriptions x SET status = s.status WHERE x.tenant_id = t AND x.id = s.id;
        END IF;
    END LOOP;
    RETURN invs;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._renew_subscriptions(uuid, uuid[]) FROM PUBLIC;
COMMENT ON FUNCTION fincore._renew_subscriptions(uuid, uuid[]) IS
    'Internal: renews a batch of a tenant''s locked, due subscriptions set-based (periods, lines, invoices, one create_transfers call for both legs of every invoice) and returns the invoices.';

CREATE FUNCTION fincore.billing_run(at timestamptz DEFAULT NULL, max_subscriptions integer DEFAULT 100,
                                    tenant uuid DEFAULT NULL)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    now_ timestamptz := coalesce(at, pg_catalog.now());
    saved text := pg_catalog.current_setting('fincore.tenant', true);
    t uuid;
    s fincore.subscriptions;
    before text;
    inv fincore.invoices;
    renew uuid[];
    befores text[];
    renewed fincore.subscriptions[];
    invs fincore.invoices[];
    n integer := 0;
BEGIN
    -- Tenant by tenant (fincore.tenants is small, and a reference table on Citus), each one's due
    -- subscriptions in period_end order by their index, locked with SKIP LOCKED: concurrent runs
    -- share the work and never bill a period twice (a period is advanced under its row's lock, so
    -- a second run finds it not due).  Every statement names its tenant.
    FOR t IN SELECT x.id FROM fincore.tenants x WHERE tenant IS NULL OR x.id = tenant ORDER BY x.id LOOP
        EXIT WHEN n >= max_subscriptions;
        -- Nothing due: next tenant (a probe of each index; no sublink, which Citus would plan apart).
        -- The ORDER BY keeps the probe on the index: without it a LIMIT 1 plans a sequential scan,
        -- which reads past every renewed row and made a run's cost grow with the rows renewed.
        PERFORM FROM fincore.subscriptions x
          WHERE x.tenant_id = t AND x.external_id IS NULL
            AND x.status IN ('trialing', 'active', 'past_due') AND x.period_end <= now_
          ORDER BY x.period_end LIMIT 1;
        IF NOT FOUND THEN
            PERFORM FROM fincore.subscriptions x
              WHERE x.tenant_id = t AND x.external_id IS NULL AND x.status = 'incomplete'
                AND x.created_at <= now_ - '23 hours'::interval
              ORDER BY x.created_at LIMIT 1;
            CONTINUE WHEN NOT FOUND;
        END IF;
        PERFORM fincore._use_tenant(t);
        renew := '{}';
        befores := '{}';
        FOR s IN SELECT * FROM fincore.subscriptions x
                  WHERE x.tenant_id = t AND x.external_id IS NULL
                    AND x.status IN ('trialing', 'active', 'past_due') AND x.period_end <= now_
                  ORDER BY x.period_end LIMIT max_subscriptions - n
                  FOR UPDATE SKIP LOCKED LOOP
            before := s.status;
            n := n + 1;
            IF s.cancel_at_period_end THEN
                s.status := fincore.subscription_transition(s.status, 'cancel');
                UPDATE fincore.subscriptions x SET cancel_at_period_end = false WHERE x.tenant_id = t AND x.id = s.id;
                PERFORM fincore._subscription_save_status(s, before);
            ELSE
                renew := renew || s.id;
                befores := befores || before;
            END IF;
        END LOOP;
        -- Incomplete for 23 hours, its first invoice never paid (Stripe's rule): expired, the invoice voided.
        FOR s IN SELECT * FROM fincore.subscriptions x
                  WHERE x.tenant_id = t AND x.external_id IS NULL AND x.status = 'incomplete'
                    AND x.created_at <= now_ - '23 hours'::interval
                  ORDER BY x.created_at LIMIT max_subscriptions - n
                  FOR UPDATE SKIP LOCKED LOOP
            -- A provider payment of its invoice still in flight: its answer comes first.
            PERFORM FROM fincore.invoices x
              JOIN fincore.payments p ON p.tenant_id = t AND p.id = x.payment_id
             WHERE x.tenant_id = t AND x.subscription_id = s.id AND x.status = 'open'
               AND p.status IN ('requires_confirmation', 'processing', 'requires_action', 'requires_capture');
            CONTINUE WHEN FOUND;
            before := s.status;
            n := n + 1;
            s.status := fincore.subscription_transition(s.status, 'first_payment_expired');
            FOR inv IN SELECT * FROM fincore.invoices x
                        WHERE x.tenant_id = t AND x.subscription_id = s.id AND x.status IN ('draft', 'open') LOOP
                PERFORM fincore._void_invoice(inv);
            END LOOP;
            PERFORM fincore._subscription_save_status(s, before);
        END LOOP;
        IF pg_catalog.cardinality(renew) > 0 THEN
            invs := fincore._renew_subscriptions(t, renew);
            SELECT pg_catalog.array_agg(x) INTO renewed FROM fincore.subscriptions x
             WHERE x.tenant_id = t AND x.id = ANY (renew);
            PERFORM fincore.emit('billing', 'subscription.renewed', 'subscription', x.id::text,
                                 pg_catalog.jsonb_build_object('subscription_id', x.id, 'status', x.status,
                                                               'previous_status', b.before, 'price_id', x.price_id,
                                                               'quantity', x.quantity, 'period_start', x.period_start,
                                                               'period_end', x.period_end, 'invoice_id', i.id))
               FROM unnest(renewed) x
               JOIN unnest(renew, befores) AS b(id, before) ON b.id = x.id
               LEFT JOIN unnest(invs) i ON i.subscription_id = x.id
              ORDER BY x.id;
        END IF;
    END LOOP;
    PERFORM fincore._use_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.billing_run(timestamptz, integer, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore.billing_run(timestamptz, integer, uuid) IS
    'Renews the subscriptions (of every tenant, or of `tenant`) whose period ended by `at` (default now), at most max_subscriptions: the next period (at a price scheduled for it, if any) billed in full, invoiced (receivable <- revenue) and collected from the customer''s account (past_due and a dunning retry if the ledger refuses), a batch at a time (one create_transfers call); cancels those set to cancel at the period''s end, and expires those incomplete for 23 hours. Concurrent runs share the work with SKIP LOCKED; each period is billed once. Returns how many subscriptions it moved.';

CREATE FUNCTION fincore.billing_run_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.billing_run(NULL, 100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.billing_run_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.billing_run_step(interval) IS
    'Maintenance step: billing_run in batches of 100 until none is due or the budget is spent.';

-- ---------------------------------------------------------------------------
-- Stripe in sync: for a tenant whose billing system of record is Stripe, Stripe's webhook events
-- (accepted once by fincore.accept_webhook, queued on webhook:stripe) are applied to the same
-- tables, so that entitled() and the events work as in fincore's own billing.  An event older
-- than what a row already shows is stale and changes nothing; an event about an object not
-- known yet (a subscription's invoice before the subscription) is refused with ZFA13 and its job
-- retried.  Stripe's subscriptions and invoices are mirrored: nothing is posted to the ledger.
-- ---------------------------------------------------------------------------

-- The fincore id of a Stripe object: the same for every event about it.
CREATE FUNCTION fincore._stripe_id(tenant uuid, kind text, stripe_id text) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        SELECT pg_catalog.md5(tenant::text OPERATOR(pg_catalog.||) ':stripe:' OPERATOR(pg_catalog.||) kind
                              OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) stripe_id)::uuid;
    END;
REVOKE ALL ON FUNCTION fincore._stripe_id(uuid, text, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._stripe_id(uuid, text, text) IS
    'Internal: the fincore id of a Stripe object of a tenant (an MD5 of tenant, kind and Stripe id).';

-- A Unix time of a Stripe object (NULL if absent); ZFA14 if it is not a number.
CREATE FUNCTION fincore._stripe_time(v jsonb) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF v IS NULL OR pg_catalog.jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.jsonb_typeof(v) <> 'number' THEN
        RAISE EXCEPTION 'invalid Stripe event: % is not a Unix time', v USING ERRCODE = 'ZFA14';
    END IF;
    RETURN pg_catalog.to_timestamp((v #>> '{}')::double precision);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._stripe_time(jsonb) FROM PUBLIC;
COMMENT ON FUNCTION fincore._stripe_time(jsonb) IS 'Internal: a Stripe Unix time as timestamptz (ZFA14 if not a number).';

CREATE FUNCTION fincore.apply_stripe_event(event jsonb) RETURNS text
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    kind text := event ->> 'type';
    obj jsonb := event -> 'data' -> 'object';
    created bigint;
    s fincore.subscriptions;
    inv fincore.invoices;
    price fincore.billing_prices;
    item jsonb;
    new_status text;
    customer uuid;
    sub_ext text;
    who uuid;
BEGIN
    IF event IS NULL OR pg_catalog.jsonb_typeof(event) <> 'object' OR kind IS NULL
       OR pg_catalog.jsonb_typeof(event -> 'created') IS DISTINCT FROM 'number'
       OR pg_catalog.jsonb_typeof(obj) IS DISTINCT FROM 'object' OR obj ->> 'id' IS NULL THEN
        RAISE EXCEPTION 'invalid Stripe event %', coalesce(event ->> 'id', 'without an id')
            USING ERRCODE = 'ZFA14', HINT = 'An event object: id, type, created and data.object with its id.';
    END IF;
    created := (event ->> 'created')::numeric::bigint;

    IF kind LIKE 'customer.subscription.%' THEN
        new_status := CASE WHEN kind = 'customer.subscription.deleted' THEN 'canceled' ELSE obj ->> 'status' END;
        PERFORM fincore.subscription_entitles(coalesce(new_status, 'none'));     -- ZFA04 for an unknown status
        item := obj -> 'items' -> 'data' -> 0;
        SELECT * INTO price FROM fincore.billing_prices p
         WHERE p.tenant_id = tenant AND p.external_id = item -> 'price' ->> 'id';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'Stripe price % is not a price of tenant %', coalesce(item -> 'price' ->> 'id', 'NULL'), tenant
                USING ERRCODE = 'ZFA13', HINT = 'Create it with fincore.create_price(..., external_id => <Stripe''s id>); the event is then applied when retried.';
        END IF;
        -- The customer's account, in the price's currency, made at the first event that names it.
        customer := fincore._stripe_id(tenant, 'customer:' || price.currency, coalesce(obj ->> 'customer', 'none'));
        IF NOT EXISTS (SELECT FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = customer) THEN
            PERFORM fincore.create_account(price.currency, id => customer,
                                           external_ref => 'stripe:' || coalesce(obj ->> 'customer', 'none'));
        END IF;
        s.tenant_id := tenant;
        s.id := fincore._stripe_id(tenant, 'subscription', obj ->> 'id');
        s.customer_account := customer;
        s.price_id := price.id;
        s.quantity := greatest(coalesce((item ->> 'quantity')::integer, 1), 1);
        s.status := new_status;
        s.period_start := coalesce(fincore._stripe_time(obj -> 'current_period_start'),
                                   fincore._stripe_time(item -> 'current_period_start'),
                                   fincore._stripe_time(obj -> 'start_date'));
        s.period_end := coalesce(fincore._stripe_time(obj -> 'current_period_end'),
                                 fincore._stripe_time(item -> 'current_period_end'), s.period_start);
        s.anchor := coalesce(fincore._stripe_time(obj -> 'billing_cycle_anchor'), s.period_start);
        s.trial_end := fincore._stripe_time(obj -> 'trial_end');
        s.cancel_at_period_end := coalesce((obj ->> 'cancel_at_period_end')::boolean, false);
        IF s.period_start IS NULL OR s.period_end < s.period_start THEN
            RAISE EXCEPTION 'invalid Stripe subscription %: no current period', obj ->> 'id' USING ERRCODE = 'ZFA14';
        END IF;
        PERFORM FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.id = s.id FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO fincore.subscriptions (tenant_id, id, customer_account, price_id, quantity, status, anchor,
                                               trial_end, period_start, period_end, billed, billed_from,
                                               cancel_at_period_end, external_id, external_version)
            VALUES (tenant, s.id, s.customer_account, s.price_id, s.quantity, s.status, s.anchor, s.trial_end,
                    s.period_start, s.period_end, 0, s.period_start, s.cancel_at_period_end, obj ->> 'id', created);
            PERFORM fincore.emit('billing', 'subscription.created', 'subscription', s.id::text,
                                 pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                               'price_id', s.price_id, 'quantity', s.quantity,
                                                               'source', 'stripe', 'stripe_event', event ->> 'id'));
            RETURN 'applied';
        END IF;
        UPDATE fincore.subscriptions x
           SET customer_account = s.customer_account, price_id = s.price_id, quantity = s.quantity,
               status = s.status, anchor = s.anchor, trial_end = s.trial_end, period_start = s.period_start,
               period_end = s.period_end, billed_from = s.period_start, cancel_at_period_end = s.cancel_at_period_end,
               external_version = created, updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id
           -- Newer than what the row shows; a final status is never left.
           AND created >= x.external_version AND x.status NOT IN ('canceled', 'incomplete_expired')
           AND (x.customer_account, x.price_id, x.quantity, x.status, x.anchor, x.trial_end, x.period_start,
                x.period_end, x.cancel_at_period_end)
               IS DISTINCT FROM (s.customer_account, s.price_id, s.quantity, s.status, s.anchor, s.trial_end,
                                 s.period_start, s.period_end, s.cancel_at_period_end);
        IF NOT FOUND THEN
            RETURN 'unchanged';     -- stale, or what it says is already there
        END IF;
        PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                             pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                           'price_id', s.price_id, 'quantity', s.quantity,
                                                           'cancel_at_period_end', s.cancel_at_period_end,
                                                           'source', 'stripe', 'stripe_event', event ->> 'id'));
        RETURN 'applied';

    ELSIF kind LIKE 'invoice.%' THEN
        sub_ext := coalesce(obj ->> 'subscription', obj -> 'parent' -> 'subscription_details' ->> 'subscription');
        SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.external_id = sub_ext FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'Stripe invoice %: its subscription % is not known yet', obj ->> 'id', coalesce(sub_ext, 'NULL')
                USING ERRCODE = 'ZFA13', HINT = 'Retry the event once the subscription''s own event is applied.';
        END IF;
        inv.status := obj ->> 'status';
        IF inv.status IS NULL OR inv.status NOT IN ('draft', 'open', 'paid', 'void', 'uncollectible') THEN
            RAISE EXCEPTION 'invalid Stripe invoice %: status %', obj ->> 'id', coalesce(inv.status, 'NULL')
                USING ERRCODE = 'ZFA14';
        END IF;
        inv.tenant_id := tenant;
        inv.id := fincore._stripe_id(tenant, 'invoice', obj ->> 'id');
        inv.total := coalesce((obj ->> 'total')::bigint, (obj ->> 'amount_due')::bigint, 0);
        inv.currency := pg_catalog.upper(coalesce(obj ->> 'currency', ''));
        inv.period_start := coalesce(fincore._stripe_time(obj -> 'period_start'), s.period_start);
        inv.period_end := coalesce(fincore._stripe_time(obj -> 'period_end'), s.period_end);
        IF inv.total < 0 OR inv.currency <> (SELECT p.currency FROM fincore.billing_prices p
                                              WHERE p.tenant_id = tenant AND p.id = s.price_id) THEN
            RAISE EXCEPTION 'invalid Stripe invoice %: % % for a subscription in %', obj ->> 'id', inv.total, inv.currency,
                    (SELECT p.currency FROM fincore.billing_prices p WHERE p.tenant_id = tenant AND p.id = s.price_id)
                USING ERRCODE = 'ZFA14';
        END IF;
        INSERT INTO fincore.invoices AS x (tenant_id, id, subscription_id, customer_account, currency, status, total,
                                           period_start, period_end, paid_at, external_id, external_version)
        VALUES (tenant, inv.id, s.id, s.customer_account, inv.currency, inv.status, inv.total, inv.period_start,
                inv.period_end, CASE WHEN inv.status = 'paid' THEN pg_catalog.now() END, obj ->> 'id', created)
        ON CONFLICT (tenant_id, id) DO UPDATE
           SET status = excluded.status, total = excluded.total, period_start = excluded.period_start,
               period_end = excluded.period_end, paid_at = coalesce(x.paid_at, excluded.paid_at),
               external_version = excluded.external_version
         -- Newer than what the row shows; a final status is never left.
         WHERE excluded.external_version >= x.external_version AND x.status NOT IN ('paid', 'void')
           AND (x.status, x.total, x.period_start, x.period_end)
               IS DISTINCT FROM (excluded.status, excluded.total, excluded.period_start, excluded.period_end);
        IF NOT FOUND THEN
            RETURN 'unchanged';
        END IF;
        PERFORM fincore.emit('billing', kind, 'invoice', inv.id::text,
                             pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id,
                                                           'status', inv.status, 'total', inv.total,
                                                           'source', 'stripe', 'stripe_event', event ->> 'id'));
        RETURN 'applied';

    ELSIF kind = 'checkout.session.completed' THEN
        IF obj ->> 'mode' IS DISTINCT FROM 'subscription' OR obj ->> 'client_reference_id' IS NULL THEN
            RETURN 'ignored';   -- a one-off payment, or no user to entitle
        END IF;
        BEGIN
            who := (obj ->> 'client_reference_id')::uuid;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'invalid Stripe checkout session %: client_reference_id % is not a user id (uuid)',
                    obj ->> 'id', obj ->> 'client_reference_id'
                USING ERRCODE = 'ZFA14';
        END;
        SELECT * INTO s FROM fincore.subscriptions x
         WHERE x.tenant_id = tenant AND x.external_id = obj ->> 'subscription' FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'Stripe checkout session %: its subscription % is not known yet', obj ->> 'id',
                    coalesce(obj ->> 'subscription', 'NULL')
                USING ERRCODE = 'ZFA13', HINT = 'Retry the event once the subscription''s own event is applied.';
        END IF;
        IF s.subscriber IS NOT DISTINCT FROM who THEN
            RETURN 'unchanged';
        END IF;
        UPDATE fincore.subscriptions x SET subscriber = who, updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id;
        PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                             pg_catalog.jsonb_build_object('subscription_id', s.id, 'subscriber', who,
                                                           'source', 'stripe', 'stripe_event', event ->> 'id'));
        RETURN 'applied';
    END IF;
    RETURN 'ignored';
END
$fn$;
COMMENT ON FUNCTION fincore.apply_stripe_event(jsonb) IS
    'Applies a Stripe event to the current tenant''s billing tables (customer.subscription.*, invoice.*, checkout.session.completed; others are ignored): a subscription or invoice mirrored from Stripe (nothing posted), a subscriber from a checkout''s client_reference_id. Idempotent and safe against out-of-order delivery: an event older than the row (by created), or about a final status, changes nothing. Returns applied, unchanged or ignored. Trusted roles. ZFA13 (an object not known yet: retry), ZFA14, ZFA04.';

-- The Stripe worker in the database: claims webhook:stripe jobs (fincore.accept_webhook's),
-- applies each in its tenant; an event whose subscription or price is not known yet fails its
-- job, which the queue retries with its backoff.
CREATE FUNCTION fincore.stripe_sync_run(max_jobs integer DEFAULT 100) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    saved text := pg_catalog.current_setting('fincore.tenant', true);
    j fincore.job;
    n integer := 0;
    msg text;
BEGIN
    FOR j IN SELECT * FROM fincore.dequeue('webhook:stripe', max_jobs, '5 minutes', 'fincore.stripe_sync_run') LOOP
        PERFORM fincore._use_tenant(j.tenant_id);
        BEGIN
            PERFORM fincore.apply_stripe_event(j.payload);
            PERFORM fincore.complete(j.id, NULL, j.attempt);
        EXCEPTION WHEN SQLSTATE 'ZFA13' THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            PERFORM fincore.fail(j.id, msg, NULL, j.attempt);
        END;
        n := n + 1;
    END LOOP;
    PERFORM fincore._use_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.stripe_sync_run(integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore.stripe_sync_run(integer) IS
    'Applies up to max_jobs queued Stripe events (queue webhook:stripe) in their tenants; an event about an object not known yet fails its job, retried with the queue''s backoff. Returns how many jobs it took.';

CREATE FUNCTION fincore.stripe_sync_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.stripe_sync_run(100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.stripe_sync_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.stripe_sync_step(interval) IS
    'Maintenance step: stripe_sync_run in batches of 100 until none is due or the budget is spent.';

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('billing_run', 'fincore.billing_run_step(interval)', 130, 'Renew, invoice and collect the subscriptions whose period ended'),
    ('dunning_run', 'fincore.dunning_run_step(interval)', 135, 'Retry the failed invoice payments that are due (queue billing:dunning)'),
    ('stripe_sync', 'fincore.stripe_sync_step(interval)', 140, 'Apply the queued Stripe events (queue webhook:stripe) to the billing tables');

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.create_product(text,uuid)', 'app'),
    ('fincore.set_product_features(uuid,text[])', 'app'),
    ('fincore.entitled(text)', 'app'),
    ('fincore.create_price(uuid,bigint,text,text,integer,text,integer,uuid,text,jsonb)', 'app'),
    ('fincore.billing_price_amount(text,bigint,jsonb,integer)', 'app'),
    ('fincore.apply_stripe_event(jsonb)', 'trusted'),
    ('fincore.create_subscription(uuid,uuid,integer,timestamptz,text,uuid,uuid)', 'app'),
    ('fincore.preview_change(uuid,uuid,integer,timestamptz,text,boolean)', 'app'),
    ('fincore.change_subscription(uuid,uuid,integer,timestamptz,text,boolean)', 'app'),
    ('fincore.update_subscription_status(uuid,text)', 'app'),
    ('fincore.set_payment_method(uuid,text,uuid)', 'app'),
    ('fincore.set_billing_accounts(text,uuid,uuid)', 'app'),
    ('fincore.set_dunning_policy(interval[],text,text[])', 'app'),
    ('fincore.create_invoice(uuid,boolean)', 'app'),
    ('fincore.finalize_invoice(uuid)', 'app'),
    ('fincore.pay_invoice(uuid)', 'app'),
    ('fincore.update_invoice_status(uuid,text)', 'app'),
    ('fincore.retry_invoice(uuid,integer)', 'trusted'),
    ('fincore.invoice_transition(text,text)', 'app'),
    ('fincore.subscription_transition(text,text)', 'app'),
    ('fincore.subscription_entitles(text)', 'app'),
    ('fincore.billing_period(timestamptz,text,integer,timestamptz)', 'app'),
    ('fincore.proration(bigint,timestamptz,timestamptz,timestamptz,bigint,timestamptz,text)', 'app');
