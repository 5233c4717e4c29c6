/*
 * ledger_engine.c — the rules, in C over the batch's structs and no SQL:
 * validation of a request, the balance arithmetic and limits of applying an
 * item, idempotency (comparing a replay with the transfer its id names),
 * duplicate ids within a batch, chains and TigerBeetle's precedence.
 */
#include "ledger_int.h"

LedgerResult
check_static(LedgerItem *it)
{
	/* TigerBeetle's first checks: the reserved ids. */
	switch (uuid_reserved(&it->id))
	{
		case -1:
			return LR_ID_MUST_NOT_BE_ZERO;
		case 1:
			return LR_ID_MUST_NOT_BE_INT_MAX;
	}
	/* A fee goes with a transfer that moves money now, and needs somewhere to go. */
	if (it->fee_schedule != NULL &&
		(it->kind != KIND_POSTED || !it->has_fee_account))
		return invalid_request(it, it->has_fee_account ?
							   "a fee applies only to a transfer posted at once, not to a hold, post, void or reversal" :
							   "a fee needs a fee_account");
	if (it->fee_schedule == NULL && it->has_fee_account && !it->is_fee_leg)
		return invalid_request(it, "a fee_account is given without a fee_schedule");
	if (it->is_fee_leg)
		return LR_OK;			/* its amount is known once the fee is computed */
	if ((it->flags & TRANSFER_BALANCING) &&
		((it->kind != KIND_POSTED && it->kind != KIND_PENDING) || it->fee_schedule != NULL))
		return invalid_request(it, "balancing applies to a transfer or a hold, without a fee");
	if ((it->flags & TRANSFER_IMPORTED) && it->fee_schedule != NULL)
		return invalid_request(it, "an imported transfer takes no fee: import the fee as a transfer of its own");
	switch (it->kind)
	{
		case KIND_POSTED:
		case KIND_PENDING:
			if (!it->has_debit || !it->has_credit || !it->has_amount)
				return invalid_request(it, "a transfer needs a debit account, a credit account and an amount");
			if (uuid_equal(&it->debit, &it->credit))
				return LR_ACCOUNTS_MUST_BE_DIFFERENT;
			/* Zero moves nothing and is a transfer all the same (TigerBeetle 0.16). */
			if (it->amount < 0)
				return LR_AMOUNT_MUST_NOT_BE_NEGATIVE;
			if (it->has_timeout)
			{
				if (it->kind != KIND_PENDING)
					return LR_TIMEOUT_RESERVED_FOR_PENDING;
				if (it->timeout.month < 0 || it->timeout.day < 0 || it->timeout.time < 0 ||
					(it->timeout.month == 0 && it->timeout.day == 0 && it->timeout.time == 0))
					return LR_TIMEOUT_MUST_BE_POSITIVE;
			}
			break;
		case KIND_POST:
		case KIND_VOID:
		case KIND_EXPIRE:
		case KIND_REVERSAL:
			if (it->has_timeout)
				return LR_TIMEOUT_RESERVED_FOR_PENDING;
			/* Posting 0 of a hold releases it all (TigerBeetle 0.16); no amount posts it whole. */
			if (it->has_amount && it->amount < 0)
				return LR_AMOUNT_MUST_NOT_BE_NEGATIVE;
			break;
		default:
			return invalid_request(it, "unknown kind of request");
	}
	/* Only a hold can close an account: voiding it opens the account again. */
	if ((it->flags & TRANSFER_CLOSING) && it->kind != KIND_PENDING)
		return LR_CLOSING_TRANSFER_MUST_BE_PENDING;
	return LR_OK;
}

/*
 * The checks TigerBeetle makes first of all, before the id's: a batch is
 * imported as a whole or not at all (as its first item is), an imported item
 * carries its own created_at (timestamp), which must be a time in the past,
 * and an item that is not imported carries none.
 */
LedgerResult
check_imported(const LedgerBatch *b, const LedgerItem *it)
{
	bool		batch_imported = (b->items[0].flags & TRANSFER_IMPORTED) != 0;

	if (it->is_fee_leg)
		return LR_OK;
	if (!(it->flags & TRANSFER_IMPORTED))
	{
		if (batch_imported)
			return LR_IMPORTED_EVENT_EXPECTED;
		return it->has_timestamp ? LR_TIMESTAMP_MUST_BE_ZERO : LR_OK;
	}
	if (!batch_imported)
		return LR_IMPORTED_EVENT_NOT_EXPECTED;
	if (!it->has_timestamp || TIMESTAMP_NOT_FINITE(it->timestamp))
		return LR_IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE;
	if (it->timestamp >= b->now)
		return LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE;
	return LR_OK;
}

/*
 * ts + iv, as timestamptz_pl_interval() computes it (months, then days in the
 * session's time zone, then time), or false where that would raise because
 * the result is not a representable time: a refusal of its own
 * (overflows_timeout), never a raw 22008.
 */
bool
timestamptz_plus_interval(TimestampTz ts, const Interval *iv, TimestampTz *out)
{
	struct pg_tm tt,
			   *tm = &tt;
	fsec_t		fsec;
	int			tz;

	if (TIMESTAMP_NOT_FINITE(ts))
	{
		*out = ts;
		return true;
	}
	/* Beyond these no time is representable (and date2j's int arithmetic stays in range). */
	if (Abs((int64) iv->month) > INT64CONST(12) * 300000 || Abs((int64) iv->day) > INT64CONST(366) * 300000)
		return false;
	if (iv->month != 0)
	{
		if (timestamp2tm(ts, &tz, tm, &fsec, NULL, NULL) != 0)
			return false;
		tm->tm_mon += iv->month;
		if (tm->tm_mon > MONTHS_PER_YEAR)
		{
			tm->tm_year += (tm->tm_mon - 1) / MONTHS_PER_YEAR;
			tm->tm_mon = ((tm->tm_mon - 1) % MONTHS_PER_YEAR) + 1;
		}
		else if (tm->tm_mon < 1)
		{
			tm->tm_year += tm->tm_mon / MONTHS_PER_YEAR - 1;
			tm->tm_mon = tm->tm_mon % MONTHS_PER_YEAR + MONTHS_PER_YEAR;
		}
		/* The last day of a shorter month, as PostgreSQL does. */
		if (tm->tm_mday > day_tab[isleap(tm->tm_year)][tm->tm_mon - 1])
			tm->tm_mday = day_tab[isleap(tm->tm_year)][tm->tm_mon - 1];
		if (!IS_VALID_JULIAN(tm->tm_year, tm->tm_mon, tm->tm_mday))
			return false;
		tz = DetermineTimeZoneOffset(tm, session_timezone);
		if (tm2timestamp(tm, fsec, &tz, &ts) != 0)
			return false;
	}
	if (iv->day != 0)
	{
		int			julian;

		if (timestamp2tm(ts, &tz, tm, &fsec, NULL, NULL) != 0)
			return false;
		julian = date2j(tm->tm_year, tm->tm_mon, tm->tm_mday) + iv->day;
		j2date(julian, &tm->tm_year, &tm->tm_mon, &tm->tm_mday);
		if (!IS_VALID_JULIAN(tm->tm_year, tm->tm_mon, tm->tm_mday))
			return false;
		tz = DetermineTimeZoneOffset(tm, session_timezone);
		if (tm2timestamp(tm, fsec, &tz, &ts) != 0)
			return false;
	}
	if (pg_add_s64_overflow(ts, iv->time, &ts) || !IS_VALID_TIMESTAMP(ts))
		return false;
	*out = ts;
	return true;
}

/* ---- applying an item ---- */

static inline bool
add_checked(int64 *v, int64 delta)
{
	return !pg_add_s64_overflow(*v, delta, v);
}

/*
 * Do an account's totals fit?  TigerBeetle's rules (each counter, and pending
 * + posted on each side, so that an accepted hold can always be posted) and
 * the available balance every reader computes (credits_posted + credit_limit).
 */
static inline bool
totals_fit(const Balances *t, int64 credit_limit)
{
	/* No lower bounds: a lock-free leg's total leaves out the deltas not yet rolled up. */
	return (int128) t->dp + t->dpo <= PG_INT64_MAX &&
		(int128) t->cp + t->cpo <= PG_INT64_MAX &&
		(int128) t->cpo + credit_limit <= PG_INT64_MAX;
}

/* Apply signed deltas to an account; false when a total would not fit (nothing changed then). */
static bool
account_apply(LedgerBatch *b, LedgerAccount *a, int64 dp, int64 dpo, int64 cp, int64 cpo)
{
	Balances	n = a->bal;

	if (!add_checked(&n.dp, dp) || !add_checked(&n.dpo, dpo) ||
		!add_checked(&n.cp, cp) || !add_checked(&n.cpo, cpo))
		return false;
	if (a->locked && !totals_fit(&n, a->has_limit ? a->credit_limit : 0))
		return false;
	if (a->lockfree)
	{
		/* n is this batch's delta; the row's counters are below the ceiling (see lock_accounts). */
		Balances	t = a->base;

		if (!add_checked(&t.dp, n.dp) || !add_checked(&t.dpo, n.dpo) ||
			!add_checked(&t.cp, n.cp) || !add_checked(&t.cpo, n.cpo) ||
			!totals_fit(&t, a->has_limit ? a->credit_limit : 0))
			return false;
	}
	undo_push(b, a, NULL);
	a->bal = n;
	a->changed = true;
	return true;
}

/* Would these deltas break a limit of a locked account? */
static LedgerResult
limit_check(const LedgerAccount *a, int64 dp, int64 dpo, int64 cp, int64 cpo, bool debit_side)
{
	int128		debits,
				credits,
				limit = a->has_limit ? a->credit_limit : 0;

	if (!a->locked)
		return LR_OK;			/* lock-free legs cannot break a limit */
	debits = (int128) a->bal.dp + dp + a->bal.dpo + dpo;
	credits = (int128) a->bal.cp + cp + a->bal.cpo + cpo;
	if (debit_side && (a->meta.flags & ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) &&
		debits > (int128) a->bal.cpo + cpo + limit)
		return LR_EXCEEDS_CREDITS;
	if (!debit_side && (a->meta.flags & ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS) &&
		credits > (int128) a->bal.dpo + dpo + limit)
		return LR_EXCEEDS_DEBITS;
	return LR_OK;
}

static LedgerResult
status_check(const LedgerItem *it, const LedgerAccount *d, const LedgerAccount *c)
{
	int32		ref_flags = it->kind == KIND_POST && it->ref ? it->ref->flags : 0;

	/* Releasing a hold works on frozen and closed accounts. */
	if (it->kind == KIND_VOID || it->kind == KIND_EXPIRE)
		return LR_OK;
	/* The hold that closed an account can still be posted (TigerBeetle). */
	if (d->status == 'c' && !(ref_flags & TRANSFER_CLOSING_DEBIT))
		return LR_DEBIT_ACCOUNT_CLOSED;
	if (c->status == 'c' && !(ref_flags & TRANSFER_CLOSING_CREDIT))
		return LR_CREDIT_ACCOUNT_CLOSED;
	if (d->status == 'f')
		return LR_DEBIT_ACCOUNT_FROZEN;
	if (c->status == 'f')
		return LR_CREDIT_ACCOUNT_FROZEN;
	return LR_OK;
}

/*
 * TigerBeetle's balancing transfers: move at most amount, less as needed so
 * that the debit account's debits (pending and posted) stay within its credits
 * posted (plus its credit limit, if it is flagged debits_must_not_exceed_credits),
 * and likewise the credit account's credits within its debits.  Both accounts
 * are locked (leg_needs_lock), so the balances are exact.  Never below zero: a
 * zero transfer is still a transfer.
 */
static int64
balancing_amount(const LedgerItem *it, const LedgerAccount *d, const LedgerAccount *c, int64 amount)
{
	int128		room;

	if (it->flags & TRANSFER_BALANCING_DEBIT)
	{
		room = (int128) d->bal.cpo - d->bal.dpo - d->bal.dp +
			((d->meta.flags & ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) && d->has_limit ? d->credit_limit : 0);
		if (room < amount)
			amount = (int64) Max(room, 0);
	}
	if (it->flags & TRANSFER_BALANCING_CREDIT)
	{
		room = (int128) c->bal.dpo - c->bal.cpo - c->bal.cp +
			((c->meta.flags & ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS) && c->has_limit ? c->credit_limit : 0);
		if (room < amount)
			amount = (int64) Max(room, 0);
	}
	return amount;
}

/* Apply one item; on a refusal nothing is changed. */
LedgerResult
apply_item(LedgerBatch *b, LedgerItem *it)
{
	LedgerAccount *d,
			   *c;
	RefTransfer *ref = it->ref;
	int64		amount = it->has_amount ? it->amount : 0;
	int64		ddp = 0,
				ddpo = 0,
				dcp = 0,
				dcpo = 0;
	LedgerResult r;
	int			mark = b->nundo;

	if (it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE)
	{
		/* TigerBeetle's order: the hold, what the request says of it, then its state. */
		if (ref == NULL || !ref->found)
			return LR_PENDING_TRANSFER_NOT_FOUND;
		if (ref->kind != KIND_PENDING)
			return LR_PENDING_TRANSFER_NOT_PENDING;
		if (it->has_debit && !uuid_equal(&it->debit, &ref->debit))
			return LR_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID;
		if (it->has_credit && !uuid_equal(&it->credit, &ref->credit))
			return LR_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID;
		if (it->has_currency && it->dacc != NULL && it->dacc->found && it->currency != it->dacc->meta.currency)
			return LR_PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY;
		/* Code 0, or none, means the hold's code. */
		if (it->has_code && it->code != 0 && it->code != ref->code)
			return LR_PENDING_TRANSFER_HAS_DIFFERENT_CODE;
		it->pending_amount = ref->amount;
		if (it->kind == KIND_POST)
		{
			if (!it->has_amount)
				amount = ref->amount;
			if (amount > ref->amount)
				return LR_EXCEEDS_PENDING_TRANSFER_AMOUNT;
		}
		else
		{
			/* A void releases the whole hold: an amount, if given, must be the hold's. */
			if (it->kind == KIND_VOID && it->has_amount && it->amount != ref->amount)
				return LR_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT;
			amount = 0;
		}
		if (ref->resolved == KIND_POST)
			return LR_PENDING_TRANSFER_ALREADY_POSTED;
		if (ref->resolved == KIND_VOID)
			return LR_PENDING_TRANSFER_ALREADY_VOIDED;
		if (ref->resolved == KIND_EXPIRE)
			return LR_PENDING_TRANSFER_EXPIRED;
		if (it->kind == KIND_EXPIRE)
		{
			if (!ref->has_expiry || ref->expires_at > it->ts)
				return invalid_request(it, "the hold is not due to expire yet");
		}
		else if (ref->has_expiry && ref->expires_at <= it->ts)
			return LR_PENDING_TRANSFER_EXPIRED;
		if (!it->has_code || it->code == 0)
			it->code = ref->code;
		d = it->dacc;
		c = it->cacc;
		ddp = -ref->amount;
		dcp = -ref->amount;
		ddpo = amount;
		dcpo = amount;
	}
	else
	{
		if (it->kind == KIND_REVERSAL)
		{
			int64		left;

			if (ref == NULL || !ref->found)
				return LR_TRANSFER_NOT_FOUND;
			if (ref->kind != KIND_POSTED && ref->kind != KIND_POST)
				return LR_TRANSFER_NOT_REVERSIBLE;
			left = ref->amount - ref->reversed;
			if (!it->has_amount)
			{
				if (left <= 0)
					return LR_EXCEEDS_REVERSIBLE_AMOUNT;
				amount = left;
			}
			if (amount > left)
				return LR_EXCEEDS_REVERSIBLE_AMOUNT;
			if ((it->has_debit && !uuid_equal(&it->debit, &ref->credit)) ||
				(it->has_credit && !uuid_equal(&it->credit, &ref->debit)))
				return invalid_request(it, "the accounts given are not the reversed transfer's, swapped");
			if (!it->has_code)
				it->code = ref->code;
		}
		d = it->dacc;
		c = it->cacc;
		if ((it->flags & TRANSFER_BALANCING) && d != NULL && d->found && c != NULL && c->found)
		{
			/* A replay learnt of after applying (a single call) compares what was asked for. */
			it->asked = amount;
			it->asked_known = true;
			amount = balancing_amount(it, d, c, amount);
		}
		if (it->kind == KIND_PENDING)
			ddp = dcp = amount;
		else
			ddpo = dcpo = amount;
	}

	if (d == NULL || !d->found)
		return LR_DEBIT_ACCOUNT_NOT_FOUND;
	if (c == NULL || !c->found)
		return LR_CREDIT_ACCOUNT_NOT_FOUND;
	if (d->meta.currency != c->meta.currency ||
		(it->has_currency && it->currency != d->meta.currency))
		return LR_CURRENCY_MISMATCH;
	if (it->flags & TRANSFER_IMPORTED)
	{
		/* Each account's transfers stay in time order, and so do the batch's. */
		if (it->ts <= b->last_imported || it->ts <= d->last_ts || it->ts <= c->last_ts)
			return LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS;
		if (it->ts <= d->created_at)
			return LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT;
		if (it->ts <= c->created_at)
			return LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT;
		/* An expiry would be relative to a time long past. */
		if (it->kind == KIND_PENDING && it->has_timeout)
			return LR_IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO;
	}
	if ((r = status_check(it, d, c)) != LR_OK)
		return r;

	/* TigerBeetle's order: the totals' overflow, then the timeout's, then the limits. */
	if (!account_apply(b, d, ddp, ddpo, 0, 0) || !account_apply(b, c, 0, 0, dcp, dcpo))
	{
		undo_to(b, mark);
		return LR_OVERFLOWS_BALANCE;
	}
	undo_to(b, mark);
	if (it->kind == KIND_PENDING && it->has_timeout && !it->has_expiry)
		return LR_OVERFLOWS_TIMEOUT;
	if ((r = limit_check(d, ddp, ddpo, 0, 0, true)) != LR_OK)
		return r;
	if ((r = limit_check(c, 0, 0, dcp, dcpo, false)) != LR_OK)
		return r;
	if (!account_apply(b, d, ddp, ddpo, 0, 0) || !account_apply(b, c, 0, 0, dcp, dcpo))
		elog(ERROR, "ledger: totals that fitted a moment ago no longer fit");
	it->amount = amount;
	it->has_amount = true;
	it->d_after = d->bal;
	it->c_after = c->bal;

	/* account_apply saved both accounts for an undo: status and times included. */
	if (it->kind == KIND_PENDING)
	{
		/* A closing hold closes its account(s); they must be active (status_check). */
		if (it->flags & TRANSFER_CLOSING_DEBIT)
			d->status = 'c', d->status_changed = true;
		if (it->flags & TRANSFER_CLOSING_CREDIT)
			c->status = 'c', c->status_changed = true;
	}
	else if ((it->kind == KIND_VOID || it->kind == KIND_EXPIRE) && (ref->flags & TRANSFER_CLOSING))
	{
		/* Releasing a closing hold opens what it closed again. */
		if (ref->flags & TRANSFER_CLOSING_DEBIT)
			d->status = 'a', d->status_changed = true;
		if (ref->flags & TRANSFER_CLOSING_CREDIT)
			c->status = 'a', c->status_changed = true;
	}
	if (it->flags & TRANSFER_IMPORTED)
		d->last_ts = c->last_ts = b->last_imported = it->ts;

	if (ref != NULL)
	{
		undo_push(b, NULL, ref);
		if (it->kind == KIND_REVERSAL)
			ref->reversed += amount;
		else
			ref->resolved = it->kind;
	}
	if (it->kind == KIND_PENDING || it->kind == KIND_POSTED)
	{
		/* Later items of the batch may post, void or reverse this one. */
		RefTransfer *self = batch_ref(b, &it->id, false);

		if (self != NULL)
		{
			undo_push(b, NULL, self);
			self->found = true;
			self->in_batch = true;
			self->kind = it->kind;
			self->debit = it->debit;
			self->credit = it->credit;
			self->amount = amount;
			self->code = it->code;
			self->flags = it->flags;
			self->has_expiry = it->has_expiry;
			self->expires_at = it->expires_at;
			self->resolved = 0;
			self->reversed = 0;
			self->created_at = it->ts;
		}
	}
	return LR_OK;
}

static bool
jsonb_same(Jsonb *a, Jsonb *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return compareJsonbContainers(&a->root, &b->root) == 0;
}

/* A numeric member of a jsonb object, as int64; false if missing. */
static bool
jsonb_int_member(JsonbContainer *obj, const char *key, int64 *out)
{
	JsonbValue	v;

	if (!JsonContainerIsObject(obj) ||
		getKeyJsonValueFromContainer(obj, key, strlen(key), &v) == NULL || v.type != jbvNumeric)
		return false;
	*out = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v.val.numeric)));
	return true;
}

/*
 * What a transfer with a fee stored about it: metadata.fee holds the
 * requested amount and the fee (the row's amount is what the payee got).
 */
static bool
stored_fee(Jsonb *metadata, int64 *gross, int64 *fee)
{
	JsonbValue	v;

	if (metadata == NULL || !JB_ROOT_IS_OBJECT(metadata) ||
		getKeyJsonValueFromContainer(&metadata->root, "fee", 3, &v) == NULL || v.type != jbvBinary)
		return false;
	return jsonb_int_member(v.val.binary.data, "amount", gross) &&
		jsonb_int_member(v.val.binary.data, "fee", fee);
}

/* The requested metadata of a stored transfer: without the fee the ledger added. */
static Jsonb *
metadata_without_fee(Jsonb *metadata)
{
	Jsonb	   *m;

	if (metadata == NULL || !JB_ROOT_IS_OBJECT(metadata))
		return metadata;
	m = DatumGetJsonbP(DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(metadata), CStringGetTextDatum("fee")));
	/* A fee added to no metadata at all leaves {}: that was NULL. */
	return JB_ROOT_COUNT(m) == 0 && JB_ROOT_COUNT(metadata) == 1 ? NULL : m;
}

/* Compare a replayed item with the transfer its id already names. */
LedgerResult
compare_existing(LedgerBatch *b, LedgerItem *it, ExistingTransfer *ex)
{
	int64		gross = 0,
				fee = 0;
	bool		had_fee = ex->kind == KIND_POSTED && stored_fee(ex->metadata, &gross, &fee);
	Jsonb	   *metadata = had_fee ? metadata_without_fee(ex->metadata) : ex->metadata;

	if (!uuid_equal(&ex->tenant, &b->tenant))
		return LR_ID_ALREADY_USED;
	if (ex->kind == KIND_FAILED)
		return LR_ID_ALREADY_FAILED;
	it->diff_field = NULL;

	/*
	 * In TigerBeetle's order (create_transfers results): flags (here the kind,
	 * the flags, and whether a fee was charged), pending_id, timeout, debit account,
	 * credit account, amount, user data (metadata), ledger (currency), code.
	 * A transfer or hold must name both accounts and an amount; one that does
	 * not differs from the stored one.
	 */
	if (ex->kind != it->kind)
		it->diff_field = "kind";
	else if (ex->flags != it->flags)
		it->diff_field = "flags";
	else if ((it->fee_schedule != NULL) != had_fee)
		it->diff_field = "fee_schedule";
	else if ((it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_REVERSAL) &&
			 (!ex->has_ref || !uuid_equal(&it->ref_id, &ex->ref)))
		it->diff_field = it->kind == KIND_REVERSAL ? "reversal_of" : "pending_id";
	else if (it->kind == KIND_PENDING &&
			 (it->has_timeout != ex->has_timeout ||
			  (it->has_timeout && memcmp(&it->timeout, &ex->timeout, sizeof(Interval)) != 0)))
		it->diff_field = "timeout";
	else if ((it->kind == KIND_POSTED || it->kind == KIND_PENDING) &&
			 (!it->has_debit || !uuid_equal(&it->debit, &ex->debit)))
		it->diff_field = "debit_account_id";
	else if ((it->kind == KIND_POSTED || it->kind == KIND_PENDING) &&
			 (!it->has_credit || !uuid_equal(&it->credit, &ex->credit)))
		it->diff_field = "credit_account_id";
	else if (it->kind == KIND_POST &&
			 (it->has_amount ? it->amount != ex->amount : ex->amount != ex->pending_amount))
		it->diff_field = "amount";
	else if ((it->kind == KIND_POSTED || it->kind == KIND_PENDING) &&
			 (!it->has_amount ||
			  /* A balancing transfer moved at most what it asked for (TigerBeetle). */
			  ((it->flags & TRANSFER_BALANCING) ?
			   (it->asked_known ? it->asked : it->amount) < ex->amount :
			   had_fee ? it->gross_amount != gross : it->amount != ex->amount)))
		it->diff_field = "amount";
	else if (it->kind == KIND_REVERSAL && it->has_amount && it->amount != ex->amount)
		it->diff_field = "amount";
	else if (!jsonb_same(had_fee ? it->user_metadata : it->metadata, metadata))
		it->diff_field = "metadata";
	else if (it->has_currency && it->currency != ex->currency)
		it->diff_field = "currency";
	else if (it->has_code && it->code != ex->code &&
			 !((it->kind == KIND_POST || it->kind == KIND_VOID) && it->code == 0))
		it->diff_field = "code";
	if (it->diff_field != NULL)
		return LR_EXISTS_WITH_DIFFERENT;
	/* The original, for the caller. */
	it->amount = ex->amount;
	it->has_amount = true;
	it->debit = ex->debit;
	it->credit = ex->credit;
	it->ts = ex->created_at;
	it->fee = had_fee ? fee : 0;
	return LR_EXISTS;
}

/*
 * Does request items[i] fail on the ledger's state (a transient result, its
 * own or its fee leg's), so that a batch records its id as failed?
 */
bool
request_failed_on_state(const LedgerBatch *b, int i)
{
	const LedgerItem *it = &b->items[i];

	if (!b->record_failures || it->is_fee_leg)
		return false;
	if (result_is_transient(it->result))
		return true;
	return it->result == LR_LINKED_EVENT_FAILED && i + 1 < b->nitems && b->items[i + 1].is_fee_leg &&
		result_is_transient(b->items[i + 1].result);
}

/* Which accounts and referenced transfers the items name. */
/* qsort of item indexes by id, then position. */
static LedgerItem *dup_sort_items;

static int
dup_sort_cmp(const void *a, const void *b)
{
	int			i = *(const int *) a,
				j = *(const int *) b;
	int			c = memcmp(&dup_sort_items[i].id, &dup_sort_items[j].id, sizeof(pg_uuid_t));

	return c != 0 ? c : (i > j) - (i < j);
}

/*
 * Link every item to the previous item of the batch with the same id
 * (dup_prev), so that a later one sees an earlier one that was created as an
 * existing transfer, as TigerBeetle applies a batch in order.  Fee legs take
 * their ids from their transfers and follow them.
 */
void
mark_duplicate_ids(LedgerBatch *b)
{
	int		   *order = palloc(sizeof(int) * Max(b->nitems, 1));

	for (int i = 0; i < b->nitems; i++)
	{
		order[i] = i;
		b->items[i].dup_prev = -1;
	}
	dup_sort_items = b->items;
	qsort(order, b->nitems, sizeof(int), dup_sort_cmp);
	for (int k = 1; k < b->nitems; k++)
		if (uuid_equal(&b->items[order[k]].id, &b->items[order[k - 1]].id) &&
			!b->items[order[k]].is_fee_leg && !b->items[order[k - 1]].is_fee_leg)
			b->items[order[k]].dup_prev = order[k - 1];
	pfree(order);
}

/* An item of this batch that was created, as the transfer a later item with its id finds. */
void
existing_from_item(LedgerBatch *b, const LedgerItem *j, ExistingTransfer *ex)
{
	memset(ex, 0, sizeof(*ex));
	ex->id = j->id;
	ex->tenant = b->tenant;
	ex->kind = j->kind;
	ex->debit = j->dacc ? j->dacc->meta.id : j->debit;
	ex->credit = j->cacc ? j->cacc->meta.id : j->credit;
	ex->amount = j->amount;
	ex->pending_amount = j->pending_amount;
	ex->code = j->code;
	ex->has_ref = j->kind == KIND_POST || j->kind == KIND_VOID || j->kind == KIND_EXPIRE ||
		j->kind == KIND_REVERSAL;
	ex->ref = j->ref_id;
	ex->has_timeout = j->has_timeout;
	ex->timeout = j->timeout;
	ex->metadata = j->metadata;
	ex->flags = j->flags;
	ex->created_at = j->ts;
	ex->currency = j->dacc ? j->dacc->meta.currency : 0;
}

/* Is items[i] part of a chain, and where does that chain end? */
int
chain_end(LedgerBatch *b, int start)
{
	int			i = start;

	while (i < b->nitems - 1 && b->items[i].linked)
		i++;
	return i;
}
