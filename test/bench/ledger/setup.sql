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

-- create_transfers with 100 random transfers.
CREATE FUNCTION public.batch100(seed int) RETURNS SETOF record LANGUAGE sql AS $$
    SELECT index, id, result FROM fincore.create_transfers(ARRAY(
        SELECT ROW(NULL, public.acct(d), public.acct(CASE WHEN c = d THEN c % 100000 + 1 ELSE c END), 1,
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request
          FROM (SELECT 1 + (random() * 99999)::int AS d, 1 + (random() * 99999)::int AS c
                  FROM generate_series(1, 100)) r))
$$;
VACUUM ANALYZE;
