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
