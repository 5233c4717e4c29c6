/*
 * payments_engine.c — the payment state machine (payments.h): pure C, no
 * SPI, no catalog.  Each action is allowed from a few statuses only; the
 * amounts it moves are checked against what the payment holds, has captured
 * and has refunded before anything changes, and the invariants
 *
 *     captured + released + capture_pending <= authorized
 *     refunded + refund_pending + disputed + lost <= captured
 *
 * are checked on the result, so that no sequence of allowed actions (in any
 * order the provider's answers arrive) can capture or refund more than was
 * held or captured.
 */
#include "payments.h"

#include "common/int.h"
#include "errcodes.h"

const char *const payment_status_names[PS_COUNT] = {
	"requires_payment_method", "requires_confirmation", "requires_action", "processing",
	"requires_capture", "succeeded", "canceled", "failed", "refunded", "disputed", "dispute_lost"
};

const char *const payment_action_names[PA_COUNT] = {
	"attach", "confirm", "authorized", "requires_action", "authorize_failed",
	"capture", "captured", "capture_failed", "increment", "incremented", "increment_failed",
	"cancel", "canceled", "cancel_failed", "refund", "refunded", "refund_failed",
	"dispute", "dispute_won", "dispute_lost"
};

bool
payment_status_from_name(const char *name, PaymentStatus *status)
{
	for (int i = 0; i < PS_COUNT; i++)
		if (strcmp(name, payment_status_names[i]) == 0)
		{
			*status = (PaymentStatus) i;
			return true;
		}
	return false;
}

bool
payment_action_from_name(const char *name, PaymentAction *action)
{
	for (int i = 0; i < PA_COUNT; i++)
		if (strcmp(name, payment_action_names[i]) == 0)
		{
			*action = (PaymentAction) i;
			return true;
		}
	return false;
}

static inline PaymentRefusal
refuse(int sqlstate, const char *reason, const char *hint)
{
	PaymentRefusal r = {sqlstate, reason, hint};

	return r;
}

static const PaymentRefusal allowed = {0, NULL, NULL};

/* The statuses an action may start from, as a bit set. */
#define S(x) (1u << (x))

static const uint32 allowed_from[PA_COUNT] = {
	[PA_ATTACH] = S(PS_REQUIRES_PAYMENT_METHOD),
	[PA_CONFIRM] = S(PS_REQUIRES_CONFIRMATION),
	[PA_AUTHORIZED] = S(PS_PROCESSING) | S(PS_REQUIRES_ACTION),
	[PA_REQUIRES_ACTION] = S(PS_PROCESSING),
	[PA_AUTHORIZE_FAILED] = S(PS_PROCESSING) | S(PS_REQUIRES_ACTION),
	[PA_CAPTURE] = S(PS_REQUIRES_CAPTURE),
	[PA_CAPTURED] = S(PS_REQUIRES_CAPTURE),
	[PA_CAPTURE_FAILED] = S(PS_REQUIRES_CAPTURE),
	[PA_INCREMENT] = S(PS_REQUIRES_CAPTURE),
	[PA_INCREMENTED] = S(PS_REQUIRES_CAPTURE),
	[PA_INCREMENT_FAILED] = S(PS_REQUIRES_CAPTURE),
	[PA_CANCEL] = S(PS_REQUIRES_PAYMENT_METHOD) | S(PS_REQUIRES_CONFIRMATION) | S(PS_REQUIRES_ACTION) |
	S(PS_REQUIRES_CAPTURE),
	[PA_CANCELED] = S(PS_REQUIRES_ACTION) | S(PS_REQUIRES_CAPTURE),
	[PA_CANCEL_FAILED] = S(PS_REQUIRES_ACTION) | S(PS_REQUIRES_CAPTURE),
	[PA_REFUND] = S(PS_SUCCEEDED),
	/* A refund asked before a dispute opened may be answered after. */
	[PA_REFUNDED] = S(PS_SUCCEEDED) | S(PS_DISPUTED) | S(PS_DISPUTE_LOST),
	[PA_REFUND_FAILED] = S(PS_SUCCEEDED) | S(PS_DISPUTED) | S(PS_DISPUTE_LOST) | S(PS_REFUNDED),
	[PA_DISPUTE] = S(PS_SUCCEEDED),
	[PA_DISPUTE_WON] = S(PS_DISPUTED),
	[PA_DISPUTE_LOST] = S(PS_DISPUTED),
};

/* What is left to capture: held, less the captures asked for. */
static inline int64
capturable(const Payment *p)
{
	return payment_held(p) - p->capture_pending;
}

/* What is left to refund (or dispute): captured, less refunds asked for or made, disputes and losses. */
static inline int64
refundable(const Payment *p)
{
	return p->captured - p->refunded - p->refund_pending - p->disputed - p->lost;
}

/* Whether every amount is >= 0 and the invariants hold, in 128 bits (no sum can wrap). */
static bool
payment_consistent(const Payment *p)
{
	const int64 *v[] = {&p->amount, &p->authorized, &p->captured, &p->released, &p->refunded, &p->disputed,
	&p->lost, &p->capture_pending, &p->increment_pending, &p->refund_pending};

	for (int i = 0; i < (int) lengthof(v); i++)
		if (*v[i] < 0)
			return false;
	return (int128) p->captured + p->released + p->capture_pending <= (int128) p->authorized &&
		(int128) p->refunded + p->refund_pending + p->disputed + p->lost <= (int128) p->captured;
}

/* The status after a refund or a dispute settled: refunded once nothing captured is left. */
static inline PaymentStatus
settled_status(const Payment *p)
{
	return p->refunded == p->captured && p->captured > 0 ? PS_REFUNDED : PS_SUCCEEDED;
}

static PaymentRefusal
apply(Payment *p, PaymentAction action, int64 amount, bool final)
{
	switch (action)
	{
		case PA_ATTACH:
			p->status = PS_REQUIRES_CONFIRMATION;
			break;
		case PA_CONFIRM:
			/* The hold is placed now, while the provider authorizes. */
			p->authorized = p->amount;
			p->status = PS_PROCESSING;
			break;
		case PA_REQUIRES_ACTION:
			p->status = PS_REQUIRES_ACTION;
			break;
		case PA_AUTHORIZED:
			/* With a cancellation in flight nothing is captured: its answer decides. */
			if (p->manual_capture || p->cancel_pending)
				p->status = PS_REQUIRES_CAPTURE;
			else
			{
				p->captured = p->authorized;
				p->status = PS_SUCCEEDED;
			}
			break;
		case PA_AUTHORIZE_FAILED:
			p->released += payment_held(p);
			p->cancel_pending = false;
			p->status = PS_FAILED;
			break;
		case PA_CAPTURE:
			if (p->cancel_pending)
				return refuse(ERRCODE_FC_PAYMENT_STEP_IN_FLIGHT, "a cancellation is in flight",
							  "Capture after the provider has answered the cancellation.");
			if (p->increment_pending > 0)
				return refuse(ERRCODE_FC_PAYMENT_STEP_IN_FLIGHT, "an incremental authorization is in flight",
							  "Capture after the provider has answered it.");
			if (!p->multicapture && (p->captured > 0 || p->capture_pending > 0))
				return refuse(ERRCODE_FC_PAYMENT_STATE, "the payment is captured once",
							  "Create the payment with multicapture => true for several partial captures.");
			if (final && p->capture_pending > 0)
				return refuse(ERRCODE_FC_PAYMENT_STEP_IN_FLIGHT, "a final capture waits for the captures in flight",
							  NULL);
			if (amount > capturable(p))
				return refuse(ERRCODE_FC_PAYMENT_OVER_CAPTURE, "the amount exceeds what can be captured",
							  "What can be captured is the hold, less the captures already asked for.");
			p->capture_pending += amount;
			break;
		case PA_CAPTURED:
			if (amount > p->capture_pending)
				return refuse(ERRCODE_FC_PAYMENT_OVER_CAPTURE, "the amount exceeds the captures asked for", NULL);
			p->capture_pending -= amount;
			p->captured += amount;
			if (final || !p->multicapture)
				p->released += payment_held(p) - p->capture_pending;
			if (payment_held(p) == 0 && p->capture_pending == 0)
				p->status = PS_SUCCEEDED;
			break;
		case PA_CAPTURE_FAILED:
			if (amount > p->capture_pending)
				return refuse(ERRCODE_FC_PAYMENT_OVER_CAPTURE, "the amount exceeds the captures asked for", NULL);
			p->capture_pending -= amount;
			break;
		case PA_INCREMENT:
			if (p->cancel_pending || p->increment_pending > 0 || p->capture_pending > 0)
				return refuse(ERRCODE_FC_PAYMENT_STEP_IN_FLIGHT, "another step of the payment is in flight", NULL);
			if (p->captured > 0)
				return refuse(ERRCODE_FC_PAYMENT_STATE, "a captured payment's authorization cannot grow", NULL);
			if ((int128) p->authorized + amount > PG_INT64_MAX)
				return refuse(ERRCODE_FC_INVALID_PAYMENT, "the authorization would overflow", NULL);
			p->increment_pending = amount;
			break;
		case PA_INCREMENTED:
			if (amount != p->increment_pending)
				return refuse(ERRCODE_FC_INVALID_PAYMENT, "the amount is not the increment asked for", NULL);
			p->authorized += amount;
			p->amount += amount;
			p->increment_pending = 0;
			break;
		case PA_INCREMENT_FAILED:
			p->increment_pending = 0;
			break;
		case PA_CANCEL:
			if (p->status == PS_REQUIRES_PAYMENT_METHOD || p->status == PS_REQUIRES_CONFIRMATION)
			{
				/* Nothing is held: canceled at once. */
				p->status = PS_CANCELED;
				break;
			}
			if (p->cancel_pending || p->capture_pending > 0 || p->increment_pending > 0)
				return refuse(ERRCODE_FC_PAYMENT_STEP_IN_FLIGHT, "another step of the payment is in flight", NULL);
			p->cancel_pending = true;
			break;
		case PA_CANCELED:
			if (!p->cancel_pending)
				return refuse(ERRCODE_FC_PAYMENT_STATE, "no cancellation was asked for", NULL);
			p->cancel_pending = false;
			p->released += payment_held(p);
			p->status = p->captured > 0 ? PS_SUCCEEDED : PS_CANCELED;
			break;
		case PA_CANCEL_FAILED:
			p->cancel_pending = false;
			break;
		case PA_REFUND:
			if (amount > refundable(p))
				return refuse(ERRCODE_FC_PAYMENT_OVER_REFUND, "the amount exceeds what can be refunded",
							  "What can be refunded is what was captured, less refunds made or asked for and disputed amounts.");
			p->refund_pending += amount;
			break;
		case PA_REFUNDED:
			if (amount > p->refund_pending)
				return refuse(ERRCODE_FC_PAYMENT_OVER_REFUND, "the amount exceeds the refunds asked for", NULL);
			p->refund_pending -= amount;
			p->refunded += amount;
			if (p->status == PS_SUCCEEDED)
				p->status = settled_status(p);
			break;
		case PA_REFUND_FAILED:
			if (amount > p->refund_pending)
				return refuse(ERRCODE_FC_PAYMENT_OVER_REFUND, "the amount exceeds the refunds asked for", NULL);
			p->refund_pending -= amount;
			break;
		case PA_DISPUTE:
			if (amount > refundable(p))
				return refuse(ERRCODE_FC_PAYMENT_OVER_REFUND, "the amount exceeds what is captured and not refunded",
							  NULL);
			p->disputed = amount;
			p->status = PS_DISPUTED;
			break;
		case PA_DISPUTE_WON:
			p->disputed = 0;
			p->status = settled_status(p);
			break;
		case PA_DISPUTE_LOST:
			p->lost += p->disputed;
			p->disputed = 0;
			p->status = PS_DISPUTE_LOST;
			break;
		case PA_COUNT:
			return refuse(ERRCODE_FC_INVALID_PAYMENT, "unknown action", NULL);
	}
	return allowed;
}

/* The actions that move an amount, which must then be > 0. */
static inline bool
takes_amount(PaymentAction a)
{
	return a == PA_CAPTURE || a == PA_CAPTURED || a == PA_CAPTURE_FAILED || a == PA_INCREMENT ||
		a == PA_INCREMENTED || a == PA_REFUND || a == PA_REFUNDED || a == PA_REFUND_FAILED || a == PA_DISPUTE;
}

PaymentRefusal
payment_apply(Payment *p, PaymentAction action, int64 amount, bool final)
{
	Payment		next = *p;
	PaymentRefusal r;

	if (action < 0 || action >= PA_COUNT || p->status < 0 || p->status >= PS_COUNT)
		return refuse(ERRCODE_FC_INVALID_PAYMENT, "unknown action or status", NULL);
	if ((allowed_from[action] & S(p->status)) == 0)
		return refuse(ERRCODE_FC_PAYMENT_STATE, "not allowed in this status", NULL);
	if (takes_amount(action) && amount <= 0)
		return refuse(ERRCODE_FC_INVALID_PAYMENT, "the amount must be positive", NULL);
	if (!payment_consistent(p))
		return refuse(ERRCODE_FC_INVALID_PAYMENT, "the payment's amounts are not consistent", NULL);
	r = apply(&next, action, amount, final);
	if (r.sqlstate != 0)
		return r;
	if (!payment_consistent(&next))
		return refuse(ERRCODE_FC_PAYMENT_STATE, "the amounts would not be consistent", NULL);
	*p = next;
	return allowed;
}
