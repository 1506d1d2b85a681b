//! Which answers are retried, how long to wait, and when to give up.
//!
//! Retried: network errors and timeouts, 408, 429, 5xx, and 2xx answers whose body reports
//! throttling (Slack `rate_limited`, Teams "HTTP error 429", Telegram `ok: false` with 429).
//! The receiver's own wait (`Retry-After` seconds or HTTP date, Telegram
//! `parameters.retry_after`) wins over our backoff. Everything else in 3xx/4xx is permanent.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::Kind;

/// The verdict on one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Worth another try; `retry_after` is what the receiver asked for, if anything.
    Retryable { reason: String, retry_after: Option<Duration> },
    Permanent { reason: String },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Permanent { .. } => "permanent",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Delivered => None,
            Outcome::Retryable { reason, .. } | Outcome::Permanent { reason } => Some(reason),
        }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the past
/// means "now" (zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Some(Duration::from_secs_f64(seconds.min(1e9)));
        }
        return None;
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Telegram's `{"ok": false, "error_code": 429, "parameters": {"retry_after": 5}}`.
pub fn telegram_error(body: &str) -> Option<(u16, Option<Duration>, String)> {
    let json: Value = serde_json::from_str(body).ok()?;
    if json.get("ok").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    let code = json.get("error_code").and_then(Value::as_u64).unwrap_or(400) as u16;
    let retry_after = json
        .pointer("/parameters/retry_after")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e9)));
    let description = json.get("description").and_then(Value::as_str).unwrap_or("").to_string();
    Some((code, retry_after, description))
}

/// Teams (legacy connectors and some workflows) answer 200 with a text such as
/// "Microsoft Teams endpoint returned HTTP error 429 with ContextId …": the real status.
pub fn teams_status_in_body(body: &str) -> Option<u16> {
    let idx = body.find("HTTP error ")?;
    let digits: String = body[idx + "HTTP error ".len()..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|c| (100..600).contains(c))
}

fn by_status(status: u16, retry_after: Option<Duration>, detail: &str) -> Outcome {
    let reason = if detail.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {detail}") };
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retryable { reason, retry_after },
        300..=399 => Outcome::Permanent {
            reason: format!("HTTP {status}: the receiver answered with a redirect; set the channel to the final URL"),
        },
        _ => Outcome::Permanent { reason },
    }
}

/// Judges an HTTP answer of a channel of type `kind`.
pub fn classify_http(kind: Kind, status: u16, retry_after_header: Option<&str>, body: &str, now: SystemTime) -> Outcome {
    let header_wait = retry_after_header.and_then(|v| parse_retry_after(v, now));
    match kind {
        Kind::Telegram => {
            if let Some((code, wait, description)) = telegram_error(body) {
                let code = if (200..300).contains(&status) { code } else { status };
                let wait = wait.or(header_wait);
                if wait.is_some() && code != 429 {
                    return Outcome::Retryable { reason: format!("HTTP {code}: {description}"), retry_after: wait };
                }
                return by_status(code, wait, &description);
            }
        }
        Kind::Slack if (200..300).contains(&status) && body.contains("rate_limited") => {
            return by_status(429, header_wait, "throttled (rate_limited in the answer)");
        }
        Kind::Teams if (200..300).contains(&status) => {
            if let Some(code) = teams_status_in_body(body) {
                return by_status(code, header_wait, "reported in the answer body");
            }
            let lower = body.to_ascii_lowercase();
            if lower.contains("throttl") || lower.contains("too many requests") {
                return by_status(429, header_wait, "throttled (reported in the answer body)");
            }
        }
        _ => {}
    }
    by_status(status, header_wait, "")
}

/// A random jitter factor in [0, 1) for [`RetryPolicy::next_step`].
pub fn random_jitter() -> f64 {
    fastrand::f64()
}

/// When to retry and when to stop.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// A notification older than this is not tried again.
    pub max_age: Duration,
    /// Wait before the 2nd attempt; doubles each time.
    pub backoff_base: Duration,
    /// Upper bound of our own backoff (a receiver's Retry-After may exceed it).
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(600),
        }
    }
}

/// What to do with a notification after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Sent,
    RetryIn(Duration),
    Failed(String),
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half the delay fixed, half random, so retries
    /// from many notifications spread out but never come back immediately.
    /// `attempts` = attempts made so far (≥ 1); `jitter` in [0, 1).
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let ceiling = secumon_backoff::ceiling(self.backoff_base, self.backoff_max, attempts.saturating_sub(1));
        secumon_backoff::Jitter::Equal.apply(ceiling, jitter)
    }

    /// The next step after `attempts` attempts, the last of which ended in `outcome`, for a
    /// notification created `age` ago.
    pub fn next_step(&self, outcome: &Outcome, attempts: u32, age: Duration, jitter: f64) -> Step {
        match outcome {
            Outcome::Delivered => Step::Sent,
            Outcome::Permanent { reason } => Step::Failed(reason.clone()),
            Outcome::Retryable { reason, retry_after } => {
                if attempts >= self.max_attempts {
                    return Step::Failed(format!("gave up after {attempts} attempts; last: {reason}"));
                }
                let delay = match retry_after {
                    // The receiver's wait, plus a little jitter, never less.
                    Some(wait) => *wait + self.backoff_base.min(Duration::from_secs(1)).mul_f64(jitter.clamp(0.0, 1.0) * 0.5),
                    None => self.backoff(attempts, jitter),
                };
                if age + delay > self.max_age {
                    return Step::Failed(format!(
                        "gave up: the next attempt (in {:.1} s) would be past secumon.notify_max_age; last: {reason}",
                        delay.as_secs_f64()
                    ));
                }
                Step::RetryIn(delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        httpdate::parse_http_date("Wed, 25 Nov 2026 10:00:00 GMT").unwrap()
    }

    #[test]
    fn retry_after_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120", now()), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 3 ", now()), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 10:00:30 GMT", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
    }

    #[test]
    fn statuses_map_to_retryable_or_permanent() {
        let c = |status, ra: Option<&str>| classify_http(Kind::Webhook, status, ra, "", now());
        assert_eq!(c(200, None), Outcome::Delivered);
        assert_eq!(c(204, None), Outcome::Delivered);
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(c(status, None), Outcome::Retryable { .. }), "{status}");
        }
        for status in [400, 401, 403, 404, 410, 413, 422, 301] {
            assert!(matches!(c(status, None), Outcome::Permanent { .. }), "{status}");
        }
        assert_eq!(
            c(429, Some("7")),
            Outcome::Retryable { reason: "HTTP 429".into(), retry_after: Some(Duration::from_secs(7)) }
        );
    }

    #[test]
    fn telegram_retry_after_parameter_is_honoured() {
        let body = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 5","parameters":{"retry_after":5}}"#;
        match classify_http(Kind::Telegram, 429, None, body, now()) {
            Outcome::Retryable { retry_after, .. } => assert_eq!(retry_after, Some(Duration::from_secs(5))),
            other => panic!("{other:?}"),
        }
        let bad = r#"{"ok":false,"error_code":400,"description":"Bad Request: can't parse entities"}"#;
        assert!(matches!(classify_http(Kind::Telegram, 400, None, bad, now()), Outcome::Permanent { .. }));
        assert_eq!(classify_http(Kind::Telegram, 200, None, r#"{"ok":true,"result":{}}"#, now()), Outcome::Delivered);
    }

    #[test]
    fn throttling_reported_in_the_body_counts_as_429() {
        let teams = "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0";
        assert!(matches!(classify_http(Kind::Teams, 200, None, teams, now()), Outcome::Retryable { .. }));
        assert!(matches!(classify_http(Kind::Teams, 200, Some("4"), teams, now()),
            Outcome::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(4)));
        assert!(matches!(classify_http(Kind::Slack, 200, None, "rate_limited", now()), Outcome::Retryable { .. }));
        assert_eq!(classify_http(Kind::Slack, 200, None, "ok", now()), Outcome::Delivered);
        assert_eq!(classify_http(Kind::Teams, 202, None, "", now()), Outcome::Delivered);
        // The same text from a plain webhook is just a 200.
        assert_eq!(classify_http(Kind::Webhook, 200, None, teams, now()), Outcome::Delivered);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy { max_attempts: 20, max_age: Duration::from_secs(86400), backoff_base: Duration::from_secs(2), backoff_max: Duration::from_secs(60) };
        assert_eq!(p.backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.backoff(1, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(3, 0.0), Duration::from_secs(4));
        assert_eq!(p.backoff(3, 0.999).as_secs(), 7);
        assert_eq!(p.backoff(30, 1.0), Duration::from_secs(60));
        assert_eq!(p.backoff(u32::MAX, 0.5), Duration::from_secs(45));
    }

    #[test]
    fn next_step_honours_the_receivers_wait_and_the_limits() {
        let p = RetryPolicy { max_attempts: 3, max_age: Duration::from_secs(100), backoff_base: Duration::from_secs(1), backoff_max: Duration::from_secs(10) };
        let retry = |ra| Outcome::Retryable { reason: "HTTP 429".into(), retry_after: ra };
        match p.next_step(&retry(Some(Duration::from_secs(30))), 1, Duration::ZERO, 0.9) {
            Step::RetryIn(d) => assert!(d >= Duration::from_secs(30) && d <= Duration::from_secs(31), "{d:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(p.next_step(&retry(None), 3, Duration::ZERO, 0.5), Step::Failed(r) if r.contains("3 attempts")));
        assert!(matches!(p.next_step(&retry(Some(Duration::from_secs(200))), 1, Duration::ZERO, 0.0), Step::Failed(r) if r.contains("max_age")));
        assert_eq!(p.next_step(&Outcome::Delivered, 1, Duration::ZERO, 0.0), Step::Sent);
        assert!(matches!(p.next_step(&Outcome::Permanent { reason: "HTTP 400".into() }, 1, Duration::ZERO, 0.0), Step::Failed(r) if r == "HTTP 400"));
    }
}
