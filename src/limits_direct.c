/*
 * limits_direct.c — the limit counters of a batch read and written through
 * the heap and index access methods, as the direct store writes transfers
 * and balances (ledger_direct.c), instead of a statement per batch.  The SQL
 * statements of limits_store.c remain for every case this file declines: a
 * transaction snapshot, a table that is not a local heap (Citus), a trigger a
 * user put on fincore.limit_counters.
 *
 * The reads are those of the SQL store's statements under READ COMMITTED: a
 * counter per account by its primary key with a new snapshot (every writer
 * of it holds its account's lock, taken before, so the newest committed
 * version is visible), a counter of a whole scope locked FOR NO KEY UPDATE in
 * limit id order, the newest version after a wait.  Each stored counter's
 * row version is kept; the write updates exactly that version (nothing else
 * can have updated it: the lock is held); the counters that had no row are
 * inserted by the SQL store's statement, which runs the foreign key's check
 * (a counter per account gets its row at its first charge, once).
 */
#include "limits_int.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#define NCOLUMNS (LIMIT_COUNTER_NKEY + LIMIT_COUNTER_NSTATE)

/*
 * fincore.limit_counters opened for the direct store, its columns' attnums in
 * att (limit_counter_columns' order), or NULL if it is not a local heap with
 * those columns (a Citus table, or a changed one).
 */
static Relation
open_counters(LOCKMODE mode, AttrNumber *att)
{
	Relation	rel = table_open(fincore_table_oid("limit_counters"), mode);

	if (direct_is_local_heap(rel) &&
		direct_find_columns(RelationGetDescr(rel), limit_counter_columns, NCOLUMNS, att))
		return rel;
	table_close(rel, mode);
	return NULL;
}

/* The position of the batch's counter (limit, subject) in its sorted counters, or -1. */
static int
counter_position(const LedgerLimits *st, const pg_uuid_t *limit_id, const pg_uuid_t *subject)
{
	int			lo = 0,
				hi = st->ncounters - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		const LimitCounter *c = &st->counters[mid];
		int			cmp = memcmp(limit_id->data, c->def->id.data, UUID_LEN);

		if (cmp == 0)
			cmp = memcmp(subject->data, c->subject.data, UUID_LEN);
		if (cmp == 0)
			return mid;
		if (cmp < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return -1;
}

/*
 * Read the counters at positions[0 .. n - 1] of the batch's, locking each
 * found row if lock.  One index scan per subject, by the primary key's prefix
 * (tenant_id, subject): it returns the subject's counters of every limit in
 * limit id order, the ones the batch does not want skipped.  The locked ones
 * are a scope's, all of the nil subject: locked in limit id order, the global
 * order.  A counter without a row keeps its zero state.  False, having read
 * nothing, where the SQL store must read instead.
 */
bool
limits_direct_read(LedgerBatch *b, const int *positions, int n, bool lock)
{
	LedgerLimits *st = b->limits;
	AttrNumber	att[NCOLUMNS];
	AttrNumber	key_att[LIMIT_COUNTER_NKEY];
	Relation	rel,
				pkey;
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *found,
			   *locked;
	CommandId	cid = GetCurrentCommandId(true);
	bool	   *wanted;
	pg_uuid_t  *subjects;
	int			nsubjects = 0;

	if (IsolationUsesXactSnapshot())
		return false;
	rel = open_counters(lock ? RowShareLock : AccessShareLock, att);
	if (rel == NULL)
		return false;
	key_att[0] = att[0];		/* tenant_id */
	key_att[1] = att[2];		/* subject */
	key_att[2] = att[1];		/* limit_id */
	pkey = direct_open_primary_key(rel, key_att, LIMIT_COUNTER_NKEY);
	if (pkey == NULL)
	{
		table_close(rel, NoLock);
		return false;
	}
	if (!st->direct)
		st->tids = palloc0(sizeof(ItemPointerData) * Max(st->ncounters, 1));
	st->direct = true;
	if (n == 0)
	{
		index_close(pkey, NoLock);
		table_close(rel, NoLock);
		return true;
	}

	wanted = palloc0(sizeof(bool) * st->ncounters);
	subjects = palloc(sizeof(pg_uuid_t) * n);
	for (int i = 0; i < n; i++)
	{
		wanted[positions[i]] = true;
		subjects[i] = st->counters[positions[i]].subject;
	}
	qsort(subjects, n, sizeof(pg_uuid_t), uuid_cmp_qsort);
	for (int i = 0; i < n; i++)
		if (nsubjects == 0 || !uuid_equal(&subjects[nsubjects - 1], &subjects[i]))
			subjects[nsubjects++] = subjects[i];

	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	scan = index_beginscan(rel, pkey, snapshot, 2, 0);
	found = table_slot_create(rel, NULL);
	locked = lock ? table_slot_create(rel, NULL) : NULL;
	for (int s = 0; s < nsubjects; s++)
	{
		ScanKeyData keys[2];

		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&b->tenant));
		ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&subjects[s]));
		index_rescan(scan, keys, 2, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, found))
		{
			TupleTableSlot *row = found;
			Datum		values[LIMIT_COUNTER_NSTATE];
			bool		nulls[LIMIT_COUNTER_NSTATE];
			bool		isnull;
			int			pos;

			CHECK_FOR_INTERRUPTS();
			pos = counter_position(st, DatumGetUUIDP(slot_getattr(found, att[1], &isnull)), &subjects[s]);
			if (pos < 0 || !wanted[pos])
				continue;		/* a limit the batch does not meet */
			if (lock)
			{
				TM_FailureData tmfd;
				TM_Result	res;

				res = table_tuple_lock(rel, &found->tts_tid, snapshot, locked, cid, LockTupleNoKeyExclusive,
									   LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
				if (res == TM_Deleted)
					continue;	/* its tenant deleted meanwhile */
				if (res != TM_Ok)
					elog(ERROR, "ledger: locking a limit counter of %s failed (%d)",
						 uuid_text(&st->counters[pos].def->id), (int) res);
				row = locked;
			}
			slot_getallattrs(row);
			for (int k = 0; k < LIMIT_COUNTER_NSTATE; k++)
			{
				int			a = att[LIMIT_COUNTER_NKEY + k] - 1;

				values[k] = row->tts_values[a];
				nulls[k] = row->tts_isnull[a];
			}
			limits_counter_decode(&st->counters[pos], values, nulls);
			st->tids[pos] = row->tts_tid;
		}
	}
	ExecDropSingleTupleTableSlot(found);
	if (locked != NULL)
		ExecDropSingleTupleTableSlot(locked);
	index_endscan(scan);
	UnregisterSnapshot(snapshot);
	index_close(pkey, NoLock);
	table_close(rel, NoLock);
	return true;
}

/* The new version of a stored counter, at the row version its read kept. */
static void
update_counter(Relation rel, const AttrNumber *att, const LedgerBatch *b, LimitCounter *c,
			   ItemPointer tid, IndexWriter *w, TupleTableSlot **slot)
{
	TupleDesc	desc = RelationGetDescr(rel);
	HeapTupleData old;
	HeapTuple	new;
	Buffer		buf;
	Datum		values[LIMIT_COUNTER_NSTATE];
	bool		nulls[LIMIT_COUNTER_NSTATE];
	int			cols[LIMIT_COUNTER_NSTATE];
	bool		isnull;
	Datum		d;

	old.t_self = *tid;
	if (!heap_fetch(rel, SnapshotAny, &old, &buf, false))
		elog(ERROR, "ledger: limit counter %s is not at its row version", uuid_text(&c->def->id));
	/* The row is the counter's: its key never changes. */
	d = heap_getattr(&old, att[0], desc, &isnull);
	if (isnull || !uuid_equal(DatumGetUUIDP(d), &b->tenant))
		elog(ERROR, "ledger: limit counter %s is not the tenant's", uuid_text(&c->def->id));
	d = heap_getattr(&old, att[1], desc, &isnull);
	if (isnull || !uuid_equal(DatumGetUUIDP(d), &c->def->id))
		elog(ERROR, "ledger: limit counter %s is not at its row version", uuid_text(&c->def->id));
	d = heap_getattr(&old, att[2], desc, &isnull);
	if (isnull || !uuid_equal(DatumGetUUIDP(d), &c->subject))
		elog(ERROR, "ledger: limit counter %s is not at its row version", uuid_text(&c->def->id));
	limits_counter_encode(c, values, nulls);
	for (int k = 0; k < LIMIT_COUNTER_NSTATE; k++)
		cols[k] = att[LIMIT_COUNTER_NKEY + k];
	new = heap_modify_tuple_by_cols(&old, desc, LIMIT_COUNTER_NSTATE, cols, values, nulls);
	ReleaseBuffer(buf);

	/* Errors if the row was updated since it was read: under the locks held, it cannot have been. */
	simple_heap_update(rel, tid, new);
	if (!HeapTupleIsHeapOnly(new))
	{
		/* Not a HOT update (the page was full): the new version needs its index entries. */
		if (*slot == NULL)
		{
			index_writer_open(w, rel, false);
			*slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
		}
		ExecStoreHeapTuple(new, *slot, false);
		index_writer_insert(w, *slot, true);
		ExecClearTuple(*slot);
	}
	heap_freetuple(new);
}

/*
 * Update the batch's changed counters that have a row, each at the row
 * version its read kept, and mark them written (not changed).  The new ones
 * are left to the SQL store's insert, which runs the foreign key's check.
 * False, having written nothing, where the SQL store must write them all (a
 * user's trigger on the table).
 */
bool
limits_direct_write(LedgerBatch *b)
{
	LedgerLimits *st = b->limits;
	AttrNumber	att[NCOLUMNS];
	Relation	rel;
	IndexWriter w = {0};
	TupleTableSlot *slot = NULL;
	bool		all = true;

	rel = open_counters(RowExclusiveLock, att);
	if (rel == NULL)
		return false;
	if (direct_fires_trigger(rel, TRIGGER_TYPE_UPDATE, &att[LIMIT_COUNTER_NKEY], LIMIT_COUNTER_NSTATE))
	{
		table_close(rel, RowExclusiveLock);
		return false;
	}
	for (int i = 0; i < st->ncounters; i++)
	{
		LimitCounter *c = &st->counters[i];

		if (!c->changed)
			continue;
		if (!c->stored)
		{
			all = false;
			continue;
		}
		update_counter(rel, att, b, c, &st->tids[i], &w, &slot);
		c->changed = false;
	}
	if (slot != NULL)
	{
		ExecDropSingleTupleTableSlot(slot);
		index_writer_close(&w);
	}
	table_close(rel, NoLock);
	CommandCounterIncrement();
	return all;
}
