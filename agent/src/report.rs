//! What one collection produces, in the shape `secumon.ingest` takes
//! (docs/ingest-protocol.md). It is also the spool's on-disk format (JSON), so adding a
//! field needs `#[serde(default)]` to keep replaying reports spooled by older agents.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Whether `key` is a series of an input (`custom.*` from scrapes and commands, `probe.*`
/// from probes) rather than a host series.
pub fn is_input_series(key: &str) -> bool {
    key.starts_with("custom.") || key.starts_with("probe.")
}

/// One report = one `secumon.ingest` call = one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub agent_id: String,
    /// Collection time; with `agent_id` the idempotency key of `ingest`.
    pub time: Timestamp,
    /// `"<metric_type>.<metric_name>"` → value; `None` where the value is unknown.
    pub series: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub network: Vec<NetworkInterface>,
    #[serde(default)]
    pub processes: Vec<Process>,
}

/// One mounted filesystem. Byte/op counters are cumulative since boot; `None` when the
/// device has no block-device statistics (network filesystems, overlays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub device: String,
    pub mountpoint: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// Space available to unprivileged users (`f_bavail`), as `df` shows it.
    pub free_bytes: u64,
    /// `used / (used + free)`, like `df`: reserved blocks do not count as free.
    pub usage_percent: Option<f64>,
    pub inodes_total: Option<u64>,
    pub inodes_used: Option<u64>,
    pub inodes_usage_percent: Option<f64>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    pub read_ops: Option<u64>,
    pub write_ops: Option<u64>,
}

/// One network interface; cumulative counters since boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub interface: String,
    pub bytes_sent: u64,
    pub bytes_recv: u64,
    pub packets_sent: u64,
    pub packets_recv: u64,
    pub errors_in: u64,
    pub errors_out: u64,
    pub drops_in: u64,
    pub drops_out: u64,
}

/// One process among the top N by CPU or by memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    /// Command line, arguments joined by spaces, cut to 256 characters; `[name]` for
    /// kernel threads, like `ps`.
    pub command: String,
    pub user: String,
    /// Share of the whole machine's CPU time over the last interval (0–100), so a
    /// process busy on every core of a 4-core host shows 100, not 400.
    pub cpu_percent: f64,
    /// Resident set size.
    pub memory_bytes: u64,
    pub memory_percent: f64,
    /// running, sleeping, disk-sleep, zombie, stopped, idle (or `unknown`).
    pub status: String,
}

/// What `secumon.register_agent` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub agent_id: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub labels: BTreeMap<String, String>,
}

impl Report {
    pub fn new(agent_id: impl Into<String>, time: Timestamp) -> Report {
        Report {
            agent_id: agent_id.into(),
            time,
            series: BTreeMap::new(),
            disks: Vec::new(),
            network: Vec::new(),
            processes: Vec::new(),
        }
    }

    /// Sets `"<metric_type>.<name>"`; non-finite values are stored as unknown (`None`),
    /// since JSON and the ingest contract have no NaN.
    pub fn set(&mut self, metric_type: &str, name: &str, value: Option<f64>) {
        let value = value.filter(|v| v.is_finite());
        self.series.insert(format!("{metric_type}.{name}"), value);
    }

    pub fn get(&self, series: &str) -> Option<f64> {
        self.series.get(series).copied().flatten()
    }

    /// Rows this report turns into: one per series, disk, interface and process.
    pub fn row_count(&self) -> usize {
        self.series.len() + self.disks.len() + self.network.len() + self.processes.len()
    }

    /// This report without the input series outside `accepted` (the input keys of reports
    /// the database stored before); host series always stay. Also returns how many keys
    /// were left out and how many of them had a value.
    pub fn keeping_input_series(&self, accepted: &BTreeSet<String>) -> (Report, usize, usize) {
        let mut kept = self.clone();
        let (mut keys, mut values) = (0, 0);
        kept.series.retain(|key, value| {
            let keep = !is_input_series(key) || accepted.contains(key);
            if !keep {
                keys += 1;
                values += usize::from(value.is_some());
            }
            keep
        });
        (kept, keys, values)
    }

    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &[u8]) -> Result<Report, serde_json::Error> {
        serde_json::from_slice(text)
    }
}

/// Percentages are rounded to 2 decimals (finer digits are noise and cost storage) and
/// kept within 0–100.
pub fn percent(value: f64) -> f64 {
    if !value.is_finite() {
        return 0.0;
    }
    (value.clamp(0.0, 100.0) * 100.0).round() / 100.0
}

/// `part / whole` as a percentage, `None` when `whole` is zero.
pub fn ratio_percent(part: f64, whole: f64) -> Option<f64> {
    if whole > 0.0 {
        Some(percent(part / whole * 100.0))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn sample() -> Report {
        let mut r = Report::new("web-1", Timestamp::from_unix_micros(1_764_096_480_000_000));
        r.set("cpu", "usage_percent", Some(12.5));
        r.set("cpu", "steal_percent", None);
        r.set("memory", "total_bytes", Some(f64::NAN));
        r.disks.push(Disk {
            device: "/dev/vda".into(),
            mountpoint: "/".into(),
            fs_type: "ext4".into(),
            total_bytes: 100,
            used_bytes: 40,
            free_bytes: 50,
            usage_percent: Some(44.44),
            inodes_total: Some(10),
            inodes_used: Some(1),
            inodes_usage_percent: Some(10.0),
            read_bytes: Some(512),
            write_bytes: None,
            read_ops: Some(1),
            write_ops: None,
        });
        r.network.push(NetworkInterface {
            interface: "eth0".into(),
            bytes_sent: 1,
            bytes_recv: 2,
            packets_sent: 3,
            packets_recv: 4,
            errors_in: 0,
            errors_out: 0,
            drops_in: 0,
            drops_out: 0,
        });
        r.processes.push(Process {
            pid: 42,
            name: "postgres".into(),
            command: "postgres -D /var/lib/postgresql".into(),
            user: "postgres".into(),
            cpu_percent: 1.25,
            memory_bytes: 4096,
            memory_percent: 0.01,
            status: "sleeping".into(),
        });
        r
    }

    #[test]
    fn json_shape_matches_the_ingest_contract() {
        let v: Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["agent_id"], "web-1");
        assert_eq!(v["time"], "2025-11-25T18:48:00.000000Z");
        assert_eq!(v["series"]["cpu.usage_percent"], 12.5);
        assert!(v["series"]["cpu.steal_percent"].is_null());
        assert!(
            v["series"]["memory.total_bytes"].is_null(),
            "NaN must become null"
        );
        let keys = |o: &Value| {
            let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let mut disk_keys = vec![
            "device",
            "mountpoint",
            "fs_type",
            "total_bytes",
            "used_bytes",
            "free_bytes",
            "usage_percent",
            "inodes_total",
            "inodes_used",
            "inodes_usage_percent",
            "read_bytes",
            "write_bytes",
            "read_ops",
            "write_ops",
        ];
        disk_keys.sort();
        assert_eq!(keys(&v["disks"][0]), disk_keys);
        let mut net_keys = vec![
            "interface",
            "bytes_sent",
            "bytes_recv",
            "packets_sent",
            "packets_recv",
            "errors_in",
            "errors_out",
            "drops_in",
            "drops_out",
        ];
        net_keys.sort();
        assert_eq!(keys(&v["network"][0]), net_keys);
        let mut proc_keys = vec![
            "pid",
            "name",
            "command",
            "user",
            "cpu_percent",
            "memory_bytes",
            "memory_percent",
            "status",
        ];
        proc_keys.sort();
        assert_eq!(keys(&v["processes"][0]), proc_keys);
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        assert_eq!(Report::from_json(r.to_json().as_bytes()).unwrap(), r);
        assert_eq!(r.row_count(), 3 + 1 + 1 + 1);
    }

    #[test]
    fn only_accepted_input_series_are_kept_and_host_series_always() {
        let mut r = sample();
        r.series.insert("custom.old".into(), Some(1.0));
        r.series.insert("custom.new".into(), Some(2.0));
        r.series.insert("probe.up{probe=\"tcp\"}".into(), None);
        let accepted: BTreeSet<String> = ["custom.old".to_string()].into_iter().collect();
        let (kept, keys, values) = r.keeping_input_series(&accepted);
        assert_eq!((keys, values), (2, 1));
        assert_eq!(kept.get("custom.old"), Some(1.0));
        assert!(!kept.series.contains_key("custom.new"));
        assert_eq!(kept.get("cpu.usage_percent"), Some(12.5));
        assert_eq!(kept.series.len(), 4);
        assert!(is_input_series("probe.up") && !is_input_series("cpu.usage_percent"));
    }

    #[test]
    fn percentages_stay_within_bounds() {
        assert_eq!(percent(123.0), 100.0);
        assert_eq!(percent(-1.0), 0.0);
        assert_eq!(percent(f64::NAN), 0.0);
        assert_eq!(percent(33.33333), 33.33);
        assert_eq!(ratio_percent(1.0, 0.0), None);
        assert_eq!(ratio_percent(1.0, 3.0), Some(33.33));
    }
}
