#!/usr/bin/env bash
# test/bench/citus: fincore through a Citus coordinator with two workers against the same
# workload on one node, in one run on this machine.
#
#   single     fincore.transfer on one PostgreSQL server (this benchmark's pg_virtualenv cluster)
#   citus      the same through the coordinator of a Citus cluster (a coordinator and two workers
#              on 127.0.0.1, scripts/citus.sh), fincore distributed by tenant
# Each: 8 clients, 8 tenants of 1,000 accounts, uniformly random tenant and accounts, ledger
# events off (on Citus an event is a coordinator outbox row, which makes the transaction a
# two-phase commit across nodes: the "+ events" rows measure that).  Then the latency of one
# router query (an account by tenant and id) from one client.  One box cannot show scale-out: the
# three Citus nodes share its 2 cores with each other and with the clients; the ratio says what
# the coordinator's hop and the distributed planning cost.  Medians of ROUNDS interleaved rounds.
#
#   ROUNDS=3 SECS=10 ./scripts/bench citus
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=scripts/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../../../scripts/lib.sh"
# shellcheck source=scripts/citus.sh
source "$FINCORE_ROOT/scripts/citus.sh"

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-8}
DB=fincore_bench_citus
dir=$FINCORE_ROOT/test/bench/citus

fincore_citus_ensure || fincore_die "no Citus to benchmark (see ./scripts/test --citus)"
citus_dir=$(mktemp -d -t fincore-bench-citus.XXXXXX)
trap 'fincore_citus_stop "$citus_dir"; rm -rf -- "$citus_dir" "$BENCH_TMP"' EXIT

bench_say "Setting up $DB on one node"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null

bench_say "Starting Citus (a coordinator and two workers on 127.0.0.1:$FINCORE_CITUS_PORT..) and distributing fincore"
fincore_citus_start "$citus_dir"
citus() { PGHOST=127.0.0.1 PGPORT=$FINCORE_CITUS_PORT PGUSER=postgres PGPASSWORD= "$@"; }
citus bench_psql -d "$FINCORE_CITUS_DB" -c "SELECT count(*) FROM fincore.distribute()" >/dev/null
citus bench_psql -d "$FINCORE_CITUS_DB" -f "$dir/setup.sql" >/dev/null

cat >"$BENCH_TMP/transfer.sql" <<'SQL'
\set t random(1, 8)
\set d random(1, 1000)
\set c random(1, 1000)
\if :d = :c
\set c (:c % 1000) + 1
\endif
BEGIN;
SELECT fincore.set_tenant(public.bench_tenant(:t));
SELECT 1 FROM fincore.transfer(public.bench_acct(:d), public.bench_acct(:c), 1);
END;
SQL
cat >"$BENCH_TMP/router.sql" <<'SQL'
\set t random(1, 8)
\set d random(1, 1000)
SELECT debits_posted FROM fincore.accounts WHERE tenant_id = public.bench_tenant(:t) AND id = public.bench_acct(:d);
SQL

events() {   # on|off, in the database the environment points at
    "$@" bench_psql -d "$target_db" -c "BEGIN" -c "DO \$\$ BEGIN FOR t IN 1 .. 8 LOOP PERFORM fincore.set_tenant(public.bench_tenant(t));
        PERFORM fincore.set_ledger_events($event_flag); END LOOP; END \$\$" -c "COMMIT" >/dev/null
}

run() {   # scenario -> transactions/s (for router: one client)
    local scenario=$1 prefix=() target_db=$DB event_flag=false
    [[ $scenario == citus* ]] && { prefix=(citus); target_db=$FINCORE_CITUS_DB; }
    [[ $scenario == *events ]] && event_flag=true
    if [[ $scenario == *router ]]; then
        "${prefix[@]}" bench_tps "$target_db" "$BENCH_TMP/router.sql" 1 "$SECS" -M prepared
        return
    fi
    events "${prefix[@]}"
    "${prefix[@]}" bench_tps "$target_db" "$BENCH_TMP/transfer.sql" "$CLIENTS" "$SECS" -M prepared
    event_flag=false events "${prefix[@]}"
}

declare -A tps=()
for round in $(seq "$ROUNDS"); do
    bench_say "Round $round of $ROUNDS"
    for scenario in $(printf '%s\n' single citus single_events citus_events single_router citus_router | shuf); do
        v=$(run "$scenario")
        tps[$scenario]+="$v "
        printf '  %-14s %12s/s\n' "$scenario" "$v"
    done
done

bench_say "verify()"
bench_psql -d "$DB" -At -c "SELECT 'one node: ' || count(*) || ' broken invariants' FROM fincore.verify()"
citus bench_psql -d "$FINCORE_CITUS_DB" -At -c "SELECT 'Citus: ' || count(*) || ' broken invariants' FROM fincore.verify()"

bench_say "Results: medians of $ROUNDS rounds ($CLIENTS clients, 8 tenants, 2 workers on one 2-core box)"
s=$(bench_median ${tps[single]})
c=$(bench_median ${tps[citus]})
se=$(bench_median ${tps[single_events]})
ce=$(bench_median ${tps[citus_events]})
sr=$(bench_median ${tps[single_router]})
cr=$(bench_median ${tps[citus_router]})
printf '%-40s %12s %12s %8s\n' scenario "one node" "Citus" "Citus ÷ one node"
printf '%-40s %12.1f %12.1f %8s\n' "transfers/s, events off" "$s" "$c" "$(bench_ratio "$c" "$s")"
printf '%-40s %12.1f %12.1f %8s\n' "transfers/s, events on" "$se" "$ce" "$(bench_ratio "$ce" "$se")"
printf '%-40s %12.3f %12.3f %8s\n' "router query latency, ms (1 client)" \
    "$(awk -v t="$sr" 'BEGIN { print 1000 / t }')" "$(awk -v t="$cr" 'BEGIN { print 1000 / t }')" \
    "$(bench_ratio "$sr" "$cr")"
