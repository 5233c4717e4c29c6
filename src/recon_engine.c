/*
 * recon_engine.c — the matching engine (recon.h): pure C over the run's
 * items.  The rules run in priority order, each over what is still
 * unmatched; an item joins at most one match (its match field), and a rule
 * sees an item only while that field is -1.
 *
 * Every pass sorts the eligible items of one side by (key hash, amount or
 * group, date, id) and probes it with the other side's: a binary search
 * finds the bucket of equal keys, then the amount range the tolerance
 * allows.  Matched positions are skipped through a next-unmatched array with
 * path compression, so a pass is O(n log n) however many items share a key
 * or an amount.  Ties are broken by the smallest amount difference, then the
 * smallest date difference, then the highest reference similarity, then the
 * order of the sorted side (amount, date, id): the same items and rules
 * always give the same matches.
 */
#include "recon.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"

const char *const recon_key_names[RK_NKEYS + 1] = {"reference", "external_id", "account", "date"};
const char *const recon_kind_names[RKIND_COUNT] = {"one_to_one", "one_to_many", "many_to_one", "many_to_many"};

int64
recon_tolerance(const ReconRule *r, int64 amount)
{
	int64		by_bps = -1;

	if (r->tolerance_bps >= 0)
	{
		uint128		mag = amount < 0 ? (uint128) (-(int128) amount) : (uint128) amount;

		by_bps = (int64) (mag * (uint128) r->tolerance_bps / 10000);
	}
	if (r->tolerance < 0 && by_bps < 0)
		return 0;
	if (r->tolerance < 0)
		return by_bps;
	if (by_bps < 0)
		return r->tolerance;
	return Min(r->tolerance, by_bps);	/* both set: the stricter */
}

static inline uint64
id_hash(const pg_uuid_t *id)
{
	return hash_bytes_extended(id->data, UUID_LEN, 0x5eed);
}

uint64
recon_combination_hash(const pg_uuid_t *lines, int nlines, const pg_uuid_t *entries, int nentries)
{
	uint64		l = 0,
				e = 0;

	/* sums: the same set in any order */
	for (int i = 0; i < nlines; i++)
		l += id_hash(&lines[i]);
	for (int i = 0; i < nentries; i++)
		e += id_hash(&entries[i]);
	return hash_combine64(l, e * 0x9e3779b97f4a7c15ULL + 1);
}

/*
 * The hash of an item's keys under a rule (the currency, the rule's keys and,
 * for grouping, the group's value); false if the item lacks one of them.
 */
static bool
key_hash(const ReconRule *r, const ReconItem *it, bool with_group, uint64 *out)
{
	uint64		h = hash_bytes_uint32_extended((uint32) it->currency, (uint64) (it->currency >> 32));

	for (int k = 0; k < RK_NKEYS; k++)
		if (r->keys & (1u << k))
		{
			if (it->key[k] == NULL)
				return false;
			h = hash_combine64(h, hash_bytes_extended((const unsigned char *) it->key[k],
													  (int) strlen(it->key[k]), k));
		}
	if (with_group && r->group_by >= 0)
	{
		if (r->group_by == RK_DATE)
			h = hash_combine64(h, hash_bytes_uint32_extended((uint32) it->date, 99));
		else if (it->key[r->group_by] == NULL)
			return false;
		else
			h = hash_combine64(h, hash_bytes_extended((const unsigned char *) it->key[r->group_by],
													  (int) strlen(it->key[r->group_by]), 100 + r->group_by));
	}
	*out = h;
	return true;
}

/* Do two items have the same keys under a rule (a hash collision guard)? */
static bool
same_keys(const ReconRule *r, const ReconItem *a, const ReconItem *b, bool with_group)
{
	if (a->currency != b->currency)
		return false;
	for (int k = 0; k < RK_NKEYS; k++)
		if ((r->keys & (1u << k)) && strcmp(a->key[k], b->key[k]) != 0)
			return false;
	if (with_group && r->group_by >= 0)
	{
		if (r->group_by == RK_DATE)
			return a->date == b->date;
		return strcmp(a->key[r->group_by], b->key[r->group_by]) == 0;
	}
	return true;
}

/* An eligible item of a pass, in the sort order. */
typedef struct Slot
{
	uint64		hash;
	int64		amount;
	int32		date;
	int32		item;
} Slot;

static int
slot_cmp(const void *a, const void *b)
{
	const Slot *x = a,
			   *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	if (x->amount != y->amount)
		return x->amount < y->amount ? -1 : 1;
	if (x->date != y->date)
		return x->date < y->date ? -1 : 1;
	return x->item < y->item ? -1 : x->item > y->item;
}

/* The first slot not below (hash, amount, date). */
static int32
lower_bound(const Slot *s, int32 n, uint64 hash, int64 amount, int32 date)
{
	int32		lo = 0,
				hi = n;

	while (lo < hi)
	{
		int32		mid = lo + (hi - lo) / 2;
		const Slot *m = &s[mid];

		if (m->hash < hash || (m->hash == hash && (m->amount < amount ||
												   (m->amount == amount && m->date < date))))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The first slot of [lo, hi) (one bucket: one hash) not below (amount, date). */
static int32
lower_bound_in(const Slot *s, int32 lo, int32 hi, int64 amount, int32 date)
{
	while (lo < hi)
	{
		int32		mid = lo + (hi - lo) / 2;

		if (s[mid].amount < amount || (s[mid].amount == amount && s[mid].date < date))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* A line's probe of a pass: its key hash, and its place in date order. */
typedef struct Probe
{
	uint64		hash;
	int32		item;
} Probe;

static int
probe_cmp(const void *a, const void *b)
{
	const Probe *x = a,
			   *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return x->item < y->item ? -1 : x->item > y->item;
}

/* The next position from i whose item is unmatched (path-compressed). */
static int32
next_free(int32 *nxt, int32 i)
{
	int32		root = i;

	while (nxt[root] != root)
		root = nxt[root];
	while (nxt[i] != root)
	{
		int32		up = nxt[i];

		nxt[i] = root;
		i = up;
	}
	return root;
}

static void
add_match(ReconRun *run, int rule, const int32 *lines, int32 nl, const int32 *entries, int32 ne,
		  int64 line_total, int64 entry_total)
{
	ReconMatch *m;
	int32		index = run->nmatches;

	if (run->nmatches == run->maxmatches)
	{
		run->maxmatches = Max(1024, run->maxmatches * 2);
		run->matches = run->matches ? repalloc_huge(run->matches, sizeof(ReconMatch) * run->maxmatches)
			: palloc_extended(sizeof(ReconMatch) * run->maxmatches, MCXT_ALLOC_HUGE);
	}
	if (run->nmembers + nl + ne > run->maxmembers)
	{
		run->maxmembers = Max(Max(4096, run->maxmembers * 2), run->nmembers + nl + ne);
		run->members = run->members ? repalloc_huge(run->members, sizeof(int32) * run->maxmembers)
			: palloc_extended(sizeof(int32) * run->maxmembers, MCXT_ALLOC_HUGE);
	}
	m = &run->matches[run->nmatches++];
	m->rule = rule;
	m->first = run->nmembers;
	m->nlines = nl;
	m->nentries = ne;
	m->line_total = line_total;
	m->entry_total = entry_total;
	for (int32 i = 0; i < nl; i++)
	{
		run->members[run->nmembers++] = lines[i];
		run->lines[lines[i]].match = index;
	}
	for (int32 i = 0; i < ne; i++)
	{
		run->members[run->nmembers++] = entries[i];
		run->entries[entries[i]].match = index;
	}
}

static bool
rejected(const ReconRun *run, const int32 *lines, int32 nl, const int32 *entries, int32 ne)
{
	pg_uuid_t  *l,
			   *e;
	uint64		h;
	int32		lo = 0,
				hi = run->nrejected;

	if (run->nrejected == 0)
		return false;
	l = palloc(sizeof(pg_uuid_t) * nl);
	e = palloc(sizeof(pg_uuid_t) * ne);
	for (int32 i = 0; i < nl; i++)
		l[i] = run->lines[lines[i]].id;
	for (int32 i = 0; i < ne; i++)
		e[i] = run->entries[entries[i]].id;
	h = recon_combination_hash(l, nl, e, ne);
	pfree(l);
	pfree(e);
	while (lo < hi)
	{
		int32		mid = lo + (hi - lo) / 2;

		if (run->rejected[mid] < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < run->nrejected && run->rejected[lo] == h;
}

static inline int64
abs_diff(int64 a, int64 b)
{
	int128		d = (int128) a - (int128) b;

	if (d < 0)
		d = -d;
	return d > PG_INT64_MAX ? PG_INT64_MAX : (int64) d;
}

/* ---------------------------------------------------------------------------
 * One to one
 * ---------------------------------------------------------------------------
 */

static void
match_one_to_one(ReconRun *run, int ri)
{
	const ReconRule *r = &run->rules[ri];
	Slot	   *slots = palloc_extended(sizeof(Slot) * Max(run->nentries, 1), MCXT_ALLOC_HUGE);
	int32	   *nxt;
	int32		n = 0;
	bool		use_similarity = r->min_similarity >= 0;
	Probe	   *probes;
	int32		nprobes = 0;
	int32		bstart = 0,
				bend = 0;

	for (int32 i = 0; i < run->nentries; i++)
	{
		ReconItem  *e = &run->entries[i];

		if (e->match >= 0 || !key_hash(r, e, false, &slots[n].hash))
			continue;
		if (use_similarity && e->key[RK_REFERENCE] == NULL)
			continue;
		slots[n].amount = e->amount;
		slots[n].date = e->date;
		slots[n].item = i;
		n++;
	}
	qsort(slots, n, sizeof(Slot), slot_cmp);
	nxt = palloc_extended(sizeof(int32) * (n + 1), MCXT_ALLOC_HUGE);
	for (int32 i = 0; i <= n; i++)
		nxt[i] = i;

	/*
	 * The lines probe the sorted entries in the entries' order (by key hash,
	 * each bucket's lines in date order): the probes walk the slots once
	 * instead of searching a million of them at random.  Lines of different
	 * buckets never compete for an entry, so the matches are those of taking
	 * the lines in date order.
	 */
	probes = palloc_extended(sizeof(Probe) * Max(run->nlines, 1), MCXT_ALLOC_HUGE);
	for (int32 li = 0; li < run->nlines && n > 0; li++)
	{
		ReconItem  *l = &run->lines[li];

		if (l->match >= 0 || !key_hash(r, l, false, &probes[nprobes].hash))
			continue;
		if (use_similarity && l->key[RK_REFERENCE] == NULL)
			continue;
		probes[nprobes++].item = li;
	}
	qsort(probes, nprobes, sizeof(Probe), probe_cmp);

	for (int32 pi = 0; pi < nprobes; pi++)
	{
		int32		li = probes[pi].item;
		ReconItem  *l = &run->lines[li];
		uint64		h = probes[pi].hash;
		int64		tol,
					lo_amount;
		int32		best = -1;
		int64		best_diff = 0;
		int32		best_days = 0;
		double		best_sim = 0;

		if ((pi & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
		if (pi == 0 || h != probes[pi - 1].hash)
		{
			/* the bucket of h among the slots (both sorted by hash) */
			while (bstart < n && slots[bstart].hash < h)
				bstart++;
			bend = bstart;
			while (bend < n && slots[bend].hash == h)
				bend++;
		}
		if (bstart == bend)
			continue;
		tol = recon_tolerance(r, l->amount);
		lo_amount = l->amount < PG_INT64_MIN + tol ? PG_INT64_MIN : l->amount - tol;
		/* exact amounts are sorted by date: start at the window's first day */
		for (int32 pos = next_free(nxt, lower_bound_in(slots, bstart, bend, lo_amount,
														tol == 0 ? l->date - r->date_window : PG_INT32_MIN));
			 pos < bend; pos = next_free(nxt, pos + 1))
		{
			const Slot *s = &slots[pos];
			ReconItem  *e = &run->entries[s->item];
			int64		diff;
			int32		days;
			double		sim = 0;

			if ((int128) s->amount > (int128) l->amount + tol)
				break;
			days = abs(s->date - l->date);
			if (days > r->date_window)
			{
				if (tol == 0 && s->date > l->date)
					break;		/* past the window, and the rest are later */
				continue;
			}
			diff = abs_diff(s->amount, l->amount);
			if (best >= 0 && (diff > best_diff || (diff == best_diff && days >= best_days && !use_similarity)))
				continue;
			if (!same_keys(r, l, e, false))
				continue;
			if (use_similarity)
			{
				sim = run->similarity(run->similarity_arg, l->key[RK_REFERENCE], e->key[RK_REFERENCE]);
				if (sim < r->min_similarity)
					continue;
				if (best >= 0 && diff == best_diff &&
					(days > best_days || (days == best_days && sim <= best_sim)))
					continue;
			}
			if (run->nrejected > 0 && rejected(run, &li, 1, &s->item, 1))
				continue;
			best = pos;
			best_diff = diff;
			best_days = days;
			best_sim = sim;
			if (diff == 0 && days == 0 && !use_similarity)
				break;			/* nothing can be better */
		}
		if (best >= 0)
		{
			int32		ei = slots[best].item;

			add_match(run, ri, &li, 1, &ei, 1, l->amount, run->entries[ei].amount);
			nxt[best] = best + 1;
		}
	}
	pfree(slots);
	pfree(nxt);
	pfree(probes);
}

/* ---------------------------------------------------------------------------
 * Groups: one line to many entries, many lines to one entry, many to many
 * ---------------------------------------------------------------------------
 */

/* The group slots of one side: eligible unmatched items sorted by (group hash, date, id). */
static Slot *
group_slots(const ReconRule *r, ReconItem *items, int32 nitems, int32 *n_out)
{
	Slot	   *slots = palloc_extended(sizeof(Slot) * Max(nitems, 1), MCXT_ALLOC_HUGE);
	int32		n = 0;

	for (int32 i = 0; i < nitems; i++)
	{
		if (items[i].match >= 0 || !key_hash(r, &items[i], true, &slots[n].hash))
			continue;
		slots[n].amount = 0;	/* groups are ordered by date */
		slots[n].date = items[i].date;
		slots[n].item = i;
		n++;
	}
	qsort(slots, n, sizeof(Slot), slot_cmp);
	*n_out = n;
	return slots;
}

/*
 * The members of the group of hash h that belong with item `like`: unmatched,
 * the same keys, within the window of date `around` (when window >= 0).
 * Returns the count (0 if more than max), their indexes and total.
 */
static int32
collect_group(const ReconRule *r, const Slot *slots, int32 n, uint64 h, ReconItem *items,
			  const ReconItem *like, int32 around, int32 window, int32 *out, int64 *total, bool *overflow)
{
	int32		count = 0;
	int128		sum = 0;

	for (int32 pos = lower_bound(slots, n, h, 0, PG_INT32_MIN); pos < n && slots[pos].hash == h; pos++)
	{
		ReconItem  *it = &items[slots[pos].item];

		if (it->match >= 0 || !same_keys(r, like, it, true))
			continue;
		if (window >= 0 && abs(it->date - around) > window)
			continue;
		if (count == r->max_group)
			return 0;			/* larger than a group may be */
		out[count++] = slots[pos].item;
		sum += it->amount;
	}
	*overflow = sum > PG_INT64_MAX || sum < PG_INT64_MIN;
	*total = *overflow ? 0 : (int64) sum;
	return count;
}

/* One item of side a against a group of side b (a = lines for one_to_many). */
static void
match_one_to_group(ReconRun *run, int ri, bool single_is_line)
{
	const ReconRule *r = &run->rules[ri];
	ReconItem  *singles = single_is_line ? run->lines : run->entries;
	int32		nsingles = single_is_line ? run->nlines : run->nentries;
	ReconItem  *many = single_is_line ? run->entries : run->lines;
	int32		nmany = single_is_line ? run->nentries : run->nlines;
	int32		n;
	Slot	   *slots = group_slots(r, many, nmany, &n);
	int32	   *members = palloc(sizeof(int32) * (r->max_group + 1));

	for (int32 si = 0; si < nsingles && n > 0; si++)
	{
		ReconItem  *s = &singles[si];
		uint64		h;
		int32		count;
		int64		total;
		bool		overflow;
		int64		line_amount;

		if ((si & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
		if (s->match >= 0 || !key_hash(r, s, true, &h))
			continue;
		count = collect_group(r, slots, n, h, many, s, s->date, r->date_window, members, &total, &overflow);
		if (count < 2 || overflow)
			continue;
		line_amount = single_is_line ? s->amount : total;
		if (abs_diff(s->amount, total) > recon_tolerance(r, line_amount))
			continue;
		if (single_is_line)
		{
			if (run->nrejected > 0 && rejected(run, &si, 1, members, count))
				continue;
			add_match(run, ri, &si, 1, members, count, s->amount, total);
		}
		else
		{
			if (run->nrejected > 0 && rejected(run, members, count, &si, 1))
				continue;
			add_match(run, ri, members, count, &si, 1, total, s->amount);
		}
	}
	pfree(slots);
	pfree(members);
}

static void
match_many_to_many(ReconRun *run, int ri)
{
	const ReconRule *r = &run->rules[ri];
	int32		nl,
				ne;
	Slot	   *ls = group_slots(r, run->lines, run->nlines, &nl);
	Slot	   *es = group_slots(r, run->entries, run->nentries, &ne);
	int32	   *lm = palloc(sizeof(int32) * (r->max_group + 1));
	int32	   *em = palloc(sizeof(int32) * (r->max_group + 1));
	int32		i = 0,
				j = 0;

	while (i < nl && j < ne)
	{
		uint64		h = ls[i].hash;
		int32		cl,
					ce;
		int64		lt,
					et;
		bool		lo,
					eo;
		int32		first,
					last;

		CHECK_FOR_INTERRUPTS();
		if (es[j].hash < h)
		{
			j++;
			continue;
		}
		if (es[j].hash > h)
		{
			i++;
			continue;
		}
		/* a key present on both sides: its unmatched lines and entries, whole */
		cl = collect_group(r, ls, nl, h, run->lines, &run->lines[ls[i].item], 0, -1, lm, &lt, &lo);
		ce = collect_group(r, es, ne, h, run->entries, &run->lines[ls[i].item], 0, -1, em, &et, &eo);
		while (i < nl && ls[i].hash == h)
			i++;
		while (j < ne && es[j].hash == h)
			j++;
		if (cl == 0 || ce == 0 || (cl == 1 && ce == 1) || lo || eo)
			continue;
		/* every date within the window of the earliest */
		first = PG_INT32_MAX;
		last = PG_INT32_MIN;
		for (int32 k = 0; k < cl; k++)
		{
			first = Min(first, run->lines[lm[k]].date);
			last = Max(last, run->lines[lm[k]].date);
		}
		for (int32 k = 0; k < ce; k++)
		{
			first = Min(first, run->entries[em[k]].date);
			last = Max(last, run->entries[em[k]].date);
		}
		if ((int64) last - first > r->date_window)
			continue;
		if (abs_diff(lt, et) > recon_tolerance(r, lt))
			continue;
		if (run->nrejected > 0 && rejected(run, lm, cl, em, ce))
			continue;
		add_match(run, ri, lm, cl, em, ce, lt, et);
	}
	pfree(ls);
	pfree(es);
	pfree(lm);
	pfree(em);
}

/* ---------------------------------------------------------------------------
 * The run
 * ---------------------------------------------------------------------------
 */

/*
 * Items in date order, then by id: the earlier item gets the first pick.
 * Sorted by compact keys (the date, the id's first 8 bytes, the position),
 * then gathered: moving the items themselves in a sort is most of its time.
 */
typedef struct ItemKey
{
	int32		date;
	int32		item;
	uint64		id_high;
} ItemKey;

static const ReconItem *sort_items;

static int
item_key_cmp(const void *a, const void *b)
{
	const ItemKey *x = a,
			   *y = b;

	if (x->date != y->date)
		return x->date < y->date ? -1 : 1;
	if (x->id_high != y->id_high)
		return x->id_high < y->id_high ? -1 : 1;
	return memcmp(sort_items[x->item].id.data, sort_items[y->item].id.data, UUID_LEN);
}

static ReconItem *
sort_by_date_and_id(ReconItem *items, int32 n)
{
	ItemKey    *keys = palloc_extended(sizeof(ItemKey) * Max(n, 1), MCXT_ALLOC_HUGE);
	ReconItem  *sorted = palloc_extended(sizeof(ReconItem) * Max(n, 1), MCXT_ALLOC_HUGE);

	for (int32 i = 0; i < n; i++)
	{
		keys[i].date = items[i].date;
		keys[i].item = i;
		memcpy(&keys[i].id_high, items[i].id.data, sizeof(uint64));
		keys[i].id_high = pg_ntoh64(keys[i].id_high);
	}
	sort_items = items;
	qsort(keys, n, sizeof(ItemKey), item_key_cmp);
	sort_items = NULL;
	for (int32 i = 0; i < n; i++)
		sorted[i] = items[keys[i].item];
	pfree(keys);
	return sorted;
}

void
recon_match_all(ReconRun *run)
{
	/* a deterministic order: the same items and rules give the same matches */
	run->lines = sort_by_date_and_id(run->lines, run->nlines);
	run->entries = sort_by_date_and_id(run->entries, run->nentries);

	for (int ri = 0; ri < run->nrules; ri++)
	{
		switch (run->rules[ri].kind)
		{
			case RKIND_ONE_TO_ONE:
				match_one_to_one(run, ri);
				break;
			case RKIND_ONE_TO_MANY:
				match_one_to_group(run, ri, true);
				break;
			case RKIND_MANY_TO_ONE:
				match_one_to_group(run, ri, false);
				break;
			case RKIND_MANY_TO_MANY:
				match_many_to_many(run, ri);
				break;
			default:
				elog(ERROR, "unknown reconciliation rule kind %d", run->rules[ri].kind);
		}
		if (run->progress)
			run->progress(run->progress_arg, ri, run->nmatches);
	}
}
