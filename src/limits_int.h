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
} LedgerLimits;

/* limits_cache.c */
extern const LimitSet *limits_tenant_set(const pg_uuid_t *tenant);
extern bool limits_installed(void);
extern void limits_def_window(LimitDef *def, text *window_kind, bool seconds_null, int32 seconds, text *time_zone);

#endif							/* FINCORE_LIMITS_INT_H */
