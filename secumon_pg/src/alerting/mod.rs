//! The alert engine worker. Evaluation is set-based SQL (sql/alerting.sql,
//! `secumon._evaluate_alerts`); this module runs it every `secumon.alert_interval`.

use pgrx::prelude::*;
use std::time::Duration;

use crate::{gucs, worker};

const JOB: &str = "alert_evaluation";

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn secumon_alert_engine_main(_arg: pg_sys::Datum) {
    let mut shown_interval = 0;
    worker::run_loop(interval, || {
        // Keep secumon.jobs truthful about the interval the worker actually uses.
        let seconds = gucs::ALERT_INTERVAL.get();
        if seconds != shown_interval {
            worker::guarded(|| {
                let set = Spi::run_with_args(
                    "UPDATE secumon._jobs SET schedule_interval = make_interval(secs => $1) WHERE job_name = $2",
                    &[f64::from(seconds).into(), JOB.into()],
                );
                if let Err(e) = set {
                    warning!("secumon alert engine: cannot record its interval: {e}");
                }
            });
            shown_interval = seconds;
        }
        worker::run_job(JOB);
        // In a transaction of its own, so its brief index locks are not held through a cycle.
        worker::guarded(|| {
            if let Err(e) = Spi::run("SELECT secumon._summarize_ingest_ranges()") {
                warning!("secumon alert engine: summarising new index ranges failed: {e}");
            }
        });
    });
}

fn interval() -> Duration {
    Duration::from_secs(gucs::ALERT_INTERVAL.get().max(1) as u64)
}
