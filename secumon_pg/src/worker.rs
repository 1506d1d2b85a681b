//! SecuMon's background workers: the launcher, and the entry point of each worker.
//!
//! The postmaster starts one `secumon launcher`, connected to no database. It waits until the
//! database named by `secumon.database` exists (saying so in the log once a minute, not with a
//! FATAL connection error every few seconds), then starts the three workers as dynamic
//! background workers connected to it, and starts any of them again when it stops: after
//! `pg_terminate_backend()`, an ERROR in a cycle, or a `DROP DATABASE ... WITH (FORCE)`. A
//! worker's life is then tied to its own database only.
//!
//! Each entry point hands its cycle to the capability that owns it (storage, alerting, notify);
//! how a worker connects, waits and runs its transactions is in `background`.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::background::{pid_slot, run_loop, start_worker, WORKERS};
use crate::{alerting, gucs, notify, storage};

/// A worker is started again no sooner than this after its previous start, so one that fails
/// at once does not spin.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// How often the launcher repeats that the workers' database does not exist.
const MISSING_DATABASE_LOG_EVERY: Duration = Duration::from_secs(60);

const LAUNCHER: &str = "secumon launcher";

pub fn register_all() {
    BackgroundWorkerBuilder::new(LAUNCHER)
        .set_type(LAUNCHER)
        .set_function("secumon_launcher_main")
        .set_library("secumon")
        .enable_spi_access()
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

/// One worker as the launcher sees it.
#[derive(Default)]
struct Supervised {
    handle: Option<DynamicBackgroundWorker>,
    seen_running: bool,
    last_start: Option<Instant>,
}

impl Supervised {
    fn running(&self, index: usize) -> bool {
        pid_slot(index).load(Ordering::Acquire) != 0
            || self
                .handle
                .as_ref()
                .is_some_and(|h| matches!(h.pid(), Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted)))
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn secumon_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let database = gucs::database();
    let mut workers: Vec<Supervised> = WORKERS.iter().map(|_| Supervised::default()).collect();
    let mut missing_logged: Option<Instant> = None;
    // Wakes when a worker it started starts or stops (bgw_notify_pid), or every second.
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: called from the worker's main thread between transactions, as the
            // postmaster's own processes do after SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if !database_exists(&database) {
            if missing_logged.is_none_or(|at| at.elapsed() >= MISSING_DATABASE_LOG_EVERY) {
                log!(
                    "{LAUNCHER}: database \"{database}\" does not exist; SecuMon's workers start once it does \
                     (secumon.database names it)"
                );
                missing_logged = Some(Instant::now());
            }
            continue;
        }
        missing_logged = None;
        for (index, (name, function)) in WORKERS.iter().enumerate() {
            let worker = &mut workers[index];
            if worker.running(index) {
                worker.seen_running = true;
                continue;
            }
            if worker.last_start.is_some_and(|at| at.elapsed() < RESTART_AFTER) {
                continue;
            }
            if worker.seen_running {
                log!("{LAUNCHER}: \"{name}\" stopped; starting it again");
                worker.seen_running = false;
            }
            worker.last_start = Some(Instant::now());
            let started = BackgroundWorkerBuilder::new(name)
                .set_type(name)
                .set_function(function)
                .set_library("secumon")
                .enable_spi_access()
                .set_restart_time(None)
                // SAFETY: MyProcPid is set for the life of this process.
                .set_notify_pid(unsafe { pg_sys::MyProcPid })
                .load_dynamic();
            match started {
                Ok(handle) => worker.handle = Some(handle),
                Err(_) => warning!(
                    "{LAUNCHER}: could not start \"{name}\": no background worker slot is free",
                ),
            }
        }
    }
}

/// Whether a database of that name exists. The launcher is connected to no database; the
/// pg_database catalog is shared, so a transaction can read it all the same, with a plain heap
/// scan as the autovacuum launcher does (its indexes cannot be opened without a database).
fn database_exists(name: &str) -> bool {
    BackgroundWorker::transaction(|| {
        let mut found = false;
        // SAFETY: inside a transaction; the relation stays open and locked until closed below,
        // every tuple heap_getnext returns is a valid pg_database row until the next call, and
        // datname is a NUL-terminated NameData.
        unsafe {
            let relation = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let row = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_database>();
                if CStr::from_ptr((*row).datname.data.as_ptr()).to_bytes() == name.as_bytes() {
                    found = true;
                    break;
                }
            }
            pg_sys::heap_endscan(scan);
            pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        }
        found
    })
}

/// The maintenance worker: the storage jobs (partitions, rollups, compression, retention).
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
    if start_worker() {
        notify::dispatcher::run();
    }
}

/// The alert engine: evaluates the rules every `secumon.alert_interval`.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn secumon_alert_engine_main(_arg: pg_sys::Datum) {
    let mut engine = alerting::Engine::default();
    run_loop(alerting::interval, || engine.cycle());
}
