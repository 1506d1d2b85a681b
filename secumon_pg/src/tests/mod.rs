//! `#[pg_test]`s, one file per capability, plus helpers they share.

mod abuse_tests;
mod alerting_tests;
mod notify_tests;
mod auth_tests;
mod storage_tests;
mod lifecycle_tests;
mod query_tests;
mod restore_tests;
mod tenancy_tests;

use pgrx::prelude::*;

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
