-- limits: spending and velocity limits, enforced inside the posting path (docs/limits.md).
--
-- A limit caps the amount (minor units, one currency) or the number of transfers that
-- the accounts in its scope may move in a window.  The ledger checks every limit that
-- applies to a transfer in the transaction that moves the money (src/limits_engine.c,
-- src/limits_store.c), under locks taken in one global order: a refused transfer writes
-- nothing, and concurrent spenders never overrun a limit.  Definitions are data of the
-- tenant, managed by its admins; the counters are written only by the ledger.

CREATE TABLE fincore.limits (
    tenant_id             uuid        NOT NULL DEFAULT fincore.require_tenant()
                                      REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    id                    uuid        NOT NULL DEFAULT fincore.uuidv7(),
    name                  text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    -- Which accounts it applies to, and whose counter a transfer charges: each account's
    -- own (per = 'account') or one for the whole scope (per = 'scope').
    scope                 text        NOT NULL CHECK (scope IN ('account', 'account_code', 'customer', 'tenant')),
    account_id            uuid,
    account_code          integer,
    customer              text,
    per                   text        NOT NULL CHECK (per IN ('account', 'scope')),
    metric                text        NOT NULL CHECK (metric IN ('amount', 'count')),
    currency              text,
    window_kind           text        NOT NULL
                                      CHECK (window_kind IN ('transaction', 'day', 'week', 'month', 'year',
                                                             'lifetime', 'trailing')),
    window_seconds        integer     CHECK (window_seconds BETWEEN 10 AND 2678400),
    time_zone             text        NOT NULL DEFAULT 'UTC',
    -- Filters: which legs count.  NULL: any.
    direction             text        CHECK (direction IN ('debit', 'credit')),
    transfer_codes        integer[],
    counterparty_accounts uuid[],
    counterparty_codes    integer[],
    max_value             bigint      NOT NULL CHECK (max_value >= 0),
    restore_on_reversal   boolean     NOT NULL DEFAULT false,
    -- An outbox event (limit.threshold_crossed) when a transfer takes the window's total to this.
    alert_at              bigint      CHECK (alert_at > 0),
    enabled               boolean     NOT NULL DEFAULT true,
    -- Transfers made before this (creation, or the last enabling) were not counted: a hold
    -- made before it gives nothing back when it is resolved.
    counting_since        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT limits_name_unique UNIQUE (tenant_id, name),
    CHECK ((scope = 'account') = (account_id IS NOT NULL)),
    CHECK ((scope = 'account_code') = (account_code IS NOT NULL)),
    CHECK ((scope = 'customer') = (customer IS NOT NULL)),
    CHECK ((metric = 'amount') = (currency IS NOT NULL)),
    CHECK ((window_kind = 'trailing') = (window_seconds IS NOT NULL)),
    CHECK (window_kind <> 'transaction' OR (metric = 'amount' AND per = 'account'))
);
COMMENT ON TABLE fincore.limits IS
    'Spending and velocity limits of each tenant (docs/limits.md): scope, metric, window, filters and maximum. Written through fincore.create_limit() / update_limit() / disable_limit().';
SELECT fincore.protect('fincore.limits');
SELECT pg_catalog.pg_extension_config_dump('fincore.limits', '');

-- What each limit has used: one row per limit and subject (the account charged, or the
-- nil UUID for a limit counted per scope).  A calendar or lifetime window keeps its start
-- and its total; a trailing window keeps a ring of 60 sub-buckets and the index of the
-- newest, so a transfer costs O(1) whatever the history.  The aggregates of rules keep their
-- counters here too, under ids derived from their rules' (no row of fincore.limits): hence a
-- key to the tenant rather than to fincore.limits.
CREATE TABLE fincore.limit_counters (
    tenant_id    uuid        NOT NULL,
    limit_id     uuid        NOT NULL,
    subject      uuid        NOT NULL,
    window_start timestamptz,
    used         bigint      NOT NULL DEFAULT 0,
    ring         bigint[],
    ring_head    bigint,
    -- A rule's distinct_counterparties: each counterparty of the window and its newest sub-bucket.
    members        uuid[],
    member_buckets bigint[],
    -- By subject first: the ledger reads all the counters of an account with one index descent.
    PRIMARY KEY (tenant_id, subject, limit_id),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
) WITH (fillfactor = 70);      -- room for HOT updates: a transfer updates its counters, never their keys
COMMENT ON TABLE fincore.limit_counters IS
    'What each limit (and each aggregate of a rule) has used in its current window, per subject (an account, or the nil UUID for the whole scope). Written only by the ledger, under the row''s lock.';
SELECT fincore.protect('fincore.limit_counters');
SELECT pg_catalog.pg_extension_config_dump('fincore.limit_counters', '');

-- A customer key the caller attaches to accounts: customer-scoped limits count the
-- transfers of all the customer's accounts.
CREATE TABLE fincore.account_customers (
    tenant_id  uuid NOT NULL DEFAULT fincore.require_tenant(),
    account_id uuid NOT NULL,
    customer   text NOT NULL CHECK (customer ~ '^[^[:cntrl:]]{1,200}$'),
    PRIMARY KEY (tenant_id, account_id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES fincore.accounts (tenant_id, id)
);
CREATE INDEX account_customers_customer_idx ON fincore.account_customers (tenant_id, customer);
COMMENT ON TABLE fincore.account_customers IS
    'The customer each account belongs to, for customer-scoped limits. Written through fincore.set_account_customer().';
SELECT fincore.protect('fincore.account_customers');
SELECT pg_catalog.pg_extension_config_dump('fincore.account_customers', '');

CREATE FUNCTION fincore.limits_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_limits_changed';
COMMENT ON FUNCTION fincore.limits_changed() IS
    'Trigger: makes every backend''s cached limits and rules stale when fincore.limits or fincore.rules changes.';
CREATE TRIGGER limits_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.limits
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.limits_changed();

-- Rules: conditions over a transfer in a typed JSON language (src/rules_engine.c), evaluated
-- in C in the posting path after the limits.  Never SQL text: fincore runs them with its
-- owner's rights.
CREATE TABLE fincore.rules (
    tenant_id  uuid        NOT NULL DEFAULT fincore.require_tenant()
                           REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    id         uuid        NOT NULL DEFAULT fincore.uuidv7(),
    name       text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    condition  jsonb       NOT NULL,
    outcome    text        NOT NULL CHECK (outcome IN ('reject', 'review', 'flag')),
    mode       text        NOT NULL CHECK (mode IN ('shadow', 'active')),
    time_zone  text        NOT NULL DEFAULT 'UTC',
    -- review: how long the hold waits for fincore.approve_review / reject_review.
    review_timeout interval NOT NULL DEFAULT '1 day'
                   CHECK (review_timeout > '0' AND review_timeout <= '31 days'),
    enabled    boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT rules_name_unique UNIQUE (tenant_id, name)
);
COMMENT ON TABLE fincore.rules IS
    'Risk rules of each tenant (docs/limits.md, "Rules"): a condition in fincore''s rule language, an outcome (reject, review, flag) and a mode (shadow: recorded only; active: enforced). Written through fincore.create_rule() / update_rule().';
SELECT fincore.protect('fincore.rules');
SELECT pg_catalog.pg_extension_config_dump('fincore.rules', '');

-- Every decision that is not a plain accept: a limit or rule that refused a transfer (in a
-- batch; a refused single call rolls back with its error), a rule that flagged it, a shadow
-- rule that would have.
CREATE TABLE fincore.decisions (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL DEFAULT fincore.uuidv7(),
    transfer_id uuid        NOT NULL,
    limit_id    uuid,
    rule_id     uuid,
    outcome     text        NOT NULL CHECK (outcome IN ('reject', 'review', 'flag')),
    mode        text        NOT NULL CHECK (mode IN ('shadow', 'active')),
    seen        jsonb       NOT NULL,
    decided_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK ((limit_id IS NULL) <> (rule_id IS NULL))
);
CREATE INDEX decisions_transfer_idx ON fincore.decisions (tenant_id, transfer_id);
COMMENT ON TABLE fincore.decisions IS
    'Decisions of limits and rules that were not a plain accept: the transfer, the limit or rule, the outcome, active or shadow, and the values seen. Written only by the ledger.';
SELECT fincore.protect('fincore.decisions');
SELECT pg_catalog.pg_extension_config_dump('fincore.decisions', '');

CREATE TRIGGER rules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.rules
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.limits_changed();

CREATE FUNCTION fincore.check_rule(condition jsonb) RETURNS void
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_check_rule';
COMMENT ON FUNCTION fincore.check_rule(jsonb) IS
    'Validates a rule''s condition without writing it: ZF805 with the path of what is wrong (docs/limits.md, "Rules").';

CREATE FUNCTION fincore.create_rule(name text, condition jsonb, outcome text DEFAULT 'reject',
        mode text DEFAULT 'shadow', time_zone text DEFAULT 'UTC', review_timeout interval DEFAULT '1 day',
        id uuid DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    new_id uuid := coalesce(create_rule.id, fincore.uuidv7());
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid rule: name % is not a word of 1 to 64 letters, digits, _ . : -',
                coalesce(pg_catalog.quote_literal(name), 'NULL') USING ERRCODE = 'ZF805';
    END IF;
    IF outcome IS NULL OR outcome NOT IN ('reject', 'review', 'flag') THEN
        RAISE EXCEPTION 'invalid rule: outcome % is not reject, review or flag', coalesce(pg_catalog.quote_literal(outcome), 'NULL')
            USING ERRCODE = 'ZF805';
    END IF;
    IF review_timeout IS NULL OR review_timeout <= '0' OR review_timeout > '31 days' THEN
        RAISE EXCEPTION 'invalid rule: review_timeout % is not between 0 and 31 days', coalesce(review_timeout::text, 'NULL')
            USING ERRCODE = 'ZF805', HINT = 'A reviewed transfer is a hold that expires after review_timeout.';
    END IF;
    IF mode IS NULL OR mode NOT IN ('shadow', 'active') THEN
        RAISE EXCEPTION 'invalid rule: mode % is not shadow or active', coalesce(pg_catalog.quote_literal(mode), 'NULL')
            USING ERRCODE = 'ZF805';
    END IF;
    IF time_zone IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = time_zone) THEN
        RAISE EXCEPTION 'invalid rule: time_zone % is not a time zone name such as Europe/Berlin',
                coalesce(pg_catalog.quote_literal(time_zone), 'NULL') USING ERRCODE = 'ZF805';
    END IF;
    IF condition IS NULL THEN
        RAISE EXCEPTION 'invalid rule: condition must not be NULL' USING ERRCODE = 'ZF805';
    END IF;
    PERFORM fincore.check_rule(condition);
    BEGIN
        INSERT INTO fincore.rules (tenant_id, id, name, condition, outcome, mode, time_zone, review_timeout)
        VALUES (tenant, new_id, name, condition, outcome, mode, time_zone, review_timeout);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'rule % already exists', pg_catalog.quote_literal(name)
            USING ERRCODE = 'ZF804', HINT = 'Change it with fincore.update_rule(), or choose another name or id.';
    END;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_rule(text, jsonb, text, text, text, interval, uuid) IS
    'Creates a rule of the current tenant and returns its id: a condition (docs/limits.md, "Rules"), an outcome (reject; review: the transfer becomes a hold for review_timeout and a job on the queue fincore.review; flag) and a mode (shadow: decisions recorded, nothing enforced; active). ZF805 for an invalid rule, ZF804 for a name in use, ZF803 unless an admin.';

CREATE FUNCTION fincore.update_rule(rule_id uuid, condition jsonb DEFAULT NULL, outcome text DEFAULT NULL,
        mode text DEFAULT NULL, enabled boolean DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF outcome NOT IN ('reject', 'review', 'flag') THEN
        RAISE EXCEPTION 'invalid rule: outcome % is not reject, review or flag', pg_catalog.quote_literal(outcome)
            USING ERRCODE = 'ZF805';
    END IF;
    IF mode NOT IN ('shadow', 'active') THEN
        RAISE EXCEPTION 'invalid rule: mode % is not shadow or active', pg_catalog.quote_literal(mode)
            USING ERRCODE = 'ZF805';
    END IF;
    IF condition IS NOT NULL THEN
        PERFORM fincore.check_rule(condition);
    END IF;
    UPDATE fincore.rules r
       SET condition = coalesce(update_rule.condition, r.condition),
           outcome = coalesce(update_rule.outcome, r.outcome),
           mode = coalesce(update_rule.mode, r.mode),
           enabled = coalesce(update_rule.enabled, r.enabled),
           updated_at = pg_catalog.now()
     WHERE r.tenant_id = tenant AND r.id = rule_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rule % not found', rule_id
            USING ERRCODE = 'ZF806', HINT = 'Rules are visible only in their own tenant.';
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.update_rule(uuid, jsonb, text, text, boolean) IS
    'Changes a rule''s condition, outcome, mode (shadow to active, and back) or enabled (NULL: unchanged). ZF806 if not found, ZF805 for an invalid value, ZF803 unless an admin.';

-- Reviews: a transfer an active review rule met is a hold; a reviewer posts or voids it.
CREATE FUNCTION fincore.require_review(transfer_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF NOT EXISTS (SELECT 1 FROM fincore.decisions d
                    WHERE d.tenant_id = tenant AND d.transfer_id = transfer_id
                      AND d.outcome = 'review' AND d.mode = 'active') THEN
        RAISE EXCEPTION 'transfer % is not waiting for a review', transfer_id
            USING ERRCODE = 'ZF807', HINT = 'Only a transfer an active review rule made a hold is reviewed; post or void other holds.';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.require_review(uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore.require_review(uuid) IS
    'Raises ZF807 unless an active review rule made the transfer a hold (and ZF803 unless the caller may manage the tenant''s rules).';

CREATE FUNCTION fincore.approve_review(transfer_id uuid, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    PERFORM fincore.require_review(approve_review.transfer_id);
    RETURN fincore.post_pending(approve_review.transfer_id, NULL, approve_review.id);
END
$fn$;
COMMENT ON FUNCTION fincore.approve_review(uuid, uuid) IS
    'Approves a transfer held for review: posts the whole hold (as fincore.post_pending, with its idempotent id). ZF807 if it is not held for review; the hold''s own errors (ZF310-ZF312) once it is resolved or expired.';

CREATE FUNCTION fincore.reject_review(transfer_id uuid, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    PERFORM fincore.require_review(reject_review.transfer_id);
    RETURN fincore.void_pending(reject_review.transfer_id, reject_review.id);
END
$fn$;
COMMENT ON FUNCTION fincore.reject_review(uuid, uuid) IS
    'Rejects a transfer held for review: voids the hold (as fincore.void_pending). ZF807 if it is not held for review.';

CREATE FUNCTION fincore.backtest_rule(condition jsonb, from_time timestamptz, to_time timestamptz,
        time_zone text DEFAULT 'UTC')
    RETURNS TABLE (transfer_id uuid, created_at timestamptz, kind text, amount bigint, code integer)
    LANGUAGE c STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_backtest_rule';
COMMENT ON FUNCTION fincore.backtest_rule(jsonb, timestamptz, timestamptz, text) IS
    'The current tenant''s transfers and holds made in [from_time, to_time) that the condition meets, as an active rule would have judged them when they were made; writes nothing. ZF805 for an invalid condition.';

-- The window arithmetic the ledger uses (C), for limit_remaining() and for tests.
CREATE FUNCTION fincore.limit_window(window_kind text, window_seconds integer, time_zone text, at timestamptz,
        OUT starts_at timestamptz, OUT resets_at timestamptz)
    RETURNS record
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_limit_window';
COMMENT ON FUNCTION fincore.limit_window(text, integer, text, timestamptz) IS
    'The window of a limit that contains at: when it started and when it resets (a trailing window: its oldest counted sub-bucket and when the next one leaves). NULLs for lifetime and transaction.';

CREATE FUNCTION fincore.limit_used(window_kind text, window_seconds integer, time_zone text,
        window_start timestamptz, used bigint, ring bigint[], ring_head bigint, at timestamptz)
    RETURNS bigint
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_limit_used';
COMMENT ON FUNCTION fincore.limit_used(text, integer, text, timestamptz, bigint, bigint[], bigint, timestamptz) IS
    'What a counter row has used in the window containing at (0 once its window has passed).';

-- Who may manage a tenant's limits: its admins and owners, or a trusted role (a role that is
-- not one of fincore's untrusted app roles, such as a backend's).  The invoker's role is the
-- one SET ROLE chose (PostgREST), else the session's.
CREATE FUNCTION fincore.require_limits_admin(tenant uuid) RETURNS void
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    invoker text := pg_catalog.current_setting('role');
BEGIN
    IF invoker IS NULL OR invoker = 'none' THEN
        invoker := pg_catalog.session_user();
    END IF;
    IF EXISTS (SELECT 1 FROM fincore.app_roles a WHERE a.role_name = invoker AND NOT a.trusted)
       AND NOT fincore.has_tenant_role(tenant, 'admin') AND NOT fincore.has_tenant_role(tenant, 'owner') THEN
        RAISE EXCEPTION 'only an admin of tenant % may manage its limits', tenant
            USING ERRCODE = 'ZF803',
                  HINT = 'Add the user with fincore.add_tenant_member(user_id, ''admin''), or call from a trusted role.';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.require_limits_admin(uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore.require_limits_admin(uuid) IS
    'Raises ZF803 unless the caller may manage the tenant''s limits: an admin or owner of it, or a trusted role.';

CREATE FUNCTION fincore.create_limit(name text, max_value bigint,
        metric text DEFAULT 'amount', window_kind text DEFAULT 'day', scope text DEFAULT 'tenant',
        account_id uuid DEFAULT NULL, account_code integer DEFAULT NULL, customer text DEFAULT NULL,
        per text DEFAULT NULL, currency text DEFAULT NULL, direction text DEFAULT 'debit',
        transfer_codes integer[] DEFAULT NULL, counterparty_accounts uuid[] DEFAULT NULL,
        counterparty_codes integer[] DEFAULT NULL, window_seconds integer DEFAULT NULL,
        time_zone text DEFAULT 'UTC', restore_on_reversal boolean DEFAULT false, alert_at bigint DEFAULT NULL,
        id uuid DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    new_id uuid := coalesce(create_limit.id, fincore.uuidv7());
    eff_per text;
    bad text;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' THEN
        bad := pg_catalog.format('name %s is not a word of 1 to 64 letters, digits, _ . : -',
                                 coalesce(pg_catalog.quote_literal(name), 'NULL'));
    ELSIF max_value IS NULL OR max_value < 0 THEN
        bad := pg_catalog.format('max_value %s must be 0 or more', coalesce(max_value::text, 'NULL'));
    ELSIF metric IS NULL OR metric NOT IN ('amount', 'count') THEN
        bad := pg_catalog.format('metric %s is not amount or count', coalesce(pg_catalog.quote_literal(metric), 'NULL'));
    ELSIF window_kind IS NULL OR window_kind NOT IN ('transaction', 'day', 'week', 'month', 'year', 'lifetime', 'trailing') THEN
        bad := pg_catalog.format('window_kind %s is not transaction, day, week, month, year, lifetime or trailing',
                                 coalesce(pg_catalog.quote_literal(window_kind), 'NULL'));
    ELSIF (window_kind = 'trailing') <> (window_seconds IS NOT NULL) THEN
        bad := 'window_seconds is given for a trailing window, and only for one';
    ELSIF window_seconds IS NOT NULL AND window_seconds NOT BETWEEN 10 AND 2678400 THEN
        bad := pg_catalog.format('window_seconds %s is outside 10 seconds to 31 days (2678400)', window_seconds);
    ELSIF scope IS NULL OR scope NOT IN ('account', 'account_code', 'customer', 'tenant') THEN
        bad := pg_catalog.format('scope %s is not account, account_code, customer or tenant',
                                 coalesce(pg_catalog.quote_literal(scope), 'NULL'));
    ELSIF (scope = 'account') <> (account_id IS NOT NULL)
          OR (scope = 'account_code') <> (account_code IS NOT NULL)
          OR (scope = 'customer') <> (customer IS NOT NULL) THEN
        bad := pg_catalog.format('scope %s takes %s, and no other of account_id, account_code, customer', scope,
                                 CASE scope WHEN 'account' THEN 'account_id' WHEN 'account_code' THEN 'account_code'
                                            WHEN 'customer' THEN 'customer' ELSE 'none' END);
    ELSIF per IS NOT NULL AND per NOT IN ('account', 'scope') THEN
        bad := pg_catalog.format('per %s is not account or scope', pg_catalog.quote_literal(per));
    ELSIF (metric = 'amount') <> (currency IS NOT NULL) THEN
        bad := 'an amount limit takes a currency, and a count limit none';
    ELSIF window_kind = 'transaction' AND metric <> 'amount' THEN
        bad := 'a transaction window caps the amount of each transfer: metric must be amount';
    ELSIF direction IS NOT NULL AND direction NOT IN ('debit', 'credit') THEN
        bad := pg_catalog.format('direction %s is not debit, credit or NULL (both)', pg_catalog.quote_literal(direction));
    ELSIF pg_catalog.array_position(transfer_codes, NULL) IS NOT NULL
          OR pg_catalog.array_position(counterparty_codes, NULL) IS NOT NULL
          OR pg_catalog.array_position(counterparty_accounts, NULL) IS NOT NULL THEN
        bad := 'a filter list must not contain NULL';
    ELSIF pg_catalog.cardinality(transfer_codes) = 0 OR pg_catalog.cardinality(counterparty_codes) = 0
          OR pg_catalog.cardinality(counterparty_accounts) = 0 THEN
        bad := 'a filter list must not be empty (NULL means any)';
    ELSIF time_zone IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = time_zone) THEN
        bad := pg_catalog.format('time_zone %s is not a time zone name such as Europe/Berlin',
                                 coalesce(pg_catalog.quote_literal(time_zone), 'NULL'));
    ELSIF restore_on_reversal IS NULL THEN
        bad := 'restore_on_reversal must not be NULL';
    ELSIF alert_at IS NOT NULL AND (alert_at <= 0 OR alert_at > max_value OR window_kind = 'transaction') THEN
        bad := pg_catalog.format('alert_at %s is not between 1 and max_value %s of a limit with a window',
                                 alert_at, max_value);
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid limit: %', bad
            USING ERRCODE = 'ZF801', HINT = 'See docs/limits.md for what a limit is made of.';
    END IF;
    IF currency IS NOT NULL THEN
        PERFORM fincore.currency_exponent(currency);     -- ZF102 for an unknown currency
    END IF;
    eff_per := coalesce(per, CASE WHEN scope = 'customer' THEN 'scope' ELSE 'account' END);
    IF window_kind = 'transaction' THEN
        eff_per := 'account';
    END IF;
    IF scope = 'account' AND NOT EXISTS (SELECT 1 FROM fincore.accounts a
                                          WHERE a.tenant_id = tenant AND a.id = account_id) THEN
        RAISE EXCEPTION 'account % not found', account_id
            USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
    END IF;
    BEGIN
        INSERT INTO fincore.limits (tenant_id, id, name, scope, account_id, account_code, customer, per, metric,
                                    currency, window_kind, window_seconds, time_zone, direction, transfer_codes,
                                    counterparty_accounts, counterparty_codes, max_value, restore_on_reversal,
                                    alert_at)
        VALUES (tenant, new_id, name, scope, account_id, account_code, customer, eff_per, metric, currency,
                window_kind, window_seconds, time_zone, direction, transfer_codes, counterparty_accounts,
                counterparty_codes, max_value, restore_on_reversal, alert_at);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'limit % already exists', pg_catalog.quote_literal(name)
            USING ERRCODE = 'ZF804', HINT = 'Change it with fincore.update_limit(), or choose another name or id.';
    END;
    -- A limit counted per scope has one counter, made now: the ledger locks it, never creates it.
    IF eff_per = 'scope' THEN
        INSERT INTO fincore.limit_counters (tenant_id, limit_id, subject)
        VALUES (tenant, new_id, '00000000-0000-0000-0000-000000000000');
    END IF;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_limit(text, bigint, text, text, text, uuid, integer, text, text, text, text,
        integer[], uuid[], integer[], integer, text, boolean, bigint, uuid) IS
    'Creates a limit of the current tenant and returns its id: max_value of metric (amount in minor units of currency, or count) per window, for the accounts of scope, counting the legs the filters select; with alert_at, an outbox event when a transfer takes a window''s total to it. ZF801 for an invalid definition, ZF804 for a name in use, ZF803 unless an admin.';

-- What a limit's maximum, name and switches can become; its scope, metric and window are what
-- its counters mean, so changing them is a new limit.
CREATE FUNCTION fincore.update_limit(limit_id uuid, max_value bigint DEFAULT NULL, name text DEFAULT NULL,
        restore_on_reversal boolean DEFAULT NULL, enabled boolean DEFAULT NULL, alert_at bigint DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF max_value < 0 THEN
        RAISE EXCEPTION 'invalid limit: max_value % must be 0 or more', max_value USING ERRCODE = 'ZF801';
    END IF;
    IF alert_at <= 0 THEN
        RAISE EXCEPTION 'invalid limit: alert_at % must be 1 or more', alert_at USING ERRCODE = 'ZF801';
    END IF;
    IF name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid limit: name % is not a word of 1 to 64 letters, digits, _ . : -',
                pg_catalog.quote_literal(name) USING ERRCODE = 'ZF801';
    END IF;
    BEGIN
        UPDATE fincore.limits l
           SET max_value = coalesce(update_limit.max_value, l.max_value),
               name = coalesce(update_limit.name, l.name),
               restore_on_reversal = coalesce(update_limit.restore_on_reversal, l.restore_on_reversal),
               enabled = coalesce(update_limit.enabled, l.enabled),
               alert_at = coalesce(update_limit.alert_at, l.alert_at),
               counting_since = CASE WHEN update_limit.enabled AND NOT l.enabled THEN pg_catalog.now()
                                     ELSE l.counting_since END,
               updated_at = pg_catalog.now()
         WHERE l.tenant_id = tenant AND l.id = limit_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'limit % already exists', pg_catalog.quote_literal(name) USING ERRCODE = 'ZF804';
    END;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'limit % not found', limit_id
            USING ERRCODE = 'ZF802', HINT = 'Limits are visible only in their own tenant.';
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.update_limit(uuid, bigint, text, boolean, boolean, bigint) IS
    'Changes a limit''s maximum, name, restore_on_reversal, enabled or alert_at (NULL: unchanged); the counters stay. ZF802 if not found, ZF801 for an invalid value, ZF803 unless an admin.';

CREATE FUNCTION fincore.disable_limit(limit_id uuid) RETURNS void
    LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    RETURN fincore.update_limit(limit_id, enabled => false);
COMMENT ON FUNCTION fincore.disable_limit(uuid) IS
    'Stops enforcing a limit (fincore.update_limit(id, enabled => true) enforces it again, with the counters it had).';

CREATE FUNCTION fincore.set_account_customer(account_id uuid, customer text) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    IF account_id IS NULL OR NOT EXISTS (SELECT 1 FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = account_id) THEN
        RAISE EXCEPTION 'account % not found', coalesce(account_id::text, 'NULL')
            USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
    END IF;
    IF customer IS NULL THEN
        DELETE FROM fincore.account_customers c WHERE c.tenant_id = tenant AND c.account_id = account_id;
    ELSIF customer !~ '^[^[:cntrl:]]{1,200}$' THEN
        RAISE EXCEPTION 'invalid customer key %', pg_catalog.quote_literal(customer)
            USING ERRCODE = 'ZF801', HINT = 'A customer key is 1 to 200 characters without control characters.';
    ELSE
        INSERT INTO fincore.account_customers AS c (tenant_id, account_id, customer)
        VALUES (tenant, account_id, customer)
        ON CONFLICT ON CONSTRAINT account_customers_pkey DO UPDATE SET customer = excluded.customer;
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.set_account_customer(uuid, text) IS
    'Attaches an account of the current tenant to a customer key (NULL detaches it), for customer-scoped limits. ZF301 if the account is not found.';

-- What every limit that can apply to an account has used and has left now.
CREATE FUNCTION fincore.limit_remaining(account_id uuid)
    RETURNS TABLE (limit_id uuid, name text, metric text, currency text, window_kind text, max_value bigint,
                   used bigint, remaining bigint, resets_at timestamptz)
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_column
DECLARE
    tenant uuid := fincore.require_tenant();
    acc record;
    cust text;
    at timestamptz := pg_catalog.now();
BEGIN
    SELECT a.id, a.code, a.currency INTO acc FROM fincore.accounts a
     WHERE a.tenant_id = tenant AND a.id = limit_remaining.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % not found', coalesce(limit_remaining.account_id::text, 'NULL')
            USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
    END IF;
    SELECT c.customer INTO cust FROM fincore.account_customers c
     WHERE c.tenant_id = tenant AND c.account_id = acc.id;
    RETURN QUERY
    SELECT l.id, l.name, l.metric, l.currency, l.window_kind, l.max_value, u.used,
           GREATEST(l.max_value - u.used, 0::bigint),
           (fincore.limit_window(l.window_kind, l.window_seconds, l.time_zone, at)).resets_at
      FROM fincore.limits l
      CROSS JOIN LATERAL (
          SELECT coalesce((SELECT fincore.limit_used(l.window_kind, l.window_seconds, l.time_zone, k.window_start,
                                                     k.used, k.ring, k.ring_head, at)
                             FROM fincore.limit_counters k
                            WHERE k.tenant_id = tenant AND k.limit_id = l.id
                              AND k.subject = CASE WHEN l.per = 'account' THEN acc.id
                                                   ELSE '00000000-0000-0000-0000-000000000000'::uuid END), 0)
                 AS used) u
     WHERE l.tenant_id = tenant AND l.enabled
       AND (l.currency IS NULL OR l.currency = acc.currency)
       AND CASE l.scope WHEN 'account' THEN l.account_id = acc.id
                        WHEN 'account_code' THEN l.account_code = acc.code
                        WHEN 'customer' THEN l.customer = cust
                        ELSE true END
     ORDER BY l.name;
END
$fn$;
COMMENT ON FUNCTION fincore.limit_remaining(uuid) IS
    'Every enabled limit whose scope takes in the account: its maximum, what is used in the current window (of the account, or of the whole scope for a limit counted per scope), what remains and when the window resets. ZF301 if the account is not found.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.create_limit(text,bigint,text,text,text,uuid,integer,text,text,text,text,integer[],uuid[],integer[],integer,text,boolean,bigint,uuid)', 'app'),
    ('fincore.update_limit(uuid,bigint,text,boolean,boolean,bigint)', 'app'),
    ('fincore.disable_limit(uuid)', 'app'),
    ('fincore.set_account_customer(uuid,text)', 'app'),
    ('fincore.limit_remaining(uuid)', 'app'),
    ('fincore.limit_window(text,integer,text,timestamptz)', 'app'),
    ('fincore.limit_used(text,integer,text,timestamptz,bigint,bigint[],bigint,timestamptz)', 'app'),
    ('fincore.check_rule(jsonb)', 'app'),
    ('fincore.create_rule(text,jsonb,text,text,text,interval,uuid)', 'app'),
    ('fincore.approve_review(uuid,uuid)', 'app'),
    ('fincore.reject_review(uuid,uuid)', 'app'),
    ('fincore.update_rule(uuid,jsonb,text,text,boolean)', 'app'),
    ('fincore.backtest_rule(jsonb,timestamptz,timestamptz,text)', 'app');
