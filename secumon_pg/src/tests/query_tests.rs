//! In-database tests of the dashboard functions and the seed's endpoints (sql/query.sql, sql/endpoints.sql).

#[pgrx::pg_schema]
mod tests {
    use crate::tests::expect_sqlstate;
    use crate::tests::lifecycle_tests::tests::{generate, lock_storage, refresh_all, upkeep};
    use pgrx::prelude::*;

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn data() {
        lock_storage();
        generate("q", 3, "now() - interval '2 days'", "now()", "interval '2 minutes'");
        upkeep();
        refresh_all();
    }

    #[pg_test]
    fn every_function_rejects_bad_arguments_with_a_sqlstate() {
        data();
        let (a, m, f, t) = ("'q1'", "'cpu.usage_percent'", "now() - interval '1 hour'", "now()");
        let cases: Vec<(String, &str)> = vec![
            // from after to
            (format!("SELECT * FROM secumon.series({a}, {m}, {t}, {f})"), "22023"),
            (format!("SELECT * FROM secumon.metric_history({a}, {m}, {t}, {f})"), "22023"),
            (format!("SELECT * FROM secumon.rate({a}, 'cpu.context_switches', {t}, {f})"), "22023"),
            (format!("SELECT * FROM secumon.percentiles({a}, {m}, {t}, {f})"), "22023"),
            (format!("SELECT * FROM secumon.top_agents({m}, {t}, {f})"), "22023"),
            (format!("SELECT * FROM secumon.series_lttb({a}, {m}, {t}, {f})"), "22023"),
            // unknown metric
            (format!("SELECT * FROM secumon.series({a}, 'cpu.bogus', {f}, {t})"), "22023"),
            (format!("SELECT * FROM secumon.series({a}, 'disk.bogus', {f}, {t})"), "22023"),
            (format!("SELECT * FROM secumon.metric_history({a}, 'nope', {f}, {t})"), "22023"),
            (format!("SELECT * FROM secumon.rate({a}, 'network.bogus', {f}, {t})"), "22023"),
            (format!("SELECT * FROM secumon.rate({a}, 'disk.usage_percent', {f}, {t})"), "22023"),
            (format!("SELECT * FROM secumon.percentiles({a}, 'nope', {f}, {t})"), "22023"),
            (format!("SELECT * FROM secumon.top_agents('nope', {f}, {t})"), "22023"),
            // max_points / n / top_n out of range
            (format!("SELECT * FROM secumon.series({a}, {m}, {f}, {t}, 0)"), "22023"),
            (format!("SELECT * FROM secumon.series({a}, {m}, {f}, {t}, -5)"), "22023"),
            (format!("SELECT * FROM secumon.metric_history({a}, {m}, {f}, {t}, 0)"), "22023"),
            (format!("SELECT * FROM secumon.rate({a}, 'cpu.context_switches', {f}, {t}, 0)"), "22023"),
            (format!("SELECT * FROM secumon.series_lttb({a}, {m}, {f}, {t}, 0)"), "22023"),
            (format!("SELECT * FROM secumon.top_agents({m}, {f}, {t}, 0)"), "22023"),
            (format!("SELECT * FROM secumon.agent_processes({a}, 0)"), "22023"),
            // other bad values
            (format!("SELECT * FROM secumon.top_agents({m}, {f}, {t}, 5, 'median')"), "22023"),
            (format!("SELECT * FROM secumon.agent_processes({a}, 5, 'disk')"), "22023"),
            (format!("SELECT * FROM secumon.percentiles({a}, {m}, {f}, {t}, '{{1.5}}')"), "22023"),
            (format!("SELECT * FROM secumon.rate({a}, 'cpu.context_switches', {f}, {t}, 10, '-1 minute')"), "22023"),
            (format!("SELECT * FROM secumon.series({a}, {m}, 'infinity', 'infinity')"), "22023"),
            ("SELECT * FROM secumon.list_agents('-1 minute')".to_string(), "22023"),
            ("SELECT secumon.sketch_quantile(secumon.sketch(1.0), 2)".to_string(), "22023"),
            ("SELECT secumon.sketch_quantile('\\x0102'::bytea, 0.5)".to_string(), "22P03"),
            ("SELECT * FROM secumon.lttb(ARRAY[now()], ARRAY[1.0, 2.0], 10)".to_string(), "22023"),
            ("SELECT * FROM secumon.lttb(ARRAY[now()], ARRAY[1.0], 0)".to_string(), "22023"),
            // NULLs
            (format!("SELECT * FROM secumon.series(NULL, {m}, {f}, {t})"), "22004"),
            (format!("SELECT * FROM secumon.series({a}, NULL, {f}, {t})"), "22004"),
            (format!("SELECT * FROM secumon.series({a}, {m}, NULL, {t})"), "22004"),
            (format!("SELECT * FROM secumon.series({a}, {m}, {f}, NULL)"), "22004"),
            (format!("SELECT * FROM secumon.series({a}, {m}, {f}, {t}, NULL)"), "22004"),
            (format!("SELECT * FROM secumon.metric_history({a}, NULL)"), "22004"),
            (format!("SELECT * FROM secumon.rate({a}, NULL, {f}, {t})"), "22004"),
            (format!("SELECT * FROM secumon.percentiles({a}, {m}, {f}, {t}, NULL)"), "22004"),
            (format!("SELECT * FROM secumon.percentiles({a}, {m}, {f}, {t}, ARRAY[0.5, NULL])"), "22004"),
            (format!("SELECT * FROM secumon.top_agents(NULL, {f}, {t})"), "22004"),
            (format!("SELECT * FROM secumon.top_agents({m}, {f}, {t}, 3, NULL)"), "22004"),
            ("SELECT * FROM secumon.latest_metrics(NULL)".to_string(), "22004"),
            ("SELECT * FROM secumon.agent_disks(NULL)".to_string(), "22004"),
            ("SELECT * FROM secumon.agent_networks(NULL)".to_string(), "22004"),
            (format!("SELECT * FROM secumon.agent_processes({a}, NULL)"), "22004"),
            ("SELECT * FROM secumon.list_agents(NULL)".to_string(), "22004"),
            // unknown agent
            (format!("SELECT * FROM secumon.series('nobody', {m}, {f}, {t})"), "P0002"),
            ("SELECT * FROM secumon.latest_metrics('nobody')".to_string(), "P0002"),
            ("SELECT * FROM secumon.agent_disks('nobody')".to_string(), "P0002"),
            ("SELECT * FROM secumon.agent_networks('nobody')".to_string(), "P0002"),
            ("SELECT * FROM secumon.agent_processes('nobody')".to_string(), "P0002"),
        ];
        for (sql, state) in &cases {
            expect_sqlstate(sql, state);
        }
    }

    #[pg_test]
    fn series_picks_raw_five_minute_or_hourly_data_by_range() {
        data();
        let res = |range: &str, points: i32| {
            one::<String>(&format!(
                "SELECT split_part(min(resolution), '/', 1) || ':' || count(*)
                   FROM secumon.metric_history('q1', 'cpu.usage_percent', now() - interval '{range}', now(), {points})"
            ))
        };
        assert_eq!(res("1 hour", 100), "raw:30", "30 raw samples fit into 100 points");
        assert!(res("1 day", 100).starts_with("5min:"), "a day at 100 points uses 5-minute rollups");
        assert!(res("2 days", 20).starts_with("1hour:"), "two days at 20 points use hourly rollups");
        let n = one::<i64>("SELECT count(*) FROM secumon.series('q1', 'cpu.usage_percent', now() - interval '2 days', now(), 50)");
        assert!(n <= 50, "never more than max_points ({n})");
        // Hourly points are the averages of the raw samples of each 2-hour step.
        let exact = one::<bool>(
            "WITH s AS (SELECT * FROM secumon.series('q2', 'cpu.usage_percent', now() - interval '2 days', now(), 24)),
                  r AS (SELECT secumon._bucket('2 hours', time) AS t, avg(value) AS v FROM secumon.metrics
                         WHERE agent_id = 'q2' AND metric_type = 'cpu' AND metric_name = 'usage_percent'
                           AND time >= secumon._bucket('1 hour', now() - interval '2 days') GROUP BY 1)
             SELECT bool_and(abs(s.value - r.v) < 1e-9) AND count(*) = (SELECT count(*) FROM s) FROM s JOIN r ON r.t = s.time",
        );
        assert!(exact, "series() averages equal the raw averages per step");
        let metric = one::<String>("SELECT DISTINCT metric FROM secumon.series('q1', 'cpu.usage_percent', now() - interval '1 hour', now())");
        assert_eq!(metric, "cpu.usage_percent", "Grafana's metric column names the series");
        let disks = one::<String>(
            "SELECT string_agg(DISTINCT metric, ',') FROM secumon.series('q1', 'disk.usage_percent', now() - interval '2 days', now(), 10)",
        );
        assert_eq!(disks, "disk.usage_percent:/,disk.usage_percent:/data");
    }

    #[pg_test]
    fn rate_is_reset_aware_and_per_second() {
        data();
        // bytes_sent grows 1000 per 2-minute report and resets every 500 reports.
        let rates: Vec<f64> = Spi::connect(|c| {
            c.select(
                "SELECT value FROM secumon.rate('q1', 'network.bytes_sent', now() - interval '2 days', now(), 100000)",
                None,
                &[],
            )
            .unwrap()
            .filter_map(|r| r.get::<f64>(1).ok().flatten())
            .collect()
        });
        assert!(rates.len() > 1000);
        assert!(rates.iter().all(|r| *r >= 0.0 && *r <= 1000.0 / 120.0 + 1e-9), "no negative or huge rate");
        let hourly = one::<f64>(
            "SELECT max(value) FROM secumon.rate('q1', 'network.bytes_sent', now() - interval '2 days', now(), 24)",
        );
        assert!(hourly > 0.0 && hourly <= 1000.0 / 120.0 + 1e-9, "hourly rates from the rollup ({hourly})");
        let cs = one::<f64>("SELECT avg(value) FROM secumon.rate('q1', 'cpu.context_switches', now() - interval '1 hour', now())");
        assert!((cs - 1234.0 / 120.0).abs() < 1e-6, "context switches: 1234 per 2 minutes ({cs})");
        let disk = one::<String>(
            "SELECT string_agg(DISTINCT metric, ',') FROM secumon.rate('q1', 'disk.write_bytes', now() - interval '1 hour', now())",
        );
        assert_eq!(disk, "disk.write_bytes:/,disk.write_bytes:/data");
    }

    #[pg_test]
    fn percentiles_merge_tiers_within_one_percent_of_raw() {
        data();
        for (from, to) in [
            ("now() - interval '47 hours 13 minutes'", "now() - interval '2 minutes 30 seconds'"),
            ("now() - interval '50 minutes'", "now() - interval '3 minutes'"),
            ("now() - interval '7 minutes'", "now()"),
        ] {
            let ok = one::<bool>(&format!(
                "WITH p AS (SELECT * FROM secumon.percentiles('q3', 'cpu.usage_percent', {from}, {to}, '{{0,0.5,0.9,0.95,0.99,1}}')),
                      r AS (SELECT unnest(ARRAY[0,0.5,0.9,0.95,0.99,1]::float8[]) AS q,
                                   unnest(percentile_disc(ARRAY[0,0.5,0.9,0.95,0.99,1]) WITHIN GROUP (ORDER BY value)) AS v,
                                   count(*) AS n
                              FROM secumon.metrics WHERE agent_id = 'q3' AND metric_type = 'cpu' AND metric_name = 'usage_percent'
                               AND time >= {from} AND time < {to})
                 SELECT bool_and(abs(p.value - r.v) <= 0.01 * abs(r.v) + 1e-9 AND p.samples = r.n) FROM p JOIN r ON r.q = p.quantile"
            ));
            assert!(ok, "percentiles over [{from}, {to}) within 1 % of percentile_disc");
        }
        let empty = one::<i64>("SELECT count(*) FROM secumon.percentiles('q3', 'cpu.usage_percent', now() + interval '1 day', now() + interval '2 days') WHERE value IS NULL AND samples = 0");
        assert_eq!(empty, 3, "no data: NULL percentiles, zero samples");
    }

    #[pg_test]
    fn top_agents_rank_by_the_aggregate_asked() {
        data();
        // memory.usage_percent is 30 + a + ..., so q3 > q2 > q1 on average.
        let order = one::<String>("SELECT string_agg(agent_id, ',') FROM secumon.top_agents('memory.usage_percent', now() - interval '6 hours', now(), 3, 'avg')");
        assert_eq!(order, "q3,q2,q1");
        let two = one::<i64>("SELECT count(*) FROM secumon.top_agents('memory.usage_percent', now() - interval '2 days', now(), 2, 'p95')");
        assert_eq!(two, 2);
        let max_ok = one::<bool>(
            "SELECT t.value = (SELECT max(value) FROM secumon.metrics WHERE agent_id = t.agent_id AND metric_type = 'cpu' AND metric_name = 'usage_percent'
                                 AND time >= secumon._bucket('5 minutes', now() - interval '3 hours'))
               FROM secumon.top_agents('cpu.usage_percent', now() - interval '3 hours', now(), 1, 'max') t",
        );
        assert!(max_ok, "max over the buckets of the range");
        let last = one::<bool>(
            "SELECT bool_and(t.value = (SELECT value FROM secumon.metrics WHERE agent_id = t.agent_id AND metric_type = 'memory'
                                          AND metric_name = 'usage_percent' ORDER BY time DESC LIMIT 1))
               FROM secumon.top_agents('memory.usage_percent', now() - interval '10 minutes', now(), 3, 'last') t",
        );
        assert!(last, "last is each agent's newest value");
    }

    #[pg_test]
    fn the_seed_endpoints_answer_from_the_newest_report() {
        data();
        Spi::run("SELECT secumon.register_agent('q-silent', 'silent')").unwrap();
        Spi::run("UPDATE secumon.agents SET last_seen = now() - interval '1 hour' WHERE agent_id = 'q1'").unwrap();
        let statuses = one::<String>("SELECT string_agg(agent_id || '=' || status, ',' ORDER BY agent_id) FROM secumon.list_agents()");
        assert_eq!(statuses, "q-silent=online,q1=offline,q2=online,q3=online");
        let latest = one::<String>(
            "SELECT string_agg(metric_type || '.' || metric_name, ',') FROM secumon.latest_metrics('q2') WHERE time = (SELECT max(time) FROM secumon.metrics WHERE agent_id = 'q2')",
        );
        assert_eq!(latest, "cpu.context_switches,cpu.usage_percent,memory.total_bytes,memory.usage_percent");
        let newest_q1 = one::<bool>(
            "SELECT max(time) = (SELECT max(time) FROM secumon.metrics WHERE agent_id = 'q1' AND time <= now() - interval '1 hour') FROM secumon.latest_metrics('q1')",
        );
        assert!(newest_q1, "latest means the newest report up to last_seen");
        assert_eq!(one::<String>("SELECT string_agg(mountpoint, ',') FROM secumon.agent_disks('q2')"), "/,/data");
        let rate = one::<f64>("SELECT bytes_recv_per_second FROM secumon.agent_networks('q2')");
        assert!((rate - 2000.0 / 120.0).abs() < 1e-9, "bytes_recv grows 2000 per 2 minutes ({rate})");
        assert_eq!(one::<i32>("SELECT pid FROM secumon.agent_processes('q2', 1, 'memory')"), 102);
        assert_eq!(one::<i64>("SELECT count(*) FROM secumon.agent_processes('q2', 5)"), 2);
        assert_eq!(one::<i64>("SELECT count(*) FROM secumon.latest_metrics('q-silent')"), 0, "an agent without reports has no metrics");
        assert!(!one::<String>("SELECT secumon.health()->>'version'").is_empty());
    }

    #[pg_test]
    fn lttb_keeps_endpoints_and_peaks() {
        lock_storage();
        let n = one::<i64>(
            "SELECT count(*) FROM secumon.lttb(
               (SELECT array_agg(now() + i * interval '1 second' ORDER BY i) FROM generate_series(1, 1000) i),
               (SELECT array_agg(CASE WHEN i = 500 THEN 100.0 ELSE 1.0 END ORDER BY i) FROM generate_series(1, 1000) i), 20)",
        );
        assert_eq!(n, 20);
        let peak = one::<f64>(
            "SELECT max(value) FROM secumon.lttb(
               (SELECT array_agg(now() + i * interval '1 second' ORDER BY i) FROM generate_series(1, 1000) i),
               (SELECT array_agg(CASE WHEN i = 500 THEN 100.0 ELSE 1.0 END ORDER BY i) FROM generate_series(1, 1000) i), 20)",
        );
        assert_eq!(peak, 100.0);
        data();
        let m = one::<i64>("SELECT count(*) FROM secumon.series_lttb('q1', 'cpu.usage_percent', now() - interval '2 days', now(), 100)");
        assert_eq!(m, 100);
    }

    #[pg_test]
    fn query_functions_obey_tenant_row_level_security() {
        data();
        Spi::run("INSERT INTO secumon.tenants (tenant_id, name) VALUES ('qtenant', 'Acme')").unwrap();
        Spi::run("UPDATE secumon.agents SET tenant_id = 'qtenant' WHERE agent_id = 'q1'").unwrap();
        Spi::run("SET LOCAL secumon.jwt_secret = 'query-test-secret-0123456789abcdef0123456789abcdef'").unwrap();
        Spi::run("SELECT secumon.create_user('qt_acme', 'password-of-qt_acme', 'readonly', 'qt@example.com', 'qtenant')").unwrap();
        let token = one::<String>("SELECT token FROM secumon.login('qt_acme', 'password-of-qt_acme')");
        Spi::run("CREATE ROLE query_test_web NOLOGIN IN ROLE secumon_web").unwrap();
        Spi::run("SET LOCAL ROLE query_test_web").unwrap();
        // No identity: nothing visible.
        assert_eq!(one::<i64>("SELECT count(*) FROM secumon.list_agents()"), 0);
        expect_sqlstate("SELECT * FROM secumon.latest_metrics('q1')", "P0002");
        Spi::run(&format!("SELECT secumon.authenticate('{token}')")).unwrap();
        assert_eq!(one::<String>("SELECT string_agg(agent_id, ',') FROM secumon.list_agents()"), "q1");
        assert!(one::<i64>("SELECT count(*) FROM secumon.series('q1', 'cpu.usage_percent', now() - interval '2 days', now(), 100)") > 0);
        expect_sqlstate("SELECT * FROM secumon.series('q2', 'cpu.usage_percent', now() - interval '1 hour', now())", "P0002");
        assert_eq!(
            one::<String>("SELECT string_agg(DISTINCT agent_id, ',') FROM secumon.metrics_5min"),
            "q1",
            "rollup views show the tenant's agents only"
        );
        assert_eq!(one::<String>("SELECT string_agg(DISTINCT agent_id, ',') FROM secumon.metrics_1hour"), "q1");
        assert_eq!(one::<String>("SELECT string_agg(DISTINCT agent_id, ',') FROM secumon.disk_metrics_1hour"), "q1");
        assert_eq!(one::<String>("SELECT string_agg(DISTINCT agent_id, ',') FROM secumon.network_metrics_1hour"), "q1");
        assert_eq!(one::<String>("SELECT string_agg(agent_id, ',') FROM secumon.top_agents('cpu.usage_percent')"), "q1");
        assert_eq!(one::<i64>("SELECT count(*) FROM secumon.metric_rollup_5min m JOIN secumon.agents a USING (agent_key) WHERE a.agent_id <> 'q1'"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM secumon.metric_rollup_5min"), one::<i64>("SELECT count(*) FROM secumon.metric_rollup_5min m WHERE m.agent_key = (SELECT agent_key FROM secumon.agents WHERE agent_id = 'q1')"));
    }
}
