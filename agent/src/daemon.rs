//! The agent's two modes that touch the database.
//!
//! Daemon mode runs two threads so a slow or absent database never delays collection:
//! the main thread collects on schedule into the spool; the shipper thread connects
//! (with backoff), registers, and replays the spool oldest-first. A report leaves the
//! spool only once `secumon.ingest` answered.
//!
//! SIGHUP reloads the configuration in the main thread (see [`crate::reload`]). A new
//! connection string or new labels reach the shipper as a [`Target`] it picks up between
//! two reports: it closes its connection and connects to the new one, and the spool —
//! including every report collected for the old database and not yet shipped — simply
//! drains there. Nothing is taken out of the spool for a reload.

use secumon_backoff::{Backoff, Jitter};
use crate::collect::Collector;
use crate::config::{format_duration, Config};
use crate::db::{self, ConnectOptions, Db, ErrorKind};
use crate::inputs::schedule::{self, Inputs};
use crate::reload;
use crate::report::{is_input_series, AgentInfo, Report};
use crate::signals::{self, Wake};
use crate::spool::Spool;
use crate::{log_debug, log_error, log_info, log_warn};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a stopping agent keeps trying to empty its spool.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// `database` for logs: password masked, or where libpq will look instead.
pub fn describe_database(conninfo: &str) -> String {
    if conninfo.trim().is_empty() {
        "(libpq defaults and PG* environment variables)".to_string()
    } else {
        crate::mask::mask_conninfo(conninfo)
    }
}

/// One report for `--once` and `--dry-run`: the host collection and every input of `cfg`
/// once, side by side (the inputs are bounded by their timeouts).
pub fn collect_once(cfg: &Config, collector: &mut Collector) -> Report {
    let (mut report, samples) = thread::scope(|scope| {
        let inputs =
            (!schedule::jobs(cfg).is_empty()).then(|| scope.spawn(|| schedule::run_all_once(cfg)));
        let report = collector.collect();
        let samples = inputs.map(|h| h.join().unwrap_or_default());
        (report, samples.unwrap_or_default())
    });
    let fresh: BTreeMap<String, (f64, Duration)> = samples
        .into_iter()
        .map(|s| (s.key, (s.value, cfg.interval)))
        .collect();
    let offered = fresh.len();
    let dropped = schedule::Layout::default().fill(&mut report, fresh, Instant::now());
    if dropped > 0 {
        log_error!(
            "dropped {dropped} of {offered} input sample(s): a report carries at most {} series",
            schedule::MAX_REPORT_SERIES
        );
    }
    report
}

/// Whether the database refused a report over its series: too many distinct series for
/// this agent (54000, `secumon.max_series_per_agent`) or an invalid series (22023).
fn refuses_series(e: &db::Error) -> bool {
    e.kind() == ErrorKind::Sql && matches!(e.sqlstate(), Some("54000" | "22023"))
}

/// What the database made of this agent's input series (custom and probe): the keys of stored
/// reports, and the keys it refused lately, which stay out of reports until `retry_at`, so an
/// agent over its series cap does not make the database parse and refuse them in every report.
#[derive(Debug, Default)]
pub struct SeriesMemory {
    pub accepted: BTreeSet<String>,
    refused: BTreeSet<String>,
    retry_at: Option<Instant>,
}

/// How long input series the database refused stay out of reports before they are offered again.
pub const REFUSED_SERIES_RETRY: Duration = Duration::from_secs(600);

/// Ingests `report`; if the database refuses its series (see [`refuses_series`]) and it
/// carries input series the database never stored, ingests it once more without those,
/// so the host series (and the input series stored before) are never lost, and logs one
/// error line with the database's message and what was left out (and for how long).
pub fn ingest_with_fallback(
    db: &mut Db,
    report: &Report,
    memory: &mut SeriesMemory,
) -> db::Result<bool> {
    let db = std::cell::RefCell::new(db);
    ingest_or_retry(
        &mut |r| db.borrow_mut().ingest(r),
        &mut || db.borrow_mut().stored_series(&report.agent_id),
        report,
        memory,
        Instant::now(),
    )
}

/// [`ingest_with_fallback`] over any `ingest` (tests pass a fake database) at time `now`.
/// `stored_series` asks the database which series the agent stored before (after a restart,
/// or in `--once`, `memory` knows none).
fn ingest_or_retry(
    ingest: &mut dyn FnMut(&Report) -> db::Result<bool>,
    stored_series: &mut dyn FnMut() -> db::Result<Vec<String>>,
    report: &Report,
    memory: &mut SeriesMemory,
    now: Instant,
) -> db::Result<bool> {
    if memory.retry_at.is_some_and(|t| now >= t) {
        memory.refused.clear();
        memory.retry_at = None;
    }
    let remember = |accepted: &mut BTreeSet<String>, r: &Report| {
        for key in r.series.keys().filter(|k| is_input_series(k)) {
            if !accepted.contains(key) {
                accepted.insert(key.clone());
            }
        }
    };
    // Series refused lately stay out (said when they were refused).
    let offered;
    let report = if memory.refused.is_empty() {
        report
    } else {
        let mut kept = report.clone();
        kept.series.retain(|key, _| !memory.refused.contains(key));
        offered = kept;
        &offered
    };
    let refused = match ingest(report) {
        Ok(stored) => {
            remember(&mut memory.accepted, report);
            return Ok(stored);
        }
        Err(e) if refuses_series(&e) => e,
        Err(e) => return Err(e),
    };
    match stored_series() {
        Ok(keys) => memory
            .accepted
            .extend(keys.into_iter().filter(|k| is_input_series(k))),
        Err(e) => log_warn!("cannot read the series stored for {}: {e}", report.agent_id),
    }
    let (reduced, keys, values) = report.keeping_input_series(&memory.accepted);
    if keys == 0 {
        return Err(refused);
    }
    let stored = ingest(&reduced)?;
    remember(&mut memory.accepted, &reduced);
    memory.refused.extend(
        report
            .series
            .keys()
            .filter(|k| is_input_series(k) && !reduced.series.contains_key(*k))
            .cloned(),
    );
    memory.retry_at = Some(now + REFUSED_SERIES_RETRY);
    log_error!(
        "the database refused the series of the report of {}: {refused}; stored it without its {keys} custom/probe series the database has not stored before ({values} sample(s) dropped); they stay out of reports for {}, then are offered again",
        report.time,
        crate::config::format_duration(REFUSED_SERIES_RETRY)
    );
    Ok(stored)
}

/// `--once`: connect, register, collect one report (inputs included), ingest it.
/// The error is one line.
pub fn run_once(cfg: &Config) -> Result<bool, String> {
    let mut collector = Collector::new(cfg);
    let opts = ConnectOptions {
        interrupt: Some(signals::stop_flag()),
        ..Default::default()
    };
    let mut db = Db::connect_with(&cfg.database, &opts)
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    log_info!("connected to {}", db.target());
    db.register(&collector.agent_info())
        .map_err(|e| format!("cannot register agent {:?}: {e}", cfg.agent_id))?;
    let report = collect_once(cfg, &mut collector);
    let stored = ingest_with_fallback(&mut db, &report, &mut SeriesMemory::default())
        .map_err(|e| format!("cannot ingest the report of {}: {e}", report.time))?;
    log_info!(
        "report of {} ({} rows) {}",
        report.time,
        report.row_count(),
        if stored {
            "stored"
        } else {
            "was already stored"
        }
    );
    Ok(stored)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the agent from spooling.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// When the collection after the one due at `last` is due. If the agent fell behind
/// (suspend, overloaded host) it skips the missed ticks rather than bursting.
fn next_due(last: Instant, interval: Duration, now: Instant) -> Instant {
    let next = last + interval;
    if next <= now {
        log_debug!("collection fell behind by {:?}", now - next);
        now + interval
    } else {
        next
    }
}

/// When the next collection is due after a reload changed the interval: the new
/// interval counted from the last collection, or now if that much time has passed
/// already (a 1 h interval shortened to 10 s collects at once, not in an hour).
fn due_after_reload(last: Instant, interval: Duration, now: Instant) -> Instant {
    (last + interval).max(now)
}

/// Daemon mode; returns when SIGINT/SIGTERM arrives (after a bounded flush).
/// SIGHUP re-reads the configuration and applies it without stopping.
/// Errors are start-up failures, e.g. an unusable spool directory.
pub fn run(cfg: &Config) -> Result<(), String> {
    let spool = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes).map_err(|e| e.to_string())?;
    log_info!(
        "secumon-agent {} starting: agent_id={} interval={} spool={} ({} reports waiting, max {} bytes) database={}",
        crate::VERSION,
        cfg.agent_id,
        format_duration(cfg.interval),
        cfg.spool_dir.display(),
        spool.len(),
        cfg.spool_max_bytes,
        describe_database(&cfg.database)
    );
    let spool = Arc::new(Mutex::new(spool));
    // Before spawning: the shipper inherits the mask, so signals always reach this thread.
    signals::block().map_err(|e| format!("cannot block signals: {e}"))?;
    let mut running = Running::new(cfg.clone(), Arc::clone(&spool));
    let shipper = Shipper::new(
        cfg.database.clone(),
        running.collector.agent_info(),
        Arc::clone(&spool),
        Arc::clone(&running.target),
    );
    let handle = thread::Builder::new()
        .name("shipper".into())
        .stack_size(1024 * 1024) // only touched pages count; TLS and DNS need some depth
        .spawn(move || shipper.run())
        .map_err(|e| format!("cannot start the shipper thread: {e}"))?;
    let env = |k: &str| std::env::var(k).ok();

    let mut due = Instant::now();
    let mut drops = DropLog::default();
    while !signals::stop_requested() {
        let mut report = running.collector.collect();
        running.inputs.add_to(&mut report);
        let json = report.to_json();
        let mut s = lock(&spool);
        match s.push(json.as_bytes()) {
            Ok(0) => log_debug!(
                "collected report of {} ({} rows)",
                report.time,
                report.row_count()
            ),
            Ok(dropped) => drops.note(dropped, &s),
            Err(e) => log_error!(
                "cannot write the report of {} to the spool {}: {e}; this report is lost",
                report.time,
                s.dir().display()
            ),
        }
        drop(s);
        if handle.is_finished() {
            // Only a panic ends it early; exit so the service manager restarts us.
            return Err(
                "the shipper thread stopped unexpectedly; reports stay in the spool".into(),
            );
        }
        handle.thread().unpark();

        let last = due;
        due = next_due(last, running.cfg.interval, Instant::now());
        while signals::wait_until(due) == Wake::Reload {
            if running.reload(&env) {
                due = due_after_reload(last, running.cfg.interval, Instant::now());
            }
            // Picks up a new target now rather than after its backoff or idle park.
            handle.thread().unpark();
        }
    }

    running.inputs.stop();
    // No command outlives the agent.
    crate::inputs::exec::kill_running();
    log_info!(
        "stop requested: flushing the spool (at most {}s)",
        FLUSH_TIMEOUT.as_secs()
    );
    handle.thread().unpark();
    if handle.join().is_err() {
        log_error!("the shipper thread panicked");
    }
    let s = lock(&spool);
    if s.is_empty() {
        log_info!("stopped; spool is empty");
    } else {
        log_info!(
            "stopped; {} report(s) stay in {} for the next start",
            s.len(),
            s.dir().display()
        );
    }
    Ok(())
}

/// Where the shipper sends reports and what it registers as; handed over on reload.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    conninfo: String,
    info: AgentInfo,
}

/// The main thread's side of a running daemon: everything a reload may change.
struct Running {
    cfg: Config,
    collector: Collector,
    /// Scrapes, execs and probes, on their own schedules.
    inputs: Inputs,
    spool: Arc<Mutex<Spool>>,
    /// A new target for the shipper, taken by it between two reports (the newest wins).
    target: Arc<Mutex<Option<Target>>>,
}

impl Running {
    fn new(cfg: Config, spool: Arc<Mutex<Spool>>) -> Running {
        Running {
            collector: Collector::new(&cfg),
            inputs: Inputs::start(&cfg),
            cfg,
            spool,
            target: Arc::new(Mutex::new(None)),
        }
    }

    /// Re-reads and applies the configuration (SIGHUP). An invalid configuration is
    /// logged and changes nothing; the agent never stops over it. Returns whether the
    /// interval changed, so the caller reschedules.
    fn reload(&mut self, env: &dyn Fn(&str) -> Option<String>) -> bool {
        let source = reload::describe_source(&self.cfg);
        let plan = match reload::reread(&self.cfg, env) {
            Ok(plan) => plan,
            Err(e) => {
                log_error!("configuration not reloaded, keeping the running one: {e}");
                return false;
            }
        };
        log_info!(
            "configuration reloaded from {source}: {}",
            match (plan.changes.is_empty(), plan.needs_restart.is_empty()) {
                (false, _) => plan.changes.join(", "),
                (true, true) => "nothing changed".to_string(),
                (true, false) => "nothing else changed".to_string(),
            }
        );
        if !plan.needs_restart.is_empty() {
            log_warn!(
                "configuration: a restart is needed to change {}; keeping the current value until then",
                plan.needs_restart.join(", ")
            );
        }
        let reconnect = plan.reconnect(&self.cfg);
        let old = std::mem::replace(&mut self.cfg, plan.config);
        // After the "reloaded" line, so lowering the level never hides that line.
        crate::log::set_level(self.cfg.log_level);
        self.collector.reconfigure(&self.cfg);
        self.inputs.reconfigure(&self.cfg);
        if self.cfg.spool_max_bytes != old.spool_max_bytes {
            self.apply_spool_limit();
        }
        if reconnect {
            *lock(&self.target) = Some(Target {
                conninfo: self.cfg.database.clone(),
                info: self.collector.agent_info(),
            });
        }
        self.cfg.interval != old.interval
    }

    /// A lower bound than what is spooled drops the oldest reports now, by the spool's
    /// usual policy, and says so; a higher one only makes room.
    fn apply_spool_limit(&self) {
        let mut s = lock(&self.spool);
        let (count, bytes) = (s.len(), s.bytes());
        match s.set_max_bytes(self.cfg.spool_max_bytes) {
            Ok(0) => {}
            Ok(dropped) => log_warn!(
                "spool_max_bytes {} is below the {bytes} bytes in the spool: dropped the {dropped} oldest of {count} report(s), {} since start",
                self.cfg.spool_max_bytes,
                s.dropped_total()
            ),
            Err(e) => log_error!(
                "cannot drop old reports to fit spool_max_bytes {} in {}: {e}; the bound applies as new reports arrive ({} report(s), {} bytes spooled, {} dropped since start)",
                self.cfg.spool_max_bytes,
                s.dir().display(),
                s.len(),
                s.bytes(),
                s.dropped_total()
            ),
        }
    }
}

/// Logs spool drops at once, then at most once a minute while the spool stays full
/// (one line per 10 s report during a long outage would bury everything else).
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    pending: u64,
}

impl DropLog {
    const EVERY: Duration = Duration::from_secs(60);

    fn note(&mut self, dropped: u64, spool: &Spool) {
        self.pending += dropped;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        log_warn!(
            "spool full ({} bytes max): dropped the {} oldest report(s){}, {} since start",
            spool.max_bytes(),
            self.pending,
            if self.last.is_some() {
                " in the last minute"
            } else {
                ""
            },
            spool.dropped_total()
        );
        self.pending = 0;
        self.last = Some(Instant::now());
    }
}

/// Counts for the "replay complete" log line.
#[derive(Default)]
struct Replay {
    backlog: usize,
    stored: usize,
    duplicates: usize,
    rejected: usize,
}

enum Step {
    Idle,
    Progress,
    Failed,
}

struct Shipper {
    conninfo: String,
    info: AgentInfo,
    spool: Arc<Mutex<Spool>>,
    /// Set by a reload; see [`Shipper::take_new_target`].
    new_target: Arc<Mutex<Option<Target>>>,
    db: Option<Db>,
    backoff: Backoff,
    retry_at: Instant,
    replay: Option<Replay>,
    /// Set after the first failure, so the reconnect is logged as such.
    was_disconnected: bool,
    /// What the database stored and refused of the input series (see [`ingest_with_fallback`]).
    series: SeriesMemory,
}

impl Shipper {
    fn new(
        conninfo: String,
        info: AgentInfo,
        spool: Arc<Mutex<Spool>>,
        new_target: Arc<Mutex<Option<Target>>>,
    ) -> Shipper {
        Shipper {
            conninfo,
            info,
            spool,
            new_target,
            db: None,
            // Reconnects: 1 s doubling to 60 s, full jitter.
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60), Jitter::Full),
            retry_at: Instant::now(),
            replay: None,
            was_disconnected: false,
            series: SeriesMemory::default(),
        }
    }

    fn run(mut self) {
        while !signals::stop_requested() {
            self.take_new_target();
            let now = Instant::now();
            // No polling: the collector unparks us after every report and on stop.
            if now < self.retry_at {
                thread::park_timeout(self.retry_at - now);
                continue;
            }
            let opts = ConnectOptions {
                interrupt: Some(signals::stop_flag()),
                ..Default::default()
            };
            if self.db.is_none() && !self.connect(opts, false) {
                continue;
            }
            if let Step::Idle = self.ship_one() {
                thread::park();
            }
        }
        self.flush();
    }

    /// Switches to the connection string and registration a reload handed over, if any.
    /// Called between two reports, so no report is half-shipped: the spool stays as it
    /// is and drains to the new connection. The backoff restarts, so a corrected
    /// connection string is tried at once, not after up to a minute of waiting.
    fn take_new_target(&mut self) {
        let Some(target) = lock(&self.new_target).take() else {
            return;
        };
        if target.conninfo == self.conninfo && target.info == self.info {
            return;
        }
        self.conninfo = target.conninfo;
        self.info = target.info;
        if let Some(db) = self.db.take() {
            log_info!(
                "closing the connection to {}: the configuration changed; spooled reports go to the new connection",
                db.target()
            );
        }
        self.backoff.reset();
        self.retry_at = Instant::now();
    }

    /// Connects and registers; on failure schedules the next attempt with backoff.
    fn connect(&mut self, opts: ConnectOptions, flushing: bool) -> bool {
        let attempt = Db::connect_with(&self.conninfo, &opts).and_then(|mut db| {
            db.register(&self.info)?;
            Ok(db)
        });
        match attempt {
            Ok(db) => {
                let (waiting, dropped, dropped_total) = {
                    let mut s = lock(&self.spool);
                    (s.len(), s.take_dropped_unreported(), s.dropped_total())
                };
                log_info!(
                    "{} {} as agent {}",
                    if self.was_disconnected {
                        "reconnected to"
                    } else {
                        "connected to"
                    },
                    db.target(),
                    self.info.agent_id
                );
                if dropped > 0 {
                    log_warn!(
                        "{dropped} report(s) were dropped from the full spool while disconnected ({dropped_total} since start)"
                    );
                }
                if waiting > 1 {
                    log_info!("replaying {waiting} spooled report(s), oldest first");
                    self.replay = Some(Replay {
                        backlog: waiting,
                        ..Default::default()
                    });
                }
                self.db = Some(db);
                true
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => false,
            Err(e) if flushing => {
                log_warn!("cannot flush the spool: {e}");
                false
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                if matches!(e.kind(), ErrorKind::Sql | ErrorKind::Protocol) {
                    // Connected but refused (not owner, extension missing): needs a human.
                    log_error!(
                        "cannot register agent {}: {e}; retrying in {:.1}s (reports are kept in the spool)",
                        self.info.agent_id,
                        delay.as_secs_f64()
                    );
                } else {
                    log_warn!(
                        "cannot connect to the database: {e}; retrying in {:.1}s (reports are kept in the spool)",
                        delay.as_secs_f64()
                    );
                }
                self.was_disconnected = true;
                self.retry_at = Instant::now() + delay;
                false
            }
        }
    }

    /// Ships the oldest spooled report, if any.
    fn ship_one(&mut self) -> Step {
        let Some(db) = self.db.as_mut() else {
            return Step::Failed;
        };
        let item = lock(&self.spool).checkout_oldest();
        let (seq, data) = match item {
            Ok(Some(item)) => item,
            Ok(None) => return Step::Idle,
            Err(e) => {
                log_error!("cannot read the spool: {e}");
                self.retry_at = Instant::now() + self.backoff.next_delay();
                return Step::Failed;
            }
        };
        let report = match Report::from_json(&data) {
            Ok(r) => r,
            Err(e) => {
                let mut s = lock(&self.spool);
                match s.reject(seq) {
                    Ok(path) => log_error!(
                        "spooled report {seq} is unreadable ({e}); moved to {}",
                        path.display()
                    ),
                    Err(io) => {
                        log_error!("spooled report {seq} is unreadable ({e}) and cannot be moved aside: {io}");
                        s.release(seq);
                        self.retry_at = Instant::now() + self.backoff.next_delay();
                    }
                }
                return Step::Progress;
            }
        };
        match ingest_with_fallback(db, &report, &mut self.series) {
            Ok(stored) => {
                if let Err(e) = lock(&self.spool).complete(seq) {
                    // It would be replayed; ingest is idempotent so that stores nothing twice.
                    log_error!("cannot delete shipped report {seq} from the spool: {e}");
                }
                self.backoff.reset();
                log_debug!(
                    "report of {} {}",
                    report.time,
                    if stored {
                        "stored"
                    } else {
                        "was already stored"
                    }
                );
                self.note_replay(|r| {
                    if stored {
                        r.stored += 1
                    } else {
                        r.duplicates += 1
                    }
                });
                Step::Progress
            }
            Err(e) if e.rejects_report() => {
                let mut s = lock(&self.spool);
                match s.reject(seq) {
                    Ok(path) => log_error!(
                        "the database rejected the report of {} for good: {e}; kept in {}",
                        report.time,
                        path.display()
                    ),
                    Err(io) => {
                        log_error!("the database rejected the report of {}: {e}; cannot move it aside: {io}", report.time);
                        s.release(seq);
                    }
                }
                drop(s);
                self.note_replay(|r| r.rejected += 1);
                Step::Progress
            }
            Err(e) => {
                lock(&self.spool).release(seq);
                if e.kind() != ErrorKind::Interrupted {
                    let delay = self.backoff.next_delay();
                    match e.kind() {
                        ErrorKind::Sql | ErrorKind::Protocol => log_error!(
                            "cannot ingest the report of {}: {e}; retrying in {:.1}s",
                            report.time,
                            delay.as_secs_f64()
                        ),
                        _ => log_warn!(
                            "lost the database connection: {e}; reconnecting in {:.1}s (reports are kept in the spool)",
                            delay.as_secs_f64()
                        ),
                    }
                    self.retry_at = Instant::now() + delay;
                    self.was_disconnected = true;
                }
                self.db = None;
                Step::Failed
            }
        }
    }

    fn note_replay(&mut self, f: impl FnOnce(&mut Replay)) {
        let Some(r) = self.replay.as_mut() else {
            return;
        };
        f(r);
        if lock(&self.spool).is_empty() || r.stored + r.duplicates + r.rejected >= r.backlog {
            log_info!(
                "replay complete: {} stored, {} already stored, {} rejected",
                r.stored,
                r.duplicates,
                r.rejected
            );
            self.replay = None;
        }
    }

    /// On stop: one bounded attempt to empty the spool; what is left stays on disk.
    fn flush(&mut self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        // A reload just before the stop still counts.
        self.take_new_target();
        if lock(&self.spool).is_empty() {
            return;
        }
        if !self.db.as_ref().is_some_and(Db::is_usable) {
            self.db = None;
            let opts = ConnectOptions {
                deadline: Some(deadline),
                interrupt: None,
                ..Default::default()
            };
            if !self.connect(opts, true) {
                return;
            }
        }
        while Instant::now() < deadline {
            if let Some(db) = self.db.as_mut() {
                db.set_interrupt(None);
                db.set_query_timeout(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                );
            }
            match self.ship_one() {
                Step::Progress => {}
                Step::Idle | Step::Failed => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::spool::tests::TempDir;
    use std::path::PathBuf;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// A running daemon's main-thread state, started from `agent.toml` in a scratch dir
    /// (no shipper thread, no database).
    struct Fixture {
        _dir: TempDir,
        path: PathBuf,
        spool_dir: PathBuf,
        running: Running,
    }

    fn start(tag: &str) -> Fixture {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("agent.toml");
        let spool_dir = dir.0.join("spool");
        std::fs::write(
            &path,
            file_text(&spool_dir, "10s", "host=db1 password=hunter22", ""),
        )
        .unwrap();
        let cfg = config::load(Some(&path), &no_env).unwrap();
        let spool = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes).unwrap();
        let running = Running::new(cfg, Arc::new(Mutex::new(spool)));
        Fixture {
            _dir: dir,
            path,
            spool_dir,
            running,
        }
    }

    fn file_text(
        spool_dir: &std::path::Path,
        interval: &str,
        database: &str,
        extra: &str,
    ) -> String {
        format!(
            "agent_id = \"reload-test\"\ndatabase = \"{database}\"\ninterval = \"{interval}\"\n\
             spool_dir = \"{}\"\nspool_max_bytes = \"1MiB\"\n{extra}",
            spool_dir.display()
        )
    }

    #[test]
    fn an_invalid_file_keeps_the_running_configuration() {
        let mut f = start("daemon-reload-bad");
        let before = f.running.cfg.clone();
        for bad in [
            "interval = \"soon\"\n",
            "this is not toml",
            "interval = \"1s\"\nspool_max_bytes = 5\n",
        ] {
            std::fs::write(&f.path, bad).unwrap();
            assert!(!f.running.reload(&no_env), "{bad:?}");
            assert_eq!(f.running.cfg, before, "{bad:?}");
            assert!(
                lock(&f.running.target).is_none(),
                "no reconnect for {bad:?}"
            );
            assert_eq!(lock(&f.running.spool).max_bytes(), 1 << 20);
        }
        std::fs::remove_file(&f.path).unwrap();
        assert!(!f.running.reload(&no_env));
        assert_eq!(f.running.cfg, before);
        // Once the file is fixed, the next SIGHUP applies it.
        std::fs::write(
            &f.path,
            file_text(&f.spool_dir, "2s", "host=db1 password=hunter22", ""),
        )
        .unwrap();
        assert!(f.running.reload(&no_env));
        assert_eq!(f.running.cfg.interval, Duration::from_secs(2));
    }

    #[test]
    fn a_valid_file_applies_interval_connection_and_spool_bound() {
        let mut f = start("daemon-reload-ok");
        // 100 KiB waiting for the database.
        for i in 0..10u8 {
            lock(&f.running.spool).push(&[b'0' + i; 10 * 1024]).unwrap();
        }
        std::fs::write(
            &f.path,
            file_text(
                &f.spool_dir,
                "1s",
                "host=db2 password=hunter22",
                "[labels]\nenv = \"prod\"\n",
            )
            .replace("1MiB", "64KiB"),
        )
        .unwrap();
        assert!(f.running.reload(&no_env), "the interval changed");
        assert_eq!(f.running.cfg.interval, Duration::from_secs(1));
        assert_eq!(f.running.cfg.database, "host=db2 password=hunter22");
        assert_eq!(f.running.cfg.spool_max_bytes, 64 * 1024);

        let target = lock(&f.running.target)
            .take()
            .expect("a new target for the shipper");
        assert_eq!(target.conninfo, "host=db2 password=hunter22");
        assert_eq!(target.info.agent_id, "reload-test");
        assert_eq!(
            target.info.labels.get("env").map(String::as_str),
            Some("prod")
        );

        // The lower bound applied the drop-oldest policy at once; the newest reports stay.
        let mut s = lock(&f.running.spool);
        assert_eq!(s.max_bytes(), 64 * 1024);
        assert_eq!(s.len(), 6);
        assert_eq!(s.dropped_total(), 4);
        assert_eq!(
            s.checkout_oldest().unwrap().unwrap().1,
            vec![b'4'; 10 * 1024]
        );
    }

    #[test]
    fn unchanged_connection_settings_do_not_disturb_the_shipper() {
        let mut f = start("daemon-reload-same");
        std::fs::write(
            &f.path,
            file_text(
                &f.spool_dir,
                "10s",
                "host=db1 password=hunter22",
                "top_processes = 2\n",
            ),
        )
        .unwrap();
        assert!(!f.running.reload(&no_env), "same interval");
        assert_eq!(f.running.cfg.top_processes, 2);
        assert!(lock(&f.running.target).is_none());
    }

    #[test]
    fn restart_only_settings_are_kept() {
        let mut f = start("daemon-reload-restart");
        let other = f.spool_dir.with_file_name("other-spool");
        std::fs::write(
            &f.path,
            file_text(&other, "10s", "host=db1 password=hunter22", "")
                .replace("reload-test", "renamed"),
        )
        .unwrap();
        f.running.reload(&no_env);
        assert_eq!(f.running.cfg.spool_dir, f.spool_dir);
        assert_eq!(f.running.cfg.agent_id, "reload-test");
        assert_eq!(f.running.collector.agent_info().agent_id, "reload-test");
        assert!(!other.exists(), "the new spool_dir is not touched");
    }

    fn with_series(keys: &[&str]) -> Report {
        let mut r = Report::new("a", crate::time::Timestamp::from_unix_micros(0));
        r.set("cpu", "usage_percent", Some(1.0));
        for k in keys {
            r.series.insert(k.to_string(), Some(2.0));
        }
        r
    }

    #[test]
    fn a_refused_report_is_stored_again_without_the_new_input_series() {
        let mut memory = SeriesMemory::default();
        let mut stored: Vec<Report> = Vec::new();
        // A database that takes at most 2 distinct custom series.
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut fake = |r: &Report| -> db::Result<bool> {
            let mut all = known.clone();
            all.extend(r.series.keys().filter(|k| is_input_series(k)).cloned());
            if all.len() > 2 {
                return Err(db::Error::sql(
                    "54000",
                    "agent a would have more than secumon.max_series_per_agent series",
                ));
            }
            known = all;
            stored.push(r.clone());
            Ok(true)
        };
        let first = with_series(&["custom.a", "custom.b"]);
        assert_eq!(ingest_or_retry(&mut fake, &mut || Ok(Vec::new()), &first, &mut memory, Instant::now()), Ok(true));
        assert_eq!(memory.accepted.len(), 2);
        let second = with_series(&["custom.a", "custom.b", "custom.c", "probe.up"]);
        assert_eq!(ingest_or_retry(&mut fake, &mut || Ok(Vec::new()), &second, &mut memory, Instant::now()), Ok(true));
        let last = stored.last().unwrap();
        assert_eq!(last.get("cpu.usage_percent"), Some(1.0), "host series kept");
        assert!(last.series.contains_key("custom.a") && last.series.contains_key("custom.b"));
        assert!(!last.series.contains_key("custom.c") && !last.series.contains_key("probe.up"));
        assert_eq!(memory.accepted.len(), 2);
    }

    #[test]
    fn after_a_restart_the_series_stored_before_are_asked_of_the_database() {
        let mut stored: Vec<Report> = Vec::new();
        let mut fake = |r: &Report| -> db::Result<bool> {
            if r.series.contains_key("custom.new") {
                return Err(db::Error::sql("54000", "cap"));
            }
            stored.push(r.clone());
            Ok(true)
        };
        let mut memory = SeriesMemory::default();
        let r = with_series(&["custom.old", "custom.new"]);
        let mut asked = 0;
        let mut known = || {
            asked += 1;
            Ok(vec!["cpu.usage_percent".to_string(), "custom.old".to_string()])
        };
        assert_eq!(ingest_or_retry(&mut fake, &mut known, &r, &mut memory, Instant::now()), Ok(true));
        assert_eq!(asked, 1);
        let last = stored.last().unwrap();
        assert!(last.series.contains_key("custom.old"), "a series stored before the restart keeps arriving");
        assert!(!last.series.contains_key("custom.new"));
    }

    #[test]
    fn refused_series_stay_out_until_their_retry_time() {
        let mut offered: Vec<bool> = Vec::new();
        let mut fake = |r: &Report| -> db::Result<bool> {
            let new = r.series.contains_key("custom.new");
            offered.push(new);
            if new {
                Err(db::Error::sql("54000", "cap"))
            } else {
                Ok(true)
            }
        };
        let mut memory = SeriesMemory::default();
        let r = with_series(&["custom.new"]);
        let t0 = Instant::now();
        let mut none = || Ok(Vec::new());
        assert_eq!(ingest_or_retry(&mut fake, &mut none, &r, &mut memory, t0), Ok(true));
        assert_eq!(ingest_or_retry(&mut fake, &mut none, &r, &mut memory, t0 + Duration::from_secs(10)), Ok(true));
        let later = t0 + REFUSED_SERIES_RETRY + Duration::from_secs(1);
        assert_eq!(ingest_or_retry(&mut fake, &mut none, &r, &mut memory, later), Ok(true));
        assert_eq!(
            offered,
            vec![true, false, false, true, false],
            "refused, retried without it; left out while refused; offered again after the retry time"
        );
    }

    #[test]
    fn a_first_report_over_the_cap_keeps_its_host_series() {
        let mut calls = 0;
        let mut fake = |r: &Report| -> db::Result<bool> {
            calls += 1;
            if r.series.keys().any(|k| is_input_series(k)) {
                Err(db::Error::sql("22023", "invalid series key"))
            } else {
                Ok(true)
            }
        };
        let r = with_series(&["custom.bad"]);
        assert_eq!(
            ingest_or_retry(&mut fake, &mut || Ok(Vec::new()), &r, &mut SeriesMemory::default(), Instant::now()),
            Ok(true)
        );
        assert_eq!(calls, 2, "retried once");
    }

    #[test]
    fn other_refusals_and_reports_without_new_series_are_not_retried() {
        let mut calls = 0;
        let mut fake = |_: &Report| -> db::Result<bool> {
            calls += 1;
            Err(db::Error::sql("54000", "cap"))
        };
        let host_only = with_series(&[]);
        assert!(ingest_or_retry(&mut fake, &mut || Ok(Vec::new()), &host_only, &mut SeriesMemory::default(), Instant::now()).is_err());
        let mut fake2 =
            |_: &Report| -> db::Result<bool> { Err(db::Error::sql("22008", "too old")) };
        let r = with_series(&["custom.x"]);
        assert_eq!(
            ingest_or_retry(&mut fake2, &mut || Ok(Vec::new()), &r, &mut SeriesMemory::default(), Instant::now())
                .unwrap_err()
                .sqlstate(),
            Some("22008")
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn schedule_after_a_reload() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Normal ticks, and skipping missed ones.
        assert_eq!(next_due(t0, s(10), t0 + s(1)), t0 + s(10));
        assert_eq!(next_due(t0, s(10), t0 + s(25)), t0 + s(35));
        // Longer interval: counted from the last collection.
        assert_eq!(due_after_reload(t0, s(60), t0 + s(5)), t0 + s(60));
        // Shorter, and already overdue: collect now.
        assert_eq!(due_after_reload(t0, s(1), t0 + s(5)), t0 + s(5));
    }
}
