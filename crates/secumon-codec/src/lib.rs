//! Storage algorithms of SecuMon that need no PostgreSQL, so they are unit-tested with plain
//! `cargo test -p secumon-codec` in seconds:
//!
//! - [`chunk`]: the columnar form of a compressed day (one chunk per agent): typed columns,
//!   delta-of-delta integers and timestamps, decimal-aware floats with a Gorilla XOR fallback,
//!   dictionary-coded text, arrays transposed into one column per position.
//! - [`sketch`]: a mergeable quantile sketch with a relative-error guarantee (DDSketch).
//! - [`fsum`]: float sums independent of the order of their terms (exact partials).
//! - [`summary`]: the per-series rollup state (count, sum, min, max, sketch) of one agent and
//!   bucket, which merges exactly from finer buckets into coarser ones.
//! - [`lttb`]: Largest-Triangle-Three-Buckets downsampling for charts.
//! - [`range`]: the time range a query's conditions leave, and which chunks it can touch.
//!
//! Every decoder returns [`DecodeError`] on malformed input instead of panicking: the bytes come
//! from the database, and a damaged value must surface as an SQL error, not a crash.

pub mod bits;
pub mod chunk;
pub mod floats;
pub mod ints;
pub mod lttb;
pub mod range;
pub mod sketch;
pub mod fsum;
pub mod summary;

use std::fmt;

/// Malformed or truncated encoded data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(msg: impl Into<String>) -> Self {
        DecodeError(msg.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

pub type Result<T> = std::result::Result<T, DecodeError>;
