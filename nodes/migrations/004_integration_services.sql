-- The integration services (docs/integration-services.md): hook receiver, intelligence
-- patterns, service registry and tool registry, and the intelligence answer of a workflow.

-- hook receiver: every accepted hook, the history pattern discovery reads
CREATE TABLE hook_events (
    hook_id         uuid PRIMARY KEY,
    hook_type       text NOT NULL,            -- service_started | service_stopped | service_health_changed | tool_executed
    namespace       text NOT NULL,
    subject         text NOT NULL,            -- the service or tool it is about (the event key)
    correlation_id  uuid NOT NULL,
    body            jsonb NOT NULL,
    measures        jsonb NOT NULL DEFAULT '{}',  -- the numbers pattern discovery reads (startup_time_ms, ...)
    anomalous       boolean NOT NULL DEFAULT false,  -- kept out of the baseline of later hooks
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX hook_events_recent ON hook_events (namespace, hook_type, received_at DESC);

-- patterns the intelligence pipeline found (nodes/patterns.py says how)
CREATE TABLE intelligence_patterns (
    pattern_id         uuid PRIMARY KEY,
    namespace          text NOT NULL,
    pattern_type       text NOT NULL,          -- startup_performance | service_initialization | performance_anomaly
    subject            text NOT NULL,          -- what it is about: 'startups', a service, a tool
    confidence_score   double precision NOT NULL,
    affected_services  text[] NOT NULL DEFAULT '{}',
    pattern_data       jsonb NOT NULL,
    hook_id            uuid NOT NULL,          -- the hook whose arrival found it last
    occurrences        integer NOT NULL DEFAULT 1,
    discovered_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (namespace, pattern_type, subject)  -- one current pattern per thing; each hook may update it
);
CREATE INDEX intelligence_patterns_type ON intelligence_patterns (pattern_type, updated_at DESC);

-- service registry: one row per instance; several instances per service name
CREATE TABLE service_registrations (
    registration_id   uuid PRIMARY KEY,
    service_name      text NOT NULL,
    instance_id       text NOT NULL UNIQUE,
    version           text NOT NULL,
    host              text NOT NULL,
    port              integer NOT NULL,
    health_check_url  text,
    capabilities      jsonb NOT NULL DEFAULT '[]',
    metadata          jsonb NOT NULL DEFAULT '{}',
    health_status     text NOT NULL DEFAULT 'unknown',
    load_factor       double precision,
    last_heartbeat    timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX service_registrations_name ON service_registrations (service_name);
CREATE INDEX service_registrations_capabilities ON service_registrations USING gin (capabilities);

-- tool registry: a tool name and version is registered once (again: the same tool_id)
CREATE TABLE tool_registrations (
    tool_id                 uuid PRIMARY KEY,
    tool_name               text NOT NULL,
    version                 text NOT NULL,
    service_source          text NOT NULL,
    category                text NOT NULL,
    description             text,
    input_schema            jsonb NOT NULL,
    output_schema           jsonb NOT NULL,
    execution_requirements  jsonb NOT NULL DEFAULT '{}',
    created_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tool_name, version)
);
CREATE INDEX tool_registrations_category ON tool_registrations (category);

-- orchestrator: what the intelligence node answered, kept with the workflow
ALTER TABLE workflows ADD COLUMN analysis jsonb;
