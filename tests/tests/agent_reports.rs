//! The real agent, run once as an agent login role, fills every metric relation.

use std::time::Duration;

use secumon_e2e::*;

/// An agent config for `role`; includes loopback interfaces when the machine has no other.
fn config(cluster: &Cluster, role: &Role, agent_id: &str) -> AgentConfig {
    let config = cluster.agent_config(role).agent_id(agent_id).interval("1s");
    if non_loopback_interfaces().is_empty() {
        config.line("[network]").line("include_loopback = true")
    } else {
        config
    }
}


#[test]
fn agent_once_writes_every_table() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_once");
    let agent = cluster.agent(&config(&cluster, &role, "once-host"));
    agent.run_once_ok();

    let agents = cluster.psql(
        "SELECT hostname, agent_version, last_seen > now() - interval '5 minutes', first_seen <= last_seen
           FROM secumon.agents WHERE agent_id = 'once-host'",
    );
    assert_eq!(
        agents.len(),
        1,
        "expected one secumon.agents row for once-host, got {agents:?}"
    );
    let agent_row = &agents[0];
    assert_eq!(
        agent_row[0].as_deref(),
        Some(hostname().as_str()),
        "expected the machine's hostname"
    );
    assert!(
        agent_row[1].as_deref().is_some_and(|v| !v.is_empty()),
        "expected agent_version to be set, got {agent_row:?}"
    );
    assert_eq!(
        agent_row[2].as_deref(),
        Some("t"),
        "expected last_seen to be recent, got {agent_row:?}"
    );
    assert_eq!(
        agent_row[3].as_deref(),
        Some("t"),
        "expected first_seen <= last_seen, got {agent_row:?}"
    );

    assert_eq!(
        cluster.psql_one(
            "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = 'once-host'"
        ),
        "1",
        "expected exactly one report from --once"
    );
    let missing = cluster.psql(
        "SELECT s FROM unnest(ARRAY['cpu.usage_percent', 'cpu.load_avg_1', 'cpu.context_switches',
                                    'memory.usage_percent', 'memory.total_bytes', 'memory.available_bytes',
                                    'system.uptime_seconds', 'system.processes_total']) AS s
          WHERE NOT EXISTS (SELECT 1 FROM secumon.metrics m
                             WHERE m.agent_id = 'once-host' AND m.metric_type || '.' || m.metric_name = s
                               AND m.value IS NOT NULL)",
    );
    assert!(
        missing.is_empty(),
        "expected cpu, memory and system series in secumon.metrics; missing: {missing:?}"
    );

    let bad_percent = cluster.psql(
        "SELECT 'metrics ' || metric_type || '.' || metric_name || ' = ' || value
           FROM secumon.metrics WHERE agent_id = 'once-host' AND metric_name LIKE '%percent'
            AND NOT value BETWEEN 0 AND 100
         UNION ALL
         SELECT 'disk ' || mountpoint || ' ' || coalesce(usage_percent::text, 'NULL') || ' / ' || coalesce(inodes_usage_percent::text, 'NULL')
           FROM secumon.disk_metrics WHERE agent_id = 'once-host'
            AND (usage_percent IS NULL OR NOT usage_percent BETWEEN 0 AND 100
                 OR NOT coalesce(inodes_usage_percent, 0) BETWEEN 0 AND 100)
         UNION ALL
         SELECT 'process ' || pid || ' ' || coalesce(memory_percent::text, 'NULL') || ' / ' || coalesce(cpu_percent::text, 'NULL')
           FROM secumon.process_metrics WHERE agent_id = 'once-host'
            AND (NOT memory_percent BETWEEN 0 AND 100 OR cpu_percent < 0)",
    );
    assert!(
        bad_percent.is_empty(),
        "expected every percentage within 0..=100; outside: {bad_percent:?}"
    );

    let disks = cluster.psql(
        "SELECT count(*), count(*) FILTER (WHERE mountpoint = '/'), bool_and(total_bytes > 0 AND used_bytes <= total_bytes)
           FROM secumon.disk_metrics WHERE agent_id = 'once-host'",
    );
    assert_ne!(
        disks[0][0].as_deref(),
        Some("0"),
        "expected rows in secumon.disk_metrics"
    );
    assert_eq!(
        disks[0][1].as_deref(),
        Some("1"),
        "expected the root filesystem once in disk_metrics, got {disks:?}"
    );
    assert_eq!(
        disks[0][2].as_deref(),
        Some("t"),
        "expected 0 <= used_bytes <= total_bytes > 0, got {disks:?}"
    );

    let interfaces = cluster.psql(
        "SELECT interface FROM secumon.network_metrics WHERE agent_id = 'once-host' ORDER BY 1",
    );
    let expected_interfaces = non_loopback_interfaces();
    if expected_interfaces.is_empty() {
        assert!(
            !interfaces.is_empty(),
            "expected the loopback interface in network_metrics"
        );
    } else {
        let seen: Vec<String> = interfaces
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect();
        for interface in &expected_interfaces {
            assert!(
                seen.contains(interface),
                "expected interface {interface} in network_metrics, got {seen:?}"
            );
        }
    }

    let processes = cluster.psql(
        "SELECT count(*), count(*) FILTER (WHERE name IS NOT NULL AND name <> '' AND pid > 0)
           FROM secumon.process_metrics WHERE agent_id = 'once-host'",
    );
    assert_ne!(
        processes[0][0].as_deref(),
        Some("0"),
        "expected rows in secumon.process_metrics"
    );
    assert_eq!(
        processes[0][0], processes[0][1],
        "expected every process with a pid and a name, got {processes:?}"
    );
}

#[test]
fn counters_are_monotonic_between_reports() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_counters");
    let agent = cluster.agent(&config(&cluster, &role, "counter-host"));
    agent.run_once_ok();
    std::thread::sleep(Duration::from_secs(1));
    // Some disk and network activity between the two reports.
    cluster.psql(
        "CREATE TABLE busy AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g; CHECKPOINT",
    );
    agent.run_once_ok();

    assert_eq!(
        cluster.psql_one(
            "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = 'counter-host'"
        ),
        "2",
        "expected two reports with distinct times"
    );
    // Every counter, per key, compared with the previous report: rows where it went down.
    let decreases = cluster.psql(
        "WITH c AS (
             SELECT 'cpu.' || metric_name AS counter, '' AS key, time, value::numeric AS v
               FROM secumon.metrics
              WHERE agent_id = 'counter-host' AND metric_type = 'cpu' AND metric_name IN ('context_switches', 'interrupts')
             UNION ALL
             SELECT 'network.' || x.counter, n.interface, n.time, x.v
               FROM secumon.network_metrics n,
                    LATERAL (VALUES ('bytes_sent', n.bytes_sent::numeric), ('bytes_recv', n.bytes_recv::numeric),
                                    ('packets_sent', n.packets_sent::numeric), ('packets_recv', n.packets_recv::numeric)) AS x(counter, v)
              WHERE n.agent_id = 'counter-host'
             UNION ALL
             SELECT 'disk.' || x.counter, d.device || ' ' || d.mountpoint, d.time, x.v
               FROM secumon.disk_metrics d,
                    LATERAL (VALUES ('read_bytes', d.read_bytes::numeric), ('write_bytes', d.write_bytes::numeric),
                                    ('read_ops', d.read_ops::numeric), ('write_ops', d.write_ops::numeric)) AS x(counter, v)
              WHERE d.agent_id = 'counter-host'),
         ordered AS (
             SELECT counter, key, time, v, lag(v) OVER (PARTITION BY counter, key ORDER BY time) AS previous FROM c)
         SELECT counter || ' ' || key || ': ' || previous || ' -> ' || v FROM ordered WHERE v < previous",
    );
    assert!(
        decreases.is_empty(),
        "expected counters never to decrease between reports: {decreases:?}"
    );

    let compared = cluster.psql(
        "SELECT (SELECT count(*) FROM secumon.metrics WHERE agent_id = 'counter-host' AND metric_type = 'cpu'
                                                       AND metric_name = 'context_switches'),
                (SELECT count(*) FROM secumon.network_metrics WHERE agent_id = 'counter-host' AND bytes_recv IS NOT NULL),
                (SELECT count(*) FROM secumon.disk_metrics WHERE agent_id = 'counter-host' AND read_bytes IS NOT NULL)",
    );
    let row = &compared[0];
    assert_eq!(
        row[0].as_deref(),
        Some("2"),
        "expected cpu.context_switches in both reports, got {row:?}"
    );
    for (i, what) in [(1, "network bytes"), (2, "disk read/write bytes")] {
        let n: i64 = row[i].as_deref().unwrap_or("0").parse().unwrap();
        assert!(
            n >= 2,
            "expected {what} counters in both reports, got {row:?}"
        );
    }
}
