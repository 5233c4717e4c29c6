/*
 * payments.h — the payment state machine, pure C over a struct: which
 * actions each status allows, and what each does to the payment's amounts,
 * with the invariants checked before a new state is returned.  Storage (the
 * payment's row, its steps, the ledger postings, the jobs) is
 * sql/modules/payments.sql's; payments_api.c is the SQL-callable wrapper.
 */
#ifndef FINCORE_PAYMENTS_H
#define FINCORE_PAYMENTS_H

#include "postgres.h"

/* Stripe's statuses, then the ones of a refund and a dispute; the names are payments.status'. */
typedef enum PaymentStatus
{
	PS_REQUIRES_PAYMENT_METHOD,
	PS_REQUIRES_CONFIRMATION,
	PS_REQUIRES_ACTION,
	PS_PROCESSING,
	PS_REQUIRES_CAPTURE,
	PS_SUCCEEDED,
	PS_CANCELED,
	PS_FAILED,
	PS_REFUNDED,
	PS_DISPUTED,
	PS_DISPUTE_LOST,
	PS_COUNT
} PaymentStatus;

/*
 * What can happen to a payment: a caller's request (confirm, capture,
 * increment, cancel, refund, dispute), or the outcome of a provider step
 * (authorized, ..._failed) or of a dispute (won, lost).
 */
typedef enum PaymentAction
{
	PA_ATTACH,					/* a payment method (payer account) given */
	PA_CONFIRM,
	PA_AUTHORIZED,
	PA_REQUIRES_ACTION,
	PA_AUTHORIZE_FAILED,
	PA_CAPTURE,
	PA_CAPTURED,
	PA_CAPTURE_FAILED,
	PA_INCREMENT,
	PA_INCREMENTED,
	PA_INCREMENT_FAILED,
	PA_CANCEL,
	PA_CANCELED,
	PA_CANCEL_FAILED,
	PA_REFUND,
	PA_REFUNDED,
	PA_REFUND_FAILED,
	PA_DISPUTE,
	PA_DISPUTE_WON,
	PA_DISPUTE_LOST,
	PA_COUNT
} PaymentAction;

/* A payment's state: amounts in minor units of its currency. */
typedef struct Payment
{
	PaymentStatus status;
	bool		manual_capture; /* else captured when authorized */
	bool		multicapture;	/* several partial captures */
	int64		amount;			/* asked for (with the increments that succeeded) */
	int64		authorized;		/* held: the authorization and its increments */
	int64		captured;
	int64		released;		/* of the hold, given back uncaptured */
	int64		refunded;
	int64		disputed;		/* in dispute now */
	int64		lost;			/* lost in disputes */
	int64		capture_pending;	/* asked of the provider, not yet answered */
	int64		increment_pending;
	int64		refund_pending;
	bool		cancel_pending;
} Payment;

/* Why an action was refused: the SQLSTATE and what to say. */
typedef struct PaymentRefusal
{
	int			sqlstate;		/* 0: allowed */
	const char *reason;
	const char *hint;
} PaymentRefusal;

extern const char *const payment_status_names[PS_COUNT];
extern const char *const payment_action_names[PA_COUNT];

extern bool payment_status_from_name(const char *name, PaymentStatus *status);
extern bool payment_action_from_name(const char *name, PaymentAction *action);

/*
 * Apply action (with amount where it takes one; final: a capture that
 * releases the rest) to p in place.  On a refusal p is unchanged.
 */
extern PaymentRefusal payment_apply(Payment *p, PaymentAction action, int64 amount, bool final);

/* The hold still open: authorized - captured - released. */
static inline int64
payment_held(const Payment *p)
{
	return p->authorized - p->captured - p->released;
}

#endif							/* FINCORE_PAYMENTS_H */
