/*
 * ledger_store.c — the ledger's storage, through SPI: loading the transfers
 * items refer to, locking and reading accounts (hot ones through their
 * deltas), looking up ids, and writing transfer rows, balances, statuses,
 * deltas, history, open holds and failed ids.  Every statement names its
 * tenant, and the plans follow the installed SQL (0.1.0's tables or 0.2.0's).
 */
#include "ledger_int.h"

#include "utils/xid8.h"

/* ---- referenced transfers and account metadata ---- */

/*
 * Plans that differ with the installed SQL: [1] for 0.2.0's tables, [0] for
 * 0.1.0's (no transfers.flags, no failed_transfers), which this library still
 * serves between the installation of its files and ALTER EXTENSION UPDATE.
 */
static SPIPlanPtr refs_plan[2];
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr status_plan = NULL;
static SPIPlanPtr meta_plan = NULL;
static SPIPlanPtr deltas_sum_plan = NULL;
static SPIPlanPtr exists_plan[2];
static SPIPlanPtr insert_one_plan[2][2];	/* [schema][the rows may conflict] */
static SPIPlanPtr insert_many_plan[2][2];
static SPIPlanPtr update_accounts_plan = NULL;
static SPIPlanPtr insert_deltas_plan = NULL;
static SPIPlanPtr insert_history_plan = NULL;
static SPIPlanPtr insert_holds_plan = NULL;
static SPIPlanPtr delete_holds_plan = NULL;
static SPIPlanPtr account_times_plan = NULL;
static SPIPlanPtr set_status_plan = NULL;
static SPIPlanPtr insert_failed_plan = NULL;

/*
 * Load the referenced transfers that are not created in this batch, with
 * whether (and how) a hold was resolved and how much of a transfer has been
 * reversed.  Another tenant's transfer is simply not found.
 */
void
load_refs(LedgerBatch *b, bool refresh)
{
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * Max(b->nrefs, 1));
	int			n = 0;

	for (int i = 0; i < b->nrefs; i++)
	{
		RefTransfer *r = &b->refs[i];

		if (r->in_batch)
		{
			/* Found only once the item that creates it is applied. */
			if (!refresh)
				r->found = false;
			continue;
		}
		/*
		 * A refresh (after the locks) only updates what was found before: a
		 * transfer that became visible meanwhile named accounts we did not
		 * lock, so for this call it stays not found.
		 */
		if (refresh && !r->found)
			continue;
		r->found = false;
		r->resolved = 0;
		r->reversed = 0;
		ids[n++] = r->id;
	}
	if (n > 0)
		b->store->read_refs(b, ids, n);
	pfree(ids);
}

/* The SQL store's read_refs: one statement, planned for its ids each time. */
static void
sql_read_refs(LedgerBatch *b, pg_uuid_t *ids, int n)
{
	Datum		args[2];

	if (refs_plan[b->schema] == NULL)
	{
		Oid			types[2] = {UUIDARRAYOID, UUIDOID};

		refs_plan[b->schema] = ledger_prepare_custom(psprintf(
			"SELECT t.id, t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.code, t.expires_at, "
			"       (SELECT r.kind FROM fincore.transfers r WHERE r.pending_id OPERATOR(pg_catalog.=) t.id "
			"           AND r.tenant_id OPERATOR(pg_catalog.=) $2), "
			"       (SELECT pg_catalog.sum(r.amount)::bigint FROM fincore.transfers r "
			"         WHERE r.reversal_of OPERATOR(pg_catalog.=) t.id AND r.tenant_id OPERATOR(pg_catalog.=) $2), %s, "
			"       t.created_at "
			"  FROM fincore.transfers t "
			" WHERE t.id OPERATOR(pg_catalog.=) ANY ($1) AND t.tenant_id OPERATOR(pg_catalog.=) $2",
			b->schema ? "t.flags" : "0"), 2, types);
	}
	args[0] = uuid_array(ids, n);
	args[1] = UUIDPGetDatum(&b->tenant);
	if (SPI_execute_plan(refs_plan[b->schema], args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: loading referenced transfers failed");
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(spi_value(row, 1, &isnull));
		RefTransfer *r = batch_ref(b, id, false);
		Datum		d;

		if (r == NULL)
			continue;
		r->found = true;
		r->kind = kind_from_text(TextDatumGetCString(spi_value(row, 2, &isnull)));
		r->debit = *DatumGetUUIDP(spi_value(row, 3, &isnull));
		r->credit = *DatumGetUUIDP(spi_value(row, 4, &isnull));
		r->amount = DatumGetInt64(spi_value(row, 5, &isnull));
		r->code = DatumGetInt32(spi_value(row, 6, &isnull));
		d = spi_value(row, 7, &isnull);
		r->has_expiry = !isnull;
		if (!isnull)
			r->expires_at = DatumGetTimestampTz(d);
		d = spi_value(row, 8, &isnull);
		r->resolved = isnull ? 0 : kind_from_text(TextDatumGetCString(d));
		d = spi_value(row, 9, &isnull);
		r->reversed = isnull ? 0 : DatumGetInt64(d);
		r->flags = DatumGetInt32(spi_value(row, 10, &isnull));
		r->created_at = DatumGetTimestampTz(spi_value(row, 11, &isnull));
	}
}

/*
 * Fill in what the per-backend cache knows of each account, and read what it
 * does not know without a lock (currency, code and flags never change once
 * committed, which is what lets the cache keep them).  A hot account is then
 * never locked only because this backend had not seen it yet: such a lock,
 * held to the end of a transaction that goes on to other accounts (an
 * invoice's payment, a payment's capture), is what deadlocks concurrent
 * writers of the same platform accounts.  An account the read does not find
 * (another tenant's, or created by a transaction not yet committed) is left
 * to the lock query, which waits for its creator and reads its metadata.
 */
void
load_account_meta(LedgerBatch *b)
{
	pg_uuid_t  *unknown = NULL;
	int			nunknown = 0;

	for (int i = 0; i < b->naccounts; i++)
	{
		LedgerAccount *a = &b->accounts[i];
		AccountMeta *m = account_meta_lookup(&b->tenant, &a->meta.id);

		a->meta_known = m != NULL;
		a->found = m != NULL;
		if (m != NULL)
			a->meta = *m;
		else
		{
			if (unknown == NULL)
				unknown = palloc(sizeof(pg_uuid_t) * b->naccounts);
			unknown[nunknown++] = a->meta.id;
		}
	}
	if (nunknown > 0)
	{
		Datum		args[2];

		if (meta_plan == NULL)
		{
			Oid			types[2] = {UUIDARRAYOID, UUIDOID};

			meta_plan = ledger_prepare(
				"SELECT a.id, a.currency, a.code, a.flags "
				"  FROM fincore.accounts a "
				" WHERE a.id OPERATOR(pg_catalog.=) ANY ($1) AND a.tenant_id OPERATOR(pg_catalog.=) $2",
				2, types);
		}
		args[0] = uuid_array(unknown, nunknown);
		args[1] = UUIDPGetDatum(&b->tenant);
		if (SPI_execute_plan(meta_plan, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "ledger: reading accounts failed");
		for (uint64 row = 0; row < SPI_processed; row++)
		{
			bool		isnull;
			LedgerAccount *a = batch_account(b, DatumGetUUIDP(spi_value(row, 1, &isnull)), false);
			text	   *currency = DatumGetTextPP(spi_value(row, 2, &isnull));

			if (a == NULL || a->meta_known)
				continue;
			a->meta.tenant = b->tenant;
			a->meta.currency = currency_pack_or_error(VARDATA_ANY(currency), VARSIZE_ANY_EXHDR(currency));
			a->meta.code = DatumGetInt32(spi_value(row, 3, &isnull));
			a->meta.flags = DatumGetInt32(spi_value(row, 4, &isnull));
			account_meta_remember(&a->meta);
			a->meta_known = true;
			a->found = true;
		}
	}
}

/*
 * Lock the rows of ids (sorted here: one statement, rows locked in id order,
 * the global lock order) and read them: their counters, and what the cache
 * did not know of them.  Returns how many of them are hot.
 */
static int
sql_lock_rows(LedgerBatch *b, pg_uuid_t *ids, int n)
{
	Datum		args[2];
	int			nhot = 0;

	if (lock_plan == NULL)
	{
		Oid			types[2] = {UUIDARRAYOID, UUIDOID};

		lock_plan = ledger_prepare(
			"SELECT a.id, a.currency, a.code, a.flags, a.status, a.credit_limit, a.debits_pending, "
			"       a.debits_posted, a.credits_pending, a.credits_posted, a.ctid "
			"  FROM fincore.accounts a "
			" WHERE a.id OPERATOR(pg_catalog.=) ANY ($1) AND a.tenant_id OPERATOR(pg_catalog.=) $2 "
			" ORDER BY a.id FOR NO KEY UPDATE", 2, types);
	}
	qsort(ids, n, sizeof(pg_uuid_t), uuid_cmp_qsort);
	args[0] = uuid_array(ids, n);
	args[1] = UUIDPGetDatum(&b->tenant);
	if (SPI_execute_plan(lock_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: locking accounts failed");
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		LockedAccountRow r;
		bool		isnull;
		Datum		d;

		r.id = DatumGetUUIDP(spi_value(row, 1, &isnull));
		r.currency = DatumGetTextPP(spi_value(row, 2, &isnull));
		r.code = DatumGetInt32(spi_value(row, 3, &isnull));
		r.flags = DatumGetInt32(spi_value(row, 4, &isnull));
		r.status = DatumGetTextPP(spi_value(row, 5, &isnull));
		d = spi_value(row, 6, &isnull);
		r.has_limit = !isnull;
		r.credit_limit = isnull ? 0 : DatumGetInt64(d);
		r.bal.dp = DatumGetInt64(spi_value(row, 7, &isnull));
		r.bal.dpo = DatumGetInt64(spi_value(row, 8, &isnull));
		r.bal.cp = DatumGetInt64(spi_value(row, 9, &isnull));
		r.bal.cpo = DatumGetInt64(spi_value(row, 10, &isnull));
		r.tid = *((ItemPointer) DatumGetPointer(spi_value(row, 11, &isnull)));
		if (account_row_locked(b, &r))
			nhot++;
	}
	return nhot;
}

/*
 * An account row locked and read (by either store): what the cache did not
 * know of it, its status, limit, counters and place.  Returns whether it is
 * hot.
 */
bool
account_row_locked(LedgerBatch *b, const LockedAccountRow *r)
{
	LedgerAccount *a = batch_account(b, r->id, false);

	if (a == NULL)
		return false;
	if (!a->meta_known)
	{
		a->meta.tenant = b->tenant;
		a->meta.currency = currency_pack_or_error(VARDATA_ANY(r->currency), VARSIZE_ANY_EXHDR(r->currency));
		a->meta.code = r->code;
		a->meta.flags = r->flags;
		account_meta_remember(&a->meta);
		a->meta_known = true;
	}
	a->found = true;
	a->locked = true;
	a->lockfree = false;
	a->status = a->loaded_status = VARSIZE_ANY_EXHDR(r->status) > 0 ? VARDATA_ANY(r->status)[0] : '\0';
	a->has_limit = r->has_limit;
	a->credit_limit = r->credit_limit;
	a->loaded = r->bal;
	a->tid = r->tid;
	return (a->meta.flags & ACCOUNT_HOT) != 0;
}

/* Locked hot accounts: the exact balance includes every committed delta. */
static void
add_hot_deltas(LedgerBatch *b, pg_uuid_t *hot, int k)
{
	Datum		args[2];

	if (deltas_sum_plan == NULL)
	{
		Oid			types[2] = {UUIDARRAYOID, UUIDOID};

		deltas_sum_plan = ledger_prepare(
			"SELECT d.account_id, pg_catalog.sum(d.debits_pending)::pg_catalog.int8, "
			"       pg_catalog.sum(d.debits_posted)::pg_catalog.int8, pg_catalog.sum(d.credits_pending)::pg_catalog.int8, "
			"       pg_catalog.sum(d.credits_posted)::pg_catalog.int8 "
			"  FROM fincore.account_deltas d "
			" WHERE d.tenant_id OPERATOR(pg_catalog.=) $2 AND d.account_id OPERATOR(pg_catalog.=) ANY ($1) "
			" GROUP BY d.account_id", 2, types);
	}
	args[0] = uuid_array(hot, k);
	args[1] = UUIDPGetDatum(&b->tenant);
	if (SPI_execute_plan(deltas_sum_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: reading hot account deltas failed");
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		bool		isnull;
		LedgerAccount *a = batch_account(b, DatumGetUUIDP(spi_value(row, 1, &isnull)), false);

		if (a == NULL)
			continue;
		/* Kept in loaded: what the row will be credited with at rollup. */
		a->loaded.dp += DatumGetInt64(spi_value(row, 2, &isnull));
		a->loaded.dpo += DatumGetInt64(spi_value(row, 3, &isnull));
		a->loaded.cp += DatumGetInt64(spi_value(row, 4, &isnull));
		a->loaded.cpo += DatumGetInt64(spi_value(row, 5, &isnull));
	}
}

/* Lock rows, then add the deltas of those that are hot. */
static void
lock_and_read(LedgerBatch *b, pg_uuid_t *ids, int n)
{
	pg_uuid_t  *hot;
	int			k = 0;

	if (b->store->lock_rows(b, ids, n) == 0)
		return;
	hot = palloc(sizeof(pg_uuid_t) * n);
	for (int i = 0; i < n; i++)
	{
		LedgerAccount *a = batch_account(b, &ids[i], false);

		if (a != NULL && a->locked && (a->meta.flags & ACCOUNT_HOT))
			hot[k++] = a->meta.id;
	}
	if (k > 0)
		add_hot_deltas(b, hot, k);
}

void
lock_accounts(LedgerBatch *b)
{
	pg_uuid_t  *lock_ids = palloc(sizeof(pg_uuid_t) * Max(b->naccounts, 1));
	pg_uuid_t  *free_ids = palloc(sizeof(pg_uuid_t) * Max(b->naccounts, 1));
	int			nlock = 0,
				nfree = 0,
				nlate = 0;

	for (int i = 0; i < b->naccounts; i++)
	{
		LedgerAccount *a = &b->accounts[i];

		a->locked = a->lockfree = false;
		if (a->meta_known && !a->found)
			continue;			/* another tenant's */
		if (a->needs_lock)
			lock_ids[nlock++] = a->meta.id;
		else
			free_ids[nfree++] = a->meta.id;
	}

	if (nlock > 0)
		lock_and_read(b, lock_ids, nlock);

	/* Hot accounts used lock-free: their status, and the row's counters as they are. */
	if (nfree > 0)
	{
		Datum		args[2];

		if (status_plan == NULL)
		{
			Oid			types[2] = {UUIDARRAYOID, UUIDOID};

			status_plan = ledger_prepare(
				"SELECT a.id, a.status, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, "
				"       a.credit_limit "
				"  FROM fincore.accounts a "
				" WHERE a.id OPERATOR(pg_catalog.=) ANY ($1) AND a.tenant_id OPERATOR(pg_catalog.=) $2",
				2, types);
		}
		args[0] = uuid_array(free_ids, nfree);
		args[1] = UUIDPGetDatum(&b->tenant);
		if (SPI_execute_plan(status_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "ledger: reading accounts failed");
		nfree = 0;
		for (uint64 row = 0; row < SPI_processed; row++)
		{
			bool		isnull;
			LedgerAccount *a = batch_account(b, DatumGetUUIDP(spi_value(row, 1, &isnull)), false);
			Datum		d;

			if (a == NULL)
				continue;
			a->found = true;
			a->lockfree = true;
			a->status = a->loaded_status = TextDatumGetCString(spi_value(row, 2, &isnull))[0];
			a->base.dp = DatumGetInt64(spi_value(row, 3, &isnull));
			a->base.dpo = DatumGetInt64(spi_value(row, 4, &isnull));
			a->base.cp = DatumGetInt64(spi_value(row, 5, &isnull));
			a->base.cpo = DatumGetInt64(spi_value(row, 6, &isnull));
			d = spi_value(row, 7, &isnull);
			a->has_limit = !isnull;
			a->credit_limit = isnull ? 0 : DatumGetInt64(d);
			memset(&a->loaded, 0, sizeof(Balances));
			/* Near the edge of int64, a hot account is checked exactly: under its lock. */
			if ((int128) a->base.dp + a->base.dpo > HOT_LOCKFREE_CEILING ||
				(int128) a->base.cp + a->base.cpo > HOT_LOCKFREE_CEILING ||
				(int128) a->base.cpo + a->credit_limit > HOT_LOCKFREE_CEILING)
				free_ids[nlate++] = a->meta.id;
		}
	}

	/*
	 * Locked after the others, out of the global order: only accounts whose
	 * totals are within a factor of two of int64's limit ever come here, and
	 * a deadlock this could cause is detected and reported by PostgreSQL.
	 */
	if (nlate > 0)
		lock_and_read(b, free_ids, nlate);

	/* What neither query returned does not exist here (a cached creation may have rolled back). */
	for (int i = 0; i < b->naccounts; i++)
	{
		LedgerAccount *a = &b->accounts[i];

		if (!a->locked && !a->lockfree)
		{
			if (a->meta_known && a->found)
				account_meta_forget(&b->tenant, &a->meta.id);
			a->found = false;
		}
		a->bal = a->loaded;
		a->changed = false;
		a->status_changed = false;
	}
}

/*
 * An imported batch: when each locked account was created, and its latest
 * transfer (an imported transfer must postdate both).  Read under the
 * accounts' locks, so no transfer of theirs can be added meanwhile.
 */
void
load_account_times(LedgerBatch *b)
{
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * Max(b->naccounts, 1));
	int			n = 0;
	Datum		args[2];

	for (int i = 0; i < b->naccounts; i++)
		if (b->accounts[i].locked)
			ids[n++] = b->accounts[i].meta.id;
	if (n == 0)
		return;
	if (account_times_plan == NULL)
	{
		Oid			types[2] = {UUIDARRAYOID, UUIDOID};

		account_times_plan = ledger_prepare(
			"SELECT a.id, a.created_at, GREATEST("
			"       (SELECT pg_catalog.max(t.created_at) FROM fincore.transfers t "
			"         WHERE t.debit_account_id OPERATOR(pg_catalog.=) a.id AND t.tenant_id OPERATOR(pg_catalog.=) $2), "
			"       (SELECT pg_catalog.max(t.created_at) FROM fincore.transfers t "
			"         WHERE t.credit_account_id OPERATOR(pg_catalog.=) a.id AND t.tenant_id OPERATOR(pg_catalog.=) $2)) "
			"  FROM fincore.accounts a "
			" WHERE a.id OPERATOR(pg_catalog.=) ANY ($1) AND a.tenant_id OPERATOR(pg_catalog.=) $2", 2, types);
	}
	args[0] = uuid_array(ids, n);
	args[1] = UUIDPGetDatum(&b->tenant);
	if (SPI_execute_plan(account_times_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: reading accounts' latest transfers failed");
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		bool		isnull;
		LedgerAccount *a = batch_account(b, DatumGetUUIDP(spi_value(row, 1, &isnull)), false);
		Datum		d;

		if (a == NULL)
			continue;
		a->created_at = DatumGetTimestampTz(spi_value(row, 2, &isnull));
		d = spi_value(row, 3, &isnull);
		a->last_ts = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
	}
}

/*
 * Existing transfers among the given ids, and the ids that failed in the
 * tenant (fincore.failed_transfers, kind KIND_FAILED).  Failed ids come
 * first: in the (raced) case of both, the transfer is the last word.  A
 * transfer id is unique within its tenant (the key is (tenant_id, id)); under
 * 0.1.0's tables, whose key is the id alone, an id another tenant uses is
 * looked up too (id_already_used).
 */
int
load_existing(LedgerBatch *b, pg_uuid_t *ids, int n, ExistingTransfer **out)
{
	Datum		args[2];
	ExistingTransfer *ex;

	if (exists_plan[b->schema] == NULL)
	{
		Oid			types[2] = {UUIDARRAYOID, UUIDOID};
		const char *transfers_sql =
			"SELECT t.id, t.tenant_id, t.kind, t.debit_account_id, t.credit_account_id, t.amount, "
			"       t.pending_amount, t.code, COALESCE(t.pending_id, t.reversal_of), "
			"       t.timeout, t.metadata, t.created_at, t.currency, %s "
			"  FROM fincore.transfers t WHERE %s t.id OPERATOR(pg_catalog.=) ANY ($1)";

		if (b->schema == 0)
			exists_plan[0] = ledger_prepare_custom(
				psprintf("SELECT * FROM (%s) t WHERE $2 IS NOT NULL", psprintf(transfers_sql, "0", "")), 2, types);
		else
			exists_plan[1] = ledger_prepare_custom(psprintf(
			"SELECT f.id, f.tenant_id, 'failed', NULL::pg_catalog.uuid, NULL::pg_catalog.uuid, 0::pg_catalog.int8, "
			"       0::pg_catalog.int8, 0, NULL::pg_catalog.uuid, NULL::pg_catalog.interval, NULL::pg_catalog.jsonb, "
			"       f.failed_at, NULL::pg_catalog.text, 0 "
			"  FROM fincore.failed_transfers f "
			" WHERE f.tenant_id OPERATOR(pg_catalog.=) $2 AND f.id OPERATOR(pg_catalog.=) ANY ($1) "
			"UNION ALL %s", psprintf(transfers_sql, "t.flags", "t.tenant_id OPERATOR(pg_catalog.=) $2 AND")),
			2, types);
	}
	args[0] = uuid_array(ids, n);
	args[1] = UUIDPGetDatum(&b->tenant);
	if (SPI_execute_plan(exists_plan[b->schema], args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: looking up transfer ids failed");
	ex = palloc0(sizeof(ExistingTransfer) * Max(SPI_processed, 1));
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		bool		isnull;
		Datum		d;
		const char *kind;

		ex[row].id = *DatumGetUUIDP(spi_value(row, 1, &isnull));
		ex[row].tenant = *DatumGetUUIDP(spi_value(row, 2, &isnull));
		kind = TextDatumGetCString(spi_value(row, 3, &isnull));
		if (strcmp(kind, "failed") == 0)
		{
			ex[row].kind = KIND_FAILED;
			continue;
		}
		ex[row].kind = kind_from_text(kind);
		ex[row].flags = DatumGetInt32(spi_value(row, 14, &isnull));
		ex[row].debit = *DatumGetUUIDP(spi_value(row, 4, &isnull));
		ex[row].credit = *DatumGetUUIDP(spi_value(row, 5, &isnull));
		ex[row].amount = DatumGetInt64(spi_value(row, 6, &isnull));
		ex[row].pending_amount = DatumGetInt64(spi_value(row, 7, &isnull));
		ex[row].code = DatumGetInt32(spi_value(row, 8, &isnull));
		d = spi_value(row, 9, &isnull);
		ex[row].has_ref = !isnull;
		if (!isnull)
			ex[row].ref = *DatumGetUUIDP(d);
		d = spi_value(row, 10, &isnull);
		ex[row].has_timeout = !isnull;
		if (!isnull)
			ex[row].timeout = *DatumGetIntervalP(d);
		d = spi_value(row, 11, &isnull);
		ex[row].metadata = isnull ? NULL : DatumGetJsonbPCopy(d);
		ex[row].created_at = DatumGetTimestampTz(spi_value(row, 12, &isnull));
		{
			text	   *cur = DatumGetTextPP(spi_value(row, 13, &isnull));

			ex[row].currency = currency_pack_or_error(VARDATA_ANY(cur), VARSIZE_ANY_EXHDR(cur));
		}
	}
	*out = ex;
	return (int) SPI_processed;
}

/*
 * The balance rows to write: ids and new counters of the locked accounts this
 * batch changed.  A hot account's row is left alone even when locked: its
 * legs are written as deltas, folded in by rollup_hot_accounts().
 */
static int
balance_arrays(LedgerBatch *b, Datum *args)
{
	ArrayBuilder ids,
				tids,
				dp,
				dpo,
				cp,
				cpo;

	ab_init(&ids, b->naccounts);
	ab_init(&tids, b->naccounts);
	ab_init(&dp, b->naccounts);
	ab_init(&dpo, b->naccounts);
	ab_init(&cp, b->naccounts);
	ab_init(&cpo, b->naccounts);
	for (int i = 0; i < b->naccounts; i++)
	{
		LedgerAccount *a = &b->accounts[i];

		if (!a->locked || !a->changed || (a->meta.flags & ACCOUNT_HOT))
			continue;
		ab_add(&ids, UUIDPGetDatum(&a->meta.id), false);
		ab_add(&tids, PointerGetDatum(&a->tid), false);
		ab_add(&dp, Int64GetDatum(a->bal.dp), false);
		ab_add(&dpo, Int64GetDatum(a->bal.dpo), false);
		ab_add(&cp, Int64GetDatum(a->bal.cp), false);
		ab_add(&cpo, Int64GetDatum(a->bal.cpo), false);
	}
	args[0] = ab_array(&ids, UUIDOID);
	args[1] = ab_array(&dp, INT8OID);
	args[2] = ab_array(&dpo, INT8OID);
	args[3] = ab_array(&cp, INT8OID);
	args[4] = ab_array(&cpo, INT8OID);
	args[5] = ab_array(&tids, TIDOID);
	return ids.n;
}

/*
 * Sets each account's counters from the arrays.  The rows are reached by the
 * tuple ids the lock query read (a TID scan per row): they cannot have moved,
 * since we hold their locks, and no index has to be searched again.  The id
 * check is a safeguard.
 */
#define UPDATE_BALANCES_SQL(ids, dp, dpo, cp, cpo, tids, tenant) \
	"UPDATE fincore.accounts a " \
	"   SET debits_pending = u.dp, debits_posted = u.dpo, credits_pending = u.cp, credits_posted = u.cpo " \
	"  FROM ROWS FROM (pg_catalog.unnest(" tids "), pg_catalog.unnest(" ids "), pg_catalog.unnest(" dp "), " \
	"                  pg_catalog.unnest(" dpo "), pg_catalog.unnest(" cp "), pg_catalog.unnest(" cpo ")) " \
	"       AS u(tid, id, dp, dpo, cp, cpo) " \
	" WHERE a.ctid OPERATOR(pg_catalog.=) u.tid AND a.id OPERATOR(pg_catalog.=) u.id " \
	"   AND a.tenant_id OPERATOR(pg_catalog.=) " tenant

/*
 * The same for a single call, whose statement runs once per transfer: the
 * rows are reached the same way (TID scan, id check), and each row takes its
 * counters from the arrays at its id's position.  No set-returning function
 * in FROM: each would materialise into a tuplestore of its own, and the
 * executor memory of six of them, allocated and freed at every call, made
 * glibc grow and trim the heap each time (brk, and a TLB flush on every CPU).
 * The arguments are parameter numbers.
 */
static char *
update_balances_by_position_sql(int ids, int dp, int dpo, int cp, int cpo, int tids, int tenant)
{
	return psprintf("UPDATE fincore.accounts a "
					"   SET debits_pending = ($%d)[pg_catalog.array_position($%d, a.id)], "
					"       debits_posted = ($%d)[pg_catalog.array_position($%d, a.id)], "
					"       credits_pending = ($%d)[pg_catalog.array_position($%d, a.id)], "
					"       credits_posted = ($%d)[pg_catalog.array_position($%d, a.id)] "
					" WHERE a.ctid OPERATOR(pg_catalog.=) ANY ($%d) AND a.id OPERATOR(pg_catalog.=) ANY ($%d) "
					"   AND a.tenant_id OPERATOR(pg_catalog.=) $%d",
					dp, ids, dpo, ids, cp, ids, cpo, ids, tids, ids, tenant);
}

/*
 * The columns of fincore.transfers, in the order of transfer_row()'s values:
 * 0.1.0's, then flags, which 0.2.0 adds (the last one).
 */
const char *const transfer_column_names[NTRANSFER_COLUMNS] = {
	"id", "tenant_id", "debit_account_id", "credit_account_id", "amount", "pending_amount", "currency",
	"code", "kind", "pending_id", "reversal_of", "timeout", "expires_at", "metadata", "created_at", "flags",
	"event_seq", "event_txid"
};

static const Oid transfer_column_types[NTRANSFER_COLUMNS] = {
	UUIDOID, UUIDOID, UUIDOID, UUIDOID, INT8OID, INT8OID, TEXTOID, INT4OID,
	TEXTOID, UUIDOID, UUIDOID, INTERVALOID, TIMESTAMPTZOID, JSONBOID, TIMESTAMPTZOID, INT4OID,
	INT8OID, XID8OID
};

/* The installed SQL's column list, "id, tenant_id, ...". */
static const char *
transfer_columns(const LedgerBatch *b)
{
	static char *lists[2];

	if (lists[b->schema] == NULL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		for (int i = 0; i < transfer_ncolumns(b); i++)
			appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", transfer_column_names[i]);
		lists[b->schema] = MemoryContextStrdup(TopMemoryContext, buf.data);
		pfree(buf.data);
	}
	return lists[b->schema];
}

/* "$first, ..., $(first + n - 1)", each wrapped in fmt (e.g. "pg_catalog.unnest(%s)"). */
static char *
param_list(int first, int n, const char *fmt)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfo(&buf, fmt, psprintf("$%d", first + i));
	}
	return buf.data;
}

/* The column values of an item's transfer row, in transfer_column_names' order. */
void
transfer_row(const LedgerBatch *b, const LedgerItem *it, Datum *v, bool *isnull)
{
	char		code[CURRENCY_CODE_MAX_LEN + 1];
	bool		resolves = it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE;

	memset(isnull, 0, sizeof(bool) * NTRANSFER_COLUMNS);
	currency_unpack(it->dacc->meta.currency, code);
	v[0] = UUIDPGetDatum(&it->id);
	v[1] = UUIDPGetDatum(&b->tenant);
	v[2] = UUIDPGetDatum(&it->dacc->meta.id);
	v[3] = UUIDPGetDatum(&it->cacc->meta.id);
	v[4] = Int64GetDatum(it->amount);
	v[5] = Int64GetDatum(resolves ? it->pending_amount : 0);
	v[6] = CStringGetTextDatum(code);
	v[7] = Int32GetDatum(it->code);
	v[8] = CStringGetTextDatum(kind_text(it->kind));
	v[9] = UUIDPGetDatum(&it->ref_id);
	isnull[9] = !resolves;
	v[10] = UUIDPGetDatum(&it->ref_id);
	isnull[10] = it->kind != KIND_REVERSAL;
	v[11] = IntervalPGetDatum(&it->timeout);
	isnull[11] = !it->has_timeout;
	v[12] = TimestampTzGetDatum(it->expires_at);
	isnull[12] = !it->has_expiry;
	v[13] = it->metadata ? JsonbPGetDatum(it->metadata) : (Datum) 0;
	isnull[13] = it->metadata == NULL;
	v[14] = TimestampTzGetDatum(it->ts);
	v[15] = Int32GetDatum(it->flags);
	/* The ledger's events are its rows: an event's place in the stream (fincore.outbox_stream). */
	v[16] = Int64GetDatum(it->event_seq);
	v[17] = FullTransactionIdGetDatum(it->event_seq != 0 ? GetTopFullTransactionId() : InvalidFullTransactionId);
	isnull[16] = isnull[17] = it->event_seq == 0;
}

static SPIPlanPtr router_failed_plan = NULL;
static SPIPlanPtr insert_values_plan[2][2];	/* [schema][the rows may conflict] */

/* INSERT of one transfer row from its values (ON CONFLICT DO NOTHING if it may conflict). */
static SPIPlanPtr
insert_values(LedgerBatch *b, int may_conflict)
{
	if (insert_values_plan[b->schema][may_conflict] == NULL)
		insert_values_plan[b->schema][may_conflict] = ledger_prepare(
			psprintf("INSERT INTO fincore.transfers (%s) VALUES (%s) %s",
					 transfer_columns(b), param_list(1, transfer_ncolumns(b), "%s"),
					 may_conflict ? "ON CONFLICT DO NOTHING" : ""),
			transfer_ncolumns(b), (Oid *) transfer_column_types);
	return insert_values_plan[b->schema][may_conflict];
}

/*
 * The rows one statement each, as Citus routes them: an INSERT ... VALUES
 * naming its tenant goes to the tenant's shard, where a statement of several
 * parts (the row and the balances together, or rows from arrays) would need
 * the coordinator's planning across shards.  In id order, as the one
 * statement inserts them; an id that failed in a batch is looked up first
 * (id_already_failed).  The balances follow (write_balances).
 */
static int
router_insert_transfers(LedgerBatch *b, LedgerItem **rows, int n, int may_conflict)
{
	int			ncols = transfer_ncolumns(b);
	LedgerItem **sorted = palloc(sizeof(LedgerItem *) * Max(n, 1));
	int			inserted = 0;

	memcpy(sorted, rows, sizeof(LedgerItem *) * n);
	qsort(sorted, n, sizeof(LedgerItem *), item_id_cmp_qsort);
	if (router_failed_plan == NULL && b->schema)
		router_failed_plan = ledger_prepare(
			"SELECT 1 FROM fincore.failed_transfers f "
			" WHERE f.tenant_id OPERATOR(pg_catalog.=) $1 AND f.id OPERATOR(pg_catalog.=) $2",
			2, (Oid[]) {UUIDOID, UUIDOID});
	for (int r = 0; r < n; r++)
	{
		Datum		v[NTRANSFER_COLUMNS];
		bool		isnull[NTRANSFER_COLUMNS];
		char		nulls[NTRANSFER_COLUMNS];

		if (b->schema && may_conflict)
		{
			Datum		key[2] = {UUIDPGetDatum(&b->tenant), UUIDPGetDatum(&sorted[r]->id)};

			if (SPI_execute_plan(router_failed_plan, key, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "ledger: looking up a failed transfer id failed");
			if (SPI_processed > 0)
				continue;
		}
		transfer_row(b, sorted[r], v, isnull);
		for (int i = 0; i < ncols; i++)
			nulls[i] = isnull[i] ? 'n' : ' ';
		if (SPI_execute_plan(insert_values(b, may_conflict), v, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "ledger: inserting a transfer failed");
		inserted += (int) SPI_processed;
	}
	pfree(sorted);
	return inserted;
}

/*
 * Insert the transfer rows.  Returns how many were inserted: fewer than asked
 * means a concurrent transaction committed one of the ids (or resolved one of
 * the holds) first; ON CONFLICT waits for it and skips the row.  Rows that
 * cannot conflict are inserted without ON CONFLICT, and without the look-up of
 * failed ids.
 */
static int
sql_insert_transfers(LedgerBatch *b, LedgerItem **rows, int n, bool *balances_written)
{
	int			ncols = transfer_ncolumns(b);
	int			may_conflict = rows_may_conflict(rows, n);

	*balances_written = false;
	if (fincore_citus_preloaded())
		return router_insert_transfers(b, rows, n, may_conflict);
	if (b->optimistic)
	{
		/*
		 * A single transfer: the row and the new balances in one statement.
		 * The balances are set only if the row was inserted, so a replayed
		 * id (ON CONFLICT) writes nothing at all.
		 */
		Datum		v[NTRANSFER_COLUMNS + 6];
		bool		isnull[NTRANSFER_COLUMNS];
		char		nulls[NTRANSFER_COLUMNS + 6];
		int			nbalances;
		bool		null;

		if (insert_one_plan[b->schema][may_conflict] == NULL)
		{
			Oid			types[NTRANSFER_COLUMNS + 6];

			memcpy(types, transfer_column_types, sizeof(Oid) * ncols);
			types[ncols] = UUIDARRAYOID;
			for (int i = 1; i < 5; i++)
				types[ncols + i] = INT8ARRAYOID;
			types[ncols + 5] = get_array_type(TIDOID);
			/* An id that failed in a batch is not created either (id_already_failed). */
			insert_one_plan[b->schema][may_conflict] = ledger_prepare(psprintf(
				"WITH ins AS (INSERT INTO fincore.transfers (%s) "
				"             SELECT %s %s "
				"             %s RETURNING 1), "
				"     upd AS (%s AND EXISTS (SELECT 1 FROM ins) RETURNING 1) "
				"SELECT (SELECT pg_catalog.count(*) FROM ins), (SELECT pg_catalog.count(*) FROM upd)",
				transfer_columns(b), param_list(1, ncols, "%s"),
				b->schema && may_conflict ? "WHERE NOT EXISTS (SELECT FROM fincore.failed_transfers f "
				"                   WHERE f.tenant_id OPERATOR(pg_catalog.=) $2 AND f.id OPERATOR(pg_catalog.=) $1)" : "",
				may_conflict ? "ON CONFLICT DO NOTHING" : "",
				/* the arrays of balance_arrays(), after the row's columns */
				update_balances_by_position_sql(ncols + 1, ncols + 2, ncols + 3, ncols + 4, ncols + 5, ncols + 6,
												2 /* the row's tenant_id */ )),
				ncols + 6, types);
		}
		transfer_row(b, rows[0], v, isnull);
		for (int i = 0; i < ncols; i++)
			nulls[i] = isnull[i] ? 'n' : ' ';
		nbalances = balance_arrays(b, &v[ncols]);
		memset(&nulls[ncols], ' ', 6);
		if (SPI_execute_plan(insert_one_plan[b->schema][may_conflict], v, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "ledger: inserting a transfer failed");
		if (DatumGetInt64(spi_value(0, 1, &null)) == 0)
			return 0;
		if (DatumGetInt64(spi_value(0, 2, &null)) != nbalances)
			elog(ERROR, "ledger: updating balances failed");
		*balances_written = true;

		/*
		 * The first row decides: once it is in, the rest (a fee leg, whose id
		 * is derived from it) is new too.
		 */
		for (int r = 1; r < n; r++)
		{
			transfer_row(b, rows[r], v, isnull);
			for (int i = 0; i < ncols; i++)
				nulls[i] = isnull[i] ? 'n' : ' ';
			if (SPI_execute_plan(insert_values(b, 0), v, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "ledger: inserting a transfer failed");
		}
		return n;
	}
	else
	{
		ArrayBuilder cols[NTRANSFER_COLUMNS];
		Datum		args[NTRANSFER_COLUMNS];

		if (insert_many_plan[b->schema][may_conflict] == NULL)
		{
			Oid			types[NTRANSFER_COLUMNS];

			for (int i = 0; i < ncols; i++)
				types[i] = get_array_type(transfer_column_types[i]);
			/* Rows in id order, so concurrent batches meet on a duplicate id in one order. */
			insert_many_plan[b->schema][may_conflict] = ledger_prepare(psprintf(
				"INSERT INTO fincore.transfers (%s) "
				"SELECT * FROM ROWS FROM (%s) AS u(%s) ORDER BY 1 %s",
				transfer_columns(b), param_list(1, ncols, "pg_catalog.unnest(%s)"), transfer_columns(b),
				may_conflict ? "ON CONFLICT DO NOTHING" : ""),
				ncols, types);
		}
		for (int c = 0; c < ncols; c++)
			ab_init(&cols[c], n);
		for (int r = 0; r < n; r++)
		{
			Datum		v[NTRANSFER_COLUMNS];
			bool		isnull[NTRANSFER_COLUMNS];

			transfer_row(b, rows[r], v, isnull);
			for (int c = 0; c < ncols; c++)
				ab_add(&cols[c], v[c], isnull[c]);
		}
		for (int c = 0; c < ncols; c++)
			args[c] = ab_array(&cols[c], transfer_column_types[c]);
		if (SPI_execute_plan(insert_many_plan[b->schema][may_conflict], args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "ledger: inserting transfers failed");
		return (int) SPI_processed;
	}
}

static void
sql_write_balances(LedgerBatch *b)
{
	Datum		args[7];
	int			n = balance_arrays(b, args);

	if (n == 0)
		return;
	args[6] = UUIDPGetDatum(&b->tenant);
	if (update_accounts_plan == NULL)
	{
		Oid			types[7] = {UUIDARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, InvalidOid, UUIDOID};

		types[5] = get_array_type(TIDOID);
		update_accounts_plan = ledger_prepare(UPDATE_BALANCES_SQL("$1", "$2", "$3", "$4", "$5", "$6", "$7"), 7, types);
	}
	if (SPI_execute_plan(update_accounts_plan, args, NULL, false, 0) != SPI_OK_UPDATE ||
		SPI_processed != (uint64) n)
		elog(ERROR, "ledger: updating balances failed");
}

/* The SQL store: every write a statement that Citus can route by its tenant. */
const LedgerStore ledger_sql_store = {
	.name = "sql",
	.lock_rows = sql_lock_rows,
	.read_refs = sql_read_refs,
	.insert_transfers = sql_insert_transfers,
	.write_balances = sql_write_balances,
};

/* One delta row per leg on a hot account (locked or not), per written item. */
void
write_deltas_and_history(LedgerBatch *b, LedgerItem **rows, int n)
{
	ArrayBuilder d_acc,
				d_tr,
				d_dp,
				d_dpo,
				d_cp,
				d_cpo;
	ArrayBuilder h_acc,
				h_at,
				h_tr,
				h_dp,
				h_dpo,
				h_cp,
				h_cpo;

	ab_init(&d_acc, 2 * n);
	ab_init(&d_tr, 2 * n);
	ab_init(&d_dp, 2 * n);
	ab_init(&d_dpo, 2 * n);
	ab_init(&d_cp, 2 * n);
	ab_init(&d_cpo, 2 * n);
	ab_init(&h_acc, 2 * n);
	ab_init(&h_at, 2 * n);
	ab_init(&h_tr, 2 * n);
	ab_init(&h_dp, 2 * n);
	ab_init(&h_dpo, 2 * n);
	ab_init(&h_cp, 2 * n);
	ab_init(&h_cpo, 2 * n);

	for (int r = 0; r < n; r++)
	{
		LedgerItem *it = rows[r];

		for (int side = 0; side < 2; side++)
		{
			LedgerAccount *a = side == 0 ? it->dacc : it->cacc;
			Balances   *after = side == 0 ? &it->d_after : &it->c_after;
			int64		pend = 0,
						post = 0;

			switch (it->kind)
			{
				case KIND_PENDING:
					pend = it->amount;
					break;
				case KIND_POST:
					pend = -it->pending_amount;
					post = it->amount;
					break;
				case KIND_VOID:
				case KIND_EXPIRE:
					pend = -it->pending_amount;
					break;
				default:
					post = it->amount;
					break;
			}
			if (a->meta.flags & ACCOUNT_HOT)
			{
				ab_add(&d_acc, UUIDPGetDatum(&a->meta.id), false);
				ab_add(&d_tr, UUIDPGetDatum(&it->id), false);
				ab_add(&d_dp, Int64GetDatum(side == 0 ? pend : 0), false);
				ab_add(&d_dpo, Int64GetDatum(side == 0 ? post : 0), false);
				ab_add(&d_cp, Int64GetDatum(side == 1 ? pend : 0), false);
				ab_add(&d_cpo, Int64GetDatum(side == 1 ? post : 0), false);
			}
			if (a->meta.flags & ACCOUNT_HISTORY)
			{
				ab_add(&h_acc, UUIDPGetDatum(&a->meta.id), false);
				ab_add(&h_at, TimestampTzGetDatum(it->ts), false);
				ab_add(&h_tr, UUIDPGetDatum(&it->id), false);
				ab_add(&h_dp, Int64GetDatum(after->dp), false);
				ab_add(&h_dpo, Int64GetDatum(after->dpo), false);
				ab_add(&h_cp, Int64GetDatum(after->cp), false);
				ab_add(&h_cpo, Int64GetDatum(after->cpo), false);
			}
		}
	}
	if (d_acc.n > 0)
	{
		Datum		args[7];

		if (insert_deltas_plan == NULL)
		{
			Oid			types[7] = {UUIDOID, UUIDARRAYOID, UUIDARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
			INT8ARRAYOID, INT8ARRAYOID};

			insert_deltas_plan = ledger_prepare(
				"INSERT INTO fincore.account_deltas (tenant_id, account_id, transfer_id, debits_pending, "
				"       debits_posted, credits_pending, credits_posted) "
				"SELECT $1, u.* FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) AS u", 7, types);
		}
		args[0] = UUIDPGetDatum(&b->tenant);
		args[1] = ab_array(&d_acc, UUIDOID);
		args[2] = ab_array(&d_tr, UUIDOID);
		args[3] = ab_array(&d_dp, INT8OID);
		args[4] = ab_array(&d_dpo, INT8OID);
		args[5] = ab_array(&d_cp, INT8OID);
		args[6] = ab_array(&d_cpo, INT8OID);
		if (SPI_execute_plan(insert_deltas_plan, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "ledger: inserting hot account deltas failed");
	}
	if (h_acc.n > 0)
	{
		Datum		args[8];

		if (insert_history_plan == NULL)
		{
			Oid			types[8] = {UUIDOID, UUIDARRAYOID, TIMESTAMPTZARRAYOID, UUIDARRAYOID,
			INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID};

			insert_history_plan = ledger_prepare(
				"INSERT INTO fincore.account_history (tenant_id, account_id, at, transfer_id, debits_pending, "
				"       debits_posted, credits_pending, credits_posted) "
				"SELECT $1, u.* FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8)) AS u", 8, types);
		}
		args[0] = UUIDPGetDatum(&b->tenant);
		args[1] = ab_array(&h_acc, UUIDOID);
		args[2] = ab_array(&h_at, TIMESTAMPTZOID);
		args[3] = ab_array(&h_tr, UUIDOID);
		args[4] = ab_array(&h_dp, INT8OID);
		args[5] = ab_array(&h_dpo, INT8OID);
		args[6] = ab_array(&h_cp, INT8OID);
		args[7] = ab_array(&h_cpo, INT8OID);
		if (SPI_execute_plan(insert_history_plan, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "ledger: inserting account history failed");
	}
}

void
write_holds(LedgerBatch *b, LedgerItem **rows, int n)
{
	ArrayBuilder new_ids,
				new_exp,
				done_ids;

	ab_init(&new_ids, n);
	ab_init(&new_exp, n);
	ab_init(&done_ids, n);
	for (int r = 0; r < n; r++)
	{
		LedgerItem *it = rows[r];

		if (it->kind == KIND_PENDING)
		{
			ab_add(&new_ids, UUIDPGetDatum(&it->id), false);
			ab_add(&new_exp, TimestampTzGetDatum(it->expires_at), !it->has_expiry);
		}
		else if (it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE)
			ab_add(&done_ids, UUIDPGetDatum(&it->ref_id), false);
	}
	if (new_ids.n > 0)
	{
		Datum		args[3];

		if (insert_holds_plan == NULL)
		{
			Oid			types[3] = {UUIDOID, UUIDARRAYOID, TIMESTAMPTZARRAYOID};

			insert_holds_plan = ledger_prepare(
				"INSERT INTO fincore.pending_holds (tenant_id, transfer_id, expires_at) "
				"SELECT $1, u.* FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u", 3, types);
		}
		args[0] = UUIDPGetDatum(&b->tenant);
		args[1] = ab_array(&new_ids, UUIDOID);
		args[2] = ab_array(&new_exp, TIMESTAMPTZOID);
		if (SPI_execute_plan(insert_holds_plan, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "ledger: recording open holds failed");
	}
	if (done_ids.n > 0)
	{
		Datum		args[2];

		if (delete_holds_plan == NULL)
		{
			Oid			types[2] = {UUIDARRAYOID, UUIDOID};

			delete_holds_plan = ledger_prepare(
				"DELETE FROM fincore.pending_holds h "
				" WHERE h.tenant_id OPERATOR(pg_catalog.=) $2 AND h.transfer_id OPERATOR(pg_catalog.=) ANY ($1)",
				2, types);
		}
		args[0] = ab_array(&done_ids, UUIDOID);
		args[1] = UUIDPGetDatum(&b->tenant);
		/*
		 * By the primary key: the table's rows are deleted soon after their
		 * insert, so it looks empty to the planner, and a sequential scan read
		 * every hold resolved since the last vacuum (a post cost three times a
		 * transfer by a minute after one).
		 */
		if (fincore_execute_indexed(delete_holds_plan, args, NULL, 0, INDEXED_NO_BITMAPS) != SPI_OK_DELETE)
			elog(ERROR, "ledger: clearing resolved holds failed");
	}
}

/*
 * Accounts closed by a closing hold, or opened again by its void or expiry:
 * the new status, and an event as close_account() emits one.
 */
void
write_statuses(LedgerBatch *b)
{
	ArrayBuilder ids,
				statuses;
	Datum		args[3];

	ab_init(&ids, b->naccounts);
	ab_init(&statuses, b->naccounts);
	for (int i = 0; i < b->naccounts; i++)
	{
		LedgerAccount *a = &b->accounts[i];

		if (!a->locked || !a->status_changed || a->status == a->loaded_status)
			continue;
		ab_add(&ids, UUIDPGetDatum(&a->meta.id), false);
		ab_add(&statuses, CStringGetTextDatum(a->status == 'c' ? "closed" : "active"), false);
	}
	if (ids.n == 0)
		return;
	if (set_status_plan == NULL)
	{
		Oid			types[3] = {UUIDARRAYOID, TEXTARRAYOID, UUIDOID};

		set_status_plan = ledger_prepare(
			"UPDATE fincore.accounts a SET status = u.status "
			"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS u(id, status) "
			" WHERE a.tenant_id OPERATOR(pg_catalog.=) $3 AND a.id OPERATOR(pg_catalog.=) u.id", 3, types);
	}
	args[0] = ab_array(&ids, UUIDOID);
	args[1] = ab_array(&statuses, TEXTOID);
	args[2] = UUIDPGetDatum(&b->tenant);
	if (SPI_execute_plan(set_status_plan, args, NULL, false, 0) != SPI_OK_UPDATE ||
		SPI_processed != (uint64) ids.n)
		elog(ERROR, "ledger: changing the status of closed or re-opened accounts failed");
	for (int i = 0; i < b->naccounts; i++)
	{
		LedgerAccount *a = &b->accounts[i];

		if (a->locked && a->status_changed && a->status != a->loaded_status)
			account_status_event(&a->meta.id, &b->tenant, a->status == 'c' ? "closed" : "active",
								 a->status == 'c' ? "account.closed" : "account.reopened");
	}
}

/*
 * Record the ids of the requests that failed on the ledger's state: a later
 * request with such an id is refused (id_already_failed), in this batch or
 * any later call.  Validation failures are not recorded: the request may be
 * corrected and sent again with its id.
 */
void
write_failures(LedgerBatch *b, int nfailed)
{
	ArrayBuilder ids,
				results;
	Datum		args[4];

	ab_init(&ids, nfailed);
	ab_init(&results, nfailed);
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];

		if (!request_failed_on_state(b, i))
			continue;
		if (!result_is_transient(it->result))
			it = &b->items[i + 1];	/* the fee leg's result */
		ab_add(&ids, UUIDPGetDatum(&b->items[i].id), false);
		ab_add(&results, CStringGetTextDatum(ledger_results[it->result].name), false);
	}
	if (insert_failed_plan == NULL)
	{
		Oid			types[4] = {UUIDOID, UUIDARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};

		insert_failed_plan = ledger_prepare(
			"INSERT INTO fincore.failed_transfers (tenant_id, id, result, failed_at) "
			"SELECT $1, u.id, u.result, $4 FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(id, result) "
			"ON CONFLICT DO NOTHING", 4, types);
	}
	args[0] = UUIDPGetDatum(&b->tenant);
	args[1] = ab_array(&ids, UUIDOID);
	args[2] = ab_array(&results, TEXTOID);
	args[3] = TimestampTzGetDatum(b->now);
	if (SPI_execute_plan(insert_failed_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "ledger: recording failed transfer ids failed");
}

/*
 * Which SQL is installed: 1 when fincore.transfers has 0.2.0's flags column,
 * 0 for 0.1.0's tables, which this library keeps serving (with 0.1.0's
 * features) from the moment its files are installed until ALTER EXTENSION
 * fincore UPDATE.  Looked up at every call (three syscache look-ups), so an
 * upgrade committed by another session is seen by the next call.
 */
int
ledger_schema(void)
{
	Oid			nsp = get_namespace_oid("fincore", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("transfers", nsp) : InvalidOid;

	return OidIsValid(rel) && get_attnum(rel, "flags") != InvalidAttrNumber ? 1 : 0;
}
