/*
 * outbox_emit.c — emitting events in the caller's transaction (fincore.emit() and the
 * C API), and the per-tenant ledger events setting.
 */
#include "outbox_int.h"

#include "cache_watch.h"
#include "wakeup.h"

#include "commands/async.h"
#include "commands/sequence.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/xid8.h"

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
 * most AGGREGATE_LOCKS_PER_XACT + OUTBOX_STRIPES such locks.  Stripes are
 * taken in whatever order the aggregates come, so two such bulk transactions
 * at once can deadlock on them: the threshold is set well above what
 * fincore's own batches write (billing_run's 100 renewals write ~200
 * aggregates), and low enough that a few bulk transactions at once fit
 * PostgreSQL's lock table (64 locks a connection by default).
 */
#define AGGREGATE_LOCKS_PER_XACT	512
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
	(void) outbox_restore_floor();
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

	fincore_require_coordinator("an event");
	lock_aggregate(&a->tenant, a->aggregate_type, a->aggregate_id);
	if (!cache_watch_valid(&state_watch) || !OidIsValid(state.events_relid))
		state.events_relid = fincore_table_oid("outbox_events");
	fincore_run_as_owner(state.events_relid, emit_as_owner, a);
	wakeup_at_commit(outbox_wakeup_topic());
	/* PostgreSQL folds identical notifications of a transaction into one. */
	if (a->notify)
		Async_Notify(a->channel, NULL);
}

static void
state_load_as_owner(void *arg pg_attribute_unused())
{
	fincore_spi_connect();
	(void) outbox_restore_floor();
	if (!cache_watch_valid(&state_watch))
		state_load();
	SPI_finish();
}

void
outbox_ledger_event_seqs(int n, int64 *seqs)
{
	if (!cache_watch_valid(&state_watch) || !outbox_restore_checked())
	{
		if (!OidIsValid(state.events_relid))
			state.events_relid = fincore_table_oid("outbox_events");
		fincore_run_as_owner(state.events_relid, state_load_as_owner, NULL);
	}
	for (int i = 0; i < n; i++)
		seqs[i] = nextval_internal(state.seq_relid, false);
	wakeup_at_commit(outbox_wakeup_topic());
	/* Sent at commit, once however often it is asked for. */
	if (state.notify)
		Async_Notify(state.notify_channel, NULL);
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

/* Tenants whose ledger events are off (fincore.outbox_settings). */
static CacheWatch ledger_watch;
static Oid	settings_relid = InvalidOid;
static pg_uuid_t *ledger_off = NULL;
static int	ledger_off_count = 0;
static MemoryContext ledger_cxt = NULL;

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
