#!/usr/bin/env bash
# test/bench/ratelimit: the shared-memory rate limiter (issue 22's goals), in one run.
#
#   1. Inside one backend: one statement making N decisions (over KEYS keys) with
#      fincore.rate_limit, and the same statement with a table-based GCRA in PL/pgSQL (one
#      UPDATE per decision, public.gcra_table, the keys' rows made beforehand), and the statement alone (the key built, no
#      decision).  Printed: decisions per second and the ratio fincore / table; goals
#      >= 1,000,000/s and >= 50x.  WAL bytes per decision from the WAL insert position around
#      each statement; goal 0 for fincore.  KEYS is 100,000, so a key is decided N / KEYS = 10
#      times: one statement is one transaction, whose updates of a row cannot be pruned before it
#      ends, so with few keys the table's rows grow chains of versions and the baseline slows
#      down quadratically, which would flatter fincore.
#   2. Through pgbench, CLIENTS clients, prepared statements (as PostgREST and most drivers
#      run them): "SELECT 1" against "SELECT allowed FROM fincore.rate_limit('user:' || random
#      key of 10000, ...)", interleaved rounds; goal: the rate_limit transaction rate >= 0.9x
#      SELECT 1's (a call costs <= 10%).  Also the call in the select list, (rate_limit(...)).allowed,
#      which skips the function scan's tuplestore, one hot key shared by every client, and the
#      table-based GCRA, one transaction (one UPDATE and its commit) per decision, as a
#      db-pre-request hook would run it.
#   Medians of ROUNDS rounds, and medians of each round's ratio (the two sides of a ratio run
#   back to back, so the machine's drift between rounds cancels out).
#
#   ROUNDS=5 ./scripts/bench ratelimit          N=1000000 CLIENTS=4 SECS=5
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

N=${N:-1000000}
KEYS=${KEYS:-100000}
ROUNDS=${ROUNDS:-5}
CLIENTS=${CLIENTS:-4}
SECS=${SECS:-5}
DB=fincore_bench_ratelimit
dir=$(dirname -- "${BASH_SOURCE[0]}")

bench_say "Setting up $DB"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null
[[ $(bench_psql -d "$DB" -At -c "SELECT slots FROM fincore.rate_limit_stats()") -gt 0 ]] ||
    { echo "fincore is not in shared_preload_libraries" >&2; exit 1; }

declare -A rate=() wal=() this=()
declare -a ratio_table=() ratio_select1=() ratio_column=()
for round in $(seq "$ROUNDS"); do
    bench_say "Round $round of $ROUNDS: one statement of $N decisions over $KEYS keys per variant"
    for variant in $(printf '%s\n' fincore table statement | shuf); do
        bench_psql -d "$DB" -c "SELECT public.gcra_keys($KEYS)" -c "VACUUM ANALYZE public.gcra_tats" -c "CHECKPOINT" >/dev/null
        IFS='|' read -r allowed bytes ms < <(bench_psql -d "$DB" -At -c "SELECT * FROM public.decide_many('$variant', $N, $KEYS)")
        r=$(awk -v n="$N" -v ms="$ms" 'BEGIN { printf "%.0f", n / ms * 1000 }')
        rate[$variant]+="$r "
        this[$variant]=$r
        wal[$variant]+="$(awk -v b="$bytes" -v n="$N" 'BEGIN { printf "%.3f", b / n }') "
        printf '  %-10s %12s decisions/s  %9.1f ms  allowed %8s  WAL %12s bytes\n' "$variant" "$r" "$ms" "$allowed" "$bytes"
    done
    ratio_table+=("$(bench_ratio "${this[fincore]}" "${this[table]}")")
done

cat >"$BENCH_TMP/select1.sql" <<'SQL'
SELECT 1;
SQL
cat >"$BENCH_TMP/rate_limit.sql" <<'SQL'
\set id random(1, 10000)
SELECT allowed FROM fincore.rate_limit('user:' || :id, 1000, '1 second', 100);
SQL
cat >"$BENCH_TMP/rate_limit_column.sql" <<'SQL'
\set id random(1, 10000)
SELECT (fincore.rate_limit('user:' || :id, 1000, '1 second', 100)).allowed;
SQL
cat >"$BENCH_TMP/table_gcra.sql" <<'SQL'
\set id random(1, 10000)
SELECT public.gcra_table('user:' || :id, 1000, '1 second', 100);
SQL
cat >"$BENCH_TMP/hot_key.sql" <<'SQL'
SELECT allowed FROM fincore.rate_limit('hot', 1000000, '1 second', 1000);
SQL
declare -A tps=()
for round in $(seq "$ROUNDS"); do
    bench_say "Round $round of $ROUNDS: pgbench, $CLIENTS clients, ${SECS}s per run, -M prepared"
    bench_psql -d "$DB" -c "SELECT public.gcra_keys($KEYS)" -c "VACUUM ANALYZE public.gcra_tats" >/dev/null
    for variant in $(printf '%s\n' select1 rate_limit rate_limit_column hot_key table_gcra | shuf); do
        v=$(bench_tps "$DB" "$BENCH_TMP/$variant.sql" "$CLIENTS" "$SECS" -M prepared)
        tps[$variant]+="$v "
        this[$variant]=$v
        printf '  %-12s %12s tps\n' "$variant" "$v"
    done
    ratio_select1+=("$(bench_ratio "${this[rate_limit]}" "${this[select1]}")")
    ratio_column+=("$(bench_ratio "${this[rate_limit_column]}" "${this[select1]}")")
done

bench_say "Results: medians of $ROUNDS rounds"
# shellcheck disable=SC2086
f=$(bench_median ${rate[fincore]})
# shellcheck disable=SC2086
t=$(bench_median ${rate[table]})
# shellcheck disable=SC2086
s=$(bench_median ${rate[statement]})
printf '%-34s %14s\n' "in one backend ($N per statement, $KEYS keys)" "decisions/s"
printf '  %-32s %14.0f   WAL/decision %s bytes (goal >= 1,000,000/s, 0 bytes)\n' "fincore.rate_limit" "$f" "$(bench_median ${wal[fincore]})"
printf '  %-32s %14.0f   WAL/decision %s bytes\n' "table GCRA in PL/pgSQL" "$t" "$(bench_median ${wal[table]})"
printf '  %-32s %14.0f\n' "the statement alone" "$s"
printf '  fincore / table: %sx of the medians; median of the rounds'\'' ratios %sx (goal >= 50x)\n' "$(bench_ratio "$f" "$t")" "$(bench_median "${ratio_table[@]}")"
# shellcheck disable=SC2086
one=$(bench_median ${tps[select1]})
# shellcheck disable=SC2086
rl=$(bench_median ${tps[rate_limit]})
# shellcheck disable=SC2086
col=$(bench_median ${tps[rate_limit_column]})
# shellcheck disable=SC2086
hot=$(bench_median ${tps[hot_key]})
# shellcheck disable=SC2086
tab=$(bench_median ${tps[table_gcra]})
printf '%-34s %14s\n' "pgbench, $CLIENTS clients" "tps"
printf '  %-32s %14.1f\n' "SELECT 1" "$one"
printf '  %-32s %14.1f   %sx SELECT 1; median of the rounds'\'' ratios %sx (goal >= 0.90)\n' "rate_limit, 10,000 keys" "$rl" "$(bench_ratio "$rl" "$one")" "$(bench_median "${ratio_select1[@]}")"
printf '  %-32s %14.1f   %sx SELECT 1; median of the rounds'\'' ratios %sx\n' "(rate_limit(...)).allowed" "$col" "$(bench_ratio "$col" "$one")" "$(bench_median "${ratio_column[@]}")"
printf '  %-32s %14.1f   %sx SELECT 1\n' "rate_limit, one hot key" "$hot" "$(bench_ratio "$hot" "$one")"
printf '  %-32s %14.1f   %sx SELECT 1; rate_limit / this: %sx\n' "table GCRA, a transaction each" "$tab" "$(bench_ratio "$tab" "$one")" "$(bench_ratio "$rl" "$tab")"
