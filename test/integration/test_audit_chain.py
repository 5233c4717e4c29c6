"""The audit trail (docs/audit.md): tampering a superuser does is detected, concurrent writers keep
gap-free chains, and scripts/audit-check accepts good proofs and rejects altered ones.

Mutation suite: a populated log (two tenants' transfers and an audited user table), a digest kept
"outside"; then, one at a time and rolled back, a superuser changes the log past its guards
(session_replication_role = replica): a payload, a hash, a time, a deleted record, a deleted tail,
a reordering, a forged record, TRUNCATE and reload, a head, an erased payload, and the whole chain
rewritten consistently.  Every one must be detected, naming the first bad sequence number (the
last only against the digest kept outside).
"""
import json
import os
import subprocess
import sys
import threading
import uuid

import psycopg
import pytest

from conftest import connect

A = "00000000-0000-4000-8000-0000000a0d1a"
B = "00000000-0000-4000-8000-0000000a0d1b"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKER = os.path.join(ROOT, "scripts", "audit-check")


def load(conn, tenant, transfers):
    """Accounts and transfers in batches of 10 (each transfer an audit record)."""
    with conn.transaction():
        conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
        accounts = [conn.execute("SELECT fincore.create_account('USD')").fetchone()[0] for _ in range(6)]
    for start in range(0, transfers, 10):
        with conn.transaction():
            conn.execute("SELECT fincore.set_tenant(%s)", (tenant,))
            for k in range(start, min(start + 10, transfers)):
                conn.execute("SELECT fincore.transfer(%s, %s, %s)",
                             (accounts[k % 6], accounts[(k + 1) % 6], k + 1))
    return accounts


@pytest.fixture(scope="module")
def chain(database):
    with connect(database) as conn:
        conn.execute("SELECT fincore.create_tenant('audit A', %s)", (A,))
        conn.execute("SELECT fincore.create_tenant('audit B', %s)", (B,))
        conn.execute("CREATE TABLE public.customers (tenant_id uuid NOT NULL, id int NOT NULL, "
                     "name text, email text, PRIMARY KEY (tenant_id, id))")
        conn.execute("SELECT fincore.audit_enable('public.customers', '{email}')")
        load(conn, A, 240)
        load(conn, B, 60)
        conn.execute("INSERT INTO public.customers VALUES (%s, 1, 'Ada', 'ada@example.com'), "
                     "(%s, 2, 'Bob', 'bob@example.com')", (A, A))
        conn.execute("UPDATE public.customers SET name = 'Ada L.' WHERE id = 1")
        conn.execute("SELECT fincore.audit_seal()")
        seq, digest = conn.execute("SELECT seq, hash FROM fincore.audit_digest(%s)", (A,)).fetchone()
    return {"db": database, "seq": seq, "digest": bytes(digest)}


def verify(conn, tenant=A, **kw):
    args = {"from_seq": None, "to_seq": None, "expected_digest": None, **kw}
    return conn.execute("SELECT ok, checked, first_bad_seq, reason FROM fincore.audit_verify(%s, %s, %s, %s)",
                        (tenant, args["from_seq"], args["to_seq"], args["expected_digest"])).fetchone()


def tampered(chain, *statements):
    """Run statements as a superuser past the guards, verify, roll back: (ok, checked, bad, reason)."""
    with connect(chain["db"], autocommit=False) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        for sql, params in statements:
            conn.execute(sql, params)
        conn.execute("SET LOCAL session_replication_role = origin")
        result = verify(conn)
        against_digest = verify(conn, to_seq=chain["seq"], expected_digest=chain["digest"])
        conn.rollback()
    return result, against_digest


def test_the_populated_chain_verifies(chain):
    with connect(chain["db"]) as conn:
        ok, checked, bad, reason = verify(conn)
        assert (ok, bad, reason) == (True, None, None)
        assert checked == chain["seq"] >= 240 + 6 + 3
        assert verify(conn, to_seq=chain["seq"], expected_digest=chain["digest"])[0] is True
        assert verify(conn, B)[0] is True
        # The user table's record: the redacted column is not in it.
        payload = conn.execute("SELECT payload FROM fincore.audit_log WHERE tenant_id = %s "
                               "AND table_name = 'public.customers' AND op = 'U'", (A,)).fetchone()[0]
        assert payload["old"]["name"] == "Ada" and payload["new"]["name"] == "Ada L."
        assert "email" not in payload["old"] and "email" not in payload["new"]


def hash_of(conn, seq, tenant=A):
    return conn.execute("SELECT hash FROM fincore.audit_log WHERE tenant_id = %s AND seq = %s",
                        (tenant, seq)).fetchone()[0]


@pytest.mark.parametrize("name, statements, bad, why", [
    ("payload", [("UPDATE fincore.audit_log SET payload = jsonb_set(payload::jsonb, '{new,amount}', '999')::json "
                  "WHERE tenant_id = %s AND seq = 50", (A,))], 50, "payload does not match"),
    ("hash", [("UPDATE fincore.audit_log SET hash = sha256('x') WHERE tenant_id = %s AND seq = 60", (A,))],
     60, "hash does not match"),
    ("time", [("UPDATE fincore.audit_log SET at = at - interval '1 second' WHERE tenant_id = %s AND seq = 70", (A,))],
     70, "hash does not match"),
    ("actor", [("UPDATE fincore.audit_log SET actor_role = 'someone_else' WHERE tenant_id = %s AND seq = 71", (A,))],
     71, "hash does not match"),
    ("delete one", [("DELETE FROM fincore.audit_log WHERE tenant_id = %s AND seq = 80", (A,))], 80, "missing"),
    ("delete the tail", [("DELETE FROM fincore.audit_log WHERE tenant_id = %s AND seq > 200", (A,))], 201, "missing"),
    ("reorder", [("UPDATE fincore.audit_log SET seq = -seq WHERE tenant_id = %s AND seq IN (90, 91)", (A,)),
                 ("UPDATE fincore.audit_log SET seq = CASE seq WHEN -90 THEN 91 ELSE 90 END "
                  "WHERE tenant_id = %s AND seq IN (-90, -91)", (A,))], 90, "hash does not match"),
    ("erase a payload", [("UPDATE fincore.audit_log SET payload = NULL WHERE tenant_id = %s AND seq = 100", (A,))],
     100, "without a redaction record"),
    ("the head", [("UPDATE fincore.audit_heads SET hash = sha256('head') WHERE tenant_id = %s", (A,))],
     None, "head"),
    ("a record past the head", [("INSERT INTO fincore.audit_log SELECT tenant_id, seq + 1000, at, txid, actor_role, "
                                 "actor_sub, actor_tenant, table_name, op, key, payload, payload_hash, hash "
                                 "FROM fincore.audit_log WHERE tenant_id = %s AND seq = 5", (A,))],
     None, "beyond the head"),
])
def test_tampering_is_detected(chain, name, statements, bad, why):
    (ok, _, first_bad, reason), (dok, _, dbad, _) = tampered(chain, *statements)
    assert not ok, f"{name}: not detected"
    assert why in reason, f"{name}: {reason}"
    if bad is not None:
        assert first_bad == bad, f"{name}: first bad {first_bad}, not {bad}"
    # Against the digest (records 1 to its seq), everything but a record added past the head.
    if name != "a record past the head":
        assert not dok, f"{name}: the verification against the digest kept outside missed it"


def test_a_forged_record_in_the_middle_is_detected(chain):
    """A forged record chained correctly to its predecessor: the chain breaks right after it."""
    key, at = str(uuid.uuid4()), "2026-01-01 00:00:00+00"
    with connect(chain["db"]) as conn:
        prev = bytes(hash_of(conn, 119))
        forged = conn.execute(
            "SELECT fincore.audit_record_hash(%s, %s, 120, %s, 1, 'postgres', NULL, NULL, 'fincore.transfers', "
            "'I', %s, sha256(convert_to('{}', 'UTF8')))", (prev, A, at, key)).fetchone()[0]
    statements = [
        ("UPDATE fincore.audit_log SET seq = -seq WHERE tenant_id = %s AND seq >= 120", (A,)),
        ("UPDATE fincore.audit_log SET seq = 1 - seq WHERE tenant_id = %s AND seq < 0", (A,)),
        ("INSERT INTO fincore.audit_log VALUES (%s, 120, %s, '1', 'postgres', NULL, NULL, 'fincore.transfers', "
         "'I', %s, '{}', sha256(convert_to('{}', 'UTF8')), %s)", (A, at, key, forged)),
    ]
    (ok, _, bad, reason), (dok, _, _, _) = tampered(chain, *statements)
    assert not ok and bad == 121 and "hash does not match" in reason, (bad, reason)
    assert not dok


def test_truncate_and_reload(chain):
    """TRUNCATE and a reload: the same rows verify (nothing changed); one changed row does not."""
    reload = ("INSERT INTO fincore.audit_log SELECT * FROM saved", None)
    save = ("CREATE TEMP TABLE saved ON COMMIT DROP AS SELECT * FROM fincore.audit_log", None)
    truncate = ("TRUNCATE fincore.audit_log", None)
    (ok, checked, _, _), _ = tampered(chain, save, truncate, reload)
    assert ok and checked == chain["seq"]
    change = ("UPDATE saved SET key = 'k' WHERE tenant_id = '%s' AND seq = 33" % A, None)
    (ok, _, bad, _), (dok, _, _, _) = tampered(chain, save, change, truncate, reload)
    assert not ok and bad == 33 and not dok


def test_a_consistent_rewrite_is_detected_only_against_the_digest_kept_outside(chain):
    """Change record 120 and recompute every later hash and the head: the chain is consistent again,
    so only the digest kept outside the database shows it, at the digest's sequence number."""
    with connect(chain["db"], autocommit=False) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE fincore.audit_log SET payload = '{\"forged\": true}', "
                     "payload_hash = sha256(convert_to('{\"forged\": true}', 'UTF8')) "
                     "WHERE tenant_id = %s AND seq = 120", (A,))
        prev = bytes(hash_of(conn, 119))
        for (seq,) in conn.execute("SELECT seq FROM fincore.audit_log WHERE tenant_id = %s AND seq >= 120 "
                                   "ORDER BY seq", (A,)).fetchall():
            prev = bytes(conn.execute(
                "UPDATE fincore.audit_log l SET hash = fincore.audit_record_hash(%s, tenant_id, seq, at, "
                "(txid::text)::bigint, actor_role, actor_sub::text, actor_tenant, table_name, op::text, key, "
                "payload_hash) WHERE tenant_id = %s AND seq = %s RETURNING hash", (prev, A, seq)).fetchone()[0])
        conn.execute("UPDATE fincore.audit_heads SET hash = %s WHERE tenant_id = %s", (prev, A))
        conn.execute("SET LOCAL session_replication_role = origin")
        assert verify(conn)[0] is True, "a consistent rewrite verifies without the digest kept outside"
        ok, _, bad, reason = verify(conn, to_seq=chain["seq"], expected_digest=chain["digest"])
        assert not ok and bad == chain["seq"] and "expected digest" in reason
        conn.rollback()


def test_the_guards_refuse_changes(chain):
    with connect(chain["db"]) as conn:
        for sql in ("UPDATE fincore.audit_log SET key = 'x' WHERE tenant_id = '%s' AND seq = 1" % A,
                    "DELETE FROM fincore.audit_log WHERE tenant_id = '%s' AND seq = 1" % A,
                    "TRUNCATE fincore.audit_log",
                    "UPDATE fincore.audit_heads SET seq = 0",
                    "DELETE FROM fincore.audit_checkpoints"):
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(sql)
            assert refused.value.sqlstate == "ZFB03", sql


def test_redaction_keeps_the_chain_verifiable(chain):
    with connect(chain["db"], autocommit=False) as conn:
        seq = conn.execute("SELECT seq FROM fincore.audit_log WHERE tenant_id = %s AND table_name = 'public.customers' "
                           "AND op = 'I' ORDER BY seq LIMIT 1", (A,)).fetchone()[0]
        assert conn.execute("SELECT fincore.audit_redact(%s, %s, 'GDPR erasure request 17')", (A, seq)).fetchone()[0]
        assert conn.execute("SELECT payload FROM fincore.audit_log WHERE tenant_id = %s AND seq = %s",
                            (A, seq)).fetchone()[0] is None
        r = conn.execute("SELECT op, key, payload->>'reason' FROM fincore.audit_log WHERE tenant_id = %s "
                         "ORDER BY seq DESC LIMIT 1", (A,)).fetchone()
        assert r == ("R", str(seq), "GDPR erasure request 17")
        ok, _, bad, reason = verify(conn)
        assert ok, (bad, reason)
        assert verify(conn, to_seq=chain["seq"], expected_digest=chain["digest"])[0]
        conn.rollback()


def test_retention_keeps_the_rest_verifiable(chain):
    with connect(chain["db"], autocommit=False) as conn:
        dropped = conn.execute("SELECT fincore.audit_retain(%s, 101)", (A,)).fetchone()[0]
        assert dropped == 100
        ok, checked, bad, reason = verify(conn)
        assert ok and checked == chain["seq"] - 100, (bad, reason)
        assert verify(conn, to_seq=chain["seq"], expected_digest=chain["digest"])[0]
        # Proofs of the records kept, against the digest taken before the cut.
        root = bytes(conn.execute("SELECT merkle_root FROM fincore.audit_checkpoints WHERE tenant_id = %s "
                                  "AND seq = %s", (A, chain["seq"])).fetchone()[0]).hex()
        for seq in (101, 102, 128, 150, chain["seq"]):
            p = conn.execute("SELECT fincore.audit_proof(%s, %s)", (A, seq)).fetchone()[0]
            done = check(p, "--root", root, "--tree-size", str(chain["seq"]))
            assert done.returncode == 0, (seq, done.stdout)
        with pytest.raises(psycopg.Error) as gone:
            with conn.transaction():
                conn.execute("SELECT fincore.audit_proof(%s, 100)", (A,))
        assert gone.value.sqlstate == "ZFB04"
        # A second cut, from the first one's compact range.
        assert conn.execute("SELECT fincore.audit_retain(%s, 140)", (A,)).fetchone()[0] == 39
        p = conn.execute("SELECT fincore.audit_proof(%s, 141)", (A,)).fetchone()[0]
        assert check(p, "--root", root, "--tree-size", str(chain["seq"])).returncode == 0
        assert verify(conn)[0]
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE fincore.audit_log SET key = 'k' WHERE tenant_id = %s AND seq = 150", (A,))
        assert verify(conn)[2] == 150
        conn.rollback()


def proof(chain, seq):
    with connect(chain["db"]) as conn:
        return conn.execute("SELECT fincore.audit_proof(%s, %s)", (A, seq)).fetchone()[0]


def check(p, *args):
    return subprocess.run([sys.executable, CHECKER, "-"] + list(args), input=json.dumps(p),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("seq", [1, 2, 7, 100, 128, 129])
def test_the_external_checker_accepts_good_proofs(chain, seq):
    p = proof(chain, seq)
    with connect(chain["db"]) as conn:
        root = bytes(conn.execute("SELECT merkle_root FROM fincore.audit_checkpoints WHERE tenant_id = %s "
                                  "AND seq = %s", (A, chain["seq"])).fetchone()[0]).hex()
    done = check(p, "--root", root, "--tree-size", str(chain["seq"]))
    assert done.returncode == 0, done.stdout
    done = check(proof(chain, chain["seq"]), "--root", root, "--tree-size", str(chain["seq"]))
    assert done.returncode == 0, done.stdout
    done = check(p, "--root", root, "--tree-size", str(chain["seq"] + 1))
    assert done.returncode == 1, done.stdout


@pytest.mark.parametrize("alter", [
    lambda p: p["record"].update(key=p["record"]["key"] + "x"),
    lambda p: p["record"].update(at_unix_micros=p["record"]["at_unix_micros"] + 1),
    lambda p: p["record"].update(actor_role="mallory"),
    lambda p: p["record"].update(op="D"),
    lambda p: p["record"].update(payload_hash="00" * 32),
    lambda p: p.update(prev_hash="00" * 32),
    lambda p: p.update(seq=p["seq"] + 1),
    lambda p: p["path"].__setitem__(0, "11" * 32),
    lambda p: p["path"].pop(),
    lambda p: p.update(tree_size=p["tree_size"] + 1),
])
def test_the_external_checker_rejects_altered_proofs(chain, alter):
    p = proof(chain, 77)
    alter(p)
    done = check(p)
    assert done.returncode == 1, done.stdout
    assert "REJECTED" in done.stdout


def test_the_external_checker_rejects_another_root(chain):
    done = check(proof(chain, 77), "--root", "ab" * 32)
    assert done.returncode == 1 and "REJECTED" in done.stdout


def test_concurrent_writers_keep_gap_free_chains(database):
    """Eight writers in one tenant and four in four others, a sealer running all along: every chain
    verifies, gap-free, with exactly one record per change."""
    tenants = [str(uuid.UUID(int=0xC0C0_0000_0000_4000_8000_0000_0000_0000 + i)) for i in range(5)]
    with connect(database) as conn:
        for t in tenants:
            conn.execute("SELECT fincore.create_tenant(%s, %s)", (f"concurrent {t[-4:]}", t))
    errors, stop = [], threading.Event()
    writers = [(tenants[0], i) for i in range(8)] + [(t, 0) for t in tenants[1:]]

    def writer(tenant, i):
        try:
            with connect(database) as conn:
                load(conn, tenant, 60)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    def sealer():
        try:
            with connect(database) as conn:
                while not stop.is_set():
                    conn.execute("SELECT fincore.audit_seal(max_records => 50)")
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=writer, args=w) for w in writers]
    seal = threading.Thread(target=sealer)
    seal.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    seal.join()
    assert not errors, errors
    with connect(database) as conn:
        conn.execute("SELECT fincore.audit_seal()")
        for t in tenants:
            n = sum(1 for w in writers if w[0] == t)
            ok, checked, bad, reason = verify(conn, t)
            assert ok, (t, bad, reason)
            assert checked == n * (6 + 60), (t, checked)
            assert conn.execute("SELECT count(*) FROM fincore.audit_pending WHERE tenant_id = %s",
                                (t,)).fetchone()[0] == 0
