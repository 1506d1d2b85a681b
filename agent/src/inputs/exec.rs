//! `[[exec]]`: runs a command and reads series from its standard output.
//!
//! The command is an argv array run without a shell, stdin `/dev/null`, in a process group
//! of its own so that a timeout kills it and everything it started (`SIGKILL` to the
//! group). Its stdout is read up to `max_bytes` with `poll(2)` against the deadline, so a
//! command that hangs, prints forever or forks a daemon holding the pipe never stalls the
//! agent; the first line of its stderr goes to the log when it fails.
//!
//! Health series (label `input`): `custom.exec.up` (1, or 0 when the command cannot be
//! started, exits non-zero or by a signal, times out, prints more than `max_bytes`, or
//! prints only lines that do not parse), `custom.exec.duration_seconds`,
//! `custom.exec.samples` and `custom.exec.invalid_lines`.

use super::{influx, prom, with_health, ExecFormat, ExecInput, Parsed, Sample};
use crate::log_warn;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Most stderr bytes kept for the log line.
const STDERR_KEPT: usize = 512;

/// Process groups of the commands running now, so that a stopping agent kills them
/// ([`kill_running`]). A group leaves the set in the same critical section that reaps its
/// leader: a group id in the set is never one the kernel may have given to another process.
static RUNNING: std::sync::Mutex<Vec<libc::pid_t>> = std::sync::Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<libc::pid_t>> {
    RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGKILL to every command running now (the agent is stopping): none outlives the agent.
pub fn kill_running() {
    for pgid in running().iter() {
        // SAFETY: plain system call; the group's leader is not reaped while it is listed.
        unsafe {
            libc::kill(-*pgid, libc::SIGKILL);
        }
    }
}

/// Why a run gave `up 0`.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Spawn(String),
    Timeout,
    TooLarge,
    Exit(ExitStatus),
    Read(String),
}

/// What one run produced before parsing.
struct RunOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    failure: Option<Failure>,
}

/// Runs `input` once; returns its samples and its health series.
pub fn run(input: &ExecInput) -> Vec<Sample> {
    let started = Instant::now();
    let output = execute(input);
    let elapsed = started.elapsed();
    let mut parsed = Parsed::default();
    let mut up = output.failure.is_none();
    let name = &input.common.name;
    match &output.failure {
        None => {
            parsed = match input.format {
                ExecFormat::Prometheus => prom::parse(&output.stdout, &input.common.labels),
                ExecFormat::Influx => influx::parse(&output.stdout, &input.common.labels),
            };
            if parsed.invalid > 0 {
                log_warn!(
                    "exec {name}: skipped {} invalid line(s) of its output, first: {}",
                    parsed.invalid,
                    parsed.first_error.as_deref().unwrap_or("?")
                );
                // Only garbage: the command is not doing its job.
                up = !parsed.samples.is_empty();
            }
        }
        Some(failure) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let why = match failure {
                Failure::Spawn(e) => format!("cannot start {:?}: {e}", input.command[0]),
                Failure::Timeout => format!(
                    "killed after its timeout of {}",
                    crate::config::format_duration(input.common.timeout)
                ),
                Failure::TooLarge => format!(
                    "killed: its output exceeds max_bytes ({} bytes); no samples taken from it",
                    input.max_bytes
                ),
                Failure::Exit(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("killed by signal {signal}"),
                    _ => format!("ended with {status}"),
                },
                Failure::Read(e) => format!("cannot read its output: {e}"),
            };
            if first.is_empty() {
                log_warn!("exec {name}: {why}");
            } else {
                log_warn!(
                    "exec {name}: {why}; stderr: {}",
                    crate::log::one_line(first)
                );
            }
        }
    }
    with_health("exec", &input.common, parsed, up, elapsed)
}

fn execute(input: &ExecInput) -> RunOutput {
    let mut out = RunOutput {
        stdout: Vec::new(),
        stderr: Vec::new(),
        failure: None,
    };
    let Some((program, args)) = input.command.split_first() else {
        out.failure = Some(Failure::Spawn("empty command".into()));
        return out;
    };
    let deadline = Instant::now() + input.common.timeout;
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills the command and its children at once.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            out.failure = Some(Failure::Spawn(e.to_string()));
            return out;
        }
    };
    let pgid = libc::pid_t::try_from(child.id()).ok();
    if let Some(pgid) = pgid {
        running().push(pgid);
    }
    // Reaps the leader and forgets its group in one critical section (see RUNNING).
    let reap = |child: &mut Child, block: bool| {
        let mut groups = running();
        let result = if block { child.wait().map(Some) } else { child.try_wait() };
        if let (Ok(Some(_)) | Err(_), Some(pgid)) = (&result, pgid) {
            groups.retain(|g| *g != pgid);
        }
        result
    };
    let limit = usize::try_from(input.max_bytes).unwrap_or(usize::MAX);
    match read_until(&mut child, deadline, limit, &mut out) {
        Ok(()) => {}
        Err(failure) => {
            kill_group(&child);
            out.failure = Some(failure);
        }
    }
    // Reaped in every case, so no zombie is left behind; after a SIGKILL this is prompt.
    let status = loop {
        match reap(&mut child, false) {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline && !crate::signals::stop_requested() => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) => {
                // Closed its stdout but did not exit in time (or the agent is stopping).
                kill_group(&child);
                out.failure.get_or_insert(Failure::Timeout);
                break reap(&mut child, true).ok().flatten();
            }
            Err(e) => {
                out.failure.get_or_insert(Failure::Read(e.to_string()));
                break None;
            }
        }
    };
    if out.failure.is_none() {
        if let Some(status) = status.filter(|s| !s.success()) {
            out.failure = Some(Failure::Exit(status));
        }
    }
    out
}

/// Reads stdout (up to `limit` bytes) and the start of stderr until both are closed.
fn read_until(
    child: &mut Child,
    deadline: Instant,
    limit: usize,
    out: &mut RunOutput,
) -> Result<(), Failure> {
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Failure::Read("no pipe to the command".into()));
    };
    let mut open = [true, true];
    let mut chunk = [0u8; 8192];
    while open[0] || open[1] {
        if crate::signals::stop_requested() {
            return Err(Failure::Timeout);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::Timeout);
        }
        // Wakes at least every 250 ms to notice a stopping agent.
        let wait = (deadline - now).min(Duration::from_millis(250));
        let mut fds = [
            libc::pollfd {
                fd: if open[0] { stdout.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if open[1] { stderr.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let millis = wait.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: fds is a valid array of two pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Failure::Read(e.to_string()));
        }
        for (i, fd) in fds.iter().enumerate() {
            if !open[i] || fd.revents == 0 {
                continue;
            }
            // Readable or hung up: a read does not block now.
            let n = if i == 0 {
                stdout.read(&mut chunk)
            } else {
                stderr.read(&mut chunk)
            };
            match n {
                Ok(0) => open[i] = false,
                Ok(n) if i == 0 => {
                    if out.stdout.len() + n > limit {
                        out.stdout.clear();
                        return Err(Failure::TooLarge);
                    }
                    out.stdout.extend_from_slice(&chunk[..n]);
                }
                Ok(n) => {
                    let room = STDERR_KEPT.saturating_sub(out.stderr.len());
                    out.stderr.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Read(e.to_string())),
            }
        }
    }
    Ok(())
}

/// SIGKILL to the command's process group (its pid: it leads the group it was put in).
fn kill_group(child: &Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: plain system call; the group exists until its leader is reaped, which
    // happens only after this call.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::InputCommon;
    use std::collections::BTreeMap;

    fn input(command: &[&str], timeout: Duration, max_bytes: u64) -> ExecInput {
        ExecInput {
            common: InputCommon {
                name: "test".into(),
                labels: BTreeMap::new(),
                interval: Duration::from_secs(10),
                timeout,
            },
            command: command.iter().map(|s| s.to_string()).collect(),
            format: ExecFormat::Prometheus,
            max_bytes,
        }
    }

    fn value(samples: &[Sample], key: &str) -> Option<f64> {
        samples.iter().find(|s| s.key == key).map(|s| s.value)
    }

    const UP: &str = r#"custom.exec.up{input="test"}"#;
    const INVALID: &str = r#"custom.exec.invalid_lines{input="test"}"#;

    #[test]
    fn a_good_command_gives_its_samples_and_up_1() {
        let s = run(&input(
            &[
                "sh",
                "-c",
                "echo '# TYPE jobs counter'; echo 'jobs{q=\"a\"} 3'",
            ],
            Duration::from_secs(5),
            1024,
        ));
        assert_eq!(value(&s, r#"custom.jobs_total{q="a"}"#), Some(3.0));
        assert_eq!(value(&s, UP), Some(1.0));
        assert_eq!(value(&s, INVALID), Some(0.0));
        assert_eq!(value(&s, r#"custom.exec.samples{input="test"}"#), Some(1.0));
        assert!(value(&s, r#"custom.exec.duration_seconds{input="test"}"#).is_some());
    }

    #[test]
    fn a_hanging_command_and_its_children_are_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("secumon-exec-kill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let s = run(&input(
            &["sh", "-c", &script],
            Duration::from_millis(300),
            1024,
        ));
        assert_eq!(value(&s, UP), Some(0.0));
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        // The grandchild `sleep 60` went with the group (it may linger as a zombie of init
        // for an instant, never as a sleeping process).
        std::thread::sleep(Duration::from_millis(100));
        let state =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        assert!(!state.contains(") S "), "sleep 60 still runs: {state}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sleep_60_alone_is_killed() {
        let s = run(&input(&["sleep", "60"], Duration::from_millis(200), 1024));
        assert_eq!(value(&s, UP), Some(0.0));
        assert_eq!(s.len(), 4, "health series only: {s:?}");
    }

    #[test]
    fn garbage_output_is_counted_and_gives_up_0() {
        let s = run(&input(
            &[
                "sh",
                "-c",
                "echo 'this is not a metric'; echo 'x{' ; printf '\\377\\n'",
            ],
            Duration::from_secs(5),
            1024,
        ));
        assert_eq!(value(&s, UP), Some(0.0));
        assert_eq!(value(&s, INVALID), Some(3.0));
    }

    #[test]
    fn good_lines_beside_garbage_are_kept() {
        let s = run(&input(
            &["printf", "good 1\\nnot good\\n"],
            Duration::from_secs(5),
            1024,
        ));
        assert_eq!(value(&s, "custom.good"), Some(1.0));
        assert_eq!(value(&s, UP), Some(1.0));
        assert_eq!(value(&s, INVALID), Some(1.0));
    }

    #[test]
    fn output_over_the_limit_is_killed_and_not_parsed() {
        let s = run(&input(&["yes", "big 1"], Duration::from_secs(5), 4096));
        assert_eq!(value(&s, UP), Some(0.0));
        assert_eq!(value(&s, "custom.big"), None);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn non_zero_exit_and_missing_programs_give_up_0() {
        let s = run(&input(
            &["sh", "-c", "echo a 1; echo oops >&2; exit 3"],
            Duration::from_secs(5),
            1024,
        ));
        assert_eq!(value(&s, UP), Some(0.0));
        assert_eq!(value(&s, "custom.a"), None);
        let s = run(&input(
            &["/nonexistent/secumon-test"],
            Duration::from_secs(5),
            1024,
        ));
        assert_eq!(value(&s, UP), Some(0.0));
    }

    #[test]
    fn influx_output_is_read_when_asked_for() {
        let mut i = input(
            &["echo", "queue,q=mail depth=4i"],
            Duration::from_secs(5),
            1024,
        );
        i.format = ExecFormat::Influx;
        let s = run(&i);
        assert_eq!(value(&s, r#"custom.queue_depth{q="mail"}"#), Some(4.0));
        assert_eq!(value(&s, UP), Some(1.0));
    }
}
