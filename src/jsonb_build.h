/*
 * jsonb_build.h — building jsonb in C (jsonb_build.c).
 */
#ifndef FINCORE_JSONB_BUILD_H
#define FINCORE_JSONB_BUILD_H

#include "fincore.h"
#include "utils/jsonb.h"

/* ---- building jsonb (jsonb_build.c): a key, then its value ---- */

extern void jb_key(JsonbParseState **st, const char *key);
extern void jb_string(JsonbParseState **st, const char *s);
extern void jb_int(JsonbParseState **st, int64 n);
extern void jb_null(JsonbParseState **st);
extern void jb_jsonb(JsonbParseState **st, Jsonb *j);

/* ---- reading jsonb (jsonb_build.c) ---- */

static inline bool
jb_is_object(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

static inline bool
jb_is_array(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data);
}

/* The members of an object by their keys' positions in keys[]; an unknown key raises errcode_unknown. */
extern void jb_fields(JsonbContainer *obj, const char *const *keys, int nkeys,
					  JsonbValue *vals, bool *present, const char *where, int errcode_unknown);

/* A JSON value as text for a message. */
extern char *jb_value_text(const JsonbValue *v);

#endif							/* FINCORE_JSONB_BUILD_H */
