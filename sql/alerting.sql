-- Alerting: rules, alerts, transitions (alert_events), silences, acknowledgement, backtests.
--
-- The engine (secumon._evaluate_alerts, run by the "secumon alert engine" worker) reads only the
-- samples ingested since its previous cycle, keeps only the (agent, series) groups that pass the
-- loosest threshold of some rule or already have an active alert, and changes alert rows only
-- on transitions. A cycle in which nothing is in breach therefore costs one filtered scan of the
-- newly ingested rows, whatever the number of rules.

-- Series an alert rule may watch. cpu/memory/system series may also be any series an agent has
-- reported (secumon.metric_layouts); disk series are per filesystem, network per interface.
CREATE TABLE secumon.metric_catalog (
    metric_type text NOT NULL,
    metric_name text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('gauge', 'counter')),
    unit        text NOT NULL,
    description text NOT NULL,
    PRIMARY KEY (metric_type, metric_name)
);
COMMENT ON TABLE secumon.metric_catalog IS 'Known series. Counters are evaluated by alert rules as per-second rates. Custom series (metric_type custom) are not listed: a name ending in _total, _count, _sum or _bucket is a counter, any other a gauge.';
INSERT INTO secumon.metric_catalog VALUES
    ('cpu', 'usage_percent', 'gauge', 'percent', 'CPU busy time'),
    ('cpu', 'user_percent', 'gauge', 'percent', 'CPU time in user mode'),
    ('cpu', 'nice_percent', 'gauge', 'percent', 'CPU time in niced user mode'),
    ('cpu', 'system_percent', 'gauge', 'percent', 'CPU time in kernel mode'),
    ('cpu', 'idle_percent', 'gauge', 'percent', 'CPU idle time'),
    ('cpu', 'iowait_percent', 'gauge', 'percent', 'CPU time waiting for I/O'),
    ('cpu', 'irq_percent', 'gauge', 'percent', 'CPU time serving interrupts'),
    ('cpu', 'softirq_percent', 'gauge', 'percent', 'CPU time serving soft interrupts'),
    ('cpu', 'steal_percent', 'gauge', 'percent', 'CPU time stolen by the hypervisor'),
    ('cpu', 'load_avg_1', 'gauge', 'processes', 'Load average over 1 minute'),
    ('cpu', 'load_avg_5', 'gauge', 'processes', 'Load average over 5 minutes'),
    ('cpu', 'load_avg_15', 'gauge', 'processes', 'Load average over 15 minutes'),
    ('cpu', 'context_switches', 'counter', 'switches', 'Context switches since boot'),
    ('cpu', 'interrupts', 'counter', 'interrupts', 'Interrupts since boot'),
    ('cpu', 'cores', 'gauge', 'cores', 'Logical CPUs'),
    ('memory', 'usage_percent', 'gauge', 'percent', 'Memory in use (total - available)'),
    ('memory', 'total_bytes', 'gauge', 'bytes', 'Physical memory'),
    ('memory', 'used_bytes', 'gauge', 'bytes', 'Memory in use'),
    ('memory', 'available_bytes', 'gauge', 'bytes', 'Memory available for new work'),
    ('memory', 'free_bytes', 'gauge', 'bytes', 'Unused memory'),
    ('memory', 'cached_bytes', 'gauge', 'bytes', 'Page cache'),
    ('memory', 'buffers_bytes', 'gauge', 'bytes', 'Buffers'),
    ('memory', 'swap_total_bytes', 'gauge', 'bytes', 'Swap size'),
    ('memory', 'swap_used_bytes', 'gauge', 'bytes', 'Swap in use'),
    ('memory', 'swap_free_bytes', 'gauge', 'bytes', 'Swap free'),
    ('memory', 'swap_usage_percent', 'gauge', 'percent', 'Swap in use'),
    ('system', 'uptime_seconds', 'gauge', 'seconds', 'Time since boot'),
    ('system', 'boot_time', 'gauge', 'unix seconds', 'Boot time'),
    ('system', 'processes_total', 'gauge', 'processes', 'Processes'),
    ('system', 'processes_running', 'gauge', 'processes', 'Running processes'),
    ('system', 'processes_sleeping', 'gauge', 'processes', 'Sleeping processes'),
    ('system', 'processes_idle', 'gauge', 'processes', 'Idle kernel threads'),
    ('system', 'processes_stopped', 'gauge', 'processes', 'Stopped processes'),
    ('system', 'processes_zombie', 'gauge', 'processes', 'Zombie processes'),
    ('system', 'threads_total', 'gauge', 'threads', 'Threads'),
    ('disk', 'usage_percent', 'gauge', 'percent', 'Filesystem space in use'),
    ('disk', 'inodes_usage_percent', 'gauge', 'percent', 'Filesystem inodes in use'),
    ('disk', 'total_bytes', 'gauge', 'bytes', 'Filesystem size'),
    ('disk', 'used_bytes', 'gauge', 'bytes', 'Filesystem space in use'),
    ('disk', 'free_bytes', 'gauge', 'bytes', 'Filesystem space free'),
    ('disk', 'inodes_total', 'gauge', 'inodes', 'Filesystem inodes'),
    ('disk', 'inodes_used', 'gauge', 'inodes', 'Filesystem inodes in use'),
    ('disk', 'read_bytes', 'counter', 'bytes', 'Bytes read (rules see bytes/s)'),
    ('disk', 'write_bytes', 'counter', 'bytes', 'Bytes written (rules see bytes/s)'),
    ('disk', 'read_ops', 'counter', 'operations', 'Reads (rules see reads/s)'),
    ('disk', 'write_ops', 'counter', 'operations', 'Writes (rules see writes/s)'),
    ('network', 'bytes_sent', 'counter', 'bytes', 'Bytes sent (rules see bytes/s)'),
    ('network', 'bytes_recv', 'counter', 'bytes', 'Bytes received (rules see bytes/s)'),
    ('network', 'packets_sent', 'counter', 'packets', 'Packets sent (rules see packets/s)'),
    ('network', 'packets_recv', 'counter', 'packets', 'Packets received (rules see packets/s)'),
    ('network', 'errors_in', 'counter', 'errors', 'Receive errors (rules see errors/s)'),
    ('network', 'errors_out', 'counter', 'errors', 'Transmit errors (rules see errors/s)'),
    ('network', 'drops_in', 'counter', 'packets', 'Received packets dropped (rules see drops/s)'),
    ('network', 'drops_out', 'counter', 'packets', 'Sent packets dropped (rules see drops/s)'),
    -- The agent's probes (docs/agent-inputs.md); labels probe (http, tcp, icmp) and target.
    ('probe', 'up', 'gauge', 'boolean', 'Target answered as expected (1) or not (0)'),
    ('probe', 'duration_seconds', 'gauge', 'seconds', 'Time the probe took (HTTP: to the last byte; TCP: connect)'),
    ('probe', 'http_status_code', 'gauge', 'status', 'HTTP status code of the answer'),
    ('probe', 'tls_cert_days_left', 'gauge', 'days', 'Days until the TLS certificate expires (negative: expired)'),
    ('probe', 'rtt_seconds', 'gauge', 'seconds', 'ICMP echo: mean round-trip time of the replies'),
    ('probe', 'packet_loss_percent', 'gauge', 'percent', 'ICMP echo: requests without a reply');
SELECT pg_catalog.pg_extension_config_dump('secumon.metric_catalog', '');

-- Whether alert rules see a series' per-second rate: the catalog's kind, or for a custom series
-- the OpenMetrics naming rule (counters end in _total; a histogram's _bucket, _sum and _count
-- count too).
-- `catalog_kind` is the series' metric_catalog.kind (NULL when not listed). Plain SQL without a
-- subquery, so that a statement joining the catalog itself gets it inlined.
CREATE FUNCTION secumon._is_counter(catalog_kind text, metric_type text, metric_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(catalog_kind = 'counter', metric_type = 'custom' AND metric_name ~ '(_total|_count|_sum|_bucket)$');

CREATE FUNCTION secumon._counter_series(metric_type text, metric_name text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT secumon._is_counter((SELECT c.kind FROM secumon.metric_catalog c
                             WHERE c.metric_type = _counter_series.metric_type AND c.metric_name = _counter_series.metric_name),
                           metric_type, metric_name)
$$;
CREATE TRIGGER metric_catalog_merge_default BEFORE INSERT ON secumon.metric_catalog
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('metric_type', 'metric_name');

CREATE TABLE secumon.alert_rules (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          text NOT NULL DEFAULT 'default' REFERENCES secumon.tenants ON UPDATE CASCADE,
    name               text NOT NULL,
    description        text,
    kind               text NOT NULL DEFAULT 'threshold',
    metric_type        text,
    metric_name        text,
    agent_id           text,
    agent_labels       jsonb NOT NULL DEFAULT '{}',
    series_key         text,
    condition          text,
    threshold          float8,
    recovery_threshold float8,
    duration           interval NOT NULL DEFAULT '0',
    no_data_after      interval,
    severity           text NOT NULL DEFAULT 'warning',
    repeat_interval    interval,
    enabled            boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    default_key        text UNIQUE,
    series_labels      jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE secumon.alert_rules IS 'Alert rules. kind threshold: metric condition threshold held for duration; kind no_data: agent silent for no_data_after.';
COMMENT ON COLUMN secumon.alert_rules.agent_id IS 'NULL: every agent of the tenant (optionally narrowed by agent_labels).';
COMMENT ON COLUMN secumon.alert_rules.series_key IS 'NULL: every filesystem / interface; else only this mountpoint or interface.';
COMMENT ON COLUMN secumon.alert_rules.recovery_threshold IS 'Hysteresis: a firing alert resolves only once the value is back beyond this threshold.';
COMMENT ON COLUMN secumon.alert_rules.default_key IS 'Set on the default rules CREATE EXTENSION makes (e.g. high_cpu_usage); a restored dump merges into them by it.';
COMMENT ON COLUMN secumon.alert_rules.series_labels IS 'Custom and probe series: only label sets containing these labels ({"code": "500"}); {} every label set. Each label set alerts on its own.';
COMMENT ON COLUMN secumon.alert_rules.repeat_interval IS 'Re-notify a still-firing, unacknowledged alert this often (NULL: never).';

CREATE TABLE secumon.alerts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id          uuid NOT NULL REFERENCES secumon.alert_rules ON DELETE CASCADE,
    tenant_id        text NOT NULL,
    agent_id         text NOT NULL,
    series_key       text NOT NULL DEFAULT '',
    state            text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    severity         text NOT NULL,
    metric_name      text NOT NULL,
    threshold        float8,
    current_value    float8,
    started_at       timestamptz NOT NULL,
    triggered_at     timestamptz,
    resolved_at      timestamptz,
    last_sample_at   timestamptz,
    last_notified_at timestamptz,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    ack_comment      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE secumon.alerts IS 'One row per alert episode: pending (condition holds, duration not reached), firing, resolved.';
COMMENT ON COLUMN secumon.alerts.metric_name IS 'Series the rule watches, "<type>.<name>" (agent.no_data for no-data rules).';
COMMENT ON COLUMN secumon.alerts.current_value IS 'Value at the last transition.';
COMMENT ON COLUMN secumon.alerts.started_at IS 'Time of the first sample of the breach (pending since).';
-- At most one active episode per rule and series: a restart can neither lose nor duplicate one.
CREATE UNIQUE INDEX alerts_one_active ON secumon.alerts (rule_id, agent_id, series_key)
    WHERE state IN ('pending', 'firing');
CREATE INDEX alerts_firing ON secumon.alerts (rule_id) WHERE state = 'firing';
CREATE INDEX alerts_agent_started ON secumon.alerts (agent_id, started_at);

CREATE TABLE secumon.alert_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id   uuid NOT NULL,
    rule_id    uuid NOT NULL,
    tenant_id  text NOT NULL,
    agent_id   text NOT NULL,
    series_key text NOT NULL DEFAULT '',
    event      text NOT NULL CHECK (event IN ('firing', 'resolved', 'repeat', 'acknowledged')),
    severity   text NOT NULL,
    silenced   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    payload    jsonb NOT NULL
);
COMMENT ON TABLE secumon.alert_events IS 'Every alert transition, written in the transaction that made it; notifications fan out from here.';
CREATE INDEX alert_events_alert ON secumon.alert_events (alert_id);
CREATE INDEX alert_events_created ON secumon.alert_events (created_at);

CREATE TABLE secumon.silences (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    text NOT NULL DEFAULT 'default' REFERENCES secumon.tenants ON UPDATE CASCADE,
    agent_id     text,
    rule_id      uuid REFERENCES secumon.alert_rules ON DELETE CASCADE,
    severity     text CHECK (severity IN ('critical', 'warning', 'info')),
    agent_labels jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(agent_labels) = 'object'),
    starts_at    timestamptz NOT NULL DEFAULT now(),
    ends_at      timestamptz NOT NULL,
    created_by   text NOT NULL DEFAULT session_user,
    comment      text NOT NULL CHECK (length(btrim(comment)) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT silences_ends_after_start CHECK (ends_at > starts_at)
);
COMMENT ON TABLE secumon.silences IS 'Silences and maintenance windows: matching alerts stay visible but are not notified.';

-- Engine bookkeeping.
CREATE TABLE secumon._alert_engine_state (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    watermark         timestamptz NOT NULL DEFAULT '-infinity',
    last_cycle_at     timestamptz,
    last_cycle_ms     float8,
    last_cycle_result text
);
INSERT INTO secumon._alert_engine_state DEFAULT VALUES;
SELECT pg_catalog.pg_extension_config_dump('secumon._alert_engine_state', '');
CREATE TRIGGER alert_engine_state_merge_default BEFORE INSERT ON secumon._alert_engine_state
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('singleton');

CREATE TABLE secumon._alert_rule_errors (
    rule_id    uuid PRIMARY KEY REFERENCES secumon.alert_rules ON DELETE CASCADE,
    error      text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    -- The engine watermark of the first failed cycle: the rule is evaluated again over every
    -- sample ingested since then until it succeeds, so no breach is lost to an error.
    retry_from timestamptz
);

SELECT pg_catalog.pg_extension_config_dump('secumon._alert_rule_errors', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.alert_rules', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.alerts', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.alert_events', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.alert_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('secumon.silences', '');

-- ---------------------------------------------------------------------------------------------
-- Validation
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION secumon._rule_error(message text, hint text DEFAULT NULL, errcode text DEFAULT '22023')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '%', message USING ERRCODE = errcode, HINT = coalesce(hint, '');
END
$$;

-- Raises a clear error for anything wrong in a rule definition; shared by the table trigger and
-- secumon.test_rule so a backtest accepts exactly what a rule accepts.
CREATE FUNCTION secumon._validate_rule(kind text, metric_type text, metric_name text, agent_id text,
                                       agent_labels jsonb, condition text, threshold float8,
                                       recovery_threshold float8, duration interval, no_data_after interval,
                                       severity text, repeat_interval interval)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF kind IS NULL OR kind NOT IN ('threshold', 'no_data') THEN
        PERFORM secumon._rule_error(format('unknown rule kind %s', coalesce(quote_literal(kind), 'NULL')),
                                    'kind is threshold or no_data.');
    END IF;
    IF severity IS NULL OR severity NOT IN ('critical', 'warning', 'info') THEN
        PERFORM secumon._rule_error(format('unknown severity %s', coalesce(quote_literal(severity), 'NULL')),
                                    'severity is critical, warning or info.');
    END IF;
    IF agent_id IS NOT NULL THEN
        PERFORM secumon._check_agent_id(agent_id);
    END IF;
    IF agent_labels IS NULL OR jsonb_typeof(agent_labels) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(agent_labels) WHERE jsonb_typeof(value) <> 'string') THEN
        PERFORM secumon._rule_error('agent_labels must be a JSON object of strings',
                                    'For example {"env": "prod"}; {} matches every agent.');
    END IF;
    IF duration IS NULL OR duration < interval '0' THEN
        PERFORM secumon._rule_error(format('duration must be zero or positive, got %s', coalesce(duration::text, 'NULL')));
    END IF;
    IF repeat_interval IS NOT NULL AND repeat_interval < interval '1 second' THEN
        PERFORM secumon._rule_error(format('repeat_interval must be at least 1 second, got %s', repeat_interval),
                                    'Use NULL to notify only once per episode.');
    END IF;

    IF kind = 'no_data' THEN
        IF no_data_after IS NULL OR no_data_after < interval '1 second' THEN
            PERFORM secumon._rule_error('a no_data rule needs no_data_after of at least 1 second',
                                        'For example no_data_after => ''5 minutes''.');
        END IF;
        RETURN;
    END IF;

    IF condition IS NULL OR condition NOT IN ('gt', 'gte', 'lt', 'lte', 'eq') THEN
        PERFORM secumon._rule_error(format('unknown condition %s', coalesce(quote_literal(condition), 'NULL')),
                                    'condition is gt, gte, lt, lte or eq.');
    END IF;
    IF threshold IS NULL OR threshold IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN
        PERFORM secumon._rule_error(format('threshold must be a finite number, got %s', coalesce(threshold::text, 'NULL')));
    END IF;
    IF recovery_threshold IS NOT NULL THEN
        IF recovery_threshold IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN
            PERFORM secumon._rule_error('recovery_threshold must be a finite number');
        END IF;
        IF condition = 'eq' THEN
            PERFORM secumon._rule_error('recovery_threshold cannot be used with condition eq');
        END IF;
        IF condition IN ('gt', 'gte') AND recovery_threshold > threshold
           OR condition IN ('lt', 'lte') AND recovery_threshold < threshold THEN
            PERFORM secumon._rule_error(
                format('recovery_threshold %s is on the firing side of threshold %s', recovery_threshold, threshold),
                'For gt/gte it must be at most the threshold, for lt/lte at least the threshold.');
        END IF;
    END IF;
    IF metric_type IS NULL OR metric_name IS NULL THEN
        PERFORM secumon._rule_error('metric_type and metric_name are required for a threshold rule');
    END IF;
    IF metric_type = 'custom' THEN
        -- The name as a series name has it (labels are chosen with series_labels).
        IF (SELECT p.problem IS NOT NULL OR p.metric_name IS DISTINCT FROM _validate_rule.metric_name
              FROM secumon._parse_series('custom.' || metric_name) AS p) IS NOT FALSE THEN
            PERFORM secumon._rule_error(format('invalid custom metric name %s', quote_literal(left(metric_name, 300))),
                                        'A custom metric is named like a Prometheus metric, e.g. app_queue_depth or app.http_requests_total; select labels with series_labels.');
        END IF;
        RETURN;  -- a rule may watch a custom series before the first sample arrives
    END IF;
    IF NOT EXISTS (SELECT 1 FROM secumon.metric_catalog c WHERE c.metric_type = _validate_rule.metric_type
                                                          AND c.metric_name = _validate_rule.metric_name)
       AND NOT (metric_type IN ('cpu', 'memory', 'system')
                AND EXISTS (SELECT 1 FROM secumon.metric_layouts l
                             WHERE (metric_type || '.' || metric_name) = ANY (l.series)
                               -- Runs with the owner's rights (the trigger is SECURITY DEFINER):
                               -- a series only another tenant reports must look unknown.
                               AND (secumon._rls_open() OR secumon._caller_is_operator()
                                    OR secumon._layout_id_visible(l.layout_id)))) THEN
        PERFORM secumon._rule_error(format('unknown metric %s.%s', metric_type, metric_name),
                                    'SELECT metric_type, metric_name FROM secumon.metric_catalog lists the known series.');
    END IF;
END
$$;

CREATE FUNCTION secumon._alert_rules_validate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.name IS NULL OR length(btrim(NEW.name)) = 0 OR length(NEW.name) > 200 THEN
        PERFORM secumon._rule_error('a rule needs a name of 1 to 200 characters');
    END IF;
    PERFORM secumon._validate_rule(NEW.kind, NEW.metric_type, NEW.metric_name, NEW.agent_id, NEW.agent_labels,
                                   NEW.condition, NEW.threshold, NEW.recovery_threshold, NEW.duration,
                                   NEW.no_data_after, NEW.severity, NEW.repeat_interval);
    IF NEW.series_labels IS NULL OR jsonb_typeof(NEW.series_labels) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(NEW.series_labels) e
                   WHERE jsonb_typeof(e.value) <> 'string' OR e.key !~ '^[a-zA-Z_][a-zA-Z0-9_]{0,99}$') THEN
        PERFORM secumon._rule_error('series_labels must be a JSON object of strings keyed by label names',
                                    'For example {"code": "500"}; {} selects every label set.');
    END IF;
    IF NEW.series_labels <> '{}' AND NEW.kind = 'threshold' AND NEW.metric_type NOT IN ('custom', 'probe') THEN
        PERFORM secumon._rule_error('series_labels select custom and probe series; host series have no labels',
                                    'A filesystem or an interface is chosen with series_key.');
    END IF;
    IF NEW.kind = 'no_data' THEN
        NEW.metric_type := NULL;
        NEW.metric_name := NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN  -- a restore brings its own
            NEW.updated_at := now();
        END IF;
        DELETE FROM secumon._alert_rule_errors WHERE rule_id = NEW.id;  -- an edited rule gets a fresh chance
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER alert_rules_validate BEFORE INSERT OR UPDATE ON secumon.alert_rules
FOR EACH ROW EXECUTE FUNCTION secumon._alert_rules_validate();

CREATE FUNCTION secumon._silences_validate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.agent_id IS NOT NULL THEN
        PERFORM secumon._check_agent_id(NEW.agent_id);
    END IF;
    IF NEW.ends_at IS NULL OR NEW.starts_at IS NULL OR NEW.ends_at <= NEW.starts_at THEN
        PERFORM secumon._rule_error('a silence must end after it starts',
                                    'For example starts_at => now(), ends_at => now() + interval ''2 hours''.');
    END IF;
    IF NEW.comment IS NULL OR length(btrim(NEW.comment)) = 0 THEN
        PERFORM secumon._rule_error('a silence needs a comment saying why', NULL);
    END IF;
    -- Foreign keys ignore row-level security. The rule must be of the silence's tenant and one
    -- the writer may write (its own tenant's); any other, existing or not, is unknown alike.
    IF NEW.rule_id IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.rule_id IS DISTINCT FROM OLD.rule_id)
       AND NOT EXISTS (SELECT 1 FROM secumon.alert_rules r
                        WHERE r.id = NEW.rule_id AND r.tenant_id = NEW.tenant_id
                          AND secumon._tenant_writable(r.tenant_id)) THEN
        PERFORM secumon._rule_error(format('no alert rule with id %s in tenant "%s"', NEW.rule_id, NEW.tenant_id),
                                    'SELECT id, name FROM secumon.alert_rules lists the rules you may use.');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER silences_validate BEFORE INSERT OR UPDATE ON secumon.silences
FOR EACH ROW EXECUTE FUNCTION secumon._silences_validate();

-- Default rules of the seed, known by default_key: a restore merges the dumped rule (its id,
-- its edits) into the one CREATE EXTENSION made, and removes it again if it had been deleted.
INSERT INTO secumon.alert_rules (default_key, name, description, metric_type, metric_name, condition, threshold, duration, severity) VALUES
    ('high_cpu_usage', 'High CPU Usage', 'CPU usage above 90% for 5 minutes', 'cpu', 'usage_percent', 'gt', 90, '5 minutes', 'critical'),
    ('high_memory_usage', 'High Memory Usage', 'Memory usage above 85%', 'memory', 'usage_percent', 'gt', 85, '0', 'warning'),
    ('high_disk_usage', 'High Disk Usage', 'Filesystem usage above 90%', 'disk', 'usage_percent', 'gt', 90, '0', 'critical'),
    ('high_load_average', 'High Load Average', '5-minute load average above 10 for 3 minutes', 'cpu', 'load_avg_5', 'gt', 10, '3 minutes', 'warning'),
    ('probe_target_down', 'Probe Target Down', 'A probed target has not answered as expected for 1 minute', 'probe', 'up', 'lt', 1, '1 minute', 'critical'),
    ('tls_certificate_expiring', 'TLS Certificate Expiring', 'A probed TLS certificate expires within 14 days', 'probe', 'tls_cert_days_left', 'lt', 14, '0', 'warning');
CREATE TRIGGER alert_rules_merge_default BEFORE INSERT ON secumon.alert_rules
    FOR EACH ROW WHEN (NEW.default_key IS NOT NULL) EXECUTE FUNCTION secumon._merge_default_row('default_key');
CREATE TRIGGER alert_rules_remember_removed_default AFTER DELETE ON secumon.alert_rules
    FOR EACH ROW WHEN (OLD.default_key IS NOT NULL) EXECUTE FUNCTION secumon._remember_removed_default('default_key');

-- ---------------------------------------------------------------------------------------------
-- Samples as the engine sees them
-- ---------------------------------------------------------------------------------------------

-- Where the series of the families `families` ("<type>.<name>", labels aside) sit in each layout:
-- counters or the others. series_key is a custom or probe series' label part ('' for host
-- series), so that each label set is its own alert, as each filesystem is.
CREATE FUNCTION secumon._layout_positions(families text[], counters boolean)
RETURNS TABLE (layout_id integer, series text, series_key text, idx integer)
LANGUAGE sql STABLE AS $$
SELECT l.layout_id, f.series, f.series_key, pg_catalog.array_position(l.series_ids, f.series_id)
  FROM (SELECT ms.series_id, ms.metric_type || '.' || ms.metric_name AS series,
               CASE WHEN ms.labels = '{}' THEN '' ELSE substr(ms.series, strpos(ms.series, '{')) END AS series_key
          FROM secumon.metric_series ms
         WHERE (ms.metric_type, ms.metric_name) IN (SELECT split_part(x, '.', 1), substr(x, strpos(x, '.') + 1)
                                                      FROM unnest(families) AS x)
           AND secumon._counter_series(ms.metric_type, ms.metric_name) = counters) f
  -- the layouts holding each series (metric_layouts_series_ids), not every layout unnested
  JOIN secumon.metric_layouts l ON l.series_ids @> ARRAY[f.series_id]
$$;

-- SQL text of a query yielding (agent_key, series, series_key, time, value) for the series in $2
-- (text[]): rows of metric_samples (alias s) passing `metric_filter`, of disk_metrics (alias s,
-- agents alias a) passing `disk_filter`, and per-second rates of the disk and network counters
-- (alias s, agents alias a) computed from rows passing `counter_filter`, which may reach further
-- back than the others so that the first new sample has a predecessor.
CREATE FUNCTION secumon._alert_samples_query(metric_filter text, disk_filter text, counter_filter text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $q$
SELECT format($f$
    SELECT s.agent_key, ls.series, ls.series_key, s.time, s.vals[ls.idx] AS value
      FROM secumon._layout_positions($2, false) ls
      JOIN secumon.metric_samples s ON s.layout_id = ls.layout_id
     WHERE %1$s AND s.vals[ls.idx] IS NOT NULL
    UNION ALL
    SELECT a.agent_key, v.series, s.mountpoint, s.time, v.value
      FROM secumon.disk_metrics s
      JOIN secumon.agents a ON a.agent_id = s.agent_id
     CROSS JOIN LATERAL (VALUES ('disk.usage_percent', s.usage_percent),
                                ('disk.inodes_usage_percent', s.inodes_usage_percent),
                                ('disk.total_bytes', s.total_bytes::float8),
                                ('disk.used_bytes', s.used_bytes::float8),
                                ('disk.free_bytes', s.free_bytes::float8),
                                ('disk.inodes_total', s.inodes_total::float8),
                                ('disk.inodes_used', s.inodes_used::float8)) AS v(series, value)
     WHERE %2$s AND v.series = ANY ($2) AND v.value IS NOT NULL
    UNION ALL
    SELECT r.agent_key, r.series, r.series_key, r.time, r.value
      FROM (SELECT c.agent_key, c.series, c.series_key, c.time,
                   CASE WHEN c.time = lag(c.time) OVER w THEN NULL
                        -- a counter that went down was reset (reboot, wrap): count from zero
                        ELSE secumon._counter_delta_f(c.counter, lag(c.counter) OVER w)
                   END / extract(epoch FROM c.time - lag(c.time) OVER w) AS value
              FROM (SELECT a.agent_key, v.series, s.mountpoint AS series_key, s.time, v.counter
                      FROM secumon.disk_metrics s
                      JOIN secumon.agents a ON a.agent_id = s.agent_id
                     CROSS JOIN LATERAL (VALUES ('disk.read_bytes', s.read_bytes::float8),
                                                ('disk.write_bytes', s.write_bytes::float8),
                                                ('disk.read_ops', s.read_ops::float8),
                                                ('disk.write_ops', s.write_ops::float8)) AS v(series, counter)
                     WHERE %3$s AND v.series = ANY ($2)
                    UNION ALL
                    SELECT a.agent_key, v.series, s.interface, s.time, v.counter
                      FROM secumon.network_metrics s
                      JOIN secumon.agents a ON a.agent_id = s.agent_id
                     CROSS JOIN LATERAL (VALUES ('network.bytes_sent', s.bytes_sent::float8),
                                                ('network.bytes_recv', s.bytes_recv::float8),
                                                ('network.packets_sent', s.packets_sent::float8),
                                                ('network.packets_recv', s.packets_recv::float8),
                                                ('network.errors_in', s.errors_in::float8),
                                                ('network.errors_out', s.errors_out::float8),
                                                ('network.drops_in', s.drops_in::float8),
                                                ('network.drops_out', s.drops_out::float8)) AS v(series, counter)
                     WHERE %3$s AND v.series = ANY ($2)
                    UNION ALL
                    SELECT s.agent_key, ls.series, ls.series_key, s.time, s.vals[ls.idx]
                      FROM secumon._layout_positions($2, true) ls
                      JOIN (SELECT m.*, ma.agent_id FROM secumon.metric_samples m
                              JOIN secumon.agents ma ON ma.agent_key = m.agent_key) s ON s.layout_id = ls.layout_id
                     -- (a report without a value for the series is no sample of it: the rate
                     -- spans from the value before)
                     WHERE %3$s AND s.vals[ls.idx] IS NOT NULL) c
            WINDOW w AS (PARTITION BY c.agent_key, c.series, c.series_key ORDER BY c.time)) r
     WHERE r.value IS NOT NULL
$f$, metric_filter, disk_filter, counter_filter)
$q$;

-- The comparison of a rule, as SQL over columns v (value) and the rule alias r.
CREATE FUNCTION secumon._invalid_rule(rule_id uuid, what text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'rule % has an invalid %', rule_id, what USING ERRCODE = 'data_exception';
END
$$;

-- Whether a value breaches a rule's condition, and whether a firing alert's value has
-- recovered (back beyond recovery_threshold when set, else simply not breaching): the one
-- definition the engine and secumon.test_rule share. Plain SQL, so the planner inlines them.
CREATE FUNCTION secumon._breaches(condition text, value float8, threshold float8) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE condition WHEN 'gt' THEN value > threshold WHEN 'gte' THEN value >= threshold
                      WHEN 'lt' THEN value < threshold WHEN 'lte' THEN value <= threshold
                      ELSE value = threshold END
$$;

CREATE FUNCTION secumon._recovered(condition text, value float8, threshold float8, recovery_threshold float8)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT NOT secumon._breaches(condition, value, coalesce(recovery_threshold, threshold))
$$;

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

-- Evaluates the threshold rules `rule_ids` over the samples ingested after `since`.
-- Returns the number of transitions that produced events.
CREATE FUNCTION secumon._evaluate_threshold_rules(rule_ids uuid[], since timestamptz) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET max_parallel_workers_per_gather = 0
SET jit = off
AS $$
DECLARE
    counter_lookback constant interval := interval '10 minutes';
    has_counters boolean;
    metric_hot text;
    disk_hot text;
    hot_ids text;
    transitions_sql text;
    events integer;
    new_pairs bigint;
    lock_wait text;
    stats_target text;
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
        RETURN 0;
    END IF;
    ANALYZE _secumon_rules (id, series, tenant_id, agent_id, series_key, counter, labelled);
    SELECT bool_or(counter) INTO has_counters FROM _secumon_rules;

    -- 1. Agents worth a look. A sample can only start or continue a breach if it passes the
    --    loosest threshold of some rule on its series; that test is compiled into one predicate
    --    per source, so a cycle with nothing in breach reads the new rows once and keeps none.
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
        RETURN 0;
    END IF;
    ANALYZE _secumon_hot_agents;

    -- 2. The new samples of those agents, one row per series value. disk_metrics and
    --    network_metrics rows carry agent_id: they are filtered by it before the join that maps
    --    the few rows left to agent_key (not one agents lookup per new row).
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

    -- 3. Per (agent, series): range and ends of the new values.
    CREATE TEMP TABLE IF NOT EXISTS _secumon_groups ON COMMIT DROP AS
        SELECT agent_key, series, series_key, 0::float8 AS vmin, 0::float8 AS vmax, now() AS first_time,
               now() AS last_time, 0::float8 AS last_value FROM _secumon_batch WITH NO DATA;
    TRUNCATE _secumon_groups;
    INSERT INTO _secumon_groups
    SELECT agent_key, series, series_key, min(value), max(value), min(time), max(time),
           (array_agg(value ORDER BY time DESC))[1]
      FROM _secumon_batch GROUP BY 1, 2, 3;
    ANALYZE _secumon_groups;

    -- 4. Rule x group pairs. Most are decided by the range alone: every new value breaches
    --    ("all"), none does ("none"); only "mixed" pairs are looked at sample by sample.
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

    -- 5. Transitions, and their events written from the rows the transitions return.
    --    No active alert exists for the pairs opened here (the pairs were joined with them), so
    --    the insert runs without ON CONFLICT: a speculative insertion costs about a third more
    --    per row, which is most of a cycle that opens many alerts. Should an active alert appear
    --    meanwhile all the same (inserted by hand), the statement runs again, skipping it.
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

    -- 6. After a cycle that opened many alerts, statistics of secumon.alerts that still describe
    --    the table before it would make the next cycle's join with the active alerts quadratic
    --    (taken for a handful of rows, the planner scans them all once per pair): refresh them
    --    now rather than when autovacuum gets to it. Skipped while autovacuum holds the table.
    --    A sample of 3,000 rows (statistics target 10) gives the sizes the plans need at a tenth
    --    of the cost; autovacuum's next pass restores the usual precision.
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

-- ---------------------------------------------------------------------------------------------
-- Operator API
-- ---------------------------------------------------------------------------------------------

-- Who is acting: the SecuMon user when the session authenticated (secumon.authenticate), else NULL.
CREATE FUNCTION secumon._acting_user() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN (SELECT u.username FROM secumon.users u WHERE u.id = secumon.current_user_id());

-- The operator functions below are SECURITY DEFINER, so row-level security does not apply to
-- them: they apply it themselves, exactly as the tenant policies (sql/auth.sql) do for the
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
