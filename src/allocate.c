/*
 * allocate.c — split an amount into parts by ratios without losing a cent.
 *
 * Each part first gets floor(|amount| × ratio / Σ ratios), computed on 128
 * bits; the units left over (fewer than the number of non-zero ratios) go one
 * each to the parts with the largest exact remainders, ties to the earlier
 * position.  A zero ratio has a zero remainder, so it never receives a unit.
 * Negative amounts are split as their magnitude and negated, symmetrically.
 */
#include "fincore.h"

#include "money.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

/* Upper bound on the number of parts, to keep allocations sane. */
#define ALLOCATE_MAX_PARTS 1000000

static void
allocation_error(const char *msg, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_ALLOCATION),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}

typedef struct AllocSlot
{
	int			index;
	uint128		remainder;
} AllocSlot;

static int
alloc_slot_cmp(const void *a, const void *b)
{
	const AllocSlot *x = a;
	const AllocSlot *y = b;

	if (x->remainder != y->remainder)
		return x->remainder > y->remainder ? -1 : 1;
	return (x->index > y->index) - (x->index < y->index);
}

static Datum
allocate_parts(FunctionCallInfo fcinfo, Amount *amount, const int64 *ratios, int n)
{
	bool		negative = amount->units < 0;
	uint128		mag = negative ? (uint128) (-(amount->units + 1)) + 1 : (uint128) amount->units;
	uint128		total = 0;
	uint128		given = 0;
	uint128    *parts = palloc(sizeof(uint128) * n);
	AllocSlot  *slots = palloc(sizeof(AllocSlot) * n);
	Datum	   *elems = palloc(sizeof(Datum) * n);
	Oid			amount_type = get_fn_expr_argtype(fcinfo->flinfo, 0);
	int16		typlen;
	bool		typbyval;
	char		typalign;

	for (int i = 0; i < n; i++)
		total += (uint128) ratios[i];
	if (total == 0)
		allocation_error("allocation ratios must not all be zero", NULL);

	for (int i = 0; i < n; i++)
	{
		uint128		product = mag * (uint128) ratios[i];	/* < 2^126 */

		parts[i] = product / total;
		slots[i].index = i;
		slots[i].remainder = product % total;
		given += parts[i];
	}
	/* mag - given < n, since each remainder is below total. */
	qsort(slots, n, sizeof(AllocSlot), alloc_slot_cmp);
	for (uint128 k = 0; k < mag - given; k++)
		parts[slots[k].index] += 1;

	for (int i = 0; i < n; i++)
		elems[i] = AmountPGetDatum(amount_make(negative ? (int64) -(int128) parts[i] : (int64) parts[i],
											   amount->currency));
	get_typlenbyvalalign(amount_type, &typlen, &typbyval, &typalign);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, amount_type, typlen, typbyval, typalign));
}

/* fincore.allocate(amount, ratios bigint[]) → amount[] */
PG_FUNCTION_INFO_V1(fincore_allocate_ratios);
Datum
fincore_allocate_ratios(PG_FUNCTION_ARGS)
{
	Amount	   *amount = PG_GETARG_AMOUNT_P(0);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	int			n;
	Datum	   *elems;
	bool	   *nulls;
	int64	   *ratios;

	if (ARR_NDIM(arr) > 1)
		allocation_error("allocation ratios must be a one-dimensional array", NULL);
	n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	if (n == 0)
		allocation_error("allocation ratios must not be empty", NULL);
	if (n > ALLOCATE_MAX_PARTS)
		allocation_error(psprintf("cannot allocate into %d parts", n),
						 psprintf("At most %d parts are allowed.", ALLOCATE_MAX_PARTS));
	deconstruct_array(arr, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	ratios = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			allocation_error(psprintf("allocation ratio at position %d is null", i + 1), NULL);
		ratios[i] = DatumGetInt64(elems[i]);
	}
	for (int i = 0; i < n; i++)
		if (ratios[i] < 0)
			allocation_error(psprintf("allocation ratio " INT64_FORMAT " at position %d is negative",
									  ratios[i], i + 1),
							 "Ratios are non-negative weights; at least one must be positive.");
	return allocate_parts(fcinfo, amount, ratios, n);
}

/* fincore.allocate(amount, parts int) → amount[]: an even split. */
PG_FUNCTION_INFO_V1(fincore_allocate_even);
Datum
fincore_allocate_even(PG_FUNCTION_ARGS)
{
	Amount	   *amount = PG_GETARG_AMOUNT_P(0);
	int32		n = PG_GETARG_INT32(1);
	int64	   *ratios;

	if (n < 1 || n > ALLOCATE_MAX_PARTS)
		allocation_error(psprintf("cannot allocate into %d parts", n),
						 psprintf("The number of parts must be between 1 and %d.", ALLOCATE_MAX_PARTS));
	ratios = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
		ratios[i] = 1;
	return allocate_parts(fcinfo, amount, ratios, n);
}
