-- ---------------------------------------------------------------------------
-- Metrics (docs/operations.md): fincore.metrics() in Prometheus' text exposition
-- format, for an exporter (postgres_exporter's custom queries, or a sidecar that
-- serves the text as it is).  An operator's view across tenants: trusted roles
-- only.  Each family has its HELP and TYPE lines even when it has no sample.
-- ---------------------------------------------------------------------------

-- A Prometheus label value: backslash, double quote and newline escaped.
CREATE FUNCTION fincore._metric_label(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(value, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n');
END;
COMMENT ON FUNCTION fincore._metric_label(text) IS
    'Internal: a text escaped as a Prometheus label value (backslash, double quote, newline).';

CREATE FUNCTION fincore.metrics() RETURNS text
    LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    samples text[] := '{}';     -- 'family<TAB>labels<TAB>value'
    r record;
    out text := '';
    family record;
    limiter boolean := true;
    at timestamptz := pg_catalog.clock_timestamp();     -- ages from now, not the transaction's start
BEGIN
    -- Queues: every tenant's (fincore.queue_stats as the owner, who is not an app role).
    FOR r IN SELECT q.queue, q.ready, q.scheduled, q.running, q.dead, q.oldest_ready_age, q.paused
               FROM fincore.queue_stats('1 hour') q ORDER BY q.queue LOOP
        samples := samples OPERATOR(pg_catalog.||) ARRAY[
            pg_catalog.format(E'fincore_queue_jobs\tqueue="%s",state="ready"\t%s', fincore._metric_label(r.queue), r.ready),
            pg_catalog.format(E'fincore_queue_jobs\tqueue="%s",state="scheduled"\t%s', fincore._metric_label(r.queue), r.scheduled),
            pg_catalog.format(E'fincore_queue_jobs\tqueue="%s",state="running"\t%s', fincore._metric_label(r.queue), r.running),
            pg_catalog.format(E'fincore_queue_dead_jobs\tqueue="%s"\t%s', fincore._metric_label(r.queue), r.dead),
            pg_catalog.format(E'fincore_queue_oldest_ready_seconds\tqueue="%s"\t%s', fincore._metric_label(r.queue),
                              coalesce(EXTRACT(epoch FROM r.oldest_ready_age), 0)),
            pg_catalog.format(E'fincore_queue_paused\tqueue="%s"\t%s', fincore._metric_label(r.queue),
                              CASE WHEN r.paused THEN 1 ELSE 0 END)];
    END LOOP;
    -- Outbox consumers.
    FOR r IN SELECT c.consumer, c.pending, c.lag, c.retrying, c.dead FROM fincore.consumer_lag() c ORDER BY c.consumer LOOP
        samples := samples OPERATOR(pg_catalog.||) ARRAY[
            pg_catalog.format(E'fincore_consumer_pending_events\tconsumer="%s"\t%s', fincore._metric_label(r.consumer), r.pending),
            pg_catalog.format(E'fincore_consumer_lag_seconds\tconsumer="%s"\t%s', fincore._metric_label(r.consumer),
                              coalesce(EXTRACT(epoch FROM r.lag), 0)),
            pg_catalog.format(E'fincore_consumer_retrying_events\tconsumer="%s"\t%s', fincore._metric_label(r.consumer), r.retrying),
            pg_catalog.format(E'fincore_consumer_dead_events\tconsumer="%s"\t%s', fincore._metric_label(r.consumer), r.dead)];
    END LOOP;
    -- Holds: how many, the oldest, and those past their expiry that maintenance has not expired.
    SELECT pg_catalog.count(*) AS n,
           coalesce(EXTRACT(epoch FROM at OPERATOR(pg_catalog.-) pg_catalog.min(t.created_at)), 0) AS oldest,
           pg_catalog.count(*) FILTER (WHERE h.expires_at OPERATOR(pg_catalog.<) at) AS overdue
      INTO r
      FROM fincore.pending_holds h
      JOIN fincore.transfers t ON t.tenant_id OPERATOR(pg_catalog.=) h.tenant_id AND t.id OPERATOR(pg_catalog.=) h.transfer_id;
    samples := samples OPERATOR(pg_catalog.||) ARRAY[
        pg_catalog.format(E'fincore_pending_holds\t\t%s', r.n),
        pg_catalog.format(E'fincore_pending_holds_oldest_seconds\t\t%s', r.oldest),
        pg_catalog.format(E'fincore_pending_holds_overdue\t\t%s', r.overdue)];
    -- Maintenance steps.
    FOR r IN SELECT m.step, s.last_run_at, s.failures
               FROM fincore.maintenance_steps m
               LEFT JOIN fincore.maintenance_status s ON s.step OPERATOR(pg_catalog.=) m.step
              ORDER BY m.position LOOP
        samples := samples OPERATOR(pg_catalog.||) ARRAY[
            pg_catalog.format(E'fincore_maintenance_step_failures\tstep="%s"\t%s', fincore._metric_label(r.step),
                              coalesce(r.failures, 0)),
            pg_catalog.format(E'fincore_maintenance_step_last_run_seconds\tstep="%s"\t%s', fincore._metric_label(r.step),
                              coalesce(CAST(EXTRACT(epoch FROM at OPERATOR(pg_catalog.-) r.last_run_at) AS pg_catalog.text), 'NaN'))];
    END LOOP;
    -- The rate limiter, when fincore is preloaded.
    BEGIN
        SELECT l.* INTO r FROM fincore.rate_limit_stats() l;
    EXCEPTION WHEN SQLSTATE 'ZF751' THEN
        limiter := false;
    END;
    IF limiter THEN
        samples := samples OPERATOR(pg_catalog.||) ARRAY[
            pg_catalog.format(E'fincore_rate_limit_slots\tstate="total"\t%s', r.slots),
            pg_catalog.format(E'fincore_rate_limit_slots\tstate="used"\t%s', r.used),
            pg_catalog.format(E'fincore_rate_limit_slots\tstate="live"\t%s', r.live),
            pg_catalog.format(E'fincore_rate_limit_in_flight\t\t%s', r.in_flight),
            pg_catalog.format(E'fincore_rate_limit_full_events_total\t\t%s', r.full_events)];
    END IF;

    FOR family IN SELECT f.name, f.kind, f.help FROM (VALUES
            (1, 'fincore_queue_jobs', 'gauge', 'Unfinished jobs by queue and state (ready, scheduled, running), every tenant.'),
            (2, 'fincore_queue_dead_jobs', 'gauge', 'Dead jobs of the queue (out of attempts), waiting for retry() or retention.'),
            (3, 'fincore_queue_oldest_ready_seconds', 'gauge', 'Age of the queue''s oldest ready job: how long work has waited for a worker.'),
            (4, 'fincore_queue_paused', 'gauge', '1 if the queue is paused for some tenant.'),
            (5, 'fincore_consumer_pending_events', 'gauge', 'Committed outbox events the consumer has not acknowledged.'),
            (6, 'fincore_consumer_lag_seconds', 'gauge', 'Age of the consumer''s oldest unacknowledged event.'),
            (7, 'fincore_consumer_retrying_events', 'gauge', 'Events the consumer nacked that wait for a retry.'),
            (8, 'fincore_consumer_dead_events', 'gauge', 'The consumer''s dead letters (replay_dead delivers them again).'),
            (9, 'fincore_pending_holds', 'gauge', 'Holds (pending transfers) not yet posted, voided or expired.'),
            (10, 'fincore_pending_holds_oldest_seconds', 'gauge', 'Age of the oldest hold.'),
            (11, 'fincore_pending_holds_overdue', 'gauge', 'Holds past their expiry that maintenance has not expired yet.'),
            (12, 'fincore_maintenance_step_failures', 'gauge', 'Consecutive failed runs of the maintenance step (0 after a success).'),
            (13, 'fincore_maintenance_step_last_run_seconds', 'gauge', 'Seconds since the maintenance step last ran (NaN: never).'),
            (14, 'fincore_rate_limit_slots', 'gauge', 'The rate limiter''s slots: total, used (holding a key), live (not idle). Only with fincore preloaded.'),
            (15, 'fincore_rate_limit_in_flight', 'gauge', 'In-flight (concurrency) slots taken.'),
            (16, 'fincore_rate_limit_full_events_total', 'counter', 'Arrivals that found the rate limiter''s table full since the server started.'))
            AS f(pos, name, kind, help) ORDER BY f.pos LOOP
        IF family.name OPERATOR(pg_catalog.~~) 'fincore_rate_limit%' AND NOT limiter THEN
            CONTINUE;
        END IF;
        out := out OPERATOR(pg_catalog.||) pg_catalog.format(E'# HELP %s %s\n# TYPE %s %s\n',
                                                             family.name, family.help, family.name, family.kind);
        FOR r IN SELECT pg_catalog.split_part(x, E'\t', 2) AS labels, pg_catalog.split_part(x, E'\t', 3) AS value
                   FROM pg_catalog.unnest(samples) WITH ORDINALITY AS u(x, i)
                  WHERE pg_catalog.split_part(x, E'\t', 1) OPERATOR(pg_catalog.=) family.name
                  ORDER BY u.i LOOP
            out := out OPERATOR(pg_catalog.||) family.name
                   OPERATOR(pg_catalog.||) CASE WHEN r.labels OPERATOR(pg_catalog.=) '' THEN ''
                                                ELSE '{' OPERATOR(pg_catalog.||) r.labels OPERATOR(pg_catalog.||) '}' END
                   OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) r.value OPERATOR(pg_catalog.||) E'\n';
        END LOOP;
    END LOOP;
    RETURN out;
END
$fn$;
COMMENT ON FUNCTION fincore.metrics() IS
    'fincore''s health in Prometheus text exposition format, across tenants: queue depth, dead jobs and the oldest ready job per queue; consumer lag; holds, the oldest and the overdue; maintenance step failures and last runs; the rate limiter''s slots when fincore is preloaded. For trusted roles (docs/operations.md).';

INSERT INTO fincore.function_audience (fn, audience) VALUES ('fincore.metrics()', 'trusted');
