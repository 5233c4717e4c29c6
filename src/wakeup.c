/*
 * wakeup.c — the board on which backends wait for work, and the wake-ups a
 * committing transaction sends them (wakeup.h).
 *
 * The board is an array of topics indexed by pgprocno (0: not waiting) and a
 * count of waiters, so that a commit with nobody waiting reads one counter.  A
 * commit that made work ready scans the array for its topics and sets the
 * latches of their waiters: a few hundred atomic reads, no lock.  A topic is
 * the database's oid in its high 32 bits and a hash of the work's kind and
 * name in its low 32 (never 0), so that "every waiter of this database" is a
 * comparison of the high half.
 *
 * The ready log (wakeup.h) is a second structure beside the board: slots,
 * each a spinlock, a count of publications and a ring of the last LOG_RING of
 * them (topic and first position); a topic publishes into one slot, readers
 * skip the entries of other topics that share it.  A publication is made in
 * the committing transaction's callback, after the transaction left the proc
 * array: a reader that has read the slot's count before taking a snapshot sees
 * every piece of work that count covers.  all_gen counts the invalidations of
 * every position (work made ready in many queues, or in queues unknown).
 */
#include "postgres.h"

#include "wakeup.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

typedef struct WakeBoard
{
	int			n;				/* entries: MaxBackends */
	pg_atomic_uint32 waiters;
	pg_atomic_uint64 topic[FLEXIBLE_ARRAY_MEMBER];
} WakeBoard;

#define PENDING_MAX	16
#define LOG_SLOTS	256
#define LOG_RING	8

typedef struct LogEntry
{
	uint64		gen;
	uint64		topic;
	bool		ready;			/* work became ready: */
	bool		anywhere;		/* ... with no position: before every position */
	WorkPosition pos;			/* ... else from here on */
	TimestampTz due;			/* work falls due then (0: none) */
} LogEntry;

typedef struct LogSlot
{
	slock_t		mutex;
	uint64		gen;			/* publications so far; the last LOG_RING are in ring */
	LogEntry	ring[LOG_RING];
} LogSlot;

typedef struct ReadyLog
{
	pg_atomic_uint64 all_gen;
	LogSlot		slot[LOG_SLOTS];
} ReadyLog;

/* Work this transaction makes ready, to publish at its end. */
typedef struct PendingReady
{
	uint64		topic;
	bool		ready;
	bool		anywhere;
	WorkPosition pos;			/* the first, when ready and not anywhere */
	TimestampTz due;			/* the earliest, 0: none */
} PendingReady;

typedef struct PendingList
{
	int			n;
	bool		all;			/* too many topics: invalidate every position */
	PendingReady item[PENDING_MAX];
} PendingList;

static WakeBoard *board = NULL;
static ReadyLog *ready_log = NULL;
static PendingList ready_commit;	/* published when the transaction commits */
static PendingList ready_abort; /* when it rolls back, or a subtransaction did */
static bool subxact_rolled_back = false;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static uint64 pending[PENDING_MAX];
static int	npending = 0;
static bool pending_all = false;
static bool registered = false;
static bool callback_set = false;

static Size
board_size(void)
{
	return add_size(offsetof(WakeBoard, topic), mul_size(sizeof(pg_atomic_uint64), MaxBackends));
}

static void
board_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(board_size());
	RequestAddinShmemSpace(sizeof(ReadyLog));
}

static void
board_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	board = ShmemInitStruct("fincore wake-up board", board_size(), &found);
	if (!found)
	{
		board->n = MaxBackends;
		pg_atomic_init_u32(&board->waiters, 0);
		for (int i = 0; i < board->n; i++)
			pg_atomic_init_u64(&board->topic[i], 0);
	}
	ready_log = ShmemInitStruct("fincore ready log", sizeof(ReadyLog), &found);
	if (!found)
	{
		memset(ready_log, 0, sizeof(ReadyLog));
		pg_atomic_init_u64(&ready_log->all_gen, 0);
		for (int i = 0; i < LOG_SLOTS; i++)
			SpinLockInit(&ready_log->slot[i].mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
wakeup_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = board_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = board_startup;
}

bool
wakeup_board_present(void)
{
	return board != NULL;
}

uint64
wakeup_topic(const char *kind, const char *name)
{
	uint32		h = hash_bytes((const unsigned char *) name, (int) strlen(name));

	h = hash_combine(h, hash_bytes((const unsigned char *) kind, (int) strlen(kind)));
	return ((uint64) MyDatabaseId << 32) | (h == 0 ? 1 : h);
}

/* Set the latch of every waiter on topic (all: every waiter of this database). */
static void
wake(uint64 topic, bool all)
{
	if (board == NULL || pg_atomic_read_u32(&board->waiters) == 0)
		return;
	for (int i = 0; i < board->n; i++)
	{
		uint64		t = pg_atomic_read_u64(&board->topic[i]);

		if (t != 0 && (t == topic || (all && (t >> 32) == (topic >> 32))))
			SetLatch(&ProcGlobal->allProcs[i].procLatch);
	}
}

/* ---- the ready log ---- */

static inline int
position_cmp(const WorkPosition *a, const WorkPosition *b)
{
	for (int i = 0; i < 3; i++)
		if (a->k[i] != b->k[i])
			return a->k[i] < b->k[i] ? -1 : 1;
	return 0;
}

static inline LogSlot *
log_slot(uint64 topic)
{
	return &ready_log->slot[(uint32) (topic ^ (topic >> 32)) % LOG_SLOTS];
}

static void
log_publish(const PendingReady *r)
{
	LogSlot    *slot = log_slot(r->topic);
	LogEntry   *e;

	SpinLockAcquire(&slot->mutex);
	slot->gen++;
	e = &slot->ring[slot->gen % LOG_RING];
	e->gen = slot->gen;
	e->topic = r->topic;
	e->ready = r->ready;
	e->anywhere = r->anywhere;
	e->pos = r->pos;
	e->due = r->due;
	SpinLockRelease(&slot->mutex);
}

/*
 * Publish list (the transaction is visible, or gone), and with wake_too wake
 * the waiters of its topics (a commit's are woken by the board's own list).
 */
static void
log_publish_all(PendingList *list, bool wake_too)
{
	if (list->all)
	{
		pg_atomic_fetch_add_u64(&ready_log->all_gen, 1);
		if (wake_too)
			wake((uint64) MyDatabaseId << 32, true);
	}
	else
		for (int i = 0; i < list->n; i++)
		{
			log_publish(&list->item[i]);
			if (wake_too)
				wake(list->item[i].topic, false);
		}
}

/* Add to list: work of topic ready from pos (ready; NULL: anywhere), or due at due (not 0). */
static void
pending_add(PendingList *list, uint64 topic, bool ready, const WorkPosition *pos, TimestampTz due)
{
	PendingReady *r = NULL;

	if (list->all)
		return;
	for (int i = 0; i < list->n && r == NULL; i++)
		if (list->item[i].topic == topic)
			r = &list->item[i];
	if (r == NULL)
	{
		if (list->n == PENDING_MAX)
		{
			list->all = true;
			return;
		}
		r = &list->item[list->n++];
		memset(r, 0, sizeof(*r));
		r->topic = topic;
	}
	if (ready)
	{
		if (pos == NULL)
			r->anywhere = true;
		else if (!r->ready || position_cmp(pos, &r->pos) < 0)
			r->pos = *pos;
		r->ready = true;
	}
	if (due != 0 && (r->due == 0 || due < r->due))
		r->due = due;
}

static void ensure_callback(void);

void
wakeup_ready_at_commit(uint64 topic, const WorkPosition *pos)
{
	if (ready_log == NULL)
		return;
	ensure_callback();
	pending_add(&ready_commit, topic, true, pos, 0);
}

void
wakeup_due_at_commit(uint64 topic, TimestampTz due)
{
	if (ready_log == NULL)
		return;
	ensure_callback();
	pending_add(&ready_commit, topic, false, NULL, due);
}

void
wakeup_ready_at_abort(uint64 topic, const WorkPosition *pos)
{
	if (ready_log == NULL)
		return;
	ensure_callback();
	pending_add(&ready_abort, topic, true, pos, 0);
}

bool
wakeup_ready_mark(uint64 topic, ReadyMark *mark)
{
	LogSlot    *slot;

	if (ready_log == NULL)
		return false;
	slot = log_slot(topic);
	SpinLockAcquire(&slot->mutex);
	mark->gen = slot->gen;
	mark->all_gen = pg_atomic_read_u64(&ready_log->all_gen);
	SpinLockRelease(&slot->mutex);
	return true;
}

bool
wakeup_ready_before(uint64 topic, ReadyMark *mark, const WorkPosition *pos, TimestampTz *due)
{
	LogSlot    *slot;
	bool		before = false;

	if (ready_log == NULL)
		return true;
	slot = log_slot(topic);
	SpinLockAcquire(&slot->mutex);
	if (pg_atomic_read_u64(&ready_log->all_gen) != mark->all_gen || slot->gen - mark->gen > LOG_RING)
		before = true;
	else
		for (uint64 g = mark->gen + 1; g <= slot->gen && !before; g++)
		{
			const LogEntry *e = &slot->ring[g % LOG_RING];

			if (e->topic != topic)
				continue;
			before = e->ready && (e->anywhere || pos == NULL || position_cmp(&e->pos, pos) < 0);
			if (e->due != 0 && (*due == 0 || e->due < *due))
				*due = e->due;
		}
	if (!before)
		mark->gen = slot->gen;
	SpinLockRelease(&slot->mutex);
	return before;
}

/* ---- the board ---- */

static void
unregister_self(void)
{
	if (!registered)
		return;
	pg_atomic_write_u64(&board->topic[MyProc->pgprocno], 0);
	pg_atomic_fetch_sub_u32(&board->waiters, 1);
	registered = false;
}

static void
wakeup_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* Committed and visible: wake the waiters of what it made ready. */
			if (pending_all)
				wake((uint64) MyDatabaseId << 32, true);
			else
				for (int i = 0; i < npending; i++)
					wake(pending[i], false);
			if (ready_log != NULL)
			{
				log_publish_all(&ready_commit, false);
				if (subxact_rolled_back)
					log_publish_all(&ready_abort, true);
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			unregister_self();
			/* Gone: the work its claims had taken is ready again. */
			if (ready_log != NULL)
				log_publish_all(&ready_abort, true);
			break;
		default:
			return;
	}
	npending = 0;
	pending_all = false;
	memset(&ready_commit, 0, offsetof(PendingList, item));
	memset(&ready_abort, 0, offsetof(PendingList, item));
	subxact_rolled_back = false;
}

static void
wakeup_subxact_callback(SubXactEvent event, SubTransactionId mySubid pg_attribute_unused(),
						SubTransactionId parentSubid pg_attribute_unused(), void *arg pg_attribute_unused())
{
	/* Claims of a rolled-back savepoint are ready again whatever the transaction does. */
	if (event == SUBXACT_EVENT_ABORT_SUB && (ready_abort.n > 0 || ready_abort.all))
		subxact_rolled_back = true;
}

static void
ensure_callback(void)
{
	if (!callback_set)
	{
		RegisterXactCallback(wakeup_xact_callback, NULL);
		RegisterSubXactCallback(wakeup_subxact_callback, NULL);
		callback_set = true;
	}
}

void
wakeup_at_commit(uint64 topic)
{
	if (board == NULL || pending_all)
		return;
	ensure_callback();
	for (int i = 0; i < npending; i++)
		if (pending[i] == topic)
			return;
	if (npending == PENDING_MAX)
		pending_all = true;		/* many kinds of work: wake every waiter of the database */
	else
		pending[npending++] = topic;
}

void
wakeup_all_at_commit(void)
{
	if (board == NULL)
		return;
	ensure_callback();
	pending_all = true;
	ready_commit.all = true;
}

void
wakeup_register(uint64 topic)
{
	if (board == NULL || MyProc == NULL || MyProc->pgprocno >= board->n)
		return;
	ensure_callback();
	if (!registered)
		pg_atomic_fetch_add_u32(&board->waiters, 1);
	pg_atomic_write_u64(&board->topic[MyProc->pgprocno], topic);
	registered = true;
}

bool
wakeup_wait(long timeout_ms)
{
	int			rc;

	if (!registered)
		timeout_ms = Min(timeout_ms, WAKEUP_POLL_MS);
	rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, Max(timeout_ms, 0),
				   PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return (rc & WL_LATCH_SET) != 0;
}

void
wakeup_unregister(void)
{
	unregister_self();
}

bool
wakeup_wait_for(uint64 topic, int64 timeout_us, WakeupLook look, void *arg, int sqlstate, const char *fn)
{
	TimestampTz deadline;
	volatile bool ready = false;

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("fincore.%s needs READ COMMITTED", fn),
				 errdetail("Under %s the transaction's snapshot never sees the work committed while it waits.",
						   IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errhint("Call it on its own (autocommit) or in a READ COMMITTED transaction.")));
	deadline = GetCurrentTimestamp() + timeout_us;
	/* On the board before the first look: a commit after it wakes the wait. */
	wakeup_register(topic);
	PG_TRY();
	{
		for (;;)
		{
			TimestampTz wake_at = 0;
			TimestampTz now;
			TimestampTz until;

			if (look(arg, &wake_at))
			{
				ready = true;
				break;
			}
			now = GetCurrentTimestamp();
			if (now >= deadline)
				break;
			until = (wake_at != 0 && wake_at < deadline) ? wake_at : deadline;
			(void) wakeup_wait((long) ((until - now + 999) / 1000));
		}
	}
	PG_FINALLY();
	{
		wakeup_unregister();
	}
	PG_END_TRY();
	return ready;
}
