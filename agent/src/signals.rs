//! SIGINT/SIGTERM handling without idle wake-ups.
//!
//! A handler sets a flag that database waits check every 100 ms. The daemon additionally
//! blocks both signals in every thread ([`block`]) and sleeps in `sigtimedwait`, so it
//! wakes exactly when the next collection is due or a signal arrives — polling a flag
//! ten times a second would cost more CPU than the collection itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);
static BLOCKED: AtomicBool = AtomicBool::new(false);

/// Longest wait between two looks at the stop flag where a flag is all we have.
pub const POLL_STEP: Duration = Duration::from_millis(100);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic store.
    STOP.store(true, Ordering::SeqCst);
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Installs the SIGINT and SIGTERM handlers.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
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

/// Blocks SIGINT/SIGTERM in the calling thread and in threads it spawns afterwards;
/// the calling thread then receives them through [`sleep_until`].
pub fn block() -> std::io::Result<()> {
    let set = stop_signals();
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

/// Sleeps until `deadline`; returns false early if a stop was requested.
pub fn sleep_until(deadline: Instant) -> bool {
    loop {
        if stop_requested() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        let left = deadline - now;
        if BLOCKED.load(Ordering::SeqCst) {
            let set = stop_signals();
            let ts = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: set and ts are initialised; siginfo is not needed (NULL).
            if unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) } > 0 {
                request_stop();
            }
            // -1 is EAGAIN (time is up) or EINTR (another signal): the loop decides.
        } else {
            std::thread::sleep(left.min(POLL_STEP));
        }
    }
}

pub fn sleep_interruptible(d: Duration) -> bool {
    sleep_until(Instant::now() + d)
}
