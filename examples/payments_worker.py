#!/usr/bin/env python3
"""fincore's payment worker: a thin client between the job queue and a provider's HTTP API.

Two loops, each a few SQL calls (docs/payments.md, "The worker protocol"):

- steps: claim a job of ``payments:<provider>``, send its request to the provider with the
  job's provider key as the idempotency key, then report the answer and settle the job in one
  transaction: ``fincore.payment_step_result`` (which makes the ledger postings), then
  ``fincore.complete``, or ``fincore.fail`` for a soft decline (the queue retries it with
  backoff). No answer (a timeout, a network error) says nothing about the provider's state: the
  job fails and its retry sends the same key. If the worker dies at any point, the job's lease
  runs out and another worker sends the same key again, so the provider never charges twice.
- webhooks: each delivery the provider posts is checked and recorded once by
  ``fincore.accept_webhook`` (signature, inbox), which queues it on ``webhook:<provider>``; the
  loop claims those jobs and reports them with ``fincore.payment_webhook_result``. Whichever
  report arrives first decides the step; the other is a no-op.

Usage (a fake provider: examples/fake_provider.py):
    python3 examples/payments_worker.py --dsn "dbname=app" --tenant <uuid> --provider fake \\
        --url http://127.0.0.1:8099
"""
import argparse
import json
import time
import urllib.error
import urllib.request

import psycopg


def call_provider(url, job, timeout):
    """POST the step to the provider: its answer, or None if none came back in time."""
    p = job["payload"]
    body = json.dumps({"idempotency_key": p["provider_key"], "payment_id": p["payment_id"],
                       "step_no": p["step_no"], "amount": p["amount"], "currency": p["currency"],
                       "final": p["final"]}).encode()
    req = urllib.request.Request(f"{url}/v1/{p['kind']}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
        return None


def claim(conn, queue, n, lease, worker):
    rows = conn.execute("SELECT id, tenant_id, payload, attempt FROM fincore.dequeue(%s, %s, %s::interval, %s)",
                        (queue, n, lease, worker)).fetchall()
    return [dict(id=r[0], tenant_id=r[1], payload=r[2], attempt=r[3]) for r in rows]


def process_steps(conn, provider, url, batch=10, lease="30 seconds", timeout=0.5, worker="payments-worker",
                  crash=None):
    """One pass over the provider's step jobs; returns how many were claimed.

    crash(job, stage) -> bool is the tests' hook: True makes the worker "die" at that stage
    ('before_call' or 'after_call'): the job is left to its lease, nothing is reported.
    """
    jobs = claim(conn, f"payments:{provider}", batch, lease, worker)
    for job in jobs:
        if crash and crash(job, "before_call"):
            continue
        answer = call_provider(url, job, timeout)
        if crash and crash(job, "after_call"):
            continue
        try:
            settle_step(conn, job, answer)
        except psycopg.Error as e:
            if e.sqlstate != "ZF607":   # the job was cancelled meanwhile (its step timed out)
                raise
    return len(jobs)


def settle_step(conn, job, answer):
    """Report the provider's answer and finish the job, in one transaction."""
    with conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (job["tenant_id"],))
        if answer is None:
            conn.execute("SELECT fincore.fail(%s, %s, NULL, %s)", (job["id"], "no answer", job["attempt"]))
            return
        p = job["payload"]
        status = conn.execute("SELECT status FROM fincore.payment_step_result(%s, %s, %s, %s, 'worker')",
                              (p["payment_id"], p["step_no"], answer["outcome"], answer.get("code"))).fetchone()[0]
        if status == "pending" and answer["outcome"] == "failed":
            conn.execute("SELECT fincore.fail(%s, %s, NULL, %s)",
                         (job["id"], answer.get("code") or "declined", job["attempt"]))
        else:
            # requires_action too: the provider decides later, by webhook.
            conn.execute("SELECT fincore.complete(%s, NULL, %s)", (job["id"], job["attempt"]))


def receive_webhooks(conn, tenant, provider, secret, deliveries):
    """What the webhook endpoint does with each delivery: verified, recorded once, queued."""
    accepted = 0
    for d in deliveries:
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
            row = conn.execute("SELECT accepted FROM fincore.accept_webhook(%s, %s, %s, %s)",
                               (provider, d["payload"], d["signature"], secret)).fetchone()
            accepted += bool(row[0])
    return accepted


def process_webhooks(conn, provider, batch=50, lease="30 seconds", worker="payments-webhooks"):
    """One pass over the queued webhooks: each reported by its provider key; returns how many."""
    jobs = claim(conn, f"webhook:{provider}", batch, lease, worker)
    for job in jobs:
        data = job["payload"]["data"]
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (job["tenant_id"],))
            conn.execute("SELECT fincore.payment_webhook_result(%s, %s, %s)",
                         (data["provider_key"], data["outcome"], data.get("code")))
            conn.execute("SELECT fincore.complete(%s, NULL, %s)", (job["id"], job["attempt"]))
    return len(jobs)


def fetch_deliveries(url):
    with urllib.request.urlopen(f"{url}/webhooks", timeout=5) as resp:
        return json.loads(resp.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--provider", default="fake")
    ap.add_argument("--url", default="http://127.0.0.1:8099")
    ap.add_argument("--secret", default="whsec_test")
    args = ap.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        while True:
            n = process_steps(conn, args.provider, args.url)
            receive_webhooks(conn, args.tenant, args.provider, args.secret, fetch_deliveries(args.url))
            n += process_webhooks(conn, args.provider)
            if n == 0:
                time.sleep(0.2)


if __name__ == "__main__":
    main()
