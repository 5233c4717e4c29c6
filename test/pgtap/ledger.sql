-- pgTAP: the ledger.  Every ZF3xx SQLSTATE a single call raises; a TigerBeetle-style
-- scenario for every per-item result of create_transfers; tenant isolation of ledger
-- objects as an app role; append-only enforcement; expiry and roll-up.
BEGIN;
SET search_path = fincore, public;
SELECT plan(151);
GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;

SELECT create_tenant('Tenant A', 'aaaaaaaa-0000-4000-8000-000000000001');
SELECT create_tenant('Tenant B', 'bbbbbbbb-0000-4000-8000-000000000002');
SELECT set_config('fincore.tenant', 'aaaaaaaa-0000-4000-8000-000000000001', true);

-- Accounts of tenant A: a world account, a no-overdraft wallet, a credits-limited
-- account, a hot fee account, a EUR account, a frozen and a closed account.
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000a1');
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000a2', flags => '{debits_must_not_exceed_credits}');
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000a3', flags => '{credits_must_not_exceed_debits}');
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000a4', flags => '{hot}');
SELECT create_account('EUR', id => '00000000-0000-4000-8000-0000000000a5');
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000a6');
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000a7');
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000a8');
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000a9');
SELECT freeze_account('00000000-0000-4000-8000-0000000000a6');
SELECT close_account('00000000-0000-4000-8000-0000000000a7');
-- Money in the wallet, and an existing transfer to replay.
SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 10000,
    id => '10000000-0000-4000-8000-000000000001', code => 7, metadata => '{"k":1}');
-- Holds: open, posted, voided, expired (a timeout of a microsecond is over at once).
SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 500,
    id => '20000000-0000-4000-8000-000000000001', pending => true, timeout => '1 hour');
SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 500,
    id => '20000000-0000-4000-8000-000000000002', pending => true);
SELECT post_pending('20000000-0000-4000-8000-000000000002');
SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 500,
    id => '20000000-0000-4000-8000-000000000003', pending => true);
SELECT void_pending('20000000-0000-4000-8000-000000000003');
SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 500,
    id => '20000000-0000-4000-8000-000000000004', pending => true, timeout => '1 microsecond');
-- A transfer of tenant B, whose id A must not be able to use.
SELECT set_config('fincore.tenant', 'bbbbbbbb-0000-4000-8000-000000000002', true);
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000b1');
SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000b2');
SELECT transfer('00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000b2', 100,
    id => '30000000-0000-4000-8000-00000000000b');
SELECT transfer('00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000b2', 100,
    id => '30000000-0000-4000-8000-0000000000bb', pending => true);
SELECT set_config('fincore.tenant', 'aaaaaaaa-0000-4000-8000-000000000001', true);

-- ---------------------------------------------------------------------------
-- 1. Every SQLSTATE of a single call.
-- ---------------------------------------------------------------------------
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000ff', 1)$$,
    'ZF301', NULL, 'ZF301 account_not_found: credit account');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000ff', '00000000-0000-4000-8000-0000000000a1', 1)$$,
    'ZF301', NULL, 'ZF301 account_not_found: debit account');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000b1', 1)$$,
    'ZF301', NULL, 'ZF301 account_not_found: another tenant''s account');
SELECT throws_ok($$SELECT freeze_account('00000000-0000-4000-8000-0000000000b1')$$,
    'ZF301', NULL, 'ZF301 account_not_found: freezing another tenant''s account');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a1', 1)$$,
    'ZF302', NULL, 'ZF302 same_account');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', '-0.01 USD'::amount)$$,
    'ZF303', NULL, 'ZF303 invalid_amount: a negative fincore.amount');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', -5)$$,
    'ZF303', NULL, 'ZF303 invalid_amount: negative');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', NULL::bigint)$$,
    'ZF321', NULL, 'ZF321 invalid_transfer_request: no amount');
SELECT throws_ok($$SELECT post_pending('20000000-0000-4000-8000-000000000001', -1)$$,
    'ZF303', NULL, 'ZF303 invalid_amount: posting a negative amount');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-0000000000a1', 999999)$$,
    'ZF304', NULL, 'ZF304 exceeds_credits');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a3', 1)$$,
    'ZF305', NULL, 'ZF305 exceeds_debits');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a6', 1)$$,
    'ZF306', NULL, 'ZF306 account_frozen');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a7', '00000000-0000-4000-8000-0000000000a1', 1)$$,
    'ZF307', NULL, 'ZF307 account_closed');
SELECT throws_ok($$SELECT post_pending('20000000-0000-4000-8000-0000000000ff')$$,
    'ZF308', NULL, 'ZF308 pending_transfer_not_found');
SELECT throws_ok($$SELECT void_pending('30000000-0000-4000-8000-0000000000bb')$$,
    'ZF308', NULL, 'ZF308 pending_transfer_not_found: another tenant''s hold');
SELECT throws_ok($$SELECT void_pending('10000000-0000-4000-8000-000000000001')$$,
    'ZF309', NULL, 'ZF309 not_a_pending_transfer');
SELECT throws_ok($$SELECT void_pending('20000000-0000-4000-8000-000000000002')$$,
    'ZF310', NULL, 'ZF310 pending_already_posted');
SELECT throws_ok($$SELECT post_pending('20000000-0000-4000-8000-000000000003')$$,
    'ZF311', NULL, 'ZF311 pending_already_voided');
SELECT throws_ok($$SELECT post_pending('20000000-0000-4000-8000-000000000004')$$,
    'ZF312', NULL, 'ZF312 pending_transfer_expired: posting after the timeout, before the sweep');
SELECT throws_ok($$SELECT void_pending('20000000-0000-4000-8000-000000000004')$$,
    'ZF312', NULL, 'ZF312 pending_transfer_expired: voiding after the timeout');
SELECT throws_ok($$SELECT post_pending('20000000-0000-4000-8000-000000000001', 501)$$,
    'ZF313', NULL, 'ZF313 exceeds_pending_amount');
SELECT throws_ok($$SELECT fincore.reverse_transfer('10000000-0000-4000-8000-0000000000ff'::uuid)$$,
    'ZF314', NULL, 'ZF314 transfer_not_found');
SELECT throws_ok($$SELECT fincore.reverse_transfer('30000000-0000-4000-8000-00000000000b'::uuid)$$,
    'ZF314', NULL, 'ZF314 transfer_not_found: another tenant''s transfer');
SELECT throws_ok($$SELECT fincore.reverse_transfer('20000000-0000-4000-8000-000000000001'::uuid)$$,
    'ZF315', NULL, 'ZF315 transfer_not_reversible: a hold');
SELECT throws_ok($$SELECT fincore.reverse_transfer('10000000-0000-4000-8000-000000000001'::uuid, 10001)$$,
    'ZF316', NULL, 'ZF316 exceeds_reversible_amount');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 10000,
                                   id => '10000000-0000-4000-8000-000000000001', code => 8, metadata => '{"k":1}')$$,
    'ZF317', 'transfer 10000000-0000-4000-8000-000000000001 already exists with a different code',
    'ZF317 transfer_exists_with_different_fields names the field');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 1,
                                   timeout => '1 hour')$$,
    'ZF318', NULL, 'ZF318 invalid_timeout: not pending');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 1,
                                   pending => true, timeout => '0 seconds')$$,
    'ZF318', NULL, 'ZF318 invalid_timeout: zero');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a3', '00000000-0000-4000-8000-0000000000a1', 1)
                   FROM (SELECT transfer('00000000-0000-4000-8000-0000000000a3', '00000000-0000-4000-8000-0000000000a1',
                                         9223372036854775807)) x$$,
    'ZF319', NULL, 'ZF319 balance_overflow');
-- Ids are unique within a tenant (the keys lead with tenant_id): another tenant's id is free.
-- (ZF320 is raised only on 0.1.0's tables, whose key is the id alone: test_upgrade.py.)
SELECT lives_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 100,
                                  id => '30000000-0000-4000-8000-00000000000b')$$,
    'an id another tenant used is free in this tenant');
SELECT is((SELECT array_agg(t.tenant_id::text || ' ' || t.debit_account_id::text ORDER BY t.tenant_id)
             FROM fincore.transfers t WHERE t.id = '30000000-0000-4000-8000-00000000000b'),
    ARRAY['aaaaaaaa-0000-4000-8000-000000000001 00000000-0000-4000-8000-0000000000a1',
          'bbbbbbbb-0000-4000-8000-000000000002 00000000-0000-4000-8000-0000000000b1'],
    'the same id names one transfer in each tenant');
SELECT throws_ok($$SELECT * FROM create_transfers(ARRAY[[ROW(NULL, NULL, NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)]]::transfer_request[][])$$,
    'ZF321', NULL, 'ZF321 invalid_transfer_request: a two-dimensional batch');
SELECT throws_ok($$SELECT * FROM create_transfers(ARRAY(SELECT ROW(NULL, NULL, NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::transfer_request
                                                         FROM generate_series(1, 8191)))$$,
    'ZF321', NULL, 'ZF321 invalid_transfer_request: more than 8190 transfers');
SELECT throws_ok($$SELECT create_account('USD', flags => '{overdraft}')$$, 'ZF323', NULL, 'ZF323 invalid_account_flags: unknown');
SELECT throws_ok($$SELECT create_account('USD', flags => '{hot,history}')$$, 'ZF323', NULL, 'ZF323 invalid_account_flags: hot with history');
SELECT throws_ok($$SELECT create_account('USD', flags => '{debits_must_not_exceed_credits,credits_must_not_exceed_debits}')$$,
    'ZF323', NULL, 'ZF323 invalid_account_flags: both limits');
SELECT throws_ok($$SELECT create_account('USD', flags => ARRAY[NULL]::text[])$$, 'ZF323', NULL, 'ZF323 invalid_account_flags: NULL');
SELECT throws_ok($$SELECT create_account('USD', flags => '{debits_must_not_exceed_credits}', credit_limit => -1)$$,
    'ZF324', NULL, 'ZF324 invalid_credit_limit: negative');
SELECT throws_ok($$SELECT create_account('USD', credit_limit => 100)$$, 'ZF324', NULL, 'ZF324 invalid_credit_limit: without a limit flag');
SELECT throws_ok($$SELECT create_account('EUR', id => '00000000-0000-4000-8000-0000000000a1')$$,
    'ZF325', NULL, 'ZF325 account_exists_with_different_fields');
SELECT lives_ok($$SELECT create_account('USD', id => '00000000-0000-4000-8000-0000000000b2')$$,
    'an account id another tenant uses is free in this tenant');
SELECT throws_ok($$SELECT close_account('00000000-0000-4000-8000-0000000000a2')$$, 'ZF326', NULL, 'ZF326 account_has_pending');
SELECT throws_ok($$UPDATE fincore.transfers SET amount = 0$$, 'ZF327', NULL, 'ZF327 ledger_append_only: UPDATE by the owner');
SELECT throws_ok($$TRUNCATE fincore.account_history$$, 'ZF327', NULL, 'ZF327 ledger_append_only: TRUNCATE of history');
SELECT throws_ok($$UPDATE fincore.accounts SET flags = 0$$, 'ZF327', NULL, 'ZF327: an account''s identity is fixed');
SELECT throws_ok($$SELECT unfreeze_account('00000000-0000-4000-8000-0000000000a7')$$, 'ZF328', NULL, 'ZF328 invalid_account_status_change');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a5', 1)$$,
    'ZF103', NULL, 'ZF103 currency_mismatch: accounts of two currencies');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', '1.00 EUR'::amount)$$,
    'ZF103', NULL, 'ZF103 currency_mismatch: an amount in another currency');
SELECT throws_ok($$SELECT create_account('XYZ')$$, 'ZF102', NULL, 'ZF102 unknown_currency');

-- ---------------------------------------------------------------------------
-- 2. TigerBeetle semantics: a scenario for every result of create_transfers.
-- ---------------------------------------------------------------------------
CREATE FUNCTION pg_temp.r(VARIADIC reqs transfer_request[]) RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(result ORDER BY index) FROM fincore.create_transfers(reqs) $$;
CREATE FUNCTION pg_temp.t(id uuid, d text, c text, amount bigint, pending boolean DEFAULT NULL, timeout interval DEFAULT NULL,
                          linked boolean DEFAULT NULL, code integer DEFAULT NULL, metadata jsonb DEFAULT NULL)
    RETURNS transfer_request LANGUAGE sql AS $$
    SELECT ROW(id, ('00000000-0000-4000-8000-0000000000' || d)::uuid, ('00000000-0000-4000-8000-0000000000' || c)::uuid,
               amount, code, pending, timeout, NULL, NULL, NULL, linked, metadata, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::transfer_request $$;
CREATE FUNCTION pg_temp.post(pending uuid, amount bigint DEFAULT NULL, linked boolean DEFAULT NULL) RETURNS transfer_request
    LANGUAGE sql AS $$ SELECT ROW(NULL, NULL, NULL, amount, NULL, NULL, NULL, pending, NULL, NULL, linked, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::transfer_request $$;
CREATE FUNCTION pg_temp.void(pending uuid) RETURNS transfer_request
    LANGUAGE sql AS $$ SELECT ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, pending, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::transfer_request $$;
CREATE FUNCTION pg_temp.rev(t uuid, amount bigint DEFAULT NULL) RETURNS transfer_request
    LANGUAGE sql AS $$ SELECT ROW(NULL, NULL, NULL, amount, NULL, NULL, NULL, NULL, NULL, t, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::transfer_request $$;

SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a2', 1)), '{ok}', 'ok');
SELECT is(pg_temp.r(pg_temp.t('10000000-0000-4000-8000-000000000001', 'a1', 'a2', 10000, code => 7, metadata => '{"k":1}')),
    '{exists}', 'exists: the same id and fields');
SELECT is(pg_temp.r(pg_temp.t('10000000-0000-4000-8000-000000000001', 'a1', 'a3', 10000, code => 7, metadata => '{"k":1}')),
    '{exists_with_different_credit_account_id}', 'exists_with_different_credit_account_id');
SELECT is(pg_temp.r(pg_temp.t('10000000-0000-4000-8000-000000000001', 'a3', 'a2', 10000, code => 7, metadata => '{"k":1}')),
    '{exists_with_different_debit_account_id}', 'exists_with_different_debit_account_id');
SELECT is(pg_temp.r(pg_temp.t('10000000-0000-4000-8000-000000000001', 'a1', 'a2', 9999, code => 7, metadata => '{"k":1}')),
    '{exists_with_different_amount}', 'exists_with_different_amount');
SELECT is(pg_temp.r(pg_temp.t('10000000-0000-4000-8000-000000000001', 'a1', 'a2', 10000, code => 6, metadata => '{"k":1}')),
    '{exists_with_different_code}', 'exists_with_different_code');
SELECT is(pg_temp.r(pg_temp.t('10000000-0000-4000-8000-000000000001', 'a1', 'a2', 10000, code => 7, metadata => '{"k":2}')),
    '{exists_with_different_metadata}', 'exists_with_different_metadata');
SELECT is(pg_temp.r(pg_temp.t('10000000-0000-4000-8000-000000000001', 'a1', 'a2', 10000, pending => true, code => 7, metadata => '{"k":1}')),
    '{exists_with_different_kind}', 'exists_with_different_kind');
SELECT is(pg_temp.r(pg_temp.t('20000000-0000-4000-8000-000000000001', 'a1', 'a2', 500, pending => true, timeout => '2 hours', code => 0)),
    '{exists_with_different_timeout}', 'exists_with_different_timeout');
SELECT is(pg_temp.r(ROW('20000000-0000-4000-8000-000000000002', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                        '20000000-0000-4000-8000-000000000001', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::transfer_request),
    '{exists_with_different_kind}', 'a post replayed as a void: exists_with_different_kind');
SELECT is(pg_temp.r(pg_temp.t('30000000-0000-4000-8000-0000000000bb', 'a1', 'a2', 1)), '{ok}',
    'another tenant''s transfer id is free in this tenant (id_already_used only on 0.1.0''s tables)');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'ff', 'a2', 1)), '{debit_account_not_found}', 'debit_account_not_found');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'ff', 1)), '{credit_account_not_found}', 'credit_account_not_found');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'b1', 1)), '{credit_account_not_found}', 'credit_account_not_found: another tenant');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a1', 1)), '{accounts_must_be_different}', 'accounts_must_be_different');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a2', -1)), '{amount_must_not_be_negative}', 'amount_must_not_be_negative');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a5', 1)), '{accounts_must_have_the_same_currency}', 'accounts_must_have_the_same_currency');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a2', 'a1', 999999)), '{exceeds_credits}', 'exceeds_credits');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a3', 1)), '{exceeds_debits}', 'exceeds_debits');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a6', 'a1', 1)), '{debit_account_frozen}', 'debit_account_frozen');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a6', 1)), '{credit_account_frozen}', 'credit_account_frozen');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a7', 'a1', 1)), '{debit_account_closed}', 'debit_account_closed');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a7', 1)), '{credit_account_closed}', 'credit_account_closed');
SELECT is(pg_temp.r(pg_temp.post('20000000-0000-4000-8000-0000000000ff')), '{pending_transfer_not_found}', 'pending_transfer_not_found');
SELECT is(pg_temp.r(pg_temp.post('10000000-0000-4000-8000-000000000001')), '{pending_transfer_not_pending}', 'pending_transfer_not_pending');
SELECT is(pg_temp.r(pg_temp.void('20000000-0000-4000-8000-000000000002')), '{pending_transfer_already_posted}', 'pending_transfer_already_posted');
SELECT is(pg_temp.r(pg_temp.post('20000000-0000-4000-8000-000000000003')), '{pending_transfer_already_voided}', 'pending_transfer_already_voided');
SELECT is(pg_temp.r(pg_temp.post('20000000-0000-4000-8000-000000000004')), '{pending_transfer_expired}', 'pending_transfer_expired');
SELECT is(pg_temp.r(pg_temp.post('20000000-0000-4000-8000-000000000001', 501)), '{exceeds_pending_transfer_amount}',
    'exceeds_pending_transfer_amount');
SELECT is(pg_temp.r(pg_temp.rev('10000000-0000-4000-8000-0000000000ff')), '{transfer_not_found}', 'transfer_not_found');
SELECT is(pg_temp.r(pg_temp.rev('20000000-0000-4000-8000-000000000001')), '{transfer_not_reversible}', 'transfer_not_reversible');
SELECT is(pg_temp.r(pg_temp.rev('10000000-0000-4000-8000-000000000001', 10001)), '{exceeds_reversible_amount}', 'exceeds_reversible_amount');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a2', 1, timeout => '1 hour')), '{timeout_reserved_for_pending_transfer}',
    'timeout_reserved_for_pending_transfer');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a2', 1, pending => true, timeout => '-1 hour')), '{timeout_must_be_positive}',
    'timeout_must_be_positive');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a8', 'a9', 9223372036854775807), pg_temp.t(NULL, 'a8', 'a9', 1)),
    '{ok,overflows_balance}', 'overflows_balance');
SELECT is(pg_temp.r(ROW(NULL, NULL, NULL, 1, NULL, true, NULL, '20000000-0000-4000-8000-000000000001', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::transfer_request),
    '{invalid_request}', 'invalid_request: a post that is also pending');
SELECT is(pg_temp.r(NULL::transfer_request), '{invalid_request}', 'invalid_request: a NULL item');
-- Linked chains.
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a2', 1, linked => true), pg_temp.t(NULL, 'a2', 'a1', 999999, linked => true),
                    pg_temp.t(NULL, 'a1', 'a2', 1), pg_temp.t(NULL, 'a1', 'a2', 1)),
    '{linked_event_failed,exceeds_credits,linked_event_failed,ok}', 'a failing item fails its whole chain, and only its chain');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a2', 1), pg_temp.t(NULL, 'a1', 'a2', 1, linked => true),
                    pg_temp.t(NULL, 'a1', 'a2', 1, linked => true)),
    '{ok,linked_event_failed,linked_event_chain_open}', 'linked_event_chain_open: a chain that does not end');
SELECT is(pg_temp.r(pg_temp.t('40000000-0000-4000-8000-000000000001', 'a1', 'a2', 700, pending => true, linked => true),
                    pg_temp.post('40000000-0000-4000-8000-000000000001', 300)),
    '{ok,ok}', 'a hold created and posted in one chain');
-- A chain that moved money in memory and then failed leaves nothing behind.
CREATE TEMP TABLE before AS SELECT id, debits_posted, credits_posted FROM account_balances;
SELECT is(pg_temp.r(pg_temp.t('50000000-0000-4000-8000-000000000001', 'a1', 'a2', 5, linked => true),
                    pg_temp.t('50000000-0000-4000-8000-000000000002', 'a2', 'a1', 999999)),
    '{linked_event_failed,exceeds_credits}', 'a failed chain');
SELECT is_empty($$SELECT 1 FROM transfers WHERE id IN ('50000000-0000-4000-8000-000000000001', '50000000-0000-4000-8000-000000000002')$$,
    'no transfer row of the failed chain was written');
SELECT set_eq($$SELECT id, debits_posted, credits_posted FROM account_balances$$, $$SELECT * FROM before$$,
    'no balance changed after the failed chain');
-- A reversal and a void in one batch; the second of two reversals that together exceed is refused.
SELECT is(pg_temp.r(pg_temp.rev('10000000-0000-4000-8000-000000000001', 6000), pg_temp.rev('10000000-0000-4000-8000-000000000001', 5000),
                    pg_temp.void('40000000-0000-4000-8000-0000000000ff')),
    '{ok,exceeds_reversible_amount,pending_transfer_not_found}', 'reversals in one batch never exceed the original');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'a2', 1)), '{ok}', 'the batch engine is still usable after refusals');

-- ---------------------------------------------------------------------------
-- 3. Holds, expiry, hot accounts.
-- ---------------------------------------------------------------------------
SELECT cmp_ok(expire_pending(), '>=', 1, 'expire_pending releases the expired hold');
SELECT ok(EXISTS (SELECT 1 FROM transfers WHERE pending_id = '20000000-0000-4000-8000-000000000004' AND kind = 'expire'),
    'an expire row resolves it');
SELECT throws_ok($$SELECT post_pending('20000000-0000-4000-8000-000000000004')$$, 'ZF312', NULL, 'posting it after the sweep: expired');
SELECT is_empty($$SELECT 1 FROM pending_holds WHERE transfer_id = '20000000-0000-4000-8000-000000000004'$$,
    'the open-holds list no longer has it');
SELECT is(expire_pending(), 0, 'nothing left to expire');
SELECT ok(EXISTS (SELECT 1 FROM maintenance_steps WHERE step = 'expire_pending'), 'expiry is a maintenance step');
SELECT ok(EXISTS (SELECT 1 FROM maintenance_steps WHERE step = 'rollup_hot_accounts'), 'the roll-up is a maintenance step');
-- Hot account: deltas, not row updates; the balance is exact before and after the roll-up.
SELECT transfer('00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-0000000000a4', 25);
SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a4', 75);
SELECT is((SELECT credits_posted FROM accounts WHERE id = '00000000-0000-4000-8000-0000000000a4'), 0::bigint,
    'a hot account''s row is not updated by a transfer');
SELECT is((SELECT count(*)::int FROM account_deltas WHERE account_id = '00000000-0000-4000-8000-0000000000a4'), 2,
    'its legs are appended as deltas');
SELECT is((SELECT credits_posted FROM balance('00000000-0000-4000-8000-0000000000a4')), 100::bigint, 'its balance includes the deltas');
SELECT cmp_ok(rollup_hot_accounts(), '>=', 1, 'rollup_hot_accounts folds them in');
SELECT is((SELECT credits_posted FROM accounts WHERE id = '00000000-0000-4000-8000-0000000000a4'), 100::bigint, 'now the row has them');
SELECT is((SELECT credits_posted FROM balance('00000000-0000-4000-8000-0000000000a4')), 100::bigint, 'and the balance is the same');
SELECT is_empty($$SELECT * FROM account_deltas$$, 'no delta is left');
SELECT is_empty($$SELECT * FROM verify()$$, 'verify() finds nothing wrong');
SELECT lives_ok($$SELECT * FROM maintenance()$$, 'maintenance() runs the ledger steps');

-- ---------------------------------------------------------------------------
-- 4. An app role of tenant B, as PostgREST runs it.
-- ---------------------------------------------------------------------------
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT grant_app_role('authenticated');
SAVEPOINT as_b;
SELECT set_config('fincore.tenant', '', true) IS NULL;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"bbbbbbbb-1111-4000-8000-000000000002","tenant_id":"bbbbbbbb-0000-4000-8000-000000000002"}', true);
SELECT is(tenant_id(), 'bbbbbbbb-0000-4000-8000-000000000002'::uuid, 'the request is tenant B''s');
SELECT results_eq($$SELECT count(*)::int FROM accounts$$, ARRAY[2], 'B sees only its two accounts');
SELECT is_empty($$SELECT 1 FROM transfers WHERE debit_account_id = '00000000-0000-4000-8000-0000000000a1'$$, 'B sees none of A''s transfers');
SELECT is((SELECT row(b.*)::text FROM balance('00000000-0000-4000-8000-0000000000a2') b), '(,,,,,,)',
    'B cannot read the balance of A''s account: all NULL');
SELECT is_empty($$SELECT * FROM account_transfers('00000000-0000-4000-8000-0000000000a2')$$, 'B cannot list A''s transfers');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-0000000000b1', 1)$$,
    'ZF301', NULL, 'B cannot move money out of A''s account');
SELECT throws_ok($$SELECT void_pending('20000000-0000-4000-8000-000000000001')$$, 'ZF308', NULL, 'B cannot void A''s hold');
SELECT throws_ok($$SELECT fincore.reverse('10000000-0000-4000-8000-000000000001'::uuid)$$, 'ZF314', NULL, 'B cannot reverse A''s transfer (through 0.1.0''s name, the deprecated alias)');
SELECT throws_ok($$SELECT close_account('00000000-0000-4000-8000-0000000000a1')$$, 'ZF301', NULL, 'B cannot close A''s account');
SELECT is(pg_temp.r(pg_temp.t(NULL, 'a1', 'b1', 1)), '{debit_account_not_found}', 'B''s batch cannot use A''s account');
SELECT throws_ok($$INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)
                   VALUES (gen_random_uuid(), '00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000b2',
                           1, 'USD', 'posted', now())$$, '42501', NULL, 'B cannot insert a transfer row directly');
SELECT throws_ok($$UPDATE accounts SET credits_posted = 1000000$$, '42501', NULL, 'B cannot update a balance directly');
SELECT throws_ok($$SELECT expire_pending()$$, '42501', NULL, 'B cannot run the cross-tenant sweep');
SELECT lives_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000b2', 1)$$,
    'B moves money between its own accounts');
SELECT is_empty($$SELECT * FROM verify()$$, 'verify() as B checks B''s books: clean');
SELECT results_eq($$SELECT count(*)::int FROM account_balances$$, ARRAY[2], 'the account_balances view applies B''s policies');
ROLLBACK TO SAVEPOINT as_b;

-- ---------------------------------------------------------------------------
-- 5. Idempotent account creation and the catalogue.
-- ---------------------------------------------------------------------------
SELECT is(create_account('USD', id => '00000000-0000-4000-8000-0000000000a2', flags => '{debits_must_not_exceed_credits}'),
    '00000000-0000-4000-8000-0000000000a2'::uuid, 'creating an account again with the same fields returns it');
SELECT is((SELECT count(*)::int FROM accounts WHERE id = '00000000-0000-4000-8000-0000000000a2'), 1, 'and does not duplicate it');
SELECT ok(create_account('USD') <> create_account('USD'), 'without an id, every call creates a new account');
SELECT has_function('fincore', 'uuidv7', ARRAY[]::name[]);
SELECT is((SELECT count(*)::int FROM pg_trigger WHERE tgrelid = 'fincore.transfers'::regclass AND tgenabled = 'A'), 2,
    'the append-only triggers of transfers fire ALWAYS');
SELECT is((SELECT count(*)::int FROM pg_trigger WHERE tgrelid = 'fincore.account_history'::regclass AND tgenabled = 'A'), 2,
    'the append-only triggers of account_history fire ALWAYS');
SELECT ok((SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'fincore.transfers'::regclass),
    'transfers: RLS enabled and forced');
SELECT ok(NOT has_table_privilege('authenticated', 'fincore.transfers', 'INSERT'), 'app roles cannot insert transfers');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'fincore.transfer(uuid,uuid,bigint,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamptz)'::regprocedure),
    ARRAY['search_path=pg_catalog, pg_temp', 'fincore.owner_context=on'],
    'transfer pins its search_path and marks fincore''s owner context');

-- ---------------------------------------------------------------------------
-- 6. Events: every written transfer and status change is an outbox event, in the
--    same transaction; a tenant can switch them off.
-- ---------------------------------------------------------------------------
SELECT set_config('fincore.tenant', 'aaaaaaaa-0000-4000-8000-000000000001', true);
SELECT results_eq($$SELECT type, aggregatetype, payload->>'kind', (payload->>'amount')::bigint FROM outbox_stream
                    WHERE aggregateid = '10000000-0000-4000-8000-000000000001' ORDER BY seq LIMIT 1$$,
    $$VALUES ('transfer.created', 'transfer', 'posted', 10000::bigint)$$, 'a transfer emits transfer.created with the transfer');
SELECT results_eq($$SELECT type FROM outbox_stream WHERE aggregateid = '20000000-0000-4000-8000-000000000002' ORDER BY seq$$,
    ARRAY['transfer.created', 'transfer.posted'], 'a hold''s story is one aggregate, in order: created, posted');
SELECT results_eq($$SELECT type FROM outbox_stream WHERE aggregateid = '20000000-0000-4000-8000-000000000004' ORDER BY seq$$,
    ARRAY['transfer.created', 'transfer.expired'], 'an expired hold: created, expired');
SELECT ok(EXISTS (SELECT 1 FROM outbox_stream WHERE type = 'transfer.voided'), 'voids are events');
SELECT ok(EXISTS (SELECT 1 FROM outbox_stream WHERE type = 'transfer.reversed'), 'reversals are events');
SELECT results_eq($$SELECT type FROM outbox_stream WHERE aggregateid = '00000000-0000-4000-8000-0000000000a7' ORDER BY seq$$,
    ARRAY['account.closed'], 'closing an account is an event');
SELECT set_ledger_events(false);
SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 1,
    id => '60000000-0000-4000-8000-000000000001');
SELECT is_empty($$SELECT 1 FROM outbox_stream WHERE aggregateid = '60000000-0000-4000-8000-000000000001'$$,
    'with ledger events off, a transfer emits nothing');
SELECT set_ledger_events(true);

-- ---------------------------------------------------------------------------
-- 7. Fees in transfers: a linked fee leg, both or neither.
-- ---------------------------------------------------------------------------
SELECT define_fee_schedule('card', 'USD', '{"components": [{"type": "percentage", "rate": "0.029"}, {"type": "flat", "amount": 30}]}',
                           effective_from => '2000-01-01');
SELECT is((SELECT fee FROM transfer('00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-0000000000a1', 1000,
                                    id => '70000000-0000-4000-8000-000000000001', fee_schedule => 'card',
                                    fee_account => '00000000-0000-4000-8000-0000000000a4')), 59::bigint,
    'a transfer with a fee schedule returns its fee (2.9% of 10.00 + 0.30)');
SELECT results_eq($$SELECT amount, credit_account_id FROM transfers WHERE metadata->>'fee_for' = '70000000-0000-4000-8000-000000000001'$$,
    $$VALUES (59::bigint, '00000000-0000-4000-8000-0000000000a4'::uuid)$$, 'the fee leg goes from the payer to the fee account');
SELECT is((SELECT (metadata->'fee'->>'schedule_id')::uuid FROM transfers WHERE id = '70000000-0000-4000-8000-000000000001'),
    (SELECT id FROM fee_schedules WHERE code = 'card'), 'the transfer''s metadata records the schedule version');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-0000000000a1',
                                   (SELECT posted FROM balance('00000000-0000-4000-8000-0000000000a2')),
                                   id => '70000000-0000-4000-8000-000000000002', fee_schedule => 'card',
                                   fee_account => '00000000-0000-4000-8000-0000000000a4')$$,
    'ZF304', NULL, 'a fee the payer cannot cover refuses the transfer (ZF304)');
SELECT is_empty($$SELECT 1 FROM transfers WHERE id = '70000000-0000-4000-8000-000000000002'$$, 'and nothing of it was written');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 30,
                                   fee_schedule => 'card', fee_account => '00000000-0000-4000-8000-0000000000a4',
                                   fee_mode => 'deducted')$$,
    'ZF410', NULL, 'a deducted fee that leaves nothing is ZF410');
SELECT throws_ok($$SELECT transfer('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 30,
                                   fee_schedule => 'card')$$, 'ZF321', NULL, 'a fee without a fee account is ZF321');
SELECT is(pg_temp.r(ROW(NULL, '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000a2', 100, NULL, true, NULL,
                        NULL, NULL, NULL, NULL, NULL, 'card', '00000000-0000-4000-8000-0000000000a4', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::transfer_request),
    '{invalid_request}', 'a fee on a hold is an invalid request');
SELECT is_empty($$SELECT * FROM verify()$$, 'verify() stays clean with fee legs');

SELECT * FROM finish();
ROLLBACK;
