--
-- rounding: fincore.div_round, fincore.divide, fincore.multiply and
-- fincore.from_numeric / fincore.to_numeric, with every rounding mode.
--
SET search_path = fincore, public;

-- The full table: each mode for ±0.4, ±0.5, ±0.6, ±1.5, ±2.5 (as n/d), plus
-- exact quotients and thirds.  up = away from zero, down = toward zero.
SELECT n, d, round(n::numeric / d, 4) AS exact,
       div_round(n, d, 'half_even') AS half_even, div_round(n, d, 'half_up') AS half_up,
       div_round(n, d, 'half_down') AS half_down, div_round(n, d, 'up') AS up,
       div_round(n, d, 'down') AS down, div_round(n, d, 'ceiling') AS ceiling,
       div_round(n, d, 'floor') AS floor
  FROM (VALUES (4, 10), (5, 10), (6, 10), (15, 10), (25, 10),
               (-4, 10), (-5, 10), (-6, 10), (-15, 10), (-25, 10),
               (5, -10), (-5, -10), (25, -10), (-25, -10), (1, 2), (3, 2),
               (20, 10), (-20, 10), (0, 7), (0, -7), (1, 3), (2, 3), (-1, 3), (-2, 3),
               (7, 1), (-7, -1)) AS v(n, d);
-- The default mode is half_even (banker's rounding).
SELECT div_round(5, 10) AS a, div_round(15, 10) AS b, div_round(25, 10) AS c,
       div_round(-25, 10) AS d, div_round(7, 2) AS e, div_round(9, 2) AS f;
-- Each mode against a reference computed with numeric, over many n/d.
WITH q AS (
    SELECT n, d, n::numeric / d AS r, floor(n::numeric / d) AS fl
      FROM generate_series(-60, 60) AS n, generate_series(-9, 9) AS d WHERE d <> 0
), ref AS (
    SELECT n, d,
           CASE WHEN r - fl > 0.5 THEN fl + 1 WHEN r - fl < 0.5 THEN fl
                WHEN fl % 2 = 0 THEN fl ELSE fl + 1 END AS half_even,
           sign(r) * floor(abs(r) + 0.5) AS half_up,
           sign(r) * ceil(abs(r) - 0.5) AS half_down,
           sign(r) * ceil(abs(r)) AS up, trunc(r) AS down, ceil(r) AS ceiling, fl AS floor
      FROM q
)
SELECT count(*) AS cases,
       count(*) FILTER (WHERE div_round(n, d, 'half_even') <> half_even) AS half_even_bad,
       count(*) FILTER (WHERE div_round(n, d, 'half_up') <> half_up) AS half_up_bad,
       count(*) FILTER (WHERE div_round(n, d, 'half_down') <> half_down) AS half_down_bad,
       count(*) FILTER (WHERE div_round(n, d, 'up') <> up) AS up_bad,
       count(*) FILTER (WHERE div_round(n, d, 'down') <> down) AS down_bad,
       count(*) FILTER (WHERE div_round(n, d, 'ceiling') <> ceiling) AS ceiling_bad,
       count(*) FILTER (WHERE div_round(n, d, 'floor') <> floor) AS floor_bad
  FROM ref;
-- int64 extremes.
SELECT div_round(9223372036854775807, 1) AS max, div_round(-9223372036854775808, 1) AS min,
       div_round(-9223372036854775808, 2) AS half_min,
       div_round(9223372036854775807, 2, 'half_even') AS max_half_even,
       div_round(9223372036854775807, 2, 'down') AS max_half_down,
       div_round(-9223372036854775808, 9223372036854775807, 'ceiling') AS min_by_max_ceiling,
       div_round(-9223372036854775808, 9223372036854775807, 'floor') AS min_by_max_floor,
       div_round(9223372036854775807, -9223372036854775808, 'half_even') AS max_by_min,
       div_round(1, -9223372036854775808, 'floor') AS tiny_floor,
       div_round(1, -9223372036854775808, 'ceiling') AS tiny_ceiling,
       div_round(-9223372036854775808, -9223372036854775808) AS one;
-- Strict: NULL in, NULL out.
SELECT div_round(NULL, 2) IS NULL AS a, div_round(1, NULL) IS NULL AS b,
       div_round(1, 2, NULL) IS NULL AS c;

\set VERBOSITY sqlstate
SELECT div_round(-9223372036854775808, -1);
SELECT div_round(-9223372036854775808, -1, 'floor');
SELECT div_round(1, 0);
SELECT div_round(0, 0, 'floor');
SELECT div_round(1, 2, 'HALF_EVEN');
SELECT div_round(1, 2, 'half even');
SELECT div_round(1, 2, ' half_up');
SELECT div_round(1, 2, '');
SELECT div_round(1, 2, 'bankers');
SELECT div_round(1, 2, 'round');
\set VERBOSITY default

--
-- fincore.divide(amount, divisor, mode): the minor units rounded once.
--
SELECT a, d, divide(a, d, 'half_even') AS half_even, divide(a, d, 'half_up') AS half_up,
       divide(a, d, 'half_down') AS half_down, divide(a, d, 'up') AS up, divide(a, d, 'down') AS down,
       divide(a, d, 'ceiling') AS ceiling, divide(a, d, 'floor') AS floor
  FROM (VALUES ('1.00 USD'::amount, 3), ('2.00 USD', 3), ('0.05 USD', 2), ('-0.05 USD', 2),
               ('0.05 USD', -2), ('0.15 USD', 2), ('-0.15 USD', 2), ('10 JPY', 4),
               ('-10 JPY', 4), ('1.000 BHD', 7), ('1.00 USD', 1)) AS v(a, d);
-- (0.1.0 named it div, after which an untyped literal picked pg_catalog.div(numeric, numeric).)
SELECT divide('1.00 USD'::amount, 3) AS default_mode, divide('0.05 USD'::amount, 2) AS half_even_default,
       divide('-92233720368547758.08 USD'::amount, 2) AS half_min,
       divide('-92233720368547758.08 USD'::amount, 1) AS min_by_one,
       divide('92233720368547758.07 USD'::amount, -1) AS max_by_minus_one,
       divide('92233720368547758.07 USD'::amount, 9223372036854775807) AS max_by_max,
       divide('1 USD'::amount, -9223372036854775808, 'up') AS tiny_up,
       currency(divide('1 EUR'::amount, 3)) AS keeps_currency;
SELECT divide(NULL::amount, 2) IS NULL AS a, divide('1 USD'::amount, NULL) IS NULL AS b,
       divide('1 USD'::amount, 2, NULL) IS NULL AS c;
\set VERBOSITY sqlstate
SELECT divide('-92233720368547758.08 USD'::amount, -1);
SELECT divide('-92233720368547758.08 USD'::amount, -1, 'floor');
SELECT divide('1.00 USD'::amount, 0);
SELECT divide('1.00 USD'::amount, 0, 'floor');
SELECT divide('1.00 USD'::amount, 3, 'nearest');
SELECT divide('1.00 USD'::amount, 3, 'Floor');
\set VERBOSITY default

--
-- fincore.multiply(amount, rate, mode): the exact product, rounded once.
--
SELECT a, r, multiply(a, r, 'half_even') AS half_even, multiply(a, r, 'half_up') AS half_up,
       multiply(a, r, 'half_down') AS half_down, multiply(a, r, 'up') AS up,
       multiply(a, r, 'down') AS down, multiply(a, r, 'ceiling') AS ceiling,
       multiply(a, r, 'floor') AS floor
  FROM (VALUES ('10.05 USD'::amount, 0.5), ('10.15 USD', 0.5), ('-10.05 USD', 0.5),
               ('10.05 USD', -0.5), ('100.00 USD', 0.075), ('19.99 USD', 0.0825),
               ('-19.99 USD', 0.0825), ('1.00 USD', 0.333), ('1.00 USD', 0.335),
               ('1.00 USD', 0.3350000000001), ('1.00 USD', 0.3349999999999),
               ('1000 JPY', 1.0005), ('1000 JPY', 0.0005), ('1000 JPY', 0.0015),
               ('1.000 BHD', 1.23456), ('1.00 USD', 0), ('1.00 USD', 1), ('1.00 USD', -1),
               ('0.00 USD', 123.456), ('12.34 USD', 100)) AS v(a, r);
-- Rates with many digits or tiny values are still exact.
SELECT multiply('0.01 USD', 1.0000000000000000000000000000000000001, 'up') AS up_37_decimals,
       multiply('0.01 USD', 1.0000000000000000000000000000000000001, 'down') AS down_37_decimals,
       multiply('0.00 USD', 1.00000000000000000000000000000000000001, 'up') AS zero_times_39_digits,
       multiply('1.00 USD', 0.00000000000000000000000000000000000000000000000001, 'half_even') AS tiny_even,
       multiply('1.00 USD', 0.00000000000000000000000000000000000000000000000001, 'up') AS tiny_up,
       multiply('1.00 USD', 0.00000000000000000000000000000000000000000000000001, 'ceiling') AS tiny_ceiling,
       multiply('-1.00 USD', 0.00000000000000000000000000000000000000000000000001, 'floor') AS tiny_floor,
       multiply('-1.00 USD', 0.00000000000000000000000000000000000000000000000001, 'ceiling') AS tiny_neg_ceiling,
       multiply('1.00 USD', 1.50000000000000000000000000000000000000000000000000, 'down') AS trailing_zeros;
-- At the edges of int64 and of 128 bits.
SELECT multiply('92233720368547758.07 USD', 1, 'down') AS max_times_one,
       multiply('-92233720368547758.08 USD', 1, 'down') AS min_times_one,
       multiply('92233720368547758.07 USD', -1, 'down') AS max_times_minus_one,
       multiply('-92233720368547758.08 USD', 0.5, 'down') AS half_min,
       multiply('92233720368547758.07 USD', 0.5, 'half_even') AS half_max_even,
       multiply('92233720368547758.07 USD', 0.5, 'half_up') AS half_max_up,
       multiply('0.01 USD', 92233720368547758.07, 'down') AS cent_times_big,
       multiply('-0.01 USD', 9223372036854775808, 'down') AS to_min,
       multiply('92233720368547758.07 USD', 0.0000000000000000001, 'up') AS max_tiny_rate,
       multiply('92233720368547758.07 USD', 1.0000000000000000001, 'down') AS max_times_just_over_one;
SELECT multiply(NULL::amount, 1, 'up') IS NULL AS a, multiply('1 USD', NULL, 'up') IS NULL AS b,
       multiply('1 USD', 1, NULL) IS NULL AS c;
\set VERBOSITY sqlstate
-- The result outside int64: ZF104.
SELECT multiply('92233720368547758.07 USD', 2, 'down');
SELECT multiply('-92233720368547758.08 USD', -1, 'down');
SELECT multiply('92233720368547758.07 USD', 1.0000000000000000001, 'up');
SELECT multiply('0.01 USD', 9223372036854775808, 'down');
SELECT multiply('-0.01 USD', 9223372036854775809, 'down');
-- The exact product, or the rate's digits, do not fit in 128 bits: ZF105.
SELECT multiply('92233720368547758.07 USD', 100000000000000000000, 'down');
SELECT multiply('92233720368547758.07 USD', 0.123456789012345678901, 'down');
SELECT multiply('1.00 USD', 99999999999999999999999999999999999999, 'down');
SELECT multiply('92233720368547758.07 USD', 1.00000000000000000001, 'down');
SELECT multiply('1.00 USD', 1.0000000000000000000000000000000000001, 'up');
SELECT multiply('0.00 USD', 1.000000000000000000000000000000000000001, 'down');
-- NaN and infinities: ZF112.
SELECT multiply('1.00 USD', 'NaN', 'half_even');
SELECT multiply('1.00 USD', 'Infinity', 'half_even');
SELECT multiply('1.00 USD', '-Infinity', 'half_even');
-- Unknown mode: ZF107.
SELECT multiply('1.00 USD', 0.5, 'half-even');
SELECT multiply('1.00 USD', 0.5, '');
\set VERBOSITY default

--
-- fincore.from_numeric(value, currency, mode) and fincore.to_numeric(amount).
--
SELECT register_currency('RNDE18', 18, 'rounding test, exponent 18');
-- Without a mode the value must be exact in the currency.
SELECT from_numeric(12.34, 'USD') AS a, from_numeric(12.3, 'USD') AS b,
       from_numeric(-0.5, 'EUR') AS c, from_numeric(1000, 'JPY') AS d,
       from_numeric(0.0001, 'CLF') AS e, from_numeric(1.5, 'BHD') AS f,
       from_numeric(12.340000, 'USD') AS trailing_zeros, from_numeric(0, 'USD') AS zero,
       from_numeric(-0.000, 'JPY') AS neg_zero, from_numeric(0.000000000000000001, 'RNDE18') AS e18;
SELECT from_numeric(92233720368547758.07, 'USD') AS max, from_numeric(-92233720368547758.08, 'USD') AS min,
       from_numeric(9223372036854775807, 'JPY') AS jpy_max,
       from_numeric(-9.223372036854775808, 'RNDE18') AS e18_min;
-- With a mode: rounded once.  The same table as div_round, through numeric.
SELECT v, from_numeric(v, 'JPY', 'half_even') AS half_even, from_numeric(v, 'JPY', 'half_up') AS half_up,
       from_numeric(v, 'JPY', 'half_down') AS half_down, from_numeric(v, 'JPY', 'up') AS up,
       from_numeric(v, 'JPY', 'down') AS down, from_numeric(v, 'JPY', 'ceiling') AS ceiling,
       from_numeric(v, 'JPY', 'floor') AS floor
  FROM (VALUES (0.4), (0.5), (0.6), (1.5), (2.5), (-0.4), (-0.5), (-0.6), (-1.5), (-2.5),
               (0.49999999999999999999), (0.50000000000000000001), (-0.50000000000000000001),
               (3), (-3), (0.0)) AS v(v);
SELECT v, from_numeric(v, 'USD', 'half_even') AS usd_half_even, from_numeric(v, 'USD', 'half_up') AS usd_half_up,
       from_numeric(v, 'BHD', 'floor') AS bhd_floor, from_numeric(v, 'CLF', 'ceiling') AS clf_ceiling
  FROM (VALUES (12.345), (12.355), (-12.345), (0.00001), (-0.00001), (1.23456789)) AS v(v);
-- Tiny and long-scale values.
SELECT from_numeric(1e-30, 'USD', 'half_even') AS tiny_even, from_numeric(1e-30, 'USD', 'up') AS tiny_up,
       from_numeric(-1e-30, 'USD', 'floor') AS tiny_floor, from_numeric(-1e-30, 'USD', 'ceiling') AS tiny_ceiling,
       from_numeric(0.005000000000000000000000000000000000000000000000000001, 'USD', 'half_down') AS just_over_half;
-- Rounding up to the limit is fine; past it is not (below).
SELECT from_numeric(92233720368547758.065, 'USD', 'half_up') AS to_max,
       from_numeric(-92233720368547758.075, 'USD', 'ceiling') AS to_min;
-- NULL value or currency gives NULL; a NULL mode means "exact only".
SELECT from_numeric(NULL, 'USD') IS NULL AS a, from_numeric(1, NULL) IS NULL AS b,
       from_numeric(NULL, 'USD', 'up') IS NULL AS c, from_numeric(1.5, 'USD', NULL) AS d;
-- to_numeric is exact and inverts from_numeric.
SELECT v, to_numeric(from_numeric(v, c)) AS back, to_numeric(from_numeric(v, c)) = v AS same
  FROM (VALUES (12.34, 'USD'), (-0.5, 'EUR'), (1000, 'JPY'), (0.0001, 'CLF'),
               (92233720368547758.07, 'USD'), (-9.223372036854775808, 'RNDE18')) AS v(v, c);
\set VERBOSITY sqlstate
-- Inexact without a mode: ZF105.
SELECT from_numeric(12.345, 'USD');
SELECT from_numeric(0.5, 'JPY');
SELECT from_numeric(1e-30, 'USD');
SELECT from_numeric(0.00001, 'CLF', NULL);
-- Out of range: ZF104.
SELECT from_numeric(92233720368547758.08, 'USD');
SELECT from_numeric(-92233720368547758.09, 'USD');
SELECT from_numeric(92233720368547758.075, 'USD', 'half_up');
SELECT from_numeric(-92233720368547758.081, 'USD', 'floor');
SELECT from_numeric(10, 'RNDE18');
SELECT from_numeric(1e40, 'USD');
SELECT from_numeric(-1e40, 'USD', 'floor');
SELECT from_numeric(1e400, 'USD');
-- NaN and infinities: ZF112.
SELECT from_numeric('NaN', 'USD');
SELECT from_numeric('Infinity', 'USD', 'half_even');
SELECT from_numeric('-Infinity', 'USD');
-- Bad currency code: ZF109; unknown currency: ZF102; bad mode: ZF107.
SELECT from_numeric(1, 'usd');
SELECT from_numeric(1, 'US');
SELECT from_numeric(1, 'XAU');
SELECT from_numeric(1.5, 'USD', 'nearest');
\set VERBOSITY default

--
-- Messages and hints (default verbosity).
--
\set SHOW_CONTEXT never
SELECT div_round(1, 0);
SELECT div_round(-9223372036854775808, -1);
SELECT div_round(1, 2, 'bankers');
SELECT divide('1.00 USD'::amount, 0);
SELECT multiply('1.00 USD', 'NaN', 'half_even');
SELECT multiply('92233720368547758.07 USD', 100000000000000000000, 'down');
SELECT multiply('92233720368547758.07 USD', 2, 'down');
SELECT from_numeric(12.345, 'USD');
SELECT from_numeric(1e40, 'USD');
SELECT from_numeric(92233720368547758.08, 'USD');
SELECT from_numeric('NaN', 'USD');
