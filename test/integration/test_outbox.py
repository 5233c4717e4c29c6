"""The outbox under concurrency: exactly-once delivery when transactions commit out of order,
retention by rotating slots, a long transaction, and concurrent inbox duplicates.

The central test runs 16 writers (random commit delays, rollbacks, rolled-back savepoints)
against 3 consumers polling concurrently in three styles, while maintenance rotates, seals and
truncates the event slots as fast as it can.  Afterwards every consumer must have received every
committed event exactly once, none of a rolled-back transaction or savepoint, and the events of
each aggregate in commit order.  Commit order is recorded by the writers themselves: after
emitting, each transaction increments a per-aggregate counter, so a later commit has a larger
count; a missing aggregate lock in emit() would let a later commit carry a smaller seq and show
up as a decreasing count.  Across transactions: a transaction that committed before another
began is delivered wholly ahead of it (each draws a number from one sequence when it begins and
another once its COMMIT has returned).  Global commit order is not promised (docs/outbox.md,
"Order across transactions"): the test counts the transactions delivered ahead of one that
committed before they did, and prints it.
"""
import random
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import connect

TENANT = "0b0b0b0b-0000-4000-8000-000000000001"
OTHER_TENANT = "0b0b0b0b-0000-4000-8000-000000000002"
WRITERS = 16
TXNS_PER_WRITER = 40
AGGREGATES = [f"agg-{i}" for i in range(24)]
CONSUMERS = ["c_exact", "c_flaky", "c_split"]


@pytest.fixture(scope="module")
def db(database):
    with connect(database) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT fincore.create_tenant('outbox tenant', %s)", (TENANT,))
        conn.execute("SELECT fincore.create_tenant('other tenant', %s)", (OTHER_TENANT,))
        conn.execute("""
            CREATE TABLE public.agg_counter (agg text PRIMARY KEY, n int NOT NULL DEFAULT 0);
            CREATE TABLE public.truth (event_id uuid PRIMARY KEY, agg text NOT NULL, n int NOT NULL, k int NOT NULL);
            CREATE SEQUENCE public.txn_clock;
            CREATE TABLE public.received (consumer text, event_id uuid, agg text, serial bigserial,
                                          PRIMARY KEY (consumer, event_id));
        """)
        conn.execute("INSERT INTO public.agg_counter (agg) SELECT unnest(%s::text[])", (AGGREGATES,))
    return database


def emit(cur, agg, payload, topic="orders"):
    cur.execute("SELECT fincore.emit(%s, 'order.changed', 'order', %s, %s)", (topic, agg, Jsonb(payload)))
    return cur.fetchone()[0]


def maintain(conn, times=1):
    done = 0
    for _ in range(times):
        done += conn.execute("SELECT fincore.outbox_maintenance('5 seconds')").fetchone()[0]
    return done


def slots(conn):
    return dict(conn.execute("SELECT slot, state FROM fincore.outbox_slots ORDER BY slot").fetchall())


def drain(conn, consumer, max_rows=100):
    """Poll and ack until nothing is left; the events in delivery order."""
    got = []
    while True:
        with conn.transaction():
            rows = conn.execute("SELECT id, aggregateid, payload FROM fincore.poll(%s, %s)",
                                (consumer, max_rows)).fetchall()
            if rows:
                conn.execute("SELECT fincore.ack(%s, %s)", (consumer, rows[-1][0]))
        if not rows:
            return got
        got.extend(rows)


def test_exactly_once_with_out_of_order_commits(db):
    with connect(db) as admin:
        admin.execute("SELECT fincore.outbox_configure(rotation_interval => '0')")
        for c in CONSUMERS:
            admin.execute("SELECT fincore.subscribe(%s, '{orders}')", (c,))

    writers_done = threading.Event()
    stop_maintenance = threading.Event()
    errors = []
    rolled_back = []
    txns = []           # (begin tick, commit tick, event ids) of each committed transaction
    lock = threading.Lock()

    def writer(w):
        rng = random.Random(1000 + w)
        try:
            with connect(db, autocommit=False) as conn:
                for i in range(TXNS_PER_WRITER):
                    cur = conn.cursor()
                    began = cur.execute("SELECT nextval('public.txn_clock')").fetchone()[0]
                    cur.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                    # Aggregates in sorted order: writers of several aggregates cannot deadlock.
                    aggs = sorted(rng.sample(AGGREGATES, rng.choice([1, 1, 2])))
                    mine = []
                    for agg in aggs:
                        for k in range(rng.choice([1, 2])):
                            mine.append((emit(cur, agg, {"w": w, "i": i, "k": k}), agg, k))
                    if rng.random() < 0.1:
                        # An event in a rolled-back savepoint of a committing transaction.
                        cur.execute("SAVEPOINT s")
                        lost = emit(cur, aggs[0], {"w": w, "i": i, "savepoint": True})
                        cur.execute("ROLLBACK TO SAVEPOINT s")
                        with lock:
                            rolled_back.append(lost)
                    counts = {}
                    for agg in aggs:
                        cur.execute("UPDATE public.agg_counter SET n = n + 1 WHERE agg = %s RETURNING n", (agg,))
                        counts[agg] = cur.fetchone()[0]
                    for event_id, agg, k in mine:
                        cur.execute("INSERT INTO public.truth VALUES (%s, %s, %s, %s)", (event_id, agg, counts[agg], k))
                    time.sleep(rng.uniform(0, 0.03))     # commit late: others overtake
                    if rng.random() < 0.12:
                        conn.rollback()
                        with lock:
                            rolled_back.extend(e for e, _, _ in mine)
                    else:
                        conn.commit()
                        # After COMMIT returned (a sequence is not transactional; the statement
                        # opens the writer's next transaction, harmlessly).
                        ended = cur.execute("SELECT nextval('public.txn_clock')").fetchone()[0]
                        with lock:
                            txns.append((began, ended, [e for e, _, _ in mine]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"writer {w}: {e!r}")

    def consumer(name):
        rng = random.Random(name)
        idle = 0
        try:
            with connect(db, autocommit=False) as conn:
                while idle < 3:
                    if name == "c_split":
                        # At-least-once style: poll in one transaction, record and ack in the next.
                        rows = conn.execute("SELECT id, aggregateid FROM fincore.poll(%s, 37)", (name,)).fetchall()
                        conn.commit()
                    else:
                        rows = conn.execute("SELECT id, aggregateid FROM fincore.poll(%s, 50)", (name,)).fetchall()
                    if rows:
                        with conn.cursor() as cur:
                            cur.executemany("INSERT INTO public.received (consumer, event_id, agg) VALUES (%s, %s, %s)",
                                            [(name, r[0], r[1]) for r in rows])
                            if name == "c_flaky" and rng.random() < 0.2:
                                conn.rollback()         # the work failed: nothing recorded, nothing acked
                                continue
                            cur.execute("SELECT fincore.ack(%s, %s)", (name, rows[-1][0]))
                    conn.commit()
                    if rows:
                        idle = 0
                    elif writers_done.is_set():
                        idle += 1
                    else:
                        time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"consumer {name}: {e!r}")

    def maintenance():
        try:
            with connect(db) as conn:
                while not stop_maintenance.is_set():
                    maintain(conn)
                    time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"maintenance: {e!r}")

    threads = [threading.Thread(target=consumer, args=(c,)) for c in CONSUMERS]
    threads.append(threading.Thread(target=maintenance))
    writer_threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads + writer_threads:
        t.start()
    for t in writer_threads:
        t.join(timeout=120)
    writers_done.set()
    for t in threads[:-1]:
        t.join(timeout=120)
    stop_maintenance.set()
    threads[-1].join(timeout=30)
    assert not any(t.is_alive() for t in threads + writer_threads), "a thread did not finish"
    assert not errors, errors

    with connect(db) as conn:
        committed = {r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT event_id, agg, n, k FROM public.truth")}
        assert len(committed) > WRITERS * TXNS_PER_WRITER // 2
        assert rolled_back, "the run rolled nothing back"
        assert not set(rolled_back) & set(committed)
        rotations = conn.execute("SELECT count(*) FROM fincore.outbox_slots WHERE state <> 'current'").fetchone()[0]
        for name in CONSUMERS:
            rows = conn.execute("SELECT event_id, agg FROM public.received WHERE consumer = %s ORDER BY serial",
                                (name,)).fetchall()
            got = [r[0] for r in rows]
            assert len(got) == len(set(got)), f"{name} received an event twice"
            missing = set(committed) - set(got)
            extra = set(got) - set(committed)
            assert not missing, f"{name} missed {len(missing)} committed events"
            assert not extra, f"{name} received {len(extra)} events that were never committed"
            per_agg = {}
            for event_id, agg in rows:
                per_agg.setdefault(agg, []).append(committed[event_id][1:])
            for agg, seen in per_agg.items():
                assert seen == sorted(seen), f"{name}: events of {agg} out of commit order: {seen}"
            # Committed before the other began: delivered wholly ahead of it.
            position = {event_id: i for i, (event_id, _) in enumerate(rows)}
            spans = [(b, c, min(position[e] for e in ids), max(position[e] for e in ids))
                     for b, c, ids in txns if ids]
            by_commit = sorted(spans, key=lambda t: t[1])
            by_begin = sorted(spans, key=lambda t: t[0])
            latest_last, j = -1, 0
            for b, _, first, _ in by_begin:
                while j < len(by_commit) and by_commit[j][1] < b:
                    latest_last = max(latest_last, by_commit[j][3])
                    j += 1
                assert latest_last < first, f"{name}: a transaction begun at tick {b} was delivered " \
                    "before one that had committed before it began"
            # Not promised, and counted: transactions delivered ahead of one that committed first.
            overtakes = sum(1 for t1 in spans for t2 in spans
                            if t1[1] < t2[1] and t2[3] < t1[2])
            print(f"{name}: {overtakes} pairs of transactions delivered out of commit order "
                  f"(both committed, neither begun after the other committed)")
        lag = conn.execute("SELECT consumer, pending FROM fincore.consumer_lag()").fetchall()
        assert all(p == 0 for _, p in lag), lag
        assert rotations >= 1, "maintenance never rotated a slot during the run"


def test_retention_truncates_and_loses_nothing(db):
    with connect(db) as conn:
        conn.execute("SELECT fincore.outbox_configure(rotation_interval => '0')")
        conn.execute("SELECT fincore.subscribe('r_fast', '{retention}')")
        conn.execute("SELECT fincore.subscribe('r_slow', '{retention}')")
        for c in CONSUMERS:       # the previous test's consumers would hold retention back
            conn.execute("SELECT fincore.unsubscribe(%s)", (c,))
        received = {"r_fast": [], "r_slow": []}
        emitted = []

        def emit_batch(n):
            with conn.transaction():
                conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                cur = conn.cursor()
                for i in range(n):
                    emitted.append(emit(cur, f"r-{i % 7}", {"i": len(emitted)}, topic="retention"))

        # Three full rotations; the slow consumer lags one step behind.
        truncated = 0
        for _ in range(9):
            emit_batch(40)
            received["r_fast"] += drain(conn, "r_fast")
            before = slots(conn)
            maintain(conn)
            after = slots(conn)
            truncated += sum(1 for s in before if before[s] == "sealed" and after[s] in ("empty", "current"))
            # r_slow holds back retention: no slot it has not passed is emptied.
            for s, state in after.items():
                if state == "empty":
                    assert conn.execute(f"SELECT count(*) FROM fincore.outbox_events_{s}").fetchone()[0] == 0
            received["r_slow"] += drain(conn, "r_slow")
        assert truncated >= 2, "slots were not truncated"

        # Once everyone passed everything, the rotated-out slots end up empty (positions move
        # on at most once a second when there is nothing new).
        for _ in range(6):
            time.sleep(1.1)
            for c in received:
                received[c] += drain(conn, c)
            maintain(conn)
        states = slots(conn)
        for s, state in states.items():
            count = conn.execute(f"SELECT count(*) FROM fincore.outbox_events_{s}").fetchone()[0]
            if state != "current":
                assert count == 0, f"slot {s} ({state}) still holds {count} events"
                assert state == "empty", states
                size = conn.execute(f"SELECT pg_relation_size('fincore.outbox_events_{s}')").fetchone()[0]
                assert size == 0, f"slot {s} was not truncated (size {size})"
        for c, rows in received.items():
            assert [r[0] for r in rows] == emitted, f"{c} did not receive every event once, in order"
        dead = conn.execute("""SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables
                               WHERE schemaname = 'fincore' AND relname LIKE 'outbox\\_events\\__'""").fetchone()[0]
        assert dead == 0


def test_long_transactions_do_not_stop_delivery_or_retention(db):
    with connect(db) as conn:
        conn.execute("SELECT fincore.outbox_configure(rotation_interval => '0')")
        for c in ("r_fast", "r_slow"):
            conn.execute("SELECT fincore.unsubscribe(%s)", (c,))
        conn.execute("SELECT fincore.subscribe('l_cons', '{long}')")
        # A long reader holding back the xmin horizon (vacuum could remove nothing) ...
        reader = connect(db, autocommit=False)
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT pg_current_xact_id()")
        # ... and a long writer whose event is written first and committed last.
        writer = connect(db, autocommit=False)
        writer.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        late = emit(writer.cursor(), "long-agg", {"late": True}, topic="long")
        try:
            seen = []
            emitted = []
            for round_ in range(8):
                with conn.transaction():
                    conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                    cur = conn.cursor()
                    for i in range(50):
                        emitted.append(emit(cur, f"l-{i}", {"r": round_, "i": i}, topic="long"))
                seen += [r[0] for r in drain(conn, "l_cons")]
                maintain(conn)
            assert seen == emitted, "delivery stalled behind the long transactions"
            assert late not in seen
            # Rotation went on; the writer's slot stays draining until it ends, the others cycle.
            states = slots(conn)
            assert "draining" in states.values(), states
            writer.commit()
            seen += [r[0] for r in drain(conn, "l_cons")]
            assert seen[-1] == late and len(seen) == len(set(seen)) == len(emitted) + 1
            time.sleep(1.1)
            drain(conn, "l_cons")
            truncated = maintain(conn, 4)
            assert truncated > 0
            assert "sealed" in slots(conn).values() or "empty" in slots(conn).values()
        finally:
            reader.close()
            writer.close()


def test_unacked_events_are_delivered_again_and_nack_retries_then_dead_letters(db):
    with connect(db) as conn:
        conn.execute("SELECT fincore.subscribe('n_cons', '{nack}', max_attempts => 3, backoff => '0')")
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
            cur = conn.cursor()
            ids = [emit(cur, "n-agg", {"i": i}, topic="nack") for i in range(3)]
        first = [r[0] for r in conn.execute("SELECT id FROM fincore.poll('n_cons')")]
        again = [r[0] for r in conn.execute("SELECT id FROM fincore.poll('n_cons')")]
        assert first == again == ids, "unacknowledged events are delivered again, in order"
        # A consumer transaction that rolls back acknowledges nothing.
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.transaction():
                conn.execute("SELECT fincore.ack('n_cons', %s)", (ids[2],))
                conn.execute("SELECT 1 / 0")
        assert [r[0] for r in conn.execute("SELECT id FROM fincore.poll('n_cons')")] == ids
        # nack the middle one: the first is acknowledged with it, the third is still due.
        assert conn.execute("SELECT fincore.nack('n_cons', %s, 'boom')", (ids[1],)).fetchone()[0] == "retry"
        rows = conn.execute("SELECT id, retries FROM fincore.poll('n_cons')").fetchall()
        assert rows == [(ids[1], 1), (ids[2], 0)], rows
        assert conn.execute("SELECT fincore.nack('n_cons', %s, 'boom again')", (ids[1],)).fetchone()[0] == "retry"
        assert conn.execute("SELECT fincore.nack('n_cons', %s, 'dead now')", (ids[1],)).fetchone()[0] == "dead"
        dead = conn.execute("SELECT id, attempts, last_error FROM fincore.dead_events WHERE consumer = 'n_cons'").fetchall()
        assert dead == [(ids[1], 3, "dead now")]
        assert [r[0] for r in conn.execute("SELECT id FROM fincore.poll('n_cons')")] == [ids[2]]
        conn.execute("SELECT fincore.ack('n_cons', %s)", (ids[2],))
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("SELECT fincore.ack('n_cons', %s)", (ids[2],))
        assert raised.value.sqlstate == "ZF506", "acknowledging twice is refused"
        assert conn.execute("SELECT id FROM fincore.poll('n_cons')").fetchall() == []
        # Replay: the dead letter is delivered again and acknowledged for good.
        assert conn.execute("SELECT fincore.replay_dead('n_cons')").fetchone()[0] == 1
        assert [r[0] for r in conn.execute("SELECT id FROM fincore.poll('n_cons')")] == [ids[1]]
        conn.execute("SELECT fincore.ack('n_cons', %s)", (ids[1],))
        assert conn.execute("SELECT id FROM fincore.poll('n_cons')").fetchall() == []
        lag = dict((r[0], r[1:]) for r in conn.execute("SELECT consumer, pending, retrying, dead FROM fincore.consumer_lag()"))
        assert lag["n_cons"] == (0, 0, 0)


def test_concurrent_inbox_duplicates(db):
    a = connect(db, autocommit=False)
    b = connect(db, autocommit=False)
    try:
        for conn in (a, b):
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        assert a.execute("SELECT fincore.inbox_accept('psp', 'm-1', '{}')").fetchone()[0] is True
        result = {}

        def second(message_id):
            result[message_id] = b.execute("SELECT fincore.inbox_accept('psp', %s, '{}')",
                                           (message_id,)).fetchone()[0]

        t = threading.Thread(target=second, args=("m-1",))
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), "the concurrent duplicate waits for the first transaction"
        a.commit()
        t.join(timeout=10)
        assert result["m-1"] is False
        b.commit()
        # When the first one rolls back, the waiting duplicate is the first after all.
        for conn in (a, b):
            conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
        assert a.execute("SELECT fincore.inbox_accept('psp', 'm-2', '{}')").fetchone()[0] is True
        t = threading.Thread(target=second, args=("m-2",))
        t.start()
        time.sleep(0.3)
        assert t.is_alive()
        a.rollback()
        t.join(timeout=10)
        assert result["m-2"] is True
        b.commit()
        # Another tenant has its own message ids.
        b.execute("SELECT fincore.set_tenant(%s)", (OTHER_TENANT,))
        assert b.execute("SELECT fincore.inbox_accept('psp', 'm-1', '{}')").fetchone()[0] is True
        b.commit()
    finally:
        a.close()
        b.close()


def test_notify_once_per_committing_transaction(db):
    received = []
    with connect(db) as listener, connect(db) as conn:
        listener.add_notify_handler(lambda n: received.append((n.channel, n.payload)))
        listener.execute("LISTEN fincore_outbox")

        def emit_in_one_transaction(n, commit=True):
            with conn.transaction() as tx:
                conn.execute("SELECT fincore.set_tenant(%s)", (TENANT,))
                cur = conn.cursor()
                for i in range(n):
                    emit(cur, f"nt-{i}", {"i": i}, topic="notify")
                if not commit:
                    raise psycopg.Rollback(tx)

        def pump():
            time.sleep(0.2)
            listener.execute("SELECT 1")
            got = list(received)
            received.clear()
            return got

        emit_in_one_transaction(3)
        assert pump() == [], "NOTIFY is off by default"
        conn.execute("SELECT fincore.outbox_configure(notify => true)")
        emit_in_one_transaction(5)
        assert pump() == [("fincore_outbox", "")], "one notification for a transaction of five events"
        emit_in_one_transaction(2, commit=False)
        assert pump() == [], "a rolled-back transaction notifies nobody"
        emit_in_one_transaction(1)
        emit_in_one_transaction(1)
        assert pump() == [("fincore_outbox", "")] * 2
        conn.execute("SELECT fincore.outbox_configure(notify => false)")
        emit_in_one_transaction(1)
        assert pump() == []
