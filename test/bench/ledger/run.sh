#!/usr/bin/env bash
# test/bench/ledger: posting throughput, in one run, 8 clients, 100,000 accounts, pgbench -M prepared.
#
#   baseline   a minimal PL/pgSQL transfer (two UPDATEs in id order, one INSERT, no checks)
#   same       the same writes and checks as fincore, in PL/pgSQL, on copies of its tables
#              ("same-storage": lock and read both accounts, check, insert the row, update both)
#   uniform    fincore.transfer between two uniformly random accounts (ledger events off, like
#              the baseline, which writes no event either)
#   events     the same with the tenant's ledger events on: each transfer also writes its
#              outbox event, in the same transaction (fincore's default)
#   named      the same with an id the caller names (its idempotency key): inserted as ON CONFLICT
#              DO NOTHING does, checked against failed ids
#   hot        fincore.transfer from a random account to one hot account (every transfer)
#   batch100   fincore.create_transfers with 100 random transfers a call (transfers/s = calls/s x 100)
#   batch1000  the same with 1,000 a call
# Every run starts from the same state: a database copied from one template (the accounts,
# a few thousand warm-up transfers, fresh statistics) and its tables read into shared buffers,
# so no scenario pays for the rows an earlier one wrote (fincore's tables would otherwise grow
# past shared buffers over the rounds while the baseline's stay small).  verify() runs after
# every fincore run.  Then, on a ledger of FILL_TRANSFERS transfers: bytes per transfer (table
# and indexes) and per ledger event, WAL per transfer right after a checkpoint and in steady
# state (for the baseline, same-storage and fincore), and the memory of one backend posting
# RSS_TRANSFERS transfers (create_transfers, 100 a call).
# Targets (issue 15): uniform >= 0.8x baseline and >= 1.3x same; events >= 0.9x uniform; hot
# >= 0.7x uniform; batch100 >= 10x uniform; <= 200 bytes a transfer, <= 150 an event, <= 800
# bytes of WAL a transfer in steady state; RSS flat.  Medians of ROUNDS interleaved rounds of
# SECS seconds.
#
#   ROUNDS=3 SECS=10 ./scripts/bench ledger
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-8}
RSS_TRANSFERS=${RSS_TRANSFERS:-1000000}
FILL_TRANSFERS=${FILL_TRANSFERS:-1000000}
TEMPLATE=fincore_bench_ledger   # set up once, then only copied
DB=fincore_bench_ledger_run     # the copy a run writes to
TENANT=00000000-0000-4000-8000-00000000b001
dir=$(dirname -- "${BASH_SOURCE[0]}")

bench_say "Setting up $TEMPLATE (100,000 accounts each for fincore and the baseline)"
bench_db "$TEMPLATE"
bench_psql -d "$TEMPLATE" -f "$dir/setup.sql" >/dev/null

pick='\set d random(1, 100000)
\set c random(1, 100000)
\if :d = :c
\set c (:c % 100000) + 1
\endif'
printf '%s\nSELECT public.base_transfer(:d, :c, 1);\n' "$pick" >"$BENCH_TMP/baseline.sql"
printf '%s\nSELECT public.same_transfer(public.acct(:d), public.acct(:c), 1);\n' "$pick" >"$BENCH_TMP/same.sql"
printf '%s\nSELECT 1 FROM fincore.transfer(public.acct(:d), public.acct(:c), 1);\n' "$pick" >"$BENCH_TMP/uniform.sql"
cp "$BENCH_TMP/uniform.sql" "$BENCH_TMP/events.sql"
printf '%s\nSELECT 1 FROM fincore.transfer(public.acct(:d), public.acct(:c), 1, id => gen_random_uuid());\n' "$pick" >"$BENCH_TMP/named.sql"
printf '\\set d random(1, 100000)\nSELECT 1 FROM fincore.transfer(public.acct(:d), public.acct(0), 1);\n' >"$BENCH_TMP/hot.sql"
printf 'SELECT count(*) FROM public.batch100(1) AS b(index int, id uuid, result text);\n' >"$BENCH_TMP/batch100.sql"
printf 'SELECT count(*) FROM public.batch(1000) AS b(index int, id uuid, result text);\n' >"$BENCH_TMP/batch1000.sql"

# fincore's scripts run as one trusted backend of the tenant (the session's tenant is set at
# connection time, as a superuser may); the baseline needs none.
run() {
    local scenario=$1
    if [[ $scenario == baseline || $scenario == same ]]; then
        bench_tps "$DB" "$BENCH_TMP/$scenario.sql" "$CLIENTS" "$SECS" -M prepared
    elif [[ $scenario == events ]]; then
        events on
        PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" bench_tps "$DB" "$BENCH_TMP/$scenario.sql" "$CLIENTS" "$SECS" -M prepared
        events off
    else
        PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" bench_tps "$DB" "$BENCH_TMP/$scenario.sql" "$CLIENTS" "$SECS" -M prepared
    fi
}

# Ledger events of the bench tenant, on or off.
events() {
    bench_psql -d "$DB" -c "BEGIN; SELECT fincore.set_tenant('$TENANT'); SELECT fincore.set_ledger_events($([[ $1 == on ]] && echo true || echo false)); COMMIT;" >/dev/null
}

# fresh: $DB anew as a copy of the template, its tables and indexes read into shared buffers.
fresh() {
    bench_psql -d postgres -c "DROP DATABASE IF EXISTS $DB" \
        -c "CREATE DATABASE $DB TEMPLATE $TEMPLATE STRATEGY FILE_COPY" >/dev/null
    bench_psql -d "$DB" -c "SELECT count(public.pg_prewarm(c.oid)) FROM pg_catalog.pg_class c
                             WHERE c.relkind IN ('r', 'i') AND c.relnamespace IN ('public'::regnamespace, 'fincore'::regnamespace)" >/dev/null
}

# Warm up the template, then refresh its statistics, so that no backend plans against an empty
# transfers table; the template is not written to again.
DB=$TEMPLATE events off
PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" bench_tps "$TEMPLATE" "$BENCH_TMP/uniform.sql" "$CLIENTS" 3 -M prepared >/dev/null
bench_psql -d "$TEMPLATE" -c "CREATE EXTENSION pg_prewarm" -c "VACUUM ANALYZE" >/dev/null

declare -A tps=()
broken=0
for round in $(seq "$ROUNDS"); do
    bench_say "Round $round of $ROUNDS ($CLIENTS clients, ${SECS}s a run, each on a fresh copy)"
    for scenario in $(printf '%s\n' baseline same uniform named events hot batch100 batch1000 | shuf); do
        fresh
        v=$(run "$scenario")
        tps[$scenario]+="$v "
        printf '  %-10s %12s calls/s\n' "$scenario" "$v"
        if [[ $scenario != baseline && $scenario != same ]]; then
            bench_psql -d "$DB" -c "SELECT fincore.rollup_hot_accounts(100000)" >/dev/null
            n=$(bench_psql -d "$DB" -At -c "SELECT count(*) FROM fincore.verify()")
            broken=$((broken + n))
        fi
    done
done

bench_say "A ledger of $FILL_TRANSFERS transfers (create_transfers, 1,000 a call), and as many rows for both baselines"
fresh
fill_calls=$((FILL_TRANSFERS / 1000))
PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" pgbench -n -f "$BENCH_TMP/batch1000.sql" -c 2 -j 2 -t $((fill_calls / 2)) "$DB" >/dev/null 2>&1
# The baselines' rows as their functions write them, between uniformly random accounts.
bench_psql -d "$DB" -c "
    INSERT INTO public.base_transfers (debit, credit, amount)
         SELECT 1 + (random() * 99999)::int, 1 + (random() * 99999)::int, 1 FROM generate_series(1, $FILL_TRANSFERS);
    INSERT INTO public.s_transfers (id, tenant_id, debit_account_id, credit_account_id, amount, pending_amount, currency,
                                    code, kind, created_at, flags)
         SELECT gen_random_uuid(), '$TENANT', public.acct(1 + (random() * 99999)::int), public.acct(1 + (random() * 99999)::int),
                1, 0, 'USD', 0, 'posted', clock_timestamp(), 0
           FROM generate_series(1, $FILL_TRANSFERS)" -c "VACUUM ANALYZE" >/dev/null

bench_say "Bytes and WAL per transfer"
# Bytes: each table with its indexes, divided by its rows, on the filled ledger.
bytes() {
    bench_psql -d "$DB" -At -c "SELECT round(pg_total_relation_size('$1') / greatest(count(*), 1)::numeric) FROM $1"
}
bytes_base=$(bytes public.base_transfers)
bytes_same=$(bytes public.s_transfers)
events on
PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" bench_tps "$DB" "$BENCH_TMP/events.sql" 1 3 -M prepared >/dev/null
events off
# A ledger event is its transfer row's place in the event stream: the row's event_seq and
# event_txid (16 bytes; the row grows by 16 from its 144, a multiple of 8) and its entries in the
# two event indexes.  A transfer's bytes are the rest: its row, and the entries of the other indexes.
read -r bytes_fincore bytes_event < <(bench_psql -d "$DB" -At -F ' ' -c "
    WITH n AS (SELECT count(*) AS rows, count(event_seq) AS events FROM fincore.transfers),
         ev AS (SELECT pg_relation_size('fincore.transfers_event_seq_idx') + pg_relation_size('fincore.transfers_event_txid_idx') AS bytes)
    SELECT round((pg_total_relation_size('fincore.transfers') - ev.bytes - 16 * n.events) / greatest(n.rows, 1)::numeric),
           round(16 + ev.bytes / greatest(n.events, 1)::numeric)
      FROM n, ev")
# WAL: 5,000 transfers by one client right after a CHECKPOINT (a full-page image of every page
# first touched since), and 5,000 in steady state, where every page a transfer touches has been
# logged since the last checkpoint already: measured with full_page_writes off, since random
# accounts and index pages of tables of different sizes would otherwise compare their sizes.
wal_per() {
    local scenario=$1 after_checkpoint=$2 lsn0 lsn1
    if [[ $after_checkpoint == yes ]]; then
        bench_psql -d "$DB" -c "CHECKPOINT" >/dev/null
    else
        bench_psql -d "$DB" -c "ALTER SYSTEM SET full_page_writes = off" -c "SELECT pg_reload_conf()" >/dev/null
        sleep 1
    fi
    lsn0=$(bench_psql -d "$DB" -At -c "SELECT pg_current_wal_insert_lsn()")
    if [[ $scenario == baseline || $scenario == same ]]; then
        pgbench -n -M prepared -f "$BENCH_TMP/$scenario.sql" -c 1 -t 5000 "$DB" >/dev/null 2>&1
    else
        PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" pgbench -n -M prepared -f "$BENCH_TMP/$scenario.sql" -c 1 -t 5000 "$DB" >/dev/null 2>&1
    fi
    lsn1=$(bench_psql -d "$DB" -At -c "SELECT pg_current_wal_insert_lsn()")
    if [[ $after_checkpoint != yes ]]; then
        bench_psql -d "$DB" -c "ALTER SYSTEM RESET full_page_writes" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    bench_psql -d "$DB" -At -c "SELECT round(pg_wal_lsn_diff('$lsn1', '$lsn0') / 5000.0)"
}
declare -A wal_cp=() wal_steady=()
for scenario in baseline same uniform; do
    wal_cp[$scenario]=$(wal_per "$scenario" yes)
    wal_steady[$scenario]=$(wal_per "$scenario" no)
done
events on
wal_cp[events]=$(wal_per events yes)
wal_steady[events]=$(wal_per events no)
events off

bench_say "Memory: one backend posting $RSS_TRANSFERS transfers (create_transfers, 100 a call)"
calls=$((RSS_TRANSFERS / 100))
rss_out=$(PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" bench_psql -d "$DB" -At <<SQL
CREATE TEMP TABLE m AS SELECT pg_backend_pid() AS pid;
SELECT public.batch100(1) FROM generate_series(1, 20) LIMIT 0;   -- warm up plans and caches
\\o /dev/null
SELECT count(*) FROM public.batch100(1) AS b(index int, id uuid, result text);
\\o
SELECT 'start ' || pg_backend_pid();
\\! sleep 0
SQL
)
# A loop in one session: the RSS of that backend is read from /proc before and after.
pid_file=$BENCH_TMP/rss.pid
(
    PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" psql -X -q -At -d "$DB" <<SQL >"$BENCH_TMP/rss.out" 2>&1
SELECT pg_backend_pid() \\g $pid_file
SELECT count(*) FROM public.batch100(1) AS b(index int, id uuid, result text), generate_series(1, 50);
SELECT pg_sleep(2);
DO \$\$ BEGIN FOR i IN 1..$calls LOOP PERFORM count(*) FROM public.batch100(i) AS b(index int, id uuid, result text); COMMIT; END LOOP; END \$\$;
SELECT pg_sleep(2);
SQL
) &
loop_pid=$!
while [[ ! -s $pid_file ]]; do sleep 0.1; done
backend=$(head -1 "$pid_file")
sleep 1.5
# Both figures from one read of the status file: a backend that has just exited (a zombie) has a
# status file without them, and two reads could straddle its exit.
rss_read() {
    local status
    status=$(cat "/proc/$backend/status" 2>/dev/null) || return 1
    awk '$1 == "RssAnon:" { a = $2 } $1 == "VmRSS:" { r = $2 } END { if (a == "" || r == "") exit 1; print a, r }' <<<"$status"
}
read -r anon0 rss0 < <(rss_read)
peak_anon=$anon0 anon1=$anon0 rss1=$rss0
while kill -0 "$loop_pid" 2>/dev/null; do
    if read -r a r < <(rss_read); then
        [[ $a -gt $peak_anon ]] && peak_anon=$a
        anon1=$a rss1=$r
    fi
    sleep 0.5
done
wait "$loop_pid" || { cat "$BENCH_TMP/rss.out"; exit 1; }
: "$rss_out"

bench_say "Results: medians of $ROUNDS rounds"
base=$(bench_median ${tps[baseline]})
same=$(bench_median ${tps[same]})
uni=$(bench_median ${tps[uniform]})
evt=$(bench_median ${tps[events]})
named=$(bench_median ${tps[named]})
hot=$(bench_median ${tps[hot]})
b100=$(bench_median ${tps[batch100]})
b100_transfers=$(awk -v t="$b100" 'BEGIN { printf "%.1f", t * 100 }')
b1000=$(bench_median ${tps[batch1000]})
b1000_transfers=$(awk -v t="$b1000" 'BEGIN { printf "%.1f", t * 1000 }')
printf '%-34s %14s %10s %s\n' scenario "transfers/s" ratio "target"
printf '%-34s %14.1f %10s\n' "baseline (PL/pgSQL, no checks)" "$base" "1.00"
printf '%-34s %14.1f %10s %s\n' "same-storage (PL/pgSQL, checks)" "$same" "$(bench_ratio "$same" "$base")" "(x baseline)"
printf '%-34s %14.1f %10s %s\n' "fincore, uniform" "$uni" "$(bench_ratio "$uni" "$base")" ">= 0.8 x baseline"
printf '%-34s %14s %10s %s\n' "  ... against same-storage" "" "$(bench_ratio "$uni" "$same")" ">= 1.3 x same"
printf '%-34s %14.1f %10s %s\n' "fincore, uniform, ids named" "$named" "$(bench_ratio "$named" "$uni")" "(x uniform)"
printf '%-34s %14.1f %10s %s\n' "fincore, uniform, events on" "$evt" "$(bench_ratio "$evt" "$uni")" ">= 0.9 x uniform"
printf '%-34s %14.1f %10s %s\n' "fincore, every credit to 1 hot" "$hot" "$(bench_ratio "$hot" "$uni")" ">= 0.7 x uniform"
printf '%-34s %14.1f %10s %s\n' "fincore, create_transfers x100" "$b100_transfers" "$(bench_ratio "$b100_transfers" "$uni")" ">= 10 x uniform"
printf '%-34s %14.1f %10s %s\n' "fincore, create_transfers x1000" "$b1000_transfers" "$(bench_ratio "$b1000_transfers" "$uni")" "(x uniform)"
printf '\nBytes a transfer (table and indexes): baseline %s, same-storage %s, fincore %s (target <= 200); a ledger event: %s (target <= 150).\n' \
    "$bytes_base" "$bytes_same" "$bytes_fincore" "$bytes_event"
printf 'WAL a transfer, right after a checkpoint / in steady state: baseline %s / %s, same-storage %s / %s, fincore %s / %s (target <= 800 steady), events on %s / %s.\n' \
    "${wal_cp[baseline]}" "${wal_steady[baseline]}" "${wal_cp[same]}" "${wal_steady[same]}" \
    "${wal_cp[uniform]}" "${wal_steady[uniform]}" "${wal_cp[events]}" "${wal_steady[events]}"
printf '\nMemory of one backend over %s transfers: private (RssAnon) %s kB -> %s kB (peak %s kB), growth %s MB (target < 20 MB); VmRSS %s kB -> %s kB (includes shared buffers it touched).\n' \
    "$RSS_TRANSFERS" "$anon0" "$anon1" "$peak_anon" "$(awk -v a="$anon0" -v b="$peak_anon" 'BEGIN { printf "%.1f", (b - a) / 1024 }')" "$rss0" "$rss1"
n=$(bench_psql -d "$DB" -At -c "SELECT count(*) FROM fincore.verify()")
printf '\nverify(): %s broken invariants after the %s fincore runs, %s on the filled ledger.\n' "$broken" "$((ROUNDS * 6))" "$n"
