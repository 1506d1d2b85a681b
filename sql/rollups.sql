-- Rollups kept incrementally from a watermark: their definitions, storage (SecuMon's
-- partitioned tables, or TimescaleDB continuous aggregates) and refresh. docs/storage.md,
-- "Rollups"; docs/timescaledb.md for the continuous aggregates.

-- ---------------------------------------------------------------------------------------------
-- Rollups: definitions and refresh state.

CREATE FUNCTION secumon._bucket(width interval, ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN date_bin(width, ts, '2000-01-01 00:00:00+00');

CREATE TABLE secumon.rollups (
    rollup_name          text PRIMARY KEY,
    source_table         text NOT NULL,
    storage_table        text NOT NULL UNIQUE,
    bucket_width         interval NOT NULL,
    partition_width      interval NOT NULL,
    refresh_lag          interval NOT NULL DEFAULT '2 minutes' CHECK (refresh_lag >= interval '0'),
    late_margin          interval NOT NULL DEFAULT '1 minute' CHECK (late_margin >= interval '0'),
    max_interval_per_run interval NOT NULL DEFAULT '1 day',
    max_runtime          interval NOT NULL DEFAULT '30 seconds' CHECK (max_runtime > interval '0'),
    counter_max_gap      interval CHECK (counter_max_gap IS NULL OR counter_max_gap > interval '0'),
    watermark            timestamptz,
    ingest_mark          timestamptz,
    CONSTRAINT rollups_run_covers_a_bucket CHECK (max_interval_per_run >= bucket_width),
    CONSTRAINT rollups_lag_covers_late_margin CHECK (refresh_lag >= late_margin)
);
COMMENT ON TABLE secumon.rollups IS 'Rollup definitions and refresh state. Every bucket before watermark is materialised; rows ingested after ingest_mark - late_margin with a time before the watermark are late and re-materialise their buckets.';
COMMENT ON COLUMN secumon.rollups.refresh_lag IS 'A bucket is materialised once it ended this long ago (reports in flight); until then the real-time views compute it from raw rows.';
COMMENT ON COLUMN secumon.rollups.late_margin IS 'How long an inserting transaction may run; keep below refresh_lag.';
COMMENT ON COLUMN secumon.rollups.counter_max_gap IS 'Counter deltas across a longer gap between two samples are not counted (unknown when the traffic happened).';
INSERT INTO secumon.rollups (rollup_name, source_table, storage_table, bucket_width, partition_width, counter_max_gap) VALUES
    ('metrics_5min', 'metric_samples', 'metric_rollup_5min', '5 minutes', '1 day', NULL),
    ('metrics_1hour', 'metrics_5min', 'metric_rollup_1hour', '1 hour', '7 days', NULL),
    ('disk_metrics_1hour', 'disk_metrics', 'disk_rollup_1hour', '1 hour', '7 days', NULL),
    ('network_metrics_1hour', 'network_metrics', 'network_rollup_1hour', '1 hour', '7 days', '15 minutes');
SELECT pg_catalog.pg_extension_config_dump('secumon.rollups', '');
CREATE TRIGGER rollups_merge_default BEFORE INSERT ON secumon.rollups
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('rollup_name');

-- Buckets below a watermark to materialise again (late or back-filled rows, or a finer rollup
-- that changed). Rollups over agent_id tables store the agent's key too.
CREATE TABLE secumon._rollup_invalidations (
    rollup_name text NOT NULL REFERENCES secumon.rollups ON DELETE CASCADE,
    agent_key   integer NOT NULL,
    bucket      timestamptz NOT NULL,
    PRIMARY KEY (rollup_name, agent_key, bucket)
);
COMMENT ON TABLE secumon._rollup_invalidations IS 'Rollup buckets waiting to be re-materialised by the next refresh.';
SELECT pg_catalog.pg_extension_config_dump('secumon._rollup_invalidations', '');

-- Materialised rollups. One summary per agent and bucket holds every series (see
-- secumon_codec::summary): a tenth of the rows and a third of the bytes of one row per series.
--
-- On the partitions backend each is a table partitioned by bucket; their primary keys are on
-- each partition (secumon._partition_indexes). On the timescaledb backend under the Timescale
-- license the three rollups a GROUP BY can express are TimescaleDB continuous aggregates
-- (docs/timescaledb.md): secumon_partitions.<table>_cagg, materialised-only (SecuMon's views
-- add the buckets after the watermark from raw rows, for every rollup alike), whose
-- materialisation hypertable is secumon_partitions.<table>, read through the view
-- secumon.<table> that filters tenants (sql/tenancy.sql, secumon._enable_agent_rls). The network
-- rollup needs each sample's predecessor (a window function, which a continuous aggregate
-- cannot hold), so it stays SecuMon's own there.

-- How each continuous-aggregate refresh worker ended (secumon_pg/src/storage/continuous.rs):
-- the function waiting for it reads and deletes its row.
CREATE UNLOGGED TABLE secumon._refresh_outcomes (
    worker_pid integer PRIMARY KEY,
    problem    text
);
COMMENT ON TABLE secumon._refresh_outcomes IS 'How each continuous-aggregate refresh worker ended, until the function that waited for it reads it.';
-- Nothing in it outlives a refresh: a dump carries none of its rows.
SELECT pg_catalog.pg_extension_config_dump('secumon._refresh_outcomes', 'WHERE false');

-- Whether rollups are continuous aggregates in this database: TimescaleDB is installed, under
-- its Timescale license, and the raw tables are on it.
CREATE FUNCTION secumon._continuous_rollups() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
RETURN secumon._timescaledb_schema() IS NOT NULL AND secumon._timescaledb_license() = 'timescale'
       AND secumon._storage_backend('metric_samples') = 'timescaledb';

-- The continuous aggregate behind rollup storage table `storage_table`, or NULL.
CREATE FUNCTION secumon._rollup_cagg(storage_table text) RETURNS regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN secumon._storage_backend(storage_table) = 'timescaledb'
            THEN to_regclass(format('secumon_partitions.%I', storage_table || '_cagg')) END;

-- Creates rollup storage table secumon.<storage_table> with `columns`: a partitioned table, or,
-- where rollups are continuous aggregates and `continuous` (the aggregate's query) is given, the
-- continuous aggregate and its materialisation hypertable (see above). While pg_restore loads a
-- TimescaleDB dump (timescaledb.restoring = on) the dump brings the continuous aggregate and
-- TimescaleDB's catalog: only the hypertable, which belongs to this extension, is made here,
-- with the columns and indexes TimescaleDB gave it.
CREATE FUNCTION secumon._create_rollup_table(storage_table text, columns text, description text, continuous text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ts name := secumon._timescaledb_schema();
    cagg text := format('secumon_partitions.%I', storage_table || '_cagg');
    mat_id integer;
    obj record;
BEGIN
    IF continuous IS NULL OR NOT secumon._continuous_rollups() THEN
        EXECUTE format('CREATE TABLE secumon.%I (%s) PARTITION BY RANGE (bucket)', storage_table, columns);
        EXECUTE format('COMMENT ON TABLE secumon.%I IS %L', storage_table, description);
        RETURN;
    END IF;
    IF coalesce(current_setting('timescaledb.restoring', true), 'off') = 'on' THEN
        -- A materialisation hypertable's columns are nullable but for the bucket.
        EXECUTE format('CREATE TABLE secumon_partitions.%I (%s)', storage_table, replace(columns, ' NOT NULL', ''));
        EXECUTE format('ALTER TABLE secumon_partitions.%I ALTER COLUMN bucket SET NOT NULL', storage_table);
        EXECUTE format('CREATE INDEX %I ON secumon_partitions.%I (bucket DESC)', storage_table || '_bucket_idx', storage_table);
    ELSE
        EXECUTE format('CREATE MATERIALIZED VIEW %s WITH (timescaledb.continuous, timescaledb.materialized_only = true, '
                       'timescaledb.create_group_indexes = false) AS %s WITH NO DATA', cagg, format(continuous, ts));
        -- Fixed names for what TimescaleDB named after its catalog ids, so that this script can
        -- make the hypertable again at restore, and a dump's views find it.
        SELECT c.mat_hypertable_id INTO mat_id FROM _timescaledb_catalog.continuous_agg c
         WHERE c.user_view_schema = 'secumon_partitions' AND c.user_view_name = storage_table || '_cagg';
        EXECUTE format('ALTER TABLE _timescaledb_internal.%I RENAME TO %I', '_materialized_hypertable_' || mat_id, storage_table);
        EXECUTE format('ALTER TABLE _timescaledb_internal.%I SET SCHEMA secumon_partitions', storage_table);
        EXECUTE format('ALTER INDEX secumon_partitions.%I RENAME TO %I', '_materialized_hypertable_' || mat_id || '_bucket_idx',
                       storage_table || '_bucket_idx');
        EXECUTE format('ALTER VIEW _timescaledb_internal.%I RENAME TO %I', '_partial_view_' || mat_id, storage_table || '_partial');
        EXECUTE format('ALTER VIEW _timescaledb_internal.%I SET SCHEMA secumon_partitions', storage_table || '_partial');
        EXECUTE format('ALTER VIEW _timescaledb_internal.%I RENAME TO %I', '_direct_view_' || mat_id, storage_table || '_direct');
        EXECUTE format('ALTER VIEW _timescaledb_internal.%I SET SCHEMA secumon_partitions', storage_table || '_direct');
        -- The views are TimescaleDB's: pg_dump dumps them, with its catalog, only if they are no
        -- members of this extension. The hypertable is: this script makes it again at restore.
        FOR obj IN SELECT format('secumon_partitions.%I', storage_table || suffix) AS view
                     FROM unnest(ARRAY['_cagg', '_partial', '_direct']) AS suffix LOOP
            IF EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = obj.view::regclass
                          AND d.deptype = 'e') THEN
                EXECUTE format('ALTER EXTENSION secumon DROP VIEW %s', obj.view);
            END IF;
        END LOOP;
        EXECUTE format('COMMENT ON VIEW %s IS %L', cagg,
                       format('TimescaleDB continuous aggregate behind secumon.%I (its materialisation hypertable: secumon_partitions.%I).',
                              storage_table, storage_table));
    END IF;
    -- Lookups by agent and bucket, as the partitions' primary keys serve on the other backend.
    EXECUTE format('CREATE INDEX %I ON secumon_partitions.%I (%s)', storage_table || '_agent_bucket', storage_table,
                   (SELECT (regexp_match(ix.ddl, 'PRIMARY KEY \((.*)\)'))[1] FROM secumon._partition_indexes(storage_table) ix));
    EXECUTE format('COMMENT ON TABLE secumon_partitions.%I IS %L', storage_table,
                   format('Materialisation hypertable of the continuous aggregate secumon_partitions.%I.', storage_table || '_cagg'));
    EXECUTE format('CREATE VIEW secumon.%I AS SELECT * FROM secumon_partitions.%I', storage_table, storage_table);
    EXECUTE format('COMMENT ON VIEW secumon.%I IS %L', storage_table, description);
END
$$;

-- The rollup storage tables, in the order they are made (the hourly continuous aggregate is
-- built on the 5-minute one): their columns, description and, where a GROUP BY can express it,
-- the query of the continuous aggregate that holds them on the timescaledb backend (%1$I: the
-- timescaledb schema). secumon.adopt_timescaledb() makes them again from here.
CREATE FUNCTION secumon._rollup_definitions()
RETURNS TABLE (ordinal integer, storage_table text, columns text, description text, continuous text)
LANGUAGE sql IMMUTABLE AS $definitions$
SELECT * FROM (VALUES
    (1, 'metric_rollup_5min', $columns$
    bucket    timestamptz NOT NULL,
    agent_key integer NOT NULL,
    summary   bytea NOT NULL
$columns$, 'Materialised 5-minute rollups (one summary per agent and bucket); read secumon.metrics_5min.', $cagg$
SELECT %1$I.time_bucket('5 minutes', s.time) AS bucket, s.agent_key, secumon._summarize(l.series_ids, s.vals) AS summary
  FROM secumon_partitions.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
 GROUP BY 1, 2
$cagg$),
    (2, 'metric_rollup_1hour', $columns$
    bucket    timestamptz NOT NULL,
    agent_key integer NOT NULL,
    summary   bytea NOT NULL
$columns$, 'Materialised hourly rollups; read secumon.metrics_1hour.', $cagg$
SELECT %1$I.time_bucket('1 hour', f.bucket) AS bucket, f.agent_key, secumon._summary_merge(f.summary) AS summary
  FROM secumon_partitions.metric_rollup_5min_cagg f
 GROUP BY 1, 2
$cagg$),
    (3, 'disk_rollup_1hour', $columns$
    bucket       timestamptz NOT NULL,
    agent_id     text NOT NULL,
    device       text NOT NULL,
    mountpoint   text NOT NULL,
    usage_sum    float8,
    usage_count  integer NOT NULL,
    usage_max    float8,
    inodes_sum   float8,
    inodes_count integer NOT NULL,
    samples      integer NOT NULL
$columns$, 'Materialised hourly disk rollups; read secumon.disk_metrics_1hour.', $cagg$
SELECT %1$I.time_bucket('1 hour', d.time) AS bucket, d.agent_id, d.device, d.mountpoint,
       sum(d.usage_percent) AS usage_sum, count(d.usage_percent)::integer AS usage_count, max(d.usage_percent) AS usage_max,
       sum(d.inodes_usage_percent) AS inodes_sum, count(d.inodes_usage_percent)::integer AS inodes_count,
       count(*)::integer AS samples
  FROM secumon_partitions.disk_metrics d
 GROUP BY 1, 2, 3, 4
$cagg$),
    (4, 'network_rollup_1hour', $columns$
    bucket       timestamptz NOT NULL,
    agent_id     text NOT NULL,
    interface    text NOT NULL,
    bytes_sent   bigint,
    bytes_recv   bigint,
    packets_sent bigint,
    packets_recv bigint,
    errors_in    bigint,
    errors_out   bigint,
    drops_in     bigint,
    drops_out    bigint,
    samples      integer NOT NULL
$columns$, 'Materialised hourly network totals; read secumon.network_metrics_1hour.', NULL)
) AS d (ordinal, storage_table, columns, description, continuous)
$definitions$;

SELECT secumon._create_rollup_table(d.storage_table, d.columns, d.description, d.continuous)
  FROM secumon._rollup_definitions() d ORDER BY d.ordinal;

-- Creates the partitions of a rollup table covering [lo, hi).
CREATE FUNCTION secumon._ensure_rollup_partitions(storage_table text, width interval, lo timestamptz, hi timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    start timestamptz;
    part text;
    made integer := 0;
BEGIN
    IF lo IS NULL OR hi IS NULL OR NOT isfinite(lo) OR NOT isfinite(hi)
       OR secumon._storage_backend(storage_table) = 'timescaledb' THEN
        RETURN 0;  -- nothing to cover, or a continuous aggregate's hypertable
    END IF;
    start := secumon._bucket(width, lo);
    WHILE start < hi LOOP
        part := format('%s_p%s', storage_table, to_char(start AT TIME ZONE 'UTC', 'YYYYMMDD'));
        IF to_regclass(format('secumon_partitions.%I', part)) IS NULL THEN
            EXECUTE format('CREATE TABLE secumon_partitions.%I PARTITION OF secumon.%I FOR VALUES FROM (%L) TO (%L)',
                           part, storage_table, start, start + width);
            PERFORM secumon._create_partition_indexes(storage_table, part);
            made := made + 1;
        END IF;
        start := start + width;
    END LOOP;
    RETURN made;
END
$$;

-- Creates rollup partitions ahead of time, from the partition_upkeep job: creating one takes
-- an exclusive lock on the rollup table, better in that short job than in a long refresh.
CREATE FUNCTION secumon._premake_rollup_partitions() RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
SELECT coalesce(sum(secumon._ensure_rollup_partitions(r.storage_table, r.partition_width,
                                                      now() - r.refresh_lag - r.bucket_width,
                                                      now() + r.partition_width)), 0)::integer
  FROM secumon.rollups r
$$;

-- Raw rows aggregated per bucket: the queries behind both the refresh and the real-time views.
-- Plain SQL functions, so the planner inlines them and pushes agent conditions inside.
CREATE FUNCTION secumon._metric_summaries_from_raw(width interval, lo timestamptz, hi timestamptz)
RETURNS TABLE (bucket timestamptz, agent_key integer, summary bytea)
LANGUAGE sql STABLE AS $$
SELECT secumon._bucket(width, s.time), s.agent_key, secumon._summarize(l.series_ids, s.vals)
  FROM secumon.metric_samples s
  JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
 WHERE s.time >= lo AND s.time < hi
 GROUP BY 1, 2
$$;

CREATE FUNCTION secumon._disk_rollup_rows(lo timestamptz, hi timestamptz)
RETURNS TABLE (bucket timestamptz, agent_id text, device text, mountpoint text, usage_sum float8, usage_count integer,
               usage_max float8, inodes_sum float8, inodes_count integer, samples integer)
LANGUAGE sql STABLE AS $$
SELECT secumon._bucket('1 hour', d.time), d.agent_id, d.device, d.mountpoint,
       sum(d.usage_percent), count(d.usage_percent)::integer, max(d.usage_percent),
       sum(d.inodes_usage_percent), count(d.inodes_usage_percent)::integer, count(*)::integer
  FROM secumon.disk_metrics d
 WHERE d.time >= lo AND d.time < hi
 GROUP BY 1, 2, 3, 4
$$;

-- Increase of a cumulative counter between two samples: the one rule every rollup, rate and
-- alert uses, for integer and float counters alike. A smaller value means the counter
-- restarted (reboot, driver reload, 32-bit wrap): everything counted since is new traffic. A
-- negative or missing value counts nothing.
CREATE FUNCTION secumon._counter_increase(cur anycompatible, prev anycompatible) RETURNS anycompatible
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN cur IS NULL OR prev IS NULL OR cur < 0 THEN NULL
            WHEN cur >= prev THEN cur - prev
            ELSE cur END
$$;

CREATE FUNCTION secumon.counter_delta(cur bigint, prev bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN secumon._counter_increase(cur, prev);
COMMENT ON FUNCTION secumon.counter_delta(bigint, bigint) IS 'Increase of a cumulative counter from prev to cur; a reset (cur < prev) counts cur.';

-- Network totals per hour from counter deltas. Each delta belongs to the bucket of its later
-- sample; samples up to max_gap before lo serve as predecessors; a longer gap counts nothing.
CREATE FUNCTION secumon._network_rollup_rows(lo timestamptz, hi timestamptz, max_gap interval)
RETURNS TABLE (bucket timestamptz, agent_id text, interface text, bytes_sent bigint, bytes_recv bigint,
               packets_sent bigint, packets_recv bigint, errors_in bigint, errors_out bigint,
               drops_in bigint, drops_out bigint, samples integer)
LANGUAGE sql STABLE AS $$
SELECT secumon._bucket('1 hour', d.time), d.agent_id, d.interface,
       sum(d.bytes_sent)::bigint, sum(d.bytes_recv)::bigint, sum(d.packets_sent)::bigint, sum(d.packets_recv)::bigint,
       sum(d.errors_in)::bigint, sum(d.errors_out)::bigint, sum(d.drops_in)::bigint, sum(d.drops_out)::bigint,
       count(*)::integer
  FROM (SELECT n.time, n.agent_id, n.interface,
               CASE WHEN n.time - lag(n.time) OVER w <= max_gap THEN secumon.counter_delta(n.bytes_sent, lag(n.bytes_sent) OVER w) END AS bytes_sent,
               CASE WHEN n.time - lag(n.time) OVER w <= max_gap THEN secumon.counter_delta(n.bytes_recv, lag(n.bytes_recv) OVER w) END AS bytes_recv,
               CASE WHEN n.time - lag(n.time) OVER w <= max_gap THEN secumon.counter_delta(n.packets_sent, lag(n.packets_sent) OVER w) END AS packets_sent,
               CASE WHEN n.time - lag(n.time) OVER w <= max_gap THEN secumon.counter_delta(n.packets_recv, lag(n.packets_recv) OVER w) END AS packets_recv,
               CASE WHEN n.time - lag(n.time) OVER w <= max_gap THEN secumon.counter_delta(n.errors_in, lag(n.errors_in) OVER w) END AS errors_in,
               CASE WHEN n.time - lag(n.time) OVER w <= max_gap THEN secumon.counter_delta(n.errors_out, lag(n.errors_out) OVER w) END AS errors_out,
               CASE WHEN n.time - lag(n.time) OVER w <= max_gap THEN secumon.counter_delta(n.drops_in, lag(n.drops_in) OVER w) END AS drops_in,
               CASE WHEN n.time - lag(n.time) OVER w <= max_gap THEN secumon.counter_delta(n.drops_out, lag(n.drops_out) OVER w) END AS drops_out
          FROM secumon.network_metrics n
         WHERE n.time >= lo - max_gap AND n.time < hi
        WINDOW w AS (PARTITION BY n.agent_id, n.interface ORDER BY n.time)) d
 WHERE d.time >= lo
 GROUP BY 1, 2, 3
$$;

-- Start of the first data at or after `after` in a rollup's source: skips empty stretches
-- (a lone row from 2001 does not make the first refresh walk 25 years bucket by bucket).
CREATE FUNCTION secumon._next_data_start(relation text, after timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    physical text := coalesce((SELECT r.storage_table FROM secumon.rollups r WHERE r.rollup_name = relation), relation);
    p record;
    has_rows boolean;
    in_default timestamptz;
BEGIN
    IF to_regclass(format('secumon_partitions.%I', physical || '_default')) IS NOT NULL THEN
        EXECUTE format('SELECT min(time) FROM secumon_partitions.%I WHERE time >= $1', physical || '_default')
           INTO in_default USING after;
    END IF;
    FOR p IN SELECT pt.partition, pt.range_start FROM secumon.partitions pt
              WHERE pt.table_name = physical AND NOT pt.is_default AND pt.range_end > after
              ORDER BY pt.range_start LOOP
        EXIT WHEN in_default IS NOT NULL AND p.range_start >= in_default;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', p.partition) INTO has_rows;
        IF has_rows THEN
            RETURN least(greatest(p.range_start, after), in_default);
        END IF;
    END LOOP;
    RETURN in_default;
END
$$;

-- Materialises rollup `r` for buckets in [lo, hi); returns the rows written.
CREATE FUNCTION secumon._materialise(r secumon.rollups, lo timestamptz, hi timestamptz) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM secumon._ensure_rollup_partitions(r.storage_table, r.partition_width, lo, hi);
    EXECUTE format('DELETE FROM secumon.%I WHERE bucket >= $1 AND bucket < $2', r.storage_table) USING lo, hi;
    CASE r.rollup_name
    WHEN 'metrics_5min' THEN
        INSERT INTO secumon.metric_rollup_5min (bucket, agent_key, summary)
        SELECT t.bucket, t.agent_key, t.summary FROM secumon._metric_summaries_from_raw(r.bucket_width, lo, hi) t;
    WHEN 'metrics_1hour' THEN
        INSERT INTO secumon.metric_rollup_1hour (bucket, agent_key, summary)
        SELECT secumon._bucket(r.bucket_width, f.bucket), f.agent_key, secumon._summary_merge(f.summary ORDER BY f.bucket)
          FROM secumon.metric_rollup_5min f
         WHERE f.bucket >= lo AND f.bucket < hi
         GROUP BY 1, 2;
    WHEN 'disk_metrics_1hour' THEN
        INSERT INTO secumon.disk_rollup_1hour SELECT * FROM secumon._disk_rollup_rows(lo, hi);
    WHEN 'network_metrics_1hour' THEN
        INSERT INTO secumon.network_rollup_1hour SELECT * FROM secumon._network_rollup_rows(lo, hi, r.counter_max_gap);
    END CASE;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Records the buckets of rows that arrived late since the last run: ingested after
-- ingest_mark - late_margin, with a time the watermark has passed. Returns how many buckets.
CREATE FUNCTION secumon._record_late_rows(r secumon.rollups) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    since timestamptz := r.ingest_mark - r.late_margin;
    n bigint := 0;
BEGIN
    IF r.watermark IS NULL OR r.ingest_mark IS NULL THEN
        RETURN 0;
    END IF;
    CASE r.source_table
    WHEN 'metric_samples' THEN
        INSERT INTO secumon._rollup_invalidations (rollup_name, agent_key, bucket)
        SELECT DISTINCT r.rollup_name, s.agent_key, secumon._bucket(r.bucket_width, s.time)
          FROM secumon.metric_samples s
         WHERE s.ingested_at >= since AND s.time < r.watermark
        ON CONFLICT DO NOTHING;
    WHEN 'disk_metrics' THEN
        INSERT INTO secumon._rollup_invalidations (rollup_name, agent_key, bucket)
        SELECT DISTINCT r.rollup_name, a.agent_key, secumon._bucket(r.bucket_width, d.time)
          FROM secumon.disk_metrics d JOIN secumon.agents a ON a.agent_id = d.agent_id
         WHERE d.ingested_at >= since AND d.time < r.watermark
        ON CONFLICT DO NOTHING;
    WHEN 'network_metrics' THEN
        -- A late sample also changes the delta of the sample after it, possibly next bucket.
        INSERT INTO secumon._rollup_invalidations (rollup_name, agent_key, bucket)
        SELECT DISTINCT r.rollup_name, a.agent_key, b.bucket
          FROM secumon.network_metrics n JOIN secumon.agents a ON a.agent_id = n.agent_id
         CROSS JOIN LATERAL (VALUES (secumon._bucket(r.bucket_width, n.time)),
                                    (secumon._bucket(r.bucket_width, n.time + r.counter_max_gap))) AS b(bucket)
         WHERE n.ingested_at >= since AND n.time < r.watermark AND b.bucket < r.watermark
        ON CONFLICT DO NOTHING;
    ELSE
        RETURN 0;  -- rollups of rollups are invalidated by the finer rollup's refresh
    END CASE;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Re-materialises the invalidated buckets below the watermark; returns how many.
CREATE FUNCTION secumon._rematerialise(r secumon.rollups) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keys integer[];
    buckets timestamptz[];
    coarser secumon.rollups%ROWTYPE;
    n bigint;
BEGIN
    WITH gone AS (
        DELETE FROM secumon._rollup_invalidations i
         WHERE i.rollup_name = r.rollup_name AND i.bucket < r.watermark
        RETURNING i.agent_key, i.bucket)
    SELECT array_agg(agent_key ORDER BY bucket), array_agg(bucket ORDER BY bucket) INTO keys, buckets FROM gone;
    n := coalesce(cardinality(keys), 0);
    IF n = 0 THEN
        RETURN 0;
    END IF;
    PERFORM secumon._ensure_rollup_partitions(r.storage_table, r.partition_width, p.lo, p.lo + r.bucket_width)
       FROM (SELECT DISTINCT secumon._bucket(r.partition_width, b) AS lo FROM unnest(buckets) AS b) p;
    CASE r.rollup_name
    WHEN 'metrics_5min' THEN
        DELETE FROM secumon.metric_rollup_5min t USING unnest(keys, buckets) AS i(agent_key, bucket)
         WHERE t.agent_key = i.agent_key AND t.bucket = i.bucket;
        INSERT INTO secumon.metric_rollup_5min (bucket, agent_key, summary)
        SELECT i.bucket, i.agent_key, x.summary
          FROM unnest(keys, buckets) AS i(agent_key, bucket)
         CROSS JOIN LATERAL (SELECT secumon._summarize(l.series_ids, s.vals) AS summary
                               FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
                              WHERE s.agent_key = i.agent_key AND s.time >= i.bucket AND s.time < i.bucket + r.bucket_width) x
         WHERE x.summary IS NOT NULL;
    WHEN 'metrics_1hour' THEN
        DELETE FROM secumon.metric_rollup_1hour t USING unnest(keys, buckets) AS i(agent_key, bucket)
         WHERE t.agent_key = i.agent_key AND t.bucket = i.bucket;
        INSERT INTO secumon.metric_rollup_1hour (bucket, agent_key, summary)
        SELECT i.bucket, i.agent_key, x.summary
          FROM unnest(keys, buckets) AS i(agent_key, bucket)
         CROSS JOIN LATERAL (SELECT secumon._summary_merge(f.summary ORDER BY f.bucket) AS summary
                               FROM secumon.metric_rollup_5min f
                              WHERE f.agent_key = i.agent_key AND f.bucket >= i.bucket AND f.bucket < i.bucket + r.bucket_width) x
         WHERE x.summary IS NOT NULL;
    WHEN 'disk_metrics_1hour' THEN
        DELETE FROM secumon.disk_rollup_1hour t USING unnest(keys, buckets) AS i(agent_key, bucket), secumon.agents a
         WHERE a.agent_key = i.agent_key AND t.agent_id = a.agent_id AND t.bucket = i.bucket;
        INSERT INTO secumon.disk_rollup_1hour
        SELECT x.* FROM unnest(keys, buckets) AS i(agent_key, bucket)
          JOIN secumon.agents a ON a.agent_key = i.agent_key
         CROSS JOIN LATERAL (SELECT * FROM secumon._disk_rollup_rows(i.bucket, i.bucket + r.bucket_width) d
                              WHERE d.agent_id = a.agent_id) x;
    WHEN 'network_metrics_1hour' THEN
        DELETE FROM secumon.network_rollup_1hour t USING unnest(keys, buckets) AS i(agent_key, bucket), secumon.agents a
         WHERE a.agent_key = i.agent_key AND t.agent_id = a.agent_id AND t.bucket = i.bucket;
        INSERT INTO secumon.network_rollup_1hour
        SELECT x.* FROM unnest(keys, buckets) AS i(agent_key, bucket)
          JOIN secumon.agents a ON a.agent_key = i.agent_key
         CROSS JOIN LATERAL (SELECT * FROM secumon._network_rollup_rows(i.bucket, i.bucket + r.bucket_width, r.counter_max_gap) d
                              WHERE d.agent_id = a.agent_id) x;
    END CASE;
    -- Rollups built from this one now hold stale buckets too.
    FOR coarser IN SELECT * FROM secumon.rollups c WHERE c.source_table = r.rollup_name LOOP
        INSERT INTO secumon._rollup_invalidations (rollup_name, agent_key, bucket)
        SELECT DISTINCT coarser.rollup_name, i.agent_key, secumon._bucket(coarser.bucket_width, i.bucket)
          FROM unnest(keys, buckets) AS i(agent_key, bucket)
         WHERE secumon._bucket(coarser.bucket_width, i.bucket) < coarser.watermark
        ON CONFLICT DO NOTHING;
    END LOOP;
    RETURN n;
END
$$;

-- One refresh of a rollup: late rows, invalidated buckets, then new buckets up to
-- now() - refresh_lag (for a rollup of a rollup: up to the finer one's watermark), in steps of
-- max_interval_per_run while max_runtime lasts. Cost follows the new and late data only.
CREATE FUNCTION secumon.refresh_rollup(rollup_name text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r secumon.rollups%ROWTYPE;
    started timestamptz := clock_timestamp();
    target timestamptz;
    finer timestamptz;
    lo timestamptz;
    hi timestamptz;
    start timestamptz;
    late bigint;
    redone bigint;
    fresh bigint := 0;
    cagg regclass;
    problem text;
BEGIN
    IF rollup_name IS NULL THEN
        RAISE EXCEPTION 'rollup_name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- One refresh of a rollup at a time (the worker and a manual run_job may overlap).
    PERFORM pg_advisory_xact_lock(hashtext('secumon.refresh_rollup'), hashtext(rollup_name));
    SELECT * INTO r FROM secumon.rollups ro WHERE ro.rollup_name = refresh_rollup.rollup_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown rollup %', quote_literal(rollup_name) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'SELECT rollup_name FROM secumon.rollups lists the rollups.';
    END IF;

    target := secumon._bucket(r.bucket_width, now() - r.refresh_lag);
    IF EXISTS (SELECT 1 FROM secumon.rollups ro WHERE ro.rollup_name = r.source_table) THEN
        SELECT ro.watermark INTO finer FROM secumon.rollups ro WHERE ro.rollup_name = r.source_table;
        target := CASE WHEN finer IS NULL THEN '-infinity' ELSE least(target, secumon._bucket(r.bucket_width, finer)) END;
    END IF;

    cagg := secumon._rollup_cagg(r.storage_table);
    IF cagg IS NOT NULL THEN
        -- TimescaleDB materialises the buckets before the target and re-materialises those its
        -- invalidation log names (rows that arrived late). It must run at the top level of a
        -- transaction of its own: a short-lived worker runs it while this waits.
        IF isfinite(target) THEN
            -- Not below the source's retention horizon: the buckets there cannot be computed
            -- again (and an adopted installation's rollups hold buckets from before it).
            problem := secumon._refresh_continuous_aggregate(cagg,
                (SELECT sp.dropped_before FROM secumon.storage_policies sp WHERE sp.table_name = r.source_table), target);
            IF problem IS NOT NULL THEN
                RAISE EXCEPTION 'refreshing continuous aggregate % failed: %', cagg, problem
                    USING ERRCODE = 'external_routine_exception';
            END IF;
        END IF;
        UPDATE secumon.rollups ro
           SET watermark = CASE WHEN isfinite(target) THEN greatest(target, ro.watermark) ELSE ro.watermark END,
               ingest_mark = now()
         WHERE ro.rollup_name = r.rollup_name;
        RETURN format('%s: continuous aggregate %s refreshed up to %s', r.rollup_name, cagg,
                      CASE WHEN isfinite(target) THEN target::text ELSE 'nothing yet' END);
    END IF;

    late := secumon._record_late_rows(r);
    redone := secumon._rematerialise(r);

    lo := coalesce(r.watermark, '-infinity');
    WHILE lo < target LOOP
        start := secumon._next_data_start(r.source_table, lo);
        IF start IS NULL OR start >= target THEN
            lo := target;  -- nothing to roll up before the target
            EXIT;
        END IF;
        lo := greatest(lo, secumon._bucket(r.bucket_width, start));
        hi := least(target, secumon._bucket(r.bucket_width, lo + r.max_interval_per_run));
        IF hi <= lo THEN
            hi := least(target, lo + r.bucket_width);
        END IF;
        fresh := fresh + secumon._materialise(r, lo, hi);
        -- Buckets just computed from the rows as they are now need no re-materialising.
        DELETE FROM secumon._rollup_invalidations i
         WHERE i.rollup_name = r.rollup_name AND i.bucket >= lo AND i.bucket < hi;
        lo := hi;
        EXIT WHEN clock_timestamp() - started > r.max_runtime;
    END LOOP;

    UPDATE secumon.rollups ro
       SET watermark = CASE WHEN isfinite(lo) THEN greatest(lo, ro.watermark) ELSE ro.watermark END,
           ingest_mark = now()
     WHERE ro.rollup_name = r.rollup_name;
    RETURN format('%s: %s bucket rows materialised up to %s, %s late buckets found, %s re-materialised',
                  r.rollup_name, fresh, CASE WHEN isfinite(lo) THEN lo::text ELSE 'nothing yet' END, late, redone);
END
$$;
COMMENT ON FUNCTION secumon.refresh_rollup(text) IS 'Refreshes one rollup now (what its job does): late rows, invalidated buckets, then new complete buckets.';
