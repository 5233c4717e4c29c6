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
