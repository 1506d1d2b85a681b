//! Agent configuration: a TOML file (unknown keys are errors, so typos do not silently
//! fall back to defaults), overridden by `SECUMON_*` environment variables, then validated.

use crate::inputs::{
    self, ExecFormat, ExecInput, InputCommon, ProbeInput, ProbeTarget, ScrapeInput,
};
use crate::log::Level;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/secumon/agent.toml";
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/secumon-agent/spool";
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TOP_PROCESSES: usize = 10;
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub const MIN_SPOOL_MAX_BYTES: u64 = 64 * 1024;
pub const MAX_TOP_PROCESSES: usize = 1000;
/// Longest default timeout of an input (shorter when its interval is).
pub const DEFAULT_INPUT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_SCRAPE_MAX_BYTES: u64 = 4 << 20;
pub const DEFAULT_EXEC_MAX_BYTES: u64 = 1 << 20;
pub const MIN_INPUT_MAX_BYTES: u64 = 1 << 10;
pub const MAX_INPUT_MAX_BYTES: u64 = 256 << 20;
pub const DEFAULT_ICMP_COUNT: u32 = 3;
pub const MAX_ICMP_COUNT: u32 = 100;

/// Filesystem types never reported unless their mountpoint is listed in
/// `disks.include_mountpoints`: kernel pseudo filesystems, memory-backed ones, container
/// overlays and read-only images, none of which says anything about disk space.
pub const PSEUDO_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent_id: String,
    /// libpq connection string or URI; empty = libpq defaults and `PG*` variables (refused at
    /// start unless one of [`LIBPQ_TARGET_VARIABLES`] is set: see [`require_connection`]).
    pub database: String,
    /// Enrollment token for `secumon.enroll()` (see [`crate::enroll`]); `None` when unset.
    pub enroll_token: Option<crate::enroll::Token>,
    pub interval: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub top_processes: usize,
    pub labels: BTreeMap<String, String>,
    pub disks: DiskConfig,
    pub network: NetworkConfig,
    pub log_level: Level,
    /// `[[scrape]]` inputs (docs/agent-inputs.md).
    pub scrapes: Vec<ScrapeInput>,
    /// `[[exec]]` inputs.
    pub execs: Vec<ExecInput>,
    /// `[[probe]]` inputs.
    pub probes: Vec<ProbeInput>,
    /// The file this configuration was read from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiskConfig {
    /// Filesystem types skipped in addition to [`PSEUDO_FS_TYPES`].
    pub exclude_fs_types: Vec<String>,
    /// Mountpoints always reported, whatever their filesystem type (e.g. an overlay root).
    pub include_mountpoints: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkConfig {
    /// When non-empty, only interfaces matching one of these patterns (`*` wildcard).
    pub include_interfaces: Vec<String>,
    /// Interfaces matching one of these patterns are skipped (`*` wildcard).
    pub exclude_interfaces: Vec<String>,
    pub include_loopback: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            agent_id: crate::collect::system::hostname(),
            database: String::new(),
            enroll_token: None,
            interval: DEFAULT_INTERVAL,
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            top_processes: DEFAULT_TOP_PROCESSES,
            labels: BTreeMap::new(),
            disks: DiskConfig::default(),
            network: NetworkConfig::default(),
            log_level: Level::Info,
            scrapes: Vec::new(),
            execs: Vec::new(),
            probes: Vec::new(),
            source: None,
        }
    }
}

/// A configuration problem, already phrased as one line for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    agent_id: Option<String>,
    database: Option<String>,
    enroll_token: Option<String>,
    interval: Option<IntervalSetting>,
    spool_dir: Option<String>,
    spool_max_bytes: Option<SizeSetting>,
    top_processes: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    disks: Option<DisksSection>,
    network: Option<NetworkSection>,
    log_level: Option<String>,
    scrape: Option<Vec<toml::Spanned<ScrapeSection>>>,
    exec: Option<Vec<toml::Spanned<ExecSection>>>,
    probe: Option<Vec<toml::Spanned<ProbeSection>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScrapeSection {
    url: String,
    name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    interval: Option<IntervalSetting>,
    timeout: Option<IntervalSetting>,
    max_bytes: Option<SizeSetting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecSection {
    command: Vec<String>,
    format: Option<String>,
    name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    interval: Option<IntervalSetting>,
    timeout: Option<IntervalSetting>,
    max_bytes: Option<SizeSetting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeSection {
    http: Option<String>,
    tcp: Option<String>,
    icmp: Option<String>,
    expect_status: Option<Vec<i64>>,
    expect_body: Option<String>,
    tls_insecure: Option<bool>,
    count: Option<i64>,
    name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    interval: Option<IntervalSetting>,
    timeout: Option<IntervalSetting>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DisksSection {
    exclude_fs_types: Option<Vec<String>>,
    include_mountpoints: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    include_interfaces: Option<Vec<String>>,
    exclude_interfaces: Option<Vec<String>>,
    include_loopback: Option<bool>,
}

/// Reads the configuration: `path` if given (it must exist), else
/// [`DEFAULT_CONFIG_PATH`] if it exists, else defaults; then environment overrides.
/// `env` looks up a variable (pass `|k| std::env::var(k).ok()`); tests pass a map.
pub fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let default = Path::new(DEFAULT_CONFIG_PATH);
    let path = match path {
        Some(p) => Some(p),
        None if default.exists() => Some(default),
        None => None,
    };
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {}", p.display(), e))
            })?;
            let mut cfg = from_toml_str(&text, &p.display().to_string(), env)?;
            cfg.source = Some(p.to_path_buf());
            Ok(cfg)
        }
        None => from_toml_str("", "(defaults)", env),
    }
}

/// Parses TOML `text` (`origin` names it in errors), applies `env` overrides, validates.
pub fn from_toml_str(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let place = match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!("line {line}, column {col}: ")
            }
            None => String::new(),
        };
        ConfigError(format!(
            "config file {origin}: {place}{}",
            crate::log::one_line(e.message())
        ))
    })?;
    build(file, text, origin, env)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn build(
    file: FileConfig,
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    // Remember where each value came from so errors point at the right place.
    let from_file = format!("in {origin}");
    let env_var = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    let mut agent_id_from = "taken from the hostname; set agent_id".to_string();
    if let Some(v) = file.agent_id {
        cfg.agent_id = v;
        agent_id_from = from_file.clone();
    }
    if let Some(v) = env_var("SECUMON_AGENT_ID") {
        cfg.agent_id = v.trim().to_string();
        agent_id_from = "from SECUMON_AGENT_ID".into();
    }

    if let Some(v) = file.database {
        cfg.database = v;
    }
    if let Some(v) = env_var("SECUMON_DATABASE") {
        cfg.database = v;
    }
    cfg.enroll_token = env_var("SECUMON_ENROLL_TOKEN")
        .or(file.enroll_token.filter(|t| !t.trim().is_empty()))
        .map(crate::enroll::Token::new);

    let mut interval_from = from_file.clone();
    if let Some(v) = file.interval {
        cfg.interval = v.0;
    }
    if let Some(v) = env_var("SECUMON_INTERVAL") {
        cfg.interval =
            parse_interval(&v).map_err(|e| ConfigError(format!("SECUMON_INTERVAL: {e}")))?;
        interval_from = "from SECUMON_INTERVAL".into();
    }

    let mut spool_dir_from = from_file.clone();
    if let Some(v) = file.spool_dir {
        cfg.spool_dir = PathBuf::from(v);
    }
    if let Some(v) = env_var("SECUMON_SPOOL_DIR") {
        cfg.spool_dir = PathBuf::from(v);
        spool_dir_from = "from SECUMON_SPOOL_DIR".into();
    }

    let mut spool_max_from = from_file.clone();
    if let Some(v) = file.spool_max_bytes {
        cfg.spool_max_bytes = v.0;
    }
    if let Some(v) = env_var("SECUMON_SPOOL_MAX_BYTES") {
        cfg.spool_max_bytes =
            parse_size(&v).map_err(|e| ConfigError(format!("SECUMON_SPOOL_MAX_BYTES: {e}")))?;
        spool_max_from = "from SECUMON_SPOOL_MAX_BYTES".into();
    }

    let mut top_from = from_file.clone();
    let mut top = file.top_processes;
    if let Some(v) = env_var("SECUMON_TOP_PROCESSES") {
        top = Some(v.trim().parse::<i64>().map_err(|_| {
            ConfigError(format!(
                "SECUMON_TOP_PROCESSES: {v:?} is not a whole number"
            ))
        })?);
        top_from = "from SECUMON_TOP_PROCESSES".into();
    }
    if let Some(n) = top {
        if n < 0 || n as u64 > MAX_TOP_PROCESSES as u64 {
            return Err(ConfigError(format!(
                "invalid top_processes {n} ({top_from}): must be between 0 and {MAX_TOP_PROCESSES}"
            )));
        }
        cfg.top_processes = n as usize;
    }

    let mut level = file.log_level.map(|v| (v, from_file.clone()));
    if let Some(v) = env_var("SECUMON_LOG_LEVEL") {
        level = Some((v, "from SECUMON_LOG_LEVEL".into()));
    }
    if let Some((v, from)) = level {
        cfg.log_level = Level::parse(&v).ok_or_else(|| {
            ConfigError(format!(
                "invalid log_level {v:?} ({from}): expected error, warn, info or debug"
            ))
        })?;
    }

    if let Some(labels) = file.labels {
        cfg.labels = labels;
    }
    if let Some(d) = file.disks {
        cfg.disks.exclude_fs_types = d.exclude_fs_types.unwrap_or_default();
        cfg.disks.include_mountpoints = d.include_mountpoints.unwrap_or_default();
    }
    if let Some(n) = file.network {
        cfg.network.include_interfaces = n.include_interfaces.unwrap_or_default();
        cfg.network.exclude_interfaces = n.exclude_interfaces.unwrap_or_default();
        cfg.network.include_loopback = n.include_loopback.unwrap_or(false);
    }

    // Validation.
    if !valid_agent_id(&cfg.agent_id) {
        return Err(ConfigError(format!(
            "invalid agent_id {:?} ({agent_id_from}): must match ^[A-Za-z0-9][A-Za-z0-9._:-]{{0,127}}$",
            cfg.agent_id
        )));
    }
    if cfg.database.contains('\0') {
        return Err(ConfigError(
            "invalid database: the connection string contains a NUL byte".into(),
        ));
    }
    if cfg.interval < MIN_INTERVAL || cfg.interval > MAX_INTERVAL {
        return Err(ConfigError(format!(
            "invalid interval {} ({interval_from}): must be between 100ms and 24h",
            format_duration(cfg.interval)
        )));
    }
    if cfg.spool_dir.as_os_str().is_empty() {
        return Err(ConfigError(format!(
            "invalid spool_dir ({spool_dir_from}): must not be empty"
        )));
    }
    if cfg.spool_max_bytes < MIN_SPOOL_MAX_BYTES {
        return Err(ConfigError(format!(
            "invalid spool_max_bytes {} ({spool_max_from}): must be at least {} (64 KiB)",
            cfg.spool_max_bytes, MIN_SPOOL_MAX_BYTES
        )));
    }
    if cfg.labels.len() > 64 {
        return Err(ConfigError(format!(
            "too many labels ({}) {from_file}: at most 64",
            cfg.labels.len()
        )));
    }
    for (k, v) in &cfg.labels {
        if !valid_label_key(k) {
            return Err(ConfigError(format!(
                "invalid label name {k:?} {from_file}: must match ^[A-Za-z_][A-Za-z0-9_.-]{{0,63}}$"
            )));
        }
        if v.chars().count() > 256 || v.chars().any(char::is_control) {
            return Err(ConfigError(format!(
                "invalid value for label {k:?} {from_file}: at most 256 characters, no control characters"
            )));
        }
    }
    for t in &cfg.disks.exclude_fs_types {
        if t.trim().is_empty() {
            return Err(ConfigError(format!(
                "invalid disks.exclude_fs_types {from_file}: empty filesystem type"
            )));
        }
    }
    for m in &cfg.disks.include_mountpoints {
        if !m.starts_with('/') {
            return Err(ConfigError(format!(
                "invalid disks.include_mountpoints entry {m:?} {from_file}: must be an absolute path"
            )));
        }
    }
    let place = |span: std::ops::Range<usize>| {
        let (line, _) = line_col(text, span.start);
        format!("config file {origin}: line {line}")
    };
    let defaults = InputDefaults {
        interval: cfg.interval,
    };
    for section in file.scrape.unwrap_or_default() {
        let at = place(section.span());
        cfg.scrapes
            .push(scrape_input(section.into_inner(), &defaults, &at)?);
    }
    for section in file.exec.unwrap_or_default() {
        let at = place(section.span());
        cfg.execs
            .push(exec_input(section.into_inner(), &defaults, &at)?);
    }
    for section in file.probe.unwrap_or_default() {
        let at = place(section.span());
        cfg.probes
            .push(probe_input(section.into_inner(), &defaults, &at)?);
    }
    unique_names("scrape", cfg.scrapes.iter().map(|i| &i.common))?;
    unique_names("exec", cfg.execs.iter().map(|i| &i.common))?;
    unique_names("probe", cfg.probes.iter().map(|i| &i.common))?;
    for (key, list) in [
        (
            "network.include_interfaces",
            &cfg.network.include_interfaces,
        ),
        (
            "network.exclude_interfaces",
            &cfg.network.exclude_interfaces,
        ),
    ] {
        if list.iter().any(|p| p.trim().is_empty()) {
            return Err(ConfigError(format!(
                "invalid {key} {from_file}: empty interface pattern"
            )));
        }
    }
    Ok(cfg)
}

/// What an input takes from the agent's own settings when it does not say.
struct InputDefaults {
    interval: Duration,
}

/// `{at}: [[kind]] field: problem`, one line.
fn input_error(at: &str, kind: &str, field: &str, problem: impl fmt::Display) -> ConfigError {
    ConfigError(format!("{at}: [[{kind}]] {field}: {problem}"))
}

/// The settings every input has. `default_name` names it when `name` is not given.
#[allow(clippy::too_many_arguments)]
fn input_common(
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

fn input_max_bytes(
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
fn valid_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with(['/', ':', '?', '#'])
            && !url.contains(|c: char| c.is_whitespace() || c.is_control())
    })
}

fn scrape_input(
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

fn exec_input(
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
fn valid_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').is_some_and(|a| !a.is_empty()),
        None => !host.is_empty() && !host.contains(':'),
    };
    host_ok && !address.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn probe_input(
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
fn unique_names<'a>(
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

/// libpq environment variables that name a server, a port, a database, a user or a
/// service: with one of them set, an empty `database` deliberately means libpq's defaults.
pub const LIBPQ_TARGET_VARIABLES: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSERVICE",
];

/// Refuses a configuration that names no database connection at all: `database` empty
/// (in the file and in `SECUMON_DATABASE`) and none of [`LIBPQ_TARGET_VARIABLES`] set.
/// That is a freshly installed agent nobody configured yet; connecting to libpq's
/// built-in default (the local socket, as a role named like the OS user) would only
/// fail over and over. The daemon and `--once` call this before doing anything;
/// `--dry-run` needs no database and does not. The error is one line naming the file.
pub fn require_connection(
    cfg: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if !cfg.database.trim().is_empty()
        || LIBPQ_TARGET_VARIABLES
            .iter()
            .any(|v| env(v).is_some_and(|value| !value.trim().is_empty()))
    {
        return Ok(());
    }
    let place = match &cfg.source {
        Some(path) => format!("set database in {}", path.display()),
        None => format!("set database in {DEFAULT_CONFIG_PATH} (or the file given with --config)"),
    };
    Err(ConfigError(format!(
        "no database connection configured: {place}, e.g. database = \"host=db.example.com dbname=secumon user=agent_web01\", \
         or SECUMON_DATABASE, or PGHOST/PGSERVICE for libpq's defaults; then start the agent again"
    )))
}

/// `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`
pub fn valid_agent_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

fn valid_label_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Parses `"10s"`, `"500ms"`, `"1m"`, `"1h"`, `"1m30s"`, `"2.5s"` or a bare number of
/// seconds (`"10"`).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid interval {s:?}: expected e.g. \"10s\", \"500ms\", \"1m\" or a number of seconds")
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return seconds_to_duration(secs).ok_or_else(bad);
    }
    let mut total = 0f64; // in seconds
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = after.trim_start();
    }
    seconds_to_duration(total).ok_or_else(bad)
}

fn seconds_to_duration(secs: f64) -> Option<Duration> {
    if secs.is_finite() && (0.0..1e9).contains(&secs) {
        Some(Duration::from_micros((secs * 1e6).round() as u64))
    } else {
        None
    }
}

/// `10s`, `500ms`, `1m30s`: how intervals are shown in logs and errors.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 || ms == 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        _ => format!("{s}s"),
    }
}

/// Parses a byte count: `67108864`, `"64MiB"`, `"100 MB"`, `"512K"`
/// (K/M/G and KiB/MiB/GiB are powers of 1024, KB/MB/GB powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: expected a number of bytes or e.g. \"64MiB\"");
    let t = s.trim();
    let num_len = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(num_len);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// `interval` accepts an integer/float number of seconds or a string like `"10s"`.
struct IntervalSetting(Duration);

impl<'de> Deserialize<'de> for IntervalSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntervalSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"10s\", \"500ms\", \"1m\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v < 0 {
                    return Err(E::custom(format!("invalid interval {v}: must be positive")));
                }
                Ok(IntervalSetting(Duration::from_secs(v as u64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(IntervalSetting(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                seconds_to_duration(v).map(IntervalSetting).ok_or_else(|| {
                    E::custom(format!(
                        "invalid interval {v}: must be a positive number of seconds"
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_interval(v).map(IntervalSetting).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `spool_max_bytes` accepts an integer number of bytes or a string like `"64MiB"`.
struct SizeSetting(u64);

impl<'de> Deserialize<'de> for SizeSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size like \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(SizeSetting)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(SizeSetting(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(SizeSetting).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        from_toml_str(text, "/etc/secumon/agent.toml", &no_env)
    }

    #[test]
    fn intervals_parse_in_every_documented_form() {
        assert_eq!(parse_interval("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_interval("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_interval(" 15 "), Ok(Duration::from_secs(15)));
        for bad in ["", "ten", "10x", "-5s", "s", "1.2.3s"] {
            assert!(parse_interval(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn interval_accepts_integers_floats_and_strings_in_toml() {
        assert_eq!(
            parse("interval = 30").unwrap().interval,
            Duration::from_secs(30)
        );
        assert_eq!(
            parse("interval = 0.5").unwrap().interval,
            Duration::from_millis(500)
        );
        assert_eq!(
            parse("interval = \"1m\"").unwrap().interval,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn interval_below_100ms_or_zero_is_rejected() {
        for text in ["interval = \"50ms\"", "interval = 0"] {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains("invalid interval") && e.contains("100ms"), "{e}");
        }
        let e = parse("interval = \"soon\"").unwrap_err().0;
        assert!(
            e.contains("line 1, column 12") && e.contains("\"soon\""),
            "{e}"
        );
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let c = parse("").unwrap();
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.spool_dir, PathBuf::from(DEFAULT_SPOOL_DIR));
        assert_eq!(c.spool_max_bytes, 64 << 20);
        assert_eq!(c.top_processes, 10);
        assert_eq!(c.database, "");
        assert!(!c.network.include_loopback);
        assert!(valid_agent_id(&c.agent_id), "hostname {:?}", c.agent_id);
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            r#"
agent_id = "web-01.fra1"
database = "host=db.example.com dbname=secumon user=agent sslmode=verify-full"
interval = "15s"
spool_dir = "/tmp/spool"
spool_max_bytes = "128MiB"
top_processes = 5
log_level = "debug"
[labels]
env = "prod"
dc = "fra1"
[disks]
exclude_fs_types = ["nfs4"]
include_mountpoints = ["/"]
[network]
exclude_interfaces = ["veth*", "docker0"]
include_loopback = true
"#,
        )
        .unwrap();
        assert_eq!(c.agent_id, "web-01.fra1");
        assert_eq!(c.interval, Duration::from_secs(15));
        assert_eq!(c.spool_max_bytes, 128 << 20);
        assert_eq!(c.top_processes, 5);
        assert_eq!(c.log_level, Level::Debug);
        assert_eq!(c.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(c.disks.exclude_fs_types, vec!["nfs4"]);
        assert_eq!(c.network.exclude_interfaces, vec!["veth*", "docker0"]);
        assert!(c.network.include_loopback);
    }

    #[test]
    fn unknown_key_error_names_the_key_and_the_file() {
        let e = parse("agent_id = \"a\"\nintervall = \"10s\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("intervall"), "{e}");
        assert!(e.contains("/etc/secumon/agent.toml"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = parse("[network]\nexclude = [\"lo\"]\n").unwrap_err().0;
        assert!(e.contains("exclude") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn malformed_toml_reports_line_and_column_on_one_line() {
        let e = parse("agent_id = \"a\"\ninterval = \"10s\n").unwrap_err().0;
        assert!(
            e.starts_with("config file /etc/secumon/agent.toml: line 2, column"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_types_are_reported() {
        let e = parse("top_processes = \"ten\"").unwrap_err().0;
        assert!(e.contains("line 1"), "{e}");
        let e = parse("[labels]\nenv = 1").unwrap_err().0;
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        for (text, needle) in [
            ("agent_id = \"-leading-dash\"", "agent_id"),
            ("agent_id = \"has space\"", "agent_id"),
            ("top_processes = -1", "top_processes"),
            ("top_processes = 5000", "top_processes"),
            ("spool_max_bytes = 100", "spool_max_bytes"),
            ("spool_dir = \"\"", "spool_dir"),
            ("log_level = \"loud\"", "log_level"),
            ("[labels]\n\"bad key\" = \"x\"", "label name"),
            (
                "[disks]\ninclude_mountpoints = [\"relative\"]",
                "include_mountpoints",
            ),
            (
                "[network]\nexclude_interfaces = [\"\"]",
                "exclude_interfaces",
            ),
        ] {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains(needle), "{text:?} -> {e}");
        }
        let long = format!("agent_id = \"{}\"", "a".repeat(129));
        assert!(parse(&long).is_err());
        assert!(parse(&format!("agent_id = \"{}\"", "a".repeat(128))).is_ok());
    }

    #[test]
    fn environment_overrides_the_file() {
        let env: HashMap<&str, &str> = [
            ("SECUMON_AGENT_ID", "from-env"),
            ("SECUMON_DATABASE", "host=127.0.0.1 port=1"),
            ("SECUMON_INTERVAL", "2s"),
            ("SECUMON_SPOOL_DIR", "/tmp/env-spool"),
            ("SECUMON_SPOOL_MAX_BYTES", "1MiB"),
            ("SECUMON_TOP_PROCESSES", "3"),
            ("SECUMON_LOG_LEVEL", "warn"),
        ]
        .into_iter()
        .collect();
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        let c = from_toml_str(
            "agent_id = \"file\"\ninterval = \"30s\"\ntop_processes = 20",
            "f.toml",
            &lookup,
        )
        .unwrap();
        assert_eq!(c.agent_id, "from-env");
        assert_eq!(c.database, "host=127.0.0.1 port=1");
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.spool_dir, PathBuf::from("/tmp/env-spool"));
        assert_eq!(c.spool_max_bytes, 1 << 20);
        assert_eq!(c.top_processes, 3);
        assert_eq!(c.log_level, Level::Warn);
    }

    #[test]
    fn invalid_environment_values_name_the_variable() {
        let lookup = |k: &str| (k == "SECUMON_INTERVAL").then(|| "fast".to_string());
        let e = from_toml_str("", "f.toml", &lookup).unwrap_err().0;
        assert!(e.starts_with("SECUMON_INTERVAL"), "{e}");
        let lookup = |k: &str| (k == "SECUMON_AGENT_ID").then(|| "bad id!".to_string());
        let e = from_toml_str("", "f.toml", &lookup).unwrap_err().0;
        assert!(e.contains("SECUMON_AGENT_ID"), "{e}");
        // Empty variables count as unset.
        let lookup = |k: &str| (k == "SECUMON_TOP_PROCESSES").then(String::new);
        assert_eq!(
            from_toml_str("", "f.toml", &lookup).unwrap().top_processes,
            10
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("67108864"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("100 MB"), Ok(100_000_000));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn no_connection_is_a_one_line_configuration_error_naming_the_file() {
        let mut c = parse("").unwrap();
        c.source = Some(PathBuf::from("/etc/secumon/agent.toml"));
        let e = require_connection(&c, &no_env).unwrap_err().0;
        assert!(
            e.starts_with(
                "no database connection configured: set database in /etc/secumon/agent.toml"
            ),
            "{e}"
        );
        assert!(e.contains("SECUMON_DATABASE"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        // An empty string is no connection either, nor is a blank one.
        let mut c = parse("database = \"  \"").unwrap();
        c.source = None;
        let e = require_connection(&c, &no_env).unwrap_err().0;
        assert!(e.contains(DEFAULT_CONFIG_PATH), "{e}");
    }

    #[test]
    fn a_connection_string_or_a_libpq_variable_is_a_connection() {
        let c = parse("database = \"host=db1 dbname=secumon\"").unwrap();
        assert_eq!(require_connection(&c, &no_env), Ok(()));
        let from_env = |k: &str| (k == "SECUMON_DATABASE").then(|| "host=db2".to_string());
        let c = from_toml_str("", "f.toml", &from_env).unwrap();
        assert_eq!(require_connection(&c, &from_env), Ok(()));
        let empty = parse("").unwrap();
        for variable in LIBPQ_TARGET_VARIABLES {
            let env = |k: &str| (k == *variable).then(|| "x".to_string());
            assert_eq!(require_connection(&empty, &env), Ok(()), "{variable}");
        }
        // A password alone says nothing about where to connect; blank variables are unset.
        let env = |k: &str| match k {
            "PGPASSWORD" => Some("secret".to_string()),
            "PGHOST" => Some(" ".to_string()),
            _ => None,
        };
        assert!(require_connection(&empty, &env).is_err());
    }

    /// `#key = value` and `#[table]` lines of agent/agent.example.toml, uncommented.
    fn example_with_defaults_uncommented() -> String {
        include_str!("../agent.example.toml")
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The keys serde expects where `text` has an unknown one, from its error message
    /// ("unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`").
    fn expected_keys(text: &str) -> Vec<String> {
        let e = parse(text).unwrap_err().0;
        let expected = e.split("expected").nth(1).unwrap_or_else(|| panic!("{e}"));
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_example_config_sets_every_key_to_its_default_when_uncommented() {
        let example = example_with_defaults_uncommented();
        let c = parse(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
        assert_eq!(
            c,
            parse("").unwrap(),
            "the commented values must be the defaults"
        );
        // As shipped (everything commented) it is valid too, and names no connection.
        let shipped = parse(include_str!("../agent.example.toml")).unwrap();
        assert!(require_connection(&shipped, &no_env).is_err());

        let set = |table: &str| -> Vec<String> {
            let mut current = String::new();
            let mut keys = Vec::new();
            for line in example.lines() {
                if let Some(name) = line.strip_prefix('[') {
                    current = name.trim_end_matches(']').to_string();
                } else if let Some((key, _)) = line.split_once(" = ") {
                    if current == table && !line.starts_with('#') {
                        keys.push(key.to_string());
                    }
                }
            }
            keys
        };
        // agent_id's default is the hostname, which no file can spell: shown as an example.
        let mut top = set("");
        top.push("agent_id".into());
        top.sort();
        let mut all = expected_keys("zzz = 1");
        all.retain(|k| {
            !["labels", "disks", "network", "scrape", "exec", "probe"].contains(&k.as_str())
        });
        all.sort();
        assert_eq!(top, all, "top-level keys of agent.example.toml");
        for table in ["disks", "network"] {
            let mut keys = set(table);
            keys.sort();
            let mut all = expected_keys(&format!("[{table}]\nzzz = 1"));
            all.sort();
            assert_eq!(keys, all, "keys of [{table}] in agent.example.toml");
        }
        assert!(
            example.contains("\n[labels]"),
            "[labels] in agent.example.toml"
        );
        // Inputs are examples (commented with "# "), each parsing once uncommented.
        for kind in ["scrape", "exec", "probe"] {
            let header = format!("# [[{kind}]]");
            assert!(example.contains(&header), "{header} in agent.example.toml");
        }
        let inputs: String = include_str!("../agent.example.toml")
            .lines()
            .skip_while(|l| !l.starts_with("# [[scrape]]"))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with("[[") || l.contains(" = "))
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&inputs).unwrap_or_else(|e| panic!("{e}\n{inputs}"));
        assert!(!c.scrapes.is_empty() && !c.execs.is_empty() && c.probes.len() >= 3);
    }

    #[test]
    fn inputs_parse_with_their_defaults() {
        let c = parse(
            r#"
interval = "30s"
[[scrape]]
url = "http://127.0.0.1:9100/metrics"
[[scrape]]
url = "https://app.internal/metrics"
name = "app"
labels = { team = "web" }
interval = "1m"
timeout = "10s"
max_bytes = "1MiB"
[[exec]]
command = ["/usr/local/bin/queue-depth", "--json"]
[[exec]]
command = ["/bin/echo", "x 1"]
name = "echo"
format = "influx"
interval = 2
[[probe]]
http = "https://example.org/health"
expect_status = [200, 204]
expect_body = "ok"
tls_insecure = true
[[probe]]
tcp = "db.internal:5432"
[[probe]]
icmp = "10.0.0.1"
count = 5
[[probe]]
tcp = "[::1]:22"
"#,
        )
        .unwrap();
        let s = &c.scrapes[0];
        assert_eq!(s.common.name, "http://127.0.0.1:9100/metrics");
        assert_eq!(
            s.common.interval,
            Duration::from_secs(30),
            "the agent's interval"
        );
        assert_eq!(s.common.timeout, Duration::from_secs(5));
        assert_eq!(s.max_bytes, 4 << 20);
        let s = &c.scrapes[1];
        assert_eq!(s.common.name, "app");
        assert_eq!(s.common.labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(s.common.interval, Duration::from_secs(60));
        assert_eq!(s.common.timeout, Duration::from_secs(10));
        assert_eq!(s.max_bytes, 1 << 20);
        let e = &c.execs[0];
        assert_eq!(e.common.name, "queue-depth");
        assert_eq!(e.format, ExecFormat::Prometheus);
        assert_eq!(e.max_bytes, 1 << 20);
        let e = &c.execs[1];
        assert_eq!(e.format, ExecFormat::Influx);
        assert_eq!(
            e.common.timeout,
            Duration::from_secs(2),
            "min(5s, interval)"
        );
        assert_eq!(
            c.probes[0].target,
            ProbeTarget::Http {
                url: "https://example.org/health".into(),
                expect_status: vec![200, 204],
                expect_body: Some("ok".into()),
                tls_insecure: true,
            }
        );
        assert_eq!(c.probes[1].common.name, "db.internal:5432");
        assert_eq!(
            c.probes[2].target,
            ProbeTarget::Icmp {
                host: "10.0.0.1".into(),
                count: 5
            }
        );
        assert_eq!(
            c.probes[3].target,
            ProbeTarget::Tcp {
                address: "[::1]:22".into()
            }
        );
        let c = parse("[[probe]]\nicmp = \"127.0.0.1\"").unwrap();
        assert!(matches!(
            c.probes[0].target,
            ProbeTarget::Icmp { count: 3, .. }
        ));
    }

    #[test]
    fn invalid_inputs_name_the_file_the_line_and_the_field() {
        for (text, line, needle) in [
            ("[[scrape]]\nurl = \"ftp://x/metrics\"", 1, "[[scrape]] url"),
            (
                "interval = \"5s\"\n\n[[scrape]]\nurl = \"http://x\"\ntimeout = \"6s\"",
                3,
                "[[scrape]] timeout: 6s is longer than the input's interval 5s",
            ),
            (
                "[[scrape]]\nurl = \"http://x\"\ninterval = \"10ms\"",
                1,
                "[[scrape]] interval",
            ),
            (
                "[[scrape]]\nurl = \"http://x\"\nmax_bytes = 10",
                1,
                "[[scrape]] max_bytes",
            ),
            (
                "[[scrape]]\nurl = \"http://x\"\nlabels = { \"bad-name\" = \"1\" }",
                1,
                "[[scrape]] labels: invalid label name \"bad-name\"",
            ),
            (
                "[[scrape]]\nurl = \"http://x\"\nlabels = { __x = \"1\" }",
                1,
                "[[scrape]] labels",
            ),
            ("[[exec]]\ncommand = []", 1, "[[exec]] command"),
            ("[[exec]]\ncommand = [\"\"]", 1, "[[exec]] command"),
            (
                "[[exec]]\ncommand = [\"/bin/true\"]\nformat = \"json\"",
                1,
                "[[exec]] format: \"json\"",
            ),
            (
                "[[probe]]\nhttp = \"http://x\"\ntcp = \"x:1\"",
                1,
                "exactly one of",
            ),
            ("[[probe]]\nname = \"nothing\"", 1, "exactly one of"),
            ("[[probe]]\ntcp = \"db.internal\"", 1, "[[probe]] tcp"),
            ("[[probe]]\ntcp = \"db:99999\"", 1, "[[probe]] tcp"),
            ("[[probe]]\nicmp = \"a b\"", 1, "[[probe]] icmp"),
            ("[[probe]]\nicmp = \"h\"\ncount = 0", 1, "[[probe]] count"),
            ("[[probe]]\nicmp = \"h\"\ncount = 101", 1, "[[probe]] count"),
            (
                "[[probe]]\nhttp = \"https://x\"\nexpect_status = [99]",
                1,
                "[[probe]] expect_status: 99",
            ),
            (
                "[[probe]]\ntcp = \"h:1\"\nexpect_body = \"ok\"",
                1,
                "http probes only",
            ),
            (
                "[[probe]]\nhttp = \"https://x\"\ncount = 2",
                1,
                "icmp probes only",
            ),
        ] {
            let e = parse(text).unwrap_err().0;
            assert!(
                e.starts_with(&format!("config file /etc/secumon/agent.toml: line {line}")),
                "{text:?} -> {e}"
            );
            assert!(e.contains(needle), "{text:?} -> {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // Serde's own errors (unknown keys, wrong types, missing fields) carry the place too.
        for (text, needle) in [
            ("[[scrape]]\nurl = \"http://x\"\nurll = 1", "urll"),
            ("[[scrape]]\nname = \"x\"", "url"),
            (
                "[[exec]]\ncommand = \"/bin/sh -c x\"",
                "expected a sequence",
            ),
            ("[[probe]]\nicmp = \"h\"\ncount = \"three\"", "line 3"),
        ] {
            let e = parse(text).unwrap_err().0;
            assert!(
                e.contains(needle) && e.contains("/etc/secumon/agent.toml"),
                "{text:?} -> {e}"
            );
        }
    }

    #[test]
    fn input_names_are_unique_per_kind() {
        let e = parse("[[scrape]]\nurl = \"http://a\"\n[[scrape]]\nurl = \"http://a\"")
            .unwrap_err()
            .0;
        assert!(
            e.contains("two [[scrape]] inputs are named \"http://a\""),
            "{e}"
        );
        let e = parse("[[exec]]\ncommand = [\"/a/x\"]\n[[exec]]\ncommand = [\"/b/x\"]")
            .unwrap_err()
            .0;
        assert!(e.contains("[[exec]]") && e.contains("\"x\""), "{e}");
        // The same name in two kinds is fine.
        assert!(parse("[[scrape]]\nurl = \"http://a\"\nname = \"a\"\n[[probe]]\nhttp = \"http://a\"\nname = \"a\"").is_ok());
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let e = load(Some(Path::new("/nonexistent/agent.toml")), &no_env)
            .unwrap_err()
            .0;
        assert!(e.contains("/nonexistent/agent.toml"), "{e}");
    }
}
