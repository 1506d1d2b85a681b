//! The test history: agents `{prefix}1..={agents}` and one full report per agent every `step`
//! in each `[from, to)` range (SQL expressions), stored server-side through `secumon.ingest`.
//! CPU values swing between 10 and 90 % with two decimals, memory has one decimal, counters
//! grow, the interface's bytes_sent counter resets every 500 reports, and every family has a
//! row. The end-to-end tests (this crate) and the in-database tests (secumon_pg/src/tests,
//! which include this file with `#[path]`) store the same history.

/// What the reports carry beyond the common series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryShape {
    /// Agents registered for environment `e2e` with a label `n`; one filesystem (`/`) and one
    /// process (postgres).
    EndToEnd,
    /// Agents registered for environment `test` without labels; two filesystems (`/`, `/data`)
    /// and two processes (init, postgres).
    InDatabase,
}

/// SQL (one DO block) that stores the history.
pub fn history_sql(prefix: &str, agents: i32, ranges: &[(String, String)], step: &str, shape: HistoryShape) -> String {
    let ranges: Vec<String> = ranges.iter().map(|(from, to)| format!("({from}, {to})")).collect();
    let (environment, labels) = match shape {
        HistoryShape::EndToEnd => ("e2e", "jsonb_build_object('n', a::text)"),
        HistoryShape::InDatabase => ("test", "'{}'"),
    };
    let (second_disk, init_process) = match shape {
        HistoryShape::EndToEnd => ("", ""),
        HistoryShape::InDatabase => (
            ",
                  jsonb_build_object('device', '/dev/sdb1', 'mountpoint', '/data', 'fs_type', 'xfs',
                    'total_bytes', 5000, 'used_bytes', 2500, 'free_bytes', 2500, 'usage_percent', 50 + a,
                    'inodes_total', 100, 'inodes_used', 1, 'inodes_usage_percent', 1, 'read_bytes', 0,
                    'write_bytes', 0, 'read_ops', 0, 'write_ops', 0)",
            "jsonb_build_object('pid', 1, 'name', 'init', 'command', '/sbin/init', 'user', 'root',
                    'cpu_percent', 0.5, 'memory_bytes', 1024, 'memory_percent', 0.1, 'status', 'sleeping'),
                  ",
        ),
    };
    format!(
        r#"DO $gen$
        DECLARE t timestamptz; a int; i int := 0;
        BEGIN
          FOR a IN 1..{agents} LOOP
            PERFORM secumon.register_agent('{prefix}' || a, 'host-{prefix}' || a, 'linux', '{environment}', {labels});
          END LOOP;
          FOR t IN SELECT generate_series(r.lo, r.hi - interval '1 microsecond', {step})
                     FROM (VALUES {ranges}) AS r (lo, hi) LOOP
            i := i + 1;
            FOR a IN 1..{agents} LOOP
              PERFORM secumon.ingest('{prefix}' || a, t + a * interval '1 millisecond',
                ARRAY['cpu.usage_percent', 'memory.usage_percent', 'cpu.context_switches', 'memory.total_bytes'],
                ARRAY[round((50 + 40 * sin(i / 30.0 + a))::numeric, 2)::float8,
                      round((30 + a + (i % 17) * 1.5)::numeric, 1)::float8,
                      (1000000 + i * 1234 + a)::float8, 8589934592::float8],
                jsonb_build_array(
                  jsonb_build_object('device', '/dev/sda1', 'mountpoint', '/', 'fs_type', 'ext4',
                    'total_bytes', 1000, 'used_bytes', 400 + i % 10, 'free_bytes', 600 - i % 10,
                    'usage_percent', 40 + (i % 10) / 4.0, 'inodes_total', 100, 'inodes_used', 10 + a,
                    'inodes_usage_percent', 10 + a, 'read_bytes', i * 100, 'write_bytes', i * 200,
                    'read_ops', i, 'write_ops', 2 * i){second_disk}),
                jsonb_build_array(jsonb_build_object('interface', 'eth0', 'bytes_sent', (i % 500) * 1000,
                    'bytes_recv', i * 2000, 'packets_sent', i, 'packets_recv', 2 * i,
                    'errors_in', 0, 'errors_out', 0, 'drops_in', 0, 'drops_out', 0)),
                jsonb_build_array(
                  {init_process}jsonb_build_object('pid', 100 + a, 'name', 'postgres', 'command', 'postgres -D /data',
                    'user', 'postgres', 'cpu_percent', (i % 7)::float8, 'memory_bytes', 4096 * i,
                    'memory_percent', 1.5, 'status', 'running')));
            END LOOP;
          END LOOP;
        END $gen$"#,
        ranges = ranges.join(", ")
    )
}
