//! A database outage while the agent runs: it spools, reconnects and replays, so the stored
//! series has no hole and no duplicate.

use std::time::Duration;

use secumon_e2e::*;

const AGENT: &str = "outage-host";

fn report_count(cluster: &Cluster) -> i64 {
    cluster
        .psql_one(&format!(
            "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = '{AGENT}'"
        ))
        .parse()
        .unwrap()
}


#[test]
fn outage_loses_nothing_and_duplicates_nothing() {
    let mut cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_outage");
    let agent = cluster.agent(&cluster.agent_config(&role).agent_id(AGENT).interval("1s"));
    let mut daemon = agent.spawn();

    assert!(
        wait_until(Duration::from_secs(30), || report_count(&cluster) >= 3),
        "expected the agent daemon to store 3 reports at a 1 s interval; agent log:\n{}",
        agent.stderr_log()
    );
    let before_outage = report_count(&cluster);

    cluster.stop();
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        daemon.is_running(),
        "expected the agent to keep running while the database is down"
    );
    cluster.start_again();

    // Caught up: the newest report is fresh and no gap remains anywhere in the series.
    let (caught_up, shape) = cluster.wait_for_gapless_series(AGENT, 2.5, 3.0, Duration::from_secs(90));
    daemon.stop();
    assert!(
        caught_up,
        "expected the agent to replay its spool after the outage: (max gap s, newest age s, reports) = \
         {shape:?}; before the outage there were {before_outage}; agent log:\n{}",
        agent.stderr_log()
    );

    let total = report_count(&cluster);
    assert!(
        total >= before_outage + 6,
        "expected the ~6 s outage to be covered by spooled reports: {before_outage} before, {total} in all"
    );
    let duplicated = cluster.psql(&format!(
        "SELECT time::text, metric_type || '.' || metric_name, count(*) FROM secumon.metrics
          WHERE agent_id = '{AGENT}' GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 5"
    ));
    assert!(
        duplicated.is_empty(),
        "expected no sample stored twice, got {duplicated:?}"
    );
    for table in ["disk_metrics", "network_metrics"] {
        let key = if table == "disk_metrics" {
            "mountpoint"
        } else {
            "interface"
        };
        let duplicated = cluster.psql(&format!(
            "SELECT time::text, {key}, count(*) FROM secumon.{table}
              WHERE agent_id = '{AGENT}' GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 5"
        ));
        assert!(
            duplicated.is_empty(),
            "expected no {table} row stored twice, got {duplicated:?}"
        );
    }

    let log = agent.stderr_log().to_lowercase();
    assert!(
        ["reconnect", "replay", "spool"]
            .iter()
            .any(|word| log.contains(word)),
        "expected the agent log to mention reconnecting or replaying the spool:\n{}",
        agent.stderr_log()
    );
}
