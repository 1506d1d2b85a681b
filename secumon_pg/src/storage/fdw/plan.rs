//! Planner callbacks: the size estimate, the one path, and the plan that carries the
//! conditions the scan can use to skip chunks (`column <op> expression`, with `<op>` a btree
//! comparison of the column's type) and the columns it must decode.

use std::ffi::{c_void, CString};
use std::ptr::null_mut;

use pgrx::pg_sys::{self, List, Node, NodeTag, Oid};
use pgrx::prelude::*;
use secumon_codec::range::Strategy;

use super::{table_options, KIND_GROUP, KIND_INGESTED, KIND_TIME};

/// Whether `node` is a node of type `tag`.
///
/// # Safety
/// `node` must be NULL or point to a valid node.
unsafe fn is_tag(node: *mut Node, tag: NodeTag) -> bool {
    // SAFETY: the caller passes NULL (checked first) or a valid node.
    unsafe { !node.is_null() && (*node).type_ == tag }
}

/// The attribute number of column `name` of `relid`, or InvalidAttrNumber.
fn attnum(relid: Oid, name: &str) -> i16 {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: get_attnum reads the syscache for any relation id and a NUL-terminated name.
    unsafe { pg_sys::get_attnum(relid, c.as_ptr()) }
}

/// The btree strategy of operator `opno` in the default btree operator family of `type_oid`:
/// which comparison it is, whatever it is named. None when it is no comparison of that family.
fn btree_strategy(opno: Oid, type_oid: Oid) -> Option<Strategy> {
    // SAFETY: catalog lookups by OID; an unknown OID gives InvalidOid or 0, never an error.
    let number = unsafe {
        let opclass = pg_sys::GetDefaultOpClass(type_oid, pg_sys::BTREE_AM_OID);
        if opclass == pg_sys::InvalidOid {
            return None;
        }
        pg_sys::get_op_opfamily_strategy(opno, pg_sys::get_opclass_family(opclass))
    };
    Strategy::from_btree(number)
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn get_foreign_rel_size(root: *mut pg_sys::PlannerInfo, baserel: *mut pg_sys::RelOptInfo, relid: Oid) {
    // SAFETY: the planner passes its own PlannerInfo and the foreign table's RelOptInfo.
    unsafe {
        let opts = table_options(relid);
        let sel = pg_sys::clauselist_selectivity(root, (*baserel).baserestrictinfo, 0, pg_sys::JoinType::JOIN_INNER, null_mut());
        (*baserel).tuples = opts.rows;
        (*baserel).rows = (opts.rows * sel).max(1.0);
    }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn get_foreign_paths(root: *mut pg_sys::PlannerInfo, baserel: *mut pg_sys::RelOptInfo, _relid: Oid) {
    // SAFETY: as in get_foreign_rel_size; the path is allocated by the planner's own function.
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

/// A pushed-down condition `column <strategy> expression`: (kind, strategy, expression).
///
/// # Safety
/// `clause` must be a valid expression node of the plan being built.
unsafe fn classify(clause: *mut Node, relid: u32, time_att: i16, ingested_att: i16, group_att: i16) -> Option<(i32, Strategy, *mut Node)> {
    // SAFETY: every node is tested for its type before it is cast; an OpExpr with two arguments
    // has two valid argument nodes.
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
        let strategy = btree_strategy((*op).opno, vtype)?;
        let strategy = if flipped { strategy.commuted() } else { strategy };
        match kind {
            KIND_TIME | KIND_INGESTED if vtype == pg_sys::TIMESTAMPTZOID => Some((kind, strategy, other)),
            KIND_GROUP if strategy == Strategy::Equal && (vtype == pg_sys::INT4OID || vtype == pg_sys::TEXTOID) => Some((kind, strategy, other)),
            _ => None,
        }
    }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn get_foreign_plan(
    _root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    relid: Oid,
    _best_path: *mut pg_sys::ForeignPath,
    tlist: *mut List,
    scan_clauses: *mut List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    // SAFETY: the planner passes valid nodes and lists; lists are read within their lengths and
    // new ones are built with PostgreSQL's own list functions in the planner's memory context.
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
                bounds = pg_sys::lappend_int(bounds, strategy.btree());
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

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn is_parallel_safe(
    _root: *mut pg_sys::PlannerInfo,
    _rel: *mut pg_sys::RelOptInfo,
    _rte: *mut pg_sys::RangeTblEntry,
) -> bool {
    // The scan is never partial (no shared state), so a parallel plan runs it in exactly one
    // process; reading chunks is a read-only query.
    true
}

