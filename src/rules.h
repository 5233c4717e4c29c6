/*
 * rules.h — risk rules: a small typed language over a transfer (JSON),
 * compiled once and evaluated in C (rules_engine.c); docs/limits.md, "Rules".
 * Rules are data a tenant writes, never SQL: fincore runs them with its
 * owner's rights.
 */
#ifndef FINCORE_RULES_H
#define FINCORE_RULES_H

#include "postgres.h"

#include "money.h"
#include "pgtime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define RULE_MAX_DEPTH		16
#define RULE_MAX_CHILDREN	64
#define RULE_MAX_VALUES		1000

typedef enum RuleNodeKind
{
	RULE_ALL,
	RULE_ANY,
	RULE_NOT,
	RULE_COMPARE,
	RULE_AGGREGATE				/* a count or sum of an account's transfers in a trailing window */
} RuleNodeKind;

typedef enum RuleField
{
	RULE_FIELD_AMOUNT,
	RULE_FIELD_CODE,
	RULE_FIELD_CURRENCY,
	RULE_FIELD_KIND,
	RULE_FIELD_DEBIT_ACCOUNT,
	RULE_FIELD_CREDIT_ACCOUNT,
	RULE_FIELD_DEBIT_CODE,
	RULE_FIELD_CREDIT_CODE,
	RULE_FIELD_LOCAL_HOUR,		/* 0-23 in the rule's time zone */
	RULE_FIELD_LOCAL_WEEKDAY,	/* 1 (Monday) - 7 (Sunday) */
	RULE_FIELD_METADATA			/* "metadata.<key>": a top-level member of the transfer's metadata */
} RuleField;

typedef enum RuleOp
{
	RULE_OP_EQ,
	RULE_OP_NE,
	RULE_OP_LT,
	RULE_OP_LE,
	RULE_OP_GT,
	RULE_OP_GE,
	RULE_OP_IN,
	RULE_OP_NOT_IN
} RuleOp;

/* A constant of a comparison. */
typedef struct RuleValue
{
	char		type;			/* 'i' integer, 's' string, 'u' uuid, 'n' number, 'b' boolean */
	int64		i;
	char	   *s;
	int			slen;
	pg_uuid_t	u;
	Numeric		n;
	bool		b;
} RuleValue;

typedef struct RuleNode
{
	RuleNodeKind kind;
	int			nchildren;		/* RULE_ALL, RULE_ANY, RULE_NOT (1) */
	struct RuleNode **children;
	RuleField	field;			/* RULE_COMPARE */
	char	   *key;			/* RULE_FIELD_METADATA */
	int			keylen;
	RuleOp		op;
	int			nvalues;		/* 1, or the list of in / not_in */
	RuleValue  *values;
	/* RULE_AGGREGATE (op and values[0] too) */
	char		agg;			/* 'c' count, 's' sum of amounts, 'd' distinct counterparties */
	char		agg_side;		/* 'd': of the debit account (its debits); 'c': credit */
	int64		agg_window_usecs;	/* trailing, 10 s to 31 days; or 0 with ... */
	char		agg_calendar;	/* ... a calendar window in the rule's time zone: 'd'ay, 'w'eek, 'm'onth, 'y'ear */
	int			agg_index;		/* set by whoever keeps the counters (limits_store.c) */
} RuleNode;

/* What a rule sees of a transfer. */
typedef struct RuleFacts
{
	int64		amount;
	int32		code;
	CurrencyCode currency;
	char		kind;			/* 'T' posted, 'P' pending */
	const pg_uuid_t *debit;
	const pg_uuid_t *credit;
	int32		debit_code;
	int32		credit_code;
	TimestampTz ts;
	Jsonb	   *metadata;		/* NULL: none */
	/* An aggregate's value, this transfer included (NULL: every aggregate is 0). */
	int64		(*aggregate) (void *arg, const RuleNode *node);
	void	   *aggregate_arg;
} RuleFacts;

/* A rule of a tenant, compiled. */
typedef enum RuleOutcome
{
	RULE_REJECT,
	RULE_REVIEW,				/* the transfer becomes a hold, and a review job is enqueued */
	RULE_FLAG
} RuleOutcome;

typedef struct RuleDef
{
	pg_uuid_t	id;
	char	   *name;
	RuleNode   *condition;
	RuleOutcome outcome;
	bool		active;			/* the mode: active, else shadow (recorded, never enforced) */
	pg_tz	   *tz;
	Interval	review_timeout; /* RULE_REVIEW: how long the hold waits for a decision */
} RuleDef;

static inline const char *
rule_outcome_name(RuleOutcome o)
{
	return o == RULE_REJECT ? "reject" : o == RULE_REVIEW ? "review" : "flag";
}

/* Compile a rule's condition (in the current memory context); ZF805 with the path of what is wrong. */
extern RuleNode *rules_compile(Jsonb *condition);

/* The condition's aggregates, in the order of the tree (an array in the current context). */
extern int	rules_aggregates(RuleNode *node, RuleNode ***out);

/* Does the transfer meet the condition?  tz: the rule's time zone (local hour and weekday). */
extern bool rules_eval(const RuleNode *node, const RuleFacts *facts, pg_tz *tz);

#endif							/* FINCORE_RULES_H */
