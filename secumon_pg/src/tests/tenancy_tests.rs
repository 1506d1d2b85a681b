//! (One file of some 700 lines: every test here works on the same two-tenant world, and the
//! `CALLS` table below must name every function a client role may call.)
//!
//! In-database tests of tenant isolation through everything a client role may call: the
//! SECURITY DEFINER functions apply row-level security themselves, exactly as the policies do
//! for the same caller; a session without identity changes nothing while
//! `secumon.auth_required` is on; another tenant's objects look like missing ones; the reader
//! role is read-only whatever the identity; tenant admins manage their own channels. Each test
//! runs inside a transaction that is rolled back (see also auth_tests.rs and, across real
//! connections, tests/tests/tenancy.rs).
//!
//! Two tenants: acme (the caller) and globex (the victim), whose objects carry markers
//! ("gx-secret", 4242.5) that must never appear in what an acme or anonymous session reads.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::expect_sqlstate;
    use pgrx::prelude::*;
    use crate::tests::{count, error_of, lit, run, text};
    use serde_json::Value;

    /// What no session of another tenant (or without identity) may ever read.
    const MARKERS: [&str; 4] = ["gx-secret", "4242.5", "tn-gx-1", "globex"];
    const MISSING: &str = "00000000-0000-4000-8000-000000000404";






    /// The objects of both tenants, as the tests refer to them.
    struct World {
        acme_admin: String,
        acme_user: String,
        acme_readonly: String,
        acme_admin_id: String,
        acme_rule: String,
        globex_alert: String,
        globex_rule: String,
        globex_silence: String,
        globex_agent_key: i64,
        globex_layout_id: i64,
        globex_series_id: i64,
    }

    fn login(name: &str) -> String {
        text(&format!("SELECT token FROM secumon.login({}, 'password-of-{name}')", lit(name)))
    }

    /// acme: admin, user, readonly, an agent and a rule; globex: admin, user, a deactivated
    /// user, an agent with samples, a rule, a firing alert, a silence, a channel. Client roles
    /// tn_web (secumon_web) and tn_reader (secumon_reader). Runs as the test's superuser.
    fn world() -> World {
        run("INSERT INTO secumon.tenants (tenant_id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex')");
        run("CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$ \
             BEGIN EXECUTE q; RETURN 'ok'; \
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$");
        for (name, role, tenant) in [
            ("tn_acme_admin", "admin", "acme"),
            ("tn_acme_user", "user", "acme"),
            ("tn_acme_ro", "readonly", "acme"),
            ("tn_gx_admin", "admin", "globex"),
            ("tn_gx_user", "user", "globex"),
            ("tn_gx_off", "user", "globex"),
        ] {
            run(&format!(
                "SELECT secumon.create_user('{name}', 'password-of-{name}', '{role}', '{name}@gx-secret.example', '{tenant}')"
            ));
        }
        run("UPDATE secumon.users SET email = replace(email, 'gx-secret', 'acme') WHERE tenant_id = 'acme'");
        run("SELECT secumon.deactivate_user('tn_gx_off')");
        run("SELECT secumon.register_agent('tn-acme-1', 'acme-host'), \
                    secumon.register_agent('tn-gx-1', 'gx-secret-host', labels => '{\"team\": \"gx-secret-team\"}')");
        run("UPDATE secumon.agents SET tenant_id = 'acme' WHERE agent_id = 'tn-acme-1'");
        run("UPDATE secumon.agents SET tenant_id = 'globex' WHERE agent_id = 'tn-gx-1'");
        run("SELECT secumon.ingest('tn-gx-1', now() - interval '1 minute', \
                    ARRAY['cpu.usage_percent', 'cpu.context_switches', 'custom.gx_secret_queue{team=\"gx-secret\"}'], \
                    ARRAY[4242.5, 4242.5, 4242.5]::float8[], \
                    '[{\"device\": \"gx-secret-disk\", \"mountpoint\": \"/gx-secret\", \"usage_percent\": 4242.5}]', \
                    '[{\"interface\": \"gx-secret-if\", \"bytes_sent\": 4242}]', \
                    '[{\"pid\": 4242, \"name\": \"gx-secret-proc\", \"cpu_percent\": 4242.5}]')");
        let rule = |tenant: &str, name: &str| {
            text(&format!(
                "INSERT INTO secumon.alert_rules (tenant_id, name, metric_type, metric_name, condition, threshold) \
                 VALUES ('{tenant}', '{name}', 'cpu', 'usage_percent', 'gt', 90) RETURNING id::text"
            ))
        };
        let acme_rule = rule("acme", "acme rule");
        let globex_rule = rule("globex", "gx-secret-rule");
        let globex_alert = text(&format!(
            "INSERT INTO secumon.alerts (rule_id, tenant_id, agent_id, state, severity, metric_name, threshold, \
                                         current_value, started_at, triggered_at) \
             VALUES ('{globex_rule}', 'globex', 'tn-gx-1', 'firing', 'warning', 'cpu.usage_percent', 90, 4242.5, \
                     now(), now()) RETURNING id::text"
        ));
        let globex_silence = text(
            "INSERT INTO secumon.silences (tenant_id, agent_id, ends_at, comment) \
             VALUES ('globex', 'tn-gx-1', now() + interval '1 day', 'gx-secret-comment') RETURNING id::text",
        );
        run("INSERT INTO secumon.notification_channels (name, type, settings, tenant_ids, events) \
             VALUES ('tn-gx-hook', 'webhook', '{\"url\": \"http://127.0.0.1:9/gx-secret-hook\"}', '{globex}', \
                     '{firing,resolved,acknowledged}')");
        login("tn_gx_admin"); // a live session of globex's admin
        let globex_agent_key = count("SELECT agent_key::int8 FROM secumon.agents WHERE agent_id = 'tn-gx-1'");
        let globex_layout_id = count(&format!(
            "SELECT max(layout_id)::int8 FROM secumon.metric_samples WHERE agent_key = {globex_agent_key}"
        ));
        let globex_series_id = count("SELECT series_id::int8 FROM secumon.metric_series WHERE series = 'cpu.usage_percent'");
        run("CREATE ROLE tn_web NOLOGIN IN ROLE secumon_web");
        run("CREATE ROLE tn_reader NOLOGIN IN ROLE secumon_reader");
        World {
            acme_admin: login("tn_acme_admin"),
            acme_user: login("tn_acme_user"),
            acme_readonly: login("tn_acme_ro"),
            acme_admin_id: text("SELECT id::text FROM secumon.users WHERE username = 'tn_acme_admin'"),
            acme_rule,
            globex_alert,
            globex_rule,
            globex_silence,
            globex_agent_key,
            globex_layout_id,
            globex_series_id,
        }
    }

    /// Runs what follows as `role` (a member of secumon_web or secumon_reader) with the identity
    /// of `token` (None: no identity).
    fn become_(role: &str, token: Option<&str>) {
        run("RESET ROLE");
        match token {
            Some(t) => run(&format!("SELECT secumon.authenticate({})", lit(t))),
            None => run("SELECT secumon.authenticate(NULL)"),
        }
        run(&format!("SET LOCAL ROLE {role}"));
    }

    fn globex_state() -> String {
        text(
            "SELECT format('%s|%s|%s|%s|%s', \
                    (SELECT acknowledged_at IS NOT NULL FROM secumon.alerts WHERE tenant_id = 'globex'), \
                    (SELECT count(*) FROM secumon.alert_events), \
                    (SELECT count(*) FROM secumon.notification_outbox), \
                    (SELECT string_agg((ends_at > now())::text, ',') FROM secumon.silences WHERE tenant_id = 'globex'), \
                    (SELECT count(*) FROM secumon.silences s LEFT JOIN secumon.alert_rules r ON r.id = s.rule_id \
                      WHERE s.tenant_id = 'globex' OR r.tenant_id = 'globex'))",
        )
    }

    // -----------------------------------------------------------------------------------------
    // Cross-tenant writes

    #[pg_test]
    fn sessions_without_identity_cannot_ack_silence_or_unsilence_any_tenant() {
        let w = world();
        let untouched = globex_state();
        assert_eq!(untouched, "f|0|0|true|1");
        for token in [None, Some("not.a.token")] {
            become_("tn_web", None);
            if let Some(t) = token {
                // A refused token leaves the session without identity, like authenticate(NULL).
                let _ = error_of(&format!("SELECT secumon.authenticate({})", lit(t)));
            }
            for (call, sqlstate) in [
                (format!("SELECT secumon.ack_alert('{}', 'mine now')", w.globex_alert), "42501"),
                ("SELECT secumon.silence('1 hour', 'quiet', tenant_id => 'globex')".to_string(), "42501"),
                ("SELECT secumon.silence('1 hour', 'quiet')".to_string(), "42501"),
                (format!("SELECT secumon.expire_silence('{}')", w.globex_silence), "42501"),
            ] {
                let error = error_of(&call);
                assert!(error.starts_with(sqlstate), "{call}: expected {sqlstate}, got {error}");
            }
            run("RESET ROLE");
            assert_eq!(globex_state(), untouched, "no alert acknowledged, no event, no notification, no silence");
        }
    }

    #[pg_test]
    fn another_tenants_user_cannot_ack_silence_or_unsilence_it() {
        let w = world();
        let untouched = globex_state();
        become_("tn_web", Some(&w.acme_admin));
        expect_sqlstate(&format!("SELECT secumon.ack_alert('{}', 'x')", w.globex_alert), "22023");
        expect_sqlstate(&format!("SELECT secumon.expire_silence('{}')", w.globex_silence), "22023");
        expect_sqlstate("SELECT secumon.silence('1 hour', 'quiet', tenant_id => 'globex')", "42501");
        expect_sqlstate(&format!("SELECT secumon.silence('1 hour', 'x', rule_id => '{}')", w.globex_rule), "22023");
        // Its own tenant works, the tenant argument may name it.
        run("SELECT secumon.silence('1 hour', 'ours', tenant_id => 'acme')");
        run(&format!("SELECT secumon.silence('1 hour', 'ours', rule_id => '{}')", w.acme_rule));
        run("RESET ROLE");
        assert_eq!(count("SELECT count(*) FROM secumon.silences WHERE tenant_id = 'acme'"), 2);
        assert_eq!(globex_state(), untouched);
    }

    #[pg_test]
    fn readonly_users_cannot_ack_or_silence_their_own_tenant() {
        let w = world();
        run("INSERT INTO secumon.alerts (rule_id, tenant_id, agent_id, state, severity, metric_name, started_at) \
             SELECT id, 'acme', 'tn-acme-1', 'firing', 'warning', 'cpu.usage_percent', now() FROM secumon.alert_rules \
              WHERE tenant_id = 'acme'");
        let acme_alert = text("SELECT id::text FROM secumon.alerts WHERE tenant_id = 'acme'");
        become_("tn_web", Some(&w.acme_readonly));
        expect_sqlstate(&format!("SELECT secumon.ack_alert('{acme_alert}', 'x')"), "42501");
        expect_sqlstate("SELECT secumon.silence('1 hour', 'quiet')", "42501");
        become_("tn_web", Some(&w.acme_user));
        run(&format!("SELECT secumon.ack_alert('{acme_alert}', 'on it')"));
        run("RESET ROLE");
        assert_eq!(
            text(&format!("SELECT acknowledged_by FROM secumon.alerts WHERE id = '{acme_alert}'")),
            "tn_acme_user"
        );
    }

    /// With secumon.auth_required off, sessions without identity see and write every tenant
    /// (as the policies let them); the definer functions agree.
    #[pg_test]
    fn auth_required_off_opens_the_operator_functions_as_it_opens_the_policies() {
        let w = world();
        run("SET LOCAL secumon.auth_required = off");
        become_("tn_web", None);
        assert_eq!(count("SELECT count(*) FROM secumon.silences WHERE tenant_id = 'globex'"), 1);
        run(&format!("SELECT secumon.ack_alert('{}', 'open mode')", w.globex_alert));
        run(&format!("SELECT secumon.expire_silence('{}')", w.globex_silence));
        // An identity confines the session again.
        become_("tn_web", Some(&w.acme_admin));
        expect_sqlstate(&format!("SELECT secumon.ack_alert('{}', 'x')", w.globex_alert), "22023");
    }

    // -----------------------------------------------------------------------------------------
    // Oracles

    #[pg_test]
    fn another_tenants_objects_are_reported_exactly_like_missing_ones() {
        let w = world();
        become_("tn_web", Some(&w.acme_user));
        let same = |foreign: String, missing: String, id: &str| {
            let (a, b) = (error_of(&foreign), error_of(&missing));
            assert_ne!(a, "ok", "{foreign}");
            assert_eq!(a.replace(id, "<id>"), b.replace(MISSING, "<id>"), "{foreign} vs {missing}");
        };
        same(
            format!("SELECT secumon.ack_alert('{}', 'x')", w.globex_alert),
            format!("SELECT secumon.ack_alert('{MISSING}', 'x')"),
            &w.globex_alert,
        );
        same(
            format!("SELECT secumon.expire_silence('{}')", w.globex_silence),
            format!("SELECT secumon.expire_silence('{MISSING}')"),
            &w.globex_silence,
        );
        same(
            format!("SELECT secumon.silence('1 hour', 'x', rule_id => '{}')", w.globex_rule),
            format!("SELECT secumon.silence('1 hour', 'x', rule_id => '{MISSING}')"),
            &w.globex_rule,
        );
        // Foreign keys ignore row-level security: a silence written directly must not reference
        // another tenant's rule either, nor tell it from a missing one.
        for statement in [
            "INSERT INTO secumon.silences (rule_id, ends_at, comment) VALUES ('{id}', now() + interval '1 hour', 'x')",
            "INSERT INTO secumon.silences (tenant_id, rule_id, ends_at, comment) VALUES ('globex', '{id}', now() + interval '1 hour', 'x')",
        ] {
            same(statement.replace("{id}", &w.globex_rule), statement.replace("{id}", MISSING), &w.globex_rule);
        }
        // Ids are the server's to choose: one taken by another tenant's row and a free one are
        // refused alike, where a unique violation would have told them apart.
        for statement in [
            "INSERT INTO secumon.alert_rules (id, name, metric_type, metric_name, condition, threshold) VALUES ('{id}', 'r', 'cpu', 'usage_percent', 'gt', 1)",
            "INSERT INTO secumon.silences (id, ends_at, comment) VALUES ('{id}', now() + interval '1 hour', 'x')",
            "INSERT INTO secumon.alert_rules (name, metric_type, metric_name, condition, threshold, default_key) VALUES ('r', 'cpu', 'usage_percent', 'gt', 1, 'high_cpu_usage{id}')",
        ] {
            let id = if statement.contains("secumon.silences") { &w.globex_silence } else { &w.globex_rule };
            same(statement.replace("{id}", id), statement.replace("{id}", MISSING), id);
        }
        run("SELECT secumon.silence('1 hour', 'ours')");
        same(
            format!("UPDATE secumon.silences SET rule_id = '{}'", w.globex_rule),
            format!("UPDATE secumon.silences SET rule_id = '{MISSING}'"),
            &w.globex_rule,
        );
        same(
            format!("SELECT * FROM secumon.test_rule('{}', now() - interval '1 hour', now())", w.globex_rule),
            format!("SELECT * FROM secumon.test_rule('{MISSING}', now() - interval '1 hour', now())"),
            &w.globex_rule,
        );
        // Tenants: globex and a tenant that does not exist are refused alike.
        assert_eq!(
            error_of("SELECT secumon.silence('1 hour', 'x', tenant_id => 'globex')").replace("globex", "<t>"),
            error_of("SELECT secumon.silence('1 hour', 'x', tenant_id => 'nowhere')").replace("nowhere", "<t>"),
        );
        run("RESET ROLE");
        assert_eq!(
            count(&format!("SELECT count(*) FROM secumon.silences WHERE rule_id = '{}'", w.globex_rule)),
            0,
            "nothing references globex's rule"
        );
    }

    #[pg_test]
    fn operators_silence_with_rules_of_the_silenced_tenant_only() {
        let w = world();
        run("CREATE ROLE tn_operator NOLOGIN IN ROLE secumon_admin");
        run("SET LOCAL ROLE tn_operator");
        expect_sqlstate(
            &format!("SELECT secumon.silence('1 hour', 'x', rule_id => '{}', tenant_id => 'acme')", w.globex_rule),
            "22023",
        );
        run(&format!("SELECT secumon.silence('1 hour', 'x', rule_id => '{}', tenant_id => 'globex')", w.globex_rule));
        run(&format!("SELECT secumon.ack_alert('{}', 'operator')", w.globex_alert));
        run("RESET ROLE");
        assert_eq!(
            count(&format!("SELECT count(*) FROM secumon.alerts WHERE id = '{}' AND acknowledged_at IS NOT NULL", w.globex_alert)),
            1
        );
    }

    // -----------------------------------------------------------------------------------------
    // The reader role

    #[pg_test]
    fn reader_sessions_are_read_only_whatever_the_identity() {
        let w = world();
        let writable = text(
            "SELECT coalesce(string_agg(c.oid::regclass::text, ', '), '') FROM pg_class c \
              WHERE c.relnamespace IN ('secumon'::regnamespace, 'secumon_partitions'::regnamespace) \
                AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                AND (has_table_privilege('secumon_reader', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') \
                     OR has_any_column_privilege('secumon_reader', c.oid, 'INSERT, UPDATE, REFERENCES'))",
        );
        assert_eq!(writable, "", "secumon_reader must not write any relation");
        become_("tn_reader", Some(&w.acme_admin));
        assert_eq!(count("SELECT count(*) FROM secumon.agents"), 1, "readers read their tenant");
        for call in [
            "SELECT secumon.create_user('tn_new', 'password-of-tn_new')",
            "SELECT secumon.set_user_role('tn_acme_user', 'admin')",
            "SELECT secumon.set_user_password('tn_acme_user', 'password-new-1')",
            "SELECT secumon.deactivate_user('tn_acme_user')",
            "SELECT secumon.activate_user('tn_acme_user')",
            "SELECT secumon.revoke_sessions('tn_acme_user')",
            "SELECT secumon.change_password('password-of-tn_acme_admin', 'password-new-2')",
            "SELECT secumon.silence('1 hour', 'x')",
            "INSERT INTO secumon.alert_rules (name, metric_type, metric_name, condition, threshold) VALUES ('r', 'cpu', 'usage_percent', 'gt', 1)",
            "UPDATE secumon.agents SET labels = '{}'",
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('tn-r', 'webhook', '{\"url\": \"http://127.0.0.1:9/\"}')",
        ] {
            expect_sqlstate(call, "42501");
        }
        // Sessions stay possible: log in, look at one's sessions, log out.
        login("tn_acme_user");
        assert!(count("SELECT count(*) FROM secumon.list_sessions()") > 0);
        run("SELECT secumon.logout()");
    }

    // -----------------------------------------------------------------------------------------
    // Channels

    #[pg_test]
    fn tenant_admins_manage_their_own_channels_through_the_web_role() {
        let w = world();
        run("INSERT INTO secumon.notification_channels (name, type, settings) \
             VALUES ('tn-shared', 'webhook', '{\"url\": \"http://127.0.0.1:9/gx-secret-shared\"}')");
        become_("tn_web", Some(&w.acme_admin));
        assert_eq!(count("SELECT count(*) FROM secumon.notification_channels"), 0, "neither globex's nor shared ones");
        run("INSERT INTO secumon.notification_channels (name, type, settings) \
             VALUES ('tn-acme-hook', 'webhook', '{\"url\": \"http://127.0.0.1:9/acme\"}')");
        assert_eq!(
            text("SELECT tenant_ids::text FROM secumon.notification_channels WHERE name = 'tn-acme-hook'"),
            "{acme}",
            "a tenant admin's channel belongs to its tenant"
        );
        run("UPDATE secumon.notification_channels SET severities = '{critical}' WHERE name = 'tn-acme-hook'");
        assert_eq!(
            error_of("UPDATE secumon.notification_channels SET settings = '{\"url\": 1}' WHERE name = 'tn-acme-hook'")
                .split(':')
                .next(),
            Some("22023"),
            "settings are validated for tenant admins too"
        );
        // Routed to other tenants, to all, or made to look like a default channel: refused.
        for statement in [
            "INSERT INTO secumon.notification_channels (name, type, settings, tenant_ids) VALUES ('tn-x', 'webhook', '{\"url\": \"http://127.0.0.1:9/\"}', '{acme,globex}')",
            "INSERT INTO secumon.notification_channels (name, type, settings, tenant_ids) VALUES ('tn-x', 'webhook', '{\"url\": \"http://127.0.0.1:9/\"}', NULL)",
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('default-webhook', 'webhook', '{\"url\": \"http://127.0.0.1:9/\"}')",
            "UPDATE secumon.notification_channels SET tenant_ids = '{globex}'",
            "UPDATE secumon.notification_channels SET managed_by = 'guc'",
            "INSERT INTO secumon.notification_channels (channel_id, name, type, settings) VALUES (4242, 'tn-x', 'webhook', '{\"url\": \"http://127.0.0.1:9/\"}')",
        ] {
            expect_sqlstate(statement, "42501");
        }
        assert_eq!(count("WITH d AS (DELETE FROM secumon.notification_channels WHERE name = 'tn-gx-hook' RETURNING 1) SELECT count(*) FROM d"), 0);
        // test_channel: another tenant's channel does not exist, like a missing one.
        assert_eq!(
            error_of("SELECT secumon.test_channel('tn-gx-hook')").replace("tn-gx-hook", "<c>"),
            error_of("SELECT secumon.test_channel('tn-nothing')").replace("tn-nothing", "<c>"),
        );
        // Plain users and readonly users see no channel; their admin's is removed by the admin.
        become_("tn_web", Some(&w.acme_user));
        assert_eq!(count("SELECT count(*) FROM secumon.notification_channels"), 0);
        expect_sqlstate(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('tn-u', 'webhook', '{\"url\": \"http://127.0.0.1:9/\"}')",
            "42501",
        );
        become_("tn_web", Some(&w.acme_admin));
        run("DELETE FROM secumon.notification_channels WHERE name = 'tn-acme-hook'");
        run("RESET ROLE");
        assert_eq!(
            text("SELECT string_agg(name, ',' ORDER BY name) FROM secumon.notification_channels"),
            "tn-gx-hook,tn-shared"
        );
    }

    /// No channel is written as superuser first: PL/pgSQL would keep the settings check it
    /// prepared then, privileges checked, for the rest of the transaction.
    #[pg_test]
    fn operators_write_channels_as_members_of_secumon_admin() {
        run("CREATE ROLE tn_operator NOLOGIN IN ROLE secumon_admin");
        run("SET LOCAL ROLE tn_operator");
        run("INSERT INTO secumon.notification_channels (name, type, settings) \
             VALUES ('tn-ops', 'webhook', '{\"url\": \"http://127.0.0.1:9/ops\"}')");
        run("UPDATE secumon.notification_channels SET enabled = false WHERE name = 'tn-ops'");
        expect_sqlstate(
            "UPDATE secumon.notification_channels SET settings = '{}' WHERE name = 'tn-ops'",
            "22023",
        );
        assert_eq!(
            count("SELECT count(*) FROM secumon.notification_channels WHERE tenant_ids IS NULL"),
            1,
            "an operator's channel serves every tenant"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Everything a client role may call

    /// A call of each function a client role may execute, by name, aimed at globex's objects:
    /// {alert}, {rule}, {silence}, {agent_key}, {layout_id}, {series_id}. A new function granted
    /// to secumon_web or secumon_reader fails the test below until it is listed here. Policy
    /// predicates answer a marker when they let globex's row through.
    const CALLS: &[(&str, &[&str])] = &[
        // identity and policies
        ("current_user_id", &["SELECT secumon.current_user_id()"]),
        ("current_tenant", &["SELECT secumon.current_tenant()"]),
        ("current_role", &["SELECT secumon.current_role()"]),
        ("_rls_open", &["SELECT secumon._rls_open()"]),
        ("_rls_bypassed", &["SELECT CASE WHEN secumon._rls_bypassed() THEN 'globex rows' END"]),
        ("_hypertable_chunks", &["SELECT * FROM secumon._hypertable_chunks()"]),
        ("_rls_may_write", &["SELECT secumon._rls_may_write(true)", "SELECT secumon._rls_may_write(false)"]),
        ("_agent_key_visible", &["SELECT CASE WHEN secumon._agent_key_visible({agent_key}) THEN 'globex agent' END"]),
        ("_agent_id_visible", &["SELECT CASE WHEN secumon._agent_id_visible('tn-gx-1') THEN 'globex agent' END"]),
        ("_layout_id_visible", &["SELECT CASE WHEN secumon._layout_id_visible({layout_id}) THEN 'globex layout' END"]),
        ("_series_id_visible", &["SELECT CASE WHEN secumon._series_id_visible({series_id}) THEN 'globex series' END"]),
        // sessions and users
        ("login", &["SELECT * FROM secumon.login('tn_gx_user', 'not-the-password')"]),
        ("refresh", &["SELECT * FROM secumon.refresh('not-a-refresh-token')"]),
        ("logout", &["SELECT secumon.logout()"]),
        ("verify_token", &["SELECT secumon.verify_token('not.a.token')"]),
        ("authenticate", &["SELECT secumon.authenticate('not.a.token')"]),
        ("change_password", &["SELECT secumon.change_password('password-of-tn_acme_admin', 'password-new-3')"]),
        ("create_user", &[
            "SELECT secumon.create_user('tn_new_gx', 'password-of-tn_new', 'admin', NULL, 'globex')",
            "SELECT secumon.create_user('tn_new_own', 'password-of-tn_new', 'admin')",
        ]),
        ("set_user_role", &["SELECT secumon.set_user_role('tn_gx_user', 'admin')"]),
        ("set_user_password", &["SELECT secumon.set_user_password('tn_gx_user', 'password-new-4')"]),
        ("deactivate_user", &["SELECT secumon.deactivate_user('tn_gx_user')"]),
        ("activate_user", &["SELECT secumon.activate_user('tn_gx_off')"]),
        ("list_sessions", &["SELECT * FROM secumon.list_sessions('tn_gx_admin')", "SELECT * FROM secumon.list_sessions()"]),
        ("revoke_sessions", &["SELECT secumon.revoke_sessions('tn_gx_admin')"]),
        // alerting
        ("ack_alert", &["SELECT secumon.ack_alert('{alert}', 'mine now')"]),
        ("silence", &[
            "SELECT secumon.silence('1 hour', 'quiet', tenant_id => 'globex')",
            "SELECT secumon.silence('1 hour', 'quiet', rule_id => '{rule}')",
        ]),
        ("expire_silence", &["SELECT secumon.expire_silence('{silence}')"]),
        ("test_rule", &[
            "SELECT * FROM secumon.test_rule('{rule}', now() - interval '1 day', now() + interval '1 hour')",
            "SELECT * FROM secumon.test_rule('cpu.usage_percent', 'gt', 1, '0', now() - interval '1 day', now() + interval '1 hour', 'tn-gx-1')",
        ]),
        ("_is_silenced", &["SELECT secumon._is_silenced('globex', 'tn-gx-1', '{rule}', 'warning', '{}')"]),
        ("_breaches", &["SELECT secumon._breaches('gt', 2, 1)"]),
        ("_recovered", &["SELECT secumon._recovered('gt', 0, 1, NULL)"]),
        ("_validate_rule", &["SELECT secumon._validate_rule('threshold', 'cpu', 'usage_percent', 'tn-gx-1', '{}', 'gt', 1, NULL, '0', NULL, 'info', NULL)"]),
        ("_rule_error", &["SELECT secumon._rule_error('x')"]),
        ("_check_agent_id", &["SELECT secumon._check_agent_id('tn-gx-1')"]),
        ("_alert_samples_query", &["SELECT secumon._alert_samples_query('true', 'true', 'true')"]),
        // notifications
        ("test_channel", &["SELECT secumon.test_channel('tn-gx-hook')"]),
        // queries
        ("series", &["SELECT * FROM secumon.series('tn-gx-1', 'cpu.usage_percent', now() - interval '1 hour', now() + interval '1 hour')"]),
        ("_series", &["SELECT * FROM secumon._series('tn-gx-1', 'cpu.usage_percent', now() - interval '1 hour', now() + interval '1 hour', 100)"]),
        ("series_lttb", &["SELECT * FROM secumon.series_lttb('tn-gx-1', 'cpu.usage_percent', now() - interval '1 hour', now() + interval '1 hour')"]),
        ("_series_lttb", &["SELECT * FROM secumon._series_lttb('tn-gx-1', 'cpu.usage_percent', now() - interval '1 hour', now() + interval '1 hour', 100)"]),
        ("metric_history", &["SELECT * FROM secumon.metric_history('tn-gx-1', 'cpu.usage_percent', now() - interval '1 hour', now() + interval '1 hour')"]),
        ("rate", &["SELECT * FROM secumon.rate('tn-gx-1', 'cpu.context_switches', now() - interval '1 hour', now() + interval '1 hour')"]),
        ("_rate", &["SELECT * FROM secumon._rate('tn-gx-1', 'cpu.context_switches', now() - interval '1 hour', now() + interval '1 hour', 100, '15 minutes')"]),
        ("percentiles", &["SELECT * FROM secumon.percentiles('tn-gx-1', 'cpu.usage_percent', now() - interval '1 hour', now() + interval '1 hour')"]),
        ("top_agents", &["SELECT * FROM secumon.top_agents('cpu.usage_percent', now() - interval '1 hour', now() + interval '1 hour')"]),
        ("list_agents", &["SELECT * FROM secumon.list_agents('1 day')"]),
        ("list_series", &["SELECT * FROM secumon.list_series('tn-gx-1')", "SELECT * FROM secumon.list_series()"]),
        ("_parse_series", &["SELECT * FROM secumon._parse_series('custom.x{a=\"b\"}')"]),
        ("_series_key", &["SELECT secumon._series_key('custom', 'x', '{\"a\": \"b\"}')"]),
        ("_label_string", &["SELECT secumon._label_string('{\"a\": \"b\"}')"]),
        ("_unescape_label", &["SELECT secumon._unescape_label('a\\\"b')"]),
        ("_layout_positions", &["SELECT * FROM secumon._layout_positions(ARRAY['cpu.usage_percent', 'cpu.context_switches'], false)"]),
        ("_counter_series", &["SELECT secumon._counter_series('custom', 'x_total')"]),
        ("_is_counter", &["SELECT secumon._is_counter(NULL, 'custom', 'x_total')"]),
        ("create_enrollment_token", &["SELECT secumon.create_enrollment_token('globex')", "SELECT secumon.create_enrollment_token()"]),
        ("revoke_enrollment_token", &["SELECT secumon.revoke_enrollment_token('00000000-0000-4000-8000-000000000404')"]),
        ("latest_metrics", &["SELECT * FROM secumon.latest_metrics('tn-gx-1')"]),
        ("agent_disks", &["SELECT * FROM secumon.agent_disks('tn-gx-1')"]),
        ("agent_networks", &["SELECT * FROM secumon.agent_networks('tn-gx-1')"]),
        ("agent_processes", &["SELECT * FROM secumon.agent_processes('tn-gx-1')"]),
        ("health", &["SELECT secumon.health()"]),
        ("_agent_key", &["SELECT secumon._agent_key('tn-gx-1')"]),
        ("_latest_report", &["SELECT secumon._latest_report({agent_key}, 'tn-gx-1', 'metric_samples')"]),
        ("_history", &["SELECT * FROM secumon._history({agent_key}, 1, now() - interval '1 hour', now() + interval '1 hour', 100)"]),
        ("_disk_history", &["SELECT * FROM secumon._disk_history('tn-gx-1', 'usage_percent', now() - interval '1 hour', now() + interval '1 hour', 100)"]),
        ("_metric_summaries_from_raw", &["SELECT m.bucket, u.* FROM secumon._metric_summaries_from_raw('5 minutes', now() - interval '1 hour', now() + interval '1 hour') m CROSS JOIN LATERAL secumon._summary_unnest(m.summary) u"]),
        ("_disk_rollup_rows", &["SELECT * FROM secumon._disk_rollup_rows(now() - interval '1 hour', now() + interval '1 hour')"]),
        ("_network_rollup_rows", &["SELECT * FROM secumon._network_rollup_rows(now() - interval '1 hour', now() + interval '1 hour', '15 minutes')"]),
        ("_series_id", &["SELECT secumon._series_id('cpu.usage_percent')"]),
        ("_check_range", &["SELECT secumon._check_range(now() - interval '1 hour', now())"]),
        ("_check_positive", &["SELECT secumon._check_positive(1, 'n', 10)"]),
        ("_finest_tier", &["SELECT secumon._finest_tier(now())"]),
        ("_step", &["SELECT secumon._step('1 hour', 10, '1 second')"]),
        ("_bucket", &["SELECT secumon._bucket('5 minutes', now())"]),
        ("_counter_delta_f", &["SELECT secumon._counter_delta_f(2, 1)"]),
        ("_counter_increase", &["SELECT secumon._counter_increase(2, 1)", "SELECT secumon._counter_increase(1.5, 2.5)"]),
        ("counter_delta", &["SELECT secumon.counter_delta(10, 5)"]),
        ("lttb", &["SELECT * FROM secumon.lttb(ARRAY[now()], ARRAY[1.0]::float8[], 10)"]),
        ("sketch", &["SELECT secumon.sketch(x) FROM (VALUES (1.0::float8)) v(x)"]),
        ("sketch_merge", &["SELECT secumon.sketch_merge(s) FROM (SELECT secumon.sketch(1.0::float8) AS s) v"]),
        ("sketch_quantile", &["SELECT secumon.sketch_quantile(secumon.sketch(1.0::float8), 0.5)"]),
        ("sketch_quantiles", &["SELECT secumon.sketch_quantiles(secumon.sketch(1.0::float8), ARRAY[0.5])"]),
        ("sketch_count", &["SELECT secumon.sketch_count(secumon.sketch(1.0::float8))"]),
        ("_summarize", &["SELECT secumon._summarize(ARRAY[1], ARRAY[1.0]::float8[])"]),
        ("_summary_merge", &["SELECT secumon._summary_merge(s) FROM (SELECT secumon._summarize(ARRAY[1], ARRAY[1.0]::float8[]) AS s) v"]),
        ("_summary_unnest", &["SELECT * FROM secumon._summary_unnest((SELECT secumon._summarize(ARRAY[1], ARRAY[1.0]::float8[])))"]),
        ("_summary_series", &["SELECT * FROM secumon._summary_series((SELECT secumon._summarize(ARRAY[1], ARRAY[1.0]::float8[])), 1)"]),
        ("_summary_points", &["SELECT * FROM secumon._summary_points(ARRAY[now()], ARRAY[(SELECT secumon._summarize(ARRAY[1], ARRAY[1.0]::float8[]))], 1, 1000000)"]),
    ];

    /// What a call must answer, when more than "changes nothing it may not" is specified:
    /// (call prefix, without identity, as acme's admin); a SQLSTATE the outcome starts with.
    const OUTCOMES: &[(&str, &str, &str)] = &[
        ("SELECT secumon.ack_alert(", "42501", "22023"),
        ("SELECT secumon.silence('1 hour', 'quiet', tenant_id", "42501", "42501"),
        ("SELECT secumon.silence('1 hour', 'quiet', rule_id", "42501", "22023"),
        ("SELECT secumon.expire_silence(", "42501", "22023"),
        ("SELECT secumon.create_user('tn_new_gx'", "42501", "42501"),
        ("SELECT secumon.set_user_role(", "42501", "22023"),
        ("SELECT secumon.set_user_password(", "42501", "22023"),
        ("SELECT secumon.deactivate_user(", "42501", "22023"),
        ("SELECT secumon.activate_user(", "42501", "22023"),
        ("SELECT secumon.revoke_sessions(", "42501", "22023"),
        ("SELECT * FROM secumon.list_sessions('tn_gx_admin')", "42501", "22023"),
        ("SELECT secumon.test_channel(", "42704", "42704"),
        ("SELECT secumon.create_enrollment_token('globex')", "42501", "42501"),
        ("SELECT secumon.revoke_enrollment_token(", "22023", "22023"),
    ];

    /// Every function secumon_web or secumon_reader may execute, called without identity and as
    /// another tenant's admin: it changes no row it may not (nothing at all without identity or
    /// through the reader role; nothing outside acme as acme's admin through the web role),
    /// and what it returns holds nothing of globex.
    #[pg_test]
    fn every_function_a_client_role_may_call_keeps_to_the_callers_tenant() {
        let w = world();
        // Rows a probe may change: acme's (spared_tenant) or the caller's own sessions (me).
        run("CREATE FUNCTION pg_temp.spared(r jsonb, spared_tenant text, me text) RETURNS boolean LANGUAGE sql AS $$ \
             SELECT coalesce(r ->> 'user_id' = me, false) \
                 OR coalesce(spared_tenant IS NOT NULL AND ( \
                        r ->> 'tenant_id' = spared_tenant \
                     OR r -> 'tenant_ids' = jsonb_build_array(spared_tenant) \
                     OR r ->> 'agent_id' IN (SELECT agent_id FROM secumon.agents WHERE tenant_id = spared_tenant) \
                     OR r ->> 'agent_key' IN (SELECT agent_key::text FROM secumon.agents WHERE tenant_id = spared_tenant) \
                     OR r ->> 'user_id' IN (SELECT id::text FROM secumon.users WHERE tenant_id = spared_tenant) \
                     OR r ->> 'rule_id' IN (SELECT id::text FROM secumon.alert_rules WHERE tenant_id = spared_tenant)), false) $$");
        // One line per table of the extension's schema: name=md5 of its rows but the spared ones.
        run("CREATE FUNCTION pg_temp.fingerprint(spared_tenant text, me text) RETURNS text LANGUAGE plpgsql AS $$ \
             DECLARE t regclass; h text; result text := ''; \
             BEGIN \
                 FOR t IN SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'secumon'::regnamespace \
                             AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname LOOP \
                     EXECUTE format('SELECT md5(coalesce(string_agg(x::text, %L ORDER BY x::text), %L)) FROM ( \
                                         SELECT CASE WHEN $3 AND r ->> %L = $2 THEN r - %L - %L ELSE r END AS x \
                                           FROM (SELECT to_jsonb(t) AS r FROM %s t) AS all_rows) AS s \
                                     WHERE NOT pg_temp.spared(x, $1, $2)', \
                                    '|', '', 'id', 'token_version', 'updated_at', t) \
                         INTO h USING spared_tenant, me, t = 'secumon.users'::regclass; \
                     result := result || t::text || '=' || h || E'\\n'; \
                 END LOOP; \
                 RETURN result; \
             END $$");
        // Runs `call` as `as_role` with `token`'s identity, then undoes whatever it did.
        run("CREATE FUNCTION pg_temp.probe(call text, as_role name, token text, spared_tenant text, me text) \
             RETURNS jsonb LANGUAGE plpgsql AS $$ \
             DECLARE before text := pg_temp.fingerprint(spared_tenant, me); after text; outcome text; answer text; \
             BEGIN \
                 BEGIN \
                     PERFORM secumon.authenticate(token); \
                     EXECUTE format('SET LOCAL ROLE %I', as_role); \
                     BEGIN \
                         EXECUTE format('SELECT coalesce(string_agg(r::text, %L), %L) FROM (%s) AS r', ';', '', call) INTO answer; \
                         outcome := 'ok'; \
                     EXCEPTION WHEN OTHERS THEN \
                         outcome := SQLSTATE || ': ' || SQLERRM; \
                     END; \
                     RESET ROLE; \
                     after := pg_temp.fingerprint(spared_tenant, me); \
                     RAISE EXCEPTION 'probe done' USING ERRCODE = 'assert_failure'; \
                 EXCEPTION WHEN assert_failure THEN \
                     NULL; \
                 END; \
                 RETURN jsonb_build_object('outcome', outcome, 'answer', answer, 'changed', \
                     (SELECT string_agg(split_part(a, '=', 1), ', ') FROM unnest(string_to_array(after, E'\\n')) AS a \
                       WHERE a <> '' AND NOT a = ANY (string_to_array(before, E'\\n')))); \
             END $$");
        // (what the mode is, role, token, the tenant whose rows it may see, its user id)
        type Mode<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let modes: [Mode; 4] = [
            ("secumon_web without identity", "tn_web", None, None, None),
            ("secumon_web as acme's admin", "tn_web", Some(&w.acme_admin), Some("acme"), Some(&w.acme_admin_id)),
            ("secumon_reader without identity", "tn_reader", None, None, None),
            ("secumon_reader as acme's admin", "tn_reader", Some(&w.acme_admin), None, Some(&w.acme_admin_id)),
        ];
        let fill = |call: &str| {
            call.replace("{alert}", &w.globex_alert)
                .replace("{rule}", &w.globex_rule)
                .replace("{silence}", &w.globex_silence)
                .replace("{agent_key}", &w.globex_agent_key.to_string())
                .replace("{layout_id}", &w.globex_layout_id.to_string())
                .replace("{series_id}", &w.globex_series_id.to_string())
        };
        let mut failures = Vec::new();
        let mut probes = 0;
        for (mode, role, token, spared_tenant, me) in modes {
            let client_role = if role == "tn_web" { "secumon_web" } else { "secumon_reader" };
            // Functions of the extension the role may execute (not the pg_tests themselves, in
            // schema tests); those taking `internal` cannot be called from SQL at all.
            let names = text(&format!(
                "SELECT coalesce(string_agg(DISTINCT p.proname, ',' ORDER BY p.proname), '') FROM pg_proc p \
                   JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e' \
                   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'secumon' \
                  WHERE p.pronamespace IN ('secumon'::regnamespace, 'secumon_partitions'::regnamespace) \
                    AND has_function_privilege('{client_role}', p.oid, 'EXECUTE') \
                    AND NOT 'internal'::regtype = ANY (p.proargtypes::regtype[])"
            ));
            for name in names.split(',').filter(|n| !n.is_empty()) {
                let Some((_, calls)) = CALLS.iter().find(|(n, _)| *n == name) else {
                    failures.push(format!("{client_role} may execute secumon.{name}: add a call to CALLS"));
                    continue;
                };
                for call in calls.iter().map(|c| fill(c)) {
                    probes += 1;
                    let probe = text(&format!(
                        "SELECT pg_temp.probe({}, {}, {}, {}, {})::text",
                        lit(&call),
                        lit(role),
                        token.map_or("NULL".into(), lit),
                        spared_tenant.map_or("NULL".into(), lit),
                        me.map_or("NULL".into(), lit),
                    ));
                    let probe: Value = serde_json::from_str(&probe).expect("probe answers JSON");
                    let outcome = probe["outcome"].as_str().unwrap_or_default();
                    if let Some(changed) = probe["changed"].as_str() {
                        failures.push(format!("{mode}: `{call}` changed {changed} ({outcome})"));
                    }
                    let answer = probe["answer"].as_str().unwrap_or_default();
                    if let Some(marker) = MARKERS.iter().find(|m| answer.contains(*m)) {
                        failures.push(format!("{mode}: `{call}` returned globex's {marker:?}: {answer}"));
                    }
                    if let Some((_, anonymous, as_acme)) = OUTCOMES.iter().find(|(prefix, _, _)| call.starts_with(prefix)) {
                        let expected = if token.is_none() { anonymous } else { as_acme };
                        // Through the reader role a write function is not even callable.
                        let refused_for_reader = role == "tn_reader" && outcome.starts_with("42501");
                        if !outcome.starts_with(expected) && !refused_for_reader {
                            failures.push(format!("{mode}: `{call}` answered {outcome}, expected {expected}"));
                        }
                    }
                }
            }
        }
        assert!(probes > 100, "expected every function probed in four modes, got {probes} probes");
        assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
    }
}
