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

CREATE TABLE fincore.billing_prices (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    product_id     uuid        NOT NULL,
    currency       text        NOT NULL,
    unit_amount    bigint      NOT NULL CHECK (unit_amount >= 0),
    scheme         text        NOT NULL CHECK (scheme IN ('flat', 'per_seat')),
    interval_unit  text        NOT NULL CHECK (interval_unit IN ('day', 'week', 'month', 'year')),
    interval_count integer     NOT NULL CHECK (interval_count BETWEEN 1 AND 366),
    trial_days     integer     NOT NULL DEFAULT 0 CHECK (trial_days BETWEEN 0 AND 730),
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, product_id) REFERENCES fincore.billing_products (tenant_id, id)
);
COMMENT ON TABLE fincore.billing_prices IS
    'Prices of products: an amount per interval (flat, or per seat), a currency, a trial. Immutable: a change is a new price.';
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
    lines           integer     NOT NULL DEFAULT 0,     -- the number of its lines: the last line_no
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, price_id) REFERENCES fincore.billing_prices (tenant_id, id),
    CHECK (period_start <= billed_from AND billed_from <= period_end)
);
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
CREATE FUNCTION fincore._billing_amount(price fincore.billing_prices, quantity integer) RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    total numeric := CASE WHEN price.scheme = 'per_seat' THEN price.unit_amount::numeric * quantity
                          ELSE price.unit_amount::numeric END;
BEGIN
    IF total > 9223372036854775807 THEN
        RAISE EXCEPTION 'the price of % seats at % overflows', quantity, price.unit_amount USING ERRCODE = 'ZF104';
    END IF;
    RETURN total::bigint;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._billing_amount(fincore.billing_prices, integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore._billing_amount(fincore.billing_prices, integer) IS
    'Internal: a price''s amount for a full interval at a quantity (per seat: times the quantity); ZF104 on overflow.';

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
        trial_days integer DEFAULT 0, id uuid DEFAULT NULL)
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
    IF unit_amount IS NULL OR unit_amount < 0 OR scheme IS NULL OR scheme NOT IN ('flat', 'per_seat')
       OR interval_unit IS NULL OR interval_unit NOT IN ('day', 'week', 'month', 'year')
       OR interval_count IS NULL OR interval_count NOT BETWEEN 1 AND 366
       OR trial_days IS NULL OR trial_days NOT BETWEEN 0 AND 730 THEN
        RAISE EXCEPTION 'invalid price: unit_amount >= 0, scheme flat or per_seat, interval day/week/month/year x 1 to 366, trial 0 to 730 days'
            USING ERRCODE = 'ZFA05';
    END IF;
    PERFORM fincore.currency_exponent(currency);     -- ZF102 for an unknown currency
    INSERT INTO fincore.billing_prices (tenant_id, id, product_id, currency, unit_amount, scheme, interval_unit,
                                        interval_count, trial_days)
    VALUES (tenant, new_id, product_id, currency, unit_amount, scheme, interval_unit, interval_count, trial_days);
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_price(uuid, bigint, text, text, integer, text, integer, uuid) IS
    'Creates an immutable price of a product: unit_amount minor units per interval (flat, or per seat), a currency, a trial. Tenant admins only (ZF803). ZFA05, ZFA06, ZF102.';

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
    RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._subscription_lock(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._subscription_lock(uuid, uuid) IS 'Internal: the tenant''s subscription, locked FOR UPDATE (ZFA06 if none).';

CREATE FUNCTION fincore.create_subscription(customer_account uuid, price_id uuid, quantity integer DEFAULT 1,
        anchor timestamptz DEFAULT NULL, idempotency_key text DEFAULT NULL, id uuid DEFAULT NULL)
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
    s.lines := 1;
    s.created_at := at;
    s.updated_at := at;
    INSERT INTO fincore.subscriptions VALUES (s.*) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO s FROM fincore.subscriptions x
         WHERE x.tenant_id = tenant AND (x.idempotency_key = create_subscription.idempotency_key OR x.id = create_subscription.id)
         ORDER BY (x.idempotency_key = create_subscription.idempotency_key) DESC NULLS LAST LIMIT 1;
        IF s.price_id <> price_id OR s.quantity <> quantity OR s.customer_account <> customer_account
           OR s.idempotency_key IS DISTINCT FROM idempotency_key THEN
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
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.create_subscription(uuid, uuid, integer, timestamptz, text, uuid) IS
    'Subscribes a customer account to a price: trialing (the price has a trial) or incomplete (its first invoice due), the period of the anchor (default now) that contains now, billed for what is left of it. Idempotent by idempotency_key (or id; ZFA07 with other fields). ZFA04, ZFA06, ZF301.';

-- The lines a change of price and/or quantity at `at` makes: the credit for what was billed for
-- the rest of the period, and the debit at the new price.  Writes nothing.
CREATE FUNCTION fincore._subscription_change_lines(s fincore.subscriptions, new_price fincore.billing_prices,
        new_quantity integer, at timestamptz, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    old_price fincore.billing_prices;
    r record;
BEGIN
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
    r := fincore.proration(s.billed, s.billed_from, s.period_start, s.period_end,
                           CASE WHEN s.status = 'trialing' THEN 0 ELSE fincore._billing_amount(new_price, new_quantity) END,
                           at);
    credit := r.credit;
    debit := r.debit;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._subscription_change_lines(fincore.subscriptions, fincore.billing_prices, integer, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION fincore._subscription_change_lines(fincore.subscriptions, fincore.billing_prices, integer, timestamptz) IS
    'Internal: the credit and debit of a change (the same code for preview_change and change_subscription).';

CREATE FUNCTION fincore.preview_change(subscription_id uuid, price_id uuid DEFAULT NULL, quantity integer DEFAULT NULL,
        at timestamptz DEFAULT NULL, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions;
    p fincore.billing_prices;
    r record;
BEGIN
    SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.id = subscription_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', coalesce(subscription_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    PERFORM fincore.subscription_transition(s.status, 'change');
    SELECT * INTO p FROM fincore.billing_prices x WHERE x.tenant_id = tenant AND x.id = coalesce(price_id, s.price_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'price % not found', price_id USING ERRCODE = 'ZFA06';
    END IF;
    IF coalesce(quantity, s.quantity) < 1 THEN
        RAISE EXCEPTION 'invalid quantity %', quantity USING ERRCODE = 'ZFA04';
    END IF;
    r := fincore._subscription_change_lines(s, p, coalesce(quantity, s.quantity), coalesce(at, pg_catalog.now()));
    credit := r.credit;
    debit := r.debit;
END
$fn$;
COMMENT ON FUNCTION fincore.preview_change(uuid, uuid, integer, timestamptz) IS
    'What change_subscription with the same arguments would bill, from the same code: the credit for the unused rest of what was billed and the debit at the new price. Writes nothing. ZFA02-ZFA06.';

CREATE FUNCTION fincore.change_subscription(subscription_id uuid, price_id uuid DEFAULT NULL, quantity integer DEFAULT NULL,
        at timestamptz DEFAULT NULL, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    p fincore.billing_prices;
    q integer := coalesce(quantity, s.quantity);
    t timestamptz := coalesce(at, pg_catalog.now());
    r record;
BEGIN
    s.status := fincore.subscription_transition(s.status, 'change');
    SELECT * INTO p FROM fincore.billing_prices x WHERE x.tenant_id = tenant AND x.id = coalesce(price_id, s.price_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'price % not found', price_id USING ERRCODE = 'ZFA06';
    END IF;
    IF q < 1 THEN
        RAISE EXCEPTION 'invalid quantity %', q USING ERRCODE = 'ZFA04';
    END IF;
    r := fincore._subscription_change_lines(s, p, q, t);
    credit := r.credit;
    debit := r.debit;
    INSERT INTO fincore.subscription_lines (tenant_id, subscription_id, line_no, kind, amount, price_id, quantity,
                                            span_start, span_end)
    VALUES (tenant, s.id, s.lines + 1, 'credit', credit, s.price_id, s.quantity, t, s.period_end),
           (tenant, s.id, s.lines + 2, 'debit', debit, p.id, q, t, s.period_end);
    UPDATE fincore.subscriptions x
       SET price_id = p.id, quantity = q, billed = debit, billed_from = t, lines = s.lines + 2,
           updated_at = pg_catalog.now()
     WHERE x.tenant_id = tenant AND x.id = s.id;
    PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status, 'price_id', p.id,
                                                       'quantity', q, 'credit', credit, 'debit', debit, 'at', t));
END
$fn$;
COMMENT ON FUNCTION fincore.change_subscription(uuid, uuid, integer, timestamptz) IS
    'Changes a subscription''s price and/or quantity at `at` (default now): a credit line for the unused rest of what was billed and a debit line at the new price, exactly what preview_change returned. ZFA02-ZFA06.';

-- pause, resume, cancel: the state machine's transitions, written.
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
    IF action IS NULL OR action NOT IN ('pause', 'resume', 'cancel') THEN
        RAISE EXCEPTION 'invalid subscription action %', coalesce(pg_catalog.quote_literal(action), 'NULL')
            USING ERRCODE = 'ZFA04', HINT = 'pause, resume or cancel; payments and dunning move the other statuses.';
    END IF;
    s.status := fincore.subscription_transition(s.status, action);
    UPDATE fincore.subscriptions x SET status = s.status, updated_at = pg_catalog.now()
     WHERE x.tenant_id = tenant AND x.id = s.id;
    PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                       'previous_status', before, 'action', action));
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.update_subscription_status(uuid, text) IS
    'Pauses, resumes or cancels a subscription now, as the state machine allows (ZFA03 otherwise). ZFA04, ZFA06.';

-- ---------------------------------------------------------------------------
-- Invoices: a subscription's lines not invoiced yet, netted (credits first), posted to the
-- ledger as receivable <- revenue when the invoice is made, and paid by a transfer from the
-- customer's account to the receivable.  A net credit waits for the next invoice.
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
    'Where a tenant''s invoices post, per currency: the receivable (debited when an invoice is made, credited when it is paid) and the revenue account.';
SELECT fincore.protect('fincore.billing_accounts');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_accounts', '');

CREATE TABLE fincore.invoices (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    subscription_id  uuid        NOT NULL,
    customer_account uuid        NOT NULL,
    currency         text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('open', 'paid', 'void', 'uncollectible')),
    total            bigint      NOT NULL CHECK (total > 0),
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    transfer_id      uuid        NOT NULL,      -- receivable <- revenue
    payment_transfer_id uuid,                   -- customer -> receivable
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    paid_at          timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES fincore.subscriptions (tenant_id, id)
);
COMMENT ON TABLE fincore.invoices IS
    'Invoices of subscriptions: their total (lines netted), status, and the ledger transfers that posted and paid them.';
SELECT fincore.protect('fincore.invoices');
SELECT pg_catalog.pg_extension_config_dump('fincore.invoices', '');

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

-- Invoice the subscription's lines not invoiced yet (the subscription locked by the caller):
-- the invoice, posted as receivable <- revenue, or NULL when they net to nothing or a credit.
CREATE FUNCTION fincore._invoice_lines(s fincore.subscriptions) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    inv fincore.invoices;
    acc fincore.billing_accounts;
    cur text;
BEGIN
    SELECT p.currency INTO cur FROM fincore.billing_prices p WHERE p.tenant_id = s.tenant_id AND p.id = s.price_id;
    SELECT coalesce(sum(CASE WHEN l.kind = 'credit' THEN -l.amount ELSE l.amount END), 0)
      INTO inv.total FROM fincore.subscription_lines l
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.invoice_id IS NULL;
    IF inv.total <= 0 THEN
        RETURN NULL;    -- nothing owed: a credit waits for the next invoice
    END IF;
    SELECT * INTO acc FROM fincore.billing_accounts b WHERE b.tenant_id = s.tenant_id AND b.currency = cur;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no billing accounts for % in tenant %', cur, s.tenant_id
            USING ERRCODE = 'ZFA06', HINT = 'Set them with fincore.set_billing_accounts().';
    END IF;
    inv.tenant_id := s.tenant_id;
    inv.id := fincore.uuidv7();
    inv.subscription_id := s.id;
    inv.customer_account := s.customer_account;
    inv.currency := cur;
    inv.status := 'open';
    inv.period_start := s.period_start;
    inv.period_end := s.period_end;
    inv.created_at := pg_catalog.now();
    inv.transfer_id := (fincore.transfer(acc.receivable_account, acc.revenue_account, inv.total,
                                         metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id,
                                                                                   'subscription_id', s.id))).id;
    INSERT INTO fincore.invoices VALUES (inv.*);
    UPDATE fincore.subscription_lines l SET invoice_id = inv.id
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.invoice_id IS NULL;
    PERFORM fincore.emit('billing', 'invoice.created', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id,
                                                       'total', inv.total, 'currency', cur));
    RETURN inv;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_lines(fincore.subscriptions) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_lines(fincore.subscriptions) IS
    'Internal: invoices a subscription''s open lines (receivable <- revenue), or returns NULL when they net to nothing or a credit.';

-- Collect an open invoice from the customer's account: paid (the subscription moves on with
-- payment_succeeded), or, when the ledger refuses (insufficient funds, a frozen account),
-- payment_failed.  Returns whether it was paid.
CREATE FUNCTION fincore._collect_invoice(INOUT s fincore.subscriptions, inv fincore.invoices, OUT paid boolean)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    acc fincore.billing_accounts;
    tid uuid;
    code text;
BEGIN
    SELECT * INTO acc FROM fincore.billing_accounts b WHERE b.tenant_id = inv.tenant_id AND b.currency = inv.currency;
    BEGIN
        tid := (fincore.transfer(inv.customer_account, acc.receivable_account, inv.total,
                                 id => fincore._payment_transfer_id(inv.id, 0, 'payment'),
                                 metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id))).id;
        paid := true;
    EXCEPTION WHEN SQLSTATE 'ZF304' OR SQLSTATE 'ZF305' OR SQLSTATE 'ZF306' OR SQLSTATE 'ZF307' THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE;
        paid := false;
    END;
    IF paid THEN
        UPDATE fincore.invoices x SET status = 'paid', payment_transfer_id = tid, paid_at = pg_catalog.now()
         WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
        s.status := fincore.subscription_transition(s.status, 'payment_succeeded');
        PERFORM fincore.emit('billing', 'invoice.paid', 'invoice', inv.id::text,
                             pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id, 'total', inv.total));
    ELSE
        IF s.status IN ('active', 'past_due') THEN
            s.status := fincore.subscription_transition(s.status, 'payment_failed');
        END IF;
        PERFORM fincore.emit('billing', 'invoice.payment_failed', 'invoice', inv.id::text,
                             pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id,
                                                           'total', inv.total, 'code', code));
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._collect_invoice(fincore.subscriptions, fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._collect_invoice(fincore.subscriptions, fincore.invoices) IS
    'Internal: pays an open invoice from the customer''s account (customer -> receivable), or records the failure; moves the subscription''s status.';

CREATE FUNCTION fincore.pay_invoice(invoice_id uuid) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    inv fincore.invoices;
    s fincore.subscriptions;
    r record;
BEGIN
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % not found', coalesce(invoice_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    s := fincore._subscription_lock(tenant, inv.subscription_id);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    IF inv.status <> 'open' THEN
        RETURN inv;     -- paid (or voided) already: a replay
    END IF;
    r := fincore._collect_invoice(s, inv);
    IF NOT r.paid THEN
        RAISE EXCEPTION 'invoice % could not be paid from account %', inv.id, inv.customer_account
            USING ERRCODE = 'ZFA08', HINT = 'The ledger refused the payment (funds, or a frozen or closed account).';
    END IF;
    UPDATE fincore.subscriptions x SET status = (r.s).status, updated_at = pg_catalog.now()
     WHERE x.tenant_id = tenant AND x.id = s.id;
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.pay_invoice(uuid) IS
    'Pays an open invoice from its customer''s account; the subscription becomes active (payment_succeeded). A paid invoice is returned as it is. ZFA06, ZFA08.';

CREATE FUNCTION fincore.billing_run(at timestamptz DEFAULT NULL, max_subscriptions integer DEFAULT 100)
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
    price fincore.billing_prices;
    per record;
    inv fincore.invoices;
    r record;
    n integer := 0;
BEGIN
    -- The tenants with due subscriptions (a read of every shard on Citus), then each tenant's,
    -- locked with SKIP LOCKED: concurrent runs share the work and never bill a period twice
    -- (a period is advanced under its row's lock, so a second run finds it not due).
    FOR t IN SELECT DISTINCT x.tenant_id FROM fincore.subscriptions x
              WHERE x.status IN ('trialing', 'active', 'past_due') AND x.period_end <= now_ ORDER BY 1 LOOP
        EXIT WHEN n >= max_subscriptions;
        PERFORM fincore.set_tenant(t);
        FOR s IN SELECT * FROM fincore.subscriptions x
                  WHERE x.tenant_id = t AND x.status IN ('trialing', 'active', 'past_due') AND x.period_end <= now_
                  ORDER BY x.period_end LIMIT max_subscriptions - n
                  FOR UPDATE SKIP LOCKED LOOP
            SELECT * INTO price FROM fincore.billing_prices p WHERE p.tenant_id = t AND p.id = s.price_id;
            -- The next period, billed in full from its start (a trial's end bills its first).
            per := fincore.billing_period(s.anchor, price.interval_unit, price.interval_count, s.period_end);
            s.period_start := per.period_start;
            s.period_end := per.period_end;
            s.billed := fincore._billing_amount(price, s.quantity);
            s.billed_from := per.period_start;
            s.lines := s.lines + 1;
            INSERT INTO fincore.subscription_lines (tenant_id, subscription_id, line_no, kind, amount, price_id,
                                                    quantity, span_start, span_end)
            VALUES (t, s.id, s.lines, 'period', s.billed, s.price_id, s.quantity, s.period_start, s.period_end);
            IF s.status = 'trialing' THEN
                s.status := fincore.subscription_transition(s.status, 'trial_ended');
            END IF;
            inv := fincore._invoice_lines(s);
            IF inv.id IS NOT NULL THEN
                r := fincore._collect_invoice(s, inv);
                s := r.s;
            END IF;
            UPDATE fincore.subscriptions x
               SET status = s.status, period_start = s.period_start, period_end = s.period_end, billed = s.billed,
                   billed_from = s.billed_from, lines = s.lines, updated_at = pg_catalog.now()
             WHERE x.tenant_id = t AND x.id = s.id;
            PERFORM fincore.emit('billing', 'subscription.renewed', 'subscription', s.id::text,
                                 pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                               'period_start', s.period_start,
                                                               'period_end', s.period_end, 'invoice_id', inv.id));
            n := n + 1;
        END LOOP;
    END LOOP;
    PERFORM fincore.set_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.billing_run(timestamptz, integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore.billing_run(timestamptz, integer) IS
    'Renews the subscriptions whose period ended by `at` (default now), at most max_subscriptions: the next period billed in full, invoiced (receivable <- revenue) and collected from the customer''s account (past_due if the ledger refuses). Concurrent runs share the work with SKIP LOCKED; each period is billed once. Returns how many were renewed.';

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

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('billing_run', 'fincore.billing_run_step(interval)', 130, 'Renew, invoice and collect the subscriptions whose period ended');

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.create_product(text,uuid)', 'app'),
    ('fincore.create_price(uuid,bigint,text,text,integer,text,integer,uuid)', 'app'),
    ('fincore.create_subscription(uuid,uuid,integer,timestamptz,text,uuid)', 'app'),
    ('fincore.preview_change(uuid,uuid,integer,timestamptz)', 'app'),
    ('fincore.change_subscription(uuid,uuid,integer,timestamptz)', 'app'),
    ('fincore.update_subscription_status(uuid,text)', 'app'),
    ('fincore.set_billing_accounts(text,uuid,uuid)', 'app'),
    ('fincore.pay_invoice(uuid)', 'app'),
    ('fincore.subscription_transition(text,text)', 'app'),
    ('fincore.subscription_entitles(text)', 'app'),
    ('fincore.billing_period(timestamptz,text,integer,timestamptz)', 'app'),
    ('fincore.proration(bigint,timestamptz,timestamptz,timestamptz,bigint,timestamptz,text)', 'app');
