//! Background-worker plumbing shared by every SecuMon worker.
//!
//! Each worker connects to `secumon.database`, waits quietly until the extension is installed
//! there, then runs its cycle every interval. An ERROR inside a cycle ends only that worker
//! process; the postmaster restarts it after `RESTART_AFTER`, so one bad cycle never takes the
//! server down and the next cycle retries.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

use crate::{gucs, storage};

const RESTART_AFTER: Duration = Duration::from_secs(5);

/// How often a worker looks again for CREATE EXTENSION secumon.
const WAIT_FOR_EXTENSION: Duration = Duration::from_secs(5);

/// The workers SecuMon runs: (name shown in pg_stat_activity.backend_type, entry point).
pub const WORKERS: &[(&str, &str)] = &[
    ("secumon maintenance", "secumon_maintenance_main"),
    ("secumon alert engine", "secumon_alert_engine_main"),
    ("secumon notifier", "secumon_notifier_main"),
];

pub fn register_all() {
    for (name, function) in WORKERS {
        BackgroundWorkerBuilder::new(name)
            .set_type(name)
            .set_function(function)
            .set_library("secumon")
            .enable_spi_access()
            .set_restart_time(Some(RESTART_AFTER))
            .load();
    }
}

/// Runs `cycle` every `interval()` until SIGTERM or postmaster death.
pub fn run_loop(interval: impl Fn() -> Duration, mut cycle: impl FnMut()) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&gucs::database()), None);
    let mut waiting_logged = false;
    let mut next_cycle = Instant::now();
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // The latch is also set by things unrelated to this worker (signals, cache
        // invalidation catch-up): cycles keep their own schedule.
        if Instant::now() >= next_cycle {
            if extension_installed() {
                waiting_logged = false;
                cycle();
                next_cycle = Instant::now() + interval();
            } else {
                if !waiting_logged {
                    log!(
                        "{}: waiting for CREATE EXTENSION secumon in database \"{}\"",
                        BackgroundWorker::get_name(),
                        gucs::database()
                    );
                    waiting_logged = true;
                }
                next_cycle = Instant::now() + interval().min(WAIT_FOR_EXTENSION);
            }
        }
        let wait = next_cycle.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        if !BackgroundWorker::wait_latch(Some(wait)) {
            break;
        }
    }
}

/// Advisory-lock key that orders worker transactions against DROP / ALTER EXTENSION secumon:
/// workers hold it shared, the `secumon_extension_guard` event trigger (sql/jobs.sql) takes it
/// exclusively before the command locks anything, so the two wait for each other instead of
/// deadlocking over the extension's tables.
pub const EXTENSION_LOCK: i64 = 0x5EC0_0E47;

/// Runs `body` in its own transaction if the extension is installed, else returns
/// `R::default()` without touching any of its objects.
pub fn guarded<R: Default>(body: impl FnOnce() -> R) -> R {
    let body = std::panic::AssertUnwindSafe(body);
    BackgroundWorker::transaction(move || {
        let body = body; // capture the unwind-safe wrapper whole, not its field
        // Two statements: the check must see the catalog as of after the lock was granted.
        let locked = Spi::run_with_args("SELECT pg_catalog.pg_advisory_xact_lock_shared($1)", &[EXTENSION_LOCK.into()]);
        let present = locked.is_ok()
            && Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'secumon')")
                .ok()
                .flatten()
                .unwrap_or(false);
        if present { (body.0)() } else { R::default() }
    })
}

pub fn extension_installed() -> bool {
    guarded(|| true)
}

/// Names of the enabled jobs of `worker` that are due now.
pub fn due_jobs(worker: &str) -> Vec<String> {
    guarded(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT job_name FROM secumon._jobs WHERE worker = $1 AND enabled AND next_run <= now() ORDER BY next_run",
                None,
                &[worker.into()],
            );
            match rows {
                Ok(rows) => rows.filter_map(|row| row.get::<String>(1).ok().flatten()).collect(),
                Err(e) => {
                    warning!("secumon: cannot read the job list: {e}");
                    Vec::new()
                }
            }
        })
    })
}

/// Runs one job in its own transaction; the job records its own success or failure.
pub fn run_job(job: &str) {
    guarded(|| {
        if let Err(e) = Spi::run_with_args("SELECT secumon._run_job_recorded($1)", &[job.into()]) {
            warning!("secumon: job {job} could not be run: {e}");
        }
    });
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn secumon_maintenance_main(_arg: pg_sys::Datum) {
    run_loop(
        || Duration::from_secs(gucs::MAINTENANCE_INTERVAL.get().max(1) as u64),
        storage::maintenance_cycle,
    );
}

/// The notification dispatcher: its own loop (it sleeps on its latch, which commits set).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn secumon_notifier_main(_arg: pg_sys::Datum) {
    crate::notify::dispatcher::run();
}
