/*
 * limits_store.c — limits and rules in the ledger's posting path: the
 * counters a batch may charge (read after the accounts are locked; those of
 * a whole scope locked, in one global order), the charge or release of each
 * item as the engine applies it, the rules over what it creates, and the
 * write of what changed.
 *
 * Locks.  A batch locks its accounts first (ledger.c), then the counters,
 * sorted by limit id and subject: every writer of a counter takes its locks
 * in that order, so spenders never deadlock.  A counter of the whole scope
 * (per = 'scope') exists from the limit's creation and is locked as a row.
 * A counter per account is created, read and written under the lock of its
 * account, which every writer of it holds (limits_account_needs_lock() makes
 * even a hot account's leg lock its row while such a limit applies to it).
 *
 * What counts: a transfer or hold is charged at its time when created (a
 * hold's amount counts until it is resolved); a post gives back what it did
 * not post, a void or expiry the whole hold (and its count), each in the
 * window the hold was counted in; a reversal of a posted transfer gives back
 * its amount only to amount limits that say restore_on_reversal.  Only
 * creations can be refused.
 */
#include "limits_int.h"

/* The subject of a counter of the whole scope. */
static const pg_uuid_t nil_uuid = {{0}};

/* Before the accounts are locked: the tenant's limits, and its accounts' customers. */
void
limits_prepare(LedgerBatch *b)
{
	const LimitSet *set;
	LedgerLimits *st;

	b->limits = NULL;
	if (b->schema == 0 || !limits_installed())
		return;
	set = limits_tenant_set(&b->tenant);
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

const char *const limit_counter_columns[LIMIT_COUNTER_NKEY + LIMIT_COUNTER_NSTATE] = {
	"tenant_id", "limit_id", "subject",
	"window_start", "used", "ring", "ring_head", "members", "member_buckets"
};

/* A counter's state from its row's state columns (limit_counter_columns[3...]). */
void
limits_counter_decode(LimitCounter *c, const Datum *values, const bool *nulls)
{
	c->stored = true;
	c->has_window = !nulls[0];
	if (!nulls[0])
		c->window_start = DatumGetTimestampTz(values[0]);
	c->used = nulls[1] ? 0 : DatumGetInt64(values[1]);
	if (!nulls[2])
	{
		Datum	   *elems;
		bool	   *enulls;
		int			ne;

		deconstruct_array(DatumGetArrayTypeP(values[2]), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
						  &elems, &enulls, &ne);
		for (int k = 0; k < ne && k < LIMIT_RING_SLOTS; k++)
			c->ring[k] = enulls[k] ? 0 : DatumGetInt64(elems[k]);
		c->has_window = true;
	}
	c->head = nulls[3] ? 0 : DatumGetInt64(values[3]);
	if (!nulls[4])
	{
		Datum	   *members;
		Datum	   *buckets;
		int			nb = 0;

		deconstruct_array(DatumGetArrayTypeP(values[4]), UUIDOID, UUID_LEN, false, TYPALIGN_CHAR,
						  &members, NULL, &c->nmembers);
		if (!nulls[5])
			deconstruct_array(DatumGetArrayTypeP(values[5]), INT8OID, 8, FLOAT8PASSBYVAL,
							  TYPALIGN_DOUBLE, &buckets, NULL, &nb);
		if (nb != c->nmembers)
			elog(ERROR, "ledger: a limit counter has %d members and %d buckets", c->nmembers, nb);
		c->members = palloc(sizeof(pg_uuid_t) * Max(c->nmembers, 1));
		c->member_buckets = palloc(sizeof(int64) * Max(c->nmembers, 1));
		for (int k = 0; k < c->nmembers; k++)
		{
			c->members[k] = *DatumGetUUIDP(members[k]);
			c->member_buckets[k] = DatumGetInt64(buckets[k]);
		}
		c->has_window = true;
	}
}

/*
 * A counter's state as its row's state columns: a trailing window's start is
 * not kept (its ring is), a calendar one's ring is not, and only an
 * aggregate of distinct counterparties has members.
 */
void
limits_counter_encode(const LimitCounter *c, Datum *values, bool *nulls)
{
	bool		trailing = c->def->window == LIMIT_WINDOW_TRAILING;

	nulls[0] = !c->has_window || trailing;
	values[0] = TimestampTzGetDatum(c->window_start);
	nulls[1] = false;
	values[1] = Int64GetDatum(c->used);
	nulls[2] = nulls[3] = !trailing || !c->has_window;
	values[2] = values[3] = (Datum) 0;
	if (!nulls[2])
	{
		Datum		ring[LIMIT_RING_SLOTS];

		for (int k = 0; k < LIMIT_RING_SLOTS; k++)
			ring[k] = Int64GetDatum(c->ring[k]);
		values[2] = PointerGetDatum(construct_array(ring, LIMIT_RING_SLOTS, INT8OID, 8, FLOAT8PASSBYVAL,
													TYPALIGN_DOUBLE));
		values[3] = Int64GetDatum(c->head);
	}
	nulls[4] = nulls[5] = !c->def->distinct;
	values[4] = values[5] = (Datum) 0;
	if (c->def->distinct)
	{
		Datum	   *members = palloc(sizeof(Datum) * Max(c->nmembers, 1));
		Datum	   *buckets = palloc(sizeof(Datum) * Max(c->nmembers, 1));

		for (int k = 0; k < c->nmembers; k++)
		{
			members[k] = UUIDPGetDatum(&c->members[k]);
			buckets[k] = Int64GetDatum(c->member_buckets[k]);
		}
		values[4] = PointerGetDatum(construct_array(members, c->nmembers, UUIDOID, UUID_LEN, false,
													TYPALIGN_CHAR));
		values[5] = PointerGetDatum(construct_array(buckets, c->nmembers, INT8OID, 8, FLOAT8PASSBYVAL,
													TYPALIGN_DOUBLE));
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
		Datum		values[LIMIT_COUNTER_NSTATE];
		bool		nulls[LIMIT_COUNTER_NSTATE];

		def.id = *DatumGetUUIDP(spi_value(r, 1, &isnull));
		key.def = &def;
		key.subject = *DatumGetUUIDP(spi_value(r, 2, &isnull));
		c = bsearch(&key, st->counters, st->ncounters, sizeof(LimitCounter), counter_cmp);
		if (c == NULL)
			continue;
		for (int k = 0; k < LIMIT_COUNTER_NSTATE; k++)
			values[k] = spi_value(r, 3 + k, &nulls[k]);
		limits_counter_decode(c, values, nulls);
	}
}

/*
 * One primary key look-up per counter, in the order given, each locking its
 * row if lock: a join would scan all of the tenant's counters with a plan
 * made while the table was small.
 */
#define COUNTERS_SQL(locking) \
	"SELECT c.limit_id, c.subject, c.window_start, c.used, c.ring, c.ring_head, c.members, c.member_buckets " \
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
	int		   *order;
	pg_uuid_t  *lids,
			   *subjects;

	if (st == NULL)
		return;
	st->counters = palloc(sizeof(LimitCounter) * cap);
	st->ncounters = 0;
	st->direct = false;
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

	/* The scope's counters first, then the accounts'; each group sorted. */
	order = palloc(sizeof(int) * n);
	for (int i = 0; i < n; i++)
		if (!st->counters[i].def->per_account || IsolationUsesXactSnapshot())
			order[nscope++] = i;
	for (int i = 0; i < n; i++)
		if (st->counters[i].def->per_account && !IsolationUsesXactSnapshot())
			order[nscope + nacct++] = i;
	if (b->store == &ledger_direct_store && limits_direct_read(b, order, nscope, true) &&
		limits_direct_read(b, order + nscope, nacct, false))
		return;
	lids = palloc(sizeof(pg_uuid_t) * n);
	subjects = palloc(sizeof(pg_uuid_t) * n);
	for (int i = 0; i < n; i++)
	{
		lids[i] = st->counters[order[i]].def->id;
		subjects[i] = st->counters[order[i]].subject;
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
	const LedgerAccount *other = node->agg_side == 'd' ? a->it->cacc : a->it->dacc;
	LimitCounter *c = find_counter(st, def, &acc->meta.id);
	int64		v = c ? limits_used_at(c, a->it->ts) : 0;

	if (!a->uncharged || c == NULL)
		return a->uncharged ? (node->agg == 's' ? a->it->amount : 1) : v;
	if (node->agg == 'd')
		return limits_used_with_member(c, a->it->ts, &other->meta.id);
	return v + (node->agg == 's' ? a->it->amount : 1);
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
	it->nalerts = 0;
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
			if (def->distinct)
				limits_charge_member(counter, it->ts, def->direction == 'd' ? &it->cacc->meta.id : &it->dacc->meta.id);
			else
				fits = limits_charge(counter, it->ts, value);
		}
		/* Edge-triggered: the charge that takes the window's total from below alert_at to it or past. */
		if (fits && counter != NULL && def->alert_at > 0 && used < def->alert_at && used + value >= def->alert_at)
		{
			if (it->alerts == NULL)
				it->alerts = palloc(sizeof(LimitAlert) * (2 * b->limits->set->ndefs + 1));
			it->alerts[it->nalerts].def = def;
			it->alerts[it->nalerts].subject = counter->subject;
			it->alerts[it->nalerts++].used = used + value;
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
				rings,
				members,
				member_buckets,
				member_from,
				member_count;
	int			n = 0,
				nmembers = 0;
	Datum		args[11];

	if (st == NULL)
		return;
	for (int i = 0; i < st->ncounters; i++)
		if (st->counters[i].changed)
		{
			n++;
			nmembers += st->counters[i].nmembers;
		}
	if (n == 0 || (st->direct && limits_direct_write(b)))
		return;
	/* What the direct store did not write: all, or the new counters. */
	n = nmembers = 0;
	for (int i = 0; i < st->ncounters; i++)
		if (st->counters[i].changed)
		{
			n++;
			nmembers += st->counters[i].nmembers;
		}
	ab_init(&lids, n);
	ab_init(&subjects, n);
	ab_init(&starts, n);
	ab_init(&used, n);
	ab_init(&heads, n);
	ab_init(&rings, n * LIMIT_RING_SLOTS);
	ab_init(&members, nmembers);
	ab_init(&member_buckets, nmembers);
	ab_init(&member_from, n);
	ab_init(&member_count, n);
	for (int i = 0; i < st->ncounters; i++)
	{
		LimitCounter *c = &st->counters[i];
		bool		trailing = c->def->window == LIMIT_WINDOW_TRAILING;

		if (!c->changed)
			continue;
		ab_add(&member_from, Int32GetDatum(members.n + 1), false);
		ab_add(&member_count, Int32GetDatum(c->def->distinct ? c->nmembers : -1), false);
		for (int k = 0; c->def->distinct && k < c->nmembers; k++)
		{
			ab_add(&members, UUIDPGetDatum(&c->members[k]), false);
			ab_add(&member_buckets, Int64GetDatum(c->member_buckets[k]), false);
		}
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
		Oid			types[11] = {UUIDOID, UUIDARRAYOID, UUIDARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID,
		INT8ARRAYOID, INT8ARRAYOID, UUIDARRAYOID, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID};

		/* A distinct counter's members are the slice [from, from + count) of $8 and $9 (count -1: none). */
		plan = ledger_prepare("INSERT INTO fincore.limit_counters AS c "
							  "       (tenant_id, limit_id, subject, window_start, used, ring, ring_head, members, member_buckets) "
							  "SELECT $1, k.limit_id, k.subject, k.window_start, k.used, "
							  "       CASE WHEN k.head IS NULL THEN NULL ELSE "
							  "         $7[(k.n OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.*) 60 OPERATOR(pg_catalog.+) 1"
							  "           : k.n OPERATOR(pg_catalog.*) 60] END, k.head, "
							  "       CASE WHEN k.mcount OPERATOR(pg_catalog.<) 0 THEN NULL "
							  "            WHEN k.mcount OPERATOR(pg_catalog.=) 0 THEN '{}'::pg_catalog.uuid[] "
							  "            ELSE $8[k.mfrom : k.mfrom OPERATOR(pg_catalog.+) k.mcount OPERATOR(pg_catalog.-) 1] END, "
							  "       CASE WHEN k.mcount OPERATOR(pg_catalog.<) 0 THEN NULL "
							  "            WHEN k.mcount OPERATOR(pg_catalog.=) 0 THEN '{}'::pg_catalog.int8[] "
							  "            ELSE $9[k.mfrom : k.mfrom OPERATOR(pg_catalog.+) k.mcount OPERATOR(pg_catalog.-) 1] END "
							  "  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), "
							  "                 pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($10), "
							  "                 pg_catalog.unnest($11)) WITH ORDINALITY "
							  "       AS k(limit_id, subject, window_start, used, head, mfrom, mcount, n) "
							  "ON CONFLICT (tenant_id, subject, limit_id) DO UPDATE "
							  "   SET window_start = excluded.window_start, used = excluded.used, "
							  "       ring = excluded.ring, ring_head = excluded.ring_head, "
							  "       members = excluded.members, member_buckets = excluded.member_buckets",
							  11, types);
	}
	args[0] = UUIDPGetDatum(&b->tenant);
	args[1] = ab_array(&lids, UUIDOID);
	args[2] = ab_array(&subjects, UUIDOID);
	args[3] = ab_array(&starts, TIMESTAMPTZOID);
	args[4] = ab_array(&used, INT8OID);
	args[5] = ab_array(&heads, INT8OID);
	args[6] = ab_array(&rings, INT8OID);
	args[7] = ab_array(&members, UUIDOID);
	args[8] = ab_array(&member_buckets, INT8OID);
	args[9] = ab_array(&member_from, INT4OID);
	args[10] = ab_array(&member_count, INT4OID);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "ledger: writing limit counters failed");
}
