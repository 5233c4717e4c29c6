/*
 * queue.c — the job queue: enqueue, dequeue with FOR UPDATE SKIP LOCKED,
 * leases, retries with backoff, dead jobs, unique jobs, pause/resume.
 *
 * Every statement runs through SPI with plans prepared once per backend,
 * as the owner of the queue tables (application roles cannot write them)
 * and with a search path of pg_catalog alone, so that a caller's
 * search_path can neither redirect a name nor change a cached plan.  Each
 * function scopes its statements to the caller's tenant itself; a role
 * that may call fincore.set_tenant() (a trusted role) and has no tenant set
 * acts on every tenant (a worker serving all of them).
 *
 * Storage (see sql/modules/queue.sql and docs/queue.md): fincore.jobs holds
 * unfinished jobs only.  Its claim index (queue, -priority, run_at, id)
 * does not contain the state, so a claim, a heartbeat and a lease rescue
 * change no indexed column and are HOT updates; jobs for later are kept out
 * of it (scheduled) until they are due.  Finished jobs are moved to
 * fincore.job_archive at once, whose completed slots are emptied by
 * TRUNCATE.
 *
 * The one thing an index cannot do cheaply is skip the entries of jobs that
 * were deleted while an old snapshot still needs them: they stay until
 * vacuum may remove them, and a long-held xmin makes every scan from the
 * start of the queue walk all of them.  So each backend remembers, per
 * queue, where it last found ready jobs (the hint) and resumes its scans
 * there.  A full scan from the start, which also picks up jobs that became
 * ready behind the hint (a higher priority, an earlier run_at, a rescued
 * lease, a promoted scheduled job), runs once fincore.dequeue_rescan_interval
 * has passed since the last one, and never sooner than ten times the last
 * one's duration, so that it takes at most a tenth of a worker's time
 * however long the graveyard grows.
 */
#include "fincore.h"

#include "cache_watch.h"
#include "owner_sql.h"
#include "queue.h"
#include "tenancy.h"

#include "access/detoast.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define QUEUE_NAME_MAX		128	/* room for webhook:<provider of 63> */
#define UNIQUE_KEY_MAX		EXTERNAL_ID_MAX_LEN
#define DEQUEUE_MAX			1000
#define MAX_ATTEMPTS_MAX	1000
#define LEASE_MAX			USECS_PER_DAY
#define BACKOFF_CAP_SECS	3600
#define RESCUE_BATCH		1000
#define ENQUEUE_RETRIES		5
#define ARCHIVE_SLOTS		8

/* fincore.dequeue_rescan_interval, in milliseconds. */
static int	dequeue_rescan_interval = 50;

/* ---- validation ---- */

static inline void
queue_option_error(const char *msg, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}

/* The queue name as a C string, or ZF604. */
static inline char *
queue_name_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *name;
	int			len;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_QUEUE_NAME),
				 errmsg("queue name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	len = strlen(name);
	if (len < 1 || len > QUEUE_NAME_MAX || !isalnum((unsigned char) name[0]) ||
		strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") != (size_t) len)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_QUEUE_NAME),
				 errmsg("invalid queue name: \"%s\"", name),
				 errhint("A queue name is 1 to %d letters, digits, '_', '.', ':' or '-', starting with a letter or digit.",
						 QUEUE_NAME_MAX)));
	return name;
}

/* An interval as microseconds, within (0, max]; ZF605 naming what otherwise. */
static inline int64
positive_interval_arg(FunctionCallInfo fcinfo, int argno, const char *what, int64 max)
{
	Interval   *iv;
	int64		usecs;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("%s must not be null", what)));
	iv = PG_GETARG_INTERVAL_P(argno);
	if (iv->month != 0 ||
		pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, iv->time, &usecs) || usecs <= 0 || usecs > max)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("invalid %s: %s", what,
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errhint("The %s must be positive, at most %s, and expressed without months.", what,
						 max == USECS_PER_DAY ? "1 day" : "1 year")));
	return usecs;
}

static inline int32
int_arg_in_range(FunctionCallInfo fcinfo, int argno, const char *what, int32 lo, int32 hi)
{
	int32		v;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("%s must not be null", what)));
	v = PG_GETARG_INT32(argno);
	if (v < lo || v > hi)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("invalid %s: %d", what, v),
				 errhint("The %s must be between %d and %d.", what, lo, hi)));
	return v;
}

static inline int64
job_id_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("job_id must not be null")));
	return PG_GETARG_INT64(argno);
}

/* The optional attempt argument: 0 when NULL (attempts count from 1). */
static inline int32
attempt_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		return 0;
	return int_arg_in_range(fcinfo, argno, "attempt", 1, PG_INT32_MAX);
}

static inline void
check_payload(Datum payload, bool isnull)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("job payload must not be null"),
				 errhint("Use '{}' or 'null'::jsonb for a job without data.")));
	check_payload_size(toast_raw_datum_size(payload), ERRCODE_FC_INVALID_JOB_OPTION, "a job payload");
}

static inline void
check_unique_key(const char *key)
{
	int			len = strlen(key);

	if (len < 1 || len > UNIQUE_KEY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("invalid unique_key: \"%s\"", key),
				 errhint("A unique key is 1 to %d bytes; NULL means the job is not unique.", UNIQUE_KEY_MAX)));
}

/* ---- scope: the caller's tenant, or every tenant for a trusted caller ---- */

typedef struct QueueScope
{
	bool		scoped;			/* false: every tenant */
	pg_uuid_t	tenant;
} QueueScope;

/* May the caller call fincore.set_tenant()?  Then it may act as any tenant anyway. */
static bool
caller_is_trusted(void)
{
	Oid			argtypes[1] = {UUIDOID};
	Oid			fn = LookupFuncName(list_make2(makeString(pstrdup("fincore")),
											   makeString(pstrdup("set_tenant"))),
									1, argtypes, true);

	return OidIsValid(fn) && pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) == ACLCHECK_OK;
}

static void
queue_scope(QueueScope *scope)
{
	scope->scoped = true;
	if (tenancy_current_tenant(&scope->tenant))
		return;
	if (caller_is_trusted())
	{
		scope->scoped = false;
		memset(&scope->tenant, 0, sizeof(pg_uuid_t));
		return;
	}
	tenancy_require_tenant(&scope->tenant);	/* raises ZF203 */
}

static inline Datum
scope_datum(QueueScope *scope, char *null)
{
	*null = scope->scoped ? ' ' : 'n';
	return UUIDPGetDatum(&scope->tenant);
}

/* ---- running statements ---- */

static Oid
jobs_relid(void)
{
	return fincore_table_oid("jobs");
}

typedef struct QueueCall QueueCall;
typedef void (*QueueWork) (QueueCall *call);

/* Run work(call) connected to SPI, as the tables' owner, with a pinned search_path. */
static void
queue_run(QueueWork work, QueueCall *call);

static SPIPlanPtr
queue_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	if (*plan == NULL)
	{
		/* One generic plan per backend: planning at every call would cost more than the statement. */
		*plan = fincore_prepare(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
	}
	return *plan;
}

/*
 * The plan of sql_format (with one %d for the slot) for an archive slot:
 * writing the slot's partition directly spares every completion the
 * partition routing of an INSERT into fincore.job_archive.
 */
static SPIPlanPtr
slot_plan(SPIPlanPtr *plans, Datum slot, const char *sql_format, int nargs, Oid *types)
{
	int16		s = DatumGetInt16(slot);

	Assert(s >= 0 && s < ARCHIVE_SLOTS);
	if (plans[s] == NULL)
		queue_plan(&plans[s], psprintf(sql_format, (int) s), nargs, types);
	return plans[s];
}

static void
queue_exec(SPIPlanPtr plan, Datum *values, const char *nulls, long count, int expected)
{
	int			rc = SPI_execute_plan(plan, values, nulls, false, count);

	if (rc != expected)
		elog(ERROR, "fincore queue statement failed: %s", SPI_result_code_string(rc));
}

/*
 * Run a claim with the only plan that suits it whatever the statistics say.
 * The hot table is small and churns, so its statistics often describe a table
 * of a few rows, for which a bitmap scan and a sort look as cheap as an
 * ordered index scan that stops at the limit; with a backlog of a million
 * jobs the former reads and sorts all of them.  The settings hold while the
 * plan is made (the first time, and again after an invalidation).  The
 * archive is the same story at another scale: a look-up by id must use its
 * BRIN index, never read millions of finished jobs.
 */
static void
planned_exec(SPIPlanPtr plan, Datum *values, const char *nulls, int expected, bool brin)
{
	static const char *const off[] = {"enable_seqscan", "enable_sort", "enable_hashjoin",
	"enable_mergejoin", "enable_material", "enable_bitmapscan"};
	int			nest = NewGUCNestLevel();

	/* A look-up through a BRIN index needs a bitmap scan; it is the rest that must go. */
	for (size_t i = 0; i < lengthof(off) - (brin ? 1 : 0); i++)
		(void) set_config_option(off[i], "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	queue_exec(plan, values, nulls, 0, expected);
	AtEOXact_GUC(true, nest);
}

#define pinned_exec(plan, values, nulls, expected) planned_exec(plan, values, nulls, expected, false)

static inline bool
spi_bool(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return !isnull && DatumGetBool(d);
}

static inline int64
spi_int64(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

static inline int32
spi_int32(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

/* Text column as a C string in the caller's (upper) memory context. */
static inline char *
spi_text(int row, int col)
{
	char	   *s = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
	char	   *copy = SPI_palloc(s ? strlen(s) + 1 : 1);

	strcpy(copy, s ? s : "");
	return copy;
}

/* The archive slot of a time: UTC day number since 2000-01-01, modulo 8. */
static int16
archive_slot(TimestampTz t)
{
	int64		day;

	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("finished_at must be a finite time")));
	day = t / USECS_PER_DAY - (t % USECS_PER_DAY < 0 ? 1 : 0);
	return (int16) (((day % ARCHIVE_SLOTS) + ARCHIVE_SLOTS) % ARCHIVE_SLOTS);
}

/* ---- one structure for every call ---- */

struct QueueCall
{
	QueueScope	scope;
	int64		job_id;
	int32		attempt;		/* 0: not given */
	char	   *queue;
	/* enqueue */
	Datum		payload;
	Datum		payloads;		/* jsonb[] */
	TimestampTz run_at;
	int16		priority;
	int32		max_attempts;
	char	   *unique_key;		/* NULL: not unique */
	/* dequeue */
	int32		max;
	Interval	lease;
	char	   *worker;
	bool		hinted;
	int32		hint_neg_priority;
	TimestampTz hint_run_at;
	int64		hint_id;
	ArrayType  *paused_tenants;
	ReturnSetInfo *rsinfo;
	bool		found_any;
	int32		first_neg_priority;
	TimestampTz first_run_at;
	int64		first_id;
	/* complete / fail / heartbeat */
	Datum		result;
	bool		result_null;
	char	   *error;
	bool		retry_at_given;
	TimestampTz retry_at;
	Interval	extend;
	/* outputs */
	int64		out_id;
	TimestampTz out_time;
	bool		out_null;
	char	   *out_text;
	int64		out_count;
	int64		budget_us;
};

typedef struct QueueRun
{
	QueueWork	work;
	QueueCall  *call;
} QueueRun;

static void
queue_run_trampoline(void *arg)
{
	QueueRun   *run = arg;

	run->work(run->call);
}

static void
queue_run(QueueWork work, QueueCall *call)
{
	QueueRun	run = {work, call};

	fincore_run_as_owner(jobs_relid(), queue_run_trampoline, &run);
}

/* ---- moving jobs to the archive ---- */

/* The columns of fincore.job_archive filled from a deleted jobs row d. */
#define ARCHIVE_INSERT \
	"INSERT INTO fincore.job_archive (id, tenant_id, queue, state, priority, run_at, attempts, " \
	"  max_attempts, worker, payload, unique_key, errors, result, created_at, finished_at, slot) "
#define ARCHIVE_FROM_D(state, result, slot) \
	"SELECT d.id, d.tenant_id, d.queue, " state ", d.priority, d.run_at, d.attempts, d.max_attempts, " \
	"  d.worker, d.payload, d.unique_key, d.errors, " result ", d.created_at, pg_catalog.now(), " slot " FROM d"

/* Move the jobs of ids (marked 'dead' in fincore.jobs) to the dead slot. */
static void
bury_jobs(ArrayType *ids)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1] = {PointerGetDatum(ids)};

	queue_plan(&plan,
			   "WITH d AS (DELETE FROM fincore.jobs j WHERE j.id OPERATOR(pg_catalog.=) ANY ($1) AND j.state OPERATOR(pg_catalog.=) 'dead' RETURNING j.*) "
			   ARCHIVE_INSERT ARCHIVE_FROM_D("'dead'", "NULL", "-1"),
			   1, types);
	queue_exec(plan, values, NULL, 0, SPI_OK_INSERT);
}

/* ---- diagnosing a refused complete / fail / heartbeat ---- */

/* Raise the error that explains why job_id is not running under the caller's lease. */
static void
job_refused(QueueCall *call, const char *action)
{
	static SPIPlanPtr hot_plan = NULL;
	static SPIPlanPtr archive_plan = NULL;
	Oid			types[2] = {INT8OID, UUIDOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};

	values[0] = Int64GetDatum(call->job_id);
	values[1] = scope_datum(&call->scope, &nulls[1]);
	queue_plan(&hot_plan,
			   "SELECT j.state, j.attempts, coalesce(j.errors OPERATOR(pg_catalog.@>) '[{\"expired\": true}]', false), "
			   "       j.state OPERATOR(pg_catalog.=) 'ready' AND j.run_at OPERATOR(pg_catalog.>) pg_catalog.now() "
			   "  FROM fincore.jobs j WHERE j.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR j.tenant_id OPERATOR(pg_catalog.=) $2)",
			   2, types);
	queue_exec(hot_plan, values, nulls, 1, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		char	   *state = spi_text(0, 1);
		int32		attempts = spi_int32(0, 2);
		bool		expired = spi_bool(0, 3);

		if (strcmp(state, "running") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FC_LEASE_LOST),
					 errmsg("cannot %s job %lld: it is not running", action, (long long) call->job_id),
					 errdetail("The job is %s again after attempt %d (its lease expired or it failed).",
							   spi_bool(0, 4) ? "scheduled" : "ready", attempts),
					 errhint("Keep a lease alive with fincore.heartbeat() while a job runs.")));
		if (call->attempt != 0 && call->attempt != attempts)
			ereport(ERROR,
					(errcode(ERRCODE_FC_LEASE_LOST),
					 errmsg("cannot %s job %lld as attempt %d: it is running as attempt %d",
							action, (long long) call->job_id, call->attempt, attempts),
					 call->attempt < attempts ?
					 errdetail("The lease of attempt %d expired and another worker claimed the job.", call->attempt) : 0));
		if (call->attempt == 0 && expired)
			ereport(ERROR,
					(errcode(ERRCODE_FC_LEASE_LOST),
					 errmsg("cannot %s job %lld without naming the attempt: a lease of this job expired",
							action, (long long) call->job_id),
					 errdetail("It is running as attempt %d; an earlier worker may still be at work on it.", attempts),
					 errhint("Pass the attempt that fincore.dequeue() returned, e.g. fincore.%s(job_id, ..., attempt => %d).",
							 action, attempts)));
		elog(ERROR, "job %lld is running but could not be changed", (long long) call->job_id);
	}
	queue_plan(&archive_plan,
			   "SELECT a.state FROM fincore.job_archive a WHERE a.id OPERATOR(pg_catalog.=) $1 AND ($2::pg_catalog.uuid IS NULL OR a.tenant_id OPERATOR(pg_catalog.=) $2)",
			   2, types);
	planned_exec(archive_plan, values, nulls, SPI_OK_SELECT, true);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_JOB_FINISHED),
				 errmsg("cannot %s job %lld: it is already %s", action, (long long) call->job_id, spi_text(0, 1))));
	ereport(ERROR,
			(errcode(ERRCODE_FC_JOB_NOT_FOUND),
			 errmsg("job %lld does not exist", (long long) call->job_id),
			 call->scope.scoped ? errdetail("Only the current tenant's jobs are visible.") : 0));
}

/* The lease condition of complete/fail/heartbeat: $attempt names the claim, or, without
 * it, no lease of the job may have expired (else two workers could hold it in turn). */
#define LEASE_HELD(att) \
	"j.state OPERATOR(pg_catalog.=) 'running' AND CASE WHEN " att "::pg_catalog.int4 IS NULL " \
	"THEN NOT coalesce(j.errors OPERATOR(pg_catalog.@>) '[{\"expired\": true}]', false) ELSE j.attempts OPERATOR(pg_catalog.=) " att " END"

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
static bool
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
static uint64
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
	queue_run(complete_work, &call);
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
				   "WHERE j.id OPERATOR(pg_catalog.=) $1",
				   3, types);
		queue_exec(retry_plan, values, nulls, 0, SPI_OK_UPDATE);
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
	PG_RETURN_VOID();
}

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
		uint64		n = promote_due(NULL);

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

/* ---- module initialisation ---- */

void
queue_init(void)
{
	DefineCustomIntVariable("fincore.dequeue_rescan_interval",
							"How often (ms) dequeue scans a queue from its start instead of resuming where it last found jobs.",
							"A full scan also finds jobs that became ready behind that position (a higher priority, an "
							"earlier run_at, a rescued lease). It never runs more often than ten times its own duration. "
							"0: every dequeue scans from the start (exact order, but slow while an old snapshot holds back vacuum).",
							&dequeue_rescan_interval, 50, 0, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
}
