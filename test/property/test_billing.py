"""Billing arithmetic against a Fraction-based reference (docs/billing.md).

- fincore.billing_period: random anchors (the 28th to the 31st and Feb 29 included), units,
  counts and instants, before and after the anchor; the reference steps months from the anchor
  with the day clamped to the month's last, in UTC.
- fincore.proration: random histories of up to 10 changes in one period, each change crediting
  what the previous one billed for the rest of the period; the reference computes each credit
  and debit as an exact Fraction rounded once; every credit is at most what was billed.
"""
import calendar
import datetime as dt
import random
from fractions import Fraction

from hypothesis import given, strategies as st

import reference as ref

UTC = dt.timezone.utc
EPOCH = dt.datetime(2000, 1, 1, tzinfo=UTC)
UNITS = ["day", "week", "month", "year"]
MODES = ["half_even", "half_up", "half_down", "up", "down", "ceiling", "floor"]
BATCH = 200


def boundary(anchor, unit, count, n):
    """The reference: anchor + n * count units, months and years clamped from the anchor."""
    if unit == "day":
        return anchor + dt.timedelta(days=n * count)
    if unit == "week":
        return anchor + dt.timedelta(weeks=n * count)
    months = n * count * (12 if unit == "year" else 1)
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def period(anchor, unit, count, at):
    """The n with boundary(n) <= at < boundary(n + 1): a guess from the calendar, then steps."""
    if unit in ("day", "week"):
        length = dt.timedelta(days=count * (1 if unit == "day" else 7))
        n = (at - anchor) // length
    else:
        months = (at.year * 12 + at.month) - (anchor.year * 12 + anchor.month)
        n = months // (count * (12 if unit == "year" else 1))
    while boundary(anchor, unit, count, n) > at:
        n -= 1
    while boundary(anchor, unit, count, n + 1) <= at:
        n += 1
    return n, boundary(anchor, unit, count, n), boundary(anchor, unit, count, n + 1)


def seconds(t):
    return int((t - EPOCH).total_seconds() // 1)


def fraction(amount, start, end, frm, to, mode):
    whole, part = seconds(end) - seconds(start), seconds(to) - seconds(frm)
    if whole <= 0 or part <= 0:
        return 0
    if part >= whole:
        return amount
    return ref.round_fraction(Fraction(amount * part, whole), mode)


@st.composite
def instants(draw):
    day = draw(st.sampled_from([1, 15, 28, 29, 30, 31]))
    year = draw(st.sampled_from([2023, 2024, 2100, 2000, 2025]))
    month = draw(st.integers(1, 12))
    day = min(day, calendar.monthrange(year, month)[1])
    return dt.datetime(year, month, day, draw(st.integers(0, 23)), draw(st.integers(0, 59)),
                       draw(st.integers(0, 59)), draw(st.sampled_from([0, 500000])), tzinfo=UTC)


@st.composite
def period_cases(draw):
    anchor = draw(instants())
    unit = draw(st.sampled_from(UNITS))
    count = draw(st.sampled_from([1, 1, 2, 3, 6, 12]))
    at = anchor + dt.timedelta(seconds=draw(st.integers(-3 * 10**8, 3 * 10**8)))
    return anchor, unit, count, at


def test_billing_periods(fc):
    @fc.settings(BATCH)
    @given(st.lists(period_cases(), min_size=BATCH, max_size=BATCH))
    def check(cases):
        rows = fc.rows("SELECT p.period_index, p.period_start, p.period_end "
                       "FROM unnest(%s::timestamptz[], %s::text[], %s::int[], %s::timestamptz[]) "
                       "WITH ORDINALITY AS c(anchor, unit, count, at, i) "
                       "CROSS JOIN LATERAL fincore.billing_period(c.anchor, c.unit, c.count, c.at) p ORDER BY c.i",
                       ([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases], [c[3] for c in cases]))
        for case, row in zip(cases, rows):
            n, start, end = period(*case)
            assert (row[0], row[1], row[2]) == (n, start, end), case
            check.evaluated += 1
    check.evaluated = 0
    check()
    assert check.evaluated >= fc.examples


@st.composite
def histories(draw):
    """A period and up to 10 changes in it: (start, end, first price, [(at, new price)], mode)."""
    start = draw(instants())
    unit = draw(st.sampled_from(["day", "week", "month", "year"]))
    end = boundary(start, unit, 1, 1)
    length = int((end - start).total_seconds())
    offsets = sorted(draw(st.lists(st.integers(0, length), min_size=1, max_size=10)))
    prices = st.one_of(st.integers(0, 10**6), st.integers(0, 10**15), st.sampled_from([0, 1, 999, 1000]))
    changes = [(start + dt.timedelta(seconds=o, microseconds=draw(st.sampled_from([0, 1, 999999]))),
                draw(prices)) for o in offsets]
    changes = sorted((min(at, end), p) for at, p in changes)
    return start, end, draw(prices), changes, draw(st.sampled_from(MODES))


def test_proration_histories(fc):
    """Each change credits what the last one billed for the rest of the period: exact, never more."""
    @fc.settings(BATCH // 10)
    @given(st.lists(histories(), min_size=BATCH // 10, max_size=BATCH // 10))
    def check(hs):
        calls = []     # (billed, billed_from, start, end, new, at, mode) in history order
        for start, end, price, changes, mode in hs:
            billed, billed_from = price, start
            for at, new in changes:
                calls.append((billed, billed_from, start, end, new, at, mode))
                billed = fraction(new, start, end, at, end, mode)
                billed_from = at
                if billed_from >= end:
                    break
        calls = [c for c in calls if c[1] < c[3]]
        rows = fc.rows("SELECT p.credit, p.debit FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], "
                       "%s::timestamptz[], %s::bigint[], %s::timestamptz[], %s::text[]) WITH ORDINALITY "
                       "AS c(billed, billed_from, ps, pe, new, at, mode, i) "
                       "CROSS JOIN LATERAL fincore.proration(c.billed, c.billed_from, c.ps, c.pe, c.new, c.at, c.mode) p "
                       "ORDER BY c.i", tuple(list(x) for x in zip(*calls)) if calls else ([],) * 7)
        for c, (credit, debit) in zip(calls, rows):
            billed, billed_from, start, end, new, at, mode = c
            assert credit == fraction(billed, billed_from, end, at, end, mode), c
            assert debit == fraction(new, start, end, at, end, mode), c
            assert 0 <= credit <= billed, c
            check.evaluated += 1
    check.evaluated = 0
    check()
    assert check.evaluated >= fc.examples // 10
