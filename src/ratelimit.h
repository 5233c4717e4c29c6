/*
 * ratelimit.h — the shared-memory rate limiter (docs/rate-limits.md).
 *
 * Three parts, as in the rest of fincore: the GCRA decision in pure C over
 * integers (ratelimit_engine.c), the table of keys in shared memory with its
 * locks, eviction and the in-flight slots a backend holds
 * (ratelimit_shmem.c), and the SQL-callable functions (ratelimit_api.c).
 */
#ifndef FINCORE_RATELIMIT_H
#define FINCORE_RATELIMIT_H

#include "fincore.h"

/*
 * The longest span the limiter works with, in nanoseconds (about 31.7
 * years): an emission interval times burst + 1, or times a cost.  Theoretical
 * arrival times stay far inside int64 nanoseconds since 2000.
 */
#define RATE_LIMIT_MAX_SPAN_NS	INT64CONST(1000000000000000000)
/* The longest key, in bytes. */
#define RATE_LIMIT_KEY_MAX		1024

/* ---- the GCRA decision (ratelimit_engine.c) ---- */

/* A quota in the form GCRA works with (redis-cell's names). */
typedef struct RateQuota
{
	int64		emission_ns;	/* T = per / rate, rounded down to a nanosecond */
	int64		tolerance_ns;	/* delay variation tolerance: T * (burst + 1) */
	int64		increment_ns;	/* T * cost */
	int32		limit;			/* burst + 1 */
} RateQuota;

typedef struct RateDecision
{
	bool		allowed;
	bool		store;			/* allowed: new_tat is the key's theoretical arrival time now */
	int32		limit;
	int32		remaining;
	int64		retry_after_ns; /* -1: allowed, or never (cost > burst + 1) */
	int64		reset_after_ns;
	int64		new_tat;
} RateDecision;

/*
 * Build a quota; on bad arguments return false with *why set to a message
 * that names the value (the caller raises ZF752).
 */
extern bool rate_quota_make(int32 rate, int64 per_ns, int32 burst, int32 cost,
							RateQuota *q, char **why);
/* The decision for an arrival at now on a key whose TAT is tat (0: none). */
extern void rate_decide(const RateQuota *q, int64 tat, int64 now, RateDecision *d);

/* ---- the table in shared memory (ratelimit_shmem.c) ---- */

/* A key's identity: 128 bits of hash over its namespace and text. */
typedef struct RateKey
{
	uint64		hi;
	uint64		lo;
} RateKey;

typedef enum RateKeyKind
{
	RATE_KEY_GCRA = 1,
	RATE_KEY_CONCURRENCY = 2
} RateKeyKind;

extern void ratelimit_init(void);
/* Raise ZF751 unless fincore was loaded by shared_preload_libraries. */
extern void ratelimit_require_shmem(void);
/* The key of text in this database and, when there is one, the current tenant. */
extern RateKey ratelimit_key(RateKeyKind kind, const char *text, int len);
/* Decide an arrival at now_ns, under the key's partition lock. */
extern void ratelimit_throttle(RateKey key, const RateQuota *q, int64 now_ns, RateDecision *d);
/* Forget a key's state (rate or in-flight count); true if it had any. */
extern bool ratelimit_forget(RateKey key);
/* Take one in-flight slot of key if fewer than max are taken; held until the transaction ends. */
extern bool ratelimit_acquire(RateKey key, int32 max);
/* Give back one slot this backend holds; false if it holds none. */
extern bool ratelimit_release(RateKey key);

typedef struct RateLimitStats
{
	int64		slots;
	int64		used;			/* slots holding a key */
	int64		live;			/* of those, not idle: a TAT ahead of now or a slot in flight */
	int64		in_flight;
	int64		full_events;	/* arrivals that found no slot (fincore.rate_limit_when_full) */
} RateLimitStats;
extern void ratelimit_stats(int64 now_ns, RateLimitStats *s);

/* The wall clock in nanoseconds since 2000-01-01 (not the transaction's start). */
extern int64 ratelimit_now_ns(void);

#endif							/* FINCORE_RATELIMIT_H */
