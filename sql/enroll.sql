-- Auto-registration (enrollment). An operator, or a SecuMon admin for their own tenant, creates
-- an enrollment token; an agent started with the connection of a role in secumon_enroll and
-- that token calls secumon.enroll(), which creates the agent's own login role, registers the
-- agent in the token's tenant with the token's labels, and returns the role's password once.
-- Tokens are stored as SHA-256 digests only. See docs/enrollment.md.

DO $roles$
BEGIN
    -- Login roles granted this may call secumon.enroll() and nothing else.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'secumon_enroll') THEN
        CREATE ROLE secumon_enroll NOLOGIN;
    END IF;
END
$roles$;

-- ---------------------------------------------------------------------------------------------
-- Tables

CREATE TABLE secumon.enrollment_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  text NOT NULL REFERENCES secumon.tenants ON UPDATE CASCADE,
    labels     jsonb NOT NULL DEFAULT '{}'
               CONSTRAINT enrollment_tokens_labels_object CHECK (jsonb_typeof(labels) = 'object'),
    token_hash bytea NOT NULL UNIQUE,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    max_uses   integer NOT NULL CHECK (max_uses > 0),
    uses       integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    revoked_at timestamptz,
    agent_id   text
);
COMMENT ON TABLE secumon.enrollment_tokens IS 'Enrollment tokens for secumon.enroll(); only the SHA-256 of each token is stored. Create them with secumon.create_enrollment_token().';
COMMENT ON COLUMN secumon.enrollment_tokens.agent_id IS 'Set: the token enrolls this agent_id only, and only such a token enrolls an agent that was enrolled before (a reinstalled host).';
SELECT pg_catalog.pg_extension_config_dump('secumon.enrollment_tokens', '');

-- One row per enrolled agent: the role enrollment created for it (so that only such a role is
-- ever reused or given a new password), its tenant and the token's labels, which the agent's
-- own registrations cannot override (secumon._keep_enrolled_labels).
CREATE TABLE secumon.enrollments (
    agent_id         text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES secumon.tenants ON UPDATE CASCADE,
    role_name        name NOT NULL UNIQUE,
    token_id         uuid REFERENCES secumon.enrollment_tokens ON DELETE SET NULL,
    labels           jsonb NOT NULL DEFAULT '{}',
    enrolled_at      timestamptz NOT NULL DEFAULT now(),
    last_enrolled_at timestamptz NOT NULL DEFAULT now(),
    times_enrolled   integer NOT NULL DEFAULT 1
);
COMMENT ON TABLE secumon.enrollments IS 'Agents registered by secumon.enroll(): the login role it created for each, its tenant and the token''s labels.';
SELECT pg_catalog.pg_extension_config_dump('secumon.enrollments', '');

-- ---------------------------------------------------------------------------------------------
-- Helpers

-- 256 random bits from the operating system (secumon._generate_jwt_key), URL-safe base64.
-- Most agents enrollment registers in one tenant (each gets a cluster-wide login role).
CREATE FUNCTION secumon._max_enrolled_agents_per_tenant() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 10000;

CREATE FUNCTION secumon._random_secret() RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT rtrim(translate(encode(k.secret, 'base64'), '+/', '-_'), '=') FROM secumon._generate_jwt_key() AS k);
END
$$;

-- The login role enroll() creates for `agent_id`: secumon_agent_<agent_id> when the id is
-- already lower case [a-z0-9_] and short enough, else its sanitized form plus 8 hex digits
-- of its SHA-256, so that "web.01", "web_01" and "Web_01" never share a role. At most 63 bytes.
CREATE FUNCTION secumon._enrolled_role_name(agent_id text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN agent_id ~ '^[a-z0-9_]{1,49}$' THEN 'secumon_agent_' || agent_id
            ELSE 'secumon_agent_' || left(regexp_replace(lower(agent_id), '[^a-z0-9_]', '_', 'g'), 40) || '_'
                 || left(encode(sha256(convert_to(agent_id, 'UTF8')), 'hex'), 8) END;

-- Raises 22023 unless `labels` is NULL or a JSON object of at most 64 string values with
-- names like the agent's labels (^[A-Za-z_][A-Za-z0-9_.-]{0,63}$) and values of at most 256
-- characters.
CREATE FUNCTION secumon._check_enrollment_labels(labels jsonb, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad text;
BEGIN
    IF labels IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(labels) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, not %', what, jsonb_typeof(labels)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"env": "prod", "dc": "fra1"}.';
    END IF;
    IF (SELECT count(*) FROM jsonb_object_keys(labels)) > 64 THEN
        RAISE EXCEPTION '% has more than 64 entries', what
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A few labels that select hosts are enough.';
    END IF;
    SELECT l.key INTO bad FROM jsonb_each(labels) AS l
     WHERE l.key !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,63}$' OR jsonb_typeof(l.value) <> 'string'
        OR length(l.value #>> '{}') > 256 OR (l.value #>> '{}') ~ '[[:cntrl:]]'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid % entry %', what, quote_literal(bad)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Label names match ^[A-Za-z_][A-Za-z0-9_.-]{0,63}$; values are strings of at most 256 characters without control characters.';
    END IF;
END
$$;

-- Raises 42501 unless the caller may manage the enrollment tokens of `tenant`: operators
-- (superusers, secumon_admin) for any tenant, SecuMon admins for their own.
CREATE FUNCTION secumon._check_enrollment_admin(tenant text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF secumon._caller_is_operator() THEN
        RETURN;
    END IF;
    IF secumon.current_role() IS DISTINCT FROM 'admin' OR tenant IS DISTINCT FROM secumon.current_tenant() THEN
        RAISE EXCEPTION 'permission denied to manage enrollment tokens of tenant %', coalesce(quote_literal(tenant), 'NULL')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'SecuMon admins manage the enrollment tokens of their own tenant; operators (secumon_admin) those of any.';
    END IF;
END
$$;

-- BEFORE INSERT OR UPDATE OF labels on secumon.agents, when the agent's own role writes (its
-- registrations through secumon.register_agent): an enrolled agent keeps its enrollment's
-- tenant and the token's labels, which win over the labels of the agent's configuration.
-- Operators and tenant admins change labels freely.
CREATE FUNCTION secumon._keep_enrolled_labels() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record;
BEGIN
    SELECT x.tenant_id, x.labels INTO e FROM secumon.enrollments AS x
     WHERE x.agent_id = NEW.agent_id AND x.role_name = NEW.owner_role;
    IF FOUND THEN
        NEW.labels := coalesce(NEW.labels, '{}') || e.labels;
        IF TG_OP = 'INSERT' THEN
            NEW.tenant_id := e.tenant_id;
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER agents_keep_enrolled_labels BEFORE INSERT OR UPDATE OF labels ON secumon.agents
    FOR EACH ROW WHEN (NEW.owner_role = session_user) EXECUTE FUNCTION secumon._keep_enrolled_labels();

-- ---------------------------------------------------------------------------------------------
-- Tokens

CREATE FUNCTION secumon.create_enrollment_token(tenant_id text DEFAULT NULL, labels jsonb DEFAULT '{}',
                                                valid_for interval DEFAULT '24 hours', max_uses integer DEFAULT 1,
                                                agent_id text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant text := coalesce(create_enrollment_token.tenant_id, secumon.current_tenant(),
                            CASE WHEN secumon._caller_is_operator() THEN 'default' END);
    token text;
BEGIN
    PERFORM secumon._check_enrollment_admin(tenant);
    IF NOT EXISTS (SELECT 1 FROM secumon.tenants AS t WHERE t.tenant_id = tenant) THEN
        RAISE EXCEPTION 'no tenant "%"', tenant
            USING ERRCODE = 'invalid_parameter_value', HINT = 'An operator creates tenants: INSERT INTO secumon.tenants.';
    END IF;
    IF labels IS NULL THEN
        RAISE EXCEPTION 'labels must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass ''{}'' for no labels.';
    END IF;
    PERFORM secumon._check_enrollment_labels(labels, 'labels');
    IF valid_for IS NULL OR valid_for < interval '1 minute' OR valid_for > interval '366 days' THEN
        RAISE EXCEPTION 'invalid valid_for %', coalesce(quote_literal(valid_for::text), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A token is valid from 1 minute to 366 days, e.g. ''24 hours'' (the default) or ''7 days''.';
    END IF;
    IF max_uses IS NULL OR max_uses < 1 OR max_uses > secumon._max_enrolled_agents_per_tenant() THEN
        RAISE EXCEPTION 'invalid max_uses %', coalesce(max_uses::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A token enrolls 1 (the default) to %s agents.', secumon._max_enrolled_agents_per_tenant());
    END IF;
    IF create_enrollment_token.agent_id IS NOT NULL THEN
        PERFORM secumon._check_agent_id(create_enrollment_token.agent_id);
        IF max_uses <> 1 THEN
            RAISE EXCEPTION 'a token for one agent enrolls it once (max_uses 1)' USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    token := 'smenroll_' || secumon._random_secret();
    INSERT INTO secumon.enrollment_tokens AS e (tenant_id, labels, token_hash, created_by, expires_at, max_uses, agent_id)
    VALUES (tenant, create_enrollment_token.labels, sha256(convert_to(token, 'UTF8')),
            coalesce((SELECT u.username FROM secumon.users AS u WHERE u.id = secumon.current_user_id()), session_user),
            now() + valid_for, create_enrollment_token.max_uses, create_enrollment_token.agent_id);
    RETURN token;
END
$$;
COMMENT ON FUNCTION secumon.create_enrollment_token(text, jsonb, interval, integer, text) IS 'Creates an enrollment token for a tenant (operators: any; SecuMon admins: their own) and returns it; it is shown only this once. With agent_id: for that agent only, the one kind of token that re-enrolls an enrolled agent.';

CREATE FUNCTION secumon.revoke_enrollment_token(id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t secumon.enrollment_tokens;
BEGIN
    SELECT * INTO t FROM secumon.enrollment_tokens AS e WHERE e.id = revoke_enrollment_token.id FOR UPDATE;
    -- Tokens of other tenants are reported as unknown, so their ids do not leak.
    IF NOT FOUND OR NOT (secumon._caller_is_operator()
                         OR (secumon.current_role() = 'admin' AND t.tenant_id = secumon.current_tenant())) THEN
        RAISE EXCEPTION 'no enrollment token with id %', coalesce(id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'SELECT id, tenant_id, expires_at FROM secumon.enrollment_tokens lists the tokens you may manage.';
    END IF;
    UPDATE secumon.enrollment_tokens AS e SET revoked_at = coalesce(e.revoked_at, now()) WHERE e.id = t.id;
END
$$;
COMMENT ON FUNCTION secumon.revoke_enrollment_token(uuid) IS 'Revokes an enrollment token: no further agent enrolls with it; agents enrolled with it keep their roles.';

-- ---------------------------------------------------------------------------------------------
-- Enrolling

CREATE FUNCTION secumon.enroll(token text, agent_id text, hostname text, os text DEFAULT NULL,
                               agent_version text DEFAULT NULL, labels jsonb DEFAULT '{}')
RETURNS TABLE (role_name text, password text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    t secumon.enrollment_tokens;
    agent_role text;
    role_exists boolean;
    agent record;
    enrolled record;
    secret text;
BEGIN
    -- One answer for every token that cannot enroll: nothing tells a guesser which part failed.
    SELECT * INTO t FROM secumon.enrollment_tokens AS e
     WHERE e.token_hash = sha256(convert_to(coalesce(enroll.token, ''), 'UTF8'))
       FOR UPDATE;
    IF NOT FOUND OR t.revoked_at IS NOT NULL OR t.expires_at <= now() OR t.uses >= t.max_uses THEN
        RAISE EXCEPTION 'enrollment token is invalid, expired or used up'
            USING ERRCODE = 'invalid_authorization_specification',
                  HINT = 'Ask an administrator for a new token (secumon.create_enrollment_token()).';
    END IF;
    PERFORM secumon._check_agent_id(enroll.agent_id);
    IF t.agent_id IS NOT NULL AND t.agent_id <> enroll.agent_id THEN
        RAISE EXCEPTION 'this enrollment token is for agent "%"', t.agent_id
            USING ERRCODE = 'insufficient_privilege', HINT = 'Start the agent with that agent_id, or ask for a token for this one.';
    END IF;
    PERFORM secumon._check_enrollment_labels(enroll.labels, 'labels');
    PERFORM secumon._check_jsonb(to_jsonb(ARRAY[enroll.hostname, enroll.os, enroll.agent_version]),
                                 'hostname, os and agent_version', secumon._max_labels_bytes());
    IF NOT (SELECT r.rolsuper OR r.rolcreaterole FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'agents cannot enroll: the owner of the secumon extension, role "%", may not create roles', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An operator runs ALTER ROLE %I CREATEROLE, or creates agent roles by hand (docs/install.md).', current_user);
    END IF;

    agent_role := secumon._enrolled_role_name(enroll.agent_id);
    -- Two hosts enrolling the same agent_id at once: one after the other.
    PERFORM pg_advisory_xact_lock(hashtextextended('secumon.enroll:' || enroll.agent_id, 0));
    SELECT a.tenant_id, a.owner_role INTO agent FROM secumon.agents AS a WHERE a.agent_id = enroll.agent_id FOR UPDATE;
    SELECT x.agent_id, x.tenant_id INTO enrolled FROM secumon.enrollments AS x WHERE x.role_name = agent_role FOR UPDATE;
    role_exists := EXISTS (SELECT 1 FROM pg_catalog.pg_roles AS r WHERE r.rolname = agent_role);
    -- Enrolling again (a reinstalled host) is allowed only for an agent that enrollment
    -- registered in this token's tenant, under the role it created for it.
    -- A reinstalled host enrolls again only with a token made for it: any other token of the
    -- tenant would give its login (and its data) to whoever holds that token.
    IF agent.tenant_id IS NOT NULL AND t.agent_id IS DISTINCT FROM enroll.agent_id THEN
        RAISE EXCEPTION 'agent "%" is enrolled already; enrolling it again needs a token made for it', enroll.agent_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An admin of its tenant runs SELECT secumon.create_enrollment_token(agent_id => %L).', enroll.agent_id);
    END IF;
    IF agent.tenant_id IS NOT NULL
       AND NOT coalesce(agent.tenant_id = t.tenant_id AND agent.owner_role = agent_role AND role_exists
                        AND enrolled.agent_id = enroll.agent_id, false) THEN
        RAISE EXCEPTION 'agent "%" is registered already and may not enroll with this token', enroll.agent_id
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Only an agent that was enrolled into the token''s tenant may enroll again; it keeps its role and gets a new password.',
                  HINT = 'Give the host another agent_id, or let an operator remove the agent (DELETE FROM secumon.agents) and its role first.';
    END IF;
    -- (With the agent present, the check above has tied its role to it already.)
    IF role_exists AND agent.tenant_id IS NULL
       AND NOT coalesce(enrolled.agent_id = enroll.agent_id AND enrolled.tenant_id = t.tenant_id, false) THEN
        RAISE EXCEPTION 'agent "%" may not enroll with this token: its role "%" exists and was not created by enrolling it into the token''s tenant',
                        enroll.agent_id, agent_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Give the host another agent_id, or let an operator drop that role first.';
    END IF;

    IF agent.tenant_id IS NULL
       AND (SELECT count(*) FROM secumon.enrollments AS x WHERE x.tenant_id = t.tenant_id) >= secumon._max_enrolled_agents_per_tenant() THEN
        RAISE EXCEPTION 'tenant "%" has % enrolled agents, the most enrollment registers', t.tenant_id, secumon._max_enrolled_agents_per_tenant()
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'An operator removes agents that are gone (their enrollments and roles), or registers agents by hand (docs/install.md).';
    END IF;
    -- Only a plain agent login gets a new password: never a role that was given more since.
    IF role_exists AND EXISTS (
           SELECT FROM pg_catalog.pg_roles AS r
            WHERE r.rolname = agent_role
              AND (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
                   OR EXISTS (SELECT FROM pg_catalog.pg_auth_members AS m
                               WHERE m.member = r.oid AND m.roleid <> 'secumon_agent'::regrole))) THEN
        RAISE EXCEPTION 'role "%" has more than an agent''s rights; enrollment does not reset its password', agent_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'An operator resets it by hand, or gives the host another agent_id.';
    END IF;
    secret := secumon._random_secret();
    IF NOT role_exists THEN
        -- What an operator left behind after dropping the role of an agent it removed.
        DELETE FROM secumon.enrollments AS x WHERE x.role_name = agent_role AND x.agent_id <> enroll.agent_id;
        EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS IN ROLE secumon_agent', agent_role);
    END IF;
    -- The password never appears in an error or its context.
    BEGIN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', agent_role, secret);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'could not set the password of role "%"', agent_role USING ERRCODE = 'internal_error';
    END;

    IF agent.tenant_id IS NULL THEN
        INSERT INTO secumon.agents AS a (agent_id, tenant_id, hostname, os, agent_version, labels, owner_role, last_seen)
        VALUES (enroll.agent_id, t.tenant_id, enroll.hostname, enroll.os, enroll.agent_version,
                coalesce(enroll.labels, '{}') || t.labels, agent_role, now());
    ELSE
        UPDATE secumon.agents AS a
           SET hostname = coalesce(enroll.hostname, a.hostname),
               os = coalesce(enroll.os, a.os),
               agent_version = coalesce(enroll.agent_version, a.agent_version),
               labels = coalesce(enroll.labels, '{}') || t.labels,
               last_seen = greatest(a.last_seen, now())
         WHERE a.agent_id = enroll.agent_id;
    END IF;
    INSERT INTO secumon.enrollments AS x (agent_id, tenant_id, role_name, token_id, labels)
    VALUES (enroll.agent_id, t.tenant_id, agent_role, t.id, t.labels)
    ON CONFLICT (agent_id) DO UPDATE
       SET tenant_id = excluded.tenant_id, role_name = excluded.role_name, token_id = excluded.token_id,
           labels = excluded.labels, last_enrolled_at = now(), times_enrolled = x.times_enrolled + 1;
    UPDATE secumon.enrollment_tokens AS e SET uses = e.uses + 1 WHERE e.id = t.id;
    RAISE LOG 'secumon: agent "%" enrolled into tenant "%" as role "%" with enrollment token %',
              enroll.agent_id, t.tenant_id, agent_role, t.id;
    RETURN QUERY SELECT agent_role, secret;
END
$$;
COMMENT ON FUNCTION secumon.enroll(text, text, text, text, text, jsonb) IS 'Registers an agent with an enrollment token: creates its login role (member of secumon_agent) and returns the role and its new password; called by roles in secumon_enroll.';

-- ---------------------------------------------------------------------------------------------
-- Row-level security and privileges

-- A tenant's admins see its tokens and enrollments; operators see all. Writes go through the
-- functions above (operators may also delete old tokens).
SELECT secumon._enable_tenant_rls('secumon.enrollment_tokens', admin_only_write => true, admin_only_read => true);
SELECT secumon._enable_tenant_rls('secumon.enrollments', admin_only_write => true, admin_only_read => true);
-- Not the digests: nobody needs them outside secumon.enroll().
REVOKE ALL ON secumon.enrollment_tokens FROM secumon_web, secumon_reader;
GRANT SELECT (id, tenant_id, labels, created_by, created_at, expires_at, max_uses, uses, revoked_at, agent_id)
   ON secumon.enrollment_tokens TO secumon_web, secumon_admin;
GRANT DELETE ON secumon.enrollment_tokens TO secumon_admin;
GRANT SELECT, UPDATE (labels) ON secumon.enrollments TO secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.create_enrollment_token(text, jsonb, interval, integer, text),
                          secumon.revoke_enrollment_token(uuid)
   TO secumon_web, secumon_admin;
-- The enrolling role: one function, nothing else (its USAGE on the schema: sql/privileges.sql).
GRANT EXECUTE ON FUNCTION secumon.enroll(text, text, text, text, text, jsonb) TO secumon_enroll;
