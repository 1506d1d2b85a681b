#!/usr/bin/env bash
# Ingest benchmark: the agent's write path vs raw binary COPY of the same samples as narrow rows,
# then where a report's time goes (variants of the same reports and a profiled ingest pass).
# Usage: bench/ingest/run.sh [agents=10000] [reports_per_agent=3] [connections=4]
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
cargo build --release -q -p secumon-bench
# pg_stat_statements times the statements inside secumon.ingest() in the profiled pass only
# (the benchmark turns tracking on for that pass); elsewhere it tracks nothing.
bench_cluster_start "secumon.alert_interval = 86400" \
    "shared_preload_libraries = 'secumon,pg_stat_statements'" "pg_stat_statements.track = 'none'"
bench_psql -q -c "SELECT secumon.run_job('partition_upkeep')" >/dev/null
echo "SecuMon ingest benchmark (PostgreSQL $(bench_psql -c 'SHOW server_version'), $(nproc) cores)"
target/release/secumon-bench-ingest "host=$BENCH_DIR port=$BENCH_PORT dbname=bench user=postgres" "$@"
