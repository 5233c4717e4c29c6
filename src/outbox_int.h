/*
 * outbox_int.h — the outbox's private header: its limits, its cached state,
 * and what its files share (outbox_core.c: helpers, the cached state, event
 * ids, snapshots; outbox_emit.c: emitting, the per-tenant ledger events
 * setting; outbox_consume.c: consumers, poll, ack and nack; outbox_inbox.c:
 * the inbox and signed webhooks).
 *
 * Emitting.  fincore.emit() inserts one row into the current slot's partition
 * of fincore.outbox_events in the caller's transaction, with the writing
 * transaction's top-level id (txid) and a number from fincore.outbox_seq.
 * Before taking the number it takes a transaction-scoped lock on (tenant,
 * aggregate type, aggregate id), so writers of one aggregate run one after
 * another and their seq order is their commit order (the lock is released
 * after the transaction has left the proc array).  The lock is an advisory
 * lock tag with field4 = OUTBOX_LOCK_AGGREGATE: pg_advisory_lock() uses 1
 * and 2 there, so it never collides with an application's advisory locks.
 *
 * Consuming (PgQ's design).  A consumer's position is a snapshot P: every
 * event whose txid is visible in P has been consumed.  A batch is the set of
 * committed events whose txid is visible in a later snapshot C and not in P;
 * it is fixed once C is chosen, whatever commits afterwards, because a
 * transaction visible in C has finished.  Events of a transaction that
 * commits late fall into a later batch instead of being skipped, and rolled
 * back events are never visible.  Within a batch events go out in seq order;
 * when the batch is done the position becomes C.  C is the snapshot of the
 * statement that opens the batch and every read uses that snapshot or a later
 * one; the consumer row is locked FOR NO KEY UPDATE first, so in READ
 * COMMITTED the statement snapshot is newer than the position, and in
 * REPEATABLE READ a concurrent change of the row is a serialization failure.
 *
 * Retention.  Slots rotate (fincore.outbox_maintenance(), SQL): current ->
 * draining -> sealed -> empty.  A writer locks its slot's partition (ROW
 * EXCLUSIVE) before it trusts its cached idea of the current slot; taking
 * that lock the first time in a transaction processes invalidations, so a
 * writer that got the lock after a rotation committed sees it.  Sealing takes
 * a SHARE lock on the drained partition without waiting: once granted, no
 * transaction holds or will take a writer's lock on it under the old slot,
 * and a snapshot taken then sees every transaction that wrote into it.  The
 * slot is truncated when every consumer's position covers that snapshot.
 */
#ifndef FINCORE_OUTBOX_INT_H
#define FINCORE_OUTBOX_INT_H

#include "fincore.h"

#include "cache_watch.h"
#include "outbox.h"
#include "owner_sql.h"
#include "tenancy.h"

#include "executor/spi.h"
#include "utils/jsonb.h"
#include "utils/tuplestore.h"
#include "utils/snapshot.h"

#define OUTBOX_SLOTS			3
#define OUTBOX_LOCK_AGGREGATE	0x4F41	/* advisory field4 "OA": not 1 or 2 */
#define POLL_MAX_LIMIT			10000
#define CONSUMER_MAX_PARTITIONS	256
#define TOPIC_MAX_LEN			200
#define AGGREGATE_ID_MAX_LEN	500
#define INBOX_TEXT_MAX_LEN		EXTERNAL_ID_MAX_LEN
#define HMAC_SHA256_LEN			32

static inline bool
ascii_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* 1-maxlen characters of [A-Za-z0-9._:/-], starting with a letter or digit. */
static inline bool
outbox_name_ok(const char *s, int len, int maxlen)
{
	if (len < 1 || len > maxlen || !ascii_alnum(s[0]))
		return false;
	for (int i = 1; i < len; i++)
		if (!ascii_alnum(s[i]) && strchr("._:/-", s[i]) == NULL)
			return false;
	return true;
}

static inline void
check_event_name(const char *what, const char *s, int len)
{
	if (!outbox_name_ok(s, len, TOPIC_MAX_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_EVENT),
				 errmsg("invalid %s: \"%.*s\"", what, Min(len, 64), s),
				 errhint("A %s is 1-%d characters of [A-Za-z0-9._:/-], starting with a letter or digit.",
						 what, TOPIC_MAX_LEN)));
}

static inline void
check_aggregate_id(int len)
{
	if (len < 1 || len > AGGREGATE_ID_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_EVENT),
				 errmsg("invalid aggregate id: %s", len < 1 ? "empty" : "too long"),
				 errhint("An aggregate id is 1-%d bytes.", AGGREGATE_ID_MAX_LEN)));
}

static inline void
check_headers(Jsonb *headers)
{
	if (headers != NULL && !(JB_ROOT_IS_OBJECT(headers) && !JB_ROOT_IS_SCALAR(headers)))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_EVENT),
				 errmsg("event headers must be a JSON object or NULL"),
				 errhint("e.g. '{\"traceparent\": \"00-...\"}'")));
}

/* The relations of the outbox, its current slot and notification setting (outbox_core.c). */
typedef struct OutboxState
{
	Oid			events_relid;
	Oid			seq_relid;
	Oid			slots_relid;
	Oid			config_relid;
	Oid			part_relid[OUTBOX_SLOTS];
	int			current_slot;
	bool		notify;
	char		notify_channel[NAMEDATALEN];
} OutboxState;

extern OutboxState state;
extern CacheWatch state_watch;

/* outbox_core.c */
extern void event_id_make(int64 seq, pg_uuid_t *out);
extern bool event_id_seq(const pg_uuid_t *id, int64 *seq);
extern uint64 execute_indexed_into(SPIPlanPtr plan, int nargs, const Oid *types, const Datum *values,
								   const char *nulls, Tuplestorestate *out, MemoryContext cxt);
extern SPIPlanPtr kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types);
extern int	lock_current_slot(void);
/* Load the state with a snapshot taken now; SPI connected, as the owner. */
extern void state_load(void);
extern Datum spi_value(int row, int col, bool *isnull);
/* Events with a seq up to this came with a restored dump and left the stream;
 * checks (and rebases) once a backend.  SPI connected, as the owner. */
extern int64 outbox_restore_floor(void);
extern bool outbox_restore_checked(void);
/* The wake-up topic of every event of this database (wakeup.h). */
extern uint64 outbox_wakeup_topic(void);

#endif							/* FINCORE_OUTBOX_INT_H */
