-- grants: the last module.  Every function of an audience is revoked from
-- PUBLIC, then the registered application roles (and Supabase's, when they
-- exist) get their grants; an upgrade script ends the same way, so new
-- functions reach existing app roles.

DO $grants$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT f.fn FROM fincore.function_audience f LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.fn::regprocedure);
    END LOOP;
    -- Supabase: anon and authenticated are app roles; service_role is trusted.
    FOR r IN SELECT rolname, rolname = 'service_role' AS trusted FROM pg_catalog.pg_roles
              WHERE rolname IN ('anon', 'authenticated', 'service_role')
                AND rolname NOT IN (SELECT a.role_name FROM fincore.app_roles a) LOOP
        PERFORM fincore.grant_app_role(r.rolname, r.trusted);
    END LOOP;
    FOR r IN SELECT a.role_name, a.trusted FROM fincore.app_roles a
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles p WHERE p.rolname = a.role_name) LOOP
        PERFORM fincore.grant_app_role(r.role_name, r.trusted);
    END LOOP;
END
$grants$;
