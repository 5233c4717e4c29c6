/*
 * outbox.h — the outbox's C API for the ledger (outbox.c).
 */
#ifndef FINCORE_OUTBOX_H
#define FINCORE_OUTBOX_H

#include "fincore.h"
#include "utils/jsonb.h"

/* ---- outbox (outbox.c) ---- */

/*
 * Emit one event in the current transaction, exactly as fincore.emit() does:
 * it is rolled back with the transaction, and events of one (tenant,
 * aggregate_type, aggregate_id) reach every consumer in commit order (the call
 * takes a transaction-scoped lock on the aggregate: emit the events of several
 * aggregates in a consistent order, e.g. sorted by id, to avoid deadlocks).
 *
 *   tenant          the event's tenant; NULL = the current tenant (ZF203 if none).
 *                   Pass the row's tenant when there is no request tenant, e.g.
 *                   expiring holds in fincore.maintenance().
 *   topic           consumers subscribe to topics; the ledger uses "ledger".
 *   event_type      e.g. "transfer.created", "transfer.posted", "transfer.voided",
 *                   "transfer.expired", "transfer.reversed", "account.frozen".
 *   aggregate_type  e.g. "transfer", "account" (Debezium routes by it).
 *   aggregate_id    the aggregate's id as text (e.g. the transfer's uuid).
 *   payload         jsonb, not NULL (the transfer as JSON).
 *   headers         a jsonb object or NULL.
 *   id_out          receives the event id (a UUIDv7), unless NULL.
 *
 * Names are 1-200 characters of [A-Za-z0-9._:/-]; a bad argument raises
 * ERRCODE_FC_INVALID_EVENT.  Works inside the caller's SPI connection (it opens
 * its own) and whatever the current user: it writes as the table's owner.
 * The ledger should first check outbox_ledger_events_enabled(tenant).
 */
extern void outbox_emit_event(const pg_uuid_t *tenant, const char *topic, const char *event_type,
							  const char *aggregate_type, const char *aggregate_id,
							  Jsonb *payload, Jsonb *headers, pg_uuid_t *id_out);

/*
 * The ledger's events are its transfer rows (fincore.outbox_stream): n event
 * seqs for the rows a batch is about to write, from the sequence every event's
 * seq comes from; and the outbox's notification at commit, if it is on.
 */
extern void outbox_ledger_event_seqs(int n, int64 *seqs);

/*
 * Does the ledger emit events for this tenant (NULL = the current tenant; true
 * when there is none)?  fincore.outbox_settings.ledger_events, default true,
 * set per tenant with fincore.set_ledger_events(boolean).  Cached per backend
 * and reloaded only when the table changes: a call costs a short array scan.
 */
extern bool outbox_ledger_events_enabled(const pg_uuid_t *tenant);

#endif							/* FINCORE_OUTBOX_H */
