-- ledger: double-entry accounts and transfers (src/ledger.c, src/accounts.c).
--
-- Accounts hold four counters in minor units; transfers are append-only rows, and
-- every change of a counter is implied by exactly one transfer row, which is what
-- fincore.verify() checks.  All writes go through the C functions below, which
-- validate before they write, lock the accounts they touch in one global order
-- (by id) and never leave a partial write.

-- ---------------------------------------------------------------------------
-- Accounts.
--
-- The ledger tables carry no CHECK constraints: every row is written by the C
-- engine, which validates it first (app roles cannot write the tables), and
-- fincore.verify() proves the result.  A CHECK would be evaluated, and its
-- expression read back from the catalogue, on every posting (measured: about
-- a tenth of a transfer's CPU time).
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.accounts (
    id              uuid        NOT NULL,
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant(),
    currency        text        NOT NULL,
    code            integer     NOT NULL DEFAULT 0,
    flags           integer     NOT NULL DEFAULT 0,
    credit_limit    bigint,
    status          text        NOT NULL DEFAULT 'active',
    external_ref    text,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    debits_pending  bigint      NOT NULL DEFAULT 0,
    debits_posted   bigint      NOT NULL DEFAULT 0,
    credits_pending bigint      NOT NULL DEFAULT 0,
    credits_posted  bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    -- Keys lead with the tenant (docs/scale-out.md): an id is unique within its tenant, and
    -- on Citus a tenant's rows are one shard's.
    PRIMARY KEY (tenant_id, id)
) WITH (fillfactor = 80);      -- room for HOT updates: no indexed column changes with a balance
CREATE UNIQUE INDEX accounts_external_ref_idx ON fincore.accounts (tenant_id, external_ref)
    WHERE external_ref IS NOT NULL;
COMMENT ON TABLE fincore.accounts IS
    'Ledger accounts: currency, flags, status and the four balance counters (minor units). Hot accounts also have rows in fincore.account_deltas. Written only by fincore''s functions.';
SELECT fincore.protect('fincore.accounts');
SELECT pg_catalog.pg_extension_config_dump('fincore.accounts', '');

-- ---------------------------------------------------------------------------
-- Transfers: append-only.  kind is one of
--   posted    a transfer that moved amount at once
--   pending   a hold of amount (two-phase, first phase)
--   post      posts amount of the hold pending_id and releases the rest (pending_amount = the hold)
--   void      releases the hold pending_id (amount 0, pending_amount = the hold)
--   expire    the same, when the hold timed out
--   reversal  moves amount back along reversal_of (debit and credit swapped)
-- Debit and credit accounts are stored on every row, so that an account's
-- counters are the sum of its rows alone.  flags is TigerBeetle's (bits):
-- 1 balancing_debit, 2 balancing_credit, 4 closing_debit, 8 closing_credit,
-- 16 imported.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.transfers (
    id                uuid        NOT NULL,
    tenant_id         uuid        NOT NULL DEFAULT fincore.require_tenant(),
    debit_account_id  uuid        NOT NULL,
    credit_account_id uuid        NOT NULL,
    amount            bigint      NOT NULL,
    pending_amount    bigint      NOT NULL DEFAULT 0,
    currency          text        NOT NULL,
    code              integer     NOT NULL DEFAULT 0,
    kind              text        NOT NULL,
    pending_id        uuid,
    reversal_of       uuid,
    timeout           interval,
    expires_at        timestamptz,
    metadata          jsonb,
    created_at        timestamptz NOT NULL,
    flags             integer     NOT NULL DEFAULT 0,
    event_seq         bigint,
    event_txid        xid8,
    PRIMARY KEY (tenant_id, id)
);
-- A hold is resolved (posted, voided or expired) at most once.
CREATE UNIQUE INDEX transfers_pending_once_idx ON fincore.transfers (tenant_id, pending_id) WHERE pending_id IS NOT NULL;
CREATE INDEX transfers_reversal_idx ON fincore.transfers (reversal_of) WHERE reversal_of IS NOT NULL;
-- An account's transfers, one index per side, keyed by the account alone: the entries of one
-- account then share a key, which B-tree deduplication stores once with a list of row
-- pointers (6 bytes a transfer instead of a 40-byte entry; with created_at in the key, every
-- entry was unique).  Time order and ranges are applied to an account's rows after the index
-- (account_transfers sorts them anyway); an account read by time range over a long history
-- is what the history flag and its time-ordered fincore.account_history are for.
CREATE INDEX transfers_debit_idx ON fincore.transfers (debit_account_id);
CREATE INDEX transfers_credit_idx ON fincore.transfers (credit_account_id);
-- The ledger's events are its transfer rows (no second row, no copy): a transfer written
-- while its tenant's ledger events are on carries its place in the event stream, event_seq
-- (from fincore.outbox_seq, as every event's seq) and event_txid (the writing transaction),
-- by which consumers find it, as they find fincore.outbox_events rows (fincore.outbox_stream).
CREATE INDEX transfers_event_seq_idx ON fincore.transfers (event_seq) WHERE event_seq IS NOT NULL;
CREATE INDEX transfers_event_txid_idx ON fincore.transfers (event_txid) WHERE event_txid IS NOT NULL;
COMMENT ON TABLE fincore.transfers IS
    'Every movement of money, append-only: transfers, holds and their resolutions (post, void, expire), reversals. Never updated or deleted.';
SELECT fincore.protect('fincore.transfers');
SELECT pg_catalog.pg_extension_config_dump('fincore.transfers', '');

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

-- The holds not yet resolved, for the expiry sweep: an index of open holds, not a
-- record of money (the transfers rows are); a row leaves when its hold resolves.
CREATE TABLE fincore.pending_holds (
    transfer_id uuid        NOT NULL,
    tenant_id   uuid        NOT NULL DEFAULT fincore.require_tenant(),
    expires_at  timestamptz,
    PRIMARY KEY (tenant_id, transfer_id)
);
CREATE INDEX pending_holds_expiry_idx ON fincore.pending_holds (expires_at) WHERE expires_at IS NOT NULL;
COMMENT ON TABLE fincore.pending_holds IS
    'Holds (pending transfers) not yet posted, voided or expired, with their expiry; maintained by the ledger for fincore.expire_pending().';
SELECT fincore.protect('fincore.pending_holds');
SELECT pg_catalog.pg_extension_config_dump('fincore.pending_holds', '');

-- Balance after every transfer, for accounts flagged history.
CREATE TABLE fincore.account_history (
    account_id      uuid        NOT NULL,
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant(),
    at              timestamptz NOT NULL,
    transfer_id     uuid        NOT NULL,
    debits_pending  bigint      NOT NULL,
    debits_posted   bigint      NOT NULL,
    credits_pending bigint      NOT NULL,
    credits_posted  bigint      NOT NULL,
    PRIMARY KEY (tenant_id, account_id, at, transfer_id)
);
COMMENT ON TABLE fincore.account_history IS
    'The four counters of a history-flagged account after each transfer that touched it; append-only.';
SELECT fincore.protect('fincore.account_history');
SELECT pg_catalog.pg_extension_config_dump('fincore.account_history', '');

-- Hot accounts: the legs that may not break a limit are appended here instead of
-- updating the account row, and folded into it by fincore.rollup_hot_accounts().
-- The balance of a hot account is its row plus its deltas, read in one snapshot.
CREATE TABLE fincore.account_deltas (
    account_id      uuid        NOT NULL,
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant(),
    transfer_id     uuid        NOT NULL,
    debits_pending  bigint      NOT NULL,
    debits_posted   bigint      NOT NULL,
    credits_pending bigint      NOT NULL,
    credits_posted  bigint      NOT NULL
);
CREATE INDEX account_deltas_account_idx ON fincore.account_deltas (account_id);
CREATE INDEX account_deltas_tenant_idx ON fincore.account_deltas (tenant_id, account_id);
COMMENT ON TABLE fincore.account_deltas IS
    'Not yet rolled-up balance changes of hot accounts (appended without locking the account; folded in by fincore.rollup_hot_accounts()).';
SELECT fincore.protect('fincore.account_deltas');
SELECT pg_catalog.pg_extension_config_dump('fincore.account_deltas', '');

-- ---------------------------------------------------------------------------
-- Append-only enforcement, for app roles and the table owner alike.  The
-- triggers fire ALWAYS, so session_replication_role = replica does not switch
-- them off either; only ALTER TABLE ... DISABLE TRIGGER by the owner would.
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.ledger_append_only() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_ledger_append_only';
COMMENT ON FUNCTION fincore.ledger_append_only() IS
    'Trigger: refuses UPDATE, DELETE and TRUNCATE of ledger records (ZF327).';
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON fincore.transfers
    FOR EACH ROW EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER transfers_no_truncate BEFORE TRUNCATE ON fincore.transfers
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER account_history_append_only BEFORE UPDATE OR DELETE ON fincore.account_history
    FOR EACH ROW EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER account_history_no_truncate BEFORE TRUNCATE ON fincore.account_history
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON fincore.accounts
    FOR EACH ROW EXECUTE FUNCTION fincore.ledger_append_only();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON fincore.accounts
    FOR EACH STATEMENT EXECUTE FUNCTION fincore.ledger_append_only();
-- An account's identity never changes (fincore caches it per backend); only
-- this column list fires the trigger, so balance updates do not pay for it.
CREATE TRIGGER accounts_immutable
    BEFORE UPDATE OF id, tenant_id, currency, code, flags, credit_limit, created_at ON fincore.accounts
    FOR EACH ROW EXECUTE FUNCTION fincore.ledger_append_only();
ALTER TABLE fincore.transfers ENABLE ALWAYS TRIGGER transfers_append_only;
ALTER TABLE fincore.transfers ENABLE ALWAYS TRIGGER transfers_no_truncate;
ALTER TABLE fincore.account_history ENABLE ALWAYS TRIGGER account_history_append_only;
ALTER TABLE fincore.account_history ENABLE ALWAYS TRIGGER account_history_no_truncate;
ALTER TABLE fincore.accounts ENABLE ALWAYS TRIGGER accounts_no_delete;
ALTER TABLE fincore.accounts ENABLE ALWAYS TRIGGER accounts_no_truncate;
ALTER TABLE fincore.accounts ENABLE ALWAYS TRIGGER accounts_immutable;

-- ---------------------------------------------------------------------------
-- Account functions (C, SECURITY DEFINER: app roles cannot write the tables).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.create_account(
        currency text, code integer DEFAULT 0, flags text[] DEFAULT '{}', credit_limit bigint DEFAULT NULL,
        id uuid DEFAULT NULL, external_ref text DEFAULT NULL, metadata jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_create_account';
COMMENT ON FUNCTION fincore.create_account(text, integer, text[], bigint, uuid, text, jsonb) IS
    'Creates an account in the current tenant and returns its id (a UUIDv7 unless given). Flags: debits_must_not_exceed_credits, credits_must_not_exceed_debits, history, hot, and closed (created closed). Idempotent for the same id and fields; ZF325 for the same id with other fields; ZF329 for a reserved id.';

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

CREATE FUNCTION fincore.freeze_account(account uuid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_freeze_account';
COMMENT ON FUNCTION fincore.freeze_account(uuid) IS
    'Freezes an active account: no new debits or credits; voids and expiry of its holds still work. Idempotent.';

CREATE FUNCTION fincore.unfreeze_account(account uuid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_unfreeze_account';
COMMENT ON FUNCTION fincore.unfreeze_account(uuid) IS 'Makes a frozen account active again. Idempotent; ZF328 for a closed account.';

CREATE FUNCTION fincore.close_account(account uuid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_close_account';
COMMENT ON FUNCTION fincore.close_account(uuid) IS
    'Closes an account for good: afterwards only voids and expiry of its holds work. Requires no pending amounts (ZF326). Idempotent.';

-- ---------------------------------------------------------------------------
-- Transfers (C).
-- ---------------------------------------------------------------------------

CREATE TYPE fincore.transfer_result AS (
    id                uuid,
    result            text,        -- 'created', or 'exists' for an idempotent replay
    kind              text,
    debit_account_id  uuid,
    credit_account_id uuid,
    amount            bigint,
    pending_id        uuid,
    reversal_of       uuid,
    created_at        timestamptz,
    fee               bigint,      -- the fee charged with it (NULL without a fee schedule)
    fee_transfer_id   uuid         -- the fee leg (NULL without a fee, or for a zero fee)
);
COMMENT ON TYPE fincore.transfer_result IS 'What fincore.transfer, post_pending, void_pending and reverse return.';

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

CREATE FUNCTION fincore.post_pending(pending_id uuid, amount bigint DEFAULT NULL, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_post_pending';
COMMENT ON FUNCTION fincore.post_pending(uuid, bigint, uuid) IS
    'Posts all (amount NULL) or part of a hold; the rest is released. A hold resolves once; after its timeout it is expired (ZF312).';

CREATE FUNCTION fincore.void_pending(pending_id uuid, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_void_pending';
COMMENT ON FUNCTION fincore.void_pending(uuid, uuid) IS 'Releases a hold. A hold resolves once; after its timeout it is expired (ZF312).';

CREATE FUNCTION fincore.reverse_transfer(transfer_id uuid, amount bigint DEFAULT NULL, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_reverse';
COMMENT ON FUNCTION fincore.reverse_transfer(uuid, bigint, uuid) IS
    'Moves all that is left (amount NULL) or part of a posted transfer back, as a reversal linked to it; the total reversed never exceeds the original (ZF316). Idempotent by id.';
-- 0.1.0's name, kept for one release (CHANGELOG, "Renamed"): the same C function.
CREATE FUNCTION fincore.reverse(transfer_id uuid, amount bigint DEFAULT NULL, id uuid DEFAULT NULL)
    RETURNS fincore.transfer_result
    LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_reverse';
COMMENT ON FUNCTION fincore.reverse(uuid, bigint, uuid) IS
    'Deprecated alias of fincore.reverse_transfer (reverse is a built-in string function''s name); removed in 0.3.0.';

CREATE TYPE fincore.transfer_request AS (
    id             uuid,
    debit_account  uuid,
    credit_account uuid,
    amount         bigint,
    code           integer,
    pending        boolean,
    timeout        interval,
    post_pending   uuid,        -- post this hold (amount NULL = all of it)
    void_pending   uuid,        -- void this hold
    reverse        uuid,        -- reverse this transfer (amount NULL = all that is left)
    linked         boolean,     -- chained to the next item: the chain succeeds or fails as a whole
    metadata       jsonb,
    fee_schedule   text,        -- a fee, posted as a linked transfer to fee_account (a posted transfer only)
    fee_account    uuid,
    fee_mode       text,        -- on_top (NULL) or deducted
    fee_context    jsonb,
    balancing_debit  boolean,   -- TigerBeetle's: move at most amount, less as needed to keep the
    balancing_credit boolean,   -- debit account's debits within its credits (credit: the mirror image)
    closing_debit  boolean,     -- a hold that closes its debit account (voiding it opens it again)
    closing_credit boolean,     -- ... its credit account
    imported       boolean,     -- migrated from another ledger: created at "timestamp" (in the past)
    "timestamp"    timestamptz
);
COMMENT ON TYPE fincore.transfer_request IS
    'One item of fincore.create_transfers(): a transfer or hold (debit_account, credit_account, amount), or a post_pending, void_pending or reverse of another transfer.';

CREATE FUNCTION fincore.transfer_result_sqlstate(result text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_transfer_result_sqlstate';
COMMENT ON FUNCTION fincore.transfer_result_sqlstate(text) IS
    'The SQLSTATE a single call raises for a create_transfers() result (00000 for ok and exists; e.g. exceeds_credits is ZF304), NULL for a name that is not a result.';

CREATE FUNCTION fincore.create_transfers(requests fincore.transfer_request[])
    RETURNS TABLE (index integer, id uuid, result text)
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_create_transfers';
COMMENT ON FUNCTION fincore.create_transfers(fincore.transfer_request[]) IS
    'A batch of transfers with TigerBeetle-style per-item results (ok, exists, or the reason it was refused). Items are independent unless linked; a linked chain succeeds or fails as a whole. An id refused on the ledger''s state (an account not found, a limit, ...) stays failed: id_already_failed. A batch is imported as a whole or not at all.';

CREATE FUNCTION fincore.expire_pending(max_holds integer DEFAULT 1000) RETURNS integer
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_expire_pending';
COMMENT ON FUNCTION fincore.expire_pending(integer) IS
    'Releases holds whose timeout has passed (an expire row each), in every tenant; returns how many. For pg_cron via fincore.maintenance().';

CREATE FUNCTION fincore.rollup_hot_accounts(max_accounts integer DEFAULT 1000) RETURNS integer
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'fincore_rollup_hot_accounts';
COMMENT ON FUNCTION fincore.rollup_hot_accounts(integer) IS
    'Folds the appended deltas of hot accounts into their rows, in every tenant; returns how many accounts. For pg_cron via fincore.maintenance().';

-- Maintenance steps.
CREATE FUNCTION fincore.expire_pending_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.expire_pending(500);
        total := total + n;
        EXIT WHEN n < 500 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION fincore.expire_pending_step(interval) IS 'Maintenance step: expire_pending in batches of 500 until none is left or the budget is spent.';

CREATE FUNCTION fincore.rollup_hot_accounts_step(budget interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + budget;
    n        integer;
    total    bigint := 0;
BEGIN
    LOOP
        n := fincore.rollup_hot_accounts(100);
        total := total + n;
        EXIT WHEN n < 100 OR pg_catalog.clock_timestamp() >= deadline;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION fincore.rollup_hot_accounts_step(interval) IS 'Maintenance step: rollup_hot_accounts in batches of 100 accounts until none is left or the budget is spent.';

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('expire_pending', 'fincore.expire_pending_step(interval)', 100, 'Release holds whose timeout has passed'),
    ('rollup_hot_accounts', 'fincore.rollup_hot_accounts_step(interval)', 110, 'Fold hot accounts'' deltas into their rows');

-- ---------------------------------------------------------------------------
-- Reading (SECURITY INVOKER: the caller's policies apply).
-- ---------------------------------------------------------------------------

-- The counters implied by the transfer rows of an account; used by as-of
-- balances of accounts without history and by verify().  By columns, so that Citus can run it
-- on a shard's rows (whose row type is the shard's, not fincore.transfers); by row, for callers.
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

CREATE FUNCTION fincore.transfer_effects(t fincore.transfers,
        OUT account_id uuid, OUT debits_pending bigint, OUT debits_posted bigint,
        OUT credits_pending bigint, OUT credits_posted bigint)
    RETURNS SETOF record
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE ROWS 2
BEGIN ATOMIC
    SELECT * FROM fincore.transfer_effects(t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.pending_amount);
END;
COMMENT ON FUNCTION fincore.transfer_effects(fincore.transfers) IS
    'How one transfer row changes the counters of its debit and its credit account (two rows).';

CREATE FUNCTION fincore.balance(account uuid, as_of timestamptz DEFAULT NULL,
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
COMMENT ON FUNCTION fincore.balance(uuid, timestamptz) IS
    'An account''s four counters and derived balances (credit-normal: posted = credits_posted - debits_posted; pending = credits_pending - debits_pending; available = posted - debits_pending + credit_limit), now or as of a time (exact: from history rows when flagged history, else from the transfers). Hot accounts include their deltas. NULL for an account the caller cannot see.';

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

CREATE VIEW fincore.account_balances WITH (security_invoker = true) AS
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
COMMENT ON VIEW fincore.account_balances IS
    'Accounts with their flags by name and their counters including not yet rolled-up deltas of hot accounts.';

CREATE VIEW fincore.transfer_log WITH (security_invoker = true) AS
    SELECT t.id, t.tenant_id, t.kind, t.debit_account_id, t.credit_account_id,
           fincore.from_minor(t.amount, t.currency) AS amount, t.code, t.pending_id, t.reversal_of,
           t.expires_at, t.metadata, t.created_at
      FROM fincore.transfers t;
COMMENT ON VIEW fincore.transfer_log IS 'Transfers with their amount as a fincore.amount.';

-- verify(): one row per broken invariant; nothing when the books are right.
-- SECURITY INVOKER: an app role checks its own tenant; a superuser every tenant.
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

CREATE FUNCTION fincore._transfer_audit_payload(t fincore.transfers) RETURNS jsonb
    LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_transfer_audit_payload';
COMMENT ON FUNCTION fincore._transfer_audit_payload(fincore.transfers) IS
    'Internal: a transfer''s audit record payload, {"new": the row without its tenant and empty columns}, built by the sealer (docs/audit.md).';

CREATE OR REPLACE VIEW fincore.outbox_stream WITH (security_invoker = true) AS
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

CREATE FUNCTION fincore.verify()
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
COMMENT ON FUNCTION fincore.verify() IS
    'Proves the books: one row per broken invariant (debits = credits per tenant and currency, counters = transfers, limits, history, holds, reversals); no rows when all hold. Runs with the caller''s rights.';

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.create_account(text,integer,text[],bigint,uuid,text,jsonb)', 'app'),
    ('fincore.create_accounts(fincore.account_request[])', 'app'),
    ('fincore.freeze_account(uuid)', 'app'),
    ('fincore.unfreeze_account(uuid)', 'app'),
    ('fincore.close_account(uuid)', 'app'),
    ('fincore.transfer(uuid,uuid,bigint,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamptz)', 'app'),
    ('fincore.transfer(uuid,uuid,fincore.amount,uuid,integer,boolean,interval,jsonb,text,uuid,text,jsonb,boolean,boolean,boolean,boolean,boolean,timestamptz)', 'app'),
    ('fincore.post_pending(uuid,bigint,uuid)', 'app'),
    ('fincore.void_pending(uuid,uuid)', 'app'),
    ('fincore.reverse_transfer(uuid,bigint,uuid)', 'app'),
    ('fincore.reverse(uuid,bigint,uuid)', 'app'),
    ('fincore.create_transfers(fincore.transfer_request[])', 'app'),
    ('fincore.transfer_result_sqlstate(text)', 'app'),
    ('fincore.expire_pending(integer)', 'trusted'),
    ('fincore.rollup_hot_accounts(integer)', 'trusted');
REVOKE ALL ON FUNCTION fincore.expire_pending_step(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.rollup_hot_accounts_step(interval) FROM PUBLIC;
