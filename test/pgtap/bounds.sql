-- pgTAP: bounds per call.  Every function that takes an array or a payload has a documented
-- maximum (fincore.max_batch_size, fincore.max_payload_size, or a cap of its own) and refuses
-- beyond it with its module's code, writing nothing.  The settings are PGC_SUSET: an app role
-- cannot raise them for itself.
BEGIN;
SET search_path = fincore, public;
SELECT plan(24);
GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');

-- (The first call of a C function loads the library, which defines the settings.)
SELECT is(fincore._max_batch_size(), 10000, 'fincore.max_batch_size defaults to 10000');
SELECT is(current_setting('fincore.max_payload_size'), '1MB', 'fincore.max_payload_size defaults to 1 MB');
SELECT is((SELECT context FROM pg_settings WHERE name = 'fincore.max_batch_size'), 'superuser',
    'max_batch_size is PGC_SUSET');
SELECT is((SELECT context FROM pg_settings WHERE name = 'fincore.max_payload_size'), 'superuser',
    'max_payload_size is PGC_SUSET');
SET LOCAL ROLE authenticated;
SELECT throws_ok($$SET fincore.max_batch_size = 1000000$$, '42501', NULL, 'an app role cannot raise max_batch_size');
SELECT throws_ok($$SET fincore.max_payload_size = '200MB'$$, '42501', NULL, 'nor max_payload_size');
RESET ROLE;

SELECT fincore.create_tenant('Bounds', 'aaaaaaaa-b0d5-4000-8000-000000000001');
SELECT fincore.set_tenant('aaaaaaaa-b0d5-4000-8000-000000000001');
SELECT fincore.subscribe('bounds_consumer', '{orders}');
SET LOCAL fincore.max_batch_size = 3;
SET LOCAL fincore.max_payload_size = '1kB';

-- Batches.
SELECT throws_ok($$SELECT * FROM fincore.enqueue_many('bq', '{"{}","{}","{}","{}"}')$$, 'ZF605',
    'enqueue_many takes at most 3 items a call, not 4', 'ZF605: enqueue_many beyond max_batch_size');
SELECT is((SELECT count(*)::int FROM fincore.jobs WHERE queue = 'bq'), 0, 'and enqueued nothing');
SELECT is((SELECT count(*)::int FROM fincore.enqueue_many('bq', '{"{}","{}","{}"}')), 3, 'three payloads are fine');
SELECT throws_ok($$SELECT fincore.replay_dead('bounds_consumer', ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid()])$$,
    'ZF503', NULL, 'ZF503: replay_dead beyond max_batch_size');
SELECT throws_ok($$SELECT fincore.subscribe('bounds2', '{a,b,c,d}')$$, 'ZF503', NULL, 'ZF503: subscribe beyond max_batch_size');
SELECT is((SELECT count(*)::int FROM fincore.outbox_consumers WHERE name = 'bounds2'), 0, 'and subscribed nothing');
SELECT throws_ok($$SELECT fincore.create_account('USD', 1, '{history,history,history,history}')$$, 'ZF323', NULL,
    'ZF323: create_account flags beyond max_batch_size');
SELECT throws_ok($$SELECT * FROM fincore.complete_many(array_fill(1::bigint, ARRAY[4]))$$, 'ZF605',
    'complete_many takes at most 3 items a call, not 4', 'ZF605: complete_many: the lower of its cap (1000) and the setting');
SELECT throws_ok($$SELECT * FROM fincore.create_transfers(array_fill(NULL::fincore.transfer_request, ARRAY[4]))$$, 'ZF321',
    NULL, 'ZF321: create_transfers: the lower of its cap (8190) and the setting');

-- Payloads.
SELECT throws_ok($$SELECT fincore.emit('orders', 'order.created', 'order', 'o-1', jsonb_build_object('x', repeat('x', 2000)))$$,
    'ZF501', NULL, 'ZF501: an event payload beyond max_payload_size');
SELECT throws_ok($$SELECT fincore.emit('orders', 'order.created', 'order', 'o-1', '{}', jsonb_build_object('x', repeat('x', 2000)))$$,
    'ZF501', NULL, 'ZF501: headers count too');
SELECT is((SELECT count(*)::int FROM fincore.outbox_events WHERE aggregateid = 'o-1'), 0, 'no event was written');
SELECT throws_ok($$SELECT fincore.enqueue('bq2', jsonb_build_object('x', repeat('x', 2000)))$$, 'ZF605', NULL,
    'ZF605: a job payload beyond max_payload_size');
SELECT throws_ok($$SELECT fincore.enqueue_many('bq2', ARRAY['{}'::jsonb, jsonb_build_object('x', repeat('x', 2000))])$$, 'ZF605', NULL,
    'ZF605: one payload of a batch beyond it refuses the batch');
SELECT is((SELECT count(*)::int FROM fincore.jobs WHERE queue = 'bq2'), 0, 'no job was written');
SELECT throws_ok($$SELECT fincore.inbox_accept('psp', 'big-1', jsonb_build_object('x', repeat('x', 2000)))$$, 'ZF511', NULL,
    'ZF511: an inbox payload beyond max_payload_size');
SELECT throws_ok($$SELECT fincore.accept_webhook('stripe', '{"id":"big","x":"' || repeat('x', 2000) || '"}', 't=1,v1=00', 's')$$,
    'ZF510', NULL, 'ZF510: a webhook body beyond max_payload_size, before its signature is checked');
SELECT is((SELECT count(*)::int FROM fincore.inbox WHERE message_id IN ('big-1', 'big')), 0, 'nothing reached the inbox');
SELECT * FROM finish();
ROLLBACK;
