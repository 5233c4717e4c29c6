--
-- money_agg: fincore.sum, fincore.min and fincore.max, serial and parallel.
--
SET search_path = fincore, public;

CREATE TEMP TABLE agg_t (id int, a amount);
INSERT INTO agg_t VALUES
    (1, '10.00 USD'), (2, '-2.50 USD'), (3, '0.01 USD'), (4, NULL),
    (5, '100 JPY'), (6, '-7 JPY'), (7, '1.005 BHD'), (8, '2 EUR'), (9, '3 EUR');

-- Grouped by currency (the usual way to total mixed amounts).
SELECT currency(a), sum(a), min(a), max(a), count(a)
  FROM agg_t WHERE a IS NOT NULL GROUP BY currency(a) ORDER BY 1;
-- The aggregates are fincore's, and return amounts.
SELECT pg_typeof(sum(a)), pg_typeof(min(a)), pg_typeof(max(a)) FROM agg_t WHERE id = 1;
-- NULLs are skipped; no rows or only NULLs give NULL.
SELECT sum(a) AS sum_with_null, min(a), max(a) FROM agg_t WHERE id IN (1, 4);
SELECT sum(a) IS NULL AS s, min(a) IS NULL AS mn, max(a) IS NULL AS mx FROM agg_t WHERE false;
SELECT sum(a) IS NULL AS s, min(a) IS NULL AS mn, max(a) IS NULL AS mx FROM agg_t WHERE id = 4;
-- FILTER, DISTINCT, ORDER BY inside the aggregate.
SELECT sum(a) FILTER (WHERE a > '0 USD') AS positive,
       sum(DISTINCT a) AS distinct_sum, sum(a ORDER BY id DESC) AS ordered
  FROM (VALUES (1, '1.00 USD'::amount), (2, '1.00 USD'), (3, '-0.25 USD')) AS v(id, a);
-- As window functions: running totals per currency.
SELECT id, a, sum(a) OVER w AS running, min(a) OVER w AS low, max(a) OVER w AS high
  FROM agg_t WHERE a IS NOT NULL
  WINDOW w AS (PARTITION BY currency(a) ORDER BY id) ORDER BY currency(a), id;

-- The sum accumulates on 128 bits: intermediate totals beyond int64 are fine
-- as long as the final total fits, in any order.
SELECT sum(a) FROM (VALUES ('92233720368547758.07 USD'::amount), ('0.01 USD'), ('-0.05 USD')) AS v(a);
SELECT sum(a) FROM (VALUES ('0.01 USD'::amount), ('92233720368547758.07 USD'), ('-0.05 USD')) AS v(a);
SELECT sum(a) FROM (VALUES ('-92233720368547758.08 USD'::amount), ('-92233720368547758.08 USD'),
                           ('92233720368547758.07 USD'), ('92233720368547758.07 USD'),
                           ('0.02 USD')) AS v(a);
SELECT sum(a) FROM (SELECT '92233720368547758.07 USD'::amount FROM generate_series(1, 1000)
                    UNION ALL
                    SELECT '-92233720368547758.07 USD'::amount FROM generate_series(1, 999)) AS v(a);
-- Exactly the int64 limits.
SELECT sum(a) FROM (VALUES ('92233720368547758.00 USD'::amount), ('0.07 USD')) AS v(a);
SELECT sum(a) FROM (VALUES ('-92233720368547758.00 USD'::amount), ('-0.08 USD')) AS v(a);
-- min and max over extremes, and equal values.
SELECT min(a), max(a) FROM (VALUES ('-92233720368547758.08 USD'::amount),
                                   ('92233720368547758.07 USD'), ('0 USD')) AS v(a);
SELECT min(a), max(a) FROM (VALUES ('1 JPY'::amount), ('1 JPY')) AS v(a);

\set VERBOSITY sqlstate
-- A final total outside int64: ZF104.
SELECT sum(a) FROM (VALUES ('92233720368547758.07 USD'::amount), ('0.01 USD')) AS v(a);
SELECT sum(a) FROM (VALUES ('-92233720368547758.08 USD'::amount), ('-0.01 USD')) AS v(a);
SELECT sum(a) FROM (SELECT '92233720368547758.07 USD'::amount FROM generate_series(1, 3)) AS v(a);
-- Mixed currencies: ZF103, for every aggregate.
SELECT sum(a) FROM agg_t;
SELECT min(a) FROM agg_t;
SELECT max(a) FROM agg_t;
SELECT sum(a) FROM (VALUES ('0 USD'::amount), ('0 EUR')) AS v(a);
SELECT min(a) FROM (VALUES ('1 USD'::amount), (NULL), ('1 EUR')) AS v(a);
SELECT max(a) FROM (VALUES ('1 EUR'::amount), ('1 USD')) AS v(a);
\set VERBOSITY default

--
-- Parallel aggregation: partial states are combined (and serialised).
--
SELECT register_currency('AGGE18', 18, 'agg test, exponent 18');
CREATE TABLE agg_big (id int, a amount, b amount, c amount);
-- a: 0.01 .. 2000.00 USD; b: 100000 rows of int64 max, then 100000 of -max,
-- and one more cent, so partial totals are far outside int64 while the final
-- total is 0.01 USD; c: a registered currency with exponent 18.
INSERT INTO agg_big
SELECT g, from_minor(g, 'USD'),
       from_minor(CASE WHEN g <= 100000 THEN 9223372036854775807 ELSE -9223372036854775807 END, 'USD'),
       from_minor(g::bigint * 100000000, 'AGGE18')
  FROM generate_series(1, 200000) AS g;
INSERT INTO agg_big VALUES (0, '0 USD', '0.01 USD', '0 AGGE18');
ANALYZE agg_big;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT sum(a), min(a), max(a), sum(b), sum(c), min(c), max(c) FROM agg_big;
SELECT sum(a), min(a), max(a), sum(b), sum(c), min(c), max(c) FROM agg_big;
-- Output of a registered currency inside the workers (the exponent is looked
-- up there): c ends in ten zeros when id is a multiple of 100.
EXPLAIN (COSTS OFF) SELECT count(*) FROM agg_big WHERE c::text LIKE '%0000000000 AGGE18';
SELECT count(*) FROM agg_big WHERE c::text LIKE '%0000000000 AGGE18';
-- Grouped.
SELECT id % 3 AS k, sum(a), min(a), max(a), count(*) FROM agg_big GROUP BY 1 ORDER BY 1;
\set VERBOSITY sqlstate
-- Errors raised in workers or when combining keep their SQLSTATE.
SELECT sum(b) FROM agg_big WHERE id <> 0;
SELECT sum(b) + '0 USD' FROM agg_big WHERE id > 0 AND id <= 100000;
UPDATE agg_big SET a = '1 EUR' WHERE id = 150000;
SELECT sum(a) FROM agg_big;
SELECT min(a) FROM agg_big;
SELECT max(a) FROM agg_big;
\set VERBOSITY default
-- The same results without parallelism.
SET max_parallel_workers_per_gather = 0;
EXPLAIN (COSTS OFF) SELECT sum(b) FROM agg_big;
SELECT sum(b), sum(c), min(c), max(c) FROM agg_big;
RESET max_parallel_workers_per_gather;
RESET min_parallel_table_scan_size;
RESET parallel_tuple_cost;
RESET parallel_setup_cost;

--
-- Messages (default verbosity).
--
\set SHOW_CONTEXT never
SELECT sum(a) FROM (VALUES ('92233720368547758.07 USD'::amount), ('0.01 USD')) AS v(a);
SELECT sum(a) FROM (VALUES ('1 USD'::amount), ('1 EUR')) AS v(a);
SELECT max(a) FROM (VALUES ('1 USD'::amount), ('1 EUR')) AS v(a);
