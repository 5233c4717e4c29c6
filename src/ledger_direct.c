/*
 * ledger_direct.c — the ledger's direct store: transfer rows inserted and
 * account balances updated through the heap and index access methods, as
 * PostgreSQL writes its own catalogues, without SPI, a plan or an executor
 * run.  The SQL store (ledger_store.c) is the other implementation of
 * LedgerStore; ledger_store_for() picks one for each batch.
 *
 * What the executor would do and this file does instead:
 *  - permissions and row level security: not checked.  fincore's C code has
 *    checked the tenant of every account and transfer before it writes, and
 *    it writes as the tables' owner;
 *  - triggers: a table with a trigger that the statement would fire (a user's
 *    trigger) is written through the SQL store, so that the trigger runs;
 *  - index entries: made with ExecInsertIndexTuples() (unique checks, partial
 *    indexes), on a minimal executor state;
 *  - constraints: fincore's tables have only NOT NULL, which the rows always
 *    satisfy (the SQL store writes the same values).
 *
 * Rows that may conflict with a concurrent transaction (an id the caller
 * named, a hold's resolution) are inserted as ON CONFLICT DO NOTHING does,
 * by speculative insertion.  Citus tables are written through the SQL store
 * (a distributed table's rows are not in its local heap).
 */
#include "ledger_int.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "common/int.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* fincore.ledger_store */
typedef enum LedgerStoreSetting
{
	LEDGER_STORE_AUTO,			/* the direct store wherever the tables allow it */
	LEDGER_STORE_SQL			/* always the SQL store */
} LedgerStoreSetting;

static const struct config_enum_entry ledger_store_options[] = {
	{"auto", LEDGER_STORE_AUTO, false},
	{"sql", LEDGER_STORE_SQL, false},
	{NULL, 0, false}
};

static int	ledger_store_setting = LEDGER_STORE_AUTO;

void
ledger_store_init(void)
{
	DefineCustomEnumVariable("fincore.ledger_store",
							 "How the ledger writes transfer rows and balances.",
							 "auto: through the heap and index access methods wherever fincore's "
							 "tables are local heap tables without triggers of their own (the direct "
							 "store); sql: always through SQL statements (the SQL store). Both "
							 "write the same rows.",
							 &ledger_store_setting, LEDGER_STORE_AUTO, ledger_store_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
}

const LedgerStore *
ledger_store_for(const LedgerBatch *b)
{
	(void) b;

	/*
	 * A read-only transaction gets the executor's own refusal of a write
	 * (the heap access methods do not check), from the SQL store; so does a
	 * server with Citus, whose distributed tables keep no rows in their local
	 * heap.
	 */
	if (ledger_store_setting == LEDGER_STORE_SQL || XactReadOnly ||
		fincore_citus_preloaded())
		return &ledger_sql_store;
	return &ledger_direct_store;
}

/*
 * Whether a foreign key's trigger t on rel would queue nothing for an update
 * of columns: none of them is in the constraint's key on rel's side, so the
 * key is unchanged (RI_FKey_pk_upd_check_required() then skips the event; so
 * does RI_FKey_fk_upd_check_required(), unless the row was inserted in this
 * transaction with its check still pending, which only a deferrable
 * constraint allows).
 */
static bool
ri_update_skipped(Relation rel, const Trigger *t, const AttrNumber *columns, int n)
{
	HeapTuple	tup;
	Form_pg_constraint con;
	bool		fk_side,
				isnull,
				skipped;
	Datum		d;
	ArrayType  *key;
	int16	   *attnums;
	int			nkey;

	if (!t->tgisinternal || RI_FKey_trigger_type(t->tgfoid) == RI_TRIGGER_NONE)
		return false;
	tup = SearchSysCache1(CONSTROID, ObjectIdGetDatum(t->tgconstraint));
	if (!HeapTupleIsValid(tup))
		return false;
	con = (Form_pg_constraint) GETSTRUCT(tup);
	fk_side = con->conrelid == RelationGetRelid(rel);
	d = SysCacheGetAttr(CONSTROID, tup, fk_side ? Anum_pg_constraint_conkey : Anum_pg_constraint_confkey,
						&isnull);
	skipped = !isnull && !(fk_side && con->condeferrable);
	if (skipped)
	{
		key = DatumGetArrayTypeP(d);
		attnums = (int16 *) ARR_DATA_PTR(key);
		nkey = ARR_DIMS(key)[0];
		for (int k = 0; k < nkey && skipped; k++)
			for (int c = 0; c < n && skipped; c++)
				skipped = attnums[k] != columns[c];
	}
	ReleaseSysCache(tup);
	return skipped;
}

/*
 * Whether a statement of cmd on rel would fire a trigger, and so must be run
 * as one.  An UPDATE trigger with a column list fires only when the statement
 * sets one of its columns: columns (attnums, n of them) are the ones set.  A
 * foreign key's UPDATE trigger does nothing when the key is not set.
 */
bool
direct_fires_trigger(Relation rel, int cmd_flag, const AttrNumber *columns, int n)
{
	TriggerDesc *td = rel->trigdesc;

	if (td == NULL)
		return false;
	for (int i = 0; i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];
		bool		fires;

		if (t->tgenabled == TRIGGER_DISABLED || (t->tgtype & cmd_flag) == 0)
			continue;
		fires = t->tgnattr == 0;
		for (int k = 0; k < t->tgnattr && !fires; k++)
			for (int c = 0; c < n && !fires; c++)
				fires = t->tgattr[k] == columns[c];
		if (fires && cmd_flag == TRIGGER_TYPE_UPDATE && ri_update_skipped(rel, t, columns, n))
			fires = false;
		if (fires)
			return true;
	}
	return false;
}

/* A plain local heap table: what the direct store can write. */
bool
direct_is_local_heap(Relation rel)
{
	return rel->rd_rel->relkind == RELKIND_RELATION &&
		rel->rd_tableam == GetHeapamTableAmRoutine();
}

/*
 * map[attno - 1] = the index of the table's column attno in names, for
 * columns of the table.  False if the table has a column not in names (its
 * default would be the SQL store's to apply) or lacks one of them.
 */
bool
direct_map_columns(TupleDesc desc, const char *const *names, int n, int *map)
{
	int			found = 0;

	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);

		map[a] = -1;
		if (att->attisdropped)
			continue;
		for (int c = 0; c < n && map[a] < 0; c++)
			if (strcmp(NameStr(att->attname), names[c]) == 0)
				map[a] = c;
		if (map[a] < 0)
			return false;
		found++;
	}
	return found == n;
}

/* att[i] = the attnum of desc's column names[i]; false if one of them is missing. */
bool
direct_find_columns(TupleDesc desc, const char *const *names, int n, AttrNumber *att)
{
	bool		all = true;

	for (int c = 0; c < n; c++)
	{
		att[c] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts && att[c] == InvalidAttrNumber; a++)
		{
			Form_pg_attribute fa = TupleDescAttr(desc, a);

			if (!fa->attisdropped && strcmp(NameStr(fa->attname), names[c]) == 0)
				att[c] = fa->attnum;
		}
		all &= att[c] != InvalidAttrNumber;
	}
	return all;
}

/* Whether the open index's key columns are att[0], ..., att[n - 1], in that order. */
static bool
index_keys_are(Relation index, const AttrNumber *att, int n)
{
	if (index->rd_index->indnkeyatts != n)
		return false;
	for (int k = 0; k < n; k++)
		if (index->rd_index->indkey.values[k] != att[k])
			return false;
	return true;
}

/* The open index, if its key columns are att; else it is closed and NULL. */
static Relation
index_if_keys_are(Relation index, const AttrNumber *att, int n)
{
	if (index_keys_are(index, att, n))
		return index;
	index_close(index, AccessShareLock);
	return NULL;
}

/*
 * rel's primary key, opened, if its key columns are att[0], ..., att[n - 1],
 * in that order (the look-ups below are by exactly those); NULL otherwise.
 */
Relation
direct_open_primary_key(Relation rel, const AttrNumber *att, int n)
{
	Oid			oid = RelationGetPrimaryKeyIndex(rel);

	if (!OidIsValid(oid))
		return NULL;
	return index_if_keys_are(index_open(oid, AccessShareLock), att, n);
}

/* fincore's index name on rel, opened, if its key columns are att (as above); NULL otherwise. */
static Relation
direct_open_index(Relation rel, const char *name, const AttrNumber *att, int n)
{
	Oid			oid = get_relname_relid(name, RelationGetNamespace(rel));
	Relation	index;

	if (!OidIsValid(oid))
		return NULL;
	index = index_open(oid, AccessShareLock);
	if (index->rd_index->indrelid != RelationGetRelid(rel))
	{
		index_close(index, AccessShareLock);
		return NULL;
	}
	return index_if_keys_are(index, att, n);
}

/* speculative: with what ON CONFLICT's checks need (ExecCheckIndexConstraints). */
void
index_writer_open(IndexWriter *w, Relation rel, bool speculative)
{
	w->estate = CreateExecutorState();
	w->rri = makeNode(ResultRelInfo);
	/* No range table: the updated columns are then unknown, as none of the indexed ones changes. */
	InitResultRelInfo(w->rri, rel, 0, NULL, 0);
	ExecOpenIndices(w->rri, speculative);
}

/* The index entries of slot's tuple (unique indexes checked, as an INSERT does). */
void
index_writer_insert(IndexWriter *w, TupleTableSlot *slot, bool update)
{
	if (w->rri->ri_NumIndices > 0)
		(void) ExecInsertIndexTuples(w->rri, slot, w->estate, update, false, NULL, NIL);
	ResetPerTupleExprContext(w->estate);
}

void
index_writer_close(IndexWriter *w)
{
	ExecCloseIndices(w->rri);
	FreeExecutorState(w->estate);
}

/*
 * Whether the tenant's id is in fincore.failed_transfers (an id a batch
 * refused on the ledger's state is never created later), by its primary key
 * (tenant_id, id) with a new snapshot, as the SQL store's NOT EXISTS reads it.
 * -1 if that table cannot be read this way.
 */
static int
id_failed(const LedgerBatch *b, const pg_uuid_t *id)
{
	Relation	rel = table_open(fincore_table_oid("failed_transfers"), AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	static const char *const key_names[] = {"tenant_id", "id"};
	AttrNumber	key_att[2];
	Relation	pkey = NULL;
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[2];
	bool		found;

	/* The primary key must be (tenant_id, id): the look-up is by both. */
	if (direct_is_local_heap(rel) && direct_find_columns(desc, key_names, 2, key_att))
		pkey = direct_open_primary_key(rel, key_att, 2);
	if (pkey == NULL)
	{
		table_close(rel, AccessShareLock);
		return -1;
	}
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&b->tenant));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(id));
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	scan = index_beginscan(rel, pkey, snapshot, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	slot = table_slot_create(rel, NULL);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	UnregisterSnapshot(snapshot);
	index_close(pkey, NoLock);
	table_close(rel, NoLock);
	return found ? 1 : 0;
}

/*
 * Insert one row as INSERT ... ON CONFLICT DO NOTHING does: a committed row
 * with the same key in a unique index (the id, or the hold a resolution
 * resolves) means no insert, after waiting for a transaction that is
 * inserting one; otherwise the row goes in speculatively, and if a
 * concurrent insert of the same key won meanwhile, it is taken back and the
 * check runs again.  Returns whether the row was inserted.
 */
static bool
insert_unless_conflict(IndexWriter *w, Relation rel, TupleTableSlot *slot)
{
	for (;;)
	{
		ItemPointerData conflict;
		bool		spec_conflict = false;
		TransactionId xid;
		uint32		token;

		CHECK_FOR_INTERRUPTS();
		if (!ExecCheckIndexConstraints(w->rri, slot, w->estate, &conflict, NIL))
			return false;
		xid = GetCurrentTransactionId();
		token = SpeculativeInsertionLockAcquire(xid);
		table_tuple_insert_speculative(rel, slot, GetCurrentCommandId(true), 0, NULL, token);
		(void) ExecInsertIndexTuples(w->rri, slot, w->estate, false, true, &spec_conflict, NIL);
		table_tuple_complete_speculative(rel, slot, token, !spec_conflict);
		SpeculativeInsertionLockRelease(xid);
		ResetPerTupleExprContext(w->estate);
		if (!spec_conflict)
			return true;
	}
}

/*
 * Insert the transfer rows.  Rows fincore made the ids of cannot conflict:
 * one heap_multi_insert, then their index entries.  Otherwise (an id the
 * caller named, a hold's resolution), as the SQL store's ON CONFLICT DO
 * NOTHING: a batch's rows one by one in id order (concurrent batches meet on
 * a duplicate in one order), stopping at the first that does not go in (the
 * caller rolls the batch back and runs it again); a single call's first row
 * that way, unless its id failed in a batch, then its fee leg.  Returns how
 * many went in.  Under REPEATABLE READ or SERIALIZABLE, where a conflict with
 * a row the snapshot does not see is the statement's serialization error, or
 * for a table the direct store cannot write, the SQL store inserts.
 */
static int
direct_insert_transfers(LedgerBatch *b, LedgerItem **rows, int n, bool *balances_written)
{
	Relation	rel;
	TupleDesc	desc;
	int		   *map;
	TupleTableSlot **slots;
	IndexWriter w;
	Datum		v[NTRANSFER_COLUMNS];
	bool		isnull[NTRANSFER_COLUMNS];
	bool		conflicts = rows_may_conflict(rows, n);
	bool		check_failed = conflicts && b->optimistic && b->schema;
	int			failed = 0;
	int			inserted = 0;

	if (conflicts && IsolationUsesXactSnapshot())
		return ledger_sql_store.insert_transfers(b, rows, n, balances_written);
	if (check_failed && (failed = id_failed(b, &rows[0]->id)) < 0)
		return ledger_sql_store.insert_transfers(b, rows, n, balances_written);
	rel = table_open(fincore_table_oid("transfers"), RowExclusiveLock);
	desc = RelationGetDescr(rel);
	map = palloc(sizeof(int) * desc->natts);
	if (!direct_is_local_heap(rel) || direct_fires_trigger(rel, TRIGGER_TYPE_INSERT, NULL, 0) ||
		!direct_map_columns(desc, transfer_column_names, transfer_ncolumns(b), map))
	{
		table_close(rel, RowExclusiveLock);
		return ledger_sql_store.insert_transfers(b, rows, n, balances_written);
	}
	*balances_written = false;
	if (failed)
	{
		table_close(rel, RowExclusiveLock);
		return 0;
	}

	if (conflicts && !b->optimistic)
	{
		LedgerItem **sorted = palloc(sizeof(LedgerItem *) * n);

		memcpy(sorted, rows, sizeof(LedgerItem *) * n);
		qsort(sorted, n, sizeof(LedgerItem *), item_id_cmp_qsort);
		rows = sorted;
	}
	slots = palloc(sizeof(TupleTableSlot *) * n);
	for (int r = 0; r < n; r++)
	{
		Datum	   *values = palloc(sizeof(Datum) * desc->natts);
		bool	   *nulls = palloc(sizeof(bool) * desc->natts);

		transfer_row(b, rows[r], v, isnull);
		for (int a = 0; a < desc->natts; a++)
		{
			values[a] = map[a] >= 0 ? v[map[a]] : (Datum) 0;
			nulls[a] = map[a] >= 0 ? isnull[map[a]] : true;
		}
		slots[r] = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
		ExecStoreHeapTuple(heap_form_tuple(desc, values, nulls), slots[r], true);
	}
	index_writer_open(&w, rel, conflicts);
	if (!conflicts)
	{
		/* Each slot's tts_tid is its row's place, which the index entries point to. */
		table_multi_insert(rel, slots, n, GetCurrentCommandId(true), 0, NULL);
		for (int r = 0; r < n; r++)
			index_writer_insert(&w, slots[r], false);
		inserted = n;
	}
	else
	{
		for (inserted = 0; inserted < n; inserted++)
		{
			/* A single call's first row decides: its fee leg's id derives from it. */
			if (b->optimistic && inserted > 0)
			{
				table_tuple_insert(rel, slots[inserted], GetCurrentCommandId(true), 0, NULL);
				index_writer_insert(&w, slots[inserted], false);
			}
			else if (!insert_unless_conflict(&w, rel, slots[inserted]))
				break;
		}
	}
	for (int r = 0; r < n; r++)
		ExecDropSingleTupleTableSlot(slots[r]);
	index_writer_close(&w);
	table_close(rel, NoLock);
	/* What the statements after this one read (events, the next call) sees the rows. */
	CommandCounterIncrement();
	ereport(DEBUG1, (errmsg_internal("ledger: direct store: %d transfer rows", inserted)));
	return inserted;
}

/* The columns of fincore.accounts a balance update checks (0, 1) and sets (the counters). */
static const char *const balance_column_names[] = {
	"id", "tenant_id", "debits_pending", "debits_posted", "credits_pending", "credits_posted"
};

#define NBALANCE_COLUMNS 4		/* the counters, after id and tenant_id */

/*
 * Set the counters of the locked, changed accounts that are not hot: each row
 * is at the tuple id its lock returned (it cannot have moved since: we hold
 * its lock), checked against its id and tenant, and updated in place of that
 * version (a HOT update when its page has room, as no indexed column
 * changes; otherwise with new index entries).
 */
static void
direct_write_balances(LedgerBatch *b)
{
	Relation	rel;
	TupleDesc	desc;
	AttrNumber	att[lengthof(balance_column_names)];
	AttrNumber *balance_att = &att[2];
	IndexWriter w = {0};
	TupleTableSlot *slot = NULL;
	int			nwritten = 0;

	rel = table_open(fincore_table_oid("accounts"), RowExclusiveLock);
	desc = RelationGetDescr(rel);
	if (!direct_is_local_heap(rel) || !direct_find_columns(desc, balance_column_names, lengthof(att), att) ||
		direct_fires_trigger(rel, TRIGGER_TYPE_UPDATE, balance_att, NBALANCE_COLUMNS))
	{
		table_close(rel, RowExclusiveLock);
		ledger_sql_store.write_balances(b);
		return;
	}

	for (int i = 0; i < b->naccounts; i++)
	{
		LedgerAccount *acc = &b->accounts[i];
		HeapTupleData old;
		HeapTuple	new;
		Buffer		buf;
		Datum		values[NBALANCE_COLUMNS];
		bool		nulls[NBALANCE_COLUMNS] = {false, false, false, false};
		int			cols[NBALANCE_COLUMNS];
		bool		isnull;
		Datum		d;

		if (!acc->locked || !acc->changed || (acc->meta.flags & ACCOUNT_HOT))
			continue;
		old.t_self = acc->tid;
		if (!heap_fetch(rel, SnapshotAny, &old, &buf, false))
			elog(ERROR, "ledger: account %s is not at its locked tuple", uuid_text(&acc->meta.id));
		d = heap_getattr(&old, att[0], desc, &isnull);
		if (isnull || !uuid_equal(DatumGetUUIDP(d), &acc->meta.id))
			elog(ERROR, "ledger: account %s is not at its locked tuple", uuid_text(&acc->meta.id));
		d = heap_getattr(&old, att[1], desc, &isnull);
		if (isnull || !uuid_equal(DatumGetUUIDP(d), &b->tenant))
			elog(ERROR, "ledger: account %s is not the tenant's", uuid_text(&acc->meta.id));
		values[0] = Int64GetDatum(acc->bal.dp);
		values[1] = Int64GetDatum(acc->bal.dpo);
		values[2] = Int64GetDatum(acc->bal.cp);
		values[3] = Int64GetDatum(acc->bal.cpo);
		for (int c = 0; c < (int) NBALANCE_COLUMNS; c++)
			cols[c] = balance_att[c];
		new = heap_modify_tuple_by_cols(&old, desc, NBALANCE_COLUMNS, cols, values, nulls);
		ReleaseBuffer(buf);

		/* Errors if the row was updated since its lock: it cannot have been. */
		simple_heap_update(rel, &acc->tid, new);
		if (!HeapTupleIsHeapOnly(new))
		{
			/* Not a HOT update: the new version needs its index entries. */
			if (slot == NULL)
			{
				index_writer_open(&w, rel, false);
				slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
			}
			ExecStoreHeapTuple(new, slot, false);
			index_writer_insert(&w, slot, true);
			ExecClearTuple(slot);
		}
		acc->tid = new->t_self;
		heap_freetuple(new);
		nwritten++;
	}
	if (slot != NULL)
	{
		ExecDropSingleTupleTableSlot(slot);
		index_writer_close(&w);
	}
	table_close(rel, NoLock);
	CommandCounterIncrement();
	ereport(DEBUG1, (errmsg_internal("ledger: direct store: balances of %d accounts", nwritten)));
}

/* The columns of fincore.accounts a lock reads, in LockedAccountRow's order. */
static const char *const locked_column_names[] = {
	"id", "tenant_id", "currency", "code", "flags", "status", "credit_limit",
	"debits_pending", "debits_posted", "credits_pending", "credits_posted"
};

#define NLOCKED_COLUMNS lengthof(locked_column_names)

/*
 * Lock the rows of ids and read them, as SELECT ... FOR NO KEY UPDATE ORDER
 * BY id does under READ COMMITTED: in id order (the global lock order), each
 * id found by the primary key with a new snapshot, skipped unless the row is
 * the tenant's, then locked, waiting for a concurrent writer and locking the
 * newest version if it updated the row.  The statement would recheck its
 * WHERE clause on that version; here there is nothing to recheck, as id and
 * tenant_id never change (fincore.accounts' accounts_immutable trigger).
 * Under REPEATABLE READ or SERIALIZABLE, where a concurrent update is the
 * statement's serialization error, the SQL store locks.
 */
static int
direct_lock_rows(LedgerBatch *b, pg_uuid_t *ids, int n)
{
	Relation	rel,
				pkey;
	TupleDesc	desc;
	AttrNumber	att[NLOCKED_COLUMNS];
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *found,
			   *locked;
	CommandId	cid = GetCurrentCommandId(true);
	int			nhot = 0;
	int			nkeys;

	if (IsolationUsesXactSnapshot())
		return ledger_sql_store.lock_rows(b, ids, n);
	rel = table_open(fincore_table_oid("accounts"), RowShareLock);
	desc = RelationGetDescr(rel);
	pkey = NULL;
	if (direct_is_local_heap(rel) && direct_find_columns(desc, locked_column_names, NLOCKED_COLUMNS, att))
	{
		/* By the primary key: (tenant_id, id), or 0.1.0's (id) with the tenant checked. */
		AttrNumber	tenant_id_key[2] = {att[1], att[0]};

		nkeys = 2;
		pkey = direct_open_primary_key(rel, tenant_id_key, 2);
		if (pkey == NULL)
		{
			nkeys = 1;
			pkey = direct_open_primary_key(rel, att, 1);
		}
	}
	if (pkey == NULL)
	{
		table_close(rel, RowShareLock);
		return ledger_sql_store.lock_rows(b, ids, n);
	}

	qsort(ids, n, sizeof(pg_uuid_t), uuid_cmp_qsort);
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	scan = index_beginscan(rel, pkey, snapshot, nkeys, 0);
	found = table_slot_create(rel, NULL);
	locked = table_slot_create(rel, NULL);
	for (int i = 0; i < n; i++)
	{
		ScanKeyData keys[2];
		TM_FailureData tmfd;
		TM_Result	res;
		LockedAccountRow r;
		bool		isnull;
		Datum		d;

		CHECK_FOR_INTERRUPTS();
		if (nkeys == 2)
		{
			ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&b->tenant));
			ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&ids[i]));
		}
		else
			ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&ids[i]));
		index_rescan(scan, keys, nkeys, NULL, 0);
		if (!index_getnext_slot(scan, ForwardScanDirection, found))
			continue;			/* no such account */
		d = slot_getattr(found, att[1], &isnull);
		if (isnull || !uuid_equal(DatumGetUUIDP(d), &b->tenant))
			continue;			/* another tenant's: not found, and not locked */
		res = table_tuple_lock(rel, &found->tts_tid, snapshot, locked, cid, LockTupleNoKeyExclusive,
							   LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (res == TM_Deleted)
			continue;			/* deleted meanwhile (accounts are not deleted; a superuser could) */
		if (res != TM_Ok)
			elog(ERROR, "ledger: locking account %s failed (%d)", uuid_text(&ids[i]), (int) res);

		r.id = &ids[i];
		r.currency = DatumGetTextPP(slot_getattr(locked, att[2], &isnull));
		r.code = DatumGetInt32(slot_getattr(locked, att[3], &isnull));
		r.flags = DatumGetInt32(slot_getattr(locked, att[4], &isnull));
		r.status = DatumGetTextPP(slot_getattr(locked, att[5], &isnull));
		d = slot_getattr(locked, att[6], &isnull);
		r.has_limit = !isnull;
		r.credit_limit = isnull ? 0 : DatumGetInt64(d);
		r.bal.dp = DatumGetInt64(slot_getattr(locked, att[7], &isnull));
		r.bal.dpo = DatumGetInt64(slot_getattr(locked, att[8], &isnull));
		r.bal.cp = DatumGetInt64(slot_getattr(locked, att[9], &isnull));
		r.bal.cpo = DatumGetInt64(slot_getattr(locked, att[10], &isnull));
		r.tid = locked->tts_tid;
		if (account_row_locked(b, &r))
			nhot++;
	}
	ExecDropSingleTupleTableSlot(found);
	ExecDropSingleTupleTableSlot(locked);
	index_endscan(scan);
	UnregisterSnapshot(snapshot);
	index_close(pkey, NoLock);
	table_close(rel, NoLock);
	ereport(DEBUG1, (errmsg_internal("ledger: direct store: %d accounts locked", n)));
	return nhot;
}

/* The columns of fincore.transfers the referenced transfers' reader reads. */
static const char *const ref_column_names[] = {
	"id", "tenant_id", "kind", "debit_account_id", "credit_account_id", "amount", "code",
	"expires_at", "created_at", "pending_id", "reversal_of", "flags"
};

enum
{
	REF_ID, REF_TENANT, REF_KIND, REF_DEBIT, REF_CREDIT, REF_AMOUNT, REF_CODE,
	REF_EXPIRES, REF_CREATED, REF_PENDING_ID, REF_REVERSAL_OF, REF_FLAGS
};

/* The one row of index scan scan for key (k1[, k2]), in slot; false if none. */
static bool
index_fetch_one(IndexScanDesc scan, int nkeys, const pg_uuid_t *k1, const pg_uuid_t *k2,
				TupleTableSlot *slot)
{
	ScanKeyData keys[2];

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(k1));
	if (nkeys == 2)
		ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(k2));
	index_rescan(scan, keys, nkeys, NULL, 0);
	return index_getnext_slot(scan, ForwardScanDirection, slot);
}

/*
 * The referenced transfers by their keys, as the SQL store's statement reads
 * them but without planning it at every call (its plan is custom: the right
 * one for a table that grew since the session began): the row by the primary
 * key (tenant_id, id), the hold's resolution by transfers_pending_once_idx
 * (tenant_id, pending_id), the reversals by transfers_reversal_idx
 * (reversal_of).  A schema without them (0.1.0's) is read by the SQL store.
 */
static void
direct_read_refs(LedgerBatch *b, pg_uuid_t *ids, int n)
{
	Relation	rel,
				pkey = NULL,
				pending_idx = NULL,
				reversal_idx = NULL;
	TupleDesc	desc;
	AttrNumber	att[lengthof(ref_column_names)];
	Snapshot	snapshot;
	IndexScanDesc by_id,
				by_pending,
				by_reversal;
	TupleTableSlot *slot;

	if (b->schema == 0)
	{
		ledger_sql_store.read_refs(b, ids, n);
		return;
	}
	rel = table_open(fincore_table_oid("transfers"), AccessShareLock);
	desc = RelationGetDescr(rel);
	if (direct_is_local_heap(rel) && direct_find_columns(desc, ref_column_names, lengthof(att), att))
	{
		AttrNumber	id_key[2] = {att[REF_TENANT], att[REF_ID]};
		AttrNumber	pending_key[2] = {att[REF_TENANT], att[REF_PENDING_ID]};

		pkey = direct_open_primary_key(rel, id_key, 2);
		pending_idx = direct_open_index(rel, "transfers_pending_once_idx", pending_key, 2);
		reversal_idx = direct_open_index(rel, "transfers_reversal_idx", &att[REF_REVERSAL_OF], 1);
	}
	if (pkey == NULL || pending_idx == NULL || reversal_idx == NULL)
	{
		if (pkey != NULL)
			index_close(pkey, AccessShareLock);
		if (pending_idx != NULL)
			index_close(pending_idx, AccessShareLock);
		if (reversal_idx != NULL)
			index_close(reversal_idx, AccessShareLock);
		table_close(rel, AccessShareLock);
		ledger_sql_store.read_refs(b, ids, n);
		return;
	}

	/* As a statement would: this transaction's writes so far, and what committed. */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	by_id = index_beginscan(rel, pkey, snapshot, 2, 0);
	by_pending = index_beginscan(rel, pending_idx, snapshot, 2, 0);
	by_reversal = index_beginscan(rel, reversal_idx, snapshot, 1, 0);
	slot = table_slot_create(rel, NULL);
	for (int i = 0; i < n; i++)
	{
		RefTransfer *r = batch_ref(b, &ids[i], false);
		ScanKeyData key;
		bool		isnull;
		Datum		d;

		CHECK_FOR_INTERRUPTS();
		if (r == NULL || !index_fetch_one(by_id, 2, &b->tenant, &ids[i], slot))
			continue;
		r->found = true;
		r->kind = kind_from_text(TextDatumGetCString(slot_getattr(slot, att[REF_KIND], &isnull)));
		r->debit = *DatumGetUUIDP(slot_getattr(slot, att[REF_DEBIT], &isnull));
		r->credit = *DatumGetUUIDP(slot_getattr(slot, att[REF_CREDIT], &isnull));
		r->amount = DatumGetInt64(slot_getattr(slot, att[REF_AMOUNT], &isnull));
		r->code = DatumGetInt32(slot_getattr(slot, att[REF_CODE], &isnull));
		d = slot_getattr(slot, att[REF_EXPIRES], &isnull);
		r->has_expiry = !isnull;
		if (!isnull)
			r->expires_at = DatumGetTimestampTz(d);
		r->flags = DatumGetInt32(slot_getattr(slot, att[REF_FLAGS], &isnull));
		r->created_at = DatumGetTimestampTz(slot_getattr(slot, att[REF_CREATED], &isnull));

		/* Its resolution, if it is a hold that was posted, voided or expired (one at most). */
		if (index_fetch_one(by_pending, 2, &b->tenant, &ids[i], slot))
			r->resolved = kind_from_text(TextDatumGetCString(slot_getattr(slot, att[REF_KIND], &isnull)));

		/* What its reversals moved back, in the tenant. */
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(&ids[i]));
		index_rescan(by_reversal, &key, 1, NULL, 0);
		while (index_getnext_slot(by_reversal, ForwardScanDirection, slot))
		{
			d = slot_getattr(slot, att[REF_TENANT], &isnull);
			if (isnull || !uuid_equal(DatumGetUUIDP(d), &b->tenant))
				continue;
			if (pg_add_s64_overflow(r->reversed, DatumGetInt64(slot_getattr(slot, att[REF_AMOUNT], &isnull)),
									&r->reversed))
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("bigint out of range")));
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(by_id);
	index_endscan(by_pending);
	index_endscan(by_reversal);
	UnregisterSnapshot(snapshot);
	index_close(pkey, NoLock);
	index_close(pending_idx, NoLock);
	index_close(reversal_idx, NoLock);
	table_close(rel, NoLock);
}

/* The direct store: the heap and index access methods (see the top of this file). */
const LedgerStore ledger_direct_store = {
	.name = "direct",
	.lock_rows = direct_lock_rows,
	.read_refs = direct_read_refs,
	.insert_transfers = direct_insert_transfers,
	.write_balances = direct_write_balances,
};
