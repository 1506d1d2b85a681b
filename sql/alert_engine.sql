-- Alerting: the engine (secumon._evaluate_alerts, run by the "secumon alert engine" worker) and
-- the transitions it records in secumon.alert_events. The header of sql/alerting.sql says how
-- it works.


-- ---------------------------------------------------------------------------------------------
-- Transitions
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION secumon._is_silenced(tenant_id text, agent_id text, rule_id uuid, severity text, labels jsonb)
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT EXISTS (
    SELECT 1 FROM secumon.silences si
     WHERE si.tenant_id = _is_silenced.tenant_id
       AND now() >= si.starts_at AND now() < si.ends_at
       AND (si.agent_id IS NULL OR si.agent_id = _is_silenced.agent_id)
       AND (si.rule_id IS NULL OR si.rule_id = _is_silenced.rule_id)
       AND (si.severity IS NULL OR si.severity = _is_silenced.severity)
       AND (si.agent_labels = '{}' OR coalesce(_is_silenced.labels, '{}') @> si.agent_labels))
$$;

-- Writes one alert_events row per (alert, event), with the payload notifications are built from.
-- (The threshold engine writes its events in the statement that makes the transitions, with the
-- same columns, silence test and payload.)
CREATE FUNCTION secumon._emit_alert_events(alert_ids uuid[], events text[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF alert_ids IS NULL OR cardinality(alert_ids) = 0 THEN
        RETURN 0;
    END IF;
    INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, series_key, event, severity, silenced, payload)
    SELECT al.id, al.rule_id, al.tenant_id, al.agent_id, al.series_key, e.event, al.severity,
           -- _is_silenced is a function call per row: make it only while some silence is in
           -- force at all, which the uncorrelated EXISTS checks once per statement.
           CASE WHEN EXISTS (SELECT FROM secumon.silences si WHERE now() >= si.starts_at AND now() < si.ends_at)
                THEN secumon._is_silenced(al.tenant_id, al.agent_id, al.rule_id, al.severity, ag.labels)
                ELSE false END,
           secumon._alert_event_payload(al, e.event, r.name, r.condition, ag.hostname, ag.labels)
      FROM unnest(alert_ids, events) AS e(alert_id, event)
      JOIN secumon.alerts al ON al.id = e.alert_id
      JOIN secumon.alert_rules r ON r.id = al.rule_id
      LEFT JOIN secumon.agents ag ON ag.agent_id = al.agent_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- STABLE (to_char is) and without SET, so that it is inlined into the statement writing events.
CREATE FUNCTION secumon._alert_summary(al secumon.alerts, rule_name text, condition text, event text) RETURNS text
LANGUAGE sql STABLE AS $$
SELECT CASE event
         WHEN 'resolved' THEN 'RESOLVED: '
         WHEN 'acknowledged' THEN 'ACKNOWLEDGED: '
         WHEN 'repeat' THEN 'STILL FIRING: '
         ELSE upper(al.severity) || ': '
       END
       || rule_name || ' on ' || al.agent_id
       || CASE WHEN al.series_key <> '' THEN ' (' || al.series_key || ')' ELSE '' END
       || CASE WHEN al.metric_name = 'agent.no_data'
               THEN ': no data since ' || to_char(al.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
               ELSE ': ' || al.metric_name || ' = ' || coalesce(round(al.current_value::numeric, 2)::text, '?')
                    || ' (' || CASE condition WHEN 'gt' THEN '>' WHEN 'gte' THEN '>=' WHEN 'lt' THEN '<'
                                              WHEN 'lte' THEN '<=' WHEN 'eq' THEN '=' ELSE coalesce(condition, '?') END
                    || ' ' || coalesce(al.threshold::text, '?') || ')'
          END
$$;

-- The payload of an alert_events row, which notifications are built from. Plain SQL without SET
-- (every name qualified), so that it is inlined into the statements writing events.
CREATE FUNCTION secumon._alert_event_payload(al secumon.alerts, event text, rule_name text, condition text,
                                             hostname text, labels jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
SELECT pg_catalog.jsonb_build_object(
           'alert_id', al.id, 'rule_id', al.rule_id, 'rule_name', rule_name, 'tenant_id', al.tenant_id,
           'agent_id', al.agent_id, 'hostname', hostname, 'series_key', al.series_key,
           'state', al.state, 'event', event, 'severity', al.severity, 'metric', al.metric_name,
           'condition', condition, 'threshold', al.threshold, 'current_value', al.current_value,
           'started_at', al.started_at, 'triggered_at', al.triggered_at, 'resolved_at', al.resolved_at,
           'acknowledged_at', al.acknowledged_at, 'acknowledged_by', al.acknowledged_by,
           'ack_comment', al.ack_comment, 'labels', coalesce(labels, '{}'),
           'series_labels', CASE WHEN al.series_key LIKE '{%' THEN (secumon._parse_series('custom.x' || al.series_key)).labels
                                 ELSE '{}'::jsonb END,
           'summary', secumon._alert_summary(al, rule_name, condition, event))
$$;

-- The threshold engine's steps, each over the temporary tables of the one before (dropped at
-- commit), run in order by secumon._evaluate_threshold_rules below.

-- Fills _secumon_rules with the threshold rules among `rule_ids`. Returns whether any of them
-- watches a counter, or NULL when there is none.
CREATE FUNCTION secumon._alert_rules_in_scope(rule_ids uuid[]) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Rules in scope, one row each, with the series they watch.
    CREATE TEMP TABLE IF NOT EXISTS _secumon_rules ON COMMIT DROP AS
        SELECT r.*, ''::text AS series, false AS counter, false AS labelled FROM secumon.alert_rules r WITH NO DATA;
    TRUNCATE _secumon_rules;
    INSERT INTO _secumon_rules
    SELECT r.*, r.metric_type || '.' || r.metric_name, secumon._is_counter(c.kind, r.metric_type, r.metric_name),
           r.series_labels <> '{}'
      FROM secumon.alert_rules r
      JOIN unnest(rule_ids) AS u(id) ON u.id = r.id
      LEFT JOIN secumon.metric_catalog c ON c.metric_type = r.metric_type AND c.metric_name = r.metric_name
     WHERE r.kind = 'threshold';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    ANALYZE _secumon_rules (id, series, tenant_id, agent_id, series_key, counter, labelled);
    RETURN coalesce((SELECT bool_or(counter) FROM _secumon_rules), false);
END
$$;

-- Fills _secumon_hot_agents; returns whether there is any.
CREATE FUNCTION secumon._alert_hot_agents(since timestamptz, has_counters boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    metric_hot text;
    disk_hot text;
BEGIN
    -- Agents worth a look. A sample can only start or continue a breach if it passes the
    -- loosest threshold of some rule on its series; that test is compiled into one predicate
    -- per source, so a cycle with nothing in breach reads the new rows once and keeps none.
    WITH bounds AS (
        SELECT r.series,
               min(r.threshold) FILTER (WHERE r.condition IN ('gt', 'gte')) AS low,
               max(r.threshold) FILTER (WHERE r.condition IN ('lt', 'lte')) AS high,
               bool_or(r.condition NOT IN ('gt', 'gte', 'lt', 'lte')) AS other
          FROM _secumon_rules r WHERE NOT r.counter GROUP BY r.series),
    tests AS (
        SELECT b.series, term.sql
          FROM bounds b
         CROSS JOIN LATERAL (VALUES (CASE WHEN b.low IS NOT NULL THEN format('%%1$s >= %L::float8', b.low) END),
                                    (CASE WHEN b.high IS NOT NULL THEN format('%%1$s <= %L::float8', b.high) END),
                                    (CASE WHEN b.other THEN '%1$s IS NOT NULL' END)) AS term(sql)
         WHERE term.sql IS NOT NULL),
    per_layout AS (
        SELECT u.layout_id, string_agg(format(t.sql, format('s.vals[%s]', u.idx)), ' OR ') AS test
          FROM secumon._layout_positions(ARRAY(SELECT series FROM tests), false) u
          JOIN tests t ON t.series = u.series
         GROUP BY u.layout_id)
    SELECT (SELECT coalesce(string_agg(format('(s.layout_id = %s AND (%s))', layout_id, test), ' OR '), 'false') FROM per_layout),
           (SELECT coalesce(string_agg(format(t.sql, format('s.%I', substr(t.series, 6))), ' OR '), 'false')
              FROM tests t WHERE t.series LIKE 'disk.%')
      INTO metric_hot, disk_hot;

    CREATE TEMP TABLE IF NOT EXISTS _secumon_hot_agents (agent_key integer PRIMARY KEY) ON COMMIT DROP;
    TRUNCATE _secumon_hot_agents;
    EXECUTE format($h$
        INSERT INTO _secumon_hot_agents
        SELECT s.agent_key FROM secumon.metric_samples s WHERE s.ingested_at > $1 AND (%s)
        UNION
        SELECT a.agent_key FROM secumon.disk_metrics s JOIN secumon.agents a ON a.agent_id = s.agent_id
         WHERE s.ingested_at > $1 AND (%s)
        UNION
        SELECT a.agent_key FROM secumon.network_metrics s JOIN secumon.agents a ON a.agent_id = s.agent_id
         WHERE $2 AND s.ingested_at > $1
        UNION
        SELECT s.agent_key FROM secumon.metric_samples s WHERE $2 AND s.ingested_at > $1
        UNION
        SELECT a.agent_key FROM secumon.disk_metrics s JOIN secumon.agents a ON a.agent_id = s.agent_id
         WHERE $2 AND s.ingested_at > $1
        UNION
        SELECT ag.agent_key
          FROM secumon.alerts al
          JOIN _secumon_rules r ON r.id = al.rule_id
          JOIN secumon.agents ag ON ag.agent_id = al.agent_id
         WHERE al.state IN ('pending', 'firing')
        $h$, metric_hot, disk_hot)
        USING since, has_counters;
    IF NOT EXISTS (SELECT 1 FROM _secumon_hot_agents) THEN
        RETURN false;
    END IF;
    ANALYZE _secumon_hot_agents;
    RETURN true;
END
$$;

-- Fills _secumon_batch with the new samples of the hot agents.
CREATE FUNCTION secumon._alert_new_samples(since timestamptz, has_counters boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    counter_lookback constant interval := interval '10 minutes';
    hot_ids text;
BEGIN
    -- The new samples of those agents, one row per series value. disk_metrics and
    -- network_metrics rows carry agent_id: they are filtered by it before the join that maps
    -- the few rows left to agent_key (not one agents lookup per new row).
    hot_ids := 'SELECT ha.agent_id FROM _secumon_hot_agents h JOIN secumon.agents ha ON ha.agent_key = h.agent_key';
    CREATE TEMP TABLE IF NOT EXISTS _secumon_batch
        (agent_key integer, series text, series_key text, time timestamptz, value float8) ON COMMIT DROP;
    TRUNCATE _secumon_batch;
    EXECUTE format($b$
        INSERT INTO _secumon_batch
        SELECT x.* FROM (%s) x WHERE x.time IS NOT NULL
        $b$, secumon._alert_samples_query(
                 's.ingested_at > $1 AND s.agent_key IN (SELECT agent_key FROM _secumon_hot_agents)',
                 format('s.ingested_at > $1 AND s.agent_id IN (%s)', hot_ids),
                 CASE WHEN has_counters
                      THEN format('s.ingested_at > $1 - $3 AND s.agent_id IN (%s)', hot_ids)
                      ELSE 'false' END))
        USING since, (SELECT array_agg(DISTINCT series) FROM _secumon_rules), counter_lookback;
    ANALYZE _secumon_batch;
END
$$;

-- Fills _secumon_groups and, from them, _secumon_pairs: what the transitions decide on.
CREATE FUNCTION secumon._alert_pairs() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Per (agent, series): range and ends of the new values.
    CREATE TEMP TABLE IF NOT EXISTS _secumon_groups ON COMMIT DROP AS
        SELECT agent_key, series, series_key, 0::float8 AS vmin, 0::float8 AS vmax, now() AS first_time,
               now() AS last_time, 0::float8 AS last_value FROM _secumon_batch WITH NO DATA;
    TRUNCATE _secumon_groups;
    INSERT INTO _secumon_groups
    SELECT agent_key, series, series_key, min(value), max(value), min(time), max(time),
           (array_agg(value ORDER BY time DESC))[1]
      FROM _secumon_batch GROUP BY 1, 2, 3;
    ANALYZE _secumon_groups;

    -- Rule x group pairs. Most are decided by the range alone: every new value breaches
    -- ("all"), none does ("none"); only "mixed" pairs are looked at sample by sample.
    CREATE TEMP TABLE IF NOT EXISTS _secumon_pairs (
        rule_id uuid, agent_key integer, agent_id text, tenant_id text, series text, series_key text,
        severity text, threshold float8, duration interval, first_time timestamptz, last_time timestamptz,
        last_value float8, verdict text, alert_id uuid, alert_state text, alert_started_at timestamptz,
        last_not_cond timestamptz, breach_start timestamptz, last_not_recovered timestamptz,
        recovered_at timestamptz) ON COMMIT DROP;
    TRUNCATE _secumon_pairs;
    INSERT INTO _secumon_pairs
    SELECT p.*,
           CASE p.verdict WHEN 'all' THEN NULL WHEN 'none' THEN p.last_time END,
           CASE p.verdict WHEN 'all' THEN p.first_time END,
           CASE p.verdict WHEN 'all' THEN p.last_time END,
           CASE p.verdict WHEN 'none' THEN p.first_time END
      FROM (SELECT r.id AS rule_id, g.agent_key, a.agent_id, r.tenant_id, r.series, g.series_key, r.severity, r.threshold,
                   r.duration, g.first_time, g.last_time, g.last_value,
                   CASE WHEN r.recovery_threshold IS NOT NULL THEN 'mixed'
                        WHEN r.condition = 'gt' THEN CASE WHEN g.vmin > r.threshold THEN 'all' WHEN g.vmax <= r.threshold THEN 'none' ELSE 'mixed' END
                        WHEN r.condition = 'gte' THEN CASE WHEN g.vmin >= r.threshold THEN 'all' WHEN g.vmax < r.threshold THEN 'none' ELSE 'mixed' END
                        WHEN r.condition = 'lt' THEN CASE WHEN g.vmax < r.threshold THEN 'all' WHEN g.vmin >= r.threshold THEN 'none' ELSE 'mixed' END
                        WHEN r.condition = 'lte' THEN CASE WHEN g.vmax <= r.threshold THEN 'all' WHEN g.vmin > r.threshold THEN 'none' ELSE 'mixed' END
                        WHEN r.condition = 'eq' THEN CASE WHEN g.vmin = r.threshold AND g.vmax = r.threshold THEN 'all'
                                                          WHEN g.vmin > r.threshold OR g.vmax < r.threshold THEN 'none' ELSE 'mixed' END
                        ELSE CASE WHEN secumon._invalid_rule(r.id, 'condition') THEN 'mixed' END
                   END AS verdict,
                   al.id AS alert_id, al.state AS alert_state, al.started_at AS alert_started_at
              FROM _secumon_groups g
              JOIN _secumon_rules r ON r.series = g.series
              JOIN secumon.agents a ON a.agent_key = g.agent_key AND a.tenant_id = r.tenant_id
              LEFT JOIN secumon.alerts al ON al.rule_id = r.id AND al.agent_id = a.agent_id
                                         AND al.series_key = g.series_key AND al.state IN ('pending', 'firing')
             WHERE (r.agent_id IS NULL OR r.agent_id = a.agent_id)
               AND (r.agent_labels = '{}' OR a.labels @> r.agent_labels)
               AND (r.series_key IS NULL OR r.series_key = g.series_key)
               -- (a boolean: comparing jsonb for every pair cost a fifth of a steady cycle)
               AND (NOT r.labelled
                    OR EXISTS (SELECT FROM secumon.metric_series ms
                                WHERE ms.series = g.series || g.series_key AND ms.labels @> r.series_labels))) p
     WHERE (p.verdict <> 'none' OR p.alert_id IS NOT NULL)
       -- Nothing to do for an active alert that every new value keeps in breach, unless it is
       -- pending and now reaches its duration: in a steady cycle that is most active alerts.
       AND NOT (p.verdict = 'all' AND p.alert_id IS NOT NULL
                AND (p.alert_state = 'firing' OR p.last_time - p.alert_started_at < p.duration));
    -- Statistics of the columns the next statements join and filter on only: sampling every
    -- column of up to 50,000 pairs cost a tenth of a cycle that opens that many alerts.
    ANALYZE _secumon_pairs (rule_id, agent_key, series, series_key, verdict, alert_id, alert_state);

    -- Mixed pairs, sample by sample: where the condition last failed, where the current breach
    -- began, where a firing alert last was not recovered and when it recovered.
    WITH evaluated AS (
        SELECT p.rule_id, p.agent_key, p.series_key, b.time, b.value,
               secumon._breaches(r.condition, b.value, r.threshold) AS cond,
               secumon._recovered(r.condition, b.value, r.threshold, r.recovery_threshold) AS recovered
          FROM _secumon_pairs p
          JOIN _secumon_rules r ON r.id = p.rule_id
          JOIN _secumon_batch b ON b.agent_key = p.agent_key AND b.series = p.series AND b.series_key = p.series_key
         WHERE p.verdict = 'mixed'),
    marked AS (
        SELECT e.*,
               max(e.time) FILTER (WHERE NOT e.cond) OVER g AS lnc,
               max(e.time) FILTER (WHERE NOT e.recovered) OVER g AS lnr
          FROM evaluated e
        WINDOW g AS (PARTITION BY e.rule_id, e.agent_key, e.series_key)),
    summary AS (
        SELECT m.rule_id, m.agent_key, m.series_key, max(m.lnc) AS lnc, max(m.lnr) AS lnr,
               min(m.time) FILTER (WHERE m.cond AND m.time > coalesce(m.lnc, '-infinity')) AS breach_start,
               min(m.time) FILTER (WHERE m.recovered AND m.time > coalesce(m.lnr, '-infinity')) AS recovered_at
          FROM marked m GROUP BY 1, 2, 3)
    UPDATE _secumon_pairs p
       SET last_not_cond = s.lnc, breach_start = s.breach_start, last_not_recovered = s.lnr,
           recovered_at = s.recovered_at
      FROM summary s
     WHERE p.rule_id = s.rule_id AND p.agent_key = s.agent_key AND p.series_key = s.series_key;
END
$$;

-- Opens, changes and resolves the alerts of _secumon_pairs and writes their events. Returns
-- the number of events.
CREATE FUNCTION secumon._alert_transitions() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    transitions_sql text;
    events integer;
BEGIN
    -- Transitions, and their events written from the rows the transitions return.
    -- No active alert exists for the pairs opened here (the pairs were joined with them), so
    -- the insert runs without ON CONFLICT: a speculative insertion costs about a third more
    -- per row, which is most of a cycle that opens many alerts. Should an active alert appear
    -- meanwhile all the same (inserted by hand), the statement runs again, skipping it.
    transitions_sql := $t$
    WITH decided AS (
        SELECT p.*,
               CASE WHEN p.alert_state = 'pending' AND p.last_not_cond IS NULL THEN p.alert_started_at
                    ELSE p.breach_start END AS breach_from
          FROM _secumon_pairs p),
    opened AS (
        INSERT INTO secumon.alerts AS al (rule_id, tenant_id, agent_id, series_key, state, severity, metric_name, threshold,
                                          current_value, started_at, triggered_at, last_sample_at, last_notified_at)
        SELECT d.rule_id, d.tenant_id, d.agent_id, d.series_key,
               CASE WHEN d.last_time - d.breach_from >= d.duration THEN 'firing' ELSE 'pending' END,
               d.severity, d.series, d.threshold, d.last_value, d.breach_from,
               CASE WHEN d.last_time - d.breach_from >= d.duration THEN d.breach_from + d.duration END,
               d.last_time,
               CASE WHEN d.last_time - d.breach_from >= d.duration THEN now() END
          FROM decided d
         WHERE d.alert_id IS NULL AND d.breach_from IS NOT NULL
        %s
        RETURNING al),
    pending_changed AS (
        UPDATE secumon.alerts al
           SET state = CASE WHEN d.breach_from IS NULL THEN 'resolved'
                            WHEN d.last_time - d.breach_from >= d.duration THEN 'firing'
                            ELSE 'pending' END,
               started_at = coalesce(d.breach_from, al.started_at),
               triggered_at = CASE WHEN d.breach_from IS NOT NULL AND d.last_time - d.breach_from >= d.duration
                                   THEN d.breach_from + d.duration END,
               resolved_at = CASE WHEN d.breach_from IS NULL THEN d.last_not_cond END,
               last_notified_at = CASE WHEN d.breach_from IS NOT NULL AND d.last_time - d.breach_from >= d.duration
                                       THEN now() END,
               current_value = d.last_value, last_sample_at = d.last_time, updated_at = now()
          FROM decided d
         WHERE al.id = d.alert_id AND d.alert_state = 'pending'
           AND (d.breach_from IS NULL OR d.breach_from <> d.alert_started_at OR d.last_time - d.breach_from >= d.duration)
        RETURNING al),
    firing_resolved AS (
        UPDATE secumon.alerts al
           SET state = 'resolved', resolved_at = d.recovered_at, current_value = d.last_value,
               last_sample_at = d.last_time, updated_at = now()
          FROM decided d
         WHERE al.id = d.alert_id AND d.alert_state = 'firing' AND d.recovered_at IS NOT NULL
           AND (d.last_not_recovered IS NULL OR d.last_not_recovered < d.last_time)
        RETURNING al),
    -- The events, from the rows the transitions return: as _emit_alert_events writes them, in
    -- this same statement rather than by reading the alerts back by id.
    transitions AS (
        SELECT o.al, 'firing' AS event FROM opened o WHERE (o.al).state = 'firing'
        UNION ALL SELECT c.al, 'firing' FROM pending_changed c WHERE (c.al).state = 'firing'
        UNION ALL SELECT f.al, 'resolved' FROM firing_resolved f)
    INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, series_key, event, severity, silenced, payload)
    SELECT (t.al).id, (t.al).rule_id, (t.al).tenant_id, (t.al).agent_id, (t.al).series_key, t.event, (t.al).severity,
           CASE WHEN EXISTS (SELECT FROM secumon.silences si WHERE now() >= si.starts_at AND now() < si.ends_at)
                THEN secumon._is_silenced((t.al).tenant_id, (t.al).agent_id, (t.al).rule_id, (t.al).severity, ag.labels)
                ELSE false END,
           secumon._alert_event_payload(t.al, t.event, r.name, r.condition, ag.hostname, ag.labels)
      FROM transitions t
      JOIN secumon.alert_rules r ON r.id = (t.al).rule_id
      LEFT JOIN secumon.agents ag ON ag.agent_id = (t.al).agent_id
    $t$;
    BEGIN
        EXECUTE format(transitions_sql, '');
        GET DIAGNOSTICS events = ROW_COUNT;
    EXCEPTION WHEN unique_violation THEN
        EXECUTE format(transitions_sql,
                       $c$ON CONFLICT (rule_id, agent_id, series_key) WHERE state IN ('pending', 'firing') DO NOTHING$c$);
        GET DIAGNOSTICS events = ROW_COUNT;
    END;
    RETURN events;
END
$$;

CREATE FUNCTION secumon._alert_refresh_statistics() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_pairs bigint;
    lock_wait text;
    stats_target text;
BEGIN
    -- After a cycle that opened many alerts, statistics of secumon.alerts that still describe
    -- the table before it would make the next cycle's join with the active alerts quadratic
    -- (taken for a handful of rows, the planner scans them all once per pair): refresh them
    -- now rather than when autovacuum gets to it. Skipped while autovacuum holds the table.
    -- A sample of 3,000 rows (statistics target 10) gives the sizes the plans need at a tenth
    -- of the cost; autovacuum's next pass restores the usual precision.
    SELECT count(*) INTO new_pairs FROM _secumon_pairs WHERE alert_id IS NULL;
    IF new_pairs >= 1000 AND new_pairs > (SELECT c.reltuples FROM pg_catalog.pg_class c
                                           WHERE c.oid = 'secumon.alerts'::regclass) / 5 THEN
        lock_wait := current_setting('lock_timeout');
        stats_target := current_setting('default_statistics_target');
        PERFORM set_config('lock_timeout', '50ms', true), set_config('default_statistics_target', '10', true);
        BEGIN
            ANALYZE secumon.alerts (rule_id, agent_id, series_key, state);
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        PERFORM set_config('lock_timeout', lock_wait, true), set_config('default_statistics_target', stats_target, true);
    END IF;
END
$$;

-- Evaluates the threshold rules `rule_ids` over the samples ingested after `since`.
-- Returns the number of transitions that produced events.
CREATE FUNCTION secumon._evaluate_threshold_rules(rule_ids uuid[], since timestamptz) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET max_parallel_workers_per_gather = 0
SET jit = off
AS $$
DECLARE
    has_counters boolean := secumon._alert_rules_in_scope(rule_ids);
    events integer;
BEGIN
    IF has_counters IS NULL OR NOT secumon._alert_hot_agents(since, has_counters) THEN
        RETURN 0;
    END IF;
    PERFORM secumon._alert_new_samples(since, has_counters);
    PERFORM secumon._alert_pairs();
    events := secumon._alert_transitions();
    PERFORM secumon._alert_refresh_statistics();
    RETURN events;
END
$$;

-- No-data rules: an agent silent for no_data_after fires; data coming back resolves it.
CREATE FUNCTION secumon._evaluate_no_data_rules(rule_ids uuid[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids uuid[];
    kinds text[];
BEGIN
    WITH rules AS (
        SELECT r.* FROM secumon.alert_rules r WHERE r.id = ANY (rule_ids) AND r.kind = 'no_data'),
    opened AS (
        INSERT INTO secumon.alerts (rule_id, tenant_id, agent_id, series_key, state, severity, metric_name,
                                    threshold, current_value, started_at, triggered_at, last_sample_at, last_notified_at)
        SELECT r.id, r.tenant_id, a.agent_id, '', 'firing', r.severity, 'agent.no_data',
               extract(epoch FROM r.no_data_after),
               round(extract(epoch FROM now() - coalesce(a.last_seen, a.first_seen))::numeric, 1),
               coalesce(a.last_seen, a.first_seen), now(), a.last_seen, now()
          FROM rules r
          JOIN secumon.agents a ON a.tenant_id = r.tenant_id
                               AND (r.agent_id IS NULL OR r.agent_id = a.agent_id)
                               AND (r.agent_labels = '{}' OR a.labels @> r.agent_labels)
         WHERE coalesce(a.last_seen, a.first_seen) < now() - r.no_data_after
        ON CONFLICT (rule_id, agent_id, series_key) WHERE state IN ('pending', 'firing') DO NOTHING
        RETURNING id),
    back AS (
        UPDATE secumon.alerts al
           SET state = 'resolved', resolved_at = a.last_seen, last_sample_at = a.last_seen,
               current_value = 0, updated_at = now()
          FROM rules r, secumon.agents a
         WHERE al.rule_id = r.id AND al.state = 'firing' AND a.agent_id = al.agent_id
           AND a.last_seen >= now() - r.no_data_after
        RETURNING al.id)
    SELECT array_agg(t.id), array_agg(t.event) INTO ids, kinds
      FROM (SELECT id, 'firing' AS event FROM opened UNION ALL SELECT id, 'resolved' FROM back) t;
    RETURN secumon._emit_alert_events(ids, kinds);
END
$$;

-- Still-firing, unacknowledged alerts whose rule has a repeat_interval, and alerts of rules that
-- were disabled since the last cycle.
CREATE FUNCTION secumon._evaluate_repeats_and_disabled() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids uuid[];
    kinds text[];
BEGIN
    WITH repeated AS (
        UPDATE secumon.alerts al SET last_notified_at = now()
          FROM secumon.alert_rules r
         WHERE r.id = al.rule_id AND al.state = 'firing' AND r.enabled AND r.repeat_interval IS NOT NULL
           AND al.acknowledged_at IS NULL AND al.last_notified_at <= now() - r.repeat_interval
        RETURNING al.id),
    to_close AS (
        SELECT al.id, al.state AS old_state
          FROM secumon.alerts al JOIN secumon.alert_rules r ON r.id = al.rule_id
         WHERE NOT r.enabled AND al.state IN ('pending', 'firing')
           FOR UPDATE OF al),
    disabled AS (
        UPDATE secumon.alerts al
           SET state = 'resolved', resolved_at = now(), updated_at = now()
          FROM to_close c
         WHERE al.id = c.id
        RETURNING al.id, c.old_state)
    SELECT array_agg(t.id), array_agg(t.event) INTO ids, kinds
      FROM (SELECT id, 'repeat' AS event FROM repeated
            UNION ALL SELECT id, 'resolved' FROM disabled WHERE old_state = 'firing') t;
    RETURN secumon._emit_alert_events(ids, kinds);
END
$$;

-- Summarises the BRIN ranges of the rows that arrived since the last cycle (today's and
-- yesterday's partitions, or the chunks of the timescaledb backend reaching into the last day),
-- so that the next cycle's scan by ingest time reads only what is new instead of every range
-- autovacuum has not summarised yet. Never waits for autovacuum.
CREATE FUNCTION secumon._summarize_ingest_ranges() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '50ms'
AS $$
DECLARE
    recent regclass[];
    idx regclass;
    today date := secumon._utc_day(now());
BEGIN
    IF secumon._storage_backend('metric_samples') = 'timescaledb' THEN
        SELECT array_agg(format('%I.%I', c.chunk_schema, c.chunk_name)::regclass) INTO recent
          FROM timescaledb_information.chunks c
         WHERE c.hypertable_schema = 'secumon_partitions' AND c.hypertable_name IN ('metric_samples', 'disk_metrics', 'network_metrics')
           AND c.range_end > now() - interval '1 day' AND NOT c.is_compressed;
    ELSE
        SELECT array_agg(h.inhrelid::regclass) INTO recent
          FROM pg_catalog.pg_inherits h
          JOIN pg_catalog.pg_class p ON p.oid = h.inhrelid
         WHERE h.inhparent IN ('secumon.metric_samples'::regclass, 'secumon.disk_metrics'::regclass,
                               'secumon.network_metrics'::regclass)
           AND (p.relname LIKE '%\_p' || to_char(today, 'YYYYMMDD')
                OR p.relname LIKE '%\_p' || to_char(today - 1, 'YYYYMMDD')
                OR p.relname LIKE '%\_default');
    END IF;
    FOR idx IN
        SELECT i.indexrelid::regclass
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_catalog.pg_am am ON am.oid = ic.relam AND am.amname = 'brin'
          JOIN pg_catalog.pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = i.indkey[0]
                                          AND att.attname = 'ingested_at'
         WHERE i.indrelid = ANY (recent)
    LOOP
        BEGIN
            PERFORM pg_catalog.brin_summarize_new_values(idx);
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- autovacuum is summarising it right now
        END;
    END LOOP;
END
$$;

-- One evaluation cycle (job alert_evaluation). Healthy rules are evaluated together; if that
-- fails, each rule is evaluated on its own so that one broken rule is marked with its error
-- (secumon.alert_rule_status) while the others keep working.
CREATE FUNCTION secumon._evaluate_alerts() RETURNS text
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

INSERT INTO secumon._jobs (job_name, worker, function_name, description, schedule_interval) VALUES
    ('alert_evaluation', 'alerts', 'secumon._evaluate_alerts',
     'Evaluates every enabled alert rule (interval: secumon.alert_interval)', '30 seconds');
