//! Background-worker plumbing shared by every SecuMon worker.
//!
//! The postmaster starts one `secumon launcher`, connected to no database. It waits until the
//! database named by `secumon.database` exists (saying so in the log once a minute, not with a
//! FATAL connection error every few seconds), then starts the three workers as dynamic
//! background workers connected to it, and starts any of them again when it stops: after
//! `pg_terminate_backend()`, an ERROR in a cycle, or a `DROP DATABASE ... WITH (FORCE)`. A
//! worker's life is then tied to its own database only.
//!
//! Each worker runs its cycle every interval once [`ready`]: the extension is installed in its
//! database, at the version of this library, and no `pg_restore` is loading that database.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::{gucs, storage};

/// A worker is started again no sooner than this after its previous start, so one that fails
/// at once does not spin.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// How often a worker looks again for CREATE EXTENSION secumon (or ALTER EXTENSION UPDATE).
const WAIT_FOR_EXTENSION: Duration = Duration::from_secs(5);

/// How often the launcher repeats that the workers' database does not exist.
const MISSING_DATABASE_LOG_EVERY: Duration = Duration::from_secs(60);

/// The workers SecuMon runs: (name shown in pg_stat_activity.backend_type, entry point).
pub const WORKERS: &[(&str, &str)] = &[
    ("secumon maintenance", "secumon_maintenance_main"),
    ("secumon alert engine", "secumon_alert_engine_main"),
    ("secumon notifier", "secumon_notifier_main"),
];

const LAUNCHER: &str = "secumon launcher";

/// Process id of each running worker (index in [`WORKERS`]), 0 when none runs. A worker sets
/// its slot when it starts and clears it when it exits, so a launcher that was itself restarted
/// finds the workers its predecessor started instead of starting them twice.
static MAINTENANCE_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"secumon_maintenance_pid") };
static ALERT_ENGINE_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"secumon_alert_engine_pid") };
static NOTIFIER_WORKER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"secumon_notifier_worker_pid") };
static SHARED_MEMORY_READY: AtomicBool = AtomicBool::new(false);

fn pid_slot(worker: usize) -> &'static AtomicI32 {
    match worker {
        0 => MAINTENANCE_PID.get(),
        1 => ALERT_ENGINE_PID.get(),
        _ => NOTIFIER_WORKER_PID.get(),
    }
}

#[allow(unexpected_cfgs)] // pg_shmem_init! tests pg13…pg18 features this crate does not declare
pub fn init_shared_memory() {
    pg_shmem_init!(MAINTENANCE_PID = AtomicI32::new(0));
    pg_shmem_init!(ALERT_ENGINE_PID = AtomicI32::new(0));
    pg_shmem_init!(NOTIFIER_WORKER_PID = AtomicI32::new(0));
    SHARED_MEMORY_READY.store(true, Ordering::Release);
}

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

/// Claims this worker's slot; the slot is cleared again when the process exits.
fn claim_slot(index: usize) -> bool {
    if !SHARED_MEMORY_READY.load(Ordering::Acquire) {
        return true;
    }
    // SAFETY: MyProcPid is set for the life of this process.
    let me = unsafe { pg_sys::MyProcPid };
    if pid_slot(index).compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return false;
    }
    // SAFETY: registering a callback that only stores to shared memory; index is passed as the
    // Datum argument and read back unchanged.
    unsafe { pg_sys::before_shmem_exit(Some(release_slot), pg_sys::Datum::from(index)) };
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn release_slot(_code: std::os::raw::c_int, arg: pg_sys::Datum) {
    let index = arg.value();
    // SAFETY: MyProcPid is set for the life of this process.
    let me = unsafe { pg_sys::MyProcPid };
    let _ = pid_slot(index).compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire);
}

/// Connects a worker to its database; false if another process already runs this worker.
pub fn start_worker() -> bool {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let name = BackgroundWorker::get_name();
    let Some(index) = WORKERS.iter().position(|(n, _)| *n == name) else { return false };
    if !claim_slot(index) {
        return false;
    }
    BackgroundWorker::connect_worker_to_spi(Some(&gucs::database()), None);
    true
}

/// Runs `cycle` every `interval()` until SIGTERM or postmaster death.
pub fn run_loop(interval: impl Fn() -> Duration, mut cycle: impl FnMut()) {
    if !start_worker() {
        return;
    }
    let mut readiness = Readiness::default();
    let mut next_cycle = Instant::now();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: called from the worker's main thread between transactions.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // The latch is also set by things unrelated to this worker (signals, cache
        // invalidation catch-up): cycles keep their own schedule.
        if Instant::now() >= next_cycle {
            if readiness.check() {
                cycle();
                next_cycle = Instant::now() + interval();
            } else {
                next_cycle = Instant::now() + interval().min(WAIT_FOR_EXTENSION);
            }
        }
        let wait = next_cycle.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        if !BackgroundWorker::wait_latch(Some(wait)) {
            break;
        }
    }
}

/// Why a worker is not running its cycles, logged once each time the reason changes.
#[derive(Default)]
pub struct Readiness {
    last_reason: Option<String>,
}

impl Readiness {
    /// True when the worker may run its cycle: see [`not_ready_reason`].
    pub fn check(&mut self) -> bool {
        let reason = not_ready_reason();
        if reason != self.last_reason {
            match &reason {
                Some(reason) => log!("{}: {reason}", BackgroundWorker::get_name()),
                None if self.last_reason.is_some() => log!("{}: running", BackgroundWorker::get_name()),
                None => {}
            }
            self.last_reason = reason.clone();
        }
        reason.is_none()
    }
}

/// None when the extension is installed in this database at this library's version and no
/// pg_restore is loading the database; else what the worker waits for.
fn not_ready_reason() -> Option<String> {
    let state = guarded_when(
        |_| true,
        || {
            Spi::get_two::<String, bool>(
                "SELECT e.extversion::text,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                                 WHERE a.datname = pg_catalog.current_database() AND a.application_name = 'pg_restore')
                   FROM pg_catalog.pg_extension e WHERE e.extname = 'secumon'",
            )
            .ok()
        },
    );
    let database = gucs::database();
    match state.flatten() {
        None | Some((None, _)) => Some(format!("waiting for CREATE EXTENSION secumon in database \"{database}\"")),
        Some((Some(_), Some(true))) => Some(format!("paused while pg_restore loads database \"{database}\"")),
        Some((Some(version), _)) if version != env!("CARGO_PKG_VERSION") => Some(format!(
            "paused: database \"{database}\" has secumon {version}, this library is {}; run ALTER EXTENSION secumon UPDATE",
            env!("CARGO_PKG_VERSION")
        )),
        Some(_) => None,
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
    guarded_when(|present| present, body).unwrap_or_default()
}

/// Runs `body` in its own transaction, under the shared extension lock, if `wanted` says so of
/// whether the extension is installed; None otherwise.
fn guarded_when<R>(wanted: impl FnOnce(bool) -> bool, body: impl FnOnce() -> R) -> Option<R> {
    let work = std::panic::AssertUnwindSafe((wanted, body));
    BackgroundWorker::transaction(move || {
        let (wanted, body) = { work }.0; // capture the unwind-safe wrapper whole, not its fields
        // Two statements: the check must see the catalog as of after the lock was granted.
        let locked = Spi::run_with_args("SELECT pg_catalog.pg_advisory_xact_lock_shared($1)", &[EXTENSION_LOCK.into()]);
        let present = locked.is_ok()
            && Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'secumon')")
                .ok()
                .flatten()
                .unwrap_or(false);
        if wanted(present) { Some(body()) } else { None }
    })
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
    if start_worker() {
        crate::notify::dispatcher::run();
    }
}
