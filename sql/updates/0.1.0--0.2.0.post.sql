-- 0.1.0 -> 0.2.0, after the 0.2.0 definitions exist: build every partition's own indexes.
-- metric_samples' partitions had their unique (agent_key, time) index already and keep it.
-- This rebuilds the other indexes of every day kept, under an exclusive lock on each table.
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

-- Oracles: a tenant sees the layouts and series its own agents use (sql/series.sql).
-- (Their policies come with the 0.2.0 definitions.)
SELECT secumon._rls_prepare('secumon.metric_layouts');
SELECT secumon._rls_prepare('secumon.metric_series');
-- secumon.jwt_secret stored with ALTER ROLE/DATABASE ... SET is readable by every role and is
-- no longer applied: say so now, not only in each session's warnings.
DO $jwt_secret$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) AS c
                WHERE c LIKE 'secumon.jwt_secret=%' AND c <> 'secumon.jwt_secret=') THEN
        RAISE WARNING 'secumon.jwt_secret is stored with ALTER ROLE or ALTER DATABASE ... SET, where every role can read it; SecuMon no longer uses it from there'
            USING HINT = 'Remove it (ALTER ROLE ... RESET secumon.jwt_secret / ALTER DATABASE ... RESET secumon.jwt_secret), choose a new secret and set that with ALTER SYSTEM SET secumon.jwt_secret = ''...''; SELECT pg_reload_conf();';
    END IF;
END
$jwt_secret$;

-- The probe rules every fresh installation has (sql/alerting.sql). A rule of the same name
-- already in the default tenant keeps its place.
INSERT INTO secumon.alert_rules (default_key, name, description, metric_type, metric_name, condition, threshold, duration, severity) VALUES
    ('probe_target_down', 'Probe Target Down', 'A probed target has not answered as expected for 1 minute', 'probe', 'up', 'lt', 1, '1 minute', 'critical'),
    ('tls_certificate_expiring', 'TLS Certificate Expiring', 'A probed TLS certificate expires within 14 days', 'probe', 'tls_cert_days_left', 'lt', 14, '0', 'warning')
ON CONFLICT DO NOTHING;

-- Auto-registration (sql/enroll.sql): row-level security of its tables, then their privileges
-- as sql/enroll.sql leaves them (the helper grants SELECT on the whole table).
SELECT secumon._enable_tenant_rls('secumon.enrollment_tokens', admin_only_write => true, admin_only_read => true);
SELECT secumon._enable_tenant_rls('secumon.enrollments', admin_only_write => true, admin_only_read => true);
REVOKE ALL ON secumon.enrollment_tokens FROM secumon_web, secumon_reader, secumon_admin;
GRANT SELECT (id, tenant_id, labels, created_by, created_at, expires_at, max_uses, uses, revoked_at, agent_id)
   ON secumon.enrollment_tokens TO secumon_web, secumon_admin;
GRANT DELETE ON secumon.enrollment_tokens TO secumon_admin;
REVOKE ALL ON secumon.enrollments FROM secumon_admin;
GRANT SELECT, UPDATE (labels) ON secumon.enrollments TO secumon_admin;

-- The definitions above give secumon.metrics its plain-backend form; a database on the
-- timescaledb backend gets its own (sql/series.sql). A no-op on the partitions backend.
SELECT secumon._metrics_view_for_backend();
