//! Login throttling per account and per client address, in shared memory.
//!
//! Failed logins end in an ERROR, which rolls back anything written to a table in the same
//! transaction; so the counters live in shared memory, outside transactions (and are cleared by
//! a server restart). Failures of an account or address are counted until a whole
//! `secumon.login_failure_window` passes without one; at `max` failures it is locked for one
//! window, during which every login is refused (without being counted).
//! Accounts are counted by the name tried, whether or not it exists, so locks do not reveal
//! which usernames are real. Requires `shared_preload_libraries = 'secumon'`.

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_shmem_init, pg_sys};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{errors, identity};
use crate::gucs;

const SLOTS: usize = 2048;
const LABEL_BYTES: usize = 64;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Kind {
    Free = 0,
    Account = 1,
    Address = 2,
}

#[derive(Copy, Clone)]
struct Slot {
    kind: Kind,
    key: [u8; 16],
    label: [u8; LABEL_BYTES],
    label_len: u8,
    failures: u32,
    first_failure: i64,
    last_failure: i64,
    locked_until: i64,
}

impl Slot {
    const FREE: Slot = Slot {
        kind: Kind::Free,
        key: [0; 16],
        label: [0; LABEL_BYTES],
        label_len: 0,
        failures: 0,
        first_failure: 0,
        last_failure: 0,
        locked_until: 0,
    };

    fn label(&self) -> String {
        String::from_utf8_lossy(&self.label[..usize::from(self.label_len)]).into_owned()
    }

    /// Whether the slot still matters at `now`: locked, or failures inside the window.
    fn live(&self, now: i64, window: i64) -> bool {
        self.kind != Kind::Free && (self.locked_until > now || self.last_failure + window > now)
    }
}

#[derive(Copy, Clone)]
pub struct Table {
    slots: [Slot; SLOTS],
}

impl Default for Table {
    fn default() -> Self {
        Table {
            slots: [Slot::FREE; SLOTS],
        }
    }
}

// SAFETY: plain old data, no pointers.
unsafe impl PGRXSharedMemory for Table {}

// SAFETY: the name is a unique, NUL-terminated static; pg_shmem_init! in init_shared_memory
// attaches the lock before any backend uses it.
static TABLE: PgLwLock<Table> = unsafe { PgLwLock::new(c"secumon_login_throttle") };
/// Set by the postmaster while preloading; inherited by every backend it forks.
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Reserves the table; called from _PG_init while shared_preload_libraries is processed.
#[allow(unexpected_cfgs)] // pg_shmem_init! tests pg13…pg18 features this crate does not declare
pub fn init() {
    pg_shmem_init!(TABLE);
    AVAILABLE.store(true, Ordering::Relaxed);
}

fn table_or_raise() -> &'static PgLwLock<Table> {
    if !AVAILABLE.load(Ordering::Relaxed) {
        crate::errors::raise_report(
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "SecuMon logins need secumon in shared_preload_libraries",
                "secumon.login",
            )
            .set_detail("Login throttling keeps its counters in shared memory.")
            .set_hint("Add secumon to shared_preload_libraries in postgresql.conf and restart PostgreSQL."),
        );
    }
    &TABLE
}

fn key(kind: Kind, label: &str) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update([kind as u8]);
    hasher.update(label.as_bytes());
    let digest = hasher.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn account_label(username: &str) -> String {
    username.to_lowercase()
}

/// (window in microseconds, max failures per account, per address).
fn settings() -> (i64, u32, u32) {
    (
        i64::from(gucs::LOGIN_FAILURE_WINDOW.get()) * 1_000_000,
        u32::try_from(gucs::LOGIN_MAX_FAILURES.get()).unwrap_or(5),
        u32::try_from(gucs::LOGIN_MAX_FAILURES_PER_ADDRESS.get()).unwrap_or(20),
    )
}

/// Microseconds since 2000-01-01 (PostgreSQL's timestamptz). Wall clock, not transaction
/// time: locks must expire for a long-running session too.
fn now() -> i64 {
    // SAFETY: reads the system clock through PostgreSQL; no pointers.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

fn targets<'a>(username: &'a str, address: Option<&'a str>) -> Vec<(Kind, String)> {
    let mut targets = vec![(Kind::Account, account_label(username))];
    if let Some(address) = address.filter(|a| !a.is_empty()) {
        targets.push((Kind::Address, address.to_string()));
    }
    targets
}

/// Whether logins for `username`, or from `address`, are locked right now.
#[pg_extern(volatile, parallel_unsafe)]
fn _login_locked(username: &str, address: Option<&str>) -> bool {
    let table = table_or_raise().share();
    let now = now();
    targets(username, address).iter().any(|(kind, label)| {
        let key = key(*kind, label);
        table
            .slots
            .iter()
            .any(|s| s.kind == *kind && s.key == key && s.locked_until > now)
    })
}

/// Counts a failed login for `username` and `address`; locks them at their limits and logs.
#[pg_extern(volatile, parallel_unsafe)]
fn _login_failed(username: &str, address: Option<&str>) {
    let (window, max_account, max_address) = settings();
    let now = now();
    let mut log = Vec::new();
    {
        let mut table = table_or_raise().exclusive();
        for (kind, label) in targets(username, address) {
            let key = key(kind, &label);
            let index = match table.slots.iter().position(|s| s.kind == kind && s.key == key) {
                Some(i) => i,
                None => {
                    let i = victim(&table.slots, now, window);
                    let mut slot = Slot::FREE;
                    slot.kind = kind;
                    slot.key = key;
                    let bytes = label.as_bytes();
                    let mut len = bytes.len().min(LABEL_BYTES);
                    while !label.is_char_boundary(len) {
                        len -= 1;
                    }
                    slot.label[..len].copy_from_slice(&bytes[..len]);
                    slot.label_len = len as u8;
                    table.slots[i] = slot;
                    i
                }
            };
            let slot = &mut table.slots[index];
            if slot.last_failure + window <= now && slot.locked_until <= now {
                slot.failures = 0;
                slot.first_failure = now;
            }
            slot.failures = slot.failures.saturating_add(1);
            slot.last_failure = now;
            let max = if kind == Kind::Account {
                max_account
            } else {
                max_address
            };
            let what = if kind == Kind::Account { "account" } else { "address" };
            if slot.failures >= max {
                slot.locked_until = now + window;
                log.push(format!(
                    "secumon: login {what} \"{label}\" locked for {} s after {} failed logins",
                    window / 1_000_000,
                    slot.failures
                ));
            } else {
                log.push(format!(
                    "secumon: failed login for {what} \"{label}\" ({} of {max} within {} s)",
                    slot.failures,
                    window / 1_000_000
                ));
            }
        }
    }
    // Logged after the lock is released: logging may do I/O.
    for line in log {
        errors::server_log(line);
    }
}

/// The slot to reuse for a new key: a free or stale one, else the least-failed, oldest one,
/// so flooding the table with new names evicts locked accounts last.
fn victim(slots: &[Slot], now: i64, window: i64) -> usize {
    if let Some(i) = slots.iter().position(|s| !s.live(now, window)) {
        return i;
    }
    slots
        .iter()
        .enumerate()
        .min_by_key(|(_, s)| (s.locked_until > now, s.failures, s.last_failure))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// A successful login clears the account's failures (not the address's: one good password
/// must not let a client keep guessing others).
#[pg_extern(volatile, parallel_unsafe)]
fn _login_succeeded(username: &str) {
    let key = key(Kind::Account, &account_label(username));
    let mut table = table_or_raise().exclusive();
    for slot in table
        .slots
        .iter_mut()
        .filter(|s| s.kind == Kind::Account && s.key == key)
    {
        *slot = Slot::FREE;
    }
}

fn require_operator() {
    if !identity::caller_is_operator() {
        crate::errors::raise_report(
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "only superusers and members of secumon_admin may inspect or clear login locks",
                "secumon.login_lockouts",
            )
            .set_hint("Ask a SecuMon operator."),
        );
    }
}

/// Accounts and addresses with recent failed logins, and whether they are locked.
#[pg_extern(volatile, parallel_unsafe)]
fn login_lockouts() -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(name, String),
        name!(failures, i32),
        name!(locked, bool),
        name!(locked_until, Option<TimestampWithTimeZone>),
        name!(last_failure, TimestampWithTimeZone),
    ),
> {
    require_operator();
    let (window, _, _) = settings();
    let now = now();
    let rows: Vec<_> = {
        let table = table_or_raise().share();
        table.slots.iter().filter(|s| s.live(now, window)).copied().collect()
    };
    let to_ts = |micros: i64| {
        TimestampWithTimeZone::try_from(micros).unwrap_or_else(|_| TimestampWithTimeZone::positive_infinity())
    };
    TableIterator::new(rows.into_iter().map(move |s| {
        (
            if s.kind == Kind::Account {
                "account".to_string()
            } else {
                "address".to_string()
            },
            s.label(),
            i32::try_from(s.failures).unwrap_or(i32::MAX),
            s.locked_until > now,
            (s.locked_until > now).then(|| to_ts(s.locked_until)),
            to_ts(s.last_failure),
        )
    }))
}

/// Clears the failures and lock of an account (`username`) and/or an address; returns how
/// many entries were cleared. With both NULL, clears everything.
#[pg_extern(volatile, parallel_unsafe)]
fn unlock_login(username: default!(Option<&str>, "NULL"), address: default!(Option<&str>, "NULL")) -> i32 {
    require_operator();
    let wanted: Vec<[u8; 16]> = username
        .map(|u| key(Kind::Account, &account_label(u)))
        .into_iter()
        .chain(address.map(|a| key(Kind::Address, a)))
        .collect();
    let everything = wanted.is_empty();
    let mut cleared = 0;
    let mut table = table_or_raise().exclusive();
    for slot in table.slots.iter_mut().filter(|s| s.kind != Kind::Free) {
        if everything || wanted.contains(&slot.key) {
            *slot = Slot::FREE;
            cleared += 1;
        }
    }
    cleared
}
