"""Shared set-up for fincore's property tests.

Connection: the standard libpq environment (PGHOST, PGPORT, PGUSER,
PGDATABASE, ...).  The session fixture makes sure the extension exists,
registers the test currencies PT0 ... PT18 (exponent = the number in the
name; register_currency is idempotent, so this can run any number of times)
and creates session-local wrapper functions in pg_temp.

Speed: each Hypothesis example is a batch of cases evaluated in one SQL round
trip.  The pg_temp wrappers catch the error of each case (a plpgsql exception
block is a subtransaction, like a SAVEPOINT per case) and return it as
['err', sqlstate, message], so one bad case does not abort the batch.
A lost connection (a server crash) is never caught: it fails the test; the
harness then reconnects so that Hypothesis can still shrink the input.

Size: FINCORE_EXAMPLES (default 10000) is the number of generated cases per
property; a property with batches of B cases runs ceil(N / B) examples and
checks afterwards that at least N cases were really evaluated.
Reproduce a run with pytest's --hypothesis-seed=N.
"""
import math
import os
import time

import psycopg
import pytest
from hypothesis import HealthCheck, settings

import reference as ref

EXAMPLES = int(os.environ.get("FINCORE_EXAMPLES", "10000"))

WRAPPERS = r"""
CREATE FUNCTION pg_temp.fc_div_round(n bigint, d bigint, m text) RETURNS text[]
LANGUAGE plpgsql AS $$
BEGIN
    IF m IS NULL THEN
        RETURN ARRAY['ok', fincore.div_round(n, d)::text];
    END IF;
    RETURN ARRAY['ok', fincore.div_round(n, d, m)::text];
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;

CREATE FUNCTION pg_temp.fc_div(u bigint, c text, d bigint, m text) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE r fincore.amount;
BEGIN
    IF m IS NULL THEN
        r := fincore.divide(fincore.from_minor(u, c), d);
    ELSE
        r := fincore.divide(fincore.from_minor(u, c), d, m);
    END IF;
    RETURN ARRAY['ok', fincore.minor_units(r)::text, fincore.currency(r)];
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;

-- amount / bigint: exact or ZF105
CREATE FUNCTION pg_temp.fc_exact_div(u bigint, c text, d bigint) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE r fincore.amount;
BEGIN
    r := fincore.from_minor(u, c) OPERATOR(fincore./) d;
    RETURN ARRAY['ok', fincore.minor_units(r)::text, fincore.currency(r)];
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;

CREATE FUNCTION pg_temp.fc_multiply(u bigint, c text, rate numeric, m text) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE r fincore.amount;
BEGIN
    r := fincore.multiply(fincore.from_minor(u, c), rate, m);
    RETURN ARRAY['ok', fincore.minor_units(r)::text, fincore.currency(r)];
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;

CREATE FUNCTION pg_temp.fc_from_numeric(v numeric, c text, m text) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE r fincore.amount;
BEGIN
    IF m IS NULL THEN
        r := fincore.from_numeric(v, c);     -- the default: no rounding allowed
    ELSE
        r := fincore.from_numeric(v, c, m);
    END IF;
    RETURN ARRAY['ok', fincore.minor_units(r)::text, fincore.currency(r)];
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;

-- ['ok', lower bound, currencies of the parts joined by ',', units...]
CREATE FUNCTION pg_temp.fc_parts(parts fincore.amount[]) RETURNS text[]
LANGUAGE sql AS $$
    SELECT ARRAY['ok', coalesce(array_lower(parts, 1), 1)::text,
                 coalesce(string_agg(fincore.currency(p), ',' ORDER BY i), '')]
           || coalesce(array_agg(fincore.minor_units(p)::text ORDER BY i), '{}')
      FROM unnest(parts) WITH ORDINALITY AS t(p, i)
$$;

CREATE FUNCTION pg_temp.fc_allocate(u bigint, c text, ratios bigint[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE parts fincore.amount[];
BEGIN
    parts := fincore.allocate(fincore.from_minor(u, c), ratios);
    RETURN pg_temp.fc_parts(parts);
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;

CREATE FUNCTION pg_temp.fc_allocate_n(u bigint, c text, n integer) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE parts fincore.amount[];
BEGIN
    parts := fincore.allocate(fincore.from_minor(u, c), n);
    RETURN pg_temp.fc_parts(parts);
EXCEPTION WHEN OTHERS THEN
    RETURN ARRAY['err', SQLSTATE, SQLERRM];
END $$;

-- Text input: ['err', sqlstate, message] when the input is refused; when it
-- parses, ['ok', units, code, output text, re-parsed units, re-parsed code,
-- a = re-parsed a]; 'rt_err' if the output text does not parse back.
CREATE FUNCTION pg_temp.fc_parse(s text) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE a fincore.amount; t text; b fincore.amount;
BEGIN
    BEGIN
        a := s::fincore.amount;
    EXCEPTION WHEN OTHERS THEN
        RETURN ARRAY['err', SQLSTATE, SQLERRM];
    END;
    t := a::text;
    BEGIN
        b := t::fincore.amount;
    EXCEPTION WHEN OTHERS THEN
        RETURN ARRAY['rt_err', SQLSTATE, SQLERRM, t];
    END;
    RETURN ARRAY['ok', fincore.minor_units(a)::text, fincore.currency(a), t,
                 fincore.minor_units(b)::text, fincore.currency(b), (a OPERATOR(fincore.=) b)::text];
END $$;
"""


class Outcome:
    """One case's result from a pg_temp wrapper: .ok and .values, or .sqlstate."""

    def __init__(self, row):
        self.raw = row
        self.ok = row[0] == "ok"
        self.values = row[1:] if self.ok else None
        self.sqlstate = None if self.ok else row[1]
        self.message = None if self.ok else row[2]

    def __repr__(self):
        return f"Outcome({self.raw!r})"


class Harness:
    """The tests' handle on the database: one autocommit connection."""

    def __init__(self):
        self.examples = EXAMPLES
        self.conn = None
        self.exponents = None               # every known code -> exponent (from the DB)
        self.lost_connections = 0
        self._open()

    def _open(self):
        # An empty conninfo: libpq takes everything from PGHOST, PGPORT, PGUSER, ...
        for attempt in range(60):
            try:
                self.conn = psycopg.connect("", autocommit=True)
                break
            except psycopg.OperationalError:
                if attempt == 0 or self.lost_connections == 0:
                    raise
                time.sleep(0.5)             # the server may still be recovering
        with self.conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS fincore CASCADE")
            for code, exponent in ref.REGISTERED_EXPONENTS.items():
                cur.execute("SELECT fincore.register_currency(%s, %s, %s)",
                            (code, exponent, f"property-test currency, exponent {exponent}"))
            cur.execute(WRAPPERS)
            cur.execute("SELECT code, exponent FROM fincore.currencies")
            self.exponents = {code: int(e) for code, e in cur.fetchall()}

    def close(self):
        if self.conn is not None:
            self.conn.close()

    def settings(self, batch):
        """Hypothesis settings for a property whose examples hold `batch` cases."""
        return settings(
            max_examples=max(1, math.ceil(self.examples / batch)),
            deadline=None,
            database=None,              # nothing written into the work tree
            derandomize=False,          # a new sample each run; --hypothesis-seed to repeat
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )

    def rows(self, sql, params=()):
        # After a lost connection, reconnect, so that Hypothesis can still
        # shrink the input that broke it (the test has failed already).
        if self.conn.closed or self.conn.broken:
            self._open()
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except psycopg.OperationalError as e:
            if self.conn.closed or self.conn.broken:
                self.lost_connections += 1
                raise AssertionError(f"lost the connection to the server (a crash?): {e}") from e
            raise

    def outcomes(self, sql, params=()):
        """Run a batch query whose single column is a wrapper's text[]."""
        return [Outcome(r[0]) for r in self.rows(sql, params)]


@pytest.fixture(scope="session")
def fc():
    harness = Harness()
    try:
        with harness.conn.cursor() as cur:
            for code, exponent in ref.KNOWN_EXPONENTS.items():
                cur.execute("SELECT fincore.currency_exponent(%s)", (code,))
                assert cur.fetchone()[0] == exponent, f"exponent of {code}"
                assert harness.exponents.get(code) == exponent, f"fincore.currencies row of {code}"
            for code in ref.UNKNOWN_CODES:
                assert code not in harness.exponents, f"{code} must not be a known currency here"
                with pytest.raises(psycopg.Error) as err:
                    cur.execute("SELECT fincore.currency_exponent(%s)", (code,))
                assert err.value.sqlstate == ref.UNKNOWN_CURRENCY, code
        yield harness
        assert harness.lost_connections == 0, "the server connection was lost during the run"
    finally:
        harness.close()


def sql_array(values):
    """PostgreSQL array literal of integers / None / nested lists."""
    if isinstance(values, (list, tuple)):
        return "{" + ",".join(sql_array(v) for v in values) + "}"
    return "NULL" if values is None else str(int(values))


@pytest.fixture(scope="session")
def to_sql_array():
    return sql_array
