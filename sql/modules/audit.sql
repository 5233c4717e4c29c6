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
