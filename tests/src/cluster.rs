//! A throw-away PostgreSQL 15 cluster with the `secumon` extension preloaded and created.
//!
//! Each [`Cluster`] lives in its own directory under /tmp, listens on a free loopback port and
//! on a Unix socket in that directory, and is torn down (`pg_ctl stop -m immediate`, directory
//! removed, agent children killed) when dropped — also when the test panicked.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::agent::{Agent, AgentConfig};
use crate::sys;

/// The database the harness creates and points `secumon.database` at.
pub const TEST_DATABASE: &str = "secumon_test";

/// Directory of the PostgreSQL server programs (`initdb`, `pg_ctl`).
/// `SECUMON_PG_BINDIR` overrides; otherwise Debian's PostgreSQL 15 location, then `pg_config`.
pub fn pg_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SECUMON_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian.join("pg_ctl").exists() {
        return debian;
    }
    PathBuf::from(pg_config("--bindir"))
}

/// One answer of `pg_config` (`PG_CONFIG` overrides the program, default /usr/bin/pg_config).
pub fn pg_config(flag: &str) -> String {
    let program = std::env::var("PG_CONFIG").unwrap_or_else(|_| "/usr/bin/pg_config".into());
    let output = Command::new(&program)
        .arg(flag)
        .output()
        .unwrap_or_else(|e| panic!("expected to run `{program} {flag}`: {e}"));
    assert!(
        output.status.success(),
        "`{program} {flag}` failed: {output:?}"
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The storage backend the suites run against: `SECUMON_TEST_BACKEND=timescaledb` preloads
/// TimescaleDB and creates its extension before `secumon` in every cluster, so the same tests
/// check the timescaledb backend (scripts/test.sh runs the storage and alerting suites both
/// ways). TimescaleDB must be installed (`../shared/timescaledb/install.sh`).
pub fn timescaledb_backend() -> bool {
    std::env::var("SECUMON_TEST_BACKEND").is_ok_and(|v| v == "timescaledb")
}

/// Text rows of a simple query; `None` is SQL NULL.
pub type Rows = Vec<Vec<Option<String>>>;

/// A login role created by [`Cluster::create_agent_role`] / [`Cluster::create_login_role`].
#[derive(Clone, Debug)]
pub struct Role {
    pub name: String,
    pub password: String,
}

/// Options for [`Cluster`]; get one from [`Cluster::builder`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    settings: Vec<(String, String)>,
    with_extension: bool,
    create_extension: bool,
}

impl ClusterBuilder {
    /// An extra `postgresql.conf` setting; later settings override the harness defaults.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    pub fn settings(mut self, settings: &[(&str, &str)]) -> Self {
        for (name, value) in settings {
            self = self.setting(name, value);
        }
        self
    }

    /// Neither preload the library nor create the extension: a plain cluster, for testing the
    /// harness itself or installation steps.
    pub fn without_extension(mut self) -> Self {
        self.with_extension = false;
        self.create_extension = false;
        self
    }

    /// Preload the library (workers running and waiting) but leave `CREATE EXTENSION secumon`
    /// to the test, e.g. to create another extension first or to test the installation.
    pub fn without_create_extension(mut self) -> Self {
        self.create_extension = false;
        self
    }

    pub fn start(self) -> Cluster {
        Cluster::start_from(self)
    }
}

/// A running (or stopped) test cluster. See the module documentation.
pub struct Cluster {
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    running: bool,
    options: ClusterBuilder,
    /// Pids of agent processes started for this cluster; killed on drop as a last resort.
    pub(crate) children: Arc<Mutex<Vec<u32>>>,
}

impl Cluster {
    /// A cluster with `secumon` preloaded and created in database `secumon_test`.
    pub fn start() -> Cluster {
        Cluster::builder().start()
    }

    /// Like [`Cluster::start`], with extra `postgresql.conf` settings,
    /// e.g. `&[("secumon.alert_interval", "1s")]`.
    pub fn start_with(settings: &[(&str, &str)]) -> Cluster {
        Cluster::builder().settings(settings).start()
    }

    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            settings: Vec::new(),
            with_extension: true,
            create_extension: true,
        }
    }

    fn start_from(options: ClusterBuilder) -> Cluster {
        let dir = sys::fresh_temp_dir("pg");
        // The struct exists from here on, so a panic below still removes the directory.
        let mut cluster = Cluster {
            data_dir: dir.join("data"),
            log_path: dir.join("postgresql.log"),
            dir,
            port: 0,
            running: false,
            options,
            children: Arc::new(Mutex::new(Vec::new())),
        };
        sys::chown_to_postgres(&cluster.dir);
        cluster.initdb();
        cluster.port = free_port();
        cluster.write_settings();
        cluster.create_database();
        cluster.start_on_free_port();
        if cluster.options.create_extension {
            cluster.create_extension();
        }
        cluster
    }

    fn initdb(&self) {
        let output = sys::as_postgres(&pg_bindir().join("initdb"))
            .current_dir(&self.dir)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .output()
            .expect("expected to run initdb");
        assert_ok("initdb", &output);
        // Trust the superuser on loopback (harness only); everyone else proves a password, so
        // tests can exercise SCRAM logins of agent roles.
        fs::write(
            self.data_dir.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("expected to write pg_hba.conf");
        let mut conf = fs::read_to_string(self.data_dir.join("postgresql.conf"))
            .expect("expected initdb to write postgresql.conf");
        conf.push_str("\ninclude 'secumon_e2e.conf'\n");
        fs::write(self.data_dir.join("postgresql.conf"), conf)
            .expect("expected to append to postgresql.conf");
    }

    fn write_settings(&self) {
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("port".into(), self.port.to_string()),
            (
                "unix_socket_directories".into(),
                self.dir.display().to_string(),
            ),
            ("timezone".into(), "UTC".into()),
            ("lc_messages".into(), "C".into()),
            ("fsync".into(), "off".into()),
            ("full_page_writes".into(), "off".into()),
            ("max_connections".into(), "60".into()),
            ("log_line_prefix".into(), "%m [%p] %q%u@%d ".into()),
        ];
        if self.options.with_extension {
            if timescaledb_backend() {
                settings.push(("shared_preload_libraries".into(), "timescaledb,secumon".into()));
                settings.push(("timescaledb.telemetry_level".into(), "off".into()));
                // TimescaleDB's launcher and scheduler beside SecuMon's four workers.
                settings.push(("max_worker_processes".into(), "16".into()));
            } else {
                settings.push(("shared_preload_libraries".into(), "secumon".into()));
            }
            settings.push(("secumon.database".into(), TEST_DATABASE.into()));
            settings.push(("secumon.maintenance_interval".into(), "1s".into()));
        }
        settings.extend(self.options.settings.iter().cloned());
        let text: String = settings
            .iter()
            .map(|(name, value)| format!("{name} = '{}'\n", value.replace('\'', "''")))
            .collect();
        fs::write(self.data_dir.join("secumon_e2e.conf"), text)
            .expect("expected to write secumon_e2e.conf");
    }

    fn start_on_free_port(&mut self) {
        for attempt in 1..=5 {
            if attempt > 1 {
                self.port = free_port();
                self.write_settings();
            }
            let output = self.pg_ctl(&["start", "-w", "-t", "60"]);
            if output.status.success() {
                self.running = true;
                return;
            }
            let log = self.log();
            let clash = log.contains("could not bind") || log.contains("Address already in use");
            if !clash || attempt == 5 {
                panic!(
                    "expected the cluster to start on port {}: {}\n--- postgresql.log ---\n{}",
                    self.port,
                    describe(&output),
                    sys::tail(&log, 40)
                );
            }
        }
    }

    /// Creates the workers' database in single-user mode before the first start, so the
    /// preloaded workers find it at once instead of failing and waiting for their restart.
    fn create_database(&self) {
        use std::io::Write;
        let mut child = sys::as_postgres(&pg_bindir().join("postgres"))
            .current_dir(&self.dir)
            .args(["--single", "-D"])
            .arg(&self.data_dir)
            .args(["-c", "shared_preload_libraries=", "postgres"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("expected to start postgres --single");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(format!("CREATE DATABASE {TEST_DATABASE}\n").as_bytes())
            .expect("expected to write to postgres --single");
        let output = child
            .wait_with_output()
            .expect("expected postgres --single to finish");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && !text.contains("ERROR"),
            "expected CREATE DATABASE {TEST_DATABASE} in single-user mode to succeed: {}\n{text}",
            output.status
        );
    }

    fn create_extension(&self) {
        if timescaledb_backend() {
            if let Err(e) = self.client().batch_execute("CREATE EXTENSION timescaledb") {
                panic!(
                    "expected CREATE EXTENSION timescaledb to succeed (SECUMON_TEST_BACKEND=timescaledb; \
                     is it installed? ../shared/timescaledb/install.sh): {}",
                    crate::error_text(&e)
                );
            }
        }
        if let Err(e) = self.client().batch_execute("CREATE EXTENSION secumon") {
            panic!(
                "expected CREATE EXTENSION secumon to succeed (is the extension installed? \
                 `cd secumon_pg && cargo pgrx install --pg-config /usr/bin/pg_config`): {}\n\
                 --- postgresql.log ---\n{}",
                crate::error_text(&e),
                sys::tail(&self.log(), 40)
            );
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        sys::as_postgres(&pg_bindir().join("pg_ctl"))
            .current_dir(&self.dir)
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path)
            .args(args)
            .output()
            .expect("expected to run pg_ctl")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the cluster's Unix socket (and its data dir and log).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn database(&self) -> &str {
        TEST_DATABASE
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Superuser connection string over TCP (trusted on loopback in the harness).
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={TEST_DATABASE} user=postgres connect_timeout=10",
            self.port
        )
    }

    /// Connection string for a password login (SCRAM) over TCP.
    pub fn conninfo_as(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={TEST_DATABASE} user={} password={} connect_timeout=10",
            self.port,
            quote_conninfo(user),
            quote_conninfo(password)
        )
    }

    /// A superuser client on `secumon_test`.
    pub fn client(&self) -> Client {
        self.client_on(TEST_DATABASE)
    }

    /// A superuser client on another database of this cluster.
    pub fn client_on(&self, database: &str) -> Client {
        let conninfo = format!(
            "host=127.0.0.1 port={} dbname={database} user=postgres connect_timeout=10",
            self.port
        );
        Client::connect(&conninfo, NoTls).unwrap_or_else(|e| {
            panic!(
                "expected to connect as postgres to {database} on port {}: {}",
                self.port,
                crate::error_text(&e)
            )
        })
    }

    /// A client for a password role; panics if the login fails.
    pub fn client_as(&self, user: &str, password: &str) -> Client {
        self.try_client_as(user, password).unwrap_or_else(|e| {
            panic!(
                "expected {user} to log in with its password: {}",
                crate::error_text(&e)
            )
        })
    }

    pub fn try_client_as(&self, user: &str, password: &str) -> Result<Client, postgres::Error> {
        Client::connect(&self.conninfo_as(user, password), NoTls)
    }

    /// Runs `sql` (one or more statements) as superuser on `secumon_test` and returns the text
    /// rows of all statements, in order. Panics with the server's message on error.
    pub fn psql(&self, sql: &str) -> Rows {
        crate::sql_rows(&mut self.client(), sql)
            .unwrap_or_else(|e| panic!("expected SQL to succeed:\n{sql}\nerror: {e}"))
    }

    /// First column of the first row of `sql`, which must exist and be non-NULL.
    pub fn psql_one(&self, sql: &str) -> String {
        self.psql(sql)
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .unwrap_or_else(|| panic!("expected a non-NULL value from:\n{sql}"))
    }

    /// `pg_ctl stop -m fast`.
    pub fn stop(&mut self) {
        let output = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
        assert_ok("pg_ctl stop -m fast", &output);
        self.running = false;
    }

    /// `pg_ctl stop -m immediate`: a crash, as far as the server is concerned.
    pub fn crash(&mut self) {
        let output = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]);
        assert_ok("pg_ctl stop -m immediate", &output);
        self.running = false;
    }

    /// Starts a stopped cluster again, on the same port.
    pub fn start_again(&mut self) {
        let output = self.pg_ctl(&["start", "-w", "-t", "60"]);
        if !output.status.success() {
            panic!(
                "expected the cluster to start again on port {}: {}\n--- postgresql.log ---\n{}",
                self.port,
                describe(&output),
                sys::tail(&self.log(), 40)
            );
        }
        self.running = true;
    }

    /// `pg_ctl restart -m fast`.
    pub fn restart(&mut self) {
        let output = self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"]);
        if !output.status.success() {
            panic!(
                "expected the cluster to restart: {}\n--- postgresql.log ---\n{}",
                describe(&output),
                sys::tail(&self.log(), 40)
            );
        }
        self.running = true;
    }

    /// Runs a PostgreSQL client program from [`pg_bindir`] (`pg_dump`, `pg_restore`, `psql`,
    /// `createdb`, …) as the `postgres` OS user, connected to this cluster through its Unix
    /// socket as superuser `postgres` (`PGHOST`, `PGPORT`, `PGUSER` are set; `args` may override
    /// them). Returns its output whatever the exit status.
    pub fn run_client_program(&self, program: &str, args: &[&str]) -> Output {
        sys::as_postgres(&pg_bindir().join(program))
            .current_dir(&self.dir)
            .env("PGHOST", &self.dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env_remove("PGDATABASE")
            .env_remove("PGPASSWORD")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("expected to run {program}: {e}"))
    }

    /// Contents of the server log so far.
    pub fn log(&self) -> String {
        sys::read_lossy(&self.log_path)
    }

    /// Polls `condition` every 100 ms until it holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, condition: impl FnMut() -> bool) -> bool {
        crate::wait_until(timeout, condition)
    }

    /// Waits until agent `agent_id`'s reports form a series with no gap over `max_gap_s`
    /// seconds and a newest report younger than `max_age_s`: an agent caught up after an
    /// outage. Returns whether it did, and the last (max gap s, newest age s, reports) seen.
    pub fn wait_for_gapless_series(
        &self,
        agent_id: &str,
        max_gap_s: f64,
        max_age_s: f64,
        timeout: Duration,
    ) -> (bool, Rows) {
        let shape_sql = format!(
            "WITH t AS (SELECT DISTINCT time FROM secumon.metrics WHERE agent_id = '{agent_id}'),
                  g AS (SELECT time, extract(epoch FROM time - lag(time) OVER (ORDER BY time)) AS gap FROM t)
             SELECT coalesce(max(gap), 0)::float8, extract(epoch FROM now() - max(time))::float8, count(*) FROM g"
        );
        let mut shape = Rows::new();
        let caught_up = crate::wait_until(timeout, || {
            shape = self.psql(&shape_sql);
            let number = |column: usize| -> f64 {
                shape[0][column].as_deref().and_then(|v| v.parse().ok()).unwrap_or(f64::INFINITY)
            };
            number(0) <= max_gap_s && number(1) < max_age_s
        });
        (caught_up, shape)
    }

    /// Waits until the scheduled job `name` succeeded in a run that started after this call
    /// (per `secumon.jobs.last_success`). Panics, showing the job row and the log, on timeout.
    pub fn wait_for_job_success(&self, name: &str, timeout: Duration) {
        let since = self.server_now();
        self.wait_for_job_success_since(name, since, timeout);
    }

    /// Asks the workers to run job `name` now ([`Cluster::run_job_soon`]) and waits until it
    /// succeeded in that run. The time is read before the request: a worker may finish the run
    /// before a later reading would be taken.
    pub fn run_job_and_wait(&self, name: &str, timeout: Duration) {
        let since = self.server_now();
        self.run_job_soon(name);
        self.wait_for_job_success_since(name, since, timeout);
    }

    fn server_now(&self) -> std::time::SystemTime {
        self.client()
            .query_one("SELECT now()", &[])
            .expect("expected SELECT now() to work")
            .get(0)
    }

    fn wait_for_job_success_since(&self, name: &str, since: std::time::SystemTime, timeout: Duration) {
        let mut client = self.client();
        let found = crate::wait_until(timeout, || {
            client
                .query_opt(
                    "SELECT 1 FROM secumon.jobs WHERE job_name = $1 AND last_success > $2",
                    &[&name, &since],
                )
                .map(|row| row.is_some())
                .unwrap_or(false)
        });
        if !found {
            panic!(
                "expected job {name} to succeed within {timeout:?}; secumon.jobs row: {}\n\
                 --- postgresql.log ---\n{}",
                self.job(name),
                sys::tail(&self.log(), 30)
            );
        }
    }

    /// Asks the workers to run job `name` at their next wake-up (sets its `next_run` to now via
    /// `secumon.alter_job`), instead of waiting for its `schedule_interval`.
    pub fn run_job_soon(&self, name: &str) {
        self.client()
            .query(
                "SELECT 1 FROM secumon.alter_job($1, next_run => now())",
                &[&name],
            )
            .unwrap_or_else(|e| {
                panic!(
                    "expected secumon.alter_job({name}, next_run => now()) to work: {}",
                    crate::error_text(&e)
                )
            });
    }

    /// The `secumon.jobs` row of job `name` as JSON (`Null` when there is no such job), for
    /// failure messages and assertions.
    pub fn job(&self, name: &str) -> serde_json::Value {
        self.client()
            .query_opt(
                "SELECT to_jsonb(j) FROM secumon.jobs j WHERE job_name = $1",
                &[&name],
            )
            .unwrap_or_else(|e| {
                panic!(
                    "expected secumon.jobs to be readable: {}",
                    crate::error_text(&e)
                )
            })
            .map(|row| row.get(0))
            .unwrap_or(serde_json::Value::Null)
    }

    /// Creates a login role with a random password, member of `roles`.
    pub fn create_login_role(&self, name: &str, roles: &[&str]) -> Role {
        let password = sys::random_hex(16);
        let in_role = if roles.is_empty() {
            String::new()
        } else {
            format!(" IN ROLE {}", roles.join(", "))
        };
        self.client()
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}'{in_role}"
            ))
            .unwrap_or_else(|e| {
                panic!("expected to create role {name}: {}", crate::error_text(&e))
            });
        Role {
            name: name.to_string(),
            password,
        }
    }

    /// `CREATE ROLE name LOGIN PASSWORD '<random>' IN ROLE secumon_agent`.
    /// A webhook notification channel `name` to `url`, for every tenant and severity.
    pub fn add_webhook_channel(&self, name: &str, url: &str) {
        self.client()
            .execute(
                "INSERT INTO secumon.notification_channels (name, type, settings) VALUES ($1, 'webhook', $2)",
                &[&name, &serde_json::json!({ "url": url })],
            )
            .unwrap_or_else(|e| panic!("expected to create webhook channel {name}: {e}"));
    }

    pub fn create_agent_role(&self, name: &str) -> Role {
        self.create_login_role(name, &["secumon_agent"])
    }

    pub fn client_for(&self, role: &Role) -> Client {
        self.client_as(&role.name, &role.password)
    }

    /// An agent config that logs in to this cluster as `role`.
    pub fn agent_config(&self, role: &Role) -> AgentConfig {
        AgentConfig::new(&self.conninfo_as(&role.name, &role.password))
    }

    /// Terminates process `pid` (SIGTERM, then SIGKILL) when this cluster is dropped, e.g. a
    /// receiver or helper a test started. Agents from [`Cluster::agent`] are adopted already.
    pub fn adopt_process(&self, pid: u32) {
        if let Ok(mut pids) = self.children.lock() {
            pids.push(pid);
        }
    }

    /// An agent whose processes are also killed when this cluster is dropped.
    pub fn agent(&self, config: &AgentConfig) -> Agent {
        Agent::with_registry(
            config.to_toml_with_default_spool(),
            Some(self.children.clone()),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.children.lock().map(|p| p.clone()).unwrap_or_default();
        for pid in pids {
            sys::terminate_pid(pid, Duration::from_secs(3));
        }
        if thread::panicking() {
            eprintln!(
                "--- postgresql.log of the failed test's cluster (port {}), last lines ---\n{}",
                self.port,
                sys::tail(&self.log(), 40)
            );
        }
        if self.data_dir.join("postmaster.pid").exists() {
            let output = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
            if !output.status.success() {
                // Last resort: the postmaster's pid is the first line of postmaster.pid.
                let pid = sys::read_lossy(&self.data_dir.join("postmaster.pid"))
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<u32>().ok());
                if let Some(pid) = pid {
                    sys::signal(pid, libc::SIGQUIT);
                    thread::sleep(Duration::from_secs(1));
                    sys::signal(pid, libc::SIGKILL);
                }
            }
        }
        sys::remove_dir(&self.dir);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("expected to bind an ephemeral loopback port")
}

/// Quotes a libpq conninfo value when needed.
fn quote_conninfo(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\', '=']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn describe(output: &Output) -> String {
    format!(
        "{}; stdout: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

fn assert_ok(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "expected {what} to succeed: {}",
        describe(output)
    );
}
