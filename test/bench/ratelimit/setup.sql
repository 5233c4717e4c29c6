-- test/bench/ratelimit: the baseline, GCRA kept in a table by PL/pgSQL (what a db-pre-request
-- hook does without fincore): one upsert per decision, with the same semantics as
-- fincore.rate_limit (a TAT in nanoseconds per key; allowed when max(TAT, now) + cost * T minus
-- T * (burst + 1) is not after now).
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
    new_tat bigint;
BEGIN
    INSERT INTO public.gcra_tats AS g (key, tat) VALUES (k, now_ns + increment)
    ON CONFLICT (key) DO UPDATE SET tat = greatest(g.tat, now_ns) + increment
     WHERE greatest(g.tat, now_ns) + increment - tolerance <= now_ns
    RETURNING g.tat INTO new_tat;
    RETURN new_tat IS NOT NULL;
END $$;

-- One statement making n decisions over 1000 keys; returns (allowed, wal bytes, ms).
CREATE FUNCTION public.decide_many(variant text, n integer)
    RETURNS TABLE (allowed bigint, wal_bytes numeric, ms numeric) LANGUAGE plpgsql AS $$
DECLARE
    lsn pg_lsn;
    t0 timestamptz;
BEGIN
    IF n > 1000 THEN
        -- A warm-up of the same kind first: a session's first catalog reads may prune a page,
        -- which writes WAL of its own, and the table's keys are inserted once.
        PERFORM public.decide_many(variant, 1000);
    END IF;
    lsn := pg_current_wal_insert_lsn();
    t0 := clock_timestamp();
    IF variant = 'fincore' THEN
        SELECT count(*) FILTER (WHERE (fincore.rate_limit('k' || (g % 1000), 1000000, '1 second', 1000)).allowed)
          INTO allowed FROM generate_series(1, n) g;
    ELSIF variant = 'table' THEN
        SELECT count(*) FILTER (WHERE public.gcra_table('k' || (g % 1000), 1000000, '1 second', 1000))
          INTO allowed FROM generate_series(1, n) g;
    ELSE        -- the statement alone: the key built, no decision
        SELECT count(*) FILTER (WHERE length('k' || (g % 1000)) > 0) INTO allowed FROM generate_series(1, n) g;
    END IF;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    wal_bytes := pg_wal_lsn_diff(pg_current_wal_insert_lsn(), lsn);
    RETURN NEXT;
END $$;
