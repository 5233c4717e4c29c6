/*
 * ledger.c — the posting engine: transfers, holds (pending / post / void /
 * expire), reversals and linked batches, with TigerBeetle's semantics.
 *
 * Every entry point (transfer, post_pending, void_pending, reverse,
 * create_transfers, expire_pending) builds a batch of items and runs it
 * through one engine, ledger_execute():
 *
 *  1. validate what can be checked without the database;
 *  2. load the transfers the items refer to (holds to post or void, transfers
 *     to reverse) and the accounts' immutable metadata (cached per backend);
 *  3. lock every account whose balance must be checked, in one statement, in
 *     id order — one global order, so concurrent calls never deadlock — and
 *     read the balances under the lock;
 *  4. apply the items in order to an in-memory copy of the balances, checking
 *     every limit; a linked chain that fails is undone in memory;
 *  5. write: the transfer rows first (so that a concurrent duplicate id is
 *     detected before anything else is written), then the new balances, the
 *     deltas of hot accounts, history rows and the open holds.
 *
 * Nothing is written before everything is validated, so a refused call or a
 * refused item leaves no partial write.  A single call (batch of one) skips
 * the existence check of step 2 and learns of a replayed id from the INSERT's
 * ON CONFLICT, which keeps the common path at three statements: lock and
 * read, insert, update.
 *
 * Hot accounts: a leg that cannot break a limit of a hot account (a credit,
 * unless credits_must_not_exceed_debits; a debit, unless
 * debits_must_not_exceed_credits; any release of a hold) does not lock or
 * update the account row; it appends a delta row instead, so such legs never
 * serialise on the account.  Legs that can break a limit lock the row and
 * check the exact balance: the row plus every committed delta (concurrent
 * unlocked legs only ever move the balance away from the limit).
 *
 * The files: ledger_engine.c (the rules, pure C), ledger_store.c (SQL),
 * ledger_fees.c, ledger_events.c, ledger_errors.c, ledger_api.c (the SQL
 * functions) and ledger_maint.c, over ledger_core.c and ledger_int.h.
 */
#include "ledger_int.h"

static void
collect(LedgerBatch *b)
{
	b->accounts = palloc0(sizeof(LedgerAccount) * (2 * b->nitems + 1));
	b->refs = palloc0(sizeof(RefTransfer) * (2 * b->nitems + 1));
	b->naccounts = b->nrefs = 0;
	b->account_index = b->ref_index = NULL;

	/* Items that later items of the batch may refer to. */
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];

		if (it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE ||
			it->kind == KIND_REVERSAL)
			(void) batch_ref(b, &it->ref_id, true);
	}
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];
		RefTransfer *self = batch_ref(b, &it->id, false);

		/* An id both referred to and created here is resolved in memory. */
		if (self != NULL && (it->kind == KIND_POSTED || it->kind == KIND_PENDING))
			self->in_batch = true;
	}
	mark_duplicate_ids(b);
}

/* Resolve the accounts of every item (after the refs are loaded). */
static void
resolve_accounts(LedgerBatch *b)
{
	batch_accounts_reset(b);
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];
		const pg_uuid_t *d = NULL,
				   *c = NULL;

		it->dacc = it->cacc = NULL;
		it->ref = NULL;
		if (it->result != LR_OK)
			continue;
		if (it->kind == KIND_POSTED || it->kind == KIND_PENDING)
		{
			d = &it->debit;
			c = &it->credit;
		}
		else
		{
			RefTransfer *ref = batch_ref(b, &it->ref_id, false);

			it->ref = ref;
			if (ref != NULL && ref->in_batch)
			{
				/* Created by an earlier item: its accounts are known already. */
				for (int j = 0; j < i; j++)
					if (uuid_equal(&b->items[j].id, &it->ref_id))
					{
						d = &b->items[j].debit;
						c = &b->items[j].credit;
						ref->flags = b->items[j].flags;	/* a closing hold's void locks what it opens */
					}
			}
			else if (ref != NULL && ref->found)
			{
				d = &ref->debit;
				c = &ref->credit;
			}
			if (d != NULL && it->kind == KIND_REVERSAL)
			{
				const pg_uuid_t *t = d;

				d = c;
				c = t;
			}
		}
		if (d != NULL)
			it->dacc = batch_account(b, d, true);
		if (c != NULL)
			it->cacc = batch_account(b, c, true);
	}
}

static void
mark_locks(LedgerBatch *b)
{
	for (int i = 0; i < b->naccounts; i++)
		b->accounts[i].needs_lock = false;
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];

		/* A reversal's legs count for limits as the reversed transfer's: swapped. */
		char		dside = it->kind == KIND_REVERSAL ? 'c' : 'd';
		char		cside = it->kind == KIND_REVERSAL ? 'd' : 'c';

		if (it->dacc && (leg_needs_lock(it->dacc, true, it) || limits_account_needs_lock(b, it->dacc, dside)))
			it->dacc->needs_lock = true;
		if (it->cacc && (leg_needs_lock(it->cacc, false, it) || limits_account_needs_lock(b, it->cacc, cside)))
			it->cacc->needs_lock = true;
	}
}

/* Every item's result from the request alone (and any result preset by the caller). */
static void
check_items(LedgerBatch *b)
{
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];

		it->result = it->preset != LR_OK ? it->preset : check_static(it);
	}
}

/* Under the accounts' locks: read again what may have changed while waiting for them. */
static void
reread_under_locks(LedgerBatch *b)
{
	/*
	 * Whether a hold is resolved and how much of a transfer is reversed can
	 * have changed while we waited for the locks: every writer of those facts
	 * holds the same accounts' locks, so reading them again now (a new
	 * snapshot, in READ COMMITTED) sees the last word.
	 */
	if (b->nrefs > 0)
		load_refs(b, true);
	if (b->imported)
		load_account_times(b);
	b->now = GetCurrentTimestamp();
	b->nundo = 0;
	b->last_imported = DT_NOBEGIN;
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];
		LedgerResult r;

		/* TigerBeetle checks these before anything else (malformed items aside). */
		if (it->preset == LR_OK && (r = check_imported(b, it)) != LR_OK)
			it->result = r;
	}
}

/* A batch looks up every id once, after the locks: an id that exists is a replay. */
static void
check_replays(LedgerBatch *b)
{
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * b->nitems);
	ExistingTransfer *ex = NULL;
	int			nex = 0,
				nids = 0;

	/* An id fincore generated for this call names nothing yet. */
	for (int i = 0; i < b->nitems; i++)
		if (!b->items[i].id_generated)
			ids[nids++] = b->items[i].id;
	if (nids > 0)
		nex = load_existing(b, ids, nids, &ex);
	/*
	 * As in TigerBeetle, a replay is recognised before the request is
	 * validated: only a reserved id comes first.
	 */
	for (int e = 0; e < nex; e++)
		for (int i = 0; i < b->nitems; i++)
			if (uuid_equal(&b->items[i].id, &ex[e].id) && !b->items[i].is_fee_leg &&
				!result_precedes_exists(b->items[i].result))
				b->items[i].result = compare_existing(b, &b->items[i], &ex[e]);
}

/* Apply the items in order; a chain is applied whole or undone. */
static void
apply_items(LedgerBatch *b)
{
	for (int i = 0; i < b->nitems;)
	{
		int			end = chain_end(b, i);
		int			mark = b->nundo;
		TimestampTz last_imported = b->last_imported;
		int			failed = -1;
		bool		open = (end == b->nitems - 1 && b->items[end].linked);

		for (int k = i; k <= end; k++)
		{
			LedgerItem *it = &b->items[k];

			/* One microsecond apart, in request order; an import says when. */
			it->ts = (it->flags & TRANSFER_IMPORTED) && it->has_timestamp ? it->timestamp : b->now + k;
			/* An active review rule makes a transfer a hold, before it is applied. */
			if (it->result == LR_OK && !it->skip)
				limits_review(b, it);
			if (it->kind == KIND_PENDING && it->has_timeout)
			{
				/* A hold must be able to expire: apply_item refuses one whose expiry is not a representable time. */
				it->has_expiry = timestamptz_plus_interval(it->ts, &it->timeout, &it->expires_at);
			}
			/* An earlier item of the batch with this id that was created: this one replays it. */
			if (it->dup_prev >= 0 && !result_precedes_exists(it->result))
			{
				for (int j = it->dup_prev; j >= 0; j = b->items[j].dup_prev)
				{
					if (b->items[j].result == LR_OK)
					{
						ExistingTransfer ex;

						existing_from_item(b, &b->items[j], &ex);
						it->result = compare_existing(b, it, &ex);
						break;
					}
					/* Recorded as failed a moment ago (see write_failures). */
					if (request_failed_on_state(b, j))
					{
						it->result = LR_ID_ALREADY_FAILED;
						break;
					}
				}
			}
			if (it->result == LR_OK && !it->skip)
			{
				int			item_mark = b->nundo;

				it->result = apply_item(b, it);
				/* Then its limits: a refusal undoes what the item applied. */
				if (it->result == LR_OK && (it->result = limits_apply(b, it)) != LR_OK)
					undo_to(b, item_mark);
			}
			/* Any other result fails the chain, exists included (TigerBeetle). */
			if (it->result != LR_OK && failed < 0)
				failed = k;
		}
		if (open && failed < 0 && end > i - 1)
		{
			failed = end;
			b->items[end].result = LR_LINKED_EVENT_CHAIN_OPEN;
		}
		if (failed >= 0 && (end > i || open))
		{
			undo_to(b, mark);
			b->last_imported = last_imported;
			for (int k = i; k <= end; k++)
				if (k != failed)
					b->items[k].result = LR_LINKED_EVENT_FAILED;
		}
		i = end + 1;
	}
}

/*
 * A single call: raise the refusal it reports, if any.  Returns false when
 * there is nothing to write (a replay).
 */
static bool
single_call_proceeds(LedgerBatch *b)
{
	LedgerItem *it = &b->items[0];
	LedgerItem *failed = NULL;

	/* The refusal to report: the item's own, else its fee leg's. */
	for (int i = 0; i < b->nitems && failed == NULL; i++)
		if (b->items[i].result != LR_OK && b->items[i].result != LR_EXISTS &&
			b->items[i].result != LR_LINKED_EVENT_FAILED)
			failed = &b->items[i];
	if (it->result == LR_EXISTS)
		return false;		/* a replay: nothing to write */
	if (failed != NULL)
	{
		/* A replay of a transfer that succeeded may no longer pass validation. */
		ExistingTransfer *ex;
		int			nex;

		if (b->optimistic && !it->id_generated && (nex = load_existing(b, &it->id, 1, &ex)) >= 1)
		{
			it->result = compare_existing(b, it, &ex[nex - 1]);
			if (it->result == LR_EXISTS)
				return false;
			failed = it;
		}
		raise_item_error(failed);
	}
	return true;
}

/*
 * Write the batch: transfer rows first (a concurrent duplicate id is found
 * before anything else is written), failed ids, balances, statuses, deltas,
 * history, holds, events.  Returns false when a concurrent transaction
 * committed one of a batch's ids first: nothing was written, run it again.
 */
static bool
write_batch(LedgerBatch *b)
{
	LedgerItem **rows = palloc(sizeof(LedgerItem *) * b->nitems);
	int			n = 0;
	int			inserted;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	bool		subxact = !b->optimistic;
	bool		balances_written = false;
	int			nfailed = 0;
	const LedgerStore *store = b->store;

	for (int i = 0; i < b->nitems; i++)
	{
		if (b->items[i].result == LR_OK && !b->items[i].skip)
			rows[n++] = &b->items[i];
		if (request_failed_on_state(b, i))
			nfailed++;
	}
	if (n == 0 && nfailed == 0)
		return true;

	/*
	 * More than one row is inserted in a subtransaction: if a concurrent
	 * transaction committed one of its ids first, the insert is undone
	 * and the batch runs again, seeing that row as an existing transfer.
	 */
	if (subxact)
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
	}
	/* Their events are the rows themselves: their places in the stream first. */
	if (b->events_as_rows)
		number_transfer_events(b, rows, n);
	inserted = n > 0 ? store->insert_transfers(b, rows, n, &balances_written) : 0;
	if (inserted < n)
	{
		if (subxact)
		{
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			return false;
		}
		else
		{
			/* Single call: the row was not inserted, so nothing was written. */
			LedgerItem *it = &b->items[0];
			ExistingTransfer *ex;
			int			nex;

			if ((nex = load_existing(b, &it->id, 1, &ex)) >= 1)
			{
				it->result = compare_existing(b, it, &ex[nex - 1]);
				if (it->result == LR_EXISTS)
					return true;
				raise_item_error(it);
			}
			/* The hold was resolved by a concurrent call. */
			load_refs(b, true);
			it->ref = batch_ref(b, &it->ref_id, false);
			it->result = apply_item(b, it);
			if (it->result == LR_OK)
				elog(ERROR, "ledger: transfer %s could not be inserted", uuid_text(&it->id));
			raise_item_error(it);
		}
	}
	if (nfailed > 0)
		write_failures(b, nfailed);
	limits_write_decisions(b);	/* refusals, flags and shadow decisions */
	if (subxact)
	{
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	if (n == 0)
		return true;
	for (int i = 0; i < n; i++)
		rows[i]->written = true;
	if (!balances_written)
		store->write_balances(b);
	limits_write(b);
	write_statuses(b);
	write_deltas_and_history(b, rows, n);
	write_holds(b, rows, n);
	if (!b->events_as_rows)
		emit_transfer_events(b, rows, n);	/* an outbox row each */
	audit_transfers(b, rows, n);
	return true;
}

/*
 * Run a batch.  In a single call (b->single) a refusal raises; otherwise every
 * item gets a result.  Returns after the writes.  The phases: collect the
 * references, check each item alone, load what they refer to and lock the
 * accounts, read again under the locks, recognise replays, apply, write.
 */
void
ledger_execute(LedgerBatch *b)
{
	if (!b->tenant_given)
		tenancy_require_tenant(&b->tenant);
	expand_fee_legs(b);
	/*
	 * A single call (one transfer, and its fee leg if it has one) learns of a
	 * replayed id from the INSERT: the first row decides for both.
	 */
	b->optimistic = b->single;
	b->store = ledger_store_for(b);
	b->schema = ledger_schema();
	b->events_as_rows = b->schema == 1 && !fincore_citus_preloaded();
	if (b->schema == 0)
		b->record_failures = false; /* no fincore.failed_transfers yet */
	b->imported = b->nitems > 0 && (b->items[0].flags & TRANSFER_IMPORTED);
	collect(b);

	for (int attempt = 1;; attempt++)
	{
		check_items(b);
		load_refs(b, false);
		resolve_accounts(b);
		load_account_meta(b);
		limits_prepare(b);
		mark_locks(b);
		lock_accounts(b);
		reread_under_locks(b);
		limits_lock(b);
		if (!b->optimistic)
			check_replays(b);
		compute_fees(b);
		apply_items(b);
		if (b->single && !single_call_proceeds(b))
			return;
		if (write_batch(b))
			return;
		if (attempt >= 3)
			elog(ERROR, "ledger: transfer ids keep conflicting with concurrent transactions");
	}
}
