/*
 * ratelimit_shmem.c — the rate limiter's table of keys in shared memory.
 *
 * A fixed number of slots (fincore.rate_limit_slots), allocated when the
 * server starts, so fincore must be in shared_preload_libraries; without it
 * every limiter function raises ZF751 and nothing else in fincore cares.
 * Slots are grouped in buckets of RATE_WAYS; buckets in RATE_PARTITIONS
 * partitions, each under an LWLock of its own.  A key may live in either of
 * two buckets of its partition (two choices keep buckets from overflowing
 * long before the table is full) and is found by comparing 128-bit
 * fingerprints.  Nothing here writes a heap page or WAL.
 *
 * Eviction: a slot is free when it holds no key or its key is idle: its TAT
 * is not after now (its allowance is whole again, so forgetting it changes
 * no decision) and no backend holds one of its in-flight slots.  Only when
 * both buckets of a new key hold live keys is the table full for it; then
 * fincore.rate_limit_when_full says what happens (docs/rate-limits.md).
 *
 * In-flight slots (concurrency_acquire) are counted in the key's slot and
 * remembered by the backend that took them; the backend gives them back when
 * its transaction ends (commit or abort) and when it exits.  A backend that
 * dies without exiting (SIGKILL, a crash) makes the postmaster reinitialise
 * shared memory, which empties the whole table.
 */
#include "ratelimit.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tenancy.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define RATE_WAYS			8
/*
 * At most this many partitions (and locks); a partition has at least
 * RATE_MIN_BUCKETS buckets, so that a small table is not cut into partitions
 * too small for two choices to even out (a partition fills up as a whole).
 */
#define RATE_MAX_PARTITIONS	128
#define RATE_MIN_BUCKETS	64
#define RATE_TRANCHE		"fincore_rate_limit"

typedef struct RateSlot
{
	RateKey		key;			/* {0, 0}: empty */
	int64		tat;			/* GCRA keys: theoretical arrival time, ns since 2000 */
	int32		in_flight;		/* concurrency keys: slots taken */
	int32		pad;
} RateSlot;

typedef struct RateTable
{
	int			partitions;
	int64		buckets_per_partition;
	pg_atomic_uint64 full_events;
	LWLockPadded *locks;
	RateSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} RateTable;

typedef enum RateWhenFull
{
	RATE_FULL_ALLOW,
	RATE_FULL_DENY
} RateWhenFull;

static const struct config_enum_entry when_full_options[] = {
	{"allow", RATE_FULL_ALLOW, false},
	{"deny", RATE_FULL_DENY, false},
	{NULL, 0, false}
};

static int	rate_limit_slots = 65536;
static int	rate_limit_when_full = RATE_FULL_ALLOW;
static RateTable *rate_table = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The in-flight slots this backend holds, until its transaction ends. */
typedef struct HeldSlot
{
	RateKey		key;
	int32		count;
} HeldSlot;
static HeldSlot *held = NULL;
static int	held_len = 0;
static int	held_cap = 0;
static bool held_callbacks = false;

/* The table's shape for fincore.rate_limit_slots: partitions, and buckets in each. */
static int
table_partitions(void)
{
	int64		buckets = ((int64) rate_limit_slots + RATE_WAYS - 1) / RATE_WAYS;

	return (int) Max(Min(buckets / RATE_MIN_BUCKETS, RATE_MAX_PARTITIONS), 1);
}

static int64
buckets_per_partition(void)
{
	int64		buckets = ((int64) rate_limit_slots + RATE_WAYS - 1) / RATE_WAYS;
	int			parts = table_partitions();

	return Max((buckets + parts - 1) / parts, 2);
}

static Size
rate_table_size(void)
{
	return add_size(offsetof(RateTable, slots),
					mul_size(sizeof(RateSlot),
							 mul_size(buckets_per_partition() * table_partitions(), RATE_WAYS)));
}

static void
rate_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(rate_table_size());
	RequestNamedLWLockTranche(RATE_TRANCHE, table_partitions());
}

static void
rate_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rate_table = ShmemInitStruct("fincore rate limiter", rate_table_size(), &found);
	if (!found)
	{
		memset(rate_table, 0, rate_table_size());
		rate_table->partitions = table_partitions();
		rate_table->buckets_per_partition = buckets_per_partition();
		pg_atomic_init_u64(&rate_table->full_events, 0);
		rate_table->locks = GetNamedLWLockTranche(RATE_TRANCHE);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
ratelimit_init(void)
{
	DefineCustomEnumVariable("fincore.rate_limit_when_full",
							 "What the rate limiter decides for a new key when its slots all hold live keys.",
							 "allow (fail open): decide as for a key seen for the first time, and remember nothing; "
							 "deny (fail closed): refuse (allowed = false, no retry time; concurrency_acquire returns false).",
							 &rate_limit_when_full, RATE_FULL_ALLOW, when_full_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	/* A setting read at server start exists only when fincore is loaded then. */
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("fincore.rate_limit_slots",
							"How many keys the shared-memory rate limiter holds (needs fincore in shared_preload_libraries).",
							"Each slot takes 32 bytes of shared memory; a slot whose key is idle is reused. Set at server start.",
							&rate_limit_slots, 65536, 1024, 64 * 1024 * 1024,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rate_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rate_shmem_startup;
}

void
ratelimit_require_shmem(void)
{
	if (unlikely(rate_table == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_FC_RATE_LIMITER_NOT_LOADED),
				 errmsg("the rate limiter needs fincore in shared_preload_libraries"),
				 errdetail("Its keys live in shared memory, which is set aside only when the server starts with fincore preloaded."),
				 errhint("Add fincore to shared_preload_libraries in postgresql.conf (keep the libraries already there, e.g. 'pg_cron,fincore') and restart the server; see docs/rate-limits.md.")));
}

int64
ratelimit_now_ns(void)
{
	return (int64) GetCurrentTimestamp() * 1000;
}

RateKey
ratelimit_key(RateKeyKind kind, const char *text, int len)
{
	/* kind, database, tenant flag and id, then the text: keys never cross a database or a tenant. */
	char		buf[1 + sizeof(Oid) + 1 + UUID_LEN + RATE_LIMIT_KEY_MAX];
	int			n = 0;
	pg_uuid_t	tenant;
	RateKey		k;

	Assert(len <= RATE_LIMIT_KEY_MAX);
	buf[n++] = (char) kind;
	memcpy(buf + n, &MyDatabaseId, sizeof(Oid));
	n += sizeof(Oid);
	if (tenancy_current_tenant(&tenant))
	{
		buf[n++] = 1;
		memcpy(buf + n, tenant.data, UUID_LEN);
		n += UUID_LEN;
	}
	else
		buf[n++] = 0;
	memcpy(buf + n, text, len);
	n += len;
	k.hi = hash_bytes_extended((const unsigned char *) buf, n, UINT64CONST(0x9e3779b97f4a7c15));
	k.lo = hash_bytes_extended((const unsigned char *) buf, n, UINT64CONST(0xc2b2ae3d27d4eb4f));
	if (k.hi == 0 && k.lo == 0)
		k.lo = 1;				/* {0, 0} marks an empty slot */
	return k;
}

static inline bool
key_equal(RateKey a, RateKey b)
{
	return a.hi == b.hi && a.lo == b.lo;
}

static inline bool
slot_free(const RateSlot *s, int64 now_ns)
{
	return (s->key.hi == 0 && s->key.lo == 0) || (s->tat <= now_ns && s->in_flight == 0);
}

/* The key's partition and its two buckets' first slots. */
static inline int
key_place(RateKey key, RateSlot **b1, RateSlot **b2)
{
	int			part = (int) (key.hi % (uint64) rate_table->partitions);
	int64		bpp = rate_table->buckets_per_partition;
	int64		first = (int64) part * bpp;
	int64		i1 = (int64) ((key.hi >> 7) % (uint64) bpp);
	int64		i2 = (int64) (key.lo % (uint64) bpp);

	if (i2 == i1)
		i2 = (i1 + 1) % bpp;
	*b1 = &rate_table->slots[(first + i1) * RATE_WAYS];
	*b2 = &rate_table->slots[(first + i2) * RATE_WAYS];
	return part;
}

/*
 * The key's slot under its partition's lock (held exclusively by the
 * caller), or with create a free slot taken for it; NULL when there is none.
 */
static RateSlot *
slot_lookup(RateKey key, RateSlot *b1, RateSlot *b2, bool create, int64 now_ns)
{
	RateSlot   *fit = NULL;
	int			free1 = 0,
				free2 = 0;
	RateSlot   *first_free1 = NULL,
			   *first_free2 = NULL;

	for (int i = 0; i < RATE_WAYS; i++)
	{
		if (key_equal(b1[i].key, key))
			return &b1[i];
		if (key_equal(b2[i].key, key))
			return &b2[i];
	}
	if (!create)
		return NULL;
	/* The bucket with more free slots: two choices keep the buckets even. */
	for (int i = 0; i < RATE_WAYS; i++)
	{
		if (slot_free(&b1[i], now_ns))
		{
			free1++;
			if (first_free1 == NULL)
				first_free1 = &b1[i];
		}
		if (slot_free(&b2[i], now_ns))
		{
			free2++;
			if (first_free2 == NULL)
				first_free2 = &b2[i];
		}
	}
	fit = free2 > free1 ? first_free2 : first_free1;
	if (fit != NULL)
	{
		fit->key = key;
		fit->tat = 0;
		fit->in_flight = 0;
	}
	else
		pg_atomic_fetch_add_u64(&rate_table->full_events, 1);
	return fit;
}

void
ratelimit_throttle(RateKey key, const RateQuota *q, int64 now_ns, RateDecision *d)
{
	RateSlot   *b1,
			   *b2,
			   *slot;
	LWLock	   *lock = &rate_table->locks[key_place(key, &b1, &b2)].lock;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	slot = slot_lookup(key, b1, b2, true, now_ns);
	if (slot != NULL)
	{
		rate_decide(q, slot->tat, now_ns, d);
		if (d->store)
			slot->tat = d->new_tat;
	}
	LWLockRelease(lock);
	if (slot == NULL)
	{
		/* Full: decide as for a new key, remember nothing; or refuse. */
		rate_decide(q, 0, now_ns, d);
		if (rate_limit_when_full == RATE_FULL_DENY)
		{
			d->allowed = false;
			d->store = false;
			d->retry_after_ns = -1;
			d->remaining = 0;
		}
	}
}

bool
ratelimit_forget(RateKey key)
{
	RateSlot   *b1,
			   *b2,
			   *slot;
	LWLock	   *lock = &rate_table->locks[key_place(key, &b1, &b2)].lock;
	bool		had = false;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	slot = slot_lookup(key, b1, b2, false, 0);
	if (slot != NULL && slot->in_flight == 0)
	{
		had = slot->tat > ratelimit_now_ns();
		slot->tat = 0;
	}
	LWLockRelease(lock);
	return had;
}

/* ---- in-flight slots ---- */

static void
release_all_held(void)
{
	for (int i = 0; i < held_len; i++)
	{
		RateSlot   *b1,
				   *b2,
				   *slot;
		LWLock	   *lock = &rate_table->locks[key_place(held[i].key, &b1, &b2)].lock;

		LWLockAcquire(lock, LW_EXCLUSIVE);
		slot = slot_lookup(held[i].key, b1, b2, false, 0);
		if (slot != NULL)
			slot->in_flight = Max(slot->in_flight - held[i].count, 0);
		LWLockRelease(lock);
	}
	held_len = 0;
}

static void
held_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (held_len == 0)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		release_all_held();
}

static void
held_exit_callback(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	if (held_len > 0 && rate_table != NULL)
		release_all_held();
}

static HeldSlot *
held_find(RateKey key)
{
	for (int i = 0; i < held_len; i++)
		if (key_equal(held[i].key, key))
			return &held[i];
	return NULL;
}

bool
ratelimit_acquire(RateKey key, int32 max)
{
	RateSlot   *b1,
			   *b2,
			   *slot;
	LWLock	   *lock;
	bool		taken = false;
	HeldSlot   *h = held_find(key);

	if (!held_callbacks)
	{
		RegisterXactCallback(held_xact_callback, NULL);
		before_shmem_exit(held_exit_callback, 0);
		held_callbacks = true;
	}
	/* Room to remember it first: nothing can fail between taking the slot and noting it. */
	if (h == NULL && held_len == held_cap)
	{
		int			cap = Max(held_cap * 2, 8);

		held = held == NULL ? MemoryContextAlloc(TopMemoryContext, cap * sizeof(HeldSlot))
			: repalloc(held, cap * sizeof(HeldSlot));
		held_cap = cap;
	}
	lock = &rate_table->locks[key_place(key, &b1, &b2)].lock;
	LWLockAcquire(lock, LW_EXCLUSIVE);
	slot = slot_lookup(key, b1, b2, true, ratelimit_now_ns());
	if (slot != NULL && slot->in_flight < max)
	{
		slot->in_flight++;
		taken = true;
	}
	LWLockRelease(lock);
	if (slot == NULL && rate_limit_when_full == RATE_FULL_ALLOW)
		return true;			/* fail open, and nothing to give back */
	if (taken)
	{
		if (h == NULL)
		{
			h = &held[held_len++];
			h->key = key;
			h->count = 0;
		}
		h->count++;
	}
	return taken;
}

bool
ratelimit_release(RateKey key)
{
	RateSlot   *b1,
			   *b2,
			   *slot;
	LWLock	   *lock;
	HeldSlot   *h = held_find(key);

	if (h == NULL || h->count == 0)
		return false;
	lock = &rate_table->locks[key_place(key, &b1, &b2)].lock;
	LWLockAcquire(lock, LW_EXCLUSIVE);
	slot = slot_lookup(key, b1, b2, false, 0);
	if (slot != NULL && slot->in_flight > 0)
		slot->in_flight--;
	LWLockRelease(lock);
	if (--h->count == 0)
		*h = held[--held_len];
	return true;
}

void
ratelimit_stats(int64 now_ns, RateLimitStats *s)
{
	int64		per_part = rate_table->buckets_per_partition * RATE_WAYS;

	memset(s, 0, sizeof(*s));
	s->slots = per_part * rate_table->partitions;
	for (int p = 0; p < rate_table->partitions; p++)
	{
		RateSlot   *slots = &rate_table->slots[p * per_part];

		LWLockAcquire(&rate_table->locks[p].lock, LW_SHARED);
		for (int64 i = 0; i < per_part; i++)
		{
			if (slots[i].key.hi == 0 && slots[i].key.lo == 0)
				continue;
			s->used++;
			if (!slot_free(&slots[i], now_ns))
				s->live++;
			s->in_flight += slots[i].in_flight;
		}
		LWLockRelease(&rate_table->locks[p].lock);
	}
	s->full_events = (int64) pg_atomic_read_u64(&rate_table->full_events);
}
