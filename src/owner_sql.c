/*
 * owner_sql.c — the one way fincore runs SQL with its owner's rights.
 *
 * Application roles cannot write fincore's tables; fincore writes them for
 * them, as the tables' owner, either inside a SECURITY DEFINER function (whose
 * SET search_path clause pins the path) or by switching to the owner here.
 * Whatever runs with the owner's rights must not be steerable by the caller:
 * a role that can create objects in a schema on its own search_path could
 * otherwise plant an operator (= on uuid), a function (now()) or a domain that
 * then runs as the owner, usually a superuser.  So, as a class:
 *
 *   - every statement fincore prepares goes through fincore_prepare(), and
 *     every statement it runs as the owner runs inside
 *     fincore_run_as_owner(), which pins search_path to "pg_catalog, pg_temp"
 *     at a new GUC nest level (the way contrib's SECURITY DEFINER handling and
 *     pg_cron do it) for as long as the owner's rights are in effect;
 *   - the SQL texts also qualify their names, operators and casts
 *     (fincore.accounts, OPERATOR(pg_catalog.=), ::pg_catalog.int8), so a
 *     statement means the same thing whichever path is in force.
 *
 * Row level security is forced on fincore's tables, so it binds their owner
 * too when the owner is not a superuser (managed PostgreSQL).  fincore's own
 * statements name their tenant explicitly and must see every tenant's rows
 * (maintenance, look-ups before a tenant is chosen), so each table also has a
 * policy for its owner alone, fincore_owner, whose condition is
 * fincore.owner_context(): true only while the owner's rights were taken on by
 * a SECURITY DEFINER function or by fincore_run_as_owner(), never for a
 * session that merely logs in as the owner.  See docs/security.md.
 */
#include "fincore.h"

#include "owner_sql.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

/* fincore.owner_context: set by fincore's SECURITY DEFINER functions and fincore_run_as_owner(). */
static bool owner_context_setting = false;

void
owner_sql_init(void)
{
	DefineCustomBoolVariable("fincore.owner_context",
							 "Set while fincore runs SQL with its owner's rights (internal).",
							 "fincore's SECURITY DEFINER functions set it for their duration; it means "
							 "nothing outside a borrowed owner's rights.",
							 &owner_context_setting, false,
							 PGC_USERSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							 NULL, NULL, NULL);
}

void
fincore_spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

int
fincore_pin_search_path(void)
{
	int			nest = NewGUCNestLevel();

	(void) set_config_option("search_path", FINCORE_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

/* Pin search_path and mark fincore's owner context, at one new GUC nest level. */
static int
owner_context_begin(void)
{
	int			nest = fincore_pin_search_path();

	(void) set_config_option("fincore.owner_context", "on", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

void
fincore_unpin_search_path(int nest)
{
	AtEOXact_GUC(true, nest);
}

/*
 * Sequential scans, sorts and JIT off, and what flags name (INDEXED_NO_*), until
 * AtEOXact_GUC(true, the level returned).  A statement planned under it (a
 * kept generic plan is made at its first execution, and again after an
 * invalidation) walks its index whatever the table's statistics say: a
 * queue-like table (rows inserted and soon deleted) looks empty to the
 * planner, and a scan of its heap then reads every dead row since the last
 * vacuum; one bulk transaction makes a column look like a single value.  A
 * bitmap scan suits a range of an index (the outbox's batches) and a BRIN
 * index; a look-up by key wants the plain index scan.  No JIT: a kept plan's
 * estimate can be far above what it reads (a LIMIT given as a parameter counts
 * as a tenth of the table), and JIT would compile it again at every execution.
 */
int
fincore_indexed_plans_only(int flags)
{
	static const char *const always[] = {"enable_seqscan", "enable_sort", "jit"};
	static const char *const joins[] = {"enable_hashjoin", "enable_mergejoin", "enable_material"};
	int			nest = NewGUCNestLevel();

	for (size_t i = 0; i < lengthof(always); i++)
		(void) set_config_option(always[i], "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (flags & INDEXED_NO_BITMAPS)
		(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (flags & INDEXED_NO_JOINS)
		for (size_t i = 0; i < lengthof(joins); i++)
			(void) set_config_option(joins[i], "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

int
fincore_execute_indexed(SPIPlanPtr plan, Datum *values, const char *nulls, long tcount, int flags)
{
	int			nest = fincore_indexed_plans_only(flags);
	int			rc;

	rc = SPI_execute_plan(plan, values, nulls, false, tcount);
	AtEOXact_GUC(true, nest);
	return rc;
}

bool
fincore_citus_preloaded(void)
{
	const char *libs = GetConfigOption("shared_preload_libraries", true, false);

	return libs != NULL && strstr(libs, "citus") != NULL;
}

/* This Citus node's group: 0 on the coordinator (pg_dist_local_group, one row). */
static int32
citus_local_group(void)
{
	Oid			catalog = get_relname_relid("pg_dist_local_group", PG_CATALOG_NAMESPACE);
	AttrNumber	attnum;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	int32		group = 0;

	if (!OidIsValid(catalog) || (attnum = get_attnum(catalog, "groupid")) == InvalidAttrNumber)
		return 0;
	rel = table_open(catalog, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, attnum, RelationGetDescr(rel), &isnull);

		if (!isnull)
			group = DatumGetInt32(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return group;
}

void
fincore_require_coordinator(const char *what)
{
	if (fincore_citus_preloaded() && citus_local_group() != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_COORDINATOR_REQUIRED),
				 errmsg("%s cannot be written or read on a Citus worker", what),
				 errdetail("fincore's outbox and job queue are tables of the coordinator; a worker's copies reach no consumer."),
				 errhint("Connect to the coordinator (docs/scale-out.md), or turn the tenant's ledger events off to post transfers through a worker.")));
}

SPIPlanPtr
fincore_prepare(const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	SPIPlanPtr	plan;
	int			nest;

	/*
	 * Citus plans a statement on distributed tables only with its parameters'
	 * values (which shard, from the tenant): a custom plan at each execution.
	 */
	if (fincore_citus_preloaded())
		cursor_options = (cursor_options & ~CURSOR_OPT_GENERIC_PLAN) | CURSOR_OPT_CUSTOM_PLAN;
	nest = fincore_pin_search_path();
	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	fincore_unpin_search_path(nest);
	return plan;
}

static Oid
relation_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

void
fincore_run_as_owner(Oid relid, void (*fn) (void *), void *arg)
{
	Oid			save_userid;
	int			save_sec;
	int			nest;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(relation_owner(relid),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		nest = owner_context_begin();
		fn(arg);
		fincore_unpin_search_path(nest);
	}
	PG_CATCH();
	{
		/* The abort that follows unwinds the GUC nest level. */
		SetUserIdAndSecContext(save_userid, save_sec);
		PG_RE_THROW();
	}
	PG_END_TRY();
	SetUserIdAndSecContext(save_userid, save_sec);
}

/*
 * fincore.owner_context(): has fincore borrowed the owner's rights here, in
 * one of its SECURITY DEFINER functions or fincore_run_as_owner()?  Both the
 * setting and a borrowed identity are needed: the setting alone anyone can
 * SET.  Only the owner's policy (fincore_owner, TO the owner) calls it, so
 * the current user is the owner.
 */
PG_FUNCTION_INFO_V1(fincore_owner_context);
Datum
fincore_owner_context(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(owner_context_setting && (InLocalUserIdChange() || InSecurityRestrictedOperation()));
}

Oid
fincore_table_oid(const char *relname)
{
	Oid			relid = get_relname_relid(relname, get_namespace_oid("fincore", false));

	if (!OidIsValid(relid))
		elog(ERROR, "fincore.%s does not exist", relname);
	return relid;
}
