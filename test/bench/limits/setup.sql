-- test/bench/limits: four tenants of 10,000 accounts: no limits, 5 limits per account, the same
-- 5 plus one for the whole tenant, and 10 active rules (4 of them aggregates).
SET client_min_messages = warning;
CREATE FUNCTION public.acct(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;

CREATE FUNCTION pg_temp.tenant(t uuid, name text, limits int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fincore.create_tenant(name, t);
    PERFORM set_config('request.jwt.claims', json_build_object('tenant_id', t)::text, true);
    PERFORM count(fincore.create_account('USD', id => public.acct(g))) FROM generate_series(1, 10000) g;
    PERFORM fincore.set_ledger_events(false);
    IF limits >= 5 THEN
        PERFORM fincore.create_limit('daily', 1000000000000, currency => 'USD', time_zone => 'America/New_York');
        PERFORM fincore.create_limit('weekly-count', 1000000000, metric => 'count', window_kind => 'week',
                                     time_zone => 'Europe/Berlin');
        PERFORM fincore.create_limit('hourly', 1000000000000, currency => 'USD', window_kind => 'trailing',
                                     window_seconds => 3600);
        PERFORM fincore.create_limit('lifetime-count', 1000000000, metric => 'count', window_kind => 'lifetime');
        PERFORM fincore.create_limit('per-transfer', 100000, currency => 'USD', window_kind => 'transaction');
    END IF;
    IF limits = 6 THEN
        PERFORM fincore.create_limit('tenant-daily', 1000000000000, currency => 'USD', per => 'scope');
    END IF;
    IF limits = 10 THEN
        -- 10 active rules that evaluate every transfer and refuse none: 6 over its fields, 4 aggregates.
        PERFORM fincore.create_rule('r1-huge', '{"field": "amount", "op": "gt", "value": 1000000000}', 'reject', 'active');
        PERFORM fincore.create_rule('r2-codes', '{"field": "code", "op": "in", "value": [90, 91, 92, 93]}', 'reject', 'active');
        PERFORM fincore.create_rule('r3-sanctions', '{"field": "metadata.country", "op": "in", "value": ["KP", "IR", "SY"]}', 'reject', 'active');
        PERFORM fincore.create_rule('r4-night-big', '{"all": [{"field": "local_hour", "op": "lt", "value": 5},
            {"field": "amount", "op": "gt", "value": 50000000}]}', 'reject', 'active', 'Europe/Berlin');
        PERFORM fincore.create_rule('r5-weekend', '{"all": [{"field": "local_weekday", "op": "ge", "value": 6},
            {"field": "amount", "op": "gt", "value": 90000000}]}', 'reject', 'active', 'America/New_York');
        PERFORM fincore.create_rule('r6-not-usd', '{"not": {"field": "currency", "op": "eq", "value": "USD"}}', 'reject', 'active');
        PERFORM fincore.create_rule('r7-velocity', '{"aggregate": "count", "of": "debit_account", "window_seconds": 600,
            "op": "gt", "value": 1000000}', 'reject', 'active');
        PERFORM fincore.create_rule('r8-daily-out', '{"aggregate": "sum", "of": "debit_account", "window_seconds": 86400,
            "op": "gt", "value": 1000000000000}', 'reject', 'active');
        PERFORM fincore.create_rule('r9-inflow', '{"aggregate": "count", "of": "credit_account", "window_seconds": 3600,
            "op": "gt", "value": 1000000}', 'reject', 'active');
        PERFORM fincore.create_rule('r10-weekly-in', '{"aggregate": "sum", "of": "credit_account", "window_seconds": 604800,
            "op": "gt", "value": 1000000000000}', 'reject', 'active');
    END IF;
END $$;
SELECT pg_temp.tenant('00000000-0000-4000-8000-00000000a001', 'bench none', 0);
SELECT pg_temp.tenant('00000000-0000-4000-8000-00000000a002', 'bench limits5', 5);
SELECT pg_temp.tenant('00000000-0000-4000-8000-00000000a003', 'bench scope1', 6);
SELECT pg_temp.tenant('00000000-0000-4000-8000-00000000a004', 'bench rules10', 10);
VACUUM ANALYZE;
