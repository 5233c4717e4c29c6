#!/usr/bin/env python3
"""A fake payment provider: an HTTP server on 127.0.0.1 for fincore's payment worker and tests.

It behaves as a real card processor does where it matters to exactly-once payments:

- every request carries an idempotency key (fincore's provider key); the first request with a
  key decides its outcome and the key remembers it, so a retry (or a second worker after a
  crash) gets the same answer and is never charged again;
- answers come after a random latency, and now and then after the client has given up (a
  timeout: the charge is made, the answer lost);
- some requests are declined: hard codes (``card_declined``, ``stolen_card``) are final, a soft
  code (``processor_busy``) is not remembered, so a retry is attempted afresh;
- an authorization may first need an action (3-D Secure): it answers ``requires_action`` and
  decides later, by webhook;
- every decision is also sent as a webhook: signed Stripe-style (``t=<unix>,v1=<hex HMAC-SHA256
  of "t.payload">``), each delivered one or more times, in shuffled order, to whoever fetches
  them (``GET /webhooks``).

API (JSON):
    POST /v1/<kind>   {"idempotency_key", "payment_id", "step_no", "amount", "currency"}
                      -> {"outcome": "succeeded" | "failed" | "requires_action", "code": ...}
    GET  /webhooks    -> [{"payload": "<json text>", "signature": "t=...,v1=..."}], drained
    GET  /stats       -> {"charges": {key: times charged}, "decided": {key: outcome}}

Run it alone:  python3 examples/fake_provider.py --port 8099 --secret whsec_test
"""
import argparse
import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HARD_DECLINES = ("card_declined", "stolen_card")
SOFT_DECLINE = "processor_busy"


class FakeProvider:
    """The provider's state: decided keys, charges, webhooks waiting to be fetched."""

    def __init__(self, secret, seed=0, decline_rate=0.1, soft_rate=0.1, action_rate=0.05,
                 timeout_rate=0.05, max_latency=0.01, client_timeout=0.5):
        self.secret = secret.encode()
        self.seed = seed
        self.rng = random.Random(seed)      # latency, duplicates, shuffles
        self.tries = {}                     # key -> requests seen: each decision is seeded by key and try
        self.decline_rate, self.soft_rate, self.action_rate = decline_rate, soft_rate, action_rate
        self.timeout_rate, self.max_latency, self.client_timeout = timeout_rate, max_latency, client_timeout
        self.lock = threading.Lock()
        self.decided = {}     # key -> {"outcome", "code", "request"}
        self.charges = {}     # key -> how many times money moved for it (never more than 1)
        self.webhooks = []    # (payload text, signature)
        self.pending_actions = []  # keys waiting for 3-D Secure

    def sign(self, payload):
        t = str(int(time.time()))
        mac = hmac.new(self.secret, f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"

    def _webhook(self, key, outcome, code):
        payload = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "step." + outcome,
                              "data": {"provider_key": key, "outcome": outcome, "code": code}})
        for _ in range(1 + (self.rng.random() < 0.3)):          # now and then delivered twice
            self.webhooks.append((payload, self.sign(payload)))

    def request(self, kind, body):
        """Decide (or replay) a request. Returns (answer, lose_answer)."""
        key = body["idempotency_key"]
        with self.lock:
            if key in self.decided:
                d = self.decided[key]
                if d["request"] != (kind, body.get("amount")):
                    return {"outcome": "failed", "code": "idempotency_key_reused"}, False
                return {"outcome": d["outcome"], "code": d["code"]}, False
            self.tries[key] = self.tries.get(key, 0) + 1
            # The decision depends on the key and the try only, whatever order requests arrive in.
            decide = random.Random(f"{self.seed}:{key}:{self.tries[key]}")
            r = decide.random()
            if r < self.soft_rate:
                return {"outcome": "failed", "code": SOFT_DECLINE}, False   # not remembered
            if kind == "authorize" and r < self.soft_rate + self.action_rate:
                self.decided[key] = {"outcome": "requires_action", "code": None, "request": (kind, body.get("amount"))}
                self.pending_actions.append(key)
                self._webhook(key, "requires_action", None)
                return {"outcome": "requires_action", "code": None}, False
            if kind in ("authorize", "increment") and r < self.soft_rate + self.action_rate + self.decline_rate:
                outcome, code = "failed", decide.choice(HARD_DECLINES)
            else:
                outcome, code = "succeeded", None
                self.charges[key] = self.charges.get(key, 0) + 1
            self.decided[key] = {"outcome": outcome, "code": code, "request": (kind, body.get("amount"))}
            self._webhook(key, outcome, code)
            if kind == "cancel" and outcome == "succeeded":
                # A canceled payment's authorization waiting for 3-D Secure is never completed.
                for waiting in [k for k in self.pending_actions if k.startswith(body["payment_id"] + ":")]:
                    self.pending_actions.remove(waiting)
                    self.decided[waiting].update(outcome="failed", code="canceled")
                    self._webhook(waiting, "failed", "canceled")
            return {"outcome": outcome, "code": code}, decide.random() < self.timeout_rate

    def complete_actions(self):
        """The customers finish 3-D Secure: each waiting authorization is decided, by webhook only."""
        with self.lock:
            for key in self.pending_actions:
                d = self.decided[key]
                if random.Random(f"{self.seed}:{key}:action").random() < 0.8:
                    d["outcome"], d["code"] = "succeeded", None
                    self.charges[key] = self.charges.get(key, 0) + 1
                else:
                    d["outcome"], d["code"] = "failed", "authentication_failed"
                self._webhook(key, d["outcome"], d["code"])
            self.pending_actions = []

    def take_webhooks(self):
        with self.lock:
            out, self.webhooks = self.webhooks, []
        self.rng.shuffle(out)
        return [{"payload": p, "signature": s} for p, s in out]

    def stats(self):
        with self.lock:
            return {"charges": dict(self.charges),
                    "decided": {k: d["outcome"] for k, d in self.decided.items()}}


def make_handler(provider):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, obj):
            data = json.dumps(obj).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass   # the client gave up waiting (a timeout): the answer is lost

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            kind = self.path.rsplit("/", 1)[-1]
            time.sleep(provider.rng.random() * provider.max_latency)
            answer, lose = provider.request(kind, body)
            if lose:
                time.sleep(provider.client_timeout * 2)   # the client has given up by now
            self._send(answer)

        def do_GET(self):
            if self.path == "/webhooks":
                self._send(provider.take_webhooks())
            elif self.path == "/stats":
                self._send(provider.stats())
            elif self.path == "/complete_actions":
                provider.complete_actions()
                self._send({"ok": True})
            else:
                self.send_error(404)
    return Handler


def serve(provider, port=0):
    """Start the provider on 127.0.0.1 (a free port by default) in a thread; returns the server."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(provider))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--secret", default="whsec_test")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    srv = serve(FakeProvider(args.secret, args.seed), args.port)
    print(f"fake provider on http://127.0.0.1:{srv.server_address[1]}", flush=True)
    threading.Event().wait()
