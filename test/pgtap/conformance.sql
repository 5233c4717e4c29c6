-- pgTAP: the ledger against TigerBeetle's rules (src/state_machine.zig, create_transfers and
-- create_accounts results).  Each test names the rule it mirrors; every refusal is checked to write
-- nothing: no transfer, no hold, no counter change, no delta, no history row, no event.
BEGIN;
SET search_path = fincore, public;
SELECT plan(16);

SELECT fincore.create_tenant('Conformance', 'aaaaaaaa-c0f0-4000-8000-000000000001');
SELECT fincore.set_tenant('aaaaaaaa-c0f0-4000-8000-000000000001');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c0f0-4000-8000-0000000000a1');
SELECT fincore.create_account('USD', id => 'aaaaaaaa-c0f0-4000-8000-0000000000a2', flags => '{history}');
CREATE FUNCTION pg_temp.state() RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM fincore.transfers)::text || '/' || (SELECT count(*) FROM fincore.pending_holds)::text
           || '/' || (SELECT count(*) FROM fincore.account_deltas)::text || '/' || (SELECT count(*) FROM fincore.account_history)::text
           || '/' || (SELECT coalesce(sum(debits_pending + debits_posted + credits_pending + credits_posted), 0) FROM fincore.accounts)::text
           || '/' || (SELECT count(*) FROM fincore.accounts)::text
           || '/' || (SELECT count(*) FROM fincore.outbox_events)::text $$;
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 100);
CREATE TEMP TABLE before AS SELECT pg_temp.state() AS s;

-- ---- id_must_not_be_zero, id_must_not_be_int_max (transfers and accounts) -------------------------
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           '00000000-0000-0000-0000-000000000000')$$,
    'ZF329', 'transfer id 00000000-0000-0000-0000-000000000000 is reserved', 'TigerBeetle id_must_not_be_zero: the nil UUID (ZF329)');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           'ffffffff-ffff-ffff-ffff-ffffffffffff')$$,
    'ZF329', NULL, 'TigerBeetle id_must_not_be_int_max: the all-ones UUID (ZF329)');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           '00000000-0000-0000-0000-000000000000', pending => true)$$,
    'ZF329', NULL, 'id_must_not_be_zero for a hold');
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('00000000-0000-0000-0000-000000000000', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL),
        ROW('ffffffff-ffff-ffff-ffff-ffffffffffff', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL),
        -- precedence: the reserved id comes before every other check, here a zero amount and one account
        ROW('00000000-0000-0000-0000-000000000000', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', -5, 1, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('id_must_not_be_zero'::text), ('id_must_not_be_int_max'), ('id_must_not_be_zero')$$,
    'a batch: id_must_not_be_zero and id_must_not_be_int_max per item, before any other check');
SELECT throws_ok($$SELECT fincore.create_account('USD', id => '00000000-0000-0000-0000-000000000000')$$, 'ZF329',
    'account id 00000000-0000-0000-0000-000000000000 is reserved', 'TigerBeetle create_accounts id_must_not_be_zero (ZF329)');
SELECT throws_ok($$SELECT fincore.create_account('USD', id => 'ffffffff-ffff-ffff-ffff-ffffffffffff')$$, 'ZF329',
    NULL, 'TigerBeetle create_accounts id_must_not_be_int_max (ZF329)');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'no reserved id wrote anything');

-- ---- overflows_timeout ----------------------------------------------------------------------------
-- TigerBeetle refuses a hold whose timeout would carry its expiry past the largest timestamp; a
-- PostgreSQL timestamp ends in the year 294276.
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           pending => true, timeout => '300000 years')$$,
    'ZF318', 'timeout 300000 years overflows: the hold would expire after the last representable time',
    'TigerBeetle overflows_timeout: months beyond the last timestamp (ZF318, not a raw 22008)');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           pending => true, timeout => '110000000 days')$$,
    'ZF318', NULL, 'overflows_timeout: days');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           pending => true, timeout => '2562047788 hours')$$,
    'ZF318', NULL, 'overflows_timeout: time');
SELECT throws_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                           pending => true, timeout => '2147483647 mons 2147483647 days')$$,
    'ZF318', NULL, 'overflows_timeout: the largest interval there is');
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000b1', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, true, '300000 years', NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000b2', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, true, '1 hour', NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL),
        ROW('aaaaaaaa-c0f0-4000-8000-0000000000b3', 'aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1, 1, true, '2147483647 days', NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL)
    ]::fincore.transfer_request[]) ORDER BY index$$,
    $$VALUES ('overflows_timeout'::text), ('linked_event_failed'), ('overflows_timeout')$$,
    'a batch: overflows_timeout per item, and it fails its linked chain');
SELECT is(pg_temp.state(), (SELECT s FROM before), 'no overflowing timeout wrote anything');
SELECT lives_ok($$SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                                          'aaaaaaaa-c0f0-4000-8000-0000000000b4', pending => true, timeout => '250000 years')$$,
    'a timeout that ends before the last timestamp is a hold like any other');
SELECT is((SELECT expires_at FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000b4'),
          (SELECT created_at + interval '250000 years' FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000b4'),
    'its expiry is what PostgreSQL''s timestamptz + interval gives');
SELECT fincore.transfer('aaaaaaaa-c0f0-4000-8000-0000000000a1', 'aaaaaaaa-c0f0-4000-8000-0000000000a2', 1,
                       'aaaaaaaa-c0f0-4000-8000-0000000000b5', pending => true, timeout => '1 mon 3 days 04:05:06.789');
SELECT is((SELECT expires_at FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000b5'),
          (SELECT created_at + interval '1 mon 3 days 04:05:06.789' FROM fincore.transfers WHERE id = 'aaaaaaaa-c0f0-4000-8000-0000000000b5'),
    'and so is an ordinary one, months, days and time');
SELECT * FROM finish();
ROLLBACK;
