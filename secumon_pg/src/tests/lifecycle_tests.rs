//! In-database tests of the storage lifecycle (sql/series.sql to sql/lifecycle.sql): rollups,
//! late rows, real-time views, counter resets, retention, compression. Each test runs in a transaction
//! that is rolled back, so `now()` stands still: tests place data relative to it.

#[pgrx::pg_schema]
pub(crate) mod tests {
    use crate::tests::expect_sqlstate;
    use pgrx::prelude::*;

    /// Registers agents `{prefix}1..={agents}` and ingests one full report per agent every
    /// `step` in [from, to) (SQL expressions): the shared test history (tests/src/history.rs)
    /// with two filesystems and two processes.
    pub(crate) fn generate(prefix: &str, agents: i32, from: &str, to: &str, step: &str) {
        use crate::tests::history::{history_sql, HistoryShape};
        Spi::run(&history_sql(prefix, agents, &[(from.to_string(), to.to_string())], step, HistoryShape::InDatabase))
            .expect("generate test data");
    }

    /// Creates partitions for the data and drains the default partitions, like the worker.
    pub(crate) fn upkeep() {
        Spi::run("SELECT secumon._partition_upkeep()").expect("partition upkeep");
    }

    /// `#[pg_test]`s run concurrently, each in one long transaction, and these tests create,
    /// swap and drop partitions. Taking every storage table at once before touching anything
    /// (all or nothing, retried) serialises them against each other and against other tests'
    /// writes without a lock-order deadlock.
    pub(crate) fn lock_storage() {
        Spi::run(
            "DO $lock$ BEGIN
               FOR attempt IN 1..2400 LOOP
                 BEGIN
                   LOCK TABLE secumon.agents, secumon.metric_series, secumon.metric_layouts, secumon.metric_samples,
                              secumon.disk_metrics, secumon.network_metrics, secumon.process_metrics,
                              secumon.storage_policies, secumon.rollups, secumon._rollup_invalidations,
                              secumon.compressed_partitions, secumon.metric_rollup_5min, secumon.metric_rollup_1hour,
                              secumon.disk_rollup_1hour, secumon.network_rollup_1hour
                     IN ACCESS EXCLUSIVE MODE NOWAIT;
                   RETURN;
                 EXCEPTION WHEN lock_not_available THEN
                   PERFORM pg_sleep(0.05);
                 END;
               END LOOP;
               RAISE EXCEPTION 'storage tables stayed busy for two minutes';
             END $lock$",
        )
        .expect("lock the storage tables");
    }

    pub(crate) fn refresh_all() {
        for rollup in ["metrics_5min", "metrics_1hour", "disk_metrics_1hour", "network_metrics_1hour"] {
            Spi::run(&format!("SELECT secumon.refresh_rollup('{rollup}')")).expect("refresh_rollup");
        }
    }

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    /// Compares a rollup view with a GROUP BY over secumon.metrics; returns the number of
    /// buckets compared after asserting min/max/count exact, avg within float rounding and
    /// p95 within the sketch's 1 %.
    fn compare_metric_rollup(view: &str, width: &str, agent_prefix: &str) -> i64 {
        let sql = format!(
            "WITH raw AS (
                SELECT secumon._bucket('{width}', time) AS bucket, agent_id, metric_type, metric_name,
                       avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count,
                       percentile_disc(0.95) WITHIN GROUP (ORDER BY value) AS p95
                  FROM secumon.metrics WHERE agent_id LIKE '{agent_prefix}%' GROUP BY 1, 2, 3, 4)
             SELECT count(*)::bigint,
                    count(v.bucket)::bigint,
                    count(*) FILTER (WHERE v.min IS DISTINCT FROM raw.min OR v.max IS DISTINCT FROM raw.max
                                        OR v.count IS DISTINCT FROM raw.count)::bigint,
                    coalesce(max(abs(v.avg - raw.avg) / greatest(abs(raw.avg), 1e-300)), 0)::float8,
                    coalesce(max(abs(v.p95 - raw.p95) / greatest(abs(raw.p95), 1e-300)), 0)::float8,
                    (SELECT count(*) FROM secumon.{view} WHERE agent_id LIKE '{agent_prefix}%')::bigint
               FROM raw LEFT JOIN secumon.{view} v
                 ON v.bucket = raw.bucket AND v.agent_id = raw.agent_id
                AND v.metric_type = raw.metric_type AND v.metric_name = raw.metric_name"
        );
        let (buckets, matched, differing, avg_err, p95_err, view_rows) = Spi::connect(|c| {
            let row = c.select(&sql, None, &[]).unwrap().first();
            (
                row.get::<i64>(1).unwrap().unwrap(),
                row.get::<i64>(2).unwrap().unwrap(),
                row.get::<i64>(3).unwrap().unwrap(),
                row.get::<f64>(4).unwrap().unwrap(),
                row.get::<f64>(5).unwrap().unwrap(),
                row.get::<i64>(6).unwrap().unwrap(),
            )
        });
        assert!(buckets > 0, "{view}: no data");
        assert_eq!(matched, buckets, "{view}: every raw bucket has a rollup row");
        assert_eq!(view_rows, buckets, "{view}: no rollup row without raw data");
        assert_eq!(differing, 0, "{view}: min, max and count equal the GROUP BY exactly");
        assert!(avg_err < 1e-12, "{view}: avg equals the GROUP BY up to float rounding, rel. error {avg_err}");
        assert!(p95_err <= 0.01 + 1e-9, "{view}: p95 within 1 % of percentile_disc, rel. error {p95_err}");
        buckets
    }

    #[pg_test]
    fn rollups_equal_a_group_by_over_raw_rows() {
        lock_storage();
        generate("r", 3, "date_trunc('hour', now()) - interval '5 hours'", "now() - interval '3 minutes'", "interval '20 seconds'");
        upkeep();
        refresh_all();
        let wm = one::<bool>(
            "SELECT watermark = secumon._bucket('5 minutes', now() - interval '2 minutes') FROM secumon.rollups WHERE rollup_name = 'metrics_5min'",
        );
        assert!(wm, "the 5-minute watermark follows now() - refresh_lag");
        let materialised = one::<i64>("SELECT count(*) FROM secumon.metric_rollup_5min");
        assert!(materialised > 100, "most buckets are materialised ({materialised})");
        compare_metric_rollup("metrics_5min", "5 minutes", "r");
        compare_metric_rollup("metrics_1hour", "1 hour", "r");

        // Disk: avg/max usage and avg inodes per filesystem and hour.
        let disk_diff = one::<i64>(
            "SELECT count(*) FROM (
                SELECT secumon._bucket('1 hour', time) AS bucket, agent_id, device, mountpoint,
                       avg(usage_percent) AS avg_usage, max(usage_percent) AS max_usage, avg(inodes_usage_percent) AS avg_inodes
                  FROM secumon.disk_metrics WHERE agent_id LIKE 'r%' GROUP BY 1, 2, 3, 4) raw
              FULL JOIN (SELECT * FROM secumon.disk_metrics_1hour WHERE agent_id LIKE 'r%') v USING (bucket, agent_id, device, mountpoint)
             WHERE v.bucket IS NULL OR raw.bucket IS NULL OR abs(v.avg_usage - raw.avg_usage) > 1e-9
                OR v.max_usage <> raw.max_usage OR abs(v.avg_inodes - raw.avg_inodes) > 1e-9",
        );
        assert_eq!(disk_diff, 0, "disk_metrics_1hour equals the GROUP BY over disk_metrics");

        // Network: totals equal the sum of reset-aware deltas between consecutive samples.
        let net_diff = one::<i64>(
            "WITH d AS (SELECT agent_id, interface, time,
                               secumon.counter_delta(bytes_sent, lag(bytes_sent) OVER w) AS sent,
                               secumon.counter_delta(bytes_recv, lag(bytes_recv) OVER w) AS recv
                          FROM secumon.network_metrics WHERE agent_id LIKE 'r%'
                        WINDOW w AS (PARTITION BY agent_id, interface ORDER BY time)),
                  raw AS (SELECT secumon._bucket('1 hour', time) AS bucket, agent_id, interface,
                                 sum(sent) AS sent, sum(recv) AS recv FROM d GROUP BY 1, 2, 3)
             SELECT count(*) FROM raw FULL JOIN (SELECT * FROM secumon.network_metrics_1hour WHERE agent_id LIKE 'r%') v
                 USING (bucket, agent_id, interface)
              WHERE v.bucket IS NULL OR raw.bucket IS NULL
                 OR v.bytes_sent IS DISTINCT FROM raw.sent OR v.bytes_recv IS DISTINCT FROM raw.recv",
        );
        assert_eq!(net_diff, 0, "network_metrics_1hour equals the sum of counter deltas");
    }

    #[pg_test]
    fn real_time_view_includes_the_newest_minutes() {
        lock_storage();
        let watermark = "secumon._bucket('5 minutes', now() - interval '2 minutes')";
        generate("n", 2, "now() - interval '30 minutes'", watermark, "interval '30 seconds'");
        upkeep();
        refresh_all();
        // Reports newer than the watermark: not materialised, yet visible.
        generate("n", 2, watermark, "now()", "interval '30 seconds'");
        let newest = one::<bool>(
            "SELECT max(bucket) = (SELECT secumon._bucket('5 minutes', max(time)) FROM secumon.metrics WHERE agent_id = 'n1')
               FROM secumon.metrics_5min WHERE agent_id = 'n1'",
        );
        assert!(newest, "metrics_5min shows the bucket of the newest report");
        let beyond = one::<i64>(
            "SELECT count(*) FROM secumon.metric_rollup_5min m JOIN secumon.agents a USING (agent_key)
              WHERE a.agent_id = 'n1' AND m.bucket >= secumon._bucket('5 minutes', now() - interval '2 minutes')",
        );
        assert_eq!(beyond, 0, "nothing past the watermark is materialised");
        compare_metric_rollup("metrics_5min", "5 minutes", "n");
        compare_metric_rollup("metrics_1hour", "1 hour", "n");
        let disk_now = one::<i64>(
            "SELECT count(*) FROM secumon.disk_metrics_1hour WHERE agent_id = 'n1' AND bucket = secumon._bucket('1 hour', now())",
        );
        assert_eq!(disk_now, 2, "the current hour of disk_metrics_1hour comes from raw rows (two filesystems)");
    }

    #[pg_test]
    fn late_and_back_filled_rows_fix_their_buckets() {
        lock_storage();
        generate("l", 1, "now() - interval '3 hours'", "now() - interval '5 minutes'", "interval '1 minute'");
        upkeep();
        refresh_all();
        let bucket = "date_trunc('hour', now()) - interval '2 hours'";
        // A late report (an agent replaying its spool) and a back-filled sample.
        Spi::run(&format!(
            "SELECT secumon.ingest('l1', {bucket} + interval '2 minutes 30 seconds', ARRAY['cpu.usage_percent'], ARRAY[99.25]::float8[],
                     NULL, '[{{\"interface\":\"eth0\",\"bytes_sent\":1,\"bytes_recv\":1,\"packets_sent\":1,\"packets_recv\":1}}]')"
        ))
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO secumon.metrics (time, agent_id, metric_type, metric_name, value)
             VALUES ({bucket} + interval '1 hour 7 minutes', 'l1', 'cpu', 'usage_percent', -5)"
        ))
        .unwrap();
        let stale = one::<f64>(&format!(
            "SELECT max FROM secumon.metrics_5min WHERE agent_id = 'l1' AND metric_type = 'cpu' AND metric_name = 'usage_percent' AND bucket = {bucket}"
        ));
        assert!(stale < 99.0, "before the refresh the materialised bucket is unchanged");
        refresh_all();
        let max5 = one::<f64>(&format!(
            "SELECT max FROM secumon.metrics_5min WHERE agent_id = 'l1' AND metric_type = 'cpu' AND metric_name = 'usage_percent' AND bucket = {bucket}"
        ));
        assert_eq!(max5, 99.25, "the late report is in its 5-minute bucket");
        let min1 = one::<f64>(&format!(
            "SELECT min FROM secumon.metrics_1hour WHERE agent_id = 'l1' AND metric_type = 'cpu' AND metric_name = 'usage_percent' AND bucket = {bucket} + interval '1 hour'"
        ));
        assert_eq!(min1, -5.0, "the back-filled sample is in its hour");
        compare_metric_rollup("metrics_5min", "5 minutes", "l");
        compare_metric_rollup("metrics_1hour", "1 hour", "l");
        let pending = one::<i64>("SELECT count(*) FROM secumon._rollup_invalidations");
        assert_eq!(pending, 0, "every invalidated bucket was re-materialised");
    }

    #[pg_test]
    fn counter_resets_never_give_negative_or_huge_network_totals() {
        lock_storage();
        Spi::run("SELECT secumon.register_agent('c1', 'c1')").unwrap();
        // 10 s samples: normal growth, a reboot (counter back near zero), an agent restart
        // after a 2-hour gap, then growth again.
        let samples = [
            ("now() - interval '5 hours'", 1_000_000i64),
            ("now() - interval '5 hours' + interval '10 seconds'", 1_001_000),
            ("now() - interval '5 hours' + interval '20 seconds'", 500), // reboot: reset
            ("now() - interval '5 hours' + interval '30 seconds'", 1_500),
            ("now() - interval '3 hours'", 9_000_000_000), // after a 2.5 h gap
            ("now() - interval '3 hours' + interval '10 seconds'", 9_000_002_000),
        ];
        for (t, bytes) in samples {
            Spi::run(&format!(
                "SELECT secumon.ingest('c1', {t}, ARRAY['cpu.usage_percent'], ARRAY[1]::float8[], NULL,
                   jsonb_build_array(jsonb_build_object('interface', 'eth0', 'bytes_sent', {bytes}::bigint, 'bytes_recv', 0)))"
            ))
            .unwrap();
        }
        upkeep();
        refresh_all();
        let total = one::<i64>("SELECT sum(bytes_sent)::bigint FROM secumon.network_metrics_1hour WHERE agent_id = 'c1'");
        assert_eq!(total, 1_000 + 500 + 1_000 + 2_000, "deltas: +1000, reset counts 500, +1000, gap skipped, +2000");
        let negative = one::<i64>("SELECT count(*) FROM secumon.network_metrics_1hour WHERE agent_id = 'c1' AND bytes_sent < 0");
        assert_eq!(negative, 0);
        let rate_max = one::<f64>(
            "SELECT max(value) FROM secumon.rate('c1', 'network.bytes_sent', now() - interval '6 hours', now(), 100000)",
        );
        assert!(rate_max <= 200.0, "rates stay at the real 50-200 B/s, not the 9 GB jump ({rate_max})");
    }

    /// Pretends the rows were ingested on time, long ago (data that has aged into retention).
    fn age_ingest_times() {
        for t in ["metric_samples", "disk_metrics", "network_metrics"] {
            Spi::run(&format!("UPDATE secumon.{t} SET ingested_at = time")).unwrap();
        }
    }

    #[pg_test]
    fn retention_drops_only_expired_partitions_that_are_rolled_up() {
        lock_storage();
        // Each hour within one UTC day, whatever the time of day the test runs.
        generate("k", 1, "date_trunc('day', now()) - interval '40 days' + interval '1 hour'", "date_trunc('day', now()) - interval '40 days' + interval '2 hours'", "interval '5 minutes'");
        generate("k", 1, "date_trunc('day', now()) - interval '20 days' + interval '1 hour'", "date_trunc('day', now()) - interval '20 days' + interval '2 hours'", "interval '5 minutes'");
        upkeep();
        age_ingest_times();
        let days = |t: &str| one::<i64>(&format!("SELECT count(*) FROM secumon.partitions WHERE table_name = '{t}' AND NOT is_default AND range_end < now() - interval '10 days'"));
        assert_eq!(days("metric_samples"), 2);

        // Not rolled up yet: the 40-day-old day must stay.
        let kept = one::<String>("SELECT secumon.apply_retention('metric_samples')");
        assert!(kept.contains("0 partitions") && kept.contains("not rolled it up"), "{kept}");
        assert_eq!(days("metric_samples"), 2);
        // process_metrics has no rollup: its old day goes at once.
        let gone = one::<String>("SELECT secumon.apply_retention('process_metrics')");
        assert!(gone.contains("1 partitions"), "{gone}");

        refresh_all();
        let dropped = one::<String>("SELECT secumon.run_job('retention_metric_samples')");
        assert!(dropped.contains("1 partitions"), "{dropped}");
        assert_eq!(days("metric_samples"), 1, "only the expired day went; the 20-day-old one stays");
        let rolled = one::<i64>("SELECT count(*) FROM secumon.metrics_5min WHERE agent_id = 'k1' AND bucket < now() - interval '30 days'");
        assert!(rolled > 0, "the rollups of the dropped day stay");

        // A report for the dropped day is expired on arrival: its day is not re-created.
        generate("k", 1, "date_trunc('day', now()) - interval '40 days' + interval '1 hour'", "date_trunc('day', now()) - interval '40 days' + interval '61 minutes'", "interval '5 minutes'");
        upkeep();
        assert_eq!(days("metric_samples"), 1, "partition_upkeep does not re-create a dropped day");
        let resurrected = one::<i64>("SELECT count(*) FROM secumon.metric_samples WHERE time < now() - interval '30 days'");
        assert_eq!(resurrected, 0);
    }

    #[pg_test]
    fn compressed_days_answer_every_query_exactly_as_before() {
        lock_storage();
        generate("z", 3, "date_trunc('day', now()) - interval '3 days'", "date_trunc('day', now()) - interval '2 days'", "interval '90 seconds'");
        upkeep();
        refresh_all();
        let queries = [
            "SELECT * FROM secumon.metrics WHERE agent_id LIKE 'z%'",
            "SELECT * FROM secumon.metric_samples",
            "SELECT * FROM secumon.disk_metrics WHERE agent_id LIKE 'z%'",
            "SELECT * FROM secumon.network_metrics WHERE agent_id LIKE 'z%'",
            "SELECT * FROM secumon.process_metrics WHERE agent_id LIKE 'z%'",
            "SELECT * FROM secumon.metrics WHERE agent_id = 'z2' AND time >= date_trunc('day', now()) - interval '3 days' + interval '5 hours' AND time < date_trunc('day', now()) - interval '3 days' + interval '7 hours'",
            "SELECT * FROM secumon.series('z1', 'cpu.usage_percent', date_trunc('day', now()) - interval '3 days', date_trunc('day', now()) - interval '2 days', 100000)",
            "SELECT * FROM secumon.series('z1', 'disk.usage_percent', date_trunc('day', now()) - interval '3 days', date_trunc('day', now()) - interval '2 days', 100000)",
            "SELECT * FROM secumon.rate('z3', 'network.bytes_sent', date_trunc('day', now()) - interval '3 days', date_trunc('day', now()) - interval '2 days', 10000)",
            "SELECT * FROM secumon.rate('z3', 'cpu.context_switches', date_trunc('day', now()) - interval '3 days', date_trunc('day', now()) - interval '2 days', 10000)",
            "SELECT * FROM secumon.percentiles('z2', 'cpu.usage_percent', date_trunc('day', now()) - interval '3 days' + interval '17 minutes', date_trunc('day', now()) - interval '2 days' - interval '1 minute')",
            "SELECT * FROM secumon.top_agents('memory.usage_percent', date_trunc('day', now()) - interval '3 days', date_trunc('day', now()) - interval '2 days', 3, 'last')",
            "SELECT * FROM secumon.metrics_5min WHERE agent_id LIKE 'z%'",
        ];
        let snapshot = |q: &str| -> String {
            one::<String>(&format!("SELECT coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '') FROM ({q}) r"))
        };
        let before: Vec<String> = queries.iter().map(|q| snapshot(q)).collect();
        for t in ["metric_samples", "disk_metrics", "network_metrics", "process_metrics"] {
            let r = one::<String>(&format!(
                "SELECT secumon.compress_partition(format('secumon_partitions.%I', partition_name)::regclass)
                   FROM secumon.partitions WHERE table_name = '{t}' AND range_start = date_trunc('day', now()) - interval '3 days'"
            ));
            assert!(r.contains("rows"), "{r}");
        }
        let compressed = one::<i64>("SELECT count(*) FROM secumon.partitions WHERE compressed");
        assert_eq!(compressed, 4, "four foreign-table partitions");
        for (q, b) in queries.iter().zip(&before) {
            assert!(!b.is_empty(), "query returns rows: {q}");
            assert_eq!(&snapshot(q), b, "same answer after compression: {q}");
        }
        // And back.
        Spi::run(
            "SELECT secumon.decompress_partition(format('secumon_partitions.%I', partition_name)::regclass)
               FROM secumon.partitions WHERE compressed",
        )
        .unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM secumon.partitions WHERE compressed"), 0);
        for (q, b) in queries.iter().zip(&before) {
            assert_eq!(&snapshot(q), b, "same answer after decompression: {q}");
        }
    }

    #[pg_test]
    fn compression_makes_a_day_over_90_percent_smaller() {
        // 20 agents x 1 day x 60 s, realistic values straight into storage (faster than ingest).
        Spi::run(
            "DO $$ BEGIN FOR a IN 1..20 LOOP PERFORM secumon.register_agent('s' || a, 's' || a); END LOOP; END $$;
             SELECT secumon._layout_id(ARRAY['cpu.usage_percent','cpu.load_avg_1','memory.used_bytes','memory.total_bytes',
                                             'cpu.context_switches','system.uptime_seconds','system.processes_total','cpu.cores']);
             INSERT INTO secumon.metric_samples (time, agent_key, layout_id, vals, ingested_at)
             SELECT t, a.agent_key, l.layout_id,
                    ARRAY[round((40 + 30 * sin(extract(epoch FROM t) / 900 + a.agent_key) + random())::numeric, 2),
                          round((1 + sin(extract(epoch FROM t) / 3600))::numeric, 2),
                          (4000000000 + 4096 * floor(1000 * sin(extract(epoch FROM t) / 7200 + a.agent_key)))::float8,
                          17179869184, 1e9 + extract(epoch FROM t)::bigint * 1500 + floor(random() * 100),
                          extract(epoch FROM t)::bigint - 1700000000, 200 + (extract(epoch FROM t)::bigint / 600) % 5, 8]::float8[],
                    t + interval '20 milliseconds'
               FROM generate_series(date_trunc('day', now()) - interval '4 days',
                                    date_trunc('day', now()) - interval '3 days' - interval '1 second', interval '60 seconds') t
              CROSS JOIN secumon.agents a
              CROSS JOIN (SELECT layout_id FROM secumon.metric_layouts WHERE cardinality(series) = 8) l
              WHERE a.agent_id LIKE 's%';",
        )
        .unwrap();
        upkeep();
        one::<String>(
            "SELECT secumon.compress_partition(format('secumon_partitions.%I', partition_name)::regclass)
               FROM secumon.partitions WHERE table_name = 'metric_samples' AND range_start = date_trunc('day', now()) - interval '4 days'",
        );
        let (heap, compressed, values) = Spi::connect(|c| {
            let row = c
                .select("SELECT heap_bytes, compressed_bytes, value_count FROM secumon.compressed_partitions", None, &[])
                .unwrap()
                .first();
            (row.get::<i64>(1).unwrap().unwrap(), row.get::<i64>(2).unwrap().unwrap(), row.get::<i64>(3).unwrap().unwrap())
        });
        assert_eq!(values, 20 * 1440 * 8, "every sample counted");
        let saved = 1.0 - compressed as f64 / heap as f64;
        assert!(saved >= 0.90, "compressed {compressed} B vs heap {heap} B: only {:.1} % smaller", saved * 100.0);
        let per_sample = one::<f64>(&format!(
            "SELECT sum(length(data))::float8 / {values} FROM secumon_partitions.{}",
            one::<String>("SELECT chunk_table FROM secumon.compressed_partitions")
        ));
        assert!(per_sample < 3.0, "chunk payload {per_sample:.2} B per sample");
    }

    #[pg_test]
    fn a_late_report_for_a_compressed_day_is_kept() {
        lock_storage();
        generate("d", 1, "date_trunc('day', now()) - interval '2 days'", "date_trunc('day', now()) - interval '2 days' + interval '2 hours'", "interval '1 minute'");
        upkeep();
        for t in ["metric_samples", "disk_metrics", "network_metrics", "process_metrics"] {
            one::<String>(&format!(
                "SELECT secumon.compress_partition(format('secumon_partitions.%I', partition_name)::regclass)
                   FROM secumon.partitions WHERE table_name = '{t}' AND range_start = date_trunc('day', now()) - interval '2 days'"
            ));
        }
        let late = "date_trunc('day', now()) - interval '2 days' + interval '1 hour 30 seconds'";
        let stored = one::<bool>(&format!(
            "SELECT secumon.ingest('d1', {late}, ARRAY['cpu.usage_percent'], ARRAY[77.5]::float8[],
               '[{{\"device\":\"/dev/x\",\"mountpoint\":\"/x\",\"usage_percent\":1}}]')"
        ));
        assert!(stored, "the late report is stored");
        let replay = one::<bool>(&format!("SELECT secumon.ingest('d1', {late}, ARRAY['cpu.usage_percent'], ARRAY[77.5]::float8[])"));
        assert!(!replay, "replaying it stores nothing twice");
        assert_eq!(one::<i64>("SELECT count(*) FROM secumon.partitions WHERE compressed"), 0, "its day was decompressed");
        Spi::run("SELECT secumon.compress_partition(format('secumon_partitions.%I', partition_name)::regclass) FROM secumon.partitions WHERE table_name = 'metric_samples' AND range_start = date_trunc('day', now()) - interval '2 days'").unwrap();
        let kept = one::<i64>(&format!("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'd1' AND time = {late} AND value = 77.5"));
        assert_eq!(kept, 1, "the late sample survives compressing the day again");
        let all = one::<i64>("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'd1'");
        assert_eq!(all, 120 * 4 + 1);
    }

    #[pg_test]
    fn changing_a_compressed_day_in_place_is_refused_with_a_hint() {
        lock_storage();
        generate("w", 1, "date_trunc('day', now()) - interval '2 days'", "date_trunc('day', now()) - interval '2 days' + interval '10 minutes'", "interval '1 minute'");
        upkeep();
        one::<String>(
            "SELECT secumon.compress_partition(format('secumon_partitions.%I', partition_name)::regclass)
               FROM secumon.partitions WHERE table_name = 'disk_metrics' AND range_start = date_trunc('day', now()) - interval '2 days'",
        );
        expect_sqlstate(
            "INSERT INTO secumon.disk_metrics (time, agent_id, device, mountpoint) VALUES (date_trunc('day', now()) - interval '2 days', 'w1', 'd', '/m')",
            "55000",
        );
        expect_sqlstate("UPDATE secumon.disk_metrics SET usage_percent = 0 WHERE agent_id = 'w1'", "55000");
        expect_sqlstate("DELETE FROM secumon.disk_metrics WHERE agent_id = 'w1'", "55000");
        // Statements that touch no compressed row still work.
        Spi::run("UPDATE secumon.disk_metrics SET usage_percent = 0 WHERE agent_id = 'nobody'").unwrap();
        Spi::run("DELETE FROM secumon.disk_metrics WHERE time > now() + interval '1 year'").unwrap();
        expect_sqlstate("SELECT secumon.compress_partition('secumon.agents')", "22023");
        expect_sqlstate(
            "SELECT secumon.compress_partition(format('secumon_partitions.%I', partition_name)::regclass)
               FROM secumon.partitions WHERE table_name = 'disk_metrics' AND compressed",
            "55000",
        );
        expect_sqlstate(
            "SELECT secumon.compress_partition(format('secumon_partitions.%I', partition_name)::regclass)
               FROM secumon.partitions WHERE table_name = 'disk_metrics' AND range_start > now()",
            "55000",
        );
        expect_sqlstate("SELECT secumon.decompress_partition(NULL)", "22004");
    }

    #[pg_test]
    fn jobs_list_every_lifecycle_job_and_run_job_runs_them() {
        lock_storage();
        let names: Vec<String> = Spi::connect(|c| {
            c.select("SELECT job_name FROM secumon.jobs ORDER BY 1", None, &[])
                .unwrap()
                .filter_map(|r| r.get::<String>(1).ok().flatten())
                .collect()
        });
        for job in [
            "partition_upkeep",
            "rollup_metrics_5min",
            "rollup_metrics_1hour",
            "rollup_disk_metrics_1hour",
            "rollup_network_metrics_1hour",
            "compress_metric_samples",
            "compress_disk_metrics",
            "compress_network_metrics",
            "compress_process_metrics",
            "retention_metric_samples",
            "retention_disk_metrics",
            "retention_network_metrics",
            "retention_process_metrics",
            "retention_metrics_5min",
            "retention_metrics_1hour",
            "retention_disk_metrics_1hour",
            "retention_network_metrics_1hour",
        ] {
            assert!(names.iter().any(|n| n == job), "secumon.jobs lists {job}");
        }
        generate("j", 1, "now() - interval '20 minutes'", "now()", "interval '1 minute'");
        for job in ["rollup_metrics_5min", "compress_metric_samples", "retention_metric_samples"] {
            let r = one::<String>(&format!("SELECT secumon.run_job('{job}')"));
            assert!(r.starts_with("success"), "{job}: {r}");
            let ran = one::<bool>(&format!(
                "SELECT last_success IS NOT NULL AND runs = 1 AND last_error IS NULL FROM secumon.jobs WHERE job_name = '{job}'"
            ));
            assert!(ran, "{job} recorded its run");
        }
        let at_four = one::<bool>(
            "SELECT bool_and(extract(hour FROM next_run AT TIME ZONE 'UTC') = 4 AND schedule_interval = '1 day')
               FROM secumon._jobs WHERE job_name LIKE 'retention\\_%'",
        );
        assert!(at_four, "retention runs daily at 04:00 UTC");
        Spi::run("SELECT secumon.set_retention_hour(2, 'UTC')").unwrap();
        let at_two = one::<bool>(
            "SELECT bool_and(extract(hour FROM next_run AT TIME ZONE 'UTC') = 2 AND next_run > now() AND next_run <= now() + interval '1 day')
               FROM secumon._jobs WHERE job_name LIKE 'retention\\_%'",
        );
        assert!(at_two, "set_retention_hour moves every retention job");
        expect_sqlstate("SELECT secumon.set_retention_hour(24)", "22023");
        expect_sqlstate("SELECT secumon.set_retention_hour(NULL)", "22004");
        expect_sqlstate("SELECT secumon.refresh_rollup('nope')", "22023");
        expect_sqlstate("SELECT secumon.apply_retention('nope')", "22023");
        expect_sqlstate("SELECT secumon.refresh_rollup(NULL)", "22004");
    }
}
