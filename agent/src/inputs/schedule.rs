//! Runs the configured inputs on their own intervals, apart from the host collection.
//!
//! One scheduler thread sleeps until the next input is due and starts it in a short-lived
//! thread of its own, so a slow probe delays neither the other inputs nor the report. A
//! finished input deposits its samples in [`Pending`] (the latest value per key); each
//! report takes them ([`Inputs::add_to`]).
//!
//! The database stores a report's ordered key list as its layout, so the keys must not
//! flicker: a report carries every custom key seen within the last 10 intervals of the
//! input that produced it, with no value (`None`) when there is nothing new for it. A key
//! unseen for longer is dropped from the layout.

use super::{exec, probe, scrape, ExecInput, InputCommon, ProbeInput, Sample, ScrapeInput};
use crate::config::Config;
use crate::report::Report;
use crate::{log_debug, log_error, log_warn};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Most series in one report (the database refuses more).
pub const MAX_REPORT_SERIES: usize = 10_000;
/// A key stays in the layout this many intervals of its input after its last value.
pub const KEEP_INTERVALS: u32 = 10;
/// Stack of an input's thread; only touched pages count, TLS handshakes need some depth.
const INPUT_STACK: usize = 1024 * 1024;

/// One configured input.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Scrape(ScrapeInput),
    Exec(ExecInput),
    Probe(ProbeInput),
}

impl Job {
    pub fn common(&self) -> &InputCommon {
        match self {
            Job::Scrape(i) => &i.common,
            Job::Exec(i) => &i.common,
            Job::Probe(i) => &i.common,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Job::Scrape(_) => "scrape",
            Job::Exec(_) => "exec",
            Job::Probe(_) => "probe",
        }
    }

    /// Runs the input once; bounded by its timeout.
    pub fn run(&self) -> Vec<Sample> {
        match self {
            Job::Scrape(i) => scrape::run(i),
            Job::Exec(i) => exec::run(i),
            Job::Probe(i) => probe::run(i),
        }
    }
}

/// Every input of `cfg`: scrapes, then execs, then probes.
pub fn jobs(cfg: &Config) -> Vec<Job> {
    let scrapes = cfg.scrapes.iter().cloned().map(Job::Scrape);
    let execs = cfg.execs.iter().cloned().map(Job::Exec);
    let probes = cfg.probes.iter().cloned().map(Job::Probe);
    scrapes.chain(execs).chain(probes).collect()
}

/// `--once`: runs every input once, all at the same time, and returns their samples
/// (bounded by the longest timeout).
pub fn run_all_once(cfg: &Config) -> Vec<Sample> {
    let jobs = jobs(cfg);
    thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .filter_map(|job| {
                thread::Builder::new()
                    .stack_size(INPUT_STACK)
                    .spawn_scoped(scope, || job.run())
                    .map_err(|e| {
                        log_error!(
                            "{} {}: cannot start a thread: {e}; it does not run",
                            job.kind(),
                            job.common().name
                        )
                    })
                    .ok()
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Samples waiting for the next report: key -> (latest value, how long the key stays in
/// the layout).
#[derive(Debug, Default)]
pub struct Pending {
    values: BTreeMap<String, (f64, Duration)>,
}

impl Pending {
    pub fn deposit(&mut self, samples: Vec<Sample>, interval: Duration) {
        let keep = interval * KEEP_INTERVALS;
        for s in samples {
            self.values.insert(s.key, (s.value, keep));
        }
    }

    pub fn take(&mut self) -> BTreeMap<String, (f64, Duration)> {
        std::mem::take(&mut self.values)
    }
}

/// The custom keys of recent reports: key -> (last time it had a value, how long it stays).
#[derive(Debug, Default)]
pub struct Layout {
    seen: BTreeMap<String, (Instant, Duration)>,
}

impl Layout {
    /// Adds `fresh` to `report`, plus every key seen recently without a value. Returns how
    /// many fresh samples did not fit in the report (logged by the caller).
    pub fn fill(
        &mut self,
        report: &mut Report,
        fresh: BTreeMap<String, (f64, Duration)>,
        now: Instant,
    ) -> usize {
        let mut budget = MAX_REPORT_SERIES.saturating_sub(report.series.len());
        let mut dropped = 0;
        for (key, (value, keep)) in fresh {
            if report.series.contains_key(&key) {
                continue;
            }
            if budget == 0 {
                dropped += 1;
                continue;
            }
            budget -= 1;
            self.seen.insert(key.clone(), (now, keep));
            report.series.insert(key, Some(value));
        }
        self.seen
            .retain(|_, (last, keep)| now.saturating_duration_since(*last) <= *keep);
        for key in self.seen.keys() {
            if budget == 0 {
                break;
            }
            if !report.series.contains_key(key) {
                report.series.insert(key.clone(), None);
                budget -= 1;
            }
        }
        dropped
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The inputs of a running daemon: the scheduler thread, the pending samples, the layout.
pub struct Inputs {
    jobs: Vec<Job>,
    pending: Arc<Mutex<Pending>>,
    layout: Layout,
    scheduler: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Inputs {
    /// Starts the scheduler for the inputs of `cfg` (no thread when there are none).
    pub fn start(cfg: &Config) -> Inputs {
        let mut inputs = Inputs {
            jobs: Vec::new(),
            pending: Arc::new(Mutex::new(Pending::default())),
            layout: Layout::default(),
            scheduler: None,
        };
        inputs.reconfigure(cfg);
        inputs
    }

    /// Applies reloaded inputs: an unchanged list keeps running undisturbed; otherwise the
    /// scheduler restarts with the new list and every input runs at once. Runs in flight
    /// finish and still deliver their samples.
    pub fn reconfigure(&mut self, cfg: &Config) {
        let jobs = jobs(cfg);
        if jobs == self.jobs && (self.scheduler.is_some() || jobs.is_empty()) {
            return;
        }
        self.stop();
        self.jobs = jobs;
        if self.jobs.is_empty() {
            return;
        }
        limit_malloc_arenas();
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs, pending, flag) = (
            self.jobs.clone(),
            Arc::clone(&self.pending),
            Arc::clone(&stop),
        );
        match thread::Builder::new()
            .name("inputs".into())
            .stack_size(256 * 1024)
            .spawn(move || schedule(jobs, pending, &flag))
        {
            Ok(handle) => self.scheduler = Some((stop, handle)),
            Err(e) => log_error!(
                "cannot start the inputs thread: {e}; scrapes, execs and probes do not run"
            ),
        }
    }

    /// Adds the pending samples (and the recent keys without a value) to `report`.
    pub fn add_to(&mut self, report: &mut Report) {
        let fresh = lock(&self.pending).take();
        if fresh.is_empty() && self.layout.is_empty() {
            return;
        }
        let offered = fresh.len();
        let dropped = self.layout.fill(report, fresh, Instant::now());
        if dropped > 0 {
            log_error!(
                "report of {}: dropped {dropped} of {offered} input sample(s): a report carries at most {MAX_REPORT_SERIES} series",
                report.time
            );
        }
    }

    /// Stops the scheduler thread; runs in flight finish and still deliver their samples
    /// (a stopping agent kills its commands: [`super::exec::kill_running`]).
    pub fn stop(&mut self) {
        if let Some((stop, handle)) = self.scheduler.take() {
            stop.store(true, Ordering::Relaxed);
            handle.thread().unpark();
            if handle.join().is_err() {
                log_error!("the inputs thread panicked");
            }
        }
    }
}

impl Drop for Inputs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// glibc gives threads their own malloc arenas, each keeping freed memory resident; the
/// short-lived input threads would add one arena after another. Two are plenty here.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// When a job due at `due` runs next: one interval later, or one interval from now if it
/// fell behind (no bursts after a suspend).
fn next_due(due: Instant, interval: Duration, now: Instant) -> Instant {
    let next = due + interval;
    if next <= now {
        now + interval
    } else {
        next
    }
}

fn schedule(jobs: Vec<Job>, pending: Arc<Mutex<Pending>>, stop: &AtomicBool) {
    let start = Instant::now();
    let mut due: Vec<Instant> = vec![start; jobs.len()];
    let running: Vec<Arc<AtomicBool>> = jobs.iter().map(|_| Arc::default()).collect();
    let jobs: Vec<Arc<Job>> = jobs.into_iter().map(Arc::new).collect();
    while !stop.load(Ordering::Relaxed) && !crate::signals::stop_requested() {
        let now = Instant::now();
        for (i, job) in jobs.iter().enumerate() {
            if due[i] > now {
                continue;
            }
            let interval = job.common().interval;
            due[i] = if due[i] == start {
                // After the first run (at start, for the first report), run half an
                // interval off the reports' schedule, so that with the agent's interval
                // each run lands well inside one report period instead of racing it.
                start + interval + interval / 2
            } else {
                next_due(due[i], interval, now)
            };
            if running[i].swap(true, Ordering::AcqRel) {
                log_warn!(
                    "{} {}: still running from its last turn; skipped this one",
                    job.kind(),
                    job.common().name
                );
                continue;
            }
            let (job, pending, busy) = (
                Arc::clone(job),
                Arc::clone(&pending),
                Arc::clone(&running[i]),
            );
            let spawned = thread::Builder::new()
                .name(format!("{}-{i}", job.kind()))
                .stack_size(INPUT_STACK)
                .spawn(move || {
                    let samples = job.run();
                    log_debug!(
                        "{} {}: {} sample(s)",
                        job.kind(),
                        job.common().name,
                        samples.len()
                    );
                    lock(&pending).deposit(samples, job.common().interval);
                    busy.store(false, Ordering::Release);
                });
            if let Err(e) = spawned {
                running[i].store(false, Ordering::Release);
                log_error!(
                    "cannot start a thread for an input: {e}; trying again at its next turn"
                );
            }
        }
        let next = due
            .iter()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(1));
        thread::park_timeout(next.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn report() -> Report {
        let mut r = Report::new("a", Timestamp::from_unix_micros(0));
        r.set("cpu", "usage_percent", Some(1.0));
        r
    }

    fn fresh(keys: &[(&str, f64)], keep: Duration) -> BTreeMap<String, (f64, Duration)> {
        keys.iter()
            .map(|(k, v)| (k.to_string(), (*v, keep)))
            .collect()
    }

    #[test]
    fn recent_keys_stay_in_the_layout_without_a_value_then_go() {
        let t0 = Instant::now();
        let keep = Duration::from_secs(100);
        let mut layout = Layout::default();
        let mut r = report();
        layout.fill(
            &mut r,
            fresh(&[("custom.a", 1.0), ("custom.b", 2.0)], keep),
            t0,
        );
        assert_eq!(r.series.get("custom.a"), Some(&Some(1.0)));
        assert_eq!(r.series.len(), 3);

        let mut r = report();
        layout.fill(
            &mut r,
            fresh(&[("custom.b", 3.0)], keep),
            t0 + Duration::from_secs(50),
        );
        assert_eq!(
            r.series.get("custom.a"),
            Some(&None),
            "kept without a value"
        );
        assert_eq!(r.series.get("custom.b"), Some(&Some(3.0)));

        let mut r = report();
        layout.fill(&mut r, BTreeMap::new(), t0 + Duration::from_secs(101));
        assert!(
            !r.series.contains_key("custom.a"),
            "unseen for 10 intervals"
        );
        assert_eq!(r.series.get("custom.b"), Some(&None));
        assert_eq!(layout.len(), 1);
    }

    #[test]
    fn a_report_never_exceeds_the_series_cap_and_host_series_stay() {
        let mut layout = Layout::default();
        let mut r = report();
        let many: BTreeMap<String, (f64, Duration)> = (0..MAX_REPORT_SERIES + 5)
            .map(|i| (format!("custom.m{i:05}"), (1.0, Duration::from_secs(10))))
            .collect();
        let dropped = layout.fill(&mut r, many, Instant::now());
        assert_eq!(r.series.len(), MAX_REPORT_SERIES);
        assert_eq!(dropped, 6);
        assert_eq!(r.get("cpu.usage_percent"), Some(1.0));
    }

    #[test]
    fn pending_keeps_the_latest_value_per_key() {
        let mut p = Pending::default();
        let s = |v| {
            vec![Sample {
                key: "custom.x".into(),
                value: v,
            }]
        };
        p.deposit(s(1.0), Duration::from_secs(10));
        p.deposit(s(2.0), Duration::from_secs(10));
        let taken = p.take();
        assert_eq!(
            taken.get("custom.x"),
            Some(&(2.0, Duration::from_secs(100)))
        );
        assert!(p.take().is_empty());
    }

    #[test]
    fn the_scheduler_runs_each_input_on_its_interval() {
        let mut cfg = Config::default();
        let exec = |name: &str, interval_ms: u64| ExecInput {
            common: InputCommon {
                name: name.into(),
                labels: BTreeMap::new(),
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(interval_ms),
            },
            command: vec!["echo".into(), format!("{name} 1")],
            format: super::super::ExecFormat::Prometheus,
            max_bytes: 1024,
        };
        cfg.execs = vec![exec("fast", 100), exec("slow", 5000)];
        let mut inputs = Inputs::start(&cfg);
        std::thread::sleep(Duration::from_millis(450));
        let mut r = report();
        inputs.add_to(&mut r);
        assert_eq!(r.get("custom.fast"), Some(1.0));
        assert_eq!(r.get("custom.slow"), Some(1.0));
        // The slow one ran once and has nothing new; it stays in the layout as None.
        std::thread::sleep(Duration::from_millis(250));
        let mut r = report();
        inputs.add_to(&mut r);
        assert_eq!(r.get("custom.fast"), Some(1.0));
        assert_eq!(r.series.get("custom.slow"), Some(&None));
        assert_eq!(
            r.get(r#"custom.exec.up{input="slow"}"#),
            None,
            "no new value for slow's health either"
        );
        inputs.stop();
    }

    #[test]
    fn run_all_once_runs_every_input_in_parallel() {
        // Each command waits (at most 2 s) until all three have started: run one after the
        // other, the first would give up and print nothing.
        let dir = std::env::temp_dir().join(format!("secumon-parallel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let cfg = Config {
            execs: (0..3)
                .map(|i| ExecInput {
                    common: InputCommon {
                        name: format!("e{i}"),
                        labels: BTreeMap::new(),
                        interval: Duration::from_secs(10),
                        timeout: Duration::from_secs(5),
                    },
                    command: vec![
                        "sh".into(),
                        "-c".into(),
                        format!(
                            "touch {d}/e{i}; n=0; while [ $(ls {d} | wc -l) -lt 3 ] && [ $n -lt 40 ]; do sleep 0.05; n=$((n+1)); done; \
                             [ $(ls {d} | wc -l) -ge 3 ] && echo v{i} 1"
                        ),
                    ],
                    format: super::super::ExecFormat::Prometheus,
                    max_bytes: 1024,
                })
                .collect(),
            ..Config::default()
        };
        let samples = run_all_once(&cfg);
        let _ = std::fs::remove_dir_all(&dir);
        for i in 0..3 {
            assert!(
                samples.iter().any(|s| s.key == format!("custom.v{i}")),
                "{samples:?}"
            );
        }
    }
}
