-- pgTAP: reconciliation (docs/reconciliation.md): sources and rules and their refusals
-- (ZFC01, ZFC02, ZFC04), imports of CSV, camt.053, JSON and staged lines parsed exactly and
-- stored once, malformed lines refused by line number with nothing stored (ZFC03), runs of
-- every match kind (dry and real), decisions (confirm, reject, unmatch, manual match) and
-- their refusals (ZFC05-ZFC08) writing nothing, adjustments, breaks, balance drift, tenancy
-- and the app role.
BEGIN;
SET search_path = fincore, public;
SELECT plan(130);

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.create_tenant('Recon A', 'c0000000-0000-4000-8000-00000000000a');
SELECT fincore.create_tenant('Recon B', 'c0000000-0000-4000-8000-00000000000b');
SELECT set_config('request.jwt.claims', '{"tenant_id":"c0000000-0000-4000-8000-00000000000a"}', true);

-- bank (the reconciled account), customers, adjustments, a USD account, a second bank.
SELECT fincore.create_account('EUR', id => 'ca000000-0000-4000-8000-000000000001');
SELECT fincore.create_account('EUR', id => 'ca000000-0000-4000-8000-000000000002');
SELECT fincore.create_account('EUR', id => 'ca000000-0000-4000-8000-000000000003');
SELECT fincore.create_account('USD', id => 'ca000000-0000-4000-8000-000000000004');
SELECT fincore.create_account('EUR', id => 'ca000000-0000-4000-8000-000000000005');

CREATE FUNCTION pg_temp.acct(n int) RETURNS uuid LANGUAGE sql AS $$
    SELECT ('ca000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
-- Rows written, counted from what the database held when this file began (an upgraded
-- database holds some: ./scripts/test --upgrade).
CREATE FUNCTION pg_temp.counts() RETURNS bigint[] LANGUAGE sql AS $$
    SELECT ARRAY[(SELECT count(*) FROM fincore.recon_sources),
                 (SELECT count(*) FROM fincore.recon_rules),
                 (SELECT count(*) FROM fincore.recon_imports),
                 (SELECT count(*) FROM fincore.recon_lines),
                 (SELECT count(*) FROM fincore.recon_staging),
                 (SELECT count(*) FROM fincore.recon_matches),
                 (SELECT count(*) FROM fincore.recon_matched_lines),
                 (SELECT count(*) FROM fincore.recon_matched_entries),
                 (SELECT count(*) FROM fincore.recon_runs),
                 (SELECT count(*) FROM fincore.transfers),
                 (SELECT count(*) FROM fincore.outbox_events)] $$;
CREATE TEMP TABLE rows_before AS SELECT pg_temp.counts() AS c;
CREATE FUNCTION pg_temp.rows() RETURNS text LANGUAGE sql AS $$
    SELECT format('sources=%s rules=%s imports=%s lines=%s staged=%s matches=%s ml=%s me=%s runs=%s transfers=%s events=%s', n[1] - b.c[1], n[2] - b.c[2], n[3] - b.c[3], n[4] - b.c[4], n[5] - b.c[5], n[6] - b.c[6], n[7] - b.c[7], n[8] - b.c[8], n[9] - b.c[9], n[10] - b.c[10], n[11] - b.c[11])
      FROM pg_temp.counts() AS n, rows_before AS b $$;
-- A transfer into (amount > 0) or out of the bank, with a reference and a value date.
CREATE FUNCTION pg_temp.entry(n int, amount bigint, ref text, vd date) RETURNS uuid LANGUAGE sql AS $$
    SELECT (fincore.transfer(CASE WHEN amount > 0 THEN pg_temp.acct(1) ELSE pg_temp.acct(2) END,
                             CASE WHEN amount > 0 THEN pg_temp.acct(2) ELSE pg_temp.acct(1) END, abs(amount),
                             id => ('ce000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
                             metadata => jsonb_build_object('reference', ref, 'value_date', vd))).id $$;
CREATE FUNCTION pg_temp.e(n int) RETURNS uuid LANGUAGE sql AS $$
    SELECT ('ce000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
CREATE FUNCTION pg_temp.l(ref text) RETURNS uuid LANGUAGE sql AS $$
    SELECT id FROM fincore.recon_lines WHERE reference = ref $$;
CREATE FUNCTION pg_temp.match_of(ref text) RETURNS fincore.recon_matches LANGUAGE sql AS $$
    SELECT m.* FROM fincore.recon_matches m JOIN fincore.recon_matched_lines x ON x.match_id = m.id
     WHERE x.line_id = pg_temp.l(ref) $$;

-- ---------------------------------------------------------------------------
-- Sources
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT fincore.recon_create_source('Bad Name', pg_temp.acct(1))$$, 'ZFC01', NULL,
    'a source name is a-z, 0-9, _ and - (ZFC01)');
SELECT throws_ok($$SELECT fincore.recon_create_source('bank', pg_temp.acct(1), ledger_side => 'left')$$, 'ZFC01', NULL,
    'the ledger side is debit or credit (ZFC01)');
SELECT throws_ok($$SELECT fincore.recon_create_source('bank', 'ca000000-0000-4000-8000-000000000099')$$, 'ZF301', NULL,
    'a source mirrors an account of the tenant (ZF301)');
SELECT throws_ok($$SELECT fincore.recon_create_source('bank', pg_temp.acct(1), '{"delimiter": ";;"}')$$, 'ZFC01',
    'invalid statement mapping: delimiter must be one character other than a quote or a newline',
    'a delimiter is one character (ZFC01)');
SELECT throws_ok($$SELECT fincore.recon_create_source('bank', pg_temp.acct(1), '{"columns": {"amont": "A"}}')$$, 'ZFC01',
    'unknown key "amont" in the mapping''s columns', 'an unknown field is refused by name (ZFC01)');
SELECT throws_ok($$SELECT fincore.recon_create_source('bank', pg_temp.acct(1), '{"date_format": "YYYY/MM/DD"}')$$, 'ZFC01',
    NULL, 'an unknown date format is refused (ZFC01)');
SELECT throws_ok($$SELECT fincore.recon_create_source('bank', pg_temp.acct(1), '{"header": false, "columns": {"amount": "Amount"}}')$$,
    'ZFC01', NULL, 'a column named without a header is refused (ZFC01)');
SELECT throws_ok($$SELECT fincore.recon_create_source('bank', pg_temp.acct(1), '{"header": false, "columns": {"amount": 1e20}}')$$,
    'ZFC01', 'invalid statement mapping: column amount: a position is 1 to 1000', 'a column position out of range (ZFC01)');
SELECT throws_ok($$SELECT fincore.recon_create_source('bank', pg_temp.acct(1), '{"decimal": ",", "delimiter": ","}')$$,
    'ZFC01', NULL, 'the decimal separator cannot be the delimiter (ZFC01)');
SELECT is(pg_temp.rows(), 'sources=0 rules=0 imports=0 lines=0 staged=0 matches=0 ml=0 me=0 runs=0 transfers=0 events=0',
    'the refused sources wrote nothing');
SELECT lives_ok($$SELECT fincore.recon_create_source('bank', pg_temp.acct(1),
    '{"columns": {"booked_on": "Date", "amount": "Amount", "reference": "Ref", "bank_ref": "BankRef", "description": "Text"}}')$$,
    'a source: the bank account, its CSV columns by header name');
SELECT lives_ok($$SELECT fincore.recon_create_source('eu', pg_temp.acct(5),
    '{"delimiter": ";", "decimal": ",", "date_format": "DD.MM.YYYY",
      "columns": {"booked_on": 1, "value_on": 2, "amount": 3, "indicator": 4, "currency": 5, "reference": 6, "description": 7},
      "header": false}')$$,
    'a source with ; and decimal commas, DD.MM.YYYY dates, an indicator column, columns by position, no header');
SELECT is((SELECT currency FROM fincore.recon_sources WHERE name = 'bank'), 'EUR', 'a source takes its account''s currency');

-- ---------------------------------------------------------------------------
-- Rules
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT fincore.recon_set_rule('nope', 'exact', 10)$$, 'ZFC02', NULL, 'a rule of an unknown source (ZFC02)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, kind => 'one_to_few')$$, 'ZFC04', NULL, 'an unknown kind (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, match_on => '{iban}')$$, 'ZFC04', NULL, 'an unknown key (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, tolerance => -1)$$, 'ZFC04', NULL, 'a negative tolerance (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, tolerance_bps => 10001)$$, 'ZFC04', NULL, 'more than 10000 bps (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, date_window => 400)$$, 'ZFC04', NULL, 'a window over 366 days (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, group_by => 'reference')$$, 'ZFC04', NULL,
    'one_to_one takes no grouping key (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, kind => 'one_to_many')$$, 'ZFC04', NULL,
    'a many-sided kind needs a grouping key (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, kind => 'one_to_many', group_by => 'reference', min_similarity => 0.5)$$,
    'ZFC04', NULL, 'similarity is for one_to_one rules (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, outcome => 'maybe')$$, 'ZFC04', NULL, 'an unknown outcome (ZFC04)');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'x', 10, adjustment_account => pg_temp.acct(4))$$, 'ZF103', NULL,
    'an adjustment account in another currency (ZF103)');
SELECT lives_ok($$SELECT fincore.recon_set_rule('bank', 'exact', 10, match_on => '{reference}')$$, 'rule exact');
SELECT throws_ok($$SELECT fincore.recon_set_rule('bank', 'other', 10)$$, 'ZFC04', NULL, 'two rules of a source at one priority (ZFC04)');
SELECT lives_ok($$SELECT fincore.recon_set_rule('bank', 'near', 20, match_on => '{reference}', tolerance => 5,
                                                 outcome => 'suggested', adjustment_account => pg_temp.acct(3))$$, 'rule near');
SELECT lives_ok($$SELECT fincore.recon_set_rule('bank', 'late', 25, match_on => '{reference}', date_window => 3)$$, 'rule late');
SELECT lives_ok($$SELECT fincore.recon_set_rule('bank', 'fuzzy', 30, min_similarity => 0.5, date_window => 3)$$, 'rule fuzzy');
SELECT lives_ok($$SELECT fincore.recon_set_rule('bank', 'split', 40, kind => 'one_to_many', group_by => 'reference')$$, 'rule split');
SELECT lives_ok($$SELECT fincore.recon_set_rule('bank', 'merge', 50, kind => 'many_to_one', group_by => 'reference')$$, 'rule merge');
SELECT lives_ok($$SELECT fincore.recon_set_rule('bank', 'batch', 60, kind => 'many_to_many', group_by => 'reference')$$, 'rule batch');
SELECT is((SELECT count(*)::int FROM fincore.recon_rules), 7, 'seven rules, the refused ones not among them');
SELECT lives_ok($$SELECT fincore.recon_set_rule('bank', 'spare', 90)$$, 'a spare rule');
SELECT is(fincore.recon_drop_rule('bank', 'spare'), true, 'recon_drop_rule drops a rule');
SELECT is(fincore.recon_drop_rule('bank', 'spare'), false, '... and says false when there is none of that name');
SELECT throws_ok($$SELECT fincore.recon_drop_rule('nope', 'exact')$$, 'ZFC02', NULL, 'a rule of an unknown source (ZFC02)');
SELECT is((SELECT count(*)::int FROM fincore.recon_rules), 7, 'the seven rules remain');

-- ---------------------------------------------------------------------------
-- Import: CSV
-- ---------------------------------------------------------------------------
SELECT is((fincore.recon_import('bank', 'csv', $csv$Date,Amount,Ref,BankRef,Text
2026-11-02,100.00,INV-1,B01,"Invoice 1, paid"
2026-11-02,25.03,INV-2,B02,
2026-11-03,40,INV-3,B03,"a ""quoted"" word"
2026-11-04,50.00,PAY-7,B04,payout
2026-11-05,35.00,DEP-9,B05,
2026-11-05,25.00,DEP-9,B06,
2026-11-06,-12.00,FEE-1,B07,
2026-11-06,-8.00,FEE-1,B08,
2026-11-07,77.77,INVOICE 4711 ACME GmbH,B09,
2026-01-01,1.00,NOPE,B10,
2026-11-08,10.02,INV-5,B11,
$csv$)).lines::int, 11, 'a CSV statement of 11 lines is imported');
SELECT results_eq($$SELECT reference, amount, booked_on::text, description FROM fincore.recon_lines
                    WHERE reference IN ('INV-1', 'INV-3', 'FEE-1') ORDER BY reference, amount$$,
    $$VALUES ('FEE-1', -1200::bigint, '2026-11-06', NULL::text), ('FEE-1', -800, '2026-11-06', NULL),
             ('INV-1', 10000, '2026-11-02', 'Invoice 1, paid'), ('INV-3', 4000, '2026-11-03', 'a "quoted" word')$$,
    'amounts in minor units (credit positive), quoted fields, doubled quotes');
SELECT is((fincore.recon_import('bank', 'csv', $csv$Date,Amount,Ref,BankRef,Text
2026-11-02,100.00,INV-1,B01,"Invoice 1, paid"
2026-11-02,25.03,INV-2,B02,
$csv$)).stored::int, 0, 'the same lines imported again are not stored again');
SELECT is((fincore.recon_import('bank', 'csv', E'Date,Amount,Ref,BankRef,Text\n2026-11-02,999.00,changed,B01,\n')).stored::int, 0,
    'a line with a bank reference already stored is not stored again');
SELECT is((SELECT count(*)::int FROM fincore.recon_lines), 11, 'still 11 lines');

-- two identical lines without a bank reference are two lines; the same statement again is still two
SELECT is((fincore.recon_import('eu', 'csv', E'01.11.2026;;5,00;C;EUR;COFFEE;\n01.11.2026;;5,00;C;EUR;COFFEE;\n')).stored::int, 2,
    'two identical lines of one statement are two lines');
SELECT is((fincore.recon_import('eu', 'csv', E'01.11.2026;;5,00;C;EUR;COFFEE;\n01.11.2026;;5,00;C;EUR;COFFEE;\n')).stored::int, 0,
    '... and the statement imported again adds none');
SELECT is((fincore.recon_import('eu', 'csv', E'02.11.2026;03.11.2026;1234,5;D;EUR;"A;B";"say ""hi"""\n')).stored::int, 1,
    'a debit with a value date, a quoted delimiter');
SELECT results_eq($$SELECT amount, booked_on::text, value_on::text, reference, description FROM fincore.recon_lines WHERE reference = 'A;B'$$,
    $$VALUES (-123450::bigint, '2026-11-02', '2026-11-03', 'A;B', 'say "hi"')$$,
    'decimal comma, DD.MM.YYYY, indicator D: -1234,50 EUR is -123450');

SELECT pg_temp.rows() AS before_bad \gset
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', E'Date,Amount,Ref,BankRef,Text\n2026-11-01,1.00,A,Z1,\n2026-11-01,1.234,A,Z2,\n')$$,
    'ZFC03', 'line 3: amount "1.234" has more decimal places than its currency allows (EUR)',
    'more decimals than the currency has: refused with the line number (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', E'Date,Amount,Ref,BankRef,Text\n2026-02-30,1.00,A,Z1,\n')$$,
    'ZFC03', 'line 2: booked_on "2026-02-30" is not a date in the form YYYY-MM-DD', 'a date that does not exist (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', E'Date,Amount,Ref,BankRef,Text\n2026-11-01,12a,A,Z1,\n')$$,
    'ZFC03', 'line 2: amount "12a" is not a decimal number (EUR)', 'an amount that is not a number (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', E'Date,Amount,Ref,BankRef,Text\n2026-11-01,0.00,A,Z1,\n')$$,
    'ZFC03', 'line 2: the amount is zero', 'a zero amount (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', E'Date,Amount,Ref,BankRef,Text\n2026-11-01,99999999999999999999,A,Z1,\n')$$,
    'ZFC03', 'line 2: amount "99999999999999999999" is out of range (EUR)', 'an amount beyond 64 bits (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', E'Date,Amount,Ref,BankRef,Text\n2026-11-01,,A,Z1,\n')$$,
    'ZFC03', 'line 2: no amount', 'no amount (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', E'Date,Amount,Ref,BankRef,Text\n2026-11-01,1.00,"A,Z1\n')$$,
    'ZFC03', 'line 2: a quoted field is not closed', 'an unclosed quote (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', E'Date,Amt,Ref,BankRef,Text\n2026-11-01,1.00,A,Z1,\n')$$,
    'ZFC03', 'line 1: the header has no column "Amount" (for amount)', 'a header without a mapped column (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'csv', E'01.11.2026;;5,00;X;EUR;R;\n')$$,
    'ZFC03', 'line 1: indicator "X" is neither a credit nor a debit indicator', 'an unknown indicator (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'csv', E'01.11.2026;;5,00;C;ABC;R;\n')$$,
    'ZFC03', 'line 1: unknown currency "ABC"', 'an unknown currency (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'csv', E'01.11.2026;;5,00\n')$$,
    'ZFC03', 'line 1: 3 fields, and currency is field 5', 'a line with too few fields (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'xlsx', 'x')$$, 'ZFC01', NULL, 'an unknown format (ZFC01)');
SELECT throws_ok($$SELECT fincore.recon_import('nope', 'csv', 'x')$$, 'ZFC02', NULL, 'an unknown source (ZFC02)');
SELECT is(pg_temp.rows(), :'before_bad', 'the refused imports stored nothing');

-- ---------------------------------------------------------------------------
-- Import: camt.053, JSON, staging
-- ---------------------------------------------------------------------------
SELECT is((fincore.recon_import('eu', 'camt053', $xml$<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
 <BkToCstmrStmt>
  <GrpHdr><MsgId>STMT-1</MsgId><CreDtTm>2026-11-10T08:00:00</CreDtTm></GrpHdr>
  <Stmt>
   <Id>S1</Id>
   <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
   <Ntry>
    <Amt Ccy="EUR">1500.25</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
    <BookgDt><Dt>2026-11-09</Dt></BookgDt><ValDt><Dt>2026-11-10</Dt></ValDt>
    <AcctSvcrRef>ASR-001</AcctSvcrRef>
    <NtryDtls><TxDtls>
     <Refs><EndToEndId>E2E-77</EndToEndId></Refs>
     <RltdPties><Dbtr><Nm>ACME</Nm></Dbtr><DbtrAcct><Id><IBAN>FR7630006000011234567890189</IBAN></Id></DbtrAcct></RltdPties>
     <RmtInf><Ustrd>Invoice 77</Ustrd></RmtInf>
    </TxDtls></NtryDtls>
   </Ntry>
   <Ntry>
    <Amt Ccy="JPY">300</Amt><CdtDbtInd>DBIT</CdtDbtInd>
    <BookgDt><DtTm>2026-11-09T14:30:00+01:00</DtTm></BookgDt>
    <AcctSvcrRef>ASR-002</AcctSvcrRef>
   </Ntry>
  </Stmt>
 </BkToCstmrStmt>
</Document>$xml$)).stored::int, 2, 'a camt.053 statement (version 08) is imported');
SELECT results_eq($$SELECT amount, currency, booked_on::text, value_on::text, reference, bank_ref COLLATE "default", external_id, account, description
                      FROM fincore.recon_lines WHERE bank_ref LIKE 'ASR-%' ORDER BY bank_ref$$,
    $$VALUES (150025::bigint, 'EUR', '2026-11-09', '2026-11-10', 'E2E-77', 'ASR-001', 'E2E-77', 'FR7630006000011234567890189', 'Invoice 77'),
             (-300, 'JPY', '2026-11-09', NULL, NULL, 'ASR-002', NULL, NULL, NULL)$$,
    'camt.053: amount by currency exponent (JPY has none), CRDT/DBIT, booking and value dates, references, IBAN, remittance');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'camt053', '<Document><oops>')$$, 'ZFC03',
    'the camt.053 statement is not a well-formed XML document', 'malformed XML (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'camt053', '<Document><Other/></Document>')$$, 'ZFC03', NULL,
    'XML that is not a camt.053 statement (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'camt053', $x$<Document><BkToCstmrStmt><Stmt><Ntry><Amt Ccy="EUR">1.001</Amt><CdtDbtInd>CRDT</CdtDbtInd><BookgDt><Dt>2026-11-01</Dt></BookgDt></Ntry></Stmt></BkToCstmrStmt></Document>$x$)$$,
    'ZFC03', 'line 1: amount "1.001" has more decimal places than its currency allows (EUR)',
    'a camt.053 entry with too many decimals, by its entry number (ZFC03)');
SELECT is((fincore.recon_import('eu', 'json', '[{"booked_on": "01.11.2026", "amount": 12.5, "currency": "EUR", "indicator": "C", "reference": "J1"},
                                               {"booked_on": "02.11.2026", "amount": "3", "currency": "EUR", "indicator": "D", "reference": "J2"}]')).stored::int,
    2, 'a JSON statement (an array of lines) is imported');
SELECT results_eq($$SELECT amount FROM fincore.recon_lines WHERE reference IN ('J1', 'J2') ORDER BY reference$$,
    $$VALUES (1250::bigint), (-300)$$, 'JSON numbers and strings are parsed exactly');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'json', '{"amount": 1}')$$, 'ZFC03', NULL, 'JSON that is not an array (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'json', '[{"booked_on": "01.11.2026", "amont": 1}]')$$, 'ZFC03',
    'line 1: unknown field amont', 'a JSON line with an unknown field (ZFC03)');
SELECT throws_ok($$SELECT fincore.recon_import('eu', 'json', '[1, 2')$$, 'ZFC03', NULL, 'malformed JSON (ZFC03)');
SELECT is((SELECT count(*)::int FROM fincore.recon_staging), 0, 'camt.053 and JSON imports leave nothing staged');

-- staging, as an app role: COPY-friendly rows, then an import of the batch
SET LOCAL ROLE authenticated;
INSERT INTO fincore.recon_staging (source, batch, line_no, booked_on, amount, indicator, currency, reference)
VALUES ('eu', 'day-1', 1, '05.11.2026', '7,50', 'C', 'EUR', 'S1'), ('eu', 'day-1', 2, '05.11.2026', '2,50', 'D', 'EUR', 'S2');
SELECT throws_ok($$INSERT INTO fincore.recon_staging (tenant_id, source, line_no, amount)
                   VALUES ('c0000000-0000-4000-8000-00000000000b', 'eu', 1, '1')$$, '42501', NULL,
    'an app role stages lines of its own tenant only (RLS)');
SELECT is((fincore.recon_import('eu', 'staging', 'day-1')).stored::int, 2, 'an app role imports a staged batch');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM fincore.recon_staging), 0, 'the imported batch is no longer staged');
SELECT results_eq($$SELECT amount FROM fincore.recon_lines WHERE reference IN ('S1', 'S2') ORDER BY reference$$,
    $$VALUES (750::bigint), (-250)$$, 'staged lines are parsed by the source''s mapping');

-- ---------------------------------------------------------------------------
-- Runs
-- ---------------------------------------------------------------------------
SELECT pg_temp.entry(1, 10000, 'INV-1', '2026-11-02');
SELECT pg_temp.entry(2, 2500, 'INV-2', '2026-11-02');
SELECT pg_temp.entry(3, 4000, 'INV-3', '2026-11-01');
SELECT pg_temp.entry(4, 3000, 'PAY-7', '2026-11-04');
SELECT pg_temp.entry(5, 2000, 'PAY-7', '2026-11-04');
SELECT pg_temp.entry(6, 6000, 'DEP-9', '2026-11-05');
SELECT pg_temp.entry(7, -1500, 'FEE-1', '2026-11-06');
SELECT pg_temp.entry(8, -500, 'FEE-1', '2026-11-06');
SELECT pg_temp.entry(9, 7777, 'Invoice 4711 ACME', '2026-11-07');
SELECT pg_temp.entry(10, 999, 'X-9', '2026-11-07');
SELECT pg_temp.entry(11, 1000, 'INV-5', '2026-11-08');
-- a hold is not on a statement yet: not an entry
SELECT fincore.transfer(pg_temp.acct(1), pg_temp.acct(2), 4000, pending => true, metadata => '{"reference": "INV-3"}');

SELECT throws_ok($$SELECT fincore.recon_run('bank')$$, 'ZFC09', NULL,
    'a rule comparing references needs pg_trgm (ZFC09), and says how to install it');
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SELECT pg_temp.rows() AS before_dry \gset
SELECT results_eq($$SELECT matched, suggested, lines_unmatched, entries_unmatched, breaks FROM fincore.recon_run('bank', dry_run => true)$$,
    $$VALUES (6::bigint, 2::bigint, 1::bigint, 1::bigint, 1::bigint)$$, 'a dry run counts 6 matches, 2 suggestions, 1 line and 1 entry left, 1 break');
SELECT is(pg_temp.rows(), :'before_dry', 'a dry run writes nothing');
SELECT results_eq($$SELECT matched, suggested, adjustments, lines_unmatched, entries_unmatched, breaks FROM fincore.recon_run('bank')$$,
    $$VALUES (6::bigint, 2::bigint, 0::bigint, 1::bigint, 1::bigint, 1::bigint)$$, 'the run makes what the dry run counted');
SELECT results_eq($$SELECT m.rule, m.kind, m.status, m.line_total, m.entry_total, cardinality(m.line_ids), cardinality(m.entry_ids)
                      FROM fincore.recon_matches m ORDER BY m.rule, m.line_total$$,
    $$VALUES ('batch', 'many_to_many', 'confirmed', -2000::bigint, -2000::bigint, 2, 2),
             ('exact', 'one_to_one', 'confirmed', 10000, 10000, 1, 1),
             ('fuzzy', 'one_to_one', 'confirmed', 7777, 7777, 1, 1),
             ('late', 'one_to_one', 'confirmed', 4000, 4000, 1, 1),
             ('merge', 'many_to_one', 'confirmed', 6000, 6000, 2, 1),
             ('near', 'one_to_one', 'suggested', 1002, 1000, 1, 1),
             ('near', 'one_to_one', 'suggested', 2503, 2500, 1, 1),
             ('split', 'one_to_many', 'confirmed', 5000, 5000, 1, 2)$$,
    'every kind matched as its rule says: exact keys, tolerance, date window, similarity, one-to-many, many-to-one, many-to-many');
SELECT is((pg_temp.match_of('INV-1')).entry_ids, ARRAY[pg_temp.e(1)], 'the exact match pairs INV-1 with its entry');
SELECT is((SELECT count(*)::int FROM fincore.recon_matched_entries WHERE transfer_id IN (SELECT id FROM fincore.transfers WHERE kind = 'pending')), 0,
    'a hold is not matched');
SELECT is((SELECT count(*)::int FROM fincore.outbox_events WHERE type = 'recon.break'
             AND payload->>'line_id' = pg_temp.l('NOPE')::text), 1, 'the old unmatched line is reported as a break');
SELECT is((SELECT count(*)::int FROM fincore.outbox_events WHERE type = 'recon.run_completed'), 1, 'the run is an event');
SELECT results_eq($$SELECT matched, suggested, breaks FROM fincore.recon_run('bank')$$, $$VALUES (0::bigint, 0::bigint, 0::bigint)$$,
    'a second run matches nothing new and reports no break twice');
SELECT is((SELECT report->'unmatched'->'EUR' FROM fincore.recon_runs ORDER BY started_at DESC LIMIT 1),
    '{"lines": 1, "entries": 1, "line_amount": 100, "entry_amount": 999}'::jsonb, 'the unmatched amounts per currency and side');
SELECT is_empty($$SELECT * FROM fincore.verify()$$, 'verify() is clean');

-- ---------------------------------------------------------------------------
-- Decisions
-- ---------------------------------------------------------------------------
SELECT pg_temp.rows() AS before_refusals \gset
SELECT throws_ok($$SELECT fincore.recon_confirm('ca000000-0000-4000-8000-00000000dead')$$, 'ZFC05', NULL, 'an unknown match (ZFC05)');
SELECT throws_ok($$SELECT fincore.recon_reject((pg_temp.match_of('INV-1')).id)$$, 'ZFC06', NULL, 'a confirmed match cannot be rejected (ZFC06)');
SELECT throws_ok($$SELECT fincore.recon_match(ARRAY[pg_temp.l('INV-1')], ARRAY[pg_temp.e(10)])$$, 'ZFC07', NULL,
    'a line already matched cannot be matched again (ZFC07)');
SELECT throws_ok($$SELECT fincore.recon_match(ARRAY[pg_temp.l('NOPE')], ARRAY[pg_temp.e(1)])$$, 'ZFC07', NULL,
    'an entry already matched cannot be matched again (ZFC07)');
SELECT throws_ok($$SELECT fincore.recon_match(ARRAY[]::uuid[], ARRAY[pg_temp.e(10)])$$, 'ZFC08', NULL, 'a match without lines (ZFC08)');
SELECT throws_ok($$SELECT fincore.recon_match(ARRAY[pg_temp.l('NOPE')], ARRAY['ca000000-0000-4000-8000-000000000001'::uuid])$$, 'ZFC08', NULL,
    'an entry that is not a transfer on the source''s account (ZFC08)');
SELECT throws_ok($$SELECT fincore.recon_match(ARRAY[pg_temp.l('NOPE'), pg_temp.l('A;B')], ARRAY[pg_temp.e(10)])$$, 'ZFC08', NULL,
    'lines of two sources (ZFC08)');
SELECT is(pg_temp.rows(), :'before_refusals', 'the refused decisions wrote nothing');

-- confirm the suggestion for INV-2: the 3 cents' difference is posted to the adjustment account
SELECT is((fincore.recon_confirm((pg_temp.match_of('INV-2')).id)).status, 'confirmed', 'a suggestion is confirmed');
SELECT is((SELECT t.amount FROM fincore.transfers t WHERE t.id = (pg_temp.match_of('INV-2')).adjustment_id
             AND t.debit_account_id = pg_temp.acct(1) AND t.credit_account_id = pg_temp.acct(3)), 3::bigint,
    'the difference (statement 25.03, ledger 25.00) is posted: 3 into the bank from the adjustment account');
SELECT is((SELECT count(*)::int FROM fincore.recon_matched_entries WHERE transfer_id = (pg_temp.match_of('INV-2')).adjustment_id), 1,
    'the adjustment is an entry of its match, not left unmatched');
SELECT is((fincore.recon_confirm((pg_temp.match_of('INV-2')).id)).status, 'confirmed', 'confirming twice is confirming once');
SELECT is((SELECT count(*)::int FROM fincore.transfers WHERE metadata->>'recon_match' IS NOT NULL), 1, '... with one adjustment');
-- reject the suggestion for INV-5: not proposed again
SELECT is((fincore.recon_reject((pg_temp.match_of('INV-5')).id, 'a different payment')).status, 'rejected', 'a suggestion is rejected');
SELECT is((pg_temp.match_of('INV-5')).id, NULL, 'its line is unmatched again');
SELECT throws_ok($$SELECT fincore.recon_confirm((SELECT id FROM fincore.recon_matches WHERE status = 'rejected'))$$, 'ZFC06', NULL,
    'a rejected match cannot be confirmed (ZFC06)');
SELECT results_eq($$SELECT matched, suggested FROM fincore.recon_run('bank')$$, $$VALUES (0::bigint, 0::bigint)$$,
    'a rejected combination is never proposed again');
-- unmatch a confirmed match: its items are free, and a run matches them again
SELECT is((fincore.recon_unmatch((pg_temp.match_of('INV-1')).id)).status, 'unmatched', 'a confirmed match is undone');
SELECT is((SELECT count(*)::int FROM fincore.recon_matched_entries WHERE transfer_id = pg_temp.e(1)), 0, 'its entry is unmatched again');
SELECT throws_ok($$SELECT fincore.recon_unmatch((SELECT id FROM fincore.recon_matches WHERE status = 'unmatched'))$$, 'ZFC06', NULL,
    'an undone match cannot be undone again (ZFC06)');
SELECT results_eq($$SELECT matched FROM fincore.recon_run('bank')$$, $$VALUES (1::bigint)$$, 'the next run matches INV-1 again');
-- a manual match of the leftovers, with their difference posted
SELECT is((fincore.recon_match(ARRAY[pg_temp.l('NOPE')], ARRAY[pg_temp.e(10)], 'matched by hand', pg_temp.acct(3))).kind,
    'one_to_one', 'a manual match');
SELECT is((SELECT t.amount FROM fincore.transfers t WHERE t.id = (pg_temp.match_of('NOPE')).adjustment_id
             AND t.debit_account_id = pg_temp.acct(3) AND t.credit_account_id = pg_temp.acct(1)), 899::bigint,
    'its difference (statement 1.00, ledger 9.99) is posted: 8.99 out of the bank');
SELECT is((fincore.recon_match(ARRAY[pg_temp.l('INV-5')], ARRAY[pg_temp.e(11)])).status, 'confirmed',
    'a rejected combination can still be matched by hand');
SELECT is_empty($$SELECT * FROM fincore.verify()$$, 'verify() is clean after the adjustments');
SELECT is((SELECT count(*)::int FROM (SELECT line_id FROM fincore.recon_matched_lines GROUP BY 1 HAVING count(*) > 1) d)
        + (SELECT count(*)::int FROM (SELECT transfer_id FROM fincore.recon_matched_entries GROUP BY 1 HAVING count(*) > 1) d), 0,
    'no line and no entry is in two matches');

-- ---------------------------------------------------------------------------
-- Balance drift
-- ---------------------------------------------------------------------------
SELECT results_eq($$SELECT ledger_balance, drift FROM fincore.recon_balance(ARRAY[pg_temp.acct(1)], 'EUR', clock_timestamp(), 30000)$$,
    $$VALUES (34380::bigint, 4380::bigint)$$, 'the bank''s posted balance now, and its drift from the bank''s figure');
SELECT results_eq($$SELECT ledger_balance FROM fincore.recon_balance(ARRAY[pg_temp.acct(1)], 'EUR', now() - interval '1 day', 0)$$,
    $$VALUES (0::bigint)$$, 'the balance at a time before the transfers');
SELECT results_eq($$SELECT ledger_balance FROM fincore.recon_balance(ARRAY[pg_temp.acct(1)], 'EUR', clock_timestamp(), 0, 'credit')$$,
    $$VALUES (-34380::bigint)$$, 'side credit: credits minus debits');
SELECT throws_ok($$SELECT fincore.recon_balance(ARRAY[pg_temp.acct(1), pg_temp.acct(4)], 'EUR', now(), 0)$$, 'ZF103', NULL,
    'accounts of another currency (ZF103)');
SELECT throws_ok($$SELECT fincore.recon_balance(ARRAY['ca000000-0000-4000-8000-000000000099'::uuid], 'EUR', now(), 0)$$, 'ZF301', NULL,
    'an unknown account (ZF301)');
SELECT throws_ok($$SELECT fincore.recon_balance(ARRAY[]::uuid[], 'EUR', now(), 0)$$, 'ZFC01', NULL, 'no accounts (ZFC01)');

-- ---------------------------------------------------------------------------
-- Tenancy and the app role
-- ---------------------------------------------------------------------------
SELECT (pg_temp.match_of('INV-1')).id AS a_match \gset
SELECT pg_temp.l('INV-1') AS a_line \gset
SELECT set_config('request.jwt.claims', '{"tenant_id":"c0000000-0000-4000-8000-00000000000b"}', true);
SET LOCAL ROLE authenticated;
SELECT is((SELECT count(*)::int FROM fincore.recon_lines) + (SELECT count(*)::int FROM fincore.recon_matches)
          + (SELECT count(*)::int FROM fincore.recon_sources), 0, 'tenant B sees none of A''s sources, lines or matches');
SELECT throws_ok($$SELECT fincore.recon_run('bank')$$, 'ZFC02', NULL, 'tenant B cannot run A''s source (ZFC02)');
SELECT throws_ok($$SELECT fincore.recon_import('bank', 'csv', 'x')$$, 'ZFC02', NULL, 'nor import into it (ZFC02)');
SELECT throws_ok(format($$SELECT fincore.recon_unmatch(%L)$$, :'a_match'), 'ZFC05', NULL, 'nor undo A''s match (ZFC05)');
SELECT throws_ok(format($$SELECT fincore.recon_match(ARRAY[%L::uuid], ARRAY[%L::uuid])$$, :'a_line', pg_temp.e(10)), 'ZFC08', NULL,
    'nor match A''s line (ZFC08)');
RESET ROLE;
SELECT set_config('request.jwt.claims', '{"tenant_id":"c0000000-0000-4000-8000-00000000000a"}', true);
SET LOCAL ROLE authenticated;
SELECT results_eq($$SELECT matched FROM fincore.recon_run('eu')$$, $$VALUES (0::bigint)$$, 'an app role runs its tenant''s source');
SELECT throws_ok($$SELECT fincore.recon_set_rule('eu', 'x', 1)$$, 'ZF803', NULL, 'only a tenant admin (or a trusted role) sets rules (ZF803)');
SELECT throws_ok($$UPDATE fincore.recon_matches SET status = 'confirmed'$$, '42501', NULL, 'an app role cannot write the matches');
SELECT throws_ok($$DELETE FROM fincore.recon_matched_lines$$, '42501', NULL, 'nor their members');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM fincore.recon_runs), 5, 'every run but the dry one is recorded');

SELECT * FROM finish();
ROLLBACK;
