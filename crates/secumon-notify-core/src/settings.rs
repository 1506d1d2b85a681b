//! Channel types and their settings (`secumon.notification_channels.settings`).
//!
//! Unknown keys are refused so a typo (`"utl"`) is caught when the channel is saved, not when
//! the first alert fails. Error messages never quote a value: values may be secrets.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The six channel types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Webhook,
    Slack,
    Telegram,
    Email,
    Pagerduty,
    Teams,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Webhook, Kind::Slack, Kind::Telegram, Kind::Email, Kind::Pagerduty, Kind::Teams];

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Slack => "slack",
            Kind::Telegram => "telegram",
            Kind::Email => "email",
            Kind::Pagerduty => "pagerduty",
            Kind::Teams => "teams",
        }
    }
}

/// Public Telegram Bot API endpoint; `api_url` overrides it (tests, local Bot API servers).
pub const TELEGRAM_API_URL: &str = "https://api.telegram.org";
/// PagerDuty Events API v2 endpoint; `url` overrides it (EU service region, tests).
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    /// Extra request headers, e.g. `{"Authorization": "Bearer …"}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// When set, requests carry `X-SecuMon-Timestamp` and `X-SecuMon-Signature`.
    pub hmac_secret: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Incoming-webhook URL (`https://hooks.slack.com/services/…`).
    pub url: String,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramSettings {
    pub bot_token: String,
    /// Numeric id or `@channelusername`.
    pub chat_id: Value,
    #[serde(default = "telegram_api_url")]
    pub api_url: String,
    pub message_thread_id: Option<i64>,
    #[serde(default)]
    pub disable_notification: bool,
    pub timeout_ms: Option<u64>,
}

fn telegram_api_url() -> String {
    TELEGRAM_API_URL.to_string()
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    pub host: String,
    /// Default: 587 for starttls, 465 for tls, 25 for none.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// Extra CA certificate (PEM) to trust, e.g. a private relay's.
    pub ca_cert_pem: Option<String>,
    /// Skip certificate verification. Only for test servers.
    #[serde(default)]
    pub accept_invalid_certs: bool,
    pub timeout_ms: Option<u64>,
}

impl EmailSettings {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutySettings {
    /// Integration (routing) key of an Events API v2 integration.
    pub routing_key: String,
    #[serde(default = "pagerduty_events_url")]
    pub url: String,
    /// `payload.source`; default: the alert's hostname, else its agent id.
    pub source: Option<String>,
    pub timeout_ms: Option<u64>,
}

fn pagerduty_events_url() -> String {
    PAGERDUTY_EVENTS_URL.to_string()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsSettings {
    /// Workflow ("When a Teams webhook request is received") URL.
    pub url: String,
    pub timeout_ms: Option<u64>,
}

/// Parsed settings of one channel.
#[derive(Clone, Debug)]
pub enum Settings {
    Webhook(WebhookSettings),
    Slack(SlackSettings),
    Telegram(TelegramSettings),
    Email(EmailSettings),
    Pagerduty(PagerdutySettings),
    Teams(TeamsSettings),
}

/// A channel ready to send: its type, parsed settings and the secrets to keep out of logs.
#[derive(Clone, Debug)]
pub struct Channel {
    pub name: String,
    pub kind: Kind,
    pub settings: Settings,
    secrets: Vec<String>,
}

impl Channel {
    /// Parses and validates `settings` for a channel of type `kind`. The error names the
    /// problem (missing key, wrong type, bad URL) without quoting any value.
    pub fn parse(name: &str, kind: &str, settings: &Value) -> Result<Channel, String> {
        let kind = Kind::parse(kind).ok_or_else(|| {
            format!(
                "unknown channel type \"{kind}\"; expected one of webhook, slack, telegram, email, pagerduty, teams"
            )
        })?;
        if !settings.is_object() {
            return Err("channel settings must be a JSON object".into());
        }
        let secrets = string_leaves(settings);
        let typed = |e: serde_json::Error| {
            format!("invalid settings for a {} channel: {}", kind.name(), crate::redact::redact(&e.to_string(), &secrets))
        };
        let parsed = match kind {
            Kind::Webhook => Settings::Webhook(WebhookSettings::deserialize(settings).map_err(typed)?),
            Kind::Slack => Settings::Slack(SlackSettings::deserialize(settings).map_err(typed)?),
            Kind::Telegram => Settings::Telegram(TelegramSettings::deserialize(settings).map_err(typed)?),
            Kind::Email => Settings::Email(EmailSettings::deserialize(settings).map_err(typed)?),
            Kind::Pagerduty => Settings::Pagerduty(PagerdutySettings::deserialize(settings).map_err(typed)?),
            Kind::Teams => Settings::Teams(TeamsSettings::deserialize(settings).map_err(typed)?),
        };
        validate(&parsed)?;
        Ok(Channel { name: name.to_string(), kind, settings: parsed, secrets: secret_values(settings) })
    }

    /// Values that must never appear in a log line, an error or a stored answer.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Per-channel total timeout, if the settings set one.
    pub fn timeout_ms(&self) -> Option<u64> {
        match &self.settings {
            Settings::Webhook(s) => s.timeout_ms,
            Settings::Slack(s) => s.timeout_ms,
            Settings::Telegram(s) => s.timeout_ms,
            Settings::Email(s) => s.timeout_ms,
            Settings::Pagerduty(s) => s.timeout_ms,
            Settings::Teams(s) => s.timeout_ms,
        }
    }
}

fn validate(settings: &Settings) -> Result<(), String> {
    let url = |what: &str, url: &str| -> Result<(), String> {
        let lower = url.to_ascii_lowercase();
        let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
            _ => Err(format!("{what} must be an http:// or https:// URL with a host")),
        }
    };
    let timeout = |t: Option<u64>| match t {
        Some(t) if !(100..=600_000).contains(&t) => Err("timeout_ms must be between 100 and 600000".to_string()),
        _ => Ok(()),
    };
    match settings {
        Settings::Webhook(s) => {
            url("url", &s.url)?;
            timeout(s.timeout_ms)?;
            for name in s.headers.keys() {
                let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                if !valid {
                    return Err(format!("header name \"{name}\" is not a valid HTTP header name"));
                }
                let lower = name.to_ascii_lowercase();
                if lower == "content-type" || lower == "content-length" || lower == "host" || lower.starts_with("x-secumon-") {
                    return Err(format!("header \"{name}\" is set by SecuMon and cannot be overridden"));
                }
            }
            if s.headers.values().any(|v| v.contains(['\r', '\n'])) {
                return Err("header values must not contain line breaks".into());
            }
            if matches!(&s.hmac_secret, Some(secret) if secret.len() < 16) {
                return Err("hmac_secret must be at least 16 characters".into());
            }
        }
        Settings::Slack(s) => {
            url("url", &s.url)?;
            timeout(s.timeout_ms)?;
        }
        Settings::Teams(s) => {
            url("url", &s.url)?;
            timeout(s.timeout_ms)?;
        }
        Settings::Telegram(s) => {
            url("api_url", &s.api_url)?;
            timeout(s.timeout_ms)?;
            let token_ok = s.bot_token.split_once(':').is_some_and(|(id, rest)| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            });
            if !token_ok {
                return Err("bot_token must look like 123456:ABC-def (as given by @BotFather)".into());
            }
            let chat_ok = match &s.chat_id {
                Value::Number(n) => n.is_i64(),
                Value::String(c) => !c.is_empty(),
                _ => false,
            };
            if !chat_ok {
                return Err("chat_id must be an integer or a string such as \"@channelname\"".into());
            }
        }
        Settings::Email(s) => {
            timeout(s.timeout_ms)?;
            if s.host.is_empty() || s.host.contains(['/', ' ']) {
                return Err("host must be a host name or IP address".into());
            }
            if s.to.is_empty() {
                return Err("to must list at least one address".into());
            }
            for address in std::iter::once(&s.from).chain(&s.to).chain(&s.cc) {
                if address.parse::<lettre::message::Mailbox>().is_err() {
                    return Err("from, to and cc must be e-mail addresses (\"Name <a@b.c>\" or \"a@b.c\")".into());
                }
            }
            if s.username.is_some() != s.password.is_some() {
                return Err("username and password go together".into());
            }
            if let Some(pem) = &s.ca_cert_pem {
                if lettre::transport::smtp::client::Certificate::from_pem(pem.as_bytes()).is_err() {
                    return Err("ca_cert_pem is not a PEM certificate".into());
                }
            }
        }
        Settings::Pagerduty(s) => {
            url("url", &s.url)?;
            timeout(s.timeout_ms)?;
            if s.routing_key.trim().is_empty() {
                return Err("routing_key must not be empty".into());
            }
        }
    }
    Ok(())
}

/// Every string in the settings that could be a secret: whole URLs (webhook URLs are bearer
/// credentials), their path, query values and user info, tokens, passwords, keys and header
/// values — header credentials also without their scheme (`Bearer …`, `Basic …` decoded) — and
/// each of them also as a JSON string or a URL would carry it, since a receiver may echo any
/// of those forms.
fn secret_values(settings: &Value) -> Vec<String> {
    let mut secrets = Vec::new();
    let Some(map) = settings.as_object() else { return secrets };
    // Parts of a secret are kept only when long enough not to be ordinary words.
    let part = |secrets: &mut Vec<String>, piece: &str| {
        if piece.len() >= 8 {
            secrets.push(piece.to_string());
        }
    };
    for (key, value) in map {
        match (key.as_str(), value) {
            ("url" | "api_url", Value::String(url)) => {
                secrets.push(url.clone());
                if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
                    let (authority, path) = rest.find('/').map_or((rest, ""), |slash| rest.split_at(slash));
                    if let Some((userinfo, _)) = authority.rsplit_once('@') {
                        part(&mut secrets, userinfo);
                        if let Some((_, password)) = userinfo.split_once(':') {
                            part(&mut secrets, password);
                        }
                    }
                    // The path alone is the secret for Slack/Teams/Discord-style hooks.
                    if path.len() > 8 {
                        secrets.push(path.to_string());
                    }
                    if let Some((_, query)) = path.split_once('?') {
                        for pair in query.split('&') {
                            part(&mut secrets, pair.split_once('=').map_or(pair, |(_, v)| v));
                        }
                    }
                }
            }
            ("bot_token" | "password" | "hmac_secret" | "routing_key", Value::String(s)) => {
                secrets.push(s.clone());
                if let Some((_, tail)) = s.split_once(':') {
                    part(&mut secrets, tail);
                }
            }
            ("headers", Value::Object(headers)) => {
                for header in headers.values().filter_map(|v| v.as_str()) {
                    secrets.push(header.to_string());
                    // "Bearer <token>", "Token <token>", "Basic <base64(user:password)>"...
                    if let Some((scheme, credential)) = header.trim().split_once(char::is_whitespace) {
                        let credential = credential.trim();
                        part(&mut secrets, credential);
                        if scheme.eq_ignore_ascii_case("basic") {
                            if let Some(decoded) = crate::redact::base64_decode(credential) {
                                part(&mut secrets, &decoded);
                                if let Some((_, password)) = decoded.split_once(':') {
                                    part(&mut secrets, password);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let encoded: Vec<String> = secrets.iter().flat_map(|s| crate::redact::encodings(s)).collect();
    secrets.extend(encoded);
    secrets.retain(|s| s.len() >= 4);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

/// All string values (at any depth): used to scrub validation errors, which may quote input.
fn string_leaves(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.len() >= 3 => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(value, &mut out);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_type_parses_its_minimal_settings() {
        let cases = [
            ("webhook", json!({"url": "https://example.com/hook"})),
            ("slack", json!({"url": "https://hooks.slack.com/services/T0/B0/xyz"})),
            ("telegram", json!({"bot_token": "123456:ABC-def_ghi", "chat_id": -1001234})),
            ("email", json!({"host": "smtp.example.com", "from": "mon@example.com", "to": ["ops@example.com"]})),
            ("pagerduty", json!({"routing_key": "R0123456789"})),
            ("teams", json!({"url": "https://prod.westeurope.logic.azure.com/workflows/abc"})),
        ];
        for (kind, settings) in cases {
            let channel = Channel::parse("c", kind, &settings).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(channel.kind.name(), kind);
        }
    }

    #[test]
    fn unknown_keys_and_missing_keys_are_refused() {
        let err = Channel::parse("c", "webhook", &json!({"utl": "https://x"})).unwrap_err();
        assert!(err.contains("utl") || err.contains("url"), "{err}");
        assert!(Channel::parse("c", "slack", &json!({})).is_err());
        assert!(Channel::parse("c", "sms", &json!({})).unwrap_err().contains("unknown channel type"));
    }

    #[test]
    fn errors_never_quote_secret_values() {
        let err = Channel::parse("c", "telegram", &json!({"bot_token": "not-a-token-SECRET", "chat_id": 1})).unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
        let err = Channel::parse("c", "email", &json!({"host": "h", "from": "a@b.c", "to": ["x@y.z"], "password": 12345678})).unwrap_err();
        assert!(!err.contains("12345678"), "{err}");
    }

    #[test]
    fn urls_must_be_http() {
        let err = Channel::parse("c", "webhook", &json!({"url": "ftp://example.com"})).unwrap_err();
        assert!(err.contains("http"), "{err}");
        assert!(Channel::parse("c", "webhook", &json!({"url": "http://127.0.0.1:9/x"})).is_ok());
    }

    #[test]
    fn reserved_headers_cannot_be_overridden() {
        let err = Channel::parse("c", "webhook", &json!({"url": "http://h/x", "headers": {"X-SecuMon-Signature": "x"}})).unwrap_err();
        assert!(err.contains("cannot be overridden"), "{err}");
    }

    /// A receiver may echo a credential without its scheme, or in the encoding of its answer:
    /// every form counts as the secret.
    #[test]
    fn secrets_include_credentials_without_their_scheme_and_their_encodings() {
        let c = Channel::parse(
            "c",
            "webhook",
            &json!({"url": "https://h.example/hook?api_key=query-key-0123456789&x=1",
                    "headers": {"Authorization": "Bearer tok-0123/456789\"abcdef",
                                "X-Api": "Basic dXNlcjpwYXNzd29yZC0wMTIzNDU2Nzg5"}}),
        )
        .unwrap();
        let secrets = c.secrets();
        for expected in [
            "tok-0123/456789\"abcdef",        // the bearer token alone
            "tok-0123\\/456789\\\"abcdef",  // as a JSON string escapes it
            "tok-0123%2F456789%22abcdef",     // percent-encoded
            "query-key-0123456789",           // a query parameter's value
            "user:password-0123456789",       // Basic credentials, decoded
            "password-0123456789",
        ] {
            assert!(secrets.iter().any(|s| s == expected), "{expected:?} missing from {secrets:?}");
        }
    }

    #[test]
    fn secrets_include_tokens_and_url_paths() {
        let c = Channel::parse("c", "slack", &json!({"url": "https://hooks.slack.com/services/T0/B0/verysecret"})).unwrap();
        assert!(c.secrets().iter().any(|s| s == "/services/T0/B0/verysecret"));
        let c = Channel::parse("c", "telegram", &json!({"bot_token": "123456:ABCdefGHIjkl", "chat_id": 5})).unwrap();
        assert!(c.secrets().iter().any(|s| s == "123456:ABCdefGHIjkl"));
        assert!(c.secrets().iter().any(|s| s == "ABCdefGHIjkl"));
    }
}
