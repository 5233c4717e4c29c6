-- pgTAP: invoices paid through the payments module (docs/billing.md, "Payment methods"): the
-- customer's credit is held first and the provider charged the rest; the provider's answer pays
-- the invoice (credit posted, settlement -> receivable) or fails the attempt, which dunning
-- retries; no second attempt while a payment is in flight; a payment that merely names an
-- invoice changes nothing; set_payment_method's refusals write nothing.
BEGIN;
SET search_path = fincore, public;
SET LOCAL timezone = 'UTC';
SELECT plan(39);

SELECT fincore.create_tenant('Billing payments', 'b9000000-0000-4000-8000-00000000000a');
SELECT fincore.set_tenant('b9000000-0000-4000-8000-00000000000a');

CREATE FUNCTION pg_temp.acct(n int) RETURNS uuid LANGUAGE sql AS $$
    SELECT ('b9a00000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
CREATE FUNCTION pg_temp.bal(n int) RETURNS text LANGUAGE sql AS $$
    SELECT format('dp=%s dpo=%s cp=%s cpo=%s', debits_pending, debits_posted, credits_pending, credits_posted)
      FROM fincore.balance(pg_temp.acct(n)) $$;
CREATE FUNCTION pg_temp.inv(n int) RETURNS fincore.invoices LANGUAGE sql AS $$
    SELECT * FROM fincore.invoices WHERE subscription_id = 'b9c00000-0000-4000-8000-000000000001'
     ORDER BY created_at, period_start OFFSET n - 1 LIMIT 1 $$;
CREATE FUNCTION pg_temp.sub_status() RETURNS text LANGUAGE sql AS $$
    SELECT status FROM fincore.subscriptions WHERE id = 'b9c00000-0000-4000-8000-000000000001' $$;
CREATE FUNCTION pg_temp.period_end() RETURNS timestamptz LANGUAGE sql AS $$
    SELECT period_end + '1 second' FROM fincore.subscriptions WHERE id = 'b9c00000-0000-4000-8000-000000000001' $$;
CREATE FUNCTION pg_temp.rows() RETURNS text LANGUAGE sql AS $$
    SELECT format('subscriptions=%s invoices=%s payments=%s transfers=%s jobs=%s events=%s',
                  (SELECT count(*) FROM fincore.subscriptions WHERE payment_provider IS NOT NULL),
                  (SELECT count(*) FROM fincore.invoices), (SELECT count(*) FROM fincore.payments),
                  (SELECT count(*) FROM fincore.transfers), (SELECT count(*) FROM fincore.jobs),
                  (SELECT count(*) FROM fincore.outbox_events)) $$;

-- 1 customer (its balance is its credit), 2 the card the provider charges, 3 the provider's
-- settlement, 4 receivable, 5 revenue, 6 a funding source, 7 another currency.
SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}', id => pg_temp.acct(1));
SELECT fincore.create_account('USD', id => pg_temp.acct(n)) FROM generate_series(2, 6) n;
SELECT fincore.create_account('EUR', id => pg_temp.acct(7));
SELECT fincore.create_payment_provider('card', pg_temp.acct(3), hard_decline_codes => '{stolen_card}');
SELECT fincore.set_billing_accounts('USD', pg_temp.acct(4), pg_temp.acct(5));
SELECT fincore.create_product('Pro', 'b9b00000-0000-4000-8000-000000000001');
SELECT fincore.create_price('b9b00000-0000-4000-8000-000000000001', 3000, 'USD', id => 'b9b00000-0000-4000-8000-000000000002');

-- The first invoice, without credit or a payment method: refused, the subscription incomplete.
SELECT fincore.create_subscription(pg_temp.acct(1), 'b9b00000-0000-4000-8000-000000000002',
                                   id => 'b9c00000-0000-4000-8000-000000000001');
SELECT is(pg_temp.sub_status(), 'incomplete', 'no credit and no payment method: the subscription is incomplete');

-- set_payment_method's refusals write nothing.
SELECT pg_temp.rows() AS rows_0 \gset
SELECT throws_ok($$SELECT fincore.set_payment_method('b9c00000-0000-4000-8000-000000000001', 'card', NULL)$$,
    'ZFA04', NULL, 'a provider without a payer account is refused');
SELECT throws_ok($$SELECT fincore.set_payment_method('b9c00000-0000-4000-8000-000000000001', 'cash', pg_temp.acct(2))$$,
    'ZF908', NULL, 'an unknown provider is refused');
SELECT throws_ok($$SELECT fincore.set_payment_method('b9c00000-0000-4000-8000-000000000001', 'card',
                                                      'b9a00000-0000-4000-8000-0000000000ff')$$,
    'ZF301', NULL, 'an unknown payer account is refused');
SELECT throws_ok($$SELECT fincore.set_payment_method('b9c00000-0000-4000-8000-000000000001', 'card', pg_temp.acct(7))$$,
    'ZF103', NULL, 'a payer account in another currency is refused');
SELECT throws_ok($$SELECT fincore.set_payment_method('b9c00000-0000-4000-8000-0000000000ff', 'card', pg_temp.acct(2))$$,
    'ZFA06', NULL, 'an unknown subscription is refused');
SELECT is(pg_temp.rows(), :'rows_0', 'the refusals wrote nothing');

SELECT is((fincore.set_payment_method('b9c00000-0000-4000-8000-000000000001', 'card', pg_temp.acct(2))).payment_provider,
    'card', 'the payment method is set');

-- Paying the first invoice: no credit, so the provider is charged the whole total.
SELECT is((fincore.pay_invoice((pg_temp.inv(1)).id)).status, 'open', 'pay_invoice starts a payment: the invoice stays open');
SELECT is((SELECT format('%s %s %s %s', p.amount, p.status, p.payer_account = pg_temp.acct(2), p.capture_method)
             FROM fincore.payments p WHERE p.id = (pg_temp.inv(1)).payment_id),
    '3000 processing t automatic', '... a payment of the total from the card, processing');
SELECT pg_temp.rows() AS rows_1 \gset
SELECT is((fincore.pay_invoice((pg_temp.inv(1)).id)).payment_id, (pg_temp.inv(1)).payment_id,
    'a second pay_invoice while the payment is in flight is a no-op');
SELECT throws_ok(format($$SELECT fincore.update_invoice_status(%L, 'void')$$, (pg_temp.inv(1)).id), 'ZFA10', NULL,
    'an invoice with a payment in flight cannot be voided');
SELECT is(pg_temp.rows(), :'rows_1', '... and neither wrote anything');
SELECT is(fincore.billing_run(now() + '1 day'), 0, 'billing_run a day later');
SELECT is(pg_temp.sub_status(), 'incomplete', '... does not expire the subscription while its payment is in flight');

SELECT is((fincore.payment_step_result((pg_temp.inv(1)).payment_id, 1, 'succeeded')).status, 'succeeded',
    'the provider authorizes (and captures) the payment');
SELECT is(format('%s %s', (pg_temp.inv(1)).status, pg_temp.sub_status()), 'paid active',
    '... the invoice is paid, the subscription active');
SELECT is(pg_temp.bal(4), 'dp=0 dpo=3000 cp=0 cpo=3000', '... the receivable is cleared');
SELECT is(pg_temp.bal(3), 'dp=0 dpo=3000 cp=0 cpo=3000', '... through the settlement account');
SELECT is(pg_temp.bal(2), 'dp=0 dpo=3000 cp=0 cpo=0', '... from the card');
SELECT is((SELECT t.credit_account_id FROM fincore.transfers t WHERE t.id = (pg_temp.inv(1)).payment_transfer_id),
    pg_temp.acct(4), '... and payment_transfer_id is the settlement -> receivable transfer');
SELECT is((SELECT string_agg(type, ',' ORDER BY seq) FROM fincore.outbox_events
            WHERE aggregateid = (pg_temp.inv(1)).id::text AND type LIKE 'invoice.pa%'), 'invoice.payment_failed,invoice.paid',
    '... invoice.paid is emitted, after the refusal at creation');

-- The renewal with some credit: the credit is held, the provider charged the rest; it declines.
SELECT fincore.transfer(pg_temp.acct(6), pg_temp.acct(1), 1000);
SELECT fincore.billing_run(pg_temp.period_end());
SELECT is(format('%s %s', (pg_temp.inv(2)).status, (SELECT p.amount FROM fincore.payments p WHERE p.id = (pg_temp.inv(2)).payment_id)),
    'open 2000', 'the renewal: the invoice is open, the provider charged 3000 less the credit of 1000');
SELECT is(pg_temp.bal(1), 'dp=1000 dpo=0 cp=0 cpo=1000', '... the credit is held');
SELECT is((fincore.payment_step_result((pg_temp.inv(2)).payment_id, 1, 'failed', 'card_declined', 'webhook')).status,
    'failed', 'the provider declines');
SELECT is(format('%s %s %s %s', (pg_temp.inv(2)).status, (pg_temp.inv(2)).attempts, (pg_temp.inv(2)).failure_code,
                 pg_temp.sub_status()),
    'open 1 card_declined past_due', '... the attempt failed with the provider''s code, the subscription past_due');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=0 cp=0 cpo=1000', '... the credit is released');
SELECT is((SELECT count(*) FROM fincore.jobs WHERE queue = 'billing:dunning'
            AND payload->>'invoice_id' = (pg_temp.inv(2)).id::text)::int, 1, '... and dunning schedules a retry');

-- The retry: a new payment, the credit held again; the provider succeeds.
SELECT is((fincore.retry_invoice((pg_temp.inv(2)).id, 1)).status, 'open', 'the dunning retry starts a new payment');
SELECT isnt((pg_temp.inv(2)).payment_id, (SELECT p.id FROM fincore.payments p WHERE p.metadata->>'attempt' = '1'
                                          AND p.metadata->>'invoice_id' = (pg_temp.inv(2)).id::text),
    '... another payment than the failed one');
SELECT is((fincore.payment_step_result((pg_temp.inv(2)).payment_id, 1, 'succeeded')).status, 'succeeded',
    'the provider succeeds');
SELECT is(format('%s %s', (pg_temp.inv(2)).status, pg_temp.sub_status()), 'paid active',
    '... the invoice is paid, the subscription active again');
SELECT is(pg_temp.bal(1), 'dp=0 dpo=1000 cp=0 cpo=1000', '... the credit is spent');
SELECT is(pg_temp.bal(4), 'dp=0 dpo=6000 cp=0 cpo=6000', '... and the receivable cleared');

-- A hard decline ends the retries at once.
SELECT fincore.set_dunning_policy(hard_decline_codes => '{ZF306, ZF307, stolen_card}');
SELECT fincore.billing_run(pg_temp.period_end());
SELECT is((fincore.payment_step_result((pg_temp.inv(3)).payment_id, 1, 'failed', 'stolen_card', 'webhook')).status,
    'failed', 'the provider declines for good');
SELECT is(format('%s %s', (pg_temp.inv(3)).status, pg_temp.sub_status()), 'uncollectible canceled',
    '... a hard decline: the invoice is uncollectible, the subscription canceled');

-- A payment whose metadata merely names an invoice changes nothing.
SELECT fincore.transfer(pg_temp.acct(6), pg_temp.acct(1), 500);
SELECT fincore.create_payment(500, 'USD', 'card', payer_account => pg_temp.acct(2), confirm => true,
                              metadata => jsonb_build_object('invoice_id', (pg_temp.inv(3)).id),
                              id => 'b9d00000-0000-4000-8000-000000000001');
SELECT is((fincore.payment_step_result('b9d00000-0000-4000-8000-000000000001', 1, 'succeeded')).status, 'succeeded',
    'another payment naming the invoice succeeds');
SELECT is(format('%s %s', (pg_temp.inv(3)).status, (pg_temp.inv(3)).payment_id <> 'b9d00000-0000-4000-8000-000000000001'),
    'uncollectible t', '... and does not touch the invoice');

SELECT is((SELECT count(*) FROM fincore.verify())::int, 0, 'verify() is clean');

SELECT * FROM finish();
ROLLBACK;
