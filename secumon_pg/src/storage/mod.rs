//! Metric storage: partitions, the default-partition drain, rollups, compression and retention.
//! The set-based work is SQL (sql/storage.sql, and sql/series.sql to sql/lifecycle.sql for the
//! lifecycle); this module schedules it and
//! holds what SQL cannot do: rollup summaries and sketches (`rollup`), the columnar encoder of a
//! day's partition (`compress`) and the foreign-data wrapper that reads compressed days back
//! through the same tables (`fdw`).

use crate::scheduler;

mod compress;
mod continuous;
mod fdw;
mod rollup;

/// Name of the worker that owns the storage jobs in `secumon._jobs.worker`.
pub const WORKER: &str = "maintenance";

/// One pass of the maintenance worker: run every due job, each in its own transaction.
pub fn maintenance_cycle() {
    scheduler::run_due_jobs(WORKER);
}

