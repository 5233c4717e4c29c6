/*
 * tenancy.c — who is calling: JWT claim helpers, the current tenant and user,
 * and tenant membership.
 *
 * PostgREST and Supabase put the verified JWT of each request into the GUC
 * request.jwt.claims (JSON text), and older versions one GUC per claim
 * (request.jwt.claim.sub, ...).  Applications without JWTs name the tenant
 * and user with fincore.set_tenant() / fincore.set_user(), which set the
 * reserved GUCs fincore.tenant / fincore.user for the current transaction
 * only; both are PGC_SUSET, so a client cannot set them with SET or
 * set_config(), only through those functions and their EXECUTE grants.
 *
 * Row level security policies call fincore.tenant_id() once per row, so the
 * helpers are built to cost almost nothing after the first call.  fincore
 * defines request.jwt.claims and request.jwt.claim.sub itself (PostgREST only
 * ever sets them, so nothing changes for it), and every setting an identity
 * depends on has an assign hook that bumps identity_generation.  The parsed
 * claims and the resolved tenant and user are cached per backend, keyed on
 * that generation: a new request costs one JSON parse (and only if the
 * claims text really changed), every other call an integer compare.  Nothing
 * is folded into a plan, so a prepared statement reused by the next request
 * sees the next request's claims.
 *
 * Memberships (fincore.tenant_members) of the current user are loaded once per
 * transaction and dropped when the table changes: a trigger invalidates the
 * table's relcache entry, which every backend hears about at commit.
 */
#include "fincore.h"

#include "cache_watch.h"
#include "owner_sql.h"
#include "tenancy.h"

#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/pathnodes.h"
#include "nodes/supportnodes.h"
#include "parser/parse_func.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#define CLAIMS_GUC			"request.jwt.claims"
#define LEGACY_CLAIM_PREFIX	"request.jwt.claim."
#define TENANT_GUC			"fincore.tenant"
#define USER_GUC			"fincore.user"

/* GUC variables. */
static char *tenant_claim_path = NULL;	/* fincore.tenant_claim */
static char *tenant_override = NULL;	/* fincore.tenant, set by set_tenant() */
static char *user_override = NULL;	/* fincore.user, set by set_user() */
static char *claims_setting = NULL; /* request.jwt.claims */
static char *legacy_sub_setting = NULL; /* request.jwt.claim.sub */
static bool hoist_identity = true;	/* fincore.hoist_identity */

/* Bumped by the assign hook of every setting above: cached answers carry it. */
static uint64 identity_generation = 1;

static void
identity_setting_assigned(const char *newval pg_attribute_unused(), void *extra pg_attribute_unused())
{
	identity_generation++;
}

/* ---- small helpers ---- */

/* A setting that is NULL or "" is unset: "" is what a transaction-local
 * setting reads as after its transaction ended. */
static inline bool
setting_is_set(const char *value)
{
	return value != NULL && value[0] != '\0';
}

/*
 * Parse a UUID in the canonical 8-4-4-4-12 form or as 32 hex digits; false
 * if malformed.  (uuid_in would raise 22P02; claims get their own code.)
 */
static bool
uuid_parse_text(const char *s, int len, pg_uuid_t *out)
{
	int			n = 0;

	if (len != 36 && len != 32)
		return false;
	for (int i = 0; i < len; i++)
	{
		int			hi,
					lo;

		if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23))
		{
			if (s[i] != '-')
				return false;
			continue;
		}
		if (i + 1 >= len)
			return false;
		hi = hex_digit(s[i]);
		lo = hex_digit(s[i + 1]);
		if (hi < 0 || lo < 0 || n >= UUID_LEN)
			return false;
		out->data[n++] = (unsigned char) (hi << 4 | lo);
		i++;
	}
	return n == UUID_LEN;
}

static void
uuid_or_error(const char *value, const char *source, pg_uuid_t *out)
{
	if (!uuid_parse_text(value, strlen(value), out))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CLAIM_UUID),
				 errmsg("%s is not a valid uuid: \"%.64s\"", source, value),
				 errhint("Tenant and user ids are UUIDs, e.g. 7a1c2f90-5d4e-4b8a-9c3f-0e1d2c3b4a59.")));
}

/* ---- the parsed claims, cached per backend ---- */

static MemoryContext claims_cxt = NULL;
static char *claims_raw = NULL;		/* copy of the setting they were parsed from */
static Jsonb *claims_jsonb = NULL;	/* NULL when unset */
static uint64 claims_checked_generation = 0;

/* The claims object for the current setting, or NULL when unset. */
static Jsonb *
current_claims(void)
{
	const char *volatile raw = setting_is_set(claims_setting) ? claims_setting : NULL;
	MemoryContext old;
	Jsonb	   *volatile parsed = NULL;

	if (claims_cxt != NULL && claims_checked_generation == identity_generation)
		return claims_jsonb;
	/* Some setting changed; re-parse only if the claims text did. */
	if (claims_cxt != NULL &&
		(raw == NULL ? claims_raw == NULL : (claims_raw != NULL && strcmp(raw, claims_raw) == 0)))
	{
		claims_checked_generation = identity_generation;
		return claims_jsonb;
	}

	if (claims_cxt == NULL)
		claims_cxt = AllocSetContextCreate(TopMemoryContext, "fincore claims",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(claims_cxt);
	claims_raw = NULL;
	claims_jsonb = NULL;
	if (raw == NULL)
	{
		claims_checked_generation = identity_generation;
		return NULL;
	}

	old = MemoryContextSwitchTo(claims_cxt);
	PG_TRY();
	{
		parsed = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(raw)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		FlushErrorState();
		parsed = NULL;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);

	if (parsed == NULL || !JB_ROOT_IS_OBJECT(parsed) || JB_ROOT_IS_SCALAR(parsed))
	{
		/* Leave the cache empty: the next call sees the same text and raises again. */
		MemoryContextReset(claims_cxt);
		claims_cxt = NULL;
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_CLAIMS),
				 errmsg("request.jwt.claims is not a JSON object: \"%.64s%s\"",
						raw, strlen(raw) > 64 ? "..." : ""),
				 errhint("The claims setting must hold the JWT payload as a JSON object, as PostgREST sets it.")));
	}
	claims_raw = MemoryContextStrdup(claims_cxt, raw);
	claims_jsonb = parsed;
	claims_checked_generation = identity_generation;
	return claims_jsonb;
}

/*
 * Look up a dotted path ("app_metadata.tenant_id") in the claims.  Returns a
 * palloc'd string: a JSON string's contents, or the JSON text of any other
 * value; NULL when a step is missing, not an object, or the value is null.
 */
static char *
claims_path_text(Jsonb *claims, const char *path)
{
	JsonbContainer *container;
	JsonbValue	v;
	const char *seg = path;

	if (claims == NULL || path == NULL || *path == '\0')
		return NULL;
	container = &claims->root;
	for (;;)
	{
		const char *dot = strchr(seg, '.');
		int			seglen = dot ? (int) (dot - seg) : (int) strlen(seg);

		if (!JsonContainerIsObject(container) ||
			getKeyJsonValueFromContainer(container, seg, seglen, &v) == NULL)
			return NULL;
		if (dot == NULL)
			break;
		if (v.type != jbvBinary)
			return NULL;
		container = v.val.binary.data;
		seg = dot + 1;
	}
	switch (v.type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(v.val.string.val, v.val.string.len);
		case jbvBinary:
			return JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
		default:
			return JsonbToCString(NULL, &JsonbValueToJsonb(&v)->root, 0);
	}
}

/* A claim from the claims object, falling back to the legacy per-claim GUC. */
static char *
claim_with_legacy(const char *name)
{
	char	   *value = claims_path_text(current_claims(), name);

	if (value == NULL && strchr(name, '.') == NULL)
	{
		char		guc[NAMEDATALEN + sizeof(LEGACY_CLAIM_PREFIX)];
		const char *legacy;

		snprintf(guc, sizeof(guc), "%s%s", LEGACY_CLAIM_PREFIX, name);
		legacy = strcmp(name, "sub") == 0 ? legacy_sub_setting : GetConfigOption(guc, true, false);
		if (setting_is_set(legacy))
			value = pstrdup(legacy);
	}
	return value;
}

/* ---- current tenant and user ---- */

/*
 * One cached answer per helper, valid for one identity_generation and, when
 * the claim may come from a legacy per-claim setting that fincore does not
 * define (request.jwt.claim.tenant_id, set by PostgREST < 9 as a placeholder
 * with no assign hook), for one value of that setting: a pooled connection
 * that changes only that setting must not keep the last request's answer.
 */
#define LEGACY_VALUE_MAX 64

typedef struct IdentityCache
{
	uint64		generation;		/* 0: nothing cached */
	bool		isnull;
	pg_uuid_t	value;
	char		legacy[LEGACY_VALUE_MAX];	/* the legacy setting it was resolved with */
} IdentityCache;

/*
 * The current value of the legacy setting request.jwt.claim.<path> when the
 * claim at path can come from it and nothing tells fincore of its changes
 * ("" when unset); NULL when no such setting can apply: an override is set,
 * the path is dotted, or it is "sub", which fincore defines with a hook.
 */
static const char *
unwatched_legacy_claim(const char *override, const char *path)
{
	char		guc[NAMEDATALEN + sizeof(LEGACY_CLAIM_PREFIX)];
	const char *value;

	if (setting_is_set(override) || path == NULL || strchr(path, '.') != NULL || strcmp(path, "sub") == 0)
		return NULL;
	snprintf(guc, sizeof(guc), "%s%s", LEGACY_CLAIM_PREFIX, path);
	value = GetConfigOption(guc, true, false);
	return value != NULL ? value : "";
}

static IdentityCache tenant_cache;
static IdentityCache user_cache;

/*
 * Resolve an identity: the override setting wins; else the claim at path
 * (with the legacy per-claim GUC as fallback).  Returns false when unset.
 * A malformed value raises every time: errors are never cached.
 */
static bool
resolve_identity(IdentityCache *cache, const char *override, const char *path,
				 const char *what, pg_uuid_t *out)
{
	char	   *value;
	const char *legacy = unwatched_legacy_claim(override, path);

	if (cache->generation != identity_generation ||
		(legacy != NULL && strcmp(cache->legacy, legacy) != 0))
	{
		/* A legacy value too long to remember is read again at every call. */
		bool		cacheable = legacy == NULL || strlen(legacy) < LEGACY_VALUE_MAX;

		cache->generation = 0;
		if (legacy != NULL && cacheable)
			strlcpy(cache->legacy, legacy, LEGACY_VALUE_MAX);
		if (setting_is_set(override))
			uuid_or_error(override, what, &cache->value);
		else if ((value = claim_with_legacy(path ? path : "")) != NULL)
			uuid_or_error(value, psprintf("claim \"%s\"", path), &cache->value);
		else
		{
			cache->isnull = true;
			cache->generation = cacheable ? identity_generation : 0;
			return false;
		}
		cache->isnull = false;
		cache->generation = cacheable ? identity_generation : 0;
	}
	if (!cache->isnull)
		*out = cache->value;
	return !cache->isnull;
}

bool
tenancy_current_tenant(pg_uuid_t *out)
{
	return resolve_identity(&tenant_cache, tenant_override, tenant_claim_path,
							"the tenant set by fincore.set_tenant()", out);
}

bool
tenancy_current_user(pg_uuid_t *out)
{
	return resolve_identity(&user_cache, user_override, "sub",
							"the user set by fincore.set_user()", out);
}

void
tenancy_require_tenant(pg_uuid_t *out)
{
	if (!tenancy_current_tenant(out))
		ereport(ERROR,
				(errcode(ERRCODE_FC_TENANT_REQUIRED),
				 errmsg("no current tenant"),
				 errdetail("fincore.set_tenant() was not called in this transaction and the claim \"%s\" of request.jwt.claims is not set.",
						   tenant_claim_path ? tenant_claim_path : ""),
				 errhint("Call fincore.set_tenant(tenant_id) in the transaction, or send a JWT carrying the tenant claim.")));
}

static Datum
identity_result(FunctionCallInfo fcinfo, bool (*resolve) (pg_uuid_t *))
{
	pg_uuid_t  *result = palloc(sizeof(pg_uuid_t));

	if (!resolve(result))
		PG_RETURN_NULL();
	PG_RETURN_UUID_P(result);
}

PG_FUNCTION_INFO_V1(fincore_tenant_id);
Datum
fincore_tenant_id(PG_FUNCTION_ARGS)
{
	return identity_result(fcinfo, tenancy_current_tenant);
}

PG_FUNCTION_INFO_V1(fincore_uid);
Datum
fincore_uid(PG_FUNCTION_ARGS)
{
	return identity_result(fcinfo, tenancy_current_user);
}

PG_FUNCTION_INFO_V1(fincore_require_tenant);
Datum
fincore_require_tenant(PG_FUNCTION_ARGS pg_attribute_unused())
{
	pg_uuid_t  *result = palloc(sizeof(pg_uuid_t));

	tenancy_require_tenant(result);
	PG_RETURN_UUID_P(result);
}

PG_FUNCTION_INFO_V1(fincore_claims);
Datum
fincore_claims(PG_FUNCTION_ARGS pg_attribute_unused())
{
	Jsonb	   *claims = current_claims();

	if (claims == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P((Jsonb *) pg_detoast_datum_copy((struct varlena *) claims));
}

PG_FUNCTION_INFO_V1(fincore_claim);
Datum
fincore_claim(PG_FUNCTION_ARGS)
{
	char	   *path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *value = claim_with_legacy(path);

	if (value == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(value));
}

PG_FUNCTION_INFO_V1(fincore_role);
Datum
fincore_role(PG_FUNCTION_ARGS pg_attribute_unused())
{
	char	   *value = claim_with_legacy("role");

	if (value == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(value));
}

/*
 * Planner support for tenant_id() and uid(): rewrite each call into
 * (SELECT fincore._tenant_id()) — the form Supabase recommends writing by
 * hand — so that a policy evaluates it once per execution, as an initplan,
 * instead of once per row.  Nothing is folded into the plan: the initplan
 * runs again at every execution.  Only calls the planner is preprocessing
 * are rewritten (root is set); the query is marked as having sublinks so
 * that preprocess_expression turns ours into an initplan right after.
 * A query that reads no relation is left alone: it evaluates the call once
 * anyway, and PL/pgSQL runs such queries as "simple expressions", assuming
 * that a query without sublinks plans without initplans.
 */
/* Does the query have a range table entry other than the planner's empty RTE_RESULT? */
static bool
query_reads_relations(Query *query)
{
	ListCell   *lc;

	foreach(lc, query->rtable)
		if (lfirst_node(RangeTblEntry, lc)->rtekind != RTE_RESULT)
			return true;
	return false;
}

PG_FUNCTION_INFO_V1(fincore_identity_support);
Datum
fincore_identity_support(PG_FUNCTION_ARGS)
{
	Node	   *rawreq = (Node *) PG_GETARG_POINTER(0);
	SupportRequestSimplify *req;
	const char *inner_name;
	Oid			inner;
	Query	   *subquery;
	SubLink    *sublink;
	FuncExpr   *call;

	if (!IsA(rawreq, SupportRequestSimplify) || !hoist_identity)
		PG_RETURN_POINTER(NULL);
	req = (SupportRequestSimplify *) rawreq;
	if (req->root == NULL || req->root->parse == NULL || req->fcall->args != NIL ||
		!query_reads_relations(req->root->parse))
		PG_RETURN_POINTER(NULL);
	inner_name = get_func_name(req->fcall->funcid);
	if (inner_name == NULL)
		PG_RETURN_POINTER(NULL);
	inner_name = strcmp(inner_name, "tenant_id") == 0 ? "_tenant_id" :
		strcmp(inner_name, "uid") == 0 ? "_uid" : NULL;
	if (inner_name == NULL)
		PG_RETURN_POINTER(NULL);
	inner = LookupFuncName(list_make2(makeString("fincore"), makeString(pstrdup(inner_name))),
						   0, NULL, true);
	if (!OidIsValid(inner))
		PG_RETURN_POINTER(NULL);

	call = makeFuncExpr(inner, UUIDOID, NIL, InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	subquery = makeNode(Query);
	subquery->commandType = CMD_SELECT;
	subquery->querySource = QSRC_ORIGINAL;
	subquery->canSetTag = true;
	subquery->jointree = makeFromExpr(NIL, NULL);
	subquery->targetList = list_make1(makeTargetEntry((Expr *) call, 1, pstrdup(inner_name + 1), false));

	sublink = makeNode(SubLink);
	sublink->subLinkType = EXPR_SUBLINK;
	sublink->subLinkId = 0;
	sublink->testexpr = NULL;
	sublink->operName = NIL;
	sublink->subselect = (Node *) subquery;
	sublink->location = req->fcall->location;
	req->root->parse->hasSubLinks = true;
	PG_RETURN_POINTER(sublink);
}

/* ---- set_tenant / set_user ---- */

/* what: the function's name for the warning of a call outside a transaction block; NULL: no warning. */
static void
set_identity_guc(FunctionCallInfo fcinfo, const char *guc, const char *what)
{
	char	   *value = "";

	if (!PG_ARGISNULL(0))
		value = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)));
	if (what != NULL && !IsTransactionBlock())
		ereport(WARNING,
				(errcode(ERRCODE_NO_ACTIVE_SQL_TRANSACTION),
				 errmsg("fincore.%s() outside a transaction block lasts only for this statement", what),
				 errhint("Call it after BEGIN: the value is local to the transaction.")));
	/* PGC_SUSET context: the EXECUTE grant on this function is the permission. */
	(void) set_config_option(guc, value, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);
}

/* Does fincore.tenants hold this id?  Read as the table's owner, so RLS and
 * grants do not hide it from a trusted caller that has no tenant yet. */
static bool tenant_exists(pg_uuid_t *id);

static void
set_tenant_guc(FunctionCallInfo fcinfo, const char *what)
{
	if (!PG_ARGISNULL(0) && !tenant_exists(PG_GETARG_UUID_P(0)))
		ereport(ERROR,
				(errcode(ERRCODE_FC_TENANT_NOT_FOUND),
				 errmsg("tenant %s does not exist",
						DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)))),
				 errhint("Create it first with fincore.create_tenant().")));
	set_identity_guc(fcinfo, TENANT_GUC, what);
}

PG_FUNCTION_INFO_V1(fincore_set_tenant);
Datum
fincore_set_tenant(PG_FUNCTION_ARGS)
{
	set_tenant_guc(fcinfo, "set_tenant");
	PG_RETURN_VOID();
}

/*
 * fincore._use_tenant(tenant): set_tenant() for fincore's own workers
 * (billing_run, dunning_run, expire_payment_steps), which set each job's
 * tenant within their own statement on purpose, under pg_cron or a procedure
 * as much as in a transaction block: no warning.
 */
PG_FUNCTION_INFO_V1(fincore_use_tenant);
Datum
fincore_use_tenant(PG_FUNCTION_ARGS)
{
	set_tenant_guc(fcinfo, NULL);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(fincore_set_user);
Datum
fincore_set_user(PG_FUNCTION_ARGS)
{
	set_identity_guc(fcinfo, USER_GUC, "set_user");
	PG_RETURN_VOID();
}

/* ---- queries as the owner of a fincore table ---- */

typedef struct TenantLookup
{
	pg_uuid_t  *id;
	bool		found;
} TenantLookup;

static void
tenant_exists_query(void *arg)
{
	TenantLookup *q = arg;
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(q->id)};

	fincore_spi_connect();
	if (plan == NULL)
		plan = fincore_prepare("SELECT 1 FROM fincore.tenants t WHERE t.id OPERATOR(pg_catalog.=) $1",
							   1, (Oid[]) {UUIDOID}, 0);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "tenant look-up failed");
	q->found = SPI_processed > 0;
	SPI_finish();
}

static bool
tenant_exists(pg_uuid_t *id)
{
	TenantLookup q = {id, false};

	fincore_run_as_owner(fincore_table_oid("tenants"), tenant_exists_query, &q);
	return q.found;
}

/* ---- memberships of the current user, once per transaction ---- */

typedef struct Membership
{
	pg_uuid_t	tenant;
	char		role[NAMEDATALEN];
} Membership;

static MemoryContext members_cxt = NULL;
static Membership *members = NULL;
static int	members_count = 0;
static CacheWatch members_watch;
static LocalTransactionId members_lxid = InvalidLocalTransactionId;
static pg_uuid_t members_user;
static Oid	members_relid = InvalidOid;

typedef struct MembersLoad
{
	pg_uuid_t	user;
} MembersLoad;

static void
members_load_query(void *arg)
{
	MembersLoad *q = arg;
	static SPIPlanPtr plan = NULL;
	Datum		values[1] = {UUIDPGetDatum(&q->user)};
	MemoryContext old;

	fincore_spi_connect();
	if (plan == NULL)
		plan = fincore_prepare("SELECT m.tenant_id, m.role FROM fincore.tenant_members m "
							   " WHERE m.user_id OPERATOR(pg_catalog.=) $1", 1, (Oid[]) {UUIDOID}, 0);
	if (SPI_execute_plan(plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "membership look-up failed");

	old = MemoryContextSwitchTo(members_cxt);
	members_count = (int) SPI_processed;
	members = palloc0(sizeof(Membership) * Max(members_count, 1));
	MemoryContextSwitchTo(old);
	for (int i = 0; i < members_count; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		Datum		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull);

		members[i].tenant = *DatumGetUUIDP(d);
		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull)
			text_to_cstring_buffer(DatumGetTextPP(d), members[i].role, NAMEDATALEN);
	}
	SPI_finish();
}

/* The current user's memberships; count 0 when there is no user. */
static int
current_memberships(Membership **out)
{
	pg_uuid_t	user;

	if (!tenancy_current_user(&user))
	{
		*out = NULL;
		return 0;
	}
	if (!cache_watch_valid(&members_watch) || members_lxid != MyProc->lxid ||
		memcmp(&members_user, &user, sizeof(pg_uuid_t)) != 0)
	{
		MembersLoad q;

		members_relid = fincore_table_oid("tenant_members");
		if (members_cxt == NULL)
			members_cxt = AllocSetContextCreate(TopMemoryContext, "fincore memberships",
												ALLOCSET_SMALL_SIZES);
		MemoryContextReset(members_cxt);
		members = NULL;
		members_count = 0;
		q.user = user;
		cache_watch_begin(&members_watch, 1, &members_relid);
		fincore_run_as_owner(members_relid, members_load_query, &q);
		members_lxid = MyProc->lxid;
		members_user = user;
		cache_watch_done(&members_watch);
	}
	*out = members;
	return members_count;
}

bool
tenancy_has_role(const pg_uuid_t *tenant, const char *role)
{
	Membership *m;
	int			n = current_memberships(&m);

	for (int i = 0; i < n; i++)
		if (memcmp(&m[i].tenant, tenant, sizeof(pg_uuid_t)) == 0 &&
			(role == NULL || strcmp(m[i].role, role) == 0))
			return true;
	return false;
}

/*
 * fincore.has_tenant_role(tenant uuid, role text default null): never raises
 * on its arguments (a NULL tenant or an unknown role is simply false), so it
 * is LEAKPROOF and the planner may evaluate it before other quals.
 */
PG_FUNCTION_INFO_V1(fincore_has_tenant_role);
Datum
fincore_has_tenant_role(PG_FUNCTION_ARGS)
{
	char		role[NAMEDATALEN];

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	if (!PG_ARGISNULL(1))
	{
		text	   *r = PG_GETARG_TEXT_PP(1);

		if (VARSIZE_ANY_EXHDR(r) >= NAMEDATALEN)
			PG_RETURN_BOOL(false);
		text_to_cstring_buffer(r, role, sizeof(role));
	}
	PG_RETURN_BOOL(tenancy_has_role(PG_GETARG_UUID_P(0), PG_ARGISNULL(1) ? NULL : role));
}

PG_FUNCTION_INFO_V1(fincore_my_tenants);
Datum
fincore_my_tenants(PG_FUNCTION_ARGS pg_attribute_unused())
{
	Membership *m;
	int			n = current_memberships(&m);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			k = 0;

	for (int i = 0; i < n; i++)
	{
		bool		dup = false;

		for (int j = 0; j < i && !dup; j++)
			dup = memcmp(&m[j].tenant, &m[i].tenant, sizeof(pg_uuid_t)) == 0;
		if (!dup)
			elems[k++] = UUIDPGetDatum(&m[i].tenant);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, k, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/* Trigger on fincore.tenant_members: every backend reloads at its next look-up. */
PG_FUNCTION_INFO_V1(fincore_tenant_members_changed);
Datum
fincore_tenant_members_changed(PG_FUNCTION_ARGS)
{
	return cache_watch_trigger(fcinfo);
}

/* ---- module initialisation ---- */

void
tenancy_init(void)
{
	DefineCustomStringVariable(CLAIMS_GUC,
							   "JWT claims of the current request (JSON), as PostgREST sets them.",
							   "Defined by fincore so that a change is noticed without a look-up per row.",
							   &claims_setting, "",
							   PGC_USERSET, GUC_NOT_IN_SAMPLE,
							   NULL, identity_setting_assigned, NULL);
	DefineCustomStringVariable(LEGACY_CLAIM_PREFIX "sub",
							   "The sub claim of the current request, as PostgREST before version 9 sets it.",
							   NULL,
							   &legacy_sub_setting, "",
							   PGC_USERSET, GUC_NOT_IN_SAMPLE,
							   NULL, identity_setting_assigned, NULL);
	DefineCustomBoolVariable("fincore.hoist_identity",
							 "Plan fincore.tenant_id() and fincore.uid() as initplans, evaluated once per execution.",
							 "Off: they are called once per row, as written.",
							 &hoist_identity, true,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("fincore.tenant_claim",
							   "Dotted path of the JWT claim that holds the tenant id.",
							   "Read from request.jwt.claims, e.g. tenant_id or app_metadata.tenant_id.",
							   &tenant_claim_path, "tenant_id",
							   PGC_SUSET, 0, NULL, identity_setting_assigned, NULL);
	DefineCustomStringVariable(TENANT_GUC,
							   "The tenant set by fincore.set_tenant() for this transaction.",
							   "Set only through fincore.set_tenant(); it lasts until the transaction ends.",
							   &tenant_override, "",
							   PGC_SUSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, identity_setting_assigned, NULL);
	DefineCustomStringVariable(USER_GUC,
							   "The user set by fincore.set_user() for this transaction.",
							   "Set only through fincore.set_user(); it lasts until the transaction ends.",
							   &user_override, "",
							   PGC_SUSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, identity_setting_assigned, NULL);
}
