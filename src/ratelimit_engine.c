/*
 * ratelimit_engine.c — the generic cell rate algorithm, in integers.
 *
 * One number per key, its theoretical arrival time (TAT): when the key's
 * allowance would be whole again at the quota's steady rate.  An arrival of
 * cost c at now moves the TAT to max(TAT, now) + c * T and is allowed when
 * that is no more than burst + 1 emission intervals ahead of now.  These are
 * the semantics of redis-cell's CL.THROTTLE (limit = burst + 1; remaining,
 * retry_after and reset_after as it computes them), in nanoseconds, with no
 * floating point: remaining is an integer division, as CL.THROTTLE's cast.
 * Nothing here touches PostgreSQL's state: the engine is pure C over structs.
 */
#include "ratelimit.h"

bool
rate_quota_make(int32 rate, int64 per_ns, int32 burst, int32 cost, RateQuota *q, char **why)
{
	int128		tolerance;
	int128		increment;

	if (rate < 1)
	{
		*why = psprintf("rate %d is not a positive number of arrivals", rate);
		return false;
	}
	if (per_ns <= 0)
	{
		*why = psprintf("per must be a positive interval");
		return false;
	}
	if (burst < 0 || burst == PG_INT32_MAX)
	{
		*why = psprintf("burst %d is not between 0 and %d", burst, PG_INT32_MAX - 1);
		return false;
	}
	if (cost < 0)
	{
		*why = psprintf("cost %d is negative", cost);
		return false;
	}
	q->emission_ns = per_ns / rate;
	if (q->emission_ns < 1)
	{
		*why = psprintf("rate %d per " INT64_FORMAT " ns is more than one arrival a nanosecond", rate, per_ns);
		return false;
	}
	tolerance = (int128) q->emission_ns * ((int128) burst + 1);
	increment = (int128) q->emission_ns * cost;
	if (tolerance > RATE_LIMIT_MAX_SPAN_NS || increment > RATE_LIMIT_MAX_SPAN_NS)
	{
		*why = psprintf("burst %d or cost %d at one arrival per " INT64_FORMAT " ns spans more than 31 years",
						burst, cost, q->emission_ns);
		return false;
	}
	q->tolerance_ns = (int64) tolerance;
	q->increment_ns = (int64) increment;
	q->limit = burst + 1;
	return true;
}

void
rate_decide(const RateQuota *q, int64 tat, int64 now, RateDecision *d)
{
	int64		base = Max(tat, now);	/* a TAT in the past (or none) counts from now */
	int64		new_tat = base + q->increment_ns;
	int64		allow_at = new_tat - q->tolerance_ns;
	int64		ttl;
	int64		next;

	d->limit = q->limit;
	d->new_tat = new_tat;
	d->retry_after_ns = -1;
	if (now < allow_at)
	{
		d->allowed = false;
		d->store = false;
		/* A cost above burst + 1 is never allowed: no time to wait for. */
		if (q->increment_ns <= q->tolerance_ns)
			d->retry_after_ns = allow_at - now;
		ttl = base - now;
	}
	else
	{
		d->allowed = true;
		d->store = true;
		ttl = new_tat - now;
	}
	next = q->tolerance_ns - ttl;
	d->remaining = next > -q->emission_ns ? (int32) (next / q->emission_ns) : 0;
	d->reset_after_ns = ttl;
}
