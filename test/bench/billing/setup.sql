-- test/bench/billing: one tenant, 100,000 customer accounts, a hot receivable and a hot revenue
-- account (every invoice posts to both), one monthly price of 1,000, and 100,000 subscriptions
-- to it whose period (January 2026) has ended.  The subscriptions are written directly: the
-- benchmark measures their renewal, not their creation.
SET client_min_messages = warning;
CREATE FUNCTION public.acct(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;

BEGIN;
SELECT fincore.create_tenant('bench billing', '00000000-0000-4000-8000-00000000b001');
SELECT fincore.set_tenant('00000000-0000-4000-8000-00000000b001');
SELECT count(fincore.create_account('USD', id => public.acct(g))) FROM generate_series(1, 100000) g;
SELECT fincore.create_account('USD', flags => '{hot}', id => public.acct(0));         -- receivable
SELECT fincore.create_account('USD', flags => '{hot}', id => public.acct(100001));    -- revenue
SELECT fincore.set_ledger_events(false);
SELECT fincore.set_billing_accounts('USD', public.acct(0), public.acct(100001));
SELECT fincore.create_product('bench', '00000000-0000-4000-8000-0000000b0001');
SELECT fincore.create_price('00000000-0000-4000-8000-0000000b0001', 1000, 'USD', id => '00000000-0000-4000-8000-0000000b0002');
INSERT INTO fincore.subscriptions (tenant_id, id, customer_account, price_id, quantity, status, anchor,
                                   period_start, period_end, billed, billed_from, lines)
SELECT '00000000-0000-4000-8000-00000000b001', public.acct(g), public.acct(g), '00000000-0000-4000-8000-0000000b0002',
       1, 'active', '2026-01-01', '2026-01-01', '2026-02-01', 1000, '2026-01-01', 0
  FROM generate_series(1, 100000) g;
COMMIT;

-- Every subscription due again: its period back to January (between rounds).
CREATE PROCEDURE public.rewind() LANGUAGE sql AS $$
    UPDATE fincore.subscriptions SET status = 'active', period_start = '2026-01-01', period_end = '2026-02-01',
           billed_from = '2026-01-01', billed = 1000
     WHERE tenant_id = '00000000-0000-4000-8000-00000000b001' $$;

-- A worker of billing_run: batches of 100 (its default), a transaction each, until nothing is due.
CREATE PROCEDURE public.billing_worker() LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    LOOP
        n := fincore.billing_run('2026-02-01 00:00:01', 100);
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
END $$;

-- The baseline's worker: create_transfers posting `total` transfers customer -> receivable
-- (the payment leg of an invoice), 100 a call (billing_run's batch), a transaction each.
CREATE PROCEDURE public.transfers_worker(first int, total int) LANGUAGE plpgsql AS $$
DECLARE
    done integer := 0;
BEGIN
    WHILE done < total LOOP
        PERFORM count(*) FROM fincore.create_transfers(ARRAY(
            SELECT ROW(NULL, public.acct(first + done + g), public.acct(0), 1000, NULL, NULL, NULL, NULL, NULL, NULL,
                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request
              FROM generate_series(0, least(100, total - done) - 1) g));
        done := done + least(100, total - done);
        COMMIT;
    END LOOP;
END $$;
VACUUM ANALYZE;
