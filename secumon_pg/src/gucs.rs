//! Server-wide settings. Each constant sits beside the setting it names.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::ffi::{c_char, c_void, CStr};
use std::ffi::CString;

/// Longest wait of a background worker's transaction for a lock another session holds (ms).
/// Read by SQL (secumon._bound_lock_wait) and by the workers (background.rs); registered here so
/// that it is documented and checked.
pub static MAINTENANCE_LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(100);

/// Database whose `secumon` extension the background workers serve.
pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// How far before the server's time a sample's time may be (seconds): 365 days.
pub static INGEST_WINDOW_PAST: GucSetting<i32> = GucSetting::<i32>::new(365 * 86_400);

/// How far after the server's time a sample's time may be (seconds): 1 day.
pub static INGEST_WINDOW_FUTURE: GucSetting<i32> = GucSetting::<i32>::new(86_400);

/// Most distinct series one agent may store (host, custom and probe series together).
pub static MAX_SERIES_PER_AGENT: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// How often the maintenance worker looks for due jobs (seconds).
pub static MAINTENANCE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(5);

/// How often the alert engine evaluates every rule (seconds).
pub static ALERT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(30);

pub fn register() {
    crate::notify::gucs::register();
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
    GucRegistry::define_int_guc(
        c"secumon.maintenance_lock_timeout",
        c"Longest wait of a maintenance job or background worker for a lock another session holds.",
        c"A job that would wait longer gives way (secumon.jobs.waiting_since) and is tried again a few seconds later, so it never queues ingestion behind a long reader; a worker gives way and retries likewise (secumon.health()).",
        &MAINTENANCE_LOCK_TIMEOUT,
        1,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    // Superuser-only: an agent must not widen its own window; a superuser may for one session
    // (a back-fill), while maintenance keeps the server's.
    GucRegistry::define_int_guc(
        c"secumon.ingest_window_past",
        c"How far before the server's time a sample's time may be.",
        c"Older reports are refused (SQLSTATE 22008); a clock set years back would otherwise create partitions for them.",
        &INGEST_WINDOW_PAST,
        60,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"secumon.ingest_window_future",
        c"How far after the server's time a sample's time may be.",
        c"Later reports are refused (SQLSTATE 22008); a clock set to the year 294276 would otherwise break partition upkeep.",
        &INGEST_WINDOW_FUTURE,
        60,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    // Superuser-only, like the sample window: an agent must not lift its own cap.
    GucRegistry::define_int_guc(
        c"secumon.max_series_per_agent",
        c"Most distinct series one agent may store.",
        c"A report that would take an agent past it is refused (SQLSTATE 54000); the agent keeps sending the series it had. Guards the database against label explosions.",
        &MAX_SERIES_PER_AGENT,
        100,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    register_auth();
}

/// The sample times ingestion accepts now: from `secumon.ingest_window_past` before the
/// transaction's start to `secumon.ingest_window_future` after it (sql/ingest.sql).
#[pgrx::pg_extern(stable, parallel_safe)]
fn _sample_window() -> pgrx::iter::TableIterator<
    'static,
    (pgrx::name!(oldest, pgrx::datum::TimestampWithTimeZone), pgrx::name!(newest, pgrx::datum::TimestampWithTimeZone)),
> {
    // SAFETY: reads the transaction start time; always set inside a transaction.
    let now: i64 = unsafe { pgrx::pg_sys::GetCurrentTransactionStartTimestamp() };
    let seconds = |setting: &GucSetting<i32>| i64::from(setting.get().max(0)) * 1_000_000;
    // Both GUCs are below 2^31 seconds, so neither bound leaves timestamptz's range.
    let at = |micros: i64| {
        pgrx::datum::TimestampWithTimeZone::try_from(micros)
            .unwrap_or_else(|_| pgrx::datum::TimestampWithTimeZone::positive_infinity())
    };
    pgrx::iter::TableIterator::once((
        at(now.saturating_sub(seconds(&INGEST_WINDOW_PAST))),
        at(now.saturating_add(seconds(&INGEST_WINDOW_FUTURE))),
    ))
}

/// secumon.max_series_per_agent, read from the registered setting (a placeholder a session set
/// before the library was loaded cannot stand in for it).
#[pgrx::pg_extern(stable, parallel_safe)]
fn _max_series_per_agent() -> i32 {
    MAX_SERIES_PER_AGENT.get()
}

/// The database the workers connect to.
pub fn database() -> String {
    DATABASE
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres".to_string())
}

// ---- Authentication (sql/auth.sql, src/auth/). Every setting is superuser-only (SUSET): a
// ---- session must not be able to loosen its own authentication or throttling.

/// Whether sessions without a verified identity see no tenant data (the seed's JWT_ENABLED).
pub static AUTH_REQUIRED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// HS256 signing key; when unset, keys come from secumon._jwt_keys. Never shown to non-superusers.
pub static JWT_SECRET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Lifetime of an access token (seconds).
pub static TOKEN_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(24 * 3600);

/// Lifetime of a refresh token (seconds).
pub static REFRESH_TOKEN_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(30 * 24 * 3600);

/// bcrypt cost of new password hashes.
pub static BCRYPT_COST: GucSetting<i32> = GucSetting::<i32>::new(10);

/// Shortest password accepted when a password is set.
pub static PASSWORD_MIN_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(8);

/// Failed logins of one account, within the window, that lock it.
pub static LOGIN_MAX_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(5);

/// Failed logins from one client address, within the window, that lock the address.
pub static LOGIN_MAX_FAILURES_PER_ADDRESS: GucSetting<i32> = GucSetting::<i32>::new(20);

/// Window in which failures count, and how long a lock lasts (seconds).
pub static LOGIN_FAILURE_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(900);

/// Connection sources whose `client_addr` argument to secumon.login() is believed.
pub static TRUSTED_PROXIES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// Internal: handle of the session's verified identity, set only by secumon.authenticate().
pub static SESSION_IDENTITY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
pub const SESSION_IDENTITY_NAME: &std::ffi::CStr = c"secumon.session_identity";

/// Shortest accepted `secumon.jwt_secret`, in bytes (HS256 wants at least its 256-bit output).
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether a value of `secumon.jwt_secret` from `source` would be stored where other roles can
/// read it: `ALTER ROLE/DATABASE ... SET` (pg_db_role_setting, shown in pg_roles.rolconfig to
/// everyone) and a function's `SET` clause (pg_proc.proconfig). PostgreSQL checks those
/// commands' values with source PGC_S_TEST, and applies stored ones at connection start with
/// the database and role sources. The configuration file and `ALTER SYSTEM` (PGC_S_FILE), the
/// postmaster's command line and a superuser's own `SET` remain.
fn readable_by_others(source: pg_sys::GucSource::Type) -> bool {
    use pg_sys::GucSource::*;
    matches!(source, PGC_S_GLOBAL | PGC_S_DATABASE | PGC_S_USER | PGC_S_DATABASE_USER | PGC_S_TEST)
}

/// Check hook of `secumon.jwt_secret`: refuses secrets shorter than 32 bytes, and any secret
/// from a source that other roles can read (see [`readable_by_others`]); unsetting is always
/// allowed, so a stored copy can be removed. The messages never repeat the value (PostgreSQL's
/// default message would).
#[pg_guard]
pub unsafe extern "C-unwind" fn check_jwt_secret(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the proposed value, itself NULL or a NUL-
    // terminated string it owns for the duration of the call.
    let len = unsafe {
        match newval.as_ref().filter(|v| !v.is_null()) {
            Some(v) => CStr::from_ptr(*v).to_bytes().len(),
            None => 0,
        }
    };
    if len > 0 && readable_by_others(source) {
        // SAFETY: a check hook may set these (the GUC_check_errmsg macros do the same); pstrdup
        // copies the static strings into the current memory context, where PostgreSQL frees them.
        unsafe {
            pg_sys::GUC_check_errcode(PgSqlErrorCode::ERRCODE_CANT_CHANGE_RUNTIME_PARAM as i32);
            pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(
                c"secumon.jwt_secret can only be set in the configuration file or with ALTER SYSTEM".as_ptr(),
            );
            pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(
                c"ALTER ROLE ... SET, ALTER DATABASE ... SET and a function's SET clause store the value where every role can read it (pg_roles.rolconfig, pg_db_role_setting, pg_proc.proconfig)."
                    .as_ptr(),
            );
            pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(
                c"Run ALTER SYSTEM SET secumon.jwt_secret = '...' and SELECT pg_reload_conf(). Remove a stored copy with ALTER ROLE ... RESET secumon.jwt_secret or ALTER DATABASE ... RESET secumon.jwt_secret, and choose a new secret: the old one was readable."
                    .as_ptr(),
            );
        }
        return false;
    }
    if len == 0 || len >= MIN_SECRET_BYTES {
        return true;
    }
    // SAFETY: as above.
    unsafe {
        pg_sys::GUC_check_errmsg_string =
            pg_sys::pstrdup(c"secumon.jwt_secret must be at least 32 bytes long".as_ptr());
        pg_sys::GUC_check_errhint_string =
            pg_sys::pstrdup(c"Use 32 or more random bytes, e.g. the output of: openssl rand -base64 48".as_ptr());
    }
    false
}

fn register_auth() {
    GucRegistry::define_bool_guc(
        c"secumon.auth_required",
        c"Whether sessions without a verified SecuMon identity see no tenant data.",
        c"Off: unauthenticated sessions see every tenant (within their table privileges).",
        &AUTH_REQUIRED,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook only reads its argument and sets PostgreSQL's GUC_check_* strings.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"secumon.jwt_secret",
            c"Key that signs SecuMon access tokens (HS256); at least 32 bytes.",
            c"Unset: a generated 256-bit key from secumon._jwt_keys is used (see secumon.rotate_jwt_secret()).",
            &JWT_SECRET,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            Some(check_jwt_secret),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"secumon.token_lifetime",
        c"Lifetime of SecuMon access tokens.",
        c"",
        &TOKEN_LIFETIME,
        60,
        30 * 24 * 3600,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"secumon.refresh_token_lifetime",
        c"Lifetime of SecuMon refresh tokens.",
        c"",
        &REFRESH_TOKEN_LIFETIME,
        300,
        365 * 24 * 3600,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"secumon.bcrypt_cost",
        c"bcrypt cost (log2 rounds) of new password hashes.",
        c"Older hashes are upgraded at the next successful login.",
        &BCRYPT_COST,
        10,
        20,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"secumon.password_min_length",
        c"Shortest password (in characters) accepted when a password is set.",
        c"Passwords are at most 72 bytes (bcrypt's limit).",
        &PASSWORD_MIN_LENGTH,
        1,
        72,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"secumon.login_max_failures",
        c"Failed logins of one account within secumon.login_failure_window that lock it.",
        c"A locked account is refused, with the same generic error, until the window has passed.",
        &LOGIN_MAX_FAILURES,
        1,
        100000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"secumon.login_max_failures_per_address",
        c"Failed logins from one client address within secumon.login_failure_window that lock the address.",
        c"IPv6 clients count per /64. Connections over a Unix socket have no address.",
        &LOGIN_MAX_FAILURES_PER_ADDRESS,
        1,
        1000000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"secumon.login_failure_window",
        c"Window in which failed logins count, and how long a lock lasts.",
        c"",
        &LOGIN_FAILURE_WINDOW,
        1,
        7 * 24 * 3600,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"secumon.trusted_proxies",
        c"Connection sources whose client_addr argument to secumon.login() is believed.",
        c"Comma-separated CIDRs, and \"local\" for Unix-socket connections. Empty: throttle by the connection's own address.",
        &TRUSTED_PROXIES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        SESSION_IDENTITY_NAME,
        c"Internal: handle of the session's verified identity.",
        c"Set only by secumon.authenticate(); a handle that secumon.authenticate() did not issue in this session means no identity.",
        &SESSION_IDENTITY,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL | GucFlags::DISALLOW_IN_FILE | GucFlags::DISALLOW_IN_AUTO_FILE,
    );
}
