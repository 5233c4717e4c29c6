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

/* ---- reading jsonb ---- */

/*
 * Collect the fields of a JSON object into vals[] by their position in
 * keys[]; an unknown key is errcode_unknown.  Values of nested containers come back as
 * jbvBinary.
 */
void
jb_fields(JsonbContainer *obj, const char *const *keys, int nkeys,
		  JsonbValue *vals, bool *present, const char *where, int errcode_unknown)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			idx = -1;

	memset(present, 0, sizeof(bool) * nkeys);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			idx = -1;
			for (int i = 0; i < nkeys; i++)
				if ((int) strlen(keys[i]) == v.val.string.len &&
					memcmp(keys[i], v.val.string.val, v.val.string.len) == 0)
					idx = i;
			if (idx < 0)
				ereport(ERROR,
						(errcode(errcode_unknown),
						 errmsg("unknown key \"%.*s\" in %s",
								Min(v.val.string.len, 64), v.val.string.val, where)));
		}
		else if (tok == WJB_VALUE)
		{
			vals[idx] = v;
			present[idx] = true;
		}
	}
}

/* A JSON value as text for a message (a string quoted, at most 64 bytes of it). */
char *
jb_value_text(const JsonbValue *v)
{
	if (v->type == jbvString)
		return psprintf("\"%.*s\"", Min(v->val.string.len, 64), v->val.string.val);
	if (v->type == jbvBinary)
		return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	return JsonbToCString(NULL, &JsonbValueToJsonb((JsonbValue *) v)->root, 0);
}
