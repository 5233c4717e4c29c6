/*
 * outbox_inbox.c — the idempotent inbox and signed webhooks.
 */
#include "outbox_int.h"

#include "funcapi.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"

/* ---- inbox ---- */

typedef struct InboxArgs
{
	pg_uuid_t	tenant;
	text	   *source;
	text	   *message_id;
	Jsonb	   *payload;		/* may be NULL */
	bool		accepted;		/* out */
	/* accept_webhook: enqueue on this queue when fincore.enqueue exists */
	text	   *queue;
	bool		enqueued;		/* out */
	int64		job_id;			/* out */
	bool		job_id_null;	/* out */
} InboxArgs;

static inline void
check_inbox_text(const char *what, text *t)
{
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len < 1 || len > INBOX_TEXT_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("inbox %s must be 1-%d bytes, not %d", what, INBOX_TEXT_MAX_LEN, len)));
}

static Oid
enqueue_function(void)
{
	Oid			argtypes[6] = {TEXTOID, JSONBOID, TIMESTAMPTZOID, INT2OID, INT4OID, TEXTOID};

	return LookupFuncName(list_make2(makeString("fincore"), makeString("enqueue")), 6, argtypes, true);
}

static void
inbox_as_owner(void *arg)
{
	static SPIPlanPtr plan = NULL;
	InboxArgs  *a = arg;
	Oid			types[4] = {UUIDOID, TEXTOID, TEXTOID, JSONBOID};
	Datum		values[4];
	char		nulls[4] = "    ";

	fincore_spi_connect();
	kept_plan(&plan,
			  "INSERT INTO fincore.inbox (tenant_id, source, message_id, payload) VALUES ($1, $2, $3, $4)"
			  " ON CONFLICT ON CONSTRAINT inbox_pkey DO NOTHING",
			  4, types);
	values[0] = UUIDPGetDatum(&a->tenant);
	values[1] = PointerGetDatum(a->source);
	values[2] = PointerGetDatum(a->message_id);
	values[3] = a->payload ? JsonbPGetDatum(a->payload) : (Datum) 0;
	if (a->payload == NULL)
		nulls[3] = 'n';
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "inbox insert failed");
	a->accepted = SPI_processed == 1;

	/* The Job-queue module may or may not be installed: look at call time. */
	if (a->accepted && a->queue != NULL && OidIsValid(enqueue_function()))
	{
		Oid			qtypes[3] = {TEXTOID, JSONBOID, TEXTOID};
		Datum		qvalues[3] = {PointerGetDatum(a->queue), JsonbPGetDatum(a->payload),
		PointerGetDatum(a->message_id)};
		bool		isnull;

		if (SPI_execute_with_args("SELECT fincore.enqueue($1, $2, pg_catalog.now(), 0::pg_catalog.int2, 25, $3)",
								  3, qtypes, qvalues, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "fincore.enqueue failed");
		a->enqueued = true;
		a->job_id = DatumGetInt64(spi_value(0, 1, &isnull));
		a->job_id_null = isnull;
	}
	SPI_finish();
}

static void
inbox_record(InboxArgs *a)
{
	tenancy_require_tenant(&a->tenant);
	fincore_run_as_owner(fincore_table_oid("inbox"), inbox_as_owner, a);
}

PG_FUNCTION_INFO_V1(fincore_inbox_accept);
Datum
fincore_inbox_accept(PG_FUNCTION_ARGS)
{
	InboxArgs	a;

	memset(&a, 0, sizeof(a));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("inbox source and message id must not be null")));
	a.source = PG_GETARG_TEXT_PP(0);
	a.message_id = PG_GETARG_TEXT_PP(1);
	a.payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	check_inbox_text("source", a.source);
	check_inbox_text("message id", a.message_id);
	if (a.payload != NULL)
		check_payload_size(VARSIZE(a.payload), ERRCODE_FC_INVALID_INBOX_ARGUMENT, "an inbox payload");
	inbox_record(&a);
	PG_RETURN_BOOL(a.accepted);
}

/* ---- webhooks ---- */

#define MAX_SIGNATURES 8

typedef struct SignatureHeader
{
	int64		t;
	int			nsig;
	uint8		sig[MAX_SIGNATURES][HMAC_SHA256_LEN];
} SignatureHeader;

static void
bad_header(const char *header, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_SIGNATURE_HEADER),
			 errmsg("invalid webhook signature header: %s", why),
			 errdetail("Header: \"%.100s\".", header),
			 errhint("Expected t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=...].")));
}

/*
 * Parse "t=1700000000,v1=<64 hex>,v1=...,v0=...": exactly one t, at least one
 * v1; other schemes are ignored, as are v1 values that cannot be a SHA-256
 * MAC (they could never match).
 */
static void
parse_signature_header(const char *header, SignatureHeader *h)
{
	const char *p = header;
	bool		have_t = false;
	int			v1_seen = 0;

	h->nsig = 0;
	while (*p)
	{
		const char *item = p;
		const char *end = strchr(p, ',');
		const char *eq;
		int			len;

		if (end == NULL)
			end = p + strlen(p);
		while (item < end && *item == ' ')
			item++;
		len = (int) (end - item);
		eq = memchr(item, '=', len);
		if (eq == NULL)
			bad_header(header, "an item without '='");
		if (eq - item == 1 && item[0] == 't')
		{
			int64		t = 0;
			const char *d = eq + 1;

			if (have_t)
				bad_header(header, "more than one timestamp");
			if (d == end || end - d > 12)
				bad_header(header, "the timestamp is not a number of seconds");
			for (; d < end; d++)
			{
				if (*d < '0' || *d > '9')
					bad_header(header, "the timestamp is not a number of seconds");
				t = t * 10 + (*d - '0');
			}
			h->t = t;
			have_t = true;
		}
		else if (eq - item == 2 && item[0] == 'v' && item[1] == '1')
		{
			const char *d = eq + 1;

			v1_seen++;
			if (end - d == 2 * HMAC_SHA256_LEN && h->nsig < MAX_SIGNATURES)
			{
				bool		ok = true;

				for (int i = 0; i < HMAC_SHA256_LEN && ok; i++)
				{
					int			hi = hex_digit(d[2 * i]);
					int			lo = hex_digit(d[2 * i + 1]);

					ok = hi >= 0 && lo >= 0;
					h->sig[h->nsig][i] = (uint8) (hi << 4 | lo);
				}
				if (ok)
					h->nsig++;
			}
		}
		p = *end ? end + 1 : end;
	}
	if (!have_t)
		bad_header(header, "no timestamp (t=)");
	if (v1_seen == 0)
		bad_header(header, "no v1 signature");
}

/* Compare without an early exit: the time taken does not depend on where they differ. */
static bool
equal_constant_time(const uint8 *a, const uint8 *b, int len)
{
	volatile uint8 diff = 0;

	for (int i = 0; i < len; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* pgcrypto's hmac(bytea, bytea, text), found through the extension (not the search_path). */
static Oid
pgcrypto_hmac(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Oid			fn;

	fincore_spi_connect();
	kept_plan(&plan,
			  "SELECT p.oid FROM pg_catalog.pg_depend d"
			  "  JOIN pg_catalog.pg_extension x ON x.oid OPERATOR(pg_catalog.=) d.refobjid"
			  "  JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) d.objid"
			  " WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass"
			  "   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
			  "   AND d.deptype OPERATOR(pg_catalog.=) 'e' AND x.extname OPERATOR(pg_catalog.=) 'pgcrypto'"
			  "   AND p.proname OPERATOR(pg_catalog.=) 'hmac'"
			  "   AND p.proargtypes OPERATOR(pg_catalog.=) '17 17 25'::pg_catalog.oidvector",
			  0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pgcrypto look-up failed");
	if (SPI_processed != 1)
		elog(ERROR, "pgcrypto's hmac(bytea, bytea, text) was not found");
	fn = DatumGetObjectId(spi_value(0, 1, &isnull));
	SPI_finish();
	return fn;
}

static bool
signature_matches(const SignatureHeader *h, text *payload, text *secret)
{
	char		prefix[32];
	int			plen = snprintf(prefix, sizeof(prefix), INT64_FORMAT ".", h->t);
	int			len = VARSIZE_ANY_EXHDR(payload);
	bytea	   *message = palloc(VARHDRSZ + plen + len);
	bytea	   *key = palloc(VARHDRSZ + VARSIZE_ANY_EXHDR(secret));
	bytea	   *mac;
	bool		match = false;

	SET_VARSIZE(message, VARHDRSZ + plen + len);
	memcpy(VARDATA(message), prefix, plen);
	memcpy(VARDATA(message) + plen, VARDATA_ANY(payload), len);
	SET_VARSIZE(key, VARHDRSZ + VARSIZE_ANY_EXHDR(secret));
	memcpy(VARDATA(key), VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret));
	mac = DatumGetByteaPP(OidFunctionCall3(pgcrypto_hmac(), PointerGetDatum(message), PointerGetDatum(key),
										   CStringGetTextDatum("sha256")));
	if (VARSIZE_ANY_EXHDR(mac) != HMAC_SHA256_LEN)
		elog(ERROR, "hmac returned %d bytes, not %d", (int) VARSIZE_ANY_EXHDR(mac), HMAC_SHA256_LEN);
	/* Every candidate is compared in full, whether or not an earlier one matched. */
	for (int i = 0; i < h->nsig; i++)
		match |= equal_constant_time((const uint8 *) VARDATA_ANY(mac), h->sig[i], HMAC_SHA256_LEN);
	return match;
}

static int64
interval_usecs(Interval *iv)
{
	int128		us = (int128) iv->time + (int128) iv->day * USECS_PER_DAY +
		(int128) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;

	return us > PG_INT64_MAX ? PG_INT64_MAX : us < PG_INT64_MIN ? PG_INT64_MIN : (int64) us;
}

PG_FUNCTION_INFO_V1(fincore_accept_webhook);
Datum
fincore_accept_webhook(PG_FUNCTION_ARGS)
{
	text	   *provider;
	text	   *payload;
	char	   *header;
	text	   *secret;
	int64		tolerance;
	SignatureHeader h;
	int64		now_s;
	Jsonb	   *volatile json = NULL;
	JsonbValue	idv;
	InboxArgs	a;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	char	   *plain;
	int			plen;

	memset(&a, 0, sizeof(a));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("webhook provider, secret and tolerance must not be null")));
	provider = PG_GETARG_TEXT_PP(0);
	plain = text_to_cstring(provider);
	plen = strlen(plain);
	if (plen < 1 || plen > 63 || !outbox_name_ok(plain, plen, 63) || strpbrk(plain, ":/") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("invalid webhook provider: \"%.64s\"", plain),
				 errhint("A provider is a short name such as stripe: 1-63 characters of [A-Za-z0-9._-].")));
	secret = PG_GETARG_TEXT_PP(3);
	if (VARSIZE_ANY_EXHDR(secret) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("webhook secret must not be empty")));
	tolerance = interval_usecs(PG_GETARG_INTERVAL_P(4));
	if (tolerance < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_INBOX_ARGUMENT),
				 errmsg("webhook tolerance must not be negative")));
	if (PG_ARGISNULL(2))
		bad_header("", "no header");
	header = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_WEBHOOK_PAYLOAD),
				 errmsg("webhook payload must not be null")));
	payload = PG_GETARG_TEXT_PP(1);
	check_payload_size(VARSIZE_ANY_EXHDR(payload), ERRCODE_FC_INVALID_WEBHOOK_PAYLOAD, "a webhook payload");

	/* 1. The signature, over the payload exactly as received. */
	parse_signature_header(header, &h);
	if (!signature_matches(&h, payload, secret))
		ereport(ERROR,
				(errcode(ERRCODE_FC_SIGNATURE_MISMATCH),
				 errmsg("webhook signature does not match"),
				 errdetail("None of the %d v1 signature(s) is the HMAC-SHA256 of the timestamp and payload under the secret.",
						   h.nsig),
				 errhint("Check the endpoint secret, and pass the request body unchanged.")));

	/* 2. The timestamp, against replays of an old delivery. */
	now_s = (GetCurrentTimestamp() / USECS_PER_SEC) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
	if ((int128) (now_s - h.t) * USECS_PER_SEC > tolerance || (int128) (h.t - now_s) * USECS_PER_SEC > tolerance)
		ereport(ERROR,
				(errcode(ERRCODE_FC_STALE_WEBHOOK),
				 errmsg("webhook timestamp " INT64_FORMAT " is " INT64_FORMAT " seconds from now, beyond the tolerance",
						h.t, now_s - h.t),
				 errhint("A delivery is accepted within the tolerance (default 5 minutes) of its signing time.")));

	/* 3. The event id inside the payload. */
	PG_TRY();
	{
		json = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text_to_cstring(payload))));
	}
	PG_CATCH();
	{
		FlushErrorState();
		json = NULL;
	}
	PG_END_TRY();
	if (json == NULL || !JB_ROOT_IS_OBJECT(json) || JB_ROOT_IS_SCALAR(json) ||
		getKeyJsonValueFromContainer(&json->root, "id", 2, &idv) == NULL ||
		idv.type != jbvString || idv.val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_WEBHOOK_PAYLOAD),
				 errmsg("webhook payload is not a JSON object with a string \"id\""),
				 errhint("The event id inside the payload is what deduplicates deliveries.")));

	/* 4. Once per (tenant, provider, event id); enqueued when the job queue exists. */
	a.source = cstring_to_text(psprintf("webhook:%s", plain));
	a.queue = a.source;
	a.message_id = cstring_to_text_with_len(idv.val.string.val, idv.val.string.len);
	check_inbox_text("message id", a.message_id);
	a.payload = json;
	inbox_record(&a);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "accept_webhook must return a record");
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = PointerGetDatum(a.message_id);
	values[1] = BoolGetDatum(a.accepted);
	values[2] = Int64GetDatum(a.job_id);
	nulls[2] = !a.enqueued || a.job_id_null;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
