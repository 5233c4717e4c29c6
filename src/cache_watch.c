/*
 * cache_watch.c — backend caches of fincore's tables, made stale whenever a
 * table they were built from changes (see cache_watch.h).
 *
 * One relcache callback serves every cache: PostgreSQL allows a backend only
 * a fixed number of them, and each module registering its own was the same
 * dozen lines five times.
 */
#include "postgres.h"

#include "cache_watch.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_namespace.h"
#include "commands/trigger.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

static CacheWatch *watches = NULL;
static bool callback_registered = false;

/* Every cache built from relid (every cache, for InvalidOid) is stale. */
static void
cache_watch_relation_changed(Datum arg pg_attribute_unused(), Oid relid)
{
	for (CacheWatch *w = watches; w != NULL; w = w->next)
	{
		if (relid == InvalidOid)
		{
			w->valid = false;
			continue;
		}
		for (int i = 0; i < w->nrelations; i++)
			if (w->relations[i] == relid)
				w->valid = false;
	}
}

/*
 * Whether relid is a Citus table (distributed or reference: in
 * pg_dist_partition).  Its rows live in shards, whose triggers fire on the
 * node that holds them, so a change made through another node never reaches
 * this backend's callbacks: a cache of such a table is never trusted.
 */
static bool
citus_table(Oid relid)
{
	Oid			catalog = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	AttrNumber	attnum;
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	bool		found;

	if (!OidIsValid(catalog) || (attnum = get_attnum(catalog, "logicalrelid")) == InvalidAttrNumber)
		return false;
	rel = table_open(catalog, AccessShareLock);
	ScanKeyInit(&key, attnum, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

void
cache_watch_begin(CacheWatch *watch, int nrelations, const Oid *relations)
{
	if (nrelations < 0 || nrelations > CACHE_WATCH_MAX_RELATIONS)
		elog(ERROR, "a fincore cache cannot watch %d relations", nrelations);
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(cache_watch_relation_changed, (Datum) 0);
		callback_registered = true;
	}
	if (!watch->registered)
	{
		watch->next = watches;
		watches = watch;
		watch->registered = true;
	}
	watch->nrelations = nrelations;
	for (int i = 0; i < nrelations; i++)
		watch->relations[i] = relations[i];
	watch->loading = true;
	watch->valid = true;
	/* On Citus, a cache of a distributed or reference table serves the call that read it only. */
	for (int i = 0; i < nrelations && watch->valid; i++)
		watch->valid = !citus_table(relations[i]);
}

void
cache_watch_done(CacheWatch *watch)
{
	watch->loading = false;
}

void
cache_watch_stale(CacheWatch *watch)
{
	watch->valid = false;
}

Datum
cache_watch_trigger(FunctionCallInfo fcinfo)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: not called as a trigger", get_func_name(fcinfo->flinfo->fn_oid))));
	cache_watch_relation_changed((Datum) 0, RelationGetRelid(trigdata->tg_relation));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
