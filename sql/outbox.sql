--
-- outbox: emit in the caller's transaction, consume in commit order, ack, nack,
-- retention steps, the inbox and webhook signatures.  Event ids and times vary,
-- so the output shows the other columns.  test/pgtap/outbox.sql checks every
-- SQLSTATE; test/integration/test_outbox.py checks delivery under concurrency.
--
SET search_path = fincore, public;
-- The SQLSTATE of a statement whose message would name a varying id or time.
CREATE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN '00000';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT fincore.create_tenant('Regress outbox', 'cccccccc-0b0b-4000-8000-000000000003') IS NOT NULL AS tenant;
SELECT fincore.outbox_configure(rotation_interval => '0') IS NOT NULL AS configured;
SELECT fincore.subscribe('billing', '{orders}');
SELECT fincore.subscribe('audit', '{*}', max_attempts => 2, backoff => '0');

-- Two transactions: one commits, one rolls back.
BEGIN;
SELECT fincore.set_tenant('cccccccc-0b0b-4000-8000-000000000003');
SELECT fincore.emit('orders', 'order.created', 'order', 'o-1', '{"total": "12.00 USD"}') IS NOT NULL AS emitted;
SELECT fincore.emit('orders', 'order.paid', 'order', 'o-1', '{"total": "12.00 USD"}', '{"trace": "t-1"}') IS NOT NULL AS emitted;
SELECT fincore.emit('refunds', 'refund.requested', 'order', 'o-1', '{"amount": "2.00 USD"}') IS NOT NULL AS emitted;
COMMIT;
BEGIN;
SELECT fincore.set_tenant('cccccccc-0b0b-4000-8000-000000000003');
SELECT fincore.emit('orders', 'order.cancelled', 'order', 'o-1', '{}') IS NOT NULL AS emitted;
ROLLBACK;

-- Each consumer gets its topics; nothing of the rolled-back transaction.
SELECT topic, type, aggregatetype, aggregateid, payload, headers, retries FROM fincore.poll('billing');
SELECT topic, type, aggregateid, payload FROM fincore.poll('audit');
SELECT consumer, topics, pending, retrying, dead FROM fincore.consumer_lag();

-- Without ack the same events come again; ack takes everything up to an event.
SELECT count(*) AS again FROM fincore.poll('billing');
SELECT fincore.ack('billing', (SELECT id FROM fincore.poll('billing') ORDER BY seq DESC LIMIT 1));
SELECT count(*) AS after_ack FROM fincore.poll('billing');
SELECT pg_temp.sqlstate_of($$SELECT fincore.ack('billing', (SELECT id FROM fincore.outbox_events WHERE type = 'order.paid'))$$) AS ack_twice;

-- nack: the event before it is acknowledged, the failed one retried, then dead-lettered.
SELECT fincore.nack('audit', (SELECT id FROM fincore.outbox_events WHERE type = 'order.paid'), 'timeout');
SELECT type, retries FROM fincore.poll('audit');
SELECT fincore.nack('audit', (SELECT id FROM fincore.outbox_events WHERE type = 'order.paid'), 'timeout again');
SELECT consumer, type, attempts, last_error FROM fincore.dead_events;
SELECT fincore.ack('audit', (SELECT id FROM fincore.outbox_events WHERE type = 'refund.requested'));
SELECT fincore.replay_dead('audit');
SELECT type, retries FROM fincore.poll('audit');
SELECT consumer, pending, retrying, dead FROM fincore.consumer_lag();

-- Retention: rotate, seal and truncate, one step per run.
SELECT fincore.outbox_maintenance() AS rotated;
SELECT slot, state FROM fincore.outbox_slots ORDER BY slot;
SELECT fincore.outbox_maintenance() AS sealed;
SELECT slot, state, sealed_snapshot IS NOT NULL AS has_snapshot FROM fincore.outbox_slots ORDER BY slot;

-- Errors.
SELECT fincore.emit('orders', 'order.created', 'order', 'o-2', '{}');                 -- ZF203
BEGIN;
SELECT fincore.set_tenant('cccccccc-0b0b-4000-8000-000000000003');
SELECT fincore.emit('bad topic', 'order.created', 'order', 'o-2', '{}');              -- ZF501
ROLLBACK;
SELECT * FROM fincore.poll('nobody');                                                -- ZF502
SELECT * FROM fincore.poll('billing', 0);                                            -- ZF503
\set VERBOSITY terse
SELECT fincore.subscribe('billing', '{orders}', 'cccccccc-0b0b-4000-8000-000000000003'); -- ZF504
\set VERBOSITY default

-- Inbox and webhooks.
BEGIN;
SELECT fincore.set_tenant('cccccccc-0b0b-4000-8000-000000000003');
SELECT fincore.inbox_accept('bank', 'stmt-1', '{"lines": 3}') AS first, fincore.inbox_accept('bank', 'stmt-1', '{}') AS second;
CREATE FUNCTION pg_temp.sign(payload text, secret text, t bigint DEFAULT extract(epoch FROM now())::bigint) RETURNS text
    LANGUAGE sql AS $$ SELECT 't=' || t || ',v1=' || encode(public.hmac(t || '.' || payload, secret, 'sha256'), 'hex') $$;
SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_1","type":"charge.succeeded"}',
    pg_temp.sign('{"id":"evt_1","type":"charge.succeeded"}', 'whsec_regress'), 'whsec_regress');
SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_1","type":"charge.succeeded"}',
    pg_temp.sign('{"id":"evt_1","type":"charge.succeeded"}', 'whsec_regress'), 'whsec_regress');
SAVEPOINT s;
SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_2","amount":1}',
    pg_temp.sign('{"id":"evt_2","amount":1000}', 'whsec_regress'), 'whsec_regress');  -- ZF508
ROLLBACK TO SAVEPOINT s;
SELECT pg_temp.sqlstate_of($$SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_2"}',
    pg_temp.sign('{"id":"evt_2"}', 'whsec_regress', 1700000000), 'whsec_regress')$$) AS stale;
SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_2"}', 'v1=abc', 'whsec_regress'); -- ZF507
ROLLBACK TO SAVEPOINT s;
SELECT source, message_id, payload FROM fincore.inbox ORDER BY source, message_id;
ROLLBACK;
