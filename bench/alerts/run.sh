#!/usr/bin/env bash
# Alert-engine benchmark: cost of one evaluation cycle for 1k/5k/10k agents and 100/1,000 rules,
# (a) with nothing in breach and (b) with 1% of the agents in breach on every metric.
#
# Each agent reports every 10 s; a cycle evaluates the 30 s of reports that arrived since the
# previous one (secumon.alert_interval = 30 s). The history holds 10 minutes of reports of
# 10,000 agents. Rules: half for every agent, half for one agent; durations 0 / 3 min / 5 min;
# cpu.usage_percent, memory.usage_percent, disk.usage_percent, cpu.load_avg_5; thresholds 80-96.
#
# Usage: bench/alerts/run.sh            (needs the extension installed: scripts/test.sh does it)
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh

CYCLES=${CYCLES:-4}
AGENTS_MAX=10000

bench_cluster_start "secumon.alert_interval = 86400" "secumon.maintenance_interval = 3600"
echo "SecuMon alert engine benchmark (PostgreSQL $(bench_psql -c 'SHOW server_version'), $(nproc) cores)"

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

declare -A RESULT
printf '\n%-7s %-6s %-22s %14s %14s %10s\n' agents rules scenario "first cycle" "later cycles" "alerts"
for n in 1000 5000 10000; do
    for rules in 100 1000; do
        for scenario in a b; do
            breach=false; [ "$scenario" = b ] && breach=true
            first=""; later_sum=0; later_n=0; active=0
            while read -r ms count; do
                active=$count
                if [ -z "$first" ]; then first=$ms; else later_sum=$(echo "$later_sum + $ms" | bc -l); later_n=$((later_n + 1)); fi
            done < <(run_config "$n" "$rules" "$breach")
            later=$(echo "scale=1; $later_sum / $later_n" | bc -l)
            label="a: nothing in breach"; [ "$scenario" = b ] && label="b: 1% agents in breach"
            printf '%-7s %-6s %-22s %11s ms %11s ms %10s\n' "$n" "$rules" "$label" "$first" "$later" "$active"
            RESULT["$n/$rules/$scenario/first"]=$first
            RESULT["$n/$rules/$scenario/later"]=$later
        done
    done
done

a=${RESULT["10000/1000/a/later"]}
b_first=${RESULT["10000/1000/b/first"]}
b_later=${RESULT["10000/1000/b/later"]}
b_worst=$(echo "if ($b_first > $b_later) $b_first else $b_later" | bc -l)
echo
echo "1,000 rules x 10,000 agents, one cycle (reference: Prometheus 2.42 on this machine, same rules and hosts):"
printf '  (a) nothing in breach:   %8s ms   Prometheus 55 ms        ratio %s   target < 100 ms\n' "$a" "$(echo "scale=2; $a / 55" | bc -l)"
printf '  (b) 1%% agents in breach: %8s ms   Prometheus 14,000-25,000 ms  ratio %s-%s   target < 1,000 ms (worst of creation %s ms / later %s ms)\n' \
    "$b_worst" "$(echo "scale=3; $b_worst / 25000" | bc -l)" "$(echo "scale=3; $b_worst / 14000" | bc -l)" "$b_first" "$b_later"
printf '  seed claim: < 100 ms per rule, i.e. up to %s ms for 1,000 rules; measured %s ms per rule\n' 100000 \
    "$(echo "scale=4; $b_worst / 1000" | bc -l)"
echo "  linearity (b, later cycles, 1,000 rules): 1k ${RESULT["1000/1000/b/later"]} ms, 5k ${RESULT["5000/1000/b/later"]} ms, 10k ${RESULT["10000/1000/b/later"]} ms"
