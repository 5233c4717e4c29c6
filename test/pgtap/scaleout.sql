-- scale-out on a single node: fincore.distribute() needs Citus (ZF701) and writes nothing
-- without it; the distribution plan covers every table; every key of a tenant table leads with
-- tenant_id (docs/scale-out.md).  The Citus cluster tests are test/citus (./scripts/test --citus).
BEGIN;
SELECT plan(8);
SET LOCAL search_path = fincore, public;

SELECT throws_ok($$SELECT * FROM fincore.distribute()$$, 'ZF701', NULL,
    'ZF701 citus_not_available: distribute() without Citus');
SELECT throws_ok($$SELECT * FROM fincore.distribute('fincore.accounts')$$, 'ZF701', NULL,
    'ZF701 before any check of a user table');
SELECT is((SELECT count(*)::int FROM pg_catalog.pg_constraint c
            WHERE c.connamespace = 'fincore'::regnamespace AND c.contype = 'f'),
    (SELECT count(*)::int FROM pg_catalog.pg_constraint c
      WHERE c.connamespace = 'fincore'::regnamespace AND c.contype = 'f'),
    'distribute() refused before it dropped a foreign key');

-- Every table that has a tenant_id is placed by the plan, or is one the plan leaves on the
-- coordinator on purpose: the outbox and the queue (docs/scale-out.md).
SELECT is_empty($$
    SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'fincore'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
       AND c.oid NOT IN (SELECT d.relation FROM fincore.distribution_plan() d)
       AND c.relname NOT IN ('outbox_events', 'outbox_retries', 'dead_events', 'jobs', 'job_archive',
                             'paused_queues')$$,
    'every tenant table is in the distribution plan, or stays on the coordinator on purpose');

-- Every primary key, unique key and exclusion constraint of a distributed table leads with
-- tenant_id, and so does every foreign key between two of them (Citus requires it).
SELECT is_empty($$
    SELECT c.conrelid::regclass::text || ' ' || c.conname FROM pg_catalog.pg_constraint c
      JOIN fincore.distribution_plan() d ON d.relation = c.conrelid
     WHERE d.placement = 'distributed' AND c.contype IN ('p', 'u', 'x', 'f')
       AND (c.contype <> 'f' OR c.confrelid IN (SELECT e.relation FROM fincore.distribution_plan() e
                                                 WHERE e.placement = 'distributed'))
       AND (SELECT a.attname FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1]) <> 'tenant_id'$$,
    'every key of a distributed table leads with tenant_id');
SELECT is_empty($$
    SELECT i.indexrelid::regclass::text FROM pg_catalog.pg_index i
      JOIN fincore.distribution_plan() d ON d.relation = i.indrelid
     WHERE d.placement = 'distributed' AND i.indisunique
       AND (SELECT a.attname FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0]) <> 'tenant_id'$$,
    'every unique index of a distributed table leads with tenant_id');

-- PostgREST's pre-request function does nothing without Citus.
SELECT lives_ok($$SELECT fincore.pre_request()$$, 'pre_request() without Citus: nothing to do');
SELECT is(current_setting('citus.propagate_set_commands', true), NULL, 'pre_request() set nothing');

SELECT * FROM finish();
ROLLBACK;
