/*
 * payments_api.c — the state machine of payments.h as SQL functions:
 * fincore.payment_transition(payment, action, amount, final) takes a row of
 * fincore.payments and returns it as the action leaves it, or raises the
 * refusal's ZF9xx error (nothing is written here: the caller, in
 * sql/modules/payments.sql, writes the row it gets back, under its lock).
 */
#include "payments.h"

#include "access/htup_details.h"
#include "common/md5.h"
#include "errcodes.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

/* The columns of fincore.payments the state machine reads and writes. */
typedef enum PaymentColumn
{
	PC_ID, PC_STATUS, PC_CAPTURE_METHOD, PC_MULTICAPTURE, PC_AMOUNT, PC_AUTHORIZED, PC_CAPTURED,
	PC_RELEASED, PC_REFUNDED, PC_DISPUTED, PC_LOST, PC_CAPTURE_PENDING, PC_INCREMENT_PENDING,
	PC_REFUND_PENDING, PC_CANCEL_PENDING, PC_COUNT
} PaymentColumn;

static const char *const payment_column_names[PC_COUNT] = {
	"id", "status", "capture_method", "multicapture", "amount", "authorized", "captured",
	"released", "refunded", "disputed", "lost", "capture_pending", "increment_pending",
	"refund_pending", "cancel_pending"
};

static inline int64
int64_column(const Datum *values, const bool *nulls, const int *att, PaymentColumn c)
{
	return nulls[att[c]] ? 0 : DatumGetInt64(values[att[c]]);
}

PG_FUNCTION_INFO_V1(fincore_payment_transition);
Datum
fincore_payment_transition(PG_FUNCTION_ARGS)
{
	HeapTupleHeader row;
	char	   *action_name;
	int64		amount = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
	bool		final = PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3);
	TupleDesc	desc;
	HeapTupleData tuple;
	HeapTuple	result;
	Datum	   *values;
	bool	   *nulls;
	int			att[PC_COUNT];
	Payment		p;
	PaymentAction action;
	PaymentStatus status;
	PaymentRefusal r;
	char	   *status_name;
	char	   *id;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_PAYMENT),
				 errmsg("invalid payment transition: the payment and the action must not be NULL")));
	row = PG_GETARG_HEAPTUPLEHEADER(0);
	action_name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	desc = lookup_rowtype_tupdesc_copy(HeapTupleHeaderGetTypeId(row), HeapTupleHeaderGetTypMod(row));
	tuple.t_len = HeapTupleHeaderGetDatumLength(row);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = row;
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(&tuple, desc, values, nulls);
	for (int c = 0; c < PC_COUNT; c++)
	{
		att[c] = -1;
		for (int a = 0; a < desc->natts && att[c] < 0; a++)
			if (!TupleDescAttr(desc, a)->attisdropped &&
				strcmp(NameStr(TupleDescAttr(desc, a)->attname), payment_column_names[c]) == 0)
				att[c] = a;
		if (att[c] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_PAYMENT),
					 errmsg("invalid payment: the row has no column %s", payment_column_names[c]),
					 errhint("Pass a row of fincore.payments.")));
	}
	if (nulls[att[PC_STATUS]] || nulls[att[PC_ID]])
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_PAYMENT),
				 errmsg("invalid payment: its id and status must not be NULL")));
	id = DatumGetCString(DirectFunctionCall1(uuid_out, values[att[PC_ID]]));
	status_name = TextDatumGetCString(values[att[PC_STATUS]]);
	if (!payment_status_from_name(status_name, &status))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_PAYMENT),
				 errmsg("invalid payment %s: unknown status %s", id, quote_literal_cstr(status_name))));
	if (!payment_action_from_name(action_name, &action))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_PAYMENT),
				 errmsg("invalid payment action %s", quote_literal_cstr(action_name)),
				 errhint("Actions: confirm, capture, increment, cancel, refund, dispute, and the outcomes of steps.")));

	p.status = status;
	p.manual_capture = !nulls[att[PC_CAPTURE_METHOD]] &&
		strcmp(TextDatumGetCString(values[att[PC_CAPTURE_METHOD]]), "manual") == 0;
	p.multicapture = !nulls[att[PC_MULTICAPTURE]] && DatumGetBool(values[att[PC_MULTICAPTURE]]);
	p.amount = int64_column(values, nulls, att, PC_AMOUNT);
	p.authorized = int64_column(values, nulls, att, PC_AUTHORIZED);
	p.captured = int64_column(values, nulls, att, PC_CAPTURED);
	p.released = int64_column(values, nulls, att, PC_RELEASED);
	p.refunded = int64_column(values, nulls, att, PC_REFUNDED);
	p.disputed = int64_column(values, nulls, att, PC_DISPUTED);
	p.lost = int64_column(values, nulls, att, PC_LOST);
	p.capture_pending = int64_column(values, nulls, att, PC_CAPTURE_PENDING);
	p.increment_pending = int64_column(values, nulls, att, PC_INCREMENT_PENDING);
	p.refund_pending = int64_column(values, nulls, att, PC_REFUND_PENDING);
	p.cancel_pending = !nulls[att[PC_CANCEL_PENDING]] && DatumGetBool(values[att[PC_CANCEL_PENDING]]);

	r = payment_apply(&p, action, amount, final);
	if (r.sqlstate != 0)
		ereport(ERROR,
				(errcode(r.sqlstate),
				 errmsg("cannot %s payment %s: %s (status %s, amount " INT64_FORMAT ")",
						action_name, id, r.reason, status_name, amount),
				 r.hint ? errhint("%s", r.hint) : 0));

	values[att[PC_STATUS]] = CStringGetTextDatum(payment_status_names[p.status]);
	values[att[PC_AMOUNT]] = Int64GetDatum(p.amount);
	values[att[PC_AUTHORIZED]] = Int64GetDatum(p.authorized);
	values[att[PC_CAPTURED]] = Int64GetDatum(p.captured);
	values[att[PC_RELEASED]] = Int64GetDatum(p.released);
	values[att[PC_REFUNDED]] = Int64GetDatum(p.refunded);
	values[att[PC_DISPUTED]] = Int64GetDatum(p.disputed);
	values[att[PC_LOST]] = Int64GetDatum(p.lost);
	values[att[PC_CAPTURE_PENDING]] = Int64GetDatum(p.capture_pending);
	values[att[PC_INCREMENT_PENDING]] = Int64GetDatum(p.increment_pending);
	values[att[PC_REFUND_PENDING]] = Int64GetDatum(p.refund_pending);
	values[att[PC_CANCEL_PENDING]] = BoolGetDatum(p.cancel_pending);
	for (int c = PC_STATUS; c < PC_COUNT; c++)
		if (c != PC_CAPTURE_METHOD && c != PC_MULTICAPTURE)
			nulls[att[c]] = false;
	desc = BlessTupleDesc(desc);
	result = heap_form_tuple(desc, values, nulls);
	PG_RETURN_DATUM(HeapTupleGetDatum(result));
}

/*
 * fincore._payment_transfer_id(payment_id, step_no, part): the id of the
 * ledger transfer a step of a payment makes, the same at every retry of the
 * step (the ledger then answers a replay with "exists"): the MD5 of
 * "<payment_id>:<step_no>:<part>", as a UUID.
 */
PG_FUNCTION_INFO_V1(fincore_payment_transfer_id);
Datum
fincore_payment_transfer_id(PG_FUNCTION_ARGS)
{
	char	   *payment = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)));
	char	   *key = psprintf("%s:%d:%s", payment, PG_GETARG_INT32(1), text_to_cstring(PG_GETARG_TEXT_PP(2)));
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	const char *errstr = NULL;

	StaticAssertStmt(sizeof(pg_uuid_t) == 16, "an MD5 is 16 bytes, as a UUID");
	if (!pg_md5_binary(key, strlen(key), id->data, &errstr))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not compute a payment transfer's id: %s", errstr ? errstr : "MD5 failed")));
	PG_RETURN_UUID_P(id);
}
