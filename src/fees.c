/*
 * fees.c — the fee engine: schedules compiled from jsonb rules, cached per
 * backend, and exact fee calculation, breakdown and gross-up.
 *
 * A schedule version (a row of fincore.fee_schedules) is compiled once into
 * a FeeSchedule: amounts in minor units, every rate of a component as an
 * integer mantissa over one power of ten, "when" conditions as Jsonb.  The
 * compiled versions of a (tenant, code) are cached per backend in a hash
 * table and dropped when the table changes: a statement trigger invalidates
 * the table's relcache entry, which every backend hears about at commit (and
 * ours at once, or at rollback).  A calculation on a cache hit reads no table
 * and parses no jsonb.
 *
 * Arithmetic is on 128-bit integers: each component's exact value is
 * numerator / 10^scale, rounded once with the schedule's mode by
 * div_round_int128(); never floating point.  docs/fees.md has the rules
 * format and the semantics, test/property/reference_fees.py a reference model.
 */
#include "fincore.h"

#include "cache_watch.h"
#include "fees.h"
#include "jsonb_build.h"
#include "owner_sql.h"
#include "tenancy.h"

#include <ctype.h>
#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define FEE_CODE_MAX		64		/* schedule code length */
#define FEE_NAME_MAX		63		/* component name length */
#define FEE_MAX_COMPONENTS	32
#define FEE_MAX_TIERS		100
#define FEE_RATE_MAX_SCALE	18		/* decimal places of a rate */
#define FEE_RATE_MAX		10		/* 1000%: keeps amount x rate within 128 bits */
/*
 * A gross-up may evaluate the fee at most this many component tiers in all
 * (a flat or percentage component counts one): a few tenths of a second on
 * the largest schedule, and thousands of steps for the usual ones, which
 * need tens.  Only schedules whose fee takes nearly all of a large charge
 * need more; they get ZF412.
 */
#define GROSS_UP_MAX_WORK	100000000

typedef enum FeeKind
{
	FEE_FLAT,
	FEE_PERCENTAGE,
	FEE_GRADUATED,
	FEE_VOLUME
} FeeKind;

static const char *const fee_kind_names[] = {"flat", "percentage", "graduated", "volume"};

/* Rates and flats of a component (FeeTier, fees.h) share its scale: value = numerator / 10^scale. */

typedef struct FeeComponent
{
	FeeKind		kind;
	char		name[FEE_NAME_MAX + 1];
	Jsonb	   *when;			/* applies only if the context contains it */
	int			scale;
	int128		divisor;		/* 10^scale */
	int64		flat;			/* FEE_FLAT */
	int128		rate;			/* FEE_PERCENTAGE: rate x 10^scale */
	int			ntiers;
	FeeTier    *tiers;			/* FEE_GRADUATED, FEE_VOLUME */
} FeeComponent;

typedef struct FeeSchedule
{
	pg_uuid_t	id;
	TimestampTz effective_from;
	TimestampTz effective_until;
	bool		open_ended;		/* effective_until is NULL */
	CurrencyCode currency;
	RoundingMode rounding;
	bool		has_minimum;
	bool		has_maximum;
	int64		minimum;
	int64		maximum;
	int			ncomponents;
	FeeComponent *components;
} FeeSchedule;

/* Which limit, if any, replaced the sum of the components. */
typedef enum FeeLimit
{
	FEE_LIMIT_NONE,
	FEE_LIMIT_MINIMUM,
	FEE_LIMIT_MAXIMUM
} FeeLimit;

/* ---- small validators ---- */

static inline void
fee_check_code(const char *code, int len)
{
	bool		ok = len >= 1 && len <= FEE_CODE_MAX &&
		(isalnum((unsigned char) code[0]) && ((unsigned char) code[0]) < 128);

	for (int i = 1; ok && i < len; i++)
	{
		unsigned char c = (unsigned char) code[i];

		ok = c < 128 && (isalnum(c) || c == '_' || c == '.' || c == ':' || c == '-');
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("invalid fee schedule code: \"%.*s\"", Min(len, 80), code),
				 errhint("A code is 1 to %d letters, digits, '_', '.', ':' or '-', starting with a letter or digit.",
						 FEE_CODE_MAX)));
}

static inline void
fee_check_amount_arg(int64 amount, const char *what)
{
	if (amount < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_AMOUNT),
				 errmsg("%s must not be negative: %lld", what, (long long) amount)));
}

static inline void
fee_check_context(Jsonb *context)
{
	if (context != NULL && !(JB_ROOT_IS_OBJECT(context) && !JB_ROOT_IS_SCALAR(context)))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_CONTEXT),
				 errmsg("fee context must be a JSON object, not %s",
						JB_ROOT_IS_SCALAR(context) ? "a scalar" : "an array"),
				 errhint("Pass e.g. '{\"card\": \"international\"}', or '{}' for none.")));
}

static inline void
fee_out_of_range(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
			 errmsg("fee out of range")));
}

static inline int128
add128(int128 a, int128 b)
{
	int128		r;

	if (__builtin_add_overflow(a, b, &r))
		fee_out_of_range();
	return r;
}

static inline int128
pow10_128(int scale)
{
	int128		p = 1;

	for (int i = 0; i < scale; i++)
		p *= 10;
	return p;
}

/* ---- compiling rules ---- */

/* Compilation state: where we are, for messages. */
typedef struct RulesCtx
{
	CurrencyCode currency;
	char		currency_text[CURRENCY_CODE_MAX_LEN + 1];
} RulesCtx;

/*
 * An amount in the rules: a JSON integer (minor units) or amount text in the
 * schedule's currency ("0.30 USD").  Never negative.
 */
static int64
rules_amount(const RulesCtx *cx, const JsonbValue *v, const char *what)
{
	int64		units;

	if (v->type == jbvNumeric)
	{
		char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		ExactDecimal d;

		if (!decimal_parse_exact(s, &d) || d.scale != 0 ||
			d.mantissa < (int128) PG_INT64_MIN || d.mantissa > (int128) PG_INT64_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_AMOUNT),
					 errmsg("%s must be a whole number of minor units, not %s", what, s),
					 errhint("Write amounts in minor units (30 for 0.30 %s) or as text such as \"0.30 %s\".",
							 cx->currency_text, cx->currency_text)));
		units = (int64) d.mantissa;
	}
	else if (v->type == jbvString)
	{
		char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
		Amount	   *a = amount_parse(s);

		if (a->currency != cx->currency)
		{
			char		c[CURRENCY_CODE_MAX_LEN + 1];

			currency_unpack(a->currency, c);
			ereport(ERROR,
					(errcode(ERRCODE_FC_FEE_CURRENCY_MISMATCH),
					 errmsg("%s \"%s\" is in %s, but the schedule charges in %s",
							what, s, c, cx->currency_text)));
		}
		units = a->units;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("%s must be a number of minor units or amount text, not %s",
						what, jb_value_text(v))));
	if (units < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_AMOUNT),
				 errmsg("%s must not be negative: %lld", what, (long long) units)));
	return units;
}

/* "digits[.digits]" with an optional leading '-': the text numeric_out prints. */
static inline bool
decimal_text_ok(const char *s)
{
	const char *p = s;

	if (*p == '-')
		p++;
	if (!isdigit((unsigned char) *p))
		return false;
	while (isdigit((unsigned char) *p))
		p++;
	if (*p == '.')
	{
		p++;
		if (!isdigit((unsigned char) *p))
			return false;
		while (isdigit((unsigned char) *p))
			p++;
	}
	return *p == '\0';
}

/* A rate: an exact decimal, 0 <= rate <= 10, at most 18 decimal places. */
static ExactDecimal
rules_rate(const JsonbValue *v, const char *what)
{
	char	   *s;
	ExactDecimal d;

	if (v->type == jbvNumeric)
		s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	else if (v->type == jbvString)
	{
		s = pnstrdup(v->val.string.val, v->val.string.len);
		if (!decimal_text_ok(s))
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_RATE),
					 errmsg("%s is not a decimal number: \"%.64s\"", what, s),
					 errhint("Write a rate as a decimal fraction: 0.029 for 2.9%%.")));
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_RATE),
				 errmsg("%s must be a decimal number, not %s", what, jb_value_text(v)),
				 errhint("Write a rate as a decimal fraction: 0.029 for 2.9%%.")));

	if (!decimal_parse_exact(s, &d) || d.scale > FEE_RATE_MAX_SCALE)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_RATE),
				 errmsg("%s %s has more than %d decimal places", what, s, FEE_RATE_MAX_SCALE)));
	if (d.mantissa < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_RATE),
				 errmsg("%s must not be negative: %s", what, s)));
	if (d.mantissa > FEE_RATE_MAX * pow10_128(d.scale))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_RATE),
				 errmsg("%s %s is above the largest rate, %d (%d00%%)", what, s,
						FEE_RATE_MAX, FEE_RATE_MAX)));
	return d;
}

static inline int128
rate_at_scale(ExactDecimal d, int scale)
{
	return d.mantissa * pow10_128(scale - d.scale);
}

static const char *const tier_keys[] = {"up_to", "rate", "flat"};

enum
{
	TK_UP_TO, TK_RATE, TK_FLAT, TK_COUNT
};

static void
rules_tiers(const RulesCtx *cx, const JsonbValue *tiers_val, FeeComponent *c)
{
	JsonbContainer *arr;
	int			n;
	ExactDecimal *rates;
	int64	   *flats;

	if (!jb_is_array(tiers_val))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_TIERS),
				 errmsg("tiers of component \"%s\" must be an array", c->name)));
	arr = tiers_val->val.binary.data;
	n = JsonContainerSize(arr);
	if (n < 1 || n > FEE_MAX_TIERS)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_TIERS),
				 errmsg("component \"%s\" has %d tiers; it needs 1 to %d", c->name, n, FEE_MAX_TIERS)));
	c->ntiers = n;
	c->tiers = palloc0(sizeof(FeeTier) * n);
	rates = palloc0(sizeof(ExactDecimal) * n);
	flats = palloc0(sizeof(int64) * n);
	c->scale = 0;
	for (int i = 0; i < n; i++)
	{
		JsonbValue *t = getIthJsonbValueFromContainer(arr, i);
		JsonbValue	f[TK_COUNT];
		bool		has[TK_COUNT];
		char	   *where = psprintf("tier %d of component \"%s\"", i + 1, c->name);
		FeeTier    *tier = &c->tiers[i];

		if (!jb_is_object(t))
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_TIERS),
					 errmsg("%s must be an object such as {\"up_to\": 100000, \"rate\": 0.01}", where)));
		jb_fields(t->val.binary.data, tier_keys, TK_COUNT, f, has, where, ERRCODE_FC_INVALID_FEE_SCHEDULE);

		/* up_to: absent, null or "inf" is unbounded (the last tier only). */
		tier->bounded = has[TK_UP_TO] && f[TK_UP_TO].type != jbvNull &&
			!(f[TK_UP_TO].type == jbvString && f[TK_UP_TO].val.string.len == 3 &&
			  memcmp(f[TK_UP_TO].val.string.val, "inf", 3) == 0);
		if (tier->bounded)
			tier->up_to = rules_amount(cx, &f[TK_UP_TO], psprintf("up_to of %s", where));
		if (i < n - 1 && !tier->bounded)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_TIERS),
					 errmsg("%s is unbounded but is not the last tier", where),
					 errhint("Only the last tier may omit up_to (or give null or \"inf\").")));
		if (i == n - 1 && tier->bounded)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_TIERS),
					 errmsg("the last tier of component \"%s\" must be unbounded, not up to %lld",
							c->name, (long long) tier->up_to),
					 errhint("Give the last tier \"up_to\": null (or \"inf\"), so that every amount falls in a tier.")));
		if (i > 0 && tier->bounded && tier->up_to <= c->tiers[i - 1].up_to)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_TIERS),
					 errmsg("tiers of component \"%s\" are out of order: up_to %lld follows %lld",
							c->name, (long long) tier->up_to, (long long) c->tiers[i - 1].up_to),
					 errhint("up_to must increase strictly from one tier to the next.")));
		if (has[TK_RATE])
		{
			rates[i] = rules_rate(&f[TK_RATE], psprintf("rate of %s", where));
			c->scale = Max(c->scale, rates[i].scale);
		}
		else
		{
			rates[i].mantissa = 0;
			rates[i].scale = 0;
		}
		flats[i] = has[TK_FLAT] ? rules_amount(cx, &f[TK_FLAT], psprintf("flat of %s", where)) : 0;
	}
	c->divisor = pow10_128(c->scale);
	for (int i = 0; i < n; i++)
	{
		c->tiers[i].rate = rate_at_scale(rates[i], c->scale);
		c->tiers[i].flat = (int128) flats[i] * c->divisor;
	}
}

static const char *const component_keys[] = {"type", "name", "when", "amount", "rate", "tiers"};

enum
{
	CK_TYPE, CK_NAME, CK_WHEN, CK_AMOUNT, CK_RATE, CK_TIERS, CK_COUNT
};

/* The one field each kind needs (besides type, name, when). */
static const int kind_field[] = {CK_AMOUNT, CK_RATE, CK_TIERS, CK_TIERS};

static void
rules_component(const RulesCtx *cx, const JsonbValue *val, int index, FeeComponent *c)
{
	JsonbValue	f[CK_COUNT];
	bool		has[CK_COUNT];
	char	   *where = psprintf("component %d", index + 1);
	int			kind = -1;

	if (!jb_is_object(val))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("%s must be an object such as {\"type\": \"flat\", \"amount\": 30}", where)));
	jb_fields(val->val.binary.data, component_keys, CK_COUNT, f, has, where, ERRCODE_FC_INVALID_FEE_SCHEDULE);

	if (!has[CK_TYPE] || f[CK_TYPE].type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("%s needs a \"type\" string", where),
				 errhint("The types are flat, percentage, graduated and volume.")));
	for (int k = 0; k < (int) lengthof(fee_kind_names); k++)
		if ((int) strlen(fee_kind_names[k]) == f[CK_TYPE].val.string.len &&
			memcmp(fee_kind_names[k], f[CK_TYPE].val.string.val, f[CK_TYPE].val.string.len) == 0)
			kind = k;
	if (kind < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_UNKNOWN_FEE_COMPONENT),
				 errmsg("unknown fee component type \"%.*s\" in %s",
						Min(f[CK_TYPE].val.string.len, 64), f[CK_TYPE].val.string.val, where),
				 errhint("The types are flat, percentage, graduated and volume.")));
	c->kind = (FeeKind) kind;

	/* The name: given, or the type's; the breakdown lists components by name. */
	if (has[CK_NAME])
	{
		if (f[CK_NAME].type != jbvString || f[CK_NAME].val.string.len < 1 ||
			f[CK_NAME].val.string.len > FEE_NAME_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
					 errmsg("name of %s must be a string of 1 to %d characters", where, FEE_NAME_MAX)));
		memcpy(c->name, f[CK_NAME].val.string.val, f[CK_NAME].val.string.len);
		c->name[f[CK_NAME].val.string.len] = '\0';
		if (strlen(c->name) != (size_t) f[CK_NAME].val.string.len)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
					 errmsg("name of %s contains a NUL character", where)));
	}
	else
		strlcpy(c->name, fee_kind_names[kind], sizeof(c->name));
	if (strcmp(c->name, "minimum") == 0 || strcmp(c->name, "maximum") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("component name \"%s\" is reserved", c->name),
				 errhint("The breakdown uses \"minimum\" and \"maximum\" for the schedule's limits.")));
	where = psprintf("component \"%s\"", c->name);

	/* Only the fields of its kind. */
	for (int k = CK_AMOUNT; k < CK_COUNT; k++)
	{
		if (has[k] && k != kind_field[kind])
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
					 errmsg("key \"%s\" does not apply to %s, a %s component",
							component_keys[k], where, fee_kind_names[kind])));
		if (!has[k] && k == kind_field[kind])
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
					 errmsg("%s, a %s component, needs \"%s\"", where, fee_kind_names[kind],
							component_keys[k])));
	}

	if (has[CK_WHEN])
	{
		if (!jb_is_object(&f[CK_WHEN]))
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
					 errmsg("\"when\" of %s must be a JSON object, not %s", where,
							jb_value_text(&f[CK_WHEN])),
					 errhint("The component applies when the context contains this object, e.g. {\"card\": \"international\"}.")));
		c->when = JsonbValueToJsonb(&f[CK_WHEN]);
	}

	c->scale = 0;
	c->divisor = 1;
	switch (c->kind)
	{
		case FEE_FLAT:
			c->flat = rules_amount(cx, &f[CK_AMOUNT], psprintf("amount of %s", where));
			break;
		case FEE_PERCENTAGE:
			{
				ExactDecimal d = rules_rate(&f[CK_RATE], psprintf("rate of %s", where));

				c->scale = d.scale;
				c->divisor = pow10_128(d.scale);
				c->rate = d.mantissa;
				break;
			}
		case FEE_GRADUATED:
		case FEE_VOLUME:
			rules_tiers(cx, &f[CK_TIERS], c);
			break;
	}
}

static const char *const schedule_keys[] = {"components", "minimum", "maximum", "description"};

enum
{
	SK_COMPONENTS, SK_MINIMUM, SK_MAXIMUM, SK_DESCRIPTION, SK_COUNT
};

/* Validate and compile rules into *s (allocating in CurrentMemoryContext). */
static void
fee_rules_compile(Jsonb *rules, CurrencyCode currency, FeeSchedule *s)
{
	RulesCtx	cx;
	JsonbValue	f[SK_COUNT];
	bool		has[SK_COUNT];
	JsonbContainer *arr;
	int			n;

	cx.currency = currency;
	currency_unpack(currency, cx.currency_text);
	s->currency = currency;

	if (!(JB_ROOT_IS_OBJECT(rules) && !JB_ROOT_IS_SCALAR(rules)))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("fee rules must be a JSON object"),
				 errhint("E.g. {\"components\": [{\"type\": \"percentage\", \"rate\": 0.029}, {\"type\": \"flat\", \"amount\": 30}]}.")));
	jb_fields(&rules->root, schedule_keys, SK_COUNT, f, has, "the fee rules", ERRCODE_FC_INVALID_FEE_SCHEDULE);

	if (!has[SK_COMPONENTS] || !jb_is_array(&f[SK_COMPONENTS]))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("fee rules need a \"components\" array")));
	arr = f[SK_COMPONENTS].val.binary.data;
	n = JsonContainerSize(arr);
	if (n < 1 || n > FEE_MAX_COMPONENTS)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("fee rules have %d components; a schedule has 1 to %d", n, FEE_MAX_COMPONENTS)));
	if (has[SK_DESCRIPTION] && f[SK_DESCRIPTION].type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("\"description\" of the fee rules must be a string")));

	s->ncomponents = n;
	s->components = palloc0(sizeof(FeeComponent) * n);
	for (int i = 0; i < n; i++)
	{
		rules_component(&cx, getIthJsonbValueFromContainer(arr, i), i, &s->components[i]);
		for (int j = 0; j < i; j++)
			if (strcmp(s->components[j].name, s->components[i].name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
						 errmsg("two components are named \"%s\"", s->components[i].name),
						 errhint("Give components of the same type distinct names with \"name\".")));
	}

	s->has_minimum = has[SK_MINIMUM] && f[SK_MINIMUM].type != jbvNull;
	s->has_maximum = has[SK_MAXIMUM] && f[SK_MAXIMUM].type != jbvNull;
	if (s->has_minimum)
		s->minimum = rules_amount(&cx, &f[SK_MINIMUM], "minimum");
	if (s->has_maximum)
		s->maximum = rules_amount(&cx, &f[SK_MAXIMUM], "maximum");
	if (s->has_minimum && s->has_maximum && s->minimum > s->maximum)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_LIMITS),
				 errmsg("minimum fee %s %s is above the maximum fee %s %s",
						format_minor_units(s->minimum, currency_exponent(currency)), cx.currency_text,
						format_minor_units(s->maximum, currency_exponent(currency)), cx.currency_text)));
}

/* ---- calculation ---- */

static inline bool
fee_component_applies(const FeeComponent *c, Jsonb *context)
{
	JsonbIterator *it1,
			   *it2;

	if (c->when == NULL)
		return true;
	if (context == NULL)
		return false;
	it1 = JsonbIteratorInit(&context->root);
	it2 = JsonbIteratorInit(&c->when->root);
	return JsonbDeepContains(&it1, &it2);
}

/* Component tiers evaluated so far: fee_gross_up() bounds its work with it. */
static uint64 fee_tiers_evaluated = 0;

/* The component's exact value, rounded once. */
static int128
fee_component_value(const FeeComponent *c, int64 amount, RoundingMode mode)
{
	int128		n = 0;

	fee_tiers_evaluated++;

	switch (c->kind)
	{
		case FEE_FLAT:
			return c->flat;
		case FEE_PERCENTAGE:
			/* amount < 2^63, rate <= 10^19 < 2^64: the product fits. */
			n = (int128) amount * c->rate;
			break;
		case FEE_GRADUATED:
		case FEE_VOLUME:
			if (!fee_tiers_value(c->tiers, c->ntiers, c->kind == FEE_VOLUME, amount, &n, &fee_tiers_evaluated))
				fee_out_of_range();
			break;
	}
	return c->divisor == 1 ? n : div_round_int128(n, c->divisor, mode);
}

bool
fee_tiers_value(const FeeTier *tiers, int ntiers, bool volume, int64 amount, int128 *out, uint64 *evaluated)
{
	int128		n = 0;

	for (int i = 0; i < ntiers; i++)
	{
		const FeeTier *t = &tiers[i];
		int128		part;

		if (volume)
		{
			/* The whole amount at the rate of the tier it falls in. */
			(*evaluated)++;
			if (t->bounded && amount > t->up_to)
				continue;
			if (__builtin_mul_overflow((int128) amount, t->rate, &part) ||
				__builtin_add_overflow(part, t->flat, &n))
				return false;
			break;
		}
		else
		{
			/* Each tier charges the part of the amount in (previous up_to, up_to]. */
			int64		lower = i == 0 ? 0 : tiers[i - 1].up_to;
			int64		upper = (t->bounded && t->up_to < amount) ? t->up_to : amount;

			if (i > 0 && amount <= lower)
				break;
			(*evaluated)++;
			if (__builtin_mul_overflow((int128) (upper - lower), t->rate, &part) ||
				__builtin_add_overflow(part, t->flat, &part) ||
				__builtin_add_overflow(n, part, &n))
				return false;
		}
	}
	*out = n;
	return true;
}

/*
 * The fee on amount with the components applies[] marks; parts (when not
 * NULL) gets each applied component's value.  Never negative: rates, flats
 * and limits are.
 */
static int128
fee_total(const FeeSchedule *s, int64 amount, const bool *applies, int128 *parts,
		  FeeLimit *limit)
{
	int128		sum = 0;

	for (int i = 0; i < s->ncomponents; i++)
	{
		int128		v;

		if (!applies[i])
			continue;
		v = fee_component_value(&s->components[i], amount, s->rounding);
		if (parts)
			parts[i] = v;
		sum = add128(sum, v);
	}
	if (limit)
		*limit = FEE_LIMIT_NONE;
	if (s->has_minimum && sum < s->minimum)
	{
		sum = s->minimum;
		if (limit)
			*limit = FEE_LIMIT_MINIMUM;
	}
	if (s->has_maximum && sum > s->maximum)
	{
		sum = s->maximum;
		if (limit)
			*limit = FEE_LIMIT_MAXIMUM;
	}
	return sum;
}

/*
 * The least rate at which the fee grows on [from, to] (to within one volume
 * segment), counting every applied component at the smallest marginal rate
 * it has there, as a double just below the exact sum; and how far the
 * rounded fee may fall behind that growth: each rounded component is within
 * one unit of its exact value at both ends.
 */
static double
fee_min_growth(const FeeSchedule *s, const bool *applies, int64 from, int64 to, int *slack)
{
	double		rho = 0;

	*slack = 0;
	for (int i = 0; i < s->ncomponents; i++)
	{
		const FeeComponent *c = &s->components[i];
		double		least = 0;

		if (!applies[i])
			continue;
		if (c->divisor != 1)
			*slack += 2;
		switch (c->kind)
		{
			case FEE_FLAT:
				break;
			case FEE_PERCENTAGE:
				least = (double) c->rate / (double) c->divisor;
				break;
			case FEE_GRADUATED:
			case FEE_VOLUME:
				least = -1;
				for (int t = 0; t < c->ntiers; t++)
				{
					int64		lower = t == 0 ? PG_INT64_MIN : c->tiers[t - 1].up_to;
					bool		overlaps = lower < to && (!c->tiers[t].bounded || c->tiers[t].up_to >= from);
					double		r = (double) c->tiers[t].rate / (double) c->divisor;

					if (overlaps && (least < 0 || r < least))
						least = r;
				}
				least = Max(least, 0);
				break;
		}
		rho += least;
	}
	/* Below the exact sum whatever the doubles' rounding: the skip must never pass a solution. */
	return rho - 1e-9;
}

/*
 * The smallest charge c >= 0 with c - fee(c) >= net.  fee() is
 * non-decreasing between the tier boundaries of volume components (and
 * everywhere without them), so within such a segment
 *     c' = c + (net - (c - fee(c)))
 * skips no solution: any c'' in (c, c') has c'' - fee(c'') <= c'' - fee(c) < net.
 * The segments are tried in order; the first solution is the smallest.
 *
 * That step shrinks the shortfall only by the fee's marginal rate each time,
 * which is slow when the rates add up to nearly all of the charge.  So, when
 * no maximum caps the fee, the step is also bounded from the other side: the
 * unclamped fee grows at least at rate rho on the segment, less the rounding
 * slack k, so with D = net - (c - fee_unclamped(c)) no c'' up to
 * c + (D - k) / (1 - rho) can be a solution either, and the search jumps
 * there: a few steps per segment instead of thousands, still the smallest
 * answer.  The work stays bounded by GROSS_UP_MAX_WORK whatever happens.
 */
static int64
fee_gross_up(const FeeSchedule *s, const bool *applies, int64 net)
{
	int64	   *starts;
	int			nstarts = 1;
	uint64		work_limit = fee_tiers_evaluated + GROSS_UP_MAX_WORK;
	int128	   *parts = palloc0(sizeof(int128) * Max(s->ncomponents, 1));

	for (int i = 0; i < s->ncomponents; i++)
		if (applies[i] && s->components[i].kind == FEE_VOLUME)
			nstarts += s->components[i].ntiers;
	starts = palloc(sizeof(int64) * nstarts);
	nstarts = 0;
	starts[nstarts++] = 0;
	for (int i = 0; i < s->ncomponents; i++)
	{
		const FeeComponent *c = &s->components[i];

		if (!applies[i] || c->kind != FEE_VOLUME)
			continue;
		for (int t = 0; t < c->ntiers; t++)
			if (c->tiers[t].bounded && c->tiers[t].up_to < PG_INT64_MAX)
				starts[nstarts++] = c->tiers[t].up_to + 1;
	}
	/* Sort the segment starts (few: insertion sort). */
	for (int i = 1; i < nstarts; i++)
		for (int j = i; j > 0 && starts[j - 1] > starts[j]; j--)
		{
			int64		tmp = starts[j];

			starts[j] = starts[j - 1];
			starts[j - 1] = tmp;
		}

	for (int seg = 0; seg < nstarts; seg++)
	{
		int64		end = seg + 1 < nstarts ? starts[seg + 1] - 1 : PG_INT64_MAX;
		int128		c;

		if (end < net || (seg + 1 < nstarts && starts[seg + 1] == starts[seg]))
			continue;
		c = Max((int128) starts[seg], (int128) net);
		while (c <= end)
		{
			int128		remainder = c - fee_total(s, (int64) c, applies, parts, NULL);
			int128		next;

			if (remainder >= net)
			{
				pfree(starts);
				pfree(parts);
				return (int64) c;
			}
			next = c + (net - remainder);	/* > c */
			if (!s->has_maximum)
			{
				int			slack;
				double		rho = fee_min_growth(s, applies, (int64) c, end, &slack);
				int128		unclamped = 0;
				int128		shortfall;

				for (int i = 0; i < s->ncomponents; i++)
					if (applies[i])
						unclamped += parts[i];
				shortfall = net - (c - unclamped) - slack;
				if (rho < 1 - 1e-12 && shortfall > 0)
				{
					double		skip = floor((double) shortfall / (1 - rho));

					/* Every c'' in (c, c + skip] is excluded; past the segment, the segment is done. */
					if (skip >= (double) (end - c) + 1)
						next = (int128) end + 1;
					else if ((int128) skip + c + 1 > next)
						next = c + (int128) skip + 1;
				}
			}
			c = next;
			if (fee_tiers_evaluated > work_limit)
				ereport(ERROR,
						(errcode(ERRCODE_FC_GROSS_UP_IMPOSSIBLE),
						 errmsg("gross-up of %lld did not converge", (long long) net),
						 errdetail("The search stopped at its limit of %d component tiers evaluated.",
								   GROSS_UP_MAX_WORK),
						 errhint("The schedule's rates add up to nearly 100%% or more of the charge.")));
			CHECK_FOR_INTERRUPTS();
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_FC_GROSS_UP_IMPOSSIBLE),
			 errmsg("no charge up to %lld leaves %lld after the fee", (long long) PG_INT64_MAX,
					(long long) net),
			 errhint("The schedule's rates add up to 100%% or more of the charge.")));
	pg_unreachable();
}

/* ---- the per-backend cache ---- */

typedef struct FeeCacheKey
{
	pg_uuid_t	tenant;
	char		code[FEE_CODE_MAX + 1];
} FeeCacheKey;

typedef struct FeeCacheEntry
{
	FeeCacheKey key;
	MemoryContext cxt;			/* holds the versions */
	LocalTransactionId lxid;	/* valid only in this transaction, or Invalid: always */
	int			nversions;
	FeeSchedule *versions;		/* by effective_from */
} FeeCacheEntry;

static MemoryContext fee_cache_cxt = NULL;	/* the table and every entry */
static HTAB *fee_cache = NULL;
static Oid	fee_relid = InvalidOid;
static CacheWatch fee_watch;

/* An empty cache, filled schedule by schedule as they are used. */
static void
fee_cache_reset(void)
{
	HASHCTL		ctl;

	if (fee_cache_cxt != NULL)
		MemoryContextDelete(fee_cache_cxt);
	fee_cache_cxt = NULL;
	fee_cache = NULL;
	fee_relid = fincore_table_oid("fee_schedules");
	fee_cache_cxt = AllocSetContextCreate(TopMemoryContext, "fincore fee schedules",
										  ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(FeeCacheKey);
	ctl.entrysize = sizeof(FeeCacheEntry);
	ctl.hcxt = fee_cache_cxt;
	fee_cache = hash_create("fincore fee schedules", 64, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	cache_watch_begin(&fee_watch, 1, &fee_relid);
	cache_watch_done(&fee_watch);
}

typedef struct FeeLoad
{
	const FeeCacheKey *key;
	MemoryContext cxt;			/* where the compiled versions go */
	bool		latest;			/* read with the latest snapshot: may be cached */
	int			nversions;
	FeeSchedule *versions;
} FeeLoad;

static void
fee_load_query(void *arg)
{
	FeeLoad    *q = arg;
	static SPIPlanPtr plan = NULL;
	Datum		values[2];
	MemoryContext old;

	values[0] = UUIDPGetDatum(&q->key->tenant);
	values[1] = CStringGetTextDatum(q->key->code);
	fincore_spi_connect();
	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, TEXTOID};

		plan = fincore_prepare("SELECT s.id, s.currency, s.rules, s.rounding, s.effective_from, s.effective_until "
							   "FROM fincore.fee_schedules s "
							   "WHERE s.tenant_id OPERATOR(pg_catalog.=) $1 AND s.code OPERATOR(pg_catalog.=) $2 "
							   "ORDER BY s.effective_from",
							   2, types, 0);
	}

	/*
	 * What is cached must be as new as the invalidations already processed,
	 * whatever this transaction's snapshot (REPEATABLE READ), so it is read
	 * with the latest snapshot, as the catalogues are.  Parallel mode cannot
	 * take one: there the transaction's snapshot serves this transaction only.
	 */
	q->latest = !IsInParallelMode();
	if ((q->latest ? SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
										  true, false, 0)
		 : SPI_execute_plan(plan, values, NULL, true, 0)) != SPI_OK_SELECT)
		elog(ERROR, "fee schedule look-up failed");

	q->nversions = (int) SPI_processed;
	q->versions = MemoryContextAllocZero(q->cxt, sizeof(FeeSchedule) * Max(q->nversions, 1));
	for (int i = 0; i < q->nversions; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		FeeSchedule *s = &q->versions[i];
		bool		isnull;
		text	   *currency;
		Jsonb	   *rules;
		CurrencyCode code;

		s->id = *DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull));
		currency = DatumGetTextPP(SPI_getbinval(tup, desc, 2, &isnull));
		code = currency_pack_or_error(VARDATA_ANY(currency), VARSIZE_ANY_EXHDR(currency));
		rules = DatumGetJsonbP(SPI_getbinval(tup, desc, 3, &isnull));
		s->rounding = rounding_mode_from_text(DatumGetTextPP(SPI_getbinval(tup, desc, 4, &isnull)));
		s->effective_from = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
		s->effective_until = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &s->open_ended));
		old = MemoryContextSwitchTo(q->cxt);
		fee_rules_compile(rules, code, s);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
}

/*
 * The compiled versions of the current tenant's schedule `code`: from the
 * cache, or loaded (as the table's owner, filtered by tenant) and cached.
 */
static FeeCacheEntry *
fee_cache_lookup(const char *code, int len)
{
	FeeCacheKey key;
	FeeCacheEntry *entry;
	FeeLoad		q;
	MemoryContext load_cxt;

	fee_check_code(code, len);
	memset(&key, 0, sizeof(key));
	tenancy_require_tenant(&key.tenant);
	memcpy(key.code, code, len);

	if (!cache_watch_valid(&fee_watch))
		fee_cache_reset();
	entry = hash_search(fee_cache, &key, HASH_FIND, NULL);
	if (entry != NULL)
	{
		if (entry->lxid == InvalidLocalTransactionId || entry->lxid == MyProc->lxid)
			return entry;
		MemoryContextDelete(entry->cxt);
		hash_search(fee_cache, &key, HASH_REMOVE, NULL);
	}

	/*
	 * Load into a context of our own: the query may process invalidations
	 * that make the cache stale.  Only a load no change interrupted is kept.
	 */
	load_cxt = AllocSetContextCreate(CurrentMemoryContext, "fincore fee schedule",
									 ALLOCSET_SMALL_SIZES);
	q.key = &key;
	q.cxt = load_cxt;
	fincore_run_as_owner(fee_relid, fee_load_query, &q);

	if (!cache_watch_valid(&fee_watch))
	{
		/* Use it for this call only; it goes with the caller's memory. */
		entry = palloc0(sizeof(FeeCacheEntry));
		entry->key = key;
	}
	else
	{
		MemoryContextSetParent(load_cxt, fee_cache_cxt);
		entry = hash_search(fee_cache, &key, HASH_ENTER, NULL);
		/* Read with the transaction's snapshot (parallel mode): good for it only. */
		entry->lxid = q.latest ? InvalidLocalTransactionId : MyProc->lxid;
	}
	entry->cxt = load_cxt;
	entry->nversions = q.nversions;
	entry->versions = q.versions;
	return entry;
}

static const FeeSchedule *
fee_schedule_at(const char *code, int len, TimestampTz at)
{
	FeeCacheEntry *entry = fee_cache_lookup(code, len);

	for (int i = 0; i < entry->nversions; i++)
	{
		const FeeSchedule *s = &entry->versions[i];

		if (s->effective_from <= at && (s->open_ended || at < s->effective_until))
			return s;
	}
	if (entry->nversions == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_FEE_SCHEDULE_NOT_FOUND),
				 errmsg("fee schedule \"%.*s\" does not exist", len, code),
				 errhint("Define it with fincore.define_fee_schedule(); schedules belong to the current tenant.")));
	ereport(ERROR,
			(errcode(ERRCODE_FC_FEE_SCHEDULE_NOT_FOUND),
			 errmsg("no version of fee schedule \"%.*s\" is in force at %s",
					len, code, timestamptz_to_str(at))));
	pg_unreachable();
}

/* ---- one calculation, with its parts ---- */

typedef struct FeeCalc
{
	const FeeSchedule *schedule;
	bool		applies[FEE_MAX_COMPONENTS];
	int128		parts[FEE_MAX_COMPONENTS];
	FeeLimit	limit;
	int128		subtotal;		/* the components' sum, before limits */
	int64		fee;
} FeeCalc;

static void
fee_conditions(const FeeSchedule *s, Jsonb *context, bool *applies)
{
	fee_check_context(context);
	for (int i = 0; i < s->ncomponents; i++)
		applies[i] = fee_component_applies(&s->components[i], context);
}

static void
fee_calc(const FeeSchedule *s, int64 amount, Jsonb *context, FeeCalc *calc)
{
	fee_check_amount_arg(amount, "the amount to charge a fee on");
	calc->schedule = s;
	fee_conditions(s, context, calc->applies);
	calc->subtotal = 0;
	for (int i = 0; i < s->ncomponents; i++)
		calc->parts[i] = 0;
	calc->fee = int128_to_int64_checked(fee_total(s, amount, calc->applies, calc->parts, &calc->limit),
										"fee");
	for (int i = 0; i < s->ncomponents; i++)
		if (calc->applies[i])
			calc->subtotal = add128(calc->subtotal, calc->parts[i]);
}

/* Calls fn(name, amount, arg) for each line of the breakdown, in order. */
static void
fee_calc_lines(const FeeCalc *calc, void (*fn) (const char *, int64, void *), void *arg)
{
	const FeeSchedule *s = calc->schedule;

	for (int i = 0; i < s->ncomponents; i++)
		if (calc->applies[i])
			fn(s->components[i].name, int128_to_int64_checked(calc->parts[i], "fee component"), arg);
	if (calc->limit != FEE_LIMIT_NONE)
		fn(calc->limit == FEE_LIMIT_MINIMUM ? "minimum" : "maximum",
		   int128_to_int64_checked((int128) calc->fee - calc->subtotal, "fee limit adjustment"), arg);
}

/* ---- the C API (fees.h) ---- */

FeeMode
fee_mode_from_text(text *mode)
{
	const char *s = VARDATA_ANY(mode);
	int			len = VARSIZE_ANY_EXHDR(mode);

	if (len == 6 && memcmp(s, "on_top", 6) == 0)
		return FEE_MODE_ON_TOP;
	if (len == 8 && memcmp(s, "deducted", 8) == 0)
		return FEE_MODE_DEDUCTED;
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_FEE_MODE),
			 errmsg("invalid fee mode: \"%.*s\"", Min(len, 64), s),
			 errhint("Use on_top (the payer pays amount + fee) or deducted (the payee receives amount - fee).")));
	pg_unreachable();
}

void
fees_apply_mode(FeeMode mode, int64 amount, int64 fee, int64 *charge, int64 *delivered)
{
	fee_check_amount_arg(amount, "the amount");
	fee_check_amount_arg(fee, "the fee");
	if (mode == FEE_MODE_ON_TOP)
	{
		if (__builtin_add_overflow(amount, fee, charge))
			ereport(ERROR,
					(errcode(ERRCODE_FC_AMOUNT_OUT_OF_RANGE),
					 errmsg("amount %lld plus fee %lld is out of range", (long long) amount,
							(long long) fee)));
		*delivered = amount;
		return;
	}
	if (fee > amount)
		ereport(ERROR,
				(errcode(ERRCODE_FC_FEE_EXCEEDS_AMOUNT),
				 errmsg("fee %lld exceeds the amount %lld it is deducted from", (long long) fee,
						(long long) amount),
				 errhint("Charge the fee on top, or transfer a larger amount.")));
	*charge = amount;
	*delivered = amount - fee;
}

typedef struct BreakdownBuild
{
	JsonbParseState *state;
} BreakdownBuild;

static void
breakdown_line(const char *name, int64 amount, void *arg)
{
	BreakdownBuild *b = arg;

	pushJsonbValue(&b->state, WJB_BEGIN_OBJECT, NULL);
	jb_key(&b->state, "component");
	jb_string(&b->state, name);
	jb_key(&b->state, "amount");
	jb_int(&b->state, amount);
	pushJsonbValue(&b->state, WJB_END_OBJECT, NULL);
}

static Jsonb *
fee_breakdown_jsonb(const char *code, const FeeCalc *calc)
{
	BreakdownBuild b = {NULL};
	char		currency[CURRENCY_CODE_MAX_LEN + 1];
	JsonbValue *res;

	currency_unpack(calc->schedule->currency, currency);
	pushJsonbValue(&b.state, WJB_BEGIN_OBJECT, NULL);
	jb_key(&b.state, "schedule");
	jb_string(&b.state, code);
	jb_key(&b.state, "schedule_id");
	jb_string(&b.state, DatumGetCString(DirectFunctionCall1(uuid_out,
															  UUIDPGetDatum(&calc->schedule->id))));
	jb_key(&b.state, "currency");
	jb_string(&b.state, currency);
	jb_key(&b.state, "fee");
	jb_int(&b.state, calc->fee);
	jb_key(&b.state, "components");
	pushJsonbValue(&b.state, WJB_BEGIN_ARRAY, NULL);
	fee_calc_lines(calc, breakdown_line, &b);
	pushJsonbValue(&b.state, WJB_END_ARRAY, NULL);
	res = pushJsonbValue(&b.state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

static inline void
fee_check_currency(const FeeSchedule *s, const char *code, CurrencyCode currency)
{
	if (currency != 0 && currency != s->currency)
	{
		char		want[CURRENCY_CODE_MAX_LEN + 1];
		char		got[CURRENCY_CODE_MAX_LEN + 1];

		currency_unpack(s->currency, want);
		currency_unpack(currency, got);
		ereport(ERROR,
				(errcode(ERRCODE_FC_FEE_CURRENCY_MISMATCH),
				 errmsg("fee schedule \"%s\" charges in %s, not %s", code, want, got)));
	}
}

void
fees_calculate(const char *code, CurrencyCode currency, int64 amount, Jsonb *context,
			   TimestampTz at, FeeQuote *out)
{
	const FeeSchedule *s = fee_schedule_at(code, strlen(code), at);
	FeeCalc		calc;

	fee_check_currency(s, code, currency);
	fee_calc(s, amount, context, &calc);
	out->fee = calc.fee;
	out->schedule_id = s->id;
	out->breakdown = fee_breakdown_jsonb(code, &calc);
}

/* ---- SQL-callable ---- */

static const FeeSchedule *
fee_schedule_arg(FunctionCallInfo fcinfo, int argno, TimestampTz at)
{
	text	   *code = PG_GETARG_TEXT_PP(argno);

	return fee_schedule_at(VARDATA_ANY(code), VARSIZE_ANY_EXHDR(code), at);
}

/* fincore.calculate_fee(schedule text, amount bigint, context jsonb, at timestamptz) → bigint */
PG_FUNCTION_INFO_V1(fincore_calculate_fee);
Datum
fincore_calculate_fee(PG_FUNCTION_ARGS)
{
	const FeeSchedule *s = fee_schedule_arg(fcinfo, 0, PG_GETARG_TIMESTAMPTZ(3));
	int64		amount = PG_GETARG_INT64(1);
	Jsonb	   *context = PG_GETARG_JSONB_P(2);
	bool		applies[FEE_MAX_COMPONENTS];

	fee_check_amount_arg(amount, "the amount to charge a fee on");
	fee_conditions(s, context, applies);
	PG_RETURN_INT64(int128_to_int64_checked(fee_total(s, amount, applies, NULL, NULL), "fee"));
}

typedef struct SrfLines
{
	ReturnSetInfo *rsinfo;
} SrfLines;

static void
srf_line(const char *name, int64 amount, void *arg)
{
	SrfLines   *l = arg;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	values[0] = CStringGetTextDatum(name);
	values[1] = Int64GetDatum(amount);
	tuplestore_putvalues(l->rsinfo->setResult, l->rsinfo->setDesc, values, nulls);
}

/* fincore.fee_breakdown(schedule, amount, context, at) → setof fincore.fee_component */
PG_FUNCTION_INFO_V1(fincore_fee_breakdown);
Datum
fincore_fee_breakdown(PG_FUNCTION_ARGS)
{
	const FeeSchedule *s = fee_schedule_arg(fcinfo, 0, PG_GETARG_TIMESTAMPTZ(3));
	FeeCalc		calc;
	SrfLines	l;

	fee_calc(s, PG_GETARG_INT64(1), PG_GETARG_JSONB_P(2), &calc);
	InitMaterializedSRF(fcinfo, 0);
	l.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	fee_calc_lines(&calc, srf_line, &l);
	return (Datum) 0;
}

/* fincore.gross_up(schedule, net, context, at) → bigint */
PG_FUNCTION_INFO_V1(fincore_gross_up);
Datum
fincore_gross_up(PG_FUNCTION_ARGS)
{
	const FeeSchedule *s = fee_schedule_arg(fcinfo, 0, PG_GETARG_TIMESTAMPTZ(3));
	int64		net = PG_GETARG_INT64(1);
	bool		applies[FEE_MAX_COMPONENTS];

	fee_check_amount_arg(net, "the net amount to gross up");
	fee_conditions(s, PG_GETARG_JSONB_P(2), applies);
	PG_RETURN_INT64(fee_gross_up(s, applies, net));
}

/*
 * fincore.quote_fee(schedule, amount, fee_mode, context, at, currency) →
 * (fee, charge, delivered, schedule_id, breakdown): the ledger's API from
 * SQL.  NULL in any argument but currency gives NULL (as STRICT would); a
 * currency, when given, must be the schedule's.
 */
PG_FUNCTION_INFO_V1(fincore_quote_fee);
Datum
fincore_quote_fee(PG_FUNCTION_ARGS)
{
	text	   *code;
	int64		amount;
	FeeMode		mode;
	CurrencyCode currency = 0;
	FeeQuote	quote;
	int64		charge,
				delivered;
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	for (int i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			PG_RETURN_NULL();
	code = PG_GETARG_TEXT_PP(0);
	amount = PG_GETARG_INT64(1);
	mode = fee_mode_from_text(PG_GETARG_TEXT_PP(2));
	if (!PG_ARGISNULL(5))
	{
		text	   *c = PG_GETARG_TEXT_PP(5);

		currency = currency_pack_or_error(VARDATA_ANY(c), VARSIZE_ANY_EXHDR(c));
	}
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "quote_fee must return a record");
	fees_calculate(text_to_cstring(code), currency, amount, PG_GETARG_JSONB_P(3),
				   PG_GETARG_TIMESTAMPTZ(4), &quote);
	fees_apply_mode(mode, amount, quote.fee, &charge, &delivered);
	*id = quote.schedule_id;
	values[0] = Int64GetDatum(quote.fee);
	values[1] = Int64GetDatum(charge);
	values[2] = Int64GetDatum(delivered);
	values[3] = UUIDPGetDatum(id);
	values[4] = JsonbPGetDatum(quote.breakdown);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * fincore.check_fee_schedule(code, currency, rules, effective_from,
 * effective_until, rounding): validates a definition, raising its ZF4xx
 * error; define_fee_schedule() calls it before writing.
 */
PG_FUNCTION_INFO_V1(fincore_check_fee_schedule);
Datum
fincore_check_fee_schedule(PG_FUNCTION_ARGS)
{
	text	   *code;
	text	   *currency;
	CurrencyCode packed;
	FeeSchedule s;

	for (int i = 0; i < 6; i++)
		if (PG_ARGISNULL(i) && i != 4)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
					 errmsg("%s of a fee schedule must not be null",
							(const char *[]) {"code", "currency", "rules", "effective_from", "", "rounding"}[i])));
	code = PG_GETARG_TEXT_PP(0);
	fee_check_code(VARDATA_ANY(code), VARSIZE_ANY_EXHDR(code));
	currency = PG_GETARG_TEXT_PP(1);
	packed = currency_pack_or_error(VARDATA_ANY(currency), VARSIZE_ANY_EXHDR(currency));
	(void) currency_exponent(packed);
	(void) rounding_mode_from_text(PG_GETARG_TEXT_PP(5));
	if (!PG_ARGISNULL(4) && PG_GETARG_TIMESTAMPTZ(4) <= PG_GETARG_TIMESTAMPTZ(3))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_FEE_SCHEDULE),
				 errmsg("effective_until %s is not after effective_from %s",
						timestamptz_to_str(PG_GETARG_TIMESTAMPTZ(4)),
						timestamptz_to_str(PG_GETARG_TIMESTAMPTZ(3))),
				 errhint("A version is in force from effective_from (inclusive) until effective_until (exclusive).")));
	memset(&s, 0, sizeof(s));
	fee_rules_compile(PG_GETARG_JSONB_P(2), packed, &s);
	PG_RETURN_VOID();
}

/* Trigger on fincore.fee_schedules: every backend drops its compiled schedules. */
PG_FUNCTION_INFO_V1(fincore_fee_schedules_changed);
Datum
fincore_fee_schedules_changed(PG_FUNCTION_ARGS)
{
	return cache_watch_trigger(fcinfo);
}
