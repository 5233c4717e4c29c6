"""Consume every pending event of one consumer, as a client would; print events per second.

    consume.py fincore CONSUMER     poll(consumer, 1000) + ack of the last one, one transaction per page
    consume.py fincore_text CONSUMER  the same with the event ids loaded as text (as Node's pg does):
                                    psycopg's default makes a uuid.UUID of each, about 1 us an event
    consume.py fincore_p2 CONSUMER  the same by two worker processes at once, one per partition of a
                                    consumer subscribed with partitions => 2 (CONSUMER/0, CONSUMER/1)
    consume.py pgq CONSUMER         next_batch + get_batch_events + finish_batch, one transaction per batch

Both fetch the same columns (id, type, payload text) to the client.  Connection: libpq environment.
"""
import multiprocessing
import sys
import time

import psycopg
from psycopg.types.string import TextLoader

QUEUE = "bench"


def fincore(conn, consumer):
    n = 0
    while True:
        with conn.transaction():
            rows = conn.execute("SELECT id, type, payload::text FROM fincore.poll(%s, 1000)", (consumer,)).fetchall()
            if not rows:
                return n
            conn.execute("SELECT fincore.ack(%s, %s)", (consumer, rows[-1][0]))
        n += len(rows)


def fincore_text(conn, consumer):
    conn.adapters.register_loader("uuid", TextLoader)
    return fincore(conn, consumer)


def drain_partition(name):
    with psycopg.connect(autocommit=True) as conn:
        return fincore(conn, name)


def fincore_p2(conn, consumer):
    """Two workers at once, each a process of its own (as real workers are: threads of one
    Python process would share its interpreter lock) on its own partition."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return sum(pool.map(drain_partition, [f"{consumer}/0", f"{consumer}/1"]))


def pgq(conn, consumer):
    n = 0
    while True:
        with conn.transaction():
            batch = conn.execute("SELECT pgq.next_batch(%s, %s)", (QUEUE, consumer)).fetchone()[0]
            if batch is None:
                return n
            rows = conn.execute("SELECT ev_id, ev_type, ev_data FROM pgq.get_batch_events(%s)", (batch,)).fetchall()
            conn.execute("SELECT pgq.finish_batch(%s)", (batch,))
        n += len(rows)


def main():
    kind, consumer, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with psycopg.connect(autocommit=True) as conn:
        started = time.perf_counter()
        n = {"fincore": fincore, "fincore_text": fincore_text, "fincore_p2": fincore_p2, "pgq": pgq}[kind](conn, consumer)
        elapsed = time.perf_counter() - started
    if n != expected:
        sys.exit(f"{kind} consumer {consumer} got {n} events, expected {expected}")
    print(f"{n / elapsed:.1f}")


if __name__ == "__main__":
    main()
