//! The real agent's inputs end to end (docs/agent-inputs.md): Prometheus scrapes of local
//! HTTP servers, commands (`exec`) that print metrics, hang or print garbage, HTTP(S), TCP and
//! ICMP probes, alert rules with label selectors firing and resolving on what they produce,
//! and a label explosion past `secumon.max_series_per_agent`. Loopback only.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use secumon_e2e::receivers::{python, HttpReceiver, Reply};
use secumon_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

/// The Prometheus text of the application scraped in [`scrapes_and_commands_arrive_as_custom_series`]:
/// labels, counters with and without `_total`, a gauge, a histogram, and seven lines the agent
/// must skip and count (garbage, NaN, a non-numeric value, an invalid metric name, an invalid
/// label name, a reserved label name, a repeated label).
const APP_METRICS: &str = r#"# HELP app_requests Requests served.
# TYPE app_requests counter
app_requests{path="/api",code="200"} 10
# TYPE app_errors counter
app_errors_total{path="/api"} 3
# HELP app_queue_depth Messages waiting.
# TYPE app_queue_depth gauge
app_queue_depth{queue="mail"} 7
app_queue_depth{queue="sms",team="api"} 2 1700000000000
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le="0.1"} 5
app_latency_seconds_bucket{le="0.5"} 8
app_latency_seconds_bucket{le="+Inf"} 9
app_latency_seconds_sum 2.5
app_latency_seconds_count 9
this is not a metric line
app_temperature NaN
app_mood{x="1"} happy
1bad_name 1
app_bad_label{1x="a"} 1
app_reserved{__meta="a"} 1
app_twice{a="1",a="2"} 1
"#;

/// Lines of [`APP_METRICS`] that are not valid samples.
const APP_INVALID_LINES: f64 = 7.0;

/// The value of series `series` (`custom.scrape.up`, `probe.up`, …) with exactly `labels` in
/// agent `agent`'s newest report that has one.
fn value(cluster: &Cluster, agent: &str, series: &str, labels: serde_json::Value) -> Option<f64> {
    let (metric_type, metric_name) = series
        .split_once('.')
        .unwrap_or_else(|| panic!("a series name with a type: {series}"));
    cluster
        .client()
        .query_opt(
            "SELECT value FROM secumon.metrics
              WHERE agent_id = $1 AND metric_type = $2 AND metric_name = $3 AND labels = $4 AND value IS NOT NULL
              ORDER BY time DESC LIMIT 1",
            &[&agent, &metric_type, &metric_name, &labels],
        )
        .unwrap_or_else(|e| panic!("expected to read {series}: {}", error_text(&e)))
        .map(|row| row.get(0))
}

/// Every series of type `metric_type` agent `agent` reported, as `name labels = value` lines
/// (labels as jsonb text) of its newest value, sorted.
fn listing(cluster: &Cluster, agent: &str, metric_type: &str) -> Vec<String> {
    cluster
        .psql(&format!(
            "SELECT DISTINCT ON (metric_name, labels) metric_name || ' ' || labels::text || ' = ' || value
               FROM secumon.metrics WHERE agent_id = '{agent}' AND metric_type = '{metric_type}' AND value IS NOT NULL
              ORDER BY metric_name, labels, time DESC"
        ))
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}


fn host_series_count(cluster: &Cluster, agent: &str) -> i64 {
    cluster
        .psql_one(&format!(
            "SELECT count(*) FROM secumon.metrics WHERE agent_id = '{agent}' AND metric_type IN ('cpu', 'memory', 'system') AND value IS NOT NULL"
        ))
        .parse()
        .expect("a count")
}

/// Writes an executable shell script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("expected to write a script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("expected to chmod a script");
    path
}

fn pid_in(path: &Path) -> u32 {
    sys::read_lossy(path)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a pid in {}", path.display()))
}

fn http_target(url: &str) -> [(&'static str, &str); 2] {
    [("probe", "http"), ("target", url)]
}

fn labels(pairs: &[(&str, &str)]) -> serde_json::Value {
    serde_json::Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect(),
    )
}

#[test]
fn scrapes_and_commands_arrive_as_custom_series() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_inputs");
    let app = HttpReceiver::start_answering(Reply::ok(APP_METRICS));
    // Valid text, but longer than the 1 KiB the input allows.
    let big_body: String = (0..200)
        .map(|i| format!("big_metric{{n=\"{i}\"}} {i}\n"))
        .collect();
    assert!(big_body.len() > 2048);
    let big = HttpReceiver::start_answering(Reply::ok(&big_body));
    let down_url = format!("http://127.0.0.1:{}/metrics", free_port());

    let dir = sys::fresh_temp_dir("exec");
    let prom = script(
        &dir,
        "backup-stats",
        "echo '# TYPE backup_runs counter'\necho 'backup_runs 5'\necho 'backup_last_success_timestamp_seconds{job=\"db\"} 1700000000'\n",
    );
    let influx = script(
        &dir,
        "queue-stats",
        "echo 'queue,queue=mail depth=42i,oldest_seconds=1.5,state=\"ok\" 1700000000000000000'\n",
    );
    let hang_pid = dir.join("hang.pid");
    let hang_child_pid = dir.join("hang-child.pid");
    let hang = script(
        &dir,
        "hang",
        &format!(
            "echo $$ > {}\nsleep 600 &\necho $! > {}\necho 'hang_started 1'\nwait\n",
            hang_pid.display(),
            hang_child_pid.display()
        ),
    );
    let garbage = script(
        &dir,
        "garbage",
        "echo 'hello world'\necho 'not-a-metric 1'\necho '{{{'\n",
    );

    let config = cluster
        .agent_config(&role)
        .agent_id("inputs-host")
        .interval("10s")
        .line("[[scrape]]")
        .line("name = \"app\"")
        .line(&format!("url = {}", toml_string(&app.url("/metrics"))))
        .line("labels = { team = \"web\" }")
        .line("[[scrape]]")
        .line("name = \"big\"")
        .line(&format!("url = {}", toml_string(&big.url("/metrics"))))
        .line("max_bytes = \"1KiB\"")
        .line("[[scrape]]")
        .line("name = \"down\"")
        .line(&format!("url = {}", toml_string(&down_url)))
        .line("[[exec]]")
        .line(&format!(
            "command = [{}]",
            toml_string(&prom.display().to_string())
        ))
        .line("[[exec]]")
        .line(&format!(
            "command = [{}]",
            toml_string(&influx.display().to_string())
        ))
        .line("format = \"influx\"")
        .line("[[exec]]")
        .line(&format!(
            "command = [{}]",
            toml_string(&hang.display().to_string())
        ))
        .line("timeout = \"2s\"")
        .line("[[exec]]")
        .line(&format!(
            "command = [{}]",
            toml_string(&garbage.display().to_string())
        ))
        .line("[[exec]]")
        .line("command = [\"/bin/false\"]");
    let agent = cluster.agent(&config);
    let stderr = agent.run_once_ok();

    // The hanging command and the child it started were killed at their timeout.
    let (shell, child) = (pid_in(&hang_pid), pid_in(&hang_child_pid));
    assert!(
        wait_until(Duration::from_secs(5), || !sys::process_alive(shell)
            && !sys::process_alive(child)),
        "expected the hanging command (pid {shell}) and its `sleep 600` (pid {child}) to be killed"
    );
    sys::remove_dir(&dir);

    let a = "inputs-host";
    let v = |series: &str, pairs: &[(&str, &str)]| value(&cluster, a, series, labels(pairs));
    assert_eq!(
        cluster.psql_one(&format!(
            "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = '{a}'"
        )),
        "1",
        "one report from --once"
    );
    assert!(
        host_series_count(&cluster, a) > 5,
        "the host series are stored beside the inputs'"
    );

    // The application's samples: names, kinds, labels (the sample's win over the input's).
    let app_series: Vec<String> = listing(&cluster, a, "custom")
        .into_iter()
        .filter(|l| l.starts_with("app_"))
        .collect();
    assert_eq!(
        app_series,
        [
            r#"app_errors_total {"path": "/api", "team": "web"} = 3"#,
            r#"app_latency_seconds_bucket {"le": "+Inf", "team": "web"} = 9"#,
            r#"app_latency_seconds_bucket {"le": "0.1", "team": "web"} = 5"#,
            r#"app_latency_seconds_bucket {"le": "0.5", "team": "web"} = 8"#,
            r#"app_latency_seconds_count {"team": "web"} = 9"#,
            r#"app_latency_seconds_sum {"team": "web"} = 2.5"#,
            r#"app_queue_depth {"team": "api", "queue": "sms"} = 2"#,
            r#"app_queue_depth {"team": "web", "queue": "mail"} = 7"#,
            r#"app_requests_total {"code": "200", "path": "/api", "team": "web"} = 10"#,
        ]
        .map(String::from)
        .to_vec(),
        "every valid sample of the scraped text, nothing of its invalid lines"
    );
    let kinds = cluster.psql(
        "SELECT metric_name, kind FROM secumon.list_series('inputs-host')
          WHERE metric_name IN ('app_requests_total', 'app_queue_depth', 'app_latency_seconds_bucket')
          GROUP BY 1, 2 ORDER BY 1",
    );
    assert_eq!(
        kinds,
        [
            ["app_latency_seconds_bucket", "counter"],
            ["app_queue_depth", "gauge"],
            ["app_requests_total", "counter"]
        ]
        .iter()
        .map(|r| r.iter().map(|c| Some(c.to_string())).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    );
    let app_input = labels(&[("input", "app"), ("team", "web")]);
    assert_eq!(
        value(&cluster, a, "custom.scrape.up", app_input.clone()),
        Some(1.0)
    );
    assert_eq!(
        value(
            &cluster,
            a,
            "custom.scrape.invalid_lines",
            app_input.clone()
        ),
        Some(APP_INVALID_LINES),
        "the garbage, NaN, non-numeric, bad-name and bad-label lines are counted"
    );
    assert_eq!(
        value(&cluster, a, "custom.scrape.samples", app_input.clone()),
        Some(9.0)
    );
    assert!(
        value(&cluster, a, "custom.scrape.duration_seconds", app_input).is_some_and(|d| d >= 0.0)
    );

    // The body over max_bytes: up 0, none of its samples; the down endpoint: up 0.
    assert_eq!(v("custom.scrape.up", &[("input", "big")]), Some(0.0));
    assert_eq!(
        cluster.psql_one(&format!(
            "SELECT count(*) FROM secumon.metrics WHERE agent_id = '{a}' AND metric_name LIKE 'big_metric%'"
        )),
        "0",
        "nothing of a body over max_bytes is kept"
    );
    assert_eq!(v("custom.scrape.up", &[("input", "down")]), Some(0.0));
    assert!(
        stderr.contains("max_bytes"),
        "the oversized body is logged:\n{stderr}"
    );

    // Commands: Prometheus text and Influx line protocol, named after the program.
    assert_eq!(v("custom.backup_runs_total", &[]), Some(5.0));
    assert_eq!(
        v(
            "custom.backup_last_success_timestamp_seconds",
            &[("job", "db")]
        ),
        Some(1_700_000_000.0)
    );
    assert_eq!(v("custom.exec.up", &[("input", "backup-stats")]), Some(1.0));
    assert_eq!(v("custom.queue_depth", &[("queue", "mail")]), Some(42.0));
    assert_eq!(
        v("custom.queue_oldest_seconds", &[("queue", "mail")]),
        Some(1.5)
    );
    assert_eq!(v("custom.exec.up", &[("input", "queue-stats")]), Some(1.0));
    assert_eq!(
        v("custom.exec.invalid_lines", &[("input", "queue-stats")]),
        Some(1.0),
        "the string field is skipped and counted"
    );
    // The hanging command: killed, up 0, none of its output used.
    assert_eq!(v("custom.exec.up", &[("input", "hang")]), Some(0.0));
    assert_eq!(v("custom.hang_started", &[]), None);
    // Garbage only: up 0 and every line counted; a failing command: up 0.
    assert_eq!(v("custom.exec.up", &[("input", "garbage")]), Some(0.0));
    assert_eq!(
        v("custom.exec.invalid_lines", &[("input", "garbage")]),
        Some(3.0)
    );
    assert_eq!(v("custom.exec.up", &[("input", "false")]), Some(0.0));
}

/// A Python HTTPS server with a self-signed certificate for 127.0.0.1 valid 5 days; killed on
/// drop.
struct TlsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = sys::fresh_temp_dir("tls");
        let output = Command::new("openssl")
            .current_dir(&dir)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "5",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .output()
            .expect("expected to run openssl");
        assert!(
            output.status.success(),
            "openssl req: {}",
            stderr_text(&output)
        );
        let server = r#"
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"secure ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let mut child = Command::new(python())
            .arg("-c")
            .arg(server)
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("expected to start python3");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("expected the TLS server to print its port, got {line:?}")
        });
        TlsServer { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        sys::remove_dir(&self.dir);
    }
}

#[test]
fn probes_report_up_status_latency_and_certificate_days() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_probes");
    let ok = HttpReceiver::start_answering(Reply::ok("all ok"));
    let failing = HttpReceiver::start_answering(Reply::status(500, "oops"));
    let slow = HttpReceiver::start_answering(Reply::ok("late").after(Duration::from_secs(4)));
    let tls = TlsServer::start();
    let listening = TcpListener::bind("127.0.0.1:0").expect("a listening port");
    let open = format!("127.0.0.1:{}", listening.local_addr().unwrap().port());
    let closed = format!("127.0.0.1:{}", free_port());

    let http = |url: &str, extra: &[&str]| {
        let mut lines = vec![
            "[[probe]]".to_string(),
            format!("http = {}", toml_string(url)),
        ];
        lines.extend(extra.iter().map(|l| l.to_string()));
        lines
    };
    let mut probes: Vec<String> = Vec::new();
    probes.extend(http(&ok.url("/plain"), &["labels = { site = \"lab\" }"]));
    probes.extend(http(&failing.url("/"), &[]));
    probes.extend(http(&slow.url("/"), &["timeout = \"1s\""]));
    probes.extend(http(&ok.url("/match"), &["expect_body = \"all ok\""]));
    probes.extend(http(&ok.url("/mismatch"), &["expect_body = \"healthy\""]));
    probes.extend(http(&tls.url("/"), &["name = \"tls-strict\""]));
    probes.extend(http(
        &tls.url("/"),
        &["name = \"tls-insecure\"", "tls_insecure = true"],
    ));
    probes.extend([
        "[[probe]]".to_string(),
        format!("tcp = {}", toml_string(&open)),
    ]);
    probes.extend([
        "[[probe]]".to_string(),
        format!("tcp = {}", toml_string(&closed)),
    ]);
    probes.extend([
        "[[probe]]".to_string(),
        "icmp = \"127.0.0.1\"".to_string(),
        "count = 2".to_string(),
    ]);
    let mut config = cluster
        .agent_config(&role)
        .agent_id("probe-host")
        .interval("10s");
    for line in &probes {
        config = config.line(line);
    }
    let agent = cluster.agent(&config);
    let stderr = agent.run_once_ok();
    let a = "probe-host";
    let probe = |series: &str, pairs: &[(&str, &str)]| value(&cluster, a, series, labels(pairs));

    let plain = ok.url("/plain");
    let plain_labels = [
        ("probe", "http"),
        ("site", "lab"),
        ("target", plain.as_str()),
    ];
    assert_eq!(
        probe("probe.up", &plain_labels),
        Some(1.0),
        "200 is up; log:\n{stderr}"
    );
    assert_eq!(probe("probe.http_status_code", &plain_labels), Some(200.0));
    assert!(probe("probe.duration_seconds", &plain_labels).is_some_and(|d| (0.0..5.0).contains(&d)));
    assert_eq!(
        probe("probe.tls_cert_days_left", &plain_labels),
        None,
        "no certificate over http"
    );

    let failing_url = failing.url("/");
    assert_eq!(
        probe("probe.up", &http_target(&failing_url)),
        Some(0.0),
        "500 is down"
    );
    assert_eq!(
        probe("probe.http_status_code", &http_target(&failing_url)),
        Some(500.0)
    );

    let slow_url = slow.url("/");
    assert_eq!(
        probe("probe.up", &http_target(&slow_url)),
        Some(0.0),
        "slower than its timeout is down"
    );
    assert_eq!(
        probe("probe.http_status_code", &http_target(&slow_url)),
        None
    );

    assert_eq!(
        probe("probe.up", &http_target(&ok.url("/match"))),
        Some(1.0),
        "expected body found"
    );
    let mismatch = ok.url("/mismatch");
    assert_eq!(
        probe("probe.up", &http_target(&mismatch)),
        Some(0.0),
        "expected body missing"
    );
    assert_eq!(
        probe("probe.http_status_code", &http_target(&mismatch)),
        Some(200.0)
    );

    // The self-signed certificate is not trusted, yet its days left are read; tls_insecure
    // accepts it.
    let tls_url = tls.url("/");
    let strict = [
        ("name", "tls-strict"),
        ("probe", "http"),
        ("target", tls_url.as_str()),
    ];
    let insecure = [
        ("name", "tls-insecure"),
        ("probe", "http"),
        ("target", tls_url.as_str()),
    ];
    assert_eq!(
        probe("probe.up", &strict),
        Some(0.0),
        "an untrusted certificate is down; log:\n{stderr}"
    );
    for labels in [&strict, &insecure] {
        let days = probe("probe.tls_cert_days_left", labels);
        assert!(
            days.is_some_and(|d| (4.0..=5.1).contains(&d)),
            "a certificate valid 5 days has about 5 days left, got {days:?} for {labels:?}"
        );
    }
    assert_eq!(
        probe("probe.up", &insecure),
        Some(1.0),
        "tls_insecure accepts the self-signed certificate"
    );
    assert_eq!(probe("probe.http_status_code", &insecure), Some(200.0));

    assert_eq!(
        probe("probe.up", &[("probe", "tcp"), ("target", open.as_str())]),
        Some(1.0)
    );
    assert!(probe(
        "probe.duration_seconds",
        &[("probe", "tcp"), ("target", open.as_str())]
    )
    .is_some());
    assert_eq!(
        probe("probe.up", &[("probe", "tcp"), ("target", closed.as_str())]),
        Some(0.0)
    );

    let icmp = [("probe", "icmp"), ("target", "127.0.0.1")];
    let icmp_up = probe("probe.up", &icmp);
    // The agent says when the kernel forbids unprivileged ICMP and it lacks CAP_NET_RAW.
    if icmp_up != Some(1.0) && !sys::is_root() && stderr.contains("CAP_NET_RAW") {
        eprintln!(
            "SKIPPED the ICMP check: net.ipv4.ping_group_range ({:?}) excludes this user, which is not root: {}",
            sys::read_lossy(Path::new("/proc/sys/net/ipv4/ping_group_range")).trim(),
            stderr.lines().find(|l| l.contains("CAP_NET_RAW")).unwrap_or_default()
        );
    } else {
        assert_eq!(
            icmp_up,
            Some(1.0),
            "ICMP to 127.0.0.1 is up; log:\n{stderr}"
        );
        assert_eq!(probe("probe.packet_loss_percent", &icmp), Some(0.0));
        assert!(probe("probe.rtt_seconds", &icmp).is_some_and(|r| (0.0..1.0).contains(&r)));
    }
    assert!(
        host_series_count(&cluster, a) > 5,
        "the host series are stored beside the probes'"
    );
    drop(listening);
}

#[test]
fn label_selector_rules_fire_and_resolve_on_probe_and_scraped_series() {
    let cluster = Cluster::start_with(&[("secumon.alert_interval", "1s")]);
    let role = cluster.create_agent_role("agent_alerts");
    // Only the default probe rule, shortened, and a rule on one label set of a scraped gauge.
    cluster.psql(
        "UPDATE secumon.alert_rules SET enabled = (default_key = 'probe_target_down') IS TRUE,
                duration = CASE WHEN default_key = 'probe_target_down' THEN interval '2 seconds' ELSE duration END",
    );
    let receiver = HttpReceiver::start();
    cluster.add_webhook_channel("hook", &receiver.url("/hook"));
    let queue_rule = cluster.psql_one(
        r#"INSERT INTO secumon.alert_rules (name, metric_type, metric_name, series_labels, condition, threshold, severity)
           VALUES ('mail queue', 'custom', 'app_queue_depth', '{"queue": "mail"}', 'gt', 100, 'critical') RETURNING id"#,
    );
    let probe_rule = cluster
        .psql_one("SELECT id FROM secumon.alert_rules WHERE default_key = 'probe_target_down'");

    let site = HttpReceiver::start_answering(Reply::ok("fine"));
    let gauges = |mail: i32| {
        Reply::ok(&format!(
            "app_queue_depth{{queue=\"mail\"}} {mail}\napp_queue_depth{{queue=\"sms\"}} 500\n"
        ))
    };
    let app = HttpReceiver::start_answering(gauges(3));
    let target = site.url("/health");
    let config = cluster
        .agent_config(&role)
        .agent_id("alert-host")
        .interval("1s")
        .line("[[probe]]")
        .line(&format!("http = {}", toml_string(&target)))
        .line("timeout = \"1s\"")
        .line("[[scrape]]")
        .line(&format!("url = {}", toml_string(&app.url("/metrics"))))
        .line("timeout = \"1s\"");
    let agent = cluster.agent(&config);
    let mut process = agent.spawn();
    let a = "alert-host";
    let v = |series: &str, pairs: &[(&str, &str)]| value(&cluster, a, series, labels(pairs));
    let probe_labels = labels(&[("probe", "http"), ("target", &target)]);
    assert!(
        wait_until(WAIT, || value(
            &cluster,
            a,
            "probe.up",
            probe_labels.clone()
        ) == Some(1.0)
            && v("custom.app_queue_depth", &[("queue", "mail")]) == Some(3.0)),
        "expected the probe and the scrape to arrive; agent log:\n{}",
        process.stderr_log()
    );

    let alerts = |rule: &str| {
        cluster.psql(&format!(
            "SELECT series_key, state FROM secumon.alerts WHERE rule_id = '{rule}' ORDER BY started_at"
        ))
    };
    let state_is = |rule: &str, state: &str| {
        let rows = alerts(rule);
        rows.len() == 1 && rows[0][1].as_deref() == Some(state)
    };

    // The site fails and the mail queue grows: both rules fire, once each.
    site.answer(Reply::status(500, "broken"));
    app.answer(gauges(150));
    assert!(
        wait_until(WAIT, || state_is(&probe_rule, "firing")
            && state_is(&queue_rule, "firing")),
        "expected both rules to fire; probe rule {:?}, queue rule {:?}; agent log:\n{}",
        alerts(&probe_rule),
        alerts(&queue_rule),
        process.stderr_log()
    );
    let probe_key = alerts(&probe_rule)[0][0].clone().unwrap_or_default();
    assert!(
        probe_key.contains(&target),
        "the alert's series key names the target: {probe_key}"
    );
    assert_eq!(
        alerts(&queue_rule)[0][0].as_deref(),
        Some(r#"{queue="mail"}"#),
        "only the mail queue alerts"
    );

    // Back to normal: both resolve.
    site.answer(Reply::ok("fine"));
    app.answer(gauges(3));
    assert!(
        wait_until(WAIT, || state_is(&probe_rule, "resolved")
            && state_is(&queue_rule, "resolved")),
        "expected both alerts to resolve; probe rule {:?}, queue rule {:?}",
        alerts(&probe_rule),
        alerts(&queue_rule)
    );
    assert!(process.is_running(), "the agent keeps running");

    // Notifications: firing and resolved for each, carrying the series labels.
    let hooks = receiver.wait_for(4, WAIT);
    let events: Vec<(String, String, serde_json::Value)> = hooks
        .iter()
        .map(|r| {
            let json = r.json();
            (
                json["rule"]["name"].as_str().unwrap_or("?").to_string(),
                json["event"].as_str().unwrap_or("?").to_string(),
                json["series_labels"].clone(),
            )
        })
        .collect();
    for (rule, event) in [
        ("Probe Target Down", "firing"),
        ("Probe Target Down", "resolved"),
        ("mail queue", "firing"),
        ("mail queue", "resolved"),
    ] {
        let found = events.iter().find(|(r, e, _)| r == rule && e == event);
        let Some((_, _, series_labels)) = found else {
            panic!("expected a {event} notification of {rule}; got {events:?}");
        };
        if rule == "mail queue" {
            assert_eq!(series_labels, &serde_json::json!({ "queue": "mail" }));
        } else {
            assert_eq!(
                series_labels["target"],
                serde_json::json!(target),
                "{series_labels}"
            );
            assert_eq!(
                series_labels["probe"],
                serde_json::json!("http"),
                "{series_labels}"
            );
        }
    }
    process.stop();
}

#[test]
fn a_hanging_command_never_holds_up_reports_and_dies_with_the_agent() {
    let cluster = Cluster::start();
    let role = cluster.create_agent_role("agent_stuck");
    let dir = sys::fresh_temp_dir("exec");
    let pid_file = dir.join("stuck.pid");
    let stuck = script(
        &dir,
        "stuck",
        &format!("echo $$ > {}\nexec sleep 600\n", pid_file.display()),
    );
    let config = cluster
        .agent_config(&role)
        .agent_id("stuck-host")
        .interval("1s")
        .line("[[exec]]")
        .line(&format!(
            "command = [{}]",
            toml_string(&stuck.display().to_string())
        ))
        .line("interval = \"10s\"")
        .line("timeout = \"10s\"");
    let agent = cluster.agent(&config);
    let mut process = agent.spawn();
    assert!(
        wait_until(WAIT, || pid_file.exists()
            && !sys::read_lossy(&pid_file).trim().is_empty()),
        "expected the command to start; agent log:\n{}",
        process.stderr_log()
    );
    let command = pid_in(&pid_file);
    // Host reports keep arriving while the command hangs.
    let reports = || -> i64 {
        cluster
            .psql_one(
                "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = 'stuck-host'",
            )
            .parse()
            .expect("a count")
    };
    let before = reports();
    assert!(
        wait_until(WAIT, || reports() >= before + 3),
        "expected reports to keep arriving while a command hangs; agent log:\n{}",
        process.stderr_log()
    );
    assert!(
        sys::process_alive(command),
        "the command is still within its timeout"
    );
    // A stopping agent kills the command in flight (docs/agent-inputs.md, Exec).
    process.stop();
    let killed = wait_until(Duration::from_secs(5), || !sys::process_alive(command));
    if !killed {
        // Do not leave it behind for ten minutes.
        sys::signal(command, libc::SIGKILL);
    }
    sys::remove_dir(&dir);
    assert!(
        killed,
        "expected the stopped agent to kill its running command (pid {command}); agent log:\n{}",
        sys::tail(&agent.stderr_log(), 5)
    );
}

/// A label explosion: the reply of a scrape exposing `n` label sets of `app_users`, `u0` the
/// value of the first.
fn users(n: usize, u0: i32) -> Reply {
    let body: String = (0..n)
        .map(|i| {
            format!(
                "app_users{{user=\"u{i}\"}} {}\n",
                if i == 0 { u0 } else { 1 }
            )
        })
        .collect();
    Reply::ok(&body)
}

/// A cluster capped at 200 series per agent and an agent (interval 1 s) scraping a server
/// that exposes two label sets of `app_users`, running until those are stored; its id is
/// `explosion-host`.
fn capped_cluster_and_scraping_agent() -> (Cluster, HttpReceiver, Agent, AgentProcess) {
    let cluster = Cluster::start();
    cluster.psql("ALTER SYSTEM SET secumon.max_series_per_agent = 200");
    cluster.psql("SELECT pg_reload_conf()");
    assert!(
        wait_until(WAIT, || cluster
            .psql_one("SHOW secumon.max_series_per_agent")
            == "200"),
        "the cap is reloaded"
    );
    let role = cluster.create_agent_role("agent_explosion");
    let app = HttpReceiver::start_answering(users(2, 1));
    let config = cluster
        .agent_config(&role)
        .agent_id("explosion-host")
        .interval("1s")
        .line("[[scrape]]")
        .line("name = \"users\"")
        .line(&format!("url = {}", toml_string(&app.url("/metrics"))))
        .line("timeout = \"1s\"");
    let agent = cluster.agent(&config);
    let process = agent.spawn();
    assert!(
        wait_until(WAIT, || value(
            &cluster,
            "explosion-host",
            "custom.app_users",
            labels(&[("user", "u0")])
        ) == Some(1.0)),
        "expected the first two label sets to be stored; agent log:\n{}",
        process.stderr_log()
    );
    (cluster, app, agent, process)
}

#[test]
fn a_label_explosion_past_the_cap_is_refused_and_host_series_keep_arriving() {
    let (cluster, app, _agent, mut process) = capped_cluster_and_scraping_agent();
    let a = "explosion-host";
    let v = |series: &str, pairs: &[(&str, &str)]| value(&cluster, a, series, labels(pairs));
    let reports = || -> i64 {
        cluster
            .psql_one(&format!(
                "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = '{a}' AND metric_type = 'cpu' AND value IS NOT NULL"
            ))
            .parse()
            .expect("a count")
    };
    let known = labels(&[("user", "u0")]);
    app.answer(users(300, 1000));
    // The error is logged, and reports keep being stored after it.
    assert!(
        wait_until(WAIT, || process
            .stderr_log()
            .contains("max_series_per_agent")),
        "expected an error naming secumon.max_series_per_agent; agent log:\n{}",
        process.stderr_log()
    );
    let after_error = reports();
    assert!(
        wait_until(WAIT, || reports() >= after_error + 2),
        "expected host series to keep arriving after the refused report ({after_error} reports so far); agent log:\n{}",
        process.stderr_log()
    );
    assert!(process.is_running(), "the agent keeps running");
    let line = process
        .stderr_log()
        .lines()
        .find(|l| l.contains("max_series_per_agent"))
        .unwrap_or_default()
        .to_string();
    eprintln!("the agent logged: {line}");
    assert!(
        line.contains("200"),
        "the error names the cap's value: {line}"
    );
    assert_eq!(
        cluster.psql_one(&format!(
            "SELECT count(DISTINCT labels) FROM secumon.metrics WHERE agent_id = '{a}' AND metric_name = 'app_users'"
        )),
        "2",
        "none of the new label sets is stored, nothing is cut silently"
    );
    // The series stored before keep arriving, with the values of the refused scrape, and so
    // does the scrape's health.
    assert!(
        wait_until(WAIT, || value(
            &cluster,
            a,
            "custom.app_users",
            known.clone()
        ) == Some(1000.0)),
        "expected the known series app_users{{user=\"u0\"}} to keep arriving; agent log:\n{}",
        process.stderr_log()
    );
    assert_eq!(v("custom.scrape.up", &[("input", "users")]), Some(1.0));
    assert_eq!(
        v("custom.scrape.samples", &[("input", "users")]),
        Some(300.0)
    );
    assert!(host_series_count(&cluster, a) > 5);

    process.stop();
}

#[test]
fn series_stored_before_keep_arriving_when_the_agent_restarts_during_a_label_explosion() {
    let (cluster, app, agent, mut process) = capped_cluster_and_scraping_agent();
    // Restarted while the explosion goes on, the agent still sends the series the database
    // stored before: "the input series stored before are never lost" (docs/agent-inputs.md).
    process.stop();
    app.answer(users(300, 2000));
    let mut process = agent.spawn();
    assert!(
        wait_until(WAIT, || process
            .stderr_log()
            .contains("max_series_per_agent (200)")),
        "expected the restarted agent to log the refusal; agent log:\n{}",
        process.stderr_log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            value(&cluster, "explosion-host", "custom.app_users", labels(&[("user", "u0")])) == Some(2000.0)
        }),
        "expected the known series app_users{{user=\"u0\"}} to keep arriving after a restart; agent log:\n{}",
        sys::tail(&process.stderr_log(), 4)
    );
    assert_eq!(
        value(
            &cluster,
            "explosion-host",
            "custom.scrape.up",
            labels(&[("input", "users")])
        ),
        Some(1.0)
    );
    process.stop();
}
