//! Versioned upgrades: a database created at a released version (0.1.0) and updated with
//! `ALTER EXTENSION secumon UPDATE` must end up with exactly the catalog of a fresh install of
//! the version being built, keep every row and setting, and keep being served by the workers
//! (one `secumon.so` serves every released SQL version).
//!
//! Released install scripts are kept in the repository (`secumon_pg/sql/secumon--X.sql`);
//! `cargo pgrx install` installs only the current version and the upgrade scripts, so these
//! tests copy the released ones into `$(pg_config --sharedir)/extension/` first (as root).
//!
//! The catalog comparison is strict on purpose: any schema change (table, column, index,
//! constraint, function body, grant, comment, policy, trigger, owner, config-dump filter) made
//! in `sql/` without the same change in the upgrade script fails it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secumon_e2e::*;

/// Every released version, oldest first. Add a version here when it is released (and keep its
/// install script in secumon_pg/sql/).
const RELEASED: &[&str] = &["0.1.0"];
const OLDEST: &str = "0.1.0";
const WAIT: Duration = Duration::from_secs(30);
const IDLE_DATABASE: &str = "postgres";
/// A second database of the same cluster for a fresh install to compare with.
const FRESH_DATABASE: &str = "fresh_install";

/// The version being built: the workspace version, which `cargo pgrx install` installs as the
/// extension's default_version.
fn building() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

// ---------------------------------------------------------------------------------------------
// Installing the released scripts and creating the extension at a version.

fn repository_sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../secumon_pg/sql")
}

fn extension_dir() -> PathBuf {
    PathBuf::from(pg_config("--sharedir")).join("extension")
}

/// Copies each released install script `secumon_pg/sql/secumon--X.sql` into the server's
/// extension directory when it is missing there (or differs: the repository's copy of a
/// released script is the reference, an older build's leftover is not).
fn install_released_scripts() {
    let source_dir = repository_sql_dir();
    for version in RELEASED {
        let name = format!("secumon--{version}.sql");
        let source = source_dir.join(&name);
        let script = fs::read(&source).unwrap_or_else(|e| {
            panic!(
                "expected the released install script {} in the repository ({e}); every released version's \
                 secumon--X.sql is kept in secumon_pg/sql/",
                source.display()
            )
        });
        let target = extension_dir().join(&name);
        if fs::read(&target).ok().as_deref() == Some(&script[..]) {
            continue;
        }
        let partial = extension_dir().join(format!(".{name}.e2e-{}", std::process::id()));
        fs::write(&partial, &script)
            .and_then(|()| fs::rename(&partial, &target))
            .unwrap_or_else(|e| {
                panic!(
                    "expected to install {} into {} (run as root): {e}",
                    source.display(),
                    target.display()
                )
            });
        eprintln!(
            "installed the released script {} into {}",
            name,
            extension_dir().display()
        );
    }
}

/// A cluster (workers serving `secumon_test`, alert engine every second) in which
/// `secumon_test` has the extension created at `version`.
fn cluster_at(version: &str) -> Cluster {
    install_released_scripts();
    let cluster = Cluster::builder()
        .without_create_extension()
        .setting("secumon.alert_interval", "1s")
        .start();
    if let Err(e) = cluster
        .client()
        .batch_execute(&format!("CREATE EXTENSION secumon VERSION '{version}'"))
    {
        panic!(
            "expected CREATE EXTENSION secumon VERSION '{version}' to work: {}\n--- log ---\n{}",
            error_text(&e),
            cluster.log()
        );
    }
    cluster
}

fn default_version(cluster: &Cluster) -> String {
    cluster.psql_one("SELECT default_version FROM pg_available_extensions WHERE name = 'secumon'")
}

fn installed_version(cluster: &Cluster, database: &str) -> String {
    psql_one_on(
        cluster,
        database,
        "SELECT extversion FROM pg_extension WHERE extname = 'secumon'",
    )
}

/// `ALTER EXTENSION secumon UPDATE` in `secumon_test`; asserts that it reached the default
/// version and that this was an actual update.
fn update(cluster: &Cluster) {
    let from = installed_version(cluster, TEST_DATABASE);
    let to = default_version(cluster);
    assert_ne!(
        from, to,
        "expected the version being built ({}) to be newer than the installed {from}; is the new version installed \
         (`cargo pgrx install`) and the workspace version bumped?",
        building()
    );
    if let Err(e) = cluster
        .client()
        .batch_execute("ALTER EXTENSION secumon UPDATE")
    {
        panic!("expected ALTER EXTENSION secumon UPDATE from {from} to {to} to work: {}\n--- log ---\n{}", error_text(&e), log_tail(cluster));
    }
    assert_eq!(
        installed_version(cluster, TEST_DATABASE),
        to,
        "expected the update to reach the default version"
    );
}

/// `ALTER SYSTEM SET secumon.database` and a restart: the workers serve `database` from now on.
fn point_workers_at(cluster: &mut Cluster, database: &str) {
    cluster.psql(&format!("ALTER SYSTEM SET secumon.database = '{database}'"));
    cluster.restart();
}

fn log_tail(cluster: &Cluster) -> String {
    let log = cluster.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// A normalised description of everything the extension owns in a database.

/// One entry per object of `pg_dump --schema-only --binary-upgrade` (keyed by its TOC header
/// "Name; Type; Schema; Owner"), normalised: no OIDs, relfilenodes, xids, attribute versions or
/// missing-value bookkeeping; no dropped columns; no sequence positions; nothing about the data
/// partitions and compressed chunks (`secumon_partitions.*_pYYYYMMDD`, `*_cYYYYMMDD`) that exist
/// only because of data. Everything else — definitions, owners, grants, comments, policies,
/// triggers, indexes, function bodies, extension membership and config-dump filters — stays.
type SchemaDescription = BTreeMap<String, String>;

fn describe_schema(cluster: &Cluster, database: &str) -> SchemaDescription {
    let output =
        cluster.run_client_program("pg_dump", &["--schema-only", "--binary-upgrade", database]);
    assert!(
        output.status.success(),
        "expected pg_dump --schema-only --binary-upgrade {database} to work: {}",
        stderr_text(&output)
    );
    let description = normalise_dump(&stdout_text(&output), &extension_summary(cluster, database));
    // Guard against a normaliser that throws everything away and compares nothing.
    assert!(
        description.len() > 100
            && description
                .contains_key("alert_rules; Type: TABLE; Schema: secumon; Owner: postgres"),
        "expected the description of {database} to hold the extension's objects; got {} entries",
        description.len()
    );
    description
}

/// The extension's row in pg_extension with its config tables by name, sorted (the dump gives
/// them as OIDs in creation order).
fn extension_summary(cluster: &Cluster, database: &str) -> String {
    let mut lines = vec![psql_one_on(
        cluster,
        database,
        "SELECT format('extension %s version %s schema %s relocatable %s', e.extname, e.extversion, n.nspname, e.extrelocatable)
           FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'secumon'",
    )];
    let config = psql_on(
        cluster,
        database,
        "SELECT format('  config table %s %s', u.c::regclass, coalesce(nullif(u.cond, ''), '(all rows)'))
           FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond)
          WHERE e.extname = 'secumon' ORDER BY u.c::regclass::text",
    );
    lines.extend(
        config
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten()),
    );
    lines.join("\n")
}

fn is_data_object(text: &str) -> bool {
    // secumon_partitions.<table>_pYYYYMMDD… / _cYYYYMMDD…, or an entry named after one.
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find('_') {
        let at = i + pos;
        if at + 10 <= bytes.len()
            && (bytes[at + 1] == b'p' || bytes[at + 1] == b'c')
            && bytes[at + 2..at + 10].iter().all(u8::is_ascii_digit)
            && bytes.get(at + 10).is_none_or(|b| !b.is_ascii_digit())
        {
            return true;
        }
        i = at + 1;
    }
    false
}

/// pgrx puts `#[pg_test]` functions into schema `tests` when the library is built with the
/// `pg_test` feature (`cargo pgrx test`); that schema is never part of a release, so a fresh
/// install from such a build has it and an updated database does not.
fn is_pgrx_test_object(header: &str) -> bool {
    header.contains("; Schema: tests;")
        || header.starts_with("tests; Type: SCHEMA;")
        || header.starts_with("SCHEMA tests;")
}

fn normalise_dump(dump: &str, extension_summary: &str) -> SchemaDescription {
    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    let mut lines = dump.lines().peekable();
    let mut skipping_statement = false;
    while let Some(line) = lines.next() {
        if let Some(header) = line.strip_prefix("-- Name: ") {
            entries.push((header.to_string(), Vec::new()));
            continue;
        }
        let Some((_, body)) = entries.last_mut() else {
            continue;
        }; // preamble
        if skipping_statement {
            skipping_statement = !line.trim_end().ends_with(';');
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty()
            || line == "--"
            || line.starts_with("-- For binary upgrade")
            || line.starts_with("-- set missing value")
            || line.starts_with("-- PostgreSQL database dump complete")
            || line.starts_with("\\restrict")
            || line.starts_with("\\unrestrict")
            || line.starts_with("SET default_tablespace")
            || line.starts_with("SET default_table_access_method")
            || line.starts_with("SELECT pg_catalog.binary_upgrade_set_next_")
            || line.starts_with("SELECT pg_catalog.binary_upgrade_set_missing_value(")
        {
            continue;
        }
        // Relfrozenxid of tables and the shape of dropped columns: multi-line UPDATEs.
        if line.starts_with("UPDATE pg_catalog.pg_class")
            || line.starts_with("UPDATE pg_catalog.pg_attribute")
        {
            skipping_statement = !line.trim_end().ends_with(';');
            continue;
        }
        if line.contains("........pg.dropped.") {
            // A dropped column in CREATE TABLE (or its DROP COLUMN): gone, and if it was the last
            // column, the comma before it goes too.
            if lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with(')'))
            {
                if let Some(previous) = body.last_mut() {
                    if previous.ends_with(',') {
                        previous.pop();
                    }
                }
            }
            continue;
        }
        if line.starts_with("SELECT pg_catalog.binary_upgrade_create_empty_extension(") {
            body.extend(extension_summary.lines().map(str::to_string));
            continue;
        }
        body.push(strip_oids(line));
    }
    let mut description = SchemaDescription::new();
    for (header, body) in entries {
        let kind = header
            .split("; Type: ")
            .nth(1)
            .and_then(|t| t.split(';').next())
            .unwrap_or("");
        if kind == "SEQUENCE SET"
            || is_data_object(&header)
            || body.iter().any(|l| is_data_object(l))
            || is_pgrx_test_object(&header)
        {
            continue;
        }
        let mut key = header.clone();
        let mut n = 2;
        while description.contains_key(&key) {
            key = format!("{header} #{n}");
            n += 1;
        }
        description.insert(key, format!("-- {header}\n{}", body.join("\n")));
    }
    description
}

/// `'12345'::pg_catalog.oid` → `'<oid>'::pg_catalog.oid`.
fn strip_oids(line: &str) -> String {
    let marker = "'::pg_catalog.oid";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(pos) = rest.find(marker) {
        let (before, after) = rest.split_at(pos);
        match before.rfind('\'') {
            Some(quote)
                if before[quote + 1..].chars().all(|c| c.is_ascii_digit())
                    && quote + 1 < before.len() =>
            {
                out.push_str(&before[..=quote]);
                out.push_str("<oid>");
            }
            _ => out.push_str(before),
        }
        out.push_str(marker);
        rest = &after[marker.len()..];
    }
    out.push_str(rest);
    out
}

/// None when equal; else a summary and the first differences as unified diffs.
fn schema_diff(
    left_name: &str,
    left: &SchemaDescription,
    right_name: &str,
    right: &SchemaDescription,
) -> Option<String> {
    let keys: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let mut only_left = Vec::new();
    let mut only_right = Vec::new();
    let mut changed = Vec::new();
    for key in keys {
        match (left.get(key), right.get(key)) {
            (Some(_), None) => only_left.push(key),
            (None, Some(_)) => only_right.push(key),
            (Some(l), Some(r)) if l != r => changed.push(key),
            _ => {}
        }
    }
    if only_left.is_empty() && only_right.is_empty() && changed.is_empty() {
        return None;
    }
    let mut text = format!(
        "{} object(s) only in {left_name}, {} only in {right_name}, {} different (`-` {left_name}, `+` {right_name}):\n",
        only_left.len(),
        only_right.len(),
        changed.len()
    );
    for key in &only_left {
        text.push_str(&format!("  only in {left_name}: {key}\n"));
    }
    for key in &only_right {
        text.push_str(&format!("  only in {right_name}: {key}\n"));
    }
    for key in &changed {
        text.push_str(&format!("  different: {key}\n"));
    }
    let budget = 12;
    for (shown, key) in only_left.iter().chain(&only_right).chain(&changed).enumerate() {
        if shown == budget {
            text.push_str(&format!(
                "\n… {} more not shown\n",
                only_left.len() + only_right.len() + changed.len() - budget
            ));
            break;
        }
        let l = left.get(*key).map(String::as_str).unwrap_or("");
        let r = right.get(*key).map(String::as_str).unwrap_or("");
        let diff = unified_diff(l, r, 3);
        let lines: Vec<&str> = diff.lines().collect();
        text.push_str(&format!("\n--- {left_name}\n+++ {right_name}\n"));
        text.push_str(&lines[..lines.len().min(60)].join("\n"));
        if lines.len() > 60 {
            text.push_str(&format!("\n… ({} more diff lines)", lines.len() - 60));
        }
        text.push('\n');
    }
    Some(text)
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn create_extension_installs_the_version_being_built_with_an_update_path_from_every_release() {
    install_released_scripts();
    let cluster = Cluster::start();
    assert_eq!(
        default_version(&cluster),
        building(),
        "expected the installed control file's default_version to be the version being built"
    );
    assert_eq!(
        installed_version(&cluster, TEST_DATABASE),
        building(),
        "expected CREATE EXTENSION secumon to install the default version"
    );

    let available: Vec<String> = cluster
        .psql("SELECT version FROM pg_available_extension_versions WHERE name = 'secumon' ORDER BY version")
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    for version in RELEASED.iter().copied().chain([building()]) {
        assert!(
            available.iter().any(|v| v == version),
            "expected version {version} among the available versions {available:?}"
        );
    }
    for version in RELEASED.iter().filter(|v| **v != building()) {
        let path = cluster.psql(&format!(
            "SELECT path FROM pg_extension_update_paths('secumon') WHERE source = '{version}' AND target = '{}'",
            building()
        ));
        assert!(
            matches!(path.first().and_then(|r| r.first()), Some(Some(_))),
            "expected an update path from {version} to {} (secumon--{version}--{}.sql); update paths: {:?}",
            building(),
            building(),
            cluster.psql("SELECT source, target, path FROM pg_extension_update_paths('secumon') WHERE path IS NOT NULL")
        );
    }
}

#[test]
fn operating_a_database_leaves_the_extension_catalog_as_installed() {
    // The reference for the tests below: a populated database of the version being built
    // describes the same as a fresh install, so every difference they find is the update's.
    let mut cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    let _fixture = populate(&cluster);
    point_workers_at(&mut cluster, IDLE_DATABASE);
    cluster.psql(&format!("CREATE DATABASE {FRESH_DATABASE}"));
    psql_on(&cluster, FRESH_DATABASE, "CREATE EXTENSION secumon");
    let operated = describe_schema(&cluster, TEST_DATABASE);
    let fresh = describe_schema(&cluster, FRESH_DATABASE);
    if let Some(diff) = schema_diff("operated", &operated, "fresh install", &fresh) {
        panic!("expected a populated database to keep the catalog of a fresh install:\n{diff}");
    }
}

#[test]
fn the_catalog_comparison_notices_every_kind_of_schema_change() {
    // The comparison above is only worth something if it is strict: here two fresh installs
    // are compared after the second one was changed behind the extension's back.
    let cluster = Cluster::builder()
        .setting("secumon.database", IDLE_DATABASE)
        .start();
    cluster.psql(&format!("CREATE DATABASE {FRESH_DATABASE}"));
    psql_on(&cluster, FRESH_DATABASE, "CREATE EXTENSION secumon");
    let reference = describe_schema(&cluster, TEST_DATABASE);

    // A column added and dropped again leaves only a dropped column behind: not a difference.
    psql_on(&cluster, FRESH_DATABASE, "ALTER TABLE secumon.tenants ADD COLUMN scratch integer; ALTER TABLE secumon.tenants DROP COLUMN scratch");
    let dropped = describe_schema(&cluster, FRESH_DATABASE);
    if let Some(diff) = schema_diff("reference", &reference, "with a dropped column", &dropped) {
        panic!("expected a dropped column not to count as a difference:\n{diff}");
    }

    psql_on(
        &cluster,
        FRESH_DATABASE,
        "GRANT SELECT ON secumon.tenants TO secumon_agent;
         COMMENT ON TABLE secumon.agents IS 'changed';
         CREATE INDEX tenants_by_name ON secumon.tenants (name);
         CREATE OR REPLACE FUNCTION secumon._bucket(width interval, ts timestamptz) RETURNS timestamptz
         LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN date_bin(width, ts, '2000-01-01 00:00:01+00');
         ALTER TABLE secumon.silences ALTER COLUMN comment SET DEFAULT 'none';",
    );
    let changed = describe_schema(&cluster, FRESH_DATABASE);
    let diff = schema_diff("reference", &reference, "changed", &changed)
        .expect("expected the changes to be noticed");
    for object in [
        "TABLE tenants; Type: ACL",
        "TABLE agents; Type: COMMENT",
        "tenants_by_name; Type: INDEX",
        "_bucket(interval, timestamp with time zone); Type: FUNCTION",
        "silences; Type: TABLE",
    ] {
        assert!(
            diff.contains(object),
            "expected the comparison to notice a change of {object}:\n{diff}"
        );
    }
}

#[test]
fn update_from_0_1_0_gives_the_catalog_of_a_fresh_install() {
    let mut cluster = cluster_at(OLDEST);
    let _fixture = populate(&cluster);
    point_workers_at(&mut cluster, IDLE_DATABASE);
    update(&cluster);
    cluster.psql(&format!("CREATE DATABASE {FRESH_DATABASE}"));
    psql_on(&cluster, FRESH_DATABASE, "CREATE EXTENSION secumon");
    let updated = describe_schema(&cluster, TEST_DATABASE);
    let fresh = describe_schema(&cluster, FRESH_DATABASE);
    if let Some(diff) = schema_diff(
        &format!("updated from {OLDEST}"),
        &updated,
        "fresh install",
        &fresh,
    ) {
        panic!(
            "expected ALTER EXTENSION secumon UPDATE from {OLDEST} to give exactly the catalog of a fresh install of {} \
             (every schema change in sql/ needs the same change in the upgrade script):\n{diff}",
            building()
        );
    }
}

#[test]
fn update_from_0_1_0_keeps_every_row_and_setting() {
    let mut cluster = cluster_at(OLDEST);
    let _fixture = populate(&cluster);
    point_workers_at(&mut cluster, IDLE_DATABASE);
    // The update replaces the jobs' one-line wrapper functions by the function they called and
    // its argument (sql/updates/0.1.0--0.2.0.sql): checked below, compared without that column.
    let jobs = "SELECT job_name, function_name::text, argument FROM secumon._jobs
                 WHERE job_name ~ '^(rollup|compress|retention)_' ORDER BY 1";
    let wrappers = cluster.psql(&jobs.replace(", argument", ""));
    let mut columns = table_columns(&cluster, TEST_DATABASE);
    if let Some(job_columns) = columns.get_mut("secumon._jobs") {
        job_columns.retain(|c| c != "function_name");
    }
    let before = fingerprint_of_columns(&cluster, TEST_DATABASE, &columns);
    let rows_before = all_table_rows(&cluster, TEST_DATABASE, &columns);

    update(&cluster);

    let expected: Vec<Vec<Option<String>>> = wrappers
        .iter()
        .map(|row| {
            let job = row[0].clone().unwrap_or_default();
            let (function, argument) = match job.split_once('_') {
                Some(("rollup", rollup)) => ("secumon.refresh_rollup", rollup),
                Some(("compress", table)) => ("secumon._compress_due", table),
                Some((_, relation)) => ("secumon.apply_retention", relation),
                None => ("?", ""),
            };
            vec![Some(job.clone()), Some(function.to_string()), Some(argument.to_string())]
        })
        .collect();
    assert_eq!(wrappers.len(), 16, "expected the sixteen jobs of the wrappers: {wrappers:?}");
    assert_eq!(cluster.psql(jobs), expected, "expected each job to call the wrapper's function with its argument");

    // Rows the update adds on purpose: the probe series of the catalog and the two probe rules
    // (sql/alerting.sql, sql/updates/0.1.0--0.2.0.post.sql). They are checked, then set aside,
    // so that everything else compares as it was.
    let new_defaults = "default_key IN ('probe_target_down', 'tls_certificate_expiring')";
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.metric_catalog WHERE metric_type = 'probe'"), "6");
    assert_eq!(cluster.psql_one(&format!("SELECT count(*) FROM secumon.alert_rules WHERE {new_defaults}")), "2");
    cluster.psql(&format!("DELETE FROM secumon.alert_rules WHERE {new_defaults}"));
    cluster.psql("DELETE FROM secumon.metric_catalog WHERE metric_type = 'probe'");

    // Compared on the columns the old version has; tables, sequences and columns the update
    // added are allowed (and listed).
    let mut after = fingerprint_of_columns(&cluster, TEST_DATABASE, &columns);
    let added: Vec<String> = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect();
    after.retain(|k, _| before.contains_key(k));
    let columns_after = table_columns(&cluster, TEST_DATABASE);
    let mut new_columns = Vec::new();
    for (table, cols) in &columns_after {
        if let Some(old) = columns.get(table) {
            new_columns.extend(
                cols.iter()
                    .filter(|c| !old.contains(c))
                    .map(|c| format!("{table}.{c}")),
            );
        }
    }
    eprintln!("the update added relations {added:?} and columns {new_columns:?}");

    if let Some(mut diff) =
        fingerprint_diff("before the update", &before, "after the update", &after)
    {
        for table in differing_tables(&before, &after)
            .into_iter()
            .filter(|t| columns.contains_key(t))
            .take(8)
        {
            let now = table_rows(&cluster, TEST_DATABASE, &table, &columns[&table])
                .unwrap_or_else(|e| vec![format!("<error: {e}>")]);
            diff.push_str(&format!(
                "\n  {table}:\n{}",
                rows_diff("before", &rows_before[&table], "after", &now, 5)
            ));
        }
        panic!("expected every row and setting to survive ALTER EXTENSION secumon UPDATE from {OLDEST}:\n{diff}");
    }
}

#[test]
fn workers_keep_serving_through_a_live_update() {
    let cluster = cluster_at(OLDEST);
    let fixture = populate(&cluster);

    let updated_at = cluster.psql_one("SELECT now()::text");
    let log_before = cluster.log().len();
    update(&cluster);

    for job in [
        "partition_upkeep",
        "rollup_metrics_5min",
        "compress_metric_samples",
    ] {
        cluster.run_job_soon(job);
        cluster.wait_for_job_success(job, WAIT);
    }
    let mut client = cluster.client();
    let firing = breach_edited_rule(&mut client, "fx-after-update");
    assert!(
        wait_until(WAIT, || !cluster.psql(&firing).is_empty()),
        "expected a breach after the update to fire \"{EDITED_RULE}\"; alerts: {:?}; engine: {}",
        cluster
            .psql("SELECT agent_id, state FROM secumon.alerts WHERE agent_id = 'fx-after-update'"),
        cluster.job("alert_evaluation")
    );
    let alert_id = cluster.psql_one(&firing);
    let notified = wait_until(WAIT, || {
        fixture.webhook.requests()[fixture.webhook_requests..]
            .iter()
            .any(|r| r.json()["alert_id"] == alert_id.as_str())
    });
    assert!(
        notified,
        "expected the new alert to be notified after the update; received since populate: {:?}; outbox: {:?}",
        fixture.webhook.requests()[fixture.webhook_requests..].iter().map(|r| r.text()).collect::<Vec<_>>(),
        cluster.psql("SELECT notification_id, event, status, last_error FROM secumon.notification_outbox ORDER BY 1")
    );
    if !fixture.notifications_delivered {
        // The notifications queued while the workers waited for the update go out too.
        fixture.webhook.wait_for(fixture.webhook_requests + 4, WAIT);
    }

    let failed = cluster.psql(&format!(
        "SELECT job_name, last_error FROM secumon.jobs WHERE last_error_at > '{updated_at}' ORDER BY 1"
    ));
    assert!(
        failed.is_empty(),
        "expected no job to fail after the update: {failed:?}"
    );
    let log = cluster.log();
    let crashes: Vec<&str> = log[log_before.min(log.len())..]
        .lines()
        .filter(|l| {
            l.contains("background worker \"secumon")
                && (l.contains("exited with exit code") || l.contains("terminated by signal"))
        })
        .collect();
    assert!(
        crashes.is_empty(),
        "expected no worker to exit during or after the update:\n{}",
        crashes.join("\n")
    );
}

#[test]
fn dump_normaliser_drops_only_what_is_not_schema() {
    // Unit check of the comparison itself, no cluster: OIDs, dropped columns, binary-upgrade
    // bookkeeping and data partitions go; definitions stay.
    let dump = "\
--
-- Name: t; Type: TABLE; Schema: secumon; Owner: postgres
--

-- For binary upgrade, must preserve pg_type oid
SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16400'::pg_catalog.oid);

CREATE TABLE secumon.t (
    a integer,
    \"........pg.dropped.2........\" INTEGER /* dummy */
);

-- For binary upgrade, recreate dropped column.
UPDATE pg_catalog.pg_attribute
SET attlen = 4, attalign = 'i', attbyval = false
WHERE attname = '........pg.dropped.2........'
  AND attrelid = 'secumon.t'::pg_catalog.regclass;
ALTER TABLE ONLY secumon.t DROP COLUMN \"........pg.dropped.2........\";

-- For binary upgrade, set heap's relfrozenxid and relminmxid
UPDATE pg_catalog.pg_class
SET relfrozenxid = '774', relminmxid = '13'
WHERE oid = 'secumon.t'::pg_catalog.regclass;
ALTER TABLE secumon.t OWNER TO postgres;

--
-- Name: metric_samples_p20261120; Type: TABLE; Schema: secumon_partitions; Owner: postgres
--

CREATE TABLE secumon_partitions.metric_samples_p20261120 (a integer);

--
-- Name: metric_samples_default; Type: TABLE ATTACH; Schema: secumon_partitions; Owner: postgres
--

ALTER TABLE ONLY secumon.metric_samples ATTACH PARTITION secumon_partitions.metric_samples_default DEFAULT;
";
    let description = normalise_dump(dump, "extension secumon");
    assert_eq!(
        description.get("t; Type: TABLE; Schema: secumon; Owner: postgres").map(String::as_str),
        Some("-- t; Type: TABLE; Schema: secumon; Owner: postgres\nCREATE TABLE secumon.t (\n    a integer\n);\nALTER TABLE secumon.t OWNER TO postgres;")
    );
    assert_eq!(
        description.len(),
        2,
        "expected the data partition dropped and the default partition kept: {description:#?}"
    );
    assert_eq!(
        strip_oids("f('16400'::pg_catalog.oid, 'x'::pg_catalog.oid)"),
        "f('<oid>'::pg_catalog.oid, 'x'::pg_catalog.oid)"
    );
    assert!(is_pgrx_test_object(
        "lttb_keeps_endpoints_and_peaks(); Type: FUNCTION; Schema: tests; Owner: postgres"
    ));
    assert!(!is_pgrx_test_object("lttb(timestamp with time zone[], double precision[], integer); Type: FUNCTION; Schema: secumon; Owner: postgres"));
    assert!(is_data_object("metric_rollup_1hour_p20261123_pkey"));
    assert!(is_data_object("secumon_partitions.disk_metrics_c20261120"));
    assert!(!is_data_object("metric_samples_default"));
    assert!(!is_data_object("secumon._compress_process_metrics"));
}
