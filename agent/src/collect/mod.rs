//! Collection from `/proc` and `statvfs`: one [`Collector::collect`] call makes one
//! [`Report`]. Counters are sent as cumulative counters (rates are computed in SQL);
//! CPU percentages need two readings, so the collector keeps the previous one.
//!
//! Why not the `sysinfo` crate: docs/contracts.md, "Agent collectors".

pub mod cpu;
pub mod disk;
pub mod memory;
pub mod network;
pub mod process;
pub mod system;

use crate::config::{Config, DiskConfig, NetworkConfig};
use crate::report::{AgentInfo, Report};
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::time::Duration;

/// How far apart the two readings of a first report are.
pub const FIRST_SAMPLE_GAP: Duration = Duration::from_millis(250);

pub struct Collector {
    agent_id: String,
    labels: BTreeMap<String, String>,
    top_processes: usize,
    disks: DiskConfig,
    network: NetworkConfig,
    prev_cpu: Option<cpu::CpuTimes>,
    processes: process::ProcessSampler,
    // Reused read buffer: /proc files are read every interval.
    buf: Vec<u8>,
}

/// Reads a whole file into `buf`. /proc files claim size 0, so the size probing that
/// `std::fs::read` does (statx + lseek per file) is wasted: a plain read loop halves the
/// system calls of a collection.
pub fn read_file(path: &str, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut f = std::fs::File::open(path)?;
    let mut chunk = [0u8; 4096];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Collector {
    pub fn new(cfg: &Config) -> Collector {
        Collector {
            agent_id: cfg.agent_id.clone(),
            labels: cfg.labels.clone(),
            top_processes: cfg.top_processes,
            disks: cfg.disks.clone(),
            network: cfg.network.clone(),
            prev_cpu: None,
            processes: process::ProcessSampler::new(),
            buf: Vec::with_capacity(8192),
        }
    }

    /// Applies reloaded collection settings (labels, top processes, disk and interface
    /// filters). The agent_id is not taken — it changes only with a restart — and the CPU
    /// and process baselines are kept, so the next report still covers a whole interval
    /// instead of pausing for a new first sample.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.labels = cfg.labels.clone();
        self.top_processes = cfg.top_processes;
        self.disks = cfg.disks.clone();
        self.network = cfg.network.clone();
    }

    /// What `secumon.register_agent` needs.
    pub fn agent_info(&self) -> AgentInfo {
        AgentInfo {
            agent_id: self.agent_id.clone(),
            hostname: system::hostname(),
            os: system::os_description(),
            agent_version: crate::VERSION.to_string(),
            labels: self.labels.clone(),
        }
    }

    /// Reads a text file; invalid UTF-8 (possible in mount paths) is replaced, not fatal.
    fn read(&mut self, path: &str) -> Option<std::borrow::Cow<'_, str>> {
        match read_file(path, &mut self.buf) {
            Ok(()) => Some(String::from_utf8_lossy(&self.buf)),
            Err(e) => {
                crate::log_debug!("cannot read {path}: {e}");
                None
            }
        }
    }

    /// Collects one report. The first call takes a baseline and waits
    /// [`FIRST_SAMPLE_GAP`] so its CPU figures cover a real interval.
    /// Never fails: a source that cannot be read leaves its values unknown.
    pub fn collect(&mut self) -> Report {
        if self.prev_cpu.is_none() {
            self.prev_cpu = self
                .read("/proc/stat")
                .and_then(|t| cpu::parse_proc_stat(&t).cpu);
            self.processes.prime();
            crate::signals::sleep_interruptible(FIRST_SAMPLE_GAP);
        }
        let mut report = Report::new(self.agent_id.clone(), Timestamp::now());

        let stat = self
            .read("/proc/stat")
            .map(|t| cpu::parse_proc_stat(&t))
            .unwrap_or_default();
        let pct = match (self.prev_cpu, stat.cpu) {
            (Some(prev), Some(cur)) => cpu::percentages(&prev, &cur),
            _ => None,
        };
        if stat.cpu.is_some() {
            self.prev_cpu = stat.cpu;
        }
        let p = |f: fn(&cpu::CpuPercent) -> f64| pct.as_ref().map(f);
        report.set("cpu", "usage_percent", p(|c| c.usage));
        report.set("cpu", "user_percent", p(|c| c.user));
        report.set("cpu", "nice_percent", p(|c| c.nice));
        report.set("cpu", "system_percent", p(|c| c.system));
        report.set("cpu", "idle_percent", p(|c| c.idle));
        report.set("cpu", "iowait_percent", p(|c| c.iowait));
        report.set("cpu", "irq_percent", p(|c| c.irq));
        report.set("cpu", "softirq_percent", p(|c| c.softirq));
        report.set("cpu", "steal_percent", p(|c| c.steal));
        let load = self
            .read("/proc/loadavg")
            .and_then(|t| cpu::parse_loadavg(&t));
        report.set("cpu", "load_avg_1", load.map(|l| l.0));
        report.set("cpu", "load_avg_5", load.map(|l| l.1));
        report.set("cpu", "load_avg_15", load.map(|l| l.2));
        report.set(
            "cpu",
            "context_switches",
            stat.context_switches.map(|v| v as f64),
        );
        report.set("cpu", "interrupts", stat.interrupts.map(|v| v as f64));
        let cores = if stat.cores > 0 {
            stat.cores
        } else {
            online_cpus()
        };
        report.set("cpu", "cores", Some(cores as f64));

        let mem = self
            .read("/proc/meminfo")
            .map(|t| memory::parse_meminfo(&t))
            .unwrap_or_default();
        memory::add_series(&mut report, &mem);

        let uptime = self
            .read("/proc/uptime")
            .and_then(|t| system::parse_uptime(&t));
        report.set("system", "uptime_seconds", uptime);
        report.set("system", "boot_time", stat.boot_time.map(|v| v as f64));
        self.processes
            .collect(&mut report, self.top_processes, mem.total, cores);

        let mounts = self
            .read("/proc/self/mounts")
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let diskstats = self
            .read("/proc/diskstats")
            .map(|t| t.into_owned())
            .unwrap_or_default();
        report.disks = disk::collect(&self.disks, &mounts, &diskstats);

        let net = self
            .read("/proc/net/dev")
            .map(|t| t.into_owned())
            .unwrap_or_default();
        report.network = network::collect(&self.network, &net);
        report
    }
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}
