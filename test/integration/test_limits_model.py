"""Limits against a reference model (docs/limits.md).

Hypothesis draws a tenant's limits (amount or count; day, week, month, year,
lifetime, trailing or per-transaction windows; five time zones, DST included;
per account or per scope; direction and code filters) and a sequence of
transfers, holds, posts, voids and reversals whose clock moves forward by
seconds to weeks, across window boundaries.  The transfers are imported, each
at its own timestamp, so the clock is the test's.  The model below is written
apart from the C: it keeps every counted transfer as an event and sums the
events whose window is the one in question.  Every result (ok or
exceeds_limit) must be the model's, and at the end every counter must hold
what the model says it has used.

Set-up only a test may do: the accounts and limits are back-dated (as the
owner, with the accounts' immutability trigger off in this test's database),
so that imports from 2025 postdate them.
"""
import datetime as dt
import math
import uuid
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import connect

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]
NIL = uuid.UUID(int=0)
START = dt.datetime(2025, 1, 1, 3, 0, tzinfo=dt.timezone.utc)


# ---- the model ----------------------------------------------------------------------------

def usecs(t):
    d = t - PG_EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def window_key(lim, t):
    """Which window of the limit t falls in (events in the same one are summed)."""
    kind = lim["window"]
    if kind == "lifetime":
        return 0
    if kind == "trailing":
        width = math.ceil(lim["seconds"] * 1_000_000 / 59)
        return usecs(t) // width
    local = t.astimezone(ZoneInfo(lim["tz"]))
    day = local.date()
    if kind == "day":
        return day
    if kind == "week":
        return day - dt.timedelta(days=day.weekday())
    if kind == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def in_window(lim, ev_t, t):
    if lim["window"] == "trailing":
        b, e = window_key(lim, t), window_key(lim, ev_t)
        return b - 60 < e <= b
    return window_key(lim, ev_t) == window_key(lim, t)


class Model:
    def __init__(self, limits, accounts):
        self.limits = limits
        self.accounts = accounts          # id -> code
        self.events = []                  # dicts: limit, subject, t, amount, count, transfer

    def legs(self, lim, debit, credit, code):
        """The subjects a transfer charges for a limit (each once)."""
        subjects = []
        for side, acc in (("debit", debit), ("credit", credit)):
            if lim["direction"] not in (None, side):
                continue
            if lim["scope"] == "account" and acc != lim["account"]:
                continue
            if lim["codes"] is not None and code not in lim["codes"]:
                continue
            subject = acc if lim["per"] == "account" else NIL
            if subject not in subjects:
                subjects.append(subject)
        return subjects

    def used(self, lim, subject, t):
        key = "count" if lim["metric"] == "count" else "amount"
        return sum(e[key] for e in self.events
                   if e["limit"] is lim and e["subject"] == subject and in_window(lim, e["t"], t))

    def create(self, tid, debit, credit, amount, code, t):
        charges = []
        for lim in self.limits:
            for subject in self.legs(lim, debit, credit, code):
                if lim["window"] == "transaction":
                    if amount > lim["max"]:
                        return "exceeds_limit"
                    continue
                value = 1 if lim["metric"] == "count" else amount
                if self.used(lim, subject, t) + value > lim["max"]:
                    return "exceeds_limit"
                charges.append((lim, subject))
        for lim, subject in charges:
            self.events.append(dict(limit=lim, subject=subject, t=t, amount=amount, count=1, transfer=tid))
        return "ok"

    def release(self, tid, amount, count, reversal=False):
        for e in self.events:
            if e["transfer"] == tid and (not reversal or (e["limit"]["restore"] and e["limit"]["metric"] == "amount")):
                e["amount"] = max(0, e["amount"] - amount)
                if not reversal:
                    e["count"] -= count


# ---- the database -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conn(database):
    with connect(database) as c:
        c.execute("SET client_min_messages = warning")
        c.execute("ALTER TABLE fincore.accounts DISABLE TRIGGER accounts_immutable")
        yield c


REQUEST = ("ROW(%s::uuid, %s::uuid, %s::uuid, %s::bigint, %s::int, %s::boolean, NULL, %s::uuid, %s::uuid, %s::uuid, "
           "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true, %s::timestamptz)::fincore.transfer_request")


def submit(conn, tid, debit=None, credit=None, amount=None, code=0, pending=False, post=None, void=None,
           reverse=None, t=None):
    row = conn.execute(f"SELECT result FROM fincore.create_transfers(ARRAY[{REQUEST}])",
                       (str(tid), debit and str(debit), credit and str(credit), amount, code, pending,
                        post and str(post), void and str(void), reverse and str(reverse), t)).fetchone()
    return row[0]


limit_st = st.fixed_dictionaries({
    "metric": st.sampled_from(["amount", "count"]),
    "window": st.sampled_from(["day", "week", "month", "year", "lifetime", "trailing", "transaction"]),
    "seconds": st.sampled_from([10, 3600, 86400, 7 * 86400]),
    "tz": st.sampled_from(ZONES),
    "scope": st.sampled_from(["tenant", "account"]),
    "account": st.integers(0, 2),
    "per": st.sampled_from(["account", "scope"]),
    "direction": st.sampled_from([None, "debit", "credit"]),
    "codes": st.sampled_from([None, [1], [1, 2]]),
    "restore": st.booleans(),
})

STEPS = [dt.timedelta(seconds=1), dt.timedelta(seconds=3), dt.timedelta(seconds=7), dt.timedelta(seconds=10), dt.timedelta(minutes=1), dt.timedelta(hours=1),
         dt.timedelta(hours=5), dt.timedelta(days=1), dt.timedelta(days=3), dt.timedelta(days=17)]

op_st = st.tuples(st.sampled_from(["transfer", "transfer", "hold", "post", "void", "reverse"]),
                  st.integers(0, 2), st.integers(0, 2), st.integers(1, 60), st.integers(0, 2),
                  st.sampled_from(STEPS), st.integers(0, 999_999), st.integers(0, 10_000))


@settings(max_examples=int(__import__("os").environ.get("FINCORE_LIMIT_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(limits=st.lists(limit_st, min_size=1, max_size=4), ops=st.lists(op_st, min_size=5, max_size=40),
       maxes=st.lists(st.integers(0, 150), min_size=4, max_size=4))
def test_limits_match_the_model(conn, limits, ops, maxes):
    tenant = uuid.uuid4()
    conn.execute("SELECT fincore.create_tenant(%s, %s)", (f"model {tenant}", tenant))
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (f'{{"tenant_id":"{tenant}"}}',))
    accounts = [uuid.uuid4() for _ in range(3)]
    for i, a in enumerate(accounts):
        conn.execute("SELECT fincore.create_account('USD', %s, id => %s)", (i % 2 + 1, a))
    conn.execute("UPDATE fincore.accounts SET created_at = '2024-01-01' WHERE tenant_id = %s", (tenant,))
    for i, lim in enumerate(limits):
        if lim["window"] == "transaction":
            lim["metric"], lim["per"] = "amount", "account"
        lim["max"] = maxes[i] if lim["metric"] == "amount" else maxes[i] % 5
        lim["account"] = accounts[lim["account"]]
        lim["id"] = conn.execute(
            "SELECT fincore.create_limit(%s, %s, metric => %s, window_kind => %s, scope => %s, account_id => %s, "
            "per => %s, currency => %s, direction => %s, transfer_codes => %s, window_seconds => %s, "
            "time_zone => %s, restore_on_reversal => %s)",
            (f"l{i}", lim["max"], lim["metric"], lim["window"], lim["scope"],
             lim["account"] if lim["scope"] == "account" else None, lim["per"],
             "USD" if lim["metric"] == "amount" else None, lim["direction"], lim["codes"],
             lim["seconds"] if lim["window"] == "trailing" else None, lim["tz"], lim["restore"])).fetchone()[0]
    conn.execute("UPDATE fincore.limits SET counting_since = '2024-01-01' WHERE tenant_id = %s", (tenant,))
    model = Model(limits, {a: i % 2 + 1 for i, a in enumerate(accounts)})

    t = START
    holds = {}        # open holds: id -> (debit, credit, amount)
    posted = {}       # reversible transfers: id -> amount left
    for kind, d, c, amount, code, step, micro, pick in ops:
        t = t + step + dt.timedelta(microseconds=micro)
        tid = uuid.uuid4()
        if d == c:
            c = (d + 1) % 3
        debit, credit = accounts[d], accounts[c]
        if kind in ("transfer", "hold"):
            got = submit(conn, tid, debit, credit, amount, code, pending=kind == "hold", t=t)
            want = model.create(tid, debit, credit, amount, code, t)
            if want == "ok":
                (holds.__setitem__(tid, (debit, credit, amount)) if kind == "hold" else posted.__setitem__(tid, amount))
        elif kind in ("post", "void") and holds:
            hid = sorted(holds)[pick % len(holds)]
            _, _, held = holds.pop(hid)
            if kind == "post":
                part = 1 + pick % held
                got = submit(conn, tid, amount=part, post=hid, t=t)
                want = "ok"
                model.release(hid, held - part, 0)
                posted[tid] = part
            else:
                got = submit(conn, tid, void=hid, t=t)
                want = "ok"
                model.release(hid, held, 1)
        elif kind == "reverse" and posted:
            rid = sorted(posted)[pick % len(posted)]
            part = 1 + pick % posted[rid]
            got = submit(conn, tid, amount=part, reverse=rid, t=t)
            want = "ok"
            # A post's amount was counted by its hold: the hold's events give it back.
            model.release(rid, part, 0, reversal=True)
            posted[rid] -= part
            if posted[rid] == 0:
                del posted[rid]
        else:
            continue
        assert got == want, (kind, got, want, t)

    for lim in limits:
        if lim["window"] == "transaction":
            continue
        subjects = accounts if lim["per"] == "account" else [NIL]
        for s in subjects:
            row = conn.execute(
                "SELECT coalesce((SELECT fincore.limit_used(l.window_kind, l.window_seconds, l.time_zone, "
                "       c.window_start, c.used, c.ring, c.ring_head, %s) "
                "  FROM fincore.limits l JOIN fincore.limit_counters c ON c.tenant_id = l.tenant_id "
                "   AND c.limit_id = l.id WHERE l.id = %s AND c.subject = %s), 0)",
                (t, lim["id"], s)).fetchone()
            assert row[0] == model.used(lim, s, t), (lim["window"], lim["metric"], s)
    conn.execute("SELECT set_config('request.jwt.claims', '', false)")
