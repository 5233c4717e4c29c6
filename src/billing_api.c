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
