-- maintenance: the one periodic entry point of fincore.  Each module registers its
-- periodic steps here (expire holds, rescue leases, roll up hot accounts, retention, ...);
-- fincore.maintenance() runs them in order, each within its own time budget, and a
-- failing step is reported without stopping the others.  pg_cron calls it (see
-- fincore.schedule_maintenance()).

CREATE TABLE fincore.maintenance_steps (
    step        text    PRIMARY KEY CHECK (step ~ '^[a-z][a-z0-9_]*$'),
    fn          text    NOT NULL,          -- regprocedure text of fn(budget interval) RETURNS bigint
    position    integer NOT NULL UNIQUE,
    description text    NOT NULL
);
COMMENT ON TABLE fincore.maintenance_steps IS
    'The periodic steps fincore.maintenance() runs, in position order. Each module registers its own; fn(budget interval) returns how much work it did.';

CREATE FUNCTION fincore.maintenance(step_budget interval DEFAULT '5 seconds')
    RETURNS TABLE (step text, done bigint, elapsed interval, error text)
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    s       record;
    started timestamptz;
BEGIN
    FOR s IN SELECT m.step, m.fn FROM fincore.maintenance_steps m ORDER BY m.position LOOP
        started := pg_catalog.clock_timestamp();
        step := s.step;
        error := NULL;
        BEGIN
            EXECUTE pg_catalog.format('SELECT %s($1)', s.fn::regprocedure::oid::regproc) INTO done USING step_budget;
        EXCEPTION WHEN OTHERS THEN
            done := 0;
            error := SQLSTATE || ': ' || SQLERRM;
            RAISE WARNING 'fincore maintenance step % failed: %', s.step, error;
        END;
        elapsed := pg_catalog.clock_timestamp() - started;
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION fincore.maintenance(interval) IS
    'Runs every registered maintenance step once, each within step_budget; one row per step (work done, time taken, error if it failed). For pg_cron.';
REVOKE ALL ON FUNCTION fincore.maintenance(interval) FROM PUBLIC;
