//! A sum of floats that does not depend on the order of its terms: Shewchuk's exact partials
//! ("Adaptive Precision Floating-Point Arithmetic", 1997), rounded once when read, as Python's
//! `math.fsum` does. A rollup bucket then has one sum whatever order the rows were read in
//! (a heap partition, a compressed day, a TimescaleDB chunk), so the plain and the TimescaleDB
//! backends, and a real-time bucket and its materialised copy, give the same answers.

/// The exact sum of the finite values added, kept as non-overlapping partials (usually one or
/// two), in increasing magnitude. Infinite or NaN terms, and a sum that overflows, are kept
/// apart in `special`, which then is the sum, as a running sum would give it.
#[derive(Clone, Debug, Default)]
pub struct ExactSum {
    partials: Vec<f64>,
    special: Option<f64>,
}

impl ExactSum {
    pub fn of(value: f64) -> ExactSum {
        let mut s = ExactSum::default();
        s.add(value);
        s
    }

    /// Adds a value. An infinite or NaN one, or a sum that overflows, makes the sum infinite or
    /// NaN, as a running sum would.
    #[inline]
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            self.add_special(value);
            return;
        }
        let mut x = value;
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            if !hi.is_finite() {
                // Overflow: the exact sum is beyond f64, infinite as a running sum would be.
                self.add_special(hi);
                return;
            }
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    fn add_special(&mut self, value: f64) {
        self.special = Some(self.special.map_or(value, |s| s + value));
        self.partials.clear();
    }

    pub fn merge(&mut self, other: &ExactSum) {
        if let Some(special) = other.special {
            self.add_special(special);
        }
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// The exact sum rounded to the nearest float (ties to even); never -0.
    pub fn value(&self) -> f64 {
        if let Some(special) = self.special {
            return special;
        }
        let p = &self.partials;
        let Some(&last) = p.last() else { return 0.0 };
        let mut n = p.len() - 1;
        let mut hi = last;
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even across the partials below: the rest decides which way a tie goes.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi + 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(values: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        values.iter().for_each(|&v| s.add(v));
        s.value()
    }

    #[test]
    fn sums_exactly_where_a_running_sum_rounds() {
        assert_eq!(sum(&[0.1; 10]), 1.0);
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum(&[86.86, 84.36, 88.88, 86.5, 87.36, 88.12, 85.0, 86.1, 87.4, 88.06]), 868.64);
        assert_eq!(sum(&[]), 0.0);
        assert_eq!(sum(&[-2.5]), -2.5);
        // 2^53 + 1 + 2^-60 rounds up, not to even, because of the smallest part.
        assert_eq!(sum(&[9007199254740992.0, 1.0, 2f64.powi(-60)]), 9007199254740994.0);
        assert_eq!(sum(&[9007199254740992.0, 1.0]), 9007199254740992.0);
    }

    #[test]
    fn infinities_nan_and_overflow_end_as_a_running_sum_would() {
        assert_eq!(sum(&[1e308, 1e308]), f64::INFINITY);
        assert_eq!(sum(&[1e308, 1e308, 1.0, -5.0]), f64::INFINITY);
        assert_eq!(sum(&[-1e308, -1e308, 3.0]), f64::NEG_INFINITY);
        assert_eq!(sum(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(sum(&[2.0, f64::NAN]).is_nan());
        let mut merged = ExactSum::of(f64::INFINITY);
        merged.merge(&ExactSum::of(2.5));
        assert_eq!(merged.value(), f64::INFINITY);
        assert_eq!(sum(&[-0.0]).to_bits(), 0.0f64.to_bits());
    }

    #[test]
    fn the_order_of_the_terms_does_not_matter() {
        let values: Vec<f64> = (0..500).map(|i| ((i * 7919) % 1000) as f64 / 7.0 - 60.0 + (i as f64).sin() * 1e6).collect();
        let forward = sum(&values);
        let mut reversed = values.clone();
        reversed.reverse();
        assert_eq!(sum(&reversed), forward);
        let mut interleaved: Vec<f64> = values.iter().step_by(2).chain(values.iter().skip(1).step_by(2)).copied().collect();
        assert_eq!(sum(&interleaved), forward);
        interleaved.sort_by(f64::total_cmp);
        assert_eq!(sum(&interleaved), forward);
        // Merging partial sums is exact too.
        let (a, b) = values.split_at(123);
        let mut left = ExactSum::default();
        a.iter().for_each(|&v| left.add(v));
        let mut right = ExactSum::default();
        b.iter().for_each(|&v| right.add(v));
        right.merge(&left);
        assert_eq!(right.value(), forward);
    }
}
