-- pgTAP: the job queue.  Every function, every ZF6xx SQLSTATE, ordering, unique keys,
-- backoff bounds, leases, pause/resume, dead jobs, retention, the storage properties the
-- design relies on (HOT claims), and tenant isolation as the roles an application uses.
-- Time stands still inside the test's transaction (now() is its start), so an expired
-- lease is made by moving lease_until into the past, as the table's owner.
BEGIN;
SET search_path = fincore, public;
SELECT plan(211);

GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;
-- Scan every queue from its start: the order is then exact (see fincore.dequeue_rescan_interval).
SET LOCAL fincore.dequeue_rescan_interval = 0;

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
CREATE ROLE tap_queue_worker NOLOGIN;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.grant_app_role('tap_queue_worker', trusted => true);
SELECT fincore.create_tenant('Queue A', 'aaaaaaaa-0000-4000-8000-0000000000a1');
SELECT fincore.create_tenant('Queue B', 'bbbbbbbb-0000-4000-8000-0000000000b2');
CREATE FUNCTION pg_temp.as_tenant(t text) RETURNS void LANGUAGE sql AS $$
    SELECT fincore.set_tenant(CASE t WHEN 'A' THEN 'aaaaaaaa-0000-4000-8000-0000000000a1'::uuid
                                     WHEN 'B' THEN 'bbbbbbbb-0000-4000-8000-0000000000b2'::uuid END) $$;
CREATE FUNCTION pg_temp.claims_of(t text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE t WHEN 'A' THEN '{"sub":"aaaaaaaa-1111-4000-8000-0000000000a1","role":"authenticated","tenant_id":"aaaaaaaa-0000-4000-8000-0000000000a1"}'
                  WHEN 'B' THEN '{"sub":"bbbbbbbb-1111-4000-8000-0000000000b2","role":"authenticated","tenant_id":"bbbbbbbb-0000-4000-8000-0000000000b2"}'
           END $$;
-- Make a running job's lease run out (time does not pass inside the test).
CREATE FUNCTION pg_temp.expire(job bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE fincore.jobs SET lease_until = now() - interval '1 second' WHERE id = job $$;
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
GRANT SELECT ON ids TO PUBLIC;

-- ---------------------------------------------------------------------------
-- The catalogue.
-- ---------------------------------------------------------------------------
SELECT has_table('fincore', 'jobs', 'table fincore.jobs exists');
SELECT has_table('fincore', 'job_archive', 'table fincore.job_archive exists');
SELECT has_table('fincore', 'paused_queues', 'table fincore.paused_queues exists');
SELECT has_type('fincore', 'job', 'type fincore.job exists');
SELECT has_function('fincore', 'enqueue', ARRAY['text', 'jsonb', 'timestamp with time zone', 'smallint', 'integer', 'text']);
SELECT has_function('fincore', 'enqueue_many', ARRAY['text', 'jsonb[]', 'timestamp with time zone', 'smallint', 'integer', 'text[]']);
SELECT has_function('fincore', 'dequeue', ARRAY['text', 'integer', 'interval', 'text']);
SELECT has_function('fincore', 'complete', ARRAY['bigint', 'jsonb', 'integer']);
SELECT has_function('fincore', 'complete_many', ARRAY['bigint[]', 'integer[]', 'jsonb[]']);
SELECT has_function('fincore', 'complete_and_dequeue', ARRAY['bigint', 'text', 'jsonb', 'integer', 'integer', 'interval', 'text']);
SELECT has_function('fincore', 'fail', ARRAY['bigint', 'text', 'timestamp with time zone', 'integer']);
SELECT has_function('fincore', 'heartbeat', ARRAY['bigint', 'interval', 'integer']);
SELECT has_function('fincore', 'cancel', ARRAY['bigint']);
SELECT has_function('fincore', 'retry', ARRAY['bigint']);
SELECT has_function('fincore', 'pause_queue', ARRAY['text']);
SELECT has_function('fincore', 'resume_queue', ARRAY['text']);
SELECT has_function('fincore', 'queue_stats', ARRAY['interval']);
SELECT has_function('fincore', 'rescue_expired', ARRAY['interval']);
SELECT has_function('fincore', 'job_backoff', ARRAY['integer']);
SELECT has_function('fincore', 'job_retention', ARRAY['interval']);
SELECT has_function('fincore', 'schedule_maintenance', ARRAY['text']);
SELECT has_function('fincore', 'unschedule_maintenance', ARRAY[]::name[]);
SELECT is((SELECT pg_get_function_result('fincore.enqueue(text,jsonb,timestamptz,smallint,integer,text)'::regprocedure)),
    'bigint', 'enqueue returns bigint (the Outbox calls it through SPI)');
SELECT is((SELECT pg_get_function_arguments('fincore.enqueue(text,jsonb,timestamptz,smallint,integer,text)'::regprocedure)),
    'queue text, payload jsonb, run_at timestamp with time zone DEFAULT now(), priority smallint DEFAULT 0, max_attempts integer DEFAULT 25, unique_key text DEFAULT NULL::text',
    'enqueue keeps exactly the signature the Outbox relies on');
SELECT ok((SELECT 'fillfactor=50' = ANY (reloptions) FROM pg_class WHERE oid = 'fincore.jobs'::regclass),
    'the hot table leaves half of each page for HOT updates');
SELECT is_empty($$SELECT i.indexrelid::regclass::text FROM pg_index i
                   WHERE i.indrelid = 'fincore.jobs'::regclass
                     AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = 'fincore.jobs'::regclass
                                  AND a.attname IN ('state', 'attempts', 'lease_until', 'worker', 'errors')
                                  AND (a.attnum = ANY (i.indkey)
                                       OR pg_get_expr(i.indexprs, i.indrelid) ~ ('\m' || a.attname || '\M')
                                       OR pg_get_expr(i.indpred, i.indrelid) ~ ('\m' || a.attname || '\M')))$$,
    'no index of the hot table mentions a column a claim, heartbeat or rescue changes');
SELECT results_eq($$SELECT c.relname::text COLLATE "default" FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
                     WHERE h.inhparent = 'fincore.job_archive'::regclass ORDER BY 1$$,
    ARRAY['job_archive_0', 'job_archive_1', 'job_archive_2', 'job_archive_3', 'job_archive_4',
          'job_archive_5', 'job_archive_6', 'job_archive_7', 'job_archive_dead'],
    'the archive is a ring of 8 daily slots and a partition of dead jobs');
SELECT results_eq($$SELECT step, fn FROM fincore.maintenance_steps WHERE step LIKE 'queue%' ORDER BY position$$,
    $$VALUES ('queue_rescue_expired'::text, 'fincore.rescue_expired(interval)'::text),
             ('queue_retention', 'fincore.job_retention(interval)')$$,
    'the queue registers its maintenance steps');
SELECT ok(NOT has_function_privilege('authenticated', 'fincore.rescue_expired(interval)', 'EXECUTE'),
    'app roles may not rescue every tenant''s leases');
SELECT ok(has_function_privilege('tap_queue_worker', 'fincore.rescue_expired(interval)', 'EXECUTE'),
    'trusted roles may');
SELECT ok(has_function_privilege('authenticated', 'fincore.dequeue(text,integer,interval,text)', 'EXECUTE'),
    'app roles may dequeue their tenant''s jobs');
SELECT ok(NOT has_function_privilege('authenticated', 'fincore.schedule_maintenance(text)', 'EXECUTE'),
    'app roles may not schedule maintenance');

-- ---------------------------------------------------------------------------
-- enqueue, enqueue_many, unique keys.
-- ---------------------------------------------------------------------------
SELECT pg_temp.as_tenant('A');
INSERT INTO ids VALUES ('low', fincore.enqueue('tap', '{"n": "low"}', priority => -1::smallint));
INSERT INTO ids VALUES ('old', fincore.enqueue('tap', '{"n": "old"}', run_at => now() - interval '1 hour'));
INSERT INTO ids VALUES ('plain', fincore.enqueue('tap', '{"n": "plain"}'));
INSERT INTO ids VALUES ('high', fincore.enqueue('tap', '{"n": "high"}', priority => 5::smallint));
INSERT INTO ids VALUES ('later', fincore.enqueue('tap', '{"n": "later"}', run_at => now() + interval '1 hour'));
SELECT results_eq($$SELECT priority, max_attempts, attempts, state, run_at = now(), scheduled, tenant_id
                      FROM fincore.jobs WHERE id = (SELECT id FROM ids WHERE name = 'plain')$$,
    $$VALUES (0::smallint, 25, 0, 'ready'::text, true, false, 'aaaaaaaa-0000-4000-8000-0000000000a1'::uuid)$$,
    'enqueue defaults: priority 0, 25 attempts, ready now, the current tenant');
SELECT is((SELECT scheduled FROM fincore.jobs WHERE id = (SELECT id FROM ids WHERE name = 'later')), true,
    'a job for later waits outside the claim index');
SELECT ok((SELECT id FROM ids WHERE name = 'high') > (SELECT id FROM ids WHERE name = 'low'), 'ids increase');
INSERT INTO ids VALUES ('u1', fincore.enqueue('tap', '{"n": "u1"}', unique_key => 'order-42'));
SELECT is(fincore.enqueue('tap', '{"n": "u1 again"}', unique_key => 'order-42'), (SELECT id FROM ids WHERE name = 'u1'),
    'a unique key returns the unfinished job that holds it');
SELECT is((SELECT payload FROM fincore.jobs WHERE id = (SELECT id FROM ids WHERE name = 'u1')), '{"n": "u1"}'::jsonb,
    'and leaves that job as it was');
SELECT isnt(fincore.enqueue('other', '{}', unique_key => 'order-42'), (SELECT id FROM ids WHERE name = 'u1'),
    'the same key in another queue is another job');
SELECT pg_temp.as_tenant('B');
SELECT isnt(fincore.enqueue('tap', '{}', unique_key => 'order-42'), (SELECT id FROM ids WHERE name = 'u1'),
    'the same key of another tenant is another job (and never reveals the first)');
SELECT pg_temp.as_tenant('A');
SELECT is((SELECT count(*) FROM fincore.enqueue_many('many', ARRAY['{"i": 1}', '{"i": 2}', '{"i": 3}']::jsonb[])), 3::bigint,
    'enqueue_many returns one id per payload');
SELECT results_eq($$SELECT (payload ->> 'i')::int FROM fincore.jobs WHERE queue = 'many' ORDER BY id$$,
    ARRAY[1, 2, 3], 'enqueue_many keeps the order of the payloads');
SELECT results_eq($$SELECT count(*) FROM fincore.enqueue_many('many', ARRAY['{"i": 4}', '{"i": 5}', '{"i": 6}']::jsonb[],
                                                          unique_keys => ARRAY['k', NULL, 'k'])$$,
    ARRAY[3::bigint], 'enqueue_many with unique keys still returns one id per payload');
SELECT is((SELECT count(DISTINCT x) FROM fincore.enqueue_many('many', ARRAY['{"i": 7}', '{"i": 8}']::jsonb[],
                                                             unique_keys => ARRAY['k', 'k']) AS x), 1::bigint,
    'payloads sharing a key share one job');
SELECT is((SELECT count(*) FROM fincore.enqueue_many('many', ARRAY[]::jsonb[])), 0::bigint, 'no payloads, no jobs');

-- ---------------------------------------------------------------------------
-- dequeue: order, max, leases, scheduled jobs.
-- ---------------------------------------------------------------------------
CREATE TEMP TABLE upd AS SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = 'fincore.jobs'::regclass;
SELECT results_eq($$SELECT payload ->> 'n', attempt, worker, lease_until = now() + interval '30 seconds'
                      FROM fincore.dequeue('tap', 3, worker => 'w1')$$,
    $$VALUES ('high'::text, 1, 'w1'::text, true), ('old', 1, 'w1', true), ('plain', 1, 'w1', true)$$,
    'dequeue: highest priority first, then the oldest run_at; leased for 30 seconds');
SELECT results_eq($$SELECT payload ->> 'n' FROM fincore.dequeue('tap', 10, '5 minutes')$$,
    ARRAY['u1', 'low'], 'then the rest; never the same job twice; never a job for later');
SELECT is_empty($$SELECT * FROM fincore.dequeue('tap')$$, 'an empty queue returns nothing');
SELECT results_eq($$SELECT state, attempts, lease_until = now() + interval '5 minutes' FROM fincore.jobs
                     WHERE id = (SELECT id FROM ids WHERE name = 'low')$$,
    $$VALUES ('running'::text, 1, true)$$, 'a claimed job is running, its attempt counted');
SELECT results_eq($$SELECT s.n_tup_upd - u.n_tup_upd, s.n_tup_hot_upd - u.n_tup_hot_upd
                      FROM pg_stat_xact_user_tables s, upd u WHERE s.relid = 'fincore.jobs'::regclass$$,
    $$VALUES (5::bigint, 5::bigint)$$, 'the five claims were HOT updates (no index touched)');
UPDATE fincore.jobs SET run_at = now() - interval '1 second' WHERE id = (SELECT id FROM ids WHERE name = 'later');
SELECT results_eq($$SELECT payload ->> 'n' FROM fincore.dequeue('tap')$$, ARRAY['later'],
    'a scheduled job is promoted and claimed once its run_at has come');
SELECT is((SELECT count(*)::int FROM fincore.dequeue('many', 1000)), 5, 'max caps the claim, here above the queue''s size');

-- ---------------------------------------------------------------------------
-- complete.
-- ---------------------------------------------------------------------------
SELECT lives_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'high'), '{"sent": true}')$$,
    'complete a running job');
SELECT results_eq($$SELECT state, result, attempts, slot = fincore.job_archive_slot(now()) FROM fincore.job_archive
                     WHERE id = (SELECT id FROM ids WHERE name = 'high')$$,
    $$VALUES ('completed'::text, '{"sent": true}'::jsonb, 1, true)$$,
    'a completed job moves to today''s archive slot with its result');
SELECT is_empty($$SELECT 1 FROM fincore.jobs WHERE id = (SELECT id FROM ids WHERE name = 'high')$$,
    'and leaves the hot table');
SELECT throws_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'high'))$$, 'ZF607', NULL,
    'ZF607: a job is completed only once');
SELECT throws_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'old'), attempt => 2)$$, 'ZF602', NULL,
    'ZF602: complete naming another attempt');
SELECT lives_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'old'), attempt => 1)$$,
    'complete naming the attempt');
SELECT throws_ok($$SELECT fincore.complete(-1)$$, 'ZF601', 'job -1 does not exist', 'ZF601: no such job');
INSERT INTO ids VALUES ('u1b', fincore.enqueue('tap', '{}', unique_key => 'order-42'));
SELECT is((SELECT id FROM ids WHERE name = 'u1b'), (SELECT id FROM ids WHERE name = 'u1'),
    'the key is still held while its job runs');
SELECT fincore.complete((SELECT id FROM ids WHERE name = 'u1'));
SELECT isnt(fincore.enqueue('tap', '{}', unique_key => 'order-42'), (SELECT id FROM ids WHERE name = 'u1'),
    'a finished job frees its unique key');
SELECT throws_ok($$SELECT fincore.complete((SELECT max(id) FROM fincore.jobs WHERE unique_key = 'order-42' AND queue = 'tap'))$$,
    'ZF602', NULL, 'ZF602: complete a job that is ready, not running');

-- complete_and_dequeue: a worker's loop in one call.
INSERT INTO ids SELECT 'l' || n, fincore.enqueue('loop', jsonb_build_object('n', n)) FROM generate_series(1, 3) n;
SELECT is((SELECT array_agg(id) FROM fincore.complete_and_dequeue(NULL, 'loop')),
    ARRAY[(SELECT id FROM ids WHERE name = 'l1')], 'complete_and_dequeue with no job claims the first');
SELECT throws_ok($$SELECT * FROM fincore.complete_and_dequeue((SELECT id FROM ids WHERE name = 'l1'), 'loop', attempt => 2)$$,
    'ZF602', NULL, 'ZF602: complete_and_dequeue with the wrong attempt');
SELECT throws_ok($$SELECT * FROM fincore.complete_and_dequeue((SELECT id FROM ids WHERE name = 'l1'), 'loop', max => 0)$$,
    'ZF605', NULL, 'ZF605: complete_and_dequeue with max 0');
SELECT results_eq($$SELECT name, state FROM fincore.jobs JOIN ids USING (id) WHERE queue = 'loop' ORDER BY name$$,
    $$VALUES ('l1', 'running'), ('l2', 'ready'), ('l3', 'ready')$$, 'a refused call completed and claimed nothing');
SELECT is((SELECT array_agg(id) FROM fincore.complete_and_dequeue((SELECT id FROM ids WHERE name = 'l1'), 'loop',
                                                                   '{"ok": true}', 1, max => 2)),
    ARRAY(SELECT id FROM ids WHERE name IN ('l2', 'l3') ORDER BY name), 'it completes the job and claims the next ones');
SELECT results_eq($$SELECT a.state, a.result FROM fincore.job_archive a JOIN ids USING (id) WHERE ids.name = 'l1'$$,
    $$VALUES ('completed'::text, '{"ok": true}'::jsonb)$$, 'the completed job is archived with its result');
SELECT is((SELECT count(*) FROM fincore.complete_and_dequeue((SELECT id FROM ids WHERE name = 'l2'), 'loop')), 0::bigint,
    'with nothing left to claim it completes and returns no job');
SELECT is((SELECT count(*) FROM fincore.jobs j JOIN ids USING (id) WHERE ids.name = 'l2'), 0::bigint,
    'and the job it completed is gone from the hot table');

-- complete_many: a batch in one statement, all or nothing.
INSERT INTO ids SELECT 'm' || n, fincore.enqueue('batch', jsonb_build_object('n', n)) FROM generate_series(1, 4) n;
SELECT * FROM fincore.dequeue('batch', 4);
SELECT throws_ok($$SELECT fincore.complete_many(ARRAY(SELECT id FROM ids WHERE name IN ('m1', 'm2') ORDER BY name), ARRAY[1, 2])$$,
    'ZF602', NULL, 'ZF602: complete_many with one attempt wrong');
SELECT throws_ok($$SELECT fincore.complete_many(ARRAY[(SELECT id FROM ids WHERE name = 'm1'), (SELECT id FROM ids WHERE name = 'm1')])$$,
    'ZF607', NULL, 'ZF607: complete_many naming a job twice');
SELECT throws_ok($$SELECT fincore.complete_many(ARRAY[(SELECT id FROM ids WHERE name = 'm1'), -5])$$,
    'ZF601', NULL, 'ZF601: complete_many naming a job that does not exist');
SELECT is((SELECT count(*) FROM fincore.jobs WHERE queue = 'batch' AND state = 'running'), 4::bigint,
    'a refused batch completed nothing');
SELECT is(fincore.complete_many(ARRAY(SELECT id FROM ids WHERE name LIKE 'm_' ORDER BY name), ARRAY[1, 1, NULL, 1],
                                ARRAY['{"r": 1}', NULL, '{"r": 3}', NULL]::jsonb[]), 4::bigint,
    'complete_many completes the batch and returns how many');
SELECT results_eq($$SELECT state, result FROM fincore.job_archive a JOIN ids USING (id) WHERE ids.name LIKE 'm_' ORDER BY ids.name$$,
    $$VALUES ('completed'::text, '{"r": 1}'::jsonb), ('completed', NULL), ('completed', '{"r": 3}'), ('completed', NULL)$$,
    'each job of the batch with its own result');
SELECT is(fincore.complete_many(ARRAY[]::bigint[]), 0::bigint, 'an empty batch completes nothing');
SELECT throws_ok($$SELECT fincore.complete_many(ARRAY[1, 2]::bigint[], ARRAY[1])$$, 'ZF605', '1 attempts for 2 job_ids',
    'ZF605: attempts not matching job_ids');
SELECT throws_ok($$SELECT fincore.complete_many(ARRAY[1]::bigint[], results => ARRAY['{}', '{}']::jsonb[])$$, 'ZF605', NULL,
    'ZF605: results not matching job_ids');
SELECT throws_ok($$SELECT fincore.complete_many(ARRAY[1, NULL]::bigint[])$$, 'ZF605', NULL, 'ZF605: a NULL job id');
SELECT throws_ok($$SELECT fincore.complete_many(ARRAY(SELECT generate_series(1, 1001)::bigint))$$, 'ZF605', NULL,
    'ZF605: more than 1000 jobs');

-- ---------------------------------------------------------------------------
-- fail: backoff, errors kept, dead after max_attempts.
-- ---------------------------------------------------------------------------
INSERT INTO ids VALUES ('f', fincore.enqueue('fail', '{}', max_attempts => 3));
SELECT * FROM fincore.dequeue('fail');
CREATE TEMP TABLE failed_at AS SELECT fincore.fail((SELECT id FROM ids WHERE name = 'f'), 'timeout') AS t;
SELECT ok((SELECT t BETWEEN now() + interval '1 second' AND now() + interval '2 seconds' FROM failed_at),
    'fail after attempt 1 retries 1 to 2 seconds later (backoff 2^1 s with jitter)');
SELECT results_eq($$SELECT state, scheduled, lease_until IS NULL, errors -> 0 ->> 'error', (errors -> 0 ->> 'attempt')::int
                      FROM fincore.jobs WHERE id = (SELECT id FROM ids WHERE name = 'f')$$,
    $$VALUES ('ready'::text, true, true, 'timeout'::text, 1)$$,
    'the failed job waits for its retry, the error kept with its attempt');
SELECT is_empty($$SELECT * FROM fincore.dequeue('fail')$$, 'a job waiting for its retry is not handed out');
UPDATE fincore.jobs SET run_at = now() WHERE id = (SELECT id FROM ids WHERE name = 'f');
SELECT is((SELECT attempt FROM fincore.dequeue('fail')), 2, 'the retry is attempt 2');
SELECT is(fincore.fail((SELECT id FROM ids WHERE name = 'f'), 'again', retry_at => now() - interval '1 minute'),
    now() - interval '1 minute', 'fail with retry_at uses it');
SELECT is((SELECT attempt FROM fincore.dequeue('fail')), 3, 'a retry_at in the past is ready at once');
SELECT is(fincore.fail((SELECT id FROM ids WHERE name = 'f'), 'third strike', attempt => 3), NULL::timestamptz,
    'the last attempt''s failure returns NULL: the job is dead');
SELECT results_eq($$SELECT state, slot, attempts, jsonb_array_length(errors),
                           ARRAY(SELECT e ->> 'error' FROM jsonb_array_elements(errors) e)
                      FROM fincore.job_archive WHERE id = (SELECT id FROM ids WHERE name = 'f')$$,
    $$VALUES ('dead'::text, -1::smallint, 3, 3, ARRAY['timeout', 'again', 'third strike'])$$,
    'a dead job keeps every attempt''s error, in order');
SELECT throws_ok($$SELECT fincore.fail((SELECT id FROM ids WHERE name = 'f'), 'x')$$, 'ZF607', NULL,
    'ZF607: fail a dead job');
SELECT throws_ok($$SELECT fincore.fail(-1, 'x')$$, 'ZF601', NULL, 'ZF601: fail a job that does not exist');

-- Backoff bounds: d = min(2^n s, 1 h); the wait lies in [d/2, d].
SELECT is_empty($$SELECT b.n FROM (SELECT n, fincore.job_backoff(n) AS wait
                                     FROM generate_series(1, 16) n, generate_series(1, 300)) b
                   GROUP BY b.n
                   HAVING min(b.wait) < make_interval(secs => least(2 ^ b.n, 3600) / 2)
                       OR max(b.wait) > make_interval(secs => least(2 ^ b.n, 3600))$$,
    'job_backoff(n) lies within [d/2, d], d = min(2^n seconds, 1 hour), for n = 1..16');
SELECT ok((SELECT max(fincore.job_backoff(2)) - min(fincore.job_backoff(2)) > interval '0.5 seconds' FROM generate_series(1, 300)),
    'job_backoff is jittered');
SELECT is((SELECT max(fincore.job_backoff(1000)) FROM generate_series(1, 100)) <= interval '1 hour', true,
    'the backoff is capped at an hour however many attempts failed');

-- ---------------------------------------------------------------------------
-- retry of a dead job.
-- ---------------------------------------------------------------------------
SELECT lives_ok($$SELECT fincore.retry_job((SELECT id FROM ids WHERE name = 'f'))$$, 'retry a dead job');
SELECT results_eq($$SELECT state, attempts, scheduled, jsonb_array_length(errors), errors -> -1 ? 'retried_at'
                      FROM fincore.jobs WHERE id = (SELECT id FROM ids WHERE name = 'f')$$,
    $$VALUES ('ready'::text, 0, false, 4, true)$$,
    'a retried job is ready now with fresh attempts; its history is kept and marked');
SELECT is_empty($$SELECT 1 FROM fincore.job_archive WHERE id = (SELECT id FROM ids WHERE name = 'f')$$,
    'and it has left the dead partition');
SELECT throws_ok($$SELECT fincore.retry_job((SELECT id FROM ids WHERE name = 'f'))$$, 'ZF603', NULL,
    'ZF603: retry a job that is ready');
SELECT throws_ok($$SELECT fincore.retry_job((SELECT id FROM ids WHERE name = 'high'))$$, 'ZF603', NULL,
    'ZF603: retry a completed job');
SELECT throws_ok($$SELECT fincore.retry(-1)$$, 'ZF601', NULL, 'ZF601: retry a job that does not exist (0.1.0''s name, the deprecated alias)');
-- A dead unique job cannot come back while a new job holds its key.
INSERT INTO ids VALUES ('ud', fincore.enqueue('uq', '{}', max_attempts => 1, unique_key => 'once'));
SELECT * FROM fincore.dequeue('uq');
SELECT fincore.fail((SELECT id FROM ids WHERE name = 'ud'), 'boom');
INSERT INTO ids VALUES ('ud2', fincore.enqueue('uq', '{}', unique_key => 'once'));
SELECT throws_ok($$SELECT fincore.retry_job((SELECT id FROM ids WHERE name = 'ud'))$$, 'ZF606', NULL,
    'ZF606: retry a dead job whose unique key an unfinished job now holds');
SELECT is((SELECT state FROM fincore.job_archive WHERE id = (SELECT id FROM ids WHERE name = 'ud')), 'dead',
    'the refused retry left the dead job where it was');

-- ---------------------------------------------------------------------------
-- heartbeat and leases.
-- ---------------------------------------------------------------------------
INSERT INTO ids VALUES ('h', fincore.enqueue('hb', '{}', max_attempts => 2));
SELECT * FROM fincore.dequeue('hb', lease => '10 seconds');
SELECT is(fincore.heartbeat((SELECT id FROM ids WHERE name = 'h'), '2 minutes'), now() + interval '2 minutes',
    'heartbeat extends the lease and returns its new end');
SELECT is(fincore.heartbeat((SELECT id FROM ids WHERE name = 'h'), attempt => 1), now() + interval '30 seconds',
    'heartbeat naming the attempt, default extension');
SELECT throws_ok($$SELECT fincore.heartbeat((SELECT id FROM ids WHERE name = 'h'), attempt => 7)$$, 'ZF602', NULL,
    'ZF602: heartbeat naming another attempt');
SELECT pg_temp.expire((SELECT id FROM ids WHERE name = 'h'));
SELECT results_eq($$SELECT attempt, errors -> 0 ->> 'error', (errors -> 0 ->> 'attempt')::int FROM fincore.dequeue('hb')$$,
    $$VALUES (2, 'lease expired'::text, 1)$$,
    'dequeue reclaims a job whose lease expired: attempt 2, the expiry recorded as attempt 1''s error');
SELECT throws_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'h'), attempt => 1)$$, 'ZF602',
    NULL, 'ZF602: the first worker cannot complete a job whose lease passed to attempt 2');
SELECT throws_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'h'))$$, 'ZF602', NULL,
    'ZF602: after an expiry, complete must name the attempt');
SELECT throws_ok($$SELECT fincore.heartbeat((SELECT id FROM ids WHERE name = 'h'))$$, 'ZF602', NULL,
    'ZF602: so must heartbeat');
SELECT throws_ok($$SELECT fincore.fail((SELECT id FROM ids WHERE name = 'h'), 'x', attempt => 1)$$, 'ZF602', NULL,
    'ZF602: and fail');
SELECT pg_temp.expire((SELECT id FROM ids WHERE name = 'h'));
SELECT is_empty($$SELECT * FROM fincore.dequeue('hb')$$,
    'an expired lease on the last attempt is not claimed again');
SELECT results_eq($$SELECT state, attempts, jsonb_array_length(errors) FROM fincore.job_archive
                     WHERE id = (SELECT id FROM ids WHERE name = 'h')$$,
    $$VALUES ('dead'::text, 2, 2)$$, 'it is dead, both expiries recorded');
-- rescue_expired does the same for queues nobody is dequeuing from.
INSERT INTO ids VALUES ('r1', fincore.enqueue('rescue', '{}'));
INSERT INTO ids VALUES ('r2', fincore.enqueue('rescue', '{}', max_attempts => 1));
SELECT * FROM fincore.dequeue('rescue', 2);
SELECT pg_temp.expire(id) FROM ids WHERE name IN ('r1', 'r2');
SELECT is(fincore.rescue_expired(), 2::bigint, 'rescue_expired handles both expired leases');
SELECT results_eq($$SELECT state, attempts, errors -> 0 ->> 'error' FROM fincore.jobs
                     WHERE id = (SELECT id FROM ids WHERE name = 'r1')$$,
    $$VALUES ('ready'::text, 1, 'lease expired'::text)$$, 'a rescued job is ready with its attempt counted');
SELECT is((SELECT state FROM fincore.job_archive WHERE id = (SELECT id FROM ids WHERE name = 'r2')), 'dead',
    'an expired last attempt is dead');
SELECT throws_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'r1'), attempt => 1)$$, 'ZF602',
    NULL, 'ZF602: complete a job whose lease was rescued');
SELECT is(fincore.rescue_expired('1 second'), 0::bigint, 'nothing left to rescue');
-- A scheduled job that came due is promoted by rescue_expired too.
INSERT INTO ids VALUES ('s', fincore.enqueue('sched', '{}', run_at => now() + interval '1 minute'));
UPDATE fincore.jobs SET run_at = now() WHERE id = (SELECT id FROM ids WHERE name = 's');
SELECT is(fincore.rescue_expired(), 1::bigint, 'rescue_expired promotes a due scheduled job');
SELECT is((SELECT scheduled FROM fincore.jobs WHERE id = (SELECT id FROM ids WHERE name = 's')), false,
    'it is in the claim index now');

-- ---------------------------------------------------------------------------
-- cancel.
-- ---------------------------------------------------------------------------
INSERT INTO ids VALUES ('c_ready', fincore.enqueue('cancel', '{}'));
INSERT INTO ids VALUES ('c_sched', fincore.enqueue('cancel', '{}', run_at => now() + interval '1 day'));
INSERT INTO ids VALUES ('c_run', fincore.enqueue('cancel', '{}', priority => 9::smallint));
SELECT * FROM fincore.dequeue('cancel');
SELECT is(fincore.cancel_job((SELECT id FROM ids WHERE name = 'c_ready')), 'ready', 'cancel a ready job');
SELECT is(fincore.cancel_job((SELECT id FROM ids WHERE name = 'c_sched')), 'scheduled', 'cancel a scheduled job');
SELECT is(fincore.cancel_job((SELECT id FROM ids WHERE name = 'c_run')), 'running', 'cancel a running job');
SELECT throws_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'c_run'))$$, 'ZF607',
    NULL, 'ZF607: its worker cannot complete it afterwards');
SELECT is(fincore.cancel_job((SELECT id FROM ids WHERE name = 'ud')), 'dead', 'cancel a dead job');
SELECT results_eq($$SELECT count(*)::int, min(state), bool_and(slot = fincore.job_archive_slot(now())) FROM fincore.job_archive
                     WHERE id IN (SELECT id FROM ids WHERE name IN ('c_ready', 'c_sched', 'c_run', 'ud'))$$,
    $$VALUES (4, 'cancelled'::text, true)$$, 'cancelled jobs are archived as cancelled');
SELECT throws_ok($$SELECT fincore.cancel_job((SELECT id FROM ids WHERE name = 'c_ready'))$$, 'ZF607', NULL,
    'ZF607: cancel a cancelled job');
SELECT throws_ok($$SELECT fincore.cancel(-1)$$, 'ZF601', NULL, 'ZF601: cancel a job that does not exist (0.1.0''s name, the deprecated alias)');

-- ---------------------------------------------------------------------------
-- pause and resume.
-- ---------------------------------------------------------------------------
INSERT INTO ids VALUES ('p', fincore.enqueue('pause', '{}'));
SELECT lives_ok($$SELECT fincore.pause_queue('pause')$$, 'pause a queue');
SELECT lives_ok($$SELECT fincore.pause_queue('pause')$$, 'pausing twice is fine');
SELECT is_empty($$SELECT * FROM fincore.dequeue('pause')$$, 'a paused queue hands out nothing');
SELECT is((SELECT paused FROM fincore.queue_stats() WHERE queue = 'pause'), true, 'queue_stats shows it paused');
SELECT pg_temp.as_tenant('B');
SELECT fincore.enqueue('pause', '{}');
SELECT is((SELECT count(*)::int FROM fincore.dequeue('pause')), 1, 'tenant A''s pause does not pause tenant B');
SELECT pg_temp.as_tenant('A');
SELECT lives_ok($$SELECT fincore.resume_queue('pause')$$, 'resume the queue');
SELECT is((SELECT id FROM fincore.dequeue('pause')), (SELECT id FROM ids WHERE name = 'p'), 'a resumed queue hands out its jobs');
SELECT lives_ok($$SELECT fincore.resume_queue('pause')$$, 'resuming twice is fine');

-- ---------------------------------------------------------------------------
-- queue_stats.
-- ---------------------------------------------------------------------------
INSERT INTO ids VALUES ('st1', fincore.enqueue('stats', '{}', run_at => now() - interval '10 minutes'));
SELECT fincore.enqueue('stats', '{}');
SELECT fincore.enqueue('stats', '{}', run_at => now() + interval '1 hour');
INSERT INTO ids VALUES ('st4', fincore.enqueue('stats', '{}', priority => 1::smallint));
INSERT INTO ids VALUES ('st5', fincore.enqueue('stats', '{}', priority => 2::smallint, max_attempts => 1));
INSERT INTO ids VALUES ('st6', fincore.enqueue('stats', '{}', priority => 3::smallint));
SELECT * FROM fincore.dequeue('stats', 3);
SELECT fincore.complete((SELECT id FROM ids WHERE name = 'st6'));
SELECT fincore.fail((SELECT id FROM ids WHERE name = 'st5'), 'nope');
SELECT results_eq($$SELECT ready, scheduled, running, dead, oldest_ready_age, completed, failed, paused
                      FROM fincore.queue_stats() WHERE queue = 'stats'$$,
    $$VALUES (2::bigint, 1::bigint, 1::bigint, 1::bigint, interval '10 minutes', 1::bigint, 1::bigint, false)$$,
    'queue_stats: ready, scheduled, running, dead, oldest ready age, completed, failed, paused');
SELECT is((SELECT count(*) FROM fincore.queue_stats() WHERE queue = 'stats'), 1::bigint, 'one row per queue');

-- ---------------------------------------------------------------------------
-- Retention: the slot reused the day after tomorrow is emptied with TRUNCATE.
-- ---------------------------------------------------------------------------
INSERT INTO fincore.job_archive (id, tenant_id, queue, state, priority, run_at, attempts, max_attempts, payload,
                                 created_at, finished_at, slot)
SELECT -g, 'aaaaaaaa-0000-4000-8000-0000000000a1', 'old', 'completed', 0, now() - interval '6 days', 1, 25, '{}',
       now() - interval '6 days', now() - interval '6 days', fincore.job_archive_slot(now() + interval '2 days')
  FROM generate_series(1, 5) g;
SELECT is(fincore.job_archive_slot(now() - interval '6 days'), fincore.job_archive_slot(now() + interval '2 days'),
    'the slot of 6 days ago is the slot of the day after tomorrow');
SELECT is(fincore.job_retention(), 5::bigint, 'job_retention empties it');
SELECT is_empty($$SELECT 1 FROM fincore.job_archive WHERE queue = 'old'$$, 'the old jobs are gone');
SELECT ok(EXISTS (SELECT 1 FROM fincore.job_archive WHERE state = 'completed'), 'today''s slot is untouched');
SELECT is(fincore.job_archive_slot('2000-01-01 00:00:00+00'), 0::smallint, 'slot of 2000-01-01 is 0');
SELECT is(fincore.job_archive_slot('1999-12-31 23:59:59+00'), 7::smallint, 'slot of the day before is 7');
SELECT results_eq($$SELECT step, error FROM fincore.maintenance() WHERE step LIKE 'queue%'$$,
    $$VALUES ('queue_rescue_expired'::text, NULL::text), ('queue_retention', NULL)$$,
    'fincore.maintenance() runs the queue''s steps without error');

-- ---------------------------------------------------------------------------
-- pg_cron scheduling (pg_cron is not installed in this database).
-- ---------------------------------------------------------------------------
SELECT results_eq($$SELECT fincore.cron_schedule_of(e) FROM unnest(ARRAY['1 minute', '5 minutes', '30 minutes', '1 hour',
                                                                          '6 hours', '1 day', '120 seconds']) e$$,
    ARRAY['* * * * *', '*/5 * * * *', '*/30 * * * *', '0 * * * *', '0 */6 * * *', '0 0 * * *', '*/2 * * * *'],
    'intervals become cron schedules');
SELECT throws_ok($$SELECT fincore.cron_schedule_of('30 seconds')$$, 'ZF609', NULL, 'ZF609: less than a minute');
SELECT throws_ok($$SELECT fincore.cron_schedule_of('7 minutes')$$, 'ZF609', NULL, 'ZF609: minutes not dividing an hour');
SELECT throws_ok($$SELECT fincore.cron_schedule_of('90 seconds')$$, 'ZF609', NULL, 'ZF609: not whole minutes');
SELECT throws_ok($$SELECT fincore.cron_schedule_of('1 month')$$, 'ZF609', NULL, 'ZF609: months');
SELECT throws_ok($$SELECT fincore.cron_schedule_of('often')$$, 'ZF609', NULL, 'ZF609: not an interval');
SELECT throws_ok($$SELECT fincore.schedule_maintenance('7 minutes')$$, 'ZF609', NULL, 'ZF609 from schedule_maintenance');
SELECT throws_ok($$SELECT fincore.schedule_maintenance()$$, 'ZF608', NULL,
    'ZF608: schedule_maintenance where pg_cron is not installed');
SELECT throws_ok($$SELECT fincore.unschedule_maintenance()$$, 'ZF608', NULL,
    'ZF608: unschedule_maintenance where pg_cron is not installed');
CREATE FUNCTION pg_temp.cron_hint() RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
    PERFORM fincore.schedule_maintenance('5 minutes');
    RETURN NULL;
EXCEPTION WHEN SQLSTATE 'ZF608' THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END $$;
SELECT matches(pg_temp.cron_hint(), CASE WHEN current_setting('cron.database_name', true) IS NULL
                                        THEN 'shared_preload_libraries'
                                        ELSE 'cron\.schedule_in_database\(.*\*/5 \* \* \* \*.*' || current_database() END,
    'ZF608''s hint says what to do: the statement to run in pg_cron''s database, or how to install it');

-- ---------------------------------------------------------------------------
-- Invalid input: ZF604, ZF605, ZF203.
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT fincore.enqueue(NULL, '{}')$$, 'ZF604', 'queue name must not be null', 'ZF604: NULL queue');
SELECT throws_ok($$SELECT fincore.enqueue('', '{}')$$, 'ZF604', NULL, 'ZF604: empty queue name');
SELECT throws_ok($$SELECT fincore.enqueue('has space', '{}')$$, 'ZF604', 'invalid queue name: "has space"', 'ZF604: a space');
SELECT throws_ok($$SELECT fincore.enqueue(repeat('q', 129), '{}')$$, 'ZF604', NULL, 'ZF604: 129 characters');
SELECT throws_ok($$SELECT fincore.enqueue('-lead', '{}')$$, 'ZF604', NULL, 'ZF604: leading punctuation');
SELECT lives_ok($$SELECT fincore.enqueue('Mail.v2:high-prio_' || repeat('q', 110), '{}')$$, 'letters, digits, _ . : - up to 128');
SELECT throws_ok($$SELECT * FROM fincore.dequeue('bad name')$$, 'ZF604', NULL, 'ZF604 from dequeue');
SELECT throws_ok($$SELECT fincore.pause_queue('bad name')$$, 'ZF604', NULL, 'ZF604 from pause_queue');
SELECT throws_ok($$SELECT fincore.enqueue('q', NULL)$$, 'ZF605', 'job payload must not be null', 'ZF605: NULL payload');
SELECT throws_ok($$SELECT fincore.enqueue('q', '{}', max_attempts => 0)$$, 'ZF605', 'invalid max_attempts: 0', 'ZF605: 0 attempts');
SELECT throws_ok($$SELECT fincore.enqueue('q', '{}', max_attempts => 1001)$$, 'ZF605', NULL, 'ZF605: 1001 attempts');
SELECT throws_ok($$SELECT fincore.enqueue('q', '{}', max_attempts => NULL)$$, 'ZF605', NULL, 'ZF605: NULL attempts');
SELECT throws_ok($$SELECT fincore.enqueue('q', '{}', priority => NULL)$$, 'ZF605', NULL, 'ZF605: NULL priority');
SELECT throws_ok($$SELECT fincore.enqueue('q', '{}', run_at => 'infinity')$$, 'ZF605', NULL, 'ZF605: infinite run_at');
SELECT throws_ok($$SELECT fincore.enqueue('q', '{}', unique_key => '')$$, 'ZF605', NULL, 'ZF605: empty unique key');
SELECT throws_ok($$SELECT fincore.enqueue('q', '{}', unique_key => repeat('k', 501))$$, 'ZF605', NULL, 'ZF605: a unique key over 500 bytes');
SELECT lives_ok($$SELECT fincore.enqueue('q', '{}', unique_key => repeat('k', 500))$$, 'a unique key of 500 bytes (an inbox message id''s maximum)');
SELECT throws_ok($$SELECT fincore.enqueue_many('q', ARRAY['{}', NULL]::jsonb[])$$, 'ZF605', 'payload 2 of 2 is null',
    'ZF605: a NULL payload in enqueue_many');
SELECT throws_ok($$SELECT fincore.enqueue_many('q', NULL)$$, 'ZF605', NULL, 'ZF605: NULL payloads');
SELECT throws_ok($$SELECT fincore.enqueue_many('q', ARRAY['{}']::jsonb[], unique_keys => ARRAY['a', 'b'])$$, 'ZF605',
    '2 unique_keys for 1 payloads', 'ZF605: unique_keys not matching payloads');
SELECT throws_ok($$SELECT fincore.enqueue_many('q', ARRAY[ARRAY['{}'::jsonb]])$$, 'ZF605', NULL, 'ZF605: two-dimensional payloads');
SELECT throws_ok($$SELECT * FROM fincore.dequeue('q', 0)$$, 'ZF605', 'invalid max: 0', 'ZF605: max 0');
SELECT throws_ok($$SELECT * FROM fincore.dequeue('q', 1001)$$, 'ZF605', NULL, 'ZF605: max 1001');
SELECT throws_ok($$SELECT * FROM fincore.dequeue('q', 1, '0 seconds')$$, 'ZF605', NULL, 'ZF605: zero lease');
SELECT throws_ok($$SELECT * FROM fincore.dequeue('q', 1, '-1 seconds')$$, 'ZF605', NULL, 'ZF605: negative lease');
SELECT throws_ok($$SELECT * FROM fincore.dequeue('q', 1, '1 month')$$, 'ZF605', NULL, 'ZF605: a lease in months');
SELECT throws_ok($$SELECT * FROM fincore.dequeue('q', 1, '25 hours')$$, 'ZF605', NULL, 'ZF605: a lease over a day');
SELECT throws_ok($$SELECT * FROM fincore.dequeue('q', 1, NULL)$$, 'ZF605', NULL, 'ZF605: NULL lease');
SELECT throws_ok($$SELECT fincore.complete(NULL)$$, 'ZF605', NULL, 'ZF605: NULL job id');
SELECT throws_ok($$SELECT fincore.complete(1, NULL, 0)$$, 'ZF605', NULL, 'ZF605: attempt 0');
SELECT throws_ok($$SELECT fincore.fail(1, NULL)$$, 'ZF605', 'error must not be null', 'ZF605: NULL error');
SELECT throws_ok($$SELECT fincore.fail(1, 'x', 'infinity')$$, 'ZF605', NULL, 'ZF605: infinite retry_at');
SELECT throws_ok($$SELECT fincore.heartbeat(1, '0 seconds')$$, 'ZF605', NULL, 'ZF605: zero extension');
SELECT throws_ok($$SELECT fincore.job_backoff(0)$$, 'ZF605', NULL, 'ZF605: backoff of attempt 0');
SELECT throws_ok($$SELECT * FROM fincore.queue_stats('-1 hour')$$, 'ZF605', NULL, 'ZF605: negative stats window');
SELECT throws_ok($$SELECT fincore.rescue_expired('0 seconds')$$, 'ZF605', NULL, 'ZF605: zero budget');
SELECT throws_ok($$SELECT fincore.job_archive_slot('infinity')$$, 'ZF605', NULL, 'ZF605: slot of infinity');
SELECT pg_temp.as_tenant(NULL);
SELECT throws_ok($$SELECT fincore.enqueue('q', '{}')$$, 'ZF203', NULL, 'ZF203: enqueue needs a tenant, even for the owner');
SELECT throws_ok($$SELECT fincore.enqueue_many('q', ARRAY['{}']::jsonb[])$$, 'ZF203', NULL, 'ZF203: so does enqueue_many');

-- ---------------------------------------------------------------------------
-- Tenancy, as the roles an application uses.
-- ---------------------------------------------------------------------------
SELECT pg_temp.as_tenant('A');
INSERT INTO ids VALUES ('ta', fincore.enqueue('iso', '{"t": "A"}'));
SELECT pg_temp.as_tenant('B');
INSERT INTO ids VALUES ('tb', fincore.enqueue('iso', '{"t": "B"}', priority => 9::smallint));
SELECT pg_temp.as_tenant(NULL);

SAVEPOINT app;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', pg_temp.claims_of('A'), true);
SELECT results_eq($$SELECT DISTINCT tenant_id FROM fincore.jobs$$, ARRAY['aaaaaaaa-0000-4000-8000-0000000000a1'::uuid],
    'an app role reads only its tenant''s jobs');
SELECT is_empty($$SELECT 1 FROM fincore.job_archive WHERE tenant_id <> 'aaaaaaaa-0000-4000-8000-0000000000a1'$$,
    'and only its tenant''s archive');
SELECT is_empty($$SELECT 1 FROM fincore.job_archive_dead WHERE tenant_id <> 'aaaaaaaa-0000-4000-8000-0000000000a1'$$,
    'even reading a partition directly');
SELECT results_eq($$SELECT payload ->> 't' FROM fincore.dequeue('iso', 10)$$, ARRAY['A'],
    'an app role claims only its tenant''s jobs (B''s has the higher priority)');
SELECT throws_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'tb'))$$, 'ZF601', NULL,
    'ZF601: another tenant''s job does not exist for it');
SELECT throws_ok($$SELECT fincore.cancel_job((SELECT id FROM ids WHERE name = 'tb'))$$, 'ZF601', NULL,
    'ZF601: nor can it cancel one');
SELECT throws_ok($$UPDATE fincore.jobs SET state = 'ready'$$, '42501', NULL, 'an app role cannot write jobs directly');
SELECT throws_ok($$INSERT INTO fincore.paused_queues (queue) VALUES ('x')$$, '42501', NULL,
    'nor pause a queue by hand');
SELECT throws_ok($$SELECT fincore.rescue_expired()$$, '42501', NULL, 'nor rescue every tenant''s leases');
SELECT lives_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'ta'), '{}', 1)$$,
    'it completes its own job');
SELECT set_config('request.jwt.claims', '', true);
SELECT throws_ok($$SELECT * FROM fincore.dequeue('iso')$$, 'ZF203', NULL, 'ZF203: an app role without a tenant');
SELECT throws_ok($$SELECT * FROM fincore.queue_stats()$$, 'ZF203', NULL, 'ZF203: queue_stats without a tenant');
RESET ROLE;
RELEASE SAVEPOINT app;

SAVEPOINT worker;
SET LOCAL ROLE tap_queue_worker;
SELECT pg_temp.as_tenant('A');
SELECT fincore.enqueue('iso', '{"t": "A2"}');
SELECT pg_temp.as_tenant(NULL);
SELECT results_eq($$SELECT payload ->> 't', tenant_id FROM fincore.dequeue('iso', 10)$$,
    $$VALUES ('B'::text, 'bbbbbbbb-0000-4000-8000-0000000000b2'::uuid), ('A2', 'aaaaaaaa-0000-4000-8000-0000000000a1')$$,
    'a trusted worker without a tenant claims every tenant''s jobs and learns each one''s tenant');
SELECT lives_ok($$SELECT fincore.complete((SELECT id FROM ids WHERE name = 'tb'), '{}', 1)$$,
    'and completes them');
SELECT lives_ok($$SELECT fincore.pause_queue('iso')$$, 'a trusted role without a tenant pauses a queue for everyone');
SELECT pg_temp.as_tenant('A');
SELECT fincore.enqueue('iso', '{}');
SELECT is_empty($$SELECT * FROM fincore.dequeue('iso')$$, 'then no tenant gets its jobs');
SELECT pg_temp.as_tenant(NULL);
SELECT lives_ok($$SELECT fincore.resume_queue('iso')$$, 'and resumes it');
SELECT is((SELECT count(*)::int FROM fincore.dequeue('iso')), 1, 'after which they flow again');
SELECT ok((SELECT count(DISTINCT queue) FROM fincore.queue_stats()) > 5, 'queue_stats covers every tenant for it');
RESET ROLE;
RELEASE SAVEPOINT worker;

SELECT * FROM finish();
ROLLBACK;
