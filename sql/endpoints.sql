-- The seed's HTTP endpoints as SQL functions, and who may call the dashboard queries
-- (sql/query.sql). Reference: docs/storage.md, "Query functions".


-- ---------------------------------------------------------------------------------------------
-- The seed's endpoints

-- GET /agents: every visible agent with last seen and status.
CREATE FUNCTION secumon.list_agents(online_within interval DEFAULT '2 minutes')
RETURNS TABLE (agent_id text, hostname text, os text, agent_version text, labels jsonb, tenant_id text,
               first_seen timestamptz, last_seen timestamptz, status text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF online_within IS NULL THEN
        RAISE EXCEPTION 'online_within must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF online_within <= interval '0' THEN
        RAISE EXCEPTION 'online_within must be positive, got %', online_within USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT a.agent_id, a.hostname, a.os, a.agent_version, a.labels, a.tenant_id, a.first_seen, a.last_seen,
           CASE WHEN a.last_seen IS NULL THEN 'never'
                WHEN a.last_seen >= now() - online_within THEN 'online'
                ELSE 'offline' END
      FROM secumon.agents a
     ORDER BY a.agent_id;
END
$$;
COMMENT ON FUNCTION secumon.list_agents(interval) IS 'Agents with last seen and status: online (seen within online_within), offline, or never.';

-- The time of an agent's newest report in `relation` (bounded by last_seen, so only the
-- newest partitions are searched).
CREATE FUNCTION secumon._latest_report(k integer, agent_id text, relation text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seen timestamptz;
    t timestamptz;
    lookback interval;
BEGIN
    SELECT a.last_seen INTO seen FROM secumon.agents a WHERE a.agent_key = k;
    IF seen IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH lookback IN ARRAY ARRAY[interval '1 day', interval '8 days', interval '100 years'] LOOP
        IF relation = 'metric_samples' THEN
            SELECT max(s.time) INTO t FROM secumon.metric_samples s
             WHERE s.agent_key = k AND s.time <= seen AND s.time > seen - lookback;
        ELSE
            EXECUTE format('SELECT max(t.time) FROM secumon.%I t WHERE t.agent_id = $1 AND t.time <= $2 AND t.time > $2 - $3', relation)
               INTO t USING agent_id, seen, lookback;
        END IF;
        EXIT WHEN t IS NOT NULL;
    END LOOP;
    RETURN t;
END
$$;

-- GET /agents/:id/metrics/latest
CREATE FUNCTION secumon.latest_metrics(agent_id text)
RETURNS TABLE ("time" timestamptz, metric_type text, metric_name text, value float8)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
    t timestamptz := secumon._latest_report(k, agent_id, 'metric_samples');
BEGIN
    RETURN QUERY
    SELECT s.time, u.metric_type, u.metric_name, u.value
      FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
     CROSS JOIN LATERAL unnest(l.metric_types, l.metric_names, s.vals) AS u(metric_type, metric_name, value)
     WHERE s.agent_key = k AND s.time = t AND u.value IS NOT NULL
     ORDER BY u.metric_type, u.metric_name;
END
$$;
COMMENT ON FUNCTION secumon.latest_metrics(text) IS 'The newest report of an agent: one row per metric.';

-- GET /agents/:id/disks
CREATE FUNCTION secumon.agent_disks(agent_id text)
RETURNS TABLE ("time" timestamptz, device text, mountpoint text, fs_type text, total_bytes bigint, used_bytes bigint,
               free_bytes bigint, usage_percent float8, inodes_total bigint, inodes_used bigint,
               inodes_usage_percent float8, read_bytes bigint, write_bytes bigint, read_ops bigint, write_ops bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
    t timestamptz := secumon._latest_report(k, agent_id, 'disk_metrics');
BEGIN
    RETURN QUERY
    SELECT d.time, d.device, d.mountpoint, d.fs_type, d.total_bytes, d.used_bytes, d.free_bytes, d.usage_percent,
           d.inodes_total, d.inodes_used, d.inodes_usage_percent, d.read_bytes, d.write_bytes, d.read_ops, d.write_ops
      FROM secumon.disk_metrics d
     WHERE d.agent_id = agent_disks.agent_id AND d.time = t
     ORDER BY d.mountpoint, d.device;
END
$$;
COMMENT ON FUNCTION secumon.agent_disks(text) IS 'Filesystems of an agent as of its newest report.';

-- GET /agents/:id/networks: newest counters and per-second rates since the sample before.
CREATE FUNCTION secumon.agent_networks(agent_id text)
RETURNS TABLE ("time" timestamptz, interface text, bytes_sent bigint, bytes_recv bigint, packets_sent bigint,
               packets_recv bigint, errors_in bigint, errors_out bigint, drops_in bigint, drops_out bigint,
               bytes_sent_per_second float8, bytes_recv_per_second float8,
               packets_sent_per_second float8, packets_recv_per_second float8)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
    t timestamptz := secumon._latest_report(k, agent_id, 'network_metrics');
BEGIN
    RETURN QUERY
    SELECT n.time, n.interface, n.bytes_sent, n.bytes_recv, n.packets_sent, n.packets_recv,
           n.errors_in, n.errors_out, n.drops_in, n.drops_out,
           secumon.counter_delta(n.bytes_sent, p.bytes_sent) / nullif(extract(epoch FROM n.time - p.time), 0)::float8,
           secumon.counter_delta(n.bytes_recv, p.bytes_recv) / nullif(extract(epoch FROM n.time - p.time), 0)::float8,
           secumon.counter_delta(n.packets_sent, p.packets_sent) / nullif(extract(epoch FROM n.time - p.time), 0)::float8,
           secumon.counter_delta(n.packets_recv, p.packets_recv) / nullif(extract(epoch FROM n.time - p.time), 0)::float8
      FROM secumon.network_metrics n
      LEFT JOIN LATERAL (SELECT q.* FROM secumon.network_metrics q
                          WHERE q.agent_id = n.agent_id AND q.interface = n.interface
                            AND q.time < n.time AND q.time >= n.time - interval '15 minutes'
                          ORDER BY q.time DESC LIMIT 1) p ON true
     WHERE n.agent_id = agent_networks.agent_id AND n.time = t
     ORDER BY n.interface;
END
$$;
COMMENT ON FUNCTION secumon.agent_networks(text) IS 'Network interfaces of an agent as of its newest report, with per-second rates (reset-aware).';

-- GET /agents/:id/processes
CREATE FUNCTION secumon.agent_processes(agent_id text, top_n integer DEFAULT 10, order_by text DEFAULT 'cpu')
RETURNS TABLE ("time" timestamptz, pid integer, name text, command text, "user" text, cpu_percent float8,
               memory_bytes bigint, memory_percent float8, status text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
    t timestamptz;
BEGIN
    PERFORM secumon._check_positive(top_n, 'top_n', 10000);
    IF order_by IS NULL THEN
        RAISE EXCEPTION 'order_by must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF order_by NOT IN ('cpu', 'memory') THEN
        RAISE EXCEPTION 'order_by must be cpu or memory, got %', quote_literal(order_by) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := secumon._latest_report(k, agent_id, 'process_metrics');
    RETURN QUERY
    SELECT p.time, p.pid, p.name, p.command, p."user", p.cpu_percent, p.memory_bytes, p.memory_percent, p.status
      FROM secumon.process_metrics p
     WHERE p.agent_id = agent_processes.agent_id AND p.time = t
     ORDER BY CASE WHEN order_by = 'cpu' THEN p.cpu_percent ELSE p.memory_bytes::float8 END DESC NULLS LAST, p.pid
     LIMIT top_n;
END
$$;
COMMENT ON FUNCTION secumon.agent_processes(text, integer, text) IS 'Top processes of an agent as of its newest report, by cpu or memory.';

-- The series an agent stored within `within` of now (every series the caller may see when
-- agent_id is NULL), with labels and kind: what a scrape or probe brought, and the choices of
-- Grafana's series variables.
CREATE FUNCTION secumon.list_series(agent_id text DEFAULT NULL, within interval DEFAULT '1 day')
RETURNS TABLE (series text, metric_type text, metric_name text, labels jsonb, kind text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer;
BEGIN
    IF within IS NULL OR within <= interval '0' THEN
        RAISE EXCEPTION 'within must be a positive interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF agent_id IS NOT NULL THEN
        k := secumon._agent_key(agent_id);
    END IF;
    RETURN QUERY
    SELECT ms.series, ms.metric_type, ms.metric_name, ms.labels,
           CASE WHEN secumon._counter_series(ms.metric_type, ms.metric_name) THEN 'counter' ELSE 'gauge' END
      FROM secumon.metric_series ms
     WHERE k IS NULL
        OR ms.series_id IN (SELECT u.series_id
                              FROM secumon.metric_layouts l
                             CROSS JOIN LATERAL unnest(l.series_ids) AS u(series_id)
                             WHERE l.layout_id IN (SELECT DISTINCT s.layout_id FROM secumon.metric_samples s
                                                    WHERE s.agent_key = k AND s.time > now() - within))
     ORDER BY 1;
END
$$;
COMMENT ON FUNCTION secumon.list_series(text, interval) IS 'Series an agent stored lately (all visible series for NULL): name, type, labels, gauge or counter.';

-- ---------------------------------------------------------------------------------------------
-- Privileges: readers (and the web role of sql/auth.sql) read through these functions.

GRANT SELECT ON secumon.storage_policies TO secumon_web;  -- retention horizons pick the tier
GRANT SELECT ON secumon.metric_series, secumon.rollups, secumon.compressed_partitions,
                secumon.metrics_5min, secumon.metrics_1hour, secumon.disk_metrics_1hour, secumon.network_metrics_1hour,
                secumon._metric_summaries_5min, secumon._metric_summaries_1hour
   TO secumon_reader, secumon_admin, secumon_web;
GRANT UPDATE (refresh_lag, late_margin, max_interval_per_run, max_runtime, counter_max_gap) ON secumon.rollups TO secumon_admin;
GRANT EXECUTE ON FUNCTION
    secumon.series(text, text, timestamptz, timestamptz, integer),
    secumon.series_lttb(text, text, timestamptz, timestamptz, integer),
    secumon.metric_history(text, text, timestamptz, timestamptz, integer),
    secumon.rate(text, text, timestamptz, timestamptz, integer, interval),
    secumon.percentiles(text, text, timestamptz, timestamptz, float8[]),
    secumon.top_agents(text, timestamptz, timestamptz, integer, text),
    secumon.list_agents(interval),
    secumon.list_series(text, interval),
    secumon.latest_metrics(text),
    secumon.agent_disks(text),
    secumon.agent_networks(text),
    secumon.agent_processes(text, integer, text),
    secumon.health(),
    secumon.counter_delta(bigint, bigint),
    secumon.lttb(timestamptz[], float8[], integer),
    secumon.sketch_quantile(bytea, float8),
    secumon.sketch_quantiles(bytea, float8[]),
    secumon.sketch_count(bytea),
    secumon.sketch(float8),
    secumon.sketch_merge(bytea),
    -- helpers the functions and views above call with the caller's rights
    secumon._agent_key(text), secumon._check_range(timestamptz, timestamptz), secumon._check_positive(integer, text, integer),
    secumon._finest_tier(timestamptz), secumon._step(interval, integer, interval), secumon._bucket(interval, timestamptz),
    secumon._history(integer, bigint, timestamptz, timestamptz, integer),
    secumon._disk_history(text, text, timestamptz, timestamptz, integer),
    secumon._counter_delta_f(float8, float8), secumon._counter_increase(anycompatible, anycompatible),
    secumon._series_id(text),
    secumon._parse_series(text), secumon._series_key(text, text, jsonb), secumon._label_string(jsonb),
    secumon._unescape_label(text), secumon._latest_report(integer, text, text),
    secumon._metric_summaries_from_raw(interval, timestamptz, timestamptz),
    secumon._series(text, text, timestamptz, timestamptz, integer),
    secumon._rate(text, text, timestamptz, timestamptz, integer, interval),
    secumon._series_lttb(text, text, timestamptz, timestamptz, integer),
    secumon._disk_rollup_rows(timestamptz, timestamptz),
    secumon._network_rollup_rows(timestamptz, timestamptz, interval),
    secumon._summarize(bigint[], float8[]), secumon._summary_merge(bytea),
    secumon._summarize_sfunc(internal, bigint[], float8[]), secumon._summarize_final(internal),
    secumon._summary_merge_sfunc(internal, bytea),
    secumon._sketch_add_sfunc(internal, float8), secumon._sketch_merge_sfunc(internal, bytea), secumon._sketch_final(internal),
    secumon._summary_unnest(bytea), secumon._summary_series(bytea, bigint),
    secumon._summary_points(timestamptz[], bytea[], bigint, bigint)
   TO secumon_reader, secumon_admin, secumon_web;
GRANT EXECUTE ON FUNCTION
    secumon.refresh_rollup(text), secumon.compress_partition(regclass), secumon.decompress_partition(regclass),
    secumon.apply_retention(text), secumon.set_retention_hour(integer, text)
   TO secumon_admin;
