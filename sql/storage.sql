-- Storage: the indexes every partition or hypertable of the raw tables gets, and the
-- timescaledb backend (hypertables, columnstore, adoption: docs/timescaledb.md). Daily
-- partitions and their upkeep are in sql/partitions.sql, the agent write path and INSERT into
-- the public secumon.metrics view (the view itself is in sql/series.sql) in sql/ingest.sql.

-- Bounds how long the calling transaction waits for any lock (secumon.maintenance_lock_timeout).
-- Maintenance DDL that queued behind a long reader would make every ingest queue behind it: it
-- gives way instead (SQLSTATE 55P03) and is tried again later (secumon._run_job_recorded).
-- No SET clause: that would scope the setting to this function. The body is parsed at CREATE,
-- so the caller's search_path does not matter.
CREATE FUNCTION secumon._bound_lock_wait() RETURNS text
LANGUAGE sql VOLATILE
RETURN pg_catalog.set_config('lock_timeout',
                             coalesce(NULLIF(pg_catalog.current_setting('secumon.maintenance_lock_timeout', true), ''), '100ms'),
                             true);

-- The UTC day a timestamp belongs to. Partitions are UTC days whatever the session TimeZone.
CREATE FUNCTION secumon._utc_day(ts timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (ts AT TIME ZONE 'UTC')::date;

CREATE FUNCTION secumon._day_start(day date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (day::timestamp AT TIME ZONE 'UTC');

-- The indexes of every partition of SecuMon's partitioned tables, one template per index
-- (%1$I: the index or constraint name, %2$s: the partition). They are created on each
-- partition, never on the partitioned parent: pg_dump then restores every partition with
-- exactly the indexes it dumped (an index on the extension-owned parent would be created again
-- by ATTACH PARTITION and collide with the dumped one), and a compressed day, which is a
-- foreign table, needs none. Every lookup still uses them: the planner reads each partition's
-- own indexes.
CREATE FUNCTION secumon._partition_indexes(parent text) RETURNS TABLE (suffix text, ddl text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT d.suffix, d.ddl FROM (VALUES
    -- One report per (agent, time): the idempotency key of secumon.ingest().
    ('metric_samples', 'agent_time', 'CREATE UNIQUE INDEX %1$I ON %2$s (agent_key, time)'),
    -- The alert engine reads what arrived since its last cycle by ingest time, whatever the
    -- samples' own timestamps: a few BRIN pages per partition.
    ('metric_samples', 'ingested_at', 'CREATE INDEX %1$I ON %2$s USING brin (ingested_at) WITH (pages_per_range = 32, autosummarize = on)'),
    -- Rollup refreshes read time ranges across all agents.
    ('metric_samples', 'time', 'CREATE INDEX %1$I ON %2$s USING brin (time) WITH (pages_per_range = 16)'),
    ('disk_metrics', 'agent_mount_time', 'CREATE INDEX %1$I ON %2$s (agent_id, mountpoint, time)'),
    ('disk_metrics', 'ingested_at', 'CREATE INDEX %1$I ON %2$s USING brin (ingested_at) WITH (pages_per_range = 32, autosummarize = on)'),
    ('disk_metrics', 'time', 'CREATE INDEX %1$I ON %2$s USING brin (time) WITH (pages_per_range = 16)'),
    ('network_metrics', 'agent_iface_time', 'CREATE INDEX %1$I ON %2$s (agent_id, interface, time)'),
    ('network_metrics', 'ingested_at', 'CREATE INDEX %1$I ON %2$s USING brin (ingested_at) WITH (pages_per_range = 32, autosummarize = on)'),
    ('network_metrics', 'time', 'CREATE INDEX %1$I ON %2$s USING brin (time) WITH (pages_per_range = 16)'),
    ('process_metrics', 'agent_time', 'CREATE INDEX %1$I ON %2$s (agent_id, time)'),
    ('metric_rollup_5min', 'pkey', 'ALTER TABLE %2$s ADD CONSTRAINT %1$I PRIMARY KEY (agent_key, bucket)'),
    ('metric_rollup_1hour', 'pkey', 'ALTER TABLE %2$s ADD CONSTRAINT %1$I PRIMARY KEY (agent_key, bucket)'),
    ('disk_rollup_1hour', 'pkey', 'ALTER TABLE %2$s ADD CONSTRAINT %1$I PRIMARY KEY (agent_id, mountpoint, device, bucket)'),
    ('network_rollup_1hour', 'pkey', 'ALTER TABLE %2$s ADD CONSTRAINT %1$I PRIMARY KEY (agent_id, interface, bucket)')
) AS d (parent, suffix, ddl)
WHERE d.parent = _partition_indexes.parent
$$;

-- Creates the indexes of secumon.<parent>'s partitions on secumon_partitions.<tbl>, named after
-- `partition_name` (a table built under another name and renamed later keeps fitting names).
CREATE FUNCTION secumon._create_partition_indexes(parent text, tbl text, partition_name text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ix record;
BEGIN
    FOR ix IN SELECT * FROM secumon._partition_indexes(parent) LOOP
        EXECUTE format(ix.ddl, coalesce(partition_name, tbl) || '_' || ix.suffix, format('secumon_partitions.%I', tbl));
    END LOOP;
END
$$;

-- On the partitions backend, the default partitions get theirs here and each day its own
-- (secumon._ensure_partition); on the timescaledb backend the hypertable gets them, and
-- TimescaleDB gives each chunk the same. Created whatever the restore mode: a restored
-- hypertable's new chunks take their indexes from it.
SELECT secumon._create_partition_indexes(t, CASE secumon._storage_backend(t) WHEN 'partitions' THEN t || '_default' ELSE t END)
  FROM unnest(secumon._raw_tables()) AS t;

-- The license of the TimescaleDB library this session loaded: 'timescale' (compression
-- available) or 'apache' (hypertables only); 'apache' when it cannot be told.
CREATE FUNCTION secumon._timescaledb_license() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
RETURN coalesce(current_setting('timescaledb.license', true), 'apache');

-- How TimescaleDB compresses each raw table: a segment per agent and series-identifying
-- columns, rows newest first.
CREATE FUNCTION secumon._timescaledb_segment_by(table_name text) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN (SELECT v.s FROM (VALUES ('metric_samples', 'agent_key'), ('disk_metrics', 'agent_id, mountpoint, device'),
                                ('network_metrics', 'agent_id, interface'), ('process_metrics', 'agent_id')) AS v(t, s)
         WHERE v.t = table_name);

-- Turns TimescaleDB's columnstore on for hypertable secumon_partitions.<table_name>, unless it
-- is on: at CREATE EXTENSION under the Timescale license, or at the first compression after the
-- license changed from apache.
CREATE FUNCTION secumon._enable_columnstore(table_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce((SELECT h.compression_enabled FROM timescaledb_information.hypertables h
                      WHERE h.hypertable_schema = 'secumon_partitions' AND h.hypertable_name = _enable_columnstore.table_name), false) THEN
        EXECUTE format('ALTER TABLE secumon_partitions.%I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
                       'timescaledb.compress_orderby = ''time DESC'')', table_name, secumon._timescaledb_segment_by(table_name));
    END IF;
END
$$;

-- The timescaledb backend: turns secumon_partitions.<table> into hypertables of one-day chunks
-- (set_chunk_time_interval() changes that), compressed by TimescaleDB's columnstore where the
-- license allows it. Does nothing while pg_restore restores a TimescaleDB dump
-- (timescaledb.restoring = on): the dump brings TimescaleDB's own catalog with it.
CREATE FUNCTION secumon._make_hypertables() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ts name := secumon._timescaledb_schema();
    t text;
BEGIN
    IF ts IS NULL OR coalesce(current_setting('timescaledb.restoring', true), 'off') = 'on' THEN
        RETURN;
    END IF;
    FOREACH t IN ARRAY secumon._raw_tables() LOOP
        CONTINUE WHEN secumon._storage_backend(t) <> 'timescaledb';
        EXECUTE format('SELECT %1$I.create_hypertable(%2$L::regclass, %1$I.by_range(''time'', interval ''1 day''), create_default_indexes => false)',
                       ts, format('secumon_partitions.%I', t));
        IF secumon._timescaledb_license() = 'timescale' THEN
            PERFORM secumon._enable_columnstore(t);
        END IF;
    END LOOP;
    -- What TimescaleDB created for them (the compressed hypertables) is TimescaleDB's: pg_dump
    -- dumps it with TimescaleDB's catalog only if it is no member of this extension.
    FOR t IN SELECT c.oid::regclass::text FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
                AND d.refobjid = (SELECT e.oid FROM pg_extension e WHERE e.extname = 'secumon')
                AND c.relnamespace = '_timescaledb_internal'::regnamespace LOOP
        EXECUTE format('ALTER EXTENSION secumon DROP TABLE %s', t);
    END LOOP;
END
$$;
SELECT secumon._make_hypertables();

-- Moves a database whose SecuMon was created before timescaledb onto the timescaledb backend
-- (docs/timescaledb.md#adopting-an-existing-installation): each raw table becomes a hypertable
-- holding every row it held (compressed days included), behind a view of the same name with the
-- same rights, tenant filter and dependent view (secumon.metrics). One transaction: ingest waits
-- for it (agents spool meanwhile), and on any error nothing has changed. Superuser only.
CREATE FUNCTION secumon.adopt_timescaledb() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    old text;
    chunk text;
    blockers text;
    acl record;
    metrics_view text := pg_get_viewdef('secumon.metrics'::regclass);
    -- The views that read the rollup tables: bound to the new ones when the rollups move.
    rollup_readers regclass[] := ARRAY['secumon._metric_summaries_5min', 'secumon._metric_summaries_1hour',
                                       'secumon.disk_metrics_1hour'];
    rollup record;
    reader_names text[];
    reader_defs text[];
    moved bigint;
    report text[] := '{}';
    started timestamptz := clock_timestamp();
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'only a superuser may move SecuMon''s storage to TimescaleDB' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF secumon._timescaledb_schema() IS NULL THEN
        RAISE EXCEPTION 'timescaledb is not installed in database %', current_database() USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Preload it (shared_preload_libraries = ''timescaledb,secumon''), then CREATE EXTENSION timescaledb.';
    END IF;
    IF secumon._storage_backend('metric_samples') = 'timescaledb' THEN
        RAISE EXCEPTION 'SecuMon''s storage is on TimescaleDB already' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF coalesce(current_setting('timescaledb.restoring', true), 'off') = 'on' THEN
        RAISE EXCEPTION 'TimescaleDB is restoring a dump (timescaledb.restoring is on)' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Run SELECT timescaledb_post_restore() first.';
    END IF;
    -- What depends on the tables besides SecuMon's own objects (their partitions, types,
    -- defaults, policies and secumon.metrics) would be lost with them: refuse, and name it.
    SELECT string_agg(DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid), ', ') INTO blockers
      FROM pg_depend d
     WHERE d.refclassid = 'pg_class'::regclass
       AND d.refobjid IN (SELECT format('secumon.%I', r)::regclass FROM unnest(secumon._raw_tables()) AS r
                          UNION ALL
                          SELECT format('secumon.%I', rd.storage_table)::regclass FROM secumon._rollup_definitions() rd
                           WHERE rd.continuous IS NOT NULL AND secumon._timescaledb_license() = 'timescale')
       AND d.deptype IN ('n', 'a')
       AND NOT (d.classid = 'pg_class'::regclass
                AND (SELECT c.relnamespace = 'secumon_partitions'::regnamespace FROM pg_class c WHERE c.oid = d.objid))
       AND NOT (d.classid = 'pg_type'::regclass)
       AND NOT (d.classid = 'pg_attrdef'::regclass)
       AND NOT (d.classid = 'pg_policy'::regclass
                AND (SELECT p.polname IN ('secumon_agent_tenant', 'secumon_operator') FROM pg_policy p WHERE p.oid = d.objid))
       AND NOT (d.classid = 'pg_rewrite'::regclass
                AND (SELECT r.ev_class = 'secumon.metrics'::regclass OR r.ev_class = ANY (rollup_readers)
                       FROM pg_rewrite r WHERE r.oid = d.objid));
    IF blockers IS NOT NULL THEN
        RAISE EXCEPTION 'cannot move SecuMon''s tables to TimescaleDB: other objects depend on them'
            USING ERRCODE = 'dependent_objects_still_exist', DETAIL = blockers,
                  HINT = 'Drop them, run secumon.adopt_timescaledb(), then create them again on the new relations.';
    END IF;
    -- Same order as secumon.ingest() writes the tables.
    FOREACH t IN ARRAY secumon._raw_tables() LOOP
        EXECUTE format('LOCK TABLE secumon.%I IN ACCESS EXCLUSIVE MODE', t);
    END LOOP;
    -- DROP ... CASCADE below names every partition it drops.
    PERFORM pg_catalog.set_config('client_min_messages', 'warning', true);
    FOREACH t IN ARRAY secumon._raw_tables() LOOP
        old := t || '_partitioned';
        EXECUTE format('ALTER TABLE secumon.%I RENAME TO %I', t, old);
        PERFORM secumon._create_raw_table(t, (SELECT string_agg(format('%I %s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                                                                       CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                                                                       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')),
                                                                ', ' ORDER BY a.attnum)
                                               FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                                              WHERE a.attrelid = format('secumon.%I', old)::regclass AND a.attnum > 0 AND NOT a.attisdropped),
                                          obj_description(format('secumon.%I', old)::regclass, 'pg_class'));
        PERFORM secumon._create_partition_indexes(t, t);
        EXECUTE format('ALTER EXTENSION secumon ADD TABLE secumon_partitions.%I', t);
        EXECUTE format('ALTER EXTENSION secumon ADD VIEW secumon.%I', t);
        -- The same rights on the view as the table had, columns' too, and the same comments.
        FOR acl IN SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee,
                          a.is_grantable, NULL::name AS col
                     FROM pg_class c, aclexplode(c.relacl) a
                    WHERE c.oid = format('secumon.%I', old)::regclass AND a.grantee <> c.relowner
                   UNION ALL
                   SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                          a.is_grantable, att.attname
                     FROM pg_attribute att, aclexplode(att.attacl) a
                    WHERE att.attrelid = format('secumon.%I', old)::regclass AND att.attnum > 0 AND att.attacl IS NOT NULL
                      AND a.grantee <> (SELECT c.relowner FROM pg_class c WHERE c.oid = att.attrelid) LOOP
            EXECUTE format('GRANT %s%s ON secumon.%I TO %s%s', acl.privilege_type,
                           CASE WHEN acl.col IS NULL THEN '' ELSE format(' (%I)', acl.col) END,
                           t, acl.grantee, CASE WHEN acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        FOR acl IN SELECT att.attname AS col, col_description(att.attrelid, att.attnum) AS description
                     FROM pg_attribute att
                    WHERE att.attrelid = format('secumon.%I', old)::regclass AND att.attnum > 0
                      AND col_description(att.attrelid, att.attnum) IS NOT NULL LOOP
            EXECUTE format('COMMENT ON COLUMN secumon.%I.%I IS %L', t, acl.col, acl.description);
        END LOOP;
    END LOOP;
    PERFORM secumon._make_hypertables();
    PERFORM secumon._enable_agent_rls('secumon.metric_samples', 'agent_key');
    PERFORM secumon._enable_agent_rls('secumon.disk_metrics');
    PERFORM secumon._enable_agent_rls('secumon.network_metrics');
    PERFORM secumon._enable_agent_rls('secumon.process_metrics');
    -- secumon.metrics still reads the renamed tables: its definition as it was before the
    -- renames binds it to the new view, from which it takes this backend's form.
    EXECUTE 'CREATE OR REPLACE VIEW secumon.metrics WITH (security_invoker = true) AS ' || metrics_view;
    PERFORM secumon._metrics_view_for_backend();
    FOREACH t IN ARRAY secumon._raw_tables() LOOP
        old := t || '_partitioned';
        EXECUTE format('INSERT INTO secumon_partitions.%I SELECT * FROM secumon.%I', t, old);
        GET DIAGNOSTICS moved = ROW_COUNT;
        report := report || format('%s: %s rows', t, moved);
        EXECUTE format('ALTER EXTENSION secumon DROP TABLE secumon.%I', old);
        EXECUTE format('ALTER EXTENSION secumon DROP TABLE secumon_partitions.%I', t || '_default');
        -- With its daily partitions, compressed ones too, and their chunk tables.
        EXECUTE format('DROP TABLE secumon.%I CASCADE', old);
        FOR chunk IN SELECT cp.chunk_table FROM secumon.compressed_partitions cp WHERE cp.table_name = t LOOP
            EXECUTE format('DROP TABLE IF EXISTS secumon_partitions.%I', chunk);
        END LOOP;
        DELETE FROM secumon.compressed_partitions cp WHERE cp.table_name = t;
    END LOOP;
    -- Under the Timescale license the rollups a continuous aggregate can hold become one, as on
    -- a fresh install, keeping every bucket: the materialised ones are copied into the
    -- aggregate's hypertable, and refreshes never go below the raw rows' retention horizon
    -- (secumon.refresh_rollup), so the buckets older than the raw rows stay as they are.
    IF secumon._timescaledb_license() = 'timescale' THEN
        -- The rollup readers as they are now, bound to the new tables below.
        SELECT array_agg(c.oid::regclass::text || coalesce(format(' WITH (%s)', array_to_string(c.reloptions, ', ')), '') ORDER BY c.oid),
               array_agg(pg_get_viewdef(c.oid) ORDER BY c.oid)
          INTO reader_names, reader_defs
          FROM pg_class c
         WHERE c.oid = ANY (rollup_readers);
        FOR rollup IN SELECT * FROM secumon._rollup_definitions() rd WHERE rd.continuous IS NOT NULL ORDER BY rd.ordinal LOOP
            old := rollup.storage_table || '_partitioned';
            EXECUTE format('LOCK TABLE secumon.%I IN ACCESS EXCLUSIVE MODE', rollup.storage_table);
            EXECUTE format('ALTER TABLE secumon.%I RENAME TO %I', rollup.storage_table, old);
            PERFORM secumon._create_rollup_table(rollup.storage_table, rollup.columns, rollup.description, rollup.continuous);
            EXECUTE format('ALTER EXTENSION secumon ADD TABLE secumon_partitions.%I', rollup.storage_table);
            EXECUTE format('ALTER EXTENSION secumon ADD VIEW secumon.%I', rollup.storage_table);
            PERFORM secumon._enable_agent_rls(format('secumon.%I', rollup.storage_table)::regclass,
                                              CASE WHEN rollup.columns LIKE '%agent_key%' THEN 'agent_key' ELSE 'agent_id' END);
            EXECUTE format('INSERT INTO secumon_partitions.%I SELECT * FROM secumon.%I', rollup.storage_table, old);
            GET DIAGNOSTICS moved = ROW_COUNT;
            report := report || format('%s: %s buckets', rollup.storage_table, moved);
        END LOOP;
        FOR i IN 1 .. cardinality(reader_names) LOOP
            EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', reader_names[i], reader_defs[i]);
        END LOOP;
        FOR rollup IN SELECT * FROM secumon._rollup_definitions() rd WHERE rd.continuous IS NOT NULL ORDER BY rd.ordinal DESC LOOP
            old := rollup.storage_table || '_partitioned';
            EXECUTE format('ALTER EXTENSION secumon DROP TABLE secumon.%I', old);
            EXECUTE format('DROP TABLE secumon.%I CASCADE', old);
            DELETE FROM secumon._rollup_invalidations i USING secumon.rollups r
             WHERE i.rollup_name = r.rollup_name AND r.storage_table = rollup.storage_table;
        END LOOP;
    END IF;
    EXECUTE 'ANALYZE secumon_partitions.metric_samples, secumon_partitions.disk_metrics, '
            'secumon_partitions.network_metrics, secumon_partitions.process_metrics';
    RETURN format('moved to TimescaleDB hypertables in %s: %s', date_trunc('millisecond', clock_timestamp() - started),
                  array_to_string(report, ', '));
END
$$;
COMMENT ON FUNCTION secumon.adopt_timescaledb() IS 'Moves the raw metric tables of an installation made before timescaledb onto TimescaleDB hypertables, keeping every row (docs/timescaledb.md).';
