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

#endif							/* FINCORE_JSONB_BUILD_H */
