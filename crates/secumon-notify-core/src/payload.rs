//! What each channel type sends, following each receiver's published contract. The body of a
//! notification is identical on every retry (only the webhook signature timestamp changes), so
//! receivers can de-duplicate on `X-SecuMon-Notification-Id` / `dedup_key`.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::message::{self, text};
use crate::settings::{
    EmailSettings, PagerdutySettings, Settings, SlackSettings, TeamsSettings, TelegramSettings, WebhookSettings,
};
use crate::telegram::{self, Part};
use crate::{Channel, Notification};

/// Version of the webhook payload; bumped only for incompatible changes.
pub const WEBHOOK_PAYLOAD_VERSION: u32 = 1;
pub const NOTIFICATION_ID_HEADER: &str = "X-SecuMon-Notification-Id";
pub const EVENT_HEADER: &str = "X-SecuMon-Event";
pub const TIMESTAMP_HEADER: &str = "X-SecuMon-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-SecuMon-Signature";

/// An HTTP POST of a JSON body.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// An e-mail with a plain-text and an HTML part.
#[derive(Clone, Debug)]
pub struct EmailContent {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What to send for `n` on `channel`.
#[derive(Clone, Debug)]
pub enum Outgoing {
    Http(HttpRequest),
    Email(EmailContent),
}

/// Builds the request for `n`. `unix_time` is the signature timestamp (webhook with HMAC).
pub fn build(channel: &Channel, n: &Notification, unix_time: u64) -> Outgoing {
    match &channel.settings {
        Settings::Webhook(s) => Outgoing::Http(webhook(s, n, unix_time)),
        Settings::Slack(s) => Outgoing::Http(slack(s, n)),
        Settings::Telegram(s) => Outgoing::Http(telegram_request(s, n)),
        Settings::Email(s) => Outgoing::Email(email(s, n)),
        Settings::Pagerduty(s) => Outgoing::Http(pagerduty(s, n)),
        Settings::Teams(s) => Outgoing::Http(teams(s, n)),
    }
}

fn base_headers(n: &Notification) -> Vec<(String, String)> {
    vec![
        ("Content-Type".into(), "application/json".into()),
        (NOTIFICATION_ID_HEADER.into(), n.key.clone()),
        (EVENT_HEADER.into(), n.event.clone()),
    ]
}

fn field(alert: &Value, key: &str) -> Value {
    alert.get(key).cloned().unwrap_or(Value::Null)
}

/// The documented webhook body (docs/notifications.md, "Webhook payload").
pub fn webhook_body(n: &Notification) -> Value {
    let a = &n.alert;
    json!({
        "version": WEBHOOK_PAYLOAD_VERSION,
        "notification_id": n.key,
        "event": n.event,
        "event_id": n.event_id,
        "occurred_at": n.occurred_at,
        "alert_id": field(a, "alert_id"),
        "state": field(a, "state"),
        "severity": field(a, "severity"),
        "summary": message::summary(n),
        "rule": {"id": field(a, "rule_id"), "name": field(a, "rule_name")},
        "agent": {"id": field(a, "agent_id"), "hostname": field(a, "hostname"), "labels": a.get("labels").cloned().unwrap_or_else(|| json!({}))},
        "tenant_id": field(a, "tenant_id"),
        "series_key": field(a, "series_key"),
        "series_labels": a.get("series_labels").cloned().unwrap_or_else(|| json!({})),
        "metric": field(a, "metric"),
        "condition": field(a, "condition"),
        "threshold": field(a, "threshold"),
        "current_value": field(a, "current_value"),
        "started_at": field(a, "started_at"),
        "triggered_at": field(a, "triggered_at"),
        "resolved_at": field(a, "resolved_at"),
        "acknowledged_at": field(a, "acknowledged_at"),
        "acknowledged_by": field(a, "acknowledged_by"),
        "ack_comment": field(a, "ack_comment"),
    })
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &str, unix_time: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(unix_time.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn webhook(s: &WebhookSettings, n: &Notification, unix_time: u64) -> HttpRequest {
    let body = serde_json::to_vec(&webhook_body(n)).unwrap_or_default();
    let mut headers = base_headers(n);
    for (name, value) in &s.headers {
        headers.push((name.clone(), value.clone()));
    }
    if let Some(secret) = &s.hmac_secret {
        headers.push((TIMESTAMP_HEADER.into(), unix_time.to_string()));
        headers.push((SIGNATURE_HEADER.into(), signature(secret, unix_time, &body)));
    }
    HttpRequest { url: s.url.clone(), headers, body }
}

/// Slack attachment colours: red / orange / blue by severity, green when resolved.
pub fn slack_color(n: &Notification) -> &'static str {
    match (n.event.as_str(), message::severity(n)) {
        ("resolved", _) => "#2eb886",
        ("acknowledged", _) => "#808080",
        (_, "critical") => "#d00000",
        (_, "warning") => "#daa038",
        _ => "#439fe0",
    }
}

/// Slack's mrkdwn needs only `&`, `<`, `>` escaped.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn slack(s: &SlackSettings, n: &Notification) -> HttpRequest {
    let title = slack_escape(&message::title(n));
    let fields: Vec<Value> = message::facts(n)
        .into_iter()
        .map(|(label, value)| json!({"title": label, "value": slack_escape(&value), "short": value.len() <= 40}))
        .collect();
    let mut body = json!({
        "text": title,
        "attachments": [{
            "color": slack_color(n),
            "fallback": title,
            "title": title,
            "text": slack_escape(&message::summary(n)),
            "fields": fields,
            "footer": "SecuMon",
        }],
    });
    let obj = body.as_object_mut().expect("json! object");
    if let Some(channel) = &s.channel {
        obj.insert("channel".into(), json!(channel));
    }
    if let Some(username) = &s.username {
        obj.insert("username".into(), json!(username));
    }
    if let Some(icon) = &s.icon_emoji {
        obj.insert("icon_emoji".into(), json!(icon));
    }
    HttpRequest { url: s.url.clone(), headers: base_headers(n), body: serde_json::to_vec(&body).unwrap_or_default() }
}

/// The Telegram message text (HTML parse mode, ≤ 4096 visible characters).
pub fn telegram_text(n: &Notification) -> String {
    let mut parts = vec![Part::Bold(message::title(n)), Part::Plain("\n".into()), Part::Plain(message::summary(n))];
    for (label, value) in message::facts(n) {
        parts.push(Part::Plain("\n".into()));
        parts.push(Part::Bold(format!("{label}: ")));
        parts.push(Part::Plain(value));
    }
    telegram::render(&parts, telegram::MAX_MESSAGE_LENGTH)
}

fn telegram_request(s: &TelegramSettings, n: &Notification) -> HttpRequest {
    let mut body = Map::new();
    body.insert("chat_id".into(), s.chat_id.clone());
    body.insert("text".into(), json!(telegram_text(n)));
    body.insert("parse_mode".into(), json!("HTML"));
    body.insert("disable_web_page_preview".into(), json!(true));
    if s.disable_notification {
        body.insert("disable_notification".into(), json!(true));
    }
    if let Some(thread) = s.message_thread_id {
        body.insert("message_thread_id".into(), json!(thread));
    }
    let url = format!("{}/bot{}/sendMessage", s.api_url.trim_end_matches('/'), s.bot_token);
    HttpRequest { url, headers: base_headers(n), body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default() }
}

/// PagerDuty `event_action` for a transition.
pub fn pagerduty_action(event: &str) -> &'static str {
    match event {
        "resolved" => "resolve",
        "acknowledged" => "acknowledge",
        _ => "trigger",
    }
}

/// `dedup_key`: the alert id, so trigger, repeat, acknowledge and resolve address one incident.
pub fn pagerduty_dedup_key(n: &Notification) -> String {
    text(&n.alert, "alert_id").unwrap_or_else(|| format!("secumon-test-{}", n.key))
}

fn pagerduty(s: &PagerdutySettings, n: &Notification) -> HttpRequest {
    let action = pagerduty_action(&n.event);
    let mut body = json!({
        "routing_key": s.routing_key,
        "event_action": action,
        "dedup_key": pagerduty_dedup_key(n),
        "client": "SecuMon",
    });
    if action == "trigger" {
        let severity = match message::severity(n) {
            s @ ("critical" | "warning" | "info" | "error") => s,
            _ => "warning",
        };
        let source = s.source.clone().or_else(|| text(&n.alert, "hostname")).or_else(|| text(&n.alert, "agent_id")).unwrap_or_else(|| "secumon".into());
        let mut details = Map::new();
        for (label, value) in message::facts(n) {
            details.insert(label.to_string(), json!(value));
        }
        details.insert("notification_id".into(), json!(n.key));
        let payload = json!({
            "summary": crate::redact::cut(&format!("{} — {}", message::title(n), message::summary(n)), 1000),
            "source": source,
            "severity": severity,
            "timestamp": text(&n.alert, "triggered_at").unwrap_or_else(|| n.occurred_at.clone()),
            "component": field(&n.alert, "metric"),
            "group": field(&n.alert, "tenant_id"),
            "class": field(&n.alert, "rule_name"),
            "custom_details": details,
        });
        body.as_object_mut().expect("json! object").insert("payload".into(), payload);
    }
    HttpRequest { url: s.url.clone(), headers: base_headers(n), body: serde_json::to_vec(&body).unwrap_or_default() }
}

/// Adaptive Card colour names for the title.
fn teams_color(n: &Notification) -> &'static str {
    match (n.event.as_str(), message::severity(n)) {
        ("resolved", _) => "Good",
        ("acknowledged", _) => "Default",
        (_, "critical") => "Attention",
        (_, "warning") => "Warning",
        _ => "Accent",
    }
}

/// The Adaptive Card a Teams workflow posts (attachment of a `message`).
pub fn teams_card(n: &Notification) -> Value {
    let facts: Vec<Value> = message::facts(n).into_iter().map(|(t, v)| json!({"title": t, "value": v})).collect();
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {"type": "TextBlock", "text": message::title(n), "weight": "Bolder", "size": "Medium", "wrap": true, "color": teams_color(n)},
            {"type": "TextBlock", "text": message::summary(n), "wrap": true},
            {"type": "FactSet", "facts": facts},
        ],
    })
}

fn teams(s: &TeamsSettings, n: &Notification) -> HttpRequest {
    let body = json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": teams_card(n),
        }],
    });
    HttpRequest { url: s.url.clone(), headers: base_headers(n), body: serde_json::to_vec(&body).unwrap_or_default() }
}

fn html_escape(text: &str) -> String {
    telegram::escape_html(text)
}

fn email(_s: &EmailSettings, n: &Notification) -> EmailContent {
    let title = message::title(n);
    let summary = message::summary(n);
    let facts = message::facts(n);
    let mut text = format!("{title}\n\n{summary}\n\n");
    for (label, value) in &facts {
        text.push_str(&format!("{label}: {value}\n"));
    }
    text.push_str(&format!("\nNotification id: {}\n-- \nSecuMon\n", n.key));
    let rows: String = facts
        .iter()
        .map(|(l, v)| format!("<tr><th align=\"left\">{}</th><td>{}</td></tr>", html_escape(l), html_escape(v)))
        .collect();
    let color = slack_color(n);
    let html = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\
         <h2 style=\"color:{color}\">{}</h2><p>{}</p><table cellpadding=\"4\">{rows}</table>\
         <p style=\"color:#888;font-size:small\">Notification id {} — SecuMon</p></body></html>",
        html_escape(&title),
        html_escape(&summary),
        html_escape(&n.key)
    );
    EmailContent { subject: title, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notification(event: &str, severity: &str) -> Notification {
        Notification {
            id: 7,
            key: "0b8e6c1e-6f35-4a5e-9c43-3b6f3e7d9a10".into(),
            event_id: 42,
            event: event.into(),
            alert: json!({
                "alert_id": "5f1c7a52-2d1b-4f0e-8a67-1c2d3e4f5a6b", "rule_id": "9a8b7c6d-0000-4000-8000-000000000001",
                "rule_name": "High CPU", "tenant_id": "default", "agent_id": "web-1", "hostname": "web-1.example",
                "series_key": "", "state": event, "event": event, "severity": severity, "metric": "cpu.usage_percent",
                "condition": ">", "threshold": 90, "current_value": 97.5, "started_at": "2026-11-25T10:00:00Z",
                "triggered_at": "2026-11-25T10:05:00Z", "resolved_at": null, "labels": {"env": "prod"},
                "summary": "CPU usage 97.5% > 90% for 5 minutes"
            }),
            occurred_at: "2026-11-25T10:05:00Z".into(),
        }
    }

    fn channel(kind: &str, settings: Value) -> Channel {
        Channel::parse("c", kind, &settings).unwrap()
    }

    fn http(channel: &Channel, n: &Notification) -> HttpRequest {
        match build(channel, n, 1_700_000_000) {
            Outgoing::Http(r) => r,
            Outgoing::Email(_) => panic!("expected HTTP"),
        }
    }

    #[test]
    fn webhook_body_has_the_documented_fields() {
        let c = channel("webhook", json!({"url": "http://h/x"}));
        let r = http(&c, &notification("firing", "critical"));
        let body = r.json();
        for key in ["version", "notification_id", "event", "event_id", "occurred_at", "alert_id", "state", "severity",
                    "summary", "rule", "agent", "tenant_id", "series_key", "series_labels", "metric", "condition", "threshold",
                    "current_value", "started_at", "triggered_at", "resolved_at", "acknowledged_at", "acknowledged_by"] {
            assert!(body.get(key).is_some(), "missing {key}");
        }
        assert_eq!(body["rule"]["name"], "High CPU");
        assert_eq!(body["agent"]["labels"]["env"], "prod");
        assert_eq!(r.header(NOTIFICATION_ID_HEADER), Some("0b8e6c1e-6f35-4a5e-9c43-3b6f3e7d9a10"));
        assert!(r.header(SIGNATURE_HEADER).is_none());
    }

    #[test]
    fn webhook_signature_is_hmac_sha256_of_timestamp_and_body() {
        let c = channel("webhook", json!({"url": "http://h/x", "hmac_secret": "0123456789abcdef", "headers": {"Authorization": "Bearer t"}}));
        let r = http(&c, &notification("firing", "critical"));
        assert_eq!(r.header(TIMESTAMP_HEADER), Some("1700000000"));
        assert_eq!(r.header("Authorization"), Some("Bearer t"));
        let expected = signature("0123456789abcdef", 1_700_000_000, &r.body);
        assert_eq!(r.header(SIGNATURE_HEADER), Some(expected.as_str()));
        // Known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    }

    #[test]
    fn slack_colour_follows_severity_and_resolved_is_green() {
        let c = channel("slack", json!({"url": "http://h/x"}));
        let firing = http(&c, &notification("firing", "critical")).json();
        assert_eq!(firing["attachments"][0]["color"], "#d00000");
        let warning = http(&c, &notification("firing", "warning")).json();
        assert_eq!(warning["attachments"][0]["color"], "#daa038");
        let resolved = http(&c, &notification("resolved", "critical")).json();
        assert_eq!(resolved["attachments"][0]["color"], "#2eb886");
        assert!(resolved["text"].as_str().unwrap().starts_with("[RESOLVED]"));
    }

    #[test]
    fn telegram_uses_send_message_in_html_mode() {
        let c = channel("telegram", json!({"bot_token": "123:abcDEF", "chat_id": -100, "api_url": "http://127.0.0.1:1/"}));
        let mut n = notification("firing", "critical");
        n.alert["summary"] = json!("load < 5 & rising");
        let r = http(&c, &n);
        assert_eq!(r.url, "http://127.0.0.1:1/bot123:abcDEF/sendMessage");
        let body = r.json();
        assert_eq!(body["parse_mode"], "HTML");
        assert_eq!(body["chat_id"], -100);
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("load &lt; 5 &amp; rising"), "{text}");
        assert!(text.starts_with("<b>[FIRING] critical: High CPU on web-1.example</b>"), "{text}");
    }

    #[test]
    fn pagerduty_triggers_and_resolves_with_the_alert_id_as_dedup_key() {
        let c = channel("pagerduty", json!({"routing_key": "R123456", "url": "http://h/v2/enqueue"}));
        let trigger = http(&c, &notification("firing", "critical")).json();
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["dedup_key"], "5f1c7a52-2d1b-4f0e-8a67-1c2d3e4f5a6b");
        assert_eq!(trigger["routing_key"], "R123456");
        assert_eq!(trigger["payload"]["severity"], "critical");
        assert_eq!(trigger["payload"]["source"], "web-1.example");
        assert!(trigger["payload"]["summary"].as_str().unwrap().len() <= 1024);
        let resolve = http(&c, &notification("resolved", "critical")).json();
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
        assert!(resolve.get("payload").is_none());
    }

    #[test]
    fn teams_posts_an_adaptive_card_message() {
        let c = channel("teams", json!({"url": "http://h/workflow"}));
        let body = http(&c, &notification("firing", "warning")).json();
        assert_eq!(body["type"], "message");
        let attachment = &body["attachments"][0];
        assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(attachment["content"]["type"], "AdaptiveCard");
        assert_eq!(attachment["content"]["body"][0]["color"], "Warning");
        assert_eq!(attachment["content"]["body"][2]["type"], "FactSet");
    }

    #[test]
    fn email_has_text_and_html_parts_with_escaping() {
        let c = channel("email", json!({"host": "h", "from": "a@b.c", "to": ["x@y.z"]}));
        let mut n = notification("firing", "critical");
        n.alert["summary"] = json!("<script>");
        match build(&c, &n, 0) {
            Outgoing::Email(e) => {
                assert_eq!(e.subject, "[FIRING] critical: High CPU on web-1.example");
                assert!(e.text.contains("<script>"));
                assert!(e.html.contains("&lt;script&gt;") && !e.html.contains("<script>"));
            }
            Outgoing::Http(_) => panic!("expected e-mail"),
        }
    }

    #[test]
    fn the_body_does_not_change_between_retries() {
        let c = channel("webhook", json!({"url": "http://h/x", "hmac_secret": "0123456789abcdef"}));
        let n = notification("firing", "critical");
        let a = match build(&c, &n, 1) { Outgoing::Http(r) => r, _ => unreachable!() };
        let b = match build(&c, &n, 2) { Outgoing::Http(r) => r, _ => unreachable!() };
        assert_eq!(a.body, b.body);
    }
}
