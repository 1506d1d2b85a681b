-- Least privilege: nothing is granted to PUBLIC; each SecuMon role gets exactly what it needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA secumon FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA secumon FROM PUBLIC;
REVOKE ALL ON SCHEMA secumon_partitions FROM PUBLIC;

GRANT USAGE ON SCHEMA secumon TO secumon_admin, secumon_reader, secumon_agent;

-- Agents: two functions, no table access at all.
GRANT EXECUTE ON FUNCTION secumon.register_agent(text, text, text, text, jsonb) TO secumon_agent;
GRANT EXECUTE ON FUNCTION secumon.ingest(text, timestamptz, text[], float8[], jsonb, jsonb, jsonb) TO secumon_agent;
GRANT EXECUTE ON FUNCTION secumon.agent_series(text) TO secumon_agent;

-- Readers: the public relations and read-only helpers.
GRANT USAGE ON SCHEMA secumon_partitions TO secumon_reader, secumon_admin;
GRANT SELECT ON secumon.agents, secumon.tenants, secumon.metric_layouts, secumon.metric_samples,
                secumon.metrics, secumon.disk_metrics, secumon.network_metrics, secumon.process_metrics,
                secumon.partitions, secumon.jobs, secumon.storage_policies
   TO secumon_reader, secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.health() TO secumon_reader, secumon_admin;
-- secumon.partitions calls it, with the rights of whoever reads the view.
GRANT EXECUTE ON FUNCTION secumon._hypertable_chunks() TO secumon_reader, secumon_admin;

-- Admins: manage agents, tenants, storage policies and jobs, back-fill metrics.
GRANT INSERT, UPDATE, DELETE ON secumon.agents, secumon.tenants, secumon.storage_policies TO secumon_admin;
GRANT INSERT ON secumon.metrics TO secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.register_agent(text, text, text, text, jsonb),
                          secumon.ingest(text, timestamptz, text[], float8[], jsonb, jsonb, jsonb),
                          secumon.run_job(text),
                          secumon.alter_job(text, interval, boolean, timestamptz)
   TO secumon_admin;

-- Notifications: channels hold secrets, so only admins see or change them; everyone else sees
-- what was sent (secumon.notification_history has no settings column).
REVOKE ALL ON secumon.notification_channels FROM secumon_reader, secumon_agent;
-- Only the columns notification_history shows (it runs with the caller's rights): readers
-- see what was sent through the view, not the outbox's delivery bookkeeping.
GRANT SELECT (notification_id, idempotency_key, channel_name, channel_type, event_id, alert_id, rule_id, tenant_id,
              agent_id, event, severity, event_at, status, attempts, created_at, next_attempt_at, last_attempt_at,
              sent_at, last_status, last_response, last_error, latency_ms, payload)
   ON secumon.notification_outbox TO secumon_reader, secumon_web;
GRANT SELECT, INSERT, UPDATE, DELETE ON secumon.notification_channels TO secumon_admin;
GRANT SELECT ON secumon.notification_outbox TO secumon_admin;
GRANT SELECT ON secumon.notification_history TO secumon_reader, secumon_web, secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.test_channel(text), secumon.retry_notification(bigint) TO secumon_admin;
-- Tenant admins manage their tenant's channels through the web role (the policy of
-- sql/notify.sql confines them). Not channel_id (they would pick ids the sequence hands out
-- later) nor managed_by (the notifier rewrites 'guc' channels with the operator's secrets).
GRANT SELECT, DELETE ON secumon.notification_channels TO secumon_web;
GRANT INSERT (name, type, settings, enabled, severities, rule_ids, tenant_ids, events),
      UPDATE (name, type, settings, enabled, severities, rule_ids, tenant_ids, events)
   ON secumon.notification_channels TO secumon_web;
GRANT EXECUTE ON FUNCTION secumon.test_channel(text) TO secumon_web;

-- Authentication (sql/auth.sql). Login and token functions serve every role that acts for
-- SecuMon users; the admin functions, which write, only the web role: the reader role stays
-- read-only whatever the identity of its sessions. The admin functions check inside who may
-- manage whom. The policy functions (identity, _rls_*) must be callable by anyone a table is
-- ever granted to.
GRANT USAGE ON SCHEMA secumon TO secumon_web;
-- The enrolling role (sql/enroll.sql) executes secumon.enroll() only.
GRANT USAGE ON SCHEMA secumon TO secumon_enroll;
GRANT EXECUTE ON FUNCTION secumon.current_user_id(), secumon.current_tenant(), secumon.current_role(),
                          secumon._rls_open(), secumon._rls_bypassed(), secumon._rls_may_write(boolean),
                          secumon._agent_key_visible(integer), secumon._agent_id_visible(text)
   TO PUBLIC;
GRANT EXECUTE ON FUNCTION secumon.login(text, text, inet), secumon.refresh(text, inet), secumon.logout(text),
                          secumon.verify_token(text), secumon.authenticate(text, boolean),
                          secumon.list_sessions(text)
   TO secumon_web, secumon_reader, secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.change_password(text, text),
                          secumon.create_user(text, text, text, text, text), secumon.set_user_role(text, text),
                          secumon.set_user_password(text, text), secumon.deactivate_user(text),
                          secumon.activate_user(text), secumon.revoke_sessions(text, uuid)
   TO secumon_web, secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.rotate_jwt_secret(), secumon.login_lockouts(), secumon.unlock_login(text, text)
   TO secumon_admin;
GRANT SELECT (id, username, email, role, tenant_id, active, created_at, updated_at, password_changed_at)
   ON secumon.users TO secumon_web, secumon_reader, secumon_admin;
GRANT SELECT ON secumon.metrics, secumon.metric_layouts TO secumon_web;
