//! Inputs beyond the host collectors: Prometheus scrapes, commands (`exec`) and probes
//! (HTTP(S), TCP, ICMP). Each produces samples keyed like host series, with labels
//! (docs/agent-inputs.md describes the key format the database checks).

use std::collections::BTreeMap;
use std::time::Duration;

pub mod exec;
pub mod http;
pub mod icmp;
pub mod influx;
pub mod probe;
pub mod prom;
pub mod schedule;
pub mod scrape;

/// What every input has: its name (the `input` label of its health series, and the target
/// label of a probe unless given), its own labels, how often it runs and how long it may take.
#[derive(Debug, Clone, PartialEq)]
pub struct InputCommon {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// `[[scrape]]`: Prometheus text exposition from an HTTP(S) endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeInput {
    pub common: InputCommon,
    pub url: String,
    pub max_bytes: u64,
}

/// Output format of an `[[exec]]` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFormat {
    Prometheus,
    Influx,
}

/// `[[exec]]`: a command (argv, no shell) printing Prometheus text or Influx line protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecInput {
    pub common: InputCommon,
    pub command: Vec<String>,
    pub format: ExecFormat,
    pub max_bytes: u64,
}

/// What a `[[probe]]` checks.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeTarget {
    /// `expect_status` empty: any 2xx or 3xx is up.
    Http {
        url: String,
        expect_status: Vec<u16>,
        expect_body: Option<String>,
        tls_insecure: bool,
    },
    Tcp {
        address: String,
    },
    Icmp {
        host: String,
        count: u32,
    },
}

/// `[[probe]]`: one HTTP(S), TCP or ICMP check.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeInput {
    pub common: InputCommon,
    pub target: ProbeTarget,
}

/// Longest metric name of a custom series.
pub const MAX_NAME_LEN: usize = 200;
/// Longest label name.
pub const MAX_LABEL_NAME_LEN: usize = 100;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
/// Most labels on one series.
pub const MAX_LABELS: usize = 32;
/// Longest series key (name and labels), in bytes, as the database accepts it.
pub const MAX_KEY_BYTES: usize = 4096;

/// One value of one series, keyed as `secumon.ingest` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub key: String,
    pub value: f64,
}

/// What a parser made of one output: the samples of its valid lines, how many lines (or
/// Influx fields) it had to skip, and the first reason, for the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub samples: Vec<Sample>,
    pub invalid: u64,
    pub first_error: Option<String>,
}

/// The lines of a text exposition, numbered from 1, without `\r` and surrounding blanks;
/// `Err` for a line that is not UTF-8.
pub fn numbered_lines(
    text: &[u8],
) -> impl Iterator<Item = (usize, Result<&str, std::str::Utf8Error>)> {
    text.split(|&b| b == b'\n').enumerate().map(|(index, raw)| {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        (
            index + 1,
            std::str::from_utf8(raw).map(|line| line.trim_matches([' ', '\t'])),
        )
    })
}

#[cfg(test)]
impl Parsed {
    /// (key, value) of every sample, in order: what parser tests compare.
    pub fn keys(&self) -> Vec<(&str, f64)> {
        self.samples.iter().map(|s| (s.key.as_str(), s.value)).collect()
    }
}

impl Parsed {
    /// Counts one skipped line (or field), keeping the first reason.
    pub fn skip(&mut self, line_number: usize, why: impl FnOnce() -> String) {
        self.invalid += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("line {line_number}: {}", why()));
        }
    }
}

/// The labels of a sample: the input's labels, then the sample's own, which win on a
/// collision. A sample label with an empty value is an absent label (as in Prometheus),
/// so there the input's label applies.
pub fn merge_labels<'a>(
    input: &'a BTreeMap<String, String>,
    sample: &'a [(String, String)],
) -> BTreeMap<&'a str, &'a str> {
    let mut labels: BTreeMap<&str, &str> = input
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (k, v) in sample {
        if !v.is_empty() {
            labels.insert(k, v);
        }
    }
    labels
}

/// A health series of an input (`custom.scrape.up{input="..."}`): label `input` is the
/// input's name, beside the input's own labels.
pub fn health_sample(series: &str, common: &InputCommon, value: f64) -> Option<Sample> {
    let mut labels: BTreeMap<&str, &str> = common
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    labels.insert("input", &common.name);
    match series_key("custom", series, labels) {
        Ok(key) => Some(Sample { key, value }),
        Err(e) => {
            crate::log_error!("input {}: cannot report {series}: {e}", common.name);
            None
        }
    }
}

/// The samples of one run of a scrape or a command (`kind` "scrape" or "exec"), then the run's
/// health series: `<kind>.up`, `<kind>.duration_seconds`, `<kind>.samples` and
/// `<kind>.invalid_lines`.
pub fn with_health(kind: &str, common: &InputCommon, parsed: Parsed, up: bool, elapsed: Duration) -> Vec<Sample> {
    let mut samples = parsed.samples;
    crate::log_debug!(
        "{kind} {}: {} sample(s) in {:.3}s",
        common.name,
        samples.len(),
        elapsed.as_secs_f64()
    );
    let count = samples.len() as f64;
    let health = [
        ("up", if up { 1.0 } else { 0.0 }),
        ("duration_seconds", elapsed.as_secs_f64()),
        ("samples", count),
        ("invalid_lines", parsed.invalid as f64),
    ];
    samples.extend(
        health
            .into_iter()
            .filter_map(|(series, value)| health_sample(&format!("{kind}.{series}"), common, value)),
    );
    samples
}

/// Why a name, a label or a value cannot become a series.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidSeries(pub String);

impl std::fmt::Display for InvalidSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` is a valid custom metric name: `[a-zA-Z_:][a-zA-Z0-9_:.]*`, at most
/// [`MAX_NAME_LEN`] characters.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.')
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`
/// (reserved, as in Prometheus), at most [`MAX_LABEL_NAME_LEN`] characters.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    name.len() <= MAX_LABEL_NAME_LEN
        && !name.starts_with("__")
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The key of series `name` of type `metric_type` ("custom" or "probe") with `labels`:
/// labels sorted by name, empty values dropped, values escaped as in Prometheus.
pub fn series_key<'a>(
    metric_type: &str,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, InvalidSeries> {
    if !valid_metric_name(name) {
        return Err(InvalidSeries(format!("invalid metric name {name:?}")));
    }
    let mut sorted: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in labels {
        if !valid_label_name(k) {
            return Err(InvalidSeries(format!("invalid label name {k:?} on {name}")));
        }
        if v.contains('\0') {
            // PostgreSQL text cannot hold it: the whole report would be refused.
            return Err(InvalidSeries(format!("label {k} of {name} contains a NUL character")));
        }
        if v.len() > MAX_LABEL_VALUE_BYTES {
            return Err(InvalidSeries(format!(
                "label {k} of {name} is longer than {MAX_LABEL_VALUE_BYTES} bytes"
            )));
        }
        if v.is_empty() {
            continue;
        }
        if sorted.insert(k, v).is_some() {
            return Err(InvalidSeries(format!("label {k} repeats on {name}")));
        }
    }
    if sorted.len() > MAX_LABELS {
        return Err(InvalidSeries(format!(
            "{name} has {} labels, at most {MAX_LABELS} are allowed",
            sorted.len()
        )));
    }
    let mut key = format!("{metric_type}.{name}");
    if !sorted.is_empty() {
        key.push('{');
        for (i, (k, v)) in sorted.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(k);
            key.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => key.push_str("\\\\"),
                    '"' => key.push_str("\\\""),
                    '\n' => key.push_str("\\n"),
                    c => key.push(c),
                }
            }
            key.push('"');
        }
        key.push('}');
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(InvalidSeries(format!(
            "{name}: the series with its labels is longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_labels_escape_values_and_drop_empty_ones() {
        let key = series_key(
            "custom",
            "app_queue_depth",
            [("queue", "mail \"out\"\n"), ("a", "x\\y"), ("empty", "")],
        )
        .unwrap();
        assert_eq!(
            key,
            r#"custom.app_queue_depth{a="x\\y",queue="mail \"out\"\n"}"#
        );
        assert_eq!(series_key("custom", "up", []).unwrap(), "custom.up");
    }

    #[test]
    fn bad_names_and_labels_are_refused() {
        assert!(series_key("custom", "9lives", []).is_err());
        assert!(series_key("custom", "a-b", []).is_err());
        assert!(series_key("custom", "ok", [("__name__", "x")]).is_err());
        assert!(series_key("custom", "ok", [("bad-label", "x")]).is_err());
        assert!(series_key("custom", "ok", [("a", "1"), ("a", "2")]).is_err());
        assert!(series_key("custom", &"x".repeat(201), []).is_err());
        assert!(series_key("custom", "app.http_requests_total", [("code", "500")]).is_ok());
        assert!(series_key("custom", "ok", [("a", "x\0y")]).is_err());
    }

}
