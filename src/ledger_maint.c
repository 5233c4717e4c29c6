/*
 * ledger_maint.c — maintenance: the expiry sweep, the roll-up of hot
 * accounts, and the append-only guard of the ledger's tables.
 */
#include "ledger_int.h"

/*
 * Both sweeps go tenant by tenant: the tenants with work first (a read of
 * every shard, without locks), then each tenant's rows, locked with SKIP
 * LOCKED by statements that name the tenant.  On Citus each of those runs on
 * the tenant's shard (a locking read across shards is refused there); on one
 * node it is an index range of the tenant.
 */
static SPIPlanPtr tenants_with_due_holds_plan = NULL;
static SPIPlanPtr due_holds_plan = NULL;
static SPIPlanPtr tenants_with_deltas_plan = NULL;
static SPIPlanPtr hot_accounts_plan = NULL;
static SPIPlanPtr rollup_plan = NULL;

/* The tenants the statement plan (no arguments) returns, in its first column. */
static pg_uuid_t *
tenants_of(SPIPlanPtr plan, uint64 *n)
{
	pg_uuid_t  *tenants;

	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ledger: finding the tenants to sweep failed");
	*n = SPI_processed;
	tenants = palloc(sizeof(pg_uuid_t) * Max(*n, 1));
	for (uint64 i = 0; i < *n; i++)
	{
		bool		isnull;

		tenants[i] = *DatumGetUUIDP(spi_value(i, 1, &isnull));
	}
	return tenants;
}

/* ---- expire_pending: the sweep ---- */

/*
 * Expire up to max_holds due holds, in every tenant.  The holds of one tenant
 * are expired as one batch run as that tenant, so the engine's tenant checks
 * hold here too.
 */
PG_FUNCTION_INFO_V1(fincore_expire_pending);
Datum
fincore_expire_pending(PG_FUNCTION_ARGS)
{
	int32		max_holds = PG_GETARG_INT32(0);
	int			expired = 0;
	int			budget = max_holds;
	uint64		ntenants;
	pg_uuid_t  *tenants;

	if (max_holds <= 0)
		PG_RETURN_INT32(0);
	fincore_spi_connect();
	if (due_holds_plan == NULL)
	{
		tenants_with_due_holds_plan = ledger_prepare(
			"SELECT DISTINCT h.tenant_id FROM fincore.pending_holds h "
			" WHERE h.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() ORDER BY 1", 0, NULL);
		/* SKIP LOCKED: holds a concurrent sweep is already expiring are left to it. */
		due_holds_plan = ledger_prepare(
			"SELECT h.transfer_id FROM fincore.pending_holds h "
			" WHERE h.tenant_id OPERATOR(pg_catalog.=) $2 "
			"   AND h.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() "
			" ORDER BY h.expires_at LIMIT $1 FOR UPDATE SKIP LOCKED", 2, (Oid[]) {INT4OID, UUIDOID});
	}
	tenants = tenants_of(tenants_with_due_holds_plan, &ntenants);
	for (uint64 t = 0; t < ntenants && budget > 0; t++)
	{
		Datum		args[2] = {Int32GetDatum(budget), UUIDPGetDatum(&tenants[t])};
		LedgerBatch b;
		pg_uuid_t  *ids;

		if (SPI_execute_plan(due_holds_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "ledger: finding due holds failed");
		if (SPI_processed == 0)
			continue;
		memset(&b, 0, sizeof(b));
		b.nitems = (int) SPI_processed;
		ids = palloc(sizeof(pg_uuid_t) * b.nitems);
		for (int i = 0; i < b.nitems; i++)
		{
			bool		isnull;

			ids[i] = *DatumGetUUIDP(spi_value(i, 1, &isnull));
		}
		b.items = palloc0(sizeof(LedgerItem) * b.nitems);
		for (int i = 0; i < b.nitems; i++)
		{
			item_init(&b.items[i], i);
			b.items[i].kind = KIND_EXPIRE;
			b.items[i].ref_id = ids[i];
			item_generate_id(&b.items[i]);
		}
		b.tenant = tenants[t];
		b.tenant_given = true;
		ledger_execute(&b);
		budget -= b.nitems;
		for (int i = 0; i < b.nitems; i++)
			if (b.items[i].result == LR_OK)
				expired++;
	}
	SPI_finish();
	PG_RETURN_INT32(expired);
}

/* ---- rollup_hot_accounts ---- */

/*
 * Fold the deltas of up to max_accounts hot accounts into their rows.  Each
 * account's row is locked first (as a limit-checking leg would lock it), so
 * a reader of "row + deltas" sees the deltas either in the table or in the
 * row, never both: the DELETE and the UPDATE commit together.
 */
PG_FUNCTION_INFO_V1(fincore_rollup_hot_accounts);
Datum
fincore_rollup_hot_accounts(PG_FUNCTION_ARGS)
{
	int32		max_accounts = PG_GETARG_INT32(0);
	int32		rolled = 0;
	uint64		ntenants;
	pg_uuid_t  *tenants;

	if (max_accounts <= 0)
		PG_RETURN_INT32(0);
	fincore_spi_connect();
	if (hot_accounts_plan == NULL)
	{
		tenants_with_deltas_plan = ledger_prepare(
			"SELECT DISTINCT d.tenant_id FROM fincore.account_deltas d ORDER BY 1", 0, NULL);
		hot_accounts_plan = ledger_prepare(
			"SELECT a.id FROM fincore.accounts a "
			" WHERE a.tenant_id OPERATOR(pg_catalog.=) $2 "
			"   AND a.id OPERATOR(pg_catalog.=) ANY (SELECT DISTINCT d.account_id FROM fincore.account_deltas d "
			"                                        WHERE d.tenant_id OPERATOR(pg_catalog.=) $2) "
			" ORDER BY a.id LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED", 2, (Oid[]) {INT4OID, UUIDOID});
		rollup_plan = ledger_prepare(
			"WITH moved AS (DELETE FROM fincore.account_deltas d "
			"                WHERE d.tenant_id OPERATOR(pg_catalog.=) $2 AND d.account_id OPERATOR(pg_catalog.=) $1 "
			"               RETURNING d.debits_pending, d.debits_posted, d.credits_pending, d.credits_posted), "
			"     total AS (SELECT pg_catalog.sum(m.debits_pending) AS dp, pg_catalog.sum(m.debits_posted) AS dpo, "
			"                      pg_catalog.sum(m.credits_pending) AS cp, pg_catalog.sum(m.credits_posted) AS cpo "
			"                 FROM moved m) "
			"UPDATE fincore.accounts a "
			"   SET debits_pending = a.debits_pending OPERATOR(pg_catalog.+) t.dp::bigint, "
			"       debits_posted = a.debits_posted OPERATOR(pg_catalog.+) t.dpo::bigint, "
			"       credits_pending = a.credits_pending OPERATOR(pg_catalog.+) t.cp::bigint, "
			"       credits_posted = a.credits_posted OPERATOR(pg_catalog.+) t.cpo::bigint "
			"  FROM total t "
			" WHERE a.tenant_id OPERATOR(pg_catalog.=) $2 AND a.id OPERATOR(pg_catalog.=) $1 AND t.dp IS NOT NULL",
			2, (Oid[]) {UUIDOID, UUIDOID});
	}
	tenants = tenants_of(tenants_with_deltas_plan, &ntenants);
	for (uint64 t = 0; t < ntenants && rolled < max_accounts; t++)
	{
		Datum		args[2] = {Int32GetDatum(max_accounts - rolled), UUIDPGetDatum(&tenants[t])};
		uint64		n;
		pg_uuid_t  *ids;

		if (SPI_execute_plan(hot_accounts_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "ledger: finding hot accounts failed");
		n = SPI_processed;
		ids = palloc(sizeof(pg_uuid_t) * Max(n, 1));
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;

			ids[i] = *DatumGetUUIDP(spi_value(i, 1, &isnull));
		}
		for (uint64 i = 0; i < n; i++)
		{
			Datum		a2[2] = {UUIDPGetDatum(&ids[i]), UUIDPGetDatum(&tenants[t])};

			if (SPI_execute_plan(rollup_plan, a2, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "ledger: rolling up a hot account failed");
		}
		rolled += (int32) n;
	}
	SPI_finish();
	PG_RETURN_INT32(rolled);
}

/* ---- append-only ---- */

PG_FUNCTION_INFO_V1(fincore_ledger_append_only);
Datum
fincore_ledger_append_only(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *rel;
	const char *what;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "fincore_ledger_append_only: not called as a trigger");
	rel = RelationGetRelationName(trigdata->tg_relation);
	what = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? "updated" :
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ? "deleted" : "truncated";
	if (strcmp(rel, "accounts") == 0 && TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_FC_LEDGER_APPEND_ONLY),
				 errmsg("an account's id, tenant, currency, code, flags and credit limit cannot be changed"),
				 errhint("Create a new account instead.")));
	ereport(ERROR,
			(errcode(ERRCODE_FC_LEDGER_APPEND_ONLY),
			 errmsg("fincore.%s is append-only: rows cannot be %s", rel, what),
			 errdetail("Every movement of money stays on record; a correction is a new transfer (fincore.reverse())."),
			 errhint("See docs/ledger.md, \"Append-only\".")));
	return (Datum) 0;
}
