//! Server-wide settings. Each constant sits beside the setting it names.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Database whose `secumon` extension the background workers serve.
pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// How often the maintenance worker looks for due jobs (seconds).
pub static MAINTENANCE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(5);

/// How often the alert engine evaluates every rule (seconds).
pub static ALERT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(30);

pub fn register() {
    GucRegistry::define_int_guc(
        c"secumon.alert_interval",
        c"How often the alert engine evaluates the alert rules.",
        c"Each cycle reads only the samples ingested since the previous one.",
        &ALERT_INTERVAL,
        1,
        86400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"secumon.database",
        c"Database in which SecuMon's background workers run.",
        c"The workers wait quietly until the secumon extension is installed in this database.",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"secumon.maintenance_interval",
        c"How often the maintenance worker checks for due jobs.",
        c"Each job in secumon.jobs still runs on its own schedule_interval.",
        &MAINTENANCE_INTERVAL,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// The database the workers connect to.
pub fn database() -> String {
    DATABASE
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres".to_string())
}
