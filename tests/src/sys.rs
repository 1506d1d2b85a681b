//! Operating-system plumbing: temporary directories, running programs as the `postgres` user,
//! signalling children. PostgreSQL refuses to run as root, and the test binary usually runs as
//! root, so every server-side program goes through `runuser -u postgres`.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The OS user that owns every test cluster.
pub const POSTGRES_USER: &str = "postgres";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` OS user.
pub fn postgres_ids() -> (u32, u32) {
    let name = CString::new(POSTGRES_USER).expect("static user name has no NUL");
    // SAFETY: getpwnam returns NULL or a pointer to static storage that stays valid until the
    // next getpw* call; we copy the two integers out immediately.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "expected an OS user `{POSTGRES_USER}` (install postgresql-15); none found"
    );
    // SAFETY: getpwnam returned a non-NULL entry (asserted above), valid until the next getpw*
    // call; only two integers are copied out.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// A command that runs `program` as the `postgres` OS user when we are root, or as ourselves
/// otherwise (then we are expected to be a user that may run PostgreSQL).
pub fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.arg("-u").arg(POSTGRES_USER).arg("--").arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Hands `path` to the `postgres` user (a no-op when we are not root).
pub fn chown_to_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("expected to chown {} to postgres: {e}", path.display()));
}

static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory `/tmp/secumon-e2e-<kind>-<pid>-<n>-<nanos>`.
pub fn fresh_temp_dir(kind: &str) -> PathBuf {
    let base = std::env::var_os("SECUMON_E2E_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    for _ in 0..100 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "secumon-e2e-{kind}-{}-{n}-{nanos:09}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .expect("expected to chmod a directory we just created");
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!(
                "expected to create a temp dir under {}: {e}",
                base.display()
            ),
        }
    }
    panic!(
        "could not find a free temp dir name under {}",
        base.display()
    )
}

/// True when `SECUMON_E2E_KEEP` is set: leave temp dirs behind for debugging.
pub fn keep_temp_dirs() -> bool {
    std::env::var_os("SECUMON_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

pub fn remove_dir(dir: &Path) {
    if keep_temp_dirs() {
        eprintln!("SECUMON_E2E_KEEP: leaving {}", dir.display());
        return;
    }
    let _ = fs::remove_dir_all(dir);
}

/// `bytes` random bytes from the kernel as lowercase hex (for passwords and unique names).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("expected /dev/urandom to be readable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie still "exists" for kill(0); look at its state instead.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a positive pid only signals that process; errors (ESRCH) are fine.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// SIGTERM, then SIGKILL after `grace` if the process is still there; reaps it if it is our
/// child. For processes known only by pid (a `Child` handle has its own `kill`/`wait`).
pub fn terminate_pid(pid: u32, grace: Duration) {
    if !process_alive(pid) {
        reap(pid);
        return;
    }
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !process_alive(pid) {
            reap(pid);
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    signal(pid, libc::SIGKILL);
    reap(pid);
}

/// Collects the exit status of `pid` if it is our child (so it does not linger as a zombie).
pub fn reap(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let mut status = 0;
        // SAFETY: waitpid on one pid with WNOHANG; ECHILD (not our child) just returns -1.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if r != 0 {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Reads a file that may not exist yet or may hold invalid UTF-8.
pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
