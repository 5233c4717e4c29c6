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
