-- pgTAP: the currency registry - registration, idempotency, conflicts,
-- immutability and who may do what.
BEGIN;
SET search_path = fincore, public;
SELECT plan(30);

SELECT is((SELECT count(*) FROM currency_registry WHERE code LIKE 'TAPR%'), 0::bigint, 'no TAPR codes yet');
SELECT lives_ok($$SELECT register_currency('TAPRPTS', 0, 'points')$$, 'register TAPRPTS (exponent 0)');
SELECT lives_ok($$SELECT register_currency('TAPR18', 18)$$, 'register TAPR18 (exponent 18)');
SELECT lives_ok($$SELECT register_currency('TAPR000', 0)$$, 'a code may contain digits');
SELECT lives_ok($$SELECT register_currency('XAU', 4, 'Gold')$$, 'an N.A. ISO code (not compiled) may be registered');
SELECT results_eq($$SELECT code, exponent, name FROM currency_registry WHERE code IN ('TAPRPTS', 'TAPR18', 'XAU')
                     ORDER BY code COLLATE "C"$$,
    $$VALUES ('TAPR18'::text, 18, NULL::text), ('TAPRPTS', 0, 'points'), ('XAU', 4, 'Gold')$$, 'rows in the registry');
SELECT is(currency_exponent('TAPR18'), 18, 'currency_exponent of a registered code');
SELECT is('9.223372036854775807 TAPR18'::amount::text, '9.223372036854775807 TAPR18', 'int64 max at exponent 18');
SELECT is('1 XAU'::amount::text, '1.0000 XAU', 'amounts in the registered N.A. code');

-- Idempotent; the first registration wins on name.
SELECT lives_ok($$SELECT register_currency('TAPRPTS', 0, 'other name')$$, 're-registering with the same exponent');
SELECT is((SELECT name FROM currency_registry WHERE code = 'TAPRPTS'), 'points', 'the name is not replaced');
SELECT is((SELECT count(*) FROM currency_registry WHERE code = 'TAPRPTS'), 1::bigint, 'still one row');
-- Conflicts and bad arguments leave nothing behind.
SELECT throws_ok($$SELECT register_currency('TAPRPTS', 2)$$, 'ZF111', NULL, 'another exponent conflicts');
SELECT throws_ok($$SELECT register_currency('EUR', 2)$$, 'ZF111', NULL, 'an ISO code conflicts');
SELECT throws_ok($$SELECT register_currency('TAPRBAD', 19)$$, 'ZF110', NULL, 'exponent 19');
SELECT throws_ok($$SELECT register_currency('tapr', 2)$$, 'ZF109', NULL, 'lower case code');
SELECT is((SELECT count(*) FROM currency_registry WHERE code IN ('EUR', 'TAPRBAD')), 0::bigint,
    'failed registrations left no row');

-- Immutable rows.
SELECT lives_ok($$UPDATE currency_registry SET name = 'loyalty points' WHERE code = 'TAPRPTS'$$, 'rename');
SELECT lives_ok($$UPDATE currency_registry SET exponent = 0, code = 'TAPRPTS' WHERE code = 'TAPRPTS'$$,
    'an UPDATE that keeps code and exponent is allowed');
SELECT throws_ok($$UPDATE currency_registry SET exponent = 1 WHERE code = 'TAPRPTS'$$, 'ZF113', NULL, 'exponent fixed');
SELECT throws_ok($$UPDATE currency_registry SET code = 'TAPRPT2' WHERE code = 'TAPRPTS'$$, 'ZF113', NULL, 'code fixed');
SELECT throws_ok($$DELETE FROM currency_registry WHERE code = 'TAPRPTS'$$, 'ZF113', NULL, 'no DELETE');
SELECT throws_ok($$TRUNCATE currency_registry$$, 'ZF113', NULL, 'no TRUNCATE');
SELECT is((SELECT exponent FROM currency_registry WHERE code = 'TAPRPTS'), 0, 'registration unchanged');

-- Another role reads and uses currencies, but cannot register or edit.
CREATE ROLE tap_fincore_reader;
SET LOCAL ROLE tap_fincore_reader;
SELECT is('10 TAPRPTS'::amount::text, '10 TAPRPTS', 'a reader can use a registered currency');
SELECT ok((SELECT count(*) FROM currencies WHERE code = 'TAPRPTS') = 1, 'a reader sees it in currencies');
SELECT throws_ok($$SELECT register_currency('TAPRNO', 2)$$, '42501', NULL, 'a reader cannot register');
SELECT throws_ok($$INSERT INTO currency_registry (code, exponent) VALUES ('TAPRNO', 2)$$, '42501', NULL,
    'a reader cannot insert into the registry');
SELECT throws_ok($$UPDATE currency_registry SET name = 'x' WHERE code = 'TAPRPTS'$$, '42501', NULL,
    'a reader cannot rename');
RESET ROLE;
SELECT is((SELECT name FROM currency_registry WHERE code = 'TAPRPTS'), 'loyalty points', 'nothing changed');

SELECT * FROM finish();
ROLLBACK;
