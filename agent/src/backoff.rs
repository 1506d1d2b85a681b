//! Reconnect delays: exponential (1 s doubling to 60 s) with full jitter, so a fleet of
//! agents that lost the same database does not reconnect in lock-step.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// xorshift64*: a few lines instead of a `rand` dependency; jitter needs no more.
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    pub fn new(seed: u64) -> XorShift64 {
        // Zero is the one state xorshift never leaves.
        XorShift64(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Seeded from the clock and the pid, so agents started together still differ.
    pub fn from_entropy() -> XorShift64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let pid = u64::from(std::process::id());
        XorShift64::new(nanos ^ (pid << 32) ^ pid.rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..=max`.
    pub fn below_or_equal(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }
}

#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: XorShift64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
            rng: XorShift64::from_entropy(),
        }
    }

    pub fn with_rng(mut self, rng: XorShift64) -> Backoff {
        self.rng = rng;
        self
    }

    /// Upper bound of the delay after `attempt` failures: base·2^attempt, capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The next delay: uniform in [0, ceiling] (full jitter); each call doubles the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let ms = self.rng.below_or_equal(ceiling.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// After a success the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_one_second_to_sixty() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..9).map(|a| b.ceiling(a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.ceiling(1000), Duration::from_secs(60));
    }

    #[test]
    fn delays_stay_within_bounds_and_are_jittered() {
        let mut b = Backoff::default().with_rng(XorShift64::new(42));
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..200u32 {
            let d = b.next_delay();
            assert!(d <= b.ceiling(attempt), "attempt {attempt}: {d:?}");
            seen.insert(d);
        }
        assert!(
            seen.len() > 100,
            "delays should vary, got {} distinct",
            seen.len()
        );
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_covers_the_whole_range() {
        let mut rng = XorShift64::new(7);
        let draws: Vec<u64> = (0..10_000).map(|_| rng.below_or_equal(1000)).collect();
        assert!(draws.iter().all(|&d| d <= 1000));
        assert!(draws.iter().any(|&d| d < 100) && draws.iter().any(|&d| d > 900));
    }

    #[test]
    fn zero_seed_does_not_get_stuck() {
        let mut rng = XorShift64::new(0);
        assert_ne!(rng.next_u64(), rng.next_u64());
    }
}
