"""Text I/O properties of fincore.amount: canonical output for every exponent
0..18 round-trips, and a fuzz of the text parser against the reference."""
import collections

import psycopg
from hypothesis import given, strategies as st

import reference as ref
from reference import INT64_MAX, INT64_MIN, KNOWN_EXPONENTS, UNKNOWN_CODES

# ISO codes for exponents 0, 2, 3, 4, and the registered PT0 ... PT18.
ROUND_TRIP_CODES = ["JPY", "USD", "BHD", "CLF"] + [f"PT{e}" for e in range(19)]


def int64s():
    return st.one_of(
        st.integers(INT64_MIN, INT64_MAX),
        st.integers(-(10 ** 6), 10 ** 6),
        st.integers(INT64_MIN, INT64_MIN + 1000),
        st.integers(INT64_MAX - 1000, INT64_MAX),
        st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX]),
    )


def test_canonical_text_round_trips(fc):
    """from_minor(u, code)::text is the reference text and parses back to u,
    for every exponent; to_numeric gives the same digits."""
    batch = 10
    cases_run = [0]

    @fc.settings(batch)
    @given(st.lists(int64s(), min_size=batch, max_size=batch))
    def prop(units_list):
        rows = fc.rows(
            "SELECT u, c, a::text, fincore.minor_units(a::text::fincore.amount), "
            "       fincore.currency(a::text::fincore.amount), a::text::fincore.amount OPERATOR(fincore.=) a, "
            "       fincore.exponent(a), fincore.to_numeric(a)::text "
            "FROM unnest(%s::bigint[]) WITH ORDINALITY AS x(u, i) "
            "CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS k(c, j), "
            "     LATERAL (SELECT fincore.from_minor(u, c)) AS f(a) "
            "ORDER BY i, j",
            (units_list, ROUND_TRIP_CODES))
        assert len(rows) == len(units_list) * len(ROUND_TRIP_CODES)
        for u, code, text, back_units, back_code, equal, exponent, numeric in rows:
            want = ref.format_amount(u, code, KNOWN_EXPONENTS[code])
            assert exponent == KNOWN_EXPONENTS[code], f"exponent of {code}: {exponent}"
            assert text == want, f"from_minor({u}, {code})::text = {text!r}, want {want!r}"
            assert (back_units, back_code, equal) == (u, code, True), \
                f"{text!r} parsed back as {back_units} {back_code}"
            assert numeric == ref.format_units(u, exponent), f"to_numeric: {numeric}"
            assert ref.parse_amount(text, KNOWN_EXPONENTS) == (u, code), text
        cases_run[0] += len(units_list)

    prop()
    assert cases_run[0] >= fc.examples


# ---------------------------------------------------------------------------
# Parser fuzz
# ---------------------------------------------------------------------------

ANY_CHAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
ASCII_WS = [" ", "\t", "\n", "\r", "\f", "\v"]
OTHER_WS = ["\u00a0", "\u2003", "\u3000", "\x1c", "\x85"]     # not white space to the parser


def white_space(extra=()):
    return st.lists(st.sampled_from(ASCII_WS + list(extra)), max_size=3).map("".join)


@st.composite
def digit_strings(draw, min_size):
    return draw(st.one_of(
        st.text("0123456789", min_size=min_size, max_size=25),
        st.text("0", min_size=min_size, max_size=30),
        st.integers(0, 10 ** 25).map(str),
    ))


GOOD_CODES = list(KNOWN_EXPONENTS)
BAD_CODES = list(UNKNOWN_CODES) + ["usd", "Usd", "US", "U$D", "USD.", "ABCDEFGHIJKLM", "PT19",
                                   "\u20ac", "\uff35\uff33\uff24"]
CODE_CHOICES = GOOD_CODES + BAD_CODES


@st.composite
def amount_like(draw):
    """[ws][sign]digits[.digits] ws CODE [ws]; each part is usually right."""
    code = draw(st.one_of(st.sampled_from(GOOD_CODES * 4 + BAD_CODES),
                          st.from_regex("[A-Z0-9]{3,12}", fullmatch=True)))
    sign = draw(st.sampled_from(["", "-", "+"] * 3 + ["--", "+-", "- "]))
    if draw(st.booleans()):
        # a value near the int64 limits, or any value, in the code's own exponent
        exponent = KNOWN_EXPONENTS.get(code, 2)
        units = draw(st.one_of(st.integers(INT64_MAX - 3, INT64_MAX + 3),
                               st.integers(INT64_MIN - 3, INT64_MIN + 3),
                               st.integers(-(10 ** 20), 10 ** 20)))
        number = ref.format_units(units, exponent)
        if draw(st.booleans()) and "." in number:
            number = number.rstrip("0").rstrip(".")      # fewer decimals are fine
        if draw(st.integers(0, 3)) == 0:
            number += ("" if "." in number else ".") + draw(st.text("0123456789", max_size=3))
        if number.startswith("-"):
            sign, number = "-", number[1:]
    else:
        number = draw(digit_strings(draw(st.sampled_from([1, 1, 1, 0]))))
        if draw(st.booleans()):
            number += "." + draw(st.text("0123456789", min_size=draw(st.sampled_from([1, 1, 1, 0])),
                                         max_size=draw(st.sampled_from([2, 4, 4, 20]))))
    separator = draw(st.sampled_from([" "] * 6 + ["\t", "  ", "\n ", "\v", "\f\r",
                                                  "", "\u00a0", "_"]))
    trailer = draw(white_space()) + draw(st.sampled_from([""] * 7 + ["\u00a0"]))
    return draw(white_space()) + sign + number + separator + code + trailer


@st.composite
def valid_amounts(draw):
    """Well-formed text of an in-range amount, in any allowed spelling."""
    code = draw(st.sampled_from(GOOD_CODES))
    exponent = KNOWN_EXPONENTS[code]
    number = ref.format_units(draw(int64s()), exponent)
    if "." in number and draw(st.booleans()):
        number = number.rstrip("0").rstrip(".")
    if not number.startswith("-") and draw(st.booleans()):
        number = "+" + number
    if draw(st.booleans()):
        number = number.replace("-", "-000", 1) if number.startswith("-") else "00" + number
    return (draw(white_space()) + number + draw(white_space().map(lambda w: w or " ")) + code
            + draw(white_space()))


TOKENS = (ASCII_WS + OTHER_WS + ["+", "-", ".", ",", "e", "E", "_", "'"]
          + list("0123456789") + ["00", "5", "9223372036854775807", "9223372036854775808",
                                  "18446744073709551616", "\u0661", "\uff15", "\u00b2"]
          + CODE_CHOICES)


@st.composite
def mutated(draw, base):
    """base with a few random characters inserted, deleted or replaced."""
    s = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(s)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        c = draw(st.one_of(ANY_CHAR, st.sampled_from(TOKENS)))
        if op == "insert":
            s = s[:i] + c + s[i:]
        elif op == "delete":
            s = s[:i] + s[i + 1:]
        else:
            s = s[:i] + c + s[i + 1:]
    return s


@st.composite
def long_inputs(draw):
    """Inputs far longer than any amount: many digits, long codes, padding."""
    n = draw(st.integers(40, 5000))
    return draw(st.sampled_from([
        "1" * n + " USD", "0" * n + "1.5 USD", "-" + "0" * n + " JPY", "1." + "0" * n + " USD",
        "1 " + "A" * n, " " * n + "1 USD" + "\t" * n, "9" * n, "1 USD" + " x" * n,
    ]))


def parser_inputs():
    return st.one_of(
        st.text(ANY_CHAR, max_size=40),                                  # random unicode
        st.lists(st.sampled_from(TOKENS), max_size=10).map("".join),     # token soup
        st.lists(st.one_of(st.sampled_from(TOKENS), ANY_CHAR), max_size=10).map("".join),
        valid_amounts(), valid_amounts(),
        amount_like(), amount_like(), amount_like(), amount_like(),
        mutated(amount_like()), mutated(amount_like()),
        long_inputs(),
    ).filter(lambda s: "\x00" not in s)      # NUL cannot be sent to the server


def test_text_parser_fuzz(fc):
    """Every input parses to a value that round-trips (and equals the
    reference's when the reference accepts it), or raises the SQLSTATE the
    reference predicts, which is one of ZF101, ZF102, ZF104, ZF105."""
    batch = 25
    seen = collections.Counter()
    cases_run = [0]

    @fc.settings(batch)
    @given(st.lists(parser_inputs(), min_size=batch, max_size=batch))
    def prop(inputs):
        rows = fc.rows(
            "SELECT s, pg_temp.fc_parse(s) FROM unnest(%s::text[]) WITH ORDINALITY AS x(s, i) "
            "ORDER BY i", (inputs,))
        assert [r[0] for r in rows] == inputs, "inputs were altered in transit"
        for s, out in zip(inputs, (r[1] for r in rows)):
            try:
                want = ref.parse_amount(s, fc.exponents)
            except ref.RefError as e:
                want = e.sqlstates
            if out[0] == "err":
                seen[out[1]] += 1
                assert out[1] in ref.TEXT_INPUT_ERRORS, \
                    f"{s!r}: undocumented SQLSTATE {out[1]} ({out[2]})"
                assert isinstance(want, frozenset), \
                    f"{s!r}: refused with {out[1]} ({out[2]}), reference parses it as {want}"
                assert out[1] in want, f"{s!r}: raised {out[1]} ({out[2]}), reference {set(want)}"
                continue
            assert out[0] == "ok", f"{s!r}: parsed, but its output does not parse back: {out}"
            units, code, text, back_units, back_code, equal = out[1:]
            seen["ok"] += 1
            assert (back_units, back_code, equal) == (units, code, "true"), \
                f"{s!r} -> {text!r} -> {back_units} {back_code}"
            assert text == ref.format_amount(int(units), code, fc.exponents[code]), \
                f"{s!r}: output {text!r}"
            assert want == (int(units), code), f"{s!r}: parsed as {units} {code}, reference {want}"
        cases_run[0] += len(inputs)

    prop()
    assert cases_run[0] >= fc.examples
    if fc.examples >= 5000:
        for kind in ("ok",) + tuple(sorted(ref.TEXT_INPUT_ERRORS)):
            assert seen[kind], f"the fuzz never reached {kind}: {dict(seen)}"


def test_reference_text_examples():
    """The reference parser and formatter on hand-worked cases."""
    ex = {"USD": 2, "JPY": 0, "CLF": 4, "PT18": 18}
    assert ref.format_units(-5, 2) == "-0.05"
    assert ref.format_units(1230, 2) == "12.30"
    assert ref.format_units(1000, 0) == "1000"
    assert ref.format_units(INT64_MIN, 18) == "-9.223372036854775808"
    assert ref.parse_amount(" \t+12.3 USD\n", ex) == (1230, "USD")
    assert ref.parse_amount("-0.0001 CLF", ex) == (-1, "CLF")
    assert ref.parse_amount("-9.223372036854775808 PT18", ex) == (INT64_MIN, "PT18")
    for text, state in [("12.34USD", "ZF101"), ("12. USD", "ZF101"), (".5 USD", "ZF101"),
                        ("1 usd", "ZF101"), ("1 USD x", "ZF101"), ("1\u00a0USD", "ZF101"),
                        ("1 XAU", "ZF102"), ("1.230 USD", "ZF105"), ("1.5 JPY", "ZF105"),
                        ("92233720368547758.08 USD", "ZF104"),
                        ("9.223372036854775808 PT18", "ZF104"),
                        ("1.5 XAU", "ZF102"), ("99999999999999999999.999 USD", "ZF105")]:
        try:
            ref.parse_amount(text, ex)
        except ref.RefError as e:
            assert e.sqlstates == {state}, (text, e.sqlstates)
        else:
            raise AssertionError(f"reference accepted {text!r}")


def test_client_sees_the_same_sqlstates(fc):
    """The wrappers report what a client sees: the same inputs, sent directly,
    fail with the same exc.sqlstate (and good ones give the same text)."""
    inputs = ["12.34 USD", "12.345 USD", "1 XAU", "1 usd", "", " 1.5 JPY",
              "92233720368547758.08 USD", "-92233720368547758.08 USD", "+0.0001 CLF"]
    wrapped = fc.rows("SELECT pg_temp.fc_parse(s) FROM unnest(%s::text[]) WITH ORDINALITY AS "
                      "x(s, i) ORDER BY i", (inputs,))
    for s, (out,) in zip(inputs, wrapped):
        try:
            (text,) = fc.rows("SELECT %s::text::fincore.amount::text", (s,))[0]
        except psycopg.Error as e:
            assert out[0] == "err" and e.sqlstate == out[1], f"{s!r}: client {e.sqlstate}, {out}"
        else:
            assert out[0] == "ok" and text == out[3], f"{s!r}: client {text!r}, {out}"
    states = [r[0][1] for r in wrapped if r[0][0] == "err"]
    assert states == ["ZF105", "ZF102", "ZF101", "ZF101", "ZF105", "ZF104"], states
