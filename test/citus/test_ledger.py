"""The ledger through the Citus coordinator: every call touches one shard, and the books hold.

- Each API call of a tenant (fee legs included) runs as single-shard statements only: with
  citus.multi_task_query_log_level = error, Citus refuses any statement that would need more
  than one task, so a call that completes proves it (and EXPLAIN shows one task).
- Several tenants, several clients each, transfers, batches, holds (posted, voided, expired),
  reversals and hot accounts at once; afterwards verify() is empty and in every tenant and
  currency the debits equal the credits.
- The same id from many clients at once creates one transfer.
"""
import json
import random
import threading
import uuid

import psycopg
import pytest

from conftest import WORKERS, connect

TENANTS = [uuid.UUID(f"00000000-0000-4000-8000-0000000c{n:04x}") for n in range(1, 5)]
ACCOUNTS = 20


def acct(n):
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012x}")


def req(debit, credit, amount, id=None, pending=None, post=None, void=None, reversal_of=None, linked=None):
    """A fincore.transfer_request literal's fields (22)."""
    return (id, debit, credit, amount, None, pending, None, post, void, reversal_of, linked,
            None, None, None, None, None, None, None, None, None, None, None)


def batch_sql(n):
    rows = ", ".join(["ROW(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                      "::fincore.transfer_request"] * n)
    return f"SELECT array_agg(result ORDER BY index) FROM fincore.create_transfers(ARRAY[{rows}])"


@pytest.fixture(scope="module")
def tenants(distributed):
    with connect() as conn:
        for i, t in enumerate(TENANTS):
            conn.execute("SELECT fincore.create_tenant(%s, %s) WHERE NOT EXISTS "
                         "(SELECT 1 FROM fincore.tenants WHERE id = %s)", (f"citus-{i}", t, t))
            with conn.transaction():
                conn.execute("SELECT fincore.set_tenant(%s)", (t,))
                for n in range(1, ACCOUNTS + 1):
                    conn.execute("SELECT fincore.create_account('USD', id => %s)", (acct(n),))
                conn.execute("SELECT fincore.create_account('USD', id => %s, flags => '{hot}')", (acct(999),))
                conn.execute("SELECT fincore.create_account('USD', id => %s, flags => '{history}')", (acct(998),))
    return TENANTS


def test_explain_shows_one_task(tenants):
    with connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT * FROM fincore.accounts WHERE tenant_id = %s AND id = %s", (tenants[0], acct(1))))
        assert "Task Count: 1" in plan, plan


def test_every_call_runs_on_one_shard(tenants):
    t = tenants[0]
    with connect() as conn, conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.define_fee_schedule('card', 'USD', "
                     "'{\"components\": [{\"type\": \"percentage\", \"rate\": \"0.029\"}, "
                     "{\"type\": \"flat\", \"amount\": 30}]}')")
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        # A transfer with its fee leg (the schedule read from the tenant's shard).
        conn.execute("SELECT fincore.transfer(%s, %s, 1000, fee_schedule => 'card', fee_account => %s)",
                     (acct(1), acct(2), acct(3)))
        conn.execute("SELECT fincore.create_account('USD', id => %s)", (acct(500),))
        tid = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 10)", (acct(1), acct(2))).fetchone()[0]
        conn.execute("SELECT fincore.transfer(%s, %s, 10, id => %s)", (acct(1), acct(2), tid))   # a replay
        conn.execute("SELECT fincore.transfer(%s, %s, 5)", (acct(1), acct(999)))               # hot
        conn.execute("SELECT fincore.transfer(%s, %s, 5)", (acct(1), acct(998)))               # history
        hold = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 30, pending => true)", (acct(2), acct(3))).fetchone()[0]
        conn.execute("SELECT fincore.post_pending(%s, 20)", (hold,))
        hold = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 30, pending => true)", (acct(2), acct(3))).fetchone()[0]
        conn.execute("SELECT fincore.void_pending(%s)", (hold,))
        conn.execute("SELECT fincore.reverse_transfer(%s, 4)", (tid,))
        results = conn.execute(batch_sql(3), req(acct(1), acct(2), 1) + req(acct(2), acct(3), 1)
                               + req(acct(3), acct(999), 1)).fetchone()[0]
        assert results == ["ok", "ok", "ok"], results
        assert conn.execute("SELECT posted FROM fincore.balance(%s)", (acct(2),)).fetchone()[0] is not None
        assert conn.execute("SELECT count(*) FROM fincore.account_transfers(%s)", (acct(2),)).fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM fincore.account_balances(%s)", (acct(998),)).fetchone()[0] == 1
        conn.execute("SELECT fincore.freeze_account(%s)", (acct(500),))
        conn.execute("SELECT fincore.unfreeze_account(%s)", (acct(500),))
        conn.execute("SELECT fincore.close_account(%s)", (acct(500),))
        conn.commit()


def own_tenant(n):
    """A tenant of its own for a test that changes what every transfer of it meets."""
    t = uuid.UUID(f"00000000-0000-4000-8000-0000000d{n:04x}")
    with connect() as conn:
        conn.execute("SELECT fincore.create_tenant(%s, %s) WHERE NOT EXISTS "
                     "(SELECT 1 FROM fincore.tenants WHERE id = %s)", (f"citus-own-{n}", t, t))
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (t,))
            for a in range(1, 10):
                conn.execute("SELECT fincore.create_account('USD', id => %s)", (acct(a),))
    return t


def test_limits_run_on_one_shard(tenants):
    """Limits (docs/limits.md) on Citus: definitions, counters and refusals on the tenant's shard."""
    t = own_tenant(1)
    with connect() as conn, conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.create_limit('citus-daily', 100, currency => 'USD', scope => 'account', "
                     "account_id => %s)", (acct(4),))
        conn.execute("SELECT fincore.create_limit('citus-tenant', 1000000, currency => 'USD', per => 'scope', "
                     "window_kind => 'trailing', window_seconds => 600, direction => NULL)")
        conn.execute("SELECT fincore.set_account_customer(%s, 'citus-customer')", (acct(4),))
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.transfer(%s, %s, 30)", (acct(4), acct(5)))
        conn.execute("SELECT fincore.transfer(%s, %s, 30)", (acct(4), acct(5)))   # a counter that has a row
        hold = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 40, pending => true)",
                            (acct(4), acct(5))).fetchone()[0]
        with pytest.raises(psycopg.Error) as refused:
            with conn.transaction():
                conn.execute("SELECT fincore.transfer(%s, %s, 1)", (acct(4), acct(5)))
        assert refused.value.sqlstate == "ZF333"
        conn.execute("SELECT fincore.void_pending(%s)", (hold,))
        results = conn.execute(batch_sql(2), req(acct(4), acct(5), 40) + req(acct(4), acct(5), 1)).fetchone()[0]
        assert results == ["ok", "exceeds_limit"], results
        remaining = dict(conn.execute("SELECT name, remaining FROM fincore.limit_remaining(%s)", (acct(4),)).fetchall())
        assert remaining["citus-daily"] == 0, remaining
        conn.commit()


def test_rules_run_on_one_shard(tenants):
    """Rules (docs/limits.md, "Rules") on Citus: a rejection, a flag, a review hold and its job, decisions."""
    t = own_tenant(2)
    with connect() as conn, conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.create_rule('citus-big', '{\"field\": \"amount\", \"op\": \"gt\", \"value\": 1000}', "
                     "'reject', 'active')")
        conn.execute("SELECT fincore.create_rule('citus-flag', '{\"field\": \"amount\", \"op\": \"ge\", \"value\": 500}', "
                     "'flag', 'active')")
        conn.execute("SELECT fincore.create_rule('citus-review', '{\"field\": \"code\", \"op\": \"eq\", \"value\": 9}', "
                     "'review', 'active')")
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        flagged = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 600)", (acct(6), acct(7))).fetchone()[0]
        with pytest.raises(psycopg.Error) as refused:
            with conn.transaction():
                conn.execute("SELECT fincore.transfer(%s, %s, 1001)", (acct(6), acct(7)))
        assert refused.value.sqlstate == "ZF334"
        results = conn.execute(batch_sql(1), req(acct(6), acct(7), 2000)).fetchone()[0]
        assert results == ["rule_rejected"], results
        held = conn.execute("SELECT id, kind FROM fincore.transfer(%s, %s, 10, code => 9)", (acct(6), acct(7))).fetchone()
        assert held[1] == "pending"
        assert conn.execute("SELECT count(*) FROM fincore.decisions WHERE tenant_id = %s AND transfer_id = %s",
                            (t, flagged)).fetchone()[0] == 1
        conn.execute("SELECT fincore.approve_review(%s)", (held[0],))
        conn.commit()
    with connect() as conn:
        assert conn.execute("SELECT count(*) FROM fincore.jobs WHERE queue = 'fincore.review' AND tenant_id = %s",
                            (t,)).fetchone()[0] == 1


def test_payments_run_on_one_shard(tenants):
    """Payments (docs/payments.md) on Citus: every call of a payment's life on the tenant's shard."""
    t = own_tenant(3)
    with connect() as conn, conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.create_payment_provider('citus-pay', %s, disputes_account => %s, "
                     "loss_account => %s, dispute_fee => 5)", (acct(1), acct(2), acct(3)))
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        pid = conn.execute("SELECT id FROM fincore.create_payment(100, 'USD', 'citus-pay', %s, "
                           "capture_method => 'manual', multicapture => true, confirm => true, "
                           "idempotency_key => %s)", (acct(4), f"citus-order-{uuid.uuid4()}")).fetchone()[0]
        assert conn.execute("SELECT status FROM fincore.payment_step_result(%s, 1, 'succeeded')",
                            (pid,)).fetchone()[0] == "succeeded"
        step = conn.execute("SELECT step_no FROM fincore.capture_payment(%s, 40, false)", (pid,)).fetchone()[0]
        conn.execute("SELECT fincore.payment_step_result(%s, %s, 'succeeded')", (pid, step))
        step = conn.execute("SELECT step_no FROM fincore.capture_payment(%s, 20)", (pid,)).fetchone()[0]
        conn.execute("SELECT fincore.payment_step_result(%s, %s, 'succeeded', source => 'webhook')", (pid, step))
        with pytest.raises(psycopg.Error) as refused:
            with conn.transaction():
                conn.execute("SELECT fincore.refund_payment(%s, 61)", (pid,))
        assert refused.value.sqlstate == "ZF905"
        step = conn.execute("SELECT step_no FROM fincore.refund_payment(%s, 50)", (pid,)).fetchone()[0]
        key = conn.execute("SELECT provider_key FROM fincore.payment_steps WHERE tenant_id = %s AND payment_id = %s "
                           "AND step_no = %s", (t, pid, step)).fetchone()[0]
        conn.execute("SELECT fincore.payment_webhook_result(%s, 'succeeded')", (key,))
        conn.execute("SELECT fincore.open_dispute(%s)", (pid,))
        row = conn.execute("SELECT status, authorized, captured, released, refunded, disputed FROM fincore.payment(%s)",
                           (pid,)).fetchone()
        assert row == ("disputed", 100, 60, 40, 50, 10), row
        assert conn.execute("SELECT status FROM fincore.resolve_dispute(%s, false)", (pid,)).fetchone()[0] == "dispute_lost"
        balances = conn.execute("SELECT debits_pending, debits_posted, credits_posted FROM fincore.accounts "
                                "WHERE tenant_id = %s AND id = %s", (t, acct(4))).fetchone()
        assert balances == (0, 60, 50), balances
        conn.commit()
    with connect() as conn:
        assert conn.execute("SELECT count(*) FROM fincore.jobs WHERE queue = 'payments:citus-pay' AND tenant_id = %s",
                            (t,)).fetchone()[0] >= 4
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0


def test_subscriptions_run_on_one_shard(tenants):
    """Billing (docs/billing.md) on Citus: catalogue, a subscription, a preview and its change on one shard."""
    t = own_tenant(4)
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.set_billing_accounts('USD', %s, %s)", (acct(1), acct(2)))
        product = conn.execute("SELECT fincore.create_product('citus-pro')").fetchone()[0]
        flat = conn.execute("SELECT fincore.create_price(%s, 3000, 'USD')", (product,)).fetchone()[0]
        seats = conn.execute("SELECT fincore.create_price(%s, 1000, 'USD', scheme => 'per_seat')", (product,)).fetchone()[0]
        sub = conn.execute("SELECT id FROM fincore.create_subscription(%s, %s, idempotency_key => %s)",
                           (acct(5), flat, f"citus-sub-{uuid.uuid4()}")).fetchone()[0]
        preview = conn.execute("SELECT credit, debit FROM fincore.preview_change(%s, %s, 3)", (sub, seats)).fetchone()
        at = conn.execute("SELECT now()").fetchone()[0]
        change = conn.execute("SELECT credit, debit FROM fincore.change_subscription(%s, %s, 3, %s)",
                              (sub, seats, at)).fetchone()
        assert change == preview, (change, preview)
        assert conn.execute("SELECT status FROM fincore.update_subscription_status(%s, 'cancel')",
                            (sub,)).fetchone()[0] == "canceled"
        conn.commit()


def test_billing_run_renews_on_citus(tenants):
    """billing_run on Citus: the due subscription of a tenant renewed, invoiced and collected, once."""
    t = own_tenant(5)
    with connect() as conn, conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.set_billing_accounts('USD', %s, %s)", (acct(1), acct(2)))
        product = conn.execute("SELECT fincore.create_product('citus-run')").fetchone()[0]
        price = conn.execute("SELECT fincore.create_price(%s, 700, 'USD')", (product,)).fetchone()[0]
        sub = conn.execute("SELECT id FROM fincore.create_subscription(%s, %s)", (acct(6), price)).fetchone()[0]
        conn.execute("UPDATE fincore.subscriptions SET status = 'active', anchor = '2026-03-01', period_start = '2026-03-01', "
                     "period_end = '2026-04-01', billed_from = '2026-03-01', billed = 0 WHERE tenant_id = %s AND id = %s",
                     (t, sub))
    with connect() as conn:
        assert conn.execute("SELECT fincore.billing_run('2026-04-02')").fetchone()[0] >= 1
        assert conn.execute("SELECT fincore.billing_run('2026-04-02')").fetchone()[0] == 0
        row = conn.execute("SELECT status, total FROM fincore.invoices WHERE tenant_id = %s AND subscription_id = %s "
                           "AND period_start = '2026-04-01'", (t, sub)).fetchall()
        assert row == [("paid", 700)], row



def test_invoices_paid_through_a_provider_run_on_one_shard(tenants):
    """Billing's payment methods on Citus: the credit held, the provider charged, its answer pays."""
    t = own_tenant(7)
    with connect() as conn, conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.set_billing_accounts('USD', %s, %s)", (acct(1), acct(2)))
        conn.execute("SELECT fincore.create_payment_provider('citus-card', %s)", (acct(3),))
        product = conn.execute("SELECT fincore.create_product('citus-card')").fetchone()[0]
        price = conn.execute("SELECT fincore.create_price(%s, 900, 'USD')", (product,)).fetchone()[0]
        customer = conn.execute("SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}')"
                                ).fetchone()[0]
        conn.execute("SELECT fincore.transfer(%s, %s, 300)", (acct(9), customer))
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        sub = conn.execute("SELECT id FROM fincore.create_subscription(%s, %s)", (customer, price)).fetchone()[0]
        conn.execute("SELECT fincore.set_payment_method(%s, 'citus-card', %s)", (sub, acct(4)))
        inv = conn.execute("SELECT id FROM fincore.invoices WHERE tenant_id = %s AND subscription_id = %s",
                           (t, sub)).fetchone()[0]
        conn.execute("SELECT fincore.pay_invoice(%s)", (inv,))
        pid = conn.execute("SELECT payment_id FROM fincore.invoices WHERE tenant_id = %s AND id = %s",
                           (t, inv)).fetchone()[0]
        assert pid is not None
        conn.execute("SELECT fincore.payment_step_result(%s, 1, 'succeeded')", (pid,))
        row = conn.execute("SELECT i.status, s.status FROM fincore.invoices i JOIN fincore.subscriptions s "
                           "ON s.tenant_id = i.tenant_id AND s.id = i.subscription_id "
                           "WHERE i.tenant_id = %s AND i.id = %s", (t, inv)).fetchone()
        assert row == ("paid", "active"), row
        charged = conn.execute("SELECT amount FROM fincore.payments WHERE tenant_id = %s AND id = %s",
                               (t, pid)).fetchone()[0]
        assert charged == 600, charged
        conn.commit()
    with connect() as conn:
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0


def test_the_audit_chain_runs_on_one_shard(tenants):
    """The audit trail on Citus: a tenant's records sealed, digested, verified and proved on its shard."""
    t = own_tenant(8)
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        for n in range(5):
            conn.execute("SELECT fincore.transfer(%s, %s, %s)", (acct(1), acct(2), n + 1))
        conn.commit()
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        sealed = conn.execute("SELECT fincore.audit_seal(%s)", (t,)).fetchone()[0]
        assert sealed >= 5 + 9, sealed     # the own tenant's accounts and these transfers
        seq = conn.execute("SELECT seq FROM fincore.audit_digest(%s)", (t,)).fetchone()[0]
        ok, checked = conn.execute("SELECT ok, checked FROM fincore.audit_verify(%s)", (t,)).fetchone()
        assert ok and checked == seq, (ok, checked, seq)
        proof = conn.execute("SELECT fincore.audit_proof(%s, 3)", (t,)).fetchone()[0]
        assert proof["tree_size"] == seq and proof["root"] == proof["checkpoint"]["merkle_root"]
        conn.commit()


def test_stripe_events_run_on_one_shard(tenants):
    """Stripe in sync on Citus: a subscription and its invoice applied, each statement on one shard."""
    t = own_tenant(6)
    sub = {"id": "sub_c1", "customer": "cus_c1", "status": "active",
           "items": {"data": [{"price": {"id": "price_c1"}, "quantity": 2}]},
           "current_period_start": 1767225600, "current_period_end": 1769904000}
    events = [
        {"id": "evt_c1", "type": "customer.subscription.created", "created": 100, "data": {"object": sub}},
        {"id": "evt_c2", "type": "invoice.paid", "created": 101,
         "data": {"object": {"id": "in_c1", "subscription": "sub_c1", "status": "paid", "total": 1400,
                             "currency": "usd"}}},
        {"id": "evt_c3", "type": "customer.subscription.updated", "created": 50, "data": {"object": sub}},
    ]
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        product = conn.execute("SELECT fincore.create_product('citus-stripe')").fetchone()[0]
        conn.execute("SELECT fincore.create_price(%s, 700, 'USD', scheme => 'per_seat', external_id => 'price_c1')",
                     (product,))
        got = [conn.execute("SELECT fincore.apply_stripe_event(%s::jsonb)", (json.dumps(e),)).fetchone()[0]
               for e in events]
        assert got == ["applied", "applied", "unchanged"], got
        assert conn.execute("SELECT s.status, s.quantity, i.status, i.total FROM fincore.subscriptions s "
                            "JOIN fincore.invoices i ON i.tenant_id = s.tenant_id AND i.subscription_id = s.id "
                            "WHERE s.tenant_id = %s AND s.external_id = 'sub_c1'", (t,)).fetchall() == \
            [("active", 2, "paid", 1400)]
        conn.commit()

def worker(tenant, seed, errors, created):
    rnd = random.Random(seed)
    try:
        with connect() as conn:
            for step in range(60):
                with conn.transaction():
                    conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
                    d, c = rnd.sample(range(1, ACCOUNTS + 1), 2)
                    kind = rnd.random()
                    if kind < 0.4:
                        tid = conn.execute("SELECT id FROM fincore.transfer(%s, %s, %s)",
                                           (acct(d), acct(c), rnd.randint(1, 100))).fetchone()[0]
                        created.append((tenant, tid))
                    elif kind < 0.6:
                        n = rnd.randint(2, 6)
                        args = ()
                        for _ in range(n):
                            d, c = rnd.sample(range(1, ACCOUNTS + 1), 2)
                            args += req(acct(d), acct(c), rnd.randint(1, 50))
                        res = conn.execute(batch_sql(n), args).fetchone()[0]
                        assert res == ["ok"] * n, res
                    elif kind < 0.75:
                        hold = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 40, pending => true)",
                                            (acct(d), acct(c))).fetchone()[0]
                        if rnd.random() < 0.5:
                            conn.execute("SELECT fincore.post_pending(%s, %s)", (hold, rnd.randint(0, 40)))
                        else:
                            conn.execute("SELECT fincore.void_pending(%s)", (hold,))
                    elif kind < 0.85:
                        conn.execute("SELECT fincore.transfer(%s, %s, 3, pending => true, timeout => '1 millisecond')",
                                     (acct(d), acct(c)))
                    elif kind < 0.95:
                        conn.execute("SELECT fincore.transfer(%s, %s, 2)", (acct(d), acct(999)))
                    else:
                        tid = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 10)", (acct(d), acct(c))).fetchone()[0]
                        conn.execute("SELECT fincore.reverse_transfer(%s, 5)", (tid,))
    except Exception as exc:  # reported by the test
        errors.append(repr(exc))


def test_concurrent_tenants_keep_the_books(tenants):
    errors, created = [], []
    threads = [threading.Thread(target=worker, args=(t, 100 * i + k, errors, created))
               for i, t in enumerate(tenants) for k in range(2)]
    for th in threads:
        th.start()
    # Maintenance alongside: expiry and roll-up go tenant by tenant, one shard at a time.
    with connect() as conn:
        for _ in range(5):
            conn.execute("SELECT fincore.expire_pending()")
            conn.execute("SELECT fincore.rollup_hot_accounts()")
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    with connect() as conn:
        conn.execute("SELECT pg_sleep(0.01)")
        conn.execute("SELECT fincore.expire_pending()")
        conn.execute("SELECT fincore.rollup_hot_accounts()")
        assert conn.execute("SELECT * FROM fincore.verify()").fetchall() == []
        # Every tenant and currency sums to zero: debits equal credits, posted and pending.
        sums = conn.execute(
            "SELECT tenant_id, currency, sum(debits_posted) - sum(credits_posted), sum(debits_pending) - sum(credits_pending)"
            "  FROM fincore.account_balances GROUP BY 1, 2").fetchall()
        assert sums and all(r[2] == 0 and r[3] == 0 for r in sums), sums
        # Every transfer a client saw created is there, in its tenant.
        for tenant, tid in created:
            assert conn.execute("SELECT count(*) FROM fincore.transfers WHERE tenant_id = %s AND id = %s",
                                (tenant, tid)).fetchone()[0] == 1


def test_the_same_id_from_many_clients_creates_one_transfer(tenants):
    t, tid = tenants[1], uuid.uuid4()
    barrier, results, errors = threading.Barrier(8), [], []

    def go():
        try:
            with connect() as conn, conn.transaction():
                conn.execute("SELECT fincore.set_tenant(%s)", (t,))
                barrier.wait()
                results.append(conn.execute("SELECT id FROM fincore.transfer(%s, %s, 7, id => %s)",
                                            (acct(4), acct(5), tid)).fetchone()[0])
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert results == [tid] * 8
    with connect() as conn:
        assert conn.execute("SELECT count(*) FROM fincore.transfers WHERE tenant_id = %s AND id = %s",
                            (t, tid)).fetchone()[0] == 1
        # The same id in another tenant is that tenant's own transfer.
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (tenants[2],))
            conn.execute("SELECT fincore.transfer(%s, %s, 7, id => %s)", (acct(4), acct(5), tid))
        assert conn.execute("SELECT count(*) FROM fincore.transfers WHERE id = %s", (tid,)).fetchone()[0] == 2


def test_through_a_worker_events_are_refused_and_nothing_is_written(tenants):
    """The outbox and the queue are the coordinator's: on a worker, ZF703 rather than an event or
    a job no one would ever see; with the tenant's ledger events off, a transfer may go through
    any node."""
    t = tenants[3]
    with connect() as conn:
        before = conn.execute("SELECT count(*) FROM fincore.transfers WHERE tenant_id = %s", (t,)).fetchone()[0]
    with connect(WORKERS[0]) as w:
        for sql in ("SELECT fincore.transfer(%s, %s, 1)",
                    "SELECT fincore.emit('orders', 'order.paid', 'order', '1', '{}') WHERE %s IS NOT NULL AND %s IS NOT NULL",
                    "SELECT fincore.enqueue('mail', '{}') WHERE %s IS NOT NULL AND %s IS NOT NULL"):
            with pytest.raises(psycopg.Error) as err, w.transaction():
                w.execute("SELECT fincore.set_tenant(%s)", (t,))
                w.execute(sql, (acct(6), acct(7)))
            assert err.value.sqlstate == "ZF703", sql
        with pytest.raises(psycopg.Error) as err:
            w.execute("SELECT * FROM fincore.poll('anyone', 1)")
        assert err.value.sqlstate == "ZF703"
    with connect() as conn:
        assert conn.execute("SELECT count(*) FROM fincore.transfers WHERE tenant_id = %s", (t,)).fetchone()[0] == before
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (t,))
            conn.execute("SELECT fincore.set_ledger_events(false)")
    with connect(WORKERS[0]) as w, w.transaction():
        w.execute("SELECT fincore.set_tenant(%s)", (t,))
        w.execute("SELECT fincore.transfer(%s, %s, 1)", (acct(6), acct(7)))
    with connect() as conn:
        assert conn.execute("SELECT count(*) FROM fincore.transfers WHERE tenant_id = %s", (t,)).fetchone()[0] == before + 1
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (t,))
            conn.execute("SELECT fincore.set_ledger_events(true)")


def test_reconciliation_runs_on_one_shard(tenants):
    """Reconciliation on Citus: a statement imported (CSV and camt.053), matched under every kind of
    rule, a suggestion confirmed with its adjustment, a manual match and a break, each statement on
    the tenant's shard."""
    t = own_tenant(10)
    with connect(autocommit=False) as conn:
        conn.execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        conn.execute("SELECT fincore.set_tenant(%s)", (t,))
        conn.execute("SELECT fincore.recon_create_source('bank', %s, %s)",
                     (acct(1), '{"columns": {"booked_on": "d", "amount": "a", "reference": "r", "bank_ref": "b"}}'))
        conn.execute("SELECT fincore.recon_set_rule('bank', 'exact', 10, match_on => '{reference}')")
        conn.execute("SELECT fincore.recon_set_rule('bank', 'near', 20, match_on => '{reference}', tolerance => 5, "
                     "outcome => 'suggested', adjustment_account => %s)", (acct(3),))
        conn.execute("SELECT fincore.recon_set_rule('bank', 'split', 30, kind => 'one_to_many', group_by => 'reference')")
        conn.execute("SELECT fincore.recon_set_rule('bank', 'merge', 40, kind => 'many_to_one', group_by => 'reference')")
        for (amount, ref) in ((10000, "INV-1"), (2500, "INV-2"), (3000, "PAY-7"), (2000, "PAY-7"), (6000, "DEP-9"), (999, "X")):
            conn.execute("SELECT fincore.transfer(%s, %s, %s, metadata => jsonb_build_object('reference', %s::text, "
                         "'value_date', '2026-11-02'))", (acct(1), acct(2), amount, ref))
        imp = conn.execute("SELECT lines, stored FROM fincore.recon_import('bank', 'csv', %s)",
                           ("d,a,r,b\n2026-11-02,100.00,INV-1,B1\n2026-11-02,25.03,INV-2,B2\n2026-11-02,50.00,PAY-7,B3\n"
                            "2026-11-02,35.00,DEP-9,B4\n2026-11-02,25.00,DEP-9,B5\n2026-01-02,1.00,NOPE,B6\n",)).fetchone()
        assert imp == (6, 6)
        again = conn.execute("SELECT stored FROM fincore.recon_import('bank', 'csv', %s)",
                             ("d,a,r,b\n2026-11-02,100.00,INV-1,B1\n",)).fetchone()[0]
        assert again == 0
        camt = conn.execute("SELECT stored FROM fincore.recon_import('bank', 'camt053', %s)", (
            '<Document><BkToCstmrStmt><Stmt><Ntry><Amt Ccy="USD">7.00</Amt><CdtDbtInd>DBIT</CdtDbtInd>'
            '<BookgDt><Dt>2026-11-03</Dt></BookgDt><AcctSvcrRef>C1</AcctSvcrRef></Ntry></Stmt></BkToCstmrStmt></Document>',)).fetchone()[0]
        assert camt == 1
        run = conn.execute("SELECT matched, suggested, lines_unmatched, entries_unmatched, breaks "
                           "FROM fincore.recon_run('bank')").fetchone()
        assert run == (3, 1, 2, 1, 2), run
        match = conn.execute("SELECT id FROM fincore.recon_matches WHERE tenant_id = %s AND status = 'suggested'",
                             (t,)).fetchone()[0]
        assert conn.execute("SELECT status FROM fincore.recon_confirm(%s)", (match,)).fetchone()[0] == "confirmed"
        line = conn.execute("SELECT id FROM fincore.recon_lines WHERE tenant_id = %s AND reference = 'NOPE'", (t,)).fetchone()[0]
        entry = conn.execute("SELECT t.id FROM fincore.transfers t WHERE t.tenant_id = %s AND t.metadata->>'reference' = 'X'",
                             (t,)).fetchone()[0]
        conn.execute("SELECT fincore.recon_match(ARRAY[%s::uuid], ARRAY[%s::uuid], 'by hand', %s)", (line, entry, acct(3)))
        assert conn.execute("SELECT count(*) FROM fincore.recon_matched_entries WHERE tenant_id = %s", (t,)).fetchone()[0] == 8
        assert conn.execute("SELECT ledger_balance FROM fincore.recon_balance(ARRAY[%s::uuid], 'USD', clock_timestamp(), 0)",
                            (acct(1),)).fetchone()[0] == 24499 + 3 - 899
        conn.commit()
    with connect() as conn:
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
