//! Daily partitions are made ahead of time, and rows outside every partition are kept and
//! later moved into partitions of their own.

use std::time::Duration;

use secumon_e2e::*;

/// `(table, UTC day)` pairs from today to today + 7 that lack a daily partition named
/// `secumon_partitions.<table>_pYYYYMMDD` attached to `secumon.<table>`.
const MISSING_PARTITIONS: &str = "
    SELECT t.tbl || ' ' || d::date
      FROM unnest(ARRAY['metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics']) AS t(tbl)
     CROSS JOIN generate_series((now() AT TIME ZONE 'UTC')::date,
                                (now() AT TIME ZONE 'UTC')::date + 7, interval '1 day') AS d
     WHERE NOT EXISTS (
           SELECT 1 FROM pg_inherits i
            WHERE i.inhparent = to_regclass('secumon.' || t.tbl)
              AND i.inhrelid = to_regclass(format('secumon_partitions.%s_p%s', t.tbl, to_char(d, 'YYYYMMDD'))))
     ORDER BY 1";

#[test]
fn partitions_exist_ahead() {
    let cluster = Cluster::start();
    let ran = wait_until(Duration::from_secs(30), || {
        !cluster.job("partition_upkeep")["last_success"].is_null()
    });
    assert!(
        ran,
        "expected the maintenance worker to run partition_upkeep successfully; job: {}",
        cluster.job("partition_upkeep")
    );
    let missing = cluster.psql(MISSING_PARTITIONS);
    assert!(
        missing.is_empty(),
        "expected daily partitions for today .. today+7 (UTC) of all four tables after partition_upkeep \
         ran; missing: {missing:?}; job: {}",
        cluster.job("partition_upkeep")
    );

    // The catalog view agrees: each of those days is covered by a non-default partition of each
    // table, and each table has its default partition.
    let uncovered = cluster.psql(
        "SELECT t.tbl || ' ' || d::date
           FROM unnest(ARRAY['metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics']) AS t(tbl)
          CROSS JOIN generate_series((now() AT TIME ZONE 'UTC')::date,
                                     (now() AT TIME ZONE 'UTC')::date + 7, interval '1 day') AS d
          WHERE NOT EXISTS (
                SELECT 1 FROM secumon.partitions p
                 WHERE p.table_name = t.tbl AND NOT p.is_default
                   AND p.range_start <= (d::date::timestamp AT TIME ZONE 'UTC')
                   AND p.range_end > (d::date::timestamp AT TIME ZONE 'UTC'))",
    );
    assert!(
        uncovered.is_empty(),
        "expected secumon.partitions to show the days covered; missing: {uncovered:?}"
    );
    let defaults = cluster.psql(
        "SELECT table_name, partition_name FROM secumon.partitions WHERE is_default ORDER BY 1",
    );
    let expected: Vec<Vec<Option<String>>> = PARTITIONED_TABLES
        .iter()
        .map(|t| vec![Some(t.to_string()), Some(format!("{t}_default"))])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        defaults, expected,
        "expected one DEFAULT partition per table"
    );
}

#[test]
fn row_for_a_day_without_partition_is_kept_then_moved() {
    let cluster = Cluster::start();
    let mut client = cluster.client();
    register_agent(&mut client, "time-traveller").unwrap();
    // Days inside the accepted window (secumon.ingest_window_past) that have no partition yet:
    // partitions are made from yesterday on. (Times outside the window are refused:
    // secumon_pg/src/tests/abuse_tests.rs.)
    let days = cluster.psql(
        "SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - d + interval '12 hours')::text || '+00',
                to_char(now() AT TIME ZONE 'UTC' - d, 'YYYYMMDD')
           FROM unnest(ARRAY[interval '300 days', interval '3 days']) AS d",
    );
    let times: Vec<String> = days.iter().map(|r| r[0].clone().unwrap()).collect();
    for time in &times {
        let stored = Report::sample("time-traveller", time)
            .ingest(&mut client)
            .unwrap_or_else(|e| panic!("expected ingest at {time} to succeed: {}", error_text(&e)));
        assert!(stored, "expected ingest at {time} to store the report");
    }

    let counts = |cluster: &Cluster| {
        cluster.psql(&format!(
            "SELECT t::text,
                    (SELECT count(*) FROM secumon.metrics m WHERE m.agent_id = 'time-traveller' AND m.time = t),
                    (SELECT count(*) FROM secumon.disk_metrics d WHERE d.agent_id = 'time-traveller' AND d.time = t),
                    (SELECT count(*) FROM secumon.network_metrics n WHERE n.agent_id = 'time-traveller' AND n.time = t),
                    (SELECT count(*) FROM secumon.process_metrics p WHERE p.agent_id = 'time-traveller' AND p.time = t)
               FROM unnest(ARRAY['{}', '{}']::timestamptz[]) AS t
              ORDER BY t",
            times[0], times[1]
        ))
    };
    let before = counts(&cluster);
    let series = Report::sample("x", "now").series.len().to_string();
    for row in &before {
        assert_eq!(
            row[1..].to_vec(),
            vec![
                Some(series.clone()),
                Some("1".into()),
                Some("1".into()),
                Some("2".into())
            ],
            "expected the report at {:?} readable at once through secumon.metrics, disk_metrics, \
             network_metrics and process_metrics (sample series, 1 disk, 1 interface, 2 processes)",
            row[0]
        );
    }

    // Where each row lives now, and after the worker moved it: (table, partition) per row.
    let placement = "
        SELECT 'metric_samples', tableoid::regclass::text, count(*) FROM secumon.metric_samples GROUP BY 1, 2
        UNION ALL SELECT 'disk_metrics', tableoid::regclass::text, count(*) FROM secumon.disk_metrics GROUP BY 1, 2
        UNION ALL SELECT 'network_metrics', tableoid::regclass::text, count(*) FROM secumon.network_metrics GROUP BY 1, 2
        UNION ALL SELECT 'process_metrics', tableoid::regclass::text, count(*) FROM secumon.process_metrics GROUP BY 1, 2
        ORDER BY 1, 2";
    cluster.run_job_soon("partition_upkeep");
    let mut rows = Vec::new();
    let moved = wait_until(Duration::from_secs(30), || {
        rows = cluster.psql(placement);
        rows.iter()
            .all(|r| !r[1].as_deref().unwrap_or("").ends_with("_default"))
    });
    assert!(
        moved,
        "expected the worker to move the rows out of the DEFAULT partitions; placement: {rows:?}; job: {}",
        cluster.job("partition_upkeep")
    );
    // Physical row counts depend on the storage layout; which partitions hold them does not.
    let placed: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for table in PARTITIONED_TABLES {
        for day in days.iter().map(|r| r[1].clone().unwrap()) {
            expected.push((
                table.to_string(),
                format!("secumon_partitions.{table}_p{day}"),
            ));
        }
    }
    expected.sort();
    assert_eq!(
        placed, expected,
        "expected each report in the daily partition of its own UTC day"
    );
    assert_eq!(
        counts(&cluster),
        before,
        "expected moving the rows to keep every row exactly once"
    );
}
