/*
 * owner_sql.h — SQL run with the owner's rights (owner_sql.c).
 */
#ifndef FINCORE_OWNER_SQL_H
#define FINCORE_OWNER_SQL_H

#include "fincore.h"
#include "executor/spi.h"

/* ---- SQL run with the owner's rights (owner_sql.c) ---- */

/* The search_path of every statement fincore runs: nothing of the caller's. */
#define FINCORE_SEARCH_PATH "pg_catalog, pg_temp"

/* Defines fincore.owner_context (called from _PG_init). */
extern void owner_sql_init(void);
/* SPI_connect, or elog. */
extern void fincore_spi_connect(void);
/*
 * SPI_prepare_cursor + SPI_keepplan under the pinned search_path, or elog.
 * Every statement fincore prepares comes through here.
 */
extern SPIPlanPtr fincore_prepare(const char *sql, int nargs, Oid *argtypes, int cursor_options);
/* Pin search_path at a new GUC nest level; undo with fincore_unpin_search_path. */
extern int	fincore_pin_search_path(void);
extern void fincore_unpin_search_path(int nest);
/*
 * Plan and run through an index (sequential scans, sorts and JIT off, and what
 * flags add, at a new GUC nest level): for statements on tables whose
 * statistics mislead the planner (rows inserted and soon deleted).
 */
#define INDEXED_NO_BITMAPS	0x01	/* bitmap scans off too: a look-up by key */
#define INDEXED_NO_JOINS	0x02	/* hash and merge joins and materialising off: nested loops */
extern int	fincore_indexed_plans_only(int flags);
extern int	fincore_execute_indexed(SPIPlanPtr plan, Datum *values, const char *nulls, long tcount, int flags);
/*
 * Run fn(arg) as the owner of a relation (reads past grants; past RLS through
 * the owner's fincore_owner policy), with search_path pinned.
 */
extern void fincore_run_as_owner(Oid relid, void (*fn) (void *), void *arg);
/* The OID of table fincore.<relname>; an error if it does not exist. */
extern Oid	fincore_table_oid(const char *relname);
/*
 * Citus is preloaded: fincore's tables may be distributed, their rows in
 * shards on other nodes (docs/scale-out.md).
 */
extern bool fincore_citus_preloaded(void);
/*
 * ZF703 on a Citus worker: the outbox and the queue are tables of the
 * coordinator, and what a worker wrote to its own copies would never reach
 * a consumer or a worker of the queue.  what: "an event", "a job", ...
 */
extern void fincore_require_coordinator(const char *what);

#endif							/* FINCORE_OWNER_SQL_H */
