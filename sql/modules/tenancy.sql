-- tenancy: who is calling (claims, tenant, user), tenants and their members,
-- row level security for fincore's tables and the user's, and app-role grants
-- (src/tenancy.c).
--
-- The convention every fincore table follows (and fincore.protect() applies to
-- a user's table): a column tenant_id uuid NOT NULL DEFAULT fincore.require_tenant(),
-- row level security ENABLED and FORCED, one policy per command scoped to
-- fincore.tenant_id(), and indexes that lead with tenant_id where queries filter on it.

-- ---------------------------------------------------------------------------
-- Claims and identity (C).  STABLE and PARALLEL SAFE: the answers are cached
-- per backend and never folded into a plan.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.claims() RETURNS jsonb
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_claims';
COMMENT ON FUNCTION fincore.claims() IS
    'The JWT claims of the current request (request.jwt.claims) as jsonb; NULL when unset. ZF201 if not a JSON object.';

CREATE FUNCTION fincore.claim(path text) RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_claim';
COMMENT ON FUNCTION fincore.claim(text) IS
    'One claim by dotted path (e.g. app_metadata.tenant_id): a string''s contents or any other value''s JSON text; falls back to request.jwt.claim.<name>.';

-- tenant_id() and uid() are planned as initplans (SELECT fincore._tenant_id()),
-- evaluated once per execution instead of once per row; see src/tenancy.c.
CREATE FUNCTION fincore.identity_support(internal) RETURNS internal
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_identity_support';
COMMENT ON FUNCTION fincore.identity_support(internal) IS
    'Planner support for tenant_id() and uid(): plans each call as an initplan (off with fincore.hoist_identity).';

CREATE FUNCTION fincore._tenant_id() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_tenant_id';
COMMENT ON FUNCTION fincore._tenant_id() IS 'fincore.tenant_id() as its initplan calls it; use fincore.tenant_id().';
CREATE FUNCTION fincore._uid() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_uid';
COMMENT ON FUNCTION fincore._uid() IS 'fincore.uid() as its initplan calls it; use fincore.uid().';

CREATE FUNCTION fincore.uid() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE SUPPORT fincore.identity_support
    AS 'MODULE_PATHNAME', 'fincore_uid';
COMMENT ON FUNCTION fincore.uid() IS
    'The current user: fincore.set_user() in this transaction, else the sub claim (request.jwt.claims, then request.jwt.claim.sub). ZF202 if malformed.';

CREATE FUNCTION fincore.role() RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_role';
COMMENT ON FUNCTION fincore.role() IS 'The role claim of the current request (e.g. authenticated), or NULL.';

CREATE FUNCTION fincore.tenant_id() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE SUPPORT fincore.identity_support
    AS 'MODULE_PATHNAME', 'fincore_tenant_id';
COMMENT ON FUNCTION fincore.tenant_id() IS
    'The current tenant: fincore.set_tenant() in this transaction, else the claim named by fincore.tenant_claim; NULL when there is none (policies then match no row). ZF202 if malformed.';

CREATE FUNCTION fincore.require_tenant() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_require_tenant';
COMMENT ON FUNCTION fincore.require_tenant() IS
    'The current tenant, or ZF203 when there is none; the default of every tenant_id column.';

CREATE FUNCTION fincore.set_tenant(tenant uuid) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_set_tenant';
COMMENT ON FUNCTION fincore.set_tenant(uuid) IS
    'Sets the current tenant for this transaction only (NULL clears it); ZF204 if the tenant does not exist. For trusted application roles without JWTs.';

CREATE FUNCTION fincore._use_tenant(tenant uuid) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_use_tenant';
REVOKE ALL ON FUNCTION fincore._use_tenant(uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._use_tenant(uuid) IS
    'Internal: set_tenant() for fincore''s own workers, which set each job''s tenant within their statement on purpose (no warning outside a transaction block).';

CREATE FUNCTION fincore.set_user(user_id uuid) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_set_user';
COMMENT ON FUNCTION fincore.set_user(uuid) IS
    'Sets the current user for this transaction only (NULL clears it). For trusted application roles without JWTs.';

-- ---------------------------------------------------------------------------
-- Tenants and members.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.tenants (
    id         uuid        PRIMARY KEY DEFAULT fincore.uuidv7(),
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    metadata   jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fincore.tenants IS
    'Tenants. Readable by members and by the current tenant; written through fincore.create_tenant().';

CREATE TABLE fincore.tenant_members (
    tenant_id  uuid        NOT NULL DEFAULT fincore.require_tenant()
                           REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL,
    role       text        NOT NULL CHECK (role ~ '^[a-z][a-z0-9_]{0,62}$'),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, user_id, role)
);
CREATE INDEX tenant_members_user_idx ON fincore.tenant_members (user_id);
COMMENT ON TABLE fincore.tenant_members IS
    'Which users belong to which tenants, with which roles. Written through fincore.add_tenant_member() / remove_tenant_member().';

SELECT pg_catalog.pg_extension_config_dump('fincore.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.tenant_members', '');

CREATE FUNCTION fincore.has_tenant_role(tenant uuid, role text DEFAULT NULL) RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'fincore_has_tenant_role';
COMMENT ON FUNCTION fincore.has_tenant_role(uuid, text) IS
    'Is the current user a member of tenant (with this role, when given)? Loaded once per transaction; never raises on its arguments (LEAKPROOF).';

CREATE FUNCTION fincore.my_tenants() RETURNS uuid[]
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_my_tenants';
COMMENT ON FUNCTION fincore.my_tenants() IS 'The tenants the current user is a member of (empty without a user).';

CREATE FUNCTION fincore.tenant_members_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_tenant_members_changed';
COMMENT ON FUNCTION fincore.tenant_members_changed() IS
    'Trigger: drops every backend''s cached memberships when fincore.tenant_members changes.';
CREATE TRIGGER tenant_members_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.tenant_members
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.tenant_members_changed();

-- ---------------------------------------------------------------------------
-- Row level security for a table: fincore.protect() / fincore.unprotect().
-- SECURITY INVOKER on purpose: only the table's owner may change its policies.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.protect(tbl regclass, tenant_column name DEFAULT 'tenant_id') RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    kind     "char";
    col_type oid;
    has_def  boolean;
    cmd      text;
    pred     text := pg_catalog.format('(%I OPERATOR(pg_catalog.=) fincore.tenant_id())', tenant_column);
BEGIN
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF kind IS NULL OR kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot protect %: not a table', tbl
            USING ERRCODE = 'ZF207', HINT = 'Row level security applies to ordinary and partitioned tables.';
    END IF;
    SELECT a.atttypid, a.atthasdef INTO col_type, has_def
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = tenant_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF col_type IS NULL THEN
        RAISE EXCEPTION 'table % has no column %', tbl, pg_catalog.quote_ident(tenant_column)
            USING ERRCODE = 'ZF205', HINT = 'Add a column tenant_id uuid NOT NULL, or name the tenant column.';
    ELSIF col_type <> 'pg_catalog.uuid'::pg_catalog.regtype THEN
        RAISE EXCEPTION 'column % of table % is of type %, not uuid',
                pg_catalog.quote_ident(tenant_column), tbl, col_type::pg_catalog.regtype
            USING ERRCODE = 'ZF205';
    END IF;

    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    IF NOT has_def THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT fincore.require_tenant()',
                                  tbl, tenant_column);
    END IF;

    FOREACH cmd IN ARRAY ARRAY['select', 'insert', 'update', 'delete'] LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                    WHERE p.polrelid = tbl AND p.polname = 'fincore_tenant_' || cmd) THEN
            EXECUTE pg_catalog.format('DROP POLICY %I ON %s', 'fincore_tenant_' || cmd, tbl);
        END IF;
        EXECUTE pg_catalog.format('CREATE POLICY %I ON %s AS PERMISSIVE FOR %s TO PUBLIC %s',
            'fincore_tenant_' || cmd, tbl, cmd,
            CASE cmd WHEN 'select' THEN 'USING ' || pred
                     WHEN 'delete' THEN 'USING ' || pred
                     WHEN 'insert' THEN 'WITH CHECK ' || pred
                     ELSE 'USING ' || pred || ' WITH CHECK ' || pred END);
    END LOOP;

    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                    WHERE i.indrelid = tbl
                      AND i.indkey[0] = (SELECT a.attnum FROM pg_catalog.pg_attribute a
                                          WHERE a.attrelid = tbl AND a.attname = tenant_column)) THEN
        RAISE NOTICE 'no index of % leads with %', tbl, pg_catalog.quote_ident(tenant_column)
            USING HINT = pg_catalog.format('Queries scoped to a tenant want one: CREATE INDEX ON %s (%I, ...).',
                                           tbl, tenant_column);
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.protect(regclass, name) IS
    'Applies fincore''s tenant isolation to a table (idempotent): RLS enabled and forced, one policy per command scoped to fincore.tenant_id(), column default fincore.require_tenant() if it has none. Run as the table''s owner.';

CREATE FUNCTION fincore.unprotect(tbl regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    cmd text;
BEGIN
    FOREACH cmd IN ARRAY ARRAY['select', 'insert', 'update', 'delete'] LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                    WHERE p.polrelid = tbl AND p.polname = 'fincore_tenant_' || cmd) THEN
            EXECUTE pg_catalog.format('DROP POLICY %I ON %s', 'fincore_tenant_' || cmd, tbl);
        END IF;
    END LOOP;
    -- Row level security stays on while other policies still rely on it.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = tbl) THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', tbl);
        EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.unprotect(regclass) IS
    'Removes what fincore.protect() added: the fincore_tenant_* policies, and row level security itself when no other policy remains. The column default stays.';

-- fincore's own tables follow the convention.
SELECT fincore.protect('fincore.tenant_members');
ALTER TABLE fincore.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE fincore.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY fincore_tenant_select ON fincore.tenants FOR SELECT TO PUBLIC
    USING (id OPERATOR(pg_catalog.=) fincore.tenant_id() OR fincore.has_tenant_role(id));
-- Members see their own memberships in other tenants too (to choose one).
CREATE POLICY fincore_member_select ON fincore.tenant_members FOR SELECT TO PUBLIC
    USING (user_id OPERATOR(pg_catalog.=) fincore.uid());

-- ---------------------------------------------------------------------------
-- Managing tenants and members: trusted roles only (see grant_app_role).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.create_tenant(name text, id uuid DEFAULT NULL, metadata jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    new_id   uuid := coalesce(create_tenant.id, fincore.uuidv7());
    old_name text;
BEGIN
    INSERT INTO fincore.tenants AS t (id, name, metadata)
    VALUES (new_id, create_tenant.name, coalesce(create_tenant.metadata, '{}'))
    ON CONFLICT ON CONSTRAINT tenants_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT t.name INTO old_name FROM fincore.tenants t WHERE t.id = new_id;
        IF old_name IS DISTINCT FROM create_tenant.name THEN
            RAISE EXCEPTION 'tenant % already exists with the name %', new_id, pg_catalog.quote_literal(old_name)
                USING ERRCODE = 'ZF208', HINT = 'A tenant id is created once; the same id and name again is a no-op.';
        END IF;
    END IF;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_tenant(text, uuid, jsonb) IS
    'Creates a tenant and returns its id (a new UUIDv7 unless given). Idempotent for the same id and name; ZF208 for the same id with another name.';

CREATE FUNCTION fincore.add_tenant_member(user_id uuid, role text DEFAULT 'member') RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF add_tenant_member.role IS NULL OR add_tenant_member.role !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid member role: %', coalesce(pg_catalog.quote_literal(add_tenant_member.role), 'NULL')
            USING ERRCODE = 'ZF206', HINT = 'A role is a lower-case word such as owner, admin or member.';
    END IF;
    IF add_tenant_member.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'ZF206';
    END IF;
    INSERT INTO fincore.tenant_members (tenant_id, user_id, role)
    VALUES (fincore.require_tenant(), add_tenant_member.user_id, add_tenant_member.role)
    ON CONFLICT DO NOTHING;
END
$fn$;
COMMENT ON FUNCTION fincore.add_tenant_member(uuid, text) IS
    'Adds a user to the current tenant with a role (idempotent). ZF203 without a current tenant, ZF206 for a malformed role.';

CREATE FUNCTION fincore.remove_tenant_member(user_id uuid, role text DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    n integer;
BEGIN
    DELETE FROM fincore.tenant_members m
     WHERE m.tenant_id = fincore.require_tenant()
       AND m.user_id = remove_tenant_member.user_id
       AND (remove_tenant_member.role IS NULL OR m.role = remove_tenant_member.role);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION fincore.remove_tenant_member(uuid, text) IS
    'Removes a user''s memberships (one role, or all) from the current tenant; returns how many were removed.';

-- ---------------------------------------------------------------------------
-- Application roles.  App roles may SELECT fincore's tables (under RLS) and
-- EXECUTE the functions listed for the 'app' audience; trusted roles (a
-- backend service) also those listed for 'trusted': set_tenant, set_user and
-- tenant management, which act across tenants.  No app role may write a
-- fincore table directly.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.function_audience (
    fn       text PRIMARY KEY,      -- a regprocedure's text; text so pg_upgrade accepts the table
    audience text NOT NULL CHECK (audience IN ('app', 'trusted'))
);
COMMENT ON TABLE fincore.function_audience IS
    'Which fincore functions fincore.grant_app_role() grants: app roles get the ''app'' ones, trusted roles both.';

CREATE TABLE fincore.app_roles (
    role_name name    PRIMARY KEY,
    trusted   boolean NOT NULL
);
COMMENT ON TABLE fincore.app_roles IS 'Roles registered with fincore.grant_app_role(); upgrades re-apply their grants.';
-- Supabase's roles are registered by the install wherever they exist (grants.sql), so a
-- restore's CREATE EXTENSION has them already: a dump carries the others.
SELECT pg_catalog.pg_extension_config_dump('fincore.app_roles',
    'WHERE role_name OPERATOR(pg_catalog.<>) ALL (ARRAY[''anon'', ''authenticated'', ''service_role''])');

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.set_tenant(uuid)', 'trusted'),
    ('fincore.set_user(uuid)', 'trusted'),
    ('fincore.create_tenant(text,uuid,jsonb)', 'trusted'),
    ('fincore.add_tenant_member(uuid,text)', 'trusted'),
    ('fincore.remove_tenant_member(uuid,text)', 'trusted');

CREATE FUNCTION fincore.grant_app_role(role_name name, trusted boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    r record;
BEGIN
    PERFORM grant_app_role.role_name::regrole;     -- 42704 if there is no such role
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA fincore TO %I', grant_app_role.role_name);
    EXECUTE pg_catalog.format('GRANT SELECT ON ALL TABLES IN SCHEMA fincore TO %I', grant_app_role.role_name);
    FOR r IN SELECT f.fn, f.audience FROM fincore.function_audience f ORDER BY f.fn LOOP
        IF r.audience = 'app' OR grant_app_role.trusted THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', r.fn::regprocedure, grant_app_role.role_name);
        ELSE
            EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', r.fn::regprocedure, grant_app_role.role_name);
        END IF;
    END LOOP;
    -- The one table app roles write: raw statement lines staged for a bulk import (under RLS).
    IF pg_catalog.to_regclass('fincore.recon_staging') IS NOT NULL THEN
        EXECUTE pg_catalog.format('GRANT INSERT ON fincore.recon_staging TO %I', grant_app_role.role_name);
    END IF;
    INSERT INTO fincore.app_roles AS a (role_name, trusted) VALUES (grant_app_role.role_name, grant_app_role.trusted)
    ON CONFLICT ON CONSTRAINT app_roles_pkey DO UPDATE SET trusted = excluded.trusted;
END
$fn$;
COMMENT ON FUNCTION fincore.grant_app_role(name, boolean) IS
    'Lets a role use fincore as an application: SELECT on fincore''s tables (under RLS), INSERT on fincore.recon_staging (statement lines for a bulk import), and EXECUTE on its API; trusted roles may also set the tenant and manage tenants. Idempotent.';

CREATE FUNCTION fincore.revoke_app_role(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    r record;
BEGIN
    EXECUTE pg_catalog.format('REVOKE SELECT ON ALL TABLES IN SCHEMA fincore FROM %I', revoke_app_role.role_name);
    IF pg_catalog.to_regclass('fincore.recon_staging') IS NOT NULL THEN
        EXECUTE pg_catalog.format('REVOKE INSERT ON fincore.recon_staging FROM %I', revoke_app_role.role_name);
    END IF;
    FOR r IN SELECT f.fn FROM fincore.function_audience f ORDER BY f.fn LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', r.fn::regprocedure, revoke_app_role.role_name);
    END LOOP;
    DELETE FROM fincore.app_roles a WHERE a.role_name = revoke_app_role.role_name;
END
$fn$;
COMMENT ON FUNCTION fincore.revoke_app_role(name) IS 'Undoes fincore.grant_app_role().';

REVOKE ALL ON FUNCTION fincore.protect(regclass, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.unprotect(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.grant_app_role(name, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.revoke_app_role(name) FROM PUBLIC;
