//! SIGHUP (`systemctl reload`, log-rotation tools) reloads the agent's configuration: the
//! agent never dies of it, switches connection and interval, loses no spooled report, and
//! keeps running with the old configuration when the new file is invalid.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use secumon_e2e::*;

/// The whole config file, as the agent reads it; rewritten before each SIGHUP.
fn config_text(agent_id: &str, database: &str, interval: &str, spool: &Path) -> String {
    format!(
        "agent_id = {}\ndatabase = {}\ninterval = {}\nspool_dir = {}\n",
        toml_string(agent_id),
        toml_string(database),
        toml_string(interval),
        toml_string(&spool.display().to_string())
    )
}

fn write_config(agent: &Agent, text: &str) {
    std::fs::write(agent.config_path(), text).expect("expected to rewrite the agent config");
}

fn report_count(cluster: &Cluster, agent_id: &str) -> i64 {
    cluster
        .psql_one(&format!(
            "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = '{agent_id}'"
        ))
        .parse()
        .unwrap()
}

/// Report times of `agent_id` in `cluster`, oldest first, as seconds since the epoch.
fn report_times(cluster: &Cluster, agent_id: &str) -> Vec<f64> {
    cluster
        .psql(&format!(
            "SELECT DISTINCT extract(epoch FROM time)::float8 FROM secumon.metrics
              WHERE agent_id = '{agent_id}' ORDER BY 1"
        ))
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .map(|t| t.parse().unwrap())
        .collect()
}

fn max_gap(times: &[f64]) -> f64 {
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// Sends SIGHUP and checks that the agent neither died of it (status 129 / signal 1) nor
/// exited for any other reason.
fn reload(daemon: &mut AgentProcess, agent: &Agent) {
    daemon.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    if let Some(status) = daemon.try_wait() {
        panic!(
            "expected the agent to survive SIGHUP, it exited: {status}; agent log:\n{}",
            agent.stderr_log()
        );
    }
}

/// Waits until the agent log has `needle` `times` times.
fn wait_for_log(agent: &Agent, needle: &str, times: usize) -> bool {
    wait_until(Duration::from_secs(10), || {
        agent.stderr_log().matches(needle).count() >= times
    })
}

#[test]
fn sighup_keeps_the_agent_running_and_reporting() {
    const AGENT: &str = "reload-alive";
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_reload_alive");
    let agent = cluster.agent(&cluster.agent_config(&role).agent_id(AGENT).interval("1s"));
    let mut daemon = agent.spawn();
    assert!(
        wait_until(Duration::from_secs(30), || report_count(&cluster, AGENT)
            >= 3),
        "expected 3 reports at a 1 s interval before the SIGHUP; agent log:\n{}",
        agent.stderr_log()
    );

    reload(&mut daemon, &agent);
    // A burst, as several log-rotation hooks may send: still no exit.
    for _ in 0..5 {
        daemon.signal(libc::SIGHUP);
    }
    reload(&mut daemon, &agent);
    assert!(
        wait_for_log(&agent, "configuration reloaded", 2),
        "expected a \"configuration reloaded\" line per SIGHUP; agent log:\n{}",
        agent.stderr_log()
    );
    assert!(
        agent.stderr_log().contains("nothing changed"),
        "expected the reload of an unchanged file to say so; agent log:\n{}",
        agent.stderr_log()
    );

    let after_reload = report_count(&cluster, AGENT);
    assert!(
        wait_until(Duration::from_secs(15), || report_count(&cluster, AGENT)
            >= after_reload + 3),
        "expected reports to keep arriving after SIGHUP ({after_reload} so far); agent log:\n{}",
        agent.stderr_log()
    );
    assert!(daemon.is_running(), "expected the agent to be running");
    let status = daemon.stop().expect("expected the agent to stop");
    assert!(
        status.success(),
        "expected SIGTERM to still stop the agent cleanly after reloads, got {status}"
    );
    let times = report_times(&cluster, AGENT);
    assert!(
        max_gap(&times) <= 2.5,
        "expected no gap in the series across the reloads, max gap {:.1}s in {times:?}",
        max_gap(&times)
    );
}

#[test]
fn sighup_switches_to_a_new_database_role_and_interval() {
    const AGENT: &str = "reload-switch";
    let first = Cluster::start();
    let second = Cluster::start();
    let role_a = first.create_agent_role("agent_reload_a");
    let role_b = second.create_agent_role("agent_reload_b");
    let agent = first.agent(&first.agent_config(&role_a).agent_id(AGENT).interval("1s"));
    let spool = agent.default_spool_dir();
    let mut daemon = agent.spawn();
    assert!(
        wait_until(Duration::from_secs(30), || report_count(&first, AGENT) >= 3),
        "expected 3 reports in the first database; agent log:\n{}",
        agent.stderr_log()
    );

    // Another server, another role, another password, and a 2 s interval.
    let new_conninfo = second.conninfo_as(&role_b.name, &role_b.password);
    write_config(&agent, &config_text(AGENT, &new_conninfo, "2s", &spool));
    reload(&mut daemon, &agent);
    assert!(
        wait_until(Duration::from_secs(20), || report_count(&second, AGENT)
            >= 4),
        "expected reports in the second database after SIGHUP; agent log:\n{}",
        agent.stderr_log()
    );
    // Whatever the first database has now is all it gets.
    let first_final = report_count(&first, AGENT);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        report_count(&first, AGENT),
        first_final,
        "expected no report in the first database once the agent switched; agent log:\n{}",
        agent.stderr_log()
    );
    let before = report_count(&second, AGENT);
    assert!(
        wait_until(Duration::from_secs(10), || report_count(&second, AGENT)
            >= before + 2),
        "expected reports to keep arriving in the second database; agent log:\n{}",
        agent.stderr_log()
    );
    assert!(daemon.is_running(), "expected the agent to be running");
    daemon.stop();

    // The switch lost nothing and stored nothing twice: together the two databases hold
    // one series without a hole, and the second one at the new interval.
    let old = report_times(&first, AGENT);
    let new = report_times(&second, AGENT);
    assert!(
        old.iter().all(|t| !new.contains(t)),
        "expected no report stored in both databases: {old:?} / {new:?}"
    );
    let mut all: Vec<f64> = old.iter().chain(&new).copied().collect();
    all.sort_by(f64::total_cmp);
    assert!(
        max_gap(&all) <= 3.5,
        "expected no gap across the switch (max {:.1}s): first {old:?}, second {new:?}",
        max_gap(&all)
    );
    let spacing: Vec<f64> = new.windows(2).map(|w| w[1] - w[0]).collect();
    let tail = &spacing[spacing.len().saturating_sub(3)..];
    assert!(
        tail.iter().all(|gap| (1.5..=2.6).contains(gap)),
        "expected reports every 2 s after the reload, got gaps {spacing:?}"
    );

    let log = agent.stderr_log();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_else(|| panic!("expected a \"configuration reloaded\" line:\n{log}"));
    assert!(
        line.contains("database") && line.contains("interval 1s -> 2s"),
        "expected the reload line to name what changed: {line}"
    );
    for secret in [&role_a.password, &role_b.password] {
        assert!(
            !log.contains(secret.as_str()),
            "expected no password in the agent log:\n{log}"
        );
    }
    assert!(
        log.contains(&format!("connected to {}@", role_b.name)),
        "expected the agent to log the new connection:\n{log}"
    );
}


#[test]
fn sighup_during_an_outage_loses_no_spooled_report() {
    const AGENT: &str = "reload-outage";
    const APP: &str = "secumon-agent-reloaded";
    let mut cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_reload_outage");
    let agent = cluster.agent(&cluster.agent_config(&role).agent_id(AGENT).interval("1s"));
    let spool = agent.default_spool_dir();
    let mut daemon = agent.spawn();
    assert!(
        wait_until(Duration::from_secs(30), || report_count(&cluster, AGENT)
            >= 3),
        "expected 3 reports before the outage; agent log:\n{}",
        agent.stderr_log()
    );
    let before_outage = report_count(&cluster, AGENT);

    cluster.stop();
    std::thread::sleep(Duration::from_secs(3));
    // A changed connection string makes the shipper drop its (dead) connection and start
    // over with the new one while reports are waiting in the spool.
    let conninfo = format!(
        "{} application_name={APP}",
        cluster.conninfo_as(&role.name, &role.password)
    );
    write_config(&agent, &config_text(AGENT, &conninfo, "1s", &spool));
    reload(&mut daemon, &agent);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        daemon.is_running(),
        "expected the agent to keep running while the database is down"
    );
    cluster.start_again();

    let (caught_up, shape) = cluster.wait_for_gapless_series(AGENT, 2.5, 3.0, Duration::from_secs(90));
    assert!(
        caught_up,
        "expected every report spooled during the outage to arrive after the reload: \
         (max gap s, newest age s, reports) = {shape:?}; {before_outage} before the outage; \
         agent log:\n{}",
        agent.stderr_log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || cluster.psql_one(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APP}'"
        )) != "0"),
        "expected the agent to connect with the reloaded connection string; agent log:\n{}",
        agent.stderr_log()
    );
    daemon.stop();
    let total = report_count(&cluster, AGENT);
    assert!(
        total >= before_outage + 6,
        "expected the ~6 s outage to be covered by spooled reports: {before_outage} before, {total} in all"
    );
    let log = agent.stderr_log();
    assert!(
        log.contains("configuration reloaded") && !log.contains(role.password.as_str()),
        "expected a reload line and no password in the log:\n{log}"
    );
}

#[test]
fn an_invalid_config_is_logged_and_the_running_one_kept() {
    const AGENT: &str = "reload-invalid";
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_reload_invalid");
    let agent = cluster.agent(&cluster.agent_config(&role).agent_id(AGENT).interval("1s"));
    let spool = agent.default_spool_dir();
    let good = agent.config_text();
    let mut daemon = agent.spawn();
    assert!(
        wait_until(Duration::from_secs(30), || report_count(&cluster, AGENT)
            >= 3),
        "expected 3 reports before the bad reload; agent log:\n{}",
        agent.stderr_log()
    );

    // A bad value, and (separately) an unknown key next to a database that does not exist:
    // neither may be applied, in whole or in part.
    let closed = format!(
        "host=127.0.0.1 port={} dbname=nowhere user=nobody connect_timeout=2",
        free_port()
    );
    let bad_files = [
        (
            config_text(AGENT, &closed, "fast", &spool),
            "invalid interval \"fast\"",
        ),
        (
            format!(
                "{}intervall = \"2s\"\n",
                config_text(AGENT, &closed, "2s", &spool)
            ),
            "intervall",
        ),
    ];
    for (i, (text, problem)) in bad_files.iter().enumerate() {
        write_config(&agent, text);
        reload(&mut daemon, &agent);
        assert!(
            wait_for_log(&agent, "configuration not reloaded", i + 1),
            "expected a log line saying the configuration was not reloaded; agent log:\n{}",
            agent.stderr_log()
        );
        let log = agent.stderr_log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("configuration not reloaded"))
            .unwrap_or_default();
        assert!(
            line.contains(problem) && line.contains(&agent.config_path().display().to_string()),
            "expected the line to name the problem ({problem}) and the file: {line}"
        );

        // Still the old configuration: same database, still every second.
        let before = report_count(&cluster, AGENT);
        let started = Instant::now();
        assert!(
            wait_until(Duration::from_secs(15), || report_count(&cluster, AGENT)
                >= before + 4),
            "expected reports to keep arriving with the old configuration; agent log:\n{}",
            agent.stderr_log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "expected the old 1 s interval to stay in force, 4 reports took {:?}",
            started.elapsed()
        );
        assert!(daemon.is_running(), "expected the agent to keep running");
    }
    assert!(
        !agent.stderr_log().contains("configuration reloaded"),
        "expected nothing of the bad files to be applied; agent log:\n{}",
        agent.stderr_log()
    );

    // Fixed: the next SIGHUP applies it.
    write_config(&agent, &good.replace("\"1s\"", "\"2s\""));
    reload(&mut daemon, &agent);
    assert!(
        wait_for_log(&agent, "configuration reloaded", 1),
        "expected the fixed file to be applied; agent log:\n{}",
        agent.stderr_log()
    );
    assert!(daemon.is_running(), "expected the agent to keep running");
}

#[test]
fn sighup_during_once_does_not_kill_the_agent() {
    // A listener that never answers: `--once` sits in its connection attempt until the
    // connect_timeout, long enough to be signalled. No PostgreSQL involved.
    let listener = TcpListener::bind("127.0.0.1:0").expect("expected to bind a loopback port");
    let port = listener
        .local_addr()
        .expect("expected a local address")
        .port();
    let conninfo =
        format!("host=127.0.0.1 port={port} dbname=nowhere user=nobody connect_timeout=3");
    let agent = Agent::new(&AgentConfig::new(&conninfo).agent_id("reload-once"));
    let mut once = agent.spawn_with(&["--once"]);
    std::thread::sleep(Duration::from_secs(1));
    once.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    once.signal(libc::SIGHUP);
    let status = once
        .wait_timeout(Duration::from_secs(30))
        .expect("expected `--once` to finish");
    assert_eq!(
        status.code(),
        Some(1),
        "expected `--once` to ignore SIGHUP and fail on its connect timeout (exit 1), not die \
         of the signal: {status}; log:\n{}",
        agent.stderr_log()
    );
    let log = agent.stderr_log();
    assert!(
        log.contains("timeout") && !log.contains("panicked"),
        "expected the connect timeout as the reason; log:\n{log}"
    );
    drop(listener);
}
