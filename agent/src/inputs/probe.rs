//! Probes: HTTP(S), TCP connect and ICMP echo, each giving `probe.*` series labelled with
//! `probe` (http, tcp, icmp), `target` and the input's own labels.
//!
//! A probe never panics and never takes much longer than its timeout: its errors become
//! `probe.up 0` plus one log line when the error first appears (and one when it clears),
//! rather than a line every interval.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{http, icmp, series_key, ProbeInput, ProbeTarget, Sample};

/// Bodies are read up to this when `expect_body` is set (the substring is looked for in
/// what was read).
pub const MAX_EXPECT_BODY: usize = 1024 * 1024;
/// Without `expect_body` the body is only timed, up to this many bytes.
const MAX_TIMED_BODY: usize = 64 * 1024;

/// Runs one probe; always returns at least its `probe.up` sample.
pub fn run(probe: &ProbeInput) -> Vec<Sample> {
    let (kind, target) = match &probe.target {
        ProbeTarget::Http { url, .. } => ("http", url.as_str()),
        ProbeTarget::Tcp { address } => ("tcp", address.as_str()),
        ProbeTarget::Icmp { host, .. } => ("icmp", host.as_str()),
    };
    let outcome = match &probe.target {
        ProbeTarget::Http {
            url,
            expect_status,
            expect_body,
            tls_insecure,
        } => http_probe(
            url,
            expect_status,
            expect_body.as_deref(),
            *tls_insecure,
            probe.common.timeout,
        ),
        ProbeTarget::Tcp { address } => tcp_probe(address, probe.common.timeout),
        ProbeTarget::Icmp { host, count } => icmp_probe(host, *count, probe.common.timeout),
    };
    note_failure(kind, target, outcome.failure.as_deref());

    let mut labels: BTreeMap<&str, &str> = probe
        .common
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    labels.insert("probe", kind);
    labels.insert("target", target);
    if !probe.common.name.is_empty() && probe.common.name != target {
        labels.insert("name", probe.common.name.as_str());
    }
    let mut samples = Vec::with_capacity(4);
    let mut push = |name: &str, value: f64| match series_key(
        "probe",
        name,
        labels.iter().map(|(k, v)| (*k, *v)),
    ) {
        Ok(key) => samples.push(Sample { key, value }),
        Err(e) => crate::log_warn!("{kind} probe {target}: series dropped: {e}"),
    };
    push("up", if outcome.up { 1.0 } else { 0.0 });
    if let Some(d) = outcome.duration {
        push("duration_seconds", d.as_secs_f64());
    }
    if let Some(code) = outcome.status {
        push("http_status_code", f64::from(code));
    }
    if let Some(days) = outcome.cert_days_left {
        push("tls_cert_days_left", days);
    }
    if let Some(rtt) = outcome.rtt {
        push("rtt_seconds", rtt.as_secs_f64());
    }
    if let Some(loss) = outcome.loss_percent {
        push("packet_loss_percent", loss);
    }
    samples
}

/// What one probe measured; `None` where it has nothing to say.
#[derive(Debug, Default, Clone, PartialEq)]
struct Outcome {
    up: bool,
    /// Why it is down, for the log.
    failure: Option<String>,
    duration: Option<Duration>,
    status: Option<u16>,
    cert_days_left: Option<f64>,
    rtt: Option<Duration>,
    loss_percent: Option<f64>,
}

fn http_probe(
    url: &str,
    expect_status: &[u16],
    expect_body: Option<&str>,
    tls_insecure: bool,
    timeout: Duration,
) -> Outcome {
    let start = Instant::now();
    let exchange = http::exchange(&http::Request {
        url,
        timeout,
        max_body: if expect_body.is_some() {
            MAX_EXPECT_BODY
        } else {
            MAX_TIMED_BODY
        },
        headers: &[],
        tls_insecure,
    });
    let mut outcome = Outcome {
        cert_days_left: exchange.cert_not_after.map(days_left),
        ..Outcome::default()
    };
    match exchange.result {
        Ok(response) => {
            outcome.duration = Some(response.elapsed);
            outcome.status = Some(response.status);
            let status_ok = if expect_status.is_empty() {
                (200..400).contains(&response.status)
            } else {
                expect_status.contains(&response.status)
            };
            let body_ok =
                expect_body.is_none_or(|needle| contains(&response.body, needle.as_bytes()));
            outcome.up = status_ok && body_ok;
            outcome.failure = if !status_ok {
                Some(format!("status {} not accepted", response.status))
            } else if !body_ok {
                Some(format!(
                    "body does not contain {:?}{}",
                    expect_body.unwrap_or_default(),
                    if response.truncated {
                        format!(" (first {MAX_EXPECT_BODY} bytes read)")
                    } else {
                        String::new()
                    }
                ))
            } else {
                None
            };
        }
        Err(e) => {
            outcome.duration = Some(start.elapsed());
            outcome.failure = Some(e);
        }
    }
    outcome
}

/// Fractional days from now to `not_after` (Unix seconds); negative once expired.
fn days_left(not_after: i64) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    (not_after as f64 - now) / 86_400.0
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// `host:port` (`[v6]:port` too) to host and port.
fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("{address:?}: bad port {port:?}"))?;
    if host.is_empty() {
        return Err(format!("{address:?} has no host"));
    }
    Ok((host, port))
}

fn tcp_probe(address: &str, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = start + timeout;
    let result = split_host_port(address)
        .and_then(|(host, port)| http::resolve_within(host, port, timeout))
        .and_then(|addrs| {
            let mut last = format!("{address}: no address");
            for addr in addrs {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < Duration::from_millis(1) {
                    return Err(timed_out(timeout));
                }
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        last = timed_out(timeout);
                    }
                    Err(e) => last = format!("connect {addr}: {e}"),
                }
            }
            Err(last)
        });
    let duration = start.elapsed();
    match result {
        Ok(()) => Outcome {
            up: true,
            duration: Some(duration),
            ..Outcome::default()
        },
        Err(e) => Outcome {
            failure: Some(e),
            duration: Some(duration),
            ..Outcome::default()
        },
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", http::format_duration(timeout))
}

fn icmp_probe(host: &str, count: u32, timeout: Duration) -> Outcome {
    match icmp::ping(host, count, timeout) {
        Ok(stats) => Outcome {
            up: stats.received > 0,
            failure: (stats.received == 0)
                .then(|| format!("no reply to {} echo requests", stats.sent)),
            rtt: stats.rtt_mean,
            loss_percent: Some(stats.loss_percent()),
            ..Outcome::default()
        },
        Err(e) => Outcome {
            // The permission message is logged once by icmp::ping itself.
            failure: match e {
                icmp::PingError::NotPermitted(_) => None,
                icmp::PingError::Other(e) => Some(e),
            },
            ..Outcome::default()
        },
    }
}

/// Logs a probe's failure when it starts or changes, and its recovery, not every run.
fn note_failure(kind: &str, target: &str, failure: Option<&str>) {
    static FAILING: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let Ok(mut failing) = FAILING.lock() else {
        return;
    };
    let key = format!("{kind} {target}");
    match failure {
        Some(why) => {
            if failing.get(&key).map(String::as_str) != Some(why) {
                crate::log_warn!("{kind} probe {target} is down: {why}");
                failing.insert(key, why.to_string());
            }
        }
        None => {
            if failing.remove(&key).is_some() {
                crate::log_info!("{kind} probe {target} is up again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::InputCommon;
    use super::*;
    use crate::inputs::http::test_server::{self, Step};
    use std::net::TcpListener;

    fn probe(target: ProbeTarget, timeout: Duration) -> ProbeInput {
        let name = match &target {
            ProbeTarget::Http { url, .. } => url.clone(),
            ProbeTarget::Tcp { address } => address.clone(),
            ProbeTarget::Icmp { host, .. } => host.clone(),
        };
        ProbeInput {
            common: InputCommon {
                name,
                labels: BTreeMap::from([("site".to_string(), "lab".to_string())]),
                interval: Duration::from_secs(10),
                timeout,
            },
            target,
        }
    }

    fn http_target(url: &str, expect_body: Option<&str>, tls_insecure: bool) -> ProbeTarget {
        ProbeTarget::Http {
            url: url.to_string(),
            expect_status: Vec::new(),
            expect_body: expect_body.map(str::to_string),
            tls_insecure,
        }
    }

    /// The value of series `name` (`probe.<name>{...}`), if present.
    fn value(samples: &[Sample], name: &str) -> Option<f64> {
        let prefix = format!("probe.{name}{{");
        samples
            .iter()
            .find(|s| s.key.starts_with(&prefix))
            .map(|s| s.value)
    }

    fn ok_response(body: &str) -> Vec<Step> {
        vec![Step::Send(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )]
    }

    #[test]
    fn http_200_is_up_with_status_and_duration() {
        let server = test_server::serve(ok_response("all good"));
        let url = format!("http://{}/health", server.addr);
        let samples = run(&probe(
            http_target(&url, None, false),
            Duration::from_secs(5),
        ));
        assert_eq!(
            samples[0].key,
            format!(r#"probe.up{{probe="http",site="lab",target="{url}"}}"#)
        );
        assert_eq!(value(&samples, "up"), Some(1.0));
        assert_eq!(value(&samples, "http_status_code"), Some(200.0));
        assert!(value(&samples, "duration_seconds").is_some_and(|d| d > 0.0 && d < 5.0));
        assert_eq!(value(&samples, "tls_cert_days_left"), None);
        let request = server.requests()[0].clone();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        assert!(request.contains(&format!("Host: {}\r\n", server.addr)));
        assert!(request.contains("Connection: close\r\n"));
        assert!(request.contains(&format!("User-Agent: secumon-agent/{}\r\n", crate::VERSION)));
    }

    #[test]
    fn http_500_is_down_with_its_status() {
        let server = test_server::serve(vec![Step::Send(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops".to_vec(),
        )]);
        let url = format!("http://{}/", server.addr);
        let samples = run(&probe(
            http_target(&url, None, false),
            Duration::from_secs(5),
        ));
        assert_eq!(value(&samples, "up"), Some(0.0));
        assert_eq!(value(&samples, "http_status_code"), Some(500.0));
    }

    #[test]
    fn expect_status_overrides_the_2xx_3xx_default() {
        let server = test_server::serve(vec![Step::Send(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
        )]);
        let target = ProbeTarget::Http {
            url: format!("http://{}/", server.addr),
            expect_status: vec![503],
            expect_body: None,
            tls_insecure: false,
        };
        let samples = run(&probe(target, Duration::from_secs(5)));
        assert_eq!(value(&samples, "up"), Some(1.0));
    }

    #[test]
    fn http_slower_than_the_timeout_is_down_within_the_timeout() {
        let server = test_server::serve(vec![
            Step::Sleep(Duration::from_secs(3)),
            Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ]);
        let url = format!("http://{}/", server.addr);
        let samples = run(&probe(
            http_target(&url, None, false),
            Duration::from_millis(500),
        ));
        assert_eq!(value(&samples, "up"), Some(0.0));
        assert_eq!(value(&samples, "http_status_code"), None);
        let err = http::get(&http::Request {
            url: &url,
            timeout: Duration::from_millis(300),
            max_body: 10,
            headers: &[],
            tls_insecure: false,
        })
        .unwrap_err();
        assert_eq!(err, "timed out after 300ms");
    }

    #[test]
    fn a_server_dripping_bytes_cannot_stretch_the_deadline() {
        let mut steps = vec![Step::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(),
        )];
        for _ in 0..100 {
            steps.push(Step::Sleep(Duration::from_millis(50)));
            steps.push(Step::Send(b"x".to_vec()));
        }
        let server = test_server::serve(steps);
        let err = http::get(&http::Request {
            url: &format!("http://{}/", server.addr),
            timeout: Duration::from_millis(600),
            max_body: 1000,
            headers: &[],
            tls_insecure: false,
        })
        .unwrap_err();
        assert_eq!(err, "timed out after 600ms");
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let server = test_server::serve(vec![
            Step::Send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            ),
            Step::Sleep(Duration::from_millis(20)),
            Step::Send(b"7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n".to_vec()),
        ]);
        let url = format!("http://{}/", server.addr);
        let response = http::get(&http::Request {
            url: &url,
            timeout: Duration::from_secs(5),
            max_body: 1024,
            headers: &[("X-Probe", "1")],
            tls_insecure: false,
        })
        .unwrap();
        assert_eq!(response.body, b"hello, world");
        assert!(!response.truncated);
        assert!(server.requests()[0].contains("X-Probe: 1\r\n"));
        let samples = run(&probe(
            http_target(&url, Some("o, w"), false),
            Duration::from_secs(5),
        ));
        assert_eq!(value(&samples, "up"), Some(1.0));
    }

    #[test]
    fn oversized_bodies_are_cut_at_max_body() {
        let big = "y".repeat(200_000);
        let server = test_server::serve(vec![Step::Send(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            )
            .into_bytes(),
        )]);
        let url = format!("http://{}/", server.addr);
        let response = http::get(&http::Request {
            url: &url,
            timeout: Duration::from_secs(5),
            max_body: 1000,
            headers: &[],
            tls_insecure: false,
        })
        .unwrap();
        assert_eq!(response.body.len(), 1000);
        assert!(response.truncated);

        // Without a length, the body runs to the close; chunked bodies are cut too.
        let server = test_server::serve(vec![Step::Send(
            format!("HTTP/1.0 200 OK\r\n\r\n{big}").into_bytes(),
        )]);
        let response = http::get(&http::Request {
            url: &format!("http://{}/", server.addr),
            timeout: Duration::from_secs(5),
            max_body: 150_000,
            headers: &[],
            tls_insecure: false,
        })
        .unwrap();
        assert_eq!((response.body.len(), response.truncated), (150_000, true));
        let server = test_server::serve(vec![Step::Send(
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
                big.len()
            )
            .into_bytes(),
        )]);
        let response = http::get(&http::Request {
            url: &format!("http://{}/", server.addr),
            timeout: Duration::from_secs(5),
            max_body: 10,
            headers: &[],
            tls_insecure: false,
        })
        .unwrap();
        assert_eq!(
            (response.body, response.truncated),
            (b"yyyyyyyyyy".to_vec(), true)
        );

        // An oversized page is still up for a probe (the body is only timed).
        let samples = run(&probe(
            http_target(&url, None, false),
            Duration::from_secs(5),
        ));
        assert_eq!(value(&samples, "up"), Some(1.0));
    }

    #[test]
    fn expect_body_match_and_mismatch() {
        let server = test_server::serve(ok_response("status: healthy"));
        let url = format!("http://{}/", server.addr);
        let up = |needle| {
            value(
                &run(&probe(
                    http_target(&url, Some(needle), false),
                    Duration::from_secs(5),
                )),
                "up",
            )
        };
        assert_eq!(up("healthy"), Some(1.0));
        assert_eq!(up("degraded"), Some(0.0));
    }

    #[test]
    fn a_refused_connection_is_one_clear_line() {
        let port = closed_port();
        let err = http::get(&http::Request {
            url: &format!("http://127.0.0.1:{port}/"),
            timeout: Duration::from_secs(2),
            max_body: 10,
            headers: &[],
            tls_insecure: false,
        })
        .unwrap_err();
        assert!(
            err.starts_with(&format!("connect 127.0.0.1:{port}: Connection refused")),
            "{err}"
        );
    }

    #[test]
    fn https_self_signed_insecure_is_up_with_days_left() {
        let server = test_server::serve_tls(ok_response("ok"), 5);
        let url = format!("https://localhost:{}/", server.addr.port());
        let samples = run(&probe(
            http_target(&url, Some("ok"), true),
            Duration::from_secs(5),
        ));
        assert_eq!(value(&samples, "up"), Some(1.0));
        assert_eq!(value(&samples, "http_status_code"), Some(200.0));
        let days = value(&samples, "tls_cert_days_left").unwrap();
        assert!((days - 5.0).abs() < 0.01, "{days}");
    }

    #[test]
    fn https_self_signed_verified_is_down_but_still_reports_days_left() {
        let server = test_server::serve_tls(ok_response("ok"), 5);
        let url = format!("https://localhost:{}/", server.addr.port());
        let samples = run(&probe(
            http_target(&url, None, false),
            Duration::from_secs(5),
        ));
        assert_eq!(value(&samples, "up"), Some(0.0));
        assert_eq!(value(&samples, "http_status_code"), None);
        let days = value(&samples, "tls_cert_days_left").unwrap();
        assert!((days - 5.0).abs() < 0.01, "{days}");
        let exchange = http::exchange(&http::Request {
            url: &url,
            timeout: Duration::from_secs(5),
            max_body: 10,
            headers: &[],
            tls_insecure: false,
        });
        let err = exchange.result.unwrap_err();
        assert!(
            err.starts_with("TLS: certificate verify failed: self"),
            "{err}"
        );
        assert!(exchange.cert_not_after.is_some());
        // Nothing was sent to a server that failed verification.
        assert!(server.requests().is_empty());
    }

    #[test]
    fn https_bodies_may_end_with_the_connection() {
        // The test server closes without a TLS close_notify, as many servers do.
        let server = test_server::serve_tls(
            vec![Step::Send(b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec())],
            30,
        );
        let response = http::get(&http::Request {
            url: &format!("https://127.0.0.1:{}/", server.addr.port()),
            timeout: Duration::from_secs(5),
            max_body: 1024,
            headers: &[],
            tls_insecure: true,
        })
        .unwrap();
        assert_eq!(response.body, b"until the end");
        assert!(response.cert_not_after.is_some());
    }

    #[test]
    fn a_differing_name_becomes_a_label() {
        let server = test_server::serve(ok_response(""));
        let mut input = probe(
            http_target(&format!("http://{}/", server.addr), None, false),
            Duration::from_secs(5),
        );
        input.common.name = "front page".to_string();
        let samples = run(&input);
        assert!(
            samples[0].key.contains(r#"name="front page""#),
            "{}",
            samples[0].key
        );
    }

    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[test]
    fn tcp_to_a_listening_port_is_up() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let samples = run(&probe(
            ProbeTarget::Tcp {
                address: address.clone(),
            },
            Duration::from_secs(2),
        ));
        assert_eq!(
            samples[0].key,
            format!(r#"probe.up{{probe="tcp",site="lab",target="{address}"}}"#)
        );
        assert_eq!(value(&samples, "up"), Some(1.0));
        assert!(value(&samples, "duration_seconds").is_some_and(|d| d < 2.0));
    }

    #[test]
    fn tcp_to_a_closed_port_is_down() {
        let address = format!("127.0.0.1:{}", closed_port());
        let samples = run(&probe(ProbeTarget::Tcp { address }, Duration::from_secs(2)));
        assert_eq!(value(&samples, "up"), Some(0.0));
        let samples = run(&probe(
            ProbeTarget::Tcp {
                address: "no-port".to_string(),
            },
            Duration::from_secs(2),
        ));
        assert_eq!(value(&samples, "up"), Some(0.0));
    }

    #[test]
    fn host_port_splits_v4_v6_and_names() {
        assert_eq!(split_host_port("db:5432"), Ok(("db", 5432)));
        assert_eq!(split_host_port("[::1]:22"), Ok(("::1", 22)));
        assert!(split_host_port("db").is_err());
        assert!(split_host_port(":22").is_err());
    }

    #[test]
    fn icmp_to_loopback_is_up_with_rtt_and_no_loss() {
        let samples = run(&probe(
            ProbeTarget::Icmp {
                host: "127.0.0.1".to_string(),
                count: 3,
            },
            Duration::from_secs(2),
        ));
        if value(&samples, "up") == Some(0.0) && value(&samples, "packet_loss_percent").is_none() {
            println!(
                "skipped: this kernel refuses unprivileged ICMP (ping_group_range {}) and the \
                 test lacks CAP_NET_RAW",
                std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
                    .unwrap_or_default()
                    .trim()
            );
            return;
        }
        assert_eq!(
            samples[0].key,
            r#"probe.up{probe="icmp",site="lab",target="127.0.0.1"}"#
        );
        assert_eq!(value(&samples, "up"), Some(1.0));
        assert_eq!(value(&samples, "packet_loss_percent"), Some(0.0));
        assert!(value(&samples, "rtt_seconds").is_some_and(|r| r > 0.0 && r < 1.0));
    }
}
