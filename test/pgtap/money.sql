-- pgTAP: behaviour of fincore.amount - I/O, arithmetic, comparison, ordering,
-- aggregates, rounding, allocation and registered currencies.
BEGIN;
SET search_path = fincore, public;
SELECT plan(70);

-- Text I/O: canonical output has exactly `exponent` decimals.
SELECT results_eq($$SELECT t::amount::text FROM (VALUES (1, '12.3 USD'), (2, '  -0.5   EUR '), (3, '+1000 JPY'),
                                                       (4, '1 BHD'), (5, '0.0001 CLF'), (6, '-0 USD'),
                                                       (7, E'\t7\nKWD')) v(i, t) ORDER BY i$$,
    ARRAY['12.30 USD', '-0.50 EUR', '1000 JPY', '1.000 BHD', '0.0001 CLF', '0.00 USD', '7.000 KWD'],
    'text input is normalised to the canonical form');
SELECT is('92233720368547758.07 USD'::amount::text, '92233720368547758.07 USD', 'int64 max in cents');
SELECT is('-92233720368547758.08 USD'::amount::text, '-92233720368547758.08 USD', 'int64 min in cents');
SELECT is(minor_units('-9223372036854775808 JPY'), '-9223372036854775808'::bigint, 'int64 min yen');
SELECT is(minor_units('922337203685477.5807 CLF'), 9223372036854775807::bigint, 'int64 max at exponent 4');
SELECT ok((SELECT bool_and(a::text::amount = a) FROM (VALUES ('12.34 USD'::amount), ('-0.01 USD'), ('0 JPY'),
          ('1.5 BHD'), ('92233720368547758.07 USD'), ('-92233720368547758.08 USD')) v(a)),
    'output parses back to the same amount');
SELECT is(amount_send('12.34 USD'), '\x00000000000004d203555344'::bytea, 'binary: int64 units, length byte, code');
SELECT is(amount_send('-0.01 USD'), '\xffffffffffffffff03555344'::bytea, 'binary: negative units');

-- Constructors and accessors.
SELECT is(from_minor(1234, 'USD'), '12.34 USD'::amount, 'from_minor counts minor units');
SELECT is(from_numeric(12.34, 'USD'), '12.34 USD'::amount, 'from_numeric is exact by default');
SELECT is(from_numeric(12.345, 'USD', 'half_even'), '12.34 USD'::amount, 'from_numeric rounds with a mode');
SELECT is(currency('5 JPY'), 'JPY', 'currency()');
SELECT is(exponent('5 CLF'), 4, 'exponent()');
SELECT is(to_numeric('12.3 USD'), 12.30, 'to_numeric()');
SELECT is(scale(to_numeric('1 BHD')), 3, 'to_numeric keeps the currency scale');
SELECT is(from_numeric(NULL, 'USD'), NULL, 'from_numeric(NULL) is NULL');

-- Arithmetic.
SELECT is('12.34 USD'::amount + '0.66 USD', '13.00 USD'::amount, '+');
SELECT is('12.34 USD'::amount - '20 USD', '-7.66 USD'::amount, '-');
SELECT is(-'12.34 USD'::amount, '-12.34 USD'::amount, 'unary -');
SELECT is('12.34 USD'::amount * 3, '37.02 USD'::amount, 'amount * bigint');
SELECT is(3 * '12.34 USD'::amount, '37.02 USD'::amount, 'bigint * amount');
SELECT is('12.34 USD'::amount / 2, '6.17 USD'::amount, 'exact amount / bigint');

-- Comparison: = and <> across currencies never raise.
SELECT ok('1.00 USD'::amount = '1 USD', '= on equal amounts');
SELECT ok(NOT ('1 USD'::amount = '1 EUR'), 'different currencies are not equal');
SELECT ok('0 USD'::amount <> '0 EUR', 'zero in two currencies differs');
SELECT ok(NOT ('1.00 USD'::amount = '100 JPY'), 'same units, different currency: not equal');
SELECT ok('1 USD'::amount < '2 USD' AND '2 USD'::amount > '1 USD' AND '1 USD'::amount <= '1 USD'
          AND '1 USD'::amount >= '1 USD', '< > <= >= within a currency');
SELECT ok('-92233720368547758.08 USD'::amount < '92233720368547758.07 USD', '< at the extremes');

-- Ordering, grouping and joins use a total order: code, then units.
CREATE TEMP TABLE m (id int, a amount);
INSERT INTO m VALUES (1, '5 USD'), (2, '-1 USD'), (3, '100 JPY'), (4, '1 EUR'), (5, '5 USD'), (6, '0.5 EUR');
SELECT results_eq($$SELECT id FROM m ORDER BY a, id$$, ARRAY[6, 4, 3, 2, 1, 5], 'ORDER BY groups currencies');
SELECT results_eq($$SELECT a::text AS t FROM m GROUP BY a ORDER BY a$$,
    ARRAY['0.50 EUR', '1.00 EUR', '100 JPY', '-1.00 USD', '5.00 USD'], 'GROUP BY');
SELECT is((SELECT count(DISTINCT a) FROM m), 5::bigint, 'count(DISTINCT)');
CREATE INDEX ON m (a);
SET LOCAL enable_seqscan = off;
SELECT results_eq($$SELECT id FROM m WHERE a = '5.00 USD' ORDER BY id$$, ARRAY[1, 5], 'equality through the btree index');
RESET enable_seqscan;
SET LOCAL enable_mergejoin = off;
SET LOCAL enable_nestloop = off;
SELECT results_eq($$SELECT m1.id, m2.id FROM m m1 JOIN m m2 ON m1.a = m2.a AND m1.id < m2.id$$,
    $$VALUES (1, 5)$$, 'hash join on amount');
RESET enable_mergejoin;
RESET enable_nestloop;

-- Aggregates.
SELECT is((SELECT sum(a) FROM m WHERE currency(a) = 'USD'), '9.00 USD'::amount, 'sum');
SELECT is((SELECT min(a) FROM m WHERE currency(a) = 'EUR'), '0.50 EUR'::amount, 'min');
SELECT is((SELECT max(a) FROM m WHERE currency(a) = 'EUR'), '1.00 EUR'::amount, 'max');
SELECT is((SELECT sum(a) FROM m WHERE false), NULL, 'sum of nothing is NULL');
SELECT is((SELECT sum(a) FROM (VALUES ('92233720368547758.07 USD'::amount), ('0.01 USD'), ('-0.05 USD')) v(a)),
    '92233720368547758.03 USD'::amount, 'sum goes past int64 on the way and comes back');
SELECT results_eq($$SELECT currency(a), sum(a)::text FROM m GROUP BY 1 ORDER BY 1$$,
    $$VALUES ('EUR', '1.50 EUR'), ('JPY', '100 JPY'), ('USD', '9.00 USD')$$, 'sum per currency');
CREATE TEMP TABLE big AS SELECT g AS id, from_minor(g, 'USD') AS a FROM generate_series(1, 100000) g;
ANALYZE big;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
SELECT is((SELECT sum(a) FROM big), '50000500.00 USD'::amount, 'sum over 100000 rows');
SELECT is((SELECT max(a) FROM big), '1000.00 USD'::amount, 'max over 100000 rows');

-- Rounding.
SELECT results_eq($$SELECT div_round(n, 10, 'half_even'), div_round(n, 10, 'half_up'), div_round(n, 10, 'half_down'),
                           div_round(n, 10, 'up'), div_round(n, 10, 'down'), div_round(n, 10, 'ceiling'),
                           div_round(n, 10, 'floor')
                      FROM unnest(ARRAY[5, 15, 25, -5, -15, -25, 4, -4, 6, -6]) WITH ORDINALITY AS u(n, i)
                     ORDER BY i$$,
    $$VALUES (0::bigint, 1::bigint, 0::bigint, 1::bigint, 0::bigint, 1::bigint, 0::bigint),
             (2, 2, 1, 2, 1, 2, 1), (2, 3, 2, 3, 2, 3, 2),
             (0, -1, 0, -1, 0, 0, -1), (-2, -2, -1, -2, -1, -1, -2), (-2, -3, -2, -3, -2, -2, -3),
             (0, 0, 0, 1, 0, 1, 0), (0, 0, 0, -1, 0, 0, -1), (1, 1, 1, 1, 0, 1, 0), (-1, -1, -1, -1, 0, 0, -1)$$,
    'div_round: every mode for ±0.5 ±1.5 ±2.5 ±0.4 ±0.6');
SELECT is(div_round(25, 10), 2::bigint, 'div_round defaults to half_even');
SELECT is(div_round(-9223372036854775808, 9223372036854775807, 'floor'), -2::bigint, 'div_round at the int64 edge');
SELECT is(divide('1.00 USD'::amount, 3), '0.33 USD'::amount, 'divide rounds half_even by default');
SELECT is(divide('2.00 USD'::amount, 3, 'down'), '0.66 USD'::amount, 'divide down');
SELECT is(divide('-0.05 USD'::amount, 2, 'floor'), '-0.03 USD'::amount, 'divide floor on a negative');
SELECT is(multiply('100.00 USD', 0.075, 'half_even'), '7.50 USD'::amount, 'multiply by a rate');
SELECT is(multiply('10.05 USD', 0.5, 'half_even'), '5.02 USD'::amount, 'multiply: half to even');
SELECT is(multiply('10.05 USD', 0.5, 'half_up'), '5.03 USD'::amount, 'multiply: half up');
SELECT is(multiply('1.00 USD', 0.00000000000000000000000000000000000000000000000001, 'up'), '0.01 USD'::amount,
    'multiply: a tiny rate still rounds up');
SELECT is(from_numeric(-2.5, 'JPY', 'half_even'), '-2 JPY'::amount, 'from_numeric half_even');
SELECT is(from_numeric(-2.5, 'JPY', 'half_down'), '-2 JPY'::amount, 'from_numeric half_down');
SELECT is(from_numeric(-2.5, 'JPY', 'half_up'), '-3 JPY'::amount, 'from_numeric half_up');

-- Allocation.
SELECT is(allocate('100.00 USD', ARRAY[1, 1, 1]::bigint[]), '{"33.34 USD","33.33 USD","33.33 USD"}'::amount[],
    '100.00 USD by [1,1,1]');
SELECT is(allocate('100.00 USD', 3), '{"33.34 USD","33.33 USD","33.33 USD"}'::amount[], '100.00 USD in 3 parts');
SELECT is(allocate('-100.00 USD', 3), '{"-33.34 USD","-33.33 USD","-33.33 USD"}'::amount[], 'negative amounts mirror');
SELECT is(allocate('0.05 USD', ARRAY[3, 7]::bigint[]), '{"0.02 USD","0.03 USD"}'::amount[], 'ties go to the earlier part');
SELECT is(allocate('1.00 USD', ARRAY[1, 2]::bigint[]), '{"0.33 USD","0.67 USD"}'::amount[], 'largest remainder first');
SELECT is(allocate('0.01 USD', ARRAY[0, 1, 1]::bigint[]), '{"0.00 USD","0.01 USD","0.00 USD"}'::amount[],
    'zero ratios get nothing');
SELECT is((SELECT sum(p) FROM unnest(allocate('123.45 USD', ARRAY[7, 11, 13, 0, 17]::bigint[])) p),
    '123.45 USD'::amount, 'parts sum to the amount');

-- Registered currencies.
SELECT lives_ok($$SELECT register_currency('TAPGOLD', 6, 'test gold')$$, 'register a currency');
SELECT lives_ok($$SELECT register_currency('TAPGOLD', 6)$$, 'registering again with the same exponent is a no-op');
SELECT is('1.5 TAPGOLD'::amount::text, '1.500000 TAPGOLD', 'a registered currency has its exponent');
SELECT results_eq($$SELECT code, numeric_code, exponent::int, name, source FROM currencies WHERE code = 'TAPGOLD'$$,
    $$VALUES ('TAPGOLD', NULL::smallint, 6, 'test gold', 'registered')$$, 'the currencies view lists it');
SELECT lives_ok($$UPDATE currency_registry SET name = 'renamed' WHERE code = 'TAPGOLD'$$, 'the name may change');
-- A registration rolled back to a savepoint is forgotten, and may be redone
-- with another exponent.
SAVEPOINT before_tmp;
SELECT register_currency('TAPTMP', 2);
SELECT '1.23 TAPTMP'::amount::text AS in_savepoint \gset
ROLLBACK TO SAVEPOINT before_tmp;
SELECT is(:'in_savepoint'::text, '1.23 TAPTMP', 'usable inside the savepoint');
SELECT throws_ok($$SELECT '1.23 TAPTMP'::fincore.amount$$, 'ZF102', NULL, 'unknown again after ROLLBACK TO SAVEPOINT');
SELECT lives_ok($$SELECT fincore.register_currency('TAPTMP', 4)$$, 'registered again with another exponent');
SELECT is('1.2345 TAPTMP'::amount::text, '1.2345 TAPTMP', 'the new exponent is the one used');

SELECT * FROM finish();
ROLLBACK;
