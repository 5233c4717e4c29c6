#!/usr/bin/env bash
# test/bench/billing: invoices finalised, posted and collected per second by billing_run over
# 100,000 due subscriptions, against create_transfers posting as many transfers, in one run
# (issue 19's goal: >= 0.3x); and proration computations per second in C.
#
#   billing     CLIENTS sessions run fincore.billing_run(at, 100) in a loop, a transaction per
#               batch, until nothing is due: each renewal writes a period line, an invoice, two
#               transfers (receivable <- revenue, customer -> receivable), the subscription and
#               four events.  Invoices per second = 100,000 / the time it takes.
#   transfers   CLIENTS sessions post 100,000 transfers customer -> receivable with
#               fincore.create_transfers, 100 a call, a transaction each.  Transfers per second.
# Rounds interleave the two in random order; before each billing round every subscription is
# rewound to January and the tables vacuumed.  Medians of ROUNDS rounds.
#   proration   fincore.proration over 1,000,000 generated changes in one statement, against the
#               same statement computing a bigint sum of the same inputs (the cost of the scan).
#
#   ROUNDS=3 ./scripts/bench billing
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-4}
N=100000
DB=fincore_bench_billing
dir=$(dirname -- "${BASH_SOURCE[0]}")

bench_say "Setting up $DB (100,000 customers, 100,000 due subscriptions)"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null

# bench_parallel SQL...: runs each SQL in its own session at once; prints the seconds they took.
bench_parallel() {
    local start end
    start=$(date +%s.%N)
    for sql in "$@"; do
        PGOPTIONS="$PGOPTIONS -c fincore.tenant=00000000-0000-4000-8000-00000000b001" \
            bench_psql -d "$DB" -c "$sql" >/dev/null &
    done
    wait
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

declare -A rate=()
for round in $(seq "$ROUNDS"); do
    for variant in $(printf '%s\n' billing transfers | shuf); do
        bench_psql -d "$DB" -c "CALL public.rewind()" -c "VACUUM ANALYZE" >/dev/null
        sqls=()
        for c in $(seq 0 $((CLIENTS - 1))); do
            if [[ $variant == billing ]]; then
                sqls+=("CALL public.billing_worker()")
            else
                sqls+=("CALL public.transfers_worker($((c * N / CLIENTS + 1)), $((N / CLIENTS)))")
            fi
        done
        secs=$(bench_parallel "${sqls[@]}")
        v=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.1f\n", n / s }')
        rate[$variant]+="$v "
        printf '  round %s %-10s %8s s %10s /s\n' "$round" "$variant" "$secs" "$v"
    done
done
renewed=$(bench_psql -d "$DB" -At -c "SELECT count(*) FROM fincore.invoices WHERE status = 'paid'")

bench_say "Proration in C: 1,000,000 changes in one statement"
declare -a prorations=() scans=()
for round in $(seq "$ROUNDS"); do
    p=$(bench_psql -d "$DB" -At -c "\\timing on" -c "SELECT sum((fincore.proration(1000 + g % 977, '2026-04-01'::timestamptz + (g % 7) * interval '1 hour', '2026-04-01', '2026-05-01', 3000 + g % 101, '2026-04-11'::timestamptz + (g % 86400) * interval '1 second')).credit) FROM generate_series(1, 1000000) g" |
        awk '/^Time:/ { print $2 }')
    b=$(bench_psql -d "$DB" -At -c "\\timing on" -c "SELECT sum((1000 + g % 977) + extract(epoch FROM '2026-04-01'::timestamptz + (g % 7) * interval '1 hour')::bigint + (3000 + g % 101) + extract(epoch FROM '2026-04-11'::timestamptz + (g % 86400) * interval '1 second')::bigint) FROM generate_series(1, 1000000) g" |
        awk '/^Time:/ { print $2 }')
    prorations+=("$(awk -v ms="$p" 'BEGIN { printf "%.0f\n", 1000000 / (ms / 1000) }')")
    scans+=("$(awk -v ms="$b" 'BEGIN { printf "%.0f\n", 1000000 / (ms / 1000) }')")
    printf '  round %s proration %10s /s   the same inputs summed %10s /s\n' "$round" "${prorations[-1]}" "${scans[-1]}"
done

bench_say "Results: medians of $ROUNDS rounds, $CLIENTS sessions"
# shellcheck disable=SC2086
inv=$(bench_median ${rate[billing]}); tr=$(bench_median ${rate[transfers]})
printf '%-34s %14s %8s\n' variant "per second" ratio
printf '%-34s %14.1f %8s\n' "create_transfers (transfers)" "$tr" 1.00
printf '%-34s %14.1f %8s  (goal >= 0.3)\n' "billing_run (invoices)" "$inv" "$(bench_ratio "$inv" "$tr")"
pr=$(bench_median "${prorations[@]}"); sc=$(bench_median "${scans[@]}")
printf '%-34s %14.0f %8s\n' "the same inputs summed" "$sc" 1.00
printf '%-34s %14.0f %8s\n' "fincore.proration" "$pr" "$(bench_ratio "$pr" "$sc")"
bench_psql -d "$DB" -At -c "SELECT 'paid invoices: ' || $renewed || ' (' || $ROUNDS || ' rounds of $N)'" \
    -c "SELECT 'hot accounts rolled up: ' || fincore.rollup_hot_accounts(100000000)" \
    -c "SELECT 'verify() after the run: ' || count(*) || ' broken invariants' FROM fincore.verify()"
