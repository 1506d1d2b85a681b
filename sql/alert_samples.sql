-- Alerting: the samples the engine evaluates, one row per (agent, series, time), from every
-- metric table. The engine is in sql/alert_engine.sql; the header of sql/alerting.sql says how
-- it works.


-- ---------------------------------------------------------------------------------------------
-- Samples as the engine sees them
-- ---------------------------------------------------------------------------------------------

-- Where the series of the families `families` ("<type>.<name>", labels aside) sit in each layout:
-- counters or the others. series_key is a custom or probe series' label part ('' for host
-- series), so that each label set is its own alert, as each filesystem is.
CREATE FUNCTION secumon._layout_positions(families text[], counters boolean)
RETURNS TABLE (layout_id integer, series text, series_key text, idx integer)
LANGUAGE sql STABLE AS $$
SELECT l.layout_id, f.series, f.series_key, pg_catalog.array_position(l.series_ids, f.series_id)
  FROM (SELECT ms.series_id, ms.metric_type || '.' || ms.metric_name AS series,
               CASE WHEN ms.labels = '{}' THEN '' ELSE substr(ms.series, strpos(ms.series, '{')) END AS series_key
          FROM secumon.metric_series ms
         WHERE (ms.metric_type, ms.metric_name) IN (SELECT split_part(x, '.', 1), substr(x, strpos(x, '.') + 1)
                                                      FROM unnest(families) AS x)
           AND secumon._counter_series(ms.metric_type, ms.metric_name) = counters) f
  -- the layouts holding each series (metric_layouts_series_ids), not every layout unnested
  JOIN secumon.metric_layouts l ON l.series_ids @> ARRAY[f.series_id]
$$;

-- SQL text of a query yielding (agent_key, series, series_key, time, value) for the series in $2
-- (text[]): rows of metric_samples (alias s) passing `metric_filter`, of disk_metrics (alias s,
-- agents alias a) passing `disk_filter`, and per-second rates of the disk and network counters
-- (alias s, agents alias a) computed from rows passing `counter_filter`, which may reach further
-- back than the others so that the first new sample has a predecessor.
CREATE FUNCTION secumon._alert_samples_query(metric_filter text, disk_filter text, counter_filter text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $q$
SELECT format($f$
    SELECT s.agent_key, ls.series, ls.series_key, s.time, s.vals[ls.idx] AS value
      FROM secumon._layout_positions($2, false) ls
      JOIN secumon.metric_samples s ON s.layout_id = ls.layout_id
     WHERE %1$s AND s.vals[ls.idx] IS NOT NULL
    UNION ALL
    SELECT a.agent_key, v.series, s.mountpoint, s.time, v.value
      FROM secumon.disk_metrics s
      JOIN secumon.agents a ON a.agent_id = s.agent_id
     CROSS JOIN LATERAL (VALUES ('disk.usage_percent', s.usage_percent),
                                ('disk.inodes_usage_percent', s.inodes_usage_percent),
                                ('disk.total_bytes', s.total_bytes::float8),
                                ('disk.used_bytes', s.used_bytes::float8),
                                ('disk.free_bytes', s.free_bytes::float8),
                                ('disk.inodes_total', s.inodes_total::float8),
                                ('disk.inodes_used', s.inodes_used::float8)) AS v(series, value)
     WHERE %2$s AND v.series = ANY ($2) AND v.value IS NOT NULL
    UNION ALL
    SELECT r.agent_key, r.series, r.series_key, r.time, r.value
      FROM (SELECT c.agent_key, c.series, c.series_key, c.time,
                   CASE WHEN c.time = lag(c.time) OVER w THEN NULL
                        -- a counter that went down was reset (reboot, wrap): count from zero
                        ELSE secumon._counter_delta_f(c.counter, lag(c.counter) OVER w)
                   END / extract(epoch FROM c.time - lag(c.time) OVER w) AS value
              FROM (SELECT a.agent_key, v.series, s.mountpoint AS series_key, s.time, v.counter
                      FROM secumon.disk_metrics s
                      JOIN secumon.agents a ON a.agent_id = s.agent_id
                     CROSS JOIN LATERAL (VALUES ('disk.read_bytes', s.read_bytes::float8),
                                                ('disk.write_bytes', s.write_bytes::float8),
                                                ('disk.read_ops', s.read_ops::float8),
                                                ('disk.write_ops', s.write_ops::float8)) AS v(series, counter)
                     WHERE %3$s AND v.series = ANY ($2)
                    UNION ALL
                    SELECT a.agent_key, v.series, s.interface, s.time, v.counter
                      FROM secumon.network_metrics s
                      JOIN secumon.agents a ON a.agent_id = s.agent_id
                     CROSS JOIN LATERAL (VALUES ('network.bytes_sent', s.bytes_sent::float8),
                                                ('network.bytes_recv', s.bytes_recv::float8),
                                                ('network.packets_sent', s.packets_sent::float8),
                                                ('network.packets_recv', s.packets_recv::float8),
                                                ('network.errors_in', s.errors_in::float8),
                                                ('network.errors_out', s.errors_out::float8),
                                                ('network.drops_in', s.drops_in::float8),
                                                ('network.drops_out', s.drops_out::float8)) AS v(series, counter)
                     WHERE %3$s AND v.series = ANY ($2)
                    UNION ALL
                    SELECT s.agent_key, ls.series, ls.series_key, s.time, s.vals[ls.idx]
                      FROM secumon._layout_positions($2, true) ls
                      JOIN (SELECT m.*, ma.agent_id FROM secumon.metric_samples m
                              JOIN secumon.agents ma ON ma.agent_key = m.agent_key) s ON s.layout_id = ls.layout_id
                     -- (a report without a value for the series is no sample of it: the rate
                     -- spans from the value before)
                     WHERE %3$s AND s.vals[ls.idx] IS NOT NULL) c
            WINDOW w AS (PARTITION BY c.agent_key, c.series, c.series_key ORDER BY c.time)) r
     WHERE r.value IS NOT NULL
$f$, metric_filter, disk_filter, counter_filter)
$q$;

-- The comparison of a rule, as SQL over columns v (value) and the rule alias r.
CREATE FUNCTION secumon._invalid_rule(rule_id uuid, what text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'rule % has an invalid %', rule_id, what USING ERRCODE = 'data_exception';
END
$$;

-- Whether a value breaches a rule's condition, and whether a firing alert's value has
-- recovered (back beyond recovery_threshold when set, else simply not breaching): the one
-- definition the engine and secumon.test_rule share. Plain SQL, so the planner inlines them.
CREATE FUNCTION secumon._breaches(condition text, value float8, threshold float8) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE condition WHEN 'gt' THEN value > threshold WHEN 'gte' THEN value >= threshold
                      WHEN 'lt' THEN value < threshold WHEN 'lte' THEN value <= threshold
                      ELSE value = threshold END
$$;

CREATE FUNCTION secumon._recovered(condition text, value float8, threshold float8, recovery_threshold float8)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT NOT secumon._breaches(condition, value, coalesce(recovery_threshold, threshold))
$$;
