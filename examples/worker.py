#!/usr/bin/env python3
"""A thin fincore worker in Python (psycopg 3): the job loop, or an outbox consumer.

    python3 examples/worker.py jobs   --dsn "dbname=app user=worker" --queue emails
    python3 examples/worker.py events --dsn "dbname=app user=worker" --consumer mailer

Everything that matters happens in the database; this process only carries jobs and events to
a handler and reports back:

jobs    One round trip a job: fincore.complete_and_dequeue completes the job just handled and
        claims the next.  The handler's writes and the completion commit together, so a job's
        effect happens once even if the worker dies mid-job: the claim is a lease, and once it
        runs out another worker (or this one, restarted) runs the job again.  A long job's lease
        is renewed (fincore.heartbeat, from a second connection) every third of it.  A handler
        that raises fails the attempt (fincore.fail): the queue retries it with its backoff and
        buries it after max_attempts.  Idle, the worker sleeps in fincore.wait_for_jobs, which a
        commit of an enqueue wakes.
events  fincore.poll, then the handler and fincore.ack for each event, in one transaction (each
        handler in a savepoint); a handler that raises nacks its event (retried with the
        consumer's backoff, dead after max_attempts).  Idle, it sleeps in
        fincore.wait_for_events, which the commit of an emitting transaction wakes.

SIGTERM or SIGINT: the worker finishes (or, for a job, gives back) what it holds and exits 0.

The handler here is a demonstration (the payload says what to do): {"sleep": seconds} works for
that long, {"fail": true} raises, and every handled job or event is recorded in a table of the
caller's, example_runs (created if missing), in the same transaction as its completion.
Replace handle_job / handle_event with real work.
"""
import argparse
import json
import os
import signal
import threading
import time

import psycopg
from psycopg.types.json import Jsonb

stopping = threading.Event()
waiting = None                           # the connection while it waits for work: a stop cancels the wait


def on_signal(signum, frame):
    stopping.set()
    if waiting is not None:
        waiting.cancel()


def ensure_runs_table(conn):
    conn.execute("CREATE TABLE IF NOT EXISTS public.example_runs ("
                 " kind text NOT NULL, id text NOT NULL, attempt integer NOT NULL, worker text NOT NULL,"
                 " at timestamptz NOT NULL DEFAULT clock_timestamp())")


def handle_job(conn, job, worker):
    """The work of one job, in the transaction that completes it."""
    payload = job["payload"] or {}
    deadline = time.monotonic() + float(payload.get("sleep", 0))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    if payload.get("fail"):
        raise RuntimeError(f"job {job['id']} asked to fail")
    conn.execute("INSERT INTO public.example_runs (kind, id, attempt, worker) VALUES ('job', %s, %s, %s)",
                 (str(job["id"]), job["attempt"], worker))
    return {"done_by": worker}


def handle_event(conn, event, worker):
    if (event["payload"] or {}).get("fail"):
        raise RuntimeError(f"event {event['id']} asked to fail")
    conn.execute("INSERT INTO public.example_runs (kind, id, attempt, worker) VALUES ('event', %s, %s, %s)",
                 (str(event["id"]), event["retries"] + 1, worker))


class Heartbeat:
    """Renews a job's lease every third of it from a connection of its own, while the job runs."""

    def __init__(self, dsn, job_id, attempt, lease_s):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(dsn, job_id, attempt, lease_s), daemon=True)
        self.thread.start()

    def run(self, dsn, job_id, attempt, lease_s):
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not self.stop.wait(lease_s / 3):
                conn.execute("SELECT fincore.heartbeat(%s, make_interval(secs => %s), %s)", (job_id, lease_s, attempt))

    def close(self):
        self.stop.set()
        self.thread.join()


def wait_for_jobs(conn, queue, seconds):
    """Sleep in the database until a job of the queue is ready (an enqueue's commit wakes it)."""
    global waiting
    waiting = conn
    try:
        if not stopping.is_set():
            conn.execute("SELECT fincore.wait_for_jobs(%s, make_interval(secs => %s))", (queue, seconds))
    except psycopg.errors.QueryCanceled:
        pass                            # a stop signal cancelled the wait
    finally:
        waiting = None


def wait_for_events(conn, consumer, seconds):
    """Sleep in the database until the consumer has something to poll (an emitting commit wakes it)."""
    global waiting
    waiting = conn
    try:
        if not stopping.is_set():
            conn.execute("SELECT fincore.wait_for_events(%s, make_interval(secs => %s))", (consumer, seconds))
    except psycopg.errors.QueryCanceled:
        pass                            # a stop signal cancelled the wait
    finally:
        waiting = None


def run_jobs(args):
    lease = f"{args.lease} seconds"
    job = None                           # the job claimed by the last call, to handle now
    handled = 0
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        ensure_runs_table(conn)
        started = time.monotonic()
        while True:
            beat = None
            if job is not None and float((job["payload"] or {}).get("sleep", 0)) > args.lease / 3:
                beat = Heartbeat(args.dsn, job["id"], job["attempt"], args.lease)
            try:
                # One transaction: the job's work, its completion and the claim of the next job
                # (one round trip for the last two).  Dying anywhere in it changes nothing.
                with conn.transaction():
                    result = handle_job(conn, job, args.name) if job is not None else None
                    rows = conn.execute(
                        "SELECT id, tenant_id, attempt, payload FROM fincore.complete_and_dequeue("
                        " %s, %s, %s, %s, 1, %s::interval, %s)",
                        (job and job["id"], args.queue, Jsonb(result) if job else None, job and job["attempt"],
                         lease, args.name)).fetchall()
                handled += job is not None
            except Exception as e:      # the work failed: the queue's backoff decides when it runs again
                if isinstance(e, psycopg.Error) and e.sqlstate in ("ZF602", "ZF607"):
                    rows = []           # the lease passed on, or the job was cancelled: not ours now
                else:
                    conn.execute("SELECT fincore.fail(%s, %s, NULL, %s)", (job["id"], str(e), job["attempt"]))
                    rows = []
            finally:
                if beat:
                    beat.close()
            job = None
            if rows:
                job_id, tenant_id, attempt, payload = rows[0]
                job = dict(id=job_id, tenant_id=tenant_id, attempt=attempt, payload=payload)
            if stopping.is_set() or (args.max_jobs and handled >= args.max_jobs):
                if job is not None:     # claimed but not started: give it back now, not at its lease's end
                    conn.execute("SELECT fincore.fail(%s, 'worker stopping', clock_timestamp(), %s)",
                                 (job["id"], job["attempt"]))
                break
            if job is None:
                if args.exit_when_idle:
                    break
                wait_for_jobs(conn, args.queue, args.idle)
        elapsed = time.monotonic() - started
    print(json.dumps({"worker": args.name, "jobs": handled, "seconds": round(elapsed, 3),
                      "jobs_per_second": round(handled / elapsed, 1) if elapsed > 0 else None}), flush=True)


def run_events(args):
    handled = 0
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        ensure_runs_table(conn)
        while not stopping.is_set():
            with conn.transaction():
                events = conn.execute("SELECT id, topic, type, aggregateid, payload, retries FROM fincore.poll(%s, %s)",
                                      (args.consumer, args.batch)).fetchall()
                for event_id, topic, type_, aggregate, payload, retries in events:
                    event = dict(id=event_id, topic=topic, type=type_, aggregate=aggregate, payload=payload, retries=retries)
                    try:
                        with conn.transaction():          # a savepoint: a failed handler's writes go
                            handle_event(conn, event, args.name)
                        conn.execute("SELECT fincore.ack(%s, %s)", (args.consumer, event_id))
                    except Exception as e:
                        conn.execute("SELECT fincore.nack(%s, %s, %s)", (args.consumer, event_id, str(e)))
                    handled += 1
            if not events:
                if args.exit_when_idle:
                    break
                wait_for_events(conn, args.consumer, args.idle)
    print(json.dumps({"worker": args.name, "events": handled}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["jobs", "events"])
    p.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""))
    p.add_argument("--queue", default="default")
    p.add_argument("--consumer", default="worker")
    p.add_argument("--name", default=f"py-{os.getpid()}")
    p.add_argument("--lease", type=float, default=30.0, help="seconds a claim lasts (renewed for long jobs)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--idle", type=float, default=30.0, help="longest wait for work, seconds")
    p.add_argument("--max-jobs", type=int, default=0, help="stop after this many (0: never)")
    p.add_argument("--exit-when-idle", action="store_true", help="stop when no work is left")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    (run_jobs if args.mode == "jobs" else run_events)(args)


if __name__ == "__main__":
    main()
