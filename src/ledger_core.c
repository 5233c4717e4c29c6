/*
 * ledger_core.c — what every part of the ledger shares: the result table, the
 * batch's bookkeeping (accounts and referenced transfers by id, the in-memory
 * undo of a linked chain), kind names, array building, the per-backend cache
 * of accounts' immutable metadata, and small helpers for messages and SPI.
 */
#include "ledger_int.h"

const LedgerResultInfo ledger_results[LR_NRESULTS] = {
	[LR_OK] = {"ok", 0},
	[LR_EXISTS] = {"exists", 0},
	/* Batch results only: a single call is never linked. */
	[LR_LINKED_EVENT_FAILED] = {"linked_event_failed", ERRCODE_FC_INVALID_TRANSFER_REQUEST},
	[LR_LINKED_EVENT_CHAIN_OPEN] = {"linked_event_chain_open", ERRCODE_FC_INVALID_TRANSFER_REQUEST},
	[LR_DEBIT_ACCOUNT_NOT_FOUND] = {"debit_account_not_found", ERRCODE_FC_ACCOUNT_NOT_FOUND, RESULT_TRANSIENT},
	[LR_CREDIT_ACCOUNT_NOT_FOUND] = {"credit_account_not_found", ERRCODE_FC_ACCOUNT_NOT_FOUND, RESULT_TRANSIENT},
	[LR_ACCOUNTS_MUST_BE_DIFFERENT] = {"accounts_must_be_different", ERRCODE_FC_SAME_ACCOUNT},
	[LR_AMOUNT_MUST_NOT_BE_NEGATIVE] = {"amount_must_not_be_negative", ERRCODE_FC_INVALID_AMOUNT},
	[LR_CURRENCY_MISMATCH] = {"accounts_must_have_the_same_currency", ERRCODE_FC_CURRENCY_MISMATCH},
	[LR_EXCEEDS_CREDITS] = {"exceeds_credits", ERRCODE_FC_EXCEEDS_CREDITS, RESULT_TRANSIENT},
	[LR_EXCEEDS_DEBITS] = {"exceeds_debits", ERRCODE_FC_EXCEEDS_DEBITS, RESULT_TRANSIENT},
	[LR_DEBIT_ACCOUNT_FROZEN] = {"debit_account_frozen", ERRCODE_FC_ACCOUNT_FROZEN, RESULT_TRANSIENT},
	[LR_CREDIT_ACCOUNT_FROZEN] = {"credit_account_frozen", ERRCODE_FC_ACCOUNT_FROZEN, RESULT_TRANSIENT},
	[LR_DEBIT_ACCOUNT_CLOSED] = {"debit_account_closed", ERRCODE_FC_ACCOUNT_CLOSED, RESULT_TRANSIENT},
	[LR_CREDIT_ACCOUNT_CLOSED] = {"credit_account_closed", ERRCODE_FC_ACCOUNT_CLOSED, RESULT_TRANSIENT},
	[LR_PENDING_TRANSFER_NOT_FOUND] = {"pending_transfer_not_found", ERRCODE_FC_PENDING_TRANSFER_NOT_FOUND, RESULT_TRANSIENT},
	[LR_PENDING_TRANSFER_NOT_PENDING] = {"pending_transfer_not_pending", ERRCODE_FC_NOT_A_PENDING_TRANSFER},
	[LR_PENDING_TRANSFER_ALREADY_POSTED] = {"pending_transfer_already_posted", ERRCODE_FC_PENDING_ALREADY_POSTED},
	[LR_PENDING_TRANSFER_ALREADY_VOIDED] = {"pending_transfer_already_voided", ERRCODE_FC_PENDING_ALREADY_VOIDED},
	[LR_PENDING_TRANSFER_EXPIRED] = {"pending_transfer_expired", ERRCODE_FC_PENDING_TRANSFER_EXPIRED},
	[LR_EXCEEDS_PENDING_TRANSFER_AMOUNT] = {"exceeds_pending_transfer_amount", ERRCODE_FC_EXCEEDS_PENDING_AMOUNT},
	[LR_TRANSFER_NOT_FOUND] = {"transfer_not_found", ERRCODE_FC_TRANSFER_NOT_FOUND, RESULT_TRANSIENT},
	[LR_TRANSFER_NOT_REVERSIBLE] = {"transfer_not_reversible", ERRCODE_FC_TRANSFER_NOT_REVERSIBLE},
	[LR_EXCEEDS_REVERSIBLE_AMOUNT] = {"exceeds_reversible_amount", ERRCODE_FC_EXCEEDS_REVERSIBLE_AMOUNT},
	[LR_EXISTS_WITH_DIFFERENT] = {"exists_with_different_", ERRCODE_FC_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS},
	[LR_TIMEOUT_RESERVED_FOR_PENDING] = {"timeout_reserved_for_pending_transfer", ERRCODE_FC_INVALID_TIMEOUT},
	[LR_TIMEOUT_MUST_BE_POSITIVE] = {"timeout_must_be_positive", ERRCODE_FC_INVALID_TIMEOUT},
	[LR_OVERFLOWS_BALANCE] = {"overflows_balance", ERRCODE_FC_BALANCE_OVERFLOW, RESULT_TRANSIENT},
	[LR_ID_ALREADY_USED] = {"id_already_used", ERRCODE_FC_TRANSFER_ID_CONFLICT},
	[LR_FEE_EXCEEDS_AMOUNT] = {"fee_exceeds_amount", ERRCODE_FC_FEE_EXCEEDS_AMOUNT, RESULT_TRANSIENT},
	[LR_INVALID_REQUEST] = {"invalid_request", ERRCODE_FC_INVALID_TRANSFER_REQUEST},
	[LR_ID_MUST_NOT_BE_ZERO] = {"id_must_not_be_zero", ERRCODE_FC_RESERVED_ID, RESULT_BEFORE_EXISTS},
	[LR_ID_MUST_NOT_BE_INT_MAX] = {"id_must_not_be_int_max", ERRCODE_FC_RESERVED_ID, RESULT_BEFORE_EXISTS},
	[LR_OVERFLOWS_TIMEOUT] = {"overflows_timeout", ERRCODE_FC_INVALID_TIMEOUT},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID] = {"pending_transfer_has_different_debit_account_id", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID] = {"pending_transfer_has_different_credit_account_id", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY] = {"pending_transfer_has_different_currency", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CODE] = {"pending_transfer_has_different_code", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT] = {"pending_transfer_has_different_amount", ERRCODE_FC_PENDING_TRANSFER_MISMATCH},
	[LR_CLOSING_TRANSFER_MUST_BE_PENDING] = {"closing_transfer_must_be_pending", ERRCODE_FC_INVALID_TRANSFER_REQUEST},
	[LR_ID_ALREADY_FAILED] = {"id_already_failed", ERRCODE_FC_TRANSFER_ID_ALREADY_FAILED},
	/* Imported transfers: TigerBeetle's names ("zero" is a NULL here). */
	[LR_IMPORTED_EVENT_EXPECTED] = {"imported_event_expected", ERRCODE_FC_INVALID_IMPORTED_TRANSFER, RESULT_BEFORE_EXISTS},
	[LR_IMPORTED_EVENT_NOT_EXPECTED] = {"imported_event_not_expected", ERRCODE_FC_INVALID_IMPORTED_TRANSFER, RESULT_BEFORE_EXISTS},
	[LR_TIMESTAMP_MUST_BE_ZERO] = {"timestamp_must_be_zero", ERRCODE_FC_INVALID_IMPORTED_TRANSFER, RESULT_BEFORE_EXISTS},
	[LR_IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE] = {"imported_event_timestamp_out_of_range", ERRCODE_FC_INVALID_IMPORTED_TRANSFER, RESULT_BEFORE_EXISTS},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE] = {"imported_event_timestamp_must_not_advance", ERRCODE_FC_INVALID_IMPORTED_TRANSFER, RESULT_BEFORE_EXISTS},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS] = {"imported_event_timestamp_must_not_regress", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT] = {"imported_event_timestamp_must_postdate_debit_account", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT] = {"imported_event_timestamp_must_postdate_credit_account", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
	[LR_EXCEEDS_LIMIT] = {"exceeds_limit", ERRCODE_FC_EXCEEDS_LIMIT, RESULT_TRANSIENT},
	[LR_RULE_REJECTED] = {"rule_rejected", ERRCODE_FC_RULE_REJECTED, RESULT_TRANSIENT},
	[LR_IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO] = {"imported_event_timeout_must_be_zero", ERRCODE_FC_INVALID_IMPORTED_TRANSFER},
};

/* ---- helpers ---- */

char *
uuid_text(const pg_uuid_t *id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum((pg_uuid_t *) id)));
}

/* qsort() comparator of LedgerItem pointers by the items' ids. */
int
item_id_cmp_qsort(const void *a, const void *b)
{
	return memcmp(&(*(LedgerItem *const *) a)->id, &(*(LedgerItem *const *) b)->id, sizeof(pg_uuid_t));
}

int
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
 * keep scanning it sequentially until the next ANALYZE.  Planning them is a
 * quarter of a post's time: the direct store reads the transfers a post, void
 * or reversal refers to by their indexes instead (direct_read_refs()).
 */
SPIPlanPtr
ledger_prepare_custom(const char *sql, int nargs, Oid *argtypes)
{
	return fincore_prepare(sql, nargs, argtypes, CURSOR_OPT_CUSTOM_PLAN);
}

Datum
uuid_array(pg_uuid_t *ids, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = UUIDPGetDatum(&ids[i]);
	return PointerGetDatum(construct_array(elems, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/* "12.34 USD" for a message. */
char *
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

	StaticAssertStmt(offsetof(AccountMeta, id) == sizeof(pg_uuid_t),
					 "AccountMeta must begin with its key: tenant, id");
	ctl.keysize = 2 * sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(AccountMeta);
	ctl.hcxt = TopMemoryContext;
	account_meta_cache = hash_create("fincore account metadata", 1024, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static inline void
account_meta_key(pg_uuid_t key[2], const pg_uuid_t *tenant, const pg_uuid_t *id)
{
	key[0] = *tenant;
	key[1] = *id;
}

AccountMeta *
account_meta_lookup(const pg_uuid_t *tenant, const pg_uuid_t *id)
{
	pg_uuid_t	key[2];

	if (account_meta_cache == NULL)
		return NULL;
	account_meta_key(key, tenant, id);
	return hash_search(account_meta_cache, key, HASH_FIND, NULL);
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
	entry = hash_search(account_meta_cache, meta, HASH_ENTER, NULL);
	*entry = *meta;
}

void
account_meta_forget(const pg_uuid_t *tenant, const pg_uuid_t *id)
{
	pg_uuid_t	key[2];

	if (account_meta_cache == NULL)
		return;
	account_meta_key(key, tenant, id);
	(void) hash_search(account_meta_cache, key, HASH_REMOVE, NULL);
}

/* ---- batch bookkeeping ---- */

/*
 * The batch's accounts and referenced transfers are arrays, found by id: by a
 * linear search while they are few (a single call has two accounts), through
 * a hash index of positions once they are more, so that a batch of n items
 * costs O(n), not O(n^2).
 */
#define BATCH_INDEX_MIN 16

typedef struct BatchIndexEntry
{
	pg_uuid_t	id;				/* hash key */
	int			pos;
} BatchIndexEntry;

/* Where id is among the n ids (each at stride bytes from the previous), or -1; builds *index when n is large. */
static int
batch_find(HTAB **index, const char *first, Size stride, int n, const pg_uuid_t *id)
{
	BatchIndexEntry *e;

	if (*index == NULL && n < BATCH_INDEX_MIN)
	{
		for (int i = 0; i < n; i++)
			if (uuid_equal((const pg_uuid_t *) (first + i * stride), id))
				return i;
		return -1;
	}
	if (*index == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(BatchIndexEntry);
		ctl.hcxt = CurrentMemoryContext;
		*index = hash_create("fincore batch index", n * 2, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		for (int i = 0; i < n; i++)
		{
			e = hash_search(*index, first + i * stride, HASH_ENTER, NULL);
			e->pos = i;
		}
	}
	e = hash_search(*index, id, HASH_FIND, NULL);
	return e ? e->pos : -1;
}

/* Record that id is at position pos, if the index exists. */
static void
batch_index_add(HTAB *index, const pg_uuid_t *id, int pos)
{
	if (index != NULL)
		((BatchIndexEntry *) hash_search(index, id, HASH_ENTER, NULL))->pos = pos;
}

LedgerAccount *
batch_account(LedgerBatch *b, const pg_uuid_t *id, bool add)
{
	int			i = batch_find(&b->account_index, (const char *) &b->accounts[0].meta.id,
							   sizeof(LedgerAccount), b->naccounts, id);

	if (i >= 0)
		return &b->accounts[i];
	if (!add)
		return NULL;
	b->accounts[b->naccounts].meta.id = *id;
	batch_index_add(b->account_index, id, b->naccounts);
	return &b->accounts[b->naccounts++];
}

/* Forget the batch's accounts (they are collected again). */
void
batch_accounts_reset(LedgerBatch *b)
{
	b->naccounts = 0;
	if (b->account_index != NULL)
		hash_destroy(b->account_index);
	b->account_index = NULL;
}

RefTransfer *
batch_ref(LedgerBatch *b, const pg_uuid_t *id, bool add)
{
	int			i = batch_find(&b->ref_index, (const char *) &b->refs[0].id, sizeof(RefTransfer), b->nrefs, id);

	if (i >= 0)
		return &b->refs[i];
	if (!add)
		return NULL;
	memset(&b->refs[b->nrefs], 0, sizeof(RefTransfer));
	b->refs[b->nrefs].id = *id;
	batch_index_add(b->ref_index, id, b->nrefs);
	return &b->refs[b->nrefs++];
}

void
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

void
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
		if (u->counter)
			*u->counter = *u->saved_counter;
	}
}

/* Save a limit counter before it is charged or released. */
void
undo_push_counter(LedgerBatch *b, LimitCounter *counter)
{
	undo_push(b, NULL, NULL);
	b->undo[b->nundo - 1].counter = counter;
	b->undo[b->nundo - 1].saved_counter = palloc(sizeof(LimitCounter));
	*b->undo[b->nundo - 1].saved_counter = *counter;
	/* Distinct counterparties are arrays the charge changes in place: the copy gets its own. */
	if (counter->nmembers > 0)
	{
		LimitCounter *saved = b->undo[b->nundo - 1].saved_counter;

		saved->members = palloc(sizeof(pg_uuid_t) * counter->nmembers);
		saved->member_buckets = palloc(sizeof(int64) * counter->nmembers);
		memcpy(saved->members, counter->members, sizeof(pg_uuid_t) * counter->nmembers);
		memcpy(saved->member_buckets, counter->member_buckets, sizeof(int64) * counter->nmembers);
	}
}

char
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

const char *
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

void
ab_init(ArrayBuilder *ab, int cap)
{
	ab->values = palloc(sizeof(Datum) * Max(cap, 1));
	ab->nulls = palloc(sizeof(bool) * Max(cap, 1));
	ab->n = 0;
}

Datum
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
