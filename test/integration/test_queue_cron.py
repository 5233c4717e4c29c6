"""fincore.schedule_maintenance() with a real pg_cron: the job is registered and it runs.

pg_cron keeps its jobs in one database (cron.database_name, 'postgres' in the test
cluster) and runs them by the minute, each through a libpq connection or, with
cron.use_background_workers = on (scripts/lib.sh sets it: pg_virtualenv gives postgres a
password that pg_cron would not know), in a background worker.  So this test installs
fincore in that database, schedules maintenance there, and waits for pg_cron to run it:
an expired lease it planted must be rescued by the run.  Everything it created is
dropped afterwards.  (Scheduling from another database is refused with ZF608 and a hint
naming the statement to run; test/pgtap/queue.sql checks that.)
"""
import time

import psycopg
import pytest

from conftest import connect

TENANT = "cccccccc-0000-4000-8000-0000000000c3"
WAIT = 150  # seconds: the next minute boundary, plus pg_cron's own start-up


@pytest.fixture(scope="module")
def cron_db():
    with connect("postgres") as conn:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        if "pg_cron" not in preload:
            pytest.fail("pg_cron is not in shared_preload_libraries: the test cluster must preload it (scripts/lib.sh)")
        cron_database = conn.execute("SELECT current_setting('cron.database_name')").fetchone()[0]
        with connect(cron_database) as db:
            db.execute("SET client_min_messages = warning")
            created = {}
            for ext in ("pg_cron", "fincore"):
                exists = db.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (ext,)).fetchone()
                if not exists:
                    db.execute(f"CREATE EXTENSION {ext} CASCADE")
                created[ext] = not exists
            db.execute("SELECT fincore.create_tenant('cron test', %s)", (TENANT,))
        try:
            yield cron_database
        finally:
            with connect(cron_database) as db:
                db.execute("SET client_min_messages = warning")
                if db.execute("SELECT 1 FROM pg_extension WHERE extname = 'fincore'").fetchone():
                    if created["fincore"]:
                        db.execute("DROP EXTENSION fincore CASCADE")
                    else:
                        db.execute("DELETE FROM fincore.tenants WHERE id = %s", (TENANT,))
                if created["pg_cron"]:
                    db.execute("DROP EXTENSION pg_cron")


def test_schedule_maintenance_registers_and_runs(cron_db):
    with connect(cron_db) as conn:
        # A job whose lease has run out: the maintenance run must return it to ready.
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
            job = conn.execute("SELECT fincore.enqueue('cron-it', '{}')").fetchone()[0]
            conn.execute("SELECT * FROM fincore.dequeue('cron-it')")
            conn.execute("UPDATE fincore.jobs SET lease_until = now() - interval '1 minute' WHERE id = %s", (job,))

        job_id = conn.execute("SELECT fincore.schedule_maintenance('1 minute')").fetchone()[0]
        name = f"fincore_maintenance_{cron_db}"
        row = conn.execute("SELECT jobname, schedule, command, database, active FROM cron.job WHERE jobid = %s",
                           (job_id,)).fetchone()
        assert row is not None, "schedule_maintenance returned a job id cron.job does not have"
        assert row[0] == name and row[1] == "* * * * *" and row[3] == cron_db and row[4], row
        assert "fincore.maintenance()" in row[2]
        assert conn.execute("SELECT fincore.schedule_maintenance('1 minute')").fetchone()[0] == job_id, \
            "scheduling again must replace the job, not add one"
        assert conn.execute("SELECT count(*) FROM cron.job WHERE jobname = %s", (name,)).fetchone()[0] == 1

        deadline = time.time() + WAIT
        run = None
        while time.time() < deadline:
            run = conn.execute("""SELECT status, return_message FROM cron.job_run_details
                                   WHERE jobid = %s AND status IN ('succeeded', 'failed')
                                   ORDER BY runid DESC LIMIT 1""", (job_id,)).fetchone()
            if run:
                break
            time.sleep(2)
        assert run is not None, (
            f"pg_cron did not run job {job_id} within {WAIT}s; cron.use_background_workers = "
            + conn.execute("SELECT current_setting('cron.use_background_workers', true)").fetchone()[0])
        assert run[0] == "succeeded", (
            f"the maintenance run failed: {run[1]!r} (if pg_cron cannot connect, set cron.use_background_workers = on)")

        state, errors = conn.execute("SELECT state, errors -> 0 ->> 'error' FROM fincore.jobs WHERE id = %s",
                                     (job,)).fetchone()
        assert (state, errors) == ("ready", "lease expired"), "the cron run did not run fincore.maintenance()"

        assert conn.execute("SELECT fincore.unschedule_maintenance()").fetchone()[0] is True
        assert conn.execute("SELECT count(*) FROM cron.job WHERE jobname = %s", (name,)).fetchone()[0] == 0
        assert conn.execute("SELECT fincore.unschedule_maintenance()").fetchone()[0] is False


def test_schedule_maintenance_refuses_what_cron_cannot_do(cron_db):
    with connect(cron_db) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT fincore.schedule_maintenance('45 seconds')")
        assert e.value.sqlstate == "ZF609"
        assert conn.execute("SELECT count(*) FROM cron.job WHERE jobname LIKE 'fincore_maintenance%'").fetchone()[0] == 0


def test_schedule_maintenance_elsewhere_names_the_statement(cron_db, database):
    """From a database without pg_cron: ZF608, and the hint is the statement to run."""
    with connect(database) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT fincore.schedule_maintenance('5 minutes')")
        assert e.value.sqlstate == "ZF608"
        hint = e.value.diag.message_hint
        assert f"cron.schedule_in_database('fincore_maintenance_{database}', '*/5 * * * *'" in hint, hint
        assert cron_db in hint
