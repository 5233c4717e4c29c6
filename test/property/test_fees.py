"""Fee properties: random schedules (every component type, conditions, limits,
rounding modes; 0-, 2-, 3- and 4-decimal currencies) and amounts, against the
Fraction-based reference in reference_fees.py.

- calculate_fee and fee_breakdown equal the reference exactly, and the
  breakdown sums to the fee;
- gross_up is sufficient (its remainder reaches net) and minimal (the
  reference's search, and for small fees every smaller charge tried).

Each Hypothesis example defines one schedule (a new code of a test tenant)
and evaluates a batch of cases against it in one round trip.
"""
import collections
import itertools
import json
import uuid

import pytest
from hypothesis import given, strategies as st

import reference_fees as rf
from reference import MODES, RefError, format_units

TENANT = "fee5fee5-0000-4000-8000-00000000f001"
CURRENCIES = [("JPY", 0), ("USD", 2), ("BHD", 3), ("CLF", 4)]
BATCH = 20

WHENS = [{"card": "international"}, {"card": "domestic"}, {"region": "eu"},
         {"card": "international", "region": "eu"}, {"tags": ["vip"]},
         {"risk": {"level": "high"}}, {"instant": True}]
CONTEXTS = [{}, {"card": "international"}, {"card": "domestic"}, {"region": "eu"},
            {"card": "international", "region": "eu", "tags": ["vip", "new"]},
            {"risk": {"level": "high", "score": 3}}, {"instant": True}, {"instant": 1},
            {"card": "international", "region": "us", "risk": {"level": "low"}}]

WRAPPERS = r"""
CREATE FUNCTION pg_temp.fc_fee(code text, a bigint, ctx jsonb) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE f bigint; lines text[];
BEGIN
    f := fincore.calculate_fee(code, a, ctx);
    SELECT coalesce(array_agg(b.component || '=' || b.amount ORDER BY b.n), '{}') INTO lines
      FROM fincore.fee_breakdown(code, a, ctx) WITH ORDINALITY AS b(component, amount, n);
    RETURN ARRAY['ok', f::text] || lines;
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;

CREATE FUNCTION pg_temp.fc_gross_up(code text, net bigint, ctx jsonb) RETURNS text[]
LANGUAGE plpgsql AS $$
BEGIN
    RETURN ARRAY['ok', fincore.gross_up(code, net, ctx)::text];
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;
"""


@pytest.fixture(scope="module")
def fees(fc):
    """The property harness, with a tenant of its own and the fee wrappers."""
    fc.rows("SELECT fincore.create_tenant('fee property tests', %s)", (TENANT,))
    fc.rows("SELECT set_config('request.jwt.claims', %s, false)", (json.dumps({"tenant_id": TENANT}),))
    with fc.conn.cursor() as cur:
        cur.execute(WRAPPERS)
    run = uuid.uuid4().hex[:8]         # codes are new in every run, whatever the database holds
    fc.fee_codes = (f"prop-{run}-{n}" for n in itertools.count(1))
    yield fc
    fc.rows("SELECT set_config('request.jwt.claims', '', false)")


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------

RAW = "#"          # marks a decimal written into the JSON text as a number


def decimal_text(mantissa, scale):
    if scale == 0:
        return str(mantissa)
    return f"{mantissa // 10 ** scale}.{mantissa % 10 ** scale:0{scale}d}"


@st.composite
def rates(draw, max_rate):
    """(exact decimal text, how to write it): up to 18 decimal places."""
    scale = draw(st.sampled_from([0, 1, 2, 3, 3, 4, 4, 5, 6, 6, 6, 7, 8, 10, 12, 18]))
    top = int(max_rate * 10 ** scale)
    mantissa = draw(st.one_of(st.integers(0, top), st.integers(0, top // 100),
                              st.sampled_from([0, top])))
    text = decimal_text(mantissa, scale)
    return draw(st.sampled_from([text, RAW + text + RAW]))


@st.composite
def amounts_in_rules(draw, code, exponent, lo, hi):
    """An amount of minor units, written as an integer or as amount text."""
    units = draw(st.integers(lo, hi))
    if draw(st.booleans()):
        return units, format_units(units, exponent) + " " + code
    return units, units


@st.composite
def tiers(draw, code, exponent, max_rate):
    n = draw(st.integers(1, 4))
    bounds = sorted(draw(st.sets(st.integers(0, 10 ** (exponent + 5)), min_size=n - 1, max_size=n - 1)))
    out, sent = [], []
    for i in range(n):
        tier, wire = {}, {}
        if i < n - 1:
            tier["up_to"] = bounds[i]
            wire["up_to"] = draw(st.sampled_from([bounds[i], format_units(bounds[i], exponent) + " " + code]))
        else:
            how = draw(st.sampled_from(["absent", "null", "inf"]))
            if how != "absent":
                wire["up_to"] = None if how == "null" else "inf"
        if draw(st.booleans()):
            r = draw(rates(max_rate))
            tier["rate"] = r.strip(RAW)
            wire["rate"] = r
        if draw(st.booleans()):
            units, w = draw(amounts_in_rules(code, exponent, 0, 10 ** (exponent + 2)))
            tier["flat"] = units
            wire["flat"] = w
        out.append(tier)
        sent.append(wire)
    return out, sent


@st.composite
def schedules(draw, max_rate, max_rated_components=4):
    """(currency, exponent, rounding, reference rules, JSON text sent to fincore)."""
    code, exponent = draw(st.sampled_from(CURRENCIES))
    rounding = draw(st.sampled_from(MODES))
    n = draw(st.integers(1, 4))
    components, wire_components, used = [], [], set()
    rated = 0
    for i in range(n):
        kind = draw(st.sampled_from(["flat", "percentage", "graduated", "volume"]))
        if kind != "flat":
            rated += 1
            if rated > max_rated_components:
                kind = "flat"
        component, wire = {"type": kind}, {"type": kind}
        if kind == "flat":
            units, w = draw(amounts_in_rules(code, exponent, 0, 10 ** (exponent + 2)))
            component["amount"], wire["amount"] = units, w
        elif kind == "percentage":
            r = draw(rates(max_rate))
            component["rate"], wire["rate"] = r.strip(RAW), r
        else:
            component["tiers"], wire["tiers"] = draw(tiers(code, exponent, max_rate))
        if kind in used or draw(st.integers(0, 3)) == 0:
            name = f"{kind}_{i}"
            component["name"] = wire["name"] = name
        used.add(component.get("name", kind))
        if draw(st.integers(0, 2)) == 0:
            when = draw(st.sampled_from(WHENS))
            component["when"] = wire["when"] = when
        components.append(component)
        wire_components.append(wire)
    rules = {"components": components}
    wire_rules = {"components": wire_components}
    limits = draw(st.sampled_from(["none", "minimum", "maximum", "both"]))
    if limits in ("minimum", "both"):
        units, w = draw(amounts_in_rules(code, exponent, 0, 10 ** (exponent + 2)))
        rules["minimum"], wire_rules["minimum"] = units, w
    if limits in ("maximum", "both"):
        lo = rules.get("minimum", 0)
        units, w = draw(amounts_in_rules(code, exponent, lo, lo + 10 ** (exponent + 4)))
        rules["maximum"], wire_rules["maximum"] = units, w
    text = json.dumps(wire_rules).replace('"' + RAW, "").replace(RAW + '"', "")
    return code, exponent, rounding, rules, text


def tier_bounds(rules):
    return sorted({t["up_to"] for c in rules["components"] for t in c.get("tiers", []) if "up_to" in t})


@st.composite
def amounts_for(draw, rules, exponent, top):
    """Amounts that matter for this schedule: around every tier bound, small, large."""
    bounds = tier_bounds(rules)
    choices = [st.integers(0, 10 ** (exponent + 3)), st.integers(0, top), st.sampled_from([0, 1, top])]
    if bounds:
        choices.append(st.builds(lambda b, d: max(0, b + d), st.sampled_from(bounds), st.integers(-1, 1)))
    return draw(st.one_of(*choices))


def define(fees, currency, rounding, text):
    code = next(fees.fee_codes)
    fees.rows("SELECT fincore.define_fee_schedule(%s, %s, %s::jsonb, '-infinity', NULL, %s)",
              (code, currency, text, rounding))
    return code


class Count:
    def __init__(self):
        self.cases = 0
        self.seen = collections.Counter()


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

def test_fee_and_breakdown_match_reference(fees):
    count = Count()

    @fees.settings(BATCH)
    @given(st.data())
    def prop(data):
        currency, exponent, rounding, rules, text = data.draw(schedules(max_rate=2))
        cases = data.draw(st.lists(st.tuples(amounts_for(rules, exponent, 10 ** 13),
                                             st.sampled_from(CONTEXTS)),
                                   min_size=BATCH, max_size=BATCH))
        code = define(fees, currency, rounding, text)
        got = fees.outcomes(
            "SELECT pg_temp.fc_fee(%s, a, c) FROM unnest(%s::bigint[], %s::jsonb[]) WITH ORDINALITY AS x(a, c, i) ORDER BY i",
            (code, [a for a, _ in cases], [json.dumps(c) for _, c in cases]))
        assert len(got) == len(cases)
        for (amount, context), out in zip(cases, got):
            case = f"{text} {rounding} {currency}: fee on {amount} with {context}"
            try:
                want = rf.breakdown(rules, rounding, amount, context)
            except RefError as e:
                assert not out.ok and out.sqlstate in e.sqlstates, f"{case}: expected {e.sqlstates}, got {out.raw}"
                count.seen[out.sqlstate] += 1
                continue
            assert out.ok, f"{case}: expected {want}, got {out.sqlstate} ({out.message})"
            fee = int(out.values[0])
            lines = [(s.rsplit("=", 1)[0], int(s.rsplit("=", 1)[1])) for s in out.values[1:]]
            assert lines == want, f"{case}: breakdown {lines}, reference {want}"
            assert fee == sum(v for _, v in want), f"{case}: fee {fee}, reference {sum(v for _, v in want)}"
            assert fee >= 0, f"{case}: negative fee {fee}"
            count.seen["ok"] += 1
            count.seen["limited" if any(n in ("minimum", "maximum") for n, _ in lines) else "unlimited"] += 1
            if len(lines) < len(rules["components"]):
                count.seen["condition_skipped"] += 1
        count.cases += len(cases)

    prop()
    assert count.cases >= fees.examples
    if fees.examples >= 5000:
        for kind in ("ok", "limited", "unlimited", "condition_skipped"):
            assert count.seen[kind] > 0, f"no case reached {kind}: {dict(count.seen)}"


@pytest.mark.parametrize("max_rate", [0.25, 0.33], ids=["rates up to 75%", "rates up to 99%"])
def test_gross_up_is_minimal_and_sufficient(fees, max_rate):
    """At up to 99% of the charge, fincore's search skips ahead on the fee's least growth (fees.c,
    fee_gross_up); the reference only takes the plain steps, so the two must still agree exactly."""
    count = Count()

    @fees.settings(BATCH)
    @given(st.data())
    def prop(data):
        # Marginal rates below 100% (at most three rated components at <= max_rate): gross-up exists.
        currency, exponent, rounding, rules, text = data.draw(schedules(max_rate=max_rate, max_rated_components=3))
        cases = data.draw(st.lists(st.tuples(amounts_for(rules, exponent, 10 ** 12),
                                             st.sampled_from(CONTEXTS)),
                                   min_size=BATCH, max_size=BATCH))
        code = define(fees, currency, rounding, text)
        got = fees.outcomes(
            "SELECT pg_temp.fc_gross_up(%s, n, c) FROM unnest(%s::bigint[], %s::jsonb[]) WITH ORDINALITY AS x(n, c, i) ORDER BY i",
            (code, [n for n, _ in cases], [json.dumps(c) for _, c in cases]))
        assert len(got) == len(cases)
        brute_forced = 0
        for (net, context), out in zip(cases, got):
            case = f"{text} {rounding} {currency}: gross_up({net}) with {context}"
            want = rf.gross_up(rules, rounding, net, context)
            assert out.ok, f"{case}: expected {want}, got {out.sqlstate} ({out.message})"
            charge = int(out.values[0])
            assert charge == want, f"{case}: {charge}, reference {want}"
            # sufficient, and the charge one less is not
            assert rf.remainder(rules, rounding, charge, context) >= net, f"{case}: {charge} is not enough"
            if charge > 0:
                assert rf.remainder(rules, rounding, charge - 1, context) < net, f"{case}: {charge - 1} is enough"
            # minimal: every smaller charge tried, when there are few
            if charge - net <= 2000 and brute_forced < 3:
                assert rf.gross_up_brute_force(rules, rounding, net, context, charge - net) == charge, case
                brute_forced += 1
                count.seen["brute_forced"] += 1
            count.seen["ok"] += 1
        count.cases += len(cases)

    prop()
    assert count.cases >= fees.examples
    if fees.examples >= 5000:
        assert count.seen["brute_forced"] > 0, dict(count.seen)
