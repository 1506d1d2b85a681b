-- Scheduled jobs: one row per job, run by the background worker named in `worker`.

CREATE TABLE secumon._jobs (
    job_name          text PRIMARY KEY,
    worker            text NOT NULL,
    function_name     regproc NOT NULL,
    description       text NOT NULL,
    schedule_interval interval NOT NULL CHECK (schedule_interval >= interval '1 second'),
    enabled           boolean NOT NULL DEFAULT true,
    next_run          timestamptz NOT NULL DEFAULT now(),
    last_run          timestamptz,
    last_duration     interval,
    last_success      timestamptz,
    last_result       text,
    last_error        text,
    last_error_at     timestamptz,
    runs              bigint NOT NULL DEFAULT 0,
    failures          bigint NOT NULL DEFAULT 0,
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- When set, runs stay on origin + k * schedule_interval (e.g. daily at 04:00) instead of
    -- drifting by each run's start delay; see secumon.set_retention_hour().
    schedule_origin   timestamptz,
    -- Set while the job gives way to a lock another session holds (secumon.maintenance_lock_timeout).
    waiting_since     timestamptz,
    -- The job function's one text argument (which rollup, which table), or NULL: it takes none.
    argument          text
);
SELECT pg_catalog.pg_extension_config_dump('secumon._jobs', '');
CREATE TRIGGER jobs_merge_default BEFORE INSERT ON secumon._jobs
    FOR EACH ROW EXECUTE FUNCTION secumon._merge_default_row('job_name');
COMMENT ON TABLE secumon._jobs IS 'Job schedule and run state; read it through secumon.jobs, change it with secumon.alter_job().';

INSERT INTO secumon._jobs (job_name, worker, function_name, description, schedule_interval) VALUES
    ('partition_upkeep', 'maintenance', 'secumon._partition_upkeep',
     'Creates daily partitions ahead of time and moves rows out of default partitions', '1 minute');

CREATE VIEW secumon.jobs AS
SELECT job_name, description, worker, schedule_interval, enabled,
       last_run, last_duration, last_success, last_result, last_error, last_error_at,
       next_run, runs, failures, consecutive_failures, waiting_since
FROM secumon._jobs
ORDER BY job_name;
COMMENT ON VIEW secumon.jobs IS 'Every scheduled job with its interval, last run, last success, last error and next run.';

-- Runs a job now and records the outcome; never raises for a failure of the job itself, so a
-- worker can run the next job. A failed job is retried after min(schedule_interval, backoff).
-- No job waits long for a lock: a job whose DDL would queue behind another session's lock (a
-- long dashboard query, pg_dump) would make every ingest queue behind it. After
-- secumon.maintenance_lock_timeout it gives way, says so in secumon.jobs (waiting_since) and
-- tries again a few seconds later. A failure is logged when it starts or changes, not on every retry.
CREATE FUNCTION secumon._run_job_recorded(job text) RETURNS text
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
        EXECUTE format('SELECT %s(%s)', j.function_name::text, coalesce(quote_literal(j.argument), '')) INTO result;
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

CREATE FUNCTION secumon.run_job(job_name text) RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN secumon._run_job_recorded(job_name);
COMMENT ON FUNCTION secumon.run_job(text) IS 'Runs a job now, records the outcome in secumon.jobs and returns "success: ..." or "failed: ...".';

CREATE FUNCTION secumon.alter_job(job_name text, schedule_interval interval DEFAULT NULL,
                                  enabled boolean DEFAULT NULL, next_run timestamptz DEFAULT NULL)
RETURNS SETOF secumon.jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF schedule_interval IS NOT NULL AND schedule_interval < interval '1 second' THEN
        RAISE EXCEPTION 'schedule_interval must be at least 1 second, got %', schedule_interval
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE secumon._jobs j
       SET schedule_interval = coalesce(alter_job.schedule_interval, j.schedule_interval),
           enabled = coalesce(alter_job.enabled, j.enabled),
           next_run = coalesce(alter_job.next_run,
                               CASE WHEN alter_job.schedule_interval IS NOT NULL
                                    THEN least(j.next_run, coalesce(j.last_run, now()) + alter_job.schedule_interval)
                                    ELSE j.next_run END)
     WHERE j.job_name = alter_job.job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown job "%"', alter_job.job_name
            USING ERRCODE = 'invalid_parameter_value', HINT = 'SELECT job_name FROM secumon.jobs lists the jobs.';
    END IF;
    RETURN QUERY SELECT * FROM secumon.jobs WHERE jobs.job_name = alter_job.job_name;
END
$$;
COMMENT ON FUNCTION secumon.alter_job(text, interval, boolean, timestamptz) IS 'Changes a job''s schedule_interval, enabled flag or next run.';

-- The one database SecuMon's workers serve (as pg_cron's cron.database_name).
CREATE FUNCTION secumon._workers_database() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
RETURN coalesce(nullif(current_setting('secumon.database', true), ''), 'postgres');

DO $served$
BEGIN
    IF secumon._workers_database() <> current_database() THEN
        RAISE WARNING 'no SecuMon worker serves database "%": secumon.database is "%"', current_database(), secumon._workers_database()
            USING DETAIL = 'Alert evaluation, notifications, partitions, rollups, compression and retention run only in the database named by secumon.database.',
                  HINT = format('Set secumon.database = %L in postgresql.conf and restart, or create the extension in database %L.',
                                current_database(), secumon._workers_database());
    END IF;
END
$served$;

-- The storage part of secumon.health(): the backend of each relation (docs/timescaledb.md).
-- PL/pgSQL: it reads the rollups, which sql/rollups.sql defines later.
CREATE FUNCTION secumon._storage_health() RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
RETURN (
WITH ts AS (SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS version,
                   secumon._timescaledb_license() AS license,
                   secumon._storage_backend('metric_samples') AS backend)
SELECT jsonb_build_object(
    'backend', ts.backend,
    'timescaledb_version', ts.version,
    'timescaledb_license', CASE WHEN ts.version IS NOT NULL THEN ts.license END,
    'relations', (SELECT jsonb_object_agg(sp.table_name, jsonb_build_object(
                         'backend', CASE WHEN sp.kind = 'raw' THEN secumon._storage_backend(sp.table_name)
                                         WHEN secumon._rollup_cagg(secumon._storage_table(sp.table_name)) IS NOT NULL
                                         THEN 'timescaledb continuous aggregate' ELSE 'partitions' END,
                         'compression', CASE WHEN sp.kind = 'rollup' OR sp.compress_after IS NULL THEN 'none'
                                             WHEN secumon._storage_backend(sp.table_name) = 'partitions' THEN 'secumon'
                                             WHEN ts.license = 'timescale' THEN 'timescaledb'
                                             ELSE 'none (TimescaleDB Apache license)' END,
                         'retention', sp.retention) ORDER BY sp.table_name)
                    FROM secumon.storage_policies sp),
    'warning', CASE WHEN ts.version IS NOT NULL AND ts.backend = 'partitions' THEN
                        'timescaledb is installed in this database, but SecuMon''s tables were created without it and stay on the partitions backend until SELECT secumon.adopt_timescaledb() moves them (docs/timescaledb.md)'
                    WHEN ts.backend = 'timescaledb' AND ts.license <> 'timescale' THEN
                        format('TimescaleDB runs under the %s license: chunks are not compressed', ts.license) END)
  FROM ts);
END
$$;

CREATE FUNCTION secumon.health() RETURNS jsonb
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
                        'since', a.backend_start,
                        -- Set while the worker gives way to a lock another session holds
                        -- (secumon.maintenance_lock_timeout); the server log names the holders.
                        'waiting_for_lock_since', lw.waiting_since) ORDER BY w.name)
                  FROM (SELECT DISTINCT worker_name AS name
                          FROM unnest(ARRAY['secumon maintenance', 'secumon alert engine', 'secumon notifier']) AS worker_name) w
                  LEFT JOIN pg_stat_activity a ON a.backend_type = w.name AND a.datname = current_database()
                  LEFT JOIN secumon._worker_lock_waits() lw ON lw.worker = w.name),
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
        'rows_in_default_partitions', (SELECT coalesce(sum(rows_estimate), 0) FROM secumon.partitions WHERE is_default)),
    'storage', secumon._storage_health()
)
$$;
COMMENT ON FUNCTION secumon.health() IS 'Extension version, background workers, jobs and data freshness as JSON.';

-- DROP / ALTER EXTENSION locks secumon._jobs exclusively before it locks any other object, and
-- every worker transaction locks it ACCESS SHARE first (secumon_pg/src/background.rs), so a worker
-- cycle and the command wait for each other instead of deadlocking. No client has any privilege
-- on _jobs (clients read the view secumon.jobs, which lets them lock it ACCESS SHARE at most), so
-- no client can hold a lock that keeps the workers waiting; 0.1.0 used an advisory lock, which
-- any session could take. It fires for any extension's DROP/ALTER (ddl_command_start cannot
-- tell which), hence SECURITY DEFINER; it acts only for an operator (a superuser or a member of
-- secumon_admin: only they can drop or change SecuMon), so that no other session can make the
-- workers wait with an open `DROP EXTENSION IF EXISTS ...`.
--
-- On the timescaledb backend a plain `DROP EXTENSION secumon` would fail: the hypertables'
-- chunks depend on them, and CASCADE would leave their compressed chunks behind. For exactly
-- that statement (the query is nothing else, and names this extension: unquoted in any case, or
-- quoted as "secumon") the chunks go first, in the same transaction: a DROP that fails after all
-- (not the owner, say) keeps them.
CREATE FUNCTION secumon._extension_guard() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped text;
    t text;
BEGIN
    IF NOT secumon._caller_is_operator() THEN
        RETURN;
    END IF;
    LOCK TABLE secumon._jobs IN ACCESS EXCLUSIVE MODE;
    IF TG_TAG <> 'DROP EXTENSION' OR secumon._storage_backend('metric_samples') <> 'timescaledb' THEN
        RETURN;
    END IF;
    dropped := substring(current_query() FROM '(?i)^\s*drop\s+extension\s+(?:if\s+exists\s+)?("[^"]*"|[a-z_][a-z0-9_$]*)(?:\s+(?:cascade|restrict))?\s*;?\s*$');
    IF dropped = '"secumon"' OR (left(dropped, 1) <> '"' AND lower(dropped) = 'secumon') THEN
        -- The continuous aggregates' views go with the extension (coarsest first: the hourly
        -- aggregate is built on the 5-minute one), their chunks first.
        FOR t IN SELECT r.storage_table FROM secumon.rollups r
                  WHERE secumon._rollup_cagg(r.storage_table) IS NOT NULL ORDER BY r.bucket_width DESC LOOP
            EXECUTE format('SELECT %I.drop_chunks(%L::regclass, older_than => now() + interval ''100 years'')',
                           secumon._timescaledb_schema(), format('secumon_partitions.%I', t || '_cagg'));
            EXECUTE format('ALTER EXTENSION secumon ADD VIEW secumon_partitions.%I', t || '_cagg');
            EXECUTE format('ALTER EXTENSION secumon ADD VIEW secumon_partitions.%I', t || '_partial');
            EXECUTE format('ALTER EXTENSION secumon ADD VIEW secumon_partitions.%I', t || '_direct');
        END LOOP;
        FOREACH t IN ARRAY secumon._raw_tables() LOOP
            EXECUTE format('SELECT %I.drop_chunks(%L::regclass, older_than => now() + interval ''100 years'')',
                           secumon._timescaledb_schema(), format('secumon_partitions.%I', t));
        END LOOP;
    END IF;
END
$$;
CREATE EVENT TRIGGER secumon_extension_guard ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'ALTER EXTENSION')
    EXECUTE FUNCTION secumon._extension_guard();
