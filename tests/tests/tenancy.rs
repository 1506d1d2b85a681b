//! Tenant isolation end to end, over real login roles and connections: a web-tier session that
//! never authenticated cannot acknowledge, silence or un-silence another tenant's alerts (and
//! the tenant's receiver hears nothing), tenant admins manage their own channels through the
//! web role, operators write channels, and the reader role stays read-only whatever the
//! identity. The in-database matrix of every client-callable function is
//! secumon_pg/src/tests/tenancy_tests.rs. See docs/auth.md ("Threat model").

use std::time::Duration;

use secumon_e2e::postgres::Client;
use secumon_e2e::receivers::HttpReceiver;
use secumon_e2e::*;

/// acme and globex, an admin of each, and a firing alert, a silence and a webhook channel
/// (routed acknowledgements) of globex. Returns (alert id, silence id).
fn two_tenants(cluster: &Cluster, receiver: &HttpReceiver) -> (String, String) {
    cluster.psql("INSERT INTO secumon.tenants (tenant_id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex')");
    for (user, role, tenant) in [("alice", "admin", "acme"), ("bob", "admin", "globex"), ("rita", "readonly", "acme")] {
        cluster.psql(&format!(
            "SELECT secumon.create_user('{user}', 'password-of-{user}', '{role}', NULL, '{tenant}')"
        ));
    }
    cluster.psql(&format!(
        "INSERT INTO secumon.notification_channels (name, type, settings, tenant_ids, events) \
         VALUES ('globex-hook', 'webhook', '{{\"url\": \"{}\"}}', '{{globex}}', '{{firing,resolved,acknowledged}}')",
        receiver.url("/globex")
    ));
    let rule = cluster.psql_one(
        "INSERT INTO secumon.alert_rules (tenant_id, name, metric_type, metric_name, condition, threshold) \
         VALUES ('globex', 'db cpu', 'cpu', 'usage_percent', 'gt', 90) RETURNING id",
    );
    let alert = cluster.psql_one(&format!(
        "INSERT INTO secumon.alerts (rule_id, tenant_id, agent_id, state, severity, metric_name, started_at, triggered_at) \
         VALUES ('{rule}', 'globex', 'globex-db-1', 'firing', 'critical', 'cpu.usage_percent', now(), now()) RETURNING id"
    ));
    let silence = cluster.psql_one(
        "INSERT INTO secumon.silences (tenant_id, agent_id, ends_at, comment) \
         VALUES ('globex', 'globex-db-1', now() + interval '1 day', 'maintenance') RETURNING id",
    );
    (alert, silence)
}

fn login(client: &mut Client, user: &str) -> String {
    client
        .query_one("SELECT token FROM secumon.login($1, $2)", &[&user, &format!("password-of-{user}")])
        .unwrap_or_else(|e| panic!("expected {user} to log in: {}", error_text(&e)))
        .get(0)
}

fn authenticate(client: &mut Client, token: &str) {
    client
        .query_one("SELECT secumon.authenticate($1)", &[&token])
        .unwrap_or_else(|e| panic!("expected the token to authenticate: {}", error_text(&e)));
}

#[test]
fn a_web_session_without_identity_cannot_touch_another_tenants_alerts_or_silences() {
    let cluster = Cluster::start_with(&[("secumon.notify_poll_interval", "200ms")]);
    let receiver = HttpReceiver::start();
    let (alert, silence) = two_tenants(&cluster, &receiver);
    let web = cluster.create_login_role("web_anonymous", &["secumon_web"]);
    let mut anonymous = cluster.client_for(&web);
    anonymous.batch_execute("SELECT secumon.authenticate(NULL)").unwrap();

    for (call, what) in [
        (format!("SELECT secumon.ack_alert('{alert}', 'mine now')"), "ack_alert of globex's alert"),
        ("SELECT secumon.silence('1 hour', 'quiet', tenant_id => 'globex')".to_string(), "silence of globex"),
        ("SELECT secumon.silence('1 hour', 'quiet')".to_string(), "silence of the default tenant"),
        (format!("SELECT secumon.expire_silence('{silence}')"), "expire_silence of globex's silence"),
    ] {
        assert_sqlstate(anonymous.batch_execute(&call), "42501", what);
    }
    assert_eq!(
        cluster.psql_one(&format!(
            "SELECT format('%s|%s|%s|%s', (SELECT acknowledged_at IS NULL FROM secumon.alerts WHERE id = '{alert}'), \
                    (SELECT count(*) FROM secumon.alert_events), (SELECT count(*) FROM secumon.silences), \
                    (SELECT ends_at > now() FROM secumon.silences WHERE id = '{silence}'))"
        )),
        "t|0|1|t",
        "expected globex's alert unacknowledged, no event, no new silence, its silence running"
    );

    // globex's own admin ends its silence and acknowledges: exactly one notification reaches
    // globex's receiver.
    let bob_role = cluster.create_login_role("web_bob", &["secumon_web"]);
    let mut bob = cluster.client_for(&bob_role);
    let token = login(&mut bob, "bob");
    authenticate(&mut bob, &token);
    bob.batch_execute(&format!("SELECT secumon.expire_silence('{silence}')")).unwrap();
    bob.batch_execute(&format!("SELECT secumon.ack_alert('{alert}', 'on it')")).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() >= 1),
        "expected globex's acknowledgement delivered; log:\n{}",
        cluster.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "expected one notification only: {:?}", requests.iter().map(|r| r.text()).collect::<Vec<_>>());
    assert_eq!(requests[0].json()["acknowledged_by"], "bob", "{}", requests[0].text());
}

#[test]
fn tenant_admins_manage_their_channels_through_the_web_role_and_operators_through_secumon_admin() {
    let cluster = Cluster::start();
    let receiver = HttpReceiver::start();
    two_tenants(&cluster, &receiver);
    let web = cluster.create_login_role("web_channels", &["secumon_web"]);
    let mut alice = cluster.client_for(&web);
    let token = login(&mut alice, "alice");
    authenticate(&mut alice, &token);
    assert_eq!(
        alice.query_one("SELECT count(*) FROM secumon.notification_channels", &[]).unwrap().get::<_, i64>(0),
        0,
        "expected globex's channel invisible to acme's admin"
    );
    alice
        .batch_execute(&format!(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('acme-hook', 'webhook', '{{\"url\": \"{}\"}}')",
            receiver.url("/acme")
        ))
        .unwrap_or_else(|e| panic!("expected acme's admin to create a channel: {}", error_text(&e)));
    alice
        .batch_execute("UPDATE secumon.notification_channels SET severities = '{critical}' WHERE name = 'acme-hook'")
        .unwrap();
    assert_sqlstate(
        alice.batch_execute("UPDATE secumon.notification_channels SET tenant_ids = '{acme,globex}'"),
        "42501",
        "routing acme's channel to globex too",
    );
    let test: secumon_e2e::serde_json::Value =
        alice.query_one("SELECT secumon.test_channel('acme-hook')", &[]).unwrap().get(0);
    assert_eq!(test["ok"], true, "expected acme's admin to test its channel: {test}");
    assert_sqlstate(
        alice.query_one("SELECT secumon.test_channel('globex-hook')", &[]),
        "42704",
        "testing globex's channel",
    );
    assert_eq!(
        cluster.psql_one("SELECT tenant_ids::text || severities::text FROM secumon.notification_channels WHERE name = 'acme-hook'"),
        "{acme}{critical}"
    );

    let operator = cluster.create_login_role("ops_channels", &["secumon_admin"]);
    let mut ops = cluster.client_for(&operator);
    ops.batch_execute(&format!(
        "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('ops-hook', 'webhook', '{{\"url\": \"{}\"}}')",
        receiver.url("/ops")
    ))
    .unwrap_or_else(|e| panic!("expected an operator to create a channel: {}", error_text(&e)));
    ops.batch_execute("UPDATE secumon.notification_channels SET enabled = false WHERE name = 'ops-hook'")
        .unwrap_or_else(|e| panic!("expected an operator to update a channel: {}", error_text(&e)));
    assert_sqlstate(
        ops.batch_execute("UPDATE secumon.notification_channels SET settings = '{}' WHERE name = 'ops-hook'"),
        "22023",
        "a webhook channel without url",
    );
}

#[test]
fn a_reader_session_authenticated_as_an_admin_writes_nothing() {
    let cluster = Cluster::start();
    let receiver = HttpReceiver::start();
    let (alert, _) = two_tenants(&cluster, &receiver);
    let reader = cluster.create_login_role("reader_dashboard", &["secumon_reader"]);
    let mut dashboard = cluster.client_for(&reader);
    let token = login(&mut dashboard, "alice");
    authenticate(&mut dashboard, &token);
    for (call, what) in [
        ("SELECT secumon.create_user('mallory', 'password-of-mallory', 'admin')", "create_user"),
        ("SELECT secumon.set_user_role('rita', 'admin')", "set_user_role"),
        ("SELECT secumon.deactivate_user('rita')", "deactivate_user"),
        ("SELECT secumon.revoke_sessions('rita')", "revoke_sessions"),
        ("SELECT secumon.change_password('password-of-alice', 'another-password')", "change_password"),
        ("SELECT secumon.silence('1 hour', 'quiet')", "silence"),
        ("UPDATE secumon.agents SET labels = '{}'", "UPDATE agents"),
    ] {
        assert_sqlstate(dashboard.batch_execute(call), "42501", what);
    }
    assert_sqlstate(
        dashboard.batch_execute(&format!("SELECT secumon.ack_alert('{alert}', 'x')")),
        "42501",
        "ack_alert",
    );
    assert_eq!(
        cluster.psql_one("SELECT count(*) FROM secumon.users WHERE username = 'mallory' OR (username = 'rita' AND role <> 'readonly')"),
        "0"
    );
    // It still reads its tenant and ends its session.
    assert_eq!(
        dashboard.query_one("SELECT count(*) FROM secumon.tenants", &[]).unwrap().get::<_, i64>(0),
        1
    );
    dashboard.batch_execute("SELECT secumon.logout()").unwrap();
}

#[test]
fn a_rule_on_a_series_only_another_tenant_reports_is_refused_like_an_unknown_one() {
    let cluster = Cluster::start();
    let receiver = HttpReceiver::start();
    two_tenants(&cluster, &receiver);
    cluster.psql(
        "SELECT secumon.register_agent('globex-db-1', 'db1'); \
         UPDATE secumon.agents SET tenant_id = 'globex' WHERE agent_id = 'globex-db-1'; \
         SELECT secumon.ingest('globex-db-1', now() - interval '1 minute', ARRAY['system.globex_queue_depth'], ARRAY[7.0], \
                               '[]', '[]', '[]');",
    );
    let web = cluster.create_login_role("web_rules", &["secumon_web"]);
    let mut alice = cluster.client_for(&web);
    let token = login(&mut alice, "alice");
    authenticate(&mut alice, &token);
    let attempt = |client: &mut Client, series: &str| -> String {
        match client.batch_execute(&format!(
            "INSERT INTO secumon.alert_rules (name, metric_type, metric_name, condition, threshold) \
             VALUES ('watch {series}', 'system', '{series}', 'gt', 1)"
        )) {
            Ok(()) => "stored".to_string(),
            Err(e) => error_text(&e).replace(series, "<series>"),
        }
    };
    let foreign = attempt(&mut alice, "globex_queue_depth");
    let missing = attempt(&mut alice, "nobody_reports_this");
    assert!(missing.contains("unknown metric") && missing.contains("[22023]"), "{missing}");
    assert_eq!(foreign, missing, "another tenant's series must look exactly like a missing one");
    // The tenant that reports it may alert on it.
    let mut bob = cluster.client_for(&web);
    let token = login(&mut bob, "bob");
    authenticate(&mut bob, &token);
    assert_eq!(attempt(&mut bob, "globex_queue_depth"), "stored");
}
