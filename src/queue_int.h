/*
 * queue_int.h — the job queue's private header: its limits, the structure
 * every call fills, and what its files share (queue_core.c: validation,
 * scope, statements, the archive; queue_enqueue.c: enqueue and pause;
 * queue_dequeue.c: claims; queue_jobs.c: complete, fail, heartbeat, cancel,
 * retry; queue_maint.c: lease rescue and statistics).
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
#ifndef FINCORE_QUEUE_INT_H
#define FINCORE_QUEUE_INT_H

#include "fincore.h"

#include "owner_sql.h"
#include "queue.h"
#include "tenancy.h"
#include "wakeup.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
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

/* The tenant a call acts on: the caller's, or every tenant for a trusted caller. */
typedef struct QueueScope
{
	bool		scoped;			/* false: every tenant */
	pg_uuid_t	tenant;
} QueueScope;

static inline Datum
scope_datum(QueueScope *scope, char *null)
{
	*null = scope->scoped ? ' ' : 'n';
	return UUIDPGetDatum(&scope->tenant);
}

typedef struct QueueCall QueueCall;
typedef void (*QueueWork) (QueueCall *call);

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

/* A job's position in claim order, as the ready log (wakeup.h) compares them. */
static inline void
claim_position(int32 neg_priority, TimestampTz run_at, int64 id, WorkPosition *out)
{
	out->k[0] = neg_priority;
	out->k[1] = run_at;
	out->k[2] = id;
}

/* One structure for every call: its arguments, its state and its outputs. */
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
	TimestampTz next_due;		/* a full scan: the first scheduled job's run_at (0: none) */
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

/* The columns of fincore.job_archive filled from a deleted jobs row d. */
#define ARCHIVE_INSERT \
	"INSERT INTO fincore.job_archive (id, tenant_id, queue, state, priority, run_at, attempts, " \
	"  max_attempts, worker, payload, unique_key, errors, result, created_at, finished_at, slot) "
#define ARCHIVE_FROM_D(state, result, slot) \
	"SELECT d.id, d.tenant_id, d.queue, " state ", d.priority, d.run_at, d.attempts, d.max_attempts, " \
	"  d.worker, d.payload, d.unique_key, d.errors, " result ", d.created_at, pg_catalog.now(), " slot " FROM d"

#define pinned_exec(plan, values, nulls, expected) planned_exec(plan, values, nulls, expected, false)

/* The lease condition of complete/fail/heartbeat: $attempt names the claim, or, without
 * it, no lease of the job may have expired (else two workers could hold it in turn). */
#define LEASE_HELD(att) \
	"j.state OPERATOR(pg_catalog.=) 'running' AND CASE WHEN " att "::pg_catalog.int4 IS NULL " \
	"THEN NOT coalesce(j.errors OPERATOR(pg_catalog.@>) '[{\"expired\": true}]', false) ELSE j.attempts OPERATOR(pg_catalog.=) " att " END"

/* fincore.dequeue_rescan_interval, in milliseconds (queue_core.c). */
extern int	dequeue_rescan_interval;

/* queue_core.c */
/* Run work(call) connected to SPI, as the tables' owner, with a pinned search_path. */
extern void queue_run(QueueWork work, QueueCall *call);
extern void planned_exec(SPIPlanPtr plan, Datum *values, const char *nulls, int expected, bool brin);
extern int16 archive_slot(TimestampTz t);
extern int32 attempt_arg(FunctionCallInfo fcinfo, int argno);
extern void bury_jobs(ArrayType *ids);
extern void check_payload(Datum payload, bool isnull);
extern void check_unique_key(const char *key);
extern int32 int_arg_in_range(FunctionCallInfo fcinfo, int argno, const char *what, int32 lo, int32 hi);
extern int64 job_id_arg(FunctionCallInfo fcinfo, int argno);
extern void job_refused(QueueCall *call, const char *action);
extern int64 positive_interval_arg(FunctionCallInfo fcinfo, int argno, const char *what, int64 max);
extern void queue_exec(SPIPlanPtr plan, Datum *values, const char *nulls, long count, int expected);
extern char *queue_name_arg(FunctionCallInfo fcinfo, int argno);
extern void queue_option_error(const char *msg, const char *hint);
extern SPIPlanPtr queue_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types);
extern void queue_scope(QueueScope *scope);
extern SPIPlanPtr slot_plan(SPIPlanPtr *plans, Datum slot, const char *sql_format, int nargs, Oid *types);

/* queue_dequeue.c */
extern uint64 promote_due(const char *queue, TimestampTz upto);
/* queue_jobs.c */
extern void complete_job(QueueCall *call);

/* queue_enqueue.c */
extern bool queue_is_paused(const char *queue, QueueScope *scope, ArrayType **tenants);

#endif							/* FINCORE_QUEUE_INT_H */
