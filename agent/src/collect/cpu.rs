//! `/proc/stat` and `/proc/loadavg`. CPU percentages come from the difference between two
//! readings of the cumulative jiffy counters.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Guest time is already counted in user/nice, so it is left out of the total.
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcStat {
    pub cpu: Option<CpuTimes>,
    /// Number of `cpuN` lines: the online CPUs.
    pub cores: usize,
    pub context_switches: Option<u64>,
    pub interrupts: Option<u64>,
    pub boot_time: Option<u64>,
}

pub fn parse_proc_stat(text: &str) -> ProcStat {
    let mut out = ProcStat::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(key) = it.next() else { continue };
        match key {
            "cpu" => {
                let v: Vec<u64> = it.take(8).map(|x| x.parse().unwrap_or(0)).collect();
                if v.len() >= 4 {
                    let g = |i: usize| v.get(i).copied().unwrap_or(0);
                    out.cpu = Some(CpuTimes {
                        user: g(0),
                        nice: g(1),
                        system: g(2),
                        idle: g(3),
                        iowait: g(4),
                        irq: g(5),
                        softirq: g(6),
                        steal: g(7),
                    });
                }
            }
            k if k.starts_with("cpu") && k[3..].bytes().all(|b| b.is_ascii_digit()) => {
                out.cores += 1
            }
            "ctxt" => out.context_switches = it.next().and_then(|x| x.parse().ok()),
            "intr" => out.interrupts = it.next().and_then(|x| x.parse().ok()),
            "btime" => out.boot_time = it.next().and_then(|x| x.parse().ok()),
            _ => {}
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuPercent {
    pub usage: f64,
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
}

/// Percentages over the time between two readings; `None` if no time passed.
/// Usage counts everything but idle and iowait (a CPU waiting on IO is free to run work).
pub fn percentages(prev: &CpuTimes, cur: &CpuTimes) -> Option<CpuPercent> {
    let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
    let user = d(prev.user, cur.user);
    let nice = d(prev.nice, cur.nice);
    let system = d(prev.system, cur.system);
    let idle = d(prev.idle, cur.idle);
    let iowait = d(prev.iowait, cur.iowait);
    let irq = d(prev.irq, cur.irq);
    let softirq = d(prev.softirq, cur.softirq);
    let steal = d(prev.steal, cur.steal);
    let total = user + nice + system + idle + iowait + irq + softirq + steal;
    if total <= 0.0 {
        return None;
    }
    let p = |x: f64| crate::report::percent(x / total * 100.0);
    Some(CpuPercent {
        usage: p(total - idle - iowait),
        user: p(user),
        nice: p(nice),
        system: p(system),
        idle: p(idle),
        iowait: p(iowait),
        irq: p(irq),
        softirq: p(softirq),
        steal: p(steal),
    })
}

/// The three load averages of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut it = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  30510 0 4186 26318 267 0 53 23 0 0
cpu0 14841 0 1783 13981 37 0 11 10 0 0
cpu1 15669 0 2403 12336 230 0 41 12 0 0
intr 1462898 27 0 0 0 0
ctxt 115315
btime 1764094000
processes 26442
procs_running 1
procs_blocked 0
softirq 1 2 3
";

    #[test]
    fn parses_proc_stat() {
        let s = parse_proc_stat(STAT);
        let c = s.cpu.unwrap();
        assert_eq!(
            (c.user, c.system, c.idle, c.iowait, c.softirq, c.steal),
            (30510, 4186, 26318, 267, 53, 23)
        );
        assert_eq!(s.cores, 2);
        assert_eq!(s.context_switches, Some(115315));
        assert_eq!(s.interrupts, Some(1462898));
        assert_eq!(s.boot_time, Some(1764094000));
    }

    #[test]
    fn parses_old_kernels_with_fewer_columns() {
        let s = parse_proc_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\n");
        assert_eq!(s.cpu.unwrap().total(), 10);
        assert_eq!(s.cores, 1);
        assert_eq!(s.context_switches, None);
    }

    #[test]
    fn percentages_from_deltas() {
        let a = CpuTimes {
            user: 100,
            system: 50,
            idle: 800,
            iowait: 50,
            ..Default::default()
        };
        let b = CpuTimes {
            user: 150,
            system: 70,
            idle: 900,
            iowait: 80,
            steal: 0,
            ..Default::default()
        };
        // deltas: user 50, system 20, idle 100, iowait 30 → total 200
        let p = percentages(&a, &b).unwrap();
        assert_eq!(p.user, 25.0);
        assert_eq!(p.system, 10.0);
        assert_eq!(p.idle, 50.0);
        assert_eq!(p.iowait, 15.0);
        assert_eq!(p.usage, 35.0);
        assert!(percentages(&a, &a).is_none());
    }

    #[test]
    fn counters_going_backwards_do_not_produce_negative_percentages() {
        let a = CpuTimes {
            user: 1000,
            idle: 1000,
            ..Default::default()
        };
        let b = CpuTimes {
            user: 10,
            idle: 1100,
            ..Default::default()
        };
        let p = percentages(&a, &b).unwrap();
        assert!((0.0..=100.0).contains(&p.usage) && p.idle == 100.0);
    }

    #[test]
    fn loadavg() {
        assert_eq!(
            parse_loadavg("0.60 0.82 0.39 1/83 10354\n"),
            Some((0.60, 0.82, 0.39))
        );
        assert_eq!(parse_loadavg("0.60"), None);
    }
}
