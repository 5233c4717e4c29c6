-- pgTAP: fincore's own code can never be turned against it through the caller's search_path.
--
-- A role that may create objects in a schema on its own search_path (mallory, schema hostile)
-- plants, for every type fincore compares, every comparison operator; look-alike functions
-- (now, lower, jsonb_build_object, unnest, ...); and domains named like the types fincore casts
-- to.  Each of them records its call in hostile.calls.  Then every app-facing function is called
-- the way PostgREST calls it (authenticator, SET LOCAL ROLE, request.jwt.claims set for the
-- transaction) with hostile first on the search_path, refusals included, and so are the trusted
-- and maintenance functions.  hostile.calls must stay empty: nothing fincore runs, with the
-- owner's rights or the caller's, may reach an object of the caller's search_path.
--
-- While the hostile path is in force, the statements of this file use only untyped literals and
-- schema-qualified names, so that the test itself does not call the hostile objects; the checks
-- come after the path is reset.
BEGIN;
SET search_path = public, pg_catalog;
SELECT plan(8);
GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN CREATE ROLE authenticator NOINHERIT; END IF;
END $$;
GRANT authenticated TO authenticator;
CREATE ROLE tap_hostile_backend NOLOGIN;
GRANT tap_hostile_backend TO authenticator;
CREATE ROLE mallory NOLOGIN;
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.grant_app_role('tap_hostile_backend', trusted => true);

-- ---- the catalogue: every function that runs SQL has its path pinned or its body bound ----------
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                   WHERE p.pronamespace = 'fincore'::regnamespace AND l.lanname IN ('sql', 'plpgsql')
                     AND p.prosqlbody IS NULL
                     AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
    'every SQL and PL/pgSQL function of fincore pins search_path = pg_catalog, pg_temp or is bound at creation (BEGIN ATOMIC)');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'fincore'::regnamespace AND p.prosecdef
                     AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
    'every SECURITY DEFINER function of fincore pins search_path = pg_catalog, pg_temp');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'fincore'::regnamespace AND p.prosecdef
                     AND NOT coalesce(p.proconfig @> ARRAY['fincore.owner_context=on'], false)$$,
    'every SECURITY DEFINER function of fincore marks its owner context (fincore.owner_context = on)');

-- ---- the hostile schema ------------------------------------------------------------------------
CREATE SCHEMA hostile AUTHORIZATION mallory;
GRANT USAGE ON SCHEMA hostile TO PUBLIC;
CREATE TABLE hostile.calls (who name NOT NULL, what text NOT NULL);
ALTER TABLE hostile.calls OWNER TO mallory;
GRANT INSERT, SELECT ON hostile.calls TO PUBLIC;

SET ROLE mallory;
SET search_path = pg_catalog;
CREATE FUNCTION hostile.log(what text) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO hostile.calls (who, what) VALUES (current_user, what);
    RETURN true;
END $$;
DO $plant$
DECLARE
    t   text;
    op  text;
    ops text[] := ARRAY['=', '<>', '<', '>', '<=', '>='];
    fn  text;
    i   int := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['uuid', 'text', 'int8', 'int4', 'int2', 'jsonb', 'timestamptz', 'bool', 'bytea',
                             'interval', 'numeric', 'name', 'char'] LOOP
        FOREACH op IN ARRAY ops LOOP
            i := i + 1;
            fn := 'hostile.op_' || i;
            EXECUTE format('CREATE FUNCTION %s(a pg_catalog.%I, b pg_catalog.%I) RETURNS boolean LANGUAGE plpgsql '
                           'SET search_path = pg_catalog AS $f$ BEGIN PERFORM hostile.log(%L); '
                           'RETURN a OPERATOR(pg_catalog.%s) b; END $f$', fn, t, t, op || ' on ' || t, op);
            EXECUTE format('CREATE OPERATOR hostile.%s (LEFTARG = pg_catalog.%I, RIGHTARG = pg_catalog.%I, '
                           'FUNCTION = %s)', op, t, t, fn);
        END LOOP;
    END LOOP;
    -- jsonb operators fincore uses: containment, key existence, field access, concatenation.
    CREATE FUNCTION hostile.jcontains(a jsonb, b jsonb) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog
        AS $f$ BEGIN PERFORM hostile.log('@> on jsonb'); RETURN a OPERATOR(pg_catalog.@>) b; END $f$;
    CREATE OPERATOR hostile.@> (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = hostile.jcontains);
    CREATE FUNCTION hostile.jconcat(a jsonb, b jsonb) RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog
        AS $f$ BEGIN PERFORM hostile.log('|| on jsonb'); RETURN a OPERATOR(pg_catalog.||) b; END $f$;
    CREATE OPERATOR hostile.|| (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = hostile.jconcat);
    CREATE FUNCTION hostile.jfield(a jsonb, b text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
        AS $f$ BEGIN PERFORM hostile.log('->> on jsonb'); RETURN a OPERATOR(pg_catalog.->>) b; END $f$;
    CREATE OPERATOR hostile.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = hostile.jfield);
    CREATE FUNCTION hostile.tconcat(a text, b text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
        AS $f$ BEGIN PERFORM hostile.log('|| on text'); RETURN a OPERATOR(pg_catalog.||) b; END $f$;
    CREATE OPERATOR hostile.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = hostile.tconcat);
    CREATE FUNCTION hostile.iplus(a int8, b int8) RETURNS int8 LANGUAGE plpgsql SET search_path = pg_catalog
        AS $f$ BEGIN PERFORM hostile.log('+ on int8'); RETURN a OPERATOR(pg_catalog.+) b; END $f$;
    CREATE OPERATOR hostile.+ (LEFTARG = int8, RIGHTARG = int8, FUNCTION = hostile.iplus);
    CREATE FUNCTION hostile.tsplus(a timestamptz, b interval) RETURNS timestamptz LANGUAGE plpgsql
        SET search_path = pg_catalog
        AS $f$ BEGIN PERFORM hostile.log('+ on timestamptz'); RETURN a OPERATOR(pg_catalog.+) b; END $f$;
    CREATE OPERATOR hostile.+ (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = hostile.tsplus);
END
$plant$;
-- Look-alike functions.
CREATE FUNCTION hostile.now() RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('now()'); RETURN pg_catalog.now(); END $f$;
CREATE FUNCTION hostile.lower(t text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('lower()'); RETURN pg_catalog.lower(t); END $f$;
CREATE FUNCTION hostile.upper(t text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('upper()'); RETURN pg_catalog.upper(t); END $f$;
CREATE FUNCTION hostile.length(t text) RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('length()'); RETURN pg_catalog.length(t); END $f$;
CREATE FUNCTION hostile.format(f text, a text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('format()'); RETURN pg_catalog.format(f, a); END $f$;
CREATE FUNCTION hostile.jsonb_build_object(k text, v text) RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('jsonb_build_object()'); RETURN pg_catalog.jsonb_build_object(k, v); END $f$;
CREATE FUNCTION hostile.jsonb_build_array(v jsonb) RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('jsonb_build_array()'); RETURN pg_catalog.jsonb_build_array(v); END $f$;
CREATE FUNCTION hostile.jsonb_typeof(v jsonb) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('jsonb_typeof()'); RETURN pg_catalog.jsonb_typeof(v); END $f$;
CREATE FUNCTION hostile.jsonb_array_elements(v jsonb) RETURNS SETOF jsonb LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('jsonb_array_elements()'); RETURN QUERY SELECT pg_catalog.jsonb_array_elements(v); END $f$;
CREATE FUNCTION hostile.unnest(v anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('unnest()'); RETURN QUERY SELECT pg_catalog.unnest(v); END $f$;
CREATE FUNCTION hostile.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('gen_random_uuid()'); RETURN pg_catalog.gen_random_uuid(); END $f$;
CREATE FUNCTION hostile.power(a float8, b float8) RETURNS float8 LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('power()'); RETURN pg_catalog.power(a, b); END $f$;
CREATE FUNCTION hostile.pg_current_snapshot() RETURNS pg_snapshot LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$ BEGIN PERFORM hostile.log('pg_current_snapshot()'); RETURN pg_catalog.pg_current_snapshot(); END $f$;
-- Domains named like the types fincore casts to.
DO $domains$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['uuid', 'text', 'jsonb', 'timestamptz', 'int8', 'int4', 'int2', 'bool', 'bytea',
                             'interval', 'numeric', 'float8', 'name'] LOOP
        EXECUTE format('CREATE DOMAIN hostile.%I AS pg_catalog.%I CHECK (hostile.log(%L))', t, t, 'domain ' || t);
    END LOOP;
END
$domains$;
RESET ROLE;
SET search_path = public, pg_catalog;
SELECT is((SELECT count(*)::int FROM pg_operator WHERE oprnamespace = 'hostile'::regnamespace), 84,
    'mallory planted 84 operators in schema hostile');

-- ---- tenants, members, a fee schedule, a consumer: set up as the superuser ---------------------
SELECT fincore.create_tenant('Hostile A', 'aaaaaaaa-4057-4000-8000-000000000001');
SELECT fincore.set_tenant('aaaaaaaa-4057-4000-8000-000000000001');
SELECT fincore.add_tenant_member('aaaaaaaa-4057-4000-8000-0000000000a1', 'owner');
SELECT fincore.define_fee_schedule('hostile_card', 'USD',
    '{"components": [{"type": "percentage", "rate": "0.029"}, {"type": "flat", "amount": 30}]}');
SELECT fincore.subscribe('hostile_consumer', '{ledger,orders}');
SELECT fincore.set_tenant(NULL);
SELECT 't=' || extract(epoch FROM clock_timestamp())::bigint AS sig_t \gset
SELECT :'sig_t' || ',v1=' || encode(public.hmac(substr(:'sig_t', 3) || '.' || '{"id":"evt_h1","type":"x"}',
                                               'whsec_h', 'sha256'), 'hex') AS sig \gset

\o /dev/null
-- ---- an app request, PostgREST style, with the hostile schema first on the path -------------------
SET LOCAL ROLE authenticator;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"aaaaaaaa-4057-4000-8000-0000000000a1","role":"authenticated","tenant_id":"aaaaaaaa-4057-4000-8000-000000000001"}', true);
SELECT set_config('request.path', '/rpc/transfer', true);
SET LOCAL search_path = hostile, pg_catalog, public;

SELECT fincore.tenant_id(), fincore.uid(), fincore.role(), fincore.claims(), fincore.claim('tenant_id');
SELECT fincore.require_tenant();
SELECT * FROM fincore.my_tenants();
SELECT fincore.has_tenant_role('aaaaaaaa-4057-4000-8000-000000000001', 'owner');
SELECT fincore.currency_exponent('USD');
SELECT fincore.create_account('USD', 1, '{debits_must_not_exceed_credits}', NULL, 'aaaaaaaa-4057-4000-8000-00000000ac01', 'h-1', '{"k": "v"}');
SELECT fincore.create_account('USD', 1, NULL, NULL, 'aaaaaaaa-4057-4000-8000-00000000ac02');
SELECT fincore.create_account('USD', 1, '{hot}', NULL, 'aaaaaaaa-4057-4000-8000-00000000ac03');
SELECT fincore.create_account('USD', 1, '{history}', NULL, 'aaaaaaaa-4057-4000-8000-00000000ac04');
-- idempotent repeat, and refusals (each in a block of its own)
SELECT fincore.create_account('USD', 1, '{debits_must_not_exceed_credits}', NULL, 'aaaaaaaa-4057-4000-8000-00000000ac01', 'h-1', '{"k": "v"}');
DO $r$ BEGIN PERFORM fincore.create_account('USD', 2, NULL, NULL, 'aaaaaaaa-4057-4000-8000-00000000ac01'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
DO $r$ BEGIN PERFORM fincore.create_account('USD', 1, NULL, NULL, NULL, 'h-1'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
SELECT fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac02', 'aaaaaaaa-4057-4000-8000-00000000ac01', 10000, 'aaaaaaaa-4057-4000-8000-0000000a0001');
SELECT fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac02', 'aaaaaaaa-4057-4000-8000-00000000ac01', 10000, 'aaaaaaaa-4057-4000-8000-0000000a0001');
SELECT fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac01', 'aaaaaaaa-4057-4000-8000-00000000ac03', '12.34 USD'::fincore.amount, 'aaaaaaaa-4057-4000-8000-0000000a0002');
SELECT fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac01', 'aaaaaaaa-4057-4000-8000-00000000ac03', 500, 'aaaaaaaa-4057-4000-8000-0000000a0003', pending => true, timeout => '1 hour');
SELECT fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac01', 'aaaaaaaa-4057-4000-8000-00000000ac03', 500, 'aaaaaaaa-4057-4000-8000-0000000a0004', pending => true);
SELECT fincore.post_pending('aaaaaaaa-4057-4000-8000-0000000a0003', 200, 'aaaaaaaa-4057-4000-8000-0000000a0005');
SELECT fincore.void_pending('aaaaaaaa-4057-4000-8000-0000000a0004', 'aaaaaaaa-4057-4000-8000-0000000a0006');
SELECT fincore.reverse_transfer('aaaaaaaa-4057-4000-8000-0000000a0002', 34, 'aaaaaaaa-4057-4000-8000-0000000a0007');
SELECT fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac01', 'aaaaaaaa-4057-4000-8000-00000000ac04', 100, 'aaaaaaaa-4057-4000-8000-0000000a0012');
SELECT fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac02', 'aaaaaaaa-4057-4000-8000-00000000ac01', 1000, 'aaaaaaaa-4057-4000-8000-0000000a0008',
    fee_schedule => 'hostile_card', fee_account => 'aaaaaaaa-4057-4000-8000-00000000ac03', fee_mode => 'on_top');
DO $r$ BEGIN PERFORM fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac01', 'aaaaaaaa-4057-4000-8000-00000000ac02', 999999999, 'aaaaaaaa-4057-4000-8000-0000000a0009'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
DO $r$ BEGIN PERFORM fincore.transfer('aaaaaaaa-4057-4000-8000-00000000ac01', 'aaaaaaaa-4057-4000-8000-00000000ac09', 1, 'aaaaaaaa-4057-4000-8000-0000000a0010'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
DO $r$ BEGIN PERFORM fincore.post_pending('aaaaaaaa-4057-4000-8000-0000000a0004', 1, 'aaaaaaaa-4057-4000-8000-0000000a0011'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
SELECT * FROM fincore.create_transfers('{"(aaaaaaaa-4057-4000-8000-0000000b0001,aaaaaaaa-4057-4000-8000-00000000ac02,aaaaaaaa-4057-4000-8000-00000000ac01,7,1,,,,,,t,,,,,,,,,,,)","(aaaaaaaa-4057-4000-8000-0000000b0002,aaaaaaaa-4057-4000-8000-00000000ac01,aaaaaaaa-4057-4000-8000-00000000ac03,3,1,t,\"1 hour\",,,,,,,,,,,,,,,)","(aaaaaaaa-4057-4000-8000-0000000b0003,aaaaaaaa-4057-4000-8000-00000000ac01,aaaaaaaa-4057-4000-8000-00000000ac03,99999999,1,,,,,,,,,,,,,,,,,)"}');
SELECT fincore.freeze_account('aaaaaaaa-4057-4000-8000-00000000ac02');
SELECT fincore.unfreeze_account('aaaaaaaa-4057-4000-8000-00000000ac02');
SELECT * FROM fincore.balance('aaaaaaaa-4057-4000-8000-00000000ac01');
SELECT * FROM fincore.balance('aaaaaaaa-4057-4000-8000-00000000ac03', '2999-01-01');
SELECT * FROM fincore.balance('aaaaaaaa-4057-4000-8000-00000000ac04', '2999-01-01');
SELECT * FROM fincore.account_transfers('aaaaaaaa-4057-4000-8000-00000000ac01');
SELECT * FROM fincore.verify();
SELECT * FROM fincore.account_balances;
SELECT fincore.calculate_fee('hostile_card', 1000);
SELECT * FROM fincore.fee_breakdown('hostile_card', 1000);
SELECT fincore.gross_up('hostile_card', 1000);
SELECT fincore.quote_fee('hostile_card', 1000, 'on_top');
SELECT fincore.check_fee_schedule('hostile_check', 'USD', '{"components": [{"type": "flat", "amount": 5}]}');
DO $r$ BEGIN PERFORM fincore.check_fee_schedule('hostile_check', 'USD', '{"components": []}'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
SELECT fincore.emit('orders', 'order.created', 'order', 'o-1', '{"total": "12.00 USD"}', '{"trace": "t"}');
SELECT fincore.ledger_events_enabled();
SELECT fincore.inbox_accept('psp', 'msg-h1', '{"a": 1}');
SELECT fincore.inbox_accept('psp', 'msg-h1', '{"a": 1}');
SELECT * FROM fincore.accept_webhook('hostile', '{"id":"evt_h1","type":"x"}', :'sig', 'whsec_h');
DO $r$ BEGIN PERFORM fincore.accept_webhook('hostile', '{"id":"evt_h2"}', 't=1,v1=00', 'whsec_h'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
SELECT fincore.enqueue('hostile_q', '{"n": 1}');
SELECT fincore.enqueue('hostile_q', '{"n": 2}', unique_key => 'u-1');
SELECT fincore.enqueue('hostile_q', '{"n": 2}', unique_key => 'u-1');
SELECT fincore.enqueue('hostile_q', '{"n": 3}', run_at => '2999-01-01');
SELECT * FROM fincore.enqueue_many('hostile_q', '{"{\"n\": 4}","{\"n\": 5}"}');
SELECT * FROM fincore.enqueue_many('hostile_q2', '{"{\"n\": 1}"}', max_attempts => 1);
SELECT * FROM fincore.dequeue('hostile_q', 2, '30 seconds', 'w-1');
SELECT * FROM fincore.dequeue('hostile_q', 2, '30 seconds', 'w-1');
SELECT * FROM fincore.dequeue('hostile_q2', 1);
SELECT * FROM fincore.queue_stats();
SELECT fincore.pause_queue('hostile_q2');
SELECT fincore.resume_queue('hostile_q2');
SELECT fincore.job_backoff(3);
RESET search_path;
RESET ROLE;
SET search_path = public, pg_catalog;
SELECT j.id AS job1 FROM fincore.jobs j WHERE j.queue = 'hostile_q' AND j.state = 'running' ORDER BY j.id LIMIT 1 \gset
SELECT j.id AS job2 FROM fincore.jobs j WHERE j.queue = 'hostile_q' AND j.state = 'running' ORDER BY j.id OFFSET 1 LIMIT 1 \gset
SELECT j.id AS job3 FROM fincore.jobs j WHERE j.queue = 'hostile_q' AND j.state = 'running' ORDER BY j.id OFFSET 2 LIMIT 1 \gset
SELECT j.id AS job4 FROM fincore.jobs j WHERE j.queue = 'hostile_q2' ORDER BY j.id LIMIT 1 \gset
SELECT j.id AS job5 FROM fincore.jobs j WHERE j.queue = 'hostile_q' AND j.state = 'ready' ORDER BY j.id LIMIT 1 \gset
SET LOCAL ROLE authenticator;
SET LOCAL ROLE authenticated;
SET LOCAL search_path = hostile, pg_catalog, public;
SELECT fincore.heartbeat(:job1, '1 minute');
SELECT fincore.complete(:job1, '{"ok": true}');
SELECT fincore.fail(:job2, 'boom');
SELECT * FROM fincore.complete_many(ARRAY[:job3]);
SELECT fincore.cancel_job(:job5);
DO $r$ BEGIN PERFORM fincore.complete(1, '{}'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
SELECT fincore.fail(:job4, 'boom');
SELECT fincore.retry_job(:job4);

-- ---- a trusted backend, the same way --------------------------------------------------------------
RESET ROLE;
SET LOCAL ROLE authenticator;
SET LOCAL ROLE tap_hostile_backend;
SELECT fincore.set_tenant('aaaaaaaa-4057-4000-8000-000000000001');
SELECT fincore.set_user('aaaaaaaa-4057-4000-8000-0000000000a1');
SELECT * FROM fincore.my_tenants();
SELECT fincore.create_tenant('Hostile B', 'bbbbbbbb-4057-4000-8000-000000000002');
SELECT fincore.add_tenant_member('aaaaaaaa-4057-4000-8000-0000000000a2', 'member');
SELECT fincore.remove_tenant_member('aaaaaaaa-4057-4000-8000-0000000000a2');
SELECT fincore.define_fee_schedule('hostile_flat', 'USD', '{"components": [{"type": "flat", "amount": 5}]}');
SELECT fincore.end_fee_schedule('hostile_flat');
SELECT fincore.set_ledger_events(true);
SELECT fincore.subscribe('hostile_consumer2', '{orders}');
-- (The events of this transaction may or may not be in a batch yet: ack and nack what there is.)
DO $r$ DECLARE e pg_catalog.uuid; BEGIN
    SELECT p.id INTO e FROM fincore.poll('hostile_consumer', 1) p;
    PERFORM fincore.nack('hostile_consumer', coalesce(e, 'aaaaaaaa-4057-4000-8000-0000000e0002'), 'boom');
EXCEPTION WHEN OTHERS THEN NULL; END $r$;
SELECT * FROM fincore.poll('hostile_consumer', 10);
DO $r$ DECLARE e pg_catalog.uuid; BEGIN
    SELECT p.id INTO e FROM fincore.poll('hostile_consumer', 1) p;
    PERFORM fincore.ack('hostile_consumer', coalesce(e, 'aaaaaaaa-4057-4000-8000-0000000e0003'));
EXCEPTION WHEN OTHERS THEN NULL; END $r$;
DO $r$ BEGIN PERFORM fincore.ack('hostile_consumer', 'aaaaaaaa-4057-4000-8000-0000000e0001'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
SELECT * FROM fincore.consumer_lag();
SELECT fincore.unsubscribe('hostile_consumer2');
SELECT fincore.expire_pending(100);
SELECT fincore.rollup_hot_accounts(100);
SELECT fincore.rescue_expired();
DO $r$ BEGIN PERFORM fincore.set_tenant('cccccccc-4057-4000-8000-000000000003'); EXCEPTION WHEN OTHERS THEN NULL; END $r$;
-- ---- the owner's maintenance, as pg_cron runs it ----------------------------------------------------
RESET ROLE;
SELECT fincore.set_tenant(NULL);
SELECT * FROM fincore.maintenance();
SELECT fincore.register_currency('HOSTILEPT', 2, 'hostile points');
SELECT fincore.currency_exponent('HOSTILEPT');
RESET search_path;
SET search_path = public, pg_catalog;
\o

-- ---- the owner's own SECURITY DEFINER code is not fincore's -------------------------------------
-- An RPC written as the owner (as Supabase users write them as postgres) runs with the owner's
-- identity, but not in fincore's owner context: under forced row level security it sees one
-- tenant, as its caller would.  (Only a non-superuser owner is bound by RLS at all.)
SELECT c.relowner::regrole::text AS fincore_owner, r.rolsuper AS owner_is_superuser
  FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = 'fincore.tenants'::regclass \gset
CREATE FUNCTION public.owner_rpc() RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT count(*) FROM fincore.tenants $$;
ALTER FUNCTION public.owner_rpc() OWNER TO :"fincore_owner";
GRANT EXECUTE ON FUNCTION public.owner_rpc() TO authenticated;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"aaaaaaaa-4057-4000-8000-0000000000a1","role":"authenticated","tenant_id":"aaaaaaaa-4057-4000-8000-000000000001"}', true);
SELECT count(*) AS direct FROM fincore.tenants \gset
SELECT public.owner_rpc() AS via_rpc \gset
RESET ROLE;
SELECT CASE WHEN :'owner_is_superuser'::boolean
            THEN skip('fincore''s owner is a superuser, whom row level security never binds', 1)
            ELSE is(:via_rpc::bigint, :direct::bigint,
                    'a SECURITY DEFINER function of the owner''s sees what its caller sees, not every tenant') END;

-- ---- the verdict ---------------------------------------------------------------------------------
SELECT is_empty($$SELECT who, what FROM hostile.calls GROUP BY who, what ORDER BY who, what$$,
    'no fincore function, owner-run or not, called an operator, function or domain of the caller''s search_path');
SELECT is((SELECT count(*)::int FROM fincore.transfers WHERE tenant_id = 'aaaaaaaa-4057-4000-8000-000000000001'), 12,
    'the requests did their work: 12 transfers (single calls, holds, a post, a void, a reversal, a fee leg, a linked pair)');
SELECT is((SELECT count(*)::int FROM fincore.job_archive a WHERE a.queue IN ('hostile_q', 'hostile_q2')), 3,
    'and the queue''s: one job completed, one completed in a batch, one cancelled');
SELECT * FROM finish();
ROLLBACK;
