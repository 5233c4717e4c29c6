/*
 * fincore.c — the module's magic block and initialisation.  Each feature
 * lives in its own file: currency.c, rounding.c, amount.c, allocate.c,
 * tenancy.c, uuidv7.c, queue.c, ...
 */
#include "fincore.h"

#include "owner_sql.h"
#include "ledger.h"
#include "queue.h"
#include "ratelimit.h"
#include "tenancy.h"
#include "wakeup.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			fincore_max_batch_size = 10000;
int			fincore_max_payload_size = 1024 * 1024;
int			fincore_audit_digest_interval = 3600;

void
_PG_init(void)
{
	DefineCustomIntVariable("fincore.max_batch_size",
							"The most items one fincore call takes (batch functions).",
							"enqueue_many payloads, replay_dead ids, subscribe topics, create_account flags; "
							"functions with a smaller cap of their own keep it.",
							&fincore_max_batch_size, 10000, 1, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("fincore.max_payload_size",
							"The largest payload fincore accepts, in bytes.",
							"An event's payload and headers, a job's payload, an inbox message, a webhook body.",
							&fincore_max_payload_size, 1024 * 1024, 1024, 256 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("fincore.audit_digest_interval",
							"How often the maintenance step takes a digest of each audit chain that moved.",
							"Each digest is an audit.digest event to keep outside the database (docs/audit.md).",
							&fincore_audit_digest_interval, 3600, 1, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	owner_sql_init();
	tenancy_init();
	queue_init();
	ledger_store_init();
	ratelimit_init();
	wakeup_init();
	/* Unknown fincore.* settings are typos: warn about them. */
	MarkGUCPrefixReserved("fincore");
}

/* fincore._max_batch_size(): the setting, for fincore's SQL functions. */
PG_FUNCTION_INFO_V1(fincore_max_batch_size_setting);
Datum
fincore_max_batch_size_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(fincore_max_batch_size);
}
