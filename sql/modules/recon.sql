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
