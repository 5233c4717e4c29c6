"""64 clients spend against one limit, with holds in flight (docs/limits.md).

Twice: once with a tenant-wide daily amount limit (one counter for the whole
tenant), once with a daily amount limit per payer instead, whose counters only
their accounts' locks protect; each time with a count limit per account (a
counter per payer, created by whichever client comes first).  Clients make transfers and holds from random payers
(a third of them hot accounts, whose legs would not lock their rows without a limit)
to a hot sink whose credits lock nothing, so the limit's own locks are what serialise them,
and post or void their holds, for FINCORE_LIMIT_SECONDS (default 10).

Afterwards: no client saw anything but exceeds_limit (no deadlock, no
serialization failure); what the ledger holds as counted (posted transfers, posts,
open holds) never exceeds the maximum and is exactly what the counter says;
each payer's count is what its counter says; verify() is clean.
"""
import os
import random
import threading
import time
import uuid

import psycopg
import pytest

from conftest import connect

SECONDS = int(os.environ.get("FINCORE_LIMIT_SECONDS", "10"))
CLIENTS = 64
PAYERS = 12
MAX_AMOUNT = 200_000
MAX_COUNT = 400


def payer(i):
    return f"c2000000-0000-4000-8000-{i:012d}"


SINK = "c3000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize("tenant_wide", [True, False], ids=["with-a-tenant-wide-limit", "per-account-limits-only"])
def test_64_clients_never_overrun_a_limit(database, tenant_wide):
    # Without the tenant-wide limit, whose counter every transfer locks, nothing serialises the
    # payers' transfers but their accounts' locks: the per-account counters rely on those alone.
    TENANT = "c1000000-0000-4000-8000-00000000000c" if tenant_wide else "c1000000-0000-4000-8000-00000000000d"
    CLAIMS = f'{{"tenant_id":"{TENANT}"}}'
    max_amount = MAX_AMOUNT if tenant_wide else MAX_AMOUNT // 10
    with connect(database) as conn:
        conn.execute("SELECT fincore.create_tenant('limits under load', %s)", (TENANT,))
        conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (CLAIMS,))
        for i in range(PAYERS):
            # debits_must_not_exceed_credits is off: payers may go negative; a third are hot.
            conn.execute("SELECT fincore.create_account('USD', 1, %s::text[], id => %s)",
                         (["hot"] if i % 3 == 0 else [], payer(i)))
        conn.execute("SELECT fincore.create_account('USD', 2, '{hot}', id => %s)", (SINK,))
        if tenant_wide:
            conn.execute("SELECT fincore.create_limit('tenant-daily', %s, currency => 'USD', per => 'scope')", (max_amount,))
        else:
            conn.execute("SELECT fincore.create_limit('tenant-daily', %s, currency => 'USD')", (max_amount,))
        conn.execute("SELECT fincore.create_limit('payer-count', %s, metric => 'count', window_kind => 'lifetime', "
                     "scope => 'account_code', account_code => 1)", (MAX_COUNT,))

    problems, refused, done = [], [0], [0]
    lock = threading.Lock()
    deadline = time.time() + SECONDS

    def client(n):
        rnd = random.Random(n)
        holds = []
        with psycopg.connect(dbname=database, autocommit=True) as c:
            c.execute("SELECT set_config('request.jwt.claims', %s, false)", (CLAIMS,))
            while time.time() < deadline:
                try:
                    r = rnd.random()
                    if holds and r < 0.3:
                        hid = holds.pop(rnd.randrange(len(holds)))
                        if rnd.random() < 0.5:
                            c.execute("SELECT fincore.void_pending(%s)", (hid,))
                        else:
                            c.execute("SELECT fincore.post_pending(%s, 1 + %s)", (hid, rnd.randrange(50)))
                    elif r < 0.4:
                        # A batch: two payers, the second linked to the first.
                        a, b = rnd.sample(range(PAYERS), 2)
                        rows = c.execute(
                            "SELECT result FROM fincore.create_transfers(ARRAY["
                            "ROW(NULL, %s, %s, %s, 0, false, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, "
                            "    NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request, "
                            "ROW(NULL, %s, %s, %s, 0, false, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, "
                            "    NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request])",
                            (payer(a), SINK, rnd.randrange(1, 500), payer(b), SINK, rnd.randrange(1, 500))).fetchall()
                        results = {x[0] for x in rows}
                        if not results <= {"ok", "exceeds_limit", "linked_event_failed"}:
                            raise AssertionError(f"batch results {results}")
                        if "ok" not in results:
                            with lock:
                                refused[0] += 1
                    else:
                        pending = rnd.random() < 0.4
                        hid = str(uuid.uuid4())
                        c.execute("SELECT fincore.transfer(%s, %s, %s, id => %s, pending => %s)",
                                  (payer(rnd.randrange(PAYERS)), SINK, rnd.randrange(50, 1000), hid, pending))
                        if pending:
                            holds.append(hid)
                    with lock:
                        done[0] += 1
                except psycopg.Error as e:
                    if e.sqlstate == "ZF333":
                        with lock:
                            refused[0] += 1
                    else:
                        with lock:
                            problems.append(f"{e.sqlstate}: {e}")
                except AssertionError as e:
                    with lock:
                        problems.append(str(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 120)
    assert not any(t.is_alive() for t in threads), "a client is stuck"
    assert not problems, "\n".join(problems[:20])
    assert done[0] > 100 and refused[0] > 0, (done, refused)

    with connect(database) as conn:
        conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (CLAIMS,))
        counted = conn.execute(
            "SELECT coalesce(sum(t.amount) FILTER (WHERE t.kind IN ('posted', 'post')), 0) "
            "     + coalesce(sum(t.amount) FILTER (WHERE t.kind = 'pending' AND NOT EXISTS "
            "         (SELECT 1 FROM fincore.transfers r WHERE r.pending_id = t.id)), 0) "
            "  FROM fincore.transfers t WHERE t.tenant_id = %s AND t.debit_account_id <> %s",
            (TENANT, SINK)).fetchone()[0]
        if tenant_wide:
            used = conn.execute(
                "SELECT c.used FROM fincore.limit_counters c JOIN fincore.limits l ON l.id = c.limit_id "
                " WHERE l.name = 'tenant-daily' AND l.tenant_id = %s", (TENANT,)).fetchone()[0]
            assert counted <= max_amount, f"overrun: {counted} counted against a maximum of {max_amount}"
            assert used == counted, f"the counter says {used}, the ledger {counted}"
        else:
            per_payer = dict(conn.execute(
                "SELECT t.debit_account_id::text, coalesce(sum(t.amount) FILTER (WHERE t.kind IN ('posted', 'post')), 0) "
                "     + coalesce(sum(t.amount) FILTER (WHERE t.kind = 'pending' AND NOT EXISTS "
                "         (SELECT 1 FROM fincore.transfers r WHERE r.pending_id = t.id)), 0) "
                "  FROM fincore.transfers t WHERE t.tenant_id = %s AND t.debit_account_id <> %s GROUP BY 1",
                (TENANT, SINK)).fetchall())
            used = dict(conn.execute(
                "SELECT c.subject::text, c.used FROM fincore.limit_counters c JOIN fincore.limits l ON l.id = c.limit_id "
                " WHERE l.name = 'tenant-daily' AND l.tenant_id = %s", (TENANT,)).fetchall())
            assert all(v <= max_amount for v in per_payer.values()), f"overrun: {per_payer}"
            assert {k: v for k, v in used.items() if v} == {k: v for k, v in per_payer.items() if v}
        counts = dict(conn.execute(
            "SELECT c.subject::text, c.used FROM fincore.limit_counters c JOIN fincore.limits l ON l.id = c.limit_id "
            " WHERE l.name = 'payer-count' AND l.tenant_id = %s", (TENANT,)).fetchall())
        made = dict(conn.execute(
            "SELECT t.debit_account_id::text, count(*) FILTER (WHERE t.kind = 'posted') "
            "     + count(*) FILTER (WHERE t.kind = 'pending' AND NOT EXISTS "
            "         (SELECT 1 FROM fincore.transfers r WHERE r.pending_id = t.id AND r.kind = 'void')) "
            "  FROM fincore.transfers t WHERE t.tenant_id = %s AND t.kind IN ('posted', 'pending') "
            "   AND t.debit_account_id <> %s GROUP BY 1", (TENANT, SINK)).fetchall())
        assert all(v <= MAX_COUNT for v in counts.values()), counts
        assert {k: v for k, v in counts.items() if v} == {k: v for k, v in made.items() if v}
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
