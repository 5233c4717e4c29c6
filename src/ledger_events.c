/*
 * ledger_events.c — each written transfer as an outbox event (topic "ledger").
 */
#include "ledger_int.h"

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
void
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
