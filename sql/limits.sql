-- Bounds on the JSON clients send: agent labels, report arrays, rule and silence selectors,
-- channel settings. One tenant's document is read by what every tenant shares (the alert
-- engine, the notifier, whose JSON library stops at 128 levels), so anything nested deeper than
-- 32 levels or larger than its byte limit is refused where it comes in, with SQLSTATE 54000.
-- Tables written only by SecuMon itself (alert events, the outbox) hold documents built from
-- these and need no check of their own.

CREATE FUNCTION secumon._max_json_depth() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 32;

-- Agent labels, and the label selectors of rules and silences.
CREATE FUNCTION secumon._max_labels_bytes() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 16384;

-- Notification channel settings (URLs, headers, a CA certificate...).
CREATE FUNCTION secumon._max_settings_bytes() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 65536;

-- Each of a report's disks, networks and processes arrays.
CREATE FUNCTION secumon._max_report_array_bytes() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 1048576;

-- The path that finds a value nested deeper than secumon._max_json_depth() levels: .**{n}
-- reaches the values n levels down, and one exists only below n nested containers.
CREATE FUNCTION secumon._json_too_deep() RETURNS jsonpath
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ('strict $.**{' || (secumon._max_json_depth() + 1)::text || '}')::jsonpath;

-- Whether `value` is within the bounds: NULL, or at most max_bytes and nested at most
-- secumon._max_json_depth() levels. Plain SQL without SET, so the planner inlines it (and folds
-- the path into a constant) where secumon.ingest tests a report's arrays on every call.
CREATE FUNCTION secumon._jsonb_within(value jsonb, max_bytes integer) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN value IS NULL
    OR (pg_catalog.pg_column_size(value) <= max_bytes
        AND NOT pg_catalog.jsonb_path_exists(value, secumon._json_too_deep()));

-- Raises 54000 unless `value` (named `what` in the message) is within the bounds of
-- secumon._jsonb_within, saying which one it exceeds.
CREATE FUNCTION secumon._check_jsonb(value jsonb, what text, max_bytes integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF secumon._jsonb_within(value, max_bytes) THEN
        RETURN;
    END IF;
    IF pg_column_size(value) > max_bytes THEN
        RAISE EXCEPTION '% is too large: % bytes, at most % are accepted', what, pg_column_size(value), max_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Send less: a few short labels, or fewer entries.';
    END IF;
    RAISE EXCEPTION '% is nested too deeply: at most % levels of objects and arrays are accepted', what, secumon._max_json_depth()
        USING ERRCODE = 'program_limit_exceeded',
              HINT = 'Flatten it, e.g. {"env": "prod", "dc": "fra1"}.';
END
$$;

-- BEFORE INSERT OR UPDATE trigger: TG_ARGV[0] names the jsonb column, TG_ARGV[1] the function
-- giving its byte limit. SECURITY DEFINER: the writing role need not execute the helpers.
CREATE FUNCTION secumon._bound_jsonb() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_bytes integer;
BEGIN
    EXECUTE format('SELECT %s()', TG_ARGV[1]::regproc) INTO max_bytes;
    PERFORM secumon._check_jsonb(to_jsonb(NEW) -> TG_ARGV[0], format('%s.%s', TG_TABLE_NAME, TG_ARGV[0]), max_bytes);
    RETURN NEW;
END
$$;

-- Named to fire before each table's own validation trigger (triggers fire in name order).
CREATE TRIGGER agents_bound_jsonb BEFORE INSERT OR UPDATE OF labels ON secumon.agents
    FOR EACH ROW EXECUTE FUNCTION secumon._bound_jsonb('labels', 'secumon._max_labels_bytes');
CREATE TRIGGER alert_rules_bound_jsonb BEFORE INSERT OR UPDATE OF agent_labels ON secumon.alert_rules
    FOR EACH ROW EXECUTE FUNCTION secumon._bound_jsonb('agent_labels', 'secumon._max_labels_bytes');
CREATE TRIGGER silences_bound_jsonb BEFORE INSERT OR UPDATE OF agent_labels ON secumon.silences
    FOR EACH ROW EXECUTE FUNCTION secumon._bound_jsonb('agent_labels', 'secumon._max_labels_bytes');
CREATE TRIGGER notification_channels_bound_jsonb BEFORE INSERT OR UPDATE OF settings ON secumon.notification_channels
    FOR EACH ROW EXECUTE FUNCTION secumon._bound_jsonb('settings', 'secumon._max_settings_bytes');
