-- test/bench/ratelimit: the baseline, GCRA kept in a table by PL/pgSQL (what a db-pre-request
-- hook does without fincore): one UPDATE per decision, with the same semantics as
-- fincore.rate_limit (a TAT in nanoseconds per key; allowed when max(TAT, now) + cost * T minus
-- T * (burst + 1) is not after now).  The keys' rows exist beforehand (public.gcra_keys).
CREATE TABLE public.gcra_tats (
    key text PRIMARY KEY,
    tat bigint NOT NULL
);

CREATE FUNCTION public.gcra_table(k text, rate integer, per interval, burst integer, cost integer DEFAULT 1)
    RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    now_ns bigint := (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint;
    t bigint := (extract(epoch FROM per) * 1000000000)::bigint / rate;
    tolerance bigint := t * (burst + 1);
    increment bigint := t * cost;
BEGIN
    UPDATE public.gcra_tats g SET tat = greatest(g.tat, now_ns) + increment
     WHERE g.key = k AND greatest(g.tat, now_ns) + increment - tolerance <= now_ns;
    RETURN FOUND;
END $$;

-- The rows of the keys the benchmark decides: k0 ... k<keys - 1>, and user:1 ... user:10000.
CREATE FUNCTION public.gcra_keys(keys integer) RETURNS void LANGUAGE sql AS $$
    TRUNCATE public.gcra_tats;
    INSERT INTO public.gcra_tats SELECT 'k' || g, 0 FROM generate_series(0, keys - 1) g;
    INSERT INTO public.gcra_tats SELECT 'user:' || g, 0 FROM generate_series(1, 10000) g;
$$;

-- One statement making n decisions over `keys` keys; returns (allowed, wal bytes, ms).
CREATE FUNCTION public.decide_many(variant text, n integer, keys integer)
    RETURNS TABLE (allowed bigint, wal_bytes numeric, ms numeric) LANGUAGE plpgsql AS $$
DECLARE
    lsn pg_lsn;
    t0 timestamptz;
BEGIN
    IF n > 1000 THEN
        -- A warm-up of the same kind first: a session's first catalog reads may prune a page,
        -- which writes WAL of its own.
        PERFORM public.decide_many(variant, 1000, keys);
    END IF;
    lsn := pg_current_wal_insert_lsn();
    t0 := clock_timestamp();
    IF variant = 'fincore' THEN
        SELECT count(*) FILTER (WHERE (fincore.rate_limit('k' || (g % keys), 1000000, '1 second', 1000)).allowed)
          INTO allowed FROM generate_series(1, n) g;
    ELSIF variant = 'table' THEN
        SELECT count(*) FILTER (WHERE public.gcra_table('k' || (g % keys), 1000000, '1 second', 1000))
          INTO allowed FROM generate_series(1, n) g;
    ELSE        -- the statement alone: the key built, no decision
        SELECT count(*) FILTER (WHERE length('k' || (g % keys)) > 0) INTO allowed FROM generate_series(1, n) g;
    END IF;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    wal_bytes := pg_wal_lsn_diff(pg_current_wal_insert_lsn(), lsn);
    RETURN NEXT;
END $$;
