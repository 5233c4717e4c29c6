-- pgTAP: every money SQLSTATE (ZF101-ZF113) is raised where docs/errors.md
-- says, with the documented code; a few messages are checked word for word.
BEGIN;
SET search_path = fincore, public;
SELECT plan(93);

-- ZF101 invalid_amount_text
SELECT throws_ok($$SELECT '12.34USD'::fincore.amount$$, 'ZF101', NULL, 'ZF101: no space before the code');
SELECT throws_ok($$SELECT '12.34'::fincore.amount$$, 'ZF101', NULL, 'ZF101: no code');
SELECT throws_ok($$SELECT 'USD'::fincore.amount$$, 'ZF101', NULL, 'ZF101: no number');
SELECT throws_ok($$SELECT ''::fincore.amount$$, 'ZF101', NULL, 'ZF101: empty text');
SELECT throws_ok($$SELECT '12.34 usd'::fincore.amount$$, 'ZF101', NULL, 'ZF101: lower-case code in a literal');
SELECT throws_ok($$SELECT '1e3 USD'::fincore.amount$$, 'ZF101', NULL, 'ZF101: exponent notation');
SELECT throws_ok($$SELECT '.5 USD'::fincore.amount$$, 'ZF101', NULL, 'ZF101: no integer digits');
SELECT throws_ok($$SELECT '5. USD'::fincore.amount$$, 'ZF101', NULL, 'ZF101: no fraction digits');
SELECT throws_ok($$SELECT '1,000 USD'::fincore.amount$$, 'ZF101', NULL, 'ZF101: grouping separator');
SELECT throws_ok($$SELECT '5 USD EUR'::fincore.amount$$, 'ZF101', NULL, 'ZF101: trailing garbage');
SELECT throws_ok($$SELECT '5 ABCDEFGHIJKLM'::fincore.amount$$, 'ZF101', NULL, 'ZF101: code of 13 characters');
SELECT throws_ok($$SELECT '12.34USD'::fincore.amount$$, 'ZF101',
    'invalid input syntax for type amount: "12.34USD"', 'ZF101 message');

-- ZF102 unknown_currency
SELECT throws_ok($$SELECT '1 XAU'::fincore.amount$$, 'ZF102', NULL, 'ZF102: N.A. code XAU in a literal');
SELECT throws_ok($$SELECT '1 XXX'::fincore.amount$$, 'ZF102', NULL, 'ZF102: XXX is not compiled in');
SELECT throws_ok($$SELECT '1 POINTS'::fincore.amount$$, 'ZF102', NULL, 'ZF102: unregistered code');
SELECT throws_ok($$SELECT fincore.from_minor(1, 'XTS')$$, 'ZF102', NULL, 'ZF102: from_minor');
SELECT throws_ok($$SELECT fincore.from_numeric(1, 'XDR')$$, 'ZF102', NULL, 'ZF102: from_numeric');
SELECT throws_ok($$SELECT fincore.currency_exponent('ZZZ')$$, 'ZF102', NULL, 'ZF102: currency_exponent');
SELECT throws_ok($$SELECT '1.234 XAU'::fincore.amount$$, 'ZF102', NULL, 'ZF102 comes before ZF105');
SELECT throws_ok($$SELECT fincore.currency_exponent('XAU')$$, 'ZF102', 'unknown currency: "XAU"', 'ZF102 message');

-- ZF103 currency_mismatch
SELECT throws_ok($$SELECT '1 USD'::fincore.amount + '1 EUR'$$, 'ZF103', NULL, 'ZF103: +');
SELECT throws_ok($$SELECT '1 USD'::fincore.amount - '1 EUR'$$, 'ZF103', NULL, 'ZF103: -');
SELECT throws_ok($$SELECT '1 USD'::fincore.amount < '1 EUR'$$, 'ZF103', NULL, 'ZF103: <');
SELECT throws_ok($$SELECT '1 USD'::fincore.amount <= '1 EUR'$$, 'ZF103', NULL, 'ZF103: <=');
SELECT throws_ok($$SELECT '1 USD'::fincore.amount > '1 EUR'$$, 'ZF103', NULL, 'ZF103: >');
SELECT throws_ok($$SELECT '1 USD'::fincore.amount >= '1 EUR'$$, 'ZF103', NULL, 'ZF103: >=');
SELECT throws_ok($$SELECT fincore.sum(a) FROM (VALUES ('1 USD'::fincore.amount), ('1 EUR')) v(a)$$,
    'ZF103', NULL, 'ZF103: sum');
SELECT throws_ok($$SELECT fincore.min(a) FROM (VALUES ('1 USD'::fincore.amount), ('1 EUR')) v(a)$$,
    'ZF103', NULL, 'ZF103: min');
SELECT throws_ok($$SELECT fincore.max(a) FROM (VALUES ('1 USD'::fincore.amount), ('1 EUR')) v(a)$$,
    'ZF103', NULL, 'ZF103: max');
SELECT throws_ok($$SELECT '1 USD'::fincore.amount + '1 EUR'$$, 'ZF103',
    'currency mismatch: USD and EUR', 'ZF103 message');

-- ZF104 amount_out_of_range
SELECT throws_ok($$SELECT '92233720368547758.08 USD'::fincore.amount$$, 'ZF104', NULL, 'ZF104: literal above int64');
SELECT throws_ok($$SELECT '-9223372036854775809 JPY'::fincore.amount$$, 'ZF104', NULL, 'ZF104: literal below int64');
SELECT throws_ok($$SELECT '92233720368547758.07 USD'::fincore.amount + '0.01 USD'$$, 'ZF104', NULL, 'ZF104: +');
SELECT throws_ok($$SELECT '-92233720368547758.08 USD'::fincore.amount - '0.01 USD'$$, 'ZF104', NULL, 'ZF104: -');
SELECT throws_ok($$SELECT -'-92233720368547758.08 USD'::fincore.amount$$, 'ZF104', NULL, 'ZF104: unary -');
SELECT throws_ok($$SELECT '92233720368547758.07 USD'::fincore.amount * 2$$, 'ZF104', NULL, 'ZF104: *');
SELECT throws_ok($$SELECT '-92233720368547758.08 USD'::fincore.amount / -1$$, 'ZF104', NULL, 'ZF104: /');
SELECT throws_ok($$SELECT fincore.sum(a) FROM (VALUES ('92233720368547758.07 USD'::fincore.amount), ('0.01 USD')) v(a)$$,
    'ZF104', NULL, 'ZF104: final sum');
SELECT throws_ok($$SELECT fincore.div_round(-9223372036854775808, -1)$$, 'ZF104', NULL, 'ZF104: div_round quotient');
SELECT throws_ok($$SELECT fincore.divide('-92233720368547758.08 USD'::fincore.amount, -1, 'floor')$$,
    'ZF104', NULL, 'ZF104: div');
SELECT throws_ok($$SELECT fincore.multiply('92233720368547758.07 USD', 2, 'down')$$, 'ZF104', NULL, 'ZF104: multiply');
SELECT throws_ok($$SELECT fincore.from_numeric(92233720368547758.08, 'USD')$$, 'ZF104', NULL, 'ZF104: from_numeric');
SELECT throws_ok($$SELECT fincore.from_numeric(1e40, 'USD', 'floor')$$, 'ZF104', NULL, 'ZF104: from_numeric beyond 128 bits');

-- ZF105 precision_loss
SELECT throws_ok($$SELECT '1.234 USD'::fincore.amount$$, 'ZF105', NULL, 'ZF105: too many decimals (USD)');
SELECT throws_ok($$SELECT '1.5 JPY'::fincore.amount$$, 'ZF105', NULL, 'ZF105: decimals for JPY');
SELECT throws_ok($$SELECT '0.00001 CLF'::fincore.amount$$, 'ZF105', NULL, 'ZF105: five decimals for CLF');
SELECT throws_ok($$SELECT '1.00 USD'::fincore.amount / 3$$, 'ZF105', NULL, 'ZF105: inexact /');
SELECT throws_ok($$SELECT fincore.from_numeric(12.345, 'USD')$$, 'ZF105', NULL, 'ZF105: from_numeric without a mode');
SELECT throws_ok($$SELECT fincore.from_numeric(0.5, 'JPY', NULL)$$, 'ZF105', NULL, 'ZF105: from_numeric with a NULL mode');
SELECT throws_ok($$SELECT fincore.multiply('92233720368547758.07 USD', 100000000000000000000, 'down')$$,
    'ZF105', NULL, 'ZF105: multiply product beyond 128 bits');
SELECT throws_ok($$SELECT fincore.multiply('0 USD', 1.000000000000000000000000000000000000001, 'down')$$,
    'ZF105', NULL, 'ZF105: multiply rate beyond 128 bits');
SELECT throws_ok($$SELECT '1.00 USD'::fincore.amount / 3$$, 'ZF105', '1.00 USD / 3 is not exact', 'ZF105 message');

-- ZF106 division_by_zero
SELECT throws_ok($$SELECT '1 USD'::fincore.amount / 0$$, 'ZF106', NULL, 'ZF106: /');
SELECT throws_ok($$SELECT fincore.divide('1 USD'::fincore.amount, 0)$$, 'ZF106', NULL, 'ZF106: divide');
SELECT throws_ok($$SELECT fincore.div_round(1, 0)$$, 'ZF106', NULL, 'ZF106: div_round');
SELECT throws_ok($$SELECT fincore.div_round(1, 0)$$, 'ZF106', 'division by zero: 1 / 0', 'ZF106 message');

-- ZF107 invalid_rounding_mode
SELECT throws_ok($$SELECT fincore.div_round(1, 2, 'HALF_EVEN')$$, 'ZF107', NULL, 'ZF107: modes are lower case');
SELECT throws_ok($$SELECT fincore.div_round(1, 2, 'bankers')$$, 'ZF107', NULL, 'ZF107: div_round');
SELECT throws_ok($$SELECT fincore.divide('1 USD'::fincore.amount, 3, 'nearest')$$, 'ZF107', NULL, 'ZF107: divide');
SELECT throws_ok($$SELECT fincore.multiply('1 USD', 0.5, '')$$, 'ZF107', NULL, 'ZF107: multiply');
SELECT throws_ok($$SELECT fincore.from_numeric(1.5, 'USD', 'round')$$, 'ZF107', NULL, 'ZF107: from_numeric');
SELECT throws_ok($$SELECT fincore.div_round(1, 2, 'bankers')$$, 'ZF107', 'invalid rounding mode: "bankers"',
    'ZF107 message');

-- ZF108 invalid_allocation
SELECT throws_ok($$SELECT fincore.allocate('1 USD', '{}'::bigint[])$$, 'ZF108', NULL, 'ZF108: empty ratios');
SELECT throws_ok($$SELECT fincore.allocate('1 USD', ARRAY[1, NULL]::bigint[])$$, 'ZF108', NULL, 'ZF108: null ratio');
SELECT throws_ok($$SELECT fincore.allocate('1 USD', '{{1,1},{1,1}}'::bigint[])$$, 'ZF108', NULL, 'ZF108: two dimensions');
SELECT throws_ok($$SELECT fincore.allocate('1 USD', ARRAY[2, -1]::bigint[])$$, 'ZF108', NULL, 'ZF108: negative ratio');
SELECT throws_ok($$SELECT fincore.allocate('1 USD', ARRAY[0, 0]::bigint[])$$, 'ZF108', NULL, 'ZF108: all zero');
SELECT throws_ok($$SELECT fincore.allocate('1 USD', 0)$$, 'ZF108', NULL, 'ZF108: zero parts');
SELECT throws_ok($$SELECT fincore.allocate('1 USD', 1000001)$$, 'ZF108', NULL, 'ZF108: too many parts');
SELECT throws_ok($$SELECT fincore.allocate('1 USD', array_fill(1::bigint, ARRAY[1000001]))$$,
    'ZF108', NULL, 'ZF108: too many ratios');

-- ZF109 invalid_currency_code
SELECT throws_ok($$SELECT fincore.from_minor(1, 'usd')$$, 'ZF109', NULL, 'ZF109: from_minor');
SELECT throws_ok($$SELECT fincore.from_numeric(1, 'US')$$, 'ZF109', NULL, 'ZF109: from_numeric');
SELECT throws_ok($$SELECT fincore.currency_exponent('')$$, 'ZF109', NULL, 'ZF109: currency_exponent');
SELECT throws_ok($$SELECT fincore.register_currency('my-points', 0)$$, 'ZF109', NULL, 'ZF109: register_currency');
SELECT throws_ok($$SELECT fincore.register_currency('ABCDEFGHIJKLM', 0)$$, 'ZF109', NULL, 'ZF109: 13 characters');
SELECT throws_ok($$SELECT fincore.register_currency(NULL, 0)$$, 'ZF109', NULL, 'ZF109: NULL code');
SELECT throws_ok($$SELECT fincore.from_minor(1, 'usd')$$, 'ZF109', 'invalid currency code: "usd"', 'ZF109 message');

-- ZF110 invalid_exponent
SELECT throws_ok($$SELECT fincore.register_currency('TAPNEG', -1)$$, 'ZF110', NULL, 'ZF110: negative exponent');
SELECT throws_ok($$SELECT fincore.register_currency('TAPBIG', 19)$$, 'ZF110', NULL, 'ZF110: exponent 19');
SELECT throws_ok($$SELECT fincore.register_currency('TAPBIG', 19)$$, 'ZF110',
    'invalid exponent 19 for currency "TAPBIG"', 'ZF110 message');

-- ZF111 currency_conflict
SELECT throws_ok($$SELECT fincore.register_currency('USD', 2)$$, 'ZF111', NULL, 'ZF111: ISO code, same exponent');
SELECT throws_ok($$SELECT fincore.register_currency('JPY', 2)$$, 'ZF111', NULL, 'ZF111: ISO code, other exponent');
SELECT lives_ok($$SELECT fincore.register_currency('TAPPTS', 0)$$, 'register TAPPTS');
SELECT throws_ok($$SELECT fincore.register_currency('TAPPTS', 2)$$, 'ZF111', NULL, 'ZF111: another exponent');
SELECT throws_ok($$SELECT fincore.register_currency('TAPPTS', 2)$$, 'ZF111',
    'currency "TAPPTS" is already registered with exponent 0, not 2', 'ZF111 message');

-- ZF112 invalid_number
SELECT throws_ok($$SELECT fincore.from_numeric('NaN', 'USD')$$, 'ZF112', NULL, 'ZF112: from_numeric NaN');
SELECT throws_ok($$SELECT fincore.from_numeric('Infinity', 'USD', 'up')$$, 'ZF112', NULL, 'ZF112: from_numeric Infinity');
SELECT throws_ok($$SELECT fincore.multiply('1 USD', '-Infinity', 'up')$$, 'ZF112', NULL, 'ZF112: multiply -Infinity');
SELECT throws_ok($$SELECT fincore.multiply('1 USD', 'NaN', 'up')$$, 'ZF112',
    'numeric value NaN is not a finite number', 'ZF112 message');

-- ZF113 currency_immutable
SELECT throws_ok($$UPDATE fincore.currency_registry SET exponent = 2 WHERE code = 'TAPPTS'$$,
    'ZF113', NULL, 'ZF113: UPDATE exponent');
SELECT throws_ok($$UPDATE fincore.currency_registry SET code = 'TAPPTS2' WHERE code = 'TAPPTS'$$,
    'ZF113', NULL, 'ZF113: UPDATE code');
SELECT throws_ok($$DELETE FROM fincore.currency_registry WHERE code = 'TAPPTS'$$, 'ZF113', NULL, 'ZF113: DELETE');
SELECT throws_ok($$TRUNCATE fincore.currency_registry$$, 'ZF113', 'registered currencies cannot be changed or removed',
    'ZF113: TRUNCATE (and its message)');

SELECT * FROM finish();
ROLLBACK;
