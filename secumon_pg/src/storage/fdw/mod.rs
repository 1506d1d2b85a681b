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
//!
//! - `plan`: the planner callbacks, which pick the conditions the scan can use;
//! - `scan`: the executor callbacks, which list the chunks those conditions leave and decode them;
//! - `datum`: decoded column values as PostgreSQL datums.
//!
//! The range arithmetic is plain Rust in `secumon_codec::range`, unit-tested there.

use std::ffi::{CStr, CString};

use pgrx::pg_sys::{self, Datum, NodeTag, Oid};
use pgrx::prelude::*;

use crate::errors::raise;

mod datum;
mod plan;
mod scan;

/// What a pushed-down condition constrains (stored in the plan as an integer).
const KIND_TIME: i32 = 1;
const KIND_INGESTED: i32 = 2;
const KIND_GROUP: i32 = 3;

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

/// The options of foreign table `relid`, as secumon.compress_partition() set them.
///
/// # Safety
/// `relid` must be a foreign table of this wrapper, inside a transaction.
unsafe fn table_options(relid: Oid) -> TableOptions {
    // SAFETY: the caller passes a foreign table; its DefElem options are valid nodes whose names
    // and values are NUL-terminated strings for the life of the relcache entry.
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

#[pg_guard]
unsafe extern "C-unwind" fn explain_foreign_scan(node: *mut pg_sys::ForeignScanState, es: *mut pg_sys::ExplainState) {
    // SAFETY: EXPLAIN passes the scan's own node, with its relation open, and a valid
    // ExplainState; fdw_state is NULL (EXPLAIN without ANALYZE) or the ScanState begin left.
    unsafe {
        let relid = (*(*node).ss.ss_currentRelation).rd_id;
        let opts = table_options(relid);
        let label = c"Compressed Chunks";
        let value = CString::new(opts.chunk_table()).unwrap_or_default();
        pg_sys::ExplainPropertyText(label.as_ptr(), value.as_ptr(), es);
        if let Some(st) = ((*node).fdw_state as *mut scan::ScanState).as_ref() {
            if (*es).analyze {
                let read = CString::new(format!("{} of {} listed", st.chunks_read, st.chunks_total)).unwrap_or_default();
                pg_sys::ExplainPropertyText(c"Chunks Read".as_ptr(), read.as_ptr(), es);
            }
        }
    }
}

/// Raises the error that tells how to change rows of a compressed day.
///
/// # Safety
/// `rinfo` must be the executor's result relation info of the statement.
unsafe fn refuse_change(rinfo: *mut pg_sys::ResultRelInfo, verb: &str) -> ! {
    // SAFETY: the executor passes a valid ResultRelInfo with an open relation; get_rel_name
    // returns NULL or a palloc'd NUL-terminated name.
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
    // SAFETY: the executor passes its own result relation info.
    unsafe { refuse_change(rinfo, "insert") }
}

#[pg_guard]
unsafe extern "C-unwind" fn exec_foreign_update(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    _slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: the executor passes its own result relation info.
    unsafe { refuse_change(rinfo, "update") }
}

#[pg_guard]
unsafe extern "C-unwind" fn exec_foreign_delete(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    _slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: the executor passes its own result relation info.
    unsafe { refuse_change(rinfo, "delete") }
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
    // SAFETY: palloc0 returns zeroed memory of the FdwRoutine's size in the current context,
    // which PostgreSQL keeps for as long as it caches the routine; every field set is a
    // function pointer of the right signature.
    unsafe {
        let routine = pg_sys::palloc0(std::mem::size_of::<pg_sys::FdwRoutine>()) as *mut pg_sys::FdwRoutine;
        (*routine).type_ = NodeTag::T_FdwRoutine;
        (*routine).GetForeignRelSize = Some(plan::get_foreign_rel_size);
        (*routine).GetForeignPaths = Some(plan::get_foreign_paths);
        (*routine).GetForeignPlan = Some(plan::get_foreign_plan);
        (*routine).BeginForeignScan = Some(scan::begin_foreign_scan);
        (*routine).IterateForeignScan = Some(scan::iterate_foreign_scan);
        (*routine).ReScanForeignScan = Some(scan::rescan_foreign_scan);
        (*routine).EndForeignScan = Some(scan::end_foreign_scan);
        (*routine).ExplainForeignScan = Some(explain_foreign_scan);
        (*routine).ExecForeignInsert = Some(exec_foreign_insert);
        (*routine).ExecForeignUpdate = Some(exec_foreign_update);
        (*routine).ExecForeignDelete = Some(exec_foreign_delete);
        (*routine).IsForeignScanParallelSafe = Some(plan::is_parallel_safe);
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
