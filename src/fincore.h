/*
 * fincore.h — what every fincore C file needs: PostgreSQL's basics, the
 * SQLSTATEs (errcodes.h), small helpers and the bounds per call.  Each module
 * declares its own API in a header of its own (money.h, tenancy.h, ledger.h,
 * fees.h, outbox.h, queue.h, owner_sql.h, cache_watch.h, jsonb_build.h,
 * uuidv7.h, ratelimit.h): a file includes the ones it uses.
 */
#ifndef FINCORE_H
#define FINCORE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#ifndef HAVE_INT128
#error "fincore needs a compiler with a 128-bit integer type"
#endif

#include "errcodes.h"

/* The value of a hexadecimal digit, or -1. */
static inline int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * The longest identifier an outside system gives fincore, in bytes: an inbox
 * message id (a webhook's event id) and a job's unique key, which
 * accept_webhook() sets to that event id.  One length for both, so whatever
 * the inbox accepts the queue accepts too.
 */
#define EXTERNAL_ID_MAX_LEN		500

/* ---- bounds per call (fincore.c) ---- */

/*
 * fincore.max_batch_size: the most items one call takes (enqueue_many's
 * payloads, replay_dead's ids, subscribe's topics, create_account's flags;
 * functions with a smaller cap of their own, such as create_transfers, keep
 * it).  fincore.max_payload_size: the largest payload in bytes (an event's
 * payload and headers, a job's payload, an inbox message, a webhook body).
 * Both are PGC_SUSET: a caller cannot raise them for itself.
 */
extern int	fincore_max_batch_size;
extern int	fincore_max_payload_size;
/* fincore.audit_digest_interval: seconds between the maintenance step's digests of a chain (docs/audit.md). */
extern int	fincore_audit_digest_interval;

/* A uuid[] Datum of n ids (ledger_core.c). */
extern Datum uuid_array(pg_uuid_t *ids, int n);

/* Raise sqlstate unless n items fit in one call of what (its own cap, or the GUC if lower). */
static inline void
check_batch_size(int64 n, int64 cap, int sqlstate, const char *what)
{
	int64		limit = Min(cap, (int64) fincore_max_batch_size);

	if (unlikely(n > limit))
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s takes at most " INT64_FORMAT " items a call, not " INT64_FORMAT, what, limit, n),
				 errhint("Split the call; the limit is fincore.max_batch_size (%d)%s.", fincore_max_batch_size,
						 cap < fincore_max_batch_size ? psprintf(", capped at " INT64_FORMAT " for this function", cap) : "")));
}

/* Raise sqlstate unless a payload of size bytes fits (fincore.max_payload_size). */
static inline void
check_payload_size(int64 size, int sqlstate, const char *what)
{
	if (unlikely(size > fincore_max_payload_size))
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s of " INT64_FORMAT " bytes is larger than %d bytes", what, size, fincore_max_payload_size),
				 errhint("The limit is fincore.max_payload_size; keep large documents elsewhere and pass a reference.")));
}

#endif							/* FINCORE_H */
