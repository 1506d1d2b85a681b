//! In-database tests of alert rule validation, backtests and the operator API. The engine
//! itself runs in a worker and is tested end to end in tests/tests/alerts.rs.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::expect_sqlstate;
    use pgrx::prelude::*;

    fn insert_rule(values: &str) -> String {
        format!(
            "INSERT INTO secumon.alert_rules (name, kind, metric_type, metric_name, agent_id, condition, threshold, \
             recovery_threshold, duration, no_data_after, severity, repeat_interval, agent_labels) VALUES ({values})"
        )
    }

    #[pg_test]
    fn default_rules_of_the_seed_exist() {
        let rules = Spi::get_one::<String>(
            "SELECT string_agg(format('%s|%s.%s|%s|%s|%s|%s', name, metric_type, metric_name, condition, threshold, duration, severity), ';' ORDER BY name) FROM secumon.alert_rules",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            rules,
            "High CPU Usage|cpu.usage_percent|gt|90|00:05:00|critical;\
             High Disk Usage|disk.usage_percent|gt|90|00:00:00|critical;\
             High Load Average|cpu.load_avg_5|gt|10|00:03:00|warning;\
             High Memory Usage|memory.usage_percent|gt|85|00:00:00|warning;\
             Probe Target Down|probe.up|lt|1|00:01:00|critical;\
             TLS Certificate Expiring|probe.tls_cert_days_left|lt|14|00:00:00|warning"
        );
    }

    #[pg_test]
    fn every_bad_rule_input_is_rejected_with_its_message() {
        let ok = "'r', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 90, NULL, '1 minute', NULL, 'critical', NULL, '{}'";
        Spi::run(&insert_rule(ok)).expect("a valid rule is accepted");
        let cases = [
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'above', 90, NULL, '0', NULL, 'critical', NULL, '{}'", "unknown condition"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 90, NULL, '0', NULL, 'urgent', NULL, '{}'", "unknown severity"),
            ("'r2', 'threshold', 'cpu', 'no_such_metric', NULL, 'gt', 90, NULL, '0', NULL, 'info', NULL, '{}'", "unknown metric"),
            ("'r2', 'threshold', 'gpu', 'usage_percent', NULL, 'gt', 90, NULL, '0', NULL, 'info', NULL, '{}'", "unknown metric"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 90, NULL, '-1 minute', NULL, 'info', NULL, '{}'", "duration must be zero or positive"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 'NaN', NULL, '0', NULL, 'info', NULL, '{}'", "threshold must be a finite number"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 'Infinity', NULL, '0', NULL, 'info', NULL, '{}'", "threshold must be a finite number"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', NULL, NULL, '0', NULL, 'info', NULL, '{}'", "threshold must be a finite number"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', 'bad agent!', 'gt', 90, NULL, '0', NULL, 'info', NULL, '{}'", "invalid agent_id"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 90, 95, '0', NULL, 'info', NULL, '{}'", "firing side"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'eq', 90, 80, '0', NULL, 'info', NULL, '{}'", "cannot be used with condition eq"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 90, NULL, '0', NULL, 'info', '0 seconds', '{}'", "repeat_interval"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 90, NULL, '0', NULL, 'info', NULL, '[]'", "agent_labels"),
            ("'r2', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 90, NULL, '0', NULL, 'info', NULL, '{\"env\": 1}'", "agent_labels"),
            ("'r2', 'no_data', NULL, NULL, NULL, NULL, NULL, NULL, '0', NULL, 'info', NULL, '{}'", "no_data_after"),
            ("'r2', 'sometimes', 'cpu', 'usage_percent', NULL, 'gt', 90, NULL, '0', NULL, 'info', NULL, '{}'", "unknown rule kind"),
            ("'', 'threshold', 'cpu', 'usage_percent', NULL, 'gt', 90, NULL, '0', NULL, 'info', NULL, '{}'", "needs a name"),
        ];
        for (values, message) in cases {
            let sql = insert_rule(values);
            let block = format!(
                "DO $t$ BEGIN EXECUTE {q}; RAISE EXCEPTION 'accepted'; EXCEPTION WHEN invalid_parameter_value THEN \
                 IF SQLERRM NOT LIKE {m} THEN RAISE EXCEPTION 'wrong message: %', SQLERRM; END IF; END $t$",
                q = pgrx::spi::quote_literal(&sql),
                m = pgrx::spi::quote_literal(format!("%{message}%")),
            );
            if let Err(e) = Spi::run(&block) {
                panic!("{values} should be rejected with SQLSTATE 22023 and a message containing {message:?}: {e}");
            }
        }
        // Updates are validated too.
        expect_sqlstate("UPDATE secumon.alert_rules SET threshold = 'NaN' WHERE name = 'r'", "22023");
    }

    #[pg_test]
    fn test_rule_backtests_a_definition_over_past_data() {
        // h1: 6 minutes above 90 then back to normal; h2: only 2 minutes above 90. A back-fill
        // of fixed past dates: the superuser widens the accepted window for this transaction.
        Spi::run("SET LOCAL secumon.ingest_window_past = '20000d'").unwrap();
        Spi::run(
            "INSERT INTO secumon.metrics (time, agent_id, metric_type, metric_name, value) \
             SELECT '2026-01-01 00:00:00+00'::timestamptz + i * interval '10 seconds', 'h1', 'cpu', 'usage_percent', \
                    CASE WHEN i BETWEEN 6 AND 41 THEN 95 ELSE 10 END FROM generate_series(0, 60) i \
             UNION ALL \
             SELECT '2026-01-01 00:00:00+00'::timestamptz + i * interval '10 seconds', 'h2', 'cpu', 'usage_percent', \
                    CASE WHEN i BETWEEN 6 AND 17 THEN 97 ELSE 10 END FROM generate_series(0, 60) i",
        )
        .unwrap();
        let fired = Spi::get_one::<String>(
            "SELECT string_agg(format('%s %s %s %s %s', agent_id, pending_at, fired_at, resolved_at, peak_value), ';') \
             FROM secumon.test_rule('cpu.usage_percent', 'gt', 90, '5 minutes', '2026-01-01 00:00:00+00', '2026-01-01 01:00:00+00')",
        )
        .unwrap();
        assert_eq!(
            fired.as_deref(),
            Some("h1 2026-01-01 00:01:00+00 2026-01-01 00:06:00+00 2026-01-01 00:07:00+00 95"),
            "only the breach that lasted the duration fires, resolving at the first normal sample"
        );
        let short = Spi::get_one::<i64>(
            "SELECT count(*) FROM secumon.test_rule('cpu.usage_percent', 'gt', 90, '1 minute', '2026-01-01', '2026-01-02', for_agent => 'h2')",
        )
        .unwrap();
        assert_eq!(short, Some(1));
        expect_sqlstate("SELECT * FROM secumon.test_rule('cpu.usage_percent', 'gt', 90, '0', '2026-01-02', '2026-01-01')", "22023");
        expect_sqlstate("SELECT * FROM secumon.test_rule('cpu.nope', 'gt', 90, '0', '2026-01-01', '2026-01-02')", "22023");
        expect_sqlstate("SELECT * FROM secumon.test_rule('cpu', 'gt', 90, '0', '2026-01-01', '2026-01-02')", "22023");
        expect_sqlstate("SELECT * FROM secumon.test_rule('cpu.usage_percent', 'gt', 'NaN', '0', '2026-01-01', '2026-01-02')", "22023");
    }

    #[pg_test]
    fn silences_and_acks_validate_their_input() {
        expect_sqlstate("SELECT secumon.silence('-1 hour', 'x')", "22023");
        expect_sqlstate("SELECT secumon.silence('1 hour', '  ')", "22023");
        expect_sqlstate("SELECT secumon.silence('1 hour', 'x', agent_id => 'no spaces allowed')", "22023");
        expect_sqlstate("SELECT secumon.expire_silence('00000000-0000-0000-0000-000000000000')", "22023");
        expect_sqlstate("SELECT secumon.ack_alert(NULL, 'x')", "22004");
        expect_sqlstate("SELECT secumon.ack_alert('00000000-0000-0000-0000-000000000000', 'x')", "22023");
        let id = Spi::get_one::<pgrx::Uuid>("SELECT secumon.silence('2 hours', 'maintenance', agent_id => 'db1')").unwrap();
        assert!(id.is_some());
    }
}
