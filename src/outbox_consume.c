/*
 * outbox_consume.c — named consumers: subscribe, poll a snapshot batch, ack and nack,
 * dead letters and lag.
 */
#include "outbox_int.h"

#include "cache_watch.h"
#include "wakeup.h"

#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

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
	int32		partitions;		/* of a partitioned consumer: how many (else 0) */
	int32		partition_no;	/* and which one this is, 0 to partitions - 1 */
	int64		seq_floor;		/* events up to it came with a restored dump (outbox_restores) */
	bool		dirty;			/* write back */
	bool		moved;			/* position changed */
} Consumer;

/*
 * Where consumers read events: fincore.outbox_stream, the outbox's rows and
 * the ledger's transfer rows (0.2.0); fincore.outbox_events under 0.1.0's SQL,
 * which this library serves until ALTER EXTENSION UPDATE, and on Citus, where
 * the ledger writes its events as outbox rows on the coordinator
 * (docs/scale-out.md).  The index of each statement's plan in its array of two.
 */
static const char *const event_relations[2] = {"fincore.outbox_events", "fincore.outbox_stream"};

static int
event_source(void)
{
	if (fincore_citus_preloaded())
		return 0;
	return OidIsValid(get_relname_relid("outbox_stream", get_namespace_oid("fincore", false))) ? 1 : 0;
}

/* The plan of fmt, whose one %s is the relation events are read from. */
static SPIPlanPtr
event_plan(SPIPlanPtr *plans, const char *fmt, int nargs, Oid *types)
{
	int			source = event_source();

	if (plans[source] == NULL)
		kept_plan(&plans[source], psprintf(fmt, event_relations[source]), nargs, types);
	return plans[source];
}

/*
 * The partition filter of a partitioned consumer's statements, whose
 * parameters $11 and $12 are its partition count and number.  Every statement
 * that reads a consumer's events has a plan with it and one without (plans[0]
 * and plans[1] are without, plans[2] and plans[3] with): a consumer of one
 * partition pays for the hash, the others do not.
 */
#define PARTITION_FILTER \
	" AND fincore.event_partition(e.tenant_id, e.aggregatetype, e.aggregateid, $11)" \
	" OPERATOR(pg_catalog.=) $12"
#define PARTITION_NARGS 12

/*
 * The plan of fmt for consumer c: fmt's first %s is the relation events are
 * read from, its second where the partition filter goes.  types has room for
 * PARTITION_NARGS; the filter's two are filled in here.
 */
static SPIPlanPtr
consumer_event_plan(const Consumer *c, SPIPlanPtr *plans, const char *fmt, int nargs, Oid *types)
{
	int			source = event_source();
	int			k = c->partitions > 0 ? 2 + source : source;

	if (plans[k] == NULL)
	{
		if (c->partitions > 0)
		{
			for (int i = nargs; i < PARTITION_NARGS; i++)
				types[i] = INT4OID;
			kept_plan(&plans[k], psprintf(fmt, event_relations[source], PARTITION_FILTER),
					  PARTITION_NARGS, types);
		}
		else
			kept_plan(&plans[k], psprintf(fmt, event_relations[source], ""), nargs, types);
	}
	return plans[k];
}

/* The partition parameters ($11, $12) of c's statements, in arrays of PARTITION_NARGS. */
static void
consumer_partition_args(const Consumer *c, Datum *values, char *nulls)
{
	values[10] = Int32GetDatum(c->partitions);
	values[11] = Int32GetDatum(c->partition_no);
	nulls[10] = nulls[11] = ' ';
}


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

/* Has fincore.outbox_consumers the partition columns?  Not under 0.1.0's SQL. */
static bool
consumers_have_partitions(void)
{
	return get_attnum(fincore_table_oid("outbox_consumers"), "partitions") != InvalidAttrNumber;
}

/* Lock and read the consumer row; check the caller may use it.  SPI connected, as owner. */
static void
consumer_load(Consumer *c, bool trusted)
{
	static SPIPlanPtr plans[2];
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {PointerGetDatum(c->name)};
	bool		isnull;
	pg_uuid_t	tenant;
	int			k = consumers_have_partitions() ? 1 : 0;

	/* 0.1.0's SQL (until ALTER EXTENSION UPDATE) has no partitioned consumers. */
	if (plans[k] == NULL)
		kept_plan(&plans[k],
				  psprintf("SELECT c.topics, '*' OPERATOR(pg_catalog.=) ANY (c.topics), c.tenant_scope, c.position,"
						   "       c.positioned_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 second'::pg_catalog.interval),"
						   "       c.batch_end, c.batch_acked, c.batch_last, c.max_attempts, c.backoff, c.backoff_max, %s"
						   "  FROM fincore.outbox_consumers c WHERE c.name OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE",
						   k ? "c.partitions, c.partition_no" : "NULL::pg_catalog.int4, NULL::pg_catalog.int4"),
				  1, types);
	if (SPI_execute_plan(plans[k], values, NULL, false, 1) != SPI_OK_SELECT)
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
	{
		Datum		partitions = spi_value(0, 12, &isnull);

		c->partitions = isnull ? 0 : DatumGetInt32(partitions);
		c->partition_no = c->partitions > 0 ? DatumGetInt32(spi_value(0, 13, &isnull)) : 0;
	}
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
	static SPIPlanPtr bounds_plans[4];
	SPIPlanPtr	bounds_plan;
	Oid			snap_types[1] = {PG_SNAPSHOTOID};
	Oid			types[PARTITION_NARGS] = {PG_SNAPSHOTOID, PG_SNAPSHOTOID, BOOLOID, TEXTARRAYOID, UUIDOID, INT8OID};
	Datum		values[PARTITION_NARGS];
	char		nulls[PARTITION_NARGS + 1] = "            ";
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

	bounds_plan = consumer_event_plan(c, bounds_plans,
			  "SELECT pg_catalog.min(b.seq), pg_catalog.max(b.seq) FROM (SELECT e.seq FROM %s e"
			  " WHERE ((e.txid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmax($1)"
			  "         AND e.txid OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmax($2))"
			  "        OR e.txid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip($1))))"
			  "   AND pg_catalog.pg_visible_in_snapshot(e.txid, $2)"
			  "   AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, $1)"
			  "   AND ($3 OR e.topic OPERATOR(pg_catalog.=) ANY ($4))"
			  "   AND ($5::pg_catalog.uuid IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) $5)"
			  "   AND e.seq OPERATOR(pg_catalog.>) $6%s OFFSET 0) AS b",
			  6, types);
	values[0] = c->position;
	values[1] = cur;
	values[2] = BoolGetDatum(c->all_topics);
	values[3] = c->topics;
	values[4] = UUIDPGetDatum(&c->scope);
	values[5] = Int64GetDatum(c->seq_floor);
	if (!c->scoped)
		nulls[4] = 'n';
	consumer_partition_args(c, values, nulls);
	if (fincore_execute_indexed(bounds_plan, values, nulls, 1, 0) != SPI_OK_SELECT || SPI_processed != 1)
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

/* Append up to max events of the open batch after batch_acked to out (in cxt); how many. */
static uint64
read_batch(Consumer *c, int max, Tuplestorestate *out, MemoryContext cxt)
{
	static SPIPlanPtr plans[4];
	SPIPlanPtr	plan;
	Oid			types[PARTITION_NARGS] = {INT8OID, INT8OID, PG_SNAPSHOTOID, PG_SNAPSHOTOID, BOOLOID, TEXTARRAYOID,
	UUIDOID, INT4OID};
	Datum		values[PARTITION_NARGS];
	char		nulls[PARTITION_NARGS + 1] = "            ";

	plan = consumer_event_plan(c, plans,
			  "SELECT " EVENT_COLUMNS ", 0 FROM %s e"
			  " WHERE e.seq OPERATOR(pg_catalog.>) $1 AND e.seq OPERATOR(pg_catalog.<=) $2"
			  "   AND pg_catalog.pg_visible_in_snapshot(e.txid, $3)"
			  "   AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, $4)"
			  "   AND ($5 OR e.topic OPERATOR(pg_catalog.=) ANY ($6))"
			  "   AND ($7::pg_catalog.uuid IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) $7)%s"
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
	consumer_partition_args(c, values, nulls);
	for (int i = 8; i < PARTITION_NARGS; i++)
		types[i] = INT4OID;
	return execute_indexed_into(plan, c->partitions > 0 ? PARTITION_NARGS : 8, types, values, nulls, out, cxt);
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
	MemoryContext out_cxt;		/* where out lives */
} PollArgs;

static void
poll_as_owner(void *arg)
{
	PollArgs   *p = arg;
	Consumer   *c = &p->c;
	int			left;

	fincore_spi_connect();
	c->seq_floor = outbox_restore_floor();
	consumer_load(c, p->trusted);
	left = p->max - (int) read_retries(c, p->max, p->out);
	/* At most one batch is finished and one opened per call. */
	for (int pass = 0; left > 0 && pass < 2; pass++)
	{
		if (!c->has_batch && !open_batch(c))
			break;
		if (read_batch(c, left, p->out, p->out_cxt) > 0)
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

	fincore_require_coordinator("an event");
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
	p.out_cxt = rsinfo->econtext->ecxt_per_query_memory;
	if (!cache_watch_valid(&state_watch) || !OidIsValid(state.events_relid))
		state.events_relid = fincore_table_oid("outbox_events");
	fincore_run_as_owner(state.events_relid, poll_as_owner, &p);
	return (Datum) 0;
}

/* ---- partitions ---- */

/*
 * The partition of an event's aggregate among n: every event of one
 * aggregate (tenant, type, id) goes to one partition, so a partition's reader
 * gets each aggregate's events in their order.  PostgreSQL's own hash of the
 * three, so the same on every server of one byte order.
 */
static int32
aggregate_partition(const pg_uuid_t *tenant, const text *type, const text *id, int32 n)
{
	uint64		h = hash_bytes_extended(tenant->data, UUID_LEN, 0);

	h = hash_combine64(h, hash_bytes_extended((const unsigned char *) VARDATA_ANY(type),
											  VARSIZE_ANY_EXHDR(type), 0));
	h = hash_combine64(h, hash_bytes_extended((const unsigned char *) VARDATA_ANY(id),
											  VARSIZE_ANY_EXHDR(id), 0));
	return (int32) (h % (uint64) n);
}

static inline void
check_partitions(int32 n)
{
	if (n < 1 || n > CONSUMER_MAX_PARTITIONS)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CONSUMER),
				 errmsg("invalid number of partitions: %d", n),
				 errhint("A consumer has 1 to %d partitions.", CONSUMER_MAX_PARTITIONS)));
}

PG_FUNCTION_INFO_V1(fincore_event_partition);
Datum
fincore_event_partition(PG_FUNCTION_ARGS)
{
	int32		n = PG_GETARG_INT32(3);

	check_partitions(n);
	PG_RETURN_INT32(aggregate_partition(PG_GETARG_UUID_P(0), PG_GETARG_TEXT_PP(1), PG_GETARG_TEXT_PP(2), n));
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
	" FROM %s e" \
	" WHERE e.seq OPERATOR(pg_catalog.=) $1 AND e.id OPERATOR(pg_catalog.=) $2" \
	"   AND pg_catalog.pg_visible_in_snapshot(e.txid, $3)" \
	"   AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, $4)" \
	"   AND ($5 OR e.topic OPERATOR(pg_catalog.=) ANY ($6))" \
	"   AND ($7::pg_catalog.uuid IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) $7)%s"

static void
ack_as_owner(void *arg)
{
	static SPIPlanPtr unretry_plan = NULL;
	static SPIPlanPtr check_plans[4];
	static SPIPlanPtr retry_plans[4];
	static SPIPlanPtr bury_plans[4];
	AckArgs    *a = arg;
	Consumer   *c = &a->c;
	Oid			types[PARTITION_NARGS] = {INT8OID, UUIDOID, PG_SNAPSHOTOID, PG_SNAPSHOTOID, BOOLOID, TEXTARRAYOID,
	UUIDOID, TEXTOID, INTERVALOID, TEXTOID};
	Datum		values[PARTITION_NARGS];
	char		nulls[PARTITION_NARGS + 1] = "            ";
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
	consumer_partition_args(c, values, nulls);
	if (!a->nack)
	{
		plan = consumer_event_plan(c, check_plans, "SELECT 1" IN_BATCH_EVENT, 10, types);
		expect = SPI_OK_SELECT;
	}
	else if (c->max_attempts > 1)
	{
		plan = consumer_event_plan(c, retry_plans,
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
		plan = consumer_event_plan(c, bury_plans,
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
	fincore_require_coordinator("an event");
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

/* ---- waiting for events ---- */

#define WAIT_MAX_US	(USECS_PER_SEC * 3600)

typedef struct WaitArgs
{
	text	   *name;
	bool		trusted;
	bool		pending;		/* out: an event or a due retry is there */
	TimestampTz next_retry;		/* out: when the first later retry falls due (0: none) */
} WaitArgs;

/*
 * Has the consumer anything to poll now?  Its retries that are due, or a
 * committed event its position has not passed (what consumer_lag counts).
 * The consumer row is read, not locked: a poll of it elsewhere goes on.
 * SPI connected, as the owner.
 */
#define PENDING_PARTITION_FILTER \
	" AND (c.partitions IS NULL OR fincore.event_partition(e.tenant_id, e.aggregatetype, e.aggregateid," \
	" c.partitions) OPERATOR(pg_catalog.=) c.partition_no)"

static void
pending_as_owner(void *arg)
{
	WaitArgs   *w = arg;
	static SPIPlanPtr plans[2][2];
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	bool		isnull;
	Datum		scope;
	pg_uuid_t	tenant;
	bool		partitions;

	fincore_spi_connect();
	values[0] = PointerGetDatum(w->name);
	values[1] = Int64GetDatum(outbox_restore_floor());
	/* 0.1.0's SQL (until ALTER EXTENSION UPDATE) has no partitioned consumers. */
	partitions = consumers_have_partitions();
	if (fincore_execute_indexed(event_plan(plans[partitions ? 1 : 0],
								   psprintf("SELECT c.tenant_scope,"
								   "  EXISTS (SELECT 1 FROM fincore.outbox_retries r WHERE r.consumer OPERATOR(pg_catalog.=) c.name"
								   "          AND r.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())"
								   "  OR EXISTS (SELECT 1 FROM %s e"
								   "   WHERE e.seq OPERATOR(pg_catalog.>) $2"
								   "     AND (e.txid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmax(c.position)"
								   "          OR e.txid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip(c.position))))"
								   "     AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, c.position)"
								   "     AND NOT (c.batch_end IS NOT NULL AND pg_catalog.pg_visible_in_snapshot(e.txid, c.batch_end)"
								   "              AND e.seq OPERATOR(pg_catalog.<=) c.batch_acked)"
								   "     AND ('*' OPERATOR(pg_catalog.=) ANY (c.topics) OR e.topic OPERATOR(pg_catalog.=) ANY (c.topics))"
								   "     AND (c.tenant_scope IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) c.tenant_scope)"
								   "%s),"
								   "  (SELECT pg_catalog.min(r.next_attempt_at) FROM fincore.outbox_retries r"
								   "    WHERE r.consumer OPERATOR(pg_catalog.=) c.name)"
								   "  FROM fincore.outbox_consumers c WHERE c.name OPERATOR(pg_catalog.=) $1",
											"%s",
											partitions ? PENDING_PARTITION_FILTER : ""),
								   2, types),
						values, NULL, 1, 0) != SPI_OK_SELECT)
		elog(ERROR, "consumer look-up failed");
	if (SPI_processed == 0)
		unknown_consumer_error(w->name);
	scope = spi_value(0, 1, &isnull);
	/* As poll: another tenant's consumer, or a cross-tenant one for an app role, is unknown. */
	if (!w->trusted &&
		(isnull || !tenancy_current_tenant(&tenant) || memcmp(&tenant, DatumGetUUIDP(scope), sizeof(pg_uuid_t)) != 0))
		unknown_consumer_error(w->name);
	w->pending = DatumGetBool(spi_value(0, 2, &isnull));
	{
		Datum		next = spi_value(0, 3, &isnull);

		w->next_retry = isnull ? 0 : DatumGetTimestampTz(next);
	}
	SPI_finish();
}

/*
 * fincore.wait_for_events(consumer, timeout): true as soon as the consumer has
 * something to poll, false after timeout.  It sleeps on its latch: the commit
 * of a transaction that emitted events (or transfers that carry ledger events)
 * wakes it through the wake-up board (wakeup.c), and it wakes by itself when
 * the first of its retries falls due.
 */
/* One look of wait_for_events, as the owner. */
static bool
events_look(void *arg, TimestampTz *wake_at)
{
	WaitArgs   *w = arg;

	fincore_run_as_owner(state.events_relid, pending_as_owner, w);
	*wake_at = w->next_retry;
	return w->pending;
}

PG_FUNCTION_INFO_V1(fincore_wait_for_events);
Datum
fincore_wait_for_events(PG_FUNCTION_ARGS)
{
	WaitArgs	w = {0};
	Interval   *iv;
	int64		timeout_us;

	fincore_require_coordinator("an event");
	if (PG_ARGISNULL(0))
		unknown_consumer_error(cstring_to_text("NULL"));
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_FC_INVALID_CONSUMER), errmsg("timeout must not be null")));
	w.name = PG_GETARG_TEXT_PP(0);
	iv = PG_GETARG_INTERVAL_P(1);
	timeout_us = (int64) iv->day * USECS_PER_DAY + iv->time;
	if (iv->month != 0 || iv->day < 0 || iv->day > 1 || timeout_us <= 0 || timeout_us > WAIT_MAX_US)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CONSUMER),
				 errmsg("invalid timeout for wait_for_events: %s",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errhint("More than 0 and at most 1 hour.")));
	w.trusted = caller_is_trusted();
	if (!cache_watch_valid(&state_watch) || !OidIsValid(state.events_relid))
		state.events_relid = fincore_table_oid("outbox_events");
	PG_RETURN_BOOL(wakeup_wait_for(outbox_wakeup_topic(), timeout_us, events_look, &w,
								   ERRCODE_FC_INVALID_CONSUMER, "wait_for_events"));
}
