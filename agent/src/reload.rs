//! What a configuration reload (SIGHUP) changes, decided apart from the daemon that
//! applies it, so the decision can be tested without threads, signals or a database.
//!
//! Reloading reads the configuration exactly as at start-up — the same file, then the
//! same `SECUMON_*` environment overrides (the environment of a running process does
//! not change) — and validates it. An invalid result changes nothing: the daemon keeps
//! its current configuration, because a typo in a file must never stop the collection.
//!
//! Most settings apply while running. Two need a restart and keep their current value:
//! `agent_id`, because every spooled report is stamped with it and the database ties it
//! to the role that registered it; and `spool_dir`, because the running agent holds the
//! lock on its spool and the reports waiting there.

use crate::config::{self, format_duration, Config, ConfigError};
use crate::daemon::describe_database;
use std::fmt::Debug;

/// The outcome of re-reading a valid configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The configuration to run with from now on: the re-read one, except that settings
    /// needing a restart keep their current values.
    pub config: Config,
    /// What changes now, one entry per setting (`interval 10s -> 1s`), passwords masked.
    pub changes: Vec<String>,
    /// Settings changed in the file that only a restart applies, with both values.
    pub needs_restart: Vec<String>,
}

impl Plan {
    /// The database connection must be replaced: a new connection string, or new labels
    /// (which only reach the database when the agent registers, i.e. on connecting).
    pub fn reconnect(&self, current: &Config) -> bool {
        self.config.database != current.database || self.config.labels != current.labels
    }
}

/// Where the configuration is read from, for log lines.
pub fn describe_source(cfg: &Config) -> String {
    match &cfg.source {
        Some(path) => path.display().to_string(),
        None => "defaults and environment (no config file)".to_string(),
    }
}

/// Re-reads the configuration the running agent was started with (`current.source`, or
/// the defaults if it had no file) and decides what changes. `env` is the same lookup as
/// at start-up. An error means the configuration is invalid or unreadable; the caller
/// then keeps `current` untouched.
pub fn reread(current: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, ConfigError> {
    // The file it was started with, not a fresh search: a deleted file is an error to
    // report, not a silent switch to the defaults.
    let loaded = config::load(current.source.as_deref(), env)?;
    // A file that lost its connection is refused as at start-up, not taken as libpq's defaults.
    config::require_connection(&loaded, env)?;
    // An enrolled agent keeps logging in as itself (never enrolls again on a reload).
    let loaded = crate::enroll::apply_saved(loaded, &current.spool_dir)
        .map_err(|e| ConfigError(e.message))?;
    Ok(plan(current, loaded))
}

/// Compares the running configuration with a freshly loaded (valid) one.
pub fn plan(current: &Config, loaded: Config) -> Plan {
    let mut config = loaded;
    let mut needs_restart = Vec::new();
    if config.agent_id != current.agent_id {
        needs_restart.push(format!(
            "agent_id {:?} -> {:?}",
            current.agent_id, config.agent_id
        ));
        config.agent_id = current.agent_id.clone();
    }
    if config.spool_dir != current.spool_dir {
        needs_restart.push(format!(
            "spool_dir {} -> {}",
            current.spool_dir.display(),
            config.spool_dir.display()
        ));
        config.spool_dir = current.spool_dir.clone();
    }
    let changes = diff(current, &config);
    Plan {
        config,
        changes,
        needs_restart,
    }
}

/// One entry per setting that differs, worded for the "configuration reloaded" line.
fn diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.database != new.database {
        let (a, b) = (
            describe_database(&old.database),
            describe_database(&new.database),
        );
        if a == b {
            // Only a password differs; never show either.
            out.push("database password".to_string());
        } else {
            out.push(format!("database {a:?} -> {b:?}"));
        }
    }
    if old.interval != new.interval {
        out.push(format!(
            "interval {} -> {}",
            format_duration(old.interval),
            format_duration(new.interval)
        ));
    }
    changed(
        &mut out,
        "spool_max_bytes",
        &old.spool_max_bytes,
        &new.spool_max_bytes,
    );
    changed(
        &mut out,
        "top_processes",
        &old.top_processes,
        &new.top_processes,
    );
    if old.log_level != new.log_level {
        out.push(format!("log_level {} -> {}", old.log_level, new.log_level));
    }
    changed(&mut out, "labels", &old.labels, &new.labels);
    changed(
        &mut out,
        "disks.exclude_fs_types",
        &old.disks.exclude_fs_types,
        &new.disks.exclude_fs_types,
    );
    changed(
        &mut out,
        "disks.include_mountpoints",
        &old.disks.include_mountpoints,
        &new.disks.include_mountpoints,
    );
    changed(
        &mut out,
        "network.include_interfaces",
        &old.network.include_interfaces,
        &new.network.include_interfaces,
    );
    changed(
        &mut out,
        "network.exclude_interfaces",
        &old.network.exclude_interfaces,
        &new.network.exclude_interfaces,
    );
    changed(
        &mut out,
        "network.include_loopback",
        &old.network.include_loopback,
        &new.network.include_loopback,
    );
    // Inputs restart with the new list (see inputs::schedule::Inputs::reconfigure).
    for (kind, differ, before, after) in [
        (
            "scrape",
            old.scrapes != new.scrapes,
            old.scrapes.len(),
            new.scrapes.len(),
        ),
        (
            "exec",
            old.execs != new.execs,
            old.execs.len(),
            new.execs.len(),
        ),
        (
            "probe",
            old.probes != new.probes,
            old.probes.len(),
            new.probes.len(),
        ),
    ] {
        if differ {
            out.push(format!("[[{kind}]] inputs ({before} -> {after})"));
        }
    }
    out
}

fn changed<T: Debug + PartialEq>(out: &mut Vec<String>, name: &str, old: &T, new: &T) {
    if old != new {
        out.push(format!("{name} {old:?} -> {new:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Level;
    use crate::spool::tests::TempDir;
    use std::path::PathBuf;
    use std::time::Duration;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const BASE: &str = r#"
agent_id = "web-01"
database = "host=db1 dbname=secumon user=agent password=hunter22"
interval = "10s"
spool_dir = "/var/lib/secumon-agent/spool"
spool_max_bytes = "64MiB"
"#;

    fn parse(text: &str) -> Config {
        config::from_toml_str(text, "agent.toml", &no_env).unwrap()
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let current = parse(BASE);
        let plan = plan(&current, parse(BASE));
        assert_eq!(plan.config, current);
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);
        assert!(plan.needs_restart.is_empty());
        assert!(!plan.reconnect(&current));
    }

    #[test]
    fn live_settings_change_and_are_named() {
        let current = parse(BASE);
        let new = parse(&format!(
            "{}log_level = \"debug\"\ntop_processes = 3\n[labels]\nenv = \"prod\"\n",
            BASE.replace("host=db1", "host=db2")
                .replace("\"10s\"", "\"1s\"")
                .replace("64MiB", "1MiB")
        ));
        let plan = plan(&current, new.clone());
        assert_eq!(plan.config, new);
        assert_eq!(plan.config.interval, Duration::from_secs(1));
        assert_eq!(plan.config.spool_max_bytes, 1 << 20);
        assert_eq!(plan.config.log_level, Level::Debug);
        assert!(plan.needs_restart.is_empty());
        assert!(plan.reconnect(&current));
        assert_eq!(
            plan.changes,
            vec![
                "database \"host=db1 dbname=secumon user=agent password=***\" -> \"host=db2 dbname=secumon user=agent password=***\"".to_string(),
                "interval 10s -> 1s".into(),
                "spool_max_bytes 67108864 -> 1048576".into(),
                "top_processes 10 -> 3".into(),
                "log_level info -> debug".into(),
                "labels {} -> {\"env\": \"prod\"}".into(),
            ]
        );
    }

    #[test]
    fn passwords_never_appear_in_the_change_list() {
        let current = parse(BASE);
        let plan = plan(&current, parse(&BASE.replace("hunter22", "correcthorse")));
        assert_eq!(plan.changes, vec!["database password".to_string()]);
        assert!(plan.reconnect(&current), "a new password needs a new login");
        let uri = |pw: &str, host: &str| {
            parse(&format!(
                "database = \"postgresql://agent:{pw}@{host}/secumon\""
            ))
        };
        let plan = super::plan(&uri("s3cretpw", "db1"), uri("0thersecret", "db2"));
        let line = plan.changes.join(", ");
        assert!(
            !line.contains("s3cretpw") && !line.contains("0thersecret"),
            "{line}"
        );
        assert!(line.contains("agent:***@db2"), "{line}");
    }

    #[test]
    fn labels_alone_reconnect_so_that_the_agent_registers_them() {
        let current = parse(BASE);
        let plan = plan(&current, parse(&format!("{BASE}[labels]\ndc = \"fra1\"\n")));
        assert!(plan.reconnect(&current));
        let plan = super::plan(&current, parse(&format!("{BASE}top_processes = 0\n")));
        assert!(!plan.reconnect(&current));
    }

    #[test]
    fn restart_only_settings_keep_their_current_value() {
        let current = parse(BASE);
        let new = parse(
            &BASE
                .replace("web-01", "web-02")
                .replace("/var/lib/secumon-agent/spool", "/srv/spool")
                .replace("\"10s\"", "\"5s\""),
        );
        let plan = plan(&current, new);
        assert_eq!(plan.config.agent_id, "web-01");
        assert_eq!(
            plan.config.spool_dir,
            PathBuf::from("/var/lib/secumon-agent/spool")
        );
        assert_eq!(
            plan.config.interval,
            Duration::from_secs(5),
            "the rest applies"
        );
        assert_eq!(
            plan.needs_restart,
            vec![
                "agent_id \"web-01\" -> \"web-02\"".to_string(),
                "spool_dir /var/lib/secumon-agent/spool -> /srv/spool".into(),
            ]
        );
        assert_eq!(plan.changes, vec!["interval 10s -> 5s".to_string()]);
    }

    #[test]
    fn rereads_the_same_file_with_the_same_environment_overrides() {
        let t = TempDir::new("reload-env");
        std::fs::create_dir_all(&t.0).unwrap();
        let path = t.0.join("agent.toml");
        std::fs::write(&path, BASE).unwrap();
        let env = |k: &str| (k == "SECUMON_INTERVAL").then(|| "2s".to_string());
        let current = config::load(Some(&path), &env).unwrap();
        assert_eq!(current.interval, Duration::from_secs(2));

        std::fs::write(
            &path,
            BASE.replace("\"10s\"", "\"30s\"")
                .replace("host=db1", "host=db3"),
        )
        .unwrap();
        let plan = reread(&current, &env).unwrap();
        assert_eq!(
            plan.config.interval,
            Duration::from_secs(2),
            "the variable still wins"
        );
        assert_eq!(plan.config.source.as_deref(), Some(path.as_path()));
        assert!(plan.config.database.contains("host=db3"));
    }

    #[test]
    fn an_invalid_or_missing_file_is_an_error_naming_the_problem() {
        let t = TempDir::new("reload-bad");
        std::fs::create_dir_all(&t.0).unwrap();
        let path = t.0.join("agent.toml");
        std::fs::write(&path, BASE).unwrap();
        let current = config::load(Some(&path), &no_env).unwrap();

        for (text, needle) in [
            ("interval = \"soon\"\n", "line 1"),
            ("interval = \"10ms\"\n", "invalid interval"),
            ("intervall = \"10s\"\n", "intervall"),
            ("spool_max_bytes = 10\n", "spool_max_bytes"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = reread(&current, &no_env).unwrap_err().0;
            assert!(e.contains(needle), "{text:?} -> {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        std::fs::write(&path, "database = \"\"\n").unwrap();
        let e = reread(&current, &no_env).unwrap_err().0;
        assert!(e.contains("no database connection configured"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = reread(&current, &no_env).unwrap_err().0;
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
