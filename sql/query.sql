-- Dashboard queries and the seed's HTTP API as SQL functions. Reference: docs/storage.md.
--
-- Every function here is SECURITY INVOKER: it reads through the public relations, so row-level
-- security (sql/tenancy.sql) confines each caller to its tenant; an agent of another tenant looks
-- exactly like an agent that does not exist. Arguments are checked up front: NULL where a value
-- is required -> SQLSTATE 22004, a bad value (from after to, max_points <= 0, unknown metric)
-- -> 22023, an unknown agent -> P0002 (PostgREST answers 404).

-- ---------------------------------------------------------------------------------------------
-- Argument checks

CREATE FUNCTION secumon._agent_key(agent_id text) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k integer;
BEGIN
    IF agent_id IS NULL THEN
        RAISE EXCEPTION 'agent_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT a.agent_key INTO k FROM secumon.agents a WHERE a.agent_id = _agent_key.agent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown agent %', quote_literal(agent_id) USING ERRCODE = 'no_data_found',
            HINT = 'SELECT agent_id FROM secumon.list_agents() lists the agents you may see.';
    END IF;
    RETURN k;
END
$$;

CREATE FUNCTION secumon._check_range(from_time timestamptz, to_time timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF from_time IS NULL OR to_time IS NULL THEN
        RAISE EXCEPTION 'from_time and to_time must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT isfinite(from_time) OR NOT isfinite(to_time) THEN
        RAISE EXCEPTION 'from_time and to_time must be finite timestamps' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF from_time > to_time THEN
        RAISE EXCEPTION 'from_time (%) is after to_time (%)', from_time, to_time USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Swap the two timestamps.';
    END IF;
END
$$;

CREATE FUNCTION secumon._check_positive(value integer, name text, upper_limit integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', name USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF value <= 0 OR value > upper_limit THEN
        RAISE EXCEPTION '% must be between 1 and %, got %', name, upper_limit, value USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The finest tier that still holds data at from_time: raw, 5 minutes or 1 hour (retention
-- drops raw days first, then 5-minute ones).
CREATE FUNCTION secumon._finest_tier(from_time timestamptz) RETURNS integer
LANGUAGE sql STABLE
RETURN CASE
    WHEN from_time >= coalesce((SELECT sp.dropped_before FROM secumon.storage_policies sp WHERE sp.table_name = 'metric_samples'), '-infinity') THEN 0
    WHEN from_time >= coalesce((SELECT sp.dropped_before FROM secumon.storage_policies sp WHERE sp.table_name = 'metrics_5min'), '-infinity') THEN 1
    ELSE 2 END;

-- A step of at least `minimum` seconds, rounded up to a multiple of `unit`.
CREATE FUNCTION secumon._step(span interval, max_points integer, unit interval) RETURNS interval
LANGUAGE sql IMMUTABLE
RETURN greatest(unit, unit * ceil(extract(epoch FROM span) / max_points / extract(epoch FROM unit)));

-- ---------------------------------------------------------------------------------------------
-- History of one series with automatic resolution

-- Points of one series: raw samples when at most max_points fit (else averages per step), or
-- 5-minute / hourly rollups merged per step, whichever keeps the point count <= max_points.
-- (Generic plans: the range and watermarks are parameters, so partitions outside them are pruned
-- when the cached plan starts, and no call pays for planning.)
CREATE FUNCTION secumon._history(k integer, sid bigint, from_time timestamptz, to_time timestamptz, max_points integer)
RETURNS TABLE (bucket timestamptz, value float8, min float8, max float8, samples bigint, resolution text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    span interval := to_time - from_time;
    step interval := make_interval(secs => greatest(1, ceil(extract(epoch FROM to_time - from_time) / max_points)));
    tier integer := secumon._finest_tier(from_time);
    n bigint;
    lo timestamptz;
    wm1 timestamptz;
    wm5 timestamptz;
BEGIN
    IF step < interval '5 minutes' AND tier = 0 THEN
        SELECT count(*) INTO n
          FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
         WHERE s.agent_key = k AND s.time >= from_time AND s.time < to_time
           AND s.vals[array_position(l.series_ids, sid)] IS NOT NULL;
        IF n <= max_points THEN
            RETURN QUERY
            SELECT s.time, v.v, v.v, v.v, 1::bigint, 'raw'::text
              FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
             CROSS JOIN LATERAL (SELECT s.vals[array_position(l.series_ids, sid)] AS v) v
             WHERE s.agent_key = k AND s.time >= from_time AND s.time < to_time AND v.v IS NOT NULL
             ORDER BY s.time;
        ELSE
            RETURN QUERY
            SELECT secumon._bucket(step, s.time), avg(v.v), min(v.v), max(v.v), count(v.v), 'raw/' || step::text
              FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
             CROSS JOIN LATERAL (SELECT s.vals[array_position(l.series_ids, sid)] AS v) v
             WHERE s.agent_key = k AND s.time >= from_time AND s.time < to_time AND v.v IS NOT NULL
             GROUP BY 1 ORDER BY 1;
        END IF;
    ELSE
        -- Materialised hours, then materialised 5-minute buckets, then raw rows past the 5-minute
        -- watermark, merged per step by one call. (The real-time views give the same rows; reading
        -- the tables directly with the watermarks as parameters lets the plan skip every partition
        -- outside the range, which keeps a 30-day history under a millisecond.)
        IF step < interval '1 hour' AND tier <= 1 THEN
            step := secumon._step(span, max_points, interval '5 minutes');
            wm1 := '-infinity';  -- no hourly rows: 5-minute resolution asked
        ELSE
            step := secumon._step(span, max_points, interval '1 hour');
            SELECT coalesce(ro.watermark, '-infinity') INTO wm1 FROM secumon.rollups ro WHERE ro.rollup_name = 'metrics_1hour';
        END IF;
        SELECT coalesce(ro.watermark, '-infinity') INTO wm5 FROM secumon.rollups ro WHERE ro.rollup_name = 'metrics_5min';
        lo := secumon._bucket(CASE WHEN step < interval '1 hour' THEN interval '5 minutes' ELSE interval '1 hour' END, from_time);
        RETURN QUERY
        SELECT p.bucket, p.value, p.min, p.max, p.samples,
               CASE WHEN step < interval '1 hour' THEN '5min/' ELSE '1hour/' END || step::text
          FROM (SELECT array_agg(u.b ORDER BY u.b) AS b, array_agg(u.s ORDER BY u.b) AS s
                  FROM (SELECT h.bucket AS b, h.summary AS s FROM secumon.metric_rollup_1hour h
                         WHERE h.agent_key = k AND h.bucket >= lo AND h.bucket < least(to_time, wm1)
                        UNION ALL
                        SELECT f.bucket, f.summary FROM secumon.metric_rollup_5min f
                         WHERE f.agent_key = k AND f.bucket >= greatest(lo, wm1) AND f.bucket < least(to_time, wm5)
                        UNION ALL
                        SELECT r.bucket, r.summary FROM secumon._metric_summaries_from_raw(interval '5 minutes', greatest(lo, wm5), to_time) r
                         WHERE r.agent_key = k) u) a
         CROSS JOIN LATERAL secumon._summary_points(a.b, a.s, sid, (extract(epoch FROM step) * 1000000)::bigint) p;
    END IF;
END
$$;

-- Disk series per filesystem ("disk.usage_percent" and friends): raw or hourly.
CREATE FUNCTION secumon._disk_history(agent_id text, column_name text, from_time timestamptz, to_time timestamptz, max_points integer)
RETURNS TABLE (bucket timestamptz, label text, value float8)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    step interval := make_interval(secs => greatest(1, ceil(extract(epoch FROM to_time - from_time) / max_points)));
BEGIN
    IF step < interval '1 hour' AND from_time >= coalesce((SELECT sp.dropped_before FROM secumon.storage_policies sp
                                                            WHERE sp.table_name = 'disk_metrics'), '-infinity') THEN
        RETURN QUERY EXECUTE format(
            'SELECT secumon._bucket($1, d.time), d.mountpoint, avg(d.%I)::float8
               FROM secumon.disk_metrics d
              WHERE d.agent_id = $2 AND d.time >= $3 AND d.time < $4 AND d.%I IS NOT NULL
              GROUP BY 1, 2 ORDER BY 2, 1', column_name, column_name)
        USING step, agent_id, from_time, to_time;
    ELSE
        IF column_name NOT IN ('usage_percent', 'inodes_usage_percent') THEN
            RAISE EXCEPTION 'disk.% is kept hourly only as usage_percent and inodes_usage_percent', column_name
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Ask for a shorter range, or for disk.usage_percent.';
        END IF;
        step := secumon._step(to_time - from_time, max_points, interval '1 hour');
        RETURN QUERY EXECUTE format(
            'SELECT secumon._bucket($1, h.bucket), h.mountpoint, avg(h.%I)::float8
               FROM secumon.disk_metrics_1hour h
              WHERE h.agent_id = $2 AND h.bucket >= secumon._bucket(interval ''1 hour'', $3) AND h.bucket < $4
              GROUP BY 1, 2 ORDER BY 2, 1',
            CASE column_name WHEN 'usage_percent' THEN 'avg_usage' ELSE 'avg_inodes' END)
        USING step, agent_id, from_time, to_time;
    END IF;
END
$$;

-- (PL/pgSQL cannot name an input and an output column both "metric": the public functions
-- are SQL wrappers around _series, _rate and _series_lttb.)
CREATE FUNCTION secumon._series(agent_id text, m text, from_time timestamptz, to_time timestamptz, max_points integer)
RETURNS TABLE (t timestamptz, series text, v float8)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
    disk_column text;
BEGIN
    PERFORM secumon._check_range(from_time, to_time);
    PERFORM secumon._check_positive(max_points, 'max_points', 100000);
    IF m IS NULL THEN
        RAISE EXCEPTION 'metric must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM secumon.metric_series s WHERE s.series = m) AND m LIKE 'disk.%' THEN
        disk_column := substr(m, 6);
        IF disk_column NOT IN ('usage_percent', 'inodes_usage_percent', 'used_bytes', 'free_bytes', 'total_bytes', 'inodes_used') THEN
            RAISE EXCEPTION 'unknown metric %', quote_literal(m) USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Disk series are disk.usage_percent, disk.inodes_usage_percent, disk.used_bytes, disk.free_bytes, disk.total_bytes, disk.inodes_used; counters go through secumon.rate().';
        END IF;
        RETURN QUERY SELECT h.bucket, m || ':' || h.label, h.value
                       FROM secumon._disk_history(agent_id, disk_column, from_time, to_time, max_points) h;
        RETURN;
    END IF;
    RETURN QUERY SELECT h.bucket, m, h.value
                   FROM secumon._history(k, secumon._series_id(m), from_time, to_time, max_points) h;
END
$$;

CREATE FUNCTION secumon.series(agent_id text, metric text, from_time timestamptz, to_time timestamptz,
                               max_points integer DEFAULT 1000)
RETURNS TABLE ("time" timestamptz, metric text, value float8)
LANGUAGE sql STABLE
AS $$ SELECT * FROM secumon._series(agent_id, metric, from_time, to_time, max_points) $$;
COMMENT ON FUNCTION secumon.series(text, text, timestamptz, timestamptz, integer) IS 'One series as time, metric, value for Grafana: raw samples, or 5-minute / hourly averages, whichever keeps at most max_points points. disk.* series return one series per mountpoint (metric "disk.usage_percent:/").';

-- The seed's history endpoint: one series with min/max and the resolution used.
CREATE FUNCTION secumon.metric_history(agent_id text, metric text,
                                       from_time timestamptz DEFAULT now() - interval '1 hour',
                                       to_time timestamptz DEFAULT now(), max_points integer DEFAULT 500)
RETURNS TABLE ("time" timestamptz, value float8, min float8, max float8, samples bigint, resolution text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
BEGIN
    PERFORM secumon._check_range(from_time, to_time);
    PERFORM secumon._check_positive(max_points, 'max_points', 100000);
    RETURN QUERY SELECT * FROM secumon._history(k, secumon._series_id(metric), from_time, to_time, max_points);
END
$$;
COMMENT ON FUNCTION secumon.metric_history(text, text, timestamptz, timestamptz, integer) IS 'History of one metric of an agent with automatic resolution (raw, 5 min, 1 hour): value is the average per point, with min, max and sample count.';

-- ---------------------------------------------------------------------------------------------
-- Counter rates

CREATE FUNCTION secumon._counter_delta_f(cur float8, prev float8) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN secumon._counter_increase(cur, prev);

-- Per-second rate of a counter: per step, the counter's increase (resets counted from zero,
-- gaps longer than max_gap skipped) divided by the seconds it covers. metric is a counter
-- series ("cpu.context_switches"), "network.<counter>" (one series per interface) or
-- "disk.<read|write>_<bytes|ops>" (one per mountpoint).
CREATE FUNCTION secumon._rate(agent_id text, m text, from_time timestamptz, to_time timestamptz,
                              max_points integer, max_gap interval)
RETURNS TABLE (t timestamptz, series text, v float8)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
    step interval;
    col text;
    tbl text;
    key_col text;
BEGIN
    PERFORM secumon._check_range(from_time, to_time);
    PERFORM secumon._check_positive(max_points, 'max_points', 100000);
    IF m IS NULL OR max_gap IS NULL THEN
        RAISE EXCEPTION 'metric and max_gap must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF max_gap <= interval '0' THEN
        RAISE EXCEPTION 'max_gap must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    step := make_interval(secs => greatest(1, ceil(extract(epoch FROM to_time - from_time) / max_points)));

    IF m LIKE 'network.%' AND NOT EXISTS (SELECT 1 FROM secumon.metric_series s WHERE s.series = m) THEN
        col := substr(m, 9);
        tbl := 'network_metrics';
        key_col := 'interface';
        IF col NOT IN ('bytes_sent', 'bytes_recv', 'packets_sent', 'packets_recv', 'errors_in', 'errors_out', 'drops_in', 'drops_out') THEN
            RAISE EXCEPTION 'unknown metric %', quote_literal(m) USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Network counters: network.bytes_sent, bytes_recv, packets_sent, packets_recv, errors_in, errors_out, drops_in, drops_out.';
        END IF;
        IF step >= interval '1 hour' THEN
            -- Hourly totals are exact counter increases already.
            step := secumon._step(to_time - from_time, max_points, interval '1 hour');
            RETURN QUERY EXECUTE format(
                'SELECT secumon._bucket($1, h.bucket), $5 || '':'' || h.interface,
                        sum(h.%I)::float8 / extract(epoch FROM $1)
                   FROM secumon.network_metrics_1hour h
                  WHERE h.agent_id = $2 AND h.bucket >= secumon._bucket(interval ''1 hour'', $3) AND h.bucket < $4
                  GROUP BY 1, 2 ORDER BY 2, 1', col)
            USING step, agent_id, from_time, to_time, m;
            RETURN;
        END IF;
    ELSIF m LIKE 'disk.%' AND NOT EXISTS (SELECT 1 FROM secumon.metric_series s WHERE s.series = m) THEN
        col := substr(m, 6);
        tbl := 'disk_metrics';
        key_col := 'mountpoint';
        IF col NOT IN ('read_bytes', 'write_bytes', 'read_ops', 'write_ops') THEN
            RAISE EXCEPTION 'unknown metric %', quote_literal(m) USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Disk counters: disk.read_bytes, disk.write_bytes, disk.read_ops, disk.write_ops.';
        END IF;
    END IF;

    IF tbl IS NOT NULL THEN
        RETURN QUERY EXECUTE format(
            'SELECT secumon._bucket($1, d.time), $5 || '':'' || d.key, sum(d.delta) / sum(d.seconds)
               FROM (SELECT x.time, x.key,
                            secumon._counter_delta_f(x.v, lag(x.v) OVER w) AS delta,
                            extract(epoch FROM x.time - lag(x.time) OVER w)::float8 AS seconds
                       FROM (SELECT t.time, t.%I AS key, t.%I::float8 AS v FROM secumon.%I t
                              WHERE t.agent_id = $2 AND t.time >= $3 - $6 AND t.time < $4) x
                     WINDOW w AS (PARTITION BY x.key ORDER BY x.time)) d
              WHERE d.time >= $3 AND d.seconds > 0 AND d.seconds <= extract(epoch FROM $6) AND d.delta IS NOT NULL
              GROUP BY 1, 2 ORDER BY 2, 1', key_col, col, tbl)
        USING step, agent_id, from_time, to_time, m, max_gap;
        RETURN;
    END IF;

    RETURN QUERY
    SELECT secumon._bucket(step, d.time), m, sum(d.delta) / sum(d.seconds)
      FROM (SELECT x.time,
                   secumon._counter_delta_f(x.v, lag(x.v) OVER (ORDER BY x.time)) AS delta,
                   extract(epoch FROM x.time - lag(x.time) OVER (ORDER BY x.time))::float8 AS seconds
              FROM (SELECT s.time, s.vals[array_position(l.series_ids, secumon._series_id(m))] AS v
                      FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
                     WHERE s.agent_key = k AND s.time >= from_time - max_gap AND s.time < to_time) x
             WHERE x.v IS NOT NULL) d
     WHERE d.time >= from_time AND d.seconds > 0 AND d.seconds <= extract(epoch FROM max_gap) AND d.delta IS NOT NULL
     GROUP BY 1 ORDER BY 1;
END
$$;

CREATE FUNCTION secumon.rate(agent_id text, metric text, from_time timestamptz, to_time timestamptz,
                             max_points integer DEFAULT 1000, max_gap interval DEFAULT '15 minutes')
RETURNS TABLE ("time" timestamptz, metric text, value float8)
LANGUAGE sql STABLE
AS $$ SELECT * FROM secumon._rate(agent_id, metric, from_time, to_time, max_points, max_gap) $$;
COMMENT ON FUNCTION secumon.rate(text, text, timestamptz, timestamptz, integer, interval) IS 'Per-second rate of a counter (time, metric, value), correct across counter resets; network.* and disk.* counters give one series per interface / mountpoint.';

-- ---------------------------------------------------------------------------------------------
-- Percentiles across tiers

-- Percentiles of one series over [from_time, to_time), merging sketches: hourly rollups for the
-- whole hours, 5-minute rollups for whole 5-minute buckets at the edges, raw samples for the
-- rest. Merging is exact, so the answer is the one a sketch of all raw samples would give:
-- within 1 % of percentile_disc.
CREATE FUNCTION secumon.percentiles(agent_id text, metric text, from_time timestamptz, to_time timestamptz,
                                    quantiles float8[] DEFAULT '{0.5,0.95,0.99}')
RETURNS TABLE (quantile float8, value float8, samples bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
    sid bigint;
    h0 timestamptz;  -- first whole hour
    h1 timestamptz;  -- end of the last whole hour
    f0 timestamptz;  -- first whole 5-minute bucket
    f1 timestamptz;  -- end of the last whole 5-minute bucket
    merged bytea;
BEGIN
    PERFORM secumon._check_range(from_time, to_time);
    IF quantiles IS NULL OR cardinality(quantiles) = 0 OR array_position(quantiles, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'quantiles must be a non-empty array without NULLs' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(quantiles) q WHERE NOT q BETWEEN 0 AND 1) THEN
        RAISE EXCEPTION 'quantiles must be between 0 and 1' USING ERRCODE = 'invalid_parameter_value', HINT = 'The 95th percentile is 0.95.';
    END IF;
    sid := secumon._series_id(metric);
    f0 := secumon._bucket(interval '5 minutes', from_time);
    IF f0 < from_time THEN f0 := f0 + interval '5 minutes'; END IF;
    f1 := greatest(f0, secumon._bucket(interval '5 minutes', to_time));
    h0 := secumon._bucket(interval '1 hour', f0);
    IF h0 < f0 THEN h0 := h0 + interval '1 hour'; END IF;
    h1 := secumon._bucket(interval '1 hour', f1);
    IF h1 <= h0 THEN
        h0 := f1;  -- no whole hour: 5-minute buckets cover [f0, f1)
        h1 := f1;
    END IF;
    SELECT secumon.sketch_merge(x.sketch) INTO merged FROM (
        SELECT y.sketch FROM secumon._metric_summaries_1hour m CROSS JOIN LATERAL secumon._summary_series(m.summary, sid) y
         WHERE m.agent_key = k AND m.bucket >= h0 AND m.bucket < h1
        UNION ALL
        SELECT y.sketch FROM secumon._metric_summaries_5min m CROSS JOIN LATERAL secumon._summary_series(m.summary, sid) y
         WHERE m.agent_key = k AND ((m.bucket >= f0 AND m.bucket < h0) OR (m.bucket >= h1 AND m.bucket < f1))
        UNION ALL
        SELECT secumon.sketch(s.vals[array_position(l.series_ids, sid)])
          FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
         WHERE s.agent_key = k AND ((s.time >= from_time AND s.time < f0) OR (s.time >= f1 AND s.time < to_time))) x;
    RETURN QUERY SELECT q.q, CASE WHEN merged IS NULL THEN NULL ELSE secumon.sketch_quantile(merged, q.q) END,
                        CASE WHEN merged IS NULL THEN 0 ELSE secumon.sketch_count(merged) END
                   FROM unnest(quantiles) WITH ORDINALITY AS q(q, o) ORDER BY q.o;
END
$$;
COMMENT ON FUNCTION secumon.percentiles(text, text, timestamptz, timestamptz, float8[]) IS 'Percentiles of one metric over a range, merged across hourly, 5-minute and raw data; within 1 % of percentile_disc over the raw samples.';

-- ---------------------------------------------------------------------------------------------
-- Top-N agents and LTTB

CREATE FUNCTION secumon.top_agents(metric text, from_time timestamptz DEFAULT now() - interval '1 hour',
                                   to_time timestamptz DEFAULT now(), n integer DEFAULT 10, aggregate text DEFAULT 'avg')
RETURNS TABLE (agent_id text, hostname text, value float8, samples bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    sid bigint;
    q float8;
BEGIN
    PERFORM secumon._check_range(from_time, to_time);
    PERFORM secumon._check_positive(n, 'n', 10000);
    IF aggregate IS NULL THEN
        RAISE EXCEPTION 'aggregate must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF aggregate NOT IN ('avg', 'max', 'min', 'p50', 'p95', 'p99', 'last') THEN
        RAISE EXCEPTION 'unknown aggregate %', quote_literal(aggregate) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use avg, max, min, p50, p95, p99 or last.';
    END IF;
    sid := secumon._series_id(metric);
    IF aggregate = 'last' THEN
        RETURN QUERY
        SELECT a.agent_id, a.hostname, x.v, 1::bigint
          FROM secumon.agents a
         CROSS JOIN LATERAL (SELECT s.vals[array_position(l.series_ids, sid)] AS v
                               FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
                              WHERE s.agent_key = a.agent_key AND s.time >= from_time AND s.time < to_time
                                AND s.vals[array_position(l.series_ids, sid)] IS NOT NULL
                              ORDER BY s.time DESC LIMIT 1) x
         ORDER BY x.v DESC, a.agent_id LIMIT n;
        RETURN;
    END IF;
    q := CASE aggregate WHEN 'p50' THEN 0.5 WHEN 'p95' THEN 0.95 WHEN 'p99' THEN 0.99 END;
    RETURN QUERY
    WITH per_agent AS (
        SELECT m.agent_id, sum(y.sum) / sum(y.count) AS avg, max(y.max) AS max, min(y.min) AS min,
               sum(y.count)::bigint AS samples,
               CASE WHEN q IS NOT NULL THEN secumon.sketch_merge(y.sketch) END AS sketch
          FROM (SELECT * FROM secumon._metric_summaries_1hour h
                 WHERE to_time - from_time >= interval '1 day'
                   AND h.bucket >= secumon._bucket(interval '1 hour', from_time) AND h.bucket < to_time
                UNION ALL
                SELECT * FROM secumon._metric_summaries_5min f
                 WHERE to_time - from_time < interval '1 day'
                   AND f.bucket >= secumon._bucket(interval '5 minutes', from_time) AND f.bucket < to_time) m
         CROSS JOIN LATERAL secumon._summary_series(m.summary, sid) y
         GROUP BY m.agent_id)
    SELECT p.agent_id, a.hostname,
           CASE aggregate WHEN 'avg' THEN p.avg WHEN 'max' THEN p.max WHEN 'min' THEN p.min
                          ELSE secumon.sketch_quantile(p.sketch, q) END AS v,
           p.samples
      FROM per_agent p JOIN secumon.agents a ON a.agent_id = p.agent_id
     ORDER BY 3 DESC NULLS LAST, p.agent_id LIMIT n;
END
$$;
COMMENT ON FUNCTION secumon.top_agents(text, timestamptz, timestamptz, integer, text) IS 'The n agents with the highest avg / max / min / p50 / p95 / p99 / last value of a metric over a range (from rollups; ranges of a day or more use hourly buckets).';

-- A series downsampled with LTTB (peaks kept): raw samples for up to two days, else
-- 5-minute or hourly averages, reduced to max_points.
CREATE FUNCTION secumon._series_lttb(agent_id text, m text, from_time timestamptz, to_time timestamptz, max_points integer)
RETURNS TABLE (t timestamptz, series text, v float8)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k integer := secumon._agent_key(agent_id);
    sid bigint;
    span interval;
    fine_points integer;
BEGIN
    PERFORM secumon._check_range(from_time, to_time);
    PERFORM secumon._check_positive(max_points, 'max_points', 100000);
    sid := secumon._series_id(m);
    span := to_time - from_time;
    -- As many source points as raw data has for two days at 10 s, at most.
    fine_points := greatest(max_points, least(17280, (extract(epoch FROM span) / 10)::integer));
    RETURN QUERY
    SELECT l.time, m, l.value
      FROM (SELECT array_agg(h.bucket ORDER BY h.bucket) AS t, array_agg(h.value ORDER BY h.bucket) AS v
              FROM secumon._history(k, sid, from_time, to_time, fine_points) h) src
     CROSS JOIN LATERAL secumon.lttb(src.t, src.v, max_points) l;
END
$$;
CREATE FUNCTION secumon.series_lttb(agent_id text, metric text, from_time timestamptz, to_time timestamptz,
                                    max_points integer DEFAULT 1000)
RETURNS TABLE ("time" timestamptz, metric text, value float8)
LANGUAGE sql STABLE
AS $$ SELECT * FROM secumon._series_lttb(agent_id, metric, from_time, to_time, max_points) $$;
COMMENT ON FUNCTION secumon.series_lttb(text, text, timestamptz, timestamptz, integer) IS 'Like secumon.series(), downsampled with Largest-Triangle-Three-Buckets so peaks survive.';
