-- Daily partitions of the raw tables on the partitions backend: making them, draining the
-- default partitions into them, and secumon.partitions, which lists them (or the chunks of the
-- timescaledb backend). docs/storage.md, "Relations".

-- Creates the daily partition of secumon.<table_name> holding `day`, unless it exists.
-- Callers hold the default partition's lock (see _partition_upkeep), so no row for that day can
-- be sitting in the default partition when the partition is created.
CREATE FUNCTION secumon._ensure_partition(table_name text, day date) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part text := format('%s_p%s', table_name, to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(format('secumon_partitions.%I', part)) IS NOT NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('CREATE TABLE secumon_partitions.%I PARTITION OF secumon.%I FOR VALUES FROM (%L) TO (%L)',
                   part, table_name, secumon._day_start(day), secumon._day_start(day + 1));
    PERFORM secumon._create_partition_indexes(table_name, part);
    RETURN 1;
END
$$;

-- Partition upkeep for one table: create partitions from yesterday to premake_days ahead, and
-- move rows out of the default partition into daily partitions (creating those as needed).
-- Returns (partitions created, rows moved).
--
-- Only rows inside the accepted sample window (secumon._sample_window(), a day of margin each
-- side) are moved: a row for the year 294276 has no day whose end PostgreSQL can represent, and
-- one for 4713 BC would get a partition nobody wants. Each day is handled in a subtransaction,
-- so a day that cannot be placed leaves its rows in the default partition, is logged, and the
-- other days go on; only lock waits and cancellation stop the whole job.
CREATE FUNCTION secumon._partition_upkeep_table(table_name text, premake_days integer,
                                                OUT created integer, OUT moved bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    default_part regclass := format('secumon_partitions.%I', table_name || '_default')::regclass;
    today date := secumon._utc_day(now());
    window_start timestamptz;
    window_end timestamptz;
    missing boolean;
    has_rows boolean;
    day date;
    expired_before timestamptz;
    day_rows bigint;
    err text;
    err_state text;
BEGIN
    created := 0;
    moved := 0;
    SELECT w.oldest - interval '1 day', w.newest + interval '1 day' INTO window_start, window_end
      FROM secumon._sample_window() AS w;
    SELECT EXISTS (
        SELECT 1 FROM generate_series(today - 1, today + premake_days, interval '1 day') AS d
        WHERE to_regclass(format('secumon_partitions.%I', table_name || '_p' || to_char(d, 'YYYYMMDD'))) IS NULL
    ) INTO missing;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE time >= $1 AND time < $2)', default_part)
       INTO has_rows USING window_start, window_end;
    IF NOT missing AND NOT has_rows THEN
        RETURN;
    END IF;

    -- Creating a partition locks the parent anyway; taking that lock first (it covers the
    -- default partition too) keeps lock order fixed, so concurrent writers wait instead of
    -- deadlocking. This path runs only when a partition is missing or the default has rows.
    PERFORM secumon._bound_lock_wait();
    EXECUTE format('LOCK TABLE secumon.%I IN ACCESS EXCLUSIVE MODE', table_name);
    EXECUTE format('CREATE TEMP TABLE _secumon_moved (LIKE secumon.%I) ON COMMIT DROP', table_name);
    -- Rows older than what retention already dropped are expired on arrival: keeping them would
    -- re-create a dropped day (and let a rollup refresh overwrite good buckets with a fraction).
    SELECT sp.dropped_before INTO expired_before FROM secumon.storage_policies sp WHERE sp.table_name = _partition_upkeep_table.table_name;

    FOR day IN EXECUTE format(
        'SELECT d::date FROM generate_series($1, $2, interval ''1 day'') AS d
         UNION
         SELECT DISTINCT secumon._utc_day(m.time) FROM %s AS m WHERE m.time >= $3 AND m.time < $4
         ORDER BY 1', default_part)
        USING today - 1, today + premake_days, window_start, window_end
    LOOP
        day_rows := 0;
        BEGIN
            -- A partition can only be created once no row of its day is in the default partition.
            EXECUTE format('WITH gone AS (DELETE FROM %s WHERE time >= $1 AND time < $2 RETURNING *) '
                           'INSERT INTO _secumon_moved SELECT * FROM gone', default_part)
               USING secumon._day_start(day), secumon._day_start(day + 1);
            GET DIAGNOSTICS day_rows = ROW_COUNT;
            IF expired_before IS NOT NULL AND secumon._day_start(day + 1) <= expired_before AND day < today - 1 THEN
                IF day_rows > 0 THEN
                    RAISE LOG 'secumon: % rows of % older than the retention horizon % discarded', day_rows, table_name, expired_before;
                END IF;
            ELSE
                created := created + secumon._ensure_partition(table_name, day);
                IF day_rows > 0 THEN
                    EXECUTE format('INSERT INTO secumon.%I SELECT * FROM _secumon_moved', table_name);
                    moved := moved + day_rows;
                END IF;
            END IF;
            DELETE FROM _secumon_moved;
        EXCEPTION
        WHEN lock_not_available OR deadlock_detected OR query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            -- The subtransaction is undone: the day's rows are back in the default partition.
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT, err_state = RETURNED_SQLSTATE;
            RAISE WARNING 'secumon: rows of % for % stay in its default partition: % (SQLSTATE %)', table_name, day, err, err_state
                USING HINT = 'The other days were moved. Look at them with SELECT * FROM secumon_partitions.'
                             || quote_ident(table_name || '_default') || ' and delete or fix them.';
        END;
    END LOOP;
    EXECUTE 'DROP TABLE _secumon_moved';
END
$$;

CREATE FUNCTION secumon._partition_upkeep() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p record;
    r record;
    created integer := 0;
    moved bigint := 0;
    window_start timestamptz;
    window_end timestamptz;
    outside bigint;
    left_outside bigint := 0;
BEGIN
    -- Same order as secumon.ingest() writes the tables, so lock waits can never form a cycle.
    FOR p IN SELECT sp.table_name, sp.premake_days FROM secumon.storage_policies sp
              WHERE sp.kind = 'raw' AND secumon._storage_backend(sp.table_name) = 'partitions'
              ORDER BY array_position(secumon._raw_tables(),
                                      sp.table_name) NULLS LAST, sp.table_name LOOP
        r := secumon._partition_upkeep_table(p.table_name, p.premake_days);
        created := created + r.created;
        moved := moved + r.moved;
    END LOOP;
    -- Rollup tables (sql/rollups.sql) get theirs here too, in this short transaction.
    created := created + secumon._premake_rollup_partitions();
    -- Rows outside the accepted window (written before 0.2.0, or by a superuser who widened it
    -- for a session) stay where they are; say so rather than stop.
    SELECT w.oldest - interval '1 day', w.newest + interval '1 day' INTO window_start, window_end
      FROM secumon._sample_window() AS w;
    FOR p IN SELECT sp.table_name FROM secumon.storage_policies sp WHERE sp.kind = 'raw' LOOP
        IF to_regclass(format('secumon_partitions.%I', p.table_name || '_default')) IS NOT NULL THEN
            EXECUTE format('SELECT count(*) FROM secumon_partitions.%I WHERE NOT (time >= $1 AND time < $2)',
                           p.table_name || '_default')
               INTO outside USING window_start, window_end;
            left_outside := left_outside + outside;
        END IF;
    END LOOP;
    RETURN format('%s partitions created, %s rows moved out of default partitions', created, moved)
           || CASE WHEN left_outside > 0
                   THEN format('; %s rows outside the accepted time window left in default partitions', left_outside)
                   ELSE '' END;
END
$$;

-- The chunks of the hypertables of the timescaledb backend, as rows of secumon.partitions.
-- A chunk that took rows after its compression (status bit 8, "partial") counts as not
-- compressed, so that the compression job compresses it again. SECURITY DEFINER: sizes, as
-- the plain view shows them for partitions.
CREATE FUNCTION secumon._hypertable_chunks()
RETURNS TABLE (table_name text, partition_name text, range_start timestamptz, range_end timestamptz, is_default boolean,
               rows_estimate bigint, total_bytes bigint, compressed boolean, partition regclass)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ts name := secumon._timescaledb_schema();
BEGIN
    IF ts IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(secumon._raw_tables()) AS t
                                  WHERE secumon._storage_backend(t) = 'timescaledb') THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH sizes AS (
            -- Once per hypertable: it sizes every chunk, compressed data included.
            SELECT sz.chunk_schema, sz.chunk_name, sz.total_bytes
              FROM timescaledb_information.hypertables h,
                   LATERAL %I.chunks_detailed_size(format('%%I.%%I', h.hypertable_schema, h.hypertable_name)::regclass) sz
             WHERE h.hypertable_schema = 'secumon_partitions')
        SELECT c.hypertable_name::text, c.chunk_name::text, c.range_start, c.range_end, false,
               CASE WHEN c.is_compressed THEN coalesce(cs.numrows_pre_compression, 0)
                    ELSE greatest(pc.reltuples, 0)::bigint END,
               sz.total_bytes, c.is_compressed AND ch.status & 8 = 0, pc.oid::regclass
          FROM timescaledb_information.chunks c
          JOIN pg_class pc ON pc.relname = c.chunk_name AND pc.relnamespace = c.chunk_schema::regnamespace
          LEFT JOIN _timescaledb_catalog.chunk ch ON ch.schema_name = c.chunk_schema AND ch.table_name = c.chunk_name
          LEFT JOIN _timescaledb_catalog.compression_chunk_size cs ON cs.chunk_id = ch.id
          LEFT JOIN sizes sz ON sz.chunk_schema = c.chunk_schema AND sz.chunk_name = c.chunk_name
         WHERE c.hypertable_schema = 'secumon_partitions'$q$, ts);
END
$$;

CREATE VIEW secumon.partitions AS
SELECT parent.relname::text                                   AS table_name,
       child.relname::text                                    AS partition_name,
       CASE WHEN pg_get_expr(child.relpartbound, child.oid) = 'DEFAULT' THEN NULL
            ELSE (regexp_match(pg_get_expr(child.relpartbound, child.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz
       END                                                    AS range_start,
       CASE WHEN pg_get_expr(child.relpartbound, child.oid) = 'DEFAULT' THEN NULL
            ELSE (regexp_match(pg_get_expr(child.relpartbound, child.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
       END                                                    AS range_end,
       pg_get_expr(child.relpartbound, child.oid) = 'DEFAULT' AS is_default,
       greatest(child.reltuples, 0)::bigint                   AS rows_estimate,
       pg_total_relation_size(child.oid)                      AS total_bytes,
       child.relkind = 'f'                                    AS compressed,
       child.oid::regclass                                    AS partition
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class parent ON parent.oid = i.inhparent
JOIN pg_catalog.pg_class child ON child.oid = i.inhrelid
JOIN pg_catalog.pg_namespace pn ON pn.oid = parent.relnamespace
WHERE pn.nspname = 'secumon' AND parent.relkind = 'p' AND child.relkind IN ('r', 'p', 'f')
UNION ALL
SELECT * FROM secumon._hypertable_chunks();
COMMENT ON VIEW secumon.partitions IS 'Every partition of SecuMon''s metric and rollup tables with its time range (on the timescaledb backend, the chunks of its hypertables); compressed days are foreign tables (see secumon.compressed_partitions for their sizes) or compressed chunks.';
