//! The timescaledb storage backend (docs/timescaledb.md) against the partitions backend, on
//! clusters that preload TimescaleDB 2.28.3 (`../shared/timescaledb/install.sh`). The storage,
//! alerting, tenancy and dump/restore suites also run whole on this backend
//! (SECUMON_TEST_BACKEND=timescaledb, scripts/test.sh); these tests check what only it has: the
//! same answers as the plain backend on the same data, hypertables with the plain indexes,
//! tenants kept out of hypertables and chunks, and the Apache-licensed build.

use secumon_e2e::*;

const RAW_TABLES: [&str; 4] = ["metric_samples", "disk_metrics", "network_metrics", "process_metrics"];

/// A cluster preloading TimescaleDB and SecuMon, with `CREATE EXTENSION timescaledb` and then
/// `secumon` in the workers' database.
fn timescaledb_cluster(license: &str) -> Cluster {
    let cluster = Cluster::builder()
        .without_create_extension()
        .setting("shared_preload_libraries", "timescaledb,secumon")
        .setting("timescaledb.telemetry_level", "off")
        .setting("timescaledb.license", license)
        .setting("max_worker_processes", "16")
        // No worker in the tested databases: every step below is taken by the test, the same
        // in both databases.
        .setting("secumon.database", "postgres")
        .start();
    cluster.psql("CREATE EXTENSION timescaledb");
    cluster.psql("CREATE EXTENSION secumon");
    cluster
}

fn history(prefix: &str, day: &str) -> String {
    history_sql(
        prefix,
        2,
        &[(format!("'{day}'::timestamptz + interval '1 hour'"), format!("'{day}'::timestamptz + interval '5 hours'"))],
        "interval '30 seconds'",
    )
}

#[test]
fn both_backends_give_the_same_answers_on_the_same_data() {
    let cluster = timescaledb_cluster("timescale");
    // The plain backend: a database without timescaledb, in the same cluster.
    cluster.psql("CREATE DATABASE plain");
    psql_on(&cluster, "plain", "CREATE EXTENSION secumon");
    // Two days ago, from 01:00 to 05:00 UTC: the same instants in both databases.
    let day = cluster.psql_one("SELECT date_trunc('day', now()) - interval '2 days'");
    for db in [TEST_DATABASE, "plain"] {
        psql_on(&cluster, db, &history("b", &day));
    }
    assert_eq!(psql_one_on(&cluster, TEST_DATABASE, "SELECT secumon.health()->'storage'->>'backend'"), "timescaledb");
    assert_eq!(psql_one_on(&cluster, "plain", "SELECT secumon.health()->'storage'->>'backend'"), "partitions");
    assert_eq!(
        psql_one_on(&cluster, "plain", "SELECT coalesce(secumon.health()->'storage'->>'warning', 'none')"),
        "none",
        "expected no warning where timescaledb is not in the database"
    );

    let from = format!("'{day}'::timestamptz");
    let to = format!("'{day}'::timestamptz + interval '1 day'");
    let queries = [
        "SELECT * FROM secumon.metrics WHERE agent_id LIKE 'b%'".to_string(),
        "SELECT * FROM secumon.disk_metrics".to_string(),
        "SELECT * FROM secumon.network_metrics".to_string(),
        "SELECT * FROM secumon.process_metrics".to_string(),
        "SELECT * FROM secumon.metrics_5min".to_string(),
        "SELECT * FROM secumon.metrics_1hour".to_string(),
        "SELECT * FROM secumon.disk_metrics_1hour".to_string(),
        "SELECT * FROM secumon.network_metrics_1hour".to_string(),
        format!("SELECT * FROM secumon.series('b1', 'cpu.usage_percent', {from}, {to}, 100000)"),
        format!("SELECT * FROM secumon.series('b2', 'memory.usage_percent', {from}, {to}, 50)"),
        format!("SELECT * FROM secumon.series('b1', 'disk.usage_percent', {from}, {to}, 100000)"),
        format!("SELECT * FROM secumon.rate('b2', 'network.bytes_sent', {from}, {to}, 100000)"),
        format!("SELECT * FROM secumon.rate('b1', 'cpu.context_switches', {from}, {to}, 20)"),
        format!("SELECT * FROM secumon.percentiles('b1', 'memory.usage_percent', {from} + interval '61 minutes', {from} + interval '4 hours')"),
        format!("SELECT * FROM secumon.metric_history('b2', 'cpu.usage_percent', {from}, {to}, 500)"),
        format!("SELECT * FROM secumon.top_agents('cpu.usage_percent', {from}, {to}, 10, 'max')"),
        "SELECT * FROM secumon.latest_metrics('b1')".to_string(),
        "SELECT * FROM secumon.agent_disks('b1')".to_string(),
        "SELECT * FROM secumon.agent_networks('b2')".to_string(),
        "SELECT * FROM secumon.agent_processes('b2', 5)".to_string(),
        format!("SELECT * FROM secumon.test_rule('cpu.usage_percent', 'gt', 80, '2 minutes', {from}, {to})"),
        format!("SELECT * FROM secumon.test_rule('network.bytes_sent', 'gt', 10, '1 minute', {from}, {to})"),
    ];
    let answer = |db: &str, q: &str| {
        psql_one_on(
            &cluster,
            db,
            // Every column but the time of arrival, which differs between the two databases.
            &format!(
                "SELECT count(*) || ' ' || coalesce(md5(string_agg(j::text, E'\\n' ORDER BY j::text)), '')
                   FROM ({q}) r, LATERAL (SELECT to_jsonb(r) - 'ingested_at' AS j) x"
            ),
        )
    };
    for q in &queries {
        let plain = answer("plain", q);
        assert!(!plain.starts_with("0 "), "expected rows from {q}");
        assert_eq!(answer(TEST_DATABASE, q), plain, "expected the same answer from both backends: {q}");
    }

    // Rolled up, then compressed, on both: still the same answers.
    psql_on(&cluster, "plain", "SELECT secumon._partition_upkeep()");
    for db in [TEST_DATABASE, "plain"] {
        for rollup in ["metrics_5min", "metrics_1hour", "disk_metrics_1hour", "network_metrics_1hour"] {
            psql_on(&cluster, db, &format!("SELECT secumon.refresh_rollup('{rollup}')"));
        }
    }
    for q in &queries {
        assert_eq!(answer(TEST_DATABASE, q), answer("plain", q), "expected the same answer from both backends once rolled up: {q}");
    }
    for db in [TEST_DATABASE, "plain"] {
        psql_on(&cluster, db, "UPDATE secumon.storage_policies SET compress_after = '1 day' WHERE kind = 'raw'");
        for table in RAW_TABLES {
            psql_on(&cluster, db, &format!("SELECT secumon._compress_due('{table}')"));
        }
        assert_eq!(
            psql_one_on(&cluster, db, &format!("SELECT count(*) FROM secumon.partitions WHERE compressed AND range_start = {from}")),
            "4",
            "expected the day compressed in all four tables of {db}"
        );
    }
    for q in &queries {
        assert_eq!(answer(TEST_DATABASE, q), answer("plain", q), "expected the same answer from both backends once compressed: {q}");
    }
}

#[test]
fn hypertables_carry_the_plain_indexes_and_tenants_reach_rows_only_through_the_views() {
    let cluster = timescaledb_cluster("timescale");
    let day = cluster.psql_one("SELECT date_trunc('day', now()) - interval '1 day'");
    cluster.psql(&history("t", &day));
    cluster.psql("INSERT INTO secumon.tenants (tenant_id, name) VALUES ('acme', 'Acme')");
    cluster.psql("UPDATE secumon.agents SET tenant_id = 'acme' WHERE agent_id = 't1'");
    cluster.psql("SELECT secumon.create_user('alice', 'password-of-alice', 'readonly', NULL, 'acme')");

    let hypertables = cluster.psql(
        "SELECT hypertable_name, d.time_interval FROM timescaledb_information.hypertables h
           JOIN timescaledb_information.dimensions d USING (hypertable_schema, hypertable_name)
          WHERE h.hypertable_schema = 'secumon_partitions' ORDER BY 1",
    );
    let expected: Vec<Vec<Option<String>>> = ["disk_metrics", "metric_samples", "network_metrics", "process_metrics"]
        .iter()
        .map(|t| vec![Some(t.to_string()), Some("1 day".to_string())])
        .collect();
    assert_eq!(hypertables, expected, "expected the four raw tables as hypertables of one-day chunks");
    // The indexes a plain day partition gets, on the hypertable and so on each chunk.
    let missing = cluster.psql(
        "SELECT t, ix.suffix FROM unnest(ARRAY['metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics']) t,
                LATERAL secumon._partition_indexes(t) ix
          WHERE to_regclass(format('secumon_partitions.%I', t || '_' || ix.suffix)) IS NULL",
    );
    assert!(missing.is_empty(), "expected every plain-backend index on the hypertables: {missing:?}");
    let duplicate = cluster
        .client()
        .batch_execute("INSERT INTO secumon_partitions.metric_samples SELECT * FROM secumon_partitions.metric_samples LIMIT 1");
    assert_eq!(sqlstate(&duplicate), Some("23505".to_string()), "expected the unique (agent_key, time) index to hold in a chunk");

    // A reader of tenant acme: its agent only, through every relation; nothing underneath.
    let web = cluster.create_login_role("web_alice", &["secumon_web", "secumon_reader"]);
    let mut alice = cluster.client_for(&web);
    let token: String = alice
        .query_one("SELECT token FROM secumon.login('alice', 'password-of-alice')", &[])
        .unwrap_or_else(|e| panic!("expected alice to log in: {}", error_text(&e)))
        .get(0);
    alice.query_one("SELECT secumon.authenticate($1)", &[&token]).expect("expected the token to authenticate");
    for relation in ["secumon.metrics", "secumon.metric_samples", "secumon.disk_metrics", "secumon.network_metrics", "secumon.process_metrics"] {
        let column = if relation == "secumon.metric_samples" {
            "(SELECT agent_id FROM secumon.agents a WHERE a.agent_key = r.agent_key)"
        } else {
            "r.agent_id"
        };
        let seen: Vec<String> = alice
            .query(&format!("SELECT DISTINCT {column} FROM {relation} r"), &[])
            .unwrap_or_else(|e| panic!("expected alice to read {relation}: {}", error_text(&e)))
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(seen, vec!["t1".to_string()], "expected only acme's agent in {relation}");
    }
    let chunk = cluster.psql_one("SELECT partition FROM secumon.partitions WHERE table_name = 'disk_metrics' LIMIT 1");
    for relation in ["secumon_partitions.metric_samples", "secumon_partitions.disk_metrics", chunk.as_str()] {
        let denied = alice.batch_execute(&format!("SELECT * FROM {relation}"));
        assert_eq!(sqlstate(&denied), Some("42501".to_string()), "expected no client access to {relation}");
    }
    let unknown = alice.batch_execute("SELECT * FROM secumon.series('t2', 'cpu.usage_percent', now() - interval '3 days', now())");
    assert_eq!(sqlstate(&unknown), Some("P0002".to_string()), "expected another tenant's agent to be unknown to alice");
}

#[test]
fn the_apache_build_keeps_hypertables_uncompressed_and_health_says_so() {
    let cluster = timescaledb_cluster("apache");
    let day = cluster.psql_one("SELECT date_trunc('day', now()) - interval '3 days'");
    cluster.psql(&history("a", &day));
    let storage = cluster.psql_one("SELECT secumon.health()->'storage'");
    let storage: serde_json::Value = serde_json::from_str(&storage).expect("health() is JSON");
    assert_eq!(storage["backend"], "timescaledb");
    assert_eq!(storage["timescaledb_license"], "apache");
    assert_eq!(storage["relations"]["metric_samples"]["compression"], "none (TimescaleDB Apache license)");
    assert!(storage["warning"].as_str().unwrap_or("").contains("apache license"), "{storage}");

    cluster.psql("UPDATE secumon.storage_policies SET compress_after = '1 day' WHERE kind = 'raw'");
    let result = cluster.psql_one("SELECT secumon._compress_due('metric_samples')");
    assert!(result.contains("needs the Timescale license"), "{result}");
    let chunk = cluster.psql_one("SELECT partition FROM secumon.partitions WHERE table_name = 'metric_samples' LIMIT 1");
    let refused = cluster.client().batch_execute(&format!("SELECT secumon.compress_partition('{chunk}')"));
    assert_eq!(sqlstate(&refused), Some("0A000".to_string()), "expected compress_partition refused under the Apache license");

    // Retention is SecuMon's on this backend: it drops the expired chunk (drop_chunks).
    cluster.psql("UPDATE secumon.rollups SET late_margin = '0'");
    cluster.psql("UPDATE secumon.storage_policies SET retention = '2 days' WHERE table_name = 'metric_samples'");
    for rollup in ["metrics_5min", "metrics_1hour"] {
        cluster.psql(&format!("SELECT secumon.refresh_rollup('{rollup}')"));
    }
    let result = cluster.psql_one("SELECT secumon.apply_retention('metric_samples')");
    assert!(result.starts_with("metric_samples: 1 partitions"), "{result}");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.partitions WHERE table_name = 'metric_samples'"), "0");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.metrics"), "0");
    assert_ne!(
        cluster.psql_one("SELECT count(*) FROM secumon.metrics_5min WHERE agent_id = 'a1'"),
        "0",
        "expected the rollups of the dropped chunk to stay"
    );
}

fn sqlstate(result: &Result<(), postgres::Error>) -> Option<String> {
    result.as_ref().err().and_then(|e| e.code()).map(|c| c.code().to_string())
}
