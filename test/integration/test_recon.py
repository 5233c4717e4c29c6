"""Reconciliation against a generated ground truth (docs/reconciliation.md).

test_generated_statements: for several seeds, a ledger and a statement generated together, case by
case: exact pairs, amounts off within the tolerance, dates off within the window, splits (one line,
several entries), merges (several lines, one entry), many-to-many groups, and noise that must NOT
match (amounts just beyond the tolerance, dates just beyond the window, other references, lines
and entries alone).  Each line and entry carries its case in a field no rule reads.  After the
run, precision and recall of the confirmed matches are 1.0, no line or entry is in two matches,
and what is left unmatched is exactly the noise; verify() is clean.

test_identical_lines: two identical lines of one statement are two lines, matched to two
identical entries, one each; importing the statement again stores nothing and changes nothing.

test_concurrent_runs_and_imports: sessions running the same source and importing the same
statement at once never match a line or entry twice, nor store a line twice.

test_camt053_sample: test/integration/camt053_sample.xml (written from ISO 20022's camt.053.001.08
schema: several statements, a batch entry, debits and credits, currencies with 0, 2 and 3 decimal
places) parses to the amounts, dates and references it states.

test_amounts_parse_exactly: decimal amounts of random size, sign and scale against Python's
Decimal: the minor units exactly, or a refusal when the currency has fewer decimal places.

test_malformed_statements: random damage to a statement is either a valid statement or refused
with ZFC03 (never another error), and a refusal stores nothing.
"""
import datetime
import decimal
import os
import random
import threading
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import connect

SEEDS = [11, 12, 13, 14]
BASE = datetime.date(2026, 11, 2)


def tenant_of(seed):
    return str(uuid.UUID(int=(0xEC0 << 116) + seed))


def account_of(seed, n):
    return str(uuid.UUID(int=(0xEC1 << 116) + (seed << 16) + n))


def use_tenant(conn, seed):
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)",
                 ('{"tenant_id":"%s"}' % tenant_of(seed),))


def setup_tenant(dbname, seed, source="bank"):
    """A tenant, its bank and customers accounts, a source and the five rules."""
    with connect(dbname) as conn:
        conn.execute("SELECT fincore.create_tenant(%s, %s)", (f"recon {seed}", tenant_of(seed)))
        use_tenant(conn, seed)
        for n in (1, 2, 3):
            conn.execute("SELECT fincore.create_account('EUR', id => %s)", (account_of(seed, n),))
        conn.execute("SELECT fincore.recon_create_source(%s, %s, %s)",
                     (source, account_of(seed, 1),
                      '{"columns": {"booked_on": "date", "amount": "amount", "reference": "ref", '
                      '"bank_ref": "bank_ref", "description": "case"}}'))
        conn.execute("SELECT fincore.recon_set_rule(%s, 'exact', 10, match_on => '{reference}')", (source,))
        conn.execute("SELECT fincore.recon_set_rule(%s, 'near', 20, match_on => '{reference}', tolerance => 10, "
                     "date_window => 3)", (source,))
        conn.execute("SELECT fincore.recon_set_rule(%s, 'split', 30, kind => 'one_to_many', group_by => 'reference', "
                     "max_group => 8)", (source,))
        conn.execute("SELECT fincore.recon_set_rule(%s, 'merge', 40, kind => 'many_to_one', group_by => 'reference', "
                     "max_group => 8)", (source,))
        conn.execute("SELECT fincore.recon_set_rule(%s, 'batch', 50, kind => 'many_to_many', group_by => 'reference', "
                     "max_group => 8)", (source,))


def money(units):
    sign = "-" if units < 0 else ""
    return f"{sign}{abs(units) // 100}.{abs(units) % 100:02d}"


class Case:
    """One case of the ground truth: its lines and entries, and whether the rules must match them."""

    def __init__(self, label, kind, lines, entries, matches):
        self.label, self.kind, self.lines, self.entries, self.matches = label, kind, lines, entries, matches


def generate(seed, n_cases=400):
    """Cases: lines (day, amount, ref) and entries (day, amount, ref), amounts in cents."""
    rng = random.Random(seed)
    cases = []
    for i in range(n_cases):
        kind = rng.choice(["exact"] * 8 + ["amount", "date", "split", "merge", "group",
                                            "miss_amount", "miss_date", "miss_ref", "line_alone", "entry_alone"])
        day = BASE + datetime.timedelta(days=rng.randrange(0, 20))
        sign = rng.choice([1, 1, 1, -1])
        amount = sign * rng.randrange(100, 10_000_000)
        ref = f"R{seed}-{i}"
        label = f"c{i}"
        if kind in ("split", "merge", "group"):
            amount = sign * rng.randrange(10_000, 10_000_000)
        if kind == "exact":
            case = Case(label, kind, [(day, amount, ref)], [(day, amount, ref)], True)
        elif kind == "amount":
            off = rng.choice([-1, 1]) * rng.randrange(1, 11)
            case = Case(label, kind, [(day, amount + off, ref)], [(day, amount, ref)], True)
        elif kind == "date":
            case = Case(label, kind, [(day + datetime.timedelta(days=rng.choice([-3, -2, -1, 1, 2, 3])), amount, ref)],
                        [(day, amount, ref)], True)
        elif kind == "split":
            parts = split(rng, amount, rng.randrange(2, 6))
            case = Case(label, kind, [(day, amount, ref)], [(day, p, ref) for p in parts], True)
        elif kind == "merge":
            parts = split(rng, amount, rng.randrange(2, 6))
            case = Case(label, kind, [(day, p, ref) for p in parts], [(day, amount, ref)], True)
        elif kind == "group":
            while True:
                a = split(rng, amount, rng.randrange(2, 5))
                b = split(rng, amount, rng.randrange(2, 5))
                if far_apart(a, b):
                    break
            case = Case(label, kind, [(day, p, ref) for p in a], [(day, p, ref) for p in b], True)
        elif kind == "miss_amount":
            off = rng.choice([-1, 1]) * rng.randrange(11, 500)
            case = Case(label, kind, [(day, amount + off, ref)], [(day, amount, ref)], False)
        elif kind == "miss_date":
            case = Case(label, kind, [(day + datetime.timedelta(days=rng.choice([-5, -4, 4, 5])), amount, ref)],
                        [(day, amount, ref)], False)
        elif kind == "miss_ref":
            case = Case(label, kind, [(day, amount, ref + "x")], [(day, amount, ref + "y")], False)
        elif kind == "line_alone":
            case = Case(label, kind, [(day, amount, ref)], [], False)
        else:
            case = Case(label, kind, [], [(day, amount, ref)], False)
        cases.append(case)
    return cases


def split(rng, amount, k):
    """k parts of amount, all of its sign and at least 1.00 each (so no part is near the whole)."""
    sign = 1 if amount > 0 else -1
    total = abs(amount)
    while True:
        cuts = sorted(rng.sample(range(100, total - 99), k - 1))
        parts = [b - a for a, b in zip([0] + cuts, cuts + [total])]
        if min(parts) >= 100:
            return [sign * p for p in parts]


def far_apart(a, b):
    """No part of a within the tolerance (10) of a part of b: no one-to-one rule may pair them."""
    return all(abs(x - y) > 10 for x in a for y in b)


def load(dbname, seed, cases, source="bank"):
    """The entries as transfers (a batch per 500), the statement as one CSV import."""
    bank, customers = account_of(seed, 1), account_of(seed, 2)
    rows = []
    for case in cases:
        for (day, amount, ref) in case.entries:
            rows.append((bank if amount > 0 else customers, customers if amount > 0 else bank, abs(amount),
                         '{"reference": "%s", "value_date": "%s", "case": "%s"}' % (ref, day, case.label)))
    with connect(dbname) as conn:
        use_tenant(conn, seed)
        for i in range(0, len(rows), 500):
            chunk = rows[i:i + 500]
            bad = conn.execute(
                "SELECT count(*) FROM fincore.create_transfers(ARRAY(SELECT ROW(NULL, d, c, a, NULL, NULL, NULL, NULL, "
                "NULL, NULL, NULL, m::jsonb, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
                "::fincore.transfer_request FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::text[]) AS x(d, c, a, m)))"
                " WHERE result <> 'ok'",
                ([r[0] for r in chunk], [r[1] for r in chunk], [r[2] for r in chunk], [r[3] for r in chunk])).fetchone()[0]
            assert bad == 0
        csv = ["date,amount,ref,bank_ref,case"]
        n = 0
        for case in cases:
            for (day, amount, ref) in case.lines:
                n += 1
                csv.append(f"{day},{money(amount)},{ref},B{seed}-{n},{case.label}")
        imp = conn.execute("SELECT lines, stored FROM fincore.recon_import(%s, 'csv', %s)",
                           (source, "\n".join(csv) + "\n")).fetchone()
        assert imp == (n, n)


@pytest.mark.parametrize("seed", SEEDS)
def test_generated_statements(database, seed):
    setup_tenant(database, seed)
    cases = generate(seed)
    load(database, seed, cases)
    by_label = {c.label: c for c in cases}
    with connect(database) as conn:
        use_tenant(conn, seed)
        dry = conn.execute("SELECT matched, suggested FROM fincore.recon_run('bank', dry_run => true)").fetchone()
        run = conn.execute("SELECT matched, suggested, lines_unmatched, entries_unmatched FROM fincore.recon_run('bank')").fetchone()
        assert dry == run[:2], "a dry run counts what the run does"
        matches = conn.execute("""
            SELECT m.id, m.status,
                   (SELECT array_agg(l.description) FROM fincore.recon_lines l WHERE l.id = ANY (m.line_ids)),
                   (SELECT array_agg(t.metadata->>'case') FROM fincore.transfers t WHERE t.id = ANY (m.entry_ids)),
                   cardinality(m.line_ids), cardinality(m.entry_ids)
              FROM fincore.recon_matches m WHERE m.tenant_id = %s AND m.source = 'bank'""", (tenant_of(seed),)).fetchall()
        assert all(status == "confirmed" for (_, status, *_rest) in matches)
        correct = 0
        matched_labels = set()
        for (_, _, line_labels, entry_labels, nl, ne) in matches:
            labels = set(line_labels) | set(entry_labels)
            if len(labels) == 1:
                case = by_label[labels.pop()]
                if case.matches and nl == len(case.lines) and ne == len(case.entries):
                    correct += 1
                    matched_labels.add(case.label)
        expected = [c for c in cases if c.matches]
        precision = correct / len(matches) if matches else 1.0
        recall = len(matched_labels) / len(expected)
        assert (precision, recall) == (1.0, 1.0), f"precision {precision}, recall {recall}"
        doubles = conn.execute("""
            SELECT (SELECT count(*) FROM (SELECT line_id FROM fincore.recon_matched_lines WHERE tenant_id = %s GROUP BY 1 HAVING count(*) > 1) a)
                 + (SELECT count(*) FROM (SELECT transfer_id FROM fincore.recon_matched_entries WHERE tenant_id = %s GROUP BY 1 HAVING count(*) > 1) b)
        """, (tenant_of(seed), tenant_of(seed))).fetchone()[0]
        assert doubles == 0
        assert run[2] == sum(len(c.lines) for c in cases if not c.matches)
        assert run[3] == sum(len(c.entries) for c in cases if not c.matches)
        left = conn.execute("""
            SELECT array_agg(l.description ORDER BY l.description) FROM fincore.recon_lines l
             WHERE l.tenant_id = %s AND l.source = 'bank'
               AND NOT EXISTS (SELECT FROM fincore.recon_matched_lines x WHERE x.tenant_id = l.tenant_id AND x.line_id = l.id)
        """, (tenant_of(seed),)).fetchone()[0] or []
        assert sorted(left) == sorted(c.label for c in cases if not c.matches for _ in c.lines)
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0
        # a second run finds nothing new
        assert conn.execute("SELECT matched, suggested FROM fincore.recon_run('bank')").fetchone() == (0, 0)


def test_identical_lines(database):
    seed = 21
    setup_tenant(database, seed, source="cafe")
    bank, customers = account_of(seed, 1), account_of(seed, 2)
    statement = "date,amount,ref,bank_ref,case\n2026-11-03,4.50,COFFEE,,a\n2026-11-03,4.50,COFFEE,,a\n"
    with connect(database) as conn:
        use_tenant(conn, seed)
        for _ in range(2):
            conn.execute("SELECT fincore.transfer(%s, %s, 450, metadata => '{\"reference\": \"COFFEE\", \"value_date\": \"2026-11-03\"}')",
                         (bank, customers))
        assert conn.execute("SELECT stored FROM fincore.recon_import('cafe', 'csv', %s)", (statement,)).fetchone()[0] == 2
        before = conn.execute("SELECT array_agg(id ORDER BY id) FROM fincore.recon_lines WHERE tenant_id = %s", (tenant_of(seed),)).fetchone()[0]
        assert conn.execute("SELECT lines, stored FROM fincore.recon_import('cafe', 'csv', %s)", (statement,)).fetchone() == (2, 0)
        assert conn.execute("SELECT array_agg(id ORDER BY id) FROM fincore.recon_lines WHERE tenant_id = %s", (tenant_of(seed),)).fetchone()[0] == before
        assert conn.execute("SELECT matched, lines_unmatched, entries_unmatched FROM fincore.recon_run('cafe')").fetchone() == (2, 0, 0)
        assert conn.execute("""SELECT count(DISTINCT e) FROM fincore.recon_matches m, unnest(m.entry_ids) e
                                WHERE m.tenant_id = %s""", (tenant_of(seed),)).fetchone()[0] == 2


def test_concurrent_runs_and_imports(database):
    seed = 31
    setup_tenant(database, seed)
    cases = generate(seed, n_cases=300)
    load(database, seed, cases)
    extra = "date,amount,ref,bank_ref,case\n" + "".join(
        f"2026-11-20,{money(100 + i)},EXTRA-{i},X{i},extra\n" for i in range(200))
    errors = []
    barrier = threading.Barrier(6)

    def work(what):
        try:
            with connect(database) as conn:
                use_tenant(conn, seed)
                barrier.wait()
                if what == "run":
                    conn.execute("SELECT fincore.recon_run('bank')")
                else:
                    conn.execute("SELECT fincore.recon_import('bank', 'csv', %s)", (extra,))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(w,)) for w in ["run"] * 4 + ["import"] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with connect(database) as conn:
        use_tenant(conn, seed)
        assert conn.execute("SELECT count(*) FROM fincore.recon_lines WHERE tenant_id = %s AND reference LIKE 'EXTRA-%%'",
                            (tenant_of(seed),)).fetchone()[0] == 200
        doubles = conn.execute("""
            SELECT (SELECT count(*) FROM (SELECT line_id FROM fincore.recon_matched_lines WHERE tenant_id = %s GROUP BY 1 HAVING count(*) > 1) a)
                 + (SELECT count(*) FROM (SELECT transfer_id FROM fincore.recon_matched_entries WHERE tenant_id = %s GROUP BY 1 HAVING count(*) > 1) b)
        """, (tenant_of(seed), tenant_of(seed))).fetchone()[0]
        assert doubles == 0
        matched = conn.execute("SELECT count(*) FROM fincore.recon_matches WHERE tenant_id = %s AND status = 'confirmed'",
                               (tenant_of(seed),)).fetchone()[0]
        assert matched == sum(1 for c in cases if c.matches)
        assert conn.execute("SELECT count(*) FROM fincore.verify()").fetchone()[0] == 0


def test_camt053_sample(database):
    seed = 41
    setup_tenant(database, seed, source="camt")
    with open(os.path.join(os.path.dirname(__file__), "camt053_sample.xml"), encoding="utf-8") as f:
        doc = f.read()
    with connect(database) as conn:
        use_tenant(conn, seed)
        assert conn.execute("SELECT lines, stored FROM fincore.recon_import('camt', 'camt053', %s)", (doc,)).fetchone() == (5, 5)
        rows = conn.execute("""SELECT bank_ref, amount, currency, booked_on::text, value_on::text, reference, account, description
                                 FROM fincore.recon_lines WHERE tenant_id = %s ORDER BY bank_ref""", (tenant_of(seed),)).fetchall()
        assert rows == [
            ("ASR-1001", 152025, "EUR", "2026-11-02", "2026-11-02", "E2E-INV-881", "DE44500105175407324931", "Invoice 881"),
            ("ASR-1002", -4999, "EUR", "2026-11-02", "2026-11-03", "RENT-NOV", "DE02120300000000202051", "Rent November"),
            ("ASR-1003", 7300000, "EUR", "2026-11-03", "2026-11-03", "BATCH-17", None, "Card settlement batch 17"),
            ("ASR-2001", 150000, "JPY", "2026-11-02", None, "Order 12", None, "Order 12"),
            ("ASR-3001", -12345, "KWD", "2026-11-04", "2026-11-04", "FX-3", None, None),
        ]
        assert conn.execute("SELECT stored FROM fincore.recon_import('camt', 'camt053', %s)", (doc,)).fetchone()[0] == 0


CURRENCIES = {"JPY": 0, "EUR": 2, "KWD": 3}


@settings(max_examples=int(os.environ.get("FINCORE_RECON_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=-10**15, max_value=10**15).filter(lambda v: v != 0),
       st.integers(min_value=0, max_value=5), st.sampled_from(sorted(CURRENCIES)), st.booleans())
def test_amounts_parse_exactly(amount_db, mantissa, scale, currency, comma):
    dbname = amount_db
    value = decimal.Decimal(mantissa).scaleb(-scale)
    text = format(value, "f")
    if comma:
        text = text.replace(".", ",")
    exponent = CURRENCIES[currency]
    minor = value.scaleb(exponent)
    with connect(dbname) as conn:
        use_tenant(conn, 51)
        conn.execute("DELETE FROM fincore.recon_lines WHERE tenant_id = %s", (tenant_of(51),))
        source = "comma" if comma else "point"
        line = f'2026-11-01;"{text}";{currency};R\n'
        try:
            conn.execute("SELECT fincore.recon_import(%s, 'csv', %s)", (source, line))
            got = conn.execute("SELECT amount FROM fincore.recon_lines WHERE tenant_id = %s", (tenant_of(51),)).fetchone()
            assert minor == minor.to_integral_value(), f"{text} {currency} was accepted"
            assert got is not None and got[0] == int(minor)
        except psycopg.Error as e:
            assert e.sqlstate == "ZFC03", f"{text} {currency}: {e.sqlstate} {e}"
            assert minor != minor.to_integral_value(), f"{text} {currency}: {e}"
            assert "has more decimal places than its currency allows" in str(e)


@pytest.fixture(scope="module")
def amount_db(database):
    with connect(database) as conn:
        conn.execute("SELECT fincore.create_tenant('amounts', %s)", (tenant_of(51),))
        use_tenant(conn, 51)
        conn.execute("SELECT fincore.create_account('EUR', id => %s)", (account_of(51, 1),))
        for name, sep in (("point", "."), ("comma", ",")):
            conn.execute("SELECT fincore.recon_create_source(%s, %s, %s)",
                         (name, account_of(51, 1),
                          '{"delimiter": ";", "header": false, "decimal": "%s", '
                          '"columns": {"booked_on": 1, "amount": 2, "currency": 3, "reference": 4}}' % sep))
    return database


@settings(max_examples=int(os.environ.get("FINCORE_RECON_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.sampled_from(
    ['"', ",", "\n", "\r", "x", "-", ".", "9", "", "2026-13-01", '""', "\u00e9", " "])), max_size=4))
def test_malformed_statements(damage_db, damage):
    statement = list("date,amount,ref,bank_ref,case\n2026-11-01,12.34,A,Q1,x\n2026-11-02,-0.05,B,Q2,y\n2026-11-03,7,C,Q3,z\n")
    for (pos, piece) in damage:
        pos = min(pos, len(statement))
        statement[pos:pos + 1] = [piece]
    text = "".join(statement)
    with connect(damage_db) as conn:
        use_tenant(conn, 61)
        conn.execute("BEGIN")
        before = conn.execute("SELECT count(*) FROM fincore.recon_lines WHERE tenant_id = %s", (tenant_of(61),)).fetchone()[0]
        try:
            conn.execute("SELECT fincore.recon_import('damaged', 'csv', %s)", (text,))
        except psycopg.Error as e:
            conn.execute("ROLLBACK")
            assert e.sqlstate == "ZFC03", f"{e.sqlstate}: {e}"
            assert str(e).startswith("line ") or "statement" in str(e), str(e)
            assert conn.execute("SELECT count(*) FROM fincore.recon_lines WHERE tenant_id = %s", (tenant_of(61),)).fetchone()[0] == before
            return
        conn.execute("ROLLBACK")


@pytest.fixture(scope="module")
def damage_db(database):
    with connect(database) as conn:
        conn.execute("SELECT fincore.create_tenant('damage', %s)", (tenant_of(61),))
        use_tenant(conn, 61)
        conn.execute("SELECT fincore.create_account('EUR', id => %s)", (account_of(61, 1),))
        conn.execute("SELECT fincore.recon_create_source('damaged', %s, %s)",
                     (account_of(61, 1), '{"columns": {"booked_on": "date", "amount": "amount", "reference": "ref", '
                                         '"bank_ref": "bank_ref", "description": "case"}}'))
    return database
