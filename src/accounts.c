/*
 * accounts.c — creating accounts and changing their status.
 *
 * An account's identity (id, tenant, currency, code, flags, credit limit) is
 * fixed at creation — a trigger refuses to change it — which is what lets the
 * posting engine cache it per backend.  Creation is idempotent by id: the same
 * id with the same fields returns the existing account; with any different
 * field it is refused, naming the field.
 */
#include "fincore.h"

#include "jsonb_build.h"
#include "ledger.h"
#include "outbox.h"
#include "owner_sql.h"
#include "tenancy.h"
#include "uuidv7.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

/*
 * Not a flag of the stored mask but TigerBeetle's closed flag at creation: the
 * account is created with status closed (and is closed from then on).
 */
#define ACCOUNT_CREATED_CLOSED	0x100

static const struct
{
	const char *name;
	int32		bit;
}			account_flag_names[] = {
	{"debits_must_not_exceed_credits", ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS},
	{"credits_must_not_exceed_debits", ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS},
	{"history", ACCOUNT_HISTORY},
	{"hot", ACCOUNT_HOT},
	{"closed", ACCOUNT_CREATED_CLOSED},
};

static void
flags_error(const char *msg, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_ACCOUNT_FLAGS),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}

/* text[] of flag names → bit mask, validated. */
static int32
account_flags_from_array(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int32		flags = 0;

	if (ARR_NDIM(arr) > 1)
		flags_error("account flags must be a one-dimensional array", NULL);
	check_batch_size(ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)), PG_INT32_MAX,
					 ERRCODE_FC_INVALID_ACCOUNT_FLAGS, "create_account's flags");
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *name;
		bool		known = false;

		if (nulls[i])
			flags_error("account flags must not contain NULL", NULL);
		name = TextDatumGetCString(elems[i]);
		for (int f = 0; f < (int) lengthof(account_flag_names); f++)
			if (strcmp(name, account_flag_names[f].name) == 0)
			{
				flags |= account_flag_names[f].bit;
				known = true;
			}
		if (!known)
			flags_error(psprintf("unknown account flag \"%s\"", name),
						"Flags are debits_must_not_exceed_credits, credits_must_not_exceed_debits, history, hot and closed.");
	}
	if ((flags & ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) && (flags & ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS))
		flags_error("debits_must_not_exceed_credits and credits_must_not_exceed_debits exclude each other", NULL);
	if ((flags & ACCOUNT_HOT) && (flags & ACCOUNT_HISTORY))
		flags_error("a hot account cannot keep history",
					"History records the balance after every transfer, which needs every transfer to lock the account; a hot account exists not to.");
	return flags;
}

static SPIPlanPtr create_plan = NULL;
static SPIPlanPtr existing_plan = NULL;
static SPIPlanPtr external_ref_plan = NULL;

/*
 * What the last create_account call found, for create_accounts' results: the
 * id existed with the same fields (a replay), or the field that differed.
 */
static bool account_last_existed;
static const char *account_last_diff_field;

static void
account_exists_error(const pg_uuid_t *id, const char *field)
{
	account_last_diff_field = field;
	ereport(ERROR,
			(errcode(ERRCODE_FC_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS),
			 errmsg("account %s already exists with a different %s", uuid_text(id), field),
			 errhint("An account id is an idempotency key: repeat it with exactly the same fields, or use a new id.")));
}

/*
 * fincore.create_account(currency, code, flags, credit_limit, id, external_ref, metadata) → uuid
 */
PG_FUNCTION_INFO_V1(fincore_create_account);
Datum
fincore_create_account(PG_FUNCTION_ARGS)
{
	pg_uuid_t	tenant;
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	text	   *currency_text;
	CurrencyCode currency;
	char		currency_code[CURRENCY_CODE_MAX_LEN + 1];
	int32		code = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	int32		flags;
	bool		has_limit = !PG_ARGISNULL(3);
	int64		credit_limit = has_limit ? PG_GETARG_INT64(3) : 0;
	Jsonb	   *metadata;
	Datum		args[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', 'n'};
	bool		created_closed;

	account_last_existed = false;
	account_last_diff_field = NULL;
	tenancy_require_tenant(&tenant);
	/* TigerBeetle's first checks: the reserved ids. */
	if (PG_ARGISNULL(4))
		uuidv7_generate(id);
	else
		*id = *PG_GETARG_UUID_P(4);
	if (uuid_reserved(id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_RESERVED_ID),
				 errmsg("account id %s is reserved", uuid_text(id)),
				 errhint("The nil UUID and the all-ones UUID are never ids; leave the id out for a new UUIDv7.")));
	flags = PG_ARGISNULL(2) ? 0 : account_flags_from_array(PG_GETARG_ARRAYTYPE_P(2));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CURRENCY_CODE),
				 errmsg("an account needs a currency")));
	currency_text = PG_GETARG_TEXT_PP(0);
	currency = currency_pack_or_error(VARDATA_ANY(currency_text), VARSIZE_ANY_EXHDR(currency_text));
	(void) currency_exponent(currency); /* ZF102 if unknown */
	currency_unpack(currency, currency_code);
	if (has_limit && credit_limit < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CREDIT_LIMIT),
				 errmsg("credit limit must not be negative, not " INT64_FORMAT, credit_limit)));
	if (has_limit && !(flags & (ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS | ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS)))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CREDIT_LIMIT),
				 errmsg("a credit limit needs a limit flag"),
				 errhint("Flag the account debits_must_not_exceed_credits (an overdraft up to the limit) or credits_must_not_exceed_debits.")));
	metadata = PG_ARGISNULL(6) ? NULL : PG_GETARG_JSONB_P(6);

	created_closed = (flags & ACCOUNT_CREATED_CLOSED) != 0;
	flags &= ~ACCOUNT_CREATED_CLOSED;
	args[0] = UUIDPGetDatum(id);
	args[1] = UUIDPGetDatum(&tenant);
	args[2] = CStringGetTextDatum(currency_code);
	args[3] = Int32GetDatum(code);
	args[4] = Int32GetDatum(flags);
	args[8] = CStringGetTextDatum(created_closed ? "closed" : "active");
	args[5] = Int64GetDatum(credit_limit);
	nulls[5] = has_limit ? ' ' : 'n';
	args[6] = (Datum) 0;
	if (PG_ARGISNULL(5))
		nulls[6] = 'n';
	else
		args[6] = PG_GETARG_DATUM(5);
	if (metadata == NULL)
		nulls[7] = 'n';
	else
		args[7] = JsonbPGetDatum(metadata);
	/* An imported account's creation time (create_accounts passes it as an 8th argument). */
	if (PG_NARGS() > 7 && !PG_ARGISNULL(7))
	{
		args[9] = PG_GETARG_DATUM(7);
		nulls[9] = ' ';
	}

	fincore_spi_connect();
	if (create_plan == NULL)
	{
		Oid			types[10] = {UUIDOID, UUIDOID, TEXTOID, INT4OID, INT4OID, INT8OID, TEXTOID, JSONBOID, TEXTOID,
		TIMESTAMPTZOID};

		create_plan = ledger_prepare(
			"INSERT INTO fincore.accounts (id, tenant_id, currency, code, flags, credit_limit, external_ref, metadata, status, "
			"                             created_at) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, '{}'::pg_catalog.jsonb), $9, "
			"        COALESCE($10, pg_catalog.clock_timestamp())) ON CONFLICT DO NOTHING",
			10, types);
		existing_plan = ledger_prepare(
			"SELECT a.tenant_id, a.currency, a.code, a.flags, a.credit_limit, a.external_ref, a.metadata, "
			"       a.status OPERATOR(pg_catalog.=) 'closed' "
			"  FROM fincore.accounts a WHERE a.tenant_id OPERATOR(pg_catalog.=) $2 AND a.id OPERATOR(pg_catalog.=) $1",
			2, (Oid[]) {UUIDOID, UUIDOID});
		external_ref_plan = ledger_prepare(
			"SELECT a.id FROM fincore.accounts a WHERE a.tenant_id OPERATOR(pg_catalog.=) $1 "
			"   AND a.external_ref OPERATOR(pg_catalog.=) $2", 2, (Oid[]) {UUIDOID, TEXTOID});
	}
	if (SPI_execute_plan(create_plan, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "creating an account failed");
	if (SPI_processed == 0)
	{
		/*
		 * The id (or the external reference) exists in the tenant: an idempotent
		 * repeat, or a conflict.  Ids are unique within a tenant, as its keys are.
		 */
		bool		isnull;
		Datum		d;

		if (SPI_execute_plan(existing_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "looking up an account failed");
		if (SPI_processed == 0 && nulls[6] != 'n')
		{
			Datum		a2[2] = {args[1], args[6]};

			if (SPI_execute_plan(external_ref_plan, a2, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "looking up an account failed");
			if (SPI_processed > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FC_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS),
						 errmsg("external reference \"%s\" is already used by account %s",
								TextDatumGetCString(args[6]),
								uuid_text(DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0],
																	  SPI_tuptable->tupdesc, 1, &isnull)))),
						 errhint("An external reference names one account per tenant.")));
		}
		/* Not the tenant's: on 0.1.0's tables, keyed by the id alone, another tenant's id. */
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FC_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS),
					 errmsg("account id %s is already used", uuid_text(id)),
					 errhint("Use a new id.")));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (strcmp(TextDatumGetCString(d), currency_code) != 0)
			account_exists_error(id, "currency");
		if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)) != code)
			account_exists_error(id, "code");
		if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)) != flags ||
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 8, &isnull)) != created_closed)
			account_exists_error(id, "flags");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull);
		if (isnull != !has_limit || (!isnull && DatumGetInt64(d) != credit_limit))
			account_exists_error(id, "credit_limit");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull);
		if (isnull != PG_ARGISNULL(5) ||
			(!isnull && strcmp(TextDatumGetCString(d), TextDatumGetCString(args[6])) != 0))
			account_exists_error(id, "external_ref");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 7, &isnull);
		{
			Jsonb	   *old = DatumGetJsonbP(d);
			Jsonb	   *new = metadata;

			if (new == NULL)
				new = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
			if (compareJsonbContainers(&old->root, &new->root) != 0)
				account_exists_error(id, "metadata");
		}
		account_last_existed = true;
	}
	SPI_finish();
	PG_RETURN_UUID_P(id);
}

/* ---- batches: create_accounts ---- */

/* id, currency, code, flags, credit_limit, external_ref, metadata, linked, imported, timestamp */
#define ACCOUNT_REQ_NFIELDS 10
#define CREATE_ACCOUNTS_MAX 8190

typedef struct AccountItem
{
	pg_uuid_t	id;
	/* create_account's: currency, code, flags, credit_limit, id, external_ref, metadata; and created_at */
	Datum		args[8];
	bool		nulls[8];
	bool		linked;
	bool		imported;
	const char *result;
} AccountItem;

/*
 * TigerBeetle's checks of imported accounts, before anything else: a batch is
 * imported as a whole or not at all (as its first item is); an imported
 * account carries its creation time, in the past and later than the batch's
 * previous one; an account that is not imported carries none.
 */
static const char *
account_imported_result(const AccountItem *items, int i, TimestampTz now, TimestampTz *last)
{
	const AccountItem *it = &items[i];
	TimestampTz ts;

	if (!it->imported)
	{
		if (items[0].imported)
			return "imported_event_expected";
		return it->nulls[7] ? NULL : "timestamp_must_be_zero";
	}
	if (!items[0].imported)
		return "imported_event_not_expected";
	if (it->nulls[7] || TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(it->args[7])))
		return "imported_event_timestamp_out_of_range";
	ts = DatumGetTimestampTz(it->args[7]);
	if (ts >= now)
		return "imported_event_timestamp_must_not_advance";
	if (ts <= *last)
		return "imported_event_timestamp_must_not_regress";
	return NULL;
}

/* The result of one create_account error, or NULL for an error the whole call raises. */
static const char *
account_error_result(const AccountItem *it, ErrorData *edata)
{
	switch (edata->sqlerrcode)
	{
		case ERRCODE_FC_RESERVED_ID:
			return uuid_reserved(&it->id) < 0 ? "id_must_not_be_zero" : "id_must_not_be_int_max";
		case ERRCODE_FC_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS:
			if (account_last_diff_field != NULL)
				return psprintf("exists_with_different_%s", account_last_diff_field);
			return strstr(edata->message, "external reference") != NULL ? "external_ref_already_used" : "id_already_used";
		case ERRCODE_FC_INVALID_ACCOUNT_FLAGS:
			return strstr(edata->message, "exclude each other") != NULL ? "flags_are_mutually_exclusive" : "invalid_flags";
		case ERRCODE_FC_INVALID_CREDIT_LIMIT:
			return "invalid_credit_limit";
		case ERRCODE_FC_INVALID_CURRENCY_CODE:
			return "invalid_currency";
		case ERRCODE_FC_UNKNOWN_CURRENCY:
			return "unknown_currency";
		default:
			return NULL;
	}
}

/*
 * Create one account in a subtransaction of the chain: its result, or NULL
 * after an error the whole call must raise (edata_out holds it).
 */
static const char *
create_account_item(AccountItem *it, ErrorData **edata_out)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	const char *result = NULL;

	PG_TRY();
	{
		LOCAL_FCINFO(fc, 8);

		InitFunctionCallInfoData(*fc, NULL, 8, InvalidOid, NULL, NULL);
		for (int a = 0; a < 8; a++)
		{
			fc->args[a].value = it->args[a];
			fc->args[a].isnull = it->nulls[a];
		}
		(void) fincore_create_account(fc);
		result = account_last_existed ? "exists" : "ok";
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		*edata_out = CopyErrorData();
		FlushErrorState();
		result = account_error_result(it, *edata_out);
	}
	PG_END_TRY();
	return result;
}

/*
 * fincore.create_accounts(requests fincore.account_request[])
 *     → TABLE (index integer, id uuid, result text)
 *
 * TigerBeetle's create_accounts: one result per request (ok, exists, or why it
 * was refused), items independent unless linked, a linked chain created whole
 * or not at all (every result but ok, exists included, fails it).
 */
PG_FUNCTION_INFO_V1(fincore_create_accounts);
Datum
fincore_create_accounts(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Oid			elemtype = ARR_ELEMTYPE(arr);
	TupleDesc	reqdesc;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	AccountItem *items;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	pg_uuid_t	tenant;

	tenancy_require_tenant(&tenant);	/* ZF203 for the whole call */
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_TRANSFER_REQUEST),
				 errmsg("create_accounts takes a one-dimensional array")));
	check_batch_size(ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)), CREATE_ACCOUNTS_MAX,
					 ERRCODE_FC_INVALID_TRANSFER_REQUEST, "create_accounts");
	InitMaterializedSRF(fcinfo, 0);
	reqdesc = lookup_rowtype_tupdesc(elemtype, -1);
	if (reqdesc->natts != ACCOUNT_REQ_NFIELDS)
		elog(ERROR, "fincore.account_request has %d fields, expected %d", reqdesc->natts, ACCOUNT_REQ_NFIELDS);
	deconstruct_array(arr, elemtype, -1, false, TYPALIGN_DOUBLE, &elems, &elem_nulls, &n);
	items = palloc0(sizeof(AccountItem) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		AccountItem *it = &items[i];
		HeapTupleData tup;
		Datum		f[ACCOUNT_REQ_NFIELDS];
		bool		fn[ACCOUNT_REQ_NFIELDS];

		if (elem_nulls[i])
		{
			uuidv7_generate(&it->id);
			it->result = "invalid_request";
			continue;
		}
		tup.t_len = HeapTupleHeaderGetDatumLength(DatumGetHeapTupleHeader(elems[i]));
		ItemPointerSetInvalid(&tup.t_self);
		tup.t_tableOid = InvalidOid;
		tup.t_data = DatumGetHeapTupleHeader(elems[i]);
		heap_deform_tuple(&tup, reqdesc, f, fn);
		if (fn[0])
			uuidv7_generate(&it->id);
		else
			it->id = *DatumGetUUIDP(f[0]);
		/* create_account(currency, code, flags, credit_limit, id, external_ref, metadata) */
		it->args[0] = f[1];
		it->nulls[0] = fn[1];
		it->args[1] = fn[2] ? Int32GetDatum(0) : f[2];
		it->args[2] = f[3];
		it->nulls[2] = fn[3];
		it->args[3] = f[4];
		it->nulls[3] = fn[4];
		it->args[4] = UUIDPGetDatum(&it->id);
		it->args[5] = f[5];
		it->nulls[5] = fn[5];
		if (fn[6])
			it->args[6] = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
		else
			it->args[6] = f[6];
		it->linked = !fn[7] && DatumGetBool(f[7]);
		it->imported = !fn[8] && DatumGetBool(f[8]);
		it->args[7] = f[9];
		it->nulls[7] = fn[9];
	}
	ReleaseTupleDesc(reqdesc);
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz last = DT_NOBEGIN;

		/* Imported times increase item by item, whether or not an item is then created. */
		for (int i = 0; i < n; i++)
			if (items[i].result == NULL &&
				(items[i].result = account_imported_result(items, i, now, &last)) == NULL &&
				items[i].imported)
				last = DatumGetTimestampTz(items[i].args[7]);
	}

	for (int i = 0; i < n;)
	{
		int			end = i;
		int			failed = -1;
		MemoryContext oldcxt = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;
		ErrorData  *raise = NULL;

		while (end < n - 1 && items[end].linked)
			end++;
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		for (int k = i; k <= end && failed < 0; k++)
		{
			AccountItem *it = &items[k];

			if (it->result == NULL)
				it->result = create_account_item(it, &raise);
			if (raise != NULL && it->result == NULL)
				break;
			if (strcmp(it->result, "ok") != 0)
				failed = k;
		}
		if (raise == NULL && failed < 0 && items[end].linked)
		{
			failed = end;
			items[end].result = "linked_event_chain_open";
		}
		if (raise != NULL || failed >= 0)
		{
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			if (raise != NULL && (failed < 0 || items[failed].result == NULL))
				ReThrowError(raise);
			if (end > i || items[end].linked)
				for (int k = i; k <= end; k++)
					if (k != failed)
						items[k].result = "linked_event_failed";
		}
		else
		{
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		i = end + 1;
	}

	for (int i = 0; i < n; i++)
	{
		Datum		v[3] = {Int32GetDatum(i), UUIDPGetDatum(&items[i].id), CStringGetTextDatum(items[i].result)};
		bool		isnull[3] = {false, false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, isnull);
	}
	return (Datum) 0;
}

/* ---- status ---- */

static SPIPlanPtr status_lock_plan = NULL;
static SPIPlanPtr status_deltas_plan = NULL;
static SPIPlanPtr status_set_plan = NULL;
static SPIPlanPtr closing_hold_plan = NULL;

/*
 * Is the account held closed by an open closing hold (one that has not been
 * posted, voided or expired)?  Its void would open the account again.
 */
static bool
held_closed(pg_uuid_t *id, pg_uuid_t *tenant)
{
	Datum		args[2] = {UUIDPGetDatum(id), UUIDPGetDatum(tenant)};

	if (ledger_schema() == 0)
		return false;			/* 0.1.0's tables: no closing holds */
	if (closing_hold_plan == NULL)
		closing_hold_plan = ledger_prepare(
			"SELECT 1 FROM fincore.transfers t "
			" WHERE t.tenant_id OPERATOR(pg_catalog.=) $2 AND t.kind OPERATOR(pg_catalog.=) 'pending' "
			"   AND ((t.debit_account_id OPERATOR(pg_catalog.=) $1 AND (t.flags OPERATOR(pg_catalog.&) 4) OPERATOR(pg_catalog.<>) 0) "
			"     OR (t.credit_account_id OPERATOR(pg_catalog.=) $1 AND (t.flags OPERATOR(pg_catalog.&) 8) OPERATOR(pg_catalog.<>) 0)) "
			"   AND EXISTS (SELECT 1 FROM fincore.pending_holds h WHERE h.tenant_id OPERATOR(pg_catalog.=) $2 "
			"                 AND h.transfer_id OPERATOR(pg_catalog.=) t.id) "
			" LIMIT 1", 2, (Oid[]) {UUIDOID, UUIDOID});
	if (SPI_execute_plan(closing_hold_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking for a closing hold failed");
	return SPI_processed > 0;
}

typedef struct LockedAccount
{
	char		status;
	int64		debits_pending;
	int64		credits_pending;
} LockedAccount;

/* Lock an account of the current tenant for a status change; ZF301 if there is none. */
static LockedAccount
lock_account_for_status(pg_uuid_t *id, pg_uuid_t *tenant)
{
	Datum		args[2] = {UUIDPGetDatum(id), UUIDPGetDatum(tenant)};
	LockedAccount a;
	bool		isnull;

	if (status_lock_plan == NULL)
	{
		/*
		 * The row locked alone, then its hot deltas summed: Citus runs a
		 * locking read only as a plain statement on one shard.
		 */
		status_lock_plan = ledger_prepare(
			"SELECT a.status, a.debits_pending, a.credits_pending "
			"  FROM fincore.accounts a WHERE a.tenant_id OPERATOR(pg_catalog.=) $2 AND a.id OPERATOR(pg_catalog.=) $1 "
			"   FOR UPDATE", 2, (Oid[]) {UUIDOID, UUIDOID});
		status_deltas_plan = ledger_prepare(
			"SELECT COALESCE(pg_catalog.sum(d.debits_pending), 0)::bigint, "
			"       COALESCE(pg_catalog.sum(d.credits_pending), 0)::bigint "
			"  FROM fincore.account_deltas d "
			" WHERE d.tenant_id OPERATOR(pg_catalog.=) $2 AND d.account_id OPERATOR(pg_catalog.=) $1",
			2, (Oid[]) {UUIDOID, UUIDOID});
		status_set_plan = ledger_prepare(
			"UPDATE fincore.accounts a SET status = $2 "
			" WHERE a.tenant_id OPERATOR(pg_catalog.=) $3 AND a.id OPERATOR(pg_catalog.=) $1",
			3, (Oid[]) {UUIDOID, TEXTOID, UUIDOID});
	}
	if (SPI_execute_plan(status_lock_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "locking an account failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_ACCOUNT_NOT_FOUND),
				 errmsg("account %s not found", uuid_text(id)),
				 errhint("Accounts are visible only in their own tenant.")));
	a.status = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))[0];
	a.debits_pending = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	a.credits_pending = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (SPI_execute_plan(status_deltas_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "summing an account's deltas failed");
	/* Totals that fit (checked before every write), so these sums do too; checked all the same. */
	if (pg_add_s64_overflow(a.debits_pending,
							DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
							&a.debits_pending) ||
		pg_add_s64_overflow(a.credits_pending,
							DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)),
							&a.credits_pending))
		ereport(ERROR,
				(errcode(ERRCODE_FC_BALANCE_OVERFLOW),
				 errmsg("the pending amounts of account %s overflow", uuid_text(id))));
	return a;
}

static void
set_status(pg_uuid_t *id, pg_uuid_t *tenant, const char *status)
{
	Datum		args[3] = {UUIDPGetDatum(id), CStringGetTextDatum(status), UUIDPGetDatum(tenant)};

	if (SPI_execute_plan(status_set_plan, args, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "changing an account's status failed");
}

/* A status change becomes an outbox event (topic "ledger", aggregate the account). */
void
account_status_event(const pg_uuid_t *id, const pg_uuid_t *tenant, const char *status, const char *type)
{
	JsonbParseState *st = NULL;
	JsonbValue *res;

	if (!outbox_ledger_events_enabled(tenant))
		return;
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	jb_key(&st, "id");
	jb_string(&st, uuid_text(id));
	jb_key(&st, "tenant_id");
	jb_string(&st, uuid_text(tenant));
	jb_key(&st, "status");
	jb_string(&st, status);
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	outbox_emit_event(tenant, "ledger", type, "account", uuid_text(id), JsonbValueToJsonb(res), NULL, NULL);
}

static Datum
change_status(FunctionCallInfo fcinfo, char target)
{
	pg_uuid_t  *id = PG_GETARG_UUID_P(0);
	pg_uuid_t	tenant;
	LockedAccount a;
	const char *status = target == 'f' ? "frozen" : target == 'a' ? "active" : "closed";

	tenancy_require_tenant(&tenant);
	fincore_spi_connect();
	a = lock_account_for_status(id, &tenant);
	/*
	 * Closing is final: an account an open closing hold has closed is not
	 * closed for good yet (voiding the hold would open it), so it is refused.
	 */
	if (a.status == target && !(target == 'c' && held_closed(id, &tenant)))
	{
		SPI_finish();
		PG_RETURN_VOID();		/* idempotent */
	}
	if (a.status == 'c' && target != 'c')
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_ACCOUNT_STATUS_CHANGE),
				 errmsg("account %s is closed and cannot be made %s", uuid_text(id), status),
				 errhint("Closing an account is final.")));
	if (target == 'c' && a.status == 'c')
		ereport(ERROR,
				(errcode(ERRCODE_FC_ACCOUNT_HAS_PENDING),
				 errmsg("account %s is held closed by an open closing hold, and cannot be closed for good", uuid_text(id)),
				 errhint("Post the closing hold (the account stays closed), or void it first.")));
	if (target == 'c' && (a.debits_pending != 0 || a.credits_pending != 0))
		ereport(ERROR,
				(errcode(ERRCODE_FC_ACCOUNT_HAS_PENDING),
				 errmsg("account %s cannot be closed while it has pending amounts", uuid_text(id)),
				 errdetail("Debits pending " INT64_FORMAT ", credits pending " INT64_FORMAT " (minor units).",
						   a.debits_pending, a.credits_pending),
				 errhint("Post, void or let expire its holds first.")));
	set_status(id, &tenant, status);
	account_status_event(id, &tenant, status,
						 target == 'f' ? "account.frozen" : target == 'a' ? "account.unfrozen" : "account.closed");
	SPI_finish();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(fincore_freeze_account);
Datum
fincore_freeze_account(PG_FUNCTION_ARGS)
{
	return change_status(fcinfo, 'f');
}

PG_FUNCTION_INFO_V1(fincore_unfreeze_account);
Datum
fincore_unfreeze_account(PG_FUNCTION_ARGS)
{
	return change_status(fcinfo, 'a');
}

PG_FUNCTION_INFO_V1(fincore_close_account);
Datum
fincore_close_account(PG_FUNCTION_ARGS)
{
	return change_status(fcinfo, 'c');
}
