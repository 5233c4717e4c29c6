/*
 * ledger_errors.c — the error a single call raises for an item's result.
 */
#include "ledger_int.h"

/* Raise the error a single call reports for an item's result. */
void pg_attribute_noreturn()
raise_item_error(LedgerBatch *b, LedgerItem *it)
{
	LedgerResult r = it->result;
	const char *name = ledger_results[r].name;
	const char *id = uuid_text(&it->id);
	LedgerAccount *d = it->dacc,
			   *c = it->cacc;

	switch (r)
	{
		case LR_DEBIT_ACCOUNT_NOT_FOUND:
		case LR_CREDIT_ACCOUNT_NOT_FOUND:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("%s account %s not found",
							r == LR_DEBIT_ACCOUNT_NOT_FOUND ? "debit" : "credit",
							uuid_text(r == LR_DEBIT_ACCOUNT_NOT_FOUND ?
									  (d ? &d->meta.id : &it->debit) : (c ? &c->meta.id : &it->credit))),
					 errhint("Accounts are visible only in their own tenant.")));
			break;
		case LR_EXCEEDS_CREDITS:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("%s of %s exceeds the credits of account %s",
							it->is_fee_leg ? "the fee" : "transfer",
							money_text(it->amount, d->meta.currency), uuid_text(&d->meta.id)),
					 errdetail("Its debits posted %s and pending %s leave no room under its credits posted %s%s.",
							   money_text(d->bal.dpo, d->meta.currency), money_text(d->bal.dp, d->meta.currency),
							   money_text(d->bal.cpo, d->meta.currency),
							   d->has_limit ? psprintf(" plus the credit limit %s",
													   money_text(d->credit_limit, d->meta.currency)) : ""),
					 errhint("The account is flagged debits_must_not_exceed_credits.")));
			break;
		case LR_EXCEEDS_DEBITS:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("%s of %s exceeds the debits of account %s",
							it->is_fee_leg ? "the fee" : "transfer",
							money_text(it->amount, c->meta.currency), uuid_text(&c->meta.id)),
					 errdetail("Its credits posted %s and pending %s leave no room under its debits posted %s%s.",
							   money_text(c->bal.cpo, c->meta.currency), money_text(c->bal.cp, c->meta.currency),
							   money_text(c->bal.dpo, c->meta.currency),
							   c->has_limit ? psprintf(" plus the credit limit %s",
													   money_text(c->credit_limit, c->meta.currency)) : ""),
					 errhint("The account is flagged credits_must_not_exceed_debits.")));
			break;
		case LR_CURRENCY_MISMATCH:
			{
				char		dc[CURRENCY_CODE_MAX_LEN + 1],
							cc[CURRENCY_CODE_MAX_LEN + 1];

				currency_unpack(d->meta.currency, dc);
				currency_unpack(c->meta.currency, cc);
				if (it->has_currency && d->meta.currency == c->meta.currency)
				{
					char		ac[CURRENCY_CODE_MAX_LEN + 1];

					currency_unpack(it->currency, ac);
					ereport(ERROR,
							(errcode(ledger_results[r].sqlstate),
							 errmsg("currency mismatch: the amount is in %s, the accounts are in %s", ac, dc),
							 errhint("Pass an amount in the accounts' currency.")));
				}
				ereport(ERROR,
						(errcode(ledger_results[r].sqlstate),
						 errmsg("currency mismatch: debit account %s is in %s, credit account %s in %s",
								uuid_text(&d->meta.id), dc, uuid_text(&c->meta.id), cc),
						 errhint("Both accounts of a transfer must have the same currency.")));
			}
			break;
		case LR_EXISTS_WITH_DIFFERENT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer %s already exists with a different %s", id, it->diff_field),
					 errhint("A transfer id is an idempotency key: replay it with exactly the same fields, or use a new id.")));
			break;
		case LR_DEBIT_ACCOUNT_FROZEN:
		case LR_DEBIT_ACCOUNT_CLOSED:
		case LR_CREDIT_ACCOUNT_FROZEN:
		case LR_CREDIT_ACCOUNT_CLOSED:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("%s account %s is %s",
							(r == LR_DEBIT_ACCOUNT_FROZEN || r == LR_DEBIT_ACCOUNT_CLOSED) ? "debit" : "credit",
							uuid_text((r == LR_DEBIT_ACCOUNT_FROZEN || r == LR_DEBIT_ACCOUNT_CLOSED) ?
									  &d->meta.id : &c->meta.id),
							(r == LR_DEBIT_ACCOUNT_FROZEN || r == LR_CREDIT_ACCOUNT_FROZEN) ? "frozen" : "closed"),
					 errhint("A frozen or closed account takes no new debits or credits; its holds can still be voided.")));
			break;
		case LR_PENDING_TRANSFER_NOT_FOUND:
		case LR_PENDING_TRANSFER_NOT_PENDING:
		case LR_PENDING_TRANSFER_ALREADY_POSTED:
		case LR_PENDING_TRANSFER_ALREADY_VOIDED:
		case LR_PENDING_TRANSFER_EXPIRED:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("pending transfer %s %s", uuid_text(&it->ref_id),
							r == LR_PENDING_TRANSFER_NOT_FOUND ? "not found" :
							r == LR_PENDING_TRANSFER_NOT_PENDING ? "is not a hold" :
							r == LR_PENDING_TRANSFER_ALREADY_POSTED ? "was already posted" :
							r == LR_PENDING_TRANSFER_ALREADY_VOIDED ? "was already voided" : "has expired"),
					 r == LR_PENDING_TRANSFER_EXPIRED ? errhint("A hold cannot be posted or voided after its timeout; it is released.") : 0));
			break;
		case LR_EXCEEDS_PENDING_TRANSFER_AMOUNT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("cannot post %s of pending transfer %s, which holds %s",
							money_text(it->amount, d->meta.currency), uuid_text(&it->ref_id),
							money_text(it->pending_amount, d->meta.currency))));
			break;
		case LR_TRANSFER_NOT_FOUND:
		case LR_TRANSFER_NOT_REVERSIBLE:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer %s %s", uuid_text(&it->ref_id),
							r == LR_TRANSFER_NOT_FOUND ? "not found" : "cannot be reversed"),
					 r == LR_TRANSFER_NOT_REVERSIBLE ?
					 errhint("Only posted transfers (and posts of holds) can be reversed; void a hold instead.") : 0));
			break;
		case LR_EXCEEDS_REVERSIBLE_AMOUNT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("reversal of transfer %s exceeds what is left of it", uuid_text(&it->ref_id)),
					 errdetail("%s of %s has been reversed already.",
							   money_text(it->ref->reversed, d->meta.currency),
							   money_text(it->ref->amount, d->meta.currency))));
			break;
		case LR_AMOUNT_MUST_NOT_BE_NEGATIVE:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("amount must not be negative, not " INT64_FORMAT, it->amount)));
			break;
		case LR_ACCOUNTS_MUST_BE_DIFFERENT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("debit and credit account are the same account %s", uuid_text(&it->debit))));
			break;
		case LR_TIMEOUT_RESERVED_FOR_PENDING:
		case LR_TIMEOUT_MUST_BE_POSITIVE:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg(r == LR_TIMEOUT_RESERVED_FOR_PENDING ? "a timeout applies only to a pending transfer"
							: "timeout must be positive, not %s",
							DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(&it->timeout))))));
			break;
		case LR_INVALID_REQUEST:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("invalid transfer request: %s", it->invalid ? it->invalid : name)));
			break;
		case LR_ID_MUST_NOT_BE_ZERO:
		case LR_ID_MUST_NOT_BE_INT_MAX:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer id %s is reserved", id),
					 errhint("The nil UUID and the all-ones UUID are never ids; use fincore.uuidv7().")));
			break;
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID:
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID:
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY:
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_CODE:
		case LR_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("the request does not match pending transfer %s: %s", uuid_text(&it->ref_id), name),
					 errhint("Name the hold's accounts, currency and code, or leave them out; a void releases the whole hold.")));
			break;
		case LR_OVERFLOWS_TIMEOUT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("timeout %s overflows: the hold would expire after the last representable time",
							DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(&it->timeout)))),
					 errhint("Give a timeout that ends before the year 294276.")));
			break;
		case LR_FEE_EXCEEDS_AMOUNT:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("fee %s leaves nothing of the amount %s it is deducted from",
							money_text(it->fee, d->meta.currency), money_text(it->gross_amount, d->meta.currency)),
					 errhint("Charge the fee on top (fee_mode => 'on_top'), or transfer a larger amount.")));
			break;
		case LR_CLOSING_TRANSFER_MUST_BE_PENDING:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("a closing transfer must be pending"),
					 errhint("closing_debit and closing_credit close an account with a hold (pending => true); voiding it opens the account again.")));
			break;
		case LR_ID_ALREADY_FAILED:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer id %s already failed", id),
					 errdetail("A create_transfers batch refused it on the ledger's state; fincore.failed_transfers says why."),
					 errhint("Use a new id: a failed id stays failed, so that a retry never succeeds by accident.")));
			break;
		case LR_IMPORTED_EVENT_EXPECTED:
		case LR_IMPORTED_EVENT_NOT_EXPECTED:
		case LR_TIMESTAMP_MUST_BE_ZERO:
		case LR_IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT:
		case LR_IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT:
		case LR_IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("imported transfer %s refused: %s%s", id, name,
							it->has_timestamp ? psprintf(" (timestamp %s)",
														 DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(it->timestamp)))) : ""),
					 errhint("An import gives every transfer a timestamp in the past, later than its accounts' creation and their latest transfers, and no timeout; see docs/ledger.md, \"Imported transfers\".")));
			break;
		case LR_ID_ALREADY_USED:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate),
					 errmsg("transfer id %s is already used", id),
					 errhint("Use a new id.")));
			break;
		default:
			ereport(ERROR,
					(errcode(ledger_results[r].sqlstate ? ledger_results[r].sqlstate : ERRCODE_INTERNAL_ERROR),
					 errmsg("transfer %s refused: %s", id, name)));
	}
	(void) b;
	pg_unreachable();
}
