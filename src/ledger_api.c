/*
 * ledger_api.c — the SQL-callable ledger: transfer, post_pending,
 * void_pending, reverse and create_transfers.  Argument parsing and result
 * building only; ledger_execute() does the work.
 */
#include "ledger_int.h"

/* ---- SQL entry points ---- */

void
item_init(LedgerItem *it, int index)
{
	memset(it, 0, sizeof(LedgerItem));
	it->index = index;
	it->result = LR_OK;
}

static void
item_set_id(LedgerItem *it, FunctionCallInfo fcinfo, int argno)
{
	if (argno >= 0 && !PG_ARGISNULL(argno))
		it->id = *PG_GETARG_UUID_P(argno);
	else
		item_generate_id(it);
}

static Datum
single_result(FunctionCallInfo fcinfo, LedgerBatch *b)
{
	LedgerItem *it = &b->items[0];
	TupleDesc	desc;
	Datum		v[11];
	bool		isnull[11] = {false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ledger: a composite result is expected");
	desc = BlessTupleDesc(desc);
	v[0] = UUIDPGetDatum(&it->id);
	v[1] = CStringGetTextDatum(it->result == LR_EXISTS ? "exists" : "created");
	v[2] = CStringGetTextDatum(kind_text(it->kind));
	if (it->result == LR_EXISTS)
	{
		v[3] = UUIDPGetDatum(&it->debit);
		v[4] = UUIDPGetDatum(&it->credit);
	}
	else
	{
		v[3] = UUIDPGetDatum(&it->dacc->meta.id);
		v[4] = UUIDPGetDatum(&it->cacc->meta.id);
	}
	v[5] = Int64GetDatum(it->amount);
	v[6] = UUIDPGetDatum(&it->ref_id);
	isnull[6] = !(it->kind == KIND_POST || it->kind == KIND_VOID || it->kind == KIND_EXPIRE);
	v[7] = UUIDPGetDatum(&it->ref_id);
	isnull[7] = it->kind != KIND_REVERSAL;
	v[8] = TimestampTzGetDatum(it->ts);
	v[9] = Int64GetDatum(it->fee);
	isnull[9] = it->fee_schedule == NULL;
	if (it->fee_schedule != NULL && b->nitems > 1 && it->fee > 0)
		v[10] = UUIDPGetDatum(&b->items[1].id);
	else
		isnull[10] = true;
	return HeapTupleGetDatum(heap_form_tuple(desc, v, isnull));
}

static Datum
run_single(FunctionCallInfo fcinfo, LedgerItem *it)
{
	LedgerBatch b;
	Datum		result;

	MemoryContext caller_cxt = CurrentMemoryContext;

	memset(&b, 0, sizeof(b));
	b.items = it;
	b.nitems = 1;
	b.single = true;
	fincore_spi_connect();
	if (it->result != LR_OK)
	{
		/* Malformed before anything is looked up. */
		tenancy_require_tenant(&b.tenant);
		raise_item_error(it);
	}
	ledger_execute(&b);
	/* The result must outlive SPI_finish(), which frees SPI's memory. */
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(caller_cxt);

		result = single_result(fcinfo, &b);
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();
	return result;
}

/* fee_schedule, fee_account, fee_mode, fee_context: four arguments from argno on. */
static void
item_fee_from_args(LedgerItem *it, FunctionCallInfo fcinfo, int argno)
{
	if (!PG_ARGISNULL(argno))
		it->fee_schedule = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (!PG_ARGISNULL(argno + 1))
	{
		it->has_fee_account = true;
		it->fee_account = *PG_GETARG_UUID_P(argno + 1);
	}
	it->fee_mode = PG_ARGISNULL(argno + 2) ? FEE_MODE_ON_TOP : fee_mode_from_text(PG_GETARG_TEXT_PP(argno + 2));
	it->fee_context = PG_ARGISNULL(argno + 3) ? NULL : PG_GETARG_JSONB_P_COPY(argno + 3);
}

/* transfer(debit, credit, amount bigint, id, code, pending, timeout, metadata, fee...) */
static void
transfer_item_from_args(LedgerItem *it, FunctionCallInfo fcinfo)
{
	item_init(it, 0);
	it->kind = (!PG_ARGISNULL(5) && PG_GETARG_BOOL(5)) ? KIND_PENDING : KIND_POSTED;
	if (!PG_ARGISNULL(0))
	{
		it->has_debit = true;
		it->debit = *PG_GETARG_UUID_P(0);
	}
	if (!PG_ARGISNULL(1))
	{
		it->has_credit = true;
		it->credit = *PG_GETARG_UUID_P(1);
	}
	item_set_id(it, fcinfo, 3);
	it->has_code = true;
	it->code = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
	if (!PG_ARGISNULL(6))
	{
		it->has_timeout = true;
		it->timeout = *PG_GETARG_INTERVAL_P(6);
	}
	if (!PG_ARGISNULL(7))
		it->metadata = PG_GETARG_JSONB_P_COPY(7);
	item_fee_from_args(it, fcinfo, 8);
	/*
	 * 0.2.0's arguments (0.1.0's function has 12): balancing_debit,
	 * balancing_credit, closing_debit, closing_credit, imported, "timestamp".
	 */
	if (PG_NARGS() > 17)
	{
		static const int32 arg_flags[] = {TRANSFER_BALANCING_DEBIT, TRANSFER_BALANCING_CREDIT,
		TRANSFER_CLOSING_DEBIT, TRANSFER_CLOSING_CREDIT, TRANSFER_IMPORTED};

		for (int a = 0; a < (int) lengthof(arg_flags); a++)
			if (!PG_ARGISNULL(12 + a) && PG_GETARG_BOOL(12 + a))
				it->flags |= arg_flags[a];
		if ((it->has_timestamp = !PG_ARGISNULL(17)))
			it->timestamp = PG_GETARG_TIMESTAMPTZ(17);
	}
}

PG_FUNCTION_INFO_V1(fincore_transfer);
Datum
fincore_transfer(PG_FUNCTION_ARGS)
{
	LedgerItem	it;

	transfer_item_from_args(&it, fcinfo);
	if (!PG_ARGISNULL(2))
	{
		it.has_amount = true;
		it.amount = PG_GETARG_INT64(2);
	}
	return run_single(fcinfo, &it);
}

/* The fincore.amount overload: the amount's currency must be the accounts'. */
PG_FUNCTION_INFO_V1(fincore_transfer_amount);
Datum
fincore_transfer_amount(PG_FUNCTION_ARGS)
{
	LedgerItem	it;

	transfer_item_from_args(&it, fcinfo);
	if (!PG_ARGISNULL(2))
	{
		Amount	   *a = PG_GETARG_AMOUNT_P(2);

		it.has_amount = true;
		it.amount = a->units;
		it.has_currency = true;
		it.currency = a->currency;
	}
	return run_single(fcinfo, &it);
}

/*
 * post_pending(pending_id, amount, id), void_pending(pending_id, id),
 * reverse(transfer_id, amount, id): an item that refers to another transfer.
 * amount_arg is -1 where the function takes no amount.
 */
static Datum
run_referring(FunctionCallInfo fcinfo, char kind, LedgerResult missing, int amount_arg, int id_arg)
{
	LedgerItem	it;

	item_init(&it, 0);
	it.kind = kind;
	if (PG_ARGISNULL(0))
		it.result = missing;
	else
		it.ref_id = *PG_GETARG_UUID_P(0);
	if (amount_arg >= 0 && !PG_ARGISNULL(amount_arg))
	{
		it.has_amount = true;
		it.amount = PG_GETARG_INT64(amount_arg);
	}
	item_set_id(&it, fcinfo, id_arg);
	return run_single(fcinfo, &it);
}

PG_FUNCTION_INFO_V1(fincore_post_pending);
Datum
fincore_post_pending(PG_FUNCTION_ARGS)
{
	return run_referring(fcinfo, KIND_POST, LR_PENDING_TRANSFER_NOT_FOUND, 1, 2);
}

PG_FUNCTION_INFO_V1(fincore_void_pending);
Datum
fincore_void_pending(PG_FUNCTION_ARGS)
{
	return run_referring(fcinfo, KIND_VOID, LR_PENDING_TRANSFER_NOT_FOUND, -1, 1);
}

PG_FUNCTION_INFO_V1(fincore_reverse);
Datum
fincore_reverse(PG_FUNCTION_ARGS)
{
	return run_referring(fcinfo, KIND_REVERSAL, LR_TRANSFER_NOT_FOUND, 1, 2);
}

/* ---- create_transfers: a batch ---- */

/* The fields of fincore.transfer_request, by position. */
enum
{
	REQ_ID, REQ_DEBIT, REQ_CREDIT, REQ_AMOUNT, REQ_CODE, REQ_PENDING, REQ_TIMEOUT,
	REQ_POST_PENDING, REQ_VOID_PENDING, REQ_REVERSE, REQ_LINKED, REQ_METADATA,
	REQ_FEE_SCHEDULE, REQ_FEE_ACCOUNT, REQ_FEE_MODE, REQ_FEE_CONTEXT,
	REQ_BALANCING_DEBIT, REQ_BALANCING_CREDIT, REQ_CLOSING_DEBIT, REQ_CLOSING_CREDIT,
	REQ_IMPORTED, REQ_TIMESTAMP, REQ_NFIELDS
};

#define CREATE_TRANSFERS_MAX 8190

static void
item_from_request(LedgerItem *it, int index, HeapTupleHeader rec, TupleDesc desc)
{
	HeapTupleData tuple;
	Datum		v[REQ_NFIELDS];
	bool		isnull[REQ_NFIELDS];
	int			actions = 0;

	item_init(it, index);
	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = rec;
	for (int f = desc->natts; f < REQ_NFIELDS; f++)
		isnull[f] = true;		/* fields 0.1.0's request does not have */
	heap_deform_tuple(&tuple, desc, v, isnull);

	if (!isnull[REQ_ID])
		it->id = *DatumGetUUIDP(v[REQ_ID]);
	else
		item_generate_id(it);
	if ((it->has_debit = !isnull[REQ_DEBIT]))
		it->debit = *DatumGetUUIDP(v[REQ_DEBIT]);
	if ((it->has_credit = !isnull[REQ_CREDIT]))
		it->credit = *DatumGetUUIDP(v[REQ_CREDIT]);
	if ((it->has_amount = !isnull[REQ_AMOUNT]))
		it->amount = DatumGetInt64(v[REQ_AMOUNT]);
	if ((it->has_code = !isnull[REQ_CODE]))
		it->code = DatumGetInt32(v[REQ_CODE]);
	if ((it->has_timeout = !isnull[REQ_TIMEOUT]))
		it->timeout = *DatumGetIntervalP(v[REQ_TIMEOUT]);
	it->linked = !isnull[REQ_LINKED] && DatumGetBool(v[REQ_LINKED]);
	if (!isnull[REQ_METADATA])
		it->metadata = DatumGetJsonbPCopy(v[REQ_METADATA]);
	if (!isnull[REQ_FEE_SCHEDULE])
		it->fee_schedule = TextDatumGetCString(v[REQ_FEE_SCHEDULE]);
	if ((it->has_fee_account = !isnull[REQ_FEE_ACCOUNT]))
		it->fee_account = *DatumGetUUIDP(v[REQ_FEE_ACCOUNT]);
	it->fee_mode = isnull[REQ_FEE_MODE] ? FEE_MODE_ON_TOP : fee_mode_from_text(DatumGetTextPP(v[REQ_FEE_MODE]));
	if (!isnull[REQ_FEE_CONTEXT])
		it->fee_context = DatumGetJsonbPCopy(v[REQ_FEE_CONTEXT]);
	{
		static const struct
		{
			int			field;
			int32		flag;
		}			bool_flags[] = {
			{REQ_BALANCING_DEBIT, TRANSFER_BALANCING_DEBIT}, {REQ_BALANCING_CREDIT, TRANSFER_BALANCING_CREDIT},
			{REQ_CLOSING_DEBIT, TRANSFER_CLOSING_DEBIT}, {REQ_CLOSING_CREDIT, TRANSFER_CLOSING_CREDIT},
			{REQ_IMPORTED, TRANSFER_IMPORTED},
		};

		for (int f = 0; f < (int) lengthof(bool_flags); f++)
			if (!isnull[bool_flags[f].field] && DatumGetBool(v[bool_flags[f].field]))
				it->flags |= bool_flags[f].flag;
	}
	if ((it->has_timestamp = !isnull[REQ_TIMESTAMP]))
		it->timestamp = DatumGetTimestampTz(v[REQ_TIMESTAMP]);

	it->kind = (!isnull[REQ_PENDING] && DatumGetBool(v[REQ_PENDING])) ? KIND_PENDING : KIND_POSTED;
	if (!isnull[REQ_POST_PENDING])
	{
		it->kind = KIND_POST;
		it->ref_id = *DatumGetUUIDP(v[REQ_POST_PENDING]);
		actions++;
	}
	if (!isnull[REQ_VOID_PENDING])
	{
		it->kind = KIND_VOID;
		it->ref_id = *DatumGetUUIDP(v[REQ_VOID_PENDING]);
		actions++;
	}
	if (!isnull[REQ_REVERSE])
	{
		it->kind = KIND_REVERSAL;
		it->ref_id = *DatumGetUUIDP(v[REQ_REVERSE]);
		actions++;
	}
	/* One action per item; pending only for a new transfer. */
	if (actions > 1 || (actions == 1 && !isnull[REQ_PENDING] && DatumGetBool(v[REQ_PENDING])))
		it->result = invalid_request(it, "an item is one of: a transfer or hold, a post, a void, a reversal");
	if (!it->has_code && (it->kind == KIND_POSTED || it->kind == KIND_PENDING))
	{
		it->has_code = true;
		it->code = 0;
	}
}

typedef struct BatchOutput
{
	LedgerItem *items;
	int			nitems;
	int			next;
} BatchOutput;

PG_FUNCTION_INFO_V1(fincore_create_transfers);
Datum
fincore_create_transfers(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			elemtype = ARR_ELEMTYPE(arr);
	TupleDesc	reqdesc;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	LedgerBatch b;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_TRANSFER_REQUEST),
				 errmsg("create_transfers takes a one-dimensional array of fincore.transfer_request")));
	reqdesc = lookup_rowtype_tupdesc(elemtype, -1);
	/* Before the array is taken apart: a huge one is refused without the work. */
	check_batch_size(ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)), CREATE_TRANSFERS_MAX,
					 ERRCODE_FC_INVALID_TRANSFER_REQUEST, "create_transfers");
	deconstruct_array(arr, elemtype, -1, false, TYPALIGN_DOUBLE, &elems, &nulls, &n);
	/* 0.1.0's request had the fields up to fee_context (until ALTER EXTENSION UPDATE). */
	if (reqdesc->natts != REQ_NFIELDS && reqdesc->natts != REQ_BALANCING_DEBIT)
		elog(ERROR, "fincore.transfer_request has %d fields, expected %d", reqdesc->natts, REQ_NFIELDS);

	InitMaterializedSRF(fcinfo, 0);
	memset(&b, 0, sizeof(b));
	b.nitems = n;
	b.items = palloc0(sizeof(LedgerItem) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
		{
			item_init(&b.items[i], i);
			item_generate_id(&b.items[i]);
			b.items[i].result = invalid_request(&b.items[i], "a NULL item");
			continue;
		}
		item_from_request(&b.items[i], i, DatumGetHeapTupleHeader(elems[i]), reqdesc);
	}
	ReleaseTupleDesc(reqdesc);

	if (n > 0)
	{
		/* Results known before the engine runs (malformed items) must survive it. */
		for (int i = 0; i < n; i++)
			b.items[i].preset = b.items[i].result;
		fincore_spi_connect();
		b.record_failures = true;
		ledger_execute(&b);
		SPI_finish();
	}

	for (int i = 0; i < b.nitems; i++)
	{
		LedgerItem *it = &b.items[i];
		Datum		v[3];
		bool		isnull[3] = {false, false, false};

		/* One row per request: a transfer's own result, or its fee leg's refusal. */
		if (it->is_fee_leg)
			continue;
		if (i + 1 < b.nitems && b.items[i + 1].is_fee_leg && it->result == LR_LINKED_EVENT_FAILED &&
			b.items[i + 1].result != LR_LINKED_EVENT_FAILED)
			it = &b.items[i + 1];
		v[0] = Int32GetDatum(b.items[i].request);
		v[1] = UUIDPGetDatum(&b.items[i].id);
		if (it->result == LR_EXISTS_WITH_DIFFERENT)
			v[2] = CStringGetTextDatum(psprintf("exists_with_different_%s", it->diff_field));
		else
			v[2] = CStringGetTextDatum(ledger_results[it->result].name);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, isnull);
	}
	return (Datum) 0;
}

/*
 * fincore.transfer_result_sqlstate(result): the SQLSTATE a single call
 * raises for what create_transfers() reports as result ('00000' for ok and
 * exists), so that a batch's caller can treat a refusal as the single call's
 * error; NULL for a name that is not a result.
 */
PG_FUNCTION_INFO_V1(fincore_transfer_result_sqlstate);
Datum
fincore_transfer_result_sqlstate(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	for (int r = 0; r < LR_NRESULTS; r++)
		if (ledger_results[r].name != NULL && strcmp(ledger_results[r].name, name) == 0)
			PG_RETURN_TEXT_P(cstring_to_text(unpack_sql_state(ledger_results[r].sqlstate)));
	PG_RETURN_NULL();
}
