//! The alert engine, end to end: a real cluster whose "secumon alert engine" worker evaluates
//! every second. Samples carry past timestamps, so each case plays out in seconds.

use std::time::Duration;

use secumon_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

fn engine() -> Cluster {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    // The seed's default rules watch the same series some tests use; keep each test to its rule.
    cluster.psql("UPDATE secumon.alert_rules SET enabled = false");
    cluster
}

/// Inserts `agent`'s samples of `metric` ("type.name"), given as (seconds before now, value).
fn samples(cluster: &Cluster, agent: &str, metric: &str, points: &[(i64, f64)]) {
    let (metric_type, metric_name) = metric.split_once('.').expect("metric is type.name");
    let values: Vec<String> = points
        .iter()
        .map(|(ago, v)| format!("(now() - interval '{ago} seconds', '{agent}', '{metric_type}', '{metric_name}', {v})"))
        .collect();
    cluster.psql(&format!(
        "INSERT INTO secumon.metrics (time, agent_id, metric_type, metric_name, value) VALUES {}",
        values.join(", ")
    ));
}

/// Evenly spaced samples, every 10 s from `from_ago` down to `to_ago` seconds before now.
fn run(from_ago: i64, to_ago: i64, value: f64) -> Vec<(i64, f64)> {
    (0..)
        .map(|i| from_ago - 10 * i)
        .take_while(|ago| *ago >= to_ago)
        .map(|ago| (ago, value))
        .collect()
}

fn rule(cluster: &Cluster, columns: &str, values: &str) -> String {
    cluster.psql_one(&format!("INSERT INTO secumon.alert_rules ({columns}) VALUES ({values}) RETURNING id"))
}

fn cpu_rule(cluster: &Cluster, name: &str, duration: &str, extra_columns: &str, extra_values: &str) -> String {
    rule(
        cluster,
        &format!("name, metric_type, metric_name, condition, threshold, duration, severity{extra_columns}"),
        &format!("'{name}', 'cpu', 'iowait_percent', 'gt', 50, '{duration}', 'critical'{extra_values}"),
    )
}

/// States of the rule's alerts for `agent`, oldest first.
fn states(cluster: &Cluster, rule_id: &str, agent: &str) -> Vec<String> {
    cluster
        .psql(&format!(
            "SELECT state FROM secumon.alerts WHERE rule_id = '{rule_id}' AND agent_id = '{agent}' ORDER BY created_at, started_at"
        ))
        .into_iter()
        .map(|row| row[0].clone().unwrap_or_default())
        .collect()
}

fn events(cluster: &Cluster, rule_id: &str) -> Vec<String> {
    cluster
        .psql(&format!("SELECT event FROM secumon.alert_events WHERE rule_id = '{rule_id}' ORDER BY id"))
        .into_iter()
        .map(|row| row[0].clone().unwrap_or_default())
        .collect()
}

fn wait_states(cluster: &Cluster, rule_id: &str, agent: &str, expected: &[&str]) {
    let mut seen = Vec::new();
    let ok = wait_until(WAIT, || {
        seen = states(cluster, rule_id, agent);
        seen == expected
    });
    assert!(ok, "expected alert states {expected:?} for {agent}, saw {seen:?}; engine job: {}", cluster.job("alert_evaluation"));
}

/// Waits for two more engine cycles, so that "nothing changed" is a real observation.
fn settle(cluster: &Cluster) {
    let cycles = || cluster.psql_one("SELECT runs FROM secumon.jobs WHERE job_name = 'alert_evaluation'").parse::<i64>().unwrap_or(0);
    let start = cycles();
    assert!(wait_until(WAIT, || cycles() >= start + 2), "the alert engine stopped cycling");
}

#[test]
fn fires_only_after_the_whole_duration() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait", "2 minutes", "", "");
    samples(&cluster, "h1", "cpu.iowait_percent", &run(300, 240, 10.0));
    samples(&cluster, "h1", "cpu.iowait_percent", &run(230, 170, 80.0)); // 60 s of breach
    wait_states(&cluster, &id, "h1", &["pending"]);
    settle(&cluster);
    assert_eq!(states(&cluster, &id, "h1"), ["pending"], "one minute of a two-minute rule is not enough");
    assert!(events(&cluster, &id).is_empty());

    samples(&cluster, "h1", "cpu.iowait_percent", &run(160, 100, 80.0)); // now 130 s
    wait_states(&cluster, &id, "h1", &["firing"]);
    let fired_after = cluster.psql_one(&format!(
        "SELECT extract(epoch FROM triggered_at - started_at) FROM secumon.alerts WHERE rule_id = '{id}'"
    ));
    assert_eq!(fired_after.parse::<f64>().unwrap(), 120.0, "fires exactly when the breach lasted the duration");
    assert_eq!(events(&cluster, &id), ["firing"]);
}

#[test]
fn pending_alert_resolves_without_firing() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait", "5 minutes", "", "");
    samples(&cluster, "h1", "cpu.iowait_percent", &run(120, 60, 90.0));
    wait_states(&cluster, &id, "h1", &["pending"]);
    samples(&cluster, "h1", "cpu.iowait_percent", &[(50, 5.0)]);
    wait_states(&cluster, &id, "h1", &["resolved"]);
    let fired = cluster.psql_one(&format!("SELECT triggered_at IS NULL FROM secumon.alerts WHERE rule_id = '{id}'"));
    assert_eq!(fired, "t", "a pending alert that resolves never fired");
    assert!(events(&cluster, &id).is_empty(), "no notification for an alert that never fired");
    let history = cluster.psql_one(&format!("SELECT fired FROM secumon.alert_history WHERE rule_id = '{id}'"));
    assert_eq!(history, "f");
}

#[test]
fn alert_resolves_and_fires_again() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait", "0", "", "");
    samples(&cluster, "h1", "cpu.iowait_percent", &[(60, 70.0)]);
    wait_states(&cluster, &id, "h1", &["firing"]);
    samples(&cluster, "h1", "cpu.iowait_percent", &[(50, 10.0)]);
    wait_states(&cluster, &id, "h1", &["resolved"]);
    samples(&cluster, "h1", "cpu.iowait_percent", &[(40, 99.0)]);
    wait_states(&cluster, &id, "h1", &["resolved", "firing"]);
    assert_eq!(events(&cluster, &id), ["firing", "resolved", "firing"]);
}

#[test]
fn global_rule_fires_once_per_agent() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait", "0", "", "");
    for agent in ["a1", "a2", "a3"] {
        samples(&cluster, agent, "cpu.iowait_percent", &run(60, 30, 75.0));
    }
    samples(&cluster, "quiet", "cpu.iowait_percent", &run(60, 30, 5.0));
    for agent in ["a1", "a2", "a3"] {
        wait_states(&cluster, &id, agent, &["firing"]);
    }
    samples(&cluster, "a1", "cpu.iowait_percent", &run(20, 0, 76.0));
    settle(&cluster);
    let per_agent = cluster.psql(&format!(
        "SELECT agent_id, count(*) FROM secumon.alerts WHERE rule_id = '{id}' GROUP BY 1 ORDER BY 1"
    ));
    assert_eq!(
        per_agent,
        vec![
            vec![Some("a1".to_string()), Some("1".to_string())],
            vec![Some("a2".to_string()), Some("1".to_string())],
            vec![Some("a3".to_string()), Some("1".to_string())],
        ]
    );
    assert_eq!(events(&cluster, &id).len(), 3, "one firing event per agent, none repeated");
}

#[test]
fn per_agent_rule_ignores_other_agents() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait on db1", "0", ", agent_id", ", 'db1'");
    samples(&cluster, "db1", "cpu.iowait_percent", &[(30, 60.0)]);
    samples(&cluster, "web1", "cpu.iowait_percent", &[(30, 60.0)]);
    wait_states(&cluster, &id, "db1", &["firing"]);
    settle(&cluster);
    assert!(states(&cluster, &id, "web1").is_empty(), "web1 is not watched by a rule for db1");
}

#[test]
fn label_selector_limits_a_rule_to_matching_agents() {
    let cluster = engine();
    cluster.psql("SELECT secumon.register_agent('prod1', 'prod1', NULL, NULL, '{\"env\":\"prod\"}')");
    cluster.psql("SELECT secumon.register_agent('dev1', 'dev1', NULL, NULL, '{\"env\":\"dev\"}')");
    let id = cpu_rule(&cluster, "prod iowait", "0", ", agent_labels", ", '{\"env\":\"prod\"}'");
    samples(&cluster, "prod1", "cpu.iowait_percent", &[(30, 60.0)]);
    samples(&cluster, "dev1", "cpu.iowait_percent", &[(30, 60.0)]);
    wait_states(&cluster, &id, "prod1", &["firing"]);
    settle(&cluster);
    assert!(states(&cluster, &id, "dev1").is_empty());
}

fn disk_report(cluster: &Cluster, agent: &str, ago: i64, root_pct: f64, data_pct: f64) {
    let disk = |mount: &str, pct: f64| {
        format!(
            "{{\"device\":\"/dev/{d}\",\"mountpoint\":\"{mount}\",\"fs_type\":\"ext4\",\"total_bytes\":1000,\
             \"used_bytes\":{u},\"free_bytes\":{f},\"usage_percent\":{pct},\"inodes_total\":100,\"inodes_used\":1,\
             \"inodes_usage_percent\":1,\"read_bytes\":0,\"write_bytes\":0,\"read_ops\":0,\"write_ops\":0}}",
            d = mount.trim_start_matches('/').replace('/', "_") + "x",
            u = (pct * 10.0) as i64,
            f = 1000 - (pct * 10.0) as i64
        )
    };
    cluster.psql(&format!(
        "SELECT secumon.ingest('{agent}', now() - interval '{ago} seconds', ARRAY['cpu.usage_percent'], ARRAY[1]::float8[], \
         '[{}, {}]', NULL, NULL)",
        disk("/", root_pct),
        disk("/data", data_pct)
    ));
}

#[test]
fn disk_rule_fires_per_filesystem() {
    let cluster = engine();
    cluster.psql("SELECT secumon.register_agent('fs1', 'fs1')");
    let id = rule(
        &cluster,
        "name, metric_type, metric_name, condition, threshold, severity",
        "'disk full', 'disk', 'usage_percent', 'gt', 90, 'critical'",
    );
    disk_report(&cluster, "fs1", 20, 40.0, 97.5);
    let mut fired = Vec::new();
    assert!(wait_until(WAIT, || {
        fired = cluster.psql(&format!("SELECT series_key, state, current_value FROM secumon.alerts WHERE rule_id = '{id}'"));
        !fired.is_empty()
    }));
    settle(&cluster);
    fired = cluster.psql(&format!("SELECT series_key, state, current_value FROM secumon.alerts WHERE rule_id = '{id}'"));
    assert_eq!(
        fired,
        vec![vec![Some("/data".to_string()), Some("firing".to_string()), Some("97.5".to_string())]],
        "only the full filesystem fires, and the alert names it"
    );
    let summary = cluster.psql_one(&format!("SELECT payload->>'summary' FROM secumon.alert_events WHERE rule_id = '{id}'"));
    assert!(summary.contains("(/data)"), "{summary}");
}

#[test]
fn network_rule_sees_counters_as_rates_per_interface() {
    let cluster = engine();
    cluster.psql("SELECT secumon.register_agent('n1', 'n1')");
    let id = rule(
        &cluster,
        "name, metric_type, metric_name, condition, threshold, severity",
        "'rx errors', 'network', 'errors_in', 'gt', 5, 'warning'",
    );
    // eth0: 100 errors per 10 s = 10/s. eth1: a counter reset (reboot) must not look like a burst.
    let base = cluster.psql_one("SELECT now()");
    for (ago, eth0, eth1) in [(40, 0, 5_000_000), (30, 100, 5_000_010), (20, 200, 3), (10, 300, 13)] {
        cluster.psql(&format!(
            "SELECT secumon.ingest('n1', '{base}'::timestamptz - interval '{ago} seconds', ARRAY['cpu.usage_percent'], ARRAY[1]::float8[], NULL, \
             '[{{\"interface\":\"eth0\",\"bytes_sent\":0,\"bytes_recv\":0,\"packets_sent\":0,\"packets_recv\":0,\"errors_in\":{eth0},\"errors_out\":0,\"drops_in\":0,\"drops_out\":0}}, \
               {{\"interface\":\"eth1\",\"bytes_sent\":0,\"bytes_recv\":0,\"packets_sent\":0,\"packets_recv\":0,\"errors_in\":{eth1},\"errors_out\":0,\"drops_in\":0,\"drops_out\":0}}]', NULL)"
        ));
    }
    let mut fired = Vec::new();
    assert!(wait_until(WAIT, || {
        fired = cluster.psql(&format!("SELECT series_key, current_value FROM secumon.alerts WHERE rule_id = '{id}'"));
        !fired.is_empty()
    }));
    settle(&cluster);
    fired = cluster.psql(&format!("SELECT series_key, current_value FROM secumon.alerts WHERE rule_id = '{id}'"));
    assert_eq!(fired, vec![vec![Some("eth0".to_string()), Some("10".to_string())]]);
}

#[test]
fn recovery_threshold_stops_flapping() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait", "0", ", recovery_threshold", ", 40");
    samples(&cluster, "h1", "cpu.iowait_percent", &[(100, 55.0)]);
    wait_states(&cluster, &id, "h1", &["firing"]);
    // Hovering around the threshold: below 50 but above 40 is not recovered.
    samples(&cluster, "h1", "cpu.iowait_percent", &[(90, 49.0), (80, 51.0), (70, 45.0)]);
    settle(&cluster);
    assert_eq!(states(&cluster, &id, "h1"), ["firing"], "no flapping between 45 and 51");
    samples(&cluster, "h1", "cpu.iowait_percent", &[(60, 39.0)]);
    wait_states(&cluster, &id, "h1", &["resolved"]);
    assert_eq!(events(&cluster, &id), ["firing", "resolved"]);
}

#[test]
fn no_data_rule_fires_for_a_silent_agent_and_resolves_when_data_returns() {
    let cluster = engine();
    samples(&cluster, "gone", "cpu.usage_percent", &[(60, 1.0)]);
    samples(&cluster, "alive", "cpu.usage_percent", &[(0, 1.0)]);
    let id = rule(
        &cluster,
        "name, kind, no_data_after, severity",
        "'agent down', 'no_data', '30 seconds', 'critical'",
    );
    wait_states(&cluster, &id, "gone", &["firing"]);
    assert!(states(&cluster, &id, "alive").len() <= 1);
    let metric = cluster.psql_one(&format!("SELECT metric_name FROM secumon.alerts WHERE rule_id = '{id}' AND agent_id = 'gone'"));
    assert_eq!(metric, "agent.no_data");
    samples(&cluster, "gone", "cpu.usage_percent", &[(0, 1.0)]);
    wait_states(&cluster, &id, "gone", &["resolved"]);
}

#[test]
fn silence_keeps_the_alert_visible_but_suppresses_its_notification() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait", "0", "", "");
    cluster.psql("SELECT secumon.silence('1 hour', 'kernel upgrade', agent_id => 'maint1')");
    samples(&cluster, "maint1", "cpu.iowait_percent", &[(30, 90.0)]);
    samples(&cluster, "other", "cpu.iowait_percent", &[(30, 90.0)]);
    wait_states(&cluster, &id, "maint1", &["firing"]);
    wait_states(&cluster, &id, "other", &["firing"]);
    let visible = cluster.psql(&format!(
        "SELECT agent_id, silenced FROM secumon.active_alerts WHERE rule_id = '{id}' ORDER BY agent_id"
    ));
    assert_eq!(
        visible,
        vec![
            vec![Some("maint1".to_string()), Some("t".to_string())],
            vec![Some("other".to_string()), Some("f".to_string())]
        ]
    );
    let silenced = cluster.psql(&format!(
        "SELECT agent_id, silenced FROM secumon.alert_events WHERE rule_id = '{id}' ORDER BY agent_id"
    ));
    assert_eq!(
        silenced,
        vec![
            vec![Some("maint1".to_string()), Some("t".to_string())],
            vec![Some("other".to_string()), Some("f".to_string())]
        ],
        "the silenced transition is recorded but marked, so it is not notified"
    );
}

#[test]
fn acknowledged_alert_records_who_and_why_and_stops_repeats() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait", "0", ", repeat_interval", ", '1 second'");
    samples(&cluster, "h1", "cpu.iowait_percent", &[(30, 90.0)]);
    wait_states(&cluster, &id, "h1", &["firing"]);
    let alert = cluster.psql_one(&format!("SELECT id FROM secumon.alerts WHERE rule_id = '{id}'"));
    cluster.psql(&format!("SELECT secumon.ack_alert('{alert}', 'looking into it')"));
    let acked = cluster.psql(&format!("SELECT acknowledged_by, ack_comment FROM secumon.alerts WHERE id = '{alert}'"));
    assert_eq!(acked, vec![vec![Some("postgres".to_string()), Some("looking into it".to_string())]]);
    let repeats_at_ack = events(&cluster, &id).iter().filter(|e| *e == "repeat").count();
    settle(&cluster);
    settle(&cluster);
    let evs = events(&cluster, &id);
    assert!(evs.contains(&"acknowledged".to_string()), "{evs:?}");
    assert_eq!(evs.iter().filter(|e| *e == "repeat").count(), repeats_at_ack, "no repeats after ack: {evs:?}");
    let err = cluster.client().query("SELECT secumon.ack_alert('00000000-0000-0000-0000-000000000000', 'x')", &[]).unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22023"));
}

#[test]
fn repeat_interval_renotifies_a_firing_alert() {
    let cluster = engine();
    let id = cpu_rule(&cluster, "iowait", "0", ", repeat_interval", ", '1 second'");
    samples(&cluster, "h1", "cpu.iowait_percent", &[(30, 90.0)]);
    wait_states(&cluster, &id, "h1", &["firing"]);
    assert!(
        wait_until(WAIT, || events(&cluster, &id).iter().filter(|e| *e == "repeat").count() >= 2),
        "expected repeat events, saw {:?}",
        events(&cluster, &id)
    );
    assert_eq!(states(&cluster, &id, "h1"), ["firing"], "repeats do not open new alerts");
}

#[test]
fn restart_while_pending_and_firing_neither_loses_nor_duplicates() {
    let mut cluster = engine();
    let slow = cpu_rule(&cluster, "slow", "10 minutes", "", "");
    let fast = rule(
        &cluster,
        "name, metric_type, metric_name, condition, threshold, severity",
        "'fast', 'memory', 'usage_percent', 'gt', 50, 'warning'",
    );
    samples(&cluster, "h1", "cpu.iowait_percent", &run(120, 60, 90.0));
    samples(&cluster, "h1", "memory.usage_percent", &[(60, 90.0)]);
    wait_states(&cluster, &slow, "h1", &["pending"]);
    wait_states(&cluster, &fast, "h1", &["firing"]);
    let before = cluster.psql(&format!("SELECT id, state, started_at FROM secumon.alerts WHERE rule_id IN ('{slow}', '{fast}') ORDER BY state"));

    cluster.restart();
    samples(&cluster, "h1", "cpu.iowait_percent", &run(50, 0, 90.0));
    samples(&cluster, "h1", "memory.usage_percent", &run(50, 0, 91.0));
    settle(&cluster);
    let after = cluster.psql(&format!("SELECT id, state, started_at FROM secumon.alerts WHERE rule_id IN ('{slow}', '{fast}') ORDER BY state"));
    assert_eq!(before, after, "the same alerts, in the same states, from the same start");
    assert_eq!(events(&cluster, &fast), ["firing"], "the firing alert is not notified twice");

    cluster.crash();
    cluster.start_again();
    settle(&cluster);
    let after_crash = cluster.psql(&format!("SELECT id, state, started_at FROM secumon.alerts WHERE rule_id IN ('{slow}', '{fast}') ORDER BY state"));
    assert_eq!(before, after_crash, "an immediate shutdown loses nothing either");
    assert_eq!(events(&cluster, &fast), ["firing"]);
}

#[test]
fn a_failing_rule_is_marked_and_the_others_keep_working() {
    let cluster = engine();
    let broken = cpu_rule(&cluster, "broken", "0", "", "");
    // Only a superuser bypassing validation can store such a rule; the engine must survive it.
    cluster.psql(&format!(
        "ALTER TABLE secumon.alert_rules DISABLE TRIGGER alert_rules_validate; \
         UPDATE secumon.alert_rules SET condition = 'bogus' WHERE id = '{broken}'; \
         ALTER TABLE secumon.alert_rules ENABLE TRIGGER alert_rules_validate;"
    ));
    let good = rule(
        &cluster,
        "name, metric_type, metric_name, condition, threshold, severity",
        "'good', 'cpu', 'iowait_percent', 'gt', 60, 'warning'",
    );
    samples(&cluster, "h1", "cpu.iowait_percent", &[(30, 90.0)]);
    wait_states(&cluster, &good, "h1", &["firing"]);
    // A cycle that met this test's own ALTER/UPDATE may record a lock timeout first; the rule's
    // own error replaces it at the next cycle.
    let mut error = String::new();
    assert!(
        wait_until(WAIT, || {
            error = cluster.psql_one(&format!("SELECT coalesce(last_error, '') FROM secumon.alert_rule_status WHERE id = '{broken}'"));
            error.contains("invalid condition")
        }),
        "expected the broken rule to show its invalid condition, last error: {error:?}"
    );
    let good_status = cluster.psql_one(&format!("SELECT last_error IS NULL FROM secumon.alert_rule_status WHERE id = '{good}'"));
    assert_eq!(good_status, "t");
}
