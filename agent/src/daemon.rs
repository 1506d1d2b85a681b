//! The agent's two modes that touch the database.
//!
//! Daemon mode runs two threads so a slow or absent database never delays collection:
//! the main thread collects on schedule into the spool; the shipper thread connects
//! (with backoff), registers, and replays the spool oldest-first. A report leaves the
//! spool only once `secumon.ingest` answered.

use crate::backoff::Backoff;
use crate::collect::Collector;
use crate::config::{format_duration, Config};
use crate::db::{ConnectOptions, Db, ErrorKind};
use crate::report::{AgentInfo, Report};
use crate::signals;
use crate::spool::Spool;
use crate::{log_debug, log_error, log_info, log_warn};
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

/// `--once`: connect, register, collect one report, ingest it. The error is one line.
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
    let report = collector.collect();
    let stored = db
        .ingest(&report)
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

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    // A panic elsewhere must not stop the agent from spooling.
    spool.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Daemon mode; returns when SIGINT/SIGTERM arrives (after a bounded flush).
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
    let mut collector = Collector::new(cfg);
    let shipper = Shipper::new(
        cfg.database.clone(),
        collector.agent_info(),
        Arc::clone(&spool),
    );
    let handle = thread::Builder::new()
        .name("shipper".into())
        .stack_size(1024 * 1024) // only touched pages count; TLS and DNS need some depth
        .spawn(move || shipper.run())
        .map_err(|e| format!("cannot start the shipper thread: {e}"))?;

    let mut next = Instant::now();
    let mut drops = DropLog::default();
    while !signals::stop_requested() {
        let report = collector.collect();
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

        next += cfg.interval;
        let now = Instant::now();
        if next <= now {
            // Fell behind (suspend, overloaded host): skip the missed ticks, don't burst.
            log_debug!("collection fell behind by {:?}", now - next);
            next = now + cfg.interval;
        }
        signals::sleep_until(next);
    }

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
    db: Option<Db>,
    backoff: Backoff,
    retry_at: Instant,
    replay: Option<Replay>,
    /// Set after the first failure, so the reconnect is logged as such.
    was_disconnected: bool,
}

impl Shipper {
    fn new(conninfo: String, info: AgentInfo, spool: Arc<Mutex<Spool>>) -> Shipper {
        Shipper {
            conninfo,
            info,
            spool,
            db: None,
            backoff: Backoff::default(),
            retry_at: Instant::now(),
            replay: None,
            was_disconnected: false,
        }
    }

    fn run(mut self) {
        while !signals::stop_requested() {
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
        match db.ingest(&report) {
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
