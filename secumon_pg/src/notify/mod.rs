//! Notifications: the SQL surface (sql/notify.sql holds the tables, the fan-out trigger and
//! the claim/record functions), waking the dispatcher at commit, `secumon.test_channel`, and
//! the dispatcher worker itself ([`dispatcher`]). Payloads, retry policy and delivery live in
//! the PostgreSQL-free crate `secumon-notify-core`.

pub mod dispatcher;
pub mod gucs;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::errors::raise;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, pg_sys, register_xact_callback, JsonB, PgAtomic, PgXactCallbackEvent};
use secumon_notify_core as notify_core;

/// Process id of the running dispatcher, so a committing backend can set its latch.
// SAFETY: a unique, NUL-terminated static name; attached by init_shared_memory while the postmaster
// preloads the library, and every use checks SHARED_MEMORY_READY first.
static NOTIFIER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"secumon_notifier_pid") };
/// True once the shared-memory slot exists (only when preloaded).
static SHARED_MEMORY_READY: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// A wake-up is already registered for the current transaction.
    static WAKE_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Called from `_PG_init` while the library is preloaded.
#[allow(unexpected_cfgs)] // pg_shmem_init! tests pg13…pg18 features this crate does not declare
pub fn init_shared_memory() {
    pg_shmem_init!(NOTIFIER_PID = AtomicI32::new(0));
    SHARED_MEMORY_READY.store(true, Ordering::Release);
}

/// The dispatcher announces itself (and withdraws on exit).
pub(crate) fn set_notifier_pid(pid: i32) {
    if SHARED_MEMORY_READY.load(Ordering::Acquire) {
        NOTIFIER_PID.get().store(pid, Ordering::Release);
    }
}

/// Sets the dispatcher's latch. Harmless if it is not running.
fn wake_notifier() {
    if !SHARED_MEMORY_READY.load(Ordering::Acquire) {
        return;
    }
    let pid = NOTIFIER_PID.get().load(Ordering::Acquire);
    if pid <= 0 {
        return;
    }
    // SAFETY: BackendPidGetProc takes ProcArrayLock and returns NULL for an unknown pid; a PGPROC
    // lives in shared memory for the life of the cluster, and SetLatch on another process's
    // procLatch is how PostgreSQL itself wakes backends.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&raw mut (*proc_).procLatch);
        }
    }
}

/// Wakes the dispatcher when the current transaction commits (not before: it would find
/// nothing yet). Called by the fan-out trigger; once per transaction is enough.
#[pg_extern(volatile, parallel_unsafe)]
fn _wake_notifier_at_commit() {
    if WAKE_REGISTERED.with(Cell::get) {
        return;
    }
    WAKE_REGISTERED.with(|w| w.set(true));
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        WAKE_REGISTERED.with(|w| w.set(false));
        wake_notifier();
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || WAKE_REGISTERED.with(|w| w.set(false)));
}

/// Why `settings` are not valid for a channel of type `kind` (NULL when they are). Used by the
/// channel table's trigger; the message never quotes a value.
#[pg_extern(immutable, parallel_safe)]
fn _notification_settings_problem(name: &str, kind: &str, settings: JsonB) -> Option<String> {
    notify_core::Channel::parse(name, kind, &settings.0).err()
}

/// Delivery options from the settings (main thread only).
pub(crate) fn delivery_options() -> notify_core::DeliveryOptions {
    notify_core::DeliveryOptions { connect_timeout: gucs::millis(&gucs::CONNECT_TIMEOUT), timeout: gucs::millis(&gucs::TIMEOUT) }
}

/// Sends a test message to channel `name` now, from this session, and returns the receiver's
/// answer: `{channel, type, ok, outcome, status, response, error, latency_ms}`. The channel
/// may be disabled (test it before enabling it). Admins only: it reads the channel's secrets.
#[pg_extern(volatile, parallel_unsafe)]
fn test_channel(name: &str) -> JsonB {
    let row = Spi::connect(|client| {
        // Read as text and parsed here: pgrx's jsonb conversion panics (XX000) on a document
        // deeper than serde_json's recursion limit, which settings stored before 0.2.0 may be.
        let rows = client.select(
            "SELECT type, settings::text FROM secumon.notification_channels WHERE name = $1",
            Some(1),
            &[name.into()],
        )?;
        let mut found = None;
        for row in rows {
            found = Some((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?));
        }
        Ok::<_, pgrx::spi::Error>(found)
    });
    let (kind, settings) = match row {
        Ok(Some((kind, Some(settings)))) => match serde_json::from_str::<serde_json::Value>(&settings) {
            Ok(settings) => (kind, settings),
            Err(e) => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("the settings of notification channel \"{name}\" cannot be read: {e}"),
                Some("Store the channel's settings again (UPDATE secumon.notification_channels SET settings = ...)."),
            ),
        },
        Ok(_) => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("notification channel \"{name}\" does not exist"),
            Some("SELECT name, type FROM secumon.notification_channels lists the channels."),
        ),
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("cannot read notification channel \"{name}\": {e}"),
            Some("Channels hold secrets; only members of secumon_admin may test them."),
        ),
    };
    let channel = match notify_core::Channel::parse(name, &kind, &settings) {
        Ok(c) => c,
        Err(problem) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid settings for notification channel \"{name}\": {problem}"),
            Some("docs/notifications.md lists the settings of each channel type."),
        ),
    };
    let (key, now) = Spi::get_two::<String, String>(
        "SELECT 'test-' || gen_random_uuid(), to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .ok()
    .and_then(|(k, n)| Some((k?, n?)))
    .unwrap_or_else(|| ("test".into(), String::new()));
    let notification = notify_core::Notification::test(&key, &now);
    let options = delivery_options();
    let report = notify_core::deliver(&channel, &notification, &options, &notify_core::http_agent(&options));
    JsonB(serde_json::json!({
        "channel": name,
        "type": kind,
        "ok": report.outcome == notify_core::Outcome::Delivered,
        "outcome": report.outcome.label(),
        "reason": report.outcome.reason(),
        "status": report.status,
        "response": report.response,
        "error": report.error,
        "latency_ms": (report.latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
        "notification_id": key,
    }))
}

