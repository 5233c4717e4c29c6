-- pgTAP: payments (docs/payments.md): the state machine's transitions and refusals
-- (ZF901-ZF909), the ledger postings of every step, the saga's first-report-wins, soft and
-- hard declines, timeouts and their compensations, idempotency, disputes, that a refusal
-- writes nothing, and who may call what.
BEGIN;
SET search_path = fincore, public;
SELECT plan(134);

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.create_tenant('Payments A', '9a000000-0000-4000-8000-00000000000a');
SELECT fincore.create_tenant('Payments B', '9b000000-0000-4000-8000-00000000000b');
SELECT set_config('request.jwt.claims', '{"tenant_id":"9a000000-0000-4000-8000-00000000000a"}', true);

-- payer (anything goes), poor (debits must not exceed credits: nothing to hold), the provider's
-- settlement, disputes and loss accounts; eur: another currency.
SELECT fincore.create_account('USD', id => 'aa000000-0000-4000-8000-000000000001');
SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}', id => 'aa000000-0000-4000-8000-000000000002');
SELECT fincore.create_account('USD', id => 'aa000000-0000-4000-8000-000000000010');
SELECT fincore.create_account('USD', id => 'aa000000-0000-4000-8000-000000000011');
SELECT fincore.create_account('USD', id => 'aa000000-0000-4000-8000-000000000012');
SELECT fincore.create_account('EUR', id => 'aa000000-0000-4000-8000-000000000020');

CREATE FUNCTION pg_temp.acct(n int) RETURNS uuid LANGUAGE sql AS $$
    SELECT ('aa000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
CREATE FUNCTION pg_temp.bal(n int) RETURNS text LANGUAGE sql AS $$
    SELECT format('dp=%s dpo=%s cp=%s cpo=%s', debits_pending, debits_posted, credits_pending, credits_posted)
      FROM fincore.accounts WHERE id = pg_temp.acct(n) $$;
-- Rows written, counted from what the database held when this file began (an upgraded
-- database holds some: ./scripts/test --upgrade).
CREATE FUNCTION pg_temp.counts() RETURNS bigint[] LANGUAGE sql AS $$
    SELECT ARRAY[(SELECT count(*) FROM fincore.payments),
                 (SELECT count(*) FROM fincore.payment_steps),
                 (SELECT count(*) FROM fincore.transfers),
                 (SELECT count(*) FROM fincore.jobs),
                 (SELECT count(*) FROM fincore.outbox_events)] $$;
CREATE TEMP TABLE rows_before AS SELECT pg_temp.counts() AS c;
CREATE FUNCTION pg_temp.rows() RETURNS text LANGUAGE sql AS $$
    SELECT format('payments=%s steps=%s transfers=%s jobs=%s events=%s', n[1] - b.c[1], n[2] - b.c[2], n[3] - b.c[3], n[4] - b.c[4], n[5] - b.c[5])
      FROM pg_temp.counts() AS n, rows_before AS b $$;
CREATE FUNCTION pg_temp.ok_step(pid uuid, step int, outcome text, code text DEFAULT NULL, source text DEFAULT 'worker')
    RETURNS text LANGUAGE sql AS $$
    SELECT (fincore.payment_step_result(pid, step, outcome, code, source)).status $$;
CREATE FUNCTION pg_temp.status(pid uuid) RETURNS text LANGUAGE sql AS $$
    SELECT status FROM fincore.payments WHERE id = pid $$;
CREATE FUNCTION pg_temp.amounts(pid uuid) RETURNS text LANGUAGE sql AS $$
    SELECT format('auth=%s cap=%s rel=%s ref=%s disp=%s lost=%s', authorized, captured, released, refunded,
                  disputed, lost) FROM fincore.payments WHERE id = pid $$;
CREATE FUNCTION pg_temp.events(pid uuid) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(type, ',' ORDER BY seq) FROM fincore.outbox_events WHERE aggregateid = pid::text $$;

-- ---------------------------------------------------------------------------
-- Catalogue, providers
-- ---------------------------------------------------------------------------
SELECT has_table('fincore', 'payment_providers', 'table payment_providers exists');
SELECT has_table('fincore', 'payments', 'table payments exists');
SELECT has_table('fincore', 'payment_steps', 'table payment_steps exists');
SELECT ok((SELECT bool_and(relrowsecurity AND relforcerowsecurity) FROM pg_class
            WHERE oid IN ('fincore.payments'::regclass, 'fincore.payment_steps'::regclass,
                          'fincore.payment_providers'::regclass)), 'payments: row level security forced');
SELECT is((SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = 'fincore.payment_steps'::regclass AND i.indisprimary),
    '{tenant_id,payment_id,step_no}'::name[], 'steps are keyed by tenant first');

SELECT throws_ok($$SELECT fincore.create_payment_provider('Fake!', pg_temp.acct(10))$$, 'ZF901', NULL,
    'a provider name is validated');
SELECT throws_ok($$SELECT fincore.create_payment_provider('fake', 'aa000000-0000-4000-8000-0000000000ff')$$, 'ZF301', NULL,
    'a provider''s settlement account must be the tenant''s');
SELECT throws_ok($$SELECT fincore.create_payment_provider('fake', pg_temp.acct(10), step_timeout => '-1 s')$$, 'ZF901', NULL,
    'a provider''s step timeout must be positive');
SELECT lives_ok($$SELECT fincore.create_payment_provider('fake', pg_temp.acct(10), webhook_secret => 'whsec',
    hard_decline_codes => '{stolen_card,insufficient_funds}', disputes_account => pg_temp.acct(11),
    loss_account => pg_temp.acct(12), dispute_fee => 15, max_attempts => 5)$$, 'a provider is created');

-- ---------------------------------------------------------------------------
-- create_payment: validation and idempotency
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT fincore.create_payment(0, 'USD', 'fake')$$, 'ZF901', NULL, 'amount must be positive');
SELECT throws_ok($$SELECT fincore.create_payment(100, 'USD', 'nope')$$, 'ZF908', NULL, 'an unknown provider is ZF908');
SELECT throws_ok($$SELECT fincore.create_payment(100, 'EUR', 'fake')$$, 'ZF103', NULL,
    'the currency is the settlement account''s');
SELECT throws_ok($$SELECT fincore.create_payment(100, 'USD', 'fake', capture_method => 'later')$$, 'ZF901', NULL,
    'an unknown capture method is ZF901');
SELECT throws_ok($$SELECT fincore.create_payment(100, 'USD', 'fake', multicapture => true)$$, 'ZF901', NULL,
    'multicapture needs manual capture');
SELECT throws_ok($$SELECT fincore.create_payment(100, 'USD', 'fake', confirm => true)$$, 'ZF901', NULL,
    'confirming at creation needs a payer');
SELECT is(pg_temp.rows(), 'payments=0 steps=0 transfers=0 jobs=0 events=0', 'the refusals wrote nothing');

SELECT is((fincore.create_payment(1000, 'USD', 'fake', pg_temp.acct(1), capture_method => 'manual',
           idempotency_key => 'order-1', id => 'bb000000-0000-4000-8000-000000000001')).status,
          'requires_confirmation', 'a payment with a payer requires confirmation');
SELECT is((fincore.create_payment(1000, 'USD', 'fake', pg_temp.acct(1), capture_method => 'manual',
           idempotency_key => 'order-1')).id, 'bb000000-0000-4000-8000-000000000001'::uuid,
          'the same idempotency key returns the same payment');
SELECT throws_ok($$SELECT fincore.create_payment(999, 'USD', 'fake', pg_temp.acct(1), capture_method => 'manual',
                   idempotency_key => 'order-1')$$, 'ZF906', NULL, 'the same key with another amount is refused');
SELECT is((SELECT count(*) FROM fincore.payments)::int, 1, 'one payment for the key');

-- ---------------------------------------------------------------------------
-- Manual capture: confirm, authorize, capture part, refund
-- ---------------------------------------------------------------------------
SELECT is((fincore.confirm_payment('bb000000-0000-4000-8000-000000000001')).status, 'processing', 'confirmed: processing');
SELECT is(pg_temp.bal(1), 'dp=1000 dpo=0 cp=0 cpo=0', 'confirmation holds the amount on the payer');
SELECT is(pg_temp.bal(10), 'dp=0 dpo=0 cp=1000 cpo=0', '... for the settlement account');
SELECT is((SELECT format('%s %s %s', kind, status, provider_key) FROM fincore.payment_steps
            WHERE payment_id = 'bb000000-0000-4000-8000-000000000001' AND step_no = 1),
          'authorize pending bb000000-0000-4000-8000-000000000001:1:authorize', 'an authorize step with its provider key');
SELECT is((SELECT format('%s %s', queue, unique_key) FROM fincore.jobs
            WHERE payload->>'payment_id' = 'bb000000-0000-4000-8000-000000000001'),
          'payments:fake bb000000-0000-4000-8000-000000000001:1:authorize', 'a job on the provider''s queue, keyed by it');
SELECT is((fincore.confirm_payment('bb000000-0000-4000-8000-000000000001')).status, 'processing',
          'confirming again is a replay');
SELECT is((SELECT count(*) FROM fincore.payment_steps)::int, 1, '... that made no step');

SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000001', 1, 'succeeded'), 'succeeded', 'the worker reports success');
SELECT is(pg_temp.status('bb000000-0000-4000-8000-000000000001'), 'requires_capture', 'authorized: requires capture');
SELECT is((fincore.payment_webhook_result('bb000000-0000-4000-8000-000000000001:1:authorize', 'failed', 'stolen_card')).status,
          'succeeded', 'a later webhook saying otherwise is a no-op');
SELECT is(pg_temp.status('bb000000-0000-4000-8000-000000000001'), 'requires_capture', '... the payment unchanged');
SELECT is(pg_temp.bal(1), 'dp=1000 dpo=0 cp=0 cpo=0', '... the hold too');

SELECT throws_ok($$SELECT fincore.capture_payment('bb000000-0000-4000-8000-000000000001', 1001)$$, 'ZF904', NULL,
    'capturing more than is held is ZF904');
SELECT throws_ok($$SELECT fincore.refund_payment('bb000000-0000-4000-8000-000000000001', 1)$$, 'ZF903', NULL,
    'refunding an uncaptured payment is ZF903');
SELECT is((fincore.capture_payment('bb000000-0000-4000-8000-000000000001', 600, request_key => 'cap-1')).step_no, 2,
    'a capture of 600 is step 2');
SELECT is((fincore.capture_payment('bb000000-0000-4000-8000-000000000001', 600, request_key => 'cap-1')).step_no, 2,
    'the same request key is the same step');
SELECT throws_ok($$SELECT fincore.capture_payment('bb000000-0000-4000-8000-000000000001', 500, request_key => 'cap-1')$$,
    'ZF906', NULL, 'the same request key with another amount is ZF906');
SELECT throws_ok($$SELECT fincore.capture_payment('bb000000-0000-4000-8000-000000000001', 100)$$, 'ZF903', NULL,
    'a second capture of a payment without multicapture is ZF903');
SELECT throws_ok($$SELECT fincore.cancel_payment('bb000000-0000-4000-8000-000000000001')$$, 'ZF907', NULL,
    'canceling while a capture is in flight is ZF907');
SELECT is(pg_temp.bal(1), 'dp=1000 dpo=0 cp=0 cpo=0', 'asking for a capture moves no money yet');

SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000001', 2, 'failed', 'processor_busy'), 'pending',
    'a soft decline from the worker leaves the step pending (retried)');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000001', 2, 'succeeded'), 'succeeded', 'then it succeeds');
SELECT is(pg_temp.status('bb000000-0000-4000-8000-000000000001'), 'succeeded', 'captured: succeeded');
SELECT is(pg_temp.amounts('bb000000-0000-4000-8000-000000000001'), 'auth=1000 cap=600 rel=400 ref=0 disp=0 lost=0',
    'held = authorized - captured - released = 0');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=600 cp=0 cpo=0', 'the capture posted 600 and released the rest');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000001', 2, 'succeeded', source => 'webhook'), 'succeeded',
    'the webhook''s duplicate report is a no-op');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=600 cp=0 cpo=0', '... nothing posted twice');

SELECT throws_ok($$SELECT fincore.refund_payment('bb000000-0000-4000-8000-000000000001', 601)$$, 'ZF905', NULL,
    'refunding more than was captured is ZF905');
SELECT is((fincore.refund_payment('bb000000-0000-4000-8000-000000000001', 200)).step_no, 3, 'a refund of 200');
SELECT throws_ok($$SELECT fincore.refund_payment('bb000000-0000-4000-8000-000000000001', 401)$$, 'ZF905', NULL,
    'a refund in flight counts against what can be refunded');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000001', 3, 'succeeded'), 'succeeded', 'the refund succeeds');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=600 cp=0 cpo=200', 'the refund is a reversal to the payer');
SELECT is((SELECT kind FROM fincore.transfers WHERE id = (SELECT transfer_ids[1] FROM fincore.payment_steps
            WHERE payment_id = 'bb000000-0000-4000-8000-000000000001' AND step_no = 3)), 'reversal',
    'linked to the capture as a reversal');
SELECT is((fincore.refund_payment('bb000000-0000-4000-8000-000000000001')).amount, 400::bigint,
    'refund without an amount: all that is left');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000001', 4, 'succeeded'), 'succeeded', 'it succeeds');
SELECT is(pg_temp.status('bb000000-0000-4000-8000-000000000001'), 'refunded', 'fully refunded: refunded');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=600 cp=0 cpo=600', 'the payer has all of it back');
SELECT is(pg_temp.events('bb000000-0000-4000-8000-000000000001'),
    'payment.created,payment.processing,payment.authorized,payment.capture_requested,payment.captured,payment.refund_requested,payment.refunded,payment.refund_requested,payment.refunded',
    'an event for every transition');

-- ---------------------------------------------------------------------------
-- Automatic capture; declines; requires_action; timeouts
-- ---------------------------------------------------------------------------
SELECT is((fincore.create_payment(300, 'USD', 'fake', pg_temp.acct(1), confirm => true,
           id => 'bb000000-0000-4000-8000-000000000002')).status, 'processing', 'confirm => true confirms at once');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000002', 1, 'succeeded'), 'succeeded', 'authorized');
SELECT is(pg_temp.status('bb000000-0000-4000-8000-000000000002'), 'succeeded', 'automatic capture: succeeded at once');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=900 cp=0 cpo=600', 'captured in full');

SELECT is((fincore.create_payment(50, 'USD', 'fake', pg_temp.acct(1), confirm => true,
           id => 'bb000000-0000-4000-8000-000000000003')).status, 'processing', 'another payment');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000003', 1, 'failed', 'stolen_card'), 'failed',
    'a hard decline fails the step at once');
SELECT is(format('%s %s', pg_temp.status('bb000000-0000-4000-8000-000000000003'),
                 (SELECT failure_code FROM fincore.payments WHERE id = 'bb000000-0000-4000-8000-000000000003')),
    'failed stolen_card', 'the payment failed, with the code');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=900 cp=0 cpo=600', 'compensation: the hold was voided');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000003', 1, 'succeeded', source => 'webhook'), 'failed',
    'a late success is a no-op');
SELECT throws_ok($$SELECT fincore.capture_payment('bb000000-0000-4000-8000-000000000003')$$, 'ZF903', NULL,
    'a failed payment cannot be captured');

SELECT is((fincore.create_payment(70, 'USD', 'fake', pg_temp.acct(1), capture_method => 'manual', confirm => true,
           id => 'bb000000-0000-4000-8000-000000000004')).status, 'processing', 'a payment needing 3-D Secure');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000004', 1, 'requires_action'), 'pending',
    'requires_action keeps the step pending');
SELECT is(pg_temp.status('bb000000-0000-4000-8000-000000000004'), 'requires_action', '... the payment requires action');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000004', 1, 'succeeded'), 'succeeded', 'then authorized');
SELECT is(pg_temp.status('bb000000-0000-4000-8000-000000000004'), 'requires_capture', '... requires capture');

SELECT is((fincore.create_payment(80, 'USD', 'fake', pg_temp.acct(1), confirm => true,
           id => 'bb000000-0000-4000-8000-000000000005')).status, 'processing', 'a payment whose provider never answers');
UPDATE fincore.payment_steps SET deadline = now() - interval '1 second'
 WHERE payment_id = 'bb000000-0000-4000-8000-000000000005';
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000005', 1, 'failed', 'processor_busy'), 'failed',
    'a soft decline after the deadline is final');
SELECT is((fincore.create_payment(90, 'USD', 'fake', pg_temp.acct(1), confirm => true,
           id => 'bb000000-0000-4000-8000-000000000006')).status, 'processing', 'another one');
UPDATE fincore.payment_steps SET deadline = now() - interval '1 second'
 WHERE payment_id = 'bb000000-0000-4000-8000-000000000006';
SELECT is(fincore.expire_payment_steps(), 1, 'expire_payment_steps fails the step past its deadline');
SELECT is(format('%s %s', pg_temp.status('bb000000-0000-4000-8000-000000000006'),
                 (SELECT outcome_source FROM fincore.payment_steps WHERE payment_id = 'bb000000-0000-4000-8000-000000000006')),
    'failed timeout', '... the payment failed by timeout');
SELECT is(pg_temp.bal(1), 'dp=70 dpo=900 cp=0 cpo=600', 'only the 3-D Secure payment''s hold is left');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000006', 1, 'succeeded', source => 'webhook'), 'failed',
    'a success after the deadline''s compensation does not undo it');
SELECT is((SELECT format('%s %s %s', kind, status, request_key) FROM fincore.payment_steps
            WHERE payment_id = 'bb000000-0000-4000-8000-000000000006' AND step_no = 2),
    'cancel pending late:1', '... the authorization is cancelled at the provider');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000006', 1, 'succeeded'), 'failed', 'a second late report ...');
SELECT is((SELECT count(*) FROM fincore.payment_steps WHERE payment_id = 'bb000000-0000-4000-8000-000000000006')::int, 2,
    '... compensates nothing twice');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000006', 2, 'succeeded'), 'succeeded', 'the provider cancels it');
SELECT is(format('%s %s', pg_temp.status('bb000000-0000-4000-8000-000000000006'), pg_temp.bal(1)),
    'failed dp=70 dpo=900 cp=0 cpo=600', '... and nothing moves here');
SELECT is(pg_temp.events('bb000000-0000-4000-8000-000000000006'),
    'payment.created,payment.processing,payment.failed,payment.late_success,payment.authorization_released',
    'the late success and its compensation are events');
SELECT is(current_setting('fincore.tenant'), '', 'the sweep left no tenant set behind it');
SELECT ok(EXISTS (SELECT 1 FROM fincore.maintenance_steps WHERE step = 'expire_payment_steps'),
    'the sweep is a maintenance step');

-- A payer the ledger refuses to hold for: the confirmation fails and writes nothing.
SELECT fincore.create_payment(10, 'USD', 'fake', pg_temp.acct(2), id => 'bb000000-0000-4000-8000-000000000007');
SELECT pg_temp.rows() AS before \gset
SELECT throws_ok($$SELECT fincore.confirm_payment('bb000000-0000-4000-8000-000000000007')$$, 'ZF304', NULL,
    'the ledger''s refusal of the hold is the confirmation''s');
SELECT is(pg_temp.rows(), :'before', '... which wrote nothing');
SELECT is(pg_temp.status('bb000000-0000-4000-8000-000000000007'), 'requires_confirmation', '... and left its status');

-- ---------------------------------------------------------------------------
-- Cancel, multicapture, incremental authorization
-- ---------------------------------------------------------------------------
SELECT is((fincore.cancel_payment('bb000000-0000-4000-8000-000000000007')).status, 'canceled',
    'a payment holding nothing is canceled at once');
SELECT is((fincore.cancel_payment('bb000000-0000-4000-8000-000000000004')).cancel_pending, true,
    'canceling an authorized payment asks the provider');
SELECT is(pg_temp.ok_step('bb000000-0000-4000-8000-000000000004', 2, 'succeeded'), 'succeeded', 'the provider cancels');
SELECT is(format('%s %s', pg_temp.status('bb000000-0000-4000-8000-000000000004'),
                 pg_temp.amounts('bb000000-0000-4000-8000-000000000004')),
    'canceled auth=70 cap=0 rel=70 ref=0 disp=0 lost=0', 'canceled, all released');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=900 cp=0 cpo=600', 'the hold was voided');

SELECT fincore.create_payment(1000, 'USD', 'fake', pg_temp.acct(1), capture_method => 'manual', multicapture => true,
                              confirm => true, id => 'bb000000-0000-4000-8000-000000000008');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-000000000008', 1, 'succeeded');
SELECT is((fincore.capture_payment('bb000000-0000-4000-8000-000000000008', 300, final => false)).step_no, 2,
    'multicapture: a first partial capture');
SELECT is((fincore.capture_payment('bb000000-0000-4000-8000-000000000008', 200, final => false)).step_no, 3,
    '... and a second, both in flight');
SELECT throws_ok($$SELECT fincore.capture_payment('bb000000-0000-4000-8000-000000000008', 501, final => false)$$,
    'ZF904', NULL, 'the captures in flight count against the hold');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-000000000008', 3, 'succeeded');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-000000000008', 2, 'succeeded');
SELECT is(format('%s %s', pg_temp.status('bb000000-0000-4000-8000-000000000008'),
                 pg_temp.amounts('bb000000-0000-4000-8000-000000000008')),
    'requires_capture auth=1000 cap=500 rel=0 ref=0 disp=0 lost=0', 'answered out of order: 500 captured, the rest open');
SELECT is(pg_temp.bal(1), 'dp=500 dpo=1400 cp=0 cpo=600', 'the hold shrank by what was captured');
SELECT is((fincore.capture_payment('bb000000-0000-4000-8000-000000000008', 100)).step_no, 4, 'a final capture of 100');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-000000000008', 4, 'succeeded');
SELECT is(format('%s %s', pg_temp.status('bb000000-0000-4000-8000-000000000008'),
                 pg_temp.amounts('bb000000-0000-4000-8000-000000000008')),
    'succeeded auth=1000 cap=600 rel=400 ref=0 disp=0 lost=0', 'the final capture released the rest');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=1500 cp=0 cpo=600', 'nothing held any more');
SELECT is((fincore.refund_payment('bb000000-0000-4000-8000-000000000008', 550)).step_no, 5, 'a refund across captures');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-000000000008', 5, 'succeeded');
SELECT is((SELECT array_agg(reversed ORDER BY step_no) FROM fincore.payment_steps
            WHERE payment_id = 'bb000000-0000-4000-8000-000000000008' AND kind = 'capture'), '{300,200,50}'::bigint[],
    'the refund reversed the captures oldest first');

SELECT fincore.create_payment(100, 'USD', 'fake', pg_temp.acct(1), capture_method => 'manual', confirm => true,
                              id => 'bb000000-0000-4000-8000-000000000009');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-000000000009', 1, 'succeeded');
SELECT is((fincore.increment_authorization('bb000000-0000-4000-8000-000000000009', 50)).kind, 'increment',
    'an incremental authorization');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-000000000009', 2, 'succeeded');
SELECT is(format('%s %s', pg_temp.amounts('bb000000-0000-4000-8000-000000000009'), pg_temp.bal(1)),
    'auth=150 cap=0 rel=0 ref=0 disp=0 lost=0 dp=150 dpo=1500 cp=0 cpo=1150', 'the hold grew by 50');

-- ---------------------------------------------------------------------------
-- Disputes
-- ---------------------------------------------------------------------------
SELECT is((fincore.open_dispute('bb000000-0000-4000-8000-000000000002', 200)).status, 'disputed', 'a dispute of 200');
SELECT is(format('%s | %s', pg_temp.bal(10), pg_temp.bal(11)),
    'dp=0 dpo=1350 cp=150 cpo=1500 | dp=0 dpo=0 cp=0 cpo=200', 'settlement to disputes');
SELECT throws_ok($$SELECT fincore.refund_payment('bb000000-0000-4000-8000-000000000002', 1)$$, 'ZF903', NULL,
    'a disputed payment cannot be refunded');
SELECT is((fincore.resolve_dispute('bb000000-0000-4000-8000-000000000002', false)).status, 'dispute_lost', 'lost');
SELECT is(format('%s | %s | %s', pg_temp.bal(10), pg_temp.bal(11), pg_temp.bal(12)),
    'dp=0 dpo=1365 cp=150 cpo=1500 | dp=0 dpo=200 cp=0 cpo=200 | dp=0 dpo=0 cp=0 cpo=215',
    'the amount and the dispute fee went to the loss account');
SELECT is(pg_temp.amounts('bb000000-0000-4000-8000-000000000002'), 'auth=300 cap=300 rel=0 ref=0 disp=0 lost=200',
    'lost 200');

-- ---------------------------------------------------------------------------
-- The provider's fee on captures
-- ---------------------------------------------------------------------------
SELECT fincore.create_account('USD', id => 'aa000000-0000-4000-8000-000000000013');
SELECT fincore.define_fee_schedule('proc', 'USD', '{"components": [{"type": "percentage", "rate": "0.03"}]}');
SELECT throws_ok($$SELECT fincore.create_payment_provider('feeprov', pg_temp.acct(10), fee_schedule => 'proc')$$,
    'ZF901', NULL, 'a fee schedule needs its fee account');
SELECT throws_ok($$SELECT fincore.create_payment_provider('feeprov', pg_temp.acct(10), fee_schedule => 'nope',
    fee_account => pg_temp.acct(13))$$, 'ZF901', NULL, 'an unknown fee schedule is refused');
SELECT lives_ok($$SELECT fincore.create_payment_provider('feeprov', pg_temp.acct(10), fee_schedule => 'proc',
    fee_account => pg_temp.acct(13))$$, 'a provider with a processing fee');
SELECT fincore.create_payment(1000, 'USD', 'feeprov', pg_temp.acct(1), confirm => true,
                              id => 'bb000000-0000-4000-8000-00000000000a');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-00000000000a', 1, 'succeeded');
SELECT is((SELECT format('%s %s', status, fees) FROM fincore.payments WHERE id = 'bb000000-0000-4000-8000-00000000000a'),
    'succeeded 30', 'an automatic capture charges the fee: 3% of 1000');
SELECT is(pg_temp.bal(13), 'dp=0 dpo=0 cp=0 cpo=30', 'from the settlement account to the fee account');
SELECT is((SELECT metadata->>'fee_of' FROM fincore.transfers WHERE id = (SELECT transfer_ids[3] FROM fincore.payment_steps
            WHERE payment_id = 'bb000000-0000-4000-8000-00000000000a' AND step_no = 1)),
    (SELECT transfer_ids[2]::text FROM fincore.payment_steps WHERE payment_id = 'bb000000-0000-4000-8000-00000000000a'
      AND step_no = 1), 'the fee names the capture it is charged on');
SELECT is((fincore.refund_payment('bb000000-0000-4000-8000-00000000000a')).amount, 1000::bigint,
    'a refund of all of it ...');
SELECT pg_temp.ok_step('bb000000-0000-4000-8000-00000000000a', 2, 'succeeded');
SELECT is(format('%s | %s', pg_temp.status('bb000000-0000-4000-8000-00000000000a'), pg_temp.bal(13)),
    'refunded | dp=0 dpo=0 cp=0 cpo=30', '... reverses the capture, not the fee');

-- ---------------------------------------------------------------------------
-- The state machine alone, and who may call what
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT fincore.payment_transition(p, 'fly') FROM fincore.payments p LIMIT 1$$, 'ZF901', NULL,
    'an unknown action is ZF901');
SELECT is((SELECT (fincore.payment_transition(p, 'capture', 10)).capture_pending FROM fincore.payments p
            WHERE id = 'bb000000-0000-4000-8000-000000000009'), 10::bigint, 'payment_transition writes nothing ...');
SELECT is((SELECT capture_pending FROM fincore.payments WHERE id = 'bb000000-0000-4000-8000-000000000009'), 0::bigint,
    '... the row is unchanged');
SELECT throws_ok($$SELECT fincore.payment('bb000000-0000-4000-8000-0000000000ff')$$, 'ZF902', NULL,
    'an unknown payment is ZF902');
SELECT throws_ok($$SELECT fincore.payment_step_result('bb000000-0000-4000-8000-000000000009', 99, 'succeeded')$$,
    'ZF909', NULL, 'an unknown step is ZF909');

SET LOCAL ROLE authenticated;
SELECT is((fincore.payment('bb000000-0000-4000-8000-000000000001')).status, 'refunded', 'an app role reads its payment');
SELECT is((fincore.create_payment(5, 'USD', 'fake', pg_temp.acct(1))).status, 'requires_confirmation',
    'an app role creates a payment');
SELECT throws_ok($$SELECT fincore.payment_step_result('bb000000-0000-4000-8000-000000000009', 2, 'succeeded')$$,
    '42501', NULL, 'an app role cannot report a provider''s outcome');
SELECT throws_ok($$SELECT fincore.open_dispute('bb000000-0000-4000-8000-000000000001')$$, '42501', NULL,
    '... nor open a dispute');
SELECT set_config('request.jwt.claims', '{"tenant_id":"9b000000-0000-4000-8000-00000000000b"}', true);
SELECT throws_ok($$SELECT fincore.payment('bb000000-0000-4000-8000-000000000001')$$, 'ZF902', NULL,
    'another tenant does not see the payment');
SELECT is((SELECT count(*) FROM fincore.payments)::int, 0, '... nor its rows');
RESET ROLE;
SELECT set_config('request.jwt.claims', '{"tenant_id":"9a000000-0000-4000-8000-00000000000a"}', true);

SELECT is((SELECT count(*) FROM fincore.verify())::int, 0, 'verify() is clean');

SELECT * FROM finish();
ROLLBACK;
