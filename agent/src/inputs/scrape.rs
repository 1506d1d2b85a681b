//! `[[scrape]]`: GETs Prometheus text from an HTTP(S) endpoint and parses it with
//! [`super::prom`].
//!
//! Health series (label `input`): `custom.scrape.up` (1, or 0 when the endpoint cannot be
//! reached, answers other than 2xx, does not answer within the timeout, sends a body over
//! `max_bytes` — then nothing of that body is kept — or sends only lines that do not
//! parse), `custom.scrape.duration_seconds`, `custom.scrape.samples` (valid samples taken)
//! and `custom.scrape.invalid_lines`.

use super::http::{self, Request};
use super::{prom, with_health, Parsed, Sample, ScrapeInput};
use crate::log_warn;
use std::time::Instant;

/// What exporters are asked for: the text format, version 0.0.4.
const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// Scrapes `input` once; returns its samples and its health series.
pub fn run(input: &ScrapeInput) -> Vec<Sample> {
    let name = &input.common.name;
    let started = Instant::now();
    let request = Request {
        url: &input.url,
        timeout: input.common.timeout,
        max_body: usize::try_from(input.max_bytes).unwrap_or(usize::MAX),
        headers: &[("Accept", ACCEPT)],
        tls_insecure: false,
    };
    let result = http::get(&request);
    let elapsed = started.elapsed();
    let mut parsed = Parsed::default();
    let up = match result {
        Err(e) => {
            log_warn!("scrape {name}: {e}");
            false
        }
        Ok(response) if !(200..300).contains(&response.status) => {
            log_warn!(
                "scrape {name}: {} answered HTTP {}",
                input.url,
                response.status
            );
            false
        }
        Ok(response) if response.truncated => {
            log_warn!(
                "scrape {name}: the body of {} exceeds max_bytes ({} bytes); no samples taken from it",
                input.url,
                input.max_bytes
            );
            false
        }
        Ok(response) => {
            parsed = prom::parse(&response.body, &input.common.labels);
            if parsed.invalid > 0 {
                log_warn!(
                    "scrape {name}: skipped {} invalid line(s), first: {}",
                    parsed.invalid,
                    parsed.first_error.as_deref().unwrap_or("?")
                );
            }
            parsed.invalid == 0 || !parsed.samples.is_empty()
        }
    };
    with_health("scrape", &input.common, parsed, up, elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::InputCommon;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    /// Serves `response` (after `delay`) to every connection; returns the base URL.
    fn serve(response: Vec<u8>, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let response = response.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    std::thread::sleep(delay);
                    let _ = stream.write_all(&response);
                });
            }
        });
        url
    }

    fn http_response(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn input(url: &str, timeout: Duration, max_bytes: u64) -> ScrapeInput {
        ScrapeInput {
            common: InputCommon {
                name: "app".into(),
                labels: [("env".to_string(), "test".to_string())]
                    .into_iter()
                    .collect(),
                interval: Duration::from_secs(10),
                timeout,
            },
            url: format!("{url}/metrics"),
            max_bytes,
        }
    }

    fn value(samples: &[Sample], key: &str) -> Option<f64> {
        samples.iter().find(|s| s.key == key).map(|s| s.value)
    }

    const UP: &str = r#"custom.scrape.up{env="test",input="app"}"#;

    const BODY: &str = "# TYPE http_requests counter\nhttp_requests{code=\"500\"} 3\n\
        # TYPE latency_seconds histogram\nlatency_seconds_bucket{le=\"0.5\"} 1\n\
        latency_seconds_bucket{le=\"+Inf\"} 2\nlatency_seconds_sum 0.7\nlatency_seconds_count 2\n\
        queue_depth NaN\n";

    #[test]
    fn a_scrape_gives_labelled_counters_histograms_and_health() {
        let url = serve(http_response("200 OK", BODY), Duration::ZERO);
        let s = run(&input(&url, Duration::from_secs(5), 1 << 20));
        assert_eq!(value(&s, UP), Some(1.0), "{s:?}");
        assert_eq!(
            value(&s, r#"custom.http_requests_total{code="500",env="test"}"#),
            Some(3.0)
        );
        assert_eq!(
            value(&s, r#"custom.latency_seconds_bucket{env="test",le="+Inf"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&s, r#"custom.latency_seconds_count{env="test"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&s, r#"custom.scrape.samples{env="test",input="app"}"#),
            Some(5.0)
        );
        assert_eq!(
            value(&s, r#"custom.scrape.invalid_lines{env="test",input="app"}"#),
            Some(1.0)
        );
        assert!(value(
            &s,
            r#"custom.scrape.duration_seconds{env="test",input="app"}"#
        )
        .is_some());
    }

    #[test]
    fn an_error_status_gives_up_0_and_no_samples() {
        let url = serve(
            http_response("500 Internal Server Error", BODY),
            Duration::ZERO,
        );
        let s = run(&input(&url, Duration::from_secs(5), 1 << 20));
        assert_eq!(value(&s, UP), Some(0.0));
        assert_eq!(s.len(), 4, "health series only: {s:?}");
    }

    #[test]
    fn a_body_over_max_bytes_is_not_used() {
        let big = "x 1\n".repeat(2000);
        let url = serve(http_response("200 OK", &big), Duration::ZERO);
        let s = run(&input(&url, Duration::from_secs(5), 1024));
        assert_eq!(value(&s, UP), Some(0.0));
        assert_eq!(value(&s, r#"custom.x{env="test"}"#), None);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn a_closed_port_and_a_slow_server_give_up_0_within_the_timeout() {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let s = run(&input(&closed, Duration::from_secs(2), 1024));
        assert_eq!(value(&s, UP), Some(0.0));

        let url = serve(http_response("200 OK", BODY), Duration::from_secs(5));
        let s = run(&input(&url, Duration::from_millis(300), 1 << 20));
        assert_eq!(value(&s, UP), Some(0.0));
    }

    #[test]
    fn only_garbage_gives_up_0() {
        let url = serve(
            http_response("200 OK", "<html>not metrics</html>\n"),
            Duration::ZERO,
        );
        let s = run(&input(&url, Duration::from_secs(5), 1 << 20));
        assert_eq!(value(&s, UP), Some(0.0));
        assert_eq!(
            value(&s, r#"custom.scrape.invalid_lines{env="test",input="app"}"#),
            Some(1.0)
        );
    }
}
