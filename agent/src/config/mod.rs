//! Agent configuration: a TOML file (unknown keys are errors, so typos do not silently
//! fall back to defaults), overridden by `SECUMON_*` environment variables, then validated.
//!
//! This module merges the file and the environment into a [`Config`]; `file` is the file's
//! schema, `sections` turns its input sections into inputs, `units` parses durations and sizes.

use crate::inputs::{
    self, ExecFormat, ExecInput, InputCommon, ProbeInput, ProbeTarget, ScrapeInput,
};
use crate::log::Level;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod file;
mod sections;
#[cfg(test)]
mod tests;
mod units;

use file::FileConfig;
use sections::{exec_input, probe_input, scrape_input, unique_names, InputDefaults};
pub use units::{format_duration, parse_interval, parse_size};

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
