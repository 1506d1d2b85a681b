//! The Debian packages, for real, on this machine: built by `scripts/build-packages.sh --debug`
//! from a fresh copy of this checkout (the files git tracks or would track; no build output),
//! checked by lintian, installed with `dpkg -i`, used — `CREATE EXTENSION secumon` from the
//! packaged library, the agent started exactly as its unit's `ExecStart=` says, as user
//! `secumon`, with the packaged config edited to point at the cluster — verified by
//! `systemd-analyze`, upgraded in place, removed, purged and installed again.
//!
//! It changes the system (PostgreSQL's extension directories, the `secumon` user, /etc/secumon,
//! systemd's enablement state), so it is `#[ignore]`d: `scripts/test.sh` runs it as its last
//! step, `cargo test -p secumon-e2e --test packages -- --ignored`; nothing else may use the
//! system PostgreSQL's extension meanwhile (other engineers: `flock /tmp/secumon-pgtest.lock`
//! around it). It refuses to run when either package is already installed. Whatever happens,
//! it purges both packages at the end and puts back the secumon files it found in PostgreSQL's
//! directories (the workspace build the e2e suite uses). The `secumon` system user stays, as
//! Debian keeps system users.
//!
//! The build reuses the workspace's target directory, and the copy keeps the files' times, so
//! unchanged crates are not compiled again. `SECUMON_PACKAGES_DIR=DIR` uses the packages in DIR
//! instead of building them.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use secumon_e2e::*;

const AGENT_PACKAGE: &str = "secumon-agent";
const UNIT: &str = "/lib/systemd/system/secumon-agent.service";
const CONFIG: &str = "/etc/secumon/agent.toml";
const STATE_DIR: &str = "/var/lib/secumon-agent";
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/secumon-agent.service";
const AGENT_ID: &str = "pkg-test";
/// What systemd gives a service as PATH.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("expected the workspace directory")
}

fn extension_package() -> String {
    let major = pg_config("--version")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
        .expect("expected `pg_config --version` to name a version");
    format!("postgresql-{major}-secumon")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` (stdin closed) and returns its output, asserting success.
fn run(command: &mut Command, what: &str) -> Output {
    let output = run_any(command, what);
    assert!(
        output.status.success(),
        "expected {what} to succeed, it exited {}:\n{}",
        output.status,
        text(&output)
    );
    output
}

fn run_any(command: &mut Command, what: &str) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("expected to run {what}: {e}"))
}

/// `dpkg` and friends with a system PATH (dpkg wants ldconfig and start-stop-daemon) and no
/// terminal: a conffile question would fail instead of hanging.
fn dpkg(args: &[&str]) -> Command {
    let mut command = Command::new("dpkg");
    command
        .args(args)
        .env("PATH", SYSTEM_PATH)
        .env("DEBIAN_FRONTEND", "noninteractive");
    command
}

/// Whether dpkg has the package in any state but "not installed" (`ii`, `rc`, half-installed...).
fn known_to_dpkg(package: &str) -> bool {
    package_status(package)
        .chars()
        .nth(1)
        .is_some_and(|current| current != 'n')
}

/// dpkg's two-letter state: `ii` installed, `rc` config files left, `pn` purged, `` unknown.
fn package_status(package: &str) -> String {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stdin(Stdio::null())
        .output()
        .expect("expected to run dpkg-query");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn package_files(package: &str) -> Vec<PathBuf> {
    let output = run(&mut dpkg(&["-L", package]), &format!("dpkg -L {package}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        // Regular files only: not directories, nor /lib, a symlink to usr/lib on merged-/usr.
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect()
}

/// Puts the system back as it was: purges both packages, restores the secumon files that
/// were in PostgreSQL's directories before the test (each by rename, as
/// scripts/install-extension.sh does, so running servers keep their mapped library).
struct SystemGuard {
    backup: PathBuf,
    saved: Vec<(PathBuf, PathBuf)>,
    extension_package: String,
}

impl SystemGuard {
    fn take() -> SystemGuard {
        assert!(
            sys::is_root(),
            "the package test installs packages: run it as root"
        );
        let extension_package = extension_package();
        for package in [extension_package.as_str(), AGENT_PACKAGE] {
            assert!(
                !known_to_dpkg(package),
                "expected {package} not to be installed before the package test (status {:?}); \
                 purge it first: dpkg -P {package}",
                package_status(package)
            );
        }
        assert!(
            !Path::new(CONFIG).exists(),
            "expected no {CONFIG} before the package test: it belongs to no package, and the test \
             would replace it"
        );
        let backup = sys::fresh_temp_dir("pkg-backup");
        let mut saved = Vec::new();
        let libdir = PathBuf::from(pg_config("--pkglibdir"));
        let extdir = PathBuf::from(pg_config("--sharedir")).join("extension");
        let mut files = vec![libdir.join("secumon.so")];
        for entry in fs::read_dir(&extdir).expect("expected the extension directory") {
            let path = entry.expect("expected a directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("secumon.") || name.starts_with("secumon--") {
                files.push(path);
            }
        }
        for file in files.into_iter().filter(|f| f.is_file()) {
            let copy = backup.join(saved.len().to_string());
            fs::copy(&file, &copy)
                .unwrap_or_else(|e| panic!("expected to back up {}: {e}", file.display()));
            saved.push((file, copy));
        }
        eprintln!(
            "package test: backed up {} secumon files of the system PostgreSQL",
            saved.len()
        );
        SystemGuard {
            backup,
            saved,
            extension_package,
        }
    }
}

impl Drop for SystemGuard {
    fn drop(&mut self) {
        for package in [AGENT_PACKAGE, self.extension_package.as_str()] {
            if known_to_dpkg(package) {
                let output = run_any(&mut dpkg(&["-P", package]), "dpkg -P");
                eprintln!(
                    "package test cleanup: dpkg -P {package}: {}",
                    text(&output).trim()
                );
            }
        }
        for (file, copy) in &self.saved {
            let dir = file.parent().unwrap();
            let temporary = dir.join(format!(
                ".{}.restore",
                file.file_name().unwrap().to_string_lossy()
            ));
            let restored = fs::copy(copy, &temporary)
                .and_then(|_| fs::set_permissions(&temporary, fs::Permissions::from_mode(0o644)))
                .and_then(|_| fs::rename(&temporary, file));
            if let Err(e) = restored {
                eprintln!(
                    "package test cleanup: could not restore {}: {e}",
                    file.display()
                );
            }
        }
        let _ = fs::remove_dir_all(&self.backup);
        eprintln!(
            "package test cleanup: packages purged, {} secumon files restored",
            self.saved.len()
        );
    }
}

/// The built artifacts.
struct Built {
    extension: PathBuf,
    agent: PathBuf,
    tarball: PathBuf,
    /// Temp dir to remove afterwards, when we built them.
    scratch: Option<PathBuf>,
}

impl Drop for Built {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            sys::remove_dir(dir);
        }
    }
}

/// Copies what a clone of this checkout would hold (tracked and not ignored files, as they are
/// now, with their modification times) into `dest`.
fn fresh_copy(dest: &Path) {
    let repo = workspace();
    let output = run(
        Command::new("git").arg("-C").arg(&repo).args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ]),
        "git ls-files",
    );
    let mut copied = 0;
    for name in output.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = Path::new(std::str::from_utf8(name).expect("expected UTF-8 file names"));
        let source = repo.join(name);
        let Ok(meta) = fs::symlink_metadata(&source) else {
            continue; // deleted in the working tree
        };
        let target = dest.join(name);
        fs::create_dir_all(target.parent().unwrap()).expect("expected to create a directory");
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&source).unwrap(), &target)
                .expect("expected to copy a symlink");
        } else if meta.is_file() {
            fs::copy(&source, &target)
                .unwrap_or_else(|e| panic!("expected to copy {}: {e}", source.display()));
            fs::File::options()
                .write(true)
                .open(&target)
                .and_then(|f| f.set_modified(meta.modified()?))
                .expect("expected to keep the modification time");
        } else {
            continue;
        }
        copied += 1;
    }
    assert!(
        copied > 50,
        "expected a checkout, copied only {copied} files"
    );
    eprintln!(
        "package test: fresh copy of {copied} files in {}",
        dest.display()
    );
}

fn build_packages() -> Built {
    if let Some(dir) = std::env::var_os("SECUMON_PACKAGES_DIR") {
        return find_packages(Path::new(&dir), None);
    }
    let scratch = sys::fresh_temp_dir("pkg-build");
    let checkout = scratch.join("secumon");
    fresh_copy(&checkout);
    let out = scratch.join("out");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let started = Instant::now();
    let output = run_any(
        Command::new(checkout.join("scripts/build-packages.sh"))
            .arg("--debug")
            .arg("--out")
            .arg(&out)
            .current_dir(&checkout)
            .env("CARGO_TARGET_DIR", &target_dir),
        "scripts/build-packages.sh --debug",
    );
    let log = text(&output);
    assert!(
        output.status.success(),
        "expected scripts/build-packages.sh --debug to build the packages from a fresh copy; \
         it exited {}:\n{}",
        output.status,
        sys::tail(&log, 60)
    );
    eprintln!(
        "package test: built in {:.0} s:\n{}",
        started.elapsed().as_secs_f64(),
        log.lines()
            .filter(|l| l.starts_with("build-packages:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    find_packages(&out, Some(scratch))
}

fn find_packages(dir: &Path, scratch: Option<PathBuf>) -> Built {
    let names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("expected packages in {}: {e}", dir.display()))
        .map(|e| e.expect("expected a directory entry").path())
        .collect();
    let find = |prefix: &str, suffix: &str| -> PathBuf {
        let found: Vec<&PathBuf> = names
            .iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(prefix) && name.ends_with(suffix)
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {prefix}*{suffix} in {}, found {found:?}",
            dir.display()
        );
        found[0].clone()
    };
    Built {
        extension: find(&format!("{}_", extension_package()), ".deb"),
        agent: find("secumon-agent_", ".deb"),
        tarball: find("secumon-agent-", ".tar.gz"),
        scratch,
    }
}

/// The `[Service]` settings of a unit file, in order (`Key`, `value`).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            settings.push((format!("{section}{key}"), value.to_string()));
        }
    }
    settings
}

fn unit_value(settings: &[(String, String)], key: &str) -> String {
    settings
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("expected {key} in {UNIT}"))
}

/// `getent passwd NAME` → (uid, gid, home).
fn system_user(name: &str) -> Option<(u32, u32, String)> {
    let output = Command::new("getent")
        .args(["passwd", name])
        .output()
        .expect("expected to run getent");
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let fields: Vec<&str> = line.split(':').collect();
    (fields.len() >= 7).then(|| {
        (
            fields[2].parse().unwrap(),
            fields[3].parse().unwrap(),
            fields[5].to_string(),
        )
    })
}

/// The agent as the installed unit starts it: `ExecStart=` as `User=`/`Group=`, with the
/// unit's `Environment=`, the variables systemd sets for `User=`, working directory `/`.
struct UnitRun {
    child: Child,
    log: PathBuf,
}

fn start_as_unit(settings: &[(String, String)], log: &Path) -> UnitRun {
    let exec_start = unit_value(settings, "[Service]ExecStart");
    let argv: Vec<&str> = exec_start.split_whitespace().collect();
    let user = unit_value(settings, "[Service]User");
    let group = unit_value(settings, "[Service]Group");
    assert_eq!(user, "secumon", "expected the unit to run as user secumon");
    let (uid, _, home) = system_user(&user).expect("expected the package to create its user");
    let gid = group_id(&group);
    let mut command = Command::new(argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("HOME", &home)
        .env("USER", &user)
        .env("LOGNAME", &user)
        .env("SHELL", "/usr/sbin/nologin");
    for (key, value) in settings {
        if key == "[Service]Environment" {
            for assignment in value.split_whitespace() {
                let (name, value) = assignment.split_once('=').expect("expected NAME=value");
                command.env(name, value);
            }
        }
    }
    let stderr = fs::File::create(log).expect("expected to create the agent log");
    let child = command
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(stderr.try_clone().unwrap())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("expected to start `{exec_start}` as {user}: {e}"));
    UnitRun {
        child,
        log: log.to_path_buf(),
    }
}

impl UnitRun {
    fn log(&self) -> String {
        sys::read_lossy(&self.log)
    }

    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("expected try_wait to work") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for UnitRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn group_id(name: &str) -> u32 {
    let output = Command::new("getent")
        .args(["group", name])
        .output()
        .expect("expected to run getent");
    String::from_utf8_lossy(&output.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected a group {name}"))
}

fn uid_of_process(pid: u32) -> Option<u32> {
    sys::read_lossy(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u.parse().unwrap()))
}

/// The packaged config with `database`, `interval` and `agent_id` set, as a DBA would edit it:
/// the commented defaults replaced in place, ownership and mode kept.
fn edit_config(conninfo: &str) {
    let original = fs::read_to_string(CONFIG).expect("expected the packaged config");
    let mut replaced = BTreeSet::new();
    let edited: Vec<String> = original
        .lines()
        .map(|line| {
            let set = |key: &str, value: &str| format!("{key} = {}", toml_string(value));
            let (key, line) = if line.starts_with("#database = ") {
                ("database", set("database", conninfo))
            } else if line.starts_with("#interval = ") {
                ("interval", set("interval", "1s"))
            } else if line.starts_with("# agent_id = ") {
                ("agent_id", set("agent_id", AGENT_ID))
            } else {
                return line.to_string();
            };
            replaced.insert(key);
            line
        })
        .collect();
    assert_eq!(
        replaced.len(),
        3,
        "expected the packaged {CONFIG} to show #database, #interval and # agent_id lines:\n{original}"
    );
    fs::write(CONFIG, edited.join("\n") + "\n").expect("expected to edit the config");
}

fn report_count(cluster: &Cluster) -> i64 {
    cluster
        .psql_one(&format!(
            "SELECT count(DISTINCT time) FROM secumon.metrics WHERE agent_id = '{AGENT_ID}'"
        ))
        .parse()
        .unwrap()
}

/// Reports stored for the test agent, read from the table (no function of the library).
fn stored_rows(cluster: &Cluster) -> i64 {
    cluster
        .psql_one(&format!(
            "SELECT count(*) FROM secumon.metric_samples s JOIN secumon.agents a USING (agent_key)
              WHERE a.agent_id = '{AGENT_ID}'"
        ))
        .parse()
        .unwrap()
}

fn assert_mode(path: &str, mode: u32, owner: Option<u32>) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("expected {path}: {e}"));
    assert_eq!(
        meta.mode() & 0o7777,
        mode,
        "expected {path} to have mode {mode:o}, it has {:o}",
        meta.mode() & 0o7777
    );
    if let Some(uid) = owner {
        assert_eq!(meta.uid(), uid, "expected {path} to belong to uid {uid}");
        assert_eq!(
            meta.gid(),
            group_id("secumon"),
            "expected {path} to belong to group secumon"
        );
    }
}

fn dpkg_install(built: &Built, what: &str) -> String {
    let output = run(
        dpkg(&["-i"]).arg(&built.extension).arg(&built.agent),
        &format!("dpkg -i of both packages ({what})"),
    );
    let log = text(&output);
    eprintln!("package test: dpkg -i ({what}):\n{}", log.trim());
    assert!(
        !log.to_lowercase().contains("warning"),
        "expected dpkg -i ({what}) and the maintainer scripts to warn about nothing:\n{log}"
    );
    for package in [extension_package().as_str(), AGENT_PACKAGE] {
        assert!(
            package_status(package).starts_with("ii"),
            "expected {package} to be installed after dpkg -i ({what})"
        );
    }
    log
}

#[test]
#[ignore = "installs packages into this system: run by scripts/test.sh (cargo test -p secumon-e2e --test packages -- --ignored)"]
fn debian_packages_build_install_run_remove_and_reinstall() {
    let guard = SystemGuard::take();
    let extension_package = guard.extension_package.clone();
    let built = build_packages();
    let version = env!("CARGO_PKG_VERSION");

    // --- lintian: no errors ------------------------------------------------------------------
    let output = run_any(
        Command::new("lintian")
            .args(["--fail-on", "error"])
            .arg(&built.extension)
            .arg(&built.agent),
        "lintian",
    );
    eprintln!("package test: lintian:\n{}", text(&output).trim());
    assert!(
        output.status.success(),
        "expected lintian to report no errors:\n{}",
        text(&output)
    );

    // --- the tarball holds the agent, its unit (for /usr/local) and the example config -----
    let listing = text(&run(
        Command::new("tar").arg("-tzf").arg(&built.tarball),
        "tar -tzf",
    ));
    for file in [
        "secumon-agent",
        "secumon-agent.service",
        "agent.example.toml",
        "INSTALL",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!("/{file}"))),
            "expected {file} in {}:\n{listing}",
            built.tarball.display()
        );
    }

    // --- install ------------------------------------------------------------------------------
    let log = dpkg_install(&built, "first install");
    assert!(
        log.contains("shared_preload_libraries = 'secumon'"),
        "expected the extension's postinst to name shared_preload_libraries:\n{log}"
    );
    assert!(
        log.contains("secumon-agent: not started"),
        "expected the agent's postinst to say it did not start an unconfigured agent:\n{log}"
    );
    let extension_files = package_files(&extension_package);
    let agent_files = package_files(AGENT_PACKAGE);
    let names: BTreeSet<String> = extension_files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut expected = vec![
        "secumon.so".to_string(),
        "secumon.control".to_string(),
        format!("secumon--{version}.sql"),
    ];
    for entry in fs::read_dir(workspace().join("secumon_pg/sql")).unwrap() {
        expected.push(entry.unwrap().file_name().to_string_lossy().into_owned());
    }
    for entry in fs::read_dir(workspace().join("sql/updates")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(from) = name
            .strip_suffix(".sql")
            .and_then(|n| n.split_once("--"))
            .map(|(a, _)| a)
        {
            if !name.ends_with(".post.sql") {
                expected.push(format!("secumon--{from}--{version}.sql"));
            }
        }
    }
    for name in &expected {
        assert!(
            names.contains(name),
            "expected {extension_package} to install {name}; it installs {names:?}"
        );
    }
    for path in [
        "/usr/bin/secumon-agent",
        UNIT,
        CONFIG,
        "/usr/share/doc/secumon-agent/agent.example.toml",
        "/usr/share/doc/secumon-agent/copyright",
    ] {
        assert!(
            agent_files.iter().any(|p| p == Path::new(path)),
            "expected secumon-agent to install {path}; it installs {agent_files:?}"
        );
    }
    let conffiles = text(&run(
        Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", AGENT_PACKAGE]),
        "dpkg-query Conffiles",
    ));
    assert!(
        conffiles.contains(CONFIG),
        "expected {CONFIG} to be a conffile: {conffiles}"
    );
    let (uid, _, home) =
        system_user("secumon").expect("expected the postinst to create user secumon");
    assert_eq!(home, STATE_DIR, "expected secumon's home to be {STATE_DIR}");
    assert_mode(CONFIG, 0o600, Some(uid));
    assert_mode(STATE_DIR, 0o700, Some(uid));
    assert!(
        Path::new(ENABLED_LINK).is_symlink(),
        "expected deb-systemd-helper to enable the unit ({ENABLED_LINK})"
    );

    // --- the unit: its documentation exists, systemd-analyze accepts it ----------------------
    let unit_text = fs::read_to_string(UNIT).expect("expected the installed unit");
    let settings = unit_settings(&unit_text);
    for url in unit_value(&settings, "[Unit]Documentation").split_whitespace() {
        if let Some(path) = url.strip_prefix("file://") {
            assert!(
                Path::new(path).is_file(),
                "expected the unit's Documentation= {path} to exist"
            );
        }
    }
    let output = run(
        Command::new("systemd-analyze").args(["verify", UNIT]),
        "systemd-analyze verify",
    );
    assert!(
        text(&output).trim().is_empty(),
        "expected systemd-analyze verify to have nothing to say about {UNIT}:\n{}",
        text(&output)
    );
    let security = text(&run(
        Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager", UNIT]),
        "systemd-analyze security --offline=true",
    ));
    let score: f64 = security
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for secumon-agent.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!("expected an exposure level from systemd-analyze security:\n{security}")
        });
    eprintln!("package test: systemd-analyze security: {score}");
    assert!(
        score <= 1.7,
        "expected the unit's exposure level to stay at most 1.7, got {score}"
    );

    // --- the packaged library: a fresh cluster creates the extension -----------------------
    let mut cluster = Cluster::start();
    assert_eq!(
        cluster.psql_one("SELECT extversion FROM pg_extension WHERE extname = 'secumon'"),
        version
    );
    cluster.psql_one("SELECT secumon.health()");
    assert_eq!(
        cluster.psql_one(
            "SELECT count(*) FROM pg_extension_update_paths('secumon') \
             WHERE target = (SELECT extversion FROM pg_extension WHERE extname = 'secumon') \
               AND path IS NOT NULL"
        ),
        (expected
            .iter()
            .filter(|n| n.matches("--").count() == 2)
            .count())
        .to_string(),
        "expected an update path from every earlier release"
    );

    // --- the agent, unconfigured: one line, exit status 2, which the unit does not restart --
    assert_eq!(
        unit_value(&settings, "[Service]RestartPreventExitStatus"),
        "2"
    );
    let scratch = Scratch(sys::fresh_temp_dir("pkg-agent"));
    let scratch = &scratch.0;
    let mut unconfigured = start_as_unit(&settings, &scratch.join("unconfigured.log"));
    let status = unconfigured
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "expected the unconfigured agent to exit; log:\n{}",
                unconfigured.log()
            )
        });
    let log = unconfigured.log();
    assert_eq!(
        status.code(),
        Some(2),
        "expected exit status 2; log:\n{log}"
    );
    assert_eq!(log.lines().count(), 1, "expected one line:\n{log}");
    assert!(
        log.contains("no database connection configured") && log.contains(CONFIG),
        "expected the line to say that {CONFIG} names no database:\n{log}"
    );

    // --- configured: reports arrive ------------------------------------------------------------
    let role = cluster.create_agent_role("agent_pkg_test");
    edit_config(&cluster.conninfo_as(&role.name, &role.password));
    assert_mode(CONFIG, 0o600, Some(uid));
    let mut agent = start_as_unit(&settings, &scratch.join("agent.log"));
    let pid = agent.child.id();
    assert!(
        wait_until(Duration::from_secs(60), || report_count(&cluster) >= 3),
        "expected 3 reports from the packaged agent; its log:\n{}",
        agent.log()
    );
    assert_eq!(
        uid_of_process(pid),
        Some(uid),
        "expected the agent to run as secumon"
    );
    let spool = Path::new(STATE_DIR).join("spool");
    assert_eq!(
        fs::metadata(&spool).map(|m| m.uid()).ok(),
        Some(uid),
        "expected the spool in {} (the unit's SECUMON_SPOOL_DIR), owned by secumon",
        spool.display()
    );
    // ExecReload= as systemd runs it.
    let reload = unit_value(&settings, "[Service]ExecReload").replace("$MAINPID", &pid.to_string());
    let argv: Vec<&str> = reload.split_whitespace().collect();
    run(Command::new(argv[0]).args(&argv[1..]), &reload);
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .log()
            .contains("configuration reloaded")),
        "expected ExecReload= to reload the configuration; log:\n{}",
        agent.log()
    );
    assert_eq!(unit_value(&settings, "[Service]KillSignal"), "SIGTERM");
    sys::signal(pid, libc::SIGTERM);
    let status = agent
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("expected SIGTERM to stop the agent; log:\n{}", agent.log()));
    assert!(
        status.success(),
        "expected exit status 0 after SIGTERM, got {status}; log:\n{}",
        agent.log()
    );
    let stored = stored_rows(&cluster);
    assert!(
        stored >= 3,
        "expected the reports in secumon.metric_samples, found {stored}"
    );

    // --- upgrade in place (same version again): the edited conffile is kept -------------------
    let log = dpkg_install(&built, "upgrade over itself");
    assert!(
        log.contains("ALTER EXTENSION secumon UPDATE"),
        "expected the extension's postinst to explain an upgrade:\n{log}"
    );
    assert!(
        fs::read_to_string(CONFIG)
            .unwrap()
            .contains(&format!("agent_id = \"{AGENT_ID}\"")),
        "expected the upgrade to keep the edited {CONFIG}"
    );
    assert_mode(CONFIG, 0o600, Some(uid));

    // --- dpkg -r: everything but the conffile goes; the database keeps its data --------------
    let installed: Vec<PathBuf> = extension_files
        .iter()
        .chain(&agent_files)
        .cloned()
        .collect();
    run(
        &mut dpkg(&["-r", AGENT_PACKAGE, &extension_package]),
        "dpkg -r of both packages",
    );
    let left: Vec<&PathBuf> = installed
        .iter()
        .filter(|p| p.exists() && *p != Path::new(CONFIG))
        .collect();
    assert!(
        left.is_empty(),
        "expected dpkg -r to remove every installed file; left: {left:?}"
    );
    assert!(
        Path::new(CONFIG).exists(),
        "expected dpkg -r to keep the conffile {CONFIG}"
    );
    assert_eq!(
        package_status(AGENT_PACKAGE),
        "rc",
        "expected secumon-agent in state rc"
    );
    assert_eq!(
        stored_rows(&cluster),
        stored,
        "expected the database to keep its data"
    );

    // --- dpkg -P: configuration, state, enablement go too; the user stays ---------------------
    run(
        &mut dpkg(&["-P", AGENT_PACKAGE, &extension_package]),
        "dpkg -P of both packages",
    );
    for gone in [CONFIG, "/etc/secumon", STATE_DIR, ENABLED_LINK] {
        assert!(
            !Path::new(gone).exists() && !Path::new(gone).is_symlink(),
            "expected dpkg -P to remove {gone}"
        );
    }
    let state = Path::new("/var/lib/systemd/deb-systemd-helper-enabled");
    if state.exists() {
        let leftovers: Vec<String> = walk(state)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("secumon-agent"))
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            leftovers.is_empty(),
            "expected dpkg -P to purge deb-systemd-helper's state: {leftovers:?}"
        );
    }
    for package in [AGENT_PACKAGE, extension_package.as_str()] {
        assert!(
            !known_to_dpkg(package),
            "expected dpkg -P to purge {package}"
        );
    }
    assert!(
        system_user("secumon").is_some(),
        "expected the system user secumon to stay"
    );
    assert_eq!(
        stored_rows(&cluster),
        stored,
        "expected the database to keep its data after purge"
    );

    // --- reinstall: a fresh conffile, the library back for the database ---------------------
    dpkg_install(&built, "reinstall after purge");
    assert_mode(CONFIG, 0o600, Some(uid));
    assert!(
        !fs::read_to_string(CONFIG).unwrap().contains(AGENT_ID),
        "expected purge and reinstall to bring back the pristine {CONFIG}"
    );
    cluster.restart();
    cluster.psql_one("SELECT secumon.health()");
    assert_eq!(
        stored_rows(&cluster),
        stored,
        "expected the data to survive removal and reinstall"
    );
    drop(cluster);
    drop(built);
    drop(guard);
}

/// A temp dir removed when dropped (also when the test panics).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        sys::remove_dir(&self.0);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}
