//! Synthetic agent reports sent through the documented write path
//! (`secumon.register_agent` / `secumon.ingest`, see docs/ingest-protocol.md).

use postgres::Client;
use serde_json::{json, Value};

/// One report as `secumon.ingest` takes it.
#[derive(Clone, Debug)]
pub struct Report {
    pub agent_id: String,
    /// Collection time, any text PostgreSQL accepts as timestamptz, e.g. `2001-01-01 12:00:00+00`.
    pub time: String,
    /// `("<metric_type>.<metric_name>", value)`.
    pub series: Vec<(String, Option<f64>)>,
    pub disks: Option<Value>,
    pub networks: Option<Value>,
    pub processes: Option<Value>,
}

impl Report {
    /// An empty report (no series, no disks, interfaces or processes).
    pub fn new(agent_id: &str, time: &str) -> Report {
        Report {
            agent_id: agent_id.to_string(),
            time: time.to_string(),
            series: Vec::new(),
            disks: None,
            networks: None,
            processes: None,
        }
    }

    /// A plausible full report: cpu, memory and system series, one disk, one interface and two
    /// processes.
    pub fn sample(agent_id: &str, time: &str) -> Report {
        let series = [
            ("cpu.usage_percent", 12.5),
            ("cpu.user_percent", 8.0),
            ("cpu.system_percent", 4.5),
            ("cpu.idle_percent", 87.5),
            ("cpu.load_avg_1", 0.42),
            ("cpu.load_avg_5", 0.31),
            ("cpu.load_avg_15", 0.2),
            ("cpu.context_switches", 123_456.0),
            ("cpu.cores", 2.0),
            ("memory.usage_percent", 41.0),
            ("memory.total_bytes", 8_589_934_592.0),
            ("memory.used_bytes", 3_521_873_182.0),
            ("memory.available_bytes", 5_068_061_410.0),
            ("system.uptime_seconds", 86_400.0),
            ("system.processes_total", 120.0),
        ];
        Report {
            series: series
                .iter()
                .map(|(n, v)| (n.to_string(), Some(*v)))
                .collect(),
            disks: Some(json!([{
                "device": "/dev/vda1", "mountpoint": "/", "fs_type": "ext4",
                "total_bytes": 107_374_182_400u64, "used_bytes": 42_949_672_960u64,
                "free_bytes": 64_424_509_440u64, "usage_percent": 40.0,
                "inodes_total": 6_553_600, "inodes_used": 655_360, "inodes_usage_percent": 10.0,
                "read_bytes": 1_000_000, "write_bytes": 2_000_000, "read_ops": 100, "write_ops": 200
            }])),
            networks: Some(json!([{
                "interface": "eth0", "bytes_sent": 5_000_000, "bytes_recv": 9_000_000,
                "packets_sent": 5_000, "packets_recv": 9_000, "errors_in": 0, "errors_out": 0,
                "drops_in": 0, "drops_out": 0
            }])),
            processes: Some(json!([
                {"pid": 1, "name": "systemd", "command": "/sbin/init", "user": "root",
                 "cpu_percent": 0.1, "memory_bytes": 12_000_000, "memory_percent": 0.15,
                 "status": "sleeping"},
                {"pid": 4242, "name": "postgres", "command": "postgres -D /data", "user": "postgres",
                 "cpu_percent": 3.5, "memory_bytes": 150_000_000, "memory_percent": 1.8,
                 "status": "running"}
            ])),
            ..Report::new(agent_id, time)
        }
    }

    pub fn with_series(mut self, name: &str, value: Option<f64>) -> Self {
        self.series.push((name.to_string(), value));
        self
    }

    /// Calls `secumon.ingest`; `Ok(true)` = stored, `Ok(false)` = already stored.
    pub fn ingest(&self, client: &mut Client) -> Result<bool, postgres::Error> {
        let names: Vec<&str> = self.series.iter().map(|(n, _)| n.as_str()).collect();
        let values: Vec<Option<f64>> = self.series.iter().map(|(_, v)| *v).collect();
        let json_text = |v: &Option<Value>| v.as_ref().map(Value::to_string);
        let row = client.query_one(
            "SELECT secumon.ingest($1::text, $2::text::timestamptz, $3::text[], $4::float8[], \
             $5::text::jsonb, $6::text::jsonb, $7::text::jsonb)",
            &[
                &self.agent_id,
                &self.time,
                &names,
                &values,
                &json_text(&self.disks),
                &json_text(&self.networks),
                &json_text(&self.processes),
            ],
        )?;
        Ok(row.get(0))
    }
}

/// `secumon.register_agent(agent_id, hostname = agent_id, os = 'e2e', version = 'e2e', labels = {})`.
pub fn register_agent(client: &mut Client, agent_id: &str) -> Result<(), postgres::Error> {
    client.execute(
        "SELECT secumon.register_agent($1::text, $2::text, $3::text, $4::text, $5::text::jsonb)",
        &[&agent_id, &agent_id, &"e2e test host", &"e2e", &"{}"],
    )?;
    Ok(())
}
