#!/usr/bin/env bash
# test/bench/recon: reconciliation end to end (issue 21's goals), in one run.
#
#   A bank account with N ledger entries and a CSV statement of N lines (95% exact, 3% within
#   the tolerance or the date window, 1% splits, 1% unmatched: setup.sql), under three rules
#   (exact, near, split).  Each round imports the statement (fincore.recon_import) and
#   reconciles it (fincore.recon_run), two transactions in one backend; then the same exact-key match is run as a
#   plain SQL join writing its pairs, the baseline.  Printed: the time of each phase (import, the
#   load, each rule, writing the matches), the end-to-end time, the run's memory and the
#   backend's peak RSS, and the matches against the ground truth.
#   Goal: 1M x 1M import + run <= 30 s; with --long, 10M x 10M run <= 60 s after an import of
#   <= 2 minutes.  Medians of ROUNDS rounds.
#
#   ROUNDS=3 ./scripts/bench recon            N=1,000,000
#   ./scripts/bench recon --long              N=10,000,000, one round
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
if [[ ${1:-} == --long ]]; then
    N=10000000
    ROUNDS=1
fi
DB=fincore_bench_recon
dir=$(dirname -- "${BASH_SOURCE[0]}")

bench_say "Setting up $DB: $N ledger entries and a statement of $N lines"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null
start=$SECONDS
bench_psql -d "$DB" -c "CALL public.make_ledger($N)" -c "SELECT public.make_statement($N)" \
    -c "VACUUM ANALYZE fincore.transfers" -c "CHECKPOINT" >/dev/null
echo "  set up in $((SECONDS - start)) s"

declare -a totals=() imports=() runs=() loads=() writes=() joins=() rss=() mem=()
declare -a w_order=() w_matches=() w_lines=() w_entries=()
declare -A rule_ms=()
for round in $(seq "$ROUNDS"); do
    bench_psql -d "$DB" -c "CALL public.reset()" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
    # One session: the round, then the backend's peak resident memory (VmHWM) from /proc.
    out=$(bench_psql -d "$DB" -At <<SQL
SELECT pg_backend_pid() \g $BENCH_TMP/pid
SELECT public.import_statement();
SELECT public.reconcile($([[ $round == 1 ]] && echo true || echo false));
\! awk '/VmHWM/ { print "rss_kb", \$2 }' /proc/\$(cat $BENCH_TMP/pid)/status
SQL
)
    json=$(grep '^{' <<<"$out" | python3 -c 'import json, sys; d = {}; [d.update(json.loads(l)) for l in sys.stdin]; print(json.dumps(d))')
    kb=$(awk '/^rss_kb/ { print $2 }' <<<"$out")
    read -r imp run load write memb wo wm wl we < <(python3 -c 'import json, sys; d = json.load(sys.stdin); r = d["report"]; w = r["write_split_ms"]; print(d["import_ms"], d["run_ms"], r["load_ms"], r["write_ms"], r["memory_bytes"], w["ordering"], w["matches"], w["lines"], w["entries"])' <<<"$json")
    imports+=("$imp"); runs+=("$run"); loads+=("$load"); writes+=("$write"); mem+=("$memb"); rss+=("$kb")
    w_order+=("$wo"); w_matches+=("$wm"); w_lines+=("$wl"); w_entries+=("$we")
    totals+=("$((imp + run))")
    while read -r name ms; do rule_ms[$name]+="$ms "; done < <(python3 -c 'import json, sys; [print(x["rule"], x["ms"]) for x in json.load(sys.stdin)["report"]["rules"]]' <<<"$json")
    j=$(bench_psql -d "$DB" -At -c "\\timing on" -c "SELECT public.plain_join()" | awk '/^Time:/ { print $2 }')
    joins+=("$(printf '%.0f' "$j")")
    printf '  round %s  import %6s ms  run %6s ms  (load %s, write %s)  end to end %6s ms   plain join %6s ms\n' \
        "$round" "$imp" "$run" "$load" "$write" "${totals[-1]}" "${joins[-1]}"
    if [[ $round == 1 ]]; then
        bench_say "Matches against the ground truth (round 1)"
        bench_psql -d "$DB" -c "
            SELECT m.rule, count(DISTINCT m.id) AS matches,
                   count(*) FILTER (WHERE l.reference LIKE 'R%' AND (substr(l.reference, 2)::bigint % 100) < 95) AS exact_lines,
                   count(*) FILTER (WHERE l.reference LIKE 'R%' AND (substr(l.reference, 2)::bigint % 100) BETWEEN 95 AND 97) AS drift_lines,
                   count(*) FILTER (WHERE l.reference LIKE 'S%') AS split_lines,
                   count(*) FILTER (WHERE l.reference LIKE 'U%') AS unmatched_lines
              FROM fincore.recon_matches m JOIN fincore.recon_matched_lines ml ON ml.match_id = m.id
              JOIN fincore.recon_lines l ON l.id = ml.line_id
             GROUP BY m.rule ORDER BY m.rule" \
            -c "SELECT (SELECT count(*) FROM fincore.recon_lines) AS lines,
                       (SELECT count(*) FROM fincore.recon_matched_lines) AS lines_matched,
                       (SELECT count(*) FROM fincore.recon_matched_entries) AS entries_matched,
                       (SELECT count(*) FROM (SELECT line_id FROM fincore.recon_matched_lines GROUP BY 1 HAVING count(*) > 1) d) AS lines_in_two_matches,
                       (SELECT count(*) FROM (SELECT transfer_id FROM fincore.recon_matched_entries GROUP BY 1 HAVING count(*) > 1) d) AS entries_in_two_matches,
                       (SELECT count(*) FROM public.join_pairs) AS plain_join_pairs"
        printf '\n'
    fi
done

bench_say "Results: N = $N, medians of $ROUNDS rounds, one backend"
imp=$(bench_median "${imports[@]}"); run=$(bench_median "${runs[@]}"); total=$(bench_median "${totals[@]}")
join=$(bench_median "${joins[@]}")
printf '%-52s %10s\n' phase ms
printf '%-52s %10s\n' "import (parse, hash, store $N lines)" "$imp"
printf '%-52s %10s\n' "run: load the unmatched lines and entries" "$(bench_median "${loads[@]}")"
for name in exact near split; do
    # shellcheck disable=SC2086
    printf '%-52s %10s\n' "run: rule $name" "$(bench_median ${rule_ms[$name]})"
done
printf '%-52s %10s\n' "run: write the matches" "$(bench_median "${writes[@]}")"
printf '%-52s %10s\n' "  ordering them and their members" "$(bench_median "${w_order[@]}")"
printf '%-52s %10s\n' "  the match rows" "$(bench_median "${w_matches[@]}")"
printf '%-52s %10s\n' "  the matched lines" "$(bench_median "${w_lines[@]}")"
printf '%-52s %10s\n' "  the matched entries" "$(bench_median "${w_entries[@]}")"
printf '%-52s %10s\n' "run, in all (with the run's record and events)" "$run"
printf '%-52s %10s  (goal <= %s)\n' "import + run, end to end" "$total" "$([[ $N -ge 10000000 ]] && echo '120000 + 60000' || echo 30000)"
printf '%-52s %10s  ratio run / join %s\n' "baseline: the exact-key match as a plain SQL join" "$join" "$(bench_ratio "$run" "$join")"
printf '%-52s %10s MB\n' "the run's matching memory" "$(awk -v b="$(bench_median "${mem[@]}")" 'BEGIN { printf "%.0f", b / 1048576 }')"
printf '%-52s %10s MB\n' "the backend's peak resident memory (VmHWM)" "$(awk -v k="$(bench_median "${rss[@]}")" 'BEGIN { printf "%.0f", k / 1024 }')"
