/*
 * uuidv7.h — time-ordered ids (uuidv7.c).
 */
#ifndef FINCORE_UUIDV7_H
#define FINCORE_UUIDV7_H

#include "fincore.h"

/* ---- time-ordered ids (uuidv7.c) ---- */

extern void uuidv7_generate(pg_uuid_t *out);

#endif							/* FINCORE_UUIDV7_H */
