"""Rounding properties: fincore.div_round, fincore.div, fincore.multiply and
fincore.from_numeric against the Fraction-based reference, for every mode."""
import collections
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, strategies as st

import reference as ref
from reference import INT64_MAX, INT64_MIN, MODES

# Modes as sent to SQL; None calls the function without a mode (its default).
MODES_AND_DEFAULT = list(MODES) + [None]
CODES = ["JPY", "USD", "BHD", "CLF", "PT0", "PT7", "PT18"]

BATCH = 40


def decimal_of(mantissa, scale):
    """mantissa / 10**scale as an exact Decimal (string construction never
    rounds to the 28-digit context the way arithmetic would)."""
    return Decimal(f"{mantissa}E{-scale}")


class Count:
    """Cases evaluated, and how often each outcome (value or SQLSTATE) was seen."""

    def __init__(self):
        self.cases = 0
        self.seen = collections.Counter()

    def assert_covered(self, fc, *kinds):
        """At full size, the sample must have reached every outcome in kinds."""
        assert self.cases >= fc.examples
        if fc.examples >= 5000:
            missing = [k for k in kinds if self.seen[k] == 0]
            assert not missing, f"no case reached {missing}; seen {dict(self.seen)}"


def int64s():
    """Whole int64 range, weighted toward small values and both limits."""
    return st.one_of(
        st.integers(INT64_MIN, INT64_MAX),
        st.integers(-1000, 1000),
        st.integers(INT64_MIN, INT64_MIN + 1000),
        st.integers(INT64_MAX - 1000, INT64_MAX),
        st.integers(-(2 ** 32), 2 ** 32),
        st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX]),
    )


def divisors():
    return st.one_of(int64s(), st.integers(-4, 4))   # includes 0


@st.composite
def near_multiples(draw):
    """(n, d) with n/d exactly on, next to, or halfway between integers."""
    magnitude = draw(st.one_of(st.integers(1, 20), st.integers(1, INT64_MAX),
                               st.integers(2 ** 62, INT64_MAX)))
    q = draw(st.integers(INT64_MIN // magnitude + 1, INT64_MAX // magnitude - 1))
    half = magnitude // 2
    offset = draw(st.sampled_from(sorted(o for o in {0, 1, half - 1, half, half + 1, magnitude - 1}
                                         if 0 <= o < magnitude)))
    n = q * magnitude + draw(st.sampled_from([1, -1])) * offset
    d = draw(st.sampled_from([magnitude, -magnitude]))
    if not INT64_MIN <= n <= INT64_MAX:
        n = q * magnitude
    return n, d


def num_den():
    return st.one_of(st.tuples(int64s(), divisors()), near_multiples())


def expected(fn, *args):
    try:
        return ("ok", fn(*args))
    except ref.RefError as e:
        return ("err", e.sqlstates)


def check(outcome, want, case, count):
    kind, value = want
    count.seen["ok" if outcome.ok else outcome.sqlstate] += 1
    if kind == "err":
        assert not outcome.ok, f"{case}: expected SQLSTATE {sorted(value)}, got {outcome.values}"
        assert outcome.sqlstate in value, \
            f"{case}: expected SQLSTATE {sorted(value)}, got {outcome.sqlstate} ({outcome.message})"
    else:
        assert outcome.ok, f"{case}: expected {value}, got {outcome.sqlstate} ({outcome.message})"
        assert int(outcome.values[0]) == value, f"{case}: expected {value}, got {outcome.values[0]}"


def test_div_round_matches_reference(fc):
    count = Count()

    @fc.settings(BATCH)
    @given(st.lists(num_den(), min_size=BATCH, max_size=BATCH))
    def prop(cases):
        got = fc.outcomes(
            "SELECT pg_temp.fc_div_round(n, d, m) "
            "FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS c(n, d, i) "
            "CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS k(m, j) ORDER BY i, j",
            ([n for n, _ in cases], [d for _, d in cases], MODES_AND_DEFAULT))
        assert len(got) == len(cases) * len(MODES_AND_DEFAULT)
        it = iter(got)
        for n, d in cases:
            if d != 0 and Fraction(n, d).denominator == 2:
                count.seen["tie"] += 1
            for mode in MODES_AND_DEFAULT:
                want = expected(ref.div_round, n, d, mode or ref.DEFAULT_MODE)
                check(next(it), want, f"div_round({n}, {d}, {mode})", count)
        count.cases += len(cases)

    prop()
    # The one overflow (INT64_MIN / -1) is too rare to count on sampling it: checked explicitly too.
    prop.hypothesis.inner_test([(INT64_MIN, -1), (INT64_MIN, 1)] * (BATCH // 2))
    count.assert_covered(fc, "ok", "tie", "ZF104", "ZF106")


def test_div_amount_matches_reference(fc):
    count = Count()
    case = st.tuples(int64s(), st.sampled_from(CODES), divisors())

    @fc.settings(BATCH)
    @given(st.lists(case, min_size=BATCH, max_size=BATCH))
    def prop(cases):
        got = fc.outcomes(
            "SELECT pg_temp.fc_div(u, c, d, m) "
            "FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) WITH ORDINALITY AS x(u, c, d, i) "
            "CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS k(m, j) ORDER BY i, j",
            ([u for u, _, _ in cases], [c for _, c, _ in cases], [d for _, _, d in cases],
             MODES_AND_DEFAULT))
        it = iter(got)
        for u, code, d in cases:
            if d != 0 and Fraction(u, d).denominator == 2:
                count.seen["tie"] += 1
            for mode in MODES_AND_DEFAULT:
                out = next(it)
                check(out, expected(ref.div_round, u, d, mode or ref.DEFAULT_MODE),
                      f"div(from_minor({u}, {code}), {d}, {mode})", count)
                if out.ok:
                    assert out.values[1] == code, f"div kept the currency of {code}"
        count.cases += len(cases)

    prop()
    count.assert_covered(fc, "ok", "tie", "ZF104", "ZF106")


def test_exact_division_operator(fc):
    """amount / bigint is the exact quotient, else ZF105 (ZF106 for 0)."""
    count = Count()

    def run(cases):
        got = fc.outcomes(
            "SELECT pg_temp.fc_exact_div(u, 'USD', d) "
            "FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS x(u, d, i) ORDER BY i",
            ([u for u, _ in cases], [d for _, d in cases]))
        assert len(got) == len(cases)
        for (u, d), out in zip(cases, got):
            check(out, expected(ref.exact_div, u, d), f"from_minor({u}, 'USD') / {d}", count)
        count.cases += len(cases)

    @fc.settings(BATCH)
    @given(st.lists(num_den(), min_size=BATCH, max_size=BATCH))
    def prop(cases):
        run(cases)

    prop()
    # The one overflowing case is too rare for a random sample to be sure to reach: check it
    # (and its neighbours) explicitly, so that the coverage check below cannot fail by chance.
    run([(ref.INT64_MIN, -1), (ref.INT64_MIN, 1), (ref.INT64_MAX, -1), (ref.INT64_MIN, 2), (7, 0)])
    count.assert_covered(fc, "ok", "ZF104", "ZF105", "ZF106")


@st.composite
def rates(draw):
    """Decimal rates: mostly up to 12 decimals, either sign; some extreme."""
    kind = draw(st.integers(0, 10))
    if kind <= 6:       # everyday rates: |rate| < 10**7, up to 12 decimals
        scale = draw(st.integers(0, 12))
        mantissa = draw(st.integers(-(10 ** (7 + scale)), 10 ** (7 + scale)))
    elif kind == 7:     # near 1 and near 0
        scale = draw(st.integers(0, 12))
        mantissa = draw(st.sampled_from([10 ** scale, -(10 ** scale)])) + draw(st.integers(-3, 3))
    elif kind == 8:     # wide mantissas around the 128-bit limit
        scale = draw(st.integers(0, 45))
        mantissa = draw(st.integers(-(2 ** 128), 2 ** 128))
    elif kind == 9:     # tiny rates with a large scale (past 10**-38)
        scale = draw(st.integers(30, 60))
        mantissa = draw(st.integers(-(10 ** 6), 10 ** 6))
    else:               # odd / 2**j: products land exactly on halves
        scale = draw(st.integers(1, 6))
        mantissa = (2 * draw(st.integers(-500, 500)) + 1) * 5 ** scale
    if draw(st.booleans()):     # numeric keeps trailing zeros in its scale
        extra = draw(st.integers(0, 4))
        mantissa, scale = mantissa * 10 ** extra, scale + extra
    return decimal_of(mantissa, scale)


def test_multiply_matches_reference(fc):
    count = Count()
    case = st.tuples(int64s(), st.sampled_from(CODES), rates())

    @fc.settings(BATCH)
    @given(st.lists(case, min_size=BATCH, max_size=BATCH))
    def prop(cases):
        got = fc.outcomes(
            "SELECT pg_temp.fc_multiply(u, c, r::numeric, m) "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[]) WITH ORDINALITY AS x(u, c, r, i) "
            "CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS k(m, j) ORDER BY i, j",
            ([u for u, _, _ in cases], [c for _, c, _ in cases], [str(r) for _, _, r in cases],
             list(MODES)))
        it = iter(got)
        for u, code, rate in cases:
            if (u * Fraction(rate)).denominator == 2:
                count.seen["tie"] += 1
            for mode in MODES:
                out = next(it)
                check(out, expected(ref.multiply, u, rate, mode),
                      f"multiply(from_minor({u}, {code}), {rate}, {mode})", count)
                if out.ok:
                    assert out.values[1] == code
        count.cases += len(cases)

    prop()
    count.assert_covered(fc, "ok", "tie", "ZF104", "ZF105")


@st.composite
def numerics(draw):
    """Decimal values: any sign, 0..25 decimals, magnitudes up to ~10**45."""
    scale = draw(st.integers(0, 25))
    digits = draw(st.one_of(st.integers(0, 25), st.integers(18, 45)))
    mantissa = draw(st.integers(-(10 ** (digits + scale)), 10 ** (digits + scale)))
    return decimal_of(mantissa, scale)


@st.composite
def exact_numerics(draw, code):
    """A value exactly representable in `code`, near the int64 limits or not."""
    exponent = CODE_EXPONENTS[code]
    units = draw(int64s())
    return decimal_of(units, exponent)


CODE_EXPONENTS = ref.KNOWN_EXPONENTS


@st.composite
def half_unit_numerics(draw, code):
    """A value exactly halfway between two minor units of `code`."""
    units = draw(int64s())
    return decimal_of(units * 10 + (5 if units >= 0 else -5), CODE_EXPONENTS[code] + 1)


@st.composite
def numeric_case(draw):
    code = draw(st.sampled_from(CODES))
    value = draw(st.one_of(numerics(), exact_numerics(code), half_unit_numerics(code)))
    return value, code


def test_from_numeric_matches_reference(fc):
    count = Count()

    @fc.settings(BATCH)
    @given(st.lists(numeric_case(), min_size=BATCH, max_size=BATCH))
    def prop(cases):
        got = fc.outcomes(
            "SELECT pg_temp.fc_from_numeric(v::numeric, c, m) "
            "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS x(v, c, i) "
            "CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS k(m, j) ORDER BY i, j",
            ([str(v) for v, _ in cases], [c for _, c in cases], MODES_AND_DEFAULT))
        it = iter(got)
        for value, code in cases:
            if (Fraction(value) * 10 ** CODE_EXPONENTS[code]).denominator == 2:
                count.seen["tie"] += 1
            for mode in MODES_AND_DEFAULT:
                out = next(it)
                check(out, expected(ref.from_numeric, value, CODE_EXPONENTS[code], mode),
                      f"from_numeric({value}, {code}, {mode})", count)
                if out.ok:
                    assert out.values[1] == code
        count.cases += len(cases)

    prop()
    count.assert_covered(fc, "ok", "tie", "ZF104", "ZF105")


def test_invalid_mode_is_zf107(fc):
    """Any mode text other than the seven names raises ZF107, in every function."""
    count = Count()
    bad_mode = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                       max_size=20).filter(lambda m: m.strip().lower() not in MODES)

    @fc.settings(BATCH)
    @given(st.lists(bad_mode, min_size=BATCH, max_size=BATCH))
    def prop(modes):
        got = fc.outcomes(
            "SELECT f FROM unnest(%s::text[]) WITH ORDINALITY AS k(m, i), LATERAL (VALUES "
            " (1, pg_temp.fc_div_round(7, 2, m)),"
            " (2, pg_temp.fc_div(7, 'USD', 2, m)),"
            " (3, pg_temp.fc_multiply(7, 'USD', 0.5, m)),"
            " (4, pg_temp.fc_from_numeric(0.075, 'USD', m))) AS v(j, f) ORDER BY i, j",
            (modes,))
        assert len(got) == 4 * len(modes)
        for k, out in enumerate(got):
            assert not out.ok and out.sqlstate == ref.INVALID_ROUNDING_MODE, \
                f"mode {modes[k // 4]!r}: {out}"
        count.cases += len(modes)

    prop()
    assert count.cases >= fc.examples


def test_non_finite_numbers_are_zf112(fc):
    for value in ("NaN", "Infinity", "-Infinity"):
        got = fc.outcomes(
            "SELECT pg_temp.fc_from_numeric(%s::numeric, 'USD', m) FROM unnest(%s::text[]) m",
            (value, MODES_AND_DEFAULT))
        got += fc.outcomes(
            "SELECT pg_temp.fc_multiply(100, 'USD', %s::numeric, m) FROM unnest(%s::text[]) m",
            (value, list(MODES)))
        assert len(got) == len(MODES_AND_DEFAULT) + len(MODES)
        for out in got:
            assert not out.ok and out.sqlstate == "ZF112", f"{value}: {out}"


def test_reference_rounding_table():
    """The reference itself, on the classic table (so the oracle can fail too)."""
    table = {
        # x:      half_even half_up half_down up  down ceiling floor
        "2.5":   (2, 3, 2, 3, 2, 3, 2),
        "3.5":   (4, 4, 3, 4, 3, 4, 3),
        "-2.5":  (-2, -3, -2, -3, -2, -2, -3),
        "2.4":   (2, 2, 2, 3, 2, 3, 2),
        "-2.6":  (-3, -3, -3, -3, -2, -2, -3),
        "-0.5":  (0, -1, 0, -1, 0, 0, -1),
        "7":     (7, 7, 7, 7, 7, 7, 7),
    }
    for x, results in table.items():
        for mode, want in zip(MODES, results):
            assert ref.round_fraction(Decimal(x), mode) == want, (x, mode)
    assert ref.multiply(INT64_MAX, Decimal(1), "down") == INT64_MAX
    assert ref.decimal_mantissa(Decimal("1.2300")) == (123, 2)
    assert ref.decimal_mantissa(Decimal("1E+3")) == (1000, 0)
