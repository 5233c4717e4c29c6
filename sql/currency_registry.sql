--
-- currency_registry: compiled ISO 4217 currencies, registered currencies, the
-- immutability of registrations and the backend's exponent cache.  Other test
-- files register their own codes; this one only looks at codes starting REG
-- (and XPT).
--
SET search_path = fincore, public;

--
-- Compiled ISO 4217 currencies.
--
SELECT count(*) AS iso_count, count(DISTINCT code) AS distinct_codes,
       bool_and(code ~ '^[A-Z]{3}$') AS three_letters,
       bool_and(numeric_code BETWEEN 1 AND 999) AS numeric_codes,
       bool_and(exponent BETWEEN 0 AND 4) AS exponents_0_to_4,
       bool_and(name <> '') AS named
  FROM iso_currencies();
-- Only the guilder, during its replacement, shares a numeric code.
SELECT numeric_code, array_agg(code ORDER BY code) FROM iso_currencies()
 GROUP BY numeric_code HAVING count(*) > 1;
SELECT exponent, count(*) FROM iso_currencies() GROUP BY exponent ORDER BY exponent;
SELECT code, numeric_code, exponent FROM iso_currencies() WHERE exponent <> 2 ORDER BY code;
SELECT * FROM iso_currencies() WHERE code IN ('USD', 'EUR', 'GBP', 'CHF', 'XCG') ORDER BY code;
-- Codes without a minor unit ('N.A.' in ISO 4217: metals, testing, SDR ...) are
-- not compiled in.
SELECT count(*) AS na_codes_compiled FROM iso_currencies()
 WHERE code IN ('XAU', 'XAG', 'XPT', 'XPD', 'XXX', 'XTS', 'XDR', 'XBA', 'XBB', 'XBC', 'XBD', 'XSU', 'XUA');
-- The currencies view lists them with source 'iso4217'.
SELECT source, count(*) FROM currencies WHERE source = 'iso4217' GROUP BY source;
SELECT (SELECT count(*) FROM currencies WHERE source = 'iso4217') = (SELECT count(*) FROM iso_currencies())
       AS view_matches;
SELECT currency_exponent('USD') AS usd, currency_exponent('JPY') AS jpy, currency_exponent('BHD') AS bhd,
       currency_exponent('CLF') AS clf, currency_exponent('UYW') AS uyw, currency_exponent('XCG') AS xcg,
       currency_exponent(NULL) IS NULL AS strict;
\set VERBOSITY sqlstate
SELECT currency_exponent('usd');
SELECT currency_exponent('US');
SELECT currency_exponent('');
SELECT currency_exponent('USD ');
SELECT currency_exponent('ABCDEFGHIJKLM');
SELECT currency_exponent('XAU');
SELECT currency_exponent('REGNONE');
\set VERBOSITY default

--
-- Registering.
--
SELECT register_currency('REGPTS', 0, 'Loyalty points');
SELECT '1500 REGPTS'::amount AS amount, currency_exponent('REGPTS') AS exponent;
SELECT code, numeric_code, exponent, name, source FROM currencies WHERE code = 'REGPTS';
SELECT code, exponent, name, created_at IS NOT NULL AS has_created_at
  FROM currency_registry WHERE code = 'REGPTS';
-- Idempotent for the same exponent (the first name stays).
SELECT register_currency('REGPTS', 0);
SELECT register_currency('REGPTS', 0, 'Another name');
SELECT code, exponent, name FROM currency_registry WHERE code = 'REGPTS';
-- Codes: 3 to 12 of A-Z and 0-9; exponents 0 to 18; ISO 'N.A.' codes such as XPT
-- are not compiled in, so they may be registered.
SELECT register_currency('REG', 2), register_currency('REG0', 1), register_currency('REGABCDEFGHI', 3),
       register_currency('REGE18', 18, 'eighteen decimals'), register_currency('XPT', 4, 'Platinum (troy ounce)');
SELECT code, numeric_code, exponent, name, source FROM currencies
 WHERE code LIKE 'REG%' OR code = 'XPT' ORDER BY code COLLATE "C";
SELECT '1.5 REG'::amount AS a, '1.5 REG0'::amount AS b, '1.5 REGABCDEFGHI'::amount AS c,
       '9.223372036854775807 REGE18'::amount AS d, '-9.223372036854775808 REGE18'::amount AS e,
       '0.0001 XPT'::amount AS f;
SELECT from_minor(1, 'REGE18') AS one_unit, from_numeric(1.5, 'REGPTS', 'half_even') AS rounded,
       allocate('10 REGPTS', 3) AS split;
\set VERBOSITY sqlstate
-- Amounts respect the registered exponent.
SELECT '1.5 REGPTS'::amount;
SELECT '10 REGE18'::amount;
-- Another exponent for a registered code, or any ISO code: ZF111.
SELECT register_currency('REGPTS', 2);
SELECT register_currency('REGE18', 17);
SELECT register_currency('USD', 2);
SELECT register_currency('JPY', 3);
SELECT register_currency('XCG', 2, 'Caribbean guilder');
-- Malformed codes: ZF109 (also NULL).
SELECT register_currency('reg', 2);
SELECT register_currency('RE', 2);
SELECT register_currency('REGABCDEFGHIJ', 2);
SELECT register_currency('REG-1', 2);
SELECT register_currency('REG 1', 2);
SELECT register_currency(' REG1', 2);
SELECT register_currency('', 2);
SELECT register_currency('RÉG', 2);
SELECT register_currency(NULL, 2);
-- Exponent outside 0..18: ZF110.
SELECT register_currency('REGNEG', -1);
SELECT register_currency('REGBIG', 19);
SELECT register_currency('REGHUGE', 2147483647);
-- A malformed code is reported before a bad exponent.
SELECT register_currency('bad', 99);
\set VERBOSITY default
-- None of the failed registrations left a row.
SELECT code FROM currency_registry
 WHERE code IN ('REGNEG', 'REGBIG', 'REGHUGE', 'USD', 'JPY', 'XCG') OR code !~ '^[A-Z0-9]{3,12}$';

--
-- Registrations are immutable: only the name may change.
--
UPDATE currency_registry SET name = 'Loyalty points (v2)' WHERE code = 'REGPTS';
UPDATE currency_registry SET code = code, exponent = exponent WHERE code = 'REGPTS';
SELECT code, exponent, name FROM currency_registry WHERE code = 'REGPTS';
\set VERBOSITY sqlstate
UPDATE currency_registry SET exponent = 2 WHERE code = 'REGPTS';
UPDATE currency_registry SET code = 'REGPTS2' WHERE code = 'REGPTS';
UPDATE currency_registry SET exponent = exponent + 0, code = lower(code) WHERE code = 'REGPTS';
DELETE FROM currency_registry WHERE code = 'REGPTS';
DELETE FROM currency_registry;
TRUNCATE currency_registry;
\set VERBOSITY default
-- Statements that touch no row do not fire the row trigger.
DELETE FROM currency_registry WHERE code = 'REGNONE';
UPDATE currency_registry SET exponent = 5 WHERE code = 'REGNONE';
SELECT code, exponent, name FROM currency_registry WHERE code = 'REGPTS';
SELECT '1500 REGPTS'::amount AS still_there;
-- The triggers that enforce it.
SELECT tgname, tgtype, tgenabled FROM pg_trigger
 WHERE tgrelid = 'fincore.currency_registry'::regclass AND NOT tgisinternal ORDER BY tgname;
-- pg_dump carries registrations (the registry is an extension configuration table).
SELECT 'fincore.currency_registry'::regclass = ANY (extconfig::regclass[]) AS dumped FROM pg_extension WHERE extname = 'fincore';

--
-- A registration that rolls back is not remembered: the exponent cache never
-- keeps rows of the current, still open, transaction.
--
BEGIN;
SELECT register_currency('REGTMP', 2);
SELECT '1.23 REGTMP'::amount AS in_transaction, currency_exponent('REGTMP') AS exponent;
ROLLBACK;
\set VERBOSITY sqlstate
SELECT '1.23 REGTMP'::amount;
SELECT currency_exponent('REGTMP');
\set VERBOSITY default
SELECT register_currency('REGTMP', 4);
SELECT '1.2345 REGTMP'::amount AS after_rollback, currency_exponent('REGTMP') AS exponent;
-- The same with a savepoint.
BEGIN;
SAVEPOINT s1;
SELECT register_currency('REGSP', 1);
SELECT '1.5 REGSP'::amount AS in_savepoint;
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
\set VERBOSITY sqlstate
SELECT '1.5 REGSP'::amount;
\set VERBOSITY default
ROLLBACK TO SAVEPOINT s2;
SELECT register_currency('REGSP', 3);
SELECT '1.555 REGSP'::amount AS after_rollback_to_savepoint;
COMMIT;
SELECT '1.555 REGSP'::amount AS committed, currency_exponent('REGSP') AS exponent;
-- Dropping and re-creating the extension empties the registry, and the cache
-- with it (rolled back here, which brings the registrations back).
BEGIN;
SET LOCAL client_min_messages = warning;
DROP EXTENSION fincore CASCADE;
CREATE EXTENSION fincore;
SELECT count(*) AS registered FROM fincore.currency_registry;
\set VERBOSITY sqlstate
SELECT '1500 REGPTS'::fincore.amount;
\set VERBOSITY default
ROLLBACK;
SELECT '1500 REGPTS'::amount AS back_again;

--
-- Privileges: anyone may read currencies and use registered ones; only the
-- owner registers, and nobody edits the registry directly.
--
CREATE ROLE regress_fincore_reader;
SET ROLE regress_fincore_reader;
SELECT '1500 REGPTS'::amount AS readable, currency_exponent('REGE18') AS exponent;
SELECT count(*) > 0 AS sees_registered FROM currencies WHERE source = 'registered';
\set VERBOSITY sqlstate
SELECT register_currency('REGNOPE', 2);
INSERT INTO currency_registry (code, exponent) VALUES ('REGNOPE', 2);
UPDATE currency_registry SET name = 'x' WHERE code = 'REGPTS';
\set VERBOSITY default
RESET ROLE;
DROP ROLE regress_fincore_reader;

--
-- Messages and hints (default verbosity).
--
\set SHOW_CONTEXT never
SELECT currency_exponent('XAU');
SELECT register_currency('REGPTS', 2);
SELECT register_currency('USD', 2);
SELECT register_currency('reg', 2);
SELECT register_currency('REGBIG', 19);
UPDATE currency_registry SET exponent = 2 WHERE code = 'REGPTS';
DELETE FROM currency_registry WHERE code = 'REGPTS';
TRUNCATE currency_registry;
