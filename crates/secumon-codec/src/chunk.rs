//! A chunk: the rows of one agent for one compressed day, stored column by column.
//!
//! Layout: `"SMC1"`, `varint rows`, `varint columns`, then per column its name, a type tag and
//! the length-prefixed payload, so a reader can skip to the columns it needs. A payload is a
//! null section (`0` none, `1` all null, `2` run lengths of alternating present/null rows)
//! followed by the present values:
//!
//! | type | values |
//! |---|---|
//! | timestamp, int4, int8 | integer codec ([`crate::ints`]): delta-of-delta for regular times |
//! | float8 | [`crate::floats`]: decimal scaling or Gorilla XOR |
//! | text | dictionary of distinct strings + integer codec of the indexes |
//! | float8[] | integer codec of the lengths, then one float8 column per array position |
//!
//! The float8[] transposition turns `metric_samples.vals` (one array per report, ordered by the
//! report's layout) into one column per agent and series.

use crate::bits::{put_bytes, put_varint, Reader};
use crate::{floats, ints, DecodeError, Result};
use std::collections::HashMap;

const MAGIC: &[u8; 4] = b"SMC1";
const MAX_COLUMNS: usize = 1600;
const MAX_ARRAY_LEN: usize = 100_000;

/// The PostgreSQL types a chunk column can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ColumnType {
    Timestamp = 1,
    Int4 = 2,
    Int8 = 3,
    Float8 = 4,
    Text = 5,
    Float8Array = 6,
}

impl ColumnType {
    fn from_tag(tag: u8) -> Result<Self> {
        Ok(match tag {
            1 => ColumnType::Timestamp,
            2 => ColumnType::Int4,
            3 => ColumnType::Int8,
            4 => ColumnType::Float8,
            5 => ColumnType::Text,
            6 => ColumnType::Float8Array,
            t => return Err(DecodeError::new(format!("unknown column type tag {t}"))),
        })
    }
}

/// One column's values, NULL as `None`. Timestamps are PostgreSQL's microseconds since 2000.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnData {
    Timestamp(Vec<Option<i64>>),
    Int4(Vec<Option<i32>>),
    Int8(Vec<Option<i64>>),
    Float8(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Float8Array(Vec<Option<Vec<Option<f64>>>>),
}

impl ColumnData {
    pub fn column_type(&self) -> ColumnType {
        match self {
            ColumnData::Timestamp(_) => ColumnType::Timestamp,
            ColumnData::Int4(_) => ColumnType::Int4,
            ColumnData::Int8(_) => ColumnType::Int8,
            ColumnData::Float8(_) => ColumnType::Float8,
            ColumnData::Text(_) => ColumnType::Text,
            ColumnData::Float8Array(_) => ColumnType::Float8Array,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnData::Timestamp(v) | ColumnData::Int8(v) => v.len(),
            ColumnData::Int4(v) => v.len(),
            ColumnData::Float8(v) => v.len(),
            ColumnData::Text(v) => v.len(),
            ColumnData::Float8Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes the null pattern of `present` (true = value present).
fn put_nulls(out: &mut Vec<u8>, present: impl Iterator<Item = bool> + Clone) {
    let n = present.clone().count();
    let nulls = present.clone().filter(|p| !p).count();
    if nulls == 0 {
        out.push(0);
    } else if nulls == n {
        out.push(1);
    } else {
        out.push(2);
        // Alternating run lengths, starting with a (possibly empty) run of present values.
        let mut runs = Vec::new();
        let mut want = true;
        let mut run = 0i64;
        for p in present {
            if p == want {
                run += 1;
            } else {
                runs.push(run);
                want = !want;
                run = 1;
            }
        }
        runs.push(run);
        ints::encode(&runs, out);
    }
}

/// Decodes a null section into a presence mask of `n` rows.
fn get_nulls(r: &mut Reader, n: usize) -> Result<Vec<bool>> {
    match r.u8()? {
        0 => Ok(vec![true; n]),
        1 => Ok(vec![false; n]),
        2 => {
            let runs = ints::decode(r)?;
            let mut mask = Vec::with_capacity(n);
            let mut present = true;
            for run in runs {
                if run < 0 || mask.len() + run as usize > n {
                    return Err(DecodeError::new("null runs exceed the row count"));
                }
                mask.extend(std::iter::repeat_n(present, run as usize));
                present = !present;
            }
            if mask.len() != n {
                return Err(DecodeError::new("null runs do not cover the rows"));
            }
            Ok(mask)
        }
        m => Err(DecodeError::new(format!("unknown null mode {m}"))),
    }
}

fn spread<T: Clone>(mask: &[bool], values: Vec<T>) -> Result<Vec<Option<T>>> {
    if values.len() != mask.iter().filter(|p| **p).count() {
        return Err(DecodeError::new("value count does not match the null mask"));
    }
    let mut it = values.into_iter();
    Ok(mask.iter().map(|&p| if p { it.next() } else { None }).collect())
}

fn encode_float_column(values: &[Option<f64>], out: &mut Vec<u8>) {
    put_nulls(out, values.iter().map(Option::is_some));
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    floats::encode(&present, out);
}

fn decode_float_column(r: &mut Reader, n: usize) -> Result<Vec<Option<f64>>> {
    let mask = get_nulls(r, n)?;
    spread(&mask, floats::decode(r)?)
}

fn encode_payload(col: &ColumnData, out: &mut Vec<u8>) {
    match col {
        ColumnData::Timestamp(v) | ColumnData::Int8(v) => {
            put_nulls(out, v.iter().map(Option::is_some));
            ints::encode(&v.iter().flatten().copied().collect::<Vec<_>>(), out);
        }
        ColumnData::Int4(v) => {
            put_nulls(out, v.iter().map(Option::is_some));
            ints::encode(&v.iter().flatten().map(|&x| x as i64).collect::<Vec<_>>(), out);
        }
        ColumnData::Float8(v) => encode_float_column(v, out),
        ColumnData::Text(v) => {
            put_nulls(out, v.iter().map(Option::is_some));
            let mut dict: HashMap<&str, i64> = HashMap::new();
            let mut words: Vec<&str> = Vec::new();
            let mut idx = Vec::with_capacity(v.len());
            for s in v.iter().flatten() {
                let next = dict.len() as i64;
                let i = *dict.entry(s.as_str()).or_insert_with(|| {
                    words.push(s.as_str());
                    next
                });
                idx.push(i);
            }
            put_varint(out, words.len() as u64);
            for w in words {
                put_bytes(out, w.as_bytes());
            }
            ints::encode(&idx, out);
        }
        ColumnData::Float8Array(v) => {
            put_nulls(out, v.iter().map(Option::is_some));
            let lens: Vec<i64> = v.iter().flatten().map(|a| a.len() as i64).collect();
            ints::encode(&lens, out);
            let max_len = lens.iter().copied().max().unwrap_or(0) as usize;
            for p in 0..max_len {
                let col: Vec<Option<f64>> =
                    v.iter().flatten().filter(|a| a.len() > p).map(|a| a[p]).collect();
                encode_float_column(&col, out);
            }
        }
    }
}

fn decode_payload(t: ColumnType, r: &mut Reader, n: usize) -> Result<ColumnData> {
    Ok(match t {
        ColumnType::Timestamp | ColumnType::Int8 => {
            let mask = get_nulls(r, n)?;
            let v = spread(&mask, ints::decode(r)?)?;
            if t == ColumnType::Timestamp {
                ColumnData::Timestamp(v)
            } else {
                ColumnData::Int8(v)
            }
        }
        ColumnType::Int4 => {
            let mask = get_nulls(r, n)?;
            let vals = ints::decode(r)?
                .into_iter()
                .map(|x| i32::try_from(x).map_err(|_| DecodeError::new("int4 value out of range")))
                .collect::<Result<Vec<_>>>()?;
            ColumnData::Int4(spread(&mask, vals)?)
        }
        ColumnType::Float8 => ColumnData::Float8(decode_float_column(r, n)?),
        ColumnType::Text => {
            let mask = get_nulls(r, n)?;
            let nwords = r.len(n)?;
            let mut words = Vec::with_capacity(nwords);
            for _ in 0..nwords {
                let b = r.bytes()?;
                words.push(
                    std::str::from_utf8(b).map_err(|_| DecodeError::new("text is not UTF-8"))?.to_string(),
                );
            }
            let vals = ints::decode(r)?
                .into_iter()
                .map(|i| {
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| words.get(i).cloned())
                        .ok_or_else(|| DecodeError::new("dictionary index out of range"))
                })
                .collect::<Result<Vec<_>>>()?;
            ColumnData::Text(spread(&mask, vals)?)
        }
        ColumnType::Float8Array => {
            let mask = get_nulls(r, n)?;
            let lens = ints::decode(r)?;
            if lens.len() != mask.iter().filter(|p| **p).count() {
                return Err(DecodeError::new("array count does not match the null mask"));
            }
            let mut arrays: Vec<Vec<Option<f64>>> = Vec::with_capacity(lens.len());
            for &l in &lens {
                if l < 0 || l as usize > MAX_ARRAY_LEN {
                    return Err(DecodeError::new(format!("array length {l} out of range")));
                }
                arrays.push(Vec::with_capacity(l as usize));
            }
            let max_len = lens.iter().copied().max().unwrap_or(0) as usize;
            for p in 0..max_len {
                let holders: Vec<usize> = (0..arrays.len()).filter(|&i| lens[i] as usize > p).collect();
                let col = decode_float_column(r, holders.len())?;
                for (i, v) in holders.into_iter().zip(col) {
                    arrays[i].push(v);
                }
            }
            ColumnData::Float8Array(spread(&mask, arrays)?)
        }
    })
}

/// Encodes named columns of equal length into one chunk.
///
/// # Panics
/// When the columns differ in length: a caller bug, not a data problem.
pub fn encode(columns: &[(&str, &ColumnData)]) -> Vec<u8> {
    let rows = columns.first().map(|(_, c)| c.len()).unwrap_or(0);
    assert!(columns.iter().all(|(_, c)| c.len() == rows), "chunk columns must have equal lengths");
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    put_varint(&mut out, rows as u64);
    put_varint(&mut out, columns.len() as u64);
    let mut payload = Vec::new();
    for (name, col) in columns {
        put_bytes(&mut out, name.as_bytes());
        out.push(col.column_type() as u8);
        payload.clear();
        encode_payload(col, &mut payload);
        put_bytes(&mut out, &payload);
    }
    out
}

/// A parsed chunk header: column names, types and payload slices, decoded on demand.
pub struct ChunkReader<'a> {
    rows: usize,
    columns: Vec<(String, ColumnType, &'a [u8])>,
}

impl<'a> ChunkReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        if r.take(4)? != MAGIC {
            return Err(DecodeError::new("not a SecuMon chunk (bad magic)"));
        }
        let rows = r.len(ints::MAX_VALUES)?;
        let ncols = r.len(MAX_COLUMNS)?;
        let mut columns = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let name = std::str::from_utf8(r.bytes()?)
                .map_err(|_| DecodeError::new("column name is not UTF-8"))?
                .to_string();
            let t = ColumnType::from_tag(r.u8()?)?;
            let payload = r.bytes()?;
            columns.push((name, t, payload));
        }
        Ok(ChunkReader { rows, columns })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// Index of the column called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _, _)| n == name)
    }

    pub fn name(&self, i: usize) -> &str {
        &self.columns[i].0
    }

    pub fn column_type(&self, i: usize) -> ColumnType {
        self.columns[i].1
    }

    pub fn decode(&self, i: usize) -> Result<ColumnData> {
        let (_, t, payload) = self.columns.get(i).ok_or_else(|| DecodeError::new("no such column"))?;
        let mut r = Reader::new(payload);
        let col = decode_payload(*t, &mut r, self.rows)?;
        if !r.is_empty() {
            return Err(DecodeError::new("trailing bytes after column payload"));
        }
        Ok(col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_columns() -> Vec<(&'static str, ColumnData)> {
        let n = 1000;
        vec![
            ("time", ColumnData::Timestamp((0..n).map(|i| Some(800_000_000_000_000 + i * 10_000_000)).collect())),
            ("agent_key", ColumnData::Int4(vec![Some(7); n as usize])),
            ("pid", ColumnData::Int4((0..n).map(|i| if i % 17 == 0 { None } else { Some(i as i32 % 50) }).collect())),
            ("bytes", ColumnData::Int8((0..n).map(|i| Some(i * i * 1000)).collect())),
            ("usage", ColumnData::Float8((0..n).map(|i| Some((i % 97) as f64 / 4.0)).collect())),
            ("nothing", ColumnData::Float8(vec![None; n as usize])),
            (
                "name",
                ColumnData::Text((0..n).map(|i| if i % 9 == 0 { None } else { Some(format!("proc-{}", i % 5)) }).collect()),
            ),
            (
                "vals",
                ColumnData::Float8Array(
                    (0..n)
                        .map(|i| match i % 250 {
                            0 => None,
                            1 => Some(vec![]),
                            2 => Some(vec![Some(1.0), None, Some(3.0), Some(4.0), Some(5.0)]),
                            _ => Some(vec![Some(i as f64 / 100.0), Some(1.0 / 3.0), None, Some(-0.0)]),
                        })
                        .collect(),
                ),
            ),
        ]
    }

    #[test]
    fn every_column_type_round_trips() {
        let cols = sample_columns();
        let refs: Vec<(&str, &ColumnData)> = cols.iter().map(|(n, c)| (*n, c)).collect();
        let bytes = encode(&refs);
        let reader = ChunkReader::new(&bytes).unwrap();
        assert_eq!(reader.rows(), 1000);
        for (i, (name, col)) in cols.iter().enumerate() {
            assert_eq!(reader.name(i), *name);
            let back = reader.decode(i).unwrap();
            match (&back, col) {
                (ColumnData::Float8Array(a), ColumnData::Float8Array(b)) => {
                    for (x, y) in a.iter().zip(b) {
                        let bits = |v: &Option<Vec<Option<f64>>>| {
                            v.as_ref().map(|a| a.iter().map(|e| e.map(f64::to_bits)).collect::<Vec<_>>())
                        };
                        assert_eq!(bits(x), bits(y));
                    }
                }
                _ => assert_eq!(&back, col, "column {name}"),
            }
        }
        assert_eq!(reader.position("name"), Some(6));
    }

    #[test]
    fn empty_chunk_round_trips() {
        let bytes = encode(&[]);
        let reader = ChunkReader::new(&bytes).unwrap();
        assert_eq!(reader.rows(), 0);
        assert_eq!(reader.column_count(), 0);
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let cols = sample_columns();
        let refs: Vec<(&str, &ColumnData)> = cols.iter().map(|(n, c)| (*n, c)).collect();
        let bytes = encode(&refs);
        for cut in (0..bytes.len()).step_by(7) {
            if let Ok(r) = ChunkReader::new(&bytes[..cut]) {
                for i in 0..r.column_count() {
                    let _ = r.decode(i);
                }
            }
        }
        let mut flipped = bytes.clone();
        for i in (0..flipped.len()).step_by(3) {
            flipped[i] ^= 0xa5;
            if let Ok(r) = ChunkReader::new(&flipped) {
                for c in 0..r.column_count() {
                    let _ = r.decode(c);
                }
            }
            flipped[i] ^= 0xa5;
        }
        assert!(ChunkReader::new(b"nope").is_err());
    }
}
