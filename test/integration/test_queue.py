"""The job queue under concurrency and crashes: exactly-once accounting.

100,000 jobs of two tenants, 8 concurrent workers (a trusted role without a tenant, as a
real worker fleet), some attempts failing on purpose, and worker backends terminated with
pg_terminate_backend while they hold claimed jobs.  Afterwards every job is completed or
dead, none is lost, none was completed twice, and every attempt is accounted for: each one
fincore counted was handed to exactly one worker and ended exactly once (completed,
failed, or its lease expired).

A kill lands between a worker's statements (the killer takes the worker's lock), so each
side knows what happened: a statement either ran to its end or never started.
"""
import collections
import os
import random
import threading
import time

import psycopg
import pytest

from conftest import connect

TENANTS = ["aaaaaaaa-0000-4000-8000-0000000000a1", "bbbbbbbb-0000-4000-8000-0000000000b2"]
JOBS = int(os.environ.get("FINCORE_QUEUE_JOBS", "100000"))
WORKERS = 8
KILLS = 24
LEASE = "2 seconds"
MAX_ATTEMPTS = 3
BATCH = 50
DEADLINE = 240  # seconds for the whole run; the test fails rather than hang


def outcome_for(n, attempt):
    """What a worker does with job n on this attempt: complete, or fail (immediate retry)."""
    if n % 50 == 0:
        return "fail"                     # always fails: dead after MAX_ATTEMPTS
    if n % 7 == 0 and attempt == 1:
        return "fail"                     # fails once, then succeeds
    return "complete"


class Log:
    """What the workers saw, shared by all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.claims = collections.Counter()       # (job, attempt) -> times handed out
        self.completed = collections.Counter()    # job -> successful complete() calls
        self.failed = collections.Counter()       # job -> successful fail() calls
        self.refused = collections.Counter()      # sqlstate -> count
        self.kills = 0
        self.errors = []


class Worker(threading.Thread):
    def __init__(self, dbname, index, log, stop):
        super().__init__(daemon=True)
        self.dbname, self.index, self.log, self.stop = dbname, index, log, stop
        self.lock = threading.Lock()      # held while a statement runs
        self.pid = None
        self.holding = False              # has claimed jobs it has not finished
        self.conn = None

    def connect(self):
        self.conn = connect(self.dbname)
        self.conn.execute("SET ROLE fincore_it_worker")
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def run(self):
        try:
            self.connect()
            while not self.stop.is_set():
                try:
                    self.cycle()
                except psycopg.OperationalError:
                    # Our backend was terminated: whatever we held is abandoned to its lease.
                    with self.lock:
                        self.holding = False
                        try:
                            self.conn.close()
                        except Exception:
                            pass
                        self.connect()
        except Exception as e:  # noqa: BLE001 - reported by the test
            with self.log.lock:
                self.log.errors.append(f"worker {self.index}: {e!r}")

    def cycle(self):
        with self.lock:
            jobs = self.conn.execute(
                "SELECT id, attempt, (payload ->> 'n')::int FROM fincore.dequeue('it', %s, %s, %s)",
                (BATCH, LEASE, f"w{self.index}")).fetchall()
            self.holding = bool(jobs)
        if not jobs:
            time.sleep(0.02)
            return
        with self.log.lock:
            for job, attempt, _ in jobs:
                self.log.claims[(job, attempt)] += 1
        time.sleep(0.001)                 # "processing": a kill may land here
        for job, attempt, n in jobs:
            with self.lock:
                try:
                    if outcome_for(n, attempt) == "fail":
                        self.conn.execute("SELECT fincore.fail(%s, %s, now(), %s)", (job, f"failed attempt {attempt}", attempt))
                        kind = "failed"
                    else:
                        self.conn.execute("SELECT fincore.complete(%s, %s, %s)", (job, psycopg.types.json.Jsonb({"by": self.index}), attempt))
                        kind = "completed"
                except psycopg.errors.DatabaseError as e:
                    if isinstance(e, psycopg.OperationalError):
                        raise
                    # Refused: the lease passed on (a slow worker); that attempt ended by expiry.
                    with self.log.lock:
                        self.log.refused[e.sqlstate] += 1
                    continue
            with self.log.lock:
                getattr(self.log, kind)[job] += 1
        with self.lock:
            self.holding = False


def killer(dbname, workers, log, stop):
    with connect(dbname) as admin:
        while not stop.is_set() and log.kills < KILLS:
            time.sleep(random.uniform(0.1, 0.4))
            w = random.choice(workers)
            with w.lock:                   # between two of its statements
                if not w.holding:
                    continue
                admin.execute("SELECT pg_terminate_backend(%s)", (w.pid,))
                log.kills += 1


@pytest.fixture(scope="module")
def queue_db(database):
    with connect(database) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("""DO $$ BEGIN
                            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fincore_it_worker') THEN
                                CREATE ROLE fincore_it_worker NOLOGIN;
                            END IF;
                        END $$""")
        conn.execute("SELECT fincore.grant_app_role('fincore_it_worker', true)")
        for i, t in enumerate(TENANTS):
            conn.execute("SELECT fincore.create_tenant(%s, %s)", (f"tenant {i}", t))
    return database


def test_exactly_once_with_killed_workers(queue_db):
    started = time.time()
    with connect(queue_db, autocommit=False) as conn:
        for first in range(0, JOBS, 1000):
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANTS[(first // 1000) % 2],))
            conn.execute(
                "SELECT count(*) FROM fincore.enqueue_many('it', ARRAY(SELECT jsonb_build_object('n', g)"
                " FROM generate_series(%s::int, %s::int) g), max_attempts => %s)",
                (first, min(first + 1000, JOBS) - 1, MAX_ATTEMPTS))
            conn.commit()
        ids = {r[0] for r in conn.execute("SELECT id FROM fincore.jobs").fetchall()}
        conn.commit()
    assert len(ids) == JOBS

    log = Log()
    stop = threading.Event()
    workers = [Worker(queue_db, i, log, stop) for i in range(WORKERS)]
    for w in workers:
        w.start()
    kill_thread = threading.Thread(target=killer, args=(queue_db, workers, log, stop), daemon=True)
    kill_thread.start()
    with connect(queue_db) as watch:
        while watch.execute("SELECT count(*) FROM fincore.jobs").fetchone()[0] > 0:
            assert time.time() - started < DEADLINE, "the queue did not drain in time"
            assert not log.errors, log.errors
            time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join(timeout=30)
    kill_thread.join(timeout=30)
    assert not log.errors, log.errors
    assert log.kills >= KILLS // 2, f"only {log.kills} worker backends were terminated"

    with connect(queue_db) as conn:
        rows = conn.execute("""
            SELECT id, state, attempts, max_attempts,
                   (SELECT count(*) FROM jsonb_array_elements(coalesce(errors, '[]')) e WHERE e ? 'expired'),
                   (SELECT count(*) FROM jsonb_array_elements(coalesce(errors, '[]')) e WHERE NOT e ? 'expired'),
                   (payload ->> 'n')::int
              FROM fincore.job_archive""").fetchall()
        assert conn.execute("SELECT count(*) FROM fincore.jobs").fetchone()[0] == 0

    # None lost, none twice: every enqueued job is in the archive exactly once.
    archived = [r[0] for r in rows]
    assert len(archived) == len(set(archived)) == JOBS
    assert set(archived) == ids
    states = collections.Counter(r[1] for r in rows)
    assert set(states) <= {"completed", "dead"}, states

    expired_total = 0
    for job, state, attempts, max_attempts, expired, failed, n in rows:
        expired_total += expired
        # Every attempt fincore counted was handed to exactly one worker ...
        for a in range(1, attempts + 1):
            assert log.claims[(job, a)] == 1, (job, a, log.claims[(job, a)])
        assert (job, attempts + 1) not in log.claims
        # ... and ended exactly once: completed, failed or expired.
        assert log.completed[job] == (1 if state == "completed" else 0), (job, state, log.completed[job])
        assert log.failed[job] == failed, (job, log.failed[job], failed)
        assert attempts == log.completed[job] + failed + expired, (job, attempts, failed, expired)
        if state == "dead":
            assert attempts == max_attempts
        # Jobs that always fail are dead; the others completed unless kills used up their attempts.
        if n % 50 == 0:
            assert state == "dead", (job, n)
        elif state == "dead":
            assert expired > 0, (job, n)
    assert sum(log.claims.values()) == sum(r[2] for r in rows)
    assert expired_total > 0, "no lease expired: the kills did not test rescue"
    assert states["completed"] >= JOBS * 0.95
    assert set(log.refused) <= {"ZF602", "ZF607"}, log.refused
    print(f"\n{JOBS} jobs in {time.time() - started:.1f}s: {dict(states)}, {log.kills} backends killed, "
          f"{expired_total} leases expired, refusals {dict(log.refused)}")


def test_unique_keys_under_concurrency(queue_db):
    """Eight sessions enqueue the same 200 unique keys at once: one job per key."""
    barrier = threading.Barrier(8)
    results = collections.defaultdict(set)
    lock = threading.Lock()

    def enqueue(i):
        with connect(queue_db, autocommit=False) as conn:
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANTS[0],))
            barrier.wait()
            for k in range(200):
                job = conn.execute("SELECT fincore.enqueue('uniq', '{}', unique_key => %s)", (f"key-{k}",)).fetchone()[0]
                with lock:
                    results[k].add(job)
            conn.commit()

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(v) == 1 for v in results.values()), {k: v for k, v in results.items() if len(v) != 1}
    with connect(queue_db) as conn:
        assert conn.execute("SELECT count(*) FROM fincore.jobs WHERE queue = 'uniq'").fetchone()[0] == 200


def test_skip_locked_never_hands_a_job_twice(queue_db):
    """Workers claiming concurrently without committing never see each other's jobs."""
    with connect(queue_db, autocommit=False) as conn:
        conn.execute("SELECT fincore.set_tenant(%s)", (TENANTS[1],))
        conn.execute("SELECT count(*) FROM fincore.enqueue_many('skip', ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 100)))")
        conn.commit()
    conns = [connect(queue_db, autocommit=False) for _ in range(4)]
    try:
        for c in conns:
            c.execute("SET ROLE fincore_it_worker")
        claimed = [set(r[0] for r in c.execute("SELECT id FROM fincore.dequeue('skip', 30)").fetchall()) for c in conns]
        # All four transactions are still open: each skipped the rows the others had locked.
        assert sum(len(s) for s in claimed) == 100
        assert len(set().union(*claimed)) == 100
        conns[0].rollback()               # a claim rolled back returns its jobs at once
        again = set(r[0] for r in conns[0].execute("SELECT id FROM fincore.dequeue('skip', 100)").fetchall())
        assert again == claimed[0]
    finally:
        for c in conns:
            c.close()
