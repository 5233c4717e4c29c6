"""A reference model of fincore's fee schedules, for the property tests.

Written from docs/fees.md, not from src/fees.c: exact rational arithmetic on
fractions.Fraction, one function per rule.  A schedule is the same dict that
is sent to fincore.define_fee_schedule() as `rules` (amounts as integers of
minor units, rates as decimal strings), plus its rounding mode.

Semantics:
- flat: the amount.
- percentage: amount x rate.
- graduated: tier i charges the part of the amount in (up_to[i-1], up_to[i]]
  (the first tier from 0) at its rate, plus its flat amount if the amount
  reaches the tier (the first tier always: every amount is in it).
- volume: the whole amount at the rate of the first tier with amount <= up_to
  (the last tier is unbounded), plus that tier's flat amount.
- Each component's exact value is rounded once with the schedule's mode; the
  fee is the sum of the components whose "when" object the context contains
  (jsonb @>), then raised to the minimum and lowered to the maximum.
- The breakdown lists the applying components in order, then a "minimum" or
  "maximum" line (fee - sum) when a limit changed the sum.
- gross_up(net): the smallest charge c >= 0 with c - fee(c) >= net.
"""
from decimal import Decimal
from fractions import Fraction

from reference import INT64_MAX, RefError, round_fraction

FEE_SCHEDULE_NOT_FOUND = "ZF401"
GROSS_UP_IMPOSSIBLE = "ZF412"
AMOUNT_OUT_OF_RANGE = "ZF104"


def contains(container, contained):
    """jsonb @>: objects by key (recursively), arrays by element, scalars by equality."""
    if isinstance(contained, dict):
        return isinstance(container, dict) and all(
            k in container and contains(container[k], v) for k, v in contained.items())
    if isinstance(contained, list):
        return isinstance(container, list) and all(
            any(contains(c, v) for c in container) for v in contained)
    if isinstance(container, (dict, list)):
        return False
    # bool before int: JSON true is not 1
    return type(container) is type(contained) and container == contained


def rate(value):
    return Fraction(Decimal(str(value)))


def component_exact(component, amount):
    """The exact (unrounded) value of one component on amount."""
    kind = component["type"]
    if kind == "flat":
        return Fraction(component["amount"])
    if kind == "percentage":
        return amount * rate(component["rate"])
    tiers = component["tiers"]
    if kind == "graduated":
        total = Fraction(0)
        lower = 0
        for i, tier in enumerate(tiers):
            up_to = tier.get("up_to")
            if i > 0 and amount <= lower:
                break
            upper = amount if up_to is None else min(amount, up_to)
            total += (upper - lower) * rate(tier.get("rate", 0)) + tier.get("flat", 0)
            if up_to is None:
                break
            lower = up_to
        return total
    if kind == "volume":
        for tier in tiers:
            up_to = tier.get("up_to")
            if up_to is None or amount <= up_to:
                return amount * rate(tier.get("rate", 0)) + tier.get("flat", 0)
    raise AssertionError(f"unknown component {kind}")


def name_of(component):
    return component.get("name", component["type"])


def breakdown(rules, rounding, amount, context):
    """[(name, amount)] summing to the fee, or RefError."""
    lines = []
    for component in rules["components"]:
        when = component.get("when")
        if when is not None and not contains(context, when):
            continue
        lines.append((name_of(component), round_fraction(component_exact(component, amount), rounding)))
    subtotal = sum(v for _, v in lines)
    fee = subtotal
    limit = None
    if rules.get("minimum") is not None and fee < rules["minimum"]:
        fee, limit = rules["minimum"], "minimum"
    if rules.get("maximum") is not None and fee > rules["maximum"]:
        fee, limit = rules["maximum"], "maximum"
    if limit:
        lines.append((limit, fee - subtotal))
    if fee > INT64_MAX or any(abs(v) > INT64_MAX for _, v in lines):
        raise RefError(AMOUNT_OUT_OF_RANGE)
    return lines


def fee(rules, rounding, amount, context):
    return sum(v for _, v in breakdown(rules, rounding, amount, context))


def remainder(rules, rounding, charge, context):
    return charge - fee(rules, rounding, charge, context)


def gross_up(rules, rounding, net, context):
    """The smallest charge c >= 0 with c - fee(c) >= net.

    fee() never decreases between consecutive volume-tier boundaries, so on
    each such stretch [start, end] the iteration c <- c + (net - remainder(c))
    passes no solution; the stretches are tried in order.
    """
    starts = {0}
    for component in rules["components"]:
        when = component.get("when")
        if component["type"] == "volume" and (when is None or contains(context, when)):
            starts |= {t["up_to"] + 1 for t in component["tiers"] if t.get("up_to") is not None}
    starts = sorted(starts)
    for i, start in enumerate(starts):
        end = starts[i + 1] - 1 if i + 1 < len(starts) else INT64_MAX
        c = max(start, net)
        steps = 0
        while c <= end:
            r = remainder(rules, rounding, c, context)
            if r >= net:
                return c
            c += net - r
            steps += 1
            if steps > 100000:      # the generated schedules converge long before
                raise AssertionError("reference gross-up does not converge")
    raise RefError(GROSS_UP_IMPOSSIBLE)


def gross_up_brute_force(rules, rounding, net, context, limit):
    """The same by trying every charge from net up to net + limit (None beyond)."""
    for c in range(net, net + limit + 1):
        if remainder(rules, rounding, c, context) >= net:
            return c
    return None
