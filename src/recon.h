/*
 * recon.h — reconciliation (docs/reconciliation.md): statement lines parsed
 * exactly into minor units (recon_parse.c), and the matching engine that
 * pairs them with ledger entries under a source's rules (recon_engine.c);
 * both pure C over the structs below.  recon_api.c loads and stores them
 * (SPI) and is the SQL-callable layer; sql/modules/recon.sql keeps the
 * tables, the configuration and the manual decisions.
 */
#ifndef FINCORE_RECON_H
#define FINCORE_RECON_H

#include "fincore.h"
#include "money.h"

/* ---- statement lines (recon_parse.c) ---- */

/*
 * The fields of a statement line, as a CSV mapping, a JSON object or the
 * staging table names them.  A line's amount is signed (credit positive),
 * or unsigned with a credit/debit indicator, or split over a debit and a
 * credit column.
 */
typedef enum ReconColumn
{
	RC_BOOKED_ON,
	RC_VALUE_ON,
	RC_AMOUNT,
	RC_CURRENCY,
	RC_INDICATOR,
	RC_DEBIT,
	RC_CREDIT,
	RC_REFERENCE,
	RC_BANK_REF,
	RC_EXTERNAL_ID,
	RC_ACCOUNT,
	RC_DESCRIPTION,
	RC_COUNT
} ReconColumn;

extern const char *const recon_column_names[RC_COUNT];

typedef enum ReconDateFormat
{
	RDF_ISO,					/* YYYY-MM-DD (a time after it, as camt.053's DtTm, is ignored) */
	RDF_DMY_SLASH,				/* DD/MM/YYYY */
	RDF_MDY_SLASH,				/* MM/DD/YYYY */
	RDF_DMY_DOT,				/* DD.MM.YYYY */
	RDF_COMPACT,				/* YYYYMMDD */
	RDF_COUNT
} ReconDateFormat;

extern const char *const recon_date_format_names[RDF_COUNT];

#define RECON_MAX_INDICATOR_VALUES 16

/* How a source's statements are read (its mapping, docs/reconciliation.md). */
typedef struct ReconMapping
{
	char		delimiter;
	bool		header;			/* the first CSV record names the columns */
	char		decimal_sep;	/* '.' or ',' */
	ReconDateFormat date_format;
	/* CSV columns: by header name, or 1-based position (0: by name; -1: not mapped) */
	const char *column_name[RC_COUNT];
	int			column_pos[RC_COUNT];
	const char *credit_values[RECON_MAX_INDICATOR_VALUES];
	int			ncredit_values;
	const char *debit_values[RECON_MAX_INDICATOR_VALUES];
	int			ndebit_values;
	bool		has_currency;	/* the source's currency, for lines without one */
	CurrencyCode currency;
} ReconMapping;

/* A line's fields as text, before parsing: NULL (or empty) when absent. */
typedef struct ReconRawLine
{
	int64		line_no;
	const char *field[RC_COUNT];
	int			len[RC_COUNT];
} ReconRawLine;

/* A parsed line: what recon_lines stores. */
typedef struct ReconLine
{
	int64		line_no;
	int32		booked_on;		/* DateADT */
	int32		value_on;
	bool		has_value_on;
	int64		amount;			/* minor units, credit positive */
	CurrencyCode currency;
	const char *text[RC_COUNT]; /* reference, bank_ref, external_id, account, description; NULL if absent */
	int			text_len[RC_COUNT];
	pg_uuid_t	id;				/* its content id (recon_hash_line) */
} ReconLine;

/* Parse a line's fields (ZFC03 naming the line number and the field). */
extern void recon_parse_line(const ReconMapping *m, const ReconRawLine *raw, ReconLine *out);
/* Parse an exact decimal amount into minor units; false, with *why, if it is not one. */
extern bool recon_parse_amount(const char *s, int len, char decimal_sep, int exponent, int64 *out,
							   const char **why);
/* Parse a date in fmt into a DateADT; false if it is not one. */
extern bool recon_parse_date(const char *s, int len, ReconDateFormat fmt, int32 *out);

/*
 * A line's id: its bank reference when it has one (SHA-256 over the source's
 * name and the reference); otherwise its content: SHA-256 over the source's
 * name, the parsed line and k, for the k-th line of the same content in one
 * import (so that two identical lines of one statement are two lines, and the
 * same statement imported again is the same lines), behind the booking day so
 * that a statement's ids are in date order (docs/reconciliation.md, "Line
 * ids").  The primary key of recon_lines then makes an import idempotent.
 */
typedef struct ReconHashState ReconHashState;
extern ReconHashState *recon_hash_begin(const char *source, int source_len);
extern void recon_hash_line(ReconHashState *s, ReconLine *line);
extern void recon_hash_end(ReconHashState *s);

/* A CSV reader (RFC 4180: quoted fields, "" inside quotes, CRLF or LF, newlines in quotes). */
typedef struct ReconCsv
{
	const char *p;
	const char *end;
	char		delimiter;
	int64		line_no;		/* the physical line the next record starts on */
	/* the record read last */
	int			nfields;
	int			maxfields;
	const char **field;
	int		   *len;
	int64		record_line;
} ReconCsv;

extern void recon_csv_init(ReconCsv *c, const char *data, int len, char delimiter);
/* The next record into c->field / c->len; false at the end (ZFC03 for an unterminated quote). */
extern bool recon_csv_next(ReconCsv *c);

/* ---- matching (recon_engine.c) ---- */

/* The keys a rule may require to be equal (besides the currency, always). */
typedef enum ReconKey
{
	RK_REFERENCE,
	RK_EXTERNAL_ID,
	RK_ACCOUNT,
	RK_NKEYS,
	RK_DATE = RK_NKEYS			/* a grouping key only: the day */
} ReconKey;

extern const char *const recon_key_names[RK_NKEYS + 1];

/* A statement line or a ledger entry, as the engine sees it. */
typedef struct ReconItem
{
	pg_uuid_t	id;
	int64		amount;			/* minor units; lines credit positive, entries by the source's side */
	CurrencyCode currency;
	int32		date;			/* DateADT */
	int32		match;			/* its match in this run, or -1 */
	const char *key[RK_NKEYS];	/* NULL when absent */
	bool		break_due;		/* a line: a break if it stays unmatched (the engine ignores it) */
} ReconItem;

typedef enum ReconKind
{
	RKIND_ONE_TO_ONE,
	RKIND_ONE_TO_MANY,			/* one line, several entries */
	RKIND_MANY_TO_ONE,			/* several lines, one entry */
	RKIND_MANY_TO_MANY,
	RKIND_COUNT
} ReconKind;

extern const char *const recon_kind_names[RKIND_COUNT];

typedef struct ReconRule
{
	const char *name;
	ReconKind	kind;
	uint32		keys;			/* bit k: key k must be equal */
	int64		tolerance;		/* minor units, -1: not set */
	int32		tolerance_bps;	/* of the line side's amount, -1: not set */
	int32		date_window;	/* days */
	double		min_similarity; /* of the references (pg_trgm), < 0: not used */
	int			group_by;		/* a ReconKey, for the many-sided kinds; -1 otherwise */
	int32		max_group;		/* the most items on a many side */
	bool		suggest;		/* its matches are suggestions, not confirmed */
} ReconRule;

/* A match found: members[first .. first + nlines) are lines, then nentries entries. */
typedef struct ReconMatch
{
	int32		rule;
	int32		first;
	int32		nlines;
	int32		nentries;
	int64		line_total;
	int64		entry_total;
} ReconMatch;

typedef double (*ReconSimilarityFn) (void *arg, const char *a, const char *b);

typedef struct ReconRun
{
	ReconItem  *lines;
	int32		nlines;
	ReconItem  *entries;
	int32		nentries;
	const ReconRule *rules;
	int			nrules;
	ReconSimilarityFn similarity;	/* needed by rules with min_similarity */
	void	   *similarity_arg;
	/* combinations a person rejected (recon_combination_hash), sorted: never proposed again */
	const uint64 *rejected;
	int32		nrejected;
	/* called after each rule with the matches so far */
	void		(*progress) (void *arg, int rule, int32 nmatches);
	void	   *progress_arg;
	/* out */
	ReconMatch *matches;
	int32		nmatches;
	int32		maxmatches;
	int32	   *members;
	int32		nmembers;
	int32		maxmembers;
} ReconRun;

/* The largest difference a rule accepts for an amount. */
extern int64 recon_tolerance(const ReconRule *r, int64 amount);
/* Run the rules in order, each over the items still unmatched. */
extern void recon_match_all(ReconRun *run);
/* The hash of a combination of line and entry ids (each side in any order). */
extern uint64 recon_combination_hash(const pg_uuid_t *lines, int nlines, const pg_uuid_t *entries, int nentries);

#endif							/* FINCORE_RECON_H */
