//! In-database tests of the notification SQL: fan-out, routing, validation, claim and record.
//! Each runs inside a transaction that is rolled back; delivery itself is tested end to end in
//! tests/tests/notify.rs, payloads and retry policy in crates/secumon-notify-core.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::expect_sqlstate;
    use pgrx::prelude::*;

    const RULE_A: &str = "00000000-0000-4000-8000-00000000000a";
    const RULE_B: &str = "00000000-0000-4000-8000-00000000000b";

    fn channel(name: &str, routing: &str) {
        Spi::run(&format!(
            "INSERT INTO secumon.notification_channels (name, type, settings{}) VALUES ('{name}', 'webhook', \
             '{{\"url\": \"http://127.0.0.1:9/{name}\"}}'{})",
            if routing.is_empty() { "".to_string() } else { format!(", {}", routing.split('=').next().unwrap()) },
            if routing.is_empty() { "".to_string() } else { format!(", {}", routing.split_once('=').unwrap().1) },
        ))
        .expect("create channel");
    }

    fn event(alert: u32, rule: &str, tenant: &str, event: &str, severity: &str, silenced: bool) {
        Spi::run(&format!(
            "INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, event, severity, silenced, payload) \
             VALUES ('00000000-0000-4000-8000-{alert:012}', '{rule}', '{tenant}', 'a1', '{event}', '{severity}', {silenced}, \
             '{{\"rule_name\": \"r\"}}')"
        ))
        .expect("insert event");
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn queued(channel: &str) -> i64 {
        count(&format!("SELECT count(*) FROM secumon.notification_outbox WHERE channel_name = '{channel}'"))
    }

    #[pg_test]
    fn fan_out_routes_by_severity_rule_tenant_and_event_and_skips_silenced() {
        channel("all", "");
        channel("critical-only", "severities=ARRAY['critical']");
        channel("rule-a", &format!("rule_ids=ARRAY['{RULE_A}']::uuid[]"));
        channel("tenant-t2", "tenant_ids=ARRAY['t2']");
        channel("with-acks", "events=ARRAY['firing','resolved','acknowledged']");
        event(1, RULE_A, "default", "firing", "critical", false);
        event(2, RULE_B, "t2", "firing", "warning", false);
        event(3, RULE_A, "default", "firing", "critical", true);
        event(4, RULE_B, "default", "acknowledged", "warning", false);
        event(5, RULE_B, "default", "repeat", "warning", false);
        assert_eq!(queued("all"), 2, "firing events only by default; silenced skipped");
        assert_eq!(queued("critical-only"), 1);
        assert_eq!(queued("rule-a"), 1);
        assert_eq!(queued("tenant-t2"), 1);
        assert_eq!(queued("with-acks"), 3);
        assert_eq!(count("SELECT count(*) FROM secumon.notification_outbox WHERE status <> 'pending'"), 0);
    }

    #[pg_test]
    fn one_statement_with_many_events_fans_out_in_one_go() {
        channel("all", "");
        channel("disabled", "enabled=false");
        Spi::run(
            "INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, event, severity, payload) \
             SELECT gen_random_uuid(), gen_random_uuid(), 'default', 'a1', 'firing', 'info', '{}' FROM generate_series(1, 50)",
        )
        .unwrap();
        assert_eq!(queued("all"), 50);
        assert_eq!(queued("disabled"), 0);
    }

    #[pg_test]
    fn channel_settings_are_validated_with_sqlstate_22023() {
        expect_sqlstate(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('x', 'slack', '{\"url\": \"ftp://h\"}')",
            "22023",
        );
        expect_sqlstate(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('x', 'webhook', '{\"utl\": \"http://h\"}')",
            "22023",
        );
        expect_sqlstate(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('x', 'email', '{\"host\": \"h\", \"from\": \"a@b.c\", \"to\": []}')",
            "22023",
        );
        expect_sqlstate(
            "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ('x', 'sms', '{}')",
            "22023",
        );
        let problem = Spi::get_one::<String>(
            "SELECT secumon._notification_settings_problem('x', 'telegram', '{\"bot_token\": \"TOPSECRET\", \"chat_id\": 1}')",
        )
        .unwrap()
        .unwrap();
        assert!(!problem.contains("TOPSECRET"), "{problem}");
    }

    #[pg_test]
    fn claim_keeps_transitions_of_an_alert_in_order_and_respects_the_channel_limit() {
        channel("all", "");
        event(1, RULE_A, "default", "firing", "critical", false);
        event(1, RULE_A, "default", "resolved", "critical", false);
        for n in 2..=6 {
            event(n, RULE_A, "default", "firing", "critical", false);
        }
        let claim = "SELECT count(*) FROM secumon._notification_claim(100, '1 minute', $1, '{}', '{}')";
        let claimed = Spi::get_one_with_args::<i64>(claim, &[3.into()]).unwrap().unwrap();
        assert_eq!(claimed, 3, "at most per_channel rows per channel");
        let claimed = Spi::get_one_with_args::<i64>(claim, &[100.into()]).unwrap().unwrap();
        assert_eq!(claimed, 3, "the resolved event waits while its firing event is in flight");
        assert_eq!(
            count("SELECT count(*) FROM secumon.notification_outbox WHERE status = 'pending' AND event = 'resolved'"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM secumon.notification_outbox WHERE status = 'sending' AND attempts = 1"), 6);
    }

    #[pg_test]
    fn claim_from_a_backlog_takes_each_alerts_transitions_in_order() {
        // A backlog as an alert storm leaves it (statistics not yet refreshed): every alert's
        // firing, then every alert's resolved, then a third round for half of them.
        channel("all", "events=ARRAY['firing','resolved','repeat']");
        for n in 1..=300 {
            event(n, RULE_A, "default", "firing", "critical", false);
        }
        for n in 1..=300 {
            event(n, RULE_A, "default", "resolved", "critical", false);
        }
        for n in 1..=150 {
            event(n, RULE_A, "default", "repeat", "critical", false);
        }
        let claim = "SELECT count(*) FROM secumon._notification_claim(10000, '1 minute', 10000, '{}', '{}')";
        assert_eq!(count(claim), 300, "one transition per alert while its earlier one is in flight");
        assert_eq!(count("SELECT count(*) FROM secumon.notification_outbox WHERE status = 'sending' AND event <> 'firing'"), 0);
        let record = |event: &str| {
            Spi::run(&format!(
                "SELECT secumon._notification_record(array_agg(notification_id), array_agg('sent'::text), array_agg(0::float8), \
                 array_agg(200), array_agg(NULL::text), array_agg(NULL::text), array_agg(1::float8), array_agg(0::float8)) \
                 FROM secumon.notification_outbox WHERE status = 'sending' AND event = '{event}'"
            ))
            .unwrap()
        };
        record("firing");
        assert_eq!(count(claim), 300, "then each alert's resolved");
        assert_eq!(count("SELECT count(*) FROM secumon.notification_outbox WHERE status = 'sending' AND event <> 'resolved'"), 0);
        record("resolved");
        assert_eq!(count(claim), 150, "then the repeats");
        assert_eq!(count("SELECT count(*) FROM secumon.notification_outbox WHERE status <> 'sent' AND event <> 'repeat'"), 0);
    }

    #[pg_test]
    fn record_moves_rows_to_sent_retry_or_failed() {
        channel("all", "");
        for n in 1..=3 {
            event(n, RULE_A, "default", "firing", "critical", false);
        }
        Spi::run("SELECT * FROM secumon._notification_claim(10, '1 minute', 10, '{}', '{}')").unwrap();
        let ids: Vec<i64> = (1..=3)
            .map(|n| {
                count(&format!(
                    "SELECT notification_id FROM secumon.notification_outbox WHERE alert_id = '00000000-0000-4000-8000-{n:012}'"
                ))
            })
            .collect();
        Spi::run(&format!(
            "SELECT secumon._notification_record(ARRAY[{},{},{}]::bigint[], ARRAY['sent','retry','failed'], ARRAY[0,60000,0]::float8[], \
             ARRAY[200,503,400], ARRAY['ok','busy','bad'], ARRAY[NULL,'HTTP 503','HTTP 400'], ARRAY[1.5,2,3]::float8[], ARRAY[0,0,0]::float8[])",
            ids[0], ids[1], ids[2]
        ))
        .unwrap();
        let status = |id: i64| {
            Spi::get_one::<String>(&format!("SELECT status FROM secumon.notification_outbox WHERE notification_id = {id}"))
                .unwrap()
                .unwrap()
        };
        assert_eq!(status(ids[0]), "sent");
        assert_eq!(status(ids[1]), "pending");
        assert_eq!(status(ids[2]), "failed");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM secumon.notification_outbox WHERE notification_id = {} AND next_attempt_at > now() + interval '50 seconds'",
                ids[1]
            )),
            1
        );
        // A late second answer for a row no longer in flight changes nothing.
        Spi::run(&format!(
            "SELECT secumon._notification_record(ARRAY[{}]::bigint[], ARRAY['failed'], ARRAY[0]::float8[], ARRAY[500], ARRAY['x'], ARRAY['x'], ARRAY[1]::float8[], ARRAY[0]::float8[])",
            ids[0]
        ))
        .unwrap();
        assert_eq!(status(ids[0]), "sent");
    }

    #[pg_test]
    fn history_shows_no_channel_settings_and_deleted_channels_fail_their_pending_rows() {
        channel("gone", "");
        event(1, RULE_A, "default", "firing", "critical", false);
        let columns = Spi::get_one::<String>(
            "SELECT string_agg(attname, ',') FROM pg_attribute WHERE attrelid = 'secumon.notification_history'::regclass AND attnum > 0",
        )
        .unwrap()
        .unwrap();
        assert!(!columns.contains("settings"), "{columns}");
        Spi::run("DELETE FROM secumon.notification_channels WHERE name = 'gone'").unwrap();
        assert_eq!(Spi::get_one::<i32>("SELECT secumon._notification_expire('1 day')").unwrap(), Some(1));
        assert_eq!(
            Spi::get_one::<String>("SELECT last_error FROM secumon.notification_history WHERE channel_name = 'gone'").unwrap(),
            Some("the channel was deleted".into())
        );
    }

    #[pg_test]
    fn default_channels_from_settings_never_replace_an_admins_channel() {
        Spi::run("SELECT secumon._notification_default_channel('default-webhook', 'webhook', '{\"url\": \"http://127.0.0.1:9/a\"}')").unwrap();
        assert_eq!(count("SELECT count(*) FROM secumon.notification_channels WHERE managed_by = 'guc'"), 1);
        Spi::run("SELECT secumon._notification_default_channel('default-webhook', NULL, NULL)").unwrap();
        assert_eq!(count("SELECT count(*) FROM secumon.notification_channels"), 0);
        channel("default-slack", "");
        Spi::run("SELECT secumon._notification_default_channel('default-slack', 'slack', '{\"url\": \"http://127.0.0.1:9/b\"}')").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT type FROM secumon.notification_channels WHERE name = 'default-slack'").unwrap(),
            Some("webhook".into())
        );
    }
}
