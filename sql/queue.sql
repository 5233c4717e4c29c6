--
-- queue: the job queue's behaviour and messages, as an application sees them.
-- test/pgtap/queue.sql checks every SQLSTATE and much more; this file pins the output.
--
SET search_path = fincore, public;
SET fincore.dequeue_rescan_interval = 0;
SELECT create_tenant('Regress', 'cccccccc-0000-4000-8000-00000000c0de') IS NOT NULL AS tenant;
-- Job ids from 1001 on, whatever enqueued jobs before (the outbox's webhook test does).
SELECT setval('fincore.jobs_id_seq', 1000) AS ids_from;

-- The tenant comes from the request's claims, as PostgREST would set them.
SET request.jwt.claims = '{"tenant_id": "cccccccc-0000-4000-8000-00000000c0de"}';
SELECT enqueue('mail', '{"to": "a@example.com"}') AS a,
       enqueue('mail', '{"to": "b@example.com"}', priority => 10::smallint) AS b,
       enqueue('mail', '{"to": "c@example.com"}', unique_key => 'welcome-c') AS c,
       enqueue('mail', '{"to": "c@example.com", "again": true}', unique_key => 'welcome-c') AS c_again,
       enqueue('mail', '{"to": "d@example.com"}', run_at => now() + interval '1 day') AS d_tomorrow;
SELECT * FROM enqueue_many('bulk', ARRAY['{"n": 1}', '{"n": 2}']::jsonb[]);

-- Claimed in order: priority, then age; the job for tomorrow stays behind.
SELECT id, queue, payload, priority, attempt, max_attempts, worker, unique_key, errors,
       lease_until = now() + interval '1 minute' AS leased
  FROM dequeue('mail', 10, '1 minute', 'worker-1');
SELECT complete(1002, '{"message_id": "m-2"}', attempt => 1);
SELECT fail(1001, 'smtp timeout', retry_at => now() + interval '10 seconds', attempt => 1) = now() + interval '10 seconds' AS retries;
SELECT cancel(1005) AS was;                           -- the job for tomorrow
SELECT id, state, attempts, scheduled, errors -> 0 ->> 'error' AS first_error FROM jobs ORDER BY id;
SELECT id, state, result FROM job_archive ORDER BY id;
SELECT queue, ready, scheduled, running, dead, completed, failed, paused FROM queue_stats();

-- Refusals (see docs/errors.md).
SELECT complete(1002);                                -- ZF607
SELECT complete(1003, attempt => 2);                  -- ZF602
SELECT complete(1001);                                -- ZF602: waiting for its retry
SELECT complete(999);                                 -- ZF601
SELECT retry(1003);                                   -- ZF603
SELECT enqueue('no spaces please', '{}');             -- ZF604
SELECT * FROM dequeue('mail', 0);                     -- ZF605
SELECT * FROM dequeue('mail', 1, '1 month');          -- ZF605
SELECT cron_schedule_of('45 seconds');                -- ZF609
RESET request.jwt.claims;
SELECT enqueue('mail', '{}');                         -- ZF203
RESET fincore.dequeue_rescan_interval;
