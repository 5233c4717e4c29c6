/*
 * outbox.c — the transactional outbox and the idempotent inbox.
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
#include "fincore.h"

#include "cache_watch.h"
#include "outbox.h"
#include "owner_sql.h"
#include "tenancy.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/xid8.h"

#define OUTBOX_SLOTS			3
#define OUTBOX_LOCK_AGGREGATE	0x4F41	/* advisory field4 "OA": not 1 or 2 */
#define POLL_MAX_LIMIT			10000
#define TOPIC_MAX_LEN			200
#define AGGREGATE_ID_MAX_LEN	500
#define INBOX_TEXT_MAX_LEN		EXTERNAL_ID_MAX_LEN
#define HMAC_SHA256_LEN			32

/* ---- small helpers ---- */

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

static SPIPlanPtr
kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	if (*plan == NULL)
	{
		/* Generic plans: the batch queries must use the seq and txid indexes
		 * whatever the width of the range a custom plan would see. */
		*plan = fincore_prepare(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
	}
	return *plan;
}

/*
 * Run a batch query with sequential scans and sorts off.  Its generic plan is
 * made at the first execution and kept, so this fixes it to the seq and txid
 * indexes: a batch costs its own size, whatever the table's statistics say
 * (one bulk transaction makes the txid column look like a single value).
 */
static int
execute_indexed(SPIPlanPtr plan, Datum *values, const char *nulls, long tcount)
{
	int			nest = NewGUCNestLevel();
	int			rc;

	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, values, nulls, false, tcount);
	AtEOXact_GUC(true, nest);
	return rc;
}

static Datum
spi_value(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* pg_current_snapshot() of snap. */
static Datum
snapshot_datum(Snapshot snap)
{
	LOCAL_FCINFO(fc, 0);
	Datum		result;

	PushActiveSnapshot(snap);
	InitFunctionCallInfoData(*fc, NULL, 0, InvalidOid, NULL, NULL);
	result = pg_current_snapshot(fc);
	PopActiveSnapshot();
	return result;
}

/* ---- cached state: relations, current slot, settings ---- */

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

static OutboxState state;
static CacheWatch state_watch;	/* outbox_events, outbox_slots, outbox_config, the partitions */

/* Tenants whose ledger events are off (fincore.outbox_settings). */
static CacheWatch ledger_watch;
static Oid	settings_relid = InvalidOid;
static pg_uuid_t *ledger_off = NULL;
static int	ledger_off_count = 0;
static MemoryContext ledger_cxt = NULL;

/* Load the state with a snapshot taken now (the transaction's may predate a rotation).
 * SPI connected, as the owner. */
static void
state_load(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Datum		d;
	char		name[NAMEDATALEN];

	Oid			watched[3 + OUTBOX_SLOTS];

	state.events_relid = fincore_table_oid("outbox_events");
	state.seq_relid = fincore_table_oid("outbox_seq");
	state.slots_relid = fincore_table_oid("outbox_slots");
	state.config_relid = fincore_table_oid("outbox_config");
	for (int i = 0; i < OUTBOX_SLOTS; i++)
	{
		snprintf(name, sizeof(name), "outbox_events_%d", i);
		state.part_relid[i] = fincore_table_oid(name);
	}
	watched[0] = state.events_relid;
	watched[1] = state.slots_relid;
	watched[2] = state.config_relid;
	memcpy(&watched[3], state.part_relid, sizeof(state.part_relid));
	cache_watch_begin(&state_watch, lengthof(watched), watched);
	kept_plan(&plan,
			  "SELECT (SELECT s.slot FROM fincore.outbox_slots s WHERE s.state OPERATOR(pg_catalog.=) 'current'),"
			  "       coalesce(c.notify, false), coalesce(c.notify_channel, 'fincore_outbox')"
			  "  FROM (SELECT 1) AS one LEFT JOIN fincore.outbox_config c ON true",
			  0, NULL);
	if (SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "outbox state look-up failed");
	d = spi_value(0, 1, &isnull);
	if (isnull || DatumGetInt16(d) < 0 || DatumGetInt16(d) >= OUTBOX_SLOTS)
		elog(ERROR, "fincore.outbox_slots has no current slot");
	state.current_slot = DatumGetInt16(d);
	state.notify = DatumGetBool(spi_value(0, 2, &isnull));
	text_to_cstring_buffer(DatumGetTextPP(spi_value(0, 3, &isnull)), state.notify_channel, NAMEDATALEN);
	/* A change heard during the look-up leaves it stale: look again next time. */
	cache_watch_done(&state_watch);
	AcceptInvalidationMessages();
}

/*
 * The current slot, with its partition locked ROW EXCLUSIVE.  The first lock of
 * a relation in a transaction processes pending invalidations; if they changed
 * the current slot, lock the new one too (holding the old lock is harmless:
 * sealing just waits for this transaction).
 */
static int
lock_current_slot(void)
{
	for (;;)
	{
		int			slot;

		if (!cache_watch_valid(&state_watch))
			state_load();
		slot = state.current_slot;
		LockRelationOid(state.part_relid[slot], RowExclusiveLock);
		if (cache_watch_valid(&state_watch) && state.current_slot == slot)
			return slot;
	}
}

/* ---- event ids: UUIDv7 whose low 62 bits are the seq ---- */

static void
event_id_make(int64 seq, pg_uuid_t *out)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64		ms = (uint64) ((now + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY) / 1000);
	uint32		r = pg_prng_uint32(&pg_global_prng_state);

	for (int i = 0; i < 6; i++)
		out->data[i] = (unsigned char) (ms >> (8 * (5 - i)));
	out->data[6] = (unsigned char) (0x70 | ((r >> 8) & 0x0F));	/* version 7 */
	out->data[7] = (unsigned char) r;
	out->data[8] = (unsigned char) (0x80 | ((uint64) seq >> 56 & 0x3F));	/* variant 10 */
	for (int i = 9; i < 16; i++)
		out->data[i] = (unsigned char) ((uint64) seq >> (8 * (15 - i)));
}

/* The seq of an event id; false if it cannot be one. */
static bool
event_id_seq(const pg_uuid_t *id, int64 *seq)
{
	uint64		s;

	if ((id->data[6] & 0xF0) != 0x70 || (id->data[8] & 0xC0) != 0x80)
		return false;
	s = id->data[8] & 0x3F;
	for (int i = 9; i < 16; i++)
		s = s << 8 | id->data[i];
	*seq = (int64) s;
	return s > 0;
}

/* ---- emitting ---- */

typedef struct EmitArgs
{
	pg_uuid_t	tenant;
	text	   *topic;
	text	   *type;
	text	   *aggregate_type;
	text	   *aggregate_id;
	Jsonb	   *payload;
	Jsonb	   *headers;
	pg_uuid_t	id;				/* out */
	bool		notify;			/* out */
	char		channel[NAMEDATALEN];	/* out */
} EmitArgs;

/*
 * Writers of one (tenant, aggregate) run one at a time, so seq order is commit
 * order.  A transaction locks each aggregate it writes (ExclusiveLock on a tag
 * hashed from it) and the aggregate's stripe in RowExclusiveLock, which other
 * such writers share.  The lock table is finite, so past AGGREGATE_LOCKS_PER_XACT
 * aggregates a transaction (a bulk load) takes the stripe itself in
 * ExclusiveLock instead: that conflicts with every other writer of the stripe,
 * so any two writers of one aggregate still conflict, and a transaction holds at
 * most AGGREGATE_LOCKS_PER_XACT + OUTBOX_STRIPES such locks.
 */
#define AGGREGATE_LOCKS_PER_XACT	64
#define OUTBOX_STRIPES				256
#define OUTBOX_LOCK_STRIPE			0x4F42	/* advisory field4 "OB" */

static LocalTransactionId aggregate_locks_lxid = InvalidLocalTransactionId;
static int	aggregate_locks_taken = 0;

static void
lock_aggregate(const pg_uuid_t *tenant, text *type, text *id)
{
	uint32		lens[2] = {VARSIZE_ANY_EXHDR(type), VARSIZE_ANY_EXHDR(id)};
	uint64		h;
	LOCKTAG		tag;
	LOCKTAG		stripe;

	h = hash_bytes_extended(tenant->data, UUID_LEN, 0);
	h = hash_bytes_extended((const unsigned char *) lens, sizeof(lens), h);
	h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(type), lens[0], h);
	h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(id), lens[1], h);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h, OUTBOX_LOCK_AGGREGATE);
	SET_LOCKTAG_ADVISORY(stripe, MyDatabaseId, (uint32) (h % OUTBOX_STRIPES), 0, OUTBOX_LOCK_STRIPE);

	if (aggregate_locks_lxid != MyProc->lxid)
	{
		aggregate_locks_lxid = MyProc->lxid;
		aggregate_locks_taken = 0;
	}
	if (aggregate_locks_taken >= AGGREGATE_LOCKS_PER_XACT &&
		LockHeldByMe(&tag, ExclusiveLock) == false)
	{
		(void) LockAcquire(&stripe, ExclusiveLock, false, false);
		return;
	}
	(void) LockAcquire(&stripe, RowExclusiveLock, false, false);
	if (LockAcquire(&tag, ExclusiveLock, false, false) != LOCKACQUIRE_ALREADY_HELD)
		aggregate_locks_taken++;
}

static void
emit_as_owner(void *arg)
{
	EmitArgs   *a = arg;
	static SPIPlanPtr plans[OUTBOX_SLOTS];
	Oid			types[10] = {UUIDOID, INT8OID, XID8OID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	JSONBOID, JSONBOID};
	Datum		values[10];
	char		nulls[10] = "          ";
	int			slot;
	int64		seq;

	fincore_spi_connect();
	slot = lock_current_slot();
	if (plans[slot] == NULL)
	{
		char		sql[512];

		snprintf(sql, sizeof(sql),
				 "INSERT INTO fincore.outbox_events_%d (id, seq, txid, tenant_id, slot, topic, type,"
				 " aggregatetype, aggregateid, payload, headers)"
				 " VALUES ($1, $2, $3, $4, %d, $5, $6, $7, $8, $9, $10)", slot, slot);
		kept_plan(&plans[slot], sql, 10, types);
	}
	seq = nextval_internal(state.seq_relid, false);
	event_id_make(seq, &a->id);
	values[0] = UUIDPGetDatum(&a->id);
	values[1] = Int64GetDatum(seq);
	values[2] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	values[3] = UUIDPGetDatum(&a->tenant);
	values[4] = PointerGetDatum(a->topic);
	values[5] = PointerGetDatum(a->type);
	values[6] = PointerGetDatum(a->aggregate_type);
	values[7] = PointerGetDatum(a->aggregate_id);
	values[8] = JsonbPGetDatum(a->payload);
	values[9] = a->headers ? JsonbPGetDatum(a->headers) : (Datum) 0;
	if (a->headers == NULL)
		nulls[9] = 'n';
	if (SPI_execute_plan(plans[slot], values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "outbox insert failed");
	a->notify = state.notify;
	strlcpy(a->channel, state.notify_channel, NAMEDATALEN);
	SPI_finish();
}

static void
emit_event(EmitArgs *a)
{
	check_event_name("topic", VARDATA_ANY(a->topic), VARSIZE_ANY_EXHDR(a->topic));
	check_event_name("event type", VARDATA_ANY(a->type), VARSIZE_ANY_EXHDR(a->type));
	check_event_name("aggregate type", VARDATA_ANY(a->aggregate_type), VARSIZE_ANY_EXHDR(a->aggregate_type));
	check_aggregate_id(VARSIZE_ANY_EXHDR(a->aggregate_id));
	check_headers(a->headers);
	check_payload_size((int64) VARSIZE(a->payload) + (a->headers ? VARSIZE(a->headers) : 0),
					   ERRCODE_FC_INVALID_EVENT, "an event's payload and headers");

	lock_aggregate(&a->tenant, a->aggregate_type, a->aggregate_id);
	if (!cache_watch_valid(&state_watch) || !OidIsValid(state.events_relid))
		state.events_relid = fincore_table_oid("outbox_events");
	fincore_run_as_owner(state.events_relid, emit_as_owner, a);
	/* PostgreSQL folds identical notifications of a transaction into one. */
	if (a->notify)
		Async_Notify(a->channel, NULL);
}

void
outbox_emit_event(const pg_uuid_t *tenant, const char *topic, const char *event_type,
				  const char *aggregate_type, const char *aggregate_id,
				  Jsonb *payload, Jsonb *headers, pg_uuid_t *id_out)
{
	EmitArgs	a;

	memset(&a, 0, sizeof(a));
	if (tenant != NULL)
		a.tenant = *tenant;
	else
		tenancy_require_tenant(&a.tenant);
	if (topic == NULL || event_type == NULL || aggregate_type == NULL || aggregate_id == NULL ||
		payload == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_EVENT),
				 errmsg("an event needs a topic, event type, aggregate type, aggregate id and payload")));
	a.topic = cstring_to_text(topic);
	a.type = cstring_to_text(event_type);
	a.aggregate_type = cstring_to_text(aggregate_type);
	a.aggregate_id = cstring_to_text(aggregate_id);
	a.payload = payload;
	a.headers = headers;
	emit_event(&a);
	if (id_out != NULL)
		*id_out = a.id;
}

PG_FUNCTION_INFO_V1(fincore_emit);
Datum
fincore_emit(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"topic", "event_type", "aggregate_type", "aggregate_id", "payload"};
	EmitArgs	a;
	pg_uuid_t  *result;

	memset(&a, 0, sizeof(a));
	for (int i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_EVENT),
					 errmsg("%s of an event must not be null", names[i])));
	tenancy_require_tenant(&a.tenant);
	a.topic = PG_GETARG_TEXT_PP(0);
	a.type = PG_GETARG_TEXT_PP(1);
	a.aggregate_type = PG_GETARG_TEXT_PP(2);
	a.aggregate_id = PG_GETARG_TEXT_PP(3);
	a.payload = PG_GETARG_JSONB_P(4);
	a.headers = PG_ARGISNULL(5) ? NULL : PG_GETARG_JSONB_P(5);
	emit_event(&a);
	result = palloc(sizeof(pg_uuid_t));
	*result = a.id;
	PG_RETURN_UUID_P(result);
}

/* Trigger on outbox_slots, outbox_config, outbox_settings: every backend reloads. */
PG_FUNCTION_INFO_V1(fincore_outbox_changed);
Datum
fincore_outbox_changed(PG_FUNCTION_ARGS)
{
	return cache_watch_trigger(fcinfo);
}

/* ---- per-tenant ledger events setting ---- */

static void
ledger_load_query(void *arg pg_attribute_unused())
{
	static SPIPlanPtr plan = NULL;
	MemoryContext old;

	fincore_spi_connect();
	kept_plan(&plan, "SELECT s.tenant_id FROM fincore.outbox_settings s WHERE NOT s.ledger_events", 0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "outbox settings look-up failed");
	old = MemoryContextSwitchTo(ledger_cxt);
	ledger_off_count = (int) SPI_processed;
	ledger_off = palloc(sizeof(pg_uuid_t) * Max(ledger_off_count, 1));
	MemoryContextSwitchTo(old);
	for (int i = 0; i < ledger_off_count; i++)
	{
		bool		isnull;

		ledger_off[i] = *DatumGetUUIDP(spi_value(i, 1, &isnull));
	}
	SPI_finish();
}

static void
ledger_load(void)
{
	settings_relid = fincore_table_oid("outbox_settings");
	if (ledger_cxt == NULL)
		ledger_cxt = AllocSetContextCreate(TopMemoryContext, "fincore outbox settings",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(ledger_cxt);
	ledger_off = NULL;
	ledger_off_count = 0;
	cache_watch_begin(&ledger_watch, 1, &settings_relid);
	fincore_run_as_owner(settings_relid, ledger_load_query, NULL);
	cache_watch_done(&ledger_watch);
}

bool
outbox_ledger_events_enabled(const pg_uuid_t *tenant)
{
	pg_uuid_t	current;

	if (tenant == NULL)
	{
		if (!tenancy_current_tenant(&current))
			return true;
		tenant = &current;
	}
	if (!cache_watch_valid(&ledger_watch))
		ledger_load();
	for (int i = 0; i < ledger_off_count; i++)
		if (memcmp(&ledger_off[i], tenant, sizeof(pg_uuid_t)) == 0)
			return false;
	return true;
}

PG_FUNCTION_INFO_V1(fincore_ledger_events_enabled);
Datum
fincore_ledger_events_enabled(PG_FUNCTION_ARGS pg_attribute_unused())
{
	PG_RETURN_BOOL(outbox_ledger_events_enabled(NULL));
}

/* ---- snapshots for subscribe and retention ---- */

PG_FUNCTION_INFO_V1(fincore_outbox_latest_snapshot);
Datum
fincore_outbox_latest_snapshot(PG_FUNCTION_ARGS pg_attribute_unused())
{
	return snapshot_datum(GetLatestSnapshot());
}

PG_FUNCTION_INFO_V1(fincore_outbox_seal);
Datum
fincore_outbox_seal(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);

	/* Never wait: a queued SHARE request would stall writers behind a long transaction. */
	if (!ConditionalLockRelationOid(relid, ShareLock))
		PG_RETURN_NULL();
	return snapshot_datum(GetLatestSnapshot());
}

/* ---- consumers ---- */

typedef struct Consumer
{
	text	   *name;
	Datum		topics;
	bool		all_topics;
	bool		scoped;
	pg_uuid_t	scope;
	Datum		position;
	bool		position_stale; /* last moved more than a second ago */
	bool		has_batch;
	Datum		batch_end;
	int64		batch_acked;
	int64		batch_last;
	int32		max_attempts;
	Datum		backoff;
	Datum		backoff_max;
	bool		dirty;			/* write back */
	bool		moved;			/* position changed */
} Consumer;

/* May the calling role use cross-tenant consumers?  Trusted roles may call set_tenant. */
static bool
caller_is_trusted(void)
{
	Oid			argtypes[1] = {UUIDOID};
	Oid			fn;

	if (superuser())
		return true;
	fn = LookupFuncName(list_make2(makeString("fincore"), makeString("set_tenant")), 1, argtypes, true);
	return OidIsValid(fn) && pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) == ACLCHECK_OK;
}

/* The one error for a consumer the caller cannot see, missing or not. */
static void unknown_consumer_error(text *name) pg_attribute_noreturn();

static void
unknown_consumer_error(text *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_UNKNOWN_CONSUMER),
			 errmsg("unknown consumer: \"%s\"", text_to_cstring(name)),
			 errhint("Create it with fincore.subscribe(consumer, topics); app roles see only the consumers scoped to their tenant.")));
}

/* Lock and read the consumer row; check the caller may use it.  SPI connected, as owner. */
static void
consumer_load(Consumer *c, bool trusted)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {PointerGetDatum(c->name)};
	bool		isnull;
	pg_uuid_t	tenant;

	kept_plan(&plan,
			  "SELECT c.topics, '*' OPERATOR(pg_catalog.=) ANY (c.topics), c.tenant_scope, c.position,"
			  "       c.positioned_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 second'::pg_catalog.interval),"
			  "       c.batch_end, c.batch_acked, c.batch_last, c.max_attempts, c.backoff, c.backoff_max"
			  "  FROM fincore.outbox_consumers c WHERE c.name OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE",
			  1, types);
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "consumer look-up failed");
	if (SPI_processed == 0)
		unknown_consumer_error(c->name);
	c->topics = SPI_datumTransfer(spi_value(0, 1, &isnull), false, -1);
	c->all_topics = DatumGetBool(spi_value(0, 2, &isnull));
	{
		Datum		scope = spi_value(0, 3, &isnull);

		c->scoped = !isnull;
		if (c->scoped)
			c->scope = *DatumGetUUIDP(scope);
	}
	c->position = SPI_datumTransfer(spi_value(0, 4, &isnull), false, -1);
	c->position_stale = DatumGetBool(spi_value(0, 5, &isnull));
	c->batch_end = spi_value(0, 6, &isnull);
	c->has_batch = !isnull;
	if (c->has_batch)
	{
		c->batch_end = SPI_datumTransfer(c->batch_end, false, -1);
		c->batch_acked = DatumGetInt64(spi_value(0, 7, &isnull));
		c->batch_last = DatumGetInt64(spi_value(0, 8, &isnull));
	}
	c->max_attempts = DatumGetInt32(spi_value(0, 9, &isnull));
	c->backoff = SPI_datumTransfer(spi_value(0, 10, &isnull), false, sizeof(Interval));
	c->backoff_max = SPI_datumTransfer(spi_value(0, 11, &isnull), false, sizeof(Interval));
	c->dirty = false;
	c->moved = false;

	if (trusted)
		return;
	if (c->scoped && tenancy_current_tenant(&tenant) && memcmp(&tenant, &c->scope, sizeof(pg_uuid_t)) == 0)
		return;

	/*
	 * A consumer of another tenant, or one that reads every tenant's events,
	 * is reported to an app role exactly as a missing one: which names exist
	 * elsewhere is not its business.
	 */
	unknown_consumer_error(c->name);
}

static void
consumer_store(Consumer *c)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[6] = {TEXTOID, PG_SNAPSHOTOID, BOOLOID, PG_SNAPSHOTOID, INT8OID, INT8OID};
	Datum		values[6];
	char		nulls[6] = "      ";

	if (!c->dirty)
		return;
	kept_plan(&plan,
			  "UPDATE fincore.outbox_consumers c SET position = $2,"
			  "       positioned_at = CASE WHEN $3 THEN pg_catalog.now() ELSE c.positioned_at END,"
			  "       batch_end = $4, batch_acked = $5, batch_last = $6"
			  " WHERE c.name OPERATOR(pg_catalog.=) $1",
			  6, types);
	values[0] = PointerGetDatum(c->name);
	values[1] = c->position;
	values[2] = BoolGetDatum(c->moved);
	values[3] = c->batch_end;
	values[4] = Int64GetDatum(c->batch_acked);
	values[5] = Int64GetDatum(c->batch_last);
	if (!c->has_batch)
		nulls[3] = nulls[4] = nulls[5] = 'n';
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "consumer update failed");
}

static void
close_batch(Consumer *c)
{
	c->position = c->batch_end;
	c->has_batch = false;
	c->dirty = c->moved = true;
}

/*
 * Open the next batch: events visible in a snapshot taken now and not in the
 * position.  Their txids are either in the position's xip list or at least its
 * xmax, both index look-ups.  Returns false when it would be empty.
 */
static bool
open_batch(Consumer *c)
{
	static SPIPlanPtr snap_plan = NULL;
	static SPIPlanPtr bounds_plan = NULL;
	Oid			snap_types[1] = {PG_SNAPSHOTOID};
	Oid			types[5] = {PG_SNAPSHOTOID, PG_SNAPSHOTOID, BOOLOID, TEXTARRAYOID, UUIDOID};
	Datum		values[5];
	char		nulls[5] = "     ";
	Datum		cur;
	bool		isnull;
	bool		foreign;

	/* A new statement: in READ COMMITTED a snapshot newer than the locked row. */
	kept_plan(&snap_plan,
			  "SELECT pg_catalog.pg_current_snapshot(),"
			  "       pg_catalog.pg_snapshot_xmax($1) OPERATOR(pg_catalog.>)"
			  "       pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())",
			  1, snap_types);
	values[0] = c->position;
	if (SPI_execute_plan(snap_plan, values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "snapshot look-up failed");
	cur = SPI_datumTransfer(spi_value(0, 1, &isnull), false, -1);
	foreign = DatumGetBool(spi_value(0, 2, &isnull));
	if (foreign)
	{
		/* Only a restored dump (another cluster's transaction ids) puts it ahead. */
		ereport(WARNING,
				(errmsg("position of consumer \"%s\" is ahead of this cluster's transactions; it starts from now",
						text_to_cstring(c->name))));
		c->position = cur;
		c->dirty = c->moved = true;
		return false;
	}

	kept_plan(&bounds_plan,
			  "SELECT pg_catalog.min(b.seq), pg_catalog.max(b.seq) FROM (SELECT e.seq FROM fincore.outbox_events e"
			  " WHERE ((e.txid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmax($1)"
			  "         AND e.txid OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmax($2))"
			  "        OR e.txid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip($1))))"
			  "   AND pg_catalog.pg_visible_in_snapshot(e.txid, $2)"
			  "   AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, $1)"
			  "   AND ($3 OR e.topic OPERATOR(pg_catalog.=) ANY ($4))"
			  "   AND ($5::pg_catalog.uuid IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) $5) OFFSET 0) AS b",
			  5, types);
	values[0] = c->position;
	values[1] = cur;
	values[2] = BoolGetDatum(c->all_topics);
	values[3] = c->topics;
	values[4] = UUIDPGetDatum(&c->scope);
	if (!c->scoped)
		nulls[4] = 'n';
	if (execute_indexed(bounds_plan, values, nulls, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "batch look-up failed");
	c->batch_acked = DatumGetInt64(spi_value(0, 1, &isnull)) - 1;
	if (isnull)
	{
		/* Nothing new: move the position on now and then, so retention can proceed. */
		if (c->position_stale)
		{
			c->position = cur;
			c->dirty = c->moved = true;
		}
		return false;
	}
	c->batch_last = DatumGetInt64(spi_value(0, 2, &isnull));
	c->batch_end = cur;
	c->has_batch = true;
	c->dirty = true;
	return true;
}

#define EVENT_COLUMNS \
	"e.id, e.seq, e.tenant_id, e.topic, e.type, e.aggregatetype, e.aggregateid, e.payload, e.headers, e.created_at"

/* Append up to max events of the open batch after batch_acked; how many. */
static uint64
read_batch(Consumer *c, int max, Tuplestorestate *out)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[8] = {INT8OID, INT8OID, PG_SNAPSHOTOID, PG_SNAPSHOTOID, BOOLOID, TEXTARRAYOID,
	UUIDOID, INT4OID};
	Datum		values[8];
	char		nulls[8] = "        ";

	kept_plan(&plan,
			  "SELECT " EVENT_COLUMNS ", 0 FROM fincore.outbox_events e"
			  " WHERE e.seq OPERATOR(pg_catalog.>) $1 AND e.seq OPERATOR(pg_catalog.<=) $2"
			  "   AND pg_catalog.pg_visible_in_snapshot(e.txid, $3)"
			  "   AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, $4)"
			  "   AND ($5 OR e.topic OPERATOR(pg_catalog.=) ANY ($6))"
			  "   AND ($7::pg_catalog.uuid IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) $7)"
			  " ORDER BY e.seq LIMIT $8",
			  8, types);
	values[0] = Int64GetDatum(c->batch_acked);
	values[1] = Int64GetDatum(c->batch_last);
	values[2] = c->batch_end;
	values[3] = c->position;
	values[4] = BoolGetDatum(c->all_topics);
	values[5] = c->topics;
	values[6] = UUIDPGetDatum(&c->scope);
	values[7] = Int32GetDatum(max);
	if (!c->scoped)
		nulls[6] = 'n';
	if (execute_indexed(plan, values, nulls, 0) != SPI_OK_SELECT)
		elog(ERROR, "batch read failed");
	for (uint64 i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(out, SPI_tuptable->vals[i]);
	return SPI_processed;
}

static uint64
read_retries(Consumer *c, int max, Tuplestorestate *out)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		values[2] = {PointerGetDatum(c->name), Int32GetDatum(max)};

	kept_plan(&plan,
			  "SELECT e.id, e.seq, e.tenant_id, e.topic, e.type, e.aggregatetype, e.aggregateid,"
			  "       e.payload, e.headers, e.created_at, e.attempts"
			  "  FROM fincore.outbox_retries e"
			  " WHERE e.consumer OPERATOR(pg_catalog.=) $1"
			  "   AND e.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
			  " ORDER BY e.next_attempt_at, e.seq LIMIT $2",
			  2, types);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "retry read failed");
	for (uint64 i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(out, SPI_tuptable->vals[i]);
	return SPI_processed;
}

typedef struct PollArgs
{
	Consumer	c;
	bool		trusted;
	int			max;
	Tuplestorestate *out;
} PollArgs;

static void
poll_as_owner(void *arg)
{
	PollArgs   *p = arg;
	Consumer   *c = &p->c;
	int			left;

	fincore_spi_connect();
	consumer_load(c, p->trusted);
	left = p->max - (int) read_retries(c, p->max, p->out);
	/* At most one batch is finished and one opened per call. */
	for (int pass = 0; left > 0 && pass < 2; pass++)
	{
		if (!c->has_batch && !open_batch(c))
			break;
		if (read_batch(c, left, p->out) > 0)
			break;
		close_batch(c);
	}
	consumer_store(c);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_poll);
Datum
fincore_poll(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PollArgs	p;

	memset(&p, 0, sizeof(p));
	p.c.name = PG_GETARG_TEXT_PP(0);
	p.max = PG_GETARG_INT32(1);
	if (p.max < 1 || p.max > POLL_MAX_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CONSUMER),
				 errmsg("poll max must be between 1 and %d, not %d", POLL_MAX_LIMIT, p.max)));
	p.trusted = caller_is_trusted();
	InitMaterializedSRF(fcinfo, 0);
	p.out = rsinfo->setResult;
	if (!cache_watch_valid(&state_watch) || !OidIsValid(state.events_relid))
		state.events_relid = fincore_table_oid("outbox_events");
	fincore_run_as_owner(state.events_relid, poll_as_owner, &p);
	return (Datum) 0;
}

/* ---- ack and nack ---- */

typedef struct AckArgs
{
	Consumer	c;
	bool		trusted;
	bool		nack;
	pg_uuid_t  *event_id;
	text	   *error;			/* nack; may be NULL */
	const char *result;			/* nack: "retry" or "dead" */
} AckArgs;

static void
not_pending(Consumer *c, pg_uuid_t *id, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_ACK),
			 errmsg("event %s is not pending for consumer \"%s\"",
					DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id))),
					text_to_cstring(c->name)),
			 errdetail_internal("%s", detail),
			 errhint("Acknowledge events that poll() returned, once.")));
}

/* A nacked retry: count the failure, then schedule it again or bury it. */
static bool
nack_retry(AckArgs *a)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr again_plan = NULL;
	static SPIPlanPtr bury_plan = NULL;
	Oid			types[5] = {TEXTOID, UUIDOID, TEXTOID, INTERVALOID, INTERVALOID};
	Datum		values[5];
	char		nulls[5] = "     ";
	bool		isnull;
	int32		attempts;

	kept_plan(&find_plan,
			  "SELECT r.attempts FROM fincore.outbox_retries r"
			  " WHERE r.consumer OPERATOR(pg_catalog.=) $1 AND r.id OPERATOR(pg_catalog.=) $2",
			  2, types);
	values[0] = PointerGetDatum(a->c.name);
	values[1] = UUIDPGetDatum(a->event_id);
	if (SPI_execute_plan(find_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "retry look-up failed");
	if (SPI_processed == 0)
		return false;
	attempts = DatumGetInt32(spi_value(0, 1, &isnull));
	values[2] = a->error ? PointerGetDatum(a->error) : (Datum) 0;
	if (a->error == NULL)
		nulls[2] = 'n';
	if (attempts + 1 >= a->c.max_attempts)
	{
		kept_plan(&bury_plan,
				  "WITH d AS (DELETE FROM fincore.outbox_retries r"
				  "            WHERE r.consumer OPERATOR(pg_catalog.=) $1 AND r.id OPERATOR(pg_catalog.=) $2"
				  "            RETURNING r.*)"
				  " INSERT INTO fincore.dead_events (consumer, id, seq, tenant_id, topic, type, aggregatetype,"
				  "        aggregateid, payload, headers, created_at, attempts, last_error)"
				  " SELECT d.consumer, d.id, d.seq, d.tenant_id, d.topic, d.type, d.aggregatetype,"
				  "        d.aggregateid, d.payload, d.headers, d.created_at, d.attempts OPERATOR(pg_catalog.+) 1, $3"
				  "   FROM d",
				  3, types);
		if (SPI_execute_plan(bury_plan, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "dead letter insert failed");
		a->result = "dead";
		return true;
	}
	kept_plan(&again_plan,
			  "UPDATE fincore.outbox_retries r SET attempts = r.attempts OPERATOR(pg_catalog.+) 1, last_error = $3,"
			  "       next_attempt_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
			  "           LEAST($4 OPERATOR(pg_catalog.*)"
			  "               pg_catalog.power(2::pg_catalog.float8, LEAST(r.attempts, 20)::pg_catalog.float8), $5)"
			  " WHERE r.consumer OPERATOR(pg_catalog.=) $1 AND r.id OPERATOR(pg_catalog.=) $2",
			  5, types);
	values[3] = a->c.backoff;
	values[4] = a->c.backoff_max;
	if (SPI_execute_plan(again_plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "retry update failed");
	a->result = "retry";
	return true;
}

#define IN_BATCH_EVENT \
	" FROM fincore.outbox_events e" \
	" WHERE e.seq OPERATOR(pg_catalog.=) $1 AND e.id OPERATOR(pg_catalog.=) $2" \
	"   AND pg_catalog.pg_visible_in_snapshot(e.txid, $3)" \
	"   AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, $4)" \
	"   AND ($5 OR e.topic OPERATOR(pg_catalog.=) ANY ($6))" \
	"   AND ($7::pg_catalog.uuid IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) $7)"

static void
ack_as_owner(void *arg)
{
	static SPIPlanPtr unretry_plan = NULL;
	static SPIPlanPtr check_plan = NULL;
	static SPIPlanPtr retry_plan = NULL;
	static SPIPlanPtr bury_plan = NULL;
	AckArgs    *a = arg;
	Consumer   *c = &a->c;
	Oid			types[10] = {INT8OID, UUIDOID, PG_SNAPSHOTOID, PG_SNAPSHOTOID, BOOLOID, TEXTARRAYOID,
	UUIDOID, TEXTOID, INTERVALOID, TEXTOID};
	Datum		values[10];
	char		nulls[10] = "          ";
	int64		seq;
	SPIPlanPtr	plan;
	int			expect;

	fincore_spi_connect();
	consumer_load(c, a->trusted);

	/* A retried event: ack forgets it, nack counts the failure. */
	if (a->nack)
	{
		if (nack_retry(a))
		{
			SPI_finish();
			return;
		}
	}
	else
	{
		Oid			rtypes[2] = {TEXTOID, UUIDOID};
		Datum		rvalues[2] = {PointerGetDatum(c->name), UUIDPGetDatum(a->event_id)};

		kept_plan(&unretry_plan,
				  "DELETE FROM fincore.outbox_retries r"
				  " WHERE r.consumer OPERATOR(pg_catalog.=) $1 AND r.id OPERATOR(pg_catalog.=) $2",
				  2, rtypes);
		if (SPI_execute_plan(unretry_plan, rvalues, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "retry delete failed");
		if (SPI_processed > 0)
		{
			SPI_finish();
			return;
		}
	}

	/* An event of the open batch, after the last acknowledged one. */
	if (!event_id_seq(a->event_id, &seq))
		not_pending(c, a->event_id, "It is not an outbox event id.");
	if (!c->has_batch)
		not_pending(c, a->event_id, "The consumer has no events in flight: it was acknowledged already, or not delivered yet.");
	if (seq <= c->batch_acked)
		not_pending(c, a->event_id, "It was acknowledged already.");
	if (seq > c->batch_last)
		not_pending(c, a->event_id, "It was not delivered to this consumer yet.");

	values[0] = Int64GetDatum(seq);
	values[1] = UUIDPGetDatum(a->event_id);
	values[2] = c->batch_end;
	values[3] = c->position;
	values[4] = BoolGetDatum(c->all_topics);
	values[5] = c->topics;
	values[6] = UUIDPGetDatum(&c->scope);
	if (!c->scoped)
		nulls[6] = 'n';
	values[7] = PointerGetDatum(c->name);
	values[8] = c->backoff;
	values[9] = a->error ? PointerGetDatum(a->error) : (Datum) 0;
	if (a->error == NULL)
		nulls[9] = 'n';
	if (!a->nack)
	{
		plan = kept_plan(&check_plan, "SELECT 1" IN_BATCH_EVENT, 7, types);
		expect = SPI_OK_SELECT;
	}
	else if (c->max_attempts > 1)
	{
		plan = kept_plan(&retry_plan,
						 "INSERT INTO fincore.outbox_retries (consumer, id, seq, tenant_id, topic, type,"
						 "       aggregatetype, aggregateid, payload, headers, created_at, attempts,"
						 "       next_attempt_at, last_error)"
						 " SELECT $8, " EVENT_COLUMNS ", 1,"
						 "       pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $9, $10" IN_BATCH_EVENT,
						 10, types);
		expect = SPI_OK_INSERT;
		a->result = "retry";
	}
	else
	{
		plan = kept_plan(&bury_plan,
						 "INSERT INTO fincore.dead_events (consumer, id, seq, tenant_id, topic, type,"
						 "       aggregatetype, aggregateid, payload, headers, created_at, attempts, last_error)"
						 " SELECT $8, " EVENT_COLUMNS ", 1, $10" IN_BATCH_EVENT,
						 10, types);
		expect = SPI_OK_INSERT;
		a->result = "dead";
	}
	if (SPI_execute_plan(plan, values, nulls, false, 0) != expect)
		elog(ERROR, "ack failed");
	if (SPI_processed != 1)
		not_pending(c, a->event_id, "It is not in the batch delivered to this consumer.");

	c->batch_acked = seq;
	c->dirty = true;
	if (seq == c->batch_last)
		close_batch(c);
	consumer_store(c);
	SPI_finish();
}

static void
ack_common(FunctionCallInfo fcinfo, AckArgs *a)
{
	a->c.name = PG_GETARG_TEXT_PP(0);
	a->event_id = PG_GETARG_UUID_P(1);
	a->trusted = caller_is_trusted();
	if (!cache_watch_valid(&state_watch) || !OidIsValid(state.events_relid))
		state.events_relid = fincore_table_oid("outbox_events");
	fincore_run_as_owner(state.events_relid, ack_as_owner, a);
}

PG_FUNCTION_INFO_V1(fincore_ack);
Datum
fincore_ack(PG_FUNCTION_ARGS)
{
	AckArgs		a;

	memset(&a, 0, sizeof(a));
	ack_common(fcinfo, &a);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(fincore_nack);
Datum
fincore_nack(PG_FUNCTION_ARGS)
{
	AckArgs		a;

	memset(&a, 0, sizeof(a));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_ACK),
				 errmsg("nack needs a consumer and an event id")));
	a.nack = true;
	a.error = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	ack_common(fcinfo, &a);
	PG_RETURN_TEXT_P(cstring_to_text(a.result));
}

/* ---- inbox ---- */

typedef struct InboxArgs
{
	pg_uuid_t	tenant;
	text	   *source;
	text	   *message_id;
	Jsonb	   *payload;		/* may be NULL */
	bool		accepted;		/* out */
	/* accept_webhook: enqueue on this queue when fincore.enqueue exists */
	text	   *queue;
	bool		enqueued;		/* out */
	int64		job_id;			/* out */
	bool		job_id_null;	/* out */
} InboxArgs;

static inline void
check_inbox_text(const char *what, text *t)
{
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len < 1 || len > INBOX_TEXT_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("inbox %s must be 1-%d bytes, not %d", what, INBOX_TEXT_MAX_LEN, len)));
}

static Oid
enqueue_function(void)
{
	Oid			argtypes[6] = {TEXTOID, JSONBOID, TIMESTAMPTZOID, INT2OID, INT4OID, TEXTOID};

	return LookupFuncName(list_make2(makeString("fincore"), makeString("enqueue")), 6, argtypes, true);
}

static void
inbox_as_owner(void *arg)
{
	static SPIPlanPtr plan = NULL;
	InboxArgs  *a = arg;
	Oid			types[4] = {UUIDOID, TEXTOID, TEXTOID, JSONBOID};
	Datum		values[4];
	char		nulls[4] = "    ";

	fincore_spi_connect();
	kept_plan(&plan,
			  "INSERT INTO fincore.inbox (tenant_id, source, message_id, payload) VALUES ($1, $2, $3, $4)"
			  " ON CONFLICT ON CONSTRAINT inbox_pkey DO NOTHING",
			  4, types);
	values[0] = UUIDPGetDatum(&a->tenant);
	values[1] = PointerGetDatum(a->source);
	values[2] = PointerGetDatum(a->message_id);
	values[3] = a->payload ? JsonbPGetDatum(a->payload) : (Datum) 0;
	if (a->payload == NULL)
		nulls[3] = 'n';
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "inbox insert failed");
	a->accepted = SPI_processed == 1;

	/* The Job-queue module may or may not be installed: look at call time. */
	if (a->accepted && a->queue != NULL && OidIsValid(enqueue_function()))
	{
		Oid			qtypes[3] = {TEXTOID, JSONBOID, TEXTOID};
		Datum		qvalues[3] = {PointerGetDatum(a->queue), JsonbPGetDatum(a->payload),
		PointerGetDatum(a->message_id)};
		bool		isnull;

		if (SPI_execute_with_args("SELECT fincore.enqueue($1, $2, pg_catalog.now(), 0::pg_catalog.int2, 25, $3)",
								  3, qtypes, qvalues, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "fincore.enqueue failed");
		a->enqueued = true;
		a->job_id = DatumGetInt64(spi_value(0, 1, &isnull));
		a->job_id_null = isnull;
	}
	SPI_finish();
}

static void
inbox_record(InboxArgs *a)
{
	tenancy_require_tenant(&a->tenant);
	fincore_run_as_owner(fincore_table_oid("inbox"), inbox_as_owner, a);
}

PG_FUNCTION_INFO_V1(fincore_inbox_accept);
Datum
fincore_inbox_accept(PG_FUNCTION_ARGS)
{
	InboxArgs	a;

	memset(&a, 0, sizeof(a));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("inbox source and message id must not be null")));
	a.source = PG_GETARG_TEXT_PP(0);
	a.message_id = PG_GETARG_TEXT_PP(1);
	a.payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	check_inbox_text("source", a.source);
	check_inbox_text("message id", a.message_id);
	if (a.payload != NULL)
		check_payload_size(VARSIZE(a.payload), ERRCODE_FC_INVALID_INBOX_ARGUMENT, "an inbox payload");
	inbox_record(&a);
	PG_RETURN_BOOL(a.accepted);
}

/* ---- webhooks ---- */

#define MAX_SIGNATURES 8

typedef struct SignatureHeader
{
	int64		t;
	int			nsig;
	uint8		sig[MAX_SIGNATURES][HMAC_SHA256_LEN];
} SignatureHeader;

static void
bad_header(const char *header, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_SIGNATURE_HEADER),
			 errmsg("invalid webhook signature header: %s", why),
			 errdetail("Header: \"%.100s\".", header),
			 errhint("Expected t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=...].")));
}

/*
 * Parse "t=1700000000,v1=<64 hex>,v1=...,v0=...": exactly one t, at least one
 * v1; other schemes are ignored, as are v1 values that cannot be a SHA-256
 * MAC (they could never match).
 */
static void
parse_signature_header(const char *header, SignatureHeader *h)
{
	const char *p = header;
	bool		have_t = false;
	int			v1_seen = 0;

	h->nsig = 0;
	while (*p)
	{
		const char *item = p;
		const char *end = strchr(p, ',');
		const char *eq;
		int			len;

		if (end == NULL)
			end = p + strlen(p);
		while (item < end && *item == ' ')
			item++;
		len = (int) (end - item);
		eq = memchr(item, '=', len);
		if (eq == NULL)
			bad_header(header, "an item without '='");
		if (eq - item == 1 && item[0] == 't')
		{
			int64		t = 0;
			const char *d = eq + 1;

			if (have_t)
				bad_header(header, "more than one timestamp");
			if (d == end || end - d > 12)
				bad_header(header, "the timestamp is not a number of seconds");
			for (; d < end; d++)
			{
				if (*d < '0' || *d > '9')
					bad_header(header, "the timestamp is not a number of seconds");
				t = t * 10 + (*d - '0');
			}
			h->t = t;
			have_t = true;
		}
		else if (eq - item == 2 && item[0] == 'v' && item[1] == '1')
		{
			const char *d = eq + 1;

			v1_seen++;
			if (end - d == 2 * HMAC_SHA256_LEN && h->nsig < MAX_SIGNATURES)
			{
				bool		ok = true;

				for (int i = 0; i < HMAC_SHA256_LEN && ok; i++)
				{
					int			hi = hex_digit(d[2 * i]);
					int			lo = hex_digit(d[2 * i + 1]);

					ok = hi >= 0 && lo >= 0;
					h->sig[h->nsig][i] = (uint8) (hi << 4 | lo);
				}
				if (ok)
					h->nsig++;
			}
		}
		p = *end ? end + 1 : end;
	}
	if (!have_t)
		bad_header(header, "no timestamp (t=)");
	if (v1_seen == 0)
		bad_header(header, "no v1 signature");
}

/* Compare without an early exit: the time taken does not depend on where they differ. */
static bool
equal_constant_time(const uint8 *a, const uint8 *b, int len)
{
	volatile uint8 diff = 0;

	for (int i = 0; i < len; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* pgcrypto's hmac(bytea, bytea, text), found through the extension (not the search_path). */
static Oid
pgcrypto_hmac(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Oid			fn;

	fincore_spi_connect();
	kept_plan(&plan,
			  "SELECT p.oid FROM pg_catalog.pg_depend d"
			  "  JOIN pg_catalog.pg_extension x ON x.oid OPERATOR(pg_catalog.=) d.refobjid"
			  "  JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) d.objid"
			  " WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass"
			  "   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
			  "   AND d.deptype OPERATOR(pg_catalog.=) 'e' AND x.extname OPERATOR(pg_catalog.=) 'pgcrypto'"
			  "   AND p.proname OPERATOR(pg_catalog.=) 'hmac'"
			  "   AND p.proargtypes OPERATOR(pg_catalog.=) '17 17 25'::pg_catalog.oidvector",
			  0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pgcrypto look-up failed");
	if (SPI_processed != 1)
		elog(ERROR, "pgcrypto's hmac(bytea, bytea, text) was not found");
	fn = DatumGetObjectId(spi_value(0, 1, &isnull));
	SPI_finish();
	return fn;
}

static bool
signature_matches(const SignatureHeader *h, text *payload, text *secret)
{
	char		prefix[32];
	int			plen = snprintf(prefix, sizeof(prefix), INT64_FORMAT ".", h->t);
	int			len = VARSIZE_ANY_EXHDR(payload);
	bytea	   *message = palloc(VARHDRSZ + plen + len);
	bytea	   *key = palloc(VARHDRSZ + VARSIZE_ANY_EXHDR(secret));
	bytea	   *mac;
	bool		match = false;

	SET_VARSIZE(message, VARHDRSZ + plen + len);
	memcpy(VARDATA(message), prefix, plen);
	memcpy(VARDATA(message) + plen, VARDATA_ANY(payload), len);
	SET_VARSIZE(key, VARHDRSZ + VARSIZE_ANY_EXHDR(secret));
	memcpy(VARDATA(key), VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret));
	mac = DatumGetByteaPP(OidFunctionCall3(pgcrypto_hmac(), PointerGetDatum(message), PointerGetDatum(key),
										   CStringGetTextDatum("sha256")));
	if (VARSIZE_ANY_EXHDR(mac) != HMAC_SHA256_LEN)
		elog(ERROR, "hmac returned %d bytes, not %d", (int) VARSIZE_ANY_EXHDR(mac), HMAC_SHA256_LEN);
	/* Every candidate is compared in full, whether or not an earlier one matched. */
	for (int i = 0; i < h->nsig; i++)
		match |= equal_constant_time((const uint8 *) VARDATA_ANY(mac), h->sig[i], HMAC_SHA256_LEN);
	return match;
}

static int64
interval_usecs(Interval *iv)
{
	int128		us = (int128) iv->time + (int128) iv->day * USECS_PER_DAY +
		(int128) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;

	return us > PG_INT64_MAX ? PG_INT64_MAX : us < PG_INT64_MIN ? PG_INT64_MIN : (int64) us;
}

PG_FUNCTION_INFO_V1(fincore_accept_webhook);
Datum
fincore_accept_webhook(PG_FUNCTION_ARGS)
{
	text	   *provider;
	text	   *payload;
	char	   *header;
	text	   *secret;
	int64		tolerance;
	SignatureHeader h;
	int64		now_s;
	Jsonb	   *volatile json = NULL;
	JsonbValue	idv;
	InboxArgs	a;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	char	   *plain;
	int			plen;

	memset(&a, 0, sizeof(a));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("webhook provider, secret and tolerance must not be null")));
	provider = PG_GETARG_TEXT_PP(0);
	plain = text_to_cstring(provider);
	plen = strlen(plain);
	if (plen < 1 || plen > 63 || !outbox_name_ok(plain, plen, 63) || strpbrk(plain, ":/") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("invalid webhook provider: \"%.64s\"", plain),
				 errhint("A provider is a short name such as stripe: 1-63 characters of [A-Za-z0-9._-].")));
	secret = PG_GETARG_TEXT_PP(3);
	if (VARSIZE_ANY_EXHDR(secret) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("webhook secret must not be empty")));
	tolerance = interval_usecs(PG_GETARG_INTERVAL_P(4));
	if (tolerance < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("webhook tolerance must not be negative")));
	if (PG_ARGISNULL(2))
		bad_header("", "no header");
	header = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_WEBHOOK_PAYLOAD),
				 errmsg("webhook payload must not be null")));
	payload = PG_GETARG_TEXT_PP(1);
	check_payload_size(VARSIZE_ANY_EXHDR(payload), ERRCODE_FC_INVALID_WEBHOOK_PAYLOAD, "a webhook payload");

	/* 1. The signature, over the payload exactly as received. */
	parse_signature_header(header, &h);
	if (!signature_matches(&h, payload, secret))
		ereport(ERROR,
				(errcode(ERRCODE_FC_SIGNATURE_MISMATCH),
				 errmsg("webhook signature does not match"),
				 errdetail("None of the %d v1 signature(s) is the HMAC-SHA256 of the timestamp and payload under the secret.",
						   h.nsig),
				 errhint("Check the endpoint secret, and pass the request body unchanged.")));

	/* 2. The timestamp, against replays of an old delivery. */
	now_s = (GetCurrentTimestamp() / USECS_PER_SEC) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
	if ((int128) (now_s - h.t) * USECS_PER_SEC > tolerance || (int128) (h.t - now_s) * USECS_PER_SEC > tolerance)
		ereport(ERROR,
				(errcode(ERRCODE_FC_STALE_WEBHOOK),
				 errmsg("webhook timestamp " INT64_FORMAT " is " INT64_FORMAT " seconds from now, beyond the tolerance",
						h.t, now_s - h.t),
				 errhint("A delivery is accepted within the tolerance (default 5 minutes) of its signing time.")));

	/* 3. The event id inside the payload. */
	PG_TRY();
	{
		json = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text_to_cstring(payload))));
	}
	PG_CATCH();
	{
		FlushErrorState();
		json = NULL;
	}
	PG_END_TRY();
	if (json == NULL || !JB_ROOT_IS_OBJECT(json) || JB_ROOT_IS_SCALAR(json) ||
		getKeyJsonValueFromContainer(&json->root, "id", 2, &idv) == NULL ||
		idv.type != jbvString || idv.val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_WEBHOOK_PAYLOAD),
				 errmsg("webhook payload is not a JSON object with a string \"id\""),
				 errhint("The event id inside the payload is what deduplicates deliveries.")));

	/* 4. Once per (tenant, provider, event id); enqueued when the job queue exists. */
	a.source = cstring_to_text(psprintf("webhook:%s", plain));
	a.queue = a.source;
	a.message_id = cstring_to_text_with_len(idv.val.string.val, idv.val.string.len);
	check_inbox_text("message id", a.message_id);
	a.payload = json;
	inbox_record(&a);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "accept_webhook must return a record");
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = PointerGetDatum(a.message_id);
	values[1] = BoolGetDatum(a.accepted);
	values[2] = Int64GetDatum(a.job_id);
	nulls[2] = !a.enqueued || a.job_id_null;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
