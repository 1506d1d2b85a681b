//! Refresh-token reuse detection must revoke the token's whole family, but refresh() then
//! raises an error, which would roll the revocation back. So the revocation runs in a
//! short-lived background worker with its own transaction. It waits for the refresh()
//! transaction's row lock, and so commits just after that transaction has failed.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::Duration;

use super::errors;

/// Starts a worker that calls `secumon._revoke_family(family, 'reuse')` in this database.
/// Returns false (and logs) when no worker slot is free.
#[pg_extern(volatile, parallel_unsafe)]
fn _revoke_family_in_background(family: pgrx::Uuid) -> bool {
    // SAFETY: MyDatabaseId is set once the backend has connected to its database, which it has when
    // it runs SQL.
    let database = unsafe { pg_sys::MyDatabaseId };
    let started = BackgroundWorkerBuilder::new("secumon token revoker")
        .set_type("secumon token revoker")
        .set_library("secumon")
        .set_function("secumon_revoke_family_main")
        .enable_spi_access()
        .set_restart_time(None::<Duration>)
        .set_extra(&format!("{} {family}", u32::from(database)))
        .load_dynamic();
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
    let extra = BackgroundWorker::get_extra().to_string();
    let mut parts = extra.split(' ');
    let database = parts.next().and_then(|d| d.parse::<u32>().ok());
    let family = parts.next().map(str::to_string);
    let (Some(database), Some(family)) = (database, family) else {
        log!("secumon token revoker: bad arguments {extra:?}");
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    BackgroundWorker::transaction(|| {
        Spi::run_with_args(
            "SELECT secumon._revoke_family($1::uuid, 'reuse')",
            &[family.as_str().into()],
        )
        .unwrap_or_else(|e| warning!("secumon token revoker: {e}"));
    });
}
