-- pgTAP: the money objects in the catalogue - names, signatures, operator
-- classes, volatility, strictness, parallel safety, comments, privileges.
BEGIN;
SET search_path = fincore, public;
SELECT plan(110);

-- The extension and its schema.
SELECT has_extension('fincore');
SELECT has_schema('fincore');
SELECT results_eq($$SELECT extrelocatable, extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'fincore'$$,
    $$VALUES (false, 'fincore')$$, 'fincore is not relocatable and lives in schema fincore');
SELECT ok(EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON d.objid = e.oid AND d.classid = 'pg_extension'::regclass
                   JOIN pg_extension r ON d.refobjid = r.oid AND d.refclassid = 'pg_extension'::regclass
                  WHERE e.extname = 'fincore' AND r.extname = 'pgcrypto'), 'fincore requires pgcrypto');
SELECT ok(has_schema_privilege('public', 'fincore', 'USAGE'), 'PUBLIC may use schema fincore');
SELECT ok(NOT has_schema_privilege('public', 'fincore', 'CREATE'), 'PUBLIC may not create in schema fincore');

-- The type.
SELECT has_type('fincore', 'amount', 'type fincore.amount exists');
SELECT results_eq($$SELECT typlen::int, typbyval, typalign::text, typstorage::text,
                           typinput::text, typoutput::text, typreceive::text, typsend::text
                      FROM pg_type WHERE oid = 'fincore.amount'::regtype$$,
    $$VALUES (16, false, 'd', 'p', 'amount_in', 'amount_out', 'amount_recv', 'amount_send')$$,
    'amount is a 16-byte, double-aligned, plain type with text and binary I/O');
SELECT ok(obj_description('fincore.amount'::regtype, 'pg_type') IS NOT NULL, 'type amount has a comment');

-- Functions (every one, with its signature).
SELECT has_function('fincore', 'amount_in', ARRAY['cstring']);
SELECT has_function('fincore', 'amount_out', ARRAY['amount']);
SELECT has_function('fincore', 'amount_recv', ARRAY['internal']);
SELECT has_function('fincore', 'amount_send', ARRAY['amount']);
SELECT has_function('fincore', 'register_currency', ARRAY['text', 'integer', 'text']);
SELECT has_function('fincore', 'iso_currencies', ARRAY[]::name[]);
SELECT has_function('fincore', 'currency_exponent', ARRAY['text']);
SELECT has_function('fincore', 'currency_registry_guard', ARRAY[]::name[]);
SELECT has_function('fincore', 'from_minor', ARRAY['bigint', 'text']);
SELECT has_function('fincore', 'from_numeric', ARRAY['numeric', 'text', 'text']);
SELECT has_function('fincore', 'minor_units', ARRAY['amount']);
SELECT has_function('fincore', 'currency', ARRAY['amount']);
SELECT has_function('fincore', 'exponent', ARRAY['amount']);
SELECT has_function('fincore', 'to_numeric', ARRAY['amount']);
SELECT has_function('fincore', 'amount_pl', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_mi', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_um', ARRAY['amount']);
SELECT has_function('fincore', 'amount_mul_int8', ARRAY['amount', 'bigint']);
SELECT has_function('fincore', 'int8_mul_amount', ARRAY['bigint', 'amount']);
SELECT has_function('fincore', 'amount_div_int8', ARRAY['amount', 'bigint']);
SELECT has_function('fincore', 'div_round', ARRAY['bigint', 'bigint', 'text']);
SELECT has_function('fincore', 'div', ARRAY['amount', 'bigint', 'text']);
SELECT has_function('fincore', 'multiply', ARRAY['amount', 'numeric', 'text']);
SELECT has_function('fincore', 'allocate', ARRAY['amount', 'bigint[]']);
SELECT has_function('fincore', 'allocate', ARRAY['amount', 'integer']);
SELECT has_function('fincore', 'amount_eq', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_ne', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_lt', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_le', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_gt', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_ge', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_cmp', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_hash', ARRAY['amount']);
SELECT has_function('fincore', 'amount_hash_extended', ARRAY['amount', 'bigint']);
SELECT has_function('fincore', 'amount_smaller', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_larger', ARRAY['amount', 'amount']);
SELECT has_function('fincore', 'amount_sum_accum', ARRAY['internal', 'amount']);
SELECT has_function('fincore', 'amount_sum_combine', ARRAY['internal', 'internal']);
SELECT has_function('fincore', 'amount_sum_serialize', ARRAY['internal']);
SELECT has_function('fincore', 'amount_sum_deserialize', ARRAY['bytea', 'internal']);
SELECT has_function('fincore', 'amount_sum_final', ARRAY['internal']);
SELECT is_aggregate('fincore', 'sum', ARRAY['amount']);
SELECT is_aggregate('fincore', 'min', ARRAY['amount']);
SELECT is_aggregate('fincore', 'max', ARRAY['amount']);
SELECT function_returns('fincore', 'allocate', ARRAY['amount', 'bigint[]'], 'amount[]');
SELECT function_returns('fincore', 'div_round', ARRAY['bigint', 'bigint', 'text'], 'bigint');
SELECT function_returns('fincore', 'to_numeric', ARRAY['amount'], 'numeric');
SELECT function_returns('fincore', 'register_currency', ARRAY['text', 'integer', 'text'], 'void');
SELECT function_returns('fincore', 'sum', ARRAY['amount'], 'amount');
-- Defaults.
SELECT is((SELECT pg_get_function_arguments('fincore.div_round(bigint,bigint,text)'::regprocedure)),
    $$numerator bigint, denominator bigint, mode text DEFAULT 'half_even'::text$$, 'div_round defaults to half_even');
SELECT is((SELECT pg_get_function_arguments('fincore.from_numeric(numeric,text,text)'::regprocedure)),
    'value numeric, currency text, mode text DEFAULT NULL::text', 'from_numeric has no rounding by default');
SELECT is((SELECT pg_get_function_arguments('fincore.multiply(fincore.amount,numeric,text)'::regprocedure)),
    'value amount, rate numeric, mode text', 'multiply requires its mode');

-- Every function and aggregate is documented.
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'fincore'::regnamespace
                     AND obj_description(p.oid, 'pg_proc') IS NULL$$,
    'every fincore function has a COMMENT');
SELECT ok(obj_description('fincore.currency_registry'::regclass, 'pg_class') IS NOT NULL, 'currency_registry has a comment');
SELECT ok(obj_description('fincore.currencies'::regclass, 'pg_class') IS NOT NULL, 'currencies has a comment');

-- Parallel safety: every fincore function is PARALLEL SAFE unless it writes
-- or sets a setting.  (Functions of later modules that write belong in this list.)
CREATE TEMP TABLE writers (sig text PRIMARY KEY);
INSERT INTO writers VALUES ('fincore.register_currency(text,integer,text)'), ('fincore.currency_registry_guard()'),
    ('fincore.set_tenant(uuid)'), ('fincore._use_tenant(uuid)'), ('fincore.set_user(uuid)'), ('fincore.tenant_members_changed()'),
    ('fincore.create_tenant(text,uuid,jsonb)'), ('fincore.add_tenant_member(uuid,text)'),
    ('fincore.remove_tenant_member(uuid,text)'), ('fincore.protect(regclass,name)'),
    ('fincore.unprotect(regclass)'), ('fincore.grant_app_role(name,boolean)'), ('fincore.revoke_app_role(name)'),
    ('fincore.maintenance(interval)'),
    ('fincore.create_account(text,integer,text[],bigint,uuid,text,jsonb)'), ('fincore.create_accounts(fincore.account_request[])'), ('fincore.freeze_account(uuid)'),
    ('fincore.unfreeze_account(uuid)'), ('fincore.close_account(uuid)'),
    ('fincore.transfer(uuid,uuid,bigint,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamptz)'),
    ('fincore.transfer(uuid,uuid,fincore.amount,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamptz)'),
    ('fincore.post_pending(uuid,bigint,uuid)'), ('fincore.void_pending(uuid,uuid)'), ('fincore.reverse(uuid,bigint,uuid)'), ('fincore.reverse_transfer(uuid,bigint,uuid)'),
    ('fincore.create_transfers(fincore.transfer_request[])'), ('fincore.expire_pending(integer)'),
    ('fincore.rollup_hot_accounts(integer)'), ('fincore.expire_pending_step(interval)'),
    ('fincore.rollup_hot_accounts_step(interval)'), ('fincore.ledger_append_only()'),
    ('fincore.define_fee_schedule(text,text,jsonb,timestamptz,timestamptz,text)'),
    ('fincore.end_fee_schedule(text,timestamptz)'), ('fincore.fee_schedules_changed()'),
    ('fincore.create_limit(text,bigint,text,text,text,uuid,integer,text,text,text,text,integer[],uuid[],integer[],integer,text,boolean,bigint,uuid)'),
    ('fincore.update_limit(uuid,bigint,text,boolean,boolean,bigint)'), ('fincore.disable_limit(uuid)'),
    ('fincore.set_account_customer(uuid,text)'), ('fincore.limits_changed()'),
    ('fincore.create_rule(text,jsonb,text,text,text,interval,uuid)'), ('fincore.update_rule(uuid,jsonb,text,text,boolean)'),
    ('fincore.approve_review(uuid,uuid)'), ('fincore.reject_review(uuid,uuid)'),
    ('fincore.emit(text,text,text,text,jsonb,jsonb)'), ('fincore._outbox_changed()'),
    ('fincore._outbox_latest_snapshot()'), ('fincore._outbox_seal(regclass)'), ('fincore._outbox_restore_check()'),
    ('fincore.subscribe(text,text[],uuid,integer,interval,interval,integer)'), ('fincore.unsubscribe(text)'),
    ('fincore.poll(text,integer)'), ('fincore.wait_for_events(text,interval)'), ('fincore.ack(text,uuid)'), ('fincore.nack(text,uuid,text)'),
    ('fincore.replay_dead(text,uuid[])'), ('fincore.outbox_maintenance(interval)'),
    ('fincore.outbox_configure(boolean,interval,interval,text)'), ('fincore.set_ledger_events(boolean)'),
    ('fincore.inbox_accept(text,text,jsonb)'), ('fincore.accept_webhook(text,text,text,text,interval)'),
    ('fincore.enqueue(text,jsonb,timestamptz,smallint,integer,text)'),
    ('fincore.enqueue_many(text,jsonb[],timestamptz,smallint,integer,text[])'),
    ('fincore.dequeue(text,integer,interval,text)'), ('fincore.complete(bigint,jsonb,integer)'), ('fincore.complete_and_dequeue(bigint,text,jsonb,integer,integer,interval,text)'), ('fincore.wait_for_jobs(text,interval)'),
    ('fincore.complete_many(bigint[],integer[],jsonb[])'),
    ('fincore.fail(bigint,text,timestamptz,integer)'), ('fincore.heartbeat(bigint,interval,integer)'),
    ('fincore.cancel(bigint)'), ('fincore.retry(bigint)'), ('fincore.cancel_job(bigint)'), ('fincore.retry_job(bigint)'), ('fincore.pause_queue(text)'),
    ('fincore.resume_queue(text)'), ('fincore.queue_stats(interval)'), ('fincore.rescue_expired(interval)'),
    ('fincore.job_backoff(integer)'), ('fincore.job_retention(interval)'), ('fincore.paused_queues_changed()'),
    ('fincore.schedule_maintenance(text)'), ('fincore.unschedule_maintenance()'), ('fincore.distribute(regclass)'), ('fincore.pre_request()'),
    -- payments (sql/modules/payments.sql)
    ('fincore._payment_lock(uuid,uuid)'),
    ('fincore._payment_rehold(fincore.payments,integer,bigint,bigint)'),
    ('fincore._payment_replayed_step(fincore.payments,text,bigint,boolean,text)'),
    ('fincore._payment_save(fincore.payments,text,jsonb)'),
    ('fincore._payment_step(fincore.payments,fincore.payment_providers,text,bigint,boolean,text,boolean,uuid[])'),
    ('fincore._payment_step_failed(fincore.payments,fincore.payment_steps)'),
    ('fincore._payment_step_succeeded(fincore.payments,fincore.payment_steps)'),
    ('fincore.cancel_payment(uuid,text)'),
    ('fincore.capture_payment(uuid,bigint,boolean,text)'),
    ('fincore.confirm_payment(uuid,uuid)'),
    ('fincore.create_payment(bigint,text,text,uuid,text,boolean,boolean,text,jsonb,uuid)'),
    ('fincore.create_payment_provider(text,uuid,text,text[],interval,interval,uuid,uuid,bigint,integer,text,uuid)'),
    ('fincore.expire_payment_steps(integer)'), ('fincore.expire_payment_steps_step(interval)'),
    ('fincore._payment_fee(fincore.payments,integer,bigint,uuid)'),
    ('fincore._payment_late_success(fincore.payments,fincore.payment_steps,text)'),
    -- billing (sql/modules/billing.sql)
    ('fincore.create_product(text,uuid)'), ('fincore.create_price(uuid,bigint,text,text,integer,text,integer,uuid,text,jsonb)'),
    ('fincore.set_product_features(uuid,text[])'),
    ('fincore.create_subscription(uuid,uuid,integer,timestamptz,text,uuid,uuid)'),
    ('fincore.change_subscription(uuid,uuid,integer,timestamptz,text,boolean)'), ('fincore.update_subscription_status(uuid,text)'),
    ('fincore._subscription_lock(uuid,uuid)'), ('fincore.set_billing_accounts(text,uuid,uuid)'),
    ('fincore.set_dunning_policy(interval[],text,text[])'),
    ('fincore.pay_invoice(uuid)'), ('fincore.billing_run(timestamptz,integer,uuid)'), ('fincore.billing_run_step(interval)'),
    ('fincore._invoice_lines(fincore.subscriptions,boolean)'), ('fincore._collect_invoice(fincore.subscriptions,fincore.invoices)'),
    ('fincore._finalize_invoice(fincore.invoices)'), ('fincore._invoice_and_collect(fincore.subscriptions,boolean)'),
    ('fincore._invoice_lock(uuid,uuid)'), ('fincore._subscription_save_status(fincore.subscriptions,text)'),
    ('fincore._void_invoice(fincore.invoices)'), ('fincore.create_invoice(uuid,boolean)'),
    ('fincore.set_payment_method(uuid,text,uuid)'), ('fincore._invoice_payment_result(fincore.payments,boolean,text)'),
    -- audit (sql/modules/audit.sql)
    ('fincore.audit_guard()'), ('fincore.audit_trigger()'), ('fincore.audit_seal_step(interval)'),
    ('fincore._audit_proof(uuid,bigint,bigint)'), ('fincore.audit_digest_step(interval)'),
    ('fincore.audit_enable(regclass,text[])'), ('fincore.audit_disable(regclass)'),
    ('fincore._audit_verify(uuid,bigint,bigint,bytea)'), ('fincore._audit_erase_payload(uuid,bigint)'),
    ('fincore._audit_drop_before(uuid,bigint)'), ('fincore._audit_append(uuid,text,text,text,jsonb)'),
    ('fincore._audit_seal(uuid,integer)'), ('fincore._audit_table_changed(regclass)'), ('fincore.audit_digest(uuid)'),
    ('fincore.audit_proof(uuid,bigint,bigint)'), ('fincore.audit_redact(uuid,bigint,text)'),
    ('fincore.audit_retain(uuid,bigint)'), ('fincore.audit_seal(uuid,integer)'),
    ('fincore.audit_verify(uuid,bigint,bigint,bytea)'), ('fincore._audit_drop_triggers(regclass)'),
    ('fincore.finalize_invoice(uuid)'), ('fincore.update_invoice_status(uuid,text)'),
    ('fincore.retry_invoice(uuid,integer)'), ('fincore.dunning_run(integer)'), ('fincore.dunning_run_step(interval)'),
    ('fincore.apply_stripe_event(jsonb)'), ('fincore.stripe_sync_run(integer)'), ('fincore.stripe_sync_step(interval)'),
    ('fincore._invoice_paid(fincore.subscriptions,fincore.invoices,uuid)'),
    ('fincore._invoice_payment_failed(fincore.subscriptions,fincore.invoices,text)'),
    ('fincore._renew_subscriptions(uuid,uuid[])'),
    ('fincore.increment_authorization(uuid,bigint,text)'),
    ('fincore.open_dispute(uuid,bigint)'),
    ('fincore.payment_step_result(uuid,integer,text,text,text)'),
    ('fincore.payment_webhook_result(text,text,text)'),
    ('fincore.refund_payment(uuid,bigint,text)'),
    ('fincore.resolve_dispute(uuid,boolean)'),
    -- reconciliation (sql/modules/recon.sql)
    ('fincore._recon_breaks(uuid,text,uuid[])'),
    ('fincore._recon_camt053_staging(uuid,text,text,xml)'),
    ('fincore._recon_create_adjustments(fincore.transfer_request[])'),
    ('fincore._recon_json_staging(uuid,text,text,text)'),
    ('fincore._recon_match(uuid,text,uuid,text,text[],uuid,uuid,boolean,boolean,date)'),
    ('fincore._recon_match_lock(uuid,uuid)'),
    ('fincore._recon_parse(text,text,uuid,text,text,jsonb,text)'),
    ('fincore._recon_post_adjustments(uuid,fincore.recon_sources,uuid,uuid)'),
    ('fincore._recon_release(uuid,fincore.recon_matches,text,text)'),
    ('fincore._recon_run_matched_entries()'),
    ('fincore._recon_run_matched_lines()'),
    ('fincore._recon_run_matches()'),
    ('fincore._recon_source_lock(uuid,text)'),
    ('fincore.recon_confirm(uuid,text)'),
    ('fincore.recon_create_source(text,uuid,jsonb,text,text[],interval)'),
    ('fincore.recon_drop_rule(text,text)'),
    ('fincore.recon_import(text,text,text)'),
    ('fincore.recon_match(uuid[],uuid[],text,uuid)'),
    ('fincore.recon_reject(uuid,text)'),
    ('fincore.recon_run(text,uuid,boolean,boolean)'),
    ('fincore.recon_set_rule(text,text,integer,text,text[],bigint,integer,integer,real,text,integer,text,uuid,boolean)'),
    ('fincore.recon_unmatch(uuid,text)'),
    -- rate limits (sql/modules/ratelimit.sql): they write shared memory, or a policy
    ('fincore.rate_limit(text,integer,interval,integer,integer)'),
    ('fincore.rate_limit_or_raise(text,integer,interval,integer,integer)'),
    ('fincore._rate_limit_at(text,integer,interval,integer,integer,timestamptz)'),
    ('fincore.rate_limit_reset(text)'), ('fincore.rate_limit_stats()'),
    ('fincore.concurrency_acquire(text,integer)'), ('fincore.concurrency_release(text)'),
    ('fincore.set_rate_limit_policy(text,integer,interval,integer,integer,integer,uuid,name,text,text,text,boolean)'),
    ('fincore.drop_rate_limit_policy(text,uuid)'), ('fincore._require_trusted(text)'),
    -- metrics (sql/modules/metrics.sql): reads the rate limiter's shared memory
    ('fincore.metrics()'), ('fincore._rate_limit_request()');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'fincore'::regnamespace AND p.proparallel <> 's'
                     AND p.oid NOT IN (SELECT sig::regprocedure FROM writers)$$,
    'every fincore function except the writers (register_currency, the trigger) is PARALLEL SAFE');
SELECT results_eq($$SELECT proname::text COLLATE "default", proparallel::text FROM pg_proc
                     WHERE pronamespace = 'fincore'::regnamespace
                       AND proname IN ('register_currency', 'currency_registry_guard') ORDER BY 1$$,
    $$VALUES ('currency_registry_guard', 'u'), ('register_currency', 'u')$$,
    'register_currency and the trigger are PARALLEL UNSAFE');

-- Volatility: every money function is IMMUTABLE except the two writers.
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'fincore'::regnamespace AND p.provolatile <> 'i'
                     AND (p.proname LIKE 'amount\_%' OR p.proname IN ('int8_mul_amount', 'iso_currencies',
                          'currency_exponent', 'from_minor', 'from_numeric', 'minor_units', 'currency',
                          'exponent', 'to_numeric', 'div_round', 'div', 'multiply', 'allocate',
                          'sum', 'min', 'max'))$$,
    'every money function other than the writers is IMMUTABLE');
SELECT volatility_is('fincore', 'register_currency', ARRAY['text', 'integer', 'text'], 'volatile');
SELECT volatility_is('fincore', 'currency_registry_guard', ARRAY[]::name[], 'volatile');
SELECT volatility_is('fincore', 'amount_in', ARRAY['cstring'], 'immutable');
SELECT volatility_is('fincore', 'currency_exponent', ARRAY['text'], 'immutable');

-- Strictness: only functions that handle NULL themselves are not STRICT.
-- (Functions without arguments have nothing to be strict about.)
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'fincore'::regnamespace AND p.prokind = 'f' AND NOT p.proisstrict
                   AND p.pronargs > 0$$,
    ARRAY['register_currency(text,integer,text)',
          'from_numeric(numeric,text,text)', 'amount_sum_accum(internal,amount)',
          'amount_sum_combine(internal,internal)', 'amount_sum_final(internal)',
          'set_tenant(uuid)', '_use_tenant(uuid)', 'set_user(uuid)', 'has_tenant_role(uuid,text)',
          'create_tenant(text,uuid,jsonb)', 'add_tenant_member(uuid,text)', 'remove_tenant_member(uuid,text)',
          'create_account(text,integer,text[],bigint,uuid,text,jsonb)',
          'transfer(uuid,uuid,bigint,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamp with time zone)',
          'transfer(uuid,uuid,amount,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamp with time zone)',
          'post_pending(uuid,bigint,uuid)', 'void_pending(uuid,uuid)', 'reverse(uuid,bigint,uuid)', 'reverse_transfer(uuid,bigint,uuid)',
          'balance(uuid,timestamp with time zone)',
          'account_transfers(uuid,timestamp with time zone,timestamp with time zone,integer,boolean,boolean,boolean,integer)',
          'account_balances(uuid,timestamp with time zone,timestamp with time zone,integer,boolean,boolean,boolean,integer)',
          'check_fee_schedule(text,text,jsonb,timestamp with time zone,timestamp with time zone,text)',
          'define_fee_schedule(text,text,jsonb,timestamp with time zone,timestamp with time zone,text)',
          'quote_fee(text,bigint,text,jsonb,timestamp with time zone,text)',
          'emit(text,text,text,text,jsonb,jsonb)', 'nack(text,uuid,text)', 'subscribe(text,text[],uuid,integer,interval,interval,integer)',
          'replay_dead(text,uuid[])', 'outbox_configure(boolean,interval,interval,text)', 'inbox_accept(text,text,jsonb)',
          'accept_webhook(text,text,text,text,interval)',
          'enqueue(text,jsonb,timestamp with time zone,smallint,integer,text)',
          'enqueue_many(text,jsonb[],timestamp with time zone,smallint,integer,text[])',
          'dequeue(text,integer,interval,text)', 'complete(bigint,jsonb,integer)',
          'complete_many(bigint[],integer[],jsonb[])',
          'fail(bigint,text,timestamp with time zone,integer)', 'heartbeat(bigint,interval,integer)',
          'distribute(regclass)',
          'create_limit(text,bigint,text,text,text,uuid,integer,text,text,text,text,integer[],uuid[],integer[],integer,text,boolean,bigint,uuid)',
          'update_limit(uuid,bigint,text,boolean,boolean,bigint)', 'set_account_customer(uuid,text)',
          'limit_window(text,integer,text,timestamp with time zone)',
          'limit_used(text,integer,text,timestamp with time zone,bigint,bigint[],bigint,timestamp with time zone)',
          'create_rule(text,jsonb,text,text,text,interval,uuid)', 'update_rule(uuid,jsonb,text,text,boolean)',
          'approve_review(uuid,uuid)', 'reject_review(uuid,uuid)',
          'backtest_rule(jsonb,timestamp with time zone,timestamp with time zone,text)',
          'cancel_payment(uuid,text)',
          'open_dispute(uuid,bigint)',
          'payment(uuid)',
          '_payment_lock(uuid,uuid)',
          '_payment_step_failed(payments,payment_steps)',
          'create_payment_provider(text,uuid,text,text[],interval,interval,uuid,uuid,bigint,integer,text,uuid)',
          '_payment_replayed_step(payments,text,bigint,boolean,text)',
          '_payment_save(payments,text,jsonb)',
          'payment_transition(payments,text,bigint,boolean)',
          'create_payment(bigint,text,text,uuid,text,boolean,boolean,text,jsonb,uuid)',
          'refund_payment(uuid,bigint,text)',
          '_payment_step_succeeded(payments,payment_steps)',
          'confirm_payment(uuid,uuid)',
          'capture_payment(uuid,bigint,boolean,text)',
          'expire_payment_steps(integer)', 'payment_webhook_result(text,text,text)',
          '_payment_step(payments,payment_providers,text,bigint,boolean,text,boolean,uuid[])', 'increment_authorization(uuid,bigint,text)',
          'resolve_dispute(uuid,boolean)', '_payment_rehold(payments,integer,bigint,bigint)',
          'payment_step_result(uuid,integer,text,text,text)', '_payment_fee(payments,integer,bigint,uuid)',
          '_payment_late_success(payments,payment_steps,text)',
          'create_product(text,uuid)', 'create_price(uuid,bigint,text,text,integer,text,integer,uuid,text,jsonb)', 'billing_price_amount(text,bigint,jsonb,integer)',
          'create_subscription(uuid,uuid,integer,timestamp with time zone,text,uuid,uuid)',
          'preview_change(uuid,uuid,integer,timestamp with time zone,text,boolean)',
          'change_subscription(uuid,uuid,integer,timestamp with time zone,text,boolean)', 'update_subscription_status(uuid,text)',
          '_subscription_lock(uuid,uuid)', '_billing_price(uuid,uuid)',
          '_subscription_change_lines(subscriptions,billing_prices,integer,timestamp with time zone,text)',
          'set_billing_accounts(text,uuid,uuid)', 'pay_invoice(uuid)', 'billing_run(timestamp with time zone,integer,uuid)',
          '_invoice_lines(subscriptions,boolean)', '_collect_invoice(subscriptions,invoices)',
          'set_product_features(uuid,text[])', 'entitled(text)', 'set_dunning_policy(interval[],text,text[])',
          '_finalize_invoice(invoices)', '_invoice_and_collect(subscriptions,boolean)', '_invoice_lock(uuid,uuid)',
          '_subscription_save_status(subscriptions,text)', 'create_invoice(uuid,boolean)', 'finalize_invoice(uuid)',
          '_void_invoice(invoices)', 'update_invoice_status(uuid,text)', 'retry_invoice(uuid,integer)',
          'dunning_run(integer)', 'apply_stripe_event(jsonb)', 'stripe_sync_run(integer)', '_stripe_time(jsonb)',
          '_billing_not_external(subscriptions)', '_invoice_paid(subscriptions,invoices,uuid)',
          '_invoice_payment_failed(subscriptions,invoices,text)', '_renew_subscriptions(uuid,uuid[])',
          'set_payment_method(uuid,text,uuid)', '_invoice_payment_result(payments,boolean,text)',
          '_invoice_payment_in_flight(invoices)',
          'audit_verify(uuid,bigint,bigint,bytea)', '_audit_verify(uuid,bigint,bigint,bytea)',
          'audit_record_hash(bytea,uuid,bigint,timestamp with time zone,bigint,text,text,uuid,text,text,text,bytea)',
          'audit_disable(regclass)', 'audit_retain(uuid,bigint)', 'audit_proof(uuid,bigint,bigint)',
          'audit_seal_step(interval)', '_audit_append(uuid,text,text,text,jsonb)', 'audit_seal(uuid,integer)',
          'audit_digest(uuid)', 'audit_digest_step(interval)', 'audit_enable(regclass,text[])',
          'audit_redact(uuid,bigint,text)', '_audit_table_changed(regclass)', '_audit_merkle_root(bytea,bigint)',
          '_audit_drop_triggers(regclass)',
          '_recon_breaks(uuid,text,uuid[])',
          '_recon_camt053_staging(uuid,text,text,xml)',
          '_recon_create_adjustments(transfer_request[])',
          '_recon_json_staging(uuid,text,text,text)',
          '_recon_mapping_check(jsonb,text)',
          '_recon_match(uuid,text,uuid,text,text[],uuid,uuid,boolean,boolean,date)',
          '_recon_match_lock(uuid,uuid)',
          '_recon_parse(text,text,uuid,text,text,jsonb,text)',
          '_recon_post_adjustments(uuid,recon_sources,uuid,uuid)',
          '_recon_release(uuid,recon_matches,text,text)',
          '_recon_source_lock(uuid,text)',
          'recon_balance(uuid[],text,timestamp with time zone,bigint,text)',
          'recon_confirm(uuid,text)',
          'recon_create_source(text,uuid,jsonb,text,text[],interval)',
          'recon_drop_rule(text,text)',
          'recon_import(text,text,text)',
          'recon_match(uuid[],uuid[],text,uuid)',
          'recon_reject(uuid,text)',
          'recon_run(text,uuid,boolean,boolean)',
          'recon_set_rule(text,text,integer,text,text[],bigint,integer,integer,real,text,integer,text,uuid,boolean)',
          'recon_unmatch(uuid,text)',
          'set_rate_limit_policy(text,integer,interval,integer,integer,integer,uuid,name,text,text,text,boolean)',
          '_rate_quota_check(integer,interval,integer,integer)', 'drop_rate_limit_policy(text,uuid)',
          'complete_and_dequeue(bigint,text,jsonb,integer,integer,interval,text)', 'wait_for_jobs(text,interval)',
          'wait_for_events(text,interval)'],
    'the non-STRICT functions are exactly the NULL-aware ones');
SELECT is_strict('fincore', 'amount_in', ARRAY['cstring']);
SELECT is_strict('fincore', 'allocate', ARRAY['amount', 'bigint[]']);
SELECT is_strict('fincore', 'amount_sum_deserialize', ARRAY['bytea', 'internal']);
SELECT isnt_strict('fincore', 'from_numeric', ARRAY['numeric', 'text', 'text']);
SELECT isnt_strict('fincore', 'register_currency', ARRAY['text', 'integer', 'text']);

-- Leakproof: only the functions that never raise.
SELECT set_eq($$SELECT proname::text FROM pg_proc WHERE pronamespace = 'fincore'::regnamespace AND proleakproof$$,
    ARRAY['amount_eq', 'amount_ne', 'amount_cmp', 'amount_hash', 'amount_hash_extended', 'has_tenant_role'],
    'exactly =, <>, cmp, the hash functions and has_tenant_role are LEAKPROOF');

-- Operators.
SELECT has_operator('amount'::name, 'fincore'::name, '+'::name, 'amount'::name, 'amount'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '-'::name, 'amount'::name, 'amount'::name);
SELECT has_leftop('fincore'::name, '-'::name, 'amount'::name, 'amount'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '*'::name, 'bigint'::name, 'amount'::name);
SELECT has_operator('bigint'::name, 'fincore'::name, '*'::name, 'amount'::name, 'amount'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '/'::name, 'bigint'::name, 'amount'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '='::name, 'amount'::name, 'boolean'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '<>'::name, 'amount'::name, 'boolean'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '<'::name, 'amount'::name, 'boolean'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '<='::name, 'amount'::name, 'boolean'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '>'::name, 'amount'::name, 'boolean'::name);
SELECT has_operator('amount'::name, 'fincore'::name, '>='::name, 'amount'::name, 'boolean'::name);
SELECT results_eq($$SELECT o.oprname::text COLLATE "default", o.oprcanhash, o.oprcanmerge,
                           c.oprname::text COLLATE "default", n.oprname::text COLLATE "default"
                      FROM pg_operator o LEFT JOIN pg_operator c ON c.oid = o.oprcom
                      LEFT JOIN pg_operator n ON n.oid = o.oprnegate
                     WHERE o.oprnamespace = 'fincore'::regnamespace
                       AND o.oprname IN ('=', '<>', '<', '<=', '>', '>=')
                     ORDER BY o.oprname COLLATE "C"$$,
    $$VALUES ('<', false, false, '>', '>='), ('<=', false, false, '>=', '>'),
             ('<>', false, false, '<>', '='), ('=', true, true, '=', '<>'),
             ('>', false, false, '<', '<='), ('>=', false, false, '<=', '<')$$,
    'comparison operators: commutators, negators; = hashes and merges');

-- Operator classes: default btree and hash.
SELECT has_opclass('fincore', 'amount_ops', 'opclass amount_ops exists');
SELECT has_opclass('fincore', 'amount_hash_ops', 'opclass amount_hash_ops exists');
SELECT results_eq($$SELECT opcname::text COLLATE "default", am.amname::text COLLATE "default", opcdefault FROM pg_opclass c
                      JOIN pg_am am ON am.oid = c.opcmethod
                     WHERE opcnamespace = 'fincore'::regnamespace ORDER BY 1$$,
    $$VALUES ('amount_hash_ops', 'hash', true), ('amount_ops', 'btree', true)$$,
    'amount_ops (btree) and amount_hash_ops (hash) are the defaults');
SELECT results_eq($$SELECT amprocnum::int, amproc::regproc::text FROM pg_amproc
                     WHERE amprocfamily = (SELECT opcfamily FROM pg_opclass WHERE opcname = 'amount_hash_ops'
                                             AND opcnamespace = 'fincore'::regnamespace) ORDER BY 1$$,
    $$VALUES (1, 'amount_hash'), (2, 'amount_hash_extended')$$, 'hash opclass has both support functions');
SELECT results_eq($$SELECT amopstrategy::int, amopopr::regoperator::text FROM pg_amop
                     WHERE amopfamily = (SELECT opcfamily FROM pg_opclass WHERE opcname = 'amount_ops'
                                           AND opcnamespace = 'fincore'::regnamespace) ORDER BY 1$$,
    $$VALUES (1, '<(amount,amount)'), (2, '<=(amount,amount)'), (3, '=(amount,amount)'),
             (4, '>=(amount,amount)'), (5, '>(amount,amount)')$$, 'btree opclass strategies');
-- min and max have no sort operator (they must not be answered from an index).
SELECT results_eq($$SELECT p.proname::text COLLATE "default", a.aggsortop = 0
                      FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
                     WHERE p.pronamespace = 'fincore'::regnamespace ORDER BY 1$$,
    $$VALUES ('max', true), ('min', true), ('sum', true)$$,
    'fincore aggregates have no sort operator');
SELECT results_eq($$SELECT p.proname::text COLLATE "default", a.aggcombinefn <> 0, a.aggserialfn <> 0,
                           a.aggdeserialfn <> 0
                      FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
                     WHERE p.pronamespace = 'fincore'::regnamespace ORDER BY 1$$,
    $$VALUES ('max', true, false, false), ('min', true, false, false), ('sum', true, true, true)$$,
    'aggregates can be combined in parallel; sum serialises its 128-bit state');

-- The registry, its view and triggers.
SELECT has_table('fincore', 'currency_registry', 'table currency_registry exists');
SELECT has_view('fincore', 'currencies', 'view currencies exists');
SELECT has_trigger('fincore', 'currency_registry', 'currency_registry_immutable', 'row trigger currency_registry_immutable exists');
SELECT has_trigger('fincore', 'currency_registry', 'currency_registry_no_truncate', 'statement trigger currency_registry_no_truncate exists');
SELECT ok((SELECT 'security_invoker=true' = ANY (reloptions) FROM pg_class WHERE oid = 'fincore.currencies'::regclass),
    'currencies is a security_invoker view');
SELECT ok((SELECT 'fincore.currency_registry'::regclass = ANY (extconfig) FROM pg_extension WHERE extname = 'fincore'),
    'currency_registry is dumped by pg_dump (extension configuration table)');

-- Privileges: anyone reads; only the owner registers.
SELECT ok(NOT has_function_privilege('public', 'fincore.register_currency(text,integer,text)', 'EXECUTE'),
    'PUBLIC may not execute register_currency');
SELECT ok(has_function_privilege('public', 'fincore.from_minor(bigint,text)', 'EXECUTE'),
    'PUBLIC may execute from_minor');
SELECT ok(has_table_privilege('public', 'fincore.currency_registry', 'SELECT'), 'PUBLIC may read currency_registry');
SELECT ok(NOT has_table_privilege('public', 'fincore.currency_registry', 'INSERT')
          AND NOT has_table_privilege('public', 'fincore.currency_registry', 'UPDATE')
          AND NOT has_table_privilege('public', 'fincore.currency_registry', 'DELETE')
          AND NOT has_table_privilege('public', 'fincore.currency_registry', 'TRUNCATE'),
    'PUBLIC may not write currency_registry');
SELECT ok(has_table_privilege('public', 'fincore.currencies', 'SELECT'), 'PUBLIC may read currencies');

-- Renamed functions keep 0.1.0's names for one release: each alias is the same C function, with
-- the same arguments, as the function its comment names (CHANGELOG, "Renamed").
SELECT results_eq($$
    SELECT a.oid::regprocedure::text FROM pg_catalog.pg_proc a
     WHERE a.pronamespace = 'fincore'::regnamespace
       AND pg_catalog.obj_description(a.oid, 'pg_proc') LIKE 'Deprecated alias of %'
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc n
                        WHERE n.pronamespace = a.pronamespace AND n.oid <> a.oid
                          AND n.proname = substring(pg_catalog.obj_description(a.oid, 'pg_proc')
                                                    FROM 'Deprecated alias of fincore\.([a-z_]+)')
                          AND n.proargtypes = a.proargtypes AND n.prosrc = a.prosrc
                          AND n.probin IS NOT DISTINCT FROM a.probin AND n.provolatile = a.provolatile
                          AND n.proisstrict = a.proisstrict AND n.prosecdef = a.prosecdef)
    UNION ALL
    SELECT 'aliases: ' || pg_catalog.count(*) FROM pg_catalog.pg_proc a
     WHERE a.pronamespace = 'fincore'::regnamespace
       AND pg_catalog.obj_description(a.oid, 'pg_proc') LIKE 'Deprecated alias of %'$$,
    $$VALUES ('aliases: 4')$$,
    'the 4 deprecated aliases (reverse, cancel, retry, div) each match the function they name');

SELECT * FROM finish();
ROLLBACK;
