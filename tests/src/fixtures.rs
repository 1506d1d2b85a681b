//! A populated SecuMon database and a way to tell whether two databases hold the same things.
//!
//! [`populate`] fills `secumon_test` the way a running installation fills it: agents reporting
//! through `secumon.ingest` (one of them through an agent login role), days old enough to be
//! compressed, rollups materialised, alerts that fired and resolved with their notifications
//! delivered to a real webhook receiver, a SecuMon user with a login token, and an operator's
//! edits of every kind of setting. Dump/restore and upgrade tests use it as "a real database".
//!
//! [`fingerprint`] summarises every table and sequence of schemas `secumon` and
//! `secumon_partitions` (enumerated from `pg_class`), and [`fingerprint_diff`] says how two
//! summaries differ.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use postgres::{Client, SimpleQueryMessage};
use serde_json::json;

use crate::cluster::{Cluster, Rows};
use crate::receivers::HttpReceiver;
use crate::report::{register_agent, Report};

/// Table (or sequence) name, `schema.relname` → (rows, md5 of the rows sorted by their text).
/// Sequences map to (`last_value`, `"sequence is_called=<bool>"`).
pub type Fingerprint = BTreeMap<String, (i64, String)>;

/// Table name → its columns (sorted by name), the columns a fingerprint covers.
pub type Columns = BTreeMap<String, Vec<String>>;

/// The series value the fixture's breaches use: above the edited threshold of
/// [`EDITED_RULE`] ([`EDITED_THRESHOLD`]) but below its seeded one (85), so the rule fires for
/// it only if the operator's edit is still there.
pub const BREACH_VALUE: f64 = 70.0;
/// The seeded rule whose threshold the fixture lowers.
pub const EDITED_RULE: &str = "High Memory Usage";
pub const EDITED_THRESHOLD: f64 = 60.0;
/// The seeded rule the fixture deletes.
pub const DELETED_RULE: &str = "High Load Average";
/// The fixture's own rule (inserted, watches `cpu.iowait_percent > 50`).
pub const CUSTOM_RULE: &str = "Fixture iowait";
/// The webhook channel the fixture creates.
pub const WEBHOOK_CHANNEL: &str = "fixture-webhook";
pub const WEBHOOK_SECRET: &str = "fixture-hmac-secret-0123456789";
/// The SecuMon user the fixture creates and logs in.
pub const USERNAME: &str = "fixture_alice";
pub const PASSWORD: &str = "fixture password 1";
/// The tenant the fixture creates (the user belongs to it).
pub const TENANT: &str = "fixture-corp";
/// Days before today (UTC) with data old enough to be compressed (compress_after is 7 days).
pub const COMPRESSED_DAYS_AGO: [i32; 2] = [10, 9];

const JOB_RETRIES: usize = 4;
const WAIT: Duration = Duration::from_secs(30);

/// What [`populate`] made, for the assertions that follow a dump, restore or upgrade.
pub struct Fixture {
    /// Receives the webhook channel's notifications; keep it alive as long as the channel may
    /// send (also from a restored copy of the database: the URL is the same).
    pub webhook: HttpReceiver,
    /// Notifications the receiver had got when [`populate`] returned.
    pub webhook_requests: usize,
    /// Whether the workers sent the fixture's three notifications (they do when the database
    /// is at the library's own version; at an older one they stay pending until the update).
    pub notifications_delivered: bool,
    /// An access token issued to [`USERNAME`] by `secumon.login`.
    pub token: String,
    pub refresh_token: String,
    pub user_id: String,
    /// Id of the seeded rule [`EDITED_RULE`].
    pub edited_rule_id: String,
    pub custom_rule_id: String,
    /// Agents with samples (`fx-1`, `fx-2` generated; `fx-spool` through an agent role;
    /// `fx-hot` breached the rules).
    pub agents: Vec<String>,
}

/// Counts the rows in the default partitions of the raw tables (none on the timescaledb
/// backend, where TimescaleDB makes chunks as rows arrive): 0 once partition_upkeep ran. Works
/// on every release (the upgrade test populates 0.1.0).
pub const DEFAULT_PARTITION_ROWS: &str =
    "SELECT coalesce(sum((xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM secumon_partitions.%I', partition_name),
                                                               false, true, '')))[1]::text::bigint), 0)
       FROM secumon.partitions WHERE is_default";

/// Fills database `secumon_test` of `cluster` (extension created, workers serving it) with a
/// realistic history; see the module documentation. Takes a few seconds. Panics, naming the step,
/// if any step fails.
pub fn populate(cluster: &Cluster) -> Fixture {
    let mut db = cluster.client();
    let sql = |db: &mut Client, what: &str, sql: &str| -> Rows {
        sql_rows(db, sql)
            .unwrap_or_else(|e| panic!("populate: expected {what} to work:\n{sql}\nerror: {e}"))
    };

    // -- An operator's settings: every kind of edit a restore or an upgrade must keep.
    sql(
        &mut db,
        "a tenant",
        &format!(
            "INSERT INTO secumon.tenants (tenant_id, name) VALUES ('{TENANT}', 'Fixture Corp')"
        ),
    );
    sql(&mut db, "a retention edit", "UPDATE secumon.storage_policies SET retention = '45 days' WHERE table_name = 'metric_samples'");
    sql(
        &mut db,
        "a job schedule change",
        "SELECT 1 FROM secumon.alter_job('auth_cleanup', schedule_interval => '2 hours')",
    );
    sql(
        &mut db,
        "a retention hour change",
        "SELECT 1 FROM secumon.set_retention_hour(3, 'UTC')",
    );
    sql(
        &mut db,
        "a rollup setting edit",
        "UPDATE secumon.rollups SET refresh_lag = '3 minutes', late_margin = '90 seconds', max_runtime = '20 seconds' \
          WHERE rollup_name = 'metrics_5min'",
    );
    sql(
        &mut db,
        "the seeded rule's threshold edit",
        &format!("UPDATE secumon.alert_rules SET threshold = {EDITED_THRESHOLD} WHERE name = '{EDITED_RULE}' AND tenant_id = 'default'"),
    );
    sql(
        &mut db,
        "the deletion of a seeded rule",
        &format!("DELETE FROM secumon.alert_rules WHERE name = '{DELETED_RULE}'"),
    );
    let custom_rule_id = one(&sql(
        &mut db,
        "a rule of our own",
        &format!(
            "INSERT INTO secumon.alert_rules (name, description, metric_type, metric_name, condition, threshold, severity, agent_labels)
             VALUES ('{CUSTOM_RULE}', 'iowait above 50', 'cpu', 'iowait_percent', 'gt', 50, 'critical', '{{}}') RETURNING id"
        ),
    ));
    let edited_rule_id = one(&sql(
        &mut db,
        "the edited rule's id",
        &format!("SELECT id FROM secumon.alert_rules WHERE name = '{EDITED_RULE}' AND tenant_id = 'default'"),
    ));
    sql(
        &mut db,
        "a silence",
        "SELECT 1 FROM secumon.silence('7 days', 'fixture maintenance window', agent_id => 'fx-quiet')",
    );

    // -- A webhook channel with a secret and a custom header, delivering to a real receiver.
    let webhook = HttpReceiver::start();
    db.execute(
        "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ($1, 'webhook', $2)",
        &[
            &WEBHOOK_CHANNEL,
            &json!({"url": webhook.url("/fixture"), "hmac_secret": WEBHOOK_SECRET,
                    "headers": {"Authorization": "Bearer fixture"}}),
        ],
    )
    .unwrap_or_else(|e| panic!("populate: expected to create the webhook channel: {}", crate::error_text(&e)));

    // -- A SecuMon user in its own tenant, logged in once.
    let user_id = one(&sql(
        &mut db,
        "create_user",
        &format!("SELECT secumon.create_user('{USERNAME}', '{PASSWORD}', 'admin', 'alice@fixture.example', '{TENANT}')"),
    ));
    let row = db
        .query_one(
            "SELECT token, refresh_token FROM secumon.login($1, $2)",
            &[&USERNAME, &PASSWORD],
        )
        .unwrap_or_else(|e| {
            panic!(
                "populate: expected {USERNAME} to log in: {}",
                crate::error_text(&e)
            )
        });
    let (token, refresh_token): (String, String) = (row.get(0), row.get(1));

    // -- Samples. An agent login role writes over the wire, as the real agent does...
    let role = cluster.create_agent_role("fixture_agent");
    let mut agent = cluster.client_for(&role);
    register_agent(&mut agent, "fx-spool")
        .expect("populate: expected the agent role to register fx-spool");
    for minutes_ago in [50, 40, 30, 20] {
        let time = one(&sql(
            &mut db,
            "a report time",
            &format!("SELECT (now() - interval '{minutes_ago} minutes')::text"),
        ));
        Report::sample("fx-spool", &time)
            .ingest(&mut agent)
            .unwrap_or_else(|e| {
                panic!(
                    "populate: expected fx-spool's report to be stored: {}",
                    crate::error_text(&e)
                )
            });
    }
    drop(agent);
    // ...and the history of two more agents goes through the same function, server-side: two
    // old days (to be compressed), yesterday and today so far, every 5 minutes.
    let mut ranges: Vec<(String, String)> = COMPRESSED_DAYS_AGO
        .iter()
        .map(|d| {
            (format!("date_trunc('day', now()) - interval '{d} days'"), format!("date_trunc('day', now()) - interval '{} days'", d - 1))
        })
        .collect();
    ranges.push(("date_trunc('day', now()) - interval '1 day'".into(), "now() - interval '10 minutes'".into()));
    sql(&mut db, "generating the history", &history_sql("fx-", 2, &ranges, "interval '5 minutes'"));

    // -- Lifecycle jobs, run now (as an operator would with secumon.run_job).
    run_job(&mut db, "partition_upkeep");
    let in_default = one(&sql(
        &mut db,
        "counting rows in default partitions",
        DEFAULT_PARTITION_ROWS,
    ));
    assert_eq!(
        in_default, "0",
        "populate: expected partition_upkeep to move every row out of the default partitions"
    );
    let raw_tables = [
        "metric_samples",
        "disk_metrics",
        "network_metrics",
        "process_metrics",
    ];
    for table in raw_tables {
        // Each run compresses the oldest due day; run until both old days are compressed.
        for _ in 0..JOB_RETRIES {
            if compressed_old_days(&mut db, table) == COMPRESSED_DAYS_AGO.len() {
                break;
            }
            run_job(&mut db, &format!("compress_{table}"));
        }
        let compressed = compressed_old_days(&mut db, table);
        assert_eq!(
            compressed,
            COMPRESSED_DAYS_AGO.len(),
            "populate: expected the compress_{table} job to compress the days {COMPRESSED_DAYS_AGO:?} days ago; partitions: {:?}",
            sql_rows(&mut db, &format!("SELECT partition_name, range_start, compressed FROM secumon.partitions WHERE table_name = '{table}' ORDER BY 2"))
        );
    }
    for job in [
        "rollup_metrics_5min",
        "rollup_metrics_1hour",
        "rollup_disk_metrics_1hour",
        "rollup_network_metrics_1hour",
    ] {
        run_job(&mut db, job);
    }
    for storage in [
        "metric_rollup_5min",
        "metric_rollup_1hour",
        "disk_rollup_1hour",
        "network_rollup_1hour",
    ] {
        let rows = one(&sql(
            &mut db,
            "counting rollup rows",
            &format!("SELECT count(*) FROM secumon.{storage}"),
        ));
        assert_ne!(
            rows, "0",
            "populate: expected the rollup jobs to materialise rows into secumon.{storage}"
        );
    }

    // -- Alerts: fx-hot breaches the edited seeded rule and ours; ours then resolves; the
    // firing one is acknowledged. Three notifications for the webhook.
    register_agent(&mut db, "fx-hot").unwrap_or_else(|e| {
        panic!(
            "populate: expected to register fx-hot: {}",
            crate::error_text(&e)
        )
    });
    ingest_series(
        &mut db,
        "fx-hot",
        "now() - interval '30 seconds'",
        &[
            ("memory.usage_percent", BREACH_VALUE),
            ("cpu.iowait_percent", 80.0),
        ],
    );
    evaluate_until(&mut db, "fx-hot firing on both rules", &format!(
        "SELECT count(*) = 2 FROM secumon.alerts WHERE agent_id = 'fx-hot' AND state = 'firing' AND rule_id IN ('{edited_rule_id}', '{custom_rule_id}')"
    ));
    ingest_series(
        &mut db,
        "fx-hot",
        "now() - interval '20 seconds'",
        &[
            ("memory.usage_percent", BREACH_VALUE + 1.0),
            ("cpu.iowait_percent", 10.0),
        ],
    );
    evaluate_until(&mut db, "fx-hot's iowait alert resolved", &format!(
        "SELECT count(*) = 1 FROM secumon.alerts WHERE agent_id = 'fx-hot' AND state = 'resolved' AND rule_id = '{custom_rule_id}'"
    ));
    sql(
        &mut db,
        "acknowledging the memory alert",
        &format!("SELECT 1 FROM secumon.ack_alert((SELECT id FROM secumon.alerts WHERE agent_id = 'fx-hot' AND rule_id = '{edited_rule_id}'), 'fixture ack')"),
    );
    // The workers serve a database only at the library's own version (at an older one they
    // wait for ALTER EXTENSION secumon UPDATE): only then are the notifications sent now.
    let notifications_delivered = one(&sql(
        &mut db,
        "comparing versions",
        "SELECT e.extversion = a.default_version FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
          WHERE e.extname = 'secumon'",
    )) == "t";
    let expected_outbox = if notifications_delivered {
        "0/3"
    } else {
        "3/3"
    };
    if notifications_delivered {
        webhook.wait_for(3, WAIT);
    }
    let delivered = crate::wait_until(WAIT, || {
        sql_rows(&mut db, "SELECT count(*) FILTER (WHERE status <> 'sent') || '/' || count(*) FROM secumon.notification_outbox")
            .map(|rows| one(&rows) == expected_outbox)
            .unwrap_or(false)
    });
    assert!(
        delivered,
        "populate: expected three notifications (not sent / all: {expected_outbox}); outbox: {:?}",
        sql_rows(&mut db, "SELECT channel_name, event, status, last_error FROM secumon.notification_outbox ORDER BY 1")
    );

    Fixture {
        notifications_delivered,
        webhook_requests: webhook.count(),
        webhook,
        token,
        refresh_token,
        user_id,
        edited_rule_id,
        custom_rule_id,
        agents: ["fx-1", "fx-2", "fx-spool", "fx-hot"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// Stores one report of `agent` at `time` (an SQL expression) with `series` ("type.name", value)
/// through `secumon.ingest`.
pub fn ingest_series(client: &mut Client, agent: &str, time: &str, series: &[(&str, f64)]) {
    let names: Vec<String> = series.iter().map(|(n, _)| format!("'{n}'")).collect();
    let values: Vec<String> = series.iter().map(|(_, v)| format!("{v}")).collect();
    let statement = format!(
        "SELECT secumon.ingest('{agent}', {time}, ARRAY[{}]::text[], ARRAY[{}]::float8[])",
        names.join(", "),
        values.join(", ")
    );
    sql_rows(client, &statement).unwrap_or_else(|e| {
        panic!("expected a report of {agent} to be stored:\n{statement}\nerror: {e}")
    });
}

/// Registers `agent` and stores one report of it breaching [`EDITED_RULE`] now: after a dump and
/// restore or an update, the preserved edit must fire for a new agent. Returns the query that
/// finds the alert once it fires.
pub fn breach_edited_rule(client: &mut Client, agent: &str) -> String {
    register_agent(client, agent).unwrap_or_else(|e| panic!("expected to register {agent}: {e}"));
    ingest_series(client, agent, "now()", &[("memory.usage_percent", BREACH_VALUE)]);
    format!(
        "SELECT a.id FROM secumon.alerts a JOIN secumon.alert_rules r ON r.id = a.rule_id
          WHERE a.agent_id = '{agent}' AND a.state = 'firing' AND r.name = '{EDITED_RULE}'"
    )
}

/// Runs job `name` with `secumon.run_job` in this session; panics unless it succeeded. A run
/// that lost a lock race with the workers running the same job (lock timeout, deadlock) is
/// retried, as the workers would.
pub fn run_job(client: &mut Client, name: &str) -> String {
    let mut result = String::new();
    for _ in 0..40 {
        result = sql_rows(client, &format!("SELECT secumon.run_job('{name}')"))
            .map(|rows| one(&rows))
            .unwrap_or_else(|e| panic!("expected secumon.run_job('{name}') to run: {e}"));
        let lower = result.to_lowercase();
        let lost_a_race = !result.starts_with("success")
            && (lower.contains("lock")
                || lower.contains("deadlock")
                || result.contains("55P03")
                || result.contains("40P01"));
        if !lost_a_race {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        result.starts_with("success"),
        "expected job {name} to succeed: {result}"
    );
    result
}

fn compressed_old_days(client: &mut Client, table: &str) -> usize {
    let days: Vec<String> = COMPRESSED_DAYS_AGO
        .iter()
        .map(|d| format!("date_trunc('day', now()) - interval '{d} days'"))
        .collect();
    let sql = format!(
        "SELECT count(*) FROM secumon.partitions WHERE table_name = '{table}' AND compressed AND range_start IN ({})",
        days.join(", ")
    );
    sql_rows(client, &sql)
        .map(|rows| one(&rows))
        .unwrap_or_default()
        .parse()
        .unwrap_or(0)
}

/// Runs the alert engine's job until `condition` (an SQL boolean) holds.
fn evaluate_until(client: &mut Client, what: &str, condition: &str) {
    let held = crate::wait_until(WAIT, || {
        let _ = sql_rows(client, "SELECT secumon.run_job('alert_evaluation')");
        sql_rows(client, condition)
            .map(|rows| one(&rows) == "t")
            .unwrap_or(false)
    });
    assert!(
        held,
        "populate: expected {what}; alerts: {:?}; alert_evaluation: {:?}",
        sql_rows(
            client,
            "SELECT agent_id, rule_id, state FROM secumon.alerts ORDER BY 1, 2"
        ),
        sql_rows(
            client,
            "SELECT last_result, last_error FROM secumon.jobs WHERE job_name = 'alert_evaluation'"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Queries on any database of a cluster.

/// Text rows of all statements of `sql`, or the server's message.
pub fn sql_rows(client: &mut Client, sql: &str) -> Result<Rows, String> {
    let messages = client
        .simple_query(sql)
        .map_err(|e| crate::error_text(&e))?;
    Ok(messages
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// Like [`Cluster::psql`] on database `db`.
pub fn psql_on(cluster: &Cluster, db: &str, sql: &str) -> Rows {
    sql_rows(&mut cluster.client_on(db), sql)
        .unwrap_or_else(|e| panic!("expected SQL on {db} to succeed:\n{sql}\nerror: {e}"))
}

/// Like [`Cluster::psql_one`] on database `db`.
pub fn psql_one_on(cluster: &Cluster, db: &str, sql: &str) -> String {
    let rows = psql_on(cluster, db, sql);
    rows.into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .unwrap_or_else(|| panic!("expected a non-NULL value from {db}:\n{sql}"))
}

fn one(rows: &Rows) -> String {
    rows.first()
        .and_then(|row| row.first().cloned().flatten())
        .unwrap_or_default()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn qualified(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, rel)) => format!("{}.{}", quote_ident(schema), quote_ident(rel)),
        None => quote_ident(name),
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprints.

/// Schemas whose relations a fingerprint covers.
pub const FINGERPRINT_SCHEMAS: [&str; 2] = ["secumon", "secumon_partitions"];

fn schema_list() -> String {
    FINGERPRINT_SCHEMAS
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every ordinary, partitioned and foreign table of schemas `secumon` and `secumon_partitions`
/// of database `db` with its columns (sorted by name, dropped ones left out).
pub fn table_columns(cluster: &Cluster, db: &str) -> Columns {
    let rows = psql_on(
        cluster,
        db,
        &format!(
            "SELECT n.nspname || '.' || c.relname, a.attname
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              WHERE n.nspname IN ({}) AND c.relkind IN ('r', 'p', 'f') AND c.relpersistence <> 't'
              ORDER BY 1, 2",
            schema_list()
        ),
    );
    let mut columns = Columns::new();
    for row in rows {
        if let [Some(table), Some(column)] = &row[..] {
            columns
                .entry(table.clone())
                .or_default()
                .push(column.clone());
        }
    }
    columns
}

/// Row count and content hash of every table, and `last_value` of every sequence, in schemas
/// `secumon` and `secumon_partitions` of database `db`. Rows are compared by the text of their
/// columns in name order, so the physical column order does not matter.
pub fn fingerprint(cluster: &Cluster, db: &str) -> Fingerprint {
    fingerprint_of_columns(cluster, db, &table_columns(cluster, db))
}

/// Like [`fingerprint`], over exactly the tables and columns of `columns` (plus every
/// sequence). A table or column missing from `db` gives an entry `(-1, "missing: …")`.
pub fn fingerprint_of_columns(cluster: &Cluster, db: &str, columns: &Columns) -> Fingerprint {
    let mut client = cluster.client_on(db);
    let mut fingerprint = Fingerprint::new();
    for (table, cols) in columns {
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(r, E'\\n' ORDER BY r COLLATE \"C\")), md5('')) FROM ({}) s",
            rows_query(table, cols)
        );
        let entry = match sql_rows(&mut client, &sql) {
            Ok(rows) => {
                let row = rows.into_iter().next().unwrap_or_default();
                let count = row
                    .first()
                    .cloned()
                    .flatten()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(-1);
                (count, row.get(1).cloned().flatten().unwrap_or_default())
            }
            Err(e) => (-1, format!("missing: {e}")),
        };
        fingerprint.insert(table.clone(), entry);
    }
    let sequences = sql_rows(
        &mut client,
        &format!(
            "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ({}) AND c.relkind = 'S' ORDER BY 1",
            schema_list()
        ),
    )
    .unwrap_or_else(|e| panic!("expected to list the sequences of {db}: {e}"));
    for row in sequences {
        let Some(Some(sequence)) = row.into_iter().next() else {
            continue;
        };
        let rows = sql_rows(
            &mut client,
            &format!("SELECT last_value, is_called FROM {}", qualified(&sequence)),
        )
        .unwrap_or_else(|e| panic!("expected to read sequence {sequence} of {db}: {e}"));
        let row = rows.into_iter().next().unwrap_or_default();
        let last_value = row
            .first()
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        let is_called = row.get(1).cloned().flatten().unwrap_or_default();
        fingerprint.insert(
            sequence,
            (last_value, format!("sequence is_called={is_called}")),
        );
    }
    fingerprint
}

fn rows_query(table: &str, columns: &[String]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("t.{}", quote_ident(c)))
        .collect();
    format!(
        "SELECT ROW({})::text AS r FROM {} t",
        cols.join(", "),
        qualified(table)
    )
}

/// The rows of `table` in database `db` as text (columns `columns` in that order), sorted.
pub fn table_rows(
    cluster: &Cluster,
    db: &str,
    table: &str,
    columns: &[String],
) -> Result<Vec<String>, String> {
    let sql = format!(
        "SELECT r FROM ({}) s ORDER BY r COLLATE \"C\"",
        rows_query(table, columns)
    );
    sql_rows(&mut cluster.client_on(db), &sql).map(|rows| {
        rows.into_iter()
            .map(|row| row.into_iter().next().flatten().unwrap_or_default())
            .collect()
    })
}

/// Every row of every table of `columns` in database `db` (for explaining differences later).
pub fn all_table_rows(
    cluster: &Cluster,
    db: &str,
    columns: &Columns,
) -> BTreeMap<String, Vec<String>> {
    columns
        .iter()
        .map(|(table, cols)| {
            (
                table.clone(),
                table_rows(cluster, db, table, cols)
                    .unwrap_or_else(|e| vec![format!("<error: {e}>")]),
            )
        })
        .collect()
}

/// None when the two fingerprints are equal; else one line per difference: tables or
/// sequences only on one side, and different row counts, contents or sequence values.
pub fn fingerprint_diff(
    left_name: &str,
    left: &Fingerprint,
    right_name: &str,
    right: &Fingerprint,
) -> Option<String> {
    let names: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let mut lines = Vec::new();
    for name in names {
        match (left.get(name), right.get(name)) {
            (Some(l), None) => {
                lines.push(format!("  {name}: only in {left_name} ({})", describe(l)))
            }
            (None, Some(r)) => {
                lines.push(format!("  {name}: only in {right_name} ({})", describe(r)))
            }
            (Some(l), Some(r)) if l != r => lines.push(format!(
                "  {name}: {left_name} {} | {right_name} {}",
                describe(l),
                describe(r)
            )),
            _ => {}
        }
    }
    if lines.is_empty() {
        None
    } else {
        Some(format!(
            "{} difference(s) between {left_name} and {right_name}:\n{}",
            lines.len(),
            lines.join("\n")
        ))
    }
}

fn describe((count, hash): &(i64, String)) -> String {
    if hash.starts_with("sequence") {
        format!(
            "last_value {count}, {}",
            hash.trim_start_matches("sequence ")
        )
    } else if *count < 0 {
        hash.clone()
    } else {
        format!("{count} rows, md5 {}", &hash[..hash.len().min(12)])
    }
}

/// The tables whose entries differ (or exist on one side only) between two fingerprints.
pub fn differing_tables(left: &Fingerprint, right: &Fingerprint) -> Vec<String> {
    let names: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    names
        .into_iter()
        .filter(|n| left.get(*n) != right.get(*n))
        .cloned()
        .collect()
}

/// Rows only on one side of two sorted row lists, at most `limit` of each, as a readable text.
pub fn rows_diff(
    left_name: &str,
    left: &[String],
    right_name: &str,
    right: &[String],
    limit: usize,
) -> String {
    let mut only_left = Vec::new();
    let mut only_right = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        match (left.get(i), right.get(j)) {
            (Some(l), Some(r)) if l == r => {
                i += 1;
                j += 1;
            }
            (Some(l), Some(r)) if l.as_bytes() < r.as_bytes() => {
                only_left.push(l);
                i += 1;
            }
            (Some(_), Some(r)) => {
                only_right.push(r);
                j += 1;
            }
            (Some(l), None) => {
                only_left.push(l);
                i += 1;
            }
            (None, Some(r)) => {
                only_right.push(r);
                j += 1;
            }
            (None, None) => break,
        }
    }
    let mut text = String::new();
    let clip = |row: &str| {
        if row.chars().count() > 300 {
            format!(
                "{}… ({} chars)",
                row.chars().take(300).collect::<String>(),
                row.len()
            )
        } else {
            row.to_string()
        }
    };
    for (name, rows, sign) in [(left_name, &only_left, '-'), (right_name, &only_right, '+')] {
        if rows.is_empty() {
            continue;
        }
        text.push_str(&format!("    {} row(s) only in {name}:\n", rows.len()));
        for row in rows.iter().take(limit) {
            text.push_str(&format!("    {sign} {}\n", clip(row)));
        }
        if rows.len() > limit {
            text.push_str(&format!("    {sign} … {} more\n", rows.len() - limit));
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// A small unified diff, for schema descriptions and row lists.

/// A unified diff (`-` left, `+` right, `context` lines around changes) of two texts, or an
/// empty string when they are equal. Quadratic; meant for texts of at most a few thousand
/// lines.
pub fn unified_diff(left: &str, right: &str, context: usize) -> String {
    let a: Vec<&str> = left.lines().collect();
    let b: Vec<&str> = right.lines().collect();
    if a == b {
        return String::new();
    }
    // Longest common subsequence table, from the end.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Edit script: (kind, line) with kind ' ', '-', '+'.
    let mut script: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            script.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            script.push(('-', a[i]));
            i += 1;
        } else {
            script.push(('+', b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = script
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| *k != ' ')
        .map(|(i, _)| i)
        .collect();
    let mut out = String::new();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(context);
        let mut end = changed[k] + context + 1;
        while k + 1 < changed.len() && changed[k + 1] <= end + context {
            k += 1;
            end = changed[k] + context + 1;
        }
        let end = end.min(script.len());
        let left_line = script[..start]
            .iter()
            .filter(|(kind, _)| *kind != '+')
            .count()
            + 1;
        let right_line = script[..start]
            .iter()
            .filter(|(kind, _)| *kind != '-')
            .count()
            + 1;
        out.push_str(&format!("@@ -{left_line} +{right_line} @@\n"));
        for (kind, line) in &script[start..end] {
            out.push_str(&format!("{kind}{line}\n"));
        }
        k += 1;
    }
    out
}


/// SQL that registers agents `{prefix}1..={agents}` and stores one full report per agent every
/// `step` in each `[from, to)` range (SQL expressions): the history of `crate::history`, shaped
/// for the end-to-end tests.
pub fn history_sql(prefix: &str, agents: i32, ranges: &[(String, String)], step: &str) -> String {
    crate::history::history_sql(prefix, agents, ranges, step, crate::history::HistoryShape::EndToEnd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_shows_removed_then_added_lines_with_context() {
        let left = "a\nb\nc\nd\ne";
        let right = "a\nb\nC\nd\ne\nf";
        assert_eq!(unified_diff(left, left, 1), "");
        assert_eq!(
            unified_diff(left, right, 1),
            "@@ -2 +2 @@\n b\n-c\n+C\n d\n e\n+f\n"
        );
    }

    #[test]
    fn rows_diff_lists_rows_only_on_either_side() {
        let left: Vec<String> = ["(1,a)", "(2,b)", "(3,c)"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let right: Vec<String> = ["(1,a)", "(3,c)", "(4,d)"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let text = rows_diff("source", &left, "restored", &right, 5);
        assert_eq!(text, "    1 row(s) only in source:\n    - (2,b)\n    1 row(s) only in restored:\n    + (4,d)\n");
    }

    #[test]
    fn fingerprint_diff_names_every_difference() {
        let left: Fingerprint = [
            ("secumon.a".to_string(), (1, "x".to_string())),
            ("secumon.b".to_string(), (2, "y".to_string())),
        ]
        .into();
        let right: Fingerprint = [
            ("secumon.a".to_string(), (1, "z".to_string())),
            ("secumon.c".to_string(), (0, "w".to_string())),
        ]
        .into();
        assert_eq!(fingerprint_diff("l", &left, "l", &left), None);
        let diff = fingerprint_diff("source", &left, "restored", &right).expect("a difference");
        assert!(diff.starts_with("3 difference(s)"), "{diff}");
        assert!(
            diff.contains("secumon.a: source 1 rows, md5 x | restored 1 rows, md5 z"),
            "{diff}"
        );
        assert!(diff.contains("secumon.b: only in source"), "{diff}");
        assert!(diff.contains("secumon.c: only in restored"), "{diff}");
    }
}
