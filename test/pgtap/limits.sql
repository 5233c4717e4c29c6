-- pgTAP: limits in the posting path (docs/limits.md): definitions and their errors
-- (ZF801-ZF804), every kind of window and filter, holds, posts, voids, expiry and
-- reversals, batches and linked chains, that a refusal writes nothing, the tenant's
-- isolation and who may manage limits.
BEGIN;
SET search_path = fincore, public;
SELECT plan(85);

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.create_tenant('Limits A', '1a000000-0000-4000-8000-00000000000a');
SELECT fincore.create_tenant('Limits B', '1b000000-0000-4000-8000-00000000000b');
SELECT set_config('request.jwt.claims', '{"tenant_id":"1a000000-0000-4000-8000-00000000000a"}', true);

-- Accounts: a1, a2 (code 1), a3 (code 2), a4 (code 2), all USD; e1 (code 1), e2 (code 2) in EUR.
SELECT fincore.create_account('USD', 1, id => 'a1000000-0000-4000-8000-000000000001');
SELECT fincore.create_account('USD', 1, id => 'a2000000-0000-4000-8000-000000000002');
SELECT fincore.create_account('USD', 2, id => 'a3000000-0000-4000-8000-000000000003');
SELECT fincore.create_account('USD', 2, id => 'a4000000-0000-4000-8000-000000000004');
SELECT fincore.create_account('EUR', 1, id => 'e1000000-0000-4000-8000-000000000001');
SELECT fincore.create_account('EUR', 2, id => 'e2000000-0000-4000-8000-000000000002');

CREATE FUNCTION pg_temp.used(lname text, subject uuid DEFAULT NULL) RETURNS bigint LANGUAGE sql AS $$
    SELECT fincore.limit_used(l.window_kind, l.window_seconds, l.time_zone, c.window_start, c.used, c.ring,
                              c.ring_head, now())
      FROM fincore.limits l JOIN fincore.limit_counters c ON c.tenant_id = l.tenant_id AND c.limit_id = l.id
     WHERE l.name = lname AND c.subject = coalesce(subject, '00000000-0000-0000-0000-000000000000') $$;
CREATE FUNCTION pg_temp.ntransfers() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM fincore.transfers $$;
CREATE FUNCTION pg_temp.req(d uuid, c uuid, amount bigint, linked boolean DEFAULT false, pending boolean DEFAULT false,
                            code integer DEFAULT 0, post uuid DEFAULT NULL, void uuid DEFAULT NULL)
    RETURNS fincore.transfer_request LANGUAGE sql AS $$
    SELECT ROW(NULL, d, c, amount, code, pending, NULL, post, void, NULL, linked, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request $$;

-- ---------------------------------------------------------------------------
-- Catalogue and definitions
-- ---------------------------------------------------------------------------
SELECT has_table('fincore', 'limits', 'table limits exists');
SELECT has_table('fincore', 'limit_counters', 'table limit_counters exists');
SELECT has_table('fincore', 'account_customers', 'table account_customers exists');
SELECT ok((SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'fincore.limits'::regclass),
    'limits: row level security forced');
SELECT ok((SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'fincore.limit_counters'::regclass),
    'limit_counters: row level security forced');
SELECT is((SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = 'fincore.limit_counters'::regclass AND i.indisprimary),
    '{tenant_id,subject,limit_id}'::name[], 'counters are keyed by tenant first');

SELECT throws_ok($$SELECT fincore.create_limit('x', 10, metric => 'volume', currency => 'USD')$$, 'ZF801', NULL,
    'an unknown metric is ZF801');
SELECT throws_like($$SELECT fincore.create_limit('x', 10, window_kind => 'trailing', currency => 'USD')$$,
    '%window_seconds%', 'a trailing window needs window_seconds (ZF801)');
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, window_kind => 'trailing', window_seconds => 5, currency => 'USD')$$,
    'ZF801', NULL, 'a trailing window shorter than 10 seconds is ZF801');
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, window_kind => 'trailing', window_seconds => 2678401, currency => 'USD')$$,
    'ZF801', NULL, 'a trailing window longer than 31 days is ZF801');
SELECT throws_like($$SELECT fincore.create_limit('x', 10)$$, '%currency%', 'an amount limit needs a currency (ZF801)');
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, metric => 'count', currency => 'USD')$$, 'ZF801', NULL,
    'a count limit takes no currency');
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, currency => 'XQZ')$$, 'ZF102', NULL,
    'an unknown currency is ZF102');
SELECT throws_like($$SELECT fincore.create_limit('x', 10, currency => 'USD', time_zone => 'Mars/Olympus')$$,
    '%Mars/Olympus%', 'an unknown time zone is named (ZF801)');
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, currency => 'USD', scope => 'account')$$, 'ZF801', NULL,
    'an account limit needs account_id');
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, currency => 'USD', scope => 'account',
                                               account_id => 'ffffffff-0000-4000-8000-000000000000')$$,
    'ZF301', NULL, 'an account limit on an unknown account is ZF301');
SELECT throws_ok($$SELECT fincore.create_limit('x', -1, currency => 'USD')$$, 'ZF801', NULL,
    'a negative maximum is ZF801');
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, metric => 'count', window_kind => 'transaction')$$,
    'ZF801', NULL, 'a transaction window caps amounts only');
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, currency => 'USD', transfer_codes => '{}')$$,
    'ZF801', NULL, 'an empty filter list is ZF801');
SELECT throws_ok($$SELECT fincore.update_limit('ffffffff-0000-4000-8000-000000000000', 5)$$, 'ZF802', NULL,
    'updating an unknown limit is ZF802');
SELECT is(count(*), 0::bigint, 'no refused definition was written') FROM fincore.limits;

-- ---------------------------------------------------------------------------
-- A daily amount limit on one account
-- ---------------------------------------------------------------------------
SELECT lives_ok($$SELECT fincore.create_limit('a1-daily', 1000, currency => 'USD', scope => 'account',
                                              account_id => 'a1000000-0000-4000-8000-000000000001',
                                              time_zone => 'America/New_York',
                                              id => 'd1000000-0000-4000-8000-000000000001')$$,
    'a daily limit of 10.00 USD on a1');
SELECT throws_ok($$SELECT fincore.create_limit('a1-daily', 5, currency => 'USD')$$, 'ZF804', NULL,
    'a name in use is ZF804');
SELECT is((fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 600)).result,
    'created', '6.00 USD passes');
SELECT is(pg_temp.used('a1-daily', 'a1000000-0000-4000-8000-000000000001'), 600::bigint, 'the counter has 600');
SELECT is((fincore.transfer('a2000000-0000-4000-8000-000000000002', 'a1000000-0000-4000-8000-000000000001', 5000)).result,
    'created', 'a credit to a1 is not a debit: not counted');
CREATE TEMP TABLE before_refusal AS
    SELECT (SELECT count(*) FROM fincore.transfers) AS transfers,
           (SELECT count(*) FROM fincore.account_history) AS history,
           (SELECT string_agg(c::text, ',' ORDER BY c.limit_id, c.subject) FROM fincore.limit_counters c) AS counters,
           (SELECT debits_posted FROM fincore.accounts WHERE id = 'a1000000-0000-4000-8000-000000000001') AS debits;
SELECT throws_like($$SELECT fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 401)$$,
    '%exceeds limit "a1-daily"%', '4.01 USD more exceeds the limit (ZF333)');
SELECT throws_ok($$SELECT fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 401)$$,
    'ZF333', NULL, 'exceeds_limit is ZF333');
SELECT ok((SELECT transfers = (SELECT count(*) FROM fincore.transfers)
              AND history = (SELECT count(*) FROM fincore.account_history)
              AND counters = (SELECT string_agg(c::text, ',' ORDER BY c.limit_id, c.subject) FROM fincore.limit_counters c)
              AND debits = (SELECT debits_posted FROM fincore.accounts WHERE id = 'a1000000-0000-4000-8000-000000000001')
             FROM before_refusal),
    'a refusal leaves no transfer, no history row, no counter change, no balance change');
SELECT is((fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 400)).result,
    'created', 'exactly up to the maximum passes');
SELECT is(r.used, 1000::bigint, 'limit_remaining: used') FROM fincore.limit_remaining('a1000000-0000-4000-8000-000000000001') r WHERE r.name = 'a1-daily';
SELECT is(r.remaining, 0::bigint, 'limit_remaining: nothing remains') FROM fincore.limit_remaining('a1000000-0000-4000-8000-000000000001') r WHERE r.name = 'a1-daily';
SELECT is(r.resets_at, (date_trunc('day', now() AT TIME ZONE 'America/New_York') + interval '1 day') AT TIME ZONE 'America/New_York',
    'limit_remaining: resets at the next local midnight')
  FROM fincore.limit_remaining('a1000000-0000-4000-8000-000000000001') r WHERE r.name = 'a1-daily';

-- A batch: the refused item gets exceeds_limit and its id stays failed; the others pass.
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        pg_temp.req('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 1),
        pg_temp.req('a2000000-0000-4000-8000-000000000002', 'a1000000-0000-4000-8000-000000000001', 7)]) ORDER BY index$$,
    ARRAY['exceeds_limit', 'ok'], 'a batch: exceeds_limit for the item over the limit only');
SELECT is((SELECT result FROM fincore.failed_transfers ORDER BY failed_at DESC LIMIT 1), 'exceeds_limit',
    'the refused id is recorded as failed');
SELECT lives_ok($$SELECT fincore.update_limit('d1000000-0000-4000-8000-000000000001', max_value => 1500)$$,
    'update_limit raises the maximum');
-- A linked chain whose second item exceeds: neither is written, nothing is counted.
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        pg_temp.req('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 300, linked => true),
        pg_temp.req('a1000000-0000-4000-8000-000000000001', 'a3000000-0000-4000-8000-000000000003', 300)]) ORDER BY index$$,
    ARRAY['linked_event_failed', 'exceeds_limit'], 'a chain fails whole when one item exceeds');
SELECT is(pg_temp.used('a1-daily', 'a1000000-0000-4000-8000-000000000001'), 1000::bigint, 'the failed chain counted nothing');
SELECT results_eq($$SELECT result FROM fincore.create_transfers(ARRAY[
        pg_temp.req('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 300, linked => true),
        pg_temp.req('a1000000-0000-4000-8000-000000000001', 'a3000000-0000-4000-8000-000000000003', 200)]) ORDER BY index$$,
    ARRAY['ok', 'ok'], 'a chain within the new maximum passes');
SELECT is(pg_temp.used('a1-daily', 'a1000000-0000-4000-8000-000000000001'), 1500::bigint, 'both items counted');
SELECT lives_ok($$SELECT fincore.disable_limit('d1000000-0000-4000-8000-000000000001')$$, 'disable_limit');
SELECT is((fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 50)).result,
    'created', 'a disabled limit is not enforced');
SELECT lives_ok($$SELECT fincore.update_limit('d1000000-0000-4000-8000-000000000001', enabled => true)$$, 'enabled again');
SELECT throws_ok($$SELECT fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 1)$$,
    'ZF333', NULL, 'enabled again, with the counter it had');
SELECT lives_ok($$SELECT fincore.disable_limit('d1000000-0000-4000-8000-000000000001')$$, 'disabled for the next tests');

-- ---------------------------------------------------------------------------
-- Holds: counted when made, given back by a void, an expiry, or what a post leaves
-- ---------------------------------------------------------------------------
SELECT fincore.create_limit('a3-holds', 1000, currency => 'USD', scope => 'account',
                            account_id => 'a3000000-0000-4000-8000-000000000003');
SELECT fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a4000000-0000-4000-8000-000000000004', 700,
                        pending => true, id => 'b1000000-0000-4000-8000-000000000001');
SELECT is(pg_temp.used('a3-holds', 'a3000000-0000-4000-8000-000000000003'), 700::bigint, 'a hold counts when made');
SELECT throws_ok($$SELECT fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a4000000-0000-4000-8000-000000000004', 301, pending => true)$$,
    'ZF333', NULL, 'a hold in flight counts against the next one');
SELECT fincore.post_pending('b1000000-0000-4000-8000-000000000001', 500);
SELECT is(pg_temp.used('a3-holds', 'a3000000-0000-4000-8000-000000000003'), 500::bigint, 'a post counts once, and gives back what it did not post');
SELECT fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a4000000-0000-4000-8000-000000000004', 500,
                        pending => true, id => 'b2000000-0000-4000-8000-000000000002');
SELECT fincore.void_pending('b2000000-0000-4000-8000-000000000002');
SELECT is(pg_temp.used('a3-holds', 'a3000000-0000-4000-8000-000000000003'), 500::bigint, 'a void gives the hold back');
SELECT fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a4000000-0000-4000-8000-000000000004', 400,
                        pending => true, timeout => '1 second', id => 'b3000000-0000-4000-8000-000000000003');
SELECT is(pg_temp.used('a3-holds', 'a3000000-0000-4000-8000-000000000003'), 900::bigint, 'a hold with a timeout counts');
SELECT pg_sleep(1.1);
SELECT is(fincore.expire_pending(), 1, 'the hold expires');
SELECT is(pg_temp.used('a3-holds', 'a3000000-0000-4000-8000-000000000003'), 500::bigint, 'an expiry gives the hold back');
-- A reversal gives nothing back, unless the limit says restore_on_reversal.
SELECT fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a4000000-0000-4000-8000-000000000004', 200,
                        id => 'b4000000-0000-4000-8000-000000000004');
SELECT fincore.reverse_transfer('b4000000-0000-4000-8000-000000000004', 100);
SELECT is(pg_temp.used('a3-holds', 'a3000000-0000-4000-8000-000000000003'), 700::bigint, 'a reversal restores nothing by default');
SELECT fincore.update_limit(id, restore_on_reversal => true) FROM fincore.limits WHERE name = 'a3-holds';
SELECT fincore.reverse_transfer('b4000000-0000-4000-8000-000000000004', 100);
SELECT is(pg_temp.used('a3-holds', 'a3000000-0000-4000-8000-000000000003'), 600::bigint, 'restore_on_reversal gives the reversed amount back');

-- ---------------------------------------------------------------------------
-- Counts, transaction maxima, filters, codes, customers
-- ---------------------------------------------------------------------------
SELECT fincore.create_limit('code1-count', 2, metric => 'count', scope => 'account_code', account_code => 1,
                            direction => 'credit');
SELECT is((fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a2000000-0000-4000-8000-000000000002', 1)).result, 'created', 'credit 1 of 2');
SELECT is((fincore.transfer('a4000000-0000-4000-8000-000000000004', 'a2000000-0000-4000-8000-000000000002', 1)).result, 'created', 'credit 2 of 2');
SELECT throws_ok($$SELECT fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a2000000-0000-4000-8000-000000000002', 1)$$,
    'ZF333', NULL, 'a third credit to a2 exceeds its count');
SELECT is((fincore.transfer('a3000000-0000-4000-8000-000000000003', 'a1000000-0000-4000-8000-000000000001', 1)).result, 'created',
    'per account: a1, of the same code, has its own count');
SELECT is((fincore.transfer('e2000000-0000-4000-8000-000000000002', 'e1000000-0000-4000-8000-000000000001', 1)).result, 'created',
    'e1 has code 1 too: its own count');

SELECT fincore.create_limit('eur-max', 250, currency => 'EUR', window_kind => 'transaction', transfer_codes => '{7}');
SELECT throws_ok($$SELECT fincore.transfer('e1000000-0000-4000-8000-000000000001', 'e2000000-0000-4000-8000-000000000002', 251, code => 7)$$,
    'ZF333', NULL, 'a transfer of code 7 above the per-transfer maximum');
SELECT is((fincore.transfer('e1000000-0000-4000-8000-000000000001', 'e2000000-0000-4000-8000-000000000002', 251, code => 8)).result,
    'created', 'the code filter: code 8 is not capped');
SELECT is((fincore.transfer('e1000000-0000-4000-8000-000000000001', 'e2000000-0000-4000-8000-000000000002', 250, code => 7)).result,
    'created', 'code 7 up to the maximum passes, again and again');
SELECT is((fincore.transfer('e1000000-0000-4000-8000-000000000001', 'e2000000-0000-4000-8000-000000000002', 250, code => 7)).result,
    'created', 'a transaction maximum has no window');

SELECT fincore.create_limit('to-a4', 100, currency => 'USD', counterparty_accounts => '{a4000000-0000-4000-8000-000000000004}');
SELECT is((fincore.transfer('a2000000-0000-4000-8000-000000000002', 'a3000000-0000-4000-8000-000000000003', 500)).result,
    'created', 'the counterparty filter: paying a3 is not counted');
SELECT throws_ok($$SELECT fincore.transfer('a2000000-0000-4000-8000-000000000002', 'a4000000-0000-4000-8000-000000000004', 101)$$,
    'ZF333', NULL, 'paying a4 more than 1.00 USD is');

SELECT fincore.set_account_customer('a1000000-0000-4000-8000-000000000001', 'cust-42');
SELECT fincore.set_account_customer('a2000000-0000-4000-8000-000000000002', 'cust-42');
SELECT fincore.create_limit('cust-42', 300, currency => 'USD', scope => 'customer', customer => 'cust-42',
                            window_kind => 'week', time_zone => 'Europe/Berlin');
SELECT is((fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a3000000-0000-4000-8000-000000000003', 200)).result, 'created',
    'a customer: 2.00 USD from a1');
SELECT throws_ok($$SELECT fincore.transfer('a2000000-0000-4000-8000-000000000002', 'a3000000-0000-4000-8000-000000000003', 101)$$,
    'ZF333', NULL, 'and 1.01 USD from a2, of the same customer, exceeds its week');
SELECT is(pg_temp.used('cust-42'), 200::bigint, 'one counter for the customer');

-- Alerts: one event when a transfer takes a window's total to alert_at, not one per transfer after.
SELECT throws_ok($$SELECT fincore.create_limit('x', 10, currency => 'USD', alert_at => 11)$$, 'ZF801', NULL,
    'alert_at above the maximum is ZF801');
SELECT fincore.create_limit('alerting', 1000, currency => 'USD', scope => 'account',
                            account_id => 'a4000000-0000-4000-8000-000000000004', alert_at => 800);
SELECT fincore.transfer('a4000000-0000-4000-8000-000000000004', 'a3000000-0000-4000-8000-000000000003', 500);
SELECT is((SELECT count(*) FROM fincore.outbox_events WHERE type = 'limit.threshold_crossed'), 0::bigint,
    'below alert_at: no event');
SELECT fincore.transfer('a4000000-0000-4000-8000-000000000004', 'a3000000-0000-4000-8000-000000000003', 400);
SELECT fincore.transfer('a4000000-0000-4000-8000-000000000004', 'a3000000-0000-4000-8000-000000000003', 50);
SELECT is((SELECT count(*) FROM fincore.outbox_events WHERE type = 'limit.threshold_crossed'), 1::bigint,
    'crossing alert_at is one event, not one per transfer after it');
SELECT is((SELECT (payload->>'used')::bigint FROM fincore.outbox_events WHERE type = 'limit.threshold_crossed'), 900::bigint,
    'the event says the total that crossed it');

-- ---------------------------------------------------------------------------
-- Windows
-- ---------------------------------------------------------------------------
SELECT is((fincore.limit_window('week', NULL, 'Europe/Berlin', '2026-12-06 22:30+00')).starts_at,
    '2026-11-30 00:00+01'::timestamptz, 'a week starts on Monday, local midnight (Sunday 23:30 in Berlin is in the week before)');
SELECT is((fincore.limit_window('week', NULL, 'Europe/Berlin', '2026-12-06 23:30+00')).starts_at,
    '2026-12-07 00:00+01'::timestamptz, 'Monday 00:30 in Berlin is in the new week');
SELECT is((fincore.limit_window('day', NULL, 'America/New_York', '2026-03-08 12:00+00')).resets_at
          - (fincore.limit_window('day', NULL, 'America/New_York', '2026-03-08 12:00+00')).starts_at,
    interval '23 hours', 'the day DST starts is 23 hours long');
SELECT is((fincore.limit_window('month', NULL, 'UTC', '2028-02-29 10:00+00')).resets_at,
    '2028-03-01 00:00+00'::timestamptz, 'a month ends at the next 1st');
SELECT is((fincore.limit_window('trailing', 59, 'UTC', '2000-01-01 00:00:30+00')).resets_at
          - (fincore.limit_window('trailing', 59, 'UTC', '2000-01-01 00:00:30+00')).starts_at,
    interval '60 seconds', 'a trailing window counts 60 sub-buckets of 1/59 of it');

SELECT is((fincore.limit_window('trailing', 60, 'UTC', '-infinity')).resets_at, NULL,
    'a window around -infinity is unbounded, not an overflow');
SELECT is((fincore.limit_window('day', NULL, 'UTC', 'infinity')).starts_at, NULL, 'and around infinity');

-- ---------------------------------------------------------------------------
-- Tenants and admins
-- ---------------------------------------------------------------------------
SELECT set_config('request.jwt.claims', '{"tenant_id":"1b000000-0000-4000-8000-00000000000b"}', true);
SET LOCAL ROLE authenticated;
SELECT is(count(*), 0::bigint, 'another tenant sees none of A''s limits') FROM fincore.limits;
SELECT is(count(*), 0::bigint, 'nor their counters') FROM fincore.limit_counters;
RESET ROLE;
SELECT fincore.create_account('USD', id => 'a1000000-0000-4000-8000-000000000001');
SELECT fincore.create_account('USD', id => 'a2000000-0000-4000-8000-000000000002');
SELECT is((fincore.transfer('a1000000-0000-4000-8000-000000000001', 'a2000000-0000-4000-8000-000000000002', 100000)).result,
    'created', 'A''s limits do not apply to B''s accounts of the same ids');
SELECT set_config('request.jwt.claims', '{"tenant_id":"1a000000-0000-4000-8000-00000000000a","sub":"c0000000-0000-4000-8000-000000000001","role":"authenticated"}', true);
SET LOCAL ROLE authenticated;
SELECT throws_ok($$SELECT fincore.create_limit('by-member', 1, currency => 'USD')$$, 'ZF803', NULL,
    'an app role that is not an admin of the tenant cannot create a limit');
RESET ROLE;
SELECT fincore.add_tenant_member('c0000000-0000-4000-8000-000000000001', 'admin');
SET LOCAL ROLE authenticated;
SELECT lives_ok($$SELECT fincore.create_limit('by-admin', 1, currency => 'USD', direction => 'credit',
                                              scope => 'account_code', account_code => 99)$$,
    'the tenant''s admin can');
SELECT is(r.name, 'code1-count', 'an app role reads limit_remaining')
  FROM fincore.limit_remaining('a1000000-0000-4000-8000-000000000001') r ORDER BY r.name LIMIT 1;
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
