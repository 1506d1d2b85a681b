//! SIGINT/SIGTERM (stop) and SIGHUP (reload) handling without idle wake-ups.
//!
//! A handler sets a flag that database waits check every 100 ms: STOP for SIGINT/SIGTERM,
//! RELOAD for SIGHUP. The daemon additionally blocks all three in every thread ([`block`])
//! and sleeps in `sigtimedwait`, so it wakes exactly when the next collection is due or a
//! signal arrives — polling a flag ten times a second would cost more CPU than the
//! collection itself.
//!
//! SIGHUP gets a handler in every mode, even where nothing reloads (`--once`,
//! `--dry-run`): its default action terminates the process (status 129), and
//! `systemctl reload` and log-rotation tools send it without asking what we are doing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);
static BLOCKED: AtomicBool = AtomicBool::new(false);

/// Longest wait between two looks at the stop flag where a flag is all we have.
pub const POLL_STEP: Duration = Duration::from_millis(100);

/// The signals the agent handles; everything else keeps its default action.
const HANDLED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic store.
    if sig == libc::SIGHUP {
        RELOAD.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
}

fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in HANDLED {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Installs the SIGINT, SIGTERM and SIGHUP handlers.
pub fn install() -> std::io::Result<()> {
    for sig in HANDLED {
        // SAFETY: sa is fully initialised; the handler only stores to an atomic.
        // No SA_RESTART, so blocking calls return EINTR and we notice the flag sooner.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Blocks SIGINT/SIGTERM/SIGHUP in the calling thread and in threads it spawns
/// afterwards; the calling thread then receives them through [`wait_until`] and
/// [`sleep_until`]. A signal arriving while that thread is busy stays pending until its
/// next wait, so none is lost and no other thread is ever interrupted by one.
pub fn block() -> std::io::Result<()> {
    let set = handled_signals();
    // SAFETY: set is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    BLOCKED.store(true, Ordering::SeqCst);
    Ok(())
}

/// The flag itself, for code (like the database wait loops) that takes an interrupt flag.
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Asks the agent to stop, as a signal would.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a reload (SIGHUP) is pending; [`wait_until`] consumes it.
pub fn reload_requested() -> bool {
    RELOAD.load(Ordering::SeqCst)
}

/// Asks the daemon to re-read its configuration, as SIGHUP would.
pub fn request_reload() {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Why [`wait_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The deadline passed.
    Due,
    /// SIGINT/SIGTERM (or [`request_stop`]); the request stays set.
    Stop,
    /// SIGHUP (or [`request_reload`]); the request is consumed, so the caller reloads once
    /// per burst of signals, and a SIGHUP arriving during that reload triggers another.
    Reload,
}

/// Sleeps until `deadline`, a stop request or a reload request, whichever comes first.
/// For the daemon's main loop, which reloads and then goes back to sleep.
pub fn wait_until(deadline: Instant) -> Wake {
    wait(deadline, true)
}

/// Sleeps until `deadline`; returns false early if a stop was requested. A SIGHUP that
/// arrives meanwhile is remembered for the next [`wait_until`] but does not cut this
/// sleep short: the collector's first-sample gap must stay a real gap.
pub fn sleep_until(deadline: Instant) -> bool {
    wait(deadline, false) == Wake::Due
}

pub fn sleep_interruptible(d: Duration) -> bool {
    sleep_until(Instant::now() + d)
}

fn wait(deadline: Instant, wake_on_reload: bool) -> Wake {
    loop {
        if stop_requested() {
            return Wake::Stop;
        }
        if wake_on_reload && RELOAD.swap(false, Ordering::SeqCst) {
            return Wake::Reload;
        }
        let now = Instant::now();
        if now >= deadline {
            return Wake::Due;
        }
        let left = deadline - now;
        if BLOCKED.load(Ordering::SeqCst) {
            let set = handled_signals();
            let ts = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: set and ts are initialised; siginfo is not needed (NULL).
            let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
            if sig == libc::SIGHUP {
                request_reload();
            } else if sig > 0 {
                request_stop();
            }
            // -1 is EAGAIN (time is up) or EINTR (another signal): the loop decides.
        } else {
            std::thread::sleep(left.min(POLL_STEP));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The flags are process-wide, so everything touching them is one test.
    #[test]
    fn reload_requests_wake_only_the_daemon_wait_and_are_consumed() {
        assert!(!BLOCKED.load(Ordering::SeqCst), "tests never block signals");
        request_reload();
        let start = Instant::now();
        // The first-sample sleep is not cut short by a reload ...
        assert!(sleep_until(start + Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        // ... and the request survives it for the daemon's wait, which consumes it.
        assert!(reload_requested());
        assert_eq!(
            wait_until(Instant::now() + Duration::from_secs(60)),
            Wake::Reload
        );
        assert!(!reload_requested());
        assert_eq!(
            wait_until(Instant::now() + Duration::from_millis(10)),
            Wake::Due
        );
    }
}
