-- pgTAP: the audit trail's retention and audit_disable (docs/audit.md): each refusal of
-- audit_retain (ZFB05) and of audit_disable (ZFB01) writes nothing; a cut behind a checkpoint
-- drops the records before it and the chain still verifies from the cut; a table no longer
-- audited keeps its records and appends no more.
BEGIN;
SET search_path = fincore, public;
SELECT plan(13);

SELECT fincore.create_tenant('Retention', 'a0d20000-0000-4000-8000-00000000000a');
SELECT set_config('request.jwt.claims', '{"tenant_id":"a0d20000-0000-4000-8000-00000000000a"}', true);
SELECT fincore.create_account('EUR', id => ('a0d20000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid)
  FROM generate_series(1, 6) g;
SELECT fincore.audit_seal('a0d20000-0000-4000-8000-00000000000a');

CREATE FUNCTION pg_temp.rows() RETURNS text LANGUAGE sql AS $$
    SELECT format('pending=%s log=%s first=%s checkpoints=%s',
                  (SELECT count(*) FROM fincore.audit_pending WHERE tenant_id = 'a0d20000-0000-4000-8000-00000000000a'),
                  (SELECT count(*) FROM fincore.audit_log WHERE tenant_id = 'a0d20000-0000-4000-8000-00000000000a'),
                  (SELECT first_seq FROM fincore.audit_heads WHERE tenant_id = 'a0d20000-0000-4000-8000-00000000000a'),
                  (SELECT count(*) FROM fincore.audit_checkpoints WHERE tenant_id = 'a0d20000-0000-4000-8000-00000000000a')) $$;

SELECT is(pg_temp.rows(), 'pending=0 log=6 first=1 checkpoints=0', 'six records sealed, no checkpoint yet');
SELECT throws_ok($$SELECT fincore.audit_retain('a0d20000-0000-4000-8000-00000000000a', 4)$$, 'ZFB05',
    'no checkpoint of chain a0d20000-0000-4000-8000-00000000000a at record 3 or later', 'no cut without a checkpoint behind it (ZFB05)');
SELECT throws_ok($$SELECT fincore.audit_retain('a0d20000-0000-4000-8000-00000000000a', NULL)$$, 'ZFB05', NULL, 'a NULL cut (ZFB05)');
SELECT throws_ok($$SELECT fincore.audit_retain('a0d20000-0000-4000-8000-00000000000a', 1)$$, 'ZFB05', NULL,
    'a cut at the first record kept (ZFB05)');
SELECT throws_ok($$SELECT fincore.audit_retain('a0d20000-0000-4000-8000-00000000000a', 7)$$, 'ZFB05', NULL,
    'a cut beyond the head (ZFB05)');
SELECT throws_ok($$SELECT fincore.audit_retain('a0d20000-0000-4000-8000-0000000000ff', 2)$$, 'ZFB05', NULL,
    'a cut of a chain that does not exist (ZFB05)');
SELECT is(pg_temp.rows(), 'pending=0 log=6 first=1 checkpoints=0', 'the refused cuts wrote nothing');

SELECT is((SELECT seq FROM fincore.audit_digest('a0d20000-0000-4000-8000-00000000000a')), 6::bigint, 'a digest at record 6');
SELECT is(fincore.audit_retain('a0d20000-0000-4000-8000-00000000000a', 4), 3::bigint, 'a cut before record 4 drops three records');
SELECT is(pg_temp.rows(), 'pending=0 log=3 first=4 checkpoints=1', 'records 4 to 6 kept');
SELECT is((SELECT ok FROM fincore.audit_verify('a0d20000-0000-4000-8000-00000000000a')), true, 'the chain verifies from the cut');

SELECT throws_ok($$SELECT fincore.audit_disable(NULL)$$, 'ZFB01', 'cannot stop auditing NULL', 'audit_disable(NULL) is refused (ZFB01)');
CREATE TABLE pg_temp.orders (tenant_id uuid NOT NULL DEFAULT fincore.require_tenant(), id int PRIMARY KEY, note text);
SELECT fincore.audit_enable('pg_temp.orders');
INSERT INTO pg_temp.orders (id, note) VALUES (1, 'audited');
SELECT fincore.audit_disable('pg_temp.orders');
INSERT INTO pg_temp.orders (id, note) VALUES (2, 'not audited');
SELECT is((SELECT count(*)::int FROM fincore.audit_pending p WHERE p.table_name LIKE '%orders'), 1,
    'a table no longer audited keeps its records and appends no more');

SELECT * FROM finish();
ROLLBACK;
