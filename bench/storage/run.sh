#!/usr/bin/env bash
# Storage benchmark: rollups vs raw rows, bytes per sample, rollup refresh cost, compression and
# retention job durations. Prints SecuMon's figures beside references.
#
# Data (defaults): AGENTS=100 hosts x DAYS=30 days x one report every 10 s, each report 10
# series (cpu usage/user/system with two decimals, load average, memory percent with one
# decimal, memory used bytes in whole pages, a constant, a context-switch counter, uptime,
# process count) = 25.9 M reports = 259 M samples, bulk-loaded into secumon.metric_samples
# in arrival order (time-major: all hosts' reports of one instant together), ingested_at =
# sample time + a few ms, as if sent on time. BIG_AGENTS=10000 more hosts send
# 5 minutes of reports for the refresh-cost figure.
#
# References, measured in the same run on one day of the same data: narrow rows (time, agent,
# type, name, value) in a plain table, and in a TimescaleDB 2.28.3 hypertable (installed by
# ../shared/timescaledb/install.sh when it is beside this repository; without it these lines say
# n/a): its heap and compressed bytes per sample (segmentby agent and series, orderby time
# DESC), the time to compress the day, and a full refresh of a 5-minute continuous aggregate of
# the day, checked against SecuMon's 5-minute rollups of the same day. Timescale's own jobs stay
# off (timescaledb.max_background_workers = 0): the benchmark runs each step itself.
#
# With TimescaleDB, the same reports are also copied into a second database on SecuMon's
# timescaledb backend (docs/timescaledb.md) and measured there the same way, printed side by
# side: history from raw rows, rollups and the secumon.metrics view (heap, then with older days
# compressed and analysed), bytes per sample, the compression job, re-materialising a day of
# 5-minute rollups (there a forced refresh of the continuous aggregate, checked byte for byte
# against the partitions backend's rollups of the day), retention.
#
# Usage: bench/storage/run.sh
# It builds a release package of the extension (cargo pgrx package; SKIP_PACKAGE=1 reuses
# target/release/secumon-pg15) and runs a private copy of the PostgreSQL installation with it,
# so neither a debug build nor someone installing another build meanwhile skews the figures.
# Smaller run: AGENTS=20 DAYS=10 bench/storage/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh

AGENTS=${AGENTS:-100}
DAYS=${DAYS:-30}
BIG_AGENTS=${BIG_AGENTS:-10000}
RUNS=${RUNS:-5}
if (( DAYS < 9 )); then
    echo "DAYS must be at least 9 (7 days stay uncompressed, compressed days and one to expire)" >&2
    exit 2
fi

# A private PostgreSQL 15 tree (it finds its lib and share directories relative to its binaries)
# holding this tree's release build of the extension.
TS_INSTALL=../shared/timescaledb/install.sh
TS=""
if [ -f "$TS_INSTALL" ] && bash "$TS_INSTALL" >/dev/null; then
    TS=1
fi
PKG=target/release/secumon-pg15
if [ -z "${SKIP_PACKAGE:-}" ]; then
    (cd secumon_pg && cargo pgrx package --pg-config /usr/bin/pg_config >/dev/null 2>&1)
fi
SNAP=$(mktemp -d /tmp/secumon-storage-pg.XXXXXX)
mkdir -p "$SNAP/usr/lib/postgresql" "$SNAP/usr/share/postgresql"
cp -a /usr/lib/postgresql/15 "$SNAP/usr/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$SNAP/usr/share/postgresql/"
cp "$PKG/usr/lib/postgresql/15/lib/secumon.so" "$SNAP/usr/lib/postgresql/15/lib/"
cp "$PKG"/usr/share/postgresql/15/extension/secumon* "$SNAP/usr/share/postgresql/15/extension/"
chmod -R a+rX "$SNAP"
PG_BIN="$SNAP/usr/lib/postgresql/15/bin"

ts_conf=()
[ -z "$TS" ] || ts_conf=("shared_preload_libraries = 'timescaledb,secumon'" "timescaledb.max_background_workers = 0"
                         "timescaledb.telemetry_level = off")
bench_cluster_start "secumon.maintenance_interval = 3600" "max_parallel_workers_per_gather = 0" "checkpoint_timeout = '30min'" \
    "${ts_conf[@]}"
[ -n "${BENCH_KEEP:-}" ] || trap 'bench_cluster_stop; rm -rf "$SNAP"' EXIT
started=$SECONDS
echo "SecuMon storage benchmark (PostgreSQL $(bench_psql -c 'SHOW server_version'), $(nproc) cores)"
echo "data: $AGENTS hosts x $DAYS days x 10 s x 10 series = $(( AGENTS * DAYS * 8640 * 10 / 1000000 )) M samples; refresh: $BIG_AGENTS hosts"

# Median wall time (ms) of running `query` `runs` times (after one warm-up run).
BENCH_MS_SQL=$(cat <<'SQL'
CREATE FUNCTION bench_ms(query text, runs integer) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t timestamptz; times float8[] := '{}'; n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (%s) x', query) INTO n;
    FOR i IN 1..runs LOOP
        t := clock_timestamp();
        EXECUTE format('SELECT count(*) FROM (%s) x', query) INTO n;
        times := times || extract(epoch FROM clock_timestamp() - t)::float8 * 1000;
    END LOOP;
    RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(times) x);
END
$$;
SQL
)
# The agents and the layout, the same ids in every database this benchmark fills.
agents_sql="INSERT INTO secumon.agents (agent_id, hostname, owner_role, first_seen, last_seen)
SELECT 'host' || i, 'host' || i, 'postgres', now(), now() FROM generate_series(1, $AGENTS) i;
DO \$\$ BEGIN
    PERFORM secumon._layout_id(ARRAY['cpu.usage_percent', 'cpu.user_percent', 'cpu.system_percent', 'cpu.load_avg_1',
                                     'memory.usage_percent', 'memory.used_bytes', 'memory.total_bytes',
                                     'cpu.context_switches', 'system.uptime_seconds', 'system.processes_total']);
END \$\$;"

bench_psql -q <<SQL
-- The worker stays out of the way: every job runs when the benchmark says so.
UPDATE secumon._jobs SET enabled = false;
$agents_sql
CREATE TABLE bench_setup AS
SELECT (SELECT layout_id FROM secumon.metric_layouts WHERE cardinality(series) = 10) AS layout,
       secumon._bucket('1 day', now()) - interval '$DAYS days' + interval '1 day' AS first_day,
       secumon._bucket('1 day', now()) + interval '1 day' AS end_time;

-- One day of reports of the agents whose key is in [k0, k1].
CREATE FUNCTION bench_day(day timestamptz, k0 integer, k1 integer) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE n bigint;
BEGIN
    PERFORM secumon._ensure_partition('metric_samples', secumon._utc_day(day));
    INSERT INTO secumon.metric_samples (time, agent_key, layout_id, vals, ingested_at)
    SELECT g.t, a.agent_key, s.layout, ARRAY[
               round((45 + 30 * sin(g.e / 5400 + a.k) + 8 * sin(g.e / 313 + 7 * a.k) + (random() - 0.5) * 3)::numeric, 2),
               round((30 + 20 * sin(g.e / 5400 + a.k) + (random() - 0.5) * 2)::numeric, 2),
               round((10 + 5 * sin(g.e / 4000 + a.k) + (random() - 0.5))::numeric, 2),
               round((1.2 + 0.8 * sin(g.e / 7200 + a.k) + random() * 0.05)::numeric, 2),
               round((55 + 10 * sin(g.e / 86400 + a.k) + random() * 0.2)::numeric, 1),
               4096 * (1153434 + floor(262144 * sin(g.e / 86400 + a.k)) + floor(random() * 64)),
               17179869184,
               1e9 * a.k + floor(g.e * (2000 + a.k)) + floor(random() * 500),
               floor(g.e) - 1700000000 + 1000 * a.k,
               180 + a.agent_key % 20 + floor(g.e / 600)::integer % 7
           ]::float8[],
           g.t + interval '1 millisecond' * (2 + random() * 20)
      FROM bench_setup s
     CROSS JOIN generate_series(day, least(day + interval '1 day', now()) - interval '10 seconds', interval '10 seconds') t0
     CROSS JOIN (SELECT agent_key, agent_key::float8 AS k FROM secumon.agents WHERE agent_key BETWEEN k0 AND k1) a
     CROSS JOIN LATERAL (SELECT t0 + interval '1 millisecond' * (97 * a.agent_key % 1000 + random() * 4) AS t,
                                extract(epoch FROM t0)::float8 AS e) g
     -- Reports arrive time-major, every host's report of one instant next to the others'.
     ORDER BY t0, a.agent_key;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
\$\$;

CREATE TABLE bench_result (what text PRIMARY KEY, value float8);
SQL
bench_psql -q -c "$BENCH_MS_SQL"

# ---- load: two sessions (one per core), day by day
t0=$SECONDS
half=$(( AGENTS / 2 ))
load() {
    bench_psql -q -c "SELECT sum(bench_day(d, $1, $2)) FROM bench_setup s, generate_series(s.first_day, now(), interval '1 day') d" >/dev/null
}
bench_psql -q -c "SELECT secumon._ensure_partition('metric_samples', secumon._utc_day(d)) FROM bench_setup s, generate_series(s.first_day, now(), interval '1 day') d" >/dev/null
load 1 "$half" & p1=$!
load $(( half + 1 )) "$AGENTS" & p2=$!
wait $p1 $p2
bench_psql -q -c "VACUUM ANALYZE secumon.metric_samples" >/dev/null
load_s=$(( SECONDS - t0 ))
reports=$(bench_psql -c "SELECT count(*) FROM secumon.metric_samples")
echo "loaded $reports reports ($(( reports * 10 / 1000000 )) M samples) in ${load_s} s"

q() { bench_psql -c "$1"; }
fmt() { printf '  %-58s %14s %16s %10s\n' "$@"; }

# ---- the same reports in a second database on SecuMon's timescaledb backend (docs/timescaledb.md)
bts() { sudo -u postgres psql -h "$BENCH_DIR" -p "$BENCH_PORT" -X -v ON_ERROR_STOP=1 -At bench_ts "$@"; }
if [ -n "$TS" ]; then
    t0=$SECONDS
    sudo -u postgres "$PG_BIN/createdb" -h "$BENCH_DIR" -p "$BENCH_PORT" bench_ts
    bts -q -c "CREATE EXTENSION timescaledb" -c "CREATE EXTENSION secumon" 2>&1 | grep -v -e "no SecuMon worker" -e "^DETAIL" -e "^HINT" || true
    bts -q -c "UPDATE secumon._jobs SET enabled = false" -c "$BENCH_MS_SQL"
    bts -q <<SQL
$agents_sql
CREATE TABLE bench_setup AS SELECT (SELECT layout_id FROM secumon.metric_layouts WHERE cardinality(series) = 10) AS layout;
SQL
    bench_psql -c "COPY (SELECT time, agent_key, layout_id, vals, ingested_at FROM secumon.metric_samples ORDER BY time, agent_key) TO STDOUT (FORMAT binary)" |
        bts -q -c "COPY secumon_partitions.metric_samples (time, agent_key, layout_id, vals, ingested_at) FROM STDIN (FORMAT binary)"
    bts -q -c "VACUUM ANALYZE secumon_partitions.metric_samples"
    echo "copied the reports into database bench_ts (timescaledb backend, $(bts -c "SELECT count(*) FROM secumon.partitions WHERE table_name = 'metric_samples'") chunks) in $(( SECONDS - t0 )) s"
fi

# ---- bytes per sample, uncompressed: our layout (one row per report) and narrow rows
day_part=$(q "SELECT partition_name FROM secumon.partitions WHERE table_name = 'metric_samples' AND NOT is_default AND range_start = (SELECT first_day + interval '1 day' FROM bench_setup)")
heap_bps=$(q "SELECT round(pg_total_relation_size('secumon_partitions.$day_part')::numeric / (SELECT sum(cardinality(vals)) FROM secumon_partitions.$day_part), 1)")
t0=$SECONDS
bench_psql -q <<SQL
CREATE TABLE bench_narrow (time timestamptz NOT NULL, agent_id text NOT NULL, metric_type text NOT NULL, metric_name text NOT NULL, value float8);
INSERT INTO bench_narrow SELECT m.time, m.agent_id, m.metric_type, m.metric_name, m.value FROM secumon.metrics m
 WHERE m.time >= (SELECT first_day + interval '1 day' FROM bench_setup) AND m.time < (SELECT first_day + interval '2 days' FROM bench_setup);
VACUUM ANALYZE bench_narrow;
INSERT INTO bench_result SELECT 'narrow_heap_bps', pg_total_relation_size('bench_narrow')::float8 / (SELECT count(*) FROM bench_narrow);
CREATE INDEX ON bench_narrow (agent_id, metric_type, metric_name, time);
INSERT INTO bench_result SELECT 'narrow_indexed_bps', pg_total_relation_size('bench_narrow')::float8 / (SELECT count(*) FROM bench_narrow);
SQL
narrow=$(q "SELECT round(value::numeric, 1) FROM bench_result WHERE what = 'narrow_heap_bps'")

# ---- TimescaleDB, same day, same narrow rows: hypertable, continuous aggregate, compression
ms_of() { ms_of_db bench "$1"; }
ms_of_db() {
    local t=$(date +%s%N)
    sudo -u postgres psql -h "$BENCH_DIR" -p "$BENCH_PORT" -X -v ON_ERROR_STOP=1 -qAt -d "$1" -c "$2" >/dev/null
    echo $(( ($(date +%s%N) - t) / 1000000 ))
}
ts_heap="n/a"; ts_comp="n/a"; ts_refresh_ms="n/a"; ts_compress_ms="n/a"; ts_same="n/a"
if [ -n "$TS" ]; then
    bench_psql -q <<SQL
CREATE EXTENSION timescaledb;
CREATE TABLE bench_ts (time timestamptz NOT NULL, agent_id text NOT NULL, metric_type text NOT NULL, metric_name text NOT NULL, value float8);
SELECT create_hypertable('bench_ts', by_range('time', interval '1 day'), create_default_indexes => false);
INSERT INTO bench_ts SELECT * FROM bench_narrow ORDER BY time;
CREATE INDEX ON bench_ts (agent_id, metric_type, metric_name, time);
VACUUM ANALYZE bench_ts;
CREATE MATERIALIZED VIEW bench_ts_5min WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket('5 minutes', time, timestamptz '2000-01-01 00:00:00+00') AS bucket, agent_id, metric_type, metric_name,
       avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
  FROM bench_ts GROUP BY 1, 2, 3, 4 WITH NO DATA;
SQL
    ts_heap=$(q "SELECT round(hypertable_size('bench_ts')::numeric / (SELECT count(*) FROM bench_ts), 1)")
    day0=$(q "SELECT first_day + interval '1 day' FROM bench_setup")
    day1=$(q "SELECT first_day + interval '2 days' FROM bench_setup")
    ts_refresh_ms=$(ms_of "CALL refresh_continuous_aggregate('bench_ts_5min', '$day0', '$day1')")
    bench_psql -q -c "ALTER TABLE bench_ts SET (timescaledb.compress, timescaledb.compress_segmentby = 'agent_id, metric_type, metric_name', timescaledb.compress_orderby = 'time DESC')"
    ts_compress_ms=$(ms_of "SELECT compress_chunk(c) FROM show_chunks('bench_ts') c")
    ts_comp=$(q "SELECT round(hypertable_size('bench_ts')::numeric / (SELECT count(*) FROM bench_narrow), 2)")
    echo "TimescaleDB reference: one day in a hypertable, continuous aggregate refreshed in ${ts_refresh_ms} ms, compressed in ${ts_compress_ms} ms"
fi
narrow_ix=$(q "SELECT round(value::numeric, 1) FROM bench_result WHERE what = 'narrow_indexed_bps'")
narrow_rows=$(q "SELECT count(*) FROM bench_narrow")
echo "narrow reference: one day, $narrow_rows rows, built in $(( SECONDS - t0 )) s"

# ---- rollups: full build of the whole history, then the 30-day history query
t0=$SECONDS
bench_psql -q <<SQL
-- The worker's first cycle may have refreshed the rollups of the empty tables (before the jobs
-- were disabled), which moves their watermarks to now. The history loaded since carries
-- ingested_at in the past (sent on time), so no late-row scan would find it: start over.
UPDATE secumon.rollups SET watermark = NULL, ingest_mark = NULL;
UPDATE secumon.rollups SET max_interval_per_run = '400 days', max_runtime = '10 hours';
SELECT secumon.refresh_rollup('metrics_5min');
SELECT secumon.refresh_rollup('metrics_1hour');
SQL
rollup_s=$(( SECONDS - t0 ))
if [ -n "$TS" ]; then
    ts_same=$(q "SELECT count(*) = (SELECT count(*) FROM bench_ts_5min)
                        AND bool_and(abs(c.avg - m.avg) <= 1e-9 * greatest(1, abs(m.avg)) AND c.count = m.count)
                   FROM bench_ts_5min c JOIN secumon.metrics_5min m
                     ON m.bucket = c.bucket AND m.agent_id = c.agent_id AND m.metric_type = c.metric_type AND m.metric_name = c.metric_name")
fi

# A full re-materialisation of one day of 5-minute buckets (what a non-incremental refresh
# would redo): the same 8.6 M samples as TimescaleDB's continuous-aggregate figure.
day_samples=$(q "SELECT count(*) * 10 FROM secumon.metric_samples WHERE time >= (SELECT first_day + interval '1 day' FROM bench_setup) AND time < (SELECT first_day + interval '2 days' FROM bench_setup)")
full_day_ms=$(q "SELECT round(bench_ms(format('SELECT secumon._materialise(r, %L, %L) FROM secumon.rollups r WHERE rollup_name = %L',
                   (SELECT first_day + interval '1 day' FROM bench_setup), (SELECT first_day + interval '2 days' FROM bench_setup), 'metrics_5min'), 1)::numeric)")

history_rollup="SELECT * FROM secumon.series('host1', 'cpu.usage_percent', now() - interval '$DAYS days', now(), $(( DAYS * 24 )))"
history_raw="SELECT secumon._bucket('1 hour', s.time) AS t, avg(s.vals[array_position(l.series_ids, secumon._series_id('cpu.usage_percent'))]) AS v
               FROM secumon.metric_samples s JOIN secumon.metric_layouts l ON l.layout_id = s.layout_id
              WHERE s.agent_key = 1 AND s.time >= secumon._bucket('1 hour', now() - interval '$DAYS days') AND s.time < now()
              GROUP BY 1"
history_view="SELECT secumon._bucket('1 hour', time) AS t, avg(value) FROM secumon.metrics
              WHERE agent_id = 'host1' AND metric_type = 'cpu' AND metric_name = 'usage_percent'
                AND time >= secumon._bucket('1 hour', now() - interval '$DAYS days') AND time < now() GROUP BY 1"
same=$(q "SELECT count(*) = (SELECT count(*) FROM ($history_raw) r) AND bool_and(abs(s.value - r.v) < 1e-9)
            FROM ($history_rollup) s JOIN ($history_raw) r ON r.t = s.time")
rollup_ms=$(q "SELECT round(bench_ms(\$q\$$history_rollup\$q\$, $RUNS)::numeric, 2)")
raw_heap_ms=$(q "SELECT round(bench_ms(\$q\$$history_raw\$q\$, $RUNS)::numeric, 1)")
view_heap_ms=$(q "SELECT round(bench_ms(\$q\$$history_view\$q\$, $RUNS)::numeric, 1)")

# ---- compression: every day older than 7 days, one job run per day
t0=$SECONDS
bench_psql -q -c "UPDATE secumon._jobs SET enabled = false"
compress_days=0
while :; do
    r=$(q "SELECT secumon.run_job('compress_metric_samples')")
    [[ $r == *"0 days compressed"* ]] && break
    compress_days=$(( compress_days + 1 ))
done
compress_s=$(( SECONDS - t0 ))
read -r c_bytes c_payload c_values c_heap c_ms <<<"$(q "SELECT sum(compressed_bytes), (SELECT 0), sum(value_count), sum(heap_bytes),
        round(avg(extract(epoch FROM duration) * 1000)) FROM secumon.compressed_partitions" | tr '|' ' ')"
payload=0
for chunk in $(q "SELECT chunk_table FROM secumon.compressed_partitions"); do
    payload=$(( payload + $(q "SELECT sum(length(data)) FROM secumon_partitions.$chunk") ))
done
comp_bps=$(q "SELECT round($c_bytes::numeric / $c_values, 2)")
payload_bps=$(q "SELECT round($payload::numeric / $c_values, 2)")
smaller=$(q "SELECT round(100 - 100.0 * $c_bytes / $c_heap, 1)")
same_after=$(q "SELECT count(*) = (SELECT count(*) FROM ($history_raw) r) AND bool_and(abs(s.value - r.v) < 1e-9)
                  FROM ($history_rollup) s JOIN ($history_raw) r ON r.t = s.time")
raw_mixed_ms=$(q "SELECT round(bench_ms(\$q\$$history_raw\$q\$, $RUNS)::numeric, 1)")

# ---- retention: the oldest day(s) past a 'DAYS - 1' day retention
bench_psql -q -c "UPDATE secumon.storage_policies SET retention = '$(( DAYS - 2 )) days' WHERE table_name = 'metric_samples'"
ret=$(q "SELECT secumon.run_job('retention_metric_samples')")
ret_ms=$(q "SELECT round(extract(epoch FROM last_duration) * 1000) FROM secumon.jobs WHERE job_name = 'retention_metric_samples'")

# ---- one 5-minute refresh at BIG_AGENTS hosts, with the whole history in place (the same in
# the timescaledb backend's database below)
big_sql=$(cat <<SQL
INSERT INTO secumon.agents (agent_id, hostname, owner_role, first_seen, last_seen)
SELECT 'big' || i, 'big' || i, 'postgres', now(), now() FROM generate_series(1, $BIG_AGENTS) i;
UPDATE secumon.rollups SET watermark = secumon._bucket('5 minutes', now()) - interval '10 minutes', ingest_mark = now(),
                           refresh_lag = '0', late_margin = '0'
 WHERE rollup_name = 'metrics_5min';
DELETE FROM secumon.metric_rollup_5min WHERE bucket >= secumon._bucket('5 minutes', now()) - interval '10 minutes';
INSERT INTO secumon.metric_samples (time, agent_key, layout_id, vals, ingested_at)
SELECT t + interval '1 millisecond' * (a.agent_key % 1000), a.agent_key, s.layout,
       ARRAY[round((random() * 100)::numeric, 2), round((random() * 50)::numeric, 2), round((random() * 20)::numeric, 2),
             round((random() * 4)::numeric, 2), round((40 + random() * 30)::numeric, 1), 4096 * floor(random() * 2000000),
             17179869184, 1e9 + extract(epoch FROM t) * 2000, extract(epoch FROM t) - 1700000000, 200]::float8[],
       t + interval '5 milliseconds'
  FROM bench_setup s, secumon.agents a,
       generate_series(secumon._bucket('5 minutes', now()) - interval '10 minutes',
                       secumon._bucket('5 minutes', now()) - interval '5 minutes' - interval '10 seconds', interval '10 seconds') t
 WHERE a.agent_id LIKE 'big%';
SQL
)
bench_psql -q <<< "$big_sql"
big_samples=$(q "SELECT count(*) * 10 FROM secumon.metric_samples WHERE time >= secumon._bucket('5 minutes', now()) - interval '10 minutes' AND time < secumon._bucket('5 minutes', now()) - interval '5 minutes'")
refresh_result=$(q "SELECT secumon.run_job('rollup_metrics_5min')")
refresh_ms=$(q "SELECT round(extract(epoch FROM last_duration) * 1000) FROM secumon.jobs WHERE job_name = 'rollup_metrics_5min'")
idle_result=$(q "SELECT secumon.run_job('rollup_metrics_5min')")
idle_ms=$(q "SELECT round(extract(epoch FROM last_duration) * 1000) FROM secumon.jobs WHERE job_name = 'rollup_metrics_5min'")
refresh_ok=$(q "SELECT count(*) FROM secumon.metric_rollup_5min m JOIN secumon.agents a USING (agent_key)
                 WHERE a.agent_id LIKE 'big%' AND m.bucket = secumon._bucket('5 minutes', now()) - interval '10 minutes'")

# ---- SecuMon on the timescaledb backend, the same reports: rollups, history, compression, retention
if [ -n "$TS" ]; then
    tq() { bts -c "$1"; }
    t0=$SECONDS
    bts -q <<SQL
UPDATE secumon.rollups SET watermark = NULL, ingest_mark = NULL;
UPDATE secumon.rollups SET max_interval_per_run = '400 days', max_runtime = '10 hours';
SELECT FROM secumon.refresh_rollup('metrics_5min');
SELECT FROM secumon.refresh_rollup('metrics_1hour');
SQL
    ts_rollup_s=$(( SECONDS - t0 ))
    # Re-materialising that day: the 5-minute rollup is a continuous aggregate there (under the
    # Timescale license), refreshed with force; its buckets must be the partitions backend's.
    ts_cagg=$(tq "SELECT coalesce(secumon._rollup_cagg('metric_rollup_5min')::text, '')")
    if [ -n "$ts_cagg" ]; then
        ts_full_day_ms=$(ms_of_db bench_ts "CALL refresh_continuous_aggregate('$ts_cagg', '$day0', '$day1', force => true)")
    else
        ts_full_day_ms=$(tq "SELECT round(bench_ms(format('SELECT secumon._materialise(r, %L, %L) FROM secumon.rollups r WHERE rollup_name = %L',
                       '$day0', '$day1', 'metrics_5min'), 1)::numeric)")
    fi
    day_digest="SELECT count(*) || ' ' || md5(string_agg(bucket || ' ' || agent_key || ' ' || md5(summary), ',' ORDER BY bucket, agent_key))
                  FROM secumon.metric_rollup_5min WHERE bucket >= '$day0' AND bucket < '$day1'"
    ts_cagg_same=$([ "$(tq "$day_digest")" = "$(q "$day_digest")" ] && echo t || echo f)
    ts_same=$(tq "SELECT count(*) = (SELECT count(*) FROM ($history_raw) r) AND bool_and(abs(s.value - r.v) < 1e-9)
                    FROM ($history_rollup) s JOIN ($history_raw) r ON r.t = s.time")
    ts_rollup_ms=$(tq "SELECT round(bench_ms(\$q\$$history_rollup\$q\$, $RUNS)::numeric, 2)")
    ts_raw_heap_ms=$(tq "SELECT round(bench_ms(\$q\$$history_raw\$q\$, $RUNS)::numeric, 1)")
    ts_view_heap_ms=$(tq "SELECT round(bench_ms(\$q\$$history_view\$q\$, $RUNS)::numeric, 1)")
    ts_heap_bps=$(tq "SELECT round(hypertable_size('secumon_partitions.metric_samples')::numeric / (SELECT sum(cardinality(vals)) FROM secumon.metric_samples), 1)")
    # Compression: the job compresses every chunk older than 7 days in one run.
    ts_days=$(tq "SELECT count(*) FROM secumon.partitions WHERE table_name = 'metric_samples' AND range_end <= now() - interval '7 days'")
    ts_compress_job_ms=$(ms_of_db bench_ts "SELECT secumon._compress_due('metric_samples')")
    read -r ts_before ts_after <<<"$(tq "SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes)
                                          FROM chunk_compression_stats('secumon_partitions.metric_samples') WHERE compression_status = 'Compressed'" | tr '|' ' ')"
    ts_comp_values=$(tq "SELECT sum(cardinality(vals)) FROM secumon.metric_samples s
                          WHERE s.time < (SELECT max(range_end) FROM secumon.partitions WHERE table_name = 'metric_samples' AND compressed)")
    ts_comp_bps=$(tq "SELECT round($ts_after::numeric / $ts_comp_values, 2)")
    ts_smaller=$(tq "SELECT round(100 - 100.0 * $ts_after / $ts_before, 1)")
    # The planner's view of the compressed chunks as they will be once autovacuum has run.
    bts -q -c "ANALYZE secumon_partitions.metric_samples"
    ts_raw_mixed_ms=$(tq "SELECT round(bench_ms(\$q\$$history_raw\$q\$, $RUNS)::numeric, 1)")
    ts_view_mixed_ms=$(tq "SELECT round(bench_ms(\$q\$$history_view\$q\$, $RUNS)::numeric, 1)")
    ts_same_after=$(tq "SELECT count(*) = (SELECT count(*) FROM ($history_raw) r) AND bool_and(abs(s.value - r.v) < 1e-9)
                          FROM ($history_rollup) s JOIN ($history_raw) r ON r.t = s.time")
    bts -q -c "UPDATE secumon.storage_policies SET retention = '$(( DAYS - 2 )) days' WHERE table_name = 'metric_samples'"
    ts_ret_ms=$(ms_of_db bench_ts "SELECT secumon.apply_retention('metric_samples')")
    # The incremental refresh of the partitions backend above, here.
    bts -q <<< "$big_sql"
    tq "SELECT secumon.run_job('rollup_metrics_5min')" >/dev/null
    tsb_refresh_ms=$(tq "SELECT round(extract(epoch FROM last_duration) * 1000) FROM secumon.jobs WHERE job_name = 'rollup_metrics_5min'")
    tq "SELECT secumon.run_job('rollup_metrics_5min')" >/dev/null
    ts_idle_ms=$(tq "SELECT round(extract(epoch FROM last_duration) * 1000) FROM secumon.jobs WHERE job_name = 'rollup_metrics_5min'")
fi

echo
fmt "figure" "SecuMon" "reference" "ratio"
fmt "$DAYS-day history of one host ($(( DAYS * 24 )) hourly points), raw rows" "${raw_heap_ms} ms" "" ""
fmt "  the same from rollups (secumon.series)" "${rollup_ms} ms" "${raw_heap_ms} ms raw" "$(q "SELECT round($raw_heap_ms / $rollup_ms)")x faster"
fmt "  raw rows after compressing days 8-$DAYS" "${raw_mixed_ms} ms" "${rollup_ms} ms rollup" "$(q "SELECT round($raw_mixed_ms / $rollup_ms)")x"
fmt "  raw through the secumon.metrics view (agent_id, metric names)" "${view_heap_ms} ms" "${raw_heap_ms} ms raw" "$(q "SELECT round($view_heap_ms / $raw_heap_ms, 2)")x (target <= 1.5x)"
fmt "  rollup answer equals raw answer (avg per hour)" "$same / $same_after" "" ""
fmt "bytes/sample, narrow heap rows (one day, this run)" "$narrow B" "" ""
fmt "bytes/sample, narrow rows + (agent,metric,time) index" "$narrow_ix B" "$ts_heap B TimescaleDB" ""
fmt "bytes/sample, SecuMon raw (row per report + indexes)" "$heap_bps B" "$narrow_ix B narrow+index" "$(q "SELECT round($narrow_ix / $heap_bps, 1)")x smaller"
ts_ratio=""; [ "$ts_comp" = "n/a" ] || ts_ratio="$(q "SELECT round($ts_comp / $comp_bps, 1)")x smaller"
fmt "bytes/sample, SecuMon compressed (chunk tables, all)" "$comp_bps B" "$ts_comp B TimescaleDB" "$ts_ratio"
fmt "  compressed payload only (sum of chunk lengths)" "$payload_bps B" "target <= 2 B" ""
fmt "  compressed vs its heap partitions" "${smaller}% smaller" "target >= 90%" ""
fmt "rollup refresh, 5 min x $BIG_AGENTS hosts ($(( big_samples / 1000 ))k samples)" "${refresh_ms} ms" "" ""
fmt "  refresh with nothing new (late-row scan only)" "${idle_ms} ms" "" ""
ts_ratio=""; [ "$ts_refresh_ms" = "n/a" ] || ts_ratio="$(q "SELECT round($ts_refresh_ms / $full_day_ms, 1)")x faster"
fmt "  full re-materialisation of one day, $AGENTS hosts ($(( day_samples / 100000 ))e5 samples)" "${full_day_ms} ms" "$ts_refresh_ms ms TimescaleDB cagg" "$ts_ratio"
fmt "  initial build of all rollups ($DAYS days)" "${rollup_s} s" "" ""
fmt "compression job, one day of $AGENTS hosts (avg)" "${c_ms} ms" "$ts_compress_ms ms TimescaleDB" ""
fmt "  $compress_days days compressed in total" "${compress_s} s" "" ""
fmt "retention job (dropping the oldest day)" "${ret_ms} ms" "" ""
if [ -n "$TS" ]; then
    echo
    echo "  SecuMon on its timescaledb backend (TimescaleDB 2.28.3 hypertable, columnstore), the same reports:"
    fmt "figure" "partitions" "timescaledb" "ratio"
    fmt "$DAYS-day history of one host, raw rows" "${raw_heap_ms} ms" "${ts_raw_heap_ms} ms" "$(q "SELECT round($ts_raw_heap_ms / $raw_heap_ms, 2)")x"
    fmt "  the same from rollups (secumon.series)" "${rollup_ms} ms" "${ts_rollup_ms} ms" "$(q "SELECT round($ts_rollup_ms / $rollup_ms, 2)")x"
    fmt "  raw rows after compressing days 8-$DAYS (and ANALYZE)" "${raw_mixed_ms} ms" "${ts_raw_mixed_ms} ms" "$(q "SELECT round($ts_raw_mixed_ms / $raw_mixed_ms, 2)")x"
    fmt "  through secumon.metrics, heap" "$(q "SELECT round($view_heap_ms / $raw_heap_ms, 2)")x raw" "$(q "SELECT round($ts_view_heap_ms / $ts_raw_heap_ms, 2)")x raw" "target <= 1.5x"
    fmt "  through secumon.metrics, days 8-$DAYS compressed" "" "$(q "SELECT round($ts_view_mixed_ms / $ts_raw_mixed_ms, 2)")x raw" "(${ts_view_mixed_ms} ms)"
    fmt "  rollup answer equals raw answer, before/after compression" "$same / $same_after" "$ts_same / $ts_same_after" ""
    fmt "bytes/sample, raw (row per report + indexes)" "$heap_bps B" "$ts_heap_bps B" "$(q "SELECT round($ts_heap_bps / $heap_bps, 2)")x"
    fmt "bytes/sample, compressed" "$comp_bps B" "$ts_comp_bps B" "$(q "SELECT round($ts_comp_bps / $comp_bps, 1)")x larger"
    fmt "  compressed vs heap" "${smaller}% smaller" "${ts_smaller}% smaller" ""
    fmt "compression job, per day of $AGENTS hosts" "${c_ms} ms" "$(( ts_compress_job_ms / (ts_days > 0 ? ts_days : 1) )) ms" "$ts_days chunks"
    fmt "rollup refresh, 5 min x $BIG_AGENTS hosts (incremental)" "${refresh_ms} ms" "${tsb_refresh_ms} ms" "$(q "SELECT round($tsb_refresh_ms::numeric / greatest($refresh_ms, 1), 2)")x"
    fmt "  refresh with nothing new" "${idle_ms} ms" "${ts_idle_ms} ms" ""
    fmt "full re-materialisation of one day (5-minute rollups)" "${full_day_ms} ms" "${ts_full_day_ms} ms${ts_cagg:+ (continuous aggregate)}" "$(q "SELECT round($ts_full_day_ms::numeric / $full_day_ms, 2)")x"
    fmt "  the day's buckets equal on both backends" "" "$ts_cagg_same" ""
    fmt "initial build of all rollups ($DAYS days)" "${rollup_s} s" "${ts_rollup_s} s" ""
    fmt "retention (dropping the oldest day / chunk)" "${ret_ms} ms" "${ts_ret_ms} ms" ""
fi
echo
echo "details: refresh: $refresh_result"
echo "         idle refresh: $idle_result"
echo "         refresh materialised $refresh_ok buckets of the $BIG_AGENTS hosts"
echo "         retention: $ret"
echo "         TimescaleDB's 5-minute aggregate equals SecuMon's rollup of the day (avg, count): $ts_same"
echo "         load ${load_s} s, total $(( SECONDS - started )) s"
