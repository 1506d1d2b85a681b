//! Metric storage: partitions, the default-partition drain and (later) rollups, compression
//! and retention. The work itself is set-based SQL in sql/storage.sql; this module schedules it.

use crate::worker;

/// Name of the worker that owns the storage jobs in `secumon._jobs.worker`.
pub const WORKER: &str = "maintenance";

/// One pass of the maintenance worker: run every due job, each in its own transaction.
pub fn maintenance_cycle() {
    for job in worker::due_jobs(WORKER) {
        worker::run_job(&job);
    }
}
