/*
 * amount.c — fincore.amount: an exact monetary amount with its currency.
 *
 * A fixed-length 16-byte value: a signed 64-bit count of minor units and the
 * packed currency code.  Arithmetic is integer arithmetic with overflow
 * checks; anything that would lose precision or mix currencies raises.
 *
 * Comparing amounts of different currencies has no answer: 5 EUR < 7 USD is
 * neither true nor false, so <, <=, >, >=, min() and max() raise a currency
 * mismatch.  Equality does have one (different currencies are not equal), so
 * = and <> never raise.  The btree support function, which sorting, indexes,
 * DISTINCT, GROUP BY and merge joins use, needs a total order and gets one:
 * by currency code, then units.  That way whether a query raises never
 * depends on the plan the planner picks, and a sort groups currencies.
 */
#include "fincore.h"

#include "money.h"

#include "common/hashfn.h"
#include "common/int.h"
#include "fmgr.h"
#include "libpq/pqformat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

Amount *
amount_make(int64 units, CurrencyCode currency)
{
	Amount	   *result = palloc(sizeof(Amount));

	result->units = units;
	result->currency = currency;
	return result;
}

char *
format_minor_units(int64 units, int exponent)
{
	char		digits[32];
	char	   *result = palloc(64);
	char	   *out = result;
	uint64		mag = units < 0 ? (uint64) (-(units + 1)) + 1 : (uint64) units;
	int			n = 0;

	do
	{
		digits[n++] = '0' + (int) (mag % 10);
		mag /= 10;
	} while (mag > 0);
	while (n <= exponent)
		digits[n++] = '0';		/* at least one digit before the point */

	if (units < 0)
		*out++ = '-';
	while (n > 0)
	{
		if (n == exponent)
			*out++ = '.';
		*out++ = digits[--n];
	}
	*out = '\0';
	return result;
}

/* "12.34 USD", for output and for messages. */
static char *
amount_to_cstring(const Amount *a)
{
	char		code[CURRENCY_CODE_MAX_LEN + 1];

	currency_unpack(a->currency, code);
	return psprintf("%s %s", format_minor_units(a->units, currency_exponent(a->currency)), code);
}

static inline bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static void
amount_syntax_error(const char *str)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_AMOUNT_TEXT),
			 errmsg("invalid input syntax for type amount: \"%s\"", str),
			 errhint("An amount is a decimal number and a currency code, e.g. '12.34 USD', '-0.50 EUR' or '1000 JPY'.")));
}

/*
 * Parse "[+-]digits[.digits] CODE" with optional surrounding white space.
 * Errors, in order: syntax, unknown currency, too many decimals, range.
 */
Amount *
amount_parse(const char *str)
{
	const char *p = str;
	const char *int_digits,
			   *frac_digits = NULL,
			   *code_start;
	int			int_len,
				frac_len = 0,
				code_len,
				exponent;
	bool		negative = false;
	CurrencyCode currency;
	uint128		mag = 0;
	const uint128 cap = (uint128) 1 << 64;	/* beyond int64 either way */
	char		code[CURRENCY_CODE_MAX_LEN + 1];

	while (is_space(*p))
		p++;
	if (*p == '+' || *p == '-')
		negative = (*p++ == '-');
	int_digits = p;
	while (is_digit(*p))
		p++;
	int_len = p - int_digits;
	if (int_len == 0)
		amount_syntax_error(str);
	if (*p == '.')
	{
		frac_digits = ++p;
		while (is_digit(*p))
			p++;
		frac_len = p - frac_digits;
		if (frac_len == 0)
			amount_syntax_error(str);
	}
	if (!is_space(*p))
		amount_syntax_error(str);
	while (is_space(*p))
		p++;
	code_start = p;
	while (*p != '\0' && !is_space(*p))
		p++;
	code_len = p - code_start;
	while (is_space(*p))
		p++;
	if (*p != '\0' || !currency_pack(code_start, code_len, &currency))
		amount_syntax_error(str);

	exponent = currency_exponent(currency);
	currency_unpack(currency, code);
	if (frac_len > exponent)
		ereport(ERROR,
				(errcode(ERRCODE_FC_PRECISION_LOSS),
				 errmsg("amount \"%s\" has more decimal places than %s allows (%d)",
						str, code, exponent),
				 errhint("Round it explicitly with fincore.from_numeric(value, currency, mode).")));

	/* Accumulate integer digits, fraction digits, then pad to the exponent. */
	for (int i = 0; i < int_len + exponent; i++)
	{
		int			d = i < int_len ? int_digits[i] - '0'
			: (i - int_len < frac_len ? frac_digits[i - int_len] - '0' : 0);

		mag = mag * 10 + d;
		if (mag > cap)
			break;
	}
	if (mag > (uint128) PG_INT64_MAX + (negative ? 1 : 0))
		ereport(ERROR,
				(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
				 errmsg("amount \"%s\" is out of range for a 64-bit count of minor units", str)));
	return amount_make(negative ? (int64) -(int128) mag : (int64) mag, currency);
}

/* ---- I/O ---- */

PG_FUNCTION_INFO_V1(amount_in);
Datum
amount_in(PG_FUNCTION_ARGS)
{
	PG_RETURN_AMOUNT_P(amount_parse(PG_GETARG_CSTRING(0)));
}

PG_FUNCTION_INFO_V1(amount_out);
Datum
amount_out(PG_FUNCTION_ARGS)
{
	PG_RETURN_CSTRING(amount_to_cstring(PG_GETARG_AMOUNT_P(0)));
}

/* Binary format: int64 minor units, then the code as a length byte and ASCII. */
PG_FUNCTION_INFO_V1(amount_recv);
Datum
amount_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int64		units = pq_getmsgint64(buf);
	int			len = pq_getmsgbyte(buf);
	const char *code = pq_getmsgbytes(buf, len);
	CurrencyCode currency;

	if (!currency_pack(code, len, &currency))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_AMOUNT_TEXT),
				 errmsg("invalid currency code in external amount: \"%.*s\"", len, code)));
	(void) currency_exponent(currency); /* unknown currencies are refused here too */
	PG_RETURN_AMOUNT_P(amount_make(units, currency));
}

PG_FUNCTION_INFO_V1(amount_send);
Datum
amount_send(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	char		code[CURRENCY_CODE_MAX_LEN + 1];
	int			len;
	StringInfoData buf;

	currency_unpack(a->currency, code);
	len = strlen(code);
	pq_begintypsend(&buf);
	pq_sendint64(&buf, a->units);
	pq_sendbyte(&buf, len);
	pq_sendbytes(&buf, code, len);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* ---- constructors and accessors ---- */

static inline CurrencyCode
known_currency_arg(text *code)
{
	CurrencyCode c = currency_pack_or_error(VARDATA_ANY(code), VARSIZE_ANY_EXHDR(code));

	(void) currency_exponent(c);
	return c;
}

PG_FUNCTION_INFO_V1(fincore_from_minor);
Datum
fincore_from_minor(PG_FUNCTION_ARGS)
{
	int64		units = PG_GETARG_INT64(0);

	PG_RETURN_AMOUNT_P(amount_make(units, known_currency_arg(PG_GETARG_TEXT_PP(1))));
}

/* fincore.from_numeric(value, currency, mode default null): null mode = exact only. */
PG_FUNCTION_INFO_V1(fincore_from_numeric);
Datum
fincore_from_numeric(PG_FUNCTION_ARGS)
{
	CurrencyCode currency;
	RoundingMode mode;
	char		code[CURRENCY_CODE_MAX_LEN + 1];
	int128		units;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	currency = known_currency_arg(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
		mode = rounding_mode_from_text(PG_GETARG_TEXT_PP(2));
	currency_unpack(currency, code);
	units = decimal_scale_round(numeric_datum_to_cstring(PG_GETARG_DATUM(0)),
								currency_exponent(currency),
								PG_ARGISNULL(2) ? NULL : &mode, code);
	PG_RETURN_AMOUNT_P(amount_make(int128_to_int64_checked(units, "amount"), currency));
}

PG_FUNCTION_INFO_V1(fincore_minor_units);
Datum
fincore_minor_units(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(PG_GETARG_AMOUNT_P(0)->units);
}

PG_FUNCTION_INFO_V1(fincore_currency);
Datum
fincore_currency(PG_FUNCTION_ARGS)
{
	char		code[CURRENCY_CODE_MAX_LEN + 1];

	currency_unpack(PG_GETARG_AMOUNT_P(0)->currency, code);
	PG_RETURN_TEXT_P(cstring_to_text(code));
}

PG_FUNCTION_INFO_V1(fincore_exponent);
Datum
fincore_exponent(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(currency_exponent(PG_GETARG_AMOUNT_P(0)->currency));
}

PG_FUNCTION_INFO_V1(fincore_to_numeric);
Datum
fincore_to_numeric(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);

	return DirectFunctionCall3(numeric_in,
							   CStringGetDatum(format_minor_units(a->units, currency_exponent(a->currency))),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

/* ---- arithmetic ---- */

static void
amount_overflow(const Amount *a, const char *op, const char *rhs)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
			 errmsg("amount out of range: %s %s %s", amount_to_cstring(a), op, rhs)));
}

PG_FUNCTION_INFO_V1(amount_pl);
Datum
amount_pl(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	Amount	   *b = PG_GETARG_AMOUNT_P(1);
	int64		r;

	amount_check_same_currency(a, b);
	if (pg_add_s64_overflow(a->units, b->units, &r))
		amount_overflow(a, "+", amount_to_cstring(b));
	PG_RETURN_AMOUNT_P(amount_make(r, a->currency));
}

PG_FUNCTION_INFO_V1(amount_mi);
Datum
amount_mi(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	Amount	   *b = PG_GETARG_AMOUNT_P(1);
	int64		r;

	amount_check_same_currency(a, b);
	if (pg_sub_s64_overflow(a->units, b->units, &r))
		amount_overflow(a, "-", amount_to_cstring(b));
	PG_RETURN_AMOUNT_P(amount_make(r, a->currency));
}

PG_FUNCTION_INFO_V1(amount_um);
Datum
amount_um(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);

	if (a->units == PG_INT64_MIN)
		ereport(ERROR,
				(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
				 errmsg("amount out of range: -(%s)", amount_to_cstring(a))));
	PG_RETURN_AMOUNT_P(amount_make(-a->units, a->currency));
}

static Datum
amount_times(Amount *a, int64 factor)
{
	int64		r;

	if (pg_mul_s64_overflow(a->units, factor, &r))
		amount_overflow(a, "*", psprintf(INT64_FORMAT, factor));
	PG_RETURN_AMOUNT_P(amount_make(r, a->currency));
}

PG_FUNCTION_INFO_V1(amount_mul_int8);
Datum
amount_mul_int8(PG_FUNCTION_ARGS)
{
	return amount_times(PG_GETARG_AMOUNT_P(0), PG_GETARG_INT64(1));
}

PG_FUNCTION_INFO_V1(int8_mul_amount);
Datum
int8_mul_amount(PG_FUNCTION_ARGS)
{
	return amount_times(PG_GETARG_AMOUNT_P(1), PG_GETARG_INT64(0));
}

static inline void
check_divisor(const Amount *a, int64 divisor)
{
	if (divisor == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_DIVISION_BY_ZERO),
				 errmsg("division by zero: %s / 0", amount_to_cstring(a))));
}

/* amount / bigint: exact or an error; rounding is fincore.div's job. */
PG_FUNCTION_INFO_V1(amount_div_int8);
Datum
amount_div_int8(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	int64		divisor = PG_GETARG_INT64(1);

	check_divisor(a, divisor);
	if (a->units == PG_INT64_MIN && divisor == -1)
		amount_overflow(a, "/", "-1");
	if (a->units % divisor != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_PRECISION_LOSS),
				 errmsg("%s / " INT64_FORMAT " is not exact", amount_to_cstring(a), divisor),
				 errhint("Round with fincore.divide(amount, divisor, mode), or split without losing a cent with fincore.allocate().")));
	PG_RETURN_AMOUNT_P(amount_make(a->units / divisor, a->currency));
}

/* fincore.divide(amount, divisor, mode): rounded division. */
PG_FUNCTION_INFO_V1(fincore_div);
Datum
fincore_div(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	int64		divisor = PG_GETARG_INT64(1);
	RoundingMode mode = rounding_mode_from_text(PG_GETARG_TEXT_PP(2));

	check_divisor(a, divisor);
	PG_RETURN_AMOUNT_P(amount_make(int128_to_int64_checked(div_round_int128(a->units, divisor, mode),
														   "quotient"),
								   a->currency));
}

/*
 * fincore.multiply(amount, rate numeric, mode): units × rate computed exactly
 * on 128 bits, then rounded once.  A rate whose exact product does not fit in
 * 128 bits is refused rather than approximated.
 */
PG_FUNCTION_INFO_V1(fincore_multiply);
Datum
fincore_multiply(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	char	   *rate_text = numeric_datum_to_cstring(PG_GETARG_DATUM(1));
	RoundingMode mode = rounding_mode_from_text(PG_GETARG_TEXT_PP(2));
	ExactDecimal rate;
	int128		product;
	int128		result;

	if (!decimal_parse_exact(rate_text, &rate) ||
		__builtin_mul_overflow((int128) a->units, rate.mantissa, &product))
		ereport(ERROR,
				(errcode(ERRCODE_FC_PRECISION_LOSS),
				 errmsg("%s * %s cannot be computed exactly", amount_to_cstring(a), rate_text),
				 errhint("The exact product must fit in 128 bits; use a rate with fewer significant digits.")));
	if (rate.scale <= 38)
	{
		int128		pow10 = 1;

		for (int i = 0; i < rate.scale; i++)
			pow10 *= 10;
		result = div_round_int128(product, pow10, mode);
	}
	else
	{
		/* |product| < 2^127 < 10^39 / 2: the quotient is 0 and below half. */
		uint128		mag = round_magnitude(0, product < 0,
										  product == 0 ? REM_ZERO : REM_BELOW_HALF, mode);

		result = product < 0 ? -(int128) mag : (int128) mag;
	}
	if (result < (int128) PG_INT64_MIN || result > (int128) PG_INT64_MAX)
		amount_overflow(a, "*", rate_text);
	PG_RETURN_AMOUNT_P(amount_make((int64) result, a->currency));
}

/* ---- comparison and hashing ---- */

static inline int
amount_cmp_internal(const Amount *a, const Amount *b)
{
	amount_check_same_currency(a, b);
	return (a->units > b->units) - (a->units < b->units);
}

/* btree support: total order, currency code first (packing preserves it). */
PG_FUNCTION_INFO_V1(amount_cmp);
Datum
amount_cmp(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	Amount	   *b = PG_GETARG_AMOUNT_P(1);

	if (a->currency != b->currency)
		PG_RETURN_INT32(a->currency < b->currency ? -1 : 1);
	PG_RETURN_INT32((a->units > b->units) - (a->units < b->units));
}

PG_FUNCTION_INFO_V1(amount_eq);
Datum
amount_eq(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	Amount	   *b = PG_GETARG_AMOUNT_P(1);

	PG_RETURN_BOOL(a->currency == b->currency && a->units == b->units);
}

PG_FUNCTION_INFO_V1(amount_ne);
Datum
amount_ne(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	Amount	   *b = PG_GETARG_AMOUNT_P(1);

	PG_RETURN_BOOL(a->currency != b->currency || a->units != b->units);
}

#define AMOUNT_CMP_FUNC(name, op) \
PG_FUNCTION_INFO_V1(name); \
Datum \
name(PG_FUNCTION_ARGS) \
{ \
	PG_RETURN_BOOL(amount_cmp_internal(PG_GETARG_AMOUNT_P(0), PG_GETARG_AMOUNT_P(1)) op 0); \
}

AMOUNT_CMP_FUNC(amount_lt, <)
AMOUNT_CMP_FUNC(amount_le, <=)
AMOUNT_CMP_FUNC(amount_gt, >)
AMOUNT_CMP_FUNC(amount_ge, >=)

PG_FUNCTION_INFO_V1(amount_hash);
Datum
amount_hash(PG_FUNCTION_ARGS)
{
	return hash_any((const unsigned char *) PG_GETARG_AMOUNT_P(0), sizeof(Amount));
}

PG_FUNCTION_INFO_V1(amount_hash_extended);
Datum
amount_hash_extended(PG_FUNCTION_ARGS)
{
	return hash_any_extended((const unsigned char *) PG_GETARG_AMOUNT_P(0), sizeof(Amount),
							 PG_GETARG_INT64(1));
}

PG_FUNCTION_INFO_V1(amount_smaller);
Datum
amount_smaller(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	Amount	   *b = PG_GETARG_AMOUNT_P(1);

	PG_RETURN_AMOUNT_P(amount_cmp_internal(a, b) <= 0 ? a : b);
}

PG_FUNCTION_INFO_V1(amount_larger);
Datum
amount_larger(PG_FUNCTION_ARGS)
{
	Amount	   *a = PG_GETARG_AMOUNT_P(0);
	Amount	   *b = PG_GETARG_AMOUNT_P(1);

	PG_RETURN_AMOUNT_P(amount_cmp_internal(a, b) >= 0 ? a : b);
}

/* ---- sum(amount): a 128-bit accumulator, so the result never depends on
 * the order rows arrive in (parallel workers included); only the final value
 * must fit in 64 bits. ---- */

typedef struct AmountSumState
{
	int128		sum;
	CurrencyCode currency;
	bool		has_value;
} AmountSumState;

static AmountSumState *
sum_state_new(FunctionCallInfo fcinfo)
{
	MemoryContext aggcontext;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		elog(ERROR, "aggregate function called in non-aggregate context");
	return MemoryContextAllocZero(aggcontext, sizeof(AmountSumState));
}

static void
sum_state_add(AmountSumState *state, int128 value, CurrencyCode currency)
{
	if (state->has_value && state->currency != currency)
	{
		Amount		a = {0, state->currency};
		Amount		b = {0, currency};

		amount_check_same_currency(&a, &b);
	}
	state->sum += value;
	state->currency = currency;
	state->has_value = true;
}

PG_FUNCTION_INFO_V1(amount_sum_accum);
Datum
amount_sum_accum(PG_FUNCTION_ARGS)
{
	AmountSumState *state = PG_ARGISNULL(0) ? NULL : (AmountSumState *) PG_GETARG_POINTER(0);

	if (state == NULL)
		state = sum_state_new(fcinfo);
	if (!PG_ARGISNULL(1))
	{
		Amount	   *a = PG_GETARG_AMOUNT_P(1);

		sum_state_add(state, a->units, a->currency);
	}
	PG_RETURN_POINTER(state);
}

PG_FUNCTION_INFO_V1(amount_sum_combine);
Datum
amount_sum_combine(PG_FUNCTION_ARGS)
{
	AmountSumState *s1 = PG_ARGISNULL(0) ? NULL : (AmountSumState *) PG_GETARG_POINTER(0);
	AmountSumState *s2 = PG_ARGISNULL(1) ? NULL : (AmountSumState *) PG_GETARG_POINTER(1);

	if (s2 == NULL || !s2->has_value)
	{
		if (s1 == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(s1);
	}
	if (s1 == NULL)
		s1 = sum_state_new(fcinfo);
	sum_state_add(s1, s2->sum, s2->currency);
	PG_RETURN_POINTER(s1);
}

PG_FUNCTION_INFO_V1(amount_sum_serialize);
Datum
amount_sum_serialize(PG_FUNCTION_ARGS)
{
	AmountSumState *state = (AmountSumState *) PG_GETARG_POINTER(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint64(&buf, (int64) (state->sum >> 64));
	pq_sendint64(&buf, (int64) (uint64) state->sum);
	pq_sendint64(&buf, state->currency);
	pq_sendbyte(&buf, state->has_value);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

PG_FUNCTION_INFO_V1(amount_sum_deserialize);
Datum
amount_sum_deserialize(PG_FUNCTION_ARGS)
{
	bytea	   *bytes = PG_GETARG_BYTEA_PP(0);
	AmountSumState *state = sum_state_new(fcinfo);
	StringInfoData buf;
	int64		hi;
	uint64		lo;

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, VARDATA_ANY(bytes), VARSIZE_ANY_EXHDR(bytes));
	hi = pq_getmsgint64(&buf);
	lo = (uint64) pq_getmsgint64(&buf);
	state->sum = (int128) (((uint128) (uint64) hi << 64) | lo);
	state->currency = pq_getmsgint64(&buf);
	state->has_value = pq_getmsgbyte(&buf) != 0;
	pq_getmsgend(&buf);
	PG_RETURN_POINTER(state);
}

PG_FUNCTION_INFO_V1(amount_sum_final);
Datum
amount_sum_final(PG_FUNCTION_ARGS)
{
	AmountSumState *state = PG_ARGISNULL(0) ? NULL : (AmountSumState *) PG_GETARG_POINTER(0);

	if (state == NULL || !state->has_value)
		PG_RETURN_NULL();
	PG_RETURN_AMOUNT_P(amount_make(int128_to_int64_checked(state->sum, "sum"), state->currency));
}
