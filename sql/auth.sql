-- Authentication and tenancy: SecuMon users, refresh tokens and signing keys; login, refresh,
-- logout and the admin functions; row-level security on every table with tenant data, and the
-- helpers later modules call to secure theirs. The Rust side (secumon_pg/src/auth/) signs and
-- verifies tokens, hashes passwords, keeps the session's identity and throttles logins.
-- See docs/auth.md.

DO $roles$
BEGIN
    -- Sessions acting for SecuMon users (web API, PostgREST, dashboards). Row-level security
    -- confines them to the tenant of the identity set by secumon.authenticate().
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'secumon_web') THEN
        CREATE ROLE secumon_web NOLOGIN;
    END IF;
END
$roles$;

-- ---------------------------------------------------------------------------------------------
-- Tables

CREATE TABLE secumon.users (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username            text NOT NULL
                        CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$'),
    email               text CONSTRAINT users_email_format CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    password_hash       text NOT NULL,
    role                text NOT NULL DEFAULT 'user' CONSTRAINT users_role CHECK (role IN ('admin', 'user', 'readonly')),
    tenant_id           text NOT NULL DEFAULT 'default' REFERENCES secumon.tenants ON UPDATE CASCADE,
    active              boolean NOT NULL DEFAULT true,
    token_version       integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_key ON secumon.users (lower(username));
CREATE INDEX users_tenant ON secumon.users (tenant_id);
COMMENT ON TABLE secumon.users IS 'SecuMon users: role admin, user or readonly within one tenant. Manage them with secumon.create_user() and friends.';
COMMENT ON COLUMN secumon.users.token_version IS 'Bumped to revoke every access token issued before (logout, password or role change, deactivation).';
SELECT pg_catalog.pg_extension_config_dump('secumon.users', '');

-- One row per refresh token ever issued; only the SHA-256 of the token is kept. A family is one
-- login session: each refresh rotates the token within its family.
CREATE TABLE secumon.refresh_tokens (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES secumon.users ON DELETE CASCADE,
    token_hash     bytea NOT NULL UNIQUE,
    family         uuid NOT NULL,
    expires_at     timestamptz NOT NULL,
    revoked        boolean NOT NULL DEFAULT false,
    revoked_at     timestamptz,
    revoked_reason text CONSTRAINT refresh_tokens_revoked_reason
                   CHECK (revoked_reason IN ('rotated', 'logout', 'reuse', 'revoked', 'password', 'deactivated')),
    client_addr    inet,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON secumon.refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON secumon.refresh_tokens (user_id);
COMMENT ON TABLE secumon.refresh_tokens IS 'Refresh tokens (SHA-256 only). A family is one session; see secumon.list_sessions().';
SELECT pg_catalog.pg_extension_config_dump('secumon.refresh_tokens', '');

-- Generated signing keys. Nobody but superusers reads them: no grants, and row-level security
-- without a policy in case someone grants SELECT by mistake.
CREATE TABLE secumon._jwt_keys (
    kid        text PRIMARY KEY,
    secret     bytea NOT NULL CONSTRAINT jwt_keys_secret_length CHECK (octet_length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at timestamptz
);
COMMENT ON TABLE secumon._jwt_keys IS 'HS256 keys (kid = JWT header kid). The newest unretired key signs; retired keys verify until their tokens expire.';
ALTER TABLE secumon._jwt_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE secumon._jwt_keys FORCE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('secumon._jwt_keys', '');

-- Each backend caches users' token state, the keys and agents' tenants; a change to one of
-- these tables tells every backend to drop its cache of it.
CREATE FUNCTION secumon._auth_cache_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM secumon._invalidate_auth_cache(TG_RELID);
    RETURN NULL;
END
$$;
CREATE TRIGGER users_auth_cache AFTER INSERT OR DELETE OR UPDATE OF active, token_version, role, tenant_id ON secumon.users
FOR EACH STATEMENT EXECUTE FUNCTION secumon._auth_cache_changed();
CREATE TRIGGER users_auth_cache_truncate AFTER TRUNCATE ON secumon.users
FOR EACH STATEMENT EXECUTE FUNCTION secumon._auth_cache_changed();
CREATE TRIGGER jwt_keys_auth_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON secumon._jwt_keys
FOR EACH STATEMENT EXECUTE FUNCTION secumon._auth_cache_changed();
-- Policies of the metric tables look agents' tenants up in a per-backend map (see
-- src/auth/tenancy.rs); last_seen updates by every ingest do not touch it.
CREATE TRIGGER agents_auth_cache AFTER INSERT OR DELETE OR UPDATE OF agent_key, agent_id, tenant_id ON secumon.agents
FOR EACH STATEMENT EXECUTE FUNCTION secumon._auth_cache_changed();
CREATE TRIGGER agents_auth_cache_truncate AFTER TRUNCATE ON secumon.agents
FOR EACH STATEMENT EXECUTE FUNCTION secumon._auth_cache_changed();

-- What login(), refresh() return: the seed's response.
CREATE TYPE secumon.session_tokens AS (
    token         text,
    refresh_token text,
    expires_at    timestamptz,
    "user"        jsonb
);
COMMENT ON TYPE secumon.session_tokens IS 'token (JWT, Authorization: Bearer), refresh_token, expires_at (of token), user {id, username, email, role, tenant_id}.';

-- ---------------------------------------------------------------------------------------------
-- Internal helpers

-- The address a login comes from: the connection's, or the client_addr argument when the
-- connection is a trusted proxy (secumon.trusted_proxies: CIDRs, "local" = Unix socket).
CREATE FUNCTION secumon._login_address(claimed inet) RETURNS inet
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    connection inet := inet_client_addr();
BEGIN
    IF claimed IS NOT NULL AND EXISTS (
        SELECT 1
          FROM unnest(string_to_array(coalesce(current_setting('secumon.trusted_proxies', true), ''), ',')) AS p(entry)
         WHERE (btrim(entry) = 'local' AND connection IS NULL)
            OR (btrim(entry) NOT IN ('', 'local') AND connection <<= btrim(entry)::cidr)) THEN
        RETURN claimed;
    END IF;
    RETURN connection;
END
$$;

-- Throttling key of an address: the host, or its /64 for IPv6 (one client often owns a /64).
CREATE FUNCTION secumon._throttle_key(address inet) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN family(address) = 6 THEN network(set_masklen(address, 64))::text ELSE host(address) END;

-- A new access token and refresh token (in `family`) for user `user_id`.
CREATE FUNCTION secumon._issue_tokens(user_id uuid, family uuid, client_addr inet) RETURNS secumon.session_tokens
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u secumon.users;
    access record;
    refresh record;
BEGIN
    SELECT * INTO STRICT u FROM secumon.users AS x WHERE x.id = _issue_tokens.user_id;
    SELECT * INTO access FROM secumon._sign_access_token(to_jsonb(u) - 'password_hash');
    SELECT * INTO refresh FROM secumon._new_refresh_token();
    INSERT INTO secumon.refresh_tokens (user_id, token_hash, family, expires_at, client_addr)
    VALUES (u.id, sha256(convert_to(refresh.token, 'UTF8')), _issue_tokens.family, refresh.expires_at,
            _issue_tokens.client_addr);
    RETURN ROW(access.token, refresh.token, access.expires_at,
               jsonb_build_object('id', u.id, 'username', u.username, 'email', u.email, 'role', u.role,
                                  'tenant_id', u.tenant_id))::secumon.session_tokens;
END
$$;

-- Revokes every live refresh token of `user_id` and, by bumping token_version, every access
-- token issued so far. Returns the number of refresh tokens revoked.
CREATE FUNCTION secumon._revoke_user_sessions(user_id uuid, reason text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    revoked_count integer;
BEGIN
    UPDATE secumon.refresh_tokens AS t
       SET revoked = true, revoked_at = now(), revoked_reason = _revoke_user_sessions.reason
     WHERE t.user_id = _revoke_user_sessions.user_id AND NOT t.revoked;
    GET DIAGNOSTICS revoked_count = ROW_COUNT;
    UPDATE secumon.users AS u SET token_version = u.token_version + 1, updated_at = now()
     WHERE u.id = _revoke_user_sessions.user_id;
    RETURN revoked_count;
END
$$;

-- Revokes a whole refresh-token family after reuse of a rotated token (called by the
-- "secumon token revoker" worker, in its own transaction): the session is presumed stolen,
-- so the user's access tokens go too.
CREATE FUNCTION secumon._revoke_family(family uuid, reason text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner uuid;
    revoked_count integer;
BEGIN
    UPDATE secumon.refresh_tokens AS t
       SET revoked = true, revoked_at = now(), revoked_reason = _revoke_family.reason
     WHERE t.family = _revoke_family.family AND NOT t.revoked;
    GET DIAGNOSTICS revoked_count = ROW_COUNT;
    SELECT t.user_id INTO owner FROM secumon.refresh_tokens AS t WHERE t.family = _revoke_family.family LIMIT 1;
    IF owner IS NOT NULL THEN
        UPDATE secumon.users AS u SET token_version = u.token_version + 1, updated_at = now() WHERE u.id = owner;
    END IF;
    RAISE LOG 'secumon: refresh token reuse: revoked session % of user % (% live tokens) and the user''s access tokens',
              family, owner, revoked_count;
    RETURN revoked_count;
END
$$;

-- The user named `target` if the caller may manage it, else an error. Operators (superusers,
-- secumon_admin) manage everyone; SecuMon admins the users of their tenant; with
-- `admin_only` false, any SecuMon user also themself. Users the caller may not see are
-- reported as unknown, so their existence does not leak across tenants.
CREATE FUNCTION secumon._user_for_caller(target text, admin_only boolean) RETURNS secumon.users
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    operator boolean := secumon._caller_is_operator();
    me uuid := secumon.current_user_id();
    my_tenant text := secumon.current_tenant();
    my_role text := secumon.current_role();
    u secumon.users;
BEGIN
    IF NOT operator AND me IS NULL THEN
        RAISE EXCEPTION 'permission denied: this session has no SecuMon identity'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call secumon.authenticate(token) with a token from secumon.login() first.';
    END IF;
    IF NOT operator AND admin_only AND my_role IS DISTINCT FROM 'admin' THEN
        RAISE EXCEPTION 'permission denied: only SecuMon admins may manage users'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask an admin of your tenant.';
    END IF;
    SELECT * INTO u FROM secumon.users AS x
     WHERE lower(x.username) = lower(target)
       AND (operator OR (x.tenant_id = my_tenant AND (my_role = 'admin' OR x.id = me)));
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no SecuMon user "%"', target
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'SELECT username FROM secumon.users lists the users you may manage.';
    END IF;
    RETURN u;
END
$$;

CREATE FUNCTION secumon._check_user_role(role text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF role IS NULL OR role NOT IN ('admin', 'user', 'readonly') THEN
        RAISE EXCEPTION 'invalid SecuMon role %', coalesce(quote_literal(role), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A role is admin (manages users and channels), user (reads and writes) or readonly.';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Login, refresh, logout

CREATE FUNCTION secumon.login(username text, password text, client_addr inet DEFAULT NULL)
RETURNS secumon.session_tokens
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name text := coalesce(login.username, '');
    address inet := secumon._login_address(login.client_addr);
    throttle_key text := secumon._throttle_key(address);
    u secumon.users;
    ok boolean := NOT secumon._login_locked(name, throttle_key);
BEGIN
    IF ok THEN
        SELECT * INTO u FROM secumon.users AS x WHERE lower(x.username) = lower(name);
        -- Always one bcrypt computation (a dummy one for unknown users).
        ok := secumon._password_verify(login.password, u.password_hash) AND u.active;
        IF NOT ok THEN
            PERFORM secumon._login_failed(name, throttle_key);
        END IF;
    END IF;
    IF NOT ok THEN
        -- One place raises every refusal, so not even the error's context tells them apart.
        PERFORM secumon._raise_login_failed();
    END IF;
    PERFORM secumon._login_succeeded(name);
    IF secumon._password_needs_rehash(u.password_hash) THEN
        UPDATE secumon.users AS x SET password_hash = secumon._password_hash(login.password, false) WHERE x.id = u.id;
    END IF;
    RETURN secumon._issue_tokens(u.id, gen_random_uuid(), address);
END
$$;
COMMENT ON FUNCTION secumon.login(text, text, inet) IS 'Logs in: returns token (24 h), refresh_token (30 d), expires_at and user. One generic error (28P01) for every failure; throttled per account and address.';

CREATE FUNCTION secumon.refresh(refresh_token text, client_addr inet DEFAULT NULL)
RETURNS secumon.session_tokens
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    presented bytea := sha256(convert_to(coalesce(refresh.refresh_token, ''), 'UTF8'));
    t secumon.refresh_tokens;
    ok boolean;
BEGIN
    SELECT * INTO t FROM secumon.refresh_tokens AS x WHERE x.token_hash = presented FOR UPDATE;
    ok := FOUND AND t.expires_at > now() AND NOT t.revoked
          AND EXISTS (SELECT 1 FROM secumon.users AS u WHERE u.id = t.user_id AND u.active);
    -- A rotated token presented again: one of its holders is not the user. Revoke the whole
    -- family, in a worker's transaction since this one is about to fail.
    IF t.revoked AND t.revoked_reason = 'rotated'
       AND EXISTS (SELECT 1 FROM secumon.refresh_tokens AS x WHERE x.family = t.family AND NOT x.revoked) THEN
        PERFORM secumon._revoke_family_in_background(t.family);
    END IF;
    IF NOT ok THEN
        PERFORM secumon._raise_token_invalid();
    END IF;
    UPDATE secumon.refresh_tokens AS x SET revoked = true, revoked_at = now(), revoked_reason = 'rotated'
     WHERE x.id = t.id;
    RETURN secumon._issue_tokens(t.user_id, t.family, secumon._login_address(refresh.client_addr));
END
$$;
COMMENT ON FUNCTION secumon.refresh(text, inet) IS 'Exchanges a refresh token for a new token and a new (rotated) refresh token. Presenting a used refresh token again revokes its whole session.';

CREATE FUNCTION secumon.logout(token text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    user_id uuid;
    revoked_count integer;
BEGIN
    IF token IS NULL THEN
        user_id := secumon.current_user_id();
        IF user_id IS NULL THEN
            PERFORM secumon._raise_token_invalid();
        END IF;
    ELSE
        user_id := (secumon.verify_token(token) ->> 'user_id')::uuid;
    END IF;
    revoked_count := secumon._revoke_user_sessions(user_id, 'logout');
    PERFORM secumon._forget_identity();
    RETURN revoked_count;
END
$$;
COMMENT ON FUNCTION secumon.logout(text) IS 'Revokes every refresh token and access token of the token''s user (default: the session''s identity) and forgets the session''s identity.';

-- ---------------------------------------------------------------------------------------------
-- Admin functions. Operators (superusers, secumon_admin) manage every tenant; SecuMon admins
-- manage their own tenant; users may list and revoke their own sessions and change their own
-- password.

CREATE FUNCTION secumon.create_user(username text, password text, role text DEFAULT 'user',
                                    email text DEFAULT NULL, tenant_id text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    operator boolean := secumon._caller_is_operator();
    tenant text := coalesce(create_user.tenant_id, secumon.current_tenant(), 'default');
    new_id uuid;
BEGIN
    IF NOT operator AND (secumon.current_role() IS DISTINCT FROM 'admin' OR tenant <> secumon.current_tenant()) THEN
        RAISE EXCEPTION 'permission denied to create users in tenant "%"', tenant
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'SecuMon admins create users in their own tenant; operators (secumon_admin) in any.';
    END IF;
    IF username IS NULL OR username !~ '^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid username %', coalesce(quote_literal(username), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A username is 1 to 64 letters, digits, ".", "_", "@", "+" or "-", starting with a letter or digit.';
    END IF;
    PERFORM secumon._check_user_role(role);
    IF email IS NOT NULL AND email !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN
        RAISE EXCEPTION 'invalid email address %', quote_literal(email) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM secumon.tenants AS t WHERE t.tenant_id = tenant) THEN
        RAISE EXCEPTION 'no tenant "%"', tenant
            USING ERRCODE = 'invalid_parameter_value', HINT = 'An operator creates tenants: INSERT INTO secumon.tenants.';
    END IF;
    INSERT INTO secumon.users AS u (username, email, password_hash, role, tenant_id)
    VALUES (create_user.username, create_user.email, secumon._password_hash(create_user.password, true),
            create_user.role, tenant)
    RETURNING u.id INTO new_id;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'username "%" is taken', username
        USING ERRCODE = 'unique_violation', HINT = 'Usernames are unique across tenants, ignoring case.';
END
$$;
COMMENT ON FUNCTION secumon.create_user(text, text, text, text, text) IS 'Creates a SecuMon user (role admin, user or readonly) and returns its id.';

CREATE FUNCTION secumon.set_user_role(username text, role text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u secumon.users := secumon._user_for_caller(username, true);
BEGIN
    PERFORM secumon._check_user_role(role);
    -- Tokens carry the role: the user gets new ones at the next refresh.
    UPDATE secumon.users AS x SET role = set_user_role.role, token_version = x.token_version + 1, updated_at = now()
     WHERE x.id = u.id AND x.role <> set_user_role.role;
END
$$;

CREATE FUNCTION secumon.set_user_password(username text, password text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u secumon.users := secumon._user_for_caller(username, true);
BEGIN
    UPDATE secumon.users AS x
       SET password_hash = secumon._password_hash(set_user_password.password, true),
           password_changed_at = now(), updated_at = now()
     WHERE x.id = u.id;
    PERFORM secumon._revoke_user_sessions(u.id, 'password');
END
$$;

CREATE FUNCTION secumon.change_password(current_password text, new_password text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u secumon.users;
BEGIN
    SELECT * INTO u FROM secumon.users AS x WHERE x.id = secumon.current_user_id();
    IF NOT FOUND THEN
        PERFORM secumon._raise_token_invalid();
    END IF;
    IF NOT secumon._password_verify(current_password, u.password_hash) THEN
        PERFORM secumon._raise_login_failed();
    END IF;
    UPDATE secumon.users AS x
       SET password_hash = secumon._password_hash(new_password, true), password_changed_at = now(), updated_at = now()
     WHERE x.id = u.id;
    PERFORM secumon._revoke_user_sessions(u.id, 'password');
    PERFORM secumon._forget_identity();
END
$$;
COMMENT ON FUNCTION secumon.change_password(text, text) IS 'Changes the session user''s own password; every session of the user ends (log in again).';

CREATE FUNCTION secumon.deactivate_user(username text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u secumon.users := secumon._user_for_caller(username, true);
BEGIN
    UPDATE secumon.users AS x SET active = false, updated_at = now() WHERE x.id = u.id;
    PERFORM secumon._revoke_user_sessions(u.id, 'deactivated');
END
$$;

CREATE FUNCTION secumon.activate_user(username text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u secumon.users := secumon._user_for_caller(username, true);
BEGIN
    UPDATE secumon.users AS x SET active = true, updated_at = now() WHERE x.id = u.id AND NOT x.active;
END
$$;

-- Live sessions (refresh-token families with an unexpired, unrevoked token).
CREATE FUNCTION secumon.list_sessions(for_username text DEFAULT NULL)
RETURNS TABLE (session_id uuid, user_id uuid, username text, started_at timestamptz,
               refreshed_at timestamptz, expires_at timestamptz, client_addr inet)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    operator boolean := secumon._caller_is_operator();
    target uuid;
BEGIN
    IF for_username IS NOT NULL THEN
        target := (secumon._user_for_caller(for_username, false)).id;
    ELSIF NOT operator AND secumon.current_user_id() IS NULL THEN
        RAISE EXCEPTION 'permission denied: this session has no SecuMon identity'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call secumon.authenticate(token) with a token from secumon.login() first.';
    END IF;
    RETURN QUERY
    SELECT t.family, u.id, u.username, min(t.created_at), max(t.created_at),
           max(t.expires_at) FILTER (WHERE NOT t.revoked),
           (array_agg(t.client_addr ORDER BY t.created_at DESC))[1]
      FROM secumon.refresh_tokens AS t
      JOIN secumon.users AS u ON u.id = t.user_id
     WHERE (target IS NULL OR u.id = target)
       AND (operator
            OR (u.tenant_id = secumon.current_tenant()
                AND (secumon.current_role() = 'admin' OR u.id = secumon.current_user_id())))
     GROUP BY t.family, u.id, u.username
    HAVING bool_or(NOT t.revoked AND t.expires_at > now())
     ORDER BY max(t.created_at) DESC;
END
$$;
COMMENT ON FUNCTION secumon.list_sessions(text) IS 'Live sessions (refresh-token families) of the users the caller may manage, or of for_username.';

-- Revokes one session (session_id) or all sessions of a user; all sessions also ends the
-- user's access tokens. Returns the number of refresh tokens revoked.
CREATE FUNCTION secumon.revoke_sessions(username text, session_id uuid DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u secumon.users := secumon._user_for_caller(username, false);
    revoked_count integer;
BEGIN
    IF session_id IS NULL THEN
        RETURN secumon._revoke_user_sessions(u.id, 'revoked');
    END IF;
    UPDATE secumon.refresh_tokens AS t SET revoked = true, revoked_at = now(), revoked_reason = 'revoked'
     WHERE t.family = revoke_sessions.session_id AND t.user_id = u.id AND NOT t.revoked;
    GET DIAGNOSTICS revoked_count = ROW_COUNT;
    RETURN revoked_count;
END
$$;

-- Adds a new signing key; the previous one keeps verifying its tokens until they expire.
CREATE FUNCTION secumon.rotate_jwt_secret() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_kid text;
BEGIN
    IF NOT secumon._caller_is_operator() THEN
        RAISE EXCEPTION 'permission denied to rotate the signing key'
            USING ERRCODE = 'insufficient_privilege', HINT = 'Only superusers and members of secumon_admin may.';
    END IF;
    UPDATE secumon._jwt_keys SET retired_at = now() WHERE retired_at IS NULL;
    -- No token lives longer than 30 days (the maximum secumon.token_lifetime).
    DELETE FROM secumon._jwt_keys WHERE retired_at < now() - interval '31 days';
    INSERT INTO secumon._jwt_keys (kid, secret) SELECT k.kid, k.secret FROM secumon._generate_jwt_key() AS k
    RETURNING kid INTO new_kid;
    IF coalesce(current_setting('secumon.jwt_secret', true), '') <> '' THEN
        RAISE WARNING 'secumon.jwt_secret is set and keeps signing new tokens'
            USING DETAIL = format('Key %s signs only once secumon.jwt_secret is unset.', new_kid);
    END IF;
    RETURN new_kid;
END
$$;
COMMENT ON FUNCTION secumon.rotate_jwt_secret() IS 'Starts signing with a new generated key (returned kid); tokens of earlier keys stay valid until they expire.';

-- Housekeeping job: expired refresh tokens.
CREATE FUNCTION secumon._auth_cleanup() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM secumon.refresh_tokens WHERE expires_at < now() - interval '1 day';
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN format('%s expired refresh tokens removed', removed);
END
$$;
INSERT INTO secumon._jobs (job_name, worker, function_name, description, schedule_interval) VALUES
    ('auth_cleanup', 'maintenance', 'secumon._auth_cleanup', 'Removes refresh tokens expired more than a day ago', '1 hour');
