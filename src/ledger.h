/*
 * ledger.h — what the ledger shares with accounts.c and the rest of fincore
 * (ledger*.c, accounts.c); the ledger's own types are in ledger_int.h.
 */
#ifndef FINCORE_LEDGER_H
#define FINCORE_LEDGER_H

#include "fincore.h"
#include "money.h"
#include "executor/spi.h"

/* ---- ledger (ledger.c, accounts.c) ---- */

/* Account flags, stored as a bit mask in fincore.accounts.flags. */
#define ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS	0x01
#define ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS	0x02
#define ACCOUNT_HISTORY							0x04
#define ACCOUNT_HOT								0x08

/* What never changes about an account, cached per backend by id. */
typedef struct AccountMeta
{
	pg_uuid_t	tenant;			/* hash key: the tenant and the id (ids are */
	pg_uuid_t	id;				/* unique within a tenant) */
	CurrencyCode currency;
	int32		code;
	int32		flags;
} AccountMeta;

/* Cached metadata of an account (NULL if not cached). */
extern AccountMeta *account_meta_lookup(const pg_uuid_t *tenant, const pg_uuid_t *id);
extern void account_meta_remember(const AccountMeta *meta);
extern void account_meta_forget(const pg_uuid_t *tenant, const pg_uuid_t *id);
/* The installed SQL of the ledger: 1 for 0.2.0's tables, 0 for 0.1.0's (ledger_store.c). */
extern int	ledger_schema(void);
/* An account's status change as an outbox event (topic "ledger"), e.g. "account.closed". */
extern void account_status_event(const pg_uuid_t *id, const pg_uuid_t *tenant, const char *status,
								 const char *type);
/* Defines fincore.ledger_store (called from _PG_init; ledger_direct.c). */
extern void ledger_store_init(void);
/* SPI_prepare + SPI_keepplan, or elog. */
extern SPIPlanPtr ledger_prepare(const char *sql, int nargs, Oid *argtypes);
/* uuid text for messages */
extern char *uuid_text(const pg_uuid_t *id);

static inline bool
uuid_equal(const pg_uuid_t *a, const pg_uuid_t *b)
{
	return memcmp(a, b, sizeof(pg_uuid_t)) == 0;
}

/*
 * Reserved ids, as in TigerBeetle (where 0 and 2^128 - 1 are reserved): the
 * nil UUID and the all-ones UUID are never the id of a transfer or an account.
 * 0 when id is an ordinary id, else -1 for nil and 1 for all ones.
 */
static inline int
uuid_reserved(const pg_uuid_t *id)
{
	bool		zero = true,
				ones = true;

	for (int i = 0; i < UUID_LEN; i++)
	{
		zero &= id->data[i] == 0x00;
		ones &= id->data[i] == 0xFF;
	}
	return zero ? -1 : ones ? 1 : 0;
}

#endif							/* FINCORE_LEDGER_H */
