"""A database made at 0.1.0 upgrades in place, and is then the same as a new one.

One database is created at fincore 0.1.0 (sql/releases/fincore--0.1.0.sql, the release as it
was), given data, and upgraded with ALTER EXTENSION fincore UPDATE through sql/upgrades/; another
is created at the current version.  Their catalogues must agree on everything a user or fincore
relies on: every function (definition, volatility, strictness, parallel safety, security, settings,
comment, privileges), every table, column, index, constraint, trigger, policy and view, and the
privileges on them.  Then the upgraded database's data still proves the books.
"""
import psycopg
import pytest

from conftest import connect

OLD = "0.1.0"

# One query per kind of object; each returns sorted rows of text that must be equal.
CATALOGUE = {
    "functions": """
        SELECT p.oid::regprocedure::text, pg_catalog.pg_get_functiondef(p.oid),
               p.provolatile, p.proisstrict, p.proparallel, p.prosecdef, p.proleakproof,
               coalesce(p.proconfig::text, ''), coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), ''),
               coalesce(p.proacl::text, '')
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'fincore'::regnamespace AND p.prokind <> 'a'""",
    "aggregates": """
        SELECT p.oid::regprocedure::text, coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), '')
          FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'fincore'::regnamespace AND p.prokind = 'a'""",
    "relations": """
        SELECT c.relname::text, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity,
               coalesce(c.reloptions::text, ''), coalesce(c.relacl::text, ''),
               coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), '')
          FROM pg_catalog.pg_class c WHERE c.relnamespace = 'fincore'::regnamespace""",
    "columns": """
        SELECT c.relname::text, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
               a.attnotnull, coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '')
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'fincore'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": """
        SELECT i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid)
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
         WHERE c.relnamespace = 'fincore'::regnamespace""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname::text, pg_catalog.pg_get_constraintdef(c.oid)
          FROM pg_catalog.pg_constraint c WHERE c.connamespace = 'fincore'::regnamespace""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname::text, pg_catalog.pg_get_triggerdef(t.oid)
          FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'fincore'::regnamespace AND NOT t.tgisinternal""",
    "policies": """
        SELECT p.polrelid::regclass::text, p.polname::text, p.polcmd::text, p.polpermissive,
               p.polroles::regrole[]::text, coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), ''),
               coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '')
          FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
         WHERE c.relnamespace = 'fincore'::regnamespace""",
    "views": """
        SELECT c.relname::text, pg_catalog.pg_get_viewdef(c.oid)
          FROM pg_catalog.pg_class c WHERE c.relnamespace = 'fincore'::regnamespace AND c.relkind = 'v'""",
    "types": """
        SELECT t.typname::text, t.typtype::text, coalesce(pg_catalog.obj_description(t.oid, 'pg_type'), '')
          FROM pg_catalog.pg_type t WHERE t.typnamespace = 'fincore'::regnamespace""",
    "operators": """
        SELECT o.oid::regoperator::text, o.oprcode::text FROM pg_catalog.pg_operator o
         WHERE o.oprnamespace = 'fincore'::regnamespace""",
    "extension members": """
        SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
         WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'fincore'""",
    "configuration tables": """
        SELECT c.oid::regclass::text FROM pg_catalog.pg_extension e, unnest(e.extconfig) AS c(oid)
         WHERE e.extname = 'fincore'""",
}


def snapshot(dbname):
    with connect(dbname) as conn:
        return {kind: sorted(tuple(str(v) for v in row) for row in conn.execute(sql).fetchall())
                for kind, sql in CATALOGUE.items()}


@pytest.fixture(scope="module")
def upgraded_and_new():
    names = ("fincore_it_upgraded", "fincore_it_new")
    with connect("postgres") as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    with connect(names[0]) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute(f"CREATE EXTENSION fincore VERSION '{OLD}' CASCADE")
        # Data made by 0.1.0: a tenant, accounts (one hot), transfers, a hold, a job, an event.
        conn.execute("SELECT fincore.create_tenant('Old', 'aaaaaaaa-0090-4000-8000-000000000001')")
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant('aaaaaaaa-0090-4000-8000-000000000001')")
            a = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            b = conn.execute("SELECT fincore.create_account('USD', flags => '{debits_must_not_exceed_credits}')").fetchone()[0]
            h = conn.execute("SELECT fincore.create_account('USD', flags => '{hot}')").fetchone()[0]
            conn.execute("SELECT fincore.transfer(%s, %s, 10000)", (a, b))
            conn.execute("SELECT fincore.transfer(%s, %s, 300)", (b, h))
            conn.execute("SELECT fincore.transfer(%s, %s, 500, 'aaaaaaaa-0090-4000-8000-0000000000f1', pending => true)", (b, a))
            conn.execute("SELECT fincore.enqueue('old', '{}')")
            # 0.2.0's library serves 0.1.0's tables until the update: a batch of 0.1.0's requests
            # (16 fields), one of which fails on the state (nothing to record it in yet).
            results = conn.execute(
                "SELECT array_agg(result ORDER BY index) FROM fincore.create_transfers(ARRAY["
                " ROW(NULL, %s, %s, 5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
                " ROW(NULL, %s, %s, 999999, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
                "]::fincore.transfer_request[])", (a, b, b, a)).fetchone()[0]
            assert results == ["ok", "exceeds_credits"], results
        # 0.1.0's keys are the ids alone: there, another tenant's transfer and account ids are
        # refused (ZF320 / id_already_used, ZF325); 0.2.0's keys lead with the tenant.
        conn.execute("SELECT fincore.create_tenant('Other', 'bbbbbbbb-0090-4000-8000-000000000002')")
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant('bbbbbbbb-0090-4000-8000-000000000002')")
            c = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            d = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            for sql, args, state in (
                    ("SELECT fincore.transfer(%s, %s, 1, 'aaaaaaaa-0090-4000-8000-0000000000f1')", (c, d), "ZF320"),
                    ("SELECT fincore.create_account('USD', id => %s)", (a,), "ZF325")):
                with pytest.raises(psycopg.Error) as err, conn.transaction():
                    conn.execute(sql, args)
                assert err.value.sqlstate == state, (sql, err.value)
            results = conn.execute(
                "SELECT array_agg(result ORDER BY index) FROM fincore.create_transfers(ARRAY["
                " ROW('aaaaaaaa-0090-4000-8000-0000000000f1', %s, %s, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                "     NULL, NULL, NULL, NULL, NULL)]::fincore.transfer_request[])", (c, d)).fetchone()[0]
            assert results == ["id_already_used"], results
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'fincore'").fetchone()[0] == OLD
        conn.execute("ALTER EXTENSION fincore UPDATE")
    with connect(names[1]) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION fincore CASCADE")
    yield names
    with connect("postgres") as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgraded_database_is_at_the_current_version(upgraded_and_new):
    versions = []
    for name in upgraded_and_new:
        with connect(name) as conn:
            versions.append(conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'fincore'").fetchone()[0])
    assert versions[0] == versions[1] != OLD, versions


@pytest.mark.parametrize("kind", sorted(CATALOGUE))
def test_upgraded_catalogue_equals_a_new_one(upgraded_and_new, kind):
    upgraded, new = (snapshot(name)[kind] for name in upgraded_and_new)
    missing = [row for row in new if row not in upgraded]
    extra = [row for row in upgraded if row not in new]
    # Name the objects that differ (their first column); the rows themselves can be long.
    assert not missing and not extra, (
        f"{kind} differ: as a new database has them but the upgraded one not {[r[0] for r in missing[:10]]}; "
        f"as the upgraded one has them {[r[0] for r in extra[:10]]}; first difference {missing[:1]} vs {extra[:1]}")


def test_old_data_works_after_the_upgrade(upgraded_and_new):
    with connect(upgraded_and_new[0]) as conn:
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant('aaaaaaaa-0090-4000-8000-000000000001')")
            conn.execute("SELECT fincore.post_pending('aaaaaaaa-0090-4000-8000-0000000000f1', 200)")
            assert conn.execute("SELECT fincore.rollup_hot_accounts(10)").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
            # 0.2.0's requests: a failure on the state is recorded, a closing hold closes its account.
            a, b = conn.execute("SELECT min(id::text)::uuid, max(id::text)::uuid FROM fincore.accounts "
                                "WHERE tenant_id = 'aaaaaaaa-0090-4000-8000-000000000001' AND flags IN (0, 1)").fetchone()
            results = conn.execute(
                "SELECT array_agg(result ORDER BY index) FROM fincore.create_transfers(ARRAY["
                " ROW('aaaaaaaa-0090-4000-8000-0000000000f2', %s, %s, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                "     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
                " ROW('aaaaaaaa-0090-4000-8000-0000000000f3', %s, 'aaaaaaaa-0090-4000-8000-0000000000ff', 1, NULL, NULL,"
                "     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
                " ROW('aaaaaaaa-0090-4000-8000-0000000000f4', %s, %s, 0, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL,"
                "     NULL, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL)"
                "]::fincore.transfer_request[])", (a, b, a, a, b)).fetchone()[0]
            assert results == ["ok", "credit_account_not_found", "ok"], results
            assert conn.execute("SELECT result FROM fincore.failed_transfers").fetchall() == [("credit_account_not_found",)]
            assert conn.execute("SELECT status FROM fincore.accounts WHERE id = %s", (a,)).fetchone()[0] == "closed"
            assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
            job = conn.execute("SELECT * FROM fincore.dequeue('old')").fetchone()
            assert job is not None


def test_a_consumer_reads_ledger_events_across_the_upgrade():
    """Ledger events are outbox rows under 0.1.0's tables and transfer rows after the update; a
    consumer (and one backend, with its plans) reads both, in seq order, each once."""
    name = "fincore_it_upgrade_events"
    tenant = "aaaaaaaa-0091-4000-8000-000000000001"
    with connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with connect(name, options=f"-c fincore.tenant={tenant}") as conn:
            conn.execute("SET client_min_messages = warning")
            conn.execute(f"CREATE EXTENSION fincore VERSION '{OLD}' CASCADE")
            conn.execute("SELECT fincore.create_tenant('Old', %s)", (tenant,))
            conn.execute("SELECT fincore.subscribe('across', '{ledger}')")
            a = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            b = conn.execute("SELECT fincore.create_account('USD')").fetchone()[0]
            made = [conn.execute("SELECT id FROM fincore.transfer(%s, %s, %s)", (a, b, n)).fetchone()[0]
                    for n in (1, 2, 3)]
            got = []
            with conn.transaction():
                first = conn.execute("SELECT id, seq, payload->>'id' FROM fincore.poll('across', 1)").fetchall()
                conn.execute("SELECT fincore.ack('across', %s)", (first[0][0],))
            got += first
            assert conn.execute("SELECT count(*) FROM fincore.outbox_events WHERE topic = 'ledger'").fetchone()[0] == 3

            conn.execute("ALTER EXTENSION fincore UPDATE")
            made += [conn.execute("SELECT id FROM fincore.transfer(%s, %s, %s)", (b, a, n)).fetchone()[0]
                     for n in (4, 5)]
            assert conn.execute("SELECT count(*) FROM fincore.transfers WHERE event_seq IS NOT NULL").fetchone()[0] == 2
            while True:
                with conn.transaction():
                    rows = conn.execute("SELECT id, seq, payload->>'id' FROM fincore.poll('across', 2)").fetchall()
                    if rows:
                        conn.execute("SELECT fincore.ack('across', %s)", (rows[-1][0],))
                if not rows:
                    break
                got += rows
            assert [r[2] for r in got] == [str(t) for t in made], "every transfer once, in order"
            assert [r[1] for r in got] == sorted(r[1] for r in got)
    finally:
        with connect("postgres") as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
