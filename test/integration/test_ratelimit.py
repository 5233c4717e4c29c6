"""The shared-memory rate limiter with real clients (docs/rate-limits.md).

- 8 clients hammering one key for a few seconds are never allowed more than
  limit + rate * elapsed (limit = burst + 1), and are allowed nearly that many.
- In-flight slots are given back when the transaction commits or rolls back, when the
  client disconnects mid-transaction, when the backend is terminated, and when a backend
  is killed with SIGKILL (the server reinitialises shared memory).
- PostgREST, emulated exactly (log in as authenticator, SET LOCAL ROLE, the claims and
  request.path with set_config(..., true), then db-pre-request): a limited request gets
  SQLSTATE PGRST, which PostgREST answers with HTTP 429 and a Retry-After header.
- On a private server: without fincore in shared_preload_libraries, the limiter raises
  ZF751 saying how to enable it, while the ledger works; with a table of 1024 slots, idle
  keys give their slots to new ones, live keys keep their state under a flood of new keys,
  and fincore.rate_limit_when_full decides for keys that find no slot.
"""
import json
import math
import os
import signal
import threading
import time
import uuid

import psycopg
import pytest

from conftest import connect, free_port, private_server


# ---- one key, eight clients -------------------------------------------------------------

def test_eight_clients_on_one_key_never_exceed_the_quota(database):
    key = f"hammer-{uuid.uuid4()}"
    rate, burst, seconds = 2000, 50, 3.0
    allowed = [0] * 8
    calls = [0] * 8
    start = threading.Barrier(9)

    def client(i):
        with connect(database) as conn:
            start.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                row = conn.execute("SELECT count(*) FILTER (WHERE (fincore.rate_limit(%s, %s, '1 second', %s)).allowed), count(*)"
                                   "  FROM generate_series(1, 20)", (key, rate, burst)).fetchone()
                allowed[i] += row[0]
                calls[i] += row[1]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    total = sum(allowed)
    bound = (burst + 1) + rate * elapsed
    assert sum(calls) > 2 * total, "the clients must ask for more than the quota allows"
    assert total <= bound, f"{total} allowed in {elapsed:.3f} s, more than {bound:.0f}"
    # The limiter is not just refusing: the clients got nearly the quota.
    assert total >= 0.9 * rate * seconds, f"only {total} allowed in {elapsed:.3f} s"


# ---- in-flight slots ------------------------------------------------------------------------

def slot_free(database, key, max_=1):
    """Can another session take the (only) slot of key?  It gives it back at once."""
    with connect(database) as conn:
        with conn.transaction():
            return conn.execute("SELECT fincore.concurrency_acquire(%s, %s)", (key, max_)).fetchone()[0]


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_slots_are_given_back_at_transaction_end(database):
    key = f"slot-{uuid.uuid4()}"
    with connect(database) as conn:
        with conn.transaction():
            assert conn.execute("SELECT fincore.concurrency_acquire(%s, 1)", (key,)).fetchone()[0]
            assert not slot_free(database, key), "held by the open transaction"
        assert slot_free(database, key), "given back at commit"
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.transaction():
                assert conn.execute("SELECT fincore.concurrency_acquire(%s, 1)", (key,)).fetchone()[0]
                assert not slot_free(database, key)
                conn.execute("SELECT 1 / 0")
        assert slot_free(database, key), "given back at rollback"
        # Outside an explicit transaction the statement is the transaction.
        assert conn.execute("SELECT fincore.concurrency_acquire(%s, 1)", (key,)).fetchone()[0]
        assert slot_free(database, key)


def test_slots_are_given_back_when_the_client_goes_away(database):
    key = f"gone-{uuid.uuid4()}"
    # The client's connection drops mid-transaction.
    conn = connect(database, autocommit=False)
    assert conn.execute("SELECT fincore.concurrency_acquire(%s, 1)", (key,)).fetchone()[0]
    assert not slot_free(database, key)
    conn.pgconn.finish()
    assert wait_until(lambda: slot_free(database, key)), "given back when the client disconnected"
    # The backend is terminated (pg_terminate_backend: SIGTERM).
    conn = connect(database, autocommit=False)
    pid = conn.info.backend_pid
    assert conn.execute("SELECT fincore.concurrency_acquire(%s, 1)", (key,)).fetchone()[0]
    with connect(database) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    assert wait_until(lambda: slot_free(database, key)), "given back when the backend was terminated"
    conn.close()


# ---- PostgREST, emulated ----------------------------------------------------------------------

def postgrest_response(error):
    """What PostgREST answers for an error raised in a request (its PGRST and PTxyz rules)."""
    if error.sqlstate == "PGRST":
        body = json.loads(error.diag.message_primary)
        detail = json.loads(error.diag.message_detail)
        return detail["status"], detail.get("headers", {}), body
    if error.sqlstate and error.sqlstate.startswith("PT"):
        return int(error.sqlstate[2:]), {}, {"message": error.diag.message_primary}
    return 400, {}, {"code": error.sqlstate, "message": error.diag.message_primary}


@pytest.fixture(scope="module")
def postgrest(database):
    tenant = str(uuid.uuid4())
    with connect(database) as admin:
        admin.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN "
                      "CREATE ROLE authenticated NOLOGIN; END IF; "
                      "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN "
                      "CREATE ROLE authenticator LOGIN NOINHERIT; END IF; END $$")
        admin.execute("ALTER ROLE authenticator PASSWORD 'authenticator'")
        admin.execute("GRANT authenticated TO authenticator")
        admin.execute("SELECT fincore.grant_app_role('authenticated')")
        admin.execute("SELECT fincore.create_tenant('PostgREST tenant', %s)", (tenant,))
        admin.execute("SELECT fincore.set_rate_limit_policy('transfers', 3, '1 minute', 1, tenant => %s,"
                      " path_pattern => '/rpc/transfer%%')", (tenant,))
    return tenant


def request(database, tenant, sub, path):
    """One PostgREST request: (status, headers)."""
    claims = json.dumps({"sub": sub, "role": "authenticated", "tenant_id": tenant})
    with connect(database, user="authenticator", password="authenticator", autocommit=False) as conn:
        try:
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claims', %s, true), set_config('request.path', %s, true),"
                         " set_config('request.method', 'POST', true)", (claims, path))
            conn.execute("SELECT fincore.pre_request()")
            conn.execute("SELECT 1")        # the request's own query
            headers = conn.execute("SELECT current_setting('response.headers', true)").fetchone()[0]
            conn.commit()
            return 200, json.loads(headers) if headers else []
        except psycopg.Error as e:
            conn.rollback()
            status, headers, body = postgrest_response(e)
            return status, headers, body


def test_postgrest_gets_429_with_retry_after(database, postgrest):
    sub = str(uuid.uuid4())
    statuses = [request(database, postgrest, sub, "/rpc/transfer")[0] for _ in range(2)]
    assert statuses == [200, 200], "limit 2 (burst 1): two requests pass"
    status, headers, body = request(database, postgrest, sub, "/rpc/transfer")
    assert status == 429
    assert body["code"] == "ZF753" and body["message"] == "rate limit exceeded"
    retry = int(headers["Retry-After"])
    assert 1 <= retry <= 20, f"one request per 20 s: Retry-After {retry}"
    # Another subject, another path: their own allowances.
    assert request(database, postgrest, str(uuid.uuid4()), "/rpc/transfer")[0] == 200
    assert request(database, postgrest, sub, "/rpc/balance")[0] == 200


# ---- a private server: without the preload, and a small table --------------------------------

def test_without_the_preload_the_limiter_says_how_to_enable_it():
    with private_server() as conn, conn() as c:
        for sql in ["SELECT fincore.rate_limit('k', 1, '1 second', 1)",
                    "SELECT fincore.rate_limit_or_raise('k', 1, '1 second', 1)",
                    "SELECT fincore.concurrency_acquire('k', 1)", "SELECT fincore.concurrency_release('k')",
                    "SELECT fincore.rate_limit_reset('k')", "SELECT fincore.rate_limit_stats()"]:
            with pytest.raises(psycopg.Error) as err:
                c.execute(sql)
            assert err.value.sqlstate == "ZF751", sql
            assert err.value.diag.message_primary == "the rate limiter needs fincore in shared_preload_libraries"
            assert "shared_preload_libraries" in err.value.diag.message_hint
        # Nothing else needs it: a tenant, two accounts, a transfer; policies can be set.
        tenant = str(uuid.uuid4())
        c.execute("SELECT fincore.create_tenant('t', %s)", (tenant,))
        with c.transaction():
            c.execute("SELECT fincore.set_tenant(%s)", (tenant,))
            a = c.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            b = c.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            c.execute("SELECT fincore.transfer(%s, %s, 100)", (a, b))
            assert c.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
        c.execute("SELECT fincore.pre_request()")       # no policy: nothing to limit
        c.execute("SELECT fincore.set_rate_limit_policy('p', 1, '1 second', 1)")
        with pytest.raises(psycopg.Error) as err:
            c.execute("SELECT fincore.pre_request()")
        assert err.value.sqlstate == "ZF751", "a policy without the limiter is refused, not ignored"


def test_a_small_table_evicts_idle_keys_and_keeps_live_ones():
    with private_server(shared_preload_libraries="fincore", fincore__rate_limit_slots=1024) as conn, conn() as c:
        slots = c.execute("SELECT slots FROM fincore.rate_limit_stats()").fetchone()[0]
        assert slots >= 1024
        throttle = ("SELECT count(*) FILTER (WHERE (fincore.rate_limit('%s' || g, 1, %s, 0)).allowed)"
                    "  FROM generate_series(1, %s) g")
        # Idle keys: 3 x slots keys with a 50 ms allowance; once it is whole again they hold nothing.
        assert c.execute(throttle % ("short-", "'50 ms'", 3 * slots)).fetchone()[0] == 3 * slots
        time.sleep(0.1)
        # Live keys, 70% of the table: each takes a slot an idle key held, and keeps it.
        live = int(slots * 0.7)
        assert c.execute(throttle % ("live-", "'1 hour'", live)).fetchone()[0] == live
        assert c.execute(throttle % ("live-", "'1 hour'", live)).fetchone()[0] == 0, "every live key remembered"
        # A flood of new live keys, more than the table holds: the live keys keep their state.
        c.execute(throttle % ("flood-", "'1 hour'", 4 * slots))
        assert c.execute(throttle % ("live-", "'1 hour'", live)).fetchone()[0] == 0, "no live key was evicted"
        full = c.execute("SELECT full_events FROM fincore.rate_limit_stats()").fetchone()[0]
        assert full > 0, "the flood found the table full"
        # Full: fail open (the default) decides as for a new key and remembers nothing ...
        assert c.execute(throttle % ("late-", "'1 hour'", 2 * slots)).fetchone()[0] == 2 * slots
        # ... fail closed refuses.
        c.execute("SET fincore.rate_limit_when_full = deny")
        denied = c.execute("SELECT count(*) FILTER (WHERE NOT (fincore.rate_limit('late2-' || g, 1, '1 hour', 0)).allowed)"
                           "  FROM generate_series(1, %s) g" % (2 * slots)).fetchone()[0]
        assert denied > 0
        with pytest.raises(psycopg.Error) as err:
            c.execute("SELECT fincore.rate_limit_or_raise('late2-' || g, 1, '1 hour', 0) FROM generate_series(1, %s) g"
                      % (2 * slots))
        assert err.value.sqlstate == "ZF753" and "full" in err.value.diag.message_detail


def test_a_killed_backend_gives_its_slots_back():
    with private_server(shared_preload_libraries="fincore") as conn:
        holder = conn(autocommit=False)
        assert holder.execute("SELECT fincore.concurrency_acquire('k9', 1)").fetchone()[0]
        pid = holder.info.backend_pid
        with conn() as c:
            assert not c.execute("SELECT fincore.concurrency_acquire('k9', 1)").fetchone()[0]
        os.kill(pid, signal.SIGKILL)

        def taken_again():
            try:
                with conn() as c:
                    return c.execute("SELECT fincore.concurrency_acquire('k9', 1)").fetchone()[0]
            except psycopg.OperationalError:
                return False            # the server is restarting after the crash
        assert wait_until(taken_again, timeout=60), "the slot is free after the server's crash recovery"
        try:
            holder.close()
        except psycopg.Error:
            pass
