//! The encoder side of compression: reads one day's partition agent by agent and writes one
//! columnar chunk per agent (see `secumon_codec::chunk`). Orchestration (locks, swapping the
//! heap partition for a foreign one) is SQL in sql/compression.sql.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use secumon_codec::chunk::{self, ColumnData};

use crate::errors::raise;

/// A partition column the codec can store.
pub(crate) struct SourceColumn {
    pub name: String,
    pub type_oid: pg_sys::Oid,
    pub type_name: String,
}

pub(crate) fn empty_column(type_oid: pg_sys::Oid) -> Option<ColumnData> {
    Some(match type_oid {
        pg_sys::TIMESTAMPTZOID => ColumnData::Timestamp(Vec::new()),
        pg_sys::INT4OID => ColumnData::Int4(Vec::new()),
        pg_sys::INT8OID => ColumnData::Int8(Vec::new()),
        pg_sys::FLOAT8OID => ColumnData::Float8(Vec::new()),
        pg_sys::TEXTOID => ColumnData::Text(Vec::new()),
        pg_sys::FLOAT8ARRAYOID => ColumnData::Float8Array(Vec::new()),
        _ => return None,
    })
}

fn columns_of(client: &SpiClient<'_>, relation: pg_sys::Oid, name: &str) -> Vec<SourceColumn> {
    let rows = client
        .select(
            "SELECT attname::text, atttypid, format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            None,
            &[relation.into()],
        )
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("cannot read columns of {name}: {e}"), None));
    rows.map(|row| SourceColumn {
        name: row.get::<String>(1).ok().flatten().unwrap_or_default(),
        type_oid: row.get::<pg_sys::Oid>(2).ok().flatten().unwrap_or(pg_sys::InvalidOid),
        type_name: row.get::<String>(3).ok().flatten().unwrap_or_default(),
    })
    .collect()
}

fn spi_fail(what: &str, e: impl std::fmt::Display) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("compression: {what}: {e}"), None)
}

fn bad_value<T>(e: pgrx::spi::Error) -> T {
    spi_fail("reading a value", e)
}

fn micros(ts: TimestampWithTimeZone) -> i64 {
    pg_sys::TimestampTz::from(ts)
}

fn timestamp(us: Option<i64>) -> Option<TimestampWithTimeZone> {
    us.and_then(|v| TimestampWithTimeZone::try_from(v).ok())
}

/// 0.1.0's `secumon._compress_partition(text, text, text, text)`: relation names as text and
/// the sort columns as one comma-separated list. Not declared by this version's SQL (its update
/// drops it), but the library keeps the symbol, so that a database still at 0.1.0 compresses
/// with this library until `ALTER EXTENSION secumon UPDATE`.
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn _compress_partition(partition: &str, chunk_table: &str, group_column: &str, order_by: &str) -> Vec<i64> {
    let oid = |name: &str| {
        Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::pg_catalog.regclass::pg_catalog.oid", &[name.into()])
            .ok()
            .flatten()
            .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("no relation {name}"), None))
    };
    _compress_partition_into(
        oid(partition),
        oid(chunk_table),
        group_column,
        order_by.split(',').map(str::to_string).collect(),
    )
}

/// The name of relation `oid`, quoted and schema-qualified as SQL text needs it.
fn relation_name(oid: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::pg_catalog.regclass::text", &[oid.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("no relation with oid {}", u32::from(oid)), None))
}

/// Encodes every row of `partition` into `chunk_table`, one chunk per distinct value of
/// `group_column` (the agent), rows ordered by the columns `order_by` within a chunk. Every name
/// reaches the SQL it builds quoted as an identifier. Returns {rows, values}: values counts the
/// non-NULL elements of float8[] columns (the samples of metric_samples), or rows when there is
/// none.
#[pg_extern(volatile, parallel_unsafe)]
fn _compress_partition_into(
    partition: pg_sys::Oid,
    chunk_table: pg_sys::Oid,
    group_column: &str,
    order_by: Vec<String>,
) -> Vec<i64> {
    let (partition_oid, partition, chunk_table) = (partition, relation_name(partition), relation_name(chunk_table));
    let order_by = order_by.iter().map(|c| pgrx::spi::quote_identifier(c.trim())).collect::<Vec<_>>().join(", ");
    let (columns, groups) = Spi::connect(|client| {
        let columns = columns_of(client, partition_oid, &partition);
        for c in &columns {
            if empty_column(c.type_oid).is_none() {
                raise(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("cannot compress column \"{}\" of type {}", c.name, c.type_name),
                    Some("Compressed columns may be timestamptz, integer, bigint, float8, text or float8[]."),
                );
            }
        }
        let group = pgrx::spi::quote_identifier(group_column);
        let groups: Vec<String> = client
            .select(&format!("SELECT DISTINCT {group}::text FROM {partition} WHERE {group} IS NOT NULL"), None, &[])
            .unwrap_or_else(|e| spi_fail("listing agents", e))
            .filter_map(|row| row.get::<String>(1).ok().flatten())
            .collect();
        (columns, groups)
    });
    let Some(group_col) = columns.iter().find(|c| c.name == group_column) else {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("{partition} has no column \"{group_column}\" to group chunks by"),
            None,
        )
    };
    let time_at = columns.iter().position(|c| c.name == "time");
    let ingested_at = columns.iter().position(|c| c.name == "ingested_at");
    let select = format!(
        "SELECT {} FROM {partition} WHERE {} = $1::text::{} ORDER BY {order_by}",
        columns.iter().map(|c| pgrx::spi::quote_identifier(&c.name)).collect::<Vec<_>>().join(", "),
        pgrx::spi::quote_identifier(group_column),
        group_col.type_name,
    );
    let insert = format!(
        "INSERT INTO {chunk_table} (group_key, row_count, time_min, time_max, ingested_min, ingested_max, data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    );
    let mut total = 0i64;
    let mut values = 0i64;
    let has_array = columns.iter().any(|c| c.type_oid == pg_sys::FLOAT8ARRAYOID);
    for key in groups {
        // One SPI connection per agent: its result set is freed before the next agent is read.
        let (rows, vals) = Spi::connect_mut(|client| {
            let mut cols: Vec<ColumnData> = columns.iter().map(|c| empty_column(c.type_oid).expect("checked")).collect();
            let rows = client.select(&select, None, &[key.as_str().into()]).unwrap_or_else(|e| spi_fail("reading rows", e));
            let mut n = 0usize;
            for row in rows {
                n += 1;
                for (i, col) in cols.iter_mut().enumerate() {
                    let at = i + 1;
                    match col {
                        ColumnData::Timestamp(v) => v.push(row.get::<TimestampWithTimeZone>(at).unwrap_or_else(bad_value).map(micros)),
                        ColumnData::Int4(v) => v.push(row.get::<i32>(at).unwrap_or_else(bad_value)),
                        ColumnData::Int8(v) => v.push(row.get::<i64>(at).unwrap_or_else(bad_value)),
                        ColumnData::Float8(v) => v.push(row.get::<f64>(at).unwrap_or_else(bad_value)),
                        ColumnData::Text(v) => v.push(row.get::<String>(at).unwrap_or_else(bad_value)),
                        ColumnData::Float8Array(v) => {
                            v.push(row.get::<Array<f64>>(at).unwrap_or_else(bad_value).map(|a| a.iter().collect()))
                        }
                    }
                }
            }
            let named: Vec<(&str, &ColumnData)> = columns.iter().map(|c| c.name.as_str()).zip(cols.iter()).collect();
            let data = chunk::encode(&named);
            let range = |at: Option<usize>| -> (Option<i64>, Option<i64>) {
                match at.map(|i| &cols[i]) {
                    Some(ColumnData::Timestamp(v)) => (v.iter().flatten().min().copied(), v.iter().flatten().max().copied()),
                    _ => (None, None),
                }
            };
            let (tmin, tmax) = range(time_at);
            let (imin, imax) = range(ingested_at);
            client
                .update(
                    &insert,
                    None,
                    &[
                        key.as_str().into(),
                        (n as i32).into(),
                        timestamp(tmin).into(),
                        timestamp(tmax).into(),
                        timestamp(imin).into(),
                        timestamp(imax).into(),
                        data.as_slice().into(),
                    ],
                )
                .unwrap_or_else(|e| spi_fail("writing a chunk", e));
            let vals: usize = cols
                .iter()
                .map(|c| match c {
                    ColumnData::Float8Array(v) => v.iter().flatten().map(|a| a.iter().flatten().count()).sum(),
                    _ => 0,
                })
                .sum();
            (n as i64, vals as i64)
        });
        total += rows;
        values += if has_array { vals } else { rows };
    }
    vec![total, values]
}
