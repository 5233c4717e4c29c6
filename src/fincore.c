/*
 * fincore.c — the module's magic block.  Each feature lives in its own file:
 * currency.c, rounding.c, amount.c, allocate.c, ...
 */
#include "fincore.h"

#include "fmgr.h"

PG_MODULE_MAGIC;
