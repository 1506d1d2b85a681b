//! Auto-registration end to end: an operator or a tenant's SecuMon admin creates an enrollment
//! token; the real agent, given only the connection of a role in secumon_enroll and that
//! token, enrolls into the token's tenant, saves its own login and ships metrics as it; bad
//! tokens fail with one message and create nothing; the enrolling role can do nothing else.
//! See docs/enrollment.md.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use secumon_e2e::postgres::Client;
use secumon_e2e::*;

const INVALID: &str = "enrollment token is invalid, expired or used up";

/// Tenant acme and a login role that may enroll.
fn setup(cluster: &Cluster) -> Role {
    cluster.psql("INSERT INTO secumon.tenants (tenant_id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex')");
    cluster.create_login_role("enroller", &["secumon_enroll"])
}

/// An operator's token for acme with labels env=prod, team=ops.
fn acme_token(cluster: &Cluster, extra_args: &str) -> String {
    cluster.psql_one(&format!(
        "SELECT secumon.create_enrollment_token('acme', '{{\"env\": \"prod\", \"team\": \"ops\"}}'{extra_args})"
    ))
}

/// An agent that knows nothing but the enrolling role's connection and the token, plus labels
/// of its own (env=dev, which the token's env=prod overrides, and role=web).
fn enrolling_agent(cluster: &Cluster, enroller: &Role, agent_id: &str, token: &str) -> Agent {
    let mut config = cluster
        .agent_config(enroller)
        .agent_id(agent_id)
        .line(&format!("enroll_token = {}", toml_string(token)));
    if non_loopback_interfaces().is_empty() {
        config = config.line("[network]").line("include_loopback = true");
    }
    cluster.agent(
        &config
            .line("[labels]")
            .line("env = \"dev\"")
            .line("role = \"web\""),
    )
}


fn token_uses(cluster: &Cluster, token: &str) -> String {
    cluster.psql_one(&format!(
        "SELECT uses FROM secumon.enrollment_tokens WHERE token_hash = sha256(convert_to('{token}', 'UTF8'))"
    ))
}

fn enroll_sql(
    client: &mut Client,
    token: &str,
    agent_id: &str,
) -> Result<(String, String), postgres::Error> {
    client
        .query_one(
            "SELECT role_name, password FROM secumon.enroll($1, $2, 'host.example', NULL, NULL, '{}')",
            &[&token, &agent_id],
        )
        .map(|row| (row.get(0), row.get(1)))
}

fn role_exists(cluster: &Cluster, role: &str) -> bool {
    cluster.psql_one(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
    )) == "1"
}

#[test]
fn an_agent_with_only_a_connection_and_a_token_enrolls_into_the_tokens_tenant() {
    let cluster = Cluster::start();
    let enroller = setup(&cluster);
    let token = acme_token(&cluster, "");
    assert!(
        token.starts_with("smenroll_") && token.len() >= 50,
        "token {token:?}"
    );
    let agent = enrolling_agent(&cluster, &enroller, "web01", &token);

    let first_log = agent.run_once_ok();
    let row = &cluster.psql(
        "SELECT tenant_id, owner_role, labels::text FROM secumon.agents WHERE agent_id = 'web01'",
    )[0];
    assert_eq!(
        row[0].as_deref(),
        Some("acme"),
        "tenant of the enrolled agent"
    );
    assert_eq!(row[1].as_deref(), Some("secumon_agent_web01"), "owner role");
    assert_eq!(
        row[2].as_deref(),
        Some(r#"{"env": "prod", "role": "web", "team": "ops"}"#),
        "the token's labels win over the agent's"
    );
    assert_ne!(
        cluster.psql_one("SELECT count(*) FROM secumon.metrics WHERE agent_id = 'web01'"),
        "0",
        "expected metrics of web01"
    );
    assert_eq!(token_uses(&cluster, &token), "1");
    assert_eq!(
        cluster.psql_one(
            "SELECT r.rolcanlogin AND r.rolinherit AND NOT r.rolsuper AND NOT r.rolcreaterole AND NOT r.rolcreatedb
                    AND pg_has_role(r.oid, 'secumon_agent', 'MEMBER') AND NOT pg_has_role(r.oid, 'secumon_enroll', 'MEMBER')
               FROM pg_roles r WHERE r.rolname = 'secumon_agent_web01'"
        ),
        "t",
        "the agent's role: a plain login in secumon_agent"
    );

    // Its login is saved privately, and neither secret reaches the log.
    let credentials = agent.default_spool_dir().join("credentials");
    let text = std::fs::read_to_string(&credentials).expect("expected <spool_dir>/credentials");
    let mode = std::fs::metadata(&credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode of {}", credentials.display());
    assert!(text.contains("role = \"secumon_agent_web01\""), "{text}");
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("password = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a password line")
        .to_string();
    assert!(
        first_log.contains("enrolled agent web01 as role secumon_agent_web01"),
        "{first_log}"
    );
    for secret in [&token, &password] {
        assert!(
            !first_log.contains(secret.as_str()),
            "a secret in the log:\n{first_log}"
        );
        assert!(
            !cluster.log().contains(secret.as_str()),
            "a secret in the server log"
        );
    }
    // The enrolled login writes for its own agent only: another agent_id would land outside acme.
    let mut own = cluster.client_as("secumon_agent_web01", &password);
    let refused = own
        .batch_execute("SELECT secumon.register_agent('web01-twin', 'h')")
        .expect_err("an enrolled role registering another agent");
    assert_eq!(refused.code().map(|c| c.code()), Some("42501"), "{refused}");
    assert_eq!(cluster.psql_one("SELECT count(*) FROM secumon.agents WHERE agent_id = 'web01-twin'"), "0");

    // The second run logs in with the saved login: no second use, labels kept.
    let before = cluster
        .psql_one("SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = 'web01'");
    let second_log = agent.run_once_ok();
    assert!(!second_log.contains("enrolling"), "{second_log}");
    assert_eq!(
        token_uses(&cluster, &token),
        "1",
        "the saved login, not a second enrollment"
    );
    assert_ne!(
        cluster
            .psql_one("SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = 'web01'"),
        before,
        "a second report"
    );
    assert_eq!(
        cluster.psql_one("SELECT labels->>'env' FROM secumon.agents WHERE agent_id = 'web01'"),
        "prod",
        "the agent's own registration does not override the token's labels"
    );
    assert_eq!(
        cluster.psql_one("SELECT tenant_id || ' ' || role_name || ' ' || times_enrolled FROM secumon.enrollments"),
        "acme secumon_agent_web01 1"
    );
}

#[test]
fn an_enrolled_daemon_keeps_its_login_across_a_reload() {
    let cluster = Cluster::start();
    let enroller = setup(&cluster);
    let token = acme_token(&cluster, "");
    let mut config = cluster
        .agent_config(&enroller)
        .agent_id("daemon01")
        .interval("1s")
        .line(&format!("enroll_token = {}", toml_string(&token)));
    if non_loopback_interfaces().is_empty() {
        config = config.line("[network]").line("include_loopback = true");
    }
    let agent = cluster.agent(&config);
    let mut process = agent.spawn();
    let reports = || {
        cluster
            .psql_one(
                "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = 'daemon01'",
            )
            .parse::<u32>()
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || reports() >= 2),
        "expected reports of daemon01\n{}",
        agent.stderr_log()
    );
    process.signal(libc::SIGHUP);
    let after_reload = reports();
    assert!(
        wait_until(Duration::from_secs(30), || reports() >= after_reload + 3),
        "expected reports after the reload\n{}",
        agent.stderr_log()
    );
    process.stop();
    let log = agent.stderr_log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(!log.contains("ERROR") && !log.contains(&token), "{log}");
    assert_eq!(token_uses(&cluster, &token), "1");
}

#[test]
fn bad_tokens_fail_with_one_message_and_create_nothing() {
    let cluster = Cluster::start();
    let enroller = setup(&cluster);
    let mut client = cluster.client_for(&enroller);
    let expired = acme_token(&cluster, ", '1 minute'");
    cluster.psql(&format!(
        "UPDATE secumon.enrollment_tokens SET expires_at = now() - interval '1 second'
          WHERE token_hash = sha256(convert_to('{expired}', 'UTF8'))"
    ));
    let revoked = acme_token(&cluster, "");
    cluster.psql(&format!(
        "SELECT secumon.revoke_enrollment_token(id) FROM secumon.enrollment_tokens
          WHERE token_hash = sha256(convert_to('{revoked}', 'UTF8'))"
    ));
    let used_up = acme_token(&cluster, "");
    enroll_sql(&mut client, &used_up, "first").expect("expected the first use to enroll");
    let garbage = format!("smenroll_{}", "A".repeat(43));

    for (what, token) in [
        ("expired", &expired),
        ("revoked", &revoked),
        ("used up", &used_up),
        ("garbage", &garbage),
    ] {
        let agent_id = format!("bad-{}", what.replace(' ', "-"));
        assert_sqlstate(
            enroll_sql(&mut client, token, &agent_id),
            "28000",
            &format!("enroll with a {what} token"),
        );
        let error = enroll_sql(&mut client, token, &agent_id).unwrap_err();
        assert!(
            error_text(&error).contains(INVALID),
            "{what}: {}",
            error_text(&error)
        );

        let agent = enrolling_agent(&cluster, &enroller, &agent_id, token);
        let output = agent.run_once();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{what}: exit status; stderr:\n{}",
            stderr_text(&output)
        );
        assert_one_line_error(
            &output,
            &[INVALID],
            &format!("the agent with a {what} token"),
        );
        assert!(
            !stderr_text(&output).contains(token.as_str()),
            "the token in the log"
        );
        assert!(
            !agent.default_spool_dir().join("credentials").exists()
                && !agent.default_spool_dir().join(".credentials.tmp").exists(),
            "{what}: no credentials, nothing half-written"
        );
        assert_eq!(
            cluster.psql_one(&format!(
                "SELECT count(*) FROM secumon.agents WHERE agent_id = '{agent_id}'"
            )),
            "0",
            "{what}: no agent"
        );
    }
    assert_eq!(
        cluster.psql_one("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'secumon_agent_bad%'"),
        "0",
        "no role for a bad token"
    );
    assert_eq!(
        cluster.psql_one(
            "SELECT string_agg(uses::text, ',' ORDER BY created_at) FROM secumon.enrollment_tokens"
        ),
        "0,0,1",
        "no use counted for a refused enrollment"
    );

    // Something that is no token at all never reaches the database.
    let agent = enrolling_agent(&cluster, &enroller, "typo", "not-a-token");
    let output = agent.run_once();
    assert_eq!(output.status.code(), Some(2));
    assert_one_line_error(
        &output,
        &["enroll_token is not an enrollment token"],
        "a malformed token",
    );
}

#[test]
fn the_enrolling_role_may_do_nothing_but_enroll() {
    let cluster = Cluster::start();
    let enroller = setup(&cluster);
    let mut client = cluster.client_for(&enroller);
    for relation in [
        "secumon.agents",
        "secumon.metrics",
        "secumon.enrollment_tokens",
        "secumon.enrollments",
        "secumon.tenants",
        "secumon.alert_rules",
    ] {
        assert_sqlstate(
            client
                .query(&format!("SELECT * FROM {relation} LIMIT 1"), &[])
                .map(|r| r.len()),
            "42501",
            &format!("SELECT from {relation} as the enrolling role"),
        );
    }
    assert_sqlstate(
        register_agent(&mut client, "sneaky"),
        "42501",
        "register_agent as the enrolling role",
    );
    let time = cluster.psql_one("SELECT (date_trunc('second', now()) - interval '1 minute')::text");
    assert_sqlstate(
        Report::sample("sneaky", &time).ingest(&mut client),
        "42501",
        "ingest as the enrolling role",
    );
    assert_sqlstate(
        client
            .query_one("SELECT secumon.create_enrollment_token('acme')", &[])
            .map(|_| ()),
        "42501",
        "create_enrollment_token as the enrolling role",
    );
    assert_sqlstate(
        client.batch_execute("CREATE ROLE escalate LOGIN"),
        "42501",
        "CREATE ROLE as the enrolling role",
    );

    // The role enroll() creates is an agent role, not an enrolling one.
    let token = acme_token(&cluster, "");
    let (role, password) = enroll_sql(&mut client, &token, "web02").expect("enroll");
    let mut agent_client = cluster.client_as(&role, &password);
    assert_sqlstate(
        enroll_sql(&mut agent_client, &acme_token(&cluster, ""), "web03"),
        "42501",
        "enroll as an enrolled agent's role",
    );
    register_agent(&mut agent_client, "web02").expect("the enrolled role registers its agent");
    assert!(Report::sample("web02", &time)
        .ingest(&mut agent_client)
        .expect("ingest as the enrolled role"));
    assert_sqlstate(
        Report::sample("web01-other", &time).ingest(&mut agent_client),
        "P0002",
        "ingest for an agent nobody registered",
    );
}

#[test]
fn a_secumon_admin_manages_the_tokens_of_their_own_tenant_only() {
    let cluster = Cluster::start();
    setup(&cluster);
    for (user, role, tenant) in [("bob", "admin", "globex"), ("alice", "user", "acme")] {
        cluster.psql(&format!(
            "SELECT secumon.create_user('{user}', 'password-of-{user}', '{role}', NULL, '{tenant}')"
        ));
    }
    let acme = acme_token(&cluster, "");
    let web = cluster.create_login_role("web_tier", &["secumon_web"]);
    let session = |user: &str| {
        let mut client = cluster.client_for(&web);
        let token: String = client
            .query_one(
                "SELECT token FROM secumon.login($1, $2)",
                &[&user, &format!("password-of-{user}")],
            )
            .expect("login")
            .get(0);
        client
            .query_one("SELECT secumon.authenticate($1)", &[&token])
            .expect("authenticate");
        client
    };
    let mut bob = session("bob");
    assert_sqlstate(
        bob.query_one("SELECT secumon.create_enrollment_token('acme')", &[])
            .map(|_| ()),
        "42501",
        "a globex admin creating a token for acme",
    );
    let own: String = bob
        .query_one(
            "SELECT secumon.create_enrollment_token(labels => '{\"dc\": \"fra1\"}', max_uses => 5)",
            &[],
        )
        .expect("a token for bob's own tenant")
        .get(0);
    assert_eq!(
        cluster.psql_one(&format!(
            "SELECT tenant_id || ' ' || created_by || ' ' || max_uses FROM secumon.enrollment_tokens
              WHERE token_hash = sha256(convert_to('{own}', 'UTF8'))"
        )),
        "globex bob 5"
    );
    let listed: Vec<String> = bob
        .query("SELECT tenant_id FROM secumon.enrollment_tokens", &[])
        .expect("bob lists his tenant's tokens")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        listed,
        vec!["globex".to_string()],
        "bob sees globex's tokens only"
    );
    assert_sqlstate(
        bob.query("SELECT token_hash FROM secumon.enrollment_tokens", &[])
            .map(|r| r.len()),
        "42501",
        "reading the token digests",
    );
    let acme_id = cluster.psql_one(&format!(
        "SELECT id FROM secumon.enrollment_tokens WHERE token_hash = sha256(convert_to('{acme}', 'UTF8'))"
    ));
    assert_sqlstate(
        bob.batch_execute(&format!(
            "SELECT secumon.revoke_enrollment_token('{acme_id}')"
        )),
        "22023",
        "a globex admin revoking acme's token",
    );
    let mut alice = session("alice");
    assert_sqlstate(
        alice
            .query_one("SELECT secumon.create_enrollment_token()", &[])
            .map(|_| ()),
        "42501",
        "a SecuMon user (not admin) creating a token",
    );
    // Unauthenticated web sessions get nothing either.
    let mut anonymous = cluster.client_for(&web);
    assert_sqlstate(
        anonymous
            .query_one("SELECT secumon.create_enrollment_token('acme')", &[])
            .map(|_| ()),
        "42501",
        "an unauthenticated web session creating a token",
    );
}

#[test]
fn token_arguments_are_validated() {
    let cluster = Cluster::start();
    setup(&cluster);
    let mut client = cluster.client();
    for (args, code) in [
        ("'nope'", "22023"),
        ("'acme', '[1]'", "22023"),
        ("'acme', '{\"env\": 1}'", "22023"),
        ("'acme', '{\"bad key\": \"x\"}'", "22023"),
        ("'acme', NULL", "22004"),
        ("'acme', '{}', '0 seconds'", "22023"),
        ("'acme', '{}', '2 years'", "22023"),
        ("'acme', '{}', NULL", "22023"),
        ("'acme', '{}', '1 hour', 0", "22023"),
        ("'acme', '{}', '1 hour', NULL", "22023"),
        ("'acme', '{}', '1 hour', 10001", "22023"),
        ("'acme', '{}', '1 hour', 2, 'web-1'", "22023"),
        ("'acme', '{}', '1 hour', 1, 'bad id'", "22023"),
    ] {
        assert_sqlstate(
            client
                .query_one(
                    &format!("SELECT secumon.create_enrollment_token({args})"),
                    &[],
                )
                .map(|_| ()),
            code,
            &format!("create_enrollment_token({args})"),
        );
    }
    assert_eq!(
        cluster.psql_one("SELECT count(*) FROM secumon.enrollment_tokens"),
        "0"
    );
}

#[test]
fn a_reinstalled_host_enrolls_again_and_other_tenants_cannot_take_its_agent_id() {
    let cluster = Cluster::start();
    let enroller = setup(&cluster);
    let mut client = cluster.client_for(&enroller);
    let (role, old_password) =
        enroll_sql(&mut client, &acme_token(&cluster, ""), "Web.01").expect("enroll");
    assert!(
        role.starts_with("secumon_agent_web_01_") && role.len() <= 63,
        "role {role}"
    );

    // Any other token of the tenant cannot take the enrolled agent over.
    let other = acme_token(&cluster, "");
    assert_sqlstate(
        enroll_sql(&mut client, &other, "Web.01"),
        "42501",
        "re-enrolling with a token not made for the agent",
    );
    cluster.client_as(&role, &old_password);
    // A token made for another agent enrolls that one only.
    assert_sqlstate(
        enroll_sql(&mut client, &acme_token(&cluster, ", agent_id => 'Web.02'"), "Web.01"),
        "42501",
        "a token made for another agent",
    );

    // A reinstall, with a token made for it: same role, new password.
    let (again, new_password) =
        enroll_sql(&mut client, &acme_token(&cluster, ", agent_id => 'Web.01'"), "Web.01").expect("enroll again");
    assert_eq!(again, role);
    assert_ne!(new_password, old_password);
    assert!(
        cluster.try_client_as(&role, &old_password).is_err(),
        "the old password is gone"
    );
    cluster.client_as(&role, &new_password);

    // Another tenant's token: refused, nothing changes.
    let globex = cluster.psql_one("SELECT secumon.create_enrollment_token('globex')");
    assert_sqlstate(
        enroll_sql(&mut client, &globex, "Web.01"),
        "42501",
        "enrolling acme's agent with globex's token",
    );
    assert_eq!(
        cluster.psql_one("SELECT tenant_id FROM secumon.agents WHERE agent_id = 'Web.01'"),
        "acme"
    );
    cluster.client_as(&role, &new_password);
    assert_eq!(token_uses(&cluster, &globex), "0");

    // An agent registered by hand (its own role) is never taken over, nor is an existing role.
    let manual = cluster.create_agent_role("agent_manual");
    register_agent(&mut cluster.client_for(&manual), "manual").expect("register");
    cluster.psql("UPDATE secumon.agents SET tenant_id = 'acme' WHERE agent_id = 'manual'");
    assert_sqlstate(
        enroll_sql(&mut client, &acme_token(&cluster, ""), "manual"),
        "42501",
        "enrolling a registered agent",
    );
    cluster.create_login_role("secumon_agent_taken", &[]);
    assert_sqlstate(
        enroll_sql(&mut client, &acme_token(&cluster, ""), "taken"),
        "42501",
        "enrolling over an existing role",
    );
    assert!(role_exists(&cluster, "secumon_agent_taken"));
    assert_eq!(
        cluster.psql_one("SELECT count(*) FROM secumon.agents WHERE agent_id = 'taken'"),
        "0"
    );
}
