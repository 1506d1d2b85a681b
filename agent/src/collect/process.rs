//! Processes from `/proc/[pid]/stat`: state totals for `system.*` and the top N by CPU
//! and by memory. One pass over /proc per collection; command lines and owners are read
//! only for the processes that make it into the report.

use crate::report::{percent, ratio_percent, Process, Report};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Instant, SystemTime};

const COMMAND_MAX_CHARS: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidStat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub num_threads: u64,
    /// Start time after boot in ticks; tells a reused pid from the old process.
    pub start_time: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/[pid]/stat`. The command name sits in parentheses and may itself
/// contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 of proc(5).
    let field = |n: usize| {
        rest.get(n - 3)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v.max(0) as u64)
    };
    Some(PidStat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        cpu_ticks: field(14)? + field(15)?,
        num_threads: field(20)?,
        start_time: field(22)?,
        rss_pages: field(24)?,
    })
}

pub fn status_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk-sleep",
        'Z' => "zombie",
        'T' | 't' => "stopped",
        'I' | 'P' => "idle",
        'X' | 'x' => "dead",
        _ => "unknown",
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub total: u64,
    pub running: u64,
    /// Interruptible and uninterruptible (D) sleep, as `top` counts them.
    pub sleeping: u64,
    pub idle: u64,
    pub stopped: u64,
    pub zombie: u64,
    pub threads: u64,
}

pub fn count_states(procs: &[PidStat]) -> StateCounts {
    let mut c = StateCounts::default();
    for p in procs {
        c.total += 1;
        c.threads += p.num_threads;
        match status_name(p.state) {
            "running" => c.running += 1,
            "sleeping" | "disk-sleep" => c.sleeping += 1,
            "idle" => c.idle += 1,
            "stopped" => c.stopped += 1,
            "zombie" => c.zombie += 1,
            _ => {}
        }
    }
    c
}

/// Indices of the top `n` by CPU delta (only processes that used CPU) and the top `n` by
/// RSS, deduplicated, ordered by CPU then memory.
pub fn select_top(procs: &[PidStat], cpu_deltas: &[u64], n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let mut by_cpu: Vec<usize> = (0..procs.len()).filter(|&i| cpu_deltas[i] > 0).collect();
    by_cpu.sort_by(|&a, &b| {
        cpu_deltas[b]
            .cmp(&cpu_deltas[a])
            .then(procs[a].pid.cmp(&procs[b].pid))
    });
    by_cpu.truncate(n);
    let mut by_mem: Vec<usize> = (0..procs.len())
        .filter(|&i| procs[i].rss_pages > 0)
        .collect();
    by_mem.sort_by(|&a, &b| {
        procs[b]
            .rss_pages
            .cmp(&procs[a].rss_pages)
            .then(procs[a].pid.cmp(&procs[b].pid))
    });
    by_mem.truncate(n);
    let mut out = by_cpu;
    for i in by_mem {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Joins a NUL-separated `/proc/[pid]/cmdline`; kernel threads (empty) become `[comm]`.
pub fn format_command(raw: &[u8], comm: &str) -> String {
    let joined: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    let text = String::from_utf8_lossy(&joined);
    let text = text.trim_end();
    if text.is_empty() {
        format!("[{comm}]")
    } else {
        text.chars().take(COMMAND_MAX_CHARS).collect()
    }
}

/// `uid → name` from /etc/passwd (not NSS: loading NSS modules would cost more memory
/// than the whole agent), reloaded when the file changes.
#[derive(Default)]
pub struct UserNames {
    names: HashMap<u32, String>,
    loaded_mtime: Option<SystemTime>,
    loaded: bool,
}

pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            let uid = it.nth(1)?.parse().ok()?;
            (!name.is_empty()).then(|| (uid, name.to_string()))
        })
        .collect()
}

impl UserNames {
    const PASSWD: &'static str = "/etc/passwd";

    fn mtime() -> Option<SystemTime> {
        std::fs::metadata(Self::PASSWD)
            .and_then(|m| m.modified())
            .ok()
    }

    fn reload(&mut self) {
        self.loaded = true;
        self.loaded_mtime = Self::mtime();
        self.names = std::fs::read_to_string(Self::PASSWD)
            .map(|t| parse_passwd(&t))
            .unwrap_or_default();
    }

    /// The user name, or the numeric uid when it has none.
    pub fn name(&mut self, uid: u32) -> String {
        if !self.loaded {
            self.reload();
        }
        if let Some(n) = self.names.get(&uid) {
            return n.clone();
        }
        if Self::mtime() != self.loaded_mtime {
            self.reload();
            if let Some(n) = self.names.get(&uid) {
                return n.clone();
            }
        }
        uid.to_string()
    }
}

/// Keeps the previous scan so CPU use can be computed per interval.
pub struct ProcessSampler {
    prev: HashMap<u32, (u64, u64)>, // pid → (start_time, cpu_ticks)
    prev_at: Option<Instant>,
    users: UserNames,
    clk_tck: f64,
    page_size: u64,
    buf: Vec<u8>,
}

impl Default for ProcessSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessSampler {
    pub fn new() -> ProcessSampler {
        // SAFETY: sysconf has no preconditions.
        let (tck, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        ProcessSampler {
            prev: HashMap::new(),
            prev_at: None,
            users: UserNames::default(),
            clk_tck: if tck > 0 { tck as f64 } else { 100.0 },
            page_size: if page > 0 { page as u64 } else { 4096 },
            buf: Vec::with_capacity(1024),
        }
    }

    /// Reads `/proc/[pid]/stat` of every process; processes that exit meanwhile are skipped.
    pub fn scan(&mut self) -> Vec<PidStat> {
        let mut out = Vec::with_capacity(self.prev.len() + 16);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        let mut path = String::with_capacity(32);
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            path.clear();
            path.push_str("/proc/");
            path.push_str(pid);
            path.push_str("/stat");
            if super::read_file(&path, &mut self.buf).is_ok() {
                // A command name may hold any bytes; the parser only needs the numbers.
                if let Some(p) = parse_pid_stat(&String::from_utf8_lossy(&self.buf)) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Records a baseline so the next [`collect`](Self::collect) has CPU deltas.
    pub fn prime(&mut self) {
        let procs = self.scan();
        self.remember(&procs, Instant::now());
    }

    fn remember(&mut self, procs: &[PidStat], at: Instant) {
        self.prev = procs
            .iter()
            .map(|p| (p.pid, (p.start_time, p.cpu_ticks)))
            .collect();
        self.prev_at = Some(at);
    }

    /// Adds `system.processes_*`/`threads_total` and the top processes to `report`.
    pub fn collect(
        &mut self,
        report: &mut Report,
        top_n: usize,
        mem_total: Option<u64>,
        cores: usize,
    ) {
        let procs = self.scan();
        let now = Instant::now();
        let counts = count_states(&procs);
        let f = |v: u64| Some(v as f64);
        report.set("system", "processes_total", f(counts.total));
        report.set("system", "processes_running", f(counts.running));
        report.set("system", "processes_sleeping", f(counts.sleeping));
        report.set("system", "processes_idle", f(counts.idle));
        report.set("system", "processes_stopped", f(counts.stopped));
        report.set("system", "processes_zombie", f(counts.zombie));
        report.set("system", "threads_total", f(counts.threads));

        let elapsed = self
            .prev_at
            .map(|t| now.duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        let deltas: Vec<u64> = procs
            .iter()
            .map(|p| match self.prev.get(&p.pid) {
                Some(&(start, ticks)) if start == p.start_time => p.cpu_ticks.saturating_sub(ticks),
                // Started since the last scan: all its CPU time falls in this interval.
                _ if self.prev_at.is_some() => p.cpu_ticks,
                _ => 0,
            })
            .collect();
        let capacity = elapsed * self.clk_tck * cores.max(1) as f64;
        for i in select_top(&procs, &deltas, top_n) {
            let p = &procs[i];
            let memory_bytes = p.rss_pages.saturating_mul(self.page_size);
            let proc_dir = format!("/proc/{}", p.pid);
            let mut cmdline = Vec::new();
            let _ = super::read_file(&format!("{proc_dir}/cmdline"), &mut cmdline);
            let user = match std::fs::metadata(&proc_dir) {
                Ok(m) => self.users.name(m.uid()),
                Err(_) => String::new(),
            };
            report.processes.push(Process {
                pid: p.pid,
                name: p.comm.replace('\0', ""),
                command: format_command(&cmdline, &p.comm).replace('\0', ""),
                user,
                cpu_percent: if capacity > 0.0 {
                    percent(deltas[i] as f64 / capacity * 100.0)
                } else {
                    0.0
                },
                memory_bytes,
                memory_percent: mem_total
                    .and_then(|t| ratio_percent(memory_bytes as f64, t as f64))
                    .unwrap_or(0.0),
                status: status_name(p.state).to_string(),
            });
        }
        self.remember(&procs, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 1453 0 0 0 150 50 0 0 20 0 3 0 98765 10485760 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn parses_pid_stat_with_parentheses_in_the_name() {
        let p = parse_pid_stat(STAT).unwrap();
        assert_eq!(p.pid, 1234);
        assert_eq!(p.comm, "my (weird) proc");
        assert_eq!(p.state, 'S');
        assert_eq!(p.cpu_ticks, 200);
        assert_eq!(p.num_threads, 3);
        assert_eq!(p.start_time, 98765);
        assert_eq!(p.rss_pages, 2048);
        assert!(parse_pid_stat("1234 (truncated) S 1 2").is_none());
    }

    #[test]
    fn states_map_to_names_and_totals() {
        assert_eq!(status_name('R'), "running");
        assert_eq!(status_name('D'), "disk-sleep");
        assert_eq!(status_name('Z'), "zombie");
        assert_eq!(status_name('T'), "stopped");
        assert_eq!(status_name('I'), "idle");
        let mk = |state, threads| PidStat {
            pid: 1,
            comm: "x".into(),
            state,
            cpu_ticks: 0,
            num_threads: threads,
            start_time: 0,
            rss_pages: 0,
        };
        let c = count_states(&[
            mk('R', 2),
            mk('S', 1),
            mk('D', 1),
            mk('I', 1),
            mk('Z', 1),
            mk('T', 1),
        ]);
        assert_eq!(
            c,
            StateCounts {
                total: 6,
                running: 1,
                sleeping: 2,
                idle: 1,
                stopped: 1,
                zombie: 1,
                threads: 7
            }
        );
    }

    #[test]
    fn top_selection_is_a_deduplicated_union() {
        let mk = |pid, rss| PidStat {
            pid,
            comm: "x".into(),
            state: 'S',
            cpu_ticks: 0,
            num_threads: 1,
            start_time: 0,
            rss_pages: rss,
        };
        let procs = vec![mk(1, 10), mk(2, 500), mk(3, 20), mk(4, 400), mk(5, 0)];
        let cpu = vec![90, 0, 50, 10, 70];
        let top: Vec<u32> = select_top(&procs, &cpu, 2)
            .into_iter()
            .map(|i| procs[i].pid)
            .collect();
        assert_eq!(top, vec![1, 5, 2, 4]);
        let top: Vec<u32> = select_top(&procs, &cpu, 3)
            .into_iter()
            .map(|i| procs[i].pid)
            .collect();
        assert_eq!(top, vec![1, 5, 3, 2, 4]);
        assert!(select_top(&procs, &cpu, 0).is_empty());
    }

    #[test]
    fn commands_are_joined_and_cut() {
        assert_eq!(
            format_command(b"/usr/bin/postgres\0-D\0/var/lib/pg\0", "postgres"),
            "/usr/bin/postgres -D /var/lib/pg"
        );
        assert_eq!(format_command(b"", "kworker/0:1"), "[kworker/0:1]");
        let long = vec![b'a'; 1000];
        assert_eq!(format_command(&long, "a").chars().count(), 256);
    }

    #[test]
    fn passwd_parsing() {
        let m = parse_passwd("root:x:0:0:root:/root:/bin/bash\n# comment\npostgres:x:104:110::/var/lib/postgresql:/bin/bash\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&104).map(String::as_str), Some("postgres"));
        assert_eq!(m.len(), 2);
    }
}
