-- docs/demo.sql: a short tour of fincore, run by ./scripts/demo in a throwaway cluster.
-- Every statement is plain SQL an application would send.
\pset footer off
\set ECHO none
\echo
\echo '== 1. Money: an exact amount with its currency (integer minor units, never floats)'
SELECT '12.34 USD'::fincore.amount AS usd, '1000 JPY'::fincore.amount AS jpy,
       '1.250 BHD'::fincore.amount AS bhd, fincore.from_minor(-50, 'EUR') AS from_minor;

\echo '== 2. Arithmetic is exact and refuses to mix currencies'
SELECT '0.10 USD'::fincore.amount OPERATOR(fincore.+) '0.20 USD' AS "0.10 + 0.20",
       '19.99 USD'::fincore.amount OPERATOR(fincore.*) 3 AS "19.99 x 3";
-- pg_temp.try(sql): runs a statement and shows the error it raises (SQLSTATE and message).
CREATE FUNCTION pg_temp.try(stmt text, OUT state text, OUT message text) LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    state := '00000'; message := 'ok';
EXCEPTION WHEN OTHERS THEN
    state := SQLSTATE; message := SQLERRM;
END $$;
SELECT s AS statement, r.* FROM unnest(ARRAY[
    $q$SELECT '1.00 USD'::fincore.amount OPERATOR(fincore.+) '1.00 EUR'$q$,
    $q$SELECT '1.005 USD'::fincore.amount$q$,
    $q$SELECT '92233720368547758.07 USD'::fincore.amount OPERATOR(fincore.*) 2$q$,
    $q$SELECT '10.00 USD'::fincore.amount OPERATOR(fincore./) 3$q$]) AS s,
    LATERAL pg_temp.try(s) AS r;

\echo '== 3. Rounding is always explicit: one division routine, seven modes'
SELECT m AS mode, fincore.div_round(25, 10, m) AS "2.5", fincore.div_round(-25, 10, m) AS "-2.5",
       fincore.multiply('0.50 USD', 0.05, m) AS "5% of 0.50 USD"
  FROM unnest(ARRAY['half_even', 'half_up', 'half_down', 'up', 'down', 'ceiling', 'floor']) AS m;

\echo '== 4. Allocation never loses a cent'
SELECT fincore.allocate('100.00 USD', 3) AS "100.00 USD in three",
       fincore.allocate('0.05 USD', ARRAY[70, 30]::bigint[]) AS "0.05 USD 70/30";

\echo '== 5. Registered assets: loyalty points and a stablecoin'
SELECT fincore.register_currency('POINTS', 0, 'Loyalty points'),
       fincore.register_currency('USDC', 6, 'USD Coin');
SELECT '1500 POINTS'::fincore.amount AS points, '12.345678 USDC'::fincore.amount AS usdc;

\echo '== 6. Aggregates and indexes work like any other type'
SELECT fincore.currency(a) AS currency, fincore.sum(a) AS total, count(*) AS n
  FROM (VALUES ('10.00 USD'::fincore.amount), ('2.50 USD'), ('7 JPY'), ('5 JPY')) AS v(a)
 GROUP BY 1 ORDER BY 1;

\echo '== 7. Ledger: a tenant, accounts, and money that only moves in balanced, checked transfers'
-- A trusted backend names the tenant it acts for; a PostgREST client's JWT would carry it.
SELECT fincore.create_tenant('Demo shop', '0de0de00-0000-4000-8000-00000000f001') AS tenant \gset
SELECT fincore.subscribe('demo_ledger', '{ledger}') \g /dev/null
BEGIN;
SELECT fincore.set_tenant(:'tenant') \g /dev/null
SELECT fincore.create_account('USD', id => 'de000000-0000-4000-8000-000000000001', external_ref => 'bank') AS bank,
       fincore.create_account('USD', id => 'de000000-0000-4000-8000-000000000002', external_ref => 'alice',
                              flags => '{debits_must_not_exceed_credits}') AS alice,
       fincore.create_account('USD', id => 'de000000-0000-4000-8000-000000000003', external_ref => 'bob',
                              flags => '{debits_must_not_exceed_credits}') AS bob,
       fincore.create_account('USD', id => 'de000000-0000-4000-8000-000000000004', external_ref => 'coffee shop',
                              flags => '{history}') AS merchant,
       fincore.create_account('USD', id => 'de000000-0000-4000-8000-000000000005', external_ref => 'fees',
                              flags => '{hot}') AS fees \gset
\echo '-- a wallet top-up: the bank pays 100.00 into Alice''s wallet'
SELECT result, kind, fincore.from_minor(amount, 'USD') AS amount
  FROM fincore.transfer(:'bank', :'alice', 10000, id => 'de000000-0000-4000-8000-0000000000a1');
\echo '-- the same request again (a retry): nothing moves twice'
SELECT result, fincore.from_minor(amount, 'USD') AS amount
  FROM fincore.transfer(:'bank', :'alice', 10000, id => 'de000000-0000-4000-8000-0000000000a1');
\echo '-- a card hold of 40.00 at the coffee shop, captured for 4.50: the rest is released'
SELECT id AS hold FROM fincore.transfer(:'alice', :'merchant', 4000, pending => true, timeout => '1 hour') \gset
SELECT fincore.from_minor(debits_pending, 'USD') AS held, fincore.from_minor(available, 'USD') AS available
  FROM fincore.balance(:'alice');
SELECT result, kind, fincore.from_minor(amount, 'USD') AS captured FROM fincore.post_pending(:'hold', 450);
SELECT fincore.from_minor(debits_pending, 'USD') AS held, fincore.from_minor(available, 'USD') AS available
  FROM fincore.balance(:'alice');
\echo '-- Alice cannot spend what she does not have (and nothing is written)'
SELECT r.* FROM unnest(ARRAY[$q$SELECT fincore.transfer('de000000-0000-4000-8000-000000000002', 'de000000-0000-4000-8000-000000000003', 100000)$q$]) AS s,
    LATERAL pg_temp.try(s) AS r;

\echo '== 8. Fees: 2.9% + 30c (+1.5% international), computed exactly in C and posted as a linked leg'
SELECT fincore.define_fee_schedule('card', 'USD', '{"components": [
    {"type": "percentage", "rate": "0.029"},
    {"type": "flat", "amount": "0.30 USD"},
    {"type": "percentage", "name": "international", "rate": "0.015", "when": {"card": "international"}}]}',
    effective_from => now() - interval '1 day') \g /dev/null
SELECT fincore.calculate_fee('card', 10000) AS "fee on 100.00",
       fincore.calculate_fee('card', 10000, '{"card": "international"}') AS "international",
       fincore.gross_up('card', 10000) AS "charge that nets 100.00";
SELECT * FROM fincore.fee_breakdown('card', 10000, '{"card": "international"}');
\echo '-- a P2P payment of 20.00 from Alice to Bob with the fee on top, in one call'
SELECT result, fincore.from_minor(amount, 'USD') AS amount, fincore.from_minor(fee, 'USD') AS fee
  FROM fincore.transfer(:'alice', :'bob', 2000, fee_schedule => 'card', fee_account => :'fees',
                        id => 'de000000-0000-4000-8000-0000000000a2', metadata => '{"memo": "concert tickets"}');
\echo '-- a refund: Bob sends 5.00 of it back'
SELECT result, kind, fincore.from_minor(amount, 'USD') AS refunded
  FROM fincore.reverse_transfer('de000000-0000-4000-8000-0000000000a2'::uuid, 500);
SELECT external_ref, flags, fincore.from_minor(credits_posted - debits_posted, 'USD') AS balance,
       fincore.from_minor(debits_pending, 'USD') AS held
  FROM fincore.account_balances ORDER BY external_ref;
\echo '-- and the books add up: verify() returns nothing'
SELECT count(*) AS broken_invariants FROM fincore.verify();
COMMIT;

\echo '== 9. Outbox: every transfer above became an event, in the same transaction; consumers get each once'
BEGIN;
SELECT type, aggregatetype, payload->>'kind' AS kind, payload->>'amount_text' AS amount FROM fincore.poll('demo_ledger');
SELECT fincore.ack('demo_ledger', (SELECT id FROM fincore.poll('demo_ledger') ORDER BY seq DESC LIMIT 1)) \g /dev/null
COMMIT;
\echo '-- an event in a transaction that rolls back is never delivered'
SELECT fincore.subscribe('demo_billing', '{orders}') \g /dev/null
BEGIN;
SELECT fincore.set_tenant(:'tenant') \g /dev/null
SELECT fincore.emit('orders', 'order.created', 'order', 'o-1', '{"total": "19.99 USD"}') IS NOT NULL AS emitted;
COMMIT;
BEGIN;
SELECT fincore.set_tenant(:'tenant') \g /dev/null
SELECT fincore.emit('orders', 'order.cancelled', 'order', 'o-1', '{}') IS NOT NULL AS emitted_then_rolled_back;
ROLLBACK;
BEGIN;
SELECT type, aggregateid, payload FROM fincore.poll('demo_billing');
SELECT fincore.ack('demo_billing', (SELECT id FROM fincore.poll('demo_billing') ORDER BY seq DESC LIMIT 1)) \g /dev/null
COMMIT;
SELECT consumer, pending FROM fincore.consumer_lag();

\echo '== 10. Inbox: a signed webhook is accepted once; a replay changes nothing'
BEGIN;
SELECT fincore.set_tenant(:'tenant') \g /dev/null
SELECT 't=' || t || ',v1=' || encode(public.hmac(t || '.{"id":"evt_42"}', 'whsec_demo', 'sha256'), 'hex') AS sig
  FROM (SELECT extract(epoch FROM now())::bigint AS t) s \gset
SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_42"}', :'sig', 'whsec_demo');
SELECT * FROM fincore.accept_webhook('stripe', '{"id":"evt_42"}', :'sig', 'whsec_demo');
SELECT r.* FROM unnest(ARRAY[$q$SELECT fincore.accept_webhook('stripe', '{"id":"evt_42","amount":1}', 't=1,v1=00', 'whsec_demo')$q$]) AS s,
    LATERAL pg_temp.try(s) AS r;
COMMIT;

\echo '== 11. Job queue: enqueue in a transaction, claim with SKIP LOCKED, complete'
BEGIN;
SELECT fincore.set_tenant(:'tenant') \g /dev/null
SELECT fincore.enqueue('emails', '{"to": "ann@example.com", "template": "receipt"}') AS job,
       fincore.enqueue('emails', '{"to": "bob@example.com"}', priority => 5::smallint) AS urgent_job,
       fincore.enqueue('emails', '{"to": "ann@example.com"}', unique_key => 'welcome-ann') AS unique_job,
       fincore.enqueue('emails', '{"to": "ann@example.com", "again": true}', unique_key => 'welcome-ann') AS same_unique_job;
COMMIT;
-- A worker (trusted, serving every tenant) claims two jobs, the urgent one first; it completes
-- one and fails the other, which is retried after a backoff.
CREATE TEMP TABLE claimed AS SELECT * FROM fincore.dequeue('emails', 2, '1 minute', 'worker-1');
SELECT id, tenant_id, attempt, payload FROM claimed;
SELECT fincore.complete(id, '{"sent": true}', attempt) FROM claimed WHERE priority = 5;
SELECT fincore.fail(id, 'SMTP 451: try again later', attempt => attempt) - now() AS retry_in
  FROM claimed WHERE priority = 0;
SELECT queue, ready, scheduled, running, dead, completed, failed FROM fincore.queue_stats();

\echo '== 12. Rate limits in shared memory: 5 a second with a burst of 2, no table written'
-- fincore is in shared_preload_libraries here (docs/rate-limits.md); each call is a decision.
SELECT 1 AS call, * FROM fincore.rate_limit('demo:alice', 5, '1 second', 2)
UNION ALL SELECT 2, * FROM fincore.rate_limit('demo:alice', 5, '1 second', 2)
UNION ALL SELECT 3, * FROM fincore.rate_limit('demo:alice', 5, '1 second', 2)
UNION ALL SELECT 4, * FROM fincore.rate_limit('demo:alice', 5, '1 second', 2);
-- In-flight limits: at most one export at a time per user, given back when the transaction ends.
BEGIN;
SELECT fincore.concurrency_acquire('export:alice', 1) AS first, fincore.concurrency_acquire('export:alice', 1) AS second;
COMMIT;
SELECT fincore.concurrency_acquire('export:alice', 1) AS after_commit;
