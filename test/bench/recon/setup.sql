-- test/bench/recon: a bank account with N ledger entries and a statement of about N lines
-- with a known ground truth (i = 1 .. N, by i % 100):
--   0-94  exact: the same reference, amount and day on both sides
--   95-96 the statement's amount is 1 to 7 minor units off           (rule near: tolerance 10)
--   97    the statement's day is 1 or 2 days later                   (rule near: window 3)
--   98    a split: one statement line, two ledger entries of one reference (rule split)
--   99    unmatched: a line with no entry, and an entry with no line
-- One line in ten is a debit (money out).  psql variable n.
SELECT fincore.create_tenant('recon bench', '00000000-0000-4000-8000-0000000ec0b1');
BEGIN;
SELECT fincore.set_tenant('00000000-0000-4000-8000-0000000ec0b1');
SELECT fincore.create_account('EUR', id => '00000000-0000-4000-8000-00000000ba01');   -- the bank account
SELECT fincore.create_account('EUR', id => '00000000-0000-4000-8000-00000000c001');   -- customers
SELECT fincore.recon_create_source('bank', '00000000-0000-4000-8000-00000000ba01',
    '{"columns": {"booked_on": "date", "amount": "amount", "reference": "reference", "bank_ref": "bank_ref"}}');
SELECT fincore.recon_set_rule('bank', 'exact', 10, match_on => '{reference}');
SELECT fincore.recon_set_rule('bank', 'near', 20, match_on => '{reference}', tolerance => 10, date_window => 3);
SELECT fincore.recon_set_rule('bank', 'split', 30, kind => 'one_to_many', group_by => 'reference', max_group => 5);
COMMIT;
-- the set-up's transfers need no audit records (the benchmark measures reconciliation)
SELECT fincore.audit_disable('fincore.transfers');

CREATE FUNCTION public.amt(i bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS
$$ SELECT (100 + (i * 7919) % 100000) * CASE WHEN i % 10 = 3 THEN -1 ELSE 1 END $$;
-- The last three days: a daily run, whose unmatched lines are not breaks yet (break_after 3 days).
CREATE FUNCTION public.day(i bigint) RETURNS date LANGUAGE sql STABLE AS
$$ SELECT current_date - (i % 3)::integer $$;
CREATE FUNCTION public.money_text(a bigint) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN a < 0 THEN '-' ELSE '' END || (abs(a) / 100)::text || '.' || lpad((abs(a) % 100)::text, 2, '0') $$;

-- The ledger: entries in batches of 5,000 (a transaction each).  A split's two entries are
-- a third and two thirds of the line; an unmatched entry has reference V<i>.
CREATE PROCEDURE public.make_ledger(n bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    lo bigint := 1;
BEGIN
    WHILE lo <= n LOOP
        PERFORM fincore._use_tenant('00000000-0000-4000-8000-0000000ec0b1');
        PERFORM fincore.create_transfers(ARRAY(
            SELECT ROW(NULL,
                       CASE WHEN e.a > 0 THEN '00000000-0000-4000-8000-00000000ba01' ELSE '00000000-0000-4000-8000-00000000c001' END::uuid,
                       CASE WHEN e.a > 0 THEN '00000000-0000-4000-8000-00000000c001' ELSE '00000000-0000-4000-8000-00000000ba01' END::uuid,
                       abs(e.a), NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                       jsonb_build_object('reference', e.ref, 'value_date', public.day(e.i)),
                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request
              FROM generate_series(lo, least(lo + 4999, n)) g(i),
                   LATERAL (SELECT g.i, 'R' || g.i AS ref, public.amt(g.i) AS a WHERE g.i % 100 < 98
                            UNION ALL SELECT g.i, 'S' || g.i, public.amt(g.i) / 3 WHERE g.i % 100 = 98
                            UNION ALL SELECT g.i, 'S' || g.i, public.amt(g.i) - public.amt(g.i) / 3 WHERE g.i % 100 = 98
                            UNION ALL SELECT g.i, 'V' || g.i, public.amt(g.i) WHERE g.i % 100 = 99) e));
        COMMIT;
        lo := lo + 5000;
    END LOOP;
END $$;

-- The statement, as CSV.
CREATE TABLE public.statement (data text);
CREATE FUNCTION public.make_statement(n bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.statement
    SELECT 'date,amount,reference,bank_ref' || E'\n' || string_agg(
               to_char(public.day(i) + CASE WHEN i % 100 = 97 THEN 1 + (i % 2)::integer ELSE 0 END, 'YYYY-MM-DD') || ',' ||
               public.money_text(public.amt(i) + CASE WHEN i % 100 IN (95, 96) THEN 1 + i % 7 ELSE 0 END) || ',' ||
               CASE i % 100 WHEN 98 THEN 'S' WHEN 99 THEN 'U' ELSE 'R' END || i || ',B' || i, E'\n' ORDER BY i)
      FROM generate_series(1, n) i
$$;

-- A round: import the statement, then reconcile it, two transactions as a caller would make
-- them; each returns its time in ms.
CREATE FUNCTION public.import_statement() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    imp fincore.recon_imports;
BEGIN
    PERFORM fincore._use_tenant('00000000-0000-4000-8000-0000000ec0b1');
    imp := fincore.recon_import('bank', 'csv', (SELECT s.data FROM public.statement s));
    RETURN jsonb_build_object('import_ms', round(extract(epoch FROM clock_timestamp() - t0) * 1000),
                              'stored', imp.stored);
END $$;
CREATE FUNCTION public.reconcile(progress boolean) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    run fincore.recon_runs;
BEGIN
    PERFORM fincore._use_tenant('00000000-0000-4000-8000-0000000ec0b1');
    run := fincore.recon_run('bank', progress => progress);
    RETURN jsonb_build_object('run_ms', round(extract(epoch FROM clock_timestamp() - t0) * 1000),
                              'report', run.report);
END $$;

-- The same exact-key match as a plain SQL join, writing its pairs.
CREATE FUNCTION public.plain_join() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    DROP TABLE IF EXISTS public.join_pairs;
    CREATE UNLOGGED TABLE public.join_pairs AS
    SELECT l.id AS line_id, t.id AS transfer_id
      FROM fincore.recon_lines l
      JOIN fincore.transfers t
        ON t.tenant_id = l.tenant_id AND t.metadata->>'reference' = l.reference
       AND CASE WHEN t.debit_account_id = '00000000-0000-4000-8000-00000000ba01' THEN t.amount ELSE -t.amount END = l.amount
       AND (t.metadata->>'value_date')::date = l.booked_on
     WHERE l.tenant_id = '00000000-0000-4000-8000-0000000ec0b1' AND l.source = 'bank'
       AND (t.debit_account_id = '00000000-0000-4000-8000-00000000ba01' OR t.credit_account_id = '00000000-0000-4000-8000-00000000ba01')
       AND t.kind IN ('posted', 'post', 'reversal');
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE PROCEDURE public.reset()
    LANGUAGE sql AS $$
    TRUNCATE fincore.recon_lines, fincore.recon_imports, fincore.recon_matches, fincore.recon_matched_lines,
             fincore.recon_matched_entries, fincore.recon_runs, fincore.outbox_events;
$$;
