"""Invoices paid through the payments module, under concurrency (docs/billing.md, "Payment methods").

120 subscriptions with a payment method and a credit of 0, 400 or the whole 1000 are renewed by
three sessions running fincore.billing_run() while three "provider" sessions answer the payments'
authorize steps as they appear, answers racing each other from the sessions (first report wins);
a third of the first answers are declines.  The declined invoices' dunning retries then run, and
the provider accepts them.  Every invoice ends paid exactly once: the credit it used posted, the
provider charged the rest once, the receivable cleared, nothing left held; verify() is clean.
"""
import random
import threading
import time

from conftest import connect

TENANT = "00000000-0000-4000-8000-00000000b222"
N = 120
PRICE = 1000


def _declines(payment_id):
    return int(str(payment_id).replace("-", ""), 16) % 3 == 0


def test_billing_runs_and_provider_answers_pay_each_invoice_once(database):
    with connect(database) as conn, conn.transaction():
        conn.execute("SELECT fincore.create_tenant('billing payments', %s)", (TENANT,))
        conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        acct = lambda flags="{}": conn.execute("SELECT fincore.create_account('USD', flags => %s)",
                                               (flags,)).fetchone()[0]
        # The platform's accounts are hot (docs/billing.md): every invoice and payment touches them.
        receivable, revenue, settlement = acct("{hot}"), acct("{hot}"), acct("{hot}")
        source = acct("{hot}")
        conn.execute("SELECT fincore.set_billing_accounts('USD', %s, %s)", (receivable, revenue))
        conn.execute("SELECT fincore.create_payment_provider('card', %s)", (settlement,))
        conn.execute("SELECT fincore.set_dunning_policy('{1 hour}', 'unpaid')")
        product = conn.execute("SELECT fincore.create_product('paid')").fetchone()[0]
        price = conn.execute("SELECT fincore.create_price(%s, %s, 'USD')", (product, PRICE)).fetchone()[0]
        credits, cards = {}, []
        for k in range(N):
            customer, card = acct("{debits_must_not_exceed_credits}"), acct()
            cards.append(card)
            conn.execute("SELECT fincore.transfer(%s, %s, %s)", (source, customer, PRICE))
            sub = conn.execute("SELECT (fincore.create_subscription(%s, %s)).id", (customer, price)).fetchone()[0]
            conn.execute("SELECT fincore.set_payment_method(%s, 'card', %s)", (sub, card))
            credits[customer] = (0, 400, PRICE)[k % 3]
            # The first invoice took the funding; the credit left for the renewal is set here.
            if credits[customer]:
                conn.execute("SELECT fincore.transfer(%s, %s, %s)", (source, customer, credits[customer]))
        conn.execute("UPDATE fincore.subscriptions SET anchor = '2026-03-01', period_start = '2026-03-01', "
                     "period_end = '2026-04-01', billed_from = '2026-03-01', billed = 0 WHERE tenant_id = %s",
                     (TENANT,))
        assert conn.execute("SELECT count(*) FROM fincore.subscriptions WHERE tenant_id = %s AND status = 'active'",
                            (TENANT,)).fetchone()[0] == N
        card_before = sum(conn.execute("SELECT debits_posted FROM fincore.balance(%s)", (c,)).fetchone()[0]
                          for c in cards)

    errors, billing_done = [], threading.Event()
    barrier = threading.Barrier(6)

    def biller():
        try:
            with connect(database) as c:
                c.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                barrier.wait()
                while True:
                    with c.transaction():
                        n = c.execute("SELECT fincore.billing_run('2026-04-02', 5, %s)", (TENANT,)).fetchone()[0]
                    if n == 0:
                        break
        except Exception as exc:  # reported below
            errors.append("biller: " + repr(exc))

    def provider(seed):
        rnd = random.Random(seed)
        try:
            with connect(database) as c:
                c.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                barrier.wait()
                idle = 0
                while idle < 20:
                    steps = c.execute("SELECT payment_id, step_no FROM fincore.payment_steps "
                                      "WHERE tenant_id = %s AND status = 'pending' AND kind = 'authorize'",
                                      (TENANT,)).fetchall()
                    rnd.shuffle(steps)
                    for payment_id, step_no in steps:
                        outcome = "failed" if _declines(payment_id) else "succeeded"
                        with c.transaction():
                            c.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                            c.execute("SELECT fincore.payment_step_result(%s, %s, %s, %s, 'webhook')",
                                      (payment_id, step_no, outcome, "card_declined" if outcome == "failed" else None))
                    if steps:
                        idle = 0
                    elif billing_done.is_set():
                        idle += 1
                    time.sleep(0.01)
        except Exception as exc:  # reported below
            errors.append("provider: " + repr(exc))

    threads = [threading.Thread(target=biller) for _ in range(3)]
    providers = [threading.Thread(target=provider, args=(s,)) for s in range(3)]
    for t in threads + providers:
        t.start()
    for t in threads:
        t.join()
    billing_done.set()
    for t in providers:
        t.join()
    assert not errors, errors

    with connect(database) as conn:
        conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        april = "tenant_id = %s AND period_start = '2026-04-01'"
        assert conn.execute(f"SELECT count(*) FROM fincore.invoices WHERE {april}", (TENANT,)).fetchone()[0] == N
        failed = conn.execute(f"SELECT id, attempts FROM fincore.invoices WHERE {april} AND status = 'open'",
                              (TENANT,)).fetchall()
        assert failed and all(a == 1 for _, a in failed), failed
        # The declined ones: the dunning retry, which the provider now accepts.
        for invoice_id, attempts in failed:
            with conn.transaction():
                conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                conn.execute("SELECT fincore.retry_invoice(%s, %s)", (invoice_id, attempts))
                payment_id = conn.execute("SELECT payment_id FROM fincore.invoices WHERE tenant_id = %s AND id = %s",
                                          (TENANT, invoice_id)).fetchone()[0]
                conn.execute("SELECT fincore.payment_step_result(%s, 1, 'succeeded')", (payment_id,))

        assert conn.execute(f"SELECT count(*) FROM fincore.invoices WHERE {april} AND status = 'paid'",
                            (TENANT,)).fetchone()[0] == N
        assert conn.execute("SELECT count(*) FROM fincore.subscriptions WHERE tenant_id = %s AND status = 'active'",
                            (TENANT,)).fetchone()[0] == N
        # Each invoice charged the provider at most once for what its credit did not cover.
        charged = dict(conn.execute(
            "SELECT i.customer_account, coalesce(sum(p.captured), 0) FROM fincore.invoices i "
            "LEFT JOIN fincore.payments p ON p.tenant_id = i.tenant_id AND p.metadata->>'invoice_id' = i.id::text "
            f"WHERE i.{april.replace('AND ', 'AND i.')} GROUP BY i.customer_account", (TENANT,)).fetchall())
        assert charged == {c: PRICE - credit for c, credit in credits.items()}
        card_after = sum(conn.execute("SELECT debits_posted FROM fincore.balance(%s)", (c,)).fetchone()[0]
                         for c in cards)
        assert card_after - card_before == sum(PRICE - c for c in credits.values())
        for customer, credit in credits.items():
            pending, available = conn.execute("SELECT debits_pending, posted FROM fincore.balance(%s)",
                                              (customer,)).fetchone()
            assert (pending, available) == (0, 0), (customer, credit, pending, available)
        dp, dpo, cp, cpo = conn.execute("SELECT debits_pending, debits_posted, credits_pending, credits_posted "
                                        "FROM fincore.balance(%s)", (receivable,)).fetchone()
        assert (dp, cp) == (0, 0) and dpo == cpo, (dp, dpo, cp, cpo)
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
