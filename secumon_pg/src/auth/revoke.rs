//! Refresh-token reuse detection must revoke the token's whole family, but refresh() then
//! raises an error, which would roll the revocation back. So the revocation runs in a
//! short-lived background worker with its own transaction. It waits for the refresh()
//! transaction's row lock, and so commits just after that transaction has failed.

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::errors;
use crate::background;

/// Starts a worker that calls `secumon._revoke_family(family, 'reuse')` in this database.
/// Returns false (and logs) when no worker slot is free.
#[pg_extern(volatile, parallel_unsafe)]
fn _revoke_family_in_background(family: pgrx::Uuid) -> bool {
    let started =
        background::start_short_lived("secumon token revoker", "secumon_revoke_family_main", &family.to_string(), false);
    if let Err(e) = &started {
        errors::server_log(format!(
            "secumon: could not start a worker to revoke refresh-token family {family} ({e:?}); \
             raise max_worker_processes"
        ));
    }
    started.is_ok()
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn secumon_revoke_family_main(_arg: pg_sys::Datum) {
    let Some(family) = background::connect_short_lived() else {
        return;
    };
    BackgroundWorker::transaction(|| {
        Spi::run_with_args(
            "SELECT secumon._revoke_family($1::uuid, 'reuse')",
            &[family.as_str().into()],
        )
        .unwrap_or_else(|e| warning!("secumon token revoker: {e}"));
    });
}
