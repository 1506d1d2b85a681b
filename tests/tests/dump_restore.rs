//! Backup and restore end to end: `pg_dump -Fc` of a populated SecuMon database restored with
//! `pg_restore` into a fresh cluster (secumon preloaded) must succeed without a single error,
//! give back every row of every table and every sequence position, and leave a database the
//! background workers serve as before: alerts fire under the restored rules, notifications
//! reach the restored channels, tokens issued before the dump still verify. See
//! docs/operations.md, "Backup and restore".

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use secumon_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

/// A database other than the one under test: workers pointed there find no extension and wait.
const IDLE_DATABASE: &str = "postgres";

/// A populated cluster whose workers no longer touch the data, its fingerprint and its dump.
struct Source {
    cluster: Cluster,
    fixture: Fixture,
    fingerprint: Fingerprint,
    dump: PathBuf,
}

/// Populates a cluster, points its workers away (so nothing changes between the fingerprint and
/// the dump) and dumps `secumon_test` with `pg_dump -Fc`.
fn populated_and_dumped() -> Source {
    let mut cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    let fixture = populate(&cluster);
    point_workers_at(&mut cluster, IDLE_DATABASE);
    let fingerprint = fingerprint(&cluster, TEST_DATABASE);
    let dump = cluster.socket_dir().join("secumon_test.dump");
    let output =
        cluster.run_client_program("pg_dump", &["-Fc", "-f", path_arg(&dump), TEST_DATABASE]);
    assert!(
        output.status.success() && !stderr_text(&output).to_lowercase().contains("error"),
        "expected pg_dump -Fc of the populated database to succeed: {}\nstderr:\n{}",
        output.status,
        stderr_text(&output)
    );
    Source {
        cluster,
        fixture,
        fingerprint,
        dump,
    }
}

/// `ALTER SYSTEM SET secumon.database` and a restart: the workers serve `database` from now on.
fn point_workers_at(cluster: &mut Cluster, database: &str) {
    cluster.psql(&format!("ALTER SYSTEM SET secumon.database = '{database}'"));
    cluster.restart();
    let elsewhere = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'secumon%' AND datname IS NOT NULL AND datname <> '{database}'"
    );
    assert!(
        wait_until(WAIT, || cluster.psql_one(&elsewhere) == "0"),
        "expected no SecuMon worker connected to another database than {database}: {:?}",
        cluster.psql(
            "SELECT backend_type, datname FROM pg_stat_activity WHERE backend_type LIKE 'secumon%'"
        )
    );
}

/// A fresh cluster with secumon preloaded but not created anywhere, its workers idle in another
/// database, ready for a restore.
fn fresh_target() -> Cluster {
    Cluster::builder()
        .without_create_extension()
        .setting("secumon.database", IDLE_DATABASE)
        .setting("secumon.alert_interval", "1s")
        .start()
}

/// `createdb <database>` then `pg_restore <extra_args> -d <database> <dump>` on `target`.
fn restore(target: &Cluster, database: &str, dump: &Path, extra_args: &[&str]) -> Output {
    let created = target.run_client_program("createdb", &[database]);
    assert!(
        created.status.success(),
        "expected createdb {database} to succeed: {}",
        stderr_text(&created)
    );
    // TimescaleDB's documented procedure: its catalog arrives with the dump, so it must not
    // act on what is restored until timescaledb_post_restore().
    let timescaledb = |sql: &str| {
        if timescaledb_backend() {
            psql_on(target, database, sql);
        }
    };
    timescaledb("CREATE EXTENSION timescaledb; SELECT timescaledb_pre_restore()");
    let mut args: Vec<&str> = extra_args.to_vec();
    args.extend(["-d", database, path_arg(dump)]);
    let output = target.run_client_program("pg_restore", &args);
    timescaledb("SELECT timescaledb_post_restore()");
    output
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// What is wrong with a pg_restore run: its exit status and its error lines (the first 40).
fn restore_problems(what: &str, output: &Output) -> Option<String> {
    let stderr = stderr_text(output);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("error:") || l.starts_with("Command was:") || l.contains("ERROR:"))
        .collect();
    if output.status.success() && errors.is_empty() {
        if !stderr.trim().is_empty() {
            eprintln!("{what} succeeded with messages:\n{stderr}");
        }
        return None;
    }
    let error_count = stderr.lines().filter(|l| l.contains("error:")).count();
    let summary = stderr
        .lines()
        .find(|l| l.contains("errors ignored on restore"))
        .unwrap_or("");
    let mut text = format!(
        "expected {what} to exit 0 without errors; it exited {} with {error_count} error line(s). {summary}\nfirst errors:\n",
        output.status
    );
    for line in errors.iter().take(40) {
        text.push_str(&format!("  {line}\n"));
    }
    if errors.len() > 40 {
        text.push_str(&format!("  … {} more lines\n", errors.len() - 40));
    }
    Some(text)
}

/// None when `database` of `target` holds exactly what the source held; else the differences,
/// with the differing rows of the first tables.
fn data_differences(
    source: &Source,
    target: &Cluster,
    database: &str,
    restored: &Fingerprint,
) -> Option<String> {
    let mut text = fingerprint_diff("source", &source.fingerprint, "restored", restored)?;
    let source_columns = table_columns(&source.cluster, TEST_DATABASE);
    let tables: Vec<String> = differing_tables(&source.fingerprint, restored)
        .into_iter()
        .filter(|t| source_columns.contains_key(t) && restored.contains_key(t))
        .collect();
    // Rows of leaf tables say more than the same rows again through their parent.
    for (shown, table) in tables
        .iter()
        .filter(|t| t.starts_with("secumon."))
        .chain(tables.iter().filter(|t| !t.starts_with("secumon.")))
        .enumerate()
    {
        if shown == 8 {
            text.push_str(&format!(
                "\n  (rows of {} more differing tables not shown)",
                tables.len() - shown
            ));
            break;
        }
        let cols = &source_columns[table];
        let left = table_rows(&source.cluster, TEST_DATABASE, table, cols)
            .unwrap_or_else(|e| vec![format!("<error: {e}>")]);
        let right = table_rows(target, database, table, cols)
            .unwrap_or_else(|e| vec![format!("<error: {e}>")]);
        text.push_str(&format!(
            "\n  {table} ({}):\n{}",
            cols.join(", "),
            rows_diff("source", &left, "restored", &right, 5)
        ));
    }
    Some(text)
}

/// Asks the workers to run job `job` of `database` now and waits until they did (a success
/// recorded in secumon.jobs after `since`, an SQL timestamptz literal). The restored schedule
/// may not have it due for a while.
fn run_job_now_and_wait(cluster: &Cluster, database: &str, job: &str, since: &str) {
    psql_on(
        cluster,
        database,
        &format!("SELECT 1 FROM secumon.alter_job('{job}', next_run => now())"),
    );
    let done = wait_until(WAIT, || {
        psql_one_on(
            cluster,
            database,
            &format!("SELECT count(*) FROM secumon.jobs WHERE job_name = '{job}' AND last_success > '{since}'"),
        ) == "1"
    });
    assert!(
        done,
        "expected the workers to run job {job} in {database} successfully; jobs row: {:?}\n--- log ---\n{}",
        psql_on(cluster, database, &format!("SELECT last_run, last_success, last_error FROM secumon.jobs WHERE job_name = '{job}'")),
        log_tail(cluster)
    );
}

/// Waits for two more cycles of the alert engine in `database`, so that "nothing more
/// happened" is an observation.
fn settle(cluster: &Cluster, database: &str) {
    let runs = || {
        psql_one_on(
            cluster,
            database,
            "SELECT runs FROM secumon.jobs WHERE job_name = 'alert_evaluation'",
        )
        .parse::<i64>()
        .unwrap_or(0)
    };
    let start = runs();
    assert!(
        wait_until(WAIT, || runs() >= start + 2),
        "expected the alert engine to keep cycling in {database}"
    );
}

fn log_tail(cluster: &Cluster) -> String {
    let log = cluster.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn restored_database_equals_the_source_and_the_workers_serve_it() {
    let source = populated_and_dumped();
    let mut target = fresh_target();
    let restored_db = "restored";

    // 1. pg_restore without options: exit 0, no errors, and exactly the source's data. A data
    // difference is reported at the end, so that what follows is checked too.
    let output = restore(&target, restored_db, &source.dump, &[]);
    let restored = fingerprint(&target, restored_db);
    let differences = data_differences(&source, &target, restored_db, &restored);
    if let Some(problem) = restore_problems("pg_restore -d restored", &output) {
        panic!("{problem}\n\n{}", differences.unwrap_or_default());
    }
    if let Some(differences) = &differences {
        eprintln!("the restored database differs from the source (the test fails at its end):\n{differences}");
    }

    // 2. The workers serve the restored database: jobs run, rules fire, channels deliver.
    let since = psql_one_on(&target, restored_db, "SELECT now()::text");
    point_workers_at(&mut target, restored_db);
    run_job_now_and_wait(&target, restored_db, "partition_upkeep", &since);

    let mut client = target.client_on(restored_db);
    let firing = breach_edited_rule(&mut client, "fx-after-restore");
    let fired = wait_until(WAIT, || !psql_on(&target, restored_db, &firing).is_empty());
    assert!(
        fired,
        "expected {BREACH_VALUE} to fire the restored rule \"{EDITED_RULE}\" (threshold edited to {EDITED_THRESHOLD}) for the new agent; \
         rule: {:?}; alerts: {:?}; engine: {:?}",
        psql_on(&target, restored_db, &format!("SELECT id, threshold, enabled FROM secumon.alert_rules WHERE name = '{EDITED_RULE}'")),
        psql_on(&target, restored_db, "SELECT agent_id, state, current_value FROM secumon.alerts WHERE agent_id = 'fx-after-restore'"),
        psql_on(&target, restored_db, "SELECT last_result, last_error FROM secumon.jobs WHERE job_name = 'alert_evaluation'")
    );
    let rule_id = psql_one_on(
        &target,
        restored_db,
        &format!("SELECT id FROM secumon.alert_rules WHERE name = '{EDITED_RULE}'"),
    );
    assert_eq!(
        rule_id, source.fixture.edited_rule_id,
        "expected the seeded rule to keep its id through the restore"
    );
    let alert_id = psql_one_on(&target, restored_db, &firing);

    let before = source.fixture.webhook_requests;
    source.fixture.webhook.wait_for(before + 1, WAIT);
    settle(&target, restored_db);
    let new_requests: Vec<_> = source
        .fixture
        .webhook
        .requests()
        .into_iter()
        .skip(before)
        .collect();
    let bodies: Vec<String> = new_requests.iter().map(|r| r.text()).collect();
    assert_eq!(
        new_requests.len(),
        1,
        "expected exactly one notification after the restore (the new alert), got: {bodies:#?}\noutbox: {:?}",
        psql_on(&target, restored_db, "SELECT notification_id, event, status, alert_id FROM secumon.notification_outbox ORDER BY 1")
    );
    let notification = new_requests[0].json();
    assert_eq!(
        notification["alert_id"],
        alert_id.as_str(),
        "expected the notification to be about the new alert: {}",
        bodies[0]
    );
    assert_eq!(notification["event"], "firing");
    assert!(
        new_requests[0]
            .header("x-secumon-signature")
            .is_some_and(|s| s.starts_with("sha256=")),
        "expected the restored channel to keep its HMAC secret and sign"
    );

    // 3. A token issued before the dump still verifies.
    let claims: serde_json::Value = client
        .query_one("SELECT secumon.verify_token($1)", &[&source.fixture.token])
        .unwrap_or_else(|e| {
            panic!(
                "expected the token issued before the dump to verify after the restore: {}",
                error_text(&e)
            )
        })
        .get(0);
    assert_eq!(
        claims["user_id"],
        source.fixture.user_id.as_str(),
        "expected the token's claims to name the restored user: {claims}"
    );

    if let Some(differences) = differences {
        panic!("the restore did not give back the source database:\n{differences}");
    }
}

#[test]
fn single_transaction_restore_with_exit_on_error_succeeds_and_equals_the_source() {
    let source = populated_and_dumped();
    let target = fresh_target();
    let restored_db = "restored_single";
    let output = restore(
        &target,
        restored_db,
        &source.dump,
        &["--single-transaction", "--exit-on-error"],
    );
    if let Some(problem) =
        restore_problems("pg_restore --single-transaction --exit-on-error", &output)
    {
        panic!("{problem}");
    }
    let restored = fingerprint(&target, restored_db);
    if let Some(differences) = data_differences(&source, &target, restored_db, &restored) {
        panic!(
            "the single-transaction restore did not give back the source database:\n{differences}"
        );
    }
}
