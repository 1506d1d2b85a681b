//! The Prometheus text exposition format, version 0.0.4, as exporters serve it:
//!
//! ```text
//! # HELP http_requests_total Requests served.
//! # TYPE http_requests_total counter
//! http_requests_total{path="/api",code="500"} 3 1700000000000
//! ```
//!
//! Every valid sample becomes one custom series keyed by [`super::series_key`]. What the
//! parser decides, so that the database sees stable, valid keys:
//! - Labels: the input's labels plus the sample's; the sample's win on a collision.
//! - A `# TYPE x counter` family whose sample is named `x` without `_total` is stored as
//!   `x_total` (the OpenMetrics rule the database uses to tell counters from gauges).
//! - Histograms keep `x_bucket{le="..."}`, `x_sum` and `x_count` as series; summaries
//!   keep `x{quantile="..."}`, `x_sum` and `x_count`.
//! - Timestamps are read and ignored: a sample belongs to the report it arrives in.
//! - NaN and ±Inf are skipped and counted as invalid (the database stores finite
//!   numbers only), as are lines that do not parse, invalid UTF-8, bad names, too long
//!   label values and repeated labels. Nothing here panics, whatever the input.

use super::{merge_labels, numbered_lines, series_key, Parsed, Sample};
use std::collections::{BTreeMap, HashSet};

/// Parses `text`; `input_labels` are added to every sample.
pub fn parse(text: &[u8], input_labels: &BTreeMap<String, String>) -> Parsed {
    let mut out = Parsed::default();
    // Families declared `# TYPE <name> counter`.
    let mut counters: HashSet<String> = HashSet::new();
    for (number, line) in numbered_lines(text) {
        let Ok(line) = line else {
            out.skip(number, || "not UTF-8".into());
            continue;
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    if kind == "counter" {
                        counters.insert(name.to_string());
                    } else {
                        counters.remove(name);
                    }
                }
            }
            continue;
        }
        match parse_sample(line) {
            Ok((mut name, labels, value)) => {
                if !value.is_finite() {
                    out.skip(number, || format!("{name}: {value} is not a finite number"));
                    continue;
                }
                if counters.contains(&name) && !name.ends_with("_total") {
                    name.push_str("_total");
                }
                match series_key("custom", &name, merge_labels(input_labels, &labels)) {
                    Ok(key) => out.samples.push(Sample { key, value }),
                    Err(e) => out.skip(number, || e.0),
                }
            }
            Err(why) => out.skip(number, || why),
        }
    }
    out
}

type Labels = Vec<(String, String)>;

/// `name{l="v",...} value [timestamp]`, already trimmed.
fn parse_sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.')))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return Err(format!("no metric name in {:?}", excerpt(line)));
    }
    let mut rest = line[name_end..].trim_start_matches([' ', '\t']);
    let mut labels = Labels::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels).map_err(|e| format!("{name}: {e}"))?;
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{name}: invalid value {value:?}"))?;
    if let Some(timestamp) = fields.next() {
        if timestamp.parse::<i64>().is_err() {
            return Err(format!(
                "{name}: invalid timestamp {:?}",
                excerpt(timestamp)
            ));
        }
    }
    if fields.next().is_some() {
        return Err(format!("{name}: unexpected text after the value"));
    }
    Ok((name.to_string(), labels, value))
}

/// Go's ParseFloat as Prometheus uses it: decimal and exponent forms, `+Inf`, `-Inf`,
/// `NaN` (any case). Rust accepts the same, plus `infinity`, which is harmless.
fn parse_value(s: &str) -> Option<f64> {
    if s.starts_with("0x") || s.starts_with("0X") {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Parses labels after the `{`; returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Labels) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() {
            return Err("expected a label name or '}'".into());
        }
        s = s[name_end..].trim_start_matches([' ', '\t']);
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label {name}"))?
            .trim_start_matches([' ', '\t']);
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("expected '\"' to start the value of label {name}"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {name}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => {
                        return Err(format!("invalid escape \\{c} in the value of label {name}"))
                    }
                    None => return Err(format!("unterminated value of label {name}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        // Checked before the repeat test, so a line of thousands of labels costs no more than
        // MAX_LABELS of them.
        if labels.len() >= super::MAX_LABELS {
            return Err(format!("more than {} labels", super::MAX_LABELS));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return Err(format!("label {name} repeats"));
        }
        labels.push((name.to_string(), value));
        s = s[end + 1..].trim_start_matches([' ', '\t']);
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }
}

/// At most 60 characters of `s`, for error messages.
fn excerpt(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn counters_gauges_and_labels_become_custom_series() {
        let text = br#"# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{path="/api",code="500"} 3 1700000000000
http_requests_total{code="200",path="/api",} 1027
# TYPE app_queue_depth gauge
app_queue_depth{queue="mail"} 4.5e1
# TYPE jobs_done counter
jobs_done 7
plain_untyped -2
"#;
        let p = parse(text, &no_labels());
        assert_eq!(p.invalid, 0, "{:?}", p.first_error);
        assert_eq!(
            p.keys(),
            vec![
                (r#"custom.http_requests_total{code="500",path="/api"}"#, 3.0),
                (
                    r#"custom.http_requests_total{code="200",path="/api"}"#,
                    1027.0
                ),
                (r#"custom.app_queue_depth{queue="mail"}"#, 45.0),
                ("custom.jobs_done_total", 7.0),
                ("custom.plain_untyped", -2.0),
            ]
        );
    }

    #[test]
    fn histograms_and_summaries_keep_their_parts() {
        let text = br#"# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 2
latency_seconds_bucket{le="+Inf"} 5
latency_seconds_sum 1.25
latency_seconds_count 5
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.02
rpc_seconds_sum 3
rpc_seconds_count 100
"#;
        let p = parse(text, &no_labels());
        assert_eq!(p.invalid, 0, "{:?}", p.first_error);
        assert_eq!(
            p.keys(),
            vec![
                (r#"custom.latency_seconds_bucket{le="0.1"}"#, 2.0),
                (r#"custom.latency_seconds_bucket{le="+Inf"}"#, 5.0),
                ("custom.latency_seconds_sum", 1.25),
                ("custom.latency_seconds_count", 5.0),
                (r#"custom.rpc_seconds{quantile="0.5"}"#, 0.02),
                ("custom.rpc_seconds_sum", 3.0),
                ("custom.rpc_seconds_count", 100.0),
            ]
        );
    }

    #[test]
    fn label_values_are_unescaped_then_escaped_again_in_the_key() {
        let p = parse(
            br#"m{a="x\\y",b="say \"hi\"",c="two\nlines",d=""} 1"#,
            &no_labels(),
        );
        assert_eq!(p.invalid, 0, "{:?}", p.first_error);
        assert_eq!(
            p.samples[0].key,
            r#"custom.m{a="x\\y",b="say \"hi\"",c="two\nlines"}"#
        );
    }

    #[test]
    fn sample_labels_win_over_input_labels() {
        let input: BTreeMap<String, String> = [("env", "prod"), ("job", "node")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = parse(b"up{job=\"app\"} 1\nother{job=\"\"} 2\n", &input);
        assert_eq!(
            p.keys(),
            vec![
                (r#"custom.up{env="prod",job="app"}"#, 1.0),
                (r#"custom.other{env="prod",job="node"}"#, 2.0),
            ]
        );
    }

    #[test]
    fn non_finite_values_and_garbage_are_skipped_and_counted() {
        let text = b"a NaN\nb +Inf\nc -Inf\ngood 1\n{x=\"1\"} 2\nd{x=\"1\" 3\ne{x=1} 4\n\
            f{x=\"\\q\"} 5\ng 1 2 3\nh one\ni 1 soon\n9bad 1\nj{__x=\"1\"} 1\nk{a=\"1\",a=\"2\"} 1\n\xff\xfe 1\nk\n";
        let p = parse(text, &no_labels());
        assert_eq!(p.keys(), vec![("custom.good", 1.0)]);
        assert_eq!(p.invalid, 15, "{:?}", p.first_error);
        assert!(p.first_error.unwrap().starts_with("line 1: a: NaN"));
    }

    #[test]
    fn windows_line_ends_blank_lines_and_comments_are_fine() {
        let p = parse(
            b"# just a comment\r\n\r\n  \t\nx 1\r\n#TYPE y counter\ny 2\n",
            &no_labels(),
        );
        assert_eq!(p.invalid, 0);
        assert_eq!(p.keys(), vec![("custom.x", 1.0), ("custom.y_total", 2.0)]);
    }

    #[test]
    fn long_label_values_and_too_many_labels_are_refused() {
        let long = format!("m{{a=\"{}\"}} 1\n", "v".repeat(1025));
        let many = format!(
            "m{{{}}} 1\n",
            (0..33)
                .map(|i| format!("l{i}=\"v\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let p = parse(format!("{long}{many}").as_bytes(), &no_labels());
        assert_eq!(p.invalid, 2);
        assert!(p.samples.is_empty());
    }

    /// A small xorshift generator: the test needs varied bytes, not a dependency.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_bytes_and_truncated_lines_never_panic() {
        let valid =
            "# TYPE x_seconds histogram\nx_seconds_bucket{le=\"0.5\",path=\"/a\\\"b\"} 1.5e3 123\n\
                     m{a=\"\\\\\",b=\"\\n\"} -Inf\n";
        for cut in 0..=valid.len() {
            let _ = parse(&valid.as_bytes()[..cut], &no_labels());
        }
        let alphabet = b"ab_:{}=\",\\ \t\n#.0123456789eE+-InfNaTYPE\xc3\xa9\xff";
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let len = (noise.next() % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = noise.next();
                    if r % 4 == 0 {
                        r as u8 >> 1
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let p = parse(&bytes, &no_labels());
            assert!(p.samples.iter().all(|s| s.value.is_finite()));
        }
    }
}
