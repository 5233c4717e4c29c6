"""Whole subscription histories against a reference model (docs/billing.md, issue 19).

Each history is one subscription driven through fincore's own functions: rewound to a period of
its own (anchors on the 28th to the 31st, leap years, every interval unit; flat, per-seat,
tiered and volume prices), then up to 10 changes in that period (upgrades, downgrades, quantity
changes; proration behaviours create_prorations,
always_invoice and none; changes scheduled for the period's end), pauses and resumes, a
cancellation now or at the period's end and its undoing, and billing_run at the period's end (twice: the
second bills nothing).  A second period follows with more changes and another renewal.  The
model, in Python with exact Fractions, predicts every line (kind and amount), every invoice (total
and status), the customer's payments and the revenue posted: they must be equal to the cent, and
verify() clean.

A history is one round trip: a pg_temp driver runs its operations in the database, catching each
operation's error as its SQLSTATE, and returns what it wrote.  FINCORE_BILLING_HISTORIES histories
(default 20,000; ./scripts/test --long runs 1,000,000), from FINCORE_BILLING_SEED (default random,
printed), on two connections, each in a tenant of its own.
"""
import calendar
import datetime as dt
import json
import os
import random
import threading
from fractions import Fraction

from conftest import connect

TENANTS = ["00000000-0000-4000-8000-00000000b1a0", "00000000-0000-4000-8000-00000000b1a1"]
HISTORIES = int(os.environ.get("FINCORE_BILLING_HISTORIES", "20000"))
UTC = dt.timezone.utc
UNITS = ["day", "week", "month", "year"]
# Prices per unit: (amount, scheme, tiers): quantity multiplies per_seat; tiered and volume use
# Stripe's tiers.
GRADED = [{"up_to": 2, "unit_amount": 700}, {"up_to": 4, "unit_amount": 500}, {"up_to": None, "unit_amount": 333}]
STEPPED = [{"up_to": 3, "flat_amount": 1999}, {"up_to": None, "unit_amount": 250, "flat_amount": 100}]
PRICES = [(3000, "flat", None), (1000, "per_seat", None), (999, "per_seat", None), (12345, "flat", None),
          (1, "per_seat", None), (0, "flat", None), (0, "tiered", GRADED), (0, "volume", GRADED),
          (0, "tiered", STEPPED), (0, "volume", STEPPED)]
BEHAVIOURS = ["create_prorations", "create_prorations", "always_invoice", "none"]

DRIVER = r"""
CREATE FUNCTION pg_temp.run_history(h jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    tenant uuid := (h->>'tenant')::uuid;
    customer uuid;
    sub uuid;
    op jsonb;
    out jsonb := '[]';
    code text;
    first_line int;
    paid_before bigint;
    result jsonb;
BEGIN
    PERFORM fincore.set_tenant(tenant);
    customer := (h->>'customer')::uuid;
    paid_before := (SELECT debits_posted FROM fincore.accounts WHERE tenant_id = tenant AND id = customer);
    -- Created at the free price (nothing to invoice), then moved to the history's price and
    -- period, billed in full for it.
    sub := (fincore.create_subscription(customer, (h->>'free_price')::uuid)).id;
    SELECT s.lines INTO first_line FROM fincore.subscriptions s WHERE s.tenant_id = tenant AND s.id = sub;
    UPDATE fincore.subscriptions SET status = 'active', price_id = (h->>'price')::uuid,
           quantity = (h->>'quantity')::int, anchor = (h->>'anchor')::timestamptz,
           period_start = (h->>'period_start')::timestamptz, period_end = (h->>'period_end')::timestamptz,
           billed_from = (h->>'period_start')::timestamptz, billed = (h->>'billed')::bigint
     WHERE tenant_id = tenant AND id = sub;
    FOR op IN SELECT * FROM jsonb_array_elements(h->'ops') LOOP
        BEGIN
            CASE op->>'op'
            WHEN 'change' THEN
                PERFORM fincore.change_subscription(sub, (op->>'price')::uuid, (op->>'quantity')::int,
                                                    (op->>'at')::timestamptz, op->>'behaviour',
                                                    (op->>'at_period_end')::boolean);
            WHEN 'status' THEN
                PERFORM fincore.update_subscription_status(sub, op->>'action');
            WHEN 'renew' THEN
                PERFORM fincore.billing_run((op->>'at')::timestamptz, 1000000, tenant);
            END CASE;
            out := out || jsonb_build_array('ok');
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE;
            out := out || jsonb_build_array(code);
        END;
    END LOOP;
    result := jsonb_build_object(
        'results', out,
        'status', (SELECT status FROM fincore.subscriptions WHERE tenant_id = tenant AND id = sub),
        'lines', (SELECT coalesce(jsonb_agg(jsonb_build_array(kind, amount) ORDER BY line_no), '[]')
                    FROM fincore.subscription_lines WHERE tenant_id = tenant AND subscription_id = sub
                     AND line_no > first_line),
        'invoices', (SELECT coalesce(jsonb_agg(jsonb_build_array(total, status) ORDER BY id), '[]')
                       FROM fincore.invoices WHERE tenant_id = tenant AND subscription_id = sub),
        'paid', (SELECT debits_posted FROM fincore.accounts WHERE tenant_id = tenant AND id = customer) - paid_before);
    -- Done with: later histories' runs never see it due.
    IF result->>'status' <> 'canceled' THEN
        PERFORM fincore.update_subscription_status(sub, 'cancel');
    END IF;
    RETURN result;
END $$;
"""

def boundary(anchor, unit, count, n):
    if unit == "day":
        return anchor + dt.timedelta(days=n * count)
    if unit == "week":
        return anchor + dt.timedelta(weeks=n * count)
    months = n * count * (12 if unit == "year" else 1)
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    return anchor.replace(year=year, month=month + 1, day=min(anchor.day, calendar.monthrange(year, month + 1)[1]))


def half_even(f):
    q, r = divmod(f.numerator, f.denominator)
    if 2 * r > f.denominator or (2 * r == f.denominator and q % 2 == 1):
        q += 1
    return q


def share(amount, frm, to, at):
    """amount x (to - at) / (to - frm), whole seconds, half-even; all of it from frm, none at to."""
    whole, part = (to - frm).total_seconds(), (to - at).total_seconds()
    if whole <= 0 or part <= 0:
        return 0
    if part >= whole:
        return amount
    return half_even(Fraction(amount) * int(part) / int(whole))


class Model:
    """One subscription as fincore should bill it."""

    def __init__(self, prices, price, quantity, anchor, unit, count, period):
        self.prices, self.price, self.quantity = prices, price, quantity
        self.anchor, self.unit, self.count = anchor, unit, count
        self.start, self.end = boundary(anchor, unit, count, period), boundary(anchor, unit, count, period + 1)
        self.billed, self.billed_from = self.amount(price, quantity), self.start
        self.status, self.pending, self.cancel_at_end = "active", None, False
        self.open_lines, self.lines, self.invoices, self.paid = [], [], [], 0

    def amount(self, price, quantity):
        unit_amount, scheme, tiers = self.prices[price]
        if scheme == "per_seat":
            return unit_amount * quantity
        if scheme == "flat":
            return unit_amount
        total, lower = 0, 0
        for tier in tiers:
            upper = tier["up_to"] if tier["up_to"] is not None else quantity
            if scheme == "volume":
                if quantity <= upper:
                    return quantity * tier.get("unit_amount", 0) + tier.get("flat_amount", 0)
                continue
            if lower > 0 and quantity <= lower:
                break
            total += (min(upper, quantity) - lower) * tier.get("unit_amount", 0) + tier.get("flat_amount", 0)
            lower = upper
        return total

    def invoice(self):
        net = sum(-a if k == "credit" else a for k, a in self.open_lines)
        if net > 0:
            self.invoices.append([net, "paid"])
            self.paid += net
            self.open_lines = []

    def line(self, kind, amount):
        self.lines.append([kind, amount])
        self.open_lines.append((kind, amount))

    def change(self, price, quantity, at, behaviour, at_period_end):
        if self.status not in ("trialing", "active", "past_due", "incomplete"):
            return "ZFA03"
        if at_period_end:
            at = self.end
        elif at < self.billed_from or at > self.end:
            return "ZFA02"
        if at_period_end:
            self.pending = (price, quantity)
        elif behaviour == "none":
            self.price, self.quantity, self.pending = price, quantity, None
        else:
            credit = share(self.billed, self.billed_from, self.end, at) if at < self.end else 0
            debit = share(self.amount(price, quantity), self.start, self.end, at) if at < self.end else 0
            self.line("credit", credit)
            self.line("debit", debit)
            self.price, self.quantity, self.pending = price, quantity, None
            self.billed, self.billed_from = debit, at
            if behaviour == "always_invoice":
                self.invoice()
        return "ok"

    def status_action(self, action):
        allowed = {"pause": ("active",), "resume": ("paused",), "cancel": ("active", "paused"),
                   "cancel_at_period_end": ("active", "paused"), "uncancel": ("active", "paused")}
        if self.status not in allowed[action]:
            return "ZFA03"
        if action == "pause":
            self.status = "paused"
        elif action == "cancel":
            self.status, self.cancel_at_end = "canceled", False
        elif action == "resume":
            self.status = "active"
        else:
            self.cancel_at_end = action == "cancel_at_period_end"
        return "ok"

    def renew(self, at):
        if self.status != "active" or self.end > at:
            return "ok"
        if self.cancel_at_end:
            self.status, self.cancel_at_end = "canceled", False
            return "ok"
        if self.pending:
            self.price, self.quantity = self.pending
            self.pending = None
        self.start = self.end
        self.end = boundary(self.anchor, self.unit, self.count, self.period_index() + 1)
        self.billed, self.billed_from = self.amount(self.price, self.quantity), self.start
        self.line("period", self.billed)
        self.invoice()
        return "ok"

    def period_index(self):
        n = 0
        while boundary(self.anchor, self.unit, self.count, n) < self.start:
            n += 1
        while boundary(self.anchor, self.unit, self.count, n) > self.start:
            n -= 1
        return n


def make_history(rnd, prices_by_unit):
    """A history: its set-up for the driver, its operations, and the model's prediction."""
    year = rnd.choice([2023, 2024, 2028, 2100, 2000])
    month = rnd.randint(1, 12)
    day = min(rnd.choice([1, 15, 28, 29, 30, 31]), calendar.monthrange(year, month)[1])
    anchor = dt.datetime(year, month, day, rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59), tzinfo=UTC)
    unit = rnd.choice(UNITS)
    count = rnd.choice([1, 1, 1, 2, 3])
    prices = prices_by_unit[(unit, count)]
    price = rnd.choice(list(prices))
    model = Model(prices, price, rnd.randint(1, 5), anchor, unit, count, rnd.randint(0, 30))
    h = {"price": price, "quantity": model.quantity, "anchor": anchor.isoformat(),
         "period_start": model.start.isoformat(), "period_end": model.end.isoformat(),
         "billed": model.billed, "ops": []}
    expected = []
    for _ in range(2):      # two periods
        length = int((model.end - model.start).total_seconds())
        times = sorted(rnd.randint(0, length) for _ in range(rnd.randint(0, 10)))
        for offset in times:
            at = model.start + dt.timedelta(seconds=offset)
            kind = rnd.random()
            if kind < 0.75:
                new_price = rnd.choice(list(prices))
                qty = rnd.randint(1, 7)
                behaviour = rnd.choice(BEHAVIOURS)
                at_end = rnd.random() < 0.1
                h["ops"].append({"op": "change", "price": new_price, "quantity": qty, "at": at.isoformat(),
                                 "behaviour": behaviour, "at_period_end": at_end})
                expected.append(model.change(new_price, qty, at, behaviour, at_end))
            else:
                action = rnd.choice(["pause", "resume", "resume", "cancel_at_period_end", "uncancel"] * 4 + ["cancel"])
                h["ops"].append({"op": "status", "action": action})
                expected.append(model.status_action(action))
        if model.status == "paused":
            h["ops"].append({"op": "status", "action": "resume"})
            expected.append(model.status_action("resume"))
        for late in (1, 2):     # the renewal, then a second run that bills nothing
            at = model.end + dt.timedelta(seconds=late)
            h["ops"].append({"op": "renew", "at": at.isoformat()})
            expected.append(model.renew(at))
        if model.status == "canceled":
            break
    return h, expected, model


def setup_tenant(database, tenant):
    """The tenant, its billing accounts, and a price list per (unit, count)."""
    prices_by_unit = {}
    with connect(database) as conn, conn.transaction():
        conn.execute("SELECT fincore.create_tenant('billing model', %s)", (tenant,))
        conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
        conn.execute("SELECT fincore.set_ledger_events(false)")
        receivable = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
        revenue = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
        conn.execute("SELECT fincore.set_billing_accounts('USD', %s, %s)", (receivable, revenue))
        product = conn.execute("SELECT fincore.create_product('model')").fetchone()[0]
        free = conn.execute("SELECT fincore.create_price(%s, 0, 'USD')", (product,)).fetchone()[0]
        customer = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
        for unit in UNITS:
            for count in (1, 2, 3):
                prices_by_unit[(unit, count)] = {}
                for amount, scheme, tiers in PRICES:
                    pid = conn.execute("SELECT fincore.create_price(%s, %s, 'USD', %s, %s, %s, tiers => %s::jsonb)",
                                       (product, amount, unit, count, scheme,
                                        json.dumps(tiers) if tiers else None)).fetchone()[0]
                    prices_by_unit[(unit, count)][str(pid)] = (amount, scheme, tiers)
    return prices_by_unit, str(free), str(customer)


def run(database, tenant, seed, n, failures, counts):
    prices_by_unit, free_price, customer = setup_tenant(database, tenant)
    rnd = random.Random(seed)
    with connect(database) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute(DRIVER)
        for i in range(n):
            if failures:
                return
            h, expected, model = make_history(rnd, prices_by_unit)
            h.update(tenant=tenant, free_price=free_price, customer=customer)
            got = conn.execute("SELECT pg_temp.run_history(%s::jsonb)", (json.dumps(h),)).fetchone()[0]
            want = {"results": expected, "status": model.status, "lines": model.lines,
                    "invoices": model.invoices, "paid": model.paid}
            if got != want:
                failures.append((seed, i, h, want, got))
                return
            counts.append(len(model.invoices))


def test_histories_against_the_model(database):
    seed = int(os.environ.get("FINCORE_BILLING_SEED", random.randrange(1 << 30)))
    print(f"FINCORE_BILLING_SEED={seed} FINCORE_BILLING_HISTORIES={HISTORIES}")
    failures, counts = [], []
    shares = [HISTORIES - HISTORIES // 2, HISTORIES // 2]
    threads = [threading.Thread(target=run, args=(database, TENANTS[k], seed + k, shares[k], failures, counts))
               for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, "\n".join(f"seed {s} history {i}:\n{json.dumps(h)}\nwant {w}\ngot  {g}"
                                    for s, i, h, w, g in failures[:1])
    assert len(counts) == HISTORIES, f"{len(counts)} of {HISTORIES} histories ran"
    with connect(database) as conn:
        # The ledger agrees with the invoices: every finalised invoice posted its total to revenue.
        for tenant in TENANTS:
            conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
            posted, invoiced = conn.execute(
                "SELECT (SELECT a.credits_posted FROM fincore.accounts a JOIN fincore.billing_accounts b "
                "          ON b.tenant_id = a.tenant_id AND b.revenue_account = a.id WHERE a.tenant_id = %s), "
                "       (SELECT coalesce(sum(total), 0) FROM fincore.invoices WHERE tenant_id = %s "
                "          AND status NOT IN ('draft', 'void'))", (tenant, tenant)).fetchone()
            assert posted == invoiced, (tenant, posted, invoiced)
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
