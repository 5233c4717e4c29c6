/*
 * money.h — the money module: currency codes and the registry, exact rounding and
 * decimal parsing, the fincore.amount type (currency.c, rounding.c, amount.c).
 */
#ifndef FINCORE_MONEY_H
#define FINCORE_MONEY_H

#include "fincore.h"

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
/* The same, or -1 for an unknown currency (a caller that names the culprit itself). */
extern int	currency_exponent_if_known(CurrencyCode code);
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
/* a / b rounded toward minus infinity (C's / truncates toward zero); b != 0. */
static inline int64
int64_floor_div(int64 a, int64 b)
{
	int64		q = a / b;

	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

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

#endif							/* FINCORE_MONEY_H */
