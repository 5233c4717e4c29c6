/*
 * ledger_events.c — each written transfer as an event (topic "ledger"): with
 * 0.2.0's tables the transfer row itself, placed in the event stream; with
 * 0.1.0's, an outbox row.
 */
#include "ledger_int.h"

#include "audit.h"
#include "owner_sql.h"

#include "utils/rel.h"

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

/* A transfer row, as its event's payload shows it. */
typedef struct TransferEventRow
{
	const pg_uuid_t *id;
	const pg_uuid_t *tenant;
	char		kind;			/* KIND_* */
	const pg_uuid_t *debit;
	const pg_uuid_t *credit;
	int64		amount;
	CurrencyCode currency;
	int32		code;
	const pg_uuid_t *pending_id;	/* NULL: none */
	int64		pending_amount;
	const pg_uuid_t *reversal_of;	/* NULL: none */
	bool		has_expiry;
	TimestampTz expires_at;
	Jsonb	   *metadata;		/* NULL: none */
	TimestampTz created_at;
} TransferEventRow;

static void
jb_uuid_or_null(JsonbParseState **st, const pg_uuid_t *id)
{
	if (id != NULL)
		jb_string(st, uuid_text(id));
	else
		jb_null(st);
}

static char *
timestamptz_text(TimestampTz ts)
{
	return DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(ts)));
}

/* The transfer as an event payload: the row's columns, the amount also as text. */
static Jsonb *
transfer_payload(const TransferEventRow *t)
{
	JsonbParseState *st = NULL;
	char		code[CURRENCY_CODE_MAX_LEN + 1];
	JsonbValue *res;

	currency_unpack(t->currency, code);
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "id");
	jb_string(&st, uuid_text(t->id));
	jb_key(&st, "tenant_id");
	jb_string(&st, uuid_text(t->tenant));
	jb_key(&st, "kind");
	jb_string(&st, kind_text(t->kind));
	jb_key(&st, "debit_account_id");
	jb_string(&st, uuid_text(t->debit));
	jb_key(&st, "credit_account_id");
	jb_string(&st, uuid_text(t->credit));
	jb_key(&st, "amount");
	jb_int(&st, t->amount);
	jb_key(&st, "amount_text");
	jb_string(&st, money_text(t->amount, t->currency));
	jb_key(&st, "currency");
	jb_string(&st, code);
	jb_key(&st, "code");
	jb_int(&st, t->code);
	jb_key(&st, "pending_id");
	jb_uuid_or_null(&st, t->pending_id);
	jb_key(&st, "pending_amount");
	jb_int(&st, t->pending_amount);
	jb_key(&st, "reversal_of");
	jb_uuid_or_null(&st, t->reversal_of);
	jb_key(&st, "expires_at");
	if (t->has_expiry)
		jb_string(&st, timestamptz_text(t->expires_at));
	else
		jb_null(&st);
	jb_key(&st, "metadata");
	jb_jsonb(&st, t->metadata);
	jb_key(&st, "created_at");
	jb_string(&st, timestamptz_text(t->created_at));
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* An item's row, as transfer_payload() takes it. */
static void
item_event_row(const LedgerBatch *b, const LedgerItem *it, TransferEventRow *t)
{
	bool		resolves = it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE;

	t->id = &it->id;
	t->tenant = &b->tenant;
	t->kind = it->kind;
	t->debit = &it->dacc->meta.id;
	t->credit = &it->cacc->meta.id;
	t->amount = it->amount;
	t->currency = it->dacc->meta.currency;
	t->code = it->code;
	t->pending_id = resolves ? &it->ref_id : NULL;
	t->pending_amount = resolves ? it->pending_amount : 0;
	t->reversal_of = it->kind == KIND_REVERSAL ? &it->ref_id : NULL;
	t->has_expiry = it->has_expiry;
	t->expires_at = it->expires_at;
	t->metadata = it->metadata;
	t->created_at = it->ts;
}

/*
 * A column of a fincore.transfers row.  The ledger's rows have every column
 * but the nullable ones; a row made up by a caller may not (ZF321).
 */
static Datum
row_column(HeapTupleHeader row, const char *name, bool nullable, bool *isnull)
{
	Datum		d = GetAttributeByName(row, name, isnull);

	if (*isnull && !nullable)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_TRANSFER_REQUEST),
				 errmsg("a transfer event needs the transfer's %s", name),
				 errhint("fincore._transfer_event_payload() takes a row of fincore.transfers.")));
	return d;
}

/*
 * fincore._transfer_event_payload(fincore.transfers): a transfer event's
 * payload, built from its row when a consumer reads it (fincore.outbox_stream).
 */
static void
transfer_row_from_tuple(HeapTupleHeader row, TransferEventRow *tp)
{
	TransferEventRow t;
	text	   *cur;
	char	   *kind;
	bool		isnull;
	Datum		d;

	t.id = DatumGetUUIDP(row_column(row, "id", false, &isnull));
	t.tenant = DatumGetUUIDP(row_column(row, "tenant_id", false, &isnull));
	kind = TextDatumGetCString(row_column(row, "kind", false, &isnull));
	t.kind = kind_from_text(kind);
	if (strcmp(kind_text(t.kind), kind) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_TRANSFER_REQUEST),
				 errmsg("\"%s\" is not a kind of transfer", kind),
				 errhint("A transfer is posted, pending, post, void, expire or reversal.")));
	t.debit = DatumGetUUIDP(row_column(row, "debit_account_id", false, &isnull));
	t.credit = DatumGetUUIDP(row_column(row, "credit_account_id", false, &isnull));
	t.amount = DatumGetInt64(row_column(row, "amount", false, &isnull));
	cur = DatumGetTextPP(row_column(row, "currency", false, &isnull));
	t.currency = currency_pack_or_error(VARDATA_ANY(cur), VARSIZE_ANY_EXHDR(cur));
	t.code = DatumGetInt32(row_column(row, "code", false, &isnull));
	d = row_column(row, "pending_id", true, &isnull);
	t.pending_id = isnull ? NULL : DatumGetUUIDP(d);
	t.pending_amount = DatumGetInt64(row_column(row, "pending_amount", false, &isnull));
	d = row_column(row, "reversal_of", true, &isnull);
	t.reversal_of = isnull ? NULL : DatumGetUUIDP(d);
	d = row_column(row, "expires_at", true, &isnull);
	t.has_expiry = !isnull;
	t.expires_at = isnull ? 0 : DatumGetTimestampTz(d);
	d = row_column(row, "metadata", true, &isnull);
	t.metadata = isnull ? NULL : DatumGetJsonbP(d);
	t.created_at = DatumGetTimestampTz(row_column(row, "created_at", false, &isnull));
	*tp = t;
}

PG_FUNCTION_INFO_V1(fincore_transfer_event_payload);
Datum
fincore_transfer_event_payload(PG_FUNCTION_ARGS)
{
	TransferEventRow t;

	transfer_row_from_tuple(PG_GETARG_HEAPTUPLEHEADER(0), &t);
	PG_RETURN_JSONB_P(transfer_payload(&t));
}

/*
 * Each written transfer becomes an outbox event on topic "ledger", in the
 * same transaction.  The aggregate is the hold for its post, void or expiry,
 * the original transfer for a reversal, so that a hold's story reaches a
 * consumer in order.  Events are emitted in id order (the outbox locks each
 * aggregate until commit).  A tenant can switch them off
 * (fincore.set_ledger_events(false)).
 */
void
emit_transfer_events(LedgerBatch *b, LedgerItem **rows, int n)
{
	LedgerItem **sorted;

	if (n == 0 || !outbox_ledger_events_enabled(&b->tenant))
		return;
	sorted = palloc(sizeof(LedgerItem *) * n);
	for (int i = 0; i < n; i++)
		sorted[i] = rows[i];
	qsort(sorted, n, sizeof(LedgerItem *), item_id_cmp_qsort);
	for (int i = 0; i < n; i++)
	{
		LedgerItem *it = sorted[i];
		const pg_uuid_t *aggregate = it->kind == KIND_POSTED || it->kind == KIND_PENDING ? &it->id : &it->ref_id;

		TransferEventRow t;

		item_event_row(b, it, &t);
		outbox_emit_event(&b->tenant, "ledger", transfer_event_type(it->kind), "transfer",
						  uuid_text(aggregate), transfer_payload(&t), NULL, NULL);
	}
}

/*
 * 0.2.0's tables: each transfer the batch writes is its own event, found by
 * consumers through fincore.outbox_stream (a view that shows it as the event
 * emit_transfer_events() would have written, its payload built when read).
 * Here the rows get their places in the stream: seqs in id order, as the
 * events were emitted.  Events of one aggregate reach a consumer in commit
 * order without the outbox's aggregate lock: the rows of a hold's story, and
 * the reversals of a transfer, lock the same accounts, and each can only be
 * written once the one before it is visible.
 */
void
number_transfer_events(LedgerBatch *b, LedgerItem **rows, int n)
{
	LedgerItem **sorted;
	int64	   *seqs;

	for (int i = 0; i < n; i++)
		rows[i]->event_seq = 0;
	if (n == 0 || !outbox_ledger_events_enabled(&b->tenant))
		return;
	sorted = palloc(sizeof(LedgerItem *) * n);
	memcpy(sorted, rows, sizeof(LedgerItem *) * n);
	qsort(sorted, n, sizeof(LedgerItem *), item_id_cmp_qsort);
	seqs = palloc(sizeof(int64) * n);
	outbox_ledger_event_seqs(n, seqs);
	for (int i = 0; i < n; i++)
		sorted[i]->event_seq = seqs[i];
}

/*
 * A transfer as its audit record shows it: the row's columns, without the
 * tenant (the chain's) and without the ones that are empty, since every
 * byte of it is hashed again at each verification.
 */
static void
audit_transfer_row(JsonbParseState **st, const TransferEventRow *t)
{
	char		code[CURRENCY_CODE_MAX_LEN + 1];

	currency_unpack(t->currency, code);
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	jb_key(st, "id");
	jb_string(st, uuid_text(t->id));
	jb_key(st, "kind");
	jb_string(st, kind_text(t->kind));
	jb_key(st, "debit_account_id");
	jb_string(st, uuid_text(t->debit));
	jb_key(st, "credit_account_id");
	jb_string(st, uuid_text(t->credit));
	jb_key(st, "amount");
	jb_int(st, t->amount);
	jb_key(st, "currency");
	jb_string(st, code);
	jb_key(st, "code");
	jb_int(st, t->code);
	if (t->pending_id)
	{
		jb_key(st, "pending_id");
		jb_string(st, uuid_text(t->pending_id));
		jb_key(st, "pending_amount");
		jb_int(st, t->pending_amount);
	}
	if (t->reversal_of)
	{
		jb_key(st, "reversal_of");
		jb_string(st, uuid_text(t->reversal_of));
	}
	if (t->has_expiry)
	{
		jb_key(st, "expires_at");
		jb_string(st, timestamptz_text(t->expires_at));
	}
	if (t->metadata)
	{
		jb_key(st, "metadata");
		jb_jsonb(st, t->metadata);
	}
	jb_key(st, "created_at");
	jb_string(st, timestamptz_text(t->created_at));
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/* {"new": the transfer as its audit record shows it}. */
static Jsonb *
audit_transfer_payload(const TransferEventRow *t)
{
	JsonbParseState *st = NULL;
	JsonbValue *res;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "new");
	audit_transfer_row(&st, t);
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * fincore._transfer_audit_payload(fincore.transfers): a transfer's audit
 * payload, built from its row when the sealer chains its record.
 */
PG_FUNCTION_INFO_V1(fincore_transfer_audit_payload);
Datum
fincore_transfer_audit_payload(PG_FUNCTION_ARGS)
{
	TransferEventRow t;

	transfer_row_from_tuple(PG_GETARG_HEAPTUPLEHEADER(0), &t);
	PG_RETURN_JSONB_P(audit_transfer_payload(&t));
}

/*
 * The audit trail (docs/audit.md): a record of each written transfer, in id
 * order, when fincore.transfers is audited.  The ledger appends them itself,
 * in either store: a row trigger on the table would send every write to the
 * SQL store.  The payload is the transfer as its event shows it.
 */
void
audit_transfers(LedgerBatch *b, LedgerItem **rows, int n)
{
	Relation	rel;
	bool		audited;
	LedgerItem **sorted;
	const char **keys;
	Jsonb	  **payloads;

	if (n == 0)
		return;
	rel = RelationIdGetRelation(fincore_table_oid("transfers"));
	audited = audit_relation_audited(rel);
	RelationClose(rel);
	if (!audited)
		return;
	sorted = palloc(sizeof(LedgerItem *) * n);
	keys = palloc(sizeof(char *) * n);
	payloads = palloc(sizeof(Jsonb *) * n);
	for (int i = 0; i < n; i++)
		sorted[i] = rows[i];
	qsort(sorted, n, sizeof(LedgerItem *), item_id_cmp_qsort);
	for (int i = 0; i < n; i++)
	{
		keys[i] = uuid_text(&sorted[i]->id);
		payloads[i] = NULL;
		/*
		 * The record names the transfer, and the sealer builds its payload
		 * from the row (append-only: what it reads is what was written).  On
		 * Citus the sealer's statement must stay on one shard: built here.
		 */
		if (fincore_citus_preloaded())
		{
			TransferEventRow t;

			item_event_row(b, sorted[i], &t);
			payloads[i] = audit_transfer_payload(&t);
		}
	}
	/* One statement for the batch: a record a transfer costs the batch little more than its row. */
	audit_append_many(&b->tenant, "fincore.transfers", AUDIT_OP_INSERT, keys, payloads, n);
}
