-- test/bench/tenancy: 1,000,000 rows over 100 tenants, in two tables: bench_rows has no
-- index on tenant_id (every row is filtered, so the policy's helper runs per row unless it
-- is planned once), bench_rows_idx has one (the helper becomes an index condition).
SET client_min_messages = warning;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');

CREATE FUNCTION public.bench_tenant(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
INSERT INTO fincore.tenants (id, name) SELECT public.bench_tenant(n), 'tenant ' || n FROM generate_series(0, 99) n;

CREATE TABLE public.bench_rows (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, amount bigint NOT NULL, body text NOT NULL);
INSERT INTO public.bench_rows
    SELECT g, public.bench_tenant((g % 100)::int), g % 10000, 'row ' || g FROM generate_series(1, 1000000) g;
CREATE TABLE public.bench_rows_idx (LIKE public.bench_rows INCLUDING ALL);
INSERT INTO public.bench_rows_idx SELECT * FROM public.bench_rows;
CREATE INDEX ON public.bench_rows_idx (tenant_id);
VACUUM ANALYZE public.bench_rows, public.bench_rows_idx;
ALTER TABLE public.bench_rows ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bench_rows FORCE ROW LEVEL SECURITY;
ALTER TABLE public.bench_rows_idx ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bench_rows_idx FORCE ROW LEVEL SECURITY;
GRANT SELECT ON public.bench_rows, public.bench_rows_idx TO authenticated;

-- The Supabase-style helper: a SQL function over current_setting(), as auth.uid() is written.
CREATE FUNCTION public.sql_tenant_id() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claim.tenant_id', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'tenant_id'))::uuid
$$;

-- Each variant's policy, applied by bench_policy(variant) before its runs.
CREATE FUNCTION public.bench_policy(variant text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t text;
    expr text := CASE variant
        WHEN 'fincore' THEN 'tenant_id = fincore.tenant_id()'
        WHEN 'sql_bare' THEN 'tenant_id = public.sql_tenant_id()'
        WHEN 'sql_wrapped' THEN 'tenant_id = (SELECT public.sql_tenant_id())'
        ELSE 'false' END;
BEGIN
    FOREACH t IN ARRAY ARRAY['public.bench_rows', 'public.bench_rows_idx'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS bench ON %s', t);
        EXECUTE format('CREATE POLICY bench ON %s FOR SELECT USING (%s)', t, expr);
    END LOOP;
END $$;
