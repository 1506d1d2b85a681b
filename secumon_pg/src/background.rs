//! How SecuMon's background workers live and work: each one connects to the database named by
//! `secumon.database`, runs its cycle every interval once [`Readiness`] says the extension is
//! installed there at this library's version and no `pg_restore` is loading it, and does every
//! piece of work in a transaction of its own ([`guarded`]) that gives way to another session's
//! lock instead of queueing behind it. The launcher that starts the workers is in `worker`, the
//! job scheduler in `scheduler`.

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker, DynamicBackgroundWorkerLoadError, SignalWakeFlags,
};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic, PgTryBuilder};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::gucs;

/// How often a worker looks again for CREATE EXTENSION secumon (or ALTER EXTENSION UPDATE).
const WAIT_FOR_EXTENSION: Duration = Duration::from_secs(5);

/// The workers SecuMon runs: (name shown in pg_stat_activity.backend_type, entry point).
pub const WORKERS: &[(&str, &str)] = &[
    ("secumon maintenance", "secumon_maintenance_main"),
    ("secumon alert engine", "secumon_alert_engine_main"),
    ("secumon notifier", "secumon_notifier_main"),
];

/// Process id of each running worker (index in [`WORKERS`]), 0 when none runs. A worker sets
/// its slot when it starts and clears it when it exits, so a launcher that was itself restarted
/// finds the workers its predecessor started instead of starting them twice.
// SAFETY: here and for each PgAtomic below: a unique, NUL-terminated static name;
// init_shared_memory attaches the slot while the postmaster preloads the library, and every use
// checks SHARED_MEMORY_READY first.
static MAINTENANCE_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"secumon_maintenance_pid") };
// SAFETY: as above.
static ALERT_ENGINE_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"secumon_alert_engine_pid") };
// SAFETY: as above.
static NOTIFIER_WORKER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"secumon_notifier_worker_pid") };
/// Since when (Unix seconds, 0: not) each worker has been giving way to another session's lock.
// SAFETY: as above.
static MAINTENANCE_WAITING: PgAtomic<AtomicI64> = unsafe { PgAtomic::new(c"secumon_maintenance_lock_wait") };
// SAFETY: as above.
static ALERT_ENGINE_WAITING: PgAtomic<AtomicI64> = unsafe { PgAtomic::new(c"secumon_alert_engine_lock_wait") };
// SAFETY: as above.
static NOTIFIER_WAITING: PgAtomic<AtomicI64> = unsafe { PgAtomic::new(c"secumon_notifier_lock_wait") };
static SHARED_MEMORY_READY: AtomicBool = AtomicBool::new(false);

pub(crate) fn pid_slot(worker: usize) -> &'static AtomicI32 {
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
    pg_shmem_init!(MAINTENANCE_WAITING = AtomicI64::new(0));
    pg_shmem_init!(ALERT_ENGINE_WAITING = AtomicI64::new(0));
    pg_shmem_init!(NOTIFIER_WAITING = AtomicI64::new(0));
    SHARED_MEMORY_READY.store(true, Ordering::Release);
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
    let state = match guarded_when(
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
    ) {
        Ok(state) => state,
        Err(GaveWay) => return Some("waiting for a lock another session holds (DROP or ALTER EXTENSION?)".into()),
    };
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

/// The table that orders worker transactions against DROP / ALTER EXTENSION secumon: workers
/// lock it ACCESS SHARE first, the `secumon_extension_guard` event trigger (sql/jobs.sql) locks
/// it ACCESS EXCLUSIVE before the command locks anything, so the two wait for each other instead
/// of deadlocking over the extension's tables. Clients have no privilege on it (they read the
/// view secumon.jobs), so none can hold a lock that keeps the workers waiting; 0.1.0 used an
/// advisory lock, which any session could take and so stall every worker.
const EXTENSION_LOCK_TABLE: &str = "secumon._jobs";

/// Runs `body` in its own transaction if the extension is installed, else returns
/// `R::default()` without touching any of its objects. A lock another session holds longer
/// than `secumon.maintenance_lock_timeout` makes it give way: see [`try_guarded`].
pub fn guarded<R: Default>(body: impl FnOnce() -> R) -> R {
    try_guarded(body).unwrap_or_default()
}

/// Runs `body` in its own transaction if the extension is installed. None when it is not, or
/// when `body` had to wait longer than `secumon.maintenance_lock_timeout` for a lock another
/// session holds (a client's `LOCK TABLE`, an open transaction): its work is then rolled back,
/// the wait is logged and shown by secumon.health(), and the caller tries again next cycle.
pub fn try_guarded<R>(body: impl FnOnce() -> R) -> Option<R> {
    guarded_when(|present| present, body).ok().flatten()
}

/// Why a worker transaction did not run: it gave way to another session's lock.
pub struct GaveWay;

/// Runs `body` in its own transaction, under the shared extension lock, if `wanted` says so of
/// whether the extension is installed (Ok(None) otherwise); Err when it gave way to a lock.
fn guarded_when<R>(wanted: impl FnOnce(bool) -> bool, body: impl FnOnce() -> R) -> Result<Option<R>, GaveWay> {
    let work = std::panic::AssertUnwindSafe((wanted, body));
    let outcome = BackgroundWorker::transaction(move || {
        let (wanted, body) = { work }.0; // capture the unwind-safe wrapper whole, not its fields
        bound_lock_waits();
        let attempt = giving_way(|| {
            // Two statements: the check must see the catalog as of after the lock was granted.
            lock_extension_table();
            let present =
                Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'secumon')")
                    .ok()
                    .flatten()
                    .unwrap_or(false);
            if wanted(present) { Some(body()) } else { None }
        });
        match attempt {
            Ok(result) => Ok(result),
            Err(why) => Err((why, lock_holders())),
        }
    });
    match outcome {
        Ok(result) => {
            lock_wait_ended();
            Ok(result)
        }
        Err((why, holders)) => {
            lock_wait_started(&why, &holders);
            Err(GaveWay)
        }
    }
}

/// `lock_timeout` for the rest of the transaction: secumon.maintenance_lock_timeout.
fn bound_lock_waits() {
    let timeout = format!("{}ms", gucs::MAINTENANCE_LOCK_TIMEOUT.get().max(1));
    if let Err(e) =
        Spi::run_with_args("SELECT pg_catalog.set_config('lock_timeout', $1, true)", &[timeout.as_str().into()])
    {
        warning!("secumon: cannot bound lock waits: {e}");
    }
}

/// Locks [`EXTENSION_LOCK_TABLE`] ACCESS SHARE, if it exists (it does not before CREATE
/// EXTENSION, when the workers only look for the extension).
fn lock_extension_table() {
    let oid = Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
        &[EXTENSION_LOCK_TABLE.into()],
    )
    .ok()
    .flatten();
    if let Some(oid) = oid {
        // SAFETY: inside a transaction; locking an OID needs no open relation (and a dropped
        // one is harmless: the extension check that follows sees the catalog after the lock).
        unsafe { pg_sys::LockRelationOid(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    }
}

/// Runs `f` in a subtransaction. A lock wait cut short by `lock_timeout` (SQLSTATE 55P03) or a
/// deadlock (40P01) rolls the subtransaction back and returns its message; any other error is
/// re-raised after the rollback, as before.
fn giving_way<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: the pattern of PL/pgSQL's exception blocks and PL/Python's subtransactions: begin
    // an internal subtransaction, work in the caller's memory context, and on the way out (commit
    // or rollback) restore that context and resource owner. pgrx has already copied and flushed
    // the error state when it turned the ERROR into the unwinding that PgTryBuilder catches.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    // SAFETY: restores the memory context and resource owner saved above, which outlive the
    // subtransaction (they belong to the enclosing transaction).
    let restore = move || unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    // SAFETY: inside a transaction (BackgroundWorker::transaction); the subtransaction is ended on
    // every path below, by release or rollback.
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
    }
    let work = std::panic::AssertUnwindSafe(f);
    PgTryBuilder::new(move || {
        let result = ({ work }.0)();
        // SAFETY: ends the subtransaction begun above; `work` ran to completion without an ERROR.
        unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        restore();
        Ok(result)
    })
    .catch_when(PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, move |error| {
        // SAFETY: pgrx has caught the ERROR and flushed the error state; rolling the subtransaction
        // back is what an exception block does.
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        Err(error_message(error))
    })
    // A deadlock with a client's transaction: the worker is the one to give way.
    .catch_when(PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED, move |error| {
        // SAFETY: as for the lock timeout above.
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        Err(error_message(error))
    })
    .catch_others(move |error| {
        // SAFETY: as for the lock timeout above; the error is re-raised after the rollback.
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        error.rethrow()
    })
    .execute()
}

/// The message of a caught error.
pub(crate) fn error_message(error: CaughtError) -> String {
    match error {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => report.message().to_string(),
        CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}

/// Who holds a lock that can hold a worker up, for the log line of a wait: granted locks of
/// other sessions of this database in modes that conflict with reading or writing a table.
fn lock_holders() -> String {
    Spi::get_one::<String>(
        "SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('pid %s (%s) holds %s on %s', l.pid,
                    coalesce(a.usename::text, 'unknown role'), l.mode, coalesce(l.relation::pg_catalog.regclass::text, l.locktype)), '; ')
           FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
          WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid()
            AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
            AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| "no session holds a table lock now".into())
}

/// A wait ends once the worker has gone this long without giving way (one transaction of a
/// cycle may wait while the next does not: that is still one wait, logged once).
const WAIT_ENDS_AFTER: Duration = Duration::from_secs(10);

thread_local! {
    /// When this worker started giving way to locks, while it does.
    static WAITING_SINCE: std::cell::Cell<Option<std::time::SystemTime>> = const { std::cell::Cell::new(None) };
    /// When it last gave way.
    static LAST_GAVE_WAY: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

fn lock_wait_started(why: &str, holders: &str) {
    LAST_GAVE_WAY.set(Some(Instant::now()));
    if WAITING_SINCE.get().is_none() {
        let now = std::time::SystemTime::now();
        WAITING_SINCE.set(Some(now));
        let seconds = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if let Some(slot) = wait_slot() {
            slot.store(seconds.max(1), Ordering::Release);
        }
        log!(
            "{}: giving way to a lock held by another session ({why}); retrying every cycle until it is released. {holders}",
            BackgroundWorker::get_name()
        );
    }
}

fn lock_wait_ended() {
    if LAST_GAVE_WAY.get().is_some_and(|at| at.elapsed() < WAIT_ENDS_AFTER) {
        return;
    }
    if let Some(since) = WAITING_SINCE.take() {
        if let Some(slot) = wait_slot() {
            slot.store(0, Ordering::Release);
        }
        log!(
            "{}: no longer held up by another session's lock (after {} s)",
            BackgroundWorker::get_name(),
            since.elapsed().map_or(0, |d| d.as_secs())
        );
    }
}

/// This worker's "waiting for a lock since" slot in shared memory.
fn wait_slot() -> Option<&'static AtomicI64> {
    if !SHARED_MEMORY_READY.load(Ordering::Acquire) {
        return None;
    }
    let name = BackgroundWorker::get_name();
    match WORKERS.iter().position(|(n, _)| *n == name)? {
        0 => Some(MAINTENANCE_WAITING.get()),
        1 => Some(ALERT_ENGINE_WAITING.get()),
        _ => Some(NOTIFIER_WAITING.get()),
    }
}

/// For secumon.health(): since when each worker has been giving way to another session's lock
/// (no row for a worker that is not waiting).
#[pg_extern(volatile, parallel_safe)]
fn _worker_lock_waits() -> TableIterator<'static, (name!(worker, String), name!(waiting_since, TimestampWithTimeZone))> {
    let mut rows = Vec::new();
    if SHARED_MEMORY_READY.load(Ordering::Acquire) {
        let slots = [MAINTENANCE_WAITING.get(), ALERT_ENGINE_WAITING.get(), NOTIFIER_WAITING.get()];
        for ((name, _), slot) in WORKERS.iter().zip(slots) {
            let seconds = slot.load(Ordering::Acquire);
            if seconds > 0 {
                if let Ok(at) = TimestampWithTimeZone::try_from((seconds - 946_684_800) * 1_000_000) {
                    rows.push((name.to_string(), at));
                }
            }
        }
    }
    TableIterator::new(rows)
}

/// Starts a short-lived worker of this library, named `name`, that runs `function` (a
/// `#[no_mangle]` entry point) in the caller's database with `args` (a few words: the worker's
/// `bgw_extra` holds 128 bytes), and is never restarted. With `notify_caller`, the caller may
/// wait for it (`wait_for_startup`, `wait_for_shutdown`). The worker begins with
/// [`connect_short_lived`].
pub fn start_short_lived(
    name: &str,
    function: &str,
    args: &str,
    notify_caller: bool,
) -> Result<DynamicBackgroundWorker, DynamicBackgroundWorkerLoadError> {
    // SAFETY: MyDatabaseId and MyProcPid are set for the life of a connected backend.
    let (database, me) = unsafe { (pg_sys::MyDatabaseId, pg_sys::MyProcPid) };
    let mut builder = BackgroundWorkerBuilder::new(name)
        .set_type(name)
        .set_library("secumon")
        .set_function(function)
        .enable_spi_access()
        .set_restart_time(None::<Duration>)
        .set_extra(&format!("{} {args}", u32::from(database)));
    if notify_caller {
        builder = builder.set_notify_pid(me);
    }
    builder.load_dynamic()
}

/// In a worker [`start_short_lived`] started: connects it to the caller's database and returns
/// the caller's `args`; None (logged) when they cannot be read.
pub fn connect_short_lived() -> Option<String> {
    let extra = BackgroundWorker::get_extra().to_string();
    let (database, args) = extra.split_once(' ').unwrap_or((extra.as_str(), ""));
    let Ok(database) = database.parse::<u32>() else {
        log!("{}: bad arguments {extra:?}", BackgroundWorker::get_name());
        return None;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    Some(args.to_string())
}
