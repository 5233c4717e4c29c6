"""Crash safety of the ledger: kill -9 the whole server in the middle of a load.

Eight clients post transfers and batches with ids of their own; each records,
for every id, whether its COMMIT returned (committed), whether it failed before
COMMIT was sent (failed), or whether the connection died during COMMIT
(unknown: either is fine).  Then the postmaster and every backend are killed
with SIGKILL, the server restarts and recovers, and: every committed transfer
is there, no failed one is, and verify() finds nothing wrong.  A ninth client
seals the audit trail all along (docs/audit.md): after recovery the chain
verifies, and every transfer has exactly one record in it.
"""
import os
import random
import signal
import subprocess
import threading
import time
import uuid

import psycopg
import pytest

from conftest import connect
from ledger_load import TENANT, account_id, setup_ledger

ACCOUNTS = 200
CLIENTS = 8
LOAD_SECONDS = float(os.environ.get("FINCORE_CRASH_SECONDS", "4"))


@pytest.fixture(scope="module")
def ledger(database):
    with connect(database) as conn:
        setup_ledger(conn, ACCOUNTS, n_hot=2)
    return database


def server_processes(conn):
    """The postmaster's pid and its children's."""
    first = conn.execute("SELECT pg_read_file('postmaster.pid')").fetchone()[0].splitlines()[0]
    postmaster = int(first)
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                children.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return postmaster, children


def alive(pid):
    """Is pid a process that has not exited (zombies have, but still hold shared memory until reaped)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for_server(dbname, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            with connect(dbname) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


class CrashWorker(threading.Thread):
    def __init__(self, index, dbname, stop):
        super().__init__(name=f"crash-worker-{index}", daemon=True)
        self.dbname = dbname
        self.stop = stop
        self.rng = random.Random(4242 + index)
        self.committed, self.failed, self.unknown = [], [], []

    def run(self):
        try:
            conn = psycopg.connect(dbname=self.dbname, autocommit=False)
        except psycopg.OperationalError:
            return
        while not self.stop.is_set():
            ids = [str(uuid.uuid4()) for _ in range(self.rng.choice([1, 1, 1, 5]))]
            committing = False
            try:
                conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                if len(ids) == 1:
                    d, c = self.rng.sample(range(1, ACCOUNTS + 1), 2)
                    conn.execute("SELECT fincore.transfer(%s, %s, %s, id => %s)",
                                 (account_id(d), account_id(c), self.rng.randint(1, 3000), ids[0]))
                    created = ids
                else:
                    reqs, params = [], []
                    for tid in ids:
                        d, c = self.rng.sample(range(1, ACCOUNTS + 1), 2)
                        reqs.append("ROW(%s, %s, %s, %s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request")
                        params += [tid, account_id(d), account_id(c), self.rng.randint(1, 3000)]
                    rows = conn.execute("SELECT id::text, result FROM fincore.create_transfers(ARRAY[" +
                                        ", ".join(reqs) + "])", params).fetchall()
                    created = [r[0] for r in rows if r[1] == "ok"]
                    self.failed += [r[0] for r in rows if r[1] != "ok"]
                committing = True
                conn.commit()
                self.committed += created
            except psycopg.Error as e:
                if committing and conn.broken:
                    self.unknown += created
                else:
                    self.failed += ids if not committing else created
                if conn.broken or conn.closed:
                    return
                try:
                    conn.rollback()
                except psycopg.Error:
                    return


class Sealer(threading.Thread):
    """Chains the audit records while the load runs, until the crash."""

    def __init__(self, dbname, stop):
        super().__init__(name="crash-sealer", daemon=True)
        self.dbname, self.stop, self.sealed = dbname, stop, 0

    def run(self):
        try:
            conn = psycopg.connect(dbname=self.dbname, autocommit=True)
            while not self.stop.is_set():
                self.sealed += conn.execute("SELECT fincore.audit_seal(%s, 200)", (TENANT,)).fetchone()[0]
        except psycopg.Error:
            return


def test_kill_9_loses_no_committed_transfer(ledger):
    with connect(ledger) as conn:
        cluster = conn.execute("SHOW cluster_name").fetchone()[0]
        postmaster, _ = server_processes(conn)
    assert "/" in cluster, f"cannot tell how to restart the cluster named {cluster!r}"
    version, name = cluster.split("/", 1)

    stop = threading.Event()
    workers = [CrashWorker(i, ledger, stop) for i in range(CLIENTS)]
    sealer = Sealer(ledger, stop)
    for w in workers + [sealer]:
        w.start()
    time.sleep(LOAD_SECONDS)

    # Crash: SIGKILL the postmaster and every server process, at once.
    with connect(ledger) as conn:
        postmaster, children = server_processes(conn)
    for pid in [postmaster] + children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stop.set()
    for w in workers + [sealer]:
        w.join(30)
    # Wait until every killed process is gone (a zombie still holds its shared memory).
    deadline = time.time() + 30
    while any(alive(pid) for pid in [postmaster] + children) and time.time() < deadline:
        time.sleep(0.1)
    for attempt in range(10):
        start = subprocess.run(["pg_ctlcluster", version, name, "start"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if start.returncode == 0:
            break
        time.sleep(1)
    assert start.returncode == 0, f"the server did not restart: {start.stdout}"
    wait_for_server(ledger)

    committed = [t for w in workers for t in w.committed]
    failed = [t for w in workers for t in w.failed]
    unknown = [t for w in workers for t in w.unknown]
    assert len(committed) > 50, f"too little load before the crash: {len(committed)} committed"
    with connect(ledger) as conn:
        new_postmaster, _ = server_processes(conn)
        assert new_postmaster != postmaster, "the server was not restarted"
        present = {r[0] for r in conn.execute(
            "SELECT id::text FROM fincore.transfers WHERE id = ANY(%s::uuid[])", (committed + failed + unknown,))}
        lost = set(committed) - present
        assert not lost, f"{len(lost)} committed transfers were lost in the crash"
        phantom = set(failed) & present
        assert not phantom, f"{len(phantom)} transfers that failed are present"
        broken = conn.execute("SELECT * FROM fincore.verify()").fetchall()
        assert broken == [], f"verify() after recovery: {broken[:10]}"
        # The audit trail: what was sealed before the crash and what is sealed now form one chain.
        assert sealer.sealed > 0, "the sealer sealed nothing before the crash"
        conn.execute("SELECT fincore.audit_seal(%s, 1000000)", (TENANT,))
        ok, checked, bad, reason = conn.execute(
            "SELECT ok, checked, first_bad_seq, reason FROM fincore.audit_verify(%s)", (TENANT,)).fetchone()
        assert ok, f"the audit chain after recovery: record {bad}: {reason}"
        records = conn.execute("SELECT count(*), count(DISTINCT key) FROM fincore.audit_log "
                               "WHERE tenant_id = %s AND table_name = 'fincore.transfers'", (TENANT,)).fetchone()
        transfers = conn.execute("SELECT count(*) FROM fincore.transfers WHERE tenant_id = %s",
                                 (TENANT,)).fetchone()[0]
        assert records == (transfers, transfers), f"{records} audit records of {transfers} transfers"
        # The ledger works after recovery.
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
            assert conn.execute("SELECT result FROM fincore.transfer(%s, %s, 1)",
                                (account_id(1), account_id(2))).fetchone()[0] == "created"
    print(f"\ncrash: {len(committed)} committed (all present), {len(failed)} failed (none present), "
          f"{len(unknown)} unknown; {sealer.sealed} audit records sealed before the crash, {checked} verified")
