/*
 * billing_engine.c — billing periods and proration (billing.h): pure C over
 * integers, UTC instants (time zones do not enter: a period is a span of
 * instants).
 *
 * Periods.  Days and weeks are fixed lengths from the anchor.  Months and
 * years are stepped from the anchor's calendar fields each time: boundary n
 * is the anchor's month plus n * count months, on the anchor's day clamped to
 * that month's last, at the anchor's time of day.  So an anchor on Jan 31
 * bills Feb 28 (29), Mar 31, Apr 30 — the clamp of one month never carries to
 * the next — and Feb 29 of a leap year bills Feb 28 in the other years.
 *
 * Proration.  Whole seconds (instants truncated toward the past), the
 * fraction amount * part / whole computed exactly in 128 bits and rounded
 * once with the caller's mode.
 */
#include "billing.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "utils/datetime.h"

bool
billing_unit_from_name(const char *name, BillingUnit *unit)
{
	static const struct
	{
		const char *name;
		BillingUnit unit;
	}			units[] = {{"day", BILLING_DAY}, {"week", BILLING_WEEK}, {"month", BILLING_MONTH}, {"year", BILLING_YEAR}};

	for (int i = 0; i < (int) lengthof(units); i++)
		if (strcmp(name, units[i].name) == 0)
		{
			*unit = units[i].unit;
			return true;
		}
	return false;
}

/* The anchor's calendar fields (UTC). */
static bool
anchor_fields(TimestampTz anchor, struct pg_tm *tm, fsec_t *fsec)
{
	return timestamp2tm(anchor, NULL, tm, fsec, NULL, NULL) == 0;
}

bool
billing_boundary(TimestampTz anchor, BillingUnit unit, int count, int64 n, TimestampTz *out)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int64		months,
				index;
	int			last;

	if (count < 1 || count > BILLING_MAX_COUNT || TIMESTAMP_NOT_FINITE(anchor))
		return false;
	if (unit == BILLING_DAY || unit == BILLING_WEEK)
	{
		int128		t = (int128) anchor + (int128) n * count * (unit == BILLING_DAY ? USECS_PER_DAY : 7 * USECS_PER_DAY);

		if (t < MIN_TIMESTAMP || t >= END_TIMESTAMP)
			return false;
		*out = (TimestampTz) t;
		return true;
	}
	if (!anchor_fields(anchor, &tm, &fsec))
		return false;
	months = (unit == BILLING_YEAR ? 12 : 1) * (int64) count;
	/* Years far beyond the timestamp range are refused before they could overflow. */
	if (n > 300000 || n < -300000)
		return false;
	index = (int64) tm.tm_year * 12 + (tm.tm_mon - 1) + n * months;
	tm.tm_year = (int) int64_floor_div(index, 12);
	tm.tm_mon = (int) (index - (int64) tm.tm_year * 12) + 1;
	last = day_tab[isleap(tm.tm_year)][tm.tm_mon - 1];
	if (tm.tm_mday > last)
		tm.tm_mday = last;
	if (tm2timestamp(&tm, fsec, NULL, out) != 0 || !IS_VALID_TIMESTAMP(*out))
		return false;
	return true;
}

bool
billing_period(TimestampTz anchor, BillingUnit unit, int count, TimestampTz at,
			   int64 *n, TimestampTz *start, TimestampTz *end)
{
	int64		guess;

	if (count < 1 || count > BILLING_MAX_COUNT || TIMESTAMP_NOT_FINITE(anchor) || TIMESTAMP_NOT_FINITE(at))
		return false;
	if (unit == BILLING_DAY || unit == BILLING_WEEK)
		guess = int64_floor_div(at - anchor, (int64) count * (unit == BILLING_DAY ? USECS_PER_DAY : 7 * USECS_PER_DAY));
	else
	{
		struct pg_tm a,
					b;
		fsec_t		fa,
					fb;

		if (!anchor_fields(anchor, &a, &fa) || !anchor_fields(at, &b, &fb))
			return false;
		guess = int64_floor_div(((int64) b.tm_year * 12 + b.tm_mon) - ((int64) a.tm_year * 12 + a.tm_mon),
							(unit == BILLING_YEAR ? 12 : 1) * (int64) count);
	}
	/* The guess is off by at most one period either way: step until start <= at < end. */
	for (int tries = 0; tries < 4; tries++)
	{
		if (!billing_boundary(anchor, unit, count, guess, start) ||
			!billing_boundary(anchor, unit, count, guess + 1, end))
			return false;
		if (at < *start)
			guess--;
		else if (at >= *end)
			guess++;
		else
		{
			*n = guess;
			return true;
		}
	}
	return false;
}

int64
billing_fraction(int64 amount, TimestampTz start, TimestampTz end, TimestampTz from, TimestampTz to,
				 RoundingMode mode)
{
	int64		whole = billing_seconds(end) - billing_seconds(start);
	int64		part = billing_seconds(to) - billing_seconds(from);

	if (whole <= 0 || part <= 0)
		return 0;
	if (part >= whole)
		return amount;
	return int128_to_int64_checked(div_round_int128((int128) amount * part, whole, mode), "prorated amount");
}

bool
billing_change(int64 billed, TimestampTz billed_from, TimestampTz period_start, TimestampTz period_end,
			   int64 new_amount, TimestampTz at, RoundingMode mode, BillingChange *out, const char **what)
{
	if (!(period_start <= billed_from && billed_from < period_end))
	{
		*what = "billed_from must lie in [period_start, period_end)";
		return false;
	}
	if (!(billed_from <= at && at <= period_end))
	{
		*what = "the change must lie in [billed_from, period_end]";
		return false;
	}
	if (billed < 0 || new_amount < 0)
	{
		*what = "amounts must not be negative";
		return false;
	}
	/* What was billed for [billed_from, period_end), for the part [at, period_end) not used. */
	out->credit = billing_fraction(billed, billed_from, period_end, at, period_end, mode);
	out->debit = billing_fraction(new_amount, period_start, period_end, at, period_end, mode);
	return true;
}

/* ---- subscriptions ---- */

const char *const subscription_status_names[SUB_STATUS_COUNT] = {
	"incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"
};

const char *const subscription_action_names[SA_ACTION_COUNT] = {
	"payment_succeeded", "payment_failed", "first_payment_expired", "trial_ended", "trial_ended_unpaid",
	"retries_exhausted_cancel", "retries_exhausted_unpaid", "change", "pause", "resume", "cancel"
};

bool
subscription_status_from_name(const char *name, SubscriptionStatus *status)
{
	for (int i = 0; i < SUB_STATUS_COUNT; i++)
		if (strcmp(name, subscription_status_names[i]) == 0)
		{
			*status = (SubscriptionStatus) i;
			return true;
		}
	return false;
}

bool
subscription_action_from_name(const char *name, SubscriptionAction *action)
{
	for (int i = 0; i < SA_ACTION_COUNT; i++)
		if (strcmp(name, subscription_action_names[i]) == 0)
		{
			*action = (SubscriptionAction) i;
			return true;
		}
	return false;
}

bool
subscription_entitles(SubscriptionStatus status)
{
	return status == SUB_TRIALING || status == SUB_ACTIVE || status == SUB_PAST_DUE;
}

#define SUB_ANY_LIVE ((1u << SUB_INCOMPLETE) | (1u << SUB_TRIALING) | (1u << SUB_ACTIVE) | \
					  (1u << SUB_PAST_DUE) | (1u << SUB_UNPAID) | (1u << SUB_PAUSED))

/*
 * One row per action: the statuses it may start from and where it leads.
 * TO_SAME keeps the status (a change of price or quantity).
 */
#define TO_SAME SUB_STATUS_COUNT
static const struct
{
	uint32		from;
	int			to;
}			subscription_rules[SA_ACTION_COUNT] = {
	[SA_PAYMENT_SUCCEEDED] = {(1u << SUB_INCOMPLETE) | (1u << SUB_ACTIVE) | (1u << SUB_PAST_DUE) | (1u << SUB_UNPAID),
	SUB_ACTIVE},
	[SA_PAYMENT_FAILED] = {(1u << SUB_ACTIVE) | (1u << SUB_PAST_DUE), SUB_PAST_DUE},
	[SA_FIRST_PAYMENT_EXPIRED] = {1u << SUB_INCOMPLETE, SUB_INCOMPLETE_EXPIRED},
	[SA_TRIAL_ENDED] = {1u << SUB_TRIALING, SUB_ACTIVE},
	[SA_TRIAL_ENDED_UNPAID] = {1u << SUB_TRIALING, SUB_PAST_DUE},
	[SA_RETRIES_EXHAUSTED_CANCEL] = {1u << SUB_PAST_DUE, SUB_CANCELED},
	[SA_RETRIES_EXHAUSTED_UNPAID] = {1u << SUB_PAST_DUE, SUB_UNPAID},
	[SA_CHANGE] = {(1u << SUB_TRIALING) | (1u << SUB_ACTIVE) | (1u << SUB_PAST_DUE) | (1u << SUB_INCOMPLETE), TO_SAME},
	[SA_PAUSE] = {(1u << SUB_TRIALING) | (1u << SUB_ACTIVE), SUB_PAUSED},
	[SA_RESUME] = {1u << SUB_PAUSED, SUB_ACTIVE},
	[SA_CANCEL] = {SUB_ANY_LIVE, SUB_CANCELED},
};

bool
subscription_next(SubscriptionStatus status, SubscriptionAction action, SubscriptionStatus *next)
{
	if (status < 0 || status >= SUB_STATUS_COUNT || action < 0 || action >= SA_ACTION_COUNT ||
		(subscription_rules[action].from & (1u << status)) == 0)
		return false;
	*next = subscription_rules[action].to == TO_SAME ? status : (SubscriptionStatus) subscription_rules[action].to;
	return true;
}

/* ---- invoices ---- */

const char *const invoice_status_names[INV_STATUS_COUNT] = {
	"draft", "open", "paid", "void", "uncollectible"
};

const char *const invoice_action_names[IA_ACTION_COUNT] = {
	"finalize", "pay", "void", "mark_uncollectible"
};

bool
invoice_status_from_name(const char *name, InvoiceStatus *status)
{
	for (int i = 0; i < INV_STATUS_COUNT; i++)
		if (strcmp(name, invoice_status_names[i]) == 0)
		{
			*status = (InvoiceStatus) i;
			return true;
		}
	return false;
}

bool
invoice_action_from_name(const char *name, InvoiceAction *action)
{
	for (int i = 0; i < IA_ACTION_COUNT; i++)
		if (strcmp(name, invoice_action_names[i]) == 0)
		{
			*action = (InvoiceAction) i;
			return true;
		}
	return false;
}

/*
 * Stripe's invoice life: a draft is finalised (open) or voided; an open
 * invoice is paid, voided or marked uncollectible; an uncollectible one can
 * still be paid or voided.  Paid and void are final.
 */
static const struct
{
	uint32		from;
	InvoiceStatus to;
}			invoice_rules[IA_ACTION_COUNT] = {
	[IA_FINALIZE] = {1u << INV_DRAFT, INV_OPEN},
	[IA_PAY] = {(1u << INV_OPEN) | (1u << INV_UNCOLLECTIBLE), INV_PAID},
	[IA_VOID] = {(1u << INV_DRAFT) | (1u << INV_OPEN) | (1u << INV_UNCOLLECTIBLE), INV_VOID},
	[IA_MARK_UNCOLLECTIBLE] = {1u << INV_OPEN, INV_UNCOLLECTIBLE},
};

bool
invoice_next(InvoiceStatus status, InvoiceAction action, InvoiceStatus *next)
{
	if (status < 0 || status >= INV_STATUS_COUNT || action < 0 || action >= IA_ACTION_COUNT ||
		(invoice_rules[action].from & (1u << status)) == 0)
		return false;
	*next = invoice_rules[action].to;
	return true;
}

/* ---- prices ---- */

const char *const price_scheme_names[PRICE_SCHEME_COUNT] = {"flat", "per_seat", "tiered", "volume"};

bool
price_scheme_from_name(const char *name, PriceScheme *scheme)
{
	for (int i = 0; i < PRICE_SCHEME_COUNT; i++)
		if (strcmp(name, price_scheme_names[i]) == 0)
		{
			*scheme = (PriceScheme) i;
			return true;
		}
	return false;
}

bool
price_amount(PriceScheme scheme, int64 unit_amount, const FeeTier *tiers, int ntiers, int64 quantity,
			 int64 *out)
{
	int128		v;
	uint64		evaluated = 0;

	switch (scheme)
	{
		case PRICE_FLAT:
			*out = unit_amount;
			return true;
		case PRICE_PER_SEAT:
			return !pg_mul_s64_overflow(unit_amount, quantity, out);
		case PRICE_TIERED:
		case PRICE_VOLUME:
			if (!fee_tiers_value(tiers, ntiers, scheme == PRICE_VOLUME, quantity, &v, &evaluated) ||
				v > PG_INT64_MAX)
				return false;
			*out = (int64) v;
			return true;
		default:
			return false;
	}
}
