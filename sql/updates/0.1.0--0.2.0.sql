-- 0.1.0 -> 0.2.0, the steps a re-run of the install script's definitions cannot make. Runs
-- before them (scripts/make-update-scripts.py); 0.1.0--0.2.0.post.sql runs after them.

-- Dump and restore: removed defaults stay removed; every written table is dumped.
CREATE TABLE secumon._removed_defaults (
    table_name regclass NOT NULL,
    row_key    jsonb NOT NULL,
    removed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, row_key)
);
SELECT pg_catalog.pg_extension_config_dump('secumon._removed_defaults', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.storage_policies', '');
SELECT pg_catalog.pg_extension_config_dump('secumon._jobs', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.rollups', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.metric_catalog', '');
SELECT pg_catalog.pg_extension_config_dump('secumon._alert_engine_state', '');
SELECT pg_catalog.pg_extension_config_dump('secumon._alert_rule_errors', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.alert_rules', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.alert_events_id_seq', '');

-- The default rules are known by default_key: the oldest rule of each default name in the
-- default tenant is the one CREATE EXTENSION made. Their ids and updated_at stay as they are.
ALTER TABLE secumon.alert_rules ADD COLUMN default_key text, ADD CONSTRAINT alert_rules_default_key_key UNIQUE (default_key);
ALTER TABLE secumon.alert_rules DISABLE TRIGGER alert_rules_validate;
WITH defaults (default_key, name) AS (VALUES
        ('high_cpu_usage', 'High CPU Usage'), ('high_memory_usage', 'High Memory Usage'),
        ('high_disk_usage', 'High Disk Usage'), ('high_load_average', 'High Load Average')),
     seeded AS (SELECT DISTINCT ON (r.name) r.id, d.default_key
                  FROM secumon.alert_rules r JOIN defaults d ON d.name = r.name
                 WHERE r.tenant_id = 'default'
                 ORDER BY r.name, r.created_at, r.id)
UPDATE secumon.alert_rules r SET default_key = s.default_key FROM seeded s WHERE r.id = s.id;
ALTER TABLE secumon.alert_rules ENABLE TRIGGER alert_rules_validate;

-- Jobs give way to locks; the alert engine retries a failed rule over the same samples.
ALTER TABLE secumon._jobs ADD COLUMN waiting_since timestamptz;
-- The encoder of a compressed day takes its relations as oids and its sort columns as names
-- (secumon._compress_partition_into).
DROP FUNCTION secumon._compress_partition(text, text, text, text);
-- A job carries its function's argument: the sixteen one-line wrappers go.
ALTER TABLE secumon._jobs ADD COLUMN argument text;
UPDATE secumon._jobs SET function_name = 'secumon.refresh_rollup', argument = substr(job_name, length('rollup_') + 1)
 WHERE job_name LIKE 'rollup\_%';
UPDATE secumon._jobs SET function_name = 'secumon._compress_due', argument = substr(job_name, length('compress_') + 1)
 WHERE job_name LIKE 'compress\_%';
UPDATE secumon._jobs SET function_name = 'secumon.apply_retention', argument = substr(job_name, length('retention_') + 1)
 WHERE job_name LIKE 'retention\_%';
DROP FUNCTION secumon._refresh_metrics_5min(), secumon._refresh_metrics_1hour(), secumon._refresh_disk_metrics_1hour(),
              secumon._refresh_network_metrics_1hour(),
              secumon._compress_metric_samples(), secumon._compress_disk_metrics(), secumon._compress_network_metrics(),
              secumon._compress_process_metrics(),
              secumon._retention_metric_samples(), secumon._retention_disk_metrics(), secumon._retention_network_metrics(),
              secumon._retention_process_metrics(), secumon._retention_metrics_5min(), secumon._retention_metrics_1hour(),
              secumon._retention_disk_metrics_1hour(), secumon._retention_network_metrics_1hour();

-- Refreshes of continuous aggregates (the timescaledb backend's rollups) report through this.
CREATE UNLOGGED TABLE secumon._refresh_outcomes (
    worker_pid integer PRIMARY KEY,
    problem    text
);
SELECT pg_catalog.pg_extension_config_dump('secumon._refresh_outcomes', 'WHERE false');
ALTER TABLE secumon._alert_rule_errors ADD COLUMN retry_from timestamptz;

-- Indexes of partitioned tables move to each partition (0.1.0--0.2.0.post.sql builds them).
DROP INDEX secumon.metric_samples_ingested_at, secumon.metric_samples_time,
           secumon.disk_metrics_ingested_at, secumon.disk_metrics_agent_mount_time, secumon.disk_metrics_time,
           secumon.network_metrics_ingested_at, secumon.network_metrics_agent_iface_time, secumon.network_metrics_time,
           secumon.process_metrics_agent_time;
ALTER TABLE secumon.metric_rollup_5min DROP CONSTRAINT metric_rollup_5min_pkey;
ALTER TABLE secumon.metric_rollup_1hour DROP CONSTRAINT metric_rollup_1hour_pkey;
ALTER TABLE secumon.disk_rollup_1hour DROP CONSTRAINT disk_rollup_1hour_pkey;
ALTER TABLE secumon.network_rollup_1hour DROP CONSTRAINT network_rollup_1hour_pkey;

-- Tenant isolation (docs/auth.md, "Threat model"): the operator functions check with
-- secumon._check_tenant_write(what) and _tenant_writable(tenant) instead; the reader role no
-- longer executes the functions that write; channels get the policy of sql/notify.sql.
DROP FUNCTION secumon._check_tenant_write(text, text);
REVOKE EXECUTE ON FUNCTION secumon.change_password(text, text), secumon.create_user(text, text, text, text, text),
                           secumon.set_user_role(text, text), secumon.set_user_password(text, text),
                           secumon.deactivate_user(text), secumon.activate_user(text),
                           secumon.revoke_sessions(text, uuid)
    FROM secumon_reader;
-- Clients no longer choose ids (sql/alert_api.sql grants the other columns).
REVOKE INSERT, UPDATE ON secumon.alert_rules, secumon.silences FROM secumon_web;
DROP POLICY secumon_tenant_select ON secumon.notification_channels;
DROP POLICY secumon_tenant_insert ON secumon.notification_channels;
DROP POLICY secumon_tenant_update ON secumon.notification_channels;
DROP POLICY secumon_tenant_delete ON secumon.notification_channels;
ALTER TABLE secumon.notification_channels
    ALTER COLUMN tenant_ids SET DEFAULT CASE WHEN secumon.current_tenant() IS NOT NULL THEN ARRAY[secumon.current_tenant()] END;

-- Oracles, secrets and denial of service across tenants (docs/auth.md, docs/storage.md).
-- Layouts are unique by a digest of their series: a B-tree entry of the series themselves
-- cannot hold a layout of a few hundred series (and failed after taking their ids).
CREATE FUNCTION secumon._layout_key(series text[]) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.array_to_string(series, ','), 'UTF8'));
ALTER TABLE secumon.metric_layouts DROP CONSTRAINT metric_layouts_series_key;
CREATE UNIQUE INDEX metric_layouts_series_key ON secumon.metric_layouts (secumon._layout_key(series));
-- Which agents stored samples with which layout: decides what a tenant sees of metric_layouts
-- and metric_series (policies in 0.1.0--0.2.0.post.sql). Reads every stored sample once.
CREATE TABLE secumon._agent_layouts (
    agent_key integer NOT NULL,
    layout_id integer NOT NULL,
    PRIMARY KEY (agent_key, layout_id)
);
SELECT pg_catalog.pg_extension_config_dump('secumon._agent_layouts', '');
INSERT INTO secumon._agent_layouts (agent_key, layout_id)
SELECT DISTINCT s.agent_key, s.layout_id FROM secumon.metric_samples s;
-- Series ids are 64-bit (metric_series.series_id, metric_layouts.series_ids and the functions
-- that take or return one): the names are the agents' to choose and every tenant shares the
-- sequence. The two views over them are dropped here and made again with the definitions.
DROP VIEW secumon.metrics_5min, secumon.metrics_1hour;
DROP FUNCTION secumon._series_id(text);
DROP FUNCTION secumon._history(integer, integer, timestamptz, timestamptz, integer);
DROP AGGREGATE secumon._summarize(integer[], float8[]);
DROP FUNCTION secumon._summarize_sfunc(internal, integer[], float8[]);
DROP FUNCTION secumon._summary_unnest(bytea);
DROP FUNCTION secumon._summary_series(bytea, integer);
DROP FUNCTION secumon._summary_points(timestamptz[], bytea[], integer, bigint);
ALTER TABLE secumon.metric_series ALTER COLUMN series_id TYPE bigint;
ALTER SEQUENCE secumon.metric_series_series_id_seq AS bigint;
ALTER TABLE secumon.metric_layouts ALTER COLUMN series_ids TYPE bigint[];

-- Custom and probe series: labels in the series dictionary, label selectors on alert rules,
-- the probe rules (docs/custom-series.md).
ALTER TABLE secumon.metric_series ADD COLUMN labels jsonb NOT NULL DEFAULT '{}';
CREATE INDEX metric_series_name ON secumon.metric_series (metric_type, metric_name);
CREATE INDEX metric_layouts_series_ids ON secumon.metric_layouts USING gin (series_ids);
ALTER TABLE secumon.alert_rules ADD COLUMN series_labels jsonb NOT NULL DEFAULT '{}';
INSERT INTO secumon.metric_catalog VALUES
    ('probe', 'up', 'gauge', 'boolean', 'Target answered as expected (1) or not (0)'),
    ('probe', 'duration_seconds', 'gauge', 'seconds', 'Time the probe took (HTTP: to the last byte; TCP: connect)'),
    ('probe', 'http_status_code', 'gauge', 'status', 'HTTP status code of the answer'),
    ('probe', 'tls_cert_days_left', 'gauge', 'days', 'Days until the TLS certificate expires (negative: expired)'),
    ('probe', 'rtt_seconds', 'gauge', 'seconds', 'ICMP echo: mean round-trip time of the replies'),
    ('probe', 'packet_loss_percent', 'gauge', 'percent', 'ICMP echo: requests without a reply')
ON CONFLICT DO NOTHING;

-- Auto-registration (sql/enroll.sql): the enrolling group role and the two tables; their
-- row-level security comes in 0.1.0--0.2.0.post.sql.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'secumon_enroll') THEN
        CREATE ROLE secumon_enroll NOLOGIN;
    END IF;
END
$roles$;
CREATE TABLE secumon.enrollment_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  text NOT NULL REFERENCES secumon.tenants ON UPDATE CASCADE,
    labels     jsonb NOT NULL DEFAULT '{}'
               CONSTRAINT enrollment_tokens_labels_object CHECK (jsonb_typeof(labels) = 'object'),
    token_hash bytea NOT NULL UNIQUE,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    max_uses   integer NOT NULL CHECK (max_uses > 0),
    uses       integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    revoked_at timestamptz,
    agent_id   text
);
SELECT pg_catalog.pg_extension_config_dump('secumon.enrollment_tokens', '');
CREATE TABLE secumon.enrollments (
    agent_id         text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES secumon.tenants ON UPDATE CASCADE,
    role_name        name NOT NULL UNIQUE,
    token_id         uuid REFERENCES secumon.enrollment_tokens ON DELETE SET NULL,
    labels           jsonb NOT NULL DEFAULT '{}',
    enrolled_at      timestamptz NOT NULL DEFAULT now(),
    last_enrolled_at timestamptz NOT NULL DEFAULT now(),
    times_enrolled   integer NOT NULL DEFAULT 1
);
SELECT pg_catalog.pg_extension_config_dump('secumon.enrollments', '');

-- Descriptions of the raw tables (sql/schema.sql, secumon._create_raw_table).
COMMENT ON TABLE secumon.disk_metrics IS 'Disk usage and I/O counters, one row per agent, mount point and report.';
COMMENT ON TABLE secumon.network_metrics IS 'Network interface counters, one row per agent, interface and report.';
COMMENT ON TABLE secumon.process_metrics IS 'The top processes of each agent, one row per process and report.';
