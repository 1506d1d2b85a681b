//! Dashboard queries (sql/query.sql) and what SQL cannot do well for them: LTTB downsampling.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::errors::raise;

/// Downsamples a series to at most `threshold` points with Largest-Triangle-Three-Buckets,
/// keeping the first and last point and the peaks. NULL values are dropped first.
#[pg_extern(immutable, parallel_safe, strict)]
fn lttb(
    times: Array<TimestampWithTimeZone>,
    vals: Array<f64>,
    threshold: i32,
) -> TableIterator<'static, (name!(time, TimestampWithTimeZone), name!(value, f64))> {
    if threshold <= 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("threshold must be positive, got {threshold}"),
            None,
        );
    }
    if times.len() != vals.len() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("times and vals must have the same length (got {} and {})", times.len(), vals.len()),
            None,
        );
    }
    let points: Vec<(TimestampWithTimeZone, f64)> = times
        .iter()
        .zip(vals.iter())
        .filter_map(|(t, v)| Some((t?, v?)))
        .collect();
    let xs: Vec<f64> = points.iter().map(|(t, _)| pg_sys::TimestampTz::from(*t) as f64).collect();
    let ys: Vec<f64> = points.iter().map(|(_, v)| *v).collect();
    let keep = secumon_codec::lttb::lttb(&xs, &ys, threshold as usize);
    TableIterator::new(keep.into_iter().map(move |i| points[i]))
}
