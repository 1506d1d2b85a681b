//! Ingest benchmark: N simulated agents push realistic reports through exactly the agent's
//! write path (`secumon_agent::db::Db::ingest`, one call and one transaction per report), then
//! the same samples go by raw binary COPY of narrow rows (time, agent_id, metric_type,
//! metric_name, value) into an unindexed, unpartitioned table. Prints samples/s of both and
//! the ratio.
//!
//! Usage: secumon-bench-ingest CONNINFO [agents=10000] [reports_per_agent=3] [connections=4]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use secumon_agent::db::Db;
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
fn report(agent: usize, step: usize, rng: &mut Rng) -> Report {
    let t0 = 1_764_000_000_000_000i64; // a fixed instant, so runs are comparable
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
    let agents = arg(2, 10_000);
    let per_agent = arg(3, 3);
    let connections = arg(4, 4).max(1);

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let reports: Vec<Report> = (0..per_agent).flat_map(|s| (0..agents).map(move |a| (a, s))).map(|(a, s)| report(a, s, &mut rng)).collect();
    let samples: usize = reports.iter().map(|r| narrow(r).len()).sum();
    println!("{agents} agents x {per_agent} reports = {} reports, {samples} samples ({} per report), {connections} connections",
             reports.len(), samples / reports.len().max(1));

    // Register every simulated agent, as each agent does on start.
    {
        let mut db = Db::connect(&conninfo).unwrap_or_else(|e| panic!("connect: {e}"));
        for a in 0..agents {
            let info = AgentInfo { agent_id: format!("bench-{a:05}"), hostname: format!("bench-{a:05}"), os: "Linux".into(),
                                   agent_version: "bench".into(), labels: BTreeMap::new() };
            db.register(&info).unwrap_or_else(|e| panic!("register: {e}"));
        }
    }

    // 1. The agent's write path.
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..connections {
            s.spawn(|| {
                let mut db = Db::connect(&conninfo).unwrap_or_else(|e| panic!("connect: {e}"));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(r) = reports.get(i) else { break };
                    db.ingest(r).unwrap_or_else(|e| panic!("ingest: {e}"));
                }
            });
        }
    });
    let agent_secs = started.elapsed().as_secs_f64();
    let agent_rate = samples as f64 / agent_secs;

    // 2. Raw binary COPY of the same samples as narrow rows into an unindexed table.
    let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap_or_else(|e| panic!("connect: {e}"));
    client.batch_execute("DROP TABLE IF EXISTS bench_narrow; \
                          CREATE TABLE bench_narrow (time timestamptz, agent_id text, metric_type text, metric_name text, value float8)")
        .unwrap_or_else(|e| panic!("create: {e}"));
    let chunks: Vec<&[Report]> = reports.chunks(reports.len().div_ceil(connections)).collect();
    let started = Instant::now();
    thread::scope(|s| {
        for chunk in &chunks {
            let conninfo = conninfo.clone();
            s.spawn(move || {
                let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap_or_else(|e| panic!("connect: {e}"));
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
            });
        }
    });
    let copy_secs = started.elapsed().as_secs_f64();
    let copy_rate = samples as f64 / copy_secs;

    let needed = 10_000.0 / 10.0 * (samples as f64 / reports.len() as f64);
    println!();
    println!("agent write path (secumon.ingest, 1 tx/report): {:>10.0} samples/s  {:>8.0} reports/s  ({agent_secs:.2} s)", agent_rate, reports.len() as f64 / agent_secs);
    println!("raw binary COPY, narrow rows, unindexed table:   {:>10.0} samples/s  ({copy_secs:.2} s)", copy_rate);
    println!("ratio: {:.1}% of raw COPY (target >= 70%; TimescaleDB hypertable with index: 11-20%)", 100.0 * agent_rate / copy_rate);
    println!("10,000 agents at a 10 s interval need {:.0} samples/s ({} reports/s): headroom {:.1}x",
             needed, 1000, agent_rate / needed);
}
