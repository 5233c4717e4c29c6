"""The ledger's two stores write the same ledger (differential test).

fincore writes transfer rows and balances either through SQL statements (the SQL
store, fincore.ledger_store = sql) or through the heap and index access methods
(the direct store, the default where the tables allow it).  Here one random
workload -- single calls, batches with linked chains, holds posted, voided and
expired, reversals, hot and history accounts, replays, refusals, limits per
account and per tenant, a rule's distinct-counterparty aggregate -- runs against
two databases, one per store, and every row, counter, history entry, delta,
open hold, failed id, ledger event, limit counter, decision and result must be
the same.

Ids fincore generates differ between the two runs, so every transfer is named
by the step that created it (its label); timestamps differ, so they are compared
as differences (a hold's expiry minus its creation).
"""
import json
import random
import time
import uuid

import psycopg
import pytest

from conftest import connect

TENANT = "00000000-0000-4000-8000-00000000d001"
NACCOUNTS = 12
HOT = 0           # account 0 is hot
HISTORY = 1       # account 1 keeps history
LIMITED = (2, 3)  # debits must not exceed credits
SEEDS = [1, 2, 3, 4, 5]
# Limits and a rule with fixed ids (both databases), tight enough to refuse and flag now and then.
LIMITS = [
    ("00000000-0000-4000-8000-0000000d1101", "daily-out", "SELECT fincore.create_limit('daily-out', 1500, "
     "currency => 'USD', id => %s)"),
    ("00000000-0000-4000-8000-0000000d1102", "hourly-count", "SELECT fincore.create_limit('hourly-count', 12, "
     "metric => 'count', window_kind => 'trailing', window_seconds => 3600, direction => NULL, id => %s)"),
    ("00000000-0000-4000-8000-0000000d1103", "tenant-day", "SELECT fincore.create_limit('tenant-day', 20000, "
     "currency => 'USD', per => 'scope', id => %s)"),
    ("00000000-0000-4000-8000-0000000d1104", "many-payees", "SELECT fincore.create_rule('many-payees', "
     "'{\"aggregate\": \"distinct_counterparties\", \"of\": \"debit_account\", \"window_seconds\": 3600, "
     "\"op\": \"gt\", \"value\": 4}', 'flag', 'active', id => %s)"),
]
STEPS = 160


def acct(n):
    return str(uuid.UUID(int=(0xD00 << 64) + n + 1))


def make_database(name):
    with connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    with connect(name) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION fincore CASCADE")
        conn.execute("SELECT fincore.create_tenant('store', %s)", (TENANT,))
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
            conn.execute("SELECT fincore.set_ledger_events(true)")
            for n in range(NACCOUNTS):
                flags = ["hot"] if n == HOT else ["history"] if n == HISTORY else \
                    ["debits_must_not_exceed_credits"] if n in LIMITED else []
                conn.execute("SELECT fincore.create_account('USD', flags => %s, id => %s)", (flags, acct(n)))
            for lid, _, sql in LIMITS:
                conn.execute(sql, (lid,))


def drop_database(name):
    with connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def workload(seed):
    """The steps, as data: both stores run the same list."""
    rng = random.Random(seed)
    steps = []
    transfers = []   # labels of transfers that may be reversed
    holds = []       # labels of holds that may be posted or voided
    ids = []         # ids the caller named, for replays

    def pair():
        d, c = rng.sample(range(NACCOUNTS), 2)
        return d, c

    def new_label():
        return f"s{len(steps)}"

    for _ in range(STEPS):
        r = rng.random()
        label = new_label()
        if r < 0.30:
            d, c = pair()
            named = str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.3 else None
            if named:
                ids.append((named, d, c))
            steps.append(("transfer", label, d, c, rng.choice([1, 5, 50, 500]), named, rng.choice([0, 7]),
                          rng.choice([None, {"order": rng.randint(1, 99)}])))
            transfers.append(label)
        elif r < 0.38 and ids:
            named, d, c = rng.choice(ids)
            steps.append(("transfer", label, d, c, rng.choice([1, 5]), named, 0, None))   # a replay, or a conflict
        elif r < 0.50:
            d, c = pair()
            steps.append(("hold", label, d, c, rng.choice([10, 100]), rng.random() < 0.2))
            holds.append(label)
        elif r < 0.58 and holds:
            steps.append(("post", label, rng.choice(holds), rng.choice([None, 1, 5, 1000])))
        elif r < 0.64 and holds:
            steps.append(("void", label, rng.choice(holds)))
        elif r < 0.70 and transfers:
            steps.append(("reverse", label, rng.choice(transfers), rng.choice([None, 1, 2])))
        elif r < 0.95:
            items = []
            for k in range(rng.randint(1, 8)):
                kind = rng.random()
                linked = rng.random() < 0.3
                if kind < 0.6:
                    d, c = pair()
                    if rng.random() < 0.05:
                        c = NACCOUNTS + 5   # not found
                    named = str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.25 else None
                    items.append(dict(id=named, d=d, c=c, amount=rng.choice([1, 7, 70, 700]), linked=linked,
                                      pending=rng.random() < 0.2))
                elif kind < 0.8 and holds:
                    items.append(dict(post=rng.choice(holds), amount=rng.choice([None, 3]), linked=linked))
                elif holds:
                    items.append(dict(void=rng.choice(holds), linked=linked))
            if items:
                steps.append(("batch", label, items))
                for k, it in enumerate(items):
                    if "d" in it:
                        (holds if it["pending"] else transfers).append(f"{label}.{k}")
        else:
            steps.append(("maintain", label))
    return steps


class Run:
    """One database, one store; labels name the transfers it created."""

    def __init__(self, dbname, store):
        self.conn = connect(dbname, options=f"-c fincore.tenant={TENANT} -c fincore.ledger_store={store}")
        self.store = store
        self.label_of = {}   # uuid -> label
        self.id_of = {}      # label -> uuid
        self.direct_rows = 0
        self.conn.add_notice_handler(self.notice)
        if store != "sql":
            self.conn.execute("SET client_min_messages = debug1")

    def notice(self, diag):
        msg = diag.message_primary or ""
        if msg.startswith("ledger: direct store"):
            self.direct_rows += 1

    def name(self, label, tid):
        if tid is not None:
            self.label_of.setdefault(str(tid), label)
            self.id_of.setdefault(label, str(tid))

    def call(self, sql, params):
        try:
            return self.conn.execute(sql, params).fetchall()
        except psycopg.Error as e:
            return ("error", e.sqlstate)

    def run(self, step):
        op, label = step[0], step[1]
        if op == "transfer":
            _, _, d, c, amount, named, code, metadata = step
            out = self.call("SELECT id, result, kind, amount FROM fincore.transfer(%s, %s, %s, id => %s, code => %s, "
                            "metadata => %s::jsonb)",
                            (acct(d), acct(c), amount, named, code, json.dumps(metadata) if metadata else None))
        elif op == "hold":
            _, _, d, c, amount, short = step
            out = self.call("SELECT id, result, kind, amount FROM fincore.transfer(%s, %s, %s, pending => true, "
                            "timeout => %s::interval)", (acct(d), acct(c), amount, "1 millisecond" if short else None))
        elif op == "post":
            _, _, hold, amount = step
            out = self.call("SELECT id, result, kind, amount FROM fincore.post_pending(%s, %s)",
                            (self.id_of.get(hold, str(uuid.UUID(int=1))), amount))
        elif op == "void":
            out = self.call("SELECT id, result, kind, amount FROM fincore.void_pending(%s)",
                            (self.id_of.get(step[2], str(uuid.UUID(int=1))),))
        elif op == "reverse":
            _, _, t, amount = step
            out = self.call("SELECT id, result, kind, amount FROM fincore.reverse_transfer(%s, %s)",
                            (self.id_of.get(t, str(uuid.UUID(int=1))), amount))
        elif op == "batch":
            rows, params = [], []
            for it in step[2]:
                ref = lambda key: self.id_of.get(it[key], str(uuid.UUID(int=1))) if key in it else None
                rows.append("ROW(%s::uuid, %s::uuid, %s::uuid, %s::bigint, NULL, %s, NULL, %s::uuid, %s::uuid, "
                            "NULL, %s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
                            "::fincore.transfer_request")
                params += [it.get("id"), acct(it["d"]) if "d" in it else None, acct(it["c"]) if "c" in it else None,
                           it.get("amount"), it.get("pending"), ref("post"), ref("void"), it["linked"]]
            out = self.call("SELECT index, id, result FROM fincore.create_transfers(ARRAY[" + ", ".join(rows) + "])",
                            params)
            if not isinstance(out, tuple):
                for index, tid, result in out:
                    self.name(f"{label}.{index}", tid)   # a failed id too (failed_transfers)
                out = [(index, result) for index, _, result in out]
            return out
        else:
            time.sleep(0.01)   # the short holds have timed out
            self.conn.execute("SELECT fincore.expire_pending()")
            self.conn.execute("SELECT fincore.rollup_hot_accounts()")
            return "maintained"
        if isinstance(out, tuple):
            return out
        tid, result, kind, amount = out[0]
        if result == "created":
            self.name(label, tid)
        return (self.label_of.get(str(tid), "?"), result, kind, amount)

    def lab(self, tid):
        if tid is None:
            return None
        return self.label_of.get(str(tid), str(tid))

    def state(self):
        """Every ledger row of the tenant, ids as labels, times as differences."""
        q = lambda sql: self.conn.execute(sql).fetchall()
        transfers = q("SELECT id, debit_account_id, credit_account_id, amount, pending_amount, currency, code, kind, "
                      "pending_id, reversal_of, timeout, expires_at - created_at, metadata, flags FROM fincore.transfers")
        # An expiry's id is fincore's: it is named after its hold, resolved once.
        for t in transfers:
            if t[7] == "expire":
                self.label_of.setdefault(str(t[0]), "expire:" + self.lab(t[8]))
        transfers = sorted((self.lab(t[0]), str(t[1]), str(t[2]), t[3], t[4], t[5], t[6], t[7], self.lab(t[8]),
                            self.lab(t[9]), str(t[10]), str(t[11]), json.dumps(t[12]), t[13]) for t in transfers)
        accounts = q("SELECT id, status, debits_pending, debits_posted, credits_pending, credits_posted "
                     "FROM fincore.accounts ORDER BY id")
        history = [(str(a), self.lab(t), dp, dpo, cp, cpo) for a, t, dp, dpo, cp, cpo in
                   q("SELECT account_id, transfer_id, debits_pending, debits_posted, credits_pending, credits_posted "
                     "FROM fincore.account_history ORDER BY account_id, at, transfer_id")]
        deltas = sorted((str(a), self.lab(t), dp, dpo, cp, cpo) for a, t, dp, dpo, cp, cpo in
                        q("SELECT account_id, transfer_id, debits_pending, debits_posted, credits_pending, "
                          "credits_posted FROM fincore.account_deltas"))
        holds = sorted((self.lab(t), e) for t, e in
                       q("SELECT transfer_id, expires_at IS NOT NULL FROM fincore.pending_holds"))
        failed = sorted((self.lab(t), r) for t, r in q("SELECT id, result FROM fincore.failed_transfers"))
        events = []
        for topic, typ, agg, payload in q("SELECT topic, type, aggregateid, payload FROM fincore.outbox_stream "
                                          "ORDER BY seq"):
            p = {k: (self.lab(v) if k in ("id", "pending_id", "reversal_of", "transfer_id") else v)
                 for k, v in payload.items() if k not in ("created_at", "expires_at")}
            events.append((topic, typ, self.lab(agg), json.dumps(p, sort_keys=True)))
        verify = q("SELECT invariant, subject FROM fincore.verify()")
        # A trailing window's ring is placed by the clock, which differs between the runs: its total.
        counters = sorted((str(lid), str(subject), used, sum(ring or []), sorted(str(m) for m in members or []))
                          for lid, subject, used, ring, members in
                          q("SELECT limit_id, subject, used, ring, members FROM fincore.limit_counters"))
        decisions = sorted((self.lab(t), str(lid), str(rid), outcome, mode) for t, lid, rid, outcome, mode in
                           q("SELECT transfer_id, limit_id, rule_id, outcome, mode FROM fincore.decisions"))
        return dict(transfers=transfers, accounts=accounts, history=history, deltas=deltas, holds=holds,
                    failed=failed, events=sorted(events), verify=verify, counters=counters, decisions=decisions)


@pytest.fixture(scope="module")
def databases():
    names = ("fincore_it_store_sql", "fincore_it_store_direct")
    yield names
    for n in names:
        drop_database(n)


@pytest.mark.parametrize("seed", SEEDS)
def test_both_stores_write_the_same_ledger(databases, seed):
    for n in databases:
        make_database(n)
    sql, direct = Run(databases[0], "sql"), Run(databases[1], "auto")
    for i, step in enumerate(workload(seed)):
        a, b = sql.run(step), direct.run(step)
        assert a == b, f"seed {seed}, step {i} {step}: sql store {a}, direct store {b}"
    sa, sb = sql.state(), direct.state()
    for key in sa:
        assert sa[key] == sb[key], f"seed {seed}: {key} differ"
    assert sa["verify"] == [], sa["verify"]
    assert len(sa["transfers"]) > STEPS // 2
    assert len(sa["counters"]) > NACCOUNTS and sa["decisions"], "the limits and the rule took part"
    # The direct store did the writing on its side, and only there.
    assert direct.direct_rows > 0 and sql.direct_rows == 0
