//! In-database tests of the storage SQL. Each runs inside a transaction that is rolled back.
//! Worker behaviour is tested end to end in tests/ against a running cluster.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use crate::tests::expect_sqlstate;

    fn register(agent: &str) {
        Spi::run(&format!("SELECT secumon.register_agent('{agent}', 'host-{agent}', 'linux', '0.1.0', '{{\"env\":\"test\"}}')"))
            .expect("register_agent");
    }

    fn ingest_sql(agent: &str, time: &str) -> String {
        format!(
            "SELECT secumon.ingest('{agent}', '{time}', ARRAY['cpu.usage_percent','memory.usage_percent','system.uptime_seconds'], \
             ARRAY[12.5, 40.25, 3600]::float8[], \
             '[{{\"device\":\"/dev/sda1\",\"mountpoint\":\"/\",\"fs_type\":\"ext4\",\"total_bytes\":100,\"used_bytes\":40,\"free_bytes\":60,\"usage_percent\":40,\"inodes_total\":10,\"inodes_used\":1,\"inodes_usage_percent\":10,\"read_bytes\":5,\"write_bytes\":6,\"read_ops\":1,\"write_ops\":2}}]', \
             '[{{\"interface\":\"eth0\",\"bytes_sent\":1,\"bytes_recv\":2,\"packets_sent\":3,\"packets_recv\":4,\"errors_in\":0,\"errors_out\":0,\"drops_in\":0,\"drops_out\":0}}]', \
             '[{{\"pid\":1,\"name\":\"init\",\"command\":\"/sbin/init\",\"user\":\"root\",\"cpu_percent\":0.5,\"memory_bytes\":1024,\"memory_percent\":0.1,\"status\":\"sleeping\"}}]')"
        )
    }

    #[pg_test]
    fn ingest_stores_every_family_and_is_idempotent() {
        register("a1");
        let sql = ingest_sql("a1", "2026-11-25 10:00:00+00");
        assert_eq!(Spi::get_one::<bool>(&sql).unwrap(), Some(true));
        assert_eq!(Spi::get_one::<bool>(&sql).unwrap(), Some(false), "a replayed report is not stored twice");
        let count = |q: &str| Spi::get_one::<i64>(q).unwrap().unwrap();
        assert_eq!(count("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'a1'"), 3);
        assert_eq!(count("SELECT count(*) FROM secumon.disk_metrics WHERE agent_id = 'a1'"), 1);
        assert_eq!(count("SELECT count(*) FROM secumon.network_metrics WHERE agent_id = 'a1'"), 1);
        assert_eq!(count("SELECT count(*) FROM secumon.process_metrics WHERE agent_id = 'a1'"), 1);
        let v = Spi::get_one::<f64>(
            "SELECT value FROM secumon.metrics WHERE agent_id = 'a1' AND metric_type = 'memory' AND metric_name = 'usage_percent'",
        )
        .unwrap();
        assert_eq!(v, Some(40.25));
        let last_seen = Spi::get_one::<bool>(
            "SELECT last_seen >= '2026-11-25 10:00:00+00' FROM secumon.agents WHERE agent_id = 'a1'",
        )
        .unwrap();
        assert_eq!(last_seen, Some(true));
    }

    #[pg_test]
    fn ingest_rejects_bad_input_with_sqlstate() {
        register("a2");
        expect_sqlstate("SELECT secumon.ingest('a2', now(), ARRAY['cpu.x'], ARRAY[1,2]::float8[])", "22023");
        expect_sqlstate("SELECT secumon.ingest('a2', now(), ARRAY['cpu.x'], ARRAY['NaN']::float8[])", "22023");
        expect_sqlstate("SELECT secumon.ingest('a2', now(), ARRAY['bogus.x'], ARRAY[1]::float8[])", "22023");
        expect_sqlstate("SELECT secumon.ingest('a2', now(), ARRAY['cpu.x','cpu.x'], ARRAY[1,2]::float8[])", "22023");
        expect_sqlstate("SELECT secumon.ingest('a2', 'infinity', ARRAY['cpu.x'], ARRAY[1]::float8[])", "22007");
        expect_sqlstate("SELECT secumon.ingest('a2', NULL, ARRAY['cpu.x'], ARRAY[1]::float8[])", "22007");
        expect_sqlstate("SELECT secumon.ingest('nobody', now(), ARRAY['cpu.x'], ARRAY[1]::float8[])", "P0002");
        expect_sqlstate("SELECT secumon.ingest('bad id!', now(), ARRAY['cpu.x'], ARRAY[1]::float8[])", "22023");
        expect_sqlstate("SELECT secumon.ingest('a2', now(), ARRAY['cpu.x'], ARRAY[1]::float8[], '{}'::jsonb)", "22023");
        expect_sqlstate("SELECT secumon.register_agent('a3', 'h', NULL, NULL, '[1]'::jsonb)", "22023");
    }

    #[pg_test]
    fn partition_upkeep_creates_days_ahead_and_drains_default() {
        register("a4");
        // Days inside the accepted window without a partition (they are made from yesterday on).
        let day = |ago: &str| {
            Spi::get_two::<String, String>(&format!(
                "SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - interval '{ago}' + interval '12 hours')::text || '+00', \
                        to_char(now() AT TIME ZONE 'UTC' - interval '{ago}', 'YYYYMMDD')"
            ))
            .map(|(time, day)| (time.unwrap(), day.unwrap()))
            .unwrap()
        };
        let (old_time, old_day) = day("300 days");
        Spi::get_one::<bool>(&ingest_sql("a4", &old_time)).unwrap();
        Spi::get_one::<bool>(&ingest_sql("a4", &day("3 days").0)).unwrap();
        let in_default = Spi::get_one::<i64>("SELECT count(*) FROM secumon_partitions.metric_samples_default").unwrap();
        assert_eq!(in_default, Some(2), "rows outside every partition land in the default partition");

        let result = Spi::get_one::<String>("SELECT secumon.run_job('partition_upkeep')").unwrap().unwrap();
        assert!(result.starts_with("success"), "{result}");

        for table in ["metric_samples", "disk_metrics", "network_metrics", "process_metrics"] {
            let empty = Spi::get_one::<i64>(&format!("SELECT count(*) FROM secumon_partitions.{table}_default")).unwrap();
            assert_eq!(empty, Some(0), "{table} default partition drained");
            let ahead = Spi::get_one::<i64>(&format!(
                "SELECT count(*) FROM secumon.partitions WHERE table_name = '{table}' AND NOT is_default \
                 AND range_start >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                 AND range_start <= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '7 days'"
            ))
            .unwrap();
            assert_eq!(ahead, Some(8), "{table}: today and 7 days ahead exist");
        }
        let moved = Spi::get_one::<i64>(&format!("SELECT count(*) FROM secumon_partitions.metric_samples_p{old_day}")).unwrap();
        assert_eq!(moved, Some(1));
        let total = Spi::get_one::<i64>("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'a4'").unwrap();
        assert_eq!(total, Some(6), "nothing lost while moving");
    }

    #[pg_test]
    fn inserting_into_metrics_view_merges_samples_of_one_instant() {
        Spi::run(
            "INSERT INTO secumon.metrics (time, agent_id, metric_type, metric_name, value) VALUES \
             ('2026-11-25 10:00:00+00', 'v1', 'cpu', 'usage_percent', 95), \
             ('2026-11-25 10:00:00+00', 'v1', 'memory', 'usage_percent', 50), \
             ('2026-11-25 10:00:00+00', 'v1', 'cpu', 'usage_percent', 96)",
        )
        .unwrap();
        let rows = Spi::get_one::<i64>("SELECT count(*) FROM secumon.metric_samples s JOIN secumon.agents a USING (agent_key) WHERE a.agent_id = 'v1'").unwrap();
        assert_eq!(rows, Some(1), "one storage row per agent and instant");
        let cpu = Spi::get_one::<f64>("SELECT value FROM secumon.metrics WHERE agent_id = 'v1' AND metric_type = 'cpu'").unwrap();
        assert_eq!(cpu, Some(96.0), "a later insert of the same sample replaces it");
        expect_sqlstate(
            "INSERT INTO secumon.metrics VALUES (now(), 'v1', 'cpu', 'usage_percent', 'NaN')",
            "22023",
        );
    }

    #[pg_test]
    fn jobs_are_listed_and_validated() {
        let n = Spi::get_one::<i64>("SELECT count(*) FROM secumon.jobs WHERE job_name = 'partition_upkeep'").unwrap();
        assert_eq!(n, Some(1));
        expect_sqlstate("SELECT secumon.run_job('no_such_job')", "22023");
        expect_sqlstate("SELECT secumon.alter_job('no_such_job', '1 minute')", "22023");
        expect_sqlstate("SELECT secumon.alter_job('partition_upkeep', '10 ms')", "22023");
        let iv = Spi::get_one::<String>("SELECT schedule_interval::text FROM secumon.alter_job('partition_upkeep', '5 minutes')").unwrap();
        assert_eq!(iv.as_deref(), Some("00:05:00"));
    }

    #[pg_test]
    fn health_reports_version_and_data() {
        let version = Spi::get_one::<String>("SELECT secumon.health()->>'version'").unwrap();
        assert_eq!(version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        let has_workers = Spi::get_one::<bool>("SELECT jsonb_typeof(secumon.health()->'workers') = 'array'").unwrap();
        assert_eq!(has_workers, Some(true));
    }
}
