//! In-database tests of what makes a dump restorable (sql/schema.sql, "Dump and restore").
//! The whole pg_dump / pg_restore round trip is tested end to end in tests/tests/dump_restore.rs.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).expect(sql).unwrap_or(0)
    }

    #[pg_test]
    fn partitioned_parents_carry_no_index_their_partitions_do() {
        Spi::run("SELECT secumon._partition_upkeep()").expect("upkeep");
        // An index on an extension-owned parent would be created again by ATTACH PARTITION on
        // restore and collide with the dumped partition index.
        assert_eq!(
            count(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                  WHERE c.relnamespace = 'secumon'::regnamespace AND c.relkind = 'p'"
            ),
            0
        );
        let today = "to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')";
        for (partition, expected) in [("metric_samples_p", 3), ("disk_metrics_p", 3), ("process_metrics_p", 1)] {
            let n = count(&format!(
                "SELECT count(*) FROM pg_index WHERE indrelid = ('secumon_partitions.{partition}' || {today})::regclass"
            ));
            assert_eq!(n, expected, "indexes on today's {partition}");
        }
        assert_eq!(count("SELECT count(*) FROM pg_index WHERE indrelid = 'secumon_partitions.metric_samples_default'::regclass"), 3);
    }

    #[pg_test]
    fn a_dumped_copy_of_a_default_row_updates_the_installed_one() {
        // What pg_restore does after CREATE EXTENSION made the defaults again.
        Spi::run(
            "INSERT INTO secumon.storage_policies (table_name, kind, premake_days, retention, compress_after)
             VALUES ('metric_samples', 'raw', 7, '45 days', '3 days')",
        )
        .expect("merged, not a duplicate key");
        assert_eq!(count("SELECT count(*) FROM secumon.storage_policies WHERE table_name = 'metric_samples'"), 1);
        assert_eq!(
            Spi::get_one::<String>("SELECT retention::text FROM secumon.storage_policies WHERE table_name = 'metric_samples'")
                .unwrap()
                .as_deref(),
            Some("45 days")
        );
        // A dumped default rule keeps its own id and edits.
        Spi::run(
            "INSERT INTO secumon.alert_rules (id, default_key, name, metric_type, metric_name, condition, threshold, duration, severity)
             VALUES ('6b1f3d7e-0000-4000-8000-000000000001', 'high_cpu_usage', 'High CPU Usage', 'cpu', 'usage_percent', 'gt', 97, '5 minutes', 'critical')",
        )
        .expect("a default rule merges");
        assert_eq!(
            Spi::get_one::<f64>("SELECT threshold FROM secumon.alert_rules WHERE id = '6b1f3d7e-0000-4000-8000-000000000001'")
                .unwrap(),
            Some(97.0)
        );
        assert_eq!(count("SELECT count(*) FROM secumon.alert_rules WHERE default_key = 'high_cpu_usage'"), 1);
    }

    #[pg_test]
    fn default_rules_are_known_by_their_default_key() {
        assert_eq!(count("SELECT count(*) FROM secumon.alert_rules WHERE default_key IS NOT NULL"), 6);
    }

    #[pg_test]
    fn a_removed_default_rule_is_removed_again_when_its_tombstone_is_restored() {
        Spi::run("DELETE FROM secumon.alert_rules WHERE default_key = 'high_cpu_usage'").expect("delete");
        assert_eq!(count("SELECT count(*) FROM secumon._removed_defaults"), 1);
        // A restore: CREATE EXTENSION made the rule again, then the dumped tombstone arrives.
        Spi::run("CREATE TEMP TABLE saved AS SELECT * FROM secumon._removed_defaults").expect("save");
        Spi::run("DELETE FROM secumon._removed_defaults").expect("clear");
        Spi::run(
            "INSERT INTO secumon.alert_rules (default_key, name, metric_type, metric_name, condition, threshold, duration, severity)
             VALUES ('high_cpu_usage', 'High CPU Usage', 'cpu', 'usage_percent', 'gt', 90, '5 minutes', 'critical')",
        )
        .expect("re-created");
        Spi::run("INSERT INTO secumon._removed_defaults SELECT * FROM saved").expect("tombstone restored");
        assert_eq!(count("SELECT count(*) FROM secumon.alert_rules WHERE default_key = 'high_cpu_usage'"), 0);
    }

    #[pg_test]
    fn an_admin_may_delete_a_default_rule_and_its_removal_is_remembered() {
        Spi::run("SET LOCAL ROLE secumon_admin").expect("become an admin");
        Spi::run("DELETE FROM secumon.alert_rules WHERE default_key = 'high_load_average'").expect("an admin deletes a default rule");
        Spi::run("RESET ROLE").expect("reset");
        assert_eq!(count("SELECT count(*) FROM secumon._removed_defaults"), 1);
    }

    #[pg_test]
    fn every_table_written_by_users_or_workers_is_dumped() {
        // Member tables of the extension that pg_dump would skip (caches only may be listed).
        let not_dumped = Spi::get_one::<String>(
            "SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY 1)
               FROM pg_depend d JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'secumon'
              WHERE d.deptype = 'e' AND c.relkind IN ('r', 'S') AND NOT c.oid = ANY (e.extconfig)",
        )
        .unwrap();
        assert_eq!(not_dumped, None, "member tables and sequences not marked with pg_extension_config_dump");
    }
}
