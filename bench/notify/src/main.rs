//! Notification dispatch benchmark (`cargo run --release -p secumon-bench-notify`).
//!
//! A real cluster with the installed extension (see tests/src/lib.rs for prerequisites) and
//! real HTTP receivers on 127.0.0.1. Alert transitions are inserted into secumon.alert_events
//! exactly as the alert engine writes them; the clock starts just before the transition's
//! statement (which commits on its own) and stops when the receiver has read the request.
//!
//! 1. Latency: 1,000 alerts, one transaction each, spread over five channel types.
//! 2. Throughput: 5,000 notifications committed at once, to one fast webhook.
//! 3. Isolation: a receiver that answers after 2 s beside a fast one.
//! 4. Retry-After: a 429 with Retry-After: 1 is retried after ≥ 1 s, and only once.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use secumon_e2e::receivers::{HttpReceiver, Reply};
use secumon_e2e::serde_json::{json, Value};
use secumon_e2e::{postgres, wait_until, Cluster};

const ALERTS: usize = 1000;
const BULK: usize = 5000;
const PEER: &str = "Alertmanager 0.25 on this machine: 3–9 ms from receiving an alert to its webhook (group_wait 0); ignores Retry-After";

fn main() {
    let threads = std::env::var("BENCH_CHANNEL_PARALLEL").unwrap_or_else(|_| "8".into());
    let cluster = Cluster::start_with(&[("log_min_messages", "warning"), ("secumon.notify_channel_parallel", &threads)]);
    println!("SecuMon notification dispatch benchmark — loopback, {} CPUs", cpus());
    println!("peer: {PEER}\n");
    latency(&cluster);
    throughput(&cluster);
    isolation(&cluster);
    retry_after(&cluster);
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn channel(client: &mut postgres::Client, name: &str, kind: &str, settings: Value, tenant: &str) {
    client
        .execute(
            "INSERT INTO secumon.notification_channels (name, type, settings, tenant_ids) VALUES ($1, $2, $3, ARRAY[$4])",
            &[&name, &kind, &settings, &tenant],
        )
        .expect("create channel");
}

fn payload(alert: &str, tenant: &str) -> Value {
    json!({"alert_id": alert, "rule_id": "9a8b7c6d-0000-4000-8000-000000000001", "rule_name": "High CPU",
           "tenant_id": tenant, "agent_id": "web-1", "hostname": "web-1", "series_key": "", "state": "firing",
           "event": "firing", "severity": "critical", "metric": "cpu.usage_percent", "condition": ">",
           "threshold": 90, "current_value": 97.5, "labels": {}, "summary": "CPU 97.5% > 90%"})
}

const INSERT_ONE: &str = "INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, event, severity, payload)
     VALUES (gen_random_uuid(), '9a8b7c6d-0000-4000-8000-000000000001', $1, 'web-1', 'firing', 'critical', $2) RETURNING id";

/// Commit → arrival per notification, in ms, for the requests `receivers` got.
fn latencies(client: &mut postgres::Client, receivers: &[&HttpReceiver], started: &HashMap<i64, SystemTime>) -> Vec<f64> {
    let keys: HashMap<String, i64> = client
        .query("SELECT idempotency_key::text, event_id FROM secumon.notification_outbox", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut out = Vec::new();
    for receiver in receivers {
        for request in receiver.requests() {
            let key = request.header("x-secumon-notification-id").unwrap_or("");
            if let Some(t0) = keys.get(key).and_then(|id| started.get(id)) {
                out.push(request.received_at.duration_since(*t0).unwrap_or_default().as_secs_f64() * 1000.0);
            }
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn latency(cluster: &Cluster) {
    let mut client = cluster.client();
    let ok = r#"{"ok":true,"result":{}}"#;
    let receivers = [
        ("webhook", HttpReceiver::start_answering(Reply::status(204, ""))),
        ("slack", HttpReceiver::start_answering(Reply::ok("ok"))),
        ("telegram", HttpReceiver::start_answering(Reply::ok(ok))),
        ("pagerduty", HttpReceiver::start_answering(Reply::status(202, r#"{"status":"success"}"#))),
        ("teams", HttpReceiver::start_answering(Reply::status(202, ""))),
    ];
    for (i, (kind, r)) in receivers.iter().enumerate() {
        let settings = match *kind {
            "telegram" => json!({"bot_token": "1:abcdefgh", "chat_id": 1, "api_url": r.url("")}),
            "pagerduty" => json!({"routing_key": "R0123456789", "url": r.url("/v2/enqueue")}),
            _ => json!({"url": r.url("/hook")}),
        };
        channel(&mut client, &format!("lat-{kind}"), kind, settings, &format!("lat{i}"));
    }
    let mut started = HashMap::new();
    let begin = Instant::now();
    for n in 0..ALERTS {
        let tenant = format!("lat{}", n % receivers.len());
        let t0 = SystemTime::now();
        let id: i64 = client.query_one(INSERT_ONE, &[&tenant, &payload("", &tenant)]).unwrap().get(0);
        started.insert(id, t0);
        // ~500 transitions/s: a busy alert storm, still far from saturating the dispatcher.
        std::thread::sleep(Duration::from_millis(2));
    }
    let all = wait_until(Duration::from_secs(60), || receivers.iter().map(|(_, r)| r.count()).sum::<usize>() >= ALERTS);
    let elapsed = begin.elapsed();
    let refs: Vec<&HttpReceiver> = receivers.iter().map(|(_, r)| r).collect();
    let lat = latencies(&mut client, &refs, &started);
    println!("1. latency, commit → receiver, {ALERTS} alerts (one transaction each, {:.0}/s) over webhook, slack, telegram, pagerduty, teams:", ALERTS as f64 / elapsed.as_secs_f64());
    println!("   p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   ({} delivered{})", pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 1.0), lat.len(), if all { "" } else { ", INCOMPLETE" });
    println!("   target p99 < 50 ms (seed claimed < 500 ms); {PEER}");
    for (kind, r) in &receivers {
        let one = latencies(&mut client, &[r], &started);
        println!("     {kind:<10} p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms", pct(&one, 0.5), pct(&one, 0.99), pct(&one, 1.0));
    }
    println!();
}

fn throughput(cluster: &Cluster) {
    let mut client = cluster.client();
    let receiver = HttpReceiver::start_answering(Reply::status(204, ""));
    channel(&mut client, "bulk", "webhook", json!({"url": receiver.url("/bulk")}), "bulk");
    let t0 = Instant::now();
    client
        .execute(
            "INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, event, severity, payload)
             SELECT gen_random_uuid(), '9a8b7c6d-0000-4000-8000-000000000001', 'bulk', 'web-1', 'firing', 'critical', $2
               FROM generate_series(1, $1::int)",
            &[&(BULK as i32), &payload("", "bulk")],
        )
        .unwrap();
    let committed = t0.elapsed();
    let all = wait_until(Duration::from_secs(120), || receiver.count() >= BULK);
    let arrived = receiver.requests().last().map(|r| r.instant).unwrap_or_else(Instant::now);
    let seconds = arrived.duration_since(t0).as_secs_f64() - committed.as_secs_f64();
    let sent_ok = wait_until(Duration::from_secs(30), || {
        client.query_one("SELECT count(*) FROM secumon.notification_outbox WHERE channel_name = 'bulk' AND status = 'sent'", &[]).unwrap().get::<_, i64>(0) as usize == BULK
    });
    let round_trip: f64 = client
        .query_one("SELECT coalesce(avg(latency_ms), 0) FROM secumon.notification_outbox WHERE channel_name = 'bulk'", &[])
        .unwrap()
        .get(0);
    println!("2. throughput: {BULK} notifications committed in one transaction ({:.0} ms) to one fast webhook:", committed.as_secs_f64() * 1000.0);
    println!("   {:.0} notifications/s (last arrival {:.2} s after commit{}{})   target ≥ 1,000/s",
        BULK as f64 / seconds, seconds, if all { "" } else { ", INCOMPLETE" }, if sent_ok { ", all recorded sent" } else { ", NOT all recorded" });
    println!("   (average HTTP round trip per delivery {round_trip:.2} ms; one channel, {} sender threads)", std::env::var("BENCH_CHANNEL_PARALLEL").unwrap_or_else(|_| "8".into()));
    println!();
}

fn isolation(cluster: &Cluster) {
    let mut client = cluster.client();
    let slow = HttpReceiver::start_answering(Reply::ok("ok").after(Duration::from_secs(2)));
    let fast = HttpReceiver::start_answering(Reply::ok("ok"));
    channel(&mut client, "iso-slow", "webhook", json!({"url": slow.url("/slow"), "timeout_ms": 10000}), "iso");
    channel(&mut client, "iso-fast", "webhook", json!({"url": fast.url("/fast")}), "iso");
    let mut started = HashMap::new();
    for _ in 0..200 {
        let t0 = SystemTime::now();
        let id: i64 = client.query_one(INSERT_ONE, &[&"iso", &payload("", "iso")]).unwrap().get(0);
        started.insert(id, t0);
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_until(Duration::from_secs(30), || fast.count() >= 200);
    let lat = latencies(&mut client, &[&fast], &started);
    println!("3. isolation: 200 alerts to a receiver answering after 2 s and to a fast one (both routed every alert):");
    println!("   fast channel p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; slow channel delivered {} so far (8 sender threads)",
        pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 1.0), slow.count());
    println!();
}

fn retry_after(cluster: &Cluster) {
    let mut client = cluster.client();
    let receiver = HttpReceiver::start();
    receiver.then(Reply::status(429, "slow down").header("Retry-After", "1"));
    channel(&mut client, "ra", "webhook", json!({"url": receiver.url("/ra")}), "ra");
    client.query_one(INSERT_ONE, &[&"ra", &payload("", "ra")]).unwrap();
    wait_until(Duration::from_secs(10), || receiver.count() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    let r = receiver.requests();
    let gap = if r.len() >= 2 { r[1].instant.duration_since(r[0].instant).as_secs_f64() } else { f64::NAN };
    println!("4. Retry-After: a 429 with Retry-After: 1 was retried after {gap:.2} s, {} requests in all (Alertmanager 0.25 re-sends every group_interval regardless)", r.len());
}
