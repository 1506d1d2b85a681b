//! The errors the auth module raises. Authentication failures carry one generic message each, so
//! an attacker learns nothing about which check failed; the reason goes to the server log only.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Message of every refused login (unknown user, wrong password, inactive, throttled).
pub const LOGIN_FAILED: &str = "invalid username or password";

/// Message of every refused token (expired, bad signature, wrong issuer, revoked, malformed...).
pub const TOKEN_INVALID: &str = "invalid or expired token";

/// Raises SQLSTATE 28P01 with the generic login message.
pub fn login_failed() -> ! {
    raise(
        ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PASSWORD, LOGIN_FAILED, "secumon.login")
            .set_hint("Check the username and password. After repeated failures logins are refused for a while."),
    )
}

/// Raises SQLSTATE 28000 with the generic token message.
pub fn token_invalid() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            TOKEN_INVALID,
            "secumon.verify_token",
        )
        .set_hint("Log in again with secumon.login(), or get a new token with secumon.refresh()."),
    )
}

/// Raises SQLSTATE 22023 (invalid_parameter_value) with a hint.
pub fn invalid_parameter(message: String, hint: &str) -> ! {
    raise(ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, "secumon.auth").set_hint(hint))
}

/// Raises an internal error with a SQLSTATE other than XX000 where the user can act.
pub fn raise(report: ErrorReport) -> ! {
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// A line for the server log only; never sent to the client, whatever client_min_messages says.
pub fn server_log(message: String) {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, message, "secumon.auth")
        .report(PgLogLevel::LOG_SERVER_ONLY);
}

/// For sql/auth.sql: raises the generic login error.
#[pg_extern(volatile, parallel_safe)]
fn _raise_login_failed() {
    login_failed()
}

/// For sql/auth.sql: raises the generic token error.
#[pg_extern(volatile, parallel_safe)]
fn _raise_token_invalid() {
    token_invalid()
}
