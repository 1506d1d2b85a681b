//! What no client may do to the others, end to end: hold SecuMon's workers up with a lock, get
//! a channel's secret stored where readers see it, or be refused a token the shared secret
//! signed. In-database counterparts (oracles, time window, ids, ownership, JSON bounds):
//! secumon_pg/src/tests/abuse_tests.rs.

use std::time::Duration;

use secumon_e2e::receivers::{HttpReceiver, Reply};
use secumon_e2e::serde_json::{json, Value};
use secumon_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

/// 0.1.0's advisory-lock key of the workers (readable by anyone in pg_proc).
const OLD_WORKER_LOCK_KEY: i64 = 0x5EC0_0E47;

fn health(cluster: &Cluster) -> Value {
    cluster.client().query_one("SELECT secumon.health()", &[]).expect("secumon.health() works").get(0)
}

/// health()'s entry for worker `name`.
fn worker_health(cluster: &Cluster, name: &str) -> Value {
    health(cluster)["workers"]
        .as_array()
        .and_then(|workers| workers.iter().find(|w| w["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Whether a process of `backend_type` is waiting for a heavyweight lock right now.
fn waits_for_a_lock(cluster: &Cluster, backend_type: &str) -> bool {
    cluster.psql_one(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = '{backend_type}' AND wait_event_type = 'Lock'"
    )) != "0"
}

fn alert_event(cluster: &Cluster, n: u32) {
    let payload = json!({
        "alert_id": format!("5f1c7a52-2d1b-4f0e-8a67-{n:012}"), "rule_id": "9a8b7c6d-0000-4000-8000-000000000001",
        "rule_name": "High CPU", "tenant_id": "default", "agent_id": "web-1", "hostname": "web-1", "series_key": "",
        "state": "firing", "event": "firing", "severity": "critical", "metric": "cpu.usage_percent", "condition": ">",
        "threshold": 90, "current_value": 97.5, "started_at": "2026-11-25T10:00:00Z", "triggered_at": "2026-11-25T10:05:00Z",
        "resolved_at": null, "acknowledged_at": null, "acknowledged_by": null, "ack_comment": null,
        "labels": {}, "summary": "cpu"
    });
    cluster
        .client()
        .execute(
            "INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, event, severity, payload)
             VALUES ($1::text::uuid, '9a8b7c6d-0000-4000-8000-000000000001', 'default', 'web-1', 'firing', 'critical', $2)",
            &[&format!("5f1c7a52-2d1b-4f0e-8a67-{n:012}"), &payload],
        )
        .unwrap_or_else(|e| panic!("expected to insert an alert event: {}", error_text(&e)));
}

fn history(cluster: &Cluster, channel: &str) -> Vec<Value> {
    cluster
        .client()
        .query(
            "SELECT to_jsonb(h) FROM secumon.notification_history h WHERE channel_name = $1 ORDER BY notification_id",
            &[&channel],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Locks: no client can hold the workers up

#[test]
fn a_session_holding_the_old_worker_lock_key_holds_no_worker_up() {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    cluster.wait_for_job_success("partition_upkeep", WAIT);
    // Any login role may take advisory locks; it takes the key 0.1.0's workers shared.
    let nobody = cluster.create_login_role("nobody", &[]);
    let mut holder = cluster.client_for(&nobody);
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&OLD_WORKER_LOCK_KEY])
        .unwrap_or_else(|e| panic!("expected any role to take an advisory lock: {}", error_text(&e)));

    let before = cluster.job("partition_upkeep")["last_success"].clone();
    cluster.run_job_soon("partition_upkeep");
    let job_ran = wait_until(WAIT, || cluster.job("partition_upkeep")["last_success"] != before);
    assert!(
        job_ran,
        "expected the maintenance worker to run partition_upkeep while a client holds the advisory lock key \
         {OLD_WORKER_LOCK_KEY:#x}; job: {}; workers waiting for locks: maintenance {}, alert engine {}",
        cluster.job("partition_upkeep"),
        waits_for_a_lock(&cluster, "secumon maintenance"),
        waits_for_a_lock(&cluster, "secumon alert engine")
    );
    let evaluated_before = cluster.job("alert_evaluation")["runs"].as_i64().unwrap_or(0);
    assert!(
        wait_until(WAIT, || cluster.job("alert_evaluation")["runs"].as_i64().unwrap_or(0) > evaluated_before + 1),
        "expected the alert engine to keep evaluating; job: {}",
        cluster.job("alert_evaluation")
    );
    drop(holder);
}

#[test]
fn a_client_lock_on_the_channels_makes_the_notifier_give_way_and_resume() {
    let cluster = Cluster::start_with(&[
        ("secumon.notify_backoff_base", "200ms"),
        ("secumon.notify_backoff_max", "500ms"),
        ("secumon.notify_poll_interval", "200ms"),
        ("secumon.notify_max_attempts", "1000"),
    ]);
    let receiver = HttpReceiver::start_answering(Reply::status(503, "busy"));
    cluster
        .client()
        .execute(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('ops', 'webhook', $1)",
            &[&json!({"url": receiver.url("/hooks/ops")})],
        )
        .unwrap_or_else(|e| panic!("expected to create the channel: {}", error_text(&e)));
    alert_event(&cluster, 1);
    assert!(
        wait_until(WAIT, || receiver.count() >= 2),
        "expected the notifier to retry the unavailable receiver"
    );

    // An operator's session (UPDATE on the channels is enough for LOCK TABLE) takes the
    // strongest lock and sits on it.
    let operator = cluster.create_login_role("operator1", &["secumon_admin"]);
    let mut locker = cluster.client_for(&operator);
    locker
        .batch_execute("BEGIN; LOCK TABLE secumon.notification_channels IN ACCESS EXCLUSIVE MODE;")
        .unwrap_or_else(|e| panic!("expected the operator to lock the channels: {}", error_text(&e)));
    let notifier_pid = cluster.psql_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'secumon notifier'");

    let mut entry = Value::Null;
    let reported = wait_until(WAIT, || {
        entry = worker_health(&cluster, "secumon notifier");
        !entry["waiting_for_lock_since"].is_null()
    });
    assert!(
        reported,
        "expected secumon.health() to show the notifier waiting for a lock; notifier: {entry}; \
         stuck in a lock wait: {}",
        waits_for_a_lock(&cluster, "secumon notifier")
    );
    // Giving way means not sitting in the lock queue: sample a few times.
    let mut seen = Vec::new();
    let stuck = (0..10)
        .filter(|_| {
            std::thread::sleep(Duration::from_millis(300));
            seen.push(cluster.psql(
                "SELECT wait_event_type, wait_event, state, left(query, 120), now() - xact_start
                   FROM pg_stat_activity WHERE backend_type = 'secumon notifier'",
            ));
            waits_for_a_lock(&cluster, "secumon notifier")
        })
        .count();
    assert!(stuck < 10, "expected the notifier not to sit in the lock queue behind the client's lock: {seen:#?}");
    assert!(
        cluster.log().contains("secumon notifier: giving way to a lock held by another session"),
        "expected the wait to be logged, naming the holders"
    );

    receiver.answer(Reply::ok("ok"));
    locker.batch_execute("COMMIT").unwrap();
    let mut rows = Vec::new();
    assert!(
        wait_until(WAIT, || {
            rows = history(&cluster, "ops");
            rows.len() == 1 && rows[0]["status"] == "sent"
        }),
        "expected the notification to be sent once the lock was released; history: {rows:#?}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || worker_health(&cluster, "secumon notifier")["waiting_for_lock_since"].is_null()),
        "expected health() to clear the wait; notifier: {}",
        worker_health(&cluster, "secumon notifier")
    );
    assert_eq!(
        cluster.psql_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'secumon notifier'"),
        notifier_pid,
        "expected the same notifier process throughout"
    );
}

#[test]
fn a_tenant_users_lock_on_alert_rules_makes_evaluation_give_way_and_resume() {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    cluster.wait_for_job_success("alert_evaluation", WAIT);
    // A web-tier role: UPDATE on alert_rules is what tenant users need to edit their rules.
    let web = cluster.create_login_role("webapp", &["secumon_web"]);
    let mut locker = cluster.client_for(&web);
    locker
        .batch_execute("BEGIN; LOCK TABLE secumon.alert_rules IN ACCESS EXCLUSIVE MODE;")
        .unwrap_or_else(|e| panic!("expected the web role to lock alert_rules: {}", error_text(&e)));
    let mut job = Value::Null;
    assert!(
        wait_until(WAIT, || {
            job = cluster.job("alert_evaluation");
            !job["waiting_since"].is_null()
        }),
        "expected alert_evaluation to give way and say so in secumon.jobs.waiting_since; job: {job}"
    );
    let stuck = (0..10)
        .filter(|_| {
            std::thread::sleep(Duration::from_millis(300));
            waits_for_a_lock(&cluster, "secumon alert engine")
        })
        .count();
    assert!(stuck < 10, "expected the alert engine not to sit in the lock queue behind the client's lock");
    locker.batch_execute("COMMIT").unwrap();
    assert!(
        wait_until(WAIT, || {
            job = cluster.job("alert_evaluation");
            job["waiting_since"].is_null() && job["last_error"].is_null()
        }),
        "expected alert_evaluation to succeed again once the lock was released; job: {job}"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets

#[test]
fn a_receiver_echoing_the_bare_bearer_token_does_not_get_it_stored() {
    const TOKEN: &str = "tok-SECRET-0123456789abcdef";
    let receiver = HttpReceiver::start_answering(Reply::status(400, &format!("{{\"error\": \"token {TOKEN} is not valid\"}}")));
    let cluster = Cluster::start_with(&[("secumon.notify_max_attempts", "1")]);
    cluster
        .client()
        .execute(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('echo', 'webhook', $1)",
            &[&json!({"url": receiver.url("/hooks/echo"), "headers": {"Authorization": format!("Bearer {TOKEN}")}})],
        )
        .unwrap_or_else(|e| panic!("expected to create the channel: {}", error_text(&e)));
    alert_event(&cluster, 2);
    let requests = receiver.wait_for(1, WAIT);
    assert_eq!(
        requests.first().and_then(|r| r.header("authorization")),
        Some(format!("Bearer {TOKEN}").as_str()),
        "the receiver must have been sent the token for the test to mean something"
    );
    assert!(wait_until(WAIT, || history(&cluster, "echo").iter().any(|r| r["status"] == "failed")));

    // A read-only user of the tenant reads the history.
    cluster.psql("ALTER SYSTEM SET secumon.auth_required = off");
    cluster.psql("SELECT pg_reload_conf()");
    let reader = cluster.create_login_role("reader1", &["secumon_reader"]);
    let seen: Vec<String> = cluster
        .client_for(&reader)
        .query("SELECT to_jsonb(h)::text FROM secumon.notification_history h", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!seen.is_empty(), "readers see the history");
    let all = seen.join("\n");
    assert!(!all.contains("SECRET-0123456789"), "the echoed bearer token was stored: {all}");
    assert!(all.contains("token [redacted] is not valid"), "expected the answer kept, token redacted: {all}");
}

// ---------------------------------------------------------------------------------------------
// Interop: tokens other services sign with the shared secret

/// An HS256 JWT without `kid`, signed in SQL (pgcrypto) with `secret`, for user `username`.
fn kidless_token(cluster: &Cluster, username: &str, secret: &str) -> String {
    cluster
        .client()
        .query_one(
            "WITH c AS (SELECT jsonb_build_object('user_id', id, 'email', email, 'role', role, 'tenant_id', tenant_id,
                                                  'iat', extract(epoch FROM now())::bigint,
                                                  'exp', extract(epoch FROM now())::bigint + 600,
                                                  'iss', 'secumon-api')::text AS claims
                          FROM secumon.users WHERE username = $1),
                  p AS (SELECT rtrim(translate(encode(convert_to('{\"alg\":\"HS256\",\"typ\":\"JWT\"}', 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')
                               || '.' || rtrim(translate(encode(convert_to(c.claims, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=') AS signed
                          FROM c)
             SELECT p.signed || '.' || rtrim(translate(encode(hmac(p.signed, $2, 'sha256'), 'base64'), E'+/\\n', '-_'), '=') FROM p",
            &[&username, &secret],
        )
        .unwrap_or_else(|e| panic!("expected to sign a test token: {}", error_text(&e)))
        .get(0)
}

#[test]
fn a_token_without_kid_signed_with_the_configuration_file_secret_is_accepted() {
    const SECRET: &str = "the-secret-the-old-api-shares-0123456789";
    let cluster = Cluster::start_with(&[("secumon.jwt_secret", SECRET)]);
    cluster.psql(
        "CREATE EXTENSION pgcrypto;
         INSERT INTO secumon.tenants (tenant_id, name) VALUES ('acme', 'Acme');
         SELECT secumon.create_user('interop_ann', 'password-of-ann', 'user', 'ann@acme.example', 'acme');",
    );
    let web = cluster.create_login_role("webapp", &["secumon_web"]);
    let mut client = cluster.client_for(&web);

    let token = kidless_token(&cluster, "interop_ann", SECRET);
    let claims: Value = client
        .query_one("SELECT secumon.verify_token($1)", &[&token])
        .unwrap_or_else(|e| panic!("expected a kid-less token signed with the configured secret to verify: {}", error_text(&e)))
        .get(0);
    assert_eq!(claims["tenant_id"], "acme");
    let tenant: Option<String> = client
        .query_one("SELECT secumon.authenticate($1)::text, secumon.current_tenant()", &[&token])
        .unwrap_or_else(|e| panic!("expected authenticate() to accept it: {}", error_text(&e)))
        .get(1);
    assert_eq!(tenant.as_deref(), Some("acme"));

    // Signed with another secret: refused, as ever.
    let forged = kidless_token(&cluster, "interop_ann", "another-secret-of-more-than-32-bytes!!");
    assert_sqlstate(client.query("SELECT secumon.verify_token($1)", &[&forged]), "28000", "a kid-less token with a wrong signature");
    // Revoking the user's tokens ends it too (it carries no ver: that is the first version).
    cluster.psql("UPDATE secumon.users SET token_version = token_version + 1 WHERE username = 'interop_ann'");
    assert_sqlstate(client.query("SELECT secumon.verify_token($1)", &[&token]), "28000", "a kid-less token after logout");

    // Without the setting in the configuration file (postgresql.auto.conf now unsets it), no
    // key verifies kid-less tokens: generated keys never do.
    cluster.psql("UPDATE secumon.users SET token_version = 0 WHERE username = 'interop_ann'");
    cluster.psql("ALTER SYSTEM SET secumon.jwt_secret = ''");
    cluster.psql("SELECT pg_reload_conf()");
    assert!(wait_until(Duration::from_secs(10), || {
        let mut fresh = cluster.client_for(&web);
        fresh.query("SELECT secumon.verify_token($1)", &[&token]).is_err()
    }), "expected kid-less tokens to be refused once secumon.jwt_secret is no longer configured");
}
