//! SQL wrappers over the rollup summaries and quantile sketches of `secumon-codec`.
//!
//! A summary (bytea) holds, for one agent and bucket, every series' count, sum, min, max and
//! sketch. `secumon._summarize(series_ids, vals)` builds one from report rows,
//! `secumon._summary_merge(summary)` merges finer buckets into coarser ones, and
//! `secumon._summary_unnest` / `_summary_series` read them back. The public sketch functions
//! (`secumon.sketch`, `sketch_merge`, `sketch_quantile`, `sketch_quantiles`) let users merge
//! percentiles across buckets themselves.

use pgrx::prelude::*;
use pgrx::{Internal, PgMemoryContexts};
use secumon_codec::sketch::Sketch;
use secumon_codec::summary::{Summary, SummaryBuilder};

use crate::errors::raise;

/// The transition state lives in the aggregate's memory context and is dropped with it.
unsafe fn agg_state<T: Default>(state: &mut Internal, fcinfo: pg_sys::FunctionCallInfo) -> &mut T {
    // SAFETY: the caller passes its own fcinfo; AggCheckCallContext refuses a non-aggregate call
    // before any pointer is used, and the state is allocated in the aggregate's context, which
    // outlives every transition call.
    unsafe {
        if !state.initialized() {
            let mut ctx: pg_sys::MemoryContext = std::ptr::null_mut();
            if pg_sys::AggCheckCallContext(fcinfo, &mut ctx) == 0 || ctx.is_null() {
                raise(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "this function is the transition function of an aggregate and cannot be called directly".into(),
                    None,
                );
            }
            let mut slot = std::panic::AssertUnwindSafe(&mut *state);
            PgMemoryContexts::For(ctx).switch_to(move |_| {
                slot.insert(T::default());
            });
        }
        state.get_mut::<T>().expect("aggregate state was just initialised")
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
        format!("not a valid SecuMon {what}: {e}"),
        Some("Pass a value produced by SecuMon's rollup views or secumon.sketch()."),
    )
}

#[derive(Default)]
struct SummarizeState {
    builder: SummaryBuilder,
    ids: Vec<i64>,
    vals: Vec<Option<f64>>,
}

impl SummarizeState {
    fn add_row(&mut self, ids: impl Iterator<Item = i64>, vals: Array<f64>) {
        self.ids.clear();
        self.ids.extend(ids);
        self.vals.clear();
        self.vals.extend(vals.iter());
        self.builder.add_row(&self.ids, &self.vals);
    }
}

/// Transition function of `secumon._summarize(series_ids bigint[], vals float8[])`.
#[pg_extern(immutable, parallel_safe, name = "_summarize_sfunc")]
fn _summarize_sfunc_bigint(
    mut state: Internal,
    series_ids: Option<Array<i64>>,
    vals: Option<Array<f64>>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    // SAFETY: fcinfo is this call's own, and `state` is this aggregate's state or not yet
    // initialized.
    let st = unsafe { agg_state::<SummarizeState>(&mut state, fcinfo) };
    if let (Some(ids), Some(vals)) = (series_ids, vals) {
        st.add_row(ids.iter().map(|i| i.unwrap_or(0)), vals);
    }
    state
}

/// 0.1.0's transition function over integer series ids: kept (without SQL) so that the 0.1.0
/// install script still works with this library until ALTER EXTENSION secumon UPDATE.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn _summarize_sfunc(
    mut state: Internal,
    series_ids: Option<Array<i32>>,
    vals: Option<Array<f64>>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    // SAFETY: as in _summarize_sfunc.
    let st = unsafe { agg_state::<SummarizeState>(&mut state, fcinfo) };
    if let (Some(ids), Some(vals)) = (series_ids, vals) {
        st.add_row(ids.iter().map(|i| i64::from(i.unwrap_or(0))), vals);
    }
    state
}

#[pg_extern(immutable, parallel_safe)]
fn _summarize_final(state: Internal) -> Option<Vec<u8>> {
    // SAFETY: the final function receives the state its transition functions built, a
    // SummarizeState.
    let st = unsafe { state.get::<SummarizeState>() }?;
    (!st.builder.is_empty()).then(|| st.builder.to_bytes())
}

/// Transition function of `secumon._summary_merge(summary bytea)`.
#[pg_extern(immutable, parallel_safe)]
fn _summary_merge_sfunc(mut state: Internal, summary: Option<&[u8]>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    // SAFETY: fcinfo is this call's own, and `state` is this aggregate's state or not yet
    // initialized.
    let st = unsafe { agg_state::<SummarizeState>(&mut state, fcinfo) };
    if let Some(bytes) = summary {
        if let Err(e) = st.builder.merge_bytes(bytes) {
            corrupt("rollup summary", e);
        }
    }
    state
}

fn decode_summary(bytes: &[u8]) -> Summary {
    Summary::from_bytes(bytes).unwrap_or_else(|e| corrupt("rollup summary", e))
}

type SeriesRow<Id> = (Id, i64, f64, f64, f64, Vec<u8>);

fn series_rows(summary: &[u8]) -> impl Iterator<Item = SeriesRow<i64>> {
    decode_summary(summary).series.into_iter().map(|(id, s)| {
        (id, s.count() as i64, s.sum(), s.min().unwrap_or(f64::NAN), s.max().unwrap_or(f64::NAN), s.sketch.to_bytes())
    })
}

fn series_row(summary: &[u8], series_id: i64) -> Option<SeriesRow<i64>> {
    let found = Summary::find_in_bytes(summary, series_id).unwrap_or_else(|e| corrupt("rollup summary", e));
    found.map(|s| {
        (series_id, s.count() as i64, s.sum(), s.min().unwrap_or(f64::NAN), s.max().unwrap_or(f64::NAN), s.sketch.to_bytes())
    })
}

/// Every series of a summary: one row per series with count, sum, min, max and sketch.
#[pg_extern(immutable, parallel_safe, strict, name = "_summary_unnest")]
fn _summary_unnest_bigint(summary: &[u8]) -> TableIterator<'static, ( name!(series_id, i64), name!(count, i64), name!(sum, f64), name!(min, f64), name!(max, f64), name!(sketch, Vec<u8>),)> {
    TableIterator::new(series_rows(summary).collect::<Vec<_>>())
}

/// One series of a summary (no row when the summary lacks it), without decoding the others.
#[pg_extern(immutable, parallel_safe, strict, name = "_summary_series")]
fn _summary_series_bigint(summary: &[u8], series_id: i64) -> TableIterator<'static, ( name!(series_id, i64), name!(count, i64), name!(sum, f64), name!(min, f64), name!(max, f64), name!(sketch, Vec<u8>),)> {
    TableIterator::new(series_row(summary, series_id))
}

/// 0.1.0's integer-id `_summary_unnest`, kept without SQL for the 0.1.0 install script until
/// ALTER EXTENSION secumon UPDATE.
#[pg_extern(immutable, parallel_safe, strict, sql = false)]
fn _summary_unnest(summary: &[u8]) -> TableIterator<'static, ( name!(series_id, i32), name!(count, i64), name!(sum, f64), name!(min, f64), name!(max, f64), name!(sketch, Vec<u8>),)> {
    let rows: Vec<SeriesRow<i32>> = series_rows(summary)
        .filter_map(|(id, count, sum, min, max, sketch)| Some((i32::try_from(id).ok()?, count, sum, min, max, sketch)))
        .collect();
    TableIterator::new(rows)
}

/// 0.1.0's integer-id `_summary_series`, kept without SQL like [`_summary_unnest`].
#[pg_extern(immutable, parallel_safe, strict, sql = false)]
fn _summary_series(summary: &[u8], series_id: i32) -> TableIterator<'static, ( name!(series_id, i32), name!(count, i64), name!(sum, f64), name!(min, f64), name!(max, f64), name!(sketch, Vec<u8>),)> {
    TableIterator::new(
        series_row(summary, i64::from(series_id)).map(|(_, count, sum, min, max, sketch)| (series_id, count, sum, min, max, sketch)),
    )
}

/// Points of one series from a run of summaries (ascending buckets): per `step_us`-wide step
/// (aligned to 2000-01-01 like date_bin), the average, min, max and sample count. One call per
/// query instead of one set-returning call per bucket keeps a 720-point history well under a
/// millisecond.
#[pg_extern(immutable, parallel_safe, strict, name = "_summary_points")]
fn _summary_points_bigint(
    buckets: Array<pgrx::datum::TimestampWithTimeZone>,
    summaries: Array<&[u8]>,
    series_id: i64,
    step_us: i64,
) -> TableIterator<
    'static,
    (
        name!(bucket, pgrx::datum::TimestampWithTimeZone),
        name!(value, f64),
        name!(min, f64),
        name!(max, f64),
        name!(samples, i64),
    ),
> {
    summary_points(buckets, summaries, series_id, step_us)
}

/// 0.1.0's integer-id `_summary_points`, kept without SQL like [`_summary_unnest`].
#[pg_extern(immutable, parallel_safe, strict, sql = false)]
fn _summary_points(
    buckets: Array<pgrx::datum::TimestampWithTimeZone>,
    summaries: Array<&[u8]>,
    series_id: i32,
    step_us: i64,
) -> TableIterator<
    'static,
    (
        name!(bucket, pgrx::datum::TimestampWithTimeZone),
        name!(value, f64),
        name!(min, f64),
        name!(max, f64),
        name!(samples, i64),
    ),
> {
    summary_points(buckets, summaries, i64::from(series_id), step_us)
}

type Point = (pgrx::datum::TimestampWithTimeZone, f64, f64, f64, i64);

fn summary_points(
    buckets: Array<pgrx::datum::TimestampWithTimeZone>,
    summaries: Array<&[u8]>,
    series_id: i64,
    step_us: i64,
) -> TableIterator<'static, Point> {
    if step_us <= 0 {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("step must be positive, got {step_us} µs"), None);
    }
    let mut out: Vec<(pgrx::datum::TimestampWithTimeZone, f64, f64, f64, i64)> = Vec::new();
    // (step start, sum, count, min, max)
    let mut cur: Option<(i64, f64, u64, f64, f64)> = None;
    let flush = |c: (i64, f64, u64, f64, f64), out: &mut Vec<_>| {
        if c.2 > 0 {
            if let Ok(t) = pgrx::datum::TimestampWithTimeZone::try_from(c.0) {
                out.push((t, c.1 / c.2 as f64, c.3, c.4, c.2 as i64));
            }
        }
    };
    for (b, s) in buckets.iter().zip(summaries.iter()) {
        let (Some(b), Some(s)) = (b, s) else { continue };
        let Some((count, sum, mn, mx)) =
            Summary::find_stats_in_bytes(s, series_id).unwrap_or_else(|e| corrupt("rollup summary", e))
        else {
            continue;
        };
        let t = pg_sys::TimestampTz::from(b);
        let start = t.div_euclid(step_us) * step_us;
        match cur.as_mut() {
            Some(c) if c.0 == start => {
                c.1 += sum;
                c.2 += count;
                c.3 = c.3.min(mn);
                c.4 = c.4.max(mx);
            }
            _ => {
                if let Some(c) = cur.take() {
                    flush(c, &mut out);
                }
                cur = Some((start, sum, count, mn, mx));
            }
        }
    }
    if let Some(c) = cur.take() {
        flush(c, &mut out);
    }
    TableIterator::new(out)
}

#[derive(Default)]
struct SketchState {
    sketch: Sketch,
}

/// Transition function of the aggregate `secumon.sketch(value float8)`.
#[pg_extern(immutable, parallel_safe)]
fn _sketch_add_sfunc(mut state: Internal, value: Option<f64>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    // SAFETY: as in _summary_merge_sfunc.
    let st = unsafe { agg_state::<SketchState>(&mut state, fcinfo) };
    if let Some(v) = value {
        st.sketch.add(v);
    }
    state
}

/// Transition function of the aggregate `secumon.sketch_merge(sketch bytea)`.
#[pg_extern(immutable, parallel_safe)]
fn _sketch_merge_sfunc(mut state: Internal, sketch: Option<&[u8]>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    // SAFETY: as in _summary_merge_sfunc.
    let st = unsafe { agg_state::<SketchState>(&mut state, fcinfo) };
    if let Some(bytes) = sketch {
        match Sketch::from_bytes(bytes) {
            Ok(s) => st.sketch.merge(&s),
            Err(e) => corrupt("sketch", e),
        }
    }
    state
}

#[pg_extern(immutable, parallel_safe)]
fn _sketch_final(state: Internal) -> Option<Vec<u8>> {
    // SAFETY: the final function receives the state its transition functions built, a SketchState.
    let st = unsafe { state.get::<SketchState>() }?;
    (st.sketch.count() > 0).then(|| st.sketch.to_bytes())
}

fn check_quantile(q: f64) {
    if !(0.0..=1.0).contains(&q) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("quantile must be between 0 and 1, got {q}"),
            Some("For the 95th percentile pass 0.95."),
        );
    }
}

/// The q-quantile (0 ≤ q ≤ 1) of a sketch, within 1 % of `percentile_disc(q)` over the raw
/// values; NULL for an empty sketch.
#[pg_extern(immutable, parallel_safe, strict)]
fn sketch_quantile(sketch: &[u8], q: f64) -> Option<f64> {
    check_quantile(q);
    Sketch::from_bytes(sketch).unwrap_or_else(|e| corrupt("sketch", e)).quantile(q)
}

/// Several quantiles of one sketch, in the order asked.
#[pg_extern(immutable, parallel_safe, strict)]
fn sketch_quantiles(sketch: &[u8], qs: Array<f64>) -> Vec<Option<f64>> {
    let s = Sketch::from_bytes(sketch).unwrap_or_else(|e| corrupt("sketch", e));
    qs.iter()
        .map(|q| {
            q.and_then(|q| {
                check_quantile(q);
                s.quantile(q)
            })
        })
        .collect()
}

/// Number of values a sketch summarises.
#[pg_extern(immutable, parallel_safe, strict)]
fn sketch_count(sketch: &[u8]) -> i64 {
    Sketch::from_bytes(sketch).unwrap_or_else(|e| corrupt("sketch", e)).count() as i64
}

extension_sql!(
    r#"
CREATE AGGREGATE secumon._summarize(bigint[], float8[]) (
    SFUNC = secumon._summarize_sfunc, STYPE = internal, FINALFUNC = secumon._summarize_final
);
COMMENT ON AGGREGATE secumon._summarize(bigint[], float8[]) IS 'Rollup summary (per series count, sum, min, max, sketch) of report rows: series ids and values.';
CREATE AGGREGATE secumon._summary_merge(bytea) (
    SFUNC = secumon._summary_merge_sfunc, STYPE = internal, FINALFUNC = secumon._summarize_final
);
COMMENT ON AGGREGATE secumon._summary_merge(bytea) IS 'Merges rollup summaries of finer buckets into one.';
CREATE AGGREGATE secumon.sketch(float8) (
    SFUNC = secumon._sketch_add_sfunc, STYPE = internal, FINALFUNC = secumon._sketch_final
);
COMMENT ON AGGREGATE secumon.sketch(float8) IS 'Mergeable quantile sketch (DDSketch, 1 % relative accuracy) of the values; read it with secumon.sketch_quantile().';
CREATE AGGREGATE secumon.sketch_merge(bytea) (
    SFUNC = secumon._sketch_merge_sfunc, STYPE = internal, FINALFUNC = secumon._sketch_final
);
COMMENT ON AGGREGATE secumon.sketch_merge(bytea) IS 'Merges quantile sketches, e.g. the percentile_sketch column of several rollup buckets.';
"#,
    name = "rollup_aggregates",
    requires = [
        _summarize_sfunc_bigint,
        _summarize_final,
        _summary_merge_sfunc,
        _sketch_add_sfunc,
        _sketch_merge_sfunc,
        _sketch_final,
        _summary_unnest_bigint,
        _summary_series_bigint,
        _summary_points_bigint,
        sketch_quantile,
        sketch_quantiles,
        sketch_count
    ]
);
