#!/usr/bin/env bash
# Ingest benchmark: the agent's write path vs raw binary COPY of the same samples as narrow rows,
# then where a report's time goes (variants of the same reports and a profiled ingest pass).
# With TimescaleDB installed (../shared/timescaledb/install.sh beside this repository), the same
# reports also go through secumon.ingest into a database on SecuMon's timescaledb backend and,
# as narrow rows, into a TimescaleDB hypertable (docs/timescaledb.md).
# Usage: bench/ingest/run.sh [agents=10000] [reports_per_agent=3] [connections=4]
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
cargo build --release -q -p secumon-bench
TS_INSTALL=../shared/timescaledb/install.sh
preload="secumon,pg_stat_statements"
if [ -f "$TS_INSTALL" ] && bash "$TS_INSTALL" >/dev/null; then
    preload="timescaledb,$preload"
fi
# pg_stat_statements times the statements inside secumon.ingest() in the profiled pass only
# (the benchmark turns tracking on for that pass); elsewhere it tracks nothing. TimescaleDB's
# own jobs stay off: nothing but the benchmark runs.
bench_cluster_start "secumon.alert_interval = 86400" \
    "shared_preload_libraries = '$preload'" "pg_stat_statements.track = 'none'" \
    "timescaledb.max_background_workers = 0" "timescaledb.telemetry_level = off"
bench_psql -q -c "SELECT secumon.run_job('partition_upkeep')" >/dev/null
ts_conninfo=""
if [[ $preload == timescaledb,* ]]; then
    sudo -u postgres "$PG_BIN/createdb" -h "$BENCH_DIR" -p "$BENCH_PORT" bench_ts
    sudo -u postgres psql -h "$BENCH_DIR" -p "$BENCH_PORT" -X -q -v ON_ERROR_STOP=1 -d bench_ts \
        -c "SET client_min_messages = error" -c "CREATE EXTENSION timescaledb" -c "CREATE EXTENSION secumon"
    ts_conninfo="host=$BENCH_DIR port=$BENCH_PORT dbname=bench_ts user=postgres"
fi
echo "SecuMon ingest benchmark (PostgreSQL $(bench_psql -c 'SHOW server_version'), $(nproc) cores)"
SECUMON_BENCH_TIMESCALEDB=$ts_conninfo \
    target/release/secumon-bench-ingest "host=$BENCH_DIR port=$BENCH_PORT dbname=bench user=postgres" "$@"
