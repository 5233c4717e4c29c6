/*
 * recon_parse.c — statement lines (recon.h): a CSV reader, exact amounts and
 * dates, and the content hash that makes an import idempotent.  Pure C over
 * structs; a malformed line is refused with ZFC03 naming its line number,
 * the field and the value, so the import that contains it stores nothing.
 */
#include "recon.h"

#include "audit.h"
#include "port/pg_bswap.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"

const char *const recon_column_names[RC_COUNT] = {
	"booked_on", "value_on", "amount", "currency", "indicator", "debit", "credit",
	"reference", "bank_ref", "external_id", "account", "description"
};

const char *const recon_date_format_names[RDF_COUNT] = {
	"YYYY-MM-DD", "DD/MM/YYYY", "MM/DD/YYYY", "DD.MM.YYYY", "YYYYMMDD"
};

/* The longest text field a line may have, in bytes. */
#define RECON_TEXT_MAX 2000

/* ---------------------------------------------------------------------------
 * CSV
 * ---------------------------------------------------------------------------
 */

void
recon_csv_init(ReconCsv *c, const char *data, int len, char delimiter)
{
	memset(c, 0, sizeof(*c));
	c->p = data;
	c->end = data + len;
	c->delimiter = delimiter;
	c->line_no = 1;
	c->maxfields = 16;
	c->field = palloc(sizeof(char *) * c->maxfields);
	c->len = palloc(sizeof(int) * c->maxfields);
}

static void
csv_add_field(ReconCsv *c, const char *f, int len)
{
	if (c->nfields == c->maxfields)
	{
		c->maxfields *= 2;
		c->field = repalloc(c->field, sizeof(char *) * c->maxfields);
		c->len = repalloc(c->len, sizeof(int) * c->maxfields);
	}
	c->field[c->nfields] = f;
	c->len[c->nfields] = len;
	c->nfields++;
}

bool
recon_csv_next(ReconCsv *c)
{
	const char *p = c->p;
	const char *end = c->end;

	/* Blank lines between records are skipped (a trailing newline, a blank last line). */
	while (p < end && (*p == '\n' || *p == '\r'))
	{
		if (*p == '\n')
			c->line_no++;
		p++;
	}
	if (p >= end)
	{
		c->p = p;
		return false;
	}
	c->nfields = 0;
	c->record_line = c->line_no;
	for (;;)
	{
		if (p < end && *p == '"')
		{
			/* A quoted field: unquote into a copy only if it has a doubled quote. */
			const char *start = ++p;
			StringInfoData buf;
			bool		copied = false;

			for (;;)
			{
				if (p >= end)
					ereport(ERROR,
							(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
							 errmsg("line " INT64_FORMAT ": a quoted field is not closed", c->record_line),
							 errhint("A quote inside a quoted field is written twice (\"\").")));
				if (*p == '"')
				{
					if (p + 1 < end && p[1] == '"')
					{
						if (!copied)
						{
							initStringInfo(&buf);
							copied = true;
						}
						appendBinaryStringInfo(&buf, start, p - start + 1);
						p += 2;
						start = p;
						continue;
					}
					break;
				}
				if (*p == '\n')
					c->line_no++;
				p++;
			}
			if (copied)
			{
				appendBinaryStringInfo(&buf, start, p - start);
				csv_add_field(c, buf.data, buf.len);
			}
			else
				csv_add_field(c, start, p - start);
			p++;				/* the closing quote */
			if (p < end && *p != c->delimiter && *p != '\n' && *p != '\r')
				ereport(ERROR,
						(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
						 errmsg("line " INT64_FORMAT ": text after a closing quote", c->record_line)));
		}
		else
		{
			const char *start = p;

			while (p < end && *p != c->delimiter && *p != '\n' && *p != '\r')
				p++;
			csv_add_field(c, start, p - start);
		}
		if (p < end && *p == c->delimiter)
		{
			p++;
			continue;
		}
		/* the end of the record */
		if (p < end && *p == '\r')
			p++;
		if (p < end && *p == '\n')
		{
			p++;
			c->line_no++;
		}
		break;
	}
	c->p = p;
	return true;
}

/* ---------------------------------------------------------------------------
 * Fields
 * ---------------------------------------------------------------------------
 */

static inline void
trim(const char **s, int *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t'))
		(*s)++, (*len)--;
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

bool
recon_parse_amount(const char *s, int len, char decimal_sep, int exponent, int64 *out, const char **why)
{
	const char *end;
	bool		negative = false;
	uint128		v = 0;
	int			int_digits = 0;
	int			frac = 0;

	trim(&s, &len);
	end = s + len;
	if (s < end && (*s == '-' || *s == '+'))
		negative = (*s++ == '-');
	while (s < end && *s >= '0' && *s <= '9')
	{
		v = v * 10 + (*s++ - '0');
		if (++int_digits > 19)
		{
			*why = "is out of range";
			return false;
		}
	}
	if (s < end && *s == decimal_sep)
	{
		s++;
		while (s < end && *s >= '0' && *s <= '9')
		{
			if (frac < exponent)
			{
				v = v * 10 + (*s - '0');
				frac++;
			}
			else if (*s != '0')
			{
				*why = "has more decimal places than its currency allows";
				return false;
			}
			s++;
		}
	}
	if (s != end || (int_digits == 0 && frac == 0))
	{
		*why = "is not a decimal number";
		return false;
	}
	for (; frac < exponent; frac++)
		v *= 10;
	if (v > (uint128) PG_INT64_MAX)
	{
		*why = "is out of range";
		return false;
	}
	*out = negative ? -(int64) v : (int64) v;
	return true;
}

static inline bool
digits(const char *s, int n, int *out)
{
	int			v = 0;

	for (int i = 0; i < n; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool
recon_parse_date(const char *s, int len, ReconDateFormat fmt, int32 *out)
{
	int			y,
				m,
				d;
	bool		ok;

	trim(&s, &len);
	switch (fmt)
	{
		case RDF_ISO:
			/* a time after the date (camt.053's DtTm) is the same day */
			if (len > 10 && (s[10] == 'T' || s[10] == ' '))
				len = 10;
			ok = len == 10 && s[4] == '-' && s[7] == '-' &&
				digits(s, 4, &y) && digits(s + 5, 2, &m) && digits(s + 8, 2, &d);
			break;
		case RDF_DMY_SLASH:
		case RDF_DMY_DOT:
			ok = len == 10 && s[2] == (fmt == RDF_DMY_DOT ? '.' : '/') && s[5] == s[2] &&
				digits(s, 2, &d) && digits(s + 3, 2, &m) && digits(s + 6, 4, &y);
			break;
		case RDF_MDY_SLASH:
			ok = len == 10 && s[2] == '/' && s[5] == '/' &&
				digits(s, 2, &m) && digits(s + 3, 2, &d) && digits(s + 6, 4, &y);
			break;
		case RDF_COMPACT:
			ok = len == 8 && digits(s, 4, &y) && digits(s + 4, 2, &m) && digits(s + 6, 2, &d);
			break;
		default:
			ok = false;
	}
	if (!ok || y < 1 || m < 1 || m > 12 || d < 1 ||
		d > day_tab[isleap(y)][m - 1])
		return false;
	*out = date2j(y, m, d) - POSTGRES_EPOCH_JDATE;
	return true;
}

static void bad_field(const ReconRawLine *raw, ReconColumn col, const char *why) pg_attribute_noreturn();

static void
bad_field(const ReconRawLine *raw, ReconColumn col, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
			 errmsg("line " INT64_FORMAT ": %s \"%.*s\" %s", raw->line_no, recon_column_names[col],
					Min(raw->len[col], 100), raw->field[col] ? raw->field[col] : "", why)));
}

static inline bool
present(const ReconRawLine *raw, ReconColumn col)
{
	return raw->field[col] != NULL && raw->len[col] > 0;
}

/* Is the indicator one of values (case-insensitive)? */
static bool
indicator_in(const char *s, int len, const char *const *values, int n)
{
	for (int i = 0; i < n; i++)
		if ((int) strlen(values[i]) == len && pg_strncasecmp(s, values[i], len) == 0)
			return true;
	return false;
}

void
recon_parse_line(const ReconMapping *m, const ReconRawLine *raw_in, ReconLine *out)
{
	ReconRawLine raw = *raw_in;
	const char *why = NULL;
	int			exponent;
	char		code[CURRENCY_CODE_MAX_LEN + 1];

	memset(out, 0, sizeof(*out));
	out->line_no = raw.line_no;
	for (int c = 0; c < RC_COUNT; c++)
		if (raw.field[c] != NULL)
			trim(&raw.field[c], &raw.len[c]);

	/* the currency first: it says how many decimal places the amount may have */
	if (present(&raw, RC_CURRENCY))
	{
		if (!currency_pack(raw.field[RC_CURRENCY], raw.len[RC_CURRENCY], &out->currency))
			bad_field(&raw, RC_CURRENCY, "is not a currency code");
	}
	else if (m->has_currency)
		out->currency = m->currency;
	else
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
				 errmsg("line " INT64_FORMAT ": no currency", raw.line_no),
				 errhint("Map a currency column, or give the source a currency.")));
	currency_unpack(out->currency, code);
	exponent = currency_exponent_if_known(out->currency);
	if (exponent < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
				 errmsg("line " INT64_FORMAT ": unknown currency \"%s\"", raw.line_no, code),
				 errhint("Use an active ISO 4217 code, or register the asset with fincore.register_currency().")));

	if (present(&raw, RC_DEBIT) || present(&raw, RC_CREDIT))
	{
		/* split columns: one of them holds the (unsigned) amount */
		ReconColumn col = present(&raw, RC_CREDIT) ? RC_CREDIT : RC_DEBIT;

		if (present(&raw, RC_DEBIT) && present(&raw, RC_CREDIT))
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
					 errmsg("line " INT64_FORMAT ": both a debit and a credit amount", raw.line_no)));
		if (!recon_parse_amount(raw.field[col], raw.len[col], m->decimal_sep, exponent, &out->amount, &why))
			bad_field(&raw, col, psprintf("%s (%s)", why, code));
		if (out->amount < 0)
			bad_field(&raw, col, "is negative: a debit or credit column holds the amount without sign");
		if (col == RC_DEBIT)
			out->amount = -out->amount;
	}
	else if (present(&raw, RC_AMOUNT))
	{
		if (!recon_parse_amount(raw.field[RC_AMOUNT], raw.len[RC_AMOUNT], m->decimal_sep, exponent,
								&out->amount, &why))
			bad_field(&raw, RC_AMOUNT, psprintf("%s (%s)", why, code));
		if (present(&raw, RC_INDICATOR))
		{
			if (out->amount < 0)
				bad_field(&raw, RC_AMOUNT, "is negative, and the line has a credit/debit indicator");
			if (indicator_in(raw.field[RC_INDICATOR], raw.len[RC_INDICATOR], m->debit_values, m->ndebit_values))
				out->amount = -out->amount;
			else if (!indicator_in(raw.field[RC_INDICATOR], raw.len[RC_INDICATOR], m->credit_values,
								   m->ncredit_values))
				bad_field(&raw, RC_INDICATOR, "is neither a credit nor a debit indicator");
		}
		else if (m->column_pos[RC_INDICATOR] >= 0 || m->column_name[RC_INDICATOR] != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
					 errmsg("line " INT64_FORMAT ": no credit/debit indicator", raw.line_no)));
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
				 errmsg("line " INT64_FORMAT ": no amount", raw.line_no)));
	if (out->amount == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
				 errmsg("line " INT64_FORMAT ": the amount is zero", raw.line_no),
				 errhint("A statement line moves money; leave zero lines out of the import.")));

	if (!present(&raw, RC_BOOKED_ON))
		ereport(ERROR,
				(errcode(ERRCODE_FC_INVALID_STATEMENT_LINE),
				 errmsg("line " INT64_FORMAT ": no booking date", raw.line_no)));
	if (!recon_parse_date(raw.field[RC_BOOKED_ON], raw.len[RC_BOOKED_ON], m->date_format, &out->booked_on))
		bad_field(&raw, RC_BOOKED_ON, psprintf("is not a date in the form %s", recon_date_format_names[m->date_format]));
	if (present(&raw, RC_VALUE_ON))
	{
		if (!recon_parse_date(raw.field[RC_VALUE_ON], raw.len[RC_VALUE_ON], m->date_format, &out->value_on))
			bad_field(&raw, RC_VALUE_ON, psprintf("is not a date in the form %s", recon_date_format_names[m->date_format]));
		out->has_value_on = true;
	}

	for (int c = RC_REFERENCE; c < RC_COUNT; c++)
		if (present(&raw, c))
		{
			if (raw.len[c] > RECON_TEXT_MAX)
				bad_field(&raw, c, psprintf("is longer than %d bytes", RECON_TEXT_MAX));
			out->text[c] = raw.field[c];
			out->text_len[c] = raw.len[c];
		}
}

/* ---------------------------------------------------------------------------
 * Content hashes
 * ---------------------------------------------------------------------------
 */

struct ReconHashState
{
	AuditHasher hasher;
	char	   *source;
	int			source_len;
	HTAB	   *seen;			/* base hash -> occurrences so far */
	StringInfoData buf;
};

#define SEEN_KEY_LEN 16

typedef struct SeenEntry
{
	uint8		hash[SEEN_KEY_LEN];
	int64		count;
} SeenEntry;

ReconHashState *
recon_hash_begin(const char *source, int source_len)
{
	ReconHashState *s = palloc0(sizeof(ReconHashState));
	HASHCTL		ctl;

	audit_hasher_init(&s->hasher);
	s->source = pnstrdup(source, source_len);
	s->source_len = source_len;
	ctl.keysize = SEEN_KEY_LEN;
	ctl.entrysize = sizeof(SeenEntry);
	ctl.hcxt = CurrentMemoryContext;
	s->seen = hash_create("recon content hashes", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	initStringInfo(&s->buf);
	return s;
}

/* A 64-bit integer, big-endian (the encoding of line ids). */
static inline void
put_int64(StringInfo buf, int64 v)
{
	uint64		be = pg_hton64((uint64) v);

	appendBinaryStringInfo(buf, (char *) &be, sizeof(be));
}

/*
 * A line's id (docs/reconciliation.md, "Line ids").  A line with a bank
 * reference: SHA-256 of "FCR1B", the source's name and the reference, each
 * with its length, so that the bank's own id of a transaction is stored once
 * per source, whatever else about the line changes.  Otherwise its content:
 * "FCR1", the source's name with its length, then booked on, value on
 * (INT64_MIN when absent), amount, currency, and each text field with its
 * length (-1 when absent), as big-endian 64-bit integers; SHA-256 of that,
 * then SHA-256 of its first 16 bytes and k; the id is the booking day (days
 * since 2000-01-01 plus 2^31, 4 bytes big-endian) then 12 bytes of the
 * second hash, so that a statement's lines have ids in date order.  Both
 * with the version (8, custom) and variant bits of RFC 9562.
 */
void
recon_hash_line(ReconHashState *s, ReconLine *line)
{
	uint8		digest[AUDIT_HASH_LEN];
	SeenEntry  *e;
	bool		found;
	uint32		day = (uint32) line->booked_on + 0x80000000u;

	if (line->text[RC_BANK_REF] != NULL)
	{
		resetStringInfo(&s->buf);
		appendBinaryStringInfo(&s->buf, "FCR1B", 5);
		put_int64(&s->buf, s->source_len);
		appendBinaryStringInfo(&s->buf, s->source, s->source_len);
		put_int64(&s->buf, line->text_len[RC_BANK_REF]);
		appendBinaryStringInfo(&s->buf, line->text[RC_BANK_REF], line->text_len[RC_BANK_REF]);
		audit_sha256(&s->hasher, (uint8 *) s->buf.data, s->buf.len, digest);
		memcpy(line->id.data, digest, UUID_LEN);
		line->id.data[6] = (line->id.data[6] & 0x0F) | 0x80;	/* version 8 */
		line->id.data[8] = (line->id.data[8] & 0x3F) | 0x80;	/* variant 10 */
		return;
	}
	resetStringInfo(&s->buf);
	appendBinaryStringInfo(&s->buf, "FCR1", 4);
	put_int64(&s->buf, s->source_len);
	appendBinaryStringInfo(&s->buf, s->source, s->source_len);
	put_int64(&s->buf, line->booked_on);
	put_int64(&s->buf, line->has_value_on ? line->value_on : PG_INT64_MIN);
	put_int64(&s->buf, line->amount);
	put_int64(&s->buf, line->currency);
	for (int c = RC_REFERENCE; c < RC_COUNT; c++)
	{
		put_int64(&s->buf, line->text[c] ? line->text_len[c] : -1);
		if (line->text[c])
			appendBinaryStringInfo(&s->buf, line->text[c], line->text_len[c]);
	}
	audit_sha256(&s->hasher, (uint8 *) s->buf.data, s->buf.len, digest);

	e = hash_search(s->seen, digest, HASH_ENTER, &found);
	e->count = found ? e->count + 1 : 1;
	resetStringInfo(&s->buf);
	appendBinaryStringInfo(&s->buf, (char *) digest, SEEN_KEY_LEN);
	put_int64(&s->buf, e->count);
	audit_sha256(&s->hasher, (uint8 *) s->buf.data, s->buf.len, digest);

	line->id.data[0] = (uint8) (day >> 24);
	line->id.data[1] = (uint8) (day >> 16);
	line->id.data[2] = (uint8) (day >> 8);
	line->id.data[3] = (uint8) day;
	memcpy(line->id.data + 4, digest, 12);
	line->id.data[6] = (line->id.data[6] & 0x0F) | 0x80;	/* version 8 */
	line->id.data[8] = (line->id.data[8] & 0x3F) | 0x80;	/* variant 10 */
}

void
recon_hash_end(ReconHashState *s)
{
	audit_hasher_free(&s->hasher);
	hash_destroy(s->seen);
}
