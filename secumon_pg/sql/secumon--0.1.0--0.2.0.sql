-- SecuMon 0.1.0 -> 0.2.0. Run by ALTER EXTENSION secumon UPDATE; keep in step with sql/*.sql:
-- tests/tests/upgrade.rs requires an upgraded installation to equal a fresh one.
--
-- Indexes of partitioned tables move from the parents to each partition (dump/restore), which
-- rebuilds them: the update takes an exclusive lock on the metric tables for about as long as
-- building their indexes takes (seconds for a month of 100 hosts). Run it in a quiet moment.

\echo Use "ALTER EXTENSION secumon UPDATE" to load this file. \quit

-- ---- Dump and restore: defaults that survive, removed defaults that stay removed ----------
CREATE FUNCTION secumon._merge_default_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    columns text;
    matches text;
    merged integer;
BEGIN
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO columns
      FROM pg_attribute a WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT string_agg(format('t.%1$I = ($1).%1$I', k), ' AND ') INTO matches FROM unnest(TG_ARGV) AS k;
    EXECUTE format('UPDATE %s AS t SET (%s) = (SELECT ($1).*) WHERE %s', TG_RELID::regclass, columns, matches) USING NEW;
    GET DIAGNOSTICS merged = ROW_COUNT;
    RETURN CASE WHEN merged > 0 THEN NULL ELSE NEW END;
END
$$;
CREATE TABLE secumon._removed_defaults (
    table_name regclass NOT NULL,
    row_key    jsonb NOT NULL,
    removed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, row_key)
);
COMMENT ON TABLE secumon._removed_defaults IS 'Default rows (e.g. default alert rules) that were deleted; re-applied when a dump is restored.';
SELECT pg_catalog.pg_extension_config_dump('secumon._removed_defaults', '');
CREATE FUNCTION secumon._remember_removed_default() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO secumon._removed_defaults (table_name, row_key)
    SELECT TG_RELID, jsonb_object_agg(k, to_jsonb(OLD) -> k) FROM unnest(TG_ARGV) AS k
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE FUNCTION secumon._apply_removed_default() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DELETE FROM %s AS t WHERE to_jsonb(t) @> $1', NEW.table_name) USING NEW.row_key;
    RETURN NULL;
END
$$;
CREATE TRIGGER removed_defaults_apply AFTER INSERT ON secumon._removed_defaults
    FOR EACH ROW EXECUTE FUNCTION secumon._apply_removed_default();
REVOKE ALL ON FUNCTION secumon._merge_default_row(), secumon._remember_removed_default(), secumon._apply_removed_default() FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('secumon.tenants', '');
CREATE TRIGGER tenants_merge_default BEFORE INSERT ON secumon.tenants
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('tenant_id');
SELECT pg_catalog.pg_extension_config_dump('secumon.storage_policies', '');
CREATE TRIGGER storage_policies_merge_default BEFORE INSERT ON secumon.storage_policies
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('table_name');
SELECT pg_catalog.pg_extension_config_dump('secumon._jobs', '');
CREATE TRIGGER jobs_merge_default BEFORE INSERT ON secumon._jobs
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('job_name');
SELECT pg_catalog.pg_extension_config_dump('secumon.rollups', '');
CREATE TRIGGER rollups_merge_default BEFORE INSERT ON secumon.rollups
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('rollup_name');
SELECT pg_catalog.pg_extension_config_dump('secumon.metric_catalog', '');
CREATE TRIGGER metric_catalog_merge_default BEFORE INSERT ON secumon.metric_catalog
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('metric_type', 'metric_name');
SELECT pg_catalog.pg_extension_config_dump('secumon._alert_engine_state', '');
CREATE TRIGGER alert_engine_state_merge_default BEFORE INSERT ON secumon._alert_engine_state
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('singleton');
SELECT pg_catalog.pg_extension_config_dump('secumon._alert_rule_errors', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.alert_rules', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.alert_events_id_seq', '');

-- The default rules get their fixed ids (0.1.0 gave them random ones): the oldest rule of each
-- default name in the default tenant is the one CREATE EXTENSION made.
CREATE FUNCTION secumon._is_default_rule(id uuid) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN id BETWEEN '00000000-5ec0-4000-8000-000000000000' AND '00000000-5ec0-4000-8000-0000ffffffff';
REVOKE ALL ON FUNCTION secumon._is_default_rule(uuid) FROM PUBLIC;
ALTER TABLE secumon.alerts DROP CONSTRAINT alerts_rule_id_fkey,
    ADD CONSTRAINT alerts_rule_id_fkey FOREIGN KEY (rule_id) REFERENCES secumon.alert_rules ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE secumon.silences DROP CONSTRAINT silences_rule_id_fkey,
    ADD CONSTRAINT silences_rule_id_fkey FOREIGN KEY (rule_id) REFERENCES secumon.alert_rules ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE secumon._alert_rule_errors DROP CONSTRAINT _alert_rule_errors_rule_id_fkey,
    ADD CONSTRAINT _alert_rule_errors_rule_id_fkey FOREIGN KEY (rule_id) REFERENCES secumon.alert_rules ON DELETE CASCADE ON UPDATE CASCADE;
WITH defaults (id, name) AS (VALUES
        ('00000000-5ec0-4000-8000-000000000001'::uuid, 'High CPU Usage'),
        ('00000000-5ec0-4000-8000-000000000002'::uuid, 'High Memory Usage'),
        ('00000000-5ec0-4000-8000-000000000003'::uuid, 'High Disk Usage'),
        ('00000000-5ec0-4000-8000-000000000004'::uuid, 'High Load Average')),
     seeded AS (SELECT DISTINCT ON (r.name) r.id AS old_id, d.id AS new_id
                  FROM secumon.alert_rules r JOIN defaults d ON d.name = r.name
                 WHERE r.tenant_id = 'default'
                 ORDER BY r.name, r.created_at, r.id),
     rules AS (UPDATE secumon.alert_rules r SET id = s.new_id FROM seeded s WHERE r.id = s.old_id
               RETURNING s.old_id, s.new_id),
     events AS (UPDATE secumon.alert_events e SET rule_id = m.new_id FROM rules m WHERE e.rule_id = m.old_id),
     outbox AS (UPDATE secumon.notification_outbox o SET rule_id = m.new_id FROM rules m WHERE o.rule_id = m.old_id),
     channels AS (UPDATE secumon.notification_channels c
                     SET rule_ids = ARRAY(SELECT coalesce(m.new_id, u.id) FROM unnest(c.rule_ids) WITH ORDINALITY AS u (id, n)
                                          LEFT JOIN rules m ON m.old_id = u.id ORDER BY u.n)
                   WHERE c.rule_ids && ARRAY(SELECT m.old_id FROM rules m))
SELECT count(*) FROM rules;
CREATE TRIGGER alert_rules_merge_default BEFORE INSERT ON secumon.alert_rules
    FOR EACH ROW WHEN (secumon._is_default_rule(NEW.id)) EXECUTE FUNCTION secumon._merge_default_row('id');
CREATE TRIGGER alert_rules_remember_removed_default AFTER DELETE ON secumon.alert_rules
    FOR EACH ROW WHEN (secumon._is_default_rule(OLD.id)) EXECUTE FUNCTION secumon._remember_removed_default('id');

-- ---- Indexes of partitioned tables: on each partition, not on the parents ---------------------
CREATE FUNCTION secumon._bound_lock_wait() RETURNS text
LANGUAGE sql VOLATILE
RETURN pg_catalog.set_config('lock_timeout',
                             coalesce(NULLIF(pg_catalog.current_setting('secumon.maintenance_lock_timeout', true), ''), '100ms'),
                             true);
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
DROP FUNCTION secumon._create_partition_indexes(text, text, text);
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
REVOKE ALL ON FUNCTION secumon._bound_lock_wait(), secumon._partition_indexes(text),
                       secumon._create_partition_indexes(text, text, text) FROM PUBLIC;

DROP INDEX secumon.metric_samples_ingested_at, secumon.metric_samples_time,
           secumon.disk_metrics_ingested_at, secumon.disk_metrics_agent_mount_time, secumon.disk_metrics_time,
           secumon.network_metrics_ingested_at, secumon.network_metrics_agent_iface_time, secumon.network_metrics_time,
           secumon.process_metrics_agent_time;
ALTER TABLE secumon.metric_rollup_5min DROP CONSTRAINT metric_rollup_5min_pkey;
ALTER TABLE secumon.metric_rollup_1hour DROP CONSTRAINT metric_rollup_1hour_pkey;
ALTER TABLE secumon.disk_rollup_1hour DROP CONSTRAINT disk_rollup_1hour_pkey;
ALTER TABLE secumon.network_rollup_1hour DROP CONSTRAINT network_rollup_1hour_pkey;
-- metric_samples' partitions had their own unique (agent_key, time) index already; it keeps
-- its name, the other indexes are built anew.
DO $indexes$
DECLARE
    p record;
    ix record;
BEGIN
    FOR p IN SELECT parent.relname AS parent, child.relname AS child
               FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class parent ON parent.oid = i.inhparent
               JOIN pg_catalog.pg_class child ON child.oid = i.inhrelid
              WHERE parent.relnamespace = 'secumon'::regnamespace AND child.relkind = 'r' LOOP
        FOR ix IN SELECT * FROM secumon._partition_indexes(p.parent) LOOP
            IF to_regclass(format('secumon_partitions.%I', p.child || '_' || ix.suffix)) IS NULL THEN
                EXECUTE format(ix.ddl, p.child || '_' || ix.suffix, format('secumon_partitions.%I', p.child));
            END IF;
        END LOOP;
    END LOOP;
END
$indexes$;

CREATE OR REPLACE FUNCTION secumon._ensure_partition(table_name text, day date) RETURNS integer
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
CREATE OR REPLACE FUNCTION secumon._partition_upkeep_table(table_name text, premake_days integer,
                                                OUT created integer, OUT moved bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    default_part regclass := format('secumon_partitions.%I', table_name || '_default')::regclass;
    today date := secumon._utc_day(now());
    missing boolean;
    has_rows boolean;
    day date;
    expired_before timestamptz;
    expired bigint;
BEGIN
    created := 0;
    moved := 0;
    SELECT EXISTS (
        SELECT 1 FROM generate_series(today - 1, today + premake_days, interval '1 day') AS d
        WHERE to_regclass(format('secumon_partitions.%I', table_name || '_p' || to_char(d, 'YYYYMMDD'))) IS NULL
    ) INTO missing;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', default_part) INTO has_rows;
    IF NOT missing AND NOT has_rows THEN
        RETURN;
    END IF;

    -- Creating a partition locks the parent anyway; taking that lock first (it covers the
    -- default partition too) keeps lock order fixed, so concurrent writers wait instead of
    -- deadlocking. This path runs only when a partition is missing or the default has rows.
    PERFORM secumon._bound_lock_wait();
    EXECUTE format('LOCK TABLE secumon.%I IN ACCESS EXCLUSIVE MODE', table_name);
    EXECUTE format('CREATE TEMP TABLE _secumon_moved (LIKE secumon.%I) ON COMMIT DROP', table_name);
    EXECUTE format('WITH gone AS (DELETE FROM %s RETURNING *) INSERT INTO _secumon_moved SELECT * FROM gone',
                   default_part);
    GET DIAGNOSTICS moved = ROW_COUNT;
    -- Rows older than what retention already dropped are expired on arrival: keeping them would
    -- re-create a dropped day (and let a rollup refresh overwrite good buckets with a fraction).
    SELECT sp.dropped_before INTO expired_before FROM secumon.storage_policies sp WHERE sp.table_name = _partition_upkeep_table.table_name;
    IF expired_before IS NOT NULL THEN
        DELETE FROM _secumon_moved m WHERE m.time < expired_before;
        GET DIAGNOSTICS expired = ROW_COUNT;
        IF expired > 0 THEN
            RAISE LOG 'secumon: % rows of % older than the retention horizon % discarded', expired, table_name, expired_before;
        END IF;
    END IF;

    FOR day IN EXECUTE
        'SELECT d::date FROM generate_series($1, $2, interval ''1 day'') AS d
         UNION
         SELECT DISTINCT secumon._utc_day(m.time) FROM _secumon_moved AS m'
        USING today - 1, today + premake_days
    LOOP
        created := created + secumon._ensure_partition(table_name, day);
    END LOOP;

    IF moved > 0 THEN
        EXECUTE format('INSERT INTO secumon.%I SELECT * FROM _secumon_moved', table_name);
    END IF;
    EXECUTE 'DROP TABLE _secumon_moved';
END
$$;
CREATE OR REPLACE FUNCTION secumon._ensure_rollup_partitions(storage_table text, width interval, lo timestamptz, hi timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    start timestamptz;
    part text;
    made integer := 0;
BEGIN
    IF lo IS NULL OR hi IS NULL OR NOT isfinite(lo) OR NOT isfinite(hi) THEN
        RETURN 0;
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
CREATE OR REPLACE FUNCTION secumon.compress_partition(partition regclass) RETURNS text
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
      FROM secumon._compress_partition(partition::text, format('secumon_partitions.%I', chunk),
                                       layout.group_column, layout.order_by) AS c;
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
CREATE OR REPLACE FUNCTION secumon.decompress_partition(partition regclass) RETURNS text
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
    SELECT * INTO c FROM secumon.compressed_partitions cp WHERE cp.partition_name = p.partition_name;
    IF NOT p.compressed OR NOT FOUND THEN
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
CREATE OR REPLACE FUNCTION secumon.apply_retention(relation text) RETURNS text
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
        IF p.compressed THEN
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

-- ---- Jobs give way to locks; failures are logged when they start or change -----------------
ALTER TABLE secumon._jobs ADD COLUMN waiting_since timestamptz;
CREATE OR REPLACE VIEW secumon.jobs AS
SELECT job_name, description, worker, schedule_interval, enabled,
       last_run, last_duration, last_success, last_result, last_error, last_error_at,
       next_run, runs, failures, consecutive_failures, waiting_since
FROM secumon._jobs
ORDER BY job_name;
CREATE OR REPLACE FUNCTION secumon._run_job_recorded(job text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j secumon._jobs%ROWTYPE;
    started timestamptz := clock_timestamp();
    result text;
    err text;
    err_state text;
BEGIN
    SELECT * INTO j FROM secumon._jobs WHERE job_name = job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown job "%"', job
            USING ERRCODE = 'invalid_parameter_value', HINT = 'SELECT job_name FROM secumon.jobs lists the jobs.';
    END IF;
    -- If a job's DDL (partitions, rollups, compression) and a user's query ever wait for each
    -- other, the job notices first, gives way and is retried: the user's query goes on.
    PERFORM set_config('deadlock_timeout', '100ms', true);
    PERFORM secumon._bound_lock_wait();
    BEGIN
        EXECUTE format('SELECT %s()', j.function_name::text) INTO result;
        UPDATE secumon._jobs
           SET last_run = started, last_duration = clock_timestamp() - started,
               last_success = clock_timestamp(), last_result = result, last_error = NULL,
               runs = runs + 1, consecutive_failures = 0, waiting_since = NULL,
               next_run = CASE WHEN j.schedule_origin IS NULL
                               THEN greatest(started + schedule_interval, clock_timestamp())
                               ELSE date_bin(schedule_interval, clock_timestamp(), j.schedule_origin) + schedule_interval END
         WHERE job_name = job;
        RETURN 'success: ' || coalesce(result, '');
    EXCEPTION
    WHEN lock_not_available THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        result := format('waiting for a lock: %s', err);
        UPDATE secumon._jobs
           SET last_run = started, last_duration = clock_timestamp() - started, last_result = result,
               waiting_since = coalesce(waiting_since, started),
               next_run = clock_timestamp() + least(schedule_interval, interval '5 seconds')
         WHERE job_name = job;
        RETURN result;
    WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT, err_state = RETURNED_SQLSTATE;
        UPDATE secumon._jobs
           SET last_run = started, last_duration = clock_timestamp() - started,
               last_error = format('%s (SQLSTATE %s)', err, err_state), last_error_at = clock_timestamp(),
               runs = runs + 1, failures = failures + 1, consecutive_failures = consecutive_failures + 1,
               waiting_since = NULL,
               next_run = clock_timestamp() + least(schedule_interval,
                              interval '1 second' * (2 ^ least(consecutive_failures + 1, 8)))
         WHERE job_name = job;
        IF j.consecutive_failures = 0 OR j.last_error IS DISTINCT FROM format('%s (SQLSTATE %s)', err, err_state) THEN
            RAISE WARNING 'secumon job % failed: % (SQLSTATE %)', job, err, err_state
                USING HINT = 'It is retried with backoff; SELECT * FROM secumon.jobs shows its state. Further failures with the same error are not logged again.';
        END IF;
        RETURN format('failed: %s (SQLSTATE %s)', err, err_state);
    END;
END
$$;
CREATE FUNCTION secumon._workers_database() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
RETURN coalesce(nullif(current_setting('secumon.database', true), ''), 'postgres');
REVOKE ALL ON FUNCTION secumon._workers_database() FROM PUBLIC;
CREATE OR REPLACE FUNCTION secumon.health() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
SELECT jsonb_build_object(
    'version', (SELECT extversion FROM pg_extension WHERE extname = 'secumon'),
    'database', current_database(),
    'workers_database', secumon._workers_database(),
    'served_by_workers', secumon._workers_database() = current_database(),
    'warning', CASE WHEN secumon._workers_database() <> current_database() THEN
                   format('no SecuMon worker serves this database: secumon.database is "%s"', secumon._workers_database()) END,
    'preloaded', coalesce(current_setting('shared_preload_libraries', true), '') ~ '(^|[ ,])secumon($|[ ,])',
    'workers', (SELECT jsonb_agg(jsonb_build_object(
                        'name', w.name,
                        'running', a.pid IS NOT NULL,
                        'pid', a.pid,
                        'since', a.backend_start) ORDER BY w.name)
                  FROM (SELECT DISTINCT worker_name AS name
                          FROM unnest(ARRAY['secumon maintenance', 'secumon alert engine', 'secumon notifier']) AS worker_name) w
                  LEFT JOIN pg_stat_activity a ON a.backend_type = w.name AND a.datname = current_database()),
    'jobs', jsonb_build_object(
        'total', (SELECT count(*) FROM secumon._jobs),
        'failing', (SELECT coalesce(jsonb_agg(job_name ORDER BY job_name), '[]') FROM secumon._jobs WHERE consecutive_failures > 0),
        'overdue', (SELECT coalesce(jsonb_agg(job_name ORDER BY job_name), '[]') FROM secumon._jobs
                     WHERE enabled AND next_run < now() - greatest(schedule_interval, interval '1 minute'))),
    'data', jsonb_build_object(
        'agents', (SELECT count(*) FROM secumon.agents),
        'agents_seen_last_5_min', (SELECT count(*) FROM secumon.agents WHERE last_seen > now() - interval '5 minutes'),
        'last_sample', (SELECT max(last_seen) FROM secumon.agents),
        'freshness_seconds', (SELECT round(extract(epoch FROM now() - max(last_seen))::numeric, 1) FROM secumon.agents),
        'rows_in_default_partitions', (SELECT coalesce(sum(rows_estimate), 0) FROM secumon.partitions WHERE is_default))
)
$$;

-- ---- The alert engine retries a failed rule over the same samples ---------------------------
ALTER TABLE secumon._alert_rule_errors ADD COLUMN retry_from timestamptz;
CREATE OR REPLACE FUNCTION secumon._evaluate_alerts() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET max_parallel_workers_per_gather = 0  -- the scans are small; starting workers would dominate
SET jit = off
AS $$
DECLARE
    st secumon._alert_engine_state%ROWTYPE;
    started timestamptz := clock_timestamp();
    next_watermark timestamptz;
    healthy uuid[];
    broken uuid[];
    one_rule uuid;
    since timestamptz;
    events integer := 0;
    failed integer := 0;
    err text;
    err_state text;
BEGIN
    SELECT * INTO st FROM secumon._alert_engine_state FOR UPDATE;
    -- Rows of transactions still open are not visible yet; they were stamped no earlier than
    -- their transaction's start, so the next cycle must look back that far. A transaction left
    -- open for more than 5 minutes does not hold the engine back further.
    -- Rows are stamped with their transaction's start time, and the next cycle reads rows
    -- stamped strictly after the watermark: hence the microsecond before that start.
    next_watermark := greatest(least(now(), coalesce((SELECT min(xact_start) FROM pg_catalog.pg_stat_activity
                                                      WHERE pid <> pg_backend_pid() AND xact_start IS NOT NULL
                                                        AND backend_type = 'client backend'), now())
                                            - interval '1 microsecond'),
                               now() - interval '5 minutes');

    SELECT array_agg(r.id) FILTER (WHERE e.rule_id IS NULL), array_agg(r.id) FILTER (WHERE e.rule_id IS NOT NULL)
      INTO healthy, broken
      FROM secumon.alert_rules r LEFT JOIN secumon._alert_rule_errors e ON e.rule_id = r.id
     WHERE r.enabled;

    IF healthy IS NOT NULL THEN
        BEGIN
            events := events + secumon._evaluate_threshold_rules(healthy, st.watermark)
                             + secumon._evaluate_no_data_rules(healthy);
        EXCEPTION WHEN OTHERS THEN
            broken := coalesce(broken, '{}') || healthy;
        END;
    END IF;
    IF broken IS NOT NULL THEN
        FOREACH one_rule IN ARRAY broken LOOP
            -- A rule that failed before is evaluated again over every sample since its first
            -- failed cycle: its error stays visible until that succeeds.
            since := coalesce((SELECT least(e.retry_from, st.watermark) FROM secumon._alert_rule_errors e
                                WHERE e.rule_id = one_rule), st.watermark);
            BEGIN
                events := events + secumon._evaluate_threshold_rules(ARRAY[one_rule], since)
                                 + secumon._evaluate_no_data_rules(ARRAY[one_rule]);
                DELETE FROM secumon._alert_rule_errors WHERE rule_id = one_rule;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err = MESSAGE_TEXT, err_state = RETURNED_SQLSTATE;
                failed := failed + 1;
                IF NOT EXISTS (SELECT 1 FROM secumon._alert_rule_errors e WHERE e.rule_id = one_rule AND e.error = err) THEN
                    RAISE WARNING 'secumon alert engine: rule "%" (%) failed: % (SQLSTATE %)',
                                  (SELECT r.name FROM secumon.alert_rules r WHERE r.id = one_rule), one_rule, err, err_state
                        USING HINT = 'It is evaluated again over the same samples every cycle until it succeeds; '
                                     'secumon.alert_rule_status shows the error meanwhile.';
                END IF;
                INSERT INTO secumon._alert_rule_errors (rule_id, error, retry_from) VALUES (one_rule, err, since)
                ON CONFLICT (rule_id) DO UPDATE SET error = EXCLUDED.error, failed_at = now();
            END;
        END LOOP;
    END IF;
    events := events + secumon._evaluate_repeats_and_disabled();

    UPDATE secumon._alert_engine_state
       SET watermark = next_watermark, last_cycle_at = started,
           last_cycle_ms = extract(epoch FROM clock_timestamp() - started) * 1000,
           last_cycle_result = format('%s events, %s failing rules', events, failed);
    RETURN format('%s events, %s failing rules', events, failed);
END
$$;

-- ---- The first signing key is made by the first login --------------------------------------
CREATE FUNCTION secumon._create_first_signing_key() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    LOCK TABLE secumon._jwt_keys IN SHARE ROW EXCLUSIVE MODE;  -- one first key, however many logins race
    IF NOT EXISTS (SELECT 1 FROM secumon._jwt_keys WHERE retired_at IS NULL) THEN
        INSERT INTO secumon._jwt_keys (kid, secret) SELECT k.kid, k.secret FROM secumon._generate_jwt_key() AS k;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION secumon._create_first_signing_key() FROM PUBLIC;
