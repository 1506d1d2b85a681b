//! `#[pg_test]`s, one file per capability, plus helpers they share.

mod abuse_tests;
// The history the end-to-end tests store too (one generator for both).
#[allow(dead_code)] // the end-to-end shape is the other crate's
#[path = "../../../tests/src/history.rs"]
pub(crate) mod history;
mod alerting_tests;
mod notify_tests;
mod auth_tests;
mod storage_tests;
mod lifecycle_tests;
mod query_tests;
mod restore_tests;
mod tenancy_tests;

use pgrx::prelude::*;

/// Runs `sql`, panicking with the statement and the error if it fails.
pub(crate) fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("`{sql}` failed: {e}"));
}

/// The one text value `sql` returns (NULL is a failure).
pub(crate) fn text(sql: &str) -> String {
    Spi::get_one::<String>(sql)
        .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
        .unwrap_or_else(|| panic!("`{sql}` returned NULL"))
}

/// The one count `sql` returns (-1 for NULL).
pub(crate) fn count(sql: &str) -> i64 {
    Spi::get_one::<i64>(sql)
        .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
        .unwrap_or(-1)
}

pub(crate) fn lit(s: &str) -> String {
    pgrx::spi::quote_literal(s)
}

/// Creates pg_temp.error_of(sql), which [`error_of`] calls.
pub(crate) fn install_error_catcher() {
    run("CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$ \
         BEGIN EXECUTE q; RETURN 'ok'; \
         EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$");
}

/// "SQLSTATE: message" of the error `sql` raises, or "ok" (its effects stay when it
/// succeeds). Needs [`install_error_catcher`] first.
pub(crate) fn error_of(sql: &str) -> String {
    text(&format!("SELECT pg_temp.error_of({})", lit(sql)))
}

/// Runs `sql` and asserts that it fails with `sqlstate`.
pub(crate) fn expect_sqlstate(sql: &str, sqlstate: &str) {
    let block = format!(
        "DO $expect$ BEGIN EXECUTE {sql}; RAISE EXCEPTION 'statement succeeded, expected SQLSTATE {sqlstate}'; \
         EXCEPTION WHEN OTHERS THEN IF SQLSTATE <> '{sqlstate}' THEN RAISE; END IF; END $expect$",
        sql = pgrx::spi::quote_literal(sql),
    );
    if let Err(e) = Spi::run(&block) {
        panic!("`{sql}` should fail with SQLSTATE {sqlstate}: {e}");
    }
}
