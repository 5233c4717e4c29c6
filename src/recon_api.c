/*
 * recon_api.c — reconciliation's SQL-callable layer (recon.h): the parsers
 * an import runs (CSV text, or the staging table's rows, which camt.053 and
 * JSON imports fill too), and the matching run: it loads a source's
 * unmatched lines and ledger entries, runs the engine, and writes the
 * matches set-based.  sql/modules/recon.sql wraps both (fincore.recon_import,
 * fincore.recon_run) and keeps the configuration and the decisions.
 */
#include "recon.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "jsonb_build.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "owner_sql.h"
#include "port/pg_bswap.h"
#include "portability/instr_time.h"
#include "tenancy.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "uuidv7.h"

/* ---------------------------------------------------------------------------
 * Mappings
 * ---------------------------------------------------------------------------
 */

enum
{
	MK_DELIMITER, MK_HEADER, MK_DECIMAL, MK_DATE_FORMAT, MK_COLUMNS, MK_CREDIT_VALUES, MK_DEBIT_VALUES, MK_COUNT
};
static const char *const mapping_keys[MK_COUNT] = {
	"delimiter", "header", "decimal", "date_format", "columns", "credit_values", "debit_values"
};

static const char *const default_credit_values[] = {"C", "CR", "CRDT", "CREDIT", "+"};
static const char *const default_debit_values[] = {"D", "DR", "DBIT", "DEBIT", "-"};

static void bad_mapping(const char *what) pg_attribute_noreturn();

static void
bad_mapping(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_RECON_SOURCE),
			 errmsg("invalid statement mapping: %s", what),
			 errhint("See docs/reconciliation.md, \"Mappings\".")));
}

static char *
jb_cstring(const JsonbValue *v, const char *what)
{
	if (v->type != jbvString)
		bad_mapping(psprintf("%s must be a string, not %s", what, jb_value_text(v)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static int
indicator_values(const JsonbValue *v, const char **out, const char *what)
{
	JsonbIterator *it;
	JsonbValue	e;
	JsonbIteratorToken tok;
	int			n = 0;

	if (!jb_is_array(v))
		bad_mapping(psprintf("%s must be an array of strings", what));
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		if (tok == WJB_ELEM)
		{
			if (n == RECON_MAX_INDICATOR_VALUES)
				bad_mapping(psprintf("%s has more than %d values", what, RECON_MAX_INDICATOR_VALUES));
			out[n++] = jb_cstring(&e, what);
		}
	return n;
}

/* A source's mapping (jsonb) and currency (NULL: none) into m; ZFC01 naming what is wrong. */
static void
mapping_from_jsonb(Jsonb *j, text *currency, ReconMapping *m)
{
	JsonbValue	f[MK_COUNT];
	bool		has[MK_COUNT];

	memset(m, 0, sizeof(*m));
	m->delimiter = ',';
	m->header = true;
	m->decimal_sep = '.';
	m->date_format = RDF_ISO;
	for (int c = 0; c < RC_COUNT; c++)
		m->column_pos[c] = -1;
	if (!JB_ROOT_IS_OBJECT(j))
		bad_mapping("it must be a JSON object");
	jb_fields(&j->root, mapping_keys, MK_COUNT, f, has, "the statement mapping", ERRCODE_FC_INVALID_RECON_SOURCE);
	if (has[MK_DELIMITER])
	{
		char	   *d = jb_cstring(&f[MK_DELIMITER], "delimiter");

		if (strlen(d) != 1 || d[0] == '"' || d[0] == '\n' || d[0] == '\r')
			bad_mapping("delimiter must be one character other than a quote or a newline");
		m->delimiter = d[0];
	}
	if (has[MK_HEADER])
	{
		if (f[MK_HEADER].type != jbvBool)
			bad_mapping("header must be true or false");
		m->header = f[MK_HEADER].val.boolean;
	}
	if (has[MK_DECIMAL])
	{
		char	   *d = jb_cstring(&f[MK_DECIMAL], "decimal");

		if (strcmp(d, ".") != 0 && strcmp(d, ",") != 0)
			bad_mapping("decimal must be \".\" or \",\"");
		m->decimal_sep = d[0];
	}
	if (m->decimal_sep == m->delimiter)
		bad_mapping("the decimal separator cannot be the delimiter");
	if (has[MK_DATE_FORMAT])
	{
		char	   *d = jb_cstring(&f[MK_DATE_FORMAT], "date_format");
		int			i;

		for (i = 0; i < RDF_COUNT; i++)
			if (strcmp(d, recon_date_format_names[i]) == 0)
				break;
		if (i == RDF_COUNT)
			bad_mapping(psprintf("date_format \"%s\" is not one of YYYY-MM-DD, DD/MM/YYYY, MM/DD/YYYY, DD.MM.YYYY, YYYYMMDD", d));
		m->date_format = (ReconDateFormat) i;
	}
	if (has[MK_COLUMNS])
	{
		JsonbValue	cv[RC_COUNT];
		bool		chas[RC_COUNT];

		if (!jb_is_object(&f[MK_COLUMNS]))
			bad_mapping("columns must be an object of field: column name or position");
		jb_fields(f[MK_COLUMNS].val.binary.data, recon_column_names, RC_COUNT, cv, chas,
				  "the mapping's columns", ERRCODE_FC_INVALID_RECON_SOURCE);
		for (int c = 0; c < RC_COUNT; c++)
		{
			if (!chas[c])
				continue;
			if (cv[c].type == jbvString)
			{
				m->column_name[c] = jb_cstring(&cv[c], recon_column_names[c]);
				m->column_pos[c] = 0;
			}
			else if (cv[c].type == jbvNumeric)
			{
				char	   *digits = DatumGetCString(DirectFunctionCall1(numeric_out,
																		 NumericGetDatum(cv[c].val.numeric)));
				char	   *end;
				long		pos = strtol(digits, &end, 10);

				if (*end != '\0' || pos < 1 || pos > 1000)
					bad_mapping(psprintf("column %s: a position is 1 to 1000", recon_column_names[c]));
				m->column_pos[c] = (int) pos;
			}
			else
				bad_mapping(psprintf("column %s must be a column name or a position", recon_column_names[c]));
		}
	}
	else
	{
		/* by default the header names the fields */
		for (int c = 0; c < RC_COUNT; c++)
			m->column_pos[c] = -2;	/* resolved by name, if the header has it */
	}
	if (has[MK_CREDIT_VALUES])
		m->ncredit_values = indicator_values(&f[MK_CREDIT_VALUES], m->credit_values, "credit_values");
	else
	{
		m->ncredit_values = lengthof(default_credit_values);
		memcpy(m->credit_values, default_credit_values, sizeof(default_credit_values));
	}
	if (has[MK_DEBIT_VALUES])
		m->ndebit_values = indicator_values(&f[MK_DEBIT_VALUES], m->debit_values, "debit_values");
	else
	{
		m->ndebit_values = lengthof(default_debit_values);
		memcpy(m->debit_values, default_debit_values, sizeof(default_debit_values));
	}
	if (currency != NULL)
	{
		m->has_currency = true;
		m->currency = currency_pack_or_error(VARDATA_ANY(currency), VARSIZE_ANY_EXHDR(currency));
	}
}

/* fincore._recon_mapping_check(mapping jsonb, currency text): ZFC01 unless the mapping is valid. */
PG_FUNCTION_INFO_V1(fincore_recon_mapping_check);
Datum
fincore_recon_mapping_check(PG_FUNCTION_ARGS)
{
	ReconMapping m;

	if (PG_ARGISNULL(0))
		bad_mapping("it is NULL");
	mapping_from_jsonb(PG_GETARG_JSONB_P(0), PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1), &m);
	if (!m.header)
		for (int c = 0; c < RC_COUNT; c++)
			if (m.column_pos[c] == 0)
				bad_mapping(psprintf("column %s is named, but the statements have no header (give its position)",
									 recon_column_names[c]));
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------------
 * Parsed lines out
 * ---------------------------------------------------------------------------
 */

#define LINE_COLUMNS 11

/*
 * The parsed lines of an import, returned in id order: ids are the booking
 * day then a hash, so in id order the primary key's entries are appended
 * day by day instead of scattered over the index (a third of an import's
 * time on a million lines).
 */
typedef struct LineSink
{
	TupleDesc	desc;
	HeapTuple  *tuples;
	int64		n;
	int64		max;
	int64		next;			/* the next to return */
} LineSink;

/* In the SRF's multi-call memory. */
static LineSink *
sink_create(FunctionCallInfo fcinfo)
{
	LineSink   *sink = palloc0(sizeof(LineSink));

	if (get_call_result_type(fcinfo, NULL, &sink->desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "recon: the parser's result type is not a row type");
	sink->desc = BlessTupleDesc(sink->desc);
	sink->max = 1024;
	sink->tuples = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(HeapTuple) * sink->max);
	return sink;
}

/* Form a parsed line's tuple into sink (in its memory: cxt). */
static void
put_line(LineSink *sink, MemoryContext cxt, ReconLine *line)
{
	Datum		v[LINE_COLUMNS];
	bool		n[LINE_COLUMNS];
	char		code[CURRENCY_CODE_MAX_LEN + 1];
	static const int text_cols[] = {RC_REFERENCE, RC_BANK_REF, RC_EXTERNAL_ID, RC_ACCOUNT, RC_DESCRIPTION};
	MemoryContext old = MemoryContextSwitchTo(cxt);

	memset(n, 0, sizeof(n));
	v[0] = UUIDPGetDatum(&line->id);
	v[1] = Int64GetDatum(line->line_no);
	v[2] = DateADTGetDatum(line->booked_on);
	v[3] = DateADTGetDatum(line->value_on);
	n[3] = !line->has_value_on;
	v[4] = Int64GetDatum(line->amount);
	currency_unpack(line->currency, code);
	v[5] = CStringGetTextDatum(code);
	for (int i = 0; i < 5; i++)
	{
		int			c = text_cols[i];

		n[6 + i] = line->text[c] == NULL;
		if (line->text[c])
			v[6 + i] = PointerGetDatum(cstring_to_text_with_len(line->text[c], line->text_len[c]));
	}
	if (sink->n == sink->max)
	{
		sink->max *= 2;
		sink->tuples = repalloc_huge(sink->tuples, sizeof(HeapTuple) * sink->max);
	}
	sink->tuples[sink->n++] = heap_form_tuple(sink->desc, v, n);
	for (int i = 5; i < LINE_COLUMNS; i++)
		if (!n[i])
			pfree(DatumGetPointer(v[i]));
	MemoryContextSwitchTo(old);
}

static int
tuple_id_cmp(const void *a, const void *b)
{
	HeapTuple	x = *(HeapTuple const *) a;
	HeapTuple	y = *(HeapTuple const *) b;

	/* the id is the first attribute, never null, at the same offset in every tuple */
	return memcmp((char *) x->t_data + x->t_data->t_hoff, (char *) y->t_data + y->t_data->t_hoff, UUID_LEN);
}

/*
 * The parsers return their lines one per call (an SRF in a select list, which
 * the executor streams), all parsed and sorted at the first: a set-returning
 * function in FROM would copy the million lines into a tuple store first.
 */
static Datum
sink_next(FunctionCallInfo fcinfo)
{
	FuncCallContext *fc = SRF_PERCALL_SETUP();
	LineSink   *sink = fc->user_fctx;

	if (sink->next < sink->n)
		SRF_RETURN_NEXT(fc, HeapTupleGetDatum(sink->tuples[sink->next++]));
	SRF_RETURN_DONE(fc);
}

/* Resolve the mapping's column names against a header record. */
static void
resolve_header(ReconMapping *m, const ReconCsv *c)
{
	for (int col = 0; col < RC_COUNT; col++)
	{
		const char *want = m->column_pos[col] == -2 ? recon_column_names[col] : m->column_name[col];
		int			found = -1;

		if (m->column_pos[col] != 0 && m->column_pos[col] != -2)
			continue;
		for (int i = 0; i < c->nfields && found < 0; i++)
		{
			const char *h = c->field[i];
			int			len = c->len[i];

			while (len > 0 && (*h == ' ' || *h == '\t'))
				h++, len--;
			while (len > 0 && (h[len - 1] == ' ' || h[len - 1] == '\t'))
				len--;
			/* a UTF-8 byte order mark before the first name */
			if (i == 0 && len >= 3 && memcmp(h, "\xEF\xBB\xBF", 3) == 0)
				h += 3, len -= 3;
			if ((int) strlen(want) == len && pg_strncasecmp(h, want, len) == 0)
				found = i + 1;
		}
		if (found < 0 && m->column_pos[col] == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
					 errmsg("line " INT64_FORMAT ": the header has no column \"%s\" (for %s)",
							c->record_line, want, recon_column_names[col])));
		m->column_pos[col] = found;
	}
}

/* Parse a CSV statement into sink (ZFC03 for the first malformed line). */
static void
parse_csv(LineSink *sink, MemoryContext multi, text *data, text *source, Jsonb *mapping, text *currency)
{
	ReconMapping m;
	ReconCsv	csv;
	ReconHashState *hs;
	MemoryContext per_line,
				old;

	mapping_from_jsonb(mapping, currency, &m);
	recon_csv_init(&csv, VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data), m.delimiter);
	hs = recon_hash_begin(VARDATA_ANY(source), VARSIZE_ANY_EXHDR(source));
	if (m.header)
	{
		if (recon_csv_next(&csv))
			resolve_header(&m, &csv);
	}
	else
		for (int c = 0; c < RC_COUNT; c++)
			if (m.column_pos[c] == -2)
				m.column_pos[c] = -1;

	per_line = AllocSetContextCreate(CurrentMemoryContext, "recon line", ALLOCSET_SMALL_SIZES);
	while (recon_csv_next(&csv))
	{
		ReconRawLine raw;
		ReconLine	line;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(per_line);
		memset(&raw, 0, sizeof(raw));
		raw.line_no = csv.record_line;
		for (int c = 0; c < RC_COUNT; c++)
		{
			int			pos = m.column_pos[c];

			if (pos <= 0)
				continue;
			if (pos > csv.nfields)
				ereport(ERROR,
						(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
						 errmsg("line " INT64_FORMAT ": %d fields, and %s is field %d",
								csv.record_line, csv.nfields, recon_column_names[c], pos)));
			raw.field[c] = csv.field[pos - 1];
			raw.len[c] = csv.len[pos - 1];
		}
		recon_parse_line(&m, &raw, &line);
		recon_hash_line(hs, &line);
		MemoryContextSwitchTo(old);
		put_line(sink, multi, &line);
		MemoryContextReset(per_line);
	}
	MemoryContextDelete(per_line);
	recon_hash_end(hs);
}

/* Parse the staged lines of a source's batch into sink, in line_no order. */
static void
parse_staging(LineSink *sink, MemoryContext multi, Datum tenant, text *source, text *batch, Jsonb *mapping,
			  text *currency)
{
	ReconMapping m;
	ReconHashState *hs;
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	Portal		portal;

	mapping_from_jsonb(mapping, currency, &m);
	hs = recon_hash_begin(VARDATA_ANY(source), VARSIZE_ANY_EXHDR(source));
	args[0] = tenant;
	args[1] = PointerGetDatum(source);
	args[2] = PointerGetDatum(batch);

	fincore_spi_connect();
	if (plan == NULL)
	{
		Oid			types[3] = {UUIDOID, TEXTOID, TEXTOID};

		plan = fincore_prepare("SELECT s.line_no, s.booked_on, s.value_on, s.amount, s.currency, s.indicator,"
							   " s.debit, s.credit, s.reference, s.bank_ref, s.external_id, s.account, s.description"
							   " FROM fincore.recon_staging s"
							   " WHERE s.tenant_id OPERATOR(pg_catalog.=) $1 AND s.source OPERATOR(pg_catalog.=) $2"
							   " AND s.batch OPERATOR(pg_catalog.=) $3 ORDER BY s.line_no",
							   3, types, CURSOR_OPT_GENERIC_PLAN);
	}
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			ReconRawLine raw;
			ReconLine	line;
			bool		isnull;
			Datum		d;

			CHECK_FOR_INTERRUPTS();
			memset(&raw, 0, sizeof(raw));
			d = SPI_getbinval(tup, desc, 1, &isnull);
			raw.line_no = isnull ? 0 : DatumGetInt64(d);
			for (int c = 0; c < RC_COUNT; c++)
			{
				d = SPI_getbinval(tup, desc, 2 + c, &isnull);
				if (!isnull)
				{
					text	   *t = DatumGetTextPP(d);

					raw.field[c] = VARDATA_ANY(t);
					raw.len[c] = VARSIZE_ANY_EXHDR(t);
				}
			}
			recon_parse_line(&m, &raw, &line);
			recon_hash_line(hs, &line);
			put_line(sink, multi, &line);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_finish();
	recon_hash_end(hs);
}

/*
 * fincore._recon_parse(format text, data text, tenant uuid, source text,
 * batch text, mapping jsonb, currency text): the lines of a CSV statement
 * (data) or of a staged batch, parsed exactly (ZFC03 for the first malformed
 * one), in id order, one per call.
 */
PG_FUNCTION_INFO_V1(fincore_recon_parse);
Datum
fincore_recon_parse(PG_FUNCTION_ARGS)
{
	if (SRF_IS_FIRSTCALL())
	{
		FuncCallContext *fc = SRF_FIRSTCALL_INIT();
		MemoryContext caller = MemoryContextSwitchTo(fc->multi_call_memory_ctx);
		LineSink   *sink = sink_create(fcinfo);
		bool		csv;

		fc->user_fctx = sink;
		if (PG_ARGISNULL(0) || PG_ARGISNULL(3) || PG_ARGISNULL(5))
			elog(ERROR, "_recon_parse: format, source and mapping are required");
		csv = strcmp(text_to_cstring(PG_GETARG_TEXT_PP(0)), "csv") == 0;
		if (csv && PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
					 errmsg("no statement to import")));
		if (!csv && (PG_ARGISNULL(2) || PG_ARGISNULL(4)))
			elog(ERROR, "_recon_parse: a staged batch needs its tenant and name");
		if (csv)
			parse_csv(sink, fc->multi_call_memory_ctx, PG_GETARG_TEXT_PP(1), PG_GETARG_TEXT_PP(3),
					  PG_GETARG_JSONB_P(5), PG_ARGISNULL(6) ? NULL : PG_GETARG_TEXT_PP(6));
		else
			parse_staging(sink, fc->multi_call_memory_ctx, PG_GETARG_DATUM(2), PG_GETARG_TEXT_PP(3),
						  PG_GETARG_TEXT_PP(4), PG_GETARG_JSONB_P(5), PG_ARGISNULL(6) ? NULL : PG_GETARG_TEXT_PP(6));
		qsort(sink->tuples, sink->n, sizeof(HeapTuple), tuple_id_cmp);
		MemoryContextSwitchTo(caller);
	}
	return sink_next(fcinfo);
}

/* ---------------------------------------------------------------------------
 * The run
 * ---------------------------------------------------------------------------
 */

/* Strings of the run's items, packed into large blocks. */
typedef struct Arena
{
	MemoryContext cxt;
	char	   *block;
	Size		left;
} Arena;

static const char *
arena_text(Arena *a, Datum d)
{
	text	   *t = DatumGetTextPP(d);
	int			len = VARSIZE_ANY_EXHDR(t);
	char	   *s;

	if ((Size) len + 1 > a->left)
	{
		Size		size = Max((Size) 1 << 20, (Size) len + 1);

		a->block = MemoryContextAlloc(a->cxt, size);
		a->left = size;
	}
	s = a->block;
	memcpy(s, VARDATA_ANY(t), len);
	s[len] = '\0';
	a->block += len + 1;
	a->left -= len + 1;
	return s;
}

typedef struct Items
{
	ReconItem  *items;
	int32		n;
	int32		max;
} Items;

static ReconItem *
items_add(Items *it, MemoryContext cxt)
{
	if (it->n == it->max)
	{
		it->max = Max(1024, it->max * 2);
		it->items = it->items ? repalloc_huge(it->items, sizeof(ReconItem) * it->max)
			: MemoryContextAllocHuge(cxt, sizeof(ReconItem) * it->max);
	}
	return &it->items[it->n++];
}

/*
 * A statement's rows into items, as the executor produces them (a receiver
 * of its slots: no copy of each row into an SPI tuple table).  Columns: id,
 * amount, currency, date (a date, or a timestamptz taken as its UTC day),
 * the keys, then for a line whether it is due as a break, for a ledger
 * entry the value date in its metadata (used when it is a date).
 */
typedef struct ItemReceiver
{
	DestReceiver pub;
	Items	   *out;
	Arena	   *arena;
	bool		entries;
	int64		seen;
} ItemReceiver;

static bool
item_receive(TupleTableSlot *slot, DestReceiver *self)
{
	ItemReceiver *r = (ItemReceiver *) self;
	ReconItem  *it = items_add(r->out, r->arena->cxt);
	Datum	   *v;
	bool	   *n;
	text	   *cur;

	if ((++r->seen & 0xFFFF) == 0)
		CHECK_FOR_INTERRUPTS();
	slot_getallattrs(slot);
	v = slot->tts_values;
	n = slot->tts_isnull;
	memcpy(&it->id, DatumGetUUIDP(v[0]), sizeof(pg_uuid_t));
	it->amount = DatumGetInt64(v[1]);
	cur = DatumGetTextPP(v[2]);
	if (!currency_pack(VARDATA_ANY(cur), VARSIZE_ANY_EXHDR(cur), &it->currency))
		it->currency = 0;
	if (r->entries)
	{
		TimestampTz ts = DatumGetTimestampTz(v[3]);

		it->date = (int32) (ts / USECS_PER_DAY - (ts % USECS_PER_DAY < 0 ? 1 : 0));
	}
	else
		it->date = DatumGetDateADT(v[3]);
	for (int k = 0; k < RK_NKEYS; k++)
		it->key[k] = n[4 + k] ? NULL : arena_text(r->arena, v[4 + k]);
	it->break_due = false;
	if (!r->entries)
		it->break_due = !n[7] && DatumGetBool(v[7]);
	else if (!n[7])
	{
		text	   *t = DatumGetTextPP(v[7]);
		int32		day;

		if (recon_parse_date(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), RDF_ISO, &day))
			it->date = day;
	}
	it->match = -1;
	return true;
}

static void
item_startup(DestReceiver *self pg_attribute_unused(), int operation pg_attribute_unused(),
			 TupleDesc typeinfo pg_attribute_unused())
{
}

static void
item_nothing(DestReceiver *self pg_attribute_unused())
{
}

static void
load_items(SPIPlanPtr plan, int nargs, const Oid *types, const Datum *args, const bool *nulls,
		   Items *out, Arena *arena, bool entries)
{
	ItemReceiver r;
	SPIExecuteOptions opts;
	ParamListInfo params = makeParamList(nargs);

	for (int i = 0; i < nargs; i++)
	{
		params->params[i].value = args[i];
		params->params[i].isnull = nulls[i];
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = types[i];
	}
	memset(&r, 0, sizeof(r));
	r.pub.receiveSlot = item_receive;
	r.pub.rStartup = item_startup;
	r.pub.rShutdown = item_nothing;
	r.pub.rDestroy = item_nothing;
	r.pub.mydest = DestNone;
	r.out = out;
	r.arena = arena;
	r.entries = entries;
	memset(&opts, 0, sizeof(opts));
	opts.params = params;
	opts.read_only = true;
	opts.dest = (DestReceiver *) &r;
	/* a SELECT into a receiver of ours returns SPI_OK_UTILITY */
	if (SPI_execute_plan_extended(plan, &opts) < 0)
		elog(ERROR, "recon_run: loading the %s failed", entries ? "ledger entries" : "statement lines");
}

static int
uint64_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a,
				y = *(const uint64 *) b;

	return x < y ? -1 : x > y;
}

typedef struct Similarity
{
	FmgrInfo	flinfo;
	MemoryContext cxt;
} Similarity;

static double
trgm_similarity(void *arg, const char *a, const char *b)
{
	Similarity *s = arg;
	MemoryContext old = MemoryContextSwitchTo(s->cxt);
	double		r;

	r = DatumGetFloat4(FunctionCall2Coll(&s->flinfo, DEFAULT_COLLATION_OID,
										 CStringGetTextDatum(a), CStringGetTextDatum(b)));
	MemoryContextSwitchTo(old);
	MemoryContextReset(s->cxt);
	return r;
}

typedef struct Progress
{
	const ReconRun *run;
	int32		total;
	bool		notices;
	instr_time	start;
	double	   *rule_ms;
	int32		before;
} Progress;

static void
report_progress(void *arg, int rule, int32 nmatches)
{
	Progress   *p = arg;
	instr_time	now;
	int32		matched_lines = 0;

	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, p->start);
	p->rule_ms[rule] = INSTR_TIME_GET_MILLISEC(now);
	INSTR_TIME_SET_CURRENT(p->start);
	for (int32 i = p->before; i < nmatches; i++)
		matched_lines += p->run->matches[i].nlines;
	p->total += matched_lines;
	if (p->notices)
		ereport(NOTICE,
				(errmsg("recon_run: rule %d of %d (%s): %d matches, %.1f%% of the lines matched",
						rule + 1, p->run->nrules, p->run->rules[rule].name, nmatches - p->before,
						p->run->nlines ? 100.0 * p->total / p->run->nlines : 100.0)));
	p->before = nmatches;
}

static double
ms_since(instr_time *t)
{
	instr_time	now;
	double		ms;

	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, *t);
	ms = INSTR_TIME_GET_MILLISEC(now);
	INSTR_TIME_SET_CURRENT(*t);
	return ms;
}

/*
 * The write order.  Matches are numbered in the order of their first line's
 * id, and the members are written sorted by their own ids, so that the
 * index entries of a run arrive in key order (a statement's lines and a
 * ledger's transfers have time-ordered ids): appended next to one another
 * instead of scattered over the indexes, which on a million matches is most
 * of the cost of writing them.
 */
/* A match's place in the write order: its first line's id, as two big-endian halves. */
typedef struct MatchKey
{
	uint64		high;
	uint64		low;
	int32		match;
} MatchKey;

static inline void
id_halves(const pg_uuid_t *id, uint64 *high, uint64 *low)
{
	memcpy(high, id->data, sizeof(uint64));
	memcpy(low, id->data + 8, sizeof(uint64));
	*high = pg_ntoh64(*high);
	*low = pg_ntoh64(*low);
}

static int
match_key_cmp(const void *a, const void *b)
{
	const MatchKey *x = a,
			   *y = b;

	if (x->high != y->high)
		return x->high < y->high ? -1 : 1;
	if (x->low != y->low)
		return x->low < y->low ? -1 : 1;
	return 0;
}

/* Put a run's matches in the order of their first line's id. */
static void
order_matches(ReconRun *run)
{
	MatchKey   *keys = palloc_extended(sizeof(MatchKey) * Max(run->nmatches, 1), MCXT_ALLOC_HUGE);
	ReconMatch *sorted = palloc_extended(sizeof(ReconMatch) * Max(run->nmatches, 1), MCXT_ALLOC_HUGE);

	for (int32 i = 0; i < run->nmatches; i++)
	{
		id_halves(&run->lines[run->members[run->matches[i].first]].id, &keys[i].high, &keys[i].low);
		keys[i].match = i;
	}
	qsort(keys, run->nmatches, sizeof(MatchKey), match_key_cmp);
	for (int32 i = 0; i < run->nmatches; i++)
		sorted[i] = run->matches[keys[i].match];
	memcpy(run->matches, sorted, sizeof(ReconMatch) * run->nmatches);
	pfree(sorted);
	pfree(keys);
}

typedef struct MemberPair
{
	pg_uuid_t	item;
	pg_uuid_t	match;
} MemberPair;

static int
member_pair_cmp(const void *a, const void *b)
{
	uint64		xh,
				xl,
				yh,
				yl;

	id_halves(&((const MemberPair *) a)->item, &xh, &xl);
	id_halves(&((const MemberPair *) b)->item, &yh, &yl);
	if (xh != yh)
		return xh < yh ? -1 : 1;
	return xl < yl ? -1 : xl > yl;
}

enum
{
	RULE_NAME = 1, RULE_KIND, RULE_MATCH_ON, RULE_TOLERANCE, RULE_TOLERANCE_BPS, RULE_DATE_WINDOW,
	RULE_MIN_SIMILARITY, RULE_GROUP_BY, RULE_MAX_GROUP, RULE_OUTCOME, RULE_ADJUSTMENT
};

static int
name_index(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	elog(ERROR, "unknown reconciliation name \"%s\"", s);
	return -1;
}

/*
 * The match rows of the run being written, which fincore._recon_run_matches()
 * returns to the statement that inserts them: one tuple store of finished
 * rows, where unnesting a dozen arrays would build one per column.
 */
typedef struct PendingMatches
{
	const ReconRun *run;
	Datum		tenant;
	Datum		account;
	Datum		source;
	Datum		run_id;
	const pg_uuid_t *match_ids;
	const Datum *adjust_ids;
	const bool *adjust_nulls;
	Datum	   *rule_names;		/* per rule */
	Datum	   *kinds;
	Datum	   *outcomes;
	Datum	   *accounts;
	Datum	   *currencies;		/* per match */
	MemberPair *line_pairs;		/* sorted by line id */
	int32		nl;
	MemberPair *entry_pairs;	/* sorted by transfer id */
	int32		ne;
} PendingMatches;

static PendingMatches *pending_matches = NULL;

#define MATCH_COLUMNS 18

/*
 * The rows a run writes, returned one per call to the statement inserting
 * them (an SRF in a select list, which the executor streams: no copy of a
 * million rows into a tuple store); none outside a run.  Which: 'm' the
 * matches, 'l' their lines, 'e' their entries.
 */
static Datum
pending_rows(FunctionCallInfo fcinfo, char which)
{
	FuncCallContext *fc;
	PendingMatches *pm = pending_matches;
	int32		i;

	if (SRF_IS_FIRSTCALL())
	{
		TupleDesc	desc;
		MemoryContext old;

		fc = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(fc->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "recon: a writer's result type is not a row type");
		fc->tuple_desc = BlessTupleDesc(desc);
		fc->max_calls = pm == NULL ? 0 : which == 'm' ? pm->run->nmatches : which == 'l' ? pm->nl : pm->ne;
		if (which == 'm' && fc->tuple_desc->natts != MATCH_COLUMNS)
			elog(ERROR, "fincore.recon_matches has %d columns, not %d", fc->tuple_desc->natts, MATCH_COLUMNS);
		MemoryContextSwitchTo(old);
	}
	fc = SRF_PERCALL_SETUP();
	if (fc->call_cntr >= fc->max_calls)
		SRF_RETURN_DONE(fc);
	i = (int32) fc->call_cntr;
	if (which == 'm')
	{
		const ReconMatch *m = &pm->run->matches[i];
		Datum		v[MATCH_COLUMNS];
		bool		n[MATCH_COLUMNS];
		Datum	   *ids = palloc(sizeof(Datum) * Max(m->nlines, m->nentries));

		memset(n, 0, sizeof(n));
		for (int32 k = 0; k < m->nlines; k++)
			ids[k] = UUIDPGetDatum(&pm->run->lines[pm->run->members[m->first + k]].id);
		v[12] = PointerGetDatum(construct_array(ids, m->nlines, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		for (int32 k = 0; k < m->nentries; k++)
			ids[k] = UUIDPGetDatum(&pm->run->entries[pm->run->members[m->first + m->nlines + k]].id);
		v[13] = PointerGetDatum(construct_array(ids, m->nentries, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		v[0] = pm->tenant;
		v[1] = UUIDPGetDatum(&pm->match_ids[i]);
		v[2] = pm->source;
		v[3] = pm->run_id;
		v[4] = pm->rule_names[m->rule];
		v[5] = pm->kinds[m->rule];
		v[6] = pm->outcomes[m->rule];
		v[7] = pm->currencies[i];
		v[8] = Int64GetDatum(m->line_total);
		v[9] = Int64GetDatum(m->entry_total);
		n[10] = n[11] = pm->adjust_nulls[i];		/* the adjustment: account and transfer id */
		v[10] = pm->accounts[m->rule];
		v[11] = pm->adjust_ids[i];
		v[14] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		n[15] = n[16] = n[17] = true;	/* decided_at, decided_by, note */
		SRF_RETURN_NEXT(fc, HeapTupleGetDatum(heap_form_tuple(fc->tuple_desc, v, n)));
	}
	else
	{
		const MemberPair *p = which == 'l' ? &pm->line_pairs[i] : &pm->entry_pairs[i];
		Datum		v[4];
		bool		n[4] = {false, false, false, false};

		/* recon_matched_lines (tenant_id, line_id, match_id); _entries (tenant_id, account_id, transfer_id, match_id) */
		v[0] = pm->tenant;
		if (which == 'l')
		{
			v[1] = UUIDPGetDatum(&p->item);
			v[2] = UUIDPGetDatum(&p->match);
		}
		else
		{
			v[1] = pm->account;
			v[2] = UUIDPGetDatum(&p->item);
			v[3] = UUIDPGetDatum(&p->match);
		}
		SRF_RETURN_NEXT(fc, HeapTupleGetDatum(heap_form_tuple(fc->tuple_desc, v, n)));
	}
}

PG_FUNCTION_INFO_V1(fincore_recon_run_matches);
Datum
fincore_recon_run_matches(PG_FUNCTION_ARGS)
{
	return pending_rows(fcinfo, 'm');
}

PG_FUNCTION_INFO_V1(fincore_recon_run_matched_lines);
Datum
fincore_recon_run_matched_lines(PG_FUNCTION_ARGS)
{
	return pending_rows(fcinfo, 'l');
}

PG_FUNCTION_INFO_V1(fincore_recon_run_matched_entries);
Datum
fincore_recon_run_matched_entries(PG_FUNCTION_ARGS)
{
	return pending_rows(fcinfo, 'e');
}

/*
 * Write a run's matches: the match rows, then their lines and entries (whose
 * primary keys make each a member of one live match only: a run that raced
 * a manual match fails here rather than match anything twice).  One
 * statement per table.  ms: the time of each step.
 */
static void
write_matches(ReconRun *run, pg_uuid_t *tenant, text *source, pg_uuid_t *account, Datum run_id,
			  const char **rule_names, pg_uuid_t **adjust_accounts, double *ms)
{
	static SPIPlanPtr inserts[3] = {NULL, NULL, NULL};
	static const char *const insert_sql[3] = {
		"INSERT INTO fincore.recon_matches SELECT (r).* FROM (SELECT fincore._recon_run_matches() AS r OFFSET 0) q",
		"INSERT INTO fincore.recon_matched_lines SELECT (r).* FROM (SELECT fincore._recon_run_matched_lines() AS r OFFSET 0) q",
		"INSERT INTO fincore.recon_matched_entries SELECT (r).* FROM (SELECT fincore._recon_run_matched_entries() AS r OFFSET 0) q"
	};
	instr_time	t;
	int32		nm = run->nmatches;
	int			nrules = run->nrules;
	PendingMatches pm;
	pg_uuid_t  *match_ids = palloc_extended(sizeof(pg_uuid_t) * nm, MCXT_ALLOC_HUGE);
	Datum	   *adjust_ids = palloc_extended(sizeof(Datum) * nm, MCXT_ALLOC_HUGE);
	bool	   *adjust_nulls = palloc_extended(sizeof(bool) * nm, MCXT_ALLOC_HUGE);
	Datum	   *currencies = palloc_extended(sizeof(Datum) * nm, MCXT_ALLOC_HUGE);
	MemberPair *line_pairs = palloc_extended(sizeof(MemberPair) * Max(run->nmembers, 1), MCXT_ALLOC_HUGE);
	MemberPair *entry_pairs = palloc_extended(sizeof(MemberPair) * Max(run->nmembers, 1), MCXT_ALLOC_HUGE);
	int			maxcodes = 8;
	CurrencyCode *codes = palloc(sizeof(CurrencyCode) * maxcodes);
	Datum	   *code_text = palloc(sizeof(Datum) * maxcodes);
	int			ncodes = 0;
	int			c = 0;
	int32		nl = 0,
				ne = 0;

	INSTR_TIME_SET_CURRENT(t);
	order_matches(run);
	for (int32 i = 0; i < nm; i++)
	{
		ReconMatch *m = &run->matches[i];
		CurrencyCode cur = run->lines[run->members[m->first]].currency;

		uuidv7_generate(&match_ids[i]);
		/* a confirmed difference is posted as an adjustment, when the rule names an account */
		adjust_nulls[i] = !(adjust_accounts[m->rule] != NULL && !run->rules[m->rule].suggest &&
							m->line_total != m->entry_total);
		adjust_ids[i] = (Datum) 0;
		if (!adjust_nulls[i])
		{
			pg_uuid_t  *a = palloc(sizeof(pg_uuid_t));

			uuidv7_generate(a);
			adjust_ids[i] = UUIDPGetDatum(a);
		}
		/* the currency's text, made once (matches in a row are mostly of one currency) */
		if (c >= ncodes || codes[c] != cur)
			for (c = 0; c < ncodes; c++)
				if (codes[c] == cur)
					break;
		if (c == ncodes)
		{
			char		code[CURRENCY_CODE_MAX_LEN + 1];

			if (ncodes == maxcodes)
			{
				maxcodes *= 2;
				codes = repalloc(codes, sizeof(CurrencyCode) * maxcodes);
				code_text = repalloc(code_text, sizeof(Datum) * maxcodes);
			}
			currency_unpack(cur, code);
			codes[ncodes] = cur;
			code_text[ncodes++] = CStringGetTextDatum(code);
		}
		currencies[i] = code_text[c];
		for (int32 k = 0; k < m->nlines; k++)
		{
			line_pairs[nl].item = run->lines[run->members[m->first + k]].id;
			line_pairs[nl++].match = match_ids[i];
		}
		for (int32 k = 0; k < m->nentries; k++)
		{
			entry_pairs[ne].item = run->entries[run->members[m->first + m->nlines + k]].id;
			entry_pairs[ne++].match = match_ids[i];
		}
	}
	qsort(line_pairs, nl, sizeof(MemberPair), member_pair_cmp);
	qsort(entry_pairs, ne, sizeof(MemberPair), member_pair_cmp);

	pm.run = run;
	pm.tenant = UUIDPGetDatum(tenant);
	pm.account = UUIDPGetDatum(account);
	pm.source = PointerGetDatum(source);
	pm.run_id = run_id;
	pm.match_ids = match_ids;
	pm.adjust_ids = adjust_ids;
	pm.adjust_nulls = adjust_nulls;
	pm.currencies = currencies;
	pm.line_pairs = line_pairs;
	pm.nl = nl;
	pm.entry_pairs = entry_pairs;
	pm.ne = ne;
	pm.rule_names = palloc(sizeof(Datum) * nrules);
	pm.kinds = palloc(sizeof(Datum) * nrules);
	pm.outcomes = palloc(sizeof(Datum) * nrules);
	pm.accounts = palloc(sizeof(Datum) * nrules);
	for (int r = 0; r < nrules; r++)
	{
		pm.rule_names[r] = CStringGetTextDatum(rule_names[r]);
		pm.kinds[r] = CStringGetTextDatum(recon_kind_names[run->rules[r].kind]);
		pm.outcomes[r] = CStringGetTextDatum(run->rules[r].suggest ? "suggested" : "confirmed");
		pm.accounts[r] = adjust_accounts[r] == NULL ? (Datum) 0 : UUIDPGetDatum(adjust_accounts[r]);
	}
	ms[0] = ms_since(&t);			/* ordering */

	pending_matches = &pm;
	PG_TRY();
	{
		for (int k = 0; k < 3; k++)
		{
			uint64		want = k == 0 ? (uint64) nm : k == 1 ? (uint64) nl : (uint64) ne;

			if (inserts[k] == NULL)
				inserts[k] = fincore_prepare(insert_sql[k], 0, NULL, 0);
			if (SPI_execute_plan(inserts[k], NULL, NULL, false, 0) != SPI_OK_INSERT || SPI_processed != want)
				elog(ERROR, "recon_run: writing the matches failed");
			ms[1 + k] = ms_since(&t);	/* the match rows, the lines, the entries */
		}
	}
	PG_FINALLY();
	{
		pending_matches = NULL;
	}
	PG_END_TRY();
}

/*
 * fincore._recon_match(tenant uuid, source text, account uuid, side text,
 * ledger_keys text[4], import_id uuid, run_id uuid, dry_run boolean,
 * progress boolean) returns jsonb: the run's counts and timings.  The caller
 * (fincore.recon_run) holds the source's lock.
 */
PG_FUNCTION_INFO_V1(fincore_recon_match);
Datum
fincore_recon_match(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	text	   *source = PG_GETARG_TEXT_PP(1);
	pg_uuid_t  *account = PG_GETARG_UUID_P(2);
	bool		credit_side = strcmp(text_to_cstring(PG_GETARG_TEXT_PP(3)), "credit") == 0;
	ArrayType  *ledger_keys = PG_GETARG_ARRAYTYPE_P(4);
	bool		by_import = !PG_ARGISNULL(5);
	Datum		import_id = by_import ? PG_GETARG_DATUM(5) : (Datum) 0;
	Datum		run_id = PG_GETARG_DATUM(6);
	bool		dry_run = PG_GETARG_BOOL(7);
	bool		notices = PG_GETARG_BOOL(8);
	Datum		break_before = PG_GETARG_DATUM(9);
	int64		breaks = 0;
	int64		adjustments = 0;
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext runcxt = AllocSetContextCreate(caller, "recon run", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	Arena		arena = {runcxt, NULL, 0};
	Items		lines = {0},
				entries = {0};
	ReconRule  *rules = NULL;
	const char **rule_names = NULL;
	pg_uuid_t **adjust_accounts = NULL;	/* per rule: where a confirmed difference goes, or NULL */
	int			nrules = 0;
	ReconRun	run;
	Progress	progress;
	Similarity sim;
	bool		need_similarity = false;
	uint64	   *rejected = NULL;
	int32		nrejected = 0;
	instr_time	t;
	double		load_ms,
				write_ms = 0,
				write_split[4] = {0, 0, 0, 0};
	Size		memory;
	Datum		kd[4];
	bool		kn[4];
	JsonbParseState *st = NULL;
	JsonbValue *res;
	int32		suggested = 0,
				confirmed = 0,
				lines_left = 0,
				entries_left = 0;
	Jsonb	   *result;

	if (ARR_NDIM(ledger_keys) != 1 || ARR_DIMS(ledger_keys)[0] != 4)
		elog(ERROR, "_recon_match: ledger_keys must have 4 elements");
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(ledger_keys, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < 4; i++)
		{
			kd[i] = elems[i];
			kn[i] = nulls[i];
		}
	}

	INSTR_TIME_SET_CURRENT(t);
	fincore_spi_connect();

	/* the rules, in priority order */
	{
		static SPIPlanPtr plan = NULL;
		Datum		args[2] = {UUIDPGetDatum(tenant), PointerGetDatum(source)};

		if (plan == NULL)
		{
			Oid			types[2] = {UUIDOID, TEXTOID};

			plan = fincore_prepare("SELECT r.name, r.kind, r.match_on, r.tolerance, r.tolerance_bps, r.date_window,"
								   " r.min_similarity, r.group_by, r.max_group, r.outcome, r.adjustment_account"
								   " FROM fincore.recon_rules r WHERE r.tenant_id OPERATOR(pg_catalog.=) $1"
								   " AND r.source OPERATOR(pg_catalog.=) $2 AND r.enabled ORDER BY r.priority",
								   2, types, CURSOR_OPT_GENERIC_PLAN);
		}
		if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "recon_run: reading the rules failed");
		nrules = (int) SPI_processed;
		old = MemoryContextSwitchTo(runcxt);
		rules = palloc0(sizeof(ReconRule) * Max(nrules, 1));
		rule_names = palloc0(sizeof(char *) * Max(nrules, 1));
		adjust_accounts = palloc0(sizeof(pg_uuid_t *) * Max(nrules, 1));
		for (int i = 0; i < nrules; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			ReconRule  *r = &rules[i];
			bool		isnull;
			Datum		d;

			r->name = rule_names[i] = SPI_getvalue(tup, desc, RULE_NAME);
			r->kind = (ReconKind) name_index(SPI_getvalue(tup, desc, RULE_KIND), recon_kind_names, RKIND_COUNT);
			d = SPI_getbinval(tup, desc, RULE_MATCH_ON, &isnull);
			if (!isnull)
			{
				Datum	   *e;
				bool	   *en;
				int			n;

				deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &e, &en, &n);
				for (int k = 0; k < n; k++)
					r->keys |= 1u << name_index(TextDatumGetCString(e[k]), recon_key_names, RK_NKEYS);
			}
			d = SPI_getbinval(tup, desc, RULE_TOLERANCE, &isnull);
			r->tolerance = isnull ? -1 : DatumGetInt64(d);
			d = SPI_getbinval(tup, desc, RULE_TOLERANCE_BPS, &isnull);
			r->tolerance_bps = isnull ? -1 : DatumGetInt32(d);
			r->date_window = DatumGetInt32(SPI_getbinval(tup, desc, RULE_DATE_WINDOW, &isnull));
			d = SPI_getbinval(tup, desc, RULE_MIN_SIMILARITY, &isnull);
			r->min_similarity = isnull ? -1 : DatumGetFloat4(d);
			need_similarity |= !isnull;
			d = SPI_getbinval(tup, desc, RULE_GROUP_BY, &isnull);
			r->group_by = isnull ? -1 : name_index(TextDatumGetCString(d), recon_key_names, RK_NKEYS + 1);
			r->max_group = DatumGetInt32(SPI_getbinval(tup, desc, RULE_MAX_GROUP, &isnull));
			r->suggest = strcmp(SPI_getvalue(tup, desc, RULE_OUTCOME), "suggested") == 0;
			d = SPI_getbinval(tup, desc, RULE_ADJUSTMENT, &isnull);
			if (!isnull)
			{
				adjust_accounts[i] = palloc(sizeof(pg_uuid_t));
				memcpy(adjust_accounts[i], DatumGetUUIDP(d), sizeof(pg_uuid_t));
			}
		}
		MemoryContextSwitchTo(old);
	}

	/* pg_trgm's similarity(), when a rule compares references */
	if (need_similarity)
	{
		static SPIPlanPtr plan = NULL;
		bool		isnull;

		if (plan == NULL)
			plan = fincore_prepare("SELECT CAST(pg_catalog.format('%I.similarity(text,text)', n.nspname)"
								   " AS pg_catalog.regprocedure)::pg_catalog.oid"
								   " FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n"
								   " ON n.oid OPERATOR(pg_catalog.=) e.extnamespace"
								   " WHERE e.extname OPERATOR(pg_catalog.=) 'pg_trgm'", 0, NULL, 0);
		if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "recon_run: looking up pg_trgm failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FC_RECON_NEEDS_TRGM),
					 errmsg("a rule of source \"%s\" compares references, which needs pg_trgm", text_to_cstring(source)),
					 errhint("CREATE EXTENSION pg_trgm; (a contrib module), or drop the rule's min_similarity.")));
		fmgr_info_cxt(DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
					  &sim.flinfo, runcxt);
		sim.cxt = AllocSetContextCreate(runcxt, "recon similarity", ALLOCSET_SMALL_SIZES);
	}

	/* the combinations a person rejected */
	{
		static SPIPlanPtr plan = NULL;
		Datum		args[2] = {UUIDPGetDatum(tenant), PointerGetDatum(source)};

		if (plan == NULL)
		{
			Oid			types[2] = {UUIDOID, TEXTOID};

			plan = fincore_prepare("SELECT m.line_ids, m.entry_ids FROM fincore.recon_matches m"
								   " WHERE m.tenant_id OPERATOR(pg_catalog.=) $1 AND m.source OPERATOR(pg_catalog.=) $2"
								   " AND m.status OPERATOR(pg_catalog.=) 'rejected'", 2, types, CURSOR_OPT_GENERIC_PLAN);
		}
		if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "recon_run: reading the rejected matches failed");
		rejected = MemoryContextAllocHuge(runcxt, sizeof(uint64) * Max(SPI_processed, 1));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		n1,
						n2;
			ArrayType  *l = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &n1));
			ArrayType  *e = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &n2));

			rejected[nrejected++] = recon_combination_hash((pg_uuid_t *) ARR_DATA_PTR(l), ArrayGetNItems(ARR_NDIM(l), ARR_DIMS(l)),
														   (pg_uuid_t *) ARR_DATA_PTR(e), ArrayGetNItems(ARR_NDIM(e), ARR_DIMS(e)));
		}
		qsort(rejected, nrejected, sizeof(uint64), uint64_cmp);
	}

	/* the unmatched lines (of the import, or all the source's) and entries */
	{
		static SPIPlanPtr all_lines = NULL,
					import_lines = NULL,
					entry_plan = NULL;
		Datum		args[4] = {UUIDPGetDatum(tenant), PointerGetDatum(source), break_before, import_id};
		Datum		eargs[6] = {UUIDPGetDatum(tenant), UUIDPGetDatum(account), kd[0], kd[1], kd[2], kd[3]};
		bool		enulls[6] = {false, false, kn[0], kn[1], kn[2], kn[3]};
		Oid			ltypes[4] = {UUIDOID, TEXTOID, DATEOID, UUIDOID};
		Oid			etypes[6] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		bool		lnulls[4] = {false, false, false, false};

#define LINE_SELECT "SELECT l.id, l.amount, l.currency, l.booked_on, l.reference, l.external_id, l.account," \
			" l.break_reported_at IS NULL AND l.booked_on OPERATOR(pg_catalog.<) $3" \
			" FROM fincore.recon_lines l WHERE l.tenant_id OPERATOR(pg_catalog.=) $1" \
			" AND l.source OPERATOR(pg_catalog.=) $2" \
			" AND NOT EXISTS (SELECT FROM fincore.recon_matched_lines m WHERE m.tenant_id OPERATOR(pg_catalog.=) $1" \
			" AND m.line_id OPERATOR(pg_catalog.=) l.id)"
		if (all_lines == NULL)
		{
			/*
			 * Planned for each run's values (custom plans): how many lines and
			 * matches a source has decides between probing the member indexes
			 * and hashing them.
			 */
			all_lines = fincore_prepare(LINE_SELECT, 3, ltypes, CURSOR_OPT_CUSTOM_PLAN);
			import_lines = fincore_prepare(LINE_SELECT " AND l.import_id OPERATOR(pg_catalog.=) $4", 4, ltypes,
										   CURSOR_OPT_CUSTOM_PLAN);
			/*
			 * An entry is a posted movement of the account: a transfer, a
			 * hold's posting, a reversal (holds are not on a statement yet).
			 * Its amount is signed by the source's side: the side a statement
			 * credit is on.
			 */
			entry_plan = fincore_prepare("SELECT t.id, CASE WHEN t.debit_account_id OPERATOR(pg_catalog.=) $2"
										 " THEN t.amount ELSE OPERATOR(pg_catalog.-) t.amount END,"
										 " t.currency, t.created_at, t.metadata OPERATOR(pg_catalog.->>) $3,"
										 " t.metadata OPERATOR(pg_catalog.->>) $4, t.metadata OPERATOR(pg_catalog.->>) $5,"
										 " t.metadata OPERATOR(pg_catalog.->>) $6"
										 " FROM fincore.transfers t WHERE t.tenant_id OPERATOR(pg_catalog.=) $1"
										 " AND (t.debit_account_id OPERATOR(pg_catalog.=) $2"
										 " OR t.credit_account_id OPERATOR(pg_catalog.=) $2)"
										 " AND t.kind OPERATOR(pg_catalog.=) ANY ('{posted,post,reversal}'::pg_catalog.text[])"
										 " AND t.amount OPERATOR(pg_catalog.>) 0"
										 " AND NOT EXISTS (SELECT FROM fincore.recon_matched_entries m"
										 " WHERE m.tenant_id OPERATOR(pg_catalog.=) $1 AND m.account_id OPERATOR(pg_catalog.=) $2"
										 " AND m.transfer_id OPERATOR(pg_catalog.=) t.id)",
										 6, etypes, CURSOR_OPT_CUSTOM_PLAN);
		}
		load_items(by_import ? import_lines : all_lines, by_import ? 4 : 3, ltypes, args, lnulls,
				   &lines, &arena, false);
		load_items(entry_plan, 6, etypes, eargs, enulls, &entries, &arena, true);
		if (credit_side)
			for (int32 i = 0; i < entries.n; i++)
				entries.items[i].amount = -entries.items[i].amount;
	}
	load_ms = ms_since(&t);
	if (notices)
		ereport(NOTICE,
				(errmsg("recon_run: %d unmatched lines and %d unmatched ledger entries loaded in %.0f ms",
						lines.n, entries.n, load_ms)));

	/* match */
	memset(&run, 0, sizeof(run));
	run.lines = lines.items;
	run.nlines = lines.n;
	run.entries = entries.items;
	run.nentries = entries.n;
	run.rules = rules;
	run.nrules = nrules;
	run.similarity = trgm_similarity;
	run.similarity_arg = &sim;
	run.rejected = rejected;
	run.nrejected = nrejected;
	memset(&progress, 0, sizeof(progress));
	progress.run = &run;
	progress.notices = notices;
	progress.rule_ms = MemoryContextAllocZero(runcxt, sizeof(double) * Max(nrules, 1));
	INSTR_TIME_SET_CURRENT(progress.start);
	run.progress = report_progress;
	run.progress_arg = &progress;
	old = MemoryContextSwitchTo(runcxt);
	recon_match_all(&run);
	MemoryContextSwitchTo(old);
	INSTR_TIME_SET_CURRENT(t);
	memory = MemoryContextMemAllocated(runcxt, true);

	for (int32 i = 0; i < run.nmatches; i++)
	{
		if (rules[run.matches[i].rule].suggest)
			suggested++;
		else
			confirmed++;
	}

	/* write the matches */
	if (!dry_run && run.nmatches > 0)
	{
		old = MemoryContextSwitchTo(runcxt);
		write_matches(&run, tenant, source, account, run_id, rule_names, adjust_accounts, write_split);
		MemoryContextSwitchTo(old);
		write_ms = ms_since(&t);
		if (notices)
			ereport(NOTICE,
					(errmsg("recon_run: %d matches written in %.0f ms (ordering %.0f, match rows %.0f, lines %.0f, entries %.0f)",
							run.nmatches, write_ms, write_split[0], write_split[1], write_split[2], write_split[3])));
	}

	/* the breaks: lines booked before the cut-off, left unmatched, not reported yet */
	{
		pg_uuid_t  *due = MemoryContextAllocHuge(runcxt, sizeof(pg_uuid_t) * Max(run.nlines, 1));

		for (int32 i = 0; i < run.nlines; i++)
			if (run.lines[i].match < 0 && run.lines[i].break_due)
				due[breaks++] = run.lines[i].id;
		if (!dry_run && breaks > 0)
		{
			static SPIPlanPtr plan = NULL;
			Datum		args[3];
			bool		isnull;

			if (plan == NULL)
			{
				Oid			types[3] = {UUIDOID, TEXTOID, UUIDARRAYOID};

				plan = fincore_prepare("SELECT fincore._recon_breaks($1, $2, $3)", 3, types, 0);
			}
			args[0] = UUIDPGetDatum(tenant);
			args[1] = PointerGetDatum(source);
			old = MemoryContextSwitchTo(runcxt);
			args[2] = uuid_array(due, (int) breaks);
			MemoryContextSwitchTo(old);
			if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "recon_run: reporting the breaks failed");
			breaks = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
	}
	for (int32 i = 0; i < run.nmatches; i++)
		if (rules[run.matches[i].rule].suggest == false && adjust_accounts[run.matches[i].rule] != NULL &&
			run.matches[i].line_total != run.matches[i].entry_total)
			adjustments++;

	/* the counts */
	old = MemoryContextSwitchTo(caller);
	{
		/* what is left unmatched, per currency and side */
		typedef struct Left
		{
			CurrencyCode cur;
			int64		lines;
			int64		entries;
			int128		line_amount;
			int128		entry_amount;
		} Left;
		int			maxleft = 8;
		Left	   *left = palloc(sizeof(Left) * maxleft);
		int			nleft = 0;
		int			c = 0;

		for (int side = 0; side < 2; side++)
		{
			ReconItem  *items = side == 0 ? run.lines : run.entries;
			int32		n = side == 0 ? run.nlines : run.nentries;

			for (int32 i = 0; i < n; i++)
			{
				if (items[i].match >= 0)
					continue;
				if (side == 0)
					lines_left++;
				else
					entries_left++;
				if (c >= nleft || left[c].cur != items[i].currency)
					for (c = 0; c < nleft; c++)
						if (left[c].cur == items[i].currency)
							break;
				if (c == nleft)
				{
					if (nleft == maxleft)
					{
						maxleft *= 2;
						left = repalloc(left, sizeof(Left) * maxleft);
					}
					memset(&left[c], 0, sizeof(Left));
					left[c].cur = items[i].currency;
					nleft++;
				}
				if (side == 0)
				{
					left[c].lines++;
					left[c].line_amount += items[i].amount;
				}
				else
				{
					left[c].entries++;
					left[c].entry_amount += items[i].amount;
				}
			}
		}
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "lines");
		jb_int(&st, run.nlines);
		jb_key(&st, "entries");
		jb_int(&st, run.nentries);
		jb_key(&st, "matched");
		jb_int(&st, confirmed);
		jb_key(&st, "suggested");
		jb_int(&st, suggested);
		jb_key(&st, "adjustments");
		jb_int(&st, adjustments);
		jb_key(&st, "breaks");
		jb_int(&st, breaks);
		jb_key(&st, "lines_unmatched");
		jb_int(&st, lines_left);
		jb_key(&st, "entries_unmatched");
		jb_int(&st, entries_left);
		jb_key(&st, "unmatched");
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		for (int c = 0; c < nleft; c++)
		{
			char		code[CURRENCY_CODE_MAX_LEN + 1];

			currency_unpack(left[c].cur, code);
			jb_key(&st, code);
			pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
			jb_key(&st, "lines");
			jb_int(&st, left[c].lines);
			jb_key(&st, "line_amount");
			jb_int(&st, int128_to_int64_checked(left[c].line_amount, "an unmatched total"));
			jb_key(&st, "entries");
			jb_int(&st, left[c].entries);
			jb_key(&st, "entry_amount");
			jb_int(&st, int128_to_int64_checked(left[c].entry_amount, "an unmatched total"));
			pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		}
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		jb_key(&st, "rules");
		pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
		{
			int32	   *per_rule = palloc0(sizeof(int32) * Max(nrules, 1));

			for (int32 i = 0; i < run.nmatches; i++)
				per_rule[run.matches[i].rule]++;
			for (int r = 0; r < nrules; r++)
			{
				pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
				jb_key(&st, "rule");
				jb_string(&st, rule_names[r]);
				jb_key(&st, "matches");
				jb_int(&st, per_rule[r]);
				jb_key(&st, "ms");
				jb_int(&st, (int64) (progress.rule_ms[r] + 0.5));
				pushJsonbValue(&st, WJB_END_OBJECT, NULL);
			}
		}
		pushJsonbValue(&st, WJB_END_ARRAY, NULL);
		jb_key(&st, "load_ms");
		jb_int(&st, (int64) (load_ms + 0.5));
		jb_key(&st, "write_ms");
		jb_int(&st, (int64) (write_ms + 0.5));
		jb_key(&st, "write_split_ms");
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		jb_key(&st, "ordering");
		jb_int(&st, (int64) (write_split[0] + 0.5));
		jb_key(&st, "matches");
		jb_int(&st, (int64) (write_split[1] + 0.5));
		jb_key(&st, "lines");
		jb_int(&st, (int64) (write_split[2] + 0.5));
		jb_key(&st, "entries");
		jb_int(&st, (int64) (write_split[3] + 0.5));
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		jb_key(&st, "memory_bytes");
		jb_int(&st, (int64) memory);
		res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		result = JsonbValueToJsonb(res);
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	MemoryContextDelete(runcxt);
	PG_RETURN_JSONB_P(result);
}
