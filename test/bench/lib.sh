# shellcheck shell=bash
# test/bench/lib.sh: what the benchmarks share.  Source it from a run.sh that scripts/bench
# started inside a throwaway cluster (PGHOST, PGPORT, PGUSER, PGPASSWORD are set).

set -euo pipefail

BENCH_TMP=$(mktemp -d -t fincore-bench.XXXXXX)
trap 'rm -rf -- "$BENCH_TMP"' EXIT

export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
bench_psql() { psql -X -q -v ON_ERROR_STOP=1 -P pager=off "$@"; }

# bench_db NAME: a fresh database with fincore.
bench_db() {
    bench_psql -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
    bench_psql -d "$1" -c "SET client_min_messages = warning; CREATE EXTENSION fincore CASCADE" >/dev/null
}

# bench_tps DB SCRIPT CLIENTS SECONDS [PGBENCH-ARGS...]: transactions per second (excluding
# connection time) of a pgbench custom script.
bench_tps() {
    local db=$1 script=$2 clients=$3 secs=$4
    shift 4
    pgbench -n -f "$script" -c "$clients" -j "$clients" -T "$secs" "$@" "$db" 2>&1 |
        awk '/^tps = / { print $3; found = 1 } END { if (!found) exit 1 }' ||
        { echo "pgbench failed on $script:" >&2; pgbench -n -f "$script" -c "$clients" -j "$clients" -T 1 "$@" "$db" >&2; return 1; }
}

# bench_median NUMBERS...: the median.
bench_median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_ratio A B: A / B with two decimals.
bench_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.2f\n", a / b }'; }

bench_say() { printf '\n== %s\n' "$*"; }
