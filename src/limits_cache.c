/*
 * limits_cache.c — a tenant's enabled limits and rules, read once and kept
 * per backend until fincore.limits or fincore.rules changes (cache_watch.h):
 * definitions parsed, rules compiled, and each aggregate of a rule made a
 * limit without a maximum.
 */
#include "limits_int.h"

static MemoryContext limits_cxt = NULL;
static HTAB *limits_cache = NULL;
static CacheWatch limits_watch;

PG_FUNCTION_INFO_V1(fincore_limits_changed);
Datum
fincore_limits_changed(PG_FUNCTION_ARGS)
{
	return cache_watch_trigger(fcinfo);
}

static void
limits_cache_reset(int nrelids, Oid *relids)
{
	HASHCTL		ctl;

	/*
	 * A batch further up the stack (a user's trigger can transfer) may still
	 * use the old definitions: they go with the transaction, not now.
	 */
	if (limits_cxt != NULL)
		MemoryContextSetParent(limits_cxt, TopTransactionContext);
	limits_cxt = AllocSetContextCreate(TopMemoryContext, "fincore limits", ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(LimitSet);
	ctl.hcxt = limits_cxt;
	limits_cache = hash_create("fincore limits", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	cache_watch_begin(&limits_watch, nrelids, relids);
}

static int32 *
int4_array(Datum d, int *n)
{
	Datum	   *elems;
	int32	   *out;

	deconstruct_array(DatumGetArrayTypeP(d), INT4OID, 4, true, TYPALIGN_INT, &elems, NULL, n);
	out = palloc(sizeof(int32) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		out[i] = DatumGetInt32(elems[i]);
	return out;
}

static LimitWindow
window_from_text(const char *w)
{
	if (strcmp(w, "transaction") == 0)
		return LIMIT_WINDOW_TRANSACTION;
	if (strcmp(w, "day") == 0)
		return LIMIT_WINDOW_DAY;
	if (strcmp(w, "week") == 0)
		return LIMIT_WINDOW_WEEK;
	if (strcmp(w, "month") == 0)
		return LIMIT_WINDOW_MONTH;
	if (strcmp(w, "year") == 0)
		return LIMIT_WINDOW_YEAR;
	if (strcmp(w, "lifetime") == 0)
		return LIMIT_WINDOW_LIFETIME;
	if (strcmp(w, "trailing") == 0)
		return LIMIT_WINDOW_TRAILING;
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_LIMIT),
			 errmsg("invalid limit: window_kind \"%s\" is not transaction, day, week, month, year, lifetime or trailing", w)));
	pg_unreachable();
}

/* Fill def's window (and time zone) from their SQL values (also for limits_api.c). */
void
limits_def_window(LimitDef *def, text *window_kind, bool seconds_null, int32 seconds, text *time_zone)
{
	char	   *tzname = time_zone ? text_to_cstring(time_zone) : "UTC";

	def->window = window_from_text(text_to_cstring(window_kind));
	if (def->window == LIMIT_WINDOW_TRAILING)
	{
		if (seconds_null || seconds < 10 || seconds > 31 * SECS_PER_DAY)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_LIMIT),
					 errmsg("invalid limit: window_seconds %s is outside 10 seconds to 31 days (2678400)",
							seconds_null ? "NULL" : psprintf("%d", seconds))));
		def->window_usecs = (int64) seconds * USECS_PER_SEC;
	}
	def->tz = pg_tzset(tzname);
	if (def->tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_LIMIT),
				 errmsg("invalid limit: time_zone \"%s\" is not a time zone name such as Europe/Berlin", tzname)));
}

/* Read the tenant's enabled rules into set (in cxt), compiled. */
static void
load_rules(LimitSet *set, MemoryContext cxt)
{
	static SPIPlanPtr plan = NULL;
	Datum		arg = UUIDPGetDatum(&set->tenant);
	MemoryContext old;

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = ledger_prepare("SELECT r.id, r.name, r.condition, r.outcome, r.mode, r.time_zone, r.review_timeout "
							  "  FROM fincore.rules r "
							  " WHERE r.tenant_id OPERATOR(pg_catalog.=) $1 AND r.enabled "
							  " ORDER BY r.name", 1, types);
	}
	if (SPI_execute_snapshot(plan, &arg, NULL, GetLatestSnapshot(), InvalidSnapshot, true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: loading rules failed");
	old = MemoryContextSwitchTo(cxt);
	set->nrules = (int) SPI_processed;
	set->rules = palloc0(sizeof(RuleDef) * Max(set->nrules, 1));
	for (int i = 0; i < set->nrules; i++)
	{
		RuleDef    *r = &set->rules[i];
		bool		isnull;
		char	   *tzname;

		r->id = *DatumGetUUIDP(spi_value(i, 1, &isnull));
		r->name = TextDatumGetCString(spi_value(i, 2, &isnull));
		r->condition = rules_compile(DatumGetJsonbPCopy(spi_value(i, 3, &isnull)));
		tzname = TextDatumGetCString(spi_value(i, 4, &isnull));
		r->outcome = strcmp(tzname, "reject") == 0 ? RULE_REJECT : strcmp(tzname, "review") == 0 ? RULE_REVIEW : RULE_FLAG;
		r->review_timeout = *DatumGetIntervalP(spi_value(i, 7, &isnull));
		r->active = strcmp(TextDatumGetCString(spi_value(i, 5, &isnull)), "active") == 0;
		tzname = TextDatumGetCString(spi_value(i, 6, &isnull));
		r->tz = pg_tzset(tzname);
		if (r->tz == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_RULE),
					 errmsg("invalid rule: time_zone \"%s\" of rule \"%s\" is not a time zone", tzname, r->name)));
	}
	/* Each aggregate of a rule counts like a limit without a maximum: after the tenant's limits. */
	for (int i = 0; i < set->nrules; i++)
	{
		RuleNode  **aggs = NULL;
		int			n = rules_aggregates(set->rules[i].condition, &aggs);

		if (n == 0)
			continue;
		set->defs = repalloc(set->defs, sizeof(LimitDef) * (set->ndefs + n));
		for (int k = 0; k < n; k++)
		{
			aggs[k]->agg_index = set->ndefs;
			limits_aggregate_def(&set->defs[set->ndefs++], &set->rules[i].id, k, aggs[k]->agg,
								 aggs[k]->agg_side, aggs[k]->agg_window_usecs, aggs[k]->agg_calendar,
								 set->rules[i].tz);
		}
	}
	MemoryContextSwitchTo(old);
}

/* Read the tenant's enabled limits into set (in cxt). */
static void
load_limit_set(LimitSet *set, MemoryContext cxt)
{
	static SPIPlanPtr plan = NULL;
	Datum		arg = UUIDPGetDatum(&set->tenant);
	MemoryContext old;

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = ledger_prepare("SELECT l.id, l.name, l.scope, l.account_id, l.account_code, l.customer, l.per, "
							  "       l.metric, l.currency, l.window_kind, l.window_seconds, l.time_zone, "
							  "       l.direction, l.transfer_codes, l.counterparty_accounts, "
							  "       l.counterparty_codes, l.max_value, l.restore_on_reversal, l.counting_since, "
							  "       l.alert_at "
							  "  FROM fincore.limits l "
							  " WHERE l.tenant_id OPERATOR(pg_catalog.=) $1 AND l.enabled "
							  " ORDER BY l.id", 1, types);
	}
	/* As new as the invalidations already heard, whatever the transaction's snapshot: it is cached. */
	if (SPI_execute_snapshot(plan, &arg, NULL, GetLatestSnapshot(), InvalidSnapshot, true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: loading limits failed");
	old = MemoryContextSwitchTo(cxt);
	set->ndefs = (int) SPI_processed;
	set->defs = palloc0(sizeof(LimitDef) * Max(set->ndefs, 1));
	set->has_customer = false;
	for (int i = 0; i < set->ndefs; i++)
	{
		LimitDef   *def = &set->defs[i];
		bool		isnull,
					secs_null;
		char	   *s;
		Datum		d;
		text	   *cur;
		int32		secs;

		def->id = *DatumGetUUIDP(spi_value(i, 1, &isnull));
		def->name = TextDatumGetCString(spi_value(i, 2, &isnull));
		s = TextDatumGetCString(spi_value(i, 3, &isnull));
		def->scope = strcmp(s, "account") == 0 ? LIMIT_SCOPE_ACCOUNT
			: strcmp(s, "account_code") == 0 ? LIMIT_SCOPE_ACCOUNT_CODE
			: strcmp(s, "customer") == 0 ? LIMIT_SCOPE_CUSTOMER : LIMIT_SCOPE_TENANT;
		d = spi_value(i, 4, &isnull);
		if (!isnull)
			def->account = *DatumGetUUIDP(d);
		d = spi_value(i, 5, &isnull);
		def->account_code = isnull ? 0 : DatumGetInt32(d);
		d = spi_value(i, 6, &isnull);
		def->customer = isnull ? NULL : TextDatumGetCString(d);
		def->per_account = strcmp(TextDatumGetCString(spi_value(i, 7, &isnull)), "account") == 0;
		def->counts = strcmp(TextDatumGetCString(spi_value(i, 8, &isnull)), "count") == 0;
		d = spi_value(i, 9, &isnull);
		def->has_currency = !isnull;
		if (!isnull)
		{
			cur = DatumGetTextPP(d);
			def->currency = currency_pack_or_error(VARDATA_ANY(cur), VARSIZE_ANY_EXHDR(cur));
		}
		d = spi_value(i, 11, &secs_null);
		secs = secs_null ? 0 : DatumGetInt32(d);
		limits_def_window(def, DatumGetTextPP(spi_value(i, 10, &isnull)), secs_null, secs,
				   DatumGetTextPP(spi_value(i, 12, &isnull)));
		d = spi_value(i, 13, &isnull);
		def->direction = isnull ? 0 : TextDatumGetCString(d)[0];
		d = spi_value(i, 14, &isnull);
		if (!isnull)
			def->codes = int4_array(d, &def->ncodes);
		d = spi_value(i, 15, &isnull);
		if (!isnull)
		{
			Datum	   *elems;

			deconstruct_array(DatumGetArrayTypeP(d), UUIDOID, UUID_LEN, false, TYPALIGN_CHAR,
							  &elems, NULL, &def->ncp_accounts);
			def->cp_accounts = palloc(sizeof(pg_uuid_t) * Max(def->ncp_accounts, 1));
			for (int k = 0; k < def->ncp_accounts; k++)
				def->cp_accounts[k] = *DatumGetUUIDP(elems[k]);
		}
		d = spi_value(i, 16, &isnull);
		if (!isnull)
			def->cp_codes = int4_array(d, &def->ncp_codes);
		def->max = DatumGetInt64(spi_value(i, 17, &isnull));
		def->restore_on_reversal = DatumGetBool(spi_value(i, 18, &isnull));
		def->counting_since = DatumGetTimestampTz(spi_value(i, 19, &isnull));
		d = spi_value(i, 20, &isnull);
		def->alert_at = isnull ? 0 : DatumGetInt64(d);
		if (def->scope == LIMIT_SCOPE_CUSTOMER)
			set->has_customer = true;
	}
	MemoryContextSwitchTo(old);
	load_rules(set, cxt);
}

/* The tenant's enabled limits and rules: cached until fincore.limits or fincore.rules changes. */
const LimitSet *
limits_tenant_set(const pg_uuid_t *tenant)
{
	LimitSet   *set,
			   *entry;

	if (!cache_watch_valid(&limits_watch) || limits_cache == NULL)
	{
		Oid			relids[2] = {fincore_table_oid("limits"), fincore_table_oid("rules")};

		limits_cache_reset(2, relids);
		cache_watch_done(&limits_watch);
	}
	set = hash_search(limits_cache, tenant, HASH_FIND, NULL);
	if (set != NULL)
		return set;

	/*
	 * Reading may hear of a change to fincore.limits: then the cache is stale
	 * and what was read serves this call only (its memory goes with the
	 * transaction when the cache is rebuilt).
	 */
	set = MemoryContextAllocZero(limits_cxt, sizeof(LimitSet));
	set->tenant = *tenant;
	load_limit_set(set, limits_cxt);
	if (!cache_watch_valid(&limits_watch))
		return set;
	entry = hash_search(limits_cache, tenant, HASH_ENTER, NULL);
	*entry = *set;
	return entry;
}

/* Is fincore.limits installed (not between a 0.1.0 library and its ALTER EXTENSION UPDATE)? */
bool
limits_installed(void)
{
	Oid			nsp = get_namespace_oid("fincore", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("limits", nsp));
}
