//! Where the time of a delivery run goes: CPU per thread of the notifier process (its main
//! thread claims and records, its sender threads build payloads and do HTTP), of the benchmark
//! process (the receiver) and of the whole machine, plus the dispatcher's statements as
//! pg_stat_statements saw them and the claim cadence read back from the outbox.

use std::collections::BTreeMap;
use std::time::Instant;

use secumon_e2e::postgres;

fn ticks_per_second() -> f64 {
    100.0 // USER_HZ on Linux
}

/// utime + stime of a /proc/<...>/stat line, in ticks, and the thread's name.
fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After "pid (comm) ": state is field 0, utime 11, stime 12.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, ticks))
}

/// CPU ticks per group of threads of process `pid`: its main thread, its sender threads.
fn threads(pid: i32) -> BTreeMap<String, (u64, usize)> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return groups };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().to_string();
        let Some((name, ticks)) = stat_ticks(&format!("/proc/{pid}/task/{tid}/stat")) else { continue };
        let group = if tid == pid.to_string() {
            "main thread (claim, record)".to_string()
        } else if name.starts_with("secumon-send") {
            "sender threads (payload, HTTP)".to_string()
        } else {
            "other threads".to_string()
        };
        let entry = groups.entry(group).or_insert((0, 0));
        entry.0 += ticks;
        entry.1 += 1;
    }
    groups
}

/// (busy, total) jiffies of all CPUs.
fn machine() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = text.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

pub struct Sample {
    at: Instant,
    notifier: BTreeMap<String, (u64, usize)>,
    me: u64,
    machine: (u64, u64),
}

pub fn notifier_pid(client: &mut postgres::Client) -> Option<i32> {
    client
        .query_opt("SELECT pid FROM pg_stat_activity WHERE backend_type = 'secumon notifier'", &[])
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

pub fn sample(pid: Option<i32>) -> Sample {
    Sample {
        at: Instant::now(),
        notifier: pid.map(threads).unwrap_or_default(),
        me: stat_ticks("/proc/self/stat").map(|(_, t)| t).unwrap_or(0),
        machine: machine(),
    }
}

/// Prints the CPU used between `before` and `after`, in % of one core.
pub fn print_cpu(before: &Sample, after: &Sample) {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-6);
    let pct = |ticks: u64| 100.0 * ticks as f64 / ticks_per_second() / seconds;
    for (group, (ticks, n)) in &after.notifier {
        let was = before.notifier.get(group).map(|(t, _)| *t).unwrap_or(0);
        println!("     notifier {group:<32} {:>5.0}% of a core ({n} threads)", pct(ticks - was.min(*ticks)));
    }
    println!("     benchmark process (receiver, client)      {:>5.0}% of a core", pct(after.me - before.me));
    let (busy, total) = (after.machine.0 - before.machine.0, (after.machine.1 - before.machine.1).max(1));
    println!("     whole machine                             {:>5.0}% busy of {} cores", 100.0 * busy as f64 / total as f64, crate::cpus());
}

/// pg_stat_statements' view of the dispatcher's statements since the last reset (nested
/// statements included: a function's own statements appear beside its call).
pub fn print_statements(client: &mut postgres::Client) {
    let rows = client.query(
        "SELECT calls, total_exec_time, mean_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 80)
           FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query !~* 'pg_stat_statements'
          ORDER BY total_exec_time DESC LIMIT 8",
        &[],
    );
    match rows {
        Ok(rows) => {
            println!("     statements (pg_stat_statements, nested included), by total time:");
            for r in rows {
                println!(
                    "       {:>6} calls {:>8.1} ms total {:>7.3} ms each {:>7} rows  {}",
                    r.get::<_, i64>(0), r.get::<_, f64>(1), r.get::<_, f64>(2), r.get::<_, i64>(3), r.get::<_, String>(4)
                );
            }
        }
        Err(e) => println!("     (pg_stat_statements unavailable: {e})"),
    }
}

/// The claim cadence of `channel`'s notifications, read back from the outbox: a claim
/// transaction stamps its rows' last_attempt_at with its start time.
pub fn print_outbox_phases(client: &mut postgres::Client, channel: &str) {
    let row = client
        .query_one(
            "SELECT avg(1000 * extract(epoch FROM last_attempt_at - created_at))::float8,
                    count(DISTINCT last_attempt_at),
                    count(*)::float8 / greatest(count(DISTINCT last_attempt_at), 1),
                    1000 * extract(epoch FROM max(last_attempt_at) - min(last_attempt_at))::float8
                         / greatest(count(DISTINCT last_attempt_at) - 1, 1),
                    avg(1000 * extract(epoch FROM sent_at - last_attempt_at))::float8,
                    avg(latency_ms)::float8
               FROM secumon.notification_outbox WHERE channel_name = $1 AND status = 'sent'",
            &[&channel],
        )
        .expect("expected to read the outbox");
    let ms = |i: usize| row.get::<_, Option<f64>>(i).unwrap_or(f64::NAN);
    println!(
        "     {} claim transactions, {:.1} rows each, one every {:.2} ms; on average transition's transaction → claimed {:.2} ms, \
         claimed → HTTP answered {:.2} ms (of which the HTTP request {:.2} ms)",
        row.get::<_, i64>(1), ms(2), ms(3), ms(0), ms(4), ms(5)
    );
}
