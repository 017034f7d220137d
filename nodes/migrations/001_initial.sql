-- Versioned schema of every node's tables. Applied once, in order, at node start.

-- Transactional outbox: every event a node publishes is written here in the
-- same transaction as the state change that caused it, then relayed.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    producer      text NOT NULL,             -- node id whose relay publishes it
    topic         text NOT NULL,
    key           text NOT NULL,
    value         bytea NOT NULL,
    required      text[] NOT NULL,           -- consumer groups that must confirm it
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at       timestamptz,
    confirmed_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unsent ON outbox (producer, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_unconfirmed ON outbox (producer, id) WHERE sent_at IS NOT NULL AND confirmed_at IS NULL;

-- Receipts of idempotent consumers: one row per (consumer group, event).
CREATE TABLE processed_events (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE dead_letters (
    id            bigserial PRIMARY KEY,
    consumer      text NOT NULL,
    topic         text NOT NULL,
    partition     integer NOT NULL,
    "offset"      bigint NOT NULL,
    key           bytea,
    value         bytea,
    reason        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- stamping
CREATE TABLE metadata_stamps (
    stamp_id      uuid PRIMARY KEY,
    namespace     text NOT NULL,
    file_hash     text NOT NULL,
    content_type  text NOT NULL,
    size_bytes    bigint NOT NULL,
    hash_time_ms  double precision NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (namespace, file_hash)
);
CREATE INDEX metadata_stamps_hash ON metadata_stamps (file_hash);

-- orchestrator: the state machine of each workflow
CREATE TABLE workflows (
    workflow_id       uuid PRIMARY KEY,
    correlation_id    uuid NOT NULL,
    namespace         text NOT NULL,
    state             text NOT NULL,
    sequence          integer NOT NULL DEFAULT 0,
    content           text NOT NULL,
    content_type      text NOT NULL,
    use_intelligence  boolean NOT NULL DEFAULT false,
    stamp_hash        text,
    intelligence      text,                 -- used | fallback | skipped
    error             text,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX workflows_active ON workflows (created_at) WHERE state NOT IN ('completed', 'failed');

-- reducer: one row per workflow, and aggregates per namespace
CREATE TABLE workflow_executions (
    workflow_id     uuid PRIMARY KEY,
    namespace       text NOT NULL,
    state           text NOT NULL,
    last_sequence   integer NOT NULL DEFAULT 0,
    events          integer NOT NULL DEFAULT 0,
    out_of_order    integer NOT NULL DEFAULT 0,
    started_at      timestamptz,
    completed_at    timestamptz,
    duration_ms     double precision,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE bridge_states (
    namespace            text PRIMARY KEY,
    workflows_started    bigint NOT NULL DEFAULT 0,
    workflows_completed  bigint NOT NULL DEFAULT 0,
    workflows_failed     bigint NOT NULL DEFAULT 0,
    transitions          bigint NOT NULL DEFAULT 0,
    batches              bigint NOT NULL DEFAULT 0,
    largest_batch        integer NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- registry
CREATE TABLE node_registrations (
    node_id                  text PRIMARY KEY,
    node_type                text NOT NULL,
    namespace                text NOT NULL,
    status                   text NOT NULL,       -- registered (PostgreSQL + Consul) | partial (PostgreSQL only)
    capabilities             jsonb NOT NULL DEFAULT '{}',
    endpoints                jsonb NOT NULL DEFAULT '{}',
    registered_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_heartbeat           timestamptz,
    last_introspection_id    uuid,
    introspections           integer NOT NULL DEFAULT 0,
    heartbeats               integer NOT NULL DEFAULT 0,
    uptime_s                 double precision,
    active_operations        integer
);

-- database adapter: every event on the bus, once
CREATE TABLE event_logs (
    event_id         uuid PRIMARY KEY,
    event_type       text NOT NULL,
    topic            text NOT NULL,
    partition        integer NOT NULL,
    "offset"         bigint NOT NULL,
    key              text,
    namespace        text NOT NULL,
    correlation_id   uuid NOT NULL,
    source_node_id   text NOT NULL,
    event_time       timestamptz NOT NULL,
    inserted_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload          jsonb NOT NULL,
    metadata         jsonb NOT NULL
);
CREATE INDEX event_logs_correlation ON event_logs (correlation_id);
