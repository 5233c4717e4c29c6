"""pg_dump and pg_restore of a database using fincore (docs/operations.md, "Backup and restore").

A database is filled through the API: a tenant, accounts, transfers and a hold, a fee schedule,
the audit chain sealed, jobs (one running), rate limit policies, and three consumers left in the
middle of things (one with an open batch partly acknowledged, one with a failed event waiting
for its retry, one drained).  It is dumped with pg_dump -Fc and restored, as the runbook says,
twice: into another database of the same cluster, and into a new cluster (a private server whose
transaction ids are far behind this one's, so the dump's ids lie in its future).  In each:

- pg_restore runs without an error;
- verify() is clean and the audit chains verify;
- every consumer resumes exactly where it stopped: it gets the events the original database
  still had for it, each once, and then the events written after the restore;
- queues resume: the ready jobs are claimed, the running one keeps its lease;
- keys handed out by fincore's sequences are not handed out again (a new fee schedule code);
- the configuration came along (rate limit policies).
"""
import os
import subprocess
import tempfile

import psycopg
import pytest

from conftest import connect, pg_bindir, private_server

TENANT = "aaaaaaaa-0230-4000-8000-000000000001"
CONSUMERS = ("all_events", "ledger_reader", "orders_tenant")


def drain(conn, consumer):
    """Poll and acknowledge each event until nothing is left; the event ids in delivery order."""
    got = []
    while True:
        with conn.transaction():
            rows = conn.execute("SELECT id FROM fincore.poll(%s, 7)", (consumer,)).fetchall()
            for (event_id,) in rows:
                conn.execute("SELECT fincore.ack(%s, %s)", (consumer, event_id))
        if not rows:
            return got
        got.extend(str(r[0]) for r in rows)


def transfer(conn, debit, credit, amount):
    return conn.execute("SELECT id FROM fincore.transfer(%s, %s, %s)", (debit, credit, amount)).fetchone()[0]


@pytest.fixture(scope="module")
def dumped(database, tmp_path_factory):
    """The filled database, its dump, and what each consumer still has to read in it."""
    with connect(database, options=f"-c fincore.tenant={TENANT}") as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT fincore.create_tenant('Restored', %s)", (TENANT,))
        conn.execute("SELECT fincore.subscribe('all_events', '{*}')")
        conn.execute("SELECT fincore.subscribe('ledger_reader', '{ledger}')")
        conn.execute("SELECT fincore.subscribe('orders_tenant', '{orders}', tenant_scope => %s, backoff => '0')",
                     (TENANT,))
        a = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
        b = conn.execute("SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}')").fetchone()[0]
        for n in range(1, 6):
            transfer(conn, a, b, 1000 * n)
        conn.execute("SELECT fincore.transfer(%s, %s, 700, pending => true, timeout => '1 day')", (b, a))
        conn.execute("SELECT fincore.define_fee_schedule('card', 'USD', "
                     "'{\"components\": [{\"type\": \"flat\", \"amount\": 30}]}', '2020-01-01')")
        for n in range(4):
            conn.execute("SELECT fincore.emit('orders', 'order.placed', 'order', %s, %s)", (f"o{n}", f'{{"n": {n}}}'))
        conn.execute("SELECT fincore.set_rate_limit_policy('api', 10, '1 second', 5, tenant => %s)", (TENANT,))
        for n in range(3):
            conn.execute("SELECT fincore.enqueue('restore_q', %s)", (f'{{"n": {n}}}',))
        running = conn.execute("SELECT id FROM fincore.dequeue('restore_q', 1, '1 hour')").fetchone()[0]

        # ledger_reader: drained, then two more transfers it has not read.
        assert len(drain(conn, "ledger_reader")) == 6
        transfer(conn, a, b, 11)
        transfer(conn, a, b, 12)
        # all_events: an open batch, acknowledged part of the way.
        with conn.transaction():
            rows = conn.execute("SELECT id FROM fincore.poll('all_events', 4)").fetchall()
            conn.execute("SELECT fincore.ack('all_events', %s)", (rows[1][0],))
        # orders_tenant: one event failed, waiting for its retry; the rest unread.
        with conn.transaction():
            first = conn.execute("SELECT id FROM fincore.poll('orders_tenant', 1)").fetchone()[0]
            assert conn.execute("SELECT fincore.nack('orders_tenant', %s, 'try later')", (first,)).fetchone()[0] == "retry"
        conn.execute("SELECT fincore.audit_seal()")

    dump = str(tmp_path_factory.mktemp("dump") / "fincore.dump")
    os.chmod(os.path.dirname(dump), 0o777)
    subprocess.run([f"{pg_bindir()}/pg_dump", "-Fc", "-d", database, "-f", dump], check=True)
    roles = subprocess.run([f"{pg_bindir()}/pg_dumpall", "--roles-only"], check=True, capture_output=True,
                           text=True).stdout
    # What the original still has for each consumer, in the order it delivers it.
    with connect(database, options=f"-c fincore.tenant={TENANT}") as conn:
        rest = {c: drain(conn, c) for c in CONSUMERS}
    assert all(rest.values()), rest
    yield {"dump": dump, "roles": roles, "rest": rest, "accounts": (a, b), "running": running}


def restore(dump, dbname, env=None, host_args=()):
    # The runbook's command: triggers off while the rows go in (as a logical replica applies
    # them), so fincore's audit triggers do not record the restored rows as new changes.
    env = dict(os.environ if env is None else env)
    env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c session_replication_role=replica").strip()
    result = subprocess.run([f"{pg_bindir()}/pg_restore", "--exit-on-error", *host_args, "-d", dbname, dump],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def check_restored(conn, dumped, rebased):
    conn.execute("SET client_min_messages = error")
    a, b = dumped["accounts"]
    assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
    for tenant in (TENANT, "00000000-0000-0000-0000-000000000000"):   # the tenant's chain, the global one
        ok, checked, bad, reason = conn.execute(
            "SELECT ok, checked, first_bad_seq, reason FROM fincore.audit_verify(%s)", (tenant,)).fetchone()
        assert ok and checked > 0, (tenant, checked, bad, reason)
    assert conn.execute("SELECT count(*) FROM fincore.rate_limit_policies").fetchone()[0] == 1

    # Consumers: exactly what the original still had for each, then what is new.
    got = {c: drain(conn, c) for c in CONSUMERS}
    for c in CONSUMERS:
        assert sorted(got[c]) == sorted(dumped["rest"][c]), (c, got[c], dumped["rest"][c])
        assert len(set(got[c])) == len(got[c]), c
    assert conn.execute("SELECT count(*) FROM fincore.outbox_restores").fetchone()[0] == (1 if rebased else 0)
    new = str(conn.execute("SELECT fincore._ledger_event_id(t.event_seq, t.created_at) FROM fincore.transfers t "
                           "WHERE t.id = %s", (transfer(conn, a, b, 13),)).fetchone()[0])
    conn.execute("SELECT fincore.emit('orders', 'order.placed', 'order', 'o9', '{}')")
    after = {c: drain(conn, c) for c in CONSUMERS}
    assert after["ledger_reader"] == [new]
    assert len(after["all_events"]) == 2 and after["all_events"][0] == new
    assert len(after["orders_tenant"]) == 1
    lag = conn.execute("SELECT sum(pending) FROM fincore.consumer_lag()").fetchone()[0]
    assert lag == 0, lag

    # Queues: the ready jobs are claimed, the running one keeps its lease.
    claimed = conn.execute("SELECT id FROM fincore.dequeue('restore_q', 10)").fetchall()
    assert len(claimed) == 2 and dumped["running"] not in [r[0] for r in claimed]
    # Sequences: a new fee schedule code takes a key the dump did not have.
    conn.execute("SELECT fincore.define_fee_schedule('wire', 'USD', "
                 "'{\"components\": [{\"type\": \"flat\", \"amount\": 50}]}', '2020-01-01')")
    assert conn.execute("SELECT fincore.calculate_fee('wire', 1000)").fetchone()[0] == 50
    assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0


def test_restore_into_the_same_cluster(dumped):
    name = "fincore_it_restored"
    with connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        restore(dumped["dump"], name)
        with connect(name, options=f"-c fincore.tenant={TENANT}") as conn:
            check_restored(conn, dumped, rebased=False)
    finally:
        with connect("postgres") as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_restore_into_a_new_cluster_whose_transaction_ids_are_behind(dumped):
    with private_server() as server:
        with server() as admin:
            current = admin.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
            # The roles first (pg_dumpall --roles-only), as the runbook says; postgres exists.
            for statement in dumped["roles"].splitlines():
                if statement.startswith(("CREATE ROLE", "ALTER ROLE")) and " postgres" not in statement:
                    admin.execute(statement)
            admin.execute("CREATE DATABASE restored")
        with connect("postgres") as here:
            ours = here.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
        assert ours > current, "the new cluster's transaction ids must be behind the dump's for this test"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        restore(dumped["dump"], "restored", env, ("-h", server.host, "-p", str(server.port), "-U", "postgres"))
        with server("restored", options=f"-c fincore.tenant={TENANT}") as conn:
            check_restored(conn, dumped, rebased=True)
