//! The `[[scrape]]`, `[[exec]]` and `[[probe]]` sections of the file as inputs, checked one by
//! one.

use super::file::{ExecSection, ProbeSection, ScrapeSection};
use super::units::{format_duration, IntervalSetting, SizeSetting};
use super::*;

/// What an input takes from the agent's own settings when it does not say.
pub(super) struct InputDefaults {
    pub(super) interval: Duration,
}

/// `{at}: [[kind]] field: problem`, one line.
pub(super) fn input_error(at: &str, kind: &str, field: &str, problem: impl fmt::Display) -> ConfigError {
    ConfigError(format!("{at}: [[{kind}]] {field}: {problem}"))
}

/// The settings every input has. `default_name` names it when `name` is not given.
#[allow(clippy::too_many_arguments)]
pub(super) fn input_common(
    kind: &str,
    at: &str,
    name: Option<String>,
    default_name: &str,
    labels: Option<BTreeMap<String, String>>,
    interval: Option<IntervalSetting>,
    timeout: Option<IntervalSetting>,
    defaults: &InputDefaults,
) -> Result<InputCommon, ConfigError> {
    let err = |field: &str, problem: String| input_error(at, kind, field, problem);
    let name = name.unwrap_or_else(|| default_name.to_string());
    if name.trim().is_empty() || name.len() > inputs::MAX_LABEL_VALUE_BYTES {
        return Err(err(
            "name",
            format!(
                "{name:?} must not be empty nor longer than {} bytes",
                inputs::MAX_LABEL_VALUE_BYTES
            ),
        ));
    }
    let labels = labels.unwrap_or_default();
    if labels.len() > inputs::MAX_LABELS {
        return Err(err(
            "labels",
            format!(
                "{} labels, at most {} are allowed",
                labels.len(),
                inputs::MAX_LABELS
            ),
        ));
    }
    for (k, v) in &labels {
        if !inputs::valid_label_name(k) {
            return Err(err(
                "labels",
                format!("invalid label name {k:?}: must match ^[a-zA-Z_][a-zA-Z0-9_]{{0,99}}$ and not start with \"__\""),
            ));
        }
        if v.len() > inputs::MAX_LABEL_VALUE_BYTES {
            return Err(err(
                "labels",
                format!(
                    "the value of {k} is longer than {} bytes",
                    inputs::MAX_LABEL_VALUE_BYTES
                ),
            ));
        }
    }
    let interval = interval.map_or(defaults.interval, |i| i.0);
    if interval < MIN_INTERVAL || interval > MAX_INTERVAL {
        return Err(err(
            "interval",
            format!(
                "{} must be between 100ms and 24h",
                format_duration(interval)
            ),
        ));
    }
    let timeout = match timeout {
        Some(t) => t.0,
        None => DEFAULT_INPUT_TIMEOUT.min(interval),
    };
    if timeout.is_zero() {
        return Err(err("timeout", "must be more than 0".into()));
    }
    if timeout > interval {
        return Err(err(
            "timeout",
            format!(
                "{} is longer than the input's interval {}: an input must finish before its next turn",
                format_duration(timeout),
                format_duration(interval)
            ),
        ));
    }
    Ok(InputCommon {
        name,
        labels,
        interval,
        timeout,
    })
}

pub(super) fn input_max_bytes(
    kind: &str,
    at: &str,
    value: Option<SizeSetting>,
    default: u64,
) -> Result<u64, ConfigError> {
    let bytes = value.map_or(default, |v| v.0);
    if !(MIN_INPUT_MAX_BYTES..=MAX_INPUT_MAX_BYTES).contains(&bytes) {
        return Err(input_error(
            at,
            kind,
            "max_bytes",
            format!("{bytes} must be between 1KiB and 256MiB"),
        ));
    }
    Ok(bytes)
}

/// `http://` or `https://` followed by a host.
pub(super) fn valid_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with(['/', ':', '?', '#'])
            && !url.contains(|c: char| c.is_whitespace() || c.is_control())
    })
}

pub(super) fn scrape_input(
    s: ScrapeSection,
    defaults: &InputDefaults,
    at: &str,
) -> Result<ScrapeInput, ConfigError> {
    if !valid_http_url(&s.url) {
        return Err(input_error(
            at,
            "scrape",
            "url",
            format!(
                "{:?} must start with http:// or https:// and name a host",
                s.url
            ),
        ));
    }
    Ok(ScrapeInput {
        common: input_common(
            "scrape", at, s.name, &s.url, s.labels, s.interval, s.timeout, defaults,
        )?,
        max_bytes: input_max_bytes("scrape", at, s.max_bytes, DEFAULT_SCRAPE_MAX_BYTES)?,
        url: s.url,
    })
}

pub(super) fn exec_input(
    s: ExecSection,
    defaults: &InputDefaults,
    at: &str,
) -> Result<ExecInput, ConfigError> {
    let Some(program) = s.command.first().filter(|p| !p.trim().is_empty()) else {
        return Err(input_error(
            at,
            "exec",
            "command",
            "must be a non-empty array: the program, then its arguments (no shell)",
        ));
    };
    if s.command.iter().any(|a| a.contains('\0')) {
        return Err(input_error(at, "exec", "command", "contains a NUL byte"));
    }
    let default_name = Path::new(program)
        .file_name()
        .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
    let format = match s.format.as_deref() {
        None | Some("prometheus") => ExecFormat::Prometheus,
        Some("influx") => ExecFormat::Influx,
        Some(other) => {
            return Err(input_error(
                at,
                "exec",
                "format",
                format!("{other:?}: expected \"prometheus\" or \"influx\""),
            ))
        }
    };
    Ok(ExecInput {
        common: input_common(
            "exec",
            at,
            s.name,
            &default_name,
            s.labels,
            s.interval,
            s.timeout,
            defaults,
        )?,
        max_bytes: input_max_bytes("exec", at, s.max_bytes, DEFAULT_EXEC_MAX_BYTES)?,
        command: s.command,
        format,
    })
}

/// `host:port` with a port 1..65535 (an IPv6 address in brackets: `[::1]:5432`).
pub(super) fn valid_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').is_some_and(|a| !a.is_empty()),
        None => !host.is_empty() && !host.contains(':'),
    };
    host_ok && !address.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p > 0)
}

pub(super) fn probe_input(
    s: ProbeSection,
    defaults: &InputDefaults,
    at: &str,
) -> Result<ProbeInput, ConfigError> {
    let err = |field: &str, problem: String| input_error(at, "probe", field, problem);
    let only = |field: &str, set: bool, kind: &str| -> Result<(), ConfigError> {
        if set {
            return Err(err(field, format!("applies to {kind} probes only")));
        }
        Ok(())
    };
    let (target, default_name) = match (s.http, s.tcp, s.icmp) {
        (Some(url), None, None) => {
            if !valid_http_url(&url) {
                return Err(err(
                    "http",
                    format!("{url:?} must start with http:// or https:// and name a host"),
                ));
            }
            only("count", s.count.is_some(), "icmp")?;
            let mut expect_status = Vec::new();
            for code in s.expect_status.unwrap_or_default() {
                if !(100..=599).contains(&code) {
                    return Err(err(
                        "expect_status",
                        format!("{code} is not an HTTP status (100 to 599)"),
                    ));
                }
                expect_status.push(code as u16);
            }
            (
                ProbeTarget::Http {
                    url: url.clone(),
                    expect_status,
                    expect_body: s.expect_body,
                    tls_insecure: s.tls_insecure.unwrap_or(false),
                },
                url,
            )
        }
        (None, Some(address), None) => {
            if !valid_host_port(&address) {
                return Err(err(
                    "tcp",
                    format!("{address:?} must be \"host:port\", e.g. \"db.internal:5432\" or \"[::1]:5432\""),
                ));
            }
            let http_only = s.expect_status.is_some() || s.expect_body.is_some() || s.tls_insecure.is_some();
            only("expect_status, expect_body and tls_insecure", http_only, "http")?;
            only("count", s.count.is_some(), "icmp")?;
            (ProbeTarget::Tcp { address: address.clone() }, address)
        }
        (None, None, Some(host)) => {
            if host.trim().is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
                return Err(err("icmp", format!("{host:?} must be a host name or an IP address")));
            }
            let http_only = s.expect_status.is_some() || s.expect_body.is_some() || s.tls_insecure.is_some();
            only("expect_status, expect_body and tls_insecure", http_only, "http")?;
            let count = s.count.unwrap_or(i64::from(DEFAULT_ICMP_COUNT));
            if !(1..=i64::from(MAX_ICMP_COUNT)).contains(&count) {
                return Err(err("count", format!("{count} must be between 1 and {MAX_ICMP_COUNT}")));
            }
            (
                ProbeTarget::Icmp {
                    host: host.clone(),
                    count: count as u32,
                },
                host,
            )
        }
        _ => {
            return Err(err(
                "http/tcp/icmp",
                "a probe needs exactly one of http = \"https://...\", tcp = \"host:port\" or icmp = \"host\"".into(),
            ))
        }
    };
    Ok(ProbeInput {
        common: input_common(
            "probe",
            at,
            s.name,
            &default_name,
            s.labels,
            s.interval,
            s.timeout,
            defaults,
        )?,
        target,
    })
}

/// Input names are the `input` label of their health series: unique per kind.
pub(super) fn unique_names<'a>(
    kind: &str,
    inputs: impl Iterator<Item = &'a InputCommon>,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for common in inputs {
        if !seen.insert(common.name.as_str()) {
            return Err(ConfigError(format!(
                "two [[{kind}]] inputs are named {:?}: give one a different name = \"...\"",
                common.name
            )));
        }
    }
    Ok(())
}
