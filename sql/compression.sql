-- Compression of old days into columnar chunks read back through a foreign-data wrapper (on
-- the timescaledb backend: TimescaleDB's columnstore). docs/storage.md, "Compression".

-- ---------------------------------------------------------------------------------------------
-- Compression: a day's heap partition becomes a foreign-table partition of the same name
-- (server secumon_compressed) over a chunk table with one columnar chunk per agent.

CREATE TABLE secumon.compressed_partitions (
    partition_name   text PRIMARY KEY,
    table_name       text NOT NULL,
    chunk_table      text NOT NULL,
    range_start      timestamptz NOT NULL,
    range_end        timestamptz NOT NULL,
    row_count        bigint NOT NULL,
    value_count      bigint NOT NULL,
    heap_bytes       bigint NOT NULL,
    compressed_bytes bigint NOT NULL,
    compressed_at    timestamptz NOT NULL DEFAULT now(),
    duration         interval
);
COMMENT ON TABLE secumon.compressed_partitions IS 'Compressed days: sizes before (heap with indexes) and after. value_count counts stored values (samples for metric_samples).';
SELECT pg_catalog.pg_extension_config_dump('secumon.compressed_partitions', '');

-- How each raw table is chunked: by agent, rows ordered so each column runs per series.
CREATE FUNCTION secumon._compression_layout(table_name text, OUT group_column text, OUT order_by text)
LANGUAGE sql IMMUTABLE AS $$
SELECT v.g, v.o FROM (VALUES
    ('metric_samples', 'agent_key', 'time'),
    ('disk_metrics', 'agent_id', 'mountpoint, device, time'),
    ('network_metrics', 'agent_id', 'interface, time'),
    ('process_metrics', 'agent_id', 'pid, name, time')) AS v(t, g, o)
WHERE v.t = table_name
$$;

-- Resolves a partition argument and checks it is a day of a raw table.
CREATE FUNCTION secumon._raw_partition(part regclass) RETURNS secumon.partitions
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p secumon.partitions;
BEGIN
    IF part IS NULL THEN
        RAISE EXCEPTION 'partition must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT pt.* INTO p FROM secumon.partitions pt WHERE pt.partition = part;
    IF NOT FOUND OR p.is_default OR (secumon._compression_layout(p.table_name)).group_column IS NULL THEN
        RAISE EXCEPTION '% is not a daily partition of metric_samples, disk_metrics, network_metrics or process_metrics', part
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'SELECT partition FROM secumon.partitions WHERE NOT is_default lists them.';
    END IF;
    RETURN p;
END
$$;

-- Compresses (or decompresses) chunk `p` of a hypertable of the timescaledb backend with
-- TimescaleDB's columnstore. Rows may still arrive for a compressed chunk: TimescaleDB takes
-- them (and secumon.ingest's duplicate check) without decompressing it.
CREATE FUNCTION secumon._compress_chunk(p secumon.partitions, compress boolean) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before bigint := p.total_bytes;
    started timestamptz := clock_timestamp();
BEGIN
    IF secumon._timescaledb_license() <> 'timescale' THEN
        RAISE EXCEPTION 'cannot % %: TimescaleDB compression needs the Timescale license', CASE WHEN compress THEN 'compress' ELSE 'decompress' END, p.partition
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('timescaledb.license is %s.', secumon._timescaledb_license()),
                  HINT = 'Set timescaledb.license = ''timescale'' in postgresql.conf, or keep the chunks uncompressed.';
    END IF;
    PERFORM secumon._bound_lock_wait();
    IF compress THEN
        PERFORM secumon._enable_columnstore(p.table_name);
    END IF;
    EXECUTE format('SELECT %I.%I(%L::regclass)', secumon._timescaledb_schema(),
                   CASE WHEN compress THEN 'compress_chunk' ELSE 'decompress_chunk' END, p.partition);
    RETURN format('%s %s: %s -> %s bytes in %s', CASE WHEN compress THEN 'compressed' ELSE 'decompressed' END, p.partition, before,
                  (SELECT pt.total_bytes FROM secumon.partitions pt WHERE pt.partition = p.partition),
                  date_trunc('millisecond', clock_timestamp() - started));
END
$$;

-- Compresses one day. Writers to that day wait (SHARE lock) while it is encoded; the swap of
-- the heap partition for the foreign one holds the parent's lock only for the DDL.
CREATE FUNCTION secumon.compress_partition(partition regclass) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p secumon.partitions := secumon._raw_partition(partition);
    layout record := secumon._compression_layout(p.table_name);
    started timestamptz := clock_timestamp();
    chunk text := p.table_name || '_c' || substr(p.partition_name, length(p.table_name) + 3);
    heap_bytes bigint;
    compressed_bytes bigint;
    n_rows bigint;
    n_values bigint;
    imin timestamptz;
    imax timestamptz;
    has_ingested boolean;
BEGIN
    IF p.compressed THEN
        RAISE EXCEPTION '% is already compressed', partition USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF p.range_end > now() THEN
        RAISE EXCEPTION 'cannot compress %: its day has not ended', partition USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Compression applies to past days; see secumon.storage_policies.compress_after.';
    END IF;
    IF secumon._storage_backend(p.table_name) = 'timescaledb' THEN
        RETURN secumon._compress_chunk(p, true);
    END IF;
    PERFORM secumon._bound_lock_wait();
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', partition);
    heap_bytes := pg_total_relation_size(partition);
    EXECUTE format('CREATE TABLE secumon_partitions.%I (
                        group_key    text PRIMARY KEY,
                        row_count    integer NOT NULL,
                        time_min     timestamptz,
                        time_max     timestamptz,
                        ingested_min timestamptz,
                        ingested_max timestamptz,
                        data         bytea NOT NULL)', chunk);
    -- Chunks are compressed already: no pglz attempt on top.
    EXECUTE format('ALTER TABLE secumon_partitions.%I ALTER COLUMN data SET STORAGE EXTERNAL', chunk);
    SELECT c[1], c[2] INTO n_rows, n_values
      FROM secumon._compress_partition_into(partition, format('secumon_partitions.%I', chunk)::regclass,
                                            layout.group_column, string_to_array(layout.order_by, ',')) AS c;
    EXECUTE format('SELECT min(ingested_min), max(ingested_max) FROM secumon_partitions.%I', chunk) INTO imin, imax;
    compressed_bytes := pg_total_relation_size(format('secumon_partitions.%I', chunk));

    EXECUTE format('LOCK TABLE secumon.%I IN ACCESS EXCLUSIVE MODE', p.table_name);
    EXECUTE format('DROP TABLE %s', partition);
    EXECUTE format('CREATE FOREIGN TABLE secumon_partitions.%I PARTITION OF secumon.%I FOR VALUES FROM (%L) TO (%L)
                    SERVER secumon_compressed OPTIONS (schema %L, chunks %L, group_column %L, rows %L)',
                   p.partition_name, p.table_name, p.range_start, p.range_end,
                   'secumon_partitions', chunk, layout.group_column, n_rows);
    IF imin IS NOT NULL THEN
        -- In PostgreSQL's microseconds since 2000, for the wrapper's early exit.
        EXECUTE format('ALTER FOREIGN TABLE secumon_partitions.%I OPTIONS (ADD ingested_min_us %L, ADD ingested_max_us %L)',
                       p.partition_name,
                       ((extract(epoch FROM imin) - 946684800) * 1000000)::bigint,
                       ((extract(epoch FROM imax) - 946684800) * 1000000)::bigint);
    END IF;
    has_ingested := EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = format('secumon.%I', p.table_name)::regclass
                                                           AND a.attname = 'ingested_at' AND NOT a.attisdropped);
    IF has_ingested AND imin IS NOT NULL THEN
        -- Lets the planner skip the whole day for "ingested since ..." queries (alert engine,
        -- late-row detection) without opening it.
        EXECUTE format('ALTER FOREIGN TABLE secumon_partitions.%I ADD CONSTRAINT %I CHECK (ingested_at BETWEEN %L AND %L)',
                       p.partition_name, p.partition_name || '_ingested', imin, imax);
    END IF;
    INSERT INTO secumon.compressed_partitions (partition_name, table_name, chunk_table, range_start, range_end,
                                               row_count, value_count, heap_bytes, compressed_bytes, duration)
    VALUES (p.partition_name, p.table_name, chunk, p.range_start, p.range_end, n_rows, coalesce(n_values, n_rows),
            heap_bytes, compressed_bytes, clock_timestamp() - started);
    RETURN format('%s: %s rows, %s -> %s (%s%% smaller)', p.partition_name, n_rows,
                  pg_size_pretty(heap_bytes), pg_size_pretty(compressed_bytes),
                  CASE WHEN heap_bytes > 0 THEN round(100 - 100.0 * compressed_bytes / heap_bytes, 1) ELSE 0 END);
END
$$;
COMMENT ON FUNCTION secumon.compress_partition(regclass) IS 'Compresses one past day of a raw metric table into columnar chunks; it stays queryable through the same table.';

-- Turns a compressed day back into a heap partition (before changing its rows). The day is
-- decoded into a new table with its indexes first, while ingest goes on; only the swap at the
-- end takes the parent's exclusive lock, for a few milliseconds.
CREATE FUNCTION secumon.decompress_partition(partition regclass) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p secumon.partitions := secumon._raw_partition(partition);
    c secumon.compressed_partitions;
    tmp text;
    n bigint;
BEGIN
    -- One decompression of a day at a time; the second caller finds it done.
    PERFORM pg_advisory_xact_lock(hashtext('secumon.decompress'), hashtext(p.partition_name));
    SELECT pt.* INTO p FROM secumon.partitions pt WHERE pt.partition_name = p.partition_name AND pt.table_name = p.table_name;
    IF NOT p.compressed THEN
        RAISE EXCEPTION '% is not compressed', partition USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF secumon._storage_backend(p.table_name) = 'timescaledb' THEN
        RETURN secumon._compress_chunk(p, false);
    END IF;
    SELECT * INTO c FROM secumon.compressed_partitions cp WHERE cp.partition_name = p.partition_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not compressed', partition USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    tmp := p.partition_name || '_restore';
    EXECUTE format('CREATE TABLE secumon_partitions.%I (LIKE secumon.%I INCLUDING DEFAULTS INCLUDING STORAGE)', tmp, p.table_name);
    EXECUTE format('INSERT INTO secumon_partitions.%I SELECT * FROM %s', tmp, partition);
    GET DIAGNOSTICS n = ROW_COUNT;
    -- Its indexes, built now rather than under the exclusive lock.
    PERFORM secumon._create_partition_indexes(p.table_name, tmp, p.partition_name);
    -- A matching CHECK constraint spares ATTACH its validation scan.
    EXECUTE format('ALTER TABLE secumon_partitions.%I ADD CONSTRAINT %I CHECK (time >= %L AND time < %L)',
                   tmp, p.partition_name || '_range', p.range_start, p.range_end);

    -- Waiting long here would queue every other writer behind this lock: give way instead (the
    -- late report's agent retries it from its spool).
    PERFORM secumon._bound_lock_wait();
    EXECUTE format('LOCK TABLE secumon.%I IN ACCESS EXCLUSIVE MODE', p.table_name);
    EXECUTE format('DROP FOREIGN TABLE %s', partition);
    EXECUTE format('DROP TABLE secumon_partitions.%I', c.chunk_table);
    EXECUTE format('ALTER TABLE secumon_partitions.%I RENAME TO %I', tmp, p.partition_name);
    EXECUTE format('ALTER TABLE secumon.%I ATTACH PARTITION secumon_partitions.%I FOR VALUES FROM (%L) TO (%L)',
                   p.table_name, p.partition_name, p.range_start, p.range_end);
    EXECUTE format('ALTER TABLE secumon_partitions.%I DROP CONSTRAINT %I', p.partition_name, p.partition_name || '_range');
    DELETE FROM secumon.compressed_partitions cp WHERE cp.partition_name = p.partition_name;
    RETURN format('%s: %s rows restored', p.partition_name, n);
END
$$;

COMMENT ON FUNCTION secumon.decompress_partition(regclass) IS 'Turns a compressed day back into an ordinary partition; the compression job compresses it again later.';

-- Called by the write paths before storing a row for a past day.
CREATE FUNCTION secumon._decompress_for_insert(ts timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT cp.partition_name FROM secumon.compressed_partitions cp
              WHERE cp.range_start <= ts AND cp.range_end > ts ORDER BY cp.table_name LOOP
        PERFORM secumon.decompress_partition(format('secumon_partitions.%I', c.partition_name)::regclass);
    END LOOP;
END
$$;

-- The compression job of one table: the oldest heap day older than compress_after. One day
-- per run, because the swap's lock on the parent table lasts until the job commits.
CREATE FUNCTION secumon._compress_due(table_name text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    after interval;
    p record;
    done integer := 0;
    last text;
BEGIN
    SELECT sp.compress_after INTO after FROM secumon.storage_policies sp WHERE sp.table_name = _compress_due.table_name;
    IF after IS NULL THEN
        RETURN format('%s: compression disabled (storage_policies.compress_after is NULL)', table_name);
    END IF;
    IF secumon._storage_backend(table_name) = 'timescaledb' AND secumon._timescaledb_license() <> 'timescale' THEN
        RETURN format('%s: not compressed: compression needs the Timescale license (timescaledb.license is %s)',
                      table_name, secumon._timescaledb_license());
    END IF;
    -- A day's partition per run on the partitions backend (see above); TimescaleDB compresses a
    -- chunk without locking the hypertable, so every chunk due, each in a subtransaction: a chunk
    -- that a reader keeps locked ends the run with what is done (the next run goes on), unless it
    -- is the first, when the job gives way (55P03) as on the partitions backend.
    FOR p IN SELECT pt.partition FROM secumon.partitions pt
              WHERE pt.table_name = _compress_due.table_name AND NOT pt.is_default AND NOT pt.compressed
                AND pt.range_end <= now() - after
              ORDER BY pt.range_start
              LIMIT CASE secumon._storage_backend(_compress_due.table_name) WHEN 'partitions' THEN 1 END LOOP
        BEGIN
            last := secumon.compress_partition(p.partition);
            done := done + 1;
        EXCEPTION WHEN lock_not_available THEN
            IF done = 0 THEN
                RAISE;
            END IF;
            EXIT;
        END;
    END LOOP;
    RETURN format('%s: %s days compressed%s', table_name, done, coalesce(' (last ' || last || ')', ''));
END
$$;

