-- owner: fincore's own statements and a non-superuser owner (docs/security.md).
--
-- Row level security is forced on fincore's tables, so it binds their owner
-- as well when the owner is not a superuser (managed PostgreSQL, or a demoted
-- owner).  fincore's own statements name their tenant explicitly and must see
-- every tenant's rows (maintenance, look-ups before a tenant is chosen, a
-- conflict with another tenant's id), so each protected table gets one more
-- permissive policy, for its owner alone, that holds only while the owner's
-- rights were borrowed by fincore itself: inside a fincore SECURITY DEFINER
-- function (each gets SET fincore.owner_context = on below) or C code that
-- switched to the owner.  A session that logs in as the owner still sees one
-- tenant, as the app roles do, and so does a SECURITY DEFINER function of the
-- owner's that is not fincore's.  An upgrade script ends with the same blocks.

CREATE FUNCTION fincore.owner_context() RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_owner_context';
COMMENT ON FUNCTION fincore.owner_context() IS
    'True while fincore itself runs with its owner''s rights (one of its SECURITY DEFINER functions, or its C code as the owner); the condition of the fincore_owner policies.';
REVOKE ALL ON FUNCTION fincore.owner_context() FROM PUBLIC;

-- Every fincore SECURITY DEFINER function marks its duration as fincore's owner context.
DO $mark$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace OPERATOR(pg_catalog.=) 'fincore'::regnamespace AND p.prosecdef
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET fincore.owner_context = on', f);
    END LOOP;
END
$mark$;

DO $owner$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS tbl, c.relowner::regrole AS owner
               FROM pg_catalog.pg_class c
              WHERE c.relnamespace OPERATOR(pg_catalog.=) 'fincore'::regnamespace
                AND c.relkind IN ('r', 'p') AND c.relrowsecurity
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                                 WHERE p.polrelid OPERATOR(pg_catalog.=) c.oid
                                   AND p.polname OPERATOR(pg_catalog.=) 'fincore_owner')
              ORDER BY c.oid LOOP
        EXECUTE pg_catalog.format('CREATE POLICY fincore_owner ON %s AS PERMISSIVE FOR ALL TO %I '
                                  'USING (fincore.owner_context()) WITH CHECK (fincore.owner_context())',
                                  r.tbl, r.owner::text);
    END LOOP;
END
$owner$;
