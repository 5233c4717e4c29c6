"""Fee schedules across backends: every backend's compiled cache follows
definitions made by others, also inside REPEATABLE READ transactions, and two
racing definitions of overlapping versions cannot both commit.
"""
import threading

import psycopg
import pytest

from conftest import connect

TENANT = "fee1fee1-0000-4000-8000-000000000001"
CLAIMS = '{"tenant_id": "%s"}' % TENANT


@pytest.fixture(scope="module")
def fees_db(database):
    with connect(database) as conn:
        conn.execute("SELECT fincore.create_tenant('integration fees', %s)", (TENANT,))
    return database


def tenant_conn(db, **kwargs):
    conn = connect(db, **kwargs)
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (CLAIMS,))
    return conn


def fee(conn, code, amount, at="now()"):
    return conn.execute(f"SELECT fincore.calculate_fee(%s, %s, at => {at})", (code, amount)).fetchone()[0]


def test_other_backends_see_a_new_version(fees_db):
    with tenant_conn(fees_db) as reader, tenant_conn(fees_db) as writer:
        writer.execute("""SELECT fincore.define_fee_schedule('it_card', 'USD',
                          '{"components": [{"type": "flat", "amount": 100}]}', '2020-01-01')""")
        assert fee(reader, "it_card", 1) == 100          # compiled and cached by the reader
        assert fee(reader, "it_card", 1) == 100
        writer.execute("SELECT fincore.end_fee_schedule('it_card', now())")
        writer.execute("""SELECT fincore.define_fee_schedule('it_card', 'USD',
                          '{"components": [{"type": "flat", "amount": 250}]}', now())""")
        assert fee(reader, "it_card", 1) == 250, "the reader's cache was not invalidated"
        assert fee(reader, "it_card", 1, at="'2021-01-01'") == 100


def test_an_uncommitted_definition_is_not_seen_and_a_rollback_leaves_nothing(fees_db):
    with tenant_conn(fees_db) as reader, tenant_conn(fees_db) as writer:
        writer.execute("BEGIN")
        writer.execute("""SELECT fincore.define_fee_schedule('it_pending', 'USD',
                          '{"components": [{"type": "flat", "amount": 7}]}', '2020-01-01')""")
        assert fee(writer, "it_pending", 1) == 7         # the writer sees its own definition
        with pytest.raises(psycopg.Error) as err:
            fee(reader, "it_pending", 1)
        assert err.value.sqlstate == "ZF401"
        writer.execute("ROLLBACK")
        with pytest.raises(psycopg.Error) as err:
            fee(writer, "it_pending", 1)
        assert err.value.sqlstate == "ZF401", "the writer kept a rolled-back schedule in its cache"


def test_repeatable_read_does_not_poison_the_cache(fees_db):
    """A backend whose old snapshot misses a new version must not cache that miss."""
    with tenant_conn(fees_db) as reader, tenant_conn(fees_db) as writer:
        writer.execute("""SELECT fincore.define_fee_schedule('it_rr', 'USD',
                          '{"components": [{"type": "flat", "amount": 1}]}', '2020-01-01', '2030-01-01')""")
        assert fee(reader, "it_rr", 1, at="'2025-01-01'") == 1          # cached
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT 1 FROM fincore.tenants")                   # the snapshot
        writer.execute("""SELECT fincore.define_fee_schedule('it_rr', 'USD',
                          '{"components": [{"type": "flat", "amount": 2}]}', '2030-01-01')""")
        # Locking the table processes the writer's invalidation: the cache is dropped ...
        reader.execute("SELECT count(*) FROM fincore.fee_schedules")
        # ... and reloaded here, inside a transaction whose snapshot predates version 2.
        assert fee(reader, "it_rr", 1, at="'2025-01-01'") == 1
        reader.execute("COMMIT")
        assert fee(reader, "it_rr", 1, at="'2031-01-01'") == 2, "a stale cache entry survived the transaction"


def test_racing_overlapping_definitions(fees_db):
    """Two backends define overlapping versions at once: exactly one commits."""
    results = []
    barrier = threading.Barrier(2)

    def define(amount):
        with tenant_conn(fees_db) as conn:
            try:
                conn.execute("BEGIN")
                barrier.wait()
                conn.execute("""SELECT fincore.define_fee_schedule('it_race', 'USD',
                                jsonb_build_object('components', jsonb_build_array(
                                    jsonb_build_object('type', 'flat', 'amount', %s::int))), '2020-01-01')""",
                             (amount,))
                conn.execute("COMMIT")
                results.append("ok")
            except psycopg.Error as e:
                results.append(e.sqlstate)

    threads = [threading.Thread(target=define, args=(a,)) for a in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == ["ZF408", "ok"], results
    with tenant_conn(fees_db) as conn:
        assert conn.execute("SELECT count(*) FROM fincore.fee_schedules WHERE code = 'it_race'").fetchone()[0] == 1


def test_many_backends_agree(fees_db):
    """Several backends calculate while the schedule changes; each sees a committed version."""
    with tenant_conn(fees_db) as writer:
        writer.execute("""SELECT fincore.define_fee_schedule('it_many', 'USD',
                          '{"components": [{"type": "percentage", "rate": 0.01}]}', '2020-01-01')""")
    conns = [tenant_conn(fees_db) for _ in range(8)]
    try:
        for c in conns:
            assert fee(c, "it_many", 10000) == 100
        with tenant_conn(fees_db) as writer:
            writer.execute("BEGIN")
            writer.execute("SELECT fincore.end_fee_schedule('it_many', now())")
            writer.execute("""SELECT fincore.define_fee_schedule('it_many', 'USD',
                              '{"components": [{"type": "percentage", "rate": 0.02}]}', now())""")
            for c in conns:
                assert fee(c, "it_many", 10000) == 100      # not committed yet
            writer.execute("COMMIT")
        for c in conns:
            assert fee(c, "it_many", 10000) == 200
    finally:
        for c in conns:
            c.close()
