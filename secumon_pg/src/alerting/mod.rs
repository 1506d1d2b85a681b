//! The alert engine. Evaluation is set-based SQL (sql/alert_engine.sql,
//! `secumon._evaluate_alerts`); the alert engine worker (`worker`) runs [`Engine::cycle`] every
//! `secumon.alert_interval`.

use pgrx::prelude::*;
use std::time::Duration;

use crate::background::guarded;
use crate::{gucs, scheduler};

const JOB: &str = "alert_evaluation";

/// The alert engine's state between cycles.
#[derive(Default)]
pub struct Engine {
    /// The interval `secumon.jobs` shows, in seconds.
    shown_interval: i32,
}

impl Engine {
    /// One cycle: evaluate the rules, then summarise the index ranges ingest added since.
    pub fn cycle(&mut self) {
        // Keep secumon.jobs truthful about the interval the worker actually uses.
        let seconds = gucs::ALERT_INTERVAL.get();
        if seconds != self.shown_interval {
            guarded(|| {
                let set = Spi::run_with_args(
                    "UPDATE secumon._jobs SET schedule_interval = make_interval(secs => $1) WHERE job_name = $2",
                    &[f64::from(seconds).into(), JOB.into()],
                );
                if let Err(e) = set {
                    warning!("secumon alert engine: cannot record its interval: {e}");
                }
            });
            self.shown_interval = seconds;
        }
        scheduler::run_job(JOB);
        // In a transaction of its own, so its brief index locks are not held through a cycle.
        guarded(|| {
            if let Err(e) = Spi::run("SELECT secumon._summarize_ingest_ranges()") {
                warning!("secumon alert engine: summarising new index ranges failed: {e}");
            }
        });
    }
}

/// How long the alert engine sleeps between cycles: `secumon.alert_interval`.
pub fn interval() -> Duration {
    Duration::from_secs(gucs::ALERT_INTERVAL.get().max(1) as u64)
}
