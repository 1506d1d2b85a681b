//! (One file of some 800 lines: the tests of one module, sql/auth.sql with src/auth/, sharing
//! its helpers for users, tokens and identities.)
//!
//! In-database tests of authentication and tenancy (sql/auth.sql, sql/tenancy.sql, src/auth/).
//! Each runs inside a transaction that is rolled back; what needs separate sessions (RLS as
//! login roles across connections, reuse revocation by the worker, throttling across
//! connections) is tested end to end in tests/tests/auth.rs. Login throttling lives in shared memory, outside
//! transactions, so every test uses usernames of its own.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::expect_sqlstate;
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use pgrx::prelude::*;
    use crate::tests::{count, error_of, install_error_catcher, lit, run, text};
    use serde_json::{json, Value};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
    const TOKEN_ERROR: &str = "28000: invalid or expired token";
    const LOGIN_ERROR: &str = "28P01: invalid username or password";



    fn opt_text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
    }




    /// Tenants acme and globex, an error catcher, the test secret, a minimal bcrypt cost.
    fn setup() {
        run("INSERT INTO secumon.tenants (tenant_id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex')");
        install_error_catcher();
        run(&format!("SET LOCAL secumon.jwt_secret = {}", lit(SECRET)));
    }

    fn create_user(name: &str, role: &str, tenant: &str) {
        run(&format!(
            "SELECT secumon.create_user({}, 'password-of-{name}', {}, '{name}@example.com', {})",
            lit(name),
            lit(role),
            lit(tenant)
        ));
    }

    /// (token, refresh_token) of a fresh login.
    fn login(name: &str) -> (String, String) {
        let row = Spi::get_two::<String, String>(&format!(
            "SELECT token, refresh_token FROM secumon.login({}, 'password-of-{name}')",
            lit(name)
        ))
        .unwrap_or_else(|e| panic!("login of {name} failed: {e}"));
        (row.0.expect("token"), row.1.expect("refresh token"))
    }

    fn claims_of(token: &str) -> Value {
        let json = text(&format!("SELECT secumon.verify_token({})::text", lit(token)));
        serde_json::from_str(&json).expect("claims are JSON")
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, secret: &[u8]) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("test token signs")
    }

    #[pg_test]
    fn login_returns_token_refresh_token_expiry_and_user() {
        setup();
        create_user("lt_alice", "admin", "acme");
        let row = text(
            "SELECT jsonb_build_object('token', token IS NOT NULL, 'refresh', length(refresh_token), \
                    'hours', round(extract(epoch FROM expires_at - now()) / 3600), 'user', \"user\")::text \
               FROM secumon.login('LT_Alice', 'password-of-lt_alice')",
        );
        let row: Value = serde_json::from_str(&row).unwrap();
        assert_eq!(row["token"], json!(true));
        assert_eq!(row["refresh"], json!(43), "256-bit URL-safe refresh token");
        assert_eq!(
            row["hours"],
            json!(24),
            "access tokens live secumon.token_lifetime (24 h)"
        );
        assert_eq!(
            row["user"]["username"],
            json!("lt_alice"),
            "usernames match ignoring case"
        );
        assert_eq!(row["user"]["role"], json!("admin"));
        assert_eq!(row["user"]["tenant_id"], json!("acme"));
        let (token, _) = login("lt_alice");
        let claims = claims_of(&token);
        assert_eq!(claims["iss"], json!("secumon-api"));
        assert_eq!(claims["email"], json!("lt_alice@example.com"));
        assert_eq!(claims["role"], json!("admin"));
        assert_eq!(claims["tenant_id"], json!("acme"));
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            24 * 3600
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert!(
            header.kid.is_some_and(|k| k.starts_with("guc-")),
            "kid names the GUC key"
        );
        assert_eq!(
            count("SELECT count(*) FROM secumon.refresh_tokens WHERE token_hash IS NOT NULL"),
            2
        );
        assert!(
            !text("SELECT password_hash FROM secumon.users WHERE username = 'lt_alice'").contains("password-of"),
            "only a hash is stored"
        );
    }

    #[pg_test]
    fn every_login_failure_gets_one_generic_error() {
        setup();
        create_user("lf_bob", "user", "acme");
        create_user("lf_gone", "user", "acme");
        run("SELECT secumon.deactivate_user('lf_gone')");
        let long = "x".repeat(73);
        for attempt in [
            "SELECT secumon.login('lf_bob', 'wrong password')".to_string(),
            "SELECT secumon.login('lf_nobody', 'password-of-lf_nobody')".to_string(),
            "SELECT secumon.login('lf_gone', 'password-of-lf_gone')".to_string(),
            "SELECT secumon.login('lf_bob', '')".to_string(),
            "SELECT secumon.login('lf_bob', NULL)".to_string(),
            "SELECT secumon.login(NULL, NULL)".to_string(),
            format!("SELECT secumon.login('lf_bob', '{long}')"),
        ] {
            assert_eq!(error_of(&attempt), LOGIN_ERROR, "{attempt}");
        }
    }

    #[pg_test]
    fn passwords_must_be_non_empty_and_at_most_72_bytes() {
        setup();
        expect_sqlstate("SELECT secumon.create_user('pw_a', '', 'user', NULL, 'acme')", "22023");
        expect_sqlstate(
            &format!(
                "SELECT secumon.create_user('pw_b', '{}', 'user', NULL, 'acme')",
                "é".repeat(37)
            ),
            "22023",
        );
        expect_sqlstate(
            "SELECT secumon.create_user('pw_c', 'short', 'user', NULL, 'acme')",
            "22023",
        );
        let seventy_two = "p".repeat(72);
        run(&format!(
            "SELECT secumon.create_user('pw_d', '{seventy_two}', 'user', NULL, 'acme')"
        ));
        assert_eq!(
            count(&format!("SELECT count(*) FROM secumon.login('pw_d', '{seventy_two}')")),
            1,
            "a 72-byte password works"
        );
        assert_eq!(
            error_of(&format!("SELECT secumon.login('pw_d', '{seventy_two}x')")),
            LOGIN_ERROR,
            "no truncation"
        );
    }

    #[pg_test]
    fn bcrypt_cost_is_at_least_10_and_upgraded_at_login() {
        setup();
        expect_sqlstate("SET secumon.bcrypt_cost = 9", "22023");
        create_user("bc_carol", "user", "acme");
        assert!(text("SELECT password_hash FROM secumon.users WHERE username = 'bc_carol'").starts_with("$2b$10$"));
        run("SET LOCAL secumon.bcrypt_cost = 11");
        login("bc_carol");
        assert!(
            text("SELECT password_hash FROM secumon.users WHERE username = 'bc_carol'").starts_with("$2b$11$"),
            "a successful login re-hashes at the configured cost"
        );
        login("bc_carol");
    }

    #[pg_test]
    fn refresh_rotates_the_token_and_refuses_the_used_one() {
        setup();
        create_user("rf_dave", "user", "acme");
        let (_, first) = login("rf_dave");
        let second = text(&format!("SELECT refresh_token FROM secumon.refresh({})", lit(&first)));
        assert_ne!(first, second, "a refresh returns a new refresh token");
        let token = text(&format!("SELECT token FROM secumon.refresh({})", lit(&second)));
        assert_eq!(claims_of(&token)["tenant_id"], json!("acme"));
        assert_eq!(
            error_of(&format!("SELECT secumon.refresh({})", lit(&first))),
            TOKEN_ERROR,
            "reuse is refused"
        );
        assert_eq!(error_of("SELECT secumon.refresh('not-a-token')"), TOKEN_ERROR);
        assert_eq!(error_of("SELECT secumon.refresh(NULL)"), TOKEN_ERROR);
        assert_eq!(
            count(
                "SELECT count(DISTINCT family) FROM secumon.refresh_tokens t JOIN secumon.users u ON u.id = t.user_id \
                   WHERE u.username = 'rf_dave'"
            ),
            1,
            "rotation stays within the login's family"
        );
    }

    #[pg_test]
    fn expired_refresh_token_is_refused() {
        setup();
        create_user("rf_old", "user", "acme");
        let (_, refresh) = login("rf_old");
        run("UPDATE secumon.refresh_tokens SET expires_at = now() - interval '1 second'");
        assert_eq!(
            error_of(&format!("SELECT secumon.refresh({})", lit(&refresh))),
            TOKEN_ERROR
        );
    }

    #[pg_test]
    fn logout_revokes_refresh_tokens_and_access_tokens() {
        setup();
        create_user("lo_erin", "user", "acme");
        let (token, refresh) = login("lo_erin");
        let (_, other_device) = login("lo_erin");
        assert_eq!(count(&format!("SELECT secumon.logout({})::int8", lit(&token))), 2);
        assert_eq!(
            error_of(&format!("SELECT secumon.refresh({})", lit(&refresh))),
            TOKEN_ERROR
        );
        assert_eq!(
            error_of(&format!("SELECT secumon.refresh({})", lit(&other_device))),
            TOKEN_ERROR
        );
        assert_eq!(
            error_of(&format!("SELECT secumon.verify_token({})", lit(&token))),
            TOKEN_ERROR
        );
        let (fresh, _) = login("lo_erin");
        claims_of(&fresh);
    }

    #[pg_test]
    fn deactivated_user_cannot_log_in_refresh_or_use_tokens() {
        setup();
        create_user("dx_frank", "user", "acme");
        let (token, refresh) = login("dx_frank");
        run("SELECT secumon.deactivate_user('dx_frank')");
        assert_eq!(
            error_of("SELECT secumon.login('dx_frank', 'password-of-dx_frank')"),
            LOGIN_ERROR
        );
        assert_eq!(
            error_of(&format!("SELECT secumon.refresh({})", lit(&refresh))),
            TOKEN_ERROR
        );
        assert_eq!(
            error_of(&format!("SELECT secumon.authenticate({})", lit(&token))),
            TOKEN_ERROR
        );
        run("SELECT secumon.activate_user('dx_frank')");
        login("dx_frank");
    }

    #[pg_test]
    fn jwt_attack_matrix_is_refused_with_one_generic_error() {
        setup();
        create_user("jw_gina", "readonly", "acme");
        let (token, _) = login("jw_gina");
        let good = claims_of(&token);
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let now = good["iat"].as_i64().unwrap();
        let with = |field: &str, value: Value| {
            let mut c = good.clone();
            c[field] = value;
            c
        };
        let parts: Vec<&str> = token.split('.').collect();
        let admin_payload = b64(with("role", json!("admin")).to_string().as_bytes());
        let none_header = b64(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string().as_bytes());
        let rs256_header = b64(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string().as_bytes());
        let attacks: Vec<(&str, String)> = vec![
            ("alg none", format!("{none_header}.{}.", parts[1])),
            ("alg none, admin", format!("{none_header}.{admin_payload}.")),
            (
                "HS512 with the right key",
                sign(Algorithm::HS512, Some(&kid), &good, SECRET.as_bytes()),
            ),
            (
                "HS384 with the right key",
                sign(Algorithm::HS384, Some(&kid), &good, SECRET.as_bytes()),
            ),
            (
                "RS256 header, HMAC signature",
                format!("{rs256_header}.{}.{}", parts[1], parts[2]),
            ),
            (
                "wrong key",
                sign(
                    Algorithm::HS256,
                    Some(&kid),
                    &good,
                    b"another-secret-of-at-least-32-bytes!",
                ),
            ),
            ("tampered payload", format!("{}.{admin_payload}.{}", parts[0], parts[2])),
            (
                "expired",
                sign(
                    Algorithm::HS256,
                    Some(&kid),
                    &with("exp", json!(now - 10)),
                    SECRET.as_bytes(),
                ),
            ),
            (
                "not yet valid",
                sign(
                    Algorithm::HS256,
                    Some(&kid),
                    &with("nbf", json!(now + 3600)),
                    SECRET.as_bytes(),
                ),
            ),
            (
                "wrong issuer",
                sign(
                    Algorithm::HS256,
                    Some(&kid),
                    &with("iss", json!("evil")),
                    SECRET.as_bytes(),
                ),
            ),
            ("no issuer", {
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("iss");
                sign(Algorithm::HS256, Some(&kid), &c, SECRET.as_bytes())
            }),
            ("no expiry", {
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                sign(Algorithm::HS256, Some(&kid), &c, SECRET.as_bytes())
            }),
            ("forged role, right key, old token_version", {
                sign(Algorithm::HS256, Some(&kid), &with("ver", json!(99)), SECRET.as_bytes())
            }),
            (
                "unknown kid",
                sign(Algorithm::HS256, Some("nope"), &good, SECRET.as_bytes()),
            ),
            ("no kid", sign(Algorithm::HS256, None, &good, SECRET.as_bytes())),
            ("truncated", token[..token.len() - 5].to_string()),
            ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
            ("two parts", format!("{}.{}", parts[0], parts[1])),
            ("garbage", "garbage".to_string()),
            ("dots", "..".to_string()),
            ("binary-ish", "\u{1}.\u{2}.\u{3}".to_string()),
            ("empty", String::new()),
            ("huge", format!("{}.{}.{}", parts[0], "A".repeat(10_000), parts[2])),
        ];
        for (what, attack) in &attacks {
            assert_eq!(
                error_of(&format!("SELECT secumon.verify_token({})", lit(attack))),
                TOKEN_ERROR,
                "{what}"
            );
            assert_eq!(
                error_of(&format!("SELECT secumon.authenticate({})", lit(attack))),
                TOKEN_ERROR,
                "{what}"
            );
            assert_eq!(
                opt_text("SELECT secumon.current_role()"),
                None,
                "{what}: no identity after a refused token"
            );
        }
        assert_eq!(error_of("SELECT secumon.verify_token(NULL)"), TOKEN_ERROR);
        // The matrix really was signed right: the same claims with the right key pass.
        let resigned = sign(Algorithm::HS256, Some(&kid), &good, SECRET.as_bytes());
        assert_eq!(claims_of(&resigned)["user_id"], good["user_id"]);
    }

    #[pg_test]
    fn short_jwt_secret_is_refused_without_echoing_it() {
        setup();
        let error = error_of("SET secumon.jwt_secret = 'only-31-bytes-long-0123456789a'");
        assert_eq!(error, "22023: secumon.jwt_secret must be at least 32 bytes long");
        run("SET LOCAL secumon.jwt_secret = '0123456789abcdef0123456789abcdef'");
    }

    #[pg_test]
    fn rotation_keeps_old_tokens_valid_until_they_expire() {
        setup();
        run("SET LOCAL secumon.jwt_secret = ''"); // generated keys from secumon._jwt_keys
        create_user("rot_hank", "user", "acme");
        let (old, _) = login("rot_hank");
        let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM secumon._jwt_keys WHERE kid = {} AND retired_at IS NULL",
                lit(&old_kid)
            )),
            1
        );
        let new_kid = text("SELECT secumon.rotate_jwt_secret()");
        assert_ne!(new_kid, old_kid);
        claims_of(&old);
        let (new, _) = login("rot_hank");
        assert_eq!(
            jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
            Some(new_kid.as_str())
        );
        // Once every token of the retired key must have expired, the key no longer verifies.
        run(&format!(
            "UPDATE secumon._jwt_keys SET retired_at = now() - interval '24 hours' WHERE kid = {}",
            lit(&old_kid)
        ));
        assert_eq!(
            error_of(&format!("SELECT secumon.verify_token({})", lit(&old))),
            TOKEN_ERROR
        );
        claims_of(&new);
    }

    #[pg_test]
    fn authenticate_sets_the_identity_and_null_forgets_it() {
        setup();
        create_user("id_ivy", "user", "globex");
        assert_eq!(opt_text("SELECT secumon.current_tenant()"), None);
        let (token, _) = login("id_ivy");
        run(&format!("SELECT secumon.authenticate({})", lit(&token)));
        assert_eq!(opt_text("SELECT secumon.current_tenant()").as_deref(), Some("globex"));
        assert_eq!(opt_text("SELECT secumon.current_role()").as_deref(), Some("user"));
        assert_eq!(
            opt_text("SELECT secumon.current_user_id()::text"),
            opt_text("SELECT id::text FROM secumon.users WHERE username = 'id_ivy'")
        );
        run("SELECT secumon.authenticate(NULL)");
        assert_eq!(opt_text("SELECT secumon.current_tenant()"), None);
    }

    #[pg_test]
    fn a_rolled_back_authenticate_restores_the_previous_identity() {
        setup();
        create_user("rb_jack", "user", "acme");
        create_user("rb_kate", "admin", "globex");
        let (jack, _) = login("rb_jack");
        let (kate, _) = login("rb_kate");
        run(&format!("SELECT secumon.authenticate({})", lit(&jack)));
        run(&format!(
            "DO $$ BEGIN PERFORM secumon.authenticate({}); RAISE EXCEPTION 'undo'; \
             EXCEPTION WHEN raise_exception THEN NULL; END $$",
            lit(&kate)
        ));
        assert_eq!(
            opt_text("SELECT secumon.current_tenant()").as_deref(),
            Some("acme"),
            "like a rolled-back SET"
        );
        // Forgetting is final: a rolled-back logout does not bring the identity back.
        run(
            "DO $$ BEGIN PERFORM secumon.authenticate(NULL); RAISE EXCEPTION 'undo'; \
             EXCEPTION WHEN raise_exception THEN NULL; END $$",
        );
        assert_eq!(opt_text("SELECT secumon.current_tenant()"), None);
    }

    #[pg_test]
    fn identity_cannot_be_forged_with_set() {
        setup();
        create_user("fg_liam", "admin", "acme");
        let (token, _) = login("fg_liam");
        run(&format!("SELECT secumon.authenticate({})", lit(&token)));
        let handle = text("SELECT current_setting('secumon.session_identity')");
        run("SELECT secumon.authenticate(NULL)");
        // Even a superuser can only pick a handle this backend issued, never make one up...
        run("SET LOCAL secumon.session_identity = 'f00dfeedf00dfeedf00dfeedf00dfeed'");
        assert_eq!(opt_text("SELECT secumon.current_tenant()"), None);
        run(&format!("SET LOCAL secumon.session_identity = {}", lit(&handle)));
        assert_eq!(
            opt_text("SELECT secumon.current_tenant()"),
            None,
            "forgotten handles stay forgotten"
        );
        // ...and an ordinary role cannot set it, nor loosen authentication, at all.
        run("CREATE ROLE auth_test_forger NOLOGIN IN ROLE secumon_web");
        run("SET LOCAL ROLE auth_test_forger");
        expect_sqlstate("SET secumon.session_identity = 'x'", "42501");
        expect_sqlstate("SELECT set_config('secumon.session_identity', 'x', false)", "42501");
        expect_sqlstate("SET secumon.auth_required = off", "42501");
        expect_sqlstate("SELECT set_config('secumon.auth_required', 'off', true)", "42501");
        expect_sqlstate("SHOW secumon.jwt_secret", "42501");
        assert_eq!(count("SELECT count(*) FROM secumon.agents"), 0);
    }

    #[pg_test]
    fn sessions_see_their_tenant_only() {
        setup();
        create_user("rls_mia", "admin", "acme");
        create_user("rls_noah", "readonly", "globex");
        run("SELECT secumon.register_agent('acme-1', 'h1'), secumon.register_agent('globex-1', 'h2')");
        run("UPDATE secumon.agents SET tenant_id = 'acme' WHERE agent_id = 'acme-1'");
        run("UPDATE secumon.agents SET tenant_id = 'globex' WHERE agent_id = 'globex-1'");
        for agent in ["acme-1", "globex-1"] {
            run(&format!(
                "SELECT secumon.ingest('{agent}', '2026-11-25 10:00:00+00', ARRAY['cpu.usage_percent'], ARRAY[1]::float8[], \
                 '[{{\"device\":\"sda\",\"mountpoint\":\"/\"}}]', '[{{\"interface\":\"eth0\"}}]', '[{{\"pid\":1}}]')"
            ));
        }
        let (mia, _) = login("rls_mia");
        let (noah, _) = login("rls_noah");
        run("CREATE ROLE auth_test_web NOLOGIN IN ROLE secumon_web");
        run("SET LOCAL ROLE auth_test_web");
        let visible = || {
            text(
                "SELECT concat_ws(',', (SELECT string_agg(agent_id, '+' ORDER BY agent_id) FROM secumon.agents), \
                        (SELECT count(*) FROM secumon.metrics), (SELECT count(*) FROM secumon.metric_samples), \
                        (SELECT count(*) FROM secumon.disk_metrics), (SELECT count(*) FROM secumon.network_metrics), \
                        (SELECT count(*) FROM secumon.process_metrics), \
                        (SELECT string_agg(tenant_id, '+' ORDER BY tenant_id) FROM secumon.tenants), \
                        (SELECT string_agg(username, '+' ORDER BY username) FROM secumon.users))",
            )
        };
        assert_eq!(
            visible(),
            "0,0,0,0,0",
            "no identity, auth_required on: nothing (NULL lists are skipped)"
        );
        run(&format!("SELECT secumon.authenticate({})", lit(&mia)));
        assert_eq!(visible(), "acme-1,1,1,1,1,1,acme,rls_mia");
        run(&format!("SELECT secumon.authenticate({})", lit(&noah)));
        assert_eq!(visible(), "globex-1,1,1,1,1,1,globex,rls_noah");
        // A readonly user writes nothing; an admin relabels its own tenant's agents only.
        assert_eq!(
            count("WITH u AS (UPDATE secumon.agents SET labels = '{\"x\":1}' RETURNING 1) SELECT count(*) FROM u"),
            0
        );
        run(&format!("SELECT secumon.authenticate({})", lit(&mia)));
        assert_eq!(
            count("WITH u AS (UPDATE secumon.agents SET labels = '{\"x\":1}' RETURNING 1) SELECT count(*) FROM u"),
            1
        );
        expect_sqlstate("UPDATE secumon.agents SET tenant_id = 'globex'", "42501");
        expect_sqlstate("SELECT password_hash FROM secumon.users", "42501");
        expect_sqlstate("SELECT * FROM secumon._jwt_keys", "42501");
        expect_sqlstate("SELECT * FROM secumon_partitions.metric_samples_default", "42501");
    }

    #[pg_test]
    fn auth_required_off_opens_unauthenticated_sessions_only() {
        setup();
        create_user("open_olga", "user", "acme");
        run("SELECT secumon.register_agent('open-a', 'h'), secumon.register_agent('open-b', 'h')");
        run("UPDATE secumon.agents SET tenant_id = 'acme' WHERE agent_id = 'open-a'");
        let (token, _) = login("open_olga");
        run("SET LOCAL secumon.auth_required = off");
        run("CREATE ROLE auth_test_open NOLOGIN IN ROLE secumon_web");
        run("SET LOCAL ROLE auth_test_open");
        assert_eq!(
            count("SELECT count(*) FROM secumon.agents WHERE agent_id LIKE 'open-%'"),
            2
        );
        run(&format!("SELECT secumon.authenticate({})", lit(&token)));
        assert_eq!(
            count("SELECT count(*) FROM secumon.agents WHERE agent_id LIKE 'open-%'"),
            1
        );
    }

    #[pg_test]
    fn tenant_rls_helper_lets_users_write_and_readonly_not() {
        setup();
        run("CREATE TABLE secumon.auth_test_rules (id serial PRIMARY KEY, tenant_id text NOT NULL, name text)");
        run("SELECT secumon._enable_tenant_rls('secumon.auth_test_rules')");
        run("GRANT INSERT, UPDATE, DELETE ON secumon.auth_test_rules TO secumon_web");
        run("GRANT USAGE ON SEQUENCE secumon.auth_test_rules_id_seq TO secumon_web");
        run("INSERT INTO secumon.auth_test_rules (tenant_id, name) VALUES ('globex', 'theirs')");
        create_user("hp_user", "user", "acme");
        create_user("hp_ro", "readonly", "acme");
        let (user, _) = login("hp_user");
        let (ro, _) = login("hp_ro");
        run("CREATE ROLE auth_test_rw NOLOGIN IN ROLE secumon_web");
        run("SET LOCAL ROLE auth_test_rw");
        run(&format!("SELECT secumon.authenticate({})", lit(&user)));
        run("INSERT INTO secumon.auth_test_rules (name) VALUES ('mine')");
        assert_eq!(
            text("SELECT string_agg(tenant_id || ':' || name, ',') FROM secumon.auth_test_rules"),
            "acme:mine"
        );
        expect_sqlstate(
            "INSERT INTO secumon.auth_test_rules (tenant_id, name) VALUES ('globex', 'x')",
            "42501",
        );
        assert_eq!(count("WITH d AS (DELETE FROM secumon.auth_test_rules WHERE name = 'theirs' RETURNING 1) SELECT count(*) FROM d"), 0);
        run(&format!("SELECT secumon.authenticate({})", lit(&ro)));
        assert_eq!(
            count("SELECT count(*) FROM secumon.auth_test_rules"),
            1,
            "readonly reads"
        );
        expect_sqlstate("INSERT INTO secumon.auth_test_rules (name) VALUES ('nope')", "42501");
        assert_eq!(
            count("WITH u AS (UPDATE secumon.auth_test_rules SET name = 'x' RETURNING 1) SELECT count(*) FROM u"),
            0
        );
        assert_eq!(
            count("WITH d AS (DELETE FROM secumon.auth_test_rules RETURNING 1) SELECT count(*) FROM d"),
            0
        );
    }

    /// Tables with tenant data need forced RLS (secumon._enable_tenant_rls() or
    /// _enable_agent_rls()); views over them that clients may read need security_invoker, or
    /// they read as their owner and bypass RLS. Internal `_` tables are exempt unless granted.
    #[pg_test]
    fn every_relation_with_tenant_data_is_confined_to_the_tenant() {
        let unconfined = opt_text(
            "SELECT string_agg(DISTINCT c.relname, ', ') FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped \
               CROSS JOIN LATERAL (SELECT has_any_column_privilege('secumon_web', c.oid, 'SELECT') \
                                       OR has_any_column_privilege('secumon_reader', c.oid, 'SELECT') \
                                       OR has_any_column_privilege('public', c.oid, 'SELECT') AS readable) r \
              WHERE n.nspname = 'secumon' \
                AND a.attname IN ('tenant_id', 'tenant_ids', 'agent_id', 'agent_key', 'user_id') \
                AND ((c.relkind IN ('r', 'p') AND (c.relname NOT LIKE '\\_%' OR r.readable) \
                      AND NOT (c.relrowsecurity AND c.relforcerowsecurity)) \
                  OR (c.relkind = 'v' AND r.readable \
                      AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)))",
        );
        assert_eq!(
            unconfined, None,
            "tables: SELECT secumon._enable_tenant_rls(...) or _enable_agent_rls(...); views: WITH (security_invoker = true)"
        );
    }

    #[pg_test]
    fn admins_manage_their_own_tenant_only() {
        setup();
        create_user("adm_pat", "admin", "acme");
        create_user("adm_quinn", "user", "acme");
        create_user("adm_rita", "user", "globex");
        let (pat, _) = login("adm_pat");
        let (quinn, _) = login("adm_quinn");
        run("CREATE ROLE auth_test_admin NOLOGIN IN ROLE secumon_web");
        run("SET LOCAL ROLE auth_test_admin");
        expect_sqlstate("SELECT secumon.create_user('adm_x', 'password-x', 'user')", "42501");
        run(&format!("SELECT secumon.authenticate({})", lit(&pat)));
        run("SELECT secumon.create_user('adm_sam', 'password-of-adm_sam', 'readonly')");
        assert_eq!(
            text("SELECT tenant_id FROM secumon.users WHERE username = 'adm_sam'"),
            "acme"
        );
        expect_sqlstate(
            "SELECT secumon.create_user('adm_y', 'password-y', 'user', NULL, 'globex')",
            "42501",
        );
        expect_sqlstate("SELECT secumon.create_user('adm_z', 'password-z', 'root')", "22023");
        expect_sqlstate("SELECT secumon.create_user('ADM_QUINN', 'password-q', 'user')", "23505");
        run("SELECT secumon.set_user_role('adm_quinn', 'readonly')");
        // Another tenant's user is "unknown", whether or not it exists.
        assert_eq!(
            error_of("SELECT secumon.set_user_role('adm_rita', 'readonly')"),
            "22023: no SecuMon user \"adm_rita\""
        );
        expect_sqlstate("SELECT secumon.deactivate_user('adm_rita')", "22023");
        expect_sqlstate("SELECT secumon.set_user_password('adm_rita', 'new-password')", "22023");
        assert_eq!(
            count("SELECT count(*) FROM secumon.list_sessions()"),
            2,
            "pat's and quinn's sessions"
        );
        // A role change revokes the user's tokens: they carry the role.
        assert_eq!(
            error_of(&format!("SELECT secumon.verify_token({})", lit(&quinn))),
            TOKEN_ERROR
        );
        // A plain user may see and end only their own sessions.
        let (quinn, _) = login("adm_quinn");
        run(&format!("SELECT secumon.authenticate({})", lit(&quinn)));
        expect_sqlstate("SELECT secumon.create_user('adm_w', 'password-w', 'user')", "42501");
        expect_sqlstate("SELECT secumon.set_user_role('adm_quinn', 'admin')", "42501");
        assert_eq!(
            count("SELECT count(*) FROM secumon.list_sessions()"),
            2,
            "quinn's two logins"
        );
        expect_sqlstate("SELECT secumon.list_sessions('adm_pat')", "22023");
        assert_eq!(count("SELECT secumon.revoke_sessions('adm_quinn')::int8"), 2);
        assert_eq!(
            error_of(&format!("SELECT secumon.authenticate({})", lit(&quinn))),
            TOKEN_ERROR
        );
    }

    #[pg_test]
    fn set_user_password_ends_sessions_and_the_new_password_works() {
        setup();
        create_user("sp_tom", "user", "acme");
        let (_, refresh) = login("sp_tom");
        run("SELECT secumon.set_user_password('sp_tom', 'a-brand-new-password')");
        assert_eq!(
            error_of(&format!("SELECT secumon.refresh({})", lit(&refresh))),
            TOKEN_ERROR
        );
        assert_eq!(
            error_of("SELECT secumon.login('sp_tom', 'password-of-sp_tom')"),
            LOGIN_ERROR
        );
        assert_eq!(
            count("SELECT count(*) FROM secumon.login('sp_tom', 'a-brand-new-password')"),
            1
        );
    }

    #[pg_test]
    fn repeated_failures_lock_an_account_until_the_window_passes() {
        setup();
        run("SET LOCAL secumon.login_max_failures = 3");
        run("SET LOCAL secumon.login_failure_window = 3");
        create_user("th_uma", "user", "acme");
        for _ in 0..3 {
            assert_eq!(error_of("SELECT secumon.login('th_uma', 'wrong')"), LOGIN_ERROR);
        }
        assert_eq!(
            error_of("SELECT secumon.login('th_uma', 'password-of-th_uma')"),
            LOGIN_ERROR,
            "locked"
        );
        assert_eq!(
            text("SELECT kind || ':' || failures || ':' || locked FROM secumon.login_lockouts() WHERE name = 'th_uma'"),
            "account:3:true"
        );
        run("SELECT pg_sleep(3.1)");
        login("th_uma");
        assert_eq!(
            count("SELECT count(*) FROM secumon.login_lockouts() WHERE name = 'th_uma'"),
            0,
            "success clears"
        );
        // Unknown usernames are counted and locked the same way.
        for _ in 0..4 {
            assert_eq!(error_of("SELECT secumon.login('th_nobody', 'x')"), LOGIN_ERROR);
        }
        assert_eq!(
            text("SELECT locked::text FROM secumon.login_lockouts() WHERE name = 'th_nobody'"),
            "true"
        );
        assert_eq!(count("SELECT secumon.unlock_login('th_nobody')::int8"), 1);
    }

    #[pg_test]
    fn repeated_failures_from_one_address_lock_the_address() {
        setup();
        run("SET LOCAL secumon.login_max_failures_per_address = 3");
        run("SET LOCAL secumon.trusted_proxies = 'local, 127.0.0.1/32, ::1/128'");
        create_user("ad_vera", "user", "acme");
        for name in ["ad_x1", "ad_x2", "ad_x3"] {
            assert_eq!(
                error_of(&format!("SELECT secumon.login('{name}', 'x', '192.0.2.7')")),
                LOGIN_ERROR
            );
        }
        assert_eq!(
            error_of("SELECT secumon.login('ad_vera', 'password-of-ad_vera', '192.0.2.7')"),
            LOGIN_ERROR,
            "the address is locked for every account"
        );
        assert_eq!(
            count("SELECT count(*) FROM secumon.login('ad_vera', 'password-of-ad_vera', '192.0.2.8')"),
            1
        );
        assert_eq!(
            text("SELECT kind FROM secumon.login_lockouts() WHERE name = '192.0.2.7'"),
            "address"
        );
        // IPv6 clients are counted per /64.
        assert_eq!(
            error_of("SELECT secumon.login('ad_y', 'x', '2001:db8::1')"),
            LOGIN_ERROR
        );
        assert_eq!(
            text("SELECT name FROM secumon.login_lockouts() WHERE kind = 'address' AND name LIKE '2001%'"),
            "2001:db8::/64"
        );
        run("SELECT secumon.unlock_login(NULL, '192.0.2.7'), secumon.unlock_login(NULL, '2001:db8::/64')");
    }

    #[pg_test]
    fn web_roles_call_neither_internal_nor_operator_functions() {
        setup();
        run("CREATE ROLE auth_test_plain NOLOGIN IN ROLE secumon_web");
        run("SET LOCAL ROLE auth_test_plain");
        for call in [
            "SELECT secumon.rotate_jwt_secret()",
            "SELECT * FROM secumon.login_lockouts()",
            "SELECT secumon.unlock_login('x')",
            "SELECT secumon._sign_access_token('{\"id\": \"x\", \"role\": \"admin\", \"tenant_id\": \"acme\", \"token_version\": 0}')",
            "SELECT secumon._issue_tokens(gen_random_uuid(), gen_random_uuid(), NULL)",
            "SELECT secumon._generate_jwt_key()",
            "SELECT secumon._new_refresh_token()",
            "SELECT secumon._password_hash('password', true)",
            "SELECT secumon._password_verify('password', NULL)",
            "SELECT secumon._login_succeeded('alice')",
            "SELECT secumon._login_failed('alice', NULL)",
            "SELECT secumon._revoke_user_sessions(gen_random_uuid(), 'logout')",
            "SELECT secumon._revoke_family(gen_random_uuid(), 'reuse')",
            "SELECT secumon._revoke_family_in_background(gen_random_uuid())",
            "SELECT secumon._invalidate_auth_cache(0)",
            "SELECT secumon._enable_tenant_rls('secumon.agents')",
            // Granted, but without a SecuMon identity there is nothing to list.
            "SELECT * FROM secumon.list_sessions()",
            "SELECT secumon.create_user('nobody', 'password-nobody')",
        ] {
            expect_sqlstate(call, "42501");
        }
    }
}
