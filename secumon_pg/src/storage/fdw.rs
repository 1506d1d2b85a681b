//! `secumon_compressed`: the foreign-data wrapper behind compressed days.
//!
//! Compressing a day replaces its heap partition (say `secumon_partitions.disk_metrics_p20261118`)
//! by a foreign table of the same name, attached to the same parent for the same range, whose
//! rows this wrapper decodes from a chunk table (`..._c20261118`: one columnar chunk per agent).
//! Queries through `secumon.disk_metrics`, `secumon.metrics` and every function keep working:
//! partition pruning skips compressed days that are out of range, and within a day the wrapper
//! uses `time`, `ingested_at` and agent equality conditions to read only the chunks that can
//! match (the executor still re-checks every condition). Chunks are read as the chunk table's
//! owner, so readers need no grant on the chunk tables; row-level security applies through the
//! parent table as for any partition.
//!
//! Rows of a compressed day cannot be inserted, updated or deleted in place: those operations
//! raise a clear error naming `secumon.decompress_partition()`. (`secumon.ingest` decompresses a
//! day by itself before storing a late report into it.)

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::null_mut;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::{self, Datum, List, Node, NodeTag, Oid};
use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PgTupleDesc};
use secumon_codec::chunk::{ChunkReader, ColumnData, ColumnType};

use super::raise;

const KIND_TIME: i32 = 1;
const KIND_INGESTED: i32 = 2;
const KIND_GROUP: i32 = 3;

const LT: i32 = 1;
const LE: i32 = 2;
const EQ: i32 = 3;
const GE: i32 = 4;
const GT: i32 = 5;

struct TableOptions {
    schema: String,
    chunks: String,
    group_column: String,
    rows: f64,
    /// Range of ingested_at over the whole day (PostgreSQL microseconds), when known: a scan
    /// for rows ingested after it ends without reading the chunk table.
    ingested: Option<(i64, i64)>,
}

impl TableOptions {
    fn chunk_table(&self) -> String {
        format!("{}.{}", pgrx::spi::quote_identifier(&self.schema), pgrx::spi::quote_identifier(&self.chunks))
    }
}

unsafe fn table_options(relid: Oid) -> TableOptions {
    unsafe {
        let table = pg_sys::GetForeignTable(relid);
        let mut opts =
            TableOptions { schema: String::new(), chunks: String::new(), group_column: String::new(), rows: 1000.0, ingested: None };
        let (mut imin, mut imax) = (None, None);
        let list = (*table).options;
        for i in 0..pg_sys::list_length(list) {
            let def = pg_sys::list_nth(list, i) as *mut pg_sys::DefElem;
            let name = CStr::from_ptr((*def).defname).to_string_lossy().into_owned();
            let value = CStr::from_ptr(pg_sys::defGetString(def)).to_string_lossy().into_owned();
            match name.as_str() {
                "schema" => opts.schema = value,
                "chunks" => opts.chunks = value,
                "group_column" => opts.group_column = value,
                "rows" => opts.rows = value.parse().unwrap_or(1000.0),
                "ingested_min_us" => imin = value.parse::<i64>().ok(),
                "ingested_max_us" => imax = value.parse::<i64>().ok(),
                _ => {}
            }
        }
        opts.ingested = imin.zip(imax);
        if opts.schema.is_empty() || opts.chunks.is_empty() || opts.group_column.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_FDW_OPTION_NAME_NOT_FOUND,
                format!("compressed table {} lacks the schema, chunks or group_column option", relid.to_u32()),
                Some("Foreign tables of secumon_compressed are created by secumon.compress_partition()."),
            );
        }
        opts
    }
}

unsafe fn is_tag(node: *mut Node, tag: NodeTag) -> bool {
    unsafe { !node.is_null() && (*node).type_ == tag }
}

unsafe fn attnum(relid: Oid, name: &str) -> i16 {
    let c = CString::new(name).unwrap_or_default();
    unsafe { pg_sys::get_attnum(relid, c.as_ptr()) }
}

fn flip(strategy: i32) -> i32 {
    match strategy {
        LT => GT,
        LE => GE,
        GE => LE,
        GT => LT,
        s => s,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn get_foreign_rel_size(root: *mut pg_sys::PlannerInfo, baserel: *mut pg_sys::RelOptInfo, relid: Oid) {
    unsafe {
        let opts = table_options(relid);
        let sel = pg_sys::clauselist_selectivity(root, (*baserel).baserestrictinfo, 0, pg_sys::JoinType::JOIN_INNER, null_mut());
        (*baserel).tuples = opts.rows;
        (*baserel).rows = (opts.rows * sel).max(1.0);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn get_foreign_paths(root: *mut pg_sys::PlannerInfo, baserel: *mut pg_sys::RelOptInfo, _relid: Oid) {
    unsafe {
        // Decoding costs about as much as reading a heap row; chunks outside the conditions
        // are skipped, which the selectivity already reflects.
        let rows = (*baserel).rows;
        let startup = 25.0;
        let total = startup + rows * 0.02 + (*baserel).tuples * 0.001;
        let path = pg_sys::create_foreignscan_path(root, baserel, null_mut(), rows, startup, total, null_mut(), null_mut(), null_mut(), null_mut());
        pg_sys::add_path(baserel, path as *mut pg_sys::Path);
    }
}

/// A pushed-down condition `column <strategy> expression`.
unsafe fn classify(clause: *mut Node, relid: u32, time_att: i16, ingested_att: i16, group_att: i16) -> Option<(i32, i32, *mut Node)> {
    unsafe {
        if !is_tag(clause, NodeTag::T_OpExpr) {
            return None;
        }
        let op = clause as *mut pg_sys::OpExpr;
        if pg_sys::list_length((*op).args) != 2 {
            return None;
        }
        let left = pg_sys::list_nth((*op).args, 0) as *mut Node;
        let right = pg_sys::list_nth((*op).args, 1) as *mut Node;
        let is_our_var = |n: *mut Node| {
            is_tag(n, NodeTag::T_Var) && (*(n as *mut pg_sys::Var)).varno as u32 == relid && (*(n as *mut pg_sys::Var)).varlevelsup == 0
        };
        let (var, other, flipped) = if is_our_var(left) {
            (left as *mut pg_sys::Var, right, false)
        } else if is_our_var(right) {
            (right as *mut pg_sys::Var, left, true)
        } else {
            return None;
        };
        if pg_sys::contain_var_clause(other) || pg_sys::contain_volatile_functions(other) {
            return None;
        }
        let att = (*var).varattno;
        let kind = if att == time_att {
            KIND_TIME
        } else if att == ingested_att {
            KIND_INGESTED
        } else if att == group_att {
            KIND_GROUP
        } else {
            return None;
        };
        let vtype = pg_sys::exprType(var as *mut Node);
        if vtype != pg_sys::exprType(other) {
            return None;
        }
        let opname = pg_sys::get_opname((*op).opno);
        if opname.is_null() {
            return None;
        }
        let strategy = match CStr::from_ptr(opname).to_bytes() {
            b"<" => LT,
            b"<=" => LE,
            b"=" => EQ,
            b">=" => GE,
            b">" => GT,
            _ => return None,
        };
        let strategy = if flipped { flip(strategy) } else { strategy };
        match kind {
            KIND_TIME | KIND_INGESTED if vtype == pg_sys::TIMESTAMPTZOID => Some((kind, strategy, other)),
            KIND_GROUP if strategy == EQ && (vtype == pg_sys::INT4OID || vtype == pg_sys::TEXTOID) => Some((kind, strategy, other)),
            _ => None,
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn get_foreign_plan(
    _root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    relid: Oid,
    _best_path: *mut pg_sys::ForeignPath,
    tlist: *mut List,
    scan_clauses: *mut List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    unsafe {
        let opts = table_options(relid);
        let scan_relid = (*baserel).relid;
        let time_att = attnum(relid, "time");
        let ingested_att = attnum(relid, "ingested_at");
        let group_att = attnum(relid, &opts.group_column);

        let mut fdw_exprs: *mut List = null_mut();
        let mut bounds: *mut List = null_mut();
        for i in 0..pg_sys::list_length(scan_clauses) {
            let rinfo = pg_sys::list_nth(scan_clauses, i) as *mut pg_sys::RestrictInfo;
            if (*rinfo).pseudoconstant {
                continue;
            }
            if let Some((kind, strategy, expr)) = classify((*rinfo).clause as *mut Node, scan_relid, time_att, ingested_att, group_att) {
                fdw_exprs = pg_sys::lappend(fdw_exprs, expr as *mut c_void);
                bounds = pg_sys::lappend_int(bounds, kind);
                bounds = pg_sys::lappend_int(bounds, strategy);
            }
        }

        // Columns the query needs: decode only those.
        let mut used: *mut pg_sys::Bitmapset = null_mut();
        pg_sys::pull_varattnos((*(*baserel).reltarget).exprs as *mut Node, scan_relid, &mut used);
        for i in 0..pg_sys::list_length((*baserel).baserestrictinfo) {
            let rinfo = pg_sys::list_nth((*baserel).baserestrictinfo, i) as *mut pg_sys::RestrictInfo;
            pg_sys::pull_varattnos((*rinfo).clause as *mut Node, scan_relid, &mut used);
        }
        let mut attrs: *mut List = null_mut();
        let mut member = -1;
        loop {
            member = pg_sys::bms_next_member(used, member);
            if member < 0 {
                break;
            }
            let att = member + pg_sys::FirstLowInvalidHeapAttributeNumber;
            // 0 is a whole-row reference: every column.
            attrs = pg_sys::lappend_int(attrs, if att == 0 { -1 } else { att });
        }

        let mut private: *mut List = null_mut();
        private = pg_sys::lappend(private, bounds as *mut c_void);
        private = pg_sys::lappend(private, attrs as *mut c_void);
        let local_quals = pg_sys::extract_actual_clauses(scan_clauses, false);
        pg_sys::make_foreignscan(tlist, local_quals, scan_relid, fdw_exprs, private, null_mut(), null_mut(), outer_plan)
    }
}

/// Inclusive bounds on a timestamp column.
#[derive(Clone, Copy)]
struct Range {
    lo: i64,
    hi: i64,
}

impl Range {
    const ALL: Range = Range { lo: i64::MIN, hi: i64::MAX };

    fn apply(&mut self, strategy: i32, v: i64) {
        match strategy {
            LT => self.hi = self.hi.min(v.saturating_sub(1)),
            LE => self.hi = self.hi.min(v),
            EQ => {
                self.lo = self.lo.max(v);
                self.hi = self.hi.min(v);
            }
            GE => self.lo = self.lo.max(v),
            GT => self.lo = self.lo.max(v.saturating_add(1)),
            _ => {}
        }
    }

    fn overlaps(&self, min: Option<i64>, max: Option<i64>) -> bool {
        !(max.is_some_and(|m| m < self.lo) || min.is_some_and(|m| m > self.hi))
    }

    fn contains(&self, v: Option<i64>) -> bool {
        v.is_none_or(|v| v >= self.lo && v <= self.hi)
    }
}

struct Bound {
    kind: i32,
    strategy: i32,
    expr: *mut pg_sys::ExprState,
}

struct Attribute {
    name: String,
    type_oid: Oid,
    needed: bool,
}

struct Decoded {
    rows: usize,
    /// Per attribute of the foreign table: its values, or None (not needed / not stored).
    columns: Vec<Option<ColumnData>>,
    time: Option<usize>,
    ingested: Option<usize>,
}

struct ScanState {
    options: TableOptions,
    owner: Oid,
    bounds: Vec<Bound>,
    attributes: Vec<Attribute>,
    started: bool,
    time_range: Range,
    ingested_range: Range,
    pending: VecDeque<String>,
    chunks_total: usize,
    chunks_read: usize,
    current: Option<Decoded>,
    row: usize,
}

/// Runs `f` as `owner` (the owner of the chunk tables), like a SECURITY DEFINER function.
/// An error inside leaves the switch to transaction or subtransaction abort, which restores
/// the previous user.
unsafe fn as_owner<R>(owner: Oid, f: impl FnOnce() -> R) -> R {
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
    unsafe fn start(&mut self, node: *mut pg_sys::ForeignScanState) {
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
            if self.time_range.lo > self.time_range.hi || self.ingested_range.lo > self.ingested_range.hi {
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

    unsafe fn load(&mut self, key: &str) {
        let sql = format!("SELECT data FROM {} WHERE group_key = $1", self.options.chunk_table());
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
            let keep_time = a.name == "time" && (self.time_range.lo != i64::MIN || self.time_range.hi != i64::MAX);
            let keep_ingested = a.name == "ingested_at" && (self.ingested_range.lo != i64::MIN || self.ingested_range.hi != i64::MAX);
            if !(a.needed || keep_time || keep_ingested) {
                columns.push(None);
                continue;
            }
            let Some(pos) = reader.position(&a.name) else {
                columns.push(None); // a column added after compression: NULL
                continue;
            };
            let expected = match a.type_oid {
                pg_sys::TIMESTAMPTZOID => Some(ColumnType::Timestamp),
                pg_sys::INT4OID => Some(ColumnType::Int4),
                pg_sys::INT8OID => Some(ColumnType::Int8),
                pg_sys::FLOAT8OID => Some(ColumnType::Float8),
                pg_sys::TEXTOID => Some(ColumnType::Text),
                pg_sys::FLOAT8ARRAYOID => Some(ColumnType::Float8Array),
                _ => None,
            };
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

fn timestamp_at(col: &Option<ColumnData>, row: usize) -> Option<i64> {
    match col {
        Some(ColumnData::Timestamp(v)) => v.get(row).copied().flatten(),
        _ => None,
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
    unsafe fn fill(&self, st: &ScanState, slot: *mut pg_sys::TupleTableSlot, row: usize) {
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

unsafe fn datum_at(col: &ColumnData, row: usize) -> Option<Datum> {
    unsafe {
        Some(match col {
            ColumnData::Timestamp(v) | ColumnData::Int8(v) => Datum::from((*v.get(row)?)?),
            ColumnData::Int4(v) => Datum::from((*v.get(row)?)?),
            ColumnData::Float8(v) => Datum::from((*v.get(row)?)?.to_bits()),
            ColumnData::Text(v) => {
                let s = v.get(row)?.as_ref()?;
                Datum::from(pg_sys::cstring_to_text_with_len(s.as_ptr() as *const c_char, s.len() as c_int))
            }
            ColumnData::Float8Array(v) => {
                let a = v.get(row)?.as_ref()?;
                if a.is_empty() {
                    Datum::from(pg_sys::construct_empty_array(pg_sys::FLOAT8OID))
                } else {
                    let mut elems: Vec<Datum> = a.iter().map(|e| Datum::from(e.unwrap_or(0.0).to_bits())).collect();
                    let mut isnull: Vec<bool> = a.iter().map(Option::is_none).collect();
                    let mut dims = [a.len() as c_int];
                    let mut lbs = [1 as c_int];
                    Datum::from(pg_sys::construct_md_array(
                        elems.as_mut_ptr(),
                        isnull.as_mut_ptr(),
                        1,
                        dims.as_mut_ptr(),
                        lbs.as_mut_ptr(),
                        pg_sys::FLOAT8OID,
                        8,
                        true,
                        b'd' as c_char,
                    ))
                }
            }
        })
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin_foreign_scan(node: *mut pg_sys::ForeignScanState, eflags: c_int) {
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
            bounds.push(Bound {
                kind: pg_sys::list_nth_int(bound_list, 2 * i),
                strategy: pg_sys::list_nth_int(bound_list, 2 * i + 1),
                expr: pg_sys::list_nth(exprs, i) as *mut pg_sys::ExprState,
            });
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
unsafe extern "C-unwind" fn iterate_foreign_scan(node: *mut pg_sys::ForeignScanState) -> *mut pg_sys::TupleTableSlot {
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
unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    unsafe {
        let st = &mut *((*node).fdw_state as *mut ScanState);
        st.started = false;
        st.current = None;
        st.pending.clear();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn end_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    unsafe {
        if let Some(st) = ((*node).fdw_state as *mut ScanState).as_mut() {
            st.current = None;
            st.pending.clear();
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn explain_foreign_scan(node: *mut pg_sys::ForeignScanState, es: *mut pg_sys::ExplainState) {
    unsafe {
        let relid = (*(*node).ss.ss_currentRelation).rd_id;
        let opts = table_options(relid);
        let label = c"Compressed Chunks";
        let value = CString::new(opts.chunk_table()).unwrap_or_default();
        pg_sys::ExplainPropertyText(label.as_ptr(), value.as_ptr(), es);
        if let Some(st) = ((*node).fdw_state as *mut ScanState).as_ref() {
            if (*es).analyze {
                let read = CString::new(format!("{} of {} listed", st.chunks_read, st.chunks_total)).unwrap_or_default();
                pg_sys::ExplainPropertyText(c"Chunks Read".as_ptr(), read.as_ptr(), es);
            }
        }
    }
}

unsafe fn refuse_change(rinfo: *mut pg_sys::ResultRelInfo, verb: &str) -> ! {
    unsafe {
        let relid = (*(*rinfo).ri_RelationDesc).rd_id;
        let name = pg_sys::get_rel_name(relid);
        let name = if name.is_null() { "?".to_string() } else { CStr::from_ptr(name).to_string_lossy().into_owned() };
        let hint = format!("Decompress the day first: SELECT secumon.decompress_partition('secumon_partitions.{name}');");
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("cannot {verb} rows of compressed partition secumon_partitions.{name}"),
            Some(&hint),
        )
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn exec_foreign_insert(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    _slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    unsafe { refuse_change(rinfo, "insert") }
}

#[pg_guard]
unsafe extern "C-unwind" fn exec_foreign_update(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    _slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    unsafe { refuse_change(rinfo, "update") }
}

#[pg_guard]
unsafe extern "C-unwind" fn exec_foreign_delete(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    _slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    unsafe { refuse_change(rinfo, "delete") }
}

#[pg_guard]
unsafe extern "C-unwind" fn is_parallel_safe(
    _root: *mut pg_sys::PlannerInfo,
    _rel: *mut pg_sys::RelOptInfo,
    _rte: *mut pg_sys::RangeTblEntry,
) -> bool {
    // The scan is never partial (no shared state), so a parallel plan runs it in exactly one
    // process; reading chunks is a read-only query.
    true
}

#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_secumon_compressed_fdw_handler() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// The handler of the `secumon_compressed` foreign-data wrapper.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn secumon_compressed_fdw_handler(_fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    unsafe {
        let routine = pg_sys::palloc0(std::mem::size_of::<pg_sys::FdwRoutine>()) as *mut pg_sys::FdwRoutine;
        (*routine).type_ = NodeTag::T_FdwRoutine;
        (*routine).GetForeignRelSize = Some(get_foreign_rel_size);
        (*routine).GetForeignPaths = Some(get_foreign_paths);
        (*routine).GetForeignPlan = Some(get_foreign_plan);
        (*routine).BeginForeignScan = Some(begin_foreign_scan);
        (*routine).IterateForeignScan = Some(iterate_foreign_scan);
        (*routine).ReScanForeignScan = Some(rescan_foreign_scan);
        (*routine).EndForeignScan = Some(end_foreign_scan);
        (*routine).ExplainForeignScan = Some(explain_foreign_scan);
        (*routine).ExecForeignInsert = Some(exec_foreign_insert);
        (*routine).ExecForeignUpdate = Some(exec_foreign_update);
        (*routine).ExecForeignDelete = Some(exec_foreign_delete);
        (*routine).IsForeignScanParallelSafe = Some(is_parallel_safe);
        Datum::from(routine)
    }
}

extension_sql!(
    r#"
CREATE FUNCTION secumon._compressed_fdw_handler() RETURNS fdw_handler
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'secumon_compressed_fdw_handler';
COMMENT ON FUNCTION secumon._compressed_fdw_handler() IS 'Handler of the secumon_compressed foreign-data wrapper (compressed days of the metric tables).';
CREATE FOREIGN DATA WRAPPER secumon_compressed HANDLER secumon._compressed_fdw_handler;
COMMENT ON FOREIGN DATA WRAPPER secumon_compressed IS 'Reads compressed days of SecuMon''s metric tables from their columnar chunk tables.';
CREATE SERVER secumon_compressed FOREIGN DATA WRAPPER secumon_compressed;
COMMENT ON SERVER secumon_compressed IS 'Server of every compressed partition (secumon_partitions.*_pYYYYMMDD foreign tables).';
"#,
    name = "compressed_fdw"
);
