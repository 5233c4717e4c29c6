"""Stripe in sync (docs/billing.md): Stripe's events applied in any order, any number of times,
end in the state they reach in order.

A subscription's life at Stripe as its webhook events: a checkout, the subscription created
incomplete, its first invoice created, finalised and paid, the subscription active, an upgrade,
a renewal invoice that fails and is then paid (past_due and back), a cancellation at the
period's end, and the deletion.  Applied in order in one tenant; then, for each of many seeds, in
a tenant of its own, shuffled with some events duplicated, each pass applying what it can (an
event about an object not known yet is refused with ZFA13 and tried again in the next pass, as
the queue's retry would).  Every tenant ends with the same subscription and invoices, and
entitled() answers the same.  The webhook path itself (accept_webhook, the queue,
stripe_sync_run) is checked once: a duplicate delivery is accepted once.
"""
import json
import random
import uuid

import psycopg

from conftest import connect

USER = "a0000000-0000-4000-8000-00000000c0de"
P0, P1, P2 = 1767225600, 1769904000, 1772323200      # 2026-01-01, 2026-02-01, 2026-03-01


def sub(status, price="price_basic", qty=1, start=P0, end=P1, cancel=False):
    return {"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
            "items": {"data": [{"price": {"id": price}, "quantity": qty}]},
            "current_period_start": start, "current_period_end": end, "billing_cycle_anchor": P0,
            "cancel_at_period_end": cancel, "trial_end": None}


def inv(iid, status, total, start=P0, end=P1):
    return {"id": iid, "object": "invoice", "subscription": "sub_1", "status": status, "total": total,
            "currency": "usd", "period_start": start, "period_end": end}


def event(n, created, kind, obj):
    return {"id": f"evt_{n}", "type": kind, "created": created, "data": {"object": obj}}


LIFE = [
    event(1, 100, "checkout.session.completed",
          {"id": "cs_1", "mode": "subscription", "subscription": "sub_1", "customer": "cus_1",
           "client_reference_id": USER}),
    event(2, 101, "customer.subscription.created", sub("incomplete")),
    event(3, 102, "invoice.created", inv("in_1", "draft", 3000)),
    event(4, 103, "invoice.finalized", inv("in_1", "open", 3000)),
    event(5, 104, "invoice.paid", inv("in_1", "paid", 3000)),
    event(6, 105, "customer.subscription.updated", sub("active")),
    event(7, 200, "customer.subscription.updated", sub("active", "price_pro", 3)),
    event(8, 300, "invoice.created", inv("in_2", "draft", 9000, P1, P2)),
    event(9, 301, "invoice.finalized", inv("in_2", "open", 9000, P1, P2)),
    event(10, 302, "invoice.payment_failed", inv("in_2", "open", 9000, P1, P2)),
    event(11, 303, "customer.subscription.updated", sub("past_due", "price_pro", 3, P1, P2)),
    event(12, 400, "invoice.paid", inv("in_2", "paid", 9000, P1, P2)),
    event(13, 401, "customer.subscription.updated", sub("active", "price_pro", 3, P1, P2)),
    event(14, 500, "customer.subscription.updated", sub("active", "price_pro", 3, P1, P2, cancel=True)),
    event(15, 600, "customer.subscription.deleted", sub("canceled", "price_pro", 3, P1, P2, cancel=True)),
    event(16, 601, "charge.succeeded", {"id": "ch_1"}),
]


def new_tenant(conn, name):
    tenant = str(uuid.uuid4())
    conn.execute("SELECT fincore.create_tenant(%s, %s)", (name, tenant))
    with conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
        product = conn.execute("SELECT fincore.create_product('plans')").fetchone()[0]
        conn.execute("SELECT fincore.set_product_features(%s, '{reports}')", (product,))
        conn.execute("SELECT fincore.create_price(%s, 3000, 'USD', external_id => 'price_basic')", (product,))
        conn.execute("SELECT fincore.create_price(%s, 3000, 'USD', scheme => 'per_seat', external_id => 'price_pro')",
                     (product,))
    return tenant


def apply_pass(conn, tenant, events):
    """One pass over the events; returns those refused with ZFA13 (an object not known yet)."""
    later = []
    for e in events:
        try:
            with conn.transaction():
                conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
                conn.execute("SELECT fincore.apply_stripe_event(%s::jsonb)", (json.dumps(e),))
        except psycopg.Error as exc:
            assert exc.sqlstate == "ZFA13", (e["id"], exc.sqlstate, str(exc))
            later.append(e)
    return later


def apply_all(conn, tenant, events):
    """Passes until every event is applied, as the queue's retries would."""
    pending = list(events)
    while pending:
        later = apply_pass(conn, tenant, pending)
        assert len(later) < len(pending), [e["id"] for e in later]
        pending = later


def state(conn, tenant):
    with conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
        s = conn.execute(
            "SELECT s.external_id, s.status, p.external_id, s.quantity, s.period_start, s.period_end, "
            "       s.cancel_at_period_end, s.subscriber, s.external_version "
            "FROM fincore.subscriptions s JOIN fincore.billing_prices p ON p.tenant_id = s.tenant_id AND p.id = s.price_id "
            "WHERE s.tenant_id = %s", (tenant,)).fetchall()
        i = conn.execute("SELECT external_id, status, total, period_start, currency FROM fincore.invoices "
                         "WHERE tenant_id = %s ORDER BY external_id", (tenant,)).fetchall()
        conn.execute("SELECT fincore.set_user(%s)", (USER,))
        entitled = conn.execute("SELECT fincore.entitled('reports')").fetchone()[0]
    return s, i, entitled


def test_events_in_any_order_end_in_the_same_state(database):
    with connect(database) as conn:
        conn.execute("SET client_min_messages = warning")
        ordered = new_tenant(conn, "stripe in order")
        apply_all(conn, ordered, LIFE)
        want = state(conn, ordered)
        subs, invoices, entitled = want
        assert [r[:4] for r in subs] == [("sub_1", "canceled", "price_pro", 3)], subs
        assert [r[:3] for r in invoices] == [("in_1", "paid", 3000), ("in_2", "paid", 9000)], invoices
        assert subs[0][7] == uuid.UUID(USER) and not entitled
        for seed in range(60):
            rnd = random.Random(seed)
            events = LIFE + [e for e in LIFE if rnd.random() < 0.3]
            rnd.shuffle(events)
            tenant = new_tenant(conn, f"stripe shuffled {seed}")
            apply_all(conn, tenant, events)
            assert state(conn, tenant) == want, (seed, [e["id"] for e in events])


def test_entitlement_follows_stripe(database):
    with connect(database) as conn:
        conn.execute("SET client_min_messages = warning")
        tenant = new_tenant(conn, "stripe entitlement")
        seen, pending = [], []
        for e in LIFE:      # the checkout waits for its subscription, as its job's retry would
            pending = apply_pass(conn, tenant, pending + [e])
            seen.append(state(conn, tenant)[2])
        assert not pending
        # Entitled once the subscription is active (the checkout named the user), through past_due,
        # until its deletion.
        assert seen == [False, False, False, False, False, True, True, True, True, True, True, True, True, True,
                        False, False], seen


def test_the_webhook_path(database):
    """accept_webhook records a delivery once and queues it; stripe_sync_run applies it in its tenant."""
    with connect(database) as conn:
        conn.execute("SET client_min_messages = warning")
        tenant = new_tenant(conn, "stripe webhooks")
        secret = "whsec_test"
        for e in LIFE[1:3] + LIFE[1:2]:       # the subscription, its first invoice, the subscription again
            body = json.dumps(e)
            with conn.transaction():
                conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
                t = conn.execute("SELECT extract(epoch FROM now())::bigint").fetchone()[0]
                sig = conn.execute("SELECT encode(hmac(%s, %s, 'sha256'), 'hex')", (f"{t}.{body}", secret)).fetchone()[0]
                conn.execute("SELECT fincore.accept_webhook('stripe', %s, %s, %s)", (body, f"t={t},v1={sig}", secret))
        assert conn.execute("SELECT count(*) FROM fincore.jobs WHERE queue = 'webhook:stripe' AND tenant_id = %s",
                            (tenant,)).fetchone()[0] == 2, "a duplicate delivery is queued once"
        with conn.transaction():
            assert conn.execute("SELECT fincore.stripe_sync_run()").fetchone()[0] == 2
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
            assert conn.execute("SELECT status FROM fincore.subscriptions WHERE tenant_id = %s",
                                (tenant,)).fetchone()[0] == "incomplete"
            assert conn.execute("SELECT status, total FROM fincore.invoices WHERE tenant_id = %s",
                                (tenant,)).fetchall() == [("draft", 3000)]
        assert conn.execute("SELECT count(*) FROM fincore.jobs WHERE queue = 'webhook:stripe' AND tenant_id = %s",
                            (tenant,)).fetchone()[0] == 0
