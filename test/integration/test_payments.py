"""Payments against a reference model, a fake provider and the example worker (docs/payments.md).

test_saga_against_the_model drives random sequences of API calls (create, confirm, capture, refund,
cancel, increment), worker passes that die now and then (before or after calling the provider),
webhooks (duplicated, shuffled, late), 3-D Secure completions, lease expiries and step timeouts,
with examples/fake_provider.py serving on 127.0.0.1 and examples/payments_worker.py as the worker.
After every step:

- a call the model refuses is refused with the model's SQLSTATE, and writes nothing;
- every payment's status and amounts equal the model's (the model applies each step's outcome in
  the order the database decided them: first report wins);
- the ledger equals the model's money (payers, settlement: held, captured less refunded);
- the provider never charged a key twice, and every step it charged is a succeeded step;
- verify() is clean.

test_concurrent_captures_and_refunds runs captures, then refunds, of one payment from 8 sessions at
once: never more captured than held, nor refunded than captured.
"""
import os
import random
import sys
import threading
import time
import uuid

import psycopg
import pytest

from conftest import connect

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import fake_provider  # noqa: E402
import payments_worker  # noqa: E402

SECRET = "whsec_model"
NPAYERS = 4
SEEDS = [1, 2, 3, 4, 5]
STEPS = 150


def tenant_of(seed):
    """Each run its own tenant, accounts and provider in the module's database."""
    return str(uuid.UUID(int=(0xE000 << 64) + seed))


def payer(seed, n):
    return str(uuid.UUID(int=(0xE00 << 96) + (seed << 16) + n + 1))


def settlement(seed):
    return str(uuid.UUID(int=(0xE00 << 96) + (seed << 16) + 0xFFFF))


def provider_of(seed):
    return f"fake{seed}"


def setup_tenant(dbname, seed):
    tenant = tenant_of(seed)
    with connect(dbname) as conn:
        with conn.transaction():
            conn.execute("SELECT fincore.create_tenant('payments model', %s)", (tenant,))
            conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
            for n in range(NPAYERS):
                conn.execute("SELECT fincore.create_account('USD', id => %s)", (payer(seed, n),))
            conn.execute("SELECT fincore.create_account('USD', id => %s)", (settlement(seed),))
            # A provider (and so a job queue) per run: leftovers of one run never reach another's provider.
            conn.execute("SELECT fincore.create_payment_provider(%s, %s, webhook_secret => %s, "
                         "hard_decline_codes => '{card_declined,stolen_card,authentication_failed}', "
                         "max_attempts => 50)", (provider_of(seed), settlement(seed), SECRET))
    return tenant


class Refused(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


class Model:
    """The reference state machine: src/payments_engine.c's rules, written again in Python."""

    FROM = {
        "confirm": {"requires_confirmation"},
        "authorized": {"processing", "requires_action"},
        "requires_action": {"processing"},
        "authorize_failed": {"processing", "requires_action"},
        "capture": {"requires_capture"}, "captured": {"requires_capture"}, "capture_failed": {"requires_capture"},
        "increment": {"requires_capture"}, "incremented": {"requires_capture"},
        "increment_failed": {"requires_capture"},
        "cancel": {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"},
        "canceled": {"requires_action", "requires_capture"}, "cancel_failed": {"requires_action", "requires_capture"},
        "refund": {"succeeded"}, "refunded": {"succeeded", "disputed", "dispute_lost"},
        "refund_failed": {"succeeded", "disputed", "dispute_lost", "refunded"},
    }

    def __init__(self, amount, manual, multicapture, payer_n):
        self.status = "requires_confirmation"
        self.manual, self.multi, self.payer = manual, multicapture, payer_n
        self.amount, self.authorized, self.captured, self.released, self.refunded = amount, 0, 0, 0, 0
        self.capture_pending = self.increment_pending = self.refund_pending = 0
        self.cancel_pending = False

    def held(self):
        return self.authorized - self.captured - self.released

    def row(self):
        return (self.status, self.amount, self.authorized, self.captured, self.released, self.refunded,
                self.capture_pending, self.increment_pending, self.refund_pending, self.cancel_pending)

    def apply(self, action, amount=0, final=True):
        """Apply or raise Refused(sqlstate); on a refusal nothing changes."""
        if self.status not in self.FROM[action]:
            raise Refused("ZF903")
        if action in ("capture", "captured", "capture_failed", "increment", "incremented", "refund", "refunded",
                      "refund_failed") and amount <= 0:
            raise Refused("ZF901")
        s = self
        if action == "confirm":
            s.authorized, s.status = s.amount, "processing"
        elif action == "requires_action":
            s.status = "requires_action"
        elif action == "authorized":
            if s.manual or s.cancel_pending:
                s.status = "requires_capture"
            else:
                s.captured, s.status = s.authorized, "succeeded"
        elif action == "authorize_failed":
            s.released += s.held()
            s.cancel_pending, s.status = False, "failed"
        elif action == "capture":
            if s.cancel_pending or s.increment_pending:
                raise Refused("ZF907")
            if not s.multi and (s.captured or s.capture_pending):
                raise Refused("ZF903")
            if final and s.capture_pending:
                raise Refused("ZF907")
            if amount > s.held() - s.capture_pending:
                raise Refused("ZF904")
            s.capture_pending += amount
        elif action == "captured":
            s.capture_pending -= amount
            s.captured += amount
            if final or not s.multi:
                s.released += s.held() - s.capture_pending
            if s.held() == 0 and s.capture_pending == 0:
                s.status = "succeeded"
        elif action == "capture_failed":
            s.capture_pending -= amount
        elif action == "increment":
            if s.cancel_pending or s.increment_pending or s.capture_pending:
                raise Refused("ZF907")
            if s.captured:
                raise Refused("ZF903")
            s.increment_pending = amount
        elif action == "incremented":
            s.authorized += amount
            s.amount += amount
            s.increment_pending = 0
        elif action == "increment_failed":
            s.increment_pending = 0
        elif action == "cancel":
            if s.status in ("requires_payment_method", "requires_confirmation"):
                s.status = "canceled"
                return
            if s.cancel_pending or s.capture_pending or s.increment_pending:
                raise Refused("ZF907")
            s.cancel_pending = True
        elif action == "canceled":
            s.cancel_pending = False
            s.released += s.held()
            s.status = "succeeded" if s.captured else "canceled"
        elif action == "cancel_failed":
            s.cancel_pending = False
        elif action == "refund":
            if amount > s.captured - s.refunded - s.refund_pending:
                raise Refused("ZF905")
            s.refund_pending += amount
        elif action == "refunded":
            s.refund_pending -= amount
            s.refunded += amount
            if s.status == "succeeded" and s.refunded == s.captured:
                s.status = "refunded"
        elif action == "refund_failed":
            s.refund_pending -= amount


OUTCOME_ACTION = {  # (step kind, outcome) -> the model's action
    ("authorize", "succeeded"): "authorized", ("authorize", "failed"): "authorize_failed",
    ("capture", "succeeded"): "captured", ("capture", "failed"): "capture_failed",
    ("increment", "succeeded"): "incremented", ("increment", "failed"): "increment_failed",
    ("cancel", "succeeded"): "canceled", ("cancel", "failed"): "cancel_failed",
    ("refund", "succeeded"): "refunded", ("refund", "failed"): "refund_failed",
}

ROW_SQL = ("SELECT status, amount, authorized, captured, released, refunded, capture_pending, increment_pending, "
           "refund_pending, cancel_pending FROM fincore.payments WHERE id = %s")
# (The tests connect as a superuser, whom row level security does not filter: queries name the tenant.)


class Harness:
    def __init__(self, dbname, seed):
        self.seed = seed
        self.tenant = setup_tenant(dbname, seed)
        self.name = provider_of(seed)
        self.rng = random.Random(seed)
        self.provider = fake_provider.FakeProvider(SECRET, seed=seed, client_timeout=0.2, max_latency=0.002)
        self.server = fake_provider.serve(self.provider)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.conn = connect(dbname, options=f"-c fincore.tenant={self.tenant}")
        self.worker = connect(dbname)
        self.models = {}       # payment id -> Model
        self.decided = set()   # (payment id, step_no) whose outcome the model applied
        self.refusals = 0

    def close(self):
        self.server.shutdown()
        self.conn.close()
        self.worker.close()

    def rows(self):
        return self.conn.execute(
            "SELECT (SELECT count(*) FROM fincore.payments), (SELECT count(*) FROM fincore.payment_steps), "
            "(SELECT count(*) FROM fincore.transfers), (SELECT count(*) FROM fincore.jobs), "
            "(SELECT count(*) FROM fincore.outbox_events)").fetchone()

    def call(self, pid, action, sql, params, amount=0, final=True):
        """An API call the model judges first; a refusal must match and write nothing."""
        m = self.models[pid]
        before, snapshot = self.rows(), m.row()
        try:
            m.apply(action, amount, final)
            expected = None
        except Refused as r:
            expected = r.code
        try:
            self.conn.execute(sql, params)
            got = None
        except psycopg.Error as e:
            got = e.sqlstate
        assert got == expected, f"{action} {amount} on {snapshot}: fincore {got}, model {expected}"
        if got is not None:
            self.refusals += 1
            assert self.rows() == before, f"refused {action} wrote something"

    def new_payment(self):
        pid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        manual = self.rng.random() < 0.7
        multi = manual and self.rng.random() < 0.4
        n = self.rng.randrange(NPAYERS)
        amount = self.rng.choice([100, 250, 1000])
        self.conn.execute("SELECT fincore.create_payment(%s, 'USD', %s, %s, capture_method => %s, "
                          "multicapture => %s, id => %s)",
                          (amount, self.name, payer(self.seed, n), "manual" if manual else "automatic", multi, pid))
        self.models[pid] = Model(amount, manual, multi, n)
        self.call(pid, "confirm", "SELECT fincore.confirm_payment(%s)", (pid,))

    def sync_outcomes(self):
        """Apply to the model every step outcome the database decided since the last look, in order."""
        rows = self.conn.execute(
            "SELECT payment_id, step_no, kind, status, amount, final, outcome_source FROM fincore.payment_steps "
            "WHERE tenant_id = %s AND status <> 'pending' ORDER BY decided_at, payment_id, step_no",
            (self.tenant,)).fetchall()
        for pid, step, kind, status, amount, final, source in rows:
            pid = str(pid)
            if (pid, step) in self.decided or kind not in ("authorize", "capture", "increment", "cancel", "refund"):
                continue
            self.decided.add((pid, step))
            m = self.models[pid]
            if kind == "cancel" and not m.cancel_pending:
                continue   # the authorization failed first: nothing was left to cancel
            if kind == "authorize" and m.status in ("canceled", "failed"):
                continue   # canceled while it waited for 3-D Secure: the late answer changes nothing
            m.apply(OUTCOME_ACTION[(kind, status)], amount or 0, final)
        # An authorization that needs 3-D Secure: the payment waits, its step stays pending.
        for (pid,) in self.conn.execute("SELECT id FROM fincore.payments WHERE tenant_id = %s "
                                        "AND status = 'requires_action'", (self.tenant,)).fetchall():
            pid = str(pid)
            if self.models[pid].status == "processing":
                self.models[pid].apply("requires_action")

    def check(self):
        self.sync_outcomes()
        for pid, m in self.models.items():
            assert self.conn.execute(ROW_SQL, (pid,)).fetchone() == m.row(), f"payment {pid} differs from the model"
        # The ledger equals the model's money.
        for n in range(NPAYERS):
            mine = [m for m in self.models.values() if m.payer == n]
            dp, dpo, cpo = self.conn.execute("SELECT debits_pending, debits_posted, credits_posted FROM fincore.accounts "
                                             "WHERE id = %s", (payer(self.seed, n),)).fetchone()
            assert dp == sum(m.held() for m in mine), f"payer {n}: held"
            assert dpo - cpo == sum(m.captured - m.refunded for m in mine), f"payer {n}: captured less refunded"
        cp, cpo, dpo = self.conn.execute("SELECT credits_pending, credits_posted, debits_posted FROM fincore.accounts "
                                         "WHERE id = %s", (settlement(self.seed),)).fetchone()
        assert cp == sum(m.held() for m in self.models.values())
        assert cpo - dpo == sum(m.captured - m.refunded for m in self.models.values())
        # The provider charged each key at most once, and only for steps that succeeded here.
        stats = self.provider.stats()
        assert all(v == 1 for v in stats["charges"].values()), stats["charges"]
        succeeded = {k for (k,) in self.conn.execute(
            "SELECT provider_key FROM fincore.payment_steps WHERE tenant_id = %s AND status = 'succeeded' "
            "AND provider_key IS NOT NULL", (self.tenant,))}
        pending = {k for (k,) in self.conn.execute(
            "SELECT provider_key FROM fincore.payment_steps WHERE tenant_id = %s AND status = 'pending'",
            (self.tenant,))}
        for key in stats["charges"]:
            assert key in succeeded or key in pending, f"provider charged {key}, fincore says otherwise"
        assert self.conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0

    def step(self):
        r = self.rng.random()
        live = [pid for pid, m in self.models.items() if m.status not in ("canceled", "failed", "refunded")]
        pid = self.rng.choice(live) if live else None
        if r < 0.15 or pid is None:
            self.new_payment()
        elif r < 0.30:
            m = self.models[pid]
            amount = self.rng.choice([None, 50, 100, 2000])
            final = not m.multi or self.rng.random() < 0.4
            eff = amount if amount is not None else m.held() - m.capture_pending
            self.call(pid, "capture", "SELECT fincore.capture_payment(%s, %s, %s)", (pid, amount, final), eff, final)
        elif r < 0.40:
            m = self.models[pid]
            amount = self.rng.choice([None, 30, 100, 5000])
            eff = amount if amount is not None else m.captured - m.refunded - m.refund_pending
            self.call(pid, "refund", "SELECT fincore.refund_payment(%s, %s)", (pid, amount), eff)
        elif r < 0.45:
            m = self.models[pid]
            if m.status in ("processing", "succeeded"):
                return   # not a model action worth comparing: fincore refuses these too (ZF903)
            self.call(pid, "cancel", "SELECT fincore.cancel_payment(%s)", (pid,))
        elif r < 0.50:
            self.call(pid, "increment", "SELECT fincore.increment_authorization(%s, %s)", (pid, 40), 40)
        elif r < 0.75:
            kill = self.rng.random() < 0.2
            crash = (lambda job, stage: self.rng.random() < 0.3) if kill else None
            payments_worker.process_steps(self.worker, self.name, self.url, batch=5, lease="1 hour",
                                          timeout=0.2, crash=crash)
        elif r < 0.88:
            deliveries = self.provider.take_webhooks()
            # Late and duplicated: some held back for a later pass, some sent twice.
            later = [d for d in deliveries if self.rng.random() < 0.2]
            now = [d for d in deliveries if d not in later] + [d for d in deliveries if self.rng.random() < 0.2]
            self.rng.shuffle(now)
            self.provider.webhooks.extend((d["payload"], d["signature"]) for d in later)
            payments_worker.receive_webhooks(self.worker, self.tenant, self.name, SECRET, now)
            payments_worker.process_webhooks(self.worker, self.name)
        elif r < 0.92:
            self.provider.complete_actions()
        elif r < 0.97:
            # Time passes: leases of dead workers run out, retries come due.
            self.worker.execute("UPDATE fincore.jobs SET lease_until = now() - interval '1 second' "
                                "WHERE state = 'running'")
            self.worker.execute("UPDATE fincore.jobs SET run_at = now() - interval '1 second' WHERE state = 'ready'")
            self.worker.execute("SELECT fincore.rescue_expired()")
        else:
            # A step nobody sent times out: expire_payment_steps runs its compensation.
            unseen = set(self.provider.stats()["decided"])
            rows = self.conn.execute("SELECT s.payment_id, s.step_no, s.provider_key FROM fincore.payment_steps s "
                                     "JOIN fincore.jobs j ON j.id = s.job_id "
                                     "WHERE s.tenant_id = %s AND s.status = 'pending' AND j.state = 'ready'",
                                     (self.tenant,)).fetchall()
            rows = [r for r in rows if r[2] not in unseen]
            if rows:
                p, step, _ = self.rng.choice(rows)
                self.worker.execute("UPDATE fincore.payment_steps SET deadline = now() - interval '1 second' "
                                    "WHERE tenant_id = %s AND payment_id = %s AND step_no = %s", (self.tenant, p, step))
                with self.worker.transaction():
                    self.worker.execute("SELECT fincore.expire_payment_steps()")


@pytest.mark.parametrize("seed", SEEDS)
def test_saga_against_the_model(database, seed):
    h = Harness(database, seed)
    try:
        for _ in range(STEPS):
            h.step()
            h.check()
        # Drain: every step decided, every webhook delivered.
        for _ in range(50):
            h.provider.complete_actions()
            h.worker.execute("UPDATE fincore.jobs SET lease_until = now() - interval '1 second' WHERE state = 'running'")
            h.worker.execute("UPDATE fincore.jobs SET run_at = now() - interval '1 second' WHERE state = 'ready'")
            h.worker.execute("SELECT fincore.rescue_expired()")
            payments_worker.process_steps(h.worker, h.name, h.url, batch=50, timeout=0.2)
            payments_worker.receive_webhooks(h.worker, h.tenant, h.name, SECRET, h.provider.take_webhooks())
            payments_worker.process_webhooks(h.worker, h.name)
            pending = h.conn.execute(
                "SELECT s.payment_id, s.step_no, s.kind, s.outcome_code, j.state, j.attempts FROM fincore.payment_steps s "
                "LEFT JOIN fincore.jobs j ON j.id = s.job_id WHERE s.tenant_id = %s AND s.status = 'pending'",
                (h.tenant,)).fetchall()
            if not pending:
                break
        assert not pending, f"steps still pending after the drain: {pending}"
        h.check()
        sources = dict(h.conn.execute("SELECT outcome_source, count(*) FROM fincore.payment_steps WHERE tenant_id = %s "
                                      "AND status <> 'pending' GROUP BY 1", (h.tenant,)).fetchall())
        statuses = dict(h.conn.execute("SELECT status, count(*) FROM fincore.payments WHERE tenant_id = %s GROUP BY 1",
                                       (h.tenant,)).fetchall())
        print(f"seed {seed}: {len(h.models)} payments {statuses}, steps decided by {sources}, "
              f"{h.refusals} refusals, {sum(h.provider.stats()['charges'].values())} charges")
        assert len(h.models) > 5 and h.refusals > 0 and sources.get("worker") and sources.get("webhook"), \
            "the run exercised payments, refusals, the worker and webhooks"
    finally:
        h.close()


def test_concurrent_captures_and_refunds(database):
    """8 sessions capture, then refund, one payment at once: never over-captured, never over-refunded."""
    provider_db, TENANT = database, setup_tenant(database, 99)
    with connect(provider_db, options=f"-c fincore.tenant={TENANT}") as conn:
        pid = conn.execute("SELECT id FROM fincore.create_payment(1000, 'USD', 'fake99', %s, capture_method => 'manual', "
                           "multicapture => true, confirm => true)", (payer(99, 0),)).fetchone()[0]
        with conn.transaction():
            conn.execute("SELECT fincore.payment_step_result(%s, 1, 'succeeded')", (pid,))

    def race(sql, amount, outcomes):
        barrier = threading.Barrier(8)

        def one():
            with connect(provider_db, options=f"-c fincore.tenant={TENANT}") as c:
                barrier.wait()
                try:
                    with c.transaction():
                        step = c.execute(sql, (pid, amount)).fetchone()[0]
                        c.execute("SELECT fincore.payment_step_result(%s, %s, 'succeeded')", (pid, step))
                    outcomes.append("ok")
                except psycopg.Error as e:
                    outcomes.append(e.sqlstate)
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    captures, refunds = [], []
    race("SELECT step_no FROM fincore.capture_payment(%s, %s, false)", 300, captures)
    with connect(provider_db, options=f"-c fincore.tenant={TENANT}") as conn:
        with conn.transaction():
            step = conn.execute("SELECT step_no FROM fincore.capture_payment(%s)", (pid,)).fetchone()[0]
            conn.execute("SELECT fincore.payment_step_result(%s, %s, 'succeeded')", (pid, step))
    race("SELECT step_no FROM fincore.refund_payment(%s, %s)", 400, refunds)
    with connect(provider_db, options=f"-c fincore.tenant={TENANT}") as conn:
        captured, refunded, authorized = conn.execute(
            "SELECT captured, refunded, authorized FROM fincore.payments WHERE id = %s", (pid,)).fetchone()
        assert captures.count("ok") == 3 and set(captures) <= {"ok", "ZF904"}, captures
        assert captured == 1000 == authorized
        assert refunds.count("ok") == 2 and set(refunds) <= {"ok", "ZF905"}, refunds
        assert refunded == 800 <= captured
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
