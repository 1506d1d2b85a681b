-- The real-time rollup views clients read (metrics_5min, metrics_1hour, disk_metrics_1hour,
-- network_metrics_1hour). docs/storage.md, "Rollups".

-- ---------------------------------------------------------------------------------------------
-- Real-time rollup views: materialised buckets before the watermark, raw data after it. The raw
-- part is computed per agent (LATERAL), so a query for one agent reads only that agent's rows.

CREATE VIEW secumon._metric_summaries_5min WITH (security_invoker = true) AS
SELECT m.bucket, m.agent_key, a.agent_id, m.summary
  FROM secumon.metric_rollup_5min m
  JOIN secumon.agents a ON a.agent_key = m.agent_key
 WHERE m.bucket < (SELECT coalesce(ro.watermark, '-infinity') FROM secumon.rollups ro WHERE ro.rollup_name = 'metrics_5min')
UNION ALL
SELECT t.bucket, a.agent_key, a.agent_id, t.summary
  FROM (SELECT coalesce(ro.watermark, '-infinity') AS watermark FROM secumon.rollups ro WHERE ro.rollup_name = 'metrics_5min') w
 CROSS JOIN secumon.agents a
 CROSS JOIN LATERAL (SELECT x.bucket, x.summary FROM secumon._metric_summaries_from_raw('5 minutes', w.watermark, 'infinity') x
                      WHERE x.agent_key = a.agent_key) t;

CREATE VIEW secumon._metric_summaries_1hour WITH (security_invoker = true) AS
SELECT m.bucket, m.agent_key, a.agent_id, m.summary
  FROM secumon.metric_rollup_1hour m
  JOIN secumon.agents a ON a.agent_key = m.agent_key
 WHERE m.bucket < (SELECT coalesce(ro.watermark, '-infinity') FROM secumon.rollups ro WHERE ro.rollup_name = 'metrics_1hour')
UNION ALL
SELECT secumon._bucket('1 hour', f.bucket), f.agent_key, f.agent_id, secumon._summary_merge(f.summary ORDER BY f.bucket)
  FROM secumon._metric_summaries_5min f
 WHERE f.bucket >= (SELECT coalesce(ro.watermark, '-infinity') FROM secumon.rollups ro WHERE ro.rollup_name = 'metrics_1hour')
 GROUP BY 1, 2, 3;

CREATE VIEW secumon.metrics_5min WITH (security_invoker = true) AS
SELECT m.bucket, m.agent_id, s.metric_type, s.metric_name,
       x.sum / x.count AS avg, x.min, x.max, x.count, x.sum,
       secumon.sketch_quantile(x.sketch, 0.5) AS p50,
       secumon.sketch_quantile(x.sketch, 0.95) AS p95,
       secumon.sketch_quantile(x.sketch, 0.99) AS p99,
       x.sketch AS percentile_sketch, s.labels
  FROM secumon._metric_summaries_5min m
 CROSS JOIN LATERAL secumon._summary_unnest(m.summary) x
  JOIN secumon.metric_series s ON s.series_id = x.series_id;
COMMENT ON VIEW secumon.metrics_5min IS '5-minute rollups of secumon.metrics (real-time: buckets newer than the refresh come from raw rows). p50/p95/p99 within 1 % of percentile_disc; merge percentile_sketch across buckets with secumon.sketch_merge(). labels as in secumon.metrics.';

CREATE VIEW secumon.metrics_1hour WITH (security_invoker = true) AS
SELECT m.bucket, m.agent_id, s.metric_type, s.metric_name,
       x.sum / x.count AS avg, x.min, x.max, x.count, x.sum,
       secumon.sketch_quantile(x.sketch, 0.5) AS p50,
       secumon.sketch_quantile(x.sketch, 0.95) AS p95,
       secumon.sketch_quantile(x.sketch, 0.99) AS p99,
       x.sketch AS percentile_sketch, s.labels
  FROM secumon._metric_summaries_1hour m
 CROSS JOIN LATERAL secumon._summary_unnest(m.summary) x
  JOIN secumon.metric_series s ON s.series_id = x.series_id;
COMMENT ON VIEW secumon.metrics_1hour IS 'Hourly rollups of secumon.metrics (real-time), same columns as metrics_5min.';

CREATE VIEW secumon.disk_metrics_1hour WITH (security_invoker = true) AS
SELECT r.bucket, r.agent_id, r.device, r.mountpoint,
       r.usage_sum / nullif(r.usage_count, 0) AS avg_usage, r.usage_max AS max_usage,
       r.inodes_sum / nullif(r.inodes_count, 0) AS avg_inodes, r.samples
  FROM (SELECT d.bucket, d.agent_id, d.device, d.mountpoint, d.usage_sum, d.usage_count, d.usage_max,
               d.inodes_sum, d.inodes_count, d.samples
          FROM secumon.disk_rollup_1hour d
         WHERE d.bucket < (SELECT coalesce(ro.watermark, '-infinity') FROM secumon.rollups ro WHERE ro.rollup_name = 'disk_metrics_1hour')
        UNION ALL
        SELECT t.bucket, t.agent_id, t.device, t.mountpoint, t.usage_sum, t.usage_count, t.usage_max,
               t.inodes_sum, t.inodes_count, t.samples
          FROM (SELECT coalesce(ro.watermark, '-infinity') AS watermark FROM secumon.rollups ro WHERE ro.rollup_name = 'disk_metrics_1hour') w
         CROSS JOIN secumon.agents a
         CROSS JOIN LATERAL (SELECT * FROM secumon._disk_rollup_rows(w.watermark, 'infinity') x WHERE x.agent_id = a.agent_id) t) r;
COMMENT ON VIEW secumon.disk_metrics_1hour IS 'Hourly disk usage per filesystem (real-time): average and maximum usage_percent, average inodes_usage_percent.';

CREATE VIEW secumon.network_metrics_1hour WITH (security_invoker = true) AS
SELECT r.bucket, r.agent_id, r.interface, r.bytes_sent, r.bytes_recv,
       r.packets_sent + r.packets_recv AS packets, r.errors_in + r.errors_out AS errors,
       r.packets_sent, r.packets_recv, r.errors_in, r.errors_out, r.drops_in, r.drops_out, r.samples
  FROM (SELECT n.bucket, n.agent_id, n.interface, n.bytes_sent, n.bytes_recv, n.packets_sent, n.packets_recv,
               n.errors_in, n.errors_out, n.drops_in, n.drops_out, n.samples
          FROM secumon.network_rollup_1hour n
         WHERE n.bucket < (SELECT coalesce(ro.watermark, '-infinity') FROM secumon.rollups ro WHERE ro.rollup_name = 'network_metrics_1hour')
        UNION ALL
        SELECT t.bucket, t.agent_id, t.interface, t.bytes_sent, t.bytes_recv, t.packets_sent, t.packets_recv,
               t.errors_in, t.errors_out, t.drops_in, t.drops_out, t.samples
          FROM (SELECT coalesce(ro.watermark, '-infinity') AS watermark, ro.counter_max_gap
                  FROM secumon.rollups ro WHERE ro.rollup_name = 'network_metrics_1hour') w
         CROSS JOIN secumon.agents a
         CROSS JOIN LATERAL (SELECT * FROM secumon._network_rollup_rows(w.watermark, 'infinity', w.counter_max_gap) x
                              WHERE x.agent_id = a.agent_id) t) r;
COMMENT ON VIEW secumon.network_metrics_1hour IS 'Hourly network totals per interface (real-time) from counter deltas, correct across counter resets; packets = sent + received, errors = in + out.';
