//! The human-readable parts every channel shares: title, summary, and the facts of an alert,
//! read from the event payload snapshot (docs/contracts.md). Missing keys are simply skipped.

use serde_json::Value;

use crate::Notification;

/// Severity names as the alert engine writes them.
pub fn severity(n: &Notification) -> &str {
    n.alert.get("severity").and_then(Value::as_str).unwrap_or("warning")
}

/// A payload field as display text: strings as they are, numbers and booleans rendered,
/// null / missing / empty as `None`.
pub fn text(alert: &Value, key: &str) -> Option<String> {
    match alert.get(key)? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Short label of the transition: FIRING, RESOLVED, STILL FIRING, ACKNOWLEDGED, TEST.
pub fn event_label(event: &str) -> String {
    match event {
        "firing" => "FIRING".into(),
        "resolved" => "RESOLVED".into(),
        "repeat" => "STILL FIRING".into(),
        "acknowledged" => "ACKNOWLEDGED".into(),
        "test" => "TEST".into(),
        other => other.to_uppercase(),
    }
}

/// The host an alert is about: hostname, else agent id, plus the disk / interface if any.
pub fn subject(n: &Notification) -> String {
    let host = text(&n.alert, "hostname").or_else(|| text(&n.alert, "agent_id")).unwrap_or_else(|| "?".into());
    match text(&n.alert, "series_key") {
        Some(series) => format!("{host} ({series})"),
        None => host,
    }
}

/// One-line title, e.g. `[FIRING] critical: High CPU on web-1`.
pub fn title(n: &Notification) -> String {
    let rule = text(&n.alert, "rule_name").unwrap_or_else(|| "alert".into());
    let label = event_label(&n.event);
    match n.event.as_str() {
        "resolved" | "test" => format!("[{label}] {rule} on {}", subject(n)),
        _ => format!("[{label}] {}: {rule} on {}", severity(n), subject(n)),
    }
}

/// The alert engine's sentence, or one made from the facts.
pub fn summary(n: &Notification) -> String {
    if let Some(summary) = text(&n.alert, "summary") {
        return summary;
    }
    let metric = text(&n.alert, "metric").unwrap_or_else(|| "metric".into());
    match (text(&n.alert, "current_value"), condition(n)) {
        (Some(value), Some(cond)) => format!("{metric} is {value} ({cond})"),
        (Some(value), None) => format!("{metric} is {value}"),
        _ => metric,
    }
}

/// `> 90` from condition + threshold.
pub fn condition(n: &Notification) -> Option<String> {
    match (text(&n.alert, "condition"), text(&n.alert, "threshold")) {
        (Some(c), Some(t)) => Some(format!("{c} {t}")),
        (None, Some(t)) => Some(format!("threshold {t}")),
        (Some(c), None) => Some(c),
        (None, None) => None,
    }
}

/// Labelled facts for field lists, in display order.
pub fn facts(n: &Notification) -> Vec<(&'static str, String)> {
    let a = &n.alert;
    let mut out = Vec::new();
    out.push(("Severity", severity(n).to_string()));
    out.push(("Host", subject(n)));
    if let Some(agent) = text(a, "agent_id") {
        out.push(("Agent", agent));
    }
    if let Some(metric) = text(a, "metric") {
        out.push(("Metric", metric));
    }
    if let Some(cond) = condition(n) {
        out.push(("Condition", cond));
    }
    if let Some(value) = text(a, "current_value") {
        out.push(("Current value", value));
    }
    for (label, key) in [
        ("Started", "started_at"),
        ("Triggered", "triggered_at"),
        ("Resolved", "resolved_at"),
        ("Acknowledged", "acknowledged_at"),
        ("Acknowledged by", "acknowledged_by"),
        ("Comment", "ack_comment"),
    ] {
        if let Some(v) = text(a, key) {
            out.push((label, v));
        }
    }
    for (label, key) in [("Series labels", "series_labels"), ("Labels", "labels")] {
        if let Some(labels) = a.get(key).and_then(Value::as_object) {
            if !labels.is_empty() {
                let list: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                out.push((label, list.join(", ")));
            }
        }
    }
    if let Some(tenant) = text(a, "tenant_id") {
        out.push(("Tenant", tenant));
    }
    out
}
