#!/usr/bin/env bash
# test/bench/queue: jobs per second through fincore's queue against a naive SQL queue, 4 workers.
#
# Each pgbench transaction is one worker cycle, three statements in autocommit as a real
# worker runs them: enqueue, dequeue (the claim commits before the work), complete.
#   naive_1      the baseline: one table, INSERT; UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
#                SKIP LOCKED) to claim; DELETE to complete (setup.sql)
#   fincore_1    fincore.enqueue, fincore.dequeue(max => 1), fincore.complete
#   fincore_10   fincore.enqueue_many of 10, fincore.dequeue(max => 10), fincore.complete_many of the 10
#   fincore_loop_1  a worker's loop in two statements: fincore.enqueue, then
#                fincore.complete_and_dequeue (completes the job the last cycle claimed, claims the next)
# Jobs/s = jobs completed (ids handed out minus jobs still queued) / seconds, medians of ROUNDS
# interleaved rounds.  Then:
#   backlog      fincore_1, fincore_loop_1 (and naive_1) with BACKLOG (1,000,000) older jobs waiting
#   held xmin    fincore_loop_1 (and naive_1) for WARMUP + HOLD + AFTER seconds while another session
#                holds a REPEATABLE READ transaction open (xmin held) for HOLD seconds; pgbench
#                reports every 5 s; the hot table's size and dead tuples are shown at the end.
# Targets (issue 7): fincore_1 >= 1.5x naive_1; fincore_10 >= 5x fincore_1; backlog >= 0.8x
# empty; held xmin >= 0.5x normal throughout and back to normal within a minute of the end.
# Issue 23: fincore_loop_1 >= 1.2x naive_1, with the backlog and held xmin results kept.
#
#   ROUNDS=3 SECS=10 ./scripts/bench queue          HOLD=60 s by default
#   FINCORE_LONG=1 ./scripts/bench queue            the issue's 5-minute hold (HOLD=300)
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
CLIENTS=4
BACKLOG=${BACKLOG:-1000000}
if [[ ${FINCORE_LONG:-} == 1 ]]; then HOLD=${HOLD:-300}; else HOLD=${HOLD:-60}; fi
WARMUP=${WARMUP:-20}
AFTER=${AFTER:-60}
DB=fincore_bench_queue
dir=$(dirname -- "${BASH_SOURCE[0]}")
root=$(cd -- "$dir/../../.." && pwd -P)
TENANT=00000000-0000-4000-8000-00000000b001
# Every pgbench session is the bench tenant, as a JWT would make it (no extra statement).
export PGOPTIONS="${PGOPTIONS:-} -c request.jwt.claims={\"tenant_id\":\"$TENANT\"}"

bench_say "Setting up $DB"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null

# jobs_per_sec SCRIPT IMPL SECONDS: run one pgbench and print the jobs it completed per second.
jobs_per_sec() {
    local script=$1 impl=$2 secs=$3 before after
    before=$(bench_psql -d "$DB" -At -c "SELECT public.bench_done('$impl')")
    bench_tps "$DB" "$dir/$script.sql" "$CLIENTS" "$secs" -M prepared -D prev=0 -D att=0 >/dev/null
    after=$(bench_psql -d "$DB" -At -c "SELECT public.bench_done('$impl')")
    awk -v a="$before" -v b="$after" -v s="$secs" 'BEGIN { printf "%.1f\n", (b - a) / s }'
}

reset() { bench_psql -d "$DB" -c "SELECT public.bench_reset()" -c "VACUUM ANALYZE fincore.jobs, public.naive_jobs" >/dev/null; }

# The two queues must behave before anything is timed: a job goes in, is claimed, completes.
reset
got=$(bench_psql -d "$DB" -At -c "SELECT fincore.enqueue('check', '{}')" \
    -c "SELECT count(*) FROM fincore.dequeue('check') j, LATERAL fincore.complete(j.id)" | tail -1)
[[ $got == 1 ]] || { echo "fincore did not complete the check job" >&2; exit 1; }

declare -A jobs=()
for round in $(seq "$ROUNDS"); do
    bench_say "Round $round of $ROUNDS (${SECS}s per run, $CLIENTS clients, empty queue)"
    for s in naive_1 fincore_1 fincore_loop_1 fincore_10; do
        reset
        v=$(jobs_per_sec "$s" "${s%%_*}" "$SECS")
        jobs[$s]+="$v "
        printf '  %-14s %10s jobs/s\n' "$s" "$v"
    done
done

bench_say "Backlog: $BACKLOG jobs waiting in each queue"
reset
bench_psql -d "$DB" -c "SELECT public.bench_backlog($BACKLOG)" -c "VACUUM ANALYZE fincore.jobs, public.naive_jobs" >/dev/null
bench_psql -d "$DB" -At -c "SELECT 'waiting: fincore ' || (SELECT count(*) FROM fincore.jobs) || ', naive ' || (SELECT count(*) FROM public.naive_jobs)"
for round in $(seq "$ROUNDS"); do
    for s in naive_1 fincore_1 fincore_loop_1; do
        v=$(jobs_per_sec "$s" "${s%%_*}" "$SECS")
        jobs[backlog_$s]+="$v "
        printf '  round %d %-12s %10s jobs/s\n' "$round" "$s" "$v"
    done
done

# held_xmin SCRIPT IMPL: progress every 5 s while a snapshot is held from WARMUP to WARMUP + HOLD.
held_xmin() {
    local script=$1 impl=$2 total=$((WARMUP + HOLD + AFTER)) out=$BENCH_TMP/held_$1.txt
    reset
    (sleep "$WARMUP"
     bench_psql -d "$DB" -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT txid_current()" \
         -c "SELECT pg_sleep($HOLD)" -c "COMMIT" >/dev/null) &
    local holder=$!
    pgbench -n -M prepared -D prev=0 -D att=0 -f "$dir/$script.sql" -c "$CLIENTS" -j "$CLIENTS" -T "$total" -P 5 "$DB" 2>&1 |
        awk '/^progress: / { print $2 + 0, $4 + 0 }' >"$out"
    wait "$holder"
    local table=public.naive_jobs
    [[ $impl == fincore ]] && table=fincore.jobs
    sleep 1
    bench_psql -d "$DB" -At -F ' ' -c "SELECT pg_size_pretty(pg_table_size('$table')), pg_size_pretty(pg_indexes_size('$table')),
                                             n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relid = '$table'::regclass" \
        >"$BENCH_TMP/held_$1.size"
    awk -v w="$WARMUP" -v h="$HOLD" -v name="$script" -v size="$(cat "$BENCH_TMP/held_$1.size")" '
        function asort(a, n,   i, j, x) { for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x } }
        { t[NR] = $1; v[NR] = $2 }
        END {
            n = 0; for (i = 1; i <= NR; i++) if (t[i] > 5 && t[i] <= w) before[++n] = v[i]
            asort(before, n); normal = n ? (n % 2 ? before[(n + 1) / 2] : (before[n / 2] + before[n / 2 + 1]) / 2) : 0
            lo = -1; m = 0
            for (i = 1; i <= NR; i++) if (t[i] > w && t[i] <= w + h) { during[++m] = v[i]; if (lo < 0 || v[i] < lo) lo = v[i] }
            asort(during, m); mid = m ? during[int((m + 1) / 2)] : 0
            back = -1
            for (i = 1; i <= NR; i++) if (t[i] > w + h && back < 0 && v[i] >= 0.9 * normal) back = t[i] - (w + h)
            split(size, s, " ")
            printf "%-10s normal %8.1f  during hold: min %8.1f (%.2fx) median %8.1f (%.2fx)  back to >= 0.9x normal %s after it ended\n",
                name, normal, lo, normal ? lo / normal : 0, mid, normal ? mid / normal : 0, back < 0 ? "not within the run" : back "s"
            printf "%-10s at the end: table %s, indexes %s, %s live and %s dead tuples\n", name, s[1] " " s[2], s[3] " " s[4], s[5], s[6]
            printf "%-10s every 5 s:", name; for (i = 1; i <= NR; i++) printf " %d", v[i]; printf "\n"
        }' "$out"
}

# examples_jobs_per_sec KIND: EXAMPLE_JOBS jobs through CLIENTS of the examples' workers (python or
# node), each started by its one command with --exit-when-idle; jobs per second from their start
# to the last one's exit (connections, the work's empty handler and its example_runs row included).
EXAMPLE_JOBS=${EXAMPLE_JOBS:-20000}
examples_jobs_per_sec() {
    local kind=$1 t0 t1 i
    local -a pids=()
    reset
    bench_psql -d "$DB" -c "TRUNCATE public.example_runs" >/dev/null 2>&1 || true
    # In calls of 10,000 (fincore.max_batch_size), one transaction.
    bench_psql -d "$DB" -c "SELECT count(*) FROM generate_series(1, $EXAMPLE_JOBS, 10000) AS g,
        LATERAL fincore.enqueue_many('examples', array_fill('{\"n\": 1}'::jsonb, ARRAY[least(10000, $EXAMPLE_JOBS - g + 1)]))" >/dev/null
    t0=$(date +%s.%N)
    for i in $(seq "$CLIENTS"); do
        if [[ $kind == python ]]; then
            /usr/bin/python3 "$root/examples/worker.py" jobs --queue examples --dsn "dbname=$DB" --exit-when-idle >/dev/null &
        else
            PGDATABASE=$DB node "$root/examples/node/worker.js" jobs --queue examples --exit-when-idle >/dev/null &
        fi
        pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s.%N)
    local done
    done=$(bench_psql -d "$DB" -At -c "SELECT count(*) FROM public.example_runs WHERE kind = 'job'")
    awk -v n="$done" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", n / (b - a) }'
}

bench_say "The examples' workers: $EXAMPLE_JOBS jobs, $CLIENTS workers of each (examples/)"
if command -v npm >/dev/null && npm ci --no-audit --no-fund --prefix "$root/examples/node" >/dev/null 2>&1; then
    kinds="python node"
else
    kinds="python"
    echo "  (no npm: the Node worker is left out)"
fi
for round in $(seq "$ROUNDS"); do
    for kind in $kinds; do
        v=$(examples_jobs_per_sec "$kind")
        jobs[example_$kind]+="$v "
        printf '  round %d %-8s %10s jobs/s\n' "$round" "$kind" "$v"
    done
done

bench_say "Held xmin: ${HOLD}s hold after ${WARMUP}s, then ${AFTER}s more (fincore, then naive)"
held_fincore=$(held_xmin fincore_loop_1 fincore)
echo "$held_fincore"
held_naive=$(held_xmin naive_1 naive)
echo "$held_naive"

# shellcheck disable=SC2086 # the list of figures is split on purpose
med() { bench_median ${jobs[$1]}; }
bench_say "Results: jobs/s, medians of $ROUNDS rounds ($CLIENTS workers, enqueue + dequeue + complete)"
printf '%-28s %12s\n' scenario jobs/s
for k in naive_1 fincore_1 fincore_loop_1 fincore_10 backlog_naive_1 backlog_fincore_1 backlog_fincore_loop_1; do
    printf '%-28s %12s\n' "$k" "$(med "$k")"
done
printf '\nfincore_1 / naive_1             = %s (target >= 1.5)\n' "$(bench_ratio "$(med fincore_1)" "$(med naive_1)")"
printf 'fincore_loop_1 / naive_1        = %s (target >= 1.2, issue 23)\n' "$(bench_ratio "$(med fincore_loop_1)" "$(med naive_1)")"
printf 'fincore_10 / fincore_1          = %s (target >= 5)\n' "$(bench_ratio "$(med fincore_10)" "$(med fincore_1)")"
printf 'fincore_1 backlog / empty       = %s (target >= 0.8)\n' "$(bench_ratio "$(med backlog_fincore_1)" "$(med fincore_1)")"
printf 'fincore_loop_1 backlog / empty  = %s (target >= 0.8)\n' "$(bench_ratio "$(med backlog_fincore_loop_1)" "$(med fincore_loop_1)")"
printf 'naive_1 backlog / empty         = %s\n' "$(bench_ratio "$(med backlog_naive_1)" "$(med naive_1)")"
for kind in $kinds; do
    printf 'examples/ %-6s worker (x%d)  = %s jobs/s (median)\n' "$kind" "$CLIENTS" "$(med "example_$kind")"
done
printf '\nheld xmin (%ss): target >= 0.5x normal throughout, back to normal within 60 s\n%s\n%s\n' \
    "$HOLD" "$held_fincore" "$held_naive"
