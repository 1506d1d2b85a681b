//! The job scheduler: the jobs of `secumon._jobs` (sql/jobs.sql) that belong to a worker run
//! when due, each in its own transaction; `secumon._run_job_recorded` records how each run
//! ended, which `secumon.jobs` shows. Workers call [`run_due_jobs`] from their cycle.

use pgrx::prelude::*;

use crate::background::guarded;

/// Runs every enabled job of `worker` that is due now, oldest due first.
pub fn run_due_jobs(worker: &str) {
    for job in due_jobs(worker) {
        run_job(&job);
    }
}

/// Names of the enabled jobs of `worker` that are due now.
fn due_jobs(worker: &str) -> Vec<String> {
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
