/*
 * ledger_fees.c — a transfer's fee as a linked leg of its own (fees.c
 * computes it).
 */
#include "ledger_int.h"

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
void
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
			leg->id_generated = it->id_generated;	/* a new transfer's fee leg is new too */
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
void
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
