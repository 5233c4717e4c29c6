-- ---------------------------------------------------------------------------
-- Payments (docs/payments.md): a payment object with Stripe's statuses, whose
-- every money step is a ledger posting in the caller's transaction, and whose
-- provider steps are jobs carrying a provider idempotency key.  The state
-- machine is C (src/payments_engine.c, through fincore.payment_transition);
-- this file stores its rows, posts to the ledger and enqueues the steps.
-- Every statement names its tenant; a payment's row is locked (FOR UPDATE)
-- by every function that changes it, so concurrent captures and refunds of
-- one payment run one at a time and never over-capture or over-refund.
-- The functions plan their statements once per session (force_generic_plan):
-- every statement is a look-up by primary key, whose plan never depends on
-- the values, and re-planning each call cost a third of a payment's time.
-- ---------------------------------------------------------------------------

-- A provider, per tenant: where its payments settle, its webhook secret, which of its
-- decline codes are final, and how long a step may wait for an answer.
CREATE TABLE fincore.payment_providers (
    tenant_id          uuid     NOT NULL,
    name               text     NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    settlement_account uuid     NOT NULL,
    disputes_account   uuid,
    loss_account       uuid,
    dispute_fee        bigint   NOT NULL DEFAULT 0 CHECK (dispute_fee >= 0),
    webhook_secret     text,
    hard_decline_codes text[]   NOT NULL DEFAULT '{}',
    step_timeout       interval NOT NULL DEFAULT '1 hour' CHECK (step_timeout > '0'),
    hold_timeout       interval CHECK (hold_timeout > '0'),
    max_attempts       integer  NOT NULL DEFAULT 10 CHECK (max_attempts BETWEEN 1 AND 100),
    -- The provider's processing fee: a fee schedule (docs/fees.md) charged on every capture,
    -- from the settlement account to fee_account.
    fee_schedule       text,
    fee_account        uuid,
    PRIMARY KEY (tenant_id, name),
    CHECK ((fee_schedule IS NULL) = (fee_account IS NULL)),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.payment_providers IS
    'Payment providers of a tenant, as data: the settlement, disputes and loss accounts, the webhook secret, the decline codes that are final (not retried), the time a step may wait for an answer, the hold''s ledger timeout, the attempts of a step''s job, and the fee schedule charged on captures.';
SELECT fincore.protect('fincore.payment_providers');
SELECT pg_catalog.pg_extension_config_dump('fincore.payment_providers', '');

-- A payment: its status (src/payments_engine.c) and amounts, in minor units of its currency.
CREATE TABLE fincore.payments (
    tenant_id          uuid        NOT NULL,
    id                 uuid        NOT NULL,
    idempotency_key    text        CHECK (pg_catalog.length(idempotency_key) BETWEEN 1 AND 255),
    provider           text        NOT NULL,
    status             text        NOT NULL,
    currency           text        NOT NULL,
    amount             bigint      NOT NULL CHECK (amount > 0),
    capture_method     text        NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
    multicapture       boolean     NOT NULL DEFAULT false,
    payer_account      uuid,
    settlement_account uuid        NOT NULL,
    hold_id            uuid,       -- the open hold on the ledger, if any
    authorized         bigint      NOT NULL DEFAULT 0,
    captured           bigint      NOT NULL DEFAULT 0,
    released           bigint      NOT NULL DEFAULT 0,
    refunded           bigint      NOT NULL DEFAULT 0,
    disputed           bigint      NOT NULL DEFAULT 0,
    lost               bigint      NOT NULL DEFAULT 0,
    capture_pending    bigint      NOT NULL DEFAULT 0,
    increment_pending  bigint      NOT NULL DEFAULT 0,
    refund_pending     bigint      NOT NULL DEFAULT 0,
    cancel_pending     boolean     NOT NULL DEFAULT false,
    steps              integer     NOT NULL DEFAULT 0,   -- the number of its steps: the last step_no
    fees               bigint      NOT NULL DEFAULT 0,   -- the provider's fees charged on its captures
    failure_code       text,
    metadata           jsonb,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, provider) REFERENCES fincore.payment_providers (tenant_id, name),
    CHECK (captured + released + capture_pending <= authorized),
    CHECK (refunded + refund_pending + disputed + lost <= captured)
);
COMMENT ON TABLE fincore.payments IS
    'Payments: status (Stripe''s, plus refunded, disputed, dispute_lost), amounts held, captured, released, refunded, disputed and lost, and the steps in flight. Written only by fincore''s payment functions, under the row''s lock.';
SELECT fincore.protect('fincore.payments');
SELECT pg_catalog.pg_extension_config_dump('fincore.payments', '');

-- The steps of a payment: each request to the provider (authorize, capture, increment,
-- cancel, refund) with the provider idempotency key derived from payment and step, and
-- what the provider answered; disputes, which the provider reports, are steps too.
CREATE TABLE fincore.payment_steps (
    tenant_id     uuid        NOT NULL,
    payment_id    uuid        NOT NULL,
    step_no       integer     NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('authorize', 'capture', 'increment', 'cancel', 'refund',
                                                       'dispute', 'dispute_won', 'dispute_lost')),
    amount        bigint,
    final         boolean     NOT NULL DEFAULT true,
    request_key   text,
    provider_key  text,       -- sent to the provider with the request: the same for every retry
    status        text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    outcome_code  text,
    outcome_source text,
    job_id        bigint,
    transfer_ids  uuid[]      NOT NULL DEFAULT '{}',
    reversed      bigint      NOT NULL DEFAULT 0,   -- of a capture: how much refunds have reversed
    requested_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    deadline      timestamptz,
    decided_at    timestamptz,
    PRIMARY KEY (tenant_id, payment_id, step_no),
    UNIQUE (tenant_id, provider_key),
    UNIQUE (tenant_id, payment_id, request_key),
    FOREIGN KEY (tenant_id, payment_id) REFERENCES fincore.payments (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX payment_steps_pending_idx ON fincore.payment_steps (tenant_id, deadline) WHERE status = 'pending';
COMMENT ON TABLE fincore.payment_steps IS
    'Each step of a payment: the request, its provider idempotency key, its job, its outcome (the first report wins), and the ledger transfers it made.';
SELECT fincore.protect('fincore.payment_steps');
SELECT pg_catalog.pg_extension_config_dump('fincore.payment_steps', '');

CREATE FUNCTION fincore.payment_transition(payment fincore.payments, action text, amount bigint DEFAULT NULL,
                                           final boolean DEFAULT true)
    RETURNS fincore.payments
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_payment_transition';
COMMENT ON FUNCTION fincore.payment_transition(fincore.payments, text, bigint, boolean) IS
    'The payment state machine (C): the row as the action leaves it, or ZF901/ZF903/ZF904/ZF905/ZF907 if the action is not allowed. Writes nothing.';

-- The tenant's payment, locked; ZF902 if there is none.
CREATE FUNCTION fincore._payment_lock(tenant uuid, payment_id uuid) RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    p fincore.payments;
BEGIN
    SELECT * INTO p FROM fincore.payments x WHERE x.tenant_id = tenant AND x.id = payment_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', coalesce(payment_id::text, 'NULL')
            USING ERRCODE = 'ZF902', HINT = 'Payments are visible only in their own tenant.';
    END IF;
    RETURN p;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_lock(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_lock(uuid, uuid) IS 'Internal: the tenant''s payment, locked FOR UPDATE (ZF902 if none).';

-- The payment's provider.
-- (PL/pgSQL: Citus cannot plan a SQL function's parameters.)
CREATE FUNCTION fincore._payment_provider(p fincore.payments) RETURNS fincore.payment_providers
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    prov fincore.payment_providers;
BEGIN
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = p.tenant_id AND v.name = p.provider;
    RETURN prov;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_provider(fincore.payments) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_provider(fincore.payments) IS 'Internal: the payment''s provider.';

-- Write the payment's new state and emit its event (topic payments, aggregate the payment).
CREATE FUNCTION fincore._payment_save(p fincore.payments, event text, extra jsonb DEFAULT '{}') RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    p.updated_at := pg_catalog.now();
    UPDATE fincore.payments x
       SET status = p.status, payer_account = p.payer_account, hold_id = p.hold_id, amount = p.amount,
           authorized = p.authorized, captured = p.captured, released = p.released, refunded = p.refunded,
           disputed = p.disputed, lost = p.lost, capture_pending = p.capture_pending,
           increment_pending = p.increment_pending, refund_pending = p.refund_pending,
           cancel_pending = p.cancel_pending, steps = p.steps, fees = p.fees, failure_code = p.failure_code,
           updated_at = p.updated_at
     WHERE x.tenant_id = p.tenant_id AND x.id = p.id;
    IF event IS NOT NULL THEN
        PERFORM fincore.emit('payments', 'payment.' || event, 'payment', p.id::text,
                             pg_catalog.jsonb_build_object(
                                 'payment_id', p.id, 'status', p.status, 'currency', p.currency,
                                 'amount', p.amount, 'authorized', p.authorized, 'captured', p.captured,
                                 'released', p.released, 'refunded', p.refunded, 'disputed', p.disputed,
                                 'lost', p.lost, 'fees', p.fees, 'failure_code', p.failure_code) || extra);
    END IF;
    RETURN p;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_save(fincore.payments, text, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_save(fincore.payments, text, jsonb) IS
    'Internal: writes a payment''s state and emits payment.<event> on topic payments.';

-- The id of a ledger transfer a payment's step makes: the same at every retry of the step,
-- so the ledger's idempotency turns a replay into "exists".
CREATE FUNCTION fincore._payment_transfer_id(payment_id uuid, step_no integer, part text) RETURNS uuid
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_payment_transfer_id';
COMMENT ON FUNCTION fincore._payment_transfer_id(uuid, integer, text) IS
    'Internal: the id of the ledger transfer a payment''s step makes (an MD5 of payment, step and leg: the same at every retry).';

-- A new step of the payment (p.steps counts it: the caller saves p): its provider key, and a
-- job on the provider's queue if it needs one.
CREATE FUNCTION fincore._payment_step(INOUT p fincore.payments, prov fincore.payment_providers, kind text,
                                      amount bigint, final boolean, request_key text, provider_step boolean,
                                      transfer_ids uuid[], OUT s fincore.payment_steps)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    p.steps := p.steps + 1;
    s.tenant_id := p.tenant_id;
    s.payment_id := p.id;
    s.step_no := p.steps;
    s.kind := kind;
    s.amount := amount;
    s.final := final;
    s.request_key := request_key;
    s.status := CASE WHEN provider_step THEN 'pending' ELSE 'succeeded' END;
    s.transfer_ids := transfer_ids;
    s.reversed := 0;
    s.requested_at := pg_catalog.now();
    IF provider_step THEN
        s.provider_key := p.id::text || ':' || s.step_no::text || ':' || kind;
        s.deadline := s.requested_at + prov.step_timeout;
        s.job_id := fincore.enqueue('payments:' || p.provider,
                                    pg_catalog.jsonb_build_object(
                                        'payment_id', p.id, 'step_no', s.step_no, 'kind', kind, 'amount', amount,
                                        'currency', p.currency, 'final', final, 'provider', p.provider,
                                        'provider_key', s.provider_key),
                                    max_attempts => prov.max_attempts, unique_key => s.provider_key);
    ELSE
        s.decided_at := s.requested_at;
    END IF;
    INSERT INTO fincore.payment_steps VALUES (s.*);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_step(fincore.payments, fincore.payment_providers, text, bigint, boolean, text, boolean, uuid[]) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_step(fincore.payments, fincore.payment_providers, text, bigint, boolean, text, boolean, uuid[]) IS
    'Internal: records a payment''s next step (counted in p.steps); a provider step gets its provider idempotency key, deadline and job.';

-- A step asked for again with the same request key: the step it made, if its fields match (ZF906 if not).
CREATE FUNCTION fincore._payment_replayed_step(p fincore.payments, kind text, amount bigint, final boolean,
                                               request_key text)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    s fincore.payment_steps;
BEGIN
    IF request_key IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO s FROM fincore.payment_steps x
     WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.request_key = _payment_replayed_step.request_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF s.kind <> kind OR (amount IS NOT NULL AND s.amount IS DISTINCT FROM amount) OR s.final <> final THEN
        RAISE EXCEPTION 'request key % of payment % was used for another step (% of %)',
                pg_catalog.quote_literal(request_key), p.id, s.kind, coalesce(s.amount::text, 'all')
            USING ERRCODE = 'ZF906', HINT = 'A request key names one step: use a new key for a new request.';
    END IF;
    RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_replayed_step(fincore.payments, text, bigint, boolean, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_replayed_step(fincore.payments, text, bigint, boolean, text) IS
    'Internal: the step a request key already made (ZF906 if it was made with other fields), or NULL.';

-- Replace the payment's hold: void it, post post_amount, hold hold_amount again, as one linked
-- chain (a partial capture that keeps the rest open, an incremental authorization).
CREATE FUNCTION fincore._payment_rehold(INOUT p fincore.payments, step_no integer, post_amount bigint,
                                        hold_amount bigint, OUT posted_id uuid)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    items fincore.transfer_request[] := '{}';
    prov fincore.payment_providers;
    meta jsonb := pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', step_no);
    new_hold uuid;
    bad record;
BEGIN
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = p.tenant_id AND v.name = p.provider;
    items := items || ROW(fincore._payment_transfer_id(p.id, step_no, 'void'), NULL, NULL, NULL, 0, false, NULL,
                          NULL, p.hold_id, NULL, post_amount > 0 OR hold_amount > 0, meta, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                          NULL)::fincore.transfer_request;
    IF post_amount > 0 THEN
        posted_id := fincore._payment_transfer_id(p.id, step_no, 'post');
        items := items || ROW(posted_id, p.payer_account, p.settlement_account, post_amount, 0, false, NULL,
                              NULL, NULL, NULL, hold_amount > 0, meta, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                              NULL, NULL, NULL)::fincore.transfer_request;
    END IF;
    IF hold_amount > 0 THEN
        new_hold := fincore._payment_transfer_id(p.id, step_no, 'hold');
        items := items || ROW(new_hold, p.payer_account, p.settlement_account, hold_amount, 0, true,
                              prov.hold_timeout, NULL, NULL, NULL, false, meta, NULL, NULL, NULL, NULL, NULL, NULL,
                              NULL, NULL, NULL, NULL)::fincore.transfer_request;
    END IF;
    SELECT r.index, r.result INTO bad FROM fincore.create_transfers(items) r
     WHERE r.result NOT IN ('ok', 'exists') ORDER BY r.index LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'payment %: the ledger refused its hold''s replacement (item %: %)', p.id, bad.index, bad.result
            USING ERRCODE = 'ZF903', HINT = 'The payer''s account or the hold no longer allow it.';
    END IF;
    p.hold_id := new_hold;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_rehold(fincore.payments, integer, bigint, bigint) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_rehold(fincore.payments, integer, bigint, bigint) IS
    'Internal: voids a payment''s hold, posts an amount and holds the rest again, as one linked chain.';

-- ---------------------------------------------------------------------------
-- The API.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.create_payment_provider(name text, settlement_account uuid,
        webhook_secret text DEFAULT NULL, hard_decline_codes text[] DEFAULT '{}',
        step_timeout interval DEFAULT '1 hour', hold_timeout interval DEFAULT NULL,
        disputes_account uuid DEFAULT NULL, loss_account uuid DEFAULT NULL, dispute_fee bigint DEFAULT 0,
        max_attempts integer DEFAULT 10, fee_schedule text DEFAULT NULL, fee_account uuid DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    acc uuid;
    bad uuid;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid payment provider name %', coalesce(pg_catalog.quote_literal(name), 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'A name is 1 to 63 of a-z, 0-9, _ and -, starting with a letter.';
    END IF;
    IF step_timeout IS NULL OR step_timeout <= '0' OR (hold_timeout IS NOT NULL AND hold_timeout <= '0')
       OR dispute_fee IS NULL OR dispute_fee < 0 OR max_attempts IS NULL OR max_attempts NOT BETWEEN 1 AND 100
       OR hard_decline_codes IS NULL OR pg_catalog.array_position(hard_decline_codes, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'invalid payment provider %: step_timeout and hold_timeout must be positive, dispute_fee >= 0, max_attempts 1 to 100, hard_decline_codes without NULL', name
            USING ERRCODE = 'ZF901';
    END IF;
    IF (fee_schedule IS NULL) <> (fee_account IS NULL) THEN
        RAISE EXCEPTION 'invalid payment provider %: fee_schedule and fee_account go together', name
            USING ERRCODE = 'ZF901', HINT = 'The fee schedule is charged on captures, to the fee account.';
    END IF;
    IF fee_schedule IS NOT NULL THEN
        PERFORM FROM fincore.fee_schedules f WHERE f.tenant_id = tenant AND f.code = fee_schedule LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'fee schedule % not found', pg_catalog.quote_literal(fee_schedule)
                USING ERRCODE = 'ZF901', HINT = 'Define it first with fincore.define_fee_schedule().';
        END IF;
    END IF;
    -- One look-up per account (a statement each that Citus routes to the tenant's shard).
    FOREACH acc IN ARRAY ARRAY[settlement_account, disputes_account, loss_account, fee_account] LOOP
        CONTINUE WHEN acc IS NULL OR bad IS NOT NULL;
        PERFORM FROM fincore.accounts x WHERE x.tenant_id = tenant AND x.id = acc;
        IF NOT FOUND THEN
            bad := acc;
        END IF;
    END LOOP;
    IF settlement_account IS NULL OR bad IS NOT NULL THEN
        RAISE EXCEPTION 'account % not found', coalesce(bad::text, 'NULL')
            USING ERRCODE = 'ZF301', HINT = 'A provider''s settlement, disputes, loss and fee accounts are the tenant''s.';
    END IF;
    INSERT INTO fincore.payment_providers (tenant_id, name, settlement_account, disputes_account, loss_account,
                                           dispute_fee, webhook_secret, hard_decline_codes, step_timeout,
                                           hold_timeout, max_attempts, fee_schedule, fee_account)
    VALUES (tenant, name, settlement_account, disputes_account, loss_account, dispute_fee, webhook_secret,
            hard_decline_codes, step_timeout, hold_timeout, max_attempts, fee_schedule, fee_account)
    ON CONFLICT ON CONSTRAINT payment_providers_pkey DO UPDATE
       SET settlement_account = excluded.settlement_account, disputes_account = excluded.disputes_account,
           loss_account = excluded.loss_account, dispute_fee = excluded.dispute_fee,
           webhook_secret = excluded.webhook_secret, hard_decline_codes = excluded.hard_decline_codes,
           step_timeout = excluded.step_timeout, hold_timeout = excluded.hold_timeout,
           max_attempts = excluded.max_attempts, fee_schedule = excluded.fee_schedule,
           fee_account = excluded.fee_account;
END
$fn$;
COMMENT ON FUNCTION fincore.create_payment_provider(text, uuid, text, text[], interval, interval, uuid, uuid, bigint, integer, text, uuid) IS
    'Creates (or updates) a payment provider of the current tenant: settlement account, webhook secret, final decline codes, step and hold timeouts, disputes and loss accounts, dispute fee, attempts of a step''s job, and the fee schedule charged on every capture (to fee_account). Tenant admins only (ZF803). ZF901, ZF301.';

CREATE FUNCTION fincore.create_payment(amount bigint, currency text, provider text,
        payer_account uuid DEFAULT NULL, capture_method text DEFAULT 'automatic', multicapture boolean DEFAULT false,
        confirm boolean DEFAULT false, idempotency_key text DEFAULT NULL, metadata jsonb DEFAULT NULL,
        id uuid DEFAULT NULL)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments;
    prov fincore.payment_providers;
    acc record;
BEGIN
    IF amount IS NULL OR amount <= 0 THEN
        RAISE EXCEPTION 'invalid payment amount %', coalesce(amount::text, 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'A payment''s amount is a positive number of minor units.';
    END IF;
    IF capture_method IS NULL OR capture_method NOT IN ('automatic', 'manual') THEN
        RAISE EXCEPTION 'invalid capture method %', coalesce(pg_catalog.quote_literal(capture_method), 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'automatic (captured when authorized) or manual.';
    END IF;
    IF multicapture IS NULL OR confirm IS NULL OR (multicapture AND capture_method <> 'manual') THEN
        RAISE EXCEPTION 'invalid payment: multicapture needs capture_method => ''manual'''
            USING ERRCODE = 'ZF901';
    END IF;
    IF idempotency_key IS NOT NULL AND pg_catalog.length(idempotency_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid idempotency key: 1 to 255 characters' USING ERRCODE = 'ZF901';
    END IF;
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = provider;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment provider % not found', coalesce(pg_catalog.quote_literal(provider), 'NULL')
            USING ERRCODE = 'ZF908', HINT = 'Create it with fincore.create_payment_provider().';
    END IF;
    SELECT a.currency INTO acc FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = prov.settlement_account;
    IF currency IS NULL OR acc.currency <> currency THEN
        RAISE EXCEPTION 'payment currency % is not the currency of provider %''s settlement account (%)',
                coalesce(currency, 'NULL'), provider, acc.currency
            USING ERRCODE = 'ZF103';
    END IF;
    IF payer_account IS NOT NULL THEN
        PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = payer_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found', payer_account
                USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
        END IF;
    END IF;
    IF confirm AND payer_account IS NULL THEN
        RAISE EXCEPTION 'a payment confirmed at creation needs its payer account' USING ERRCODE = 'ZF901';
    END IF;

    p.tenant_id := tenant;
    p.id := coalesce(id, fincore.uuidv7());
    p.idempotency_key := idempotency_key;
    p.provider := provider;
    p.status := CASE WHEN payer_account IS NULL THEN 'requires_payment_method' ELSE 'requires_confirmation' END;
    p.currency := currency;
    p.amount := amount;
    p.capture_method := capture_method;
    p.multicapture := multicapture;
    p.payer_account := payer_account;
    p.settlement_account := prov.settlement_account;
    p.metadata := metadata;
    INSERT INTO fincore.payments (tenant_id, id, idempotency_key, provider, status, currency, amount, capture_method,
                                  multicapture, payer_account, settlement_account, metadata)
    VALUES (p.tenant_id, p.id, p.idempotency_key, p.provider, p.status, p.currency, p.amount, p.capture_method,
            p.multicapture, p.payer_account, p.settlement_account, p.metadata)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- A replay (same key, or same id): the payment it made, if the fields are the same.
        SELECT * INTO p FROM fincore.payments x
         WHERE x.tenant_id = tenant
           AND (x.idempotency_key = create_payment.idempotency_key OR x.id = create_payment.id)
         ORDER BY (x.idempotency_key = create_payment.idempotency_key) DESC NULLS LAST
         LIMIT 1;
        IF p.amount <> amount OR p.currency <> currency OR p.provider <> provider
           OR p.capture_method <> capture_method OR p.multicapture <> multicapture
           OR (payer_account IS NOT NULL AND p.payer_account IS DISTINCT FROM payer_account)
           OR p.idempotency_key IS DISTINCT FROM idempotency_key THEN
            RAISE EXCEPTION 'payment % exists with other fields', p.id
                USING ERRCODE = 'ZF906',
                      HINT = 'An idempotency key (or id) names one payment: use a new key for a new payment.';
        END IF;
        RETURN p;
    END IF;
    PERFORM fincore.emit('payments', 'payment.created', 'payment', p.id::text,
                         pg_catalog.jsonb_build_object('payment_id', p.id, 'status', p.status, 'amount', p.amount,
                                                       'currency', p.currency, 'provider', p.provider));
    IF confirm THEN
        RETURN fincore.confirm_payment(p.id);
    END IF;
    RETURN p;
END
$fn$;
COMMENT ON FUNCTION fincore.create_payment(bigint, text, text, uuid, text, boolean, boolean, text, jsonb, uuid) IS
    'Creates a payment of amount minor units through a provider: requires_payment_method without a payer account, else requires_confirmation (confirm => true confirms it at once). Idempotent by idempotency_key (or id): a replay returns the payment, with other fields ZF906. ZF901, ZF908, ZF103, ZF301.';

CREATE FUNCTION fincore.confirm_payment(payment_id uuid, payer_account uuid DEFAULT NULL)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    prov fincore.payment_providers;
    st record;
    hold_id uuid;
BEGIN
    IF payer_account IS NOT NULL AND p.status = 'requires_payment_method' THEN
        PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = payer_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found', payer_account
                USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
        END IF;
        p := fincore.payment_transition(p, 'attach');
        p.payer_account := payer_account;
    ELSIF p.status IN ('processing', 'requires_action', 'requires_capture', 'succeeded')
          AND (payer_account IS NULL OR payer_account = p.payer_account) THEN
        RETURN p;   -- confirmed already: a replay
    END IF;
    p := fincore.payment_transition(p, 'confirm');
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = p.provider;
    -- The hold: the payer's funds are reserved while the provider authorizes.
    hold_id := fincore._payment_transfer_id(p.id, 0, 'hold');
    PERFORM fincore.transfer(p.payer_account, p.settlement_account, p.amount, id => hold_id, pending => true,
                             timeout => prov.hold_timeout,
                             metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', 1));
    p.hold_id := hold_id;
    st := fincore._payment_step(p, prov, 'authorize', p.amount, true, NULL, true, ARRAY[hold_id]);
    RETURN fincore._payment_save(st.p, 'processing', pg_catalog.jsonb_build_object('hold_id', hold_id));
END
$fn$;
COMMENT ON FUNCTION fincore.confirm_payment(uuid, uuid) IS
    'Confirms a payment (attaching the payer account if it had none): holds its amount on the ledger (payer to settlement) and enqueues the authorize step; status processing. A replay of a confirmed payment returns it. ZF902, ZF903, ZF301, and the ledger''s refusals of the hold.';

CREATE FUNCTION fincore.capture_payment(payment_id uuid, amount bigint DEFAULT NULL, final boolean DEFAULT true,
                                        request_key text DEFAULT NULL)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps := fincore._payment_replayed_step(p, 'capture', amount, coalesce(final, true), request_key);
    amt bigint;
    st record;
BEGIN
    IF s.step_no IS NOT NULL THEN
        RETURN s;
    END IF;
    amt := coalesce(amount, p.authorized - p.captured - p.released - p.capture_pending);
    p := fincore.payment_transition(p, 'capture', amt, coalesce(final, true));
    st := fincore._payment_step(p, fincore._payment_provider(p), 'capture', amt, coalesce(final, true), request_key, true, '{}');
    PERFORM fincore._payment_save(st.p, 'capture_requested', pg_catalog.jsonb_build_object('step_no', (st.s).step_no, 'capture', amt));
    RETURN st.s;
END
$fn$;
COMMENT ON FUNCTION fincore.capture_payment(uuid, bigint, boolean, text) IS
    'Asks the provider to capture amount (NULL: all that can be) of an authorized payment; final => false keeps the rest open (multicapture payments). Returns the step; the ledger posts when the provider confirms. Idempotent by request_key. ZF902, ZF903, ZF904, ZF906, ZF907.';

CREATE FUNCTION fincore.increment_authorization(payment_id uuid, amount bigint, request_key text DEFAULT NULL)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps := fincore._payment_replayed_step(p, 'increment', amount, true, request_key);
    st record;
BEGIN
    IF s.step_no IS NOT NULL THEN
        RETURN s;
    END IF;
    p := fincore.payment_transition(p, 'increment', amount);
    st := fincore._payment_step(p, fincore._payment_provider(p), 'increment', amount, true, request_key, true, '{}');
    PERFORM fincore._payment_save(st.p, 'increment_requested', pg_catalog.jsonb_build_object('step_no', (st.s).step_no, 'increment', amount));
    RETURN st.s;
END
$fn$;
COMMENT ON FUNCTION fincore.increment_authorization(uuid, bigint, text) IS
    'Asks the provider to raise an uncaptured authorization by amount; the hold grows when it confirms. Idempotent by request_key. ZF902, ZF903, ZF906, ZF907.';

CREATE FUNCTION fincore.cancel_payment(payment_id uuid, request_key text DEFAULT NULL)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps := fincore._payment_replayed_step(p, 'cancel', NULL, true, request_key);
    st record;
BEGIN
    IF s.step_no IS NOT NULL OR p.status = 'canceled' OR (p.cancel_pending AND request_key IS NULL) THEN
        RETURN p;
    END IF;
    p := fincore.payment_transition(p, 'cancel');
    IF p.status = 'canceled' THEN
        RETURN fincore._payment_save(p, 'canceled');    -- nothing was held
    END IF;
    st := fincore._payment_step(p, fincore._payment_provider(p), 'cancel', NULL, true, request_key, true, '{}');
    RETURN fincore._payment_save(st.p, 'cancel_requested', pg_catalog.jsonb_build_object('step_no', (st.s).step_no));
END
$fn$;
COMMENT ON FUNCTION fincore.cancel_payment(uuid, text) IS
    'Cancels a payment: at once if nothing is held, else asks the provider (the hold is voided when it confirms). Returns the payment. ZF902, ZF903, ZF906, ZF907.';

CREATE FUNCTION fincore.refund_payment(payment_id uuid, amount bigint DEFAULT NULL, request_key text DEFAULT NULL)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps := fincore._payment_replayed_step(p, 'refund', amount, true, request_key);
    amt bigint;
    st record;
BEGIN
    IF s.step_no IS NOT NULL THEN
        RETURN s;
    END IF;
    amt := coalesce(amount, p.captured - p.refunded - p.refund_pending - p.disputed - p.lost);
    p := fincore.payment_transition(p, 'refund', amt);
    st := fincore._payment_step(p, fincore._payment_provider(p), 'refund', amt, true, request_key, true, '{}');
    PERFORM fincore._payment_save(st.p, 'refund_requested', pg_catalog.jsonb_build_object('step_no', (st.s).step_no, 'refund', amt));
    RETURN st.s;
END
$fn$;
COMMENT ON FUNCTION fincore.refund_payment(uuid, bigint, text) IS
    'Asks the provider to refund amount (NULL: all that can be) of a captured payment; never more than captured less refunded, refunds in flight and disputed (ZF905). The ledger reverses the captures when the provider confirms. Idempotent by request_key. ZF902, ZF903, ZF906.';

-- The provider's fee on a capture of amount: a transfer from the settlement account to the fee
-- account, in the capture's transaction, linked to it by its metadata; counted in p.fees.
CREATE FUNCTION fincore._payment_fee(INOUT p fincore.payments, step_no integer, amount bigint, captured_by uuid,
                                     OUT fee_id uuid)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    prov fincore.payment_providers := fincore._payment_provider(p);
    q record;
BEGIN
    IF prov.fee_schedule IS NULL THEN
        RETURN;
    END IF;
    q := fincore.quote_fee(prov.fee_schedule, amount, 'on_top',
                           pg_catalog.jsonb_build_object('payment_id', p.id, 'provider', p.provider),
                           pg_catalog.now(), p.currency);
    IF q.fee > 0 THEN
        fee_id := fincore._payment_transfer_id(p.id, step_no, 'fee');
        PERFORM fincore.transfer(p.settlement_account, prov.fee_account, q.fee, id => fee_id,
                                 metadata => pg_catalog.jsonb_build_object(
                                     'payment_id', p.id, 'step_no', step_no, 'fee_of', captured_by,
                                     'fee_schedule_id', q.schedule_id));
        p.fees := p.fees + q.fee;
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_fee(fincore.payments, integer, bigint, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_fee(fincore.payments, integer, bigint, uuid) IS
    'Internal: the provider''s fee on a capture, posted from the settlement account to the fee account.';

-- The ledger postings of a step's success, and the payment's transition.
CREATE FUNCTION fincore._payment_step_succeeded(INOUT p fincore.payments, INOUT s fincore.payment_steps)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    tid uuid;
    rh record;
    fee record;
    r fincore.transfer_result;
    left_to_refund bigint;
    cap record;
    part bigint;
    event text;
BEGIN
    CASE s.kind
    WHEN 'authorize' THEN
        p := fincore.payment_transition(p, 'authorized');
        event := 'authorized';
        IF p.status = 'succeeded' THEN   -- automatic capture
            r := fincore.post_pending(p.hold_id, NULL, fincore._payment_transfer_id(p.id, s.step_no, 'post'));
            s.transfer_ids := s.transfer_ids || r.id;
            p.hold_id := NULL;
            fee := fincore._payment_fee(p, s.step_no, p.captured, r.id);
            p := fee.p;
            IF fee.fee_id IS NOT NULL THEN
                s.transfer_ids := s.transfer_ids || fee.fee_id;
            END IF;
            event := 'captured';
        END IF;
    WHEN 'capture' THEN
        IF s.final OR NOT p.multicapture OR p.authorized - p.captured - p.released - s.amount = 0 THEN
            r := fincore.post_pending(p.hold_id, s.amount, fincore._payment_transfer_id(p.id, s.step_no, 'post'));
            tid := r.id;
            p := fincore.payment_transition(p, 'captured', s.amount, true);
            p.hold_id := NULL;
        ELSE
            SELECT * INTO rh FROM fincore._payment_rehold(p, s.step_no, s.amount,
                                                            p.authorized - p.captured - p.released - s.amount);
            p := fincore.payment_transition(rh.p, 'captured', s.amount, false);
            tid := rh.posted_id;
        END IF;
        s.transfer_ids := s.transfer_ids || tid;
        fee := fincore._payment_fee(p, s.step_no, s.amount, tid);
        p := fee.p;
        IF fee.fee_id IS NOT NULL THEN
            s.transfer_ids := s.transfer_ids || fee.fee_id;
        END IF;
        event := 'captured';
    WHEN 'increment' THEN
        SELECT * INTO rh FROM fincore._payment_rehold(p, s.step_no, 0,
                                                        p.authorized - p.captured - p.released + s.amount);
        s.transfer_ids := s.transfer_ids || (rh.p).hold_id;
        p := fincore.payment_transition(rh.p, 'incremented', s.amount);
        event := 'authorization_incremented';
    WHEN 'cancel' THEN
        IF p.cancel_pending THEN
            r := fincore.void_pending(p.hold_id, fincore._payment_transfer_id(p.id, s.step_no, 'void'));
            s.transfer_ids := s.transfer_ids || r.id;
            p.hold_id := NULL;
            p := fincore.payment_transition(p, 'canceled');
        END IF;
        -- else the authorization failed meanwhile (or this cancels a late one at the provider):
        -- its hold was released already, nothing is left to cancel here
        event := CASE WHEN p.status = 'canceled' THEN 'canceled' ELSE 'authorization_released' END;
    WHEN 'refund' THEN
        -- Reverse the captures, oldest first, each by what is left of it.
        left_to_refund := s.amount;
        FOR cap IN
            -- The capture's transfer: an automatic capture's is after the hold, a capture's first
            -- (a fee, if any, follows it).
            SELECT x.step_no, x.transfer_ids[CASE WHEN x.kind = 'authorize' THEN 2 ELSE 1 END] AS transfer_id,
                   x.amount AS captured, x.reversed
              FROM fincore.payment_steps x
             WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.status = 'succeeded'
               AND (x.kind = 'capture' OR (x.kind = 'authorize' AND p.capture_method = 'automatic'))
             ORDER BY x.step_no
        LOOP
            EXIT WHEN left_to_refund = 0;
            part := LEAST(left_to_refund, cap.captured - cap.reversed);
            CONTINUE WHEN part <= 0;
            r := fincore.reverse_transfer(cap.transfer_id, part,
                                 fincore._payment_transfer_id(p.id, s.step_no, 'reverse:' || cap.step_no::text));
            s.transfer_ids := s.transfer_ids || r.id;
            UPDATE fincore.payment_steps x SET reversed = x.reversed + part
             WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.step_no = cap.step_no;
            left_to_refund := left_to_refund - part;
        END LOOP;
        IF left_to_refund <> 0 THEN
            RAISE EXCEPTION 'payment %: its captures do not cover a refund of %', p.id, s.amount
                USING ERRCODE = 'ZF905';
        END IF;
        p := fincore.payment_transition(p, 'refunded', s.amount);
        event := 'refunded';
    END CASE;
    s.status := 'succeeded';
    p := fincore._payment_save(p, event, pg_catalog.jsonb_build_object('step_no', s.step_no, 'kind', s.kind,
                                                                        'step_amount', s.amount,
                                                                        'transfer_ids', s.transfer_ids));
    -- An invoice's payment (billing: fincore._collect_invoice) settles its invoice.
    IF event = 'captured' AND p.metadata OPERATOR(pg_catalog.?) 'invoice_id' THEN
        PERFORM fincore._invoice_payment_result(p, true, NULL);
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_step_succeeded(fincore.payments, fincore.payment_steps) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_step_succeeded(fincore.payments, fincore.payment_steps) IS
    'Internal: the ledger postings and the transition of a provider step that succeeded.';

-- A step that failed for good: its compensation, and the payment's transition.
CREATE FUNCTION fincore._payment_step_failed(INOUT p fincore.payments, INOUT s fincore.payment_steps)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    r fincore.transfer_result;
    event text;
BEGIN
    CASE s.kind
    WHEN 'authorize' THEN
        -- Compensation: the hold is given back.
        r := fincore.void_pending(p.hold_id, fincore._payment_transfer_id(p.id, s.step_no, 'void'));
        s.transfer_ids := s.transfer_ids || r.id;
        p.hold_id := NULL;
        p := fincore.payment_transition(p, 'authorize_failed');
        p.failure_code := s.outcome_code;
        event := 'failed';
    WHEN 'capture' THEN
        p := fincore.payment_transition(p, 'capture_failed', s.amount);
        event := 'capture_failed';
    WHEN 'increment' THEN
        p := fincore.payment_transition(p, 'increment_failed', s.amount);
        event := 'increment_failed';
    WHEN 'cancel' THEN
        IF p.cancel_pending THEN
            p := fincore.payment_transition(p, 'cancel_failed');
        END IF;
        event := 'cancel_failed';
    WHEN 'refund' THEN
        p := fincore.payment_transition(p, 'refund_failed', s.amount);
        event := 'refund_failed';
    END CASE;
    -- A step failed by its deadline: its job, if no worker finished it, is not sent any more.
    IF s.outcome_source = 'timeout' AND s.job_id IS NOT NULL THEN
        BEGIN
            PERFORM fincore.cancel(s.job_id);
        EXCEPTION WHEN SQLSTATE 'ZF601' OR SQLSTATE 'ZF607' THEN
            NULL;   -- gone or finished already
        END;
    END IF;
    s.status := 'failed';
    p := fincore._payment_save(p, event, pg_catalog.jsonb_build_object('step_no', s.step_no, 'kind', s.kind,
                                                                        'step_amount', s.amount,
                                                                        'code', s.outcome_code,
                                                                        'source', s.outcome_source));
    -- An invoice's payment (billing: fincore._collect_invoice) that failed: an attempt dunning retries.
    IF event = 'failed' AND p.metadata OPERATOR(pg_catalog.?) 'invoice_id' THEN
        PERFORM fincore._invoice_payment_result(p, false, s.outcome_code);
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_step_failed(fincore.payments, fincore.payment_steps) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_step_failed(fincore.payments, fincore.payment_steps) IS
    'Internal: the compensation and the transition of a provider step that failed for good.';

-- A success the provider reports for a step fincore already failed by its deadline (its
-- compensation has run): once per step, an event for reconciliation, and for an authorization a
-- cancellation at the provider (a step of kind cancel that moves no money here).
CREATE FUNCTION fincore._payment_late_success(p fincore.payments, s fincore.payment_steps, source text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    key text := 'late:' || s.step_no::text;
    st record;
BEGIN
    PERFORM FROM fincore.payment_steps x
     WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.request_key = key;
    IF FOUND THEN
        RETURN;   -- compensated already
    END IF;
    IF s.kind = 'authorize' THEN
        st := fincore._payment_step(p, fincore._payment_provider(p), 'cancel', NULL, true, key, true, '{}');
        p := st.p;
    ELSE
        -- Nothing to run here: the record is what reconciliation starts from.
        st := fincore._payment_step(p, fincore._payment_provider(p), s.kind, s.amount, s.final, key, false, '{}');
        p := st.p;
        UPDATE fincore.payment_steps x SET status = 'failed', outcome_code = 'late_success'
         WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.step_no = (st.s).step_no;
    END IF;
    PERFORM fincore._payment_save(p, 'late_success',
                                  pg_catalog.jsonb_build_object('step_no', s.step_no, 'kind', s.kind,
                                                                'step_amount', s.amount, 'source', source,
                                                                'compensation_step', (st.s).step_no));
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_late_success(fincore.payments, fincore.payment_steps, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_late_success(fincore.payments, fincore.payment_steps, text) IS
    'Internal: a success reported after a step was failed by its deadline: a payment.late_success event, and for an authorization a cancellation at the provider.';

CREATE FUNCTION fincore.payment_step_result(payment_id uuid, step_no integer, outcome text,
                                            code text DEFAULT NULL, source text DEFAULT 'worker')
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps;
    done record;
BEGIN
    IF outcome IS NULL OR outcome NOT IN ('succeeded', 'failed', 'requires_action') THEN
        RAISE EXCEPTION 'invalid step outcome %', coalesce(pg_catalog.quote_literal(outcome), 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'succeeded, failed, or requires_action (of an authorization).';
    END IF;
    IF source IS NULL OR source NOT IN ('worker', 'webhook', 'timeout') THEN
        RAISE EXCEPTION 'invalid step outcome source %', coalesce(pg_catalog.quote_literal(source), 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'worker, webhook or timeout.';
    END IF;
    -- Every writer of a step holds its payment's lock: the step needs none of its own.
    SELECT * INTO s FROM fincore.payment_steps x
     WHERE x.tenant_id = tenant AND x.payment_id = p.id AND x.step_no = payment_step_result.step_no;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % of payment % not found', coalesce(step_no::text, 'NULL'), p.id
            USING ERRCODE = 'ZF909';
    END IF;
    -- The first report that decides the step wins; every later one is a no-op, except that a
    -- success reported after fincore failed the step by its deadline is compensated at the
    -- provider (an authorization is cancelled there) and announced for reconciliation.
    IF s.status <> 'pending' THEN
        IF outcome = 'succeeded' AND s.status = 'failed' AND s.outcome_source = 'timeout' THEN
            PERFORM fincore._payment_late_success(p, s, source);
        END IF;
        RETURN s;
    END IF;
    IF outcome = 'requires_action' THEN
        IF s.kind <> 'authorize' THEN
            RAISE EXCEPTION 'only an authorization can require an action (step % is a %)', s.step_no, s.kind
                USING ERRCODE = 'ZF901';
        END IF;
        IF p.status = 'processing' THEN
            p := fincore.payment_transition(p, 'requires_action');
            PERFORM fincore._payment_save(p, 'requires_action', pg_catalog.jsonb_build_object('step_no', s.step_no));
        END IF;
        RETURN s;
    END IF;
    s.outcome_code := code;
    s.outcome_source := source;
    IF outcome = 'failed' AND source = 'worker' AND pg_catalog.now() < s.deadline
       AND NOT (coalesce(code, '') = ANY ((fincore._payment_provider(p)).hard_decline_codes)) THEN
        -- A soft failure: the step stays pending, the worker fails the job and the queue retries it.
        UPDATE fincore.payment_steps x SET outcome_code = code, outcome_source = source
         WHERE x.tenant_id = tenant AND x.payment_id = p.id AND x.step_no = s.step_no;
        RETURN s;
    END IF;
    s.decided_at := pg_catalog.now();
    IF s.kind = 'authorize' AND p.status IN ('canceled', 'failed') THEN
        -- Canceled (or failed) while the authorization waited, its hold released: the answer is
        -- recorded and changes nothing.
        s.status := CASE WHEN outcome = 'succeeded' THEN 'succeeded' ELSE 'failed' END;
        UPDATE fincore.payment_steps x
           SET status = s.status, outcome_code = s.outcome_code, outcome_source = s.outcome_source,
               decided_at = s.decided_at
         WHERE x.tenant_id = tenant AND x.payment_id = p.id AND x.step_no = s.step_no;
        RETURN s;
    END IF;
    IF outcome = 'succeeded' THEN
        SELECT * INTO done FROM fincore._payment_step_succeeded(p, s);
    ELSE
        SELECT * INTO done FROM fincore._payment_step_failed(p, s);
    END IF;
    p := done.p;
    s := done.s;
    UPDATE fincore.payment_steps x
       SET status = s.status, outcome_code = s.outcome_code, outcome_source = s.outcome_source,
           transfer_ids = s.transfer_ids, decided_at = s.decided_at
     WHERE x.tenant_id = tenant AND x.payment_id = p.id AND x.step_no = s.step_no;
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.payment_step_result(uuid, integer, text, text, text) IS
    'Reports a provider step''s outcome (succeeded, failed, requires_action) from the worker, a webhook or a timeout: the first report that decides the step wins and posts its ledger entries (or runs its compensation); later reports are no-ops. A failure with a code that is not a hard decline, from the worker before the step''s deadline, leaves the step pending (retry the job). Trusted roles only. ZF901, ZF902, ZF909.';

CREATE FUNCTION fincore.payment_webhook_result(provider_key text, outcome text, code text DEFAULT NULL)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.payment_steps;
BEGIN
    SELECT * INTO s FROM fincore.payment_steps x WHERE x.tenant_id = tenant AND x.provider_key = provider_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no payment step has provider key %', coalesce(pg_catalog.quote_literal(provider_key), 'NULL')
            USING ERRCODE = 'ZF909';
    END IF;
    RETURN fincore.payment_step_result(s.payment_id, s.step_no, outcome, code, 'webhook');
END
$fn$;
COMMENT ON FUNCTION fincore.payment_webhook_result(text, text, text) IS
    'Reports a step''s outcome from the provider''s webhook (after fincore.accept_webhook() checked its signature and recorded it once), by the provider idempotency key the step sent: as payment_step_result(). Trusted roles only. ZF909.';

CREATE FUNCTION fincore.expire_payment_steps(max_steps integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
DECLARE
    t uuid;
    r record;
    n integer := 0;
    -- What fincore.set_tenant() set in this transaction ('' if nothing), given back at the end.
    saved text := pg_catalog.current_setting('fincore.tenant', true);
BEGIN
    -- The tenants with due steps (a read of every shard on Citus, without locks), then each
    -- tenant's steps by statements that name it, run as that tenant.
    FOR t IN SELECT DISTINCT x.tenant_id FROM fincore.payment_steps x
              WHERE x.status = 'pending' AND x.deadline < pg_catalog.now() ORDER BY 1 LOOP
        EXIT WHEN n >= max_steps;
        PERFORM fincore._use_tenant(t);
        FOR r IN SELECT x.payment_id, x.step_no FROM fincore.payment_steps x
                  WHERE x.tenant_id = t AND x.status = 'pending' AND x.deadline < pg_catalog.now()
                  ORDER BY x.deadline LIMIT max_steps - n
        LOOP
            PERFORM fincore.payment_step_result(r.payment_id, r.step_no, 'failed', 'timeout', 'timeout');
            n := n + 1;
        END LOOP;
    END LOOP;
    PERFORM fincore._use_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.expire_payment_steps(integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore.expire_payment_steps(integer) IS
    'Fails the provider steps whose deadline has passed (oldest first, at most max_steps), running their compensations: a maintenance task. Returns how many.';

CREATE FUNCTION fincore.expire_payment_steps_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.expire_payment_steps(100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.expire_payment_steps_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.expire_payment_steps_step(interval) IS
    'Maintenance step: expire_payment_steps in batches of 100 until none is due or the budget is spent.';

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('expire_payment_steps', 'fincore.expire_payment_steps_step(interval)', 120,
     'Fail the payment steps past their deadline, with their compensations');

CREATE FUNCTION fincore.open_dispute(payment_id uuid, amount bigint DEFAULT NULL)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    prov fincore.payment_providers;
    st record;
    amt bigint := coalesce(amount, p.captured - p.refunded - p.refund_pending - p.disputed - p.lost);
    r fincore.transfer_result;
BEGIN
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = p.provider;
    IF prov.disputes_account IS NULL THEN
        RAISE EXCEPTION 'provider % has no disputes account', p.provider
            USING ERRCODE = 'ZF901', HINT = 'Set disputes_account with fincore.create_payment_provider().';
    END IF;
    p := fincore.payment_transition(p, 'dispute', amt);
    r := fincore.transfer(p.settlement_account, prov.disputes_account, amt,
                          id => fincore._payment_transfer_id(p.id, p.steps + 1, 'dispute'),
                          metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', p.steps + 1));
    st := fincore._payment_step(p, prov, 'dispute', amt, true, NULL, false, ARRAY[r.id]);
    RETURN fincore._payment_save(st.p, 'disputed', pg_catalog.jsonb_build_object('step_no', (st.s).step_no, 'dispute', amt));
END
$fn$;
COMMENT ON FUNCTION fincore.open_dispute(uuid, bigint) IS
    'Records a dispute the provider reported: moves amount (NULL: all captured and not refunded) from the settlement account to the provider''s disputes account; status disputed. Trusted roles only. ZF902, ZF903, ZF905, ZF901.';

CREATE FUNCTION fincore.resolve_dispute(payment_id uuid, won boolean)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    prov fincore.payment_providers;
    st record;
    step_no integer;
    amt bigint := p.disputed;
    ids uuid[] := '{}';
    r fincore.transfer_result;
BEGIN
    IF won IS NULL THEN
        RAISE EXCEPTION 'resolve_dispute needs won => true or false' USING ERRCODE = 'ZF901';
    END IF;
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = p.provider;
    p := fincore.payment_transition(p, CASE WHEN won THEN 'dispute_won' ELSE 'dispute_lost' END);
    IF NOT won AND prov.loss_account IS NULL THEN
        RAISE EXCEPTION 'provider % has no loss account', p.provider
            USING ERRCODE = 'ZF901', HINT = 'Set loss_account with fincore.create_payment_provider().';
    END IF;
    step_no := p.steps + 1;
    IF won THEN
        r := fincore.transfer(prov.disputes_account, p.settlement_account, amt,
                              id => fincore._payment_transfer_id(p.id, step_no, 'won'),
                              metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', step_no));
        ids := ids || r.id;
    ELSE
        r := fincore.transfer(prov.disputes_account, prov.loss_account, amt,
                              id => fincore._payment_transfer_id(p.id, step_no, 'lost'),
                              metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', step_no));
        ids := ids || r.id;
        IF prov.dispute_fee > 0 THEN
            r := fincore.transfer(p.settlement_account, prov.loss_account, prov.dispute_fee,
                                  id => fincore._payment_transfer_id(p.id, step_no, 'fee'),
                                  metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', step_no,
                                                                            'dispute_fee', true));
            ids := ids || r.id;
        END IF;
    END IF;
    st := fincore._payment_step(p, prov, CASE WHEN won THEN 'dispute_won' ELSE 'dispute_lost' END, amt, true, NULL,
                                false, ids);
    RETURN fincore._payment_save(st.p, CASE WHEN won THEN 'dispute_won' ELSE 'dispute_lost' END,
                                 pg_catalog.jsonb_build_object('step_no', step_no, 'dispute', amt));
END
$fn$;
COMMENT ON FUNCTION fincore.resolve_dispute(uuid, boolean) IS
    'Settles a payment''s dispute: won moves the disputed amount back to the settlement account; lost moves it to the loss account, with the provider''s dispute fee from the settlement account. Trusted roles only. ZF902, ZF903, ZF901.';

CREATE FUNCTION fincore.payment(payment_id uuid) RETURNS fincore.payments
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments;
BEGIN
    SELECT * INTO p FROM fincore.payments x WHERE x.tenant_id = tenant AND x.id = payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', coalesce(payment_id::text, 'NULL')
            USING ERRCODE = 'ZF902', HINT = 'Payments are visible only in their own tenant.';
    END IF;
    RETURN p;
END
$fn$;
COMMENT ON FUNCTION fincore.payment(uuid) IS 'The current tenant''s payment (ZF902 if there is none).';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.payment_transition(fincore.payments,text,bigint,boolean)', 'app'),
    ('fincore.create_payment_provider(text,uuid,text,text[],interval,interval,uuid,uuid,bigint,integer,text,uuid)', 'app'),
    ('fincore.create_payment(bigint,text,text,uuid,text,boolean,boolean,text,jsonb,uuid)', 'app'),
    ('fincore.confirm_payment(uuid,uuid)', 'app'),
    ('fincore.capture_payment(uuid,bigint,boolean,text)', 'app'),
    ('fincore.increment_authorization(uuid,bigint,text)', 'app'),
    ('fincore.cancel_payment(uuid,text)', 'app'),
    ('fincore.refund_payment(uuid,bigint,text)', 'app'),
    ('fincore.payment(uuid)', 'app'),
    ('fincore.payment_step_result(uuid,integer,text,text,text)', 'trusted'),
    ('fincore.payment_webhook_result(text,text,text)', 'trusted'),
    ('fincore.open_dispute(uuid,bigint)', 'trusted'),
    ('fincore.resolve_dispute(uuid,boolean)', 'trusted');
