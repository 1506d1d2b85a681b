//! Metric storage: partitions, the default-partition drain, rollups, compression and retention.
//! The set-based work is SQL (sql/storage.sql, sql/lifecycle.sql); this module schedules it and
//! holds what SQL cannot do: rollup summaries and sketches (`rollup`), the columnar encoder of a
//! day's partition (`compress`) and the foreign-data wrapper that reads compressed days back
//! through the same tables (`fdw`).

use pgrx::prelude::*;

use crate::worker;

mod compress;
mod fdw;
mod rollup;

/// Name of the worker that owns the storage jobs in `secumon._jobs.worker`.
pub const WORKER: &str = "maintenance";

/// One pass of the maintenance worker: run every due job, each in its own transaction.
pub fn maintenance_cycle() {
    for job in worker::due_jobs(WORKER) {
        worker::run_job(&job);
    }
}

/// Raises an ERROR with a SQLSTATE and an optional hint.
pub(crate) fn raise(code: PgSqlErrorCode, message: String, hint: Option<&str>) -> ! {
    let mut report = pgrx::pg_sys::panic::ErrorReport::new(code, message, function_name!());
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}
