/*
 * queue.h — the job queue (queue.c).
 */
#ifndef FINCORE_QUEUE_H
#define FINCORE_QUEUE_H

#include "fincore.h"

/* ---- job queue (queue.c) ---- */

extern void queue_init(void);

#endif							/* FINCORE_QUEUE_H */
