"""Tenant isolation through a real PgBouncer in transaction pooling mode.

Two clients of different tenants share ONE server connection (pool size 1) and
interleave transactions on it.  Each transaction sets its claims the way
PostgREST does (SET LOCAL ROLE, set_config(..., true)), in either claim style
(request.jwt.claims, or PostgREST < 9's request.jwt.claim.<name>), or uses set_tenant; a
transaction must only ever see its own tenant's rows, and nothing one client
set may survive into the next transaction on the shared server connection.
"""
import random

import psycopg
import pytest

from conftest import connect

TENANT = {"A": "aaaaaaaa-0000-4000-8000-00000000000a", "B": "bbbbbbbb-0000-4000-8000-00000000000b"}
USER = {"A": "aaaaaaaa-1111-4000-8000-00000000000a", "B": "bbbbbbbb-1111-4000-8000-00000000000b"}
ROWS = {"A": 3, "B": 5}


@pytest.fixture(scope="module")
def setup(database):
    with connect(database) as conn:
        conn.execute("""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
                    CREATE ROLE authenticated NOLOGIN;
                END IF;
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fincore_it_backend') THEN
                    CREATE ROLE fincore_it_backend NOLOGIN;
                END IF;
            END $$""")
        conn.execute("SELECT fincore.grant_app_role('authenticated')")
        conn.execute("SELECT fincore.grant_app_role('fincore_it_backend', true)")
        for t in TENANT:
            conn.execute("SELECT fincore.create_tenant(%s, %s)", (f"tenant {t}", TENANT[t]))
        conn.execute("CREATE TABLE public.notes (id serial PRIMARY KEY, tenant_id uuid NOT NULL, body text)")
        conn.execute("CREATE INDEX ON public.notes (tenant_id)")
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT fincore.protect('public.notes')")
        conn.execute("GRANT SELECT ON public.notes TO authenticated, fincore_it_backend")
        for t in TENANT:
            for i in range(ROWS[t]):
                conn.execute("INSERT INTO public.notes (tenant_id, body) VALUES (%s, %s)", (TENANT[t], f"{t}{i}"))
    return database


def bouncer_client(pgbouncer):
    host, port, db = pgbouncer
    # No server-side prepared statements: PgBouncer 1.18 cannot carry them across transactions.
    return psycopg.connect(host=host, port=port, dbname=db, user="any", password="", autocommit=False,
                           prepare_threshold=None)


def claims(t):
    return ('{"sub":"%s","role":"authenticated","tenant_id":"%s"}' % (USER[t], TENANT[t]))


def test_clients_share_one_server_connection(setup, pgbouncer):
    a, b = bouncer_client(pgbouncer), bouncer_client(pgbouncer)
    try:
        pids = set()
        for c in (a, b, a, b):
            pids.add(c.execute("SELECT pg_backend_pid()").fetchone()[0])
            c.commit()
        assert len(pids) == 1, f"expected one shared server connection, saw backends {pids}"
    finally:
        a.close()
        b.close()


def test_interleaved_requests_never_see_the_other_tenant(setup, pgbouncer):
    clients = {"A": bouncer_client(pgbouncer), "B": bouncer_client(pgbouncer)}
    rng = random.Random(20261123)
    seen = {"jwt": 0, "legacy": 0, "set_tenant": 0, "nothing": 0}
    try:
        for step in range(600):
            t = rng.choice("AB")
            c = clients[t]
            how = rng.choice(["jwt", "jwt", "legacy", "legacy", "set_tenant", "nothing"])
            if how == "jwt":
                c.execute("SET LOCAL ROLE authenticated")
                c.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims(t),))
            elif how == "legacy":
                # PostgREST < 9: one setting per claim, request.jwt.claims untouched.
                c.execute("SET LOCAL ROLE authenticated")
                c.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (USER[t],))
                c.execute("SELECT set_config('request.jwt.claim.tenant_id', %s, true)", (TENANT[t],))
            elif how == "set_tenant":
                c.execute("SET LOCAL ROLE fincore_it_backend")
                c.execute("SELECT fincore.set_tenant(%s)", (TENANT[t],))
            else:
                # Neither claims nor a tenant: whatever the previous transaction on the
                # shared server connection set must be gone.
                c.execute("SET LOCAL ROLE authenticated")
            tenant = c.execute("SELECT fincore.tenant_id()::text").fetchone()[0]
            rows = c.execute("SELECT tenant_id::text, body FROM public.notes ORDER BY id").fetchall()
            c.commit()
            seen[how] += 1
            if how == "nothing":
                assert tenant is None, f"step {step}: a tenant survived into {t}'s transaction: {tenant}"
                assert rows == [], f"step {step}: {t} without claims saw {rows}"
            else:
                assert tenant == TENANT[t], f"step {step}: {t} got tenant {tenant}"
                assert len(rows) == ROWS[t], f"step {step}: {t} saw {rows}"
                assert all(r[0] == TENANT[t] for r in rows), f"step {step}: {t} saw another tenant's rows: {rows}"
        assert min(seen.values()) > 0, seen
    finally:
        for c in clients.values():
            c.close()


def test_a_failed_transaction_leaves_nothing_behind(setup, pgbouncer):
    a, b = bouncer_client(pgbouncer), bouncer_client(pgbouncer)
    try:
        a.execute("SET LOCAL ROLE fincore_it_backend")
        a.execute("SELECT fincore.set_tenant(%s)", (TENANT["A"],))
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1 / 0")
        a.rollback()
        b.execute("SET LOCAL ROLE authenticated")
        assert b.execute("SELECT fincore.tenant_id(), count(*) FROM public.notes").fetchone() == (None, 0)
        b.commit()
    finally:
        a.close()
        b.close()
