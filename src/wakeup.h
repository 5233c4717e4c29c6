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

/*
 * Wake every waiter of this database at commit (work of many names became
 * ready), and invalidate every reader's position in the ready log.
 */
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

/*
 * The ready log: which work became ready where in its order.  A reader that
 * resumes its scans of some work at a position (dequeue's hint) must scan from
 * the start again when work became ready before that position; the log tells
 * it, without a look at the table.  Work of a topic has an order of positions
 * (for jobs: -priority, run_at, id).  A committing transaction that made work
 * ready publishes the first position of it, once visible, into a ring of the
 * last publications of its topic's slot; work made ready without a position
 * (or by many topics, or topics unknown) invalidates every reader's position.
 * Work that will fall due later (scheduled jobs) publishes its due time, so
 * that readers look again then.  Only with the board (fincore preloaded).
 */
typedef struct WorkPosition
{
	int64		k[3];			/* compared in order */
} WorkPosition;

typedef struct ReadyMark
{
	uint64		gen;			/* the topic's slot's publications seen */
	uint64		all_gen;		/* and the invalidations of every position */
} ReadyMark;

/* This transaction makes work of topic ready from pos on (NULL: anywhere), visible at commit. */
extern void wakeup_ready_at_commit(uint64 topic, const WorkPosition *pos);
/* ... or makes work of topic that falls due at due (a scheduled job), visible at commit. */
extern void wakeup_due_at_commit(uint64 topic, TimestampTz due);
/* ... at its end if it fails (or a subtransaction fails): claims rolled back make work ready again. */
extern void wakeup_ready_at_abort(uint64 topic, const WorkPosition *pos);
/* The log's mark of topic: take it before the snapshot of a scan.  false without the board. */
extern bool wakeup_ready_mark(uint64 topic, ReadyMark *mark);
/*
 * Has work of topic become ready before pos (NULL: anywhere) since mark?  If
 * not, the mark moves to now (a scan whose snapshot is taken after this call
 * may resume at pos).  true without the board, or when the log has been
 * overwritten since the mark.  *due becomes the earliest of itself (0: none)
 * and the due times published since mark.
 */
extern bool wakeup_ready_before(uint64 topic, ReadyMark *mark, const WorkPosition *pos, TimestampTz *due);

/* Whether a board wakes waiters (fincore preloaded). */
extern bool wakeup_board_present(void);

/* Called from _PG_init. */
extern void wakeup_init(void);

#endif							/* FINCORE_WAKEUP_H */
