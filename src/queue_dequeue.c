/*
 * queue_dequeue.c — dequeue: claiming ready jobs with FOR UPDATE SKIP LOCKED, resuming
 * each scan where the last one found ready jobs.
 */
#include "queue_int.h"
#include "wakeup.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "funcapi.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

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
	bool		marked;			/* mark is where the ready log stood before the last scan */
	ReadyMark	mark;
	TimestampTz next_due;		/* when the first scheduled job falls due, as known (0: none) */
} DequeueHint;

/*
 * A full scan that took less than this may run whenever the ready log says a
 * job became ready behind the position (else at most a tenth of the time).
 */
#define CHEAP_FULL_SCAN_US	1000

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
		hint->marked = false;
		hint->next_due = 0;
	}
	return hint;
}

/* Row of the claim statement's RETURNING list (columns of fincore.job, then state). */
#define CLAIM_RETURNING \
	"RETURNING j.id, j.tenant_id, j.queue, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts, " \
	"          j.lease_until, j.worker, j.unique_key, j.errors, j.created_at, j.state"
#define JOB_NATTS	13

/* The jobs to claim: ready ones, and running ones whose lease expired, in claim order. */
#define CLAIM_PICK(position) \
	"  SELECT j.id FROM fincore.jobs j" \
	"   WHERE j.queue OPERATOR(pg_catalog.=) $1 AND NOT j.scheduled" \
	"     AND (j.state OPERATOR(pg_catalog.=) 'ready' OR (j.state OPERATOR(pg_catalog.=) 'running' AND j.lease_until OPERATOR(pg_catalog.<) pg_catalog.now()))" \
	"     AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2)" \
	"     AND ($3::pg_catalog.uuid[] IS NULL OR j.tenant_id OPERATOR(pg_catalog.<>) ALL ($3))" \
	position \
	"   ORDER BY j.queue, (-(j.priority::pg_catalog.int4)), j.run_at, j.id" \
	"   LIMIT $4" \
	"   FOR NO KEY UPDATE OF j SKIP LOCKED"

/* Claim the jobs of c: a lease for each, or death for one whose lease expired on its last attempt. */
#define CLAIM_UPDATE \
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

#define CLAIM_SQL(position) \
	"WITH c AS (" CLAIM_PICK(position) ") " CLAIM_UPDATE

/*
 * complete_and_dequeue in one statement: the job $10 (attempt $11) moves to
 * archive slot %d ($13) with result $12, and the claim runs beside it (never
 * picking $10).  One row at least: the count of jobs completed (0: refused),
 * then the claimed job's columns, NULL when none was claimed.
 */
#define COMPLETE_AND_CLAIM_SQL(position) \
	"WITH d AS (DELETE FROM fincore.jobs j" \
	"  WHERE j.id OPERATOR(pg_catalog.=) $10 AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2) AND " LEASE_HELD("$11") \
	"  RETURNING j.*), " \
	"a AS (INSERT INTO fincore.job_archive_%d (id, tenant_id, queue, state, priority, run_at, attempts, " \
	"  max_attempts, worker, payload, unique_key, errors, result, created_at, finished_at, slot) " \
	ARCHIVE_FROM_D("'completed'", "$12", "$13") " RETURNING 1), " \
	"c AS (" CLAIM_PICK(position "     AND j.id OPERATOR(pg_catalog.<>) $10") "), " \
	"u AS (" CLAIM_UPDATE ") " \
	"SELECT (SELECT pg_catalog.count(*) FROM a), u.* FROM (SELECT 1) AS one LEFT JOIN u ON true"

#define HINT_POSITION "     AND ((-(j.priority::pg_catalog.int4)), j.run_at, j.id) OPERATOR(pg_catalog.>=) ($7, $8, $9)"

/* When the queue's first scheduled job falls due (0: none), as of this statement. */
static TimestampTz
next_scheduled(const char *queue)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(queue)};
	bool		isnull;
	Datum		due;

	pinned_exec(queue_plan(&plan,
						   "SELECT pg_catalog.min(j.run_at) FROM fincore.jobs j"
						   " WHERE j.queue OPERATOR(pg_catalog.=) $1 AND j.scheduled",
						   1, types),
				values, NULL, SPI_OK_SELECT);
	due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(due);
}

/*
 * Promote the scheduled jobs due by upto (of one queue, or of all when queue
 * is NULL) into the claim index, a batch at a time; returns how many.
 */
uint64
promote_due(const char *queue, TimestampTz upto)
{
	static SPIPlanPtr queue_plan_ = NULL;
	static SPIPlanPtr all_plan = NULL;
	Oid			types[2] = {TIMESTAMPTZOID, TEXTOID};
	Datum		values[2];

#define PROMOTE_SQL(cond) \
	"WITH c AS (SELECT j.id FROM fincore.jobs j WHERE j.scheduled AND " cond " j.run_at OPERATOR(pg_catalog.<=) $1" \
	"           ORDER BY j.queue, j.run_at LIMIT " CppAsString2(RESCUE_BATCH) " FOR NO KEY UPDATE SKIP LOCKED) " \
	"UPDATE fincore.jobs j SET scheduled = false FROM c WHERE j.id OPERATOR(pg_catalog.=) c.id"
	values[0] = TimestampTzGetDatum(upto);
	if (queue)
	{
		values[1] = CStringGetTextDatum(queue);
		pinned_exec(queue_plan(&queue_plan_, PROMOTE_SQL("j.queue OPERATOR(pg_catalog.=) $2 AND"), 2, types), values, NULL, SPI_OK_UPDATE);
	}
	else
		pinned_exec(queue_plan(&all_plan, PROMOTE_SQL(""), 1, types), values, NULL, SPI_OK_UPDATE);
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
	static SPIPlanPtr full_complete_plans[ARCHIVE_SLOTS];
	static SPIPlanPtr hinted_complete_plans[ARCHIVE_SLOTS];
	Oid			types[13] = {TEXTOID, UUIDOID, UUIDARRAYOID, INT4OID, INTERVALOID, TEXTOID,
		INT4OID, TIMESTAMPTZOID, INT8OID, INT8OID, INT4OID, JSONBOID, INT2OID};
	Datum		values[13];
	char		nulls[13];
	bool		completing = call->job_id != 0;
	int			offset = completing ? 1 : 0;	/* the count of completed jobs comes first */
	bool		count_null;
	SPIPlanPtr	plan;
	ClaimedRow *rows;
	int			nrows;
	int			ndead = 0;
	Datum	   *dead;

	fincore_spi_connect();
	memset(nulls, ' ', sizeof(nulls));
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
	values[6] = Int32GetDatum(call->hint_neg_priority);
	values[7] = TimestampTzGetDatum(call->hint_run_at);
	values[8] = Int64GetDatum(call->hint_id);
	if (!call->hinted)
	{
		/*
		 * A full scan first moves this queue's due scheduled jobs into the
		 * claim index, ready for the other backends too once this commits.
		 */
		if (promote_due(call->queue, GetCurrentTransactionStartTimestamp()) > 0)
			wakeup_ready_at_commit(wakeup_topic("queue", call->queue), NULL);
		call->next_due = next_scheduled(call->queue);
		nulls[6] = nulls[7] = nulls[8] = 'n';
	}
	if (completing)
	{
		values[9] = Int64GetDatum(call->job_id);
		values[10] = Int32GetDatum(call->attempt);
		if (call->attempt == 0)
			nulls[10] = 'n';
		values[11] = call->result;
		if (call->result_null)
			nulls[11] = 'n';
		values[12] = Int16GetDatum(archive_slot(GetCurrentTransactionStartTimestamp()));
		plan = call->hinted
			? slot_plan(hinted_complete_plans, values[12], COMPLETE_AND_CLAIM_SQL(HINT_POSITION), 13, types)
			: slot_plan(full_complete_plans, values[12], COMPLETE_AND_CLAIM_SQL(""), 13, types);
		pinned_exec(plan, values, nulls, SPI_OK_SELECT);
		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &count_null)) == 0)
			job_refused(call, "complete");
	}
	else if (call->hinted)
	{
		plan = queue_plan(&hinted_plan, CLAIM_SQL(HINT_POSITION), 9, types);
		pinned_exec(plan, values, nulls, SPI_OK_UPDATE_RETURNING);
	}
	else
	{
		plan = queue_plan(&full_plan, CLAIM_SQL(""), 6, types);
		pinned_exec(plan, values, nulls, SPI_OK_UPDATE_RETURNING);
	}

	nrows = 0;
	rows = palloc(sizeof(ClaimedRow) * Max(SPI_processed, 1));
	dead = palloc(sizeof(Datum) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		id = SPI_getbinval(tup, desc, offset + 1, &isnull);

		if (isnull)
			continue;			/* complete_and_dequeue's row when nothing was claimed */
		rows[nrows].row = (int) i;
		rows[nrows].id = DatumGetInt64(id);
		rows[nrows].neg_priority = -(int32) DatumGetInt16(SPI_getbinval(tup, desc, offset + 5, &isnull));
		rows[nrows].run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, offset + 6, &isnull));
		nrows++;
	}
	qsort(rows, nrows, sizeof(ClaimedRow), claimed_cmp);
	if (nrows > 0)
	{
		WorkPosition first;

		call->found_any = true;
		call->first_neg_priority = rows[0].neg_priority;
		call->first_run_at = rows[0].run_at;
		call->first_id = rows[0].id;
		/* Rolled back, the claims make these jobs ready again, behind other backends' positions. */
		claim_position(call->first_neg_priority, call->first_run_at, call->first_id, &first);
		wakeup_ready_at_abort(wakeup_topic("queue", call->queue), &first);
	}
	for (int i = 0; i < nrows; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[rows[i].row];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		v[JOB_NATTS];
		bool		n[JOB_NATTS];
		bool		isnull;
		char	   *state = TextDatumGetCString(SPI_getbinval(tup, desc, offset + JOB_NATTS + 1, &isnull));

		if (strcmp(state, "dead") == 0)
		{
			dead[ndead++] = Int64GetDatum(rows[i].id);
			continue;
		}
		for (int c = 0; c < JOB_NATTS; c++)
			v[c] = SPI_getbinval(tup, desc, offset + c + 1, &n[c]);
		tuplestore_putvalues(call->rsinfo->setResult, call->rsinfo->setDesc, v, n);
	}
	if (ndead > 0)
		bury_jobs(construct_array(dead, ndead, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	SPI_finish();
}

/*
 * Claim up to call->max jobs of call->queue into call->rsinfo's tuplestore
 * (call->queue, max, lease, worker, scope and rsinfo set), from this
 * backend's hint of where ready jobs began unless a full scan is due.
 */
static void
dequeue_claim(QueueCall *call)
{
	DequeueHint *hint;
	TimestampTz started;
	int64		gap;
	bool		full;
	uint64		topic;
	ReadyMark	mark;
	bool		marked = false;

	if (queue_is_paused(call->queue, &call->scope, &call->paused_tenants))
	{
		if (call->job_id != 0)
			complete_job(call);
		return;
	}

	hint = dequeue_hint(call->queue, &call->scope);
	started = GetCurrentTimestamp();
	gap = Max((int64) dequeue_rescan_interval * 1000, 10 * hint->full_cost);
	full = hint->last_full == 0 || dequeue_rescan_interval == 0 || started - hint->last_full >= gap;
	topic = wakeup_topic("queue", call->queue);
	if (!full && wakeup_board_present())
	{
		/*
		 * Between the periodic full scans, one whenever the ready log says a
		 * job became ready behind this backend's position (or anywhere, when
		 * nothing was ready at the last scan): strict claim order at every
		 * call, unless full scans cost much (dead entries under a held
		 * snapshot), when they stay within a tenth of the time.  A
		 * transaction snapshot is older than any mark: it cannot use the log.
		 */
		WorkPosition pos;
		bool		behind;

		claim_position(hint->neg_priority, hint->run_at, hint->id, &pos);
		behind = !hint->marked || IsolationUsesXactSnapshot() ||
			wakeup_ready_before(topic, &hint->mark, hint->has_position ? &pos : NULL, &hint->next_due);
		/* A scheduled job that fell due: the full scan promotes it (due by the transaction's start). */
		if (!behind && hint->next_due != 0 && hint->next_due <= GetCurrentTransactionStartTimestamp())
			behind = true;
		if (behind && (hint->full_cost < CHEAP_FULL_SCAN_US || started - hint->last_full >= 10 * hint->full_cost))
			full = true;
	}
	if (full)
	{
		call->hinted = false;
		/* Before the scan's snapshot: what the scan sees covers the mark. */
		marked = wakeup_ready_mark(topic, &mark) && !IsolationUsesXactSnapshot();
	}
	else if (hint->has_position)
	{
		call->hinted = true;
		call->hint_neg_priority = hint->neg_priority;
		call->hint_run_at = hint->run_at;
		call->hint_id = hint->id;
	}
	else
	{
		/* Nothing was ready at the last full scan, which is recent, and nothing became ready since. */
		if (call->job_id != 0)
			complete_job(call);
		return;
	}

	queue_run(dequeue_work, call);

	/* The hint entry may have moved if another queue's was added meanwhile: look it up again. */
	hint = dequeue_hint(call->queue, &call->scope);
	if (!call->hinted)
	{
		/* The first full scan may have planned the statements: its cost says little. */
		hint->full_cost = hint->last_full == 0 ? 0 : GetCurrentTimestamp() - started;
		hint->last_full = started;
		hint->marked = marked;
		if (marked)
			hint->mark = mark;
		hint->next_due = call->next_due;
	}
	if (call->found_any)
	{
		hint->has_position = true;
		hint->neg_priority = call->first_neg_priority;
		hint->run_at = call->first_run_at;
		hint->id = call->first_id;
	}
}

/* The claim's arguments at argno (queue), argno + 1 (max), + 2 (lease), + 3 (worker). */
static void
claim_args(FunctionCallInfo fcinfo, int queue_argno, int max_argno, QueueCall *call)
{
	call->queue = queue_name_arg(fcinfo, queue_argno);
	call->max = int_arg_in_range(fcinfo, max_argno, "max", 1, DEQUEUE_MAX);
	(void) positive_interval_arg(fcinfo, max_argno + 1, "lease", LEASE_MAX);
	call->lease = *PG_GETARG_INTERVAL_P(max_argno + 1);
	call->worker = PG_ARGISNULL(max_argno + 2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(max_argno + 2));
	queue_scope(&call->scope);
}

PG_FUNCTION_INFO_V1(fincore_dequeue);
Datum
fincore_dequeue(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	claim_args(fcinfo, 0, 1, &call);
	InitMaterializedSRF(fcinfo, 0);
	call.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	dequeue_claim(&call);
	return (Datum) 0;
}

/*
 * A worker's loop in one round trip: complete the job it finished (none on
 * its first call), then claim the next.  Arguments: job_id, queue, result,
 * attempt, max, lease, worker.
 */
PG_FUNCTION_INFO_V1(fincore_complete_and_dequeue);
Datum
fincore_complete_and_dequeue(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};

	claim_args(fcinfo, 1, 4, &call);
	if (!PG_ARGISNULL(0))
	{
		/* Completed by the claim's own statement (or alone when no claim runs). */
		call.job_id = job_id_arg(fcinfo, 0);
		call.result_null = PG_ARGISNULL(2);
		call.result = call.result_null ? (Datum) 0 : PG_GETARG_DATUM(2);
		call.attempt = attempt_arg(fcinfo, 3);
	}
	InitMaterializedSRF(fcinfo, 0);
	call.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	dequeue_claim(&call);
	return (Datum) 0;
}

/* ---- waiting for jobs ---- */

#define WAIT_MAX	(USECS_PER_SEC * 3600)

/*
 * At most this many ready jobs are examined for one that no transaction is
 * claiming; past it, the look counts the queue as ready.
 */
#define READY_LOOK_ROWS	256

/*
 * Whether the job row at tid is being changed by a transaction still in
 * progress: a claim (dequeue's UPDATE) that has not committed yet.  Every
 * other snapshot still sees that job ready, but no dequeue can take it (SKIP
 * LOCKED), so a wait that counted it would return at once, and again after
 * each empty dequeue, for as long as the claimer's transaction lasts.  The
 * dirty snapshot names an in-progress updater in xmax (a row lock alone, which
 * no claim leaves, is not seen).  A row gone meanwhile is not claimable either.
 */
static bool
job_claimable(Relation rel, ItemPointer tid)
{
	SnapshotData dirty;
	HeapTupleData tuple;
	Buffer		buf;

	InitDirtySnapshot(dirty);
	tuple.t_self = *tid;
	if (!heap_fetch(rel, &dirty, &tuple, &buf, false))
		return false;
	ReleaseBuffer(buf);
	return !TransactionIdIsValid(dirty.xmax);
}

/*
 * Is a job of call->queue claimable by the caller now (call->found_any)?  Due
 * scheduled jobs are promoted on the way; otherwise call->out_time is when the
 * first scheduled one is due (0: none).
 */
static void
ready_check_work(QueueCall *call)
{
	static SPIPlanPtr ready_plan = NULL;
	static SPIPlanPtr due_plan = NULL;
	Oid			types[3] = {TEXTOID, UUIDOID, UUIDARRAYOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	Datum		due;
	Relation	rel;

	fincore_spi_connect();
	values[0] = CStringGetTextDatum(call->queue);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	values[2] = PointerGetDatum(call->paused_tenants);
	if (call->paused_tenants == NULL)
		nulls[2] = 'n';
	/*
	 * The ready jobs in claim order (the ones being claimed are usually the
	 * first); clock_timestamp(): the wait outlives its statement's now().
	 */
	pinned_exec(queue_plan(&ready_plan,
						   "SELECT j.ctid FROM fincore.jobs j"
						   " WHERE j.queue OPERATOR(pg_catalog.=) $1 AND NOT j.scheduled"
						   "   AND (j.state OPERATOR(pg_catalog.=) 'ready' OR (j.state OPERATOR(pg_catalog.=) 'running'"
						   "        AND j.lease_until OPERATOR(pg_catalog.<) pg_catalog.clock_timestamp()))"
						   "   AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2)"
						   "   AND ($3::pg_catalog.uuid[] IS NULL OR j.tenant_id OPERATOR(pg_catalog.<>) ALL ($3))"
						   " ORDER BY j.queue, (-(j.priority::pg_catalog.int4)), j.run_at, j.id"
						   " LIMIT " CppAsString2(READY_LOOK_ROWS),
						   3, types),
				values, nulls, SPI_OK_SELECT);
	rel = table_open(fincore_table_oid("jobs"), AccessShareLock);
	if (SPI_processed >= READY_LOOK_ROWS || rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_tableam != GetHeapamTableAmRoutine())
		call->found_any = SPI_processed > 0;
	else
		for (uint64 i = 0; i < SPI_processed && !call->found_any; i++)
		{
			Datum		tid = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

			call->found_any = job_claimable(rel, (ItemPointer) DatumGetPointer(tid));
		}
	table_close(rel, AccessShareLock);
	pinned_exec(queue_plan(&due_plan,
						   "SELECT pg_catalog.min(j.run_at) FROM fincore.jobs j"
						   " WHERE j.queue OPERATOR(pg_catalog.=) $1 AND j.scheduled"
						   "   AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2)",
						   2, types),
				values, nulls, SPI_OK_SELECT);
	due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	call->out_time = isnull ? 0 : DatumGetTimestampTz(due);
	if (!call->found_any && call->out_time != 0 && call->out_time <= GetCurrentTimestamp())
		call->found_any = promote_due(call->queue, GetCurrentTimestamp()) > 0;
	SPI_finish();
}

/*
 * fincore.wait_for_jobs(queue, timeout): true as soon as a job of the queue is
 * claimable by the caller, false after timeout.  It sleeps on its latch; the
 * commit of a transaction that enqueued into the queue (or retried, rescued or
 * promoted jobs) wakes it through the wake-up board (wakeup.c), and it wakes by
 * itself when the first scheduled job falls due.
 */
/* One look of wait_for_jobs: is a job ready, and if not, when does the first scheduled one fall due? */
static bool
jobs_look(void *arg, TimestampTz *wake_at)
{
	QueueCall  *call = arg;

	call->paused_tenants = NULL;
	call->found_any = false;
	call->out_time = 0;
	if (!queue_is_paused(call->queue, &call->scope, &call->paused_tenants))
		queue_run(ready_check_work, call);
	*wake_at = call->out_time;
	return call->found_any;
}

PG_FUNCTION_INFO_V1(fincore_wait_for_jobs);
Datum
fincore_wait_for_jobs(PG_FUNCTION_ARGS)
{
	QueueCall	call = {0};
	int64		timeout_us;
	bool		ready;

	call.queue = queue_name_arg(fcinfo, 0);
	timeout_us = positive_interval_arg(fcinfo, 1, "timeout", WAIT_MAX);
	queue_scope(&call.scope);
	ready = wakeup_wait_for(wakeup_topic("queue", call.queue), timeout_us, jobs_look, &call,
							ERRCODE_FC_INVALID_JOB_OPTION, "wait_for_jobs");
	if (ready)
	{
		/* The next dequeue scans the queue from its start: the job may lie behind the hint. */
		DequeueHint *hint = dequeue_hint(call.queue, &call.scope);

		hint->last_full = 0;
	}
	PG_RETURN_BOOL(ready);
}
