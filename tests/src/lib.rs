//! End-to-end test harness for SecuMon.
//!
//! Every test gets a real PostgreSQL 15 cluster ([`Cluster`]) with the installed `secumon`
//! extension preloaded (its background workers running) and, where needed, the real
//! `secumon-agent` binary ([`Agent`]). Nothing is mocked; everything talks over loopback.
//!
//! ```no_run
//! use secumon_e2e::*;
//! use std::time::Duration;
//!
//! let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
//! let role = cluster.create_agent_role("agent_a");
//! let agent = cluster.agent(&cluster.agent_config(&role).agent_id("a").interval("1s"));
//! assert!(agent.run_once().status.success());
//! let rows = cluster.psql("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'a'");
//! assert_ne!(rows[0][0].as_deref(), Some("0"));
//! ```
//!
//! Prerequisites: the extension installed into the system PostgreSQL
//! (`cd secumon_pg && cargo pgrx install --pg-config /usr/bin/pg_config`), the agent built
//! (`cargo build -p secumon-agent`), and root (clusters run as the `postgres` OS user) or the
//! `postgres` user itself. `SECUMON_E2E_KEEP=1` keeps temp dirs for inspection.

mod agent;
mod cluster;
mod fixtures;
pub mod history;
pub mod receivers;
mod report;
pub mod sys;

use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

pub use agent::{agent_binary, toml_string, Agent, AgentConfig, AgentProcess, RUN_TIMEOUT};
pub use cluster::{
    free_port, pg_bindir, pg_config, Cluster, ClusterBuilder, Role, Rows, TEST_DATABASE,
    timescaledb_backend,
};
pub use fixtures::{
    DEFAULT_PARTITION_ROWS,
    history_sql,
    all_table_rows, breach_edited_rule, differing_tables, fingerprint, fingerprint_diff, fingerprint_of_columns,
    ingest_series, populate, psql_on, psql_one_on, rows_diff, run_job, sql_rows, table_columns,
    table_rows, unified_diff, Columns, Fingerprint, Fixture, BREACH_VALUE, COMPRESSED_DAYS_AGO,
    CUSTOM_RULE, DELETED_RULE, EDITED_RULE, EDITED_THRESHOLD, USERNAME, WEBHOOK_CHANNEL,
};
pub use postgres;
pub use report::{register_agent, Report};
pub use serde_json;

/// The four physical, time-partitioned tables.
pub const PARTITIONED_TABLES: [&str; 4] = [
    "metric_samples",
    "disk_metrics",
    "network_metrics",
    "process_metrics",
];

/// Polls `condition` every 100 ms until it returns true or `timeout` passes; returns whether
/// it held. Use as `assert!(wait_until(..), "expected …")`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The SQLSTATE of a server error, e.g. `Some("42501")`.
pub fn sqlstate(error: &postgres::Error) -> Option<String> {
    error.code().map(|c| c.code().to_string())
}

/// The server's message (with SQLSTATE, detail and hint) or the client error.
pub fn error_text(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} [{}]", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" DETAIL: {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" HINT: {hint}"));
            }
            text
        }
        None => error.to_string(),
    }
}

/// Asserts that `result` failed with SQLSTATE `code`; `what` describes the attempt.
pub fn assert_sqlstate<T: std::fmt::Debug>(
    result: Result<T, postgres::Error>,
    code: &str,
    what: &str,
) {
    match result {
        Ok(value) => {
            panic!("expected {what} to fail with SQLSTATE {code}, but it succeeded: {value:?}")
        }
        Err(e) => assert_eq!(
            sqlstate(&e).as_deref(),
            Some(code),
            "expected {what} to fail with SQLSTATE {code}, got: {}",
            error_text(&e)
        ),
    }
}

pub fn stdout_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the shape of a refused start: non-zero exit, no panic, and one stderr line that
/// mentions at least one of `keywords` (case-insensitive). Returns that line.
pub fn assert_one_line_error(output: &Output, keywords: &[&str], what: &str) -> String {
    let stderr = stderr_text(output);
    assert!(
        !output.status.success(),
        "expected the agent to exit non-zero for {what}; it exited {}.\nstdout:\n{}\nstderr:\n{stderr}",
        output.status,
        stdout_text(output)
    );
    assert!(
        output.status.code().is_some(),
        "expected the agent to exit with a code for {what}, not die by a signal ({})\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        !stderr.contains("panicked at") && !stderr.contains("stack backtrace"),
        "expected an error message for {what}, not a panic:\n{stderr}"
    );
    let line = stderr.lines().find(|line| {
        let lower = line.to_lowercase();
        keywords.iter().any(|k| lower.contains(&k.to_lowercase()))
    });
    match line {
        Some(line) => {
            eprintln!("{what}: {line}");
            line.to_string()
        }
        None => panic!(
            "expected one stderr line naming the problem for {what} (any of {keywords:?}); stderr was:\n{stderr}"
        ),
    }
}

/// This machine's hostname as the kernel reports it.
pub fn hostname() -> String {
    sys::read_lossy(std::path::Path::new("/proc/sys/kernel/hostname"))
        .trim()
        .to_string()
}

/// Network interfaces other than loopback that are up (from /sys/class/net).
pub fn non_loopback_interfaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lo")
        .filter(|name| {
            let state = sys::read_lossy(
                &std::path::Path::new("/sys/class/net")
                    .join(name)
                    .join("operstate"),
            );
            let state = state.trim();
            state == "up" || state == "unknown"
        })
        .collect()
}
