/*
 * rules_engine.c — the rule language: a condition in JSON compiled into a
 * tree, and its evaluation over a transfer's facts.  No table access.
 *
 *   condition := {"all": [condition, ...]} | {"any": [condition, ...]}
 *              | {"not": condition}
 *              | {"field": FIELD, "op": OP, "value": VALUE}
 *              | {"aggregate": "count" | "sum" | "distinct_counterparties",
 *                 "of": "debit_account" | "credit_account",
 *                 "window_seconds": N | "window": "day" | "week" | "month" | "year",
 *                 "op": OP, "value": INTEGER}
 *
 * Fields and the values they take: amount, code, debit_code, credit_code,
 * local_hour (0-23), local_weekday (1 Monday - 7 Sunday): integers; currency:
 * a currency code; kind: "posted" or "pending"; debit_account,
 * credit_account: UUIDs; "metadata.<key>": a string, number or boolean,
 * compared with the transfer metadata's top-level member <key> (a missing
 * member, or one of another JSON type, meets no comparison, ne included).
 * Operators: eq, ne, lt, le, gt, ge (ordering: integers and numbers only), in
 * and not_in with an array of 1 to 1,000 values.  At most 16 levels and 64
 * conditions in an all / any.  An aggregate is the count or sum of the
 * transfers and holds made with the account on that side in the trailing
 * window of N seconds (10 to 31 days) or in the calendar window (in the
 * rule's time zone, count and sum only), or the number of distinct accounts
 * on their other side, this one included; its counters are kept by the caller
 * (RuleFacts.aggregate).
 */
#include "rules.h"

#include "errcodes.h"
#include "jsonb_build.h"
#include "utils/builtins.h"
#include "utils/datetime.h"

static const char *const field_names[] = {
	[RULE_FIELD_AMOUNT] = "amount",
	[RULE_FIELD_CODE] = "code",
	[RULE_FIELD_CURRENCY] = "currency",
	[RULE_FIELD_KIND] = "kind",
	[RULE_FIELD_DEBIT_ACCOUNT] = "debit_account",
	[RULE_FIELD_CREDIT_ACCOUNT] = "credit_account",
	[RULE_FIELD_DEBIT_CODE] = "debit_code",
	[RULE_FIELD_CREDIT_CODE] = "credit_code",
	[RULE_FIELD_LOCAL_HOUR] = "local_hour",
	[RULE_FIELD_LOCAL_WEEKDAY] = "local_weekday",
};

static const char *const op_names[] = {
	[RULE_OP_EQ] = "eq",[RULE_OP_NE] = "ne",[RULE_OP_LT] = "lt",[RULE_OP_LE] = "le",
	[RULE_OP_GT] = "gt",[RULE_OP_GE] = "ge",[RULE_OP_IN] = "in",[RULE_OP_NOT_IN] = "not_in",
};

static void pg_attribute_noreturn()
invalid_rule(const char *path, const char *fmt,...) pg_attribute_printf(2, 3);

static void
invalid_rule(const char *path, const char *fmt,...)
{
	char		buf[512];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_RULE),
			 errmsg("invalid rule: %s: %s", path, buf),
			 errhint("See docs/limits.md, \"Rules\", for the rule language.")));
	pg_unreachable();
}

static bool
json_text_is(const JsonbValue *v, const char *s)
{
	return v->type == jbvString && v->val.string.len == (int) strlen(s) &&
		memcmp(v->val.string.val, s, v->val.string.len) == 0;
}

/* A UUID in its canonical text (hyphens optional), without raising. */
static bool
parse_uuid(const char *s, int len, pg_uuid_t *out)
{
	int			n = 0;

	for (int i = 0; i < len; i++)
	{
		int			hi,
					lo;

		if (s[i] == '-' && (n == 4 || n == 6 || n == 8 || n == 10))
			continue;
		if (n == UUID_LEN || i + 1 >= len)
			return false;
		hi = hex_digit(s[i]);
		lo = hex_digit(s[i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out->data[n++] = (unsigned char) (hi << 4 | lo);
		i++;
	}
	return n == UUID_LEN;
}

static bool
field_is_integer(RuleField f)
{
	return f == RULE_FIELD_AMOUNT || f == RULE_FIELD_CODE || f == RULE_FIELD_DEBIT_CODE ||
		f == RULE_FIELD_CREDIT_CODE || f == RULE_FIELD_LOCAL_HOUR || f == RULE_FIELD_LOCAL_WEEKDAY;
}

/* One constant for field f, checked. */
static void
compile_value(const JsonbValue *v, RuleField f, const char *path, RuleValue *out)
{
	memset(out, 0, sizeof(*out));
	if (field_is_integer(f))
	{
		char	   *s,
				   *end;

		if (v->type != jbvNumeric)
			invalid_rule(path, "%s takes an integer, not %s", field_names[f], jb_value_text(v));
		s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		errno = 0;
		out->i = strtoi64(s, &end, 10);
		if (errno != 0 || *end != '\0' || end == s)
			invalid_rule(path, "%s takes an integer, not %s", field_names[f], s);
		out->type = 'i';
	}
	else if (f == RULE_FIELD_CURRENCY || f == RULE_FIELD_KIND)
	{
		if (v->type != jbvString)
			invalid_rule(path, "%s takes a string, not %s", field_names[f], jb_value_text(v));
		if (f == RULE_FIELD_KIND && !json_text_is(v, "posted") && !json_text_is(v, "pending"))
			invalid_rule(path, "kind is \"posted\" or \"pending\", not %s", jb_value_text(v));
		out->type = 's';
		out->s = pnstrdup(v->val.string.val, v->val.string.len);
		out->slen = v->val.string.len;
		if (f == RULE_FIELD_CURRENCY)
		{
			out->type = 'i';
			out->i = currency_pack_or_error(v->val.string.val, v->val.string.len);
			(void) currency_exponent(out->i);	/* ZF102 unless an ISO or registered currency */
		}
	}
	else if (f == RULE_FIELD_DEBIT_ACCOUNT || f == RULE_FIELD_CREDIT_ACCOUNT)
	{
		if (v->type != jbvString || !parse_uuid(v->val.string.val, v->val.string.len, &out->u))
			invalid_rule(path, "%s takes a UUID, not %s", field_names[f], jb_value_text(v));
		out->type = 'u';
	}
	else
	{
		/* metadata.<key>: a string, a number or a boolean */
		if (v->type == jbvString)
		{
			out->type = 's';
			out->s = pnstrdup(v->val.string.val, v->val.string.len);
			out->slen = v->val.string.len;
		}
		else if (v->type == jbvNumeric)
		{
			out->type = 'n';
			out->n = DatumGetNumericCopy(NumericGetDatum(v->val.numeric));
		}
		else if (v->type == jbvBool)
		{
			out->type = 'b';
			out->b = v->val.boolean;
		}
		else
			invalid_rule(path, "metadata is compared with a string, number or boolean, not %s", jb_value_text(v));
	}
}

static RuleNode *compile_node(const JsonbValue *v, const char *path, int depth);

static void
compile_list(RuleNode *node, const JsonbValue *v, const char *path, const char *what, int depth)
{
	JsonbContainer *arr;

	if (!jb_is_array(v))
		invalid_rule(path, "\"%s\" takes an array of conditions", what);
	arr = v->val.binary.data;
	node->nchildren = JsonContainerSize(arr);
	if (node->nchildren < 1 || node->nchildren > RULE_MAX_CHILDREN)
		invalid_rule(path, "\"%s\" takes 1 to %d conditions, not %d", what, RULE_MAX_CHILDREN, node->nchildren);
	node->children = palloc(sizeof(RuleNode *) * node->nchildren);
	for (int i = 0; i < node->nchildren; i++)
		node->children[i] = compile_node(getIthJsonbValueFromContainer(arr, i),
										 psprintf("%s.%s[%d]", path, what, i), depth + 1);
}

enum
{
	K_ALL, K_ANY, K_NOT, K_FIELD, K_OP, K_VALUE, K_AGGREGATE, K_OF, K_WINDOW, K_CALENDAR, K_COUNT
};
static const char *const node_keys[K_COUNT] = {"all", "any", "not", "field", "op", "value", "aggregate", "of",
"window_seconds", "window"};

/* {"aggregate": ..., "of": ..., "window_seconds": ..., "op": ..., "value": ...} */
static void
compile_aggregate(RuleNode *node, JsonbValue *f, bool *has, const char *path)
{
	char	   *s,
			   *end;
	int64		secs;

	node->kind = RULE_AGGREGATE;
	if (json_text_is(&f[K_AGGREGATE], "count"))
		node->agg = 'c';
	else if (json_text_is(&f[K_AGGREGATE], "sum"))
		node->agg = 's';
	else if (json_text_is(&f[K_AGGREGATE], "distinct_counterparties"))
		node->agg = 'd';
	else
		invalid_rule(path, "aggregate is \"count\", \"sum\" or \"distinct_counterparties\", not %s",
					 jb_value_text(&f[K_AGGREGATE]));
	if (!has[K_OF] || (!json_text_is(&f[K_OF], "debit_account") && !json_text_is(&f[K_OF], "credit_account")))
		invalid_rule(path, "an aggregate needs \"of\": \"debit_account\" or \"credit_account\"");
	node->agg_side = json_text_is(&f[K_OF], "debit_account") ? 'd' : 'c';
	if (has[K_WINDOW] == has[K_CALENDAR])
		invalid_rule(path, "an aggregate needs \"window_seconds\" (10 to 2678400) or \"window\" (day, week, month, year), "
					 "not both");
	if (has[K_CALENDAR])
	{
		/* A calendar window in the rule's time zone, as a limit's. */
		static const char *const windows[] = {"day", "week", "month", "year"};

		for (int i = 0; i < 4 && node->agg_calendar == 0; i++)
			if (json_text_is(&f[K_CALENDAR], windows[i]))
				node->agg_calendar = windows[i][0];
		if (node->agg_calendar == 0)
			invalid_rule(path, "window is \"day\", \"week\", \"month\" or \"year\", not %s",
						 jb_value_text(&f[K_CALENDAR]));
		if (node->agg == 'd')
			invalid_rule(path, "distinct_counterparties takes window_seconds (a trailing window)");
	}
	else
	{
		if (f[K_WINDOW].type != jbvNumeric)
			invalid_rule(path, "window_seconds is a number of seconds, 10 to 2678400 (31 days)");
		s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(f[K_WINDOW].val.numeric)));
		errno = 0;
		secs = strtoi64(s, &end, 10);
		if (errno != 0 || *end != '\0' || secs < 10 || secs > 31 * SECS_PER_DAY)
			invalid_rule(path, "window_seconds %s is outside 10 seconds to 31 days (2678400)", s);
		node->agg_window_usecs = secs * USECS_PER_SEC;
	}
	if (!has[K_OP] || f[K_OP].type != jbvString)
		invalid_rule(path, "an aggregate needs \"op\": eq, ne, lt, le, gt or ge");
	{
		bool		found = false;

		for (int i = 0; i <= RULE_OP_GE && !found; i++)
			if (json_text_is(&f[K_OP], op_names[i]))
				node->op = i, found = true;
		if (!found)
			invalid_rule(path, "an aggregate compares with eq, ne, lt, le, gt or ge, not %s", jb_value_text(&f[K_OP]));
	}
	if (!has[K_VALUE])
		invalid_rule(path, "an aggregate needs \"value\"");
	node->nvalues = 1;
	node->values = palloc(sizeof(RuleValue));
	compile_value(&f[K_VALUE], RULE_FIELD_AMOUNT, psprintf("%s.value", path), &node->values[0]);
}

static RuleNode *
compile_node(const JsonbValue *v, const char *path, int depth)
{
	RuleNode   *node = palloc0(sizeof(RuleNode));
	JsonbValue	f[K_COUNT];
	bool		has[K_COUNT];
	int			nkinds;

	if (depth > RULE_MAX_DEPTH)
		invalid_rule(path, "conditions nest at most %d deep", RULE_MAX_DEPTH);
	if (!jb_is_object(v))
		invalid_rule(path, "a condition is an object, not %s", jb_value_text(v));
	jb_fields(v->val.binary.data, node_keys, K_COUNT, f, has, path, ERRCODE_FC_INVALID_RULE);
	nkinds = has[K_ALL] + has[K_ANY] + has[K_NOT] + has[K_FIELD] + has[K_AGGREGATE];
	if (nkinds != 1)
		invalid_rule(path, "a condition has exactly one of \"all\", \"any\", \"not\", \"field\" or \"aggregate\"");
	if ((has[K_OF] || has[K_WINDOW] || has[K_CALENDAR]) && !has[K_AGGREGATE])
		invalid_rule(path, "\"of\", \"window_seconds\" and \"window\" go with \"aggregate\"");
	if (has[K_AGGREGATE])
	{
		compile_aggregate(node, f, has, path);
		return node;
	}
	if (has[K_ALL] || has[K_ANY])
	{
		if (has[K_OP] || has[K_VALUE])
			invalid_rule(path, "\"op\" and \"value\" go with \"field\"");
		node->kind = has[K_ALL] ? RULE_ALL : RULE_ANY;
		compile_list(node, has[K_ALL] ? &f[K_ALL] : &f[K_ANY], path, has[K_ALL] ? "all" : "any", depth);
		return node;
	}
	if (has[K_NOT])
	{
		if (has[K_OP] || has[K_VALUE])
			invalid_rule(path, "\"op\" and \"value\" go with \"field\"");
		node->kind = RULE_NOT;
		node->nchildren = 1;
		node->children = palloc(sizeof(RuleNode *));
		node->children[0] = compile_node(&f[K_NOT], psprintf("%s.not", path), depth + 1);
		return node;
	}

	node->kind = RULE_COMPARE;
	if (f[K_FIELD].type != jbvString)
		invalid_rule(path, "\"field\" is a name such as \"amount\", not %s", jb_value_text(&f[K_FIELD]));
	{
		bool		found = false;

		for (int i = 0; i < (int) lengthof(field_names) && !found; i++)
			if (field_names[i] != NULL && json_text_is(&f[K_FIELD], field_names[i]))
				node->field = i, found = true;
		if (!found && f[K_FIELD].val.string.len > 9 && memcmp(f[K_FIELD].val.string.val, "metadata.", 9) == 0)
		{
			node->field = RULE_FIELD_METADATA;
			node->keylen = f[K_FIELD].val.string.len - 9;
			node->key = pnstrdup(f[K_FIELD].val.string.val + 9, node->keylen);
			found = true;
		}
		if (!found)
			invalid_rule(path, "unknown field %s", jb_value_text(&f[K_FIELD]));
	}
	if (!has[K_OP] || f[K_OP].type != jbvString)
		invalid_rule(path, "a comparison needs \"op\": eq, ne, lt, le, gt, ge, in or not_in");
	{
		bool		found = false;

		for (int i = 0; i < (int) lengthof(op_names) && !found; i++)
			if (json_text_is(&f[K_OP], op_names[i]))
				node->op = i, found = true;
		if (!found)
			invalid_rule(path, "unknown op %s: eq, ne, lt, le, gt, ge, in or not_in", jb_value_text(&f[K_OP]));
	}
	if (!has[K_VALUE])
		invalid_rule(path, "a comparison needs \"value\"");
	if (node->op == RULE_OP_IN || node->op == RULE_OP_NOT_IN)
	{
		JsonbContainer *arr;

		if (!jb_is_array(&f[K_VALUE]))
			invalid_rule(path, "%s takes an array of values", op_names[node->op]);
		arr = f[K_VALUE].val.binary.data;
		node->nvalues = JsonContainerSize(arr);
		if (node->nvalues < 1 || node->nvalues > RULE_MAX_VALUES)
			invalid_rule(path, "%s takes 1 to %d values, not %d", op_names[node->op], RULE_MAX_VALUES, node->nvalues);
		node->values = palloc(sizeof(RuleValue) * node->nvalues);
		for (int i = 0; i < node->nvalues; i++)
			compile_value(getIthJsonbValueFromContainer(arr, i), node->field,
						  psprintf("%s.value[%d]", path, i), &node->values[i]);
	}
	else
	{
		node->nvalues = 1;
		node->values = palloc(sizeof(RuleValue));
		compile_value(&f[K_VALUE], node->field, psprintf("%s.value", path), &node->values[0]);
		if (node->op != RULE_OP_EQ && node->op != RULE_OP_NE &&
			node->values[0].type != 'i' && node->values[0].type != 'n')
			invalid_rule(path, "%s orders numbers only", op_names[node->op]);
		if (node->op != RULE_OP_EQ && node->op != RULE_OP_NE && node->field == RULE_FIELD_CURRENCY)
			invalid_rule(path, "%s orders numbers only", op_names[node->op]);
	}
	return node;
}

RuleNode *
rules_compile(Jsonb *condition)
{
	JsonbValue	root;

	root.type = jbvBinary;
	root.val.binary.data = &condition->root;
	root.val.binary.len = VARSIZE(condition) - VARHDRSZ;
	if (JB_ROOT_IS_SCALAR(condition))
		invalid_rule("rule", "a condition is an object");
	return compile_node(&root, "rule", 1);
}

/* ---- evaluation ---- */

static inline bool
ordered(RuleOp op, int cmp)
{
	switch (op)
	{
		case RULE_OP_EQ:
			return cmp == 0;
		case RULE_OP_NE:
			return cmp != 0;
		case RULE_OP_LT:
			return cmp < 0;
		case RULE_OP_LE:
			return cmp <= 0;
		case RULE_OP_GT:
			return cmp > 0;
		case RULE_OP_GE:
			return cmp >= 0;
		default:
			return false;
	}
}

/* -1, 0, 1 comparing the fact with one constant; 2: not comparable. */
static int
compare_fact(const RuleNode *node, const RuleFacts *facts, pg_tz *tz, const RuleValue *val,
			 const JsonbValue *member)
{
	int64		x = 0;

	switch (node->field)
	{
		case RULE_FIELD_AMOUNT:
			x = facts->amount;
			break;
		case RULE_FIELD_CODE:
			x = facts->code;
			break;
		case RULE_FIELD_CURRENCY:
			x = facts->currency;
			break;
		case RULE_FIELD_DEBIT_CODE:
			x = facts->debit_code;
			break;
		case RULE_FIELD_CREDIT_CODE:
			x = facts->credit_code;
			break;
		case RULE_FIELD_LOCAL_HOUR:
		case RULE_FIELD_LOCAL_WEEKDAY:
			{
				struct pg_tm tm;
				fsec_t		fsec;
				int			offset;

				if (timestamp2tm(facts->ts, &offset, &tm, &fsec, NULL, tz) != 0)
					return 2;
				x = node->field == RULE_FIELD_LOCAL_HOUR ? tm.tm_hour
					: ((j2day(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday)) + 6) % 7) + 1;
				break;
			}
		case RULE_FIELD_KIND:
			{
				const char *k = facts->kind == 'P' ? "pending" : "posted";

				return strcmp(k, val->s) == 0 ? 0 : 1;
			}
		case RULE_FIELD_DEBIT_ACCOUNT:
		case RULE_FIELD_CREDIT_ACCOUNT:
			{
				const pg_uuid_t *u = node->field == RULE_FIELD_DEBIT_ACCOUNT ? facts->debit : facts->credit;

				return memcmp(u->data, val->u.data, UUID_LEN) == 0 ? 0 : 1;
			}
		case RULE_FIELD_METADATA:
			if (member == NULL)
				return 2;
			if (val->type == 's' && member->type == jbvString)
			{
				int			len = Min(member->val.string.len, val->slen);
				int			c = memcmp(member->val.string.val, val->s, len);

				return c != 0 ? (c < 0 ? -1 : 1) : (member->val.string.len == val->slen ? 0 : 1);
			}
			if (val->type == 'n' && member->type == jbvNumeric)
			{
				int			c = DatumGetInt32(DirectFunctionCall2(numeric_cmp,
																  NumericGetDatum(member->val.numeric),
																  NumericGetDatum(val->n)));

				return c < 0 ? -1 : c > 0 ? 1 : 0;
			}
			if (val->type == 'b' && member->type == jbvBool)
				return member->val.boolean == val->b ? 0 : 1;
			return 2;
	}
	return x < val->i ? -1 : x > val->i ? 1 : 0;
}

static bool
eval_compare(const RuleNode *node, const RuleFacts *facts, pg_tz *tz)
{
	JsonbValue	mv;
	const JsonbValue *member = NULL;

	if (node->field == RULE_FIELD_METADATA)
	{
		/* A missing member meets no comparison. */
		if (facts->metadata == NULL || !JB_ROOT_IS_OBJECT(facts->metadata) ||
			getKeyJsonValueFromContainer(&facts->metadata->root, node->key, node->keylen, &mv) == NULL)
			return false;
		member = &mv;
	}
	if (node->op == RULE_OP_IN || node->op == RULE_OP_NOT_IN)
	{
		bool		found = false,
					comparable = false;

		for (int i = 0; i < node->nvalues && !found; i++)
		{
			int			c = compare_fact(node, facts, tz, &node->values[i], member);

			comparable |= c != 2;
			found = c == 0;
		}
		/* A metadata member of a type none of the values has meets neither in nor not_in. */
		if (!comparable)
			return false;
		return node->op == RULE_OP_IN ? found : !found;
	}
	{
		int			c = compare_fact(node, facts, tz, &node->values[0], member);

		return c != 2 && ordered(node->op, c);
	}
}

int
rules_aggregates(RuleNode *node, RuleNode ***out)
{
	int			n = 0;

	if (node->kind == RULE_AGGREGATE)
	{
		*out = *out ? repalloc(*out, sizeof(RuleNode *) * (n + 1)) : palloc(sizeof(RuleNode *));
		(*out)[0] = node;
		return 1;
	}
	for (int i = 0; i < node->nchildren; i++)
	{
		RuleNode  **sub = NULL;
		int			k = rules_aggregates(node->children[i], &sub);

		if (k == 0)
			continue;
		*out = *out ? repalloc(*out, sizeof(RuleNode *) * (n + k)) : palloc(sizeof(RuleNode *) * (n + k));
		memcpy(*out + n, sub, sizeof(RuleNode *) * k);
		n += k;
	}
	return n;
}

bool
rules_eval(const RuleNode *node, const RuleFacts *facts, pg_tz *tz)
{
	switch (node->kind)
	{
		case RULE_ALL:
			for (int i = 0; i < node->nchildren; i++)
				if (!rules_eval(node->children[i], facts, tz))
					return false;
			return true;
		case RULE_ANY:
			for (int i = 0; i < node->nchildren; i++)
				if (rules_eval(node->children[i], facts, tz))
					return true;
			return false;
		case RULE_NOT:
			return !rules_eval(node->children[0], facts, tz);
		case RULE_COMPARE:
			return eval_compare(node, facts, tz);
		case RULE_AGGREGATE:
			{
				int64		v = facts->aggregate ? facts->aggregate(facts->aggregate_arg, node) : 0;

				return ordered(node->op, v < node->values[0].i ? -1 : v > node->values[0].i ? 1 : 0);
			}
	}
	return false;
}
