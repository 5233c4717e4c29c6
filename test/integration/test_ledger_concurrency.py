"""The ledger's invariants under concurrency.

16 clients run a random mix (single transfers, holds with timeouts, posts and
voids racing each other, linked and independent batches, reversals, idempotent
replays) over 1,000 accounts, some with limits so that refusals happen, some
flagged history, three hot, while a maintenance thread expires holds and rolls
up the hot accounts.  Afterwards verify() must find nothing, no client may have
seen anything but a documented refusal (no deadlock, no serialization failure),
and every transfer a client saw created must be there.

FINCORE_LEDGER_SECONDS sets the duration (default 15; FINCORE_LONG=1 makes it 120).
"""
import os
import threading
import time
import uuid

import psycopg
import pytest

from conftest import connect
from ledger_load import TENANT, Shared, Worker, account_id, maintenance_thread, setup_ledger

SECONDS = int(os.environ.get("FINCORE_LEDGER_SECONDS", "120" if os.environ.get("FINCORE_LONG") else "15"))
CLIENTS = 16
ACCOUNTS = 1000


def conninfo(database):
    return f"dbname={database}"


@pytest.fixture(scope="module")
def ledger(database):
    with connect(database) as conn:
        setup_ledger(conn, ACCOUNTS)
    return database


def test_random_load_keeps_the_books(ledger):
    shared = Shared()
    deadline = time.time() + SECONDS
    workers = [Worker(i, conninfo(ledger), shared, ACCOUNTS, deadline, seed=1000 + i) for i in range(CLIENTS)]
    maint = maintenance_thread(conninfo(ledger), deadline, shared)
    for w in workers:
        w.start()
    for w in workers:
        w.join(SECONDS + 120)
    maint.join(60)
    assert not any(w.is_alive() for w in workers), "a worker is stuck"
    assert not shared.problems, "errors other than refusals:\n" + "\n".join(shared.problems[:20])
    total_ops = sum(shared.ops.values())
    assert total_ops > 100, shared.ops
    # Refusals happened (the limits were exercised), and so did successes.
    assert sum(shared.refused.values()) > 0, shared.refused
    assert len(shared.created) > 100

    with connect(ledger) as conn:
        conn.execute("SELECT fincore.expire_pending(100000)")
        while conn.execute("SELECT fincore.rollup_hot_accounts(1000)").fetchone()[0] > 0:
            pass
        broken = conn.execute("SELECT * FROM fincore.verify()").fetchall()
        assert broken == [], f"verify() found: {broken[:10]}"
        present = {r[0] for r in conn.execute("SELECT id::text FROM fincore.transfers WHERE id = ANY(%s::uuid[])",
                                              (shared.created,))}
        missing = set(shared.created) - present
        assert not missing, f"{len(missing)} transfers a client saw created are missing"
        # A failed id is never a transfer; every failure a client saw committed is recorded.
        both = conn.execute("SELECT count(*) FROM fincore.failed_transfers f JOIN fincore.transfers t ON t.id = f.id").fetchone()[0]
        assert both == 0, f"{both} ids are both failed and transfers"
        recorded = {r[0] for r in conn.execute("SELECT id::text FROM fincore.failed_transfers")}
        assert set(shared.failed) <= recorded, "a failure a client saw committed is not recorded"
        # An account is closed only by a closing hold that is open or was posted.
        stray = conn.execute("""
            SELECT count(*) FROM fincore.accounts a
             WHERE a.status = 'closed'
               AND NOT EXISTS (SELECT 1 FROM fincore.transfers t
                                WHERE t.kind = 'pending' AND t.flags & 12 <> 0
                                  AND ((t.flags & 4 <> 0 AND t.debit_account_id = a.id) OR (t.flags & 8 <> 0 AND t.credit_account_id = a.id))
                                  AND NOT EXISTS (SELECT 1 FROM fincore.transfers r
                                                   WHERE r.pending_id = t.id AND r.kind IN ('void', 'expire')))""").fetchone()[0]
        assert stray == 0, f"{stray} accounts are closed without an open or posted closing hold"
        deadlocks = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
        assert deadlocks == 0, f"{deadlocks} deadlocks"
    assert shared.failed, "no batch failure was recorded (the workload should make some)"
    print(f"\n{total_ops} operations in {SECONDS}s by {CLIENTS} clients: {shared.ops}; refusals {shared.refused}")


def storm(database, n, call):
    """n clients make the same call at the same moment; returns each one's outcome."""
    barrier = threading.Barrier(n)
    outcomes = [None] * n

    def run(i):
        with psycopg.connect(conninfo(database), autocommit=False) as conn:
            try:
                with conn.transaction():
                    conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                    barrier.wait(10)
                    outcomes[i] = ("ok", call(conn))
            except psycopg.Error as e:
                outcomes[i] = ("error", e.sqlstate)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_the_same_id_from_many_clients_creates_one_transfer(ledger):
    for attempt in range(5):
        tid = str(uuid.uuid4())
        outcomes = storm(ledger, CLIENTS, lambda conn: conn.execute(
            "SELECT result FROM fincore.transfer(%s, %s, 1, id => %s)",
            (account_id(500 + attempt), account_id(600 + attempt), tid)).fetchone()[0])
        results = sorted(o[1] for o in outcomes)
        assert results.count("created") == 1 and results.count("exists") == CLIENTS - 1, outcomes
        with connect(ledger) as conn:
            assert conn.execute("SELECT count(*) FROM fincore.transfers WHERE id = %s", (tid,)).fetchone()[0] == 1


def test_the_same_id_in_concurrent_batches_creates_one_transfer(ledger):
    tid = str(uuid.uuid4())
    outcomes = storm(ledger, CLIENTS, lambda conn: conn.execute(
        "SELECT result FROM fincore.create_transfers(ARRAY[ROW(%s, %s, %s, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        "::fincore.transfer_request])", (tid, account_id(700), account_id(701))).fetchone()[0])
    results = sorted(o[1] for o in outcomes)
    assert results.count("ok") == 1 and results.count("exists") == CLIENTS - 1, outcomes


def test_a_hold_resolves_once_under_racing_posts_and_voids(ledger):
    with connect(ledger, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
            hold = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 100, pending => true)",
                                (account_id(800), account_id(801))).fetchone()[0]
    outcomes = storm(ledger, CLIENTS, lambda conn: conn.execute(
        "SELECT result FROM fincore.post_pending(%s)" if threading.get_ident() % 2 else
        "SELECT result FROM fincore.void_pending(%s)", (hold,)).fetchone()[0])
    ok = [o for o in outcomes if o[0] == "ok"]
    refused = [o for o in outcomes if o[0] == "error"]
    assert len(ok) == 1, outcomes
    assert all(o[1] in ("ZF310", "ZF311") for o in refused), outcomes
    with connect(ledger) as conn:
        assert conn.execute("SELECT count(*) FROM fincore.transfers WHERE pending_id = %s", (hold,)).fetchone()[0] == 1
        assert conn.execute("SELECT * FROM fincore.verify()").fetchall() == []


def test_a_backend_new_to_a_hot_account_does_not_lock_it(ledger):
    """Two fresh backends (their account caches empty) credit a hot account in open transactions:
    the second must not wait for the first.  A lock taken only because a backend had not seen the
    account yet, held to the end of a transaction that goes on to other accounts, deadlocked
    billing's and the payments module's writers of the same platform accounts."""
    with connect(ledger) as conn, conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        hot = conn.execute("SELECT fincore.create_account('USD', flags => '{hot}')").fetchone()[0]
        payers = [conn.execute("SELECT fincore.create_account('USD')").fetchone()[0] for _ in range(2)]
    with psycopg.connect(conninfo(ledger), autocommit=False) as a, \
            psycopg.connect(conninfo(ledger), autocommit=False) as b:
        for conn, payer in ((a, payers[0]), (b, payers[1])):
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
            conn.execute("SET LOCAL lock_timeout = '2s'")
            assert conn.execute("SELECT result FROM fincore.transfer(%s, %s, 1)",
                                (payer, hot)).fetchone()[0] == "created"
        a.commit()
        b.commit()
