"""Shared set-up for fincore's integration tests.

Connection: the standard libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD),
as pg_virtualenv exports it.  Each test module gets its own database with
fincore installed (the `database` fixture), so tests never see each other's rows.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager

import psycopg
import pytest


def connect(dbname, **kwargs):
    """A connection to dbname with the environment's host, port and user."""
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(dbname=dbname, **kwargs)


@pytest.fixture(scope="module")
def database(request):
    """A fresh database with fincore, named after the test module; dropped afterwards."""
    name = "fincore_it_" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    with connect(name) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION fincore CASCADE")
    yield name
    with connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_unprivileged(argv):
    """PgBouncer (like PostgreSQL) refuses to run as root: run it as postgres then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


@pytest.fixture(scope="module")
def pgbouncer(database):
    """A PgBouncer in transaction pooling mode with ONE server connection to `database`.

    Yields (host, port, dbname).  Clients authenticate as anything (auth_type any);
    PgBouncer itself logs in with the environment's user and password.
    """
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(exe):
        pytest.fail("pgbouncer is not installed (scripts/lib.sh installs the Debian package)")
    workdir = tempfile.mkdtemp(prefix="fincore-pgbouncer-")
    os.chmod(workdir, 0o777)
    port = free_port()
    host = os.environ.get("PGHOST", "localhost")
    password = os.environ.get("PGPASSWORD", "")
    password_clause = f" password={password}" if password else ""
    config = os.path.join(workdir, "pgbouncer.ini")
    with open(config, "w") as f:
        f.write(f"""[databases]
{database} = host={host} port={os.environ.get('PGPORT', '5432')} dbname={database} user={os.environ.get('PGUSER', 'postgres')}{password_clause}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 1
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 20
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
""")
    os.chmod(config, 0o644)
    proc = subprocess.Popen(as_unprivileged([exe, config]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                log = open(os.path.join(workdir, "pgbouncer.log")).read() if os.path.exists(
                    os.path.join(workdir, "pgbouncer.log")) else ""
                pytest.fail(f"pgbouncer did not start: {out}\n{log}")
            time.sleep(0.1)
    try:
        yield ("127.0.0.1", port, database)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def pg_bindir():
    pg_config = os.environ.get("FINCORE_PG_CONFIG") or shutil.which("pg_config") or "pg_config"
    return subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def private_server(**settings):
    """A throwaway server (a cluster of its own: its own transaction ids) on a Unix socket of
    its own (no TCP), run as postgres when we are root, with fincore in its database postgres.

    Yields conn(dbname="postgres", **kw), a connection factory; conn.host and conn.port say
    where the server listens, conn.as_pg prefixes a command to run it as the server's user.
    Settings are server options, with __ for a dot (fincore__rate_limit_slots=1024)."""
    bindir = pg_bindir()
    work = tempfile.mkdtemp(prefix="fincore-private-")
    as_pg = []
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(work, "data")
    port = free_port()
    subprocess.run(as_pg + [f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--encoding=UTF8",
                            "--locale=C.UTF-8"], check=True, capture_output=True)
    opts = f"-c listen_addresses='' -c unix_socket_directories='{work}' -c port={port}"
    for name, value in settings.items():
        opts += f" -c {name.replace('__', '.')}='{value}'"
    log = os.path.join(work, "server.log")
    subprocess.run(as_pg + [f"{bindir}/pg_ctl", "-D", data, "-l", log, "-w", "-o", opts, "start"],
                   check=True, capture_output=True)
    try:
        def conn(dbname="postgres", **kw):
            kw.setdefault("autocommit", True)
            return psycopg.connect(host=work, port=port, user="postgres", dbname=dbname, **kw)
        conn.host, conn.port, conn.as_pg, conn.bindir = work, port, as_pg, bindir
        with conn() as c:
            c.execute("SET client_min_messages = warning")
            c.execute("CREATE EXTENSION fincore CASCADE")
        yield conn
    finally:
        subprocess.run(as_pg + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
