//! Custom and probe series in the database: stored through `secumon.ingest` by an agent role,
//! visible through `secumon.metrics` with their labels, queried, rolled up, alerted on per label
//! set with the labels in the notification, and refused with a clear error when malformed or
//! past the per-agent cap (docs/custom-series.md).

use std::time::Duration;

use secumon_e2e::receivers::HttpReceiver;
use secumon_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

/// A report of `agent` at `ago` seconds before now, through the agent role's own session.
fn report(client: &mut postgres::Client, agent: &str, ago: i64, series: &[(&str, f64)]) {
    ingest_series(client, agent, &format!("now() - interval '{ago} seconds'"), series);
}

fn error_of(client: &mut postgres::Client, sql: &str) -> (String, String) {
    match client.batch_execute(sql) {
        Ok(()) => panic!("expected an error from {sql}"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("expected a database error, got {e}"));
            (db.code().code().to_string(), db.message().to_string())
        }
    }
}

#[test]
fn custom_series_are_stored_queried_and_rolled_up() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("app_agent");
    let mut agent = cluster.client_for(&role);
    agent.batch_execute("SELECT secumon.register_agent('app-1', 'app-1')").unwrap();
    // Seven reports a minute apart: a gauge with two label sets, a counter growing 60 a minute,
    // a probe, and a host series beside them.
    for i in 0..7i64 {
        report(
            &mut agent,
            "app-1",
            420 - 60 * i,
            &[
                ("cpu.usage_percent", 10.0),
                (r#"custom.app_queue_depth{queue="mail"}"#, 5.0 + i as f64),
                (r#"custom.app_queue_depth{queue="sms"}"#, 1.0),
                (r#"custom.http_requests_total{code="500",path="/api"}"#, 1000.0 + 60.0 * i as f64),
                (r#"probe.up{probe="http",target="http://127.0.0.1:1/"}"#, 1.0),
            ],
        );
    }

    let rows = cluster.psql(
        "SELECT metric_type, metric_name, labels::text, count(*), max(value)
           FROM secumon.metrics WHERE agent_id = 'app-1' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    );
    let expected: Vec<Vec<Option<String>>> = [
        ["cpu", "usage_percent", "{}", "7", "10"],
        ["custom", "app_queue_depth", r#"{"queue": "mail"}"#, "7", "11"],
        ["custom", "app_queue_depth", r#"{"queue": "sms"}"#, "7", "1"],
        ["custom", "http_requests_total", r#"{"code": "500", "path": "/api"}"#, "7", "1360"],
        ["probe", "up", r#"{"probe": "http", "target": "http://127.0.0.1:1/"}"#, "7", "1"],
    ]
    .iter()
    .map(|r| r.iter().map(|c| Some(c.to_string())).collect())
    .collect();
    assert_eq!(rows, expected, "secumon.metrics shows every series with its labels");

    assert_eq!(
        cluster.psql_one(
            "SELECT string_agg(metric_name || ':' || kind, ',' ORDER BY series) FROM secumon.list_series('app-1') WHERE metric_type <> 'cpu'"
        ),
        "app_queue_depth:gauge,app_queue_depth:gauge,http_requests_total:counter,up:gauge"
    );
    // Labels in another order name the same series.
    assert_eq!(
        cluster.psql_one(
            r#"SELECT count(*) FROM secumon.series('app-1', 'custom.http_requests_total{path="/api",code="500"}', now() - interval '1 hour', now())"#
        ),
        "7"
    );
    let rate: f64 = cluster
        .psql_one(
            r#"SELECT round(avg(value)::numeric, 3) FROM secumon.rate('app-1', 'custom.http_requests_total{code="500",path="/api"}', now() - interval '1 hour', now())"#,
        )
        .parse()
        .expect("a rate");
    assert!((rate - 1.0).abs() < 0.01, "expected 60 a minute as 1/s, got {rate}");
    assert_eq!(
        cluster.psql_one(
            r#"SELECT value FROM secumon.percentiles('app-1', 'custom.app_queue_depth{queue="sms"}', now() - interval '1 hour', now(), '{0.5}')"#
        ),
        "1"
    );

    // The rollups hold them too, with their labels.
    let mut admin = cluster.client();
    run_job(&mut admin, "rollup_metrics_5min");
    assert_eq!(
        cluster.psql_one(
            r#"SELECT sum(count) FROM secumon.metrics_5min WHERE agent_id = 'app-1' AND metric_name = 'app_queue_depth' AND labels @> '{"queue": "mail"}'"#
        ),
        "7"
    );

    // Written through the view, with labels.
    cluster.psql(
        r#"INSERT INTO secumon.metrics (time, agent_id, metric_type, metric_name, value, labels)
           VALUES (now() - interval '10 seconds', 'app-1', 'custom', 'app_queue_depth', 42, '{"queue": "mail"}')"#,
    );
    assert_eq!(
        cluster.psql_one(
            r#"SELECT value FROM secumon.metrics WHERE agent_id = 'app-1' AND labels = '{"queue": "mail"}' ORDER BY time DESC LIMIT 1"#
        ),
        "42"
    );
}

#[test]
fn label_selectors_alert_per_label_set_and_notifications_carry_the_labels() {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    cluster.psql("UPDATE secumon.alert_rules SET enabled = false");
    let receiver = HttpReceiver::start();
    cluster.add_webhook_channel("hook", &receiver.url("/hook"));
    let gauge_rule = cluster.psql_one(
        r#"INSERT INTO secumon.alert_rules (name, metric_type, metric_name, series_labels, condition, threshold, severity)
           VALUES ('mail queue', 'custom', 'app_queue_depth', '{"queue": "mail"}', 'gt', 100, 'critical') RETURNING id"#,
    );
    let rate_rule = cluster.psql_one(
        r#"INSERT INTO secumon.alert_rules (name, metric_type, metric_name, series_labels, condition, threshold, severity)
           VALUES ('errors', 'custom', 'http_requests_total', '{"code": "500"}', 'gt', 5, 'warning') RETURNING id"#,
    );
    let mut client = cluster.client();
    client.batch_execute("SELECT secumon.register_agent('app-2', 'app-2')").unwrap();
    for (i, ago) in [40i64, 20].iter().enumerate() {
        report(
            &mut client,
            "app-2",
            *ago,
            &[
                (r#"custom.app_queue_depth{queue="mail"}"#, 150.0),
                (r#"custom.app_queue_depth{queue="sms"}"#, 150.0),
                // 200 more in 20 s: 10/s for code 500, 0/s for code 200
                (r#"custom.http_requests_total{code="200"}"#, 50.0),
                (r#"custom.http_requests_total{code="500"}"#, 100.0 + 200.0 * i as f64),
            ],
        );
    }
    let firing = |rule: &str| {
        cluster.psql(&format!(
            "SELECT series_key, state FROM secumon.alerts WHERE rule_id = '{rule}' ORDER BY series_key"
        ))
    };
    assert!(
        wait_until(WAIT, || firing(&gauge_rule).len() == 1 && firing(&rate_rule).len() == 1),
        "expected one alert per rule, got {:?} and {:?}",
        firing(&gauge_rule),
        firing(&rate_rule)
    );
    assert_eq!(firing(&gauge_rule), vec![vec![Some(r#"{queue="mail"}"#.to_string()), Some("firing".to_string())]]);
    assert_eq!(firing(&rate_rule), vec![vec![Some(r#"{code="500"}"#.to_string()), Some("firing".to_string())]]);
    let rate: f64 = cluster
        .psql_one(&format!("SELECT current_value FROM secumon.alerts WHERE rule_id = '{rate_rule}'"))
        .parse()
        .expect("a value");
    assert!((rate - 10.0).abs() < 0.5, "a counter rule compares the rate, got {rate}");

    let hooks = receiver.wait_for(2, WAIT);
    let mut labels: Vec<String> = hooks.iter().map(|r| r.json()["series_labels"].to_string()).collect();
    labels.sort();
    assert_eq!(labels, vec![r#"{"code":"500"}"#.to_string(), r#"{"queue":"mail"}"#.to_string()]);
    assert!(
        hooks.iter().any(|r| r.json()["summary"].as_str().is_some_and(|s| s.contains(r#"{queue="mail"}"#))),
        "the summary names the label set: {:?}",
        hooks.iter().map(|r| r.json()["summary"].clone()).collect::<Vec<_>>()
    );

    // Back to normal: both resolve.
    report(
        &mut client,
        "app-2",
        5,
        &[
            (r#"custom.app_queue_depth{queue="mail"}"#, 3.0),
            (r#"custom.app_queue_depth{queue="sms"}"#, 3.0),
            (r#"custom.http_requests_total{code="200"}"#, 50.0),
            (r#"custom.http_requests_total{code="500"}"#, 300.0),
        ],
    );
    assert!(
        wait_until(WAIT, || firing(&gauge_rule)[0][1].as_deref() == Some("resolved")
            && firing(&rate_rule)[0][1].as_deref() == Some("resolved")),
        "expected both alerts resolved, got {:?} and {:?}",
        firing(&gauge_rule),
        firing(&rate_rule)
    );
}

#[test]
fn bad_custom_series_are_refused_with_clear_errors_and_nothing_stored() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("bad_agent");
    let mut agent = cluster.client_for(&role);
    agent.batch_execute("SELECT secumon.register_agent('bad-1', 'bad-1')").unwrap();
    let ingest = |names: &str| {
        format!(
            "SELECT secumon.ingest('bad-1', now(), ARRAY[{names}]::text[], array_fill(1::float8, ARRAY[cardinality(ARRAY[{names}]::text[])]))"
        )
    };
    let cases = [
        (r#"'custom.bad name'"#, "22023", "invalid series name 'custom.bad name'"),
        (r#"'custom.x{b="1",a="2"}'"#, "22023", r#"not in canonical form; write it 'custom.x{a="2",b="1"}'"#),
        (r#"'custom.x{__name__="1"}'"#, "22023", "is reserved"),
        (r#"'custom.x{a="1",a="2"}'"#, "22023", "label a repeats"),
        (r#"'custom.x{a=1}'"#, "22023", "invalid labels"),
        (r#"'gpu.usage'"#, "22023", "invalid series name 'gpu.usage'"),
        (r#"'probe.up{target="' || repeat('x', 2000) || '"}'"#, "22023", "longer than 1024 bytes"),
    ];
    for (names, code, message) in cases {
        let (got_code, got_message) = error_of(&mut agent, &ingest(names));
        assert_eq!(got_code, code, "{names}: {got_message}");
        assert!(got_message.contains(message), "{names}: expected {message:?} in {got_message:?}");
    }
    let (code, message) = error_of(
        &mut agent,
        "SELECT secumon.ingest('bad-1', now(), ARRAY['custom.q'], ARRAY['NaN'::float8])",
    );
    assert_eq!((code.as_str(), message.contains("finite")), ("22023", true), "{message}");

    // A label explosion past the cap is refused whole, naming the cap; series already known
    // keep being accepted.
    cluster.psql("ALTER SYSTEM SET secumon.max_series_per_agent = 200");
    cluster.psql("SELECT pg_reload_conf()");
    let mut agent = cluster.client_for(&role);
    report(&mut agent, "bad-1", 30, &[("cpu.usage_percent", 1.0), (r#"custom.requests{user="u0"}"#, 1.0)]);
    let (code, message) = error_of(
        &mut agent,
        r#"SELECT secumon.ingest('bad-1', now() - interval '20 seconds',
                                 ARRAY['cpu.usage_percent'] || (SELECT array_agg(format('custom.requests{user="u%s"}', g)) FROM generate_series(0, 299) g),
                                 array_fill(1::float8, ARRAY[301]))"#,
    );
    assert_eq!(code, "54000", "{message}");
    assert!(
        message.contains("would store 301 distinct series, more than secumon.max_series_per_agent (200)"),
        "{message}"
    );
    report(&mut agent, "bad-1", 10, &[("cpu.usage_percent", 2.0), (r#"custom.requests{user="u0"}"#, 2.0)]);
    assert_eq!(
        cluster.psql_one("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'bad-1'"),
        "4",
        "the two accepted reports are stored whole, nothing of the refused ones"
    );
    // An agent role cannot lift the cap for itself.
    let (code, _) = error_of(&mut agent, "SET secumon.max_series_per_agent = 1000000");
    assert_eq!(code, "42501");
}

#[test]
fn a_compressed_day_answers_for_custom_series_as_before() {
    let cluster = Cluster::start();
    let mut client = cluster.client();
    client.batch_execute("SELECT secumon.register_agent('old-1', 'old-1')").unwrap();
    let day = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '3 days')";
    for i in 0..20i64 {
        ingest_series(
            &mut client,
            "old-1",
            &format!("{day} + interval '{} minutes'", 60 + 5 * i),
            &[
                ("cpu.usage_percent", i as f64),
                (r#"custom.app_queue_depth{queue="mail"}"#, 100.0 + i as f64),
                (r#"probe.up{probe="tcp",target="db:5432"}"#, (i % 2) as f64),
            ],
        );
    }
    run_job(&mut client, "partition_upkeep");
    let rows = "SELECT time, metric_type, metric_name, labels::text, value FROM secumon.metrics
                 WHERE agent_id = 'old-1' ORDER BY 1, 2, 3, 4";
    let before = cluster.psql(rows);
    assert_eq!(before.len(), 60);
    let partition = cluster.psql_one(&format!(
        "SELECT partition FROM secumon.partitions
          WHERE table_name = 'metric_samples' AND NOT is_default AND range_start = {day}"
    ));
    let result = cluster.psql_one(&format!("SELECT secumon.compress_partition('{partition}'::regclass)"));
    assert!(result.contains(if timescaledb_backend() { "compressed" } else { "smaller" }), "{result}");
    assert_eq!(cluster.psql(rows), before, "the compressed day answers exactly as before");
    assert_eq!(
        cluster.psql_one(&format!(
            r#"SELECT value FROM secumon.series('old-1', 'custom.app_queue_depth{{queue="mail"}}', {day}, {day} + interval '1 day', 100000) ORDER BY time DESC LIMIT 1"#
        )),
        "119"
    );
}

#[test]
fn a_counter_in_every_other_report_is_rated_across_the_gaps() {
    let cluster = Cluster::start();
    let mut client = cluster.client();
    client.batch_execute("SELECT secumon.register_agent('gap-1', 'gap-1')").unwrap();
    // An input slower than the agent: its counter has a value in every other report only
    // (the agent sends no value in between), 200 more every 40 s.
    for i in 0..8i64 {
        let value = if i % 2 == 0 { format!("{}", 100 + 100 * i) } else { "NULL".to_string() };
        client
            .batch_execute(&format!(
                "SELECT secumon.ingest('gap-1', now() - interval '{} seconds', ARRAY['cpu.usage_percent', 'custom.jobs_total'],
                                       ARRAY[1, {value}]::float8[])",
                170 - 20 * i
            ))
            .unwrap();
    }
    let alerts = cluster.psql(
        "SELECT agent_id, round(peak_value::numeric, 2) FROM secumon.test_rule('custom.jobs_total', 'gt', 1, '0', now() - interval '1 hour', now())",
    );
    assert_eq!(alerts, vec![vec![Some("gap-1".to_string()), Some("5.00".to_string())]], "one alert, at 5/s");
}
