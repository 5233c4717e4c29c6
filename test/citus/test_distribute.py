"""fincore.distribute(): fincore's tables placed on Citus as fincore.distribution_plan() says.

Global tables are reference tables, a tenant's tables are distributed by tenant_id and colocated
with fincore.accounts, the outbox and the queue stay on the coordinator; a second call changes
nothing; a user's table is colocated with fincore's; a wrong one, or a call off the coordinator,
is refused with a ZF7xx SQLSTATE and changes nothing.
"""
import psycopg
import pytest

from conftest import WORKERS, connect


def placements(conn):
    return dict(conn.execute(
        "SELECT p.logicalrelid::text, CASE p.partmethod WHEN 'n' THEN 'reference' ELSE 'distributed' END"
        "  FROM pg_dist_partition p"
        " WHERE p.logicalrelid::regclass::text LIKE 'fincore.%'").fetchall())


def test_distribute_places_every_table_of_the_plan(distributed):
    with connect() as conn:
        plan = dict(conn.execute("SELECT relation::text, placement FROM fincore.distribution_plan()").fetchall())
        assert placements(conn) == plan
        assert sorted(distributed) == sorted(f"{r}: {p}" for r, p in plan.items())
        # One colocation group for every distributed table: a tenant's rows are on one shard's node.
        groups = conn.execute(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition"
            " WHERE partmethod = 'h' AND logicalrelid::regclass::text LIKE 'fincore.%'").fetchone()[0]
        assert groups == 1
        # The outbox and the queue stay on the coordinator, as plain tables.
        for table in ("fincore.outbox_events", "fincore.outbox_consumers", "fincore.jobs", "fincore.job_archive"):
            assert table not in placements(conn), table
        # The foreign keys among placed tables are back.
        fks = {r[0] for r in conn.execute(
            "SELECT conrelid::regclass::text || ' -> ' || confrelid::regclass::text FROM pg_constraint"
            " WHERE contype = 'f' AND connamespace = 'fincore'::regnamespace").fetchall()}
        assert {"fincore.fee_schedules -> fincore.fee_schedule_codes", "fincore.fee_schedules -> fincore.tenants",
                "fincore.tenant_members -> fincore.tenants", "fincore.outbox_settings -> fincore.tenants"} <= fks, fks


def test_distribute_again_changes_nothing(distributed):
    with connect() as conn:
        before = placements(conn)
        assert conn.execute("SELECT * FROM fincore.distribute()").fetchall() == []
        assert placements(conn) == before


def test_a_user_table_is_colocated_with_fincore(distributed):
    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS public.orders")
        conn.execute("CREATE TABLE public.orders (tenant_id uuid NOT NULL, id bigint NOT NULL,"
                     " transfer_id uuid, PRIMARY KEY (tenant_id, id))")
        assert conn.execute("SELECT * FROM fincore.distribute('public.orders')").fetchall() == [
            ("public.orders: distributed",)]
        same = conn.execute(
            "SELECT (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'public.orders'::regclass)"
            "     = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'fincore.accounts'::regclass)"
        ).fetchone()[0]
        assert same
        # Again: nothing to do.
        assert conn.execute("SELECT * FROM fincore.distribute('public.orders')").fetchall() == []


@pytest.mark.parametrize("ddl, why", [
    ("CREATE TABLE public.no_tenant (id bigint PRIMARY KEY)", "no tenant_id"),
    ("CREATE TABLE public.text_tenant (tenant_id text NOT NULL, id bigint, PRIMARY KEY (tenant_id, id))",
     "tenant_id is not a uuid"),
])
def test_a_wrong_user_table_is_refused(distributed, ddl, why):
    name = ddl.split()[2]
    with connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(ddl)
        with pytest.raises(psycopg.Error) as err:
            conn.execute(f"SELECT * FROM fincore.distribute('{name}')")
        assert err.value.sqlstate == "ZF702", why
        assert conn.execute("SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = %s::regclass",
                            (name,)).fetchone()[0] == 0


def test_a_table_distributed_otherwise_is_refused(distributed):
    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS public.by_id")
        conn.execute("CREATE TABLE public.by_id (tenant_id uuid NOT NULL, id bigint PRIMARY KEY)")
        conn.execute("SELECT create_distributed_table('public.by_id', 'id')")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT * FROM fincore.distribute('public.by_id')")
        assert err.value.sqlstate == "ZF702"


def test_distribute_off_the_coordinator_is_refused(distributed):
    with connect(WORKERS[0]) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT * FROM fincore.distribute()")
        assert err.value.sqlstate == "ZF701"
