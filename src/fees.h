/*
 * fees.h — the fee engine's C API for the ledger (fees.c).
 */
#ifndef FINCORE_FEES_H
#define FINCORE_FEES_H

#include "fincore.h"
#include "money.h"
#include "utils/jsonb.h"

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

/*
 * Tiers with Stripe's semantics (docs/fees.md): tier i covers (up_to[i-1],
 * up_to[i]], the first from 0 (so its flat always applies); only the last is
 * unbounded.  A rate and a flat are scaled integers (value x 10^scale) for a
 * fee; for a billing price they are the unit amount and the flat amount in
 * minor units, the "amount" a quantity.
 */
typedef struct FeeTier
{
	int64		up_to;			/* inclusive upper bound, when bounded */
	bool		bounded;		/* only the last tier is unbounded */
	int128		rate;			/* per unit of the amount */
	int128		flat;			/* once the amount reaches the tier */
} FeeTier;

/*
 * The tiers' value on amount: graduated (each tier charges the part of the
 * amount inside it, plus its flat) or volume (the whole amount at the rate of
 * the tier it falls in, plus that tier's flat).  False if it overflows 128
 * bits.  *evaluated counts the tiers looked at.  Pure: no error, no memory.
 */
extern bool fee_tiers_value(const FeeTier *tiers, int ntiers, bool volume, int64 amount,
							int128 *out, uint64 *evaluated);

#endif							/* FINCORE_FEES_H */
