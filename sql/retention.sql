-- Retention by dropping whole partitions (or chunks), never before the rollups have seen
-- them. docs/storage.md, "Retention".

-- ---------------------------------------------------------------------------------------------
-- Retention: whole partitions go once they are older than the relation's retention, and never
-- while a rollup still needs them (data not yet rolled up, or late rows not yet processed).

-- Physical table of a relation named in storage_policies.
CREATE FUNCTION secumon._storage_table(relation text) RETURNS text
LANGUAGE sql STABLE
RETURN coalesce((SELECT r.storage_table FROM secumon.rollups r WHERE r.rollup_name = relation), relation);

-- Why partition `p` of `relation` must stay for a rollup built from it, or NULL.
CREATE FUNCTION secumon._retention_blocker(relation text, p secumon.partitions) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r secumon.rollups%ROWTYPE;
    pending boolean;
BEGIN
    FOR r IN SELECT * FROM secumon.rollups ro WHERE ro.source_table = relation LOOP
        IF r.watermark IS NULL OR r.watermark < p.range_end THEN
            RETURN format('%s has not rolled it up yet (watermark %s)', r.rollup_name, coalesce(r.watermark::text, 'none'));
        END IF;
        IF EXISTS (SELECT 1 FROM secumon._rollup_invalidations i
                    WHERE i.rollup_name = r.rollup_name AND i.bucket >= p.range_start AND i.bucket < p.range_end) THEN
            RETURN format('%s has buckets of it to re-materialise', r.rollup_name);
        END IF;
        IF r.source_table IN ('metric_samples', 'disk_metrics', 'network_metrics') THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE ingested_at >= $1)', p.partition)
               INTO pending USING coalesce(r.ingest_mark - r.late_margin, '-infinity');
            IF pending THEN
                RETURN format('%s has not seen its late rows yet', r.rollup_name);
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION secumon.apply_retention(relation text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    policy secumon.storage_policies%ROWTYPE;
    physical text;
    p secumon.partitions;
    blocker text;
    dropped integer := 0;
    kept text[] := '{}';
BEGIN
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO policy FROM secumon.storage_policies sp WHERE sp.table_name = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no storage policy for %', quote_literal(relation) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'SELECT table_name FROM secumon.storage_policies lists the relations with a retention.';
    END IF;
    physical := secumon._storage_table(relation);
    PERFORM secumon._bound_lock_wait();
    FOR p IN SELECT * FROM secumon.partitions pt
              WHERE pt.table_name = physical AND NOT pt.is_default AND pt.range_end <= now() - policy.retention
              ORDER BY pt.range_start LOOP
        blocker := secumon._retention_blocker(relation, p);
        IF blocker IS NOT NULL THEN
            kept := kept || format('%s (%s)', p.partition_name, blocker);
            -- Later days cannot be dropped before this one: the horizon must stay contiguous.
            EXIT;
        END IF;
        IF secumon._storage_backend(physical) = 'timescaledb' THEN
            -- Exactly this chunk; TimescaleDB drops its compressed data with it. A continuous
            -- aggregate's chunks are dropped through the aggregate.
            EXECUTE format('SELECT %1$I.drop_chunks(%2$L::regclass, older_than => %3$L::timestamptz, newer_than => %4$L::timestamptz)',
                           secumon._timescaledb_schema(),
                           coalesce(secumon._rollup_cagg(physical)::text, format('secumon_partitions.%I', physical)),
                           p.range_end, p.range_start);
        ELSIF p.compressed THEN
            EXECUTE format('DROP FOREIGN TABLE secumon_partitions.%I', p.partition_name);
            EXECUTE format('DROP TABLE IF EXISTS secumon_partitions.%I',
                           (SELECT cp.chunk_table FROM secumon.compressed_partitions cp WHERE cp.partition_name = p.partition_name));
            DELETE FROM secumon.compressed_partitions cp WHERE cp.partition_name = p.partition_name;
        ELSE
            EXECUTE format('DROP TABLE secumon_partitions.%I', p.partition_name);
        END IF;
        UPDATE secumon.storage_policies sp SET dropped_before = greatest(sp.dropped_before, p.range_end)
         WHERE sp.table_name = relation;
        dropped := dropped + 1;
    END LOOP;
    RETURN format('%s: %s partitions older than %s dropped%s', relation, dropped, policy.retention,
                  CASE WHEN cardinality(kept) > 0 THEN '; kept ' || array_to_string(kept, ', ') ELSE '' END);
END
$$;
COMMENT ON FUNCTION secumon.apply_retention(text) IS 'Drops the partitions of a relation older than its retention (storage_policies), except those a rollup still needs.';


-- Moves every retention job to `hour` o'clock (in `time_zone`), daily; the seed used 4 AM.
CREATE FUNCTION secumon.set_retention_hour(hour integer, time_zone text DEFAULT 'UTC') RETURNS SETOF secumon.jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    origin timestamptz;
BEGIN
    IF hour IS NULL OR time_zone IS NULL THEN
        RAISE EXCEPTION 'hour and time_zone must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF hour NOT BETWEEN 0 AND 23 THEN
        RAISE EXCEPTION 'hour must be between 0 and 23, got %', hour USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = time_zone) AND NOT EXISTS (SELECT 1 FROM pg_timezone_abbrevs WHERE abbrev = time_zone) THEN
        RAISE EXCEPTION 'unknown time zone %', quote_literal(time_zone) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use a name from pg_timezone_names, e.g. Europe/Berlin.';
    END IF;
    origin := (make_timestamp(2000, 1, 1, hour, 0, 0) AT TIME ZONE time_zone);
    UPDATE secumon._jobs j
       SET schedule_origin = origin, schedule_interval = interval '1 day',
           next_run = secumon._bucket(interval '1 day', now() - (origin - timestamptz '2000-01-01 00:00:00+00'))
                      + (origin - timestamptz '2000-01-01 00:00:00+00') + interval '1 day'
     WHERE j.job_name LIKE 'retention\_%';
    RETURN QUERY SELECT * FROM secumon.jobs WHERE jobs.job_name LIKE 'retention\_%';
END
$$;
COMMENT ON FUNCTION secumon.set_retention_hour(integer, text) IS 'Runs every retention job daily at this hour (0-23) of the time zone.';
