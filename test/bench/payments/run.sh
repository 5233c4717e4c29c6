#!/usr/bin/env bash
# test/bench/payments: payments authorized and captured (the worker's outcomes reported
# directly: create_payment(confirm), payment_step_result, capture_payment, payment_step_result)
# against a pending transfer and its post, in one run (issue 18's goal: >= 0.6x).
#
#   hold_post   SELECT hold_and_post(payer): fincore.transfer(pending) + fincore.post_pending
#   payment     SELECT authorize_and_capture(payer): the payment's four calls, which write the same
#               hold and post plus the payment's row, two steps, two jobs and five events
# and the same as a client makes them, one transaction per call (as an app and its worker do):
#   hold_post_calls   the hold, then its post: 2 transactions
#   payment_calls     create_payment(confirm), payment_step_result, capture_payment,
#                     payment_step_result: 4 transactions
# 8 clients, a random payer of 10,000 each time, one hot settlement account, ledger events off,
# variants interleaved in random order over ROUNDS rounds; medians.
#
#   ROUNDS=5 SECS=10 ./scripts/bench payments
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-8}
DB=fincore_bench_payments
dir=$(dirname -- "${BASH_SOURCE[0]}")

bench_say "Setting up $DB (10,000 payers, one settlement account)"
bench_db "$DB"
bench_psql -d "$DB" -f "$dir/setup.sql" >/dev/null

printf '\\set payer random(1, 10000)\nSELECT public.hold_and_post(:payer);\n' >"$BENCH_TMP/hold_post.sql"
printf '\\set payer random(1, 10000)\nSELECT public.authorize_and_capture(:payer);\n' >"$BENCH_TMP/payment.sql"
cat >"$BENCH_TMP/hold_post_calls.sql" <<'SQL'
\set payer random(1, 10000)
SELECT (fincore.transfer(public.acct(:payer), public.acct(0), 100, pending => true)).id AS hold \gset
SELECT 1 FROM fincore.post_pending(:hold::uuid);
SQL
cat >"$BENCH_TMP/payment_calls.sql" <<'SQL'
\set payer random(1, 10000)
SELECT (fincore.create_payment(100, 'USD', 'bench', public.acct(:payer), capture_method => 'manual', confirm => true)).id AS pid \gset
SELECT 1 FROM fincore.payment_step_result(:pid::uuid, 1, 'succeeded');
SELECT (fincore.capture_payment(:pid::uuid)).step_no AS step \gset
SELECT 1 FROM fincore.payment_step_result(:pid::uuid, :step, 'succeeded');
SQL

declare -A tps=()
for round in $(seq "$ROUNDS"); do
    for variant in $(printf '%s\n' hold_post payment hold_post_calls payment_calls | shuf); do
        v=$(PGOPTIONS="$PGOPTIONS -c fincore.tenant=00000000-0000-4000-8000-00000000b001" \
            bench_tps "$DB" "$BENCH_TMP/$variant.sql" "$CLIENTS" "$SECS" -M prepared)
        tps[$variant]+="$v "
        printf '  round %s %-16s %10s round trips/s\n' "$round" "$variant" "$v"
    done
done

bench_say "Results: medians of $ROUNDS rounds, $CLIENTS clients, $SECS s each"
# shellcheck disable=SC2086
base=$(bench_median ${tps[hold_post]}); pay=$(bench_median ${tps[payment]})
# shellcheck disable=SC2086
base_calls=$(bench_median ${tps[hold_post_calls]}); pay_calls=$(bench_median ${tps[payment_calls]})
printf '%-16s %16s %8s\n' variant "round trips/s" ratio
printf '%-16s %16.1f %8s\n' hold_post "$base" 1.00
printf '%-16s %16.1f %8s  (goal >= 0.6)\n' payment "$pay" "$(bench_ratio "$pay" "$base")"
printf '%-16s %16.1f %8s\n' hold_post_calls "$base_calls" 1.00
printf '%-16s %16.1f %8s  (goal >= 0.6)\n' payment_calls "$pay_calls" "$(bench_ratio "$pay_calls" "$base_calls")"
# The settlement account's deltas folded into its row first, as maintenance would have done
# (verify() reads a hot account's balance as its row plus every delta not yet rolled up).
bench_psql -d "$DB" -At -c "SELECT 'hot accounts rolled up: ' || fincore.rollup_hot_accounts(1000000)" \
    -c "SELECT 'payments after the run: ' || count(*) || ', not succeeded: ' || count(*) FILTER (WHERE status <> 'succeeded') FROM fincore.payments" \
    -c "SELECT 'verify() after the run: ' || count(*) || ' broken invariants' FROM fincore.verify()"
