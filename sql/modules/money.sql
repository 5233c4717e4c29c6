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

CREATE FUNCTION fincore.divide(value fincore.amount, divisor bigint, mode text DEFAULT 'half_even')
    RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_div';
COMMENT ON FUNCTION fincore.divide(fincore.amount, bigint, text) IS
    'Divides an amount by an integer, rounding the minor units once with the given mode.';
-- 0.1.0's name, kept for one release (CHANGELOG, "Renamed"): the same C function.
CREATE FUNCTION fincore.div(value fincore.amount, divisor bigint, mode text DEFAULT 'half_even')
    RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_div';
COMMENT ON FUNCTION fincore.div(fincore.amount, bigint, text) IS
    'Deprecated alias of fincore.divide (div is a built-in numeric function''s name); removed in 0.3.0.';

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
