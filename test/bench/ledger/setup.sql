-- test/bench/ledger: 100,000 fincore accounts (and one hot account) and the same number
-- of rows for the baseline, a minimal PL/pgSQL transfer: two UPDATEs in id order and one
-- INSERT, no checks.
SET client_min_messages = warning;
CREATE FUNCTION public.acct(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
SELECT fincore.create_tenant('bench', '00000000-0000-4000-8000-00000000b001');
BEGIN;
SELECT fincore.set_tenant('00000000-0000-4000-8000-00000000b001');
SELECT count(fincore.create_account('USD', id => public.acct(g))) FROM generate_series(1, 100000) g;
SELECT fincore.create_account('USD', id => public.acct(0), flags => '{hot}');
COMMIT;

CREATE TABLE public.base_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL DEFAULT 0) WITH (fillfactor = 80);
CREATE TABLE public.base_transfers (id bigserial PRIMARY KEY, debit bigint NOT NULL, credit bigint NOT NULL,
                                    amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO public.base_accounts SELECT g FROM generate_series(1, 100000) g;
CREATE FUNCTION public.base_transfer(d bigint, c bigint, amt bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    tid bigint;
BEGIN
    IF d < c THEN
        UPDATE public.base_accounts SET balance = balance - amt WHERE id = d;
        UPDATE public.base_accounts SET balance = balance + amt WHERE id = c;
    ELSE
        UPDATE public.base_accounts SET balance = balance + amt WHERE id = c;
        UPDATE public.base_accounts SET balance = balance - amt WHERE id = d;
    END IF;
    INSERT INTO public.base_transfers (debit, credit, amount) VALUES (d, c, amt) RETURNING id INTO tid;
    RETURN tid;
END $$;

-- The same-storage baseline: fincore's writes and checks in plain PL/pgSQL, on copies of
-- fincore's tables (the same columns and indexes): both accounts locked in id order and read,
-- found, the same currency, active, the limit flags, the totals, then the transfer row (ON
-- CONFLICT on its id) and both accounts' counters.  What fincore.transfer does for a posted
-- transfer between two plain accounts, without events.
CREATE TABLE public.s_accounts (LIKE fincore.accounts INCLUDING ALL) WITH (fillfactor = 80);
CREATE TABLE public.s_transfers (LIKE fincore.transfers INCLUDING ALL);
INSERT INTO public.s_accounts SELECT * FROM fincore.accounts;
CREATE FUNCTION public.same_transfer(d uuid, c uuid, amt bigint) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    tenant uuid := '00000000-0000-4000-8000-00000000b001';
    tid    uuid := gen_random_uuid();
    a      record;
    da     record;
    ca     record;
    n      int := 0;
BEGIN
    IF amt < 0 THEN RAISE EXCEPTION 'amount must not be negative' USING ERRCODE = 'ZF303'; END IF;
    IF d = c THEN RAISE EXCEPTION 'same account' USING ERRCODE = 'ZF302'; END IF;
    FOR a IN SELECT x.id, x.currency, x.flags, x.status, x.credit_limit, x.debits_pending, x.debits_posted,
                    x.credits_pending, x.credits_posted
               FROM public.s_accounts x WHERE x.id = ANY (ARRAY[d, c]) AND x.tenant_id = tenant
              ORDER BY x.id FOR NO KEY UPDATE LOOP
        IF a.id = d THEN da := a; ELSE ca := a; END IF;
        n := n + 1;
    END LOOP;
    IF da.id IS NULL THEN RAISE EXCEPTION 'debit account not found' USING ERRCODE = 'ZF301'; END IF;
    IF ca.id IS NULL THEN RAISE EXCEPTION 'credit account not found' USING ERRCODE = 'ZF301'; END IF;
    IF da.currency <> ca.currency THEN RAISE EXCEPTION 'currency mismatch' USING ERRCODE = 'ZF103'; END IF;
    IF da.status <> 'active' OR ca.status <> 'active' THEN RAISE EXCEPTION 'not active' USING ERRCODE = 'ZF306'; END IF;
    -- Totals (int8 arithmetic raises on overflow) and the limits.
    IF da.debits_posted + amt + da.debits_pending < 0 OR ca.credits_posted + amt + ca.credits_pending < 0
       OR ca.credits_posted + amt + coalesce(ca.credit_limit, 0) < 0 THEN
        RAISE EXCEPTION 'overflow' USING ERRCODE = 'ZF319';
    END IF;
    IF da.flags & 1 <> 0 AND da.debits_pending + da.debits_posted + amt > da.credits_posted + coalesce(da.credit_limit, 0) THEN
        RAISE EXCEPTION 'exceeds credits' USING ERRCODE = 'ZF304';
    END IF;
    IF ca.flags & 2 <> 0 AND ca.credits_pending + ca.credits_posted + amt > ca.debits_posted + coalesce(ca.credit_limit, 0) THEN
        RAISE EXCEPTION 'exceeds debits' USING ERRCODE = 'ZF305';
    END IF;
    INSERT INTO public.s_transfers (id, tenant_id, debit_account_id, credit_account_id, amount, pending_amount, currency,
                                    code, kind, created_at, flags)
    VALUES (tid, tenant, d, c, amt, 0, da.currency, 0, 'posted', clock_timestamp(), 0)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN RAISE EXCEPTION 'exists' USING ERRCODE = 'ZF317'; END IF;
    UPDATE public.s_accounts x SET debits_posted = x.debits_posted + amt WHERE x.id = d;
    UPDATE public.s_accounts x SET credits_posted = x.credits_posted + amt WHERE x.id = c;
    RETURN tid;
END $$;

-- create_transfers with n random transfers.
CREATE FUNCTION public.batch(n int) RETURNS SETOF record LANGUAGE sql AS $$
    SELECT index, id, result FROM fincore.create_transfers(ARRAY(
        SELECT ROW(NULL, public.acct(d), public.acct(CASE WHEN c = d THEN c % 100000 + 1 ELSE c END), 1,
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request
          FROM (SELECT 1 + (random() * 99999)::int AS d, 1 + (random() * 99999)::int AS c
                  FROM generate_series(1, n)) r))
$$;

-- create_transfers with 100 random transfers.
CREATE FUNCTION public.batch100(seed int) RETURNS SETOF record LANGUAGE sql AS $$
    SELECT index, id, result FROM fincore.create_transfers(ARRAY(
        SELECT ROW(NULL, public.acct(d), public.acct(CASE WHEN c = d THEN c % 100000 + 1 ELSE c END), 1,
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request
          FROM (SELECT 1 + (random() * 99999)::int AS d, 1 + (random() * 99999)::int AS c
                  FROM generate_series(1, 100)) r))
$$;
VACUUM ANALYZE;
