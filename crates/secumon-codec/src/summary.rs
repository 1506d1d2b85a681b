//! The rollup state of one agent and one time bucket: for every series, count, sum, min, max
//! and a quantile [`Sketch`]. Summaries merge exactly: counts, min, max and sketch bins, and
//! sums as exact sums ([`ExactSum`]) rounded once, so a bucket's sum does not depend on the
//! order its rows or summaries came in, and an hour is the merge of its twelve 5-minute
//! buckets.
//!
//! Layout: `u8 version, varint n, n × (varint series-id delta, f64 sum, varint len, sketch)`,
//! series ascending. count, min and max live in the sketch. Series ids are 64-bit
//! (secumon.metric_series.series_id is bigint); the encoding is the same for any width.

use crate::bits::{put_bytes, put_f64, put_varint, Reader};
use crate::fsum::ExactSum;
use crate::sketch::Sketch;
use crate::{DecodeError, Result};

const VERSION: u8 = 1;

/// One series' statistics within a bucket.
#[derive(Clone, Debug, Default)]
pub struct SeriesStats {
    pub sum: ExactSum,
    pub sketch: Sketch,
}

impl SeriesStats {
    pub fn sum(&self) -> f64 {
        self.sum.value()
    }
    pub fn count(&self) -> u64 {
        self.sketch.count()
    }
    pub fn min(&self) -> Option<f64> {
        self.sketch.min()
    }
    pub fn max(&self) -> Option<f64> {
        self.sketch.max()
    }
    pub fn avg(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.sum() / self.count() as f64)
    }

    #[inline]
    pub fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.sum.add(v);
            self.sketch.add(v);
        }
    }

    pub fn merge(&mut self, other: &SeriesStats) {
        self.sum.merge(&other.sum);
        self.sketch.merge(&other.sketch);
    }
}

/// Accumulates rows (series ids + values) and summaries into one summary.
#[derive(Default)]
pub struct SummaryBuilder {
    /// Sorted by series id.
    series: Vec<(i64, SeriesStats)>,
    /// Positions in `series` for the last layout seen, so consecutive rows of one layout skip
    /// the lookups.
    last_layout: Vec<i64>,
    last_slots: Vec<usize>,
}

impl SummaryBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&mut self, id: i64) -> usize {
        match self.series.binary_search_by_key(&id, |(i, _)| *i) {
            Ok(p) => p,
            Err(p) => {
                self.series.insert(p, (id, SeriesStats::default()));
                // Insertion shifts later slots: forget the cached layout.
                self.last_layout.clear();
                p
            }
        }
    }

    /// Adds one report: `ids[i]` is the series of `vals[i]`; NULL values are skipped.
    pub fn add_row(&mut self, ids: &[i64], vals: &[Option<f64>]) {
        if self.last_layout.as_slice() != ids {
            // Create every slot first, then record positions (creation may shift them).
            for &id in ids {
                self.slot(id);
            }
            self.last_slots = ids.iter().map(|&id| self.series.binary_search_by_key(&id, |(i, _)| *i).unwrap_or(0)).collect();
            self.last_layout = ids.to_vec();
        }
        for (k, v) in vals.iter().enumerate() {
            if let (Some(v), Some(&slot)) = (v, self.last_slots.get(k)) {
                self.series[slot].1.add(*v);
            }
        }
    }

    pub fn add_value(&mut self, id: i64, v: f64) {
        let s = self.slot(id);
        self.series[s].1.add(v);
    }

    pub fn merge_summary(&mut self, summary: &Summary) {
        for (id, stats) in &summary.series {
            let s = self.slot(*id);
            self.series[s].1.merge(stats);
        }
    }

    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let s = Summary::from_bytes(bytes)?;
        self.merge_summary(&s);
        Ok(())
    }

    pub fn finish(self) -> Summary {
        Summary { series: self.series.into_iter().filter(|(_, s)| s.count() > 0).collect() }
    }

    /// Encodes the current state without consuming it (an aggregate's final function may run
    /// more than once on one state).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self.series.iter().map(|(i, s)| (*i, s)))
    }

    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|(_, s)| s.count() == 0)
    }
}

fn encode<'a>(series: impl Iterator<Item = (i64, &'a SeriesStats)>) -> Vec<u8> {
    let series: Vec<(i64, &SeriesStats)> = series.filter(|(_, s)| s.count() > 0).collect();
    let mut out = vec![VERSION];
    put_varint(&mut out, series.len() as u64);
    let mut prev = 0i64;
    let mut sk = Vec::new();
    for (id, s) in series {
        put_varint(&mut out, (id - prev) as u64);
        prev = id;
        put_f64(&mut out, s.sum());
        sk.clear();
        s.sketch.encode(&mut sk);
        put_bytes(&mut out, &sk);
    }
    out
}

/// A decoded summary.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub series: Vec<(i64, SeriesStats)>,
}

impl Summary {
    pub fn get(&self, id: i64) -> Option<&SeriesStats> {
        self.series.binary_search_by_key(&id, |(i, _)| *i).ok().map(|p| &self.series[p].1)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self.series.iter().map(|(i, s)| (*i, s)))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Summary> {
        let (mut r, n) = open(bytes)?;
        let mut series = Vec::with_capacity(n.min(4096));
        let mut id = 0i64;
        for k in 0..n {
            let d = i64::try_from(r.varint()?).map_err(|_| DecodeError::new("series id out of range"))?;
            if k > 0 && d == 0 {
                return Err(DecodeError::new("summary series out of order"));
            }
            id = id.checked_add(d).ok_or_else(|| DecodeError::new("series id out of range"))?;
            let sum = r.f64()?;
            let sketch = Sketch::from_bytes(r.bytes()?)?;
            series.push((id, SeriesStats { sum: ExactSum::of(sum), sketch }));
        }
        if !r.is_empty() {
            return Err(DecodeError::new("trailing bytes after summary"));
        }
        Ok(Summary { series })
    }

    /// (count, sum, min, max) of one series, reading only the head of its sketch: what a
    /// history needs, at a fraction of the cost of decoding the bins.
    pub fn find_stats_in_bytes(bytes: &[u8], want: i64) -> Result<Option<(u64, f64, f64, f64)>> {
        let Some((sum, sketch)) = find(bytes, want)? else {
            return Ok(None);
        };
        let mut h = Reader::new(sketch);
        let count = h.varint()?;
        if count == 0 {
            return Ok(None);
        }
        Ok(Some((count, sum, h.f64()?, h.f64()?)))
    }

    /// Statistics of one series without decoding the others' sketches.
    pub fn find_in_bytes(bytes: &[u8], want: i64) -> Result<Option<SeriesStats>> {
        find(bytes, want)?
            .map(|(sum, sketch)| Ok(SeriesStats { sum: ExactSum::of(sum), sketch: Sketch::from_bytes(sketch)? }))
            .transpose()
    }
}

/// A reader past the version byte of an encoded summary, and its number of series. Each series
/// takes at least 10 bytes, so the input bounds that number: a summary may hold as many series
/// as an agent reported in its bucket (a fixed cap would make one tenant's wide bucket an error
/// for the rollup job of every tenant).
fn open(bytes: &[u8]) -> Result<(Reader<'_>, usize)> {
    let mut r = Reader::new(bytes);
    if r.u8()? != VERSION {
        return Err(DecodeError::new("unknown summary version"));
    }
    let n = r.len(bytes.len() / 10)?;
    Ok((r, n))
}

/// The sum and the encoded sketch of series `want`, skipping the series before it (ids ascend).
fn find(bytes: &[u8], want: i64) -> Result<Option<(f64, &[u8])>> {
    let (mut r, n) = open(bytes)?;
    let mut id = 0i64;
    for _ in 0..n {
        id = id.wrapping_add(r.varint()? as i64);
        let sum = r.f64()?;
        let sketch = r.bytes()?;
        if id == want {
            return Ok(Some((sum, sketch)));
        }
        if id > want {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_accumulate_per_series_and_skip_nulls() {
        let mut b = SummaryBuilder::new();
        b.add_row(&[3, 1, 2], &[Some(1.0), Some(10.0), None]);
        b.add_row(&[3, 1, 2], &[Some(3.0), Some(20.0), None]);
        b.add_row(&[1, 5], &[Some(30.0), Some(-1.0)]);
        let s = b.finish();
        assert_eq!(s.series.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 3, 5], "all-NULL series 2 dropped");
        let one = s.get(1).unwrap();
        assert_eq!((one.count(), one.sum(), one.min(), one.max()), (3, 60.0, Some(10.0), Some(30.0)));
        assert_eq!(s.get(3).unwrap().avg(), Some(2.0));
    }

    #[test]
    fn merging_buckets_equals_one_big_bucket() {
        let rows: Vec<Vec<Option<f64>>> =
            (0..360).map(|i| vec![Some((i % 37) as f64 * 1.5), Some(1e9 + i as f64 * 4096.0)]).collect();
        let ids = [10, 20];
        let mut whole = SummaryBuilder::new();
        rows.iter().for_each(|r| whole.add_row(&ids, r));
        let whole = whole.finish();
        let mut merged = SummaryBuilder::new();
        for part in rows.chunks(30) {
            let mut b = SummaryBuilder::new();
            part.iter().for_each(|r| b.add_row(&ids, r));
            merged.merge_bytes(&b.finish().to_bytes()).unwrap();
        }
        let merged = merged.finish();
        for id in ids {
            let (a, b) = (whole.get(id).unwrap(), merged.get(id).unwrap());
            assert_eq!(a.count(), b.count());
            assert_eq!(a.min(), b.min());
            assert_eq!(a.max(), b.max());
            assert!((a.sum() - b.sum()).abs() <= 1e-9 * a.sum().abs());
            for q in [0.5, 0.95, 0.99] {
                assert_eq!(a.sketch.quantile(q), b.sketch.quantile(q));
            }
        }
    }

    #[test]
    fn ids_beyond_32_bits_and_wide_buckets_round_trip() {
        let big = i64::from(i32::MAX) + 10;
        let mut b = SummaryBuilder::new();
        let ids: Vec<i64> = (0..100_000).map(|i| big + i * 3).collect();
        b.add_row(&ids, &vec![Some(1.5); ids.len()]);
        let bytes = b.finish().to_bytes();
        let back = Summary::from_bytes(&bytes).unwrap();
        assert_eq!(back.series.len(), 100_000, "a bucket with more than 65,536 series decodes");
        assert_eq!(back.series[0].0, big);
        assert_eq!(Summary::find_stats_in_bytes(&bytes, big + 3 * 99_999).unwrap(), Some((1, 1.5, 1.5, 1.5)));
    }

    #[test]
    fn bytes_round_trip_and_single_series_lookup() {
        let mut b = SummaryBuilder::new();
        for i in 0..30 {
            b.add_row(&[1, 7, 9], &[Some(i as f64), Some(0.5), Some(-(i as f64))]);
        }
        let s = b.finish();
        let bytes = s.to_bytes();
        let back = Summary::from_bytes(&bytes).unwrap();
        assert_eq!(back.series.len(), 3);
        let seven = Summary::find_in_bytes(&bytes, 7).unwrap().unwrap();
        assert_eq!((seven.count(), seven.sum()), (30, 15.0));
        assert_eq!(Summary::find_stats_in_bytes(&bytes, 9).unwrap(), Some((30, -435.0, -29.0, 0.0)));
        assert_eq!(Summary::find_stats_in_bytes(&bytes, 8).unwrap(), None);
        assert!(Summary::find_in_bytes(&bytes, 8).unwrap().is_none());
        for cut in 0..bytes.len() {
            assert!(Summary::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
