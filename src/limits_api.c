/*
 * limits_api.c — the SQL functions of limits and rules written in C:
 * check_rule, backtest_rule (a replay of the tenant's history, with the
 * rule's aggregates counted in memory), limit_window and limit_used (the
 * window arithmetic, for limit_remaining() and tests).
 */
#include "limits_int.h"

PG_FUNCTION_INFO_V1(fincore_check_rule);
Datum
fincore_check_rule(PG_FUNCTION_ARGS)
{
	(void) rules_compile(PG_GETARG_JSONB_P(0));
	PG_RETURN_VOID();
}

typedef struct BacktestQuery
{
	const pg_uuid_t *tenant;
	TimestampTz from;
	TimestampTz to;
	const RuleNode *condition;
	pg_tz	   *tz;
	ReturnSetInfo *rsinfo;
	int			naggs;			/* the condition's aggregates, counted in memory over the history */
	LimitDef   *aggs;
	HTAB	   *counters;		/* BacktestCounter by aggregate and account */
	const RuleFacts *facts;		/* of the transfer being judged */
} BacktestQuery;

typedef struct BacktestKey
{
	int			agg;
	pg_uuid_t	account;
} BacktestKey;

typedef struct BacktestCounter
{
	BacktestKey key;
	LimitCounter counter;
} BacktestCounter;

static LimitCounter *
backtest_counter(BacktestQuery *q, int agg, const pg_uuid_t *account)
{
	BacktestKey key;
	BacktestCounter *e;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.agg = agg;
	key.account = *account;
	e = hash_search(q->counters, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset(&e->counter, 0, sizeof(e->counter));
		e->counter.def = &q->aggs[agg];
	}
	return &e->counter;
}

static int64
backtest_aggregate(void *arg, const RuleNode *node)
{
	BacktestQuery *q = arg;
	const pg_uuid_t *acc = node->agg_side == 'd' ? q->facts->debit : q->facts->credit;

	return limits_used_at(backtest_counter(q, node->agg_index, acc), q->facts->ts);
}

static void
backtest_query(void *arg)
{
	BacktestQuery *q = arg;
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	Portal		portal;

	fincore_spi_connect();
	if (plan == NULL)
	{
		Oid			types[3] = {UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID};

		plan = fincore_prepare("SELECT t.id, t.created_at, t.kind, t.amount, t.code, d.currency, t.debit_account_id, "
							   "       t.credit_account_id, d.code, c.code, t.metadata "
							   "  FROM fincore.transfers t "
							   "  JOIN fincore.accounts d ON d.tenant_id OPERATOR(pg_catalog.=) t.tenant_id "
							   "   AND d.id OPERATOR(pg_catalog.=) t.debit_account_id "
							   "  JOIN fincore.accounts c ON c.tenant_id OPERATOR(pg_catalog.=) t.tenant_id "
							   "   AND c.id OPERATOR(pg_catalog.=) t.credit_account_id "
							   " WHERE t.tenant_id OPERATOR(pg_catalog.=) $1 "
							   "   AND t.kind OPERATOR(pg_catalog.=) ANY ('{posted,pending}'::pg_catalog.text[]) "
							   "   AND t.created_at OPERATOR(pg_catalog.>=) $2 AND t.created_at OPERATOR(pg_catalog.<) $3 "
							   " ORDER BY t.created_at, t.id", 3, types, CURSOR_OPT_CUSTOM_PLAN);
	}
	args[0] = UUIDPGetDatum(q->tenant);
	/* The aggregates' windows reach back before from: count the history they cover first. */
	{
		TimestampTz start = q->from;

		for (int k = 0; k < q->naggs && !TIMESTAMP_NOT_FINITE(q->from); k++)
		{
			/* A calendar window began at most a year (and a day of DST) ago. */
			int64		reach = q->aggs[k].window == LIMIT_WINDOW_TRAILING ? q->aggs[k].window_usecs * 2
				: 367 * USECS_PER_DAY;

			if (q->from - reach < start)
				start = q->from - reach;
		}
		args[1] = TimestampTzGetDatum(start);
	}
	args[2] = TimestampTzGetDatum(q->to);
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			RuleFacts	f;
			text	   *cur;
			Datum		d;
			char	   *kind = TextDatumGetCString(spi_value(r, 3, &isnull));

			f.amount = DatumGetInt64(spi_value(r, 4, &isnull));
			f.code = DatumGetInt32(spi_value(r, 5, &isnull));
			cur = DatumGetTextPP(spi_value(r, 6, &isnull));
			f.currency = currency_pack_or_error(VARDATA_ANY(cur), VARSIZE_ANY_EXHDR(cur));
			f.kind = kind_from_text(kind);
			f.debit = DatumGetUUIDP(spi_value(r, 7, &isnull));
			f.credit = DatumGetUUIDP(spi_value(r, 8, &isnull));
			f.debit_code = DatumGetInt32(spi_value(r, 9, &isnull));
			f.credit_code = DatumGetInt32(spi_value(r, 10, &isnull));
			f.ts = DatumGetTimestampTz(spi_value(r, 2, &isnull));
			d = spi_value(r, 11, &isnull);
			f.metadata = isnull ? NULL : DatumGetJsonbP(d);
			f.aggregate = backtest_aggregate;
			f.aggregate_arg = q;
			q->facts = &f;
			/* Every transfer counts towards the aggregates, as the ledger charges them when made. */
			for (int k = 0; k < q->naggs; k++)
			{
				bool		debit = q->aggs[k].direction == 'd';
				LimitCounter *c = backtest_counter(q, k, debit ? f.debit : f.credit);

				if (q->aggs[k].distinct)
					limits_charge_member(c, f.ts, debit ? f.credit : f.debit);
				else
					(void) limits_charge(c, f.ts, q->aggs[k].counts ? 1 : f.amount);
			}
			if (f.ts >= q->from && rules_eval(q->condition, &f, q->tz))
			{
				Datum		values[5];
				bool		nulls[5] = {false, false, false, false, false};

				values[0] = spi_value(r, 1, &isnull);
				values[1] = spi_value(r, 2, &isnull);
				values[2] = CStringGetTextDatum(kind);
				values[3] = Int64GetDatum(f.amount);
				values[4] = Int32GetDatum(f.code);
				tuplestore_putvalues(q->rsinfo->setResult, q->rsinfo->setDesc, values, nulls);
			}
		}
	}
	SPI_cursor_close(portal);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fincore_backtest_rule);
Datum
fincore_backtest_rule(PG_FUNCTION_ARGS)
{
	pg_uuid_t	tenant;
	BacktestQuery q;
	char	   *tzname;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_RULE),
				 errmsg("invalid backtest: condition, from_time and to_time must not be NULL")));
	tzname = PG_ARGISNULL(3) ? "UTC" : text_to_cstring(PG_GETARG_TEXT_PP(3));
	tenancy_require_tenant(&tenant);
	InitMaterializedSRF(fcinfo, 0);
	q.tenant = &tenant;
	q.condition = rules_compile(PG_GETARG_JSONB_P(0));
	q.from = PG_GETARG_TIMESTAMPTZ(1);
	q.to = PG_GETARG_TIMESTAMPTZ(2);
	q.tz = pg_tzset(tzname);
	if (q.tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_RULE),
				 errmsg("invalid rule: time_zone \"%s\" is not a time zone name such as Europe/Berlin", tzname)));
	q.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	{
		RuleNode  **aggs = NULL;
		HASHCTL		ctl;
		static const pg_uuid_t backtest_id = {{0}};

		q.naggs = rules_aggregates((RuleNode *) q.condition, &aggs);
		q.aggs = palloc0(sizeof(LimitDef) * Max(q.naggs, 1));
		for (int k = 0; k < q.naggs; k++)
		{
			aggs[k]->agg_index = k;
			limits_aggregate_def(&q.aggs[k], &backtest_id, k, aggs[k]->agg, aggs[k]->agg_side,
								 aggs[k]->agg_window_usecs, aggs[k]->agg_calendar, q.tz);
		}
		ctl.keysize = sizeof(BacktestKey);
		ctl.entrysize = sizeof(BacktestCounter);
		ctl.hcxt = CurrentMemoryContext;
		q.counters = hash_create("fincore backtest counters", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	fincore_run_as_owner(fincore_table_oid("transfers"), backtest_query, &q);
	return (Datum) 0;
}

/* ---- the SQL functions over the window arithmetic (limit_remaining(), tests) ---- */

PG_FUNCTION_INFO_V1(fincore_limit_window);
Datum
fincore_limit_window(PG_FUNCTION_ARGS)
{
	LimitDef	def;
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	TimestampTz start,
				end;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(3))
		PG_RETURN_NULL();
	memset(&def, 0, sizeof(def));
	limits_def_window(&def, PG_GETARG_TEXT_PP(0), PG_ARGISNULL(1), PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1),
			   PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "fincore.limit_window: a record was expected");
	limits_window_bounds(&def, PG_GETARG_TIMESTAMPTZ(3), &start, &end);
	values[0] = TimestampTzGetDatum(start);
	values[1] = TimestampTzGetDatum(end);
	nulls[0] = TIMESTAMP_NOT_FINITE(start);
	nulls[1] = TIMESTAMP_NOT_FINITE(end);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(fincore_limit_used);
Datum
fincore_limit_used(PG_FUNCTION_ARGS)
{
	LimitDef	def;
	LimitCounter c;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(7))
		PG_RETURN_NULL();
	memset(&def, 0, sizeof(def));
	memset(&c, 0, sizeof(c));
	limits_def_window(&def, PG_GETARG_TEXT_PP(0), PG_ARGISNULL(1), PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1),
			   PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2));
	c.def = &def;
	c.has_window = !PG_ARGISNULL(3);
	if (c.has_window)
		c.window_start = PG_GETARG_TIMESTAMPTZ(3);
	c.used = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4);
	if (!PG_ARGISNULL(5))
	{
		Datum	   *elems;
		bool	   *nulls;
		int			ne;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(5), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
						  &elems, &nulls, &ne);
		for (int k = 0; k < ne && k < LIMIT_RING_SLOTS; k++)
			c.ring[k] = nulls[k] ? 0 : DatumGetInt64(elems[k]);
		c.has_window = !PG_ARGISNULL(6);
	}
	c.head = PG_ARGISNULL(6) ? 0 : PG_GETARG_INT64(6);
	PG_RETURN_INT64(limits_used_at(&c, PG_GETARG_TIMESTAMPTZ(7)));
}
