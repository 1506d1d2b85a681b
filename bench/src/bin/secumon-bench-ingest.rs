//! Ingest benchmark: N simulated agents push realistic reports through exactly the agent's
//! write path (`secumon_agent::db::Db::ingest`, one call and one transaction per report), then
//! the same samples go by raw binary COPY of narrow rows (time, agent_id, metric_type,
//! metric_name, value) into an unindexed, unpartitioned table. Prints samples/s of both and
//! the ratio.
//!
//! It also shows where a report's time goes, measured in the same run: the same reports sent
//! as variants that each leave out one part of the work (nothing written; the same INSERTs in
//! a function without any check or lookup; ingest without the JSON arrays), and one more
//! ingest pass with pg_stat_statements timing every statement inside secumon.ingest().
//!
//! Each agent's first report (which also records the agent's layout) is measured apart; the
//! agent path, COPY and the variants then alternate for a few rounds, since other work on a
//! shared machine moves single figures: the headline is the round with the median ratio.
//! Each pass also records the CPU time its server backends used (read from /proc when the
//! server runs on this host): what the server spends per report, which other load on the
//! machine hardly moves.
//!
//! With SECUMON_BENCH_TIMESCALEDB set to the connection string of a database on SecuMon's
//! timescaledb backend (bench/ingest/run.sh makes one when TimescaleDB is installed), the same
//! reports also go, in alternating rounds, through secumon.ingest into the hypertables, and as
//! narrow rows (one INSERT of all of a report's samples, one transaction per report) into a
//! TimescaleDB hypertable indexed like the seed's `metrics` table: the path of a monitoring
//! system that writes one row per sample into TimescaleDB.
//!
//! Usage: secumon-bench-ingest CONNINFO [agents=10000] [reports_per_agent=3] [connections=4]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use secumon_agent::db::Db;
use secumon_agent::protocol::{ingest_params, INGEST_SQL};
use secumon_agent::report::{AgentInfo, Disk, NetworkInterface, Process, Report};
use secumon_agent::time::Timestamp;

const SERIES: &[(&str, &str)] = &[
    ("cpu", "usage_percent"), ("cpu", "user_percent"), ("cpu", "nice_percent"), ("cpu", "system_percent"),
    ("cpu", "idle_percent"), ("cpu", "iowait_percent"), ("cpu", "irq_percent"), ("cpu", "softirq_percent"),
    ("cpu", "steal_percent"), ("cpu", "load_avg_1"), ("cpu", "load_avg_5"), ("cpu", "load_avg_15"),
    ("cpu", "context_switches"), ("cpu", "interrupts"), ("cpu", "cores"),
    ("memory", "usage_percent"), ("memory", "total_bytes"), ("memory", "used_bytes"), ("memory", "available_bytes"),
    ("memory", "free_bytes"), ("memory", "cached_bytes"), ("memory", "buffers_bytes"), ("memory", "swap_total_bytes"),
    ("memory", "swap_used_bytes"), ("memory", "swap_free_bytes"), ("memory", "swap_usage_percent"),
    ("system", "uptime_seconds"), ("system", "boot_time"), ("system", "processes_total"), ("system", "processes_running"),
    ("system", "processes_sleeping"), ("system", "processes_idle"), ("system", "processes_stopped"),
    ("system", "processes_zombie"), ("system", "threads_total"),
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A report shaped like the real agent's: 35 series, 2 filesystems, 2 interfaces, 12 processes;
/// values with one or two decimals, counters, slowly moving gauges.
fn report(agent: usize, step: usize, t0: i64, rng: &mut Rng) -> Report {
    let mut r = Report::new(format!("bench-{agent:05}"), Timestamp::from_unix_micros(t0 + step as i64 * 10_000_000));
    for (i, (ty, name)) in SERIES.iter().enumerate() {
        let v = match *name {
            "context_switches" | "interrupts" => (1_000_000 + step * 5000 + agent) as f64,
            "cores" => 8.0,
            n if n.ends_with("_bytes") => (8u64 << 30) as f64 * (0.3 + 0.01 * (i % 7) as f64),
            n if n.ends_with("_percent") => (rng.next() * 10000.0).round() / 100.0,
            _ => (rng.next() * 400.0).round() / 100.0,
        };
        r.set(ty, name, Some(v));
    }
    for (d, mount) in ["/", "/data"].iter().enumerate() {
        r.disks.push(Disk {
            device: format!("/dev/sda{}", d + 1),
            mountpoint: mount.to_string(),
            fs_type: "ext4".into(),
            total_bytes: 100 << 30,
            used_bytes: (40 << 30) + step as u64 * 4096,
            free_bytes: (60 << 30) - step as u64 * 4096,
            usage_percent: Some(40.0 + step as f64 * 0.001),
            inodes_total: Some(6_553_600),
            inodes_used: Some(120_000 + step as u64),
            inodes_usage_percent: Some(1.83),
            read_bytes: Some(1_000_000 + step as u64 * 8192),
            write_bytes: Some(2_000_000 + step as u64 * 16384),
            read_ops: Some(1000 + step as u64 * 2),
            write_ops: Some(3000 + step as u64 * 4),
        });
    }
    for iface in ["eth0", "eth1"] {
        r.network.push(NetworkInterface {
            interface: iface.into(),
            bytes_sent: 1_000_000 + step as u64 * 20_000,
            bytes_recv: 3_000_000 + step as u64 * 50_000,
            packets_sent: 10_000 + step as u64 * 20,
            packets_recv: 30_000 + step as u64 * 50,
            errors_in: 0,
            errors_out: 0,
            drops_in: 1,
            drops_out: 0,
        });
    }
    for p in 0..12u32 {
        r.processes.push(Process {
            pid: 1000 + p,
            name: format!("proc{p}"),
            command: format!("/usr/bin/proc{p} --serve"),
            user: "www-data".into(),
            cpu_percent: (rng.next() * 1000.0).round() / 100.0,
            memory_bytes: 50_000_000 + p as u64 * 1_000_000,
            memory_percent: (rng.next() * 500.0).round() / 100.0,
            status: "sleeping".into(),
        });
    }
    r
}

/// The same samples as narrow rows: every numeric value of the report.
fn narrow(r: &Report) -> Vec<(String, String, f64)> {
    let mut rows = Vec::new();
    for (series, v) in &r.series {
        if let (Some(v), Some((ty, name))) = (v, series.split_once('.')) {
            rows.push((ty.to_string(), name.to_string(), *v));
        }
    }
    for d in &r.disks {
        let m = &d.mountpoint;
        let vals: [(&str, Option<f64>); 11] = [
            ("total_bytes", Some(d.total_bytes as f64)), ("used_bytes", Some(d.used_bytes as f64)),
            ("free_bytes", Some(d.free_bytes as f64)), ("usage_percent", d.usage_percent),
            ("inodes_total", d.inodes_total.map(|v| v as f64)), ("inodes_used", d.inodes_used.map(|v| v as f64)),
            ("inodes_usage_percent", d.inodes_usage_percent), ("read_bytes", d.read_bytes.map(|v| v as f64)),
            ("write_bytes", d.write_bytes.map(|v| v as f64)), ("read_ops", d.read_ops.map(|v| v as f64)),
            ("write_ops", d.write_ops.map(|v| v as f64)),
        ];
        for (name, v) in vals.into_iter() {
            if let Some(v) = v {
                rows.push(("disk".into(), format!("{name}:{m}"), v));
            }
        }
    }
    for n in &r.network {
        for (name, v) in [("bytes_sent", n.bytes_sent), ("bytes_recv", n.bytes_recv), ("packets_sent", n.packets_sent),
                          ("packets_recv", n.packets_recv), ("errors_in", n.errors_in), ("errors_out", n.errors_out),
                          ("drops_in", n.drops_in), ("drops_out", n.drops_out)] {
            rows.push(("network".into(), format!("{name}:{}", n.interface), v as f64));
        }
    }
    for p in &r.processes {
        for (name, v) in [("cpu_percent", p.cpu_percent), ("memory_bytes", p.memory_bytes as f64), ("memory_percent", p.memory_percent)] {
            rows.push(("process".into(), format!("{name}:{}", p.pid), v));
        }
    }
    rows
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(conninfo) = args.get(1).cloned() else {
        eprintln!("usage: secumon-bench-ingest CONNINFO [agents] [reports_per_agent] [connections]");
        std::process::exit(2);
    };
    let arg = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let agents = arg(2, 10_000).max(1);
    let per_agent = arg(3, 3).max(1);
    let connections = arg(4, 4).max(1);

    // Recent reports: inside the accepted sample window and in today's (or, just after
    // midnight UTC, yesterday's) partition, as live agents write. Every pass below uses its
    // own instants (10 s apart per report of an agent), so no pass meets another's
    // (agent, time) keys; the last pass's end just before now.
    let timescaledb = std::env::var("SECUMON_BENCH_TIMESCALEDB").ok().filter(|c| !c.is_empty());
    let passes = 3 + 7 * ROUNDS as i64 + if timescaledb.is_some() { 3 * ROUNDS as i64 } else { 0 };
    let base = (Timestamp::now().unix_micros() / 10_000_000 - (passes + 1) * per_agent as i64) * 10_000_000;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let reports: Vec<Report> = (0..per_agent).flat_map(|s| (0..agents).map(move |a| (a, s)))
        .map(|(a, s)| report(a, s, base, &mut rng)).collect();
    let samples: usize = reports.iter().map(|r| narrow(r).len()).sum();
    let per_report = samples as f64 / reports.len().max(1) as f64;
    println!("{agents} agents x {per_agent} reports = {} reports, {samples} samples ({per_report:.0} per report), {connections} connections",
             reports.len());

    // Register every simulated agent, as each agent does on start.
    let register_all = |conninfo: &str| {
        let mut db = Db::connect(conninfo).unwrap_or_else(|e| panic!("connect: {e}"));
        for a in 0..agents {
            let info = AgentInfo { agent_id: format!("bench-{a:05}"), hostname: format!("bench-{a:05}"), os: "Linux".into(),
                                   agent_version: "bench".into(), labels: BTreeMap::new() };
            db.register(&info).unwrap_or_else(|e| panic!("register: {e}"));
        }
    };
    let mut keys = HashMap::new();
    {
        register_all(&conninfo);
        let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap_or_else(|e| panic!("connect: {e}"));
        for row in c.query("SELECT agent_id, agent_key FROM secumon.agents", &[]).unwrap_or_else(|e| panic!("agents: {e}")) {
            keys.insert(row.get::<_, String>(0), row.get::<_, i32>(1));
        }
    }
    // The floor under the agent path: the same rows written by the same INSERT statements with
    // cached plans, in one function call and one transaction per report, but with no check, no
    // lookup (agent_key and layout_id are passed in) and no last_seen update.
    let layout = {
        let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap_or_else(|e| panic!("connect: {e}"));
        c.batch_execute(BARE_ROWS_FUNCTION).unwrap_or_else(|e| panic!("create bench.ingest: {e}"));
        let mut db = Db::connect(&conninfo).unwrap_or_else(|e| panic!("connect: {e}"));
        let p = ingest_params(&reports[0]);
        db.query_value("SELECT secumon._layout_id($1::text[])", &p[2..3]).unwrap_or_else(|e| panic!("layout: {e}"))
            .unwrap_or_default()
    };
    let with_keys = |r: &Report, arrays: bool| {
        let mut p = ingest_params(r);
        if !arrays {
            p[4] = None;
            p[5] = None;
            p[6] = None;
        }
        p.push(Some(keys[&r.agent_id].to_string()));
        p.push(Some(layout.clone()));
        p
    };

    let mut pass = 0i64;
    let mut run_on = |conninfo: &str, reports: &[Report], call: &(dyn Fn(&mut Db, &Report) + Sync)| -> Pass {
        pass += 1;
        let shifted: Vec<Report> = reports.iter().map(|r| {
            let mut r = r.clone();
            r.time = Timestamp::from_unix_micros(r.time.unix_micros() + pass * per_agent as i64 * 10_000_000);
            r
        }).collect();
        run_pass(conninfo, connections, &shifted, call)
    };
    let mut run = |reports: &[Report], call: &(dyn Fn(&mut Db, &Report) + Sync)| -> Pass { run_on(&conninfo, reports, call) };
    let ingest = |db: &mut Db, r: &Report| { db.ingest(r).unwrap_or_else(|e| panic!("ingest: {e}")); };
    let series_only = |db: &mut Db, r: &Report| {
        let mut p = ingest_params(r);
        p[4] = None;
        p[5] = None;
        p[6] = None;
        db.query_value(INGEST_SQL, &p).unwrap_or_else(|e| panic!("ingest: {e}"));
    };
    let parse_only = |db: &mut Db, r: &Report| {
        db.query_value(PARSE_ONLY_SQL, &ingest_params(r)).unwrap_or_else(|e| panic!("round trip: {e}"));
    };
    let bare = |db: &mut Db, r: &Report| {
        db.query_value(BARE_ROWS_SQL, &with_keys(r, true)).unwrap_or_else(|e| panic!("bare rows: {e}"));
    };
    let bare_series = |db: &mut Db, r: &Report| {
        db.query_value(BARE_ROWS_SQL, &with_keys(r, false)).unwrap_or_else(|e| panic!("bare rows: {e}"));
    };

    // 0. Each agent's first report also records which layout it uses (secumon._agent_layouts),
    // once per agent; measured apart, so the rounds below show the steady state.
    let first_reports = agents.min(reports.len());
    let first = run(&reports[..first_reports], &ingest);

    // 1. The agent's write path, exactly as the agent calls it; 2. raw binary COPY of the same
    // samples as narrow rows into an unindexed table; 3. the variants of the breakdown. All
    // alternate for a few rounds, since other work on a shared machine moves single figures;
    // the headline is the round with the median ratio, the breakdown the median of each.
    // Besides wall time, each pass records the CPU time of its server backends: what the
    // server spends per report, which other load on the machine hardly moves.
    const INGEST: usize = 0;
    const COPY: usize = 1;
    const BARE: usize = 2;
    const SERIES: usize = 3;
    const BARE_SERIES: usize = 4;
    const PARSE: usize = 5;
    let mut rounds: Vec<[Pass; 6]> = Vec::new();
    for _ in 0..ROUNDS {
        let ingest_pass = run(&reports, &ingest);
        let copy_pass = copy_narrow(&conninfo, connections, &reports);
        let bare_pass = run(&reports, &bare);
        let series_pass = run(&reports, &series_only);
        let bare_series_pass = run(&reports, &bare_series);
        let parse_pass = run(&reports, &parse_only);
        rounds.push([ingest_pass, copy_pass, bare_pass, series_pass, bare_series_pass, parse_pass]);
    }
    let n = reports.len() as f64;
    let rps = |p: &Pass| n / p.secs;
    // Backend CPU microseconds per report (for COPY: for the same samples).
    let cpu_us = |p: &Pass| p.backend_cpu_secs.map(|c| c * 1e6 / n);
    let ratio = |r: &[Pass; 6]| r[COPY].secs / r[INGEST].secs;
    for (i, r) in rounds.iter().enumerate() {
        let cpu = match (cpu_us(&r[INGEST]), cpu_us(&r[COPY])) {
            (Some(a), Some(c)) => format!("; backend CPU per report {a:.0} us vs {c:.0} us"),
            _ => String::new(),
        };
        println!("round {}: agent path {:>7.0} samples/s ({:>5.0} reports/s), raw COPY {:>8.0} samples/s: {:>4.1}%{cpu}",
                 i + 1, rps(&r[INGEST]) * per_report, rps(&r[INGEST]), samples as f64 / r[COPY].secs, 100.0 * ratio(r));
    }
    let median = |f: &dyn Fn(&[Pass; 6]) -> Option<f64>| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect::<Option<_>>()?;
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    };
    let headline = median(&|r| Some(ratio(r))).unwrap_or(0.0);
    let median_round = rounds.iter().find(|r| ratio(r) == headline).unwrap_or(&rounds[0]);
    let ingest_rps = rps(&median_round[INGEST]);
    let agent_rate = ingest_rps * per_report;
    let copy_rate = samples as f64 / median_round[COPY].secs;
    let wall = |i: usize| median(&|r| Some(r[i].secs)).map(|secs| n / secs).unwrap_or(0.0);
    let cpu = |i: usize| median(&|r| cpu_us(&r[i]));

    // 4. Where the time inside secumon.ingest() goes: one more pass with pg_stat_statements
    // timing nested statements (its own overhead makes this pass slower; only shares count).
    let profile = profile_pass(&conninfo, &mut |call| run(&reports, call));

    // 5. Custom series against host series: the same reports with their 35 host series, or
    // with 35 labelled custom series in their place (as a scrape brings them), series only.
    let host_only: Vec<Report> = reports.iter().map(|r| {
        let mut h = Report::new(r.agent_id.clone(), r.time);
        h.series = r.series.clone();
        h
    }).collect();
    let custom: Vec<Report> = reports.iter().map(|r| {
        let mut c = Report::new(r.agent_id.clone(), r.time);
        for (i, v) in r.series.values().enumerate() {
            c.series.insert(format!("custom.app_requests_total{{code=\"200\",route=\"/api/v1/resource{i}\"}}"), *v);
        }
        c
    }).collect();
    let custom_first = run(&custom[..first_reports], &ingest);  // each agent's new layout
    let mut custom_rounds = Vec::new();
    for _ in 0..ROUNDS {
        custom_rounds.push((run(&host_only, &ingest), run(&custom, &ingest)));
    }

    // 6. Storage backends: the partitions backend, the timescaledb backend and narrow rows in a
    // hypertable, the same reports, alternating.
    let backends = timescaledb.as_deref().map(|ts| {
        register_all(ts);
        let mut c = postgres::Client::connect(ts, postgres::NoTls).unwrap_or_else(|e| panic!("connect: {e}"));
        c.batch_execute(SEED_HYPERTABLE).unwrap_or_else(|e| panic!("create the narrow hypertable: {e}"));
        let seed = |db: &mut Db, r: &Report| {
            let rows = narrow(r);
            let array = |f: &dyn Fn(&(String, String, f64)) -> String| -> Option<String> {
                Some(format!("{{{}}}", rows.iter().map(|row| format!("\"{}\"", f(row))).collect::<Vec<_>>().join(",")))
            };
            let params = [Some(r.time.to_rfc3339()), Some(r.agent_id.clone()), array(&|x| x.0.clone()),
                          array(&|x| x.1.replace('\\', "\\\\").replace('"', "\\\"")), array(&|x| x.2.to_string())];
            db.query_value(SEED_INSERT_SQL, &params).unwrap_or_else(|e| panic!("narrow insert: {e}"));
        };
        run_on(ts, &reports[..first_reports], &ingest);  // each agent's first report there
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            rounds.push([run_on(&conninfo, &reports, &ingest), run_on(ts, &reports, &ingest), run_on(ts, &reports, &seed)]);
        }
        rounds
    });

    let needed = 10_000.0 / 10.0 * per_report;
    println!();
    println!("agent write path (secumon.ingest, 1 tx/report): {:>10.0} samples/s  {:>8.0} reports/s", agent_rate, ingest_rps);
    println!("raw binary COPY, narrow rows, unindexed table:   {:>10.0} samples/s", copy_rate);
    println!("ratio: {:.1}% of raw COPY (median of {ROUNDS} rounds; target >= 50%)", 100.0 * headline);
    if let (Some(a), Some(c)) = (cpu(INGEST), cpu(COPY)) {
        println!("by server backend CPU per sample (medians): {:.0} ns vs {:.0} ns for raw COPY: {:.1}%",
                 1000.0 * a / per_report, 1000.0 * c / per_report, 100.0 * c / a);
    }
    println!("10,000 agents at a 10 s interval need {:.0} samples/s (1000 reports/s): headroom {:.1}x", needed, agent_rate / needed);
    println!();
    println!("Breakdown: the same reports, 1 transaction per report, {connections} connections, medians of {ROUNDS} rounds:");
    println!("  {:<68} {:>9} {:>8} {:>9} {:>11}", "", "reports/s", "wall us", "% of COPY", "backend CPU");
    let copy_median = samples as f64 / median(&|r| Some(r[COPY].secs)).unwrap_or(f64::NAN);
    let row = |label: &str, rps: f64, cpu: Option<f64>| {
        let cpu = cpu.map_or_else(|| "-".to_string(), |c| format!("{c:.0} us"));
        println!("  {label:<68} {rps:>9.0} {:>8.0} {:>8.1}% {cpu:>11}", 1e6 / rps, 100.0 * rps * per_report / copy_median);
    };
    row("parameters sent and parsed, nothing written (SELECT)", wall(PARSE), cpu(PARSE));
    row("metric_samples row only, bare (same INSERT, no checks, no lookups)", wall(BARE_SERIES), cpu(BARE_SERIES));
    row("secumon.ingest without disks/networks/processes", wall(SERIES), cpu(SERIES));
    row("all the report's rows, bare (same INSERTs, no checks, no lookups)", wall(BARE), cpu(BARE));
    row("secumon.ingest (the agent path)", wall(INGEST), cpu(INGEST));
    row("raw binary COPY of the same samples", copy_median / per_report, cpu(COPY));
    let first_cpu = first.backend_cpu_secs.map(|c| c * 1e6 / first_reports as f64);
    row("secumon.ingest, each agent's first report (records its layout)", first_reports as f64 / first.secs, first_cpu);
    if let (Some(parse), Some(bare), Some(bare_series), Some(ingest), Some(series)) =
        (cpu(PARSE), cpu(BARE), cpu(BARE_SERIES), cpu(INGEST), cpu(SERIES)) {
        println!("  backend CPU per report:");
        println!("    parsing the call and its parameters, empty commit        {parse:>5.0} us");
        println!("    writing the rows (heap, indexes, WAL, commit)            {:>5.0} us ({:.0} us for disks/networks/processes)",
                 bare - parse, bare - bare_series);
        println!("    secumon.ingest() itself (checks, lookups, last_seen)     {:>5.0} us ({:.0} us without the arrays)",
                 ingest - bare, series - bare_series);
    }
    {
        let mid = |f: &dyn Fn(&(Pass, Pass)) -> Option<f64>| {
            let mut v: Vec<f64> = custom_rounds.iter().map(f).collect::<Option<_>>()?;
            v.sort_by(f64::total_cmp);
            Some(v[v.len() / 2])
        };
        let host_rps = mid(&|p| Some(n / p.0.secs)).unwrap_or(0.0);
        let custom_rps = mid(&|p| Some(n / p.1.secs)).unwrap_or(0.0);
        let host_cpu = mid(&|p| cpu_us(&p.0));
        let custom_cpu = mid(&|p| cpu_us(&p.1));
        println!();
        println!("Custom series vs host series: 35 series per report, series only, medians of {ROUNDS} rounds:");
        println!("  host series (cpu.*, memory.*, system.*)                 {host_rps:>8.0} reports/s {:>8.0} samples/s{}",
                 host_rps * 35.0, host_cpu.map_or_else(String::new, |c| format!(", backend CPU {c:.0} us/report")));
        println!("  custom series with 2 labels each                         {custom_rps:>8.0} reports/s {:>8.0} samples/s{}",
                 custom_rps * 35.0, custom_cpu.map_or_else(String::new, |c| format!(", backend CPU {c:.0} us/report")));
        if let (Some(h), Some(c)) = (host_cpu, custom_cpu) {
            println!("  ratio custom / host: {:.2}x wall, {:.2}x backend CPU", host_rps / custom_rps.max(1e-9), c / h);
        }
        let first_cpu = custom_first.backend_cpu_secs.map(|c| c * 1e6 / first_reports as f64);
        println!("  first custom report of each agent (new layout, series registered, cap checked): {:.0} reports/s{}",
                 first_reports as f64 / custom_first.secs, first_cpu.map_or_else(String::new, |c| format!(", {c:.0} us/report")));
    }
    if let Some(rounds) = backends {
        let mid = |i: usize| {
            let mut v: Vec<f64> = rounds.iter().map(|r: &[Pass; 3]| samples as f64 / r[i].secs).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mid_cpu = |i: usize| {
            let mut v: Vec<f64> = rounds.iter().map(|r: &[Pass; 3]| cpu_us(&r[i])).collect::<Option<_>>()?;
            v.sort_by(f64::total_cmp);
            Some(v[v.len() / 2])
        };
        let (native, ts, seed) = (mid(0), mid(1), mid(2));
        let cpu_text = |i: usize| mid_cpu(i).map_or_else(String::new, |c| format!(", backend CPU {c:.0} us/report"));
        println!();
        println!("Storage backends: the same reports, 1 transaction per report, {connections} connections, medians of {ROUNDS} rounds:");
        println!("  SecuMon, partitions backend (secumon.ingest)                 {native:>10.0} samples/s{}", cpu_text(0));
        println!("  SecuMon, timescaledb backend (secumon.ingest, hypertables)   {ts:>10.0} samples/s{}  {:.2}x of partitions",
                 cpu_text(1), ts / native);
        println!("  narrow rows into a TimescaleDB hypertable (one INSERT/report) {seed:>9.0} samples/s{}", cpu_text(2));
        println!("  partitions backend / narrow hypertable rows: {:.1}x (target >= 3x); timescaledb backend: {:.1}x",
                 native / seed, ts / seed);
        println!("  raw binary COPY reference (above): {copy_rate:.0} samples/s");
    }
    if let Some(p) = profile {
        println!();
        println!("Inside secumon.ingest() (pg_stat_statements, track = all; server time per report, one backend):");
        for (stmt, mean_us, share) in p {
            println!("  {mean_us:>7.1} us {share:>5.1}%  {stmt}");
        }
    }
}

/// A pass's elapsed seconds and the CPU time its server backends used (None when their
/// /proc entries cannot be read, e.g. a server on another host).
#[derive(Clone, Copy)]
struct Pass {
    secs: f64,
    backend_cpu_secs: Option<f64>,
}

/// User + system CPU time a local process has used so far, in seconds (/proc/PID/stat, in
/// clock ticks of 1/100 s on Linux).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Sums per-connection CPU seconds; None if any is unknown.
fn total_cpu(parts: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    parts.into_iter().sum()
}

/// Runs `call` for every report over `connections` connections.
fn run_pass(conninfo: &str, connections: usize, reports: &[Report], call: &(dyn Fn(&mut Db, &Report) + Sync)) -> Pass {
    let next = AtomicUsize::new(0);
    let mut dbs: Vec<(Db, Option<String>)> = (0..connections).map(|_| {
        let mut db = Db::connect(conninfo).unwrap_or_else(|e| panic!("connect: {e}"));
        let pid = db.query_value("SELECT pg_backend_pid()", &[]).unwrap_or_else(|e| panic!("backend pid: {e}"));
        (db, pid)
    }).collect();
    let started = Instant::now();
    let cpu = thread::scope(|s| {
        let workers: Vec<_> = dbs.iter_mut().map(|(db, pid)| {
            let next = &next;
            s.spawn(move || {
                let before = pid.as_deref().and_then(cpu_secs);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(r) = reports.get(i) else { break };
                    call(db, r);
                }
                Some(pid.as_deref().and_then(cpu_secs)? - before?)
            })
        }).collect();
        total_cpu(workers.into_iter().map(|w| w.join().unwrap_or(None)))
    });
    Pass { secs: started.elapsed().as_secs_f64(), backend_cpu_secs: cpu }
}

/// Raw binary COPY of the reports' samples as narrow rows into a fresh unindexed table, one
/// COPY per connection.
fn copy_narrow(conninfo: &str, connections: usize, reports: &[Report]) -> Pass {
    let mut client = postgres::Client::connect(conninfo, postgres::NoTls).unwrap_or_else(|e| panic!("connect: {e}"));
    client.batch_execute("DROP TABLE IF EXISTS bench_narrow; \
                          CREATE TABLE bench_narrow (time timestamptz, agent_id text, metric_type text, metric_name text, value float8)")
        .unwrap_or_else(|e| panic!("create: {e}"));
    let chunks: Vec<&[Report]> = reports.chunks(reports.len().div_ceil(connections)).collect();
    let started = Instant::now();
    let cpu = thread::scope(|s| {
        let workers: Vec<_> = chunks.iter().map(|chunk| {
            s.spawn(move || {
                let mut c = postgres::Client::connect(conninfo, postgres::NoTls).unwrap_or_else(|e| panic!("connect: {e}"));
                let pid = c.query_one("SELECT pg_backend_pid()", &[]).ok().map(|row| row.get::<_, i32>(0).to_string());
                let before = pid.as_deref().and_then(cpu_secs);
                let sink = c.copy_in("COPY bench_narrow FROM STDIN (FORMAT binary)").unwrap_or_else(|e| panic!("copy: {e}"));
                let mut w = BinaryCopyInWriter::new(sink, &[Type::TIMESTAMPTZ, Type::TEXT, Type::TEXT, Type::TEXT, Type::FLOAT8]);
                for r in chunk.iter() {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(r.time.unix_micros() as u64);
                    for (ty, name, v) in narrow(r) {
                        let row: [&(dyn ToSql + Sync); 5] = [&t, &r.agent_id, &ty, &name, &v];
                        w.write(&row).unwrap_or_else(|e| panic!("copy row: {e}"));
                    }
                }
                w.finish().unwrap_or_else(|e| panic!("copy finish: {e}"));
                Some(pid.as_deref().and_then(cpu_secs)? - before?)
            })
        }).collect();
        total_cpu(workers.into_iter().map(|w| w.join().unwrap_or(None)))
    });
    Pass { secs: started.elapsed().as_secs_f64(), backend_cpu_secs: cpu }
}

/// Rounds of (agent path, raw COPY).
const ROUNDS: usize = 5;

/// The narrow-row reference on TimescaleDB: one row per sample in a hypertable of one-day
/// chunks with the index a per-series history needs (agent, series, time).
const SEED_HYPERTABLE: &str = "
DROP TABLE IF EXISTS bench_seed_metrics;
CREATE TABLE bench_seed_metrics (time timestamptz NOT NULL, agent_id text NOT NULL, metric_type text NOT NULL,
                                 metric_name text NOT NULL, value float8, labels jsonb);
SELECT create_hypertable('bench_seed_metrics', by_range('time', interval '1 day'));
CREATE INDEX ON bench_seed_metrics (agent_id, metric_type, metric_name, time DESC);";

/// All of a report's samples as narrow rows in one statement.
const SEED_INSERT_SQL: &str = "INSERT INTO bench_seed_metrics (time, agent_id, metric_type, metric_name, value) \
    SELECT $1::timestamptz, $2::text, t, n, v FROM unnest($3::text[], $4::text[], $5::float8[]) AS x(t, n, v)";

/// The same seven parameters as secumon.ingest, parsed by the same casts; nothing written.
const PARSE_ONLY_SQL: &str = "SELECT $1::text IS NOT NULL AND $2::timestamptz IS NOT NULL AND $3::text[] IS NOT NULL \
    AND $4::float8[] IS NOT NULL AND $5::jsonb IS NOT NULL AND $6::jsonb IS NOT NULL AND $7::jsonb IS NOT NULL";

/// secumon.ingest's INSERT statements alone (see BARE_ROWS_SQL), cut out of the installed
/// function's source so that they are the very statements ingest runs: the metric_samples
/// INSERT, and everything from the disks INSERT to the last array's, with the function's own
/// parameter names (the copy is named `ingest` too, in schema bench, so `ingest."time"` means
/// its parameter) and the agent's key and layout id passed in. Fails loudly if ingest's text no
/// longer has that shape.
const BARE_ROWS_FUNCTION: &str = r#"
CREATE SCHEMA IF NOT EXISTS bench;
DO $do$
DECLARE
    src text := (SELECT prosrc FROM pg_proc
                  WHERE oid = 'secumon.ingest(text, timestamptz, text[], float8[], jsonb, jsonb, jsonb)'::regprocedure);
    samples text := substring(src from '(INSERT INTO secumon\.metric_samples .*?ON CONFLICT DO NOTHING;)');
    arrays text := substring(src from '(IF disks IS NOT NULL THEN.*END IF;)\s*UPDATE secumon\.agents');
BEGIN
    IF samples IS NULL OR arrays IS NULL THEN
        RAISE EXCEPTION 'secumon.ingest no longer has the INSERT statements this benchmark cuts out of it';
    END IF;
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION bench.ingest(agent_id text, "time" timestamptz, agent_key integer, layout integer,
                                                vals float8[], disks jsonb, networks jsonb, processes jsonb)
        RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L$f$,
        format(E'DECLARE\n    a record;\nBEGIN\n    SELECT ingest.agent_key INTO a;\n    %s\n    %s\n    RETURN true;\nEND',
               samples, arrays));
END
$do$;
"#;

const BARE_ROWS_SQL: &str = "SELECT bench.ingest($1::text, $2::timestamptz, $8::integer, $9::integer, $4::float8[], \
    $5::jsonb, $6::jsonb, $7::jsonb) WHERE $3::text[] IS NOT NULL";

/// One more ingest pass with pg_stat_statements timing the statements inside secumon.ingest()
/// (None when pg_stat_statements is not preloaded). Returns (statement, mean us per report,
/// share of the top-level call's time) for the statements run at least once per report.
/// Writes one report over one connection.
type WriteReport = dyn Fn(&mut Db, &Report) + Sync;

fn profile_pass(conninfo: &str, run: &mut dyn FnMut(&WriteReport) -> Pass)
    -> Option<Vec<(String, f64, f64)>> {
    let mut c = postgres::Client::connect(conninfo, postgres::NoTls).ok()?;
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").ok()?;
    c.batch_execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET pg_stat_statements.track = all', current_database()); END $$; \
                     SELECT pg_stat_statements_reset()").ok()?;
    run(&|db, r| { db.ingest(r).unwrap_or_else(|e| panic!("ingest: {e}")); });
    c.batch_execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET pg_stat_statements.track', current_database()); END $$")
        .ok()?;
    let rows = c.query("SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time \
                          FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                         ORDER BY total_exec_time DESC", &[]).ok()?;
    let reports = rows.iter().filter(|r| r.get::<_, String>(0).starts_with("SELECT secumon.ingest("))
        .map(|r| r.get::<_, i64>(1)).max()? as f64;
    let total = rows.iter().find(|r| r.get::<_, String>(0).starts_with("SELECT secumon.ingest("))?.get::<_, f64>(2);
    Some(rows.iter().filter(|r| r.get::<_, i64>(1) as f64 >= reports * 0.99)
        .map(|r| {
            let q: String = r.get(0);
            let q = if q.chars().count() > 110 { format!("{}...", q.chars().take(107).collect::<String>()) } else { q };
            (q, r.get::<_, f64>(2) * 1000.0 / reports, 100.0 * r.get::<_, f64>(2) / total)
        }).collect())
}
