/*
 * queue_jobs.c — what a worker or an operator does to a job: complete (one or a batch),
 * fail with backoff, heartbeat, cancel, retry.
 */
#include "queue_int.h"
#include "wakeup.h"

#include "common/pg_prng.h"
#include "utils/builtins.h"

/* ---- complete ---- */

#define COMPLETE_SQL \
	"WITH d AS (DELETE FROM fincore.jobs j" \
	"  WHERE j.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2) AND " LEASE_HELD("$3") \
	"  RETURNING j.*) " \
	"INSERT INTO fincore.job_archive_%d (id, tenant_id, queue, state, priority, run_at, attempts, " \
	"  max_attempts, worker, payload, unique_key, errors, result, created_at, finished_at, slot) " \
	ARCHIVE_FROM_D("'completed'", "$4", "$5")

static void
complete_work(QueueCall *call)
{
	static SPIPlanPtr complete_plans[ARCHIVE_SLOTS];
	Oid			types[5] = {INT8OID, UUIDOID, INT4OID, JSONBOID, INT2OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	fincore_spi_connect();
	values[0] = Int64GetDatum(call->job_id);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	values[2] = Int32GetDatum(call->attempt);
	if (call->attempt == 0)
		nulls[2] = 'n';
	values[3] = call->result;
	if (call->result_null)
		nulls[3] = 'n';
	values[4] = Int16GetDatum(archive_slot(GetCurrentTransactionStartTimestamp()));
	queue_exec(slot_plan(complete_plans, values[4], COMPLETE_SQL, 5, types), values, nulls, 0, SPI_OK_INSERT);
	if (SPI_processed == 0)
		job_refused(call, "complete");
	SPI_finish();
}

/* Complete call->job_id (call->attempt, call->result, call->scope set). */
void
complete_job(QueueCall *call)
{
	queue_run(complete_work, call);
}

PG_FUNCTION_INFO_V1(fincore_complete);
Datum
fincore_complete(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	call.job_id = job_id_arg(fcinfo, 0);
	call.result_null = PG_ARGISNULL(1);
	call.result = call.result_null ? (Datum) 0 : PG_GETARG_DATUM(1);
	call.attempt = attempt_arg(fcinfo, 2);
	queue_scope(&call.scope);
	complete_job(&call);
	PG_RETURN_VOID();
}

/* ---- complete_many: a batch in one statement, all or nothing ---- */

#define COMPLETE_MANY_SQL \
	"WITH x AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.int4[]), " \
	"                                    pg_catalog.unnest($4::pg_catalog.jsonb[])) AS x (id, attempt, result)), " \
	"     d AS (DELETE FROM fincore.jobs j USING x" \
	"            WHERE j.id OPERATOR(pg_catalog.=) x.id AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2) AND j.state OPERATOR(pg_catalog.=) 'running'" \
	"              AND CASE WHEN x.attempt IS NULL THEN NOT coalesce(j.errors OPERATOR(pg_catalog.@>) '[{\"expired\": true}]', false)" \
	"                       ELSE j.attempts OPERATOR(pg_catalog.=) x.attempt END" \
	"           RETURNING j.*, x.result) " \
	"INSERT INTO fincore.job_archive_%d (id, tenant_id, queue, state, priority, run_at, attempts, " \
	"  max_attempts, worker, payload, unique_key, errors, result, created_at, finished_at, slot) " \
	ARCHIVE_FROM_D("'completed'", "d.result", "$5") " RETURNING id"

typedef struct CompleteBatch
{
	ArrayType  *ids;
	ArrayType  *attempts;		/* NULL: none named */
	ArrayType  *results;		/* NULL: no results */
	Datum	   *id_elems;
	Datum	   *attempt_elems;
	bool	   *attempt_nulls;
	int			n;
} CompleteBatch;

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

static void
complete_many_work(QueueCall *call)
{
	static SPIPlanPtr plans[ARCHIVE_SLOTS];
	CompleteBatch *batch = (CompleteBatch *) DatumGetPointer(call->payloads);
	Oid			types[5] = {INT8ARRAYOID, UUIDOID, INT4ARRAYOID, JSONBARRAYOID, INT2OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int64	   *done;
	int			ndone;

	fincore_spi_connect();
	values[0] = PointerGetDatum(batch->ids);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	values[2] = PointerGetDatum(batch->attempts);
	if (batch->attempts == NULL)
		nulls[2] = 'n';
	values[3] = PointerGetDatum(batch->results);
	if (batch->results == NULL)
		nulls[3] = 'n';
	values[4] = Int16GetDatum(archive_slot(GetCurrentTransactionStartTimestamp()));
	pinned_exec(slot_plan(plans, values[4], COMPLETE_MANY_SQL, 5, types), values, nulls, SPI_OK_INSERT_RETURNING);
	call->out_count = SPI_processed;
	if (SPI_processed == (uint64) batch->n)
	{
		SPI_finish();
		return;
	}
	/* Some job was refused (or named twice): raise the error of the first one. */
	ndone = (int) SPI_processed;
	done = palloc(sizeof(int64) * Max(ndone, 1));
	for (int i = 0; i < ndone; i++)
		done[i] = spi_int64(i, 1);
	qsort(done, ndone, sizeof(int64), int64_cmp);
	for (int i = 0; i < batch->n; i++)
	{
		int64		id = DatumGetInt64(batch->id_elems[i]);
		int64	   *hit = bsearch(&id, done, ndone, sizeof(int64), int64_cmp);

		if (hit != NULL)
		{
			*hit = PG_INT64_MIN;	/* used: a second mention of the id is refused */
			qsort(done, ndone, sizeof(int64), int64_cmp);
			continue;
		}
		call->job_id = id;
		call->attempt = (batch->attempts == NULL || batch->attempt_nulls[i]) ? 0 :
			DatumGetInt32(batch->attempt_elems[i]);
		job_refused(call, "complete");
	}
	elog(ERROR, "complete_many: %d of %d jobs completed, but none was refused", ndone, batch->n);
}

PG_FUNCTION_INFO_V1(fincore_complete_many);
Datum
fincore_complete_many(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};
	CompleteBatch batch = {0};
	bool	   *id_nulls;

	if (PG_ARGISNULL(0))
		queue_option_error("job_ids must not be null", NULL);
	batch.ids = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(batch.ids) > 1)
		queue_option_error("job_ids must be a one-dimensional array", NULL);
	check_batch_size(ArrayGetNItems(ARR_NDIM(batch.ids), ARR_DIMS(batch.ids)), DEQUEUE_MAX,
					 ERRCODE_FC_INVALID_JOB_OPTION, "complete_many");
	deconstruct_array(batch.ids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &batch.id_elems, &id_nulls, &batch.n);
	for (int i = 0; i < batch.n; i++)
		if (id_nulls[i])
			queue_option_error("job_ids must not contain null", NULL);
	if (!PG_ARGISNULL(1))
	{
		int			n;

		batch.attempts = PG_GETARG_ARRAYTYPE_P(1);
		if (ARR_NDIM(batch.attempts) > 1)
			queue_option_error("attempts must be a one-dimensional array", NULL);
		deconstruct_array(batch.attempts, INT4OID, 4, true, TYPALIGN_INT, &batch.attempt_elems, &batch.attempt_nulls, &n);
		if (n != batch.n)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
					 errmsg("%d attempts for %d job_ids", n, batch.n),
					 errhint("Give one attempt per job (NULL for none), or none at all.")));
		for (int i = 0; i < n; i++)
			if (!batch.attempt_nulls[i] && DatumGetInt32(batch.attempt_elems[i]) < 1)
				ereport(ERROR,
						(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
						 errmsg("invalid attempt: %d", DatumGetInt32(batch.attempt_elems[i]))));
	}
	if (!PG_ARGISNULL(2))
	{
		batch.results = PG_GETARG_ARRAYTYPE_P(2);
		if (ARR_NDIM(batch.results) > 1 ||
			ArrayGetNItems(ARR_NDIM(batch.results), ARR_DIMS(batch.results)) != batch.n)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
					 errmsg("results must have one element per job"),
					 errhint("Give one result per job (NULL for none), or none at all.")));
	}
	queue_scope(&call.scope);
	if (batch.n == 0)
		PG_RETURN_INT64(0);
	call.payloads = PointerGetDatum(&batch);
	queue_run(complete_many_work, &call);
	PG_RETURN_INT64(call.out_count);
}

/* ---- fail ---- */

/* The backoff after failed attempt n: d = min(2^n s, 1 h), a uniform time in [d/2, d]. */
static int64
backoff_usecs(int32 attempt)
{
	int64		d = attempt >= 12 ? BACKOFF_CAP_SECS : Min((int64) 1 << attempt, BACKOFF_CAP_SECS);
	int64		half = d * USECS_PER_SEC / 2;

	return half + (int64) (pg_prng_double(&pg_global_prng_state) * (double) half);
}

static void
fail_work(QueueCall *call)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr retry_plan = NULL;
	static SPIPlanPtr dead_plan = NULL;
	Oid			types[4] = {INT8OID, UUIDOID, INT4OID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int32		attempts;
	int32		max_attempts;

	fincore_spi_connect();
	values[0] = Int64GetDatum(call->job_id);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	values[2] = Int32GetDatum(call->attempt);
	if (call->attempt == 0)
		nulls[2] = 'n';
	queue_plan(&lock_plan,
			   "SELECT j.attempts, j.max_attempts FROM fincore.jobs j"
			   " WHERE j.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2) AND " LEASE_HELD("$3")
			   " FOR NO KEY UPDATE",
			   3, types);
	queue_exec(lock_plan, values, nulls, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		job_refused(call, "fail");
	attempts = spi_int32(0, 1);
	max_attempts = spi_int32(0, 2);

	/* $1 id, $2 error, $3 run again at (retry only). */
	values[1] = CStringGetTextDatum(call->error);
	nulls[1] = ' ';
	types[1] = TEXTOID;
	if (attempts >= max_attempts)
	{
		queue_plan(&dead_plan,
				   "UPDATE fincore.jobs j SET state = 'dead', errors = coalesce(j.errors, '[]') OPERATOR(pg_catalog.||) "
				   "  pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('attempt', j.attempts, 'error', $2, 'at', pg_catalog.now(), 'worker', j.worker)) "
				   "WHERE j.id OPERATOR(pg_catalog.=) $1",
				   2, types);
		queue_exec(dead_plan, values, nulls, 0, SPI_OK_UPDATE);
		bury_jobs(construct_array(&values[0], 1, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		call->out_null = true;
	}
	else
	{
		TimestampTz now = GetCurrentTransactionStartTimestamp();

		call->out_time = call->retry_at_given ? call->retry_at : now + backoff_usecs(attempts);
		values[2] = TimestampTzGetDatum(call->out_time);
		nulls[2] = ' ';
		types[2] = TIMESTAMPTZOID;
		queue_plan(&retry_plan,
				   "UPDATE fincore.jobs j SET state = 'ready', run_at = $3, scheduled = $3 OPERATOR(pg_catalog.>) pg_catalog.now(), lease_until = NULL, "
				   "  errors = coalesce(j.errors, '[]') OPERATOR(pg_catalog.||) "
				   "  pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('attempt', j.attempts, 'error', $2, 'at', pg_catalog.now(), 'worker', j.worker)) "
				   "WHERE j.id OPERATOR(pg_catalog.=) $1 RETURNING j.queue",
				   3, types);
		queue_exec(retry_plan, values, nulls, 0, SPI_OK_UPDATE_RETURNING);
		call->out_text = spi_text(0, 1);	/* its queue: told of the retry at commit */
	}
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_fail);
Datum
fincore_fail(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	call.job_id = job_id_arg(fcinfo, 0);
	if (PG_ARGISNULL(1))
		queue_option_error("error must not be null", "Say why the attempt failed; the text is kept with the job.");
	call.error = text_to_cstring(PG_GETARG_TEXT_PP(1));
	call.retry_at_given = !PG_ARGISNULL(2);
	if (call.retry_at_given)
	{
		call.retry_at = PG_GETARG_TIMESTAMPTZ(2);
		if (TIMESTAMP_NOT_FINITE(call.retry_at))
			queue_option_error("retry_at must be a finite time", "Use NULL for the default backoff.");
	}
	call.attempt = attempt_arg(fcinfo, 3);
	queue_scope(&call.scope);
	queue_run(fail_work, &call);
	if (call.out_null)
		PG_RETURN_NULL();
	/*
	 * Retried: ready again at once (behind its queue's positions, maybe), or
	 * due later; its waiters look again (and learn when it falls due).
	 */
	wakeup_at_commit(wakeup_topic("queue", call.out_text));
	if (call.out_time <= GetCurrentTransactionStartTimestamp())
		wakeup_ready_at_commit(wakeup_topic("queue", call.out_text), NULL);
	else
		wakeup_due_at_commit(wakeup_topic("queue", call.out_text), call.out_time);
	PG_RETURN_TIMESTAMPTZ(call.out_time);
}

PG_FUNCTION_INFO_V1(fincore_job_backoff);
Datum
fincore_job_backoff(PG_FUNCTION_ARGS)
{
	int32		attempt = int_arg_in_range(fcinfo, 0, "attempt", 1, PG_INT32_MAX);
	Interval   *result = palloc0(sizeof(Interval));

	result->time = backoff_usecs(attempt);
	PG_RETURN_INTERVAL_P(result);
}

PG_FUNCTION_INFO_V1(fincore_job_archive_slot);
Datum
fincore_job_archive_slot(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16(archive_slot(PG_GETARG_TIMESTAMPTZ(0)));
}

/* ---- heartbeat ---- */

static void
heartbeat_work(QueueCall *call)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[4] = {INT8OID, UUIDOID, INT4OID, INTERVALOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	fincore_spi_connect();
	values[0] = Int64GetDatum(call->job_id);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	values[2] = Int32GetDatum(call->attempt);
	if (call->attempt == 0)
		nulls[2] = 'n';
	values[3] = IntervalPGetDatum(&call->extend);
	queue_plan(&plan,
			   "UPDATE fincore.jobs j SET lease_until = pg_catalog.now() OPERATOR(pg_catalog.+) $4"
			   " WHERE j.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2) AND " LEASE_HELD("$3")
			   " RETURNING j.lease_until",
			   4, types);
	queue_exec(plan, values, nulls, 0, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		job_refused(call, "heartbeat");
	call->out_time = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
													   &call->out_null));
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_heartbeat);
Datum
fincore_heartbeat(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	call.job_id = job_id_arg(fcinfo, 0);
	(void) positive_interval_arg(fcinfo, 1, "extend", LEASE_MAX);
	call.extend = *PG_GETARG_INTERVAL_P(1);
	call.attempt = attempt_arg(fcinfo, 2);
	queue_scope(&call.scope);
	queue_run(heartbeat_work, &call);
	PG_RETURN_TIMESTAMPTZ(call.out_time);
}

/* ---- cancel ---- */

static void
cancel_work(QueueCall *call)
{
	static SPIPlanPtr hot_plan = NULL;
	static SPIPlanPtr dead_plan = NULL;
	Oid			types[3] = {INT8OID, UUIDOID, INT2OID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	fincore_spi_connect();
	values[0] = Int64GetDatum(call->job_id);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	values[2] = Int16GetDatum(archive_slot(GetCurrentTransactionStartTimestamp()));
	queue_plan(&hot_plan,
			   "WITH d AS (DELETE FROM fincore.jobs j WHERE j.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2)"
			   "           RETURNING j.*), "
			   "     i AS (" ARCHIVE_INSERT ARCHIVE_FROM_D("'cancelled'", "NULL", "$3") ") "
			   "SELECT CASE WHEN d.state OPERATOR(pg_catalog.=) 'ready' AND d.run_at OPERATOR(pg_catalog.>) pg_catalog.now() THEN 'scheduled' ELSE d.state END FROM d",
			   3, types);
	queue_exec(hot_plan, values, nulls, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		queue_plan(&dead_plan,
				   "UPDATE fincore.job_archive a SET state = 'cancelled', slot = $3, finished_at = pg_catalog.now()"
				   " WHERE a.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR a.tenant_id OPERATOR(pg_catalog.=) $2) AND a.slot OPERATOR(pg_catalog.=) -1"
				   " RETURNING 'dead'::pg_catalog.text",
				   3, types);
		queue_exec(dead_plan, values, nulls, 0, SPI_OK_UPDATE_RETURNING);
	}
	if (SPI_processed == 0)
		job_refused(call, "cancel");	/* finished, or not found */
	call->out_text = spi_text(0, 1);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_cancel);
Datum
fincore_cancel(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	call.job_id = PG_GETARG_INT64(0);
	queue_scope(&call.scope);
	queue_run(cancel_work, &call);
	PG_RETURN_TEXT_P(cstring_to_text(call.out_text));
}

/* ---- retry ---- */

static void
retry_work(QueueCall *call)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr hot_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr delete_plan = NULL;
	Oid			types[2] = {INT8OID, UUIDOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};

	fincore_spi_connect();
	values[0] = Int64GetDatum(call->job_id);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	queue_plan(&lock_plan,
			   "SELECT a.state, a.queue, a.unique_key FROM fincore.job_archive a"
			   " WHERE a.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR a.tenant_id OPERATOR(pg_catalog.=) $2) FOR UPDATE",
			   2, types);
	planned_exec(lock_plan, values, nulls, SPI_OK_SELECT, true);
	if (SPI_processed == 0)
	{
		queue_plan(&hot_plan,
				   "SELECT CASE WHEN j.state OPERATOR(pg_catalog.=) 'ready' AND j.run_at OPERATOR(pg_catalog.>) pg_catalog.now() THEN 'scheduled' ELSE j.state END"
				   "  FROM fincore.jobs j WHERE j.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2)",
				   2, types);
		queue_exec(hot_plan, values, nulls, 1, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FC_JOB_NOT_FOUND),
					 errmsg("job %lld does not exist", (long long) call->job_id),
					 call->scope.scoped ? errdetail("Only the current tenant's jobs are visible.") : 0));
	}
	else if (strcmp(spi_text(0, 1), "dead") == 0)
	{
		char	   *queue = spi_text(0, 2);
		char	   *key = spi_text(0, 3);

		/* Back into the hot table unless an unfinished job now holds its unique key. */
		queue_plan(&insert_plan,
				   "INSERT INTO fincore.jobs AS j (id, tenant_id, queue, state, priority, run_at, attempts, "
				   "  max_attempts, payload, unique_key, errors, created_at) "
				   "SELECT a.id, a.tenant_id, a.queue, 'ready', a.priority, pg_catalog.now(), 0, a.max_attempts, a.payload, "
				   "  a.unique_key, coalesce(a.errors, '[]') OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('retried_at', pg_catalog.now())), "
				   "  a.created_at "
				   "  FROM fincore.job_archive_dead a WHERE a.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR a.tenant_id OPERATOR(pg_catalog.=) $2) "
				   "ON CONFLICT (tenant_id, queue, unique_key) WHERE unique_key IS NOT NULL DO NOTHING "
				   "RETURNING j.id",
				   2, types);
		queue_exec(insert_plan, values, nulls, 0, SPI_OK_INSERT_RETURNING);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FC_UNIQUE_JOB_CONFLICT),
					 errmsg("cannot retry job %lld: queue \"%s\" has an unfinished job with its unique_key \"%s\"",
							(long long) call->job_id, queue, key),
					 errhint("Let that job finish, or cancel this one.")));
		queue_plan(&delete_plan,
				   "DELETE FROM fincore.job_archive_dead a WHERE a.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR a.tenant_id OPERATOR(pg_catalog.=) $2)",
				   2, types);
		queue_exec(delete_plan, values, nulls, 0, SPI_OK_DELETE);
		SPI_finish();
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_FC_JOB_NOT_DEAD),
			 errmsg("cannot retry job %lld: it is %s, not dead", (long long) call->job_id, spi_text(0, 1)),
			 errhint("Only dead jobs (failed max_attempts times) can be retried.")));
}

PG_FUNCTION_INFO_V1(fincore_retry);
Datum
fincore_retry(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	call.job_id = PG_GETARG_INT64(0);
	queue_scope(&call.scope);
	queue_run(retry_work, &call);
	wakeup_all_at_commit();		/* its queue is not at hand: wake every waiter, once */
	PG_RETURN_VOID();
}
