-- test/bench/payments: one tenant of 10,000 payer accounts and a hot settlement account; a
-- provider; two functions, one round trip each: a hold and its post (the baseline), and a
-- payment authorized and captured with the worker's outcomes reported directly.
SET client_min_messages = warning;
CREATE FUNCTION public.acct(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;

BEGIN;
SELECT fincore.create_tenant('bench payments', '00000000-0000-4000-8000-00000000b001');
SELECT fincore.set_tenant('00000000-0000-4000-8000-00000000b001');
SELECT count(fincore.create_account('USD', id => public.acct(g))) FROM generate_series(1, 10000) g;
-- The settlement account takes every payment: hot (its balance rolled up), as a real one would be.
SELECT fincore.create_account('USD', flags => '{hot}', id => public.acct(0));
SELECT fincore.set_ledger_events(false);
SELECT fincore.create_payment_provider('bench', public.acct(0));
COMMIT;

-- The baseline: a pending transfer to the settlement account, then its post.
CREATE FUNCTION public.hold_and_post(payer int) RETURNS uuid LANGUAGE sql AS $$
    SELECT (fincore.post_pending((fincore.transfer(public.acct(payer), public.acct(0), 100, pending => true)).id)).id $$;

-- A payment: created and confirmed (the hold), authorized, captured in full.
CREATE FUNCTION public.authorize_and_capture(payer int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    p fincore.payments;
    s fincore.payment_steps;
BEGIN
    p := fincore.create_payment(100, 'USD', 'bench', public.acct(payer), capture_method => 'manual', confirm => true);
    PERFORM fincore.payment_step_result(p.id, 1, 'succeeded');
    s := fincore.capture_payment(p.id);
    PERFORM fincore.payment_step_result(p.id, s.step_no, 'succeeded');
    RETURN (fincore.payment(p.id)).status;
END $$;
VACUUM ANALYZE;
