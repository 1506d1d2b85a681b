//! In-database tests of what no tenant (and no client) may do to the others: learn which series
//! another tenant reports, store the token secret where every role reads it, claim another's
//! agent, use up ids everyone shares, or send input (dates, JSON) that breaks shared work. Each
//! runs inside a transaction that is rolled back. What needs separate sessions, the workers or
//! the configuration file is tested end to end in tests/tests/abuse.rs.

#[pgrx::pg_schema]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use pgrx::prelude::*;
    use crate::tests::{count, error_of, install_error_catcher, lit, run, text};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-abuse";
    const DEEP: &str = "(repeat('{\"a\":', 150) || '1' || repeat('}', 150))::jsonb";






    /// Tenants acme and globex, an error catcher, a session signing key, a minimal bcrypt cost.
    fn setup() {
        run("INSERT INTO secumon.tenants (tenant_id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex')");
        install_error_catcher();
        run(&format!("SET LOCAL secumon.jwt_secret = {}", lit(SECRET)));
    }

    fn agent(agent_id: &str, tenant: &str) {
        run(&format!("SELECT secumon.register_agent('{agent_id}', 'host-{agent_id}')"));
        run(&format!("UPDATE secumon.agents SET tenant_id = '{tenant}' WHERE agent_id = '{agent_id}'"));
    }

    fn ingest(agent_id: &str, series: &[&str]) {
        let names: Vec<String> = series.iter().map(|s| lit(s)).collect();
        let vals: Vec<&str> = series.iter().map(|_| "1").collect();
        run(&format!(
            "SELECT secumon.ingest('{agent_id}', now() - interval '1 minute', ARRAY[{}]::text[], ARRAY[{}]::float8[])",
            names.join(","),
            vals.join(",")
        ));
    }

    /// Logs `name` (a user of `tenant`) in and makes this transaction act as it, through a role
    /// that is a member of secumon_web.
    fn act_as(name: &str, role: &str, tenant: &str) {
        run(&format!(
            "SELECT secumon.create_user({}, 'password-of-{name}', {}, NULL, {})",
            lit(name),
            lit(role),
            lit(tenant)
        ));
        let token = text(&format!("SELECT token FROM secumon.login({}, 'password-of-{name}')", lit(name)));
        run("CREATE ROLE abuse_test_web NOLOGIN IN ROLE secumon_web");
        run("SET LOCAL ROLE abuse_test_web");
        run(&format!("SELECT secumon.authenticate({})", lit(&token)));
    }

    fn series_id_seq() -> i64 {
        count("SELECT last_value FROM secumon.metric_series_series_id_seq")
    }

    // ---- Oracles ---------------------------------------------------------------------------

    #[pg_test]
    fn a_series_only_another_tenant_reports_is_unknown_to_a_session() {
        setup();
        agent("acme-1", "acme");
        agent("globex-1", "globex");
        ingest("acme-1", &["cpu.usage_percent"]);
        ingest("globex-1", &["cpu.usage_percent", "system.globex_secret_sauce"]);
        act_as("ab_ann", "admin", "acme");

        assert_eq!(
            count("SELECT count(*) FROM secumon.metric_series WHERE series = 'system.globex_secret_sauce'"),
            0,
            "metric_series shows a series only globex reports"
        );
        assert_eq!(
            count("SELECT count(*) FROM secumon.metric_layouts WHERE 'system.globex_secret_sauce' = ANY (series)"),
            0,
            "metric_layouts shows a layout only globex uses"
        );
        let unknown = error_of("SELECT secumon._series_id('system.globex_secret_sauce')");
        assert!(
            unknown.starts_with("22023: unknown metric 'system.globex_secret_sauce'"),
            "_series_id resolves a series only globex reports: {unknown}"
        );
        assert!(error_of("SELECT secumon._series_id('system.nobody_reports_this')").starts_with("22023: unknown metric"));
        // What acme's own agents report stays visible and usable.
        assert_eq!(count("SELECT count(*) FROM secumon.metric_series WHERE series = 'cpu.usage_percent'"), 1);
        assert_eq!(count("SELECT count(*) FROM secumon.metric_layouts"), 1);
        assert_eq!(error_of("SELECT secumon._series_id('cpu.usage_percent')"), "ok");
        assert_eq!(count("SELECT count(*) FROM secumon.metrics"), 1, "acme's own sample, through its layout");

        // An agent that moves to acme brings its layouts along.
        run("RESET ROLE");
        run("UPDATE secumon.agents SET tenant_id = 'acme' WHERE agent_id = 'globex-1'");
        run("SET LOCAL ROLE abuse_test_web");
        assert_eq!(count("SELECT count(*) FROM secumon.metric_series WHERE series = 'system.globex_secret_sauce'"), 1);
        assert_eq!(count("SELECT count(*) FROM secumon.metrics"), 3);
    }

    // ---- Secrets ---------------------------------------------------------------------------

    #[pg_test]
    fn jwt_secret_is_refused_where_every_role_could_read_it() {
        setup();
        let value = lit("a-secret-of-more-than-thirty-two-bytes-0123");
        let refused = "55P02: secumon.jwt_secret can only be set in the configuration file or with ALTER SYSTEM";
        for sql in [
            format!("ALTER ROLE CURRENT_USER SET secumon.jwt_secret = {value}"),
            format!("ALTER ROLE ALL SET secumon.jwt_secret = {value}"),
            format!("ALTER DATABASE {} SET secumon.jwt_secret = {value}", text("SELECT quote_ident(current_database())")),
            format!("ALTER ROLE CURRENT_USER IN DATABASE {} SET secumon.jwt_secret = {value}", text("SELECT quote_ident(current_database())")),
            format!("CREATE FUNCTION pg_temp.signer() RETURNS int LANGUAGE sql SET secumon.jwt_secret = {value} RETURN 1"),
        ] {
            assert_eq!(error_of(&sql), refused, "{sql}");
        }
        assert_eq!(
            count("SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE c LIKE 'secumon.jwt_secret%'"),
            0,
            "nothing was stored where pg_roles.rolconfig shows it"
        );
        // A stored copy can always be removed, and a superuser's own SET still works.
        assert_eq!(error_of("ALTER ROLE CURRENT_USER RESET secumon.jwt_secret"), "ok");
        assert_eq!(error_of("ALTER DATABASE pgrx_tests RESET secumon.jwt_secret"), "ok");
        assert_eq!(error_of(&format!("SET LOCAL secumon.jwt_secret = {value}")), "ok");
    }

    #[pg_test]
    fn a_token_without_kid_is_not_checked_against_a_session_key() {
        setup();
        let user_id = text(
            "SELECT secumon.create_user('ab_kidless', 'password-of-ab_kidless', 'user', NULL, 'acme')::text",
        );
        let now = count("SELECT extract(epoch FROM now())::bigint");
        let claims = json!({"user_id": user_id, "email": null, "role": "user", "tenant_id": "acme",
                            "iat": now, "exp": now + 600, "iss": "secumon-api"});
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .expect("test token signs");
        // The key here comes from SET, not from the configuration file (tests/tests/abuse.rs
        // accepts such a token against the file's key).
        assert_eq!(
            error_of(&format!("SELECT secumon.verify_token({})", lit(&token))),
            "28000: invalid or expired token"
        );
    }

    // ---- Denial of service: time ------------------------------------------------------------

    #[pg_test]
    fn sample_times_outside_the_window_are_refused() {
        setup();
        agent("clock-1", "acme");
        let report = |time: &str| {
            error_of(&format!(
                "SELECT secumon.ingest('clock-1', {time}, ARRAY['cpu.usage_percent'], ARRAY[1]::float8[])"
            ))
        };
        for time in [
            "'294276-12-31 00:00:00+00'",
            "'4713-01-01 00:00:00+00 BC'",
            "now() + interval '2 days'",
            "now() - interval '366 days'",
        ] {
            let error = report(time);
            assert!(
                error.starts_with("22008: report time ") && error.contains("is outside the accepted window"),
                "{time}: {error}"
            );
        }
        assert_eq!(report("now() - interval '364 days'"), "ok");
        assert_eq!(report("now() + interval '23 hours'"), "ok");
        let backfill = error_of(
            "INSERT INTO secumon.metrics (time, agent_id, metric_type, metric_name, value) \
             VALUES ('294276-12-31 00:00:00+00', 'clock-1', 'cpu', 'usage_percent', 1)",
        );
        assert!(backfill.starts_with("22008: "), "{backfill}");
        // A superuser widens the window for one session's back-fill.
        run("SET LOCAL secumon.ingest_window_past = '3650d'");
        assert_eq!(report("now() - interval '5 years'"), "ok");
    }

    #[pg_test]
    fn partition_upkeep_leaves_rows_it_cannot_place_and_places_the_rest() {
        setup();
        agent("clock-2", "acme");
        let layout = count("SELECT secumon._layout_id(ARRAY['cpu.usage_percent'])");
        let key = count("SELECT agent_key FROM secumon.agents WHERE agent_id = 'clock-2'");
        // Rows written past ingest() (by a superuser, or before 0.2.0).
        run(&format!(
            "INSERT INTO secumon.metric_samples (time, agent_key, layout_id, vals) VALUES \
             ('294276-12-31 12:00:00+00', {key}, {layout}, '{{1}}'), \
             ('4713-06-01 00:00:00+00 BC', {key}, {layout}, '{{2}}'), \
             (date_trunc('day', now() - interval '3 days') + interval '1 hour', {key}, {layout}, '{{3}}')"
        ));
        let result = text("SELECT secumon.run_job('partition_upkeep')");
        assert!(result.starts_with("success"), "partition_upkeep stopped on a bad row: {result}");
        assert!(
            result.contains("2 rows outside the accepted time window left in default partitions"),
            "{result}"
        );
        assert_eq!(
            text("SELECT string_agg(vals[1]::text, ',' ORDER BY time) FROM secumon_partitions.metric_samples_default"),
            "2,1",
            "only the rows outside the window stay in the default partition"
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM secumon.partitions WHERE table_name = 'metric_samples' \
                 AND (range_start < now() - interval '2 years' OR range_start > now() + interval '2 years')"
            ),
            0,
            "no partition for 4713 BC or 294276"
        );
        assert_eq!(
            count("SELECT count(*) FROM secumon.metric_samples WHERE vals[1] = 3 AND tableoid::regclass::text NOT LIKE '%default'"),
            1,
            "the row of three days ago was moved into its day's partition"
        );
        let again = text("SELECT secumon.run_job('partition_upkeep')");
        assert!(again.starts_with("success"), "{again}");
    }

    // ---- Denial of service: ids -------------------------------------------------------------

    #[pg_test]
    fn a_refused_report_takes_no_series_ids() {
        setup();
        agent("wide-1", "acme");
        ingest("wide-1", &["cpu.usage_percent"]);
        let before = series_id_seq();
        let error = error_of(
            "SELECT secumon.ingest('wide-1', now(), (SELECT array_agg('cpu.s' || g) FROM generate_series(1, 200000) g), \
                                   (SELECT array_agg(1::float8) FROM generate_series(1, 200000) g))",
        );
        assert!(error.starts_with("54000: a report may carry at most 10000 series"), "{error}");
        assert_eq!(series_id_seq(), before, "a refused report used up series ids");
    }

    #[pg_test]
    fn a_new_layout_of_known_series_takes_no_series_ids() {
        setup();
        agent("order-1", "acme");
        ingest("order-1", &["cpu.usage_percent", "memory.usage_percent"]);
        let before = series_id_seq();
        run("SELECT secumon.ingest('order-1', now() - interval '2 minutes', ARRAY['memory.usage_percent', 'cpu.usage_percent'], ARRAY[1, 2]::float8[])");
        assert_eq!(count("SELECT count(*) FROM secumon.metric_layouts"), 2);
        assert_eq!(series_id_seq(), before, "known series took new ids");
    }

    #[pg_test]
    fn a_layout_of_many_long_series_is_stored() {
        setup();
        agent("many-1", "acme");
        let stored = Spi::get_one::<bool>(
            "SELECT secumon.ingest('many-1', now(), \
                    (SELECT array_agg('system.s' || md5(g::text) || left(md5((g + 1)::text), 28)) FROM generate_series(1, 1024) g), \
                    (SELECT array_agg(g::float8) FROM generate_series(1, 1024) g))",
        );
        assert_eq!(stored.map_err(|e| e.to_string()), Ok(Some(true)));
        assert_eq!(count("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'many-1'"), 1024);
    }

    #[pg_test]
    fn series_ids_beyond_32_bits_work_through_raw_rows_and_rollups() {
        setup();
        agent("long-run-1", "acme");
        // Where ~10,700 refused 200,000-series reports used to leave a 32-bit sequence.
        run("ALTER SEQUENCE secumon.metric_series_series_id_seq RESTART WITH 3000000000");
        run("SELECT secumon.ingest('long-run-1', now() - interval '1 minute', ARRAY['system.after_the_wrap'], ARRAY[42]::float8[])");
        assert_eq!(count("SELECT secumon._series_id('system.after_the_wrap')"), 3_000_000_000);
        assert_eq!(
            count("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'long-run-1' AND metric_name = 'after_the_wrap' AND value = 42"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM secumon.metrics_5min WHERE agent_id = 'long-run-1' AND metric_name = 'after_the_wrap' AND max = 42"),
            1,
            "the rollup path (summaries) carries a 64-bit series id"
        );
        assert_eq!(
            count("SELECT count(*) FROM secumon.metric_history('long-run-1', 'system.after_the_wrap', now() - interval '1 hour', now())"),
            1
        );
    }

    // ---- Denial of service: ownership ------------------------------------------------------

    #[pg_test]
    fn an_agent_an_operator_created_without_owner_is_not_claimed_by_registering() {
        setup();
        run("INSERT INTO secumon.agents (agent_id, tenant_id) VALUES ('preset-1', 'acme')");
        run("CREATE ROLE abuse_test_agent NOLOGIN IN ROLE secumon_agent");
        run("SET LOCAL SESSION AUTHORIZATION abuse_test_agent");
        let register = error_of("SELECT secumon.register_agent('preset-1', 'intruder')");
        assert!(
            register.starts_with("42501: agent \"preset-1\" has no owner role"),
            "an agent role claimed an operator's agent: {register}"
        );
        let report = error_of("SELECT secumon.ingest('preset-1', now(), ARRAY['cpu.usage_percent'], ARRAY[1]::float8[])");
        assert!(report.starts_with("42501: "), "{report}");
        run("RESET SESSION AUTHORIZATION");
        assert_eq!(
            text("SELECT coalesce(owner_role::text, 'none') || ' ' || coalesce(hostname, 'none') FROM secumon.agents WHERE agent_id = 'preset-1'"),
            "none none"
        );
        // Ownership is given explicitly.
        run("UPDATE secumon.agents SET owner_role = 'abuse_test_agent' WHERE agent_id = 'preset-1'");
        run("SET LOCAL SESSION AUTHORIZATION abuse_test_agent");
        assert_eq!(error_of("SELECT secumon.register_agent('preset-1', 'the-host')"), "ok");
        assert_eq!(
            error_of("SELECT secumon.ingest('preset-1', now(), ARRAY['cpu.usage_percent'], ARRAY[1]::float8[])"),
            "ok"
        );
    }

    // ---- Denial of service: JSON -----------------------------------------------------------

    #[pg_test]
    fn deep_or_huge_json_is_refused_at_the_door() {
        setup();
        agent("json-1", "acme");
        let too_deep = |sql: &str| {
            let error = error_of(sql);
            assert!(
                error.starts_with("54000: ") && error.contains("is nested too deeply: at most 32 levels"),
                "{sql}: {error}"
            );
        };
        too_deep(&format!("SELECT secumon.register_agent('json-2', 'h', NULL, NULL, {DEEP})"));
        too_deep(&format!("UPDATE secumon.agents SET labels = {DEEP} WHERE agent_id = 'json-1'"));
        too_deep(&format!(
            "SELECT secumon.ingest('json-1', now(), ARRAY['cpu.usage_percent'], ARRAY[1]::float8[], jsonb_build_array({DEEP}))"
        ));
        too_deep(&format!(
            "INSERT INTO secumon.notification_channels (name, type, settings) \
             VALUES ('deep', 'webhook', jsonb_build_object('url', 'https://example.com/h', 'headers', {DEEP}))"
        ));
        too_deep(&format!(
            "INSERT INTO secumon.alert_rules (name, metric_type, metric_name, condition, threshold, agent_labels) \
             VALUES ('deep', 'cpu', 'usage_percent', 'gt', 90, {DEEP})"
        ));
        too_deep(&format!("SELECT secumon.silence(interval '1 hour', 'deep', agent_labels => {DEEP})"));

        let too_large = error_of(
            "UPDATE secumon.agents SET labels = (SELECT jsonb_object_agg('label_' || g, repeat('x', 20)) FROM generate_series(1, 1000) g) \
             WHERE agent_id = 'json-1'",
        );
        assert!(too_large.starts_with("54000: agents.labels is too large"), "{too_large}");
        // Ordinary documents, up to the limit, go in.
        let nested_32 = "(repeat('{\"a\":', 31) || '1' || repeat('}', 31))::jsonb";
        assert_eq!(error_of(&format!("UPDATE secumon.agents SET labels = {nested_32} WHERE agent_id = 'json-1'")), "ok");
        assert_eq!(error_of("UPDATE secumon.agents SET labels = '{\"env\": \"prod\"}' WHERE agent_id = 'json-1'"), "ok");
    }
}
