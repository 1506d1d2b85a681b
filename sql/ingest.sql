-- The agent write path: registration, the series names a report may carry, layouts, ingest()
-- and INSERT into secumon.metrics. docs/ingest-protocol.md.

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

-- Records that agent `agent_key` stored samples with layout `layout_id` (sql/series.sql:
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
            USING ERRCODE = 'no_data_found', HINT = 'Call secumon.register_agent() first.';
    END IF;
    IF a.owner_role IS DISTINCT FROM session_user THEN
        PERFORM secumon._check_agent_owner(agent_id, a.owner_role);
    END IF;
    -- A report for a day before today may belong to a compressed day: decompress it first
    -- (sql/series.sql). Today's reports skip the lookup.
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
            USING ERRCODE = 'no_data_found', HINT = 'Call secumon.register_agent() first.';
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

-- INSERT INTO secumon.metrics (the view of sql/series.sql): merges the sample into the agent's report row of that instant.
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

-- The view and this trigger on it are created in sql/series.sql, after the series dictionary
-- the view reads.
