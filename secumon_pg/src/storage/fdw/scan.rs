//! Executor callbacks: evaluate the pushed-down conditions once per scan, list the chunks whose
//! stored time and ingested_at ranges can match, then decode them one at a time, as the chunk
//! table's owner, and return the rows in range (the executor re-checks every condition).

use std::collections::VecDeque;
use std::ffi::{c_int, c_void, CStr};

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::{self, Datum, List, Oid};
use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PgTupleDesc};
use secumon_codec::chunk::{ChunkReader, ColumnData};
use secumon_codec::range::{Range, Strategy};

use super::datum::{column_type, datum_at, timestamp_at};
use super::{table_options, TableOptions, KIND_INGESTED, KIND_TIME};
use crate::errors::raise;

/// A pushed-down condition, ready to evaluate.
struct Bound {
    kind: i32,
    strategy: Strategy,
    expr: *mut pg_sys::ExprState,
}

/// A column of the foreign table.
struct Attribute {
    name: String,
    type_oid: Oid,
    needed: bool,
}

/// The decoded columns of the chunk being read.
struct Decoded {
    rows: usize,
    /// Per attribute of the foreign table: its values, or None (not needed / not stored).
    columns: Vec<Option<ColumnData>>,
    time: Option<usize>,
    ingested: Option<usize>,
}

/// The state of one scan, kept in `fdw_state` from begin to end.
pub(super) struct ScanState {
    options: TableOptions,
    owner: Oid,
    bounds: Vec<Bound>,
    attributes: Vec<Attribute>,
    started: bool,
    time_range: Range,
    ingested_range: Range,
    pending: VecDeque<String>,
    pub(super) chunks_total: usize,
    pub(super) chunks_read: usize,
    current: Option<Decoded>,
    row: usize,
}

/// Runs `f` as `owner` (the owner of the chunk tables), like a SECURITY DEFINER function.
/// An error inside leaves the switch to transaction or subtransaction abort, which restores
/// the previous user.
///
/// # Safety
/// Must run inside a transaction, with `owner` an existing role.
unsafe fn as_owner<R>(owner: Oid, f: impl FnOnce() -> R) -> R {
    // SAFETY: saves and restores the backend's current-user globals around `f`, as a SECURITY
    // DEFINER call does; an ERROR in `f` is restored by the (sub)transaction abort.
    unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_ctx: c_int = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
        pg_sys::SetUserIdAndSecContext(owner, saved_ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as c_int);
        let r = f();
        pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx);
        r
    }
}

fn micros(ts: Option<TimestampWithTimeZone>) -> Option<i64> {
    ts.map(pg_sys::TimestampTz::from)
}

impl ScanState {
    /// Evaluates the pushed-down conditions and lists the chunks that can match.
    ///
    /// # Safety
    /// `node` must be the scan's own node, between begin and end.
    unsafe fn start(&mut self, node: *mut pg_sys::ForeignScanState) {
        // SAFETY: the node's expression context and the bounds' ExprStates were set up by
        // ExecInitExprList in begin; a non-NULL text datum is a valid varlena.
        unsafe {
            self.started = true;
            self.time_range = Range::ALL;
            self.ingested_range = Range::ALL;
            self.pending.clear();
            self.current = None;
            let econtext = (*node).ss.ps.ps_ExprContext;
            let mut group: Option<String> = None;
            for b in &self.bounds {
                let mut isnull = false;
                let d = pg_sys::ExecEvalExprSwitchContext(b.expr, econtext, &mut isnull);
                if isnull {
                    return; // a comparison with NULL is never true: no rows
                }
                match b.kind {
                    KIND_TIME => self.time_range.apply(b.strategy, d.value() as i64),
                    KIND_INGESTED => self.ingested_range.apply(b.strategy, d.value() as i64),
                    _ => {
                        let key = if self.attribute_type(&self.options.group_column) == pg_sys::TEXTOID {
                            CStr::from_ptr(pg_sys::text_to_cstring(d.cast_mut_ptr())).to_string_lossy().into_owned()
                        } else {
                            (d.value() as i32).to_string()
                        };
                        if group.as_ref().is_some_and(|g| *g != key) {
                            return; // two different agents asked at once: no rows
                        }
                        group = Some(key);
                    }
                }
            }
            if self.time_range.is_empty() || self.ingested_range.is_empty() {
                return;
            }
            if let Some((imin, imax)) = self.options.ingested {
                if !self.ingested_range.overlaps(Some(imin), Some(imax)) {
                    return; // nothing in this day was ingested in the range asked
                }
            }
            let sql = format!(
                "SELECT group_key, time_min, time_max, ingested_min, ingested_max FROM {} \
                 WHERE $1::text IS NULL OR group_key = $1 ORDER BY group_key",
                self.options.chunk_table()
            );
            let (time_range, ingested_range) = (self.time_range, self.ingested_range);
            let keys: Vec<String> = as_owner(self.owner, || {
                Spi::connect(|client| {
                    let rows = client.select(&sql, None, &[group.as_deref().into()])?;
                    let mut keys = Vec::new();
                    for row in rows {
                        let key = row.get::<String>(1)?.unwrap_or_default();
                        let (tmin, tmax) = (micros(row.get(2)?), micros(row.get(3)?));
                        let (imin, imax) = (micros(row.get(4)?), micros(row.get(5)?));
                        if time_range.overlaps(tmin, tmax) && ingested_range.overlaps(imin, imax) {
                            keys.push(key);
                        }
                    }
                    Ok::<_, pgrx::spi::Error>(keys)
                })
            })
            .unwrap_or_else(|e| {
                raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("cannot list compressed chunks: {e}"), None)
            });
            self.chunks_total += keys.len();
            self.pending = keys.into();
        }
    }

    fn attribute_type(&self, name: &str) -> Oid {
        self.attributes.iter().find(|a| a.name == name).map(|a| a.type_oid).unwrap_or(pg_sys::InvalidOid)
    }

    /// Reads and decodes chunk `key`, the columns the query needs only.
    fn load(&mut self, key: &str) {
        let sql = format!("SELECT data FROM {} WHERE group_key = $1", self.options.chunk_table());
        // SAFETY: called by the executor inside its transaction; the owner is the foreign
        // table's owner, an existing role.
        let bytes: Option<Vec<u8>> = unsafe {
            as_owner(self.owner, || {
                Spi::connect(|client| {
                    let mut rows = client.select(&sql, Some(1), &[key.into()])?;
                    Ok::<_, pgrx::spi::Error>(match rows.next() {
                        Some(row) => row.get::<&[u8]>(1)?.map(<[u8]>::to_vec),
                        None => None,
                    })
                })
            })
        }
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("cannot read compressed chunk: {e}"), None));
        self.chunks_read += 1;
        let Some(bytes) = bytes else {
            self.current = None;
            return;
        };
        let corrupt = |e: secumon_codec::DecodeError| -> ! {
            raise(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!("compressed chunk \"{key}\" of {} is damaged: {e}", self.options.chunk_table()),
                None,
            )
        };
        let reader = ChunkReader::new(&bytes).unwrap_or_else(|e| corrupt(e));
        let mut columns = Vec::with_capacity(self.attributes.len());
        let (mut time, mut ingested) = (None, None);
        for (i, a) in self.attributes.iter().enumerate() {
            let keep_time = a.name == "time" && self.time_range.is_bounded();
            let keep_ingested = a.name == "ingested_at" && self.ingested_range.is_bounded();
            if !(a.needed || keep_time || keep_ingested) {
                columns.push(None);
                continue;
            }
            let Some(pos) = reader.position(&a.name) else {
                columns.push(None); // a column added after compression: NULL
                continue;
            };
            let expected = column_type(a.type_oid);
            if expected != Some(reader.column_type(pos)) {
                raise(
                    PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    format!("column \"{}\" changed type since its day was compressed", a.name),
                    Some("Decompress the day with secumon.decompress_partition() before changing column types."),
                );
            }
            if keep_time {
                time = Some(i);
            }
            if keep_ingested {
                ingested = Some(i);
            }
            columns.push(Some(reader.decode(pos).unwrap_or_else(|e| corrupt(e))));
        }
        self.current = Some(Decoded { rows: reader.rows(), columns, time, ingested });
        self.row = 0;
    }
}

impl Decoded {
    fn row_matches(&self, st: &ScanState, row: usize) -> bool {
        let check = |at: Option<usize>, range: &Range| match at {
            Some(i) => range.contains(timestamp_at(&self.columns[i], row)),
            None => true,
        };
        check(self.time, &st.time_range) && check(self.ingested, &st.ingested_range)
    }

    /// Fills the slot's values with row `row`; allocations go to the per-tuple memory context
    /// that ForeignNext switched to.
    ///
    /// # Safety
    /// `slot` must be the scan's cleared tuple slot, of the foreign table's descriptor.
    unsafe fn fill(&self, st: &ScanState, slot: *mut pg_sys::TupleTableSlot, row: usize) {
        // SAFETY: a virtual slot's values and isnull arrays hold natts entries.
        unsafe {
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            for i in 0..natts {
                let datum = match (st.attributes.get(i), self.columns.get(i)) {
                    (Some(a), Some(Some(col))) if a.needed => datum_at(col, row),
                    _ => None,
                };
                values[i] = datum.unwrap_or(Datum::from(0));
                nulls[i] = datum.is_none();
            }
        }
    }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn begin_foreign_scan(node: *mut pg_sys::ForeignScanState, eflags: c_int) {
    // SAFETY: the executor passes the scan's node with its plan and open relation; the plan's
    // private list is the one get_foreign_plan built (bounds, then attributes), read within
    // its lengths.
    unsafe {
        if eflags as u32 & pg_sys::EXEC_FLAG_EXPLAIN_ONLY != 0 {
            return;
        }
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let rel = (*node).ss.ss_currentRelation;
        let relid = (*rel).rd_id;
        let options = table_options(relid);
        let private = (*plan).fdw_private;
        let bound_list = pg_sys::list_nth(private, 0) as *mut List;
        let attr_list = pg_sys::list_nth(private, 1) as *mut List;
        let exprs = pg_sys::ExecInitExprList((*plan).fdw_exprs, node as *mut pg_sys::PlanState);
        let mut bounds = Vec::new();
        for i in 0..pg_sys::list_length(exprs) {
            // get_foreign_plan stores btree strategy numbers only.
            if let Some(strategy) = Strategy::from_btree(pg_sys::list_nth_int(bound_list, 2 * i + 1)) {
                bounds.push(Bound {
                    kind: pg_sys::list_nth_int(bound_list, 2 * i),
                    strategy,
                    expr: pg_sys::list_nth(exprs, i) as *mut pg_sys::ExprState,
                });
            }
        }
        let mut wanted: Vec<i32> = Vec::new();
        for i in 0..pg_sys::list_length(attr_list) {
            wanted.push(pg_sys::list_nth_int(attr_list, i));
        }
        let all = wanted.contains(&-1);
        let tupdesc = PgTupleDesc::from_pg_unchecked((*rel).rd_att);
        let attributes = (0..tupdesc.len())
            .map(|i| {
                let a = tupdesc.get(i).expect("attribute within natts");
                Attribute {
                    name: if a.attisdropped { String::new() } else { a.name().to_string() },
                    type_oid: a.atttypid,
                    needed: !a.attisdropped && (all || wanted.contains(&(i as i32 + 1))),
                }
            })
            .collect();
        let state = ScanState {
            owner: (*(*rel).rd_rel).relowner,
            options,
            bounds,
            attributes,
            started: false,
            time_range: Range::ALL,
            ingested_range: Range::ALL,
            pending: VecDeque::new(),
            chunks_total: 0,
            chunks_read: 0,
            current: None,
            row: 0,
        };
        // Owned by the executor's memory context: dropped even when the query fails.
        let ptr = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state);
        (*node).fdw_state = ptr as *mut c_void;
    }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn iterate_foreign_scan(node: *mut pg_sys::ForeignScanState) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: fdw_state is the ScanState begin_foreign_scan stored, alive until the executor's
    // memory context is deleted; the scan slot is the node's own.
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        pg_sys::ExecClearTuple(slot);
        let st = &mut *((*node).fdw_state as *mut ScanState);
        if !st.started {
            st.start(node);
        }
        loop {
            if let Some(chunk) = st.current.take() {
                while st.row < chunk.rows {
                    let row = st.row;
                    st.row += 1;
                    if chunk.row_matches(st, row) {
                        chunk.fill(st, slot, row);
                        st.current = Some(chunk);
                        pg_sys::ExecStoreVirtualTuple(slot);
                        return slot;
                    }
                }
            }
            let Some(key) = st.pending.pop_front() else {
                return slot;
            };
            st.load(&key);
        }
    }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: as in iterate_foreign_scan.
    unsafe {
        let st = &mut *((*node).fdw_state as *mut ScanState);
        st.started = false;
        st.current = None;
        st.pending.clear();
    }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn end_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: fdw_state is NULL (EXPLAIN only) or the ScanState begin_foreign_scan stored.
    unsafe {
        if let Some(st) = ((*node).fdw_state as *mut ScanState).as_mut() {
            st.current = None;
            st.pending.clear();
        }
    }
}

