-- test/upgrade/fill-0.1.0.sql: a database at release 0.1.0, filled through 0.1.0's API as an
-- application would (./scripts/test --upgrade runs it, then installs the new build over 0.1.0's
-- and updates the extension).  Only functions and arguments 0.1.0 has.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

SELECT fincore.create_tenant('Released', 'aaaaaaaa-0100-4000-8000-000000000001');
SELECT fincore.subscribe('released_ledger', '{ledger}');
SELECT fincore.subscribe('released_orders', '{orders}', tenant_scope => 'aaaaaaaa-0100-4000-8000-000000000001');

BEGIN;
SELECT fincore.set_tenant('aaaaaaaa-0100-4000-8000-000000000001');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-0100-4000-8000-0000000000a1');
SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}',
                              id => 'aaaaaaaa-0100-4000-8000-0000000000a2');
SELECT fincore.create_account('USD', flags => '{hot}', id => 'aaaaaaaa-0100-4000-8000-0000000000a3');
SELECT fincore.transfer('aaaaaaaa-0100-4000-8000-0000000000a1', 'aaaaaaaa-0100-4000-8000-0000000000a2', 10000);
SELECT fincore.transfer('aaaaaaaa-0100-4000-8000-0000000000a2', 'aaaaaaaa-0100-4000-8000-0000000000a3', 300);
SELECT fincore.transfer('aaaaaaaa-0100-4000-8000-0000000000a2', 'aaaaaaaa-0100-4000-8000-0000000000a1', 500,
                        'aaaaaaaa-0100-4000-8000-0000000000f1', pending => true);
SELECT fincore.define_fee_schedule('released_card', 'USD', '{"components": [{"type": "flat", "amount": 30}]}', '2020-01-01');
SELECT fincore.emit('orders', 'order.placed', 'order', 'released-o1', '{"n": 1}');
SELECT fincore.emit('orders', 'order.placed', 'order', 'released-o2', '{"n": 2}');
SELECT fincore.inbox_accept('released_psp', 'released-msg-1', '{"ok": true}');
SELECT fincore.enqueue('released', '{"n": 1}');
SELECT fincore.enqueue('released', '{"n": 2}');
COMMIT;

-- released_ledger reads the first event and acknowledges it; the rest wait for after the update.
BEGIN;
SELECT fincore.ack('released_ledger', (SELECT p.id FROM fincore.poll('released_ledger', 1) p));
COMMIT;
