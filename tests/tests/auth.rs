//! Authentication and tenancy end to end: real login roles on separate connections, row-level
//! security between two tenants, forged identities, refresh-token reuse (revoked by a worker in
//! its own transaction), throttling across connections and key rotation. See docs/auth.md.

use std::time::Duration;

use secumon_e2e::postgres::{Client, NoTls};
use secumon_e2e::*;

/// A report time inside the accepted window (secumon.ingest_window_past), `seconds` later than
/// an hour ago.
fn report_time(cluster: &Cluster, seconds: u32) -> String {
    cluster.psql_one(&format!(
        "SELECT (date_trunc('second', now()) - interval '1 hour' + interval '{seconds} seconds')::text"
    ))
}

/// Two tenants, an agent each (written through the agents' own write path), and SecuMon users:
/// alice (admin) and carol (readonly) in acme, bob (admin) in globex.
fn two_tenants(cluster: &Cluster) {
    cluster.psql("INSERT INTO secumon.tenants (tenant_id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex')");
    for (agent, tenant) in [("acme-web-1", "acme"), ("globex-db-1", "globex")] {
        let role = cluster.create_agent_role(&format!("agent_{}", agent.replace('-', "_")));
        let mut client = cluster.client_for(&role);
        register_agent(&mut client, agent).expect("expected the agent to register");
        assert!(Report::sample(agent, &report_time(cluster, 0))
            .ingest(&mut client)
            .expect("expected ingest to work under RLS"));
        cluster.psql(&format!(
            "UPDATE secumon.agents SET tenant_id = '{tenant}' WHERE agent_id = '{agent}'"
        ));
    }
    for (user, role, tenant) in [
        ("alice", "admin", "acme"),
        ("carol", "readonly", "acme"),
        ("bob", "admin", "globex"),
    ] {
        cluster.psql(&format!(
            "SELECT secumon.create_user('{user}', 'password-of-{user}', '{role}', '{user}@example.com', '{tenant}')"
        ));
    }
}

/// A login role for the web tier (member of secumon_web) and a connection for it.
fn web_client(cluster: &Cluster, name: &str) -> Client {
    let role = cluster.create_login_role(name, &["secumon_web"]);
    cluster.client_for(&role)
}

/// (token, refresh_token) of `user`'s login.
fn login(client: &mut Client, user: &str) -> (String, String) {
    let row = client
        .query_one(
            "SELECT token, refresh_token FROM secumon.login($1, $2)",
            &[&user, &format!("password-of-{user}")],
        )
        .unwrap_or_else(|e| panic!("expected {user} to log in: {}", error_text(&e)));
    (row.get(0), row.get(1))
}

fn authenticate(client: &mut Client, token: &str) {
    client
        .query_one("SELECT secumon.authenticate($1)", &[&token])
        .unwrap_or_else(|e| panic!("expected the token to authenticate: {}", error_text(&e)));
}

fn one_text(client: &mut Client, sql: &str) -> Option<String> {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("expected `{sql}` to work: {}", error_text(&e)))
        .get(0)
}

fn one_i64(client: &mut Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("expected `{sql}` to work: {}", error_text(&e)))
        .get(0)
}

#[test]
fn login_refresh_logout_round_trip() {
    let cluster = Cluster::start();
    two_tenants(&cluster);
    let mut web = web_client(&cluster, "web_round_trip");

    let (token, first_refresh) = login(&mut web, "alice");
    authenticate(&mut web, &token);
    assert_eq!(
        one_text(&mut web, "SELECT secumon.current_tenant()").as_deref(),
        Some("acme")
    );
    assert_eq!(
        one_text(&mut web, "SELECT secumon.current_role()").as_deref(),
        Some("admin")
    );

    let row = web
        .query_one(
            "SELECT token, refresh_token FROM secumon.refresh($1)",
            &[&first_refresh],
        )
        .unwrap();
    let (new_token, second_refresh): (String, String) = (row.get(0), row.get(1));
    assert_ne!(
        second_refresh, first_refresh,
        "expected refresh() to rotate the refresh token"
    );
    // Another connection verifies the new token: every backend shares keys and user state.
    let mut other = web_client(&cluster, "web_round_trip_2");
    authenticate(&mut other, &new_token);

    let revoked: i32 = web
        .query_one("SELECT secumon.logout($1)", &[&new_token])
        .unwrap()
        .get(0);
    assert_eq!(revoked, 1, "expected logout to revoke the one live refresh token");
    assert_eq!(
        one_text(&mut web, "SELECT secumon.current_tenant()"),
        None,
        "expected logout to end the identity"
    );
    assert_sqlstate(
        web.query_one("SELECT secumon.refresh($1)", &[&second_refresh]),
        "28000",
        "refresh after logout",
    );
    assert_sqlstate(
        web.query_one("SELECT secumon.verify_token($1)", &[&token]),
        "28000",
        "a token after logout",
    );
    // The other connection's identity ended too, at its next transaction.
    assert_eq!(
        one_text(&mut other, "SELECT secumon.current_tenant()"),
        None,
        "expected logout to end other sessions"
    );
}

#[test]
fn reusing_a_rotated_refresh_token_revokes_the_whole_session() {
    let cluster = Cluster::start();
    two_tenants(&cluster);
    let mut victim = web_client(&cluster, "web_victim");
    let mut thief = web_client(&cluster, "web_thief");

    let (_, stolen) = login(&mut victim, "alice");
    // The thief refreshes first and now holds the session's live token...
    let row = thief
        .query_one("SELECT token, refresh_token FROM secumon.refresh($1)", &[&stolen])
        .unwrap();
    let (thief_token, thief_refresh): (String, String) = (row.get(0), row.get(1));
    authenticate(&mut thief, &thief_token);
    // ...until the victim presents the same (now used) token.
    assert_sqlstate(
        victim.query_one("SELECT secumon.refresh($1)", &[&stolen]),
        "28000",
        "reuse of a rotated token",
    );

    let revoked = wait_until(Duration::from_secs(20), || {
        cluster.psql_one(
            "SELECT count(*) FILTER (WHERE revoked_reason = 'reuse') FROM secumon.refresh_tokens t \
               JOIN secumon.users u ON u.id = t.user_id WHERE u.username = 'alice'",
        ) == "1"
    });
    assert!(
        revoked,
        "expected the token revoker worker to revoke the thief's live token; log:\n{}",
        cluster.log()
    );
    assert_sqlstate(
        thief.query_one("SELECT secumon.refresh($1)", &[&thief_refresh]),
        "28000",
        "the thief's refresh",
    );
    assert_eq!(
        one_text(&mut thief, "SELECT secumon.current_tenant()"),
        None,
        "expected the thief's access token revoked"
    );
    assert!(
        cluster.log().contains("refresh token reuse"),
        "expected the revocation in the server log"
    );
    // The user logs in again normally.
    login(&mut victim, "alice");
}

#[test]
fn identity_cannot_be_forged_with_set_set_config_or_startup_options() {
    let cluster = Cluster::start();
    two_tenants(&cluster);
    let role = cluster.create_login_role("web_forger", &["secumon_web"]);
    let mut web = cluster.client_for(&role);
    let sees = |client: &mut Client| {
        one_i64(
            client,
            "SELECT (SELECT count(*) FROM secumon.agents) + (SELECT count(*) FROM secumon.metrics) \
                  + (SELECT count(*) FROM secumon.disk_metrics) + (SELECT count(*) FROM secumon.users) \
                  + (SELECT count(*) FROM secumon.tenants)",
        )
    };
    assert_eq!(
        sees(&mut web),
        0,
        "expected an unauthenticated web session to see nothing"
    );

    // A real identity in another session, whose handle the forger tries to reuse.
    let mut admin_session = web_client(&cluster, "web_alice");
    let (token, _) = login(&mut admin_session, "alice");
    authenticate(&mut admin_session, &token);
    let handle = one_text(&mut admin_session, "SELECT current_setting('secumon.session_identity')").unwrap();

    for attempt in [
        format!("SET secumon.session_identity = '{handle}'"),
        format!("SELECT set_config('secumon.session_identity', '{handle}', false)"),
        "SET secumon.auth_required = off".to_string(),
        "SELECT set_config('secumon.auth_required', 'off', false)".to_string(),
        "ALTER ROLE web_forger SET secumon.auth_required = off".to_string(),
        "SET secumon.jwt_secret = 'a-secret-the-forger-would-like-to-sign-with'".to_string(),
        "SHOW secumon.jwt_secret".to_string(),
        "SELECT * FROM secumon._jwt_keys".to_string(),
    ] {
        assert_sqlstate(web.batch_execute(&attempt), "42501", &attempt);
    }
    assert_eq!(sees(&mut web), 0, "expected nothing visible after the attempts");
    assert_eq!(
        one_i64(
            &mut web,
            "SELECT count(*) FROM pg_settings WHERE name = 'secumon.jwt_secret'"
        ),
        0,
        "expected the secret hidden from pg_settings"
    );
    // The connection's startup options are checked like SET.
    for option in [
        "secumon.auth_required=off",
        &format!("secumon.session_identity={handle}"),
    ] {
        let conninfo = format!(
            "{} options='-c {option}'",
            cluster.conninfo_as(&role.name, &role.password)
        );
        match Client::connect(&conninfo, NoTls) {
            Ok(mut client) => assert_eq!(sees(&mut client), 0, "expected -c {option} to have no effect"),
            Err(e) => assert_eq!(
                sqlstate(&e).as_deref(),
                Some("42501"),
                "-c {option}: {}",
                error_text(&e)
            ),
        }
    }
}

#[test]
fn the_identity_follows_set_semantics_and_discard_all_forgets_it() {
    let cluster = Cluster::start();
    two_tenants(&cluster);
    let mut web = web_client(&cluster, "web_semantics");
    let (alice, _) = login(&mut web, "alice");
    let (bob, _) = login(&mut web, "bob");

    // local => true: only until the end of the transaction (PostgREST / transaction pooling).
    let mut tx = web.transaction().unwrap();
    tx.query_one("SELECT secumon.authenticate($1, local => true)", &[&bob])
        .unwrap();
    let tenant: Option<String> = tx.query_one("SELECT secumon.current_tenant()", &[]).unwrap().get(0);
    assert_eq!(tenant.as_deref(), Some("globex"));
    tx.commit().unwrap();
    assert_eq!(
        one_text(&mut web, "SELECT secumon.current_tenant()"),
        None,
        "expected a local identity to end with its transaction"
    );

    authenticate(&mut web, &alice);
    let mut tx = web.transaction().unwrap();
    tx.query_one("SELECT secumon.authenticate($1)", &[&bob]).unwrap();
    tx.rollback().unwrap();
    assert_eq!(
        one_text(&mut web, "SELECT secumon.current_tenant()").as_deref(),
        Some("acme"),
        "expected ROLLBACK to undo authenticate()"
    );

    // Connection poolers reset sessions with DISCARD ALL.
    web.batch_execute("DISCARD ALL").unwrap();
    assert_eq!(
        one_text(&mut web, "SELECT secumon.current_tenant()"),
        None,
        "expected DISCARD ALL to forget the identity"
    );
}

#[test]
fn two_tenants_cannot_see_or_modify_each_others_rows() {
    let cluster = Cluster::start();
    two_tenants(&cluster);
    let mut web = web_client(&cluster, "web_tenancy");
    let (token, _) = login(&mut web, "alice");
    authenticate(&mut web, &token);

    // Every relation alice may read that carries an agent or a tenant: only acme's rows.
    let relations = cluster.psql(
        "SELECT c.relname, string_agg(a.attname, ',') FROM pg_class c \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname IN ('agent_id', 'tenant_id') AND NOT a.attisdropped \
          WHERE n.nspname = 'secumon' AND c.relkind IN ('r', 'p', 'v', 'm') \
            AND has_any_column_privilege('web_tenancy', c.oid, 'SELECT') \
          GROUP BY c.relname ORDER BY c.relname",
    );
    let names: Vec<String> = relations.iter().map(|r| r[0].clone().unwrap()).collect();
    for expected in [
        "agents",
        "disk_metrics",
        "metrics",
        "network_metrics",
        "process_metrics",
        "tenants",
        "users",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "expected web roles to read secumon.{expected}: {names:?}"
        );
    }
    for row in &relations {
        let (relation, columns) = (row[0].clone().unwrap(), row[1].clone().unwrap());
        for column in columns.split(',') {
            let foreign = one_i64(
                &mut web,
                &format!("SELECT count(*) FROM secumon.{relation} WHERE {column} IN ('globex', 'globex-db-1')"),
            );
            assert_eq!(
                foreign, 0,
                "expected no globex rows in secumon.{relation} for an acme user"
            );
        }
    }
    for (relation, expected) in [
        ("agents", 1),
        ("metrics", Report::sample("x", &report_time(&cluster, 0)).series.len() as i64),
        ("metric_samples", 1),
        ("disk_metrics", 1),
        ("network_metrics", 1),
        ("process_metrics", 2),
        ("tenants", 1),
        ("users", 2),
    ] {
        let n = one_i64(&mut web, &format!("SELECT count(*) FROM secumon.{relation}"));
        assert_eq!(n, expected, "expected acme's rows of secumon.{relation}");
    }

    // Writes to the other tenant's rows change nothing, or are refused.
    let updated = web
        .execute(
            "UPDATE secumon.agents SET labels = '{\"owned\": true}' WHERE agent_id = 'globex-db-1'",
            &[],
        )
        .unwrap();
    assert_eq!(
        updated, 0,
        "expected an UPDATE of another tenant's agent to change nothing"
    );
    for attempt in [
        "UPDATE secumon.agents SET tenant_id = 'acme' WHERE agent_id = 'globex-db-1'",
        "DELETE FROM secumon.agents",
        "INSERT INTO secumon.agents (agent_id, tenant_id) VALUES ('sneaky', 'globex')",
        "DELETE FROM secumon.disk_metrics",
        "INSERT INTO secumon.tenants VALUES ('evil', 'Evil')",
        "UPDATE secumon.users SET role = 'admin'",
        "SELECT password_hash FROM secumon.users",
        "SELECT * FROM secumon.refresh_tokens",
        "SELECT * FROM secumon_partitions.disk_metrics_default",
        "SELECT secumon.ingest('globex-db-1', now(), ARRAY['cpu.usage_percent'], ARRAY[1]::float8[])",
    ] {
        assert_sqlstate(web.batch_execute(attempt), "42501", attempt);
    }
    // And through the admin functions: globex's users are unknown to acme's admin.
    assert_sqlstate(
        web.query_one("SELECT secumon.set_user_role('bob', 'readonly')", &[]),
        "22023",
        "set_user_role(bob)",
    );
    assert_sqlstate(
        web.query_one("SELECT secumon.deactivate_user('bob')", &[]),
        "22023",
        "deactivate_user(bob)",
    );
    assert_sqlstate(
        web.query_one("SELECT secumon.revoke_sessions('bob')", &[]),
        "22023",
        "revoke_sessions(bob)",
    );
    assert_sqlstate(
        web.query_one(
            "SELECT secumon.create_user('mallory', 'password-mallory', 'admin', NULL, 'globex')",
            &[],
        ),
        "42501",
        "create_user in another tenant",
    );
    let sessions = one_i64(
        &mut web,
        "SELECT count(*) FROM secumon.list_sessions() WHERE username = 'bob'",
    );
    assert_eq!(sessions, 0);

    let untouched = cluster.psql_one(
        "SELECT format('%s|%s|%s|%s', (SELECT labels FROM secumon.agents WHERE agent_id = 'globex-db-1'), \
                (SELECT count(*) FROM secumon.disk_metrics), (SELECT role FROM secumon.users WHERE username = 'bob'), \
                (SELECT count(*) FROM secumon.tenants))",
    );
    assert_eq!(untouched, "{}|2|admin|3", "expected globex's rows untouched");

    // Operators (secumon_admin) see every tenant without a SecuMon identity.
    let operator = cluster.create_login_role("ops", &["secumon_admin"]);
    let mut ops = cluster.client_for(&operator);
    assert_eq!(one_i64(&mut ops, "SELECT count(*) FROM secumon.agents"), 2);
    assert_eq!(
        one_i64(&mut ops, "SELECT count(DISTINCT agent_id) FROM secumon.metrics"),
        2
    );
}

#[test]
fn readonly_users_cannot_write_and_admins_only_their_tenant() {
    let cluster = Cluster::start();
    two_tenants(&cluster);
    let mut web = web_client(&cluster, "web_readonly");
    let (carol, _) = login(&mut web, "carol");
    let (alice, _) = login(&mut web, "alice");
    let relabel = "UPDATE secumon.agents SET labels = '{\"team\": \"web\"}'";

    authenticate(&mut web, &carol);
    assert_eq!(
        one_i64(&mut web, "SELECT count(*) FROM secumon.agents"),
        1,
        "readonly users read"
    );
    assert_eq!(
        web.execute(relabel, &[]).unwrap(),
        0,
        "expected a readonly user's UPDATE to change nothing"
    );
    assert_sqlstate(
        web.query_one("SELECT secumon.create_user('dan', 'password-of-dan')", &[]),
        "42501",
        "readonly create_user",
    );

    authenticate(&mut web, &alice);
    assert_eq!(
        web.execute(relabel, &[]).unwrap(),
        1,
        "expected acme's admin to relabel acme's agent only"
    );
    assert_eq!(
        cluster
            .psql_one("SELECT string_agg(agent_id || '=' || labels::text, ' ' ORDER BY agent_id) FROM secumon.agents"),
        "acme-web-1={\"team\": \"web\"} globex-db-1={}"
    );
}

#[test]
fn agents_write_path_works_under_forced_row_level_security() {
    let cluster = Cluster::start();
    let forced = cluster.psql_one(
        "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class \
          WHERE relnamespace = 'secumon'::regnamespace AND relrowsecurity AND relforcerowsecurity \
            AND relname IN ('agents', 'metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics', 'tenants', 'users', 'refresh_tokens')",
    );
    if timescaledb_backend() {
        // The metric relations are views that filter as the policies do (docs/timescaledb.md).
        assert_eq!(forced, "agents,refresh_tokens,tenants,users");
        let barriers = cluster.psql_one(
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class \
              WHERE relnamespace = 'secumon'::regnamespace AND relkind = 'v' AND 'security_barrier=true' = ANY (reloptions) \
                AND relname IN ('metric_samples', 'disk_metrics', 'network_metrics', 'process_metrics')",
        );
        assert_eq!(barriers, "disk_metrics,metric_samples,network_metrics,process_metrics");
    } else {
        assert_eq!(
            forced,
            "agents,disk_metrics,metric_samples,network_metrics,process_metrics,refresh_tokens,tenants,users"
        );
    }
    assert_eq!(cluster.psql_one("SHOW secumon.auth_required"), "on");
    let role = cluster.create_agent_role("agent_under_rls");
    let mut agent = cluster.client_for(&role);
    register_agent(&mut agent, "rls-host").expect("expected register_agent to work under forced RLS");
    assert!(Report::sample("rls-host", &report_time(&cluster, 0)).ingest(&mut agent).unwrap());
    assert!(Report::sample("rls-host", &report_time(&cluster, 10))
        .ingest(&mut agent)
        .unwrap());
    assert_eq!(
        cluster.psql_one("SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = 'rls-host'"),
        "2"
    );
    assert_eq!(
        cluster.psql_one("SELECT count(*) FROM secumon.process_metrics WHERE agent_id = 'rls-host'"),
        "4"
    );
}

#[test]
fn throttling_locks_after_repeated_failures_across_connections_and_releases_after_the_window() {
    let cluster = Cluster::start_with(&[
        ("secumon.login_max_failures", "3"),
        ("secumon.login_max_failures_per_address", "6"),
        ("secumon.login_failure_window", "3s"),
    ]);
    two_tenants(&cluster);
    let role = cluster.create_login_role("web_throttle", &["secumon_web"]);
    let attempt = |user: &str, password: &str| {
        // A new connection each time: the counters are shared by every backend.
        let mut client = cluster.client_for(&role);
        client
            .query_one("SELECT token FROM secumon.login($1, $2)", &[&user, &password])
            .map(|r| r.get::<_, String>(0))
    };
    for _ in 0..3 {
        assert_sqlstate(attempt("alice", "guess"), "28P01", "a wrong password");
    }
    assert_sqlstate(
        attempt("alice", "password-of-alice"),
        "28P01",
        "the right password while the account is locked",
    );
    assert!(
        attempt("carol", "password-of-carol").is_ok(),
        "expected other accounts unaffected"
    );
    std::thread::sleep(Duration::from_millis(3200));
    assert!(
        attempt("alice", "password-of-alice").is_ok(),
        "expected the lock to end after the window"
    );

    // Per client address (every connection here comes from 127.0.0.1).
    for user in ["x1", "x2", "x3", "x4", "x5", "x6"] {
        assert_sqlstate(attempt(user, "guess"), "28P01", "guessing across accounts");
    }
    assert_sqlstate(
        attempt("bob", "password-of-bob"),
        "28P01",
        "a login from a locked address",
    );
    let locks =
        cluster.psql("SELECT kind, name, locked FROM secumon.login_lockouts() WHERE locked ORDER BY kind, name");
    assert!(
        locks.contains(&vec![
            Some("address".into()),
            Some("127.0.0.1".into()),
            Some("t".into())
        ]),
        "expected 127.0.0.1 locked: {locks:?}"
    );
    assert_eq!(cluster.psql_one("SELECT secumon.unlock_login(NULL, '127.0.0.1')"), "1");
    assert!(
        attempt("bob", "password-of-bob").is_ok(),
        "expected unlock_login() to release the address"
    );

    // PostgreSQL logs the statement of a failed query; not when it holds a password.
    let mut su = cluster.client();
    assert_sqlstate(
        su.batch_execute("SELECT secumon.login('carol', 'typed-into-the-wrong-box')"),
        "28P01",
        "a literal password",
    );
    assert_sqlstate(
        su.batch_execute("SELECT secumon.create_user('eve', 'pw-x9')"),
        "22023",
        "a too short password",
    );

    let log = cluster.log();
    assert!(
        !log.contains("typed-into-the-wrong-box") && !log.contains("pw-x9"),
        "expected no password in the log:\n{log}"
    );
    assert!(
        log.contains("login account \"alice\" locked"),
        "expected the account lock logged"
    );
    assert!(
        log.contains("login address \"127.0.0.1\" locked"),
        "expected the address lock logged"
    );
    assert!(
        !log.contains("password-of-alice") && !log.contains("guess"),
        "expected no password in the log"
    );
}

#[test]
fn deactivation_ends_sessions_in_other_backends() {
    let cluster = Cluster::start();
    two_tenants(&cluster);
    let mut web = web_client(&cluster, "web_deactivated");
    let (token, refresh) = login(&mut web, "carol");
    authenticate(&mut web, &token);
    assert_eq!(
        one_text(&mut web, "SELECT secumon.current_tenant()").as_deref(),
        Some("acme")
    );

    cluster.psql("SELECT secumon.deactivate_user('carol')");
    assert_eq!(
        one_text(&mut web, "SELECT secumon.current_tenant()"),
        None,
        "expected the identity gone at once"
    );
    assert_eq!(one_i64(&mut web, "SELECT count(*) FROM secumon.agents"), 0);
    assert_sqlstate(
        web.query_one("SELECT secumon.login('carol', 'password-of-carol')", &[]),
        "28P01",
        "login of a deactivated user",
    );
    assert_sqlstate(
        web.query_one("SELECT secumon.refresh($1)", &[&refresh]),
        "28000",
        "refresh of a deactivated user",
    );
}

#[test]
fn key_rotation_keeps_old_tokens_and_a_short_secret_is_refused() {
    let mut cluster = Cluster::start();
    two_tenants(&cluster);
    let mut web = web_client(&cluster, "web_rotation");
    let (old, _) = login(&mut web, "alice");
    let kid = cluster.psql_one("SELECT secumon.rotate_jwt_secret()");
    // Verified by a backend that cached the old key ring, and by a fresh one.
    authenticate(&mut web, &old);
    let mut fresh = web_client(&cluster, "web_rotation_2");
    authenticate(&mut fresh, &old);
    let (new, _) = login(&mut fresh, "alice");
    assert!(new.starts_with("eyJ"), "expected a JWT");
    authenticate(&mut web, &new);
    assert_eq!(
        cluster.psql_one("SELECT count(*) FROM secumon._jwt_keys WHERE retired_at IS NULL"),
        "1"
    );
    assert_eq!(
        cluster.psql_one(&format!(
            "SELECT count(*) FROM secumon._jwt_keys WHERE kid = '{kid}' AND retired_at IS NULL"
        )),
        "1"
    );

    // The superuser-only GUC: refused when short, and signs when set.
    let mut su = cluster.client();
    assert_sqlstate(
        su.batch_execute("ALTER SYSTEM SET secumon.jwt_secret = 'too-short'"),
        "22023",
        "a 9-byte secumon.jwt_secret",
    );
    su.batch_execute("ALTER SYSTEM SET secumon.jwt_secret = 'an-operator-chosen-secret-of-more-than-32-bytes'")
        .unwrap();
    cluster.restart();
    let mut web = web_client(&cluster, "web_rotation_3");
    let (guc_token, _) = login(&mut web, "alice");
    authenticate(&mut web, &guc_token);
    authenticate(&mut web, &new);
    assert!(
        !cluster.log().contains("an-operator-chosen-secret"),
        "expected the secret never logged"
    );
}
