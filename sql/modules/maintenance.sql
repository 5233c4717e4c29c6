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

-- How each step fared when it last ran: what fincore.metrics() reports and an operator reads
-- (docs/operations.md).  Errors may name any tenant's objects: the table is for fincore's owner
-- alone (row level security with no policy but the owner's).
CREATE TABLE fincore.maintenance_status (
    step          text        PRIMARY KEY,      -- a step of fincore.maintenance_steps
    last_run_at   timestamptz NOT NULL,
    last_done     bigint      NOT NULL,
    last_elapsed  interval    NOT NULL,
    failures      integer     NOT NULL DEFAULT 0,   -- consecutive failed runs; 0 after a success
    last_error    text,                             -- the latest failure's, kept after a success
    last_error_at timestamptz
);
COMMENT ON TABLE fincore.maintenance_status IS
    'The latest run of each maintenance step: when, how much work, how long, consecutive failures and the latest error. Written by fincore.maintenance(); read through fincore.metrics().';
ALTER TABLE fincore.maintenance_status ENABLE ROW LEVEL SECURITY;
ALTER TABLE fincore.maintenance_status FORCE ROW LEVEL SECURITY;

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
        -- Outside the step's subtransaction: a failure is recorded too.
        INSERT INTO fincore.maintenance_status AS m
               (step, last_run_at, last_done, last_elapsed, failures, last_error, last_error_at)
        VALUES (s.step, started, done, elapsed, CASE WHEN error IS NULL THEN 0 ELSE 1 END, error,
                CASE WHEN error IS NOT NULL THEN started END)
        ON CONFLICT ON CONSTRAINT maintenance_status_pkey DO UPDATE
           SET last_run_at = excluded.last_run_at, last_done = excluded.last_done,
               last_elapsed = excluded.last_elapsed,
               failures = CASE WHEN excluded.last_error IS NULL THEN 0 ELSE m.failures OPERATOR(pg_catalog.+) 1 END,
               last_error = coalesce(excluded.last_error, m.last_error),
               last_error_at = coalesce(excluded.last_error_at, m.last_error_at);
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION fincore.maintenance(interval) IS
    'Runs every registered maintenance step once, each within step_budget; one row per step (work done, time taken, error if it failed), also kept in fincore.maintenance_status. For pg_cron.';
REVOKE ALL ON FUNCTION fincore.maintenance(interval) FROM PUBLIC;
