/*
 * outbox_core.c — what the outbox's files share: statement helpers, the cached
 * state (relations, current slot, notification), event ids, and the
 * snapshots that subscribe and retention take.
 */
#include "outbox_int.h"

#include "cache_watch.h"
#include "wakeup.h"

#include "catalog/namespace.h"
#include "common/pg_prng.h"
#include "executor/tstoreReceiver.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

/* ---- small helpers ---- */

SPIPlanPtr
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
 * fincore_execute_indexed, with the rows going straight into out (a set-returning
 * function's tuplestore, in cxt) instead of through SPI's table and a copy:
 * poll's rows are its result.  How many rows.
 */
uint64
execute_indexed_into(SPIPlanPtr plan, int nargs, const Oid *types, const Datum *values, const char *nulls,
					 Tuplestorestate *out, MemoryContext cxt)
{
	SPIExecuteOptions opts;
	ParamListInfo params = makeParamList(nargs);
	DestReceiver *dest = CreateDestReceiver(DestTuplestore);
	int			nest;
	int			rc;

	for (int i = 0; i < nargs; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = nulls != NULL && nulls[i] == 'n';
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = types[i];
	}
	SetTuplestoreDestReceiverParams(dest, out, cxt, false, NULL, NULL);
	memset(&opts, 0, sizeof(opts));
	opts.params = params;
	opts.dest = dest;
	nest = fincore_indexed_plans_only(0);
	rc = SPI_execute_plan_extended(plan, &opts);
	AtEOXact_GUC(true, nest);
	dest->rDestroy(dest);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "event read failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

Datum
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

/* ---- a dump restored into another cluster ---- */

/*
 * The seq at or below which events came with a dump and were rebased
 * (fincore._outbox_restore_check); -1 until this backend has checked.  A
 * database is restored before any backend of it writes or reads events, so
 * one check a backend is enough, once the transaction that rebased has
 * committed: a check that rebased just now is not cached.
 */
static int64 restore_floor = -1;

int64
outbox_restore_floor(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	int64		seq_floor;

	if (restore_floor >= 0)
		return restore_floor;
	/*
	 * On Citus the coordinator writes and reads events and a restore is the
	 * cluster's own affair (docs/scale-out.md); under 0.1.0's SQL, which this
	 * library serves until ALTER EXTENSION UPDATE, there is nothing to check.
	 */
	if (fincore_citus_preloaded() ||
		!OidIsValid(get_relname_relid("outbox_restores", get_namespace_oid("fincore", false))))
		return restore_floor = 0;
	kept_plan(&plan, "SELECT r.seq_floor, r.rebased_now FROM fincore._outbox_restore_check() r", 0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "outbox restore check failed");
	seq_floor = DatumGetInt64(spi_value(0, 1, &isnull));
	if (!DatumGetBool(spi_value(0, 2, &isnull)))
		restore_floor = seq_floor;
	return seq_floor;
}

uint64
outbox_wakeup_topic(void)
{
	static uint64 topic = 0;

	/* A backend serves one database: hash once. */
	if (topic == 0)
		topic = wakeup_topic("outbox", "events");
	return topic;
}

bool
outbox_restore_checked(void)
{
	return restore_floor >= 0;
}

/* ---- cached state: relations, current slot, settings ---- */

OutboxState state;
CacheWatch	state_watch;		/* outbox_events, outbox_slots, outbox_config, the partitions */

/* Load the state with a snapshot taken now (the transaction's may predate a rotation).
 * SPI connected, as the owner. */
void
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
int
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

/* The event id of seq at time at, with 12 bits of rand. */
static void
event_id_build(int64 seq, TimestampTz at, uint32 rand, pg_uuid_t *out)
{
	uint64		ms = (uint64) ((at + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY) / 1000);

	for (int i = 0; i < 6; i++)
		out->data[i] = (unsigned char) (ms >> (8 * (5 - i)));
	out->data[6] = (unsigned char) (0x70 | ((rand >> 8) & 0x0F));	/* version 7 */
	out->data[7] = (unsigned char) rand;
	out->data[8] = (unsigned char) (0x80 | ((uint64) seq >> 56 & 0x3F));	/* variant 10 */
	for (int i = 9; i < 16; i++)
		out->data[i] = (unsigned char) ((uint64) seq >> (8 * (15 - i)));
}

void
event_id_make(int64 seq, pg_uuid_t *out)
{
	event_id_build(seq, GetCurrentTimestamp(), pg_prng_uint32(&pg_global_prng_state), out);
}

/*
 * A transfer event's id, the same at every read: the transfer's time, and
 * bits of its seq where another event has random ones.
 */
PG_FUNCTION_INFO_V1(fincore_ledger_event_id);
Datum
fincore_ledger_event_id(PG_FUNCTION_ARGS)
{
	int64		seq = PG_GETARG_INT64(0);
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(1);
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	/* A UUIDv7 holds 48 bits of milliseconds since 1970: a transfer's time always fits. */
	if (TIMESTAMP_NOT_FINITE(at) || at < -((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_EVENT),
				 errmsg("an event id needs a time from 1970 on, not %s",
						DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(at))))));
	event_id_build(seq, at, (uint32) ((uint64) seq * UINT64CONST(0x9E3779B97F4A7C15) >> 32), id);
	PG_RETURN_UUID_P(id);
}

/* The seq of an event id; false if it cannot be one. */
bool
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
