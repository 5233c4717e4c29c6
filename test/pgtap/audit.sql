-- pgTAP: the audit trail (docs/audit.md): the tables and their guards, the encoding against
-- vectors computed by scripts/audit-check's Python, the row trigger's records, sealing, digests,
-- verification, proofs, redaction, every error (ZFB01-ZFB05), that a refusal writes nothing, and
-- who may read a chain.
BEGIN;
SET search_path = fincore, public;
SELECT plan(51);

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.create_tenant('Audit A', 'a0d10000-0000-4000-8000-00000000000a');
SELECT fincore.create_tenant('Audit B', 'a0d10000-0000-4000-8000-00000000000b');

CREATE FUNCTION pg_temp.rows() RETURNS text LANGUAGE sql AS $$
    SELECT format('pending=%s log=%s heads=%s checkpoints=%s', (SELECT count(*) FROM fincore.audit_pending),
                  (SELECT count(*) FROM fincore.audit_log), (SELECT count(*) FROM fincore.audit_heads),
                  (SELECT count(*) FROM fincore.audit_checkpoints)) $$;

-- ---------------------------------------------------------------------------
-- Tables, guards, what is audited
-- ---------------------------------------------------------------------------
SELECT has_table('fincore', 'audit_log', 'table audit_log exists');
SELECT ok((SELECT bool_and(relrowsecurity AND relforcerowsecurity) FROM pg_class
            WHERE oid IN ('fincore.audit_log'::regclass, 'fincore.audit_pending'::regclass,
                          'fincore.audit_heads'::regclass, 'fincore.audit_checkpoints'::regclass)),
    'audit tables: row level security forced');
SELECT is((SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i
            CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE i.indrelid = 'fincore.audit_log'::regclass AND i.indisprimary), '{tenant_id,seq}'::name[],
    'the log''s key leads with tenant_id');
SELECT set_eq($$SELECT table_name FROM fincore.audited_tables$$,
    $$VALUES ('fincore.accounts'::regclass), ('fincore.transfers'), ('fincore.fee_schedules'), ('fincore.limits'),
             ('fincore.rules'), ('fincore.billing_accounts'), ('fincore.billing_prices'), ('fincore.subscriptions'),
             ('fincore.invoices'), ('fincore.payment_providers')$$,
    'fincore''s money tables are audited from install');
SELECT ok(EXISTS (SELECT 1 FROM fincore.maintenance_steps WHERE step = 'audit_seal')
          AND EXISTS (SELECT 1 FROM fincore.maintenance_steps WHERE step = 'audit_digest'),
    'sealing and digests are maintenance steps');

-- ---------------------------------------------------------------------------
-- The encoding: vectors from scripts/audit-check (Python's hashlib)
-- ---------------------------------------------------------------------------
SELECT is(encode(fincore.audit_record_hash('\x0000000000000000000000000000000000000000000000000000000000000000',
        '00000000-0000-4000-8000-000000000001'::uuid, 1, '2026-01-01 00:00:00+00', 42, 'app',
        '00000000-0000-4000-8000-0000000000aa', '00000000-0000-4000-8000-000000000001', 'fincore.transfers', 'I',
        'k1', sha256('{}')), 'hex'),
    '2fa25cafbaf9df45c57067026da358f5dff39331e83cacc60955665b48919206', 'encoding FCA1: every field set');
SELECT is(encode(fincore.audit_record_hash(decode(repeat('ab', 32), 'hex'),
        '00000000-0000-0000-0000-000000000000'::uuid, 7, '2026-01-01 00:00:00+00', 42, 'app', NULL, NULL,
        'fincore.transfers', 'I', 'k1', sha256('{}')), 'hex'),
    '14fda3866b96eb5ac4a77a989e1943584776d425e062e0b01296f2ff73f52c20', 'encoding FCA1: no subject, no claims tenant');
SELECT throws_ok($$SELECT fincore.audit_record_hash('\x00', '00000000-0000-0000-0000-000000000000', 1, now(), 1,
                     'r', NULL, NULL, 't', 'I', 'k', sha256(''))$$, 'ZFB05', NULL, 'a hash that is not 32 bytes is refused');
SELECT throws_ok($$SELECT fincore.audit_record_hash(sha256(''), '00000000-0000-0000-0000-000000000000', 1, now(), 1,
                     'r', NULL, NULL, 't', 'IU', 'k', sha256(''))$$, 'ZFB05', NULL, 'an operation of two letters is refused');

-- ---------------------------------------------------------------------------
-- A user table: its records, sealed
-- ---------------------------------------------------------------------------
CREATE TABLE public.audit_notes (tenant_id uuid NOT NULL, id int NOT NULL, body text, secret text,
                                 PRIMARY KEY (tenant_id, id));
SELECT pg_temp.rows() AS rows_0 \gset
SELECT throws_ok($$SELECT fincore.audit_enable('public.audit_notes', '{nope}')$$, 'ZFB01', NULL,
    'a redacted column the table does not have is refused');
SELECT throws_ok($$SELECT fincore.audit_enable('fincore.audited_tables')$$, 'ZFB01', NULL, 'a view is refused');
SELECT throws_ok($$SELECT fincore.audit_enable('fincore.audit_log')$$, 'ZFB01', NULL, 'the audit trail itself is refused');
SELECT is(pg_temp.rows(), :'rows_0', 'the refusals wrote nothing');
SELECT lives_ok($$SELECT fincore.audit_enable('public.audit_notes', '{secret}')$$, 'audit_enable with a redacted column');
SELECT is((SELECT redact_columns FROM fincore.audited_tables WHERE table_name = 'public.audit_notes'::regclass),
    '{secret}'::text[], 'audited_tables shows the redacted column');
SELECT is((SELECT payload->>'audited' FROM fincore.audit_pending WHERE table_name = 'fincore.audited_tables'
            AND key = 'public.audit_notes' ORDER BY id DESC LIMIT 1), 'true', '... and the change is recorded in the global chain');

INSERT INTO public.audit_notes VALUES ('a0d10000-0000-4000-8000-00000000000a', 1, 'hello', 's3cret');
UPDATE public.audit_notes SET body = 'hello again' WHERE id = 1;
DELETE FROM public.audit_notes WHERE id = 1;
SELECT is((SELECT string_agg(op::text || ':' || key, ',' ORDER BY id) FROM fincore.audit_pending
            WHERE table_name = 'public.audit_notes'), 'I:1,U:1,D:1', 'an insert, an update and a delete: three records');
SELECT is((SELECT payload->'new'->>'body' || '/' || (payload->'old' ? 'secret')::text FROM fincore.audit_pending
            WHERE table_name = 'public.audit_notes' AND op = 'U'), 'hello again/false',
    '... old and new rows, without the redacted column');
SELECT is((SELECT tenant_id FROM fincore.audit_pending WHERE table_name = 'public.audit_notes' LIMIT 1),
    'a0d10000-0000-4000-8000-00000000000a'::uuid, '... in the chain of the row''s tenant');
SELECT is((SELECT actor_role FROM fincore.audit_pending WHERE table_name = 'public.audit_notes' LIMIT 1),
    current_user::text, '... by the database role');
TRUNCATE public.audit_notes;
SELECT is((SELECT tenant_id::text || ' ' || op::text FROM fincore.audit_pending WHERE table_name = 'public.audit_notes'
            AND op = 'T'), '00000000-0000-0000-0000-000000000000 T', 'a TRUNCATE is a record of the global chain');

SELECT is(fincore.audit_seal('a0d10000-0000-4000-8000-00000000000a'), 3::bigint, 'audit_seal chains the tenant''s three');
SELECT is((SELECT string_agg(seq::text || op::text, ',' ORDER BY seq) FROM fincore.audit_log
            WHERE tenant_id = 'a0d10000-0000-4000-8000-00000000000a'), '1I,2U,3D', '... numbered 1, 2, 3');
SELECT is((SELECT hash FROM fincore.audit_log WHERE tenant_id = 'a0d10000-0000-4000-8000-00000000000a' AND seq = 2),
    (SELECT fincore.audit_record_hash(p.hash, l.tenant_id, l.seq, l.at, (l.txid::text)::bigint, l.actor_role,
                                      l.actor_sub::text, l.actor_tenant, l.table_name, l.op::text, l.key,
                                      sha256(convert_to(l.payload::text, 'UTF8')))
       FROM fincore.audit_log l JOIN fincore.audit_log p ON p.tenant_id = l.tenant_id AND p.seq = 1
      WHERE l.tenant_id = 'a0d10000-0000-4000-8000-00000000000a' AND l.seq = 2),
    '... record 2''s hash is audit_record_hash over record 1''s and the SHA-256 of its payload''s text');
SELECT is(fincore.audit_seal('a0d10000-0000-4000-8000-00000000000a'), 0::bigint, 'sealing again seals nothing');
SELECT is((SELECT count(*) FROM fincore.audit_pending WHERE tenant_id = 'a0d10000-0000-4000-8000-00000000000a')::int, 0,
    '... and nothing of the tenant is pending');

-- ---------------------------------------------------------------------------
-- Verification, digests, proofs
-- ---------------------------------------------------------------------------
SELECT is((SELECT format('%s %s', ok, checked) FROM fincore.audit_verify('a0d10000-0000-4000-8000-00000000000a')),
    't 3', 'audit_verify: the chain is whole');
SELECT pg_temp.rows() AS rows_1 \gset
SELECT throws_ok($$SELECT fincore.audit_verify('a0d10000-0000-4000-8000-00000000000a', 3, 1)$$, 'ZFB05', NULL,
    'a range that ends before it starts is refused');
SELECT throws_ok($$SELECT fincore.audit_verify('a0d10000-0000-4000-8000-00000000000a', 0)$$, 'ZFB05', NULL,
    'a range before the first record is refused');
SELECT throws_ok($$SELECT fincore.audit_verify('a0d10000-0000-4000-8000-00000000000a', expected_digest => '\x01')$$,
    'ZFB05', NULL, 'a digest that is not 32 bytes is refused');
SELECT throws_ok($$SELECT fincore.audit_proof('a0d10000-0000-4000-8000-00000000000a', 1)$$, 'ZFB04', NULL,
    'a proof without a checkpoint is refused');
SELECT throws_ok($$SELECT fincore.audit_seal(max_records => 0)$$, 'ZFB05', NULL, 'max_records 0 is refused');
SELECT is(pg_temp.rows(), :'rows_1', 'the refusals wrote nothing');

SELECT is((SELECT format('%s %s', seq, encode(merkle_root, 'hex')) FROM fincore.audit_digest('a0d10000-0000-4000-8000-00000000000b')),
    '0 ' || encode(sha256(''), 'hex'), 'the digest of an empty chain: no record, the root of no leaves');
SELECT is((SELECT seq FROM fincore.audit_digest('a0d10000-0000-4000-8000-00000000000a')), 3::bigint,
    'audit_digest: the head''s sequence number');
SELECT is((SELECT format('%s %s', c.seq, c.merkle_root = fincore._audit_merkle_root(h.frontier, h.seq))
             FROM fincore.audit_checkpoints c JOIN fincore.audit_heads h USING (tenant_id)
            WHERE tenant_id = 'a0d10000-0000-4000-8000-00000000000a'), '3 t', '... kept as a checkpoint');
SELECT is((SELECT count(*) FROM fincore.outbox_events WHERE type = 'audit.digest'
            AND aggregateid = 'a0d10000-0000-4000-8000-00000000000a')::int, 1, '... and sent as an audit.digest event');
SELECT is((SELECT p->>'root' = p->'checkpoint'->>'merkle_root' AND jsonb_array_length(p->'path') = 2
             FROM fincore.audit_proof('a0d10000-0000-4000-8000-00000000000a', 2) p), true,
    'audit_proof: a path of two hashes to the checkpoint''s root');
SELECT is((SELECT format('%s %s', ok, first_bad_seq) FROM fincore.audit_verify('a0d10000-0000-4000-8000-00000000000a',
              to_seq => 3, expected_digest => sha256('not it'))), 'f 3', 'a digest kept outside that differs is named');

-- ---------------------------------------------------------------------------
-- Redaction
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT fincore.audit_redact('a0d10000-0000-4000-8000-00000000000a', 99, 'gone')$$, 'ZFB04', NULL,
    'redacting a record that is not there is refused');
SELECT throws_ok($$SELECT fincore.audit_redact('a0d10000-0000-4000-8000-00000000000a', 1, '')$$, 'ZFB05', NULL,
    'a redaction without a reason is refused');
SELECT ok(fincore.audit_redact('a0d10000-0000-4000-8000-00000000000a', 1, 'GDPR request 1'), 'audit_redact');
SELECT is((SELECT format('%s %s', payload IS NULL, length(payload_hash)) FROM fincore.audit_log
            WHERE tenant_id = 'a0d10000-0000-4000-8000-00000000000a' AND seq = 1), 't 32',
    '... the payload is gone, its hash kept');
SELECT is((SELECT format('%s %s %s', ok, checked, (SELECT op::text FROM fincore.audit_log
             WHERE tenant_id = 'a0d10000-0000-4000-8000-00000000000a' AND seq = 4))
             FROM fincore.audit_verify('a0d10000-0000-4000-8000-00000000000a')), 't 4 R',
    '... the redaction is record 4, and the chain verifies');
SELECT ok(NOT fincore.audit_redact('a0d10000-0000-4000-8000-00000000000a', 1, 'again'), 'a second redaction is a no-op');

-- ---------------------------------------------------------------------------
-- Who may read and write
-- ---------------------------------------------------------------------------
SELECT throws_ok($$DELETE FROM fincore.audit_log WHERE tenant_id = 'a0d10000-0000-4000-8000-00000000000a'$$, 'ZFB03',
    NULL, 'even the owner cannot delete records');
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "a0d10000-0000-4000-8000-0000000000e1", "tenant_id": "a0d10000-0000-4000-8000-00000000000a"}', true);
SELECT is((SELECT count(DISTINCT tenant_id) FROM fincore.audit_log)::int, 1, 'an app role reads its tenant''s records only');
SELECT throws_ok($$SELECT fincore.audit_verify()$$, 'ZFB02', NULL, 'a member who is not an auditor cannot verify');
SELECT throws_ok($$INSERT INTO fincore.audit_log SELECT * FROM fincore.audit_log LIMIT 1$$, '42501', NULL,
    'an app role cannot write the log');
RESET ROLE;
SELECT fincore.set_tenant('a0d10000-0000-4000-8000-00000000000a');
SELECT fincore.add_tenant_member('a0d10000-0000-4000-8000-0000000000e1', 'auditor');
SET LOCAL ROLE authenticated;
SELECT is((SELECT ok FROM fincore.audit_verify()), true, 'an auditor of the tenant verifies its chain');
SELECT throws_ok($$SELECT fincore.audit_verify('a0d10000-0000-4000-8000-00000000000b')$$, 'ZFB02', NULL,
    '... but not another tenant''s');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
