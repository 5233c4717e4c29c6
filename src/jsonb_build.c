/*
 * jsonb_build.c — building jsonb objects in C, for the JSON fincore writes
 * itself (fee breakdowns, ledger event payloads): a key, then a value, on a
 * JsonbParseState, as pushJsonbValue() wants them.
 */
#include "fincore.h"

#include "jsonb_build.h"

#include "utils/builtins.h"
#include "utils/numeric.h"

void
jb_key(JsonbParseState **st, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(st, WJB_KEY, &k);
}

void
jb_string(JsonbParseState **st, const char *s)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = strlen(s);
	pushJsonbValue(st, WJB_VALUE, &v);
}

void
jb_int(JsonbParseState **st, int64 n)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(n);
	pushJsonbValue(st, WJB_VALUE, &v);
}

void
jb_null(JsonbParseState **st)
{
	JsonbValue	v;

	v.type = jbvNull;
	pushJsonbValue(st, WJB_VALUE, &v);
}

/* A whole jsonb document as a value (e.g. metadata inside a payload). */
void
jb_jsonb(JsonbParseState **st, Jsonb *j)
{
	JsonbValue	v;

	if (j == NULL)
	{
		jb_null(st);
		return;
	}
	if (JB_ROOT_IS_SCALAR(j))
	{
		JsonbValue	scalar;

		(void) JsonbExtractScalar(&j->root, &scalar);
		pushJsonbValue(st, WJB_VALUE, &scalar);
		return;
	}
	v.type = jbvBinary;
	v.val.binary.data = &j->root;
	v.val.binary.len = VARSIZE(j) - VARHDRSZ;
	pushJsonbValue(st, WJB_VALUE, &v);
}
