-- fincore 0.1.0 -> 0.2.0.  Keep in step with sql/modules/: every schema change of 0.2.0 lands
-- here too, so a 0.1.0 database upgrades in place (ALTER EXTENSION fincore UPDATE);
-- test/integration/test_upgrade.py checks that an upgraded database and a new one are the same.
\echo Use "ALTER EXTENSION fincore UPDATE TO '0.2.0'" to load this file. \quit

-- ---- Ledger tables (issue 14) ------------------------------------------------------------------

-- Transfers store TigerBeetle's flags (issue 14).  First of all: the SQL functions made again
-- below bind the table's row type, which then cannot change.
ALTER TABLE fincore.transfers ADD COLUMN flags integer NOT NULL DEFAULT 0;
-- The ledger's events are its transfer rows (issue 15): their place in the event stream.
ALTER TABLE fincore.transfers ADD COLUMN event_seq bigint, ADD COLUMN event_txid xid8;

-- An account's transfers are indexed by the account alone (issue 15), so that B-tree
-- deduplication keeps one key per account and 6 bytes a transfer (sql/modules/ledger.sql).
-- Rebuilt here: on a large ledger, this is most of the upgrade's time.
DROP INDEX fincore.transfers_debit_idx;
DROP INDEX fincore.transfers_credit_idx;
CREATE INDEX transfers_debit_idx ON fincore.transfers (debit_account_id);
CREATE INDEX transfers_credit_idx ON fincore.transfers (credit_account_id);

-- ---- Keys lead with the tenant (issue 16) -------------------------------------------------------

-- Every tenant table's primary, unique and exclusion keys and foreign keys lead with tenant_id
-- (docs/scale-out.md): an id is unique within its tenant, and on Citus a tenant's rows are one
-- shard's.  The indexes the new keys make redundant go.  Rebuilt here: on a large ledger, the
-- transfers' key is most of this step's time.
ALTER TABLE fincore.accounts DROP CONSTRAINT accounts_pkey, ADD PRIMARY KEY (tenant_id, id);
DROP INDEX fincore.accounts_tenant_idx;
ALTER TABLE fincore.transfers DROP CONSTRAINT transfers_pkey, ADD PRIMARY KEY (tenant_id, id);
DROP INDEX fincore.transfers_pending_once_idx;
CREATE UNIQUE INDEX transfers_pending_once_idx ON fincore.transfers (tenant_id, pending_id) WHERE pending_id IS NOT NULL;
ALTER TABLE fincore.pending_holds DROP CONSTRAINT pending_holds_pkey, ADD PRIMARY KEY (tenant_id, transfer_id);
DROP INDEX fincore.pending_holds_tenant_idx;
ALTER TABLE fincore.account_history DROP CONSTRAINT account_history_pkey,
    ADD PRIMARY KEY (tenant_id, account_id, at, transfer_id);
DROP INDEX fincore.account_history_tenant_idx;
-- Fee schedules: the code key's foreign key and the no-overlap constraint name the tenant too
-- (the constraint's uuid equality takes btree_gist, which 0.2.0 requires).
ALTER TABLE fincore.fee_schedules DROP CONSTRAINT fee_schedules_code_key_fkey,
    DROP CONSTRAINT fee_schedules_pkey, DROP CONSTRAINT fee_schedules_no_overlap;
ALTER TABLE fincore.fee_schedule_codes DROP CONSTRAINT fee_schedule_codes_pkey, ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE fincore.fee_schedules ADD PRIMARY KEY (tenant_id, id),
    ADD FOREIGN KEY (tenant_id, code_key) REFERENCES fincore.fee_schedule_codes (tenant_id, id),
    ADD CONSTRAINT fee_schedules_no_overlap EXCLUDE USING gist (
        tenant_id WITH OPERATOR(pg_catalog.=),
        pg_catalog.int8range(code_key, code_key, '[]') WITH OPERATOR(pg_catalog.&&),
        pg_catalog.tstzrange(effective_from, effective_until) WITH OPERATOR(pg_catalog.&&));
-- Hot accounts' deltas are summed by tenant and account.
CREATE OR REPLACE VIEW fincore.account_balances WITH (security_invoker = true) AS
    SELECT a.id, a.tenant_id, a.currency, a.code, a.status,
           ARRAY(SELECT f.name FROM (VALUES (1, 'debits_must_not_exceed_credits'), (2, 'credits_must_not_exceed_debits'),
                                           (4, 'history'), (8, 'hot')) AS f(bit, name)
                  WHERE a.flags & f.bit <> 0 ORDER BY f.bit) AS flags,
           a.credit_limit, a.external_ref, a.metadata,
           a.debits_pending + coalesce(d.dp, 0) AS debits_pending,
           a.debits_posted + coalesce(d.dpo, 0) AS debits_posted,
           a.credits_pending + coalesce(d.cp, 0) AS credits_pending,
           a.credits_posted + coalesce(d.cpo, 0) AS credits_posted,
           a.created_at
      FROM fincore.accounts a
      LEFT JOIN LATERAL (SELECT sum(x.debits_pending)::bigint AS dp, sum(x.debits_posted)::bigint AS dpo,
                                sum(x.credits_pending)::bigint AS cp, sum(x.credits_posted)::bigint AS cpo
                           FROM fincore.account_deltas x WHERE x.tenant_id = a.tenant_id AND x.account_id = a.id) d ON true;

-- ---- Ledger events as transfer rows (issue 15) --------------------------------------------------

-- The ledger's events are its transfer rows (no second row, no copy): a transfer written
-- while its tenant's ledger events are on carries its place in the event stream, event_seq
-- (from fincore.outbox_seq, as every event's seq) and event_txid (the writing transaction),
-- by which consumers find it, as they find fincore.outbox_events rows (fincore.outbox_stream).
CREATE INDEX transfers_event_seq_idx ON fincore.transfers (event_seq) WHERE event_seq IS NOT NULL;
CREATE INDEX transfers_event_txid_idx ON fincore.transfers (event_txid) WHERE event_txid IS NOT NULL;
-- ---------------------------------------------------------------------------
-- The ledger's events: transfer rows with an event_seq, in the stream consumers read.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore._ledger_event_id(seq bigint, at timestamptz) RETURNS uuid
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_ledger_event_id';
COMMENT ON FUNCTION fincore._ledger_event_id(bigint, timestamptz) IS
    'Internal: the event id of a transfer event: a UUIDv7 of its time whose low 62 bits are its seq, as every event id.';

CREATE FUNCTION fincore._transfer_event_payload(t fincore.transfers) RETURNS jsonb
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_transfer_event_payload';
COMMENT ON FUNCTION fincore._transfer_event_payload(fincore.transfers) IS
    'Internal: a transfer event''s payload, the transfer row as JSON (its columns, and the amount as text too).';

CREATE VIEW fincore.outbox_stream WITH (security_invoker = true) AS
    -- The transfers without an event are left out by the outer WHERE, not by one in their branch:
    -- a branch with a WHERE of its own is not flattened into the UNION ALL's append, whose
    -- ordered scan by seq (a Merge Append of index scans, no sort) the consumers' reads need.
    SELECT s.id, s.seq, s.txid, s.created_at, s.tenant_id, s.topic, s.type, s.aggregatetype,
           s.aggregateid, s.payload, s.headers
      FROM (SELECT e.id, e.seq, e.txid, e.created_at, e.tenant_id, e.topic, e.type, e.aggregatetype,
                   e.aggregateid, e.payload, e.headers
              FROM fincore.outbox_events e
            UNION ALL
            -- The aggregate is the hold for its post, void or expiry and the original transfer
            -- for a reversal, so that a hold's story reaches a consumer in order.
            SELECT fincore._ledger_event_id(t.event_seq, t.created_at), t.event_seq, t.event_txid,
                   t.created_at, t.tenant_id, 'ledger'::text,
                   CASE t.kind WHEN 'post' THEN 'transfer.posted' WHEN 'void' THEN 'transfer.voided'
                               WHEN 'expire' THEN 'transfer.expired' WHEN 'reversal' THEN 'transfer.reversed'
                               ELSE 'transfer.created' END,
                   'transfer'::text,
                   CASE WHEN t.kind OPERATOR(pg_catalog.=) ANY (ARRAY['post', 'void', 'expire']) THEN t.pending_id
                        WHEN t.kind OPERATOR(pg_catalog.=) 'reversal' THEN t.reversal_of
                        ELSE t.id END::text,
                   fincore._transfer_event_payload(t), NULL::jsonb
              FROM fincore.transfers t) AS s
     WHERE s.seq IS NOT NULL;

COMMENT ON VIEW fincore.outbox_stream IS
    'Every event consumers read, in seq order within a batch: fincore.outbox_events rows and the ledger''s transfer events (transfer rows with an event_seq). Read with the caller''s rights.';

-- Consumers' lag counts the whole stream.
CREATE OR REPLACE FUNCTION fincore.consumer_lag()
    RETURNS TABLE (consumer text, topics text[], tenant_scope uuid, pending bigint,
                   oldest_pending timestamptz, lag interval, retrying bigint, dead bigint,
                   positioned_at timestamptz)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    -- The stream's rows as fincore.outbox_stream has them (its events, and the transfers that
    -- carry a ledger event), but only the columns counted here: the view's payload of a
    -- transfer is a function of the transfer's row, which Citus cannot call on a shard's row.
    -- PL/pgSQL, so that the ledger's table need not exist when this is created.
    RETURN QUERY
    SELECT c.name, c.topics, c.tenant_scope, p.n, p.oldest, pg_catalog.now() OPERATOR(pg_catalog.-) p.oldest,
           (SELECT pg_catalog.count(*) FROM fincore.outbox_retries r WHERE r.consumer OPERATOR(pg_catalog.=) c.name),
           (SELECT pg_catalog.count(*) FROM fincore.dead_events d WHERE d.consumer OPERATOR(pg_catalog.=) c.name),
           c.positioned_at
      FROM fincore.outbox_consumers c
     CROSS JOIN LATERAL (
        SELECT pg_catalog.count(*) AS n, pg_catalog.min(e.created_at) AS oldest
          FROM (SELECT o.txid, o.seq, o.created_at, o.tenant_id, o.topic, o.aggregatetype, o.aggregateid
                  FROM fincore.outbox_events o
                UNION ALL
                SELECT t.event_txid, t.event_seq, t.created_at, t.tenant_id, CAST('ledger' AS pg_catalog.text),
                       CAST('transfer' AS pg_catalog.text),
                       CAST(CASE WHEN t.kind OPERATOR(pg_catalog.=) ANY (ARRAY['post', 'void', 'expire']) THEN t.pending_id
                                 WHEN t.kind OPERATOR(pg_catalog.=) 'reversal' THEN t.reversal_of
                                 ELSE t.id END AS pg_catalog.text)
                  FROM fincore.transfers t WHERE t.event_seq IS NOT NULL) e
         WHERE e.seq OPERATOR(pg_catalog.>) (SELECT coalesce(pg_catalog.max(r.seq_floor), 0) FROM fincore.outbox_restores r)
           AND (e.txid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmax(c.position)
                OR e.txid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip(c.position))))
           AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, c.position)
           AND NOT (c.batch_end IS NOT NULL AND pg_catalog.pg_visible_in_snapshot(e.txid, c.batch_end)
                    AND e.seq OPERATOR(pg_catalog.<=) c.batch_acked)
           AND ('*' OPERATOR(pg_catalog.=) ANY (c.topics) OR e.topic OPERATOR(pg_catalog.=) ANY (c.topics))
           AND (c.tenant_scope IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) c.tenant_scope)
           AND (c.partitions IS NULL
                OR fincore.event_partition(e.tenant_id, e.aggregatetype, e.aggregateid, c.partitions)
                   OPERATOR(pg_catalog.=) c.partition_no)) AS p
     ORDER BY c.name;
END
$fn$;
COMMENT ON FUNCTION fincore.consumer_lag() IS
    'Each consumer''s backlog (each partition of a partitioned one: <consumer>/<k>): committed events not yet acknowledged, the oldest one''s time and age, retries waiting, dead letters, when its position last moved.';

-- Transfer ids that a create_transfers batch refused on the ledger's state
-- (TigerBeetle's transient errors: an account or hold not found, a limit, a
-- frozen or closed account, an overflow, a fee larger than the amount): the id
-- stays failed (id_already_failed), so that a retry never succeeds later by
-- accident.  Not a record of money; refusals that depend on the request alone
-- are not recorded.
CREATE TABLE fincore.failed_transfers (
    tenant_id uuid        NOT NULL DEFAULT fincore.require_tenant(),
    id        uuid        NOT NULL,
    result    text        NOT NULL,
    failed_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
COMMENT ON TABLE fincore.failed_transfers IS
    'Transfer ids a create_transfers batch refused on the ledger''s state, with the result; such an id stays failed (id_already_failed). Written only by fincore''s functions.';
SELECT fincore.protect('fincore.failed_transfers');
SELECT pg_catalog.pg_extension_config_dump('fincore.failed_transfers', '');

-- set_ledger_events: the time comes with the row (Citus takes only immutable functions in DO UPDATE).
CREATE OR REPLACE FUNCTION fincore.set_ledger_events(enabled boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    -- The time comes with the row, not from the DO UPDATE clause: Citus takes only immutable
    -- functions there (outbox_settings is a reference table on Citus).
    INSERT INTO fincore.outbox_settings AS s (tenant_id, ledger_events, updated_at)
    VALUES (fincore.require_tenant(), set_ledger_events.enabled, pg_catalog.now())
    ON CONFLICT ON CONSTRAINT outbox_settings_pkey
    DO UPDATE SET ledger_events = excluded.ledger_events, updated_at = excluded.updated_at;
END
$fn$;

-- ---- Hardening (issue 13) ----------------------------------------------------------------------

-- Bounds per call: fincore.max_batch_size for the SQL functions.
CREATE FUNCTION fincore._max_batch_size() RETURNS integer
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_max_batch_size_setting';
COMMENT ON FUNCTION fincore._max_batch_size() IS
    'The value of fincore.max_batch_size: the most items one fincore call takes.';

-- SQL functions are bound when created (BEGIN ATOMIC): the caller's search_path cannot reach them.
CREATE FUNCTION fincore.transfer_effects(kind text, debit_account_id uuid, credit_account_id uuid,
        amount bigint, pending_amount bigint,
        OUT account_id uuid, OUT debits_pending bigint, OUT debits_posted bigint,
        OUT credits_pending bigint, OUT credits_posted bigint)
    RETURNS SETOF record
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE ROWS 2
BEGIN ATOMIC
    SELECT transfer_effects.debit_account_id,
           CASE transfer_effects.kind WHEN 'pending' THEN transfer_effects.amount WHEN 'posted' THEN 0
                                      WHEN 'reversal' THEN 0 ELSE -transfer_effects.pending_amount END,
           CASE WHEN transfer_effects.kind IN ('posted', 'post', 'reversal') THEN transfer_effects.amount ELSE 0 END,
           0::bigint, 0::bigint
    UNION ALL
    SELECT transfer_effects.credit_account_id, 0::bigint, 0::bigint,
           CASE transfer_effects.kind WHEN 'pending' THEN transfer_effects.amount WHEN 'posted' THEN 0
                                      WHEN 'reversal' THEN 0 ELSE -transfer_effects.pending_amount END,
           CASE WHEN transfer_effects.kind IN ('posted', 'post', 'reversal') THEN transfer_effects.amount ELSE 0 END;
END;
COMMENT ON FUNCTION fincore.transfer_effects(text, uuid, uuid, bigint, bigint) IS
    'How a transfer of this kind, accounts, amount and pending amount changes the counters of its debit and its credit account (two rows).';

CREATE OR REPLACE FUNCTION fincore.transfer_effects(t fincore.transfers,
        OUT account_id uuid, OUT debits_pending bigint, OUT debits_posted bigint,
        OUT credits_pending bigint, OUT credits_posted bigint)
    RETURNS SETOF record
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE ROWS 2
BEGIN ATOMIC
    SELECT * FROM fincore.transfer_effects(t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.pending_amount);
END;

CREATE OR REPLACE FUNCTION fincore.balance(account uuid, as_of timestamptz DEFAULT NULL,
        OUT debits_pending bigint, OUT debits_posted bigint, OUT credits_pending bigint, OUT credits_posted bigint,
        OUT posted bigint, OUT pending bigint, OUT available bigint)
    RETURNS record
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
DECLARE
    tenant uuid := fincore.tenant_id();
BEGIN
    -- The caller's tenant names the account's shard (docs/scale-out.md); a role without one (a
    -- superuser, the owner) reads the account of whichever tenant has the id.
    IF tenant IS NULL THEN
        SELECT a.tenant_id INTO tenant FROM fincore.accounts a WHERE a.id OPERATOR(pg_catalog.=) balance.account LIMIT 1;
    END IF;
    WITH acct AS (
        SELECT a.id, a.tenant_id, a.flags, a.credit_limit, a.debits_pending, a.debits_posted, a.credits_pending,
               a.credits_posted
          FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = balance.account
    ), now_counters AS (
        SELECT a.debits_pending + coalesce(sum(d.debits_pending), 0)::bigint AS dp,
               a.debits_posted + coalesce(sum(d.debits_posted), 0)::bigint AS dpo,
               a.credits_pending + coalesce(sum(d.credits_pending), 0)::bigint AS cp,
               a.credits_posted + coalesce(sum(d.credits_posted), 0)::bigint AS cpo
          FROM acct a LEFT JOIN fincore.account_deltas d ON d.tenant_id = a.tenant_id AND d.account_id = a.id
         WHERE a.tenant_id = tenant
         GROUP BY a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
    ), history_counters AS (
        SELECT h.debits_pending AS dp, h.debits_posted AS dpo, h.credits_pending AS cp, h.credits_posted AS cpo
          FROM fincore.account_history h
         WHERE h.tenant_id = tenant AND h.account_id = balance.account
           AND h.at <= balance.as_of
         ORDER BY h.at DESC, h.transfer_id DESC LIMIT 1
    ), replayed_counters AS (
        SELECT coalesce(sum(e.debits_pending), 0)::bigint AS dp, coalesce(sum(e.debits_posted), 0)::bigint AS dpo,
               coalesce(sum(e.credits_pending), 0)::bigint AS cp, coalesce(sum(e.credits_posted), 0)::bigint AS cpo
          FROM fincore.transfers t, fincore.transfer_effects(t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.pending_amount) e
         WHERE (t.debit_account_id = balance.account OR t.credit_account_id = balance.account)
           AND t.tenant_id = tenant
           AND t.created_at <= balance.as_of AND e.account_id = balance.account
    ), chosen AS (
        SELECT * FROM now_counters WHERE balance.as_of IS NULL
        UNION ALL
        SELECT * FROM history_counters
         WHERE balance.as_of IS NOT NULL AND (SELECT flags & 4 <> 0 FROM acct)
        UNION ALL
        SELECT coalesce(h.dp, 0), coalesce(h.dpo, 0), coalesce(h.cp, 0), coalesce(h.cpo, 0)
          FROM (SELECT 1) one LEFT JOIN history_counters h ON true
         WHERE balance.as_of IS NOT NULL AND (SELECT flags & 4 <> 0 FROM acct)
           AND NOT EXISTS (SELECT 1 FROM history_counters)
        UNION ALL
        SELECT * FROM replayed_counters
         WHERE balance.as_of IS NOT NULL AND (SELECT flags & 4 = 0 FROM acct)
    )
    SELECT c.dp, c.dpo, c.cp, c.cpo,
           c.cpo - c.dpo,
           c.cp - c.dp,
           c.cpo - c.dpo - c.dp + coalesce((SELECT a.credit_limit FROM acct a), 0)
      INTO debits_pending, debits_posted, credits_pending, credits_posted, posted, pending, available
      FROM chosen c
     WHERE EXISTS (SELECT 1 FROM acct);
END
$fn$;

-- account_transfers takes TigerBeetle's filters (a new signature), and account_balances() is new.
DROP FUNCTION fincore.account_transfers(uuid, timestamptz, timestamptz, integer);
-- Filters as TigerBeetle's AccountFilter: a time range (since inclusive, until exclusive), the
-- account's debits and/or credits, a code, newest first (reversed), at most lim rows.
CREATE FUNCTION fincore.account_transfers(account uuid, since timestamptz DEFAULT NULL,
        until timestamptz DEFAULT NULL, lim integer DEFAULT 100, debits boolean DEFAULT true,
        credits boolean DEFAULT true, reversed boolean DEFAULT false, code integer DEFAULT NULL)
    RETURNS SETOF fincore.transfers
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
DECLARE
    tenant uuid := fincore.tenant_id();
BEGIN
    -- The caller's tenant names the account's shard (docs/scale-out.md); a role without one (a
    -- superuser, the owner) reads the account of whichever tenant has the id.
    IF tenant IS NULL THEN
        SELECT a.tenant_id INTO tenant FROM fincore.accounts a WHERE a.id OPERATOR(pg_catalog.=) account_transfers.account LIMIT 1;
    END IF;
    RETURN QUERY SELECT * FROM (
        SELECT t.* FROM fincore.transfers t
         WHERE t.tenant_id OPERATOR(pg_catalog.=) tenant
           AND t.debit_account_id OPERATOR(pg_catalog.=) account_transfers.account
           AND account_transfers.debits
           AND (account_transfers.since IS NULL OR t.created_at OPERATOR(pg_catalog.>=) account_transfers.since)
           AND (account_transfers.until IS NULL OR t.created_at OPERATOR(pg_catalog.<) account_transfers.until)
           AND (account_transfers.code IS NULL OR t.code OPERATOR(pg_catalog.=) account_transfers.code)
        UNION ALL
        SELECT t.* FROM fincore.transfers t
         WHERE t.tenant_id OPERATOR(pg_catalog.=) tenant
           AND t.credit_account_id OPERATOR(pg_catalog.=) account_transfers.account
           AND account_transfers.credits
           AND (account_transfers.since IS NULL OR t.created_at OPERATOR(pg_catalog.>=) account_transfers.since)
           AND (account_transfers.until IS NULL OR t.created_at OPERATOR(pg_catalog.<) account_transfers.until)
           AND (account_transfers.code IS NULL OR t.code OPERATOR(pg_catalog.=) account_transfers.code)
    ) s
    ORDER BY CASE WHEN account_transfers.reversed THEN NULL ELSE s.created_at END,
             CASE WHEN account_transfers.reversed THEN NULL ELSE s.id END,
             CASE WHEN account_transfers.reversed THEN s.created_at END DESC,
             CASE WHEN account_transfers.reversed THEN s.id END DESC
    LIMIT GREATEST(COALESCE(account_transfers.lim, 100), 0);
END
$fn$;
COMMENT ON FUNCTION fincore.account_transfers(uuid, timestamptz, timestamptz, integer, boolean, boolean, boolean, integer) IS
    'The transfers of an account in time order (newest first if reversed), from since (inclusive) to until (exclusive), its debits and/or credits, of one code if given, at most lim (TigerBeetle''s get_account_transfers and AccountFilter).';

-- The balances of a history account after each of its transfers, with the same filters
-- (TigerBeetle's get_account_balances).  A function beside the view of the same name.
CREATE FUNCTION fincore.account_balances(account uuid, since timestamptz DEFAULT NULL,
        until timestamptz DEFAULT NULL, lim integer DEFAULT 100, debits boolean DEFAULT true,
        credits boolean DEFAULT true, reversed boolean DEFAULT false, code integer DEFAULT NULL,
        OUT transfer_id uuid, OUT at timestamptz, OUT debits_pending bigint, OUT debits_posted bigint,
        OUT credits_pending bigint, OUT credits_posted bigint)
    RETURNS SETOF record
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
DECLARE
    tenant uuid := fincore.tenant_id();
BEGIN
    -- The caller's tenant names the account's shard (docs/scale-out.md); a role without one (a
    -- superuser, the owner) reads the account of whichever tenant has the id.
    IF tenant IS NULL THEN
        SELECT a.tenant_id INTO tenant FROM fincore.accounts a WHERE a.id OPERATOR(pg_catalog.=) account_balances.account LIMIT 1;
    END IF;
    RETURN QUERY SELECT h.transfer_id, h.at, h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted
      FROM fincore.account_history h
      JOIN fincore.transfers t ON t.tenant_id OPERATOR(pg_catalog.=) h.tenant_id
                              AND t.id OPERATOR(pg_catalog.=) h.transfer_id
     WHERE h.tenant_id OPERATOR(pg_catalog.=) tenant
       AND h.account_id OPERATOR(pg_catalog.=) account_balances.account
       AND ((account_balances.debits AND t.debit_account_id OPERATOR(pg_catalog.=) account_balances.account)
            OR (account_balances.credits AND t.credit_account_id OPERATOR(pg_catalog.=) account_balances.account))
       AND (account_balances.since IS NULL OR h.at OPERATOR(pg_catalog.>=) account_balances.since)
       AND (account_balances.until IS NULL OR h.at OPERATOR(pg_catalog.<) account_balances.until)
       AND (account_balances.code IS NULL OR t.code OPERATOR(pg_catalog.=) account_balances.code)
     ORDER BY CASE WHEN account_balances.reversed THEN NULL ELSE h.at END,
              CASE WHEN account_balances.reversed THEN NULL ELSE h.transfer_id END,
              CASE WHEN account_balances.reversed THEN h.at END DESC,
              CASE WHEN account_balances.reversed THEN h.transfer_id END DESC
     LIMIT GREATEST(COALESCE(account_balances.lim, 100), 0);
END
$fn$;
COMMENT ON FUNCTION fincore.account_balances(uuid, timestamptz, timestamptz, integer, boolean, boolean, boolean, integer) IS
    'The four counters of a history account after each of its transfers (newest first if reversed), with account_transfers()'' filters: time range, debits and/or credits, code, at most lim (TigerBeetle''s get_account_balances). Empty for an account without history.';

CREATE OR REPLACE FUNCTION fincore.verify()
    RETURNS TABLE (invariant text, tenant_id uuid, subject text, detail text)
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
DECLARE
    tenant uuid;
BEGIN
    -- One tenant at a time, every statement naming it: on Citus each runs on the tenant's shard
    -- (docs/scale-out.md).  Every tenant with accounts or transfers the caller may see.
    FOR tenant IN SELECT a.tenant_id FROM fincore.accounts a UNION SELECT t.tenant_id FROM fincore.transfers t
                  ORDER BY 1 LOOP
        -- One statement per invariant: Citus runs each on the tenant's shard, where it would plan
        -- their UNION as a join across shards.
        -- 1. Double entry: per tenant and currency, debits equal credits (posted and pending).
        RETURN QUERY SELECT 'debits_equal_credits', b.tenant_id, b.currency,
               pg_catalog.format('debits posted %s, credits posted %s, debits pending %s, credits pending %s',
                                 sum(b.debits_posted), sum(b.credits_posted), sum(b.debits_pending), sum(b.credits_pending))
          FROM fincore.account_balances b
         WHERE b.tenant_id = tenant
         GROUP BY b.tenant_id, b.currency
        HAVING sum(b.debits_posted) <> sum(b.credits_posted) OR sum(b.debits_pending) <> sum(b.credits_pending);
        -- 2. Every account's counters are what its transfers imply.
        RETURN QUERY WITH implied AS (
            SELECT t.tenant_id, e.account_id, sum(e.debits_pending)::bigint AS dp, sum(e.debits_posted)::bigint AS dpo,
                   sum(e.credits_pending)::bigint AS cp, sum(e.credits_posted)::bigint AS cpo
              FROM fincore.transfers t, fincore.transfer_effects(t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.pending_amount) e
             WHERE t.tenant_id = tenant
             GROUP BY t.tenant_id, e.account_id
        )
        SELECT 'counters_match_transfers', b.tenant_id, b.id::text,
               pg_catalog.format('counters %s/%s/%s/%s, transfers imply %s/%s/%s/%s',
                                 b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted,
                                 coalesce(i.dp, 0), coalesce(i.dpo, 0), coalesce(i.cp, 0), coalesce(i.cpo, 0))
          FROM fincore.account_balances b LEFT JOIN implied i ON i.tenant_id = b.tenant_id AND i.account_id = b.id
         WHERE b.tenant_id = tenant AND (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted)
               IS DISTINCT FROM (coalesce(i.dp, 0), coalesce(i.dpo, 0), coalesce(i.cp, 0), coalesce(i.cpo, 0));
        RETURN QUERY SELECT 'transfer_accounts_exist', t.tenant_id, t.id::text, 'a transfer names an account that does not exist'
          FROM fincore.transfers t
         WHERE t.tenant_id = tenant
           AND (NOT EXISTS (SELECT 1 FROM fincore.accounts a
                            WHERE a.tenant_id = t.tenant_id AND a.id = t.debit_account_id AND a.currency = t.currency)
                OR NOT EXISTS (SELECT 1 FROM fincore.accounts a
                                WHERE a.tenant_id = t.tenant_id AND a.id = t.credit_account_id AND a.currency = t.currency));
        -- 3. No limit flag is violated.
        RETURN QUERY SELECT 'debits_must_not_exceed_credits', b.tenant_id, b.id::text,
               pg_catalog.format('debits %s exceed credits %s + limit %s', b.debits_pending + b.debits_posted,
                                 b.credits_posted, coalesce(b.credit_limit, 0))
          FROM fincore.account_balances b
         WHERE b.tenant_id = tenant AND 'debits_must_not_exceed_credits' = ANY (b.flags) AND b.debits_pending + b.debits_posted > b.credits_posted + coalesce(b.credit_limit, 0);
        RETURN QUERY SELECT 'credits_must_not_exceed_debits', b.tenant_id, b.id::text,
               pg_catalog.format('credits %s exceed debits %s + limit %s', b.credits_pending + b.credits_posted,
                                 b.debits_posted, coalesce(b.credit_limit, 0))
          FROM fincore.account_balances b
         WHERE b.tenant_id = tenant AND 'credits_must_not_exceed_debits' = ANY (b.flags) AND b.credits_pending + b.credits_posted > b.debits_posted + coalesce(b.credit_limit, 0);
        -- 4. History rows agree: the latest equals the counters, and each row is what the
        --    account's transfers up to it imply.
        RETURN QUERY SELECT 'history_matches_counters', b.tenant_id, b.id::text, 'the latest history row differs from the counters'
          FROM fincore.account_balances b
          JOIN LATERAL (SELECT h.* FROM fincore.account_history h WHERE h.tenant_id = b.tenant_id AND h.account_id = b.id
                         ORDER BY h.at DESC, h.transfer_id DESC LIMIT 1) h ON true
         WHERE b.tenant_id = tenant AND 'history' = ANY (b.flags)
           AND (h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted)
               IS DISTINCT FROM (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted);
        RETURN QUERY SELECT 'history_matches_transfers', h.tenant_id, h.account_id::text || ' @ ' || h.transfer_id::text,
               pg_catalog.format('history %s/%s/%s/%s, transfers up to it imply %s/%s/%s/%s',
                                 h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted,
                                 c.dp, c.dpo, c.cp, c.cpo)
          FROM fincore.account_history h
          JOIN (SELECT t.tenant_id, e.account_id, t.id AS transfer_id,
                       sum(e.debits_pending) OVER w AS dp, sum(e.debits_posted) OVER w AS dpo,
                       sum(e.credits_pending) OVER w AS cp, sum(e.credits_posted) OVER w AS cpo
                  FROM fincore.transfers t, fincore.transfer_effects(t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.pending_amount) e
                 WHERE t.tenant_id = tenant
                   AND EXISTS (SELECT 1 FROM fincore.accounts a
                                WHERE a.tenant_id = t.tenant_id AND a.id = e.account_id AND a.flags & 4 <> 0)
                WINDOW w AS (PARTITION BY t.tenant_id, e.account_id ORDER BY t.created_at, t.id)) c
            ON c.tenant_id = h.tenant_id AND c.account_id = h.account_id AND c.transfer_id = h.transfer_id
         WHERE h.tenant_id = tenant
           AND (h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted)
               IS DISTINCT FROM (c.dp, c.dpo, c.cp, c.cpo);
        RETURN QUERY SELECT 'history_covers_transfers', b.tenant_id, b.id::text,
               'a transfer of a history account has no history row'
          FROM fincore.account_balances b
         WHERE b.tenant_id = tenant AND 'history' = ANY (b.flags)
           AND EXISTS (SELECT 1 FROM fincore.transfers t
                        WHERE t.tenant_id = b.tenant_id AND (t.debit_account_id = b.id OR t.credit_account_id = b.id)
                          AND NOT EXISTS (SELECT 1 FROM fincore.account_history h
                                           WHERE h.tenant_id = b.tenant_id AND h.account_id = b.id
                                             AND h.transfer_id = t.id));
        -- 5. Holds: each is resolved at most once, open holds are listed, reversals stay within the original.
        RETURN QUERY SELECT 'open_holds_listed', t.tenant_id, t.id::text, 'an unresolved hold is missing from pending_holds'
          FROM fincore.transfers t
         WHERE t.tenant_id = tenant AND t.kind = 'pending'
           AND NOT EXISTS (SELECT 1 FROM fincore.transfers r WHERE r.tenant_id = t.tenant_id AND r.pending_id = t.id)
           AND NOT EXISTS (SELECT 1 FROM fincore.pending_holds p WHERE p.tenant_id = t.tenant_id AND p.transfer_id = t.id);
        RETURN QUERY SELECT 'reversals_within_original', t.tenant_id, t.id::text,
               pg_catalog.format('reversed %s of %s', sum(r.amount), t.amount)
          FROM fincore.transfers t JOIN fincore.transfers r ON r.tenant_id = t.tenant_id AND r.reversal_of = t.id
         WHERE t.tenant_id = tenant AND r.tenant_id = tenant
         GROUP BY t.tenant_id, t.id, t.amount
        HAVING sum(r.amount) > t.amount;
    END LOOP;
END
$fn$;

-- Balancing, closing and imported transfers (issue 14): more fields of a batch request.
ALTER TYPE fincore.transfer_request ADD ATTRIBUTE balancing_debit boolean, ADD ATTRIBUTE balancing_credit boolean,
    ADD ATTRIBUTE closing_debit boolean, ADD ATTRIBUTE closing_credit boolean,
    ADD ATTRIBUTE imported boolean, ADD ATTRIBUTE "timestamp" timestamptz;
COMMENT ON FUNCTION fincore.create_transfers(fincore.transfer_request[]) IS
    'A batch of transfers with TigerBeetle-style per-item results (ok, exists, or the reason it was refused). Items are independent unless linked; a linked chain succeeds or fails as a whole. An id refused on the ledger''s state (an account not found, a limit, ...) stays failed: id_already_failed. A batch is imported as a whole or not at all.';

-- transfer() takes balancing_debit, balancing_credit, closing_debit, closing_credit, imported and
-- "timestamp" (a new signature; the grants are re-applied at the end).
DROP FUNCTION fincore.transfer(uuid, uuid, bigint, uuid, integer, boolean, interval, jsonb, text, uuid, text, jsonb);
DROP FUNCTION fincore.transfer(uuid, uuid, fincore.amount, uuid, integer, boolean, interval, jsonb, text, uuid, text, jsonb);
CREATE FUNCTION fincore.transfer(
        debit_account uuid, credit_account uuid, amount bigint, id uuid DEFAULT NULL, code integer DEFAULT 0,
        pending boolean DEFAULT false, timeout interval DEFAULT NULL, metadata jsonb DEFAULT NULL,
        fee_schedule text DEFAULT NULL, fee_account uuid DEFAULT NULL, fee_mode text DEFAULT 'on_top',
        fee_context jsonb DEFAULT '{}', balancing_debit boolean DEFAULT false, balancing_credit boolean DEFAULT false,
        closing_debit boolean DEFAULT false, closing_credit boolean DEFAULT false,
        imported boolean DEFAULT false, "timestamp" timestamptz DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_transfer';
COMMENT ON FUNCTION fincore.transfer(uuid, uuid, bigint, uuid, integer, boolean, interval, jsonb, text, uuid, text, jsonb, boolean, boolean, boolean, boolean, boolean, timestamptz) IS
    'Moves amount minor units from debit_account to credit_account (or holds it, pending => true, optionally with a timeout). With a fee schedule, the fee is a linked transfer from the payer to fee_account (on_top: the payer pays amount + fee; deducted: the payee gets amount - fee). With balancing_debit (balancing_credit) it moves at most amount, less as needed to keep the debit account''s debits within its credits (the credit account''s credits within its debits). A hold with closing_debit (closing_credit) closes the debit (credit) account; voiding it opens the account again. imported with a past timestamp migrates a transfer from another ledger. The id is the idempotency key: a replay returns result ''exists''. Refusals raise ZF3xx.';

CREATE FUNCTION fincore.transfer(
        debit_account uuid, credit_account uuid, amount fincore.amount, id uuid DEFAULT NULL, code integer DEFAULT 0,
        pending boolean DEFAULT false, timeout interval DEFAULT NULL, metadata jsonb DEFAULT NULL,
        fee_schedule text DEFAULT NULL, fee_account uuid DEFAULT NULL, fee_mode text DEFAULT 'on_top',
        fee_context jsonb DEFAULT '{}', balancing_debit boolean DEFAULT false, balancing_credit boolean DEFAULT false,
        closing_debit boolean DEFAULT false, closing_credit boolean DEFAULT false,
        imported boolean DEFAULT false, "timestamp" timestamptz DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_transfer_amount';
COMMENT ON FUNCTION fincore.transfer(uuid, uuid, fincore.amount, uuid, integer, boolean, interval, jsonb, text, uuid, text, jsonb, boolean, boolean, boolean, boolean, boolean, timestamptz) IS
    'fincore.transfer with a fincore.amount, whose currency must be the accounts'' (ZF103).';

UPDATE fincore.function_audience SET fn = 'fincore.transfer(uuid,uuid,bigint,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamptz)'
 WHERE fn = 'fincore.transfer(uuid,uuid,bigint,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb)';
UPDATE fincore.function_audience SET fn = 'fincore.transfer(uuid,uuid,fincore.amount,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamptz)'
 WHERE fn = 'fincore.transfer(uuid,uuid,fincore.amount,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb)';

-- create_account takes the closed flag, and refuses reserved ids.
COMMENT ON FUNCTION fincore.create_account(text, integer, text[], bigint, uuid, text, jsonb) IS
    'Creates an account in the current tenant and returns its id (a UUIDv7 unless given). Flags: debits_must_not_exceed_credits, credits_must_not_exceed_debits, history, hot, and closed (created closed). Idempotent for the same id and fields; ZF325 for the same id with other fields; ZF329 for a reserved id.';

-- create_accounts: a batch of accounts with per-item results (issue 14).
-- A batch of accounts, as TigerBeetle's create_accounts: one result per request.
CREATE TYPE fincore.account_request AS (
    id           uuid,      -- NULL: a new UUIDv7
    currency     text,
    code         integer,   -- NULL: 0
    flags        text[],
    credit_limit bigint,
    external_ref text,
    metadata     jsonb,     -- NULL: {}
    linked       boolean,   -- chain with the next request: all are created or none
    imported     boolean,   -- migrated from another ledger: created at "timestamp" (in the past)
    "timestamp"  timestamptz
);
COMMENT ON TYPE fincore.account_request IS
    'One account of a fincore.create_accounts() batch: the arguments of create_account, and linked to chain it with the next one.';

CREATE FUNCTION fincore.create_accounts(requests fincore.account_request[])
    RETURNS TABLE (index integer, id uuid, result text)
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_create_accounts';
COMMENT ON FUNCTION fincore.create_accounts(fincore.account_request[]) IS
    'A batch of accounts with TigerBeetle-style per-item results (ok, exists, exists_with_different_<field>, id_must_not_be_zero, id_must_not_be_int_max, flags_are_mutually_exclusive, invalid_flags, invalid_credit_limit, invalid_currency, unknown_currency, id_already_used, external_ref_already_used, imported_event_expected, imported_event_not_expected, timestamp_must_be_zero, imported_event_timestamp_out_of_range, imported_event_timestamp_must_not_advance, imported_event_timestamp_must_not_regress, linked_event_failed, linked_event_chain_open). Items are independent unless linked; a linked chain is created whole or not at all. Imported accounts (migrated from another ledger) carry their creation time. At most 8,190 (or fincore.max_batch_size) a call.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.create_accounts(fincore.account_request[])', 'app');

-- Outbox: subscribe and replay_dead take at most fincore.max_batch_size topics / ids.
DROP FUNCTION fincore.subscribe(text, text[], uuid, integer, interval, interval);
CREATE FUNCTION fincore.subscribe(consumer text, topics text[], tenant_scope uuid DEFAULT NULL,
                                  max_attempts integer DEFAULT 10, backoff interval DEFAULT '1 second',
                                  backoff_max interval DEFAULT '1 hour', partitions integer DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    old   record;
    t     text;
    n     integer := CASE WHEN subscribe.partitions = 1 THEN NULL ELSE subscribe.partitions END;
    start pg_snapshot;
BEGIN
    IF subscribe.consumer IS NULL OR subscribe.consumer !~ '^[a-z][a-z0-9_.:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid consumer name: %', coalesce(pg_catalog.quote_literal(subscribe.consumer), 'NULL')
            USING ERRCODE = 'ZF503', HINT = 'A consumer name is a lower-case word of up to 63 characters: [a-z][a-z0-9_.:-]*.';
    END IF;
    IF subscribe.topics IS NULL OR pg_catalog.cardinality(subscribe.topics) = 0
       OR pg_catalog.array_ndims(subscribe.topics) <> 1 THEN
        RAISE EXCEPTION 'consumer % needs a one-dimensional, non-empty array of topics', subscribe.consumer
            USING ERRCODE = 'ZF503', HINT = 'Name the topics it reads, or ''{*}'' for every topic.';
    END IF;
    IF pg_catalog.cardinality(subscribe.topics) > fincore._max_batch_size() THEN
        RAISE EXCEPTION 'subscribe takes at most % topics a call, not %', fincore._max_batch_size(),
                pg_catalog.cardinality(subscribe.topics)
            USING ERRCODE = 'ZF503', HINT = 'The limit is fincore.max_batch_size; subscribe to ''{*}'' for every topic.';
    END IF;
    FOREACH t IN ARRAY subscribe.topics LOOP
        IF t IS NULL OR (t <> '*' AND t !~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$') THEN
            RAISE EXCEPTION 'invalid topic for consumer %: %', subscribe.consumer, coalesce(pg_catalog.quote_literal(t), 'NULL')
                USING ERRCODE = 'ZF503', HINT = 'A topic is 1-200 characters of [A-Za-z0-9._:/-], or * for every topic.';
        END IF;
    END LOOP;
    IF subscribe.max_attempts IS NULL OR subscribe.max_attempts NOT BETWEEN 1 AND 1000
       OR subscribe.backoff IS NULL OR subscribe.backoff NOT BETWEEN '0' AND '1 day'
       OR subscribe.backoff_max IS NULL OR subscribe.backoff_max < subscribe.backoff
       OR subscribe.backoff_max > '30 days' THEN
        RAISE EXCEPTION 'invalid retry settings for consumer %: max_attempts %, backoff %, backoff_max %',
                subscribe.consumer, subscribe.max_attempts, subscribe.backoff, subscribe.backoff_max
            USING ERRCODE = 'ZF503', HINT = 'max_attempts is 1-1000; 0 <= backoff <= 1 day; backoff <= backoff_max <= 30 days.';
    END IF;
    IF subscribe.partitions IS NOT NULL AND subscribe.partitions NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'invalid number of partitions for consumer %: %', subscribe.consumer, subscribe.partitions
            USING ERRCODE = 'ZF503', HINT = 'A consumer has 1 to 256 partitions (NULL or 1: one reader).';
    END IF;
    IF subscribe.tenant_scope IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM fincore.tenants tt WHERE tt.id = subscribe.tenant_scope) THEN
        RAISE EXCEPTION 'tenant % does not exist', subscribe.tenant_scope USING ERRCODE = 'ZF204';
    END IF;

    -- A new position is taken in this cluster's ids: restored events must be rebased first.
    PERFORM fincore._outbox_restore_check();
    -- Retention (outbox_maintenance) holds SHARE ROW EXCLUSIVE on outbox_slots while it
    -- decides what every consumer has passed: a new position is never taken under it.
    LOCK TABLE fincore.outbox_slots IN ROW EXCLUSIVE MODE;
    -- The consumer as it is: one reader (partitions NULL), or its partitions <consumer>/<k>,
    -- locked, so that two subscribes of one name run one after the other.
    SELECT pg_catalog.count(*) AS rows, pg_catalog.max(c.partitions) AS partitions,
           pg_catalog.bool_or(c.tenant_scope IS DISTINCT FROM subscribe.tenant_scope) AS other_scope,
           pg_catalog.min(c.tenant_scope::text) AS scope
      INTO old
      FROM (SELECT o.partitions, o.tenant_scope FROM fincore.outbox_consumers o
             WHERE o.name = subscribe.consumer
                OR (o.partitions IS NOT NULL AND pg_catalog.split_part(o.name, '/', 1) = subscribe.consumer)
             FOR UPDATE) AS c;
    IF old.rows = 0 THEN
        start := fincore._outbox_latest_snapshot();
        -- Every partition starts at the same position: together they read what one reader would.
        BEGIN
            INSERT INTO fincore.outbox_consumers AS c (name, topics, tenant_scope, max_attempts, backoff,
                                                       backoff_max, position, partitions, partition_no)
            SELECT CASE WHEN n IS NULL THEN subscribe.consumer ELSE subscribe.consumer || '/' || k::text END,
                   subscribe.topics, subscribe.tenant_scope, subscribe.max_attempts, subscribe.backoff,
                   subscribe.backoff_max, start, n, CASE WHEN n IS NULL THEN NULL ELSE k END
              FROM pg_catalog.generate_series(0, coalesce(n, 1) - 1) AS k
            ON CONFLICT ON CONSTRAINT outbox_consumers_pkey DO NOTHING;
        EXCEPTION WHEN exclusion_violation THEN
            -- outbox_consumers_one_shape: a concurrent subscribe made it with another shape.
            RAISE EXCEPTION 'consumer % exists with another number of partitions', subscribe.consumer
                USING ERRCODE = 'ZF504',
                      HINT = 'A consumer''s partitions are fixed: unsubscribe it and subscribe again (from now on), or choose another name.';
        END;
        IF FOUND THEN
            RETURN;
        END IF;
        -- Created meanwhile by a subscribe that committed after this one's look: check it as it is.
        SELECT 1 AS rows, c.partitions, c.tenant_scope IS DISTINCT FROM subscribe.tenant_scope AS other_scope,
               c.tenant_scope::text AS scope
          INTO old
          FROM fincore.outbox_consumers c
         WHERE c.name = CASE WHEN n IS NULL THEN subscribe.consumer ELSE subscribe.consumer || '/0' END
           FOR UPDATE;
    END IF;
    IF old.other_scope THEN
        RAISE EXCEPTION 'consumer % exists with tenant scope %', subscribe.consumer, coalesce(old.scope, 'NULL (all tenants)')
            USING ERRCODE = 'ZF504', HINT = 'A consumer''s tenant scope is fixed: unsubscribe it first, or choose another name.';
    END IF;
    IF old.partitions IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'consumer % exists with partitions => %, not %', subscribe.consumer,
                coalesce(old.partitions, 1), coalesce(n, 1)
            USING ERRCODE = 'ZF504',
                  HINT = 'A consumer''s partitions are fixed: unsubscribe it and subscribe again (from now on), or choose another name.';
    END IF;
    UPDATE fincore.outbox_consumers c
       SET topics = subscribe.topics, max_attempts = subscribe.max_attempts,
           backoff = subscribe.backoff, backoff_max = subscribe.backoff_max
     WHERE c.name = subscribe.consumer
        OR (c.partitions IS NOT NULL AND pg_catalog.split_part(c.name, '/', 1) = subscribe.consumer);
END
$fn$;
COMMENT ON FUNCTION fincore.subscribe(text, text[], uuid, integer, interval, interval, integer) IS
    'Creates a consumer reading the given topics (''{*}'' = all) from now on, or changes an existing one''s topics and retry settings (its position stays). tenant_scope NULL = every tenant (trusted roles poll it). partitions => n (2-256): n consumers <consumer>/0 .. <consumer>/<n-1>, polled, acknowledged and waited for by those names, each reading the events of the aggregates fincore.event_partition() gives it, so n workers read in parallel, each aggregate in order. ZF503 bad argument, ZF504 other tenant scope or number of partitions.';
UPDATE fincore.function_audience SET fn = 'fincore.subscribe(text,text[],uuid,integer,interval,interval,integer)'
 WHERE fn = 'fincore.subscribe(text,text[],uuid,integer,interval,interval)';

CREATE OR REPLACE FUNCTION fincore.unsubscribe(consumer text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF pg_catalog.strpos(unsubscribe.consumer, '/') > 0
       AND EXISTS (SELECT 1 FROM fincore.outbox_consumers c WHERE c.name = unsubscribe.consumer) THEN
        RAISE EXCEPTION 'consumer % is a partition of consumer %', unsubscribe.consumer,
                pg_catalog.split_part(unsubscribe.consumer, '/', 1)
            USING ERRCODE = 'ZF503',
                  HINT = 'A partition''s events would go unread: unsubscribe the whole consumer.';
    END IF;
    DELETE FROM fincore.outbox_consumers c
     WHERE c.name = unsubscribe.consumer
        OR (c.partitions IS NOT NULL AND pg_catalog.split_part(c.name, '/', 1) = unsubscribe.consumer);
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION fincore.unsubscribe(text) IS
    'Drops a consumer (every partition of a partitioned one) with its retries and dead letters; true if it existed. Retention no longer waits for it. ZF503 for one partition alone.';

CREATE OR REPLACE FUNCTION fincore.replay_dead(consumer text, event_ids uuid[] DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    n bigint;
BEGIN
    IF replay_dead.consumer IS NULL
       OR NOT EXISTS (SELECT 1 FROM fincore.outbox_consumers c
                       WHERE c.name = replay_dead.consumer
                          OR (c.partitions IS NOT NULL AND pg_catalog.split_part(c.name, '/', 1) = replay_dead.consumer)) THEN
        RAISE EXCEPTION 'unknown consumer: %', coalesce(pg_catalog.quote_literal(replay_dead.consumer), 'NULL')
            USING ERRCODE = 'ZF502';
    END IF;
    IF pg_catalog.cardinality(replay_dead.event_ids) > fincore._max_batch_size() THEN
        RAISE EXCEPTION 'replay_dead takes at most % event ids a call, not %', fincore._max_batch_size(),
                pg_catalog.cardinality(replay_dead.event_ids)
            USING ERRCODE = 'ZF503', HINT = 'Split the call, or pass NULL to replay every dead letter of the consumer.';
    END IF;
    WITH d AS (
        DELETE FROM fincore.dead_events e
         WHERE e.consumer IN (SELECT c.name FROM fincore.outbox_consumers c
                               WHERE c.name = replay_dead.consumer
                                  OR (c.partitions IS NOT NULL
                                      AND pg_catalog.split_part(c.name, '/', 1) = replay_dead.consumer))
           AND (replay_dead.event_ids IS NULL OR e.id = ANY (replay_dead.event_ids))
        RETURNING e.*)
    INSERT INTO fincore.outbox_retries (consumer, id, seq, tenant_id, topic, type, aggregatetype, aggregateid,
                                        payload, headers, created_at, attempts, next_attempt_at, last_error)
    SELECT d.consumer, d.id, d.seq, d.tenant_id, d.topic, d.type, d.aggregatetype, d.aggregateid,
           d.payload, d.headers, d.created_at, 1, pg_catalog.clock_timestamp(), d.last_error
      FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION fincore.replay_dead(text, uuid[]) IS
    'Delivers a consumer''s dead letters again (all, or the given ids; a partitioned consumer''s name: every partition''s) with a fresh count of max_attempts - 1 retries; returns how many. ZF502 unknown consumer.';

-- Outbox: a consumer an app role may not use is reported as a missing one (ZF502); the order
-- of a batch is the order of emission, not global commit order (issue 23).
COMMENT ON FUNCTION fincore.poll(text, integer) IS
    'The consumer''s next events, at most max (1-10000): retries that are due first, then its batch in the order the events were emitted (each aggregate in commit order; not global commit order, docs/outbox.md). Polling again without ack returns the same events. ZF502 unknown consumer (also one the caller may not use: another tenant''s, or a cross-tenant one for an app role), ZF503 bad max.';

-- ---- create_transfers() results as the single call's SQLSTATE (issue 19) ------------------------

CREATE FUNCTION fincore.transfer_result_sqlstate(result text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_transfer_result_sqlstate';
COMMENT ON FUNCTION fincore.transfer_result_sqlstate(text) IS
    'The SQLSTATE a single call raises for a create_transfers() result (00000 for ok and exists; e.g. exceeds_credits is ZF304), NULL for a name that is not a result.';
INSERT INTO fincore.function_audience (fn, audience) VALUES ('fincore.transfer_result_sqlstate(text)', 'app');

-- ---- fincore's workers set their jobs' tenant without a warning (issue 19) ---------------------

CREATE FUNCTION fincore._use_tenant(tenant uuid) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_use_tenant';
REVOKE ALL ON FUNCTION fincore._use_tenant(uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._use_tenant(uuid) IS
    'Internal: set_tenant() for fincore''s own workers, which set each job''s tenant within their statement on purpose (no warning outside a transaction block).';

-- ---- The audit trail builds a transfer's record from its row (issue 20) -----------------------

CREATE FUNCTION fincore._transfer_audit_payload(t fincore.transfers) RETURNS jsonb
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_transfer_audit_payload';
COMMENT ON FUNCTION fincore._transfer_audit_payload(fincore.transfers) IS
    'Internal: a transfer''s audit record payload, {"new": the row without its tenant and empty columns}, built by the sealer (docs/audit.md).';

-- ---- App roles may stage statement lines for an import (issue 21) ---------------------------

CREATE OR REPLACE FUNCTION fincore.grant_app_role(role_name name, trusted boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    r record;
BEGIN
    PERFORM grant_app_role.role_name::regrole;     -- 42704 if there is no such role
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA fincore TO %I', grant_app_role.role_name);
    EXECUTE pg_catalog.format('GRANT SELECT ON ALL TABLES IN SCHEMA fincore TO %I', grant_app_role.role_name);
    FOR r IN SELECT f.fn, f.audience FROM fincore.function_audience f ORDER BY f.fn LOOP
        IF r.audience = 'app' OR grant_app_role.trusted THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', r.fn::regprocedure, grant_app_role.role_name);
        ELSE
            EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', r.fn::regprocedure, grant_app_role.role_name);
        END IF;
    END LOOP;
    -- The one table app roles write: raw statement lines staged for a bulk import (under RLS).
    IF pg_catalog.to_regclass('fincore.recon_staging') IS NOT NULL THEN
        EXECUTE pg_catalog.format('GRANT INSERT ON fincore.recon_staging TO %I', grant_app_role.role_name);
    END IF;
    INSERT INTO fincore.app_roles AS a (role_name, trusted) VALUES (grant_app_role.role_name, grant_app_role.trusted)
    ON CONFLICT ON CONSTRAINT app_roles_pkey DO UPDATE SET trusted = excluded.trusted;
END
$fn$;
COMMENT ON FUNCTION fincore.grant_app_role(name, boolean) IS
    'Lets a role use fincore as an application: SELECT on fincore''s tables (under RLS), INSERT on fincore.recon_staging (statement lines for a bulk import), and EXECUTE on its API; trusted roles may also set the tenant and manage tenants. Idempotent.';

CREATE OR REPLACE FUNCTION fincore.revoke_app_role(role_name name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    r record;
BEGIN
    EXECUTE pg_catalog.format('REVOKE SELECT ON ALL TABLES IN SCHEMA fincore FROM %I', revoke_app_role.role_name);
    IF pg_catalog.to_regclass('fincore.recon_staging') IS NOT NULL THEN
        EXECUTE pg_catalog.format('REVOKE INSERT ON fincore.recon_staging FROM %I', revoke_app_role.role_name);
    END IF;
    FOR r IN SELECT f.fn FROM fincore.function_audience f ORDER BY f.fn LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', r.fn::regprocedure, revoke_app_role.role_name);
    END LOOP;
    DELETE FROM fincore.app_roles a WHERE a.role_name = revoke_app_role.role_name;
END
$fn$;
COMMENT ON FUNCTION fincore.revoke_app_role(name) IS 'Undoes fincore.grant_app_role().';

-- ---- The outbox step forgets inbox messages by primary key: Citus plans no DELETE by ctid ----

CREATE OR REPLACE FUNCTION fincore.outbox_maintenance(budget interval DEFAULT '5 seconds') RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '200ms'
    AS $fn$
DECLARE
    deadline  timestamptz := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) budget;
    done      bigint := 0;
    n         bigint;
    s         record;
    cur       record;
    nxt       record;
    z         pg_snapshot;
    rotation  interval;
    retention interval;
    has_rows  boolean;
BEGIN
    -- One run at a time; subscribe() waits for a run and a run never waits for it.
    BEGIN
        LOCK TABLE fincore.outbox_slots IN SHARE ROW EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 0;
    END;
    SELECT coalesce(c.rotation_interval, '5 minutes'), coalesce(c.inbox_retention, '30 days')
      INTO rotation, retention
      FROM (SELECT 1) AS one LEFT JOIN fincore.outbox_config c ON true;

    -- 1. Empty the sealed slots every consumer has passed.  Sealed means no transaction
    --    can write into the slot any more and sealed_snapshot sees all that did; a
    --    consumer whose position covers it has consumed all of the slot.
    FOR s IN SELECT o.slot, o.partition, o.sealed_snapshot FROM fincore.outbox_slots o
              WHERE o.state = 'sealed' ORDER BY o.since LOOP
        EXIT WHEN pg_catalog.clock_timestamp() > deadline;
        CONTINUE WHEN EXISTS (SELECT 1 FROM fincore.outbox_consumers c
                               WHERE NOT fincore._outbox_covers(c.position, s.sealed_snapshot));
        BEGIN
            -- Waits at most lock_timeout for polls reading the partition.
            EXECUTE pg_catalog.format('TRUNCATE fincore.%I', s.partition);
            UPDATE fincore.outbox_slots o SET state = 'empty', since = pg_catalog.now(), sealed_snapshot = NULL
             WHERE o.slot = s.slot;
            done := done + 1;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END LOOP;

    -- 2. Seal the slots rotated out by an earlier run, once their last writer has finished.
    FOR s IN SELECT o.slot, o.partition FROM fincore.outbox_slots o WHERE o.state = 'draining' LOOP
        z := fincore._outbox_seal(pg_catalog.format('fincore.%I', s.partition)::regclass);
        IF z IS NOT NULL THEN
            UPDATE fincore.outbox_slots o SET state = 'sealed', since = pg_catalog.now(), sealed_snapshot = z
             WHERE o.slot = s.slot;
            done := done + 1;
        END IF;
    END LOOP;

    -- 3. Rotate: new events go to the next slot once it is empty and the current one is
    --    old enough and not empty.
    SELECT o.slot, o.partition, o.since INTO cur FROM fincore.outbox_slots o WHERE o.state = 'current';
    SELECT o.slot, o.state INTO nxt FROM fincore.outbox_slots o
     WHERE o.slot = (cur.slot OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.%) 3;
    IF nxt.state = 'empty' AND cur.since <= pg_catalog.now() OPERATOR(pg_catalog.-) rotation THEN
        EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM fincore.%I)', cur.partition) INTO has_rows;
        IF has_rows THEN
            UPDATE fincore.outbox_slots o SET state = 'draining', since = pg_catalog.now() WHERE o.slot = cur.slot;
            UPDATE fincore.outbox_slots o SET state = 'current', since = pg_catalog.now() WHERE o.slot = nxt.slot;
            done := done + 1;
        END IF;
    END IF;

    -- 4. Forget inbox messages older than the retention, a thousand at a time, by primary key
    --    (Citus plans no modification by ctid).
    LOOP
        EXIT WHEN pg_catalog.clock_timestamp() > deadline;
        DELETE FROM fincore.inbox i
         USING (SELECT i2.tenant_id, i2.source, i2.message_id FROM fincore.inbox i2
                 WHERE i2.received_at < pg_catalog.now() OPERATOR(pg_catalog.-) retention
                 LIMIT 1000) old
         WHERE i.tenant_id OPERATOR(pg_catalog.=) old.tenant_id AND i.source OPERATOR(pg_catalog.=) old.source
           AND i.message_id OPERATOR(pg_catalog.=) old.message_id;
        GET DIAGNOSTICS n = ROW_COUNT;
        done := done + n;
        EXIT WHEN n < 1000;
    END LOOP;
    RETURN done;
END
$fn$;

-- ---- Maintenance keeps each step's latest run (issue 23: fincore.metrics) --------------------

-- How each step fared when it last ran: what fincore.metrics() reports and an operator reads
-- (docs/operations.md).  Errors may name any tenant's objects: the table is for fincore's owner
-- alone (row level security with no policy but the owner's).
CREATE TABLE fincore.maintenance_status (
    step          text        PRIMARY KEY,      -- a step of fincore.maintenance_steps
    last_run_at   timestamptz NOT NULL,
    last_done     bigint      NOT NULL,
    last_elapsed  interval    NOT NULL,
    failures      integer     NOT NULL DEFAULT 0,   -- consecutive failed runs; 0 after a success
    last_error    text,                             -- the latest failure's, kept after a success
    last_error_at timestamptz
);
COMMENT ON TABLE fincore.maintenance_status IS
    'The latest run of each maintenance step: when, how much work, how long, consecutive failures and the latest error. Written by fincore.maintenance(); read through fincore.metrics().';
ALTER TABLE fincore.maintenance_status ENABLE ROW LEVEL SECURITY;
ALTER TABLE fincore.maintenance_status FORCE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION fincore.maintenance(step_budget interval DEFAULT '5 seconds')
    RETURNS TABLE (step text, done bigint, elapsed interval, error text)
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    s       record;
    started timestamptz;
BEGIN
    FOR s IN SELECT m.step, m.fn FROM fincore.maintenance_steps m ORDER BY m.position LOOP
        started := pg_catalog.clock_timestamp();
        step := s.step;
        error := NULL;
        BEGIN
            EXECUTE pg_catalog.format('SELECT %s($1)', s.fn::regprocedure::oid::regproc) INTO done USING step_budget;
        EXCEPTION WHEN OTHERS THEN
            done := 0;
            error := SQLSTATE || ': ' || SQLERRM;
            RAISE WARNING 'fincore maintenance step % failed: %', s.step, error;
        END;
        elapsed := pg_catalog.clock_timestamp() - started;
        -- Outside the step's subtransaction: a failure is recorded too.
        INSERT INTO fincore.maintenance_status AS m
               (step, last_run_at, last_done, last_elapsed, failures, last_error, last_error_at)
        VALUES (s.step, started, done, elapsed, CASE WHEN error IS NULL THEN 0 ELSE 1 END, error,
                CASE WHEN error IS NOT NULL THEN started END)
        ON CONFLICT ON CONSTRAINT maintenance_status_pkey DO UPDATE
           SET last_run_at = excluded.last_run_at, last_done = excluded.last_done,
               last_elapsed = excluded.last_elapsed,
               failures = CASE WHEN excluded.last_error IS NULL THEN 0 ELSE m.failures OPERATOR(pg_catalog.+) 1 END,
               last_error = coalesce(excluded.last_error, m.last_error),
               last_error_at = coalesce(excluded.last_error_at, m.last_error_at);
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION fincore.maintenance(interval) IS
    'Runs every registered maintenance step once, each within step_budget; one row per step (work done, time taken, error if it failed), also kept in fincore.maintenance_status. For pg_cron.';

COMMENT ON FUNCTION fincore.maintenance(interval) IS
    'Runs every registered maintenance step once, each within step_budget; one row per step (work done, time taken, error if it failed), also kept in fincore.maintenance_status. For pg_cron.';

-- ---- Dump and restore (issue 23) -------------------------------------------------------------

-- Supabase's roles are registered by the install wherever they exist (grants.sql), so a
-- restore's CREATE EXTENSION has them already: a dump carries the others.
SELECT pg_catalog.pg_extension_config_dump('fincore.app_roles',
    'WHERE role_name OPERATOR(pg_catalog.<>) ALL (ARRAY[''anon'', ''authenticated'', ''service_role''])');
-- The fee schedule codes' identity sequence: a restored database must not hand out the keys again.
SELECT pg_catalog.pg_extension_config_dump('fincore.fee_schedule_codes_id_seq', '');
-- The outbox's events and their sequence, so that consumers resume after a restore.
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_seq', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_events_0', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_events_1', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_events_2', '');

-- Events and consumer positions are kept by transaction id (txid, a snapshot), and the ids
-- of the cluster a dump came from mean nothing in the one it is restored into.  Where that
-- cluster's ids were behind, the restored ones still read as the past, in order, and all is
-- well; where they ran ahead, a restored event reads as a transaction not yet begun, which
-- would be delivered once this cluster's ids pass it.  So the first writer or reader of
-- events in a database whose events or positions lie ahead of this cluster rebases them,
-- once: each consumer's unread restored events become its retries (delivered first, in seq
-- order), every restored event (seq <= seq_floor) leaves the stream, and every position
-- restarts at this cluster's first transaction id.
CREATE TABLE fincore.outbox_restores (
    seq_floor    bigint      PRIMARY KEY,
    txid_horizon xid8        NOT NULL,
    rebased_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    consumers    integer     NOT NULL,
    redelivered  bigint      NOT NULL
);
COMMENT ON TABLE fincore.outbox_restores IS
    'Rebases of restored events onto this cluster''s transaction ids (fincore._outbox_restore_check): events with seq <= seq_floor came with a dump and are read through each consumer''s retries; txid_horizon is the highest transaction id they carried.';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_restores', '');

CREATE FUNCTION fincore._outbox_restore_check(OUT seq_floor bigint, OUT rebased_now boolean)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    now_xmax  xid8;
    newest    xid8;
    newest_position xid8;
    horizon   xid8;
    old_floor bigint;
    new_floor bigint;
    c         record;
    n         bigint := 0;
    m         bigint;
    k         integer := 0;
BEGIN
    FOR pass IN 1..2 LOOP
        SELECT r.txid_horizon, r.seq_floor INTO horizon, old_floor
          FROM fincore.outbox_restores r ORDER BY r.seq_floor DESC LIMIT 1;
        horizon := coalesce(horizon, CAST('0' AS pg_catalog.xid8));
        old_floor := coalesce(old_floor, 0);
        -- The newest transaction id of the events, and the newest position, then a snapshot
        -- taken after they were read: every id of this cluster the read could see is below
        -- that one's xmax, and no position of this cluster is above it.
        SELECT GREATEST((SELECT pg_catalog.max(e.txid) FROM fincore.outbox_events e),
                        (SELECT pg_catalog.max(t.event_txid) FROM fincore.transfers t
                          WHERE t.event_txid IS NOT NULL)),
               (SELECT pg_catalog.max(GREATEST(pg_catalog.pg_snapshot_xmax(o.position),
                                               pg_catalog.pg_snapshot_xmax(o.batch_end)))
                  FROM fincore.outbox_consumers o)
          INTO newest, newest_position;
        now_xmax := pg_catalog.pg_snapshot_xmax(fincore._outbox_latest_snapshot());
        newest := coalesce(newest, CAST('0' AS pg_catalog.xid8));
        newest_position := coalesce(newest_position, CAST('0' AS pg_catalog.xid8));
        IF NOT (newest OPERATOR(pg_catalog.>) horizon AND newest OPERATOR(pg_catalog.>=) now_xmax)
           AND NOT (newest_position OPERATOR(pg_catalog.>) now_xmax) THEN
            seq_floor := old_floor;
            rebased_now := false;
            RETURN;
        END IF;
        EXIT WHEN pass = 2;
        -- One rebase at a time, and no poll or ack while it runs; look again after the wait.
        LOCK TABLE fincore.outbox_restores IN EXCLUSIVE MODE;
        LOCK TABLE fincore.outbox_consumers IN EXCLUSIVE MODE;
    END LOOP;

    SELECT GREATEST((SELECT pg_catalog.max(e.seq) FROM fincore.outbox_events e),
                               (SELECT pg_catalog.max(t.event_seq) FROM fincore.transfers t
                                 WHERE t.event_seq IS NOT NULL),
                               old_floor),
           GREATEST((SELECT pg_catalog.max(e.txid) FROM fincore.outbox_events e),
                               (SELECT pg_catalog.max(t.event_txid) FROM fincore.transfers t
                                 WHERE t.event_txid IS NOT NULL),
                               (SELECT pg_catalog.max(GREATEST(pg_catalog.pg_snapshot_xmax(o.position),
                                                                          pg_catalog.pg_snapshot_xmax(o.batch_end)))
                                  FROM fincore.outbox_consumers o),
                               horizon)
      INTO new_floor, horizon;
    -- Each consumer's unread restored events, as its position and open batch say (both in the
    -- old cluster's ids, as the events are), become its retries, due now.
    FOR c IN SELECT o.* FROM fincore.outbox_consumers o ORDER BY o.name LOOP
        INSERT INTO fincore.outbox_retries AS r (consumer, id, seq, tenant_id, topic, type, aggregatetype,
                                                 aggregateid, payload, headers, created_at, attempts,
                                                 next_attempt_at, last_error)
        SELECT c.name, e.id, e.seq, e.tenant_id, e.topic, e.type, e.aggregatetype, e.aggregateid, e.payload,
               e.headers, e.created_at, 1, pg_catalog.clock_timestamp(), 'restored from a dump: delivered again'
          FROM fincore.outbox_stream e
         WHERE e.seq OPERATOR(pg_catalog.>) old_floor AND e.seq OPERATOR(pg_catalog.<=) new_floor
           AND (e.txid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmax(c.position)
                OR e.txid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip(c.position))))
           AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, c.position)
           AND NOT (c.batch_end IS NOT NULL AND pg_catalog.pg_visible_in_snapshot(e.txid, c.batch_end)
                    AND e.seq OPERATOR(pg_catalog.<=) c.batch_acked)
           AND ('*' OPERATOR(pg_catalog.=) ANY (c.topics) OR e.topic OPERATOR(pg_catalog.=) ANY (c.topics))
           AND (c.tenant_scope IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) c.tenant_scope)
           AND (c.partitions IS NULL
                OR fincore.event_partition(e.tenant_id, e.aggregatetype, e.aggregateid, c.partitions)
                   OPERATOR(pg_catalog.=) c.partition_no)
        ON CONFLICT ON CONSTRAINT outbox_retries_pkey DO NOTHING;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n OPERATOR(pg_catalog.+) m;
        k := k OPERATOR(pg_catalog.+) 1;
    END LOOP;
    -- Nothing of this cluster read yet: its first normal transaction id, 3.
    UPDATE fincore.outbox_consumers o
       SET position = CAST('3:3:' AS pg_catalog.pg_snapshot), batch_end = NULL, batch_acked = NULL,
           batch_last = NULL, positioned_at = pg_catalog.now();
    DELETE FROM fincore.outbox_events e WHERE e.seq OPERATOR(pg_catalog.<=) new_floor;
    INSERT INTO fincore.outbox_restores (seq_floor, txid_horizon, consumers, redelivered)
    VALUES (new_floor, horizon, k, n);
    RAISE WARNING 'fincore: the outbox''s events came from a cluster whose transaction ids ran ahead of this one''s (up to %): rebased them; % unread events of % consumers are delivered again as retries',
        horizon, n, k
        USING HINT = 'A dump restored into another cluster; recorded in fincore.outbox_restores (docs/operations.md).';
    seq_floor := new_floor;
    rebased_now := true;
END
$fn$;
COMMENT ON FUNCTION fincore._outbox_restore_check() IS
    'Internal, run once per backend before it first writes or reads events: rebases a restored dump''s events and consumer positions that lie ahead of this cluster''s transaction ids (fincore.outbox_restores). Returns the seq up to which events left the stream, and whether it rebased them just now.';
REVOKE ALL ON FUNCTION fincore._outbox_restore_check() FROM PUBLIC;

-- ---- Workers: the queue's loop in one round trip; waiting for jobs and events (issue 23) -------

CREATE FUNCTION fincore.complete_and_dequeue(job_id bigint, queue text, result jsonb DEFAULT NULL,
                                             attempt integer DEFAULT NULL, max integer DEFAULT 1,
                                             lease interval DEFAULT '30 seconds', worker text DEFAULT NULL)
    RETURNS SETOF fincore.job
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 10 AS 'MODULE_PATHNAME', 'fincore_complete_and_dequeue';
COMMENT ON FUNCTION fincore.complete_and_dequeue(bigint, text, jsonb, integer, integer, interval, text) IS
    'A worker''s loop in one round trip: completes job_id as fincore.complete does (NULL: nothing to complete, the first call), then claims up to max jobs of queue as fincore.dequeue does, in the caller''s transaction. ZF601, ZF602, ZF607 for the completed job; ZF203, ZF604, ZF605.';

CREATE FUNCTION fincore.wait_for_jobs(queue text, timeout interval DEFAULT '30 seconds')
    RETURNS boolean
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_wait_for_jobs';
COMMENT ON FUNCTION fincore.wait_for_jobs(text, interval) IS
    'For an idle worker: returns true as soon as a job of the queue is ready for the caller (at once if one is), false after timeout (at most 1 hour), with no polling: the commit of an enqueue into the queue wakes it (with fincore in shared_preload_libraries; else it looks every 50 ms), and it wakes when a scheduled job falls due. READ COMMITTED only. ZF203, ZF604, ZF605.';

CREATE FUNCTION fincore.wait_for_events(consumer text, timeout interval DEFAULT '30 seconds') RETURNS boolean
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_wait_for_events';
COMMENT ON FUNCTION fincore.wait_for_events(text, interval) IS
    'For an idle consumer: returns true as soon as it has something to poll (a committed event past its position, or a retry that is due), at once if it has, false after timeout (at most 1 hour), with no polling: the commit of a transaction that emitted events wakes it (with fincore in shared_preload_libraries; else it looks every 50 ms), and it wakes when its first retry falls due. READ COMMITTED only. ZF502, ZF503.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.complete_and_dequeue(bigint,text,jsonb,integer,integer,interval,text)', 'app'),
    ('fincore.wait_for_jobs(text,interval)', 'app'),
    ('fincore.wait_for_events(text,interval)', 'app');

-- ---- Partitioned consumers: several workers of one consumer, each aggregate in order (issue 23) ----

ALTER TABLE fincore.outbox_consumers
    ADD COLUMN partitions integer,
    ADD COLUMN partition_no integer,
    DROP CONSTRAINT outbox_consumers_name_check,
    ADD CONSTRAINT outbox_consumers_name_check CHECK (name ~ '^[a-z][a-z0-9_.:-]{0,62}(/[0-9]{1,3})?$'),
    ADD CONSTRAINT outbox_consumers_partition_check CHECK (
        CASE WHEN partitions IS NULL THEN partition_no IS NULL AND pg_catalog.strpos(name, '/') = 0
             ELSE partitions BETWEEN 2 AND 256 AND partition_no BETWEEN 0 AND partitions - 1
                  AND name = pg_catalog.split_part(name, '/', 1) || '/' || partition_no::text END),
    ADD CONSTRAINT outbox_consumers_one_shape EXCLUDE USING gist (
        (pg_catalog.split_part(name, '/', 1)) WITH OPERATOR(pg_catalog.=),
        (coalesce(partitions, 1)) WITH OPERATOR(pg_catalog.<>));
COMMENT ON COLUMN fincore.outbox_consumers.partitions IS
    'Of a partition of a partitioned consumer: how many partitions the consumer has (else NULL). Each reads the events fincore.event_partition(tenant_id, aggregatetype, aggregateid, partitions) gives its partition_no.';

-- The partition of an event's aggregate among a partitioned consumer's partitions.
CREATE FUNCTION fincore.event_partition(tenant_id uuid, aggregatetype text, aggregateid text, partitions integer)
    RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_event_partition';
COMMENT ON FUNCTION fincore.event_partition(uuid, text, text, integer) IS
    'The partition (0 to partitions - 1) that reads the events of an aggregate (tenant, aggregate type, aggregate id) in a partitioned consumer: a hash of the three, so every event of one aggregate goes to one partition. ZF503 unless partitions is 1 to 256.';
INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.event_partition(uuid,text,text,integer)', 'app');

-- ---- Renamed, with 0.1.0's names kept as deprecated aliases for one release (issue 23) ----------

CREATE FUNCTION fincore.reverse_transfer(transfer_id uuid, amount bigint DEFAULT NULL, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_reverse';
COMMENT ON FUNCTION fincore.reverse_transfer(uuid, bigint, uuid) IS
    'Moves all that is left (amount NULL) or part of a posted transfer back, as a reversal linked to it; the total reversed never exceeds the original (ZF316). Idempotent by id.';
COMMENT ON FUNCTION fincore.reverse(uuid, bigint, uuid) IS
    'Deprecated alias of fincore.reverse_transfer (reverse is a built-in string function''s name); removed in 0.3.0.';

CREATE FUNCTION fincore.cancel_job(job_id bigint) RETURNS text
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_cancel';
COMMENT ON FUNCTION fincore.cancel_job(bigint) IS
    'Cancels a ready, scheduled, running or dead job (moved to the archive as cancelled); returns the state it was in. A worker still holding it gets ZF607. ZF601, ZF607.';

CREATE FUNCTION fincore.retry_job(job_id bigint) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_retry';
COMMENT ON FUNCTION fincore.retry_job(bigint) IS
    'Returns a dead job to its queue, ready now, with a fresh set of max_attempts attempts; its error history is kept. ZF601, ZF603, ZF606.';

COMMENT ON FUNCTION fincore.cancel(bigint) IS
    'Deprecated alias of fincore.cancel_job (payments and subscriptions are cancelled too); removed in 0.3.0.';
COMMENT ON FUNCTION fincore.retry(bigint) IS
    'Deprecated alias of fincore.retry_job (invoices are retried too); removed in 0.3.0.';

CREATE FUNCTION fincore.divide(value fincore.amount, divisor bigint, mode text DEFAULT 'half_even')
    RETURNS fincore.amount
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_div';
COMMENT ON FUNCTION fincore.divide(fincore.amount, bigint, text) IS
    'Divides an amount by an integer, rounding the minor units once with the given mode.';
COMMENT ON FUNCTION fincore.div(fincore.amount, bigint, text) IS
    'Deprecated alias of fincore.divide (div is a built-in numeric function''s name); removed in 0.3.0.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.reverse_transfer(uuid,bigint,uuid)', 'app'),
    ('fincore.cancel_job(bigint)', 'app'),
    ('fincore.retry_job(bigint)', 'app');

-- ---- Limits (issue 17): sql/modules/limits.sql, as it is ------------------------------------

-- limits: spending and velocity limits, enforced inside the posting path (docs/limits.md).
--
-- A limit caps the amount (minor units, one currency) or the number of transfers that
-- the accounts in its scope may move in a window.  The ledger checks every limit that
-- applies to a transfer in the transaction that moves the money (src/limits_engine.c,
-- src/limits_store.c), under locks taken in one global order: a refused transfer writes
-- nothing, and concurrent spenders never overrun a limit.  Definitions are data of the
-- tenant, managed by its admins; the counters are written only by the ledger.

CREATE TABLE fincore.limits (
    tenant_id             uuid        NOT NULL DEFAULT fincore.require_tenant()
                                      REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    id                    uuid        NOT NULL DEFAULT fincore.uuidv7(),
    name                  text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    -- Which accounts it applies to, and whose counter a transfer charges: each account's
    -- own (per = 'account') or one for the whole scope (per = 'scope').
    scope                 text        NOT NULL CHECK (scope IN ('account', 'account_code', 'customer', 'tenant')),
    account_id            uuid,
    account_code          integer,
    customer              text,
    per                   text        NOT NULL CHECK (per IN ('account', 'scope')),
    metric                text        NOT NULL CHECK (metric IN ('amount', 'count')),
    currency              text,
    window_kind           text        NOT NULL
                                      CHECK (window_kind IN ('transaction', 'day', 'week', 'month', 'year',
                                                             'lifetime', 'trailing')),
    window_seconds        integer     CHECK (window_seconds BETWEEN 10 AND 2678400),
    time_zone             text        NOT NULL DEFAULT 'UTC',
    -- Filters: which legs count.  NULL: any.
    direction             text        CHECK (direction IN ('debit', 'credit')),
    transfer_codes        integer[],
    counterparty_accounts uuid[],
    counterparty_codes    integer[],
    max_value             bigint      NOT NULL CHECK (max_value >= 0),
    restore_on_reversal   boolean     NOT NULL DEFAULT false,
    -- An outbox event (limit.threshold_crossed) when a transfer takes the window's total to this.
    alert_at              bigint      CHECK (alert_at > 0),
    enabled               boolean     NOT NULL DEFAULT true,
    -- Transfers made before this (creation, or the last enabling) were not counted: a hold
    -- made before it gives nothing back when it is resolved.
    counting_since        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT limits_name_unique UNIQUE (tenant_id, name),
    CHECK ((scope = 'account') = (account_id IS NOT NULL)),
    CHECK ((scope = 'account_code') = (account_code IS NOT NULL)),
    CHECK ((scope = 'customer') = (customer IS NOT NULL)),
    CHECK ((metric = 'amount') = (currency IS NOT NULL)),
    CHECK ((window_kind = 'trailing') = (window_seconds IS NOT NULL)),
    CHECK (window_kind <> 'transaction' OR (metric = 'amount' AND per = 'account'))
);
COMMENT ON TABLE fincore.limits IS
    'Spending and velocity limits of each tenant (docs/limits.md): scope, metric, window, filters and maximum. Written through fincore.create_limit() / update_limit() / disable_limit().';
SELECT fincore.protect('fincore.limits');
SELECT pg_catalog.pg_extension_config_dump('fincore.limits', '');

-- What each limit has used: one row per limit and subject (the account charged, or the
-- nil UUID for a limit counted per scope).  A calendar or lifetime window keeps its start
-- and its total; a trailing window keeps a ring of 60 sub-buckets and the index of the
-- newest, so a transfer costs O(1) whatever the history.  The aggregates of rules keep their
-- counters here too, under ids derived from their rules' (no row of fincore.limits): hence a
-- key to the tenant rather than to fincore.limits.
CREATE TABLE fincore.limit_counters (
    tenant_id    uuid        NOT NULL,
    limit_id     uuid        NOT NULL,
    subject      uuid        NOT NULL,
    window_start timestamptz,
    used         bigint      NOT NULL DEFAULT 0,
    ring         bigint[],
    ring_head    bigint,
    -- A rule's distinct_counterparties: each counterparty of the window and its newest sub-bucket.
    members        uuid[],
    member_buckets bigint[],
    -- By subject first: the ledger reads all the counters of an account with one index descent.
    PRIMARY KEY (tenant_id, subject, limit_id),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
) WITH (fillfactor = 70);      -- room for HOT updates: a transfer updates its counters, never their keys
COMMENT ON TABLE fincore.limit_counters IS
    'What each limit (and each aggregate of a rule) has used in its current window, per subject (an account, or the nil UUID for the whole scope). Written only by the ledger, under the row''s lock.';
SELECT fincore.protect('fincore.limit_counters');
SELECT pg_catalog.pg_extension_config_dump('fincore.limit_counters', '');

-- A customer key the caller attaches to accounts: customer-scoped limits count the
-- transfers of all the customer's accounts.
CREATE TABLE fincore.account_customers (
    tenant_id  uuid NOT NULL DEFAULT fincore.require_tenant(),
    account_id uuid NOT NULL,
    customer   text NOT NULL CHECK (customer ~ '^[^[:cntrl:]]{1,200}$'),
    PRIMARY KEY (tenant_id, account_id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES fincore.accounts (tenant_id, id)
);
CREATE INDEX account_customers_customer_idx ON fincore.account_customers (tenant_id, customer);
COMMENT ON TABLE fincore.account_customers IS
    'The customer each account belongs to, for customer-scoped limits. Written through fincore.set_account_customer().';
SELECT fincore.protect('fincore.account_customers');
SELECT pg_catalog.pg_extension_config_dump('fincore.account_customers', '');

CREATE FUNCTION fincore.limits_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_limits_changed';
COMMENT ON FUNCTION fincore.limits_changed() IS
    'Trigger: makes every backend''s cached limits and rules stale when fincore.limits or fincore.rules changes.';
CREATE TRIGGER limits_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.limits
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.limits_changed();

-- Rules: conditions over a transfer in a typed JSON language (src/rules_engine.c), evaluated
-- in C in the posting path after the limits.  Never SQL text: fincore runs them with its
-- owner's rights.
CREATE TABLE fincore.rules (
    tenant_id  uuid        NOT NULL DEFAULT fincore.require_tenant()
                           REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    id         uuid        NOT NULL DEFAULT fincore.uuidv7(),
    name       text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    condition  jsonb       NOT NULL,
    outcome    text        NOT NULL CHECK (outcome IN ('reject', 'review', 'flag')),
    mode       text        NOT NULL CHECK (mode IN ('shadow', 'active')),
    time_zone  text        NOT NULL DEFAULT 'UTC',
    -- review: how long the hold waits for fincore.approve_review / reject_review.
    review_timeout interval NOT NULL DEFAULT '1 day'
                   CHECK (review_timeout > '0' AND review_timeout <= '31 days'),
    enabled    boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT rules_name_unique UNIQUE (tenant_id, name)
);
COMMENT ON TABLE fincore.rules IS
    'Risk rules of each tenant (docs/limits.md, "Rules"): a condition in fincore''s rule language, an outcome (reject, review, flag) and a mode (shadow: recorded only; active: enforced). Written through fincore.create_rule() / update_rule().';
SELECT fincore.protect('fincore.rules');
SELECT pg_catalog.pg_extension_config_dump('fincore.rules', '');

-- Every decision that is not a plain accept: a limit or rule that refused a transfer (in a
-- batch; a refused single call rolls back with its error), a rule that flagged it, a shadow
-- rule that would have.
CREATE TABLE fincore.decisions (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL DEFAULT fincore.uuidv7(),
    transfer_id uuid        NOT NULL,
    limit_id    uuid,
    rule_id     uuid,
    outcome     text        NOT NULL CHECK (outcome IN ('reject', 'review', 'flag')),
    mode        text        NOT NULL CHECK (mode IN ('shadow', 'active')),
    seen        jsonb       NOT NULL,
    decided_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK ((limit_id IS NULL) <> (rule_id IS NULL))
);
CREATE INDEX decisions_transfer_idx ON fincore.decisions (tenant_id, transfer_id);
COMMENT ON TABLE fincore.decisions IS
    'Decisions of limits and rules that were not a plain accept: the transfer, the limit or rule, the outcome, active or shadow, and the values seen. Written only by the ledger.';
SELECT fincore.protect('fincore.decisions');
SELECT pg_catalog.pg_extension_config_dump('fincore.decisions', '');

CREATE TRIGGER rules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.rules
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.limits_changed();

CREATE FUNCTION fincore.check_rule(condition jsonb) RETURNS void
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_check_rule';
COMMENT ON FUNCTION fincore.check_rule(jsonb) IS
    'Validates a rule''s condition without writing it: ZF805 with the path of what is wrong (docs/limits.md, "Rules").';

CREATE FUNCTION fincore.create_rule(name text, condition jsonb, outcome text DEFAULT 'reject',
        mode text DEFAULT 'shadow', time_zone text DEFAULT 'UTC', review_timeout interval DEFAULT '1 day',
        id uuid DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    new_id uuid := coalesce(create_rule.id, fincore.uuidv7());
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid rule: name % is not a word of 1 to 64 letters, digits, _ . : -',
                coalesce(pg_catalog.quote_literal(name), 'NULL') USING ERRCODE = 'ZF805';
    END IF;
    IF outcome IS NULL OR outcome NOT IN ('reject', 'review', 'flag') THEN
        RAISE EXCEPTION 'invalid rule: outcome % is not reject, review or flag', coalesce(pg_catalog.quote_literal(outcome), 'NULL')
            USING ERRCODE = 'ZF805';
    END IF;
    IF review_timeout IS NULL OR review_timeout <= '0' OR review_timeout > '31 days' THEN
        RAISE EXCEPTION 'invalid rule: review_timeout % is not between 0 and 31 days', coalesce(review_timeout::text, 'NULL')
            USING ERRCODE = 'ZF805', HINT = 'A reviewed transfer is a hold that expires after review_timeout.';
    END IF;
    IF mode IS NULL OR mode NOT IN ('shadow', 'active') THEN
        RAISE EXCEPTION 'invalid rule: mode % is not shadow or active', coalesce(pg_catalog.quote_literal(mode), 'NULL')
            USING ERRCODE = 'ZF805';
    END IF;
    IF time_zone IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = time_zone) THEN
        RAISE EXCEPTION 'invalid rule: time_zone % is not a time zone name such as Europe/Berlin',
                coalesce(pg_catalog.quote_literal(time_zone), 'NULL') USING ERRCODE = 'ZF805';
    END IF;
    IF condition IS NULL THEN
        RAISE EXCEPTION 'invalid rule: condition must not be NULL' USING ERRCODE = 'ZF805';
    END IF;
    PERFORM fincore.check_rule(condition);
    BEGIN
        INSERT INTO fincore.rules (tenant_id, id, name, condition, outcome, mode, time_zone, review_timeout)
        VALUES (tenant, new_id, name, condition, outcome, mode, time_zone, review_timeout);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'rule % already exists', pg_catalog.quote_literal(name)
            USING ERRCODE = 'ZF804', HINT = 'Change it with fincore.update_rule(), or choose another name or id.';
    END;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_rule(text, jsonb, text, text, text, interval, uuid) IS
    'Creates a rule of the current tenant and returns its id: a condition (docs/limits.md, "Rules"), an outcome (reject; review: the transfer becomes a hold for review_timeout and a job on the queue fincore.review; flag) and a mode (shadow: decisions recorded, nothing enforced; active). ZF805 for an invalid rule, ZF804 for a name in use, ZF803 unless an admin.';

CREATE FUNCTION fincore.update_rule(rule_id uuid, condition jsonb DEFAULT NULL, outcome text DEFAULT NULL,
        mode text DEFAULT NULL, enabled boolean DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF outcome NOT IN ('reject', 'review', 'flag') THEN
        RAISE EXCEPTION 'invalid rule: outcome % is not reject, review or flag', pg_catalog.quote_literal(outcome)
            USING ERRCODE = 'ZF805';
    END IF;
    IF mode NOT IN ('shadow', 'active') THEN
        RAISE EXCEPTION 'invalid rule: mode % is not shadow or active', pg_catalog.quote_literal(mode)
            USING ERRCODE = 'ZF805';
    END IF;
    IF condition IS NOT NULL THEN
        PERFORM fincore.check_rule(condition);
    END IF;
    UPDATE fincore.rules r
       SET condition = coalesce(update_rule.condition, r.condition),
           outcome = coalesce(update_rule.outcome, r.outcome),
           mode = coalesce(update_rule.mode, r.mode),
           enabled = coalesce(update_rule.enabled, r.enabled),
           updated_at = pg_catalog.now()
     WHERE r.tenant_id = tenant AND r.id = rule_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rule % not found', rule_id
            USING ERRCODE = 'ZF806', HINT = 'Rules are visible only in their own tenant.';
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.update_rule(uuid, jsonb, text, text, boolean) IS
    'Changes a rule''s condition, outcome, mode (shadow to active, and back) or enabled (NULL: unchanged). ZF806 if not found, ZF805 for an invalid value, ZF803 unless an admin.';

-- Reviews: a transfer an active review rule met is a hold; a reviewer posts or voids it.
CREATE FUNCTION fincore.require_review(transfer_id uuid) RETURNS void
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF NOT EXISTS (SELECT 1 FROM fincore.decisions d
                    WHERE d.tenant_id = tenant AND d.transfer_id = transfer_id
                      AND d.outcome = 'review' AND d.mode = 'active') THEN
        RAISE EXCEPTION 'transfer % is not waiting for a review', transfer_id
            USING ERRCODE = 'ZF807', HINT = 'Only a transfer an active review rule made a hold is reviewed; post or void other holds.';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.require_review(uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore.require_review(uuid) IS
    'Raises ZF807 unless an active review rule made the transfer a hold (and ZF803 unless the caller may manage the tenant''s rules).';

CREATE FUNCTION fincore.approve_review(transfer_id uuid, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    PERFORM fincore.require_review(approve_review.transfer_id);
    RETURN fincore.post_pending(approve_review.transfer_id, NULL, approve_review.id);
END
$fn$;
COMMENT ON FUNCTION fincore.approve_review(uuid, uuid) IS
    'Approves a transfer held for review: posts the whole hold (as fincore.post_pending, with its idempotent id). ZF807 if it is not held for review; the hold''s own errors (ZF310-ZF312) once it is resolved or expired.';

CREATE FUNCTION fincore.reject_review(transfer_id uuid, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    PERFORM fincore.require_review(reject_review.transfer_id);
    RETURN fincore.void_pending(reject_review.transfer_id, reject_review.id);
END
$fn$;
COMMENT ON FUNCTION fincore.reject_review(uuid, uuid) IS
    'Rejects a transfer held for review: voids the hold (as fincore.void_pending). ZF807 if it is not held for review.';

CREATE FUNCTION fincore.backtest_rule(condition jsonb, from_time timestamptz, to_time timestamptz,
        time_zone text DEFAULT 'UTC')
    RETURNS TABLE (transfer_id uuid, created_at timestamptz, kind text, amount bigint, code integer)
    LANGUAGE c STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_backtest_rule';
COMMENT ON FUNCTION fincore.backtest_rule(jsonb, timestamptz, timestamptz, text) IS
    'The current tenant''s transfers and holds made in [from_time, to_time) that the condition meets, as an active rule would have judged them when they were made; writes nothing. ZF805 for an invalid condition.';

-- The window arithmetic the ledger uses (C), for limit_remaining() and for tests.
CREATE FUNCTION fincore.limit_window(window_kind text, window_seconds integer, time_zone text, at timestamptz,
        OUT starts_at timestamptz, OUT resets_at timestamptz)
    RETURNS record
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_limit_window';
COMMENT ON FUNCTION fincore.limit_window(text, integer, text, timestamptz) IS
    'The window of a limit that contains at: when it started and when it resets (a trailing window: its oldest counted sub-bucket and when the next one leaves). NULLs for lifetime and transaction.';

CREATE FUNCTION fincore.limit_used(window_kind text, window_seconds integer, time_zone text,
        window_start timestamptz, used bigint, ring bigint[], ring_head bigint, at timestamptz)
    RETURNS bigint
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_limit_used';
COMMENT ON FUNCTION fincore.limit_used(text, integer, text, timestamptz, bigint, bigint[], bigint, timestamptz) IS
    'What a counter row has used in the window containing at (0 once its window has passed).';

-- Who may manage a tenant's limits: its admins and owners, or a trusted role (a role that is
-- not one of fincore's untrusted app roles, such as a backend's).  The invoker's role is the
-- one SET ROLE chose (PostgREST), else the session's.
CREATE FUNCTION fincore.require_limits_admin(tenant uuid) RETURNS void
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    invoker text := pg_catalog.current_setting('role');
BEGIN
    IF invoker IS NULL OR invoker = 'none' THEN
        invoker := pg_catalog.session_user();
    END IF;
    IF EXISTS (SELECT 1 FROM fincore.app_roles a WHERE a.role_name = invoker AND NOT a.trusted)
       AND NOT fincore.has_tenant_role(tenant, 'admin') AND NOT fincore.has_tenant_role(tenant, 'owner') THEN
        RAISE EXCEPTION 'only an admin of tenant % may manage its limits', tenant
            USING ERRCODE = 'ZF803',
                  HINT = 'Add the user with fincore.add_tenant_member(user_id, ''admin''), or call from a trusted role.';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.require_limits_admin(uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore.require_limits_admin(uuid) IS
    'Raises ZF803 unless the caller may manage the tenant''s limits: an admin or owner of it, or a trusted role.';

CREATE FUNCTION fincore.create_limit(name text, max_value bigint,
        metric text DEFAULT 'amount', window_kind text DEFAULT 'day', scope text DEFAULT 'tenant',
        account_id uuid DEFAULT NULL, account_code integer DEFAULT NULL, customer text DEFAULT NULL,
        per text DEFAULT NULL, currency text DEFAULT NULL, direction text DEFAULT 'debit',
        transfer_codes integer[] DEFAULT NULL, counterparty_accounts uuid[] DEFAULT NULL,
        counterparty_codes integer[] DEFAULT NULL, window_seconds integer DEFAULT NULL,
        time_zone text DEFAULT 'UTC', restore_on_reversal boolean DEFAULT false, alert_at bigint DEFAULT NULL,
        id uuid DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    new_id uuid := coalesce(create_limit.id, fincore.uuidv7());
    eff_per text;
    bad text;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' THEN
        bad := pg_catalog.format('name %s is not a word of 1 to 64 letters, digits, _ . : -',
                                 coalesce(pg_catalog.quote_literal(name), 'NULL'));
    ELSIF max_value IS NULL OR max_value < 0 THEN
        bad := pg_catalog.format('max_value %s must be 0 or more', coalesce(max_value::text, 'NULL'));
    ELSIF metric IS NULL OR metric NOT IN ('amount', 'count') THEN
        bad := pg_catalog.format('metric %s is not amount or count', coalesce(pg_catalog.quote_literal(metric), 'NULL'));
    ELSIF window_kind IS NULL OR window_kind NOT IN ('transaction', 'day', 'week', 'month', 'year', 'lifetime', 'trailing') THEN
        bad := pg_catalog.format('window_kind %s is not transaction, day, week, month, year, lifetime or trailing',
                                 coalesce(pg_catalog.quote_literal(window_kind), 'NULL'));
    ELSIF (window_kind = 'trailing') <> (window_seconds IS NOT NULL) THEN
        bad := 'window_seconds is given for a trailing window, and only for one';
    ELSIF window_seconds IS NOT NULL AND window_seconds NOT BETWEEN 10 AND 2678400 THEN
        bad := pg_catalog.format('window_seconds %s is outside 10 seconds to 31 days (2678400)', window_seconds);
    ELSIF scope IS NULL OR scope NOT IN ('account', 'account_code', 'customer', 'tenant') THEN
        bad := pg_catalog.format('scope %s is not account, account_code, customer or tenant',
                                 coalesce(pg_catalog.quote_literal(scope), 'NULL'));
    ELSIF (scope = 'account') <> (account_id IS NOT NULL)
          OR (scope = 'account_code') <> (account_code IS NOT NULL)
          OR (scope = 'customer') <> (customer IS NOT NULL) THEN
        bad := pg_catalog.format('scope %s takes %s, and no other of account_id, account_code, customer', scope,
                                 CASE scope WHEN 'account' THEN 'account_id' WHEN 'account_code' THEN 'account_code'
                                            WHEN 'customer' THEN 'customer' ELSE 'none' END);
    ELSIF per IS NOT NULL AND per NOT IN ('account', 'scope') THEN
        bad := pg_catalog.format('per %s is not account or scope', pg_catalog.quote_literal(per));
    ELSIF (metric = 'amount') <> (currency IS NOT NULL) THEN
        bad := 'an amount limit takes a currency, and a count limit none';
    ELSIF window_kind = 'transaction' AND metric <> 'amount' THEN
        bad := 'a transaction window caps the amount of each transfer: metric must be amount';
    ELSIF direction IS NOT NULL AND direction NOT IN ('debit', 'credit') THEN
        bad := pg_catalog.format('direction %s is not debit, credit or NULL (both)', pg_catalog.quote_literal(direction));
    ELSIF pg_catalog.array_position(transfer_codes, NULL) IS NOT NULL
          OR pg_catalog.array_position(counterparty_codes, NULL) IS NOT NULL
          OR pg_catalog.array_position(counterparty_accounts, NULL) IS NOT NULL THEN
        bad := 'a filter list must not contain NULL';
    ELSIF pg_catalog.cardinality(transfer_codes) = 0 OR pg_catalog.cardinality(counterparty_codes) = 0
          OR pg_catalog.cardinality(counterparty_accounts) = 0 THEN
        bad := 'a filter list must not be empty (NULL means any)';
    ELSIF time_zone IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = time_zone) THEN
        bad := pg_catalog.format('time_zone %s is not a time zone name such as Europe/Berlin',
                                 coalesce(pg_catalog.quote_literal(time_zone), 'NULL'));
    ELSIF restore_on_reversal IS NULL THEN
        bad := 'restore_on_reversal must not be NULL';
    ELSIF alert_at IS NOT NULL AND (alert_at <= 0 OR alert_at > max_value OR window_kind = 'transaction') THEN
        bad := pg_catalog.format('alert_at %s is not between 1 and max_value %s of a limit with a window',
                                 alert_at, max_value);
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid limit: %', bad
            USING ERRCODE = 'ZF801', HINT = 'See docs/limits.md for what a limit is made of.';
    END IF;
    IF currency IS NOT NULL THEN
        PERFORM fincore.currency_exponent(currency);     -- ZF102 for an unknown currency
    END IF;
    eff_per := coalesce(per, CASE WHEN scope = 'customer' THEN 'scope' ELSE 'account' END);
    IF window_kind = 'transaction' THEN
        eff_per := 'account';
    END IF;
    IF scope = 'account' AND NOT EXISTS (SELECT 1 FROM fincore.accounts a
                                          WHERE a.tenant_id = tenant AND a.id = account_id) THEN
        RAISE EXCEPTION 'account % not found', account_id
            USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
    END IF;
    BEGIN
        INSERT INTO fincore.limits (tenant_id, id, name, scope, account_id, account_code, customer, per, metric,
                                    currency, window_kind, window_seconds, time_zone, direction, transfer_codes,
                                    counterparty_accounts, counterparty_codes, max_value, restore_on_reversal,
                                    alert_at)
        VALUES (tenant, new_id, name, scope, account_id, account_code, customer, eff_per, metric, currency,
                window_kind, window_seconds, time_zone, direction, transfer_codes, counterparty_accounts,
                counterparty_codes, max_value, restore_on_reversal, alert_at);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'limit % already exists', pg_catalog.quote_literal(name)
            USING ERRCODE = 'ZF804', HINT = 'Change it with fincore.update_limit(), or choose another name or id.';
    END;
    -- A limit counted per scope has one counter, made now: the ledger locks it, never creates it.
    IF eff_per = 'scope' THEN
        INSERT INTO fincore.limit_counters (tenant_id, limit_id, subject)
        VALUES (tenant, new_id, '00000000-0000-0000-0000-000000000000');
    END IF;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_limit(text, bigint, text, text, text, uuid, integer, text, text, text, text,
        integer[], uuid[], integer[], integer, text, boolean, bigint, uuid) IS
    'Creates a limit of the current tenant and returns its id: max_value of metric (amount in minor units of currency, or count) per window, for the accounts of scope, counting the legs the filters select; with alert_at, an outbox event when a transfer takes a window''s total to it. ZF801 for an invalid definition, ZF804 for a name in use, ZF803 unless an admin.';

-- What a limit's maximum, name and switches can become; its scope, metric and window are what
-- its counters mean, so changing them is a new limit.
CREATE FUNCTION fincore.update_limit(limit_id uuid, max_value bigint DEFAULT NULL, name text DEFAULT NULL,
        restore_on_reversal boolean DEFAULT NULL, enabled boolean DEFAULT NULL, alert_at bigint DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF max_value < 0 THEN
        RAISE EXCEPTION 'invalid limit: max_value % must be 0 or more', max_value USING ERRCODE = 'ZF801';
    END IF;
    IF alert_at <= 0 THEN
        RAISE EXCEPTION 'invalid limit: alert_at % must be 1 or more', alert_at USING ERRCODE = 'ZF801';
    END IF;
    IF name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid limit: name % is not a word of 1 to 64 letters, digits, _ . : -',
                pg_catalog.quote_literal(name) USING ERRCODE = 'ZF801';
    END IF;
    BEGIN
        UPDATE fincore.limits l
           SET max_value = coalesce(update_limit.max_value, l.max_value),
               name = coalesce(update_limit.name, l.name),
               restore_on_reversal = coalesce(update_limit.restore_on_reversal, l.restore_on_reversal),
               enabled = coalesce(update_limit.enabled, l.enabled),
               alert_at = coalesce(update_limit.alert_at, l.alert_at),
               counting_since = CASE WHEN update_limit.enabled AND NOT l.enabled THEN pg_catalog.now()
                                     ELSE l.counting_since END,
               updated_at = pg_catalog.now()
         WHERE l.tenant_id = tenant AND l.id = limit_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'limit % already exists', pg_catalog.quote_literal(name) USING ERRCODE = 'ZF804';
    END;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'limit % not found', limit_id
            USING ERRCODE = 'ZF802', HINT = 'Limits are visible only in their own tenant.';
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.update_limit(uuid, bigint, text, boolean, boolean, bigint) IS
    'Changes a limit''s maximum, name, restore_on_reversal, enabled or alert_at (NULL: unchanged); the counters stay. ZF802 if not found, ZF801 for an invalid value, ZF803 unless an admin.';

CREATE FUNCTION fincore.disable_limit(limit_id uuid) RETURNS void
    LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    RETURN fincore.update_limit(limit_id, enabled => false);
COMMENT ON FUNCTION fincore.disable_limit(uuid) IS
    'Stops enforcing a limit (fincore.update_limit(id, enabled => true) enforces it again, with the counters it had).';

CREATE FUNCTION fincore.set_account_customer(account_id uuid, customer text) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    IF account_id IS NULL OR NOT EXISTS (SELECT 1 FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = account_id) THEN
        RAISE EXCEPTION 'account % not found', coalesce(account_id::text, 'NULL')
            USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
    END IF;
    IF customer IS NULL THEN
        DELETE FROM fincore.account_customers c WHERE c.tenant_id = tenant AND c.account_id = account_id;
    ELSIF customer !~ '^[^[:cntrl:]]{1,200}$' THEN
        RAISE EXCEPTION 'invalid customer key %', pg_catalog.quote_literal(customer)
            USING ERRCODE = 'ZF801', HINT = 'A customer key is 1 to 200 characters without control characters.';
    ELSE
        INSERT INTO fincore.account_customers AS c (tenant_id, account_id, customer)
        VALUES (tenant, account_id, customer)
        ON CONFLICT ON CONSTRAINT account_customers_pkey DO UPDATE SET customer = excluded.customer;
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.set_account_customer(uuid, text) IS
    'Attaches an account of the current tenant to a customer key (NULL detaches it), for customer-scoped limits. ZF301 if the account is not found.';

-- What every limit that can apply to an account has used and has left now.
CREATE FUNCTION fincore.limit_remaining(account_id uuid)
    RETURNS TABLE (limit_id uuid, name text, metric text, currency text, window_kind text, max_value bigint,
                   used bigint, remaining bigint, resets_at timestamptz)
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_column
DECLARE
    tenant uuid := fincore.require_tenant();
    acc record;
    cust text;
    at timestamptz := pg_catalog.now();
BEGIN
    SELECT a.id, a.code, a.currency INTO acc FROM fincore.accounts a
     WHERE a.tenant_id = tenant AND a.id = limit_remaining.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % not found', coalesce(limit_remaining.account_id::text, 'NULL')
            USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
    END IF;
    SELECT c.customer INTO cust FROM fincore.account_customers c
     WHERE c.tenant_id = tenant AND c.account_id = acc.id;
    RETURN QUERY
    SELECT l.id, l.name, l.metric, l.currency, l.window_kind, l.max_value, u.used,
           GREATEST(l.max_value - u.used, 0::bigint),
           (fincore.limit_window(l.window_kind, l.window_seconds, l.time_zone, at)).resets_at
      FROM fincore.limits l
      CROSS JOIN LATERAL (
          SELECT coalesce((SELECT fincore.limit_used(l.window_kind, l.window_seconds, l.time_zone, k.window_start,
                                                     k.used, k.ring, k.ring_head, at)
                             FROM fincore.limit_counters k
                            WHERE k.tenant_id = tenant AND k.limit_id = l.id
                              AND k.subject = CASE WHEN l.per = 'account' THEN acc.id
                                                   ELSE '00000000-0000-0000-0000-000000000000'::uuid END), 0)
                 AS used) u
     WHERE l.tenant_id = tenant AND l.enabled
       AND (l.currency IS NULL OR l.currency = acc.currency)
       AND CASE l.scope WHEN 'account' THEN l.account_id = acc.id
                        WHEN 'account_code' THEN l.account_code = acc.code
                        WHEN 'customer' THEN l.customer = cust
                        ELSE true END
     ORDER BY l.name;
END
$fn$;
COMMENT ON FUNCTION fincore.limit_remaining(uuid) IS
    'Every enabled limit whose scope takes in the account: its maximum, what is used in the current window (of the account, or of the whole scope for a limit counted per scope), what remains and when the window resets. ZF301 if the account is not found.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.create_limit(text,bigint,text,text,text,uuid,integer,text,text,text,text,integer[],uuid[],integer[],integer,text,boolean,bigint,uuid)', 'app'),
    ('fincore.update_limit(uuid,bigint,text,boolean,boolean,bigint)', 'app'),
    ('fincore.disable_limit(uuid)', 'app'),
    ('fincore.set_account_customer(uuid,text)', 'app'),
    ('fincore.limit_remaining(uuid)', 'app'),
    ('fincore.limit_window(text,integer,text,timestamptz)', 'app'),
    ('fincore.limit_used(text,integer,text,timestamptz,bigint,bigint[],bigint,timestamptz)', 'app'),
    ('fincore.check_rule(jsonb)', 'app'),
    ('fincore.create_rule(text,jsonb,text,text,text,interval,uuid)', 'app'),
    ('fincore.approve_review(uuid,uuid)', 'app'),
    ('fincore.reject_review(uuid,uuid)', 'app'),
    ('fincore.update_rule(uuid,jsonb,text,text,boolean)', 'app'),
    ('fincore.backtest_rule(jsonb,timestamptz,timestamptz,text)', 'app');

-- ---- Payments (issue 18): sql/modules/payments.sql, as it is --------------------------------

-- ---------------------------------------------------------------------------
-- Payments (docs/payments.md): a payment object with Stripe's statuses, whose
-- every money step is a ledger posting in the caller's transaction, and whose
-- provider steps are jobs carrying a provider idempotency key.  The state
-- machine is C (src/payments_engine.c, through fincore.payment_transition);
-- this file stores its rows, posts to the ledger and enqueues the steps.
-- Every statement names its tenant; a payment's row is locked (FOR UPDATE)
-- by every function that changes it, so concurrent captures and refunds of
-- one payment run one at a time and never over-capture or over-refund.
-- The functions plan their statements once per session (force_generic_plan):
-- every statement is a look-up by primary key, whose plan never depends on
-- the values, and re-planning each call cost a third of a payment's time.
-- ---------------------------------------------------------------------------

-- A provider, per tenant: where its payments settle, its webhook secret, which of its
-- decline codes are final, and how long a step may wait for an answer.
CREATE TABLE fincore.payment_providers (
    tenant_id          uuid     NOT NULL,
    name               text     NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    settlement_account uuid     NOT NULL,
    disputes_account   uuid,
    loss_account       uuid,
    dispute_fee        bigint   NOT NULL DEFAULT 0 CHECK (dispute_fee >= 0),
    webhook_secret     text,
    hard_decline_codes text[]   NOT NULL DEFAULT '{}',
    step_timeout       interval NOT NULL DEFAULT '1 hour' CHECK (step_timeout > '0'),
    hold_timeout       interval CHECK (hold_timeout > '0'),
    max_attempts       integer  NOT NULL DEFAULT 10 CHECK (max_attempts BETWEEN 1 AND 100),
    -- The provider's processing fee: a fee schedule (docs/fees.md) charged on every capture,
    -- from the settlement account to fee_account.
    fee_schedule       text,
    fee_account        uuid,
    PRIMARY KEY (tenant_id, name),
    CHECK ((fee_schedule IS NULL) = (fee_account IS NULL)),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.payment_providers IS
    'Payment providers of a tenant, as data: the settlement, disputes and loss accounts, the webhook secret, the decline codes that are final (not retried), the time a step may wait for an answer, the hold''s ledger timeout, the attempts of a step''s job, and the fee schedule charged on captures.';
SELECT fincore.protect('fincore.payment_providers');
SELECT pg_catalog.pg_extension_config_dump('fincore.payment_providers', '');

-- A payment: its status (src/payments_engine.c) and amounts, in minor units of its currency.
CREATE TABLE fincore.payments (
    tenant_id          uuid        NOT NULL,
    id                 uuid        NOT NULL,
    idempotency_key    text        CHECK (pg_catalog.length(idempotency_key) BETWEEN 1 AND 255),
    provider           text        NOT NULL,
    status             text        NOT NULL,
    currency           text        NOT NULL,
    amount             bigint      NOT NULL CHECK (amount > 0),
    capture_method     text        NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
    multicapture       boolean     NOT NULL DEFAULT false,
    payer_account      uuid,
    settlement_account uuid        NOT NULL,
    hold_id            uuid,       -- the open hold on the ledger, if any
    authorized         bigint      NOT NULL DEFAULT 0,
    captured           bigint      NOT NULL DEFAULT 0,
    released           bigint      NOT NULL DEFAULT 0,
    refunded           bigint      NOT NULL DEFAULT 0,
    disputed           bigint      NOT NULL DEFAULT 0,
    lost               bigint      NOT NULL DEFAULT 0,
    capture_pending    bigint      NOT NULL DEFAULT 0,
    increment_pending  bigint      NOT NULL DEFAULT 0,
    refund_pending     bigint      NOT NULL DEFAULT 0,
    cancel_pending     boolean     NOT NULL DEFAULT false,
    steps              integer     NOT NULL DEFAULT 0,   -- the number of its steps: the last step_no
    fees               bigint      NOT NULL DEFAULT 0,   -- the provider's fees charged on its captures
    failure_code       text,
    metadata           jsonb,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, provider) REFERENCES fincore.payment_providers (tenant_id, name),
    CHECK (captured + released + capture_pending <= authorized),
    CHECK (refunded + refund_pending + disputed + lost <= captured)
);
COMMENT ON TABLE fincore.payments IS
    'Payments: status (Stripe''s, plus refunded, disputed, dispute_lost), amounts held, captured, released, refunded, disputed and lost, and the steps in flight. Written only by fincore''s payment functions, under the row''s lock.';
SELECT fincore.protect('fincore.payments');
SELECT pg_catalog.pg_extension_config_dump('fincore.payments', '');

-- The steps of a payment: each request to the provider (authorize, capture, increment,
-- cancel, refund) with the provider idempotency key derived from payment and step, and
-- what the provider answered; disputes, which the provider reports, are steps too.
CREATE TABLE fincore.payment_steps (
    tenant_id     uuid        NOT NULL,
    payment_id    uuid        NOT NULL,
    step_no       integer     NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('authorize', 'capture', 'increment', 'cancel', 'refund',
                                                       'dispute', 'dispute_won', 'dispute_lost')),
    amount        bigint,
    final         boolean     NOT NULL DEFAULT true,
    request_key   text,
    provider_key  text,       -- sent to the provider with the request: the same for every retry
    status        text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    outcome_code  text,
    outcome_source text,
    job_id        bigint,
    transfer_ids  uuid[]      NOT NULL DEFAULT '{}',
    reversed      bigint      NOT NULL DEFAULT 0,   -- of a capture: how much refunds have reversed
    requested_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    deadline      timestamptz,
    decided_at    timestamptz,
    PRIMARY KEY (tenant_id, payment_id, step_no),
    UNIQUE (tenant_id, provider_key),
    UNIQUE (tenant_id, payment_id, request_key),
    FOREIGN KEY (tenant_id, payment_id) REFERENCES fincore.payments (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX payment_steps_pending_idx ON fincore.payment_steps (tenant_id, deadline) WHERE status = 'pending';
COMMENT ON TABLE fincore.payment_steps IS
    'Each step of a payment: the request, its provider idempotency key, its job, its outcome (the first report wins), and the ledger transfers it made.';
SELECT fincore.protect('fincore.payment_steps');
SELECT pg_catalog.pg_extension_config_dump('fincore.payment_steps', '');

CREATE FUNCTION fincore.payment_transition(payment fincore.payments, action text, amount bigint DEFAULT NULL,
                                           final boolean DEFAULT true)
    RETURNS fincore.payments
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_payment_transition';
COMMENT ON FUNCTION fincore.payment_transition(fincore.payments, text, bigint, boolean) IS
    'The payment state machine (C): the row as the action leaves it, or ZF901/ZF903/ZF904/ZF905/ZF907 if the action is not allowed. Writes nothing.';

-- The tenant's payment, locked; ZF902 if there is none.
CREATE FUNCTION fincore._payment_lock(tenant uuid, payment_id uuid) RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    p fincore.payments;
BEGIN
    SELECT * INTO p FROM fincore.payments x WHERE x.tenant_id = tenant AND x.id = payment_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', coalesce(payment_id::text, 'NULL')
            USING ERRCODE = 'ZF902', HINT = 'Payments are visible only in their own tenant.';
    END IF;
    RETURN p;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_lock(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_lock(uuid, uuid) IS 'Internal: the tenant''s payment, locked FOR UPDATE (ZF902 if none).';

-- The payment's provider.
-- (PL/pgSQL: Citus cannot plan a SQL function's parameters.)
CREATE FUNCTION fincore._payment_provider(p fincore.payments) RETURNS fincore.payment_providers
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    prov fincore.payment_providers;
BEGIN
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = p.tenant_id AND v.name = p.provider;
    RETURN prov;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_provider(fincore.payments) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_provider(fincore.payments) IS 'Internal: the payment''s provider.';

-- Write the payment's new state and emit its event (topic payments, aggregate the payment).
CREATE FUNCTION fincore._payment_save(p fincore.payments, event text, extra jsonb DEFAULT '{}') RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    p.updated_at := pg_catalog.now();
    UPDATE fincore.payments x
       SET status = p.status, payer_account = p.payer_account, hold_id = p.hold_id, amount = p.amount,
           authorized = p.authorized, captured = p.captured, released = p.released, refunded = p.refunded,
           disputed = p.disputed, lost = p.lost, capture_pending = p.capture_pending,
           increment_pending = p.increment_pending, refund_pending = p.refund_pending,
           cancel_pending = p.cancel_pending, steps = p.steps, fees = p.fees, failure_code = p.failure_code,
           updated_at = p.updated_at
     WHERE x.tenant_id = p.tenant_id AND x.id = p.id;
    IF event IS NOT NULL THEN
        PERFORM fincore.emit('payments', 'payment.' || event, 'payment', p.id::text,
                             pg_catalog.jsonb_build_object(
                                 'payment_id', p.id, 'status', p.status, 'currency', p.currency,
                                 'amount', p.amount, 'authorized', p.authorized, 'captured', p.captured,
                                 'released', p.released, 'refunded', p.refunded, 'disputed', p.disputed,
                                 'lost', p.lost, 'fees', p.fees, 'failure_code', p.failure_code) || extra);
    END IF;
    RETURN p;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_save(fincore.payments, text, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_save(fincore.payments, text, jsonb) IS
    'Internal: writes a payment''s state and emits payment.<event> on topic payments.';

-- The id of a ledger transfer a payment's step makes: the same at every retry of the step,
-- so the ledger's idempotency turns a replay into "exists".
CREATE FUNCTION fincore._payment_transfer_id(payment_id uuid, step_no integer, part text) RETURNS uuid
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_payment_transfer_id';
COMMENT ON FUNCTION fincore._payment_transfer_id(uuid, integer, text) IS
    'Internal: the id of the ledger transfer a payment''s step makes (an MD5 of payment, step and leg: the same at every retry).';

-- A new step of the payment (p.steps counts it: the caller saves p): its provider key, and a
-- job on the provider's queue if it needs one.
CREATE FUNCTION fincore._payment_step(INOUT p fincore.payments, prov fincore.payment_providers, kind text,
                                      amount bigint, final boolean, request_key text, provider_step boolean,
                                      transfer_ids uuid[], OUT s fincore.payment_steps)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    p.steps := p.steps + 1;
    s.tenant_id := p.tenant_id;
    s.payment_id := p.id;
    s.step_no := p.steps;
    s.kind := kind;
    s.amount := amount;
    s.final := final;
    s.request_key := request_key;
    s.status := CASE WHEN provider_step THEN 'pending' ELSE 'succeeded' END;
    s.transfer_ids := transfer_ids;
    s.reversed := 0;
    s.requested_at := pg_catalog.now();
    IF provider_step THEN
        s.provider_key := p.id::text || ':' || s.step_no::text || ':' || kind;
        s.deadline := s.requested_at + prov.step_timeout;
        s.job_id := fincore.enqueue('payments:' || p.provider,
                                    pg_catalog.jsonb_build_object(
                                        'payment_id', p.id, 'step_no', s.step_no, 'kind', kind, 'amount', amount,
                                        'currency', p.currency, 'final', final, 'provider', p.provider,
                                        'provider_key', s.provider_key),
                                    max_attempts => prov.max_attempts, unique_key => s.provider_key);
    ELSE
        s.decided_at := s.requested_at;
    END IF;
    INSERT INTO fincore.payment_steps VALUES (s.*);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_step(fincore.payments, fincore.payment_providers, text, bigint, boolean, text, boolean, uuid[]) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_step(fincore.payments, fincore.payment_providers, text, bigint, boolean, text, boolean, uuid[]) IS
    'Internal: records a payment''s next step (counted in p.steps); a provider step gets its provider idempotency key, deadline and job.';

-- A step asked for again with the same request key: the step it made, if its fields match (ZF906 if not).
CREATE FUNCTION fincore._payment_replayed_step(p fincore.payments, kind text, amount bigint, final boolean,
                                               request_key text)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    s fincore.payment_steps;
BEGIN
    IF request_key IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO s FROM fincore.payment_steps x
     WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.request_key = _payment_replayed_step.request_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF s.kind <> kind OR (amount IS NOT NULL AND s.amount IS DISTINCT FROM amount) OR s.final <> final THEN
        RAISE EXCEPTION 'request key % of payment % was used for another step (% of %)',
                pg_catalog.quote_literal(request_key), p.id, s.kind, coalesce(s.amount::text, 'all')
            USING ERRCODE = 'ZF906', HINT = 'A request key names one step: use a new key for a new request.';
    END IF;
    RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_replayed_step(fincore.payments, text, bigint, boolean, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_replayed_step(fincore.payments, text, bigint, boolean, text) IS
    'Internal: the step a request key already made (ZF906 if it was made with other fields), or NULL.';

-- Replace the payment's hold: void it, post post_amount, hold hold_amount again, as one linked
-- chain (a partial capture that keeps the rest open, an incremental authorization).
CREATE FUNCTION fincore._payment_rehold(INOUT p fincore.payments, step_no integer, post_amount bigint,
                                        hold_amount bigint, OUT posted_id uuid)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    items fincore.transfer_request[] := '{}';
    prov fincore.payment_providers;
    meta jsonb := pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', step_no);
    new_hold uuid;
    bad record;
BEGIN
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = p.tenant_id AND v.name = p.provider;
    items := items || ROW(fincore._payment_transfer_id(p.id, step_no, 'void'), NULL, NULL, NULL, 0, false, NULL,
                          NULL, p.hold_id, NULL, post_amount > 0 OR hold_amount > 0, meta, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                          NULL)::fincore.transfer_request;
    IF post_amount > 0 THEN
        posted_id := fincore._payment_transfer_id(p.id, step_no, 'post');
        items := items || ROW(posted_id, p.payer_account, p.settlement_account, post_amount, 0, false, NULL,
                              NULL, NULL, NULL, hold_amount > 0, meta, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                              NULL, NULL, NULL)::fincore.transfer_request;
    END IF;
    IF hold_amount > 0 THEN
        new_hold := fincore._payment_transfer_id(p.id, step_no, 'hold');
        items := items || ROW(new_hold, p.payer_account, p.settlement_account, hold_amount, 0, true,
                              prov.hold_timeout, NULL, NULL, NULL, false, meta, NULL, NULL, NULL, NULL, NULL, NULL,
                              NULL, NULL, NULL, NULL)::fincore.transfer_request;
    END IF;
    SELECT r.index, r.result INTO bad FROM fincore.create_transfers(items) r
     WHERE r.result NOT IN ('ok', 'exists') ORDER BY r.index LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'payment %: the ledger refused its hold''s replacement (item %: %)', p.id, bad.index, bad.result
            USING ERRCODE = 'ZF903', HINT = 'The payer''s account or the hold no longer allow it.';
    END IF;
    p.hold_id := new_hold;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_rehold(fincore.payments, integer, bigint, bigint) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_rehold(fincore.payments, integer, bigint, bigint) IS
    'Internal: voids a payment''s hold, posts an amount and holds the rest again, as one linked chain.';

-- ---------------------------------------------------------------------------
-- The API.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.create_payment_provider(name text, settlement_account uuid,
        webhook_secret text DEFAULT NULL, hard_decline_codes text[] DEFAULT '{}',
        step_timeout interval DEFAULT '1 hour', hold_timeout interval DEFAULT NULL,
        disputes_account uuid DEFAULT NULL, loss_account uuid DEFAULT NULL, dispute_fee bigint DEFAULT 0,
        max_attempts integer DEFAULT 10, fee_schedule text DEFAULT NULL, fee_account uuid DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    acc uuid;
    bad uuid;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid payment provider name %', coalesce(pg_catalog.quote_literal(name), 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'A name is 1 to 63 of a-z, 0-9, _ and -, starting with a letter.';
    END IF;
    IF step_timeout IS NULL OR step_timeout <= '0' OR (hold_timeout IS NOT NULL AND hold_timeout <= '0')
       OR dispute_fee IS NULL OR dispute_fee < 0 OR max_attempts IS NULL OR max_attempts NOT BETWEEN 1 AND 100
       OR hard_decline_codes IS NULL OR pg_catalog.array_position(hard_decline_codes, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'invalid payment provider %: step_timeout and hold_timeout must be positive, dispute_fee >= 0, max_attempts 1 to 100, hard_decline_codes without NULL', name
            USING ERRCODE = 'ZF901';
    END IF;
    IF (fee_schedule IS NULL) <> (fee_account IS NULL) THEN
        RAISE EXCEPTION 'invalid payment provider %: fee_schedule and fee_account go together', name
            USING ERRCODE = 'ZF901', HINT = 'The fee schedule is charged on captures, to the fee account.';
    END IF;
    IF fee_schedule IS NOT NULL THEN
        PERFORM FROM fincore.fee_schedules f WHERE f.tenant_id = tenant AND f.code = fee_schedule LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'fee schedule % not found', pg_catalog.quote_literal(fee_schedule)
                USING ERRCODE = 'ZF901', HINT = 'Define it first with fincore.define_fee_schedule().';
        END IF;
    END IF;
    -- One look-up per account (a statement each that Citus routes to the tenant's shard).
    FOREACH acc IN ARRAY ARRAY[settlement_account, disputes_account, loss_account, fee_account] LOOP
        CONTINUE WHEN acc IS NULL OR bad IS NOT NULL;
        PERFORM FROM fincore.accounts x WHERE x.tenant_id = tenant AND x.id = acc;
        IF NOT FOUND THEN
            bad := acc;
        END IF;
    END LOOP;
    IF settlement_account IS NULL OR bad IS NOT NULL THEN
        RAISE EXCEPTION 'account % not found', coalesce(bad::text, 'NULL')
            USING ERRCODE = 'ZF301', HINT = 'A provider''s settlement, disputes, loss and fee accounts are the tenant''s.';
    END IF;
    INSERT INTO fincore.payment_providers (tenant_id, name, settlement_account, disputes_account, loss_account,
                                           dispute_fee, webhook_secret, hard_decline_codes, step_timeout,
                                           hold_timeout, max_attempts, fee_schedule, fee_account)
    VALUES (tenant, name, settlement_account, disputes_account, loss_account, dispute_fee, webhook_secret,
            hard_decline_codes, step_timeout, hold_timeout, max_attempts, fee_schedule, fee_account)
    ON CONFLICT ON CONSTRAINT payment_providers_pkey DO UPDATE
       SET settlement_account = excluded.settlement_account, disputes_account = excluded.disputes_account,
           loss_account = excluded.loss_account, dispute_fee = excluded.dispute_fee,
           webhook_secret = excluded.webhook_secret, hard_decline_codes = excluded.hard_decline_codes,
           step_timeout = excluded.step_timeout, hold_timeout = excluded.hold_timeout,
           max_attempts = excluded.max_attempts, fee_schedule = excluded.fee_schedule,
           fee_account = excluded.fee_account;
END
$fn$;
COMMENT ON FUNCTION fincore.create_payment_provider(text, uuid, text, text[], interval, interval, uuid, uuid, bigint, integer, text, uuid) IS
    'Creates (or updates) a payment provider of the current tenant: settlement account, webhook secret, final decline codes, step and hold timeouts, disputes and loss accounts, dispute fee, attempts of a step''s job, and the fee schedule charged on every capture (to fee_account). Tenant admins only (ZF803). ZF901, ZF301.';

CREATE FUNCTION fincore.create_payment(amount bigint, currency text, provider text,
        payer_account uuid DEFAULT NULL, capture_method text DEFAULT 'automatic', multicapture boolean DEFAULT false,
        confirm boolean DEFAULT false, idempotency_key text DEFAULT NULL, metadata jsonb DEFAULT NULL,
        id uuid DEFAULT NULL)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments;
    prov fincore.payment_providers;
    acc record;
BEGIN
    IF amount IS NULL OR amount <= 0 THEN
        RAISE EXCEPTION 'invalid payment amount %', coalesce(amount::text, 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'A payment''s amount is a positive number of minor units.';
    END IF;
    IF capture_method IS NULL OR capture_method NOT IN ('automatic', 'manual') THEN
        RAISE EXCEPTION 'invalid capture method %', coalesce(pg_catalog.quote_literal(capture_method), 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'automatic (captured when authorized) or manual.';
    END IF;
    IF multicapture IS NULL OR confirm IS NULL OR (multicapture AND capture_method <> 'manual') THEN
        RAISE EXCEPTION 'invalid payment: multicapture needs capture_method => ''manual'''
            USING ERRCODE = 'ZF901';
    END IF;
    IF idempotency_key IS NOT NULL AND pg_catalog.length(idempotency_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid idempotency key: 1 to 255 characters' USING ERRCODE = 'ZF901';
    END IF;
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = provider;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment provider % not found', coalesce(pg_catalog.quote_literal(provider), 'NULL')
            USING ERRCODE = 'ZF908', HINT = 'Create it with fincore.create_payment_provider().';
    END IF;
    SELECT a.currency INTO acc FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = prov.settlement_account;
    IF currency IS NULL OR acc.currency <> currency THEN
        RAISE EXCEPTION 'payment currency % is not the currency of provider %''s settlement account (%)',
                coalesce(currency, 'NULL'), provider, acc.currency
            USING ERRCODE = 'ZF103';
    END IF;
    IF payer_account IS NOT NULL THEN
        PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = payer_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found', payer_account
                USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
        END IF;
    END IF;
    IF confirm AND payer_account IS NULL THEN
        RAISE EXCEPTION 'a payment confirmed at creation needs its payer account' USING ERRCODE = 'ZF901';
    END IF;

    p.tenant_id := tenant;
    p.id := coalesce(id, fincore.uuidv7());
    p.idempotency_key := idempotency_key;
    p.provider := provider;
    p.status := CASE WHEN payer_account IS NULL THEN 'requires_payment_method' ELSE 'requires_confirmation' END;
    p.currency := currency;
    p.amount := amount;
    p.capture_method := capture_method;
    p.multicapture := multicapture;
    p.payer_account := payer_account;
    p.settlement_account := prov.settlement_account;
    p.metadata := metadata;
    INSERT INTO fincore.payments (tenant_id, id, idempotency_key, provider, status, currency, amount, capture_method,
                                  multicapture, payer_account, settlement_account, metadata)
    VALUES (p.tenant_id, p.id, p.idempotency_key, p.provider, p.status, p.currency, p.amount, p.capture_method,
            p.multicapture, p.payer_account, p.settlement_account, p.metadata)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- A replay (same key, or same id): the payment it made, if the fields are the same.
        SELECT * INTO p FROM fincore.payments x
         WHERE x.tenant_id = tenant
           AND (x.idempotency_key = create_payment.idempotency_key OR x.id = create_payment.id)
         ORDER BY (x.idempotency_key = create_payment.idempotency_key) DESC NULLS LAST
         LIMIT 1;
        IF p.amount <> amount OR p.currency <> currency OR p.provider <> provider
           OR p.capture_method <> capture_method OR p.multicapture <> multicapture
           OR (payer_account IS NOT NULL AND p.payer_account IS DISTINCT FROM payer_account)
           OR p.idempotency_key IS DISTINCT FROM idempotency_key THEN
            RAISE EXCEPTION 'payment % exists with other fields', p.id
                USING ERRCODE = 'ZF906',
                      HINT = 'An idempotency key (or id) names one payment: use a new key for a new payment.';
        END IF;
        RETURN p;
    END IF;
    PERFORM fincore.emit('payments', 'payment.created', 'payment', p.id::text,
                         pg_catalog.jsonb_build_object('payment_id', p.id, 'status', p.status, 'amount', p.amount,
                                                       'currency', p.currency, 'provider', p.provider));
    IF confirm THEN
        RETURN fincore.confirm_payment(p.id);
    END IF;
    RETURN p;
END
$fn$;
COMMENT ON FUNCTION fincore.create_payment(bigint, text, text, uuid, text, boolean, boolean, text, jsonb, uuid) IS
    'Creates a payment of amount minor units through a provider: requires_payment_method without a payer account, else requires_confirmation (confirm => true confirms it at once). Idempotent by idempotency_key (or id): a replay returns the payment, with other fields ZF906. ZF901, ZF908, ZF103, ZF301.';

CREATE FUNCTION fincore.confirm_payment(payment_id uuid, payer_account uuid DEFAULT NULL)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    prov fincore.payment_providers;
    st record;
    hold_id uuid;
BEGIN
    IF payer_account IS NOT NULL AND p.status = 'requires_payment_method' THEN
        PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = payer_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found', payer_account
                USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
        END IF;
        p := fincore.payment_transition(p, 'attach');
        p.payer_account := payer_account;
    ELSIF p.status IN ('processing', 'requires_action', 'requires_capture', 'succeeded')
          AND (payer_account IS NULL OR payer_account = p.payer_account) THEN
        RETURN p;   -- confirmed already: a replay
    END IF;
    p := fincore.payment_transition(p, 'confirm');
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = p.provider;
    -- The hold: the payer's funds are reserved while the provider authorizes.
    hold_id := fincore._payment_transfer_id(p.id, 0, 'hold');
    PERFORM fincore.transfer(p.payer_account, p.settlement_account, p.amount, id => hold_id, pending => true,
                             timeout => prov.hold_timeout,
                             metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', 1));
    p.hold_id := hold_id;
    st := fincore._payment_step(p, prov, 'authorize', p.amount, true, NULL, true, ARRAY[hold_id]);
    RETURN fincore._payment_save(st.p, 'processing', pg_catalog.jsonb_build_object('hold_id', hold_id));
END
$fn$;
COMMENT ON FUNCTION fincore.confirm_payment(uuid, uuid) IS
    'Confirms a payment (attaching the payer account if it had none): holds its amount on the ledger (payer to settlement) and enqueues the authorize step; status processing. A replay of a confirmed payment returns it. ZF902, ZF903, ZF301, and the ledger''s refusals of the hold.';

CREATE FUNCTION fincore.capture_payment(payment_id uuid, amount bigint DEFAULT NULL, final boolean DEFAULT true,
                                        request_key text DEFAULT NULL)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps := fincore._payment_replayed_step(p, 'capture', amount, coalesce(final, true), request_key);
    amt bigint;
    st record;
BEGIN
    IF s.step_no IS NOT NULL THEN
        RETURN s;
    END IF;
    amt := coalesce(amount, p.authorized - p.captured - p.released - p.capture_pending);
    p := fincore.payment_transition(p, 'capture', amt, coalesce(final, true));
    st := fincore._payment_step(p, fincore._payment_provider(p), 'capture', amt, coalesce(final, true), request_key, true, '{}');
    PERFORM fincore._payment_save(st.p, 'capture_requested', pg_catalog.jsonb_build_object('step_no', (st.s).step_no, 'capture', amt));
    RETURN st.s;
END
$fn$;
COMMENT ON FUNCTION fincore.capture_payment(uuid, bigint, boolean, text) IS
    'Asks the provider to capture amount (NULL: all that can be) of an authorized payment; final => false keeps the rest open (multicapture payments). Returns the step; the ledger posts when the provider confirms. Idempotent by request_key. ZF902, ZF903, ZF904, ZF906, ZF907.';

CREATE FUNCTION fincore.increment_authorization(payment_id uuid, amount bigint, request_key text DEFAULT NULL)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps := fincore._payment_replayed_step(p, 'increment', amount, true, request_key);
    st record;
BEGIN
    IF s.step_no IS NOT NULL THEN
        RETURN s;
    END IF;
    p := fincore.payment_transition(p, 'increment', amount);
    st := fincore._payment_step(p, fincore._payment_provider(p), 'increment', amount, true, request_key, true, '{}');
    PERFORM fincore._payment_save(st.p, 'increment_requested', pg_catalog.jsonb_build_object('step_no', (st.s).step_no, 'increment', amount));
    RETURN st.s;
END
$fn$;
COMMENT ON FUNCTION fincore.increment_authorization(uuid, bigint, text) IS
    'Asks the provider to raise an uncaptured authorization by amount; the hold grows when it confirms. Idempotent by request_key. ZF902, ZF903, ZF906, ZF907.';

CREATE FUNCTION fincore.cancel_payment(payment_id uuid, request_key text DEFAULT NULL)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps := fincore._payment_replayed_step(p, 'cancel', NULL, true, request_key);
    st record;
BEGIN
    IF s.step_no IS NOT NULL OR p.status = 'canceled' OR (p.cancel_pending AND request_key IS NULL) THEN
        RETURN p;
    END IF;
    p := fincore.payment_transition(p, 'cancel');
    IF p.status = 'canceled' THEN
        RETURN fincore._payment_save(p, 'canceled');    -- nothing was held
    END IF;
    st := fincore._payment_step(p, fincore._payment_provider(p), 'cancel', NULL, true, request_key, true, '{}');
    RETURN fincore._payment_save(st.p, 'cancel_requested', pg_catalog.jsonb_build_object('step_no', (st.s).step_no));
END
$fn$;
COMMENT ON FUNCTION fincore.cancel_payment(uuid, text) IS
    'Cancels a payment: at once if nothing is held, else asks the provider (the hold is voided when it confirms). Returns the payment. ZF902, ZF903, ZF906, ZF907.';

CREATE FUNCTION fincore.refund_payment(payment_id uuid, amount bigint DEFAULT NULL, request_key text DEFAULT NULL)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps := fincore._payment_replayed_step(p, 'refund', amount, true, request_key);
    amt bigint;
    st record;
BEGIN
    IF s.step_no IS NOT NULL THEN
        RETURN s;
    END IF;
    amt := coalesce(amount, p.captured - p.refunded - p.refund_pending - p.disputed - p.lost);
    p := fincore.payment_transition(p, 'refund', amt);
    st := fincore._payment_step(p, fincore._payment_provider(p), 'refund', amt, true, request_key, true, '{}');
    PERFORM fincore._payment_save(st.p, 'refund_requested', pg_catalog.jsonb_build_object('step_no', (st.s).step_no, 'refund', amt));
    RETURN st.s;
END
$fn$;
COMMENT ON FUNCTION fincore.refund_payment(uuid, bigint, text) IS
    'Asks the provider to refund amount (NULL: all that can be) of a captured payment; never more than captured less refunded, refunds in flight and disputed (ZF905). The ledger reverses the captures when the provider confirms. Idempotent by request_key. ZF902, ZF903, ZF906.';

-- The provider's fee on a capture of amount: a transfer from the settlement account to the fee
-- account, in the capture's transaction, linked to it by its metadata; counted in p.fees.
CREATE FUNCTION fincore._payment_fee(INOUT p fincore.payments, step_no integer, amount bigint, captured_by uuid,
                                     OUT fee_id uuid)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    prov fincore.payment_providers := fincore._payment_provider(p);
    q record;
BEGIN
    IF prov.fee_schedule IS NULL THEN
        RETURN;
    END IF;
    q := fincore.quote_fee(prov.fee_schedule, amount, 'on_top',
                           pg_catalog.jsonb_build_object('payment_id', p.id, 'provider', p.provider),
                           pg_catalog.now(), p.currency);
    IF q.fee > 0 THEN
        fee_id := fincore._payment_transfer_id(p.id, step_no, 'fee');
        PERFORM fincore.transfer(p.settlement_account, prov.fee_account, q.fee, id => fee_id,
                                 metadata => pg_catalog.jsonb_build_object(
                                     'payment_id', p.id, 'step_no', step_no, 'fee_of', captured_by,
                                     'fee_schedule_id', q.schedule_id));
        p.fees := p.fees + q.fee;
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_fee(fincore.payments, integer, bigint, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_fee(fincore.payments, integer, bigint, uuid) IS
    'Internal: the provider''s fee on a capture, posted from the settlement account to the fee account.';

-- The ledger postings of a step's success, and the payment's transition.
CREATE FUNCTION fincore._payment_step_succeeded(INOUT p fincore.payments, INOUT s fincore.payment_steps)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    tid uuid;
    rh record;
    fee record;
    r fincore.transfer_result;
    left_to_refund bigint;
    cap record;
    part bigint;
    event text;
BEGIN
    CASE s.kind
    WHEN 'authorize' THEN
        p := fincore.payment_transition(p, 'authorized');
        event := 'authorized';
        IF p.status = 'succeeded' THEN   -- automatic capture
            r := fincore.post_pending(p.hold_id, NULL, fincore._payment_transfer_id(p.id, s.step_no, 'post'));
            s.transfer_ids := s.transfer_ids || r.id;
            p.hold_id := NULL;
            fee := fincore._payment_fee(p, s.step_no, p.captured, r.id);
            p := fee.p;
            IF fee.fee_id IS NOT NULL THEN
                s.transfer_ids := s.transfer_ids || fee.fee_id;
            END IF;
            event := 'captured';
        END IF;
    WHEN 'capture' THEN
        IF s.final OR NOT p.multicapture OR p.authorized - p.captured - p.released - s.amount = 0 THEN
            r := fincore.post_pending(p.hold_id, s.amount, fincore._payment_transfer_id(p.id, s.step_no, 'post'));
            tid := r.id;
            p := fincore.payment_transition(p, 'captured', s.amount, true);
            p.hold_id := NULL;
        ELSE
            SELECT * INTO rh FROM fincore._payment_rehold(p, s.step_no, s.amount,
                                                            p.authorized - p.captured - p.released - s.amount);
            p := fincore.payment_transition(rh.p, 'captured', s.amount, false);
            tid := rh.posted_id;
        END IF;
        s.transfer_ids := s.transfer_ids || tid;
        fee := fincore._payment_fee(p, s.step_no, s.amount, tid);
        p := fee.p;
        IF fee.fee_id IS NOT NULL THEN
            s.transfer_ids := s.transfer_ids || fee.fee_id;
        END IF;
        event := 'captured';
    WHEN 'increment' THEN
        SELECT * INTO rh FROM fincore._payment_rehold(p, s.step_no, 0,
                                                        p.authorized - p.captured - p.released + s.amount);
        s.transfer_ids := s.transfer_ids || (rh.p).hold_id;
        p := fincore.payment_transition(rh.p, 'incremented', s.amount);
        event := 'authorization_incremented';
    WHEN 'cancel' THEN
        IF p.cancel_pending THEN
            r := fincore.void_pending(p.hold_id, fincore._payment_transfer_id(p.id, s.step_no, 'void'));
            s.transfer_ids := s.transfer_ids || r.id;
            p.hold_id := NULL;
            p := fincore.payment_transition(p, 'canceled');
        END IF;
        -- else the authorization failed meanwhile (or this cancels a late one at the provider):
        -- its hold was released already, nothing is left to cancel here
        event := CASE WHEN p.status = 'canceled' THEN 'canceled' ELSE 'authorization_released' END;
    WHEN 'refund' THEN
        -- Reverse the captures, oldest first, each by what is left of it.
        left_to_refund := s.amount;
        FOR cap IN
            -- The capture's transfer: an automatic capture's is after the hold, a capture's first
            -- (a fee, if any, follows it).
            SELECT x.step_no, x.transfer_ids[CASE WHEN x.kind = 'authorize' THEN 2 ELSE 1 END] AS transfer_id,
                   x.amount AS captured, x.reversed
              FROM fincore.payment_steps x
             WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.status = 'succeeded'
               AND (x.kind = 'capture' OR (x.kind = 'authorize' AND p.capture_method = 'automatic'))
             ORDER BY x.step_no
        LOOP
            EXIT WHEN left_to_refund = 0;
            part := LEAST(left_to_refund, cap.captured - cap.reversed);
            CONTINUE WHEN part <= 0;
            r := fincore.reverse_transfer(cap.transfer_id, part,
                                 fincore._payment_transfer_id(p.id, s.step_no, 'reverse:' || cap.step_no::text));
            s.transfer_ids := s.transfer_ids || r.id;
            UPDATE fincore.payment_steps x SET reversed = x.reversed + part
             WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.step_no = cap.step_no;
            left_to_refund := left_to_refund - part;
        END LOOP;
        IF left_to_refund <> 0 THEN
            RAISE EXCEPTION 'payment %: its captures do not cover a refund of %', p.id, s.amount
                USING ERRCODE = 'ZF905';
        END IF;
        p := fincore.payment_transition(p, 'refunded', s.amount);
        event := 'refunded';
    END CASE;
    s.status := 'succeeded';
    p := fincore._payment_save(p, event, pg_catalog.jsonb_build_object('step_no', s.step_no, 'kind', s.kind,
                                                                        'step_amount', s.amount,
                                                                        'transfer_ids', s.transfer_ids));
    -- An invoice's payment (billing: fincore._collect_invoice) settles its invoice.
    IF event = 'captured' AND p.metadata OPERATOR(pg_catalog.?) 'invoice_id' THEN
        PERFORM fincore._invoice_payment_result(p, true, NULL);
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_step_succeeded(fincore.payments, fincore.payment_steps) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_step_succeeded(fincore.payments, fincore.payment_steps) IS
    'Internal: the ledger postings and the transition of a provider step that succeeded.';

-- A step that failed for good: its compensation, and the payment's transition.
CREATE FUNCTION fincore._payment_step_failed(INOUT p fincore.payments, INOUT s fincore.payment_steps)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    r fincore.transfer_result;
    event text;
BEGIN
    CASE s.kind
    WHEN 'authorize' THEN
        -- Compensation: the hold is given back.
        r := fincore.void_pending(p.hold_id, fincore._payment_transfer_id(p.id, s.step_no, 'void'));
        s.transfer_ids := s.transfer_ids || r.id;
        p.hold_id := NULL;
        p := fincore.payment_transition(p, 'authorize_failed');
        p.failure_code := s.outcome_code;
        event := 'failed';
    WHEN 'capture' THEN
        p := fincore.payment_transition(p, 'capture_failed', s.amount);
        event := 'capture_failed';
    WHEN 'increment' THEN
        p := fincore.payment_transition(p, 'increment_failed', s.amount);
        event := 'increment_failed';
    WHEN 'cancel' THEN
        IF p.cancel_pending THEN
            p := fincore.payment_transition(p, 'cancel_failed');
        END IF;
        event := 'cancel_failed';
    WHEN 'refund' THEN
        p := fincore.payment_transition(p, 'refund_failed', s.amount);
        event := 'refund_failed';
    END CASE;
    -- A step failed by its deadline: its job, if no worker finished it, is not sent any more.
    IF s.outcome_source = 'timeout' AND s.job_id IS NOT NULL THEN
        BEGIN
            PERFORM fincore.cancel(s.job_id);
        EXCEPTION WHEN SQLSTATE 'ZF601' OR SQLSTATE 'ZF607' THEN
            NULL;   -- gone or finished already
        END;
    END IF;
    s.status := 'failed';
    p := fincore._payment_save(p, event, pg_catalog.jsonb_build_object('step_no', s.step_no, 'kind', s.kind,
                                                                        'step_amount', s.amount,
                                                                        'code', s.outcome_code,
                                                                        'source', s.outcome_source));
    -- An invoice's payment (billing: fincore._collect_invoice) that failed: an attempt dunning retries.
    IF event = 'failed' AND p.metadata OPERATOR(pg_catalog.?) 'invoice_id' THEN
        PERFORM fincore._invoice_payment_result(p, false, s.outcome_code);
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_step_failed(fincore.payments, fincore.payment_steps) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_step_failed(fincore.payments, fincore.payment_steps) IS
    'Internal: the compensation and the transition of a provider step that failed for good.';

-- A success the provider reports for a step fincore already failed by its deadline (its
-- compensation has run): once per step, an event for reconciliation, and for an authorization a
-- cancellation at the provider (a step of kind cancel that moves no money here).
CREATE FUNCTION fincore._payment_late_success(p fincore.payments, s fincore.payment_steps, source text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    key text := 'late:' || s.step_no::text;
    st record;
BEGIN
    PERFORM FROM fincore.payment_steps x
     WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.request_key = key;
    IF FOUND THEN
        RETURN;   -- compensated already
    END IF;
    IF s.kind = 'authorize' THEN
        st := fincore._payment_step(p, fincore._payment_provider(p), 'cancel', NULL, true, key, true, '{}');
        p := st.p;
    ELSE
        -- Nothing to run here: the record is what reconciliation starts from.
        st := fincore._payment_step(p, fincore._payment_provider(p), s.kind, s.amount, s.final, key, false, '{}');
        p := st.p;
        UPDATE fincore.payment_steps x SET status = 'failed', outcome_code = 'late_success'
         WHERE x.tenant_id = p.tenant_id AND x.payment_id = p.id AND x.step_no = (st.s).step_no;
    END IF;
    PERFORM fincore._payment_save(p, 'late_success',
                                  pg_catalog.jsonb_build_object('step_no', s.step_no, 'kind', s.kind,
                                                                'step_amount', s.amount, 'source', source,
                                                                'compensation_step', (st.s).step_no));
END
$fn$;
REVOKE ALL ON FUNCTION fincore._payment_late_success(fincore.payments, fincore.payment_steps, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._payment_late_success(fincore.payments, fincore.payment_steps, text) IS
    'Internal: a success reported after a step was failed by its deadline: a payment.late_success event, and for an authorization a cancellation at the provider.';

CREATE FUNCTION fincore.payment_step_result(payment_id uuid, step_no integer, outcome text,
                                            code text DEFAULT NULL, source text DEFAULT 'worker')
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    s fincore.payment_steps;
    done record;
BEGIN
    IF outcome IS NULL OR outcome NOT IN ('succeeded', 'failed', 'requires_action') THEN
        RAISE EXCEPTION 'invalid step outcome %', coalesce(pg_catalog.quote_literal(outcome), 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'succeeded, failed, or requires_action (of an authorization).';
    END IF;
    IF source IS NULL OR source NOT IN ('worker', 'webhook', 'timeout') THEN
        RAISE EXCEPTION 'invalid step outcome source %', coalesce(pg_catalog.quote_literal(source), 'NULL')
            USING ERRCODE = 'ZF901', HINT = 'worker, webhook or timeout.';
    END IF;
    -- Every writer of a step holds its payment's lock: the step needs none of its own.
    SELECT * INTO s FROM fincore.payment_steps x
     WHERE x.tenant_id = tenant AND x.payment_id = p.id AND x.step_no = payment_step_result.step_no;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % of payment % not found', coalesce(step_no::text, 'NULL'), p.id
            USING ERRCODE = 'ZF909';
    END IF;
    -- The first report that decides the step wins; every later one is a no-op, except that a
    -- success reported after fincore failed the step by its deadline is compensated at the
    -- provider (an authorization is cancelled there) and announced for reconciliation.
    IF s.status <> 'pending' THEN
        IF outcome = 'succeeded' AND s.status = 'failed' AND s.outcome_source = 'timeout' THEN
            PERFORM fincore._payment_late_success(p, s, source);
        END IF;
        RETURN s;
    END IF;
    IF outcome = 'requires_action' THEN
        IF s.kind <> 'authorize' THEN
            RAISE EXCEPTION 'only an authorization can require an action (step % is a %)', s.step_no, s.kind
                USING ERRCODE = 'ZF901';
        END IF;
        IF p.status = 'processing' THEN
            p := fincore.payment_transition(p, 'requires_action');
            PERFORM fincore._payment_save(p, 'requires_action', pg_catalog.jsonb_build_object('step_no', s.step_no));
        END IF;
        RETURN s;
    END IF;
    s.outcome_code := code;
    s.outcome_source := source;
    IF outcome = 'failed' AND source = 'worker' AND pg_catalog.now() < s.deadline
       AND NOT (coalesce(code, '') = ANY ((fincore._payment_provider(p)).hard_decline_codes)) THEN
        -- A soft failure: the step stays pending, the worker fails the job and the queue retries it.
        UPDATE fincore.payment_steps x SET outcome_code = code, outcome_source = source
         WHERE x.tenant_id = tenant AND x.payment_id = p.id AND x.step_no = s.step_no;
        RETURN s;
    END IF;
    s.decided_at := pg_catalog.now();
    IF s.kind = 'authorize' AND p.status IN ('canceled', 'failed') THEN
        -- Canceled (or failed) while the authorization waited, its hold released: the answer is
        -- recorded and changes nothing.
        s.status := CASE WHEN outcome = 'succeeded' THEN 'succeeded' ELSE 'failed' END;
        UPDATE fincore.payment_steps x
           SET status = s.status, outcome_code = s.outcome_code, outcome_source = s.outcome_source,
               decided_at = s.decided_at
         WHERE x.tenant_id = tenant AND x.payment_id = p.id AND x.step_no = s.step_no;
        RETURN s;
    END IF;
    IF outcome = 'succeeded' THEN
        SELECT * INTO done FROM fincore._payment_step_succeeded(p, s);
    ELSE
        SELECT * INTO done FROM fincore._payment_step_failed(p, s);
    END IF;
    p := done.p;
    s := done.s;
    UPDATE fincore.payment_steps x
       SET status = s.status, outcome_code = s.outcome_code, outcome_source = s.outcome_source,
           transfer_ids = s.transfer_ids, decided_at = s.decided_at
     WHERE x.tenant_id = tenant AND x.payment_id = p.id AND x.step_no = s.step_no;
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.payment_step_result(uuid, integer, text, text, text) IS
    'Reports a provider step''s outcome (succeeded, failed, requires_action) from the worker, a webhook or a timeout: the first report that decides the step wins and posts its ledger entries (or runs its compensation); later reports are no-ops. A failure with a code that is not a hard decline, from the worker before the step''s deadline, leaves the step pending (retry the job). Trusted roles only. ZF901, ZF902, ZF909.';

CREATE FUNCTION fincore.payment_webhook_result(provider_key text, outcome text, code text DEFAULT NULL)
    RETURNS fincore.payment_steps
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.payment_steps;
BEGIN
    SELECT * INTO s FROM fincore.payment_steps x WHERE x.tenant_id = tenant AND x.provider_key = provider_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no payment step has provider key %', coalesce(pg_catalog.quote_literal(provider_key), 'NULL')
            USING ERRCODE = 'ZF909';
    END IF;
    RETURN fincore.payment_step_result(s.payment_id, s.step_no, outcome, code, 'webhook');
END
$fn$;
COMMENT ON FUNCTION fincore.payment_webhook_result(text, text, text) IS
    'Reports a step''s outcome from the provider''s webhook (after fincore.accept_webhook() checked its signature and recorded it once), by the provider idempotency key the step sent: as payment_step_result(). Trusted roles only. ZF909.';

CREATE FUNCTION fincore.expire_payment_steps(max_steps integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
DECLARE
    t uuid;
    r record;
    n integer := 0;
    -- What fincore.set_tenant() set in this transaction ('' if nothing), given back at the end.
    saved text := pg_catalog.current_setting('fincore.tenant', true);
BEGIN
    -- The tenants with due steps (a read of every shard on Citus, without locks), then each
    -- tenant's steps by statements that name it, run as that tenant.
    FOR t IN SELECT DISTINCT x.tenant_id FROM fincore.payment_steps x
              WHERE x.status = 'pending' AND x.deadline < pg_catalog.now() ORDER BY 1 LOOP
        EXIT WHEN n >= max_steps;
        PERFORM fincore._use_tenant(t);
        FOR r IN SELECT x.payment_id, x.step_no FROM fincore.payment_steps x
                  WHERE x.tenant_id = t AND x.status = 'pending' AND x.deadline < pg_catalog.now()
                  ORDER BY x.deadline LIMIT max_steps - n
        LOOP
            PERFORM fincore.payment_step_result(r.payment_id, r.step_no, 'failed', 'timeout', 'timeout');
            n := n + 1;
        END LOOP;
    END LOOP;
    PERFORM fincore._use_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.expire_payment_steps(integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore.expire_payment_steps(integer) IS
    'Fails the provider steps whose deadline has passed (oldest first, at most max_steps), running their compensations: a maintenance task. Returns how many.';

CREATE FUNCTION fincore.expire_payment_steps_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.expire_payment_steps(100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.expire_payment_steps_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.expire_payment_steps_step(interval) IS
    'Maintenance step: expire_payment_steps in batches of 100 until none is due or the budget is spent.';

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('expire_payment_steps', 'fincore.expire_payment_steps_step(interval)', 120,
     'Fail the payment steps past their deadline, with their compensations');

CREATE FUNCTION fincore.open_dispute(payment_id uuid, amount bigint DEFAULT NULL)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    prov fincore.payment_providers;
    st record;
    amt bigint := coalesce(amount, p.captured - p.refunded - p.refund_pending - p.disputed - p.lost);
    r fincore.transfer_result;
BEGIN
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = p.provider;
    IF prov.disputes_account IS NULL THEN
        RAISE EXCEPTION 'provider % has no disputes account', p.provider
            USING ERRCODE = 'ZF901', HINT = 'Set disputes_account with fincore.create_payment_provider().';
    END IF;
    p := fincore.payment_transition(p, 'dispute', amt);
    r := fincore.transfer(p.settlement_account, prov.disputes_account, amt,
                          id => fincore._payment_transfer_id(p.id, p.steps + 1, 'dispute'),
                          metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', p.steps + 1));
    st := fincore._payment_step(p, prov, 'dispute', amt, true, NULL, false, ARRAY[r.id]);
    RETURN fincore._payment_save(st.p, 'disputed', pg_catalog.jsonb_build_object('step_no', (st.s).step_no, 'dispute', amt));
END
$fn$;
COMMENT ON FUNCTION fincore.open_dispute(uuid, bigint) IS
    'Records a dispute the provider reported: moves amount (NULL: all captured and not refunded) from the settlement account to the provider''s disputes account; status disputed. Trusted roles only. ZF902, ZF903, ZF905, ZF901.';

CREATE FUNCTION fincore.resolve_dispute(payment_id uuid, won boolean)
    RETURNS fincore.payments
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments := fincore._payment_lock(tenant, payment_id);
    prov fincore.payment_providers;
    st record;
    step_no integer;
    amt bigint := p.disputed;
    ids uuid[] := '{}';
    r fincore.transfer_result;
BEGIN
    IF won IS NULL THEN
        RAISE EXCEPTION 'resolve_dispute needs won => true or false' USING ERRCODE = 'ZF901';
    END IF;
    SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = p.provider;
    p := fincore.payment_transition(p, CASE WHEN won THEN 'dispute_won' ELSE 'dispute_lost' END);
    IF NOT won AND prov.loss_account IS NULL THEN
        RAISE EXCEPTION 'provider % has no loss account', p.provider
            USING ERRCODE = 'ZF901', HINT = 'Set loss_account with fincore.create_payment_provider().';
    END IF;
    step_no := p.steps + 1;
    IF won THEN
        r := fincore.transfer(prov.disputes_account, p.settlement_account, amt,
                              id => fincore._payment_transfer_id(p.id, step_no, 'won'),
                              metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', step_no));
        ids := ids || r.id;
    ELSE
        r := fincore.transfer(prov.disputes_account, prov.loss_account, amt,
                              id => fincore._payment_transfer_id(p.id, step_no, 'lost'),
                              metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', step_no));
        ids := ids || r.id;
        IF prov.dispute_fee > 0 THEN
            r := fincore.transfer(p.settlement_account, prov.loss_account, prov.dispute_fee,
                                  id => fincore._payment_transfer_id(p.id, step_no, 'fee'),
                                  metadata => pg_catalog.jsonb_build_object('payment_id', p.id, 'step_no', step_no,
                                                                            'dispute_fee', true));
            ids := ids || r.id;
        END IF;
    END IF;
    st := fincore._payment_step(p, prov, CASE WHEN won THEN 'dispute_won' ELSE 'dispute_lost' END, amt, true, NULL,
                                false, ids);
    RETURN fincore._payment_save(st.p, CASE WHEN won THEN 'dispute_won' ELSE 'dispute_lost' END,
                                 pg_catalog.jsonb_build_object('step_no', step_no, 'dispute', amt));
END
$fn$;
COMMENT ON FUNCTION fincore.resolve_dispute(uuid, boolean) IS
    'Settles a payment''s dispute: won moves the disputed amount back to the settlement account; lost moves it to the loss account, with the provider''s dispute fee from the settlement account. Trusted roles only. ZF902, ZF903, ZF901.';

CREATE FUNCTION fincore.payment(payment_id uuid) RETURNS fincore.payments
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    p fincore.payments;
BEGIN
    SELECT * INTO p FROM fincore.payments x WHERE x.tenant_id = tenant AND x.id = payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', coalesce(payment_id::text, 'NULL')
            USING ERRCODE = 'ZF902', HINT = 'Payments are visible only in their own tenant.';
    END IF;
    RETURN p;
END
$fn$;
COMMENT ON FUNCTION fincore.payment(uuid) IS 'The current tenant''s payment (ZF902 if there is none).';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.payment_transition(fincore.payments,text,bigint,boolean)', 'app'),
    ('fincore.create_payment_provider(text,uuid,text,text[],interval,interval,uuid,uuid,bigint,integer,text,uuid)', 'app'),
    ('fincore.create_payment(bigint,text,text,uuid,text,boolean,boolean,text,jsonb,uuid)', 'app'),
    ('fincore.confirm_payment(uuid,uuid)', 'app'),
    ('fincore.capture_payment(uuid,bigint,boolean,text)', 'app'),
    ('fincore.increment_authorization(uuid,bigint,text)', 'app'),
    ('fincore.cancel_payment(uuid,text)', 'app'),
    ('fincore.refund_payment(uuid,bigint,text)', 'app'),
    ('fincore.payment(uuid)', 'app'),
    ('fincore.payment_step_result(uuid,integer,text,text,text)', 'trusted'),
    ('fincore.payment_webhook_result(text,text,text)', 'trusted'),
    ('fincore.open_dispute(uuid,bigint)', 'trusted'),
    ('fincore.resolve_dispute(uuid,boolean)', 'trusted');

-- ---- Billing (issue 19): sql/modules/billing.sql, as it is ----------------------------------

-- ---------------------------------------------------------------------------
-- Billing (docs/billing.md): the arithmetic first.  Periods stepped from an
-- anchor with month-end clamping, and proration to the second, in C
-- (src/billing_engine.c); the catalogue, subscriptions and invoices that use
-- them come next.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.billing_period(anchor timestamptz, unit text, count integer, at timestamptz,
                                       OUT period_index bigint, OUT period_start timestamptz,
                                       OUT period_end timestamptz)
    RETURNS record
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_billing_period';
COMMENT ON FUNCTION fincore.billing_period(timestamptz, text, integer, timestamptz) IS
    'The billing period of count units (day, week, month, year) from anchor that contains at: its index (negative before the anchor) and [start, end). Months and years step from the anchor, the day clamped to the month''s last (anchor Jan 31: Feb 28/29, Mar 31, Apr 30). UTC instants. ZFA01.';

CREATE FUNCTION fincore.proration(billed bigint, billed_from timestamptz, period_start timestamptz,
                                  period_end timestamptz, new_amount bigint, at timestamptz,
                                  rounding text DEFAULT 'half_even', OUT credit bigint, OUT debit bigint)
    RETURNS record
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_proration';
COMMENT ON FUNCTION fincore.proration(bigint, timestamptz, timestamptz, timestamptz, bigint, timestamptz, text) IS
    'A change at `at` of a subscription billed `billed` for [billed_from, period_end): credit = billed x (period_end - at) / (period_end - billed_from), from what was billed and never more; debit = new_amount (a full period''s price) x (period_end - at) / (period_end - period_start). Whole seconds, exact, rounded once (half_even by default). ZFA02, ZF104, ZF107.';

CREATE FUNCTION fincore.subscription_transition(status text, action text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_subscription_transition';
COMMENT ON FUNCTION fincore.subscription_transition(text, text) IS
    'The subscription state machine (C, Stripe Billing''s statuses and the transitions it allows): the status action leads to from status, or ZFA03 if it is not allowed (ZFA04 for an unknown status or action). Writes nothing.';

CREATE FUNCTION fincore.subscription_entitles(status text) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_subscription_entitles';
COMMENT ON FUNCTION fincore.subscription_entitles(text) IS
    'Whether a subscription in this status grants its entitlements: trialing, active, and past_due while its retries run. ZFA04.';

-- ---------------------------------------------------------------------------
-- The catalogue: products and their prices.  A price is immutable (no function changes one):
-- a new price is a new row, and a subscription moves to it.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.billing_products (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    name       text        NOT NULL CHECK (pg_catalog.length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.billing_products IS 'What a tenant sells by subscription.';
SELECT fincore.protect('fincore.billing_products');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_products', '');

-- The features a product's subscribers are entitled to (fincore.entitled(feature)).
CREATE TABLE fincore.billing_features (
    tenant_id  uuid NOT NULL,
    product_id uuid NOT NULL,
    feature    text NOT NULL CHECK (pg_catalog.length(feature) BETWEEN 1 AND 100),
    PRIMARY KEY (tenant_id, product_id, feature),
    FOREIGN KEY (tenant_id, product_id) REFERENCES fincore.billing_products (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.billing_features IS
    'The features a product grants while a subscription to one of its prices entitles (trialing, active, past_due): what fincore.entitled(feature) reads.';
SELECT fincore.protect('fincore.billing_features');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_features', '');

CREATE TABLE fincore.billing_prices (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    product_id     uuid        NOT NULL,
    currency       text        NOT NULL,
    unit_amount    bigint      NOT NULL CHECK (unit_amount >= 0),
    scheme         text        NOT NULL CHECK (scheme IN ('flat', 'per_seat', 'tiered', 'volume')),
    tiers          jsonb,      -- Stripe's tiers of a tiered or volume price (fincore.billing_price_amount)
    interval_unit  text        NOT NULL CHECK (interval_unit IN ('day', 'week', 'month', 'year')),
    interval_count integer     NOT NULL CHECK (interval_count BETWEEN 1 AND 366),
    trial_days     integer     NOT NULL DEFAULT 0 CHECK (trial_days BETWEEN 0 AND 730),
    external_id    text        CHECK (pg_catalog.length(external_id) BETWEEN 1 AND 255),  -- Stripe's price id
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, external_id),
    FOREIGN KEY (tenant_id, product_id) REFERENCES fincore.billing_products (tenant_id, id),
    CHECK ((scheme IN ('tiered', 'volume')) = (tiers IS NOT NULL))
);
COMMENT ON TABLE fincore.billing_prices IS
    'Prices of products: an amount per interval (flat, per seat, or by tiers: graduated or volume), a currency, a trial. Immutable: a change is a new price.';
SELECT fincore.protect('fincore.billing_prices');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_prices', '');

-- A subscription: its price and quantity, status, anchor and current period, and what was
-- billed for the rest of the period from billed_from (what a change credits from).
CREATE TABLE fincore.subscriptions (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    idempotency_key text        CHECK (pg_catalog.length(idempotency_key) BETWEEN 1 AND 255),
    customer_account uuid       NOT NULL,
    price_id        uuid        NOT NULL,
    quantity        integer     NOT NULL CHECK (quantity >= 1),
    status          text        NOT NULL,
    anchor          timestamptz NOT NULL,
    trial_end       timestamptz,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    billed          bigint      NOT NULL CHECK (billed >= 0),
    billed_from     timestamptz NOT NULL,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    pending_price_id uuid,                              -- a change scheduled for the period's end
    pending_quantity integer    CHECK (pending_quantity >= 1),
    subscriber      uuid,                               -- the user entitled (fincore.uid()), if any
    external_id     text,                               -- Stripe's subscription id: Stripe bills it
    external_version bigint,                            -- the created time of the last Stripe event applied
    -- The payment method (fincore.set_payment_method): what the customer's credit does not cover
    -- is charged through this provider, from this payer account (docs/payments.md).
    payment_provider text,
    payment_account uuid,
    lines           integer     NOT NULL DEFAULT 0,     -- the number of its lines: the last line_no
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    UNIQUE (tenant_id, external_id),
    FOREIGN KEY (tenant_id, price_id) REFERENCES fincore.billing_prices (tenant_id, id),
    FOREIGN KEY (tenant_id, pending_price_id) REFERENCES fincore.billing_prices (tenant_id, id),
    FOREIGN KEY (tenant_id, payment_provider) REFERENCES fincore.payment_providers (tenant_id, name),
    CHECK ((payment_provider IS NULL) = (payment_account IS NULL)),
    CHECK (period_start <= billed_from AND billed_from <= period_end),
    CHECK ((pending_price_id IS NULL) = (pending_quantity IS NULL))
);
-- fincore.entitled(): a user's subscriptions in the tenant.
CREATE INDEX subscriptions_subscriber_idx ON fincore.subscriptions (tenant_id, subscriber) WHERE subscriber IS NOT NULL;
-- billing_run: the subscriptions due for renewal, and the incomplete ones due to expire.
CREATE INDEX subscriptions_due_idx ON fincore.subscriptions (tenant_id, period_end)
    WHERE status IN ('trialing', 'active', 'past_due') AND external_id IS NULL;
CREATE INDEX subscriptions_incomplete_idx ON fincore.subscriptions (tenant_id, created_at)
    WHERE status = 'incomplete' AND external_id IS NULL;
COMMENT ON TABLE fincore.subscriptions IS
    'Subscriptions: price, quantity, status (subscription_transition), anchor, current period, and what was billed for [billed_from, period_end). Written only by fincore''s billing functions, under the row''s lock.';
SELECT fincore.protect('fincore.subscriptions');
SELECT pg_catalog.pg_extension_config_dump('fincore.subscriptions', '');

-- What a subscription owes or is owed, line by line, until an invoice takes the lines.
CREATE TABLE fincore.subscription_lines (
    tenant_id       uuid        NOT NULL,
    subscription_id uuid        NOT NULL,
    line_no         integer     NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('period', 'credit', 'debit')),
    amount          bigint      NOT NULL CHECK (amount >= 0),   -- a credit is owed to the customer
    price_id        uuid        NOT NULL,
    quantity        integer     NOT NULL,
    span_start      timestamptz NOT NULL,
    span_end        timestamptz NOT NULL,
    invoice_id      uuid,       -- the invoice that took the line (NULL: not invoiced yet)
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, subscription_id, line_no),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES fincore.subscriptions (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.subscription_lines IS
    'The lines of a subscription: a period billed, and the credit and debit of each change (proration), for the invoices to come.';
SELECT fincore.protect('fincore.subscription_lines');
SELECT pg_catalog.pg_extension_config_dump('fincore.subscription_lines', '');

-- A price's amount for a full interval at a quantity; ZF104 if it overflows.
CREATE FUNCTION fincore.billing_price_amount(scheme text, unit_amount bigint, tiers jsonb, quantity integer)
    RETURNS bigint
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_billing_price_amount';
COMMENT ON FUNCTION fincore.billing_price_amount(text, bigint, jsonb, integer) IS
    'What a price charges for quantity units for a full interval (C): flat (unit_amount), per_seat (unit_amount x quantity), tiered (Stripe''s graduated tiers: each unit at its tier''s unit_amount, plus the flat_amount of every tier reached) or volume (every unit at the unit_amount of the tier the quantity falls in, plus its flat_amount). ZFA05 for a bad scheme, amount or tiers, ZFA04 for a quantity below 1, ZF104 on overflow.';

CREATE FUNCTION fincore._billing_amount(price fincore.billing_prices, quantity integer) RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    RETURN fincore.billing_price_amount(price.scheme, price.unit_amount, price.tiers, quantity);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._billing_amount(fincore.billing_prices, integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore._billing_amount(fincore.billing_prices, integer) IS
    'Internal: a price''s amount for a full interval at a quantity (fincore.billing_price_amount).';

CREATE FUNCTION fincore.create_product(name text, id uuid DEFAULT NULL) RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    new_id uuid := coalesce(id, fincore.uuidv7());
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR pg_catalog.length(name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid product name' USING ERRCODE = 'ZFA05', HINT = '1 to 200 characters.';
    END IF;
    INSERT INTO fincore.billing_products (tenant_id, id, name) VALUES (tenant, new_id, name);
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_product(text, uuid) IS
    'Creates a product of the current tenant and returns its id. Tenant admins only (ZF803). ZFA05.';

CREATE FUNCTION fincore.create_price(product_id uuid, unit_amount bigint, currency text,
        interval_unit text DEFAULT 'month', interval_count integer DEFAULT 1, scheme text DEFAULT 'flat',
        trial_days integer DEFAULT 0, id uuid DEFAULT NULL, external_id text DEFAULT NULL, tiers jsonb DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    new_id uuid := coalesce(id, fincore.uuidv7());
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    PERFORM FROM fincore.billing_products x WHERE x.tenant_id = tenant AND x.id = product_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'product % not found', coalesce(product_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    IF unit_amount IS NULL OR unit_amount < 0 OR scheme IS NULL OR scheme NOT IN ('flat', 'per_seat', 'tiered', 'volume')
       OR interval_unit IS NULL OR interval_unit NOT IN ('day', 'week', 'month', 'year')
       OR interval_count IS NULL OR interval_count NOT BETWEEN 1 AND 366
       OR trial_days IS NULL OR trial_days NOT BETWEEN 0 AND 730 THEN
        RAISE EXCEPTION 'invalid price: unit_amount >= 0, scheme flat, per_seat, tiered or volume, interval day/week/month/year x 1 to 366, trial 0 to 730 days'
            USING ERRCODE = 'ZFA05';
    END IF;
    PERFORM fincore.billing_price_amount(scheme, unit_amount, tiers, 1);    -- ZFA05 for bad tiers
    PERFORM fincore.currency_exponent(currency);     -- ZF102 for an unknown currency
    IF external_id IS NOT NULL AND pg_catalog.length(external_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid external price id' USING ERRCODE = 'ZFA05', HINT = '1 to 255 characters.';
    END IF;
    INSERT INTO fincore.billing_prices (tenant_id, id, product_id, currency, unit_amount, scheme, tiers,
                                        interval_unit, interval_count, trial_days, external_id)
    VALUES (tenant, new_id, product_id, currency, unit_amount, scheme, tiers, interval_unit, interval_count,
            trial_days, external_id);
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION fincore.create_price(uuid, bigint, text, text, integer, text, integer, uuid, text, jsonb) IS
    'Creates an immutable price of a product: unit_amount minor units per interval (flat, or per seat), or tiers (tiered or volume: Stripe''s tiers, fincore.billing_price_amount), a currency, a trial; external_id is the price''s id at Stripe when Stripe bills it (apply_stripe_event). Tenant admins only (ZF803). ZFA05, ZFA06, ZF102.';

CREATE FUNCTION fincore.set_product_features(product_id uuid, features text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    bad text;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    PERFORM FROM fincore.billing_products x WHERE x.tenant_id = tenant AND x.id = product_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'product % not found', coalesce(product_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    SELECT f INTO bad FROM pg_catalog.unnest(features) f WHERE f IS NULL OR pg_catalog.length(f) NOT BETWEEN 1 AND 100 LIMIT 1;
    IF features IS NULL OR FOUND THEN
        RAISE EXCEPTION 'invalid feature %', coalesce(pg_catalog.quote_literal(bad), 'NULL')
            USING ERRCODE = 'ZFA05', HINT = 'A feature is a name of 1 to 100 characters.';
    END IF;
    DELETE FROM fincore.billing_features x WHERE x.tenant_id = tenant AND x.product_id = product_id
       AND x.feature <> ALL (features);
    INSERT INTO fincore.billing_features (tenant_id, product_id, feature)
    SELECT DISTINCT tenant, product_id, f FROM pg_catalog.unnest(features) f
    ON CONFLICT DO NOTHING;
END
$fn$;
COMMENT ON FUNCTION fincore.set_product_features(uuid, text[]) IS
    'Sets the features a product grants its subscribers (replacing the ones it had): what fincore.entitled(feature) checks. Tenant admins only (ZF803). ZFA05, ZFA06.';

-- Whether the current user may use a feature: for row level security policies of an app's own
-- tables, e.g. USING (NOT premium OR fincore.entitled('premium')).
CREATE FUNCTION fincore.entitled(feature text) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.tenant_id();
    who uuid := fincore.uid();
BEGIN
    IF tenant IS NULL OR who IS NULL OR feature IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT FROM fincore.subscriptions s
          JOIN fincore.billing_prices p ON p.tenant_id = tenant AND p.id = s.price_id
          JOIN fincore.billing_features f ON f.tenant_id = tenant AND f.product_id = p.product_id
         WHERE s.tenant_id = tenant AND s.subscriber = who AND f.feature = feature
           AND fincore.subscription_entitles(s.status));
END
$fn$;
COMMENT ON FUNCTION fincore.entitled(text) IS
    'Whether the current user (fincore.uid()) of the current tenant has a subscription whose status entitles (trialing, active, past_due) to a product granting the feature; false without a tenant or a user. For row level security policies.';

-- The tenant's subscription, locked; ZFA06 if there is none.
CREATE FUNCTION fincore._subscription_lock(tenant uuid, subscription_id uuid) RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    s fincore.subscriptions;
BEGIN
    SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.id = subscription_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', coalesce(subscription_id::text, 'NULL')
            USING ERRCODE = 'ZFA06', HINT = 'Subscriptions are visible only in their own tenant.';
    END IF;
    PERFORM fincore._billing_not_external(s);
    RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._subscription_lock(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._subscription_lock(uuid, uuid) IS 'Internal: the tenant''s subscription, locked FOR UPDATE (ZFA06 if none, ZFA12 if Stripe bills it).';

-- ZFA12 for a subscription Stripe bills: its events change it (apply_stripe_event), not fincore's functions.
CREATE FUNCTION fincore._billing_not_external(s fincore.subscriptions) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF s.external_id IS NOT NULL THEN
        RAISE EXCEPTION 'subscription % is billed by Stripe (%)', s.id, s.external_id
            USING ERRCODE = 'ZFA12', HINT = 'Change it at Stripe: its events update it here (fincore.apply_stripe_event).';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._billing_not_external(fincore.subscriptions) FROM PUBLIC;
COMMENT ON FUNCTION fincore._billing_not_external(fincore.subscriptions) IS 'Internal: ZFA12 if Stripe bills the subscription.';

CREATE FUNCTION fincore.create_subscription(customer_account uuid, price_id uuid, quantity integer DEFAULT 1,
        anchor timestamptz DEFAULT NULL, idempotency_key text DEFAULT NULL, id uuid DEFAULT NULL,
        subscriber uuid DEFAULT NULL)
    RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    price fincore.billing_prices;
    s fincore.subscriptions;
    per record;
    at timestamptz := pg_catalog.now();
BEGIN
    SELECT * INTO price FROM fincore.billing_prices x WHERE x.tenant_id = tenant AND x.id = price_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'price % not found', coalesce(price_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = customer_account AND a.currency = price.currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % not found in %', coalesce(customer_account::text, 'NULL'), price.currency
            USING ERRCODE = 'ZF301', HINT = 'The customer''s account is the tenant''s, in the price''s currency.';
    END IF;
    IF quantity IS NULL OR quantity < 1 OR (idempotency_key IS NOT NULL AND pg_catalog.length(idempotency_key) NOT BETWEEN 1 AND 255) THEN
        RAISE EXCEPTION 'invalid subscription: quantity >= 1, an idempotency key of 1 to 255 characters'
            USING ERRCODE = 'ZFA04';
    END IF;
    s.tenant_id := tenant;
    s.id := coalesce(id, fincore.uuidv7());
    s.idempotency_key := idempotency_key;
    s.customer_account := customer_account;
    s.price_id := price_id;
    s.quantity := quantity;
    s.anchor := coalesce(anchor, at);
    IF price.trial_days > 0 THEN
        s.status := 'trialing';
        s.trial_end := at + pg_catalog.make_interval(days => price.trial_days);
    ELSE
        s.status := 'incomplete';
    END IF;
    per := fincore.billing_period(s.anchor, price.interval_unit, price.interval_count, at);
    s.period_start := per.period_start;
    s.period_end := per.period_end;
    -- The first period from now: billed for what is left of it (nothing while trialing).
    s.billed_from := at;
    s.billed := CASE WHEN s.status = 'trialing' THEN 0
                     ELSE (fincore.proration(0, per.period_start, per.period_start, per.period_end,
                                             fincore._billing_amount(price, quantity), at)).debit END;
    s.cancel_at_period_end := false;
    s.subscriber := subscriber;
    s.lines := 1;
    s.created_at := at;
    s.updated_at := at;
    INSERT INTO fincore.subscriptions VALUES (s.*) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO s FROM fincore.subscriptions x
         WHERE x.tenant_id = tenant AND (x.idempotency_key = create_subscription.idempotency_key OR x.id = create_subscription.id)
         ORDER BY (x.idempotency_key = create_subscription.idempotency_key) DESC NULLS LAST LIMIT 1;
        IF s.price_id <> price_id OR s.quantity <> quantity OR s.customer_account <> customer_account
           OR s.idempotency_key IS DISTINCT FROM idempotency_key OR s.subscriber IS DISTINCT FROM subscriber THEN
            RAISE EXCEPTION 'subscription % exists with other fields', s.id
                USING ERRCODE = 'ZFA07', HINT = 'An idempotency key (or id) names one subscription.';
        END IF;
        RETURN s;
    END IF;
    INSERT INTO fincore.subscription_lines (tenant_id, subscription_id, line_no, kind, amount, price_id, quantity,
                                            span_start, span_end)
    VALUES (tenant, s.id, 1, 'period', s.billed, price_id, quantity, at, s.period_end);
    PERFORM fincore.emit('billing', 'subscription.created', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                       'price_id', price_id, 'quantity', quantity,
                                                       'period_end', s.period_end, 'billed', s.billed));
    IF s.status = 'incomplete' THEN
        -- The first invoice, at once, and its collection: active when it is paid; else it stays
        -- incomplete until pay_invoice, or expires after 23 hours (billing_run).
        s := fincore._invoice_and_collect(s, true);
        PERFORM fincore._subscription_save_status(s, 'incomplete');
    END IF;
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.create_subscription(uuid, uuid, integer, timestamptz, text, uuid, uuid) IS
    'Subscribes a customer account (and its subscriber, the user fincore.entitled() serves) to a price: trialing when the price has a trial, else its first invoice is made and collected at once (active when paid, incomplete until then). The period is the anchor''s (default now) that contains now, billed for what is left of it. Idempotent by idempotency_key (or id; ZFA07 with other fields). ZFA04, ZFA06, ZF301.';

-- The lines a change of price and/or quantity at `at` makes: the credit for what was billed for
-- the rest of the period, and the debit at the new price (none with proration_behavior none, or
-- for a change at the period's end).  Checks the change; writes nothing.
CREATE FUNCTION fincore._subscription_change_lines(s fincore.subscriptions, new_price fincore.billing_prices,
        new_quantity integer, at timestamptz, proration_behavior text, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    old_price fincore.billing_prices;
    r record;
BEGIN
    IF proration_behavior IS NULL OR proration_behavior NOT IN ('create_prorations', 'always_invoice', 'none') THEN
        RAISE EXCEPTION 'invalid proration behaviour %', coalesce(pg_catalog.quote_literal(proration_behavior), 'NULL')
            USING ERRCODE = 'ZFA04', HINT = 'create_prorations, always_invoice or none.';
    END IF;
    IF new_quantity IS NULL OR new_quantity < 1 THEN
        RAISE EXCEPTION 'invalid quantity %', coalesce(new_quantity::text, 'NULL') USING ERRCODE = 'ZFA04';
    END IF;
    SELECT * INTO old_price FROM fincore.billing_prices x WHERE x.tenant_id = s.tenant_id AND x.id = s.price_id;
    IF new_price.currency <> old_price.currency OR new_price.interval_unit <> old_price.interval_unit
       OR new_price.interval_count <> old_price.interval_count THEN
        RAISE EXCEPTION 'subscription %: a change keeps the currency and the interval (% % %, not % % %)', s.id,
                old_price.currency, old_price.interval_count, old_price.interval_unit,
                new_price.currency, new_price.interval_count, new_price.interval_unit
            USING ERRCODE = 'ZFA04', HINT = 'Cancel and create a new subscription to change them.';
    END IF;
    IF at < s.billed_from OR at > s.period_end THEN
        RAISE EXCEPTION 'subscription %: a change at % is outside its current period (from % to %)', s.id, at,
                s.billed_from, s.period_end
            USING ERRCODE = 'ZFA02';
    END IF;
    -- Nothing is left of the period at its end (nor after a change there, billed_from = period_end).
    IF proration_behavior = 'none' OR at = s.period_end THEN
        credit := 0;
        debit := 0;
        RETURN;
    END IF;
    r := fincore.proration(s.billed, s.billed_from, s.period_start, s.period_end,
                           CASE WHEN s.status = 'trialing' THEN 0 ELSE fincore._billing_amount(new_price, new_quantity) END,
                           at);
    credit := r.credit;
    debit := r.debit;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._subscription_change_lines(fincore.subscriptions, fincore.billing_prices, integer, timestamptz, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._subscription_change_lines(fincore.subscriptions, fincore.billing_prices, integer, timestamptz, text) IS
    'Internal: checks a change and returns its credit and debit (the same code for preview_change and change_subscription).';

-- The price a change names (the subscription's own when NULL); ZFA06 if the tenant has none.
CREATE FUNCTION fincore._billing_price(tenant uuid, price_id uuid) RETURNS fincore.billing_prices
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    p fincore.billing_prices;
BEGIN
    SELECT * INTO p FROM fincore.billing_prices x WHERE x.tenant_id = tenant AND x.id = price_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'price % not found', coalesce(price_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    RETURN p;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._billing_price(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._billing_price(uuid, uuid) IS 'Internal: the tenant''s price (ZFA06 if none).';

CREATE FUNCTION fincore.preview_change(subscription_id uuid, price_id uuid DEFAULT NULL, quantity integer DEFAULT NULL,
        at timestamptz DEFAULT NULL, proration_behavior text DEFAULT 'create_prorations',
        at_period_end boolean DEFAULT false, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions;
    r record;
BEGIN
    SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.id = subscription_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', coalesce(subscription_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    PERFORM fincore._billing_not_external(s);
    PERFORM fincore.subscription_transition(s.status, 'change');
    r := fincore._subscription_change_lines(s, fincore._billing_price(tenant, coalesce(price_id, s.price_id)),
                                            coalesce(quantity, s.quantity),
                                            CASE WHEN at_period_end THEN s.period_end ELSE coalesce(at, pg_catalog.now()) END,
                                            proration_behavior);
    credit := r.credit;
    debit := r.debit;
END
$fn$;
COMMENT ON FUNCTION fincore.preview_change(uuid, uuid, integer, timestamptz, text, boolean) IS
    'What change_subscription with the same arguments would bill, from the same code: the credit for the unused rest of what was billed and the debit at the new price (0 and 0 with proration_behavior none or at the period''s end). Writes nothing. ZFA02-ZFA06.';

CREATE FUNCTION fincore.change_subscription(subscription_id uuid, price_id uuid DEFAULT NULL, quantity integer DEFAULT NULL,
        at timestamptz DEFAULT NULL, proration_behavior text DEFAULT 'create_prorations',
        at_period_end boolean DEFAULT false, OUT credit bigint, OUT debit bigint)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    p fincore.billing_prices := fincore._billing_price(tenant, coalesce(price_id, s.price_id));
    q integer := coalesce(quantity, s.quantity);
    t timestamptz := CASE WHEN at_period_end THEN s.period_end ELSE coalesce(at, pg_catalog.now()) END;
    r record;
BEGIN
    s.status := fincore.subscription_transition(s.status, 'change');
    r := fincore._subscription_change_lines(s, p, q, t, proration_behavior);
    credit := r.credit;
    debit := r.debit;
    IF at_period_end THEN
        -- Scheduled: billing_run renews the subscription at the new price and quantity.
        UPDATE fincore.subscriptions x SET pending_price_id = p.id, pending_quantity = q, updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id;
    ELSIF proration_behavior = 'none' THEN
        -- What was billed stays as it was; the next period is billed at the new price.
        UPDATE fincore.subscriptions x SET price_id = p.id, quantity = q, pending_price_id = NULL,
               pending_quantity = NULL, updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id;
    ELSE
        INSERT INTO fincore.subscription_lines (tenant_id, subscription_id, line_no, kind, amount, price_id, quantity,
                                                span_start, span_end)
        VALUES (tenant, s.id, s.lines + 1, 'credit', credit, s.price_id, s.quantity, t, s.period_end),
               (tenant, s.id, s.lines + 2, 'debit', debit, p.id, q, t, s.period_end);
        s.price_id := p.id;
        s.quantity := q;
        s.billed := debit;
        s.billed_from := t;
        s.lines := s.lines + 2;
        IF proration_behavior = 'always_invoice' THEN
            s := fincore._invoice_and_collect(s, true);
        END IF;
        UPDATE fincore.subscriptions x
           SET status = s.status, price_id = s.price_id, quantity = s.quantity, billed = s.billed,
               billed_from = s.billed_from, lines = s.lines, pending_price_id = NULL, pending_quantity = NULL,
               updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id;
    END IF;
    PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status, 'price_id', p.id,
                                                       'quantity', q, 'credit', credit, 'debit', debit, 'at', t,
                                                       'proration_behavior', proration_behavior,
                                                       'at_period_end', at_period_end));
END
$fn$;
COMMENT ON FUNCTION fincore.change_subscription(uuid, uuid, integer, timestamptz, text, boolean) IS
    'Changes a subscription''s price and/or quantity at `at` (default now): with create_prorations a credit line for the unused rest of what was billed and a debit line at the new price, exactly what preview_change returned, for the next invoice; always_invoice invoices and collects them at once; none bills nothing now. at_period_end schedules the change for the renewal. ZFA02-ZFA06.';

-- pause, resume, cancel (now or at the period's end): the state machine's transitions, written.
CREATE FUNCTION fincore.update_subscription_status(subscription_id uuid, action text) RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    before text := s.status;
BEGIN
    IF action IS NULL OR action NOT IN ('pause', 'resume', 'cancel', 'cancel_at_period_end', 'uncancel') THEN
        RAISE EXCEPTION 'invalid subscription action %', coalesce(pg_catalog.quote_literal(action), 'NULL')
            USING ERRCODE = 'ZFA04',
                  HINT = 'pause, resume, cancel, cancel_at_period_end or uncancel; payments and dunning move the other statuses.';
    END IF;
    IF action IN ('cancel_at_period_end', 'uncancel') THEN
        -- Only a subscription that could be cancelled now can be at its period's end.
        PERFORM fincore.subscription_transition(s.status, 'cancel');
        s.cancel_at_period_end := action = 'cancel_at_period_end';
    ELSE
        s.status := fincore.subscription_transition(s.status, action);
        IF action = 'cancel' THEN
            s.cancel_at_period_end := false;
        END IF;
    END IF;
    UPDATE fincore.subscriptions x
       SET status = s.status, cancel_at_period_end = s.cancel_at_period_end, updated_at = pg_catalog.now()
     WHERE x.tenant_id = tenant AND x.id = s.id;
    PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                       'previous_status', before, 'action', action,
                                                       'cancel_at_period_end', s.cancel_at_period_end));
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.update_subscription_status(uuid, text) IS
    'Pauses, resumes or cancels a subscription now, or cancels it at its period''s end (cancel_at_period_end; uncancel undoes that), as the state machine allows (ZFA03 otherwise). ZFA04, ZFA06.';

-- A subscription's payment method: a provider of the payments module and the payer account it
-- charges.  NULL for both: invoices are collected from the customer's account alone.
CREATE FUNCTION fincore.set_payment_method(subscription_id uuid, provider text, payer_account uuid)
    RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    price fincore.billing_prices := fincore._billing_price(tenant, s.price_id);
    prov fincore.payment_providers;
    settlement_currency text;
    payer_currency text;
BEGIN
    IF (provider IS NULL) <> (payer_account IS NULL) THEN
        RAISE EXCEPTION 'invalid payment method: provider % and payer account %',
                coalesce(pg_catalog.quote_literal(provider), 'NULL'), coalesce(payer_account::text, 'NULL')
            USING ERRCODE = 'ZFA04', HINT = 'Both, or neither (invoices are then collected from the customer''s account alone).';
    END IF;
    IF provider IS NOT NULL THEN
        SELECT * INTO prov FROM fincore.payment_providers v WHERE v.tenant_id = tenant AND v.name = provider;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'payment provider % not found', pg_catalog.quote_literal(provider)
                USING ERRCODE = 'ZF908', HINT = 'Create it with fincore.create_payment_provider().';
        END IF;
        SELECT a.currency INTO settlement_currency FROM fincore.accounts a
         WHERE a.tenant_id = tenant AND a.id = prov.settlement_account;
        SELECT a.currency INTO payer_currency FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = payer_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found', payer_account
                USING ERRCODE = 'ZF301', HINT = 'Accounts are visible only in their own tenant.';
        END IF;
        IF payer_currency <> price.currency OR settlement_currency <> price.currency THEN
            RAISE EXCEPTION 'payment method in % (payer) and % (provider %) for a subscription in %',
                    payer_currency, settlement_currency, provider, price.currency
                USING ERRCODE = 'ZF103';
        END IF;
    END IF;
    UPDATE fincore.subscriptions x SET payment_provider = provider, payment_account = payer_account,
                                       updated_at = pg_catalog.now()
     WHERE x.tenant_id = tenant AND x.id = s.id
    RETURNING * INTO s;
    PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                         pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                       'payment_provider', provider));
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.set_payment_method(uuid, text, uuid) IS
    'Sets (or, with NULLs, clears) a subscription''s payment method: its invoices use the customer''s credit balance first and charge the rest through the provider, from the payer account (authorize and capture, docs/payments.md). ZFA04, ZFA06, ZFA12, ZF908, ZF301, ZF103.';

-- ---------------------------------------------------------------------------
-- Invoices: a subscription's lines not invoiced yet, netted (credits first), posted to the
-- ledger as receivable <- revenue when the invoice is finalised, and paid by a transfer from
-- the customer's account to the receivable.  A net credit waits for the next invoice.  A failed
-- collection is retried by the tenant's dunning policy, each retry a job on the queue.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.billing_accounts (
    tenant_id          uuid NOT NULL,
    currency           text NOT NULL,
    receivable_account uuid NOT NULL,
    revenue_account    uuid NOT NULL,
    PRIMARY KEY (tenant_id, currency),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.billing_accounts IS
    'Where a tenant''s invoices post, per currency: the receivable (debited when an invoice is finalised, credited when it is paid) and the revenue account.';
SELECT fincore.protect('fincore.billing_accounts');
SELECT pg_catalog.pg_extension_config_dump('fincore.billing_accounts', '');

CREATE TABLE fincore.invoices (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    subscription_id  uuid        NOT NULL,
    customer_account uuid        NOT NULL,
    currency         text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
    total            bigint      NOT NULL CHECK (total >= 0),
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    transfer_id      uuid,                      -- receivable <- revenue (NULL while a draft)
    payment_transfer_id uuid,                   -- customer -> receivable (or settlement -> receivable)
    payment_id       uuid,                      -- the provider payment of the last attempt, if any
    void_transfer_id uuid,                      -- the reversal of transfer_id, when voided
    attempts         integer     NOT NULL DEFAULT 0,    -- failed collections
    next_attempt_at  timestamptz,               -- the dunning retry due, if any
    failure_code     text,                      -- the ledger's SQLSTATE, or the provider's code, at the last failure
    external_id      text,                      -- Stripe's invoice id: Stripe bills it, nothing is posted
    external_version bigint,                    -- the created time of the last Stripe event applied
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finalized_at     timestamptz,
    paid_at          timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, external_id),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES fincore.subscriptions (tenant_id, id),
    -- fincore's own invoices: more than nothing, posted once finalised; Stripe's are mirrored.
    CHECK (external_id IS NOT NULL OR (total > 0 AND CASE status WHEN 'draft' THEN transfer_id IS NULL
                                                                 WHEN 'void' THEN true
                                                                 ELSE transfer_id IS NOT NULL END))
);
COMMENT ON TABLE fincore.invoices IS
    'Invoices of subscriptions: their total (lines netted), status (invoice_transition), the ledger transfers that posted, paid or voided them, and their dunning state.';
SELECT fincore.protect('fincore.invoices');
SELECT pg_catalog.pg_extension_config_dump('fincore.invoices', '');

-- A tenant's dunning policy (none: the defaults of fincore.set_dunning_policy()).
CREATE TABLE fincore.dunning_policies (
    tenant_id          uuid        NOT NULL PRIMARY KEY,
    retry_intervals    interval[]  NOT NULL,    -- the wait before retry 1, 2, ...: at most 8
    hard_decline_codes text[]      NOT NULL,    -- ledger SQLSTATEs that end the retries at once
    on_exhausted       text        NOT NULL CHECK (on_exhausted IN ('cancel', 'unpaid')),
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    CHECK (pg_catalog.cardinality(retry_intervals) <= 8)
);
COMMENT ON TABLE fincore.dunning_policies IS
    'How a tenant retries a failed renewal payment: the waits between retries, the codes that stop them, and what the subscription becomes when they run out (canceled, or unpaid).';
SELECT fincore.protect('fincore.dunning_policies');
SELECT pg_catalog.pg_extension_config_dump('fincore.dunning_policies', '');

CREATE FUNCTION fincore.invoice_transition(status text, action text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fincore_invoice_transition';
COMMENT ON FUNCTION fincore.invoice_transition(text, text) IS
    'The invoice state machine (C, Stripe''s rules): the status an action (finalize, pay, void, mark_uncollectible) leads to from a status (draft, open, paid, void, uncollectible). ZFA10 if not allowed, ZFA11 for an unknown status or action.';

CREATE FUNCTION fincore.set_billing_accounts(currency text, receivable_account uuid, revenue_account uuid)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    acc uuid;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    FOREACH acc IN ARRAY ARRAY[receivable_account, revenue_account] LOOP
        PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = acc AND a.currency = set_billing_accounts.currency;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found in %', coalesce(acc::text, 'NULL'), coalesce(currency, 'NULL')
                USING ERRCODE = 'ZF301', HINT = 'The receivable and revenue accounts are the tenant''s, in the currency.';
        END IF;
    END LOOP;
    INSERT INTO fincore.billing_accounts (tenant_id, currency, receivable_account, revenue_account)
    VALUES (tenant, currency, receivable_account, revenue_account)
    ON CONFLICT ON CONSTRAINT billing_accounts_pkey DO UPDATE
       SET receivable_account = excluded.receivable_account, revenue_account = excluded.revenue_account;
END
$fn$;
COMMENT ON FUNCTION fincore.set_billing_accounts(text, uuid, uuid) IS
    'Sets where the tenant''s invoices in a currency post: the receivable and the revenue account. Tenant admins only (ZF803). ZF301.';

CREATE FUNCTION fincore.set_dunning_policy(
        retry_intervals interval[] DEFAULT '{1 day, 3 days, 5 days, 7 days}',
        on_exhausted text DEFAULT 'cancel', hard_decline_codes text[] DEFAULT '{ZF306, ZF307}')
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF retry_intervals IS NULL OR pg_catalog.cardinality(retry_intervals) > 8
       OR EXISTS (SELECT FROM pg_catalog.unnest(retry_intervals) i
                   WHERE i IS NULL OR i OPERATOR(pg_catalog.<=) '0'::interval OR i OPERATOR(pg_catalog.>) '60 days'::interval) THEN
        RAISE EXCEPTION 'invalid retry schedule %', coalesce(retry_intervals::text, 'NULL')
            USING ERRCODE = 'ZFA09', HINT = 'At most 8 waits, each more than 0 and at most 60 days.';
    END IF;
    IF on_exhausted IS NULL OR on_exhausted NOT IN ('cancel', 'unpaid') THEN
        RAISE EXCEPTION 'invalid outcome of exhausted retries %', coalesce(pg_catalog.quote_literal(on_exhausted), 'NULL')
            USING ERRCODE = 'ZFA09', HINT = 'cancel (the subscription is canceled) or unpaid (it is kept, without entitlements).';
    END IF;
    IF hard_decline_codes IS NULL OR EXISTS (SELECT FROM pg_catalog.unnest(hard_decline_codes) c
                                              WHERE c IS NULL OR c !~ '^[0-9A-Za-z_]{1,64}$') THEN
        RAISE EXCEPTION 'invalid hard decline codes %', coalesce(hard_decline_codes::text, 'NULL')
            USING ERRCODE = 'ZFA09',
                  HINT = 'SQLSTATEs the ledger refuses a payment with, e.g. ZF306 (frozen), or a provider''s decline codes, e.g. stolen_card.';
    END IF;
    INSERT INTO fincore.dunning_policies (tenant_id, retry_intervals, hard_decline_codes, on_exhausted)
    VALUES (tenant, retry_intervals, hard_decline_codes, on_exhausted)
    ON CONFLICT ON CONSTRAINT dunning_policies_pkey DO UPDATE
       SET retry_intervals = excluded.retry_intervals, hard_decline_codes = excluded.hard_decline_codes,
           on_exhausted = excluded.on_exhausted, updated_at = pg_catalog.now();
END
$fn$;
COMMENT ON FUNCTION fincore.set_dunning_policy(interval[], text, text[]) IS
    'Sets the tenant''s dunning policy: the waits before each retry of a failed renewal payment (at most 8), what the subscription becomes when they run out (cancel or unpaid), and the codes that stop the retries at once (the ledger''s SQLSTATEs, or a provider''s decline codes). Without one, the defaults apply. Tenant admins only (ZF803). ZFA09.';

-- Invoice the subscription's lines not invoiced yet (the subscription locked by the caller):
-- a draft, or finalised (posted as receivable <- revenue); NULL when they net to nothing or a
-- credit.
CREATE FUNCTION fincore._invoice_lines(s fincore.subscriptions, finalize boolean) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    inv fincore.invoices;
    cur text;
BEGIN
    SELECT p.currency INTO cur FROM fincore.billing_prices p WHERE p.tenant_id = s.tenant_id AND p.id = s.price_id;
    SELECT coalesce(sum(CASE WHEN l.kind = 'credit' THEN -l.amount ELSE l.amount END), 0)
      INTO inv.total FROM fincore.subscription_lines l
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.invoice_id IS NULL;
    IF inv.total <= 0 THEN
        RETURN NULL;    -- nothing owed: a credit waits for the next invoice
    END IF;
    inv.tenant_id := s.tenant_id;
    inv.id := fincore.uuidv7();
    inv.subscription_id := s.id;
    inv.customer_account := s.customer_account;
    inv.currency := cur;
    inv.status := 'draft';
    inv.period_start := s.period_start;
    inv.period_end := s.period_end;
    inv.attempts := 0;
    inv.created_at := pg_catalog.now();
    INSERT INTO fincore.invoices VALUES (inv.*);
    UPDATE fincore.subscription_lines l SET invoice_id = inv.id
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.invoice_id IS NULL;
    PERFORM fincore.emit('billing', 'invoice.created', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id,
                                                       'total', inv.total, 'currency', cur));
    IF finalize THEN
        inv := fincore._finalize_invoice(inv);
    END IF;
    RETURN inv;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_lines(fincore.subscriptions, boolean) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_lines(fincore.subscriptions, boolean) IS
    'Internal: invoices a subscription''s open lines (a draft, or finalised), or returns NULL when they net to nothing or a credit.';

-- A draft finalised: posted as receivable <- revenue, open.
CREATE FUNCTION fincore._finalize_invoice(inv fincore.invoices) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    acc fincore.billing_accounts;
BEGIN
    inv.status := fincore.invoice_transition(inv.status, 'finalize');
    SELECT * INTO acc FROM fincore.billing_accounts b WHERE b.tenant_id = inv.tenant_id AND b.currency = inv.currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no billing accounts for % in tenant %', inv.currency, inv.tenant_id
            USING ERRCODE = 'ZFA06', HINT = 'Set them with fincore.set_billing_accounts().';
    END IF;
    inv.transfer_id := (fincore.transfer(acc.receivable_account, acc.revenue_account, inv.total,
                                         id => fincore._payment_transfer_id(inv.id, 0, 'invoice'),
                                         metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id,
                                                                                   'subscription_id', inv.subscription_id))).id;
    inv.finalized_at := pg_catalog.now();
    UPDATE fincore.invoices x SET status = inv.status, transfer_id = inv.transfer_id, finalized_at = inv.finalized_at
     WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
    PERFORM fincore.emit('billing', 'invoice.finalized', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', inv.subscription_id,
                                                       'total', inv.total, 'transfer_id', inv.transfer_id));
    RETURN inv;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._finalize_invoice(fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._finalize_invoice(fincore.invoices) IS
    'Internal: finalises a draft invoice: posts receivable <- revenue and makes it open.';

-- An invoice paid by the transfer tid: the invoice paid, the subscription active
-- (payment_succeeded); s.status moves, the caller writes it.
CREATE FUNCTION fincore._invoice_paid(INOUT s fincore.subscriptions, inv fincore.invoices, tid uuid)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    inv.status := fincore.invoice_transition(inv.status, 'pay');
    UPDATE fincore.invoices x
       SET status = inv.status, payment_transfer_id = tid, paid_at = pg_catalog.now(), next_attempt_at = NULL
     WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
    IF s.status IN ('incomplete', 'active', 'past_due', 'unpaid') THEN
        s.status := fincore.subscription_transition(s.status, 'payment_succeeded');
    END IF;
    PERFORM fincore.emit('billing', 'invoice.paid', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id, 'total', inv.total,
                                                       'attempts', inv.attempts + 1));
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_paid(fincore.subscriptions, fincore.invoices, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_paid(fincore.subscriptions, fincore.invoices, uuid) IS
    'Internal: records an invoice''s payment and moves the subscription''s status (payment_succeeded).';

-- A collection the ledger refused with code (ZF304-ZF307): the failed attempt counted, and
-- dunning: the retry scheduled as a job, or the retries ended by the policy.  s.status moves,
-- the caller writes it.
CREATE FUNCTION fincore._invoice_payment_failed(INOUT s fincore.subscriptions, inv fincore.invoices, code text)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    pol fincore.dunning_policies;
    exhausted boolean;
BEGIN
    inv.attempts := inv.attempts + 1;
    inv.failure_code := code;
    inv.next_attempt_at := NULL;
    IF s.status IN ('active', 'past_due') THEN
        s.status := fincore.subscription_transition(s.status, 'payment_failed');
    END IF;
    IF s.status = 'past_due' THEN
        -- Dunning: retry after the policy's next wait, or stop (a hard decline, or no waits left).
        SELECT * INTO pol FROM fincore.dunning_policies d WHERE d.tenant_id = inv.tenant_id;
        IF NOT FOUND THEN
            pol.retry_intervals := '{1 day, 3 days, 5 days, 7 days}';
            pol.hard_decline_codes := '{ZF306, ZF307}';
            pol.on_exhausted := 'cancel';
        END IF;
        exhausted := code = ANY (pol.hard_decline_codes)
                     OR inv.attempts > pg_catalog.cardinality(pol.retry_intervals);
        IF exhausted THEN
            s.status := fincore.subscription_transition(s.status, 'retries_exhausted_' || pol.on_exhausted);
            IF pol.on_exhausted = 'cancel' AND inv.status = 'open' THEN
                inv.status := fincore.invoice_transition(inv.status, 'mark_uncollectible');
            END IF;
        ELSE
            inv.next_attempt_at := pg_catalog.now() + pol.retry_intervals[inv.attempts];
            PERFORM fincore.enqueue('billing:dunning',
                                    pg_catalog.jsonb_build_object('invoice_id', inv.id, 'attempt', inv.attempts),
                                    run_at => inv.next_attempt_at,
                                    unique_key => inv.id::text || ':' || inv.attempts::text);
        END IF;
    END IF;
    UPDATE fincore.invoices x
       SET status = inv.status, attempts = inv.attempts, failure_code = inv.failure_code,
           next_attempt_at = inv.next_attempt_at
     WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
    PERFORM fincore.emit('billing', 'invoice.payment_failed', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id,
                                                       'total', inv.total, 'code', code, 'attempts', inv.attempts,
                                                       'next_attempt_at', inv.next_attempt_at,
                                                       'subscription_status', s.status));
    IF inv.status = 'uncollectible' THEN
        PERFORM fincore.emit('billing', 'invoice.marked_uncollectible', 'invoice', inv.id::text,
                             pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id));
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_payment_failed(fincore.subscriptions, fincore.invoices, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_payment_failed(fincore.subscriptions, fincore.invoices, text) IS
    'Internal: records a refused collection and runs dunning (a retry job, or the policy''s outcome); moves the subscription''s status.';

-- The id of an invoice's attempt n to collect it: a refused attempt's id stays failed in a batch
-- (id_already_failed), so each attempt has its own; a replay of one attempt is "exists".
CREATE FUNCTION fincore._invoice_payment_id(inv fincore.invoices) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        SELECT fincore._payment_transfer_id(inv.id, inv.attempts OPERATOR(pg_catalog.+) 1, 'payment');
    END;
REVOKE ALL ON FUNCTION fincore._invoice_payment_id(fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_payment_id(fincore.invoices) IS
    'Internal: the ledger transfer id of an invoice''s next collection attempt.';

-- Collect an open (or uncollectible) invoice from the customer's account: paid, or a refused
-- attempt that dunning retries.  With a payment method, what the customer's credit does not
-- cover is charged through the payments module instead: the credit is held, a payment is
-- created and confirmed, and the invoice stays open until the provider answers
-- (fincore._invoice_payment_result).  Moves s.status; the caller writes it.
CREATE FUNCTION fincore._collect_invoice(INOUT s fincore.subscriptions, inv fincore.invoices, OUT paid boolean,
                                         OUT pending boolean)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    acc fincore.billing_accounts;
    tid uuid;
    code text;
    credit bigint := inv.total;
    attempt integer := inv.attempts + 1;
    credit_hold uuid;
    pay fincore.payments;
BEGIN
    pending := false;
    SELECT * INTO acc FROM fincore.billing_accounts b WHERE b.tenant_id = inv.tenant_id AND b.currency = inv.currency;
    IF s.payment_provider IS NOT NULL THEN
        -- The customer's credit balance goes first; the provider is charged the rest.
        SELECT LEAST(inv.total, GREATEST(0, b.posted - b.debits_pending)) INTO credit
          FROM fincore.balance(inv.customer_account) b;
    END IF;
    BEGIN
        IF credit = inv.total THEN
            tid := (fincore.transfer(inv.customer_account, acc.receivable_account, inv.total,
                                     id => fincore._invoice_payment_id(inv),
                                     metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id))).id;
            paid := true;
        ELSE
            IF credit > 0 THEN
                credit_hold := (fincore.transfer(inv.customer_account, acc.receivable_account, credit,
                                                 id => fincore._payment_transfer_id(inv.id, attempt, 'credit'),
                                                 pending => true,
                                                 metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id))).id;
            END IF;
            pay := fincore.create_payment(inv.total - credit, inv.currency, s.payment_provider,
                                          payer_account => s.payment_account, confirm => true,
                                          metadata => pg_catalog.jsonb_build_object(
                                              'invoice_id', inv.id, 'subscription_id', s.id, 'attempt', attempt,
                                              'credit', credit, 'credit_hold', credit_hold));
            UPDATE fincore.invoices x SET payment_id = pay.id WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
            paid := false;
            pending := true;
            RETURN;
        END IF;
    EXCEPTION WHEN SQLSTATE 'ZF304' OR SQLSTATE 'ZF305' OR SQLSTATE 'ZF306' OR SQLSTATE 'ZF307' THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE;
        paid := false;
    END;
    IF paid THEN
        s := fincore._invoice_paid(s, inv, tid);
    ELSE
        s := fincore._invoice_payment_failed(s, inv, code);
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._collect_invoice(fincore.subscriptions, fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._collect_invoice(fincore.subscriptions, fincore.invoices) IS
    'Internal: pays an invoice from the customer''s account (customer -> receivable), or, with a payment method, holds the customer''s credit and charges the rest through the payments module (pending: the provider answers later); or records the failed attempt and schedules its dunning retry (or ends the retries); moves the subscription''s status.';

-- Whether an invoice has a provider payment in flight: no other attempt starts meanwhile.
CREATE FUNCTION fincore._invoice_payment_in_flight(inv fincore.invoices) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    -- PL/pgSQL, not SQL: Citus cannot plan a SQL function's parameters (one shard, by tenant).
    IF inv.payment_id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM FROM fincore.payments p
     WHERE p.tenant_id = inv.tenant_id AND p.id = inv.payment_id
       AND p.status IN ('requires_confirmation', 'processing', 'requires_action', 'requires_capture');
    RETURN FOUND;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_payment_in_flight(fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_payment_in_flight(fincore.invoices) IS
    'Internal: whether the invoice''s provider payment still waits for the provider.';

-- The provider's answer to an invoice's payment (called by the payments module when a payment
-- whose metadata names an invoice is captured or fails): the held credit posted and the
-- settlement moved to the receivable, and the invoice paid; or the credit released and the
-- attempt failed, which dunning retries.  Only the invoice's own payment counts (invoices.payment_id:
-- anyone's metadata may name an invoice).  An invoice no longer payable meanwhile changes nothing:
-- a captured payment is reported as invoice.payment_unapplied, for a refund or reconciliation.
CREATE FUNCTION fincore._invoice_payment_result(p fincore.payments, succeeded boolean, code text) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    invoice_id uuid := (p.metadata OPERATOR(pg_catalog.->>) 'invoice_id')::uuid;
    attempt integer := (p.metadata OPERATOR(pg_catalog.->>) 'attempt')::integer;
    credit_hold uuid := (p.metadata OPERATOR(pg_catalog.->>) 'credit_hold')::uuid;
    l record;
    s fincore.subscriptions;
    before text;
    inv fincore.invoices;
    acc fincore.billing_accounts;
    tid uuid;
BEGIN
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = p.tenant_id AND x.id = invoice_id;
    IF NOT FOUND THEN
        RETURN;     -- not an invoice's payment (its metadata names no invoice of the tenant)
    END IF;
    l := fincore._invoice_lock(p.tenant_id, invoice_id);
    s := l.s;
    before := s.status;
    inv := l.inv;
    IF inv.payment_id IS DISTINCT FROM p.id THEN
        RETURN;     -- not the invoice's payment: its metadata merely names the invoice
    END IF;
    IF inv.status NOT IN ('open', 'uncollectible') THEN
        IF succeeded THEN
            PERFORM fincore.emit('billing', 'invoice.payment_unapplied', 'invoice', inv.id::text,
                                 pg_catalog.jsonb_build_object('invoice_id', inv.id, 'payment_id', p.id,
                                                               'amount', p.captured, 'status', inv.status));
        END IF;
        RETURN;
    END IF;
    IF succeeded THEN
        SELECT * INTO acc FROM fincore.billing_accounts b WHERE b.tenant_id = inv.tenant_id AND b.currency = inv.currency;
        IF credit_hold IS NOT NULL THEN
            PERFORM fincore.post_pending(credit_hold, NULL, fincore._payment_transfer_id(inv.id, attempt, 'credit_post'));
        END IF;
        tid := (fincore.transfer(p.settlement_account, acc.receivable_account, p.captured,
                                 id => fincore._payment_transfer_id(inv.id, attempt, 'payment'),
                                 metadata => pg_catalog.jsonb_build_object('invoice_id', inv.id, 'payment_id', p.id))).id;
        s := fincore._invoice_paid(s, inv, tid);
    ELSE
        IF credit_hold IS NOT NULL THEN
            PERFORM fincore.void_pending(credit_hold, fincore._payment_transfer_id(inv.id, attempt, 'credit_void'));
        END IF;
        s := fincore._invoice_payment_failed(s, inv, coalesce(code, 'payment_failed'));
    END IF;
    PERFORM fincore._subscription_save_status(s, before);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_payment_result(fincore.payments, boolean, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_payment_result(fincore.payments, boolean, text) IS
    'Internal: applies the provider''s answer to an invoice''s payment: paid (credit posted, settlement -> receivable), or a failed attempt that dunning retries (credit released); a payment no longer the invoice''s changes nothing but emits invoice.payment_unapplied if captured.';

-- Invoice the subscription's open lines and, when finalised, collect the invoice.
CREATE FUNCTION fincore._invoice_and_collect(s fincore.subscriptions, finalize boolean) RETURNS fincore.subscriptions
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    inv fincore.invoices := fincore._invoice_lines(s, finalize);
BEGIN
    IF inv.id IS NOT NULL AND inv.status = 'open' THEN
        s := (fincore._collect_invoice(s, inv)).s;
    END IF;
    RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_and_collect(fincore.subscriptions, boolean) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_and_collect(fincore.subscriptions, boolean) IS
    'Internal: invoices a subscription''s open lines and collects the invoice when it is finalised; returns the subscription with its new status.';

-- The tenant's invoice, with its subscription locked first (every writer of an invoice holds
-- its subscription's lock); ZFA06 if there is none.
CREATE FUNCTION fincore._invoice_lock(tenant uuid, invoice_id uuid, OUT s fincore.subscriptions,
                                      OUT inv fincore.invoices)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % not found', coalesce(invoice_id::text, 'NULL') USING ERRCODE = 'ZFA06';
    END IF;
    s := fincore._subscription_lock(tenant, inv.subscription_id);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._invoice_lock(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._invoice_lock(uuid, uuid) IS
    'Internal: the tenant''s invoice as it is under its subscription''s lock (ZFA06 if none).';

CREATE FUNCTION fincore._subscription_save_status(s fincore.subscriptions, before text) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF s.status IS DISTINCT FROM before THEN
        UPDATE fincore.subscriptions x SET status = s.status, updated_at = pg_catalog.now()
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
        PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                             pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                           'previous_status', before));
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._subscription_save_status(fincore.subscriptions, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._subscription_save_status(fincore.subscriptions, text) IS
    'Internal: writes a subscription''s new status and emits subscription.updated, if it changed.';

CREATE FUNCTION fincore.create_invoice(subscription_id uuid, finalize boolean DEFAULT true) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    s fincore.subscriptions := fincore._subscription_lock(tenant, subscription_id);
    before text := s.status;
    inv fincore.invoices;
BEGIN
    IF finalize IS NULL THEN
        RAISE EXCEPTION 'invalid invoice: finalize is true or false' USING ERRCODE = 'ZFA11';
    END IF;
    inv := fincore._invoice_lines(s, finalize);
    IF inv.status = 'open' THEN
        s := (fincore._collect_invoice(s, inv)).s;
        PERFORM fincore._subscription_save_status(s, before);
    END IF;
    IF inv.id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = inv.id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.create_invoice(uuid, boolean) IS
    'Invoices a subscription''s lines not invoiced yet, now: a draft (finalize => false), or finalised, posted and collected at once (the dunning policy retries a refusal). NULL when they net to nothing or a credit. ZFA06, ZFA11.';

CREATE FUNCTION fincore.finalize_invoice(invoice_id uuid) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    l record := fincore._invoice_lock(tenant, invoice_id);
    s fincore.subscriptions := l.s;
    before text := s.status;
    inv fincore.invoices := l.inv;
BEGIN
    IF inv.status <> 'draft' AND inv.finalized_at IS NOT NULL THEN
        RETURN inv;     -- finalised already: a replay
    END IF;
    inv := fincore._finalize_invoice(inv);
    s := (fincore._collect_invoice(s, inv)).s;
    PERFORM fincore._subscription_save_status(s, before);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.finalize_invoice(uuid) IS
    'Finalises a draft invoice: posts it (receivable <- revenue) and collects it. A finalised invoice is returned as it is. ZFA06, ZFA10 (a voided draft).';

CREATE FUNCTION fincore.pay_invoice(invoice_id uuid) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    l record := fincore._invoice_lock(tenant, invoice_id);
    s fincore.subscriptions := l.s;
    before text := s.status;
    inv fincore.invoices := l.inv;
    r record;
BEGIN
    IF inv.status IN ('paid', 'void') THEN
        RETURN inv;     -- paid (or voided) already: a replay
    END IF;
    IF inv.status = 'draft' THEN
        RAISE EXCEPTION 'invoice % is a draft', inv.id
            USING ERRCODE = 'ZFA10', HINT = 'Finalise it with fincore.finalize_invoice(), which collects it.';
    END IF;
    IF fincore._invoice_payment_in_flight(inv) THEN
        RETURN inv;     -- the provider's answer to the payment in flight settles it
    END IF;
    -- The customer's own attempt: a refusal writes nothing and leaves the dunning as it was.
    r := fincore._collect_invoice(s, inv);
    IF NOT r.paid AND NOT r.pending THEN
        RAISE EXCEPTION 'invoice % could not be paid from account %', inv.id, inv.customer_account
            USING ERRCODE = 'ZFA08', HINT = 'The ledger refused the payment (funds, or a frozen or closed account).';
    END IF;
    PERFORM fincore._subscription_save_status(r.s, before);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.pay_invoice(uuid) IS
    'Pays an open or uncollectible invoice from its customer''s account (with a payment method: its credit, and a payment through the provider for the rest, which settles the invoice when the provider answers); the subscription becomes active (payment_succeeded) and the invoice''s dunning retries stop. A paid or void invoice, or one with a payment in flight, is returned as it is. ZFA06, ZFA08, ZFA10 (a draft).';

-- Void an invoice (its posting reversed): the lines it took stay with it.
CREATE FUNCTION fincore._void_invoice(inv fincore.invoices) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF fincore._invoice_payment_in_flight(inv) THEN
        RAISE EXCEPTION 'invoice % has payment % in flight', inv.id, inv.payment_id
            USING ERRCODE = 'ZFA10', HINT = 'Void it once the provider has answered (the payment''s step deadline bounds the wait).';
    END IF;
    inv.status := fincore.invoice_transition(inv.status, 'void');
    IF inv.transfer_id IS NOT NULL THEN
        inv.void_transfer_id := (fincore.reverse_transfer(inv.transfer_id, NULL,
                                                 fincore._payment_transfer_id(inv.id, 0, 'void'))).id;
    END IF;
    inv.next_attempt_at := NULL;
    UPDATE fincore.invoices x SET status = inv.status, void_transfer_id = inv.void_transfer_id, next_attempt_at = NULL
     WHERE x.tenant_id = inv.tenant_id AND x.id = inv.id;
    PERFORM fincore.emit('billing', 'invoice.voided', 'invoice', inv.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', inv.subscription_id,
                                                       'total', inv.total, 'void_transfer_id', inv.void_transfer_id));
    RETURN inv;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._void_invoice(fincore.invoices) FROM PUBLIC;
COMMENT ON FUNCTION fincore._void_invoice(fincore.invoices) IS
    'Internal: voids an invoice: its receivable <- revenue posting reversed, its retries stopped.';

CREATE FUNCTION fincore.update_invoice_status(invoice_id uuid, action text) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    l record;
    inv fincore.invoices;
BEGIN
    IF action IS NULL OR action NOT IN ('void', 'mark_uncollectible') THEN
        RAISE EXCEPTION 'invalid invoice action %', coalesce(pg_catalog.quote_literal(action), 'NULL')
            USING ERRCODE = 'ZFA11', HINT = 'void or mark_uncollectible; finalize_invoice and pay_invoice do the others.';
    END IF;
    l := fincore._invoice_lock(tenant, invoice_id);
    inv := l.inv;
    IF action = 'void' THEN
        inv := fincore._void_invoice(inv);
    ELSE
        inv.status := fincore.invoice_transition(inv.status, action);
        UPDATE fincore.invoices x SET status = inv.status, next_attempt_at = NULL
         WHERE x.tenant_id = tenant AND x.id = inv.id;
        PERFORM fincore.emit('billing', 'invoice.marked_uncollectible', 'invoice', inv.id::text,
                             pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', inv.subscription_id));
    END IF;
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.update_invoice_status(uuid, text) IS
    'Voids an invoice (a draft, or a finalised one whose posting is then reversed) or marks an open one uncollectible; either stops its dunning retries. As the invoice state machine allows (ZFA10 otherwise). ZFA06, ZFA11.';

-- A dunning retry (the job billing:dunning carries invoice_id and attempt): collects the invoice
-- again, unless it was paid, voided or retried meanwhile (then a no-op).
CREATE FUNCTION fincore.retry_invoice(invoice_id uuid, attempt integer DEFAULT NULL) RETURNS fincore.invoices
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    l record := fincore._invoice_lock(tenant, invoice_id);
    s fincore.subscriptions := l.s;
    before text := s.status;
    inv fincore.invoices := l.inv;
BEGIN
    IF inv.status <> 'open' OR s.status <> 'past_due' OR (attempt IS NOT NULL AND attempt <> inv.attempts)
       OR fincore._invoice_payment_in_flight(inv) THEN
        RETURN inv;
    END IF;
    s := (fincore._collect_invoice(s, inv)).s;
    PERFORM fincore._subscription_save_status(s, before);
    SELECT * INTO inv FROM fincore.invoices x WHERE x.tenant_id = tenant AND x.id = invoice_id;
    RETURN inv;
END
$fn$;
COMMENT ON FUNCTION fincore.retry_invoice(uuid, integer) IS
    'A dunning retry of an open invoice of a past_due subscription: collects it again (paid: the subscription is active; refused: the next retry is scheduled, or the policy''s outcome applies; with a payment method, the provider''s answer decides). A no-op when the invoice was paid, voided or retried meanwhile, or has a payment in flight (attempt is the job''s). Trusted roles. ZFA06.';

-- The dunning worker in the database: claims billing:dunning jobs, retries their invoices in
-- their tenants, completes them.
CREATE FUNCTION fincore.dunning_run(max_jobs integer DEFAULT 100) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    saved text := pg_catalog.current_setting('fincore.tenant', true);
    j fincore.job;
    n integer := 0;
BEGIN
    FOR j IN SELECT * FROM fincore.dequeue('billing:dunning', max_jobs, '5 minutes', 'fincore.dunning_run') LOOP
        PERFORM fincore._use_tenant(j.tenant_id);
        PERFORM fincore.retry_invoice((j.payload ->> 'invoice_id')::uuid, (j.payload ->> 'attempt')::integer);
        PERFORM fincore.complete(j.id, NULL, j.attempt);
        n := n + 1;
    END LOOP;
    PERFORM fincore._use_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.dunning_run(integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore.dunning_run(integer) IS
    'Runs up to max_jobs due dunning retries (jobs of queue billing:dunning): each retries its invoice (retry_invoice) in its tenant and completes. Returns how many ran.';

CREATE FUNCTION fincore.dunning_run_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.dunning_run(100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.dunning_run_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.dunning_run_step(interval) IS
    'Maintenance step: dunning_run in batches of 100 until none is due or the budget is spent.';

-- Renew the tenant's subscriptions ids (locked by the caller, due, neither incomplete nor set to
-- cancel): the next period of each, at a price and quantity scheduled for it if any, billed in
-- full as a period line; then an invoice per subscription whose open lines net to more than
-- nothing, finalised; both legs of every invoice (receivable <- revenue, customer ->
-- receivable) in one create_transfers call; paid invoices and the refused ones' dunning.  One
-- statement per table for the whole batch, not per subscription.  Returns the invoices.
CREATE FUNCTION fincore._renew_subscriptions(t uuid, ids uuid[]) RETURNS fincore.invoices[]
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    invs fincore.invoices[];
    leg_ids uuid[];
    leg_results text[];
    currencies text[];
    receivables uuid[];
    revenues uuid[];
    inv_ids uuid[];
    missing text;
    s fincore.subscriptions;
    before text;
    code text;
BEGIN
    -- The next periods, and their lines.
    WITH nxt AS (
        SELECT x.id, p.id AS price_id, coalesce(x.pending_quantity, x.quantity) AS quantity,
               per.period_start, per.period_end,
               fincore.billing_price_amount(p.scheme, p.unit_amount, p.tiers,
                                            coalesce(x.pending_quantity, x.quantity)) AS billed,
               CASE WHEN x.status = 'trialing' THEN fincore.subscription_transition(x.status, 'trial_ended')
                    ELSE x.status END AS status
          FROM fincore.subscriptions x
          JOIN fincore.billing_prices p ON p.tenant_id = t AND p.id = coalesce(x.pending_price_id, x.price_id)
         CROSS JOIN LATERAL fincore.billing_period(x.anchor, p.interval_unit, p.interval_count, x.period_end) per
         WHERE x.tenant_id = t AND x.id = ANY (ids)),
    upd AS (
        UPDATE fincore.subscriptions x
           SET price_id = nxt.price_id, quantity = nxt.quantity, pending_price_id = NULL, pending_quantity = NULL,
               period_start = nxt.period_start, period_end = nxt.period_end, billed = nxt.billed,
               billed_from = nxt.period_start, lines = x.lines + 1, status = nxt.status,
               updated_at = pg_catalog.now()
          FROM nxt
         WHERE x.tenant_id = t AND x.id = nxt.id
        RETURNING x.id, x.lines, x.billed, x.price_id, x.quantity, x.period_start, x.period_end)
    INSERT INTO fincore.subscription_lines (tenant_id, subscription_id, line_no, kind, amount, price_id, quantity,
                                            span_start, span_end)
    SELECT t, u.id, u.lines, 'period', u.billed, u.price_id, u.quantity, u.period_start, u.period_end FROM upd u;

    -- The invoices: each subscription's open lines netted, finalised at once.  (Each statement
    -- below reads or writes the tenant's rows alone, by arrays: on Citus, one shard's.)
    SELECT pg_catalog.array_agg(ROW(t, fincore.uuidv7(), x.id, x.customer_account, p.currency,
                                    fincore.invoice_transition('draft', 'finalize'), net.total::bigint,
                                    x.period_start, x.period_end, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL,
                                    pg_catalog.now(), pg_catalog.now(), NULL)::fincore.invoices ORDER BY x.id)
      INTO invs
      FROM (SELECT l.subscription_id, sum(CASE WHEN l.kind = 'credit' THEN -l.amount ELSE l.amount END) AS total
              FROM fincore.subscription_lines l
             WHERE l.tenant_id = t AND l.subscription_id = ANY (ids) AND l.invoice_id IS NULL
             GROUP BY l.subscription_id) net
      JOIN fincore.subscriptions x ON x.tenant_id = t AND x.id = net.subscription_id
      JOIN fincore.billing_prices p ON p.tenant_id = t AND p.id = x.price_id
     WHERE net.total > 0;
    IF invs IS NULL THEN
        RETURN '{}';
    END IF;
    SELECT pg_catalog.array_agg(b.currency), pg_catalog.array_agg(b.receivable_account),
           pg_catalog.array_agg(b.revenue_account)
      INTO currencies, receivables, revenues
      FROM fincore.billing_accounts b WHERE b.tenant_id = t;
    SELECT i.currency INTO missing FROM unnest(invs) i
     WHERE pg_catalog.array_position(currencies, i.currency) IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'no billing accounts for % in tenant %', missing, t
            USING ERRCODE = 'ZFA06', HINT = 'Set them with fincore.set_billing_accounts().';
    END IF;

    -- The ledger: every invoice's posting and its collection, in one batch.  The ledger makes
    -- the ids (a renewal is billed once by its subscription's lock, not by a transfer id), which
    -- spares the batch the look-up of ids it was given.
    SELECT pg_catalog.array_agg(c.id ORDER BY c.index), pg_catalog.array_agg(c.result ORDER BY c.index)
      INTO leg_ids, leg_results
      FROM fincore.create_transfers(ARRAY(
               SELECT ROW(NULL,
                          CASE WHEN leg.k = 1 THEN receivables[a.pos] ELSE i.customer_account END,
                          CASE WHEN leg.k = 1 THEN revenues[a.pos] ELSE receivables[a.pos] END,
                          i.total, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                          CASE WHEN leg.k = 1
                               THEN pg_catalog.jsonb_build_object('invoice_id', i.id, 'subscription_id', i.subscription_id)
                               ELSE pg_catalog.jsonb_build_object('invoice_id', i.id) END,
                          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request
                 FROM pg_catalog.generate_subscripts(invs, 1) g(ord)
                CROSS JOIN LATERAL (SELECT (invs[g.ord]).*) i
                CROSS JOIN LATERAL (SELECT pg_catalog.array_position(currencies, i.currency) AS pos) a
                CROSS JOIN (VALUES (1), (2)) leg(k)
                ORDER BY g.ord, leg.k)) c;
    FOR k IN 1 .. pg_catalog.cardinality(invs) LOOP
        IF leg_results[2 * k - 1] <> 'ok' THEN
            RAISE EXCEPTION 'the ledger refused the posting of invoice %: %', (invs[k]).id, leg_results[2 * k - 1]
                USING ERRCODE = coalesce(fincore.transfer_result_sqlstate(leg_results[2 * k - 1]), 'ZF301');
        END IF;
        invs[k].transfer_id := leg_ids[2 * k - 1];
        IF leg_results[2 * k] = 'ok' THEN
            invs[k].status := fincore.invoice_transition(invs[k].status, 'pay');
            invs[k].payment_transfer_id := leg_ids[2 * k];
            invs[k].paid_at := pg_catalog.now();
        END IF;
    END LOOP;
    INSERT INTO fincore.invoices SELECT * FROM unnest(invs);
    inv_ids := ARRAY(SELECT i.id FROM unnest(invs) i);
    UPDATE fincore.subscription_lines l SET invoice_id = i.id
      FROM fincore.invoices i
     WHERE i.tenant_id = t AND i.id = ANY (inv_ids)
       AND l.tenant_id = t AND l.subscription_id = i.subscription_id AND l.invoice_id IS NULL;
    -- A paid renewal makes its subscription active (payment_succeeded).
    UPDATE fincore.subscriptions x SET status = fincore.subscription_transition(x.status, 'payment_succeeded')
     WHERE x.tenant_id = t AND x.status IN ('incomplete', 'past_due', 'unpaid')
       AND x.id = ANY (ARRAY(SELECT i.subscription_id FROM unnest(invs) i WHERE i.status = 'paid'));
    PERFORM fincore.emit('billing', e.type, 'invoice', i.id::text,
                         pg_catalog.jsonb_build_object('invoice_id', i.id, 'subscription_id', i.subscription_id,
                                                       'total', i.total, 'currency', i.currency,
                                                       'transfer_id', CASE WHEN e.k = 3 THEN i.payment_transfer_id
                                                                           ELSE i.transfer_id END))
       FROM unnest(invs) i
       JOIN (VALUES (1, 'invoice.created'), (2, 'invoice.finalized'), (3, 'invoice.paid')) e(k, type)
         ON e.k < 3 OR i.status = 'paid'
      ORDER BY i.id, e.k;

    -- The refused collections (ZF304-ZF307) go to a payment method's provider or to dunning, one
    -- by one.
    FOR k IN 1 .. pg_catalog.cardinality(invs) LOOP
        CONTINUE WHEN leg_results[2 * k] = 'ok';
        code := fincore.transfer_result_sqlstate(leg_results[2 * k]);
        IF code IS NULL OR code NOT IN ('ZF304', 'ZF305', 'ZF306', 'ZF307') THEN
            RAISE EXCEPTION 'the ledger refused the collection of invoice %: %', (invs[k]).id, leg_results[2 * k]
                USING ERRCODE = coalesce(code, 'ZF301');
        END IF;
        SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = t AND x.id = (invs[k]).subscription_id;
        before := s.status;
        IF s.payment_provider IS NOT NULL THEN
            -- Its credit, and a payment through the provider for the rest.
            s := (fincore._collect_invoice(s, invs[k])).s;
        ELSE
            s := fincore._invoice_payment_failed(s, invs[k], code);
        END IF;
        IF s.status IS DISTINCT FROM before THEN
            UPDATE fincore.subscriptions x SET status = s.status WHERE x.tenant_id = t AND x.id = s.id;
        END IF;
    END LOOP;
    RETURN invs;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._renew_subscriptions(uuid, uuid[]) FROM PUBLIC;
COMMENT ON FUNCTION fincore._renew_subscriptions(uuid, uuid[]) IS
    'Internal: renews a batch of a tenant''s locked, due subscriptions set-based (periods, lines, invoices, one create_transfers call for both legs of every invoice) and returns the invoices.';

CREATE FUNCTION fincore.billing_run(at timestamptz DEFAULT NULL, max_subscriptions integer DEFAULT 100,
                                    tenant uuid DEFAULT NULL)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    now_ timestamptz := coalesce(at, pg_catalog.now());
    saved text := pg_catalog.current_setting('fincore.tenant', true);
    t uuid;
    s fincore.subscriptions;
    before text;
    inv fincore.invoices;
    renew uuid[];
    befores text[];
    renewed fincore.subscriptions[];
    invs fincore.invoices[];
    n integer := 0;
BEGIN
    -- Tenant by tenant (fincore.tenants is small, and a reference table on Citus), each one's due
    -- subscriptions in period_end order by their index, locked with SKIP LOCKED: concurrent runs
    -- share the work and never bill a period twice (a period is advanced under its row's lock, so
    -- a second run finds it not due).  Every statement names its tenant.
    FOR t IN SELECT x.id FROM fincore.tenants x WHERE tenant IS NULL OR x.id = tenant ORDER BY x.id LOOP
        EXIT WHEN n >= max_subscriptions;
        -- Nothing due: next tenant (a probe of each index; no sublink, which Citus would plan apart).
        -- The ORDER BY keeps the probe on the index: without it a LIMIT 1 plans a sequential scan,
        -- which reads past every renewed row and made a run's cost grow with the rows renewed.
        PERFORM FROM fincore.subscriptions x
          WHERE x.tenant_id = t AND x.external_id IS NULL
            AND x.status IN ('trialing', 'active', 'past_due') AND x.period_end <= now_
          ORDER BY x.period_end LIMIT 1;
        IF NOT FOUND THEN
            PERFORM FROM fincore.subscriptions x
              WHERE x.tenant_id = t AND x.external_id IS NULL AND x.status = 'incomplete'
                AND x.created_at <= now_ - '23 hours'::interval
              ORDER BY x.created_at LIMIT 1;
            CONTINUE WHEN NOT FOUND;
        END IF;
        PERFORM fincore._use_tenant(t);
        renew := '{}';
        befores := '{}';
        FOR s IN SELECT * FROM fincore.subscriptions x
                  WHERE x.tenant_id = t AND x.external_id IS NULL
                    AND x.status IN ('trialing', 'active', 'past_due') AND x.period_end <= now_
                  ORDER BY x.period_end LIMIT max_subscriptions - n
                  FOR UPDATE SKIP LOCKED LOOP
            before := s.status;
            n := n + 1;
            IF s.cancel_at_period_end THEN
                s.status := fincore.subscription_transition(s.status, 'cancel');
                UPDATE fincore.subscriptions x SET cancel_at_period_end = false WHERE x.tenant_id = t AND x.id = s.id;
                PERFORM fincore._subscription_save_status(s, before);
            ELSE
                renew := renew || s.id;
                befores := befores || before;
            END IF;
        END LOOP;
        -- Incomplete for 23 hours, its first invoice never paid (Stripe's rule): expired, the invoice voided.
        FOR s IN SELECT * FROM fincore.subscriptions x
                  WHERE x.tenant_id = t AND x.external_id IS NULL AND x.status = 'incomplete'
                    AND x.created_at <= now_ - '23 hours'::interval
                  ORDER BY x.created_at LIMIT max_subscriptions - n
                  FOR UPDATE SKIP LOCKED LOOP
            -- A provider payment of its invoice still in flight: its answer comes first.
            PERFORM FROM fincore.invoices x
              JOIN fincore.payments p ON p.tenant_id = t AND p.id = x.payment_id
             WHERE x.tenant_id = t AND x.subscription_id = s.id AND x.status = 'open'
               AND p.status IN ('requires_confirmation', 'processing', 'requires_action', 'requires_capture');
            CONTINUE WHEN FOUND;
            before := s.status;
            n := n + 1;
            s.status := fincore.subscription_transition(s.status, 'first_payment_expired');
            FOR inv IN SELECT * FROM fincore.invoices x
                        WHERE x.tenant_id = t AND x.subscription_id = s.id AND x.status IN ('draft', 'open') LOOP
                PERFORM fincore._void_invoice(inv);
            END LOOP;
            PERFORM fincore._subscription_save_status(s, before);
        END LOOP;
        IF pg_catalog.cardinality(renew) > 0 THEN
            invs := fincore._renew_subscriptions(t, renew);
            SELECT pg_catalog.array_agg(x) INTO renewed FROM fincore.subscriptions x
             WHERE x.tenant_id = t AND x.id = ANY (renew);
            PERFORM fincore.emit('billing', 'subscription.renewed', 'subscription', x.id::text,
                                 pg_catalog.jsonb_build_object('subscription_id', x.id, 'status', x.status,
                                                               'previous_status', b.before, 'price_id', x.price_id,
                                                               'quantity', x.quantity, 'period_start', x.period_start,
                                                               'period_end', x.period_end, 'invoice_id', i.id))
               FROM unnest(renewed) x
               JOIN unnest(renew, befores) AS b(id, before) ON b.id = x.id
               LEFT JOIN unnest(invs) i ON i.subscription_id = x.id
              ORDER BY x.id;
        END IF;
    END LOOP;
    PERFORM fincore._use_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.billing_run(timestamptz, integer, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore.billing_run(timestamptz, integer, uuid) IS
    'Renews the subscriptions (of every tenant, or of `tenant`) whose period ended by `at` (default now), at most max_subscriptions: the next period (at a price scheduled for it, if any) billed in full, invoiced (receivable <- revenue) and collected from the customer''s account (past_due and a dunning retry if the ledger refuses), a batch at a time (one create_transfers call); cancels those set to cancel at the period''s end, and expires those incomplete for 23 hours. Concurrent runs share the work with SKIP LOCKED; each period is billed once. Returns how many subscriptions it moved.';

CREATE FUNCTION fincore.billing_run_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.billing_run(NULL, 100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.billing_run_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.billing_run_step(interval) IS
    'Maintenance step: billing_run in batches of 100 until none is due or the budget is spent.';

-- ---------------------------------------------------------------------------
-- Stripe in sync: for a tenant whose billing system of record is Stripe, Stripe's webhook events
-- (accepted once by fincore.accept_webhook, queued on webhook:stripe) are applied to the same
-- tables, so that entitled() and the events work as in fincore's own billing.  An event older
-- than what a row already shows is stale and changes nothing; an event about an object not
-- known yet (a subscription's invoice before the subscription) is refused with ZFA13 and its job
-- retried.  Stripe's subscriptions and invoices are mirrored: nothing is posted to the ledger.
-- ---------------------------------------------------------------------------

-- The fincore id of a Stripe object: the same for every event about it.
CREATE FUNCTION fincore._stripe_id(tenant uuid, kind text, stripe_id text) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        SELECT pg_catalog.md5(tenant::text OPERATOR(pg_catalog.||) ':stripe:' OPERATOR(pg_catalog.||) kind
                              OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) stripe_id)::uuid;
    END;
REVOKE ALL ON FUNCTION fincore._stripe_id(uuid, text, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._stripe_id(uuid, text, text) IS
    'Internal: the fincore id of a Stripe object of a tenant (an MD5 of tenant, kind and Stripe id).';

-- A Unix time of a Stripe object (NULL if absent); ZFA14 if it is not a number.
CREATE FUNCTION fincore._stripe_time(v jsonb) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF v IS NULL OR pg_catalog.jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.jsonb_typeof(v) <> 'number' THEN
        RAISE EXCEPTION 'invalid Stripe event: % is not a Unix time', v USING ERRCODE = 'ZFA14';
    END IF;
    RETURN pg_catalog.to_timestamp((v #>> '{}')::double precision);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._stripe_time(jsonb) FROM PUBLIC;
COMMENT ON FUNCTION fincore._stripe_time(jsonb) IS 'Internal: a Stripe Unix time as timestamptz (ZFA14 if not a number).';

CREATE FUNCTION fincore.apply_stripe_event(event jsonb) RETURNS text
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    kind text := event ->> 'type';
    obj jsonb := event -> 'data' -> 'object';
    created bigint;
    s fincore.subscriptions;
    inv fincore.invoices;
    price fincore.billing_prices;
    item jsonb;
    new_status text;
    customer uuid;
    sub_ext text;
    who uuid;
BEGIN
    IF event IS NULL OR pg_catalog.jsonb_typeof(event) <> 'object' OR kind IS NULL
       OR pg_catalog.jsonb_typeof(event -> 'created') IS DISTINCT FROM 'number'
       OR pg_catalog.jsonb_typeof(obj) IS DISTINCT FROM 'object' OR obj ->> 'id' IS NULL THEN
        RAISE EXCEPTION 'invalid Stripe event %', coalesce(event ->> 'id', 'without an id')
            USING ERRCODE = 'ZFA14', HINT = 'An event object: id, type, created and data.object with its id.';
    END IF;
    created := (event ->> 'created')::numeric::bigint;

    IF kind LIKE 'customer.subscription.%' THEN
        new_status := CASE WHEN kind = 'customer.subscription.deleted' THEN 'canceled' ELSE obj ->> 'status' END;
        PERFORM fincore.subscription_entitles(coalesce(new_status, 'none'));     -- ZFA04 for an unknown status
        item := obj -> 'items' -> 'data' -> 0;
        SELECT * INTO price FROM fincore.billing_prices p
         WHERE p.tenant_id = tenant AND p.external_id = item -> 'price' ->> 'id';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'Stripe price % is not a price of tenant %', coalesce(item -> 'price' ->> 'id', 'NULL'), tenant
                USING ERRCODE = 'ZFA13', HINT = 'Create it with fincore.create_price(..., external_id => <Stripe''s id>); the event is then applied when retried.';
        END IF;
        -- The customer's account, in the price's currency, made at the first event that names it.
        customer := fincore._stripe_id(tenant, 'customer:' || price.currency, coalesce(obj ->> 'customer', 'none'));
        IF NOT EXISTS (SELECT FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = customer) THEN
            PERFORM fincore.create_account(price.currency, id => customer,
                                           external_ref => 'stripe:' || coalesce(obj ->> 'customer', 'none'));
        END IF;
        s.tenant_id := tenant;
        s.id := fincore._stripe_id(tenant, 'subscription', obj ->> 'id');
        s.customer_account := customer;
        s.price_id := price.id;
        s.quantity := greatest(coalesce((item ->> 'quantity')::integer, 1), 1);
        s.status := new_status;
        s.period_start := coalesce(fincore._stripe_time(obj -> 'current_period_start'),
                                   fincore._stripe_time(item -> 'current_period_start'),
                                   fincore._stripe_time(obj -> 'start_date'));
        s.period_end := coalesce(fincore._stripe_time(obj -> 'current_period_end'),
                                 fincore._stripe_time(item -> 'current_period_end'), s.period_start);
        s.anchor := coalesce(fincore._stripe_time(obj -> 'billing_cycle_anchor'), s.period_start);
        s.trial_end := fincore._stripe_time(obj -> 'trial_end');
        s.cancel_at_period_end := coalesce((obj ->> 'cancel_at_period_end')::boolean, false);
        IF s.period_start IS NULL OR s.period_end < s.period_start THEN
            RAISE EXCEPTION 'invalid Stripe subscription %: no current period', obj ->> 'id' USING ERRCODE = 'ZFA14';
        END IF;
        PERFORM FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.id = s.id FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO fincore.subscriptions (tenant_id, id, customer_account, price_id, quantity, status, anchor,
                                               trial_end, period_start, period_end, billed, billed_from,
                                               cancel_at_period_end, external_id, external_version)
            VALUES (tenant, s.id, s.customer_account, s.price_id, s.quantity, s.status, s.anchor, s.trial_end,
                    s.period_start, s.period_end, 0, s.period_start, s.cancel_at_period_end, obj ->> 'id', created);
            PERFORM fincore.emit('billing', 'subscription.created', 'subscription', s.id::text,
                                 pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                               'price_id', s.price_id, 'quantity', s.quantity,
                                                               'source', 'stripe', 'stripe_event', event ->> 'id'));
            RETURN 'applied';
        END IF;
        UPDATE fincore.subscriptions x
           SET customer_account = s.customer_account, price_id = s.price_id, quantity = s.quantity,
               status = s.status, anchor = s.anchor, trial_end = s.trial_end, period_start = s.period_start,
               period_end = s.period_end, billed_from = s.period_start, cancel_at_period_end = s.cancel_at_period_end,
               external_version = created, updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id
           -- Newer than what the row shows; a final status is never left.
           AND created >= x.external_version AND x.status NOT IN ('canceled', 'incomplete_expired')
           AND (x.customer_account, x.price_id, x.quantity, x.status, x.anchor, x.trial_end, x.period_start,
                x.period_end, x.cancel_at_period_end)
               IS DISTINCT FROM (s.customer_account, s.price_id, s.quantity, s.status, s.anchor, s.trial_end,
                                 s.period_start, s.period_end, s.cancel_at_period_end);
        IF NOT FOUND THEN
            RETURN 'unchanged';     -- stale, or what it says is already there
        END IF;
        PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                             pg_catalog.jsonb_build_object('subscription_id', s.id, 'status', s.status,
                                                           'price_id', s.price_id, 'quantity', s.quantity,
                                                           'cancel_at_period_end', s.cancel_at_period_end,
                                                           'source', 'stripe', 'stripe_event', event ->> 'id'));
        RETURN 'applied';

    ELSIF kind LIKE 'invoice.%' THEN
        sub_ext := coalesce(obj ->> 'subscription', obj -> 'parent' -> 'subscription_details' ->> 'subscription');
        SELECT * INTO s FROM fincore.subscriptions x WHERE x.tenant_id = tenant AND x.external_id = sub_ext FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'Stripe invoice %: its subscription % is not known yet', obj ->> 'id', coalesce(sub_ext, 'NULL')
                USING ERRCODE = 'ZFA13', HINT = 'Retry the event once the subscription''s own event is applied.';
        END IF;
        inv.status := obj ->> 'status';
        IF inv.status IS NULL OR inv.status NOT IN ('draft', 'open', 'paid', 'void', 'uncollectible') THEN
            RAISE EXCEPTION 'invalid Stripe invoice %: status %', obj ->> 'id', coalesce(inv.status, 'NULL')
                USING ERRCODE = 'ZFA14';
        END IF;
        inv.tenant_id := tenant;
        inv.id := fincore._stripe_id(tenant, 'invoice', obj ->> 'id');
        inv.total := coalesce((obj ->> 'total')::bigint, (obj ->> 'amount_due')::bigint, 0);
        inv.currency := pg_catalog.upper(coalesce(obj ->> 'currency', ''));
        inv.period_start := coalesce(fincore._stripe_time(obj -> 'period_start'), s.period_start);
        inv.period_end := coalesce(fincore._stripe_time(obj -> 'period_end'), s.period_end);
        IF inv.total < 0 OR inv.currency <> (SELECT p.currency FROM fincore.billing_prices p
                                              WHERE p.tenant_id = tenant AND p.id = s.price_id) THEN
            RAISE EXCEPTION 'invalid Stripe invoice %: % % for a subscription in %', obj ->> 'id', inv.total, inv.currency,
                    (SELECT p.currency FROM fincore.billing_prices p WHERE p.tenant_id = tenant AND p.id = s.price_id)
                USING ERRCODE = 'ZFA14';
        END IF;
        INSERT INTO fincore.invoices AS x (tenant_id, id, subscription_id, customer_account, currency, status, total,
                                           period_start, period_end, paid_at, external_id, external_version)
        VALUES (tenant, inv.id, s.id, s.customer_account, inv.currency, inv.status, inv.total, inv.period_start,
                inv.period_end, CASE WHEN inv.status = 'paid' THEN pg_catalog.now() END, obj ->> 'id', created)
        ON CONFLICT (tenant_id, id) DO UPDATE
           SET status = excluded.status, total = excluded.total, period_start = excluded.period_start,
               period_end = excluded.period_end, paid_at = coalesce(x.paid_at, excluded.paid_at),
               external_version = excluded.external_version
         -- Newer than what the row shows; a final status is never left.
         WHERE excluded.external_version >= x.external_version AND x.status NOT IN ('paid', 'void')
           AND (x.status, x.total, x.period_start, x.period_end)
               IS DISTINCT FROM (excluded.status, excluded.total, excluded.period_start, excluded.period_end);
        IF NOT FOUND THEN
            RETURN 'unchanged';
        END IF;
        PERFORM fincore.emit('billing', kind, 'invoice', inv.id::text,
                             pg_catalog.jsonb_build_object('invoice_id', inv.id, 'subscription_id', s.id,
                                                           'status', inv.status, 'total', inv.total,
                                                           'source', 'stripe', 'stripe_event', event ->> 'id'));
        RETURN 'applied';

    ELSIF kind = 'checkout.session.completed' THEN
        IF obj ->> 'mode' IS DISTINCT FROM 'subscription' OR obj ->> 'client_reference_id' IS NULL THEN
            RETURN 'ignored';   -- a one-off payment, or no user to entitle
        END IF;
        BEGIN
            who := (obj ->> 'client_reference_id')::uuid;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'invalid Stripe checkout session %: client_reference_id % is not a user id (uuid)',
                    obj ->> 'id', obj ->> 'client_reference_id'
                USING ERRCODE = 'ZFA14';
        END;
        SELECT * INTO s FROM fincore.subscriptions x
         WHERE x.tenant_id = tenant AND x.external_id = obj ->> 'subscription' FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'Stripe checkout session %: its subscription % is not known yet', obj ->> 'id',
                    coalesce(obj ->> 'subscription', 'NULL')
                USING ERRCODE = 'ZFA13', HINT = 'Retry the event once the subscription''s own event is applied.';
        END IF;
        IF s.subscriber IS NOT DISTINCT FROM who THEN
            RETURN 'unchanged';
        END IF;
        UPDATE fincore.subscriptions x SET subscriber = who, updated_at = pg_catalog.now()
         WHERE x.tenant_id = tenant AND x.id = s.id;
        PERFORM fincore.emit('billing', 'subscription.updated', 'subscription', s.id::text,
                             pg_catalog.jsonb_build_object('subscription_id', s.id, 'subscriber', who,
                                                           'source', 'stripe', 'stripe_event', event ->> 'id'));
        RETURN 'applied';
    END IF;
    RETURN 'ignored';
END
$fn$;
COMMENT ON FUNCTION fincore.apply_stripe_event(jsonb) IS
    'Applies a Stripe event to the current tenant''s billing tables (customer.subscription.*, invoice.*, checkout.session.completed; others are ignored): a subscription or invoice mirrored from Stripe (nothing posted), a subscriber from a checkout''s client_reference_id. Idempotent and safe against out-of-order delivery: an event older than the row (by created), or about a final status, changes nothing. Returns applied, unchanged or ignored. Trusted roles. ZFA13 (an object not known yet: retry), ZFA14, ZFA04.';

-- The Stripe worker in the database: claims webhook:stripe jobs (fincore.accept_webhook's),
-- applies each in its tenant; an event whose subscription or price is not known yet fails its
-- job, which the queue retries with its backoff.
CREATE FUNCTION fincore.stripe_sync_run(max_jobs integer DEFAULT 100) RETURNS integer
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    saved text := pg_catalog.current_setting('fincore.tenant', true);
    j fincore.job;
    n integer := 0;
    msg text;
BEGIN
    FOR j IN SELECT * FROM fincore.dequeue('webhook:stripe', max_jobs, '5 minutes', 'fincore.stripe_sync_run') LOOP
        PERFORM fincore._use_tenant(j.tenant_id);
        BEGIN
            PERFORM fincore.apply_stripe_event(j.payload);
            PERFORM fincore.complete(j.id, NULL, j.attempt);
        EXCEPTION WHEN SQLSTATE 'ZFA13' THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            PERFORM fincore.fail(j.id, msg, NULL, j.attempt);
        END;
        n := n + 1;
    END LOOP;
    PERFORM fincore._use_tenant(NULLIF(saved, '')::uuid);
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.stripe_sync_run(integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore.stripe_sync_run(integer) IS
    'Applies up to max_jobs queued Stripe events (queue webhook:stripe) in their tenants; an event about an object not known yet fails its job, retried with the queue''s backoff. Returns how many jobs it took.';

CREATE FUNCTION fincore.stripe_sync_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.stripe_sync_run(100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.stripe_sync_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.stripe_sync_step(interval) IS
    'Maintenance step: stripe_sync_run in batches of 100 until none is due or the budget is spent.';

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('billing_run', 'fincore.billing_run_step(interval)', 130, 'Renew, invoice and collect the subscriptions whose period ended'),
    ('dunning_run', 'fincore.dunning_run_step(interval)', 135, 'Retry the failed invoice payments that are due (queue billing:dunning)'),
    ('stripe_sync', 'fincore.stripe_sync_step(interval)', 140, 'Apply the queued Stripe events (queue webhook:stripe) to the billing tables');

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.create_product(text,uuid)', 'app'),
    ('fincore.set_product_features(uuid,text[])', 'app'),
    ('fincore.entitled(text)', 'app'),
    ('fincore.create_price(uuid,bigint,text,text,integer,text,integer,uuid,text,jsonb)', 'app'),
    ('fincore.billing_price_amount(text,bigint,jsonb,integer)', 'app'),
    ('fincore.apply_stripe_event(jsonb)', 'trusted'),
    ('fincore.create_subscription(uuid,uuid,integer,timestamptz,text,uuid,uuid)', 'app'),
    ('fincore.preview_change(uuid,uuid,integer,timestamptz,text,boolean)', 'app'),
    ('fincore.change_subscription(uuid,uuid,integer,timestamptz,text,boolean)', 'app'),
    ('fincore.update_subscription_status(uuid,text)', 'app'),
    ('fincore.set_payment_method(uuid,text,uuid)', 'app'),
    ('fincore.set_billing_accounts(text,uuid,uuid)', 'app'),
    ('fincore.set_dunning_policy(interval[],text,text[])', 'app'),
    ('fincore.create_invoice(uuid,boolean)', 'app'),
    ('fincore.finalize_invoice(uuid)', 'app'),
    ('fincore.pay_invoice(uuid)', 'app'),
    ('fincore.update_invoice_status(uuid,text)', 'app'),
    ('fincore.retry_invoice(uuid,integer)', 'trusted'),
    ('fincore.invoice_transition(text,text)', 'app'),
    ('fincore.subscription_transition(text,text)', 'app'),
    ('fincore.subscription_entitles(text)', 'app'),
    ('fincore.billing_period(timestamptz,text,integer,timestamptz)', 'app'),
    ('fincore.proration(bigint,timestamptz,timestamptz,timestamptz,bigint,timestamptz,text)', 'app');

-- ---- Audit trail (issue 20): sql/modules/audit.sql, as it is --------------------------------

-- ---------------------------------------------------------------------------
-- Audit trail (docs/audit.md): a hash chain per tenant, and one for global
-- objects (the nil uuid), that even a superuser cannot rewrite unseen.
--
-- Writers append records to fincore.audit_pending in their own transaction;
-- fincore.audit_seal() chains the committed ones (src/audit_api.c): the next
-- sequence number, the SHA-256 over the predecessor's hash and the record's
-- canonical encoding (src/audit_chain.c), into the append-only
-- fincore.audit_log.  Digests (fincore.audit_digest) are kept outside the
-- database; audit_verify() recomputes a chain, audit_proof() proves that a
-- record is in a digest's Merkle tree (RFC 6962).
-- ---------------------------------------------------------------------------

-- A chain's head: its last record, and the Merkle tree's compact range over its records.
CREATE TABLE fincore.audit_heads (
    tenant_id  uuid        NOT NULL PRIMARY KEY,   -- the nil uuid: the chain of global objects
    seq        bigint      NOT NULL DEFAULT 0,
    hash       bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    frontier   bytea,      -- the roots of the tree's perfect subtrees, largest first (NULL: no record)
    first_seq  bigint      NOT NULL DEFAULT 1,      -- retention: the first record kept
    base_hash  bytea,      -- the hash of record first_seq - 1, which the kept records chain from
    base_frontier bytea,   -- the compact range of the records dropped, for proofs of the kept ones
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fincore.audit_heads IS
    'The head of each audit chain (a tenant''s, or the nil uuid''s for global objects): its last sequence number and hash, the Merkle compact range, and where retention cut it. Written by fincore.audit_seal() under the row''s lock.';

-- Records not chained yet: each writer's own, in its transaction.
CREATE TABLE fincore.audit_pending (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,     -- a uuidv7: its writer's order (unique across Citus nodes too)
    txid         xid8        NOT NULL,
    at           timestamptz NOT NULL,
    actor_role   text        NOT NULL,
    actor_sub    uuid,
    actor_tenant uuid,
    table_name   text        NOT NULL,
    op           "char"      NOT NULL,
    key          text        NOT NULL,
    payload      jsonb,
    -- The sealer's order: by transaction, then as written.
    PRIMARY KEY (tenant_id, txid, id)
);
COMMENT ON TABLE fincore.audit_pending IS
    'Audit records written by their transactions and not chained yet; fincore.audit_seal() moves the committed ones to fincore.audit_log.';

-- The chained records.
CREATE TABLE fincore.audit_log (
    tenant_id    uuid        NOT NULL,
    seq          bigint      NOT NULL,
    at           timestamptz NOT NULL,
    txid         xid8        NOT NULL,
    actor_role   text        NOT NULL,     -- the database role
    actor_sub    uuid,                     -- the JWT subject (fincore.uid())
    actor_tenant uuid,                     -- the tenant of the claims, if any
    table_name   text        NOT NULL,
    op           "char"      NOT NULL,     -- I, U, D, T (truncate), R (redaction)
    key          text        NOT NULL,     -- the row's primary key, without tenant_id
    -- {"old": ..., "new": ...} as the text jsonb prints (json keeps it byte for byte, so the
    -- hash is over what is stored); NULL once redacted
    payload      json,
    payload_hash bytea       NOT NULL,     -- SHA-256 of the payload's text
    hash         bytea       NOT NULL,     -- SHA-256 of the record's encoding after the previous hash
    PRIMARY KEY (tenant_id, seq)
);
COMMENT ON TABLE fincore.audit_log IS
    'The audit chains: one record per change of an audited table, numbered without gaps per tenant, each hash chained to the one before (docs/audit.md). Append-only: a payload can be erased by fincore.audit_redact(), its hash kept.';

-- The digests taken: what an auditor keeps outside the database.
CREATE TABLE fincore.audit_checkpoints (
    tenant_id   uuid        NOT NULL,
    seq         bigint      NOT NULL,
    hash        bytea       NOT NULL,      -- the chain's hash at seq
    merkle_root bytea       NOT NULL,      -- the root of the Merkle tree of records 1 to seq
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, seq)
);
COMMENT ON TABLE fincore.audit_checkpoints IS
    'The digests fincore.audit_digest() took (also sent as audit.digest events): a chain''s sequence number, hash and Merkle root. Proofs are against them; retention cuts only behind one.';

SELECT fincore.protect('fincore.audit_heads');
SELECT fincore.protect('fincore.audit_pending');
SELECT fincore.protect('fincore.audit_log');
SELECT fincore.protect('fincore.audit_checkpoints');
SELECT pg_catalog.pg_extension_config_dump('fincore.audit_heads', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.audit_pending', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.audit_checkpoints', '');

CREATE FUNCTION fincore.audit_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_audit_guard';
COMMENT ON FUNCTION fincore.audit_guard() IS
    'Trigger: refuses UPDATE, DELETE and TRUNCATE of the audit tables except fincore''s own sealing, redaction and retention (ZFB03).';
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON fincore.audit_log
    FOR EACH ROW EXECUTE FUNCTION fincore.audit_guard();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON fincore.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.audit_guard();
CREATE TRIGGER audit_heads_guard BEFORE UPDATE OR DELETE ON fincore.audit_heads
    FOR EACH ROW EXECUTE FUNCTION fincore.audit_guard();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON fincore.audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.audit_guard();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON fincore.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION fincore.audit_guard();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON fincore.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.audit_guard();

-- ---------------------------------------------------------------------------
-- The C functions
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.audit_trigger() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_audit_trigger';
COMMENT ON FUNCTION fincore.audit_trigger() IS
    'Trigger (fincore.audit_enable): appends a record of each row inserted, updated or deleted, and of a TRUNCATE, to the audit chain of the row''s tenant; its arguments are the columns left out of the payload.';

CREATE FUNCTION fincore.audit_record_hash(prev bytea, tenant uuid, seq bigint, at timestamptz, txid bigint,
        actor_role text, actor_sub text, actor_tenant uuid, table_name text, op text, key text, payload_hash bytea)
    RETURNS bytea
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_audit_record_hash';
COMMENT ON FUNCTION fincore.audit_record_hash(bytea, uuid, bigint, timestamptz, bigint, text, text, uuid, text, text, text, bytea) IS
    'A record''s chain hash: SHA-256 of its canonical encoding (version FCA1, docs/audit.md) after the previous record''s hash. ZFB05 for a hash that is not 32 bytes or an operation that is not one letter.';

CREATE FUNCTION fincore._audit_merkle_root(frontier bytea, records bigint) RETURNS bytea
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_audit_merkle_root';
COMMENT ON FUNCTION fincore._audit_merkle_root(bytea, bigint) IS
    'Internal: the Merkle root (RFC 6962) of a chain''s records from its head''s compact range.';

CREATE FUNCTION fincore._audit_seal(tenant uuid, max_records integer) RETURNS bigint
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_audit_seal';
REVOKE ALL ON FUNCTION fincore._audit_seal(uuid, integer) FROM PUBLIC;
COMMENT ON FUNCTION fincore._audit_seal(uuid, integer) IS
    'Internal: chains up to max_records of a tenant''s committed pending audit records, under its head''s lock.';

CREATE FUNCTION fincore._audit_verify(tenant uuid, from_seq bigint, to_seq bigint, expected_digest bytea,
        OUT ok boolean, OUT checked bigint, OUT first_bad_seq bigint, OUT reason text)
    RETURNS record
    LANGUAGE c STABLE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_audit_verify';
REVOKE ALL ON FUNCTION fincore._audit_verify(uuid, bigint, bigint, bytea) FROM PUBLIC;
COMMENT ON FUNCTION fincore._audit_verify(uuid, bigint, bigint, bytea) IS
    'Internal: recomputes a chain, streaming (fincore.audit_verify checks the caller).';

CREATE FUNCTION fincore._audit_proof(tenant uuid, seq bigint, tree_size bigint) RETURNS jsonb
    LANGUAGE c STABLE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_audit_proof';
REVOKE ALL ON FUNCTION fincore._audit_proof(uuid, bigint, bigint) FROM PUBLIC;
COMMENT ON FUNCTION fincore._audit_proof(uuid, bigint, bigint) IS
    'Internal: the inclusion proof of a record in the Merkle tree of the chain''s first tree_size records.';

CREATE FUNCTION fincore._audit_erase_payload(tenant uuid, seq bigint) RETURNS boolean
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_audit_erase_payload';
REVOKE ALL ON FUNCTION fincore._audit_erase_payload(uuid, bigint) FROM PUBLIC;
COMMENT ON FUNCTION fincore._audit_erase_payload(uuid, bigint) IS
    'Internal: removes a record''s payload, keeping its payload hash (fincore.audit_redact chains the redaction).';

CREATE FUNCTION fincore._audit_drop_before(tenant uuid, cut bigint) RETURNS bigint
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_audit_drop_before';
REVOKE ALL ON FUNCTION fincore._audit_drop_before(uuid, bigint) FROM PUBLIC;
COMMENT ON FUNCTION fincore._audit_drop_before(uuid, bigint) IS
    'Internal: retention: drops a chain''s records before cut; its head keeps the hash they end with.';

CREATE FUNCTION fincore._audit_append(tenant uuid, table_name text, op text, key text, payload jsonb) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_audit_append';
REVOKE ALL ON FUNCTION fincore._audit_append(uuid, text, text, text, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION fincore._audit_append(uuid, text, text, text, jsonb) IS
    'Internal: appends a record to a chain''s pending records (fincore''s own: redactions, audit_enable).';

-- ---------------------------------------------------------------------------
-- Who may read a chain: auditors
-- ---------------------------------------------------------------------------

-- An auditor of the tenant: a member with role auditor, admin or owner, or a role that is not an
-- application role (the owner, a superuser) or a trusted one.  The global chain: those roles only.
CREATE FUNCTION fincore.require_auditor(tenant uuid) RETURNS void
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    invoker text := pg_catalog.current_setting('role');
BEGIN
    IF invoker IS NULL OR invoker = 'none' THEN
        invoker := pg_catalog.session_user();
    END IF;
    IF EXISTS (SELECT 1 FROM fincore.app_roles a WHERE a.role_name = invoker AND NOT a.trusted)
       AND (tenant = '00000000-0000-0000-0000-000000000000'
            OR NOT (fincore.has_tenant_role(tenant, 'auditor') OR fincore.has_tenant_role(tenant, 'admin')
                    OR fincore.has_tenant_role(tenant, 'owner'))) THEN
        RAISE EXCEPTION 'only an auditor of tenant % may read its audit chain', tenant
            USING ERRCODE = 'ZFB02',
                  HINT = 'Add the user with fincore.add_tenant_member(user_id, ''auditor''), or call from a trusted role.';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.require_auditor(uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore.require_auditor(uuid) IS
    'Raises ZFB02 unless the caller may audit the tenant: a member with role auditor, admin or owner, or a trusted role (the global chain: trusted roles only).';

-- ---------------------------------------------------------------------------
-- Sealing, digests, verification, proofs
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.audit_seal(tenant uuid DEFAULT NULL, max_records integer DEFAULT 10000) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    total bigint := 0;
    t uuid;
BEGIN
    IF max_records IS NULL OR max_records < 1 THEN
        RAISE EXCEPTION 'max_records must be at least 1, not %', coalesce(max_records::text, 'NULL')
            USING ERRCODE = 'ZFB05';
    END IF;
    IF tenant IS NOT NULL THEN
        RETURN fincore._audit_seal(tenant, max_records);
    END IF;
    -- Every chain: each tenant's (one shard each on Citus), then the global one.
    FOR t IN SELECT x.id FROM fincore.tenants x
             UNION ALL SELECT '00000000-0000-0000-0000-000000000000'::uuid LOOP
        total := total + fincore._audit_seal(t, max_records);
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION fincore.audit_seal(uuid, integer) IS
    'Chains the committed pending audit records of a tenant (NULL: of every chain), up to max_records a chain: each gets the next sequence number and its hash. A maintenance step; audit_digest and audit_redact seal first. Trusted roles. ZFB05.';

CREATE FUNCTION fincore.audit_seal_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    total bigint := 0;
    n bigint;
BEGIN
    LOOP
        n := fincore.audit_seal(NULL, 10000);
        total := total + n;
        EXIT WHEN n = 0 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.audit_seal_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.audit_seal_step(interval) IS
    'Maintenance step: audit_seal over every chain until nothing is pending or the budget is spent.';

CREATE FUNCTION fincore.audit_digest(tenant uuid DEFAULT NULL,
        OUT tenant_id uuid, OUT seq bigint, OUT hash bytea, OUT merkle_root bytea)
    RETURNS record
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    h fincore.audit_heads;
    caller_tenant uuid := fincore.tenant_id();
BEGIN
    tenant_id := coalesce(tenant, fincore.require_tenant());
    PERFORM fincore.require_auditor(tenant_id);
    PERFORM fincore._audit_seal(tenant_id, 2147483647);
    SELECT * INTO h FROM fincore.audit_heads x WHERE x.tenant_id = audit_digest.tenant_id;
    IF NOT FOUND THEN
        -- An empty chain: nothing to keep, no checkpoint.
        seq := 0;
        hash := '\x0000000000000000000000000000000000000000000000000000000000000000';
        merkle_root := fincore._audit_merkle_root(NULL, 0);
        RETURN;
    END IF;
    seq := h.seq;
    hash := h.hash;
    merkle_root := fincore._audit_merkle_root(h.frontier, h.seq);
    INSERT INTO fincore.audit_checkpoints (tenant_id, seq, hash, merkle_root)
    VALUES (tenant_id, seq, hash, merkle_root)
    ON CONFLICT ON CONSTRAINT audit_checkpoints_pkey DO NOTHING;
    IF FOUND AND tenant_id <> '00000000-0000-0000-0000-000000000000' THEN
        -- The event is the chain's tenant's; the caller's tenant is back after it.
        PERFORM fincore._use_tenant(tenant_id);
        PERFORM fincore.emit('audit', 'audit.digest', 'audit_chain', tenant_id::text,
                             pg_catalog.jsonb_build_object('tenant_id', tenant_id, 'seq', seq,
                                                           'hash', pg_catalog.encode(hash, 'hex'),
                                                           'merkle_root', pg_catalog.encode(merkle_root, 'hex')));
        PERFORM fincore._use_tenant(caller_tenant);
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.audit_digest(uuid) IS
    'Seals the tenant''s chain (NULL: the current tenant''s; the nil uuid: the global chain) and returns its digest: the last sequence number, its hash and the Merkle root of records 1 to seq. Keep it outside the database: it is also recorded as a checkpoint and sent as an audit.digest event. Auditors only (ZFB02).';

CREATE FUNCTION fincore.audit_digest_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    every interval := CAST(pg_catalog.current_setting('fincore.audit_digest_interval') AS pg_catalog.interval);
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n bigint := 0;
    t uuid;
    head_seq bigint;
    last record;
BEGIN
    -- A digest per chain that moved since its last one, once the interval has passed; each
    -- statement reads one tenant's rows (on Citus, one shard's).
    FOR t IN SELECT x.id FROM fincore.tenants x
             UNION ALL SELECT '00000000-0000-0000-0000-000000000000'::uuid LOOP
        SELECT x.seq INTO head_seq FROM fincore.audit_heads x WHERE x.tenant_id = t;
        CONTINUE WHEN NOT FOUND OR head_seq = 0;
        SELECT c.seq, c.created_at INTO last FROM fincore.audit_checkpoints c
         WHERE c.tenant_id = t ORDER BY c.seq DESC LIMIT 1;
        CONTINUE WHEN FOUND AND (last.seq = head_seq OR last.created_at > pg_catalog.now() - every);
        PERFORM fincore.audit_digest(t);
        n := n + 1;
        EXIT WHEN pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore.audit_digest_step(interval) FROM PUBLIC;
COMMENT ON FUNCTION fincore.audit_digest_step(interval) IS
    'Maintenance step: a digest (audit_digest) of each chain that moved since its last one, at most one per fincore.audit_digest_interval.';

CREATE FUNCTION fincore.audit_verify(tenant uuid DEFAULT NULL, from_seq bigint DEFAULT NULL,
        to_seq bigint DEFAULT NULL, expected_digest bytea DEFAULT NULL,
        OUT ok boolean, OUT checked bigint, OUT first_bad_seq bigint, OUT reason text)
    RETURNS record
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    t uuid := coalesce(tenant, fincore.require_tenant());
    r record;
BEGIN
    PERFORM fincore.require_auditor(t);
    r := fincore._audit_verify(t, from_seq, to_seq, expected_digest);
    ok := r.ok;
    checked := r.checked;
    first_bad_seq := r.first_bad_seq;
    reason := r.reason;
END
$fn$;
COMMENT ON FUNCTION fincore.audit_verify(uuid, bigint, bigint, bytea) IS
    'Recomputes a tenant''s chain (NULL: the current tenant''s) from from_seq to to_seq (NULLs: all it keeps, to the head) in C, streaming: ok, the records checked, or the first bad sequence number and why. expected_digest is the hash of a digest kept outside (fincore.audit_digest) at to_seq. Auditors only (ZFB02). ZFB05.';

CREATE FUNCTION fincore.audit_proof(tenant uuid, seq bigint, tree_size bigint DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    t uuid := coalesce(tenant, fincore.require_tenant());
    c fincore.audit_checkpoints;
BEGIN
    PERFORM fincore.require_auditor(t);
    SELECT * INTO c FROM fincore.audit_checkpoints x
     WHERE x.tenant_id = t AND x.seq >= audit_proof.seq AND (tree_size IS NULL OR x.seq = tree_size)
     ORDER BY x.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no checkpoint of tenant % covers record %', t, coalesce(seq::text, 'NULL')
            USING ERRCODE = 'ZFB04', HINT = 'Take one with fincore.audit_digest(); a proof is against a digest kept outside.';
    END IF;
    RETURN fincore._audit_proof(t, seq, c.seq)
           || pg_catalog.jsonb_build_object('checkpoint', pg_catalog.jsonb_build_object(
                  'seq', c.seq, 'hash', pg_catalog.encode(c.hash, 'hex'),
                  'merkle_root', pg_catalog.encode(c.merkle_root, 'hex'), 'created_at', c.created_at));
END
$fn$;
COMMENT ON FUNCTION fincore.audit_proof(uuid, bigint, bigint) IS
    'An inclusion proof (RFC 6962 audit path) of record seq in the Merkle tree of a checkpoint (the latest, or the one of tree_size records), with the record''s fields and its predecessor''s hash: scripts/audit-check verifies it with SHA-256 alone. Auditors only (ZFB02). ZFB04.';

-- ---------------------------------------------------------------------------
-- Redaction and retention
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.audit_redact(tenant uuid, seq bigint, reason text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    t uuid := coalesce(tenant, fincore.require_tenant());
BEGIN
    PERFORM fincore.require_limits_admin(t);
    IF reason IS NULL OR pg_catalog.length(reason) NOT BETWEEN 1 AND 500 THEN
        RAISE EXCEPTION 'a redaction needs a reason of 1 to 500 characters' USING ERRCODE = 'ZFB05';
    END IF;
    PERFORM FROM fincore.audit_log l WHERE l.tenant_id = t AND l.seq = audit_redact.seq;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit record % of tenant % not found', coalesce(seq::text, 'NULL'), t
            USING ERRCODE = 'ZFB04', HINT = 'Only sealed records can be redacted: fincore.audit_seal().';
    END IF;
    IF NOT fincore._audit_erase_payload(t, seq) THEN
        RETURN false;   -- redacted already
    END IF;
    PERFORM fincore._audit_append(t, 'fincore.audit_log', 'R', seq::text,
                                  pg_catalog.jsonb_build_object('seq', seq, 'reason', reason));
    PERFORM fincore._audit_seal(t, 2147483647);
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION fincore.audit_redact(uuid, bigint, text) IS
    'GDPR erasure: removes an audit record''s payload, keeping its payload hash so that the chain still verifies, and chains the redaction (with its reason) as a record of its own. False if the payload was gone already. Tenant admins and trusted roles (ZF803). ZFB04, ZFB05.';

CREATE FUNCTION fincore.audit_retain(tenant uuid, before_seq bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    h fincore.audit_heads;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    SELECT * INTO h FROM fincore.audit_heads x WHERE x.tenant_id = tenant;
    IF before_seq IS NULL OR NOT FOUND OR before_seq <= h.first_seq OR before_seq > h.seq THEN
        RAISE EXCEPTION 'cannot cut chain % before record %', tenant, coalesce(before_seq::text, 'NULL')
            USING ERRCODE = 'ZFB05', HINT = 'A cut lies after the first record kept and at most at the head.';
    END IF;
    -- The signed-off checkpoint at the cut: what the records kept are verified from.
    PERFORM FROM fincore.audit_checkpoints c WHERE c.tenant_id = tenant AND c.seq >= before_seq - 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no checkpoint of chain % at record % or later', tenant, before_seq - 1
            USING ERRCODE = 'ZFB05', HINT = 'Take a digest first (fincore.audit_digest) and keep it outside.';
    END IF;
    RETURN fincore._audit_drop_before(tenant, before_seq);
END
$fn$;
COMMENT ON FUNCTION fincore.audit_retain(uuid, bigint) IS
    'Retention: drops a chain''s records before before_seq, once a checkpoint at or after the cut exists; the chain stays verifiable from the cut (its head keeps the hash the kept records chain from). Tenant admins and trusted roles (ZF803). ZFB05.';

-- ---------------------------------------------------------------------------
-- Which tables are audited
-- ---------------------------------------------------------------------------

-- Drop a table's audit triggers, those it has (no notice for the others).
CREATE FUNCTION fincore._audit_drop_triggers(tbl regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    name name;
BEGIN
    FOR name IN SELECT t.tgname FROM pg_catalog.pg_trigger t
                 WHERE t.tgrelid = tbl AND t.tgname IN ('fincore_audit', 'fincore_audit_truncate') LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', name, tbl);
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION fincore._audit_drop_triggers(regclass) IS
    'Internal: drops a table''s audit triggers (the caller''s rights apply).';

CREATE FUNCTION fincore.audit_enable(tbl regclass, redact_columns text[] DEFAULT '{}') RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    kind "char";
    bad text;
    args text;
BEGIN
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF kind IS NULL OR kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot audit %: not a table', coalesce(tbl::text, 'NULL') USING ERRCODE = 'ZFB01';
    END IF;
    IF tbl IN ('fincore.audit_log'::regclass, 'fincore.audit_pending'::regclass, 'fincore.audit_heads'::regclass,
               'fincore.audit_checkpoints'::regclass) THEN
        RAISE EXCEPTION 'cannot audit %: it is the audit trail itself', tbl USING ERRCODE = 'ZFB01';
    END IF;
    IF redact_columns IS NULL THEN
        RAISE EXCEPTION 'redact_columns is an array of column names (empty: none)' USING ERRCODE = 'ZFB01';
    END IF;
    SELECT r INTO bad FROM pg_catalog.unnest(redact_columns) r
     WHERE r IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                     WHERE a.attrelid = tbl AND a.attname = r AND a.attnum > 0 AND NOT a.attisdropped)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'table % has no column %', tbl, coalesce(pg_catalog.quote_ident(bad), 'NULL')
            USING ERRCODE = 'ZFB01', HINT = 'redact_columns names columns left out of every record''s payload.';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_literal(r), ', ') INTO args FROM pg_catalog.unnest(redact_columns) r;
    PERFORM fincore._audit_drop_triggers(tbl);
    IF tbl = 'fincore.transfers'::regclass THEN
        -- The ledger appends its transfers' records itself (in C, in either store); the
        -- TRUNCATE trigger is the mark it looks for.  Transfers are never updated or deleted.
        NULL;
    ELSIF tbl = 'fincore.accounts'::regclass THEN
        -- An account's changes, not its balance counters (the transfers' records tell those).
        EXECUTE pg_catalog.format('CREATE TRIGGER fincore_audit AFTER INSERT OR DELETE OR UPDATE OF currency, code, '
                                  'flags, credit_limit, status, external_ref, metadata ON %s FOR EACH ROW '
                                  'EXECUTE FUNCTION fincore.audit_trigger(%s)', tbl, coalesce(args, ''));
    ELSE
        EXECUTE pg_catalog.format('CREATE TRIGGER fincore_audit AFTER INSERT OR UPDATE OR DELETE ON %s '
                                  'FOR EACH ROW EXECUTE FUNCTION fincore.audit_trigger(%s)', tbl, coalesce(args, ''));
    END IF;
    EXECUTE pg_catalog.format('CREATE TRIGGER fincore_audit_truncate AFTER TRUNCATE ON %s '
                              'FOR EACH STATEMENT EXECUTE FUNCTION fincore.audit_trigger()', tbl);
    PERFORM fincore._audit_table_changed(tbl);
END
$fn$;
COMMENT ON FUNCTION fincore.audit_enable(regclass, text[]) IS
    'Audits a table: a record of each row inserted, updated or deleted (old and new row, less redact_columns) and of each TRUNCATE goes to the chain of the row''s tenant (tenant_id; the global chain without one). The caller needs the right to create triggers on it. Recorded in the global chain. ZFB01.';

CREATE FUNCTION fincore.audit_disable(tbl regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'cannot stop auditing NULL' USING ERRCODE = 'ZFB01';
    END IF;
    PERFORM fincore._audit_drop_triggers(tbl);
    PERFORM fincore._audit_table_changed(tbl);
END
$fn$;
COMMENT ON FUNCTION fincore.audit_disable(regclass) IS
    'Stops auditing a table (its records stay); recorded in the global chain. The caller needs the right to drop its triggers. ZFB01.';

-- Which tables are audited, as their triggers say.
CREATE VIEW fincore.audited_tables WITH (security_invoker = true) AS
    SELECT t.tgrelid::regclass AS table_name,
           coalesce((SELECT pg_catalog.array_agg(a ORDER BY n)
                       FROM pg_catalog.pg_trigger r,
                            pg_catalog.unnest(pg_catalog.string_to_array(pg_catalog.encode(r.tgargs, 'escape'), '\000'))
                                WITH ORDINALITY AS u(a, n)
                      WHERE r.tgrelid = t.tgrelid AND r.tgname = 'fincore_audit' AND a <> ''), '{}') AS redact_columns
      FROM pg_catalog.pg_trigger t
     WHERE t.tgname = 'fincore_audit_truncate' AND NOT t.tgisinternal;
COMMENT ON VIEW fincore.audited_tables IS 'The tables fincore audits (fincore.audit_enable).';

-- Records, in the global chain, that a table's auditing changed: what its triggers now are.
-- Anyone may call it: it records only the truth.
CREATE FUNCTION fincore._audit_table_changed(tbl regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    redact text[];
    audited boolean;
BEGIN
    SELECT true INTO audited FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = tbl AND t.tgname = 'fincore_audit_truncate';
    SELECT v.redact_columns INTO redact FROM fincore.audited_tables v WHERE v.table_name = tbl;
    PERFORM fincore._audit_append('00000000-0000-0000-0000-000000000000', 'fincore.audited_tables',
                                  CASE WHEN audited THEN 'I' ELSE 'D' END, tbl::text,
                                  pg_catalog.jsonb_build_object('table', tbl::text, 'audited', coalesce(audited, false),
                                                                'redact_columns', coalesce(redact, '{}')));
END
$fn$;
COMMENT ON FUNCTION fincore._audit_table_changed(regclass) IS
    'Internal: records in the global chain whether a table is audited now, and its redacted columns.';

-- fincore's own money tables, audited from install.  A payment's money moves as transfers,
-- which are audited; its many status changes are not by default (fincore.audit_enable adds them).
SELECT fincore.audit_enable(t) FROM (VALUES
    ('fincore.accounts'::regclass), ('fincore.transfers'::regclass), ('fincore.fee_schedules'::regclass),
    ('fincore.limits'::regclass), ('fincore.rules'::regclass), ('fincore.billing_accounts'::regclass),
    ('fincore.billing_prices'::regclass), ('fincore.subscriptions'::regclass), ('fincore.invoices'::regclass),
    ('fincore.payment_providers'::regclass)) v(t);

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('audit_seal', 'fincore.audit_seal_step(interval)', 450, 'Chain the committed audit records of every tenant'),
    ('audit_digest', 'fincore.audit_digest_step(interval)', 460, 'A digest of each audit chain that moved, once per fincore.audit_digest_interval (an audit.digest event)');

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.audit_record_hash(bytea,uuid,bigint,timestamptz,bigint,text,text,uuid,text,text,text,bytea)', 'app'),
    ('fincore.audit_seal(uuid,integer)', 'trusted'),
    ('fincore.audit_digest(uuid)', 'app'),
    ('fincore.audit_verify(uuid,bigint,bigint,bytea)', 'app'),
    ('fincore.audit_proof(uuid,bigint,bigint)', 'app'),
    ('fincore.audit_redact(uuid,bigint,text)', 'app'),
    ('fincore.audit_retain(uuid,bigint)', 'trusted');

-- ---- Reconciliation (issue 21): sql/modules/recon.sql, as it is -----------------------------

-- ---------------------------------------------------------------------------
-- Reconciliation (docs/reconciliation.md): bank and processor statements
-- matched against the ledger, in integer minor units, set-based.
--
-- A source is a statement feed (a bank account, a processor's payouts) and
-- the ledger account it mirrors.  recon_import parses a statement exactly
-- (src/recon_parse.c) and stores each line once; recon_run loads what is
-- unmatched on both sides and matches it under the source's rules, in
-- priority order, in C (src/recon_engine.c).  A line or a ledger entry is in
-- at most one live match: the primary keys of recon_matched_lines and
-- recon_matched_entries say so, whatever path writes them.  Every writer of a
-- source's matches holds the source's row lock (FOR NO KEY UPDATE), so runs
-- from several sessions queue instead of racing.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.recon_sources (
    tenant_id    uuid        NOT NULL,
    name         text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    account_id   uuid        NOT NULL,      -- the ledger account the statements are of
    currency     text        NOT NULL,      -- the account's: for lines that name none
    -- The side of account_id a statement credit (money in) is on: 'debit' for an asset
    -- account such as a bank account, 'credit' for a liability.
    ledger_side  text        NOT NULL DEFAULT 'debit' CHECK (ledger_side IN ('debit', 'credit')),
    mapping      jsonb       NOT NULL DEFAULT '{}',   -- how its statements are read (docs/reconciliation.md)
    -- The transfer metadata keys that give a ledger entry's reference, external id,
    -- counterparty account and value date.
    ledger_keys  text[]      NOT NULL DEFAULT '{reference,external_id,account,value_date}'
                             CHECK (pg_catalog.cardinality(ledger_keys) = 4),
    break_after  interval    NOT NULL DEFAULT '3 days' CHECK (break_after >= '0'),
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, name),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.recon_sources IS
    'Statement sources of a tenant: the ledger account each mirrors, how its statements are read (mapping), which transfer metadata keys its entries match on, and when an unmatched line becomes a break. Written by fincore.recon_create_source().';

CREATE TABLE fincore.recon_rules (
    tenant_id     uuid     NOT NULL,
    source        text     NOT NULL,
    name          text     NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    priority      integer  NOT NULL,
    kind          text     NOT NULL CHECK (kind IN ('one_to_one', 'one_to_many', 'many_to_one', 'many_to_many')),
    match_on      text[]   NOT NULL DEFAULT '{}',   -- keys that must be equal, besides the currency
    tolerance     bigint   CHECK (tolerance >= 0),  -- minor units
    tolerance_bps integer  CHECK (tolerance_bps BETWEEN 0 AND 10000),
    date_window   integer  NOT NULL DEFAULT 0 CHECK (date_window BETWEEN 0 AND 366),
    min_similarity real    CHECK (min_similarity > 0 AND min_similarity <= 1),
    group_by      text     CHECK (group_by IN ('reference', 'external_id', 'account', 'date')),
    max_group     integer  NOT NULL DEFAULT 10 CHECK (max_group BETWEEN 2 AND 1000),
    outcome       text     NOT NULL DEFAULT 'confirmed' CHECK (outcome IN ('confirmed', 'suggested')),
    adjustment_account uuid,
    enabled       boolean  NOT NULL DEFAULT true,
    PRIMARY KEY (tenant_id, source, name),
    UNIQUE (tenant_id, source, priority),
    FOREIGN KEY (tenant_id, source) REFERENCES fincore.recon_sources (tenant_id, name) ON DELETE CASCADE,
    CHECK ((kind = 'one_to_one') = (group_by IS NULL))
);
COMMENT ON TABLE fincore.recon_rules IS
    'Matching rules of a source, run in priority order by fincore.recon_run(), each over what is still unmatched. Written by fincore.recon_set_rule().';

CREATE TABLE fincore.recon_imports (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    source      text        NOT NULL,
    format      text        NOT NULL,
    lines       bigint      NOT NULL,     -- lines in the statement
    stored      bigint      NOT NULL,     -- lines stored (the others were imported before)
    imported_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    imported_by text        NOT NULL DEFAULT CURRENT_USER,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, source) REFERENCES fincore.recon_sources (tenant_id, name) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.recon_imports IS 'Each fincore.recon_import() call: how many lines the statement had and how many were new.';

-- A statement line.  Its amount is in minor units of its currency, credit (money into
-- the account) positive.  Its id (docs/reconciliation.md, "Line ids") is a hash of its
-- source and its bank reference (bank_ref) when it has one, the bank's own id of the
-- transaction; otherwise the booking day, then a hash of the source, the parsed line and
-- its occurrence in its statement.  So a line imported again (the same bank reference, or
-- the same content) is stored once, by the primary key alone: one index to write per line.
CREATE TABLE fincore.recon_lines (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,
    source       text        COLLATE "C" NOT NULL,
    import_id    uuid        NOT NULL,
    line_no      bigint      NOT NULL,
    booked_on    date        NOT NULL,
    value_on     date,
    amount       bigint      NOT NULL,
    currency     text        NOT NULL,
    reference    text,
    bank_ref     text        COLLATE "C",
    external_id  text,
    account      text,
    description  text,
    break_reported_at timestamptz,   -- when its recon.break event was sent
    PRIMARY KEY (tenant_id, id)
);
COMMENT ON TABLE fincore.recon_lines IS
    'Statement lines, parsed exactly (amounts in minor units, credit positive); each stored once per source (its id: its bank reference, or its content). Written by fincore.recon_import().';

-- A batch of raw lines for fincore.recon_import(source, 'staging', batch): COPY-friendly
-- text columns, parsed as the source's mapping says; the import empties the batch.
CREATE TABLE fincore.recon_staging (
    tenant_id   uuid   NOT NULL,
    source      text   NOT NULL,
    batch       text   NOT NULL DEFAULT '',
    line_no     bigint NOT NULL,
    booked_on   text,
    value_on    text,
    amount      text,
    currency    text,
    indicator   text,
    debit       text,
    credit      text,
    reference   text,
    bank_ref    text,
    external_id text,
    account     text,
    description text
);
CREATE INDEX recon_staging_batch_idx ON fincore.recon_staging (tenant_id, source, batch, line_no);
COMMENT ON TABLE fincore.recon_staging IS
    'Raw statement lines loaded in bulk (COPY fincore.recon_staging (source, line_no, booked_on, amount, ...) FROM ...), then imported with fincore.recon_import(source, ''staging'', batch). App roles may INSERT here, under RLS.';

CREATE TABLE fincore.recon_matches (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,
    source       text        NOT NULL,
    run_id       uuid,                  -- NULL for a manual match
    rule         text,                  -- NULL for a manual match
    kind         text        NOT NULL CHECK (kind IN ('one_to_one', 'one_to_many', 'many_to_one', 'many_to_many')),
    status       text        NOT NULL CHECK (status IN ('confirmed', 'suggested', 'rejected', 'unmatched')),
    currency     text        NOT NULL,
    line_total   bigint      NOT NULL,
    entry_total  bigint      NOT NULL,
    adjustment_account uuid,            -- where the difference goes, once confirmed
    adjustment_id uuid,                 -- the transfer that posted it
    line_ids     uuid[]      NOT NULL,  -- its members (kept once it is no longer live)
    entry_ids    uuid[]      NOT NULL,  -- (transfer ids; an adjustment is adjustment_id)
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    decided_at   timestamptz,
    decided_by   text,
    note         text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX recon_matches_open_idx ON fincore.recon_matches (tenant_id, source, status)
    WHERE status IN ('suggested', 'rejected');
COMMENT ON TABLE fincore.recon_matches IS
    'Matches of statement lines with ledger entries: confirmed, suggested (to confirm or reject), rejected (never proposed again) or unmatched (undone). Live members are in recon_matched_lines and recon_matched_entries.';

-- The members of live matches: the primary keys let a line or entry be in one only.  A
-- match's members are found by its line_ids and entry_ids (no index by match: a run writes a
-- million matches, and each index is a write per member).
CREATE TABLE fincore.recon_matched_lines (
    tenant_id uuid NOT NULL,
    line_id   uuid NOT NULL,
    match_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, line_id)
);
CREATE TABLE fincore.recon_matched_entries (
    tenant_id   uuid NOT NULL,
    account_id  uuid NOT NULL,
    transfer_id uuid NOT NULL,
    match_id    uuid NOT NULL,
    PRIMARY KEY (tenant_id, account_id, transfer_id)
);
COMMENT ON TABLE fincore.recon_matched_lines IS 'The lines of live matches (confirmed or suggested): one match per line, by the primary key.';
COMMENT ON TABLE fincore.recon_matched_entries IS 'The ledger entries (a transfer, on the source''s account) of live matches: one match per entry, by the primary key.';

CREATE TABLE fincore.recon_runs (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    source      text        NOT NULL,
    import_id   uuid,
    dry_run     boolean     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    matched     bigint      NOT NULL,    -- confirmed matches made
    suggested   bigint      NOT NULL,
    adjustments bigint      NOT NULL,
    lines_unmatched   bigint NOT NULL,
    entries_unmatched bigint NOT NULL,
    breaks      bigint      NOT NULL,    -- recon.break events sent
    report      jsonb       NOT NULL,    -- counts per rule, unmatched amounts per currency, timings, memory
    PRIMARY KEY (tenant_id, id)
);
COMMENT ON TABLE fincore.recon_runs IS
    'Each fincore.recon_run() (dry runs are returned, not stored): what it matched and suggested, what is left unmatched per currency, and where its time went.';

SELECT fincore.protect('fincore.recon_sources');
SELECT fincore.protect('fincore.recon_rules');
SELECT fincore.protect('fincore.recon_imports');
SELECT fincore.protect('fincore.recon_lines');
SELECT fincore.protect('fincore.recon_staging');
SELECT fincore.protect('fincore.recon_matches');
SELECT fincore.protect('fincore.recon_matched_lines');
SELECT fincore.protect('fincore.recon_matched_entries');
SELECT fincore.protect('fincore.recon_runs');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_sources', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_rules', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_imports', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_lines', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_staging', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_matches', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_matched_lines', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_matched_entries', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.recon_runs', '');

-- ---------------------------------------------------------------------------
-- The C functions
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore._recon_mapping_check(mapping jsonb, currency text) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_recon_mapping_check';
COMMENT ON FUNCTION fincore._recon_mapping_check(jsonb, text) IS
    'Internal: ZFC01 unless a statement mapping is valid.';

-- A parsed line, as the parser returns it (a named type: Citus passes intermediate results as
-- text, which an anonymous record cannot be read back from).
CREATE TYPE fincore.recon_parsed_line AS (
    id uuid, line_no bigint, booked_on date, value_on date, amount bigint, currency text, reference text,
    bank_ref text, external_id text, account text, description text);
COMMENT ON TYPE fincore.recon_parsed_line IS 'A statement line as fincore._recon_parse() returns it, before it is stored.';

CREATE FUNCTION fincore._recon_parse(format text, data text, tenant uuid, source text, batch text, mapping jsonb,
        currency text)
    RETURNS SETOF fincore.recon_parsed_line
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_recon_parse';
REVOKE ALL ON FUNCTION fincore._recon_parse(text, text, uuid, text, text, jsonb, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_parse(text, text, uuid, text, text, jsonb, text) IS
    'Internal: the lines of a CSV statement (format csv, data) or of a staged batch (tenant, source, batch), parsed exactly by the mapping, in id order (ZFC03 naming the first malformed line). Writes nothing.';

CREATE FUNCTION fincore._recon_run_matches() RETURNS SETOF fincore.recon_matches
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_recon_run_matches';
CREATE FUNCTION fincore._recon_run_matched_lines() RETURNS SETOF fincore.recon_matched_lines
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_recon_run_matched_lines';
CREATE FUNCTION fincore._recon_run_matched_entries() RETURNS SETOF fincore.recon_matched_entries
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_recon_run_matched_entries';
REVOKE ALL ON FUNCTION fincore._recon_run_matches() FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore._recon_run_matched_lines() FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore._recon_run_matched_entries() FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_run_matches() IS
    'Internal: the match rows of the run being written (fincore._recon_match inserts them through it); none outside a run.';
COMMENT ON FUNCTION fincore._recon_run_matched_lines() IS
    'Internal: the matched lines of the run being written; none outside a run.';
COMMENT ON FUNCTION fincore._recon_run_matched_entries() IS
    'Internal: the matched entries of the run being written; none outside a run.';

CREATE FUNCTION fincore._recon_match(tenant uuid, source text, account uuid, side text, ledger_keys text[],
        import_id uuid, run_id uuid, dry_run boolean, progress boolean, break_before date)
    RETURNS jsonb
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_recon_match';
REVOKE ALL ON FUNCTION fincore._recon_match(uuid, text, uuid, text, text[], uuid, uuid, boolean, boolean, date) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_match(uuid, text, uuid, text, text[], uuid, uuid, boolean, boolean, date) IS
    'Internal (fincore.recon_run, which holds the source''s lock): matches the unmatched lines and entries of a source under its rules and, unless dry_run, writes the matches and reports the breaks (lines booked before break_before, still unmatched, not reported yet); returns the counts and timings.';

-- ---------------------------------------------------------------------------
-- Configuration
-- ---------------------------------------------------------------------------

-- The tenant's source, locked against other writers of its matches; ZFC02 if there is none.
CREATE FUNCTION fincore._recon_source_lock(tenant uuid, source text) RETURNS fincore.recon_sources
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    s fincore.recon_sources;
BEGIN
    SELECT * INTO s FROM fincore.recon_sources x WHERE x.tenant_id = tenant AND x.name = source FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reconciliation source % not found', coalesce(pg_catalog.quote_literal(source), 'NULL')
            USING ERRCODE = 'ZFC02', HINT = 'Create it with fincore.recon_create_source().';
    END IF;
    RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._recon_source_lock(uuid, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_source_lock(uuid, text) IS
    'Internal: the tenant''s source, locked (FOR NO KEY UPDATE): its imports, runs and match decisions run one at a time. ZFC02.';

CREATE FUNCTION fincore.recon_create_source(name text, account_id uuid, mapping jsonb DEFAULT '{}',
        ledger_side text DEFAULT 'debit',
        ledger_keys text[] DEFAULT '{reference,external_id,account,value_date}',
        break_after interval DEFAULT '3 days')
    RETURNS fincore.recon_sources
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    cur text;
    s fincore.recon_sources;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid reconciliation source name %', coalesce(pg_catalog.quote_literal(name), 'NULL')
            USING ERRCODE = 'ZFC01', HINT = 'A name is 1 to 63 of a-z, 0-9, _ and -, starting with a letter.';
    END IF;
    IF ledger_side IS NULL OR ledger_side NOT IN ('debit', 'credit') THEN
        RAISE EXCEPTION 'invalid ledger side %', coalesce(pg_catalog.quote_literal(ledger_side), 'NULL')
            USING ERRCODE = 'ZFC01',
                  HINT = 'The side of the account a statement credit is on: debit (an asset, such as a bank account) or credit.';
    END IF;
    IF ledger_keys IS NULL OR pg_catalog.cardinality(ledger_keys) <> 4 OR pg_catalog.array_ndims(ledger_keys) <> 1 THEN
        RAISE EXCEPTION 'invalid ledger keys %', coalesce(ledger_keys::text, 'NULL')
            USING ERRCODE = 'ZFC01',
                  HINT = 'Four transfer metadata keys: reference, external id, counterparty account and value date (NULL: none).';
    END IF;
    IF break_after IS NULL OR break_after < '0' THEN
        RAISE EXCEPTION 'invalid break_after %', coalesce(break_after::text, 'NULL') USING ERRCODE = 'ZFC01';
    END IF;
    SELECT a.currency INTO cur FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % not found', coalesce(account_id::text, 'NULL')
            USING ERRCODE = 'ZF301', HINT = 'A source mirrors one of the tenant''s ledger accounts.';
    END IF;
    PERFORM fincore._recon_mapping_check(mapping, cur);
    INSERT INTO fincore.recon_sources AS x (tenant_id, name, account_id, currency, ledger_side, mapping, ledger_keys, break_after)
    VALUES (tenant, name, account_id, cur, ledger_side, mapping, ledger_keys, break_after)
    ON CONFLICT ON CONSTRAINT recon_sources_pkey DO UPDATE
       SET account_id = excluded.account_id, currency = excluded.currency, ledger_side = excluded.ledger_side,
           mapping = excluded.mapping, ledger_keys = excluded.ledger_keys, break_after = excluded.break_after
    RETURNING * INTO s;
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION fincore.recon_create_source(text, uuid, jsonb, text, text[], interval) IS
    'Creates (or updates) a statement source of the current tenant: the ledger account it mirrors, the side of it a statement credit is on, the statement mapping, the transfer metadata keys its entries match on, and the age at which an unmatched line is a break. Tenant admins only (ZF803). ZFC01, ZF301.';

CREATE FUNCTION fincore.recon_set_rule(source text, name text, priority integer, kind text DEFAULT 'one_to_one',
        match_on text[] DEFAULT '{}', tolerance bigint DEFAULT NULL, tolerance_bps integer DEFAULT NULL,
        date_window integer DEFAULT 0, min_similarity real DEFAULT NULL, group_by text DEFAULT NULL,
        max_group integer DEFAULT 10, outcome text DEFAULT 'confirmed', adjustment_account uuid DEFAULT NULL,
        enabled boolean DEFAULT true)
    RETURNS fincore.recon_rules
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    src fincore.recon_sources;
    r fincore.recon_rules;
    cur text;
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    src := fincore._recon_source_lock(tenant, source);
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid rule name %', coalesce(pg_catalog.quote_literal(name), 'NULL')
            USING ERRCODE = 'ZFC04', HINT = 'A name is 1 to 63 of a-z, 0-9, _ and -, starting with a letter.';
    END IF;
    IF priority IS NULL OR enabled IS NULL THEN
        RAISE EXCEPTION 'invalid rule %: priority and enabled are required', name USING ERRCODE = 'ZFC04';
    END IF;
    IF kind IS NULL OR kind NOT IN ('one_to_one', 'one_to_many', 'many_to_one', 'many_to_many') THEN
        RAISE EXCEPTION 'invalid rule %: kind %', name, coalesce(pg_catalog.quote_literal(kind), 'NULL')
            USING ERRCODE = 'ZFC04', HINT = 'one_to_one, one_to_many, many_to_one or many_to_many.';
    END IF;
    IF match_on IS NULL OR pg_catalog.array_position(match_on, NULL) IS NOT NULL
       OR NOT match_on <@ '{reference,external_id,account}'::text[] THEN
        RAISE EXCEPTION 'invalid rule %: match_on %', name, coalesce(match_on::text, 'NULL')
            USING ERRCODE = 'ZFC04', HINT = 'Keys from reference, external_id and account (the currency always matches).';
    END IF;
    IF (tolerance IS NOT NULL AND tolerance < 0) OR (tolerance_bps IS NOT NULL AND tolerance_bps NOT BETWEEN 0 AND 10000) THEN
        RAISE EXCEPTION 'invalid rule %: tolerance % and tolerance_bps %', name, tolerance, tolerance_bps
            USING ERRCODE = 'ZFC04', HINT = 'A tolerance is >= 0 minor units; tolerance_bps 0 to 10000 basis points of the line''s amount.';
    END IF;
    IF date_window IS NULL OR date_window NOT BETWEEN 0 AND 366 THEN
        RAISE EXCEPTION 'invalid rule %: date_window %', name, coalesce(date_window::text, 'NULL')
            USING ERRCODE = 'ZFC04', HINT = 'Days between a line''s and an entry''s dates: 0 to 366.';
    END IF;
    IF min_similarity IS NOT NULL AND NOT (min_similarity > 0 AND min_similarity <= 1) THEN
        RAISE EXCEPTION 'invalid rule %: min_similarity %', name, min_similarity
            USING ERRCODE = 'ZFC04', HINT = 'pg_trgm''s similarity of the references, above 0 and at most 1.';
    END IF;
    IF min_similarity IS NOT NULL AND kind <> 'one_to_one' THEN
        RAISE EXCEPTION 'invalid rule %: min_similarity applies to one_to_one rules', name USING ERRCODE = 'ZFC04';
    END IF;
    IF (kind = 'one_to_one') <> (group_by IS NULL)
       OR (group_by IS NOT NULL AND group_by NOT IN ('reference', 'external_id', 'account', 'date')) THEN
        RAISE EXCEPTION 'invalid rule %: group_by %', name, coalesce(pg_catalog.quote_literal(group_by), 'NULL')
            USING ERRCODE = 'ZFC04',
                  HINT = 'The many-sided kinds group by reference, external_id, account or date; one_to_one takes none.';
    END IF;
    IF max_group IS NULL OR max_group NOT BETWEEN 2 AND 1000 THEN
        RAISE EXCEPTION 'invalid rule %: max_group %', name, coalesce(max_group::text, 'NULL')
            USING ERRCODE = 'ZFC04', HINT = 'The most items on a many side: 2 to 1000.';
    END IF;
    IF outcome IS NULL OR outcome NOT IN ('confirmed', 'suggested') THEN
        RAISE EXCEPTION 'invalid rule %: outcome %', name, coalesce(pg_catalog.quote_literal(outcome), 'NULL')
            USING ERRCODE = 'ZFC04', HINT = 'confirmed, or suggested (for a person to confirm or reject).';
    END IF;
    IF adjustment_account IS NOT NULL THEN
        SELECT a.currency INTO cur FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = adjustment_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found', adjustment_account
                USING ERRCODE = 'ZF301', HINT = 'The adjustment account is one of the tenant''s ledger accounts.';
        END IF;
        IF cur <> src.currency THEN
            RAISE EXCEPTION 'adjustment account % is in %, source % in %', adjustment_account, cur, source, src.currency
                USING ERRCODE = 'ZF103';
        END IF;
    END IF;
    INSERT INTO fincore.recon_rules AS x (tenant_id, source, name, priority, kind, match_on, tolerance, tolerance_bps,
                                          date_window, min_similarity, group_by, max_group, outcome,
                                          adjustment_account, enabled)
    VALUES (tenant, source, name, priority, kind, match_on, tolerance, tolerance_bps, date_window, min_similarity,
            group_by, max_group, outcome, adjustment_account, enabled)
    ON CONFLICT ON CONSTRAINT recon_rules_pkey DO UPDATE
       SET priority = excluded.priority, kind = excluded.kind, match_on = excluded.match_on,
           tolerance = excluded.tolerance, tolerance_bps = excluded.tolerance_bps, date_window = excluded.date_window,
           min_similarity = excluded.min_similarity, group_by = excluded.group_by, max_group = excluded.max_group,
           outcome = excluded.outcome, adjustment_account = excluded.adjustment_account, enabled = excluded.enabled
    RETURNING * INTO r;
    RETURN r;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'invalid rule %: source % has another rule at priority %', name, source, priority
        USING ERRCODE = 'ZFC04', HINT = 'Each rule of a source has its own priority.';
END
$fn$;
COMMENT ON FUNCTION fincore.recon_set_rule(text, text, integer, text, text[], bigint, integer, integer, real, text, integer, text, uuid, boolean) IS
    'Creates (or updates) a matching rule of a source: its kind, the keys that must be equal, the amount tolerance (minor units and/or basis points: the stricter when both), the date window in days, the reference similarity (pg_trgm), the grouping key and group size of the many-sided kinds, whether its matches are confirmed or suggested, and the account a confirmed difference is posted to. Tenant admins only (ZF803). ZFC02, ZFC04, ZF301, ZF103.';

CREATE FUNCTION fincore.recon_drop_rule(source text, name text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
BEGIN
    PERFORM fincore.require_limits_admin(tenant);
    PERFORM fincore._recon_source_lock(tenant, source);
    DELETE FROM fincore.recon_rules r WHERE r.tenant_id = tenant AND r.source = source AND r.name = name;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION fincore.recon_drop_rule(text, text) IS
    'Drops a source''s rule; false if it had none of that name. Tenant admins only (ZF803). ZFC02.';

-- ---------------------------------------------------------------------------
-- Import
-- ---------------------------------------------------------------------------

-- camt.053: the entries (Ntry) of every statement (Stmt) in the document, by local names
-- (any version of the schema's namespace): booking and value dates, the amount with its
-- currency and credit/debit indicator, the bank's reference (AcctSvcrRef), the end-to-end
-- id, the remittance information and the counterparty's IBAN.
CREATE FUNCTION fincore._recon_camt053_staging(tenant uuid, source text, batch text, doc xml) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO fincore.recon_staging (tenant_id, source, batch, line_no, booked_on, value_on, amount, currency,
                                       indicator, reference, bank_ref, external_id, account, description)
    SELECT tenant, source, batch, e.n, coalesce(e.booked, e.booked_tm), coalesce(e.value_on, e.value_tm),
           e.amount, e.currency, e.cdi,
           coalesce(nullif(e.e2e, 'NOTPROVIDED'), e.ustrd), e.svcr, e.e2e, coalesce(e.dbtr_iban, e.cdtr_iban), e.ustrd
      FROM XMLTABLE('//*[local-name()="Ntry"]' PASSING doc
                    COLUMNS n FOR ORDINALITY,
                            amount text PATH '*[local-name()="Amt"]',
                            currency text PATH '*[local-name()="Amt"]/@Ccy',
                            cdi text PATH '*[local-name()="CdtDbtInd"]',
                            booked text PATH '*[local-name()="BookgDt"]/*[local-name()="Dt"]',
                            booked_tm text PATH '*[local-name()="BookgDt"]/*[local-name()="DtTm"]',
                            value_on text PATH '*[local-name()="ValDt"]/*[local-name()="Dt"]',
                            value_tm text PATH '*[local-name()="ValDt"]/*[local-name()="DtTm"]',
                            svcr text PATH '*[local-name()="AcctSvcrRef"]',
                            e2e text PATH '(.//*[local-name()="Refs"]/*[local-name()="EndToEndId"])[1]',
                            ustrd text PATH '(.//*[local-name()="RmtInf"]/*[local-name()="Ustrd"])[1]',
                            dbtr_iban text PATH '(.//*[local-name()="RltdPties"]/*[local-name()="DbtrAcct"]//*[local-name()="IBAN"])[1]',
                            cdtr_iban text PATH '(.//*[local-name()="RltdPties"]/*[local-name()="CdtrAcct"]//*[local-name()="IBAN"])[1]') e;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._recon_camt053_staging(uuid, text, text, xml) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_camt053_staging(uuid, text, text, xml) IS
    'Internal: stages the entries of a camt.053 document (any schema version) as raw lines of a batch.';

CREATE FUNCTION fincore.recon_import(source text, format text, data text) RETURNS fincore.recon_imports
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    src fincore.recon_sources;
    imp fincore.recon_imports;
    batch text;
    mapping jsonb;
    doc xml;
    n bigint;
BEGIN
    src := fincore._recon_source_lock(tenant, source);
    imp.tenant_id := tenant;
    imp.id := fincore.uuidv7();
    imp.source := source;
    imp.format := format;
    imp.imported_at := pg_catalog.now();
    imp.imported_by := CURRENT_USER;
    IF format IS NULL OR format NOT IN ('csv', 'camt053', 'json', 'staging') THEN
        RAISE EXCEPTION 'invalid statement format %', coalesce(pg_catalog.quote_literal(format), 'NULL')
            USING ERRCODE = 'ZFC01', HINT = 'csv, camt053, json, or staging (data names the staged batch).';
    END IF;
    IF data IS NULL AND format <> 'staging' THEN
        RAISE EXCEPTION 'no statement to import' USING ERRCODE = 'ZFC03';
    END IF;

    IF format <> 'csv' THEN
        IF format = 'staging' THEN
            batch := coalesce(data, '');
            mapping := src.mapping;
        ELSE
            -- camt.053 and JSON are staged as a batch of their own, then imported as one
            batch := 'import:' || imp.id::text;
            IF format = 'camt053' THEN
                BEGIN
                    doc := XMLPARSE(DOCUMENT data);
                EXCEPTION WHEN OTHERS THEN
                    RAISE EXCEPTION 'the camt.053 statement is not a well-formed XML document'
                        USING ERRCODE = 'ZFC03', DETAIL = SQLERRM;
                END;
                IF NOT XMLEXISTS('/*[local-name()="Document"]/*[local-name()="BkToCstmrStmt"]' PASSING doc) THEN
                    RAISE EXCEPTION 'the XML document is not a camt.053 statement (no Document/BkToCstmrStmt)'
                        USING ERRCODE = 'ZFC03';
                END IF;
                PERFORM fincore._recon_camt053_staging(tenant, source, batch, doc);
                mapping := '{"date_format": "YYYY-MM-DD", "decimal": ".", "credit_values": ["CRDT"], "debit_values": ["DBIT"]}';
            ELSE
                PERFORM fincore._recon_json_staging(tenant, source, batch, data);
                -- JSON's numbers have a decimal point; dates and indicators as the source says
                mapping := src.mapping - 'columns' - 'delimiter' - 'header' - 'decimal';
            END IF;
        END IF;
    END IF;

    -- A new statement's lines are all new: stored without ON CONFLICT, which would probe both
    -- unique indexes for every line before inserting it (a third of an import's time).  A
    -- line stored before makes the insert fail; the import then stores only the lines not
    -- stored yet.  Imports of a source hold its lock: no other writer races them.  The parser
    -- is called in a select list, which streams its lines (in FROM they would be copied into
    -- a tuple store first).  On Citus a shard's duplicate key comes back as an internal error,
    -- not unique_violation: there the import goes straight to ON CONFLICT.
    BEGIN
        IF pg_catalog.current_setting('citus.version', true) IS NOT NULL THEN
            RAISE SQLSTATE '23505';
        END IF;
        INSERT INTO fincore.recon_lines (tenant_id, id, source, import_id, line_no, booked_on, value_on, amount,
                                         currency, reference, bank_ref, external_id, account, description)
        SELECT tenant, (p.l).id, source, imp.id, (p.l).line_no, (p.l).booked_on, (p.l).value_on, (p.l).amount,
               (p.l).currency, (p.l).reference, (p.l).bank_ref, (p.l).external_id, (p.l).account, (p.l).description
          FROM (SELECT fincore._recon_parse(format, data, tenant, source, batch, coalesce(mapping, src.mapping),
                                            src.currency) AS l
                OFFSET 0) p;
        GET DIAGNOSTICS n = ROW_COUNT;
        imp.lines := n;
        imp.stored := n;
    EXCEPTION WHEN unique_violation THEN
        WITH parsed AS MATERIALIZED (
                SELECT fincore._recon_parse(format, data, tenant, source, batch, coalesce(mapping, src.mapping),
                                            src.currency) AS l
                OFFSET 0),
             stored AS (
                INSERT INTO fincore.recon_lines (tenant_id, id, source, import_id, line_no, booked_on, value_on,
                                                 amount, currency, reference, bank_ref, external_id, account,
                                                 description)
                SELECT tenant, (p.l).id, source, imp.id, (p.l).line_no, (p.l).booked_on, (p.l).value_on,
                       (p.l).amount, (p.l).currency, (p.l).reference, (p.l).bank_ref, (p.l).external_id,
                       (p.l).account, (p.l).description
                  FROM parsed p
                ON CONFLICT DO NOTHING
                RETURNING 1)
        SELECT (SELECT pg_catalog.count(*) FROM parsed), (SELECT pg_catalog.count(*) FROM stored)
          INTO imp.lines, imp.stored;
    END;
    IF format <> 'csv' THEN
        DELETE FROM fincore.recon_staging s WHERE s.tenant_id = tenant AND s.source = source AND s.batch = batch;
    END IF;
    INSERT INTO fincore.recon_imports (tenant_id, id, source, format, lines, stored, imported_at, imported_by)
    VALUES (imp.tenant_id, imp.id, imp.source, imp.format, imp.lines, imp.stored, imp.imported_at, imp.imported_by);
    RETURN imp;
END
$fn$;
COMMENT ON FUNCTION fincore.recon_import(text, text, text) IS
    'Imports a statement of a source: csv (read by the source''s mapping), camt053 (ISO 20022 bank statement XML), json (an array of objects with the fields'' names) or staging (data: the batch of fincore.recon_staging to import). Amounts are parsed exactly into minor units; a line already stored (same content, or same bank reference) is stored once. A malformed line refuses the whole import (ZFC03, naming its line number). ZFC01, ZFC02, ZFC03.';

CREATE FUNCTION fincore._recon_json_staging(tenant uuid, source text, batch text, data text) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    doc jsonb;
    bad text;
    n bigint;
BEGIN
    BEGIN
        doc := data::jsonb;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'the JSON statement is not valid JSON' USING ERRCODE = 'ZFC03', DETAIL = SQLERRM;
    END;
    IF pg_catalog.jsonb_typeof(doc) <> 'array' THEN
        RAISE EXCEPTION 'a JSON statement is an array of lines (objects), not %', pg_catalog.jsonb_typeof(doc)
            USING ERRCODE = 'ZFC03';
    END IF;
    SELECT pg_catalog.format('line %s: %s', e.n, CASE WHEN pg_catalog.jsonb_typeof(e.v) <> 'object' THEN 'not an object'
                             ELSE 'unknown field ' || (SELECT pg_catalog.min(k) FROM pg_catalog.jsonb_object_keys(e.v) k
                                                        WHERE k <> ALL ('{booked_on,value_on,amount,currency,indicator,debit,credit,reference,bank_ref,external_id,account,description}'::text[])) END)
      INTO bad
      FROM pg_catalog.jsonb_array_elements(doc) WITH ORDINALITY AS e(v, n)
     WHERE pg_catalog.jsonb_typeof(e.v) <> 'object'
        OR EXISTS (SELECT FROM pg_catalog.jsonb_object_keys(e.v) k
                    WHERE k <> ALL ('{booked_on,value_on,amount,currency,indicator,debit,credit,reference,bank_ref,external_id,account,description}'::text[]))
     ORDER BY e.n LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION '%', bad USING ERRCODE = 'ZFC03',
            HINT = 'A line''s fields: booked_on, value_on, amount, currency, indicator, debit, credit, reference, bank_ref, external_id, account, description.';
    END IF;
    INSERT INTO fincore.recon_staging (tenant_id, source, batch, line_no, booked_on, value_on, amount, currency,
                                       indicator, debit, credit, reference, bank_ref, external_id, account, description)
    SELECT tenant, source, batch, e.n, e.v->>'booked_on', e.v->>'value_on', e.v->>'amount', e.v->>'currency',
           e.v->>'indicator', e.v->>'debit', e.v->>'credit', e.v->>'reference', e.v->>'bank_ref',
           e.v->>'external_id', e.v->>'account', e.v->>'description'
      FROM pg_catalog.jsonb_array_elements(doc) WITH ORDINALITY AS e(v, n);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._recon_json_staging(uuid, text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_json_staging(uuid, text, text, text) IS
    'Internal: stages a JSON statement (an array of objects with the fields'' names) as raw lines of a batch.';

-- ---------------------------------------------------------------------------
-- Runs
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.recon_run(source text, import_id uuid DEFAULT NULL, dry_run boolean DEFAULT false,
        progress boolean DEFAULT NULL)
    RETURNS fincore.recon_runs
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    src fincore.recon_sources;
    run fincore.recon_runs;
    report jsonb;
    n bigint;
BEGIN
    IF dry_run IS NULL THEN
        RAISE EXCEPTION 'dry_run must be true or false' USING ERRCODE = 'ZFC01';
    END IF;
    src := fincore._recon_source_lock(tenant, source);
    run.tenant_id := tenant;
    run.id := fincore.uuidv7();
    run.source := source;
    run.import_id := import_id;
    run.dry_run := dry_run;
    run.started_at := pg_catalog.clock_timestamp();
    -- progress: NOTICEs per phase and rule; by default for runs of a lot of lines
    IF progress IS NULL THEN
        SELECT pg_catalog.count(*) >= 100000 INTO progress
          FROM (SELECT FROM fincore.recon_lines l WHERE l.tenant_id = tenant AND l.source = source LIMIT 100000) x;
    END IF;
    report := fincore._recon_match(tenant, source, src.account_id, src.ledger_side, src.ledger_keys, import_id,
                                   run.id, dry_run, progress, (pg_catalog.now() - src.break_after)::date);
    run.matched := (report->>'matched')::bigint;
    run.suggested := (report->>'suggested')::bigint;
    run.lines_unmatched := (report->>'lines_unmatched')::bigint;
    run.entries_unmatched := (report->>'entries_unmatched')::bigint;
    run.breaks := (report->>'breaks')::bigint;
    run.adjustments := 0;
    IF NOT dry_run AND (report->>'adjustments')::bigint > 0 THEN
        -- the difference of each confirmed match whose rule names an account
        run.adjustments := fincore._recon_post_adjustments(tenant, src, run.id, NULL);
    END IF;
    run.finished_at := pg_catalog.clock_timestamp();
    run.report := report || pg_catalog.jsonb_build_object('ms', (EXTRACT(epoch FROM run.finished_at - run.started_at) * 1000)::bigint);
    IF NOT dry_run THEN
        INSERT INTO fincore.recon_runs VALUES (run.*);
        PERFORM fincore.emit('recon', 'recon.run_completed', 'recon_source', source,
                             pg_catalog.jsonb_build_object('run_id', run.id, 'source', source, 'import_id', import_id,
                                                           'matched', run.matched, 'suggested', run.suggested,
                                                           'adjustments', run.adjustments,
                                                           'lines_unmatched', run.lines_unmatched,
                                                           'entries_unmatched', run.entries_unmatched,
                                                           'unmatched', report->'unmatched', 'breaks', run.breaks));
    END IF;
    RETURN run;
END
$fn$;
COMMENT ON FUNCTION fincore.recon_run(text, uuid, boolean, boolean) IS
    'Matches a source''s unmatched statement lines (of one import, or all) with its unmatched ledger entries under its rules, in priority order; confirmed matches with a difference post an adjustment when their rule names an account; lines unmatched for longer than break_after are reported once (recon.break events). dry_run: the same counts, nothing written. progress (default: for 100,000 lines or more): NOTICEs per phase and rule. Returns the counts, unmatched amounts per currency, and timings. ZFC02, ZFC09.';

-- Post the adjustment of confirmed matches (of a run, or one match) and make it a member.
CREATE FUNCTION fincore._recon_post_adjustments(tenant uuid, src fincore.recon_sources, run uuid, match uuid)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    items fincore.transfer_request[];
    bad record;
    n bigint := 0;
    chunk integer := 1000;
    m record;
BEGIN
    -- The ledger must move the difference (statement minus ledger) into the account on the
    -- side a statement credit is on: a positive difference debits a 'debit' source's account.
    FOR m IN
        SELECT x.id, x.adjustment_id, x.adjustment_account, x.line_total - x.entry_total AS diff
          FROM fincore.recon_matches x
         WHERE x.tenant_id = tenant AND x.source = src.name AND x.adjustment_id IS NOT NULL AND x.status = 'confirmed'
           AND (x.run_id = run OR x.id = match)
           AND NOT EXISTS (SELECT FROM fincore.recon_matched_entries e
                            WHERE e.tenant_id = tenant AND e.account_id = src.account_id AND e.transfer_id = x.adjustment_id)
         ORDER BY x.id
    LOOP
        items := coalesce(items, '{}') || ROW(m.adjustment_id,
            CASE WHEN (m.diff > 0) = (src.ledger_side = 'debit') THEN src.account_id ELSE m.adjustment_account END,
            CASE WHEN (m.diff > 0) = (src.ledger_side = 'debit') THEN m.adjustment_account ELSE src.account_id END,
            abs(m.diff), 0, false, NULL, NULL, NULL, NULL, false,
            pg_catalog.jsonb_build_object('recon_match', m.id, 'recon_source', src.name),
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::fincore.transfer_request;
        IF pg_catalog.cardinality(items) >= chunk THEN
            n := n + fincore._recon_create_adjustments(items);
            items := NULL;
        END IF;
    END LOOP;
    IF items IS NOT NULL THEN
        n := n + fincore._recon_create_adjustments(items);
    END IF;
    INSERT INTO fincore.recon_matched_entries (tenant_id, account_id, transfer_id, match_id)
    SELECT tenant, src.account_id, x.adjustment_id, x.id
      FROM fincore.recon_matches x
     WHERE x.tenant_id = tenant AND x.source = src.name AND x.adjustment_id IS NOT NULL AND x.status = 'confirmed'
       AND (x.run_id = run OR x.id = match)
    ON CONFLICT DO NOTHING;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._recon_post_adjustments(uuid, fincore.recon_sources, uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_post_adjustments(uuid, fincore.recon_sources, uuid, uuid) IS
    'Internal: posts the adjustment transfers of confirmed matches with a difference (of a run, or one match) and makes each a member of its match.';

CREATE FUNCTION fincore._recon_create_adjustments(items fincore.transfer_request[]) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    bad record;
BEGIN
    SELECT r.index, r.id, r.result INTO bad FROM fincore.create_transfers(items) r
     WHERE r.result NOT IN ('ok', 'exists') ORDER BY r.index LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the ledger refused adjustment % (%)', bad.id, bad.result
            USING ERRCODE = 'ZFC08', HINT = 'The source''s account or the rule''s adjustment account does not allow it.';
    END IF;
    RETURN pg_catalog.cardinality(items);
END
$fn$;
REVOKE ALL ON FUNCTION fincore._recon_create_adjustments(fincore.transfer_request[]) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_create_adjustments(fincore.transfer_request[]) IS
    'Internal: creates adjustment transfers, or ZFC08 naming the first the ledger refused.';

-- Breaks: lines unmatched for longer than the source's break_after, each reported once.  The
-- run finds them among the lines it loaded (the unmatched ones), so a run never scans the
-- source's matched history for them.
CREATE FUNCTION fincore._recon_breaks(tenant uuid, source text, line_ids uuid[]) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    d record;
    n bigint := 0;
BEGIN
    -- The lines marked in one statement (on Citus, the tenant's shard's), the events written
    -- here (the outbox is the coordinator's).
    FOR d IN
        UPDATE fincore.recon_lines l SET break_reported_at = pg_catalog.now()
         WHERE l.tenant_id = tenant AND l.id = ANY (line_ids) AND l.break_reported_at IS NULL
        RETURNING l.id, l.booked_on, l.amount, l.currency, l.reference, l.bank_ref
    LOOP
        PERFORM fincore.emit('recon', 'recon.break', 'recon_line', d.id::text,
                             pg_catalog.jsonb_build_object('line_id', d.id, 'source', source, 'booked_on', d.booked_on,
                                                           'amount', d.amount, 'currency', d.currency,
                                                           'reference', d.reference, 'bank_ref', d.bank_ref));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._recon_breaks(uuid, text, uuid[]) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_breaks(uuid, text, uuid[]) IS
    'Internal (fincore._recon_match): a recon.break event for each of the lines not reported yet, which it marks reported.';

-- ---------------------------------------------------------------------------
-- Decisions
-- ---------------------------------------------------------------------------

-- The tenant's match, read with its source locked; ZFC05 if there is none.
CREATE FUNCTION fincore._recon_match_lock(tenant uuid, match_id uuid) RETURNS fincore.recon_matches
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    m fincore.recon_matches;
BEGIN
    SELECT * INTO m FROM fincore.recon_matches x WHERE x.tenant_id = tenant AND x.id = match_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reconciliation match % not found', coalesce(match_id::text, 'NULL')
            USING ERRCODE = 'ZFC05', HINT = 'Matches are visible only in their own tenant.';
    END IF;
    PERFORM fincore._recon_source_lock(tenant, m.source);
    SELECT * INTO m FROM fincore.recon_matches x WHERE x.tenant_id = tenant AND x.id = match_id;
    RETURN m;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._recon_match_lock(uuid, uuid) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_match_lock(uuid, uuid) IS
    'Internal: a match of the tenant, read again once its source''s lock is held. ZFC05.';

CREATE FUNCTION fincore.recon_confirm(match_id uuid, note text DEFAULT NULL) RETURNS fincore.recon_matches
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    m fincore.recon_matches := fincore._recon_match_lock(tenant, match_id);
    acc uuid;
    adjustment uuid;
BEGIN
    IF m.status = 'confirmed' THEN
        RETURN m;               -- confirming twice is confirming once
    END IF;
    IF m.status <> 'suggested' THEN
        RAISE EXCEPTION 'reconciliation match % is %, not suggested', match_id, m.status
            USING ERRCODE = 'ZFC06', HINT = 'Only a suggested match can be confirmed; match the items again with fincore.recon_match().';
    END IF;
    acc := coalesce(m.adjustment_account,
                    (SELECT r.adjustment_account FROM fincore.recon_rules r
                      WHERE r.tenant_id = tenant AND r.source = m.source AND r.name = m.rule));
    -- (the adjustment's id made here: Citus takes no volatile function in an UPDATE)
    IF acc IS NOT NULL AND m.line_total <> m.entry_total THEN
        adjustment := fincore.uuidv7();
    END IF;
    UPDATE fincore.recon_matches x
       SET status = 'confirmed', decided_at = pg_catalog.now(), decided_by = CURRENT_USER, note = coalesce(note, x.note),
           adjustment_account = CASE WHEN adjustment IS NOT NULL THEN acc END, adjustment_id = adjustment
     WHERE x.tenant_id = tenant AND x.id = match_id
    RETURNING * INTO m;
    IF m.adjustment_id IS NOT NULL THEN
        PERFORM fincore._recon_post_adjustments(tenant, fincore._recon_source_lock(tenant, m.source), NULL, match_id);
    END IF;
    PERFORM fincore.emit('recon', 'recon.match_confirmed', 'recon_match', match_id::text,
                         pg_catalog.jsonb_build_object('match_id', match_id, 'source', m.source,
                                                       'adjustment_id', m.adjustment_id));
    RETURN m;
END
$fn$;
COMMENT ON FUNCTION fincore.recon_confirm(uuid, text) IS
    'Confirms a suggested match (a confirmed one is returned as it is); a difference is posted as an adjustment when its rule names an account. ZFC05, ZFC06.';

-- Undo a live match: its members become unmatched, its ids kept on the row.
CREATE FUNCTION fincore._recon_release(tenant uuid, m fincore.recon_matches, status text, note text)
    RETURNS fincore.recon_matches
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    account uuid;
    r fincore.recon_matches;
BEGIN
    SELECT s.account_id INTO account FROM fincore.recon_sources s WHERE s.tenant_id = tenant AND s.name = m.source;
    DELETE FROM fincore.recon_matched_lines x WHERE x.tenant_id = tenant AND x.line_id = ANY (m.line_ids) AND x.match_id = m.id;
    -- an adjustment the match posted stays in the ledger; it leaves the match with the rest
    DELETE FROM fincore.recon_matched_entries x
     WHERE x.tenant_id = tenant AND x.account_id = account AND x.transfer_id = ANY (m.entry_ids || m.adjustment_id)
       AND x.match_id = m.id;
    UPDATE fincore.recon_matches x
       SET status = _recon_release.status, decided_at = pg_catalog.now(), decided_by = CURRENT_USER,
           note = coalesce(_recon_release.note, x.note)
     WHERE x.tenant_id = tenant AND x.id = m.id
    RETURNING * INTO r;
    PERFORM fincore.emit('recon', 'recon.match_' || status, 'recon_match', m.id::text,
                         pg_catalog.jsonb_build_object('match_id', m.id, 'source', m.source, 'note', note));
    RETURN r;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._recon_release(uuid, fincore.recon_matches, text, text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._recon_release(uuid, fincore.recon_matches, text, text) IS
    'Internal: ends a live match (rejected or unmatched): its lines and entries are unmatched again.';

CREATE FUNCTION fincore.recon_reject(match_id uuid, note text DEFAULT NULL) RETURNS fincore.recon_matches
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    m fincore.recon_matches := fincore._recon_match_lock(tenant, match_id);
BEGIN
    IF m.status = 'rejected' THEN
        RETURN m;               -- rejecting twice is rejecting once
    END IF;
    IF m.status <> 'suggested' THEN
        RAISE EXCEPTION 'reconciliation match % is %, not suggested', match_id, m.status
            USING ERRCODE = 'ZFC06', HINT = 'A confirmed match is undone with fincore.recon_unmatch().';
    END IF;
    RETURN fincore._recon_release(tenant, m, 'rejected', note);
END
$fn$;
COMMENT ON FUNCTION fincore.recon_reject(uuid, text) IS
    'Rejects a suggested match: its lines and entries are unmatched again, and no run proposes the same combination again. ZFC05, ZFC06.';

CREATE FUNCTION fincore.recon_unmatch(match_id uuid, note text DEFAULT NULL) RETURNS fincore.recon_matches
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    m fincore.recon_matches := fincore._recon_match_lock(tenant, match_id);
BEGIN
    IF m.status NOT IN ('confirmed', 'suggested') THEN
        RAISE EXCEPTION 'reconciliation match % is %, not live', match_id, m.status
            USING ERRCODE = 'ZFC06', HINT = 'Only a confirmed or suggested match can be undone.';
    END IF;
    RETURN fincore._recon_release(tenant, m, 'unmatched', note);
END
$fn$;
COMMENT ON FUNCTION fincore.recon_unmatch(uuid, text) IS
    'Undoes a confirmed or suggested match: its lines and entries are unmatched again (an adjustment it posted stays in the ledger, unmatched, to be matched or reversed). ZFC05, ZFC06.';

CREATE FUNCTION fincore.recon_match(line_ids uuid[], entry_ids uuid[], note text DEFAULT NULL,
        adjustment_account uuid DEFAULT NULL)
    RETURNS fincore.recon_matches
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    src fincore.recon_sources;
    m fincore.recon_matches;
    source text;
    nl integer;
    ne integer;
    cur text;
    bad record;
BEGIN
    IF line_ids IS NULL OR entry_ids IS NULL OR pg_catalog.cardinality(line_ids) = 0
       OR pg_catalog.cardinality(entry_ids) = 0 OR pg_catalog.array_position(line_ids, NULL) IS NOT NULL
       OR pg_catalog.array_position(entry_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'a match needs at least one line and one entry'
            USING ERRCODE = 'ZFC08', HINT = 'line_ids: statement lines of one source; entry_ids: transfers on its account.';
    END IF;
    IF pg_catalog.cardinality(line_ids) > 1000 OR pg_catalog.cardinality(entry_ids) > 1000 THEN
        RAISE EXCEPTION 'a match has at most 1000 lines and 1000 entries' USING ERRCODE = 'ZFC08';
    END IF;
    SELECT pg_catalog.min(l.source) INTO source FROM fincore.recon_lines l
     WHERE l.tenant_id = tenant AND l.id = ANY (line_ids);
    IF source IS NULL THEN
        RAISE EXCEPTION 'statement line % not found', line_ids[1] USING ERRCODE = 'ZFC08';
    END IF;
    src := fincore._recon_source_lock(tenant, source);
    SELECT pg_catalog.count(*), pg_catalog.min(l.currency), pg_catalog.sum(l.amount)
      INTO nl, cur, m.line_total
      FROM fincore.recon_lines l WHERE l.tenant_id = tenant AND l.id = ANY (line_ids) AND l.source = source;
    IF nl <> (SELECT pg_catalog.count(DISTINCT x) FROM pg_catalog.unnest(line_ids) x) THEN
        RAISE EXCEPTION 'the lines of a match are distinct lines of one source (%)', source USING ERRCODE = 'ZFC08';
    END IF;
    IF EXISTS (SELECT FROM fincore.recon_lines l WHERE l.tenant_id = tenant AND l.id = ANY (line_ids) AND l.currency <> cur) THEN
        RAISE EXCEPTION 'the lines of a match are in one currency' USING ERRCODE = 'ZF103';
    END IF;
    SELECT pg_catalog.count(*),
           pg_catalog.sum(CASE WHEN (t.debit_account_id = src.account_id) = (src.ledger_side = 'debit') THEN t.amount ELSE -t.amount END)
      INTO ne, m.entry_total
      FROM fincore.transfers t
     WHERE t.tenant_id = tenant AND t.id = ANY (entry_ids)
       AND (t.debit_account_id = src.account_id OR t.credit_account_id = src.account_id)
       AND t.kind IN ('posted', 'post', 'reversal') AND t.amount > 0;
    IF ne <> (SELECT pg_catalog.count(DISTINCT x) FROM pg_catalog.unnest(entry_ids) x) THEN
        RAISE EXCEPTION 'the entries of a match are distinct posted transfers on account % of source %', src.account_id, source
            USING ERRCODE = 'ZFC08';
    END IF;
    IF cur <> src.currency THEN
        RAISE EXCEPTION 'the lines are in %, the account of source % in %', cur, source, src.currency USING ERRCODE = 'ZF103';
    END IF;
    m.tenant_id := tenant;
    m.id := fincore.uuidv7();
    m.source := source;
    m.kind := CASE WHEN nl = 1 AND ne = 1 THEN 'one_to_one' WHEN nl = 1 THEN 'one_to_many'
                   WHEN ne = 1 THEN 'many_to_one' ELSE 'many_to_many' END;
    m.status := 'confirmed';
    m.currency := cur;
    m.note := note;
    m.line_ids := ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(line_ids) x ORDER BY x);
    m.entry_ids := ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(entry_ids) x ORDER BY x);
    m.decided_at := pg_catalog.now();
    m.decided_by := CURRENT_USER;
    m.created_at := pg_catalog.now();
    IF adjustment_account IS NOT NULL AND m.line_total <> m.entry_total THEN
        PERFORM FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = adjustment_account AND a.currency = cur;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found in %', adjustment_account, cur USING ERRCODE = 'ZF301';
        END IF;
        m.adjustment_account := adjustment_account;
        m.adjustment_id := fincore.uuidv7();
    END IF;
    INSERT INTO fincore.recon_matches VALUES (m.*);
    BEGIN
        INSERT INTO fincore.recon_matched_lines (tenant_id, line_id, match_id)
        SELECT tenant, x, m.id FROM pg_catalog.unnest(m.line_ids) x;
        INSERT INTO fincore.recon_matched_entries (tenant_id, account_id, transfer_id, match_id)
        SELECT tenant, src.account_id, x, m.id FROM pg_catalog.unnest(m.entry_ids) x;
    EXCEPTION WHEN unique_violation THEN
        SELECT 'line' AS what, x.line_id AS id, x.match_id INTO bad FROM fincore.recon_matched_lines x
         WHERE x.tenant_id = tenant AND x.line_id = ANY (line_ids) LIMIT 1;
        IF NOT FOUND THEN
            SELECT 'entry' AS what, x.transfer_id AS id, x.match_id INTO bad FROM fincore.recon_matched_entries x
             WHERE x.tenant_id = tenant AND x.account_id = src.account_id AND x.transfer_id = ANY (entry_ids) LIMIT 1;
        END IF;
        RAISE EXCEPTION '% % is already in match %', bad.what, bad.id, bad.match_id
            USING ERRCODE = 'ZFC07', HINT = 'Undo that match first (fincore.recon_unmatch or recon_reject).';
    END;
    IF m.adjustment_id IS NOT NULL THEN
        PERFORM fincore._recon_post_adjustments(tenant, src, NULL, m.id);
    END IF;
    PERFORM fincore.emit('recon', 'recon.match_confirmed', 'recon_match', m.id::text,
                         pg_catalog.jsonb_build_object('match_id', m.id, 'source', source, 'manual', true,
                                                       'line_total', m.line_total, 'entry_total', m.entry_total));
    RETURN m;
END
$fn$;
COMMENT ON FUNCTION fincore.recon_match(uuid[], uuid[], text, uuid) IS
    'Matches statement lines of one source with ledger entries on its account by hand, any kind, confirmed; a difference is posted to adjustment_account when one is given. A line or entry already in a live match: ZFC07, and nothing is written. ZFC08, ZF103, ZF301.';

-- ---------------------------------------------------------------------------
-- Balance drift
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.recon_balance(accounts uuid[], currency text, at timestamptz, external_balance bigint,
        side text DEFAULT 'debit', OUT ledger_balance bigint, OUT drift bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
DECLARE
    tenant uuid := fincore.require_tenant();
    acc uuid;
    cur text;
    total numeric := 0;
    part numeric;
BEGIN
    IF accounts IS NULL OR pg_catalog.cardinality(accounts) = 0 OR pg_catalog.array_position(accounts, NULL) IS NOT NULL
       OR at IS NULL OR recon_balance.external_balance IS NULL OR side IS NULL OR side NOT IN ('debit', 'credit') THEN
        RAISE EXCEPTION 'recon_balance needs accounts, a time, the external balance, and side debit or credit'
            USING ERRCODE = 'ZFC01',
                  HINT = 'side: debit for debits minus credits (an asset, such as a bank account), credit for the opposite.';
    END IF;
    IF pg_catalog.cardinality(accounts) > 1000 THEN
        RAISE EXCEPTION 'recon_balance takes at most 1000 accounts' USING ERRCODE = 'ZFC01';
    END IF;
    -- one statement per account: each names the tenant and Citus routes it to its shard
    FOREACH acc IN ARRAY accounts LOOP
        SELECT a.currency INTO cur FROM fincore.accounts a WHERE a.tenant_id = tenant AND a.id = acc;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % not found', acc USING ERRCODE = 'ZF301';
        END IF;
        IF currency IS NULL OR cur <> currency THEN
            RAISE EXCEPTION 'account % is in %, not %', acc, cur, coalesce(currency, 'NULL') USING ERRCODE = 'ZF103';
        END IF;
        SELECT coalesce(pg_catalog.sum(CASE WHEN t.debit_account_id = acc THEN t.amount::numeric ELSE -t.amount::numeric END), 0)
          INTO part
          FROM fincore.transfers t
         WHERE t.tenant_id = tenant AND (t.debit_account_id = acc OR t.credit_account_id = acc)
           AND t.kind IN ('posted', 'post', 'reversal') AND t.created_at <= at;
        total := total + part;
    END LOOP;
    IF side = 'credit' THEN
        total := -total;
    END IF;
    IF total NOT BETWEEN -9223372036854775808 AND 9223372036854775807
       OR total - recon_balance.external_balance NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
        RAISE EXCEPTION 'the balance of % accounts is out of range', pg_catalog.cardinality(accounts) USING ERRCODE = 'ZF104';
    END IF;
    ledger_balance := total::bigint;
    drift := (total - recon_balance.external_balance)::bigint;
END
$fn$;
COMMENT ON FUNCTION fincore.recon_balance(uuid[], text, timestamptz, bigint, text) IS
    'Balance-level drift at a point in time: the posted balance of the accounts at "at" (debits minus credits, or the opposite for side => credit), and drift = that balance - external_balance, in minor units of currency. ZFC01, ZF301, ZF103, ZF104.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.recon_create_source(text,uuid,jsonb,text,text[],interval)', 'app'),
    ('fincore.recon_set_rule(text,text,integer,text,text[],bigint,integer,integer,real,text,integer,text,uuid,boolean)', 'app'),
    ('fincore.recon_drop_rule(text,text)', 'app'),
    ('fincore.recon_import(text,text,text)', 'app'),
    ('fincore.recon_run(text,uuid,boolean,boolean)', 'app'),
    ('fincore.recon_confirm(uuid,text)', 'app'),
    ('fincore.recon_reject(uuid,text)', 'app'),
    ('fincore.recon_unmatch(uuid,text)', 'app'),
    ('fincore.recon_match(uuid[],uuid[],text,uuid)', 'app'),
    ('fincore.recon_balance(uuid[],text,timestamptz,bigint,text)', 'app');

-- ---- Rate limits (issue 22): sql/modules/ratelimit.sql, as it is ----------------------------

-- ---------------------------------------------------------------------------
-- Rate limits (docs/rate-limits.md): GCRA decisions in shared memory, with no
-- table write, no WAL and no bloat; in-flight (concurrency) limits released
-- when the transaction ends; policies for PostgREST's pre-request hook.
--
-- The limiter's table of keys is set aside when the server starts with
-- fincore in shared_preload_libraries (src/ratelimit_shmem.c); without the
-- preload these functions raise ZF751 and the rest of fincore is unaffected.
-- A key is scoped to the database and, when one is set, the current tenant:
-- callers of one tenant never touch another's allowance.
-- ---------------------------------------------------------------------------

-- A decision, as CL.THROTTLE returns it.  A named type rather than OUT parameters: the
-- executor finds its row shape in the type cache instead of building it at every execution.
CREATE TYPE fincore.rate_limit_decision AS (
    allowed     boolean,
    "limit"     integer,
    remaining   integer,
    retry_after interval,
    reset_after interval
);
COMMENT ON TYPE fincore.rate_limit_decision IS
    'What fincore.rate_limit() decides: allowed, limit (burst + 1), remaining, retry_after (NULL when allowed or never possible), reset_after.';

CREATE FUNCTION fincore.rate_limit(key text, rate integer, per interval, burst integer, cost integer DEFAULT 1)
    RETURNS fincore.rate_limit_decision
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'fincore_rate_limit';
COMMENT ON FUNCTION fincore.rate_limit(text, integer, interval, integer, integer) IS
    'GCRA, as redis-cell''s CL.THROTTLE key burst rate per cost, at the wall clock: whether cost arrivals are allowed now (and taken), limit = burst + 1, what remains, retry_after (NULL when allowed or never possible) and reset_after (until the allowance is whole). Shared memory only; ZF751 without fincore in shared_preload_libraries, ZF752 for bad arguments.';

CREATE FUNCTION fincore.rate_limit_or_raise(key text, rate integer, per interval, burst integer, cost integer DEFAULT 1)
    RETURNS integer
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'fincore_rate_limit_or_raise';
COMMENT ON FUNCTION fincore.rate_limit_or_raise(text, integer, interval, integer, integer) IS
    'fincore.rate_limit(), raising ZF753 when limited, with the seconds to wait in the detail; otherwise returns what remains.';

CREATE FUNCTION fincore._rate_limit_at(key text, rate integer, per interval, burst integer, cost integer,
        at timestamptz)
    RETURNS fincore.rate_limit_decision
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'fincore_rate_limit_at';
REVOKE ALL ON FUNCTION fincore._rate_limit_at(text, integer, interval, integer, integer, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION fincore._rate_limit_at(text, integer, interval, integer, integer, timestamptz) IS
    'Internal, for tests: fincore.rate_limit() with the clock at a given time. Not granted to anyone: a caller choosing the time could step past any limit.';

CREATE FUNCTION fincore.rate_limit_reset(key text) RETURNS boolean
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'fincore_rate_limit_reset';
COMMENT ON FUNCTION fincore.rate_limit_reset(text) IS
    'Forgets what a key has used: its whole allowance is back. True if some of it was in use.';

CREATE FUNCTION fincore.concurrency_acquire(key text, max integer) RETURNS boolean
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_concurrency_acquire';
COMMENT ON FUNCTION fincore.concurrency_acquire(text, integer) IS
    'Takes one of max in-flight slots of key, or returns false when all are taken. The slot is given back by fincore.concurrency_release(key), when the transaction ends (commit or rollback) or when the backend exits, whichever comes first.';

CREATE FUNCTION fincore.concurrency_release(key text) RETURNS boolean
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_concurrency_release';
COMMENT ON FUNCTION fincore.concurrency_release(text) IS
    'Gives back one in-flight slot of key that this session holds; false if it holds none.';

CREATE FUNCTION fincore.rate_limit_stats(OUT slots bigint, OUT used bigint, OUT live bigint,
        OUT in_flight bigint, OUT full_events bigint)
    RETURNS record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'fincore_rate_limit_stats';
COMMENT ON FUNCTION fincore.rate_limit_stats() IS
    'The rate limiter''s table: slots, slots holding a key, live keys (not idle), in-flight slots taken, and arrivals that found the table full since the server started.';

-- ---------------------------------------------------------------------------
-- Policies: which limit a PostgREST request gets (fincore.pre_request()).  A
-- tenant's own policies (rate_limit_policies, under row level security) come
-- first; then the defaults for every tenant and for requests without one
-- (rate_limit_default_policies, a global table: a reference table on Citus).
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.rate_limit_policies (
    tenant_id    uuid     NOT NULL,
    name         text     NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    priority     integer  NOT NULL,             -- lower first; the first policy that matches decides
    role_name    name,                          -- NULL: any role
    path_pattern text     CHECK (pg_catalog.length(path_pattern) BETWEEN 1 AND 500),  -- LIKE on request.path; NULL: any
    feature      text     CHECK (pg_catalog.length(feature) BETWEEN 1 AND 100),       -- billing: callers entitled to it
    key_by       text     NOT NULL DEFAULT 'subject' CHECK (key_by IN ('subject', 'tenant', 'address')),
    per_path     boolean  NOT NULL DEFAULT false,   -- a counter per request path, not one for the policy
    rate         integer  NOT NULL CHECK (rate >= 1),
    per          interval NOT NULL,
    burst        integer  NOT NULL CHECK (burst >= 0),
    cost         integer  NOT NULL DEFAULT 1 CHECK (cost >= 0),
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, name),
    FOREIGN KEY (tenant_id) REFERENCES fincore.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE fincore.rate_limit_policies IS
    'A tenant''s rate limits of PostgREST requests, by role, request path and billing feature; fincore.pre_request() applies the first that matches, in priority order, before the defaults. Written by fincore.set_rate_limit_policy().';
SELECT fincore.protect('fincore.rate_limit_policies');
SELECT pg_catalog.pg_extension_config_dump('fincore.rate_limit_policies', '');

-- The same columns but the tenant: policies for every tenant, and for requests without one.
CREATE TABLE fincore.rate_limit_default_policies (
    name         text     PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    priority     integer  NOT NULL,
    role_name    name,
    path_pattern text     CHECK (pg_catalog.length(path_pattern) BETWEEN 1 AND 500),
    feature      text     CHECK (pg_catalog.length(feature) BETWEEN 1 AND 100),
    key_by       text     NOT NULL DEFAULT 'subject' CHECK (key_by IN ('subject', 'tenant', 'address')),
    per_path     boolean  NOT NULL DEFAULT false,
    rate         integer  NOT NULL CHECK (rate >= 1),
    per          interval NOT NULL,
    burst        integer  NOT NULL CHECK (burst >= 0),
    cost         integer  NOT NULL DEFAULT 1 CHECK (cost >= 0),
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fincore.rate_limit_default_policies IS
    'Rate limits of PostgREST requests for every tenant and for requests without one, applied by fincore.pre_request() when no policy of the request''s tenant matches. Written by fincore.set_rate_limit_policy(tenant => NULL), by trusted roles.';
SELECT pg_catalog.pg_extension_config_dump('fincore.rate_limit_default_policies', '');

CREATE FUNCTION fincore.set_rate_limit_policy(name text, rate integer, per interval, burst integer,
        cost integer DEFAULT 1, priority integer DEFAULT 100, tenant uuid DEFAULT NULL,
        role_name name DEFAULT NULL, path_pattern text DEFAULT NULL, feature text DEFAULT NULL,
        key_by text DEFAULT 'subject', per_path boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM fincore.require_limits_admin(tenant);
    ELSE
        PERFORM fincore._require_trusted('set a rate limit policy for every tenant');
    END IF;
    IF name IS NULL OR name OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9_.:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid rate limit policy: name % is not a word of 1 to 63 lower-case letters, digits, _ . : -',
                coalesce(pg_catalog.quote_literal(name), 'NULL') USING ERRCODE = 'ZF754';
    END IF;
    IF key_by IS NULL OR NOT key_by OPERATOR(pg_catalog.=) ANY (ARRAY['subject', 'tenant', 'address']) THEN
        RAISE EXCEPTION 'invalid rate limit policy %: key_by % is not subject, tenant or address', name,
                coalesce(pg_catalog.quote_literal(key_by), 'NULL') USING ERRCODE = 'ZF754';
    END IF;
    IF priority IS NULL OR per_path IS NULL THEN
        RAISE EXCEPTION 'invalid rate limit policy %: priority and per_path must not be NULL', name USING ERRCODE = 'ZF754';
    END IF;
    IF path_pattern IS NOT NULL AND (pg_catalog.length(path_pattern) OPERATOR(pg_catalog.<) 1
                                     OR pg_catalog.length(path_pattern) OPERATOR(pg_catalog.>) 500) THEN
        RAISE EXCEPTION 'invalid rate limit policy %: path_pattern is not 1 to 500 characters', name USING ERRCODE = 'ZF754';
    END IF;
    IF feature IS NOT NULL AND (pg_catalog.length(feature) OPERATOR(pg_catalog.<) 1
                                OR pg_catalog.length(feature) OPERATOR(pg_catalog.>) 100) THEN
        RAISE EXCEPTION 'invalid rate limit policy %: feature is not 1 to 100 characters', name USING ERRCODE = 'ZF754';
    END IF;
    -- The quota is checked as the limiter checks it (ZF752 names the bad value), without the preload.
    PERFORM fincore._rate_quota_check(rate, per, burst, cost);
    IF tenant IS NULL THEN
        INSERT INTO fincore.rate_limit_default_policies AS p
               (name, priority, role_name, path_pattern, feature, key_by, per_path, rate, per, burst, cost)
        VALUES (name, priority, role_name, path_pattern, feature, key_by, per_path, rate, per, burst, cost)
        ON CONFLICT ON CONSTRAINT rate_limit_default_policies_pkey DO UPDATE
           SET priority = excluded.priority, role_name = excluded.role_name, path_pattern = excluded.path_pattern,
               feature = excluded.feature, key_by = excluded.key_by, per_path = excluded.per_path,
               rate = excluded.rate, per = excluded.per, burst = excluded.burst, cost = excluded.cost;
    ELSE
        INSERT INTO fincore.rate_limit_policies AS p
               (tenant_id, name, priority, role_name, path_pattern, feature, key_by, per_path, rate, per, burst, cost)
        VALUES (tenant, name, priority, role_name, path_pattern, feature, key_by, per_path, rate, per, burst, cost)
        ON CONFLICT ON CONSTRAINT rate_limit_policies_pkey DO UPDATE
           SET priority = excluded.priority, role_name = excluded.role_name, path_pattern = excluded.path_pattern,
               feature = excluded.feature, key_by = excluded.key_by, per_path = excluded.per_path,
               rate = excluded.rate, per = excluded.per, burst = excluded.burst, cost = excluded.cost;
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.set_rate_limit_policy(text, integer, interval, integer, integer, integer, uuid, name, text, text, text, boolean) IS
    'Creates or replaces a rate limit policy for fincore.pre_request(): rate arrivals per interval with a burst, for requests of a tenant (as an admin of it; NULL: a default for every tenant and for requests without one, by a trusted role), a role, a request.path LIKE pattern and callers entitled to a billing feature, counted per subject, tenant or client address. ZF754 for a bad policy, ZF752 for a bad quota, ZF803 without the right.';

-- ZF803 if the caller is an application role that is not trusted.
CREATE FUNCTION fincore._require_trusted(what text) RETURNS void
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    invoker text := pg_catalog.current_setting('role');
BEGIN
    IF invoker IS NULL OR invoker OPERATOR(pg_catalog.=) 'none' THEN
        invoker := pg_catalog.session_user();
    END IF;
    IF EXISTS (SELECT 1 FROM fincore.app_roles a WHERE a.role_name OPERATOR(pg_catalog.=) invoker AND NOT a.trusted) THEN
        RAISE EXCEPTION 'only a trusted role may %', what
            USING ERRCODE = 'ZF803', HINT = 'Call from a role registered with fincore.grant_app_role(role, trusted => true).';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION fincore._require_trusted(text) FROM PUBLIC;
COMMENT ON FUNCTION fincore._require_trusted(text) IS
    'Internal: raises ZF803 (naming what was tried) when the caller is an application role that is not trusted.';

CREATE FUNCTION fincore._rate_quota_check(rate integer, per interval, burst integer, cost integer) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_rate_quota_check';
COMMENT ON FUNCTION fincore._rate_quota_check(integer, interval, integer, integer) IS
    'Internal: ZF752 unless rate, per, burst and cost make a quota the limiter takes.';

CREATE FUNCTION fincore.drop_rate_limit_policy(name text, tenant uuid DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
#variable_conflict use_variable
BEGIN
    IF tenant IS NULL THEN
        PERFORM fincore._require_trusted('drop a rate limit policy for every tenant');
        DELETE FROM fincore.rate_limit_default_policies p WHERE p.name OPERATOR(pg_catalog.=) name;
    ELSE
        PERFORM fincore.require_limits_admin(tenant);
        DELETE FROM fincore.rate_limit_policies p
         WHERE p.tenant_id OPERATOR(pg_catalog.=) tenant AND p.name OPERATOR(pg_catalog.=) name;
    END IF;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION fincore.drop_rate_limit_policy(text, uuid) IS
    'Drops a rate limit policy of a tenant (NULL: a default policy); false if there is none by that name.';

-- The request's limit, from the first policy that matches it: called by fincore.pre_request().
-- When limited it raises SQLSTATE PGRST, which PostgREST turns into the response the detail
-- describes: HTTP 429 with a Retry-After header (a response.headers setting would be lost with
-- the failed transaction, so it is set too but only for a caller that catches the error).
CREATE FUNCTION fincore._rate_limit_request() RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    path text := coalesce(pg_catalog.current_setting('request.path', true), '');
    tenant uuid := fincore.tenant_id();
    pol record;
    matched boolean := false;
    who text;
    key text;
    decision record;
    retry_seconds bigint;
    headers jsonb;
BEGIN
    -- The candidates in order; the billing feature is checked here, on the coordinator under
    -- Citus, not inside the query that reads the policies' shard.
    FOR pol IN
        SELECT p.*
          FROM (SELECT 0 AS scope, t.name, t.priority, t.role_name, t.path_pattern, t.feature, t.key_by, t.per_path,
                       t.rate, t.per, t.burst, t.cost
                  FROM fincore.rate_limit_policies t
                 WHERE t.tenant_id OPERATOR(pg_catalog.=) tenant
                UNION ALL
                SELECT 1, g.name, g.priority, g.role_name, g.path_pattern, g.feature, g.key_by, g.per_path,
                       g.rate, g.per, g.burst, g.cost
                  FROM fincore.rate_limit_default_policies g) p
         WHERE (p.role_name IS NULL OR p.role_name OPERATOR(pg_catalog.=) CURRENT_USER)
           AND (p.path_pattern IS NULL OR path OPERATOR(pg_catalog.~~) p.path_pattern)
         ORDER BY p.scope, p.priority, p.name
    LOOP
        IF pol.feature IS NULL OR fincore.entitled(pol.feature) THEN
            matched := true;
            EXIT;
        END IF;
    END LOOP;
    IF NOT matched THEN
        RETURN;             -- no policy for this request
    END IF;
    IF pol.key_by OPERATOR(pg_catalog.=) 'subject' THEN
        who := 's:' OPERATOR(pg_catalog.||) fincore.claim('sub');
    ELSIF pol.key_by OPERATOR(pg_catalog.=) 'tenant' THEN
        who := 't:';
    END IF;
    IF who IS NULL THEN          -- by address, or a subject-keyed request without a subject
        who := 'a:' OPERATOR(pg_catalog.||) coalesce(
            pg_catalog.btrim(pg_catalog.split_part(
                CAST(pg_catalog.current_setting('request.headers', true) AS pg_catalog.jsonb) OPERATOR(pg_catalog.->>) 'x-forwarded-for', ',', 1)),
            pg_catalog.host(pg_catalog.inet_client_addr()), 'local');
    END IF;
    key := 'pre_request:' OPERATOR(pg_catalog.||) pol.name OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) who;
    IF pol.per_path THEN
        key := key OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) path;
    END IF;
    key := pg_catalog.left(key, 1024);
    decision := fincore.rate_limit(key, pol.rate, pol.per, pol.burst, pol.cost);
    IF decision.allowed THEN
        RETURN;
    END IF;
    retry_seconds := CAST(pg_catalog.ceil(EXTRACT(epoch FROM decision.retry_after)) AS pg_catalog.int8);
    headers := CASE WHEN retry_seconds IS NULL THEN CAST('{}' AS pg_catalog.jsonb)
                    ELSE pg_catalog.jsonb_build_object('Retry-After', CAST(GREATEST(retry_seconds, 1) AS pg_catalog.text)) END;
    PERFORM pg_catalog.set_config('response.headers',
        CAST(pg_catalog.jsonb_build_array(headers) AS pg_catalog.text), true);
    RAISE SQLSTATE 'PGRST' USING
        MESSAGE = CAST(pg_catalog.jsonb_build_object(
            'code', 'ZF753',
            'message', 'rate limit exceeded',
            'details', pg_catalog.format('policy %s allows %s requests per %s with a burst of %s%s', pol.name,
                                         pol.rate, pol.per, pol.burst,
                                         CASE WHEN retry_seconds IS NULL THEN '; this request costs more than the limit'
                                              ELSE pg_catalog.format('; retry after %s seconds', EXTRACT(epoch FROM decision.retry_after)) END),
            'hint', NULL) AS pg_catalog.text),
        DETAIL = CAST(pg_catalog.jsonb_build_object('status', 429, 'status_text', 'Too Many Requests', 'headers', headers)
                      AS pg_catalog.text);
END
$fn$;
COMMENT ON FUNCTION fincore._rate_limit_request() IS
    'Internal, called by fincore.pre_request(): applies the first matching rate limit policy to the request; when limited raises SQLSTATE PGRST, which PostgREST answers with HTTP 429 and a Retry-After header.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.rate_limit(text,integer,interval,integer,integer)', 'app'),
    ('fincore.rate_limit_or_raise(text,integer,interval,integer,integer)', 'app'),
    ('fincore.concurrency_acquire(text,integer)', 'app'),
    ('fincore.concurrency_release(text)', 'app'),
    ('fincore.set_rate_limit_policy(text,integer,interval,integer,integer,integer,uuid,name,text,text,text,boolean)', 'app'),
    ('fincore.drop_rate_limit_policy(text,uuid)', 'app'),
    ('fincore._rate_limit_request()', 'app'),
    ('fincore._rate_quota_check(integer,interval,integer,integer)', 'app'),
    ('fincore.rate_limit_reset(text)', 'trusted'),
    ('fincore.rate_limit_stats()', 'trusted');

-- ---- Metrics (issue 23): sql/modules/metrics.sql, as it is ------------------------------------

-- ---------------------------------------------------------------------------
-- Metrics (docs/operations.md): fincore.metrics() in Prometheus' text exposition
-- format, for an exporter (postgres_exporter's custom queries, or a sidecar that
-- serves the text as it is).  An operator's view across tenants: trusted roles
-- only.  Each family has its HELP and TYPE lines even when it has no sample.
-- ---------------------------------------------------------------------------

-- A Prometheus label value: backslash, double quote and newline escaped.
CREATE FUNCTION fincore._metric_label(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(value, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n');
END;
COMMENT ON FUNCTION fincore._metric_label(text) IS
    'Internal: a text escaped as a Prometheus label value (backslash, double quote, newline).';

CREATE FUNCTION fincore.metrics() RETURNS text
    LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    samples text[] := '{}';     -- 'family<TAB>labels<TAB>value'
    r record;
    out text := '';
    family record;
    limiter boolean := true;
    at timestamptz := pg_catalog.clock_timestamp();     -- ages from now, not the transaction's start
BEGIN
    -- Queues: every tenant's (fincore.queue_stats as the owner, who is not an app role).
    FOR r IN SELECT q.queue, q.ready, q.scheduled, q.running, q.dead, q.oldest_ready_age, q.paused
               FROM fincore.queue_stats('1 hour') q ORDER BY q.queue LOOP
        samples := samples OPERATOR(pg_catalog.||) ARRAY[
            pg_catalog.format(E'fincore_queue_jobs\tqueue="%s",state="ready"\t%s', fincore._metric_label(r.queue), r.ready),
            pg_catalog.format(E'fincore_queue_jobs\tqueue="%s",state="scheduled"\t%s', fincore._metric_label(r.queue), r.scheduled),
            pg_catalog.format(E'fincore_queue_jobs\tqueue="%s",state="running"\t%s', fincore._metric_label(r.queue), r.running),
            pg_catalog.format(E'fincore_queue_dead_jobs\tqueue="%s"\t%s', fincore._metric_label(r.queue), r.dead),
            pg_catalog.format(E'fincore_queue_oldest_ready_seconds\tqueue="%s"\t%s', fincore._metric_label(r.queue),
                              coalesce(EXTRACT(epoch FROM r.oldest_ready_age), 0)),
            pg_catalog.format(E'fincore_queue_paused\tqueue="%s"\t%s', fincore._metric_label(r.queue),
                              CASE WHEN r.paused THEN 1 ELSE 0 END)];
    END LOOP;
    -- Outbox consumers.
    FOR r IN SELECT c.consumer, c.pending, c.lag, c.retrying, c.dead FROM fincore.consumer_lag() c ORDER BY c.consumer LOOP
        samples := samples OPERATOR(pg_catalog.||) ARRAY[
            pg_catalog.format(E'fincore_consumer_pending_events\tconsumer="%s"\t%s', fincore._metric_label(r.consumer), r.pending),
            pg_catalog.format(E'fincore_consumer_lag_seconds\tconsumer="%s"\t%s', fincore._metric_label(r.consumer),
                              coalesce(EXTRACT(epoch FROM r.lag), 0)),
            pg_catalog.format(E'fincore_consumer_retrying_events\tconsumer="%s"\t%s', fincore._metric_label(r.consumer), r.retrying),
            pg_catalog.format(E'fincore_consumer_dead_events\tconsumer="%s"\t%s', fincore._metric_label(r.consumer), r.dead)];
    END LOOP;
    -- Holds: how many, the oldest, and those past their expiry that maintenance has not expired.
    SELECT pg_catalog.count(*) AS n,
           coalesce(EXTRACT(epoch FROM at OPERATOR(pg_catalog.-) pg_catalog.min(t.created_at)), 0) AS oldest,
           pg_catalog.count(*) FILTER (WHERE h.expires_at OPERATOR(pg_catalog.<) at) AS overdue
      INTO r
      FROM fincore.pending_holds h
      JOIN fincore.transfers t ON t.tenant_id OPERATOR(pg_catalog.=) h.tenant_id AND t.id OPERATOR(pg_catalog.=) h.transfer_id;
    samples := samples OPERATOR(pg_catalog.||) ARRAY[
        pg_catalog.format(E'fincore_pending_holds\t\t%s', r.n),
        pg_catalog.format(E'fincore_pending_holds_oldest_seconds\t\t%s', r.oldest),
        pg_catalog.format(E'fincore_pending_holds_overdue\t\t%s', r.overdue)];
    -- Maintenance steps.
    FOR r IN SELECT m.step, s.last_run_at, s.failures
               FROM fincore.maintenance_steps m
               LEFT JOIN fincore.maintenance_status s ON s.step OPERATOR(pg_catalog.=) m.step
              ORDER BY m.position LOOP
        samples := samples OPERATOR(pg_catalog.||) ARRAY[
            pg_catalog.format(E'fincore_maintenance_step_failures\tstep="%s"\t%s', fincore._metric_label(r.step),
                              coalesce(r.failures, 0)),
            pg_catalog.format(E'fincore_maintenance_step_last_run_seconds\tstep="%s"\t%s', fincore._metric_label(r.step),
                              coalesce(CAST(EXTRACT(epoch FROM at OPERATOR(pg_catalog.-) r.last_run_at) AS pg_catalog.text), 'NaN'))];
    END LOOP;
    -- The rate limiter, when fincore is preloaded.
    BEGIN
        SELECT l.* INTO r FROM fincore.rate_limit_stats() l;
    EXCEPTION WHEN SQLSTATE 'ZF751' THEN
        limiter := false;
    END;
    IF limiter THEN
        samples := samples OPERATOR(pg_catalog.||) ARRAY[
            pg_catalog.format(E'fincore_rate_limit_slots\tstate="total"\t%s', r.slots),
            pg_catalog.format(E'fincore_rate_limit_slots\tstate="used"\t%s', r.used),
            pg_catalog.format(E'fincore_rate_limit_slots\tstate="live"\t%s', r.live),
            pg_catalog.format(E'fincore_rate_limit_in_flight\t\t%s', r.in_flight),
            pg_catalog.format(E'fincore_rate_limit_full_events_total\t\t%s', r.full_events)];
    END IF;

    FOR family IN SELECT f.name, f.kind, f.help FROM (VALUES
            (1, 'fincore_queue_jobs', 'gauge', 'Unfinished jobs by queue and state (ready, scheduled, running), every tenant.'),
            (2, 'fincore_queue_dead_jobs', 'gauge', 'Dead jobs of the queue (out of attempts), waiting for retry() or retention.'),
            (3, 'fincore_queue_oldest_ready_seconds', 'gauge', 'Age of the queue''s oldest ready job: how long work has waited for a worker.'),
            (4, 'fincore_queue_paused', 'gauge', '1 if the queue is paused for some tenant.'),
            (5, 'fincore_consumer_pending_events', 'gauge', 'Committed outbox events the consumer has not acknowledged.'),
            (6, 'fincore_consumer_lag_seconds', 'gauge', 'Age of the consumer''s oldest unacknowledged event.'),
            (7, 'fincore_consumer_retrying_events', 'gauge', 'Events the consumer nacked that wait for a retry.'),
            (8, 'fincore_consumer_dead_events', 'gauge', 'The consumer''s dead letters (replay_dead delivers them again).'),
            (9, 'fincore_pending_holds', 'gauge', 'Holds (pending transfers) not yet posted, voided or expired.'),
            (10, 'fincore_pending_holds_oldest_seconds', 'gauge', 'Age of the oldest hold.'),
            (11, 'fincore_pending_holds_overdue', 'gauge', 'Holds past their expiry that maintenance has not expired yet.'),
            (12, 'fincore_maintenance_step_failures', 'gauge', 'Consecutive failed runs of the maintenance step (0 after a success).'),
            (13, 'fincore_maintenance_step_last_run_seconds', 'gauge', 'Seconds since the maintenance step last ran (NaN: never).'),
            (14, 'fincore_rate_limit_slots', 'gauge', 'The rate limiter''s slots: total, used (holding a key), live (not idle). Only with fincore preloaded.'),
            (15, 'fincore_rate_limit_in_flight', 'gauge', 'In-flight (concurrency) slots taken.'),
            (16, 'fincore_rate_limit_full_events_total', 'counter', 'Arrivals that found the rate limiter''s table full since the server started.'))
            AS f(pos, name, kind, help) ORDER BY f.pos LOOP
        IF family.name OPERATOR(pg_catalog.~~) 'fincore_rate_limit%' AND NOT limiter THEN
            CONTINUE;
        END IF;
        out := out OPERATOR(pg_catalog.||) pg_catalog.format(E'# HELP %s %s\n# TYPE %s %s\n',
                                                             family.name, family.help, family.name, family.kind);
        FOR r IN SELECT pg_catalog.split_part(x, E'\t', 2) AS labels, pg_catalog.split_part(x, E'\t', 3) AS value
                   FROM pg_catalog.unnest(samples) WITH ORDINALITY AS u(x, i)
                  WHERE pg_catalog.split_part(x, E'\t', 1) OPERATOR(pg_catalog.=) family.name
                  ORDER BY u.i LOOP
            out := out OPERATOR(pg_catalog.||) family.name
                   OPERATOR(pg_catalog.||) CASE WHEN r.labels OPERATOR(pg_catalog.=) '' THEN ''
                                                ELSE '{' OPERATOR(pg_catalog.||) r.labels OPERATOR(pg_catalog.||) '}' END
                   OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) r.value OPERATOR(pg_catalog.||) E'\n';
        END LOOP;
    END LOOP;
    RETURN out;
END
$fn$;
COMMENT ON FUNCTION fincore.metrics() IS
    'fincore''s health in Prometheus text exposition format, across tenants: queue depth, dead jobs and the oldest ready job per queue; consumer lag; holds, the oldest and the overdue; maintenance step failures and last runs; the rate limiter''s slots when fincore is preloaded. For trusted roles (docs/operations.md).';

INSERT INTO fincore.function_audience (fn, audience) VALUES ('fincore.metrics()', 'trusted');

-- owner: fincore's own statements and a non-superuser owner (docs/security.md).
--
-- Row level security is forced on fincore's tables, so it binds their owner
-- as well when the owner is not a superuser (managed PostgreSQL, or a demoted
-- owner).  fincore's own statements name their tenant explicitly and must see
-- every tenant's rows (maintenance, look-ups before a tenant is chosen, a
-- conflict with another tenant's id), so each protected table gets one more
-- permissive policy, for its owner alone, that holds only while the owner's
-- rights were borrowed by fincore itself: inside a fincore SECURITY DEFINER
-- function (each gets SET fincore.owner_context = on below) or C code that
-- switched to the owner.  A session that logs in as the owner still sees one
-- tenant, as the app roles do, and so does a SECURITY DEFINER function of the
-- owner's that is not fincore's.  An upgrade script ends with the same blocks.

CREATE FUNCTION fincore.owner_context() RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_owner_context';
COMMENT ON FUNCTION fincore.owner_context() IS
    'True while fincore itself runs with its owner''s rights (one of its SECURITY DEFINER functions, or its C code as the owner); the condition of the fincore_owner policies.';
REVOKE ALL ON FUNCTION fincore.owner_context() FROM PUBLIC;

-- Every fincore SECURITY DEFINER function marks its duration as fincore's owner context.
DO $mark$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace OPERATOR(pg_catalog.=) 'fincore'::regnamespace AND p.prosecdef
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET fincore.owner_context = on', f);
    END LOOP;
END
$mark$;

DO $owner$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS tbl, c.relowner::regrole AS owner
               FROM pg_catalog.pg_class c
              WHERE c.relnamespace OPERATOR(pg_catalog.=) 'fincore'::regnamespace
                AND c.relkind IN ('r', 'p') AND c.relrowsecurity
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                                 WHERE p.polrelid OPERATOR(pg_catalog.=) c.oid
                                   AND p.polname OPERATOR(pg_catalog.=) 'fincore_owner')
              ORDER BY c.oid LOOP
        EXECUTE pg_catalog.format('CREATE POLICY fincore_owner ON %s AS PERMISSIVE FOR ALL TO %I '
                                  'USING (fincore.owner_context()) WITH CHECK (fincore.owner_context())',
                                  r.tbl, r.owner::text);
    END LOOP;
END
$owner$;

-- ---- Scale-out (issue 16): sql/modules/scaleout.sql, as it is --------------------------------

-- scaleout: fincore on Citus, sharded by tenant (docs/scale-out.md).
--
-- fincore.distribute() turns a single-node fincore into a distributed one on a Citus
-- coordinator: the global tables become reference tables (a copy on every node), the tenant
-- tables are distributed by tenant_id and colocated (a tenant's accounts, transfers, holds,
-- history, fee schedules and inbox are on one shard, so every ledger statement, which names its
-- tenant, runs on one node), and the outbox and the job queue stay on the coordinator.  The
-- install script already makes every key of a tenant table lead with tenant_id, so the tables
-- distribute as they are.

-- What goes where.  A table of fincore's that is not listed stays a plain table on the
-- coordinator.
CREATE FUNCTION fincore.distribution_plan(OUT relation regclass, OUT placement text, OUT ordinal integer)
    RETURNS SETOF record
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT v.relation::regclass, v.placement, v.ordinal
      FROM (VALUES
            -- Global: read by every node, written rarely.
            ('fincore.tenants', 'reference', 1),
            ('fincore.tenant_members', 'reference', 2),
            ('fincore.currency_registry', 'reference', 3),
            ('fincore.app_roles', 'reference', 4),
            ('fincore.function_audience', 'reference', 5),
            ('fincore.maintenance_steps', 'reference', 6),
            -- Read at every transfer (whose tenants write ledger events), set rarely.
            ('fincore.outbox_settings', 'reference', 7),
            -- Read at every PostgREST request (fincore.pre_request()), on the coordinator.
            ('fincore.rate_limit_default_policies', 'reference', 8),
            -- A tenant's data, on its shard.  accounts first: the others are colocated with it.
            ('fincore.accounts', 'distributed', 10),
            ('fincore.transfers', 'distributed', 11),
            ('fincore.failed_transfers', 'distributed', 12),
            ('fincore.pending_holds', 'distributed', 13),
            ('fincore.account_history', 'distributed', 14),
            ('fincore.account_deltas', 'distributed', 15),
            ('fincore.fee_schedule_codes', 'distributed', 16),
            ('fincore.fee_schedules', 'distributed', 17),
            ('fincore.inbox', 'distributed', 18),
            ('fincore.limits', 'distributed', 19),
            ('fincore.limit_counters', 'distributed', 20),
            ('fincore.account_customers', 'distributed', 21),
            ('fincore.rules', 'distributed', 22),
            ('fincore.decisions', 'distributed', 23),
            ('fincore.payment_providers', 'distributed', 24),
            ('fincore.payments', 'distributed', 25),
            ('fincore.payment_steps', 'distributed', 26),
            ('fincore.billing_products', 'distributed', 27),
            ('fincore.billing_prices', 'distributed', 28),
            ('fincore.subscriptions', 'distributed', 29),
            ('fincore.subscription_lines', 'distributed', 30),
            ('fincore.billing_accounts', 'distributed', 31),
            ('fincore.invoices', 'distributed', 32),
            ('fincore.dunning_policies', 'distributed', 33),
            ('fincore.billing_features', 'distributed', 34),
            ('fincore.audit_heads', 'distributed', 35),
            ('fincore.audit_pending', 'distributed', 36),
            ('fincore.audit_log', 'distributed', 37),
            ('fincore.audit_checkpoints', 'distributed', 38),
            ('fincore.recon_sources', 'distributed', 39),
            ('fincore.recon_rules', 'distributed', 40),
            ('fincore.recon_imports', 'distributed', 41),
            ('fincore.recon_lines', 'distributed', 42),
            ('fincore.recon_staging', 'distributed', 43),
            ('fincore.recon_matches', 'distributed', 44),
            ('fincore.recon_matched_lines', 'distributed', 45),
            ('fincore.recon_matched_entries', 'distributed', 46),
            ('fincore.recon_runs', 'distributed', 47),
            ('fincore.rate_limit_policies', 'distributed', 48)) AS v(relation, placement, ordinal);
END;
COMMENT ON FUNCTION fincore.distribution_plan() IS
    'Where fincore.distribute() puts each of fincore''s tables on Citus: reference (on every node) or distributed by tenant_id, colocated with fincore.accounts; tables not listed stay on the coordinator (the outbox and the job queue).';

CREATE FUNCTION fincore.distribute(user_table regclass DEFAULT NULL)
    RETURNS SETOF text
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    fk record;
    fks text[] := '{}';
    pending boolean;
    f pg_catalog.regprocedure;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'Citus is not installed in this database'
            USING ERRCODE = 'ZF701',
                  HINT = 'fincore.distribute() runs on a Citus coordinator: shared_preload_libraries = ''citus'', CREATE EXTENSION citus, add the workers (docs/scale-out.md).';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'this node is not the Citus coordinator'
            USING ERRCODE = 'ZF701',
                  HINT = 'Run fincore.distribute() on the coordinator, after citus_set_coordinator_host() and citus_add_node() for each worker.';
    END IF;

    -- A user's table first checked, so that a wrong one changes nothing.
    IF user_table IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid OPERATOR(pg_catalog.=) user_table AND a.attname OPERATOR(pg_catalog.=) 'tenant_id'
                          AND a.atttypid OPERATOR(pg_catalog.=) 'pg_catalog.uuid'::pg_catalog.regtype
                          AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'table % has no tenant_id column of type uuid', user_table
                USING ERRCODE = 'ZF702',
                      HINT = 'A table distributed next to fincore''s is sharded by its tenant_id uuid, as fincore''s are.';
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                    WHERE p.logicalrelid OPERATOR(pg_catalog.=) user_table
                      AND p.colocationid OPERATOR(pg_catalog.<>) (
                          SELECT q.colocationid FROM pg_catalog.pg_dist_partition q
                           WHERE q.logicalrelid OPERATOR(pg_catalog.=) 'fincore.accounts'::pg_catalog.regclass)) THEN
            RAISE EXCEPTION 'table % is already distributed, and not with fincore''s tables', user_table
                USING ERRCODE = 'ZF702',
                      HINT = 'Undistribute it (undistribute_table()) and call fincore.distribute() again.';
        END IF;
    END IF;

    SELECT pg_catalog.bool_or(NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                                           WHERE p.logicalrelid OPERATOR(pg_catalog.=) d.relation))
      INTO pending FROM fincore.distribution_plan() d;
    IF pending THEN
        -- fincore's tables carry triggers (the append-only guards, the cache watches); on Citus
        -- they fire on the shards, and none of fincore's results depends on one firing on the
        -- coordinator (docs/scale-out.md).
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        -- Keys to reference tables must be made over one connection per node (Citus).
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
        -- The foreign keys among fincore's tables are taken off while their tables move (Citus
        -- takes a key only between tables already placed) and put back after, except the
        -- consumers' key to tenants: a coordinator table cannot reference a reference table
        -- without becoming a Citus table itself.
        FOR fk IN SELECT c.conrelid::pg_catalog.regclass AS rel, c.conname,
                         pg_catalog.pg_get_constraintdef(c.oid) AS def
                    FROM pg_catalog.pg_constraint c
                   WHERE c.contype OPERATOR(pg_catalog.=) 'f'
                     AND c.connamespace OPERATOR(pg_catalog.=) 'fincore'::pg_catalog.regnamespace
                     AND c.confrelid IN (SELECT d.relation FROM fincore.distribution_plan() d)
                   ORDER BY c.conrelid, c.conname LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', fk.rel, fk.conname);
            -- The workers' own copies of the table (made when the extension reached them, and
            -- the ones Citus keeps as the distributed table's shell there) lose it too, since
            -- the key put back below reaches them with the table.
            IF EXISTS (SELECT 1 FROM pg_catalog.run_command_on_workers(
                           pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', fk.rel, fk.conname)) w
                        WHERE NOT w.success) THEN
                RAISE EXCEPTION 'dropping the foreign key % of % on a worker failed', fk.conname, fk.rel;
            END IF;
            IF fk.rel IN (SELECT d.relation FROM fincore.distribution_plan() d) THEN
                fks := fks OPERATOR(pg_catalog.||) pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s',
                                                                    fk.rel, fk.conname, fk.def);
            END IF;
        END LOOP;
        FOR r IN SELECT d.relation, d.placement FROM fincore.distribution_plan() d
                  WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                                     WHERE p.logicalrelid OPERATOR(pg_catalog.=) d.relation)
                  ORDER BY d.ordinal LOOP
            IF r.placement OPERATOR(pg_catalog.=) 'reference' THEN
                PERFORM pg_catalog.create_reference_table(r.relation);
            ELSIF r.relation OPERATOR(pg_catalog.=) 'fincore.accounts'::pg_catalog.regclass THEN
                PERFORM pg_catalog.create_distributed_table(r.relation, 'tenant_id');
            ELSE
                PERFORM pg_catalog.create_distributed_table(r.relation, 'tenant_id',
                                                            colocate_with => 'fincore.accounts');
            END IF;
            RETURN NEXT pg_catalog.format('%s: %s', r.relation, r.placement);
        END LOOP;
        FOR i IN 1 .. pg_catalog.cardinality(fks) LOOP
            EXECUTE fks[i];
        END LOOP;
    END IF;

    -- Functions that plan once per session (force_generic_plan: the payment functions) would
    -- leave Citus a parameter to prune by at execution, which it cannot do for every statement
    -- (the ledger's UPDATE ... FROM of balances): on Citus each statement is planned for its values.
    FOR f IN SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace OPERATOR(pg_catalog.=) 'fincore'::pg_catalog.regnamespace
                AND 'plan_cache_mode=force_generic_plan' OPERATOR(pg_catalog.=) ANY (p.proconfig)
              ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s RESET plan_cache_mode', f);
    END LOOP;

    IF user_table IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                                               WHERE p.logicalrelid OPERATOR(pg_catalog.=) user_table) THEN
        PERFORM pg_catalog.create_distributed_table(user_table, 'tenant_id', colocate_with => 'fincore.accounts');
        RETURN NEXT pg_catalog.format('%s: distributed', user_table);
    END IF;
END
$fn$;
COMMENT ON FUNCTION fincore.distribute(regclass) IS
    'On a Citus coordinator: distributes fincore''s tables (fincore.distribution_plan()), and user_table if given, by tenant_id, colocated with fincore.accounts; returns what it placed. Idempotent. ZF701 without Citus or off the coordinator, ZF702 for a user table without a tenant_id uuid or distributed otherwise.';
REVOKE ALL ON FUNCTION fincore.distribute(regclass) FROM PUBLIC;

-- PostgREST's pre-request function (db-pre-request = "fincore.pre_request"): on Citus the
-- claims, then the rate limit policies (sql/modules/ratelimit.sql).  On Citus the
-- claims PostgREST sets with set_config(..., true) stay in the coordinator's backend, while the
-- row level security policies of distributed tables run on the workers.  SET LOCAL statements
-- do reach the workers (citus.propagate_set_commands = 'local'): the claims are set again that
-- way, so a policy on a worker sees the tenant the coordinator sees.
CREATE FUNCTION fincore.pre_request() RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $fn$
-- The function's SET clause restores search_path alone when it returns; the SET LOCALs of
-- other settings below last until the end of the transaction.
DECLARE
    setting text;
    value text;
BEGIN
    -- Without Citus the row level security policies run in this backend, which has the claims.
    IF pg_catalog.current_setting('citus.propagate_set_commands', true) IS NOT NULL THEN
        PERFORM pg_catalog.set_config('citus.propagate_set_commands', 'local', true);
        FOREACH setting IN ARRAY ARRAY['request.jwt.claims', 'request.jwt.claim.sub',
                                       'request.jwt.claim.' OPERATOR(pg_catalog.||)
                                           COALESCE(pg_catalog.current_setting('fincore.tenant_claim', true),
                                                               'tenant_id')] LOOP
            value := pg_catalog.current_setting(setting, true);
            IF value IS NOT NULL AND value OPERATOR(pg_catalog.<>) ''
               AND setting OPERATOR(pg_catalog.~) '^[a-z_][a-z0-9_.]*$' THEN
                EXECUTE pg_catalog.format('SET LOCAL %s = %L', setting, value);
            END IF;
        END LOOP;
    END IF;
    -- Then the request's rate limit policy, if any applies (docs/rate-limits.md): HTTP 429 when
    -- limited.  After the claims: a tenant's policies are read under row level security, on a
    -- worker under Citus.
    PERFORM fincore._rate_limit_request();
END
$fn$;
COMMENT ON FUNCTION fincore.pre_request() IS
    'PostgREST''s db-pre-request: applies the first matching rate limit policy (HTTP 429 with Retry-After when limited; docs/rate-limits.md); on Citus, sets the JWT claims again with SET LOCAL, which Citus propagates, so that row level security on the workers sees the caller''s tenant.';

INSERT INTO fincore.function_audience (fn, audience) VALUES ('fincore.pre_request()', 'app');

-- grants: the last module.  Every function of an audience is revoked from
-- PUBLIC, then the registered application roles (and Supabase's, when they
-- exist) get their grants; an upgrade script ends the same way, so new
-- functions reach existing app roles.

DO $grants$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT f.fn FROM fincore.function_audience f LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.fn::regprocedure);
    END LOOP;
    -- Supabase: anon and authenticated are app roles; service_role is trusted.
    FOR r IN SELECT rolname, rolname = 'service_role' AS trusted FROM pg_catalog.pg_roles
              WHERE rolname IN ('anon', 'authenticated', 'service_role')
                AND rolname NOT IN (SELECT a.role_name FROM fincore.app_roles a) LOOP
        PERFORM fincore.grant_app_role(r.rolname, r.trusted);
    END LOOP;
    FOR r IN SELECT a.role_name, a.trusted FROM fincore.app_roles a
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles p WHERE p.rolname = a.role_name) LOOP
        PERFORM fincore.grant_app_role(r.role_name, r.trusted);
    END LOOP;
END
$grants$;
