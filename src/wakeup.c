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
#include "utils/timestamp.h"

typedef struct WakeBoard
{
	int			n;				/* entries: MaxBackends */
	pg_atomic_uint32 waiters;
	pg_atomic_uint64 topic[FLEXIBLE_ARRAY_MEMBER];
} WakeBoard;

#define PENDING_MAX	16

static WakeBoard *board = NULL;
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
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			unregister_self();
			break;
		default:
			return;
	}
	npending = 0;
	pending_all = false;
}

static void
ensure_callback(void)
{
	if (!callback_set)
	{
		RegisterXactCallback(wakeup_xact_callback, NULL);
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
