/*
 * billing.h — billing's arithmetic, pure C over integers: billing periods
 * stepped from an anchor (months and years clamped to the month's last day)
 * and proration to the second.  No SPI, no catalog; billing_api.c is the
 * SQL-callable wrapper.
 */
#ifndef FINCORE_BILLING_H
#define FINCORE_BILLING_H

#include "postgres.h"

#include "fees.h"
#include "money.h"
#include "utils/timestamp.h"

typedef enum BillingUnit
{
	BILLING_DAY,
	BILLING_WEEK,
	BILLING_MONTH,
	BILLING_YEAR
} BillingUnit;

/* At most this many units in one interval (a year of days, ten years of years). */
#define BILLING_MAX_COUNT 366

extern bool billing_unit_from_name(const char *name, BillingUnit *unit);

/*
 * The n-th boundary of the periods of count units from anchor (UTC):
 * anchor + n * count units.  A month or year is stepped from the anchor
 * itself, never from the previous boundary, and its day clamped to the
 * month's last: an anchor on Jan 31 gives Feb 28 (29 in a leap year), Mar
 * 31, Apr 30.  False if the result is out of timestamp range.
 */
extern bool billing_boundary(TimestampTz anchor, BillingUnit unit, int count, int64 n, TimestampTz *out);

/*
 * The period containing at: its index n (negative before the anchor) and
 * [start, end).  False if out of range.
 */
extern bool billing_period(TimestampTz anchor, BillingUnit unit, int count, TimestampTz at,
						   int64 *n, TimestampTz *start, TimestampTz *end);

/* An instant taken to the second: proration counts whole seconds (truncated toward the past). */
static inline int64
billing_seconds(TimestampTz t)
{
	return t >= 0 ? t / USECS_PER_SEC : -((-t + USECS_PER_SEC - 1) / USECS_PER_SEC);
}

/*
 * The part of amount that the span [from, to) is of [start, end), in whole
 * seconds, rounded with mode: amount * seconds(from, to) / seconds(start,
 * end), exact in 128 bits.  The span must lie within the period (callers
 * check).
 */
extern int64 billing_fraction(int64 amount, TimestampTz start, TimestampTz end, TimestampTz from,
							  TimestampTz to, RoundingMode mode);

/* A change within a period: the credit for the unused rest of what was billed, and the debit for the new price. */
typedef struct BillingChange
{
	int64		credit;
	int64		debit;
} BillingChange;

/*
 * A change at `at` of a subscription billed `billed` for the span [billed_from,
 * period_end) of the period [period_start, period_end), to a price of
 * `new_amount` a full period.  The credit is computed from what was billed
 * for that span, never from a price: credit = billed * (period_end - at) /
 * (period_end - billed_from) <= billed, so any number of changes in one
 * period credits at most what was billed.  The debit is new_amount *
 * (period_end - at) / (period_end - period_start).  False (with *what set)
 * if the instants are not in order.
 */
extern bool billing_change(int64 billed, TimestampTz billed_from, TimestampTz period_start, TimestampTz period_end,
						   int64 new_amount, TimestampTz at, RoundingMode mode, BillingChange *out,
						   const char **what);

/* ---- subscriptions: Stripe Billing's statuses and the transitions it allows ---- */

typedef enum SubscriptionStatus
{
	SUB_INCOMPLETE,				/* created; its first invoice not paid yet */
	SUB_INCOMPLETE_EXPIRED,		/* the first invoice was never paid (terminal) */
	SUB_TRIALING,
	SUB_ACTIVE,
	SUB_PAST_DUE,				/* a renewal's payment failed; retries (dunning) run */
	SUB_CANCELED,				/* terminal */
	SUB_UNPAID,					/* retries ran out, the policy keeps it (entitlements off) */
	SUB_PAUSED,
	SUB_STATUS_COUNT
} SubscriptionStatus;

typedef enum SubscriptionAction
{
	SA_PAYMENT_SUCCEEDED,		/* an invoice of it was paid */
	SA_PAYMENT_FAILED,			/* a renewal's payment failed */
	SA_FIRST_PAYMENT_EXPIRED,	/* the first invoice was not paid in time */
	SA_TRIAL_ENDED,				/* the trial ended and its first invoice was paid or is not needed */
	SA_TRIAL_ENDED_UNPAID,		/* the trial ended and its first invoice's payment failed */
	SA_RETRIES_EXHAUSTED_CANCEL,	/* dunning ran out, the policy cancels */
	SA_RETRIES_EXHAUSTED_UNPAID,	/* dunning ran out, the policy keeps it unpaid */
	SA_CHANGE,					/* price or quantity */
	SA_PAUSE,
	SA_RESUME,
	SA_CANCEL,
	SA_ACTION_COUNT
} SubscriptionAction;

extern const char *const subscription_status_names[SUB_STATUS_COUNT];
extern const char *const subscription_action_names[SA_ACTION_COUNT];

extern bool subscription_status_from_name(const char *name, SubscriptionStatus *status);
extern bool subscription_action_from_name(const char *name, SubscriptionAction *action);

/* Whether a subscription in this status grants its entitlements (trialing, active, past_due while retries run). */
extern bool subscription_entitles(SubscriptionStatus status);

/*
 * The status after action, or false if the action is not allowed from
 * status (Stripe's rules: a terminal status changes no more, only an active
 * or trialing subscription pauses, only a paused one resumes, ...).
 */
extern bool subscription_next(SubscriptionStatus status, SubscriptionAction action, SubscriptionStatus *next);

/* ---- prices: what a quantity costs for a full interval ---- */

#define BILLING_MAX_TIERS 100

typedef enum PriceScheme
{
	PRICE_FLAT,					/* unit_amount, whatever the quantity */
	PRICE_PER_SEAT,				/* unit_amount x quantity */
	PRICE_TIERED,				/* graduated tiers: each unit at its tier's unit amount */
	PRICE_VOLUME,				/* every unit at the unit amount of the tier the quantity falls in */
	PRICE_SCHEME_COUNT
} PriceScheme;

extern const char *const price_scheme_names[PRICE_SCHEME_COUNT];
extern bool price_scheme_from_name(const char *name, PriceScheme *scheme);

/*
 * A price's amount for quantity (>= 1) units: tiers (FeeTier, fees.h: rate is
 * the unit amount, flat the flat amount) for PRICE_TIERED and PRICE_VOLUME.
 * False if it does not fit in 64 bits.
 */
extern bool price_amount(PriceScheme scheme, int64 unit_amount, const FeeTier *tiers, int ntiers,
						 int64 quantity, int64 *out);

/* ---- invoices: Stripe's statuses and what moves them ---- */

typedef enum InvoiceStatus
{
	INV_DRAFT,					/* lines taken, nothing posted: it can still be voided freely */
	INV_OPEN,					/* finalised: posted receivable <- revenue, awaiting payment */
	INV_PAID,					/* terminal */
	INV_VOID,					/* terminal: its posting reversed */
	INV_UNCOLLECTIBLE,			/* written off; it can still be paid or voided */
	INV_STATUS_COUNT
} InvoiceStatus;

typedef enum InvoiceAction
{
	IA_FINALIZE,
	IA_PAY,
	IA_VOID,
	IA_MARK_UNCOLLECTIBLE,
	IA_ACTION_COUNT
} InvoiceAction;

extern const char *const invoice_status_names[INV_STATUS_COUNT];
extern const char *const invoice_action_names[IA_ACTION_COUNT];

extern bool invoice_status_from_name(const char *name, InvoiceStatus *status);
extern bool invoice_action_from_name(const char *name, InvoiceAction *action);

/* The status after action, or false if Stripe's rules do not allow it from status. */
extern bool invoice_next(InvoiceStatus status, InvoiceAction action, InvoiceStatus *next);

#endif							/* FINCORE_BILLING_H */
