-- Tenancy: row-level security on every table with tenant data, and the helpers later modules
-- call to secure theirs (docs/auth.md, "Threat model"). Users, tokens and keys are in
-- sql/auth.sql.


-- ---------------------------------------------------------------------------------------------
-- Row-level security
--
-- Who sees what (see docs/auth.md):
--   * superusers and roles with BYPASSRLS: everything (PostgreSQL's rule);
--   * members of secumon_admin: everything, through the policy secumon_operator;
--   * a session with a SecuMon identity (secumon.authenticate()): its tenant's rows; writes need
--     role user or admin (admin for admin-only tables); readonly never writes;
--   * any other session: nothing while secumon.auth_required is on (default), everything its
--     table privileges allow when it is off.
-- Policies call the identity functions through scalar subqueries, so each is evaluated once
-- per statement (an InitPlan), never once per row.

-- Enables and forces RLS on `tbl` and adds the operators' policy.
CREATE FUNCTION secumon._rls_prepare(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY secumon_operator ON %s TO secumon_admin USING (true) WITH CHECK (true)', tbl);
END
$$;

-- Tenant policies for a table whose rows carry their tenant in `tenant_column` (text, or
-- text[] for rows shared by several tenants: each of them reads such a row, but a tenant writes
-- only rows of its own alone, so that it never changes what another tenant relies on).
CREATE FUNCTION secumon._create_tenant_policies(tbl regclass, admin_only_write boolean, admin_only_read boolean,
                                                tenant_column name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    column_type regtype;
    own_tenant text;
    own_tenant_alone text;
    read_check text;
    write_check text;
BEGIN
    SELECT a.atttypid::regtype INTO column_type
      FROM pg_attribute AS a WHERE a.attrelid = tbl AND a.attname = tenant_column AND NOT a.attisdropped;
    IF column_type = 'text'::regtype THEN
        own_tenant := format('%I = (SELECT secumon.current_tenant())', tenant_column);
        own_tenant_alone := own_tenant;
    ELSIF column_type = 'text[]'::regtype THEN
        own_tenant := format('(SELECT secumon.current_tenant()) = ANY (%I)', tenant_column);
        own_tenant_alone := format('%I = ARRAY[(SELECT secumon.current_tenant())]', tenant_column);
    ELSE
        RAISE EXCEPTION '% has no text or text[] column %', tbl, quote_ident(tenant_column)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    read_check := CASE WHEN admin_only_read
                       THEN format('(%s AND (SELECT secumon._rls_may_write(true)))', own_tenant)
                       ELSE own_tenant END;
    write_check := format('(%s AND (SELECT secumon._rls_may_write(%L)))', own_tenant_alone, admin_only_write);
    PERFORM secumon._rls_prepare(tbl);
    EXECUTE format('CREATE POLICY secumon_tenant_select ON %s FOR SELECT USING ((SELECT secumon._rls_open()) OR %s)',
                   tbl, read_check);
    EXECUTE format('CREATE POLICY secumon_tenant_insert ON %s FOR INSERT WITH CHECK ((SELECT secumon._rls_open()) OR %s)',
                   tbl, write_check);
    EXECUTE format('CREATE POLICY secumon_tenant_update ON %s FOR UPDATE USING ((SELECT secumon._rls_open()) OR %s) '
                   'WITH CHECK ((SELECT secumon._rls_open()) OR %s)', tbl, write_check, write_check);
    EXECUTE format('CREATE POLICY secumon_tenant_delete ON %s FOR DELETE USING ((SELECT secumon._rls_open()) OR %s)',
                   tbl, write_check);
END
$$;

-- THE helper for tables with tenant data: one call at the end of a module's SQL file.
--   SELECT secumon._enable_tenant_rls('secumon.alert_rules');                       -- users write
--   SELECT secumon._enable_tenant_rls('secumon.notification_channels', true, true); -- admins only
-- It enables and forces RLS, adds the policies above, makes the tenant column default to the
-- session's tenant, and grants SELECT to secumon_web and secumon_reader. Write privileges
-- (INSERT, UPDATE, DELETE to secumon_web / secumon_admin) stay the module's own decision.
CREATE FUNCTION secumon._enable_tenant_rls(tbl regclass, admin_only_write boolean DEFAULT false,
                                           admin_only_read boolean DEFAULT false,
                                           tenant_column name DEFAULT 'tenant_id') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM secumon._create_tenant_policies(tbl, admin_only_write, admin_only_read, tenant_column);
    IF (SELECT a.atttypid FROM pg_attribute AS a WHERE a.attrelid = tbl AND a.attname = tenant_column) = 'text'::regtype THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT coalesce(secumon.current_tenant(), %L)',
                       tbl, tenant_column, 'default');
    END IF;
    EXECUTE format('GRANT SELECT ON %s TO secumon_web, secumon_reader', tbl);
END
$$;

-- The helper for tables whose rows belong to an agent (metrics, rollups): a row is visible when
-- its agent (by agent_id or agent_key) belongs to the session's tenant — a hash lookup per row
-- (secumon._agent_key_visible / _agent_id_visible), which keeps the superuser's plans (index scans per agent).
-- Only operators and SECURITY DEFINER write paths (secumon.ingest()) write these tables.
CREATE FUNCTION secumon._enable_agent_rls(tbl regclass, agent_column name DEFAULT 'agent_id') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind "char";
    relname name;
    visible text := format('secumon.%I(%I)', '_' || agent_column || '_visible', agent_column);
BEGIN
    IF agent_column NOT IN ('agent_id', 'agent_key') THEN
        RAISE EXCEPTION 'agent_column must be agent_id or agent_key, not %', quote_ident(agent_column)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.relkind, c.relname INTO kind, relname FROM pg_class c WHERE c.oid = tbl;
    IF kind = 'v' THEN
        -- The timescaledb backend (sql/schema.sql): the view of the hypertable filters as the
        -- policies below do. It reads as its owner, so no client needs any right on the
        -- hypertable or its chunks; security_barrier keeps a caller's functions from seeing
        -- rows before the filter has run. The trigger stands for the policies' WITH CHECK.
        EXECUTE format('CREATE OR REPLACE VIEW %s WITH (security_barrier = true) AS SELECT * FROM secumon_partitions.%I '
                       'WHERE (SELECT secumon._rls_open() OR secumon._rls_bypassed()) OR %s', tbl, relname, visible);
        EXECUTE format('CREATE TRIGGER secumon_tenant_writes BEFORE INSERT OR UPDATE ON secumon_partitions.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION secumon._refuse_tenant_writes()', relname);
    ELSE
        PERFORM secumon._rls_prepare(tbl);
        EXECUTE format('CREATE POLICY secumon_agent_tenant ON %s USING ((SELECT secumon._rls_open()) OR %s) '
                       'WITH CHECK ((SELECT secumon._rls_open()))', tbl, visible);
    END IF;
    EXECUTE format('GRANT SELECT ON %s TO secumon_web, secumon_reader', tbl);
END
$$;

-- Tenants: a session sees its own tenant; only operators change tenants.
SELECT secumon._create_tenant_policies('secumon.tenants', true, false, 'tenant_id');
GRANT SELECT ON secumon.tenants TO secumon_web;
-- Agents: a tenant's admins may relabel them; registration goes through secumon.register_agent().
SELECT secumon._enable_tenant_rls('secumon.agents', admin_only_write => true);
GRANT UPDATE (labels) ON secumon.agents TO secumon_web;
-- Metrics: through their agent.
SELECT secumon._enable_agent_rls('secumon.metric_samples', 'agent_key');
SELECT secumon._enable_agent_rls('secumon.disk_metrics');
SELECT secumon._enable_agent_rls('secumon.network_metrics');
SELECT secumon._enable_agent_rls('secumon.process_metrics');

-- Users: admins see their tenant's users, everyone else only themself. Changes go through the
-- admin functions; the password hash is not granted to anyone.
SELECT secumon._rls_prepare('secumon.users');
CREATE POLICY secumon_tenant_select ON secumon.users FOR SELECT USING (
    (SELECT secumon._rls_open())
    OR (tenant_id = (SELECT secumon.current_tenant())
        AND ((SELECT secumon._rls_may_write(true)) OR id = (SELECT secumon.current_user_id()))));
CREATE POLICY secumon_tenant_write ON secumon.users FOR ALL USING (
    (SELECT secumon._rls_open())
    OR (tenant_id = (SELECT secumon.current_tenant()) AND (SELECT secumon._rls_may_write(true))))
WITH CHECK (
    (SELECT secumon._rls_open())
    OR (tenant_id = (SELECT secumon.current_tenant()) AND (SELECT secumon._rls_may_write(true))));
-- Refresh tokens: those of the users one may see.
SELECT secumon._rls_prepare('secumon.refresh_tokens');
CREATE POLICY secumon_user_tokens ON secumon.refresh_tokens
USING ((SELECT secumon._rls_open()) OR user_id IN (SELECT u.id FROM secumon.users AS u))
WITH CHECK ((SELECT secumon._rls_open()));

-- The first signing key, made by the first login (secumon_pg/src/auth/keys.rs) rather than by
-- CREATE EXTENSION: a restored database then holds exactly the keys of its dump.
CREATE FUNCTION secumon._create_first_signing_key() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    LOCK TABLE secumon._jwt_keys IN SHARE ROW EXCLUSIVE MODE;  -- one first key, however many logins race
    IF NOT EXISTS (SELECT 1 FROM secumon._jwt_keys WHERE retired_at IS NULL) THEN
        INSERT INTO secumon._jwt_keys (kid, secret) SELECT k.kid, k.secret FROM secumon._generate_jwt_key() AS k;
    END IF;
END
$$;
