/*
 * queue_dequeue.c — dequeue: claiming ready jobs with FOR UPDATE SKIP LOCKED, resuming
 * each scan where the last one found ready jobs.
 */
#include "queue_int.h"

#include "funcapi.h"
#include "utils/builtins.h"

/* ---- dequeue ---- */

typedef struct HintKey
{
	pg_uuid_t	tenant;
	bool		scoped;
	char		queue[QUEUE_NAME_MAX + 1];
} HintKey;

typedef struct DequeueHint
{
	HintKey		key;
	bool		has_position;	/* where ready jobs began at the last claim */
	int32		neg_priority;
	TimestampTz run_at;
	int64		id;
	TimestampTz last_full;		/* 0: never */
	int64		full_cost;		/* microseconds the last full scan took */
} DequeueHint;

static HTAB *dequeue_hints = NULL;

static DequeueHint *
dequeue_hint(const char *queue, QueueScope *scope)
{
	HintKey		key;
	bool		found;
	DequeueHint *hint;

	if (dequeue_hints == NULL)
	{
		HASHCTL		ctl = {0};

		ctl.keysize = sizeof(HintKey);
		ctl.entrysize = sizeof(DequeueHint);
		ctl.hcxt = TopMemoryContext;
		dequeue_hints = hash_create("fincore dequeue hints", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.tenant = scope->tenant;
	key.scoped = scope->scoped;
	strlcpy(key.queue, queue, sizeof(key.queue));
	hint = hash_search(dequeue_hints, &key, HASH_ENTER, &found);
	if (!found)
	{
		hint->has_position = false;
		hint->last_full = 0;
		hint->full_cost = 0;
	}
	return hint;
}

/* Row of the claim statement's RETURNING list (columns of fincore.job, then state). */
#define CLAIM_RETURNING \
	"RETURNING j.id, j.tenant_id, j.queue, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts, " \
	"          j.lease_until, j.worker, j.unique_key, j.errors, j.created_at, j.state"
#define JOB_NATTS	13

#define CLAIM_SQL(position) \
	"WITH c AS (" \
	"  SELECT j.id FROM fincore.jobs j" \
	"   WHERE j.queue OPERATOR(pg_catalog.=) $1 AND NOT j.scheduled" \
	"     AND (j.state OPERATOR(pg_catalog.=) 'ready' OR (j.state OPERATOR(pg_catalog.=) 'running' AND j.lease_until OPERATOR(pg_catalog.<) pg_catalog.now()))" \
	"     AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2)" \
	"     AND ($3::pg_catalog.uuid[] IS NULL OR j.tenant_id OPERATOR(pg_catalog.<>) ALL ($3))" \
	position \
	"   ORDER BY j.queue, (-(j.priority::pg_catalog.int4)), j.run_at, j.id" \
	"   LIMIT $4" \
	"   FOR NO KEY UPDATE OF j SKIP LOCKED) " \
	"UPDATE fincore.jobs j SET" \
	"  state = CASE WHEN j.state OPERATOR(pg_catalog.=) 'running' AND j.attempts OPERATOR(pg_catalog.>=) j.max_attempts THEN 'dead' ELSE 'running' END," \
	"  attempts = CASE WHEN j.state OPERATOR(pg_catalog.=) 'running' AND j.attempts OPERATOR(pg_catalog.>=) j.max_attempts THEN j.attempts ELSE j.attempts OPERATOR(pg_catalog.+) 1 END," \
	"  errors = CASE WHEN j.state OPERATOR(pg_catalog.=) 'running' THEN coalesce(j.errors, '[]') OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(" \
	"             'attempt', j.attempts, 'error', 'lease expired', 'expired', true, 'at', j.lease_until, 'worker', j.worker))" \
	"           ELSE j.errors END," \
	"  lease_until = pg_catalog.now() OPERATOR(pg_catalog.+) $5," \
	"  worker = $6 " \
	"FROM c WHERE j.id OPERATOR(pg_catalog.=) c.id " \
	CLAIM_RETURNING

/*
 * Promote due scheduled jobs (of one queue, or of all when queue is NULL)
 * into the claim index, a batch at a time; returns how many.
 */
uint64
promote_due(const char *queue)
{
	static SPIPlanPtr queue_plan_ = NULL;
	static SPIPlanPtr all_plan = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

#define PROMOTE_SQL(cond) \
	"WITH c AS (SELECT j.id FROM fincore.jobs j WHERE j.scheduled AND " cond " j.run_at OPERATOR(pg_catalog.<=) pg_catalog.now()" \
	"           ORDER BY j.queue, j.run_at LIMIT " CppAsString2(RESCUE_BATCH) " FOR NO KEY UPDATE SKIP LOCKED) " \
	"UPDATE fincore.jobs j SET scheduled = false FROM c WHERE j.id OPERATOR(pg_catalog.=) c.id"
	if (queue)
	{
		values[0] = CStringGetTextDatum(queue);
		pinned_exec(queue_plan(&queue_plan_, PROMOTE_SQL("j.queue OPERATOR(pg_catalog.=) $1 AND"), 1, types), values, NULL, SPI_OK_UPDATE);
	}
	else
		pinned_exec(queue_plan(&all_plan, PROMOTE_SQL(""), 0, NULL), NULL, NULL, SPI_OK_UPDATE);
	return SPI_processed;
}

typedef struct ClaimedRow
{
	int			row;
	int32		neg_priority;
	TimestampTz run_at;
	int64		id;
} ClaimedRow;

static int
claimed_cmp(const void *a, const void *b)
{
	const ClaimedRow *x = a;
	const ClaimedRow *y = b;

	if (x->neg_priority != y->neg_priority)
		return x->neg_priority < y->neg_priority ? -1 : 1;
	if (x->run_at != y->run_at)
		return x->run_at < y->run_at ? -1 : 1;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return 0;
}

static void
dequeue_work(QueueCall *call)
{
	static SPIPlanPtr full_plan = NULL;
	static SPIPlanPtr hinted_plan = NULL;
	Oid			types[9] = {TEXTOID, UUIDOID, UUIDARRAYOID, INT4OID, INTERVALOID, TEXTOID,
		INT4OID, TIMESTAMPTZOID, INT8OID};
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPIPlanPtr	plan;
	ClaimedRow *rows;
	int			nrows;
	int			ndead = 0;
	Datum	   *dead;

	fincore_spi_connect();
	values[0] = CStringGetTextDatum(call->queue);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	values[2] = PointerGetDatum(call->paused_tenants);
	if (call->paused_tenants == NULL)
		nulls[2] = 'n';
	values[3] = Int32GetDatum(call->max);
	values[4] = IntervalPGetDatum(&call->lease);
	if (call->worker)
		values[5] = CStringGetTextDatum(call->worker);
	else
		nulls[5] = 'n';
	if (call->hinted)
	{
		values[6] = Int32GetDatum(call->hint_neg_priority);
		values[7] = TimestampTzGetDatum(call->hint_run_at);
		values[8] = Int64GetDatum(call->hint_id);
		plan = queue_plan(&hinted_plan,
						  CLAIM_SQL("     AND ((-(j.priority::pg_catalog.int4)), j.run_at, j.id) OPERATOR(pg_catalog.>=) ($7, $8, $9)"),
						  9, types);
	}
	else
	{
		/* A full scan first moves this queue's due scheduled jobs into the claim index. */
		(void) promote_due(call->queue);
		plan = queue_plan(&full_plan, CLAIM_SQL(""), 6, types);
	}
	pinned_exec(plan, values, nulls, SPI_OK_UPDATE_RETURNING);

	nrows = (int) SPI_processed;
	rows = palloc(sizeof(ClaimedRow) * Max(nrows, 1));
	dead = palloc(sizeof(Datum) * Max(nrows, 1));
	for (int i = 0; i < nrows; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		rows[i].row = i;
		rows[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		rows[i].neg_priority = -(int32) DatumGetInt16(SPI_getbinval(tup, desc, 5, &isnull));
		rows[i].run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
	}
	qsort(rows, nrows, sizeof(ClaimedRow), claimed_cmp);
	if (nrows > 0)
	{
		call->found_any = true;
		call->first_neg_priority = rows[0].neg_priority;
		call->first_run_at = rows[0].run_at;
		call->first_id = rows[0].id;
	}
	for (int i = 0; i < nrows; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[rows[i].row];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		v[JOB_NATTS];
		bool		n[JOB_NATTS];
		bool		isnull;
		char	   *state = TextDatumGetCString(SPI_getbinval(tup, desc, JOB_NATTS + 1, &isnull));

		if (strcmp(state, "dead") == 0)
		{
			dead[ndead++] = Int64GetDatum(rows[i].id);
			continue;
		}
		for (int c = 0; c < JOB_NATTS; c++)
			v[c] = SPI_getbinval(tup, desc, c + 1, &n[c]);
		tuplestore_putvalues(call->rsinfo->setResult, call->rsinfo->setDesc, v, n);
	}
	if (ndead > 0)
		bury_jobs(construct_array(dead, ndead, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_dequeue);
Datum
fincore_dequeue(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};
	DequeueHint *hint;
	TimestampTz started;
	int64		gap;

	call.queue = queue_name_arg(fcinfo, 0);
	call.max = int_arg_in_range(fcinfo, 1, "max", 1, DEQUEUE_MAX);
	(void) positive_interval_arg(fcinfo, 2, "lease", LEASE_MAX);
	call.lease = *PG_GETARG_INTERVAL_P(2);
	call.worker = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	queue_scope(&call.scope);

	InitMaterializedSRF(fcinfo, 0);
	call.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	if (queue_is_paused(call.queue, &call.scope, &call.paused_tenants))
		return (Datum) 0;

	hint = dequeue_hint(call.queue, &call.scope);
	started = GetCurrentTimestamp();
	gap = Max((int64) dequeue_rescan_interval * 1000, 10 * hint->full_cost);
	if (hint->last_full == 0 || dequeue_rescan_interval == 0 || started - hint->last_full >= gap)
		call.hinted = false;
	else if (hint->has_position)
	{
		call.hinted = true;
		call.hint_neg_priority = hint->neg_priority;
		call.hint_run_at = hint->run_at;
		call.hint_id = hint->id;
	}
	else
		return (Datum) 0;		/* nothing was ready at the last full scan, which is recent */

	queue_run(dequeue_work, &call);

	/* The hint entry may have moved if another queue's was added meanwhile: look it up again. */
	hint = dequeue_hint(call.queue, &call.scope);
	if (!call.hinted)
	{
		hint->last_full = started;
		hint->full_cost = GetCurrentTimestamp() - started;
	}
	if (call.found_any)
	{
		hint->has_position = true;
		hint->neg_priority = call.first_neg_priority;
		hint->run_at = call.first_run_at;
		hint->id = call.first_id;
	}
	return (Datum) 0;
}
