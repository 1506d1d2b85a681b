//! What a `secumon_agent` login may and may not do through the write path.

use secumon_e2e::*;

/// A report time inside the accepted window (secumon.ingest_window_past), `seconds` later than
/// an hour ago.
fn report_time(cluster: &Cluster, seconds: u32) -> String {
    cluster.psql_one(&format!(
        "SELECT (date_trunc('second', now()) - interval '1 hour' + interval '{seconds} seconds')::text"
    ))
}

#[test]
fn agent_role_cannot_read_tables() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_reader_attempt");
    let mut client = cluster.client_for(&role);
    for relation in [
        "secumon.metrics",
        "secumon.agents",
        "secumon.disk_metrics",
        "secumon.network_metrics",
        "secumon.process_metrics",
        "secumon.metric_samples",
    ] {
        assert_sqlstate(
            client
                .query(&format!("SELECT * FROM {relation} LIMIT 1"), &[])
                .map(|r| r.len()),
            "42501",
            &format!("SELECT from {relation} as an agent role"),
        );
    }
}

#[test]
fn agent_role_cannot_write_for_another_agent() {
    let cluster = Cluster::start();
    let owner = cluster.create_agent_role("agent_owner");
    let intruder = cluster.create_agent_role("agent_intruder");
    let mut owner_client = cluster.client_for(&owner);
    let mut intruder_client = cluster.client_for(&intruder);

    let time = report_time(&cluster, 0);
    register_agent(&mut owner_client, "a").expect("expected the first role to register agent a");
    assert!(Report::sample("a", &time)
        .ingest(&mut owner_client)
        .expect("owner ingest"));

    assert_sqlstate(
        register_agent(&mut intruder_client, "a"),
        "42501",
        "register_agent('a') by a role that does not own agent a",
    );
    assert_sqlstate(
        Report::sample("a", &report_time(&cluster, 10)).ingest(&mut intruder_client),
        "42501",
        "ingest for agent a by a role that does not own it",
    );
    // The intruder may still register and write for an agent of its own.
    register_agent(&mut intruder_client, "b").expect("expected a second role to register agent b");
    assert!(Report::sample("b", &time)
        .ingest(&mut intruder_client)
        .expect("intruder ingest for b"));

    let reports_of_a =
        cluster.psql_one("SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = 'a'");
    assert_eq!(
        reports_of_a, "1",
        "expected only the owner's report stored for agent a"
    );
    let a_row = cluster.psql("SELECT hostname FROM secumon.agents WHERE agent_id = 'a'");
    assert_eq!(
        a_row,
        vec![vec![Some("a".to_string())]],
        "expected agent a's row untouched by the intruder"
    );
}

#[test]
fn ingest_is_idempotent() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_replayer");
    let mut client = cluster.client_for(&role);
    register_agent(&mut client, "replayed").unwrap();
    let time = report_time(&cluster, 0);
    let report = Report::sample("replayed", &time);
    assert!(
        report.ingest(&mut client).unwrap(),
        "expected the first ingest to return true (stored)"
    );
    assert!(
        !report.ingest(&mut client).unwrap(),
        "expected the replay to return false (already stored)"
    );

    let counts = cluster.psql(&format!(
        "SELECT (SELECT count(*) FROM secumon.metrics WHERE agent_id = 'replayed' AND time = '{time}'),
                (SELECT count(*) FROM secumon.metrics WHERE agent_id = 'replayed' AND time = '{time}'
                                                        AND metric_type = 'cpu' AND metric_name = 'usage_percent'),
                (SELECT count(*) FROM secumon.disk_metrics WHERE agent_id = 'replayed'),
                (SELECT count(*) FROM secumon.network_metrics WHERE agent_id = 'replayed'),
                (SELECT count(*) FROM secumon.process_metrics WHERE agent_id = 'replayed')"
    ));
    let series = report.series.len().to_string();
    assert_eq!(
        counts,
        vec![vec![Some(series), Some("1".into()), Some("1".into()), Some("1".into()), Some("2".into())]],
        "expected each sample of the report stored exactly once (all series, cpu.usage_percent, disks, interfaces, processes)"
    );
}
