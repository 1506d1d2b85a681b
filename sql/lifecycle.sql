-- Storage lifecycle: the jobs that run rollups, compression and retention, and the tenancy of
-- the rollups and the series dictionary. The lifecycle's functions and tables are in
-- sql/series.sql, rollups.sql, rollup_views.sql, compression.sql and retention.sql, which run
-- before this file. Reference: docs/storage.md.

-- ---------------------------------------------------------------------------------------------
-- Jobs.

INSERT INTO secumon._jobs (job_name, worker, function_name, argument, description, schedule_interval) VALUES
    ('rollup_metrics_5min', 'maintenance', 'secumon.refresh_rollup', 'metrics_5min',
     'Materialises 5-minute rollups of metrics and re-materialises buckets that received late rows', '5 minutes'),
    ('rollup_metrics_1hour', 'maintenance', 'secumon.refresh_rollup', 'metrics_1hour',
     'Materialises hourly rollups of metrics from the 5-minute rollups', '1 hour'),
    ('rollup_disk_metrics_1hour', 'maintenance', 'secumon.refresh_rollup', 'disk_metrics_1hour',
     'Materialises hourly disk usage rollups', '1 hour'),
    ('rollup_network_metrics_1hour', 'maintenance', 'secumon.refresh_rollup', 'network_metrics_1hour',
     'Materialises hourly network totals from counter deltas', '1 hour');

INSERT INTO secumon._jobs (job_name, worker, function_name, argument, description, schedule_interval)
SELECT 'compress_' || t, 'maintenance', 'secumon._compress_due', t,
       format('Compresses the oldest day of %s older than compress_after', t), '15 minutes'
  FROM unnest(ARRAY['metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics']) AS t;

INSERT INTO secumon._jobs (job_name, worker, function_name, argument, description, schedule_interval, schedule_origin, next_run)
SELECT 'retention_' || t, 'maintenance', 'secumon.apply_retention', t,
       format('Drops partitions of %s older than its retention', t), '1 day', origin,
       secumon._bucket('1 day', now() - interval '4 hours') + interval '1 day 4 hours'
  FROM unnest(ARRAY['metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics',
                    'metrics_5min', 'metrics_1hour', 'disk_metrics_1hour', 'network_metrics_1hour']) AS t
 CROSS JOIN (VALUES (timestamptz '2000-01-01 04:00:00+00')) AS o(origin);

-- ---------------------------------------------------------------------------------------------
-- Row-level security (sql/tenancy.sql): rollup rows are visible when their agent is.

SELECT secumon._enable_agent_rls('secumon.metric_rollup_5min', 'agent_key');
SELECT secumon._enable_agent_rls('secumon.metric_rollup_1hour', 'agent_key');
SELECT secumon._enable_agent_rls('secumon.disk_rollup_1hour');
SELECT secumon._enable_agent_rls('secumon.network_rollup_1hour');
-- Layouts and series: those the tenant's agents use (secumon._agent_layouts above).
SELECT secumon._rls_prepare('secumon.metric_layouts');
CREATE POLICY secumon_agent_tenant ON secumon.metric_layouts
USING ((SELECT secumon._rls_open()) OR secumon._layout_id_visible(layout_id))
WITH CHECK ((SELECT secumon._rls_open()));
SELECT secumon._rls_prepare('secumon.metric_series');
CREATE POLICY secumon_agent_tenant ON secumon.metric_series
USING ((SELECT secumon._rls_open()) OR secumon._series_id_visible(series_id))
WITH CHECK ((SELECT secumon._rls_open()));
-- Policies run their functions with the querying role's rights: every role the two tables are
-- granted to (sql/privileges.sql, sql/endpoints.sql) needs them. (privileges.sql revokes PUBLIC's.)
GRANT EXECUTE ON FUNCTION secumon._layout_id_visible(integer), secumon._series_id_visible(bigint)
   TO secumon_web, secumon_reader, secumon_admin;
