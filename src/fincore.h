/*
 * fincore.h — declarations shared by fincore's C modules.
 *
 * Every error fincore raises uses a SQLSTATE of class ZF (implementation
 * defined range: classes starting with I-Z are reserved for implementations).
 * The subclass's first digit names the module: 1xx money, 2xx tenancy,
 * 3xx ledger, 4xx fees, 5xx outbox, 6xx queue.  docs/errors.md lists every
 * code; test/property/test_errors_doc.py keeps the two in step.
 */
#ifndef FINCORE_H
#define FINCORE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#ifndef HAVE_INT128
#error "fincore needs a compiler with a 128-bit integer type"
#endif

/* ---- SQLSTATEs: money (ZF1xx) ---- */
#define ERRCODE_FC_INVALID_AMOUNT_TEXT		MAKE_SQLSTATE('Z','F','1','0','1')
#define ERRCODE_FC_UNKNOWN_CURRENCY			MAKE_SQLSTATE('Z','F','1','0','2')
#define ERRCODE_FC_CURRENCY_MISMATCH		MAKE_SQLSTATE('Z','F','1','0','3')
#define ERRCODE_FC_AMOUNT_OUT_OF_RANGE		MAKE_SQLSTATE('Z','F','1','0','4')
#define ERRCODE_FC_PRECISION_LOSS			MAKE_SQLSTATE('Z','F','1','0','5')
#define ERRCODE_FC_DIVISION_BY_ZERO			MAKE_SQLSTATE('Z','F','1','0','6')
#define ERRCODE_FC_INVALID_ROUNDING_MODE	MAKE_SQLSTATE('Z','F','1','0','7')
#define ERRCODE_FC_INVALID_ALLOCATION		MAKE_SQLSTATE('Z','F','1','0','8')
#define ERRCODE_FC_INVALID_CURRENCY_CODE	MAKE_SQLSTATE('Z','F','1','0','9')
#define ERRCODE_FC_INVALID_EXPONENT			MAKE_SQLSTATE('Z','F','1','1','0')
#define ERRCODE_FC_CURRENCY_CONFLICT		MAKE_SQLSTATE('Z','F','1','1','1')
#define ERRCODE_FC_INVALID_NUMBER			MAKE_SQLSTATE('Z','F','1','1','2')
#define ERRCODE_FC_CURRENCY_IMMUTABLE		MAKE_SQLSTATE('Z','F','1','1','3')

/* ---- SQLSTATEs: tenancy (ZF2xx) ---- */
#define ERRCODE_FC_INVALID_CLAIMS			MAKE_SQLSTATE('Z','F','2','0','1')
#define ERRCODE_FC_INVALID_CLAIM_UUID		MAKE_SQLSTATE('Z','F','2','0','2')
#define ERRCODE_FC_TENANT_REQUIRED			MAKE_SQLSTATE('Z','F','2','0','3')
#define ERRCODE_FC_TENANT_NOT_FOUND			MAKE_SQLSTATE('Z','F','2','0','4')
#define ERRCODE_FC_INVALID_TENANT_COLUMN	MAKE_SQLSTATE('Z','F','2','0','5')
#define ERRCODE_FC_INVALID_MEMBER_ROLE		MAKE_SQLSTATE('Z','F','2','0','6')
#define ERRCODE_FC_NOT_A_TABLE				MAKE_SQLSTATE('Z','F','2','0','7')
#define ERRCODE_FC_TENANT_EXISTS			MAKE_SQLSTATE('Z','F','2','0','8')

/* ---- SQLSTATEs: fees (ZF4xx) ---- */
#define ERRCODE_FC_FEE_SCHEDULE_NOT_FOUND	MAKE_SQLSTATE('Z','F','4','0','1')
#define ERRCODE_FC_INVALID_FEE_SCHEDULE		MAKE_SQLSTATE('Z','F','4','0','2')
#define ERRCODE_FC_UNKNOWN_FEE_COMPONENT	MAKE_SQLSTATE('Z','F','4','0','3')
#define ERRCODE_FC_INVALID_FEE_RATE			MAKE_SQLSTATE('Z','F','4','0','4')
#define ERRCODE_FC_INVALID_FEE_LIMITS		MAKE_SQLSTATE('Z','F','4','0','5')
#define ERRCODE_FC_INVALID_FEE_TIERS		MAKE_SQLSTATE('Z','F','4','0','6')
#define ERRCODE_FC_FEE_CURRENCY_MISMATCH	MAKE_SQLSTATE('Z','F','4','0','7')
#define ERRCODE_FC_FEE_SCHEDULE_OVERLAP		MAKE_SQLSTATE('Z','F','4','0','8')
#define ERRCODE_FC_INVALID_FEE_AMOUNT		MAKE_SQLSTATE('Z','F','4','0','9')
#define ERRCODE_FC_FEE_EXCEEDS_AMOUNT		MAKE_SQLSTATE('Z','F','4','1','0')
#define ERRCODE_FC_INVALID_FEE_MODE			MAKE_SQLSTATE('Z','F','4','1','1')
#define ERRCODE_FC_GROSS_UP_IMPOSSIBLE		MAKE_SQLSTATE('Z','F','4','1','2')
#define ERRCODE_FC_INVALID_FEE_CONTEXT		MAKE_SQLSTATE('Z','F','4','1','3')
/* ---- SQLSTATEs: outbox and inbox (ZF5xx) ---- */
#define ERRCODE_FC_INVALID_EVENT			MAKE_SQLSTATE('Z','F','5','0','1')
#define ERRCODE_FC_UNKNOWN_CONSUMER			MAKE_SQLSTATE('Z','F','5','0','2')
#define ERRCODE_FC_INVALID_CONSUMER			MAKE_SQLSTATE('Z','F','5','0','3')
#define ERRCODE_FC_CONSUMER_CONFLICT		MAKE_SQLSTATE('Z','F','5','0','4')
#define ERRCODE_FC_CONSUMER_FORBIDDEN		MAKE_SQLSTATE('Z','F','5','0','5')
#define ERRCODE_FC_INVALID_ACK				MAKE_SQLSTATE('Z','F','5','0','6')
#define ERRCODE_FC_INVALID_SIGNATURE_HEADER	MAKE_SQLSTATE('Z','F','5','0','7')
#define ERRCODE_FC_SIGNATURE_MISMATCH		MAKE_SQLSTATE('Z','F','5','0','8')
#define ERRCODE_FC_STALE_WEBHOOK			MAKE_SQLSTATE('Z','F','5','0','9')
#define ERRCODE_FC_INVALID_WEBHOOK_PAYLOAD	MAKE_SQLSTATE('Z','F','5','1','0')
#define ERRCODE_FC_INVALID_INBOX_ARGUMENT	MAKE_SQLSTATE('Z','F','5','1','1')
#define ERRCODE_FC_INVALID_OUTBOX_SETTING	MAKE_SQLSTATE('Z','F','5','1','2')

/* The value of a hexadecimal digit, or -1. */
static inline int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * The longest identifier an outside system gives fincore, in bytes: an inbox
 * message id (a webhook's event id) and a job's unique key, which
 * accept_webhook() sets to that event id.  One length for both, so whatever
 * the inbox accepts the queue accepts too.
 */
#define EXTERNAL_ID_MAX_LEN		500

/* ---- SQLSTATEs: queue (ZF6xx) ---- */
#define ERRCODE_FC_JOB_NOT_FOUND			MAKE_SQLSTATE('Z','F','6','0','1')
#define ERRCODE_FC_LEASE_LOST				MAKE_SQLSTATE('Z','F','6','0','2')
#define ERRCODE_FC_JOB_NOT_DEAD				MAKE_SQLSTATE('Z','F','6','0','3')
#define ERRCODE_FC_INVALID_QUEUE_NAME		MAKE_SQLSTATE('Z','F','6','0','4')
#define ERRCODE_FC_INVALID_JOB_OPTION		MAKE_SQLSTATE('Z','F','6','0','5')
#define ERRCODE_FC_UNIQUE_JOB_CONFLICT		MAKE_SQLSTATE('Z','F','6','0','6')
#define ERRCODE_FC_JOB_FINISHED				MAKE_SQLSTATE('Z','F','6','0','7')
#define ERRCODE_FC_PG_CRON_NOT_INSTALLED	MAKE_SQLSTATE('Z','F','6','0','8')
#define ERRCODE_FC_INVALID_SCHEDULE			MAKE_SQLSTATE('Z','F','6','0','9')

/* ---- currencies (currency.c) ---- */

/*
 * A currency is identified by its code packed into an int64: each character
 * is a base-37 digit (0 = padding, '0'-'9' = 1-10, 'A'-'Z' = 11-36), most
 * significant first, so packed codes order like the strings and 12 characters
 * fit below 2^63.  Packing makes every amount self-describing: equality,
 * hashing and ordering never need a catalogue look-up; only the exponent does.
 */
typedef int64 CurrencyCode;

#define CURRENCY_CODE_MIN_LEN	3
#define CURRENCY_CODE_MAX_LEN	12
#define CURRENCY_EXPONENT_MAX	18

/* Parse and pack a code of len bytes; false if it is not 3-12 of [A-Z0-9]. */
extern bool currency_pack(const char *code, int len, CurrencyCode *result);
/* Unpack into buf (at least CURRENCY_CODE_MAX_LEN + 1 bytes). */
extern void currency_unpack(CurrencyCode code, char *buf);
/* Pack or raise ERRCODE_FC_INVALID_CURRENCY_CODE naming the value. */
extern CurrencyCode currency_pack_or_error(const char *code, int len);
/* Exponent of a known currency (compiled ISO 4217 or registered), or raise
 * ERRCODE_FC_UNKNOWN_CURRENCY. */
extern int	currency_exponent(CurrencyCode code);
/* The compiled ISO 4217 entry for code, or NULL. */
typedef struct IsoCurrency
{
	const char *code;
	int16		numeric;
	int16		exponent;
	const char *name;
} IsoCurrency;
extern const IsoCurrency *iso_currency_lookup(CurrencyCode code);

/* ---- exact rounding (rounding.c) ---- */

typedef enum RoundingMode
{
	ROUND_HALF_EVEN,
	ROUND_HALF_UP,
	ROUND_HALF_DOWN,
	ROUND_UP,					/* away from zero */
	ROUND_DOWN,					/* toward zero */
	ROUND_CEILING,
	ROUND_FLOOR
} RoundingMode;

/* Where a discarded remainder lies relative to half a unit of the result. */
typedef enum RemainderClass
{
	REM_ZERO,
	REM_BELOW_HALF,
	REM_HALF,
	REM_ABOVE_HALF
} RemainderClass;

extern RoundingMode rounding_mode_from_text(text *mode);
/* Round a truncated quotient magnitude given its sign and remainder class. */
extern uint128 round_magnitude(uint128 quotient, bool negative,
							   RemainderClass rem, RoundingMode mode);
/* n / d rounded with mode; d != 0 (callers check). */
extern int128 div_round_int128(int128 n, int128 d, RoundingMode mode);
/* Raise ERRCODE_FC_AMOUNT_OUT_OF_RANGE unless v fits in int64. */
extern int64 int128_to_int64_checked(int128 v, const char *what);

/*
 * An exact decimal parsed from numeric text: value = mantissa / 10^scale,
 * with trailing fractional zeros removed.  Fails (returns false) when the
 * mantissa needs more than 38 significant digits.
 */
typedef struct ExactDecimal
{
	int128		mantissa;
	int			scale;
} ExactDecimal;

/* Text of a numeric Datum; raises ERRCODE_FC_INVALID_NUMBER on NaN/Infinity. */
extern char *numeric_datum_to_cstring(Datum num);
/* Parse numeric_out text exactly; false if it needs more than 38 digits. */
extern bool decimal_parse_exact(const char *s, ExactDecimal *result);
/*
 * Scale numeric_out text by 10^exponent and round it to an integer with *mode;
 * mode NULL means no rounding is allowed (ERRCODE_FC_PRECISION_LOSS naming
 * the value and currency when it would be needed).
 */
extern int128 decimal_scale_round(const char *s, int exponent,
								  const RoundingMode *mode, const char *currency);

/* ---- the amount type (amount.c) ---- */

typedef struct Amount
{
	int64		units;			/* count of minor units */
	CurrencyCode currency;		/* packed currency code */
} Amount;

#define DatumGetAmountP(X)		((Amount *) DatumGetPointer(X))
#define AmountPGetDatum(X)		PointerGetDatum(X)
#define PG_GETARG_AMOUNT_P(n)	DatumGetAmountP(PG_GETARG_DATUM(n))
#define PG_RETURN_AMOUNT_P(x)	return AmountPGetDatum(x)

extern Amount *amount_make(int64 units, CurrencyCode currency);
/* Parse amount text "[+-]digits[.digits] CODE" (ZF101, ZF102, ZF105, ZF104). */
extern Amount *amount_parse(const char *str);
/* Format "units/10^exponent" into a palloc'd decimal string (no code). */
extern char *format_minor_units(int64 units, int exponent);

/* Raise ERRCODE_FC_CURRENCY_MISMATCH unless a and b share a currency. */
static inline void
amount_check_same_currency(const Amount *a, const Amount *b)
{
	if (unlikely(a->currency != b->currency))
	{
		char		ca[CURRENCY_CODE_MAX_LEN + 1];
		char		cb[CURRENCY_CODE_MAX_LEN + 1];

		currency_unpack(a->currency, ca);
		currency_unpack(b->currency, cb);
		ereport(ERROR,
				(errcode(ERRCODE_FC_CURRENCY_MISMATCH),
				 errmsg("currency mismatch: %s and %s", ca, cb),
				 errhint("Convert one amount explicitly before combining or comparing them.")));
	}
}

/* ---- SQLSTATEs: ledger (ZF3xx); a currency mismatch is the money module's ZF103 ---- */
#define ERRCODE_FC_ACCOUNT_NOT_FOUND			MAKE_SQLSTATE('Z','F','3','0','1')
#define ERRCODE_FC_SAME_ACCOUNT					MAKE_SQLSTATE('Z','F','3','0','2')
#define ERRCODE_FC_INVALID_AMOUNT				MAKE_SQLSTATE('Z','F','3','0','3')
#define ERRCODE_FC_EXCEEDS_CREDITS				MAKE_SQLSTATE('Z','F','3','0','4')
#define ERRCODE_FC_EXCEEDS_DEBITS				MAKE_SQLSTATE('Z','F','3','0','5')
#define ERRCODE_FC_ACCOUNT_FROZEN				MAKE_SQLSTATE('Z','F','3','0','6')
#define ERRCODE_FC_ACCOUNT_CLOSED				MAKE_SQLSTATE('Z','F','3','0','7')
#define ERRCODE_FC_PENDING_TRANSFER_NOT_FOUND	MAKE_SQLSTATE('Z','F','3','0','8')
#define ERRCODE_FC_NOT_A_PENDING_TRANSFER		MAKE_SQLSTATE('Z','F','3','0','9')
#define ERRCODE_FC_PENDING_ALREADY_POSTED		MAKE_SQLSTATE('Z','F','3','1','0')
#define ERRCODE_FC_PENDING_ALREADY_VOIDED		MAKE_SQLSTATE('Z','F','3','1','1')
#define ERRCODE_FC_PENDING_TRANSFER_EXPIRED		MAKE_SQLSTATE('Z','F','3','1','2')
#define ERRCODE_FC_EXCEEDS_PENDING_AMOUNT		MAKE_SQLSTATE('Z','F','3','1','3')
#define ERRCODE_FC_TRANSFER_NOT_FOUND			MAKE_SQLSTATE('Z','F','3','1','4')
#define ERRCODE_FC_TRANSFER_NOT_REVERSIBLE		MAKE_SQLSTATE('Z','F','3','1','5')
#define ERRCODE_FC_EXCEEDS_REVERSIBLE_AMOUNT	MAKE_SQLSTATE('Z','F','3','1','6')
#define ERRCODE_FC_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS MAKE_SQLSTATE('Z','F','3','1','7')
#define ERRCODE_FC_INVALID_TIMEOUT				MAKE_SQLSTATE('Z','F','3','1','8')
#define ERRCODE_FC_BALANCE_OVERFLOW				MAKE_SQLSTATE('Z','F','3','1','9')
#define ERRCODE_FC_TRANSFER_ID_CONFLICT			MAKE_SQLSTATE('Z','F','3','2','0')
#define ERRCODE_FC_INVALID_TRANSFER_REQUEST		MAKE_SQLSTATE('Z','F','3','2','1')
#define ERRCODE_FC_INVALID_ACCOUNT_FLAGS		MAKE_SQLSTATE('Z','F','3','2','3')
#define ERRCODE_FC_INVALID_CREDIT_LIMIT			MAKE_SQLSTATE('Z','F','3','2','4')
#define ERRCODE_FC_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS MAKE_SQLSTATE('Z','F','3','2','5')
#define ERRCODE_FC_ACCOUNT_HAS_PENDING			MAKE_SQLSTATE('Z','F','3','2','6')
#define ERRCODE_FC_LEDGER_APPEND_ONLY			MAKE_SQLSTATE('Z','F','3','2','7')
#define ERRCODE_FC_INVALID_ACCOUNT_STATUS_CHANGE MAKE_SQLSTATE('Z','F','3','2','8')
#define ERRCODE_FC_RESERVED_ID					MAKE_SQLSTATE('Z','F','3','2','9')
#define ERRCODE_FC_PENDING_TRANSFER_MISMATCH	MAKE_SQLSTATE('Z','F','3','3','0')
#define ERRCODE_FC_TRANSFER_ID_ALREADY_FAILED	MAKE_SQLSTATE('Z','F','3','3','1')
#define ERRCODE_FC_INVALID_IMPORTED_TRANSFER	MAKE_SQLSTATE('Z','F','3','3','2')

/* ---- bounds per call (fincore.c) ---- */

/*
 * fincore.max_batch_size: the most items one call takes (enqueue_many's
 * payloads, replay_dead's ids, subscribe's topics, create_account's flags;
 * functions with a smaller cap of their own, such as create_transfers, keep
 * it).  fincore.max_payload_size: the largest payload in bytes (an event's
 * payload and headers, a job's payload, an inbox message, a webhook body).
 * Both are PGC_SUSET: a caller cannot raise them for itself.
 */
extern int	fincore_max_batch_size;
extern int	fincore_max_payload_size;

/* Raise sqlstate unless n items fit in one call of what (its own cap, or the GUC if lower). */
static inline void
check_batch_size(int64 n, int64 cap, int sqlstate, const char *what)
{
	int64		limit = Min(cap, (int64) fincore_max_batch_size);

	if (unlikely(n > limit))
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s takes at most " INT64_FORMAT " items a call, not " INT64_FORMAT, what, limit, n),
				 errhint("Split the call; the limit is fincore.max_batch_size (%d)%s.", fincore_max_batch_size,
						 cap < fincore_max_batch_size ? psprintf(", capped at " INT64_FORMAT " for this function", cap) : "")));
}

/* Raise sqlstate unless a payload of size bytes fits (fincore.max_payload_size). */
static inline void
check_payload_size(int64 size, int sqlstate, const char *what)
{
	if (unlikely(size > fincore_max_payload_size))
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s of " INT64_FORMAT " bytes is larger than %d bytes", what, size, fincore_max_payload_size),
				 errhint("The limit is fincore.max_payload_size; keep large documents elsewhere and pass a reference.")));
}

/* ---- SQL run with the owner's rights (owner_sql.c) ---- */

/* The search_path of every statement fincore runs: nothing of the caller's. */
#define FINCORE_SEARCH_PATH "pg_catalog, pg_temp"

/* Defines fincore.owner_context (called from _PG_init). */
extern void owner_sql_init(void);
/* SPI_connect, or elog. */
extern void fincore_spi_connect(void);
/*
 * SPI_prepare_cursor + SPI_keepplan under the pinned search_path, or elog.
 * Every statement fincore prepares comes through here.
 */
extern SPIPlanPtr fincore_prepare(const char *sql, int nargs, Oid *argtypes, int cursor_options);
/* Pin search_path at a new GUC nest level; undo with fincore_unpin_search_path. */
extern int	fincore_pin_search_path(void);
extern void fincore_unpin_search_path(int nest);
/*
 * Run fn(arg) as the owner of a relation (reads past grants; past RLS through
 * the owner's fincore_owner policy), with search_path pinned.
 */
extern void fincore_run_as_owner(Oid relid, void (*fn) (void *), void *arg);

/* ---- tenancy (tenancy.c) ---- */

extern void tenancy_init(void);
/* The current tenant / user; false when there is none. */
extern bool tenancy_current_tenant(pg_uuid_t *out);
extern bool tenancy_current_user(pg_uuid_t *out);
/* The current tenant, or raise ERRCODE_FC_TENANT_REQUIRED. */
extern void tenancy_require_tenant(pg_uuid_t *out);
/* Is the current user a member of tenant (with role, when role is not NULL)? */
extern bool tenancy_has_role(const pg_uuid_t *tenant, const char *role);

/* ---- ledger (ledger.c, accounts.c) ---- */

/* Account flags, stored as a bit mask in fincore.accounts.flags. */
#define ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS	0x01
#define ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS	0x02
#define ACCOUNT_HISTORY							0x04
#define ACCOUNT_HOT								0x08

/* What never changes about an account, cached per backend by id. */
typedef struct AccountMeta
{
	pg_uuid_t	id;				/* hash key */
	pg_uuid_t	tenant;
	CurrencyCode currency;
	int32		code;
	int32		flags;
} AccountMeta;

/* Cached metadata of an account (NULL if not cached). */
extern AccountMeta *account_meta_lookup(const pg_uuid_t *id);
extern void account_meta_remember(const AccountMeta *meta);
extern void account_meta_forget(const pg_uuid_t *id);
/* The installed SQL of the ledger: 1 for 0.2.0's tables, 0 for 0.1.0's (ledger_store.c). */
extern int	ledger_schema(void);
/* An account's status change as an outbox event (topic "ledger"), e.g. "account.closed". */
extern void account_status_event(const pg_uuid_t *id, const pg_uuid_t *tenant, const char *status,
								 const char *type);
/* SPI_prepare + SPI_keepplan, or elog. */
extern SPIPlanPtr ledger_prepare(const char *sql, int nargs, Oid *argtypes);
/* uuid text for messages */
extern char *uuid_text(const pg_uuid_t *id);

static inline bool
uuid_equal(const pg_uuid_t *a, const pg_uuid_t *b)
{
	return memcmp(a, b, sizeof(pg_uuid_t)) == 0;
}

/*
 * Reserved ids, as in TigerBeetle (where 0 and 2^128 - 1 are reserved): the
 * nil UUID and the all-ones UUID are never the id of a transfer or an account.
 * 0 when id is an ordinary id, else -1 for nil and 1 for all ones.
 */
static inline int
uuid_reserved(const pg_uuid_t *id)
{
	bool		zero = true,
				ones = true;

	for (int i = 0; i < UUID_LEN; i++)
	{
		zero &= id->data[i] == 0x00;
		ones &= id->data[i] == 0xFF;
	}
	return zero ? -1 : ones ? 1 : 0;
}
/* ---- fees (fees.c) ---- */

/*
 * The fee engine's API for the ledger (docs/fees.md, "For the ledger").
 *
 * fees_calculate() finds the version of schedule `code` of the current
 * tenant in force at `at` (ZF203 without a tenant, ZF401 if there is none),
 * checks that it charges in `currency` (ZF407; pass 0 to skip the check when
 * the amount carries no currency) and computes the fee on `amount` minor
 * units (>= 0, else ZF409) for the transfer context `context` (a jsonb
 * object, ZF413 otherwise; NULL means {}).  The result carries the fee, the
 * id of the schedule version used, and a palloc'd breakdown for the
 * transfer's metadata:
 *   {"schedule": code, "schedule_id": uuid, "currency": "USD", "fee": 330,
 *    "components": [{"component": "percentage", "amount": 300}, ...]}
 * whose component amounts sum to the fee.  Schedules are compiled once per
 * backend and cached: a call never parses jsonb or runs SQL on a cache hit.
 *
 * fees_apply_mode() turns an amount and its fee into what the payer is
 * charged and what the payee receives: on_top charges amount + fee and
 * delivers amount; deducted charges amount and delivers amount - fee, and a
 * fee larger than the amount is ZF410.  Overflow is ZF104.
 */
typedef enum FeeMode
{
	FEE_MODE_ON_TOP,
	FEE_MODE_DEDUCTED
} FeeMode;

typedef struct FeeQuote
{
	int64		fee;
	pg_uuid_t	schedule_id;	/* the version that applied */
	Jsonb	   *breakdown;
} FeeQuote;

/* 'on_top' or 'deducted', else ZF411. */
extern FeeMode fee_mode_from_text(text *mode);
extern void fees_calculate(const char *code, CurrencyCode currency, int64 amount,
						   Jsonb *context, TimestampTz at, FeeQuote *out);
extern void fees_apply_mode(FeeMode mode, int64 amount, int64 fee,
							int64 *charge, int64 *delivered);

/* ---- building jsonb (jsonb_build.c): a key, then its value ---- */

extern void jb_key(JsonbParseState **st, const char *key);
extern void jb_string(JsonbParseState **st, const char *s);
extern void jb_int(JsonbParseState **st, int64 n);
extern void jb_null(JsonbParseState **st);
extern void jb_jsonb(JsonbParseState **st, Jsonb *j);

/* ---- job queue (queue.c) ---- */

extern void queue_init(void);

/* ---- time-ordered ids (uuidv7.c) ---- */

extern void uuidv7_generate(pg_uuid_t *out);

/* ---- outbox (outbox.c) ---- */

/*
 * Emit one event in the current transaction, exactly as fincore.emit() does:
 * it is rolled back with the transaction, and events of one (tenant,
 * aggregate_type, aggregate_id) reach every consumer in commit order (the call
 * takes a transaction-scoped lock on the aggregate: emit the events of several
 * aggregates in a consistent order, e.g. sorted by id, to avoid deadlocks).
 *
 *   tenant          the event's tenant; NULL = the current tenant (ZF203 if none).
 *                   Pass the row's tenant when there is no request tenant, e.g.
 *                   expiring holds in fincore.maintenance().
 *   topic           consumers subscribe to topics; the ledger uses "ledger".
 *   event_type      e.g. "transfer.created", "transfer.posted", "transfer.voided",
 *                   "transfer.expired", "transfer.reversed", "account.frozen".
 *   aggregate_type  e.g. "transfer", "account" (Debezium routes by it).
 *   aggregate_id    the aggregate's id as text (e.g. the transfer's uuid).
 *   payload         jsonb, not NULL (the transfer as JSON).
 *   headers         a jsonb object or NULL.
 *   id_out          receives the event id (a UUIDv7), unless NULL.
 *
 * Names are 1-200 characters of [A-Za-z0-9._:/-]; a bad argument raises
 * ERRCODE_FC_INVALID_EVENT.  Works inside the caller's SPI connection (it opens
 * its own) and whatever the current user: it writes as the table's owner.
 * The ledger should first check outbox_ledger_events_enabled(tenant).
 */
extern void outbox_emit_event(const pg_uuid_t *tenant, const char *topic, const char *event_type,
							  const char *aggregate_type, const char *aggregate_id,
							  Jsonb *payload, Jsonb *headers, pg_uuid_t *id_out);

/*
 * Does the ledger emit events for this tenant (NULL = the current tenant; true
 * when there is none)?  fincore.outbox_settings.ledger_events, default true,
 * set per tenant with fincore.set_ledger_events(boolean).  Cached per backend
 * and reloaded only when the table changes: a call costs a short array scan.
 */
extern bool outbox_ledger_events_enabled(const pg_uuid_t *tenant);

#endif							/* FINCORE_H */
