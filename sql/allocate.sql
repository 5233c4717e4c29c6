--
-- allocate: splitting an amount by ratios or into n parts, never losing a unit.
--
SET search_path = fincore, public;

-- The classic example: 100.00 USD three ways; the odd cent goes first.
SELECT allocate('100.00 USD', ARRAY[1, 1, 1]::bigint[]) AS by_ratios,
       allocate('100.00 USD', 3) AS in_three;
-- Leftover units go to the largest exact remainders ...
SELECT allocate('1.00 USD', ARRAY[1, 2]::bigint[]) AS largest_remainder,
       allocate('0.10 USD', ARRAY[1, 1, 4]::bigint[]) AS a,
       allocate('1.00 USD', ARRAY[3, 3, 4]::bigint[]) AS exact;
-- ... and ties go to the earlier position.
SELECT allocate('0.05 USD', ARRAY[3, 7]::bigint[]) AS tie_two,
       allocate('0.02 USD', 3) AS tie_three, allocate('0.04 USD', 3) AS four_in_three,
       allocate('0.05 USD', ARRAY[7, 3]::bigint[]) AS tie_reversed;
-- Zero ratios get nothing, not even a leftover unit.
SELECT allocate('1.00 USD', ARRAY[0, 1, 1]::bigint[]) AS a,
       allocate('0.01 USD', ARRAY[0, 1, 1]::bigint[]) AS b,
       allocate('1.00 USD', ARRAY[1, 0, 0]::bigint[]) AS c,
       allocate('0.03 USD', ARRAY[0, 0, 5, 0, 5]::bigint[]) AS d;
-- Negative amounts: the magnitude is split and negated (symmetric).
SELECT allocate('-100.00 USD', ARRAY[1, 1, 1]::bigint[]) AS a,
       allocate('-0.05 USD', ARRAY[3, 7]::bigint[]) AS b,
       allocate('-1.00 USD', ARRAY[1, 2]::bigint[]) AS c,
       allocate('-0.02 USD', 3) AS d;
-- Zero, one part, other exponents.
SELECT allocate('0.00 USD', ARRAY[1, 2, 3]::bigint[]) AS zero,
       allocate('12.34 USD', 1) AS one_part, allocate('12.34 USD', ARRAY[5]::bigint[]) AS one_ratio,
       allocate('100 JPY', 3) AS jpy, allocate('1.000 BHD', 3) AS bhd,
       allocate('0.0001 CLF', ARRAY[1, 1]::bigint[]) AS clf;
-- Type and bounds of the result.
SELECT pg_typeof(allocate('1 USD', 2)), array_lower(allocate('1 USD', 2), 1) AS lower,
       array_upper(allocate('1 USD', 2), 1) AS upper,
       allocate('1.00 USD', '[0:2]={1,1,1}'::bigint[]) AS odd_bounds_input;
-- int64 extremes: amounts and ratios.
SELECT allocate('92233720368547758.07 USD', 2) AS max_in_two,
       allocate('-92233720368547758.08 USD', 2) AS min_in_two,
       allocate('-92233720368547758.08 USD', 1) AS min_in_one,
       allocate('92233720368547758.07 USD',
                ARRAY[9223372036854775807, 9223372036854775807, 1]::bigint[]) AS max_by_max_ratios,
       allocate('0.03 USD', ARRAY[9223372036854775807, 9223372036854775806]::bigint[]) AS big_ratios;
-- Strict: NULL in, NULL out.
SELECT allocate(NULL, ARRAY[1]::bigint[]) IS NULL AS a, allocate('1 USD', NULL::bigint[]) IS NULL AS b,
       allocate(NULL, 2) IS NULL AS c, allocate('1 USD', NULL::int) IS NULL AS d;

-- Properties over many cases: each part is less than one unit away from its
-- exact share, zero ratios get zero, the parts sum exactly to the amount, and
-- splitting -A gives the negated parts of A.
WITH cases AS (
    SELECT from_minor(u, 'USD') AS a,
           ARRAY[r1, r2, r3, 0]::bigint[] AS ratios
      FROM generate_series(-1003, 1003, 17) AS u,
           (VALUES (1, 1, 1), (1, 2, 3), (0, 5, 7), (10, 0, 0), (1, 1, 1000),
                   (999999, 1, 333)) AS r(r1, r2, r3)
), parts AS (
    SELECT a, ratios, p.part, p.i
      FROM cases, unnest(allocate(a, ratios)) WITH ORDINALITY AS p(part, i)
)
SELECT count(DISTINCT (a, ratios)) AS cases,
       count(*) FILTER (WHERE abs(minor_units(part) - minor_units(a)::numeric * ratios[i]
                                  / (SELECT sum(x) FROM unnest(ratios) AS x)) >= 1) AS off_by_a_unit,
       count(*) FILTER (WHERE ratios[i] = 0 AND part <> from_minor(0, 'USD')) AS zero_ratio_paid
  FROM parts;
WITH cases AS (
    SELECT from_minor(u, 'USD') AS a, ARRAY[r1, r2, r3, 0]::bigint[] AS ratios
      FROM generate_series(-1003, 1003, 17) AS u,
           (VALUES (1, 1, 1), (1, 2, 3), (0, 5, 7), (10, 0, 0), (1, 1, 1000),
                   (999999, 1, 333)) AS r(r1, r2, r3)
)
SELECT count(*) FILTER (WHERE (SELECT sum(p) FROM unnest(allocate(a, ratios)) AS p) <> a) AS bad_sums,
       count(*) FILTER (WHERE allocate(-a, ratios) <>
                              (SELECT array_agg(-p ORDER BY i)
                                 FROM unnest(allocate(a, ratios)) WITH ORDINALITY AS x(p, i))) AS asymmetric
  FROM cases;
-- Many parts: 100.00 USD in a million parts; the first 10000 get a cent.
SELECT cardinality(parts) AS n, (SELECT sum(p) FROM unnest(parts) AS p) AS total,
       (SELECT count(*) FROM unnest(parts) AS p WHERE p = '0.01 USD') AS with_a_cent,
       parts[10000] AS p10000, parts[10001] AS p10001
  FROM (SELECT allocate('100.00 USD', 1000000) AS parts) AS s;
SELECT cardinality(allocate('1 USD', array_fill(1::bigint, ARRAY[1000000]))) AS max_ratios;

\set VERBOSITY sqlstate
-- Every invalid allocation: ZF108.
SELECT allocate('1 USD', '{}'::bigint[]);
SELECT allocate('1 USD', ARRAY[1, NULL]::bigint[]);
SELECT allocate('1 USD', ARRAY[NULL]::bigint[]);
SELECT allocate('1 USD', '{{1,1},{1,1}}'::bigint[]);
SELECT allocate('1 USD', ARRAY[1, -1]::bigint[]);
SELECT allocate('1 USD', ARRAY[-9223372036854775808]::bigint[]);
SELECT allocate('1 USD', ARRAY[0, 0]::bigint[]);
SELECT allocate('1 USD', ARRAY[0]::bigint[]);
SELECT allocate('0 USD', ARRAY[0]::bigint[]);
SELECT allocate('1 USD', 0);
SELECT allocate('1 USD', -1);
SELECT allocate('1 USD', 1000001);
SELECT allocate('1 USD', 2147483647);
SELECT allocate('1 USD', array_fill(1::bigint, ARRAY[1000001]));
\set VERBOSITY default

--
-- Messages and hints (default verbosity).
--
\set SHOW_CONTEXT never
SELECT allocate('1 USD', '{}'::bigint[]);
SELECT allocate('1 USD', ARRAY[1, NULL]::bigint[]);
SELECT allocate('1 USD', '{{1,1},{1,1}}'::bigint[]);
SELECT allocate('1 USD', ARRAY[1, -1]::bigint[]);
SELECT allocate('1 USD', ARRAY[0, 0]::bigint[]);
SELECT allocate('1 USD', 0);
SELECT allocate('1 USD', array_fill(1::bigint, ARRAY[1000001]));
