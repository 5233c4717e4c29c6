--
-- money_io: text and binary input/output of fincore.amount, constructors and
-- accessors.  Error cases print their SQLSTATE (VERBOSITY sqlstate); a few are
-- repeated at the end under default verbosity to show the messages and hints.
--
SET search_path = fincore, public;

-- Registered currencies used by this file only (exponents 0, 1, 6, 18).
SELECT register_currency('IOZERO', 0, 'io test, exponent 0'),
       register_currency('IOONE', 1, 'io test, exponent 1'),
       register_currency('IOSIX', 6, 'io test, exponent 6'),
       register_currency('IOE18', 18, 'io test, exponent 18');

-- Canonical output always has exactly `exponent` decimals.
SELECT t AS input, t::amount AS amount, minor_units(t::amount), currency(t::amount),
       exponent(t::amount)
  FROM (VALUES ('12.34 USD'), ('12.3 USD'), ('12 USD'), ('0.05 USD'), ('-0.50 EUR'),
               ('1000 JPY'), ('-7 JPY'), ('1 BHD'), ('1.5 KWD'), ('-0.001 TND'),
               ('0.0001 CLF'), ('1.1 UYW'), ('5 IOZERO'), ('5.5 IOONE'),
               ('0.000001 IOSIX'), ('1 IOE18'), ('0.000000000000000001 IOE18'),
               ('1 XCG')) AS v(t);

-- Signs, zeros and leading zeros.
SELECT t AS input, t::amount AS amount, minor_units(t::amount)
  FROM (VALUES ('+5 USD'), ('-5 USD'), ('+0 USD'), ('-0 USD'), ('-0.00 USD'),
               ('0 JPY'), ('-0 JPY'), ('007.50 USD'), ('-000000000000000000000001 JPY'),
               ('0.000 BHD'), ('-0.0 IOE18')) AS v(t);

-- White space: any of space, tab, newline, CR, FF, VT around and between.
SELECT '[' || replace(replace(replace(replace(replace(t, E'\t', '\t'), E'\n', '\n'), E'\r', '\r'),
                                    E'\f', '\f'), chr(11), '\v') || ']' AS input,
       t::amount AS amount
  FROM (VALUES ('12.34 USD'), ('   12.34 USD'), ('12.34 USD   '), ('12.34      USD'),
               (E'\t12.34\tUSD\t'), (E'\n-1\nJPY\n'),
               (E'\r\f' || chr(11) || E' 3 \r\f' || chr(11) || E' BHD \r\f' || chr(11))) AS v(t);

-- Round trips: output parses back to the same value, and output is a fixed point.
SELECT a, a::text::amount = a AS same, a::text = a::text::amount::text AS stable
  FROM (VALUES ('12.3 USD'::amount), ('-0.5 EUR'), ('1000 JPY'), ('0.0001 CLF'),
               ('1 BHD'), ('5.5 IOONE'), ('-1 IOE18'), ('92233720368547758.07 USD'),
               ('-92233720368547758.08 USD')) AS v(a);

-- Boundaries: int64 minor units for several exponents.
SELECT a AS amount, minor_units(a), a::text::amount = a AS round_trips
  FROM (VALUES ('9223372036854775807 JPY'::amount), ('-9223372036854775808 JPY'),
               ('922337203685477580.7 IOONE'), ('-922337203685477580.8 IOONE'),
               ('92233720368547758.07 USD'), ('-92233720368547758.08 USD'),
               ('9223372036854775.807 BHD'), ('-9223372036854775.808 BHD'),
               ('922337203685477.5807 CLF'), ('-922337203685477.5808 CLF'),
               ('9223372036854.775807 IOSIX'), ('-9223372036854.775808 IOSIX'),
               ('9.223372036854775807 IOE18'), ('-9.223372036854775808 IOE18'),
               ('0009223372036854775807 IOZERO')) AS v(a);
SELECT from_minor(9223372036854775807, c) AS max, from_minor(-9223372036854775808, c) AS min
  FROM (VALUES ('JPY'), ('USD'), ('BHD'), ('CLF'), ('IOE18')) AS v(c);

\set VERBOSITY sqlstate
-- One unit beyond int64: ZF104.
SELECT '9223372036854775808 JPY'::amount;
SELECT '-9223372036854775809 JPY'::amount;
SELECT '92233720368547758.08 USD'::amount;
SELECT '-92233720368547758.09 USD'::amount;
SELECT '9223372036854775.808 BHD'::amount;
SELECT '922337203685477.5808 CLF'::amount;
SELECT '9.223372036854775808 IOE18'::amount;
SELECT '-9.223372036854775809 IOE18'::amount;
SELECT '10 IOE18'::amount;
SELECT '18446744073709551616 JPY'::amount;
SELECT '99999999999999999999999999999999999999999999999999 USD'::amount;

-- Not an amount at all: ZF101.
SELECT ''::amount;
SELECT '   '::amount;
SELECT 'USD'::amount;
SELECT '12.34'::amount;
SELECT '12.34 '::amount;
SELECT '12.34USD'::amount;
SELECT 'USD 12.34'::amount;
SELECT '12.34 usd'::amount;
SELECT '12.34 Usd'::amount;
SELECT '12.34 US'::amount;
SELECT '12.34 ABCDEFGHIJKLM'::amount;
SELECT '12.34 U$D'::amount;
SELECT '12.34 USD EUR'::amount;
SELECT '12.34 USD.'::amount;
SELECT 'twelve USD'::amount;
SELECT '.5 USD'::amount;
SELECT '5. USD'::amount;
SELECT '5.5.5 USD'::amount;
SELECT '1e3 USD'::amount;
SELECT '1,000.00 USD'::amount;
SELECT '1 000 USD'::amount;
SELECT '- 5 USD'::amount;
SELECT '+-5 USD'::amount;
SELECT '--5 USD'::amount;
SELECT '$5 USD'::amount;
SELECT '0x10 USD'::amount;
SELECT 'NaN USD'::amount;
SELECT 'Infinity USD'::amount;
SELECT '１２ USD'::amount;
SELECT '12 ＵＳＤ'::amount;
-- A malformed code is a syntax error even when the number is also bad.
SELECT '1.234 usd'::amount;

-- Well-formed but unknown currency: ZF102, before decimals or range are judged.
SELECT '1.00 XAU'::amount;
SELECT '1 XXX'::amount;
SELECT '1 XTS'::amount;
SELECT '1 POINTS'::amount;
SELECT '1 ABCDEFGHIJKL'::amount;
SELECT '1.23456 ZZZ'::amount;
SELECT '99999999999999999999999 ZZZ'::amount;

-- More decimals than the currency has: ZF105 (checked before the range).
SELECT '1.234 USD'::amount;
SELECT '12.340 USD'::amount;
SELECT '1.5 JPY'::amount;
SELECT '1.0 JPY'::amount;
SELECT '0.0001 BHD'::amount;
SELECT '0.00001 CLF'::amount;
SELECT '1.0 IOZERO'::amount;
SELECT '0.05 IOONE'::amount;
SELECT '0.0000000000000000001 IOE18'::amount;
SELECT '99999999999999999999.999 USD'::amount;
\set VERBOSITY default

-- Arrays and records quote amounts (they contain a space).
SELECT '{"1.00 USD","2 JPY",NULL}'::amount[] AS arr,
       ('{"1.5 USD"}'::amount[])[1] AS elem,
       ROW('1 USD'::amount, '-2.5 EUR'::amount) AS rec;
SELECT array_agg(a ORDER BY a) FROM (VALUES ('3 USD'::amount), ('1 USD'), ('2 USD')) AS v(a);

-- Constructors and accessors.
SELECT from_minor(1234, 'USD'), from_minor(-1, 'JPY'), from_minor(5, 'CLF'),
       from_minor(0, 'BHD'), from_minor(7, 'IOE18');
SELECT minor_units('12.34 USD'), minor_units('-0.01 USD'), minor_units('1000 JPY'),
       minor_units('1 CLF'), minor_units('1 IOE18');
SELECT currency('1 USD'), currency('1 IOE18'), exponent('1 JPY'), exponent('1 BHD'),
       exponent('1 CLF'), exponent('1 IOSIX');
SELECT to_numeric(a) AS num, scale(to_numeric(a)) AS scale, pg_typeof(to_numeric(a))
  FROM (VALUES ('12.3 USD'::amount), ('-0.5 EUR'), ('1000 JPY'), ('0.0001 CLF'), ('1 BHD'),
               ('0 USD'), ('-92233720368547758.08 USD'), ('9.223372036854775807 IOE18'),
               ('-9.223372036854775808 IOE18'), ('-9223372036854775808 JPY')) AS v(a);
-- to_numeric and from_minor invert minor_units.
SELECT bool_and(from_minor(minor_units(a), currency(a)) = a) AS from_minor_inverts,
       bool_and(to_numeric(a) * 10 ^ exponent(a) = minor_units(a)) AS to_numeric_exact
  FROM (VALUES ('12.3 USD'::amount), ('-0.5 EUR'), ('1000 JPY'), ('0.0001 CLF'),
               ('9.223372036854775807 IOE18'), ('-92233720368547758.08 USD')) AS v(a);
-- Strict functions: NULL in, NULL out.
SELECT from_minor(NULL, 'USD') IS NULL AS a, from_minor(1, NULL) IS NULL AS b,
       minor_units(NULL) IS NULL AS c, currency(NULL) IS NULL AS d,
       exponent(NULL) IS NULL AS e, to_numeric(NULL) IS NULL AS f,
       NULL::amount IS NULL AS g;

\set VERBOSITY sqlstate
SELECT from_minor(1, 'usd');
SELECT from_minor(1, 'US');
SELECT from_minor(1, '');
SELECT from_minor(1, 'ABCDEFGHIJKLM');
SELECT from_minor(1, ' USD');
SELECT from_minor(1, 'XAU');
SELECT from_minor(1, 'POINTS');
\set VERBOSITY default

--
-- Binary send/recv: int64 minor units (big-endian), a length byte, the code.
--
SELECT a, amount_send(a)
  FROM (VALUES ('12.34 USD'::amount), ('-0.01 USD'), ('0 JPY'), ('1 CLF'),
               ('92233720368547758.07 USD'), ('-92233720368547758.08 USD'),
               ('1 IOE18'), ('5 IOZERO')) AS v(a);

-- Round trip through COPY (FORMAT binary), which calls amount_send and amount_recv.
SELECT '/tmp/fincore_regress_money_io_' || pg_backend_pid() AS binfile \gset
CREATE TEMP TABLE bin_src (id int, a amount);
INSERT INTO bin_src VALUES
    (1, '12.34 USD'), (2, '-0.01 USD'), (3, '0 JPY'), (4, '1 CLF'),
    (5, '92233720368547758.07 USD'), (6, '-92233720368547758.08 USD'),
    (7, '-9.223372036854775808 IOE18'), (8, '5 IOZERO'), (9, NULL);
COPY bin_src TO :'binfile' (FORMAT binary);
-- The file is the COPY header, one tuple per row and the trailer; each amount
-- field is exactly amount_send() of the value.
SELECT pg_read_binary_file(:'binfile') =
       '\x5047434f50590aff0d0a00'::bytea || '\x0000000000000000'::bytea ||
       (SELECT string_agg('\x0002'::bytea || int4send(4) || int4send(id) ||
                          CASE WHEN a IS NULL THEN int4send(-1)
                               ELSE int4send(length(amount_send(a))) || amount_send(a) END,
                          ''::bytea ORDER BY id) FROM bin_src) ||
       '\xffff'::bytea AS file_is_amount_send;
CREATE TEMP TABLE bin_dst (id int, a amount);
COPY bin_dst FROM :'binfile' (FORMAT binary);
SELECT d.id, d.a, s.a IS NOT DISTINCT FROM d.a AS same
  FROM bin_src s JOIN bin_dst d USING (id) ORDER BY id;

-- Hand-made binary files exercise amount_recv's checks.
CREATE FUNCTION pg_temp.write_copy_file(path text, fields bytea[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    body bytea := '\x5047434f50590aff0d0a00'::bytea || '\x0000000000000000'::bytea;
    f bytea;
BEGIN
    FOREACH f IN ARRAY fields LOOP
        body := body || '\x0001'::bytea || int4send(length(f)) || f;
    END LOOP;
    body := body || '\xffff'::bytea;
    EXECUTE format('COPY (SELECT %L) TO PROGRAM %L',
                   translate(encode(body, 'base64'), E'\n', ''),
                   'base64 -d > ' || path);
END $$;
CREATE TEMP TABLE bin_in (n serial, a amount);
-- Well-formed fields: ISO and registered codes; any int64 is a valid count.
SELECT pg_temp.write_copy_file(:'binfile', ARRAY[
    '\x000000000000000103555344'::bytea,             -- 1 unit, USD
    '\xffffffffffffffff034a5059'::bytea,             -- -1 unit, JPY
    '\x7fffffffffffffff05494f453138'::bytea,         -- int64 max, IOE18
    '\x800000000000000003424844'::bytea]);           -- int64 min, BHD
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
SELECT n, a, minor_units(a) FROM bin_in ORDER BY n;

\set VERBOSITY sqlstate
-- Malformed code (lower case), empty code, code too long: ZF101.
SELECT pg_temp.write_copy_file(:'binfile', ARRAY['\x000000000000000103757364'::bytea]);
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
SELECT pg_temp.write_copy_file(:'binfile', ARRAY['\x000000000000000100'::bytea]);
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
SELECT pg_temp.write_copy_file(:'binfile', ARRAY['\x00000000000000010d4142434445464748494a4b4c4d'::bytea]);
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
SELECT pg_temp.write_copy_file(:'binfile', ARRAY['\x0000000000000001035553'::bytea || '\x20'::bytea]);
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
-- Well-formed but unknown code: ZF102.
SELECT pg_temp.write_copy_file(:'binfile', ARRAY['\x000000000000000103584155'::bytea]);
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
-- Truncated field (length byte promises more than there is): 08P01.
SELECT pg_temp.write_copy_file(:'binfile', ARRAY['\x0000000000000001045553'::bytea || '\x44'::bytea]);
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
SELECT pg_temp.write_copy_file(:'binfile', ARRAY['\x00000001'::bytea]);
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
-- Trailing bytes after the code: 22P03.
SELECT pg_temp.write_copy_file(:'binfile', ARRAY['\x00000000000000010355534400'::bytea]);
COPY bin_in (a) FROM :'binfile' (FORMAT binary);
\set VERBOSITY default
-- The failed COPYs loaded nothing: only the four rows above are there.
SELECT count(*) FROM bin_in;
-- Remove the scratch file.
SELECT 'cat > /dev/null; rm -f ' || :'binfile' AS rmcmd \gset
COPY (SELECT 1) TO PROGRAM :'rmcmd';

--
-- Messages and hints of the input errors (default verbosity).
--
\set SHOW_CONTEXT never
SELECT '12.34USD'::amount;
SELECT '1 XAU'::amount;
SELECT '1.234 USD'::amount;
SELECT '92233720368547758.08 USD'::amount;
SELECT from_minor(1, 'usd');
SELECT from_minor(1, 'POINTS');
