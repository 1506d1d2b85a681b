-- Alerting: what operators and dashboards call (acknowledge, silence, test a rule), the views
-- they read, and who may do what.


-- ---------------------------------------------------------------------------------------------
-- Operator API
-- ---------------------------------------------------------------------------------------------

-- Who is acting: the SecuMon user when the session authenticated (secumon.authenticate), else NULL.
CREATE FUNCTION secumon._acting_user() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN (SELECT u.username FROM secumon.users u WHERE u.id = secumon.current_user_id());

-- The operator functions below are SECURITY DEFINER, so row-level security does not apply to
-- them: they apply it themselves, exactly as the tenant policies (sql/tenancy.sql) do for the
-- same caller. Operators (superusers, members of secumon_admin) act on every tenant; a session
-- with a SecuMon identity on its own tenant's rows, with role user or admin (readonly never
-- writes); a session without identity on nothing while secumon.auth_required is on (default),
-- on every tenant when it is off.
--
-- _check_tenant_write() refuses, before anything is looked up, a caller who may write no row
-- at all; _tenant_writable() then filters inside the lookup, so that another tenant's row
-- takes the very path of a missing one and gets the very same error.
CREATE FUNCTION secumon._check_tenant_write(what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF secumon._caller_is_operator() OR secumon._rls_open() THEN
        RETURN;
    END IF;
    IF secumon.current_user_id() IS NULL THEN
        RAISE EXCEPTION 'permission denied to change %: this session has no SecuMon identity', what
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call secumon.authenticate(token) with a token from secumon.login() first.';
    END IF;
    IF NOT secumon._rls_may_write(false) THEN
        RAISE EXCEPTION 'permission denied to change %: SecuMon role % only reads', what, secumon.current_role()
            USING ERRCODE = 'insufficient_privilege', HINT = 'Users with role user or admin may.';
    END IF;
END
$$;

-- Whether the caller may write rows of `row_tenant`: the WITH CHECK of the tenant policies.
CREATE FUNCTION secumon._tenant_writable(row_tenant text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
RETURN secumon._caller_is_operator() OR secumon._rls_open()
       OR coalesce(row_tenant = secumon.current_tenant() AND secumon._rls_may_write(false), false);

CREATE FUNCTION secumon.ack_alert(alert_id uuid, comment text DEFAULT NULL)
RETURNS secumon.alerts
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    al secumon.alerts;
BEGIN
    IF alert_id IS NULL THEN
        RAISE EXCEPTION 'alert_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM secumon._check_tenant_write('alerts');
    SELECT * INTO al FROM secumon.alerts a
     WHERE a.id = ack_alert.alert_id AND secumon._tenant_writable(a.tenant_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with id %', alert_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'SELECT id FROM secumon.active_alerts lists the active alerts.';
    END IF;
    IF al.state = 'resolved' THEN
        RAISE EXCEPTION 'alert % is already resolved', alert_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE secumon.alerts a
       SET acknowledged_at = now(), acknowledged_by = coalesce(secumon._acting_user(), session_user::text),
           ack_comment = ack_alert.comment, updated_at = now()
     WHERE a.id = ack_alert.alert_id
    RETURNING * INTO al;
    PERFORM secumon._emit_alert_events(ARRAY[al.id], ARRAY['acknowledged']);
    RETURN al;
END
$$;
COMMENT ON FUNCTION secumon.ack_alert(uuid, text) IS 'Acknowledges an active alert: records who and why, and stops repeat notifications.';

-- tenant_id: the caller's tenant by default ('default' for operators). The silence's rule must
-- belong to the same tenant (secumon._silences_validate checks it for every writer).
CREATE FUNCTION secumon.silence(duration interval, comment text, agent_id text DEFAULT NULL,
                                rule_id uuid DEFAULT NULL, severity text DEFAULT NULL,
                                agent_labels jsonb DEFAULT '{}', starts_at timestamptz DEFAULT now(),
                                tenant_id text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant text := coalesce(silence.tenant_id, secumon.current_tenant(), 'default');
    id uuid;
BEGIN
    PERFORM secumon._check_tenant_write('silences');
    -- Every tenant but the caller's own is refused alike, whether it exists or not.
    IF NOT secumon._tenant_writable(tenant) THEN
        RAISE EXCEPTION 'permission denied to silence alerts of tenant "%"', tenant
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'SecuMon users silence the alerts of their own tenant: leave tenant_id out.';
    END IF;
    IF duration IS NULL OR duration <= interval '0' THEN
        RAISE EXCEPTION 'duration must be positive, got %', coalesce(duration::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO secumon.silences (tenant_id, agent_id, rule_id, severity, agent_labels, starts_at, ends_at, created_by, comment)
    VALUES (tenant, silence.agent_id, silence.rule_id, silence.severity, coalesce(silence.agent_labels, '{}'),
            coalesce(silence.starts_at, now()), coalesce(silence.starts_at, now()) + silence.duration,
            coalesce(secumon._acting_user(), session_user::text), silence.comment)
    RETURNING silences.id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION secumon.silence(interval, text, text, uuid, text, jsonb, timestamptz, text) IS 'Creates a silence / maintenance window and returns its id.';

CREATE FUNCTION secumon.expire_silence(silence_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM secumon._check_tenant_write('silences');
    UPDATE secumon.silences s SET ends_at = greatest(s.starts_at + interval '1 microsecond', now())
     WHERE s.id = silence_id AND secumon._tenant_writable(s.tenant_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no silence with id %', silence_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'SELECT id FROM secumon.silences lists the silences.';
    END IF;
END
$$;

-- Backtest: which agents/series would a rule have alerted on over a past interval, and when.
-- Same semantics as the engine, sample by sample.
CREATE FUNCTION secumon.test_rule(metric text, condition text, threshold float8, duration interval,
                                  "from" timestamptz, "to" timestamptz, for_agent text DEFAULT NULL,
                                  recovery_threshold float8 DEFAULT NULL, for_series_key text DEFAULT NULL,
                                  agent_labels jsonb DEFAULT '{}')
RETURNS TABLE (agent_id text, series_key text, pending_at timestamptz, fired_at timestamptz,
               resolved_at timestamptz, peak_value float8)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    m_type text := split_part(metric, '.', 1);
    m_name text := substr(metric, strpos(metric, '.') + 1);
    s record;
    cur_agent integer;
    cur_key text;
    cond boolean;
    recovered boolean;
    st text := 'inactive';
    p_at timestamptz;
    f_at timestamptz;
    peak float8;
    cur_agent_id text;
BEGIN
    IF metric IS NULL OR strpos(metric, '.') = 0 THEN
        RAISE EXCEPTION 'metric must be "<type>.<name>", e.g. cpu.usage_percent, got %', coalesce(quote_literal(metric), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF "from" IS NULL OR "to" IS NULL OR "from" >= "to" THEN
        RAISE EXCEPTION 'from must be before to (got % .. %)', coalesce("from"::text, 'NULL'), coalesce("to"::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM secumon._validate_rule('threshold', m_type, m_name, for_agent, agent_labels, condition, threshold,
                                   recovery_threshold, duration, NULL, 'info', NULL);
    FOR s IN EXECUTE format($t$
        SELECT x.agent_key, a.agent_id, x.series_key, x.time, x.value
          FROM (%s) x JOIN secumon.agents a ON a.agent_key = x.agent_key
         WHERE ($5::text IS NULL OR a.agent_id = $5) AND ($6::text IS NULL OR x.series_key = $6)
           AND ($7 = '{}' OR a.labels @> $7) AND x.time >= $3
         ORDER BY x.agent_key, x.series_key, x.time
        $t$, secumon._alert_samples_query('s.time >= $3 AND s.time <= $4', 's.time >= $3 AND s.time <= $4',
                                          's.time >= $3 - interval ''10 minutes'' AND s.time <= $4'))
        USING NULL::timestamptz, ARRAY[metric], "from", "to", for_agent, for_series_key, agent_labels
    LOOP
        IF cur_agent IS DISTINCT FROM s.agent_key OR cur_key IS DISTINCT FROM s.series_key THEN
            IF st IN ('pending', 'firing') AND f_at IS NOT NULL THEN
                agent_id := cur_agent_id; series_key := cur_key; pending_at := p_at; fired_at := f_at;
                resolved_at := NULL; peak_value := peak;
                RETURN NEXT;
            END IF;
            cur_agent := s.agent_key; cur_key := s.series_key; cur_agent_id := s.agent_id;
            st := 'inactive'; p_at := NULL; f_at := NULL; peak := NULL;
        END IF;
        cond := secumon._breaches(condition, s.value, threshold);
        recovered := secumon._recovered(condition, s.value, threshold, recovery_threshold);
        IF st = 'inactive' AND cond THEN
            st := 'pending'; p_at := s.time; peak := s.value;
        ELSIF st = 'pending' AND NOT cond THEN
            st := 'inactive'; p_at := NULL; peak := NULL;
        END IF;
        IF st IN ('pending', 'firing') THEN
            peak := CASE WHEN condition IN ('lt', 'lte') THEN least(peak, s.value) ELSE greatest(peak, s.value) END;
        END IF;
        IF st = 'pending' AND s.time - p_at >= duration THEN
            st := 'firing'; f_at := p_at + duration;
        ELSIF st = 'firing' AND recovered THEN
            agent_id := s.agent_id; series_key := s.series_key; pending_at := p_at; fired_at := f_at;
            resolved_at := s.time; peak_value := peak;
            RETURN NEXT;
            st := 'inactive'; p_at := NULL; f_at := NULL; peak := NULL;
            IF cond THEN  -- cannot happen without hysteresis; with it, a recovered value is not a breach
                st := 'pending'; p_at := s.time; peak := s.value;
            END IF;
        END IF;
    END LOOP;
    IF st = 'firing' THEN
        agent_id := cur_agent_id; series_key := cur_key; pending_at := p_at; fired_at := f_at;
        resolved_at := NULL; peak_value := peak;
        RETURN NEXT;
    END IF;
END
$$;
COMMENT ON FUNCTION secumon.test_rule(text, text, float8, interval, timestamptz, timestamptz, text, float8, text, jsonb) IS 'Backtest: the alerts a rule would have raised over a past interval (resolved_at NULL: still firing at the end).';

CREATE FUNCTION secumon.test_rule(rule_id uuid, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (agent_id text, series_key text, pending_at timestamptz, fired_at timestamptz,
               resolved_at timestamptz, peak_value float8)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r secumon.alert_rules;
BEGIN
    SELECT * INTO r FROM secumon.alert_rules WHERE id = test_rule.rule_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert rule with id %', rule_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF r.kind <> 'threshold' THEN
        RAISE EXCEPTION 'only threshold rules can be backtested' USING ERRCODE = 'feature_not_supported';
    END IF;
    RETURN QUERY SELECT * FROM secumon.test_rule(r.metric_type || '.' || r.metric_name, r.condition, r.threshold,
                                                 r.duration, "from", "to", r.agent_id, r.recovery_threshold,
                                                 r.series_key, r.agent_labels);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Views for operators
-- ---------------------------------------------------------------------------------------------

CREATE VIEW secumon.active_alerts WITH (security_invoker = true) AS
SELECT al.id, al.rule_id, r.name AS rule_name, al.tenant_id, al.agent_id, al.series_key, al.state, al.severity,
       al.metric_name, r.condition, al.threshold, al.current_value, al.started_at, al.triggered_at,
       al.last_sample_at, al.acknowledged_at, al.acknowledged_by, al.ack_comment,
       secumon._is_silenced(al.tenant_id, al.agent_id, al.rule_id, al.severity, ag.labels) AS silenced,
       now() - coalesce(al.triggered_at, al.started_at) AS age
  FROM secumon.alerts al
  JOIN secumon.alert_rules r ON r.id = al.rule_id
  LEFT JOIN secumon.agents ag ON ag.agent_id = al.agent_id
 WHERE al.state IN ('pending', 'firing');
COMMENT ON VIEW secumon.active_alerts IS 'Pending and firing alerts, with whether a silence currently covers them.';

CREATE VIEW secumon.alert_history WITH (security_invoker = true) AS
SELECT al.id, al.rule_id, r.name AS rule_name, al.tenant_id, al.agent_id, al.series_key, al.state, al.severity,
       al.metric_name, al.threshold, al.current_value, al.started_at, al.triggered_at, al.resolved_at,
       al.acknowledged_at, al.acknowledged_by, al.ack_comment,
       coalesce(al.resolved_at, now()) - coalesce(al.triggered_at, al.started_at) AS duration,
       al.triggered_at IS NOT NULL AS fired
  FROM secumon.alerts al
  JOIN secumon.alert_rules r ON r.id = al.rule_id;
COMMENT ON VIEW secumon.alert_history IS 'Every alert episode, including those that resolved while pending (fired = false).';

CREATE VIEW secumon.alert_rule_status WITH (security_invoker = true) AS
SELECT r.id, r.name, r.tenant_id, r.kind, r.enabled,
       CASE WHEN r.enabled THEN coalesce(e.failed_at, s.last_cycle_at) END AS last_evaluated_at,
       CASE WHEN r.enabled AND e.rule_id IS NULL THEN s.last_cycle_ms END AS last_evaluation_ms,
       e.error AS last_error, e.failed_at AS last_error_at,
       (SELECT count(*) FROM secumon.alerts a WHERE a.rule_id = r.id AND a.state = 'pending') AS pending,
       (SELECT count(*) FROM secumon.alerts a WHERE a.rule_id = r.id AND a.state = 'firing') AS firing
  FROM secumon.alert_rules r
  LEFT JOIN secumon._alert_rule_errors e ON e.rule_id = r.id
 CROSS JOIN secumon._alert_engine_state s;
COMMENT ON VIEW secumon.alert_rule_status IS 'Per rule: when it was last evaluated, how long the pass took, its last error, active alerts.';

-- ---------------------------------------------------------------------------------------------
-- Tenancy and privileges
-- ---------------------------------------------------------------------------------------------

-- Rules and silences: users (not readonly) manage their tenant's; alerts and their events are
-- written only by the engine and the operator functions above.
SELECT secumon._enable_tenant_rls('secumon.alert_rules');
SELECT secumon._enable_tenant_rls('secumon.silences');
SELECT secumon._enable_tenant_rls('secumon.alerts', admin_only_write => true);
SELECT secumon._enable_tenant_rls('secumon.alert_events', admin_only_write => true);
-- A rule's last error is visible with the rule.
ALTER TABLE secumon._alert_rule_errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY visible_rules ON secumon._alert_rule_errors USING (rule_id IN (SELECT r.id FROM secumon.alert_rules r));

GRANT SELECT ON secumon.metric_catalog, secumon._alert_rule_errors, secumon._alert_engine_state,
                secumon.active_alerts, secumon.alert_history, secumon.alert_rule_status
   TO secumon_web, secumon_reader, secumon_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON secumon.alert_rules, secumon.silences TO secumon_admin;
-- Clients choose no ids nor default keys: a unique violation on one would tell them that
-- another tenant's row holds it.
GRANT SELECT, DELETE ON secumon.alert_rules, secumon.silences TO secumon_web;
GRANT INSERT (tenant_id, name, description, kind, metric_type, metric_name, agent_id, agent_labels, series_key,
              condition, threshold, recovery_threshold, duration, no_data_after, severity, repeat_interval, enabled,
              series_labels),
      UPDATE (tenant_id, name, description, kind, metric_type, metric_name, agent_id, agent_labels, series_key,
              condition, threshold, recovery_threshold, duration, no_data_after, severity, repeat_interval, enabled,
              series_labels)
   ON secumon.alert_rules TO secumon_web;
GRANT INSERT (tenant_id, agent_id, rule_id, severity, agent_labels, starts_at, ends_at, created_by, comment),
      UPDATE (tenant_id, agent_id, rule_id, severity, agent_labels, starts_at, ends_at, created_by, comment)
   ON secumon.silences TO secumon_web;
GRANT SELECT ON secumon.alerts, secumon.alert_events TO secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.ack_alert(uuid, text),
                          secumon.silence(interval, text, text, uuid, text, jsonb, timestamptz, text),
                          secumon.expire_silence(uuid)
   TO secumon_web, secumon_admin;
-- Helpers that run as the caller (in views and backtests).
GRANT EXECUTE ON FUNCTION secumon._is_silenced(text, text, uuid, text, jsonb),
                          secumon._breaches(text, float8, float8), secumon._recovered(text, float8, float8, float8),
                          secumon._validate_rule(text, text, text, text, jsonb, text, float8, float8, interval, interval, text, interval),
                          secumon._rule_error(text, text, text), secumon._check_agent_id(text),
                          secumon._alert_samples_query(text, text, text),
                          secumon._layout_positions(text[], boolean), secumon._counter_series(text, text),
                          secumon._is_counter(text, text, text)
   TO secumon_web, secumon_reader, secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.test_rule(text, text, float8, interval, timestamptz, timestamptz, text, float8, text, jsonb),
                          secumon.test_rule(uuid, timestamptz, timestamptz)
   TO secumon_web, secumon_reader, secumon_admin;
