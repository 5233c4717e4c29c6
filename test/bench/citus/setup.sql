-- test/bench/citus: 8 tenants of 1,000 accounts each, the same on one node and on Citus.
-- Run on the coordinator after fincore.distribute() (or on the single node as it is).
SET client_min_messages = warning;
CREATE FUNCTION public.bench_tenant(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ('00000000-0000-4000-8000-0000000b' || lpad(n::text, 4, '0'))::uuid $$;
CREATE FUNCTION public.bench_acct(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
SELECT count(fincore.create_tenant('bench ' || t, public.bench_tenant(t))) FROM generate_series(1, 8) t;
BEGIN;
DO $$
BEGIN
    FOR t IN 1 .. 8 LOOP
        PERFORM fincore.set_tenant(public.bench_tenant(t));
        PERFORM fincore.create_account('USD', id => public.bench_acct(a)) FROM generate_series(1, 1000) a;
        PERFORM fincore.set_ledger_events(false);
    END LOOP;
END $$;
COMMIT;
