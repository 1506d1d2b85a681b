//! Decoded column values as PostgreSQL datums.

use std::ffi::{c_char, c_int};

use pgrx::pg_sys::{self, Datum, Oid};
use secumon_codec::chunk::{ColumnData, ColumnType};

/// The chunk column type that stores a column of PostgreSQL type `type_oid`.
pub(super) fn column_type(type_oid: Oid) -> Option<ColumnType> {
    match type_oid {
        pg_sys::TIMESTAMPTZOID => Some(ColumnType::Timestamp),
        pg_sys::INT4OID => Some(ColumnType::Int4),
        pg_sys::INT8OID => Some(ColumnType::Int8),
        pg_sys::FLOAT8OID => Some(ColumnType::Float8),
        pg_sys::TEXTOID => Some(ColumnType::Text),
        pg_sys::FLOAT8ARRAYOID => Some(ColumnType::Float8Array),
        _ => None,
    }
}

/// Row `row` of a timestamp column, in PostgreSQL microseconds.
pub(super) fn timestamp_at(col: &Option<ColumnData>, row: usize) -> Option<i64> {
    match col {
        Some(ColumnData::Timestamp(v)) => v.get(row).copied().flatten(),
        _ => None,
    }
}

/// Row `row` of `col` as a datum; pass-by-reference values are palloc'd in the current memory
/// context.
///
/// # Safety
/// Must run in a backend, in a memory context that outlives the datum's use.
pub(super) unsafe fn datum_at(col: &ColumnData, row: usize) -> Option<Datum> {
    // SAFETY: cstring_to_text_with_len copies `len` bytes of a live &str; construct_md_array
    // copies the element and null arrays, which outlive the call, for a one-dimensional float8
    // array (8 bytes, by value, double-aligned).
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

