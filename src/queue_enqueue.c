/*
 * queue_enqueue.c — enqueue (one, many, unique) and pausing queues (cached per backend).
 */
#include "queue_int.h"
#include "wakeup.h"

#include "cache_watch.h"

#include "access/detoast.h"
#include "funcapi.h"
#include "utils/builtins.h"

/* ---- enqueue ---- */

static void
enqueue_one(QueueCall *call)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr lookup_plan = NULL;
	Oid			types[8] = {UUIDOID, TEXTOID, INT2OID, TIMESTAMPTZOID, INT4OID, JSONBOID, TEXTOID, BOOLOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = UUIDPGetDatum(&call->scope.tenant);
	values[1] = CStringGetTextDatum(call->queue);
	values[2] = Int16GetDatum(call->priority);
	values[3] = TimestampTzGetDatum(call->run_at);
	values[4] = Int32GetDatum(call->max_attempts);
	values[5] = call->payload;
	if (call->unique_key)
		values[6] = CStringGetTextDatum(call->unique_key);
	else
		nulls[6] = 'n';
	values[7] = BoolGetDatum(call->run_at > GetCurrentTransactionStartTimestamp());

	queue_plan(&insert_plan,
			   "INSERT INTO fincore.jobs AS j (tenant_id, queue, priority, run_at, max_attempts, payload, unique_key, scheduled) "
			   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
			   "ON CONFLICT (tenant_id, queue, unique_key) WHERE unique_key IS NOT NULL DO NOTHING "
			   "RETURNING j.id",
			   8, types);
	queue_plan(&lookup_plan,
			   "SELECT j.id FROM fincore.jobs j WHERE j.tenant_id OPERATOR(pg_catalog.=) $1 AND j.queue OPERATOR(pg_catalog.=) $2 AND j.unique_key OPERATOR(pg_catalog.=) $3",
			   3, (Oid[]) {UUIDOID, TEXTOID, TEXTOID});

	if (call->unique_key == NULL)
	{
		static SPIPlanPtr plain_plan = NULL;

		queue_plan(&plain_plan,
				   "INSERT INTO fincore.jobs AS j (tenant_id, queue, priority, run_at, max_attempts, payload, scheduled) "
				   "VALUES ($1, $2, $3, $4, $5, $6, $8) RETURNING j.id",
				   8, types);
		queue_exec(plain_plan, values, nulls, 0, SPI_OK_INSERT_RETURNING);
		call->out_id = spi_int64(0, 1);
		return;
	}
	for (int i = 0; i < ENQUEUE_RETRIES; i++)
	{
		queue_exec(insert_plan, values, nulls, 0, SPI_OK_INSERT_RETURNING);
		if (SPI_processed > 0)
		{
			call->out_id = spi_int64(0, 1);
			return;
		}
		/* An unfinished job holds the key: return it, unless it finished meanwhile. */
		queue_exec(lookup_plan, (Datum[]) {values[0], values[1], values[6]}, NULL, 1, SPI_OK_SELECT);
		if (SPI_processed > 0)
		{
			call->out_id = spi_int64(0, 1);
			return;
		}
	}
	elog(ERROR, "could not enqueue a job with unique_key \"%s\": it kept finishing and reappearing", call->unique_key);
}

static void
enqueue_work(QueueCall *call)
{
	fincore_spi_connect();
	enqueue_one(call);
	SPI_finish();
}

int64
queue_enqueue_job(const pg_uuid_t *tenant, const char *queue, Jsonb *payload, const char *unique_key)
{
	QueueCall	call = {0};

	call.queue = pstrdup(queue);
	call.run_at = GetCurrentTransactionStartTimestamp();
	call.priority = 0;
	call.max_attempts = 25;
	call.payload = JsonbPGetDatum(payload);
	check_payload(call.payload, false);
	if (unique_key != NULL)
	{
		call.unique_key = pstrdup(unique_key);
		check_unique_key(call.unique_key);
	}
	call.scope.tenant = *tenant;
	call.scope.scoped = true;
	queue_run(enqueue_work, &call);
	return call.out_id;
}

/*
 * Jobs enqueued ready (run_at not after now) from id on, in the ready log at
 * commit: a dequeue whose position is past them scans from the start (wakeup.h).
 * Later ones wait as scheduled jobs: their due time goes in the log, and the
 * full scan a dequeue makes once it has passed promotes them.
 */
static void
enqueued_ready(const QueueCall *call, int64 id)
{
	WorkPosition pos;

	if (call->run_at > GetCurrentTransactionStartTimestamp())
	{
		wakeup_due_at_commit(wakeup_topic("queue", call->queue), call->run_at);
		return;
	}
	claim_position(-(int32) call->priority, call->run_at, id, &pos);
	wakeup_ready_at_commit(wakeup_topic("queue", call->queue), &pos);
}

/* The options enqueue and enqueue_many share: args 2-4 (run_at, priority, max_attempts). */
static void
enqueue_options(FunctionCallInfo fcinfo, QueueCall *call)
{
	call->queue = queue_name_arg(fcinfo, 0);
	if (PG_ARGISNULL(2))
		call->run_at = GetCurrentTransactionStartTimestamp();
	else
	{
		call->run_at = PG_GETARG_TIMESTAMPTZ(2);
		if (TIMESTAMP_NOT_FINITE(call->run_at))
			queue_option_error("run_at must be a finite time", "Use NULL or now() for a job to run at once.");
	}
	if (PG_ARGISNULL(3))
		queue_option_error("priority must not be null", "The default priority is 0; higher runs first.");
	call->priority = PG_GETARG_INT16(3);
	call->max_attempts = int_arg_in_range(fcinfo, 4, "max_attempts", 1, MAX_ATTEMPTS_MAX);
}

PG_FUNCTION_INFO_V1(fincore_enqueue);
Datum
fincore_enqueue(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	enqueue_options(fcinfo, &call);
	check_payload(PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1), PG_ARGISNULL(1));
	call.payload = PG_GETARG_DATUM(1);
	if (!PG_ARGISNULL(5))
	{
		call.unique_key = text_to_cstring(PG_GETARG_TEXT_PP(5));
		check_unique_key(call.unique_key);
	}
	tenancy_require_tenant(&call.scope.tenant);
	call.scope.scoped = true;
	queue_run(enqueue_work, &call);
	wakeup_at_commit(wakeup_topic("queue", call.queue));
	enqueued_ready(&call, call.out_id);
	PG_RETURN_INT64(call.out_id);
}

/* enqueue_many: one INSERT for plain jobs; unique ones one at a time (each may exist). */
static void
enqueue_many_work(QueueCall *call)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[7] = {UUIDOID, TEXTOID, INT2OID, TIMESTAMPTZOID, INT4OID, JSONBARRAYOID, BOOLOID};
	Datum		values[7];

	fincore_spi_connect();
	values[0] = UUIDPGetDatum(&call->scope.tenant);
	values[1] = CStringGetTextDatum(call->queue);
	values[2] = Int16GetDatum(call->priority);
	values[3] = TimestampTzGetDatum(call->run_at);
	values[4] = Int32GetDatum(call->max_attempts);
	values[5] = call->payloads;
	values[6] = BoolGetDatum(call->run_at > GetCurrentTransactionStartTimestamp());
	queue_plan(&plan,
			   "INSERT INTO fincore.jobs AS j (tenant_id, queue, priority, run_at, max_attempts, payload, scheduled) "
			   "SELECT $1, $2, $3, $4, $5, p.payload, $7 FROM pg_catalog.unnest($6) WITH ORDINALITY AS p (payload, ord) "
			   "ORDER BY p.ord RETURNING j.id",
			   7, types);
	queue_exec(plan, values, NULL, 0, SPI_OK_INSERT_RETURNING);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		v[1] = {Int64GetDatum(spi_int64(i, 1))};
		bool		n[1] = {false};

		tuplestore_putvalues(call->rsinfo->setResult, call->rsinfo->setDesc, v, n);
	}
	SPI_finish();
}

typedef struct UniqueBatch
{
	QueueCall  *call;
	Datum	   *payloads;
	bool	   *keys_null;
	Datum	   *keys;
	int			n;
} UniqueBatch;

static void
enqueue_unique_work(QueueCall *call)
{
	UniqueBatch *batch = (UniqueBatch *) DatumGetPointer(call->payloads);

	fincore_spi_connect();
	for (int i = 0; i < batch->n; i++)
	{
		Datum		v[1];
		bool		n[1] = {false};

		call->payload = batch->payloads[i];
		call->unique_key = batch->keys_null[i] ? NULL : TextDatumGetCString(batch->keys[i]);
		enqueue_one(call);
		v[0] = Int64GetDatum(call->out_id);
		tuplestore_putvalues(call->rsinfo->setResult, call->rsinfo->setDesc, v, n);
	}
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_enqueue_many);
Datum
fincore_enqueue_many(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};
	ArrayType  *payloads;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	enqueue_options(fcinfo, &call);
	if (PG_ARGISNULL(1))
		queue_option_error("payloads must not be null", NULL);
	payloads = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(payloads) > 1)
		queue_option_error("payloads must be a one-dimensional array", NULL);
	check_batch_size(ArrayGetNItems(ARR_NDIM(payloads), ARR_DIMS(payloads)), PG_INT32_MAX,
					 ERRCODE_FC_INVALID_JOB_OPTION, "enqueue_many");
	deconstruct_array(payloads, JSONBOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
					 errmsg("payload %d of %d is null", i + 1, n),
					 errhint("Use '{}' or 'null'::jsonb for a job without data.")));
		check_payload_size(toast_raw_datum_size(elems[i]), ERRCODE_FC_INVALID_JOB_OPTION, "a job payload");
	}
	tenancy_require_tenant(&call.scope.tenant);
	call.scope.scoped = true;
	wakeup_at_commit(wakeup_topic("queue", call.queue));
	enqueued_ready(&call, 0);	/* the batch's ids come later: 0 is before all of them */

	/* A set of a scalar: the executor's expected descriptor is its one column. */
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	call.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	if (n == 0)
		return (Datum) 0;
	if (PG_ARGISNULL(5))
	{
		call.payloads = PointerGetDatum(payloads);
		queue_run(enqueue_many_work, &call);
	}
	else
	{
		ArrayType  *keys = PG_GETARG_ARRAYTYPE_P(5);
		UniqueBatch batch = {&call, elems, NULL, NULL, n};
		int			nkeys;

		if (ARR_NDIM(keys) > 1)
			queue_option_error("unique_keys must be a one-dimensional array", NULL);
		deconstruct_array(keys, TEXTOID, -1, false, TYPALIGN_INT, &batch.keys, &batch.keys_null, &nkeys);
		if (nkeys != n)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
					 errmsg("%d unique_keys for %d payloads", nkeys, n),
					 errhint("Give one key per payload (NULL for a job that is not unique), or none at all.")));
		for (int i = 0; i < n; i++)
			if (!batch.keys_null[i])
				check_unique_key(TextDatumGetCString(batch.keys[i]));
		call.payloads = PointerGetDatum(&batch);
		queue_run(enqueue_unique_work, &call);
	}
	return (Datum) 0;
}

/* ---- paused queues, cached per backend ---- */

typedef struct PausedQueue
{
	pg_uuid_t	tenant;			/* all zero: every tenant */
	char		queue[QUEUE_NAME_MAX + 1];
} PausedQueue;

static MemoryContext paused_cxt = NULL;
static PausedQueue *paused = NULL;
static int	paused_count = 0;
static CacheWatch paused_watch;

static void
paused_load_work(QueueCall *call pg_attribute_unused())
{
	static SPIPlanPtr plan = NULL;
	MemoryContext old;

	fincore_spi_connect();
	queue_plan(&plan, "SELECT p.tenant_id, p.queue FROM fincore.paused_queues p", 0, NULL);
	queue_exec(plan, NULL, NULL, 0, SPI_OK_SELECT);
	old = MemoryContextSwitchTo(paused_cxt);
	paused_count = (int) SPI_processed;
	paused = palloc0(sizeof(PausedQueue) * Max(paused_count, 1));
	MemoryContextSwitchTo(old);
	for (int i = 0; i < paused_count; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		paused[i].tenant = *DatumGetUUIDP(d);
		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
		text_to_cstring_buffer(DatumGetTextPP(d), paused[i].queue, sizeof(paused[i].queue));
	}
	SPI_finish();
}

static void
paused_ensure_loaded(void)
{
	Oid			relid;

	if (cache_watch_valid(&paused_watch))
		return;
	relid = fincore_table_oid("paused_queues");
	if (paused_cxt == NULL)
		paused_cxt = AllocSetContextCreate(TopMemoryContext, "fincore paused queues", ALLOCSET_SMALL_SIZES);
	MemoryContextReset(paused_cxt);
	paused = NULL;
	paused_count = 0;
	cache_watch_begin(&paused_watch, 1, &relid);
	queue_run(paused_load_work, NULL);
	cache_watch_done(&paused_watch);
}

static inline bool
uuid_is_nil(const pg_uuid_t *u)
{
	static const pg_uuid_t nil = {{0}};

	return memcmp(u, &nil, sizeof(pg_uuid_t)) == 0;
}

/*
 * Is queue paused for the scope?  For a scope of every tenant, *tenants gets
 * the tenants that paused it themselves (NULL when none), to be skipped.
 */
bool
queue_is_paused(const char *queue, QueueScope *scope, ArrayType **tenants)
{
	Datum	   *elems = NULL;
	int			n = 0;

	*tenants = NULL;
	paused_ensure_loaded();
	for (int i = 0; i < paused_count; i++)
	{
		if (strcmp(paused[i].queue, queue) != 0)
			continue;
		if (uuid_is_nil(&paused[i].tenant))
			return true;
		if (scope->scoped)
		{
			if (memcmp(&paused[i].tenant, &scope->tenant, sizeof(pg_uuid_t)) == 0)
				return true;
			continue;
		}
		if (elems == NULL)
			elems = palloc(sizeof(Datum) * paused_count);
		elems[n++] = UUIDPGetDatum(&paused[i].tenant);
	}
	if (n > 0)
		*tenants = construct_array(elems, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR);
	return false;
}

PG_FUNCTION_INFO_V1(fincore_paused_queues_changed);
Datum
fincore_paused_queues_changed(PG_FUNCTION_ARGS)
{
	return cache_watch_trigger(fcinfo);
}

static void
pause_work(QueueCall *call)
{
	static SPIPlanPtr pause_plan = NULL;
	static SPIPlanPtr resume_plan = NULL;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2] = {UUIDPGetDatum(&call->scope.tenant), CStringGetTextDatum(call->queue)};

	fincore_spi_connect();
	if (call->out_null)
	{
		queue_plan(&resume_plan, "DELETE FROM fincore.paused_queues p WHERE p.tenant_id OPERATOR(pg_catalog.=) $1 AND p.queue OPERATOR(pg_catalog.=) $2",
				   2, types);
		queue_exec(resume_plan, values, NULL, 0, SPI_OK_DELETE);
	}
	else
	{
		queue_plan(&pause_plan,
				   "INSERT INTO fincore.paused_queues (tenant_id, queue) VALUES ($1, $2) ON CONFLICT DO NOTHING",
				   2, types);
		queue_exec(pause_plan, values, NULL, 0, SPI_OK_INSERT);
	}
	SPI_finish();
}

/* pause_queue / resume_queue: scope every tenant is stored as the nil UUID. */
static void
pause_or_resume(FunctionCallInfo fcinfo, bool resume)
{
	QueueCall	call = {0};

	call.queue = queue_name_arg(fcinfo, 0);
	queue_scope(&call.scope);
	call.out_null = resume;
	queue_run(pause_work, &call);
	if (resume)
	{
		wakeup_at_commit(wakeup_topic("queue", call.queue));
		wakeup_ready_at_commit(wakeup_topic("queue", call.queue), NULL);
	}
}

PG_FUNCTION_INFO_V1(fincore_pause_queue);
Datum
fincore_pause_queue(PG_FUNCTION_ARGS)
{
	pause_or_resume(fcinfo, false);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(fincore_resume_queue);
Datum
fincore_resume_queue(PG_FUNCTION_ARGS)
{
	pause_or_resume(fcinfo, true);
	PG_RETURN_VOID();
}
