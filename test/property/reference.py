"""A small reference model of fincore's money arithmetic, for the property tests.

Everything here is exact rational arithmetic on fractions.Fraction, written
from the specification (docs, SQL comments and the issue), not from the C
code: each function states the rule it implements and does nothing clever.
A function either returns a value or raises RefError carrying the SQLSTATE
(or the set of SQLSTATEs) the specification says the database must raise.
"""
import math
import re
from decimal import Decimal
from fractions import Fraction

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1
INT128_MIN = -(2 ** 127)
INT128_MAX = 2 ** 127 - 1

MODES = ("half_even", "half_up", "half_down", "up", "down", "ceiling", "floor")
DEFAULT_MODE = "half_even"

# SQLSTATEs (src/errcodes.h)
INVALID_AMOUNT_TEXT = "ZF101"
UNKNOWN_CURRENCY = "ZF102"
AMOUNT_OUT_OF_RANGE = "ZF104"
PRECISION_LOSS = "ZF105"
DIVISION_BY_ZERO = "ZF106"
INVALID_ROUNDING_MODE = "ZF107"
INVALID_ALLOCATION = "ZF108"

# The SQLSTATEs text input of fincore.amount may raise.
TEXT_INPUT_ERRORS = frozenset({INVALID_AMOUNT_TEXT, UNKNOWN_CURRENCY,
                               AMOUNT_OUT_OF_RANGE, PRECISION_LOSS})

ALLOCATE_MAX_PARTS = 1_000_000

# Currencies whose exponents the tests know independently of the database:
# some compiled ISO 4217 codes, and the codes the tests register (PTe has
# exponent e).
ISO_EXPONENTS = {"JPY": 0, "KRW": 0, "USD": 2, "EUR": 2, "BHD": 3, "KWD": 3, "TND": 3,
                 "CLF": 4, "UYW": 4}
REGISTERED_EXPONENTS = {f"PT{e}": e for e in range(19)}
KNOWN_EXPONENTS = {**ISO_EXPONENTS, **REGISTERED_EXPONENTS}
# Well-formed codes that must be unknown: 'N.A.' ISO codes that are not
# compiled in, and codes nobody would register.
UNKNOWN_CODES = ("XAU", "XXX", "XTS", "QZX", "ZZZ9", "NOPE7", "UNKNOWN12345")


class RefError(Exception):
    """The reference says: this must fail with one of `sqlstates`."""

    def __init__(self, *sqlstates):
        super().__init__(", ".join(sqlstates))
        self.sqlstates = frozenset(sqlstates)


def fits_int64(v):
    return INT64_MIN <= v <= INT64_MAX


def checked_int64(v):
    if not fits_int64(v):
        raise RefError(AMOUNT_OUT_OF_RANGE)
    return v


# ---------------------------------------------------------------------------
# Rounding
# ---------------------------------------------------------------------------

def round_fraction(x, mode):
    """Round the exact rational x to an integer with `mode`.

    down = toward zero, up = away from zero, ceiling = toward +inf,
    floor = toward -inf; half_* pick the nearer integer and, on an exact
    tie, go away from zero (half_up), toward zero (half_down) or to the
    even neighbour (half_even).
    """
    x = Fraction(x)
    if mode not in MODES:
        raise RefError(INVALID_ROUNDING_MODE)
    lo = math.floor(x)
    hi = lo + 1
    if x == lo:
        return lo
    toward_zero = lo if x > 0 else hi
    away_from_zero = hi if x > 0 else lo
    if mode == "floor":
        return lo
    if mode == "ceiling":
        return hi
    if mode == "down":
        return toward_zero
    if mode == "up":
        return away_from_zero
    distance_to_lo = x - lo
    if distance_to_lo < Fraction(1, 2):
        return lo
    if distance_to_lo > Fraction(1, 2):
        return hi
    # an exact tie
    if mode == "half_up":
        return away_from_zero
    if mode == "half_down":
        return toward_zero
    return lo if lo % 2 == 0 else hi


def div_round(n, d, mode=DEFAULT_MODE):
    """fincore.div_round(n, d, mode): n/d rounded once; int64 result."""
    if mode not in MODES:
        raise RefError(INVALID_ROUNDING_MODE)
    if d == 0:
        raise RefError(DIVISION_BY_ZERO)
    return checked_int64(round_fraction(Fraction(n, d), mode))


def exact_div(n, d):
    """amount / bigint: the exact quotient, or ZF105 when there is none."""
    if d == 0:
        raise RefError(DIVISION_BY_ZERO)
    q = Fraction(n, d)
    if q.denominator != 1:
        raise RefError(PRECISION_LOSS)
    return checked_int64(int(q))


def decimal_mantissa(rate):
    """(M, s): the integer M and smallest s >= 0 with rate = M / 10**s."""
    x = Fraction(rate)
    s = 0
    while (x * 10 ** s).denominator != 1:
        s += 1
    return int(x * 10 ** s), s


def multiply(units, rate, mode):
    """fincore.multiply(amount, rate, mode): round(units x rate) exactly.

    The specification computes the product exactly on 128 bits: a rate whose
    exact decimal mantissa, or whose exact product with the units, does not
    fit a signed 128-bit integer cannot be computed exactly (ZF105).  Other
    results outside int64 are out of range (ZF104).
    """
    if mode not in MODES:
        raise RefError(INVALID_ROUNDING_MODE)
    mantissa, scale = decimal_mantissa(Decimal(rate))
    if not (INT128_MIN < mantissa <= INT128_MAX) or \
            not (INT128_MIN <= units * mantissa <= INT128_MAX):
        raise RefError(PRECISION_LOSS)
    return checked_int64(round_fraction(Fraction(units) * Fraction(Decimal(rate)), mode))


def from_numeric(value, exponent, mode=None):
    """fincore.from_numeric(value, currency, mode): value x 10**exponent.

    Without a mode the scaled value must be an integer (ZF105); with one it
    is rounded once.  The result must fit int64 (ZF104).  A value that is
    both inexact and beyond int64 violates both rules: either code is right.
    """
    x = Fraction(Decimal(value)) * 10 ** exponent
    if mode is None:
        if x.denominator != 1:
            if fits_int64(math.floor(x)) and fits_int64(math.ceil(x)):
                raise RefError(PRECISION_LOSS)
            raise RefError(PRECISION_LOSS, AMOUNT_OUT_OF_RANGE)
        return checked_int64(int(x))
    return checked_int64(round_fraction(x, mode))


# ---------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------

def allocate(units, ratios):
    """fincore.allocate(amount, ratios): split |units| by the ratios.

    Part i first gets floor(|A| r_i / R) (R = sum of ratios); the units left
    over go one each to the parts with the largest exact remainder
    |A| r_i / R - floor(...), ties to the earlier position.  A negative
    amount is allocated as its magnitude, then every part is negated.
    Ratios must be a non-empty list of non-null, non-negative integers that
    are not all zero (ZF108).
    """
    if (len(ratios) == 0 or len(ratios) > ALLOCATE_MAX_PARTS
            or any(r is None or r < 0 for r in ratios) or sum(ratios) == 0):
        raise RefError(INVALID_ALLOCATION)
    magnitude = abs(units)
    total = sum(ratios)
    shares = [Fraction(magnitude * r, total) for r in ratios]
    parts = [math.floor(s) for s in shares]
    left_over = magnitude - sum(parts)
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(shares[i] - parts[i]), i))
    for i in by_remainder[:left_over]:
        parts[i] += 1
    return [-p if units < 0 else p for p in parts]


def allocate_even(units, n):
    """fincore.allocate(amount, n): n equal ratios; 1 <= n <= 1,000,000."""
    if not 1 <= n <= ALLOCATE_MAX_PARTS:
        raise RefError(INVALID_ALLOCATION)
    return allocate(units, [1] * n)


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------

def format_units(units, exponent):
    """Canonical decimal text of units / 10**exponent: an optional '-', at
    least one integer digit, and exactly `exponent` decimals."""
    whole, frac = divmod(abs(units), 10 ** exponent)
    text = str(whole)
    if exponent > 0:
        text += "." + str(frac).rjust(exponent, "0")
    return ("-" if units < 0 else "") + text


def format_amount(units, code, exponent):
    return f"{format_units(units, exponent)} {code}"


_WS = " \t\n\r\f\v"                      # C isspace() in the "C" locale
_AMOUNT_RE = re.compile(
    "[{ws}]*([+-]?)([0-9]+)(?:[.]([0-9]+))?[{ws}]+([^{ws}]+)[{ws}]*".format(ws=_WS))
_CODE_RE = re.compile("[A-Z0-9]{3,12}")


def parse_amount(text, exponents):
    """Parse amount text '[ws][+|-]digits[.digits]ws+CODE[ws]'.

    `exponents` maps every known currency code to its exponent.  Returns
    (units, code).  Errors, in the documented order: malformed (ZF101),
    unknown currency (ZF102), more decimals than the currency has, even
    zeros (ZF105), outside int64 minor units (ZF104).
    """
    m = _AMOUNT_RE.fullmatch(text)
    if m is None or _CODE_RE.fullmatch(m.group(4)) is None:
        raise RefError(INVALID_AMOUNT_TEXT)
    sign, int_digits, frac_digits, code = m.group(1), m.group(2), m.group(3) or "", m.group(4)
    if code not in exponents:
        raise RefError(UNKNOWN_CURRENCY)
    exponent = exponents[code]
    if len(frac_digits) > exponent:
        raise RefError(PRECISION_LOSS)
    digits = (int_digits + frac_digits.ljust(exponent, "0")).lstrip("0") or "0"
    if len(digits) > 25:                  # far beyond int64; spares int() huge strings
        raise RefError(AMOUNT_OUT_OF_RANGE)
    units = int(digits)
    return checked_int64(-units if sign == "-" else units), code
