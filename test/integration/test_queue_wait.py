"""Idle workers wait for jobs in the database, with no polling (fincore.wait_for_jobs), and run a
worker's loop in one round trip (fincore.complete_and_dequeue).

- A worker waiting on a queue wakes when an enqueue into that queue commits: it returns true,
  and its next dequeue claims the job at once (no rescan delay behind a recent empty scan).
- While it waits, its backend sleeps (wait event Extension), not spinning.
- An enqueue that rolls back, or one into another queue, does not end the wait: it times out
  and returns false.
- Nor does a job that another transaction is claiming (its claim not yet committed): the wait
  sleeps until that claim rolls back and the job is ready again.
- A scheduled job wakes it when it falls due.
- Under REPEATABLE READ it refuses (ZF605): its snapshot would never see the job.
- Without fincore in shared_preload_libraries (no board to wake it) it looks every 50 ms, and
  still returns true soon after the commit.
- An outbox consumer waiting in fincore.wait_for_events wakes when an emitting transaction (or
  a transfer, a ledger event) commits, and its poll then gets the event; a nack'd event wakes it
  when its retry falls due; an unknown consumer is ZF502.
- A worker loop of complete_and_dequeue, killed mid-job: the job runs again after its lease,
  exactly once.
"""
import threading
import time

import psycopg
import pytest

from conftest import connect, private_server

TENANT = "aaaaaaaa-0231-4000-8000-000000000001"


def tenant_conn(db, **kw):
    return connect(db, options=f"-c fincore.tenant={TENANT}", **kw)


@pytest.fixture(scope="module")
def db(database):
    with connect(database) as conn:
        conn.execute("SELECT fincore.create_tenant('Waits', %s)", (TENANT,))
    return database


def wait_in_thread(db, queue, timeout, dequeue_first=False):
    """Start a wait in a thread of its own; returns (thread, result dict, backend pid, connection).
    dequeue_first: the backend first finds the queue empty (its dequeue hint: nothing ready)."""
    out = {}
    conn = tenant_conn(db)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    if dequeue_first:
        assert conn.execute("SELECT count(*) FROM fincore.dequeue(%s)", (queue,)).fetchone()[0] == 0

    def run():
        started = time.monotonic()
        try:
            out["ready"] = conn.execute("SELECT fincore.wait_for_jobs(%s, %s)", (queue, timeout)).fetchone()[0]
        except Exception as e:  # reported by the test
            out["error"] = e
        out["elapsed"] = time.monotonic() - started
        out["returned_at"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    return t, out, pid, conn


def wait_event(db, pid):
    with connect(db) as conn:
        for _ in range(100):
            row = conn.execute("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row and row[0] == "Extension":
                return row
            time.sleep(0.02)
        return row


def test_a_commit_wakes_the_waiter_and_the_next_dequeue_claims_the_job(db):
    t, out, pid, conn = wait_in_thread(db, "wake", "20 seconds", dequeue_first=True)
    try:
        assert wait_event(db, pid) == ("Extension", "Extension"), "the waiter sleeps on its latch"
        with tenant_conn(db) as producer:
            with producer.transaction():
                job = producer.execute("SELECT fincore.enqueue('wake', '{}')").fetchone()[0]
                time.sleep(0.3)
                assert "ready" not in out, "woken before the enqueue committed"
            committed = time.monotonic()
        t.join(10)
        assert out.get("ready") is True, out
        print(f"\nwait_for_jobs returned {1000 * (out['returned_at'] - committed):.1f} ms after the commit")
        claimed = conn.execute("SELECT id FROM fincore.dequeue('wake')").fetchall()
        assert claimed == [(job,)], "the next dequeue claims the job that woke the wait"
    finally:
        t.join(30)
        conn.close()


def test_a_rollback_or_another_queue_does_not_end_the_wait(db):
    t, out, pid, conn = wait_in_thread(db, "quiet", "1.5 seconds")
    try:
        wait_event(db, pid)
        with tenant_conn(db) as producer:
            with pytest.raises(psycopg.errors.RaiseException), producer.transaction():
                producer.execute("SELECT fincore.enqueue('quiet', '{}')")
                producer.execute("DO $$ BEGIN RAISE EXCEPTION 'roll back'; END $$")
            producer.execute("SELECT fincore.enqueue('other', '{}')")
        t.join(10)
        assert out.get("ready") is False, out
        assert out["elapsed"] >= 1.4, out
    finally:
        t.join(30)
        conn.close()


def test_a_job_another_transaction_is_claiming_does_not_end_the_wait(db):
    """A job claimed by a transaction still open looks ready to every other snapshot, but no
    dequeue can take it: the wait sleeps (no return, empty dequeue, return again, ...) and wakes
    when that claim rolls back, as the job is then ready again."""
    with tenant_conn(db) as producer:
        job = producer.execute("SELECT fincore.enqueue('claimed', '{}')").fetchone()[0]
    with tenant_conn(db) as claimer:
        with claimer.transaction():
            assert claimer.execute("SELECT id FROM fincore.dequeue('claimed')").fetchall() == [(job,)]
            t, out, pid, conn = wait_in_thread(db, "claimed", "20 seconds")
            try:
                assert wait_event(db, pid) == ("Extension", "Extension"), "the waiter sleeps on its latch"
                time.sleep(0.5)
                assert "ready" not in out, f"a job being claimed ended the wait: {out}"
                claimer.execute("DO $$ BEGIN RAISE EXCEPTION 'roll back'; END $$")
            except psycopg.errors.RaiseException:
                rolled_back = time.monotonic()
            else:
                pytest.fail("the claim did not roll back")
        try:
            t.join(10)
            assert out.get("ready") is True, out
            assert out["returned_at"] - rolled_back < 5, out
            assert conn.execute("SELECT id FROM fincore.dequeue('claimed')").fetchall() == [(job,)]
        finally:
            t.join(30)
            conn.close()


def test_a_scheduled_job_wakes_the_waiter_when_due(db):
    with tenant_conn(db) as producer:
        producer.execute("SELECT fincore.enqueue('later', '{}', run_at => clock_timestamp() + interval '0.8 seconds')")
    t, out, pid, conn = wait_in_thread(db, "later", "10 seconds")
    try:
        t.join(15)
        assert out.get("ready") is True, out
        assert 0.5 <= out["elapsed"] < 9, out
        assert len(conn.execute("SELECT id FROM fincore.dequeue('later')").fetchall()) == 1
    finally:
        t.join(30)
        conn.close()


def test_it_refuses_a_transaction_snapshot(db):
    with tenant_conn(db) as conn:
        with pytest.raises(psycopg.Error) as err, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT fincore.wait_for_jobs('rr', '1 second')")
        assert err.value.sqlstate == "ZF605"
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT fincore.wait_for_jobs('rr', '0 seconds')")
        assert err.value.sqlstate == "ZF605"


def test_a_killed_loop_worker_s_job_runs_again_exactly_once(db):
    """Worker A claims through complete_and_dequeue and is killed mid-job; after the lease,
    worker B's loop gets the job again (attempt 2), completes it, and nothing else runs twice."""
    with tenant_conn(db) as producer:
        ids = [producer.execute("SELECT fincore.enqueue('loop', %s)", (f'{{"n": {n}}}',)).fetchone()[0] for n in range(5)]
    a = tenant_conn(db)
    first = a.execute("SELECT id, attempt FROM fincore.complete_and_dequeue(NULL, 'loop', lease => '1 second')").fetchone()
    assert first[0] == ids[0] and first[1] == 1
    with connect(db) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (a.info.backend_pid,))
    a.close()
    time.sleep(1.2)
    runs = []
    with tenant_conn(db) as b:
        job, attempt = None, None
        while True:
            row = b.execute("SELECT id, attempt FROM fincore.complete_and_dequeue(%s, 'loop', attempt => %s)",
                            (job, attempt)).fetchone()
            if row is None:
                break
            job, attempt = row
            runs.append(row)
    assert sorted(j for j, _ in runs) == ids, runs
    assert dict(runs)[ids[0]] == 2, "the killed worker's job ran again, as attempt 2"
    with connect(db) as admin:
        states = admin.execute("SELECT state, count(*) FROM fincore.job_archive WHERE queue = 'loop' GROUP BY 1").fetchall()
        assert states == [("completed", 5)], states
        assert admin.execute("SELECT count(*) FROM fincore.jobs WHERE queue = 'loop'").fetchone()[0] == 0


def test_without_the_preload_it_looks_for_jobs_every_50_ms():
    with private_server() as server:
        with server() as admin:
            admin.execute("SELECT fincore.create_tenant('Waits', %s)", (TENANT,))
        out = {}
        waiter = server(options=f"-c fincore.tenant={TENANT}")

        def run():
            started = time.monotonic()
            out["ready"] = waiter.execute("SELECT fincore.wait_for_jobs('nopreload', '20 seconds')").fetchone()[0]
            out["returned_at"] = time.monotonic()
            out["elapsed"] = out["returned_at"] - started

        t = threading.Thread(target=run)
        t.start()
        try:
            time.sleep(0.5)
            with server(options=f"-c fincore.tenant={TENANT}") as producer:
                producer.execute("SELECT fincore.enqueue('nopreload', '{}')")
            committed = time.monotonic()
            t.join(10)
            assert out.get("ready") is True, out
            assert out["elapsed"] < 10, out
            print(f"\nwithout the preload, wait_for_jobs returned {1000 * (out['returned_at'] - committed):.1f} ms after the commit")
        finally:
            t.join(30)
            waiter.close()


def wait_events_in_thread(db, consumer, timeout):
    out = {}
    conn = tenant_conn(db)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def run():
        started = time.monotonic()
        try:
            out["ready"] = conn.execute("SELECT fincore.wait_for_events(%s, %s)", (consumer, timeout)).fetchone()[0]
        except Exception as e:
            out["error"] = e
        out["returned_at"] = time.monotonic()
        out["elapsed"] = out["returned_at"] - started

    t = threading.Thread(target=run)
    t.start()
    return t, out, pid, conn


def test_an_outbox_consumer_waits_for_events(db):
    with tenant_conn(db) as admin:
        admin.execute("SELECT fincore.subscribe('waiting', '{orders,ledger}', tenant_scope => %s, backoff => '1 second')",
                      (TENANT,))
        a = admin.execute("SELECT fincore.create_account('USD')").fetchone()[0]
        b = admin.execute("SELECT fincore.create_account('USD')").fetchone()[0]
        # Drain what the accounts emitted: the consumer starts with nothing to poll.
        while rows := admin.execute("SELECT id FROM fincore.poll('waiting', 100)").fetchall():
            admin.execute("SELECT fincore.ack('waiting', %s)", (rows[-1][0],))
    for write in ("SELECT fincore.emit('orders', 'order.placed', 'order', 'w1', '{}')",
                  f"SELECT fincore.transfer('{a}', '{b}', 5)"):
        t, out, pid, conn = wait_events_in_thread(db, "waiting", "20 seconds")
        try:
            assert wait_event(db, pid) == ("Extension", "Extension"), "the consumer sleeps on its latch"
            with tenant_conn(db) as producer:
                producer.execute(write)
            committed = time.monotonic()
            t.join(10)
            assert out.get("ready") is True, out
            print(f"\nwait_for_events returned {1000 * (out['returned_at'] - committed):.1f} ms after the commit of {write.split('(')[0]}")
            with conn.transaction():
                rows = conn.execute("SELECT id FROM fincore.poll('waiting', 10)").fetchall()
                assert len(rows) == 1, rows
                conn.execute("SELECT fincore.nack('waiting', %s, 'later')" if write.startswith("SELECT fincore.emit")
                             else "SELECT fincore.ack('waiting', %s)", (rows[0][0],))
        finally:
            t.join(30)
            conn.close()
        if write.startswith("SELECT fincore.emit"):
            # The nack'd event comes back after its backoff: the wait wakes for it by itself.
            t, out, pid, conn = wait_events_in_thread(db, "waiting", "20 seconds")
            try:
                t.join(25)
                assert out.get("ready") is True and out["elapsed"] < 15, out
                with conn.transaction():
                    rows = conn.execute("SELECT id, retries FROM fincore.poll('waiting', 10)").fetchall()
                    assert len(rows) == 1 and rows[0][1] == 1, rows
                    conn.execute("SELECT fincore.ack('waiting', %s)", (rows[0][0],))
            finally:
                t.join(30)
                conn.close()
    with tenant_conn(db) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT fincore.wait_for_events('no_such_consumer', '1 second')")
        assert err.value.sqlstate == "ZF502"
        assert conn.execute("SELECT fincore.wait_for_events('waiting', '0.3 seconds')").fetchone()[0] is False
        for bad in ("'0 seconds'", "'2 hours'", "NULL"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"SELECT fincore.wait_for_events('waiting', {bad})")
            assert err.value.sqlstate == "ZF503", bad
        with pytest.raises(psycopg.Error) as err, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT fincore.wait_for_events('waiting', '1 second')")
        assert err.value.sqlstate == "ZF503"
