/*
 * ratelimit_api.c — the SQL functions of the rate limiter (sql/modules/ratelimit.sql).
 *
 * fincore.rate_limit() and its friends: argument checks, the key of the
 * current database and tenant, the decision from ratelimit_shmem.c, and the
 * result row.  Made to be called millions of times a second by one backend:
 * the result's tuple descriptor comes from the type cache.
 */
#include "ratelimit.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/typcache.h"
#include "utils/timestamp.h"

/* Raise ZF752 naming the bad argument. */
static inline void
check_rate_argument(bool ok, const char *why)
{
	if (unlikely(!ok))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_RATE_LIMIT),
				 errmsg("invalid rate limit: %s", why),
				 errhint("rate >= 1 arrivals per a positive interval of days or less; burst >= 0; cost >= 0 (docs/rate-limits.md).")));
}

/* The key's text, checked for length. */
static inline const char *
key_text(text *key, int *len)
{
	*len = VARSIZE_ANY_EXHDR(key);
	if (unlikely(*len == 0 || *len > RATE_LIMIT_KEY_MAX))
		check_rate_argument(false, psprintf("the key is %d bytes long, not 1 to %d", *len, RATE_LIMIT_KEY_MAX));
	return VARDATA_ANY(key);
}

/* An interval as nanoseconds; months are refused (their length varies). */
static int64
interval_ns(const Interval *per)
{
	int128		ns;

	if (per->month != 0)
		check_rate_argument(false, "per must be given in days or shorter units, not months or years");
	ns = ((int128) per->day * USECS_PER_DAY + per->time) * 1000;
	if (ns <= 0 || ns > RATE_LIMIT_MAX_SPAN_NS)
		check_rate_argument(false, psprintf("per %s is not a positive interval of at most 31 years",
											DatumGetCString(DirectFunctionCall1(interval_out, PointerGetDatum(per)))));
	return (int64) ns;
}

static void
quota_from_args(FunctionCallInfo fcinfo, RateQuota *q)
{
	char	   *why = NULL;

	if (!rate_quota_make(PG_GETARG_INT32(1), interval_ns(PG_GETARG_INTERVAL_P(2)),
						 PG_GETARG_INT32(3), PG_GETARG_INT32(4), q, &why))
		check_rate_argument(false, why);
}

/* A span in nanoseconds as an interval, rounded up to the microsecond (never early); NULL for -1. */
static Datum
ns_interval(int64 ns, bool *isnull)
{
	Interval   *iv;

	*isnull = ns < 0;
	if (*isnull)
		return (Datum) 0;
	iv = palloc(sizeof(Interval));
	iv->month = 0;
	iv->day = 0;
	iv->time = (ns + 999) / 1000;
	return IntervalPGetDatum(iv);
}

/*
 * The decision as a fincore.rate_limit_decision row.  Its tuple descriptor comes from the type
 * cache (a named type: nothing to build per execution, as OUT parameters would need).
 */
static Datum
decision_datum(FunctionCallInfo fcinfo, const RateDecision *d)
{
	Oid			typid = get_fn_expr_rettype(fcinfo->flinfo);
	TupleDesc	tupdesc;
	HeapTuple	tuple;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (!OidIsValid(typid))
		elog(ERROR, "fincore.rate_limit called without a result type");
	values[0] = BoolGetDatum(d->allowed);
	values[1] = Int32GetDatum(d->limit);
	values[2] = Int32GetDatum(d->remaining);
	values[3] = ns_interval(d->retry_after_ns, &nulls[3]);
	values[4] = ns_interval(d->reset_after_ns, &nulls[4]);
	tupdesc = lookup_rowtype_tupdesc(typid, -1);
	tuple = heap_form_tuple(tupdesc, values, nulls);
	ReleaseTupleDesc(tupdesc);
	return HeapTupleGetDatum(tuple);
}

static void
throttle_at(FunctionCallInfo fcinfo, int64 now_ns, RateDecision *d)
{
	RateQuota	q;
	int			len;
	const char *key;

	ratelimit_require_shmem();
	key = key_text(PG_GETARG_TEXT_PP(0), &len);
	quota_from_args(fcinfo, &q);
	ratelimit_throttle(ratelimit_key(RATE_KEY_GCRA, key, len), &q, now_ns, d);
}

/* fincore.rate_limit(key, rate, per, burst, cost): CL.THROTTLE at the wall clock. */
PG_FUNCTION_INFO_V1(fincore_rate_limit);
Datum
fincore_rate_limit(PG_FUNCTION_ARGS)
{
	RateDecision d;

	throttle_at(fcinfo, ratelimit_now_ns(), &d);
	PG_RETURN_DATUM(decision_datum(fcinfo, &d));
}

/* fincore._rate_limit_at(key, rate, per, burst, cost, at): the same at a given time (tests; owner only). */
PG_FUNCTION_INFO_V1(fincore_rate_limit_at);
Datum
fincore_rate_limit_at(PG_FUNCTION_ARGS)
{
	RateDecision d;
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(5);

	/* 2000 to 2200: a TAT of at + 31 years stays far inside int64 nanoseconds. */
	if (TIMESTAMP_NOT_FINITE(at) || at < 0 || at > INT64CONST(200) * 366 * USECS_PER_DAY)
		check_rate_argument(false, "at must be a time between 2000 and 2200");
	throttle_at(fcinfo, (int64) at * 1000, &d);
	PG_RETURN_DATUM(decision_datum(fcinfo, &d));
}

/* Seconds with up to six decimals, trailing zeros dropped: 0.25, 2. */
static char *
seconds_text(int64 ns)
{
	int64		us = (ns + 999) / 1000;
	char	   *s = psprintf(INT64_FORMAT ".%06d", us / USECS_PER_SEC, (int) (us % USECS_PER_SEC));
	char	   *end = s + strlen(s) - 1;

	while (*end == '0')
		*end-- = '\0';
	if (*end == '.')
		*end = '\0';
	return s;
}

/* fincore.rate_limit_or_raise(...): the remaining allowance, or ZF753 with the time to wait. */
PG_FUNCTION_INFO_V1(fincore_rate_limit_or_raise);
Datum
fincore_rate_limit_or_raise(PG_FUNCTION_ARGS)
{
	RateDecision d;
	int32		cost = PG_GETARG_INT32(4);

	throttle_at(fcinfo, ratelimit_now_ns(), &d);
	if (d.allowed)
		PG_RETURN_INT32(d.remaining);
	if (d.retry_after_ns >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_RATE_LIMITED),
				 errmsg("rate limit exceeded for key \"%s\"", text_to_cstring(PG_GETARG_TEXT_PP(0))),
				 errdetail("Retry after %s seconds (limit %d, cost %d).", seconds_text(d.retry_after_ns), d.limit, cost)));
	if (cost > d.limit)
		ereport(ERROR,
				(errcode(ERRCODE_FC_RATE_LIMITED),
				 errmsg("rate limit exceeded for key \"%s\"", text_to_cstring(PG_GETARG_TEXT_PP(0))),
				 errdetail("A cost of %d is more than the limit of %d (burst + 1): it is never allowed.", cost, d.limit)));
	ereport(ERROR,
			(errcode(ERRCODE_FC_RATE_LIMITED),
			 errmsg("rate limit exceeded for key \"%s\"", text_to_cstring(PG_GETARG_TEXT_PP(0))),
			 errdetail("The rate limiter's table is full of live keys and fincore.rate_limit_when_full is deny."),
			 errhint("Raise fincore.rate_limit_slots (at server start).")));
	PG_RETURN_NULL();			/* not reached */
}

/* fincore.rate_limit_reset(key): forget the key's allowance used so far. */
PG_FUNCTION_INFO_V1(fincore_rate_limit_reset);
Datum
fincore_rate_limit_reset(PG_FUNCTION_ARGS)
{
	int			len;
	const char *key;

	ratelimit_require_shmem();
	key = key_text(PG_GETARG_TEXT_PP(0), &len);
	PG_RETURN_BOOL(ratelimit_forget(ratelimit_key(RATE_KEY_GCRA, key, len)));
}

/* fincore.concurrency_acquire(key, max): one in-flight slot, until the transaction ends. */
PG_FUNCTION_INFO_V1(fincore_concurrency_acquire);
Datum
fincore_concurrency_acquire(PG_FUNCTION_ARGS)
{
	int			len;
	const char *key;
	int32		max = PG_GETARG_INT32(1);

	ratelimit_require_shmem();
	key = key_text(PG_GETARG_TEXT_PP(0), &len);
	if (max < 1)
		check_rate_argument(false, psprintf("max %d is not a positive number of slots", max));
	PG_RETURN_BOOL(ratelimit_acquire(ratelimit_key(RATE_KEY_CONCURRENCY, key, len), max));
}

/* fincore.concurrency_release(key): give one back before the transaction ends. */
PG_FUNCTION_INFO_V1(fincore_concurrency_release);
Datum
fincore_concurrency_release(PG_FUNCTION_ARGS)
{
	int			len;
	const char *key;

	ratelimit_require_shmem();
	key = key_text(PG_GETARG_TEXT_PP(0), &len);
	PG_RETURN_BOOL(ratelimit_release(ratelimit_key(RATE_KEY_CONCURRENCY, key, len)));
}

/* fincore.rate_limit_stats(): the table's occupancy. */
PG_FUNCTION_INFO_V1(fincore_rate_limit_stats);
Datum
fincore_rate_limit_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	RateLimitStats s;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	ratelimit_require_shmem();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	ratelimit_stats(ratelimit_now_ns(), &s);
	values[0] = Int64GetDatum(s.slots);
	values[1] = Int64GetDatum(s.used);
	values[2] = Int64GetDatum(s.live);
	values[3] = Int64GetDatum(s.in_flight);
	values[4] = Int64GetDatum(s.full_events);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* fincore._rate_quota_check(rate, per, burst, cost): ZF752 unless the limiter takes the quota. */
PG_FUNCTION_INFO_V1(fincore_rate_quota_check);
Datum
fincore_rate_quota_check(PG_FUNCTION_ARGS)
{
	RateQuota	q;
	char	   *why = NULL;

	for (int i = 0; i < 4; i++)
		if (PG_ARGISNULL(i))
			check_rate_argument(false, "rate, per, burst and cost must not be NULL");
	if (!rate_quota_make(PG_GETARG_INT32(0), interval_ns(PG_GETARG_INTERVAL_P(1)),
						 PG_GETARG_INT32(2), PG_GETARG_INT32(3), &q, &why))
		check_rate_argument(false, why);
	PG_RETURN_VOID();
}
