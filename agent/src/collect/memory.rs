//! `/proc/meminfo`.

use crate::report::{ratio_percent, Report};

/// Values in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: Option<u64>,
    pub free: Option<u64>,
    pub available: Option<u64>,
    pub buffers: Option<u64>,
    pub cached: Option<u64>,
    pub reclaimable_slab: Option<u64>,
    pub swap_total: Option<u64>,
    pub swap_free: Option<u64>,
}

pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let Some(Ok(n)) = it.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = if it.next() == Some("kB") {
            n.saturating_mul(1024)
        } else {
            n
        };
        let slot = match key {
            "MemTotal" => &mut m.total,
            "MemFree" => &mut m.free,
            "MemAvailable" => &mut m.available,
            "Buffers" => &mut m.buffers,
            "Cached" => &mut m.cached,
            "SReclaimable" => &mut m.reclaimable_slab,
            "SwapTotal" => &mut m.swap_total,
            "SwapFree" => &mut m.swap_free,
            _ => continue,
        };
        *slot = Some(bytes);
    }
    m
}

/// Adds the `memory.*` series. Used memory is what is not available (the kernel's own
/// estimate of memory that can be had without swapping), as `free` and psutil show it.
pub fn add_series(report: &mut Report, m: &MemInfo) {
    let f = |v: Option<u64>| v.map(|x| x as f64);
    // Kernels before 3.14 have no MemAvailable; estimate it the old way.
    let available = m
        .available
        .or_else(|| Some(m.free? + m.buffers.unwrap_or(0) + m.cached.unwrap_or(0)));
    let used = match (m.total, available) {
        (Some(t), Some(a)) => Some(t.saturating_sub(a)),
        _ => None,
    };
    let cached = m.cached.map(|c| c + m.reclaimable_slab.unwrap_or(0));
    let swap_used = match (m.swap_total, m.swap_free) {
        (Some(t), Some(f)) => Some(t.saturating_sub(f)),
        _ => None,
    };
    report.set("memory", "total_bytes", f(m.total));
    report.set("memory", "used_bytes", f(used));
    report.set("memory", "available_bytes", f(available));
    report.set("memory", "free_bytes", f(m.free));
    report.set("memory", "cached_bytes", f(cached));
    report.set("memory", "buffers_bytes", f(m.buffers));
    report.set(
        "memory",
        "usage_percent",
        used.zip(m.total)
            .and_then(|(u, t)| ratio_percent(u as f64, t as f64)),
    );
    report.set("memory", "swap_total_bytes", f(m.swap_total));
    report.set("memory", "swap_used_bytes", f(swap_used));
    report.set("memory", "swap_free_bytes", f(m.swap_free));
    // No swap configured means none of it is used.
    let swap_pct = match (swap_used, m.swap_total) {
        (Some(_), Some(0)) => Some(0.0),
        (Some(u), Some(t)) => ratio_percent(u as f64, t as f64),
        _ => None,
    };
    report.set("memory", "swap_usage_percent", swap_pct);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    const MEMINFO: &str = "MemTotal:       16310116 kB
MemFree:         1021560 kB
MemAvailable:   12233420 kB
Buffers:          412824 kB
Cached:         10235928 kB
SwapCached:            0 kB
Active:          6170584 kB
SReclaimable:     544248 kB
SwapTotal:       2097148 kB
SwapFree:        1048574 kB
HugePages_Total:       0
";

    #[test]
    fn parses_meminfo_in_bytes() {
        let m = parse_meminfo(MEMINFO);
        assert_eq!(m.total, Some(16310116 * 1024));
        assert_eq!(m.available, Some(12233420 * 1024));
        assert_eq!(m.swap_free, Some(1048574 * 1024));
    }

    #[test]
    fn memory_series() {
        let mut r = Report::new("a", Timestamp::from_unix_micros(0));
        add_series(&mut r, &parse_meminfo(MEMINFO));
        assert_eq!(
            r.get("memory.used_bytes"),
            Some(((16310116u64 - 12233420) * 1024) as f64)
        );
        assert_eq!(r.get("memory.usage_percent"), Some(24.99));
        assert_eq!(
            r.get("memory.cached_bytes"),
            Some(((10235928u64 + 544248) * 1024) as f64)
        );
        assert_eq!(r.get("memory.swap_usage_percent"), Some(50.0));
        assert_eq!(r.series.len(), 11);
    }

    #[test]
    fn no_swap_is_zero_percent() {
        let mut r = Report::new("a", Timestamp::from_unix_micros(0));
        add_series(
            &mut r,
            &parse_meminfo(
                "MemTotal: 100 kB\nMemAvailable: 50 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
            ),
        );
        assert_eq!(r.get("memory.swap_usage_percent"), Some(0.0));
        assert_eq!(r.get("memory.usage_percent"), Some(50.0));
    }
}
