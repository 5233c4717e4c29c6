/*
 * queue.h — the job queue (queue.c).
 */
#ifndef FINCORE_QUEUE_H
#define FINCORE_QUEUE_H

#include "fincore.h"

#include "utils/jsonb.h"

/* ---- job queue (queue.c) ---- */

extern void queue_init(void);

/*
 * Enqueue a job from C, in the caller's transaction: as fincore.enqueue(queue,
 * payload, unique_key => unique_key) does for the tenant given (priority 0, 25
 * attempts, to run now).  A unique key an unfinished job holds returns that
 * job.  Returns the job's id.  On a Citus worker it raises ZF703.
 */
extern int64 queue_enqueue_job(const pg_uuid_t *tenant, const char *queue, Jsonb *payload,
							   const char *unique_key);

#endif							/* FINCORE_QUEUE_H */
