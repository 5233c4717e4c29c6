/*
 * currency.c — currency codes, the compiled ISO 4217 table, and the registry
 * of user-defined assets (fincore.currency_registry).
 *
 * The exponent of a registered currency is looked up once per backend and
 * cached.  Registrations are immutable (a trigger refuses UPDATE of code or
 * exponent, DELETE and TRUNCATE), so a cached exponent can only go stale if
 * the registry itself is dropped, which its cache watch catches, or if
 * the registering transaction rolls back, which is why rows written by our
 * own open transaction are never cached.
 */
#include "fincore.h"

#include "cache_watch.h"
#include "money.h"
#include "owner_sql.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "iso4217.h"

#define ISO_CURRENCY_COUNT lengthof(iso_currencies)

/* ---- packing ---- */

static inline int
currency_char_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0' + 1;
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 11;
	return -1;
}

bool
currency_pack(const char *code, int len, CurrencyCode *result)
{
	int64		packed = 0;

	if (len < CURRENCY_CODE_MIN_LEN || len > CURRENCY_CODE_MAX_LEN)
		return false;
	for (int i = 0; i < CURRENCY_CODE_MAX_LEN; i++)
	{
		int			d = 0;

		if (i < len)
		{
			d = currency_char_digit(code[i]);
			if (d < 0)
				return false;
		}
		packed = packed * 37 + d;
	}
	*result = packed;
	return true;
}

void
currency_unpack(CurrencyCode code, char *buf)
{
	char		rev[CURRENCY_CODE_MAX_LEN];
	int			n = 0;

	for (int i = 0; i < CURRENCY_CODE_MAX_LEN; i++)
	{
		int			d = (int) (code % 37);

		code /= 37;
		rev[i] = d == 0 ? '\0' : (d <= 10 ? '0' + d - 1 : 'A' + d - 11);
	}
	for (int i = CURRENCY_CODE_MAX_LEN - 1; i >= 0; i--)
		if (rev[i] != '\0')
			buf[n++] = rev[i];
	buf[n] = '\0';
}

CurrencyCode
currency_pack_or_error(const char *code, int len)
{
	CurrencyCode packed;

	if (!currency_pack(code, len, &packed))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CURRENCY_CODE),
				 errmsg("invalid currency code: \"%.*s\"", Min(len, 64), code),
				 errhint("A currency code is 3 to 12 upper-case letters or digits, e.g. USD or POINTS.")));
	return packed;
}

/* ---- compiled ISO 4217 table ---- */

static CurrencyCode iso_packed[ISO_CURRENCY_COUNT];
static bool iso_packed_ready = false;

const IsoCurrency *
iso_currency_lookup(CurrencyCode code)
{
	int			lo = 0,
				hi = (int) ISO_CURRENCY_COUNT - 1;

	/* Packing preserves string order, so the sorted table stays sorted. */
	if (unlikely(!iso_packed_ready))
	{
		for (int i = 0; i < (int) ISO_CURRENCY_COUNT; i++)
			if (!currency_pack(iso_currencies[i].code, strlen(iso_currencies[i].code), &iso_packed[i]))
				elog(ERROR, "malformed compiled currency code \"%s\"", iso_currencies[i].code);
		iso_packed_ready = true;
	}
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (iso_packed[mid] == code)
			return &iso_currencies[mid];
		if (iso_packed[mid] < code)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

/* ---- registered currencies ---- */

typedef struct RegistryEntry
{
	CurrencyCode code;			/* hash key */
	int			exponent;
} RegistryEntry;

static HTAB *registry_cache = NULL;
static CacheWatch registry_watch;
static SPIPlanPtr registry_lookup_plan = NULL;
static SPIPlanPtr register_plan = NULL;

/* An empty cache of registered codes, filled as they are looked up. */
static void
registry_cache_reset(void)
{
	HASHCTL		ctl;
	Oid			nsp;
	Oid			relid = InvalidOid;

	if (registry_cache != NULL)
		hash_destroy(registry_cache);
	ctl.keysize = sizeof(CurrencyCode);
	ctl.entrysize = sizeof(RegistryEntry);
	ctl.hcxt = TopMemoryContext;
	registry_cache = hash_create("fincore currency registry", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	nsp = get_namespace_oid("fincore", true);
	if (OidIsValid(nsp))
		relid = get_relname_relid("currency_registry", nsp);
	cache_watch_begin(&registry_watch, OidIsValid(relid) ? 1 : 0, &relid);
	cache_watch_done(&registry_watch);
}

/* Returns the exponent of a registered code, or -1 when it is not registered. */
static int
registry_lookup(CurrencyCode code)
{
	RegistryEntry *entry;
	char		buf[CURRENCY_CODE_MAX_LEN + 1];
	Datum		arg;
	int			exponent = -1;
	bool		cacheable = true;
	int			nest;

	if (!cache_watch_valid(&registry_watch))
		registry_cache_reset();
	entry = hash_search(registry_cache, &code, HASH_FIND, NULL);
	if (entry != NULL)
		return entry->exponent;

	currency_unpack(code, buf);
	arg = CStringGetTextDatum(buf);

	fincore_spi_connect();
	if (registry_lookup_plan == NULL)
		registry_lookup_plan = fincore_prepare("SELECT r.exponent, r.xmin FROM fincore.currency_registry r "
											   " WHERE r.code OPERATOR(pg_catalog.=) $1",
											   1, (Oid[]) {TEXTOID}, 0);
	nest = fincore_pin_search_path();
	if (SPI_execute_plan(registry_lookup_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "currency registry look-up failed");
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d;

		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		exponent = isnull ? -1 : DatumGetInt32(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		/* A row of our own open transaction may still roll back. */
		if (!isnull && TransactionIdIsCurrentTransactionId(DatumGetTransactionId(d)))
			cacheable = false;
	}
	fincore_unpin_search_path(nest);
	SPI_finish();

	/* Not if the registry changed while it was read. */
	if (exponent >= 0 && cacheable && cache_watch_valid(&registry_watch))
	{
		entry = hash_search(registry_cache, &code, HASH_ENTER, NULL);
		entry->exponent = exponent;
	}
	return exponent;
}

int
currency_exponent_if_known(CurrencyCode code)
{
	const IsoCurrency *iso = iso_currency_lookup(code);

	return iso != NULL ? iso->exponent : registry_lookup(code);
}

int
currency_exponent(CurrencyCode code)
{
	int			exponent = currency_exponent_if_known(code);

	if (exponent < 0)
	{
		char		buf[CURRENCY_CODE_MAX_LEN + 1];

		currency_unpack(code, buf);
		ereport(ERROR,
				(errcode(ERRCODE_FC_UNKNOWN_CURRENCY),
				 errmsg("unknown currency: \"%s\"", buf),
				 errhint("Use an active ISO 4217 code, or register the asset with fincore.register_currency().")));
	}
	return exponent;
}

/* ---- SQL-callable ---- */

PG_FUNCTION_INFO_V1(fincore_currency_exponent);
Datum
fincore_currency_exponent(PG_FUNCTION_ARGS)
{
	text	   *code = PG_GETARG_TEXT_PP(0);

	PG_RETURN_INT32(currency_exponent(currency_pack_or_error(VARDATA_ANY(code),
															 VARSIZE_ANY_EXHDR(code))));
}

/* fincore.iso_currencies(): the compiled table, for the fincore.currencies view. */
PG_FUNCTION_INFO_V1(fincore_iso_currencies);
Datum
fincore_iso_currencies(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < (int) ISO_CURRENCY_COUNT; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(iso_currencies[i].code);
		values[1] = Int16GetDatum(iso_currencies[i].numeric);
		values[2] = Int16GetDatum(iso_currencies[i].exponent);
		values[3] = CStringGetTextDatum(iso_currencies[i].name);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * fincore.register_currency(code, exponent, name): idempotent registration of
 * a user-defined asset.  Re-registering the same code with the same exponent
 * is a no-op; with another exponent it is a conflict, because amounts already
 * stored in that currency would change value.
 */
PG_FUNCTION_INFO_V1(fincore_register_currency);
Datum
fincore_register_currency(PG_FUNCTION_ARGS)
{
	text	   *code_text;
	int32		exponent;
	CurrencyCode code;
	char		buf[CURRENCY_CODE_MAX_LEN + 1];
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	Oid			argtypes[3] = {TEXTOID, INT4OID, TEXTOID};
	int			existing;
	int			nest;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CURRENCY_CODE),
				 errmsg("currency code and exponent must not be null")));
	code_text = PG_GETARG_TEXT_PP(0);
	exponent = PG_GETARG_INT32(1);
	code = currency_pack_or_error(VARDATA_ANY(code_text), VARSIZE_ANY_EXHDR(code_text));
	currency_unpack(code, buf);

	if (exponent < 0 || exponent > CURRENCY_EXPONENT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_EXPONENT),
				 errmsg("invalid exponent %d for currency \"%s\"", exponent, buf),
				 errhint("The exponent is the number of decimal places of the minor unit, 0 to %d.",
						 CURRENCY_EXPONENT_MAX)));
	if (iso_currency_lookup(code) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_CURRENCY_CONFLICT),
				 errmsg("currency \"%s\" is an ISO 4217 currency and cannot be registered", buf)));

	args[0] = CStringGetTextDatum(buf);
	args[1] = Int32GetDatum(exponent);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	else
		args[2] = PG_GETARG_DATUM(2);

	/* One statement: the row we insert, or the one already registered. */
	fincore_spi_connect();
	if (register_plan == NULL)
		register_plan = fincore_prepare("WITH ins AS (INSERT INTO fincore.currency_registry AS r (code, exponent, name) "
										"VALUES ($1, $2, $3) ON CONFLICT (code) DO NOTHING RETURNING r.exponent) "
										"SELECT i.exponent FROM ins i UNION ALL "
										"SELECT r.exponent FROM fincore.currency_registry r "
										" WHERE r.code OPERATOR(pg_catalog.=) $1", 3, argtypes, 0);
	nest = fincore_pin_search_path();
	if (SPI_execute_plan(register_plan, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "currency registration failed");
	fincore_unpin_search_path(nest);
	{
		bool		isnull;

		existing = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();

	if (existing != exponent)
		ereport(ERROR,
				(errcode(ERRCODE_FC_CURRENCY_CONFLICT),
				 errmsg("currency \"%s\" is already registered with exponent %d, not %d",
						buf, existing, exponent),
				 errhint("A registered currency's exponent never changes; register a new code instead.")));
	PG_RETURN_VOID();
}

/* Trigger on fincore.currency_registry: registrations are immutable. */
PG_FUNCTION_INFO_V1(fincore_currency_registry_guard);
Datum
fincore_currency_registry_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "fincore_currency_registry_guard: not called as a trigger");

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		TupleDesc	desc = trigdata->tg_relation->rd_att;
		HeapTuple	oldtup = trigdata->tg_trigtuple;
		HeapTuple	newtup = trigdata->tg_newtuple;
		bool		n1,
					n2;
		int			code_att = SPI_fnumber(desc, "code");
		int			exp_att = SPI_fnumber(desc, "exponent");
		Datum		oc = SPI_getbinval(oldtup, desc, code_att, &n1);
		Datum		nc = SPI_getbinval(newtup, desc, code_att, &n2);

		if (n1 == n2 && !n1 && DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, oc, nc)) &&
			DatumGetInt32(SPI_getbinval(oldtup, desc, exp_att, &n1)) ==
			DatumGetInt32(SPI_getbinval(newtup, desc, exp_att, &n2)))
			return PointerGetDatum(newtup);
	}
	ereport(ERROR,
			(errcode(ERRCODE_FC_CURRENCY_IMMUTABLE),
			 errmsg("registered currencies cannot be changed or removed"),
			 errdetail("Amounts stored in a currency depend on its code and exponent."),
			 errhint("Only a registration's name may be updated.")));
	return (Datum) 0;			/* not reached */
}
