-- pgTAP: fincore.metrics() (docs/operations.md) - Prometheus text exposition of queues,
-- consumers, holds, maintenance and the rate limiter; maintenance_status kept by maintenance().
BEGIN;
SET search_path = fincore, public;
SELECT plan(17);

SELECT fincore.create_tenant('Metrics', 'dddddddd-7000-4000-8000-000000000001');
SELECT fincore.set_tenant('dddddddd-7000-4000-8000-000000000001');
SELECT fincore.enqueue('metrics-q', '{}') FROM generate_series(1, 3);
SELECT fincore.create_account('USD', id => 'dddddddd-7000-4000-8000-0000000000a1');
SELECT fincore.create_account('USD', id => 'dddddddd-7000-4000-8000-0000000000a2');
SELECT fincore.transfer('dddddddd-7000-4000-8000-0000000000a1', 'dddddddd-7000-4000-8000-0000000000a2', 5,
                        pending => true, timeout => '1 hour');
SELECT fincore.set_tenant(NULL);
CREATE TEMP TABLE m AS SELECT fincore.metrics() AS text;

SELECT ok((SELECT text FROM m) ~ E'^# HELP fincore_queue_jobs [^\n]+\n# TYPE fincore_queue_jobs gauge\n',
    'the text starts with a family''s HELP and TYPE lines');
SELECT ok((SELECT text FROM m) LIKE E'%\nfincore_queue_jobs{queue="metrics-q",state="ready"} 3\n%',
    'three ready jobs of the queue');
SELECT ok((SELECT text FROM m) ~ E'\nfincore_queue_oldest_ready_seconds\\{queue="metrics-q"\\} [0-9.]+\n',
    'the age of its oldest ready job');
SELECT is(fincore._metric_label(E'a\\b"c\nd'), E'a\\\\b\\"c\\nd', 'label values escape backslash, double quote and newline');
SELECT ok((SELECT text FROM m) ~ E'\nfincore_pending_holds [1-9][0-9]*\n', 'the pending holds, the new one among them');
SELECT ok((SELECT text FROM m) ~ E'\nfincore_pending_holds_overdue 0\n', 'none overdue');
SELECT ok((SELECT text FROM m) ~ E'\n# TYPE fincore_rate_limit_full_events_total counter\n',
    'the rate limiter''s families (fincore is preloaded here), the full events as a counter');
SELECT is((SELECT count(*) FROM regexp_split_to_table((SELECT text FROM m), E'\n') l
            WHERE l <> '' AND l !~ '^# (HELP|TYPE) fincore_[a-z_]+ ' AND l !~ '^fincore_[a-z_]+(\{[^}]*\})? (-?[0-9.]+|NaN)$'),
    0::bigint, 'every line is a HELP, TYPE or sample line of the exposition format');
SELECT ok((SELECT text FROM m) ~ E'\n$', 'the text ends with a newline');

-- Maintenance: a failing step is counted and its error kept; a success resets the count.
CREATE FUNCTION pg_temp.metrics_failing_step(budget interval) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tap.fail_step', true) = 'on' THEN
        RAISE EXCEPTION 'the step broke' USING ERRCODE = 'P0001';
    END IF;
    RETURN 7;
END $$;
INSERT INTO fincore.maintenance_steps (step, fn, position, description)
VALUES ('tap_metrics_step', 'pg_temp.metrics_failing_step(interval)', 99999, 'a pgTAP step');
SET LOCAL tap.fail_step = 'on';
SET LOCAL client_min_messages = error;
SELECT is((SELECT error FROM fincore.maintenance('1 second') WHERE step = 'tap_metrics_step'),
    'P0001: the step broke', 'maintenance() reports the failing step');
SELECT fincore.maintenance('1 second');
SELECT is((SELECT failures || ' ' || last_error FROM fincore.maintenance_status WHERE step = 'tap_metrics_step'),
    '2 P0001: the step broke', 'maintenance_status: two consecutive failures and the error');
SELECT ok(fincore.metrics() LIKE E'%\nfincore_maintenance_step_failures{step="tap_metrics_step"} 2\n%',
    'metrics reports them');
SET LOCAL tap.fail_step = 'off';
SELECT fincore.maintenance('1 second');
SELECT is((SELECT failures || ' ' || last_done || ' ' || last_error FROM fincore.maintenance_status WHERE step = 'tap_metrics_step'),
    '0 7 P0001: the step broke', 'a success resets the count and keeps the latest error');
SELECT ok(fincore.metrics() ~ E'\nfincore_maintenance_step_last_run_seconds\\{step="tap_metrics_step"\\} [0-9.]+\n',
    'and the seconds since the step last ran');

-- Who may read it.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');
GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
SET LOCAL ROLE authenticated;
SELECT throws_ok($$SELECT fincore.metrics()$$, '42501', NULL, 'an app role may not read the metrics');
SELECT is((SELECT count(*) FROM fincore.maintenance_status), 0::bigint, 'nor the maintenance status (its errors name any tenant)');
RESET ROLE;
SELECT ok(has_function_privilege('authenticated', 'fincore.metrics()', 'EXECUTE') IS FALSE
          AND NOT has_function_privilege('public', 'fincore.metrics()', 'EXECUTE'), 'metrics() is for trusted roles');

SELECT * FROM finish();
ROLLBACK;
