-- fees: fee schedules of a tenant and exact fee calculation (src/fees.c).
--
-- A schedule code has versions with non-overlapping effective periods
-- [effective_from, effective_until); the version in force at a time applies.
-- Rules are validated when defined and compiled once per backend; docs/fees.md
-- describes the rules format.  The ledger posts fees through the C API in
-- src/fincore.h (fees_calculate, fees_apply_mode).

-- Each schedule code of a tenant gets an integer key: a GiST exclusion constraint can then
-- say "same code, overlapping period" with core range operators alone (a point range
-- [key, key] overlaps only itself), without btree_gist.
CREATE TABLE fincore.fee_schedule_codes (
    id        bigint      GENERATED ALWAYS AS IDENTITY,
    tenant_id uuid        NOT NULL DEFAULT fincore.require_tenant()
                          REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    code      text        NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT fee_schedule_codes_unique UNIQUE (tenant_id, code)
);
COMMENT ON TABLE fincore.fee_schedule_codes IS
    'The fee schedule codes of each tenant, with the integer key their versions'' no-overlap constraint compares.';
SELECT fincore.protect('fincore.fee_schedule_codes');
SELECT pg_catalog.pg_extension_config_dump('fincore.fee_schedule_codes', '');
-- Its identity sequence too: a restored database must not hand out the keys again.
SELECT pg_catalog.pg_extension_config_dump('fincore.fee_schedule_codes_id_seq', '');

CREATE TABLE fincore.fee_schedules (
    id              uuid        NOT NULL DEFAULT fincore.uuidv7(),
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant()
                                REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    code            text        NOT NULL CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    code_key        bigint      NOT NULL,
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z0-9]{3,12}$'),
    rules           jsonb       NOT NULL CHECK (jsonb_typeof(rules) = 'object'),
    rounding        text        NOT NULL
                                CHECK (rounding IN ('half_even', 'half_up', 'half_down', 'up', 'down', 'ceiling', 'floor')),
    effective_from  timestamptz NOT NULL,
    effective_until timestamptz CHECK (effective_until > effective_from),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, code_key) REFERENCES fincore.fee_schedule_codes (tenant_id, id),
    -- Versions of a code never overlap, even when defined concurrently.  The tenant leads
    -- (docs/scale-out.md): a code key belongs to one tenant, so this only says so to Citus.
    CONSTRAINT fee_schedules_no_overlap EXCLUDE USING gist (
        tenant_id WITH OPERATOR(pg_catalog.=),
        pg_catalog.int8range(code_key, code_key, '[]') WITH OPERATOR(pg_catalog.&&),
        pg_catalog.tstzrange(effective_from, effective_until) WITH OPERATOR(pg_catalog.&&))
);
CREATE INDEX fee_schedules_lookup_idx ON fincore.fee_schedules (tenant_id, code, effective_from);
COMMENT ON TABLE fincore.fee_schedules IS
    'Fee schedule versions of each tenant: rules (jsonb, see docs/fees.md) in force from effective_from until effective_until. Written through fincore.define_fee_schedule() / end_fee_schedule().';
SELECT fincore.protect('fincore.fee_schedules');
SELECT pg_catalog.pg_extension_config_dump('fincore.fee_schedules', '');

CREATE FUNCTION fincore.fee_schedules_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_fee_schedules_changed';
COMMENT ON FUNCTION fincore.fee_schedules_changed() IS
    'Trigger: drops every backend''s compiled fee schedules when fincore.fee_schedules changes.';
CREATE TRIGGER fee_schedules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.fee_schedules
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.fee_schedules_changed();

-- One line of a fee breakdown.
CREATE TYPE fincore.fee_component AS (component text, amount bigint);
COMMENT ON TYPE fincore.fee_component IS
    'A line of fincore.fee_breakdown(): a component''s name (or minimum / maximum for a limit''s adjustment) and its amount in minor units.';

-- ---------------------------------------------------------------------------
-- Defining schedules: trusted roles only (a tenant's users must not set their own fees).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.check_fee_schedule(code text, currency text, rules jsonb,
        effective_from timestamptz DEFAULT pg_catalog.now(), effective_until timestamptz DEFAULT NULL,
        rounding text DEFAULT 'half_even')
    RETURNS void
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_check_fee_schedule';
COMMENT ON FUNCTION fincore.check_fee_schedule(text, text, jsonb, timestamptz, timestamptz, text) IS
    'Validates a fee schedule definition without writing it: raises the ZF4xx error define_fee_schedule would (ZF402-ZF407, ZF409, ZF102, ZF107).';

CREATE FUNCTION fincore.define_fee_schedule(code text, currency text, rules jsonb,
        effective_from timestamptz DEFAULT pg_catalog.now(), effective_until timestamptz DEFAULT NULL,
        rounding text DEFAULT 'half_even')
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    tenant   uuid := fincore.require_tenant();
    new_id   uuid := fincore.uuidv7();
    code_key bigint;
    clash    record;
BEGIN
    PERFORM fincore.check_fee_schedule(define_fee_schedule.code, define_fee_schedule.currency,
        define_fee_schedule.rules, define_fee_schedule.effective_from,
        define_fee_schedule.effective_until, define_fee_schedule.rounding);
    SELECT s.id, s.effective_from, s.effective_until INTO clash
      FROM fincore.fee_schedules s
     WHERE s.tenant_id = tenant AND s.code = define_fee_schedule.code
       AND tstzrange(s.effective_from, s.effective_until)
           && tstzrange(define_fee_schedule.effective_from, define_fee_schedule.effective_until)
     ORDER BY s.effective_from LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'fee schedule % already has a version in force from % until %',
                quote_literal(define_fee_schedule.code), clash.effective_from,
                coalesce(clash.effective_until::text, 'further notice')
            USING ERRCODE = 'ZF408', DETAIL = format('The overlapping version is %s.', clash.id),
                  HINT = 'End it first with fincore.end_fee_schedule(), or start the new version when it ends.';
    END IF;
    INSERT INTO fincore.fee_schedule_codes AS c (tenant_id, code) VALUES (tenant, define_fee_schedule.code)
    ON CONFLICT ON CONSTRAINT fee_schedule_codes_unique DO UPDATE SET code = excluded.code
    RETURNING c.id INTO code_key;
    BEGIN
        INSERT INTO fincore.fee_schedules (id, tenant_id, code, code_key, currency, rules, rounding,
                                           effective_from, effective_until)
        VALUES (new_id, tenant, define_fee_schedule.code, code_key, define_fee_schedule.currency,
                define_fee_schedule.rules, define_fee_schedule.rounding, define_fee_schedule.effective_from,
                define_fee_schedule.effective_until);
    EXCEPTION WHEN exclusion_violation THEN
        -- A concurrent definition won the race.
        RAISE EXCEPTION 'fee schedule % already has a version overlapping % until %',
                quote_literal(define_fee_schedule.code), define_fee_schedule.effective_from,
                coalesce(define_fee_schedule.effective_until::text, 'further notice')
            USING ERRCODE = 'ZF408';
    END;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.define_fee_schedule(text, text, jsonb, timestamptz, timestamptz, text) IS
    'Defines a version of the current tenant''s fee schedule code, in force from effective_from until effective_until (NULL: until ended); returns its id. Rules are validated (ZF402-ZF407, ZF409); an overlapping version is ZF408.';

CREATE FUNCTION fincore.end_fee_schedule(code text, effective_until timestamptz DEFAULT pg_catalog.now())
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    tenant uuid := fincore.require_tenant();
    v      record;
BEGIN
    IF end_fee_schedule.effective_until < now() THEN
        RAISE EXCEPTION 'cannot end fee schedule % in the past (%)', quote_literal(end_fee_schedule.code),
                end_fee_schedule.effective_until
            USING ERRCODE = 'ZF402', HINT = 'Fees already charged were charged under the version then in force.';
    END IF;
    SELECT s.id, s.effective_from INTO v
      FROM fincore.fee_schedules s
     WHERE s.tenant_id = tenant AND s.code = end_fee_schedule.code
       AND s.effective_from <= end_fee_schedule.effective_until
       AND (s.effective_until IS NULL OR s.effective_until > end_fee_schedule.effective_until)
     FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no version of fee schedule % is in force at %', quote_literal(end_fee_schedule.code),
                end_fee_schedule.effective_until
            USING ERRCODE = 'ZF401';
    END IF;
    IF v.effective_from = end_fee_schedule.effective_until THEN
        DELETE FROM fincore.fee_schedules s WHERE s.id = v.id;    -- it never came into force
    ELSE
        UPDATE fincore.fee_schedules s SET effective_until = end_fee_schedule.effective_until WHERE s.id = v.id;
    END IF;
    RETURN v.id;
END
$fn$;
COMMENT ON FUNCTION fincore.end_fee_schedule(text, timestamptz) IS
    'Ends the version of the current tenant''s fee schedule code in force at effective_until (not in the past, ZF402), so that a new version can follow; returns its id. ZF401 if none is in force then.';

-- ---------------------------------------------------------------------------
-- Calculation (C).  STABLE: the compiled schedules are cached per backend and
-- dropped when the table changes, never folded into a plan.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.calculate_fee(schedule text, amount bigint, context jsonb DEFAULT '{}',
        at timestamptz DEFAULT pg_catalog.now())
    RETURNS bigint
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_calculate_fee';
COMMENT ON FUNCTION fincore.calculate_fee(text, bigint, jsonb, timestamptz) IS
    'The fee in minor units on amount (minor units, >= 0) under the current tenant''s schedule version in force at `at`, for a context such as {"card":"international"}. ZF401 if no version is in force.';

CREATE FUNCTION fincore.fee_breakdown(schedule text, amount bigint, context jsonb DEFAULT '{}',
        at timestamptz DEFAULT pg_catalog.now())
    RETURNS SETOF fincore.fee_component
    LANGUAGE c STABLE STRICT PARALLEL SAFE ROWS 4 AS 'MODULE_PATHNAME', 'fincore_fee_breakdown';
COMMENT ON FUNCTION fincore.fee_breakdown(text, bigint, jsonb, timestamptz) IS
    'The fee of calculate_fee() line by line: each applying component, then a minimum or maximum adjustment if a limit applied; the amounts sum to the fee.';

CREATE FUNCTION fincore.gross_up(schedule text, net bigint, context jsonb DEFAULT '{}',
        at timestamptz DEFAULT pg_catalog.now())
    RETURNS bigint
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_gross_up';
COMMENT ON FUNCTION fincore.gross_up(text, bigint, jsonb, timestamptz) IS
    'The smallest charge whose remainder after its fee is at least net (e.g. 10000 at 2.9% + 30 gives 10330). ZF412 if no charge within int64 is enough.';

-- Not STRICT only for currency: NULL there means "do not check"; NULL elsewhere gives NULL.
CREATE FUNCTION fincore.quote_fee(schedule text, amount bigint, fee_mode text DEFAULT 'on_top',
        context jsonb DEFAULT '{}', at timestamptz DEFAULT pg_catalog.now(), currency text DEFAULT NULL,
        OUT fee bigint, OUT charge bigint, OUT delivered bigint, OUT schedule_id uuid, OUT breakdown jsonb)
    RETURNS record
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_quote_fee';
COMMENT ON FUNCTION fincore.quote_fee(text, bigint, text, jsonb, timestamptz, text) IS
    'What a transfer with a fee would post (the ledger''s C API, fees_calculate + fees_apply_mode): the fee, what the payer is charged and the payee receives (on_top: amount + fee / amount; deducted: amount / amount - fee, ZF410 if the fee exceeds the amount), the schedule version and the breakdown as jsonb. A currency, when given, must be the schedule''s (ZF407).';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.check_fee_schedule(text,text,jsonb,timestamptz,timestamptz,text)', 'app'),
    ('fincore.define_fee_schedule(text,text,jsonb,timestamptz,timestamptz,text)', 'trusted'),
    ('fincore.end_fee_schedule(text,timestamptz)', 'trusted'),
    ('fincore.calculate_fee(text,bigint,jsonb,timestamptz)', 'app'),
    ('fincore.fee_breakdown(text,bigint,jsonb,timestamptz)', 'app'),
    ('fincore.gross_up(text,bigint,jsonb,timestamptz)', 'app'),
    ('fincore.quote_fee(text,bigint,text,jsonb,timestamptz,text)', 'app');
