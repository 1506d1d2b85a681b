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
