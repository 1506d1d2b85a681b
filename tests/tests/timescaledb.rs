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

/// Row count and md5 of the rows `query` returns in database `db`, without the columns `except`.
fn digest(cluster: &Cluster, db: &str, query: &str, except: &[&str]) -> String {
    let minus: String = except.iter().map(|c| format!(" - '{c}'")).collect();
    psql_one_on(
        cluster,
        db,
        &format!(
            "SELECT count(*) || ' ' || coalesce(md5(string_agg(j::text, E'\\n' ORDER BY j::text)), '')
               FROM ({query}) r, LATERAL (SELECT to_jsonb(r){minus} AS j) x"
        ),
    )
}

/// Every rollup, finer ones first (the hourly metrics rollup is built from the 5-minute one).
const ALL_ROLLUPS: [&str; 4] = ["metrics_5min", "metrics_1hour", "disk_metrics_1hour", "network_metrics_1hour"];

/// Refreshes `rollups` of database `db` now, in order (secumon.refresh_rollup).
fn refresh(cluster: &Cluster, db: &str, rollups: &[&str]) {
    for rollup in rollups {
        psql_on(cluster, db, &format!("SELECT secumon.refresh_rollup('{rollup}')"));
    }
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

    // A reader lists the partitions, or the chunks, on both.
    cluster.psql("CREATE ROLE part_reader LOGIN IN ROLE secumon_reader");
    for db in [TEST_DATABASE, "plain"] {
        psql_on(&cluster, db, "SET ROLE part_reader; SELECT count(*) FROM secumon.partitions; RESET ROLE");
    }

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
    // Every column but the time of arrival, which differs between the two databases.
    let answer = |db: &str, q: &str| digest(&cluster, db, q, &["ingested_at"]);
    for q in &queries {
        let plain = answer("plain", q);
        assert!(!plain.starts_with("0 "), "expected rows from {q}");
        assert_eq!(answer(TEST_DATABASE, q), plain, "expected the same answer from both backends: {q}");
    }

    // Rolled up, then compressed, on both: still the same answers.
    psql_on(&cluster, "plain", "SELECT secumon._partition_upkeep()");
    for db in [TEST_DATABASE, "plain"] {
        refresh(&cluster, db, &ALL_ROLLUPS);
    }
    for q in &queries {
        assert_eq!(answer(TEST_DATABASE, q), answer("plain", q), "expected the same answer from both backends once rolled up: {q}");
    }
    // There, three rollups are continuous aggregates, which hold exactly what SecuMon's own
    // rollups hold: a GROUP BY over the raw rows, byte for byte.
    assert_eq!(
        cluster.psql(
            "SELECT view_name, materialized_only::text, materialization_hypertable_name
               FROM timescaledb_information.continuous_aggregates WHERE view_schema = 'secumon_partitions' ORDER BY 1"
        ),
        [["disk_rollup_1hour_cagg", "true", "disk_rollup_1hour"], ["metric_rollup_1hour_cagg", "true", "metric_rollup_1hour"],
         ["metric_rollup_5min_cagg", "true", "metric_rollup_5min"]]
            .iter()
            .map(|row| row.iter().map(|v| Some(v.to_string())).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        "expected the 5-minute, hourly and disk rollups as materialised-only continuous aggregates"
    );
    assert_eq!(
        psql_one_on(&cluster, TEST_DATABASE, "SELECT secumon.health()->'storage'->'relations'->'metrics_5min'->>'backend'"),
        "timescaledb continuous aggregate"
    );
    for (rollup, grouped) in [
        ("metric_rollup_5min", "SELECT bucket, agent_key, summary FROM secumon._metric_summaries_from_raw('5 minutes', '-infinity', 'infinity')"),
        ("metric_rollup_1hour", "SELECT secumon._bucket('1 hour', bucket) AS bucket, agent_key, secumon._summary_merge(summary ORDER BY bucket) AS summary
                                   FROM secumon._metric_summaries_from_raw('5 minutes', '-infinity', 'infinity') GROUP BY 1, 2"),
        ("disk_rollup_1hour", "SELECT * FROM secumon._disk_rollup_rows('-infinity', 'infinity')"),
    ] {
        let materialised = digest(&cluster, TEST_DATABASE, &format!("SELECT * FROM secumon_partitions.{rollup}"), &[]);
        let from_raw = digest(&cluster, TEST_DATABASE, grouped, &[]);
        assert!(!materialised.starts_with("0 "), "expected {rollup} materialised");
        assert_eq!(materialised, from_raw, "expected {rollup} to equal a GROUP BY over the raw rows");
        assert_eq!(
            materialised,
            digest(&cluster, "plain", &format!("SELECT * FROM secumon.{rollup}"), &[]),
            "expected {rollup} to equal SecuMon's own rollup of the plain database"
        );
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

    // A reader of tenant acme: its agent only, through every relation (the continuous
    // aggregates' too); nothing underneath.
    refresh(&cluster, TEST_DATABASE, &["metrics_5min", "metrics_1hour", "disk_metrics_1hour"]);
    let web = cluster.create_login_role("web_alice", &["secumon_web", "secumon_reader"]);
    let mut alice = cluster.client_for(&web);
    let token: String = alice
        .query_one("SELECT token FROM secumon.login('alice', 'password-of-alice')", &[])
        .unwrap_or_else(|e| panic!("expected alice to log in: {}", error_text(&e)))
        .get(0);
    alice.query_one("SELECT secumon.authenticate($1)", &[&token]).expect("expected the token to authenticate");
    for relation in ["secumon.metrics", "secumon.metric_samples", "secumon.disk_metrics", "secumon.network_metrics", "secumon.process_metrics",
                     "secumon.metric_rollup_5min", "secumon.metric_rollup_1hour", "secumon.disk_rollup_1hour"] {
        let column = if relation.starts_with("secumon.metric_") {
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
    // A function of hers in a condition sees no row before the tenant filter has run, however
    // cheap she declares it.
    alice
        .batch_execute(
            "CREATE TEMP TABLE seen (agent text);
             CREATE FUNCTION pg_temp.peek(agent text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
             $$ BEGIN INSERT INTO pg_temp.seen VALUES (agent); RETURN true; END $$;",
        )
        .unwrap_or_else(|e| panic!("expected alice to create a temporary function: {}", error_text(&e)));
    for relation in ["secumon.metrics", "secumon.disk_metrics", "secumon.network_metrics", "secumon.process_metrics"] {
        alice
            .batch_execute(&format!("SELECT count(*) FROM {relation} WHERE pg_temp.peek(agent_id)"))
            .unwrap_or_else(|e| panic!("expected alice's query of {relation} to run: {}", error_text(&e)));
    }
    let peeked: Vec<String> = alice.query("SELECT DISTINCT agent FROM pg_temp.seen", &[]).expect("seen").iter().map(|r| r.get(0)).collect();
    assert_eq!(peeked, vec!["t1".to_string()], "expected alice's function to see only acme's rows");
    // Whatever a DBA grants on the views, a tenant's session writes no metric row.
    cluster.psql("GRANT INSERT, UPDATE ON secumon.disk_metrics TO web_alice");
    let write = alice.batch_execute("INSERT INTO secumon.disk_metrics (time, agent_id, device, mountpoint) VALUES (now(), 't2', '/dev/x', '/')");
    assert_eq!(sqlstate(&write), Some("42501".to_string()), "expected a tenant's INSERT refused as row-level security refuses it");
    let write = alice.batch_execute("UPDATE secumon.disk_metrics SET usage_percent = 0");
    assert_eq!(sqlstate(&write), Some("42501".to_string()), "expected a tenant's UPDATE refused");
    let chunk = cluster.psql_one("SELECT partition FROM secumon.partitions WHERE table_name = 'disk_metrics' LIMIT 1");
    let rollup_chunk = cluster.psql_one("SELECT partition FROM secumon.partitions WHERE table_name = 'metric_rollup_5min' LIMIT 1");
    for relation in ["secumon_partitions.metric_samples", "secumon_partitions.disk_metrics", chunk.as_str(),
                     "secumon_partitions.metric_rollup_5min_cagg", "secumon_partitions.metric_rollup_5min", rollup_chunk.as_str()] {
        let denied = alice.batch_execute(&format!("SELECT * FROM {relation}"));
        assert_eq!(sqlstate(&denied), Some("42501".to_string()), "expected no client access to {relation}");
    }
    let unknown = alice.batch_execute("SELECT * FROM secumon.series('t2', 'cpu.usage_percent', now() - interval '3 days', now())");
    assert_eq!(sqlstate(&unknown), Some("P0002".to_string()), "expected another tenant's agent to be unknown to alice");
}

#[test]
fn the_apache_build_keeps_hypertables_uncompressed_and_health_says_so() {
    let mut cluster = timescaledb_cluster("apache");
    let day = cluster.psql_one("SELECT date_trunc('day', now()) - interval '3 days'");
    cluster.psql(&history("a", &day));
    let storage = cluster.psql_one("SELECT secumon.health()->'storage'");
    let storage: serde_json::Value = serde_json::from_str(&storage).expect("health() is JSON");
    assert_eq!(storage["backend"], "timescaledb");
    assert_eq!(storage["timescaledb_license"], "apache");
    assert_eq!(storage["relations"]["metric_samples"]["compression"], "none (TimescaleDB Apache license)");
    assert!(storage["warning"].as_str().unwrap_or("").contains("apache license"), "{storage}");
    // Continuous aggregates need the Timescale license: the rollups are SecuMon's.
    assert_eq!(storage["relations"]["metrics_5min"]["backend"], "partitions");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM timescaledb_information.continuous_aggregates"), "0");

    cluster.psql("UPDATE secumon.storage_policies SET compress_after = '1 day' WHERE kind = 'raw'");
    let result = cluster.psql_one("SELECT secumon._compress_due('metric_samples')");
    assert!(result.contains("needs the Timescale license"), "{result}");
    let chunk = cluster.psql_one("SELECT partition FROM secumon.partitions WHERE table_name = 'metric_samples' LIMIT 1");
    let refused = cluster.client().batch_execute(&format!("SELECT secumon.compress_partition('{chunk}')"));
    assert_eq!(sqlstate(&refused), Some("0A000".to_string()), "expected compress_partition refused under the Apache license");

    // Retention is SecuMon's on this backend: it drops the expired chunk (drop_chunks); below.
    cluster.psql("UPDATE secumon.rollups SET late_margin = '0'");
    cluster.psql("UPDATE secumon.storage_policies SET retention = '2 days' WHERE table_name = 'metric_samples'");
    refresh(&cluster, TEST_DATABASE, &["metrics_5min", "metrics_1hour"]);
    let result = cluster.psql_one("SELECT secumon.apply_retention('metric_samples')");
    assert!(result.starts_with("metric_samples: 1 partitions"), "{result}");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.partitions WHERE table_name = 'metric_samples'"), "0");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.metrics"), "0");
    assert_ne!(
        cluster.psql_one("SELECT count(*) FROM secumon.metrics_5min WHERE agent_id = 'a1'"),
        "0",
        "expected the rollups of the dropped chunk to stay"
    );

    // Licensed later: the first compression turns the columnstore on.
    cluster.psql(&history("l", &day));
    cluster.psql("ALTER SYSTEM SET timescaledb.license = 'timescale'");
    cluster.restart();
    let result = cluster.psql_one("SELECT secumon._compress_due('metric_samples')");
    assert!(result.contains("1 days compressed"), "{result}");
}

#[test]
fn a_plain_installation_moves_onto_timescaledb_keeping_every_row() {
    let cluster = Cluster::builder()
        .without_create_extension()
        .setting("shared_preload_libraries", "timescaledb,secumon")
        .setting("timescaledb.telemetry_level", "off")
        .setting("max_worker_processes", "16")
        .setting("secumon.database", "postgres")
        .start();
    // SecuMon first, with a compressed day, today's rows and a reader's rights.
    cluster.psql("CREATE EXTENSION secumon");
    let day = cluster.psql_one("SELECT date_trunc('day', now()) - interval '3 days'");
    cluster.psql(&history("m", &day));
    cluster.psql(&history_sql("m", 2, &[("now() - interval '20 minutes'".into(), "now()".into())], "interval '1 minute'"));
    cluster.psql("SELECT secumon._partition_upkeep()");
    cluster.psql("UPDATE secumon.storage_policies SET compress_after = '1 day' WHERE kind = 'raw'");
    for table in RAW_TABLES {
        cluster.psql(&format!("SELECT secumon._compress_due('{table}')"));
    }
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.compressed_partitions"), "4");
    refresh(&cluster, TEST_DATABASE, &ALL_ROLLUPS);
    assert_ne!(cluster.psql_one("SELECT count(*) FROM secumon.metric_rollup_5min"), "0", "expected materialised buckets to move");
    cluster.psql(
        "CREATE ROLE dashboards; GRANT SELECT ON secumon.disk_metrics TO dashboards WITH GRANT OPTION;
         GRANT SELECT (agent_id, time) ON secumon.network_metrics TO dashboards;
         GRANT SELECT ON secumon.process_metrics TO PUBLIC;
         COMMENT ON COLUMN secumon.disk_metrics.usage_percent IS 'percent of the filesystem in use';
         CREATE VIEW public.my_disks AS SELECT agent_id, time, usage_percent FROM secumon.disk_metrics",
    );
    let queries = [
        "SELECT * FROM secumon.metrics",
        "SELECT * FROM secumon.disk_metrics",
        "SELECT * FROM secumon.network_metrics",
        "SELECT * FROM secumon.process_metrics",
        "SELECT * FROM secumon.metrics_5min",
        "SELECT * FROM secumon.metrics_1hour",
        "SELECT * FROM secumon.disk_metrics_1hour",
        "SELECT * FROM secumon.series('m1', 'cpu.usage_percent', now() - interval '4 days', now(), 100000)",
    ];
    let answer = |q: &str| digest(&cluster, TEST_DATABASE, q, &[]);
    let before: Vec<String> = queries.iter().map(|q| answer(q)).collect();

    cluster.psql("CREATE EXTENSION timescaledb");
    let warning = cluster.psql_one("SELECT secumon.health()->'storage'->>'warning'");
    assert!(warning.contains("stay on the partitions backend"), "{warning}");
    // A view of the DBA's on a raw table would be lost: refused, and named.
    let blocked = cluster.client().batch_execute("SELECT secumon.adopt_timescaledb()");
    assert_eq!(sqlstate(&blocked), Some("2BP01".to_string()), "expected the move refused while a view depends on the tables");
    assert!(error_text(blocked.as_ref().unwrap_err()).contains("my_disks"), "{:?}", blocked);
    cluster.psql("DROP VIEW public.my_disks");
    let result = cluster.psql_one("SELECT secumon.adopt_timescaledb()");
    assert!(result.starts_with("moved to TimescaleDB hypertables"), "{result}");
    assert_eq!(cluster.psql_one("SELECT secumon.health()->'storage'->>'backend'"), "timescaledb");
    for (q, b) in queries.iter().zip(&before) {
        assert_eq!(&answer(q), b, "expected the same answer after the move: {q}");
    }
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.compressed_partitions"), "0");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM pg_class WHERE relname ~ '^(metric_samples|disk_metrics|network_metrics|process_metrics)_([pc]2|default)'"), "0",
               "expected no day partition or compressed day left behind");
    assert_eq!(cluster.psql_one("SELECT has_table_privilege('dashboards', 'secumon.disk_metrics', 'SELECT WITH GRANT OPTION')"), "t");
    assert_eq!(cluster.psql_one("SELECT has_column_privilege('dashboards', 'secumon.network_metrics', 'agent_id', 'SELECT')"), "t");
    assert_eq!(cluster.psql_one("SELECT has_table_privilege('public', 'secumon.process_metrics', 'SELECT')"), "t");
    assert_eq!(cluster.psql_one("SELECT col_description(attrelid, attnum) FROM pg_attribute WHERE attrelid = 'secumon.disk_metrics'::regclass AND attname = 'usage_percent'"), "percent of the filesystem in use");
    cluster.psql(
        "REVOKE SELECT ON secumon.disk_metrics FROM dashboards CASCADE; REVOKE SELECT (agent_id, time) ON secumon.network_metrics FROM dashboards;
         REVOKE SELECT ON secumon.process_metrics FROM PUBLIC; COMMENT ON COLUMN secumon.disk_metrics.usage_percent IS NULL",
    );
    // The rollups became continuous aggregates, as on a fresh install, every bucket kept.
    assert_eq!(
        cluster.psql_one("SELECT string_agg(view_name, ',' ORDER BY view_name) FROM timescaledb_information.continuous_aggregates"),
        "disk_rollup_1hour_cagg,metric_rollup_1hour_cagg,metric_rollup_5min_cagg"
    );
    let again = cluster.client().batch_execute("SELECT secumon.adopt_timescaledb()");
    assert_eq!(sqlstate(&again), Some("55000".to_string()), "expected a second move refused");

    // What a database made on TimescaleDB from the start has, this one has now.
    cluster.psql("CREATE DATABASE fresh");
    psql_on(&cluster, "fresh", "CREATE EXTENSION timescaledb; CREATE EXTENSION secumon");
    let shape = "SELECT c.relnamespace::regnamespace || '.' || c.relname, c.relkind, array_to_string(ARRAY(SELECT x::text FROM unnest(c.relacl) x ORDER BY 1), ','),
                        coalesce(obj_description(c.oid, 'pg_class'), ''), coalesce(pg_get_viewdef(c.oid), ''), c.reloptions::text,
                        EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e')
                   FROM pg_class c
                  WHERE c.relnamespace IN ('secumon'::regnamespace, 'secumon_partitions'::regnamespace)
                    AND c.relname NOT LIKE 'metric\\_rollup%' AND c.relname NOT LIKE '%rollup\\_1hour%' AND c.relkind <> 'S'
                  UNION ALL
                 SELECT i.indexrelid::regclass::text, 'i', pg_get_indexdef(i.indexrelid), '', '', '', true
                   FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                  WHERE c.relnamespace = 'secumon_partitions'::regnamespace AND c.relname = ANY (ARRAY['metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics'])
                  UNION ALL
                 SELECT a.attrelid::regclass || '.' || a.attname, 'a', format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
                        coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attnum::text, true
                   FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attrelid = ANY (ARRAY['secumon_partitions.metric_samples', 'secumon_partitions.disk_metrics',
                                                'secumon_partitions.network_metrics', 'secumon_partitions.process_metrics']::regclass[])
                    AND a.attnum > 0 AND NOT a.attisdropped
                  UNION ALL
                 SELECT hypertable_name, 'h', (SELECT string_agg(d.time_interval::text, ',') FROM timescaledb_information.dimensions d
                                                WHERE d.hypertable_name = h.hypertable_name), compression_enabled::text, '', '', true
                   FROM timescaledb_information.hypertables h
                  ORDER BY 1, 2, 3";
    let fresh = psql_on(&cluster, "fresh", shape);
    let moved = cluster.psql(shape);
    let only = |a: &Rows, b: &Rows| a.iter().filter(|r| !b.contains(r)).cloned().collect::<Vec<_>>();
    assert!(
        fresh == moved,
        "expected the moved database shaped as a fresh one on TimescaleDB; only in the moved one: {:#?}\nonly in the fresh one: {:#?}",
        only(&moved, &fresh),
        only(&fresh, &moved)
    );

    // It dumps and restores as one (TimescaleDB's procedure), with the same answers.
    let dump = cluster.socket_dir().join("moved.dump");
    let dump_arg = dump.to_str().expect("temp paths are UTF-8");
    let dumped = cluster.run_client_program("pg_dump", &["-Fc", "-f", dump_arg, TEST_DATABASE]);
    assert!(dumped.status.success(), "expected pg_dump of the moved database to work: {}", stderr_text(&dumped));
    cluster.psql("CREATE DATABASE restored");
    psql_on(&cluster, "restored", "CREATE EXTENSION timescaledb; SELECT timescaledb_pre_restore()");
    let restored = cluster.run_client_program("pg_restore", &["-d", "restored", dump_arg]);
    assert!(restored.status.success(), "expected pg_restore of the moved database to work: {}", stderr_text(&restored));
    psql_on(&cluster, "restored", "SELECT timescaledb_post_restore()");
    for (q, b) in queries.iter().zip(&before) {
        assert_eq!(&digest(&cluster, "restored", q, &[]), b, "expected the same answer from the restored copy: {q}");
    }

    // And it works as one: a new report, compression of the moved day's chunk.
    cluster.psql(&history_sql("m", 2, &[("now() - interval '2 minutes'".into(), "now()".into())], "interval '30 seconds'"));
    assert!(cluster.psql_one("SELECT secumon._compress_due('metric_samples')").contains("compressed"));
    assert_eq!(
        cluster.psql_one("SELECT count(*) FROM secumon.partitions WHERE table_name = 'metric_samples' AND compressed"),
        "1"
    );

    // Refreshed by TimescaleDB from now on, the moved buckets stay, also those of a day whose
    // raw rows retention has dropped: refreshes never go below the raw rows' horizon.
    let day_5min = format!("SELECT * FROM secumon.metrics_5min WHERE bucket >= '{day}' AND bucket < '{day}'::timestamptz + interval '1 day'");
    let kept = answer(&day_5min);
    assert!(!kept.starts_with("0 "), "expected 5-minute buckets of the moved day");
    cluster.psql("UPDATE secumon.rollups SET late_margin = '0'");
    cluster.psql("UPDATE secumon.storage_policies SET retention = '2 days' WHERE table_name = 'metric_samples'");
    let result = cluster.psql_one("SELECT secumon.apply_retention('metric_samples')");
    assert!(result.starts_with("metric_samples: 1 partitions"), "{result}");
    refresh(&cluster, TEST_DATABASE, &["metrics_5min", "metrics_1hour"]);
    assert_eq!(answer(&day_5min), kept, "expected the buckets of the expired day to stay");
}

#[test]
fn drop_extension_takes_the_chunks_with_it_and_create_starts_afresh() {
    let cluster = timescaledb_cluster("timescale");
    let day = cluster.psql_one("SELECT date_trunc('day', now()) - interval '3 days'");
    cluster.psql(&history("d", &day));
    cluster.psql("UPDATE secumon.storage_policies SET compress_after = '1 day' WHERE kind = 'raw'");
    for table in RAW_TABLES {
        cluster.psql(&format!("SELECT secumon._compress_due('{table}')"));
    }
    let leftovers = "SELECT count(*) FROM pg_class WHERE relnamespace = '_timescaledb_internal'::regnamespace AND relname ~ '^(_hyper|compress_hyper|_compressed)'";
    assert_ne!(cluster.psql_one(leftovers), "0");
    // What a DBA types, without CASCADE, as on the partitions backend.
    cluster
        .client()
        .batch_execute("DROP EXTENSION secumon")
        .unwrap_or_else(|e| panic!("expected DROP EXTENSION secumon to work on the timescaledb backend: {}", error_text(&e)));
    assert_eq!(cluster.psql_one(leftovers), "0", "expected no chunk, compressed chunk or compressed hypertable left behind");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM _timescaledb_catalog.hypertable"), "0");
    cluster.psql("CREATE EXTENSION secumon");
    assert_eq!(cluster.psql_one("SELECT secumon.health()->'storage'->>'backend'"), "timescaledb");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.metrics"), "0");
    // Another statement that merely names secumon drops nothing, nor does anyone but an operator.
    cluster.psql(&history("e", &day));
    let nobody = cluster.create_login_role("nobody", &[]);
    let mut client = cluster.client_for(&nobody);
    client.batch_execute("DROP EXTENSION IF EXISTS secumon").expect_err("only the owner drops SecuMon");
    let mut client = cluster.client_for(&nobody);
    client.batch_execute("DROP EXTENSION IF EXISTS \"SECUMON\"").expect("no such extension: a notice");
    cluster.client().batch_execute("DROP EXTENSION IF EXISTS \"SECUMON\"").expect("no such extension: a notice");
    let refused = cluster.client().batch_execute("DROP EXTENSION timescaledb, secumon");
    assert!(refused.is_err(), "expected dropping both without CASCADE to be refused");
    assert_ne!(cluster.psql_one("SELECT count(*) FROM secumon.metrics"), "0", "expected the data kept");
}

fn sqlstate(result: &Result<(), postgres::Error>) -> Option<String> {
    result.as_ref().err().and_then(|e| e.code()).map(|c| c.code().to_string())
}
