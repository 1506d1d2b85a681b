#!/usr/bin/env bash
# Agent footprint benchmark: the real secumon-agent at a 10 s interval, writing to a real
# cluster, for BENCH_SECONDS (default 180), measured side by side with collectd 5.12 (cpu, memory,
# df, disk, interface, load, processes plugins at 10 s) and node_exporter 1.5 (scraped every
# 10 s) over the same period. Prints resident memory (RSS and PSS) and the share of one core.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
SECONDS_TO_RUN=${BENCH_SECONDS:-180}

need=()
command -v collectd >/dev/null || need+=(collectd-core)
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
if ((${#need[@]})); then
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The packages start their services where an init system runs; the benchmark runs its own.
    systemctl stop prometheus-node-exporter collectd >/dev/null 2>&1 || true
fi
cargo build --release -q -p secumon-agent
bench_cluster_start "secumon.alert_interval = 30"
bench_psql -q -c "CREATE ROLE bench_agent LOGIN IN ROLE secumon_agent" -c "SELECT secumon.run_job('partition_upkeep')" >/dev/null

work=$(mktemp -d /tmp/secumon-agent-bench.XXXXXX)
pids=()
cleanup_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
    bench_cluster_stop
}
trap cleanup_all EXIT

cat > "$work/agent.toml" <<EOF
agent_id = "bench-agent"
database = "host=$BENCH_DIR port=$BENCH_PORT dbname=bench user=bench_agent"
interval = "10s"
spool_dir = "$work/spool"
EOF
target/release/secumon-agent --config "$work/agent.toml" 2>"$work/agent.log" &
pids+=($!); agent_pid=$!

# The same agent with 10 probes and 2 scrapes of a small local exporter (100 series), as a
# team would add beside the host collectors (docs/agent-inputs.md).
mkdir -p "$work/exporter"
for i in $(seq 0 99); do
    printf 'app_queue_depth{queue="q%s"} %s\n' "$i" "$i"
done > "$work/exporter/metrics"
exporter_port=$(bench_free_port)
(cd "$work/exporter" && exec python3 -m http.server "$exporter_port" --bind 127.0.0.1) >/dev/null 2>&1 &
pids+=($!)
{
    cat "$work/agent.toml" | sed -e 's/^agent_id = .*/agent_id = "bench-agent-inputs"/' -e "s#^spool_dir = .*#spool_dir = \"$work/spool-inputs\"#"
    for n in 1 2; do
        printf '\n[[scrape]]\nname = "exporter-%s"\nurl = "http://127.0.0.1:%s/metrics"\n' "$n" "$exporter_port"
    done
    for n in 1 2 3 4 5 6; do
        printf '\n[[probe]]\nname = "web-%s"\nhttp = "http://127.0.0.1:%s/metrics"\nexpect_body = "app_queue_depth"\n' "$n" "$exporter_port"
    done
    for n in 1 2; do
        printf '\n[[probe]]\nname = "db-%s"\ntcp = "127.0.0.1:%s"\n' "$n" "$BENCH_PORT"
    done
    for n in 1 2; do
        printf '\n[[probe]]\nname = "ping-%s"\nicmp = "127.0.0.1"\n' "$n"
    done
} > "$work/agent-inputs.toml"
target/release/secumon-agent --config "$work/agent-inputs.toml" 2>"$work/agent-inputs.log" &
pids+=($!); inputs_pid=$!

cat > "$work/collectd.conf" <<EOF
Interval 10
BaseDir "$work/collectd"
PIDFile "$work/collectd.pid"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin df
LoadPlugin disk
LoadPlugin interface
LoadPlugin load
LoadPlugin processes
LoadPlugin csv
<Plugin csv>
  DataDir "$work/collectd-csv"
</Plugin>
EOF
mkdir -p "$work/collectd"
collectd -f -C "$work/collectd.conf" >/dev/null 2>&1 &
pids+=($!); collectd_pid=$!

ne_port=$(bench_free_port)
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" >/dev/null 2>&1 &
pids+=($!); ne_pid=$!
( while sleep 10; do curl -s "http://127.0.0.1:$ne_port/metrics" >/dev/null || true; done ) &
pids+=($!)

ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_of() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
pss_of() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

sleep 15   # past start-up: measure the steady state
declare -A t0
for p in $agent_pid $inputs_pid $collectd_pid $ne_pid; do t0[$p]=$(ticks_of "$p"); done
start=$(date +%s.%N)
echo "measuring for $SECONDS_TO_RUN s ..."
sleep "$SECONDS_TO_RUN"
elapsed=$(echo "$(date +%s.%N) - $start" | bc -l)
hz=$(getconf CLK_TCK)

reports=$(bench_psql -c "SELECT count(*) FROM secumon.metric_samples")
printf '\n%-26s %10s %10s %14s\n' process "RSS (MB)" "PSS (MB)" "CPU (% of core)"
declare -A cpu rss
for entry in "secumon-agent:$agent_pid" "  + 10 probes, 2 scrapes:$inputs_pid" "collectd 5.12:$collectd_pid" "node_exporter 1.5:$ne_pid"; do
    name=${entry%%:*}; p=${entry##*:}
    used=$(( $(ticks_of "$p") - t0[$p] ))
    cpu[$name]=$(echo "scale=4; 100 * $used / $hz / $elapsed" | bc -l)
    rss[$name]=$(echo "scale=2; $(rss_of "$p") / 1024" | bc -l)
    printf '%-26s %10s %10s %14s\n' "$name" "${rss[$name]}" "$(echo "scale=2; $(pss_of "$p") / 1024" | bc -l)" "${cpu[$name]}"
done
echo
echo "the two secumon-agents stored $reports reports in ${elapsed%.*} s (+15 s warm-up) at a 10 s interval."
bench_psql -c "SELECT 'inputs agent: ' || count(DISTINCT series) || ' custom and probe series stored, ' || count(*) FILTER (WHERE metric_type = 'probe' AND metric_name = 'up' AND value = 1) || ' probe.up = 1 samples' FROM (SELECT m.metric_type, m.metric_name, m.value, m.metric_type || m.metric_name || m.labels::text AS series FROM secumon.metrics m WHERE m.agent_id = 'bench-agent-inputs' AND m.metric_type IN ('custom', 'probe')) x"
printf 'ratios (secumon-agent / peer): RSS %s x collectd, %s x node_exporter; CPU %s x collectd, %s x node_exporter\n' \
    "$(echo "scale=2; ${rss[secumon-agent]} / ${rss[collectd 5.12]}" | bc -l)" \
    "$(echo "scale=2; ${rss[secumon-agent]} / ${rss[node_exporter 1.5]}" | bc -l)" \
    "$(echo "scale=2; ${cpu[secumon-agent]} / (${cpu[collectd 5.12]} + 0.0001)" | bc -l)" \
    "$(echo "scale=2; ${cpu[secumon-agent]} / (${cpu[node_exporter 1.5]} + 0.0001)" | bc -l)"
echo "targets: < 6 MB RSS and < 0.05% of a core (reference figures on this machine: collectd 3.4 MB / 0.017%, node_exporter 20 MB / 0.1%)"
