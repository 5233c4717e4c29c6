#!/usr/bin/env bash
# test/bench/audit: the audit trail's cost and speed (issue 20's goals), in one run.
#
#   transfers   CLIENTS pgbench sessions post single transfers (a transaction each) for SECS
#               seconds: with fincore.transfers not audited (off, the baseline), audited (on: each
#               transfer appends its record), and audited with a session sealing the chain all
#               along (on + sealer: the whole cost).  Goal: on >= 0.85x off.
#   batches     the same sessions post batches of 100 with fincore.create_transfers, not audited
#               and audited: a batch appends its records in one statement.
#               Rounds interleave the five in random order; medians of ROUNDS rounds.
#   verify      fincore.audit_verify over a chain of at least VERIFY_RECORDS records, in one
#               backend, against reading the same rows (the sum of their hashes' lengths by the
#               same index).  Records per second; goal >= 1,000,000.
#   bytes       the log's size (heap, TOAST and indexes) per record.
#
#   ROUNDS=5 SECS=10 ./scripts/bench audit
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-2}
VERIFY_RECORDS=${VERIFY_RECORDS:-1000000}
DB=fincore_bench_audit
TENANT=00000000-0000-4000-8000-00000000a0d1
dir=$(dirname -- "${BASH_SOURCE[0]}")

bench_say "Setting up $DB (1,000 accounts)"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null

declare -A rate=()
for round in $(seq "$ROUNDS"); do
    for variant in $(printf '%s\n' off on on+sealer batch-off batch-on | shuf); do
        if [[ $variant == off || $variant == batch-off ]]; then
            bench_psql -d "$DB" -c "SELECT fincore.audit_disable('fincore.transfers')" >/dev/null
        else
            bench_psql -d "$DB" -c "SELECT fincore.audit_enable('fincore.transfers')" >/dev/null
        fi
        bench_psql -d "$DB" -c "CALL public.seal_all()" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
        sealer=
        if [[ $variant == on+sealer ]]; then
            ( end=$((SECONDS + SECS)); while ((SECONDS < end)); do
                  bench_psql -d "$DB" -c "SELECT fincore.audit_seal('$TENANT', 20000)" >/dev/null; sleep 0.2
              done ) &
            sealer=$!
        fi
        if [[ $variant == batch-* ]]; then
            tps=$(bench_tps "$DB" "$dir/batch.sql" "$CLIENTS" "$SECS")
            tps=$(awk -v t="$tps" 'BEGIN { printf "%.1f\n", t * 100 }')
        else
            tps=$(bench_tps "$DB" "$dir/transfer.sql" "$CLIENTS" "$SECS")
        fi
        [[ -z $sealer ]] || wait "$sealer"
        rate[$variant]+="$tps "
        printf '  round %s %-10s %10.1f transfers/s\n' "$round" "$variant" "$tps"
    done
done
bench_psql -d "$DB" -c "SELECT fincore.audit_enable('fincore.transfers')" -c "CALL public.seal_all()" >/dev/null

have=$(bench_psql -d "$DB" -At -c "SELECT seq FROM fincore.audit_heads WHERE tenant_id = '$TENANT'")
if ((have < VERIFY_RECORDS)); then
    bench_say "Posting $((VERIFY_RECORDS - have)) more transfers in batches of 1,000 for the verification"
    bench_psql -d "$DB" -c "CALL public.bulk_transfers($((VERIFY_RECORDS - have + 999)))" -c "CALL public.seal_all()" \
        -c "VACUUM ANALYZE fincore.audit_log" >/dev/null
fi

# The load's dirty pages written out first, and the log read once: the rounds then measure the
# verification, not a checkpoint running beside it or the first read from disk.
bench_psql -d "$DB" -c "VACUUM ANALYZE fincore.audit_log" -c "CHECKPOINT" \
    -c "SELECT count(*) FROM fincore.audit_log WHERE tenant_id = '$TENANT'" >/dev/null

bench_say "audit_verify over the tenant's chain, one backend"
declare -a verifies=() reads=()
for round in $(seq "$ROUNDS"); do
    out=$(bench_psql -d "$DB" -At -F ' ' -c "\\timing on" -c "SELECT ok, checked FROM fincore.audit_verify('$TENANT')")
    ok=$(awk 'NR == 1 { print $1 }' <<<"$out"); n=$(awk 'NR == 1 { print $2 }' <<<"$out")
    ms=$(awk '/^Time:/ { print $2 }' <<<"$out")
    [[ $ok == t ]] || { echo "audit_verify failed: $out" >&2; exit 1; }
    r=$(bench_psql -d "$DB" -At -c "SET enable_seqscan = off" -c "SET enable_bitmapscan = off" -c "\\timing on" \
        -c "SELECT sum(length(hash)) FROM fincore.audit_log WHERE tenant_id = '$TENANT' AND seq >= 1" |
        awk '/^Time:/ { print $2 }')
    verifies+=("$(awk -v n="$n" -v ms="$ms" 'BEGIN { printf "%.0f\n", n / (ms / 1000) }')")
    reads+=("$(awk -v n="$n" -v ms="$r" 'BEGIN { printf "%.0f\n", n / (ms / 1000) }')")
    printf '  round %s verify %10s records/s   the same rows read %10s /s   (%s records)\n' \
        "$round" "${verifies[-1]}" "${reads[-1]}" "$n"
done

bench_say "Results: medians of $ROUNDS rounds, $CLIENTS clients, ${SECS}s each"
# shellcheck disable=SC2086
off=$(bench_median ${rate[off]}); on=$(bench_median ${rate[on]}); sealed=$(bench_median ${rate[on+sealer]})
printf '%-40s %14s %8s\n' variant "per second" ratio
printf '%-40s %14.1f %8s\n' "transfers, not audited" "$off" 1.00
printf '%-40s %14.1f %8s  (goal >= 0.85)\n' "transfers, audited" "$on" "$(bench_ratio "$on" "$off")"
printf '%-40s %14.1f %8s\n' "transfers, audited, sealer running" "$sealed" "$(bench_ratio "$sealed" "$off")"
# shellcheck disable=SC2086
boff=$(bench_median ${rate[batch-off]}); bon=$(bench_median ${rate[batch-on]})
printf '%-40s %14.1f %8s\n' "batches of 100, not audited" "$boff" 1.00
printf '%-40s %14.1f %8s  (goal >= 0.85)\n' "batches of 100, audited" "$bon" "$(bench_ratio "$bon" "$boff")"
v=$(bench_median "${verifies[@]}"); rd=$(bench_median "${reads[@]}")
printf '%-40s %14.0f %8s\n' "the log's rows read by its index" "$rd" 1.00
printf '%-40s %14.0f %8s  (goal >= 1,000,000 records/s)\n' "audit_verify (records)" "$v" "$(bench_ratio "$v" "$rd")"
bench_psql -d "$DB" -At \
    -c "SELECT 'bytes per audit record: ' || round(pg_total_relation_size('fincore.audit_log')::numeric / count(*)) || ' (heap ' || round(pg_relation_size('fincore.audit_log')::numeric / count(*)) || ', payload text ' || round(avg(octet_length(payload::text))) || ')' FROM fincore.audit_log" \
    -c "SELECT 'records pending after the run: ' || count(*) FROM fincore.audit_pending" \
    -c "SELECT 'verify() after the run: ' || count(*) || ' broken invariants' FROM fincore.verify()"
