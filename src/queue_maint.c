/*
 * queue_maint.c — maintenance and insight: rescuing jobs whose lease expired, statistics.
 */
#include "queue_int.h"
#include "wakeup.h"

#include "funcapi.h"
#include "miscadmin.h"

/* ---- rescue of expired leases ---- */

static void
rescue_work(QueueCall *call)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1];
	char		nulls[1] = {' '};
	TimestampTz started = GetCurrentTimestamp();

	fincore_spi_connect();
	values[0] = scope_datum(&call->scope, &nulls[0]);
	queue_plan(&plan,
			   "WITH c AS (SELECT j.id FROM fincore.jobs j"
			   "            WHERE j.state OPERATOR(pg_catalog.=) 'running' AND j.lease_until OPERATOR(pg_catalog.<) pg_catalog.now()"
			   "              AND ($1::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $1)"
			   "            LIMIT " CppAsString2(RESCUE_BATCH) " FOR NO KEY UPDATE SKIP LOCKED) "
			   "UPDATE fincore.jobs j SET"
			   "  state = CASE WHEN j.attempts OPERATOR(pg_catalog.>=) j.max_attempts THEN 'dead' ELSE 'ready' END,"
			   "  errors = coalesce(j.errors, '[]') OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object("
			   "    'attempt', j.attempts, 'error', 'lease expired', 'expired', true, 'at', j.lease_until, 'worker', j.worker)),"
			   "  lease_until = NULL "
			   "FROM c WHERE j.id OPERATOR(pg_catalog.=) c.id RETURNING j.id, j.state OPERATOR(pg_catalog.=) 'dead'",
			   1, types);
	for (;;)
	{
		Datum	   *dead;
		int			ndead = 0;
		uint64		n;

		queue_exec(plan, values, nulls, 0, SPI_OK_UPDATE_RETURNING);
		n = SPI_processed;
		dead = palloc(sizeof(Datum) * Max(n, 1));
		for (uint64 i = 0; i < n; i++)
			if (spi_bool(i, 2))
				dead[ndead++] = Int64GetDatum(spi_int64(i, 1));
		if (ndead > 0)
			bury_jobs(construct_array(dead, ndead, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		call->out_count += n;
		if (n < RESCUE_BATCH || GetCurrentTimestamp() - started >= call->budget_us)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	/* Due scheduled jobs of queues nobody dequeues from are promoted here. */
	while (GetCurrentTimestamp() - started < call->budget_us)
	{
		uint64		n = promote_due(NULL, GetCurrentTransactionStartTimestamp());

		call->out_count += n;
		if (n < RESCUE_BATCH)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_rescue_expired);
Datum
fincore_rescue_expired(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	call.budget_us = positive_interval_arg(fcinfo, 0, "budget", USECS_PER_DAY * 365);
	queue_scope(&call.scope);
	queue_run(rescue_work, &call);
	if (call.out_count > 0)
		wakeup_all_at_commit();	/* jobs of any queue may be ready again */
	PG_RETURN_INT64(call.out_count);
}

/* ---- statistics ---- */

static void
stats_work(QueueCall *call)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {UUIDOID, INTERVALOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};

	fincore_spi_connect();
	values[0] = scope_datum(&call->scope, &nulls[0]);
	values[1] = IntervalPGetDatum(&call->extend);
	queue_plan(&plan,
			   "WITH hot AS ("
			   "  SELECT j.queue,"
			   "         pg_catalog.count(*) FILTER (WHERE j.state OPERATOR(pg_catalog.=) 'ready' AND j.run_at OPERATOR(pg_catalog.<=) pg_catalog.now()) AS ready,"
			   "         pg_catalog.count(*) FILTER (WHERE j.state OPERATOR(pg_catalog.=) 'ready' AND j.run_at OPERATOR(pg_catalog.>) pg_catalog.now()) AS scheduled,"
			   "         pg_catalog.count(*) FILTER (WHERE j.state OPERATOR(pg_catalog.=) 'running') AS running,"
			   "         pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(j.run_at) FILTER (WHERE j.state OPERATOR(pg_catalog.=) 'ready' AND j.run_at OPERATOR(pg_catalog.<=) pg_catalog.now()) AS oldest"
			   "    FROM fincore.jobs j WHERE ($1::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $1) GROUP BY j.queue),"
			   " dead AS ("
			   "  SELECT a.queue, pg_catalog.count(*) AS dead FROM fincore.job_archive_dead a"
			   "   WHERE ($1::pg_catalog.uuid IS NULL OR a.tenant_id OPERATOR(pg_catalog.=) $1) GROUP BY a.queue),"
			   " done AS ("
			   "  SELECT a.queue, pg_catalog.count(*) AS completed FROM fincore.job_archive a"
			   "   WHERE a.state OPERATOR(pg_catalog.=) 'completed' AND a.finished_at OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) $2)"
			   "     AND ($1::pg_catalog.uuid IS NULL OR a.tenant_id OPERATOR(pg_catalog.=) $1) GROUP BY a.queue),"
			   " failed AS ("
			   "  SELECT x.queue, pg_catalog.count(*) AS failed"
			   "    FROM (SELECT j.queue, j.errors FROM fincore.jobs j"
			   "           WHERE j.errors IS NOT NULL AND ($1::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $1)"
			   "          UNION ALL"
			   "          SELECT a.queue, a.errors FROM fincore.job_archive a"
			   "           WHERE a.errors IS NOT NULL AND a.finished_at OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) $2)"
			   "             AND ($1::pg_catalog.uuid IS NULL OR a.tenant_id OPERATOR(pg_catalog.=) $1)) x,"
			   "         pg_catalog.jsonb_array_elements(x.errors) e"
			   "   WHERE e OPERATOR(pg_catalog.?) 'error' AND (e OPERATOR(pg_catalog.->>) 'at')::pg_catalog.timestamptz OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) $2)"
			   "   GROUP BY x.queue),"
			   " paused AS ("
			   "  SELECT DISTINCT p.queue FROM fincore.paused_queues p"
			   "   WHERE p.tenant_id OPERATOR(pg_catalog.=) '00000000-0000-0000-0000-000000000000' OR p.tenant_id OPERATOR(pg_catalog.=) $1),"
			   " q AS (SELECT queue FROM hot UNION SELECT queue FROM dead UNION SELECT queue FROM done"
			   "       UNION SELECT queue FROM failed UNION SELECT queue FROM paused) "
			   "SELECT q.queue, coalesce(h.ready, 0), coalesce(h.scheduled, 0), coalesce(h.running, 0),"
			   "       coalesce(d.dead, 0), h.oldest, coalesce(c.completed, 0), coalesce(f.failed, 0),"
			   "       p.queue IS NOT NULL"
			   "  FROM q LEFT JOIN hot h ON h.queue OPERATOR(pg_catalog.=) q.queue"
			   "  LEFT JOIN dead d ON d.queue OPERATOR(pg_catalog.=) q.queue"
			   "  LEFT JOIN done c ON c.queue OPERATOR(pg_catalog.=) q.queue"
			   "  LEFT JOIN failed f ON f.queue OPERATOR(pg_catalog.=) q.queue"
			   "  LEFT JOIN paused p ON p.queue OPERATOR(pg_catalog.=) q.queue"
			   " ORDER BY q.queue",
			   2, types);
	queue_exec(plan, values, nulls, 0, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		v[9];
		bool		n[9];

		for (int c = 0; c < 9; c++)
			v[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &n[c]);
		tuplestore_putvalues(call->rsinfo->setResult, call->rsinfo->setDesc, v, n);
	}
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_queue_stats);
Datum
fincore_queue_stats(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	(void) positive_interval_arg(fcinfo, 0, "since", USECS_PER_DAY * 366);
	call.extend = *PG_GETARG_INTERVAL_P(0);
	queue_scope(&call.scope);
	InitMaterializedSRF(fcinfo, 0);
	call.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	queue_run(stats_work, &call);
	return (Datum) 0;
}
