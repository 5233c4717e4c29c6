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
 */
#include "fincore.h"

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
	LR_IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO
} LedgerResult;

static const struct
{
	const char *name;			/* the batch result text */
	int			sqlstate;		/* what a single call raises */
}			ledger_results[] = {
	[LR_OK] = {"ok", 0},
	[LR_EXISTS] = {"exists", 0},
	/* Batch results only: a single call is never linked. */
	[LR_LINKED_EVENT_FAILED] = {"linked_event_failed", ERRCODE_FC_INVALID_TRANSFER_REQUEST},
	[LR_LINKED_EVENT_CHAIN_OPEN] = {"linked_event_chain_open", ERRCODE_FC_INVALID_TRANSFER_REQUEST},
	[LR_DEBIT_ACCOUNT_NOT_FOUND] = {"debit_account_not_found", ERRCODE_FC_ACCOUNT_NOT_FOUND},
	[LR_CREDIT_ACCOUNT_NOT_FOUND] = {"credit_account_not_found", ERRCODE_FC_ACCOUNT_NOT_FOUND},
	[LR_ACCOUNTS_MUST_BE_DIFFERENT] = {"accounts_must_be_different", ERRCODE_FC_SAME_ACCOUNT},
	[LR_AMOUNT_MUST_NOT_BE_NEGATIVE] = {"amount_must_not_be_negative", ERRCODE_FC_INVALID_AMOUNT},
	[LR_CURRENCY_MISMATCH] = {"accounts_must_have_the_same_currency", ERRCODE_FC_CURRENCY_MISMATCH},
	[LR_EXCEEDS_CREDITS] = {"exceeds_credits", ERRCODE_FC_EXCEEDS_CREDITS},
	[LR_EXCEEDS_DEBITS] = {"exceeds_debits", ERRCODE_FC_EXCEEDS_DEBITS},
	[LR_DEBIT_ACCOUNT_FROZEN] = {"debit_account_frozen", ERRCODE_FC_ACCOUNT_FROZEN},
	[LR_CREDIT_ACCOUNT_FROZEN] = {"credit_account_frozen", ERRCODE_FC_ACCOUNT_FROZEN},
	[LR_DEBIT_ACCOUNT_CLOSED] = {"debit_account_closed", ERRCODE_FC_ACCOUNT_CLOSED},
	[LR_CREDIT_ACCOUNT_CLOSED] = {"credit_account_closed", ERRCODE_FC_ACCOUNT_CLOSED},
	[LR_PENDING_TRANSFER_NOT_FOUND] = {"pending_transfer_not_found", ERRCODE_FC_PENDING_TRANSFER_NOT_FOUND},
	[LR_PENDING_TRANSFER_NOT_PENDING] = {"pending_transfer_not_pending", ERRCODE_FC_NOT_A_PENDING_TRANSFER},
	[LR_PENDING_TRANSFER_ALREADY_POSTED] = {"pending_transfer_already_posted", ERRCODE_FC_PENDING_ALREADY_POSTED},
	[LR_PENDING_TRANSFER_ALREADY_VOIDED] = {"pending_transfer_already_voided", ERRCODE_FC_PENDING_ALREADY_VOIDED},
	[LR_PENDING_TRANSFER_EXPIRED] = {"pending_transfer_expired", ERRCODE_FC_PENDING_TRANSFER_EXPIRED},
	[LR_EXCEEDS_PENDING_TRANSFER_AMOUNT] = {"exceeds_pending_transfer_amount", ERRCODE_FC_EXCEEDS_PENDING_AMOUNT},
	[LR_TRANSFER_NOT_FOUND] = {"transfer_not_found", ERRCODE_FC_TRANSFER_NOT_FOUND},
	[LR_TRANSFER_NOT_REVERSIBLE] = {"transfer_not_reversible", ERRCODE_FC_TRANSFER_NOT_REVERSIBLE},
	[LR_EXCEEDS_REVERSIBLE_AMOUNT] = {"exceeds_reversible_amount", ERRCODE_FC_EXCEEDS_REVERSIBLE_AMOUNT},
	[LR_EXISTS_WITH_DIFFERENT] = {"exists_with_different_", ERRCODE_FC_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS},
	[LR_TIMEOUT_RESERVED_FOR_PENDING] = {"timeout_reserved_for_pending_transfer", ERRCODE_FC_INVALID_TIMEOUT},
	[LR_TIMEOUT_MUST_BE_POSITIVE] = {"timeout_must_be_positive", ERRCODE_FC_INVALID_TIMEOUT},
	[LR_OVERFLOWS_BALANCE] = {"overflows_balance", ERRCODE_FC_BALANCE_OVERFLOW},
	[LR_ID_ALREADY_USED] = {"id_already_used", ERRCODE_FC_TRANSFER_ID_CONFLICT},
	[LR_FEE_EXCEEDS_AMOUNT] = {"fee_exceeds_amount", ERRCODE_FC_FEE_EXCEEDS_AMOUNT},
	[LR_INVALID_REQUEST] = {"invalid_request", ERRCODE_FC_INVALID_TRANSFER_REQUEST},
	[LR_ID_MUST_NOT_BE_ZERO] = {"id_must_not_be_zero", ERRCODE_FC_RESERVED_ID},
	[LR_ID_MUST_NOT_BE_INT_MAX] = {"id_must_not_be_int_max", ERRCODE_FC_RESERVED_ID},
	[LR_OVERFLOWS_TIMEOUT] = {"overflows_timeout", ERRCODE_FC_INVALID_TIMEOUT},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID] = {"pending_transfer_has_different_debit_account_id", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID] = {"pending_transfer_has_different_credit_account_id", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY] = {"pending_transfer_has_different_currency", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CODE] = {"pending_transfer_has_different_code", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT] = {"pending_transfer_has_different_amount", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_CLOSING_TRANSFER_MUST_BE_PENDING] = {"closing_transfer_must_be_pending", ERRCODE_FC_INVALID_TRANSFER_REQUEST},
	[LR_ID_ALREADY_FAILED] = {"id_already_failed", ERRCODE_FC_TRANSFER_ID_ALREADY_FAILED},
	/* Imported transfers: TigerBeetle's names ("zero" is a NULL here). */
	[LR_IMPORTED_EVENT_EXPECTED] = {"imported_event_expected", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_NOT_EXPECTED] = {"imported_event_not_expected", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_TIMESTAMP_MUST_BE_ZERO] = {"timestamp_must_be_zero", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE] = {"imported_event_timestamp_out_of_range", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE] = {"imported_event_timestamp_must_not_advance", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS] = {"imported_event_timestamp_must_not_regress", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT] = {"imported_event_timestamp_must_postdate_debit_account", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT] = {"imported_event_timestamp_must_postdate_credit_account", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO] = {"imported_event_timeout_must_be_zero", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
};

/*
 * Results that depend on the ledger's state rather than on the request alone
 * (TigerBeetle's transient errors): a batch records the id of an item that
 * failed with one (fincore.failed_transfers), and the id stays failed, so a
 * retry cannot succeed later by accident once the state has changed.
 */
static inline bool
result_is_transient(LedgerResult r)
{
	switch (r)
	{
		case LR_DEBIT_ACCOUNT_NOT_FOUND:
		case LR_CREDIT_ACCOUNT_NOT_FOUND:
		case LR_PENDING_TRANSFER_NOT_FOUND:
		case LR_TRANSFER_NOT_FOUND:
		case LR_EXCEEDS_CREDITS:
		case LR_EXCEEDS_DEBITS:
		case LR_DEBIT_ACCOUNT_FROZEN:
		case LR_CREDIT_ACCOUNT_FROZEN:
		case LR_DEBIT_ACCOUNT_CLOSED:
		case LR_CREDIT_ACCOUNT_CLOSED:
		case LR_OVERFLOWS_BALANCE:
		case LR_FEE_EXCEEDS_AMOUNT:
			return true;
		default:
			return false;
	}
}

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
} RefTransfer;

typedef struct LedgerItem
{
	int			index;			/* 0-based position in the request */
	char		kind;
	pg_uuid_t	id;
	int			dup_prev;		/* the previous item of the batch with the same id, or -1 */
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
} LedgerItem;

typedef struct UndoEntry
{
	LedgerAccount *acc;			/* either an account ... */
	Balances	bal;
	bool		changed;
	char		status;
	bool		status_changed;
	TimestampTz last_ts;
	RefTransfer *ref;			/* ... or a referenced transfer */
	char		resolved;
	int64		reversed;
} UndoEntry;

typedef struct LedgerBatch
{
	LedgerItem *items;
	int			nitems;
	bool		single;			/* a single call: raise instead of returning a result */
	bool		optimistic;		/* a single call: learn of a replay from the INSERT's ON CONFLICT */
	bool		tenant_given;	/* the sweep names the tenant; otherwise the caller's */
	int			schema;			/* the installed SQL: 1 for 0.2.0's tables, 0 for 0.1.0's */
	bool		record_failures;	/* create_transfers: remember ids that failed on the state */
	bool		imported;		/* the items are imported (as the first one is) */
	TimestampTz last_imported;	/* the latest created_at applied in this batch */
	pg_uuid_t	tenant;
	TimestampTz now;

	LedgerAccount *accounts;
	int			naccounts;
	RefTransfer *refs;
	int			nrefs;

	UndoEntry  *undo;
	int			nundo;
	int			undo_cap;
} LedgerBatch;

/* ---- helpers ---- */

char *
uuid_text(const pg_uuid_t *id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum((pg_uuid_t *) id)));
}

static int
uuid_cmp_qsort(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(pg_uuid_t));
}

/*
 * Generic plans: these statements take arrays and keys whose values never
 * change the best plan, and a custom plan would be planned again at every
 * call.  They read fincore.accounts by key, a table whose statistics keep up
 * with its size.
 */
SPIPlanPtr
ledger_prepare(const char *sql, int nargs, Oid *argtypes)
{
	return fincore_prepare(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
}

/*
 * Look-ups of transfers by id are planned at each execution instead: the
 * table grows from nothing, and a generic plan made while it was small would
 * keep scanning it sequentially until the next ANALYZE.  Only batches and
 * resolutions (post, void, reverse) use them, where planning is cheap next to
 * the rest of the call.
 */
static SPIPlanPtr
ledger_prepare_custom(const char *sql, int nargs, Oid *argtypes)
{
	return fincore_prepare(sql, nargs, argtypes, CURSOR_OPT_CUSTOM_PLAN);
}

static Datum
uuid_array(pg_uuid_t *ids, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = UUIDPGetDatum(&ids[i]);
	return PointerGetDatum(construct_array(elems, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

static inline Datum
spi_value(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* "12.34 USD" for a message. */
static char *
money_text(int64 units, CurrencyCode currency)
{
	char		code[CURRENCY_CODE_MAX_LEN + 1];

	currency_unpack(currency, code);
	return psprintf("%s %s", format_minor_units(units, currency_exponent(currency)), code);
}

/* ---- account metadata cache ---- */

#define ACCOUNT_META_CACHE_MAX 65536

static HTAB *account_meta_cache = NULL;

static void
account_meta_cache_init(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(AccountMeta);
	ctl.hcxt = TopMemoryContext;
	account_meta_cache = hash_create("fincore account metadata", 1024, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

AccountMeta *
account_meta_lookup(const pg_uuid_t *id)
{
	if (account_meta_cache == NULL)
		return NULL;
	return hash_search(account_meta_cache, id, HASH_FIND, NULL);
}

void
account_meta_remember(const AccountMeta *meta)
{
	AccountMeta *entry;

	if (account_meta_cache == NULL)
		account_meta_cache_init();
	/* Bounded: a backend that touches very many accounts starts over. */
	if (hash_get_num_entries(account_meta_cache) >= ACCOUNT_META_CACHE_MAX)
	{
		hash_destroy(account_meta_cache);
		account_meta_cache_init();
	}
	entry = hash_search(account_meta_cache, &meta->id, HASH_ENTER, NULL);
	*entry = *meta;
}

void
account_meta_forget(const pg_uuid_t *id)
{
	if (account_meta_cache != NULL)
		(void) hash_search(account_meta_cache, id, HASH_REMOVE, NULL);
}

/* ---- batch bookkeeping ---- */

static LedgerAccount *
batch_account(LedgerBatch *b, const pg_uuid_t *id, bool add)
{
	for (int i = 0; i < b->naccounts; i++)
		if (uuid_equal(&b->accounts[i].meta.id, id))
			return &b->accounts[i];
	if (!add)
		return NULL;
	b->accounts[b->naccounts].meta.id = *id;
	return &b->accounts[b->naccounts++];
}

static RefTransfer *
batch_ref(LedgerBatch *b, const pg_uuid_t *id, bool add)
{
	for (int i = 0; i < b->nrefs; i++)
		if (uuid_equal(&b->refs[i].id, id))
			return &b->refs[i];
	if (!add)
		return NULL;
	memset(&b->refs[b->nrefs], 0, sizeof(RefTransfer));
	b->refs[b->nrefs].id = *id;
	return &b->refs[b->nrefs++];
}

static void
undo_push(LedgerBatch *b, LedgerAccount *acc, RefTransfer *ref)
{
	UndoEntry  *u;

	if (b->nundo == b->undo_cap)
	{
		b->undo_cap = Max(16, b->undo_cap * 2);
		b->undo = b->undo ? repalloc(b->undo, sizeof(UndoEntry) * b->undo_cap)
			: palloc(sizeof(UndoEntry) * b->undo_cap);
	}
	u = &b->undo[b->nundo++];
	memset(u, 0, sizeof(UndoEntry));
	if (acc)
	{
		u->acc = acc;
		u->bal = acc->bal;
		u->changed = acc->changed;
		u->status = acc->status;
		u->status_changed = acc->status_changed;
		u->last_ts = acc->last_ts;
	}
	if (ref)
	{
		u->ref = ref;
		u->resolved = ref->resolved;
		u->reversed = ref->reversed;
	}
}

static void
undo_to(LedgerBatch *b, int mark)
{
	while (b->nundo > mark)
	{
		UndoEntry  *u = &b->undo[--b->nundo];

		if (u->acc)
		{
			u->acc->bal = u->bal;
			u->acc->changed = u->changed;
			u->acc->status = u->status;
			u->acc->status_changed = u->status_changed;
			u->acc->last_ts = u->last_ts;
		}
		if (u->ref)
		{
			u->ref->resolved = u->resolved;
			u->ref->reversed = u->reversed;
		}
	}
}

/* ---- step 1: checks that need no database ---- */

/* Refuse an item as malformed, saying why. */
static inline LedgerResult
invalid_request(LedgerItem *it, const char *why)
{
	it->invalid = why;
	return LR_INVALID_REQUEST;
}

static LedgerResult
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
static LedgerResult
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
static bool
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

/* ---- step 2: referenced transfers and account metadata ---- */

/*
 * Plans that differ with the installed SQL: [1] for 0.2.0's tables, [0] for
 * 0.1.0's (no transfers.flags, no failed_transfers), which this library still
 * serves between the installation of its files and ALTER EXTENSION UPDATE.
 */
static SPIPlanPtr refs_plan[2];
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr status_plan = NULL;
static SPIPlanPtr deltas_sum_plan = NULL;
static SPIPlanPtr exists_plan[2];
static SPIPlanPtr insert_one_plan[2];
static SPIPlanPtr insert_row_plan[2];
static SPIPlanPtr insert_many_plan[2];
static SPIPlanPtr update_accounts_plan = NULL;
static SPIPlanPtr insert_deltas_plan = NULL;
static SPIPlanPtr insert_history_plan = NULL;
static SPIPlanPtr insert_holds_plan = NULL;
static SPIPlanPtr delete_holds_plan = NULL;
static SPIPlanPtr account_times_plan = NULL;
static SPIPlanPtr set_status_plan = NULL;
static SPIPlanPtr insert_failed_plan = NULL;

static char
kind_from_text(const char *k)
{
	if (strcmp(k, "posted") == 0)
		return KIND_POSTED;
	if (strcmp(k, "pending") == 0)
		return KIND_PENDING;
	if (strcmp(k, "post") == 0)
		return KIND_POST;
	if (strcmp(k, "void") == 0)
		return KIND_VOID;
	if (strcmp(k, "expire") == 0)
		return KIND_EXPIRE;
	return KIND_REVERSAL;
}

static const char *
kind_text(char kind)
{
	switch (kind)
	{
		case KIND_POSTED:
			return "posted";
		case KIND_PENDING:
			return "pending";
		case KIND_POST:
			return "post";
		case KIND_VOID:
			return "void";
		case KIND_EXPIRE:
			return "expire";
		default:
			return "reversal";
	}
}

/*
 * Load the referenced transfers that are not created in this batch, with
 * whether (and how) a hold was resolved and how much of a transfer has been
 * reversed.  Another tenant's transfer is simply not found.
 */
static void
load_refs(LedgerBatch *b, bool refresh)
{
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * Max(b->nrefs, 1));
	int			n = 0;
	Datum		args[1];

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
	if (n == 0)
		return;
	if (refs_plan[b->schema] == NULL)
	{
		Oid			types[2] = {UUIDARRAYOID, UUIDOID};

		refs_plan[b->schema] = ledger_prepare_custom(psprintf(
			"SELECT t.id, t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.code, t.expires_at, "
			"       (SELECT r.kind FROM fincore.transfers r WHERE r.pending_id OPERATOR(pg_catalog.=) t.id), "
			"       (SELECT pg_catalog.sum(r.amount)::bigint FROM fincore.transfers r "
			"         WHERE r.reversal_of OPERATOR(pg_catalog.=) t.id), %s "
			"  FROM fincore.transfers t "
			" WHERE t.id OPERATOR(pg_catalog.=) ANY ($1) AND t.tenant_id OPERATOR(pg_catalog.=) $2",
			b->schema ? "t.flags" : "0"), 2, types);
	}
	args[0] = uuid_array(ids, n);
	{
		Datum		a2[2] = {args[0], UUIDPGetDatum(&b->tenant)};

		if (SPI_execute_plan(refs_plan[b->schema], a2, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "ledger: loading referenced transfers failed");
	}
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
	}
}

/*
 * Fill in what the per-backend cache knows of each account.  An account it
 * does not know is locked like an ordinary one (the lock query reads its
 * metadata): at worst a hot account is locked once, after which the cache
 * knows it is hot.
 */
static void
load_account_meta(LedgerBatch *b)
{
	for (int i = 0; i < b->naccounts; i++)
	{
		LedgerAccount *a = &b->accounts[i];
		AccountMeta *m = account_meta_lookup(&a->meta.id);

		a->meta_known = m != NULL;
		a->found = false;
		if (m != NULL)
		{
			a->meta = *m;
			/* Another tenant's account is not found, and not locked either. */
			a->found = uuid_equal(&m->tenant, &b->tenant);
		}
	}
}

/* ---- step 3: lock and read ---- */

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
 * Lock the rows of ids (sorted here: one statement, rows locked in id order,
 * the global lock order) and read them: their counters, and what the cache
 * did not know of them.  Returns how many of them are hot.
 */
static int
lock_rows(LedgerBatch *b, pg_uuid_t *ids, int n)
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
		bool		isnull;
		LedgerAccount *a = batch_account(b, DatumGetUUIDP(spi_value(row, 1, &isnull)), false);
		Datum		d;
		text	   *cur;

		if (a == NULL)
			continue;
		if (!a->meta_known)
		{
			cur = DatumGetTextPP(spi_value(row, 2, &isnull));
			a->meta.tenant = b->tenant;
			a->meta.currency = currency_pack_or_error(VARDATA_ANY(cur), VARSIZE_ANY_EXHDR(cur));
			a->meta.code = DatumGetInt32(spi_value(row, 3, &isnull));
			a->meta.flags = DatumGetInt32(spi_value(row, 4, &isnull));
			account_meta_remember(&a->meta);
			a->meta_known = true;
		}
		a->found = true;
		a->locked = true;
		a->lockfree = false;
		if (a->meta.flags & ACCOUNT_HOT)
			nhot++;
		a->status = a->loaded_status = TextDatumGetCString(spi_value(row, 5, &isnull))[0];
		d = spi_value(row, 6, &isnull);
		a->has_limit = !isnull;
		a->credit_limit = isnull ? 0 : DatumGetInt64(d);
		a->loaded.dp = DatumGetInt64(spi_value(row, 7, &isnull));
		a->loaded.dpo = DatumGetInt64(spi_value(row, 8, &isnull));
		a->loaded.cp = DatumGetInt64(spi_value(row, 9, &isnull));
		a->loaded.cpo = DatumGetInt64(spi_value(row, 10, &isnull));
		a->tid = *((ItemPointer) DatumGetPointer(spi_value(row, 11, &isnull)));
	}
	return nhot;
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

	if (lock_rows(b, ids, n) == 0)
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

static void
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
				account_meta_forget(&a->meta.id);
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
static void
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

/* ---- step 4: apply the items ---- */

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
static LedgerResult
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
		}
	}
	return LR_OK;
}

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

/*
 * Existing transfers among the given ids (any tenant: an id used by another
 * tenant is id_already_used), and the ids that failed in the tenant
 * (fincore.failed_transfers, kind KIND_FAILED).  Failed ids come first: in
 * the (raced) case of both, the transfer is the last word.
 */
static int
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
			"  FROM fincore.transfers t WHERE t.id OPERATOR(pg_catalog.=) ANY ($1)";

		if (b->schema == 0)
			exists_plan[0] = ledger_prepare_custom(
				psprintf("SELECT * FROM (%s) t WHERE $2 IS NOT NULL", psprintf(transfers_sql, "0")), 2, types);
		else
			exists_plan[1] = ledger_prepare_custom(psprintf(
			"SELECT f.id, f.tenant_id, 'failed', NULL::pg_catalog.uuid, NULL::pg_catalog.uuid, 0::pg_catalog.int8, "
			"       0::pg_catalog.int8, 0, NULL::pg_catalog.uuid, NULL::pg_catalog.interval, NULL::pg_catalog.jsonb, "
			"       f.failed_at, NULL::pg_catalog.text, 0 "
			"  FROM fincore.failed_transfers f "
			" WHERE f.tenant_id OPERATOR(pg_catalog.=) $2 AND f.id OPERATOR(pg_catalog.=) ANY ($1) "
			"UNION ALL %s", psprintf(transfers_sql, "t.flags")), 2, types);
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
static LedgerResult
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

/* ---- step 5: write ---- */

typedef struct ArrayBuilder
{
	Datum	   *values;
	bool	   *nulls;
	int			n;
} ArrayBuilder;

static void
ab_init(ArrayBuilder *ab, int cap)
{
	ab->values = palloc(sizeof(Datum) * Max(cap, 1));
	ab->nulls = palloc(sizeof(bool) * Max(cap, 1));
	ab->n = 0;
}

static inline void
ab_add(ArrayBuilder *ab, Datum v, bool isnull)
{
	ab->values[ab->n] = v;
	ab->nulls[ab->n] = isnull;
	ab->n++;
}

static Datum
ab_array(ArrayBuilder *ab, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {ab->n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(ab->values, ab->nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval, typalign));
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
#define UPDATE_BALANCES_SQL(ids, dp, dpo, cp, cpo, tids) \
	"UPDATE fincore.accounts a " \
	"   SET debits_pending = u.dp, debits_posted = u.dpo, credits_pending = u.cp, credits_posted = u.cpo " \
	"  FROM ROWS FROM (pg_catalog.unnest(" tids "), pg_catalog.unnest(" ids "), pg_catalog.unnest(" dp "), " \
	"                  pg_catalog.unnest(" dpo "), pg_catalog.unnest(" cp "), pg_catalog.unnest(" cpo ")) " \
	"       AS u(tid, id, dp, dpo, cp, cpo) " \
	" WHERE a.ctid OPERATOR(pg_catalog.=) u.tid AND a.id OPERATOR(pg_catalog.=) u.id"

/* 0.1.0's columns of fincore.transfers; 0.2.0 adds flags, the last one. */
#define TRANSFER_COLUMNS_V1 \
	"id, tenant_id, debit_account_id, credit_account_id, amount, pending_amount, currency, code, " \
	"kind, pending_id, reversal_of, timeout, expires_at, metadata, created_at"

static const Oid transfer_column_types[] = {
	UUIDOID, UUIDOID, UUIDOID, UUIDOID, INT8OID, INT8OID, TEXTOID, INT4OID,
	TEXTOID, UUIDOID, UUIDOID, INTERVALOID, TIMESTAMPTZOID, JSONBOID, TIMESTAMPTZOID, INT4OID
};
#define NTRANSFER_COLUMNS lengthof(transfer_column_types)

/* How many of the columns the installed SQL has, and their names. */
static inline int
transfer_ncolumns(const LedgerBatch *b)
{
	return b->schema ? (int) NTRANSFER_COLUMNS : (int) NTRANSFER_COLUMNS - 1;
}

static inline const char *
transfer_columns(const LedgerBatch *b)
{
	return b->schema ? TRANSFER_COLUMNS_V1 ", flags" : TRANSFER_COLUMNS_V1;
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

/* The column values of an item's transfer row. */
static void
item_row(LedgerBatch *b, LedgerItem *it, Datum *v, bool *isnull)
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
}

/*
 * Insert the transfer rows.  Returns how many were inserted: fewer than asked
 * means a concurrent transaction committed one of the ids (or resolved one of
 * the holds) first; ON CONFLICT waits for it and skips the row.
 */
static int
insert_transfers(LedgerBatch *b, LedgerItem **rows, int n, bool *balances_written)
{
	int			ncols = transfer_ncolumns(b);

	*balances_written = false;
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

		if (insert_one_plan[b->schema] == NULL)
		{
			Oid			types[NTRANSFER_COLUMNS + 6];

			memcpy(types, transfer_column_types, sizeof(Oid) * ncols);
			types[ncols] = UUIDARRAYOID;
			for (int i = 1; i < 5; i++)
				types[ncols + i] = INT8ARRAYOID;
			types[ncols + 5] = get_array_type(TIDOID);
			/* An id that failed in a batch is not created either (id_already_failed). */
			insert_one_plan[b->schema] = ledger_prepare(psprintf(
				"WITH ins AS (INSERT INTO fincore.transfers (%s) "
				"             SELECT %s %s "
				"             ON CONFLICT DO NOTHING RETURNING 1), "
				"     upd AS (" UPDATE_BALANCES_SQL("$%d", "$%d", "$%d", "$%d", "$%d", "$%d")
				"               AND EXISTS (SELECT 1 FROM ins) RETURNING 1) "
				"SELECT (SELECT pg_catalog.count(*) FROM ins), (SELECT pg_catalog.count(*) FROM upd)",
				transfer_columns(b), param_list(1, ncols, "%s"),
				b->schema ? "WHERE NOT EXISTS (SELECT FROM fincore.failed_transfers f "
				"                   WHERE f.tenant_id OPERATOR(pg_catalog.=) $2 AND f.id OPERATOR(pg_catalog.=) $1)" : "",
				/* UPDATE_BALANCES_SQL names the tuple ids first, then ids and counters */
				ncols + 6, ncols + 1, ncols + 2, ncols + 3, ncols + 4, ncols + 5),
				ncols + 6, types);
		}
		item_row(b, rows[0], v, isnull);
		for (int i = 0; i < ncols; i++)
			nulls[i] = isnull[i] ? 'n' : ' ';
		nbalances = balance_arrays(b, &v[ncols]);
		memset(&nulls[ncols], ' ', 6);
		if (SPI_execute_plan(insert_one_plan[b->schema], v, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
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
			if (insert_row_plan[b->schema] == NULL)
				insert_row_plan[b->schema] = ledger_prepare(
					psprintf("INSERT INTO fincore.transfers (%s) VALUES (%s)",
							 transfer_columns(b), param_list(1, ncols, "%s")),
					ncols, (Oid *) transfer_column_types);
			item_row(b, rows[r], v, isnull);
			for (int i = 0; i < ncols; i++)
				nulls[i] = isnull[i] ? 'n' : ' ';
			if (SPI_execute_plan(insert_row_plan[b->schema], v, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "ledger: inserting a transfer failed");
		}
		return n;
	}
	else
	{
		ArrayBuilder cols[NTRANSFER_COLUMNS];
		Datum		args[NTRANSFER_COLUMNS];

		if (insert_many_plan[b->schema] == NULL)
		{
			Oid			types[NTRANSFER_COLUMNS];

			for (int i = 0; i < ncols; i++)
				types[i] = get_array_type(transfer_column_types[i]);
			/* Rows in id order, so concurrent batches meet on a duplicate id in one order. */
			insert_many_plan[b->schema] = ledger_prepare(psprintf(
				"INSERT INTO fincore.transfers (%s) "
				"SELECT * FROM ROWS FROM (%s) AS u(%s) ORDER BY 1 "
				"ON CONFLICT DO NOTHING",
				transfer_columns(b), param_list(1, ncols, "pg_catalog.unnest(%s)"), transfer_columns(b)),
				ncols, types);
		}
		for (int c = 0; c < ncols; c++)
			ab_init(&cols[c], n);
		for (int r = 0; r < n; r++)
		{
			Datum		v[NTRANSFER_COLUMNS];
			bool		isnull[NTRANSFER_COLUMNS];

			item_row(b, rows[r], v, isnull);
			for (int c = 0; c < ncols; c++)
				ab_add(&cols[c], v[c], isnull[c]);
		}
		for (int c = 0; c < ncols; c++)
			args[c] = ab_array(&cols[c], transfer_column_types[c]);
		if (SPI_execute_plan(insert_many_plan[b->schema], args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "ledger: inserting transfers failed");
		return (int) SPI_processed;
	}
}

static void
write_balances(LedgerBatch *b)
{
	Datum		args[6];
	int			n = balance_arrays(b, args);

	if (n == 0)
		return;
	if (update_accounts_plan == NULL)
	{
		Oid			types[6] = {UUIDARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, InvalidOid};

		types[5] = get_array_type(TIDOID);
		update_accounts_plan = ledger_prepare(UPDATE_BALANCES_SQL("$1", "$2", "$3", "$4", "$5", "$6"), 6, types);
	}
	if (SPI_execute_plan(update_accounts_plan, args, NULL, false, 0) != SPI_OK_UPDATE ||
		SPI_processed != (uint64) n)
		elog(ERROR, "ledger: updating balances failed");
}

/* One delta row per leg on a hot account (locked or not), per written item. */
static void
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

static void
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
		Datum		args[1];

		if (delete_holds_plan == NULL)
		{
			Oid			types[1] = {UUIDARRAYOID};

			delete_holds_plan = ledger_prepare(
				"DELETE FROM fincore.pending_holds h WHERE h.transfer_id OPERATOR(pg_catalog.=) ANY ($1)",
				1, types);
		}
		args[0] = ab_array(&done_ids, UUIDOID);
		if (SPI_execute_plan(delete_holds_plan, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "ledger: clearing resolved holds failed");
	}
}

/*
 * Accounts closed by a closing hold, or opened again by its void or expiry:
 * the new status, and an event as close_account() emits one.
 */
static void
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
 * Does request items[i] fail on the ledger's state (a transient result, its
 * own or its fee leg's), so that a batch records its id as failed?
 */
static bool
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

/*
 * Record the ids of the requests that failed on the ledger's state: a later
 * request with such an id is refused (id_already_failed), in this batch or
 * any later call.  Validation failures are not recorded: the request may be
 * corrected and sent again with its id.
 */
static void
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

/* ---- events ---- */

/* The event type of a transfer row of this kind. */
static const char *
transfer_event_type(char kind)
{
	switch (kind)
	{
		case KIND_POST:
			return "transfer.posted";
		case KIND_VOID:
			return "transfer.voided";
		case KIND_EXPIRE:
			return "transfer.expired";
		case KIND_REVERSAL:
			return "transfer.reversed";
		default:
			return "transfer.created";	/* posted or pending */
	}
}

/* The transfer as an event payload: the row's columns, the amount also as text. */
static Jsonb *
transfer_payload(LedgerBatch *b, LedgerItem *it)
{
	JsonbParseState *st = NULL;
	char		code[CURRENCY_CODE_MAX_LEN + 1];
	JsonbValue *res;

	currency_unpack(it->dacc->meta.currency, code);
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "id");
	jb_string(&st, uuid_text(&it->id));
	jb_key(&st, "tenant_id");
	jb_string(&st, uuid_text(&b->tenant));
	jb_key(&st, "kind");
	jb_string(&st, kind_text(it->kind));
	jb_key(&st, "debit_account_id");
	jb_string(&st, uuid_text(&it->dacc->meta.id));
	jb_key(&st, "credit_account_id");
	jb_string(&st, uuid_text(&it->cacc->meta.id));
	jb_key(&st, "amount");
	jb_int(&st, it->amount);
	jb_key(&st, "amount_text");
	jb_string(&st, money_text(it->amount, it->dacc->meta.currency));
	jb_key(&st, "currency");
	jb_string(&st, code);
	jb_key(&st, "code");
	jb_int(&st, it->code);
	jb_key(&st, "pending_id");
	if (it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE)
		jb_string(&st, uuid_text(&it->ref_id));
	else
		jb_null(&st);
	jb_key(&st, "pending_amount");
	jb_int(&st, (it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE) ? it->pending_amount : 0);
	jb_key(&st, "reversal_of");
	if (it->kind == KIND_REVERSAL)
		jb_string(&st, uuid_text(&it->ref_id));
	else
		jb_null(&st);
	jb_key(&st, "expires_at");
	if (it->has_expiry)
		jb_string(&st, DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(it->expires_at))));
	else
		jb_null(&st);
	jb_key(&st, "metadata");
	jb_jsonb(&st, it->metadata);
	jb_key(&st, "created_at");
	jb_string(&st, DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(it->ts))));
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

static int
item_id_cmp(const void *a, const void *b)
{
	return memcmp(&(*(LedgerItem *const *) a)->id, &(*(LedgerItem *const *) b)->id, sizeof(pg_uuid_t));
}

/*
 * Each written transfer becomes an outbox event on topic "ledger", in the
 * same transaction.  The aggregate is the hold for its post, void or expiry,
 * the original transfer for a reversal, so that a hold's story reaches a
 * consumer in order.  Events are emitted in id order (the outbox locks each
 * aggregate until commit).  A tenant can switch them off
 * (fincore.set_ledger_events(false)).
 */
static void
emit_transfer_events(LedgerBatch *b, LedgerItem **rows, int n)
{
	LedgerItem **sorted;

	if (n == 0 || !outbox_ledger_events_enabled(&b->tenant))
		return;
	sorted = palloc(sizeof(LedgerItem *) * n);
	for (int i = 0; i < n; i++)
		sorted[i] = rows[i];
	qsort(sorted, n, sizeof(LedgerItem *), item_id_cmp);
	for (int i = 0; i < n; i++)
	{
		LedgerItem *it = sorted[i];
		const pg_uuid_t *aggregate = it->kind == KIND_POSTED || it->kind == KIND_PENDING ? &it->id : &it->ref_id;

		outbox_emit_event(&b->tenant, "ledger", transfer_event_type(it->kind), "transfer",
						  uuid_text(aggregate), transfer_payload(b, it), NULL, NULL);
	}
}

/* ---- the engine ---- */

/* Raise the error a single call reports for an item's result. */
static void pg_attribute_noreturn()
raise_item_error(LedgerBatch *b, LedgerItem *it)
{
	LedgerResult r = it->result;
	const char *name = ledger_results[r].name;
	const char *id = uuid_text(&it->id);
	LedgerAccount *d = it->dacc,
			   *c = it->cacc;

	switch (r)
	{
		case LR_DEBIT_ACCOUNT_NOT_FOUND:
		case LR_CREDIT_ACCOUNT_NOT_FOUND:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("%s account %s not found",
							r == LR_DEBIT_ACCOUNT_NOT_FOUND ? "debit" : "credit",
							uuid_text(r == LR_DEBIT_ACCOUNT_NOT_FOUND ?
									  (d ? &d->meta.id : &it->debit) : (c ? &c->meta.id : &it->credit))),
					 errhint("Accounts are visible only in their own tenant.")));
			break;
		case LR_EXCEEDS_CREDITS:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("%s of %s exceeds the credits of account %s",
							it->is_fee_leg ? "the fee" : "transfer",
							money_text(it->amount, d->meta.currency), uuid_text(&d->meta.id)),
					 errdetail("Its debits posted %s and pending %s leave no room under its credits posted %s%s.",
							   money_text(d->bal.dpo, d->meta.currency), money_text(d->bal.dp, d->meta.currency),
							   money_text(d->bal.cpo, d->meta.currency),
							   d->has_limit ? psprintf(" plus the credit limit %s",
													   money_text(d->credit_limit, d->meta.currency)) : ""),
					 errhint("The account is flagged debits_must_not_exceed_credits.")));
			break;
		case LR_EXCEEDS_DEBITS:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("%s of %s exceeds the debits of account %s",
							it->is_fee_leg ? "the fee" : "transfer",
							money_text(it->amount, c->meta.currency), uuid_text(&c->meta.id)),
					 errdetail("Its credits posted %s and pending %s leave no room under its debits posted %s%s.",
							   money_text(c->bal.cpo, c->meta.currency), money_text(c->bal.cp, c->meta.currency),
							   money_text(c->bal.dpo, c->meta.currency),
							   c->has_limit ? psprintf(" plus the credit limit %s",
													   money_text(c->credit_limit, c->meta.currency)) : ""),
					 errhint("The account is flagged credits_must_not_exceed_debits.")));
			break;
		case LR_CURRENCY_MISMATCH:
			{
				char		dc[CURRENCY_CODE_MAX_LEN + 1],
							cc[CURRENCY_CODE_MAX_LEN + 1];

				currency_unpack(d->meta.currency, dc);
				currency_unpack(c->meta.currency, cc);
				if (it->has_currency && d->meta.currency == c->meta.currency)
				{
					char		ac[CURRENCY_CODE_MAX_LEN + 1];

					currency_unpack(it->currency, ac);
					ereport(ERROR,
							(errcode(ledger_results[r].sqlstate),
							 errmsg("currency mismatch: the amount is in %s, the accounts are in %s", ac, dc),
							 errhint("Pass an amount in the accounts' currency.")));
				}
				ereport(ERROR,
						(errcode(ledger_results[r].sqlstate),
						 errmsg("currency mismatch: debit account %s is in %s, credit account %s in %s",
								uuid_text(&d->meta.id), dc, uuid_text(&c->meta.id), cc),
						 errhint("Both accounts of a transfer must have the same currency.")));
			}
			break;
		case LR_EXISTS_WITH_DIFFERENT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer %s already exists with a different %s", id, it->diff_field),
					 errhint("A transfer id is an idempotency key: replay it with exactly the same fields, or use a new id.")));
			break;
		case LR_DEBIT_ACCOUNT_FROZEN:
		case LR_DEBIT_ACCOUNT_CLOSED:
		case LR_CREDIT_ACCOUNT_FROZEN:
		case LR_CREDIT_ACCOUNT_CLOSED:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("%s account %s is %s",
							(r == LR_DEBIT_ACCOUNT_FROZEN || r == LR_DEBIT_ACCOUNT_CLOSED) ? "debit" : "credit",
							uuid_text((r == LR_DEBIT_ACCOUNT_FROZEN || r == LR_DEBIT_ACCOUNT_CLOSED) ?
									  &d->meta.id : &c->meta.id),
							(r == LR_DEBIT_ACCOUNT_FROZEN || r == LR_CREDIT_ACCOUNT_FROZEN) ? "frozen" : "closed"),
					 errhint("A frozen or closed account takes no new debits or credits; its holds can still be voided.")));
			break;
		case LR_PENDING_TRANSFER_NOT_FOUND:
		case LR_PENDING_TRANSFER_NOT_PENDING:
		case LR_PENDING_TRANSFER_ALREADY_POSTED:
		case LR_PENDING_TRANSFER_ALREADY_VOIDED:
		case LR_PENDING_TRANSFER_EXPIRED:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("pending transfer %s %s", uuid_text(&it->ref_id),
							r == LR_PENDING_TRANSFER_NOT_FOUND ? "not found" :
							r == LR_PENDING_TRANSFER_NOT_PENDING ? "is not a hold" :
							r == LR_PENDING_TRANSFER_ALREADY_POSTED ? "was already posted" :
							r == LR_PENDING_TRANSFER_ALREADY_VOIDED ? "was already voided" : "has expired"),
					 r == LR_PENDING_TRANSFER_EXPIRED ? errhint("A hold cannot be posted or voided after its timeout; it is released.") : 0));
			break;
		case LR_EXCEEDS_PENDING_TRANSFER_AMOUNT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("cannot post %s of pending transfer %s, which holds %s",
							money_text(it->amount, d->meta.currency), uuid_text(&it->ref_id),
							money_text(it->pending_amount, d->meta.currency))));
			break;
		case LR_TRANSFER_NOT_FOUND:
		case LR_TRANSFER_NOT_REVERSIBLE:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer %s %s", uuid_text(&it->ref_id),
							r == LR_TRANSFER_NOT_FOUND ? "not found" : "cannot be reversed"),
					 r == LR_TRANSFER_NOT_REVERSIBLE ?
					 errhint("Only posted transfers (and posts of holds) can be reversed; void a hold instead.") : 0));
			break;
		case LR_EXCEEDS_REVERSIBLE_AMOUNT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("reversal of transfer %s exceeds what is left of it", uuid_text(&it->ref_id)),
					 errdetail("%s of %s has been reversed already.",
							   money_text(it->ref->reversed, d->meta.currency),
							   money_text(it->ref->amount, d->meta.currency))));
			break;
		case LR_AMOUNT_MUST_NOT_BE_NEGATIVE:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("amount must not be negative, not " INT64_FORMAT, it->amount)));
			break;
		case LR_ACCOUNTS_MUST_BE_DIFFERENT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("debit and credit account are the same account %s", uuid_text(&it->debit))));
			break;
		case LR_TIMEOUT_RESERVED_FOR_PENDING:
		case LR_TIMEOUT_MUST_BE_POSITIVE:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg(r == LR_TIMEOUT_RESERVED_FOR_PENDING ? "a timeout applies only to a pending transfer"
							: "timeout must be positive, not %s",
							DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(&it->timeout))))));
			break;
		case LR_INVALID_REQUEST:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("invalid transfer request: %s", it->invalid ? it->invalid : name)));
			break;
		case LR_ID_MUST_NOT_BE_ZERO:
		case LR_ID_MUST_NOT_BE_INT_MAX:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer id %s is reserved", id),
					 errhint("The nil UUID and the all-ones UUID are never ids; use fincore.uuidv7().")));
			break;
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID:
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID:
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY:
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_CODE:
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("the request does not match pending transfer %s: %s", uuid_text(&it->ref_id), name),
					 errhint("Name the hold's accounts, currency and code, or leave them out; a void releases the whole hold.")));
			break;
		case LR_OVERFLOWS_TIMEOUT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("timeout %s overflows: the hold would expire after the last representable time",
							DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(&it->timeout)))),
					 errhint("Give a timeout that ends before the year 294276.")));
			break;
		case LR_FEE_EXCEEDS_AMOUNT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("fee %s leaves nothing of the amount %s it is deducted from",
							money_text(it->fee, d->meta.currency), money_text(it->gross_amount, d->meta.currency)),
					 errhint("Charge the fee on top (fee_mode => 'on_top'), or transfer a larger amount.")));
			break;
		case LR_CLOSING_TRANSFER_MUST_BE_PENDING:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("a closing transfer must be pending"),
					 errhint("closing_debit and closing_credit close an account with a hold (pending => true); voiding it opens the account again.")));
			break;
		case LR_ID_ALREADY_FAILED:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer id %s already failed", id),
					 errdetail("A create_transfers batch refused it on the ledger's state; fincore.failed_transfers says why."),
					 errhint("Use a new id: a failed id stays failed, so that a retry never succeeds by accident.")));
			break;
		case LR_IMPORTED_EVENT_EXPECTED:
		case LR_IMPORTED_EVENT_NOT_EXPECTED:
		case LR_TIMESTAMP_MUST_BE_ZERO:
		case LR_IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT:
		case LR_IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("imported transfer %s refused: %s%s", id, name,
							it->has_timestamp ? psprintf(" (timestamp %s)",
														 DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(it->timestamp)))) : ""),
					 errhint("An import gives every transfer a timestamp in the past, later than its accounts' creation and their latest transfers, and no timeout; see docs/ledger.md, \"Imported transfers\".")));
			break;
		case LR_ID_ALREADY_USED:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer id %s is already used", id),
					 errhint("Use a new id.")));
			break;
		default:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate ? ledger_results[r].sqlstate : ERRCODE_INTERNAL_ERROR),
					 errmsg("transfer %s refused: %s", id, name)));
	}
	(void) b;
	pg_unreachable();
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
static void
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
static void
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

static void
collect(LedgerBatch *b)
{
	b->accounts = palloc0(sizeof(LedgerAccount) * (2 * b->nitems + 1));
	b->refs = palloc0(sizeof(RefTransfer) * (2 * b->nitems + 1));
	b->naccounts = b->nrefs = 0;

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
	b->naccounts = 0;
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

		if (it->dacc && leg_needs_lock(it->dacc, true, it))
			it->dacc->needs_lock = true;
		if (it->cacc && leg_needs_lock(it->cacc, false, it))
			it->cacc->needs_lock = true;
	}
}

/* Is items[i] part of a chain, and where does that chain end? */
static int
chain_end(LedgerBatch *b, int start)
{
	int			i = start;

	while (i < b->nitems - 1 && b->items[i].linked)
		i++;
	return i;
}

/* ---- fees ---- */

/*
 * The id of a transfer's fee leg: derived from the transfer's id, so that a
 * replayed transfer names the same fee leg (a UUID of version 8, "custom").
 */
static void
fee_leg_id(const pg_uuid_t *main_id, pg_uuid_t *out)
{
	uint64		h1 = hash_bytes_extended(main_id->data, UUID_LEN, 0x66656501);
	uint64		h2 = hash_bytes_extended(main_id->data, UUID_LEN, 0x66656502);

	for (int i = 0; i < 8; i++)
	{
		out->data[i] = (unsigned char) (h1 >> (56 - 8 * i));
		out->data[8 + i] = (unsigned char) (h2 >> (56 - 8 * i));
	}
	out->data[6] = (unsigned char) (0x80 | (out->data[6] & 0x0F));	/* version 8 */
	out->data[8] = (unsigned char) (0x80 | (out->data[8] & 0x3F));	/* variant 10 */
}

/*
 * Give every request with a fee its fee leg: an item right after it, linked
 * to it (a transfer and its fee succeed or fail together), from the payer to
 * the fee account.  Its amount is set once the fee is computed.
 */
static void
expand_fee_legs(LedgerBatch *b)
{
	int			nfees = 0;
	LedgerItem *items;
	int			n = 0;

	for (int i = 0; i < b->nitems; i++)
	{
		b->items[i].request = i;
		if (b->items[i].fee_schedule != NULL)
			nfees++;
	}
	if (nfees == 0)
		return;
	items = palloc0(sizeof(LedgerItem) * (b->nitems + nfees));
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &items[n++];

		*it = b->items[i];
		it->index = n - 1;
		if (it->fee_schedule == NULL)
			continue;
		{
			LedgerItem *leg = &items[n++];
			bool		linked = it->linked;

			it->gross_amount = it->amount;
			it->user_metadata = it->metadata;
			it->linked = true;
			memset(leg, 0, sizeof(LedgerItem));
			leg->index = n - 1;
			leg->request = i;
			leg->kind = KIND_POSTED;
			leg->is_fee_leg = true;
			fee_leg_id(&it->id, &leg->id);
			leg->has_debit = it->has_debit;
			leg->debit = it->debit;
			leg->has_credit = it->has_fee_account;
			leg->credit = it->fee_account;
			leg->has_amount = true;
			leg->has_code = true;
			leg->code = it->code;
			leg->linked = linked;
			leg->preset = it->preset;
		}
	}
	b->items = items;
	b->nitems = n;
}

/* Compute the fee of each transfer that has one (after the locks: the payer's currency is known). */
static void
compute_fees(LedgerBatch *b)
{
	for (int i = 0; i < b->nitems - 1; i++)
	{
		LedgerItem *it = &b->items[i];
		LedgerItem *leg = &b->items[i + 1];
		FeeQuote	quote;
		JsonbParseState *st = NULL;
		JsonbValue *extra;
		Jsonb	   *fee_info;
		Jsonb	   *leg_meta;

		if (it->fee_schedule == NULL || it->is_fee_leg)
			continue;
		if (it->result != LR_OK)
		{
			/* A replay or a refused transfer: its fee leg neither applies nor is written. */
			leg->skip = true;
			if (it->result == LR_EXISTS)
				leg->result = LR_EXISTS;
			continue;
		}
		if (it->dacc == NULL || !it->dacc->found)
			continue;			/* refused when applied: debit_account_not_found */
		if (it->metadata != NULL && !JB_ROOT_IS_OBJECT(it->metadata))
		{
			it->result = invalid_request(it, "the metadata of a transfer with a fee must be a JSON object (the fee is added to it)");
			continue;
		}
		fees_calculate(it->fee_schedule, it->dacc->meta.currency, it->gross_amount, it->fee_context,
					   b->now, &quote);
		it->fee = quote.fee;
		if (it->fee_mode == FEE_MODE_DEDUCTED)
		{
			if (quote.fee >= it->gross_amount)
			{
				it->result = LR_FEE_EXCEEDS_AMOUNT;
				continue;
			}
			it->amount = it->gross_amount - quote.fee;
		}
		leg->amount = quote.fee;
		leg->skip = quote.fee == 0;

		/* metadata.fee: the breakdown, the mode, the requested amount and the fee leg. */
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "mode");
		jb_string(&st, it->fee_mode == FEE_MODE_DEDUCTED ? "deducted" : "on_top");
		jb_key(&st, "amount");
		jb_int(&st, it->gross_amount);
		jb_key(&st, "fee_transfer_id");
		if (leg->skip)
			jb_null(&st);
		else
			jb_string(&st, uuid_text(&leg->id));
		extra = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		fee_info = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(quote.breakdown),
													  JsonbPGetDatum(JsonbValueToJsonb(extra))));
		st = NULL;
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "fee");
		jb_jsonb(&st, fee_info);
		extra = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		it->metadata = it->user_metadata == NULL ? JsonbValueToJsonb(extra) :
			DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(it->user_metadata),
											   JsonbPGetDatum(JsonbValueToJsonb(extra))));

		/* The fee leg says what it is the fee of. */
		st = NULL;
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "fee_for");
		jb_string(&st, uuid_text(&it->id));
		jb_key(&st, "schedule");
		jb_string(&st, it->fee_schedule);
		jb_key(&st, "schedule_id");
		jb_string(&st, uuid_text(&quote.schedule_id));
		leg_meta = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
		leg->metadata = leg_meta;
	}
}

/*
 * Results that come before exists in TigerBeetle's precedence: the batch's
 * import mode, the imported timestamp, and an id that is no id at all.
 */
static inline bool
result_precedes_exists(LedgerResult r)
{
	switch (r)
	{
		case LR_IMPORTED_EVENT_EXPECTED:
		case LR_IMPORTED_EVENT_NOT_EXPECTED:
		case LR_TIMESTAMP_MUST_BE_ZERO:
		case LR_IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE:
		case LR_ID_MUST_NOT_BE_ZERO:
		case LR_ID_MUST_NOT_BE_INT_MAX:
			return true;
		default:
			return false;
	}
}

/*
 * Which SQL is installed: 1 when fincore.transfers has 0.2.0's flags column,
 * 0 for 0.1.0's tables, which this library keeps serving (with 0.1.0's
 * features) from the moment its files are installed until ALTER EXTENSION
 * fincore UPDATE.  Looked up at every call (three syscache look-ups), so an
 * upgrade committed by another session is seen by the next call.
 */
static int
ledger_schema(void)
{
	Oid			nsp = get_namespace_oid("fincore", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("transfers", nsp) : InvalidOid;

	return OidIsValid(rel) && get_attnum(rel, "flags") != InvalidAttrNumber ? 1 : 0;
}

/*
 * Run a batch.  In a single call (b->single) a refusal raises; otherwise every
 * item gets a result.  Returns after the writes.
 */
static void
ledger_execute(LedgerBatch *b)
{
	int			attempts = 0;

	if (!b->tenant_given)
		tenancy_require_tenant(&b->tenant);
	expand_fee_legs(b);
	/*
	 * A single call (one transfer, and its fee leg if it has one) learns of a
	 * replayed id from the INSERT: the first row decides for both.
	 */
	b->optimistic = b->single;
	b->schema = ledger_schema();
	if (b->schema == 0)
		b->record_failures = false; /* no fincore.failed_transfers yet */
	b->imported = b->nitems > 0 && (b->items[0].flags & TRANSFER_IMPORTED);
	collect(b);

retry:
	attempts++;
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];

		it->result = it->preset != LR_OK ? it->preset : check_static(it);
	}
	load_refs(b, false);
	resolve_accounts(b);
	load_account_meta(b);
	mark_locks(b);
	lock_accounts(b);

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

	/* Replays: in a batch, every id is looked up once, after the locks. */
	if (!b->optimistic)
	{
		pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * b->nitems);
		ExistingTransfer *ex;
		int			nex;

		for (int i = 0; i < b->nitems; i++)
			ids[i] = b->items[i].id;
		nex = load_existing(b, ids, b->nitems, &ex);
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
	compute_fees(b);

	/* Apply in order; a chain is applied whole or undone. */
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
				it->result = apply_item(b, it);
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

	if (b->single)
	{
		LedgerItem *it = &b->items[0];
		LedgerItem *failed = NULL;

		/* The refusal to report: the item's own, else its fee leg's. */
		for (int i = 0; i < b->nitems && failed == NULL; i++)
			if (b->items[i].result != LR_OK && b->items[i].result != LR_EXISTS &&
				b->items[i].result != LR_LINKED_EVENT_FAILED)
				failed = &b->items[i];
		if (it->result == LR_EXISTS)
			return;				/* a replay: nothing to write */
		if (failed != NULL)
		{
			/* A replay of a transfer that succeeded may no longer pass validation. */
			ExistingTransfer *ex;

			int			nex;

			if (b->optimistic && (nex = load_existing(b, &it->id, 1, &ex)) >= 1)
			{
				it->result = compare_existing(b, it, &ex[nex - 1]);
				if (it->result == LR_EXISTS)
					return;
				failed = it;
			}
			raise_item_error(b, failed);
		}
	}

	/* Write. */
	{
		LedgerItem **rows = palloc(sizeof(LedgerItem *) * b->nitems);
		int			n = 0;
		int			inserted;
		MemoryContext oldcxt = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;
		bool		subxact = !b->optimistic;
		bool		balances_written = false;
		int			nfailed = 0;

		for (int i = 0; i < b->nitems; i++)
		{
			if (b->items[i].result == LR_OK && !b->items[i].skip)
				rows[n++] = &b->items[i];
			if (request_failed_on_state(b, i))
				nfailed++;
		}
		if (n == 0 && nfailed == 0)
			return;

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
		inserted = n > 0 ? insert_transfers(b, rows, n, &balances_written) : 0;
		if (inserted < n)
		{
			if (subxact)
			{
				RollbackAndReleaseCurrentSubTransaction();
				MemoryContextSwitchTo(oldcxt);
				CurrentResourceOwner = oldowner;
				if (attempts >= 3)
					elog(ERROR, "ledger: transfer ids keep conflicting with concurrent transactions");
				goto retry;
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
						return;
					raise_item_error(b, it);
				}
				/* The hold was resolved by a concurrent call. */
				load_refs(b, true);
				it->ref = batch_ref(b, &it->ref_id, false);
				it->result = apply_item(b, it);
				if (it->result == LR_OK)
					elog(ERROR, "ledger: transfer %s could not be inserted", uuid_text(&it->id));
				raise_item_error(b, it);
			}
		}
		if (nfailed > 0)
			write_failures(b, nfailed);
		if (subxact)
		{
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		if (n == 0)
			return;
		for (int i = 0; i < n; i++)
			rows[i]->written = true;
		if (!balances_written)
			write_balances(b);
		write_statuses(b);
		write_deltas_and_history(b, rows, n);
		write_holds(b, rows, n);
		emit_transfer_events(b, rows, n);
	}
}

/* ---- SQL entry points ---- */

static void
item_init(LedgerItem *it, int index)
{
	memset(it, 0, sizeof(LedgerItem));
	it->index = index;
	it->result = LR_OK;
}

static void
item_set_id(LedgerItem *it, FunctionCallInfo fcinfo, int argno)
{
	if (argno >= 0 && !PG_ARGISNULL(argno))
		it->id = *PG_GETARG_UUID_P(argno);
	else
		uuidv7_generate(&it->id);
}

static Datum
single_result(FunctionCallInfo fcinfo, LedgerBatch *b)
{
	LedgerItem *it = &b->items[0];
	TupleDesc	desc;
	Datum		v[11];
	bool		isnull[11] = {false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ledger: a composite result is expected");
	desc = BlessTupleDesc(desc);
	v[0] = UUIDPGetDatum(&it->id);
	v[1] = CStringGetTextDatum(it->result == LR_EXISTS ? "exists" : "created");
	v[2] = CStringGetTextDatum(kind_text(it->kind));
	if (it->result == LR_EXISTS)
	{
		v[3] = UUIDPGetDatum(&it->debit);
		v[4] = UUIDPGetDatum(&it->credit);
	}
	else
	{
		v[3] = UUIDPGetDatum(&it->dacc->meta.id);
		v[4] = UUIDPGetDatum(&it->cacc->meta.id);
	}
	v[5] = Int64GetDatum(it->amount);
	v[6] = UUIDPGetDatum(&it->ref_id);
	isnull[6] = !(it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE);
	v[7] = UUIDPGetDatum(&it->ref_id);
	isnull[7] = it->kind != KIND_REVERSAL;
	v[8] = TimestampTzGetDatum(it->ts);
	v[9] = Int64GetDatum(it->fee);
	isnull[9] = it->fee_schedule == NULL;
	if (it->fee_schedule != NULL && b->nitems > 1 && it->fee > 0)
		v[10] = UUIDPGetDatum(&b->items[1].id);
	else
		isnull[10] = true;
	return HeapTupleGetDatum(heap_form_tuple(desc, v, isnull));
}

static Datum
run_single(FunctionCallInfo fcinfo, LedgerItem *it)
{
	LedgerBatch b;
	Datum		result;

	MemoryContext caller_cxt = CurrentMemoryContext;

	memset(&b, 0, sizeof(b));
	b.items = it;
	b.nitems = 1;
	b.single = true;
	fincore_spi_connect();
	if (it->result != LR_OK)
	{
		/* Malformed before anything is looked up. */
		tenancy_require_tenant(&b.tenant);
		raise_item_error(&b, it);
	}
	ledger_execute(&b);
	/* The result must outlive SPI_finish(), which frees SPI's memory. */
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(caller_cxt);

		result = single_result(fcinfo, &b);
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();
	return result;
}

/* fee_schedule, fee_account, fee_mode, fee_context: four arguments from argno on. */
static void
item_fee_from_args(LedgerItem *it, FunctionCallInfo fcinfo, int argno)
{
	if (!PG_ARGISNULL(argno))
		it->fee_schedule = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (!PG_ARGISNULL(argno + 1))
	{
		it->has_fee_account = true;
		it->fee_account = *PG_GETARG_UUID_P(argno + 1);
	}
	it->fee_mode = PG_ARGISNULL(argno + 2) ? FEE_MODE_ON_TOP : fee_mode_from_text(PG_GETARG_TEXT_PP(argno + 2));
	it->fee_context = PG_ARGISNULL(argno + 3) ? NULL : PG_GETARG_JSONB_P_COPY(argno + 3);
}

/* transfer(debit, credit, amount bigint, id, code, pending, timeout, metadata, fee...) */
static void
transfer_item_from_args(LedgerItem *it, FunctionCallInfo fcinfo)
{
	item_init(it, 0);
	it->kind = (!PG_ARGISNULL(5) && PG_GETARG_BOOL(5)) ? KIND_PENDING : KIND_POSTED;
	if (!PG_ARGISNULL(0))
	{
		it->has_debit = true;
		it->debit = *PG_GETARG_UUID_P(0);
	}
	if (!PG_ARGISNULL(1))
	{
		it->has_credit = true;
		it->credit = *PG_GETARG_UUID_P(1);
	}
	item_set_id(it, fcinfo, 3);
	it->has_code = true;
	it->code = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
	if (!PG_ARGISNULL(6))
	{
		it->has_timeout = true;
		it->timeout = *PG_GETARG_INTERVAL_P(6);
	}
	if (!PG_ARGISNULL(7))
		it->metadata = PG_GETARG_JSONB_P_COPY(7);
	item_fee_from_args(it, fcinfo, 8);
	/*
	 * 0.2.0's arguments (0.1.0's function has 12): balancing_debit,
	 * balancing_credit, closing_debit, closing_credit, imported, "timestamp".
	 */
	if (PG_NARGS() > 17)
	{
		static const int32 arg_flags[] = {TRANSFER_BALANCING_DEBIT, TRANSFER_BALANCING_CREDIT,
		TRANSFER_CLOSING_DEBIT, TRANSFER_CLOSING_CREDIT, TRANSFER_IMPORTED};

		for (int a = 0; a < (int) lengthof(arg_flags); a++)
			if (!PG_ARGISNULL(12 + a) && PG_GETARG_BOOL(12 + a))
				it->flags |= arg_flags[a];
		if ((it->has_timestamp = !PG_ARGISNULL(17)))
			it->timestamp = PG_GETARG_TIMESTAMPTZ(17);
	}
}

PG_FUNCTION_INFO_V1(fincore_transfer);
Datum
fincore_transfer(PG_FUNCTION_ARGS)
{
	LedgerItem	it;

	transfer_item_from_args(&it, fcinfo);
	if (!PG_ARGISNULL(2))
	{
		it.has_amount = true;
		it.amount = PG_GETARG_INT64(2);
	}
	return run_single(fcinfo, &it);
}

/* The fincore.amount overload: the amount's currency must be the accounts'. */
PG_FUNCTION_INFO_V1(fincore_transfer_amount);
Datum
fincore_transfer_amount(PG_FUNCTION_ARGS)
{
	LedgerItem	it;

	transfer_item_from_args(&it, fcinfo);
	if (!PG_ARGISNULL(2))
	{
		Amount	   *a = PG_GETARG_AMOUNT_P(2);

		it.has_amount = true;
		it.amount = a->units;
		it.has_currency = true;
		it.currency = a->currency;
	}
	return run_single(fcinfo, &it);
}

/*
 * post_pending(pending_id, amount, id), void_pending(pending_id, id),
 * reverse(transfer_id, amount, id): an item that refers to another transfer.
 * amount_arg is -1 where the function takes no amount.
 */
static Datum
run_referring(FunctionCallInfo fcinfo, char kind, LedgerResult missing, int amount_arg, int id_arg)
{
	LedgerItem	it;

	item_init(&it, 0);
	it.kind = kind;
	if (PG_ARGISNULL(0))
		it.result = missing;
	else
		it.ref_id = *PG_GETARG_UUID_P(0);
	if (amount_arg >= 0 && !PG_ARGISNULL(amount_arg))
	{
		it.has_amount = true;
		it.amount = PG_GETARG_INT64(amount_arg);
	}
	item_set_id(&it, fcinfo, id_arg);
	return run_single(fcinfo, &it);
}

PG_FUNCTION_INFO_V1(fincore_post_pending);
Datum
fincore_post_pending(PG_FUNCTION_ARGS)
{
	return run_referring(fcinfo, KIND_POST, LR_PENDING_TRANSFER_NOT_FOUND, 1, 2);
}

PG_FUNCTION_INFO_V1(fincore_void_pending);
Datum
fincore_void_pending(PG_FUNCTION_ARGS)
{
	return run_referring(fcinfo, KIND_VOID, LR_PENDING_TRANSFER_NOT_FOUND, -1, 1);
}

PG_FUNCTION_INFO_V1(fincore_reverse);
Datum
fincore_reverse(PG_FUNCTION_ARGS)
{
	return run_referring(fcinfo, KIND_REVERSAL, LR_TRANSFER_NOT_FOUND, 1, 2);
}

/* ---- create_transfers: a batch ---- */

/* The fields of fincore.transfer_request, by position. */
enum
{
	REQ_ID, REQ_DEBIT, REQ_CREDIT, REQ_AMOUNT, REQ_CODE, REQ_PENDING, REQ_TIMEOUT,
	REQ_POST_PENDING, REQ_VOID_PENDING, REQ_REVERSE, REQ_LINKED, REQ_METADATA,
	REQ_FEE_SCHEDULE, REQ_FEE_ACCOUNT, REQ_FEE_MODE, REQ_FEE_CONTEXT,
	REQ_BALANCING_DEBIT, REQ_BALANCING_CREDIT, REQ_CLOSING_DEBIT, REQ_CLOSING_CREDIT,
	REQ_IMPORTED, REQ_TIMESTAMP, REQ_NFIELDS
};

#define CREATE_TRANSFERS_MAX 8190

static void
item_from_request(LedgerItem *it, int index, HeapTupleHeader rec, TupleDesc desc)
{
	HeapTupleData tuple;
	Datum		v[REQ_NFIELDS];
	bool		isnull[REQ_NFIELDS];
	int			actions = 0;

	item_init(it, index);
	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = rec;
	for (int f = desc->natts; f < REQ_NFIELDS; f++)
		isnull[f] = true;		/* fields 0.1.0's request does not have */
	heap_deform_tuple(&tuple, desc, v, isnull);

	if (!isnull[REQ_ID])
		it->id = *DatumGetUUIDP(v[REQ_ID]);
	else
		uuidv7_generate(&it->id);
	if ((it->has_debit = !isnull[REQ_DEBIT]))
		it->debit = *DatumGetUUIDP(v[REQ_DEBIT]);
	if ((it->has_credit = !isnull[REQ_CREDIT]))
		it->credit = *DatumGetUUIDP(v[REQ_CREDIT]);
	if ((it->has_amount = !isnull[REQ_AMOUNT]))
		it->amount = DatumGetInt64(v[REQ_AMOUNT]);
	if ((it->has_code = !isnull[REQ_CODE]))
		it->code = DatumGetInt32(v[REQ_CODE]);
	if ((it->has_timeout = !isnull[REQ_TIMEOUT]))
		it->timeout = *DatumGetIntervalP(v[REQ_TIMEOUT]);
	it->linked = !isnull[REQ_LINKED] && DatumGetBool(v[REQ_LINKED]);
	if (!isnull[REQ_METADATA])
		it->metadata = DatumGetJsonbPCopy(v[REQ_METADATA]);
	if (!isnull[REQ_FEE_SCHEDULE])
		it->fee_schedule = TextDatumGetCString(v[REQ_FEE_SCHEDULE]);
	if ((it->has_fee_account = !isnull[REQ_FEE_ACCOUNT]))
		it->fee_account = *DatumGetUUIDP(v[REQ_FEE_ACCOUNT]);
	it->fee_mode = isnull[REQ_FEE_MODE] ? FEE_MODE_ON_TOP : fee_mode_from_text(DatumGetTextPP(v[REQ_FEE_MODE]));
	if (!isnull[REQ_FEE_CONTEXT])
		it->fee_context = DatumGetJsonbPCopy(v[REQ_FEE_CONTEXT]);
	{
		static const struct
		{
			int			field;
			int32		flag;
		}			bool_flags[] = {
			{REQ_BALANCING_DEBIT, TRANSFER_BALANCING_DEBIT}, {REQ_BALANCING_CREDIT, TRANSFER_BALANCING_CREDIT},
			{REQ_CLOSING_DEBIT, TRANSFER_CLOSING_DEBIT}, {REQ_CLOSING_CREDIT, TRANSFER_CLOSING_CREDIT},
			{REQ_IMPORTED, TRANSFER_IMPORTED},
		};

		for (int f = 0; f < (int) lengthof(bool_flags); f++)
			if (!isnull[bool_flags[f].field] && DatumGetBool(v[bool_flags[f].field]))
				it->flags |= bool_flags[f].flag;
	}
	if ((it->has_timestamp = !isnull[REQ_TIMESTAMP]))
		it->timestamp = DatumGetTimestampTz(v[REQ_TIMESTAMP]);

	it->kind = (!isnull[REQ_PENDING] && DatumGetBool(v[REQ_PENDING])) ? KIND_PENDING : KIND_POSTED;
	if (!isnull[REQ_POST_PENDING])
	{
		it->kind = KIND_POST;
		it->ref_id = *DatumGetUUIDP(v[REQ_POST_PENDING]);
		actions++;
	}
	if (!isnull[REQ_VOID_PENDING])
	{
		it->kind = KIND_VOID;
		it->ref_id = *DatumGetUUIDP(v[REQ_VOID_PENDING]);
		actions++;
	}
	if (!isnull[REQ_REVERSE])
	{
		it->kind = KIND_REVERSAL;
		it->ref_id = *DatumGetUUIDP(v[REQ_REVERSE]);
		actions++;
	}
	/* One action per item; pending only for a new transfer. */
	if (actions > 1 || (actions == 1 && !isnull[REQ_PENDING] && DatumGetBool(v[REQ_PENDING])))
		it->result = invalid_request(it, "an item is one of: a transfer or hold, a post, a void, a reversal");
	if (!it->has_code && (it->kind == KIND_POSTED || it->kind == KIND_PENDING))
	{
		it->has_code = true;
		it->code = 0;
	}
}

typedef struct BatchOutput
{
	LedgerItem *items;
	int			nitems;
	int			next;
} BatchOutput;

PG_FUNCTION_INFO_V1(fincore_create_transfers);
Datum
fincore_create_transfers(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			elemtype = ARR_ELEMTYPE(arr);
	TupleDesc	reqdesc;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	LedgerBatch b;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_TRANSFER_REQUEST),
				 errmsg("create_transfers takes a one-dimensional array of fincore.transfer_request")));
	reqdesc = lookup_rowtype_tupdesc(elemtype, -1);
	/* Before the array is taken apart: a huge one is refused without the work. */
	check_batch_size(ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)), CREATE_TRANSFERS_MAX,
					 ERRCODE_FC_INVALID_TRANSFER_REQUEST, "create_transfers");
	deconstruct_array(arr, elemtype, -1, false, TYPALIGN_DOUBLE, &elems, &nulls, &n);
	/* 0.1.0's request had the fields up to fee_context (until ALTER EXTENSION UPDATE). */
	if (reqdesc->natts != REQ_NFIELDS && reqdesc->natts != REQ_BALANCING_DEBIT)
		elog(ERROR, "fincore.transfer_request has %d fields, expected %d", reqdesc->natts, REQ_NFIELDS);

	InitMaterializedSRF(fcinfo, 0);
	memset(&b, 0, sizeof(b));
	b.nitems = n;
	b.items = palloc0(sizeof(LedgerItem) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
		{
			item_init(&b.items[i], i);
			uuidv7_generate(&b.items[i].id);
			b.items[i].result = invalid_request(&b.items[i], "a NULL item");
			continue;
		}
		item_from_request(&b.items[i], i, DatumGetHeapTupleHeader(elems[i]), reqdesc);
	}
	ReleaseTupleDesc(reqdesc);

	if (n > 0)
	{
		/* Results known before the engine runs (malformed items) must survive it. */
		for (int i = 0; i < n; i++)
			b.items[i].preset = b.items[i].result;
		fincore_spi_connect();
		b.record_failures = true;
		ledger_execute(&b);
		SPI_finish();
	}

	for (int i = 0; i < b.nitems; i++)
	{
		LedgerItem *it = &b.items[i];
		Datum		v[3];
		bool		isnull[3] = {false, false, false};

		/* One row per request: a transfer's own result, or its fee leg's refusal. */
		if (it->is_fee_leg)
			continue;
		if (i + 1 < b.nitems && b.items[i + 1].is_fee_leg && it->result == LR_LINKED_EVENT_FAILED &&
			b.items[i + 1].result != LR_LINKED_EVENT_FAILED)
			it = &b.items[i + 1];
		v[0] = Int32GetDatum(b.items[i].request);
		v[1] = UUIDPGetDatum(&b.items[i].id);
		if (it->result == LR_EXISTS_WITH_DIFFERENT)
			v[2] = CStringGetTextDatum(psprintf("exists_with_different_%s", it->diff_field));
		else
			v[2] = CStringGetTextDatum(ledger_results[it->result].name);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, isnull);
	}
	return (Datum) 0;
}

/* ---- expire_pending: the sweep ---- */

static SPIPlanPtr due_holds_plan = NULL;

/*
 * Expire up to max_holds due holds, in every tenant.  The holds of one tenant
 * are expired as one batch run as that tenant, so the engine's tenant checks
 * hold here too.
 */
PG_FUNCTION_INFO_V1(fincore_expire_pending);
Datum
fincore_expire_pending(PG_FUNCTION_ARGS)
{
	int32		max_holds = PG_GETARG_INT32(0);
	int			expired = 0;
	uint64		ndue;
	pg_uuid_t  *ids,
			   *tenants;

	if (max_holds <= 0)
		PG_RETURN_INT32(0);
	fincore_spi_connect();
	if (due_holds_plan == NULL)
	{
		Oid			types[1] = {INT4OID};

		/* SKIP LOCKED: holds a concurrent sweep is already expiring are left to it. */
		due_holds_plan = ledger_prepare(
			"SELECT h.transfer_id, h.tenant_id FROM fincore.pending_holds h "
			" WHERE h.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() "
			" ORDER BY h.tenant_id, h.expires_at LIMIT $1 FOR UPDATE SKIP LOCKED", 1, types);
	}
	{
		Datum		args[1] = {Int32GetDatum(max_holds)};

		if (SPI_execute_plan(due_holds_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "ledger: finding due holds failed");
	}
	ndue = SPI_processed;
	ids = palloc(sizeof(pg_uuid_t) * Max(ndue, 1));
	tenants = palloc(sizeof(pg_uuid_t) * Max(ndue, 1));
	for (uint64 i = 0; i < ndue; i++)
	{
		bool		isnull;

		ids[i] = *DatumGetUUIDP(spi_value(i, 1, &isnull));
		tenants[i] = *DatumGetUUIDP(spi_value(i, 2, &isnull));
	}

	for (uint64 start = 0; start < ndue;)
	{
		uint64		end = start;
		LedgerBatch b;

		while (end < ndue && uuid_equal(&tenants[end], &tenants[start]))
			end++;
		memset(&b, 0, sizeof(b));
		b.nitems = (int) (end - start);
		b.items = palloc0(sizeof(LedgerItem) * b.nitems);
		for (int i = 0; i < b.nitems; i++)
		{
			item_init(&b.items[i], i);
			b.items[i].kind = KIND_EXPIRE;
			b.items[i].ref_id = ids[start + i];
			uuidv7_generate(&b.items[i].id);
		}
		b.tenant = tenants[start];
		b.tenant_given = true;
		ledger_execute(&b);
		for (int i = 0; i < b.nitems; i++)
			if (b.items[i].result == LR_OK)
				expired++;
		start = end;
	}
	SPI_finish();
	PG_RETURN_INT32(expired);
}

/* ---- rollup_hot_accounts ---- */

static SPIPlanPtr hot_accounts_plan = NULL;
static SPIPlanPtr rollup_plan = NULL;

/*
 * Fold the deltas of up to max_accounts hot accounts into their rows.  Each
 * account's row is locked first (as a limit-checking leg would lock it), so
 * a reader of "row + deltas" sees the deltas either in the table or in the
 * row, never both: the DELETE and the UPDATE commit together.
 */
PG_FUNCTION_INFO_V1(fincore_rollup_hot_accounts);
Datum
fincore_rollup_hot_accounts(PG_FUNCTION_ARGS)
{
	int32		max_accounts = PG_GETARG_INT32(0);
	uint64		n;
	pg_uuid_t  *ids;

	if (max_accounts <= 0)
		PG_RETURN_INT32(0);
	fincore_spi_connect();
	if (hot_accounts_plan == NULL)
	{
		Oid			types[1] = {INT4OID};

		hot_accounts_plan = ledger_prepare(
			"SELECT a.id FROM fincore.accounts a "
			" WHERE a.id OPERATOR(pg_catalog.=) ANY (SELECT DISTINCT d.account_id FROM fincore.account_deltas d) "
			" ORDER BY a.id LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED", 1, types);
		rollup_plan = ledger_prepare(
			"WITH moved AS (DELETE FROM fincore.account_deltas d WHERE d.account_id OPERATOR(pg_catalog.=) $1 "
			"               RETURNING d.debits_pending, d.debits_posted, d.credits_pending, d.credits_posted), "
			"     total AS (SELECT pg_catalog.sum(m.debits_pending) AS dp, pg_catalog.sum(m.debits_posted) AS dpo, "
			"                      pg_catalog.sum(m.credits_pending) AS cp, pg_catalog.sum(m.credits_posted) AS cpo "
			"                 FROM moved m) "
			"UPDATE fincore.accounts a "
			"   SET debits_pending = a.debits_pending OPERATOR(pg_catalog.+) t.dp::bigint, "
			"       debits_posted = a.debits_posted OPERATOR(pg_catalog.+) t.dpo::bigint, "
			"       credits_pending = a.credits_pending OPERATOR(pg_catalog.+) t.cp::bigint, "
			"       credits_posted = a.credits_posted OPERATOR(pg_catalog.+) t.cpo::bigint "
			"  FROM total t WHERE a.id OPERATOR(pg_catalog.=) $1 AND t.dp IS NOT NULL",
			1, (Oid[]) {UUIDOID});
	}
	{
		Datum		args[1] = {Int32GetDatum(max_accounts)};

		if (SPI_execute_plan(hot_accounts_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "ledger: finding hot accounts failed");
	}
	n = SPI_processed;
	ids = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = *DatumGetUUIDP(spi_value(i, 1, &isnull));
	}
	for (uint64 i = 0; i < n; i++)
	{
		Datum		args[1] = {UUIDPGetDatum(&ids[i])};

		if (SPI_execute_plan(rollup_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "ledger: rolling up a hot account failed");
	}
	SPI_finish();
	PG_RETURN_INT32((int32) n);
}

/* ---- append-only ---- */

PG_FUNCTION_INFO_V1(fincore_ledger_append_only);
Datum
fincore_ledger_append_only(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *rel;
	const char *what;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "fincore_ledger_append_only: not called as a trigger");
	rel = RelationGetRelationName(trigdata->tg_relation);
	what = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? "updated" :
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ? "deleted" : "truncated";
	if (strcmp(rel, "accounts") == 0 && TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_FC_LEDGER_APPEND_ONLY),
				 errmsg("an account's id, tenant, currency, code, flags and credit limit cannot be changed"),
				 errhint("Create a new account instead.")));
	ereport(ERROR,
			(errcode(ERRCODE_FC_LEDGER_APPEND_ONLY),
			 errmsg("fincore.%s is append-only: rows cannot be %s", rel, what),
			 errdetail("Every movement of money stays on record; a correction is a new transfer (fincore.reverse())."),
			 errhint("See docs/ledger.md, \"Append-only\".")));
	return (Datum) 0;
}
