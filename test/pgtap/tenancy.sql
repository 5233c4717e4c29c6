-- pgTAP: tenant isolation, tested as the roles an application uses and the way
-- PostgREST runs a request: SET LOCAL ROLE, then set_config('request.jwt.claims', ..., true).
-- Every tenancy SQLSTATE is checked here too.
BEGIN;
SET search_path = fincore, public;
SELECT plan(79);

-- pgTAP keeps its bookkeeping in temporary tables; the app roles below must be
-- able to write them, or a test run as an app role could not record its result.
GRANT ALL ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;

-- Roles: Supabase's anon and authenticated (app roles), a trusted backend role, and a
-- role fincore knows nothing about.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END $$;
CREATE ROLE tap_backend NOLOGIN;
CREATE ROLE tap_stranger NOLOGIN;
SELECT fincore.grant_app_role('anon');
SELECT fincore.grant_app_role('authenticated');
SELECT fincore.grant_app_role('tap_backend', trusted => true);

-- Two tenants with one user each.
SELECT fincore.create_tenant('Tenant A', 'aaaaaaaa-0000-4000-8000-000000000001');
SELECT fincore.create_tenant('Tenant B', 'bbbbbbbb-0000-4000-8000-000000000002');
CREATE FUNCTION pg_temp.claims_of(t text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE t WHEN 'A' THEN '{"sub":"aaaaaaaa-1111-4000-8000-000000000001","role":"authenticated","tenant_id":"aaaaaaaa-0000-4000-8000-000000000001"}'
                  WHEN 'B' THEN '{"sub":"bbbbbbbb-1111-4000-8000-000000000002","role":"authenticated","tenant_id":"bbbbbbbb-0000-4000-8000-000000000002"}'
           END $$;
SELECT set_config('request.jwt.claims', pg_temp.claims_of('A'), true);
SELECT fincore.set_tenant('aaaaaaaa-0000-4000-8000-000000000001');
SELECT fincore.add_tenant_member('aaaaaaaa-1111-4000-8000-000000000001', 'owner');
SELECT fincore.set_tenant('bbbbbbbb-0000-4000-8000-000000000002');
SELECT fincore.add_tenant_member('bbbbbbbb-1111-4000-8000-000000000002', 'owner');
-- A user of A who is also a member of B: a membership is not a way into B's rows.
SELECT fincore.add_tenant_member('aaaaaaaa-1111-4000-8000-000000000001', 'member');
SELECT fincore.set_tenant(NULL);
SELECT set_config('request.jwt.claims', '', true);

-- A user table protected by fincore, with one row per tenant.
CREATE TABLE public.tap_notes (id int PRIMARY KEY, tenant_id uuid NOT NULL, body text NOT NULL);
CREATE INDEX ON public.tap_notes (tenant_id, id);
SELECT fincore.protect('public.tap_notes');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tap_notes TO authenticated, anon;
INSERT INTO public.tap_notes VALUES (1, 'aaaaaaaa-0000-4000-8000-000000000001', 'note of A'),
                                    (2, 'bbbbbbbb-0000-4000-8000-000000000002', 'note of B');
-- A leaky function: it records every argument it sees.
CREATE TABLE public.tap_leaked (body text);
GRANT INSERT, SELECT ON public.tap_leaked TO authenticated;
CREATE FUNCTION public.tap_leak(t text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    INSERT INTO public.tap_leaked VALUES (t);
    RAISE NOTICE 'saw %', t;
    RETURN true;
END $$;

-- ---------------------------------------------------------------------------
-- The catalogue: conventions every fincore table and function follows.
-- ---------------------------------------------------------------------------
SELECT is_empty($$SELECT c.oid::regclass::text FROM pg_class c
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                  WHERE c.relnamespace = 'fincore'::regnamespace AND c.relkind IN ('r', 'p')
                    AND NOT (c.relrowsecurity AND c.relforcerowsecurity)$$,
    'every fincore table with a tenant_id has row level security enabled and forced');
SELECT is_empty($$SELECT c.oid::regclass::text FROM pg_class c
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                  WHERE c.relnamespace = 'fincore'::regnamespace AND c.relkind IN ('r', 'p')
                    AND (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname LIKE 'fincore\_tenant\_%') <> 4$$,
    'every fincore table with a tenant_id has the four fincore_tenant_* policies');
SELECT is_empty($$SELECT c.oid::regclass::text FROM pg_class c
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                   LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
                  WHERE c.relnamespace = 'fincore'::regnamespace AND c.relkind IN ('r', 'p')
                    AND (NOT a.attnotnull OR a.atttypid <> 'uuid'::regtype
                         OR pg_get_expr(d.adbin, d.adrelid) NOT IN ('fincore.require_tenant()', 'require_tenant()'))$$,
    'every fincore tenant_id is uuid NOT NULL DEFAULT fincore.require_tenant()');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
                   WHERE p.pronamespace = 'fincore'::regnamespace AND p.prosecdef
                     AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
    'every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp');
SELECT is_empty($$SELECT c.oid::regclass::text FROM pg_class c
                   WHERE c.relnamespace = 'fincore'::regnamespace AND c.relkind = 'v'
                     AND NOT coalesce(c.reloptions @> ARRAY['security_invoker=true'], false)$$,
    'every fincore view is security_invoker');
SELECT is_empty($$SELECT c.oid::regclass::text || ' ' || priv || ' ' || r FROM pg_class c,
                        unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS priv,
                        unnest(ARRAY['anon', 'authenticated', 'tap_backend', 'public']) AS r
                  WHERE c.relnamespace = 'fincore'::regnamespace AND c.relkind IN ('r', 'p', 'v')
                    AND has_table_privilege(r, c.oid, priv)
                    -- the one exception: statement lines staged for a bulk import (COPY), under RLS
                    AND NOT (c.oid = 'fincore.recon_staging'::regclass AND priv = 'INSERT' AND r <> 'public')$$,
    'no app role (nor PUBLIC) may INSERT, UPDATE, DELETE or TRUNCATE a fincore table or view, but INSERT into recon_staging');
SELECT is_empty($$SELECT c.oid::regclass::text FROM pg_class c
                  WHERE c.relnamespace = 'fincore'::regnamespace AND c.relkind IN ('r', 'p', 'v')
                    AND NOT has_table_privilege('authenticated', c.oid, 'SELECT')$$,
    'app roles may SELECT every fincore table (under RLS)');
SELECT volatility_is('fincore', 'tenant_id', ARRAY[]::name[], 'stable');
SELECT volatility_is('fincore', 'claims', ARRAY[]::name[], 'stable');
SELECT volatility_is('fincore', 'claim', ARRAY['text'], 'stable');
SELECT volatility_is('fincore', 'uid', ARRAY[]::name[], 'stable');
SELECT volatility_is('fincore', 'role', ARRAY[]::name[], 'stable');
SELECT is((SELECT proleakproof FROM pg_proc WHERE oid = 'fincore.has_tenant_role(uuid,text)'::regprocedure), true,
    'has_tenant_role is LEAKPROOF');
SELECT ok(NOT has_function_privilege('authenticated', 'fincore.set_tenant(uuid)', 'EXECUTE'),
    'app roles may not call set_tenant');
SELECT ok(has_function_privilege('tap_backend', 'fincore.set_tenant(uuid)', 'EXECUTE'),
    'trusted roles may call set_tenant');
SELECT ok(NOT has_function_privilege('tap_stranger', 'fincore.create_tenant(text,uuid,jsonb)', 'EXECUTE'),
    'a role fincore was not told about may not manage tenants');

-- ---------------------------------------------------------------------------
-- Reading: a request of tenant A sees A's rows only, in fincore's tables and the user's.
-- ---------------------------------------------------------------------------
SAVEPOINT a_reads;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', pg_temp.claims_of('A'), true);
SELECT results_eq('SELECT body FROM public.tap_notes ORDER BY id', ARRAY['note of A'],
    'A reads only its row of a protected user table');
SELECT results_eq('SELECT DISTINCT tenant_id FROM fincore.tenant_members WHERE tenant_id = fincore.tenant_id()',
    ARRAY['aaaaaaaa-0000-4000-8000-000000000001'::uuid], 'A reads its tenant''s members');
SELECT is_empty($$SELECT 1 FROM fincore.tenant_members m
                   WHERE m.tenant_id = 'bbbbbbbb-0000-4000-8000-000000000002'
                     AND m.user_id <> fincore.uid()$$,
    'A sees no other member of B (only its own membership there)');
SELECT results_eq('SELECT name FROM fincore.tenants ORDER BY name', ARRAY['Tenant A', 'Tenant B'],
    'A user sees the tenants it belongs to (its own membership in B names B)');
SELECT is_empty($$SELECT 1 FROM public.tap_notes WHERE id = 2$$, 'A cannot find B''s row even by key');
SELECT is_empty($$SELECT 1 FROM public.tap_notes WHERE tenant_id = 'bbbbbbbb-0000-4000-8000-000000000002'$$,
    'A cannot find B''s rows by naming B''s tenant');
-- A leaky function in WHERE runs after the policy: it never sees B's row.
SELECT results_eq('SELECT body FROM public.tap_notes WHERE public.tap_leak(body)', ARRAY['note of A'],
    'a query with a leaky function in WHERE returns only A''s row');
SELECT is_empty($$SELECT 1 FROM public.tap_leaked WHERE body = 'note of B'$$,
    'the leaky function never saw B''s row');

-- ---------------------------------------------------------------------------
-- Writing: A cannot insert, update or delete B's rows.
-- ---------------------------------------------------------------------------
SELECT throws_ok($$INSERT INTO public.tap_notes VALUES (3, 'bbbbbbbb-0000-4000-8000-000000000002', 'forged')$$,
    '42501', NULL, 'A cannot insert a row for B');
SELECT lives_ok($$INSERT INTO public.tap_notes (id, body) VALUES (4, 'second note of A')$$,
    'A inserts its own row; tenant_id comes from the claims');
SELECT results_eq($$SELECT tenant_id FROM public.tap_notes WHERE id = 4$$,
    ARRAY['aaaaaaaa-0000-4000-8000-000000000001'::uuid], 'the default filled in A');
SELECT is_empty($$UPDATE public.tap_notes SET body = 'hacked' WHERE id = 2 RETURNING id$$,
    'A''s UPDATE of B''s row changes nothing');
SELECT throws_ok($$UPDATE public.tap_notes SET tenant_id = 'bbbbbbbb-0000-4000-8000-000000000002' WHERE id = 1$$,
    '42501', NULL, 'A cannot move its row into B');
SELECT is_empty($$DELETE FROM public.tap_notes WHERE id = 2 RETURNING id$$,
    'A''s DELETE of B''s row deletes nothing');
-- fincore's own tables cannot be written directly at all.
SELECT throws_ok($$INSERT INTO fincore.tenant_members (tenant_id, user_id, role)
                   VALUES ('aaaaaaaa-0000-4000-8000-000000000001', 'aaaaaaaa-1111-4000-8000-000000000001', 'admin')$$,
    '42501', NULL, 'an app role cannot INSERT into a fincore table');
SELECT throws_ok($$UPDATE fincore.tenant_members SET role = 'admin'$$, '42501', NULL,
    'an app role cannot UPDATE a fincore table');
SELECT throws_ok($$DELETE FROM fincore.tenant_members$$, '42501', NULL, 'an app role cannot DELETE from a fincore table');
SELECT throws_ok($$TRUNCATE fincore.tenant_members$$, '42501', NULL, 'an app role cannot TRUNCATE a fincore table');
SELECT throws_ok($$INSERT INTO fincore.tenants (name) VALUES ('mine')$$, '42501', NULL,
    'an app role cannot create a tenant by INSERT');
-- Nor call what only trusted roles may.
SELECT throws_ok($$SELECT fincore.set_tenant('bbbbbbbb-0000-4000-8000-000000000002')$$, '42501', NULL,
    'an app role cannot switch to another tenant with set_tenant');
SELECT throws_ok($$SELECT set_config('fincore.tenant', 'bbbbbbbb-0000-4000-8000-000000000002', true)$$, '42501', NULL,
    'an app role cannot set fincore.tenant directly');
SELECT throws_ok($$SELECT fincore.add_tenant_member('aaaaaaaa-1111-4000-8000-000000000001', 'admin')$$, '42501', NULL,
    'an app role cannot add members');
SELECT throws_ok($$SELECT fincore.create_tenant('mine')$$, '42501', NULL, 'an app role cannot create tenants');
SELECT throws_ok($$SET LOCAL fincore.tenant_claim = 'sub'$$, '42501', NULL,
    'an app role cannot change which claim names the tenant');
ROLLBACK TO SAVEPOINT a_reads;

-- The same queries as B see B's side only.
SAVEPOINT b_reads;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', pg_temp.claims_of('B'), true);
SELECT results_eq('SELECT body FROM public.tap_notes ORDER BY id', ARRAY['note of B'], 'B reads only its row');
SELECT results_eq('SELECT name FROM fincore.tenants', ARRAY['Tenant B'], 'B sees only its tenant');
ROLLBACK TO SAVEPOINT b_reads;

-- ---------------------------------------------------------------------------
-- No claims, or anon: no rows, and no error that would tell a row exists.
-- ---------------------------------------------------------------------------
SAVEPOINT anon_reads;
SET LOCAL ROLE anon;
SELECT is(fincore.tenant_id(), NULL, 'anon without claims has no tenant');
SELECT is_empty('SELECT 1 FROM public.tap_notes', 'no claims: no rows of a protected table');
SELECT is_empty('SELECT 1 FROM fincore.tenant_members', 'no claims: no rows of a fincore table');
SELECT is_empty('SELECT 1 FROM fincore.tenants', 'no claims: no tenants');
SELECT throws_ok($$INSERT INTO public.tap_notes (id, body) VALUES (5, 'anonymous')$$, 'ZF203', NULL,
    'no claims: an insert that needs a tenant raises ZF203');
ROLLBACK TO SAVEPOINT anon_reads;

-- ---------------------------------------------------------------------------
-- A trusted backend without JWTs: set_tenant / set_user, scoped to the tenant set.
-- ---------------------------------------------------------------------------
SAVEPOINT backend;
SET LOCAL ROLE tap_backend;
SELECT fincore.set_tenant('aaaaaaaa-0000-4000-8000-000000000001');
SELECT is(fincore.tenant_id(), 'aaaaaaaa-0000-4000-8000-000000000001'::uuid, 'set_tenant sets the tenant');
SELECT results_eq('SELECT count(*)::int FROM fincore.tenant_members', ARRAY[1],
    'the backend reads only the current tenant''s members');
SELECT is(fincore.remove_tenant_member('aaaaaaaa-1111-4000-8000-000000000001'), 1,
    'remove_tenant_member removes the membership in the current tenant only');
SELECT fincore.set_tenant('bbbbbbbb-0000-4000-8000-000000000002');
SELECT results_eq($$SELECT role FROM fincore.tenant_members WHERE user_id = 'aaaaaaaa-1111-4000-8000-000000000001'$$,
    ARRAY['member'], 'the same user''s membership in B is untouched');
SELECT throws_ok($$SELECT fincore.set_tenant('cccccccc-0000-4000-8000-000000000003')$$, 'ZF204', NULL,
    'set_tenant of an unknown tenant raises ZF204');
SELECT throws_ok($$SELECT fincore.add_tenant_member('aaaaaaaa-1111-4000-8000-000000000001', 'Not A Role')$$, 'ZF206', NULL,
    'a malformed role raises ZF206');
SELECT throws_ok($$SELECT fincore.add_tenant_member(NULL)$$, 'ZF206', NULL, 'a NULL user raises ZF206');
SELECT throws_ok($$SELECT fincore.create_tenant('Renamed', 'aaaaaaaa-0000-4000-8000-000000000001')$$, 'ZF208', NULL,
    'create_tenant with an existing id and another name raises ZF208');
SELECT fincore.set_tenant(NULL);
SELECT throws_ok($$SELECT fincore.add_tenant_member('aaaaaaaa-1111-4000-8000-000000000001')$$, 'ZF203', NULL,
    'managing members without a tenant raises ZF203');
ROLLBACK TO SAVEPOINT backend;

-- ---------------------------------------------------------------------------
-- Malformed claims raise their codes (as an app role, as PostgREST would run).
-- ---------------------------------------------------------------------------
SAVEPOINT bad_claims;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"tenant_id": oops', true);
SELECT throws_ok('SELECT fincore.tenant_id()', 'ZF201', NULL, 'invalid JSON claims raise ZF201');
SELECT throws_ok('SELECT 1 FROM public.tap_notes', 'ZF201', NULL, 'a policy on invalid claims raises ZF201, not "no rows"');
SELECT set_config('request.jwt.claims', '[]', true);
SELECT throws_ok('SELECT fincore.claims()', 'ZF201', NULL, 'claims that are not an object raise ZF201');
SELECT set_config('request.jwt.claims', '{"tenant_id":"aaaaaaaa","sub":"x"}', true);
SELECT throws_ok('SELECT fincore.tenant_id()', 'ZF202', NULL, 'a malformed tenant claim raises ZF202');
SELECT throws_ok('SELECT fincore.uid()', 'ZF202', NULL, 'a malformed sub claim raises ZF202');
SELECT is(fincore.claim('sub'), 'x', 'claim() returns the raw text regardless');
SELECT set_config('request.jwt.claims', '', true);
SELECT throws_ok('SELECT fincore.require_tenant()', 'ZF203', NULL, 'require_tenant without a tenant raises ZF203');
ROLLBACK TO SAVEPOINT bad_claims;

-- protect's own errors.
CREATE TABLE public.tap_untenanted (id int);
CREATE VIEW public.tap_view AS SELECT 1 AS one;
SELECT throws_ok($$SELECT fincore.protect('public.tap_untenanted')$$, 'ZF205', NULL, 'protect needs a tenant column');
SELECT throws_ok($$SELECT fincore.protect('public.tap_untenanted', 'id')$$, 'ZF205', NULL, 'protect needs a uuid column');
SELECT throws_ok($$SELECT fincore.protect('public.tap_view')$$, 'ZF207', NULL, 'protect refuses a view');
SELECT throws_ok($$SELECT fincore.grant_app_role('no_such_role_anywhere')$$, '42704', NULL,
    'grant_app_role of a missing role raises 42704');
-- Only the owner may protect a table: protect is not SECURITY DEFINER.
SAVEPOINT not_owner;
SET LOCAL ROLE authenticated;
SELECT throws_ok($$SELECT fincore.protect('public.tap_untenanted')$$, '42501', NULL,
    'an app role cannot call protect');
ROLLBACK TO SAVEPOINT not_owner;

-- unprotect then protect again: the policies come back, nothing is duplicated.
SELECT fincore.unprotect('public.tap_notes');
SELECT is((SELECT count(*)::int FROM pg_policy WHERE polrelid = 'public.tap_notes'::regclass), 0, 'unprotect removes the policies');
SELECT fincore.protect('public.tap_notes');
SELECT fincore.protect('public.tap_notes');
SELECT is((SELECT count(*)::int FROM pg_policy WHERE polrelid = 'public.tap_notes'::regclass), 4, 'protect twice: four policies');

-- The tenant filter also holds when the query runs in parallel workers.
SAVEPOINT parallel;
INSERT INTO public.tap_notes SELECT g, CASE WHEN g % 2 = 0 THEN 'aaaaaaaa-0000-4000-8000-000000000001'::uuid
                                            ELSE 'bbbbbbbb-0000-4000-8000-000000000002'::uuid END, 'bulk'
  FROM generate_series(10, 20009) g;
ANALYZE public.tap_notes;
SET LOCAL force_parallel_mode = on;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', pg_temp.claims_of('B'), true);
SELECT results_eq($$SELECT count(*)::int, count(DISTINCT tenant_id)::int FROM public.tap_notes WHERE body = 'bulk'$$,
    $$VALUES (10000, 1)$$, 'a parallel scan returns only the tenant''s rows');
ROLLBACK TO SAVEPOINT parallel;

SELECT ok(EXISTS (SELECT 1 FROM fincore.app_roles WHERE role_name = 'authenticated' AND NOT trusted),
    'grant_app_role records authenticated as an app role');
SELECT fincore.revoke_app_role('anon');
SELECT ok(NOT has_table_privilege('anon', 'fincore.tenants', 'SELECT'), 'revoke_app_role takes the grants back');

-- ---------------------------------------------------------------------------
-- The claim cache follows every setting a claim can come from: requests on one connection that
-- alternate tenants and claim styles (request.jwt.claims, PostgREST < 9's request.jwt.claim.<name>).
SELECT set_config('request.jwt.claims', '', true);
SELECT set_config('request.jwt.claim.tenant_id', 'aaaaaaaa-0000-4000-8000-000000000001', true);
SELECT is(fincore.tenant_id(), 'aaaaaaaa-0000-4000-8000-000000000001', 'legacy claim style: tenant A');
SELECT set_config('request.jwt.claim.tenant_id', 'bbbbbbbb-0000-4000-8000-000000000002', true);
SELECT is(fincore.tenant_id(), 'bbbbbbbb-0000-4000-8000-000000000002',
    'the next request changes only request.jwt.claim.tenant_id: tenant B, not the cached A');
SELECT set_config('request.jwt.claims', pg_temp.claims_of('A'), true);
SELECT is(fincore.tenant_id(), 'aaaaaaaa-0000-4000-8000-000000000001', 'claims object: tenant A (it wins over the legacy setting)');
SELECT set_config('request.jwt.claims', '', true);
SELECT is(fincore.tenant_id(), 'bbbbbbbb-0000-4000-8000-000000000002', 'claims object gone: the legacy setting again, B');
SELECT set_config('request.jwt.claim.tenant_id', '', true);
SELECT is(fincore.tenant_id(), NULL, 'no setting left: no tenant');
SELECT set_config('request.jwt.claim.tenant_id', 'aaaaaaaa-0000-4000-8000-000000000001', true);
SELECT is(fincore.tenant_id(), 'aaaaaaaa-0000-4000-8000-000000000001', 'a tenant after none: A');
SELECT set_config('request.jwt.claim.tenant_id', '', true);

SELECT * FROM finish();
ROLLBACK;
