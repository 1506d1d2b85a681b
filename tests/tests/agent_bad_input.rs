//! Bad configuration or an unusable environment: the agent refuses with a non-zero exit and one
//! stderr line that names the problem.

use std::time::Duration;

use secumon_e2e::*;

/// A connection string to a loopback port nobody listens on.
fn closed_port_conninfo() -> (String, u16) {
    let port = free_port();
    (
        format!(
            "host=127.0.0.1 port={port} dbname=secumon user=nobody password=x connect_timeout=5"
        ),
        port,
    )
}

#[test]
fn unreachable_database_is_reported() {
    let (conninfo, port) = closed_port_conninfo();
    let agent = Agent::new(&AgentConfig::new(&conninfo).agent_id("unreachable"));
    let output = agent.run_once();
    let line = assert_one_line_error(&output, &["connect", "refused"], "an unreachable database");
    assert!(
        line.contains(&port.to_string()) || line.to_lowercase().contains("127.0.0.1"),
        "expected the error to say which server was unreachable (127.0.0.1:{port}): {line}"
    );
}

#[test]
fn wrong_password_is_reported() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_wrong_password");
    let config = AgentConfig::new(&cluster.conninfo_as(&role.name, "certainly-not-the-password"))
        .agent_id("wrong-pw");
    let agent = cluster.agent(&config);
    let output = agent.run_once();
    assert_one_line_error(&output, &["password", "authentication"], "a wrong password");
    assert!(
        !stderr_text(&output).contains("certainly-not-the-password"),
        "expected the agent never to print the password:\n{}",
        stderr_text(&output)
    );
}

#[test]
fn unknown_config_key_is_named() {
    let (conninfo, _) = closed_port_conninfo();
    let agent = Agent::new(
        &AgentConfig::new(&conninfo)
            .agent_id("typo")
            .line("colour = \"blue\""),
    );
    let output = agent.run_once();
    assert_one_line_error(&output, &["colour"], "an unknown config key `colour`");
}

#[test]
fn malformed_toml_is_reported() {
    let agent = Agent::with_raw_config("database = \"host=127.0.0.1\ninterval = \n[[[\n");
    let output = agent.run_once();
    let path = agent.config_path().display().to_string();
    let line = assert_one_line_error(
        &output,
        &[&path, "toml", "parse"],
        "a malformed config file",
    );
    assert!(
        line.contains("agent.toml"),
        "expected the error to name the config file {path}: {line}"
    );
}

#[test]
fn unwritable_spool_dir_is_reported() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_bad_spool");
    // A path below a regular file can be created by nobody, not even root.
    let blocker = sys::fresh_temp_dir("blocker").join("not-a-directory");
    std::fs::write(&blocker, "a file, not a directory").unwrap();
    let spool = blocker.join("spool");
    let agent = cluster.agent(
        &cluster
            .agent_config(&role)
            .agent_id("bad-spool")
            .interval("1s")
            .spool_dir(&spool),
    );
    let mut daemon = agent.spawn();
    let status = daemon.wait_timeout(Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(blocker.parent().unwrap());
    let status = status.unwrap_or_else(|| {
        panic!(
            "expected the agent to refuse to start with an unusable spool dir {}; it kept running. log:\n{}",
            spool.display(),
            agent.stderr_log()
        )
    });
    let output = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: agent.stderr_log().into_bytes(),
    };
    assert_one_line_error(&output, &["spool"], "an unwritable spool dir");
}
