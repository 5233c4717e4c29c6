/*
 * limits_engine.c — which limits a leg of a transfer meets, and the
 * arithmetic of their windows: pure C over LimitDef and LimitCounter, no
 * catalog or table access (limits_store.c reads and writes the counters).
 *
 * Windows:
 *   - calendar (day, week, month, year): [start, next start) in the limit's
 *     time zone, from local midnight; weeks start on Monday (ISO 8601),
 *     months on the 1st and years on 1 January, so no date is ever clamped.
 *     A day in a DST change is 23 or 25 hours long, as the zone says;
 *   - trailing: sub-buckets of ceil(W / 59) microseconds, numbered from the
 *     PostgreSQL epoch; the newest 60 are counted, so a transfer counts for at
 *     least W and at most W + W/59 after it was made;
 *   - lifetime: one total; transaction: no counter, a maximum per transfer.
 *
 * A counter holds the window it last counted.  A charge at a later time
 * rolls it to that time's window first; a charge or release for an older
 * window than the counter's changes nothing (that window is over).
 */
#include "limits.h"

#include "utils/datetime.h"

static inline int
ring_slot(int64 bucket)
{
	int64		m = bucket % LIMIT_RING_SLOTS;

	return (int) (m < 0 ? m + LIMIT_RING_SLOTS : m);
}

static inline bool
is_calendar(LimitWindow w)
{
	return w == LIMIT_WINDOW_DAY || w == LIMIT_WINDOW_WEEK || w == LIMIT_WINDOW_MONTH || w == LIMIT_WINDOW_YEAR;
}

static inline bool
uuid_eq(const pg_uuid_t *a, const pg_uuid_t *b)
{
	return memcmp(a->data, b->data, UUID_LEN) == 0;
}

static bool
int32_in(int32 v, const int32 *list, int n)
{
	for (int i = 0; i < n; i++)
		if (list[i] == v)
			return true;
	return false;
}

/* Does the limit's scope take in this account (whatever the transfer)? */
bool
limits_scope_takes(const LimitDef *def, const pg_uuid_t *account, int32 code, const char *customer)
{
	switch (def->scope)
	{
		case LIMIT_SCOPE_ACCOUNT:
			return uuid_eq(&def->account, account);
		case LIMIT_SCOPE_ACCOUNT_CODE:
			return def->account_code == code;
		case LIMIT_SCOPE_CUSTOMER:
			return customer != NULL && strcmp(def->customer, customer) == 0;
		case LIMIT_SCOPE_TENANT:
			return true;
	}
	return false;
}

/* Does the leg count towards the limit: its scope, direction, currency and filters? */
bool
limits_applies(const LimitDef *def, const LimitLeg *leg)
{
	if (def->direction != 0 && def->direction != leg->side)
		return false;
	if (def->has_currency && def->currency != leg->currency)
		return false;
	if (!limits_scope_takes(def, leg->account, leg->account_code, leg->customer))
		return false;
	if (def->ncodes > 0 && !int32_in(leg->transfer_code, def->codes, def->ncodes))
		return false;
	if (def->ncp_codes > 0 && !int32_in(leg->counterparty_code, def->cp_codes, def->ncp_codes))
		return false;
	if (def->ncp_accounts > 0)
	{
		bool		found = false;

		for (int i = 0; i < def->ncp_accounts && !found; i++)
			found = uuid_eq(&def->cp_accounts[i], leg->counterparty);
		if (!found)
			return false;
	}
	return true;
}

/* Local wall-clock fields in the zone, as a timestamptz (the zone's offset at that time). */
static TimestampTz
local_time(struct pg_tm *tm, pg_tz *tz)
{
	int			offset = DetermineTimeZoneOffset(tm, tz);
	TimestampTz result;

	if (tm2timestamp(tm, 0, &offset, &result) != 0 || !IS_VALID_TIMESTAMP(result))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("limit window out of range")));
	return result;
}

static inline int64
bucket_usecs(const LimitDef *def)
{
	return (def->window_usecs + LIMIT_RING_SPAN - 1) / LIMIT_RING_SPAN;
}

/* The sub-bucket of a trailing window that contains at. */
int64
limits_bucket(const LimitDef *def, TimestampTz at)
{
	return int64_floor_div(at, bucket_usecs(def));
}

/*
 * The window containing at: calendar windows from local midnight to the next
 * period's; a trailing window from its oldest counted sub-bucket to the end of
 * the newest (when the oldest leaves); lifetime and transaction: unbounded.
 */
void
limits_window_bounds(const LimitDef *def, TimestampTz at, TimestampTz *start, TimestampTz *end)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			offset;
	int			jd;

	if (def->window == LIMIT_WINDOW_TRAILING && !TIMESTAMP_NOT_FINITE(at))
	{
		int64		width = bucket_usecs(def);
		int64		b = limits_bucket(def, at);

		*start = (b - (LIMIT_RING_SLOTS - 1)) * width;
		*end = (b + 1) * width;
		return;
	}
	if (!is_calendar(def->window) || TIMESTAMP_NOT_FINITE(at))
	{
		TIMESTAMP_NOBEGIN(*start);
		TIMESTAMP_NOEND(*end);
		return;
	}
	if (timestamp2tm(at, &offset, &tm, &fsec, NULL, def->tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("limit window out of range")));
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	switch (def->window)
	{
		case LIMIT_WINDOW_WEEK:
			jd = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
			jd -= (j2day(jd) + 6) % 7;	/* back to Monday */
			j2date(jd, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
			break;
		case LIMIT_WINDOW_MONTH:
			tm.tm_mday = 1;
			break;
		case LIMIT_WINDOW_YEAR:
			tm.tm_mday = 1;
			tm.tm_mon = 1;
			break;
		default:
			break;
	}
	*start = local_time(&tm, def->tz);
	jd = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
	switch (def->window)
	{
		case LIMIT_WINDOW_DAY:
			j2date(jd + 1, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
			break;
		case LIMIT_WINDOW_WEEK:
			j2date(jd + 7, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
			break;
		case LIMIT_WINDOW_MONTH:
			if (++tm.tm_mon > MONTHS_PER_YEAR)
				tm.tm_mon = 1, tm.tm_year++;
			break;
		default:
			tm.tm_year++;
			break;
	}
	*end = local_time(&tm, def->tz);
}

static TimestampTz
calendar_start(const LimitDef *def, TimestampTz at)
{
	TimestampTz start,
				end;

	limits_window_bounds(def, at, &start, &end);
	return start;
}

/* What the counter has used in the window containing at. */
int64
limits_used_at(const LimitCounter *c, TimestampTz at)
{
	const LimitDef *def = c->def;
	int64		sum = 0;

	if (def->window == LIMIT_WINDOW_LIFETIME)
		return c->used;
	if (!c->has_window)
		return 0;
	if (def->distinct)
	{
		int64		b = limits_bucket(def, at);

		for (int i = 0; i < c->nmembers; i++)
			if (c->member_buckets[i] > b - LIMIT_RING_SLOTS && c->member_buckets[i] <= b)
				sum++;
		return sum;
	}
	if (is_calendar(def->window))
		return c->window_start == calendar_start(def, at) ? c->used : 0;
	if (def->window == LIMIT_WINDOW_TRAILING)
	{
		int64		b = limits_bucket(def, at);
		int64		hi = Min(c->head, b);

		/* The buckets both the ring holds and the window counts: each slot's value fits, so their sum does. */
		for (int64 k = Max(c->head, b) - (LIMIT_RING_SLOTS - 1); k <= hi; k++)
			sum += c->ring[ring_slot(k)];
	}
	return sum;
}

/* Move the counter to the window containing at, if that window is newer than its own. */
void
limits_roll(LimitCounter *c, TimestampTz at)
{
	const LimitDef *def = c->def;

	if (is_calendar(def->window))
	{
		TimestampTz start = calendar_start(def, at);

		if (!c->has_window || start > c->window_start)
		{
			c->has_window = true;
			c->window_start = start;
			c->used = 0;
			c->changed = true;
		}
	}
	else if (def->window == LIMIT_WINDOW_TRAILING)
	{
		int64		b = limits_bucket(def, at);

		if (!c->has_window || b - c->head >= LIMIT_RING_SLOTS)
		{
			memset(c->ring, 0, sizeof(c->ring));
			c->has_window = true;
			c->head = b;
			c->changed = true;
		}
		else if (b > c->head)
		{
			for (int64 k = c->head + 1; k <= b; k++)
				c->ring[ring_slot(k)] = 0;
			c->head = b;
			c->changed = true;
		}
	}
}

/*
 * Count value at time at (after limits_roll).  False if the window's total
 * would leave int64: the caller refuses the transfer, as it would exceed.
 */
bool
limits_charge(LimitCounter *c, TimestampTz at, int64 value)
{
	const LimitDef *def = c->def;
	int64	   *cell = NULL;

	limits_roll(c, at);
	if (def->window == LIMIT_WINDOW_LIFETIME)
		cell = &c->used;
	else if (is_calendar(def->window))
	{
		if (c->window_start == calendar_start(def, at))
			cell = &c->used;
	}
	else if (def->window == LIMIT_WINDOW_TRAILING)
	{
		int64		b = limits_bucket(def, at);

		if (b > c->head - LIMIT_RING_SLOTS)
			cell = &c->ring[ring_slot(b)];
	}
	if (cell == NULL)
		return true;			/* a window that is over */
	if (limits_used_at(c, at) > PG_INT64_MAX - value)
		return false;
	*cell += value;
	c->changed = true;
	return true;
}

/* Give back value counted at counted_at, if its window is still the counter's. */
void
limits_release(LimitCounter *c, TimestampTz counted_at, int64 value)
{
	const LimitDef *def = c->def;
	int64	   *cell = NULL;

	if (def->window == LIMIT_WINDOW_LIFETIME)
		cell = &c->used;
	else if (!c->has_window)
		return;
	else if (is_calendar(def->window))
	{
		if (c->window_start == calendar_start(def, counted_at))
			cell = &c->used;
	}
	else if (def->window == LIMIT_WINDOW_TRAILING)
	{
		int64		b = limits_bucket(def, counted_at);

		if (b <= c->head && b > c->head - LIMIT_RING_SLOTS)
			cell = &c->ring[ring_slot(b)];
	}
	if (cell == NULL || value == 0)
		return;
	*cell = *cell > value ? *cell - value : 0;
	c->changed = true;
}

void
limits_aggregate_def(LimitDef *def, const pg_uuid_t *rule_id, int index, char agg, char side, int64 window_usecs,
					 char calendar, pg_tz *tz)
{
	memset(def, 0, sizeof(*def));
	/* The rule's id with its last two bytes changed: no limit of the tenant has it (v7 ids are random there). */
	def->id = *rule_id;
	def->id.data[UUID_LEN - 2] ^= 0xA5;
	def->id.data[UUID_LEN - 1] ^= (unsigned char) (index + 1);
	def->name = "rule aggregate";
	def->scope = LIMIT_SCOPE_TENANT;
	def->per_account = true;
	def->counts = agg != 's';
	def->distinct = agg == 'd';
	def->window = calendar == 'd' ? LIMIT_WINDOW_DAY : calendar == 'w' ? LIMIT_WINDOW_WEEK
		: calendar == 'm' ? LIMIT_WINDOW_MONTH : calendar == 'y' ? LIMIT_WINDOW_YEAR : LIMIT_WINDOW_TRAILING;
	def->window_usecs = window_usecs;
	def->tz = tz;
	def->direction = side;
	def->max = PG_INT64_MAX;
	TIMESTAMP_NOBEGIN(def->counting_since);
	def->aggregate = true;
}

/*
 * Distinct counterparties: count member at time at.  The counter keeps each
 * member with the newest sub-bucket it was seen in, and forgets those whose
 * sub-bucket left the window, so it holds at most the window's distinct
 * counterparties.  Arrays are reallocated in the current memory context.
 */
void
limits_charge_member(LimitCounter *c, TimestampTz at, const pg_uuid_t *member)
{
	const LimitDef *def = c->def;
	int64		b = limits_bucket(def, at);
	int64		newest = c->has_window ? Max(c->head, b) : b;
	int			n = 0;
	bool		found = false;

	if (c->has_window && b <= c->head - LIMIT_RING_SLOTS)
		return;					/* a window that is over */
	for (int i = 0; i < c->nmembers; i++)
	{
		if (c->member_buckets[i] <= newest - LIMIT_RING_SLOTS)
			continue;			/* left the window */
		c->members[n] = c->members[i];
		c->member_buckets[n] = c->member_buckets[i];
		if (uuid_eq(&c->members[n], member))
		{
			found = true;
			c->member_buckets[n] = Max(c->member_buckets[n], b);
		}
		n++;
	}
	if (!found)
	{
		c->members = c->members ? repalloc(c->members, sizeof(pg_uuid_t) * (n + 1)) : palloc(sizeof(pg_uuid_t));
		c->member_buckets = c->member_buckets ? repalloc(c->member_buckets, sizeof(int64) * (n + 1))
			: palloc(sizeof(int64));
		c->members[n] = *member;
		c->member_buckets[n] = b;
		n++;
	}
	c->nmembers = n;
	c->head = newest;
	c->has_window = true;
	c->changed = true;
}

/* The distinct counterparties at time at if member were counted too (nothing changes). */
int64
limits_used_with_member(const LimitCounter *c, TimestampTz at, const pg_uuid_t *member)
{
	int64		b = limits_bucket(c->def, at);
	int64		n = limits_used_at(c, at);

	for (int i = 0; i < c->nmembers; i++)
		if (uuid_eq(&c->members[i], member) && c->member_buckets[i] > b - LIMIT_RING_SLOTS &&
			c->member_buckets[i] <= b)
			return n;
	return n + 1;
}
