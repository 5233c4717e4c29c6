/*
 * cache_watch.h — backend caches of fincore's tables, made stale whenever a
 * table they were built from changes.
 *
 * A few modules keep rows of small fincore tables in backend memory: the
 * currency registry, fee schedules, the outbox's slots and settings, paused
 * queues, tenant memberships.  Each such cache has a CacheWatch naming the
 * relations it was read from.  A change reaches it two ways:
 *
 *   - a relcache invalidation of one of those relations (ALTER, TRUNCATE,
 *     DROP, and the statement triggers below), heard by every backend at its
 *     next command or transaction start; a reset of the whole relcache makes
 *     every cache stale;
 *   - the table's statement trigger, cache_watch_trigger(), which makes this
 *     backend's caches of the table stale at once (the rest of the
 *     transaction sees the change) and invalidates the table's relcache entry,
 *     so that the other backends hear of it when the transaction commits.
 *
 * A cache is valid only between cache_watch_begin(), called before its tables
 * are read, and the next change: a change heard while they are read (reading
 * processes invalidations) leaves it stale, and a read that failed halfway
 * (cache_watch_done() never reached) leaves it stale too.  The callbacks only
 * clear flags, so a cache is never freed under the code that is using it; it
 * is rebuilt at its next use.
 *
 * On Citus, a distributed or reference table's triggers fire on the node
 * that holds its shard, not in this backend: a cache of such a table serves
 * only the call that read it (docs/scale-out.md).
 */
#ifndef FINCORE_CACHE_WATCH_H
#define FINCORE_CACHE_WATCH_H

#include "postgres.h"

#include "fmgr.h"

#define CACHE_WATCH_MAX_RELATIONS	8

typedef struct CacheWatch
{
	int			nrelations;
	Oid			relations[CACHE_WATCH_MAX_RELATIONS];
	bool		valid;			/* no change heard since cache_watch_begin() */
	bool		loading;		/* between cache_watch_begin() and cache_watch_done() */
	bool		registered;		/* on the list the relcache callback walks */
	struct CacheWatch *next;
} CacheWatch;

/* The cache may be used as it is: read completely, and no change heard since. */
static inline bool
cache_watch_valid(const CacheWatch *watch)
{
	return watch->valid && !watch->loading;
}

/* Before reading the cache's tables: watch these relations, and count the cache valid from now. */
extern void cache_watch_begin(CacheWatch *watch, int nrelations, const Oid *relations);

/* After reading them completely. */
extern void cache_watch_done(CacheWatch *watch);

/* Make a cache stale (rebuild it at its next use). */
extern void cache_watch_stale(CacheWatch *watch);

/* The body of every "…_changed" statement trigger on a cached table. */
extern Datum cache_watch_trigger(FunctionCallInfo fcinfo);

#endif							/* FINCORE_CACHE_WATCH_H */
