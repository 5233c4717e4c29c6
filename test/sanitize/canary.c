/*
 * canary.c — a deliberately broken module that proves the sanitizer check of
 * ./scripts/test --sanitize is live: built with the same flags as fincore,
 * each call commits the error its argument names (an ASan one, a UBSan one),
 * and the run must see both reports in the server log, or it fails: a check
 * that cannot fail proves nothing.  Never installed outside the sanitizer's
 * private copy of the PostgreSQL tree.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

PG_MODULE_MAGIC;

static volatile int canary_global[4];

PG_FUNCTION_INFO_V1(fincore_sanitizer_canary);
Datum
fincore_sanitizer_canary(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	volatile int index = 4;

	if (strcmp(kind, "global-buffer-overflow") == 0)
	{
		/* Through a pointer no compile-time check can follow: ASan's redzone, not UBSan's bounds. */
		volatile int *p = (volatile int *) ((uintptr_t) canary_global + (uintptr_t) (index - 4));

		p[index] = 1;
	}
	else if (strcmp(kind, "signed-integer-overflow") == 0)
	{
		volatile int32 big = PG_INT32_MAX;

		PG_RETURN_INT32(big + index);
	}
	PG_RETURN_INT32(0);
}
