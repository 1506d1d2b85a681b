//! Agent configuration: a TOML file (unknown keys are errors, so typos do not silently
//! fall back to defaults), overridden by `SECUMON_*` environment variables, then validated.

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
    pub interval: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub top_processes: usize,
    pub labels: BTreeMap<String, String>,
    pub disks: DiskConfig,
    pub network: NetworkConfig,
    pub log_level: Level,
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
            interval: DEFAULT_INTERVAL,
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            top_processes: DEFAULT_TOP_PROCESSES,
            labels: BTreeMap::new(),
            disks: DiskConfig::default(),
            network: NetworkConfig::default(),
            log_level: Level::Info,
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
    interval: Option<IntervalSetting>,
    spool_dir: Option<String>,
    spool_max_bytes: Option<SizeSetting>,
    top_processes: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    disks: Option<DisksSection>,
    network: Option<NetworkSection>,
    log_level: Option<String>,
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
    build(file, origin, env)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn build(
    file: FileConfig,
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
        all.retain(|k| !["labels", "disks", "network"].contains(&k.as_str()));
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
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let e = load(Some(Path::new("/nonexistent/agent.toml")), &no_env)
            .unwrap_err()
            .0;
        assert!(e.contains("/nonexistent/agent.toml"), "{e}");
    }
}
