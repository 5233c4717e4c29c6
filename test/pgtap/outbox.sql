-- pgTAP: the outbox and inbox - every ZF5xx SQLSTATE, who may call what, tenant
-- isolation of events, webhook signatures (valid, tampered, wrong secret, stale,
-- duplicate, several v1) and the job-queue hand-off.  Delivery itself (snapshots,
-- commit order, retention) needs committed transactions: test/integration/test_outbox.py.
BEGIN;
SET search_path = fincore, public;
SELECT plan(160);

GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
CREATE ROLE tap_ob_backend NOLOGIN;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.grant_app_role('tap_ob_backend', trusted => true);
SELECT fincore.create_tenant('Outbox A', 'aaaaaaaa-0b0b-4000-8000-000000000001');
SELECT fincore.create_tenant('Outbox B', 'bbbbbbbb-0b0b-4000-8000-000000000002');
CREATE FUNCTION pg_temp.as_tenant(t text) RETURNS void LANGUAGE sql AS $$
    SELECT set_config('request.jwt.claims', CASE t
        WHEN 'A' THEN '{"sub":"aaaaaaaa-1111-4000-8000-000000000001","role":"authenticated","tenant_id":"aaaaaaaa-0b0b-4000-8000-000000000001"}'
        WHEN 'B' THEN '{"sub":"bbbbbbbb-1111-4000-8000-000000000002","role":"authenticated","tenant_id":"bbbbbbbb-0b0b-4000-8000-000000000002"}'
        ELSE '' END, true) IS NULL $$;
-- Stripe-style signature header for a payload at a time, under a secret.
CREATE FUNCTION pg_temp.sign(payload text, secret text, t bigint DEFAULT extract(epoch FROM clock_timestamp())::bigint)
    RETURNS text LANGUAGE sql AS $$
    SELECT 't=' || t || ',v1=' || encode(public.hmac(t || '.' || payload, secret, 'sha256'), 'hex') $$;

-- ---------------------------------------------------------------------------
-- The catalogue.
-- ---------------------------------------------------------------------------
SELECT has_table('fincore', 'outbox_events', 'outbox_events exists');
SELECT results_eq($$SELECT count(*)::int FROM pg_inherits WHERE inhparent = 'fincore.outbox_events'::regclass$$,
    ARRAY[3], 'outbox_events has three rotating partitions');
SELECT columns_are('fincore', 'outbox_events',
    ARRAY['id', 'seq', 'txid', 'created_at', 'tenant_id', 'slot', 'topic', 'type', 'aggregatetype',
          'aggregateid', 'payload', 'headers'], 'Debezium outbox column names');
SELECT results_eq($$SELECT step, fn FROM fincore.maintenance_steps WHERE step = 'outbox'$$,
    $$VALUES ('outbox'::text, 'fincore.outbox_maintenance(interval)'::text)$$, 'retention is a maintenance step');
SELECT results_eq($$SELECT state FROM fincore.outbox_slots ORDER BY slot$$,
    ARRAY['current', 'empty', 'empty'], 'slot 0 takes events at first');
SELECT ok(NOT has_function_privilege('authenticated', 'fincore.subscribe(text,text[],uuid,integer,interval,interval,integer)', 'EXECUTE'),
    'app roles may not create consumers');
SELECT ok(NOT has_function_privilege('authenticated', 'fincore.consumer_lag()', 'EXECUTE'), 'app roles may not read consumer_lag');
SELECT ok(NOT has_function_privilege('authenticated', 'fincore.outbox_maintenance(interval)', 'EXECUTE'),
    'app roles may not run retention');
SELECT ok(NOT has_function_privilege('tap_ob_backend', 'fincore.outbox_configure(boolean,interval,interval,text)', 'EXECUTE'),
    'even trusted roles may not change the global outbox settings');
SELECT ok(has_function_privilege('authenticated', 'fincore.emit(text,text,text,text,jsonb,jsonb)', 'EXECUTE')
          AND has_function_privilege('authenticated', 'fincore.poll(text,integer)', 'EXECUTE')
          AND has_function_privilege('authenticated', 'fincore.accept_webhook(text,text,text,text,interval)', 'EXECUTE'),
    'app roles may emit, poll and accept webhooks');
SELECT ok(has_function_privilege('tap_ob_backend', 'fincore.subscribe(text,text[],uuid,integer,interval,interval,integer)', 'EXECUTE'),
    'trusted roles may create consumers');
SELECT ok(NOT has_function_privilege('public', 'fincore._outbox_seal(regclass)', 'EXECUTE'), 'internal seal is not public');

-- ---------------------------------------------------------------------------
-- Emitting, as an app role.
-- ---------------------------------------------------------------------------
SAVEPOINT emit_as_app;
SET LOCAL ROLE authenticated;
SELECT pg_temp.as_tenant('A');
SELECT lives_ok($$SELECT fincore.emit('orders', 'order.created', 'order', 'o-1', '{"total": "12.00 USD"}')$$,
    'an app role emits for its tenant');
SELECT results_eq($$SELECT tenant_id, topic, type, aggregatetype, aggregateid, payload ->> 'total', headers
                      FROM fincore.outbox_events WHERE aggregateid = 'o-1'$$,
    $$VALUES ('aaaaaaaa-0b0b-4000-8000-000000000001'::uuid, 'orders', 'order.created', 'order', 'o-1', '12.00 USD', NULL::jsonb)$$,
    'the event is stored for the caller''s tenant');
SELECT is((SELECT (fincore.emit('orders', 'order.paid', 'order', 'o-1', '{}', '{"trace": "t-1"}') IS NOT NULL)), true,
    'emit returns the event id');
SELECT is((SELECT headers ->> 'trace' FROM fincore.outbox_events WHERE type = 'order.paid'), 't-1', 'headers are stored');
SELECT ok((SELECT bool_and(substr(id::text, 15, 1) = '7') FROM fincore.outbox_events), 'event ids are UUIDv7');
SELECT ok((SELECT bool_and(txid = pg_current_xact_id()) FROM fincore.outbox_events), 'txid is the emitting transaction');
SELECT throws_ok($$INSERT INTO fincore.outbox_events_0 (id, seq, txid, slot, topic, type, aggregatetype, aggregateid, payload)
                   VALUES (gen_random_uuid(), 1, pg_current_xact_id(), 0, 't', 't', 't', 't', '{}')$$,
    '42501', NULL, 'an app role cannot write event storage directly');
SELECT pg_temp.as_tenant('B');
SELECT is_empty($$SELECT 1 FROM fincore.outbox_events$$, 'tenant B sees none of A''s events');
SELECT is_empty($$SELECT 1 FROM fincore.outbox_events_0$$, 'not even through the partition');
ROLLBACK TO SAVEPOINT emit_as_app;

-- ZF501 invalid_event
SELECT fincore.set_tenant('aaaaaaaa-0b0b-4000-8000-000000000001');
SELECT throws_ok($$SELECT fincore.emit('', 't', 'a', '1', '{}')$$, 'ZF501', NULL, 'ZF501: empty topic');
SELECT throws_ok($$SELECT fincore.emit('*', 't', 'a', '1', '{}')$$, 'ZF501', NULL, 'ZF501: topic *');
SELECT throws_ok($$SELECT fincore.emit('my topic', 't', 'a', '1', '{}')$$, 'ZF501', 'invalid topic: "my topic"', 'ZF501: space in a topic');
SELECT throws_ok($$SELECT fincore.emit(repeat('t', 201), 't', 'a', '1', '{}')$$, 'ZF501', NULL, 'ZF501: topic of 201 characters');
SELECT throws_ok($$SELECT fincore.emit('orders', '.created', 'a', '1', '{}')$$, 'ZF501', NULL, 'ZF501: type starting with a dot');
SELECT throws_ok($$SELECT fincore.emit('orders', 'created', 'a b', '1', '{}')$$, 'ZF501', NULL, 'ZF501: bad aggregate type');
SELECT throws_ok($$SELECT fincore.emit('orders', 'created', 'order', '', '{}')$$, 'ZF501', NULL, 'ZF501: empty aggregate id');
SELECT throws_ok($$SELECT fincore.emit('orders', 'created', 'order', repeat('x', 501), '{}')$$, 'ZF501', NULL, 'ZF501: aggregate id too long');
SELECT throws_ok($$SELECT fincore.emit('orders', 'created', 'order', '1', NULL)$$, 'ZF501', NULL, 'ZF501: NULL payload');
SELECT throws_ok($$SELECT fincore.emit(NULL, 'created', 'order', '1', '{}')$$, 'ZF501', NULL, 'ZF501: NULL topic');
SELECT throws_ok($$SELECT fincore.emit('orders', 'created', 'order', '1', '{}', '[1]')$$, 'ZF501', NULL, 'ZF501: headers not an object');
SELECT is((SELECT count(*) FROM fincore.outbox_events WHERE tenant_id = 'aaaaaaaa-0b0b-4000-8000-000000000001'), 0::bigint,
    'refused events left nothing');
SELECT lives_ok($$SELECT fincore.emit('ledger.v1', 'transfer.created', 'transfer', 'f47ac10b-58cc-4372-a567-0e02b2c3d479', '"any json"')$$,
    'names with dots and digits, a uuid aggregate id, a scalar payload');
SELECT fincore.set_tenant(NULL);
SELECT throws_ok($$SELECT fincore.emit('orders', 'created', 'order', '1', '{}')$$, 'ZF203', NULL, 'ZF203: emit needs a tenant');

-- Per-tenant ledger events switch.
SELECT fincore.set_tenant('aaaaaaaa-0b0b-4000-8000-000000000001');
SELECT is(fincore.ledger_events_enabled(), true, 'ledger events are on by default');
SELECT fincore.set_ledger_events(false);
SELECT is(fincore.ledger_events_enabled(), false, 'set_ledger_events(false) turns them off for the tenant');
SELECT fincore.set_tenant('bbbbbbbb-0b0b-4000-8000-000000000002');
SELECT is(fincore.ledger_events_enabled(), true, 'other tenants are not affected');
SELECT fincore.set_tenant('aaaaaaaa-0b0b-4000-8000-000000000001');
SELECT fincore.set_ledger_events(true);
SELECT is(fincore.ledger_events_enabled(), true, 'and back on');
SELECT fincore.set_tenant(NULL);
SELECT throws_ok($$SELECT fincore.set_ledger_events(false)$$, 'ZF203', NULL, 'ZF203: the setting is per tenant');

-- ---------------------------------------------------------------------------
-- Consumers.
-- ---------------------------------------------------------------------------
SELECT lives_ok($$SELECT fincore.subscribe('tap_all', '{*}')$$, 'a cross-tenant consumer of every topic');
SELECT lives_ok($$SELECT fincore.subscribe('tap_a', '{orders,refunds}', 'aaaaaaaa-0b0b-4000-8000-000000000001')$$,
    'a consumer scoped to tenant A');
SELECT lives_ok($$SELECT fincore.subscribe('tap_a', '{orders}', 'aaaaaaaa-0b0b-4000-8000-000000000001', 5)$$,
    'subscribe again changes topics and settings');
SELECT results_eq($$SELECT topics, max_attempts FROM fincore.outbox_consumers WHERE name = 'tap_a'$$,
    $$VALUES ('{orders}'::text[], 5)$$, 'the consumer was updated');
-- ZF503 invalid_consumer
SELECT throws_ok($$SELECT fincore.subscribe('Bad Name', '{orders}')$$, 'ZF503', NULL, 'ZF503: bad consumer name');
SELECT throws_ok($$SELECT fincore.subscribe(NULL, '{orders}')$$, 'ZF503', NULL, 'ZF503: NULL consumer name');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', '{}')$$, 'ZF503', NULL, 'ZF503: no topics');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', NULL)$$, 'ZF503', NULL, 'ZF503: NULL topics');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', '{orders,NULL}')$$, 'ZF503', NULL, 'ZF503: a NULL topic');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', '{"bad topic"}')$$, 'ZF503', NULL, 'ZF503: a malformed topic');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', '{{a},{b}}')$$, 'ZF503', NULL, 'ZF503: two-dimensional topics');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', '{orders}', NULL, 0)$$, 'ZF503', NULL, 'ZF503: max_attempts 0');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', '{orders}', NULL, 3, '-1 second')$$, 'ZF503', NULL, 'ZF503: negative backoff');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', '{orders}', NULL, 3, '1 hour', '1 minute')$$, 'ZF503', NULL,
    'ZF503: backoff above backoff_max');
SELECT throws_ok($$SELECT * FROM fincore.poll('tap_all', 0)$$, 'ZF503', NULL, 'ZF503: poll max 0');
SELECT throws_ok($$SELECT * FROM fincore.poll('tap_all', 10001)$$, 'ZF503', NULL, 'ZF503: poll max above 10000');
SELECT is((SELECT count(*) FROM fincore.outbox_consumers WHERE name = 'tap_x'), 0::bigint, 'no refused consumer was created');
-- ZF504 consumer_conflict, ZF204 tenant_not_found
SELECT throws_ok($$SELECT fincore.subscribe('tap_a', '{orders}')$$, 'ZF504', NULL, 'ZF504: another tenant scope');
SELECT throws_ok($$SELECT fincore.subscribe('tap_all', '{orders}', 'bbbbbbbb-0b0b-4000-8000-000000000002')$$, 'ZF504', NULL,
    'ZF504: a cross-tenant consumer cannot become scoped');
SELECT throws_ok($$SELECT fincore.subscribe('tap_x', '{orders}', '99999999-9999-4999-8999-999999999999')$$, 'ZF204', NULL,
    'ZF204: scope to an unknown tenant');
-- ZF502 unknown_consumer
SELECT throws_ok($$SELECT * FROM fincore.poll('tap_nobody')$$, 'ZF502', 'unknown consumer: "tap_nobody"', 'ZF502: poll');
SELECT throws_ok($$SELECT fincore.ack('tap_nobody', gen_random_uuid())$$, 'ZF502', NULL, 'ZF502: ack');
SELECT throws_ok($$SELECT fincore.nack('tap_nobody', gen_random_uuid(), 'x')$$, 'ZF502', NULL, 'ZF502: nack');
SELECT throws_ok($$SELECT fincore.replay_dead('tap_nobody')$$, 'ZF502', NULL, 'ZF502: replay_dead');
-- ZF506 invalid_ack
SELECT throws_ok($$SELECT fincore.ack('tap_all', gen_random_uuid())$$, 'ZF506', NULL, 'ZF506: not an event id');
SELECT throws_ok($$SELECT fincore.ack('tap_all', '01a20797-0e0e-73dd-8000-000000000001')$$, 'ZF506', NULL,
    'ZF506: nothing in flight');
SELECT throws_ok($$SELECT fincore.nack('tap_all', '01a20797-0e0e-73dd-8000-000000000001', 'x')$$, 'ZF506', NULL,
    'ZF506: nack of an event not delivered');
SELECT throws_ok($$SELECT fincore.nack('tap_all', NULL, 'x')$$, 'ZF506', NULL, 'ZF506: nack without an event');
SELECT lives_ok($$SELECT * FROM fincore.poll('tap_all')$$, 'the owner polls a cross-tenant consumer');
SELECT is((SELECT count(*) FROM fincore.consumer_lag() WHERE consumer IN ('tap_all', 'tap_a')), 2::bigint,
    'consumer_lag lists the consumers');

-- App roles only reach consumers scoped to their own tenant; any other is reported exactly as a
-- missing one (ZF502, same message), so a caller learns nothing of what exists elsewhere.
SAVEPOINT consumers_as_app;
SET LOCAL ROLE authenticated;
SELECT pg_temp.as_tenant('A');
SELECT lives_ok($$SELECT * FROM fincore.poll('tap_a')$$, 'tenant A polls its own scoped consumer');
SELECT throws_ok($$SELECT * FROM fincore.poll('tap_all')$$, 'ZF502', 'unknown consumer: "tap_all"', 'ZF502: an app role polls a cross-tenant consumer: as if it did not exist');
SELECT throws_ok($$SELECT fincore.ack('tap_all', gen_random_uuid())$$, 'ZF502', 'unknown consumer: "tap_all"', 'ZF502: or acks on it');
SELECT results_eq($$SELECT name FROM fincore.outbox_consumers$$, ARRAY['tap_a'], 'an app role sees only its tenant''s consumers');
SELECT throws_ok($$SELECT fincore.subscribe('tap_y', '{orders}')$$, '42501', NULL, 'an app role cannot subscribe');
SELECT pg_temp.as_tenant('B');
SELECT throws_ok($$SELECT * FROM fincore.poll('tap_a')$$, 'ZF502', 'unknown consumer: "tap_a"', 'ZF502: tenant B polls A''s consumer: as if it did not exist');
SELECT throws_ok($$SELECT fincore.nack('tap_a', gen_random_uuid(), 'x')$$, 'ZF502', 'unknown consumer: "tap_a"', 'ZF502: or nacks on it');
SELECT throws_ok($$SELECT * FROM fincore.poll('tap_nowhere')$$, 'ZF502', 'unknown consumer: "tap_nowhere"', 'ZF502: the same error for a consumer that exists nowhere');
ROLLBACK TO SAVEPOINT consumers_as_app;
SAVEPOINT consumers_as_backend;
SET LOCAL ROLE tap_ob_backend;
SELECT lives_ok($$SELECT * FROM fincore.poll('tap_all')$$, 'a trusted role polls a cross-tenant consumer');
SELECT lives_ok($$SELECT * FROM fincore.poll('tap_a')$$, 'and a scoped one without setting the tenant');
SELECT lives_ok($$SELECT fincore.subscribe('tap_backend_made', '{orders}')$$, 'a trusted role subscribes');
ROLLBACK TO SAVEPOINT consumers_as_backend;
SELECT is(fincore.unsubscribe('tap_a'), true, 'unsubscribe drops a consumer');
SELECT is(fincore.unsubscribe('tap_a'), false, 'and says so when there was none');

-- Partitioned consumers: <name>/<k>, one row each, all at one position.
SELECT lives_ok($$SELECT fincore.subscribe('tap_p', '{orders}', partitions => 3)$$, 'a consumer of 3 partitions');
SELECT results_eq($$SELECT name, partitions, partition_no FROM fincore.outbox_consumers
                     WHERE name LIKE 'tap!_p%' ESCAPE '!' ORDER BY name$$,
    $$VALUES ('tap_p/0', 3, 0), ('tap_p/1', 3, 1), ('tap_p/2', 3, 2)$$, 'its partitions are consumers tap_p/0..2');
SELECT is((SELECT count(DISTINCT position::text)::int FROM fincore.outbox_consumers WHERE name LIKE 'tap!_p/%' ESCAPE '!'),
    1, 'and start at one position');
SELECT lives_ok($$SELECT fincore.subscribe('tap_p', '{orders,refunds}', partitions => 3, max_attempts => 4)$$,
    'subscribe again with the same partitions changes topics and settings');
SELECT results_eq($$SELECT DISTINCT topics, max_attempts FROM fincore.outbox_consumers WHERE name LIKE 'tap!_p/%' ESCAPE '!'$$,
    $$VALUES ('{orders,refunds}'::text[], 4)$$, 'of every partition');
SELECT throws_ok($$SELECT fincore.subscribe('tap_p', '{orders}', partitions => 2)$$, 'ZF504',
    'consumer tap_p exists with partitions => 3, not 2', 'ZF504: another number of partitions');
SELECT throws_ok($$SELECT fincore.subscribe('tap_p', '{orders}')$$, 'ZF504', NULL, 'ZF504: or one reader');
SELECT throws_ok($$SELECT fincore.subscribe('tap_all', '{*}', partitions => 2)$$, 'ZF504',
    'consumer tap_all exists with partitions => 1, not 2', 'ZF504: a consumer of one reader is not partitioned later');
SELECT throws_ok($$SELECT fincore.subscribe('tap_p', '{orders}', 'aaaaaaaa-0b0b-4000-8000-000000000001', partitions => 3)$$,
    'ZF504', NULL, 'ZF504: nor moved to a tenant scope');
SELECT throws_ok($$SELECT fincore.subscribe('tap_q', '{orders}', partitions => 0)$$, 'ZF503', NULL, 'ZF503: 0 partitions');
SELECT throws_ok($$SELECT fincore.subscribe('tap_q', '{orders}', partitions => 257)$$, 'ZF503', NULL, 'ZF503: 257 partitions');
SELECT throws_ok($$SELECT fincore.subscribe('tap_p/3', '{orders}')$$, 'ZF503', NULL, 'ZF503: a partition''s name is not a consumer name');
SELECT is((SELECT count(*)::int FROM fincore.outbox_consumers WHERE name LIKE 'tap!_q%' ESCAPE '!' OR name = 'tap_p/3'), 0,
    'and the refusals subscribed nothing');
SELECT lives_ok($$SELECT fincore.subscribe('tap_q', '{orders}', partitions => 1)$$, 'partitions => 1 is one reader');
SELECT is((SELECT partitions FROM fincore.outbox_consumers WHERE name = 'tap_q'), NULL, 'named as the consumer');
SELECT throws_ok($$SELECT * FROM fincore.poll('tap_p')$$, 'ZF502', NULL, 'ZF502: a partitioned consumer is polled by partition');
SELECT lives_ok($$SELECT * FROM fincore.poll('tap_p/2')$$, 'a partition polls');
SELECT throws_ok($$INSERT INTO fincore.outbox_consumers (name, topics, position, partitions, partition_no)
                   VALUES ('tap_q/0', '{x}', '1:1:', 2, 0)$$, '23P01', NULL,
    'a name is one reader or one set of partitions, by constraint');
SELECT throws_ok($$INSERT INTO fincore.outbox_consumers (name, topics, position, partitions, partition_no)
                   VALUES ('tap_r/1', '{x}', '1:1:', 2, 0)$$, '23514', NULL, 'a partition''s name ends in its number');
-- The partition of an aggregate: the same for each of its events, and every partition is used.
SELECT is(fincore.event_partition('aaaaaaaa-0b0b-4000-8000-000000000001', 'order', 'o-1', 1), 0, 'one partition: 0');
SELECT is((SELECT count(DISTINCT fincore.event_partition('aaaaaaaa-0b0b-4000-8000-000000000001', 'order', 'o-' || g, 8))::int
             FROM generate_series(1, 200) g), 8, '200 aggregates fall into all of 8 partitions');
SELECT ok((SELECT bool_and(fincore.event_partition('aaaaaaaa-0b0b-4000-8000-000000000001', 'order', 'o-' || g, 8) BETWEEN 0 AND 7)
             FROM generate_series(1, 200) g), 'each in 0..7');
SELECT isnt(fincore.event_partition('aaaaaaaa-0b0b-4000-8000-000000000001', 'order', 'o-1', 256),
            fincore.event_partition('bbbbbbbb-0b0b-4000-8000-000000000002', 'order', 'o-1', 256),
    'an aggregate id of another tenant is another aggregate');
SELECT throws_ok($$SELECT fincore.event_partition('aaaaaaaa-0b0b-4000-8000-000000000001', 'order', 'o-1', 0)$$,
    'ZF503', 'invalid number of partitions: 0', 'ZF503: event_partition of 0 partitions');
SELECT throws_ok($$SELECT fincore.unsubscribe('tap_p/1')$$, 'ZF503', NULL, 'ZF503: one partition is not dropped alone');
SELECT is(fincore.unsubscribe('tap_p'), true, 'unsubscribe drops a partitioned consumer');
SELECT is((SELECT count(*)::int FROM fincore.outbox_consumers WHERE name LIKE 'tap!_p/%' ESCAPE '!'), 0, 'every partition of it');
SELECT is(fincore.unsubscribe('tap_q'), true, 'and one of one reader');

-- ZF512 invalid_outbox_setting
SELECT throws_ok($$SELECT fincore.outbox_configure(rotation_interval => '-1 minute')$$, 'ZF512', NULL, 'ZF512: negative rotation');
SELECT throws_ok($$SELECT fincore.outbox_configure(inbox_retention => '-1 day')$$, 'ZF512', NULL, 'ZF512: negative retention');
SELECT throws_ok($$SELECT fincore.outbox_configure(notify_channel => 'Bad Channel')$$, 'ZF512', NULL, 'ZF512: bad channel');
SELECT results_eq($$SELECT notify, rotation_interval FROM fincore.outbox_configure(notify => true)$$,
    $$VALUES (true, '5 minutes'::interval)$$, 'configure changes what it is given and keeps the rest');

-- ---------------------------------------------------------------------------
-- Inbox.
-- ---------------------------------------------------------------------------
SELECT fincore.set_tenant('aaaaaaaa-0b0b-4000-8000-000000000001');
SELECT is(fincore.inbox_accept('psp', 'msg-1', '{"a": 1}'), true, 'the first delivery is accepted');
SELECT is(fincore.inbox_accept('psp', 'msg-1', '{"a": 2}'), false, 'a duplicate is not');
SELECT is((SELECT payload FROM fincore.inbox WHERE message_id = 'msg-1'), '{"a": 1}'::jsonb, 'and changes nothing');
SELECT is(fincore.inbox_accept('other-source', 'msg-1', NULL), true, 'ids are per source');
SELECT throws_ok($$SELECT fincore.inbox_accept('', 'msg-2', '{}')$$, 'ZF511', NULL, 'ZF511: empty source');
SELECT throws_ok($$SELECT fincore.inbox_accept('psp', NULL, '{}')$$, 'ZF511', NULL, 'ZF511: NULL message id');
SELECT throws_ok($$SELECT fincore.inbox_accept('psp', repeat('x', 501), '{}')$$, 'ZF511', NULL, 'ZF511: message id too long');
SELECT fincore.set_tenant(NULL);
SELECT throws_ok($$SELECT fincore.inbox_accept('psp', 'msg-3', '{}')$$, 'ZF203', NULL, 'ZF203: the inbox is per tenant');

-- ---------------------------------------------------------------------------
-- Webhooks.
-- ---------------------------------------------------------------------------
SELECT fincore.set_tenant('aaaaaaaa-0b0b-4000-8000-000000000001');
CREATE TEMP TABLE hook AS SELECT '{"id":"evt_1","type":"payment_intent.succeeded","amount":1200}'::text AS body;
CREATE TEMP TABLE accepted AS SELECT * FROM fincore.accept_webhook('stripe', (SELECT body FROM hook),
                        pg_temp.sign((SELECT body FROM hook), 'whsec_test'), 'whsec_test');
SELECT results_eq($$SELECT event_id, accepted, job_id = (SELECT j.id FROM fincore.jobs j WHERE j.unique_key = 'evt_1')
                      FROM accepted$$,
    $$VALUES ('evt_1'::text, true, true)$$, 'a valid delivery is accepted, recorded and enqueued (the job queue is installed)');
SELECT results_eq($$SELECT source, payload ->> 'type' FROM fincore.inbox WHERE message_id = 'evt_1'$$,
    $$VALUES ('webhook:stripe'::text, 'payment_intent.succeeded'::text)$$, 'recorded in the inbox');
SELECT results_eq($$SELECT accepted FROM fincore.accept_webhook('stripe', (SELECT body FROM hook),
                        pg_temp.sign((SELECT body FROM hook), 'whsec_test'), 'whsec_test')$$,
    ARRAY[false], 'a replayed delivery is a duplicate');
SELECT is((SELECT count(*) FROM fincore.inbox WHERE message_id = 'evt_1'), 1::bigint, 'and changes nothing');
SELECT results_eq($$SELECT accepted FROM fincore.accept_webhook('stripe', '{"id":"evt_2"}',
                        pg_temp.sign('{"id":"evt_2"}', 'whsec_old') || ',v1=' || repeat('0', 64) || ','
                        || split_part(pg_temp.sign('{"id":"evt_2"}', 'whsec_test'), ',', 2) || ',v0=abc', 'whsec_test')$$,
    ARRAY[true], 'several v1 signatures (secret rotation): one match is enough; other schemes are ignored');
-- ZF508 signature_mismatch
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_3","amount":9999}',
                      pg_temp.sign('{"id":"evt_3","amount":1}', 'whsec_test'), 'whsec_test')$$,
    'ZF508', 'webhook signature does not match', 'ZF508: tampered payload');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_3"}',
                      pg_temp.sign('{"id":"evt_3"}', 'whsec_wrong'), 'whsec_test')$$,
    'ZF508', NULL, 'ZF508: wrong secret');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_3"}',
                      replace(pg_temp.sign('{"id":"evt_3"}', 'whsec_test'), 't=', 't=1'), 'whsec_test')$$,
    'ZF508', NULL, 'ZF508: the timestamp is signed too');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_3"}',
                      left(pg_temp.sign('{"id":"evt_3"}', 'whsec_test'), -2), 'whsec_test')$$,
    'ZF508', NULL, 'ZF508: a truncated signature');
-- ZF509 stale_webhook
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_4"}',
                      pg_temp.sign('{"id":"evt_4"}', 'whsec_test', extract(epoch FROM now())::bigint - 600), 'whsec_test')$$,
    'ZF509', NULL, 'ZF509: signed ten minutes ago');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_4"}',
                      pg_temp.sign('{"id":"evt_4"}', 'whsec_test', extract(epoch FROM now())::bigint + 600), 'whsec_test')$$,
    'ZF509', NULL, 'ZF509: signed ten minutes in the future');
SELECT lives_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_4"}',
                     pg_temp.sign('{"id":"evt_4"}', 'whsec_test', extract(epoch FROM now())::bigint - 600), 'whsec_test', '1 hour')$$,
    'a wider tolerance accepts it');
-- ZF507 invalid_signature_header
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_5"}', 'v1=' || repeat('a', 64), 'whsec_test')$$,
    'ZF507', NULL, 'ZF507: no timestamp');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_5"}', 't=1700000000', 'whsec_test')$$,
    'ZF507', NULL, 'ZF507: no v1 signature');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_5"}', 't=17x,v1=' || repeat('a', 64), 'whsec_test')$$,
    'ZF507', NULL, 'ZF507: timestamp not a number');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_5"}', 't=1,t=2,v1=' || repeat('a', 64), 'whsec_test')$$,
    'ZF507', NULL, 'ZF507: two timestamps');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_5"}', 'garbage', 'whsec_test')$$,
    'ZF507', NULL, 'ZF507: not a header at all');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_5"}', NULL, 'whsec_test')$$,
    'ZF507', NULL, 'ZF507: no header');
-- ZF510 invalid_webhook_payload (correctly signed, so the payload is what is wrong)
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', 'not json', pg_temp.sign('not json', 'whsec_test'), 'whsec_test')$$,
    'ZF510', NULL, 'ZF510: not JSON');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '[1,2]', pg_temp.sign('[1,2]', 'whsec_test'), 'whsec_test')$$,
    'ZF510', NULL, 'ZF510: not an object');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"type":"x"}', pg_temp.sign('{"type":"x"}', 'whsec_test'), 'whsec_test')$$,
    'ZF510', NULL, 'ZF510: no id');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":42}', pg_temp.sign('{"id":42}', 'whsec_test'), 'whsec_test')$$,
    'ZF510', NULL, 'ZF510: id not a string');
-- ZF511 invalid_inbox_argument
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('Stripe Inc', '{"id":"e"}', pg_temp.sign('{"id":"e"}', 's'), 's')$$,
    'ZF511', NULL, 'ZF511: bad provider');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"e"}', pg_temp.sign('{"id":"e"}', 's'), '')$$,
    'ZF511', NULL, 'ZF511: empty secret');
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"e"}', pg_temp.sign('{"id":"e"}', 's'), 's', '-1 minute')$$,
    'ZF511', NULL, 'ZF511: negative tolerance');
-- One documented length for an event id (500 bytes) in the inbox and in the queue's unique key.
SELECT throws_ok($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"' || repeat('e', 501) || '"}',
                      pg_temp.sign('{"id":"' || repeat('e', 501) || '"}', 'whsec_test'), 'whsec_test')$$,
    'ZF511', NULL, 'ZF511: an event id of 501 bytes');
SELECT is((SELECT count(*) FROM fincore.inbox WHERE source = 'webhook:stripe'), 3::bigint,
    'refused deliveries recorded nothing (evt_1, evt_2, evt_4 only)');
CREATE TEMP TABLE accepted300 AS SELECT * FROM fincore.accept_webhook('stripe', '{"id":"' || repeat('e', 300) || '"}',
                      pg_temp.sign('{"id":"' || repeat('e', 300) || '"}', 'whsec_test'), 'whsec_test');
SELECT results_eq($$SELECT accepted, job_id = (SELECT j.id FROM fincore.jobs j WHERE j.unique_key = repeat('e', 300))
                      FROM accepted300$$,
    $$VALUES (true, true)$$, 'an event id of 300 bytes is recorded and enqueued (it failed in the queue before)');
SELECT results_eq($$SELECT accepted FROM fincore.accept_webhook('stripe', '{"id":"' || repeat('e', 500) || '"}',
                      pg_temp.sign('{"id":"' || repeat('e', 500) || '"}', 'whsec_test'), 'whsec_test')$$,
    ARRAY[true], 'an event id of 500 bytes, the documented maximum, too');

-- With the job queue installed, an accepted event is enqueued once, on webhook:<provider>,
-- with the event id as unique key.
INSERT INTO accepted SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_q"}',
                        pg_temp.sign('{"id":"evt_q"}', 'whsec_test'), 'whsec_test');
SELECT results_eq($$SELECT event_id, accepted, job_id = (SELECT j.id FROM fincore.jobs j WHERE j.unique_key = 'evt_q')
                      FROM accepted WHERE event_id = 'evt_q'$$,
    $$VALUES ('evt_q'::text, true, true)$$, 'an accepted event is enqueued and its job id returned');
SELECT results_eq($$SELECT queue, payload, unique_key, priority, max_attempts FROM fincore.jobs WHERE unique_key = 'evt_q'$$,
    $$VALUES ('webhook:stripe'::text, '{"id":"evt_q"}'::jsonb, 'evt_q'::text, 0::smallint, 25)$$,
    'on queue webhook:<provider>, with the event id as unique key');
SELECT results_eq($$SELECT accepted, job_id FROM fincore.accept_webhook('stripe', '{"id":"evt_q"}',
                        pg_temp.sign('{"id":"evt_q"}', 'whsec_test'), 'whsec_test')$$,
    $$VALUES (false, NULL::bigint)$$, 'a replay is not enqueued again');
SELECT is((SELECT count(*) FROM fincore.jobs WHERE unique_key = 'evt_q'), 1::bigint, 'one job for two deliveries');

-- Webhooks as the app role that serves the endpoint, in its tenant.
SELECT fincore.set_tenant(NULL);
SAVEPOINT hooks_as_app;
SET LOCAL ROLE authenticated;
SELECT pg_temp.as_tenant('B');
SELECT results_eq($$SELECT accepted FROM fincore.accept_webhook('stripe', '{"id":"evt_1"}',
                        pg_temp.sign('{"id":"evt_1"}', 'whsec_b'), 'whsec_b')$$,
    ARRAY[true], 'tenant B''s evt_1 is not tenant A''s');
SELECT results_eq($$SELECT message_id FROM fincore.inbox ORDER BY 1$$, ARRAY['evt_1'], 'B sees only its own inbox');
ROLLBACK TO SAVEPOINT hooks_as_app;
SELECT is((SELECT count(*) FROM fincore.inbox WHERE source = 'webhook:stripe'), 6::bigint,
    'tenant A''s webhook inbox holds evt_1, evt_2, evt_4, the ids of 300 and 500 bytes and evt_q');

-- Positions taken and events written in this cluster never read as a restored dump's.
SELECT is_empty($$SELECT 1 FROM fincore.outbox_restores$$, 'nothing here was taken for a restored dump to rebase');

SELECT * FROM finish();
ROLLBACK;
