//! A mergeable quantile sketch with a relative-error guarantee: DDSketch (Masson, Rim, Lee,
//! VLDB 2019) with logarithmic bins of ratio γ = (1+α)/(1−α), α = 1 %.
//!
//! Every value v with |v| ≥ [`MIN_INDEXABLE`] is counted in bin ⌈log_γ |v|⌉ (a separate store
//! for negative values); smaller magnitudes count as zero. A quantile is answered with the bin's
//! representative 2γ^i/(γ+1), which is within a factor (1 ± α) of every value in the bin, then
//! clamped to the exact min and max. Rank convention: the q-quantile of n values is the value of
//! rank ⌈q·n⌉ (1-based), i.e. SQL `percentile_disc(q)`, so the sketch answers within 1 % of
//! `percentile_disc` over the raw rows.
//!
//! Merging adds bin counts, so a sketch of a day equals the merge of its hours and of its
//! 5-minute buckets: percentiles agree across rollup tiers.

use crate::bits::{put_f64, put_ivarint, put_varint, Reader};
use crate::{DecodeError, Result};

/// Relative accuracy of quantiles.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Magnitudes below this count as zero (absolute error at most this).
pub const MIN_INDEXABLE: f64 = 1e-9;
const MAX_BINS: usize = 1 << 16;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

fn ln_gamma() -> f64 {
    gamma().ln()
}

#[inline]
fn index_of(magnitude: f64, inv_ln_gamma: f64) -> i32 {
    (magnitude.ln() * inv_ln_gamma).ceil() as i32
}

fn representative(index: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(index) / (g + 1.0)
}

/// Dense counts for a contiguous index range.
#[derive(Clone, Debug, Default, PartialEq)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
}

impl Store {
    #[inline]
    fn add(&mut self, index: i32, count: u64) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(count);
            return;
        }
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            let mut v = vec![0u64; grow];
            v.extend_from_slice(&self.counts);
            self.counts = v;
            self.offset = index;
        } else if index as i64 >= self.offset as i64 + self.counts.len() as i64 {
            self.counts.resize((index - self.offset) as usize + 1, 0);
        }
        self.counts[(index - self.offset) as usize] += count;
    }

    fn bins(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (self.offset + i as i32, *c))
    }

    fn merge(&mut self, other: &Store) {
        for (i, c) in other.bins() {
            self.add(i, c);
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let bins: Vec<(i32, u64)> = self.bins().collect();
        put_varint(out, bins.len() as u64);
        let mut prev: Option<i32> = None;
        for (i, c) in bins {
            match prev {
                None => put_ivarint(out, i as i64),
                Some(p) => put_varint(out, (i - p) as u64),
            }
            put_varint(out, c);
            prev = Some(i);
        }
    }

    fn decode(r: &mut Reader) -> Result<Store> {
        let n = r.len(MAX_BINS)?;
        let mut s = Store::default();
        let mut idx: i64 = 0;
        for k in 0..n {
            idx = if k == 0 { r.ivarint()? } else { idx + r.varint()? as i64 };
            if idx.abs() > 200_000 {
                return Err(DecodeError::new("sketch bin index out of range"));
            }
            let c = r.varint()?;
            s.add(idx as i32, c);
        }
        Ok(s)
    }
}

/// The sketch. `count`, `min` and `max` are exact.
#[derive(Clone, Debug, PartialEq)]
pub struct Sketch {
    count: u64,
    zero: u64,
    min: f64,
    max: f64,
    positive: Store,
    negative: Store,
    inv_ln_gamma: f64,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            count: 0,
            zero: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            positive: Store::default(),
            negative: Store::default(),
            inv_ln_gamma: 1.0 / ln_gamma(),
        }
    }
}

impl Sketch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Adds a value; NaN and infinities are ignored (SecuMon never stores them).
    #[inline]
    pub fn add(&mut self, v: f64) {
        self.add_n(v, 1);
    }

    fn add_n(&mut self, v: f64, n: u64) {
        if !v.is_finite() || n == 0 {
            return;
        }
        self.count += n;
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        let m = v.abs();
        if m < MIN_INDEXABLE {
            self.zero += n;
        } else if v > 0.0 {
            self.positive.add(index_of(m, self.inv_ln_gamma), n);
        } else {
            self.negative.add(index_of(m, self.inv_ln_gamma), n);
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        self.count += other.count;
        self.zero += other.zero;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
    }

    /// The q-quantile (0 ≤ q ≤ 1), `None` when empty or q is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // 0-based rank of percentile_disc: the first value whose cumulative share reaches q.
        let rank = ((q * self.count as f64).ceil() as u64).saturating_sub(1).min(self.count - 1);
        if rank == 0 {
            return Some(self.min);
        }
        if rank == self.count - 1 {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for (i, c) in self.negative.bins().rev() {
            seen += c;
            if seen > rank {
                return Some((-representative(i)).clamp(self.min, self.max));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0f64.clamp(self.min, self.max));
        }
        for (i, c) in self.positive.bins() {
            seen += c;
            if seen > rank {
                return Some(representative(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Compact encoding; a sketch of one repeated value costs about 18 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.count);
        if self.count == 0 {
            return;
        }
        put_f64(out, self.min);
        put_f64(out, self.max);
        if self.min.to_bits() == self.max.to_bits() {
            return; // every value equal: the bins follow from min and count
        }
        put_varint(out, self.zero);
        self.negative.encode(out);
        self.positive.encode(out);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    pub fn decode(r: &mut Reader) -> Result<Sketch> {
        let mut s = Sketch::new();
        let count = r.varint()?;
        if count == 0 {
            return Ok(s);
        }
        let (min, max) = (r.f64()?, r.f64()?);
        if !min.is_finite() || !max.is_finite() || min > max {
            return Err(DecodeError::new("sketch min/max invalid"));
        }
        if min.to_bits() == max.to_bits() {
            s.add_n(min, count);
            return Ok(s);
        }
        s.count = count;
        s.min = min;
        s.max = max;
        s.zero = r.varint()?;
        s.negative = Store::decode(r)?;
        s.positive = Store::decode(r)?;
        let binned: u64 = s.zero
            + s.negative.bins().map(|(_, c)| c).sum::<u64>()
            + s.positive.bins().map(|(_, c)| c).sum::<u64>();
        if binned != count {
            return Err(DecodeError::new("sketch bin counts do not add up"));
        }
        Ok(s)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch> {
        let mut r = Reader::new(bytes);
        let s = Sketch::decode(&mut r)?;
        if !r.is_empty() {
            return Err(DecodeError::new("trailing bytes after sketch"));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).saturating_sub(1).min(sorted.len() - 1);
        sorted[rank]
    }

    fn check(values: &[f64]) {
        let mut s = Sketch::new();
        for &v in values {
            s.add(v);
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let got = s.quantile(q).unwrap();
            let want = exact_quantile(&sorted, q);
            let tol = RELATIVE_ACCURACY * want.abs() * (1.0 + 1e-9) + MIN_INDEXABLE;
            assert!((got - want).abs() <= tol, "q={q}: got {got}, want {want}");
        }
        let back = Sketch::from_bytes(&s.to_bytes()).unwrap();
        for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
            assert_eq!(back.quantile(q), s.quantile(q));
        }
        assert_eq!(back.count(), values.len() as u64);
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut x = 11u64;
        let mut rnd = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        check(&(0..30).map(|_| (rnd() * 10000.0).round() / 100.0).collect::<Vec<_>>());
        check(&(0..5000).map(|_| (rnd() * 1e9).floor()).collect::<Vec<_>>());
        check(&(0..1000).map(|_| (rnd() - 0.5) * 200.0).collect::<Vec<_>>());
        check(&(0..1000).map(|_| if rnd() < 0.3 { 0.0 } else { rnd() }).collect::<Vec<_>>());
        check(&[42.0]);
        check(&[3.0; 77]);
        check(&[-5.0, 0.0, 5.0]);
    }

    #[test]
    fn merged_sketch_equals_sketch_of_union() {
        let a: Vec<f64> = (0..300).map(|i| (i as f64) * 0.37).collect();
        let b: Vec<f64> = (0..500).map(|i| 1000.0 - (i as f64) * 1.3).collect();
        let (mut sa, mut sb, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
        a.iter().for_each(|&v| sa.add(v));
        b.iter().for_each(|&v| sb.add(v));
        a.iter().chain(&b).for_each(|&v| all.add(v));
        sa.merge(&sb);
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
            assert_eq!(sa.quantile(q), all.quantile(q));
        }
    }

    #[test]
    fn constant_values_encode_small() {
        let mut s = Sketch::new();
        (0..360).for_each(|_| s.add(8589934592.0));
        assert!(s.to_bytes().len() <= 20);
        assert_eq!(s.quantile(0.5), Some(8589934592.0));
    }

    #[test]
    fn empty_and_bad_quantiles_are_none() {
        assert_eq!(Sketch::new().quantile(0.5), None);
        let mut s = Sketch::new();
        s.add(1.0);
        assert_eq!(s.quantile(1.5), None);
        assert_eq!(s.quantile(f64::NAN), None);
    }

    #[test]
    fn corrupt_sketch_is_an_error() {
        let mut s = Sketch::new();
        (0..100).for_each(|i| s.add(i as f64));
        let bytes = s.to_bytes();
        for cut in 0..bytes.len() {
            assert!(Sketch::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
