//! Alertmanager beside SecuMon: Debian's `prometheus-alertmanager` (installed with apt-get if
//! missing), run as a throwaway process on a free loopback port with a temporary storage
//! directory and a generated configuration, clustering off.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secumon_e2e::{free_port, sys};

const BINARY: &str = "prometheus-alertmanager";

/// Where each phase's alerts go (the alert's `phase` label picks the route).
pub struct Routes<'a> {
    pub latency: &'a str,
    pub throughput: &'a str,
    pub retry: &'a str,
}

pub struct Alertmanager {
    child: Child,
    dir: PathBuf,
    port: u16,
    pub version: String,
}

/// The binary, installed from Debian if missing (as bench/agent does for its peers).
fn binary() -> String {
    let found = |name: &str| Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if !found(BINARY) {
        eprintln!("installing prometheus-alertmanager from Debian ...");
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "prometheus-alertmanager"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .expect("expected to run apt-get");
        assert!(status.success(), "expected apt-get to install prometheus-alertmanager");
        // The package starts its service where an init system runs; the benchmark runs its own.
        let _ = Command::new("systemctl").args(["stop", "prometheus-alertmanager"]).stderr(Stdio::null()).status();
    }
    BINARY.to_string()
}

impl Alertmanager {
    /// `group_wait` 0 and `group_by: [id]` (every alert its own group, so its own notification),
    /// `group_interval` as given, `repeat_interval` 1 h; one webhook receiver per phase.
    pub fn start(routes: &Routes, group_interval: Duration) -> Alertmanager {
        let binary = binary();
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(if o.stdout.is_empty() { &o.stderr } else { &o.stdout }).lines().next().unwrap_or("").to_string())
            .unwrap_or_default();
        let version = version.split_whitespace().nth(2).map(|v| format!("Alertmanager {v}")).unwrap_or_else(|| "Alertmanager".into());
        let dir = sys::fresh_temp_dir("alertmanager");
        let receiver = |name: &str, url: &str| {
            format!("  - name: {name}\n    webhook_configs:\n      - url: '{url}'\n        send_resolved: false\n        max_alerts: 0\n")
        };
        let config = format!(
            "route:\n  receiver: latency\n  group_by: ['id']\n  group_wait: 0s\n  group_interval: {}s\n  repeat_interval: 1h\n  routes:\n    - matchers: ['phase=\"throughput\"']\n      receiver: throughput\n    - matchers: ['phase=\"retry\"']\n      receiver: retry\nreceivers:\n{}{}{}",
            group_interval.as_secs(),
            receiver("latency", routes.latency),
            receiver("throughput", routes.throughput),
            receiver("retry", routes.retry),
        );
        std::fs::write(dir.join("alertmanager.yml"), config).expect("expected to write alertmanager.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.join("alertmanager.log")).expect("expected to create the log file");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=") // no gossip: one instance, loopback only
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("expected to start prometheus-alertmanager");
        let am = Alertmanager { child, dir, port, version };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !am.request("GET", "/-/ready", "").is_ok_and(|(status, _)| status == 200) {
            assert!(Instant::now() < deadline, "expected Alertmanager to be ready within 30 s: {}", am.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    pub fn log(&self) -> String {
        sys::read_lossy(&self.dir.join("alertmanager.log"))
    }

    /// POSTs `alerts` (a JSON array) to /api/v2/alerts; panics unless it is accepted.
    pub fn post_alerts(&self, alerts: &str) {
        match self.request("POST", "/api/v2/alerts", alerts) {
            Ok((200, _)) => {}
            other => panic!("expected Alertmanager to accept the alerts, got {other:?}"),
        }
    }

    /// One HTTP/1.1 request on a fresh connection: (status, body).
    fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut rest = String::new();
        reader.read_to_string(&mut rest)?;
        Ok((status, rest))
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        sys::remove_dir(&self.dir);
    }
}

/// One alert for /api/v2/alerts: labels id (its own group), phase (its route), alertname,
/// severity; the same summary SecuMon's payload carries.
pub fn alert_json(id: &str, phase: &str) -> String {
    format!(
        r#"{{"labels":{{"alertname":"HighCPU","id":"{id}","phase":"{phase}","severity":"critical","instance":"web-1"}},"annotations":{{"summary":"CPU 97.5% > 90%"}}}}"#
    )
}

/// The `id` labels of the alerts in an Alertmanager webhook body.
pub fn ids_in(body: &[u8]) -> Vec<String> {
    let Ok(value) = secumon_e2e::serde_json::from_slice::<secumon_e2e::serde_json::Value>(body) else {
        return Vec::new();
    };
    value["alerts"]
        .as_array()
        .map(|alerts| alerts.iter().filter_map(|a| a["labels"]["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}
