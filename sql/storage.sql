-- Storage: daily partitions, the default-partition drain, the agent write path and INSERT into
-- the public secumon.metrics view (the view itself is in sql/lifecycle.sql).

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
                AND (SELECT r.ev_class = ANY (ARRAY['secumon.metrics', 'secumon._metric_summaries_5min', 'secumon._metric_summaries_1hour',
                                                    'secumon.disk_metrics_1hour']::regclass[])
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
        -- The views that read the rollup tables, as they are now: bound to the new ones below.
        SELECT array_agg(c.oid::regclass::text || coalesce(format(' WITH (%s)', array_to_string(c.reloptions, ', ')), '') ORDER BY c.oid),
               array_agg(pg_get_viewdef(c.oid) ORDER BY c.oid)
          INTO reader_names, reader_defs
          FROM pg_class c
         WHERE c.oid = ANY (ARRAY['secumon._metric_summaries_5min', 'secumon._metric_summaries_1hour',
                                  'secumon.disk_metrics_1hour']::regclass[]);
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
    -- Rollup tables (sql/lifecycle.sql) get theirs here too, in this short transaction.
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

-- Raises 42501 unless the session may write for an agent owned by `owner`. An agent without
-- an owner (a row an operator inserted) is written by operators only: no agent role of any
-- tenant may claim it by registering first.
CREATE FUNCTION secumon._check_agent_owner(agent_id text, owner name) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF owner = session_user
       OR pg_has_role(session_user, 'secumon_admin', 'MEMBER')
       OR (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
        RETURN;
    END IF;
    IF owner IS NULL THEN
        RAISE EXCEPTION 'agent "%" has no owner role, so role "%" may not write for it', agent_id, session_user
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The agent was created without secumon.agents.owner_role (e.g. by an operator''s INSERT); ownership is never taken by registering first.',
                  HINT = format('A secumon_admin names the agent''s role: UPDATE secumon.agents SET owner_role = %L WHERE agent_id = %L;',
                                session_user, agent_id);
    END IF;
    RAISE EXCEPTION 'role "%" may not write metrics for agent "%"', session_user, agent_id
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('Agent "%s" is owned by role "%s".', agent_id, owner),
              HINT = 'Give each host its own agent_id, or let a secumon_admin change secumon.agents.owner_role.';
END
$$;

CREATE FUNCTION secumon._check_agent_id(agent_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF agent_id IS NULL OR agent_id !~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' THEN
        RAISE EXCEPTION 'invalid agent_id %', coalesce(quote_literal(agent_id), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An agent_id is 1 to 128 characters: letters, digits, ".", "_", ":" or "-", starting with a letter or digit.';
    END IF;
END
$$;

-- Ingestion's limits, checked before anything is written (or any id taken).
-- A report carries at most this many series.
CREATE FUNCTION secumon._max_series_per_report() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 10000;

-- Whether `ts` is a finite time from `oldest` to `newest` (a row of secumon._sample_window()).
-- Plain SQL without SET, so that secumon.ingest's test of every report is inlined.
CREATE FUNCTION secumon._in_sample_window(ts timestamptz, oldest timestamptz, newest timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.isfinite(ts) AND ts >= oldest AND ts <= newest;

-- Raises 22008 unless `ts` lies in the accepted window around now (secumon._sample_window():
-- secumon.ingest_window_past before, secumon.ingest_window_future after). A clock set to the
-- year 294276 or to 4713 BC would otherwise break or litter partition upkeep for everyone.
CREATE FUNCTION secumon._check_sample_time(ts timestamptz) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w record;
BEGIN
    SELECT * INTO w FROM secumon._sample_window();
    IF secumon._in_sample_window(ts, w.oldest, w.newest) THEN
        RETURN;
    END IF;
    IF ts IS NULL OR isfinite(ts) IS NOT TRUE THEN
        RAISE EXCEPTION 'report time must be a finite timestamp, got %', coalesce(ts::text, 'NULL')
            USING ERRCODE = 'invalid_datetime_format';
    END IF;
    RAISE EXCEPTION 'report time % is outside the accepted window from % to %', ts, w.oldest, w.newest
        USING ERRCODE = 'datetime_field_overflow',
              DETAIL = 'Sample times may be at most secumon.ingest_window_past before and secumon.ingest_window_future after the server''s time.',
              HINT = 'Check the clock of the reporting host (NTP). For a back-fill of older data, a superuser widens secumon.ingest_window_past in postgresql.conf.';
END
$$;

-- Registers (or refreshes) an agent. The first role to register an agent_id owns it; an agent
-- an operator created without owner_role is not claimed (secumon._check_agent_owner).
CREATE FUNCTION secumon.register_agent(agent_id text, hostname text, os text DEFAULT NULL,
                                       agent_version text DEFAULT NULL, labels jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    existing record;
BEGIN
    PERFORM secumon._check_agent_id(agent_id);
    IF labels IS NOT NULL AND jsonb_typeof(labels) <> 'object' THEN
        RAISE EXCEPTION 'labels must be a JSON object, not %', jsonb_typeof(labels)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"env": "prod", "dc": "fra1"}.';
    END IF;
    PERFORM secumon._check_jsonb(labels, 'labels', secumon._max_labels_bytes());
    SELECT a.agent_key, a.owner_role INTO existing FROM secumon.agents a WHERE a.agent_id = register_agent.agent_id FOR UPDATE;
    IF FOUND THEN
        PERFORM secumon._check_agent_owner(agent_id, existing.owner_role);
        UPDATE secumon.agents a
           SET hostname = coalesce(register_agent.hostname, a.hostname),
               os = coalesce(register_agent.os, a.os),
               agent_version = coalesce(register_agent.agent_version, a.agent_version),
               labels = coalesce(register_agent.labels, a.labels),
               last_seen = greatest(a.last_seen, now())
         WHERE a.agent_key = existing.agent_key;
    ELSE
        -- A role made by enrolling an agent (sql/enroll.sql) writes for that agent only: another
        -- agent_id would land outside the tenant the enrollment put it in.
        IF EXISTS (SELECT FROM secumon.enrollments x WHERE x.role_name = session_user) THEN
            RAISE EXCEPTION 'role "%" was made by enrolling one agent and may register no other', session_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Enroll each host with its own agent_id and enrollment token (docs/enrollment.md).';
        END IF;
        INSERT INTO secumon.agents AS a (agent_id, hostname, os, agent_version, labels, owner_role, last_seen)
        VALUES (agent_id, hostname, os, agent_version, coalesce(labels, '{}'), session_user, now())
        ON CONFLICT ON CONSTRAINT agents_agent_id_key DO NOTHING;
        IF NOT FOUND THEN  -- registered concurrently: retry as an update
            PERFORM secumon.register_agent(agent_id, hostname, os, agent_version, labels);
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION secumon.register_agent(text, text, text, text, jsonb) IS 'Registers or refreshes an agent; the first role to register an agent_id owns it (an agent created without owner_role is written by operators only).';

-- ---------------------------------------------------------------------------------------------
-- Series names. Host series are "<type>.<name>" with type cpu, memory, disk, network or system.
-- Custom series (type custom: scrapes, commands, anything an application sends) and probe
-- series (type probe) carry a Prometheus-style name and labels, written in one canonical form:
--     custom.app_queue_depth{queue="mail"}
-- labels sorted by name (byte order), each once, values escaped as Prometheus does (\\ \" \n),
-- no empty value. The canonical form is the series' identity: one spelling, one series.
-- Reference: docs/custom-series.md.

-- The label part of a series name ("" without labels): the inverse of _parse_series's labels.
CREATE FUNCTION secumon._label_string(labels jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce((SELECT '{' || pg_catalog.string_agg(e.key || '="'
                                 || pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(e.value, '\', '\\'), '"', '\"'), E'\n', '\n')
                                 || '"', ',' ORDER BY e.key COLLATE "C") || '}'
                   FROM pg_catalog.jsonb_each_text(labels) AS e
                  WHERE e.value <> ''), '');

-- The canonical name of a series.
CREATE FUNCTION secumon._series_key(metric_type text, metric_name text, labels jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN metric_type || '.' || metric_name || secumon._label_string(coalesce(labels, '{}'));

-- A label value with Prometheus's escapes (\\ \" \n) undone; any other escape is kept as the
-- character it escapes, which the canonical-form test then refuses.
CREATE FUNCTION secumon._unescape_label(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT coalesce(pg_catalog.string_agg(CASE WHEN t[1] IS NULL THEN t[2] WHEN t[1] = 'n' THEN E'\n' ELSE t[1] END, '' ORDER BY o), '')
          FROM pg_catalog.regexp_matches(value, '\\(.)|([^\\]+)', 'g') WITH ORDINALITY AS x(t, o));

-- The parts of a series name, or (problem) why it is not one. Labels may come in any order
-- here; secumon._series_problem also requires the canonical form.
CREATE FUNCTION secumon._parse_series(series text, OUT metric_type text, OUT metric_name text, OUT labels jsonb,
                                      OUT problem text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m text[];
    pair text[];
    rebuilt text := '';
    n integer := 0;
BEGIN
    labels := '{}';
    IF series IS NULL THEN
        problem := 'invalid series name NULL';
        RETURN;
    END IF;
    IF octet_length(series) > 4096 THEN
        problem := format('series name %s... is longer than 4096 bytes', quote_literal(left(series, 100)));
        RETURN;
    END IF;
    IF series ~ '^(cpu|memory|disk|network|system)\.[a-z][a-z0-9_]{0,62}$' THEN
        metric_type := split_part(series, '.', 1);
        metric_name := substr(series, strpos(series, '.') + 1);
        RETURN;
    END IF;
    m := regexp_match(series, '^(custom|probe)\.([a-zA-Z_:][a-zA-Z0-9_:.]{0,199})(\{(.*)\})?$');
    IF m IS NULL THEN
        problem := format('invalid series name %s', quote_literal(left(series, 300)));
        RETURN;
    END IF;
    metric_type := m[1];
    metric_name := m[2];
    IF m[3] IS NULL THEN
        RETURN;
    END IF;
    FOR pair IN SELECT x.t FROM regexp_matches(m[4], '([a-zA-Z_][a-zA-Z0-9_]{0,99})="((?:[^"\\]|\\.)*)"', 'g') AS x(t) LOOP
        IF pair[1] LIKE '\_\_%' THEN
            problem := format('label name %s of series %s is reserved (names starting with "__")', pair[1], quote_literal(left(series, 300)));
            RETURN;
        END IF;
        IF labels ? pair[1] THEN
            problem := format('label %s repeats in series %s', pair[1], quote_literal(left(series, 300)));
            RETURN;
        END IF;
        labels := labels || jsonb_build_object(pair[1], secumon._unescape_label(pair[2]));
        rebuilt := rebuilt || CASE WHEN n > 0 THEN ',' ELSE '' END || pair[1] || '="' || pair[2] || '"';
        n := n + 1;
    END LOOP;
    IF n = 0 OR rebuilt <> m[4] THEN
        problem := format('invalid labels in series %s', quote_literal(left(series, 300)));
    ELSIF n > 32 THEN
        problem := format('series %s has %s labels, at most 32 are allowed', quote_literal(left(series, 300)), n);
    ELSIF EXISTS (SELECT FROM jsonb_each_text(labels) e WHERE octet_length(e.value) > 1024) THEN
        problem := format('a label value of series %s is longer than 1024 bytes', quote_literal(left(series, 300)));
    END IF;
END
$$;

-- Why `series` cannot be stored (NULL: it can): _parse_series's problem, or not the
-- canonical form.
CREATE FUNCTION secumon._series_problem(series text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p record;
BEGIN
    SELECT * INTO p FROM secumon._parse_series(series);
    IF p.problem IS NOT NULL THEN
        RETURN p.problem;
    END IF;
    IF secumon._series_key(p.metric_type, p.metric_name, p.labels) <> series THEN
        RETURN format('series %s is not in canonical form; write it %s', quote_literal(left(series, 300)),
                      quote_literal(left(secumon._series_key(p.metric_type, p.metric_name, p.labels), 300)));
    END IF;
    RETURN NULL;
END
$$;

-- Raises 54000 when a report's series are more than a report may carry (count, bytes).
CREATE FUNCTION secumon._check_report_series(series text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF cardinality(series) > secumon._max_series_per_report() THEN
        RAISE EXCEPTION 'a report may carry at most % series, this one has %', secumon._max_series_per_report(), cardinality(series)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Send fewer series per report; per-filesystem and per-interface values go in disks and networks.';
    END IF;
    IF octet_length(array_to_string(series, ',')) > 1048576 THEN
        RAISE EXCEPTION 'the series names of a report may take at most 1 MiB, these take %', pg_size_pretty(octet_length(array_to_string(series, ','))::bigint)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Drop labels with long values, or send fewer series per report.';
    END IF;
END
$$;

-- Raises 54000 when agent `agent_key` would store more than secumon.max_series_per_agent
-- distinct series with the series of a layout it has not used before. Runs only then: once per
-- new (agent, layout) pair.
CREATE FUNCTION secumon._check_series_cap(agent_key integer, agent_id text, series text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cap integer := secumon._max_series_per_agent();
    n bigint;
BEGIN
    IF cardinality(series) <= 0 THEN
        RETURN;
    END IF;
    PERFORM secumon._check_report_series(series);
    IF (SELECT count(*) FROM secumon._agent_layouts u WHERE u.agent_key = _check_series_cap.agent_key) >= 1000 THEN
        RAISE EXCEPTION 'agent "%" has stored reports with 1000 different sets of series, the most one agent may', agent_id
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Each new combination of series is kept as a layout; send a steady set of series (the agent does), or register the host under a new agent_id.';
    END IF;
    SELECT count(*) INTO n
      FROM (SELECT unnest(l.series) FROM secumon._agent_layouts u JOIN secumon.metric_layouts l ON l.layout_id = u.layout_id
             WHERE u.agent_key = _check_series_cap.agent_key
            UNION
            SELECT unnest(_check_series_cap.series)) x;
    IF n > cap THEN
        RAISE EXCEPTION 'agent "%" would store % distinct series, more than secumon.max_series_per_agent (%)', agent_id, n, cap
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = 'The report was refused whole; the agent sends its earlier series again without the new ones.',
                  HINT = 'Drop labels that take unbounded values (ids, timestamps, paths), or have a superuser raise secumon.max_series_per_agent.';
    END IF;
END
$$;

-- Returns the layout id of an ordered list of series names, creating it on first use.
-- Everything is checked before the layout and its series are inserted: a refused report must
-- not use up ids (metric_series_series_id_seq, metric_layouts_layout_id_seq) that every tenant
-- shares. Layouts are unique by a digest of their series (secumon._layout_key), so a layout
-- of any size fits its index.
CREATE FUNCTION secumon._layout_id(series text[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    -- (ON CONFLICT's index expression names the column series; the parameter is _layout_id.series.)
    id integer;
    bad text;
BEGIN
    SELECT l.layout_id INTO id FROM secumon.metric_layouts l
     WHERE secumon._layout_key(l.series) = secumon._layout_key(_layout_id.series) AND l.series = _layout_id.series;
    IF FOUND THEN
        RETURN id;
    END IF;
    PERFORM secumon._check_report_series(_layout_id.series);
    SELECT p INTO bad FROM unnest(_layout_id.series) AS s CROSS JOIN LATERAL secumon._series_problem(s) AS p
     WHERE p IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A series is "<type>.<name>" with type cpu, memory, disk, network or system and a lower-case name, e.g. cpu.usage_percent; or custom / probe with a Prometheus-style name and sorted labels, e.g. custom.app_queue_depth{queue="mail"} (docs/custom-series.md).';
    END IF;
    IF (SELECT count(DISTINCT s) FROM unnest(_layout_id.series) AS s) <> cardinality(_layout_id.series) THEN
        RAISE EXCEPTION 'series names repeat within one report' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO secumon.metric_layouts (series, metric_types, metric_names)
    SELECT _layout_id.series, array_agg(split_part(s, '.', 1) ORDER BY o), array_agg(substr(s, strpos(s, '.') + 1) ORDER BY o)
      FROM unnest(_layout_id.series) WITH ORDINALITY AS u(s, o)
    ON CONFLICT ((secumon._layout_key(series))) DO NOTHING
    RETURNING layout_id INTO id;
    IF id IS NULL THEN  -- made concurrently
        SELECT l.layout_id INTO id FROM secumon.metric_layouts l
         WHERE secumon._layout_key(l.series) = secumon._layout_key(_layout_id.series) AND l.series = _layout_id.series;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the series layout of this report collides with another one' USING ERRCODE = 'unique_violation',
                HINT = 'Change the order or the names of the series.';
        END IF;
    END IF;
    RETURN id;
END
$$;

-- Records that agent `agent_key` stored samples with layout `layout_id` (sql/lifecycle.sql:
-- a tenant sees the layouts and series its agents use). Written only when new, so the
-- invalidation its trigger sends is rare.
CREATE FUNCTION secumon._note_agent_layout(agent_key integer, layout_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM secumon._agent_layouts u
                    WHERE u.agent_key = _note_agent_layout.agent_key AND u.layout_id = _note_agent_layout.layout_id) THEN
        INSERT INTO secumon._agent_layouts (agent_key, layout_id) VALUES (agent_key, layout_id) ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- The agent write path: one call per report, one transaction. Idempotent per (agent, time):
-- returns false, storing nothing, when that report is already stored.
--
-- Every report of every agent comes through here, so the usual path calls no other PL/pgSQL
-- function: each check first runs the helper's own test, inlined (_in_sample_window,
-- _jsonb_within) or as a lookup, and only a report that fails it goes to the helper
-- (_check_sample_time, _check_jsonb, _layout_id, _note_agent_layout), which raises the error;
-- errors, their SQLSTATEs and their order are those of the helpers. Each nested call cost a
-- function entry, a search_path switch and its statements' executor starts, in every
-- transaction: about 15% of a report's server time
-- (bench/ingest shows where the rest goes: mostly the rows and their indexes). Merging the
-- lookups into one query saved nothing: PL/pgSQL then planned the join anew for each call.
CREATE FUNCTION secumon.ingest(agent_id text, "time" timestamptz, series text[], vals float8[],
                               disks jsonb DEFAULT NULL, networks jsonb DEFAULT NULL,
                               processes jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
    w record;
    layout integer;
    stored integer;
    new_pair boolean;
BEGIN
    SELECT sw.oldest, sw.newest INTO w FROM secumon._sample_window() AS sw;
    IF secumon._in_sample_window("time", w.oldest, w.newest) IS NOT TRUE THEN
        PERFORM secumon._check_sample_time("time");
    END IF;
    IF series IS NULL OR vals IS NULL OR cardinality(series) <> cardinality(vals) THEN
        RAISE EXCEPTION 'series and vals must be arrays of the same length (got % and %)',
                        coalesce(cardinality(series)::text, 'NULL'), coalesce(cardinality(vals)::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_ndims(vals) > 1 OR array_ndims(series) > 1 THEN
        RAISE EXCEPTION 'series and vals must be one-dimensional arrays' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF vals && '{NaN,Infinity,-Infinity}'::float8[] THEN  -- PostgreSQL's NaN equals NaN
        RAISE EXCEPTION 'metric values must be finite numbers (NaN or infinity given)'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Send NULL for a value that is unknown.';
    END IF;
    IF disks IS NOT NULL AND jsonb_typeof(disks) <> 'array'
       OR networks IS NOT NULL AND jsonb_typeof(networks) <> 'array'
       OR processes IS NOT NULL AND jsonb_typeof(processes) <> 'array' THEN
        RAISE EXCEPTION 'disks, networks and processes must be JSON arrays of objects'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (secumon._jsonb_within(disks, secumon._max_report_array_bytes())
            AND secumon._jsonb_within(networks, secumon._max_report_array_bytes())
            AND secumon._jsonb_within(processes, secumon._max_report_array_bytes())) THEN
        PERFORM secumon._check_jsonb(disks, 'disks', secumon._max_report_array_bytes()),
                secumon._check_jsonb(networks, 'networks', secumon._max_report_array_bytes()),
                secumon._check_jsonb(processes, 'processes', secumon._max_report_array_bytes());
    END IF;

    SELECT ag.agent_key, ag.owner_role INTO a FROM secumon.agents ag WHERE ag.agent_id = ingest.agent_id;
    IF NOT FOUND THEN
        PERFORM secumon._check_agent_id(agent_id);  -- a registered agent_id is well-formed already
        RAISE EXCEPTION 'agent "%" is not registered', agent_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'Call secumon.register_agent() first.';
    END IF;
    IF a.owner_role IS DISTINCT FROM session_user THEN
        PERFORM secumon._check_agent_owner(agent_id, a.owner_role);
    END IF;
    -- A report for a day before today may belong to a compressed day: decompress it first
    -- (sql/lifecycle.sql). Today's reports skip the lookup.
    IF ingest."time" < secumon._day_start(secumon._utc_day(now())) THEN
        PERFORM secumon._decompress_for_insert(ingest."time");
    END IF;

    -- The layout's own lookup (secumon._layout_id), with secumon._layout_key's digest written
    -- out: called in a query, that SQL function is planned anew in every transaction. Should
    -- the two ever differ, the lookup misses and _layout_id finds the layout all the same.
    SELECT l.layout_id INTO layout FROM secumon.metric_layouts l
     WHERE secumon._layout_key(l.series) = sha256(convert_to(array_to_string(ingest.series, ','), 'UTF8'))
       AND l.series = ingest.series;
    -- A layout new to the agent (or new altogether) passes its series cap first: a refused report
    -- takes no layout id.
    new_pair := layout IS NULL
                OR NOT EXISTS (SELECT FROM secumon._agent_layouts u WHERE u.agent_key = a.agent_key AND u.layout_id = layout);
    IF new_pair THEN
        PERFORM secumon._check_series_cap(a.agent_key, agent_id, ingest.series);
    END IF;
    IF layout IS NULL THEN
        layout := secumon._layout_id(ingest.series);  -- checks the names, creates the layout
    END IF;
    INSERT INTO secumon.metric_samples (time, agent_key, layout_id, vals)
    VALUES (ingest."time", a.agent_key, layout, ingest.vals)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS stored = ROW_COUNT;
    IF stored = 0 THEN
        RETURN false;
    END IF;
    IF new_pair THEN
        PERFORM secumon._note_agent_layout(a.agent_key, layout);
    END IF;

    IF disks IS NOT NULL THEN
        INSERT INTO secumon.disk_metrics (time, agent_id, device, mountpoint, fs_type, total_bytes, used_bytes, free_bytes,
                                          usage_percent, inodes_total, inodes_used, inodes_usage_percent,
                                          read_bytes, write_bytes, read_ops, write_ops)
        SELECT ingest."time", ingest.agent_id, d.device, d.mountpoint, d.fs_type, d.total_bytes, d.used_bytes, d.free_bytes,
               d.usage_percent, d.inodes_total, d.inodes_used, d.inodes_usage_percent,
               d.read_bytes, d.write_bytes, d.read_ops, d.write_ops
          FROM jsonb_populate_recordset(NULL::secumon.disk_metrics, disks) AS d;
    END IF;
    IF networks IS NOT NULL THEN
        INSERT INTO secumon.network_metrics (time, agent_id, interface, bytes_sent, bytes_recv, packets_sent, packets_recv,
                                             errors_in, errors_out, drops_in, drops_out)
        SELECT ingest."time", ingest.agent_id, n.interface, n.bytes_sent, n.bytes_recv, n.packets_sent, n.packets_recv,
               n.errors_in, n.errors_out, n.drops_in, n.drops_out
          FROM jsonb_populate_recordset(NULL::secumon.network_metrics, networks) AS n;
    END IF;
    IF processes IS NOT NULL THEN
        INSERT INTO secumon.process_metrics (time, agent_id, pid, name, command, "user", cpu_percent, memory_bytes,
                                             memory_percent, status)
        SELECT ingest."time", ingest.agent_id, p.pid, p.name, p.command, p."user", p.cpu_percent, p.memory_bytes,
               p.memory_percent, p.status
          FROM jsonb_populate_recordset(NULL::secumon.process_metrics, processes) AS p;
    END IF;

    UPDATE secumon.agents ag SET last_seen = ingest."time"
     WHERE ag.agent_key = a.agent_key AND (ag.last_seen IS NULL OR ag.last_seen < ingest."time");
    RETURN true;
END
$$;
COMMENT ON FUNCTION secumon.ingest(text, timestamptz, text[], float8[], jsonb, jsonb, jsonb) IS 'Stores one agent report (see docs/ingest-protocol.md); false when it was already stored.';

-- The series agent `agent_id` has stored so far: after the database refused a report over its
-- series (secumon.max_series_per_agent), the agent sends it again with only these, so the
-- series it had keep arriving, also after a restart. Same ownership rule as ingest.
CREATE FUNCTION secumon.agent_series(agent_id text) RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
BEGIN
    PERFORM secumon._check_agent_id(agent_id);
    SELECT ag.agent_key, ag.owner_role INTO a FROM secumon.agents ag WHERE ag.agent_id = agent_series.agent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'agent "%" is not registered', agent_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'Call secumon.register_agent() first.';
    END IF;
    PERFORM secumon._check_agent_owner(agent_id, a.owner_role);
    RETURN QUERY SELECT DISTINCT s
                   FROM secumon._agent_layouts u
                   JOIN secumon.metric_layouts l ON l.layout_id = u.layout_id
                  CROSS JOIN LATERAL unnest(l.series) AS s
                  WHERE u.agent_key = a.agent_key;
END
$$;
COMMENT ON FUNCTION secumon.agent_series(text) IS 'Series names an agent has stored; its agent role calls it after a report was refused over new series.';

-- INSERT INTO secumon.metrics (the view of sql/lifecycle.sql): merges the sample into the agent's report row of that instant.
-- Meant for back-fills, imports and tests; agents use secumon.ingest(), which is much faster.
CREATE FUNCTION secumon._metrics_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
    row_now record;
    series_name text;
    pos integer;
    layout integer;
BEGIN
    IF NEW.time IS NULL OR NEW.agent_id IS NULL OR NEW.metric_type IS NULL OR NEW.metric_name IS NULL THEN
        RAISE EXCEPTION 'time, agent_id, metric_type and metric_name must not be NULL'
            USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.value IS NULL OR NEW.value IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN
        RAISE EXCEPTION 'value must be a finite number' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.labels IS NOT NULL AND (jsonb_typeof(NEW.labels) <> 'object'
                                   OR EXISTS (SELECT FROM jsonb_each(NEW.labels) e WHERE jsonb_typeof(e.value) <> 'string')) THEN
        RAISE EXCEPTION 'labels must be a JSON object of strings' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'For example {"queue": "mail"}; host series (cpu, memory, system) have none.';
    END IF;
    series_name := secumon._series_key(NEW.metric_type, NEW.metric_name, NEW.labels);
    PERFORM secumon._check_sample_time(NEW.time);
    PERFORM secumon._check_agent_id(NEW.agent_id);
    SELECT ag.agent_key, ag.owner_role INTO a FROM secumon.agents ag WHERE ag.agent_id = NEW.agent_id;
    IF NOT FOUND THEN
        PERFORM secumon.register_agent(NEW.agent_id, NULL);
        -- Back-filled data for a new agent says when it was seen, not the import.
        UPDATE secumon.agents ag SET last_seen = NEW.time WHERE ag.agent_id = NEW.agent_id
        RETURNING ag.agent_key, ag.owner_role INTO a;
    END IF;
    PERFORM secumon._check_agent_owner(NEW.agent_id, a.owner_role);
    IF NEW.time < secumon._day_start(secumon._utc_day(now())) THEN
        PERFORM secumon._decompress_for_insert(NEW.time);
    END IF;

    SELECT s.layout_id, s.vals, l.series INTO row_now
      FROM secumon.metric_samples s JOIN secumon.metric_layouts l USING (layout_id)
     WHERE s.agent_key = a.agent_key AND s.time = NEW.time
       FOR UPDATE OF s;
    IF NOT FOUND THEN
        PERFORM secumon._check_series_cap(a.agent_key, NEW.agent_id, ARRAY[series_name]);
        layout := secumon._layout_id(ARRAY[series_name]);
        INSERT INTO secumon.metric_samples (time, agent_key, layout_id, vals)
        VALUES (NEW.time, a.agent_key, layout, ARRAY[NEW.value]);
        PERFORM secumon._note_agent_layout(a.agent_key, layout);
    ELSE
        pos := array_position(row_now.series, series_name);
        IF pos IS NOT NULL THEN
            row_now.vals[pos] := NEW.value;
            UPDATE secumon.metric_samples SET vals = row_now.vals, ingested_at = now()
             WHERE agent_key = a.agent_key AND time = NEW.time;
        ELSE
            PERFORM secumon._check_series_cap(a.agent_key, NEW.agent_id, row_now.series || series_name);
            layout := secumon._layout_id(row_now.series || series_name);
            UPDATE secumon.metric_samples
               SET layout_id = layout, vals = row_now.vals || NEW.value, ingested_at = now()
             WHERE agent_key = a.agent_key AND time = NEW.time;
            PERFORM secumon._note_agent_layout(a.agent_key, layout);
        END IF;
    END IF;
    UPDATE secumon.agents SET last_seen = NEW.time
     WHERE agent_key = a.agent_key AND (last_seen IS NULL OR last_seen < NEW.time);
    RETURN NEW;
END
$$;

-- The view and this trigger on it are created in sql/lifecycle.sql, after the series dictionary
-- the view reads.
