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

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

static const struct
{
	const char *name;
	int32		bit;
}			account_flag_names[] = {
	{"debits_must_not_exceed_credits", ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS},
	{"credits_must_not_exceed_debits", ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS},
	{"history", ACCOUNT_HISTORY},
	{"hot", ACCOUNT_HOT},
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
						"Flags are debits_must_not_exceed_credits, credits_must_not_exceed_debits, history and hot.");
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

static void
account_exists_error(const pg_uuid_t *id, const char *field)
{
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
	int32		flags = PG_ARGISNULL(2) ? 0 : account_flags_from_array(PG_GETARG_ARRAYTYPE_P(2));
	bool		has_limit = !PG_ARGISNULL(3);
	int64		credit_limit = has_limit ? PG_GETARG_INT64(3) : 0;
	Jsonb	   *metadata;
	Datum		args[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	tenancy_require_tenant(&tenant);
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
	if (PG_ARGISNULL(4))
		uuidv7_generate(id);
	else
		*id = *PG_GETARG_UUID_P(4);
	if (uuid_reserved(id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_RESERVED_ID),
				 errmsg("account id %s is reserved", uuid_text(id)),
				 errhint("The nil UUID and the all-ones UUID are never ids; leave the id out for a new UUIDv7.")));
	metadata = PG_ARGISNULL(6) ? NULL : PG_GETARG_JSONB_P(6);

	args[0] = UUIDPGetDatum(id);
	args[1] = UUIDPGetDatum(&tenant);
	args[2] = CStringGetTextDatum(currency_code);
	args[3] = Int32GetDatum(code);
	args[4] = Int32GetDatum(flags);
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

	fincore_spi_connect();
	if (create_plan == NULL)
	{
		Oid			types[8] = {UUIDOID, UUIDOID, TEXTOID, INT4OID, INT4OID, INT8OID, TEXTOID, JSONBOID};

		create_plan = ledger_prepare(
			"INSERT INTO fincore.accounts (id, tenant_id, currency, code, flags, credit_limit, external_ref, metadata) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, '{}'::pg_catalog.jsonb)) ON CONFLICT DO NOTHING",
			8, types);
		existing_plan = ledger_prepare(
			"SELECT a.tenant_id, a.currency, a.code, a.flags, a.credit_limit, a.external_ref, a.metadata "
			"  FROM fincore.accounts a WHERE a.id OPERATOR(pg_catalog.=) $1", 1, (Oid[]) {UUIDOID});
		external_ref_plan = ledger_prepare(
			"SELECT a.id FROM fincore.accounts a WHERE a.tenant_id OPERATOR(pg_catalog.=) $1 "
			"   AND a.external_ref OPERATOR(pg_catalog.=) $2", 2, (Oid[]) {UUIDOID, TEXTOID});
	}
	if (SPI_execute_plan(create_plan, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "creating an account failed");
	if (SPI_processed == 0)
	{
		/* The id (or the external reference) exists: an idempotent repeat, or a conflict. */
		bool		isnull;
		Datum		d;

		if (SPI_execute_plan(existing_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "looking up an account failed");
		if (SPI_processed == 0 && nulls[6] == 'n')
			elog(ERROR, "account %s conflicts but cannot be found", uuid_text(id));
		if (SPI_processed == 0)
		{
			Datum		a2[2] = {args[1], args[6]};

			if (SPI_execute_plan(external_ref_plan, a2, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "looking up an account failed");
			ereport(ERROR,
					(errcode(ERRCODE_FC_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS),
					 errmsg("external reference \"%s\" is already used by account %s",
							TextDatumGetCString(args[6]),
							SPI_processed > 0 ? uuid_text(DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0],
																				   SPI_tuptable->tupdesc, 1, &isnull)))
							: "(another)"),
					 errhint("An external reference names one account per tenant.")));
		}
		if (!uuid_equal(DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
							&tenant))
			ereport(ERROR,
					(errcode(ERRCODE_FC_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS),
					 errmsg("account id %s is already used", uuid_text(id)),
					 errhint("Use a new id.")));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (strcmp(TextDatumGetCString(d), currency_code) != 0)
			account_exists_error(id, "currency");
		if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)) != code)
			account_exists_error(id, "code");
		if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)) != flags)
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
	}
	SPI_finish();
	PG_RETURN_UUID_P(id);
}

/* ---- status ---- */

static SPIPlanPtr status_lock_plan = NULL;
static SPIPlanPtr status_set_plan = NULL;

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
		status_lock_plan = ledger_prepare(
			"SELECT a.status, "
			"       a.debits_pending OPERATOR(pg_catalog.+) COALESCE((SELECT pg_catalog.sum(d.debits_pending) "
			"           FROM fincore.account_deltas d WHERE d.account_id OPERATOR(pg_catalog.=) a.id), 0)::bigint, "
			"       a.credits_pending OPERATOR(pg_catalog.+) COALESCE((SELECT pg_catalog.sum(d.credits_pending) "
			"           FROM fincore.account_deltas d WHERE d.account_id OPERATOR(pg_catalog.=) a.id), 0)::bigint "
			"  FROM fincore.accounts a WHERE a.id OPERATOR(pg_catalog.=) $1 AND a.tenant_id OPERATOR(pg_catalog.=) $2 "
			"   FOR UPDATE", 2, (Oid[]) {UUIDOID, UUIDOID});
		status_set_plan = ledger_prepare(
			"UPDATE fincore.accounts a SET status = $2 WHERE a.id OPERATOR(pg_catalog.=) $1",
			2, (Oid[]) {UUIDOID, TEXTOID});
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
	return a;
}

static void
set_status(pg_uuid_t *id, const char *status)
{
	Datum		args[2] = {UUIDPGetDatum(id), CStringGetTextDatum(status)};

	if (SPI_execute_plan(status_set_plan, args, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "changing an account's status failed");
}

/* A status change becomes an outbox event (topic "ledger", aggregate the account). */
static void
emit_account_event(pg_uuid_t *id, pg_uuid_t *tenant, const char *status)
{
	JsonbParseState *st = NULL;
	JsonbValue *res;
	const char *type = strcmp(status, "frozen") == 0 ? "account.frozen" :
		strcmp(status, "active") == 0 ? "account.unfrozen" : "account.closed";

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
	if (a.status == target)
	{
		SPI_finish();
		PG_RETURN_VOID();		/* idempotent */
	}
	if (a.status == 'c')
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_ACCOUNT_STATUS_CHANGE),
				 errmsg("account %s is closed and cannot be made %s", uuid_text(id), status),
				 errhint("Closing an account is final.")));
	if (target == 'c' && (a.debits_pending != 0 || a.credits_pending != 0))
		ereport(ERROR,
				(errcode(ERRCODE_FC_ACCOUNT_HAS_PENDING),
				 errmsg("account %s cannot be closed while it has pending amounts", uuid_text(id)),
				 errdetail("Debits pending " INT64_FORMAT ", credits pending " INT64_FORMAT " (minor units).",
						   a.debits_pending, a.credits_pending),
				 errhint("Post, void or let expire its holds first.")));
	set_status(id, status);
	emit_account_event(id, &tenant, status);
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
