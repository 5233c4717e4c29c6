"""Rules against a reference model (docs/limits.md, "Rules").

Hypothesis draws conditions of the rule language (all / any / not over every kind of field and
operator, metadata of every JSON type, local hours and weekdays in five time zones, counts and
sums of an account's transfers in trailing and calendar windows, and its distinct counterparties)
and a
sequence of transfers and holds at moving times with random metadata.  The rules run in shadow
mode: every transfer must be created (shadow never changes an outcome), every rule's decisions
must be exactly the transfers the model says its condition meets, and backtest_rule over the same
period must find exactly those too (what a shadow rule records is what a backtest finds).  Then
one rule goes active and rejects: each new transfer is refused exactly when the model says so.

Set-up only a test may do: the accounts are back-dated so that imports from 2025 postdate them.
"""
import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import connect

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]
START = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
ACCOUNT_CODES = [1, 2, 3]
COUNTRIES = ["DE", "FR", "KP", "US"]


# ---- the model --------------------------------------------------------------------------

def fact(field, t, tz):
    if field == "local_hour":
        return t["at"].astimezone(ZoneInfo(tz)).hour
    if field == "local_weekday":
        return t["at"].astimezone(ZoneInfo(tz)).isoweekday()
    return t[field]


def compare(a, op, b):
    return {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]


def comparable(member, value):
    """JSON types: a string with strings, a number with numbers, a boolean with booleans."""
    if isinstance(member, bool) or isinstance(value, bool):
        return isinstance(member, bool) and isinstance(value, bool)
    if isinstance(member, str) or isinstance(value, str):
        return isinstance(member, str) and isinstance(value, str)
    return True


PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def bucket(at, seconds):
    d = at - PG_EPOCH
    return ((d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds) // math.ceil(seconds * 1_000_000 / 59)


def calendar(at, window, tz):
    day = at.astimezone(ZoneInfo(tz)).date()
    return {"day": day, "week": day - dt.timedelta(days=day.weekday()), "month": day.replace(day=1),
            "year": day.replace(month=1, day=1)}[window]


def aggregate(cond, t, tz):
    """The count or sum of the transfers made with t's account on that side in the window, t included."""
    side = "debit" if cond["of"] == "debit_account" else "credit"
    if "window" in cond:
        w = calendar(t["at"], cond["window"], tz)
        made = [s for s in t["history"] + [t] if s[side] == t[side] and calendar(s["at"], cond["window"], tz) == w]
    else:
        b = bucket(t["at"], cond["window_seconds"])
        made = [s for s in t["history"] + [t] if s[side] == t[side]
                and b - 60 < bucket(s["at"], cond["window_seconds"]) <= b]
    if cond["aggregate"] == "distinct_counterparties":
        return len({s["credit" if side == "debit" else "debit"] for s in made})
    return sum(s["amount"] for s in made) if cond["aggregate"] == "sum" else len(made)


def meets(cond, t, tz):
    if "aggregate" in cond:
        return compare(aggregate(cond, t, tz), cond["op"], cond["value"])
    if "all" in cond:
        return all(meets(c, t, tz) for c in cond["all"])
    if "any" in cond:
        return any(meets(c, t, tz) for c in cond["any"])
    if "not" in cond:
        return not meets(cond["not"], t, tz)
    field, op, value = cond["field"], cond["op"], cond["value"]
    if field.startswith("metadata."):
        key = field[len("metadata."):]
        if key not in t["metadata"]:
            return False
        member = t["metadata"][key]
        values = value if op in ("in", "not_in") else [value]
        if not any(comparable(member, v) for v in values):
            return False
        conv = (lambda x: Decimal(str(x))) if not isinstance(member, (str, bool)) else (lambda x: x)
        if op in ("in", "not_in"):
            found = any(comparable(member, v) and conv(member) == conv(v) for v in values)
            return found if op == "in" else not found
        return compare(conv(member), op, conv(value))
    x = fact(field, t, tz)
    if op == "in":
        return x in value
    if op == "not_in":
        return x not in value
    return compare(x, op, value)


# ---- conditions -------------------------------------------------------------------------

INT_FIELDS = {"amount": st.integers(0, 300), "code": st.integers(0, 3), "debit_code": st.sampled_from(ACCOUNT_CODES),
              "credit_code": st.sampled_from(ACCOUNT_CODES), "local_hour": st.integers(0, 23),
              "local_weekday": st.integers(1, 7)}


@st.composite
def comparison(draw):
    kind = draw(st.sampled_from(["int", "int", "kind", "country", "score", "vip"]))
    if kind == "int":
        field = draw(st.sampled_from(sorted(INT_FIELDS)))
        op = draw(st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in"]))
        gen = INT_FIELDS[field]
    elif kind == "kind":
        field, op, gen = "kind", draw(st.sampled_from(["eq", "ne", "in", "not_in"])), st.sampled_from(["posted", "pending"])
    elif kind == "country":
        field, op = "metadata.country", draw(st.sampled_from(["eq", "ne", "in", "not_in"]))
        gen = st.sampled_from(COUNTRIES)
    elif kind == "score":
        field, op = "metadata.score", draw(st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in"]))
        gen = st.sampled_from([0, 1, 0.5, 0.25, 2])
    else:
        field, op, gen = "metadata.vip", draw(st.sampled_from(["eq", "ne"])), st.booleans()
    value = draw(st.lists(gen, min_size=1, max_size=3)) if op in ("in", "not_in") else draw(gen)
    return {"field": field, "op": op, "value": value}


calendar_aggregate_st = st.fixed_dictionaries({
    "aggregate": st.sampled_from(["count", "sum"]), "of": st.sampled_from(["debit_account", "credit_account"]),
    "window": st.sampled_from(["day", "week", "month", "year"]),
    "op": st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"]), "value": st.one_of(st.integers(0, 3), st.integers(0, 600))})

aggregate_st = st.fixed_dictionaries({
    "aggregate": st.sampled_from(["count", "sum", "distinct_counterparties"]), "of": st.sampled_from(["debit_account", "credit_account"]),
    "window_seconds": st.sampled_from([10, 3600, 86400]), "op": st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"]),
    "value": st.one_of(st.integers(0, 3), st.integers(0, 600))})

conditions = st.recursive(st.one_of(comparison(), comparison(), aggregate_st, calendar_aggregate_st), lambda inner: st.one_of(
    st.fixed_dictionaries({"all": st.lists(inner, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"any": st.lists(inner, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"not": inner})), max_leaves=6)

metadata = st.fixed_dictionaries({}, optional={
    "country": st.one_of(st.sampled_from(COUNTRIES), st.integers(0, 3)),
    "score": st.one_of(st.sampled_from([0, 1, 0.5, 0.25, 2, 0.75]), st.sampled_from(["high", "0.5"])),
    "vip": st.one_of(st.booleans(), st.just("yes"))})

transfer_st = st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 300), st.integers(0, 3), st.booleans(),
                        metadata, st.sampled_from([1, 5, 9, 60, 600, 3000, 4 * 3600, 30 * 3600, 10 * 86400]))


# ---- the database -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conn(database):
    with connect(database) as c:
        c.execute("SET client_min_messages = warning")
        c.execute("ALTER TABLE fincore.accounts DISABLE TRIGGER accounts_immutable")
        yield c


def make_tenant(conn):
    tenant = uuid.uuid4()
    conn.execute("SELECT fincore.create_tenant(%s, %s)", (f"rules {tenant}", tenant))
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (json.dumps({"tenant_id": str(tenant)}),))
    accounts = []
    for code in ACCOUNT_CODES:
        a = uuid.uuid4()
        conn.execute("SELECT fincore.create_account('USD', %s, id => %s)", (code, a))
        accounts.append((a, code))
    conn.execute("UPDATE fincore.accounts SET created_at = '2024-01-01' WHERE tenant_id = %s", (tenant,))
    return tenant, accounts


def run(conn, accounts, spec, at, history):
    d, c, amount, code, pending, meta, _ = spec
    if d == c:
        c = (d + 1) % 3
    tid = uuid.uuid4()
    t = {"id": tid, "amount": amount, "code": code, "kind": "pending" if pending else "posted",
         "debit_code": accounts[d][1], "credit_code": accounts[c][1], "metadata": meta, "at": at,
         "debit": accounts[d][0], "credit": accounts[c][0], "history": list(history)}
    try:
        result = conn.execute(
            "SELECT (fincore.transfer(%s, %s, %s, id => %s, code => %s, pending => %s, metadata => %s::jsonb, "
            "imported => true, \"timestamp\" => %s)).result",
            (accounts[d][0], accounts[c][0], amount, tid, code, pending, json.dumps(meta), at)).fetchone()[0]
    except psycopg.Error as e:
        result = e.sqlstate
    return t, result


@settings(max_examples=int(__import__("os").environ.get("FINCORE_RULE_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rules=st.lists(st.tuples(conditions, st.sampled_from(ZONES)), min_size=1, max_size=3),
       transfers=st.lists(transfer_st, min_size=1, max_size=25),
       later=st.lists(transfer_st, min_size=1, max_size=10))
def test_rules_match_the_model(conn, rules, transfers, later):
    tenant, accounts = make_tenant(conn)
    ids = []
    for i, (cond, tz) in enumerate(rules):
        ids.append(conn.execute("SELECT fincore.create_rule(%s, %s::jsonb, 'reject', 'shadow', %s)",
                                (f"r{i}", json.dumps(cond), tz)).fetchone()[0])

    at, made = START, []
    for spec in transfers:
        at = at + dt.timedelta(seconds=spec[6])
        t, result = run(conn, accounts, spec, at, made)
        assert result == "created", ("shadow rules changed an outcome", result)
        made.append(t)
    end = at + dt.timedelta(seconds=1)

    for rid, (cond, tz) in zip(ids, rules):
        want = {t["id"] for t in made if meets(cond, t, tz)}
        recorded = {r[0] for r in conn.execute(
            "SELECT transfer_id FROM fincore.decisions WHERE tenant_id = %s AND rule_id = %s AND mode = 'shadow'",
            (tenant, rid)).fetchall()}
        assert recorded == want, ("shadow decisions", cond, tz)
        found = {r[0] for r in conn.execute("SELECT transfer_id FROM fincore.backtest_rule(%s::jsonb, %s, %s, %s)",
                                            (json.dumps(cond), START, end, tz)).fetchall()}
        assert found == want, ("backtest", cond, tz)

    # The first rule goes active: each later transfer is refused exactly when the model says so.
    cond, tz = rules[0]
    conn.execute("SELECT fincore.update_rule(%s, mode => 'active')", (ids[0],))
    for spec in later:
        at = at + dt.timedelta(seconds=spec[6])
        t, result = run(conn, accounts, spec, at, made)
        assert result == ("ZF334" if meets(cond, t, tz) else "created"), (cond, tz, t)
        if result == "created":
            made.append(t)
    conn.execute("SELECT set_config('request.jwt.claims', '', false)")


def test_calendar_aggregates_follow_the_rule_time_zone(conn):
    """A weekly count in Berlin time: Saturday and Sunday 23:30 are one week, Monday 00:30 the next."""
    tenant, accounts = make_tenant(conn)
    cond = {"aggregate": "count", "of": "debit_account", "window": "week", "op": "gt", "value": 1}
    rid = conn.execute("SELECT fincore.create_rule('weekly', %s::jsonb, 'reject', 'shadow', 'Europe/Berlin')",
                       (json.dumps(cond),)).fetchone()[0]
    berlin = ZoneInfo("Europe/Berlin")
    made = []
    for local in (dt.datetime(2025, 3, 8, 12, 0), dt.datetime(2025, 3, 9, 23, 30), dt.datetime(2025, 3, 10, 0, 30)):
        at = local.replace(tzinfo=berlin)
        t, result = run(conn, accounts, (0, 1, 10, 0, False, {}, 0), at, made)
        assert result == "created"
        made.append(t)
    recorded = [r[0] for r in conn.execute(
        "SELECT transfer_id FROM fincore.decisions WHERE tenant_id = %s AND rule_id = %s", (tenant, rid)).fetchall()]
    assert recorded == [made[1]["id"]]
    assert [t["id"] for t in made if meets(cond, t, "Europe/Berlin")] == recorded
    conn.execute("SELECT set_config('request.jwt.claims', '', false)")
