#!/usr/bin/env bash
# test/bench/outbox: what the outbox costs writers, how fast it delivers, and what it leaves behind.
#
# 1. Emit throughput: 8 clients, one event per autocommit transaction, fincore.emit() against a
#    plain single-row INSERT into a hand-rolled outbox table (bigint identity key, same columns).
#    Target (issue 6): fincore >= 0.8x the plain INSERT.
# 2. Consumer throughput on the same 200,000 events, inserted in 200 transactions of 1,000:
#    fincore poll(consumer, 1000) + ack against PgQ (postgresql-15-pgq3) insert_event +
#    next_batch / get_batch_events / finish_batch with a tick after every 1,000 events; one
#    client each, rows fetched to the client (consume.py).  Target: fincore >= 0.5x PgQ (issue 6),
#    >= 1.0x (issue 23).  And fincore_p2: one consumer of two partitions (subscribe(...,
#    partitions => 2)) read by two workers at once, the same events; and fincore_text: the one
#    consumer again, its client loading the event ids as text instead of making a Python
#    uuid.UUID of each (PgQ's ids are bigints, cheap to load), which is what Node's pg does.
# 3. Dead tuples left in fincore's event storage (outbox_events_*) after all of it.  Target: 0.
# Medians of ROUNDS rounds, interleaved, alternating which variant runs first.  Benchmarks never fail on speed.
#
#   ROUNDS=3 SECS=10 EVENTS=200000 ./scripts/bench outbox
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
EVENTS=${EVENTS:-200000}
CLIENTS=8
DB=fincore_bench_outbox
TENANT=0e0e0e0e-0000-4000-8000-000000000001
dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
(( EVENTS % 1000 == 0 )) || { echo "EVENTS must be a multiple of 1000" >&2; exit 1; }

bench_say "Setting up $DB"
bench_db "$DB"
bench_psql -d "$DB" -c "CREATE EXTENSION pgq" >/dev/null ||
    { echo "PgQ is missing: apt-get install postgresql-15-pgq3" >&2; exit 1; }
bench_psql -d "$DB" >/dev/null <<SQL
SELECT fincore.create_tenant('bench', '$TENANT');
CREATE TABLE public.plain_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, topic text NOT NULL,
    type text NOT NULL, aggregatetype text NOT NULL, aggregateid text NOT NULL, payload jsonb NOT NULL,
    headers jsonb, created_at timestamptz NOT NULL DEFAULT now());
SQL

# The tenant comes from the session's JWT claims, as a backend service's pooled connection has it.
export PGOPTIONS="-c request.jwt.claims={\"tenant_id\":\"$TENANT\"}"
cat >"$BENCH_TMP/emit.sql" <<'SQL'
\set a random(1, 1000000)
SELECT fincore.emit('bench', 'thing.happened', 'thing', 'agg-' || :a, '{"amount": "12.00 USD", "n": 1}');
SQL
cat >"$BENCH_TMP/plain.sql" <<SQL
\set a random(1, 1000000)
INSERT INTO public.plain_outbox (tenant_id, topic, type, aggregatetype, aggregateid, payload)
VALUES ('$TENANT', 'bench', 'thing.happened', 'thing', 'agg-' || :a, '{"amount": "12.00 USD", "n": 1}');
SQL

declare -A tps=()
for round in $(seq "$ROUNDS"); do
    bench_say "Emit, round $round of $ROUNDS ($CLIENTS clients, ${SECS}s each)"
    order="plain emit"; (( round % 2 == 0 )) && order="emit plain"    # neither always runs first
    for variant in $order; do
        v=$(bench_tps "$DB" "$BENCH_TMP/$variant.sql" "$CLIENTS" "$SECS")
        tps[$variant]+="$v "
        printf '  %-6s %10s tps\n' "$variant" "$v"
    done
done
unset PGOPTIONS

bench_say "Consumers: $EVENTS events for fincore and for PgQ, in transactions of 1,000"
bench_psql -d "$DB" >/dev/null <<SQL
SELECT pgq.create_queue('bench');
SELECT pgq.register_consumer('bench', 'pgq_' || r) FROM generate_series(1, $ROUNDS) r;
SELECT fincore.subscribe('fincore_' || r, '{bench.consume}') FROM generate_series(1, $ROUNDS) r;
SELECT fincore.subscribe('fincore_p2_' || r, '{bench.consume}', partitions => 2) FROM generate_series(1, $ROUNDS) r;
SELECT fincore.subscribe('fincore_text_' || r, '{bench.consume}') FROM generate_series(1, $ROUNDS) r;
SQL
for _ in $(seq $((EVENTS / 1000))); do
    printf '%s\n' \
        "BEGIN;" \
        "SELECT fincore.set_tenant('$TENANT');" \
        "SELECT count(fincore.emit('bench.consume', 'thing.happened', 'thing', 'agg-' || g, ('{\"amount\": \"12.00 USD\", \"n\": ' || g || '}')::jsonb)) FROM generate_series(1, 1000) g;" \
        "COMMIT;" \
        "SELECT count(pgq.insert_event('bench', 'thing.happened', '{\"amount\": \"12.00 USD\", \"n\": ' || g || '}')) FROM generate_series(1, 1000) g;" \
        "SELECT pgq.ticker('bench');"
done | bench_psql -d "$DB" >/dev/null
bench_psql -d "$DB" -c "SELECT pgq.ticker('bench')" >/dev/null

declare -A eps=()
for round in $(seq "$ROUNDS"); do
    bench_say "Consume, round $round of $ROUNDS"
    order="pgq fincore fincore_text fincore_p2"; (( round % 2 == 0 )) && order="fincore_p2 fincore_text fincore pgq"
    for variant in $order; do
        v=$(PGDATABASE=$DB /usr/bin/python3 "$dir/consume.py" "$variant" "${variant}_$round" "$EVENTS")
        eps[$variant]+="$v "
        printf '  %-8s %10s events/s\n' "$variant" "$v"
    done
done

sleep 2     # statistics of finished sessions reach the cumulative views
dead=$(bench_psql -d "$DB" -At -c "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables
                                    WHERE schemaname = 'fincore' AND relname LIKE 'outbox\_events\__'")
live=$(bench_psql -d "$DB" -At -c "SELECT coalesce(sum(n_live_tup), 0) FROM pg_stat_user_tables
                                    WHERE schemaname = 'fincore' AND relname LIKE 'outbox\_events\__'")
pgq_dead=$(bench_psql -d "$DB" -At -c "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE schemaname = 'pgq'")

# shellcheck disable=SC2086
{ plain=$(bench_median ${tps[plain]}); emit=$(bench_median ${tps[emit]});
  pgq=$(bench_median ${eps[pgq]}); fc=$(bench_median ${eps[fincore]}); fc2=$(bench_median ${eps[fincore_p2]});
  fct=$(bench_median ${eps[fincore_text]}); }
bench_say "Results: medians of $ROUNDS rounds"
printf '%-44s %12s\n' "plain INSERT, $CLIENTS clients (tps)" "$plain"
printf '%-44s %12s\n' "fincore.emit, $CLIENTS clients (tps)" "$emit"
printf '%-44s %12s\n' "PgQ consumer (events/s)" "$pgq"
printf '%-44s %12s\n' "fincore consumer (events/s)" "$fc"
printf '%-44s %12s\n' "fincore consumer, ids as text (events/s)" "$fct"
printf '%-44s %12s\n' "fincore consumer, 2 partitions (events/s)" "$fc2"
printf '%-44s %12s\n' "dead tuples in fincore.outbox_events_*" "$dead"
printf '%-44s %12s\n' "live events in fincore.outbox_events_*" "$live"
printf '%-44s %12s\n' "dead tuples in PgQ's tables (for reference)" "$pgq_dead"
printf '\nemit / plain INSERT = %s (target >= 0.8); fincore consumer / PgQ = %s (target >= 1.0), ids as text %s; 2 partitions / PgQ = %s; dead tuples = %s (target 0)\n' \
    "$(bench_ratio "$emit" "$plain")" "$(bench_ratio "$fc" "$pgq")" "$(bench_ratio "$fct" "$pgq")" "$(bench_ratio "$fc2" "$pgq")" "$dead"
