//! Installing, dropping and re-creating the extension; its health report.

use std::path::Path;
use std::time::Duration;

use secumon_e2e::serde_json::Value;
use secumon_e2e::*;

/// The version the installed control file declares (pgrx substitutes @CARGO_VERSION@ on install).
fn installed_control_version() -> String {
    let control = Path::new(&pg_config("--sharedir")).join("extension/secumon.control");
    let text = std::fs::read_to_string(&control)
        .unwrap_or_else(|e| panic!("expected an installed {}: {e}", control.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| key.trim() == "default_version")
        .map(|(_, value)| value.trim().trim_matches('\'').to_string())
        .unwrap_or_else(|| panic!("expected default_version in {}:\n{text}", control.display()))
}

/// The version this checkout builds: the control file's default_version, where
/// `@CARGO_VERSION@` means the crate version (the workspace version).
fn checkout_version() -> String {
    let control = Path::new(env!("CARGO_MANIFEST_DIR")).join("../secumon_pg/secumon.control");
    let text = std::fs::read_to_string(&control).unwrap_or_default();
    let declared = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| key.trim() == "default_version")
        .map(|(_, value)| value.trim().trim_matches('\'').to_string())
        .unwrap_or_else(|| "@CARGO_VERSION@".to_string());
    if declared == "@CARGO_VERSION@" {
        env!("CARGO_PKG_VERSION").to_string()
    } else {
        declared
    }
}

/// What the maintenance worker logs while the extension does not exist in its database.
const WAITING_FOR_EXTENSION: &str = "secumon maintenance: waiting for CREATE EXTENSION secumon";

#[test]
fn extension_installs_with_versioned_sql() {
    let cluster = Cluster::start();
    let version = installed_control_version();
    assert_eq!(
        version,
        checkout_version(),
        "expected the installed extension to be this checkout's version (reinstall with \
         `cd secumon_pg && cargo pgrx install --pg-config /usr/bin/pg_config`)"
    );
    let script =
        Path::new(&pg_config("--sharedir")).join(format!("extension/secumon--{version}.sql"));
    assert!(
        script.is_file(),
        "expected the versioned install script {}",
        script.display()
    );

    let installed =
        cluster.psql_one("SELECT extversion FROM pg_extension WHERE extname = 'secumon'");
    assert_eq!(
        installed, version,
        "expected CREATE EXTENSION to install the control file's version"
    );
    let available = cluster.psql(&format!(
        "SELECT 1 FROM pg_available_extension_versions WHERE name = 'secumon' AND version = '{version}'"
    ));
    assert_eq!(
        available.len(),
        1,
        "expected pg_available_extension_versions to list secumon {version}"
    );

    cluster.psql("DROP EXTENSION secumon CASCADE");
    // The control file's `schema = secumon` makes CREATE EXTENSION create that schema outside
    // the extension, so PostgreSQL leaves it behind, empty; everything in it must be gone.
    let leftovers = cluster.psql(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname LIKE 'secumon%' \
         UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname LIKE 'secumon%' \
                   AND nspname <> 'secumon' \
         UNION ALL SELECT 'type ' || t.oid::regtype::text FROM pg_type t \
                   JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname LIKE 'secumon%' \
         UNION ALL SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p \
                   JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname LIKE 'secumon%'",
    );
    assert!(
        leftovers.is_empty(),
        "expected DROP EXTENSION to remove everything, left: {leftovers:?}"
    );

    cluster.psql("CREATE EXTENSION secumon");
    assert_eq!(
        cluster.psql_one("SELECT extversion FROM pg_extension WHERE extname = 'secumon'"),
        version,
        "expected CREATE EXTENSION to work again after DROP"
    );
}

#[test]
fn worker_resumes_after_extension_is_recreated() {
    let cluster = Cluster::start();
    // The worker runs before the drop (it may have started before CREATE EXTENSION and said
    // that it waits for it already).
    cluster.wait_for_job_success("partition_upkeep", Duration::from_secs(30));
    let noticed = || cluster.log().matches(WAITING_FOR_EXTENSION).count();
    let before = noticed();
    cluster.psql("DROP EXTENSION secumon CASCADE");
    // The worker notices the extension is gone before it comes back.
    assert!(
        wait_until(Duration::from_secs(30), || noticed() > before),
        "expected the maintenance worker to log that it waits for CREATE EXTENSION"
    );
    cluster.psql("CREATE EXTENSION secumon");
    cluster.wait_for_job_success("partition_upkeep", Duration::from_secs(30));
}

#[test]
fn health_reports_version_and_running_workers() {
    let cluster = Cluster::start();
    let mut client = cluster.client();
    let mut health = Value::Null;
    let all_running = wait_until(Duration::from_secs(30), || {
        health = client
            .query_one("SELECT secumon.health()", &[])
            .unwrap()
            .get(0);
        health["workers"]
            .as_array()
            .is_some_and(|w| !w.is_empty() && w.iter().all(|w| w["running"] == Value::Bool(true)))
    });
    assert!(
        all_running,
        "expected every worker in health() to be running, got {health:#}"
    );
    let version = cluster.psql_one("SELECT extversion FROM pg_extension WHERE extname = 'secumon'");
    assert_eq!(
        health["version"],
        Value::String(version),
        "expected health().version = extversion"
    );
    for worker in health["workers"].as_array().unwrap() {
        assert!(
            worker["name"].is_string(),
            "expected each worker to have a name: {worker}"
        );
    }
    assert!(
        health["data"]["agents"].is_number(),
        "expected health().data.agents, got {health:#}"
    );
    assert!(
        health["data"].get("last_sample").is_some(),
        "expected health().data.last_sample, got {health:#}"
    );
}

#[test]
fn workers_wait_quietly_until_the_extension_is_created() {
    let cluster = Cluster::builder().without_create_extension().start();
    // Once the maintenance worker says what it waits for, it has looked for the extension.
    assert!(
        wait_until(Duration::from_secs(30), || cluster.log().contains(WAITING_FOR_EXTENSION)),
        "expected the maintenance worker to log that it waits for CREATE EXTENSION"
    );
    let complaints: Vec<String> = cluster
        .log()
        .lines()
        .filter(|line| line.contains("ERROR") || line.contains("FATAL") || line.contains("PANIC"))
        .map(str::to_string)
        .collect();
    assert!(
        complaints.is_empty(),
        "expected the workers to wait without errors before CREATE EXTENSION: {complaints:#?}"
    );
    cluster.psql("CREATE EXTENSION secumon");
    cluster.wait_for_job_success("partition_upkeep", Duration::from_secs(30));
}
