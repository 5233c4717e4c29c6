/*
 * fincore.c — the module's magic block and initialisation.  Each feature
 * lives in its own file: currency.c, rounding.c, amount.c, allocate.c,
 * tenancy.c, uuidv7.c, queue.c, ...
 */
#include "fincore.h"

#include "fmgr.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	tenancy_init();
	queue_init();
	/* Unknown fincore.* settings are typos: warn about them. */
	MarkGUCPrefixReserved("fincore");
}
