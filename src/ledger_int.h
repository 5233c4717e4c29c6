/*
 * ledger_int.h — the ledger's private types and the functions its files share.
 */
#ifndef FINCORE_LEDGER_INT_H
#define FINCORE_LEDGER_INT_H

#include "fincore.h"

#include "fees.h"
#include "jsonb_build.h"
#include "ledger.h"
#include "limits.h"
#include "rules.h"
#include "outbox.h"
#include "owner_sql.h"
#include "tenancy.h"
#include "uuidv7.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "pgtime.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

/* ---- results ---- */

typedef enum LedgerResult
{
	LR_OK,
	LR_EXISTS,
	LR_LINKED_EVENT_FAILED,
	LR_LINKED_EVENT_CHAIN_OPEN,
	LR_DEBIT_ACCOUNT_NOT_FOUND,
	LR_CREDIT_ACCOUNT_NOT_FOUND,
	LR_ACCOUNTS_MUST_BE_DIFFERENT,
	LR_AMOUNT_MUST_NOT_BE_NEGATIVE,
	LR_CURRENCY_MISMATCH,
	LR_EXCEEDS_CREDITS,
	LR_EXCEEDS_DEBITS,
	LR_DEBIT_ACCOUNT_FROZEN,
	LR_CREDIT_ACCOUNT_FROZEN,
	LR_DEBIT_ACCOUNT_CLOSED,
	LR_CREDIT_ACCOUNT_CLOSED,
	LR_PENDING_TRANSFER_NOT_FOUND,
	LR_PENDING_TRANSFER_NOT_PENDING,
	LR_PENDING_TRANSFER_ALREADY_POSTED,
	LR_PENDING_TRANSFER_ALREADY_VOIDED,
	LR_PENDING_TRANSFER_EXPIRED,
	LR_EXCEEDS_PENDING_TRANSFER_AMOUNT,
	LR_TRANSFER_NOT_FOUND,
	LR_TRANSFER_NOT_REVERSIBLE,
	LR_EXCEEDS_REVERSIBLE_AMOUNT,
	LR_EXISTS_WITH_DIFFERENT,	/* + the field's name */
	LR_TIMEOUT_RESERVED_FOR_PENDING,
	LR_TIMEOUT_MUST_BE_POSITIVE,
	LR_OVERFLOWS_BALANCE,
	LR_ID_ALREADY_USED,
	LR_FEE_EXCEEDS_AMOUNT,
	LR_INVALID_REQUEST,
	LR_ID_MUST_NOT_BE_ZERO,
	LR_ID_MUST_NOT_BE_INT_MAX,
	LR_OVERFLOWS_TIMEOUT,
	LR_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID,
	LR_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID,
	LR_PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY,
	LR_PENDING_TRANSFER_HAS_DIFFERENT_CODE,
	LR_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT,
	LR_CLOSING_TRANSFER_MUST_BE_PENDING,
	LR_ID_ALREADY_FAILED,
	LR_IMPORTED_EVENT_EXPECTED,
	LR_IMPORTED_EVENT_NOT_EXPECTED,
	LR_TIMESTAMP_MUST_BE_ZERO,
	LR_IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE,
	LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE,
	LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS,
	LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT,
	LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT,
	LR_IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO,
	LR_EXCEEDS_LIMIT,			/* a limit of fincore.limits; the item says which */
	LR_RULE_REJECTED			/* an active rule of fincore.rules; the item says which */
#define LR_NRESULTS (LR_RULE_REJECTED + 1)
} LedgerResult;

/* Transfer flags, stored as a bit mask in fincore.transfers.flags (the kind says pending, post, void). */
#define TRANSFER_BALANCING_DEBIT	0x01
#define TRANSFER_BALANCING_CREDIT	0x02
#define TRANSFER_CLOSING_DEBIT		0x04
#define TRANSFER_CLOSING_CREDIT		0x08
#define TRANSFER_IMPORTED			0x10
#define TRANSFER_BALANCING			(TRANSFER_BALANCING_DEBIT | TRANSFER_BALANCING_CREDIT)
#define TRANSFER_CLOSING			(TRANSFER_CLOSING_DEBIT | TRANSFER_CLOSING_CREDIT)

/* ---- the engine's data ---- */

typedef struct Balances
{
	int64		dp;				/* debits_pending */
	int64		dpo;			/* debits_posted */
	int64		cp;				/* credits_pending */
	int64		cpo;			/* credits_posted */
} Balances;

typedef struct LedgerAccount
{
	AccountMeta meta;
	bool		meta_known;		/* meta came from the cache */
	bool		found;			/* exists in the caller's tenant */
	bool		locked;			/* row locked; bal is absolute */
	bool		lockfree;		/* hot account used through deltas only; bal is a delta */
	bool		needs_lock;
	bool		has_limit;
	int64		credit_limit;
	char		status;			/* 'a'ctive, 'f'rozen, 'c'losed */
	char		loaded_status;
	bool		status_changed; /* by a closing transfer, or the void of one */
	TimestampTz created_at;		/* imported batches: when the account was created ... */
	TimestampTz last_ts;		/* ... and its latest transfer (or created_at) */
	Balances	bal;			/* working balances */
	Balances	loaded;			/* as read under the lock */
	Balances	base;			/* lock-free: the row as read without a lock (deltas not included) */
	ItemPointerData tid;		/* where the locked row is: the update goes straight to it */
	bool		changed;
} LedgerAccount;

/* Item kinds. */
#define KIND_POSTED		'T'
#define KIND_PENDING	'P'
#define KIND_POST		'C'
#define KIND_VOID		'V'
#define KIND_EXPIRE		'X'
#define KIND_REVERSAL	'R'
#define KIND_FAILED		'F'		/* an id in fincore.failed_transfers */

/* A transfer an item refers to: a hold to resolve, or a transfer to reverse. */
typedef struct RefTransfer
{
	pg_uuid_t	id;
	bool		found;
	bool		in_batch;		/* created by an earlier item of this batch */
	char		kind;			/* KIND_* of the referenced row */
	pg_uuid_t	debit;
	pg_uuid_t	credit;
	int64		amount;			/* held amount, or amount moved */
	int32		code;
	int32		flags;			/* TRANSFER_* */
	bool		has_expiry;
	TimestampTz expires_at;
	char		resolved;		/* 0, or KIND_POST / KIND_VOID / KIND_EXPIRE */
	int64		reversed;		/* sum already reversed */
	TimestampTz created_at;		/* when it was made: the window its limits counted it in */
} RefTransfer;

typedef struct LedgerItem
{
	int			index;			/* 0-based position in the request */
	char		kind;
	pg_uuid_t	id;
	int			dup_prev;		/* the previous item of the batch with the same id, or -1 */
	bool		id_generated;	/* fincore made the id now: no transfer or failure can have it */
	bool		has_debit;
	pg_uuid_t	debit;
	bool		has_credit;
	pg_uuid_t	credit;
	bool		has_amount;
	int64		amount;
	bool		has_currency;	/* the amount came as a fincore.amount */
	CurrencyCode currency;
	bool		has_code;
	int32		code;
	bool		has_timeout;
	Interval	timeout;
	pg_uuid_t	ref_id;			/* pending or reversed transfer */
	bool		linked;
	int32		flags;			/* TRANSFER_*: balancing, closing, imported */
	bool		has_timestamp;	/* an imported item's created_at */
	TimestampTz timestamp;
	bool		asked_known;	/* a balancing transfer was applied: asked is what it asked for */
	int64		asked;
	Jsonb	   *metadata;

	/* A fee (a posted transfer only): its leg is the next item, linked to this one. */
	const char *fee_schedule;	/* NULL: no fee */
	bool		has_fee_account;
	pg_uuid_t	fee_account;
	FeeMode		fee_mode;
	Jsonb	   *fee_context;
	bool		is_fee_leg;		/* this item is the fee leg of the item before it */
	bool		skip;			/* a fee leg of a zero fee: nothing to write */
	int			request;		/* index of the request this item comes from */
	int64		gross_amount;	/* the requested amount of a transfer with a fee */
	int64		fee;			/* its fee */
	Jsonb	   *user_metadata;	/* the metadata as requested (before the fee's is added) */

	/* resolved while running */
	LedgerAccount *dacc;
	LedgerAccount *cacc;
	RefTransfer *ref;
	int64		pending_amount; /* the hold's amount, for post / void / expire */
	TimestampTz ts;
	TimestampTz expires_at;
	bool		has_expiry;
	Balances	d_after;		/* history: balances after this item */
	Balances	c_after;
	LedgerResult preset;		/* a refusal known before the engine runs */
	LedgerResult result;
	const char *diff_field;		/* for LR_EXISTS_WITH_DIFFERENT */
	const char *invalid;		/* for LR_INVALID_REQUEST: what is wrong */
	bool		written;		/* a new row of this call */
	int64		event_seq;		/* its place in the event stream; 0: no event */
	const LimitDef *limit_hit;	/* LR_EXCEEDS_LIMIT: the limit, and what it had used */
	int64		limit_used;
	const RuleDef *rule_hit;	/* LR_RULE_REJECTED: the rule */
	const RuleDef *review_by;	/* an active review rule made this transfer a hold */
	int			nflags;			/* rules that flagged it, or would have (shadow) */
	const RuleDef **flags_by;
	int			nalerts;		/* limits it took to their alert_at */
	LimitAlert *alerts;
} LedgerItem;

typedef struct UndoEntry
{
	LedgerAccount *acc;			/* either an account ... */
	Balances	bal;
	bool		changed;
	char		status;
	bool		status_changed;
	TimestampTz last_ts;
	RefTransfer *ref;			/* ... or a referenced transfer ... */
	char		resolved;
	int64		reversed;
	LimitCounter *counter;		/* ... or a limit's counter, and a copy as it was */
	LimitCounter *saved_counter;
} UndoEntry;

typedef struct LedgerBatch
{
	LedgerItem *items;
	int			nitems;
	bool		single;			/* a single call: raise instead of returning a result */
	bool		optimistic;		/* a single call: learn of a replay from the INSERT's ON CONFLICT */
	bool		tenant_given;	/* the sweep names the tenant; otherwise the caller's */
	int			schema;			/* the installed SQL: 1 for 0.2.0's tables, 0 for 0.1.0's */
	/*
	 * A transfer's event is its row (0.2.0's tables on one node), not an
	 * outbox row (0.1.0's tables; Citus, where the outbox stays on the
	 * coordinator and the rows are on the workers: docs/scale-out.md).
	 */
	bool		events_as_rows;
	const struct LedgerStore *store;	/* where rows and balances are written (below) */
	bool		record_failures;	/* create_transfers: remember ids that failed on the state */
	bool		imported;		/* the items are imported (as the first one is) */
	TimestampTz last_imported;	/* the latest created_at applied in this batch */
	pg_uuid_t	tenant;
	TimestampTz now;

	LedgerAccount *accounts;
	HTAB	   *account_index;	/* positions in accounts by id, for large batches */
	HTAB	   *ref_index;		/* positions in refs by id */
	int			naccounts;
	RefTransfer *refs;
	int			nrefs;

	UndoEntry  *undo;
	int			nundo;
	int			undo_cap;

	struct LedgerLimits *limits;	/* the tenant's limits (limits_store.c); NULL: none */
} LedgerBatch;

static inline Datum
spi_value(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* ---- items ---- */

/*
 * A new UUIDv7 for an item the caller gave no id: nothing can be stored
 * under it, so the engine skips the look-ups and conflict checks of the id.
 */
static inline void
item_generate_id(LedgerItem *it)
{
	uuidv7_generate(&it->id);
	it->id_generated = true;
}

/* Refuse an item as malformed, saying why. */
static inline LedgerResult
invalid_request(LedgerItem *it, const char *why)
{
	it->invalid = why;
	return LR_INVALID_REQUEST;
}

/* ---- hot accounts ---- */

/*
 * Totals are checked before every write (TigerBeetle's overflow rules, plus
 * the available balance): on a locked account exactly.  A hot account's legs
 * go lock-free through deltas, whose sum nobody holds; they stay exact by
 * construction: a lock-free leg moves at most HOT_LOCKFREE_MAX_AMOUNT, and
 * only while the row's counters are below HOT_LOCKFREE_CEILING, so 2^26
 * such legs would have to wait for the same roll-up before the totals could
 * leave int64.  Any other leg of a hot account locks its row and sums its
 * deltas, and is checked like any account.
 */
#define HOT_LOCKFREE_MAX_AMOUNT	(INT64CONST(1) << 36)
#define HOT_LOCKFREE_CEILING	(INT64CONST(1) << 62)

/* ---- existence: the id is the idempotency key ---- */

typedef struct ExistingTransfer
{
	pg_uuid_t	id;
	pg_uuid_t	tenant;
	char		kind;
	pg_uuid_t	debit;
	pg_uuid_t	credit;
	int64		amount;
	int64		pending_amount;
	int32		code;
	bool		has_ref;
	pg_uuid_t	ref;
	bool		has_timeout;
	Interval	timeout;
	Jsonb	   *metadata;
	TimestampTz created_at;
	CurrencyCode currency;
	int32		flags;
} ExistingTransfer;

/* ---- building arrays of SQL parameters ---- */

typedef struct ArrayBuilder
{
	Datum	   *values;
	bool	   *nulls;
	int			n;
} ArrayBuilder;

static inline void
ab_add(ArrayBuilder *ab, Datum v, bool isnull)
{
	ab->values[ab->n] = v;
	ab->nulls[ab->n] = isnull;
	ab->n++;
}

/* Does this leg risk a limit or the totals of a hot account (so it must lock the row)? */
static inline bool
leg_needs_lock(const LedgerAccount *a, bool debit_side, const LedgerItem *it)
{
	char		kind = it->kind;
	int32		closing = debit_side ? TRANSFER_CLOSING_DEBIT : TRANSFER_CLOSING_CREDIT;

	if (!a->meta_known || !(a->meta.flags & ACCOUNT_HOT))
		return true;
	/* An import reads the account's latest transfer; closing (or re-opening) changes its status. */
	if ((it->flags & TRANSFER_IMPORTED) || ((it->flags | (it->ref ? it->ref->flags : 0)) & closing))
		return true;
	if (kind == KIND_VOID || kind == KIND_EXPIRE || kind == KIND_POST)
		return false;			/* releases a hold: pending only shrinks */
	if (!it->has_amount || it->amount > HOT_LOCKFREE_MAX_AMOUNT)
		return true;
	/* A balancing side needs the exact balance it is clamped to. */
	if ((debit_side && (it->flags & TRANSFER_BALANCING_DEBIT)) || (!debit_side && (it->flags & TRANSFER_BALANCING_CREDIT)))
		return true;
	if (debit_side)
		return (a->meta.flags & ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) != 0;
	return (a->meta.flags & ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS) != 0;
}

/*
 * Each result's name in a batch, the SQLSTATE a single call raises, and its
 * traits (ledger_core.c; the message a single call raises is in
 * ledger_errors.c).
 *
 * RESULT_TRANSIENT: the result depends on the ledger's state rather than on
 * the request alone (TigerBeetle's transient errors): a batch records the id
 * of an item that failed with one (fincore.failed_transfers), and the id stays
 * failed, so a retry cannot succeed later by accident once the state changed.
 *
 * RESULT_BEFORE_EXISTS: the result comes before exists in TigerBeetle's
 * precedence: the batch's import mode, the imported timestamp, and an id that
 * is no id at all.
 */
#define RESULT_TRANSIENT		0x01
#define RESULT_BEFORE_EXISTS	0x02

typedef struct LedgerResultInfo
{
	const char *name;
	int			sqlstate;
	int			traits;			/* RESULT_* */
} LedgerResultInfo;

extern const LedgerResultInfo ledger_results[LR_NRESULTS];

static inline bool
result_is_transient(LedgerResult r)
{
	return (ledger_results[r].traits & RESULT_TRANSIENT) != 0;
}

static inline bool
result_precedes_exists(LedgerResult r)
{
	return (ledger_results[r].traits & RESULT_BEFORE_EXISTS) != 0;
}

/* ledger_core.c */
char *
uuid_text(const pg_uuid_t *id);
int
uuid_cmp_qsort(const void *a, const void *b);
int
item_id_cmp_qsort(const void *a, const void *b);
SPIPlanPtr
ledger_prepare(const char *sql, int nargs, Oid *argtypes);
SPIPlanPtr
ledger_prepare_custom(const char *sql, int nargs, Oid *argtypes);
char *
money_text(int64 units, CurrencyCode currency);
AccountMeta *
account_meta_lookup(const pg_uuid_t *tenant, const pg_uuid_t *id);
void
account_meta_remember(const AccountMeta *meta);
void
account_meta_forget(const pg_uuid_t *tenant, const pg_uuid_t *id);
LedgerAccount *
batch_account(LedgerBatch *b, const pg_uuid_t *id, bool add);
RefTransfer *
batch_ref(LedgerBatch *b, const pg_uuid_t *id, bool add);
void
undo_push(LedgerBatch *b, LedgerAccount *acc, RefTransfer *ref);
void
undo_to(LedgerBatch *b, int mark);
void
undo_push_counter(LedgerBatch *b, LimitCounter *counter);
char
kind_from_text(const char *k);
const char *
kind_text(char kind);
void
ab_init(ArrayBuilder *ab, int cap);
Datum
ab_array(ArrayBuilder *ab, Oid elemtype);

void
batch_accounts_reset(LedgerBatch *b);

/* ledger_engine.c */
LedgerResult
check_static(LedgerItem *it);
LedgerResult
check_imported(const LedgerBatch *b, const LedgerItem *it);
bool
timestamptz_plus_interval(TimestampTz ts, const Interval *iv, TimestampTz *out);
LedgerResult
apply_item(LedgerBatch *b, LedgerItem *it);
LedgerResult
compare_existing(LedgerBatch *b, LedgerItem *it, ExistingTransfer *ex);
bool
request_failed_on_state(const LedgerBatch *b, int i);
void
mark_duplicate_ids(LedgerBatch *b);
void
existing_from_item(LedgerBatch *b, const LedgerItem *j, ExistingTransfer *ex);
int
chain_end(LedgerBatch *b, int start);

/* ledger_store.c */
void
load_refs(LedgerBatch *b, bool refresh);
void
load_account_meta(LedgerBatch *b);
void
lock_accounts(LedgerBatch *b);
void
load_account_times(LedgerBatch *b);
int
load_existing(LedgerBatch *b, pg_uuid_t *ids, int n, ExistingTransfer **out);
void
transfer_row(const LedgerBatch *b, const LedgerItem *it, Datum *v, bool *isnull);

/*
 * The columns of fincore.transfers (ledger_store.c): 0.1.0's, then 0.2.0's:
 * flags, event_seq and event_txid.
 */
#define NTRANSFER_COLUMNS 18
#define NTRANSFER_COLUMNS_V1 15
extern const char *const transfer_column_names[NTRANSFER_COLUMNS];

/* How many of the columns the installed SQL has. */
static inline int
transfer_ncolumns(const LedgerBatch *b)
{
	return b->schema ? NTRANSFER_COLUMNS : NTRANSFER_COLUMNS_V1;
}
void
write_deltas_and_history(LedgerBatch *b, LedgerItem **rows, int n);
void
write_holds(LedgerBatch *b, LedgerItem **rows, int n);
void
write_statuses(LedgerBatch *b);
void
write_failures(LedgerBatch *b, int nfailed);
int
ledger_schema(void);

/*
 * The store: where the transfer rows and the balances are written.  Two
 * implementations, picked per batch by ledger_store_for(): the SQL store
 * (ledger_store.c), statements that name their tenant, which Citus can route;
 * and the direct store (ledger_direct.c), the heap and index access methods
 * without the executor, for fincore's tables when they are local heap tables
 * without triggers of their own.  Both write the same rows.
 */
typedef struct LedgerStore
{
	const char *name;
	/*
	 * Locks the rows of ids (sorted here: the global lock order) in the
	 * batch's tenant, FOR NO KEY UPDATE, and reads each with
	 * account_row_locked().  Returns how many of them are hot.
	 */
	int			(*lock_rows) (LedgerBatch *b, pg_uuid_t *ids, int n);
	/*
	 * Reads the transfers ids (in the batch's tenant) into their b->refs
	 * entries, with how a hold was resolved and how much was reversed, in a
	 * new snapshot (READ COMMITTED: what committed before the call).
	 */
	void		(*read_refs) (LedgerBatch *b, pg_uuid_t *ids, int n);
	/*
	 * Inserts the rows and returns how many: fewer means a concurrent
	 * transaction committed one of the ids (or resolved one of the holds)
	 * first.  May write the balances too (then sets *balances_written).
	 */
	int			(*insert_transfers) (LedgerBatch *b, LedgerItem **rows, int n, bool *balances_written);
	/* Sets the counters of the locked, changed accounts that are not hot. */
	void		(*write_balances) (LedgerBatch *b);
} LedgerStore;

/* An account row as a store locked and read it. */
typedef struct LockedAccountRow
{
	const pg_uuid_t *id;
	text	   *currency;
	int32		code;
	int32		flags;
	text	   *status;
	bool		has_limit;
	int64		credit_limit;
	Balances	bal;
	ItemPointerData tid;
} LockedAccountRow;

bool
account_row_locked(LedgerBatch *b, const LockedAccountRow *row);

extern const LedgerStore ledger_sql_store;
extern const LedgerStore ledger_direct_store;

/* ledger_direct.c */
const LedgerStore *
ledger_store_for(const LedgerBatch *b);

/* What the direct store's writers share (ledger_direct.c, limits_direct.c). */
extern bool direct_is_local_heap(Relation rel);
extern bool direct_fires_trigger(Relation rel, int cmd_flag, const AttrNumber *columns, int n);
extern bool direct_map_columns(TupleDesc desc, const char *const *names, int n, int *map);
extern bool direct_find_columns(TupleDesc desc, const char *const *names, int n, AttrNumber *att);
extern Relation direct_open_primary_key(Relation rel, const AttrNumber *att, int n);

/* An executor state with the indexes of rel open, for ExecInsertIndexTuples(). */
typedef struct IndexWriter
{
	struct EState *estate;
	struct ResultRelInfo *rri;
} IndexWriter;

extern void index_writer_open(IndexWriter *w, Relation rel, bool speculative);
extern void index_writer_insert(IndexWriter *w, struct TupleTableSlot *slot, bool update);
extern void index_writer_close(IndexWriter *w);

/*
 * A row may conflict when the caller named its id (a replay, or a concurrent
 * duplicate) or when it resolves a hold (a concurrent post or void of the
 * same hold, transfers_pending_once_idx): those rows are inserted with ON
 * CONFLICT DO NOTHING, by the SQL store.
 */
static inline bool
rows_may_conflict(LedgerItem *const *rows, int n)
{
	for (int r = 0; r < n; r++)
		if (!rows[r]->id_generated || rows[r]->kind == KIND_POST ||
			rows[r]->kind == KIND_VOID || rows[r]->kind == KIND_EXPIRE)
			return true;
	return false;
}

/* ledger_events.c */
void
number_transfer_events(LedgerBatch *b, LedgerItem **rows, int n);
void
emit_transfer_events(LedgerBatch *b, LedgerItem **rows, int n);
void
audit_transfers(LedgerBatch *b, LedgerItem **rows, int n);

/* ledger_errors.c */
void pg_attribute_noreturn()
raise_item_error(const LedgerItem *it);

/* ledger_fees.c */
void
expand_fee_legs(LedgerBatch *b);
void
compute_fees(LedgerBatch *b);

/* ledger.c */
void
ledger_execute(LedgerBatch *b);

/* limits_store.c */
void
limits_prepare(LedgerBatch *b);
bool
limits_account_needs_lock(const LedgerBatch *b, const LedgerAccount *a, char side);
void
limits_lock(LedgerBatch *b);
LedgerResult
limits_apply(LedgerBatch *b, LedgerItem *it);
void
limits_review(LedgerBatch *b, LedgerItem *it);
void
limits_write(LedgerBatch *b);
void
limits_write_decisions(LedgerBatch *b);

/* ledger_api.c */
void
item_init(LedgerItem *it, int index);

#endif							/* FINCORE_LEDGER_INT_H */
