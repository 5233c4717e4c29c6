#!/usr/bin/env bash
# test/bench/fees: 1,000,000 fee calculations of one schedule (a percentage, a flat part, three
# graduated tiers and a cap) in one statement:
#   fincore   SELECT sum(fincore.calculate_fee('bench', a)) FROM generate_series(...)
#   plpgsql   the same schedule hand-written as a PL/pgSQL function (numeric arithmetic)
#   floor     the same statement summing the amounts, no fee at all (the query's own cost)
# measured in the same run, interleaved over ROUNDS rounds; medians.  Target (issue 5):
# fincore >= 10x faster than PL/pgSQL.  The two must agree on every amount first.
#
# Then transfers with a fee leg against transfers without (8 clients, 100,000 accounts, the fee
# account flagged hot), pgbench -M prepared, interleaved; target: >= 0.7x the transfers/s
# without a fee.
#
#   ROUNDS=5 N=1000000 SECS=10 ./scripts/bench fees
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

ROUNDS=${ROUNDS:-5}
N=${N:-1000000}
DB=fincore_bench_fees
dir=$(dirname -- "${BASH_SOURCE[0]}")

bench_say "Setting up $DB"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null

# Amounts spread over all three tiers and past the cap: 0 to 3,000,000 cents.
amounts="(g::bigint * 7919) % 3000001"

bench_say "Checking that fincore and the PL/pgSQL function agree on $N amounts"
diff=$(bench_psql -d "$DB" -At -c "SELECT count(*) FROM generate_series(1, $N) g
                                    WHERE fincore.calculate_fee('bench', $amounts) <> public.plpgsql_fee($amounts)")
[[ $diff == 0 ]] || { echo "fincore and plpgsql disagree on $diff amounts" >&2; exit 1; }
bench_psql -d "$DB" -c "SELECT a, fincore.calculate_fee('bench', a) AS fincore, public.plpgsql_fee(a) AS plpgsql
                          FROM unnest(ARRAY[0, 100000, 100001, 1000000, 1000001, 3000000]) a"

for variant in fincore plpgsql floor; do
    case $variant in
        fincore) expr="fincore.calculate_fee('bench', $amounts)" ;;
        plpgsql) expr="public.plpgsql_fee($amounts)" ;;
        floor)   expr="$amounts" ;;
    esac
    echo "SELECT sum($expr) FROM generate_series(1, $N) g;" >"$BENCH_TMP/$variant.sql"
done

# ms for one run of a script (pgbench's latency of a single transaction).
bench_ms() {
    pgbench -n -t 1 -f "$1" "$DB" 2>&1 | awk '/^latency average = / { print $4; found = 1 } END { if (!found) exit 1 }'
}

declare -A ms=()
for round in $(seq "$ROUNDS"); do
    bench_say "Round $round of $ROUNDS ($N calculations per variant)"
    for variant in fincore plpgsql floor; do
        v=$(bench_ms "$BENCH_TMP/$variant.sql")
        ms[$variant]+="$v "
        printf '  %-8s %10s ms\n' "$variant" "$v"
    done
done

bench_say "Results: medians of $ROUNDS rounds, $N fee calculations in one statement"
# shellcheck disable=SC2086
fc=$(bench_median ${ms[fincore]}); pl=$(bench_median ${ms[plpgsql]}); fl=$(bench_median ${ms[floor]})
printf '%-8s %12s %16s\n' variant "ms" "calcs/s"
for variant in fincore plpgsql floor; do
    # shellcheck disable=SC2086
    m=$(bench_median ${ms[$variant]})
    printf '%-8s %12.1f %16.0f\n' "$variant" "$m" "$(awk -v n="$N" -v t="$m" 'BEGIN { print n / (t / 1000) }')"
done
printf '\nplpgsql time / fincore time = %s (target >= 10)\n' "$(bench_ratio "$pl" "$fc")"
printf 'net of the query itself (minus floor): %s\n' \
    "$(awk -v p="$pl" -v f="$fc" -v z="$fl" 'BEGIN { if (f - z <= 0) print "n/a"; else printf "%.2f\n", (p - z) / (f - z) }')"

bench_say "Transfers with a fee leg against transfers without (8 clients, 100,000 accounts, hot fee account)"
SECS=${SECS:-10}
TENANT=00000000-0000-4000-8000-00000000b001
bench_psql -d "$DB" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE FUNCTION public.acct(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
SELECT fincore.create_tenant('bench transfers', '00000000-0000-4000-8000-00000000b001');
BEGIN;
SELECT fincore.set_tenant('00000000-0000-4000-8000-00000000b001');
SELECT count(fincore.create_account('USD', id => public.acct(g))) FROM generate_series(1, 100000) g;
SELECT fincore.create_account('USD', id => public.acct(0), flags => '{hot}');
SELECT fincore.define_fee_schedule('card', 'USD', '{"components": [{"type": "percentage", "rate": "0.029"},
                                                                   {"type": "flat", "amount": 30}]}', '2000-01-01');
SELECT fincore.set_ledger_events(false);   -- the engine's cost, not the outbox's
COMMIT;
VACUUM ANALYZE;
SQL
pick='\set d random(1, 100000)
\set c random(1, 100000)
\if :d = :c
\set c (:c % 100000) + 1
\endif'
printf '%s\nSELECT 1 FROM fincore.transfer(public.acct(:d), public.acct(:c), 1000);\n' "$pick" >"$BENCH_TMP/nofee.sql"
printf '%s\nSELECT 1 FROM fincore.transfer(public.acct(:d), public.acct(:c), 1000, fee_schedule => '"'card'"', fee_account => public.acct(0));\n' "$pick" >"$BENCH_TMP/fee.sql"
declare -A tps=()
for round in $(seq "$ROUNDS"); do
    for variant in $(printf '%s\n' nofee fee | shuf); do
        v=$(PGOPTIONS="$PGOPTIONS -c fincore.tenant=$TENANT" bench_tps "$DB" "$BENCH_TMP/$variant.sql" 8 "$SECS" -M prepared)
        tps[$variant]+="$v "
        printf '  round %s %-6s %10s transfers/s\n' "$round" "$variant" "$v"
    done
done
# shellcheck disable=SC2086
nofee=$(bench_median ${tps[nofee]}); fee=$(bench_median ${tps[fee]})
printf '\ntransfers/s without a fee %.1f, with a fee leg to a hot account %.1f: ratio %s (target >= 0.7)\n' \
    "$nofee" "$fee" "$(bench_ratio "$fee" "$nofee")"
bench_psql -d "$DB" -At -c "SELECT 'verify() after the run: ' || count(*) || ' broken invariants' FROM fincore.verify()"
