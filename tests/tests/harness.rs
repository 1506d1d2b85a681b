//! The harness itself: plain clusters (no extension) start, restart, accept SCRAM logins and
//! leave nothing behind.

use std::path::PathBuf;
use std::time::Duration;

use secumon_e2e::*;

#[test]
fn cluster_starts_restarts_and_cleans_up() {
    let dir: PathBuf;
    {
        let mut cluster = Cluster::builder()
            .without_extension()
            .setting("application_name", "e2e harness")
            .start();
        dir = cluster.socket_dir().to_path_buf();
        assert_eq!(cluster.psql_one("SELECT current_database()"), TEST_DATABASE);
        assert_eq!(cluster.psql_one("SHOW listen_addresses"), "127.0.0.1");
        assert_eq!(cluster.psql_one("SHOW port"), cluster.port().to_string());
        assert_eq!(cluster.psql_one("SHOW application_name"), "e2e harness");

        cluster.stop();
        assert!(!cluster.is_running());
        assert!(
            postgres::Client::connect(&cluster.conninfo(), postgres::NoTls).is_err(),
            "expected connections to fail while the cluster is stopped"
        );
        cluster.start_again();
        cluster.restart();
        assert_eq!(cluster.psql_one("SELECT 1"), "1");
        assert!(
            cluster.log().contains("database system is ready"),
            "expected a server log"
        );
        assert!(dir.exists());
    }
    assert!(
        !dir.exists(),
        "expected the cluster dir {} to be removed on drop",
        dir.display()
    );
}

#[test]
fn password_roles_log_in_with_scram_only() {
    let cluster = Cluster::builder().without_extension().start();
    let role = cluster.create_login_role("e2e_user", &[]);
    let mut client = cluster.client_as(&role.name, &role.password);
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(user, "e2e_user");
    let method = cluster.psql_one(
        "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'e2e_user'",
    );
    assert_eq!(
        method, "t",
        "expected the password stored as a SCRAM verifier"
    );
    let wrong = cluster.try_client_as(&role.name, "not-the-password");
    assert_sqlstate(wrong.map(|_| ()), "28P01", "a login with a wrong password");
}

#[test]
fn dropping_a_cluster_kills_its_agent_processes() {
    let cluster = Cluster::builder().without_extension().start();
    // Any long-running program stands in for the agent here; only the bookkeeping is tested.
    let child = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pid = child.id();
    cluster.adopt_process(pid);
    drop(cluster);
    // The drop also reaps it, so it is gone entirely, not a zombie.
    let exited = wait_until(Duration::from_secs(5), || !sys::process_alive(pid));
    assert!(
        exited,
        "expected the cluster's drop to terminate child {pid}"
    );
    drop(child);
}
