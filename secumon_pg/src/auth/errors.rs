//! The errors the auth module raises. Authentication failures carry one generic message each, so
//! an attacker learns nothing about which check failed; the reason goes to the server log only.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// Set just before raising an error whose statement may hold a password.
    static HIDE_NEXT_STATEMENT: Cell<bool> = const { Cell::new(false) };
}

static mut PREVIOUS_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// Installs the log hook below; call from _PG_init (in every backend that loads the library).
pub fn install_log_hook() {
    // SAFETY: _PG_init runs once per backend, single-threaded, before any statement: nothing else
    // reads or writes emit_log_hook meanwhile, and the previous hook is chained, not lost.
    unsafe {
        PREVIOUS_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(hide_secrets);
    }
}

/// PostgreSQL logs the statement of a failed query (log_min_error_statement) and, with
/// log_parameter_max_length_on_error, its parameters: for a refused login that is the password
/// tried, for a refused token the token. Authentication errors (28000, 28P01), password policy
/// errors and the auth module's own log lines are logged without statement and context.
#[pg_guard]
unsafe extern "C-unwind" fn hide_secrets(edata: *mut pg_sys::ErrorData) {
    // SAFETY: PostgreSQL calls the hook with a valid ErrorData (or NULL, which as_mut() turns into
    // None) on the backend's only thread; the previous hook is called with the same pointer.
    unsafe {
        if let Some(e) = edata.as_mut() {
            // The flag is set right before the message it is for, so this is that message.
            let flagged = HIDE_NEXT_STATEMENT.replace(false);
            let code = e.sqlerrcode;
            let auth_error = e.elevel >= pg_sys::PGERROR as i32
                && (code == PgSqlErrorCode::ERRCODE_INVALID_PASSWORD as i32
                    || code == PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION as i32);
            if flagged || auth_error {
                e.hide_stmt = true;
                e.hide_ctx = true;
            }
        }
        if let Some(previous) = PREVIOUS_EMIT_LOG_HOOK {
            previous(edata);
        }
    }
}

/// Raises `report` with its statement kept out of the server log (it may hold a password).
pub fn raise_hiding_statement(report: ErrorReport) -> ! {
    HIDE_NEXT_STATEMENT.set(true);
    crate::errors::raise_report(report)
}

/// Message of every refused login (unknown user, wrong password, inactive, throttled).
pub const LOGIN_FAILED: &str = "invalid username or password";

/// Message of every refused token (expired, bad signature, wrong issuer, revoked, malformed...).
pub const TOKEN_INVALID: &str = "invalid or expired token";

/// Raises SQLSTATE 28P01 with the generic login message.
pub fn login_failed() -> ! {
    crate::errors::raise_report(
        ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PASSWORD, LOGIN_FAILED, "secumon.login")
            .set_hint("Check the username and password. After repeated failures logins are refused for a while."),
    )
}

/// Raises SQLSTATE 28000 with the generic token message.
pub fn token_invalid() -> ! {
    crate::errors::raise_report(
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
    crate::errors::raise_report(ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, "secumon.auth").set_hint(hint))
}

/// A line for the server log only; never sent to the client, whatever client_min_messages says.
pub fn server_log(message: String) {
    // Logged from inside login() or verify_token(): the statement may hold the password or token.
    HIDE_NEXT_STATEMENT.set(true);
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
