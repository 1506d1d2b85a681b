#!/usr/bin/env bash
# Runs the isolation specs of tests/isolation (pg_isolation_regress) against a throw-away
# PostgreSQL 15 cluster with the installed secumon extension. Usage:
#   scripts/isolation.sh [spec ...]      # default: every tests/isolation/specs/*.spec
# The cluster preloads secumon like the end-to-end harness (tests/src/cluster.rs), but its
# background workers serve the database "postgres", which has no secumon extension: they wait
# there quietly, so no alert cycle, maintenance job or notifier claim runs beside the specs.
# Exits non-zero and prints regression.diffs when a spec's output differs from its expected one.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
PGBIN=${SECUMON_PG_BINDIR:-/usr/lib/postgresql/15/bin}
[[ -x $PGBIN/pg_ctl ]] || PGBIN=$("$PG_CONFIG" --bindir)
REGRESS=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress
DATABASE=secumon_isolation
INPUT=$REPO/tests/isolation

if (($#)); then
    specs=("$@")
else
    specs=()
    for f in "$INPUT"/specs/*.spec; do
        f=${f##*/}
        specs+=("${f%.spec}")
    done
fi

as_postgres() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

WORK=$(mktemp -d /tmp/secumon-isolation.XXXXXX)
DATA=$WORK/data
started=false
cleanup() {
    if $started; then
        as_postgres "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
[[ $EUID -eq 0 ]] && chown postgres:postgres "$WORK"

if ! as_postgres "$PGBIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C --no-sync --auth-local=trust \
        >"$WORK/initdb.log" 2>&1; then
    cat "$WORK/initdb.log" >&2
    exit 1
fi
cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = 5432
timezone = 'UTC'
lc_messages = 'C'
fsync = off
full_page_writes = off
max_connections = 40
shared_preload_libraries = 'secumon'
secumon.database = 'postgres'
CONF
if ! as_postgres "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/postgresql.log" -w -t 60 start >/dev/null; then
    cat "$WORK/postgresql.log" >&2
    exit 1
fi
started=true

psql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p 5432 -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE $DATABASE" >/dev/null
# (client_min_messages=error: CREATE EXTENSION warns that the workers serve another database.)
PGOPTIONS="-c client_min_messages=error" psql -d "$DATABASE" -c "CREATE EXTENSION secumon" >/dev/null

status=0
"$REGRESS" --use-existing --host="$WORK" --port=5432 --user=postgres --dbname="$DATABASE" \
    --bindir="$PGBIN" --inputdir="$INPUT" --outputdir="$WORK/out" "${specs[@]}" >"$WORK/regress.log" 2>&1 || status=$?
if ((status != 0)); then
    # (The summary's file names point into the temporary directory, removed on exit.)
    grep -vE 'regression\.(diffs|out)|^The differences' "$WORK/regress.log" >&2 || true
    if [[ -f $WORK/out/regression.diffs ]]; then cat "$WORK/out/regression.diffs" >&2; fi
    exit "$status"
fi
grep -E '^test |tests passed' "$WORK/regress.log" || true
