#!/usr/bin/env bash
# Alert-engine benchmark: cost of one evaluation cycle of SecuMon and of Prometheus 2.42 (Debian
# package `prometheus`, installed here if missing), measured in the same run on the same scenario:
# 10,000 hosts, 1,000 rules, (a) nothing in breach and (b) 1% of the hosts in breach on every
# metric, including the cycle in which the 50,000 alerts open.
#
# SecuMon: each agent reports every 10 s; a cycle evaluates the 30 s of reports that arrived since
# the previous one (secumon.alert_interval = 30 s). The history holds 10 minutes of reports of
# 10,000 agents. Rules: half for every agent, half for one agent; durations 0 / 3 min / 5 min;
# cpu.usage_percent, memory.usage_percent, disk.usage_percent, cpu.load_avg_5; thresholds 80-96.
# Besides 10,000 agents x 1,000 rules, 1,000 and 5,000 agents show how the cycle scales.
#
# Prometheus: a throwaway server (temporary data directory, free loopback port) scrapes one
# target, bench/alerts/exporter.py, which serves the last values the benchmark stored in SecuMon
# for all 10,000 hosts (one series per host and metric, label `host`; disk with `mountpoint`).
# The same 1,000 rules, generated from secumon.alert_rules, form one rule group: `expr` is the
# metric (with {host="..."} for a one-agent rule) compared with the same threshold, `for` the same
# duration. Scrape and evaluation every PROM_INTERVAL s (default 5). Its cycle is the group's own
# prometheus_rule_group_last_duration_seconds, read from its /metrics after each evaluation.
#
# Usage: bench/alerts/run.sh            (needs the extension installed: scripts/install-extension.sh)
#   CYCLES=4 (SecuMon cycles per configuration)  OPENINGS=3 (runs of the compared scenario b)
#   PROM_EVALS=2 (Prometheus evaluations per scenario)  PROM_INTERVAL=5
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh

CYCLES=${CYCLES:-4}
PROM_EVALS=${PROM_EVALS:-2}
PROM_INTERVAL=${PROM_INTERVAL:-5}
AGENTS_MAX=10000

if [ -z "${BENCH_SETUP_ONLY:-}" ] && ! command -v prometheus >/dev/null; then
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package starts its service where an init system runs; the benchmark runs its own.
    systemctl stop prometheus >/dev/null 2>&1 || true
fi

bench_cluster_start "secumon.alert_interval = 86400" "secumon.maintenance_interval = 3600"
work=$(mktemp -d /tmp/secumon-alerts-bench.XXXXXX)
pids=()
cleanup_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
    [ -n "${BENCH_KEEP:-}" ] || bench_cluster_stop
}
trap cleanup_all EXIT
echo "SecuMon alert engine benchmark (PostgreSQL $(bench_psql -c 'SHOW server_version'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"

bench_psql -q <<SQL
UPDATE secumon.alert_rules SET enabled = false;
INSERT INTO secumon.agents (agent_id, hostname, labels, owner_role, first_seen, last_seen)
SELECT 'host' || i, 'host' || i, jsonb_build_object('rack', 'r' || (i % 10)), 'postgres', now(), now()
  FROM generate_series(1, $AGENTS_MAX) i;
SELECT secumon.run_job('partition_upkeep');
CREATE TABLE bench_clock (t timestamptz NOT NULL);
INSERT INTO bench_clock VALUES (date_trunc('minute', now()) - interval '10 minutes');

-- One 30-second batch of reports (3 per agent) for agents 1..n; breach: every 100th agent is at 99
-- on every metric. Advances the bench clock.
CREATE FUNCTION bench_batch(n integer, breach boolean, reports integer DEFAULT 3) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE
    t0 timestamptz := (SELECT t FROM bench_clock);
    layout integer := secumon._layout_id(ARRAY['cpu.usage_percent', 'cpu.load_avg_5', 'memory.usage_percent']);
BEGIN
    INSERT INTO secumon.metric_samples (time, agent_key, layout_id, vals)
    SELECT t0 + k * interval '10 seconds', a.agent_key, layout,
           CASE WHEN breach AND a.agent_key % 100 = 0 THEN ARRAY[99, 99, 99]::float8[]
                ELSE ARRAY[20 + random() * 40, 0.5 + random() * 4, 30 + random() * 40] END
      FROM secumon.agents a, generate_series(1, reports) k
     WHERE a.agent_key <= n;
    INSERT INTO secumon.disk_metrics (time, agent_id, device, mountpoint, fs_type, total_bytes, used_bytes, free_bytes,
                                      usage_percent, inodes_total, inodes_used, inodes_usage_percent,
                                      read_bytes, write_bytes, read_ops, write_ops)
    SELECT t0 + k * interval '10 seconds', a.agent_id, '/dev/sda1', '/', 'ext4', 100, 50, 50,
           CASE WHEN breach AND a.agent_key % 100 = 0 THEN 99 ELSE 40 + random() * 30 END,
           1000, 10, 1, 0, 0, 0, 0
      FROM secumon.agents a, generate_series(1, reports) k
     WHERE a.agent_key <= n;
    UPDATE bench_clock SET t = t0 + reports * interval '10 seconds';
END
\$\$;

-- Rules 1..1000: odd ones for every agent, even ones for one agent among the first n.
CREATE FUNCTION bench_rules(rules integer, n integer) RETURNS void LANGUAGE sql AS \$\$
    DELETE FROM secumon.alert_rules WHERE name LIKE 'bench %';
    INSERT INTO secumon.alert_rules (name, metric_type, metric_name, agent_id, condition, threshold, duration, severity)
    SELECT 'bench ' || i,
           (ARRAY['cpu', 'memory', 'disk', 'cpu'])[1 + i % 4],
           (ARRAY['usage_percent', 'usage_percent', 'usage_percent', 'load_avg_5'])[1 + i % 4],
           CASE WHEN i % 2 = 1 THEN NULL ELSE 'host' || (1 + (i * 7919) % n) END,
           'gt', 80 + (i % 17),
           (ARRAY['0', '3 minutes', '5 minutes'])[1 + i % 3]::interval,
           'warning'
      FROM generate_series(1, rules) i;
\$\$;

-- 10 minutes of history for every agent.
SELECT bench_batch($AGENTS_MAX, false, 60);
SELECT secumon._evaluate_alerts();
SQL
# BENCH_EXTRA_SQL=file: SQL run once the scenario is loaded, e.g. other versions of the engine's
# functions (CREATE OR REPLACE) to compare them on the same machine.
[ -z "${BENCH_EXTRA_SQL:-}" ] || bench_psql -q < "$BENCH_EXTRA_SQL"
# The steady state: autovacuum has summarised the BRIN ranges of what was loaded.
bench_psql -q -c "VACUUM ANALYZE"

echo "history: $(bench_psql -c "SELECT count(*) FROM secumon.metric_samples") reports + $(bench_psql -c "SELECT count(*) FROM secumon.disk_metrics") disk rows for $AGENTS_MAX agents"
[ -z "${BENCH_SETUP_ONLY:-}" ] || exit 0

# One configuration in one session, as the alert worker runs: a warm-up evaluation (it compiles
# the functions and fills the caches, as the long-lived worker has), then CYCLES cycles of
# "30 s of reports arrive, one evaluation". Prints "ms active_alerts" per cycle.
run_config() {  # agents rules breach
    {
        echo "TRUNCATE secumon.alerts, secumon.alert_events; SELECT bench_rules($2, $1);"
        echo "UPDATE secumon._alert_engine_state SET watermark = now();"
        echo "SELECT secumon._evaluate_alerts(); SELECT secumon._summarize_ingest_ranges();"
        for _ in $(seq 1 "$CYCLES"); do
            echo "SELECT bench_batch($1, $3);"
            echo "SELECT secumon._evaluate_alerts();"
            # As the worker does: the index-range summary in a transaction of its own, timed
            # as part of the cycle.
            echo "SELECT clock_timestamp() AS summary_start \\gset"
            echo "SELECT secumon._summarize_ingest_ranges();"
            echo "SELECT 'cycle', round((last_cycle_ms + 1000 * extract(epoch FROM clock_timestamp() - :'summary_start'::timestamptz))::numeric, 1), (SELECT count(*) FROM secumon.alerts WHERE state IN ('pending', 'firing')) FROM secumon._alert_engine_state;"
        done
    } | bench_psql -q -F ' ' | awk '$1 == "cycle" {print $2, $3}'
}

# The last values stored for every host (the last report of the last batch), in the Prometheus
# text format the exporter serves.
export_values() {  # file
    bench_psql -c "COPY (
        SELECT format('%s{host=\"%s\"} %s', replace(u.series, '.', '_'), a.agent_id, s.vals[u.idx])
          FROM secumon.metric_samples s
          JOIN secumon.agents a ON a.agent_key = s.agent_key
          JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
         CROSS JOIN LATERAL unnest(l.series) WITH ORDINALITY AS u(series, idx)
         WHERE s.time = (SELECT t FROM bench_clock) AND s.vals[u.idx] IS NOT NULL
        UNION ALL
        SELECT format('disk_usage_percent{host=\"%s\",mountpoint=\"%s\"} %s', d.agent_id, d.mountpoint, d.usage_percent)
          FROM secumon.disk_metrics d WHERE d.time = (SELECT t FROM bench_clock)) TO STDOUT" > "$1"
}

# The benchmark's rules in SecuMon, as one Prometheus rule group.
export_rules() {  # file
    {
        printf 'groups:\n  - name: bench\n    rules:\n'
        bench_psql -c "SELECT format(E'      - alert: %s\n        expr: %s_%s%s %s %s\n        for: %ss\n        labels: {severity: %s}',
                                     replace(name, ' ', '_'), metric_type, metric_name,
                                     CASE WHEN agent_id IS NOT NULL THEN format('{host=\"%s\"}', agent_id) ELSE '' END,
                                     CASE condition WHEN 'gt' THEN '>' WHEN 'gte' THEN '>=' WHEN 'lt' THEN '<'
                                                    WHEN 'lte' THEN '<=' ELSE '==' END,
                                     threshold, extract(epoch FROM duration)::bigint, severity)
                         FROM secumon.alert_rules WHERE name LIKE 'bench %' AND enabled ORDER BY created_at, name"
    } > "$1"
}

declare -A RESULT
printf '\nSecuMon, one evaluation cycle (%s cycles of 30 s of reports per configuration)\n' "$CYCLES"
printf '%-7s %-6s %-26s %14s %14s %10s\n' agents rules scenario "first cycle" "later cycles" "alerts"
# 1,000 and 5,000 agents first (linearity), then the compared configuration, whose rules and
# last stored values Prometheus gets. Its scenario b runs OPENINGS times (default 3): the cycle
# that opens the alerts happens once per run, and on a shared machine one figure is noise; the
# median is compared.
OPENINGS=${OPENINGS:-3}
openings=()
b_later_all=()
configs=("1000 1000 b" "5000 1000 b" "10000 1000 a")
for _ in $(seq 1 "$OPENINGS"); do configs+=("10000 1000 b"); done
for config in "${configs[@]}"; do
    read -r n rules scenario <<<"$config"
    breach=false; [ "$scenario" = b ] && breach=true
    first=""; later_sum=0; later_n=0; active=0
    while read -r ms count; do
        active=$count
        if [ -z "$first" ]; then first=$ms; else later_sum=$(echo "$later_sum + $ms" | bc -l); later_n=$((later_n + 1)); fi
    done < <(run_config "$n" "$rules" "$breach")
    later=$(echo "scale=1; $later_sum / $later_n" | bc -l)
    label="a: nothing in breach"; [ "$scenario" = b ] && label="b: 1% of agents in breach"
    printf '%-7s %-6s %-26s %11s ms %11s ms %10s\n' "$n" "$rules" "$label" "$first" "$later" "$active"
    RESULT["$n/$rules/$scenario/first"]=$first
    RESULT["$n/$rules/$scenario/later"]=$later
    if [ "$n/$scenario" = "$AGENTS_MAX/b" ]; then openings+=("$first"); b_later_all+=("$later"); fi
    if [ "$n" = "$AGENTS_MAX" ]; then export_values "$work/values-$scenario.prom"; fi
done
export_rules "$work/rules.yml"

# ---- Prometheus: the same hosts, values and rules ----------------------------------------------
exporter_port=$(bench_free_port)
prom_port=$(bench_free_port)
cp "$work/values-a.prom" "$work/metrics.prom"
python3 bench/alerts/exporter.py "$exporter_port" "$work/metrics.prom" &
pids+=($!)
printf '%s\n' "global:" "  scrape_interval: ${PROM_INTERVAL}s" "  scrape_timeout: ${PROM_INTERVAL}s" \
    "  evaluation_interval: ${PROM_INTERVAL}s" "rule_files: ['$work/rules.yml']" "scrape_configs:" \
    "  - job_name: bench" "    static_configs: [{targets: ['127.0.0.1:$exporter_port']}]" > "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus-data" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom_version=$(prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([0-9.]*\).*/\1/p')

prom_fail() {
    echo "$1; the Prometheus log:" >&2
    cat "$work/prometheus.log" >&2
    exit 1
}
# Waits for the rule group's next evaluation; sets eval_ms and eval_samples (the series it produced).
last_eval=""
prom_next_eval() {
    local deadline=$((SECONDS + 10 * PROM_INTERVAL + 30)) stats
    while ((SECONDS < deadline)); do
        stats=$(curl -sf "http://127.0.0.1:$prom_port/metrics" | awk '
            /^prometheus_rule_group_last_evaluation_timestamp_seconds\{/ {ts = $2}
            /^prometheus_rule_group_last_duration_seconds\{/ {d = $2}
            /^prometheus_rule_group_last_evaluation_samples\{/ {n = $2}
            END {if (ts != "" && ts + 0 > 0) printf "%s %.1f %d\n", ts, d * 1000, n}') || true
        if [ -n "$stats" ] && [ "${stats%% *}" != "$last_eval" ]; then
            read -r last_eval eval_ms eval_samples <<<"$stats"
            return 0
        fi
        sleep 0.2
    done
    prom_fail "Prometheus evaluated its rules no more within $((10 * PROM_INTERVAL + 30)) s"
}
prom_head_series() {
    curl -sf "http://127.0.0.1:$prom_port/metrics" | awk '$1 == "prometheus_tsdb_head_series" {printf "%d\n", $2}'
}
prom_active_alerts() {
    curl -sfG "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode 'query=count(ALERTS) or vector(0)' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])'
}
mean() { echo "scale=1; ($(IFS=+; echo "$*")) / $#" | bc -l; }

series=$(wc -l < "$work/values-a.prom")
echo
echo "Prometheus $prom_version: one target serving the $series series of the $AGENTS_MAX hosts (label host), one group of the same $(grep -c 'alert:' "$work/rules.yml") rules, scrape and evaluation every ${PROM_INTERVAL} s"
deadline=$((SECONDS + 60))
until [ "$(prom_head_series || echo 0)" -ge "$series" ] 2>/dev/null; do
    ((SECONDS < deadline)) || prom_fail "Prometheus did not ingest the first scrape within 60 s"
    sleep 0.5
done
prom_next_eval  # possibly under way while the first scrape landed: not counted
a_ms=()
for _ in $(seq 1 "$PROM_EVALS"); do prom_next_eval; a_ms+=("$eval_ms"); done
printf '  a: nothing in breach:      cycles %s ms, %s alerts\n' "${a_ms[*]}" "$(prom_active_alerts)"

# Scenario b: the exporter serves the values of the breach batch from its next scrape on; the
# first evaluation that produces alert series is the one that opens them.
cp "$work/values-b.prom" "$work/metrics.prom.new"
mv -f "$work/metrics.prom.new" "$work/metrics.prom"
eval_samples=0
while [ "$eval_samples" -eq 0 ]; do prom_next_eval; done
prom_b_first=$eval_ms
b_ms=()
for _ in $(seq 1 "$PROM_EVALS"); do prom_next_eval; b_ms+=("$eval_ms"); done
printf '  b: 1%% of hosts in breach: opening cycle %s ms, later cycles %s ms, %s alerts\n' \
    "$prom_b_first" "${b_ms[*]}" "$(prom_active_alerts)"
prom_a=$(mean "${a_ms[@]}")
prom_b_later=$(mean "${b_ms[@]}")

a=${RESULT["10000/1000/a/later"]}
b_first=$(printf '%s\n' "${openings[@]}" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
b_later=$(mean "${b_later_all[@]}")
ratio() { echo "scale=3; $1 / $2" | bc -l | sed 's/^\./0./'; }
echo
echo "1,000 rules x 10,000 hosts, one evaluation cycle, both measured in this run (load average now $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '  %-46s %12s %18s %7s   %s\n' "" SecuMon "Prometheus $prom_version" "ratio" "target"
printf '  %-46s %9s ms %15s ms %7s   %s\n' "(a) nothing in breach" "$a" "$prom_a" "$(ratio "$a" "$prom_a")" "-"
printf '  %-46s %9s ms %15s ms %7s   %s\n' "(b) 1% in breach, the cycle opening the alerts" "$b_first" "$prom_b_first" \
    "$(ratio "$b_first" "$prom_b_first")" "< 1,000 ms and ratio <= 0.1"
[ "$OPENINGS" -le 1 ] || printf '  %-46s %s\n' "" "(SecuMon: median of ${openings[*]} ms)"
printf '  %-46s %9s ms %15s ms %7s   %s\n' "(b) 1% in breach, later cycles" "$b_later" "$prom_b_later" \
    "$(ratio "$b_later" "$prom_b_later")" "< 500 ms"
echo "  (ratio: SecuMon / Prometheus. SecuMon's cycle includes writing the alerts, their events and the"
echo "  notification outbox; Prometheus's is its rule group's evaluation, which keeps alerts in memory.)"
echo "  linearity (SecuMon, b, later cycles, 1,000 rules): 1k ${RESULT["1000/1000/b/later"]} ms, 5k ${RESULT["5000/1000/b/later"]} ms, 10k ${RESULT["10000/1000/b/later"]} ms"
