//! Exponential backoff with jitter: the one rule behind the agent's reconnects (full jitter, so
//! a fleet of agents that lost the same database does not reconnect in lock-step) and the
//! notifier's retries (equal jitter, so retries spread out but never come back at once).

use std::time::Duration;

/// The longest delay after `attempt` failures: `base`·2^`attempt`, at most `max`.
pub fn ceiling(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// How much of a delay is random.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in [0, ceiling].
    Full,
    /// Half the ceiling fixed, the other half random: in [ceiling/2, ceiling).
    Equal,
}

impl Jitter {
    /// The delay for `ceiling` and a random `fraction` in [0, 1) (clamped).
    pub fn apply(self, ceiling: Duration, fraction: f64) -> Duration {
        let fraction = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
        match self {
            Jitter::Full => Duration::from_millis((ceiling.as_millis() as f64 * fraction).round() as u64).min(ceiling),
            Jitter::Equal => {
                let half = ceiling / 2;
                half + half.mul_f64(fraction)
            }
        }
    }
}

/// A backoff that counts its failures: each [`Backoff::next_delay`] doubles the ceiling, and
/// [`Backoff::reset`] after a success starts again from `base`.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration, jitter: Jitter) -> Backoff {
        Backoff { base, max, jitter, attempt: 0, rng: fastrand::Rng::new() }
    }

    /// The same backoff drawing from a seeded generator (reproducible delays in tests).
    pub fn with_seed(mut self, seed: u64) -> Backoff {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The longest delay after `attempt` failures.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        ceiling(self.base, self.max, attempt)
    }

    /// The next delay; each call doubles the ceiling, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.jitter.apply(ceiling, self.rng.f64())
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
    fn ceilings_double_up_to_the_maximum() {
        let secs: Vec<u64> = (0..9).map(|a| ceiling(Duration::from_secs(1), Duration::from_secs(60), a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(ceiling(Duration::from_secs(1), Duration::from_secs(60), 1000), Duration::from_secs(60));
        assert_eq!(ceiling(Duration::from_secs(2), Duration::from_secs(600), 30), Duration::from_secs(600));
    }

    #[test]
    fn full_jitter_covers_zero_to_the_ceiling() {
        let c = Duration::from_secs(10);
        assert_eq!(Jitter::Full.apply(c, 0.0), Duration::ZERO);
        assert_eq!(Jitter::Full.apply(c, 0.5), Duration::from_secs(5));
        assert_eq!(Jitter::Full.apply(c, 1.0), c);
        assert_eq!(Jitter::Full.apply(c, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn equal_jitter_keeps_half_the_ceiling() {
        let c = Duration::from_secs(10);
        assert_eq!(Jitter::Equal.apply(c, 0.0), Duration::from_secs(5));
        assert_eq!(Jitter::Equal.apply(c, 0.5), Duration::from_millis(7500));
        assert_eq!(Jitter::Equal.apply(c, 2.0), c);
    }

    #[test]
    fn delays_stay_within_bounds_vary_and_restart_after_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), Jitter::Full).with_seed(42);
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..200u32 {
            let d = b.next_delay();
            assert!(d <= b.ceiling(attempt), "attempt {attempt}: {d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 100, "delays should vary, got {} distinct", seen.len());
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
