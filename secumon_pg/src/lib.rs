//! SecuMon: infrastructure monitoring inside PostgreSQL.
//!
//! This file only wires things together: the SQL files, the settings (GUCs) and the
//! background workers. Each capability lives in its own module.

use pgrx::prelude::*;

mod alerting;
mod auth;
mod background;
mod errors;
mod gucs;
mod notify;
mod query;
mod scheduler;
mod storage;
mod worker;

::pgrx::pg_module_magic!(name, version);

// The hand-written schema. Order matters: later files use earlier objects.
extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../../sql/storage.sql", name = "storage", requires = ["schema"]);
extension_sql_file!("../../sql/jobs.sql", name = "jobs", requires = ["storage", background::_worker_lock_waits]);
extension_sql_file!(
    "../../sql/auth.sql",
    name = "auth",
    requires = [
        "jobs",
        auth::cache::_invalidate_auth_cache,
        auth::keys::_generate_jwt_key,
        auth::identity::current_tenant,
        auth::identity::current_user_id,
        auth::identity::current_secumon_role,
        auth::identity::_rls_open,
        auth::identity::_rls_bypassed,
        auth::identity::_refuse_tenant_writes,
        auth::identity::_rls_may_write,
        auth::tenancy::_agent_key_visible,
        auth::tenancy::_agent_id_visible,
    ]
);
extension_sql_file!("../../sql/alerting.sql", name = "alerting", requires = ["jobs", "auth"]);
extension_sql_file!("../../sql/notify.sql", name = "notify", requires = ["alerting"]);
extension_sql_file!(
    "../../sql/lifecycle.sql",
    name = "lifecycle",
    requires = [
        "jobs",
        "auth",
        "rollup_aggregates",
        "compressed_fdw",
        auth::tenancy::_layout_id_visible,
        auth::tenancy::_series_id_visible,
    ]
);
extension_sql_file!("../../sql/query.sql", name = "query", requires = ["lifecycle", query::lttb]);
extension_sql_file!("../../sql/limits.sql", name = "limits", requires = ["notify", "lifecycle"]);
extension_sql_file!("../../sql/enroll.sql", name = "enroll", requires = ["storage", "auth", "limits"]);
extension_sql_file!("../../sql/privileges.sql", name = "privileges", finalize);

#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::register();
    auth::init();
    // Workers can only be registered while the library is preloaded by the postmaster.
    // SAFETY: a backend global set by the postmaster while it loads shared_preload_libraries; read
    // only.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register_all();
        background::init_shared_memory();
        auth::init_shared_memory();
        notify::init_shared_memory();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'secumon'"]
    }
}
