"""The shared-memory rate limiter against a GCRA reference model (docs/rate-limits.md).

The model is redis-cell's CL.THROTTLE in integer nanoseconds: a theoretical arrival time
(TAT) per key; T = per // rate; an arrival of cost c at now is allowed when
max(TAT, now) + c*T - T*(burst+1) <= now.  fincore._rate_limit_at() takes the clock as an
argument, so the model and the server see the same instants.

- One million arrivals (FINCORE_RATE_LIMIT_ARRIVALS) over 300 keys, each with a quota of its
  own, random costs (0 to above the limit) and random clock steps (none, small, past the
  tolerance): every decision, remaining, retry_after and reset_after equal the model's.
- Hypothesis explores the edges (burst 0, cost 0, T not a whole number of nanoseconds, long
  idle times) with short histories, FINCORE_EXAMPLES arrivals in all.
The clock only moves forward here: a key whose TAT has passed may give its slot to another
key (it is idle, and forgetting it changes no later decision at a later time); a clock that
steps back over such a key would see it fresh.  pgTAP (test/pgtap/ratelimit.sql) checks a
step back on a key that keeps its slot.
"""
import datetime as dt
import os
import random
import uuid

import psycopg
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

ARRIVALS = int(os.environ.get("FINCORE_RATE_LIMIT_ARRIVALS", "1000000"))
EXAMPLES = int(os.environ.get("FINCORE_EXAMPLES", "10000"))
CHUNK = 100_000
BATCH_SQL = """
SELECT r.allowed, r."limit", r.remaining, r.retry_after, r.reset_after
  FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::int[], %s::int[], %s::bigint[])
       WITH ORDINALITY AS a(key, rate, per_us, burst, cost, at_us, ord)
 CROSS JOIN LATERAL fincore._rate_limit_at(a.key, a.rate, a.per_us * interval '1 microsecond', a.burst, a.cost,
                                           timestamptz '2000-01-01 00:00:00+00' + a.at_us * interval '1 microsecond') r
 ORDER BY a.ord
"""


class Model:
    """GCRA as CL.THROTTLE computes it, in nanoseconds."""

    def __init__(self):
        self.tat = {}

    def decide(self, key, rate, per_us, burst, cost, at_us):
        t = per_us * 1000 // rate
        tolerance = t * (burst + 1)
        increment = t * cost
        now = at_us * 1000
        base = max(self.tat.get(key, 0), now)
        new_tat = base + increment
        allow_at = new_tat - tolerance
        retry = None
        if now < allow_at:
            allowed = False
            if increment <= tolerance:
                retry = allow_at - now
            ttl = base - now
        else:
            allowed = True
            self.tat[key] = new_tat
            ttl = new_tat - now
        nxt = tolerance - ttl
        # An integer division truncating toward zero, as C's and CL.THROTTLE's cast: -T < nxt < 0 gives 0.
        remaining = nxt // t if nxt >= 0 else 0
        up = lambda ns: None if ns is None else -(-ns // 1000)   # to microseconds, rounded up
        return (allowed, burst + 1, remaining, up(retry), up(ttl))


def as_us(value):
    if value is None:
        return None
    return (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds


@pytest.fixture(scope="module")
def conn():
    with psycopg.connect(autocommit=True) as c:
        c.execute("SET client_min_messages = warning")
        c.execute("CREATE EXTENSION IF NOT EXISTS fincore CASCADE")
        yield c


def start_us(conn):
    """A day ahead of the server's clock: the keys stay live for the wall clock of other callers."""
    return conn.execute("SELECT ((extract(epoch FROM clock_timestamp() - timestamptz '2000-01-01 00:00:00+00')"
                        " * 1000000)::bigint + 86400000000)").fetchone()[0]


def run_batch(conn, model, rows):
    """Decide rows on the server and in the model; returns how many were allowed."""
    cols = list(zip(*rows))
    got = conn.execute(BATCH_SQL, [list(c) for c in cols]).fetchall()
    assert len(got) == len(rows)
    for row, (allowed, limit, remaining, retry, reset) in zip(rows, got):
        want = model.decide(*row)
        have = (allowed, limit, remaining, as_us(retry), as_us(reset))
        assert have == want, f"arrival {row}: server {have}, model {want}"
    return sum(1 for r in got if r[0])


def test_one_million_arrivals_match_the_model(conn):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    prefix = f"model-{uuid.uuid4()}-"
    keys = []
    for i in range(300):
        rate = rng.choice([1, 2, 3, 7, 10, 100, 1000, rng.randrange(1, 100000)])
        per_us = rng.choice([1000, 1_000_000, 60_000_000, 3_600_000_000, rng.randrange(1000, 86_400_000_000)])
        burst = rng.choice([0, 1, 5, 50, rng.randrange(0, 1000)])
        keys.append((prefix + str(i), rate, per_us, burst))
    model = Model()
    now = start_us(conn)
    done = allowed = 0
    while done < ARRIVALS:
        rows = []
        for _ in range(min(CHUNK, ARRIVALS - done)):
            key, rate, per_us, burst = rng.choice(keys)
            t_us = max(per_us // rate, 1)
            step = rng.random()
            if step < 0.3:
                now += 0
            elif step < 0.95:
                now += rng.randrange(0, min(2 * t_us, 60_000_000) + 1) // max(len(keys) // 10, 1)
            else:       # past the key's tolerance, at most an hour: the clock stays within years
                now += rng.randrange(0, min(t_us * (burst + 2), 3_600_000_000) + 1)
            cost = rng.choice([1, 1, 1, 1, 0, 2, rng.randrange(0, burst + 3)])
            rows.append((key, rate, per_us, burst, cost, now))
        allowed += run_batch(conn, model, rows)
        done += len(rows)
    # Both outcomes, plenty of each (about 10% are refused): the histories reach the limits and
    # come back from them.
    assert 0.5 * done < allowed < 0.98 * done, f"seed {seed}: {allowed} of {done} allowed"


arrival = st.tuples(st.integers(0, 3), st.integers(0, 12), st.integers(0, 3_000_000))


@settings(max_examples=max(EXAMPLES // 50, 20), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rate=st.integers(1, 5000), per_us=st.integers(1, 10_000_000), burst=st.integers(0, 10),
       history=st.lists(arrival, min_size=1, max_size=50))
def test_histories_match_the_model(conn, rate, per_us, burst, history):
    if per_us * 1000 // rate < 1:
        return
    prefix = f"edge-{uuid.uuid4()}-"
    model = Model()
    now = start_us(conn)
    rows = []
    for k, cost, step in history:
        now += step
        rows.append((prefix + str(k), rate, per_us, burst, cost, now))
    run_batch(conn, model, rows)
