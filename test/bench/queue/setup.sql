-- test/bench/queue: one tenant, and the naive queue the issue names as the baseline: one table,
-- SELECT ... FOR UPDATE SKIP LOCKED inside an UPDATE to claim, DELETE to complete.  It gets the
-- index a careful hand-written queue would have (ready jobs in claim order).
SET client_min_messages = warning;
SELECT fincore.create_tenant('bench', '00000000-0000-4000-8000-00000000b001');

CREATE TABLE public.naive_jobs (
    id          bigserial   PRIMARY KEY,
    queue       text        NOT NULL,
    payload     jsonb       NOT NULL,
    priority    smallint    NOT NULL DEFAULT 0,
    run_at      timestamptz NOT NULL DEFAULT now(),
    state       text        NOT NULL DEFAULT 'ready',
    attempts    integer     NOT NULL DEFAULT 0,
    lease_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX naive_jobs_ready_idx ON public.naive_jobs (queue, priority DESC, run_at, id) WHERE state = 'ready';

-- Fill a queue with n ready jobs, older than anything enqueued afterwards.
CREATE FUNCTION public.bench_backlog(n integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fincore.jobs (tenant_id, queue, payload, run_at)
    SELECT '00000000-0000-4000-8000-00000000b001', 'bench', '{"n": 1}', now() - interval '1 hour'
      FROM generate_series(1, n);
    INSERT INTO public.naive_jobs (queue, payload, run_at)
    SELECT 'bench', '{"n": 1}', now() - interval '1 hour' FROM generate_series(1, n);
END $$;

-- Jobs completed so far (ids handed out minus jobs still queued), per implementation.
CREATE FUNCTION public.bench_done(impl text) RETURNS bigint LANGUAGE sql AS $$
    SELECT CASE impl
        WHEN 'naive' THEN (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.naive_jobs_id_seq)
                          - (SELECT count(*) FROM public.naive_jobs)
        ELSE (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM fincore.jobs_id_seq)
             - (SELECT count(*) FROM fincore.jobs)
    END $$;

CREATE FUNCTION public.bench_reset() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE fincore.jobs, fincore.job_archive;
    TRUNCATE public.naive_jobs;
END $$;
