/*
 * wakeup.h — waking backends that wait for work (wakeup.c).
 *
 * A backend waiting for jobs of a queue (fincore.wait_for_jobs) sleeps on its
 * latch, registered on a board in shared memory under a topic: a 64-bit hash
 * of the database, the kind of work and its name.  A transaction that made
 * such work ready notes the topic, and once it has committed (its rows
 * visible), sets the latch of every backend waiting on that topic.  Unlike
 * NOTIFY, no lock is taken at commit.  The board exists when fincore is in
 * shared_preload_libraries; without it, waiters look again every
 * WAKEUP_POLL_MS instead.
 */
#ifndef FINCORE_WAKEUP_H
#define FINCORE_WAKEUP_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* How often a waiter looks for work when no board can wake it. */
#define WAKEUP_POLL_MS	50

/* The topic of work of a kind ("queue") and name in this database. */
extern uint64 wakeup_topic(const char *kind, const char *name);

/* Note that this transaction made work of topic ready: its waiters wake at commit. */
extern void wakeup_at_commit(uint64 topic);

/* Wake every waiter of this database at commit (work of many names became ready). */
extern void wakeup_all_at_commit(void);

/*
 * A waiter registers on its topic before it first looks for work (so that no
 * commit between the look and the wait is missed), then alternates looking and
 * wakeup_wait, then unregisters; an error unregisters it at transaction end.
 */
extern void wakeup_register(uint64 topic);
/* Sleep until woken, timeout_ms pass, or WAKEUP_POLL_MS pass without a board; true if woken. */
extern bool wakeup_wait(long timeout_ms);
extern void wakeup_unregister(void);

/*
 * The wait of fincore.wait_for_jobs / wait_for_events: registered on topic,
 * call look(arg, &wake_at) until it says there is work (true) or timeout_us
 * pass (false), sleeping in between until woken, timeout, or wake_at (when
 * look sets it, e.g. a scheduled job's due time).  Refuses a transaction
 * snapshot (sqlstate, naming fn): it would never see the work committed while
 * it waits.
 */
typedef bool (*WakeupLook) (void *arg, TimestampTz *wake_at);
extern bool wakeup_wait_for(uint64 topic, int64 timeout_us, WakeupLook look, void *arg,
							int sqlstate, const char *fn);

/* Whether a board wakes waiters (fincore preloaded). */
extern bool wakeup_board_present(void);

/* Called from _PG_init. */
extern void wakeup_init(void);

#endif							/* FINCORE_WAKEUP_H */
