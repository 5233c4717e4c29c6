/*
 * rounding.c — the one exact integer division routine and its rounding modes,
 * and exact decimal parsing for numeric arguments.  Nothing here uses
 * floating point: quotients are computed on 128-bit integers and rounded once.
 */
#include "fincore.h"

#include "money.h"

#include "common/int.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

static const struct
{
	const char *name;
	RoundingMode mode;
}			rounding_mode_names[] = {
	{"half_even", ROUND_HALF_EVEN},
	{"half_up", ROUND_HALF_UP},
	{"half_down", ROUND_HALF_DOWN},
	{"up", ROUND_UP},
	{"down", ROUND_DOWN},
	{"ceiling", ROUND_CEILING},
	{"floor", ROUND_FLOOR},
};

RoundingMode
rounding_mode_from_text(text *mode)
{
	const char *s = VARDATA_ANY(mode);
	int			len = VARSIZE_ANY_EXHDR(mode);

	for (int i = 0; i < (int) lengthof(rounding_mode_names); i++)
		if ((int) strlen(rounding_mode_names[i].name) == len &&
			memcmp(rounding_mode_names[i].name, s, len) == 0)
			return rounding_mode_names[i].mode;
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_ROUNDING_MODE),
			 errmsg("invalid rounding mode: \"%.*s\"", Min(len, 64), s),
			 errhint("Use one of half_even, half_up, half_down, up, down, ceiling, floor.")));
	pg_unreachable();
}

uint128
round_magnitude(uint128 q, bool negative, RemainderClass rem, RoundingMode mode)
{
	bool		bump;

	if (rem == REM_ZERO)
		return q;
	switch (mode)
	{
		case ROUND_DOWN:
			bump = false;
			break;
		case ROUND_UP:
			bump = true;
			break;
		case ROUND_CEILING:
			bump = !negative;
			break;
		case ROUND_FLOOR:
			bump = negative;
			break;
		case ROUND_HALF_UP:
			bump = rem >= REM_HALF;
			break;
		case ROUND_HALF_DOWN:
			bump = rem == REM_ABOVE_HALF;
			break;
		case ROUND_HALF_EVEN:
		default:
			bump = rem == REM_ABOVE_HALF || (rem == REM_HALF && (q & 1) != 0);
			break;
	}
	return bump ? q + 1 : q;
}

static inline uint128
int128_magnitude(int128 v)
{
	/* -(v + 1) + 1 avoids negating INT128_MIN. */
	return v < 0 ? (uint128) (-(v + 1)) + 1 : (uint128) v;
}

int128
div_round_int128(int128 n, int128 d, RoundingMode mode)
{
	uint128		un = int128_magnitude(n);
	uint128		ud = int128_magnitude(d);
	uint128		q = un / ud;
	uint128		r = un % ud;
	bool		negative = (n < 0) != (d < 0);
	RemainderClass rem;
	uint128		limit = ((uint128) 1 << 127) - (negative ? 0 : 1);

	if (r == 0)
		rem = REM_ZERO;
	else if (r < ud - r)
		rem = REM_BELOW_HALF;
	else if (r == ud - r)
		rem = REM_HALF;
	else
		rem = REM_ABOVE_HALF;
	q = round_magnitude(q, negative, rem, mode);
	if (q > limit)
		ereport(ERROR,
				(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
				 errmsg("quotient out of range")));
	/* -(q - 1) - 1 reaches INT128_MIN without overflowing on the way. */
	return (negative && q > 0) ? -(int128) (q - 1) - 1 : (int128) q;
}

int64
int128_to_int64_checked(int128 v, const char *what)
{
	if (v < (int128) PG_INT64_MIN || v > (int128) PG_INT64_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
				 errmsg("%s out of range for a 64-bit count of minor units", what)));
	return (int64) v;
}

char *
numeric_datum_to_cstring(Datum num)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, num));

	if (strcmp(s, "NaN") == 0 || strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_NUMBER),
				 errmsg("numeric value %s is not a finite number", s)));
	return s;
}

/*
 * numeric_out always prints [-]digits[.digits], never an exponent, so the
 * parsers below only need to split sign, integer and fraction digits.
 */
typedef struct DecimalParts
{
	bool		negative;
	const char *int_digits;
	int			int_len;
	const char *frac_digits;
	int			frac_len;
} DecimalParts;

static void
decimal_split(const char *s, DecimalParts *p)
{
	const char *dot;

	p->negative = (*s == '-');
	if (*s == '-' || *s == '+')
		s++;
	while (*s == '0' && s[1] >= '0' && s[1] <= '9')
		s++;					/* leading zeros carry nothing */
	p->int_digits = s;
	dot = strchr(s, '.');
	p->int_len = dot ? (int) (dot - s) : (int) strlen(s);
	p->frac_digits = dot ? dot + 1 : s + p->int_len;
	p->frac_len = dot ? (int) strlen(dot + 1) : 0;
	while (p->frac_len > 0 && p->frac_digits[p->frac_len - 1] == '0')
		p->frac_len--;			/* trailing fractional zeros carry nothing */
}

/* Append digits to a magnitude; false on 128-bit overflow. */
static inline bool
accumulate_digits(uint128 *acc, const char *digits, int len)
{
	const uint128 max = ~(uint128) 0 >> 1;

	for (int i = 0; i < len; i++)
	{
		int			d = digits[i] - '0';

		if (*acc > (max - d) / 10)
			return false;
		*acc = *acc * 10 + d;
	}
	return true;
}

bool
decimal_parse_exact(const char *s, ExactDecimal *result)
{
	DecimalParts p;
	uint128		mag = 0;

	decimal_split(s, &p);
	if (!accumulate_digits(&mag, p.int_digits, p.int_len) ||
		!accumulate_digits(&mag, p.frac_digits, p.frac_len))
		return false;
	result->mantissa = p.negative ? -(int128) mag : (int128) mag;
	result->scale = p.frac_len;
	return true;
}

int128
decimal_scale_round(const char *s, int exponent, const RoundingMode *mode,
					const char *currency)
{
	DecimalParts p;
	uint128		q = 0;
	int			kept = 0;
	RemainderClass rem = REM_ZERO;

	decimal_split(s, &p);
	/* The quotient is the integer digits plus the first `exponent` fraction digits. */
	if (!accumulate_digits(&q, p.int_digits, p.int_len))
		goto out_of_range;
	kept = Min(exponent, p.frac_len);
	if (!accumulate_digits(&q, p.frac_digits, kept))
		goto out_of_range;
	for (int i = kept; i < exponent; i++)
		if (!accumulate_digits(&q, "0", 1))
			goto out_of_range;

	/* Classify the discarded tail against one half (it has no trailing zeros). */
	if (p.frac_len > exponent)
	{
		char		first = p.frac_digits[exponent];

		if (first < '5')
			rem = REM_BELOW_HALF;
		else if (first > '5' || p.frac_len > exponent + 1)
			rem = REM_ABOVE_HALF;
		else
			rem = REM_HALF;
		if (mode == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FC_PRECISION_LOSS),
					 errmsg("value %s has more decimal places than %s allows (%d)",
							s, currency, exponent),
					 errhint("Pass a rounding mode, e.g. 'half_even', to round it explicitly.")));
		q = round_magnitude(q, p.negative, rem, *mode);
	}
	return p.negative ? -(int128) q : (int128) q;

out_of_range:
	ereport(ERROR,
			(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
			 errmsg("value %s is out of range for %s", s, currency)));
	pg_unreachable();
}

/*
 * fincore.div_round(numerator bigint, denominator bigint, mode text) → bigint
 */
PG_FUNCTION_INFO_V1(fincore_div_round);
Datum
fincore_div_round(PG_FUNCTION_ARGS)
{
	int64		n = PG_GETARG_INT64(0);
	int64		d = PG_GETARG_INT64(1);
	RoundingMode mode = rounding_mode_from_text(PG_GETARG_TEXT_PP(2));

	if (d == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_DIVISION_BY_ZERO),
				 errmsg("division by zero: %lld / 0", (long long) n)));
	PG_RETURN_INT64(int128_to_int64_checked(div_round_int128(n, d, mode), "quotient"));
}
