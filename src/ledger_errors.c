/*
 * ledger_errors.c — the error a single call raises for an item's result.
 *
 * A batch reports a result by name; a single call raises it, with the
 * result's SQLSTATE (ledger_results[]) and a message that names the values
 * involved.  Each result's message is a row of item_errors[]: the form that
 * builds it, the words it adds, and a fixed detail and hint.  The forms are
 * small functions over the item; a new result needs a row here (and one in
 * ledger_results[]), rarely a new form.
 */
#include "ledger_int.h"

/* What an error says, besides its SQLSTATE. */
typedef struct ItemErrorText
{
	const char *message;
	const char *detail;			/* NULL: the row's */
	const char *hint;			/* NULL: the row's */
} ItemErrorText;

typedef struct ItemErrorRow ItemErrorRow;
typedef void (*ItemErrorForm) (const LedgerItem *it, const ItemErrorRow *row, ItemErrorText *out);

/* Which of the transfer's accounts a result is about. */
typedef enum ItemSide
{
	SIDE_NONE,
	SIDE_DEBIT,
	SIDE_CREDIT
} ItemSide;

struct ItemErrorRow
{
	ItemErrorForm form;
	ItemSide	side;
	const char *words;			/* what the form puts in: "not found", "frozen", ... */
	const char *detail;
	const char *hint;
};

static inline const LedgerAccount *
side_account(const LedgerItem *it, ItemSide side)
{
	return side == SIDE_DEBIT ? it->dacc : it->cacc;
}

static inline const char *
side_name(ItemSide side)
{
	return side == SIDE_DEBIT ? "debit" : "credit";
}

static inline char *
interval_text(const Interval *i)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum((Interval *) i)));
}

/* ---- the forms ---- */

/* "transfer <id> refused: <result>": results a single call rarely meets, named as a batch names them. */
static void
form_refused(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	out->message = psprintf("transfer %s refused: %s", uuid_text(&it->id), ledger_results[it->result].name);
}

/* The row's words, as they are. */
static void
form_words(const LedgerItem *it pg_attribute_unused(), const ItemErrorRow *row, ItemErrorText *out)
{
	out->message = row->words;
}

/* "transfer id <id> <words>" */
static void
form_transfer_id(const LedgerItem *it, const ItemErrorRow *row, ItemErrorText *out)
{
	out->message = psprintf("transfer id %s %s", uuid_text(&it->id), row->words);
}

/* "<side> account <id> not found": the account as named, or as resolved. */
static void
form_account_not_found(const LedgerItem *it, const ItemErrorRow *row, ItemErrorText *out)
{
	const LedgerAccount *a = side_account(it, row->side);
	const pg_uuid_t *id = a ? &a->meta.id : (row->side == SIDE_DEBIT ? &it->debit : &it->credit);

	out->message = psprintf("%s account %s not found", side_name(row->side), uuid_text(id));
}

/* "<side> account <id> is <words>" */
static void
form_account_state(const LedgerItem *it, const ItemErrorRow *row, ItemErrorText *out)
{
	out->message = psprintf("%s account %s is %s", side_name(row->side),
							uuid_text(&side_account(it, row->side)->meta.id), row->words);
}

/* A limit flag refused the amount: what the account's balances leave room for. */
static void
form_exceeds(const LedgerItem *it, const ItemErrorRow *row, ItemErrorText *out)
{
	const LedgerAccount *a = side_account(it, row->side);
	CurrencyCode cur = a->meta.currency;
	bool		debit = row->side == SIDE_DEBIT;
	const char *limit = a->has_limit ?
		psprintf(" plus the credit limit %s", money_text(a->credit_limit, cur)) : "";

	out->message = psprintf("%s of %s exceeds the %s of account %s",
							it->is_fee_leg ? "the fee" : "transfer", money_text(it->amount, cur),
							debit ? "credits" : "debits", uuid_text(&a->meta.id));
	out->detail = psprintf("Its %s posted %s and pending %s leave no room under its %s posted %s%s.",
						   debit ? "debits" : "credits",
						   money_text(debit ? a->bal.dpo : a->bal.cpo, cur),
						   money_text(debit ? a->bal.dp : a->bal.cp, cur),
						   debit ? "credits" : "debits",
						   money_text(debit ? a->bal.cpo : a->bal.dpo, cur), limit);
}

/* The accounts differ in currency, or the amount is not in theirs. */
static void
form_currency_mismatch(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	char		dc[CURRENCY_CODE_MAX_LEN + 1],
				cc[CURRENCY_CODE_MAX_LEN + 1];

	currency_unpack(it->dacc->meta.currency, dc);
	currency_unpack(it->cacc->meta.currency, cc);
	if (it->has_currency && it->dacc->meta.currency == it->cacc->meta.currency)
	{
		char		ac[CURRENCY_CODE_MAX_LEN + 1];

		currency_unpack(it->currency, ac);
		out->message = psprintf("currency mismatch: the amount is in %s, the accounts are in %s", ac, dc);
		out->hint = "Pass an amount in the accounts' currency.";
		return;
	}
	out->message = psprintf("currency mismatch: debit account %s is in %s, credit account %s in %s",
							uuid_text(&it->dacc->meta.id), dc, uuid_text(&it->cacc->meta.id), cc);
}

static void
form_exists_with_different(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	out->message = psprintf("transfer %s already exists with a different %s", uuid_text(&it->id), it->diff_field);
}

/* "pending transfer <ref> <words>" */
static void
form_pending(const LedgerItem *it, const ItemErrorRow *row, ItemErrorText *out)
{
	out->message = psprintf("pending transfer %s %s", uuid_text(&it->ref_id), row->words);
}

/* "transfer <ref> <words>": the transfer a reversal names. */
static void
form_reversed(const LedgerItem *it, const ItemErrorRow *row, ItemErrorText *out)
{
	out->message = psprintf("transfer %s %s", uuid_text(&it->ref_id), row->words);
}

/* A post or void that names the hold's fields differently: the result names the field. */
static void
form_pending_mismatch(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	out->message = psprintf("the request does not match pending transfer %s: %s",
							uuid_text(&it->ref_id), ledger_results[it->result].name);
}

static void
form_exceeds_pending(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	CurrencyCode cur = it->dacc->meta.currency;

	out->message = psprintf("cannot post %s of pending transfer %s, which holds %s",
							money_text(it->amount, cur), uuid_text(&it->ref_id),
							money_text(it->pending_amount, cur));
}

static void
form_exceeds_reversible(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	CurrencyCode cur = it->dacc->meta.currency;

	out->message = psprintf("reversal of transfer %s exceeds what is left of it", uuid_text(&it->ref_id));
	out->detail = psprintf("%s of %s has been reversed already.",
						   money_text(it->ref->reversed, cur), money_text(it->ref->amount, cur));
}

static void
form_negative_amount(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	out->message = psprintf("amount must not be negative, not " INT64_FORMAT, it->amount);
}

static void
form_same_account(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	out->message = psprintf("debit and credit account are the same account %s", uuid_text(&it->debit));
}

/* "<words> <the timeout>" */
static void
form_timeout(const LedgerItem *it, const ItemErrorRow *row, ItemErrorText *out)
{
	out->message = psprintf("%s %s", row->words, interval_text(&it->timeout));
}

static void
form_overflows_timeout(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	out->message = psprintf("timeout %s overflows: the hold would expire after the last representable time",
							interval_text(&it->timeout));
}

static void
form_invalid_request(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	out->message = psprintf("invalid transfer request: %s",
							it->invalid ? it->invalid : ledger_results[it->result].name);
}

static void
form_fee_exceeds(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	CurrencyCode cur = it->dacc->meta.currency;

	out->message = psprintf("fee %s leaves nothing of the amount %s it is deducted from",
							money_text(it->fee, cur), money_text(it->gross_amount, cur));
}

static const char *const limit_window_names[] = {
	[LIMIT_WINDOW_TRANSACTION] = "per transfer",
	[LIMIT_WINDOW_DAY] = "a day",
	[LIMIT_WINDOW_WEEK] = "a week",
	[LIMIT_WINDOW_MONTH] = "a month",
	[LIMIT_WINDOW_YEAR] = "a year",
	[LIMIT_WINDOW_LIFETIME] = "in all",
	[LIMIT_WINDOW_TRAILING] = "in its trailing window",
};

/* "transfer <id> exceeds limit <name>", and the limit's id and figures in the detail */
static void
form_exceeds_limit(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	const LimitDef *def = it->limit_hit;

	out->message = psprintf("transfer %s exceeds limit \"%s\"", uuid_text(&it->id), def->name);
	if (def->counts)
		out->detail = psprintf("Limit %s allows " INT64_FORMAT " transfers %s; " INT64_FORMAT " are counted already.",
							   uuid_text(&def->id), def->max, limit_window_names[def->window], it->limit_used);
	else
		out->detail = psprintf("Limit %s allows %s %s; %s is counted already and this transfer is %s.",
							   uuid_text(&def->id), money_text(def->max, def->currency),
							   limit_window_names[def->window], money_text(it->limit_used, def->currency),
							   money_text(it->amount, def->currency));
}

/* "transfer <id> rejected by rule <name>" */
static void
form_rule_rejected(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	out->message = psprintf("transfer %s rejected by rule \"%s\"", uuid_text(&it->id), it->rule_hit->name);
	out->detail = psprintf("Rule %s rejects it.", uuid_text(&it->rule_hit->id));
}

/* "imported transfer <id> refused: <result> (timestamp <t>)" */
static void
form_imported(const LedgerItem *it, const ItemErrorRow *row pg_attribute_unused(), ItemErrorText *out)
{
	const char *at = "";

	if (it->has_timestamp)
		at = psprintf(" (timestamp %s)",
					  DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(it->timestamp))));
	out->message = psprintf("imported transfer %s refused: %s%s", uuid_text(&it->id),
							ledger_results[it->result].name, at);
}

/* ---- each result's error ---- */

#define HINT_OTHER_TENANT		"Accounts are visible only in their own tenant."
#define HINT_ACCOUNT_STATE		"A frozen or closed account takes no new debits or credits; its holds can still be voided."
#define HINT_PENDING_MISMATCH	"Name the hold's accounts, currency and code, or leave them out; a void releases the whole hold."
#define HINT_IMPORTED			"An import gives every transfer a timestamp in the past, later than its accounts' " \
								"creation and their latest transfers, and no timeout; see docs/ledger.md, \"Imported transfers\"."

/* Results without a row take form_refused. */
static const ItemErrorRow item_errors[LR_NRESULTS] = {
	[LR_DEBIT_ACCOUNT_NOT_FOUND] = {form_account_not_found, SIDE_DEBIT, NULL, NULL, HINT_OTHER_TENANT},
	[LR_CREDIT_ACCOUNT_NOT_FOUND] = {form_account_not_found, SIDE_CREDIT, NULL, NULL, HINT_OTHER_TENANT},
	[LR_ACCOUNTS_MUST_BE_DIFFERENT] = {form_same_account},
	[LR_AMOUNT_MUST_NOT_BE_NEGATIVE] = {form_negative_amount},
	[LR_CURRENCY_MISMATCH] = {form_currency_mismatch, SIDE_NONE, NULL, NULL,
	"Both accounts of a transfer must have the same currency."},
	[LR_EXCEEDS_CREDITS] = {form_exceeds, SIDE_DEBIT, NULL, NULL,
	"The account is flagged debits_must_not_exceed_credits."},
	[LR_EXCEEDS_DEBITS] = {form_exceeds, SIDE_CREDIT, NULL, NULL,
	"The account is flagged credits_must_not_exceed_debits."},
	[LR_DEBIT_ACCOUNT_FROZEN] = {form_account_state, SIDE_DEBIT, "frozen", NULL, HINT_ACCOUNT_STATE},
	[LR_CREDIT_ACCOUNT_FROZEN] = {form_account_state, SIDE_CREDIT, "frozen", NULL, HINT_ACCOUNT_STATE},
	[LR_DEBIT_ACCOUNT_CLOSED] = {form_account_state, SIDE_DEBIT, "closed", NULL, HINT_ACCOUNT_STATE},
	[LR_CREDIT_ACCOUNT_CLOSED] = {form_account_state, SIDE_CREDIT, "closed", NULL, HINT_ACCOUNT_STATE},
	[LR_PENDING_TRANSFER_NOT_FOUND] = {form_pending, SIDE_NONE, "not found"},
	[LR_PENDING_TRANSFER_NOT_PENDING] = {form_pending, SIDE_NONE, "is not a hold"},
	[LR_PENDING_TRANSFER_ALREADY_POSTED] = {form_pending, SIDE_NONE, "was already posted"},
	[LR_PENDING_TRANSFER_ALREADY_VOIDED] = {form_pending, SIDE_NONE, "was already voided"},
	[LR_PENDING_TRANSFER_EXPIRED] = {form_pending, SIDE_NONE, "has expired", NULL,
	"A hold cannot be posted or voided after its timeout; it is released."},
	[LR_EXCEEDS_PENDING_TRANSFER_AMOUNT] = {form_exceeds_pending},
	[LR_TRANSFER_NOT_FOUND] = {form_reversed, SIDE_NONE, "not found"},
	[LR_TRANSFER_NOT_REVERSIBLE] = {form_reversed, SIDE_NONE, "cannot be reversed", NULL,
	"Only posted transfers (and posts of holds) can be reversed; void a hold instead."},
	[LR_EXCEEDS_REVERSIBLE_AMOUNT] = {form_exceeds_reversible},
	[LR_EXISTS_WITH_DIFFERENT] = {form_exists_with_different, SIDE_NONE, NULL, NULL,
	"A transfer id is an idempotency key: replay it with exactly the same fields, or use a new id."},
	[LR_TIMEOUT_RESERVED_FOR_PENDING] = {form_words, SIDE_NONE, "a timeout applies only to a pending transfer"},
	[LR_TIMEOUT_MUST_BE_POSITIVE] = {form_timeout, SIDE_NONE, "timeout must be positive, not"},
	[LR_ID_ALREADY_USED] = {form_transfer_id, SIDE_NONE, "is already used", NULL, "Use a new id."},
	[LR_FEE_EXCEEDS_AMOUNT] = {form_fee_exceeds, SIDE_NONE, NULL, NULL,
	"Charge the fee on top (fee_mode => 'on_top'), or transfer a larger amount."},
	[LR_INVALID_REQUEST] = {form_invalid_request},
	[LR_ID_MUST_NOT_BE_ZERO] = {form_transfer_id, SIDE_NONE, "is reserved", NULL,
	"The nil UUID and the all-ones UUID are never ids; use fincore.uuidv7()."},
	[LR_ID_MUST_NOT_BE_INT_MAX] = {form_transfer_id, SIDE_NONE, "is reserved", NULL,
	"The nil UUID and the all-ones UUID are never ids; use fincore.uuidv7()."},
	[LR_OVERFLOWS_TIMEOUT] = {form_overflows_timeout, SIDE_NONE, NULL, NULL,
	"Give a timeout that ends before the year 294276."},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID] = {form_pending_mismatch, SIDE_NONE, NULL, NULL, HINT_PENDING_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID] = {form_pending_mismatch, SIDE_NONE, NULL, NULL, HINT_PENDING_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY] = {form_pending_mismatch, SIDE_NONE, NULL, NULL, HINT_PENDING_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_CODE] = {form_pending_mismatch, SIDE_NONE, NULL, NULL, HINT_PENDING_MISMATCH},
	[LR_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT] = {form_pending_mismatch, SIDE_NONE, NULL, NULL, HINT_PENDING_MISMATCH},
	[LR_CLOSING_TRANSFER_MUST_BE_PENDING] = {form_words, SIDE_NONE, "a closing transfer must be pending", NULL,
	"closing_debit and closing_credit close an account with a hold (pending => true); voiding it opens the account again."},
	[LR_ID_ALREADY_FAILED] = {form_transfer_id, SIDE_NONE, "already failed",
		"A create_transfers batch refused it on the ledger's state; fincore.failed_transfers says why.",
	"Use a new id: a failed id stays failed, so that a retry never succeeds by accident."},
	[LR_IMPORTED_EVENT_EXPECTED] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_IMPORTED_EVENT_NOT_EXPECTED] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_TIMESTAMP_MUST_BE_ZERO] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO] = {form_imported, SIDE_NONE, NULL, NULL, HINT_IMPORTED},
	[LR_EXCEEDS_LIMIT] = {form_exceeds_limit, SIDE_NONE, NULL, NULL,
	"fincore.limit_remaining(account_id) says what each limit has left and when its window resets."},
	[LR_RULE_REJECTED] = {form_rule_rejected, SIDE_NONE, NULL, NULL,
	"The tenant's rules (fincore.rules) decide which transfers are refused; fincore.decisions records them."},
};

/* Raise the error a single call reports for an item's result. */
void pg_attribute_noreturn()
raise_item_error(const LedgerItem *it)
{
	LedgerResult r = it->result;
	static const ItemErrorRow refused = {form_refused, SIDE_NONE, NULL, NULL, NULL};
	const ItemErrorRow *row = item_errors[r].form ? &item_errors[r] : &refused;
	ItemErrorText text = {0};
	int			sqlstate = ledger_results[r].sqlstate;

	row->form(it, row, &text);
	ereport(ERROR,
			(errcode(sqlstate ? sqlstate : ERRCODE_INTERNAL_ERROR),
			 errmsg_internal("%s", text.message),
			 (text.detail ? text.detail : row->detail) ?
			 errdetail_internal("%s", text.detail ? text.detail : row->detail) : 0,
			 (text.hint ? text.hint : row->hint) ?
			 errhint("%s", text.hint ? text.hint : row->hint) : 0));
	pg_unreachable();
}
