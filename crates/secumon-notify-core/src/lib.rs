//! SecuMon's notification logic, free of PostgreSQL so it is tested with plain `cargo test`.
//!
//! The extension (`secumon_pg/src/notify/`) owns the outbox and the dispatcher loop; this crate
//! turns one outbox row into what a receiver expects and judges the receiver's answer:
//!
//! - [`settings`]: typed channel settings per type, validation, and the secrets they hold;
//! - [`payload`]: the request (or e-mail) each channel type sends, per the receiver's contract;
//! - [`telegram`]: HTML escaping and the 4096-character cut;
//! - [`policy`]: which answers are retried, `Retry-After`, backoff with jitter, when to give up;
//! - [`redact`]: keeps secrets out of anything stored or logged;
//! - [`deliver`]: HTTP (ureq) and SMTP (lettre) delivery with timeouts.

pub mod deliver;
pub mod message;
pub mod payload;
pub mod policy;
pub mod redact;
pub mod settings;
pub mod telegram;

pub use deliver::{attempt_catching_panics, deliver, http_agent, http_agent_pooled, DeliveryOptions, Report};
pub use policy::{Outcome, RetryPolicy, Step};
pub use settings::{Channel, Kind};
/// The HTTP client, for callers that keep an agent (connection pool) across deliveries.
pub use ureq;

use serde_json::Value;

/// One notification to send: an alert transition (a row of `secumon.alert_events`) bound for
/// one channel, as stored in the outbox.
#[derive(Clone, Debug)]
pub struct Notification {
    /// Outbox id (`notification_id`); 0 for a test message.
    pub id: i64,
    /// Idempotency key, sent as `X-SecuMon-Notification-Id` (the same on every retry).
    pub key: String,
    /// `secumon.alert_events.id`.
    pub event_id: i64,
    /// `firing`, `resolved`, `repeat`, `acknowledged`, or `test`.
    pub event: String,
    /// The event's payload snapshot (see docs/contracts.md).
    pub alert: Value,
    /// Time of the transition, RFC 3339.
    pub occurred_at: String,
}

impl Notification {
    /// A test message for `secumon.test_channel`: a made-up alert, clearly labelled as a test.
    pub fn test(key: &str, now_rfc3339: &str) -> Notification {
        Notification {
            id: 0,
            key: key.to_string(),
            event_id: 0,
            event: "test".into(),
            alert: serde_json::json!({
                "alert_id": null,
                "rule_name": "SecuMon test notification",
                "agent_id": "secumon",
                "hostname": "secumon",
                "series_key": "",
                "state": "test",
                "event": "test",
                "severity": "info",
                "metric": "secumon.test",
                "condition": null,
                "threshold": null,
                "current_value": null,
                "triggered_at": now_rfc3339,
                "labels": {},
                "summary": "This is a test message from SecuMon: the channel works."
            }),
            occurred_at: now_rfc3339.to_string(),
        }
    }
}
