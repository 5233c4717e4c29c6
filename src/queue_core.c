/*
 * queue_core.c — what every part of the job queue shares: argument validation, the
 * caller's scope, running statements as the tables' owner, moving jobs to the
 * archive, explaining a refused call, and the module's settings.
 */
#include "queue_int.h"

#include "access/detoast.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"

/* fincore.dequeue_rescan_interval, in milliseconds. */
int			dequeue_rescan_interval = 50;

/* ---- validation ---- */

void
queue_option_error(const char *msg, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}

/* The queue name as a C string, or ZF604. */
char *
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
int64
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

int32
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

int64
job_id_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("job_id must not be null")));
	return PG_GETARG_INT64(argno);
}

/* The optional attempt argument: 0 when NULL (attempts count from 1). */
int32
attempt_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		return 0;
	return int_arg_in_range(fcinfo, argno, "attempt", 1, PG_INT32_MAX);
}

void
check_payload(Datum payload, bool isnull)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_JOB_OPTION),
				 errmsg("job payload must not be null"),
				 errhint("Use '{}' or 'null'::jsonb for a job without data.")));
	check_payload_size(toast_raw_datum_size(payload), ERRCODE_FC_INVALID_JOB_OPTION, "a job payload");
}

void
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

void
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

/* ---- running statements ---- */

static Oid
jobs_relid(void)
{
	return fincore_table_oid("jobs");
}

SPIPlanPtr
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
SPIPlanPtr
slot_plan(SPIPlanPtr *plans, Datum slot, const char *sql_format, int nargs, Oid *types)
{
	int16		s = DatumGetInt16(slot);

	Assert(s >= 0 && s < ARCHIVE_SLOTS);
	if (plans[s] == NULL)
		queue_plan(&plans[s], psprintf(sql_format, (int) s), nargs, types);
	return plans[s];
}

void
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
void
planned_exec(SPIPlanPtr plan, Datum *values, const char *nulls, int expected, bool brin)
{
	/* A look-up through a BRIN index needs a bitmap scan; it is the rest that must go. */
	int			nest = fincore_indexed_plans_only(INDEXED_NO_JOINS | (brin ? 0 : INDEXED_NO_BITMAPS));

	queue_exec(plan, values, nulls, 0, expected);
	AtEOXact_GUC(true, nest);
}

/* The archive slot of a time: UTC day number since 2000-01-01, modulo 8. */
int16
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

void
queue_run(QueueWork work, QueueCall *call)
{
	QueueRun	run = {work, call};

	fincore_require_coordinator("a job");
	fincore_run_as_owner(jobs_relid(), queue_run_trampoline, &run);
}

/* ---- moving jobs to the archive ---- */

/* Move the jobs of ids (marked 'dead' in fincore.jobs) to the dead slot. */
void
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
void
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
