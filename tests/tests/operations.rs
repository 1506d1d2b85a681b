//! Operating SecuMon: its background workers survive what happens around them (terminations,
//! other databases, a workers' database that does not exist yet), maintenance never stalls the
//! write path, the alert engine never loses a breach to an error, and one unusable notification
//! never takes the notifier down.
//!
//! Every test runs its own cluster. Nothing here measures wall-clock durations except as
//! generous `wait_until` timeouts.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use secumon_e2e::postgres::{Client, NoTls};
use secumon_e2e::receivers::HttpReceiver;
use secumon_e2e::serde_json::{json, Value};
use secumon_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

/// The background workers, as `pg_stat_activity.backend_type` names them.
const WORKERS: [&str; 3] = [
    "secumon maintenance",
    "secumon alert engine",
    "secumon notifier",
];

// ---------------------------------------------------------------------------------------------
// Helpers

/// Pids of the processes of `backend_type`, anywhere in the cluster (optionally only those
/// connected to `database`).
fn worker_pids(client: &mut Client, backend_type: &str, database: Option<&str>) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = $1 AND ($2::text IS NULL OR datname = $2) \
             ORDER BY pid",
            &[&backend_type, &database],
        )
        .unwrap_or_else(|e| panic!("expected pg_stat_activity to be readable: {}", error_text(&e)))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Every non-client process of the cluster, for failure messages.
fn activity(client: &mut Client) -> String {
    client
        .query(
            "SELECT format('%s pid=%s db=%s since=%s', backend_type, pid, coalesce(datname, '-'), backend_start) \
               FROM pg_stat_activity WHERE backend_type <> 'client backend' ORDER BY backend_type, pid",
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|e| format!("(pg_stat_activity not readable: {})", error_text(&e)))
}

/// Waits until exactly one process of `backend_type` runs (in `database`, if given); returns
/// its pid. Panics with pg_stat_activity and the log on timeout.
fn wait_for_worker(cluster: &Cluster, client: &mut Client, backend_type: &str, database: Option<&str>) -> i32 {
    let mut pids = Vec::new();
    let running = wait_until(WAIT, || {
        pids = worker_pids(client, backend_type, database);
        pids.len() == 1
    });
    assert!(
        running,
        "expected one \"{backend_type}\" process{} within {WAIT:?}, found pids {pids:?}.\n\
         pg_stat_activity:\n{}\n--- postgresql.log ---\n{}",
        database.map(|d| format!(" connected to database {d}")).unwrap_or_default(),
        activity(client),
        sys::tail(&cluster.log(), 30)
    );
    pids[0]
}

/// Lines of the server log containing every one of `needles`.
fn log_lines(cluster: &Cluster, needles: &[&str]) -> Vec<String> {
    cluster
        .log()
        .lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .map(str::to_string)
        .collect()
}

fn health(client: &mut Client) -> Value {
    client
        .query_one("SELECT secumon.health()", &[])
        .unwrap_or_else(|e| panic!("expected secumon.health() to work: {}", error_text(&e)))
        .get(0)
}

fn all_workers_running(health: &Value) -> bool {
    health["workers"].as_array().is_some_and(|workers| {
        !workers.is_empty() && workers.iter().all(|w| w["running"] == Value::Bool(true))
    })
}

fn now(client: &mut Client) -> SystemTime {
    client
        .query_one("SELECT now()", &[])
        .expect("expected SELECT now() to work")
        .get(0)
}

/// Inserts `agent`'s samples of `metric` ("type.name"), given as (seconds before now, value),
/// in one statement (so the alert engine sees them in the same cycle).
fn samples(cluster: &Cluster, points: &[(&str, &str, i64, f64)]) {
    let values: Vec<String> = points
        .iter()
        .map(|(agent, metric, ago, value)| {
            let (metric_type, metric_name) = metric.split_once('.').expect("metric is type.name");
            format!(
                "(now() - interval '{ago} seconds', '{agent}', '{metric_type}', '{metric_name}', {value})"
            )
        })
        .collect();
    cluster.psql(&format!(
        "INSERT INTO secumon.metrics (time, agent_id, metric_type, metric_name, value) VALUES {}",
        values.join(", ")
    ));
}

/// A threshold rule on cpu.iowait_percent > 50 that fires at once (duration 0).
fn iowait_rule(cluster: &Cluster, name: &str) -> String {
    cluster.psql_one(&format!(
        "INSERT INTO secumon.alert_rules (name, metric_type, metric_name, condition, threshold, duration, severity) \
         VALUES ('{name}', 'cpu', 'iowait_percent', 'gt', 50, '0', 'critical') RETURNING id"
    ))
}

/// States of the rule's alerts for `agent`, oldest first.
fn alert_states(cluster: &Cluster, rule_id: &str, agent: &str) -> Vec<String> {
    cluster
        .psql(&format!(
            "SELECT state FROM secumon.alerts WHERE rule_id = '{rule_id}' AND agent_id = '{agent}' \
             ORDER BY created_at, started_at"
        ))
        .into_iter()
        .map(|row| row[0].clone().unwrap_or_default())
        .collect()
}

fn wait_for_alert_states(cluster: &Cluster, rule_id: &str, agent: &str, expected: &[&str], why: &str) {
    let mut seen = Vec::new();
    let ok = wait_until(WAIT, || {
        seen = alert_states(cluster, rule_id, agent);
        seen == expected
    });
    assert!(
        ok,
        "expected alert states {expected:?} for {agent} within {WAIT:?} ({why}), saw {seen:?}; \
         rule status: {:?}; engine job: {}",
        cluster.psql(&format!(
            "SELECT last_error, last_evaluated_at::text FROM secumon.alert_rule_status WHERE id = '{rule_id}'"
        )),
        cluster.job("alert_evaluation")
    );
}

/// The rule's `secumon.alert_rule_status.last_error` (None when NULL).
fn rule_error(cluster: &Cluster, rule_id: &str) -> Option<String> {
    cluster
        .psql(&format!(
            "SELECT last_error FROM secumon.alert_rule_status WHERE id = '{rule_id}'"
        ))
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
}

/// Waits for two more alert-engine cycles, so that "nothing changed" is a real observation.
fn two_engine_cycles(cluster: &Cluster) {
    let runs = || {
        cluster
            .psql_one("SELECT runs FROM secumon.jobs WHERE job_name = 'alert_evaluation'")
            .parse::<i64>()
            .unwrap_or(0)
    };
    let start = runs();
    assert!(
        wait_until(WAIT, || runs() >= start + 2),
        "the alert engine stopped cycling; job: {}",
        cluster.job("alert_evaluation")
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Workers come back

#[test]
fn a_terminated_worker_is_started_again_and_its_restart_is_logged_once() {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    let mut client = cluster.client();
    // The maintenance worker twice: each termination is one restart and one log line.
    let plan = [
        "secumon maintenance",
        "secumon alert engine",
        "secumon notifier",
        "secumon maintenance",
    ];
    let message = |name: &str| format!("secumon launcher: \"{name}\" stopped; starting it again");
    for (step, name) in plan.iter().enumerate() {
        let old = wait_for_worker(&cluster, &mut client, name, Some(TEST_DATABASE));
        let terminated: Vec<bool> = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = $1",
                &[name],
            )
            .unwrap_or_else(|e| panic!("expected pg_terminate_backend to work: {}", error_text(&e)))
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(terminated, [true], "expected to terminate the one \"{name}\" process");

        let mut pids = Vec::new();
        let back = wait_until(WAIT, || {
            pids = worker_pids(&mut client, name, Some(TEST_DATABASE));
            pids.len() == 1 && pids[0] != old
        });
        assert!(
            back,
            "expected a new \"{name}\" process within {WAIT:?} after pg_terminate_backend({old}) \
             (termination {} of this test); found pids {pids:?}.\npg_stat_activity:\n{}\n\
             --- postgresql.log ---\n{}",
            step + 1,
            activity(&mut client),
            sys::tail(&cluster.log(), 30)
        );
        let expected = plan[..=step].iter().filter(|n| *n == name).count();
        let mut lines = Vec::new();
        let logged = wait_until(WAIT, || {
            lines = log_lines(&cluster, &[&message(name)]);
            lines.len() >= expected
        });
        assert!(
            logged,
            "expected the server log to say `{}` once per termination ({expected} so far), found {} lines: {lines:#?}",
            message(name),
            lines.len()
        );
    }

    // Workers that came back do their work.
    cluster.run_job_and_wait("partition_upkeep", WAIT);
    cluster.wait_for_job_success("alert_evaluation", WAIT);
    cluster.run_job_and_wait("notification_retention", WAIT);

    // Each termination was announced exactly once, not once per launcher pass.
    for name in WORKERS {
        let expected = plan.iter().filter(|n| **n == name).count();
        let lines = log_lines(&cluster, &[&message(name)]);
        assert_eq!(
            lines.len(),
            expected,
            "expected `{}` exactly {expected} time(s), once per termination; log lines: {lines:#?}",
            message(name)
        );
    }
    let h = health(&mut client);
    assert!(all_workers_running(&h), "expected health() to show every worker running: {h:#}");
}

// ---------------------------------------------------------------------------------------------
// 2. Other databases come and go

#[test]
fn workers_do_not_depend_on_other_databases_coming_and_going() {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    let mut client = cluster.client();
    for name in WORKERS {
        wait_for_worker(&cluster, &mut client, name, Some(TEST_DATABASE));
    }
    let mut admin = cluster.client_on("postgres");
    for round in 1..=2 {
        admin
            .batch_execute("CREATE DATABASE other")
            .unwrap_or_else(|e| panic!("expected CREATE DATABASE other to work: {}", error_text(&e)));
        // The second time, with the extension and a session in it, which DROP ... FORCE ends.
        let session = if round == 2 {
            let mut there = cluster.client_on("other");
            there.batch_execute("CREATE EXTENSION secumon").unwrap_or_else(|e| {
                panic!("expected CREATE EXTENSION secumon in database other to work: {}", error_text(&e))
            });
            Some(there)
        } else {
            None
        };
        admin
            .batch_execute("DROP DATABASE other WITH (FORCE)")
            .unwrap_or_else(|e| panic!("expected DROP DATABASE other WITH (FORCE) to work: {}", error_text(&e)));
        drop(session);

        for name in WORKERS {
            wait_for_worker(&cluster, &mut client, name, Some(TEST_DATABASE));
        }
        // And the jobs keep succeeding.
        cluster.run_job_and_wait("partition_upkeep", WAIT);
        cluster.wait_for_job_success("alert_evaluation", WAIT);
    }
    let h = health(&mut client);
    assert!(all_workers_running(&h), "expected health() to show every worker running: {h:#}");
}

// ---------------------------------------------------------------------------------------------
// 3. The workers' database does not exist yet

#[test]
fn a_missing_workers_database_is_reported_once_and_served_once_created() {
    const DATABASE: &str = "secumon_later";
    let cluster = Cluster::builder()
        .without_create_extension()
        .setting("secumon.database", DATABASE)
        .setting("secumon.alert_interval", "1s")
        .start();
    thread::sleep(Duration::from_secs(20));

    let fatal: Vec<String> = log_lines(&cluster, &["FATAL"])
        .into_iter()
        .filter(|line| line.contains(DATABASE))
        .collect();
    assert!(
        fatal.is_empty(),
        "expected no FATAL errors about the missing database {DATABASE} in 20 s, found {}: {fatal:#?}",
        fatal.len()
    );
    let message = format!("secumon launcher: database \"{DATABASE}\" does not exist");
    let said = log_lines(&cluster, &[&message]);
    assert_eq!(
        said.len(),
        1,
        "expected the server log to say `{message}` exactly once in 20 s (at most once a minute), \
         found: {said:#?}\n--- postgresql.log ---\n{}",
        sys::tail(&cluster.log(), 30)
    );

    cluster
        .client_on("postgres")
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .unwrap_or_else(|e| panic!("expected CREATE DATABASE {DATABASE} to work: {}", error_text(&e)));
    let mut db = cluster.client_on(DATABASE);
    db.batch_execute("CREATE EXTENSION secumon")
        .unwrap_or_else(|e| panic!("expected CREATE EXTENSION secumon in {DATABASE} to work: {}", error_text(&e)));
    for name in WORKERS {
        wait_for_worker(&cluster, &mut db, name, Some(DATABASE));
    }
    let mut job = Value::Null;
    let ran = wait_until(WAIT, || {
        job = db
            .query_one(
                "SELECT coalesce((SELECT to_jsonb(j) FROM secumon.jobs j WHERE job_name = 'partition_upkeep'), 'null')",
                &[],
            )
            .map(|row| row.get(0))
            .unwrap_or(Value::Null);
        !job["last_success"].is_null()
    });
    assert!(
        ran,
        "expected partition_upkeep to succeed in {DATABASE} within {WAIT:?}; job: {job}\n\
         --- postgresql.log ---\n{}",
        sys::tail(&cluster.log(), 30)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The extension in a database the workers do not serve

#[test]
fn create_extension_outside_the_workers_database_warns_and_health_says_so() {
    let cluster = Cluster::start();
    cluster
        .client_on("postgres")
        .batch_execute("CREATE DATABASE elsewhere")
        .unwrap_or_else(|e| panic!("expected CREATE DATABASE elsewhere to work: {}", error_text(&e)));

    let notices: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut config: postgres::Config = format!(
        "host=127.0.0.1 port={} dbname=elsewhere user=postgres connect_timeout=10",
        cluster.port()
    )
    .parse()
    .expect("a valid connection string");
    let sink = notices.clone();
    config.notice_callback(move |notice| {
        let text = [Some(notice.message()), notice.detail(), notice.hint()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" | ");
        sink.lock().unwrap().push((notice.severity().to_string(), text));
    });
    let mut elsewhere = config
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("expected to connect to database elsewhere: {}", error_text(&e)));
    elsewhere
        .batch_execute("CREATE EXTENSION secumon")
        .unwrap_or_else(|e| panic!("expected CREATE EXTENSION secumon in elsewhere to work: {}", error_text(&e)));
    elsewhere.batch_execute("SELECT 1").unwrap(); // any notice still in transit arrives first
    let all = notices.lock().unwrap().clone();
    let warned = all
        .iter()
        .any(|(severity, text)| severity == "WARNING" && text.contains("secumon.database"));
    assert!(
        warned,
        "expected CREATE EXTENSION secumon in a database other than secumon.database ({TEST_DATABASE}) \
         to emit a WARNING mentioning secumon.database; notices: {all:#?}"
    );

    let there = health(&mut elsewhere);
    assert_eq!(
        there["served_by_workers"],
        Value::Bool(false),
        "expected health() in database elsewhere to say served_by_workers = false: {there:#}"
    );
    let workers = there["workers"].as_array().cloned().unwrap_or_default();
    assert!(
        !workers.is_empty() && workers.iter().all(|w| w["running"] == Value::Bool(false)),
        "expected health() in database elsewhere to list the workers, none running for it: {there:#}"
    );

    let mut served = cluster.client();
    let mut here = Value::Null;
    let ok = wait_until(WAIT, || {
        here = health(&mut served);
        here["served_by_workers"] == Value::Bool(true) && all_workers_running(&here)
    });
    assert!(
        ok,
        "expected health() in {TEST_DATABASE} to say served_by_workers = true with every worker running: {here:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Maintenance never stalls ingestion

const DDL_JOBS: [&str; 3] = [
    "compress_metric_samples",
    "partition_upkeep",
    "retention_process_metrics",
];

/// The jobs that take locks on the raw tables: on the timescaledb backend TimescaleDB makes
/// chunks, so partition_upkeep has nothing to wait for there.
fn ddl_jobs() -> Vec<&'static str> {
    DDL_JOBS.iter().copied().filter(|j| !(timescaledb_backend() && *j == "partition_upkeep")).collect()
}

/// Whether `table` has a partition (or chunk) holding `time`, and whether it is compressed.
fn partition_of(cluster: &Cluster, table: &str, time: &str) -> String {
    cluster.psql_one(&format!(
        "SELECT coalesce((SELECT compressed::text FROM secumon.partitions
                           WHERE table_name = '{table}' AND NOT is_default AND range_start <= '{time}' AND range_end > '{time}'), 'missing')"
    ))
}

#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug in failure messages
struct JobState {
    name: String,
    /// `waiting_since` is set and `last_result` starts with "waiting for a lock".
    waiting: bool,
    waiting_since_set: bool,
    succeeded_since: bool,
    row: String,
}

/// State of `jobs` from `secumon.jobs`; `succeeded_since` = last_success after `since`.
/// Reads `waiting_since` through to_jsonb so that its absence reads as NULL.
fn job_states(client: &mut Client, jobs: &[&str], since: SystemTime) -> Vec<JobState> {
    let names: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
    client
        .query(
            "SELECT j.job_name,
                    (to_jsonb(j) ->> 'waiting_since') IS NOT NULL
                        AND coalesce(j.last_result, '') LIKE 'waiting for a lock%',
                    (to_jsonb(j) ->> 'waiting_since') IS NOT NULL,
                    coalesce(j.last_success > $2, false),
                    to_jsonb(j)::text
               FROM secumon.jobs j WHERE j.job_name = ANY($1) ORDER BY 1",
            &[&names, &since],
        )
        .unwrap_or_else(|e| panic!("expected secumon.jobs to be readable: {}", error_text(&e)))
        .iter()
        .map(|row| JobState {
            name: row.get(0),
            waiting: row.get(1),
            waiting_since_set: row.get(2),
            succeeded_since: row.get(3),
            row: row.get(4),
        })
        .collect()
}

#[test]
fn maintenance_jobs_give_way_to_an_open_reader_and_never_stall_ingestion() {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    let mut admin = cluster.client();
    let mut monitor = cluster.client();
    // Every job this test triggers has had the run it was due for at startup (retention is
    // daily, at 04:00), so none of them reaches the old report below before the reader holds
    // its locks.
    for job in DDL_JOBS {
        assert!(
            wait_until(WAIT, || cluster.psql_one(&format!(
                "SELECT last_success IS NOT NULL OR next_run > now() + interval '10 minutes'
                   FROM secumon.jobs WHERE job_name = '{job}'"
            )) == "t"),
            "expected the first {job} to succeed; job: {}",
            cluster.job(job)
        );
    }
    for agent in ["old-host", "busy-host", "future-host"] {
        register_agent(&mut admin, agent)
            .unwrap_or_else(|e| panic!("expected to register {agent}: {}", error_text(&e)));
    }

    // A report from 40 days ago gets a day of its own: old enough for the compression of
    // metric_samples (7 days) and the retention of process_metrics (30 days).
    let old_time = cluster.psql_one("SELECT (now() - interval '40 days')::text");
    assert!(
        Report::sample("old-host", &old_time)
            .ingest(&mut admin)
            .unwrap_or_else(|e| panic!("expected the report of 40 days ago to be stored: {}", error_text(&e))),
        "expected the report of 40 days ago to be stored"
    );
    let upkeep = cluster.psql_one("SELECT secumon.run_job('partition_upkeep')");
    assert!(upkeep.starts_with("success"), "expected partition_upkeep to succeed: {upkeep}");
    for table in ["metric_samples", "process_metrics"] {
        assert_eq!(
            partition_of(&cluster, table, &old_time),
            "false",
            "expected the report of 40 days ago to get a partition of its own in {table}"
        );
    }

    // The reader: one transaction that read every metric relation and stays open.
    let mut reader = cluster.client();
    reader
        .batch_execute(
            "BEGIN;
             SELECT count(*) FROM secumon.metrics;
             SELECT count(*) FROM secumon.disk_metrics;
             SELECT count(*) FROM secumon.network_metrics;
             SELECT count(*) FROM secumon.process_metrics;",
        )
        .unwrap_or_else(|e| panic!("expected the reader's transaction to start: {}", error_text(&e)));

    // The writer: a stall shows as a statement timeout, not as a hung test.
    let mut writer = cluster.client();
    writer.batch_execute("SET statement_timeout = '10s'").unwrap();
    let times: Vec<String> = cluster
        .psql(
            "SELECT (date_trunc('second', now()) - interval '30 minutes' + g * interval '1 second')::text \
               FROM generate_series(1, 1000) AS g",
        )
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    let mut stored = 0usize;
    let mut ingest = |writer: &mut Client, when: &str| {
        let time = &times[stored];
        match Report::sample("busy-host", time).ingest(writer) {
            Ok(true) => stored += 1,
            Ok(false) => panic!("expected the report at {time} to be new"),
            Err(e) => panic!(
                "expected report #{} ({when}) to be stored while the reader's transaction is open, \
                 but secumon.ingest failed: {}\njobs: {:#?}\nlocks waited for: {:?}",
                stored + 1,
                error_text(&e),
                ddl_jobs().iter().map(|j| cluster.job(j).to_string()).collect::<Vec<_>>(),
                cluster.psql(
                    "SELECT a.backend_type, a.pid, l.relation::regclass::text, l.mode
                       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted"
                )
            ),
        }
    };

    // Work for partition_upkeep: a missing future partition, and rows in the default partitions.
    admin
        .batch_execute("UPDATE secumon.storage_policies SET premake_days = 14 WHERE table_name = 'metric_samples'")
        .unwrap();
    // Three days ago has no partition (they are made from yesterday on): the report waits in
    // the default partitions.
    let unpartitioned_time = cluster.psql_one("SELECT (now() - interval '3 days')::text");
    match Report::sample("future-host", &unpartitioned_time).ingest(&mut writer) {
        Ok(true) => {}
        other => panic!(
            "expected a report for a day without partition to be stored in the default partitions: {:?}",
            other.map_err(|e| error_text(&e))
        ),
    }
    let triggered = now(&mut admin);
    admin
        .batch_execute(
            "SELECT secumon.alter_job('partition_upkeep', next_run => now());
             SELECT secumon.alter_job('compress_metric_samples', next_run => now());
             SELECT secumon.alter_job('retention_process_metrics', next_run => now());",
        )
        .unwrap_or_else(|e| panic!("expected secumon.alter_job to work: {}", error_text(&e)));

    // While the maintenance worker tries the jobs, every report goes in.
    let mut states = Vec::new();
    let gave_way = wait_until(WAIT, || {
        ingest(&mut writer, "while the jobs were due");
        states = job_states(&mut monitor, &ddl_jobs(), triggered);
        states.len() == ddl_jobs().len() && states.iter().all(|s| s.waiting)
    });
    assert!(
        gave_way,
        "expected {:?} to give way to the open reader and say so (secumon.jobs.waiting_since \
         set, last_result starting with 'waiting for a lock') within {WAIT:?}; jobs: {states:#?}",
        ddl_jobs()
    );
    for _ in 0..20 {
        ingest(&mut writer, "after the jobs gave way");
        thread::sleep(Duration::from_millis(100));
    }
    states = job_states(&mut monitor, &ddl_jobs(), triggered);
    assert!(
        states.iter().all(|s| s.waiting && !s.succeeded_since),
        "expected the jobs to keep waiting (waiting_since set) while the reader is open; jobs: {states:#?}"
    );
    let read_while_open: i64 = reader
        .query_one("SELECT count(*) FROM secumon.process_metrics", &[])
        .expect("the reader's transaction is still open")
        .get(0);
    assert!(read_while_open > 0);
    reader.batch_execute("COMMIT").unwrap();

    // Once the reader is gone the jobs succeed, and waiting_since is cleared.
    let committed = now(&mut monitor);
    for job in ddl_jobs() {
        cluster.run_job_soon(job);
    }
    let done = wait_until(Duration::from_secs(60), || {
        states = job_states(&mut monitor, &ddl_jobs(), committed);
        states.iter().all(|s| s.succeeded_since && !s.waiting_since_set)
    });
    assert!(
        done,
        "expected {:?} to succeed after the reader committed, with waiting_since NULL again; jobs: {states:#?}",
        ddl_jobs()
    );

    // The jobs did their work.
    if !timescaledb_backend() {
        let missing = cluster.psql(
            "SELECT d::date::text FROM generate_series((now() AT TIME ZONE 'UTC')::date,
                                                       (now() AT TIME ZONE 'UTC')::date + 14, interval '1 day') AS d
              WHERE to_regclass(format('secumon_partitions.metric_samples_p%s', to_char(d, 'YYYYMMDD'))) IS NULL",
        );
        assert!(missing.is_empty(), "expected metric_samples partitions 14 days ahead, missing: {missing:?}");
    }
    assert_eq!(cluster.psql_one(DEFAULT_PARTITION_ROWS), "0", "expected the default partitions emptied");
    assert_eq!(
        partition_of(&cluster, "metric_samples", &old_time),
        "true",
        "expected compress_metric_samples to compress the day of 40 days ago"
    );
    assert_eq!(
        partition_of(&cluster, "process_metrics", &old_time),
        "missing",
        "expected retention_process_metrics to drop the day of 40 days ago"
    );
    assert_eq!(
        cluster.psql_one(
            "SELECT count(*) FROM secumon.metric_samples s JOIN secumon.agents a USING (agent_key) \
             WHERE a.agent_id = 'busy-host'"
        ),
        stored.to_string(),
        "expected every report stored while the reader was open to be there"
    );
    assert_eq!(
        cluster.psql(
            "SELECT setting FROM pg_settings WHERE name = 'secumon.maintenance_lock_timeout'"
        ),
        vec![vec![Some("100".to_string())]],
        "expected setting secumon.maintenance_lock_timeout (milliseconds, default 100)"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. The alert engine never loses a breach to an error

#[test]
fn an_alert_engine_error_stays_visible_is_logged_once_and_the_breach_is_evaluated_again() {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    cluster.psql("UPDATE secumon.alert_rules SET enabled = false");
    const RULE: &str = "restored-iowait";
    let rule = iowait_rule(&cluster, RULE);
    samples(&cluster, &[("h0", "cpu.iowait_percent", 60, 70.0)]);
    wait_for_alert_states(&cluster, &rule, "h0", &["firing"], "a first event exists");

    // As after a restore that left the identity sequence behind its table: the next event ids
    // are taken. Every failed insert still uses up a sequence value, so enough ids are taken
    // for the collisions to last while the test watches.
    cluster.psql(
        "INSERT INTO secumon.alert_events (id, alert_id, rule_id, tenant_id, agent_id, event, severity, payload)
         OVERRIDING SYSTEM VALUE
         SELECT m.id + g, gen_random_uuid(), gen_random_uuid(), 'default', 'restored', 'acknowledged', 'info', '{}'
           FROM (SELECT max(id) AS id FROM secumon.alert_events) AS m, generate_series(1, 5000) AS g",
    );
    cluster.psql("SELECT setval('secumon.alert_events_id_seq', 1, false)");

    samples(&cluster, &[("h1", "cpu.iowait_percent", 30, 80.0)]);
    let mut error = None;
    let shown = wait_until(WAIT, || {
        error = rule_error(&cluster, &rule);
        error.is_some()
    });
    assert!(
        shown,
        "expected secumon.alert_rule_status.last_error of rule {RULE} to show the failed event insert; \
         engine job: {}",
        cluster.job("alert_evaluation")
    );
    let error = error.unwrap();
    assert!(error.contains("duplicate key"), "expected the duplicate key error, got: {error}");

    // No new data: the error stays visible cycle after cycle while the cause lasts.
    for round in 1..=3 {
        two_engine_cycles(&cluster);
        let now_shown = rule_error(&cluster, &rule);
        assert!(
            now_shown.as_deref().is_some_and(|e| e.contains("duplicate key")),
            "expected last_error of rule {RULE} to stay visible while the event inserts keep failing \
             ({} engine cycles later), got {now_shown:?}; alerts for h1: {:?}",
            round * 2,
            alert_states(&cluster, &rule, "h1")
        );
    }
    assert!(
        alert_states(&cluster, &rule, "h1").iter().all(|s| s != "firing"),
        "the alert cannot have fired while its event could not be written"
    );
    let logged = log_lines(&cluster, &["secumon alert engine", RULE, "duplicate key"]);
    assert_eq!(
        logged.len(),
        1,
        "expected the engine to log the rule's error once (a line with `secumon alert engine`, `{RULE}` \
         and `duplicate key`), not once per cycle; found: {logged:#?}"
    );

    // Repair the sequence: the same samples are evaluated again, without new data.
    cluster.psql("SELECT setval('secumon.alert_events_id_seq', (SELECT max(id) FROM secumon.alert_events))");
    wait_for_alert_states(
        &cluster,
        &rule,
        "h1",
        &["firing"],
        "the breach that met the error is evaluated again once the error is gone",
    );
    let mut cleared = Some(String::new());
    assert!(
        wait_until(WAIT, || {
            cleared = rule_error(&cluster, &rule);
            cleared.is_none()
        }),
        "expected last_error of rule {RULE} to become NULL once it evaluates again, got {cleared:?}"
    );
    let fired = cluster.psql(&format!(
        "SELECT event FROM secumon.alert_events WHERE rule_id = '{rule}' AND agent_id = 'h1' ORDER BY id"
    ));
    assert_eq!(fired, vec![vec![Some("firing".to_string())]], "expected one firing event for h1");
}

// ---------------------------------------------------------------------------------------------
// 7. The notifier survives bad data

#[test]
fn a_notification_that_cannot_be_built_fails_alone_and_the_notifier_keeps_running() {
    let cluster = Cluster::start_with(&[
        ("secumon.alert_interval", "1s"),
        ("secumon.notify_backoff_base", "200ms"),
        ("secumon.notify_backoff_max", "1s"),
        ("secumon.notify_poll_interval", "500ms"),
        ("secumon.notify_max_attempts", "3"),
    ]);
    cluster.psql("UPDATE secumon.alert_rules SET enabled = false");
    let receiver = HttpReceiver::start();
    cluster
        .client()
        .execute(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('ops', 'webhook', $1)",
            &[&json!({"url": receiver.url("/hooks/ops")})],
        )
        .unwrap_or_else(|e| panic!("expected to create the webhook channel: {}", error_text(&e)));
    cluster.psql(
        "SELECT secumon.register_agent('deep-host', 'deep-host');
         SELECT secumon.register_agent('normal-host', 'normal-host');",
    );
    // Valid jsonb for PostgreSQL, deeper than JSON libraries usually accept. Such labels are
    // refused at the door since 0.2.0 (secumon._bound_jsonb); they can still be in a database
    // from before, which is what replica mode (no ordinary triggers) stands in for here.
    cluster.psql(
        "SET session_replication_role = replica;
         UPDATE secumon.agents SET labels = (repeat('{\"a\":', 150) || '1' || repeat('}', 150))::jsonb
          WHERE agent_id = 'deep-host'",
    );
    let mut client = cluster.client();
    let notifier = wait_for_worker(&cluster, &mut client, "secumon notifier", Some(TEST_DATABASE));

    let rule = iowait_rule(&cluster, "iowait");
    samples(
        &cluster,
        &[
            ("deep-host", "cpu.iowait_percent", 30, 90.0),
            ("normal-host", "cpu.iowait_percent", 30, 90.0),
        ],
    );
    wait_for_alert_states(&cluster, &rule, "deep-host", &["firing"], "the deep agent breached");
    wait_for_alert_states(&cluster, &rule, "normal-host", &["firing"], "the normal agent breached");

    let history = |agent: &str| -> Vec<Value> {
        cluster
            .client()
            .query(
                "SELECT to_jsonb(h) FROM secumon.notification_history h WHERE agent_id = $1 ORDER BY notification_id",
                &[&agent],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    let delivered = wait_until(WAIT, || {
        receiver.requests().iter().any(|r| r.text().contains("normal-host"))
    });
    let pids = worker_pids(&mut client, "secumon notifier", None);
    assert!(
        delivered,
        "expected the normal agent's notification to be delivered within {WAIT:?} whatever happens to \
         the deep one; requests: {}; notifier pids now {pids:?} (was {notifier}); history normal: {:#?}; \
         history deep: {:#?}",
        receiver.count(),
        history("normal-host"),
        history("deep-host")
    );

    let mut deep = Vec::new();
    let settled = wait_until(WAIT, || {
        deep = history("deep-host");
        !deep.is_empty()
            && deep.iter().all(|row| {
                let error = row["last_error"].as_str().unwrap_or("");
                match row["status"].as_str() {
                    Some("sent") => true,
                    Some("failed") => !error.is_empty(),
                    Some("pending") => !error.is_empty() && row["attempts"].as_i64() >= Some(1),
                    _ => false,
                }
            })
    });
    assert!(
        settled,
        "expected the deep agent's notification to be recorded as sent, failed or retrying with an \
         error text within {WAIT:?}, not left in flight; history: {deep:#?}"
    );
    let normal = history("normal-host");
    assert!(
        normal.iter().all(|row| row["status"] == "sent"),
        "expected the normal agent's notification to be recorded as sent: {normal:#?}"
    );

    let pids = worker_pids(&mut client, "secumon notifier", None);
    assert_eq!(
        pids,
        vec![notifier],
        "expected the same notifier process throughout (no crash, no restart)\n--- postgresql.log ---\n{}",
        sys::tail(&cluster.log(), 30)
    );
}
