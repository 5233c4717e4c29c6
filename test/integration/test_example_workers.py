"""The thin client workers of examples/, run as their README says, against a real database.

For each of the Python worker (psycopg 3) and the Node worker (pg):
- jobs: ten jobs, one of which works for a few seconds; the worker holding that job is killed
  with SIGKILL in the middle of it.  A second worker, started by the same one command, gets the
  job again after its lease (attempt 2) and runs everything else; every job's work is recorded
  exactly once (the killed attempt's writes went with its transaction), every job is completed,
  and a job that fails is retried with the queue's backoff.  SIGTERM then stops the second
  worker gracefully: it exits 0 and says how many jobs it ran.
- events: a consumer handles the outbox's events once each, nacks the one whose handler
  fails, and exits when idle.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import connect

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TENANT = "aaaaaaaa-0232-4000-8000-000000000001"


def env_for(db):
    env = dict(os.environ)
    env["PGDATABASE"] = db
    env["PGOPTIONS"] = f"-c fincore.tenant={TENANT}"
    return env


def python_worker(db, *args):
    cmd = [sys.executable, os.path.join(ROOT, "examples", "worker.py"), *args, "--dsn", f"dbname={db}"]
    return subprocess.Popen(cmd, env=env_for(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def node_worker(db, *args):
    cmd = ["node", os.path.join(ROOT, "examples", "node", "worker.js"), *args]
    return subprocess.Popen(cmd, env=env_for(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def db(database):
    with connect(database) as conn:
        conn.execute("SELECT fincore.create_tenant('Examples', %s)", (TENANT,))
    return database


@pytest.fixture(scope="module")
def node_ready():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for examples/node (scripts/lib.sh installs them)")
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", os.path.join(ROOT, "examples", "node")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"npm ci failed ({done.returncode}): {done.stderr[-2000:]}"


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def scalar(db, sql, args=()):
    with connect(db) as conn:
        return conn.execute(sql, args).fetchone()[0]


@pytest.mark.parametrize("kind", ["python", "node"])
def test_a_killed_worker_s_job_runs_again_exactly_once(db, kind, request):
    if kind == "node":
        request.getfixturevalue("node_ready")
    start = python_worker if kind == "python" else node_worker
    queue = f"ex_{kind}"
    with connect(db, options=f"-c fincore.tenant={TENANT}") as conn:
        long_job = conn.execute("SELECT fincore.enqueue(%s, '{\"sleep\": 4}', priority => 1::smallint)", (queue,)).fetchone()[0]
        jobs = [long_job] + [conn.execute("SELECT fincore.enqueue(%s, %s)", (queue, json.dumps({"n": n}))).fetchone()[0]
                             for n in range(8)]
        flaky = conn.execute("SELECT fincore.enqueue(%s, '{\"fail\": true}', max_attempts => 2)", (queue,)).fetchone()[0]

    first = start(db, "jobs", "--queue", queue, "--lease", "2", "--name", f"{kind}-a", "--idle", "1")
    try:
        # The long job is claimed first (its priority) and is mid-work: kill the worker there.
        wait_for(lambda: scalar(db, "SELECT count(*) FROM fincore.jobs WHERE id = %s AND state = 'running' "
                                    "AND worker = %s", (long_job, f"{kind}-a")) == 1, 20, "the long job's claim")
        time.sleep(1.0)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert scalar(db, "SELECT count(*) FROM public.example_runs WHERE id = %s", (str(long_job),)) == 0, \
        "the killed attempt left nothing"

    second = start(db, "jobs", "--queue", queue, "--lease", "2", "--name", f"{kind}-b", "--idle", "1")
    try:
        wait_for(lambda: scalar(db, "SELECT count(DISTINCT id) FROM public.example_runs WHERE kind = 'job' "
                                    "AND id = ANY (%s)", ([str(j) for j in jobs],)) == len(jobs), 60, "every job's run")
        wait_for(lambda: scalar(db, "SELECT count(*) FROM fincore.job_archive WHERE id = %s AND state = 'dead'",
                                (flaky,)) == 1, 60, "the failing job's burial")
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["worker"] == f"{kind}-b" and summary["jobs"] >= len(jobs) - 1, summary

    with connect(db) as conn:
        runs = conn.execute("SELECT id, count(*), max(attempt) FROM public.example_runs WHERE kind = 'job' "
                            "AND id = ANY (%s) GROUP BY id", ([str(j) for j in jobs],)).fetchall()
        assert all(n == 1 for _, n, _ in runs), runs
        assert dict((i, a) for i, _, a in runs)[str(long_job)] == 2, "the killed job ran again, as attempt 2"
        states = conn.execute("SELECT state, count(*) FROM fincore.job_archive WHERE queue = %s GROUP BY 1 ORDER BY 1",
                              (queue,)).fetchall()
        assert states == [("completed", len(jobs)), ("dead", 1)], states
        errors = conn.execute("SELECT errors FROM fincore.job_archive WHERE id = %s", (flaky,)).fetchone()[0]
        assert len(errors) == 2 and "asked to fail" in errors[0]["error"], errors
        assert conn.execute("SELECT count(*) FROM fincore.jobs WHERE queue = %s", (queue,)).fetchone()[0] == 0


@pytest.mark.parametrize("kind", ["python", "node"])
def test_an_outbox_consumer_handles_each_event_once(db, kind, request):
    if kind == "node":
        request.getfixturevalue("node_ready")
    start = python_worker if kind == "python" else node_worker
    consumer = f"ex_{kind}_events"
    with connect(db, options=f"-c fincore.tenant={TENANT}") as conn:
        conn.execute("SELECT fincore.subscribe(%s, %s, max_attempts => 1)", (consumer, [f"orders_{kind}"]))
        ids = [str(conn.execute("SELECT fincore.emit(%s, 'order.placed', 'order', %s, %s)",
                                (f"orders_{kind}", f"o{n}", json.dumps({"fail": n == 3}))).fetchone()[0])
               for n in range(6)]
    worker = start(db, "events", "--consumer", consumer, "--name", f"{kind}-e", "--exit-when-idle")
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    with connect(db) as conn:
        handled = [r[0] for r in conn.execute("SELECT id FROM public.example_runs WHERE kind = 'event' AND id = ANY (%s)",
                                              (ids,)).fetchall()]
        assert sorted(handled) == sorted(ids[:3] + ids[4:]), handled
        dead = [str(r[0]) for r in conn.execute("SELECT id FROM fincore.dead_events WHERE consumer = %s", (consumer,))]
        assert dead == [ids[3]], dead
