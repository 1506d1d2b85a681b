//! Sends one notification and reports what happened. Blocking, bounded by the timeouts, safe
//! to call from any thread (no PostgreSQL calls here).

use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lettre::message::{header, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use crate::payload::{self, EmailContent, HttpRequest, Outgoing};
use crate::policy::{self, Outcome};
use crate::redact::{cut, redact};
use crate::settings::{EmailSettings, Settings, SmtpTls};
use crate::{Channel, Notification};

/// How much of a receiver's answer is kept (characters).
pub const RESPONSE_KEEP_CHARS: usize = 500;
/// How much of an answer is read at most (bytes); the rest is not waited for.
const RESPONSE_READ_BYTES: u64 = 16 * 1024;

#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    pub connect_timeout: Duration,
    /// Whole request: connect, send, answer.
    pub timeout: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions { connect_timeout: Duration::from_secs(5), timeout: Duration::from_secs(10) }
    }
}

/// The result of one attempt.
#[derive(Clone, Debug)]
pub struct Report {
    pub outcome: Outcome,
    /// HTTP status, or SMTP reply code.
    pub status: Option<u16>,
    /// Start of the receiver's answer, secrets removed.
    pub response: String,
    /// Network / protocol error, secrets removed.
    pub error: Option<String>,
    pub latency: Duration,
}

/// An HTTP agent (connection pool) for deliveries; clone it freely across threads.
pub fn http_agent(options: &DeliveryOptions) -> ureq::Agent {
    http_agent_pooled(options, 3)
}

/// [`http_agent`] keeping up to `idle_per_host` connections per receiver (host and port)
/// alive between requests. Give it the number of threads that send to one receiver at once:
/// with fewer (ureq keeps 3), every request beyond them opens a new connection and drops it
/// again — a TCP handshake, two 128 KiB buffers and the receiver's accept per notification.
pub fn http_agent_pooled(options: &DeliveryOptions, idle_per_host: usize) -> ureq::Agent {
    let idle_per_host = idle_per_host.max(1);
    ureq::Agent::config_builder()
        .max_idle_connections_per_host(idle_per_host)
        // Room for several busy receivers; idle connections close after 15 s anyway.
        .max_idle_connections(idle_per_host.saturating_mul(8).max(10))
        .timeout_connect(Some(options.connect_timeout))
        .timeout_global(Some(options.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("SecuMon/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Runs one delivery attempt `attempt`; a panic in it becomes a failed, retryable attempt
/// instead of ending the calling (sender) thread and stranding the notification it held.
pub fn attempt_catching_panics(attempt: impl FnOnce() -> Report) -> Report {
    let started = Instant::now();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(attempt)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let reason = format!("delivery failed unexpectedly: {what}");
        Report {
            outcome: Outcome::Retryable { reason: reason.clone(), retry_after: None },
            status: None,
            response: String::new(),
            error: Some(reason),
            latency: started.elapsed(),
        }
    })
}

/// Sends `n` over `channel`. `http` is the shared agent from [`http_agent`].
pub fn deliver(channel: &Channel, n: &Notification, options: &DeliveryOptions, http: &ureq::Agent) -> Report {
    let started = Instant::now();
    let unix_time = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let timeout = channel.timeout_ms().map(Duration::from_millis).unwrap_or(options.timeout);
    let mut report = match (payload::build(channel, n, unix_time), &channel.settings) {
        (Outgoing::Http(request), _) => send_http(channel, &request, http, timeout),
        (Outgoing::Email(content), Settings::Email(settings)) => {
            send_email(settings, n, &content, options.connect_timeout.max(timeout), channel.secrets())
        }
        (Outgoing::Email(_), _) => unreachable!("only e-mail channels build e-mails"),
    };
    report.latency = started.elapsed();
    report.response = redact(&report.response, channel.secrets());
    report.error = report.error.map(|e| redact(&e, channel.secrets()));
    if let Outcome::Retryable { reason, .. } | Outcome::Permanent { reason } = &mut report.outcome {
        *reason = redact(reason, channel.secrets());
    }
    report
}

fn send_http(channel: &Channel, request: &HttpRequest, http: &ureq::Agent, timeout: Duration) -> Report {
    let mut builder = http.post(&request.url);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let result = builder.config().timeout_global(Some(timeout)).build().send(&request.body[..]);
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            let mut bytes = Vec::new();
            let read = response.body_mut().as_reader().take(RESPONSE_READ_BYTES).read_to_end(&mut bytes);
            let body = String::from_utf8_lossy(&bytes).into_owned();
            let outcome = policy::classify_http(channel.kind, status, retry_after.as_deref(), &body, SystemTime::now());
            // Secrets go before the cut: one straddling it must not survive as a prefix.
            let mut response_text = cut(redact(&body, channel.secrets()).trim(), RESPONSE_KEEP_CHARS);
            if let Some(ra) = retry_after {
                response_text = format!("[Retry-After: {ra}] {response_text}");
            }
            let error = read.err().filter(|_| bytes.is_empty()).map(|e| format!("reading the answer failed: {e}"));
            Report { outcome, status: Some(status), response: response_text, error, latency: Duration::ZERO }
        }
        Err(e) => {
            let reason = describe_http_error(&e);
            Report {
                outcome: Outcome::Retryable { reason: reason.clone(), retry_after: None },
                status: None,
                response: String::new(),
                error: Some(reason),
                latency: Duration::ZERO,
            }
        }
    }
}

/// A short description of a transport error that names no URL.
fn describe_http_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(what) => format!("timed out ({what})"),
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            std::io::ErrorKind::ConnectionReset => "connection reset by the receiver".into(),
            kind => format!("network error: {kind}"),
        },
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::BadUri(_) => "the channel URL is not valid".into(),
        other => format!("{other}"),
    }
}

fn send_email(s: &EmailSettings, n: &Notification, content: &EmailContent, timeout: Duration, secrets: &[String]) -> Report {
    // Secrets go before any cut: one straddling it must not survive as a prefix.
    let cut = |text: &str, max_chars: usize| cut(&redact(text, secrets), max_chars);
    let failure = |outcome: Outcome, error: String| Report {
        outcome,
        status: None,
        response: String::new(),
        error: Some(error),
        latency: Duration::ZERO,
    };
    let message = match build_email(s, n, content) {
        Ok(m) => m,
        Err(e) => return failure(Outcome::Permanent { reason: e.clone() }, e),
    };
    let transport = match smtp_transport(s, timeout) {
        Ok(t) => t,
        Err(e) => return failure(Outcome::Permanent { reason: e.clone() }, e),
    };
    match transport.send(&message) {
        Ok(response) => {
            let code = u16::from(response.code());
            let text = format!("{code} {}", response.message().collect::<Vec<_>>().join(" "));
            let outcome = if response.is_positive() {
                Outcome::Delivered
            } else {
                Outcome::Retryable { reason: format!("SMTP {code}"), retry_after: None }
            };
            Report { outcome, status: Some(code), response: cut(&text, RESPONSE_KEEP_CHARS), error: None, latency: Duration::ZERO }
        }
        Err(e) => {
            let code = e.status().map(u16::from);
            let text = e.to_string();
            let reason = match code {
                Some(code) => format!("SMTP {code}: {}", cut(&text, 200)),
                None if e.is_timeout() => "SMTP timed out".to_string(),
                None if e.is_tls() => format!("SMTP TLS error: {}", cut(&text, 200)),
                None => format!("SMTP error: {}", cut(&text, 200)),
            };
            // 5xx replies and client-side errors (bad address, auth mechanism) will not heal;
            // 4xx replies, timeouts, TLS and network errors may.
            let outcome = if e.is_permanent() || e.is_client() {
                Outcome::Permanent { reason: reason.clone() }
            } else {
                Outcome::Retryable { reason: reason.clone(), retry_after: None }
            };
            Report { outcome, status: code, response: cut(&text, RESPONSE_KEEP_CHARS), error: Some(reason), latency: Duration::ZERO }
        }
    }
}

fn build_email(s: &EmailSettings, n: &Notification, content: &EmailContent) -> Result<Message, String> {
    let mailbox = |a: &str| a.parse::<Mailbox>().map_err(|_| "an e-mail address in the channel settings is not valid".to_string());
    let mut builder = Message::builder()
        .from(mailbox(&s.from)?)
        .subject(content.subject.clone())
        .message_id(Some(format!("<{}@secumon>", n.key)))
        .header(header::ContentTransferEncoding::QuotedPrintable);
    for to in &s.to {
        builder = builder.to(mailbox(to)?);
    }
    for cc in &s.cc {
        builder = builder.cc(mailbox(cc)?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(content.text.clone(), content.html.clone()))
        .map_err(|e| format!("cannot build the e-mail: {e}"))
}

fn smtp_transport(s: &EmailSettings, timeout: Duration) -> Result<SmtpTransport, String> {
    let tls_parameters = || -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(s.host.clone()).dangerous_accept_invalid_certs(s.accept_invalid_certs);
        if let Some(pem) = &s.ca_cert_pem {
            let cert = Certificate::from_pem(pem.as_bytes()).map_err(|_| "ca_cert_pem is not a PEM certificate".to_string())?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build_rustls().map_err(|e| format!("TLS set-up failed: {e}"))
    };
    let tls = match s.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(tls_parameters()?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
    };
    let mut builder = SmtpTransport::builder_dangerous(s.host.as_str()).port(s.port()).tls(tls).timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panicking_attempt_is_a_retryable_failure() {
        let report = attempt_catching_panics(|| panic!("boom at byte 7"));
        assert_eq!(
            report.outcome,
            Outcome::Retryable { reason: "delivery failed unexpectedly: boom at byte 7".into(), retry_after: None }
        );
        assert_eq!(report.error.as_deref(), Some("delivery failed unexpectedly: boom at byte 7"));
        let formatted = attempt_catching_panics(|| panic!("{} of {}", 3, 4));
        assert_eq!(formatted.error.as_deref(), Some("delivery failed unexpectedly: 3 of 4"));
    }

    #[test]
    fn an_attempt_that_returns_is_passed_through() {
        let report = attempt_catching_panics(|| Report {
            outcome: Outcome::Delivered,
            status: Some(200),
            response: "ok".into(),
            error: None,
            latency: Duration::ZERO,
        });
        assert_eq!(report.outcome, Outcome::Delivered);
        assert_eq!(report.status, Some(200));
    }

    use super::*;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-shot HTTP server answering `answer`; returns its URL and the request it saw.
    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook/secret-path-123", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            stream.write_all(answer.as_bytes()).unwrap();
            head + &String::from_utf8_lossy(&body)
        });
        (url, handle)
    }

    /// An HTTP answer with `status` and `body`, for [`serve_once`].
    fn answer_with(status: u16, body: &str) -> &'static str {
        let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        Box::leak(answer.into_boxed_str())
    }

    fn notification() -> Notification {
        Notification::test("k-1", "2026-11-25T10:00:00Z")
    }

    #[test]
    fn delivers_over_http_and_keeps_the_answer() {
        let (url, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        let channel = Channel::parse("c", "slack", &json!({"url": url})).unwrap();
        let options = DeliveryOptions::default();
        let report = deliver(&channel, &notification(), &options, &http_agent(&options));
        assert_eq!(report.outcome, Outcome::Delivered);
        assert_eq!(report.status, Some(200));
        assert_eq!(report.response, "ok");
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /hook/secret-path-123 HTTP/1.1"), "{request}");
        assert!(request.to_ascii_lowercase().contains("x-secumon-notification-id: k-1"));
    }

    #[test]
    fn retry_after_is_read_from_the_answer() {
        let (url, _server) = serve_once("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow");
        let channel = Channel::parse("c", "webhook", &json!({"url": url})).unwrap();
        let options = DeliveryOptions::default();
        let report = deliver(&channel, &notification(), &options, &http_agent(&options));
        assert_eq!(report.outcome, Outcome::Retryable { reason: "HTTP 429".into(), retry_after: Some(Duration::from_secs(3)) });
        assert!(report.response.contains("slow"));
    }

    #[test]
    fn a_refused_connection_is_retryable_and_names_no_secret() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let channel = Channel::parse("c", "telegram", &json!({"bot_token": "123456:SECRETtoken", "chat_id": 1, "api_url": format!("http://127.0.0.1:{port}")})).unwrap();
        let options = DeliveryOptions::default();
        let report = deliver(&channel, &notification(), &options, &http_agent(&options));
        assert!(matches!(report.outcome, Outcome::Retryable { .. }), "{report:?}");
        let all = format!("{report:?}");
        assert!(!all.contains("SECRETtoken"), "{all}");
    }

    /// A receiver that echoes what it was sent (a debugging endpoint, a misconfigured proxy)
    /// must not get the channel's secrets stored: `last_response` is readable by every user of
    /// the tenant through secumon.notification_history.
    #[test]
    fn an_echoed_bearer_token_is_not_kept_in_the_answer() {
        let (url, server) = serve_once(answer_with(401, "unknown token tok-0123456789abcdefSECRET here"));
        let channel = Channel::parse(
            "c",
            "webhook",
            &json!({"url": url, "headers": {"Authorization": "Bearer tok-0123456789abcdefSECRET"}}),
        )
        .unwrap();
        let options = DeliveryOptions::default();
        let report = deliver(&channel, &notification(), &options, &http_agent(&options));
        server.join().unwrap();
        assert_eq!(report.status, Some(401));
        let all = format!("{report:?}");
        assert!(!all.contains("SECRET"), "the bare token was kept: {all}");
        assert!(report.response.contains("unknown token [redacted] here"), "{}", report.response);
    }

    /// The answer is cut to RESPONSE_KEEP_CHARS: a secret straddling the cut must not survive
    /// as a prefix.
    #[test]
    fn a_secret_straddling_the_cut_is_not_kept_in_part() {
        let body = format!("{}hmac-secret-0123456789-SECRET", "x".repeat(RESPONSE_KEEP_CHARS - 10));
        let (url, server) = serve_once(answer_with(400, &body));
        let channel =
            Channel::parse("c", "webhook", &json!({"url": url, "hmac_secret": "hmac-secret-0123456789-SECRET"})).unwrap();
        let options = DeliveryOptions::default();
        let report = deliver(&channel, &notification(), &options, &http_agent(&options));
        server.join().unwrap();
        assert!(!report.response.contains("hmac-sec"), "a prefix of the secret was kept: {}", report.response);
    }

    #[test]
    fn a_slow_receiver_hits_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let _keep = std::thread::spawn(move || {
            let conn = listener.accept();
            std::thread::sleep(Duration::from_secs(3));
            drop(conn);
        });
        let channel = Channel::parse("c", "webhook", &json!({"url": url, "timeout_ms": 300})).unwrap();
        let options = DeliveryOptions::default();
        let started = Instant::now();
        let report = deliver(&channel, &notification(), &options, &http_agent(&options));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(report.outcome, Outcome::Retryable { ref reason, .. } if reason.contains("timed out")), "{report:?}");
    }
}
