"""Partitioned consumers: several workers of one consumer, each aggregate to one of them, in order.

8 writers commit events of 32 aggregates of two tenants, and ledger transfers (whose events are
transfer rows), with random commit delays and rollbacks, while retention rotates the slots.
A consumer of 4 partitions is read by 4 workers at once, each polling its own partition, waiting
with wait_for_events when idle, and failing a tenth of its events (nack: retried later).
Afterwards:
- every committed event reached exactly one partition, once, and none of a rolled-back
  transaction;
- the partition each event reached is fincore.event_partition() of its aggregate;
- within each partition, the events of an aggregate none of whose events was retried came in
  commit order;
- consumer_lag() shows nothing pending on any partition.
Then: a partition refuses to acknowledge another partition's event (ZF506), and replay_dead()
by the consumer's name brings back every partition's dead letters, each to its own partition.
"""
import random
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import connect

TENANTS = ["0b0b0b0b-0100-4000-8000-000000000001", "0b0b0b0b-0100-4000-8000-000000000002"]
ACCOUNTS = {t: (t[:-3] + "a01", t[:-3] + "a02") for t in TENANTS}
WRITERS = 8
TXNS_PER_WRITER = 40
AGGREGATES = [f"agg-{i}" for i in range(32)]
PARTITIONS = 4


@pytest.fixture(scope="module")
def db(database):
    with connect(database) as conn:
        conn.execute("SET client_min_messages = warning")
        for i, t in enumerate(TENANTS):
            conn.execute("SELECT fincore.create_tenant(%s, %s)", (f"partitions {i}", t))
            with conn.transaction():
                conn.execute("SELECT fincore.set_tenant(%s)", (t,))
                for a in ACCOUNTS[t]:
                    conn.execute("SELECT fincore.create_account('USD', id => %s, flags => '{}')", (a,))
        conn.execute("""
            CREATE TABLE public.p_counter (tenant uuid, agg text, n int NOT NULL DEFAULT 0, PRIMARY KEY (tenant, agg));
            CREATE TABLE public.p_truth (event_id uuid PRIMARY KEY, tenant uuid, agg text NOT NULL, n int NOT NULL,
                                         k int NOT NULL);
            CREATE TABLE public.p_received (event_id uuid PRIMARY KEY, partition_no int NOT NULL, tenant uuid,
                                            aggtype text, agg text, retried boolean, serial bigserial);
        """)
        conn.execute("INSERT INTO public.p_counter (tenant, agg) SELECT t, a FROM unnest(%s::uuid[]) t, unnest(%s::text[]) a",
                     (TENANTS, AGGREGATES))
    return database


def test_four_workers_share_one_consumer(db):
    with connect(db) as admin:
        admin.execute("SELECT fincore.outbox_configure(rotation_interval => '0')")
        admin.execute("SELECT fincore.subscribe('pc', '{orders,ledger}', backoff => '0', partitions => %s)",
                      (PARTITIONS,))

    writers_done = threading.Event()
    stop_maintenance = threading.Event()
    errors, rolled_back = [], []
    lock = threading.Lock()

    def writer(w):
        rng = random.Random(2000 + w)
        try:
            with connect(db, autocommit=False) as conn:
                for i in range(TXNS_PER_WRITER):
                    cur = conn.cursor()
                    tenant = rng.choice(TENANTS)
                    cur.execute("SELECT fincore.set_tenant(%s)", (tenant,))
                    aggs = sorted(rng.sample(AGGREGATES, rng.choice([1, 1, 2])))
                    mine = []
                    for agg in aggs:
                        for k in range(rng.choice([1, 2])):
                            cur.execute("SELECT fincore.emit('orders', 'order.changed', 'order', %s, %s)",
                                        (agg, Jsonb({"w": w, "i": i, "k": k})))
                            mine.append((cur.fetchone()[0], agg, k))
                    if rng.random() < 0.25:
                        # A transfer: its event is the transfer row (aggregate: the transfer).
                        cur.execute("SELECT (fincore.transfer(%s, %s, 1)).id", ACCOUNTS[tenant])
                    counts = {}
                    for agg in aggs:
                        cur.execute("UPDATE public.p_counter SET n = n + 1 WHERE tenant = %s AND agg = %s RETURNING n",
                                    (tenant, agg))
                        counts[agg] = cur.fetchone()[0]
                    for event_id, agg, k in mine:
                        cur.execute("INSERT INTO public.p_truth VALUES (%s, %s, %s, %s, %s)",
                                    (event_id, tenant, agg, counts[agg], k))
                    time.sleep(rng.uniform(0, 0.02))
                    if rng.random() < 0.1:
                        conn.rollback()
                        with lock:
                            rolled_back.extend(e for e, _, _ in mine)
                    else:
                        conn.commit()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"writer {w}: {e!r}")

    def worker(k):
        name = f"pc/{k}"
        rng = random.Random(k)
        idle = 0
        try:
            with connect(db, autocommit=False) as conn:
                while idle < 3:
                    rows = conn.execute(
                        "SELECT id, tenant_id, aggregatetype, aggregateid, retries FROM fincore.poll(%s, 20)",
                        (name,)).fetchall()
                    done = []
                    # Each event acknowledged by itself (a retry is not covered by a later ack).
                    for row in rows:
                        if rng.random() < 0.1:
                            # The work failed: retried later, after the partition's later events.
                            conn.execute("SELECT fincore.nack(%s, %s, 'flaky')", (name, row[0]))
                        else:
                            conn.execute("SELECT fincore.ack(%s, %s)", (name, row[0]))
                            done.append(row)
                    with conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO public.p_received (event_id, partition_no, tenant, aggtype, agg, retried)"
                            " VALUES (%s, %s, %s, %s, %s, %s)",
                            [(r[0], k, r[1], r[2], r[3], r[4] > 0) for r in done])
                    conn.commit()
                    if rows:
                        idle = 0
                    elif writers_done.is_set():
                        idle += 1
                    else:
                        conn.execute("SELECT fincore.wait_for_events(%s, '200 milliseconds')", (name,))
                        conn.commit()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"worker {name}: {e!r}")

    def maintenance():
        try:
            with connect(db) as conn:
                while not stop_maintenance.is_set():
                    conn.execute("SELECT fincore.outbox_maintenance('5 seconds')")
                    time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"maintenance: {e!r}")

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(PARTITIONS)]
    keeper = threading.Thread(target=maintenance)
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in workers + [keeper] + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    writers_done.set()
    # Retries with no backoff are due at once; an idle worker still polls them three times.
    for t in workers:
        t.join(timeout=120)
    stop_maintenance.set()
    keeper.join(timeout=30)
    assert not any(t.is_alive() for t in workers + writers + [keeper]), "a thread did not finish"
    assert not errors, errors

    with connect(db) as conn:
        # The retries that were due after the workers' last look: drained here.
        for k in range(PARTITIONS):
            while True:
                with conn.transaction():
                    rows = conn.execute("SELECT id, tenant_id, aggregatetype, aggregateid FROM fincore.poll(%s, 100)",
                                        (f"pc/{k}",)).fetchall()
                    for r in rows:
                        conn.execute("INSERT INTO public.p_received (event_id, partition_no, tenant, aggtype, agg, retried)"
                                     " VALUES (%s, %s, %s, %s, %s, true)", (r[0], k, r[1], r[2], r[3]))
                        conn.execute("SELECT fincore.ack(%s, %s)", (f"pc/{k}", r[0]))
                if not rows:
                    break
        committed = {r[0]: (r[1], r[2], r[3]) for r in
                     conn.execute("SELECT event_id, tenant, agg, n FROM public.p_truth")}
        transfers = conn.execute(
            "SELECT count(*) FROM fincore.transfers WHERE tenant_id = ANY (%s::uuid[]) AND event_seq IS NOT NULL",
            (TENANTS,)).fetchone()[0]
        received = conn.execute("SELECT event_id, partition_no, aggtype, agg, retried FROM public.p_received"
                                " ORDER BY serial").fetchall()
        assert len(committed) > WRITERS * TXNS_PER_WRITER // 2 and transfers > 0 and rolled_back
        order_events = {r[0] for r in received if r[2] == "order"}
        assert order_events == set(committed), (
            f"missed {len(set(committed) - order_events)}, never committed {len(order_events - set(committed))}")
        assert sum(1 for r in received if r[2] == "transfer") == transfers, "every transfer's event, once"
        assert conn.execute("SELECT count(*) FROM public.p_received r WHERE r.partition_no <>"
                            " fincore.event_partition(r.tenant, r.aggtype, r.agg, %s)", (PARTITIONS,)).fetchone()[0] == 0, \
            "an event reached a partition that is not its aggregate's"
        assert len({r[1] for r in received}) == PARTITIONS, "some partition read nothing"
        assert any(r[4] for r in received), "no event was retried"
        # Each aggregate in commit order within its partition, unless one of its events was retried.
        retried = {(committed[r[0]][0], r[3]) for r in received if r[4] and r[0] in committed}
        per_agg = {}
        for event_id, _, aggtype, agg, _ in received:
            if aggtype == "order":
                tenant, _, n = committed[event_id]
                per_agg.setdefault((tenant, agg), []).append(n)
        checked = 0
        for key, seen in per_agg.items():
            if key not in retried:
                assert seen == sorted(seen), f"events of {key} out of commit order: {seen}"
                checked += 1
        assert checked > 0, "every aggregate had a retry: order was not checked"
        lag = conn.execute("SELECT consumer, pending, retrying FROM fincore.consumer_lag()"
                           " WHERE consumer LIKE 'pc/%'").fetchall()
        assert sorted(c for c, _, _ in lag) == [f"pc/{k}" for k in range(PARTITIONS)]
        assert all(p == 0 and r == 0 for _, p, r in lag), lag
        conn.execute("SELECT fincore.unsubscribe('pc')")


def test_a_partition_acknowledges_only_its_own_events_and_replay_dead_serves_every_partition(db):
    tenant = TENANTS[0]
    with connect(db) as conn, conn.transaction():
        conn.execute("SELECT fincore.subscribe('pd', '{dead}', max_attempts => 1, partitions => 2)")
        conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
        part = {}
        for i in range(40):
            conn.execute("SELECT fincore.emit('dead', 'x', 'order', %s, '{}')", (f"d-{i}",))
            part[f"d-{i}"] = conn.execute("SELECT fincore.event_partition(%s, 'order', %s, 2)",
                                          (tenant, f"d-{i}")).fetchone()[0]
        assert set(part.values()) == {0, 1}
    with connect(db, autocommit=False) as conn:
        rows = {k: conn.execute("SELECT id, aggregateid FROM fincore.poll(%s, 100)", (f"pd/{k}",)).fetchall()
                for k in (0, 1)}
        conn.commit()
        for k in (0, 1):
            assert sorted(a for _, a in rows[k]) == sorted(a for a, p in part.items() if p == k)
        # Partition 0 does not acknowledge partition 1's event.
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT fincore.ack('pd/0', %s)", (rows[1][0][0],))
        assert refused.value.sqlstate == "ZF506"
        conn.rollback()
        # Each partition's first event fails for good (max_attempts 1): a dead letter of it.
        for k in (0, 1):
            assert conn.execute("SELECT fincore.nack(%s, %s, 'poison')", (f"pd/{k}", rows[k][0][0])).fetchone()[0] == "dead"
            conn.execute("SELECT fincore.ack(%s, %s)", (f"pd/{k}", rows[k][-1][0]))
        conn.commit()
        assert conn.execute("SELECT fincore.replay_dead('pd')").fetchone()[0] == 2
        conn.commit()
        for k in (0, 1):
            again = conn.execute("SELECT id, retries FROM fincore.poll(%s, 100)", (f"pd/{k}",)).fetchall()
            assert again == [(rows[k][0][0], 1)], f"partition {k} gets back its own dead letter, only it"
            conn.execute("SELECT fincore.ack(%s, %s)", (f"pd/{k}", again[0][0]))
        conn.commit()
        conn.execute("SELECT fincore.unsubscribe('pd')")
        conn.commit()
