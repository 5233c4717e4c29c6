/*
 * limits_store.c — limits in the ledger's posting path: the tenant's
 * definitions (cached per backend), the counters a batch may charge (locked
 * and read in one statement, in one global order), the charge or release of
 * each item as the engine applies it, and the write of what changed.
 *
 * Locks.  A batch locks its accounts first (ledger.c), then the counters,
 * sorted by limit id and subject: every writer of a counter takes its locks
 * in that order, so spenders never deadlock.  A counter of the whole scope
 * (per = 'scope') exists from the limit's creation and is locked as a row.
 * A counter per account may not exist yet; it is created under the lock of
 * its account, which every writer of it holds (limits_account_needs_lock()
 * makes even a hot account's leg lock its row while such a limit applies to
 * it), so two transactions never both create it.
 *
 * What counts: a transfer or hold is charged at its time when created (a
 * hold's amount counts until it is resolved); a post gives back what it did
 * not post, a void or expiry the whole hold (and its count), each in the
 * window the hold was counted in; a reversal of a posted transfer gives back
 * its amount only to amount limits that say restore_on_reversal.  Only
 * creations can be refused.
 */
#include "ledger_int.h"

#include "cache_watch.h"
#include "limits.h"
#include "queue.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* A tenant's enabled limits and rules, as cached. */
typedef struct LimitSet
{
	pg_uuid_t	tenant;			/* hash key */
	int			ndefs;
	LimitDef   *defs;
	bool		has_customer;	/* a customer-scoped limit: accounts' customers are read */
	int			nrules;
	RuleDef    *rules;			/* by name */
} LimitSet;

/* A batch's view of the limits. */
typedef struct LedgerLimits
{
	const LimitSet *set;
	const char **customers;		/* of b->accounts[i], or NULL */
	LimitCounter *counters;		/* sorted by limit id, subject */
	int			ncounters;
} LedgerLimits;

static const pg_uuid_t nil_uuid = {{0}};

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

/* Fill def's window (and time zone) from their SQL values: shared with the SQL functions below. */
static void
def_window(LimitDef *def, text *window_kind, bool seconds_null, int32 seconds, text *time_zone)
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
			limits_aggregate_def(&set->defs[set->ndefs++], &set->rules[i].id, k, aggs[k]->agg_sum,
								 aggs[k]->agg_side, aggs[k]->agg_window_usecs);
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
							  "       l.counterparty_codes, l.max_value, l.restore_on_reversal, l.counting_since "
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
		def_window(def, DatumGetTextPP(spi_value(i, 10, &isnull)), secs_null, secs,
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
		if (def->scope == LIMIT_SCOPE_CUSTOMER)
			set->has_customer = true;
	}
	MemoryContextSwitchTo(old);
	load_rules(set, cxt);
}

/* The batch tenant's enabled limits: cached until fincore.limits changes. */
static const LimitSet *
limit_set(const pg_uuid_t *tenant)
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
static bool
limits_installed(void)
{
	Oid			nsp = get_namespace_oid("fincore", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("limits", nsp));
}

/* Before the accounts are locked: the tenant's limits, and its accounts' customers. */
void
limits_prepare(LedgerBatch *b)
{
	const LimitSet *set;
	LedgerLimits *st;

	b->limits = NULL;
	if (b->schema == 0 || !limits_installed())
		return;
	set = limit_set(&b->tenant);
	if (set->ndefs == 0 && set->nrules == 0)
		return;
	st = palloc0(sizeof(LedgerLimits));
	st->set = set;
	st->customers = palloc0(sizeof(char *) * Max(b->naccounts, 1));
	if (set->has_customer && b->naccounts > 0)
	{
		static SPIPlanPtr plan = NULL;
		pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * b->naccounts);
		Datum		args[2];

		for (int i = 0; i < b->naccounts; i++)
			ids[i] = b->accounts[i].meta.id;
		if (plan == NULL)
		{
			Oid			types[2] = {UUIDOID, UUIDARRAYOID};

			plan = ledger_prepare("SELECT c.account_id, c.customer FROM fincore.account_customers c "
								  " WHERE c.tenant_id OPERATOR(pg_catalog.=) $1 "
								  "   AND c.account_id OPERATOR(pg_catalog.=) ANY ($2)", 2, types);
		}
		args[0] = UUIDPGetDatum(&b->tenant);
		args[1] = uuid_array(ids, b->naccounts);
		if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "ledger: loading accounts' customers failed");
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			LedgerAccount *a = batch_account(b, DatumGetUUIDP(spi_value(r, 1, &isnull)), false);

			if (a != NULL)
				st->customers[a - b->accounts] = TextDatumGetCString(spi_value(r, 2, &isnull));
		}
	}
	b->limits = st;
}

static inline const char *
account_customer(const LedgerBatch *b, const LedgerAccount *a)
{
	return b->limits->customers[a - b->accounts];
}

/*
 * Must a leg of this account (on side 'd' or 'c' of the limits' legs) lock
 * its row: does a limit with a counter per account take it in?  An account whose metadata is not known yet is locked
 * anyway.
 */
bool
limits_account_needs_lock(const LedgerBatch *b, const LedgerAccount *a, char side)
{
	const LimitSet *set;

	if (b->limits == NULL || !a->meta_known)
		return false;
	set = b->limits->set;
	for (int i = 0; i < set->ndefs; i++)
	{
		const LimitDef *def = &set->defs[i];

		if (def->per_account && def->window != LIMIT_WINDOW_TRANSACTION &&
			(def->direction == 0 || def->direction == side) &&
			limits_scope_takes(def, &a->meta.id, a->meta.code, account_customer(b, a)))
			return true;
	}
	return false;
}

static int
counter_cmp(const void *x, const void *y)
{
	const LimitCounter *a = x;
	const LimitCounter *b = y;
	int			c = memcmp(a->def->id.data, b->def->id.data, UUID_LEN);

	return c != 0 ? c : memcmp(a->subject.data, b->subject.data, UUID_LEN);
}

static LimitCounter *
find_counter(LedgerLimits *st, const LimitDef *def, const pg_uuid_t *subject)
{
	LimitCounter key;

	key.def = def;
	key.subject = *subject;
	return bsearch(&key, st->counters, st->ncounters, sizeof(LimitCounter), counter_cmp);
}

static inline const pg_uuid_t *
counter_subject(const LimitDef *def, const LedgerAccount *a)
{
	return def->per_account ? &a->meta.id : &nil_uuid;
}

/*
 * The counters an item may touch on one side: the scope takes the account in
 * and the direction is the side's, whatever the other filters.
 */
static void
add_candidates(LedgerBatch *b, LedgerLimits *st, const LedgerAccount *a, char side, int *cap)
{
	const LimitSet *set = st->set;

	if (a == NULL || !a->found)
		return;
	for (int i = 0; i < set->ndefs; i++)
	{
		const LimitDef *def = &set->defs[i];

		if (def->window == LIMIT_WINDOW_TRANSACTION ||
			(def->direction != 0 && def->direction != side) ||
			(def->has_currency && def->currency != a->meta.currency) ||
			!limits_scope_takes(def, &a->meta.id, a->meta.code, account_customer(b, a)))
			continue;
		if (st->ncounters == *cap)
		{
			*cap *= 2;
			st->counters = repalloc(st->counters, sizeof(LimitCounter) * *cap);
		}
		memset(&st->counters[st->ncounters], 0, sizeof(LimitCounter));
		st->counters[st->ncounters].def = def;
		st->counters[st->ncounters].subject = *counter_subject(def, a);
		st->ncounters++;
	}
}

/* Fill the batch's counters from the rows a counter query returned. */
static void
read_counters(LedgerLimits *st)
{
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		LimitDef	def;
		LimitCounter key,
				   *c;
		Datum		d;

		def.id = *DatumGetUUIDP(spi_value(r, 1, &isnull));
		key.def = &def;
		key.subject = *DatumGetUUIDP(spi_value(r, 2, &isnull));
		c = bsearch(&key, st->counters, st->ncounters, sizeof(LimitCounter), counter_cmp);
		if (c == NULL)
			continue;
		c->stored = true;
		d = spi_value(r, 3, &isnull);
		c->has_window = !isnull;
		if (!isnull)
			c->window_start = DatumGetTimestampTz(d);
		c->used = DatumGetInt64(spi_value(r, 4, &isnull));
		d = spi_value(r, 5, &isnull);
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *nulls;
			int			ne;

			deconstruct_array(DatumGetArrayTypeP(d), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
							  &elems, &nulls, &ne);
			for (int k = 0; k < ne && k < LIMIT_RING_SLOTS; k++)
				c->ring[k] = nulls[k] ? 0 : DatumGetInt64(elems[k]);
			c->has_window = true;
		}
		d = spi_value(r, 6, &isnull);
		c->head = isnull ? 0 : DatumGetInt64(d);
	}
}

/*
 * One primary key look-up per counter, in the order given, each locking its
 * row if lock: a join would scan all of the tenant's counters with a plan
 * made while the table was small.
 */
#define COUNTERS_SQL(locking) \
	"SELECT c.limit_id, c.subject, c.window_start, c.used, c.ring, c.ring_head " \
	"  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS k(limit_id, subject) " \
	" CROSS JOIN LATERAL (SELECT c.* FROM fincore.limit_counters c " \
	"                      WHERE c.tenant_id OPERATOR(pg_catalog.=) $1 " \
	"                        AND c.limit_id OPERATOR(pg_catalog.=) k.limit_id " \
	"                        AND c.subject OPERATOR(pg_catalog.=) k.subject " \
	"                     OFFSET 0 " locking ") c"

static void
query_counters(LedgerBatch *b, pg_uuid_t *lids, pg_uuid_t *subjects, int n, bool lock)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	Datum		args[3];

	if (n == 0)
		return;
	if (plans[lock] == NULL)
	{
		Oid			types[3] = {UUIDOID, UUIDARRAYOID, UUIDARRAYOID};

		plans[lock] = ledger_prepare(lock ? COUNTERS_SQL("FOR NO KEY UPDATE") : COUNTERS_SQL(""), 3, types);
	}
	args[0] = UUIDPGetDatum(&b->tenant);
	args[1] = uuid_array(lids, n);
	args[2] = uuid_array(subjects, n);
	/* Not read-only: in READ COMMITTED the statement takes a snapshot newer than the locks it waited for. */
	if (SPI_execute_plan(plans[lock], args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: reading limit counters failed");
	read_counters(b->limits);
}

/*
 * Under the accounts' locks: read every counter the batch may charge or
 * release.  A counter of the whole scope is locked, in (limit, subject) order
 * (the global order).  In READ COMMITTED a counter per account needs no lock
 * of its own: every writer of it holds its account's lock, taken before this
 * statement began, so it reads what the last holder committed.  With a
 * transaction snapshot (REPEATABLE READ, SERIALIZABLE) it is locked too: a
 * hot account's row may not have changed when its counter did, and only the
 * counter's own lock then raises the serialization failure.
 */
void
limits_lock(LedgerBatch *b)
{
	LedgerLimits *st = b->limits;
	int			cap = 16,
				n = 0,
				nscope = 0,
				nacct = 0;
	pg_uuid_t  *lids,
			   *subjects;

	if (st == NULL)
		return;
	st->counters = palloc(sizeof(LimitCounter) * cap);
	st->ncounters = 0;
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];

		if (it->result != LR_OK)
			continue;
		/* A reversal's legs are the reversed transfer's, swapped. */
		add_candidates(b, st, it->dacc, it->kind == KIND_REVERSAL ? 'c' : 'd', &cap);
		add_candidates(b, st, it->cacc, it->kind == KIND_REVERSAL ? 'd' : 'c', &cap);
	}
	if (st->ncounters == 0)
		return;
	qsort(st->counters, st->ncounters, sizeof(LimitCounter), counter_cmp);
	for (int i = 0; i < st->ncounters; i++)
		if (n == 0 || counter_cmp(&st->counters[n - 1], &st->counters[i]) != 0)
			st->counters[n++] = st->counters[i];
	st->ncounters = n;

	/* The scope's counters first in the arrays, the accounts' from the end; each group sorted. */
	lids = palloc(sizeof(pg_uuid_t) * n);
	subjects = palloc(sizeof(pg_uuid_t) * n);
	for (int i = 0; i < n; i++)
		if (!st->counters[i].def->per_account || IsolationUsesXactSnapshot())
		{
			lids[nscope] = st->counters[i].def->id;
			subjects[nscope++] = st->counters[i].subject;
		}
	for (int i = 0; i < n; i++)
		if (st->counters[i].def->per_account && !IsolationUsesXactSnapshot())
		{
			lids[nscope + nacct] = st->counters[i].def->id;
			subjects[nscope + nacct++] = st->counters[i].subject;
		}
	query_counters(b, lids, subjects, nscope, true);
	query_counters(b, lids + nscope, subjects + nscope, nacct, false);
}

/* One side of an item as a leg. */
static void
make_leg(const LedgerBatch *b, LimitLeg *leg, char side, const LedgerAccount *a, const LedgerAccount *other, int32 code)
{
	leg->side = side;
	leg->account = &a->meta.id;
	leg->account_code = a->meta.code;
	leg->customer = account_customer(b, a);
	leg->currency = a->meta.currency;
	leg->counterparty = &other->meta.id;
	leg->counterparty_code = other->meta.code;
	leg->transfer_code = code;
}

/*
 * The counters the legs (debit, credit) of a transfer count towards, each
 * once (a limit of both directions over a whole scope meets both legs), with
 * the limits of a transaction window in the same list (counter NULL).
 */
typedef struct LimitHit
{
	const LimitDef *def;
	LimitCounter *counter;
} LimitHit;

static int
collect_hits(LedgerBatch *b, const LedgerAccount *d, const LedgerAccount *c, int32 code, LimitHit *hits)
{
	LedgerLimits *st = b->limits;
	LimitLeg	legs[2];
	int			nhits = 0;

	make_leg(b, &legs[0], 'd', d, c, code);
	make_leg(b, &legs[1], 'c', c, d, code);
	for (int i = 0; i < st->set->ndefs; i++)
	{
		const LimitDef *def = &st->set->defs[i];
		LimitCounter *seen = NULL;

		for (int s = 0; s < 2; s++)
		{
			const LedgerAccount *a = s == 0 ? d : c;
			LimitCounter *counter = NULL;

			if (!limits_applies(def, &legs[s]))
				continue;
			if (def->window != LIMIT_WINDOW_TRANSACTION)
			{
				counter = find_counter(st, def, counter_subject(def, a));
				if (counter == NULL)
					elog(ERROR, "ledger: limit %s has no counter locked for this transfer", def->name);
				if (counter == seen)
					continue;
				seen = counter;
			}
			hits[nhits].def = def;
			hits[nhits].counter = counter;
			nhits++;
		}
	}
	return nhits;
}

static void
release(LedgerBatch *b, const LedgerAccount *d, const LedgerAccount *c, int32 code, TimestampTz counted_at,
		int64 amount, int64 count, bool reversal)
{
	LimitHit   *hits = palloc(sizeof(LimitHit) * (2 * b->limits->set->ndefs + 1));
	int			nhits = collect_hits(b, d, c, code, hits);

	for (int h = 0; h < nhits; h++)
	{
		const LimitDef *def = hits[h].def;
		int64		value = def->counts ? count : amount;

		/* Nothing was counted before the limit counted, nor by a reversal unless it restores. */
		if (hits[h].counter == NULL || def->aggregate || counted_at < def->counting_since || value == 0 ||
			(reversal && !def->restore_on_reversal))
			continue;
		undo_push_counter(b, hits[h].counter);
		limits_release(hits[h].counter, counted_at, value);
	}
}

typedef struct AggregateArg
{
	LedgerBatch *b;
	const LedgerItem *it;
	bool		uncharged;		/* before the item is applied: add what it will count */
} AggregateArg;

/* An aggregate's value for the item, from the counter its charge left (this transfer included). */
static int64
item_aggregate(void *arg, const RuleNode *node)
{
	AggregateArg *a = arg;
	LedgerLimits *st = a->b->limits;
	const LimitDef *def = &st->set->defs[node->agg_index];
	const LedgerAccount *acc = node->agg_side == 'd' ? a->it->dacc : a->it->cacc;
	LimitCounter *c = find_counter(st, def, &acc->meta.id);
	int64		v = c ? limits_used_at(c, a->it->ts) : 0;

	if (a->uncharged)
		v += node->agg_sum ? a->it->amount : 1;
	return v;
}

/* What the rules see of an item. */
static void
rule_facts(const LedgerItem *it, RuleFacts *facts)
{
	facts->aggregate = NULL;
	facts->aggregate_arg = NULL;
	facts->amount = it->has_amount ? it->amount : 0;
	facts->code = it->code;
	facts->currency = it->dacc->meta.currency;
	facts->kind = it->kind;
	facts->debit = &it->dacc->meta.id;
	facts->credit = &it->cacc->meta.id;
	facts->debit_code = it->dacc->meta.code;
	facts->credit_code = it->cacc->meta.code;
	facts->ts = it->ts;
	facts->metadata = it->user_metadata ? it->user_metadata : it->metadata;
}

/*
 * The tenant's rules over a transfer or hold whose limits passed: the first
 * active rule that rejects it refuses it (undoing its charges to mark); the
 * rules that flag it, and the shadow rules that would have rejected or
 * flagged it, are remembered on the item for fincore.decisions.
 */
static LedgerResult
apply_rules(LedgerBatch *b, LedgerItem *it, int mark)
{
	const LimitSet *set = b->limits->set;
	RuleFacts	facts;
	AggregateArg aggregate_arg;

	if (set->nrules == 0)
		return LR_OK;
	rule_facts(it, &facts);
	aggregate_arg.b = b;
	aggregate_arg.it = it;
	aggregate_arg.uncharged = false;
	facts.aggregate = item_aggregate;
	facts.aggregate_arg = &aggregate_arg;
	/* A reviewed transfer is judged as the transfer it was asked to be. */
	if (it->review_by != NULL)
		facts.kind = KIND_POSTED;
	for (int i = 0; i < set->nrules; i++)
	{
		const RuleDef *r = &set->rules[i];

		/* An active review rule was judged before the item was applied (limits_review). */
		if (r->active && r->outcome == RULE_REVIEW)
		{
			if (r != it->review_by)
				continue;
		}
		else if (!rules_eval(r->condition, &facts, r->tz))
			continue;
		if (r->active && r->outcome == RULE_REJECT)
		{
			undo_to(b, mark);
			it->rule_hit = r;
			it->nflags = 0;
			return LR_RULE_REJECTED;
		}
		if (it->flags_by == NULL)
			it->flags_by = palloc(sizeof(RuleDef *) * set->nrules);
		it->flags_by[it->nflags++] = r;
	}
	return LR_OK;
}

/*
 * Before the engine applies a transfer: the first active review rule (by name)
 * that meets it makes it a hold that waits review_timeout for a decision
 * (fincore.approve_review posts it, reject_review voids it, and one nobody
 * decides expires).  Not for a hold (it is one), a fee's transfer or leg (the
 * fee would be posted while the money is held), a balancing, closing or
 * imported transfer.
 */
void
limits_review(LedgerBatch *b, LedgerItem *it)
{
	const LimitSet *set;
	RuleFacts	facts;
	AggregateArg aggregate_arg;

	if (b->limits == NULL || it->kind != KIND_POSTED || it->review_by != NULL)
		return;
	set = b->limits->set;
	if (set->nrules == 0 || it->fee_schedule != NULL || it->is_fee_leg ||
		(it->flags & (TRANSFER_BALANCING | TRANSFER_CLOSING | TRANSFER_IMPORTED)) ||
		it->dacc == NULL || it->cacc == NULL || !it->dacc->found || !it->cacc->found)
		return;
	rule_facts(it, &facts);
	aggregate_arg.b = b;
	aggregate_arg.it = it;
	aggregate_arg.uncharged = true;
	facts.aggregate = item_aggregate;
	facts.aggregate_arg = &aggregate_arg;
	for (int i = 0; i < set->nrules; i++)
	{
		const RuleDef *r = &set->rules[i];

		if (r->active && r->outcome == RULE_REVIEW && rules_eval(r->condition, &facts, r->tz))
		{
			it->kind = KIND_PENDING;
			it->has_timeout = true;
			it->timeout = r->review_timeout;
			it->review_by = r;
			return;
		}
	}
}

/*
 * After the engine applied an item: charge its limits (a creation), or give
 * back what it releases, then run the rules over a creation.  On a refusal
 * nothing is charged.
 */
LedgerResult
limits_apply(LedgerBatch *b, LedgerItem *it)
{
	LimitHit   *hits;
	int			nhits;
	int			mark = b->nundo;
	RefTransfer *ref = it->ref;

	if (b->limits == NULL || it->dacc == NULL || it->cacc == NULL)
		return LR_OK;
	it->nflags = 0;
	it->rule_hit = NULL;
	switch (it->kind)
	{
		case KIND_POST:
			release(b, it->dacc, it->cacc, ref->code, ref->created_at, it->pending_amount - it->amount, 0, false);
			return LR_OK;
		case KIND_VOID:
		case KIND_EXPIRE:
			release(b, it->dacc, it->cacc, ref->code, ref->created_at, it->pending_amount, 1, false);
			return LR_OK;
		case KIND_REVERSAL:
			/*
			 * The reversed transfer's legs: its debit is this one's credit.  A
			 * post's amount was counted by its hold, in the hold's window: a
			 * reversal of a post gives nothing back.
			 */
			if (ref->kind == KIND_POSTED)
				release(b, it->cacc, it->dacc, ref->code, ref->created_at, it->amount, 0, true);
			return LR_OK;
		case KIND_POSTED:
		case KIND_PENDING:
			break;
		default:
			return LR_OK;
	}
	hits = palloc(sizeof(LimitHit) * (2 * b->limits->set->ndefs + 1));
	nhits = collect_hits(b, it->dacc, it->cacc, it->code, hits);
	for (int h = 0; h < nhits; h++)
	{
		const LimitDef *def = hits[h].def;
		LimitCounter *counter = hits[h].counter;
		int64		value = def->counts ? 1 : it->amount;
		int64		used = counter ? limits_used_at(counter, it->ts) : 0;

		/* A window's total that would leave int64 exceeds any maximum too. */
		bool		fits = value <= def->max - used;

		if (fits && counter != NULL)
		{
			undo_push_counter(b, counter);
			fits = limits_charge(counter, it->ts, value);
		}
		if (!fits)
		{
			undo_to(b, mark);
			it->limit_hit = def;
			it->limit_used = used;
			return LR_EXCEEDS_LIMIT;
		}
	}
	return apply_rules(b, it, mark);
	return LR_OK;
}

/*
 * Write the counters that changed, in one statement: an upsert, whose arbiter
 * is the primary key, so each row is found by an index probe whatever the
 * plan (an UPDATE by tuple id was planned as a scan of all the tenant's
 * counters when the table was small, and Citus 13.2 crashes deparsing its
 * array subscripts).  A counter's ring is the k-th slice of 60 of $7.
 */
void
limits_write(LedgerBatch *b)
{
	LedgerLimits *st = b->limits;
	static SPIPlanPtr plan = NULL;
	ArrayBuilder lids,
				subjects,
				starts,
				used,
				heads,
				rings;
	int			n = 0;
	Datum		args[7];

	if (st == NULL)
		return;
	for (int i = 0; i < st->ncounters; i++)
		if (st->counters[i].changed)
			n++;
	if (n == 0)
		return;
	ab_init(&lids, n);
	ab_init(&subjects, n);
	ab_init(&starts, n);
	ab_init(&used, n);
	ab_init(&heads, n);
	ab_init(&rings, n * LIMIT_RING_SLOTS);
	for (int i = 0; i < st->ncounters; i++)
	{
		LimitCounter *c = &st->counters[i];
		bool		trailing = c->def->window == LIMIT_WINDOW_TRAILING;

		if (!c->changed)
			continue;
		ab_add(&lids, UUIDPGetDatum(&c->def->id), false);
		ab_add(&subjects, UUIDPGetDatum(&c->subject), false);
		ab_add(&starts, TimestampTzGetDatum(c->window_start), !c->has_window || trailing);
		ab_add(&used, Int64GetDatum(c->used), false);
		ab_add(&heads, Int64GetDatum(c->head), !trailing || !c->has_window);
		for (int k = 0; k < LIMIT_RING_SLOTS; k++)
			ab_add(&rings, Int64GetDatum(c->ring[k]), false);
	}
	if (plan == NULL)
	{
		Oid			types[7] = {UUIDOID, UUIDARRAYOID, UUIDARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID,
		INT8ARRAYOID, INT8ARRAYOID};

		plan = ledger_prepare("INSERT INTO fincore.limit_counters AS c "
							  "       (tenant_id, limit_id, subject, window_start, used, ring, ring_head) "
							  "SELECT $1, k.limit_id, k.subject, k.window_start, k.used, "
							  "       CASE WHEN k.head IS NULL THEN NULL ELSE "
							  "         $7[(k.n OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.*) 60 OPERATOR(pg_catalog.+) 1"
							  "           : k.n OPERATOR(pg_catalog.*) 60] END, k.head "
							  "  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), "
							  "                 pg_catalog.unnest($5), pg_catalog.unnest($6)) WITH ORDINALITY "
							  "       AS k(limit_id, subject, window_start, used, head, n) "
							  "ON CONFLICT (tenant_id, limit_id, subject) DO UPDATE "
							  "   SET window_start = excluded.window_start, used = excluded.used, "
							  "       ring = excluded.ring, ring_head = excluded.ring_head",
							  7, types);
	}
	args[0] = UUIDPGetDatum(&b->tenant);
	args[1] = ab_array(&lids, UUIDOID);
	args[2] = ab_array(&subjects, UUIDOID);
	args[3] = ab_array(&starts, TIMESTAMPTZOID);
	args[4] = ab_array(&used, INT8OID);
	args[5] = ab_array(&heads, INT8OID);
	args[6] = ab_array(&rings, INT8OID);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "ledger: writing limit counters failed");
}

/* ---- decisions ---- */

/* What a rule saw of a transfer. */
static Jsonb *
rule_seen(const LedgerItem *it)
{
	JsonbParseState *st = NULL;
	char		code[CURRENCY_CODE_MAX_LEN + 1];

	currency_unpack(it->dacc->meta.currency, code);
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "amount");
	jb_int(&st, it->amount);
	jb_key(&st, "currency");
	jb_string(&st, code);
	jb_key(&st, "code");
	jb_int(&st, it->code);
	jb_key(&st, "kind");
	jb_string(&st, kind_text(it->kind));
	jb_key(&st, "debit_account");
	jb_string(&st, uuid_text(&it->dacc->meta.id));
	jb_key(&st, "credit_account");
	jb_string(&st, uuid_text(&it->cacc->meta.id));
	jb_key(&st, "debit_code");
	jb_int(&st, it->dacc->meta.code);
	jb_key(&st, "credit_code");
	jb_int(&st, it->cacc->meta.code);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* What a limit saw: its maximum, what it had counted, and what the transfer would add. */
static Jsonb *
limit_seen(const LedgerItem *it)
{
	JsonbParseState *st = NULL;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "limit");
	jb_string(&st, it->limit_hit->name);
	jb_key(&st, "max");
	jb_int(&st, it->limit_hit->max);
	jb_key(&st, "used");
	jb_int(&st, it->limit_used);
	jb_key(&st, "adds");
	jb_int(&st, it->limit_hit->counts ? 1 : it->amount);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

typedef struct DecisionRows
{
	ArrayBuilder transfer,
				limit_id,
				rule_id,
				outcome,
				mode,
				seen;
	bool		events;
	const pg_uuid_t *tenant;
} DecisionRows;

static void
add_decision(DecisionRows *d, const LedgerItem *it, const LimitDef *limit, const RuleDef *rule,
			 RuleOutcome oc, bool active, Jsonb *seen)
{
	const char *outcome = rule_outcome_name(oc);
	const char *mode = active ? "active" : "shadow";

	ab_add(&d->transfer, UUIDPGetDatum(&it->id), false);
	ab_add(&d->limit_id, limit ? UUIDPGetDatum(&limit->id) : (Datum) 0, limit == NULL);
	ab_add(&d->rule_id, rule ? UUIDPGetDatum(&rule->id) : (Datum) 0, rule == NULL);
	ab_add(&d->outcome, CStringGetTextDatum(outcome), false);
	ab_add(&d->mode, CStringGetTextDatum(mode), false);
	ab_add(&d->seen, JsonbPGetDatum(seen), false);
	if (d->events)
	{
		/* An outbox event per decision, in the transaction that made it (docs/outbox.md). */
		JsonbParseState *st = NULL;

		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "transfer_id");
		jb_string(&st, uuid_text(&it->id));
		jb_key(&st, limit ? "limit_id" : "rule_id");
		jb_string(&st, uuid_text(limit ? &limit->id : &rule->id));
		jb_key(&st, limit ? "limit" : "rule");
		jb_string(&st, limit ? limit->name : rule->name);
		jb_key(&st, "outcome");
		jb_string(&st, outcome);
		jb_key(&st, "mode");
		jb_string(&st, mode);
		jb_key(&st, "seen");
		jb_jsonb(&st, seen);
		/* A shadow decision changed nothing: consumers must not take it for a refusal. */
		outbox_emit_event(d->tenant, "risk",
						  !active ? "decision.shadow" : oc == RULE_REJECT ? "decision.rejected"
						  : oc == RULE_REVIEW ? "decision.review" : "decision.flagged",
						  "transfer", uuid_text(&it->id),
						  JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL)), NULL, NULL);
	}
}

/*
 * Record the batch's decisions that were not a plain accept: the limit or rule
 * that refused an item of a batch (a refused single call raises, and its
 * transaction keeps nothing), and the rules that flagged a transfer written
 * now, or would have rejected or flagged it (shadow).
 */
void
limits_write_decisions(LedgerBatch *b)
{
	static SPIPlanPtr plan = NULL;
	DecisionRows d;
	int			cap = 0;
	Datum		args[8];

	if (b->limits == NULL)
		return;
	for (int i = 0; i < b->nitems; i++)
		cap += b->items[i].nflags + 1;
	ab_init(&d.transfer, cap);
	ab_init(&d.limit_id, cap);
	ab_init(&d.rule_id, cap);
	ab_init(&d.outcome, cap);
	ab_init(&d.mode, cap);
	ab_init(&d.seen, cap);
	d.tenant = &b->tenant;
	d.events = false;
	for (int pass = 0; pass < 2; pass++)
	{
		for (int i = 0; i < b->nitems; i++)
		{
			LedgerItem *it = &b->items[i];

			if (it->result == LR_EXCEEDS_LIMIT && !b->single && it->limit_hit)
				add_decision(&d, it, it->limit_hit, NULL, RULE_REJECT, true, limit_seen(it));
			else if (it->result == LR_RULE_REJECTED && !b->single && it->rule_hit)
				add_decision(&d, it, NULL, it->rule_hit, RULE_REJECT, true, rule_seen(it));
			else if (it->result == LR_OK && !it->skip)
				for (int k = 0; k < it->nflags; k++)
					add_decision(&d, it, NULL, it->flags_by[k], it->flags_by[k]->outcome,
								 it->flags_by[k]->active, rule_seen(it));
		}
		/* The events go out once we know there are decisions, and whether the tenant wants events. */
		if (pass == 0)
		{
			if (d.transfer.n == 0 || !outbox_ledger_events_enabled(&b->tenant))
				break;
			d.events = true;
			d.transfer.n = d.limit_id.n = d.rule_id.n = d.outcome.n = d.mode.n = d.seen.n = 0;
		}
	}
	if (d.transfer.n == 0)
		return;
	if (plan == NULL)
	{
		Oid			types[8] = {UUIDOID, UUIDARRAYOID, UUIDARRAYOID, UUIDARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, JSONBARRAYOID, TIMESTAMPTZOID};

		plan = ledger_prepare("INSERT INTO fincore.decisions "
							  "       (tenant_id, transfer_id, limit_id, rule_id, outcome, mode, seen, decided_at) "
							  "SELECT $1, k.transfer_id, k.limit_id, k.rule_id, k.outcome, k.mode, k.seen, $8 "
							  "  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), "
							  "                 pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) "
							  "       AS k(transfer_id, limit_id, rule_id, outcome, mode, seen)", 8, types);
	}
	args[0] = UUIDPGetDatum(&b->tenant);
	args[1] = ab_array(&d.transfer, UUIDOID);
	args[2] = ab_array(&d.limit_id, UUIDOID);
	args[3] = ab_array(&d.rule_id, UUIDOID);
	args[4] = ab_array(&d.outcome, TEXTOID);
	args[5] = ab_array(&d.mode, TEXTOID);
	args[6] = ab_array(&d.seen, JSONBOID);
	args[7] = TimestampTzGetDatum(b->now);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "ledger: writing decisions failed");
	/* A review job for each transfer an active review rule made a hold. */
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];
		JsonbParseState *st = NULL;
		char	   *id;

		if (it->review_by == NULL || it->result != LR_OK || it->skip)
			continue;
		id = uuid_text(&it->id);
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "transfer_id");
		jb_string(&st, id);
		jb_key(&st, "rule_id");
		jb_string(&st, uuid_text(&it->review_by->id));
		jb_key(&st, "rule");
		jb_string(&st, it->review_by->name);
		jb_key(&st, "seen");
		jb_jsonb(&st, rule_seen(it));
		jb_key(&st, "expires_at");
		jb_string(&st, DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(it->expires_at))));
		(void) queue_enqueue_job(&b->tenant, "fincore.review",
								 JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL)), id);
	}
}

/* ---- rules as SQL functions ---- */

PG_FUNCTION_INFO_V1(fincore_check_rule);
Datum
fincore_check_rule(PG_FUNCTION_ARGS)
{
	(void) rules_compile(PG_GETARG_JSONB_P(0));
	PG_RETURN_VOID();
}

typedef struct BacktestQuery
{
	const pg_uuid_t *tenant;
	TimestampTz from;
	TimestampTz to;
	const RuleNode *condition;
	pg_tz	   *tz;
	ReturnSetInfo *rsinfo;
	int			naggs;			/* the condition's aggregates, counted in memory over the history */
	LimitDef   *aggs;
	HTAB	   *counters;		/* BacktestCounter by aggregate and account */
	const RuleFacts *facts;		/* of the transfer being judged */
} BacktestQuery;

typedef struct BacktestKey
{
	int			agg;
	pg_uuid_t	account;
} BacktestKey;

typedef struct BacktestCounter
{
	BacktestKey key;
	LimitCounter counter;
} BacktestCounter;

static LimitCounter *
backtest_counter(BacktestQuery *q, int agg, const pg_uuid_t *account)
{
	BacktestKey key;
	BacktestCounter *e;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.agg = agg;
	key.account = *account;
	e = hash_search(q->counters, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset(&e->counter, 0, sizeof(e->counter));
		e->counter.def = &q->aggs[agg];
	}
	return &e->counter;
}

static int64
backtest_aggregate(void *arg, const RuleNode *node)
{
	BacktestQuery *q = arg;
	const pg_uuid_t *acc = node->agg_side == 'd' ? q->facts->debit : q->facts->credit;

	return limits_used_at(backtest_counter(q, node->agg_index, acc), q->facts->ts);
}

static void
backtest_query(void *arg)
{
	BacktestQuery *q = arg;
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	Portal		portal;

	fincore_spi_connect();
	if (plan == NULL)
	{
		Oid			types[3] = {UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID};

		plan = fincore_prepare("SELECT t.id, t.created_at, t.kind, t.amount, t.code, d.currency, t.debit_account_id, "
							   "       t.credit_account_id, d.code, c.code, t.metadata "
							   "  FROM fincore.transfers t "
							   "  JOIN fincore.accounts d ON d.tenant_id OPERATOR(pg_catalog.=) t.tenant_id "
							   "   AND d.id OPERATOR(pg_catalog.=) t.debit_account_id "
							   "  JOIN fincore.accounts c ON c.tenant_id OPERATOR(pg_catalog.=) t.tenant_id "
							   "   AND c.id OPERATOR(pg_catalog.=) t.credit_account_id "
							   " WHERE t.tenant_id OPERATOR(pg_catalog.=) $1 "
							   "   AND t.kind OPERATOR(pg_catalog.=) ANY ('{posted,pending}'::pg_catalog.text[]) "
							   "   AND t.created_at OPERATOR(pg_catalog.>=) $2 AND t.created_at OPERATOR(pg_catalog.<) $3 "
							   " ORDER BY t.created_at, t.id", 3, types, CURSOR_OPT_CUSTOM_PLAN);
	}
	args[0] = UUIDPGetDatum(q->tenant);
	/* The aggregates' windows reach back before from: count the history they cover first. */
	{
		TimestampTz start = q->from;

		for (int k = 0; k < q->naggs && !TIMESTAMP_NOT_FINITE(q->from); k++)
			if (q->from - q->aggs[k].window_usecs * 2 < start)
				start = q->from - q->aggs[k].window_usecs * 2;
		args[1] = TimestampTzGetDatum(start);
	}
	args[2] = TimestampTzGetDatum(q->to);
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			RuleFacts	f;
			text	   *cur;
			Datum		d;
			char	   *kind = TextDatumGetCString(spi_value(r, 3, &isnull));

			f.amount = DatumGetInt64(spi_value(r, 4, &isnull));
			f.code = DatumGetInt32(spi_value(r, 5, &isnull));
			cur = DatumGetTextPP(spi_value(r, 6, &isnull));
			f.currency = currency_pack_or_error(VARDATA_ANY(cur), VARSIZE_ANY_EXHDR(cur));
			f.kind = kind_from_text(kind);
			f.debit = DatumGetUUIDP(spi_value(r, 7, &isnull));
			f.credit = DatumGetUUIDP(spi_value(r, 8, &isnull));
			f.debit_code = DatumGetInt32(spi_value(r, 9, &isnull));
			f.credit_code = DatumGetInt32(spi_value(r, 10, &isnull));
			f.ts = DatumGetTimestampTz(spi_value(r, 2, &isnull));
			d = spi_value(r, 11, &isnull);
			f.metadata = isnull ? NULL : DatumGetJsonbP(d);
			f.aggregate = backtest_aggregate;
			f.aggregate_arg = q;
			q->facts = &f;
			/* Every transfer counts towards the aggregates, as the ledger charges them when made. */
			for (int k = 0; k < q->naggs; k++)
			{
				LimitCounter *c = backtest_counter(q, k, q->aggs[k].direction == 'd' ? f.debit : f.credit);

				(void) limits_charge(c, f.ts, q->aggs[k].counts ? 1 : f.amount);
			}
			if (f.ts >= q->from && rules_eval(q->condition, &f, q->tz))
			{
				Datum		values[5];
				bool		nulls[5] = {false, false, false, false, false};

				values[0] = spi_value(r, 1, &isnull);
				values[1] = spi_value(r, 2, &isnull);
				values[2] = CStringGetTextDatum(kind);
				values[3] = Int64GetDatum(f.amount);
				values[4] = Int32GetDatum(f.code);
				tuplestore_putvalues(q->rsinfo->setResult, q->rsinfo->setDesc, values, nulls);
			}
		}
	}
	SPI_cursor_close(portal);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_backtest_rule);
Datum
fincore_backtest_rule(PG_FUNCTION_ARGS)
{
	pg_uuid_t	tenant;
	BacktestQuery q;
	char	   *tzname;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_RULE),
				 errmsg("invalid backtest: condition, from_time and to_time must not be NULL")));
	tzname = PG_ARGISNULL(3) ? "UTC" : text_to_cstring(PG_GETARG_TEXT_PP(3));
	tenancy_require_tenant(&tenant);
	InitMaterializedSRF(fcinfo, 0);
	q.tenant = &tenant;
	q.condition = rules_compile(PG_GETARG_JSONB_P(0));
	q.from = PG_GETARG_TIMESTAMPTZ(1);
	q.to = PG_GETARG_TIMESTAMPTZ(2);
	q.tz = pg_tzset(tzname);
	if (q.tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_RULE),
				 errmsg("invalid rule: time_zone \"%s\" is not a time zone name such as Europe/Berlin", tzname)));
	q.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	{
		RuleNode  **aggs = NULL;
		HASHCTL		ctl;
		static const pg_uuid_t backtest_id = {{0}};

		q.naggs = rules_aggregates((RuleNode *) q.condition, &aggs);
		q.aggs = palloc0(sizeof(LimitDef) * Max(q.naggs, 1));
		for (int k = 0; k < q.naggs; k++)
		{
			aggs[k]->agg_index = k;
			limits_aggregate_def(&q.aggs[k], &backtest_id, k, aggs[k]->agg_sum, aggs[k]->agg_side,
								 aggs[k]->agg_window_usecs);
		}
		ctl.keysize = sizeof(BacktestKey);
		ctl.entrysize = sizeof(BacktestCounter);
		ctl.hcxt = CurrentMemoryContext;
		q.counters = hash_create("fincore backtest counters", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	fincore_run_as_owner(fincore_table_oid("transfers"), backtest_query, &q);
	return (Datum) 0;
}

/* ---- the SQL functions over the window arithmetic (limit_remaining(), tests) ---- */

PG_FUNCTION_INFO_V1(fincore_limit_window);
Datum
fincore_limit_window(PG_FUNCTION_ARGS)
{
	LimitDef	def;
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	TimestampTz start,
				end;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(3))
		PG_RETURN_NULL();
	memset(&def, 0, sizeof(def));
	def_window(&def, PG_GETARG_TEXT_PP(0), PG_ARGISNULL(1), PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1),
			   PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "fincore.limit_window: a record was expected");
	limits_window_bounds(&def, PG_GETARG_TIMESTAMPTZ(3), &start, &end);
	values[0] = TimestampTzGetDatum(start);
	values[1] = TimestampTzGetDatum(end);
	nulls[0] = TIMESTAMP_NOT_FINITE(start);
	nulls[1] = TIMESTAMP_NOT_FINITE(end);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(fincore_limit_used);
Datum
fincore_limit_used(PG_FUNCTION_ARGS)
{
	LimitDef	def;
	LimitCounter c;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(7))
		PG_RETURN_NULL();
	memset(&def, 0, sizeof(def));
	memset(&c, 0, sizeof(c));
	def_window(&def, PG_GETARG_TEXT_PP(0), PG_ARGISNULL(1), PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1),
			   PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2));
	c.def = &def;
	c.has_window = !PG_ARGISNULL(3);
	if (c.has_window)
		c.window_start = PG_GETARG_TIMESTAMPTZ(3);
	c.used = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4);
	if (!PG_ARGISNULL(5))
	{
		Datum	   *elems;
		bool	   *nulls;
		int			ne;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(5), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
						  &elems, &nulls, &ne);
		for (int k = 0; k < ne && k < LIMIT_RING_SLOTS; k++)
			c.ring[k] = nulls[k] ? 0 : DatumGetInt64(elems[k]);
		c.has_window = !PG_ARGISNULL(6);
	}
	c.head = PG_ARGISNULL(6) ? 0 : PG_GETARG_INT64(6);
	PG_RETURN_INT64(limits_used_at(&c, PG_GETARG_TIMESTAMPTZ(7)));
}
