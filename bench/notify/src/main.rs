//! Notification dispatch benchmark (`cargo run --release -p secumon-bench-notify`), SecuMon and
//! Alertmanager measured in the same run against the same loopback webhook receiver.
//!
//! A real cluster with the installed extension (see tests/src/lib.rs for prerequisites) and
//! Debian's prometheus-alertmanager (installed with apt-get if missing) as a throwaway process:
//! `group_wait: 0s`, `group_by: [id]` so each alert is its own notification, `group_interval`
//! 5 s, `repeat_interval` 1 h. SecuMon's alert transitions are inserted into
//! secumon.alert_events exactly as the alert engine writes them, and its clock starts just
//! before the statement that commits them; Alertmanager's clock starts just before the alert's
//! POST to /api/v2/alerts. Both stop when the receiver has read the request.
//!
//! 1. Latency: the same 1,000 alerts, one at a time, to one webhook.
//! 2. Throughput: the same 1,000 alerts at once (one transaction / one POST) to one webhook.
//! 3. Sustained throughput of SecuMon (5,000 at once), with where the time goes.
//! 4. Retry-After: the receiver answers 429 with Retry-After for a while.
//! 5. SecuMon's latency per channel type, and 6. its isolation from a slow receiver.
//!
//! BENCH_CHANNEL_PARALLEL sets secumon.notify_channel_parallel (default 8); BENCH_FSYNC=on runs
//! the cluster with fsync on (the harness's default is off).

mod alertmanager;
mod profile;
mod receiver;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use alertmanager::{alert_json, ids_in, Alertmanager, Routes};
use receiver::{Arrival, Receiver, Throttle};
use secumon_e2e::receivers::{HttpReceiver, Reply};
use secumon_e2e::serde_json::{json, Value};
use secumon_e2e::{postgres, wait_until, Cluster};

const ALERTS: usize = 1000;
const BULK: usize = 5000;
/// The pace of the latency runs: one alert, then this pause (a busy alert storm, far from
/// saturating either dispatcher).
const PACE: Duration = Duration::from_millis(2);
const GROUP_INTERVAL: Duration = Duration::from_secs(5);
/// The throttling receiver: 429 for this long after its first request, with this Retry-After.
const THROTTLE: Throttle = Throttle { for_how_long: Duration::from_secs(12), retry_after_s: 8 };

fn main() {
    let threads = std::env::var("BENCH_CHANNEL_PARALLEL").unwrap_or_else(|_| "8".into());
    // The harness's clusters run with fsync off; BENCH_FSYNC=on flushes WAL as production does.
    let fsync = std::env::var("BENCH_FSYNC").unwrap_or_else(|_| "off".into());
    let cluster = Cluster::start_with(&[
        ("log_min_messages", "warning"),
        ("fsync", &fsync),
        ("secumon.notify_channel_parallel", &threads),
        // Per-statement timings of the dispatcher for the breakdown in section 3.
        ("shared_preload_libraries", "secumon,pg_stat_statements"),
        ("pg_stat_statements.track", "all"),
    ]);
    let mut client = cluster.client();
    let stats = client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").is_ok();

    let am_latency = Receiver::start();
    let am_throughput = Receiver::start();
    let am_retry = Receiver::throttling(THROTTLE);
    let am = Alertmanager::start(
        &Routes { latency: &am_latency.url("/am"), throughput: &am_throughput.url("/am"), retry: &am_retry.url("/am") },
        GROUP_INTERVAL,
    );
    println!("Notification dispatch: SecuMon beside {} in the same run — loopback, {} CPUs, load average {}", am.version, cpus(), profile::load_average());
    println!(
        "(one webhook receiver with keep-alive answering 204; SecuMon: {threads} sender threads per channel, fsync {fsync}; Alertmanager: group_wait 0s, group_by [id], group_interval {}s)\n",
        GROUP_INTERVAL.as_secs()
    );

    let latency = latency_side_by_side(&mut client, &am, &am_latency);
    let throughput = throughput_side_by_side(&mut client, &am, &am_throughput);
    println!(
        "   ratios (SecuMon / {}): latency p50 {:.2}x, p99 {:.2}x (lower is better); throughput {:.2}x (higher is better)\n",
        am.version, latency.0 / latency.2, latency.1 / latency.3, throughput.0 / throughput.1
    );
    sustained(&mut client, stats, &threads);
    retry_after(&mut client, &am, &am_retry);
    latency_per_channel_type(&mut client);
    isolation(&mut client, &threads);
    println!("load average at the end: {}", profile::load_average());
}

pub fn cpus() -> usize {
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

fn payload(tenant: &str) -> Value {
    json!({"rule_id": "9a8b7c6d-0000-4000-8000-000000000001", "rule_name": "High CPU",
           "tenant_id": tenant, "agent_id": "web-1", "hostname": "web-1", "series_key": "", "state": "firing",
           "event": "firing", "severity": "critical", "metric": "cpu.usage_percent", "condition": ">",
           "threshold": 90, "current_value": 97.5, "labels": {}, "summary": "CPU 97.5% > 90%"})
}

const INSERT_ONE: &str = "INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, event, severity, payload)
     VALUES (gen_random_uuid(), '9a8b7c6d-0000-4000-8000-000000000001', $1, 'web-1', 'firing', 'critical', $2) RETURNING id";

const INSERT_MANY: &str = "INSERT INTO secumon.alert_events (alert_id, rule_id, tenant_id, agent_id, event, severity, payload)
     SELECT gen_random_uuid(), '9a8b7c6d-0000-4000-8000-000000000001', $2, 'web-1', 'firing', 'critical', $3
       FROM generate_series(1, $1::int)";

/// The outbox's idempotency key → event id, to match requests with their transitions.
fn event_ids(client: &mut postgres::Client) -> HashMap<String, i64> {
    client
        .query("SELECT idempotency_key::text, event_id FROM secumon.notification_outbox", &[])
        .expect("expected to read the outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn millis(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64() * 1000.0
}

/// Start → arrival (ms) of SecuMon's requests, first arrival per notification.
fn secumon_latencies(client: &mut postgres::Client, arrivals: &[Arrival], started: &HashMap<i64, SystemTime>) -> Vec<f64> {
    let keys = event_ids(client);
    let mut seen = HashMap::new();
    for a in arrivals {
        if let Some(t0) = a.key.as_ref().and_then(|k| keys.get(k)).and_then(|id| started.get(id)) {
            seen.entry(a.key.clone()).or_insert(millis(*t0, a.at));
        }
    }
    sorted(seen.into_values().collect())
}

/// Start → arrival (ms) of Alertmanager's requests, first arrival per alert id.
fn alertmanager_latencies(arrivals: &[Arrival], started: &HashMap<String, SystemTime>) -> Vec<f64> {
    let mut seen = HashMap::new();
    for a in arrivals {
        for id in ids_in(&a.body) {
            if let Some(t0) = started.get(&id) {
                seen.entry(id).or_insert(millis(*t0, a.at));
            }
        }
    }
    sorted(seen.into_values().collect())
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(name: &str, lat: &[f64], expected: usize) {
    println!(
        "   {name:<32} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms   ({} of {expected} delivered)",
        pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1.0), lat.len()
    );
}

/// (SecuMon p50, p99, Alertmanager p50, p99).
fn latency_side_by_side(client: &mut postgres::Client, am: &Alertmanager, am_receiver: &Receiver) -> (f64, f64, f64, f64) {
    let ours = Receiver::start();
    channel(client, "lat", "webhook", json!({"url": ours.url("/hook")}), "lat");
    let mut started = HashMap::new();
    let begin = Instant::now();
    for _ in 0..ALERTS {
        let t0 = SystemTime::now();
        let id: i64 = client.query_one(INSERT_ONE, &[&"lat", &payload("lat")]).expect("insert a transition").get(0);
        started.insert(id, t0);
        std::thread::sleep(PACE);
    }
    let our_rate = ALERTS as f64 / begin.elapsed().as_secs_f64();
    wait_until(Duration::from_secs(60), || ours.delivered() >= ALERTS);
    let our = secumon_latencies(client, &ours.arrivals(), &started);

    let mut started = HashMap::new();
    let begin = Instant::now();
    for n in 0..ALERTS {
        let id = format!("lat-{n}");
        let body = format!("[{}]", alert_json(&id, "latency"));
        started.insert(id, SystemTime::now());
        am.post_alerts(&body);
        std::thread::sleep(PACE);
    }
    let their_rate = ALERTS as f64 / begin.elapsed().as_secs_f64();
    wait_until(Duration::from_secs(60), || am_receiver.delivered() >= ALERTS);
    let their = alertmanager_latencies(&am_receiver.arrivals(), &started);

    println!("1. latency to one webhook, the same {ALERTS} alerts one at a time (SecuMon {our_rate:.0}/s, one transaction each; {} {their_rate:.0}/s, one POST each):", am.version);
    row("SecuMon (from commit)", &our, ALERTS);
    row(&format!("{} (from POST)", am.version), &their, ALERTS);
    println!("   SecuMon's phases:");
    profile::print_outbox_phases(client, "lat");
    println!("   target: SecuMon p99 < 50 ms\n");
    (pct(&our, 0.5), pct(&our, 0.99), pct(&their, 0.5), pct(&their, 0.99))
}

/// Rate of `n` deliveries from `t0` to the last of them.
fn rate(n: usize, t0: Instant, arrivals: &[Arrival]) -> (f64, f64) {
    let last = arrivals.iter().filter(|a| a.status < 300).map(|a| a.instant).max().unwrap_or(t0);
    let seconds = last.duration_since(t0).as_secs_f64().max(1e-6);
    (n as f64 / seconds, seconds)
}

/// (SecuMon, Alertmanager) notifications per second.
fn throughput_side_by_side(client: &mut postgres::Client, am: &Alertmanager, am_receiver: &Receiver) -> (f64, f64) {
    let ours = Receiver::start();
    channel(client, "tp", "webhook", json!({"url": ours.url("/hook")}), "tp");
    // Both clocks start before the alerts are handed over: the INSERT that commits them, the
    // POST that Alertmanager ingests them with.
    let t0 = Instant::now();
    client.execute(INSERT_MANY, &[&(ALERTS as i32), &"tp", &payload("tp")]).expect("insert transitions");
    let our_all = wait_until(Duration::from_secs(60), || ours.delivered() >= ALERTS);
    let (our_rate, our_s) = rate(ALERTS, t0, &ours.arrivals());

    let alerts: Vec<String> = (0..ALERTS).map(|n| alert_json(&format!("tp-{n}"), "throughput")).collect();
    let body = format!("[{}]", alerts.join(","));
    let t0 = Instant::now();
    am.post_alerts(&body);
    let their_all = wait_until(Duration::from_secs(60), || am_receiver.delivered() >= ALERTS);
    let (their_rate, their_s) = rate(ALERTS, t0, &am_receiver.arrivals());
    let delivered_alerts: usize = am_receiver.arrivals().iter().map(|a| ids_in(&a.body).len()).sum();

    println!("2. throughput to one webhook, the same {ALERTS} alerts at once (connections opened: SecuMon {}, {} {}):", ours.connections(), am.version, am_receiver.connections());
    println!("   SecuMon (one transaction)       {our_rate:>7.0} notifications/s (last {our_s:.2} s after the INSERT began{})", if our_all { "" } else { ", INCOMPLETE" });
    println!(
        "   {} (one POST)  {their_rate:>7.0} notifications/s (last {their_s:.2} s after the POST began; {} requests carrying {delivered_alerts} alerts{})",
        am.version, am_receiver.count(), if their_all { "" } else { ", INCOMPLETE" }
    );
    (our_rate, their_rate)
}

fn sustained(client: &mut postgres::Client, stats: bool, threads: &str) {
    let ours = Receiver::start();
    channel(client, "bulk", "webhook", json!({"url": ours.url("/bulk")}), "bulk");
    let pid = profile::notifier_pid(client);
    if stats {
        let _ = client.execute("SELECT pg_stat_statements_reset()", &[]);
    }
    let before = profile::sample(pid);
    let t0 = Instant::now();
    client.execute(INSERT_MANY, &[&(BULK as i32), &"bulk", &payload("bulk")]).expect("insert transitions");
    let committed = t0.elapsed();
    let t0 = Instant::now();
    let all = wait_until(Duration::from_secs(120), || ours.delivered() >= BULK);
    let after = profile::sample(pid);
    let (per_second, seconds) = rate(BULK, t0, &ours.arrivals());
    let sent_ok = wait_until(Duration::from_secs(30), || {
        client
            .query_one("SELECT count(*) FROM secumon.notification_outbox WHERE channel_name = 'bulk' AND status = 'sent'", &[])
            .map(|r| r.get::<_, i64>(0) as usize == BULK)
            .unwrap_or(false)
    });
    println!("3. SecuMon sustained: {BULK} notifications committed in one transaction ({:.0} ms) to one fast webhook:", committed.as_secs_f64() * 1000.0);
    println!(
        "   {per_second:.0} notifications/s (last arrival {seconds:.2} s after the commit{}{})   target ≥ 2,000/s",
        if all { "" } else { ", INCOMPLETE" },
        if sent_ok { ", all recorded sent" } else { ", NOT all recorded" }
    );
    println!("   where the time goes ({threads} sender threads; {} connections opened for {} requests):", ours.connections(), ours.count());
    profile::print_outbox_phases(client, "bulk");
    profile::print_cpu(&before, &after);
    if stats {
        profile::print_statements(client);
    }
    println!();
}

/// What one side did against the throttling receiver.
fn describe_retries(name: &str, arrivals: &[Arrival]) {
    let Some(first) = arrivals.first().map(|a| a.instant) else {
        println!("   {name:<22} no request arrived");
        return;
    };
    let times: Vec<String> = arrivals
        .iter()
        .map(|a| format!("{:.1} s → {}", a.instant.duration_since(first).as_secs_f64(), a.status))
        .collect();
    let shortest_after_429 = arrivals
        .windows(2)
        .filter(|w| w[0].status == 429)
        .map(|w| w[1].instant.duration_since(w[0].instant).as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let delivered = arrivals.iter().find(|a| a.status < 300).map(|a| a.instant.duration_since(first).as_secs_f64());
    let honoured = shortest_after_429 >= THROTTLE.retry_after_s as f64;
    println!(
        "   {name:<22} {} requests ({}); delivered {}; shortest wait after a 429 {:.1} s: Retry-After {}",
        arrivals.len(),
        times.join(", "),
        delivered.map(|s| format!("{s:.1} s after the first attempt")).unwrap_or_else(|| "never".into()),
        shortest_after_429,
        if shortest_after_429.is_infinite() { "not tested" } else if honoured { "honoured" } else { "ignored" }
    );
}

fn retry_after(client: &mut postgres::Client, am: &Alertmanager, am_receiver: &Receiver) {
    let ours = Receiver::throttling(THROTTLE);
    channel(client, "ra", "webhook", json!({"url": ours.url("/ra")}), "ra");
    client.query_one(INSERT_ONE, &[&"ra", &payload("ra")]).expect("insert a transition");
    am.post_alerts(&format!("[{}]", alert_json("ra-1", "retry")));
    let limit = THROTTLE.for_how_long + Duration::from_secs(THROTTLE.retry_after_s + 8);
    wait_until(limit, || ours.delivered() >= 1 && am_receiver.delivered() >= 1);
    println!(
        "4. Retry-After: the receiver answers 429 with Retry-After: {} for {} s after the first request, then 204:",
        THROTTLE.retry_after_s, THROTTLE.for_how_long.as_secs()
    );
    describe_retries("SecuMon", &ours.arrivals());
    describe_retries(&am.version, &am_receiver.arrivals());
    println!("   (Alertmanager does not retry a 429 within a flush; it sends the group again every group_interval, {} s here)\n", GROUP_INTERVAL.as_secs());
}

/// SecuMon only: commit → receiver over the five HTTP channel types (each answered the way
/// that service answers).
fn latency_per_channel_type(client: &mut postgres::Client) {
    const N: usize = 500;
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
        channel(client, &format!("type-{kind}"), kind, settings, &format!("type{i}"));
    }
    let mut started = HashMap::new();
    for n in 0..N {
        let tenant = format!("type{}", n % receivers.len());
        let t0 = SystemTime::now();
        let id: i64 = client.query_one(INSERT_ONE, &[&tenant, &payload(&tenant)]).expect("insert a transition").get(0);
        started.insert(id, t0);
        std::thread::sleep(PACE);
    }
    wait_until(Duration::from_secs(60), || receivers.iter().map(|(_, r)| r.count()).sum::<usize>() >= N);
    let keys = event_ids(client);
    println!("5. SecuMon latency per channel type, commit → receiver, {N} alerts over five types (receivers close each connection):");
    for (kind, r) in &receivers {
        let lat = sorted(
            r.requests()
                .iter()
                .filter_map(|q| {
                    let t0 = keys.get(q.header("x-secumon-notification-id")?).and_then(|id| started.get(id))?;
                    Some(millis(*t0, q.received_at))
                })
                .collect(),
        );
        row(kind, &lat, N / receivers.len());
    }
    println!();
}

fn isolation(client: &mut postgres::Client, threads: &str) {
    let slow = HttpReceiver::start_answering(Reply::ok("ok").after(Duration::from_secs(2)));
    let fast = Receiver::start();
    channel(client, "iso-slow", "webhook", json!({"url": slow.url("/slow"), "timeout_ms": 10000}), "iso");
    channel(client, "iso-fast", "webhook", json!({"url": fast.url("/fast")}), "iso");
    let mut started = HashMap::new();
    for _ in 0..200 {
        let t0 = SystemTime::now();
        let id: i64 = client.query_one(INSERT_ONE, &[&"iso", &payload("iso")]).expect("insert a transition").get(0);
        started.insert(id, t0);
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_until(Duration::from_secs(30), || fast.delivered() >= 200);
    let lat = secumon_latencies(client, &fast.arrivals(), &started);
    println!("6. SecuMon isolation: 200 alerts to a receiver answering after 2 s and to a fast one (both routed every alert):");
    println!(
        "   fast channel p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; slow channel delivered {} so far ({threads} sender threads)\n",
        pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 1.0), slow.count()
    );
}
