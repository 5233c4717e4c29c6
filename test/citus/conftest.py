"""Shared set-up for fincore's Citus tests (./scripts/test --citus).

The cluster: a coordinator on 127.0.0.1:$FINCORE_CITUS_PORT and two workers on the next two
ports, each with the database fincore (scripts/citus.sh); fincore is installed on the
coordinator (and reaches the workers with the extension).  The `distributed` fixture calls
fincore.distribute() once for the session.
"""
import os

import psycopg
import pytest

PORT = int(os.environ.get("FINCORE_CITUS_PORT", "55432"))
WORKERS = (PORT + 1, PORT + 2)
DB = os.environ.get("PGDATABASE", "fincore")


def connect(port=PORT, **kwargs):
    """A connection to a node (the coordinator by default), autocommit unless told otherwise."""
    kwargs.setdefault("autocommit", True)
    kwargs.setdefault("user", "postgres")
    return psycopg.connect(host="127.0.0.1", port=port, dbname=DB, **kwargs)


@pytest.fixture(scope="session")
def distributed():
    """fincore distributed on the cluster; yields what fincore.distribute() placed."""
    with connect() as conn:
        placed = [r[0] for r in conn.execute("SELECT * FROM fincore.distribute()").fetchall()]
    yield placed
