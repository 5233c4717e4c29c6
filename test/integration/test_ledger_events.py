"""The ledger's events are its transfer rows, delivered as outbox events.

A transfer written while its tenant's ledger events are on carries an event_seq and
event_txid; consumers read it through fincore.outbox_stream, next to fincore.outbox_events
rows, with the payload built from the row.  Here consumers poll, ack and nack them: each
committed transfer arrives once, in seq order, with the aggregate rules (a hold's post, void
or expiry under the hold, a reversal under the original), nothing of a rolled-back or refused
transfer, nothing while the writer has not committed, nothing when the tenant turned events off.
"""
import time
import uuid

import psycopg
from psycopg.types.json import Jsonb

from conftest import connect

TENANT = "0e0e0e0e-0000-4000-8000-000000000001"
A, B, C = (str(uuid.UUID(int=(0xE0E << 64) + n)) for n in (1, 2, 3))
PAYLOAD_KEYS = {"id", "tenant_id", "kind", "debit_account_id", "credit_account_id", "amount", "amount_text",
                "currency", "code", "pending_id", "pending_amount", "reversal_of", "expires_at", "metadata",
                "created_at"}


def tenant_conn(db):
    return connect(db, options=f"-c fincore.tenant={TENANT}")


def drain(conn, consumer):
    got = []
    while True:
        with conn.transaction():
            rows = conn.execute("SELECT id, seq, topic, type, aggregatetype, aggregateid, payload "
                                "FROM fincore.poll(%s, 100)", (consumer,)).fetchall()
            if rows:
                conn.execute("SELECT fincore.ack(%s, %s)", (consumer, rows[-1][0]))
        if not rows:
            return got
        got.extend(rows)


def test_transfers_reach_consumers_as_events(database):
    db = database
    with connect(db) as admin:
        admin.execute("SET client_min_messages = warning")
        admin.execute("SELECT fincore.create_tenant('events', %s)", (TENANT,))
        admin.execute("SELECT fincore.subscribe('ledger_only', '{ledger}')")
        admin.execute("SELECT fincore.subscribe('everything', '{ledger,orders}', "
                      "backoff => '10 milliseconds', backoff_max => '10 milliseconds')")
    with tenant_conn(db) as conn:
        for acct in (A, B, C):
            conn.execute("SELECT fincore.create_account('USD', id => %s)", (acct,))
        # Nothing yet: account creations are not transfer events.
        assert drain(conn, "ledger_only") == []

        with conn.transaction():
            t1 = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 100, metadata => '{\"order\": 7}')",
                              (A, B)).fetchone()[0]
            conn.execute("SELECT fincore.emit('orders', 'order.paid', 'order', 'o-7', %s)", (Jsonb({"o": 7}),))
        hold = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 50, pending => true, timeout => '1 hour')",
                            (A, C)).fetchone()[0]
        post = conn.execute("SELECT id FROM fincore.post_pending(%s, 20)", (hold,)).fetchone()[0]
        rev = conn.execute("SELECT id FROM fincore.reverse_transfer(%s, 30)", (t1,)).fetchone()[0]
        # A batch: an independent transfer, and a chain that fails as a whole (no event of it).
        batch = conn.execute("""SELECT index, id, result FROM fincore.create_transfers(ARRAY[
                ROW(NULL, %s, %s, 5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                ROW(NULL, %s, %s, 6, NULL, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                ROW(NULL, %s, %s, 7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
            ]::fincore.transfer_request[]) ORDER BY index""", (B, C, C, A, C, C)).fetchall()
        assert [r[2] for r in batch] == ["ok", "linked_event_failed", "accounts_must_be_different"]
        # Rolled back: no event.
        with conn.transaction():
            conn.execute("SELECT fincore.transfer(%s, %s, 1)", (A, B))
            raise psycopg.Rollback()
        voided_hold = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 9, pending => true)", (B, A)).fetchone()[0]
        void = conn.execute("SELECT id FROM fincore.void_pending(%s)", (voided_hold,)).fetchone()[0]

        events = drain(conn, "ledger_only")
        rows = conn.execute("SELECT id, kind, event_seq FROM fincore.transfers WHERE tenant_id = %s",
                            (TENANT,)).fetchall()
        assert all(seq is not None for _, _, seq in rows), "every transfer of the tenant is an event"
        assert len(events) == len(rows) == 7   # t1, hold, post, reversal, the batch's one, a hold, its void
        assert [e[1] for e in events] == sorted(e[1] for e in events), "in seq order"
        by_transfer = {str(e[6]["id"]): e for e in events}
        assert set(by_transfer) == {str(r[0]) for r in rows}
        for e in events:
            assert e[2] == "ledger" and e[4] == "transfer"
            assert set(e[6]) == PAYLOAD_KEYS
            assert str(e[0])[14] == "7", "event ids are UUIDv7"
        t1_event = by_transfer[str(t1)]
        assert t1_event[3] == "transfer.created" and t1_event[5] == str(t1)
        assert t1_event[6]["amount"] == 100 and t1_event[6]["amount_text"] == "1.00 USD"
        assert t1_event[6]["metadata"] == {"order": 7} and t1_event[6]["kind"] == "posted"
        assert by_transfer[str(post)][3] == "transfer.posted" and by_transfer[str(post)][5] == str(hold)
        assert by_transfer[str(post)][6]["pending_amount"] == 50
        assert by_transfer[str(rev)][3] == "transfer.reversed" and by_transfer[str(rev)][5] == str(t1)
        assert by_transfer[str(void)][3] == "transfer.voided" and by_transfer[str(void)][5] == str(voided_hold)
        hold_story = [e[3] for e in events if e[5] == str(hold)]
        assert hold_story == ["transfer.created", "transfer.posted"]
        # The payload is the transfer row's, as the view builds it.
        same = conn.execute("SELECT bool_and(fincore._transfer_event_payload(t) = s.payload) "
                            "FROM fincore.transfers t JOIN fincore.outbox_stream s ON s.seq = t.event_seq").fetchone()[0]
        assert same

        # The other consumer gets the outbox row in between, in seq order.
        everything = drain(conn, "everything")
        assert [e[3] for e in everything].count("order.paid") == 1
        assert len(everything) == len(events) + 1
        assert [e[1] for e in everything] == sorted(e[1] for e in everything)
        assert conn.execute("SELECT sum(pending) FROM fincore.consumer_lag()").fetchone()[0] == 0

        # Not committed: not delivered; committed: delivered once.
        with connect(db, options=f"-c fincore.tenant={TENANT}", autocommit=False) as writer:
            late = writer.execute("SELECT id FROM fincore.transfer(%s, %s, 3)", (C, B)).fetchone()[0]
            assert drain(conn, "ledger_only") == []
            assert conn.execute("SELECT pending FROM fincore.consumer_lag() WHERE consumer = 'ledger_only'"
                                ).fetchone()[0] == 0
            writer.commit()
        assert conn.execute("SELECT pending FROM fincore.consumer_lag() WHERE consumer = 'ledger_only'"
                            ).fetchone()[0] == 1
        got = drain(conn, "ledger_only")
        assert [str(e[6]["id"]) for e in got] == [str(late)]

        # A nack: the event comes back as a retry, with its payload, and an ack ends it.
        with conn.transaction():
            (eid, _, _, _, _, _, payload), = conn.execute(
                "SELECT id, seq, topic, type, aggregatetype, aggregateid, payload FROM fincore.poll('everything', 100)"
            ).fetchall()
            assert conn.execute("SELECT fincore.nack('everything', %s, 'down')", (eid,)).fetchone()[0] == "retry"
        time.sleep(0.05)
        with conn.transaction():
            again = conn.execute("SELECT id, payload, retries FROM fincore.poll('everything', 100)").fetchall()
            assert [(a[0], a[1]) for a in again] == [(eid, payload)] and again[0][2] >= 1
            conn.execute("SELECT fincore.ack('everything', %s)", (eid,))
        assert drain(conn, "everything") == []

        # Events off for the tenant: the transfer carries no place in the stream.
        conn.execute("BEGIN")
        conn.execute("SELECT fincore.set_ledger_events(false)")
        conn.execute("COMMIT")
        quiet = conn.execute("SELECT id FROM fincore.transfer(%s, %s, 4)", (A, B)).fetchone()[0]
        assert conn.execute("SELECT event_seq FROM fincore.transfers WHERE id = %s", (quiet,)).fetchone()[0] is None
        assert drain(conn, "ledger_only") == []


def test_exactly_once_under_concurrent_writers(database):
    """8 writers commit transfers, holds and their resolutions out of order (random delays,
    rollbacks) while 2 consumers poll and ack: each consumer receives every committed transfer
    exactly once, none that rolled back, and a hold before its resolution."""
    import random
    import threading

    db = database
    tenant = "0e0e0e0e-0000-4000-8000-000000000002"
    accounts = [str(uuid.UUID(int=(0xE1E << 64) + n)) for n in range(8)]
    with connect(db) as admin:
        admin.execute("SET client_min_messages = warning")
        admin.execute("SELECT fincore.create_tenant('events 2', %s)", (tenant,))
        for c in ("race_a", "race_b"):
            admin.execute("SELECT fincore.subscribe(%s, '{ledger}', tenant_scope => %s)", (c, tenant))
    with connect(db, options=f"-c fincore.tenant={tenant}") as conn:
        for a in accounts:
            conn.execute("SELECT fincore.create_account('USD', id => %s)", (a,))

    done = threading.Event()
    errors = []
    received = {"race_a": [], "race_b": []}

    def writer(seed):
        rng = random.Random(seed)
        try:
            with connect(db, options=f"-c fincore.tenant={tenant}") as w:
                for _ in range(25):
                    d, c = rng.sample(accounts, 2)
                    with w.transaction():
                        kind = rng.random()
                        if kind < 0.5:
                            w.execute("SELECT fincore.transfer(%s, %s, 1)", (d, c))
                        elif kind < 0.8:
                            hold = w.execute("SELECT id FROM fincore.transfer(%s, %s, 2, pending => true)",
                                             (d, c)).fetchone()[0]
                            time.sleep(rng.random() * 0.005)
                            w.execute("SELECT fincore.post_pending(%s)" if rng.random() < 0.5 else
                                      "SELECT fincore.void_pending(%s)", (hold,))
                        else:
                            w.execute("SELECT fincore.create_transfers(ARRAY[ROW(NULL, %s, %s, 1, NULL, NULL, NULL, "
                                      "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
                                      "NULL, NULL), ROW(NULL, %s, %s, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
                                      "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)]"
                                      "::fincore.transfer_request[])", (d, c, c, d))
                        time.sleep(rng.random() * 0.02)   # commits land out of seq order
                        if rng.random() < 0.15:
                            raise psycopg.Rollback()
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)

    def consumer(name):
        try:
            with connect(db) as cc:
                while True:
                    finished = done.is_set()
                    with cc.transaction():
                        rows = cc.execute("SELECT id, aggregateid, type, payload->>'id' FROM fincore.poll(%s, 50)",
                                          (name,)).fetchall()
                        if rows:
                            cc.execute("SELECT fincore.ack(%s, %s)", (name, rows[-1][0]))
                    received[name].extend(rows)
                    if not rows:
                        if finished:
                            return
                        time.sleep(0.005)
        except Exception as e:   # noqa: BLE001
            errors.append(e)

    consumers = [threading.Thread(target=consumer, args=(n,)) for n in received]
    writers = [threading.Thread(target=writer, args=(s,)) for s in range(8)]
    for t in consumers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in consumers:
        t.join()
    assert not errors, errors

    with connect(db) as conn:
        committed = {str(r[0]) for r in conn.execute(
            "SELECT id FROM fincore.transfers WHERE tenant_id = %s AND event_seq IS NOT NULL", (tenant,))}
    assert len(committed) > 100
    for name, rows in received.items():
        ids = [r[3] for r in rows]
        assert len(ids) == len(set(ids)), f"{name}: an event came twice"
        assert set(ids) == committed, f"{name}: missing {len(committed - set(ids))}, extra {len(set(ids) - committed)}"
        position = {r[3]: i for i, r in enumerate(rows)}
        for _, agg, typ, tid in rows:
            if typ in ("transfer.posted", "transfer.voided"):
                assert position[agg] < position[tid], f"{name}: a hold's resolution came before the hold"
