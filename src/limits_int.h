/*
 * limits_int.h — what the files of limits and rules share (limits_cache.c,
 * limits_store.c, limits_decisions.c, limits_api.c); the engine's pure C is
 * limits.h and rules.h.
 */
#ifndef FINCORE_LIMITS_INT_H
#define FINCORE_LIMITS_INT_H

#include "ledger_int.h"

#include "cache_watch.h"
#include "limits.h"
#include "queue.h"
#include "rules.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* A tenant's enabled limits and rules, as cached. */
typedef struct LimitSet
{
	pg_uuid_t	tenant;			/* hash key */
	int			ndefs;
	LimitDef   *defs;
	bool		has_customer;	/* a customer-scoped limit: accounts' customers are read */
	int			nrules;
	RuleDef    *rules;			/* by name */
} LimitSet;

/* A batch's view of the limits. */
typedef struct LedgerLimits
{
	const LimitSet *set;
	const char **customers;		/* of b->accounts[i], or NULL */
	LimitCounter *counters;		/* sorted by limit id, subject */
	int			ncounters;
	/* Read by the direct store: each stored counter's row version (its lock's, for a scope's). */
	bool		direct;
	ItemPointerData *tids;
} LedgerLimits;

/*
 * fincore.limit_counters' columns: the key (the primary key is (tenant_id,
 * subject, limit_id)), then a counter's state, which
 * limits_counter_decode() and limits_counter_encode() translate.
 */
#define LIMIT_COUNTER_NKEY		3
#define LIMIT_COUNTER_NSTATE	6
extern const char *const limit_counter_columns[LIMIT_COUNTER_NKEY + LIMIT_COUNTER_NSTATE];

/* limits_store.c */
extern void limits_counter_decode(LimitCounter *c, const Datum *values, const bool *nulls);
extern void limits_counter_encode(const LimitCounter *c, Datum *values, bool *nulls);

/* limits_direct.c: false when the table cannot be read or written that way (then SQL does) */
extern bool limits_direct_read(LedgerBatch *b, const int *positions, int n, bool lock);
extern bool limits_direct_write(LedgerBatch *b);

/* limits_cache.c */
extern const LimitSet *limits_tenant_set(const pg_uuid_t *tenant);
extern bool limits_installed(void);
extern void limits_def_window(LimitDef *def, text *window_kind, bool seconds_null, int32 seconds, text *time_zone);

#endif							/* FINCORE_LIMITS_INT_H */
