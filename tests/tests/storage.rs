//! The storage lifecycle end to end: the maintenance worker refreshes rollups, compresses old
//! days and drops expired ones on a real cluster, against data committed by other sessions
//! (agent roles and the real agent), and the dashboard functions answer for a reader role.

use std::time::Duration;

use secumon_e2e::*;

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// Registers agents `{prefix}1..={agents}` and stores one full report per agent every `step`
/// in [from, to) (SQL expressions), server-side, committed.
fn generate(cluster: &Cluster, prefix: &str, agents: i32, from: &str, to: &str, step: &str) {
    cluster.psql(&history_sql(prefix, agents, &[(from.to_string(), to.to_string())], step));
}

fn one(cluster: &Cluster, sql: &str) -> String {
    cluster.psql_one(sql)
}

/// Asks the worker to drain the default partitions now and waits until it did (the
/// timescaledb backend has none: TimescaleDB makes chunks as rows arrive).
fn wait_for_drain(cluster: &Cluster) {
    cluster.run_job_and_wait("partition_upkeep", JOB_TIMEOUT);
    let left = one(cluster, DEFAULT_PARTITION_ROWS);
    assert_eq!(left, "0", "expected partition_upkeep to drain the default partitions; job: {}", cluster.job("partition_upkeep"));
}

/// Rows of a rollup view that differ from a GROUP BY over secumon.metrics (min, max, count
/// exactly, avg up to float rounding), plus raw buckets missing from the view.
fn rollup_mismatches(cluster: &Cluster, view: &str, width: &str, prefix: &str) -> String {
    one(
        cluster,
        &format!(
            "WITH raw AS (SELECT secumon._bucket('{width}', time) AS bucket, agent_id, metric_type, metric_name,
                                 avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
                            FROM secumon.metrics WHERE agent_id LIKE '{prefix}%' GROUP BY 1, 2, 3, 4)
             SELECT count(*) FILTER (WHERE v.bucket IS NULL OR v.min <> raw.min OR v.max <> raw.max OR v.count <> raw.count
                                        OR abs(v.avg - raw.avg) > 1e-12 * greatest(abs(raw.avg), 1))
                    || ' of ' || count(*)
               FROM raw LEFT JOIN secumon.{view} v ON v.bucket = raw.bucket AND v.agent_id = raw.agent_id
                AND v.metric_type = raw.metric_type AND v.metric_name = raw.metric_name"
        ),
    )
}

#[test]
fn rollup_jobs_materialise_and_late_reports_fix_their_buckets() {
    let cluster = Cluster::start();
    // The rollup jobs run once with nothing to roll up: all of this arrives behind their
    // watermark, as a back-fill does.
    cluster.run_job_and_wait("rollup_metrics_5min", JOB_TIMEOUT);
    generate(&cluster, "e", 3, "now() - interval '3 hours'", "now()", "interval '10 seconds'");
    wait_for_drain(&cluster);
    cluster.run_job_and_wait("rollup_metrics_5min", JOB_TIMEOUT);
    cluster.run_job_and_wait("rollup_metrics_1hour", JOB_TIMEOUT);
    let lag = one(&cluster, "SELECT now() - watermark < interval '8 minutes' FROM secumon.rollups WHERE rollup_name = 'metrics_5min'");
    assert_eq!(lag, "t", "expected the 5-minute watermark within refresh_lag + 5 min of now; {}", cluster.job("rollup_metrics_5min"));
    let materialised = one(&cluster, "SELECT count(*) FROM secumon.metric_rollup_5min");
    assert_ne!(materialised, "0", "expected materialised 5-minute buckets");
    for (view, width) in [("metrics_5min", "5 minutes"), ("metrics_1hour", "1 hour")] {
        let m = rollup_mismatches(&cluster, view, width, "e");
        assert!(m.starts_with("0 of "), "expected {view} to equal a GROUP BY over raw rows; mismatches: {m}");
    }

    // An agent role replays a report from its spool into an already materialised bucket.
    let role = cluster.create_agent_role("late_agent");
    let mut agent = cluster.client_for(&role);
    register_agent(&mut agent, "late-1").expect("expected the agent role to register late-1");
    let bucket = one(&cluster, "SELECT secumon._bucket('5 minutes', now() - interval '1 hour')");
    Report::new("late-1", &bucket)
        .with_series("cpu.usage_percent", Some(12.5))
        .ingest(&mut agent)
        .expect("expected the agent role to store an on-time report");
    let late_time = one(&cluster, &format!("SELECT ('{bucket}'::timestamptz + interval '90 seconds')::text"));
    Report::new("late-1", &late_time)
        .with_series("cpu.usage_percent", Some(97.25))
        .ingest(&mut agent)
        .expect("expected the agent role to store a late report");
    cluster.run_job_and_wait("rollup_metrics_5min", JOB_TIMEOUT);
    cluster.run_job_and_wait("rollup_metrics_1hour", JOB_TIMEOUT);
    let fixed = one(
        &cluster,
        &format!(
            "SELECT max || '/' || count FROM secumon.metrics_5min
              WHERE agent_id = 'late-1' AND metric_name = 'usage_percent' AND bucket = '{bucket}'"
        ),
    );
    assert_eq!(fixed, "97.25/2", "expected the late report in its 5-minute bucket");
    let hour = one(
        &cluster,
        &format!(
            "SELECT max || '/' || count FROM secumon.metrics_1hour
              WHERE agent_id = 'late-1' AND metric_name = 'usage_percent' AND bucket = secumon._bucket('1 hour', '{bucket}')"
        ),
    );
    assert_eq!(hour, "97.25/2", "expected the late report in its hour");
    let pending = one(&cluster, "SELECT count(*) FROM secumon._rollup_invalidations WHERE rollup_name = 'metrics_5min'");
    assert_eq!(pending, "0", "expected no invalidated bucket left behind");
}

#[test]
fn compression_job_keeps_every_answer_and_a_late_report_survives() {
    let cluster = Cluster::start();
    generate(
        &cluster,
        "c",
        2,
        "date_trunc('day', now()) - interval '3 days'",
        "date_trunc('day', now()) - interval '2 days'",
        "interval '60 seconds'",
    );
    wait_for_drain(&cluster);
    let day = "date_trunc('day', now()) - interval '3 days'";
    let queries = [
        "SELECT * FROM secumon.metrics WHERE agent_id LIKE 'c%'".to_string(),
        "SELECT * FROM secumon.disk_metrics WHERE agent_id LIKE 'c%'".to_string(),
        "SELECT * FROM secumon.network_metrics WHERE agent_id LIKE 'c%'".to_string(),
        "SELECT * FROM secumon.process_metrics WHERE agent_id LIKE 'c%'".to_string(),
        format!("SELECT * FROM secumon.series('c1', 'cpu.usage_percent', {day}, {day} + interval '1 day', 100000)"),
        format!("SELECT * FROM secumon.rate('c2', 'network.bytes_sent', {day}, {day} + interval '1 day', 100000)"),
        format!("SELECT * FROM secumon.percentiles('c1', 'memory.usage_percent', {day} + interval '1 minute', {day} + interval '23 hours')"),
    ];
    let snapshot = |q: &str| one(&cluster, &format!("SELECT coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), 'empty') FROM ({q}) r"));
    let before: Vec<String> = queries.iter().map(|q| snapshot(q)).collect();

    cluster.psql("UPDATE secumon.storage_policies SET compress_after = '1 day' WHERE kind = 'raw'");
    for table in PARTITIONED_TABLES {
        cluster.run_job_and_wait(&format!("compress_{table}"), JOB_TIMEOUT);
    }
    let compressed = one(&cluster, &format!("SELECT count(*) FROM secumon.partitions WHERE compressed AND range_start = {day}"));
    assert_eq!(compressed, "4", "expected the day of all four tables compressed; partitions: {:?}",
        cluster.psql("SELECT partition_name, compressed FROM secumon.partitions WHERE NOT is_default ORDER BY 1"));
    for (q, b) in queries.iter().zip(&before) {
        assert_ne!(b, "empty", "expected rows from {q}");
        assert_eq!(&snapshot(q), b, "expected the same answer after compression: {q}");
    }
    if timescaledb_backend() {
        // TimescaleDB's columnstore, on a day of two agents: smaller, without a ratio to reach.
        let grown = cluster.psql(
            "SELECT s.* FROM unnest(ARRAY['metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics']) t,
                    LATERAL chunk_compression_stats(format('secumon_partitions.%I', t)::regclass) s
              WHERE s.compression_status = 'Compressed' AND s.after_compression_total_bytes >= s.before_compression_total_bytes",
        );
        assert!(grown.is_empty(), "expected every compressed chunk smaller than before: {grown:?}");
    } else {
        let sizes = cluster.psql(
            "SELECT partition_name, heap_bytes, compressed_bytes FROM secumon.compressed_partitions
              WHERE compressed_bytes * 10 > heap_bytes",
        );
        assert!(sizes.is_empty(), "expected every compressed day at least 90 % smaller than its heap: {sizes:?}");
    }

    // A late report for the compressed day, from an agent role: the day takes it (decompressed
    // on the partitions backend, a partial chunk on TimescaleDB) and the next compression run
    // compresses the day again.
    let role = cluster.create_agent_role("replaying_agent");
    let mut agent = cluster.client_for(&role);
    register_agent(&mut agent, "replayer").expect("expected registration");
    let late = one(&cluster, &format!("SELECT ({day} + interval '12 hours 5 seconds')::text"));
    let stored = Report::sample("replayer", &late).ingest(&mut agent).expect("expected the late report to be stored");
    assert!(stored);
    let replay = Report::sample("replayer", &late).ingest(&mut agent).expect("expected a replay to succeed");
    assert!(!replay, "expected a replay of the same report to store nothing");
    cluster.run_job_and_wait("compress_metric_samples", JOB_TIMEOUT);
    let kept = one(&cluster, &format!(
        "SELECT count(*) || '/' || (SELECT compressed FROM secumon.partitions WHERE table_name = 'metric_samples' AND range_start = {day})
           FROM secumon.metrics WHERE agent_id = 'replayer' AND time = '{late}'"
    ));
    assert_eq!(kept, format!("{}/true", Report::sample("x", "now").series.len()), "expected the late report kept in the recompressed day");
    assert_eq!(snapshot(&queries[0]), before[0], "expected the other agents' data unchanged");
}

#[test]
fn retention_job_drops_expired_days_once_rollups_have_them() {
    let cluster = Cluster::start();
    cluster.psql("UPDATE secumon.rollups SET late_margin = '0'");
    // A refresh before the data arrives, so that the data is late for the rollups.
    cluster.run_job_and_wait("rollup_metrics_5min", JOB_TIMEOUT);
    // Each hour within one UTC day, whatever the time of day the test runs.
    generate(&cluster, "r", 1, "date_trunc('day', now()) - interval '40 days' + interval '1 hour'", "date_trunc('day', now()) - interval '40 days' + interval '2 hours'", "interval '5 minutes'");
    generate(&cluster, "r", 1, "date_trunc('day', now()) - interval '20 days' + interval '1 hour'", "date_trunc('day', now()) - interval '20 days' + interval '2 hours'", "interval '5 minutes'");
    wait_for_drain(&cluster);
    let old_days = || one(&cluster, "SELECT count(*) FROM secumon.partitions WHERE table_name = 'metric_samples' AND range_end < now() - interval '10 days'");
    assert_eq!(old_days(), "2");

    // Both days arrived after the last refresh: the 40-day-old one is expired but not rolled up.
    cluster.run_job_and_wait("retention_metric_samples", JOB_TIMEOUT);
    assert_eq!(old_days(), "2", "expected retention to keep a day the rollups have not seen; {}", cluster.job("retention_metric_samples"));
    assert!(cluster.job("retention_metric_samples")["last_result"].as_str().unwrap_or("").contains("kept"));

    cluster.run_job_and_wait("rollup_metrics_5min", JOB_TIMEOUT);
    cluster.run_job_and_wait("retention_metric_samples", JOB_TIMEOUT);
    assert_eq!(old_days(), "1", "expected only the 40-day-old day dropped; {}", cluster.job("retention_metric_samples"));
    let rolled = one(&cluster, "SELECT count(*) FROM secumon.metrics_5min WHERE agent_id = 'r1' AND bucket < now() - interval '30 days'");
    assert_ne!(rolled, "0", "expected the 5-minute rollups of the dropped day to stay");
    let next = one(&cluster, "SELECT extract(hour FROM next_run AT TIME ZONE 'UTC') FROM secumon.jobs WHERE job_name = 'retention_metric_samples'");
    assert_eq!(next, "4", "expected the next retention run at 04:00 UTC");
}

#[test]
fn the_real_agent_feeds_the_seed_endpoints() {
    let cluster = Cluster::start_with(&[("secumon.auth_required", "off")]);
    let role = cluster.create_agent_role("feeder");
    let mut config = cluster
        .agent_config(&role)
        .agent_id("feeder-host")
        .interval("1s")
        .line("[[probe]]")
        .line(&format!("tcp = \"127.0.0.1:{}\"", cluster.port()))
        .line("[[exec]]")
        .line(r#"command = ["/bin/echo", "feeder_queue_depth{queue=\"mail\"} 3"]"#);
    if non_loopback_interfaces().is_empty() {
        config = config.line("[network]").line("include_loopback = true");
    }
    let agent = cluster.agent(&config);
    for _ in 0..2 {
        let output = agent.run_once();
        assert!(output.status.success(), "expected `secumon-agent --once` to succeed: {}", stderr_text(&output));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let reader = cluster.create_login_role("dashboard_reader", &["secumon_reader"]);
    let mut client = cluster.client_for(&reader);
    let q = |client: &mut postgres::Client, sql: &str| -> i64 {
        client
            .query_one(&format!("SELECT count(*) FROM ({sql}) x"), &[])
            .unwrap_or_else(|e| panic!("expected `{sql}` to work for a reader: {}", error_text(&e)))
            .get(0)
    };
    assert_eq!(q(&mut client, "SELECT * FROM secumon.list_agents() WHERE agent_id = 'feeder-host' AND status = 'online'"), 1);
    assert!(q(&mut client, "SELECT * FROM secumon.latest_metrics('feeder-host')") >= 10, "expected the newest report's series");
    assert!(q(&mut client, "SELECT * FROM secumon.agent_disks('feeder-host')") >= 1);
    assert!(q(&mut client, "SELECT * FROM secumon.agent_networks('feeder-host')") >= 1);
    assert!(q(&mut client, "SELECT * FROM secumon.agent_processes('feeder-host', 5)") >= 1);
    assert!(q(&mut client, "SELECT * FROM secumon.metric_history('feeder-host', 'cpu.usage_percent')") >= 1);
    assert!(q(&mut client, "SELECT * FROM secumon.series('feeder-host', 'memory.usage_percent', now() - interval '1 hour', now())") >= 1);
    assert!(q(&mut client, "SELECT * FROM secumon.metrics_5min WHERE agent_id = 'feeder-host'") >= 10, "expected the real-time rollup of the newest minutes");
    assert!(q(&mut client, "SELECT * FROM secumon.top_agents('cpu.usage_percent', now() - interval '10 minutes', now(), 5, 'last')") >= 1);
    assert_eq!(q(&mut client, "SELECT * FROM secumon.health()"), 1);
    assert_sqlstate(
        client.query("SELECT * FROM secumon.series('feeder-host', 'cpu.usage_percent', now(), now() - interval '1 hour')", &[]),
        "22023",
        "series() with from_time after to_time",
    );
    assert_sqlstate(
        client.query("SELECT * FROM secumon.series('feeder-host', 'cpu.usage_percent', now() - interval '1 hour', now(), 0)", &[]),
        "22023",
        "series() with max_points 0",
    );
    assert_sqlstate(client.query("SELECT * FROM secumon.latest_metrics('no-such-host')", &[]), "P0002", "an unknown agent");
    assert_sqlstate(client.query("SELECT * FROM secumon.latest_metrics(NULL)", &[]), "22004", "a NULL agent");
    assert_sqlstate(client.query("SELECT secumon.run_job('rollup_metrics_5min')", &[]), "42501", "a reader running a job");

    // Every query of the shipped Grafana dashboard runs for a reader, with Grafana's macros
    // expanded as the PostgreSQL data source does.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/secumon-host-overview.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("expected docs/grafana/secumon-host-overview.json"))
            .expect("expected the dashboard to be JSON");
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("expected panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["rawSql"].as_str().map(str::to_string))
        .collect();
    for variable in dashboard["templating"]["list"].as_array().expect("expected the variables") {
        queries.push(variable["query"].as_str().expect("expected a variable query").to_string());
    }
    assert!(queries.len() >= 10, "expected the dashboard's panel queries");
    for raw in queries {
        let sql = raw
            .replace("$__timeFrom()", "(now() - interval '6 hours')")
            .replace("$__timeTo()", "now()")
            .replace("$__unixEpochFrom()", "extract(epoch FROM now() - interval '6 hours')::bigint")
            .replace("$__unixEpochTo()", "extract(epoch FROM now())::bigint")
            .replace("$__interval_ms", "20000")
            .replace("$agent", "feeder-host")
            .replace("$series", r#"'custom.feeder_queue_depth{queue="mail"}'"#);
        let rows = q(&mut client, &sql);
        assert!(rows >= 1, "expected rows from the dashboard query {sql}");
    }
}
