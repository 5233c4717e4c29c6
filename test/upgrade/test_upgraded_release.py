"""A database made by the 0.1.0 release's own build, after this build was installed over it and
ALTER EXTENSION fincore UPDATE ran (./scripts/test --upgrade sets FINCORE_UPGRADED_DB).

- it is at this build's default version;
- its catalogue (functions, tables, columns, indexes, constraints, triggers, policies, views,
  types, operators, extension members, configuration tables, privileges, comments) equals a new
  install's (the queries of test/integration/test_upgrade.py);
- the data 0.1.0 wrote (test/upgrade/fill-0.1.0.sql) works: the books verify, its hold is posted,
  its consumers get the events they had not read and then new ones, each once, its jobs are
  claimed, its fee schedule and inbox answer as before.
"""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from conftest import connect  # noqa: E402
from test_upgrade import CATALOGUE, snapshot  # noqa: E402

UPGRADED = os.environ.get("FINCORE_UPGRADED_DB")
TENANT = "aaaaaaaa-0100-4000-8000-000000000001"
A1, A2 = "aaaaaaaa-0100-4000-8000-0000000000a1", "aaaaaaaa-0100-4000-8000-0000000000a2"

pytestmark = pytest.mark.skipif(not UPGRADED, reason="run by ./scripts/test --upgrade (FINCORE_UPGRADED_DB)")


def default_version():
    control = open(os.path.join(os.path.dirname(__file__), "..", "..", "fincore.control")).read()
    return re.search(r"^default_version = '([^']+)'", control, re.M).group(1)


@pytest.fixture(scope="module")
def fresh():
    name = "fincore_fresh_install"
    with connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    with connect(name) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION pgtap")
        conn.execute("CREATE EXTENSION fincore CASCADE")
    yield name
    with connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_upgraded_database_is_at_this_builds_version():
    with connect(UPGRADED) as conn:
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'fincore'").fetchone()[0] == \
            default_version()


@pytest.mark.parametrize("kind", sorted(CATALOGUE))
def test_the_upgraded_catalogue_equals_a_new_install(fresh, kind):
    upgraded, new = snapshot(UPGRADED)[kind], snapshot(fresh)[kind]
    missing = [row for row in new if row not in upgraded]
    extra = [row for row in upgraded if row not in new]
    assert not missing and not extra, (
        f"{kind} differ: a new install has {[r[0] for r in missing[:10]]} that the upgraded one has not; "
        f"the upgraded one has {[r[0] for r in extra[:10]]}; first difference {missing[:1]} vs {extra[:1]}")


def drain(conn, consumer):
    got = []
    while True:
        with conn.transaction():
            rows = conn.execute("SELECT id, type, aggregateid FROM fincore.poll(%s, 10)", (consumer,)).fetchall()
            if rows:
                conn.execute("SELECT fincore.ack(%s, %s)", (consumer, rows[-1][0]))
        if not rows:
            return got
        got.extend(rows)


def test_the_released_versions_data_works():
    with connect(UPGRADED, options=f"-c fincore.tenant={TENANT}") as conn:
        conn.execute("SET client_min_messages = warning")
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
        # The ledger consumer read the first of 0.1.0's three transfers: it gets the other two, then
        # the post of the hold (a transfer row's event now), once each.
        conn.execute("SELECT fincore.post_pending('aaaaaaaa-0100-4000-8000-0000000000f1', 200)")
        ledger = drain(conn, "released_ledger")
        assert [t for _, t, _ in ledger] == ["transfer.created", "transfer.created", "transfer.posted"], ledger
        assert len({i for i, _, _ in ledger}) == 3
        orders = drain(conn, "released_orders")
        assert [a for _, _, a in orders] == ["released-o1", "released-o2"], orders
        assert conn.execute("SELECT fincore.rollup_hot_accounts(10)").fetchone()[0] >= 0
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
        assert conn.execute("SELECT fincore.calculate_fee('released_card', 1000)").fetchone()[0] == 30
        assert conn.execute("SELECT fincore.inbox_accept('released_psp', 'released-msg-1', '{}')").fetchone()[0] is False
        jobs = conn.execute("SELECT payload->>'n' FROM fincore.dequeue('released', 10) ORDER BY 1").fetchall()
        assert jobs == [("1",), ("2",)], jobs
        # And new work after the update: a transfer, its event to the consumer.
        conn.execute("SELECT fincore.transfer(%s, %s, 5)", (A1, A2))
        assert [t for _, t, _ in drain(conn, "released_ledger")] == ["transfer.created"]
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
