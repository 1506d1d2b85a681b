#!/usr/bin/env bash
# Shared by the benchmarks: a throwaway PostgreSQL 15 cluster with the installed secumon
# extension preloaded, on a free loopback port, removed on exit.
#   source bench/lib.sh; bench_cluster_start [extra postgresql.conf lines...]; bench_psql -c '...'
# SECUMON_BENCH_BACKEND=timescaledb puts the database on SecuMon's timescaledb backend
# (TimescaleDB preloaded and created first; docs/timescaledb.md), e.g.
#   SECUMON_BENCH_BACKEND=timescaledb bench/alerts/run.sh
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

bench_cluster_start() {
    BENCH_DIR=$(mktemp -d /tmp/secumon-bench.XXXXXX)
    chown postgres "$BENCH_DIR"
    BENCH_PORT=$(bench_free_port)
    sudo -u postgres "$PG_BIN/initdb" -D "$BENCH_DIR/data" -A trust -E UTF8 >/dev/null
    {
        echo "port = $BENCH_PORT"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$BENCH_DIR'"
        echo "shared_preload_libraries = 'secumon'"
        echo "secumon.database = 'bench'"
        echo "shared_buffers = '2GB'"
        echo "work_mem = '64MB'"
        echo "maintenance_work_mem = '512MB'"
        echo "max_wal_size = '8GB'"
        echo "synchronous_commit = off"
        echo "jit = off"
        if [ "${SECUMON_BENCH_BACKEND:-}" = timescaledb ]; then
            echo "shared_preload_libraries = 'timescaledb,secumon'"
            echo "timescaledb.telemetry_level = off"
            echo "timescaledb.max_background_workers = 0"
        fi
        for line in "$@"; do echo "$line"; done
    } >> "$BENCH_DIR/data/postgresql.conf"
    sudo -u postgres "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/log" -w start >/dev/null
    [ -n "${BENCH_KEEP:-}" ] || trap bench_cluster_stop EXIT
    # A kept cluster says where it is (concurrent benchmarks must not share a well-known file).
    [ -z "${BENCH_KEEP:-}" ] || echo "kept cluster: $BENCH_DIR port $BENCH_PORT" >&2
    sudo -u postgres "$PG_BIN/createdb" -h "$BENCH_DIR" -p "$BENCH_PORT" bench
    if [ "${SECUMON_BENCH_BACKEND:-}" = timescaledb ]; then
        bench_psql -q -c "CREATE EXTENSION timescaledb" >/dev/null
    fi
    bench_psql -q -c "CREATE EXTENSION secumon"
}

bench_cluster_stop() {
    if [ -n "${BENCH_DIR:-}" ] && [ -d "$BENCH_DIR" ]; then
        sudo -u postgres "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$BENCH_DIR"
    fi
}

bench_psql() {
    sudo -u postgres psql -h "$BENCH_DIR" -p "$BENCH_PORT" -X -v ON_ERROR_STOP=1 -At bench "$@"
}
