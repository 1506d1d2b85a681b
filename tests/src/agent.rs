//! Runs the real `secumon-agent` binary with a config file in its own temp directory.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys;

/// How long a foreground run (`--once`, bad-input checks) may take before it counts as hung.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent's TOML config, written by [`Agent`]. Unset optional keys are left out so the
/// agent's defaults apply.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub agent_id: Option<String>,
    /// libpq-style connection string.
    pub database: String,
    /// e.g. `"1s"`, `"10s"`.
    pub interval: Option<String>,
    /// `None`: `<agent temp dir>/spool`.
    pub spool_dir: Option<PathBuf>,
    /// Raw TOML lines appended verbatim at the end (tables such as `[network]` go here, last).
    pub extra: Vec<String>,
}

impl AgentConfig {
    pub fn new(database: &str) -> AgentConfig {
        AgentConfig {
            agent_id: None,
            database: database.to_string(),
            interval: None,
            spool_dir: None,
            extra: Vec::new(),
        }
    }

    pub fn agent_id(mut self, agent_id: &str) -> Self {
        self.agent_id = Some(agent_id.to_string());
        self
    }

    pub fn interval(mut self, interval: &str) -> Self {
        self.interval = Some(interval.to_string());
        self
    }

    pub fn spool_dir(mut self, dir: &Path) -> Self {
        self.spool_dir = Some(dir.to_path_buf());
        self
    }

    /// Appends a raw TOML line, e.g. `colour = "blue"` or `[network]`.
    pub fn line(mut self, raw: &str) -> Self {
        self.extra.push(raw.to_string());
        self
    }

    /// The config as TOML; `{SPOOL}` stands for the agent's default spool dir until
    /// [`Agent`] knows its directory.
    pub(crate) fn to_toml_with_default_spool(&self) -> String {
        let mut toml = String::from("# written by the secumon-e2e harness\n");
        if let Some(id) = &self.agent_id {
            toml.push_str(&format!("agent_id = {}\n", toml_string(id)));
        }
        toml.push_str(&format!("database = {}\n", toml_string(&self.database)));
        if let Some(interval) = &self.interval {
            toml.push_str(&format!("interval = {}\n", toml_string(interval)));
        }
        match &self.spool_dir {
            Some(dir) => toml.push_str(&format!(
                "spool_dir = {}\n",
                toml_string(&dir.display().to_string())
            )),
            None => toml.push_str("spool_dir = \"{SPOOL}\"\n"),
        }
        for line in &self.extra {
            toml.push_str(line);
            toml.push('\n');
        }
        toml
    }
}

/// A TOML basic string.
pub fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Path of the `secumon-agent` binary under test: `SECUMON_AGENT_BIN`, else next to the test
/// executable's profile dir (`target/debug`), else `$CARGO_TARGET_DIR/debug`, else
/// `<workspace>/target/debug`.
pub fn agent_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SECUMON_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/<test>-<hash> → target/debug
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("secumon-agent"));
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug/secumon-agent"));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    candidates.push(workspace.join("target/debug/secumon-agent"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "expected a built secumon-agent (run `cargo build -p secumon-agent`, or set \
             SECUMON_AGENT_BIN); looked at {candidates:?}"
            )
        })
}

/// One agent installation: a temp dir with its config and default spool dir. Run it in the
/// foreground with [`Agent::run`] / [`Agent::run_once`], or as a daemon with [`Agent::spawn`].
pub struct Agent {
    dir: PathBuf,
    config_path: PathBuf,
    binary: PathBuf,
    env: Vec<(String, String)>,
    runs: std::sync::atomic::AtomicU32,
    registry: Option<Arc<Mutex<Vec<u32>>>>,
}

impl Agent {
    /// An agent not tied to a cluster (e.g. pointed at a closed port).
    pub fn new(config: &AgentConfig) -> Agent {
        Agent::with_registry(config.to_toml_with_default_spool(), None)
    }

    /// An agent whose config file holds exactly `toml` (for malformed-config tests).
    pub fn with_raw_config(toml: &str) -> Agent {
        Agent::with_registry(toml.to_string(), None)
    }

    pub(crate) fn with_registry(toml: String, registry: Option<Arc<Mutex<Vec<u32>>>>) -> Agent {
        let binary = agent_binary();
        let dir = sys::fresh_temp_dir("agent");
        let agent = Agent {
            config_path: dir.join("agent.toml"),
            binary,
            dir,
            env: Vec::new(),
            runs: std::sync::atomic::AtomicU32::new(0),
            registry,
        };
        let spool = agent.dir.join("spool").display().to_string();
        let toml = toml.replace("\"{SPOOL}\"", &toml_string(&spool));
        fs::write(&agent.config_path, toml).expect("expected to write the agent config");
        agent
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn config_text(&self) -> String {
        sys::read_lossy(&self.config_path)
    }

    /// The default spool dir (`<dir>/spool`), used unless the config names another.
    pub fn default_spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// Sets an environment variable for every later run of this agent.
    pub fn env(&mut self, name: &str, value: &str) -> &mut Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// `secumon-agent --config <file> <args>` with a clean environment (no `PG*` or
    /// `SECUMON_*` variables leaking in from the caller).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(&self.dir);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("PG") || name.starts_with("SECUMON_") || name == "RUST_LOG" {
                command.env_remove(name.as_ref());
            }
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        // SAFETY: prctl is async-signal-safe. Children die with the test thread that spawned
        // them even if the harness is killed before its destructors run.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command
    }

    /// Runs the agent in the foreground with `args` and waits (up to [`RUN_TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Output {
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let stdout_path = self.dir.join(format!("run-{run}.stdout"));
        let stderr_path = self.dir.join(format!("run-{run}.stderr"));
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).expect("expected to create a stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("expected to create a stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("expected to start {}: {e}", self.binary.display()));
        let status = wait_with_deadline(&mut child, RUN_TIMEOUT);
        let status = match status {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "expected `secumon-agent {}` to finish within {RUN_TIMEOUT:?}; stderr:\n{}",
                    args.join(" "),
                    sys::tail(&sys::read_lossy(&stderr_path), 20)
                );
            }
        };
        Output {
            status,
            stdout: fs::read(&stdout_path).unwrap_or_default(),
            stderr: fs::read(&stderr_path).unwrap_or_default(),
        }
    }

    /// `secumon-agent --config <file> --once`.
    pub fn run_once(&self) -> Output {
        self.run(&["--once"])
    }

    /// `--once`, which must succeed without a panic; returns its stderr (the agent's log).
    pub fn run_once_ok(&self) -> String {
        let output = self.run_once();
        let stderr = crate::stderr_text(&output);
        assert!(
            output.status.success(),
            "expected `secumon-agent --once` to succeed; {}\nstderr:\n{stderr}",
            output.status
        );
        assert!(!stderr.contains("panicked at"), "no panic in the agent:\n{stderr}");
        stderr
    }

    /// Starts the agent as a daemon; stdout and stderr go to files in the agent's dir.
    pub fn spawn(&self) -> AgentProcess {
        self.spawn_with(&[])
    }

    pub fn spawn_with(&self, args: &[&str]) -> AgentProcess {
        let open = |path: &Path| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("expected to open an agent log file")
        };
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(open(&self.stdout_path()))
            .stderr(open(&self.stderr_path()))
            .spawn()
            .unwrap_or_else(|e| panic!("expected to start {}: {e}", self.binary.display()));
        if let Some(registry) = &self.registry {
            if let Ok(mut pids) = registry.lock() {
                pids.push(child.id());
            }
        }
        AgentProcess {
            child: Some(child),
            registry: self.registry.clone(),
            stderr_path: self.stderr_path(),
        }
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.join("agent.stdout.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("agent.stderr.log")
    }

    /// Everything spawned daemons of this agent wrote to stderr (their log).
    pub fn stderr_log(&self) -> String {
        sys::read_lossy(&self.stderr_path())
    }

    pub fn stdout_log(&self) -> String {
        sys::read_lossy(&self.stdout_path())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.stderr_log();
            if !log.is_empty() {
                eprintln!(
                    "--- secumon-agent log of the failed test ({}), last lines ---\n{}",
                    self.dir.display(),
                    sys::tail(&log, 40)
                );
            }
        }
        sys::remove_dir(&self.dir);
    }
}

/// A running agent daemon; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct AgentProcess {
    child: Option<Child>,
    registry: Option<Arc<Mutex<Vec<u32>>>>,
    stderr_path: PathBuf,
}

impl AgentProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            self.forget();
        }
        status
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| wait_with_deadline(c, timeout));
        if status.is_some() {
            self.forget();
        }
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// SIGTERM, up to 10 s to exit cleanly, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        self.unregister(child.id());
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        sys::signal(child.id(), libc::SIGTERM);
        if let Some(status) = wait_with_deadline(&mut child, Duration::from_secs(10)) {
            return Some(status);
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Sends a signal (e.g. `libc::SIGKILL` to simulate a crash) without waiting.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid() {
            sys::signal(pid, signal);
        }
    }

    pub fn stderr_log(&self) -> String {
        sys::read_lossy(&self.stderr_path)
    }

    fn forget(&mut self) {
        if let Some(child) = self.child.take() {
            self.unregister(child.id());
        }
    }

    fn unregister(&self, pid: u32) {
        if let Some(registry) = &self.registry {
            if let Ok(mut pids) = registry.lock() {
                pids.retain(|p| *p != pid);
            }
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
