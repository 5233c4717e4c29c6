"""A random ledger workload for the concurrency and crash tests.

Each worker thread has its own connection and runs operations, each in its own
transaction as a trusted backend would (set_tenant inside the transaction):
single transfers, holds with and without timeouts, closing holds (which close
an account until they are voided or expire), posts and voids of holds (its own
and other workers'), linked batches (some designed to fail), independent
batches, reversals, idempotent replays of transfers that already exist, and
retries of ids a batch refused on the ledger's state (id_already_failed).  Refusals (SQLSTATE class ZF) are expected; anything else a
worker sees — a deadlock, a serialization failure, an internal error — is
recorded as a problem.
"""
import random
import threading
import time
import uuid

import psycopg

TENANT = "1edfe000-0000-4000-8000-000000000001"
WORLD = "1edfe000-0000-4000-8000-0000000000aa"


def account_id(n):
    return f"1edfe000-0000-4000-8000-{n:012d}"


def setup_ledger(conn, n_accounts=1000, n_hot=3):
    """Accounts with a mix of flags; the limited ones get an opening balance."""
    conn.execute("SET client_min_messages = warning")
    conn.execute("SELECT fincore.create_tenant('ledger load', %s)", (TENANT,))
    with conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        conn.execute("SELECT fincore.create_account('USD', id => %s)", (WORLD,))
        kinds = {}
        for n in range(1, n_accounts + 1):
            r = n % 20
            if n <= n_hot:
                flags, limit, kind = ["hot"], None, "hot"
            elif r < 8:
                flags, limit, kind = ["debits_must_not_exceed_credits"], None, "wallet"
            elif r < 10:
                flags, limit, kind = ["debits_must_not_exceed_credits"], 5000, "overdraft"
            elif r < 11:
                flags, limit, kind = ["credits_must_not_exceed_debits"], None, "capped"
            elif r < 13:
                flags, limit, kind = ["history"], None, "history"
            else:
                flags, limit, kind = [], None, "plain"
            conn.execute("SELECT fincore.create_account('USD', flags => %s, credit_limit => %s, id => %s)",
                         (flags, limit, account_id(n)))
            kinds[n] = kind
        # Opening balances from the world account, so that limited accounts can spend.
        conn.execute("""
            SELECT fincore.create_transfers(array_agg(ROW(NULL, %s::uuid, id, 20000, NULL, NULL, NULL, NULL, NULL,
                                                           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request))
              FROM fincore.accounts WHERE id <> %s::uuid""", (WORLD, WORLD))
        # A capped account needs debits before it can take credits.
        conn.execute("""
            SELECT fincore.create_transfers(array_agg(ROW(NULL, id, %s::uuid, 30000, NULL, NULL, NULL, NULL, NULL,
                                                           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request))
              FROM fincore.account_balances WHERE 'credits_must_not_exceed_debits' = ANY (flags)""", (WORLD,))
    return kinds


class Shared:
    """What the workers share: transfers and holds they created, and what went wrong."""

    def __init__(self):
        self.lock = threading.Lock()
        self.transfers = []         # (id, debit, credit, amount) of posted transfers
        self.holds = []             # ids of holds
        self.created = []           # every transfer id a worker saw created (committed)
        self.failed = []            # ids a batch refused on the ledger's state (committed)
        self.refused = {}           # result / SQLSTATE -> count
        self.problems = []          # anything that is not a refusal
        self.ops = {}

    def count(self, table, key):
        with self.lock:
            table[key] = table.get(key, 0) + 1


REQ = ("ROW(%s, %s, %s, %s, NULL, %s, %s, %s, %s, %s, %s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request")


class Worker(threading.Thread):
    def __init__(self, index, conninfo, shared, n_accounts, deadline, seed):
        super().__init__(name=f"ledger-worker-{index}", daemon=True)
        self.index = index
        self.conninfo = conninfo
        self.shared = shared
        self.n = n_accounts
        self.deadline = deadline
        self.rng = random.Random(seed)

    def acct(self):
        return account_id(self.rng.randint(1, self.n))

    def pair(self):
        d = self.acct()
        c = self.acct()
        while c == d:
            c = self.acct()
        return d, c

    def run(self):
        try:
            with psycopg.connect(self.conninfo, autocommit=False) as conn:
                while time.time() < self.deadline:
                    op = self.rng.choices(
                        ["single", "hold", "closing", "resolve", "linked", "batch", "reverse", "replay", "retry_failed"],
                        weights=[30, 12, 2, 12, 12, 8, 8, 8, 3])[0]
                    self.shared.count(self.shared.ops, op)
                    try:
                        self.pending_failed = []
                        with conn.transaction():
                            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                            getattr(self, "op_" + op)(conn)
                        with self.shared.lock:
                            self.shared.failed.extend(self.pending_failed)
                    except psycopg.Error as e:
                        state = e.sqlstate or "?"
                        if state.startswith("ZF"):
                            self.shared.count(self.shared.refused, state)
                        else:
                            with self.shared.lock:
                                self.shared.problems.append(f"{op}: {state} {e}")
        except Exception as e:      # noqa: BLE001 - a worker must report, not die silently
            with self.shared.lock:
                self.shared.problems.append(f"worker {self.index}: {type(e).__name__}: {e}")

    def remember(self, tid, d, c, amount):
        with self.shared.lock:
            self.shared.transfers.append((tid, d, c, amount))

    def op_single(self, conn):
        d, c = self.pair()
        amount = self.rng.randint(1, 5000)
        tid = str(uuid.uuid4())
        row = conn.execute("SELECT result FROM fincore.transfer(%s, %s, %s, id => %s)", (d, c, amount, tid)).fetchone()
        assert row[0] == "created", row
        self.remember(tid, d, c, amount)
        with self.shared.lock:
            self.shared.created.append(tid)

    def op_hold(self, conn):
        d, c = self.pair()
        tid = str(uuid.uuid4())
        timeout = self.rng.choice([None, None, "50 milliseconds", "1 second", "1 hour"])
        conn.execute("SELECT fincore.transfer(%s, %s, %s, id => %s, pending => true, timeout => %s::interval)",
                     (d, c, self.rng.randint(1, 3000), tid, timeout))
        with self.shared.lock:
            self.shared.holds.append(tid)
            self.shared.created.append(tid)

    def op_closing(self, conn):
        # A hold that closes its debit or credit account; voiding it or its expiry opens it again.
        # Only accounts above 900 (the other tests' fixed accounts stay open).
        d = account_id(self.rng.randint(901, self.n))
        c = account_id(self.rng.randint(1, 900))
        if self.rng.random() < 0.5:
            d, c = c, d
        tid = str(uuid.uuid4())
        side = "closing_debit" if d > c else "closing_credit"     # the account above 900
        timeout = self.rng.choice([None, "50 milliseconds", "1 second"])
        conn.execute(f"SELECT fincore.transfer(%s, %s, %s, id => %s, pending => true, timeout => %s::interval, {side} => true)",
                     (d, c, self.rng.randint(0, 100), tid, timeout))
        with self.shared.lock:
            self.shared.holds.append(tid)
            self.shared.created.append(tid)

    def op_retry_failed(self, conn):
        # An id a batch refused on the state stays failed, whatever happened since.
        with self.shared.lock:
            if not self.shared.failed:
                return
            tid = self.rng.choice(self.shared.failed)
        d, c = self.pair()
        try:
            with conn.transaction():
                conn.execute("SELECT fincore.transfer(%s, %s, 1, id => %s)", (d, c, tid))
        except psycopg.Error as e:
            assert e.sqlstate == "ZF331", f"a retry of failed id {tid}: {e.sqlstate} {e}"
            return
        raise AssertionError(f"a retry of failed id {tid} succeeded")

    def op_resolve(self, conn):
        with self.shared.lock:
            if not self.shared.holds:
                return
            hold = self.rng.choice(self.shared.holds)
        tid = str(uuid.uuid4())
        if self.rng.random() < 0.6:
            amount = None if self.rng.random() < 0.5 else self.rng.randint(1, 3000)
            conn.execute("SELECT fincore.post_pending(%s, %s, %s)", (hold, amount, tid))
        else:
            conn.execute("SELECT fincore.void_pending(%s, %s)", (hold, tid))
        with self.shared.lock:
            self.shared.created.append(tid)

    def items(self, k, linked):
        reqs, params, ids = [], [], []
        for i in range(k):
            d, c = self.pair()
            tid = str(uuid.uuid4())
            ids.append(tid)
            # Now and then an amount no wallet has: the chain must fail as a whole.
            amount = self.rng.choice([self.rng.randint(1, 2000)] * 9 + [10 ** 9])
            reqs.append(REQ)
            params += [tid, d, c, amount, None, None, None, None, None, linked and i < k - 1]
        return reqs, params, ids

    def run_batch(self, conn, reqs, params, ids):
        rows = conn.execute("SELECT index, id::text, result FROM fincore.create_transfers(ARRAY[" +
                            ", ".join(reqs) + "])", params).fetchall()
        assert len(rows) == len(ids)
        ok = [r[1] for r in rows if r[2] == "ok"]
        failed = [r[1] for r in rows if r[2] in ("exceeds_credits", "exceeds_debits", "debit_account_closed",
                                                 "credit_account_closed", "overflows_balance")]
        for r in rows:
            if r[2] not in ("ok",):
                self.shared.count(self.shared.refused, r[2])
        with self.shared.lock:
            self.shared.created.extend(ok)
        self.pending_failed = failed                # remembered once the transaction commits
        return rows

    def op_linked(self, conn):
        reqs, params, ids = self.items(self.rng.randint(2, 5), linked=True)
        rows = self.run_batch(conn, reqs, params, ids)
        results = {r[2] for r in rows}
        assert results == {"ok"} or "ok" not in results, f"a chain half applied: {rows}"

    def op_batch(self, conn):
        reqs, params, ids = self.items(self.rng.randint(5, 20), linked=False)
        self.run_batch(conn, reqs, params, ids)

    def op_reverse(self, conn):
        with self.shared.lock:
            if not self.shared.transfers:
                return
            tid, d, c, amount = self.rng.choice(self.shared.transfers)
        rid = str(uuid.uuid4())
        part = self.rng.choice([None, self.rng.randint(1, max(1, amount // 2))])
        conn.execute("SELECT fincore.reverse_transfer(%s::uuid, %s::bigint, %s::uuid)", (tid, part, rid))
        with self.shared.lock:
            self.shared.created.append(rid)

    def op_replay(self, conn):
        with self.shared.lock:
            if not self.shared.transfers:
                return
            tid, d, c, amount = self.rng.choice(self.shared.transfers)
        row = conn.execute("SELECT result FROM fincore.transfer(%s, %s, %s, id => %s)", (d, c, amount, tid)).fetchone()
        assert row[0] == "exists", f"replay of {tid} returned {row}"


def maintenance_thread(conninfo, deadline, shared, period=0.5):
    """Expire holds and roll up hot accounts while the load runs."""
    def run():
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                while time.time() < deadline:
                    conn.execute("SELECT fincore.expire_pending(200)")
                    conn.execute("SELECT fincore.rollup_hot_accounts(100)")
                    time.sleep(period)
        except psycopg.Error as e:
            with shared.lock:
                shared.problems.append(f"maintenance: {e.sqlstate} {e}")
    t = threading.Thread(target=run, name="ledger-maintenance", daemon=True)
    t.start()
    return t
