//! Raising PostgreSQL errors: every refused call ends here, with a SQLSTATE a DBA can act on
//! (docs/sql-reference.md lists them). Auth adds its generic, log-hiding errors on top
//! (`auth::errors`).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Raises `report` as an ERROR: PostgreSQL unwinds to the caller's transaction, so this never
/// returns.
pub(crate) fn raise_report(report: ErrorReport) -> ! {
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// Raises an ERROR with a SQLSTATE, a message and an optional hint.
pub(crate) fn raise(code: PgSqlErrorCode, message: String, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message, function_name!());
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    raise_report(report)
}
