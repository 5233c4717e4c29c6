"""Strict claim order at every dequeue: a job that becomes ready behind a worker's position (or in
a queue the worker found empty) is claimed by its next call, not at the next periodic full scan.

The worker's periodic full scans are turned off (fincore.dequeue_rescan_interval = 1 hour), so
each job below can only be found through the ready log (src/wakeup.c), which fincore keeps in
shared memory when it is preloaded:
- a higher-priority job enqueued by another session, once it commits;
- a job enqueued into a queue this worker found empty;
- a job whose claim by another session rolled back, or whose claim's savepoint rolled back;
- a job failed with a retry time in the past (ready again at once);
- a scheduled job, and a job failed with a retry time a second ahead, once they fall due;
- under REPEATABLE READ (whose snapshot is older than the log: the worker scans in full).
"""
import time

import pytest

from conftest import connect

TENANT = "aaaaaaaa-0232-4000-8000-000000000001"


def tenant_conn(db, **kw):
    return connect(db, options=f"-c fincore.tenant={TENANT}", **kw)


@pytest.fixture(scope="module")
def db(database):
    with connect(database) as conn:
        conn.execute("SELECT fincore.create_tenant('Order', %s)", (TENANT,))
        if not conn.execute("SELECT current_setting('shared_preload_libraries') ~ 'fincore'").fetchone()[0]:
            pytest.skip("the ready log needs fincore in shared_preload_libraries")
    return database


@pytest.fixture()
def worker(db):
    """A worker session whose dequeues never scan in full by the clock."""
    with tenant_conn(db) as conn:
        conn.execute("SET fincore.dequeue_rescan_interval = '1h'")
        yield conn


def enqueue(db, queue, n=1, priority=0, run_at=None):
    with tenant_conn(db) as conn:
        return [conn.execute("SELECT fincore.enqueue(%s, %s, run_at => %s, priority => %s)",
                             (queue, f'{{"n": {i}}}', run_at, priority)).fetchone()[0] for i in range(n)]


def claim(conn, queue):
    row = conn.execute("SELECT id FROM fincore.dequeue(%s)", (queue,)).fetchone()
    return row[0] if row else None


def test_a_higher_priority_job_is_claimed_next(db, worker):
    low = enqueue(db, "order_a", 20)
    assert claim(worker, "order_a") == low[0]       # the first call scans in full
    assert claim(worker, "order_a") == low[1]       # then resumes at its position
    urgent = enqueue(db, "order_a", priority=5)[0]  # committed behind that position
    assert claim(worker, "order_a") == urgent
    assert claim(worker, "order_a") == low[2]


def test_a_job_enqueued_into_a_queue_found_empty_is_claimed_at_once(db, worker):
    assert claim(worker, "order_b") is None          # found empty: nothing ready
    job = enqueue(db, "order_b")[0]
    assert claim(worker, "order_b") == job


def test_a_claim_that_rolls_back_is_claimed_next(db, worker):
    jobs = enqueue(db, "order_c", 6)
    with tenant_conn(db, autocommit=False) as other:
        assert claim(other, "order_c") == jobs[0]   # held by an open transaction
        assert claim(worker, "order_c") == jobs[1]  # skipped; the worker's position is past it
        assert claim(worker, "order_c") == jobs[2]
        other.rollback()
    assert claim(worker, "order_c") == jobs[0]
    assert claim(worker, "order_c") == jobs[3]


def test_a_claim_whose_savepoint_rolls_back_is_claimed_next(db, worker):
    jobs = enqueue(db, "order_d", 6)
    with tenant_conn(db, autocommit=False) as other:
        other.execute("SAVEPOINT s")
        assert claim(other, "order_d") == jobs[0]
        assert claim(worker, "order_d") == jobs[1]
        other.execute("ROLLBACK TO SAVEPOINT s")
        other.commit()
    assert claim(worker, "order_d") == jobs[0]


def test_a_job_failed_to_run_again_at_once_is_claimed_next(db, worker):
    jobs = enqueue(db, "order_e", 4)
    first = claim(worker, "order_e")
    assert first == jobs[0]
    assert claim(worker, "order_e") == jobs[1]
    worker.execute("SELECT fincore.fail(%s, 'try again', retry_at => now() - interval '1 minute')", (first,))
    assert claim(worker, "order_e") == first


def test_a_scheduled_job_is_claimed_by_the_first_call_after_it_falls_due(db, worker):
    low = enqueue(db, "order_g", 4)
    assert claim(worker, "order_g") == low[0]
    with tenant_conn(db) as other:
        due = other.execute("SELECT fincore.enqueue('order_g', '{}'::jsonb, run_at => clock_timestamp() + interval '1 second',"
                            " priority => 5::smallint)").fetchone()[0]
    assert claim(worker, "order_g") == low[1]       # not due yet
    time.sleep(1.1)
    assert claim(worker, "order_g") == due
    assert claim(worker, "order_g") == low[2]


def test_a_job_failed_with_a_later_retry_is_claimed_when_it_falls_due(db, worker):
    urgent = enqueue(db, "order_h", priority=5)[0]
    low = enqueue(db, "order_h", 4)
    assert claim(worker, "order_h") == urgent
    worker.execute("SELECT fincore.fail(%s, 'later', retry_at => clock_timestamp() + interval '1 second')", (urgent,))
    assert claim(worker, "order_h") == low[0]
    time.sleep(1.1)
    assert claim(worker, "order_h") == urgent


def test_a_job_enqueued_behind_the_position_in_a_transaction_snapshot_is_claimed_next(db, worker):
    low = enqueue(db, "order_f", 5)
    assert claim(worker, "order_f") == low[0]
    urgent = enqueue(db, "order_f", priority=9)[0]
    with worker.transaction():
        worker.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert claim(worker, "order_f") == urgent
