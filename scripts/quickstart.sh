#!/usr/bin/env bash
# SecuMon on this machine in one command: builds and installs the extension and the agent,
# runs a private PostgreSQL 15 cluster in .secumon/ with the extension loaded, starts an agent
# reporting this host, and shows what arrived.
#
#   ./scripts/quickstart.sh          set up (once) and start everything; safe to re-run
#   ./scripts/quickstart.sh status   what is running
#   ./scripts/quickstart.sh stop     stop the agent and the cluster (data is kept)
#
# Environment: SECUMON_PORT (default 5433); SECUMON_SKIP_BUILD=1 uses the installed extension
# and the built agent as they are (a quick restart). State lives in $REPO/.secumon (git-ignored):
# pgdata/, run/ (socket), spool/, agent.toml (mode 600, holds the agent's password), logs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$REPO/.secumon
PGDATA=$STATE/pgdata
RUN=$STATE/run
PG_LOG=$STATE/postgresql.log
PORT=${SECUMON_PORT:-5433}
PG_CONFIG=/usr/bin/pg_config
PGBIN=${SECUMON_PG_BINDIR:-/usr/lib/postgresql/15/bin}
DATABASE=secumon
AGENT_ROLE=secumon_agent_local
AGENT_BIN=$REPO/target/release/secumon-agent
AGENT_CONF=$STATE/agent.toml
AGENT_PID=$STATE/agent.pid
AGENT_LOG=$STATE/agent.log
BUILD_LOG=$STATE/build.log

say() { printf '==> %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# PostgreSQL refuses to run as root: server programs and psql run as the postgres OS user,
# from / so that the caller's working directory does not matter.
as_postgres() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && sudo -u postgres "$@")
    fi
}

pg_ctl() { as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" "$@"; }

# psql as postgres over the cluster's Unix socket (peer authentication).
psql_as_postgres() {
    as_postgres env PGOPTIONS="-c client_min_messages=warning" \
        "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" "$@"
}

cluster_running() { [[ -f $PGDATA/PG_VERSION ]] && pg_ctl status >/dev/null 2>&1; }

agent_pid() {
    local pid
    [[ -f $AGENT_PID ]] || return 1
    pid=$(<"$AGENT_PID")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q secumon-agent \
        && echo "$pid"
}

# Runs a long step quietly, its output in .secumon/build.log; shows the tail if it fails.
build_step() {
    local what=$1
    shift
    say "$what"
    if ! "$@" >>"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        die "$what failed (full log: $BUILD_LOG)"
    fi
}

stop_agent() {
    local pid
    if pid=$(agent_pid); then
        say "stopping the agent (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$AGENT_PID"
}

cmd_stop() {
    stop_agent
    if cluster_running; then
        say "stopping PostgreSQL ($PGDATA)"
        pg_ctl stop -m fast -w >/dev/null
    fi
    say "stopped; data kept in $STATE (remove that directory to start from scratch)"
}

cmd_status() {
    local pid
    if [[ ! -f $PGDATA/PG_VERSION ]]; then
        echo "cluster: not created (run ./scripts/quickstart.sh)"
    elif cluster_running; then
        echo "cluster: running ($PGDATA, port $PORT, socket $RUN)"
        psql_as_postgres -d "$DATABASE" -tA \
            -c "SELECT 'health:  ' || (secumon.health()->'data')::text" 2>/dev/null || true
    else
        echo "cluster: stopped ($PGDATA)"
    fi
    if pid=$(agent_pid); then
        echo "agent:   running (pid $pid, log $AGENT_LOG)"
    else
        echo "agent:   not running"
    fi
}

create_cluster() {
    say "creating a PostgreSQL 15 cluster in $PGDATA"
    install -d -o postgres -g postgres -m 700 "$PGDATA"
    as_postgres "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    echo "include 'secumon.conf'" | as_postgres tee -a "$PGDATA/postgresql.conf" >/dev/null
    write_cluster_config
    # Create the workers' database before the first start (single-user mode), so the preloaded
    # background workers find it at once instead of failing and waiting to be restarted.
    local output
    output=$(echo "CREATE DATABASE $DATABASE" | as_postgres "$PGBIN/postgres" --single -D "$PGDATA" \
        -c shared_preload_libraries= postgres 2>&1) || true
    if grep -q ERROR <<<"$output"; then
        printf '%s\n' "$output" >&2
        die "could not create database $DATABASE in single-user mode"
    fi
}

# Settings are rewritten on every run so SECUMON_PORT changes apply at the next start.
write_cluster_config() {
    as_postgres tee "$PGDATA/secumon.conf" >/dev/null <<EOF
# Written by scripts/quickstart.sh on every run; edit postgresql.conf for your own settings.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
password_encryption = 'scram-sha-256'
shared_preload_libraries = 'secumon'
secumon.database = '$DATABASE'
secumon.maintenance_interval = '10s'
secumon.alert_interval = '5s'
EOF
    as_postgres tee "$PGDATA/pg_hba.conf" >/dev/null <<EOF
# Written by scripts/quickstart.sh. Local socket: OS user = role (sudo -u postgres psql ...).
# TCP on loopback only, with a SCRAM password (the agent's login).
local all all                peer
host  all all 127.0.0.1/32   scram-sha-256
EOF
}

start_cluster() {
    local library
    library="$("$PG_CONFIG" --pkglibdir)/secumon.so"
    if cluster_running; then
        local running_port
        running_port=$(sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null || true)
        if [[ $library -nt $PGDATA/postmaster.pid || $running_port != "$PORT" ]]; then
            say "restarting PostgreSQL (new extension library or port)"
            pg_ctl restart -m fast -w -t 60 -l "$PG_LOG" >/dev/null \
                || { tail -n 20 "$PG_LOG" >&2; die "PostgreSQL did not restart (log: $PG_LOG)"; }
        else
            say "PostgreSQL already running"
        fi
        return
    fi
    say "starting PostgreSQL on 127.0.0.1:$PORT (log: $PG_LOG)"
    if ! pg_ctl start -w -t 60 -l "$PG_LOG" >/dev/null; then
        tail -n 20 "$PG_LOG" >&2
        die "PostgreSQL did not start (port $PORT taken? set SECUMON_PORT; log: $PG_LOG)"
    fi
}

setup_database() {
    if [[ -z $(psql_as_postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'") ]]; then
        say "creating database $DATABASE"
        psql_as_postgres -d postgres -c "CREATE DATABASE $DATABASE"
    fi
    if [[ -n $(psql_as_postgres -d "$DATABASE" -tAc "SELECT 1 FROM pg_extension WHERE extname = 'secumon'") ]]; then
        say "updating extension secumon"
        psql_as_postgres -d "$DATABASE" -c "ALTER EXTENSION secumon UPDATE"
    else
        say "creating extension secumon"
        psql_as_postgres -d "$DATABASE" -c "CREATE EXTENSION IF NOT EXISTS secumon"
    fi
}

random_password() {
    openssl rand -hex 24 2>/dev/null || od -An -tx1 -N24 /dev/urandom | tr -d ' \n'
}

# Creates the agent's login role once, with a fresh random password that is written only into
# agent.toml. Prints "new" when agent.toml changed (a running agent must be restarted).
setup_agent_role() {
    local password="" role_exists
    role_exists=$(psql_as_postgres -d "$DATABASE" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$AGENT_ROLE'")
    if [[ -f $AGENT_CONF ]]; then
        password=$(sed -n 's/^database = ".*password=\([0-9a-f]*\).*"$/\1/p' "$AGENT_CONF" | head -n 1)
    fi
    local changed=""
    if [[ -z $role_exists || -z $password ]]; then
        password=$(random_password)
        [[ ${#password} -ge 32 ]] || die "could not generate a random password"
        # The password goes over stdin, never on a command line.
        if [[ -z $role_exists ]]; then
            psql_as_postgres -d "$DATABASE" >/dev/null <<EOF
CREATE ROLE $AGENT_ROLE LOGIN PASSWORD '$password' IN ROLE secumon_agent;
EOF
        else
            psql_as_postgres -d "$DATABASE" >/dev/null <<EOF
ALTER ROLE $AGENT_ROLE LOGIN PASSWORD '$password';
GRANT secumon_agent TO $AGENT_ROLE;
EOF
        fi
        changed=new
    fi
    local tmp
    tmp=$(umask 077 && mktemp "$STATE/agent.toml.XXXXXX")
    cat >"$tmp" <<EOF
# SecuMon agent config written by scripts/quickstart.sh. It holds the agent's password: keep it
# mode 600. Delete this file and re-run quickstart to get a new password.
database = "host=127.0.0.1 port=$PORT dbname=$DATABASE user=$AGENT_ROLE password=$password"
spool_dir = "$STATE/spool"
interval = "10s"

# Beyond the host: a probe of this cluster's port and a custom series from a command
# (docs/agent-inputs.md).
[[probe]]
name = "quickstart-postgres"
tcp = "127.0.0.1:$PORT"

[[exec]]
name = "spool"
command = ['/bin/sh', '-c', 'printf "quickstart_spool_files{dir=\"spool\"} %s\n" "\$(ls -A $STATE/spool | wc -l)"']
EOF
    chmod 600 "$tmp"
    if [[ -f $AGENT_CONF ]] && cmp -s "$tmp" "$AGENT_CONF"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$AGENT_CONF"
        changed=new
    fi
    echo "$changed"
}

start_agent() {
    local pid
    if pid=$(agent_pid); then
        say "agent already running (pid $pid, log $AGENT_LOG)"
        return
    fi
    say "starting secumon-agent (log: $AGENT_LOG)"
    mkdir -p "$STATE/spool"
    nohup "$AGENT_BIN" --config "$AGENT_CONF" >>"$AGENT_LOG" 2>&1 </dev/null &
    echo $! >"$AGENT_PID"
    sleep 1
    if ! agent_pid >/dev/null; then
        tail -n 20 "$AGENT_LOG" >&2
        rm -f "$AGENT_PID"
        die "the agent exited at once (log: $AGENT_LOG)"
    fi
}

wait_for_data() {
    say "waiting for the first report"
    for _ in $(seq 1 30); do
        if [[ $(psql_as_postgres -d "$DATABASE" -tAc \
                "SELECT count(DISTINCT metric_type) = 2 FROM secumon.metrics
                  WHERE time > now() - interval '10 minutes' AND metric_type IN ('cpu', 'probe')") == t ]]; then
            return 0
        fi
        sleep 1
    done
    tail -n 20 "$AGENT_LOG" >&2
    die "no data arrived within 30 s (agent log: $AGENT_LOG)"
}

show() {
    local title=$1
    shift
    printf '\n--- %s\n' "$title"
    psql_as_postgres -d "$DATABASE" -P pager=off "$@"
}

show_data() {
    show "agents" -c "SELECT agent_id, hostname, last_seen FROM secumon.agents ORDER BY agent_id"
    show "latest cpu, memory and system values" -c \
        "SELECT metric_type, metric_name, round(value::numeric, 2) AS value FROM secumon.metrics
          WHERE time = (SELECT max(time) FROM secumon.metrics) ORDER BY 1, 2"
    show "custom and probe series (agent inputs), newest value of each" -c \
        "SELECT DISTINCT ON (metric_type, metric_name, labels) metric_type, metric_name, labels::text, value
           FROM secumon.metrics WHERE metric_type IN ('custom', 'probe') AND time > now() - interval '10 minutes'
          ORDER BY metric_type, metric_name, labels, time DESC"
    show "disks" -c \
        "SELECT agent_id, device, mountpoint, fs_type, round(usage_percent::numeric, 1) AS usage_percent,
                pg_size_pretty(used_bytes::bigint) AS used, pg_size_pretty(total_bytes::bigint) AS size
           FROM secumon.disk_metrics WHERE time = (SELECT max(time) FROM secumon.disk_metrics)
          ORDER BY agent_id, mountpoint"
    show "jobs" -c \
        "SELECT job_name, schedule_interval, enabled, to_char(last_run, 'HH24:MI:SS') AS last_run,
                to_char(last_success, 'HH24:MI:SS') AS last_success, left(last_error, 60) AS last_error,
                to_char(next_run, 'HH24:MI:SS') AS next_run, runs, failures
           FROM secumon.jobs ORDER BY job_name"
    show "health" -tA -c "SELECT jsonb_pretty(secumon.health())"
    show_alerts
}

# A rule every reporting host breaches, so the alert engine has something to show at once.
DEMO_RULE="Quickstart: host is reporting"
show_alerts() {
    psql_as_postgres -d "$DATABASE" -qc \
        "INSERT INTO secumon.alert_rules (name, description, metric_type, metric_name, condition, threshold, severity)
         VALUES ('$DEMO_RULE', 'Fires for every host that reports its uptime; delete it when you have seen it work',
                 'system', 'uptime_seconds', 'gt', 0, 'info')
         ON CONFLICT (tenant_id, name) DO NOTHING" >/dev/null
    say "waiting for the alert engine to fire the demo rule \"$DEMO_RULE\""
    for _ in $(seq 1 30); do
        [[ $(psql_as_postgres -d "$DATABASE" -tAc \
            "SELECT count(*) FROM secumon.active_alerts WHERE rule_name = '$DEMO_RULE' AND state = 'firing'") != 0 ]] && break
        sleep 1
    done
    show "alert rules" -c \
        "SELECT r.name, coalesce(r.metric_type || '.' || r.metric_name, r.kind) AS series, r.condition, r.threshold,
                r.duration, r.severity, r.enabled, s.last_error, s.pending, s.firing
           FROM secumon.alert_rules r JOIN secumon.alert_rule_status s ON s.id = r.id ORDER BY r.name"
    show "active alerts" -c \
        "SELECT rule_name, agent_id, series_key, state, severity, round(current_value::numeric, 2) AS value,
                to_char(triggered_at, 'HH24:MI:SS') AS fired, silenced
           FROM secumon.active_alerts ORDER BY severity, rule_name"
    show "latest alert events (what notifications are sent from)" -c \
        "SELECT id, event, created_at::time(0) AS at, payload->>'summary' AS summary
           FROM secumon.alert_events ORDER BY id DESC LIMIT 5"
}


cmd_start() {
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    "$REPO/scripts/bootstrap.sh"

    if [[ ${SECUMON_SKIP_BUILD:-} == 1 ]]; then
        say "SECUMON_SKIP_BUILD=1: using the installed extension and $AGENT_BIN as they are"
        [[ -f "$("$PG_CONFIG" --pkglibdir)/secumon.so" ]] || die "the extension is not installed; run without SECUMON_SKIP_BUILD"
        [[ -x $AGENT_BIN ]] || die "$AGENT_BIN is missing; run without SECUMON_SKIP_BUILD"
    else
        : >"$BUILD_LOG"
        build_step "building and installing the extension (release; log: $BUILD_LOG)" \
            "$REPO/scripts/install-extension.sh" --release "$PG_CONFIG"
        build_step "building secumon-agent (release)" \
            cargo build --release -p secumon-agent --manifest-path "$REPO/Cargo.toml"
    fi

    as_postgres test -x "$STATE" \
        || die "the postgres user cannot reach $STATE: make its parent directories traversable (chmod o+x)"
    local socket="$RUN/.s.PGSQL.$PORT"
    ((${#socket} <= 107)) || die "socket path $socket is too long for a Unix socket; clone the repo to a shorter path"
    install -d -o postgres -g postgres -m 755 "$RUN"
    [[ -f $PG_LOG ]] || install -o postgres -g postgres -m 640 /dev/null "$PG_LOG"
    [[ -f $PGDATA/PG_VERSION ]] || create_cluster
    write_cluster_config
    start_cluster
    setup_database

    local config_changed
    config_changed=$(setup_agent_role)
    if [[ $config_changed == new ]] && agent_pid >/dev/null; then
        say "the agent's config changed: restarting it"
        stop_agent
    fi
    start_agent
    wait_for_data
    show_data

    cat <<EOF

SecuMon is running.
  SQL shell:   sudo -u postgres psql -h $RUN -p $PORT $DATABASE
               (over TCP, roles log in with a password: psql "host=127.0.0.1 port=$PORT dbname=$DATABASE user=...")
  agent:       $AGENT_CONF (pid $(agent_pid || echo '?'), log $AGENT_LOG)
  server log:  $PG_LOG
  status:      ./scripts/quickstart.sh status
  stop:        ./scripts/quickstart.sh stop
EOF
}

case ${1:-start} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac
