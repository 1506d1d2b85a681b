//! The "secumon notifier" background worker: claims due outbox rows, sends each on its own
//! thread, records the outcomes.
//!
//! (One file of some 650 lines: one loop and the `Dispatcher` state its claim, send and record
//! steps share; their invariants, such as a lease outliving every send, read best together.)
//!
//! Every PostgreSQL call happens on this worker's main thread; sender threads run plain Rust
//! (`secumon_notify_core::deliver`) and hand their reports back over a channel. The main thread
//! sleeps on its latch, which committing backends set (see `_wake_notifier_at_commit`), so a
//! notification leaves within milliseconds of its commit. While deliveries are in flight it
//! wakes every couple of milliseconds to collect results; otherwise it sleeps until the next
//! retry is due or `secumon.notify_poll_interval` passes.
//!
//! Transactions are short: one to claim (rows become 'sending' with a lease), none while
//! sending, one to record. A crash leaves rows 'sending'; the next start puts them back to
//! 'pending' (at-least-once; receivers de-duplicate on the notification id).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};
use secumon_notify_core::{self as notify_core, Outcome, RetryPolicy, Step};
use serde_json::{json, Value};

use super::gucs;
use crate::background::{self, guarded, try_guarded};
use crate::scheduler;

/// Name of this worker in `secumon._jobs.worker`.
pub const WORKER: &str = "notifier";
/// Claim lease: longer than the longest allowed attempt (600 s), so a live dispatcher never
/// sees its own in-flight rows re-claimed.
const LEASE: &str = "15 minutes";
/// Wake-up period while deliveries are in flight.
const BUSY_TICK: Duration = Duration::from_millis(2);
/// How often expiry, default channels and scheduled jobs are looked at.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);
/// Notifications claimed ahead per sender thread, so a thread finds its next job queued while
/// the main thread records and claims.
const PER_THREAD: i32 = 8;
/// Wait before claiming, or recording results, again after giving way to another session's lock.
const LOCK_RETRY: Duration = Duration::from_secs(1);
/// Grace for in-flight deliveries at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

struct Claimed {
    id: i64,
    key: String,
    channel_id: i32,
    channel_name: String,
    channel_type: String,
    settings: Value,
    event_id: i64,
    event: String,
    event_at: String,
    payload: Value,
    attempts: i32,
    age_seconds: f64,
    /// Why the row's settings or payload could not be read (e.g. JSON nested too deep); such a
    /// notification fails alone instead of the claim.
    problem: Option<String>,
}

/// One delivery for a sender thread.
struct Job {
    channel: notify_core::Channel,
    notification: notify_core::Notification,
    options: notify_core::DeliveryOptions,
    http: notify_core::ureq::Agent,
    template: Finished,
}

/// A channel's queue and its sender threads.
struct Lane {
    jobs: Sender<Job>,
    queue: Arc<Mutex<Receiver<Job>>>,
    threads: usize,
}

impl Lane {
    fn send(&self, job: Job) {
        // The threads hold the receiving end for the life of the process.
        let _ = self.jobs.send(job);
    }
}

struct Finished {
    id: i64,
    channel_id: i32,
    channel_name: String,
    attempts: u32,
    /// Age of the notification when it was claimed, and when that was.
    age_at_claim: Duration,
    claimed_at: Instant,
    finished_at: Instant,
    report: notify_core::Report,
}

pub struct Dispatcher {
    tx: Sender<Finished>,
    rx: Receiver<Finished>,
    in_flight: usize,
    per_channel: HashMap<i32, i32>,
    http: notify_core::ureq::Agent,
    /// What `http` was made for: connect and total timeouts, sender threads per channel.
    http_options: (Duration, Duration, usize),
    claim_needed: bool,
    next_due: Option<Instant>,
    last_claim: Instant,
    last_housekeeping: Option<Instant>,
    default_channels: Option<Vec<(String, String, Option<Value>)>>,
    lanes: HashMap<i32, Lane>,
    /// Finished deliveries whose recording gave way to another session's lock; recorded with
    /// the next ones (they stay in flight until then).
    unrecorded: Vec<Finished>,
    /// After a claim gave way to another session's lock, no claim before this (however often
    /// the latch is set), so the notifier does not sit in that lock's queue.
    claim_blocked_until: Option<Instant>,
}

/// Entry point body of the "secumon notifier" worker, once connected (background::start_worker).
pub fn run() {
    // SAFETY: MyProcPid is set for the life of this process.
    let my_pid = unsafe { pg_sys::MyProcPid };
    super::set_notifier_pid(my_pid);

    let mut dispatcher = Dispatcher::new();
    let mut ready = false;
    let mut readiness = background::Readiness::default();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: called from the worker's main thread between transactions, as the
            // postmaster's own processes do after SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            dispatcher.claim_needed = true;
            dispatcher.last_housekeeping = None;
        }
        let timeout = if ready {
            dispatcher.cycle();
            dispatcher.next_wait()
        } else if readiness.check() {
            ready = true;
            dispatcher.start();
            continue;
        } else {
            Duration::from_secs(1)
        };
        match wait_latch(timeout) {
            None => break,
            Some(latch_set) => dispatcher.claim_needed |= latch_set,
        }
    }
    if ready {
        dispatcher.shutdown();
    }
    super::set_notifier_pid(0);
}

/// Sleeps on the latch; `None` on SIGTERM or postmaster death, else whether the latch was set.
fn wait_latch(timeout: Duration) -> Option<bool> {
    // SAFETY: MyLatch is this process's latch, valid for its life; WaitLatch and ResetLatch are
    // called from its only thread.
    let events = unsafe {
        let events = pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_POSTMASTER_DEATH) as i32,
            timeout.as_millis().clamp(1, i32::MAX as u128) as libc_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        pg_sys::check_for_interrupts!();
        events
    };
    if events & pg_sys::WL_POSTMASTER_DEATH as i32 != 0 || BackgroundWorker::sigterm_received() {
        return None;
    }
    Some(events & pg_sys::WL_LATCH_SET as i32 != 0)
}

#[allow(non_camel_case_types)]
type libc_long = std::os::raw::c_long;


/// secumon.notify_channel_parallel: sender threads per channel.
fn channel_threads() -> usize {
    gucs::CHANNEL_PARALLEL.get().max(1) as usize
}

fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: gucs::MAX_ATTEMPTS.get().max(1) as u32,
        max_age: Duration::from_secs(gucs::MAX_AGE.get().max(1) as u64),
        backoff_base: gucs::millis(&gucs::BACKOFF_BASE),
        backoff_max: gucs::millis(&gucs::BACKOFF_MAX),
    }
}

impl Dispatcher {
    fn new() -> Dispatcher {
        let (tx, rx) = mpsc::channel();
        let options = super::delivery_options();
        let threads = channel_threads();
        Dispatcher {
            tx,
            rx,
            in_flight: 0,
            per_channel: HashMap::new(),
            http: notify_core::http_agent_pooled(&options, threads),
            http_options: (options.connect_timeout, options.timeout, threads),
            claim_needed: true,
            next_due: None,
            last_claim: Instant::now(),
            last_housekeeping: None,
            default_channels: None,
            lanes: HashMap::new(),
            unrecorded: Vec::new(),
            claim_blocked_until: None,
        }
    }

    /// First cycle after the extension is there: nothing can be in flight after a restart.
    fn start(&mut self) {
        // The notifier's own transactions (claims, results, housekeeping) do not wait for their
        // WAL to reach disk. A crash can only lose the newest of them, and whatever it loses
        // leaves rows 'pending' or 'sending' — sent again after the restart (see below), never
        // lost: the at-least-once a crash mid-send already means. WAL is flushed in order, so
        // what survives is a prefix of what was done and "resolved never overtakes firing"
        // still holds. The alert engine's transitions keep the server's synchronous_commit.
        // This saves a WAL flush per claim and per record (one is on every notification's way
        // to its receiver; ~1 ms each on this machine's disk, more on network storage).
        guarded(|| {
            if let Err(e) = Spi::run("SET synchronous_commit TO off") {
                warning!("secumon notifier: cannot turn synchronous_commit off for its own transactions: {e}");
            }
        });
        let requeued = guarded(|| {
            Spi::get_one::<i32>("SELECT secumon._notification_requeue_in_flight()").ok().flatten().unwrap_or(0)
        });
        if requeued > 0 {
            log!("secumon notifier: {requeued} notifications were in flight at the last stop; sending them again");
        }
        self.claim_needed = true;
    }

    fn cycle(&mut self) {
        if self.record_finished() {
            self.claim_needed = true;
        }
        let now = Instant::now();
        if self.next_due.is_some_and(|due| due <= now)
            || now.duration_since(self.last_claim) >= gucs::millis(&gucs::POLL_INTERVAL)
        {
            self.claim_needed = true;
        }
        if self.last_housekeeping.is_none_or(|t| now.duration_since(t) >= HOUSEKEEPING_EVERY) {
            self.housekeeping();
            self.last_housekeeping = Some(now);
        }
        let max_parallel = gucs::MAX_PARALLEL.get().max(1) as usize;
        let claim_blocked = self.claim_blocked_until.is_some_and(|until| now < until);
        if self.claim_needed && self.in_flight < max_parallel && !claim_blocked {
            self.claim_and_send(max_parallel - self.in_flight);
        }
    }

    fn next_wait(&self) -> Duration {
        if !self.unrecorded.is_empty() {
            // Recording gave way to a lock: try again soon, not every tick.
            return LOCK_RETRY;
        }
        if self.in_flight > 0 {
            return BUSY_TICK;
        }
        if let Some(until) = self.claim_blocked_until.filter(|until| *until > Instant::now()) {
            return until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        }
        let poll = gucs::millis(&gucs::POLL_INTERVAL).max(Duration::from_millis(10));
        match self.next_due {
            Some(due) => due.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), poll),
            None => poll,
        }
    }

    fn housekeeping(&mut self) {
        let max_age = format!("{} seconds", gucs::MAX_AGE.get().max(1));
        let expired = guarded(|| {
            Spi::get_one_with_args::<i32>("SELECT secumon._notification_expire($1::interval)", &[max_age.as_str().into()])
                .ok()
                .flatten()
                .unwrap_or(0)
        });
        if expired > 0 {
            log!("secumon notifier: {expired} notifications could not be sent in time and were marked failed");
        }
        self.sync_default_channels();
        scheduler::run_due_jobs(WORKER);
    }

    /// Creates, refreshes or removes the channels named by secumon.webhook_url and friends.
    fn sync_default_channels(&mut self) {
        let wanted = default_channels();
        if self.default_channels.as_ref() == Some(&wanted) {
            return;
        }
        guarded(|| {
            for (name, kind, settings) in &wanted {
                let settings = match settings {
                    Some(s) => match notify_core::Channel::parse(name, kind, s) {
                        Ok(_) => Some(JsonB(s.clone())),
                        Err(problem) => {
                            warning!("secumon notifier: default channel {name} not created: {problem}");
                            continue;
                        }
                    },
                    None => None,
                };
                if let Err(e) = Spi::run_with_args(
                    "SELECT secumon._notification_default_channel($1, $2, $3)",
                    &[name.as_str().into(), kind.as_str().into(), settings.into()],
                ) {
                    warning!("secumon notifier: default channel {name} not updated: {e}");
                }
            }
        });
        self.default_channels = Some(wanted);
    }

    fn claim_and_send(&mut self, capacity: usize) {
        self.claim_needed = false;
        self.last_claim = Instant::now();
        let options = super::delivery_options();
        let threads_per_channel = channel_threads();
        let wanted = (options.connect_timeout, options.timeout, threads_per_channel);
        if wanted != self.http_options {
            // Every sender thread of a channel keeps its connection to the receiver alive.
            self.http = notify_core::http_agent_pooled(&options, threads_per_channel);
            self.http_options = wanted;
        }
        let (busy_ids, busy_counts): (Vec<i32>, Vec<i32>) =
            self.per_channel.iter().filter(|(_, n)| **n > 0).map(|(c, n)| (*c, *n)).unzip();
        let threads_per_channel = threads_per_channel as i32;
        let per_channel = threads_per_channel * PER_THREAD;
        let claimed = try_guarded(|| {
            let result = Spi::connect_mut(|client| {
                let table = client.update(
                    "SELECT notification_id, idempotency_key::text, channel_id, channel_name, channel_type, settings::text, \
                            event_id, event, event_at, payload::text, attempts, age_seconds \
                       FROM secumon._notification_claim($1, $2::interval, $3, $4, $5)",
                    None,
                    &[(capacity as i32).into(), LEASE.into(), per_channel.into(), busy_ids.into(), busy_counts.into()],
                )?;
                let mut rows = Vec::new();
                for row in table {
                    let mut problem = None;
                    let mut json = |column: usize, what: &str| -> Result<Value, pgrx::spi::Error> {
                        let text = row.get::<String>(column)?.unwrap_or_default();
                        Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
                            problem = Some(format!("its {what} cannot be read: {e}"));
                            Value::Null
                        }))
                    };
                    let settings = json(6, "channel settings")?;
                    let payload = json(10, "alert payload")?;
                    rows.push(Claimed {
                        id: row.get::<i64>(1)?.unwrap_or_default(),
                        key: row.get::<String>(2)?.unwrap_or_default(),
                        channel_id: row.get::<i32>(3)?.unwrap_or_default(),
                        channel_name: row.get::<String>(4)?.unwrap_or_default(),
                        channel_type: row.get::<String>(5)?.unwrap_or_default(),
                        settings,
                        event_id: row.get::<i64>(7)?.unwrap_or_default(),
                        event: row.get::<String>(8)?.unwrap_or_default(),
                        event_at: row.get::<String>(9)?.unwrap_or_default(),
                        payload,
                        attempts: row.get::<i32>(11)?.unwrap_or(1),
                        age_seconds: row.get::<f64>(12)?.unwrap_or(0.0),
                        problem,
                    });
                }
                // Only needed to decide how long to sleep when nothing is in flight.
                let next_due = if rows.is_empty() && self.in_flight == 0 {
                    client.select("SELECT secumon._notification_next_due()", None, &[])?.first().get_one::<f64>()?
                } else {
                    None
                };
                Ok::<_, pgrx::spi::Error>((rows, next_due))
            });
            match result {
                Ok(claimed) => claimed,
                // Roll the claim back: rows must not stay 'sending' without a sender.
                Err(e) => error!("secumon notifier: claiming notifications failed: {e}"),
            }
        });
        let Some((rows, next_due)) = claimed else {
            // Gave way to another session's lock (or the extension is gone): try again later.
            self.claim_blocked_until = Some(Instant::now() + LOCK_RETRY);
            self.claim_needed = true;
            return;
        };
        self.claim_blocked_until = None;
        self.next_due = next_due.map(|secs| {
            // Due work we could not take (capacity, ordering) is looked at again when
            // deliveries finish; this bounds how often a blocked backlog is re-read.
            // max/min, not clamp: a NaN becomes 0.25 s instead of a panic.
            #[allow(clippy::manual_clamp)]
            let secs = secs.max(0.25).min(86_400.0);
            Instant::now() + Duration::from_secs_f64(secs)
        });
        if rows.len() == capacity {
            self.claim_needed = true;
        }
        // Each channel has its own sender threads (its lane), so a slow receiver only slows
        // itself; they take jobs from the lane's queue as they finish the previous one.
        for row in rows {
            let channel_id = row.channel_id;
            if let Some(job) = self.prepare(row) {
                self.lane(channel_id, threads_per_channel as usize).send(job);
            }
        }
    }

    /// The sender threads of a channel, started on first use (and added to when
    /// secumon.notify_channel_parallel grows).
    fn lane(&mut self, channel_id: i32, threads: usize) -> &Lane {
        let lane = self.lanes.entry(channel_id).or_insert_with(|| {
            let (jobs, queue) = mpsc::channel::<Job>();
            Lane { jobs, queue: Arc::new(Mutex::new(queue)), threads: 0 }
        });
        while lane.threads < threads {
            let queue = lane.queue.clone();
            let tx = self.tx.clone();
            let spawned = std::thread::Builder::new().name(format!("secumon-send-{channel_id}")).spawn(move || loop {
                let job = match queue.lock() {
                    Ok(queue) => queue.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let report = notify_core::attempt_catching_panics(|| {
                    notify_core::deliver(&job.channel, &job.notification, &job.options, &job.http)
                });
                let _ = tx.send(Finished { finished_at: Instant::now(), report, ..job.template });
            });
            match spawned {
                Ok(_) => lane.threads += 1,
                Err(e) => {
                    warning!("secumon notifier: could not start a sender thread: {e}");
                    break;
                }
            }
        }
        lane
    }

    /// Counts the row as in flight and makes its job; rows with unusable settings are
    /// reported failed at once.
    fn prepare(&mut self, row: Claimed) -> Option<Job> {
        self.in_flight += 1;
        *self.per_channel.entry(row.channel_id).or_insert(0) += 1;
        let claimed_at = Instant::now();
        let finished = |report: notify_core::Report| Finished {
            id: row.id,
            channel_id: row.channel_id,
            channel_name: row.channel_name.clone(),
            attempts: row.attempts.max(1) as u32,
            age_at_claim: Duration::from_secs_f64(row.age_seconds.max(0.0)),
            claimed_at,
            finished_at: Instant::now(),
            report,
        };
        let parsed = match &row.problem {
            Some(problem) => Err(problem.clone()),
            None => notify_core::Channel::parse(&row.channel_name, &row.channel_type, &row.settings)
                .map_err(|problem| format!("invalid channel settings: {problem}")),
        };
        let channel = match parsed {
            Ok(channel) => channel,
            Err(reason) => {
                let report = notify_core::Report {
                    outcome: Outcome::Permanent { reason },
                    status: None,
                    response: String::new(),
                    error: None,
                    latency: Duration::ZERO,
                };
                let _ = self.tx.send(finished(report));
                return None;
            }
        };
        let notification = notify_core::Notification {
            id: row.id,
            key: row.key.clone(),
            event_id: row.event_id,
            event: row.event.clone(),
            alert: row.payload.clone(),
            occurred_at: row.event_at.clone(),
        };
        Some(Job {
            channel,
            notification,
            options: super::delivery_options(),
            http: self.http.clone(),
            template: finished(placeholder_report()),
        })
    }

    /// Records every finished delivery in one transaction. True if any was recorded.
    fn record_finished(&mut self) -> bool {
        let mut done = std::mem::take(&mut self.unrecorded);
        while let Ok(finished) = self.rx.try_recv() {
            done.push(finished);
        }
        if done.is_empty() {
            return false;
        }
        self.record(done);
        true
    }

    fn record(&mut self, done: Vec<Finished>) {
        let policy = retry_policy();
        let n = done.len();
        let mut ids = Vec::with_capacity(n);
        let mut outcomes = Vec::with_capacity(n);
        let mut delays = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut responses = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut latencies = Vec::with_capacity(n);
        let mut finished_ago = Vec::with_capacity(n);
        let now = Instant::now();
        for f in &done {
            let age = f.age_at_claim + f.finished_at.duration_since(f.claimed_at);
            let step = policy.next_step(&f.report.outcome, f.attempts, age, notify_core::policy::random_jitter());
            let (outcome, delay, error) = match &step {
                Step::Sent => ("sent", 0.0, None),
                Step::RetryIn(delay) => ("retry", delay.as_secs_f64() * 1000.0, f.report.outcome.reason().map(str::to_string)),
                Step::Failed(reason) => ("failed", 0.0, Some(reason.clone())),
            };
            match &step {
                Step::Failed(reason) => log!(
                    "secumon notifier: notification {} to channel \"{}\" failed after {} attempt(s): {reason}",
                    f.id, f.channel_name, f.attempts
                ),
                Step::RetryIn(delay) => debug1!(
                    "secumon notifier: notification {} to channel \"{}\" will be retried in {:.1} s: {}",
                    f.id, f.channel_name, delay.as_secs_f64(), f.report.outcome.reason().unwrap_or("")
                ),
                Step::Sent => {}
            }
            ids.push(f.id);
            outcomes.push(outcome.to_string());
            delays.push(delay);
            statuses.push(f.report.status.map(i32::from));
            responses.push(Some(f.report.response.clone()).filter(|r| !r.is_empty()));
            errors.push(error);
            latencies.push(f.report.latency.as_secs_f64() * 1000.0);
            finished_ago.push(now.duration_since(f.finished_at).as_secs_f64() * 1000.0);
        }
        let recorded = try_guarded(|| {
            if let Err(e) = Spi::run_with_args(
                "SELECT secumon._notification_record($1, $2, $3, $4, $5, $6, $7, $8)",
                &[ids.into(), outcomes.into(), delays.into(), statuses.into(), responses.into(), errors.into(), latencies.into(), finished_ago.into()],
            ) {
                // The rows stay 'sending' and are sent again after a restart: at-least-once.
                warning!("secumon notifier: recording {n} delivery results failed: {e}");
            }
        });
        if recorded.is_none() {
            // Gave way to another session's lock (or the extension is gone): keep the results
            // and try again next cycle; the rows stay ours ('sending') meanwhile.
            self.unrecorded = done;
            return;
        }
        for f in done {
            self.in_flight = self.in_flight.saturating_sub(1);
            if let Some(count) = self.per_channel.get_mut(&f.channel_id) {
                *count -= 1;
                if *count <= 0 {
                    self.per_channel.remove(&f.channel_id);
                }
            }
        }
    }

    /// Gives deliveries in flight a moment to finish so their outcome is recorded; the rest
    /// are sent again after the restart.
    fn shutdown(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut done = std::mem::take(&mut self.unrecorded);
        while self.in_flight > done.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(f) => done.push(f),
                Err(_) => break,
            }
        }
        if !done.is_empty() {
            self.record(done);
        }
    }
}

fn placeholder_report() -> notify_core::Report {
    notify_core::Report {
        outcome: Outcome::Retryable { reason: "not sent".into(), retry_after: None },
        status: None,
        response: String::new(),
        error: None,
        latency: Duration::ZERO,
    }
}

/// The channels the settings ask for: (name, type, settings or None to remove).
fn default_channels() -> Vec<(String, String, Option<Value>)> {
    let url = |setting| gucs::text(setting).map(|url| json!({ "url": url }));
    let telegram = match (gucs::text(&gucs::TELEGRAM_BOT_TOKEN), gucs::text(&gucs::TELEGRAM_CHAT_ID)) {
        (Some(token), Some(chat)) => {
            let chat_id = chat.parse::<i64>().map(Value::from).unwrap_or(Value::String(chat));
            let mut settings = json!({ "bot_token": token, "chat_id": chat_id });
            if let Some(api) = gucs::text(&gucs::TELEGRAM_API_URL) {
                settings["api_url"] = Value::String(api);
            }
            Some(settings)
        }
        _ => None,
    };
    let pagerduty = gucs::text(&gucs::PAGERDUTY_ROUTING_KEY).map(|key| {
        let mut settings = json!({ "routing_key": key });
        if let Some(events_url) = gucs::text(&gucs::PAGERDUTY_EVENTS_URL) {
            settings["url"] = Value::String(events_url);
        }
        settings
    });
    vec![
        ("default-webhook".into(), "webhook".into(), url(&gucs::WEBHOOK_URL)),
        ("default-slack".into(), "slack".into(), url(&gucs::SLACK_WEBHOOK_URL)),
        ("default-teams".into(), "teams".into(), url(&gucs::TEAMS_WEBHOOK_URL)),
        ("default-telegram".into(), "telegram".into(), telegram),
        ("default-pagerduty".into(), "pagerduty".into(), pagerduty),
    ]
}
