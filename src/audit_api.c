/*
 * audit_api.c — the audit trail's storage and SQL functions (docs/audit.md).
 *
 * Writers append a record of each change to fincore.audit_pending, in their
 * own transaction, without touching any shared row: the row trigger
 * fincore.audit_trigger() for audited tables, audit_append() for the ledger's
 * transfers.  fincore.audit_seal() then chains what has committed, tenant by
 * tenant under the chain's head row lock: each record gets the next sequence
 * number and its hash over its predecessor's (audit_chain.c), moves to the
 * append-only fincore.audit_log, and the head keeps the last hash and the
 * Merkle tree's compact range.  So tenants never wait on one another, and a
 * tenant's writers never wait on its chain; the chain's order is the order in
 * which the sealer sees transactions commit (by transaction id within one
 * seal).
 *
 * fincore.audit_verify() recomputes a chain streaming; audit_proof() gives
 * an RFC 6962 inclusion proof against a checkpoint's root; the guard trigger
 * refuses UPDATE, DELETE and TRUNCATE of the log except fincore's own
 * redaction (a flag only this file sets).
 */
#include "audit.h"

#include "owner_sql.h"
#include "uuidv7.h"
#include "tenancy.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "catalog/pg_am.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

/* Set while fincore itself changes a record (redaction): the guard lets only that through. */
static bool audit_writing = false;

static const uint8 zero_hash[AUDIT_HASH_LEN];

/* ---- small helpers ---- */

static SPIPlanPtr
audit_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	if (*plan == NULL)
		*plan = fincore_prepare(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
	return *plan;
}

static inline Datum
spi_col(uint64 row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

static bytea *
hash_bytea(const uint8 *h)
{
	bytea	   *b = palloc(VARHDRSZ + AUDIT_HASH_LEN);

	SET_VARSIZE(b, VARHDRSZ + AUDIT_HASH_LEN);
	memcpy(VARDATA(b), h, AUDIT_HASH_LEN);
	return b;
}

/* A stored hash: exactly 32 bytes, or false (a tampered row may hold anything). */
static bool
hash_from_datum(Datum d, uint8 *out)
{
	bytea	   *b = DatumGetByteaPP(d);

	if (VARSIZE_ANY_EXHDR(b) != AUDIT_HASH_LEN)
		return false;
	memcpy(out, VARDATA_ANY(b), AUDIT_HASH_LEN);
	return true;
}

static char *
hex_text(const uint8 *h)
{
	static const char digits[] = "0123456789abcdef";
	char	   *s = palloc(2 * AUDIT_HASH_LEN + 1);

	for (int i = 0; i < AUDIT_HASH_LEN; i++)
	{
		s[2 * i] = digits[h[i] >> 4];
		s[2 * i + 1] = digits[h[i] & 15];
	}
	s[2 * AUDIT_HASH_LEN] = '\0';
	return s;
}

/* ---- appending ---- */

typedef struct AppendArgs
{
	pg_uuid_t	tenant;
	text	   *table_name;
	char		op;
	int			n;
	const char *const *keys;
	Jsonb	  **payloads;
	text	   *actor_role;
	bool		has_sub;
	pg_uuid_t	sub;
	bool		has_actor_tenant;
	pg_uuid_t	actor_tenant;
} AppendArgs;

static Oid	pending_relid = InvalidOid;

/*
 * One statement for the whole append: a row, or n rows from arrays (a ledger
 * batch's transfers), the fields they share given once.
 */
static void
append_as_owner(void *arg)
{
	AppendArgs *a = arg;
	static SPIPlanPtr one = NULL,
				many = NULL;
	Oid			types[11] = {UUIDOID, UUIDOID, XID8OID, TIMESTAMPTZOID, TEXTOID, UUIDOID, UUIDOID,
	TEXTOID, CHAROID, TEXTOID, JSONBOID};
	Datum		values[11];
	char		nulls[11] = "           ";
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * a->n);
	SPIPlanPtr	plan;

	fincore_spi_connect();
	for (int i = 0; i < a->n; i++)
		uuidv7_generate(&ids[i]);
	values[0] = UUIDPGetDatum(&a->tenant);
	values[2] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	values[3] = TimestampTzGetDatum(GetCurrentStatementStartTimestamp());
	values[4] = PointerGetDatum(a->actor_role);
	values[5] = UUIDPGetDatum(&a->sub);
	if (!a->has_sub)
		nulls[5] = 'n';
	values[6] = UUIDPGetDatum(&a->actor_tenant);
	if (!a->has_actor_tenant)
		nulls[6] = 'n';
	values[7] = PointerGetDatum(a->table_name);
	values[8] = CharGetDatum(a->op);
	if (a->n == 1)
	{
		plan = audit_plan(&one,
						  "INSERT INTO fincore.audit_pending (tenant_id, id, txid, at, actor_role, actor_sub,"
						  " actor_tenant, table_name, op, key, payload)"
						  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", 11, types);
		values[1] = UUIDPGetDatum(&ids[0]);
		values[9] = CStringGetTextDatum(a->keys[0]);
		values[10] = a->payloads[0] ? JsonbPGetDatum(a->payloads[0]) : (Datum) 0;
		if (a->payloads[0] == NULL)
			nulls[10] = 'n';
	}
	else
	{
		Datum	   *idd = palloc(sizeof(Datum) * a->n),
				   *keyd = palloc(sizeof(Datum) * a->n),
				   *payd = palloc(sizeof(Datum) * a->n);
		bool	   *payn = palloc(sizeof(bool) * a->n);
		int			dims[1] = {a->n};
		int			lbs[1] = {1};

		types[1] = UUIDARRAYOID;
		types[9] = TEXTARRAYOID;
		types[10] = JSONBARRAYOID;
		plan = audit_plan(&many,
						  "INSERT INTO fincore.audit_pending (tenant_id, id, txid, at, actor_role, actor_sub,"
						  " actor_tenant, table_name, op, key, payload)"
						  " SELECT $1, u.id, $3, $4, $5, $6, $7, $8, $9, u.key, u.payload"
						  "   FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($10), pg_catalog.unnest($11))"
						  "     AS u(id, key, payload)", 11, types);
		for (int i = 0; i < a->n; i++)
		{
			idd[i] = UUIDPGetDatum(&ids[i]);
			keyd[i] = CStringGetTextDatum(a->keys[i]);
			payd[i] = a->payloads[i] ? JsonbPGetDatum(a->payloads[i]) : (Datum) 0;
			payn[i] = a->payloads[i] == NULL;
		}
		values[1] = PointerGetDatum(construct_array(idd, a->n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		values[9] = PointerGetDatum(construct_array(keyd, a->n, TEXTOID, -1, false, TYPALIGN_INT));
		values[10] = PointerGetDatum(construct_md_array(payd, payn, 1, dims, lbs, JSONBOID, -1, false, TYPALIGN_INT));
	}
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT || SPI_processed != (uint64) a->n)
		elog(ERROR, "audit: appending %d records failed", a->n);
	SPI_finish();
}

void
audit_append_many(const pg_uuid_t *tenant, const char *table_name, char op, const char *const *keys,
				  Jsonb **payloads, int n)
{
	AppendArgs	a;

	if (n == 0)
		return;
	if (!OidIsValid(pending_relid))
		pending_relid = fincore_table_oid("audit_pending");
	a.tenant = *tenant;
	a.table_name = cstring_to_text(table_name);
	a.op = op;
	a.n = n;
	a.keys = keys;
	a.payloads = payloads;
	/* The role the session acts as: not the owner a SECURITY DEFINER function borrowed. */
	a.actor_role = cstring_to_text(GetUserNameFromId(GetOuterUserId(), false));
	a.has_sub = tenancy_current_user(&a.sub);
	a.has_actor_tenant = tenancy_current_tenant(&a.actor_tenant);
	fincore_run_as_owner(pending_relid, append_as_owner, &a);
}

void
audit_append(const pg_uuid_t *tenant, const char *table_name, char op, const char *key, Jsonb *payload)
{
	audit_append_many(tenant, table_name, op, &key, &payload, 1);
}

/* fincore._audit_append(tenant, table_name, op, key, payload): fincore's own records (redactions). */
PG_FUNCTION_INFO_V1(fincore_audit_append);
Datum
fincore_audit_append(PG_FUNCTION_ARGS)
{
	char	   *op;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR, (errcode(ERRCODE_FC_INVALID_AUDIT_RANGE), errmsg("an audit record needs its chain, table, operation and key")));
	op = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strlen(op) != 1 || strchr("IUDTR", op[0]) == NULL)
		ereport(ERROR, (errcode(ERRCODE_FC_INVALID_AUDIT_RANGE), errmsg("an operation is I, U, D, T or R, not \"%s\"", op)));
	audit_append(PG_GETARG_UUID_P(0), text_to_cstring(PG_GETARG_TEXT_PP(1)), op[0],
				 text_to_cstring(PG_GETARG_TEXT_PP(3)), PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4));
	PG_RETURN_VOID();
}

/*
 * Is the table audited (fincore.audit_enable made its TRUNCATE trigger)?  The
 * ledger asks for fincore.transfers, whose records it appends itself.
 */
bool
audit_relation_audited(Relation rel)
{
	TriggerDesc *td = rel->trigdesc;

	if (td == NULL)
		return false;
	for (int i = 0; i < td->numtriggers; i++)
		if (td->triggers[i].tgenabled != TRIGGER_DISABLED &&
			strcmp(td->triggers[i].tgname, "fincore_audit_truncate") == 0)
			return true;
	return false;
}

/* ---- the row trigger ---- */

static bool
is_redacted(const char *name, Trigger *tg)
{
	for (int i = 0; i < tg->tgnargs; i++)
		if (strcmp(tg->tgargs[i], name) == 0)
			return true;
	return false;
}

static void
push_value(JsonbParseState **st, JsonbValue *v)
{
	(void) pushJsonbValue(st, WJB_VALUE, v);
}

/* A column's value as to_jsonb() shows it: numbers, booleans and jsonb as such, the rest as text. */
static void
jb_column(JsonbParseState **st, Datum d, Oid typid)
{
	JsonbValue	v;

	switch (typid)
	{
		case BOOLOID:
			v.type = jbvBool;
			v.val.boolean = DatumGetBool(d);
			push_value(st, &v);
			return;
		case INT2OID:
		case INT4OID:
		case INT8OID:
			v.type = jbvNumeric;
			v.val.numeric = int64_to_numeric(typid == INT2OID ? DatumGetInt16(d) :
											 typid == INT4OID ? DatumGetInt32(d) : DatumGetInt64(d));
			push_value(st, &v);
			return;
		case NUMERICOID:
			v.type = jbvNumeric;
			v.val.numeric = DatumGetNumeric(d);
			if (!numeric_is_nan(v.val.numeric) && !numeric_is_inf(v.val.numeric))
			{
				push_value(st, &v);
				return;
			}
			break;
		case JSONBOID:
			{
				Jsonb	   *j = DatumGetJsonbP(d);

				if (JB_ROOT_IS_SCALAR(j))
				{
					JsonbValue	scalar;

					(void) JsonbExtractScalar(&j->root, &scalar);
					push_value(st, &scalar);
				}
				else
				{
					v.type = jbvBinary;
					v.val.binary.data = &j->root;
					v.val.binary.len = VARSIZE(j) - VARHDRSZ;
					push_value(st, &v);
				}
				return;
			}
		default:
			break;
	}
	{
		Oid			out;
		bool		varlena;
		char	   *s;

		getTypeOutputInfo(typid, &out, &varlena);
		s = OidOutputFunctionCall(out, d);
		v.type = jbvString;
		v.val.string.val = s;
		v.val.string.len = strlen(s);
		push_value(st, &v);
	}
}

/* A row as a JSON object of its columns, less the redacted ones. */
static void
jb_row(JsonbParseState **st, TupleDesc desc, HeapTuple tuple, Trigger *tg)
{
	(void) pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		JsonbValue	k;
		bool		isnull;
		Datum		d;

		if (att->attisdropped || is_redacted(NameStr(att->attname), tg))
			continue;
		k.type = jbvString;
		k.val.string.val = NameStr(att->attname);
		k.val.string.len = strlen(k.val.string.val);
		(void) pushJsonbValue(st, WJB_KEY, &k);
		d = heap_getattr(tuple, i + 1, desc, &isnull);
		if (isnull)
		{
			JsonbValue	n;

			n.type = jbvNull;
			push_value(st, &n);
		}
		else
			jb_column(st, d, att->atttypid);
	}
	(void) pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/* The row's primary key, without tenant_id: its columns' text joined by commas ("" if none). */
static char *
row_key(Relation rel, TupleDesc desc, HeapTuple tuple)
{
	Oid			pk = RelationGetPrimaryKeyIndex(rel);
	StringInfoData s;
	Relation	idx;

	initStringInfo(&s);
	if (!OidIsValid(pk))
		return s.data;
	idx = index_open(pk, AccessShareLock);
	for (int k = 0; k < idx->rd_index->indnkeyatts; k++)
	{
		AttrNumber	attno = idx->rd_index->indkey.values[k];
		Form_pg_attribute att;
		bool		isnull;
		Datum		d;
		Oid			out;
		bool		varlena;

		if (attno <= 0)
			continue;
		att = TupleDescAttr(desc, attno - 1);
		if (strcmp(NameStr(att->attname), "tenant_id") == 0)
			continue;
		if (s.len > 0)
			appendStringInfoChar(&s, ',');
		d = heap_getattr(tuple, attno, desc, &isnull);
		if (isnull)
			continue;
		getTypeOutputInfo(att->atttypid, &out, &varlena);
		appendStringInfoString(&s, OidOutputFunctionCall(out, d));
	}
	index_close(idx, AccessShareLock);
	return s.data;
}

/* The row's tenant: its tenant_id column, or the global chain's nil uuid. */
static void
row_tenant(TupleDesc desc, HeapTuple tuple, pg_uuid_t *out)
{
	memset(out, 0, sizeof(pg_uuid_t));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		isnull;
		Datum		d;

		if (att->attisdropped || att->atttypid != UUIDOID || strcmp(NameStr(att->attname), "tenant_id") != 0)
			continue;
		d = heap_getattr(tuple, i + 1, desc, &isnull);
		if (!isnull)
			*out = *DatumGetUUIDP(d);
		return;
	}
}

PG_FUNCTION_INFO_V1(fincore_audit_trigger);
Datum
fincore_audit_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	char	   *table_name;
	pg_uuid_t	tenant;
	JsonbParseState *st = NULL;
	JsonbValue *res;
	HeapTuple	row;
	char		op;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_AUDIT_TABLE),
				 errmsg("fincore.audit_trigger() runs only as an AFTER trigger"),
				 errhint("Use fincore.audit_enable(table).")));
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	table_name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											RelationGetRelationName(rel));
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		/* Every tenant's rows: a record in the global chain. */
		memset(&tenant, 0, sizeof(tenant));
		audit_append(&tenant, table_name, AUDIT_OP_TRUNCATE, "", NULL);
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_AUDIT_TABLE),
				 errmsg("fincore.audit_trigger() runs FOR EACH ROW, or FOR EACH STATEMENT on TRUNCATE")));
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		op = AUDIT_OP_INSERT;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		op = AUDIT_OP_UPDATE;
	else
		op = AUDIT_OP_DELETE;
	row = op == AUDIT_OP_DELETE ? td->tg_trigtuple : (op == AUDIT_OP_UPDATE ? td->tg_newtuple : td->tg_trigtuple);

	(void) pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	if (op != AUDIT_OP_INSERT)
	{
		JsonbValue	k = {.type = jbvString,.val.string = {.len = 3,.val = "old"}};

		(void) pushJsonbValue(&st, WJB_KEY, &k);
		jb_row(&st, desc, td->tg_trigtuple, td->tg_trigger);
	}
	if (op != AUDIT_OP_DELETE)
	{
		JsonbValue	k = {.type = jbvString,.val.string = {.len = 3,.val = "new"}};

		(void) pushJsonbValue(&st, WJB_KEY, &k);
		jb_row(&st, desc, row, td->tg_trigger);
	}
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	row_tenant(desc, row, &tenant);
	audit_append(&tenant, table_name, op, row_key(rel, desc, row), JsonbValueToJsonb(res));
	return PointerGetDatum(NULL);
}

/* A Citus shard of a table: its name ends in _ and the shard's number. */
static bool
is_citus_shard(Relation rel)
{
	const char *name = RelationGetRelationName(rel);
	const char *us = strrchr(name, '_');

	return fincore_citus_preloaded() && us != NULL && us[1] != '\0' && strspn(us + 1, "0123456789") == strlen(us + 1);
}

/* The guard of the log, its heads and checkpoints: no UPDATE, DELETE or TRUNCATE but fincore's own. */
PG_FUNCTION_INFO_V1(fincore_audit_guard);
Datum
fincore_audit_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "fincore.audit_guard() is a trigger");
	/*
	 * On Citus the change reaches a shard (audit_log_102008) in a worker's
	 * backend, where this backend's flag is not set: a shard lets it through,
	 * fincore's sealing and a superuser's change alike; the chain shows the
	 * latter (docs/audit.md, "On Citus").
	 */
	if (is_citus_shard(td->tg_relation))
		return PointerGetDatum(TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple);
	if (!audit_writing)
		ereport(ERROR,
				(errcode(ERRCODE_FC_AUDIT_APPEND_ONLY),
				 errmsg("%s is append-only", RelationGetRelationName(td->tg_relation)),
				 errhint("Records are appended by fincore.audit_seal(); a payload is erased by fincore.audit_redact(), which keeps its hash and chains the redaction.")));
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		return PointerGetDatum(td->tg_newtuple);
	return PointerGetDatum(td->tg_trigtuple);
}

/* ---- sealing ---- */

/* The Merkle tree's compact range: the roots of its perfect subtrees, largest first. */
typedef struct Frontier
{
	int			n;
	uint8		h[64][AUDIT_HASH_LEN];
} Frontier;

static void
frontier_load(Frontier *f, Datum d, bool isnull, int64 leaves)
{
	f->n = 0;
	if (!isnull)
	{
		bytea	   *b = DatumGetByteaPP(d);
		int			n = VARSIZE_ANY_EXHDR(b) / AUDIT_HASH_LEN;

		if (n > 64 || n * AUDIT_HASH_LEN != (int) VARSIZE_ANY_EXHDR(b) || n != pg_popcount64((uint64) leaves))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("audit: the head's compact range does not match its %lld records", (long long) leaves),
					 errhint("The head was altered: fincore.audit_verify() names the first bad record.")));
		memcpy(f->h, VARDATA_ANY(b), n * AUDIT_HASH_LEN);
		f->n = n;
	}
	else if (leaves != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("audit: the head of %lld records has no compact range", (long long) leaves)));
}

/* Add leaf number leaves (0-based) to the compact range. */
static void
frontier_push(AuditHasher *h, Frontier *f, const uint8 *record_hash, int64 leaves)
{
	audit_merkle_leaf(h, record_hash, f->h[f->n++]);
	for (uint64 v = (uint64) leaves; v & 1; v >>= 1)
	{
		audit_merkle_node(h, f->h[f->n - 2], f->h[f->n - 1], f->h[f->n - 2]);
		f->n--;
	}
}

static void
frontier_root(AuditHasher *h, const Frontier *f, uint8 *out)
{
	if (f->n == 0)
	{
		audit_sha256(h, (const uint8 *) "", 0, out);
		return;
	}
	memcpy(out, f->h[f->n - 1], AUDIT_HASH_LEN);
	for (int i = f->n - 2; i >= 0; i--)
		audit_merkle_node(h, f->h[i], out, out);
}

static bytea *
frontier_bytea(const Frontier *f)
{
	bytea	   *b = palloc(VARHDRSZ + f->n * AUDIT_HASH_LEN);

	SET_VARSIZE(b, VARHDRSZ + f->n * AUDIT_HASH_LEN);
	memcpy(VARDATA(b), f->h, f->n * AUDIT_HASH_LEN);
	return b;
}

static inline Datum
tt_col(SPITupleTable *tt, uint64 row, int col, bool *isnull)
{
	return SPI_getbinval(tt->vals[row], tt->tupdesc, col, isnull);
}

/* A record's columns, as verify and proof read them (and seal, from at on). */
enum
{
	C_SEQ, C_AT, C_TXID, C_ROLE, C_SUB, C_ATENANT, C_TABLE, C_OP, C_KEY, C_PAYLOAD, C_PHASH, C_HASH, NCOLS
};
static const char *const record_columns[NCOLS] = {
	"seq", "at", "txid", "actor_role", "actor_sub", "actor_tenant", "table_name", "op", "key", "payload",
	"payload_hash", "hash"
};

/*
 * A record's fields from the values of its columns, v[C_AT] to v[C_KEY];
 * false if one that may not be NULL is (a tampered row).
 */
static bool
record_from_values(AuditRecord *r, const Datum *v, const bool *n)
{
	text	   *t;

	if (n[C_AT] || n[C_TXID] || n[C_ROLE] || n[C_TABLE] || n[C_OP] || n[C_KEY])
		return false;
	r->at = DatumGetTimestampTz(v[C_AT]);
	r->txid = U64FromFullTransactionId(DatumGetFullTransactionId(v[C_TXID]));
	t = DatumGetTextPP(v[C_ROLE]);
	r->actor_role = VARDATA_ANY(t);
	r->actor_role_len = VARSIZE_ANY_EXHDR(t);
	r->actor_sub = n[C_SUB] ? NULL : DatumGetCString(DirectFunctionCall1(uuid_out, v[C_SUB]));
	r->actor_sub_len = n[C_SUB] ? 0 : strlen(r->actor_sub);
	r->has_actor_tenant = !n[C_ATENANT];
	if (!n[C_ATENANT])
		r->actor_tenant = *DatumGetUUIDP(v[C_ATENANT]);
	t = DatumGetTextPP(v[C_TABLE]);
	r->table_name = VARDATA_ANY(t);
	r->table_name_len = VARSIZE_ANY_EXHDR(t);
	r->op = DatumGetChar(v[C_OP]);
	t = DatumGetTextPP(v[C_KEY]);
	r->key = VARDATA_ANY(t);
	r->key_len = VARSIZE_ANY_EXHDR(t);
	return true;
}

/* The hash of a payload: SHA-256 of its text, jsonb's output (NULL, a TRUNCATE's: of nothing). */
static void
payload_hash(AuditHasher *h, Datum d, bool isnull, uint8 *out)
{
	if (isnull)
		audit_sha256(h, (const uint8 *) "", 0, out);
	else
	{
		text	   *t = DatumGetTextPP(d);

		audit_sha256(h, (const uint8 *) VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), out);
	}
}

#define PENDING_COLUMNS "p.at, p.txid, p.actor_role, p.actor_sub, p.actor_tenant, p.table_name, p.op, p.key"

/* Chain up to max of a tenant's committed pending records; returns how many. */
static int64
seal_tenant(AuditHasher *h, const pg_uuid_t *tenant, int max)
{
	static SPIPlanPtr pending_any = NULL,
				head_insert = NULL,
				head_lock = NULL,
				pending_read = NULL,
				pending_read_built = NULL,
				move = NULL,
				head_update = NULL;
	Oid			t1[1] = {UUIDOID};
	Oid			t2[2] = {UUIDOID, INT4OID};
	Oid			tmove[7] = {UUIDOID, XID8ARRAYOID, UUIDARRAYOID, INT8ARRAYOID, JSONARRAYOID, BYTEAARRAYOID,
	BYTEAARRAYOID};
	Oid			tup[4] = {UUIDOID, INT8OID, BYTEAOID, BYTEAOID};
	Datum		args[7];
	bool		isnull;
	int64		seq;
	uint8		prev[AUDIT_HASH_LEN];
	Frontier   *f = palloc(sizeof(Frontier));
	SPITupleTable *pend;
	uint64		n;
	bool	   *nulls;
	Datum	   *ids,
			   *txids,
			   *payloads,
			   *seqs,
			   *payload_hashes,
			   *hashes;

	audit_plan(&pending_any, "SELECT 1 FROM fincore.audit_pending p WHERE p.tenant_id OPERATOR(pg_catalog.=) $1 LIMIT 1",
			   1, t1);
	audit_plan(&head_insert, "INSERT INTO fincore.audit_heads (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", 1, t1);
	audit_plan(&head_lock, "SELECT h.seq, h.hash, h.frontier FROM fincore.audit_heads h"
			   " WHERE h.tenant_id OPERATOR(pg_catalog.=) $1 FOR UPDATE", 1, t1);
	/*
	 * A transfer's record names it: its payload is built from the row
	 * (ledger_events.c).  On Citus the writer built it: the correlated
	 * subquery would make this statement span shards.
	 */
	if (fincore_citus_preloaded())
		audit_plan(&pending_read_built, "SELECT p.id, " PENDING_COLUMNS ", CAST(p.payload AS pg_catalog.text)"
				   "  FROM fincore.audit_pending p WHERE p.tenant_id OPERATOR(pg_catalog.=) $1"
				   " ORDER BY p.txid, p.id LIMIT $2", 2, t2);
	else
		audit_plan(&pending_read, "SELECT p.id, " PENDING_COLUMNS ", CAST(CASE"
			   "  WHEN p.payload IS NULL AND p.op OPERATOR(pg_catalog.=) 'I'::\"char\""
			   "   AND p.table_name OPERATOR(pg_catalog.=) 'fincore.transfers'"
			   "  THEN (SELECT fincore._transfer_audit_payload(t) FROM fincore.transfers t"
			   "         WHERE t.tenant_id OPERATOR(pg_catalog.=) p.tenant_id"
			   "           AND t.id OPERATOR(pg_catalog.=) CAST(p.key AS pg_catalog.uuid))"
			   "  ELSE p.payload END AS pg_catalog.text)"
			   "  FROM fincore.audit_pending p WHERE p.tenant_id OPERATOR(pg_catalog.=) $1"
			   " ORDER BY p.txid, p.id LIMIT $2", 2, t2);
	/* The records move in one statement: out of audit_pending, into the log with their numbers and hashes. */
	audit_plan(&move,
			   "WITH u AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4),"
			   "                                    pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7))"
			   "                    AS u(txid, id, seq, payload, payload_hash, hash)),"
			   " moved AS (DELETE FROM fincore.audit_pending p USING u"
			   "            WHERE p.tenant_id OPERATOR(pg_catalog.=) $1 AND p.txid OPERATOR(pg_catalog.=) u.txid"
			   "              AND p.id OPERATOR(pg_catalog.=) u.id"
			   "        RETURNING u.seq, p.at, p.txid, p.actor_role, p.actor_sub, p.actor_tenant, p.table_name, p.op,"
			   "                  p.key, u.payload, u.payload_hash, u.hash)"
			   " INSERT INTO fincore.audit_log (tenant_id, seq, at, txid, actor_role, actor_sub, actor_tenant,"
			   "                                table_name, op, key, payload, payload_hash, hash)"
			   " SELECT $1, m.seq, m.at, m.txid, m.actor_role, m.actor_sub, m.actor_tenant, m.table_name, m.op, m.key,"
			   "        m.payload, m.payload_hash, m.hash FROM moved m", 7, tmove);
	audit_plan(&head_update, "UPDATE fincore.audit_heads h SET seq = $2, hash = $3, frontier = $4,"
			   " updated_at = pg_catalog.now() WHERE h.tenant_id OPERATOR(pg_catalog.=) $1", 4, tup);

	args[0] = UUIDPGetDatum(tenant);
	/*
	 * Nothing pending: no lock, no write (the maintenance step probes every
	 * chain each minute).  By the index: planned as a scan of the table, the
	 * probe of a chain with nothing pending read every other chain's pending
	 * records (7 s for 2.4 million).
	 */
	if (fincore_execute_indexed(pending_any, args, NULL, 1, INDEXED_NO_BITMAPS) != SPI_OK_SELECT)
		elog(ERROR, "audit: reading the pending records failed");
	if (SPI_processed == 0)
		return 0;
	if (SPI_execute_plan(head_insert, args, NULL, false, 0) < 0 ||
		SPI_execute_plan(head_lock, args, NULL, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "audit: locking the chain's head failed");
	seq = DatumGetInt64(spi_col(0, 1, &isnull));
	if (!hash_from_datum(spi_col(0, 2, &isnull), prev))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("audit: the head's hash is not 32 bytes"),
				 errhint("The head was altered: fincore.audit_verify() names the first bad record.")));
	{
		Datum		fd = spi_col(0, 3, &isnull);

		frontier_load(f, fd, isnull, seq);
	}

	args[1] = Int32GetDatum(max);
	/* By the index, and not compiled by JIT at every call (its LIMIT is a parameter). */
	if (fincore_execute_indexed(fincore_citus_preloaded() ? pending_read_built : pending_read, args, NULL, 0,
								INDEXED_NO_BITMAPS) != SPI_OK_SELECT)
		elog(ERROR, "audit: reading the pending records failed");
	pend = SPI_tuptable;
	n = SPI_processed;
	if (n == 0)
		return 0;
	ids = palloc(sizeof(Datum) * n);
	txids = palloc(sizeof(Datum) * n);
	payloads = palloc(sizeof(Datum) * n);
	nulls = palloc(sizeof(bool) * n);
	seqs = palloc(sizeof(Datum) * n);
	payload_hashes = palloc(sizeof(Datum) * n);
	hashes = palloc(sizeof(Datum) * n);
	for (uint64 i = 0; i < n; i++)
	{
		AuditRecord r;
		uint8		hash[AUDIT_HASH_LEN];
		Datum		v[11];
		bool		vn[11];

		heap_deform_tuple(pend->vals[i], pend->tupdesc, v, vn);
		ids[i] = v[0];
		txids[i] = v[C_TXID];
		/* The payload's text goes to the log as it was hashed: json, byte for byte. */
		payloads[i] = v[C_PAYLOAD];
		nulls[i] = vn[C_PAYLOAD];
		/* v[1] on are at, txid, ..., key, the payload's text: as C_AT on. */
		(void) record_from_values(&r, v, vn);
		r.tenant = *tenant;
		r.seq = ++seq;
		payload_hash(h, v[C_PAYLOAD], vn[C_PAYLOAD], r.payload_hash);
		audit_record_hash(h, prev, &r, hash);
		frontier_push(h, f, hash, seq - 1);
		seqs[i] = Int64GetDatum(seq);
		payload_hashes[i] = PointerGetDatum(hash_bytea(r.payload_hash));
		hashes[i] = PointerGetDatum(hash_bytea(hash));
		memcpy(prev, hash, AUDIT_HASH_LEN);
	}
	{
		int			dims[1] = {(int) n};
		int			lbs[1] = {1};

		args[1] = PointerGetDatum(construct_array(txids, n, XID8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[2] = PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		args[3] = PointerGetDatum(construct_array(seqs, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[4] = PointerGetDatum(construct_md_array(payloads, nulls, 1, dims, lbs, JSONOID, -1, false, TYPALIGN_INT));
		args[5] = PointerGetDatum(construct_array(payload_hashes, n, BYTEAOID, -1, false, TYPALIGN_INT));
		args[6] = PointerGetDatum(construct_array(hashes, n, BYTEAOID, -1, false, TYPALIGN_INT));
	}
	if (SPI_execute_plan(move, args, NULL, false, 0) != SPI_OK_INSERT || SPI_processed != n)
		elog(ERROR, "audit: moving " UINT64_FORMAT " records to the log failed", n);
	args[1] = Int64GetDatum(seq);
	args[2] = PointerGetDatum(hash_bytea(prev));
	args[3] = PointerGetDatum(frontier_bytea(f));
	if (SPI_execute_plan(head_update, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "audit: moving the chain's head failed");
	return (int64) n;
}

/*
 * fincore._audit_seal(tenant uuid, max_records integer) RETURNS bigint: chain
 * the tenant's committed pending records (the SQL wrapper fincore.audit_seal
 * loops over tenants).
 */
PG_FUNCTION_INFO_V1(fincore_audit_seal);
Datum
fincore_audit_seal(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	int32		max = PG_GETARG_INT32(1);
	AuditHasher h;
	volatile int64 n = 0;

	if (max < 1)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_AUDIT_RANGE),
				 errmsg("max_records must be at least 1, not %d", max)));
	fincore_spi_connect();
	audit_hasher_init(&h);
	audit_writing = true;
	PG_TRY();
	{
		n = seal_tenant(&h, tenant, max);
	}
	PG_FINALLY();
	{
		audit_writing = false;
	}
	PG_END_TRY();
	audit_hasher_free(&h);
	SPI_finish();
	PG_RETURN_INT64(n);
}

/* ---- verifying ---- */

/*
 * A chain's records in sequence order, as values in record_columns' order:
 * read straight from the primary key index and the heap (no executor, no
 * copies: verify reads millions), or through a cursor where the log is not a
 * local heap table (Citus: its rows are in shards on other nodes).
 */
typedef struct RecordScan
{
	SPIPlanPtr	plan;			/* the cursor's statement (records_read) */
	bool		direct;
	Relation	rel;
	Relation	idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	AttrNumber	att[NCOLS];
	MemoryContext rowcxt;		/* what a record's check allocates: reset at each record */
	Portal		portal;
	SPITupleTable *tt;
	uint64		pos;
} RecordScan;

static void
scan_begin(RecordScan *rs, pg_uuid_t *tenant, int64 from, int64 to)
{
	Oid			pk;

	rs->direct = false;
	rs->tt = NULL;
	rs->pos = 0;
	rs->rowcxt = AllocSetContextCreate(CurrentMemoryContext, "audit verify row", ALLOCSET_DEFAULT_SIZES);
	rs->rel = table_open(fincore_table_oid("audit_log"), AccessShareLock);
	pk = RelationGetPrimaryKeyIndex(rs->rel);
	if (!fincore_citus_preloaded() && rs->rel->rd_rel->relkind == RELKIND_RELATION &&
		rs->rel->rd_tableam == GetHeapamTableAmRoutine() && OidIsValid(pk))
	{
		TupleDesc	desc = RelationGetDescr(rs->rel);
		int			found = 0;

		for (int c = 0; c < NCOLS; c++)
		{
			rs->att[c] = InvalidAttrNumber;
			for (int a = 0; a < desc->natts; a++)
				if (!TupleDescAttr(desc, a)->attisdropped &&
					strcmp(NameStr(TupleDescAttr(desc, a)->attname), record_columns[c]) == 0)
				{
					rs->att[c] = a + 1;
					found++;
				}
		}
		rs->idx = index_open(pk, AccessShareLock);
		rs->direct = found == NCOLS && rs->idx->rd_index->indnkeyatts == 2 &&
			rs->idx->rd_index->indkey.values[1] == rs->att[C_SEQ];
		if (!rs->direct)
			index_close(rs->idx, AccessShareLock);
	}
	if (rs->direct)
	{
		ScanKeyData keys[3];

		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(tenant));
		ScanKeyInit(&keys[1], 2, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(from));
		ScanKeyInit(&keys[2], 2, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(to));
		rs->snapshot = RegisterSnapshot(GetTransactionSnapshot());
		rs->scan = index_beginscan(rs->rel, rs->idx, rs->snapshot, 3, 0);
		index_rescan(rs->scan, keys, 3, NULL, 0);
		rs->slot = table_slot_create(rs->rel, NULL);
	}
	else
	{
		Datum		args[3] = {UUIDPGetDatum(tenant), Int64GetDatum(from), Int64GetDatum(to)};
		int			nest;

		table_close(rs->rel, AccessShareLock);
		/* The plan (made at the first open, kept) walks the primary key: no sort, no bitmap. */
		nest = fincore_indexed_plans_only(INDEXED_NO_BITMAPS);
		rs->portal = SPI_cursor_open(NULL, rs->plan, args, NULL, true);
		AtEOXact_GUC(true, nest);
	}
}

/* The next record's values (valid until the next call); false at the end. */
static bool
scan_next(RecordScan *rs, Datum *v, bool *n)
{
	MemoryContextReset(rs->rowcxt);
	if (rs->direct)
	{
		if (!index_getnext_slot(rs->scan, ForwardScanDirection, rs->slot))
			return false;
		slot_getallattrs(rs->slot);
		for (int c = 0; c < NCOLS; c++)
		{
			v[c] = rs->slot->tts_values[rs->att[c] - 1];
			n[c] = rs->slot->tts_isnull[rs->att[c] - 1];
		}
		return true;
	}
	if (rs->tt == NULL || rs->pos >= rs->tt->numvals)
	{
		if (rs->tt != NULL)
			SPI_freetuptable(rs->tt);
		SPI_cursor_fetch(rs->portal, true, 10000);
		rs->tt = SPI_tuptable;
		rs->pos = 0;
		if (SPI_processed == 0)
			return false;
	}
	heap_deform_tuple(rs->tt->vals[rs->pos], rs->tt->tupdesc, v, n);
	rs->pos++;
	return true;
}

static void
scan_end(RecordScan *rs)
{
	if (rs->direct)
	{
		ExecDropSingleTupleTableSlot(rs->slot);
		index_endscan(rs->scan);
		UnregisterSnapshot(rs->snapshot);
		index_close(rs->idx, AccessShareLock);
		table_close(rs->rel, AccessShareLock);
	}
	else
		SPI_cursor_close(rs->portal);
	MemoryContextDelete(rs->rowcxt);
}


typedef struct VerifyResult
{
	bool		ok;
	int64		checked;
	int64		bad_seq;
	const char *reason;
} VerifyResult;

static void
verify_bad(VerifyResult *v, int64 seq, const char *reason)
{
	if (v->ok)
	{
		v->ok = false;
		v->bad_seq = seq;
		v->reason = reason;
	}
}

/* Append to a list of sequence numbers kept in cxt, growing it in powers of two from 16. */
static void
seq_list_add(int64 **list, int *n, int64 seq, MemoryContext cxt)
{
	if (*n >= 16 && (*n & (*n - 1)) == 0)
	{
		int64	   *bigger = MemoryContextAlloc(cxt, sizeof(int64) * 2 * *n);

		memcpy(bigger, *list, sizeof(int64) * *n);
		*list = bigger;
	}
	(*list)[(*n)++] = seq;
}

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a,
				y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

/*
 * fincore._audit_verify(tenant, from_seq, to_seq, expected_hash) RETURNS
 * (ok, checked, first_bad_seq, reason): recompute the chain from from_seq to
 * to_seq (NULLs: from the first record kept to the head), streaming.
 */
PG_FUNCTION_INFO_V1(fincore_audit_verify);
Datum
fincore_audit_verify(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	static SPIPlanPtr head_read = NULL,
				prev_read = NULL,
				redaction_after = NULL,
				records_read = NULL,
				beyond_read = NULL;
	Oid			t1[1] = {UUIDOID};
	Oid			t2[2] = {UUIDOID, INT8OID};
	Oid			t3[3] = {UUIDOID, INT8OID, INT8OID};
	Datum		args[3];
	bool		isnull;
	VerifyResult v = {true, 0, 0, NULL};
	AuditHasher h;
	int64		head_seq = 0,
				first_seq = 1,
				from,
				to,
				expect;
	uint8		head_hash[AUDIT_HASH_LEN],
				prev[AUDIT_HASH_LEN];
	bool		have_head;
	int64	   *redacted;
	int			nredacted = 0;
	int64	   *erased;
	int			nerased = 0;
	Oid			tr[3] = {UUIDOID, INT8OID, TEXTOID};
	RecordScan	rs;
	MemoryContext oldcxt;
	Datum		cv[NCOLS];
	bool		cn[NCOLS];
	TupleDesc	rdesc;
	Datum		values[4];
	bool		rnulls[4] = {false, false, true, true};

	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "audit_verify: a composite result is expected");
	rdesc = BlessTupleDesc(rdesc);
	fincore_spi_connect();
	audit_hasher_init(&h);
	audit_plan(&head_read, "SELECT h.seq, h.hash, h.first_seq, h.base_hash FROM fincore.audit_heads h"
			   " WHERE h.tenant_id OPERATOR(pg_catalog.=) $1", 1, t1);
	audit_plan(&prev_read, "SELECT l.hash FROM fincore.audit_log l WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
			   " AND l.seq OPERATOR(pg_catalog.=) $2", 2, t2);
	audit_plan(&redaction_after, "SELECT 1 FROM fincore.audit_log l WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
			   " AND l.seq OPERATOR(pg_catalog.>) $2 AND l.op OPERATOR(pg_catalog.=) 'R'::\"char\""
			   " AND l.key OPERATOR(pg_catalog.=) $3", 3, tr);
	audit_plan(&records_read, "SELECT l.seq, l.at, l.txid, l.actor_role, l.actor_sub, l.actor_tenant, l.table_name,"
			   " l.op, l.key, l.payload, l.payload_hash, l.hash FROM fincore.audit_log l"
			   " WHERE l.tenant_id OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.>=) $2"
			   " AND l.seq OPERATOR(pg_catalog.<=) $3 ORDER BY l.seq", 3, t3);
	audit_plan(&beyond_read, "SELECT l.seq FROM fincore.audit_log l WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
			   " AND l.seq OPERATOR(pg_catalog.>) $2 ORDER BY l.seq LIMIT 1", 2, t2);

	args[0] = UUIDPGetDatum(tenant);
	if (SPI_execute_plan(head_read, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "audit: reading the chain's head failed");
	have_head = SPI_processed == 1;
	memcpy(prev, zero_hash, AUDIT_HASH_LEN);
	memcpy(head_hash, zero_hash, AUDIT_HASH_LEN);
	if (have_head)
	{
		Datum		d;

		head_seq = DatumGetInt64(spi_col(0, 1, &isnull));
		if (!hash_from_datum(spi_col(0, 2, &isnull), head_hash))
			verify_bad(&v, head_seq, "the head's hash is not 32 bytes");
		first_seq = DatumGetInt64(spi_col(0, 3, &isnull));
		d = spi_col(0, 4, &isnull);
		if (!isnull && !hash_from_datum(d, prev))
			verify_bad(&v, first_seq, "the hash the kept records start from is not 32 bytes");
	}
	from = PG_ARGISNULL(1) ? first_seq : PG_GETARG_INT64(1);
	to = PG_ARGISNULL(2) ? head_seq : PG_GETARG_INT64(2);
	/* A range past the head is verified too: its records are missing, unless forged. */
	if (from < first_seq || to < from - 1)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_AUDIT_RANGE),
				 errmsg("cannot verify records " INT64_FORMAT " to " INT64_FORMAT " of a chain that keeps "
						INT64_FORMAT " to " INT64_FORMAT, from, to, first_seq, head_seq),
				 errhint("From the first record kept (retention) to the head, at most.")));
	if (!PG_ARGISNULL(3) && VARSIZE_ANY_EXHDR(PG_GETARG_BYTEA_PP(3)) != AUDIT_HASH_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_AUDIT_RANGE),
				 errmsg("an expected digest is a SHA-256 hash of 32 bytes, not %d",
						(int) VARSIZE_ANY_EXHDR(PG_GETARG_BYTEA_PP(3)))));
	if (from > first_seq)
	{
		args[1] = Int64GetDatum(from - 1);
		if (SPI_execute_plan(prev_read, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "audit: reading a record failed");
		if (SPI_processed != 1)
			verify_bad(&v, from - 1, "record missing");
		else if (!hash_from_datum(spi_col(0, 1, &isnull), prev))
			verify_bad(&v, from - 1, "its hash is not 32 bytes");
	}

	/* Erased payloads, and the records that redacted them, as the scan meets them. */
	erased = palloc(sizeof(int64) * 16);
	redacted = palloc(sizeof(int64) * 16);

	expect = from;
	rs.plan = records_read;
	scan_begin(&rs, tenant, from, to);
	oldcxt = MemoryContextSwitchTo(rs.rowcxt);
	while (v.ok && scan_next(&rs, cv, cn))
	{
		AuditRecord r;
		uint8		stored[AUDIT_HASH_LEN],
					hash[AUDIT_HASH_LEN],
					stored_payload[AUDIT_HASH_LEN];

		CHECK_FOR_INTERRUPTS();
		r.seq = cn[C_SEQ] ? 0 : DatumGetInt64(cv[C_SEQ]);
		if (r.seq != expect)
		{
			verify_bad(&v, expect, "record missing");
			break;
		}
		r.tenant = *tenant;
		if (!record_from_values(&r, cv, cn))
		{
			verify_bad(&v, r.seq, "a field that is never empty is NULL");
			break;
		}
		if (cn[C_PHASH] || !hash_from_datum(cv[C_PHASH], stored_payload))
		{
			verify_bad(&v, r.seq, "its payload hash is not 32 bytes");
			break;
		}
		payload_hash(&h, cv[C_PAYLOAD], cn[C_PAYLOAD], r.payload_hash);
		if (cn[C_PAYLOAD])
		{
			/* Erased: a redaction record must name it (checked after the scan). */
			if (r.op != AUDIT_OP_TRUNCATE)
				seq_list_add(&erased, &nerased, r.seq, oldcxt);
			memcpy(r.payload_hash, stored_payload, AUDIT_HASH_LEN);
		}
		else if (memcmp(r.payload_hash, stored_payload, AUDIT_HASH_LEN) != 0)
		{
			verify_bad(&v, r.seq, "its payload does not match its payload hash");
			break;
		}
		audit_record_hash(&h, prev, &r, hash);
		if (cn[C_HASH] || !hash_from_datum(cv[C_HASH], stored) || memcmp(hash, stored, AUDIT_HASH_LEN) != 0)
		{
			verify_bad(&v, r.seq, "its hash does not match the record and its predecessor's hash");
			break;
		}
		if (r.op == AUDIT_OP_REDACT)
		{
			char	   *k = pnstrdup(r.key, r.key_len);
			char	   *end;
			long long	erased_seq = strtoll(k, &end, 10);

			if (*end == '\0')
				seq_list_add(&redacted, &nredacted, erased_seq, oldcxt);
		}
		memcpy(prev, hash, AUDIT_HASH_LEN);
		v.checked++;
		expect++;
	}
	MemoryContextSwitchTo(oldcxt);
	scan_end(&rs);
	/* Each erased payload: its redaction in the range, or later in the chain. */
	qsort(redacted, nredacted, sizeof(int64), int64_cmp);
	for (int i = 0; i < nerased && (v.ok || erased[i] < v.bad_seq); i++)
	{
		if (bsearch(&erased[i], redacted, nredacted, sizeof(int64), int64_cmp) != NULL)
			continue;
		args[1] = Int64GetDatum(to);
		args[2] = CStringGetTextDatum(psprintf(INT64_FORMAT, erased[i]));
		if (SPI_execute_plan(redaction_after, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "audit: reading the redactions failed");
		if (SPI_processed == 0)
		{
			v.ok = true;		/* an earlier bad record than the one the scan stopped at */
			verify_bad(&v, erased[i], "its payload was removed without a redaction record");
		}
	}
	if (v.ok && expect <= to)
		verify_bad(&v, expect, "record missing");
	if (v.ok && !have_head && to > 0)
		verify_bad(&v, 1, "the chain has no head");
	if (v.ok && to == head_seq && memcmp(prev, head_hash, AUDIT_HASH_LEN) != 0)
		verify_bad(&v, head_seq, "the head's hash does not match the last record");
	if (v.ok && PG_ARGISNULL(2))
	{
		args[1] = Int64GetDatum(head_seq);
		if (SPI_execute_plan(beyond_read, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "audit: reading the log failed");
		if (SPI_processed > 0)
			verify_bad(&v, DatumGetInt64(spi_col(0, 1, &isnull)), "a record beyond the head");
	}
	if (v.ok && !PG_ARGISNULL(3) && memcmp(prev, VARDATA_ANY(PG_GETARG_BYTEA_PP(3)), AUDIT_HASH_LEN) != 0)
		verify_bad(&v, to, "the chain does not match the expected digest here");
	audit_hasher_free(&h);
	SPI_finish();

	values[0] = BoolGetDatum(v.ok);
	values[1] = Int64GetDatum(v.checked);
	if (!v.ok)
	{
		values[2] = Int64GetDatum(v.bad_seq);
		values[3] = CStringGetTextDatum(v.reason);
		rnulls[2] = rnulls[3] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(rdesc, values, rnulls)));
}

/* ---- the Merkle tree: roots and proofs ---- */

/* fincore._audit_merkle_root(frontier bytea, records bigint) RETURNS bytea: the root from a head's compact range. */
PG_FUNCTION_INFO_V1(fincore_audit_merkle_root);
Datum
fincore_audit_merkle_root(PG_FUNCTION_ARGS)
{
	Frontier   *f = palloc(sizeof(Frontier));
	AuditHasher h;
	uint8		root[AUDIT_HASH_LEN];

	frontier_load(f, PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0), PG_ARGISNULL(0), PG_GETARG_INT64(1));
	audit_hasher_init(&h);
	frontier_root(&h, f, root);
	audit_hasher_free(&h);
	PG_RETURN_BYTEA_P(hash_bytea(root));
}

/*
 * fincore._audit_proof(tenant, seq, tree_size) RETURNS jsonb: the inclusion
 * proof of record seq in the tree of the first tree_size records, with the
 * record's fields and its predecessor's hash, so that a checker recomputes
 * the record's hash, then the root (scripts/audit-check).
 */
PG_FUNCTION_INFO_V1(fincore_audit_proof);
Datum
fincore_audit_proof(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	int64		seq = PG_GETARG_INT64(1);
	int64		size = PG_GETARG_INT64(2);
	static SPIPlanPtr hashes_read = NULL,
				record_read = NULL,
				head_read = NULL;
	Oid			t1[1] = {UUIDOID};
	Oid			t2[2] = {UUIDOID, INT8OID};
	Oid			t3[3] = {UUIDOID, INT8OID, INT8OID};
	Datum		args[3];
	bool		isnull;
	uint8	   *leaves;
	int64		first_seq = 1;
	uint8		base_hash[AUDIT_HASH_LEN];
	Frontier   *base = palloc(sizeof(Frontier));
	MerkleLeaves L;
	uint8		path[64 * AUDIT_HASH_LEN],
				root[AUDIT_HASH_LEN],
				prev[AUDIT_HASH_LEN];
	int			npath = 0;
	AuditHasher h;
	AuditRecord r;
	Datum		cv[NCOLS];
	bool		cn[NCOLS];
	JsonbParseState *st = NULL;
	JsonbValue *res;

	if (seq < 1 || size < seq)
		ereport(ERROR,
				(errcode(ERRCODE_FC_AUDIT_RECORD_NOT_FOUND),
				 errmsg("record " INT64_FORMAT " is not in a tree of " INT64_FORMAT " records", seq, size),
				 errhint("A proof is against a checkpoint (fincore.audit_digest) taken after the record was sealed.")));
	fincore_spi_connect();
	audit_plan(&head_read, "SELECT h.first_seq, h.base_hash, h.base_frontier FROM fincore.audit_heads h"
			   " WHERE h.tenant_id OPERATOR(pg_catalog.=) $1", 1, t1);
	audit_plan(&hashes_read, "SELECT l.hash FROM fincore.audit_log l WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
			   " AND l.seq OPERATOR(pg_catalog.>=) $2 AND l.seq OPERATOR(pg_catalog.<=) $3 ORDER BY l.seq", 3, t3);
	audit_plan(&record_read, "SELECT l.seq, l.at, l.txid, l.actor_role, l.actor_sub, l.actor_tenant, l.table_name,"
			   " l.op, l.key, CAST(NULL AS pg_catalog.json), l.payload_hash, l.hash FROM fincore.audit_log l"
			   " WHERE l.tenant_id OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.=) $2", 2, t2);
	args[0] = UUIDPGetDatum(tenant);
	memcpy(base_hash, zero_hash, AUDIT_HASH_LEN);
	base->n = 0;
	if (SPI_execute_plan(head_read, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "audit: reading the chain's head failed");
	if (SPI_processed == 1)
	{
		Datum		d;

		first_seq = DatumGetInt64(spi_col(0, 1, &isnull));
		d = spi_col(0, 2, &isnull);
		if (!isnull)
			(void) hash_from_datum(d, base_hash);
		d = spi_col(0, 3, &isnull);
		frontier_load(base, d, isnull, first_seq - 1);
	}
	if (seq < first_seq)
		ereport(ERROR,
				(errcode(ERRCODE_FC_AUDIT_RECORD_NOT_FOUND),
				 errmsg("record " INT64_FORMAT " was dropped by retention (the chain keeps " INT64_FORMAT " on)",
						seq, first_seq)));
	args[1] = Int64GetDatum(first_seq);
	args[2] = Int64GetDatum(size);
	if (SPI_execute_plan(hashes_read, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "audit: reading the log failed");
	if ((int64) SPI_processed != size - first_seq + 1)
		ereport(ERROR,
				(errcode(ERRCODE_FC_AUDIT_RECORD_NOT_FOUND),
				 errmsg("the chain keeps " UINT64_FORMAT " of its records " INT64_FORMAT " to " INT64_FORMAT,
						SPI_processed, first_seq, size),
				 errhint("Records are missing: fincore.audit_verify() names the first.")));
	leaves = palloc((size - first_seq + 1) * AUDIT_HASH_LEN);
	for (int64 i = 0; i < size - first_seq + 1; i++)
		if (!hash_from_datum(spi_col(i, 1, &isnull), leaves + i * AUDIT_HASH_LEN))
			memset(leaves + i * AUDIT_HASH_LEN, 0, AUDIT_HASH_LEN);
	L.first = first_seq - 1;
	L.hashes = leaves;
	L.pieces = (const uint8 *) base->h;
	audit_hasher_init(&h);
	audit_merkle_path(&h, &L, size, seq - 1, path, &npath);
	audit_merkle_root(&h, &L, size, root);
	memcpy(prev, seq > first_seq ? leaves + (seq - first_seq - 1) * AUDIT_HASH_LEN : base_hash, AUDIT_HASH_LEN);

	args[1] = Int64GetDatum(seq);
	if (SPI_execute_plan(record_read, args, NULL, true, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "audit: reading record " INT64_FORMAT " failed", seq);
	heap_deform_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, cv, cn);
	if (!record_from_values(&r, cv, cn))
		memset(&r, 0, sizeof(r));

#define KEY(name_) do { JsonbValue k_ = {.type = jbvString,.val.string = {.len = strlen(name_),.val = (name_)}}; \
		(void) pushJsonbValue(&st, WJB_KEY, &k_); } while (0)
#define STR(s_, n_) do { JsonbValue v_ = {.type = jbvString,.val.string = {.len = (n_),.val = (char *) (s_)}}; \
		(void) pushJsonbValue(&st, WJB_VALUE, &v_); } while (0)
#define CSTR(s_) STR((s_), strlen(s_))
#define NUM(n_) do { JsonbValue v_ = {.type = jbvNumeric,.val.numeric = int64_to_numeric(n_)}; \
		(void) pushJsonbValue(&st, WJB_VALUE, &v_); } while (0)
#define NUL() do { JsonbValue v_ = {.type = jbvNull}; (void) pushJsonbValue(&st, WJB_VALUE, &v_); } while (0)

	(void) pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	KEY("version");
	NUM(1);
	KEY("tenant_id");
	CSTR(DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(tenant))));
	KEY("seq");
	NUM(seq);
	KEY("tree_size");
	NUM(size);
	KEY("record");
	(void) pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	KEY("at_unix_micros");
	NUM(r.at + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	KEY("txid");
	NUM((int64) r.txid);
	KEY("actor_role");
	STR(r.actor_role, r.actor_role_len);
	KEY("actor_sub");
	if (r.actor_sub)
		CSTR(r.actor_sub);
	else
		NUL();
	KEY("actor_tenant");
	if (r.has_actor_tenant)
		CSTR(DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&r.actor_tenant))));
	else
		NUL();
	KEY("table_name");
	STR(r.table_name, r.table_name_len);
	KEY("op");
	STR(&r.op, 1);
	KEY("key");
	STR(r.key, r.key_len);
	KEY("payload_hash");
	{
		uint8		ph[AUDIT_HASH_LEN];

		if (cn[C_PHASH] || !hash_from_datum(cv[C_PHASH], ph))
			memset(ph, 0, AUDIT_HASH_LEN);
		CSTR(hex_text(ph));
	}
	(void) pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	KEY("prev_hash");
	CSTR(hex_text(prev));
	KEY("record_hash");
	CSTR(hex_text(leaves + (seq - first_seq) * AUDIT_HASH_LEN));
	KEY("path");
	(void) pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < npath; i++)
	{
		char	   *hex = hex_text(path + i * AUDIT_HASH_LEN);
		JsonbValue	e = {.type = jbvString,.val.string = {.len = 2 * AUDIT_HASH_LEN,.val = hex}};

		(void) pushJsonbValue(&st, WJB_ELEM, &e);
	}
	(void) pushJsonbValue(&st, WJB_END_ARRAY, NULL);
	KEY("root");
	CSTR(hex_text(root));
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	audit_hasher_free(&h);
	{
		/* Built in SPI's memory, which SPI_finish frees: the result is copied out first. */
		Jsonb	   *built = JsonbValueToJsonb(res);
		Jsonb	   *result = SPI_palloc(VARSIZE(built));

		memcpy(result, built, VARSIZE(built));
		SPI_finish();
		PG_RETURN_JSONB_P(result);
	}
}

/* ---- redaction and retention ---- */

/*
 * fincore._audit_erase_payload(tenant, seq) RETURNS boolean: a record's
 * payload removed, its payload hash kept (audit_redact chains the
 * redaction).  False if the record has none left.
 */
PG_FUNCTION_INFO_V1(fincore_audit_erase_payload);
Datum
fincore_audit_erase_payload(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr erase = NULL;
	Oid			t2[2] = {UUIDOID, INT8OID};
	Datum		args[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
	volatile uint64 n = 0;

	fincore_spi_connect();
	audit_plan(&erase, "UPDATE fincore.audit_log l SET payload = NULL WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
			   " AND l.seq OPERATOR(pg_catalog.=) $2 AND l.payload IS NOT NULL", 2, t2);
	audit_writing = true;
	PG_TRY();
	{
		if (SPI_execute_plan(erase, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "audit: erasing a payload failed");
		n = SPI_processed;
	}
	PG_FINALLY();
	{
		audit_writing = false;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_BOOL(n == 1);
}

/*
 * fincore._audit_drop_before(tenant, cut) RETURNS bigint: retention drops
 * the records before cut (the caller checked that a checkpoint was taken at
 * cut - 1 or later).  The head keeps what the kept records need: the hash
 * they chain from, and the compact range of the tree of the records dropped,
 * for proofs of the kept ones.
 */
PG_FUNCTION_INFO_V1(fincore_audit_drop_before);
Datum
fincore_audit_drop_before(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	int64		cut = PG_GETARG_INT64(1);
	static SPIPlanPtr head_lock = NULL,
				hashes_read = NULL,
				head_update = NULL,
				drop = NULL;
	Oid			t1[1] = {UUIDOID};
	Oid			t2[2] = {UUIDOID, INT8OID};
	Oid			t3[3] = {UUIDOID, INT8OID, INT8OID};
	Oid			tup[4] = {UUIDOID, INT8OID, BYTEAOID, BYTEAOID};
	Datum		args[4];
	bool		isnull;
	int64		first_seq;
	Frontier   *f = palloc(sizeof(Frontier));
	uint8		last[AUDIT_HASH_LEN];
	AuditHasher h;
	volatile uint64 n = 0;

	fincore_spi_connect();
	audit_plan(&head_lock, "SELECT h.first_seq, h.base_frontier FROM fincore.audit_heads h"
			   " WHERE h.tenant_id OPERATOR(pg_catalog.=) $1 FOR UPDATE", 1, t1);
	audit_plan(&hashes_read, "SELECT l.hash FROM fincore.audit_log l WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
			   " AND l.seq OPERATOR(pg_catalog.>=) $2 AND l.seq OPERATOR(pg_catalog.<) $3 ORDER BY l.seq", 3, t3);
	audit_plan(&head_update, "UPDATE fincore.audit_heads h SET first_seq = $2, base_hash = $3, base_frontier = $4"
			   " WHERE h.tenant_id OPERATOR(pg_catalog.=) $1", 4, tup);
	audit_plan(&drop, "DELETE FROM fincore.audit_log l WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
			   " AND l.seq OPERATOR(pg_catalog.<) $2", 2, t2);
	args[0] = UUIDPGetDatum(tenant);
	if (SPI_execute_plan(head_lock, args, NULL, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR, (errcode(ERRCODE_FC_INVALID_AUDIT_RANGE), errmsg("the chain has no head")));
	first_seq = DatumGetInt64(spi_col(0, 1, &isnull));
	{
		Datum		d = spi_col(0, 2, &isnull);

		frontier_load(f, d, isnull, first_seq - 1);
	}
	if (cut <= first_seq)
	{
		SPI_finish();
		PG_RETURN_INT64(0);
	}
	/* The compact range grows from the last cut's by the records dropped now, in order. */
	args[1] = Int64GetDatum(first_seq);
	args[2] = Int64GetDatum(cut);
	if (SPI_execute_plan(hashes_read, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "audit: reading the log failed");
	if ((int64) SPI_processed != cut - first_seq)
		ereport(ERROR,
				(errcode(ERRCODE_FC_AUDIT_RECORD_NOT_FOUND),
				 errmsg("records " INT64_FORMAT " to " INT64_FORMAT " are not all there", first_seq, cut - 1),
				 errhint("Verify the chain first (fincore.audit_verify); retention keeps it verifiable, not whole again.")));
	audit_hasher_init(&h);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		if (!hash_from_datum(spi_col(i, 1, &isnull), last))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("record " INT64_FORMAT "'s hash is not 32 bytes", first_seq + (int64) i)));
		frontier_push(&h, f, last, first_seq - 1 + (int64) i);
	}
	audit_hasher_free(&h);
	audit_writing = true;
	PG_TRY();
	{
		args[1] = Int64GetDatum(cut);
		args[2] = PointerGetDatum(hash_bytea(last));
		args[3] = PointerGetDatum(frontier_bytea(f));
		if (SPI_execute_plan(head_update, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "audit: moving the chain's start failed");
		if (SPI_execute_plan(drop, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "audit: dropping records failed");
		n = SPI_processed;
	}
	PG_FINALLY();
	{
		audit_writing = false;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}

/* ---- the encoding, for tests and the documentation ---- */

/*
 * fincore.audit_record_hash(prev, tenant, seq, at, txid, actor_role,
 * actor_sub, actor_tenant, table_name, op, key, payload_hash) RETURNS bytea.
 */
PG_FUNCTION_INFO_V1(fincore_audit_record_hash);
Datum
fincore_audit_record_hash(PG_FUNCTION_ARGS)
{
	AuditRecord r;
	uint8		prev[AUDIT_HASH_LEN],
				out[AUDIT_HASH_LEN];
	AuditHasher h;
	text	   *t;
	char	   *op;

	for (int i = 0; i < 12; i++)
		if (PG_ARGISNULL(i) && i != 6 && i != 7)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_AUDIT_RANGE),
					 errmsg("audit_record_hash: argument %d is NULL", i + 1),
					 errhint("Only actor_sub and actor_tenant may be NULL.")));
	if (VARSIZE_ANY_EXHDR(PG_GETARG_BYTEA_PP(0)) != AUDIT_HASH_LEN ||
		VARSIZE_ANY_EXHDR(PG_GETARG_BYTEA_PP(11)) != AUDIT_HASH_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_AUDIT_RANGE),
				 errmsg("a hash is 32 bytes")));
	memcpy(prev, VARDATA_ANY(PG_GETARG_BYTEA_PP(0)), AUDIT_HASH_LEN);
	r.tenant = *PG_GETARG_UUID_P(1);
	r.seq = PG_GETARG_INT64(2);
	r.at = PG_GETARG_TIMESTAMPTZ(3);
	r.txid = (uint64) PG_GETARG_INT64(4);
	t = PG_GETARG_TEXT_PP(5);
	r.actor_role = VARDATA_ANY(t);
	r.actor_role_len = VARSIZE_ANY_EXHDR(t);
	r.actor_sub = PG_ARGISNULL(6) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(6));
	r.actor_sub_len = r.actor_sub ? strlen(r.actor_sub) : 0;
	r.has_actor_tenant = !PG_ARGISNULL(7);
	if (r.has_actor_tenant)
		r.actor_tenant = *PG_GETARG_UUID_P(7);
	t = PG_GETARG_TEXT_PP(8);
	r.table_name = VARDATA_ANY(t);
	r.table_name_len = VARSIZE_ANY_EXHDR(t);
	op = text_to_cstring(PG_GETARG_TEXT_PP(9));
	if (strlen(op) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_AUDIT_RANGE),
				 errmsg("an operation is one letter: I, U, D, T or R, not \"%s\"", op)));
	r.op = op[0];
	t = PG_GETARG_TEXT_PP(10);
	r.key = VARDATA_ANY(t);
	r.key_len = VARSIZE_ANY_EXHDR(t);
	memcpy(r.payload_hash, VARDATA_ANY(PG_GETARG_BYTEA_PP(11)), AUDIT_HASH_LEN);
	audit_hasher_init(&h);
	audit_record_hash(&h, prev, &r, out);
	audit_hasher_free(&h);
	PG_RETURN_BYTEA_P(hash_bytea(out));
}
