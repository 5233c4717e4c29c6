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
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
    SELECT c.name, c.topics, c.tenant_scope, p.n, p.oldest, pg_catalog.now() OPERATOR(pg_catalog.-) p.oldest,
           (SELECT pg_catalog.count(*) FROM fincore.outbox_retries r WHERE r.consumer OPERATOR(pg_catalog.=) c.name),
           (SELECT pg_catalog.count(*) FROM fincore.dead_events d WHERE d.consumer OPERATOR(pg_catalog.=) c.name),
           c.positioned_at
      FROM fincore.outbox_consumers c
     CROSS JOIN LATERAL (
        SELECT pg_catalog.count(*) AS n, pg_catalog.min(e.created_at) AS oldest
          FROM fincore.outbox_stream e
         WHERE (e.txid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmax(c.position)
                OR e.txid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip(c.position))))
           AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, c.position)
           AND NOT (c.batch_end IS NOT NULL AND pg_catalog.pg_visible_in_snapshot(e.txid, c.batch_end)
                    AND e.seq OPERATOR(pg_catalog.<=) c.batch_acked)
           AND ('*' OPERATOR(pg_catalog.=) ANY (c.topics) OR e.topic OPERATOR(pg_catalog.=) ANY (c.topics))
           AND (c.tenant_scope IS NULL OR e.tenant_id OPERATOR(pg_catalog.=) c.tenant_scope)) AS p
     ORDER BY c.name
$fn$;
COMMENT ON FUNCTION fincore.consumer_lag() IS
    'Each consumer''s backlog: committed events not yet acknowledged, the oldest one''s time and age, retries waiting, dead letters, when its position last moved.';

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
CREATE OR REPLACE FUNCTION fincore.subscribe(consumer text, topics text[], tenant_scope uuid DEFAULT NULL,
                                  max_attempts integer DEFAULT 10, backoff interval DEFAULT '1 second',
                                  backoff_max interval DEFAULT '1 hour') RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    old record;
    t   text;
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
    IF subscribe.tenant_scope IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM fincore.tenants tt WHERE tt.id = subscribe.tenant_scope) THEN
        RAISE EXCEPTION 'tenant % does not exist', subscribe.tenant_scope USING ERRCODE = 'ZF204';
    END IF;

    -- Retention (outbox_maintenance) holds SHARE ROW EXCLUSIVE on outbox_slots while it
    -- decides what every consumer has passed: a new position is never taken under it.
    LOCK TABLE fincore.outbox_slots IN ROW EXCLUSIVE MODE;
    INSERT INTO fincore.outbox_consumers AS c (name, topics, tenant_scope, max_attempts, backoff, backoff_max, position)
    VALUES (subscribe.consumer, subscribe.topics, subscribe.tenant_scope, subscribe.max_attempts,
            subscribe.backoff, subscribe.backoff_max, fincore._outbox_latest_snapshot())
    ON CONFLICT ON CONSTRAINT outbox_consumers_pkey DO NOTHING;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT c.tenant_scope INTO old FROM fincore.outbox_consumers c WHERE c.name = subscribe.consumer FOR UPDATE;
    IF old.tenant_scope IS DISTINCT FROM subscribe.tenant_scope THEN
        RAISE EXCEPTION 'consumer % exists with tenant scope %', subscribe.consumer, coalesce(old.tenant_scope::text, 'NULL (all tenants)')
            USING ERRCODE = 'ZF504', HINT = 'A consumer''s tenant scope is fixed: unsubscribe it first, or choose another name.';
    END IF;
    UPDATE fincore.outbox_consumers c
       SET topics = subscribe.topics, max_attempts = subscribe.max_attempts,
           backoff = subscribe.backoff, backoff_max = subscribe.backoff_max
     WHERE c.name = subscribe.consumer;
END
$fn$;

CREATE OR REPLACE FUNCTION fincore.replay_dead(consumer text, event_ids uuid[] DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    n bigint;
BEGIN
    IF replay_dead.consumer IS NULL
       OR NOT EXISTS (SELECT 1 FROM fincore.outbox_consumers c WHERE c.name = replay_dead.consumer) THEN
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
         WHERE e.consumer = replay_dead.consumer
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

-- Outbox: a consumer an app role may not use is reported as a missing one (ZF502).
COMMENT ON FUNCTION fincore.poll(text, integer) IS
    'The consumer''s next events, at most max (1-10000): retries that are due first, then its batch in commit order. Polling again without ack returns the same events. ZF502 unknown consumer (also one the caller may not use: another tenant''s, or a cross-tenant one for an app role), ZF503 bad max.';

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
            ('fincore.decisions', 'distributed', 23)) AS v(relation, placement, ordinal);
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

-- PostgREST's pre-request function on Citus (db-pre-request = "fincore.pre_request"): the
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
    IF pg_catalog.current_setting('citus.propagate_set_commands', true) IS NULL THEN
        RETURN;             -- not Citus: the policies run in this backend, which has the claims
    END IF;
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
END
$fn$;
COMMENT ON FUNCTION fincore.pre_request() IS
    'PostgREST''s db-pre-request on Citus: sets the JWT claims again with SET LOCAL, which Citus propagates, so that row level security on the workers sees the caller''s tenant. Does nothing without Citus.';

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
