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
// Storage, in this order: indexes and the timescaledb backend, daily partitions, the write path.
extension_sql_file!("../../sql/storage.sql", name = "storage_backends", requires = ["schema"]);
extension_sql_file!("../../sql/partitions.sql", name = "partitions", requires = ["storage_backends"]);
extension_sql_file!("../../sql/ingest.sql", name = "storage", requires = ["partitions"]);
extension_sql_file!("../../sql/jobs.sql", name = "jobs", requires = ["storage", background::_worker_lock_waits]);
extension_sql_file!(
    "../../sql/auth.sql",
    name = "auth_users",
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
extension_sql_file!("../../sql/tenancy.sql", name = "auth", requires = ["auth_users"]);
// Alerting, in this order: rules, the samples the engine reads, the engine, the operator API;
// after the storage lifecycle and the query helpers the engine uses (secumon._counter_delta_f).
extension_sql_file!("../../sql/alerting.sql", name = "alert_rules", requires = ["jobs", "auth", "query"]);
extension_sql_file!("../../sql/alert_samples.sql", name = "alert_samples", requires = ["alert_rules"]);
extension_sql_file!("../../sql/alert_engine.sql", name = "alert_engine", requires = ["alert_samples"]);
extension_sql_file!("../../sql/alert_api.sql", name = "alerting", requires = ["alert_engine"]);
extension_sql_file!("../../sql/notify.sql", name = "notify", requires = ["alerting"]);
// The storage lifecycle, in this order (docs/storage.md).
extension_sql_file!(
    "../../sql/series.sql",
    name = "series",
    requires = [
        "jobs",
        "auth",
        "rollup_aggregates",
        "compressed_fdw",
        auth::tenancy::_layout_id_visible,
        auth::tenancy::_series_id_visible,
    ]
);
extension_sql_file!("../../sql/rollups.sql", name = "rollups", requires = ["series"]);
extension_sql_file!("../../sql/rollup_views.sql", name = "rollup_views", requires = ["rollups"]);
extension_sql_file!("../../sql/compression.sql", name = "compression", requires = ["rollup_views"]);
extension_sql_file!("../../sql/retention.sql", name = "retention", requires = ["compression"]);
extension_sql_file!("../../sql/lifecycle.sql", name = "lifecycle", requires = ["retention"]);
extension_sql_file!("../../sql/query.sql", name = "query_functions", requires = ["lifecycle", query::lttb]);
extension_sql_file!("../../sql/endpoints.sql", name = "query", requires = ["query_functions"]);
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
