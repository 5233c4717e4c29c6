#!/usr/bin/env bash
# test/bench/limits: single transfers that meet 5 limits, or 10 rules, against the same transfers
# that meet none, in one run (issue 17's targets: >= 0.8x and >= 0.6x).
#
#   none      tenant N: 10,000 accounts, no limits
#   limits5   tenant L: 10,000 accounts and 5 limits that every transfer meets, each with a
#             counter per account: a daily amount (America/New_York), a weekly count
#             (Europe/Berlin), a trailing hour's amount, a lifetime count, and a per-transfer
#             maximum
#   scope1    tenant S: the same 5, plus a daily amount for the whole tenant (one counter every
#             transfer locks: the transfers of the tenant then run one at a time)
#   rules10   tenant R: 10 active rules that every transfer is judged by (target >= 0.6x): 6 over
#             its fields (amount, codes, metadata, local hour and weekday in two time zones,
#             currency) and 4 aggregates (counts and sums of the debit and the credit account in
#             trailing windows of 10 minutes to 7 days)
# 8 clients, uniformly random accounts, ledger events off (the engine's cost, not the outbox's),
# pgbench -M prepared, variants interleaved in random order over ROUNDS rounds; medians.  The
# maxima are high enough that nothing is refused: every transfer is evaluated and charged.
#
#   ROUNDS=5 SECS=10 ./scripts/bench limits
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-8}
DB=fincore_bench_limits
dir=$(dirname -- "${BASH_SOURCE[0]}")

bench_say "Setting up $DB (4 tenants of 10,000 accounts)"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null

declare -A tenant=([none]=00000000-0000-4000-8000-00000000a001 [limits5]=00000000-0000-4000-8000-00000000a002
                   [scope1]=00000000-0000-4000-8000-00000000a003 [rules10]=00000000-0000-4000-8000-00000000a004)
cat >"$BENCH_TMP/transfer.sql" <<'SQL'
\set d random(1, 10000)
\set c random(1, 10000)
\if :d = :c
\set c (:c % 10000) + 1
\endif
SELECT 1 FROM fincore.transfer(public.acct(:d), public.acct(:c), 100);
SQL

declare -A tps=()
for round in $(seq "$ROUNDS"); do
    for variant in $(printf '%s\n' none limits5 scope1 rules10 | shuf); do
        v=$(PGOPTIONS="$PGOPTIONS -c fincore.tenant=${tenant[$variant]}" \
            bench_tps "$DB" "$BENCH_TMP/transfer.sql" "$CLIENTS" "$SECS" -M prepared)
        tps[$variant]+="$v "
        printf '  round %s %-8s %10s transfers/s\n' "$round" "$variant" "$v"
    done
done

bench_say "Results: medians of $ROUNDS rounds, $CLIENTS clients, $SECS s each"
# shellcheck disable=SC2086
none=$(bench_median ${tps[none]}); l5=$(bench_median ${tps[limits5]}); s1=$(bench_median ${tps[scope1]})
# shellcheck disable=SC2086
r10=$(bench_median ${tps[rules10]})
printf '%-10s %14s %8s\n' variant transfers/s ratio
printf '%-10s %14.1f %8s\n' none "$none" 1.00
printf '%-10s %14.1f %8s  (target >= 0.8)\n' limits5 "$l5" "$(bench_ratio "$l5" "$none")"
printf '%-10s %14.1f %8s\n' scope1 "$s1" "$(bench_ratio "$s1" "$none")"
printf '%-10s %14.1f %8s  (target >= 0.6)\n' rules10 "$r10" "$(bench_ratio "$r10" "$none")"
printf '\nEvaluated transfers/s: %.0f with 5 limits each, %.0f with 10 rules each, on this 2-core machine\n(Tazama publishes about 2,500 evaluated transactions/s on a cluster of 20-37 virtual machines).\n' "$l5" "$r10"
bench_psql -d "$DB" -At -c "SELECT 'refused during the run: ' || count(*) FROM fincore.failed_transfers" \
    -c "SELECT 'verify() after the run: ' || count(*) || ' broken invariants' FROM fincore.verify()"
