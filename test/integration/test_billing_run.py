"""billing_run from several workers at once (docs/billing.md): each due period is billed once.

200 subscriptions whose period has ended are renewed by 4 sessions running fincore.billing_run()
at the same time, in small batches, until none is due: every subscription gets exactly one new
period line and one renewal invoice, paid from its customer's account; a fifth run bills nothing;
the ledger's invariants hold.
"""
import threading

from conftest import connect

TENANT = "00000000-0000-4000-8000-00000000b111"
N = 200


def test_concurrent_billing_runs_bill_each_period_once(database):
    with connect(database) as conn, conn.transaction():
        conn.execute("SELECT fincore.create_tenant('billing runs', %s)", (TENANT,))
        conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        receivable = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
        revenue = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
        conn.execute("SELECT fincore.set_billing_accounts('USD', %s, %s)", (receivable, revenue))
        product = conn.execute("SELECT fincore.create_product('runs')").fetchone()[0]
        price = conn.execute("SELECT fincore.create_price(%s, 1000, 'USD')", (product,)).fetchone()[0]
        for _ in range(N):
            customer = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            conn.execute("SELECT fincore.create_subscription(%s, %s)", (customer, price))
        # Every period ended: rewound to March (the first invoices, made at creation, took the
        # opening lines).
        conn.execute("UPDATE fincore.subscriptions SET status = 'active', anchor = '2026-03-01', "
                     "period_start = '2026-03-01', period_end = '2026-04-01', billed_from = '2026-03-01', billed = 0 "
                     "WHERE tenant_id = %s", (TENANT,))

    with connect(database) as conn:
        revenue_before = conn.execute("SELECT credits_posted FROM fincore.accounts WHERE id = %s",
                                      (revenue,)).fetchone()[0]
    renewed, errors = [], []
    barrier = threading.Barrier(4)

    def worker():
        try:
            with connect(database) as c:
                barrier.wait()
                while True:
                    with c.transaction():
                        n = c.execute("SELECT fincore.billing_run('2026-04-02', 7)").fetchone()[0]
                    renewed.append(n)
                    if n == 0:
                        break
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(renewed) == N, f"renewed {sum(renewed)} of {N}"
    with connect(database) as conn:
        assert conn.execute("SELECT fincore.billing_run('2026-04-02')").fetchone()[0] == 0
        per_sub = conn.execute(
            "SELECT count(*) FILTER (WHERE l.kind = 'period' AND l.span_start = '2026-04-01'), "
            "       (SELECT count(*) FROM fincore.invoices i WHERE i.tenant_id = s.tenant_id AND i.subscription_id = s.id "
            "           AND i.period_start = '2026-04-01') "
            "FROM fincore.subscriptions s JOIN fincore.subscription_lines l "
            "  ON l.tenant_id = s.tenant_id AND l.subscription_id = s.id "
            "WHERE s.tenant_id = %s GROUP BY s.tenant_id, s.id", (TENANT,)).fetchall()
        assert len(per_sub) == N and set(per_sub) == {(1, 1)}, set(per_sub)
        assert conn.execute("SELECT count(*) FROM fincore.invoices WHERE tenant_id = %s AND status = 'paid' "
                            "AND period_start = '2026-04-01'", (TENANT,)).fetchone()[0] == N
        assert conn.execute("SELECT credits_posted FROM fincore.accounts WHERE id = %s",
                            (revenue,)).fetchone()[0] - revenue_before == N * 1000
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
