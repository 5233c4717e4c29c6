/*
 * billing_api.c — billing's arithmetic (billing.h) as SQL functions:
 * fincore.billing_period (the period of a subscription's anchor and interval
 * that contains an instant) and fincore.proration (the credit and debit of
 * a change within a period).  Both write nothing; the subscriptions and
 * invoices that use them call the same C.
 */
#include "billing.h"

#include "errcodes.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

/* An instant for a message (timestamptz_to_str() returns a static buffer: copied, for several in one). */
static char *
instant_text(TimestampTz t)
{
	return pstrdup(timestamptz_to_str(t));
}

static BillingUnit
unit_arg(text *t)
{
	char	   *name = text_to_cstring(t);
	BillingUnit unit;

	if (!billing_unit_from_name(name, &unit))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_BILLING_PERIOD),
				 errmsg("invalid billing interval unit %s", quote_literal_cstr(name)),
				 errhint("day, week, month or year.")));
	return unit;
}

static inline void
check_count(int32 count)
{
	if (count < 1 || count > BILLING_MAX_COUNT)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_BILLING_PERIOD),
				 errmsg("invalid billing interval count %d", count),
				 errhint("An interval is 1 to %d units.", BILLING_MAX_COUNT)));
}

PG_FUNCTION_INFO_V1(fincore_billing_period);
Datum
fincore_billing_period(PG_FUNCTION_ARGS)
{
	TimestampTz anchor = PG_GETARG_TIMESTAMPTZ(0);
	BillingUnit unit = unit_arg(PG_GETARG_TEXT_PP(1));
	int32		count = PG_GETARG_INT32(2);
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(3);
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	int64		n;
	TimestampTz start,
				end;

	check_count(count);
	if (TIMESTAMP_NOT_FINITE(anchor) || TIMESTAMP_NOT_FINITE(at) ||
		!billing_period(anchor, unit, count, at, &n, &start, &end))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_BILLING_PERIOD),
				 errmsg("no billing period of %d %s from %s contains %s", count, text_to_cstring(PG_GETARG_TEXT_PP(1)),
						instant_text(anchor), instant_text(at)),
				 errhint("The anchor and the instant must be finite and the period within the timestamp range.")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "billing_period must return a composite");
	values[0] = Int64GetDatum(n);
	values[1] = TimestampTzGetDatum(start);
	values[2] = TimestampTzGetDatum(end);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(fincore_proration);
Datum
fincore_proration(PG_FUNCTION_ARGS)
{
	int64		billed = PG_GETARG_INT64(0);
	TimestampTz billed_from = PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz period_start = PG_GETARG_TIMESTAMPTZ(2);
	TimestampTz period_end = PG_GETARG_TIMESTAMPTZ(3);
	int64		new_amount = PG_GETARG_INT64(4);
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(5);
	RoundingMode mode = rounding_mode_from_text(PG_GETARG_TEXT_PP(6));
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	BillingChange change;
	const char *what = NULL;

	if (TIMESTAMP_NOT_FINITE(billed_from) || TIMESTAMP_NOT_FINITE(period_start) ||
		TIMESTAMP_NOT_FINITE(period_end) || TIMESTAMP_NOT_FINITE(at))
		what = "instants must be finite";
	else if (!billing_change(billed, billed_from, period_start, period_end, new_amount, at, mode, &change, &what))
		;
	else
		what = NULL;
	if (what != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_PRORATION),
				 errmsg("invalid proration: %s (billed " INT64_FORMAT " from %s, period %s to %s, change at %s)",
						what, billed, instant_text(billed_from), instant_text(period_start),
						instant_text(period_end), instant_text(at))));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "proration must return a composite");
	values[0] = Int64GetDatum(change.credit);
	values[1] = Int64GetDatum(change.debit);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

static SubscriptionStatus
status_arg(text *t)
{
	char	   *name = text_to_cstring(t);
	SubscriptionStatus status;

	if (!subscription_status_from_name(name, &status))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_SUBSCRIPTION),
				 errmsg("invalid subscription status %s", quote_literal_cstr(name)),
				 errhint("incomplete, incomplete_expired, trialing, active, past_due, canceled, unpaid or paused.")));
	return status;
}

/*
 * fincore.subscription_transition(status, action): the status the action
 * leads to, or ZFA03 if Stripe's rules do not allow it from status.
 */
PG_FUNCTION_INFO_V1(fincore_subscription_transition);
Datum
fincore_subscription_transition(PG_FUNCTION_ARGS)
{
	SubscriptionStatus status = status_arg(PG_GETARG_TEXT_PP(0));
	char	   *action_name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	SubscriptionAction action;
	SubscriptionStatus next;

	if (!subscription_action_from_name(action_name, &action))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_SUBSCRIPTION),
				 errmsg("invalid subscription action %s", quote_literal_cstr(action_name)),
				 errhint("payment_succeeded, payment_failed, first_payment_expired, trial_ended, trial_ended_unpaid, "
						 "retries_exhausted_cancel, retries_exhausted_unpaid, change, pause, resume or cancel.")));
	if (!subscription_next(status, action, &next))
		ereport(ERROR,
				(errcode(ERRCODE_FC_SUBSCRIPTION_STATE),
				 errmsg("a subscription cannot %s when it is %s", action_name, subscription_status_names[status]),
				 status == SUB_CANCELED || status == SUB_INCOMPLETE_EXPIRED ?
				 errhint("A %s subscription is final: create a new one.", subscription_status_names[status]) : 0));
	PG_RETURN_TEXT_P(cstring_to_text(subscription_status_names[next]));
}

/* fincore.subscription_entitles(status): whether the status grants the subscription's entitlements. */
PG_FUNCTION_INFO_V1(fincore_subscription_entitles);
Datum
fincore_subscription_entitles(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(subscription_entitles(status_arg(PG_GETARG_TEXT_PP(0))));
}

/*
 * fincore.invoice_transition(status, action): the invoice status the action
 * leads to, or ZFA10 if Stripe's rules do not allow it (ZFA11 for an unknown
 * status or action).
 */
PG_FUNCTION_INFO_V1(fincore_invoice_transition);
Datum
fincore_invoice_transition(PG_FUNCTION_ARGS)
{
	char	   *status_name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *action_name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	InvoiceStatus status;
	InvoiceAction action;
	InvoiceStatus next;

	if (!invoice_status_from_name(status_name, &status))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INVOICE),
				 errmsg("invalid invoice status %s", quote_literal_cstr(status_name)),
				 errhint("draft, open, paid, void or uncollectible.")));
	if (!invoice_action_from_name(action_name, &action))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INVOICE),
				 errmsg("invalid invoice action %s", quote_literal_cstr(action_name)),
				 errhint("finalize, pay, void or mark_uncollectible.")));
	if (!invoice_next(status, action, &next))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVOICE_STATE),
				 errmsg("an invoice cannot %s when it is %s", action_name, invoice_status_names[status]),
				 status == INV_PAID || status == INV_VOID ?
				 errhint("A %s invoice is final.", invoice_status_names[status]) : 0));
	PG_RETURN_TEXT_P(cstring_to_text(invoice_status_names[next]));
}

/* ---- prices ---- */

static void invalid_tiers(const char *what) pg_attribute_noreturn();

static void
invalid_tiers(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_CATALOGUE),
			 errmsg("invalid price tiers: %s", what),
			 errhint("1 to %d tiers [{\"up_to\": 10, \"unit_amount\": 500, \"flat_amount\": 0}, ..., "
					 "{\"up_to\": null, \"unit_amount\": 300}]: up_to increasing, the last unbounded.",
					 BILLING_MAX_TIERS)));
}

/* A tier's field: a JSON integer in [min, PG_INT64_MAX]. */
static int64
tier_integer(const JsonbValue *v, int64 min, const char *what)
{
	char	   *s;
	ExactDecimal d;

	if (v->type != jbvNumeric)
		invalid_tiers(psprintf("%s is not an integer", what));
	s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	if (!decimal_parse_exact(s, &d) || d.scale != 0 || d.mantissa < (int128) min ||
		d.mantissa > (int128) PG_INT64_MAX)
		invalid_tiers(psprintf("%s is %s, not a whole number from " INT64_FORMAT, what, s, min));
	return (int64) d.mantissa;
}

/*
 * Stripe's tiers of a price, [{"up_to": n | null | "inf", "unit_amount": n,
 * "flat_amount": n}, ...], as FeeTier (rate = unit amount, flat = flat
 * amount); ZFA05 for anything else.
 */
static int
parse_price_tiers(Jsonb *tiers, FeeTier **out)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n;
	FeeTier    *t;

	if (tiers == NULL || !JB_ROOT_IS_ARRAY(tiers) || JB_ROOT_IS_SCALAR(tiers))
		invalid_tiers("not an array");
	n = JB_ROOT_COUNT(tiers);
	if (n < 1 || n > BILLING_MAX_TIERS)
		invalid_tiers(psprintf("%d tiers", n));
	t = palloc0(sizeof(FeeTier) * n);
	for (int i = 0; i < n; i++)
	{
		JsonbValue *elem = getIthJsonbValueFromContainer(&tiers->root, i);
		char	   *where = psprintf("tier %d", i + 1);

		if (elem == NULL || elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
			invalid_tiers(psprintf("%s is not an object", where));
		it = JsonbIteratorInit(elem->val.binary.data);
		t[i].bounded = false;
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			char	   *key;

			if (tok != WJB_KEY)
				continue;
			key = pnstrdup(v.val.string.val, v.val.string.len);
			tok = JsonbIteratorNext(&it, &v, true);
			if (strcmp(key, "up_to") == 0)
			{
				if (v.type == jbvNull ||
					(v.type == jbvString && v.val.string.len == 3 && strncmp(v.val.string.val, "inf", 3) == 0))
					continue;
				t[i].bounded = true;
				t[i].up_to = tier_integer(&v, 1, psprintf("up_to of %s", where));
			}
			else if (strcmp(key, "unit_amount") == 0)
				t[i].rate = tier_integer(&v, 0, psprintf("unit_amount of %s", where));
			else if (strcmp(key, "flat_amount") == 0)
				t[i].flat = tier_integer(&v, 0, psprintf("flat_amount of %s", where));
			else
				invalid_tiers(psprintf("%s has an unknown field \"%s\"", where, key));
		}
		if (i < n - 1 && !t[i].bounded)
			invalid_tiers(psprintf("%s is unbounded but is not the last", where));
		if (i == n - 1 && t[i].bounded)
			invalid_tiers(psprintf("the last tier must be unbounded, not up to " INT64_FORMAT, t[i].up_to));
		if (i > 0 && t[i].bounded && t[i].up_to <= t[i - 1].up_to)
			invalid_tiers(psprintf("up_to " INT64_FORMAT " of %s follows " INT64_FORMAT, t[i].up_to, where,
								   t[i - 1].up_to));
	}
	*out = t;
	return n;
}

/*
 * fincore.billing_price_amount(scheme, unit_amount, tiers, quantity): what a
 * price charges for quantity units for a full interval.  ZFA05 for a bad
 * scheme, amount or tiers (tiers only for tiered and volume), ZFA04 for a
 * quantity below 1, ZF104 if it overflows.
 */
PG_FUNCTION_INFO_V1(fincore_billing_price_amount);
Datum
fincore_billing_price_amount(PG_FUNCTION_ARGS)
{
	char	   *scheme_name = PG_ARGISNULL(0) ? "NULL" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	PriceScheme scheme;
	int64		unit_amount = PG_ARGISNULL(1) ? -1 : PG_GETARG_INT64(1);
	Jsonb	   *tiers = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	int32		quantity = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);
	FeeTier    *t = NULL;
	int			n = 0;
	int64		amount;

	if (PG_ARGISNULL(0) || !price_scheme_from_name(scheme_name, &scheme))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CATALOGUE),
				 errmsg("invalid price scheme %s", PG_ARGISNULL(0) ? "NULL" : quote_literal_cstr(scheme_name)),
				 errhint("flat, per_seat, tiered or volume.")));
	if (unit_amount < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CATALOGUE),
				 errmsg("invalid price: unit_amount %s", PG_ARGISNULL(1) ? "NULL" : psprintf(INT64_FORMAT, unit_amount)),
				 errhint("A price is 0 or more minor units.")));
	if (scheme == PRICE_TIERED || scheme == PRICE_VOLUME)
		n = parse_price_tiers(tiers, &t);
	else if (tiers != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CATALOGUE),
				 errmsg("invalid price: a %s price has no tiers", scheme_name),
				 errhint("Tiers are for the tiered and volume schemes.")));
	if (quantity < 1)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_SUBSCRIPTION),
				 errmsg("invalid quantity %s", PG_ARGISNULL(3) ? "NULL" : psprintf("%d", quantity))));
	if (!price_amount(scheme, unit_amount, t, n, quantity, &amount))
		ereport(ERROR,
				(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
				 errmsg("the %s price of %d units overflows", scheme_name, quantity)));
	PG_RETURN_INT64(amount);
}
