"""A failover that loses no acknowledged transfer (./scripts/test --failover).

pg_auto_failover keeps a primary and a synchronous standby (scripts/failover.sh). Clients post
transfers through a multi-host connection string (target_session_attrs=read-write), each with
an id of its own, as an application's idempotency key. Mid-load the primary's keeper and
postmaster are killed with SIGKILL. The standby takes over; the clients reconnect and retry
every transfer whose COMMIT they did not see acknowledged, with the same id. Afterwards:

- every transfer whose COMMIT was acknowledged is there;
- a retried transfer exists exactly once: the retry got `exists` (it had committed before the
  crash) or `ok` (it had not);
- verify() finds nothing broken.

The seconds without a writable primary are printed (and written to $FINCORE_FAILOVER_REPORT).
"""
import os
import signal
import subprocess
import threading
import time
import uuid

import psycopg

DIR = os.environ["FINCORE_FAILOVER_DIR"]
PORT = int(os.environ.get("FINCORE_FAILOVER_PORT", "57400"))
NODES = (PORT + 1, PORT + 2)
DSN = (f"host=127.0.0.1,127.0.0.1 port={NODES[0]},{NODES[1]} user=postgres dbname=postgres "
       "target_session_attrs=read-write connect_timeout=2")
TENANT = uuid.UUID("00000000-0000-4000-8000-0000000fa110")
ACCOUNTS = [uuid.UUID(int=TENANT.int + (n << 32)) for n in range(1, 9)]
CLIENTS = 4


def connect():
    return psycopg.connect(DSN, autocommit=True)


def post(conn, tid, debit, credit):
    """One transfer as a batch of one, so that a replay says `exists`; returns the result."""
    with conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        return conn.execute(
            "SELECT result FROM fincore.create_transfers(ARRAY[ROW(%s, %s, %s, 1, NULL, NULL, NULL, NULL, NULL,"
            " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request])",
            (tid, debit, credit)).fetchone()[0]


def primary_port():
    with connect() as conn:
        return conn.execute("SELECT inet_server_port()").fetchone()[0]


def kill_primary(port):
    """SIGKILL the node's keeper (and its children) and its postmaster: the machine is gone."""
    node = f"node{NODES.index(port) + 1}"
    keeper = int(open(f"{DIR}/{node}.keeper.pid").read())
    postmaster = int(open(f"{DIR}/{node}/postmaster.pid").readline())
    subprocess.run(["pkill", "-9", "-P", str(keeper)], check=False)
    for pid in (keeper, postmaster):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_failover_loses_no_acknowledged_transfer():
    with connect() as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT fincore.create_tenant('failover', %s)", (TENANT,))
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
            for a in ACCOUNTS:
                conn.execute("SELECT fincore.create_account('USD', id => %s)", (a,))

    stop = threading.Event()
    lock = threading.Lock()
    acked, retried, errors = [], [], []
    first_ack_after = {}   # client -> time of its first acknowledged commit on another node than the killed one
    killed = []            # (time, port) of the kill

    def client(k):
        conn = None
        n = 0
        while not stop.is_set():
            tid = uuid.uuid4()
            debit, credit = ACCOUNTS[(n + k) % len(ACCOUNTS)], ACCOUNTS[(n + k + 1) % len(ACCOUNTS)]
            n += 1
            attempts = 0
            while True:
                attempts += 1
                try:
                    if conn is None or conn.closed:
                        conn = connect()
                    result = post(conn, tid, debit, credit)
                    now = time.monotonic()
                    port = conn.info.port
                    with lock:
                        if attempts == 1:
                            if result != "ok":
                                errors.append(f"{tid}: {result} on the first attempt")
                            acked.append(tid)
                        else:
                            if result not in ("ok", "exists"):
                                errors.append(f"{tid}: {result} on a retry")
                            retried.append((tid, result))
                        if killed and port != killed[0][1] and k not in first_ack_after:
                            first_ack_after[k] = now
                    break
                except psycopg.Error:
                    # Not acknowledged: the same id again, on whichever node is the primary now.
                    try:
                        if conn is not None:
                            conn.close()
                    except psycopg.Error:
                        pass
                    conn = None
                    if attempts > 400:
                        errors.append(f"{tid}: gave up after {attempts} attempts")
                        return
                    time.sleep(0.1)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for th in threads:
        th.start()
    time.sleep(3)
    old = primary_port()
    with lock:
        before = len(acked)
        killed.append((time.monotonic(), old))
    kill_primary(old)
    # Load until every client has committed again, and a little after.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(first_ack_after) < CLIENTS:
        time.sleep(0.2)
    time.sleep(2)
    stop.set()
    for th in threads:
        th.join()

    assert not errors, errors[:5]
    assert len(first_ack_after) == CLIENTS, "the clients did not commit again after the failover"
    downtime = min(first_ack_after.values()) - killed[0][0]
    new = primary_port()
    assert new != old
    report = (f"failover: {before} transfers acknowledged before the kill, {len(acked)} in all, "
              f"{len(retried)} retried ({sum(1 for _, r in retried if r == 'exists')} had committed); "
              f"no writable primary for {downtime:.1f} s (from the kill to the first commit acknowledged by the new primary); "
              f"primary {old} -> {new}")
    print(report)
    if os.environ.get("FINCORE_FAILOVER_REPORT"):
        with open(os.environ["FINCORE_FAILOVER_REPORT"], "w") as f:
            f.write(report + "\n")

    with connect() as conn:
        ids = [t for t in acked] + [t for t, _ in retried]
        present = {r[0]: r[1] for r in conn.execute(
            "SELECT id, count(*) FROM fincore.transfers WHERE tenant_id = %s AND id = ANY(%s) GROUP BY id",
            (TENANT, ids))}
        missing = [t for t in ids if t not in present]
        assert not missing, f"{len(missing)} acknowledged or retried transfers are missing: {missing[:3]}"
        assert all(c == 1 for c in present.values())
        assert conn.execute("SELECT * FROM fincore.verify()").fetchall() == []
