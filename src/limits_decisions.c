/*
 * limits_decisions.c — what the limits and rules decided, written with the
 * batch: fincore.decisions (every decision that is not a plain accept), an
 * outbox event per decision and per alert, and a review job per transfer an
 * active review rule made a hold.
 */
#include "limits_int.h"

/* What a rule saw of a transfer. */
static Jsonb *
rule_seen(const LedgerItem *it)
{
	JsonbParseState *st = NULL;
	char		code[CURRENCY_CODE_MAX_LEN + 1];

	currency_unpack(it->dacc->meta.currency, code);
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "amount");
	jb_int(&st, it->amount);
	jb_key(&st, "currency");
	jb_string(&st, code);
	jb_key(&st, "code");
	jb_int(&st, it->code);
	jb_key(&st, "kind");
	jb_string(&st, kind_text(it->kind));
	jb_key(&st, "debit_account");
	jb_string(&st, uuid_text(&it->dacc->meta.id));
	jb_key(&st, "credit_account");
	jb_string(&st, uuid_text(&it->cacc->meta.id));
	jb_key(&st, "debit_code");
	jb_int(&st, it->dacc->meta.code);
	jb_key(&st, "credit_code");
	jb_int(&st, it->cacc->meta.code);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* What a limit saw: its maximum, what it had counted, and what the transfer would add. */
static Jsonb *
limit_seen(const LedgerItem *it)
{
	JsonbParseState *st = NULL;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "limit");
	jb_string(&st, it->limit_hit->name);
	jb_key(&st, "max");
	jb_int(&st, it->limit_hit->max);
	jb_key(&st, "used");
	jb_int(&st, it->limit_used);
	jb_key(&st, "adds");
	jb_int(&st, it->limit_hit->counts ? 1 : it->amount);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

typedef struct DecisionRows
{
	ArrayBuilder transfer,
				limit_id,
				rule_id,
				outcome,
				mode,
				seen;
	bool		events;
	const pg_uuid_t *tenant;
} DecisionRows;

static void
add_decision(DecisionRows *d, const LedgerItem *it, const LimitDef *limit, const RuleDef *rule,
			 RuleOutcome oc, bool active, Jsonb *seen)
{
	const char *outcome = rule_outcome_name(oc);
	const char *mode = active ? "active" : "shadow";

	ab_add(&d->transfer, UUIDPGetDatum(&it->id), false);
	ab_add(&d->limit_id, limit ? UUIDPGetDatum(&limit->id) : (Datum) 0, limit == NULL);
	ab_add(&d->rule_id, rule ? UUIDPGetDatum(&rule->id) : (Datum) 0, rule == NULL);
	ab_add(&d->outcome, CStringGetTextDatum(outcome), false);
	ab_add(&d->mode, CStringGetTextDatum(mode), false);
	ab_add(&d->seen, JsonbPGetDatum(seen), false);
	if (d->events)
	{
		/* An outbox event per decision, in the transaction that made it (docs/outbox.md). */
		JsonbParseState *st = NULL;

		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "transfer_id");
		jb_string(&st, uuid_text(&it->id));
		jb_key(&st, limit ? "limit_id" : "rule_id");
		jb_string(&st, uuid_text(limit ? &limit->id : &rule->id));
		jb_key(&st, limit ? "limit" : "rule");
		jb_string(&st, limit ? limit->name : rule->name);
		jb_key(&st, "outcome");
		jb_string(&st, outcome);
		jb_key(&st, "mode");
		jb_string(&st, mode);
		jb_key(&st, "seen");
		jb_jsonb(&st, seen);
		/* A shadow decision changed nothing: consumers must not take it for a refusal. */
		outbox_emit_event(d->tenant, "risk",
						  !active ? "decision.shadow" : oc == RULE_REJECT ? "decision.rejected"
						  : oc == RULE_REVIEW ? "decision.review" : "decision.flagged",
						  "transfer", uuid_text(&it->id),
						  JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL)), NULL, NULL);
	}
}

/* "limit.threshold_crossed": a limit's total reached its alert_at with this transfer. */
static void
emit_alert(LedgerBatch *b, const LedgerItem *it, const LimitAlert *a)
{
	JsonbParseState *st = NULL;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "limit_id");
	jb_string(&st, uuid_text(&a->def->id));
	jb_key(&st, "limit");
	jb_string(&st, a->def->name);
	jb_key(&st, "subject");
	jb_string(&st, uuid_text(&a->subject));
	jb_key(&st, "transfer_id");
	jb_string(&st, uuid_text(&it->id));
	jb_key(&st, "alert_at");
	jb_int(&st, a->def->alert_at);
	jb_key(&st, "max");
	jb_int(&st, a->def->max);
	jb_key(&st, "used");
	jb_int(&st, a->used);
	outbox_emit_event(&b->tenant, "risk", "limit.threshold_crossed", "limit", uuid_text(&a->def->id),
					  JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL)), NULL, NULL);
}

/*
 * Record the batch's decisions that were not a plain accept: the limit or rule
 * that refused an item of a batch (a refused single call raises, and its
 * transaction keeps nothing), and the rules that flagged a transfer written
 * now, or would have rejected or flagged it (shadow).
 */
void
limits_write_decisions(LedgerBatch *b)
{
	static SPIPlanPtr plan = NULL;
	DecisionRows d;
	int			cap = 0;
	Datum		args[8];

	if (b->limits == NULL)
		return;
	for (int i = 0; i < b->nitems; i++)
		cap += b->items[i].nflags + 1;
	ab_init(&d.transfer, cap);
	ab_init(&d.limit_id, cap);
	ab_init(&d.rule_id, cap);
	ab_init(&d.outcome, cap);
	ab_init(&d.mode, cap);
	ab_init(&d.seen, cap);
	d.tenant = &b->tenant;
	d.events = false;
	for (int pass = 0; pass < 2; pass++)
	{
		for (int i = 0; i < b->nitems; i++)
		{
			LedgerItem *it = &b->items[i];

			if (it->result == LR_EXCEEDS_LIMIT && !b->single && it->limit_hit)
				add_decision(&d, it, it->limit_hit, NULL, RULE_REJECT, true, limit_seen(it));
			else if (it->result == LR_RULE_REJECTED && !b->single && it->rule_hit)
				add_decision(&d, it, NULL, it->rule_hit, RULE_REJECT, true, rule_seen(it));
			else if (it->result == LR_OK && !it->skip)
				for (int k = 0; k < it->nflags; k++)
					add_decision(&d, it, NULL, it->flags_by[k], it->flags_by[k]->outcome,
								 it->flags_by[k]->active, rule_seen(it));
		}
		/* The events go out once we know there are decisions, and whether the tenant wants events. */
		if (pass == 0)
		{
			if (d.transfer.n == 0 || !outbox_ledger_events_enabled(&b->tenant))
				break;
			d.events = true;
			d.transfer.n = d.limit_id.n = d.rule_id.n = d.outcome.n = d.mode.n = d.seen.n = 0;
		}
	}
	/* Limits that crossed their alert_at with a transfer written now: an event each. */
	if (outbox_ledger_events_enabled(&b->tenant))
		for (int i = 0; i < b->nitems; i++)
			for (int k = 0; k < b->items[i].nalerts && b->items[i].result == LR_OK && !b->items[i].skip; k++)
				emit_alert(b, &b->items[i], &b->items[i].alerts[k]);
	if (d.transfer.n == 0)
		return;
	if (plan == NULL)
	{
		Oid			types[8] = {UUIDOID, UUIDARRAYOID, UUIDARRAYOID, UUIDARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, JSONBARRAYOID, TIMESTAMPTZOID};

		plan = ledger_prepare("INSERT INTO fincore.decisions "
							  "       (tenant_id, transfer_id, limit_id, rule_id, outcome, mode, seen, decided_at) "
							  "SELECT $1, k.transfer_id, k.limit_id, k.rule_id, k.outcome, k.mode, k.seen, $8 "
							  "  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), "
							  "                 pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) "
							  "       AS k(transfer_id, limit_id, rule_id, outcome, mode, seen)", 8, types);
	}
	args[0] = UUIDPGetDatum(&b->tenant);
	args[1] = ab_array(&d.transfer, UUIDOID);
	args[2] = ab_array(&d.limit_id, UUIDOID);
	args[3] = ab_array(&d.rule_id, UUIDOID);
	args[4] = ab_array(&d.outcome, TEXTOID);
	args[5] = ab_array(&d.mode, TEXTOID);
	args[6] = ab_array(&d.seen, JSONBOID);
	args[7] = TimestampTzGetDatum(b->now);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "ledger: writing decisions failed");
	/* A review job for each transfer an active review rule made a hold. */
	for (int i = 0; i < b->nitems; i++)
	{
		LedgerItem *it = &b->items[i];
		JsonbParseState *st = NULL;
		char	   *id;

		if (it->review_by == NULL || it->result != LR_OK || it->skip)
			continue;
		id = uuid_text(&it->id);
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "transfer_id");
		jb_string(&st, id);
		jb_key(&st, "rule_id");
		jb_string(&st, uuid_text(&it->review_by->id));
		jb_key(&st, "rule");
		jb_string(&st, it->review_by->name);
		jb_key(&st, "seen");
		jb_jsonb(&st, rule_seen(it));
		jb_key(&st, "expires_at");
		jb_string(&st, DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(it->expires_at))));
		(void) queue_enqueue_job(&b->tenant, "fincore.review",
								 JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL)), id);
	}
}
