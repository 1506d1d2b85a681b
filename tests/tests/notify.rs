//! Notification dispatch end to end: a real cluster with the notifier running, real HTTP
//! receivers on 127.0.0.1 and a real SMTP server. Notifications are driven by inserting alert
//! transitions into secumon.alert_events, as the alert engine does (docs/contracts.md).

use std::process::{Command, Stdio};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use secumon_e2e::receivers::{HttpReceiver, Reply, Request, SmtpReceiver, SmtpTls};
use secumon_e2e::serde_json::{json, Value};
use secumon_e2e::*;

/// Fast retries so fault tests finish in seconds.
const FAST_RETRIES: [(&str, &str); 4] = [
    ("secumon.notify_backoff_base", "200ms"),
    ("secumon.notify_backoff_max", "1s"),
    ("secumon.notify_poll_interval", "500ms"),
    ("secumon.notify_max_attempts", "50"),
];

fn cluster() -> Cluster {
    Cluster::start_with(&FAST_RETRIES)
}

fn alert_id(n: u32) -> String {
    format!("5f1c7a52-2d1b-4f0e-8a67-{n:012}")
}

const RULE_ID: &str = "9a8b7c6d-0000-4000-8000-000000000001";

/// Inserts one alert transition (its own transaction) and returns (event id, commit time).
fn transition(cluster: &Cluster, alert: &str, event: &str, severity: &str, summary: &str) -> (i64, SystemTime) {
    let payload = json!({
        "alert_id": alert, "rule_id": RULE_ID, "rule_name": "High CPU", "tenant_id": "default",
        "agent_id": "web-1", "hostname": "web-1.example", "series_key": "", "state": event, "event": event,
        "severity": severity, "metric": "cpu.usage_percent", "condition": ">", "threshold": 90,
        "current_value": 97.5, "started_at": "2026-11-25T10:00:00Z", "triggered_at": "2026-11-25T10:05:00Z",
        "resolved_at": if event == "resolved" { json!("2026-11-25T10:20:00Z") } else { Value::Null },
        "acknowledged_at": null, "acknowledged_by": null, "ack_comment": null,
        "labels": {"env": "prod", "role": "web"}, "summary": summary
    });
    let mut client = cluster.client();
    let row = client
        .query_one(
            "INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, event, severity, payload)
             VALUES ($1::text::uuid, $2::text::uuid, 'default', 'web-1', $3, $4, $5) RETURNING id",
            &[&alert, &RULE_ID, &event, &severity, &payload],
        )
        .unwrap_or_else(|e| panic!("expected to insert an alert event: {}", error_text(&e)));
    (row.get(0), SystemTime::now())
}

fn add_channel(cluster: &Cluster, name: &str, kind: &str, settings: Value) {
    add_channel_routed(cluster, name, kind, settings, "NULL");
}

fn add_channel_routed(cluster: &Cluster, name: &str, kind: &str, settings: Value, severities: &str) {
    cluster
        .client()
        .execute(
            &format!(
                "INSERT INTO secumon.notification_channels (name, type, settings, severities) VALUES ($1, $2, $3, {severities})"
            ),
            &[&name, &kind, &settings],
        )
        .unwrap_or_else(|e| panic!("expected to create channel {name}: {}", error_text(&e)));
}

/// The outbox rows of channel `name`, oldest first, as JSON.
fn outbox(cluster: &Cluster, name: &str) -> Vec<Value> {
    cluster
        .client()
        .query(
            "SELECT to_jsonb(h) FROM secumon.notification_history h WHERE channel_name = $1 ORDER BY notification_id",
            &[&name],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn wait_for_status(cluster: &Cluster, name: &str, n: usize, status: &str, timeout: Duration) -> Vec<Value> {
    let ok = wait_until(timeout, || {
        let rows = outbox(cluster, name);
        rows.len() == n && rows.iter().all(|r| r["status"] == status)
    });
    let rows = outbox(cluster, name);
    assert!(ok, "expected {n} notifications to {name} with status {status} within {timeout:?}; history: {rows:#?}");
    rows
}

fn hmac_sha256_hex(key: &str, data: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("expected openssl");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

const TELEGRAM_OK: &str = r#"{"ok":true,"result":{"message_id":1}}"#;

#[test]
fn firing_and_resolved_reach_every_channel_type_in_its_receivers_format() {
    let cluster = cluster();
    let webhook = HttpReceiver::start_answering(Reply::status(204, ""));
    let slack = HttpReceiver::start_answering(Reply::ok("ok"));
    let telegram = HttpReceiver::start_answering(Reply::ok(TELEGRAM_OK));
    let pagerduty = HttpReceiver::start_answering(Reply::status(202, r#"{"status":"success","message":"Event processed"}"#));
    let teams = HttpReceiver::start_answering(Reply::status(202, ""));
    let smtp = SmtpReceiver::start(SmtpTls::Starttls, Some(("mailer", "mail-pass-123")));

    add_channel(&cluster, "ops-webhook", "webhook", json!({
        "url": webhook.url("/hooks/secumon"), "hmac_secret": "0123456789abcdef-secret",
        "headers": {"Authorization": "Bearer webhook-token"}}));
    add_channel(&cluster, "ops-slack", "slack", json!({"url": slack.url("/services/T0/B0/abc")}));
    add_channel(&cluster, "ops-telegram", "telegram", json!({
        "bot_token": "123456:ABCdef_ghi", "chat_id": -1001234, "api_url": telegram.url("")}));
    add_channel(&cluster, "ops-pagerduty", "pagerduty", json!({
        "routing_key": "R0UTINGKEY0123456789", "url": pagerduty.url("/v2/enqueue")}));
    add_channel(&cluster, "ops-teams", "teams", json!({"url": teams.url("/workflows/abc/triggers/manual")}));
    add_channel(&cluster, "ops-email", "email", json!({
        "host": "127.0.0.1", "port": smtp.port(), "tls": "starttls", "ca_cert_pem": smtp.ca_pem.clone().unwrap(),
        "username": "mailer", "password": "mail-pass-123",
        "from": "SecuMon <secumon@example.com>", "to": ["ops@example.com"]}));

    let alert = alert_id(1);
    transition(&cluster, &alert, "firing", "critical", "CPU usage 97.5% > 90% for 5 minutes");
    let wait = Duration::from_secs(15);
    for receiver in [&webhook, &slack, &telegram, &pagerduty, &teams] {
        receiver.wait_for(1, wait);
    }
    smtp.wait_for(1, wait);
    transition(&cluster, &alert, "resolved", "critical", "CPU usage back to 12%");
    for receiver in [&webhook, &slack, &telegram, &pagerduty, &teams] {
        receiver.wait_for(2, wait);
    }
    let mails = smtp.wait_for(2, wait);

    // Webhook: documented body, idempotency key, custom header, verifiable signature.
    let requests = webhook.requests();
    let keys: Vec<Value> = outbox(&cluster, "ops-webhook").iter().map(|r| r["idempotency_key"].clone()).collect();
    for (request, key) in requests.iter().zip(&keys) {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/secumon");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("authorization"), Some("Bearer webhook-token"));
        assert_eq!(Some(request.header("x-secumon-notification-id").unwrap()), key.as_str());
        let timestamp = request.header("x-secumon-timestamp").expect("timestamp header");
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(&request.body);
        assert_eq!(
            request.header("x-secumon-signature"),
            Some(format!("sha256={}", hmac_sha256_hex("0123456789abcdef-secret", &signed)).as_str())
        );
    }
    let firing = requests[0].json();
    assert_eq!(firing["version"], 1);
    assert_eq!(firing["event"], "firing");
    assert_eq!(firing["alert_id"], alert.as_str());
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["rule"], json!({"id": RULE_ID, "name": "High CPU"}));
    assert_eq!(firing["agent"]["id"], "web-1");
    assert_eq!(firing["agent"]["labels"]["env"], "prod");
    assert_eq!(firing["metric"], "cpu.usage_percent");
    assert_eq!(firing["threshold"], 90);
    assert_eq!(firing["current_value"], 97.5);
    assert_eq!(firing["started_at"], "2026-11-25T10:00:00Z");
    assert_eq!(requests[1].json()["event"], "resolved");
    assert_eq!(requests[1].json()["resolved_at"], "2026-11-25T10:20:00Z");

    // Slack: attachment colour by severity, green when resolved.
    let slack_bodies: Vec<Value> = slack.requests().iter().map(Request::json).collect();
    assert_eq!(slack.requests()[0].path, "/services/T0/B0/abc");
    assert_eq!(slack_bodies[0]["attachments"][0]["color"], "#d00000");
    assert!(slack_bodies[0]["text"].as_str().unwrap().starts_with("[FIRING] critical: High CPU"));
    assert_eq!(slack_bodies[1]["attachments"][0]["color"], "#2eb886");
    assert!(slack_bodies[1]["text"].as_str().unwrap().starts_with("[RESOLVED]"));

    // Telegram: sendMessage with the bot token in the path, HTML mode.
    let tg = telegram.requests();
    assert_eq!(tg[0].path, "/bot123456:ABCdef_ghi/sendMessage");
    let body = tg[0].json();
    assert_eq!(body["chat_id"], -1001234);
    assert_eq!(body["parse_mode"], "HTML");
    assert!(body["text"].as_str().unwrap().starts_with("<b>[FIRING] critical: High CPU on web-1.example</b>"));

    // PagerDuty: trigger then resolve, one dedup_key = the alert id.
    let pd: Vec<Value> = pagerduty.requests().iter().map(Request::json).collect();
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["routing_key"], "R0UTINGKEY0123456789");
    assert_eq!(pd[0]["dedup_key"], alert.as_str());
    assert_eq!(pd[0]["payload"]["severity"], "critical");
    assert_eq!(pd[0]["payload"]["source"], "web-1.example");
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[1]["dedup_key"], alert.as_str());

    // Teams: a message with an Adaptive Card attachment.
    let card = teams.requests()[0].json();
    assert_eq!(card["type"], "message");
    assert_eq!(card["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(card["attachments"][0]["content"]["type"], "AdaptiveCard");
    assert_eq!(card["attachments"][0]["content"]["body"][0]["color"], "Attention");
    assert_eq!(teams.requests()[1].json()["attachments"][0]["content"]["body"][0]["color"], "Good");

    // E-mail: over STARTTLS, authenticated, plain-text and HTML parts.
    for mail in &mails {
        assert_eq!(mail["encrypted"], true, "expected STARTTLS: {mail}");
        assert_eq!(mail["login"], "mailer");
        assert_eq!(mail["rcpt_tos"], json!(["ops@example.com"]));
        let data = mail["data"].as_str().unwrap();
        assert!(data.contains("multipart/alternative"), "{data}");
        assert!(data.contains("text/plain") && data.contains("text/html"), "{data}");
    }
    assert!(mails[0]["data"].as_str().unwrap().contains("Subject: [FIRING] critical: High CPU on web-1.example"));
    assert!(mails[1]["data"].as_str().unwrap().contains("Subject: [RESOLVED] High CPU on web-1.example"));

    for name in ["ops-webhook", "ops-slack", "ops-telegram", "ops-pagerduty", "ops-teams", "ops-email"] {
        let rows = wait_for_status(&cluster, name, 2, "sent", Duration::from_secs(5));
        assert!(rows.iter().all(|r| r["attempts"] == 1), "{name}: {rows:#?}");
        assert!(rows.iter().all(|r| r["latency_ms"].as_f64().is_some()), "{name}: {rows:#?}");
    }
}

#[test]
fn email_over_implicit_tls_is_delivered() {
    let cluster = cluster();
    let smtp = SmtpReceiver::start(SmtpTls::Implicit, Some(("u1", "p1-secret")));
    add_channel(&cluster, "mail", "email", json!({
        "host": "127.0.0.1", "port": smtp.port(), "tls": "tls", "ca_cert_pem": smtp.ca_pem.clone().unwrap(),
        "username": "u1", "password": "p1-secret", "from": "secumon@example.com", "to": ["a@example.com", "b@example.com"]}));
    transition(&cluster, &alert_id(1), "firing", "warning", "disk almost full");
    let mails = smtp.wait_for(1, Duration::from_secs(15));
    assert_eq!(mails[0]["encrypted"], true);
    assert_eq!(mails[0]["rcpt_tos"], json!(["a@example.com", "b@example.com"]));
    let rows = wait_for_status(&cluster, "mail", 1, "sent", Duration::from_secs(5));
    assert_eq!(rows[0]["last_status"], 250);
}

#[test]
fn a_receiver_that_is_down_gets_everything_once_it_is_back() {
    let cluster = cluster();
    let mut receiver = HttpReceiver::start();
    receiver.down();
    add_channel(&cluster, "hook", "webhook", json!({"url": receiver.url("/x")}));
    for n in 1..=5 {
        transition(&cluster, &alert_id(n), "firing", "critical", "cpu");
    }
    let retried = wait_until(Duration::from_secs(10), || {
        outbox(&cluster, "hook").iter().all(|r| r["status"] == "pending" && r["attempts"].as_i64() >= Some(2))
    });
    let rows = outbox(&cluster, "hook");
    assert!(retried, "expected retries while the receiver is down: {rows:#?}");
    assert!(rows.iter().all(|r| r["last_error"] == "connection refused"), "{rows:#?}");

    receiver.up();
    let requests = receiver.wait_for(5, Duration::from_secs(10));
    wait_for_status(&cluster, "hook", 5, "sent", Duration::from_secs(5));
    let mut ids: Vec<&str> = requests.iter().map(|r| r.header("x-secumon-notification-id").unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "expected every notification once");
}

#[test]
fn retry_after_429_is_waited_for_not_hammered() {
    let cluster = cluster();
    let receiver = HttpReceiver::start();
    receiver.then(Reply::status(429, "slow down").header("Retry-After", "2"));
    add_channel(&cluster, "hook", "webhook", json!({"url": receiver.url("/x")}));
    transition(&cluster, &alert_id(1), "firing", "critical", "cpu");
    let requests = receiver.wait_for(2, Duration::from_secs(10));
    let gap = requests[1].instant.duration_since(requests[0].instant);
    assert!(gap >= Duration::from_secs(2), "expected the retry after Retry-After: 2 s, got {gap:?}");
    assert!(gap < Duration::from_secs(4), "expected the retry soon after Retry-After, got {gap:?}");
    let rows = wait_for_status(&cluster, "hook", 1, "sent", Duration::from_secs(5));
    assert_eq!(rows[0]["attempts"], 2);

    // An HTTP date works too.
    let at = SystemTime::now() + Duration::from_secs(3);
    receiver.then(Reply::status(503, "maintenance").header("Retry-After", &http_date(at)));
    transition(&cluster, &alert_id(2), "firing", "critical", "cpu");
    let requests = receiver.wait_for(4, Duration::from_secs(10));
    let gap = requests[3].instant.duration_since(requests[2].instant);
    assert!(gap >= Duration::from_secs(1), "expected the retry to wait for the Retry-After date, got {gap:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.count(), 4, "expected no extra attempts");
}

/// RFC 7231 IMF-fixdate, via `date` (the test crate has no date library).
fn http_date(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let out = Command::new("date").args(["-u", "-d", &format!("@{secs}"), "+%a, %d %b %Y %H:%M:%S GMT"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn telegram_retry_after_parameter_is_honoured() {
    let cluster = cluster();
    let telegram = HttpReceiver::start_answering(Reply::ok(TELEGRAM_OK));
    telegram.then(Reply::status(429, r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 2","parameters":{"retry_after":2}}"#));
    add_channel(&cluster, "tg", "telegram", json!({"bot_token": "1:abcdefgh", "chat_id": 7, "api_url": telegram.url("")}));
    transition(&cluster, &alert_id(1), "firing", "critical", "cpu");
    let requests = telegram.wait_for(2, Duration::from_secs(10));
    let gap = requests[1].instant.duration_since(requests[0].instant);
    assert!(gap >= Duration::from_secs(2), "expected Telegram's retry_after to be honoured, got {gap:?}");
    wait_for_status(&cluster, "tg", 1, "sent", Duration::from_secs(5));
}

#[test]
fn server_errors_are_retried_until_the_receiver_accepts() {
    let cluster = cluster();
    let receiver = HttpReceiver::start();
    receiver.then(Reply::status(500, "boom")).then(Reply::status(503, "busy"));
    add_channel(&cluster, "hook", "webhook", json!({"url": receiver.url("/x")}));
    transition(&cluster, &alert_id(1), "firing", "critical", "cpu");
    let requests = receiver.wait_for(3, Duration::from_secs(10));
    let rows = wait_for_status(&cluster, "hook", 1, "sent", Duration::from_secs(5));
    assert_eq!(rows[0]["attempts"], 3);
    assert_eq!(rows[0]["last_status"], 200);
    let key = requests[0].header("x-secumon-notification-id");
    assert!(requests.iter().all(|r| r.header("x-secumon-notification-id") == key), "same idempotency key on every attempt");
    assert!(requests.iter().all(|r| r.body == requests[0].body), "same body on every attempt");
}

#[test]
fn a_bad_request_fails_permanently_with_the_answer_recorded() {
    let cluster = cluster();
    let receiver = HttpReceiver::start_answering(Reply::status(400, "invalid_payload: missing text"));
    add_channel(&cluster, "hook", "slack", json!({"url": receiver.url("/services/x/y/z")}));
    transition(&cluster, &alert_id(1), "firing", "critical", "cpu");
    let rows = wait_for_status(&cluster, "hook", 1, "failed", Duration::from_secs(10));
    assert_eq!(rows[0]["attempts"], 1);
    assert_eq!(rows[0]["last_status"], 400);
    assert_eq!(rows[0]["last_response"], "invalid_payload: missing text");
    assert_eq!(rows[0]["last_error"], "HTTP 400");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.count(), 1, "a permanent failure is not retried");
    // An admin can send it again by hand.
    receiver.answer(Reply::ok("ok"));
    let id = rows[0]["notification_id"].as_i64().unwrap();
    assert_eq!(cluster.psql_one(&format!("SELECT secumon.retry_notification({id})")), "t");
    wait_for_status(&cluster, "hook", 1, "sent", Duration::from_secs(10));
}

#[test]
fn exhausted_attempts_mark_the_notification_failed() {
    let cluster = Cluster::start_with(&[
        ("secumon.notify_backoff_base", "100ms"),
        ("secumon.notify_backoff_max", "200ms"),
        ("secumon.notify_max_attempts", "3"),
    ]);
    let receiver = HttpReceiver::start_answering(Reply::status(502, "bad gateway"));
    add_channel(&cluster, "hook", "webhook", json!({"url": receiver.url("/x")}));
    transition(&cluster, &alert_id(1), "firing", "critical", "cpu");
    let rows = wait_for_status(&cluster, "hook", 1, "failed", Duration::from_secs(10));
    assert_eq!(rows[0]["attempts"], 3);
    assert!(rows[0]["last_error"].as_str().unwrap().contains("gave up after 3 attempts"), "{rows:#?}");
    assert_eq!(receiver.count(), 3);
}

#[test]
fn resolved_never_overtakes_firing_of_the_same_alert() {
    let cluster = cluster();
    let receiver = HttpReceiver::start();
    receiver.then(Reply::status(500, "first attempt fails"));
    add_channel(&cluster, "hook", "webhook", json!({"url": receiver.url("/x")}));
    let alert = alert_id(1);
    transition(&cluster, &alert, "firing", "critical", "cpu");
    transition(&cluster, &alert, "resolved", "critical", "cpu ok");
    let requests = receiver.wait_for(3, Duration::from_secs(10));
    let events: Vec<String> = requests.iter().map(|r| r.json()["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["firing", "firing", "resolved"]);
}

#[test]
fn restart_while_notifications_are_in_flight_or_pending_loses_nothing() {
    let mut cluster = cluster();
    let slow = HttpReceiver::start_answering(Reply::ok("ok").after(Duration::from_secs(4)));
    let mut down = HttpReceiver::start();
    down.down();
    add_channel_routed(&cluster, "slow", "webhook", json!({"url": slow.url("/slow"), "timeout_ms": 20000}), "ARRAY['critical']");
    add_channel_routed(&cluster, "down", "webhook", json!({"url": down.url("/down")}), "ARRAY['warning']");
    for n in 1..=3 {
        transition(&cluster, &alert_id(n), "firing", "critical", "cpu");
        transition(&cluster, &alert_id(100 + n), "firing", "warning", "disk");
    }
    slow.wait_for(3, Duration::from_secs(10));
    let sending = outbox(&cluster, "slow").iter().filter(|r| r["status"] == "sending").count();
    assert_eq!(sending, 3, "expected the slow deliveries in flight");
    assert!(wait_until(Duration::from_secs(10), || outbox(&cluster, "down").iter().all(|r| r["attempts"].as_i64() >= Some(1))));

    cluster.restart();
    slow.answer(Reply::ok("ok"));
    down.up();

    wait_for_status(&cluster, "slow", 3, "sent", Duration::from_secs(20));
    wait_for_status(&cluster, "down", 3, "sent", Duration::from_secs(20));
    let delivered = |r: &HttpReceiver| {
        let mut ids: Vec<String> = r.requests().iter().map(|q| q.header("x-secumon-notification-id").unwrap().to_string()).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    assert_eq!(delivered(&slow), 3);
    assert_eq!(delivered(&down), 3);
    assert!(cluster.log().contains("were in flight at the last stop"), "expected the requeue to be logged");
}

#[test]
fn a_crash_with_pending_notifications_loses_nothing() {
    let mut cluster = cluster();
    let mut receiver = HttpReceiver::start();
    receiver.down();
    add_channel(&cluster, "hook", "webhook", json!({"url": receiver.url("/x")}));
    for n in 1..=4 {
        transition(&cluster, &alert_id(n), "firing", "critical", "cpu");
    }
    assert!(wait_until(Duration::from_secs(10), || outbox(&cluster, "hook").iter().all(|r| r["attempts"].as_i64() >= Some(1))));
    cluster.crash();
    receiver.up();
    cluster.start_again();
    receiver.wait_for(4, Duration::from_secs(20));
    wait_for_status(&cluster, "hook", 4, "sent", Duration::from_secs(10));
}

#[test]
fn a_slow_receiver_does_not_delay_other_channels() {
    let cluster = cluster();
    let slow = HttpReceiver::start_answering(Reply::ok("ok").after(Duration::from_secs(5)));
    let fast = HttpReceiver::start();
    add_channel(&cluster, "slow", "webhook", json!({"url": slow.url("/slow"), "timeout_ms": 8000}));
    add_channel(&cluster, "fast", "webhook", json!({"url": fast.url("/fast")}));
    let mut commits = Vec::new();
    for n in 1..=20 {
        commits.push(transition(&cluster, &alert_id(n), "firing", "critical", "cpu").1);
    }
    let requests = fast.wait_for(20, Duration::from_secs(5));
    let worst = requests
        .iter()
        .zip(&commits)
        .map(|(r, c)| r.received_at.duration_since(*c).unwrap_or_default())
        .max()
        .unwrap();
    assert!(worst < Duration::from_millis(1000), "expected the fast channel unaffected by the slow one; worst {worst:?}");
    assert!(slow.count() < 20, "the slow receiver is still being served");
}

#[test]
fn telegram_escapes_html_and_cuts_long_messages() {
    let cluster = cluster();
    let telegram = HttpReceiver::start_answering(Reply::ok(TELEGRAM_OK));
    add_channel(&cluster, "tg", "telegram", json!({"bot_token": "1:abcdefgh", "chat_id": "@ops", "api_url": telegram.url("")}));
    let summary = format!("<b>load</b> & \"io\" {}", "x".repeat(5000));
    transition(&cluster, &alert_id(1), "firing", "critical", &summary);
    let request = &telegram.wait_for(1, Duration::from_secs(10))[0];
    let text = request.json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("&lt;b&gt;load&lt;/b&gt; &amp; &quot;io&quot;"), "{}", &text[..200]);
    // Visible: the 44-character title, a newline, the 19 characters before the x's, 4,031 x's
    // and the ellipsis: 4,096 characters, Telegram's limit.
    let expected = format!(
        "<b>[FIRING] critical: High CPU on web-1.example</b>\n&lt;b&gt;load&lt;/b&gt; &amp; &quot;io&quot; {}…",
        "x".repeat(4031)
    );
    assert_eq!(text, expected, "expected the message cut to 4096 visible characters");
    assert!(text.ends_with('…'));
    assert_eq!(text.matches("<b>").count(), text.matches("</b>").count());
    wait_for_status(&cluster, "tg", 1, "sent", Duration::from_secs(5));
}

#[test]
fn test_channel_returns_the_receivers_answer() {
    let cluster = cluster();
    let receiver = HttpReceiver::start_answering(Reply::ok("ok"));
    add_channel(&cluster, "hook", "slack", json!({"url": receiver.url("/services/a/b/c")}));
    let answer: Value = cluster.client().query_one("SELECT secumon.test_channel('hook')", &[]).unwrap().get(0);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["response"], "ok");
    assert!(receiver.requests()[0].json()["text"].as_str().unwrap().starts_with("[TEST]"));

    receiver.answer(Reply::status(404, "no_service"));
    let answer: Value = cluster.client().query_one("SELECT secumon.test_channel('hook')", &[]).unwrap().get(0);
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["outcome"], "permanent");
    assert_eq!(answer["status"], 404);
    assert_eq!(answer["response"], "no_service");

    let missing = cluster.client().query_one("SELECT secumon.test_channel('nope')", &[]);
    assert_sqlstate(missing, "42704", "testing an unknown channel");
    // test_channel sends outside the outbox.
    assert!(outbox(&cluster, "hook").is_empty());
}

#[test]
fn secrets_stay_out_of_logs_errors_and_non_admin_queries() {
    let webhook_secret_url_receiver = HttpReceiver::start_answering(
        Reply::status(400, "bad request for /hooks/SECRET-webhook-path-1234"),
    );
    let default_url = webhook_secret_url_receiver.url("/hooks/SECRET-webhook-path-1234");
    let mut settings: Vec<(&str, &str)> = FAST_RETRIES.to_vec();
    settings.push(("log_min_messages", "debug1"));
    settings.push(("secumon.webhook_url", &default_url));
    let cluster = Cluster::start_with(&settings);
    let refused = free_port();
    add_channel(&cluster, "tg", "telegram", json!({
        "bot_token": "987654:SECRETtelegramTOKEN", "chat_id": 1, "api_url": format!("http://127.0.0.1:{refused}")}));
    add_channel(&cluster, "mail", "email", json!({
        "host": "127.0.0.1", "port": refused, "tls": "none", "username": "u", "password": "SECRETsmtpPASSWORD",
        "from": "a@example.com", "to": ["b@example.com"]}));
    assert!(
        wait_until(Duration::from_secs(10), || cluster.psql_one(
            "SELECT count(*) FROM secumon.notification_channels WHERE name = 'default-webhook' AND managed_by = 'guc'") == "1"),
        "expected secumon.webhook_url to create the default-webhook channel"
    );
    transition(&cluster, &alert_id(1), "firing", "critical", "cpu");
    wait_for_status(&cluster, "default-webhook", 1, "failed", Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(10), || {
        ["tg", "mail"].iter().all(|c| outbox(&cluster, c).iter().all(|r| r["attempts"].as_i64() >= Some(2)))
    }));
    let answers: Vec<String> = ["tg", "mail", "default-webhook"]
        .iter()
        .map(|c| cluster.psql_one(&format!("SELECT secumon.test_channel('{c}')::text")))
        .collect();
    let bad_settings = cluster.client().execute(
        "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('bad', 'telegram', '{\"bot_token\": \"SECRET-invalid-token\", \"chat_id\": 1}')",
        &[],
    );
    let bad_error = match bad_settings {
        Ok(_) => panic!("expected invalid settings to be refused"),
        Err(e) => {
            assert_eq!(sqlstate(&e).as_deref(), Some("22023"));
            error_text(&e)
        }
    };

    // A database role without a SecuMon identity sees other tenants' rows only while
    // secumon.auth_required is off (sql/auth.sql); this test is about secrets, not tenancy.
    cluster.psql("ALTER SYSTEM SET secumon.auth_required = off");
    cluster.psql("SELECT pg_reload_conf()");
    let reader = cluster.create_login_role("reader1", &["secumon_reader"]);
    let mut client = cluster.client_for(&reader);
    assert_sqlstate(client.query("SELECT * FROM secumon.notification_channels", &[]), "42501", "a reader reading channels");
    assert_sqlstate(client.query("SELECT * FROM secumon.notification_outbox", &[]), "42501", "a reader reading the outbox");
    assert_sqlstate(client.query("SELECT secumon.test_channel('tg')", &[]), "42501", "a reader testing a channel");
    assert_sqlstate(client.query("SHOW secumon.webhook_url", &[]), "42501", "a reader showing the webhook URL");
    let history: Vec<String> = client
        .query("SELECT to_jsonb(h)::text FROM secumon.notification_history h", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!history.is_empty(), "readers see the history");
    let settings_visible: String = client
        .query_one("SELECT coalesce(string_agg(setting, ','), '') FROM pg_settings WHERE name LIKE 'secumon.%url%'", &[])
        .unwrap()
        .get(0);

    // PostgreSQL itself echoes a failing statement (log_min_error_statement); that is the
    // admin's own text, not something SecuMon logged.
    let log: String = cluster.log().lines().filter(|l| !l.contains(" STATEMENT: ")).collect::<Vec<_>>().join("\n");
    let everything = format!("{log}\n{}\n{}\n{bad_error}\n{settings_visible}", answers.join("\n"), history.join("\n"));
    for secret in ["SECRET-webhook-path-1234", "SECRETtelegramTOKEN", "SECRETsmtpPASSWORD", "SECRET-invalid-token"] {
        assert!(!everything.contains(secret), "secret {secret} leaked:\n{}", everything.lines().filter(|l| l.contains(secret)).collect::<Vec<_>>().join("\n"));
    }
    assert!(history.iter().any(|h| h.contains("[redacted]")), "expected the echoed URL to be redacted: {history:?}");
    assert!(log.contains("secumon notifier"), "expected the notifier to log (debug1) so the check means something");
}

#[test]
fn settings_create_refresh_and_remove_default_channels() {
    let receiver = HttpReceiver::start();
    let cluster = Cluster::start_with(&[("secumon.slack_webhook_url", &receiver.url("/services/default/1"))]);
    assert!(wait_until(Duration::from_secs(10), || cluster.psql_one(
        "SELECT count(*) FROM secumon.notification_channels WHERE name = 'default-slack' AND type = 'slack'") == "1"));
    let (_, committed) = transition(&cluster, &alert_id(1), "firing", "critical", "cpu");
    let request = &receiver.wait_for(1, Duration::from_secs(10))[0];
    assert_eq!(request.path, "/services/default/1");
    let latency = request.received_at.duration_since(committed).unwrap_or_default();
    assert!(latency < Duration::from_millis(500), "expected the commit to wake the notifier, took {latency:?}");

    cluster.psql(&format!("ALTER SYSTEM SET secumon.slack_webhook_url = '{}'", receiver.url("/services/default/2")));
    cluster.psql("SELECT pg_reload_conf()");
    assert!(wait_until(Duration::from_secs(20), || cluster.psql_one(
        "SELECT settings->>'url' FROM secumon.notification_channels WHERE name = 'default-slack'").ends_with("/services/default/2")));
    cluster.psql("ALTER SYSTEM SET secumon.slack_webhook_url = ''");
    cluster.psql("SELECT pg_reload_conf()");
    assert!(wait_until(Duration::from_secs(20), || cluster.psql_one(
        "SELECT count(*) FROM secumon.notification_channels WHERE name = 'default-slack'") == "0"));
}

#[test]
fn health_lists_the_notifier_and_jobs_list_its_retention() {
    let cluster = cluster();
    assert!(wait_until(Duration::from_secs(10), || {
        let health: Value = cluster.client().query_one("SELECT secumon.health()", &[]).unwrap().get(0);
        health["workers"].as_array().unwrap().iter().any(|w| w["name"] == "secumon notifier" && w["running"] == true)
    }));
    let started = Instant::now();
    cluster.run_job_and_wait("notification_retention", Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(cluster.job("notification_retention")["worker"], "notifier");
}
