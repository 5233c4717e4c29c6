"""Row level security through the Citus coordinator, the way PostgREST calls fincore.

PostgREST logs in as authenticator, switches with SET LOCAL ROLE to the request's role and sets
the JWT claims with set_config(..., true), then calls its pre-request function
(db-pre-request = "fincore.pre_request").  On Citus the policies of distributed tables run on
the workers; fincore.pre_request() sets the claims again with SET LOCAL, which Citus propagates.
Citus opens its connections to the workers as the current role, so the app role must be able to
log in there (docs/scale-out.md).  Then an app role's read sees exactly its tenant's rows, its
calls reach only its tenant's accounts, and it cannot write fincore's tables or switch tenants.
"""
import json
import uuid

import psycopg
import pytest

from conftest import connect

A = uuid.UUID("00000000-0000-4000-8000-00000000a11a")
B = uuid.UUID("00000000-0000-4000-8000-00000000b11b")


def acct(t, n):
    """Account n of tenant t: an id only that tenant has."""
    return uuid.UUID(int=t.int + ((0x200 + n) << 32))


@pytest.fixture(scope="module")
def tenants(distributed):
    with connect() as admin:
        admin.execute("SET client_min_messages = warning")
        admin.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'citus_app') THEN "
                      "CREATE ROLE citus_app LOGIN; END IF; "
                      "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN "
                      "CREATE ROLE authenticator LOGIN NOINHERIT; END IF; END $$")
        admin.execute("GRANT citus_app TO authenticator")
        admin.execute("SELECT fincore.grant_app_role('citus_app')")
        for t, name in ((A, "rls-a"), (B, "rls-b")):
            admin.execute("SELECT fincore.create_tenant(%s, %s)", (name, t))
            with admin.transaction():
                admin.execute("SELECT fincore.set_tenant(%s)", (t,))
                for n in range(3):
                    admin.execute("SELECT fincore.create_account('USD', id => %s)", (acct(t, n),))
                admin.execute("SELECT fincore.transfer(%s, %s, 10)", (acct(t, 0), acct(t, 1)))
    return A, B


def as_app(conn, tenant, pre_request=True):
    """The statements PostgREST runs at the start of a request's transaction."""
    conn.execute("SET LOCAL ROLE citus_app")
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps({"tenant_id": str(tenant)}),))
    if pre_request:
        conn.execute("SELECT fincore.pre_request()")


def test_an_app_role_sees_exactly_its_tenant(tenants):
    with connect(user="authenticator") as conn:
        for tenant, other in ((A, B), (B, A)):
            with conn.transaction():
                as_app(conn, tenant)
                rows = conn.execute("SELECT DISTINCT tenant_id FROM fincore.accounts").fetchall()
                assert rows == [(tenant,)]
                assert conn.execute("SELECT count(*) FROM fincore.transfers").fetchone()[0] == 1
                assert {r[0] for r in conn.execute("SELECT tenant_id FROM fincore.account_balances")} == {tenant}
                assert conn.execute("SELECT posted FROM fincore.balance(%s)", (acct(tenant, 1),)).fetchone()[0] == 10
                # The other tenant's account: not found, for reads and for transfers.
                assert conn.execute("SELECT count(*) FROM fincore.accounts WHERE tenant_id = %s",
                                    (other,)).fetchone()[0] == 0
                with pytest.raises(psycopg.Error) as err, conn.transaction():
                    conn.execute("SELECT fincore.transfer(%s, %s, 1)", (acct(tenant, 0), acct(other, 1)))
                assert err.value.sqlstate == "ZF301"
                conn.execute("SELECT fincore.transfer(%s, %s, 1)", (acct(tenant, 0), acct(tenant, 2)))


def test_without_the_pre_request_function_an_app_role_sees_nothing(tenants):
    """Fails closed: the workers' policies see no tenant."""
    with connect(user="authenticator") as conn, conn.transaction():
        as_app(conn, A, pre_request=False)
        assert conn.execute("SELECT count(*) FROM fincore.accounts").fetchone()[0] == 0


@pytest.mark.parametrize("sql, state", [
    ("INSERT INTO fincore.transfers (id, tenant_id, debit_account_id, credit_account_id, amount, currency, kind,"
     " created_at) VALUES (gen_random_uuid(), '00000000-0000-4000-8000-00000000a11a', gen_random_uuid(),"
     " gen_random_uuid(), 1, 'USD', 'posted', now())", "42501"),
    ("UPDATE fincore.accounts SET credits_posted = 1000000", "42501"),
    ("SELECT fincore.set_tenant('00000000-0000-4000-8000-00000000b11b')", None),
])
def test_an_app_role_cannot_write_or_switch_tenants(tenants, sql, state):
    with connect(user="authenticator") as conn, conn.transaction():
        as_app(conn, A)
        with pytest.raises(psycopg.Error) as err, conn.transaction():
            conn.execute(sql)
        if state:
            assert err.value.sqlstate == state
        assert conn.execute("SELECT DISTINCT tenant_id FROM fincore.accounts").fetchall() == [(A,)]


def test_rate_limit_policies_apply_through_the_coordinator(tenants):
    """A tenant's policy (a distributed table) and a default (a reference table), applied by
    pre_request on the coordinator, whose shared memory holds the limits for the cluster."""
    with connect() as admin:
        admin.execute("SELECT fincore.set_rate_limit_policy('citus-limited', 1, '1 hour', 1, tenant => %s,"
                      " path_pattern => '/rpc/limited%%', key_by => 'tenant')", (A,))
        admin.execute("SELECT fincore.set_rate_limit_policy('citus-default', 1, '1 hour', 0,"
                      " path_pattern => '/rpc/limited%%', key_by => 'tenant', priority => 1000)")
    try:
        def request(tenant):
            with connect(user="authenticator") as conn:
                try:
                    with conn.transaction():
                        conn.execute("SET LOCAL ROLE citus_app")
                        conn.execute("SELECT set_config('request.jwt.claims', %s, true),"
                                     " set_config('request.path', '/rpc/limited', true)",
                                     (json.dumps({"tenant_id": str(tenant)}),))
                        conn.execute("SELECT fincore.pre_request()")
                        conn.execute("SELECT count(*) FROM fincore.accounts").fetchone()
                    return 200
                except psycopg.Error as e:
                    assert e.sqlstate == "PGRST", e
                    detail = json.loads(e.diag.message_detail)
                    assert int(detail["headers"]["Retry-After"]) >= 1
                    return detail["status"]
        assert [request(A) for _ in range(3)] == [200, 200, 429], "A's own policy: limit 2"
        assert [request(B) for _ in range(2)] == [200, 429], "B has none: the default, limit 1"
    finally:
        with connect() as admin:
            admin.execute("SELECT fincore.drop_rate_limit_policy('citus-limited', %s)", (A,))
            admin.execute("SELECT fincore.drop_rate_limit_policy('citus-default')")
