-- fincore 0.1.0 as released (commit 997e525), kept so that a database can be created at 0.1.0
-- and upgraded with sql/upgrades/ (test/integration/test_upgrade.py).  Never edit: a release is frozen.
\echo Use "CREATE EXTENSION fincore" to load this file. \quit

-- ==== sql/modules/schema.sql
-- schema: the fincore schema itself.  CREATE EXTENSION creates it (fincore.control
-- names it); here it is locked down.  Nobody but the owner creates objects in it,
-- and every name below is schema-qualified so that no search_path can redirect one.

REVOKE ALL ON SCHEMA fincore FROM PUBLIC;
GRANT USAGE ON SCHEMA fincore TO PUBLIC;

-- ==== sql/modules/money.sql
-- money: fincore.amount, currencies, exact rounding and allocation (src/amount.c,
-- src/currency.c, src/rounding.c, src/allocate.c).

-- ---------------------------------------------------------------------------
-- Registered currencies: user-defined assets (points, stablecoins, metals).
-- A registration never changes: amounts already stored depend on its exponent.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.currency_registry (
    code       text        PRIMARY KEY CHECK (code ~ '^[A-Z0-9]{3,12}$'),
    exponent   integer     NOT NULL CHECK (exponent BETWEEN 0 AND 18),
    name       text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fincore.currency_registry IS
    'User-registered currencies and assets (codes outside ISO 4217). Immutable once registered; write through fincore.register_currency().';
-- pg_dump must carry registrations, or amounts in them could not be restored.
SELECT pg_catalog.pg_extension_config_dump('fincore.currency_registry', '');
REVOKE ALL ON fincore.currency_registry FROM PUBLIC;
-- Reading amounts in a registered currency looks its exponent up as the caller.
GRANT SELECT ON fincore.currency_registry TO PUBLIC;

CREATE FUNCTION fincore.currency_registry_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_currency_registry_guard';
COMMENT ON FUNCTION fincore.currency_registry_guard() IS
    'Trigger: refuses UPDATE of code or exponent, DELETE and TRUNCATE on fincore.currency_registry (ZF113).';

CREATE TRIGGER currency_registry_immutable
    BEFORE UPDATE OR DELETE ON fincore.currency_registry
    FOR EACH ROW EXECUTE FUNCTION fincore.currency_registry_guard();
CREATE TRIGGER currency_registry_no_truncate
    BEFORE TRUNCATE ON fincore.currency_registry
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.currency_registry_guard();

CREATE FUNCTION fincore.register_currency(code text, exponent integer, name text DEFAULT NULL)
    RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fincore_register_currency';
COMMENT ON FUNCTION fincore.register_currency(text, integer, text) IS
    'Registers a currency or asset code (3-12 of A-Z, 0-9) with its exponent (0-18). Idempotent for the same exponent; a different exponent or an ISO 4217 code raises ZF111.';
REVOKE ALL ON FUNCTION fincore.register_currency(text, integer, text) FROM PUBLIC;

CREATE FUNCTION fincore.iso_currencies(
        OUT code text, OUT numeric_code smallint, OUT exponent smallint, OUT name text)
    RETURNS SETOF record
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE ROWS 180
    AS 'MODULE_PATHNAME', 'fincore_iso_currencies';
COMMENT ON FUNCTION fincore.iso_currencies() IS
    'The active ISO 4217 currencies compiled into fincore: code, numeric code, minor-unit exponent, name.';

CREATE VIEW fincore.currencies WITH (security_invoker = true) AS
    SELECT i.code, i.numeric_code, i.exponent, i.name, 'iso4217'::text AS source
      FROM fincore.iso_currencies() AS i
    UNION ALL
    SELECT r.code, NULL::smallint, r.exponent::smallint, r.name, 'registered'::text
      FROM fincore.currency_registry AS r;
COMMENT ON VIEW fincore.currencies IS
    'Every currency an amount can be in: compiled ISO 4217 codes and registered ones.';
GRANT SELECT ON fincore.currencies TO PUBLIC;

CREATE FUNCTION fincore.currency_exponent(code text) RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_currency_exponent';
COMMENT ON FUNCTION fincore.currency_exponent(text) IS
    'Minor-unit exponent of a currency code (USD 2, JPY 0, BHD 3, CLF 4); ZF102 if unknown.';

-- ---------------------------------------------------------------------------
-- The amount type.  Its I/O functions are IMMUTABLE although a registered
-- currency's exponent is read from a table: registrations never change, so
-- the same input always means the same value.
-- ---------------------------------------------------------------------------

CREATE TYPE fincore.amount;

CREATE FUNCTION fincore.amount_in(cstring) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_in';
COMMENT ON FUNCTION fincore.amount_in(cstring) IS 'Text input of fincore.amount: ''12.34 USD''.';
CREATE FUNCTION fincore.amount_out(fincore.amount) RETURNS cstring
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_out';
COMMENT ON FUNCTION fincore.amount_out(fincore.amount) IS 'Canonical text output of fincore.amount.';
CREATE FUNCTION fincore.amount_recv(internal) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_recv';
COMMENT ON FUNCTION fincore.amount_recv(internal) IS 'Binary input: int64 minor units, a length byte, the ASCII code.';
CREATE FUNCTION fincore.amount_send(fincore.amount) RETURNS bytea
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_send';
COMMENT ON FUNCTION fincore.amount_send(fincore.amount) IS 'Binary output: int64 minor units, a length byte, the ASCII code.';

CREATE TYPE fincore.amount (
    INPUT = fincore.amount_in,
    OUTPUT = fincore.amount_out,
    RECEIVE = fincore.amount_recv,
    SEND = fincore.amount_send,
    INTERNALLENGTH = 16,
    ALIGNMENT = double,
    STORAGE = plain
);
COMMENT ON TYPE fincore.amount IS
    'An exact monetary amount: a 64-bit count of minor units and its currency, e.g. ''12.34 USD''.';

-- Constructors and accessors.  Minor units and numeric values get distinct
-- names: fincore.amount(5, 'USD') would be ambiguous between 5 cents and $5.

CREATE FUNCTION fincore.from_minor(minor_units bigint, currency text) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_from_minor';
COMMENT ON FUNCTION fincore.from_minor(bigint, text) IS
    'Amount from a count of minor units: from_minor(1234, ''USD'') = 12.34 USD.';

CREATE FUNCTION fincore.from_numeric(value numeric, currency text, mode text DEFAULT NULL)
    RETURNS fincore.amount
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_from_numeric';
COMMENT ON FUNCTION fincore.from_numeric(numeric, text, text) IS
    'Amount from a decimal value. Without a rounding mode the value must be exact in the currency (ZF105 otherwise); with one, it is rounded once.';

CREATE FUNCTION fincore.minor_units(fincore.amount) RETURNS bigint
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_minor_units';
COMMENT ON FUNCTION fincore.minor_units(fincore.amount) IS 'The amount as a count of minor units.';

CREATE FUNCTION fincore.currency(fincore.amount) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_currency';
COMMENT ON FUNCTION fincore.currency(fincore.amount) IS 'The amount''s currency code.';

CREATE FUNCTION fincore.exponent(fincore.amount) RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_exponent';
COMMENT ON FUNCTION fincore.exponent(fincore.amount) IS 'The minor-unit exponent of the amount''s currency.';

CREATE FUNCTION fincore.to_numeric(fincore.amount) RETURNS numeric
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_to_numeric';
COMMENT ON FUNCTION fincore.to_numeric(fincore.amount) IS
    'The amount as an exact numeric in major units, with the currency''s scale: 12.34 USD -> 12.34.';

-- Arithmetic.

CREATE FUNCTION fincore.amount_pl(fincore.amount, fincore.amount) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_pl';
COMMENT ON FUNCTION fincore.amount_pl(fincore.amount, fincore.amount) IS 'Implements +; same currency only, overflow raises.';
CREATE FUNCTION fincore.amount_mi(fincore.amount, fincore.amount) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_mi';
COMMENT ON FUNCTION fincore.amount_mi(fincore.amount, fincore.amount) IS 'Implements -; same currency only, overflow raises.';
CREATE FUNCTION fincore.amount_um(fincore.amount) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_um';
COMMENT ON FUNCTION fincore.amount_um(fincore.amount) IS 'Implements unary -.';
CREATE FUNCTION fincore.amount_mul_int8(fincore.amount, bigint) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_mul_int8';
COMMENT ON FUNCTION fincore.amount_mul_int8(fincore.amount, bigint) IS 'Implements amount * bigint; overflow raises.';
CREATE FUNCTION fincore.int8_mul_amount(bigint, fincore.amount) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'int8_mul_amount';
COMMENT ON FUNCTION fincore.int8_mul_amount(bigint, fincore.amount) IS 'Implements bigint * amount; overflow raises.';
CREATE FUNCTION fincore.amount_div_int8(fincore.amount, bigint) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_div_int8';
COMMENT ON FUNCTION fincore.amount_div_int8(fincore.amount, bigint) IS
    'Implements amount / bigint; an inexact quotient raises ZF105 (use fincore.div or fincore.allocate).';

CREATE OPERATOR fincore.+ (LEFTARG = fincore.amount, RIGHTARG = fincore.amount,
    FUNCTION = fincore.amount_pl, COMMUTATOR = OPERATOR(fincore.+));
CREATE OPERATOR fincore.- (LEFTARG = fincore.amount, RIGHTARG = fincore.amount,
    FUNCTION = fincore.amount_mi);
CREATE OPERATOR fincore.- (RIGHTARG = fincore.amount, FUNCTION = fincore.amount_um);
CREATE OPERATOR fincore.* (LEFTARG = fincore.amount, RIGHTARG = bigint,
    FUNCTION = fincore.amount_mul_int8, COMMUTATOR = OPERATOR(fincore.*));
CREATE OPERATOR fincore.* (LEFTARG = bigint, RIGHTARG = fincore.amount,
    FUNCTION = fincore.int8_mul_amount, COMMUTATOR = OPERATOR(fincore.*));
CREATE OPERATOR fincore./ (LEFTARG = fincore.amount, RIGHTARG = bigint,
    FUNCTION = fincore.amount_div_int8);

-- Rounding.

CREATE FUNCTION fincore.div_round(numerator bigint, denominator bigint, mode text DEFAULT 'half_even')
    RETURNS bigint
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_div_round';
COMMENT ON FUNCTION fincore.div_round(bigint, bigint, text) IS
    'Exact integer division rounded once: half_even (default), half_up, half_down, up, down, ceiling, floor.';

CREATE FUNCTION fincore.div(value fincore.amount, divisor bigint, mode text DEFAULT 'half_even')
    RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_div';
COMMENT ON FUNCTION fincore.div(fincore.amount, bigint, text) IS
    'Divides an amount by an integer, rounding the minor units once with the given mode.';

CREATE FUNCTION fincore.multiply(value fincore.amount, rate numeric, mode text)
    RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_multiply';
COMMENT ON FUNCTION fincore.multiply(fincore.amount, numeric, text) IS
    'Amount times an exact decimal rate, computed on 128 bits and rounded once with the (required) mode.';

-- Allocation.

CREATE FUNCTION fincore.allocate(value fincore.amount, ratios bigint[]) RETURNS fincore.amount[]
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_allocate_ratios';
COMMENT ON FUNCTION fincore.allocate(fincore.amount, bigint[]) IS
    'Splits an amount by non-negative ratios; the parts sum exactly to it (largest remainder, ties to the earlier position).';

CREATE FUNCTION fincore.allocate(value fincore.amount, parts integer) RETURNS fincore.amount[]
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_allocate_even';
COMMENT ON FUNCTION fincore.allocate(fincore.amount, integer) IS
    'Splits an amount into n parts as evenly as possible; earlier parts take the odd units.';

-- Comparison.

CREATE FUNCTION fincore.amount_eq(fincore.amount, fincore.amount) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'amount_eq';
COMMENT ON FUNCTION fincore.amount_eq(fincore.amount, fincore.amount) IS 'Implements =; amounts of different currencies are not equal.';
CREATE FUNCTION fincore.amount_ne(fincore.amount, fincore.amount) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'amount_ne';
COMMENT ON FUNCTION fincore.amount_ne(fincore.amount, fincore.amount) IS 'Implements <>.';
CREATE FUNCTION fincore.amount_lt(fincore.amount, fincore.amount) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_lt';
COMMENT ON FUNCTION fincore.amount_lt(fincore.amount, fincore.amount) IS 'Implements <; different currencies raise ZF103.';
CREATE FUNCTION fincore.amount_le(fincore.amount, fincore.amount) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_le';
COMMENT ON FUNCTION fincore.amount_le(fincore.amount, fincore.amount) IS 'Implements <=; different currencies raise ZF103.';
CREATE FUNCTION fincore.amount_gt(fincore.amount, fincore.amount) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_gt';
COMMENT ON FUNCTION fincore.amount_gt(fincore.amount, fincore.amount) IS 'Implements >; different currencies raise ZF103.';
CREATE FUNCTION fincore.amount_ge(fincore.amount, fincore.amount) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_ge';
COMMENT ON FUNCTION fincore.amount_ge(fincore.amount, fincore.amount) IS 'Implements >=; different currencies raise ZF103.';
CREATE FUNCTION fincore.amount_cmp(fincore.amount, fincore.amount) RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'amount_cmp';
COMMENT ON FUNCTION fincore.amount_cmp(fincore.amount, fincore.amount) IS
    'btree support: a total order by currency code, then units (sorting groups currencies; it never raises).';
CREATE FUNCTION fincore.amount_hash(fincore.amount) RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'amount_hash';
COMMENT ON FUNCTION fincore.amount_hash(fincore.amount) IS 'hash support.';
CREATE FUNCTION fincore.amount_hash_extended(fincore.amount, bigint) RETURNS bigint
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'amount_hash_extended';
COMMENT ON FUNCTION fincore.amount_hash_extended(fincore.amount, bigint) IS 'Extended hash support (hash partitioning).';

CREATE OPERATOR fincore.= (LEFTARG = fincore.amount, RIGHTARG = fincore.amount,
    FUNCTION = fincore.amount_eq, COMMUTATOR = OPERATOR(fincore.=), NEGATOR = OPERATOR(fincore.<>),
    RESTRICT = pg_catalog.eqsel, JOIN = pg_catalog.eqjoinsel, HASHES, MERGES);
CREATE OPERATOR fincore.<> (LEFTARG = fincore.amount, RIGHTARG = fincore.amount,
    FUNCTION = fincore.amount_ne, COMMUTATOR = OPERATOR(fincore.<>), NEGATOR = OPERATOR(fincore.=),
    RESTRICT = pg_catalog.neqsel, JOIN = pg_catalog.neqjoinsel);
CREATE OPERATOR fincore.< (LEFTARG = fincore.amount, RIGHTARG = fincore.amount,
    FUNCTION = fincore.amount_lt, COMMUTATOR = OPERATOR(fincore.>), NEGATOR = OPERATOR(fincore.>=),
    RESTRICT = pg_catalog.scalarltsel, JOIN = pg_catalog.scalarltjoinsel);
CREATE OPERATOR fincore.<= (LEFTARG = fincore.amount, RIGHTARG = fincore.amount,
    FUNCTION = fincore.amount_le, COMMUTATOR = OPERATOR(fincore.>=), NEGATOR = OPERATOR(fincore.>),
    RESTRICT = pg_catalog.scalarlesel, JOIN = pg_catalog.scalarlejoinsel);
CREATE OPERATOR fincore.> (LEFTARG = fincore.amount, RIGHTARG = fincore.amount,
    FUNCTION = fincore.amount_gt, COMMUTATOR = OPERATOR(fincore.<), NEGATOR = OPERATOR(fincore.<=),
    RESTRICT = pg_catalog.scalargtsel, JOIN = pg_catalog.scalargtjoinsel);
CREATE OPERATOR fincore.>= (LEFTARG = fincore.amount, RIGHTARG = fincore.amount,
    FUNCTION = fincore.amount_ge, COMMUTATOR = OPERATOR(fincore.<=), NEGATOR = OPERATOR(fincore.<),
    RESTRICT = pg_catalog.scalargesel, JOIN = pg_catalog.scalargejoinsel);

CREATE OPERATOR CLASS fincore.amount_ops
    DEFAULT FOR TYPE fincore.amount USING btree AS
        OPERATOR 1 fincore.< ,
        OPERATOR 2 fincore.<= ,
        OPERATOR 3 fincore.= ,
        OPERATOR 4 fincore.>= ,
        OPERATOR 5 fincore.> ,
        FUNCTION 1 fincore.amount_cmp(fincore.amount, fincore.amount);

CREATE OPERATOR CLASS fincore.amount_hash_ops
    DEFAULT FOR TYPE fincore.amount USING hash AS
        OPERATOR 1 fincore.= ,
        FUNCTION 1 fincore.amount_hash(fincore.amount),
        FUNCTION 2 fincore.amount_hash_extended(fincore.amount, bigint);

-- Aggregates.  sum accumulates on 128 bits so its result never depends on the
-- order rows arrive in; min and max have no sort operator on purpose, so the
-- planner never answers them from an index ordered across currencies.

CREATE FUNCTION fincore.amount_sum_accum(internal, fincore.amount) RETURNS internal
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_sum_accum';
COMMENT ON FUNCTION fincore.amount_sum_accum(internal, fincore.amount) IS 'sum(amount) transition.';
CREATE FUNCTION fincore.amount_sum_combine(internal, internal) RETURNS internal
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_sum_combine';
COMMENT ON FUNCTION fincore.amount_sum_combine(internal, internal) IS 'sum(amount) combine (parallel aggregation).';
CREATE FUNCTION fincore.amount_sum_serialize(internal) RETURNS bytea
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_sum_serialize';
COMMENT ON FUNCTION fincore.amount_sum_serialize(internal) IS 'sum(amount) state serialisation.';
CREATE FUNCTION fincore.amount_sum_deserialize(bytea, internal) RETURNS internal
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_sum_deserialize';
COMMENT ON FUNCTION fincore.amount_sum_deserialize(bytea, internal) IS 'sum(amount) state deserialisation.';
CREATE FUNCTION fincore.amount_sum_final(internal) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_sum_final';
COMMENT ON FUNCTION fincore.amount_sum_final(internal) IS 'sum(amount) final: the total, which must fit 64 bits.';
CREATE FUNCTION fincore.amount_smaller(fincore.amount, fincore.amount) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_smaller';
COMMENT ON FUNCTION fincore.amount_smaller(fincore.amount, fincore.amount) IS 'min(amount) transition; different currencies raise ZF103.';
CREATE FUNCTION fincore.amount_larger(fincore.amount, fincore.amount) RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'amount_larger';
COMMENT ON FUNCTION fincore.amount_larger(fincore.amount, fincore.amount) IS 'max(amount) transition; different currencies raise ZF103.';

CREATE AGGREGATE fincore.sum(fincore.amount) (
    SFUNC = fincore.amount_sum_accum, STYPE = internal,
    FINALFUNC = fincore.amount_sum_final,
    COMBINEFUNC = fincore.amount_sum_combine,
    SERIALFUNC = fincore.amount_sum_serialize, DESERIALFUNC = fincore.amount_sum_deserialize,
    PARALLEL = SAFE);
COMMENT ON AGGREGATE fincore.sum(fincore.amount) IS 'Exact sum of amounts of one currency (ZF103 if mixed, ZF104 if the total overflows).';

CREATE AGGREGATE fincore.min(fincore.amount) (
    SFUNC = fincore.amount_smaller, STYPE = fincore.amount,
    COMBINEFUNC = fincore.amount_smaller, PARALLEL = SAFE);
COMMENT ON AGGREGATE fincore.min(fincore.amount) IS 'Smallest amount of one currency (ZF103 if mixed).';

CREATE AGGREGATE fincore.max(fincore.amount) (
    SFUNC = fincore.amount_larger, STYPE = fincore.amount,
    COMBINEFUNC = fincore.amount_larger, PARALLEL = SAFE);
COMMENT ON AGGREGATE fincore.max(fincore.amount) IS 'Largest amount of one currency (ZF103 if mixed).';

-- ==== sql/modules/uuidv7.sql
-- uuidv7: time-ordered ids (src/uuidv7.c).

CREATE FUNCTION fincore.uuidv7() RETURNS uuid
    LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_uuidv7';
COMMENT ON FUNCTION fincore.uuidv7() IS
    'A time-ordered UUID (RFC 9562 version 7): millisecond Unix time, sub-millisecond fraction, 62 random bits; strictly increasing within a backend.';

-- ==== sql/modules/tenancy.sql
-- tenancy: who is calling (claims, tenant, user), tenants and their members,
-- row level security for fincore's tables and the user's, and app-role grants
-- (src/tenancy.c).
--
-- The convention every fincore table follows (and fincore.protect() applies to
-- a user's table): a column tenant_id uuid NOT NULL DEFAULT fincore.require_tenant(),
-- row level security ENABLED and FORCED, one policy per command scoped to
-- fincore.tenant_id(), and indexes that lead with tenant_id where queries filter on it.

-- ---------------------------------------------------------------------------
-- Claims and identity (C).  STABLE and PARALLEL SAFE: the answers are cached
-- per backend and never folded into a plan.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.claims() RETURNS jsonb
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_claims';
COMMENT ON FUNCTION fincore.claims() IS
    'The JWT claims of the current request (request.jwt.claims) as jsonb; NULL when unset. ZF201 if not a JSON object.';

CREATE FUNCTION fincore.claim(path text) RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_claim';
COMMENT ON FUNCTION fincore.claim(text) IS
    'One claim by dotted path (e.g. app_metadata.tenant_id): a string''s contents or any other value''s JSON text; falls back to request.jwt.claim.<name>.';

-- tenant_id() and uid() are planned as initplans (SELECT fincore._tenant_id()),
-- evaluated once per execution instead of once per row; see src/tenancy.c.
CREATE FUNCTION fincore.identity_support(internal) RETURNS internal
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_identity_support';
COMMENT ON FUNCTION fincore.identity_support(internal) IS
    'Planner support for tenant_id() and uid(): plans each call as an initplan (off with fincore.hoist_identity).';

CREATE FUNCTION fincore._tenant_id() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_tenant_id';
COMMENT ON FUNCTION fincore._tenant_id() IS 'fincore.tenant_id() as its initplan calls it; use fincore.tenant_id().';
CREATE FUNCTION fincore._uid() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_uid';
COMMENT ON FUNCTION fincore._uid() IS 'fincore.uid() as its initplan calls it; use fincore.uid().';

CREATE FUNCTION fincore.uid() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE SUPPORT fincore.identity_support
    AS 'MODULE_PATHNAME', 'fincore_uid';
COMMENT ON FUNCTION fincore.uid() IS
    'The current user: fincore.set_user() in this transaction, else the sub claim (request.jwt.claims, then request.jwt.claim.sub). ZF202 if malformed.';

CREATE FUNCTION fincore.role() RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_role';
COMMENT ON FUNCTION fincore.role() IS 'The role claim of the current request (e.g. authenticated), or NULL.';

CREATE FUNCTION fincore.tenant_id() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE SUPPORT fincore.identity_support
    AS 'MODULE_PATHNAME', 'fincore_tenant_id';
COMMENT ON FUNCTION fincore.tenant_id() IS
    'The current tenant: fincore.set_tenant() in this transaction, else the claim named by fincore.tenant_claim; NULL when there is none (policies then match no row). ZF202 if malformed.';

CREATE FUNCTION fincore.require_tenant() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_require_tenant';
COMMENT ON FUNCTION fincore.require_tenant() IS
    'The current tenant, or ZF203 when there is none; the default of every tenant_id column.';

CREATE FUNCTION fincore.set_tenant(tenant uuid) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_set_tenant';
COMMENT ON FUNCTION fincore.set_tenant(uuid) IS
    'Sets the current tenant for this transaction only (NULL clears it); ZF204 if the tenant does not exist. For trusted application roles without JWTs.';

CREATE FUNCTION fincore.set_user(user_id uuid) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_set_user';
COMMENT ON FUNCTION fincore.set_user(uuid) IS
    'Sets the current user for this transaction only (NULL clears it). For trusted application roles without JWTs.';

-- ---------------------------------------------------------------------------
-- Tenants and members.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.tenants (
    id         uuid        PRIMARY KEY DEFAULT fincore.uuidv7(),
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    metadata   jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fincore.tenants IS
    'Tenants. Readable by members and by the current tenant; written through fincore.create_tenant().';

CREATE TABLE fincore.tenant_members (
    tenant_id  uuid        NOT NULL DEFAULT fincore.require_tenant()
                           REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL,
    role       text        NOT NULL CHECK (role ~ '^[a-z][a-z0-9_]{0,62}$'),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, user_id, role)
);
CREATE INDEX tenant_members_user_idx ON fincore.tenant_members (user_id);
COMMENT ON TABLE fincore.tenant_members IS
    'Which users belong to which tenants, with which roles. Written through fincore.add_tenant_member() / remove_tenant_member().';

SELECT pg_catalog.pg_extension_config_dump('fincore.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.tenant_members', '');

CREATE FUNCTION fincore.has_tenant_role(tenant uuid, role text DEFAULT NULL) RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'fincore_has_tenant_role';
COMMENT ON FUNCTION fincore.has_tenant_role(uuid, text) IS
    'Is the current user a member of tenant (with this role, when given)? Loaded once per transaction; never raises on its arguments (LEAKPROOF).';

CREATE FUNCTION fincore.my_tenants() RETURNS uuid[]
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_my_tenants';
COMMENT ON FUNCTION fincore.my_tenants() IS 'The tenants the current user is a member of (empty without a user).';

CREATE FUNCTION fincore.tenant_members_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_tenant_members_changed';
COMMENT ON FUNCTION fincore.tenant_members_changed() IS
    'Trigger: drops every backend''s cached memberships when fincore.tenant_members changes.';
CREATE TRIGGER tenant_members_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.tenant_members
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.tenant_members_changed();

-- ---------------------------------------------------------------------------
-- Row level security for a table: fincore.protect() / fincore.unprotect().
-- SECURITY INVOKER on purpose: only the table's owner may change its policies.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.protect(tbl regclass, tenant_column name DEFAULT 'tenant_id') RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    kind     "char";
    col_type oid;
    has_def  boolean;
    cmd      text;
    pred     text := pg_catalog.format('(%I OPERATOR(pg_catalog.=) fincore.tenant_id())', tenant_column);
BEGIN
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF kind IS NULL OR kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot protect %: not a table', tbl
            USING ERRCODE = 'ZF207', HINT = 'Row level security applies to ordinary and partitioned tables.';
    END IF;
    SELECT a.atttypid, a.atthasdef INTO col_type, has_def
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = tenant_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF col_type IS NULL THEN
        RAISE EXCEPTION 'table % has no column %', tbl, pg_catalog.quote_ident(tenant_column)
            USING ERRCODE = 'ZF205', HINT = 'Add a column tenant_id uuid NOT NULL, or name the tenant column.';
    ELSIF col_type <> 'pg_catalog.uuid'::pg_catalog.regtype THEN
        RAISE EXCEPTION 'column % of table % is of type %, not uuid',
                pg_catalog.quote_ident(tenant_column), tbl, col_type::pg_catalog.regtype
            USING ERRCODE = 'ZF205';
    END IF;

    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    IF NOT has_def THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT fincore.require_tenant()',
                                  tbl, tenant_column);
    END IF;

    FOREACH cmd IN ARRAY ARRAY['select', 'insert', 'update', 'delete'] LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                    WHERE p.polrelid = tbl AND p.polname = 'fincore_tenant_' || cmd) THEN
            EXECUTE pg_catalog.format('DROP POLICY %I ON %s', 'fincore_tenant_' || cmd, tbl);
        END IF;
        EXECUTE pg_catalog.format('CREATE POLICY %I ON %s AS PERMISSIVE FOR %s TO PUBLIC %s',
            'fincore_tenant_' || cmd, tbl, cmd,
            CASE cmd WHEN 'select' THEN 'USING ' || pred
                     WHEN 'delete' THEN 'USING ' || pred
                     WHEN 'insert' THEN 'WITH CHECK ' || pred
                     ELSE 'USING ' || pred || ' WITH CHECK ' || pred END);
    END LOOP;

    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                    WHERE i.indrelid = tbl
                      AND i.indkey[0] = (SELECT a.attnum FROM pg_catalog.pg_attribute a
                                          WHERE a.attrelid = tbl AND a.attname = tenant_column)) THEN
        RAISE NOTICE 'no index of % leads with %', tbl, pg_catalog.quote_ident(tenant_column)
            USING HINT = pg_catalog.format('Queries scoped to a tenant want one: CREATE INDEX ON %s (%I, ...).',
                                           tbl, tenant_column);
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.protect(regclass, name) IS
    'Applies fincore''s tenant isolation to a table (idempotent): RLS enabled and forced, one policy per command scoped to fincore.tenant_id(), column default fincore.require_tenant() if it has none. Run as the table''s owner.';

CREATE FUNCTION fincore.unprotect(tbl regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    cmd text;
BEGIN
    FOREACH cmd IN ARRAY ARRAY['select', 'insert', 'update', 'delete'] LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                    WHERE p.polrelid = tbl AND p.polname = 'fincore_tenant_' || cmd) THEN
            EXECUTE pg_catalog.format('DROP POLICY %I ON %s', 'fincore_tenant_' || cmd, tbl);
        END IF;
    END LOOP;
    -- Row level security stays on while other policies still rely on it.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = tbl) THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', tbl);
        EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.unprotect(regclass) IS
    'Removes what fincore.protect() added: the fincore_tenant_* policies, and row level security itself when no other policy remains. The column default stays.';

-- fincore's own tables follow the convention.
SELECT fincore.protect('fincore.tenant_members');
ALTER TABLE fincore.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE fincore.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY fincore_tenant_select ON fincore.tenants FOR SELECT TO PUBLIC
    USING (id OPERATOR(pg_catalog.=) fincore.tenant_id() OR fincore.has_tenant_role(id));
-- Members see their own memberships in other tenants too (to choose one).
CREATE POLICY fincore_member_select ON fincore.tenant_members FOR SELECT TO PUBLIC
    USING (user_id OPERATOR(pg_catalog.=) fincore.uid());

-- ---------------------------------------------------------------------------
-- Managing tenants and members: trusted roles only (see grant_app_role).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.create_tenant(name text, id uuid DEFAULT NULL, metadata jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    new_id   uuid := coalesce(create_tenant.id, fincore.uuidv7());
    old_name text;
BEGIN
    INSERT INTO fincore.tenants AS t (id, name, metadata)
    VALUES (new_id, create_tenant.name, coalesce(create_tenant.metadata, '{}'))
    ON CONFLICT ON CONSTRAINT tenants_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT t.name INTO old_name FROM fincore.tenants t WHERE t.id = new_id;
        IF old_name IS DISTINCT FROM create_tenant.name THEN
            RAISE EXCEPTION 'tenant % already exists with the name %', new_id, pg_catalog.quote_literal(old_name)
                USING ERRCODE = 'ZF208', HINT = 'A tenant id is created once; the same id and name again is a no-op.';
        END IF;
    END IF;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_tenant(text, uuid, jsonb) IS
    'Creates a tenant and returns its id (a new UUIDv7 unless given). Idempotent for the same id and name; ZF208 for the same id with another name.';

CREATE FUNCTION fincore.add_tenant_member(user_id uuid, role text DEFAULT 'member') RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF add_tenant_member.role IS NULL OR add_tenant_member.role !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid member role: %', coalesce(pg_catalog.quote_literal(add_tenant_member.role), 'NULL')
            USING ERRCODE = 'ZF206', HINT = 'A role is a lower-case word such as owner, admin or member.';
    END IF;
    IF add_tenant_member.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'ZF206';
    END IF;
    INSERT INTO fincore.tenant_members (tenant_id, user_id, role)
    VALUES (fincore.require_tenant(), add_tenant_member.user_id, add_tenant_member.role)
    ON CONFLICT DO NOTHING;
END
$fn$;
COMMENT ON FUNCTION fincore.add_tenant_member(uuid, text) IS
    'Adds a user to the current tenant with a role (idempotent). ZF203 without a current tenant, ZF206 for a malformed role.';

CREATE FUNCTION fincore.remove_tenant_member(user_id uuid, role text DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    n integer;
BEGIN
    DELETE FROM fincore.tenant_members m
     WHERE m.tenant_id = fincore.require_tenant()
       AND m.user_id = remove_tenant_member.user_id
       AND (remove_tenant_member.role IS NULL OR m.role = remove_tenant_member.role);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION fincore.remove_tenant_member(uuid, text) IS
    'Removes a user''s memberships (one role, or all) from the current tenant; returns how many were removed.';

-- ---------------------------------------------------------------------------
-- Application roles.  App roles may SELECT fincore's tables (under RLS) and
-- EXECUTE the functions listed for the 'app' audience; trusted roles (a
-- backend service) also those listed for 'trusted': set_tenant, set_user and
-- tenant management, which act across tenants.  No app role may write a
-- fincore table directly.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.function_audience (
    fn       text PRIMARY KEY,      -- a regprocedure's text; text so pg_upgrade accepts the table
    audience text NOT NULL CHECK (audience IN ('app', 'trusted'))
);
COMMENT ON TABLE fincore.function_audience IS
    'Which fincore functions fincore.grant_app_role() grants: app roles get the ''app'' ones, trusted roles both.';

CREATE TABLE fincore.app_roles (
    role_name name    PRIMARY KEY,
    trusted   boolean NOT NULL
);
COMMENT ON TABLE fincore.app_roles IS 'Roles registered with fincore.grant_app_role(); upgrades re-apply their grants.';
SELECT pg_catalog.pg_extension_config_dump('fincore.app_roles', '');

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.set_tenant(uuid)', 'trusted'),
    ('fincore.set_user(uuid)', 'trusted'),
    ('fincore.create_tenant(text,uuid,jsonb)', 'trusted'),
    ('fincore.add_tenant_member(uuid,text)', 'trusted'),
    ('fincore.remove_tenant_member(uuid,text)', 'trusted');

CREATE FUNCTION fincore.grant_app_role(role_name name, trusted boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    r record;
BEGIN
    PERFORM grant_app_role.role_name::regrole;     -- 42704 if there is no such role
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA fincore TO %I', grant_app_role.role_name);
    EXECUTE pg_catalog.format('GRANT SELECT ON ALL TABLES IN SCHEMA fincore TO %I', grant_app_role.role_name);
    FOR r IN SELECT f.fn, f.audience FROM fincore.function_audience f ORDER BY f.fn LOOP
        IF r.audience = 'app' OR grant_app_role.trusted THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', r.fn::regprocedure, grant_app_role.role_name);
        ELSE
            EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', r.fn::regprocedure, grant_app_role.role_name);
        END IF;
    END LOOP;
    INSERT INTO fincore.app_roles AS a (role_name, trusted) VALUES (grant_app_role.role_name, grant_app_role.trusted)
    ON CONFLICT ON CONSTRAINT app_roles_pkey DO UPDATE SET trusted = excluded.trusted;
END
$fn$;
COMMENT ON FUNCTION fincore.grant_app_role(name, boolean) IS
    'Lets a role use fincore as an application: SELECT on fincore''s tables (under RLS) and EXECUTE on its API; trusted roles may also set the tenant and manage tenants. Idempotent.';

CREATE FUNCTION fincore.revoke_app_role(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    r record;
BEGIN
    EXECUTE pg_catalog.format('REVOKE SELECT ON ALL TABLES IN SCHEMA fincore FROM %I', revoke_app_role.role_name);
    FOR r IN SELECT f.fn FROM fincore.function_audience f ORDER BY f.fn LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', r.fn::regprocedure, revoke_app_role.role_name);
    END LOOP;
    DELETE FROM fincore.app_roles a WHERE a.role_name = revoke_app_role.role_name;
END
$fn$;
COMMENT ON FUNCTION fincore.revoke_app_role(name) IS 'Undoes fincore.grant_app_role().';

REVOKE ALL ON FUNCTION fincore.protect(regclass, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.unprotect(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.grant_app_role(name, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.revoke_app_role(name) FROM PUBLIC;

-- ==== sql/modules/maintenance.sql
-- maintenance: the one periodic entry point of fincore.  Each module registers its
-- periodic steps here (expire holds, rescue leases, roll up hot accounts, retention, ...);
-- fincore.maintenance() runs them in order, each within its own time budget, and a
-- failing step is reported without stopping the others.  pg_cron calls it (see
-- fincore.schedule_maintenance()).

CREATE TABLE fincore.maintenance_steps (
    step        text    PRIMARY KEY CHECK (step ~ '^[a-z][a-z0-9_]*$'),
    fn          text    NOT NULL,          -- regprocedure text of fn(budget interval) RETURNS bigint
    position    integer NOT NULL UNIQUE,
    description text    NOT NULL
);
COMMENT ON TABLE fincore.maintenance_steps IS
    'The periodic steps fincore.maintenance() runs, in position order. Each module registers its own; fn(budget interval) returns how much work it did.';

CREATE FUNCTION fincore.maintenance(step_budget interval DEFAULT '5 seconds')
    RETURNS TABLE (step text, done bigint, elapsed interval, error text)
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    s       record;
    started timestamptz;
BEGIN
    FOR s IN SELECT m.step, m.fn FROM fincore.maintenance_steps m ORDER BY m.position LOOP
        started := pg_catalog.clock_timestamp();
        step := s.step;
        error := NULL;
        BEGIN
            EXECUTE pg_catalog.format('SELECT %s($1)', s.fn::regprocedure::oid::regproc) INTO done USING step_budget;
        EXCEPTION WHEN OTHERS THEN
            done := 0;
            error := SQLSTATE || ': ' || SQLERRM;
            RAISE WARNING 'fincore maintenance step % failed: %', s.step, error;
        END;
        elapsed := pg_catalog.clock_timestamp() - started;
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION fincore.maintenance(interval) IS
    'Runs every registered maintenance step once, each within step_budget; one row per step (work done, time taken, error if it failed). For pg_cron.';
REVOKE ALL ON FUNCTION fincore.maintenance(interval) FROM PUBLIC;

-- ==== sql/modules/outbox.sql
-- outbox: the transactional outbox and the idempotent inbox (src/outbox.c, docs/outbox.md).
--
-- Events are written in the caller's transaction into fincore.outbox_events, a table
-- partitioned into three rotating slots; consumers read them in batches between two
-- snapshots (PgQ's design), never UPDATE or DELETE them, and keep their position in one
-- small row each.  Old slots are emptied with TRUNCATE by fincore.outbox_maintenance()
-- once every consumer has passed them.

-- ---------------------------------------------------------------------------
-- Event storage.
-- ---------------------------------------------------------------------------

-- The low 62 bits of every event id (a UUIDv7) are its seq, so the sequence stops there.
CREATE SEQUENCE fincore.outbox_seq AS bigint MAXVALUE 4611686018427387903 CACHE 1;
COMMENT ON SEQUENCE fincore.outbox_seq IS 'Event sequence numbers: the order of events within a batch; also the low 62 bits of each event id.';

-- Column names id, aggregatetype, aggregateid, type and payload are Debezium's outbox
-- event router defaults.
CREATE TABLE fincore.outbox_events (
    id            uuid        NOT NULL,
    seq           bigint      NOT NULL,
    txid          xid8        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    tenant_id     uuid        NOT NULL DEFAULT fincore.require_tenant(),
    slot          smallint    NOT NULL,
    topic         text        NOT NULL,
    type          text        NOT NULL,
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    payload       jsonb       NOT NULL,
    headers       jsonb
) PARTITION BY LIST (slot);
COMMENT ON TABLE fincore.outbox_events IS
    'Outbox events (insert-only): written by fincore.emit() in the caller''s transaction, read by consumers in snapshot batches, removed by TRUNCATE of a whole slot. txid is the writing transaction (top level).';
CREATE TABLE fincore.outbox_events_0 PARTITION OF fincore.outbox_events FOR VALUES IN (0);
CREATE TABLE fincore.outbox_events_1 PARTITION OF fincore.outbox_events FOR VALUES IN (1);
CREATE TABLE fincore.outbox_events_2 PARTITION OF fincore.outbox_events FOR VALUES IN (2);
COMMENT ON TABLE fincore.outbox_events_0 IS 'Rotating slot 0 of fincore.outbox_events.';
COMMENT ON TABLE fincore.outbox_events_1 IS 'Rotating slot 1 of fincore.outbox_events.';
COMMENT ON TABLE fincore.outbox_events_2 IS 'Rotating slot 2 of fincore.outbox_events.';
-- seq: a batch is read in seq order; txid: a batch's bounds are found by transaction id.
CREATE INDEX outbox_events_seq_idx ON fincore.outbox_events (seq);
CREATE INDEX outbox_events_txid_idx ON fincore.outbox_events (txid);

-- Which slot takes new events.  current -> draining (rotated out; writers that saw it
-- may still be inserting) -> sealed (no writer can insert any more; sealed_snapshot
-- sees every transaction that did) -> empty (truncated) -> current again.
CREATE TABLE fincore.outbox_slots (
    slot            smallint    PRIMARY KEY CHECK (slot BETWEEN 0 AND 2),
    partition       text        NOT NULL UNIQUE,
    state           text        NOT NULL CHECK (state IN ('current', 'draining', 'sealed', 'empty')),
    since           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sealed_snapshot pg_snapshot,
    CHECK ((state = 'sealed') = (sealed_snapshot IS NOT NULL))
);
CREATE UNIQUE INDEX outbox_slots_one_current ON fincore.outbox_slots (state) WHERE state = 'current';
COMMENT ON TABLE fincore.outbox_slots IS
    'The rotation state of the three event slots; changed only by fincore.outbox_maintenance().';
INSERT INTO fincore.outbox_slots (slot, partition, state) VALUES
    (0, 'outbox_events_0', 'current'), (1, 'outbox_events_1', 'empty'), (2, 'outbox_events_2', 'empty');

-- Global settings: one row at most; no row means the defaults.
CREATE TABLE fincore.outbox_config (
    singleton         boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
    notify            boolean  NOT NULL DEFAULT false,
    notify_channel    text     NOT NULL DEFAULT 'fincore_outbox' CHECK (notify_channel ~ '^[a-z_][a-z0-9_]{0,62}$'),
    rotation_interval interval NOT NULL DEFAULT '5 minutes' CHECK (rotation_interval >= '0'),
    inbox_retention   interval NOT NULL DEFAULT '30 days' CHECK (inbox_retention >= '0')
);
COMMENT ON TABLE fincore.outbox_config IS
    'Outbox settings (one row; none means the defaults): NOTIFY on commit of an emitting transaction (off by default), slot rotation interval, inbox retention. Set with fincore.outbox_configure().';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_config', '');

-- Per-tenant settings.
CREATE TABLE fincore.outbox_settings (
    tenant_id     uuid        PRIMARY KEY DEFAULT fincore.require_tenant()
                              REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    ledger_events boolean     NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fincore.outbox_settings IS
    'Per-tenant outbox settings: ledger_events = false stops the ledger''s transfer and account events for the tenant. Set with fincore.set_ledger_events().';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_settings', '');

-- ---------------------------------------------------------------------------
-- Consumers: infrastructure, one row each; the position is a snapshot.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.outbox_consumers (
    name          text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    topics        text[]      NOT NULL,
    tenant_scope  uuid        REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    max_attempts  integer     NOT NULL DEFAULT 10 CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff       interval    NOT NULL DEFAULT '1 second' CHECK (backoff BETWEEN '0' AND '1 day'),
    backoff_max   interval    NOT NULL DEFAULT '1 hour' CHECK (backoff_max >= backoff AND backoff_max <= '30 days'),
    position      pg_snapshot NOT NULL,
    positioned_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    batch_end     pg_snapshot,
    batch_acked   bigint,
    batch_last    bigint,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK ((batch_end IS NULL) = (batch_acked IS NULL) AND (batch_end IS NULL) = (batch_last IS NULL))
);
COMMENT ON TABLE fincore.outbox_consumers IS
    'Named consumers. position: every event whose txid is visible in this snapshot has been consumed. An open batch holds the events visible in batch_end and not in position, read in seq order; batch_acked is the last acknowledged seq of it.';
COMMENT ON COLUMN fincore.outbox_consumers.tenant_scope IS
    'NULL: a cross-tenant consumer (trusted roles only); otherwise only this tenant''s events, and that tenant''s app roles may poll it.';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_consumers', '');
-- App roles see only the consumers scoped to their tenant.
ALTER TABLE fincore.outbox_consumers ENABLE ROW LEVEL SECURITY;
ALTER TABLE fincore.outbox_consumers FORCE ROW LEVEL SECURITY;
CREATE POLICY fincore_consumer_select ON fincore.outbox_consumers FOR SELECT TO PUBLIC
    USING (tenant_scope OPERATOR(pg_catalog.=) fincore.tenant_id());

-- Events a consumer nacked, waiting for their next attempt (copies: the slot may be gone).
CREATE TABLE fincore.outbox_retries (
    consumer        text        NOT NULL REFERENCES fincore.outbox_consumers (name) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    seq             bigint      NOT NULL,
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant(),
    topic           text        NOT NULL,
    type            text        NOT NULL,
    aggregatetype   text        NOT NULL,
    aggregateid     text        NOT NULL,
    payload         jsonb       NOT NULL,
    headers         jsonb,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL CHECK (attempts >= 1),
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    PRIMARY KEY (consumer, id)
);
CREATE INDEX outbox_retries_due_idx ON fincore.outbox_retries (consumer, next_attempt_at);
CREATE INDEX outbox_retries_tenant_idx ON fincore.outbox_retries (tenant_id, consumer);
COMMENT ON TABLE fincore.outbox_retries IS
    'Events a consumer failed (fincore.nack), redelivered by poll() from next_attempt_at on; attempts = failures so far.';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_retries', '');

CREATE TABLE fincore.dead_events (
    consumer      text        NOT NULL REFERENCES fincore.outbox_consumers (name) ON DELETE CASCADE,
    id            uuid        NOT NULL,
    seq           bigint      NOT NULL,
    tenant_id     uuid        NOT NULL DEFAULT fincore.require_tenant(),
    topic         text        NOT NULL,
    type          text        NOT NULL,
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    payload       jsonb       NOT NULL,
    headers       jsonb,
    created_at    timestamptz NOT NULL,
    attempts      integer     NOT NULL,
    last_error    text,
    died_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (consumer, id)
);
CREATE INDEX dead_events_tenant_idx ON fincore.dead_events (tenant_id, died_at);
COMMENT ON TABLE fincore.dead_events IS
    'Dead letters: events a consumer failed max_attempts times. Inspect them here; fincore.replay_dead() delivers them again.';
SELECT pg_catalog.pg_extension_config_dump('fincore.dead_events', '');

-- ---------------------------------------------------------------------------
-- Inbox.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.inbox (
    tenant_id   uuid        NOT NULL DEFAULT fincore.require_tenant(),
    source      text        NOT NULL,
    message_id  text        NOT NULL,
    payload     jsonb,
    received_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, source, message_id)
);
CREATE INDEX inbox_received_idx ON fincore.inbox (received_at);
COMMENT ON TABLE fincore.inbox IS
    'Messages accepted once per (tenant, source, message_id): fincore.inbox_accept() and fincore.accept_webhook() (source webhook:<provider>). Kept for outbox_config.inbox_retention.';
SELECT pg_catalog.pg_extension_config_dump('fincore.inbox', '');

-- Tenant isolation for every table holding tenant data.  (protect() notes that the event
-- partitions have no index leading with tenant_id: on purpose, the hot path keeps two.)
CREATE FUNCTION fincore._outbox_protect_quietly(tbl regclass) RETURNS void
    LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE SET client_min_messages = warning
    AS $$ SELECT fincore.protect(tbl) $$;
SELECT fincore._outbox_protect_quietly(t::regclass)
  FROM unnest(ARRAY['fincore.outbox_events', 'fincore.outbox_events_0', 'fincore.outbox_events_1',
                    'fincore.outbox_events_2', 'fincore.outbox_settings', 'fincore.outbox_retries',
                    'fincore.dead_events', 'fincore.inbox']) AS t;
DROP FUNCTION fincore._outbox_protect_quietly(regclass);

-- ---------------------------------------------------------------------------
-- Emitting (C).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.emit(topic text, event_type text, aggregate_type text, aggregate_id text,
                             payload jsonb, headers jsonb DEFAULT NULL) RETURNS uuid
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_emit';
COMMENT ON FUNCTION fincore.emit(text, text, text, text, jsonb, jsonb) IS
    'Writes an event for the current tenant in the caller''s transaction (gone if it rolls back) and returns its id. Events of one aggregate are delivered in commit order. ZF501 for a bad argument, ZF203 without a tenant.';

CREATE FUNCTION fincore._outbox_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_outbox_changed';
COMMENT ON FUNCTION fincore._outbox_changed() IS
    'Trigger: drops every backend''s cached outbox state (current slot, settings) when the table changes.';
CREATE TRIGGER outbox_slots_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.outbox_slots
    FOR EACH STATEMENT EXECUTE FUNCTION fincore._outbox_changed();
CREATE TRIGGER outbox_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.outbox_config
    FOR EACH STATEMENT EXECUTE FUNCTION fincore._outbox_changed();
CREATE TRIGGER outbox_settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.outbox_settings
    FOR EACH STATEMENT EXECUTE FUNCTION fincore._outbox_changed();

CREATE FUNCTION fincore.ledger_events_enabled() RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_ledger_events_enabled';
COMMENT ON FUNCTION fincore.ledger_events_enabled() IS
    'Does the ledger emit events for the current tenant? (fincore.outbox_settings; true unless turned off; true without a tenant.)';

CREATE FUNCTION fincore.set_ledger_events(enabled boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    INSERT INTO fincore.outbox_settings AS s (tenant_id, ledger_events)
    VALUES (fincore.require_tenant(), set_ledger_events.enabled)
    ON CONFLICT ON CONSTRAINT outbox_settings_pkey
    DO UPDATE SET ledger_events = excluded.ledger_events, updated_at = pg_catalog.now();
END
$fn$;
COMMENT ON FUNCTION fincore.set_ledger_events(boolean) IS
    'Turns the ledger''s outbox events on or off for the current tenant (ZF203 without one).';

-- ---------------------------------------------------------------------------
-- Consuming.
-- ---------------------------------------------------------------------------

-- Internal: a snapshot taken now, whatever the transaction's isolation level.
CREATE FUNCTION fincore._outbox_latest_snapshot() RETURNS pg_snapshot
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_outbox_latest_snapshot';
COMMENT ON FUNCTION fincore._outbox_latest_snapshot() IS
    'Internal: pg_current_snapshot() of a snapshot taken now (not the transaction''s).';

-- Internal: is every transaction visible in z also visible in p?
CREATE FUNCTION fincore._outbox_covers(p pg_snapshot, z pg_snapshot) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
    SELECT pg_catalog.pg_snapshot_xmax(z) OPERATOR(pg_catalog.<=) pg_catalog.pg_snapshot_xmax(p)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_snapshot_xip(p) AS x
                        WHERE x OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmax(z)
                          AND pg_catalog.pg_visible_in_snapshot(x, z))
$fn$;
COMMENT ON FUNCTION fincore._outbox_covers(pg_snapshot, pg_snapshot) IS
    'Internal: true when every transaction completed in snapshot z is completed in snapshot p too.';

CREATE FUNCTION fincore.subscribe(consumer text, topics text[], tenant_scope uuid DEFAULT NULL,
                                  max_attempts integer DEFAULT 10, backoff interval DEFAULT '1 second',
                                  backoff_max interval DEFAULT '1 hour') RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    old record;
    t   text;
BEGIN
    IF subscribe.consumer IS NULL OR subscribe.consumer !~ '^[a-z][a-z0-9_.:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid consumer name: %', coalesce(pg_catalog.quote_literal(subscribe.consumer), 'NULL')
            USING ERRCODE = 'ZF503', HINT = 'A consumer name is a lower-case word of up to 63 characters: [a-z][a-z0-9_.:-]*.';
    END IF;
    IF subscribe.topics IS NULL OR pg_catalog.cardinality(subscribe.topics) = 0
       OR pg_catalog.array_ndims(subscribe.topics) <> 1 THEN
        RAISE EXCEPTION 'consumer % needs a one-dimensional, non-empty array of topics', subscribe.consumer
            USING ERRCODE = 'ZF503', HINT = 'Name the topics it reads, or ''{*}'' for every topic.';
    END IF;
    FOREACH t IN ARRAY subscribe.topics LOOP
        IF t IS NULL OR (t <> '*' AND t !~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$') THEN
            RAISE EXCEPTION 'invalid topic for consumer %: %', subscribe.consumer, coalesce(pg_catalog.quote_literal(t), 'NULL')
                USING ERRCODE = 'ZF503', HINT = 'A topic is 1-200 characters of [A-Za-z0-9._:/-], or * for every topic.';
        END IF;
    END LOOP;
    IF subscribe.max_attempts IS NULL OR subscribe.max_attempts NOT BETWEEN 1 AND 1000
       OR subscribe.backoff IS NULL OR subscribe.backoff NOT BETWEEN '0' AND '1 day'
       OR subscribe.backoff_max IS NULL OR subscribe.backoff_max < subscribe.backoff
       OR subscribe.backoff_max > '30 days' THEN
        RAISE EXCEPTION 'invalid retry settings for consumer %: max_attempts %, backoff %, backoff_max %',
                subscribe.consumer, subscribe.max_attempts, subscribe.backoff, subscribe.backoff_max
            USING ERRCODE = 'ZF503', HINT = 'max_attempts is 1-1000; 0 <= backoff <= 1 day; backoff <= backoff_max <= 30 days.';
    END IF;
    IF subscribe.tenant_scope IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM fincore.tenants tt WHERE tt.id = subscribe.tenant_scope) THEN
        RAISE EXCEPTION 'tenant % does not exist', subscribe.tenant_scope USING ERRCODE = 'ZF204';
    END IF;

    -- Retention (outbox_maintenance) holds SHARE ROW EXCLUSIVE on outbox_slots while it
    -- decides what every consumer has passed: a new position is never taken under it.
    LOCK TABLE fincore.outbox_slots IN ROW EXCLUSIVE MODE;
    INSERT INTO fincore.outbox_consumers AS c (name, topics, tenant_scope, max_attempts, backoff, backoff_max, position)
    VALUES (subscribe.consumer, subscribe.topics, subscribe.tenant_scope, subscribe.max_attempts,
            subscribe.backoff, subscribe.backoff_max, fincore._outbox_latest_snapshot())
    ON CONFLICT ON CONSTRAINT outbox_consumers_pkey DO NOTHING;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT c.tenant_scope INTO old FROM fincore.outbox_consumers c WHERE c.name = subscribe.consumer FOR UPDATE;
    IF old.tenant_scope IS DISTINCT FROM subscribe.tenant_scope THEN
        RAISE EXCEPTION 'consumer % exists with tenant scope %', subscribe.consumer, coalesce(old.tenant_scope::text, 'NULL (all tenants)')
            USING ERRCODE = 'ZF504', HINT = 'A consumer''s tenant scope is fixed: unsubscribe it first, or choose another name.';
    END IF;
    UPDATE fincore.outbox_consumers c
       SET topics = subscribe.topics, max_attempts = subscribe.max_attempts,
           backoff = subscribe.backoff, backoff_max = subscribe.backoff_max
     WHERE c.name = subscribe.consumer;
END
$fn$;
COMMENT ON FUNCTION fincore.subscribe(text, text[], uuid, integer, interval, interval) IS
    'Creates a consumer reading the given topics (''{*}'' = all) from now on, or changes an existing one''s topics and retry settings (its position stays). tenant_scope NULL = every tenant (trusted roles poll it). ZF503 bad argument, ZF504 other tenant scope.';

CREATE FUNCTION fincore.unsubscribe(consumer text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    DELETE FROM fincore.outbox_consumers c WHERE c.name = unsubscribe.consumer;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION fincore.unsubscribe(text) IS
    'Drops a consumer with its retries and dead letters; true if it existed. Retention no longer waits for it.';

CREATE FUNCTION fincore.poll(consumer text, max integer DEFAULT 100)
    RETURNS TABLE (id uuid, seq bigint, tenant_id uuid, topic text, type text, aggregatetype text,
                   aggregateid text, payload jsonb, headers jsonb, created_at timestamptz, retries integer)
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE ROWS 100 AS 'MODULE_PATHNAME', 'fincore_poll';
COMMENT ON FUNCTION fincore.poll(text, integer) IS
    'The consumer''s next events, at most max (1-10000): retries that are due first, then its batch in commit order. Polling again without ack returns the same events. ZF502 unknown consumer, ZF503 bad max, ZF505 not allowed.';

CREATE FUNCTION fincore.ack(consumer text, event_id uuid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_ack';
COMMENT ON FUNCTION fincore.ack(text, uuid) IS
    'Acknowledges an event poll() returned, and with it every event of the batch delivered before it. In the consumer''s own transaction: exactly once. ZF506 if it is not pending (e.g. already acknowledged).';

CREATE FUNCTION fincore.nack(consumer text, event_id uuid, error text DEFAULT NULL) RETURNS text
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_nack';
COMMENT ON FUNCTION fincore.nack(text, uuid, text) IS
    'Reports a failed event: acknowledges the events delivered before it and schedules it again with exponential backoff (''retry''), or after max_attempts moves it to fincore.dead_events (''dead''). ZF506 if it is not pending.';

CREATE FUNCTION fincore.replay_dead(consumer text, event_ids uuid[] DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    n bigint;
BEGIN
    IF replay_dead.consumer IS NULL
       OR NOT EXISTS (SELECT 1 FROM fincore.outbox_consumers c WHERE c.name = replay_dead.consumer) THEN
        RAISE EXCEPTION 'unknown consumer: %', coalesce(pg_catalog.quote_literal(replay_dead.consumer), 'NULL')
            USING ERRCODE = 'ZF502';
    END IF;
    WITH d AS (
        DELETE FROM fincore.dead_events e
         WHERE e.consumer = replay_dead.consumer
           AND (replay_dead.event_ids IS NULL OR e.id = ANY (replay_dead.event_ids))
        RETURNING e.*)
    INSERT INTO fincore.outbox_retries (consumer, id, seq, tenant_id, topic, type, aggregatetype, aggregateid,
                                        payload, headers, created_at, attempts, next_attempt_at, last_error)
    SELECT d.consumer, d.id, d.seq, d.tenant_id, d.topic, d.type, d.aggregatetype, d.aggregateid,
           d.payload, d.headers, d.created_at, 1, pg_catalog.clock_timestamp(), d.last_error
      FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION fincore.replay_dead(text, uuid[]) IS
    'Delivers a consumer''s dead letters again (all, or the given ids) with a fresh count of max_attempts - 1 retries; returns how many. ZF502 unknown consumer.';

CREATE FUNCTION fincore.consumer_lag()
    RETURNS TABLE (consumer text, topics text[], tenant_scope uuid, pending bigint,
                   oldest_pending timestamptz, lag interval, retrying bigint, dead bigint,
                   positioned_at timestamptz)
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
    SELECT c.name, c.topics, c.tenant_scope, p.n, p.oldest, pg_catalog.now() OPERATOR(pg_catalog.-) p.oldest,
           (SELECT pg_catalog.count(*) FROM fincore.outbox_retries r WHERE r.consumer OPERATOR(pg_catalog.=) c.name),
           (SELECT pg_catalog.count(*) FROM fincore.dead_events d WHERE d.consumer OPERATOR(pg_catalog.=) c.name),
           c.positioned_at
      FROM fincore.outbox_consumers c
     CROSS JOIN LATERAL (
        SELECT pg_catalog.count(*) AS n, pg_catalog.min(e.created_at) AS oldest
          FROM fincore.outbox_events e
         WHERE (e.txid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmax(c.position)
                OR e.txid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip(c.position))))
           AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, c.position)
           AND NOT (c.batch_end IS NOT NULL AND pg_catalog.pg_visible_in_snapshot(e.txid, c.batch_end)
                    AND e.seq OPERATOR(pg_catalog.<=) c.batch_acked)
           AND ('*' OPERATOR(pg_catalog.=) ANY (c.topics) OR e.topic OPERATOR(pg_catalog.=) ANY (c.topics))
           AND (c.tenant_scope IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) c.tenant_scope)) AS p
     ORDER BY c.name
$fn$;
COMMENT ON FUNCTION fincore.consumer_lag() IS
    'Each consumer''s backlog: committed events not yet acknowledged, the oldest one''s time and age, retries waiting, dead letters, when its position last moved.';

-- ---------------------------------------------------------------------------
-- Retention and settings.
-- ---------------------------------------------------------------------------

-- Internal: lock a draining slot's partition against writers without waiting, then the
-- snapshot that sees every transaction that wrote into it; NULL if a writer still holds it.
CREATE FUNCTION fincore._outbox_seal(part regclass) RETURNS pg_snapshot
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_outbox_seal';
COMMENT ON FUNCTION fincore._outbox_seal(regclass) IS
    'Internal: SHARE lock on a rotated-out partition if no writer holds it (else NULL), then a snapshot taken after the lock.';

CREATE FUNCTION fincore.outbox_maintenance(budget interval DEFAULT '5 seconds') RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '200ms'
    AS $fn$
DECLARE
    deadline  timestamptz := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) budget;
    done      bigint := 0;
    n         bigint;
    s         record;
    cur       record;
    nxt       record;
    z         pg_snapshot;
    rotation  interval;
    retention interval;
    has_rows  boolean;
BEGIN
    -- One run at a time; subscribe() waits for a run and a run never waits for it.
    BEGIN
        LOCK TABLE fincore.outbox_slots IN SHARE ROW EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 0;
    END;
    SELECT coalesce(c.rotation_interval, '5 minutes'), coalesce(c.inbox_retention, '30 days')
      INTO rotation, retention
      FROM (SELECT 1) AS one LEFT JOIN fincore.outbox_config c ON true;

    -- 1. Empty the sealed slots every consumer has passed.  Sealed means no transaction
    --    can write into the slot any more and sealed_snapshot sees all that did; a
    --    consumer whose position covers it has consumed all of the slot.
    FOR s IN SELECT o.slot, o.partition, o.sealed_snapshot FROM fincore.outbox_slots o
              WHERE o.state = 'sealed' ORDER BY o.since LOOP
        EXIT WHEN pg_catalog.clock_timestamp() > deadline;
        CONTINUE WHEN EXISTS (SELECT 1 FROM fincore.outbox_consumers c
                               WHERE NOT fincore._outbox_covers(c.position, s.sealed_snapshot));
        BEGIN
            -- Waits at most lock_timeout for polls reading the partition.
            EXECUTE pg_catalog.format('TRUNCATE fincore.%I', s.partition);
            UPDATE fincore.outbox_slots o SET state = 'empty', since = pg_catalog.now(), sealed_snapshot = NULL
             WHERE o.slot = s.slot;
            done := done + 1;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END LOOP;

    -- 2. Seal the slots rotated out by an earlier run, once their last writer has finished.
    FOR s IN SELECT o.slot, o.partition FROM fincore.outbox_slots o WHERE o.state = 'draining' LOOP
        z := fincore._outbox_seal(pg_catalog.format('fincore.%I', s.partition)::regclass);
        IF z IS NOT NULL THEN
            UPDATE fincore.outbox_slots o SET state = 'sealed', since = pg_catalog.now(), sealed_snapshot = z
             WHERE o.slot = s.slot;
            done := done + 1;
        END IF;
    END LOOP;

    -- 3. Rotate: new events go to the next slot once it is empty and the current one is
    --    old enough and not empty.
    SELECT o.slot, o.partition, o.since INTO cur FROM fincore.outbox_slots o WHERE o.state = 'current';
    SELECT o.slot, o.state INTO nxt FROM fincore.outbox_slots o
     WHERE o.slot = (cur.slot OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.%) 3;
    IF nxt.state = 'empty' AND cur.since <= pg_catalog.now() OPERATOR(pg_catalog.-) rotation THEN
        EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM fincore.%I)', cur.partition) INTO has_rows;
        IF has_rows THEN
            UPDATE fincore.outbox_slots o SET state = 'draining', since = pg_catalog.now() WHERE o.slot = cur.slot;
            UPDATE fincore.outbox_slots o SET state = 'current', since = pg_catalog.now() WHERE o.slot = nxt.slot;
            done := done + 1;
        END IF;
    END IF;

    -- 4. Forget inbox messages older than the retention, a thousand at a time.
    LOOP
        EXIT WHEN pg_catalog.clock_timestamp() > deadline;
        DELETE FROM fincore.inbox i
         WHERE i.ctid = ANY (ARRAY(SELECT i2.ctid FROM fincore.inbox i2
                                    WHERE i2.received_at < pg_catalog.now() OPERATOR(pg_catalog.-) retention
                                    LIMIT 1000));
        GET DIAGNOSTICS n = ROW_COUNT;
        done := done + n;
        EXIT WHEN n < 1000;
    END LOOP;
    RETURN done;
END
$fn$;
COMMENT ON FUNCTION fincore.outbox_maintenance(interval) IS
    'Outbox retention, for fincore.maintenance() / pg_cron: truncates sealed slots every consumer has passed, seals rotated-out slots, rotates the current slot, deletes old inbox rows. Returns the number of slot changes plus inbox rows deleted.';

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('outbox', 'fincore.outbox_maintenance(interval)', 500,
     'Outbox: rotate, seal and truncate event slots once every consumer passed them; forget old inbox rows.');

CREATE FUNCTION fincore.outbox_configure(notify boolean DEFAULT NULL, rotation_interval interval DEFAULT NULL,
                                         inbox_retention interval DEFAULT NULL, notify_channel text DEFAULT NULL)
    RETURNS fincore.outbox_config
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    result fincore.outbox_config;
BEGIN
    IF outbox_configure.rotation_interval < '0' OR outbox_configure.inbox_retention < '0' THEN
        RAISE EXCEPTION 'intervals must not be negative: rotation_interval %, inbox_retention %',
                outbox_configure.rotation_interval, outbox_configure.inbox_retention
            USING ERRCODE = 'ZF512';
    END IF;
    IF outbox_configure.notify_channel !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid notify channel: %', pg_catalog.quote_literal(outbox_configure.notify_channel)
            USING ERRCODE = 'ZF512', HINT = 'A channel is a lower-case identifier.';
    END IF;
    INSERT INTO fincore.outbox_config AS c (singleton) VALUES (true) ON CONFLICT DO NOTHING;
    UPDATE fincore.outbox_config c
       SET notify = coalesce(outbox_configure.notify, c.notify),
           rotation_interval = coalesce(outbox_configure.rotation_interval, c.rotation_interval),
           inbox_retention = coalesce(outbox_configure.inbox_retention, c.inbox_retention),
           notify_channel = coalesce(outbox_configure.notify_channel, c.notify_channel)
    RETURNING c.* INTO result;
    RETURN result;
END
$fn$;
COMMENT ON FUNCTION fincore.outbox_configure(boolean, interval, interval, text) IS
    'Changes the outbox settings given (NULL keeps one) and returns them all: NOTIFY per emitting transaction (off by default), slot rotation interval, inbox retention, notify channel. ZF512 for a bad value.';

-- ---------------------------------------------------------------------------
-- Inbox and webhooks (C).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.inbox_accept(source text, message_id text, payload jsonb) RETURNS boolean
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_inbox_accept';
COMMENT ON FUNCTION fincore.inbox_accept(text, text, jsonb) IS
    'Records a message for the current tenant in the caller''s transaction: true the first time, false for a duplicate (a concurrent one too: it waits for the first to commit or roll back). ZF511 for an empty source or id.';

CREATE FUNCTION fincore.accept_webhook(provider text, payload text, signature_header text, secret text,
                                       tolerance interval DEFAULT '5 minutes',
                                       OUT event_id text, OUT accepted boolean, OUT job_id bigint)
    RETURNS record
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_accept_webhook';
COMMENT ON FUNCTION fincore.accept_webhook(text, text, text, text, interval) IS
    'Verifies a Stripe-style signature header (t=<unix>,v1=<hex HMAC-SHA256 of t.payload>, several v1 allowed; pgcrypto HMAC, constant-time compare), then records the event once by the id inside the payload (inbox source webhook:<provider>) and enqueues it on queue webhook:<provider> when fincore.enqueue exists. A replay returns accepted = false and changes nothing. ZF507-ZF511.';

-- ---------------------------------------------------------------------------
-- Who may call what.  Consumers are infrastructure: trusted roles create them; poll,
-- ack and nack check the consumer's tenant scope themselves (src/outbox.c).
-- ---------------------------------------------------------------------------

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.emit(text,text,text,text,jsonb,jsonb)', 'app'),
    ('fincore.poll(text,integer)', 'app'),
    ('fincore.ack(text,uuid)', 'app'),
    ('fincore.nack(text,uuid,text)', 'app'),
    ('fincore.inbox_accept(text,text,jsonb)', 'app'),
    ('fincore.accept_webhook(text,text,text,text,interval)', 'app'),
    ('fincore.ledger_events_enabled()', 'app'),
    ('fincore.subscribe(text,text[],uuid,integer,interval,interval)', 'trusted'),
    ('fincore.unsubscribe(text)', 'trusted'),
    ('fincore.replay_dead(text,uuid[])', 'trusted'),
    ('fincore.consumer_lag()', 'trusted'),
    ('fincore.set_ledger_events(boolean)', 'trusted');

REVOKE ALL ON FUNCTION fincore._outbox_latest_snapshot() FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore._outbox_seal(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.outbox_maintenance(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.outbox_configure(boolean, interval, interval, text) FROM PUBLIC;
REVOKE ALL ON SEQUENCE fincore.outbox_seq FROM PUBLIC;

-- ==== sql/modules/ledger.sql
-- ledger: double-entry accounts and transfers (src/ledger.c, src/accounts.c).
--
-- Accounts hold four counters in minor units; transfers are append-only rows, and
-- every change of a counter is implied by exactly one transfer row, which is what
-- fincore.verify() checks.  All writes go through the C functions below, which
-- validate before they write, lock the accounts they touch in one global order
-- (by id) and never leave a partial write.

-- ---------------------------------------------------------------------------
-- Accounts.
--
-- The ledger tables carry no CHECK constraints: every row is written by the C
-- engine, which validates it first (app roles cannot write the tables), and
-- fincore.verify() proves the result.  A CHECK would be evaluated, and its
-- expression read back from the catalogue, on every posting (measured: about
-- a tenth of a transfer's CPU time).
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.accounts (
    id              uuid        PRIMARY KEY,
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant(),
    currency        text        NOT NULL,
    code            integer     NOT NULL DEFAULT 0,
    flags           integer     NOT NULL DEFAULT 0,
    credit_limit    bigint,
    status          text        NOT NULL DEFAULT 'active',
    external_ref    text,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    debits_pending  bigint      NOT NULL DEFAULT 0,
    debits_posted   bigint      NOT NULL DEFAULT 0,
    credits_pending bigint      NOT NULL DEFAULT 0,
    credits_posted  bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
) WITH (fillfactor = 80);      -- room for HOT updates: no indexed column changes with a balance
CREATE INDEX accounts_tenant_idx ON fincore.accounts (tenant_id, id);
CREATE UNIQUE INDEX accounts_external_ref_idx ON fincore.accounts (tenant_id, external_ref)
    WHERE external_ref IS NOT NULL;
COMMENT ON TABLE fincore.accounts IS
    'Ledger accounts: currency, flags, status and the four balance counters (minor units). Hot accounts also have rows in fincore.account_deltas. Written only by fincore''s functions.';
SELECT fincore.protect('fincore.accounts');
SELECT pg_catalog.pg_extension_config_dump('fincore.accounts', '');

-- ---------------------------------------------------------------------------
-- Transfers: append-only.  kind is one of
--   posted    a transfer that moved amount at once
--   pending   a hold of amount (two-phase, first phase)
--   post      posts amount of the hold pending_id and releases the rest (pending_amount = the hold)
--   void      releases the hold pending_id (amount 0, pending_amount = the hold)
--   expire    the same, when the hold timed out
--   reversal  moves amount back along reversal_of (debit and credit swapped)
-- Debit and credit accounts are stored on every row, so that an account's
-- counters are the sum of its rows alone.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.transfers (
    id                uuid        PRIMARY KEY,
    tenant_id         uuid        NOT NULL DEFAULT fincore.require_tenant(),
    debit_account_id  uuid        NOT NULL,
    credit_account_id uuid        NOT NULL,
    amount            bigint      NOT NULL,
    pending_amount    bigint      NOT NULL DEFAULT 0,
    currency          text        NOT NULL,
    code              integer     NOT NULL DEFAULT 0,
    kind              text        NOT NULL,
    pending_id        uuid,
    reversal_of       uuid,
    timeout           interval,
    expires_at        timestamptz,
    metadata          jsonb,
    created_at        timestamptz NOT NULL
);
-- A hold is resolved (posted, voided or expired) at most once.
CREATE UNIQUE INDEX transfers_pending_once_idx ON fincore.transfers (pending_id) WHERE pending_id IS NOT NULL;
CREATE INDEX transfers_reversal_idx ON fincore.transfers (reversal_of) WHERE reversal_of IS NOT NULL;
CREATE INDEX transfers_debit_idx ON fincore.transfers (debit_account_id, created_at);
CREATE INDEX transfers_credit_idx ON fincore.transfers (credit_account_id, created_at);
COMMENT ON TABLE fincore.transfers IS
    'Every movement of money, append-only: transfers, holds and their resolutions (post, void, expire), reversals. Never updated or deleted.';
SELECT fincore.protect('fincore.transfers');
SELECT pg_catalog.pg_extension_config_dump('fincore.transfers', '');

-- The holds not yet resolved, for the expiry sweep: an index of open holds, not a
-- record of money (the transfers rows are); a row leaves when its hold resolves.
CREATE TABLE fincore.pending_holds (
    transfer_id uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL DEFAULT fincore.require_tenant(),
    expires_at  timestamptz
);
CREATE INDEX pending_holds_expiry_idx ON fincore.pending_holds (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX pending_holds_tenant_idx ON fincore.pending_holds (tenant_id);
COMMENT ON TABLE fincore.pending_holds IS
    'Holds (pending transfers) not yet posted, voided or expired, with their expiry; maintained by the ledger for fincore.expire_pending().';
SELECT fincore.protect('fincore.pending_holds');
SELECT pg_catalog.pg_extension_config_dump('fincore.pending_holds', '');

-- Balance after every transfer, for accounts flagged history.
CREATE TABLE fincore.account_history (
    account_id      uuid        NOT NULL,
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant(),
    at              timestamptz NOT NULL,
    transfer_id     uuid        NOT NULL,
    debits_pending  bigint      NOT NULL,
    debits_posted   bigint      NOT NULL,
    credits_pending bigint      NOT NULL,
    credits_posted  bigint      NOT NULL,
    PRIMARY KEY (account_id, at, transfer_id)
);
CREATE INDEX account_history_tenant_idx ON fincore.account_history (tenant_id, account_id);
COMMENT ON TABLE fincore.account_history IS
    'The four counters of a history-flagged account after each transfer that touched it; append-only.';
SELECT fincore.protect('fincore.account_history');
SELECT pg_catalog.pg_extension_config_dump('fincore.account_history', '');

-- Hot accounts: the legs that may not break a limit are appended here instead of
-- updating the account row, and folded into it by fincore.rollup_hot_accounts().
-- The balance of a hot account is its row plus its deltas, read in one snapshot.
CREATE TABLE fincore.account_deltas (
    account_id      uuid        NOT NULL,
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant(),
    transfer_id     uuid        NOT NULL,
    debits_pending  bigint      NOT NULL,
    debits_posted   bigint      NOT NULL,
    credits_pending bigint      NOT NULL,
    credits_posted  bigint      NOT NULL
);
CREATE INDEX account_deltas_account_idx ON fincore.account_deltas (account_id);
CREATE INDEX account_deltas_tenant_idx ON fincore.account_deltas (tenant_id, account_id);
COMMENT ON TABLE fincore.account_deltas IS
    'Not yet rolled-up balance changes of hot accounts (appended without locking the account; folded in by fincore.rollup_hot_accounts()).';
SELECT fincore.protect('fincore.account_deltas');
SELECT pg_catalog.pg_extension_config_dump('fincore.account_deltas', '');

-- ---------------------------------------------------------------------------
-- Append-only enforcement, for app roles and the table owner alike.  The
-- triggers fire ALWAYS, so session_replication_role = replica does not switch
-- them off either; only ALTER TABLE ... DISABLE TRIGGER by the owner would.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.ledger_append_only() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_ledger_append_only';
COMMENT ON FUNCTION fincore.ledger_append_only() IS
    'Trigger: refuses UPDATE, DELETE and TRUNCATE of ledger records (ZF327).';
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON fincore.transfers
    FOR EACH ROW EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER transfers_no_truncate BEFORE TRUNCATE ON fincore.transfers
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER account_history_append_only BEFORE UPDATE OR DELETE ON fincore.account_history
    FOR EACH ROW EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER account_history_no_truncate BEFORE TRUNCATE ON fincore.account_history
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON fincore.accounts
    FOR EACH ROW EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON fincore.accounts
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.ledger_append_only();
-- An account's identity never changes (fincore caches it per backend); only
-- this column list fires the trigger, so balance updates do not pay for it.
CREATE TRIGGER accounts_immutable
    BEFORE UPDATE OF id, tenant_id, currency, code, flags, credit_limit, created_at ON fincore.accounts
    FOR EACH ROW EXECUTE FUNCTION fincore.ledger_append_only();
ALTER TABLE fincore.transfers ENABLE ALWAYS TRIGGER transfers_append_only;
ALTER TABLE fincore.transfers ENABLE ALWAYS TRIGGER transfers_no_truncate;
ALTER TABLE fincore.account_history ENABLE ALWAYS TRIGGER account_history_append_only;
ALTER TABLE fincore.account_history ENABLE ALWAYS TRIGGER account_history_no_truncate;
ALTER TABLE fincore.accounts ENABLE ALWAYS TRIGGER accounts_no_delete;
ALTER TABLE fincore.accounts ENABLE ALWAYS TRIGGER accounts_no_truncate;
ALTER TABLE fincore.accounts ENABLE ALWAYS TRIGGER accounts_immutable;

-- ---------------------------------------------------------------------------
-- Account functions (C, SECURITY DEFINER: app roles cannot write the tables).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.create_account(
        currency text, code integer DEFAULT 0, flags text[] DEFAULT '{}', credit_limit bigint DEFAULT NULL,
        id uuid DEFAULT NULL, external_ref text DEFAULT NULL, metadata jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_create_account';
COMMENT ON FUNCTION fincore.create_account(text, integer, text[], bigint, uuid, text, jsonb) IS
    'Creates an account in the current tenant and returns its id (a UUIDv7 unless given). Flags: debits_must_not_exceed_credits, credits_must_not_exceed_debits, history, hot. Idempotent for the same id and fields; ZF325 for the same id with other fields.';

CREATE FUNCTION fincore.freeze_account(account uuid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_freeze_account';
COMMENT ON FUNCTION fincore.freeze_account(uuid) IS
    'Freezes an active account: no new debits or credits; voids and expiry of its holds still work. Idempotent.';

CREATE FUNCTION fincore.unfreeze_account(account uuid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_unfreeze_account';
COMMENT ON FUNCTION fincore.unfreeze_account(uuid) IS 'Makes a frozen account active again. Idempotent; ZF328 for a closed account.';

CREATE FUNCTION fincore.close_account(account uuid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_close_account';
COMMENT ON FUNCTION fincore.close_account(uuid) IS
    'Closes an account for good: afterwards only voids and expiry of its holds work. Requires no pending amounts (ZF326). Idempotent.';

-- ---------------------------------------------------------------------------
-- Transfers (C).
-- ---------------------------------------------------------------------------

CREATE TYPE fincore.transfer_result AS (
    id                uuid,
    result            text,        -- 'created', or 'exists' for an idempotent replay
    kind              text,
    debit_account_id  uuid,
    credit_account_id uuid,
    amount            bigint,
    pending_id        uuid,
    reversal_of       uuid,
    created_at        timestamptz,
    fee               bigint,      -- the fee charged with it (NULL without a fee schedule)
    fee_transfer_id   uuid         -- the fee leg (NULL without a fee, or for a zero fee)
);
COMMENT ON TYPE fincore.transfer_result IS 'What fincore.transfer, post_pending, void_pending and reverse return.';

CREATE FUNCTION fincore.transfer(
        debit_account uuid, credit_account uuid, amount bigint, id uuid DEFAULT NULL, code integer DEFAULT 0,
        pending boolean DEFAULT false, timeout interval DEFAULT NULL, metadata jsonb DEFAULT NULL,
        fee_schedule text DEFAULT NULL, fee_account uuid DEFAULT NULL, fee_mode text DEFAULT 'on_top',
        fee_context jsonb DEFAULT '{}')
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_transfer';
COMMENT ON FUNCTION fincore.transfer(uuid, uuid, bigint, uuid, integer, boolean, interval, jsonb, text, uuid, text, jsonb) IS
    'Moves amount minor units from debit_account to credit_account (or holds it, pending => true, optionally with a timeout). With a fee schedule, the fee is a linked transfer from the payer to fee_account (on_top: the payer pays amount + fee; deducted: the payee gets amount - fee). The id is the idempotency key: a replay returns result ''exists''. Refusals raise ZF3xx.';

CREATE FUNCTION fincore.transfer(
        debit_account uuid, credit_account uuid, amount fincore.amount, id uuid DEFAULT NULL, code integer DEFAULT 0,
        pending boolean DEFAULT false, timeout interval DEFAULT NULL, metadata jsonb DEFAULT NULL,
        fee_schedule text DEFAULT NULL, fee_account uuid DEFAULT NULL, fee_mode text DEFAULT 'on_top',
        fee_context jsonb DEFAULT '{}')
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_transfer_amount';
COMMENT ON FUNCTION fincore.transfer(uuid, uuid, fincore.amount, uuid, integer, boolean, interval, jsonb, text, uuid, text, jsonb) IS
    'fincore.transfer with a fincore.amount, whose currency must be the accounts'' (ZF103).';

CREATE FUNCTION fincore.post_pending(pending_id uuid, amount bigint DEFAULT NULL, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_post_pending';
COMMENT ON FUNCTION fincore.post_pending(uuid, bigint, uuid) IS
    'Posts all (amount NULL) or part of a hold; the rest is released. A hold resolves once; after its timeout it is expired (ZF312).';

CREATE FUNCTION fincore.void_pending(pending_id uuid, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_void_pending';
COMMENT ON FUNCTION fincore.void_pending(uuid, uuid) IS 'Releases a hold. A hold resolves once; after its timeout it is expired (ZF312).';

CREATE FUNCTION fincore.reverse(transfer_id uuid, amount bigint DEFAULT NULL, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_reverse';
COMMENT ON FUNCTION fincore.reverse(uuid, bigint, uuid) IS
    'Moves all that is left (amount NULL) or part of a posted transfer back, as a reversal linked to it; the total reversed never exceeds the original (ZF316). Idempotent by id.';

CREATE TYPE fincore.transfer_request AS (
    id             uuid,
    debit_account  uuid,
    credit_account uuid,
    amount         bigint,
    code           integer,
    pending        boolean,
    timeout        interval,
    post_pending   uuid,        -- post this hold (amount NULL = all of it)
    void_pending   uuid,        -- void this hold
    reverse        uuid,        -- reverse this transfer (amount NULL = all that is left)
    linked         boolean,     -- chained to the next item: the chain succeeds or fails as a whole
    metadata       jsonb,
    fee_schedule   text,        -- a fee, posted as a linked transfer to fee_account (a posted transfer only)
    fee_account    uuid,
    fee_mode       text,        -- on_top (NULL) or deducted
    fee_context    jsonb
);
COMMENT ON TYPE fincore.transfer_request IS
    'One item of fincore.create_transfers(): a transfer or hold (debit_account, credit_account, amount), or a post_pending, void_pending or reverse of another transfer.';

CREATE FUNCTION fincore.create_transfers(requests fincore.transfer_request[])
    RETURNS TABLE (index integer, id uuid, result text)
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_create_transfers';
COMMENT ON FUNCTION fincore.create_transfers(fincore.transfer_request[]) IS
    'A batch of transfers with TigerBeetle-style per-item results (ok, exists, or the reason it was refused). Items are independent unless linked; a linked chain succeeds or fails as a whole.';

CREATE FUNCTION fincore.expire_pending(max_holds integer DEFAULT 1000) RETURNS integer
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_expire_pending';
COMMENT ON FUNCTION fincore.expire_pending(integer) IS
    'Releases holds whose timeout has passed (an expire row each), in every tenant; returns how many. For pg_cron via fincore.maintenance().';

CREATE FUNCTION fincore.rollup_hot_accounts(max_accounts integer DEFAULT 1000) RETURNS integer
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_rollup_hot_accounts';
COMMENT ON FUNCTION fincore.rollup_hot_accounts(integer) IS
    'Folds the appended deltas of hot accounts into their rows, in every tenant; returns how many accounts. For pg_cron via fincore.maintenance().';

-- Maintenance steps.
CREATE FUNCTION fincore.expire_pending_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.expire_pending(500);
        total := total + n;
        EXIT WHEN n < 500 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION fincore.expire_pending_step(interval) IS 'Maintenance step: expire_pending in batches of 500 until none is left or the budget is spent.';

CREATE FUNCTION fincore.rollup_hot_accounts_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.rollup_hot_accounts(100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION fincore.rollup_hot_accounts_step(interval) IS 'Maintenance step: rollup_hot_accounts in batches of 100 accounts until none is left or the budget is spent.';

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('expire_pending', 'fincore.expire_pending_step(interval)', 100, 'Release holds whose timeout has passed'),
    ('rollup_hot_accounts', 'fincore.rollup_hot_accounts_step(interval)', 110, 'Fold hot accounts'' deltas into their rows');

-- ---------------------------------------------------------------------------
-- Reading (SECURITY INVOKER: the caller's policies apply).
-- ---------------------------------------------------------------------------

-- The counters implied by the transfer rows of an account; used by as-of
-- balances of accounts without history and by verify().
CREATE FUNCTION fincore.transfer_effects(t fincore.transfers,
        OUT account_id uuid, OUT debits_pending bigint, OUT debits_posted bigint,
        OUT credits_pending bigint, OUT credits_posted bigint)
    RETURNS SETOF record
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE ROWS 2
    AS $fn$
    SELECT t.debit_account_id,
           CASE t.kind WHEN 'pending' THEN t.amount WHEN 'posted' THEN 0 WHEN 'reversal' THEN 0
                       ELSE -t.pending_amount END,
           CASE WHEN t.kind IN ('posted', 'post', 'reversal') THEN t.amount ELSE 0 END,
           0::bigint, 0::bigint
    UNION ALL
    SELECT t.credit_account_id, 0::bigint, 0::bigint,
           CASE t.kind WHEN 'pending' THEN t.amount WHEN 'posted' THEN 0 WHEN 'reversal' THEN 0
                       ELSE -t.pending_amount END,
           CASE WHEN t.kind IN ('posted', 'post', 'reversal') THEN t.amount ELSE 0 END
$fn$;
COMMENT ON FUNCTION fincore.transfer_effects(fincore.transfers) IS
    'How one transfer row changes the counters of its debit and its credit account (two rows).';

CREATE FUNCTION fincore.balance(account uuid, as_of timestamptz DEFAULT NULL,
        OUT debits_pending bigint, OUT debits_posted bigint, OUT credits_pending bigint, OUT credits_posted bigint,
        OUT posted bigint, OUT pending bigint, OUT available bigint)
    RETURNS record
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $fn$
    WITH acct AS (
        SELECT a.id, a.flags, a.credit_limit, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
          FROM fincore.accounts a WHERE a.id = balance.account
    ), now_counters AS (
        SELECT a.debits_pending + coalesce(sum(d.debits_pending), 0)::bigint AS dp,
               a.debits_posted + coalesce(sum(d.debits_posted), 0)::bigint AS dpo,
               a.credits_pending + coalesce(sum(d.credits_pending), 0)::bigint AS cp,
               a.credits_posted + coalesce(sum(d.credits_posted), 0)::bigint AS cpo
          FROM acct a LEFT JOIN fincore.account_deltas d ON d.account_id = a.id
         GROUP BY a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
    ), history_counters AS (
        SELECT h.debits_pending AS dp, h.debits_posted AS dpo, h.credits_pending AS cp, h.credits_posted AS cpo
          FROM fincore.account_history h
         WHERE h.account_id = balance.account AND h.at <= balance.as_of
         ORDER BY h.at DESC, h.transfer_id DESC LIMIT 1
    ), replayed_counters AS (
        SELECT coalesce(sum(e.debits_pending), 0)::bigint AS dp, coalesce(sum(e.debits_posted), 0)::bigint AS dpo,
               coalesce(sum(e.credits_pending), 0)::bigint AS cp, coalesce(sum(e.credits_posted), 0)::bigint AS cpo
          FROM fincore.transfers t, fincore.transfer_effects(t) e
         WHERE (t.debit_account_id = balance.account OR t.credit_account_id = balance.account)
           AND t.created_at <= balance.as_of AND e.account_id = balance.account
    ), chosen AS (
        SELECT * FROM now_counters WHERE balance.as_of IS NULL
        UNION ALL
        SELECT * FROM history_counters
         WHERE balance.as_of IS NOT NULL AND (SELECT flags & 4 <> 0 FROM acct)
        UNION ALL
        SELECT coalesce(h.dp, 0), coalesce(h.dpo, 0), coalesce(h.cp, 0), coalesce(h.cpo, 0)
          FROM (SELECT 1) one LEFT JOIN history_counters h ON true
         WHERE balance.as_of IS NOT NULL AND (SELECT flags & 4 <> 0 FROM acct)
           AND NOT EXISTS (SELECT 1 FROM history_counters)
        UNION ALL
        SELECT * FROM replayed_counters
         WHERE balance.as_of IS NOT NULL AND (SELECT flags & 4 = 0 FROM acct)
    )
    SELECT c.dp, c.dpo, c.cp, c.cpo,
           c.cpo - c.dpo,
           c.cp - c.dp,
           c.cpo - c.dpo - c.dp + coalesce((SELECT a.credit_limit FROM acct a), 0)
      FROM chosen c
     WHERE EXISTS (SELECT 1 FROM acct)
$fn$;
COMMENT ON FUNCTION fincore.balance(uuid, timestamptz) IS
    'An account''s four counters and derived balances (credit-normal: posted = credits_posted - debits_posted; pending = credits_pending - debits_pending; available = posted - debits_pending + credit_limit), now or as of a time (exact: from history rows when flagged history, else from the transfers). Hot accounts include their deltas. NULL for an account the caller cannot see.';

CREATE FUNCTION fincore.account_transfers(account uuid, since timestamptz DEFAULT NULL,
        until timestamptz DEFAULT NULL, lim integer DEFAULT 100)
    RETURNS SETOF fincore.transfers
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $fn$
    SELECT * FROM (
        SELECT t.* FROM fincore.transfers t
         WHERE t.debit_account_id = account_transfers.account
           AND (since IS NULL OR t.created_at >= since) AND (until IS NULL OR t.created_at < until)
        UNION ALL
        SELECT t.* FROM fincore.transfers t
         WHERE t.credit_account_id = account_transfers.account
           AND (since IS NULL OR t.created_at >= since) AND (until IS NULL OR t.created_at < until)
    ) s
    ORDER BY s.created_at, s.id
    LIMIT lim
$fn$;
COMMENT ON FUNCTION fincore.account_transfers(uuid, timestamptz, timestamptz, integer) IS
    'The transfers of an account in time order, from since (inclusive) to until (exclusive), at most lim.';

CREATE VIEW fincore.account_balances WITH (security_invoker = true) AS
    SELECT a.id, a.tenant_id, a.currency, a.code, a.status,
           ARRAY(SELECT f.name FROM (VALUES (1, 'debits_must_not_exceed_credits'), (2, 'credits_must_not_exceed_debits'),
                                           (4, 'history'), (8, 'hot')) AS f(bit, name)
                  WHERE a.flags & f.bit <> 0 ORDER BY f.bit) AS flags,
           a.credit_limit, a.external_ref, a.metadata,
           a.debits_pending + coalesce(d.dp, 0) AS debits_pending,
           a.debits_posted + coalesce(d.dpo, 0) AS debits_posted,
           a.credits_pending + coalesce(d.cp, 0) AS credits_pending,
           a.credits_posted + coalesce(d.cpo, 0) AS credits_posted,
           a.created_at
      FROM fincore.accounts a
      LEFT JOIN LATERAL (SELECT sum(x.debits_pending)::bigint AS dp, sum(x.debits_posted)::bigint AS dpo,
                                sum(x.credits_pending)::bigint AS cp, sum(x.credits_posted)::bigint AS cpo
                           FROM fincore.account_deltas x WHERE x.account_id = a.id) d ON true;
COMMENT ON VIEW fincore.account_balances IS
    'Accounts with their flags by name and their counters including not yet rolled-up deltas of hot accounts.';

CREATE VIEW fincore.transfer_log WITH (security_invoker = true) AS
    SELECT t.id, t.tenant_id, t.kind, t.debit_account_id, t.credit_account_id,
           fincore.from_minor(t.amount, t.currency) AS amount, t.code, t.pending_id, t.reversal_of,
           t.expires_at, t.metadata, t.created_at
      FROM fincore.transfers t;
COMMENT ON VIEW fincore.transfer_log IS 'Transfers with their amount as a fincore.amount.';

-- verify(): one row per broken invariant; nothing when the books are right.
-- SECURITY INVOKER: an app role checks its own tenant; a superuser every tenant.
CREATE FUNCTION fincore.verify()
    RETURNS TABLE (invariant text, tenant_id uuid, subject text, detail text)
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $fn$
    WITH balances AS (
        SELECT b.id, b.tenant_id, b.currency, a.flags, b.credit_limit, b.status,
               b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted
          FROM fincore.account_balances b JOIN fincore.accounts a ON a.id = b.id
    ), implied AS (
        SELECT e.account_id, sum(e.debits_pending)::bigint AS dp, sum(e.debits_posted)::bigint AS dpo,
               sum(e.credits_pending)::bigint AS cp, sum(e.credits_posted)::bigint AS cpo
          FROM fincore.transfers t, fincore.transfer_effects(t) e
         GROUP BY e.account_id
    )
    -- 1. Double entry: per tenant and currency, debits equal credits (posted and pending).
    SELECT 'debits_equal_credits', b.tenant_id, b.currency,
           pg_catalog.format('debits posted %s, credits posted %s, debits pending %s, credits pending %s',
                             sum(b.debits_posted), sum(b.credits_posted), sum(b.debits_pending), sum(b.credits_pending))
      FROM balances b
     GROUP BY b.tenant_id, b.currency
    HAVING sum(b.debits_posted) <> sum(b.credits_posted) OR sum(b.debits_pending) <> sum(b.credits_pending)
    UNION ALL
    -- 2. Every account's counters are what its transfers imply.
    SELECT 'counters_match_transfers', b.tenant_id, b.id::text,
           pg_catalog.format('counters %s/%s/%s/%s, transfers imply %s/%s/%s/%s',
                             b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted,
                             coalesce(i.dp, 0), coalesce(i.dpo, 0), coalesce(i.cp, 0), coalesce(i.cpo, 0))
      FROM balances b LEFT JOIN implied i ON i.account_id = b.id
     WHERE (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted)
           IS DISTINCT FROM (coalesce(i.dp, 0), coalesce(i.dpo, 0), coalesce(i.cp, 0), coalesce(i.cpo, 0))
    UNION ALL
    SELECT 'transfer_accounts_exist', t.tenant_id, t.id::text, 'a transfer names an account that does not exist'
      FROM fincore.transfers t
     WHERE NOT EXISTS (SELECT 1 FROM fincore.accounts a WHERE a.id = t.debit_account_id AND a.currency = t.currency)
        OR NOT EXISTS (SELECT 1 FROM fincore.accounts a WHERE a.id = t.credit_account_id AND a.currency = t.currency)
    UNION ALL
    -- 3. No limit flag is violated.
    SELECT 'debits_must_not_exceed_credits', b.tenant_id, b.id::text,
           pg_catalog.format('debits %s exceed credits %s + limit %s', b.debits_pending + b.debits_posted,
                             b.credits_posted, coalesce(b.credit_limit, 0))
      FROM balances b
     WHERE b.flags & 1 <> 0 AND b.debits_pending + b.debits_posted > b.credits_posted + coalesce(b.credit_limit, 0)
    UNION ALL
    SELECT 'credits_must_not_exceed_debits', b.tenant_id, b.id::text,
           pg_catalog.format('credits %s exceed debits %s + limit %s', b.credits_pending + b.credits_posted,
                             b.debits_posted, coalesce(b.credit_limit, 0))
      FROM balances b
     WHERE b.flags & 2 <> 0 AND b.credits_pending + b.credits_posted > b.debits_posted + coalesce(b.credit_limit, 0)
    UNION ALL
    -- 4. History rows agree: the latest equals the counters, and each row is what the
    --    account's transfers up to it imply.
    SELECT 'history_matches_counters', b.tenant_id, b.id::text, 'the latest history row differs from the counters'
      FROM balances b
      JOIN LATERAL (SELECT h.* FROM fincore.account_history h WHERE h.account_id = b.id
                     ORDER BY h.at DESC, h.transfer_id DESC LIMIT 1) h ON true
     WHERE b.flags & 4 <> 0
       AND (h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted)
           IS DISTINCT FROM (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted)
    UNION ALL
    SELECT 'history_matches_transfers', h.tenant_id, h.account_id::text || ' @ ' || h.transfer_id::text,
           pg_catalog.format('history %s/%s/%s/%s, transfers up to it imply %s/%s/%s/%s',
                             h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted,
                             c.dp, c.dpo, c.cp, c.cpo)
      FROM fincore.account_history h
      JOIN (SELECT e.account_id, t.id AS transfer_id,
                   sum(e.debits_pending) OVER w AS dp, sum(e.debits_posted) OVER w AS dpo,
                   sum(e.credits_pending) OVER w AS cp, sum(e.credits_posted) OVER w AS cpo
              FROM fincore.transfers t, fincore.transfer_effects(t) e
             WHERE EXISTS (SELECT 1 FROM fincore.accounts a WHERE a.id = e.account_id AND a.flags & 4 <> 0)
            WINDOW w AS (PARTITION BY e.account_id ORDER BY t.created_at, t.id)) c
        ON c.account_id = h.account_id AND c.transfer_id = h.transfer_id
     WHERE (h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted)
           IS DISTINCT FROM (c.dp, c.dpo, c.cp, c.cpo)
    UNION ALL
    SELECT 'history_covers_transfers', b.tenant_id, b.id::text,
           'a transfer of a history account has no history row'
      FROM balances b
     WHERE b.flags & 4 <> 0
       AND EXISTS (SELECT 1 FROM fincore.transfers t
                    WHERE (t.debit_account_id = b.id OR t.credit_account_id = b.id)
                      AND NOT EXISTS (SELECT 1 FROM fincore.account_history h
                                       WHERE h.account_id = b.id AND h.transfer_id = t.id))
    UNION ALL
    -- 5. Holds: each is resolved at most once, open holds are listed, reversals stay within the original.
    SELECT 'open_holds_listed', t.tenant_id, t.id::text, 'an unresolved hold is missing from pending_holds'
      FROM fincore.transfers t
     WHERE t.kind = 'pending'
       AND NOT EXISTS (SELECT 1 FROM fincore.transfers r WHERE r.pending_id = t.id)
       AND NOT EXISTS (SELECT 1 FROM fincore.pending_holds p WHERE p.transfer_id = t.id)
    UNION ALL
    SELECT 'reversals_within_original', t.tenant_id, t.id::text,
           pg_catalog.format('reversed %s of %s', sum(r.amount), t.amount)
      FROM fincore.transfers t JOIN fincore.transfers r ON r.reversal_of = t.id
     GROUP BY t.tenant_id, t.id, t.amount
    HAVING sum(r.amount) > t.amount
$fn$;
COMMENT ON FUNCTION fincore.verify() IS
    'Proves the books: one row per broken invariant (debits = credits per tenant and currency, counters = transfers, limits, history, holds, reversals); no rows when all hold. Runs with the caller''s rights.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.create_account(text,integer,text[],bigint,uuid,text,jsonb)', 'app'),
    ('fincore.freeze_account(uuid)', 'app'),
    ('fincore.unfreeze_account(uuid)', 'app'),
    ('fincore.close_account(uuid)', 'app'),
    ('fincore.transfer(uuid,uuid,bigint,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb)', 'app'),
    ('fincore.transfer(uuid,uuid,fincore.amount,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb)', 'app'),
    ('fincore.post_pending(uuid,bigint,uuid)', 'app'),
    ('fincore.void_pending(uuid,uuid)', 'app'),
    ('fincore.reverse(uuid,bigint,uuid)', 'app'),
    ('fincore.create_transfers(fincore.transfer_request[])', 'app'),
    ('fincore.expire_pending(integer)', 'trusted'),
    ('fincore.rollup_hot_accounts(integer)', 'trusted');
REVOKE ALL ON FUNCTION fincore.expire_pending_step(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.rollup_hot_accounts_step(interval) FROM PUBLIC;

-- ==== sql/modules/fees.sql
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
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid        NOT NULL DEFAULT fincore.require_tenant()
                          REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    code      text        NOT NULL,
    CONSTRAINT fee_schedule_codes_unique UNIQUE (tenant_id, code)
);
COMMENT ON TABLE fincore.fee_schedule_codes IS
    'The fee schedule codes of each tenant, with the integer key their versions'' no-overlap constraint compares.';
SELECT fincore.protect('fincore.fee_schedule_codes');
SELECT pg_catalog.pg_extension_config_dump('fincore.fee_schedule_codes', '');

CREATE TABLE fincore.fee_schedules (
    id              uuid        PRIMARY KEY DEFAULT fincore.uuidv7(),
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant()
                                REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    code            text        NOT NULL CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    code_key        bigint      NOT NULL REFERENCES fincore.fee_schedule_codes (id),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z0-9]{3,12}$'),
    rules           jsonb       NOT NULL CHECK (jsonb_typeof(rules) = 'object'),
    rounding        text        NOT NULL
                                CHECK (rounding IN ('half_even', 'half_up', 'half_down', 'up', 'down', 'ceiling', 'floor')),
    effective_from  timestamptz NOT NULL,
    effective_until timestamptz CHECK (effective_until > effective_from),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- Versions of a code never overlap, even when defined concurrently.
    CONSTRAINT fee_schedules_no_overlap EXCLUDE USING gist (
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

-- ==== sql/modules/queue.sql
-- queue: a job queue on FOR UPDATE SKIP LOCKED, built to survive churn and a long-held
-- xmin (src/queue.c; design and figures in docs/queue.md).
--
-- Storage in three parts:
--   fincore.jobs          the hot table: unfinished jobs only (ready, scheduled, running).
--                         fillfactor 50 and no indexed column changes on claim, heartbeat or
--                         lease rescue, so those updates are HOT; completed jobs leave it at once.
--   fincore.job_archive   finished jobs, LIST-partitioned by slot: slots 0-7 hold completed and
--                         cancelled jobs by day of finishing (a ring that maintenance empties with
--                         TRUNCATE, never with DELETE); slot -1 holds dead jobs until retried,
--                         cancelled or purged.
--   fincore.paused_queues which queues are paused, for one tenant or for all.
-- Every table holds tenant data and follows the tenancy convention.  Applications never
-- write them: every change goes through the functions below, which run their statements as
-- the tables' owner and scope them to the caller's tenant themselves.

-- ---------------------------------------------------------------------------
-- The hot table.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.jobs (
    id           bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id    uuid        NOT NULL DEFAULT fincore.require_tenant(),
    queue        text        NOT NULL,
    -- 'ready' or 'running'; 'dead' only inside the statement that moves the job to the archive.
    -- (No CHECK constraints here or in the archive: only fincore's C code writes these tables,
    -- and every INSERT or UPDATE of a table with CHECKs re-reads them from the catalogue.)
    state        text        NOT NULL DEFAULT 'ready',
    priority     smallint    NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- run_at was in the future when the job was (re)queued: it waits in the scheduled index
    -- until a dequeue or maintenance promotes it, and stays out of the claim index till then.
    scheduled    boolean     NOT NULL DEFAULT false,
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 25,
    lease_until  timestamptz,
    worker       text,
    payload      jsonb       NOT NULL,
    unique_key   text,
    errors       jsonb,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
) WITH (fillfactor = 50);
COMMENT ON TABLE fincore.jobs IS
    'Unfinished jobs (ready, scheduled, running); finished ones move to fincore.job_archive. Written only through the queue functions.';

-- The claim order: queue, highest priority first, then oldest run_at, then id.  Priority
-- is negated so that the whole key sorts one way and dequeue can resume a scan from a
-- position with one row comparison.  Running jobs stay in this index (state is not in it),
-- so a claim changes no indexed column; jobs waiting for a future run_at are not in it, so
-- a dequeue never walks over them.
CREATE INDEX jobs_claim_idx ON fincore.jobs (queue, (-(priority::integer)), run_at, id) WHERE NOT scheduled;
CREATE INDEX jobs_scheduled_idx ON fincore.jobs (queue, run_at) WHERE scheduled;
CREATE UNIQUE INDEX jobs_unique_key_idx ON fincore.jobs (tenant_id, queue, unique_key)
    WHERE unique_key IS NOT NULL;
SELECT fincore.protect('fincore.jobs');
SELECT pg_catalog.pg_extension_config_dump('fincore.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.jobs_id_seq', '');
-- Autovacuum: every 5,000 dead rows while the table is small (seconds of work for a busy
-- queue; vacuum is what lets inserts reuse the space of finished jobs), at the default 20%
-- when a backlog makes it large (a vacuum then reads every index in full; dequeue does not
-- need it: it skips dead entries by itself).
ALTER TABLE fincore.jobs SET (autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_insert_threshold = 5000,
                              autovacuum_vacuum_cost_delay = 0);

-- ---------------------------------------------------------------------------
-- Finished jobs.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.job_archive (
    id           bigint      NOT NULL,
    tenant_id    uuid        NOT NULL DEFAULT fincore.require_tenant(),
    queue        text        NOT NULL,
    state        text        NOT NULL,          -- completed, cancelled or dead
    priority     smallint    NOT NULL,
    run_at       timestamptz NOT NULL,
    attempts     integer     NOT NULL,
    max_attempts integer     NOT NULL,
    worker       text,
    payload      jsonb       NOT NULL,
    unique_key   text,
    errors       jsonb,
    result       jsonb,
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    slot         smallint    NOT NULL           -- -1 if and only if dead
) PARTITION BY LIST (slot);
COMMENT ON TABLE fincore.job_archive IS
    'Finished jobs: completed and cancelled ones in slots 0-7 by day (kept 5 to 8 days, emptied by TRUNCATE), dead ones in slot -1 until retried or cancelled.';
-- Finished jobs are written in roughly id and exactly finished_at order, so block-range
-- indexes find them (by id for a diagnosis or a cancel, by time for queue_stats) at a
-- fraction of a b-tree's cost per completion.  Dead jobs, which retry looks up, get b-trees.
CREATE INDEX job_archive_id_idx ON fincore.job_archive USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX job_archive_finished_idx ON fincore.job_archive USING brin (finished_at);

DO $partitions$
DECLARE
    s integer;
    part text;
BEGIN
    FOR s IN -1 .. 7 LOOP
        part := CASE WHEN s < 0 THEN 'job_archive_dead' ELSE 'job_archive_' || s END;
        EXECUTE pg_catalog.format('CREATE TABLE fincore.%I PARTITION OF fincore.job_archive FOR VALUES IN (%s)', part, s);
        EXECUTE pg_catalog.format('COMMENT ON TABLE fincore.%I IS %L', part,
            CASE WHEN s < 0 THEN 'Dead jobs (partition of fincore.job_archive).'
                 ELSE pg_catalog.format('Jobs finished on days whose number is %s modulo 8 (partition of fincore.job_archive).', s) END);
        PERFORM fincore.protect(pg_catalog.format('fincore.%I', part)::regclass);
        PERFORM pg_catalog.pg_extension_config_dump(pg_catalog.format('fincore.%I', part)::regclass, '');
    END LOOP;
END
$partitions$;
CREATE INDEX job_archive_dead_id_btree ON fincore.job_archive_dead (id);
CREATE INDEX job_archive_dead_queue_idx ON fincore.job_archive_dead (tenant_id, queue);
SELECT fincore.protect('fincore.job_archive');

-- ---------------------------------------------------------------------------
-- Paused queues.  tenant_id is the pausing tenant, or the nil UUID when a trusted role
-- without a tenant paused the queue for every tenant.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.paused_queues (
    tenant_id uuid        NOT NULL DEFAULT fincore.require_tenant(),
    queue     text        NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, queue)
);
COMMENT ON TABLE fincore.paused_queues IS
    'Paused queues: per tenant, or for all tenants (tenant_id = the nil UUID). Written through fincore.pause_queue() / resume_queue().';
SELECT fincore.protect('fincore.paused_queues');
SELECT pg_catalog.pg_extension_config_dump('fincore.paused_queues', '');

CREATE FUNCTION fincore.paused_queues_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_paused_queues_changed';
COMMENT ON FUNCTION fincore.paused_queues_changed() IS
    'Trigger: drops every backend''s cached list of paused queues when fincore.paused_queues changes.';
CREATE TRIGGER paused_queues_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.paused_queues
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.paused_queues_changed();

-- ---------------------------------------------------------------------------
-- The job as dequeue returns it.
-- ---------------------------------------------------------------------------

CREATE TYPE fincore.job AS (
    id           bigint,
    tenant_id    uuid,
    queue        text,
    payload      jsonb,
    priority     smallint,
    run_at       timestamptz,
    attempt      integer,
    max_attempts integer,
    lease_until  timestamptz,
    worker       text,
    unique_key   text,
    errors       jsonb,
    created_at   timestamptz
);
COMMENT ON TYPE fincore.job IS
    'A claimed job: attempt is this claim''s number (pass it to complete/fail/heartbeat), tenant_id the tenant to fincore.set_tenant() while processing it, errors every earlier attempt''s error.';

-- ---------------------------------------------------------------------------
-- The API (C).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.enqueue(queue text, payload jsonb, run_at timestamptz DEFAULT pg_catalog.now(),
                                priority smallint DEFAULT 0, max_attempts integer DEFAULT 25,
                                unique_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_enqueue';
COMMENT ON FUNCTION fincore.enqueue(text, jsonb, timestamptz, smallint, integer, text) IS
    'Adds a job to a queue of the current tenant in the caller''s transaction and returns its id; with a unique_key, returns the id of the unfinished job of that queue and key if there is one. NULL run_at means now. ZF203, ZF604, ZF605.';

CREATE FUNCTION fincore.enqueue_many(queue text, payloads jsonb[], run_at timestamptz DEFAULT pg_catalog.now(),
                                     priority smallint DEFAULT 0, max_attempts integer DEFAULT 25,
                                     unique_keys text[] DEFAULT NULL)
    RETURNS SETOF bigint
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100 AS 'MODULE_PATHNAME', 'fincore_enqueue_many';
COMMENT ON FUNCTION fincore.enqueue_many(text, jsonb[], timestamptz, smallint, integer, text[]) IS
    'Adds one job per payload (in order, one id per payload); unique_keys, when given, pairs a key (or NULL) with each payload. All or nothing. ZF203, ZF604, ZF605.';

CREATE FUNCTION fincore.dequeue(queue text, max integer DEFAULT 1, lease interval DEFAULT '30 seconds',
                                worker text DEFAULT NULL)
    RETURNS SETOF fincore.job
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 10 AS 'MODULE_PATHNAME', 'fincore_dequeue';
COMMENT ON FUNCTION fincore.dequeue(text, integer, interval, text) IS
    'Claims up to max ready jobs (run_at reached, highest priority first, then oldest) with FOR UPDATE SKIP LOCKED, each leased for lease; reclaims jobs whose lease expired on the way. Commit to hold the claims. ZF203, ZF604, ZF605.';

CREATE FUNCTION fincore.complete(job_id bigint, result jsonb DEFAULT NULL, attempt integer DEFAULT NULL)
    RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_complete';
COMMENT ON FUNCTION fincore.complete(bigint, jsonb, integer) IS
    'Marks a running job completed (moved to the archive with its result). Pass the attempt dequeue gave you: ZF602 if the lease passed to another claim, ZF607 if the job already finished, ZF601 if there is no such job.';

CREATE FUNCTION fincore.complete_many(job_ids bigint[], attempts integer[] DEFAULT NULL, results jsonb[] DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_complete_many';
COMMENT ON FUNCTION fincore.complete_many(bigint[], integer[], jsonb[]) IS
    'Completes a batch of running jobs (at most 1000) in one statement, attempts and results paired with the ids; all or nothing: the first refused job raises its error (ZF601, ZF602, ZF607) and none is completed. Returns how many.';

CREATE FUNCTION fincore.fail(job_id bigint, error text, retry_at timestamptz DEFAULT NULL, attempt integer DEFAULT NULL)
    RETURNS timestamptz
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_fail';
COMMENT ON FUNCTION fincore.fail(bigint, text, timestamptz, integer) IS
    'Records a failed attempt: the job runs again at retry_at (default: exponential backoff with jitter, see fincore.job_backoff) and the time is returned; after max_attempts it is dead and NULL is returned. Every error is kept. ZF601, ZF602, ZF605, ZF607.';

CREATE FUNCTION fincore.heartbeat(job_id bigint, extend interval DEFAULT '30 seconds', attempt integer DEFAULT NULL)
    RETURNS timestamptz
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_heartbeat';
COMMENT ON FUNCTION fincore.heartbeat(bigint, interval, integer) IS
    'Extends the lease of a running job to now() + extend and returns the new lease end. ZF601, ZF602, ZF605, ZF607.';

CREATE FUNCTION fincore.cancel(job_id bigint) RETURNS text
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_cancel';
COMMENT ON FUNCTION fincore.cancel(bigint) IS
    'Cancels a ready, scheduled, running or dead job (moved to the archive as cancelled); returns the state it was in. A worker still holding it gets ZF607. ZF601, ZF607.';

CREATE FUNCTION fincore.retry(job_id bigint) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_retry';
COMMENT ON FUNCTION fincore.retry(bigint) IS
    'Returns a dead job to its queue, ready now, with a fresh set of max_attempts attempts; its error history is kept. ZF601, ZF603, ZF606.';

CREATE FUNCTION fincore.pause_queue(queue text) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_pause_queue';
COMMENT ON FUNCTION fincore.pause_queue(text) IS
    'Pauses a queue for the current tenant (or, for a trusted role without a tenant, for every tenant): dequeue hands out none of its jobs until resume_queue. Idempotent. ZF203, ZF604.';

CREATE FUNCTION fincore.resume_queue(queue text) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_resume_queue';
COMMENT ON FUNCTION fincore.resume_queue(text) IS
    'Undoes pause_queue for the same scope (the current tenant, or every tenant). Idempotent. ZF203, ZF604.';

CREATE FUNCTION fincore.queue_stats(since interval DEFAULT '1 hour')
    RETURNS TABLE (queue text, ready bigint, scheduled bigint, running bigint, dead bigint,
                   oldest_ready_age interval, completed bigint, failed bigint, paused boolean)
    LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'fincore_queue_stats';
COMMENT ON FUNCTION fincore.queue_stats(interval) IS
    'Per queue of the current tenant (all tenants for a trusted role without one): jobs ready, scheduled, running and dead now, the age of the oldest ready job, jobs completed and failed attempts within since, and whether it is paused.';

CREATE FUNCTION fincore.rescue_expired(budget interval DEFAULT '5 seconds') RETURNS bigint
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_rescue_expired';
COMMENT ON FUNCTION fincore.rescue_expired(interval) IS
    'Returns running jobs whose lease expired to ready (the attempt counted, "lease expired" recorded), or makes them dead after max_attempts, and moves due scheduled jobs into the claim index; in batches, within budget. Returns how many jobs it moved. A maintenance step.';

CREATE FUNCTION fincore.job_backoff(attempt integer) RETURNS interval
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'fincore_job_backoff';
COMMENT ON FUNCTION fincore.job_backoff(integer) IS
    'The wait fail() uses after failed attempt n: d = min(2^n seconds, 1 hour), then a uniformly random time in [d/2, d]. ZF605 if n < 1.';

CREATE FUNCTION fincore.job_archive_slot(finished_at timestamptz) RETURNS smallint
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_job_archive_slot';
COMMENT ON FUNCTION fincore.job_archive_slot(timestamptz) IS
    'The archive slot (0-7) of jobs finished at a time: the UTC day number since 2000-01-01 modulo 8.';

-- ---------------------------------------------------------------------------
-- Retention of finished jobs (a maintenance step).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.job_retention(budget interval DEFAULT '5 seconds') RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    -- The slot of the day after tomorrow: every row in it finished at least 5 days ago
    -- (its day is today + 2 - 8), and no transaction writes it before that day begins.
    target  smallint := fincore.job_archive_slot(pg_catalog.now() + interval '2 days');
    part    regclass := pg_catalog.format('fincore.job_archive_%s', target)::regclass;
    n       bigint;
    purged  bigint := 0;
    started timestamptz := pg_catalog.clock_timestamp();
BEGIN
    EXECUTE pg_catalog.format('SELECT count(*) FROM (SELECT 1 FROM %s LIMIT 1) s', part) INTO n;
    IF n > 0 THEN
        EXECUTE pg_catalog.format('SELECT count(*) FROM %s', part) INTO n;
        BEGIN
            -- TRUNCATE needs the partition to itself; nobody writes it today, but a reader of
            -- the whole archive may hold it: wait briefly (others queue behind the waiting
            -- TRUNCATE), else try at the next run.
            PERFORM pg_catalog.set_config('lock_timeout',
                (pg_catalog.date_part('epoch', LEAST(budget, interval '100 milliseconds')) * 1000)::bigint || 'ms', true);
            EXECUTE pg_catalog.format('TRUNCATE %s', part);
            purged := n;
        EXCEPTION WHEN lock_not_available THEN
            RAISE NOTICE 'fincore.job_retention: % is in use; it will be emptied at a later run', part;
        END;
    END IF;
    -- Dead jobs nobody retried or cancelled within 30 days go too, in batches.
    LOOP
        EXIT WHEN pg_catalog.clock_timestamp() - started >= budget;
        DELETE FROM fincore.job_archive_dead d
         WHERE d.ctid = ANY (ARRAY(SELECT x.ctid FROM fincore.job_archive_dead x
                                    WHERE x.finished_at < pg_catalog.now() - interval '30 days' LIMIT 1000));
        GET DIAGNOSTICS n = ROW_COUNT;
        purged := purged + n;
        EXIT WHEN n < 1000;
    END LOOP;
    RETURN purged;
END
$fn$;
COMMENT ON FUNCTION fincore.job_retention(interval) IS
    'Maintenance step: empties (TRUNCATE) the archive slot that is reused the day after tomorrow, so completed and cancelled jobs are kept 5 to 8 days, and deletes dead jobs older than 30 days. Returns the rows removed.';
REVOKE ALL ON FUNCTION fincore.job_retention(interval) FROM PUBLIC;

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('queue_rescue_expired', 'fincore.rescue_expired(interval)', 600,
     'Job queue: return jobs whose lease expired to ready, or make them dead after max_attempts.'),
    ('queue_retention', 'fincore.job_retention(interval)', 610,
     'Job queue: TRUNCATE the archive slot of finished jobs that is due for reuse; purge dead jobs older than 30 days.');

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.enqueue(text,jsonb,timestamptz,smallint,integer,text)', 'app'),
    ('fincore.enqueue_many(text,jsonb[],timestamptz,smallint,integer,text[])', 'app'),
    ('fincore.dequeue(text,integer,interval,text)', 'app'),
    ('fincore.complete(bigint,jsonb,integer)', 'app'),
    ('fincore.complete_many(bigint[],integer[],jsonb[])', 'app'),
    ('fincore.fail(bigint,text,timestamptz,integer)', 'app'),
    ('fincore.heartbeat(bigint,interval,integer)', 'app'),
    ('fincore.cancel(bigint)', 'app'),
    ('fincore.retry(bigint)', 'app'),
    ('fincore.pause_queue(text)', 'app'),
    ('fincore.resume_queue(text)', 'app'),
    ('fincore.queue_stats(interval)', 'app'),
    ('fincore.job_backoff(integer)', 'app'),
    ('fincore.rescue_expired(interval)', 'trusted');

-- ---------------------------------------------------------------------------
-- pg_cron: run fincore.maintenance() periodically.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.cron_schedule_of(every text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    iv   interval;
    mins bigint;
BEGIN
    BEGIN
        iv := every::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow
                   OR invalid_parameter_value OR syntax_error THEN
        iv := NULL;
    END;
    IF iv IS NOT NULL AND pg_catalog.date_part('month', iv) = 0 AND pg_catalog.date_part('year', iv) = 0 THEN
        mins := (pg_catalog.date_part('epoch', iv) / 60)::bigint;
        IF pg_catalog.date_part('epoch', iv) = mins * 60 THEN
            IF mins BETWEEN 1 AND 59 AND 60 % mins = 0 THEN
                RETURN CASE WHEN mins = 1 THEN '* * * * *' ELSE pg_catalog.format('*/%s * * * *', mins) END;
            ELSIF mins % 60 = 0 AND mins / 60 BETWEEN 1 AND 23 AND 24 % (mins / 60) = 0 THEN
                RETURN CASE WHEN mins = 60 THEN '0 * * * *' ELSE pg_catalog.format('0 */%s * * *', mins / 60) END;
            ELSIF mins = 1440 THEN
                RETURN '0 0 * * *';
            END IF;
        END IF;
    END IF;
    RAISE EXCEPTION 'cannot run maintenance every %', pg_catalog.quote_literal(every)
        USING ERRCODE = 'ZF609',
              HINT = 'pg_cron 1.4 schedules by the minute: use a number of minutes dividing 60 (''1 minute'', ''5 minutes'', ''30 minutes''), of hours dividing 24 (''1 hour'', ''6 hours''), or ''1 day''.';
END
$fn$;
COMMENT ON FUNCTION fincore.cron_schedule_of(text) IS
    'The cron schedule that runs something every interval (''1 minute'' -> ''* * * * *'', ''5 minutes'' -> ''*/5 * * * *'', ''1 hour'' -> ''0 * * * *''). ZF609 for an interval cron cannot express.';

CREATE FUNCTION fincore.schedule_maintenance(every text DEFAULT '1 minute') RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    schedule  text := fincore.cron_schedule_of(every);
    job_name  text := 'fincore_maintenance_' || pg_catalog.current_database();
    command   text := 'SELECT step, done, error FROM fincore.maintenance()';
    cron_db   text := pg_catalog.current_setting('cron.database_name', true);
    job_id    bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_cron') THEN
        IF cron_db IS NULL THEN
            RAISE EXCEPTION 'pg_cron is not installed'
                USING ERRCODE = 'ZF608',
                      HINT = 'Install the package (postgresql-15-cron), add pg_cron to shared_preload_libraries, set cron.database_name, restart the server and CREATE EXTENSION pg_cron in that database. See docs/queue.md.';
        END IF;
        RAISE EXCEPTION 'pg_cron is not installed in database %', pg_catalog.quote_ident(pg_catalog.current_database())
            USING ERRCODE = 'ZF608',
                  DETAIL = pg_catalog.format('pg_cron is loaded and keeps its jobs in database %s (cron.database_name).', pg_catalog.quote_ident(cron_db)),
                  HINT = pg_catalog.format('Connect to %s and run: SELECT cron.schedule_in_database(%L, %L, %L, %L);',
                                           pg_catalog.quote_ident(cron_db), job_name, schedule, command,
                                           pg_catalog.current_database());
    END IF;
    -- pg_cron 1.4: schedule_in_database(job_name, schedule, command, database, username, active).
    -- Scheduling again under the same name replaces the schedule.
    EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, $4)' INTO job_id
        USING job_name, schedule, command, pg_catalog.current_database();
    RETURN job_id;
END
$fn$;
COMMENT ON FUNCTION fincore.schedule_maintenance(text) IS
    'Registers fincore.maintenance() with pg_cron (job fincore_maintenance_<database>, run as the caller) every interval (by the minute); returns the cron job id. ZF608 with a hint when pg_cron is not installed in this database, ZF609 for an interval cron cannot express.';
REVOKE ALL ON FUNCTION fincore.schedule_maintenance(text) FROM PUBLIC;

CREATE FUNCTION fincore.unschedule_maintenance() RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    found boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in database %', pg_catalog.quote_ident(pg_catalog.current_database())
            USING ERRCODE = 'ZF608',
                  HINT = 'Nothing fincore.schedule_maintenance() could have scheduled here; see docs/queue.md.';
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1)' INTO found
        USING 'fincore_maintenance_' || pg_catalog.current_database();
    IF found THEN
        EXECUTE 'SELECT cron.unschedule($1)' USING 'fincore_maintenance_' || pg_catalog.current_database();
    END IF;
    RETURN found;
END
$fn$;
COMMENT ON FUNCTION fincore.unschedule_maintenance() IS
    'Removes the pg_cron job schedule_maintenance() registered for this database; false if there was none. ZF608 when pg_cron is not installed here.';
REVOKE ALL ON FUNCTION fincore.unschedule_maintenance() FROM PUBLIC;

-- ==== sql/modules/grants.sql
-- grants: the last module.  Every function of an audience is revoked from
-- PUBLIC, then the registered application roles (and Supabase's, when they
-- exist) get their grants; an upgrade script ends the same way, so new
-- functions reach existing app roles.

DO $grants$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT f.fn FROM fincore.function_audience f LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.fn::regprocedure);
    END LOOP;
    -- Supabase: anon and authenticated are app roles; service_role is trusted.
    FOR r IN SELECT rolname, rolname = 'service_role' AS trusted FROM pg_catalog.pg_roles
              WHERE rolname IN ('anon', 'authenticated', 'service_role')
                AND rolname NOT IN (SELECT a.role_name FROM fincore.app_roles a) LOOP
        PERFORM fincore.grant_app_role(r.rolname, r.trusted);
    END LOOP;
    FOR r IN SELECT a.role_name, a.trusted FROM fincore.app_roles a
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles p WHERE p.rolname = a.role_name) LOOP
        PERFORM fincore.grant_app_role(r.role_name, r.trusted);
    END LOOP;
END
$grants$;
