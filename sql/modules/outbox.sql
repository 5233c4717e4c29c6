-- outbox: the transactional outbox and the idempotent inbox (src/outbox.c, docs/outbox.md).
--
-- Events are written in the caller's transaction into fincore.outbox_events, a table
-- partitioned into three rotating slots; consumers read them in batches between two
-- snapshots (PgQ's design), never UPDATE or DELETE them, and keep their position in one
-- small row each.  Old slots are emptied with TRUNCATE by fincore.outbox_maintenance()
-- once every consumer has passed them.

-- ---------------------------------------------------------------------------
-- Event storage.
-- ---------------------------------------------------------------------------

-- The low 62 bits of every event id (a UUIDv7) are its seq, so the sequence stops there.
CREATE SEQUENCE fincore.outbox_seq AS bigint MAXVALUE 4611686018427387903 CACHE 1;
COMMENT ON SEQUENCE fincore.outbox_seq IS 'Event sequence numbers: the order of events within a batch; also the low 62 bits of each event id.';

-- Column names id, aggregatetype, aggregateid, type and payload are Debezium's outbox
-- event router defaults.
CREATE TABLE fincore.outbox_events (
    id            uuid        NOT NULL,
    seq           bigint      NOT NULL,
    txid          xid8        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    tenant_id     uuid        NOT NULL DEFAULT fincore.require_tenant(),
    slot          smallint    NOT NULL,
    topic         text        NOT NULL,
    type          text        NOT NULL,
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    payload       jsonb       NOT NULL,
    headers       jsonb
) PARTITION BY LIST (slot);
COMMENT ON TABLE fincore.outbox_events IS
    'Outbox events (insert-only): written by fincore.emit() in the caller''s transaction, read by consumers in snapshot batches, removed by TRUNCATE of a whole slot. txid is the writing transaction (top level).';
CREATE TABLE fincore.outbox_events_0 PARTITION OF fincore.outbox_events FOR VALUES IN (0);
CREATE TABLE fincore.outbox_events_1 PARTITION OF fincore.outbox_events FOR VALUES IN (1);
CREATE TABLE fincore.outbox_events_2 PARTITION OF fincore.outbox_events FOR VALUES IN (2);
COMMENT ON TABLE fincore.outbox_events_0 IS 'Rotating slot 0 of fincore.outbox_events.';
COMMENT ON TABLE fincore.outbox_events_1 IS 'Rotating slot 1 of fincore.outbox_events.';
COMMENT ON TABLE fincore.outbox_events_2 IS 'Rotating slot 2 of fincore.outbox_events.';
-- seq: a batch is read in seq order; txid: a batch's bounds are found by transaction id.
CREATE INDEX outbox_events_seq_idx ON fincore.outbox_events (seq);
CREATE INDEX outbox_events_txid_idx ON fincore.outbox_events (txid);

-- Which slot takes new events.  current -> draining (rotated out; writers that saw it
-- may still be inserting) -> sealed (no writer can insert any more; sealed_snapshot
-- sees every transaction that did) -> empty (truncated) -> current again.
CREATE TABLE fincore.outbox_slots (
    slot            smallint    PRIMARY KEY CHECK (slot BETWEEN 0 AND 2),
    partition       text        NOT NULL UNIQUE,
    state           text        NOT NULL CHECK (state IN ('current', 'draining', 'sealed', 'empty')),
    since           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sealed_snapshot pg_snapshot,
    CHECK ((state = 'sealed') = (sealed_snapshot IS NOT NULL))
);
CREATE UNIQUE INDEX outbox_slots_one_current ON fincore.outbox_slots (state) WHERE state = 'current';
COMMENT ON TABLE fincore.outbox_slots IS
    'The rotation state of the three event slots; changed only by fincore.outbox_maintenance().';
INSERT INTO fincore.outbox_slots (slot, partition, state) VALUES
    (0, 'outbox_events_0', 'current'), (1, 'outbox_events_1', 'empty'), (2, 'outbox_events_2', 'empty');

-- Global settings: one row at most; no row means the defaults.
CREATE TABLE fincore.outbox_config (
    singleton         boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
    notify            boolean  NOT NULL DEFAULT false,
    notify_channel    text     NOT NULL DEFAULT 'fincore_outbox' CHECK (notify_channel ~ '^[a-z_][a-z0-9_]{0,62}$'),
    rotation_interval interval NOT NULL DEFAULT '5 minutes' CHECK (rotation_interval >= '0'),
    inbox_retention   interval NOT NULL DEFAULT '30 days' CHECK (inbox_retention >= '0')
);
COMMENT ON TABLE fincore.outbox_config IS
    'Outbox settings (one row; none means the defaults): NOTIFY on commit of an emitting transaction (off by default), slot rotation interval, inbox retention. Set with fincore.outbox_configure().';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_config', '');

-- Per-tenant settings.
CREATE TABLE fincore.outbox_settings (
    tenant_id     uuid        PRIMARY KEY DEFAULT fincore.require_tenant()
                              REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    ledger_events boolean     NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fincore.outbox_settings IS
    'Per-tenant outbox settings: ledger_events = false stops the ledger''s transfer and account events for the tenant. Set with fincore.set_ledger_events().';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_settings', '');

-- ---------------------------------------------------------------------------
-- Consumers: infrastructure, one row each; the position is a snapshot.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.outbox_consumers (
    name          text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.:-]{0,62}(/[0-9]{1,3})?$'),
    topics        text[]      NOT NULL,
    tenant_scope  uuid        REFERENCES fincore.tenants (id) ON DELETE CASCADE,
    max_attempts  integer     NOT NULL DEFAULT 10 CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff       interval    NOT NULL DEFAULT '1 second' CHECK (backoff BETWEEN '0' AND '1 day'),
    backoff_max   interval    NOT NULL DEFAULT '1 hour' CHECK (backoff_max >= backoff AND backoff_max <= '30 days'),
    position      pg_snapshot NOT NULL,
    positioned_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    batch_end     pg_snapshot,
    batch_acked   bigint,
    batch_last    bigint,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- One partition of a partitioned consumer (subscribe(..., partitions => n)), named
    -- <consumer>/<partition_no>: it reads the events fincore.event_partition() gives it.
    partitions    integer,
    partition_no  integer,
    CHECK ((batch_end IS NULL) = (batch_acked IS NULL) AND (batch_end IS NULL) = (batch_last IS NULL)),
    CONSTRAINT outbox_consumers_partition_check CHECK (
        CASE WHEN partitions IS NULL THEN partition_no IS NULL AND pg_catalog.strpos(name, '/') = 0
             ELSE partitions BETWEEN 2 AND 256 AND partition_no BETWEEN 0 AND partitions - 1
                  AND name = pg_catalog.split_part(name, '/', 1) || '/' || partition_no::text END),
    -- A name is one reader or one set of partitions, never both, even when subscribed concurrently.
    CONSTRAINT outbox_consumers_one_shape EXCLUDE USING gist (
        (pg_catalog.split_part(name, '/', 1)) WITH OPERATOR(pg_catalog.=),
        (coalesce(partitions, 1)) WITH OPERATOR(pg_catalog.<>))
);
COMMENT ON TABLE fincore.outbox_consumers IS
    'Named consumers. position: every event whose txid is visible in this snapshot has been consumed. An open batch holds the events visible in batch_end and not in position, read in seq order; batch_acked is the last acknowledged seq of it.';
COMMENT ON COLUMN fincore.outbox_consumers.partitions IS
    'Of a partition of a partitioned consumer: how many partitions the consumer has (else NULL). Each reads the events fincore.event_partition(tenant_id, aggregatetype, aggregateid, partitions) gives its partition_no.';
COMMENT ON COLUMN fincore.outbox_consumers.tenant_scope IS
    'NULL: a cross-tenant consumer (trusted roles only); otherwise only this tenant''s events, and that tenant''s app roles may poll it.';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_consumers', '');
-- App roles see only the consumers scoped to their tenant.
ALTER TABLE fincore.outbox_consumers ENABLE ROW LEVEL SECURITY;
ALTER TABLE fincore.outbox_consumers FORCE ROW LEVEL SECURITY;
CREATE POLICY fincore_consumer_select ON fincore.outbox_consumers FOR SELECT TO PUBLIC
    USING (tenant_scope OPERATOR(pg_catalog.=) fincore.tenant_id());

-- Events a consumer nacked, waiting for their next attempt (copies: the slot may be gone).
CREATE TABLE fincore.outbox_retries (
    consumer        text        NOT NULL REFERENCES fincore.outbox_consumers (name) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    seq             bigint      NOT NULL,
    tenant_id       uuid        NOT NULL DEFAULT fincore.require_tenant(),
    topic           text        NOT NULL,
    type            text        NOT NULL,
    aggregatetype   text        NOT NULL,
    aggregateid     text        NOT NULL,
    payload         jsonb       NOT NULL,
    headers         jsonb,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL CHECK (attempts >= 1),
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    PRIMARY KEY (consumer, id)
);
CREATE INDEX outbox_retries_due_idx ON fincore.outbox_retries (consumer, next_attempt_at);
CREATE INDEX outbox_retries_tenant_idx ON fincore.outbox_retries (tenant_id, consumer);
COMMENT ON TABLE fincore.outbox_retries IS
    'Events a consumer failed (fincore.nack), redelivered by poll() from next_attempt_at on; attempts = failures so far.';
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_retries', '');

CREATE TABLE fincore.dead_events (
    consumer      text        NOT NULL REFERENCES fincore.outbox_consumers (name) ON DELETE CASCADE,
    id            uuid        NOT NULL,
    seq           bigint      NOT NULL,
    tenant_id     uuid        NOT NULL DEFAULT fincore.require_tenant(),
    topic         text        NOT NULL,
    type          text        NOT NULL,
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    payload       jsonb       NOT NULL,
    headers       jsonb,
    created_at    timestamptz NOT NULL,
    attempts      integer     NOT NULL,
    last_error    text,
    died_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (consumer, id)
);
CREATE INDEX dead_events_tenant_idx ON fincore.dead_events (tenant_id, died_at);
COMMENT ON TABLE fincore.dead_events IS
    'Dead letters: events a consumer failed max_attempts times. Inspect them here; fincore.replay_dead() delivers them again.';
SELECT pg_catalog.pg_extension_config_dump('fincore.dead_events', '');
-- The events themselves and their sequence go with a dump too, so that consumers resume after
-- a restore with nothing lost or read twice.
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_seq', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_events_0', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_events_1', '');
SELECT pg_catalog.pg_extension_config_dump('fincore.outbox_events_2', '');

-- ---------------------------------------------------------------------------
-- Inbox.
-- ---------------------------------------------------------------------------

CREATE TABLE fincore.inbox (
    tenant_id   uuid        NOT NULL DEFAULT fincore.require_tenant(),
    source      text        NOT NULL,
    message_id  text        NOT NULL,
    payload     jsonb,
    received_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, source, message_id)
);
CREATE INDEX inbox_received_idx ON fincore.inbox (received_at);
COMMENT ON TABLE fincore.inbox IS
    'Messages accepted once per (tenant, source, message_id): fincore.inbox_accept() and fincore.accept_webhook() (source webhook:<provider>). Kept for outbox_config.inbox_retention.';
SELECT pg_catalog.pg_extension_config_dump('fincore.inbox', '');

-- Tenant isolation for every table holding tenant data.  (protect() notes that the event
-- partitions have no index leading with tenant_id: on purpose, the hot path keeps two.)
CREATE FUNCTION fincore._outbox_protect_quietly(tbl regclass) RETURNS void
    LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE SET client_min_messages = warning
    AS $$ SELECT fincore.protect(tbl) $$;
SELECT fincore._outbox_protect_quietly(t::regclass)
  FROM unnest(ARRAY['fincore.outbox_events', 'fincore.outbox_events_0', 'fincore.outbox_events_1',
                    'fincore.outbox_events_2', 'fincore.outbox_settings', 'fincore.outbox_retries',
                    'fincore.dead_events', 'fincore.inbox']) AS t;
DROP FUNCTION fincore._outbox_protect_quietly(regclass);

-- Every event a consumer reads: the rows of fincore.outbox_events, and (added by the ledger
-- module, which replaces this view) the ledger's transfer events, which are transfer rows.
-- Consumers read it by seq and txid, which each source indexes.
CREATE VIEW fincore.outbox_stream WITH (security_invoker = true) AS
    SELECT e.id, e.seq, e.txid, e.created_at, e.tenant_id, e.topic, e.type, e.aggregatetype,
           e.aggregateid, e.payload, e.headers
      FROM fincore.outbox_events e;
COMMENT ON VIEW fincore.outbox_stream IS
    'Every event consumers read, in seq order within a batch: fincore.outbox_events rows and the ledger''s transfer events (transfer rows with an event_seq). Read with the caller''s rights.';

-- ---------------------------------------------------------------------------
-- Emitting (C).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.emit(topic text, event_type text, aggregate_type text, aggregate_id text,
                             payload jsonb, headers jsonb DEFAULT NULL) RETURNS uuid
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_emit';
COMMENT ON FUNCTION fincore.emit(text, text, text, text, jsonb, jsonb) IS
    'Writes an event for the current tenant in the caller''s transaction (gone if it rolls back) and returns its id. Events of one aggregate are delivered in commit order. ZF501 for a bad argument, ZF203 without a tenant.';

CREATE FUNCTION fincore._outbox_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'fincore_outbox_changed';
COMMENT ON FUNCTION fincore._outbox_changed() IS
    'Trigger: drops every backend''s cached outbox state (current slot, settings) when the table changes.';
CREATE TRIGGER outbox_slots_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.outbox_slots
    FOR EACH STATEMENT EXECUTE FUNCTION fincore._outbox_changed();
CREATE TRIGGER outbox_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.outbox_config
    FOR EACH STATEMENT EXECUTE FUNCTION fincore._outbox_changed();
CREATE TRIGGER outbox_settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fincore.outbox_settings
    FOR EACH STATEMENT EXECUTE FUNCTION fincore._outbox_changed();

CREATE FUNCTION fincore.ledger_events_enabled() RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_ledger_events_enabled';
COMMENT ON FUNCTION fincore.ledger_events_enabled() IS
    'Does the ledger emit events for the current tenant? (fincore.outbox_settings; true unless turned off; true without a tenant.)';

CREATE FUNCTION fincore.set_ledger_events(enabled boolean) RETURNS void
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
COMMENT ON FUNCTION fincore.set_ledger_events(boolean) IS
    'Turns the ledger''s outbox events on or off for the current tenant (ZF203 without one).';

-- ---------------------------------------------------------------------------
-- Consuming.
-- ---------------------------------------------------------------------------

-- Internal: a snapshot taken now, whatever the transaction's isolation level.
CREATE FUNCTION fincore._outbox_latest_snapshot() RETURNS pg_snapshot
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_outbox_latest_snapshot';
COMMENT ON FUNCTION fincore._outbox_latest_snapshot() IS
    'Internal: pg_current_snapshot() of a snapshot taken now (not the transaction''s).';

-- Internal: is every transaction visible in z also visible in p?
CREATE FUNCTION fincore._outbox_covers(p pg_snapshot, z pg_snapshot) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
    SELECT pg_catalog.pg_snapshot_xmax(z) OPERATOR(pg_catalog.<=) pg_catalog.pg_snapshot_xmax(p)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_snapshot_xip(p) AS x
                        WHERE x OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmax(z)
                          AND pg_catalog.pg_visible_in_snapshot(x, z))
$fn$;
COMMENT ON FUNCTION fincore._outbox_covers(pg_snapshot, pg_snapshot) IS
    'Internal: true when every transaction completed in snapshot z is completed in snapshot p too.';

-- The partition of an event's aggregate among a partitioned consumer's partitions.
CREATE FUNCTION fincore.event_partition(tenant_id uuid, aggregatetype text, aggregateid text, partitions integer)
    RETURNS integer
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fincore_event_partition';
COMMENT ON FUNCTION fincore.event_partition(uuid, text, text, integer) IS
    'The partition (0 to partitions - 1) that reads the events of an aggregate (tenant, aggregate type, aggregate id) in a partitioned consumer: a hash of the three, so every event of one aggregate goes to one partition. ZF503 unless partitions is 1 to 256.';

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

CREATE FUNCTION fincore.unsubscribe(consumer text) RETURNS boolean
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

CREATE FUNCTION fincore.poll(consumer text, max integer DEFAULT 100)
    RETURNS TABLE (id uuid, seq bigint, tenant_id uuid, topic text, type text, aggregatetype text,
                   aggregateid text, payload jsonb, headers jsonb, created_at timestamptz, retries integer)
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE ROWS 100 AS 'MODULE_PATHNAME', 'fincore_poll';
COMMENT ON FUNCTION fincore.poll(text, integer) IS
    'The consumer''s next events, at most max (1-10000): retries that are due first, then its batch in the order the events were emitted (each aggregate in commit order; not global commit order, docs/outbox.md). Polling again without ack returns the same events. ZF502 unknown consumer (also one the caller may not use: another tenant''s, or a cross-tenant one for an app role), ZF503 bad max.';

CREATE FUNCTION fincore.wait_for_events(consumer text, timeout interval DEFAULT '30 seconds') RETURNS boolean
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_wait_for_events';
COMMENT ON FUNCTION fincore.wait_for_events(text, interval) IS
    'For an idle consumer: returns true as soon as it has something to poll (a committed event past its position, or a retry that is due), at once if it has, false after timeout (at most 1 hour), with no polling: the commit of a transaction that emitted events wakes it (with fincore in shared_preload_libraries; else it looks every 50 ms), and it wakes when its first retry falls due. READ COMMITTED only. ZF502, ZF503.';

CREATE FUNCTION fincore.ack(consumer text, event_id uuid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_ack';
COMMENT ON FUNCTION fincore.ack(text, uuid) IS
    'Acknowledges an event poll() returned, and with it every event of the batch delivered before it. In the consumer''s own transaction: exactly once. ZF506 if it is not pending (e.g. already acknowledged).';

CREATE FUNCTION fincore.nack(consumer text, event_id uuid, error text DEFAULT NULL) RETURNS text
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_nack';
COMMENT ON FUNCTION fincore.nack(text, uuid, text) IS
    'Reports a failed event: acknowledges the events delivered before it and schedules it again with exponential backoff (''retry''), or after max_attempts moves it to fincore.dead_events (''dead''). ZF506 if it is not pending.';

CREATE FUNCTION fincore.replay_dead(consumer text, event_ids uuid[] DEFAULT NULL) RETURNS bigint
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

CREATE FUNCTION fincore.consumer_lag()
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

-- ---------------------------------------------------------------------------
-- A dump restored into another cluster (docs/operations.md, "Backup and restore").
-- ---------------------------------------------------------------------------

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

-- ---------------------------------------------------------------------------
-- Retention and settings.
-- ---------------------------------------------------------------------------

-- Internal: lock a draining slot's partition against writers without waiting, then the
-- snapshot that sees every transaction that wrote into it; NULL if a writer still holds it.
CREATE FUNCTION fincore._outbox_seal(part regclass) RETURNS pg_snapshot
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_outbox_seal';
COMMENT ON FUNCTION fincore._outbox_seal(regclass) IS
    'Internal: SHARE lock on a rotated-out partition if no writer holds it (else NULL), then a snapshot taken after the lock.';

CREATE FUNCTION fincore.outbox_maintenance(budget interval DEFAULT '5 seconds') RETURNS bigint
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
COMMENT ON FUNCTION fincore.outbox_maintenance(interval) IS
    'Outbox retention, for fincore.maintenance() / pg_cron: truncates sealed slots every consumer has passed, seals rotated-out slots, rotates the current slot, deletes old inbox rows. Returns the number of slot changes plus inbox rows deleted.';

INSERT INTO fincore.maintenance_steps (step, fn, position, description) VALUES
    ('outbox', 'fincore.outbox_maintenance(interval)', 500,
     'Outbox: rotate, seal and truncate event slots once every consumer passed them; forget old inbox rows.');

CREATE FUNCTION fincore.outbox_configure(notify boolean DEFAULT NULL, rotation_interval interval DEFAULT NULL,
                                         inbox_retention interval DEFAULT NULL, notify_channel text DEFAULT NULL)
    RETURNS fincore.outbox_config
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    result fincore.outbox_config;
BEGIN
    IF outbox_configure.rotation_interval < '0' OR outbox_configure.inbox_retention < '0' THEN
        RAISE EXCEPTION 'intervals must not be negative: rotation_interval %, inbox_retention %',
                outbox_configure.rotation_interval, outbox_configure.inbox_retention
            USING ERRCODE = 'ZF512';
    END IF;
    IF outbox_configure.notify_channel !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid notify channel: %', pg_catalog.quote_literal(outbox_configure.notify_channel)
            USING ERRCODE = 'ZF512', HINT = 'A channel is a lower-case identifier.';
    END IF;
    INSERT INTO fincore.outbox_config AS c (singleton) VALUES (true) ON CONFLICT DO NOTHING;
    UPDATE fincore.outbox_config c
       SET notify = coalesce(outbox_configure.notify, c.notify),
           rotation_interval = coalesce(outbox_configure.rotation_interval, c.rotation_interval),
           inbox_retention = coalesce(outbox_configure.inbox_retention, c.inbox_retention),
           notify_channel = coalesce(outbox_configure.notify_channel, c.notify_channel)
    RETURNING c.* INTO result;
    RETURN result;
END
$fn$;
COMMENT ON FUNCTION fincore.outbox_configure(boolean, interval, interval, text) IS
    'Changes the outbox settings given (NULL keeps one) and returns them all: NOTIFY per emitting transaction (off by default), slot rotation interval, inbox retention, notify channel. ZF512 for a bad value.';

-- ---------------------------------------------------------------------------
-- Inbox and webhooks (C).
-- ---------------------------------------------------------------------------

CREATE FUNCTION fincore.inbox_accept(source text, message_id text, payload jsonb) RETURNS boolean
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_inbox_accept';
COMMENT ON FUNCTION fincore.inbox_accept(text, text, jsonb) IS
    'Records a message for the current tenant in the caller''s transaction: true the first time, false for a duplicate (a concurrent one too: it waits for the first to commit or roll back). ZF511 for an empty source or id.';

CREATE FUNCTION fincore.accept_webhook(provider text, payload text, signature_header text, secret text,
                                       tolerance interval DEFAULT '5 minutes',
                                       OUT event_id text, OUT accepted boolean, OUT job_id bigint)
    RETURNS record
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fincore_accept_webhook';
COMMENT ON FUNCTION fincore.accept_webhook(text, text, text, text, interval) IS
    'Verifies a Stripe-style signature header (t=<unix>,v1=<hex HMAC-SHA256 of t.payload>, several v1 allowed; pgcrypto HMAC, constant-time compare), then records the event once by the id inside the payload (inbox source webhook:<provider>) and enqueues it on queue webhook:<provider> when fincore.enqueue exists. A replay returns accepted = false and changes nothing. ZF507-ZF511.';

-- ---------------------------------------------------------------------------
-- Who may call what.  Consumers are infrastructure: trusted roles create them; poll,
-- ack and nack check the consumer's tenant scope themselves (src/outbox.c).
-- ---------------------------------------------------------------------------

INSERT INTO fincore.function_audience (fn, audience) VALUES
    ('fincore.emit(text,text,text,text,jsonb,jsonb)', 'app'),
    ('fincore.poll(text,integer)', 'app'),
    ('fincore.wait_for_events(text,interval)', 'app'),
    ('fincore.ack(text,uuid)', 'app'),
    ('fincore.nack(text,uuid,text)', 'app'),
    ('fincore.inbox_accept(text,text,jsonb)', 'app'),
    ('fincore.accept_webhook(text,text,text,text,interval)', 'app'),
    ('fincore.ledger_events_enabled()', 'app'),
    ('fincore.subscribe(text,text[],uuid,integer,interval,interval,integer)', 'trusted'),
    ('fincore.event_partition(uuid,text,text,integer)', 'app'),
    ('fincore.unsubscribe(text)', 'trusted'),
    ('fincore.replay_dead(text,uuid[])', 'trusted'),
    ('fincore.consumer_lag()', 'trusted'),
    ('fincore.set_ledger_events(boolean)', 'trusted');

REVOKE ALL ON FUNCTION fincore._outbox_latest_snapshot() FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore._outbox_seal(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.outbox_maintenance(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION fincore.outbox_configure(boolean, interval, interval, text) FROM PUBLIC;
REVOKE ALL ON SEQUENCE fincore.outbox_seq FROM PUBLIC;
