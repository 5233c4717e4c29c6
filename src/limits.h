/*
 * limits.h — spending and velocity limits: definitions, counters, and the
 * pure arithmetic of windows (limits_engine.c).  The ledger charges them in
 * its posting path (limits_store.c); docs/limits.md is the user's view.
 */
#ifndef FINCORE_LIMITS_H
#define FINCORE_LIMITS_H

#include "postgres.h"

#include "money.h"
#include "pgtime.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/*
 * A trailing window is a ring of sub-buckets, each 1/59 of the window (whole
 * microseconds, rounded up), of which the newest 60 are counted: a transfer
 * counts for at least the window and at most 1/59 longer.
 */
#define LIMIT_RING_SLOTS	60
#define LIMIT_RING_SPAN		59

typedef enum LimitWindow
{
	LIMIT_WINDOW_TRANSACTION,	/* a maximum per transfer: no counter */
	LIMIT_WINDOW_DAY,
	LIMIT_WINDOW_WEEK,			/* ISO weeks: from Monday 00:00 */
	LIMIT_WINDOW_MONTH,
	LIMIT_WINDOW_YEAR,
	LIMIT_WINDOW_LIFETIME,
	LIMIT_WINDOW_TRAILING
} LimitWindow;

typedef enum LimitScope
{
	LIMIT_SCOPE_ACCOUNT,
	LIMIT_SCOPE_ACCOUNT_CODE,
	LIMIT_SCOPE_CUSTOMER,
	LIMIT_SCOPE_TENANT
} LimitScope;

typedef struct LimitDef
{
	pg_uuid_t	id;
	char	   *name;
	LimitScope	scope;
	pg_uuid_t	account;		/* LIMIT_SCOPE_ACCOUNT */
	int32		account_code;	/* LIMIT_SCOPE_ACCOUNT_CODE */
	char	   *customer;		/* LIMIT_SCOPE_CUSTOMER */
	bool		per_account;	/* a counter per account; else one for the scope */
	bool		counts;			/* metric: the number of transfers; else their amount */
	bool		has_currency;
	CurrencyCode currency;
	LimitWindow window;
	int64		window_usecs;	/* LIMIT_WINDOW_TRAILING */
	pg_tz	   *tz;				/* calendar windows */
	char		direction;		/* 'd', 'c', or 0 for both */
	int			ncodes;
	int32	   *codes;			/* transfer codes; ncodes 0: any */
	int			ncp_accounts;
	pg_uuid_t  *cp_accounts;	/* counterparty accounts; 0: any */
	int			ncp_codes;
	int32	   *cp_codes;		/* counterparty account codes; 0: any */
	int64		max;
	bool		restore_on_reversal;
	TimestampTz counting_since; /* created, or enabled again: nothing made before counted */
	bool		aggregate;		/* a rule's aggregate (no row in fincore.limits): never refuses, never gives back */
	bool		distinct;		/* an aggregate of distinct counterparties (members), not a total */
	int64		alert_at;		/* an event when a charge takes the window's total to this; 0: none */
} LimitDef;

/* A limit whose total a transfer took to its alert_at: an event when the transfer is written. */
typedef struct LimitAlert
{
	const LimitDef *def;
	pg_uuid_t	subject;
	int64		used;			/* the total with the transfer */
} LimitAlert;

/* What one limit has used, for one subject (an account, or the nil UUID for the scope). */
typedef struct LimitCounter
{
	const LimitDef *def;
	pg_uuid_t	subject;
	bool		stored;			/* has a row */
	bool		changed;
	bool		has_window;		/* calendar: window_start is set */
	TimestampTz window_start;
	int64		used;			/* calendar and lifetime */
	int64		head;			/* trailing: the bucket index of the newest sub-bucket */
	int64		ring[LIMIT_RING_SLOTS];	/* trailing: ring[i mod 60] is bucket i */
	/* distinct: each counterparty of the window, and the newest sub-bucket it was seen in */
	int			nmembers;
	pg_uuid_t  *members;
	int64	   *member_buckets;
} LimitCounter;

/* One side of a transfer, as the limits see it. */
typedef struct LimitLeg
{
	char		side;			/* 'd' or 'c' */
	const pg_uuid_t *account;
	int32		account_code;
	const char *customer;		/* NULL: none */
	CurrencyCode currency;
	const pg_uuid_t *counterparty;
	int32		counterparty_code;
	int32		transfer_code;
} LimitLeg;

/*
 * A rule's aggregate as a limit with no maximum: a count or sum per account,
 * on one side, in a trailing window (its counters are fincore.limit_counters
 * rows under an id derived from the rule's and the aggregate's place in it).
 */
extern void limits_aggregate_def(LimitDef *def, const pg_uuid_t *rule_id, int index, char agg, char side,
								 int64 window_usecs, char calendar, pg_tz *tz);

/* limits_engine.c: pure C over these structs */
extern bool limits_scope_takes(const LimitDef *def, const pg_uuid_t *account, int32 code, const char *customer);
extern bool limits_applies(const LimitDef *def, const LimitLeg *leg);
extern void limits_window_bounds(const LimitDef *def, TimestampTz at, TimestampTz *start, TimestampTz *end);
extern int64 limits_bucket(const LimitDef *def, TimestampTz at);
extern int64 limits_used_at(const LimitCounter *c, TimestampTz at);
extern void limits_roll(LimitCounter *c, TimestampTz at);
extern bool limits_charge(LimitCounter *c, TimestampTz at, int64 value);
extern void limits_release(LimitCounter *c, TimestampTz counted_at, int64 value);
extern void limits_charge_member(LimitCounter *c, TimestampTz at, const pg_uuid_t *member);
extern int64 limits_used_with_member(const LimitCounter *c, TimestampTz at, const pg_uuid_t *member);

#endif							/* FINCORE_LIMITS_H */
