"""Allocation properties: fincore.allocate(amount, ratios) and
fincore.allocate(amount, n) against the Fraction-based reference."""
import collections

from hypothesis import given, strategies as st

import reference as ref
from reference import INT64_MAX, INT64_MIN

CODES = ["JPY", "USD", "BHD", "CLF", "PT0", "PT18"]
BATCH = 25


def int64s():
    return st.one_of(
        st.integers(INT64_MIN, INT64_MAX),
        st.integers(-1000, 1000),
        st.integers(INT64_MIN, INT64_MIN + 1000),
        st.integers(INT64_MAX - 1000, INT64_MAX),
        st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX]),
    )


def ratio():
    return st.one_of(st.integers(0, 10), st.integers(0, 1000), st.integers(0, INT64_MAX),
                     st.sampled_from([0, 1, INT64_MAX]))


@st.composite
def ratios(draw):
    """A ratio list: mostly valid (some all zero), sometimes otherwise broken.

    Returns (ratios, two_dimensional)."""
    values = draw(st.one_of(st.lists(ratio(), min_size=1, max_size=8),
                            st.lists(ratio(), min_size=1, max_size=60)))
    damage = draw(st.sampled_from(["none"] * 12 + ["negative", "null", "empty", "2d"]))
    if damage == "negative":
        values[draw(st.integers(0, len(values) - 1))] = draw(st.integers(INT64_MIN, -1))
    elif damage == "null":
        values[draw(st.integers(0, len(values) - 1))] = None
    elif damage == "empty":
        values = []
    elif damage == "2d":
        return [values, values], True
    return values, False


def check_allocation(got, units, code, ratio_list, case):
    """The properties of a successful split, independent of the reference."""
    lower, currencies, parts = int(got.values[0]), got.values[1], [int(p) for p in got.values[2:]]
    assert lower == 1, f"{case}: array lower bound {lower}"
    assert len(parts) == len(ratio_list), f"{case}: {len(parts)} parts"
    assert currencies == ",".join([code] * len(parts)), f"{case}: currencies {currencies}"
    assert sum(parts) == units, f"{case}: parts {parts} sum to {sum(parts)}"
    total = sum(ratio_list)
    for part, r in zip(parts, ratio_list):
        share = abs(units) * r // total         # floor of the exact share, in magnitude
        assert abs(part) in (share, share + 1), f"{case}: part {part} vs exact share {share}+"
        assert part == 0 or (part < 0) == (units < 0), f"{case}: part {part} has the wrong sign"
        if r == 0:
            assert part == 0, f"{case}: a zero ratio got {part}"
    return parts


def test_allocate_ratios(fc, to_sql_array):
    seen = collections.Counter()
    cases_run = [0]
    case_strategy = st.tuples(int64s(), st.sampled_from(CODES), ratios())

    @fc.settings(BATCH)
    @given(st.lists(case_strategy, min_size=BATCH, max_size=BATCH))
    def prop(cases):
        got = fc.outcomes(
            "SELECT pg_temp.fc_allocate(u, c, r::bigint[]) "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[]) WITH ORDINALITY AS x(u, c, r, i) "
            "ORDER BY i",
            ([u for u, _, _ in cases], [c for _, c, _ in cases],
             [to_sql_array(r) for _, _, (r, _) in cases]))
        assert len(got) == len(cases)
        for (units, code, (ratio_list, two_d)), out in zip(cases, got):
            case = f"allocate(from_minor({units}, {code}), {to_sql_array(ratio_list)})"
            try:
                if two_d:
                    raise ref.RefError(ref.INVALID_ALLOCATION)
                want = ref.allocate(units, ratio_list)
            except ref.RefError as e:
                assert not out.ok and out.sqlstate in e.sqlstates, f"{case}: want ZF108, got {out}"
                seen[out.sqlstate] += 1
                continue
            assert out.ok, f"{case}: want {want}, got {out}"
            parts = check_allocation(out, units, code, ratio_list, case)
            assert parts == want, f"{case}: got {parts}, reference {want}"
            seen["ok"] += 1
            if sum(1 for r in ratio_list if r) > 1 and any(
                    abs(units) * r % sum(ratio_list) for r in ratio_list):
                seen["left over"] += 1
        cases_run[0] += len(cases)

    prop()
    assert cases_run[0] >= fc.examples
    if fc.examples >= 5000:
        assert seen["ok"] and seen["left over"] and seen["ZF108"], dict(seen)


def test_allocate_even_equals_unit_ratios(fc):
    """allocate(a, n) = allocate(a, [1]*n) = the reference; bad n is ZF108."""
    cases_run = [0]
    n_strategy = st.one_of(st.integers(1, 12), st.integers(1, 300),
                           st.integers(-(2 ** 31), 0),
                           st.integers(ref.ALLOCATE_MAX_PARTS + 1, 2 ** 31 - 1))
    case_strategy = st.tuples(int64s(), st.sampled_from(CODES), n_strategy)

    @fc.settings(BATCH)
    @given(st.lists(case_strategy, min_size=BATCH, max_size=BATCH))
    def prop(cases):
        rows = fc.rows(
            "SELECT pg_temp.fc_allocate_n(u, c, n), "
            "       CASE WHEN n BETWEEN 1 AND 1000000 "
            "            THEN pg_temp.fc_allocate(u, c, array_fill(1::bigint, ARRAY[n])) END "
            "FROM unnest(%s::bigint[], %s::text[], %s::int[]) WITH ORDINALITY AS x(u, c, n, i) "
            "ORDER BY i",
            ([u for u, _, _ in cases], [c for _, c, _ in cases], [n for _, _, n in cases]))
        assert len(rows) == len(cases)
        for (units, code, n), (by_n, by_ratios) in zip(cases, rows):
            case = f"allocate(from_minor({units}, {code}), {n})"
            if not 1 <= n <= ref.ALLOCATE_MAX_PARTS:
                assert by_n[0] == "err" and by_n[1] == ref.INVALID_ALLOCATION, f"{case}: {by_n}"
                continue
            assert by_n == by_ratios, f"{case}: {by_n} differs from unit ratios {by_ratios}"
            assert by_n[0] == "ok", f"{case}: {by_n}"
            parts = [int(p) for p in by_n[3:]]
            assert parts == ref.allocate_even(units, n), f"{case}: {parts}"
            # An even split: earlier parts take the odd units.
            assert parts == sorted(parts, key=abs, reverse=True), f"{case}: {parts}"
        cases_run[0] += len(cases)

    prop()
    assert cases_run[0] >= fc.examples


def test_allocate_million_parts(fc):
    """The largest allowed even split, checked in SQL (1,000,000 parts)."""
    units = 1234567
    count, total, twos, ones = fc.rows(
        "SELECT count(*), fincore.minor_units(fincore.sum(p)), "
        "       count(*) FILTER (WHERE fincore.minor_units(p) = 2 AND i <= 234567), "
        "       count(*) FILTER (WHERE fincore.minor_units(p) = 1 AND i > 234567) "
        "FROM unnest(fincore.allocate(fincore.from_minor(%s, 'USD'), 1000000)) "
        "     WITH ORDINALITY AS t(p, i)", (units,))[0]
    assert (count, total, twos, ones) == (1000000, units, 234567, 1000000 - 234567)
    for sql in ("SELECT pg_temp.fc_allocate_n(%s, 'USD', 1000001)",
                "SELECT pg_temp.fc_allocate(%s, 'USD', array_fill(1::bigint, ARRAY[1000001]))"):
        (out,) = fc.outcomes(sql, (units,))
        assert not out.ok and out.sqlstate == ref.INVALID_ALLOCATION, f"{sql}: {out}"


def test_reference_allocate_examples():
    """The reference itself on hand-worked cases (so the oracle can fail too)."""
    assert ref.allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert ref.allocate(-100, [1, 1, 1]) == [-34, -33, -33]
    assert ref.allocate(5, [0, 1, 0, 1]) == [0, 3, 0, 2]
    # shares 1.5, 3.5 (remainders .5, .5): tie to the earlier position
    assert ref.allocate(5, [3, 7]) == [2, 3]
    # shares 0.3, 1.7: remainders .3 < .7
    assert ref.allocate(2, [3, 17]) == [0, 2]
    assert ref.allocate(INT64_MIN, [1, 1]) == [-(2 ** 62), -(2 ** 62)]
    assert ref.allocate(7, [INT64_MAX, INT64_MAX, 1]) == [4, 3, 0]
    for bad in ([], [0, 0], [1, -1], [1, None]):
        try:
            ref.allocate(10, bad)
        except ref.RefError as e:
            assert e.sqlstates == {ref.INVALID_ALLOCATION}
        else:
            raise AssertionError(f"reference accepted {bad}")
    assert sum(ref.allocate(10 ** 18 + 1, [1, 2, 3])) == 10 ** 18 + 1
