--
-- tenancy: claim helpers, the current tenant and user, set_tenant/set_user,
-- memberships, protect/unprotect and how policies are planned.
--
SET search_path = fincore, public;
-- Errors show their message; test/pgtap/tenancy.sql checks every SQLSTATE.

-- Nothing set: every helper is NULL, nothing raises.
SELECT claims(), claim('sub'), uid(), role(), tenant_id();
SELECT require_tenant();                                  -- ZF203

-- PostgREST's claims (transaction-local, as PostgREST sets them).
BEGIN;
SELECT set_config('request.jwt.claims',
    '{"sub":"5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01","role":"authenticated",'
    '"tenant_id":"0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30",'
    '"app_metadata":{"tenant_id":"1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f","plan":"pro","seats":3,"flags":["a","b"]}}', true)
    IS NOT NULL AS set;
SELECT uid(), role(), tenant_id(), require_tenant() = tenant_id() AS required;
SELECT claim('app_metadata.plan') AS plan, claim('app_metadata.seats') AS seats,
       claim('app_metadata.flags') AS flags, claim('app_metadata') AS app_metadata,
       claim('app_metadata.nope') AS missing, claim('sub.deeper') AS through_a_string, claim('') AS empty;
SELECT claims() -> 'app_metadata' ->> 'plan' AS via_claims;
-- Which claim holds the tenant is a setting (superuser only); dotted paths work.
SET LOCAL fincore.tenant_claim = 'app_metadata.tenant_id';
SELECT tenant_id();
SET LOCAL fincore.tenant_claim = 'no_such_claim';
SELECT tenant_id();
COMMIT;

-- After the transaction, the transaction-local claims read as '' = unset.
SELECT current_setting('request.jwt.claims') AS raw, claims(), uid(), tenant_id();

-- The legacy per-claim settings of PostgREST < 9 are the fallback.
BEGIN;
SELECT set_config('request.jwt.claim.sub', '5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01', true) IS NOT NULL AS set,
       set_config('request.jwt.claim.role', 'anon', true) IS NOT NULL AS set2;
SELECT uid(), role(), claim('sub'), claims();
-- The claims object wins over the legacy setting.
SELECT set_config('request.jwt.claims', '{"sub":"00000000-0000-0000-0000-0000000000aa"}', true) IS NOT NULL AS set;
SELECT uid(), role();
ROLLBACK;

-- Bad claims raise documented codes; a missing claim is simply NULL.
BEGIN;
SELECT set_config('request.jwt.claims', '{not json', true) IS NOT NULL AS set;
SELECT tenant_id();                                       -- ZF201
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '[1, 2]', true) IS NOT NULL AS set;
SELECT claims();                                          -- ZF201: not an object
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '"a string"', true) IS NOT NULL AS set;
SELECT uid();                                             -- ZF201
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":"not-a-uuid","tenant_id":"1234"}', true) IS NOT NULL AS set;
SELECT role();                                            -- fine: role is not a uuid
SELECT uid();                                             -- ZF202
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":"not-a-uuid","tenant_id":"1234"}', true) IS NOT NULL AS set;
SELECT tenant_id();                                       -- ZF202
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"tenant_id":42}', true) IS NOT NULL AS set;
SELECT tenant_id();                                       -- ZF202: a number is not a uuid
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"tenant_id":null,"sub":"0E7F3A522B1B4F7E8D1E5A8E9C1D2F30"}', true) IS NOT NULL AS set;
SELECT tenant_id(), uid();                                -- null claim; 32 hex digits accepted
ROLLBACK;

-- Tenants, set_tenant and set_user.
SELECT create_tenant('Acme', '0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30') AS acme,
       create_tenant('Globex', '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f') AS globex;
SELECT create_tenant('Acme', '0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30') AS again;   -- idempotent
SELECT create_tenant('Other', '0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30');            -- ZF208
BEGIN;
SELECT set_tenant('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30');
SELECT set_user('5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01');
SELECT tenant_id(), uid();
-- set_tenant wins over the claims.
SELECT set_config('request.jwt.claims', '{"tenant_id":"1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"}', true) IS NOT NULL AS set;
SELECT tenant_id();
SELECT set_tenant(NULL);                                  -- clears it: the claim shows through
SELECT tenant_id();
SELECT set_tenant('99999999-9999-4999-8999-999999999999');   -- ZF204
COMMIT;
-- Nothing survives the transaction.
SELECT tenant_id(), uid();
-- Outside a transaction block it lasts only for its own statement, and says so.
SELECT set_tenant('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30');
SELECT tenant_id();
-- The settings behind set_tenant/set_user cannot be set directly by a non-superuser.
DROP ROLE IF EXISTS regress_fc_plain;
CREATE ROLE regress_fc_plain;
BEGIN;
SET LOCAL ROLE regress_fc_plain;
SELECT set_config('fincore.tenant', '0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30', true);      -- 42501
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_fc_plain;
SET LOCAL fincore.tenant_claim = 'sub';                   -- 42501
ROLLBACK;

-- Memberships: loaded once per transaction, dropped when the table changes.
BEGIN;
SELECT set_tenant('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30');
SELECT add_tenant_member('5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01', 'owner');
SELECT add_tenant_member('5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01', 'owner');          -- idempotent
COMMIT;
BEGIN;
SELECT set_tenant('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30');
SELECT add_tenant_member('5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01', 'Bad Role');       -- ZF206
ROLLBACK;
BEGIN;
SELECT set_tenant('1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f');
SELECT add_tenant_member('5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01');
SELECT set_user('5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01');
SELECT has_tenant_role('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30') AS acme_any,
       has_tenant_role('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30', 'owner') AS acme_owner,
       has_tenant_role('1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f', 'owner') AS globex_owner,
       has_tenant_role('1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f', 'member') AS globex_member,
       has_tenant_role(NULL) AS null_tenant, has_tenant_role(tenant_id(), repeat('x', 100)) AS long_role;
SELECT array_length(my_tenants(), 1) AS my_tenants;
-- A change in the same transaction is seen at once.
SELECT remove_tenant_member('5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01') AS removed;
SELECT has_tenant_role('1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f') AS globex_any, my_tenants() AS my_tenants;
ROLLBACK;
SELECT has_tenant_role('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30') AS no_user_no_role;
SELECT add_tenant_member('5b6d6c2e-8f55-4c1e-9a0e-1d3c0b7b0a01');                   -- ZF203: no tenant

-- protect / unprotect on a user table.
CREATE TABLE public.regress_notes (id int PRIMARY KEY, tenant_id uuid NOT NULL, body text);
CREATE TABLE public.regress_no_tenant (id int);
CREATE TABLE public.regress_text_tenant (id int, tenant_id text);
CREATE VIEW public.regress_view AS SELECT 1 AS x;
GRANT SELECT ON public.regress_notes TO regress_fc_plain;
SELECT protect('public.regress_notes');
SELECT protect('public.regress_notes');                   -- idempotent
SELECT polname, polcmd, pg_get_expr(polqual, polrelid) AS using, pg_get_expr(polwithcheck, polrelid) AS check
  FROM pg_policy WHERE polrelid = 'public.regress_notes'::regclass ORDER BY polname;
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.regress_notes'::regclass;
SELECT pg_get_expr(adbin, adrelid) AS tenant_default FROM pg_attrdef WHERE adrelid = 'public.regress_notes'::regclass;
SELECT protect('public.regress_no_tenant');               -- ZF205
SELECT protect('public.regress_text_tenant');             -- ZF205
SELECT protect('public.regress_view');                    -- ZF207
SELECT protect('public.regress_no_tenant', 'id');         -- ZF205: not uuid
BEGIN;
SELECT set_tenant('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30');
INSERT INTO public.regress_notes (id, body) VALUES (1, 'acme note');
COMMIT;
INSERT INTO public.regress_notes (id, body) VALUES (2, 'no tenant');   -- ZF203 from the default
-- The tenant filter is planned once per execution (an initplan), not per row.
BEGIN;
SELECT set_tenant('0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30');
SET LOCAL ROLE regress_fc_plain;
EXPLAIN (COSTS OFF) SELECT * FROM public.regress_notes;
RESET ROLE;
SET LOCAL fincore.hoist_identity = off;
SET LOCAL ROLE regress_fc_plain;
EXPLAIN (COSTS OFF) SELECT * FROM public.regress_notes;
ROLLBACK;
SELECT unprotect('public.regress_notes');
SELECT unprotect('public.regress_notes');                 -- idempotent
SELECT count(*) AS policies FROM pg_policy WHERE polrelid = 'public.regress_notes'::regclass;
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.regress_notes'::regclass;

-- uuidv7: version 7, variant 10, strictly increasing in a backend, close to now.
SELECT bool_and(substr(u::text, 15, 1) = '7') AS version_7,
       bool_and(substr(u::text, 20, 1) IN ('8', '9', 'a', 'b')) AS variant,
       count(DISTINCT u) AS distinct_ids
  FROM (SELECT uuidv7() AS u FROM generate_series(1, 1000)) s;
SELECT bool_and(a < b) AS increasing
  FROM (SELECT u AS a, lead(u) OVER (ORDER BY n) AS b
          FROM (SELECT n, uuidv7() AS u FROM generate_series(1, 1000) n) s) t WHERE b IS NOT NULL;
SELECT abs(extract(epoch FROM now()) * 1000 - ('x' || substr(replace(uuidv7()::text, '-', ''), 1, 12))::bit(48)::bigint) < 60000
    AS near_now;

DROP TABLE public.regress_notes, public.regress_no_tenant, public.regress_text_tenant;
DELETE FROM tenant_members;
DELETE FROM tenants;
DROP VIEW public.regress_view;
DROP ROLE regress_fc_plain;
