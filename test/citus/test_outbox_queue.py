"""The outbox and the job queue on Citus: they stay on the coordinator (docs/scale-out.md).

A transfer's ledger event is an outbox row written on the coordinator in the transfer's own
transaction (its rows are on a worker), so consumers read one node's commit order: with writers
of several tenants committing transfers, holds and emits out of order and rolling some back, two
consumers each receive every committed event exactly once, none that rolled back, a hold before
its resolution.  Jobs enqueued with transfers are dequeued and completed exactly once by
concurrent workers.
"""
import random
import threading
import time
import uuid

import psycopg

from conftest import connect

TENANTS = [uuid.UUID(f"00000000-0000-4000-8000-0000000e{n:04x}") for n in range(1, 4)]


def acct(t, n):
    return uuid.UUID(int=(t.int & ~0xFFFF) + 0x100 + n)


def test_events_and_jobs_exactly_once(distributed):
    with connect() as admin:
        admin.execute("SET client_min_messages = warning")
        for i, t in enumerate(TENANTS):
            admin.execute("SELECT fincore.create_tenant(%s, %s)", (f"outbox-{i}", t))
            with admin.transaction():
                admin.execute("SELECT fincore.set_tenant(%s)", (t,))
                for n in range(6):
                    admin.execute("SELECT fincore.create_account('USD', id => %s)", (acct(t, n),))
        for c in ("citus_a", "citus_b"):
            admin.execute("SELECT fincore.subscribe(%s, '{ledger,orders}')", (c,))

    done = threading.Event()
    errors = []
    received = {"citus_a": [], "citus_b": []}
    done_jobs = []

    def writer(seed):
        rng = random.Random(seed)
        t = TENANTS[seed % len(TENANTS)]
        try:
            with connect() as w:
                for step in range(20):
                    d, c = rng.sample(range(6), 2)
                    with w.transaction():
                        w.execute("SELECT fincore.set_tenant(%s)", (t,))
                        if rng.random() < 0.6:
                            w.execute("SELECT fincore.transfer(%s, %s, 1)", (acct(t, d), acct(t, c)))
                        else:
                            hold = w.execute("SELECT id FROM fincore.transfer(%s, %s, 2, pending => true)",
                                             (acct(t, d), acct(t, c))).fetchone()[0]
                            time.sleep(rng.random() * 0.005)
                            w.execute("SELECT fincore.post_pending(%s)" if rng.random() < 0.5 else
                                      "SELECT fincore.void_pending(%s)", (hold,))
                        w.execute("SELECT fincore.emit('orders', 'order.paid', 'order', %s, '{}')", (f"{seed}-{step}",))
                        w.execute("SELECT fincore.enqueue('citus_mail', %s)", (f'{{"seed": {seed}, "step": {step}}}',))
                        time.sleep(rng.random() * 0.02)     # commits land out of seq order
                        if rng.random() < 0.15:
                            raise psycopg.Rollback()
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(repr(e))

    def consumer(name):
        try:
            with connect() as cc:
                while True:
                    finished = done.is_set()
                    with cc.transaction():
                        rows = cc.execute("SELECT id, aggregateid, type, topic FROM fincore.poll(%s, 50)",
                                          (name,)).fetchall()
                        if rows:
                            cc.execute("SELECT fincore.ack(%s, %s)", (name, rows[-1][0]))
                    received[name].extend(rows)
                    if not rows:
                        if finished:
                            return
                        time.sleep(0.005)
        except Exception as e:   # noqa: BLE001
            errors.append(repr(e))

    def job_worker():
        try:
            with connect() as q:
                idle = 0
                while idle < 40:
                    with q.transaction():
                        jobs = q.execute("SELECT id FROM fincore.dequeue('citus_mail', 5)").fetchall()
                        for (jid,) in jobs:
                            q.execute("SELECT fincore.complete(%s)", (jid,))
                    done_jobs.extend(j for (j,) in jobs)
                    idle = 0 if jobs or not done.is_set() else idle + 1
                    time.sleep(0.002)
        except Exception as e:   # noqa: BLE001
            errors.append(repr(e))

    threads = ([threading.Thread(target=consumer, args=(n,)) for n in received]
               + [threading.Thread(target=job_worker) for _ in range(2)])
    writers = [threading.Thread(target=writer, args=(s,)) for s in range(6)]
    for th in threads + writers:
        th.start()
    for th in writers:
        th.join()
    done.set()
    for th in threads:
        th.join()
    assert not errors, errors[:3]

    with connect() as conn:
        expected = {str(r[0]) for r in conn.execute(
            "SELECT id FROM fincore.outbox_events WHERE topic IN ('ledger', 'orders')"
            "   AND tenant_id = ANY(%s)", (TENANTS,))}
        ledger_events = conn.execute(
            "SELECT count(*) FROM fincore.outbox_events WHERE topic = 'ledger' AND tenant_id = ANY(%s)",
            (TENANTS,)).fetchone()[0]
        transfers = conn.execute("SELECT count(*) FROM fincore.transfers WHERE tenant_id = ANY(%s)",
                                 (TENANTS,)).fetchone()[0]
        # One ledger event per committed transfer row, and nothing of a rolled-back transaction.
        assert ledger_events == transfers > 50
        finished = {r[0] for r in conn.execute(
            "SELECT id FROM fincore.job_archive WHERE queue = 'citus_mail' AND state = 'completed'")}
        unfinished = conn.execute("SELECT count(*) FROM fincore.jobs WHERE queue = 'citus_mail'").fetchone()[0]
    for name, rows in received.items():
        ids = [str(r[0]) for r in rows]
        assert len(ids) == len(set(ids)), f"{name}: an event came twice"
        assert set(ids) == expected, f"{name}: missing {len(expected - set(ids))}, extra {len(set(ids) - expected)}"
        position = {}
        for i, (_, agg, typ, topic) in enumerate(rows):
            if typ == "transfer.created":
                position.setdefault(agg, i)
            if typ in ("transfer.posted", "transfer.voided"):
                assert agg in position, f"{name}: a hold's resolution came before the hold"
    # Every committed job was completed exactly once.
    assert len(done_jobs) == len(set(done_jobs)), "a job was dequeued twice"
    assert unfinished == 0
    assert set(done_jobs) == finished and len(finished) > 50


def test_ledger_events_can_be_switched_per_tenant(distributed):
    """set_ledger_events writes outbox_settings, a reference table on Citus."""
    t = uuid.UUID("00000000-0000-4000-8000-0000000e0f0f")
    with connect() as conn:
        conn.execute("SELECT fincore.create_tenant('events switch', %s)", (t,))
        for enabled in (False, True):
            with conn.transaction():
                conn.execute("SELECT fincore.set_tenant(%s)", (t,))
                conn.execute("SELECT fincore.set_ledger_events(%s)", (enabled,))
            assert conn.execute("SELECT ledger_events FROM fincore.outbox_settings WHERE tenant_id = %s",
                                (t,)).fetchone()[0] is enabled


def test_maintenance_and_metrics_on_the_coordinator(distributed):
    """fincore.maintenance() runs every step on Citus and records it in the coordinator's
    maintenance_status; fincore.metrics() reads across the distributed tables."""
    tenant = "00000000-0000-4000-8000-0000000000f1"
    with connect() as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT fincore.create_tenant('citus-metrics', %s)", (tenant,))
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
            a = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            b = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            conn.execute("SELECT fincore.transfer(%s, %s, 7, pending => true, timeout => '1 hour')", (a, b))
            conn.execute("SELECT fincore.enqueue('citus-metrics', '{}')")
        failed = conn.execute("SELECT step, error FROM fincore.maintenance('2 seconds') WHERE error IS NOT NULL").fetchall()
        assert failed == [], failed
        steps = conn.execute("SELECT count(*) FROM fincore.maintenance_status WHERE failures = 0").fetchone()[0]
        assert steps == conn.execute("SELECT count(*) FROM fincore.maintenance_steps").fetchone()[0]
        text = conn.execute("SELECT fincore.metrics()").fetchone()[0]
        assert 'fincore_queue_jobs{queue="citus-metrics",state="ready"} 1\n' in text
        holds = [l for l in text.splitlines() if l.startswith("fincore_pending_holds ")]
        assert holds and int(holds[0].split()[1]) >= 1
        assert "fincore_rate_limit_slots{state=\"total\"}" in text, "fincore is preloaded on the coordinator"
