//! The session's verified identity, and the functions row-level security policies call.
//!
//! `secumon.authenticate(token)` verifies a token and records the identity in this backend's
//! memory under a random handle, then sets the superuser-only GUC `secumon.session_identity` to
//! that handle. An identity is current only while the GUC holds a handle this backend issued:
//! `SET`/`set_config` by an ordinary role is refused (SUSET), and even a superuser could only
//! pick a handle already issued here, never make up claims. Because the handle is a GUC, the
//! usual rules apply: `authenticate()` is undone by ROLLBACK, `local => true` lasts until the end
//! of the transaction (like SET LOCAL), and `RESET ALL` / `DISCARD ALL` (connection poolers)
//! forget it. Clearing — `authenticate(NULL)`, `logout()`, a refused token — also empties the
//! backend's memory of handles, so it is immediate and survives a rollback.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::rc::Rc;

use super::{cache, errors, jwt, keys};
use crate::gucs;

pub const ROLES: [&str; 3] = ["admin", "user", "readonly"];

/// Seconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const POSTGRES_EPOCH_UNIX: i64 = 946_684_800;

/// A user's state as far as tokens are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserState {
    pub active: bool,
    pub token_version: i64,
    pub tenant_id: String,
    pub role: String,
}

struct UserCache {
    generation: u64,
    users: HashMap<String, Option<UserState>>,
}

/// An identity recorded by authenticate().
struct Identity {
    handle: String,
    user_id: String,
    token_version: i64,
    expires: i64,
}

/// What the session is, right now.
pub struct Current {
    pub user_id: String,
    pub tenant_id: String,
    pub role: String,
}

/// How many identities a backend remembers, so a rolled-back authenticate() falls back to the
/// one before it (as a rolled-back SET would).
const REMEMBERED_IDENTITIES: usize = 8;
/// Users cached per backend before the cache starts over.
const CACHED_USERS: usize = 10_000;

/// The session's tenant as of one statement, for per-row policy checks.
struct StatementTenant {
    key: (i64, u32, u64, u64),
    tenant: Option<Rc<str>>,
}

thread_local! {
    static USERS: RefCell<UserCache> = RefCell::new(UserCache { generation: 0, users: HashMap::new() });
    static IDENTITIES: RefCell<Vec<Identity>> = const { RefCell::new(Vec::new()) };
    /// Bumped whenever this backend sets or forgets an identity.
    static IDENTITY_EPOCH: Cell<u64> = const { Cell::new(0) };
    static STATEMENT_TENANT: RefCell<Option<StatementTenant>> = const { RefCell::new(None) };
}

fn bump_identity_epoch() {
    IDENTITY_EPOCH.set(IDENTITY_EPOCH.get().wrapping_add(1));
}

/// Identifies "the same statement, same identity": while it is unchanged, so is the session's
/// tenant.
pub fn statement_key() -> (i64, u32, u64, u64) {
    // SAFETY: four reads of backend globals (statement start, subtransaction and command ids,
    // identity handle); no pointers.
    unsafe {
        (
            pg_sys::GetCurrentStatementStartTimestamp(),
            pg_sys::GetCurrentSubTransactionId(),
            IDENTITY_EPOCH.get(),
            cache::generation(cache::Table::Users),
        )
    }
}

/// The session's tenant, computed once per statement (and again after a subtransaction ends,
/// an identity change or a change to secumon.users), so that a check made for every row costs
/// a comparison, not an identity lookup.
pub fn statement_tenant() -> Option<Rc<str>> {
    let key = statement_key();
    let cached = STATEMENT_TENANT.with(|s| s.borrow().as_ref().filter(|s| s.key == key).map(|s| s.tenant.clone()));
    if let Some(tenant) = cached {
        return tenant;
    }
    // Computed outside the borrow: it may query secumon.users.
    let tenant: Option<Rc<str>> = current().map(|c| Rc::from(c.tenant_id));
    STATEMENT_TENANT.with(|s| {
        *s.borrow_mut() = Some(StatementTenant {
            key,
            tenant: tenant.clone(),
        })
    });
    tenant
}

/// Unix time at the start of the current transaction: stable within a statement, like now().
pub fn transaction_time() -> i64 {
    // SAFETY: reads the start time of the current transaction, a backend global; no pointers.
    let micros = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    micros.div_euclid(1_000_000) + POSTGRES_EPOCH_UNIX
}

/// Token state of user `user_id` (a UUID in text form), from the cache or one query.
pub fn user_state(user_id: &str) -> Option<UserState> {
    let generation = cache::generation(cache::Table::Users);
    let cached = USERS.with(|c| {
        let c = c.borrow();
        if c.generation == generation {
            c.users.get(user_id).cloned()
        } else {
            None
        }
    });
    if let Some(state) = cached {
        return state;
    }
    let uuid = parse_uuid(user_id)?;
    cache::watch_tables();
    let state = cache::as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT active, token_version::pg_catalog.int8, tenant_id, role FROM secumon.users \
                  WHERE id OPERATOR(pg_catalog.=) $1",
                Some(1),
                &[uuid.into()],
            )?;
            let mut state = None;
            for row in rows {
                state = Some(UserState {
                    active: row.get::<bool>(1)?.unwrap_or(false),
                    token_version: row.get::<i64>(2)?.unwrap_or(-1),
                    tenant_id: row.get::<String>(3)?.unwrap_or_default(),
                    role: row.get::<String>(4)?.unwrap_or_default(),
                });
            }
            Ok::<_, pgrx::spi::Error>(state)
        })
    })
    .unwrap_or(None);
    USERS.with(|c| {
        let mut c = c.borrow_mut();
        if c.generation != generation || c.users.len() >= CACHED_USERS {
            c.users.clear();
            c.generation = generation;
        }
        c.users.insert(user_id.to_string(), state.clone());
    });
    state
}

fn parse_uuid(text: &str) -> Option<pgrx::Uuid> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if text.len() != 36 || hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(pgrx::Uuid::from_bytes(bytes))
}

/// Verifies `token` completely: signature, algorithm, issuer, time, and that the user still
/// exists, is active and has not had its tokens revoked since. The reason for a refusal is
/// returned for the server log; callers raise the generic error.
pub fn verify(token: &str) -> Result<(jwt::Claims, UserState), jwt::Rejection> {
    let claims = match recently_verified(token) {
        Some(claims) => claims,
        None => {
            let kid = match jwt::key_id(token) {
                Ok(kid) => Some(kid),
                Err(jwt::Rejection::MissingKeyId) => None,
                Err(other) => return Err(other),
            };
            let secret = key_for(kid.as_deref())?;
            // jsonwebtoken has no business panicking on input, but a panic must never become an
            // XX000 that tells an attacker more than the generic error does.
            let claims =
                std::panic::catch_unwind(|| jwt::verify(token, &secret)).unwrap_or(Err(jwt::Rejection::Malformed))?;
            remember_verified(token, kid, secret, &claims);
            claims
        }
    };
    if !ROLES.contains(&claims.role.as_str()) {
        return Err(jwt::Rejection::Refused(format!("unknown role {:?}", claims.role)));
    }
    let state =
        user_state(&claims.user_id).ok_or_else(|| jwt::Rejection::Refused(format!("no user {}", claims.user_id)))?;
    if !state.active {
        return Err(jwt::Rejection::Refused(format!(
            "user {} is deactivated",
            claims.user_id
        )));
    }
    if state.token_version != claims.ver || state.tenant_id != claims.tenant_id || state.role != claims.role {
        return Err(jwt::Rejection::Refused(format!(
            "tokens of user {} were revoked",
            claims.user_id
        )));
    }
    Ok((claims, state))
}

/// The key a token with key id `kid` must be signed with, as of now.
fn key_for(kid: Option<&str>) -> Result<Vec<u8>, jwt::Rejection> {
    match kid {
        Some(kid) => keys::verification_key(kid, transaction_time()).ok_or(jwt::Rejection::UnknownKeyId),
        // Other services sharing secumon.jwt_secret (the API SecuMon replaces) sign without a
        // kid: such a token is checked against the configuration file's key, never a table key.
        None => keys::configuration_file_key().ok_or(jwt::Rejection::MissingKeyId),
    }
}

/// A token whose signature this backend checked.
struct Verified {
    token: Box<str>,
    kid: Option<String>,
    secret: Vec<u8>,
    claims: jwt::Claims,
}

/// Tokens verified lately in this backend. The same token comes back all the time: a statement
/// calling verify_token and authenticate, every request of one dashboard session through a
/// pooled connection. A remembered token skips decoding and the HMAC only: it must be the same
/// bytes, its key must still be the one it was verified with (a rotated-out, expired or changed
/// key refuses it as before), and its time claims, role and user are checked on every use.
const VERIFIED_TOKENS: usize = 16;

thread_local! {
    static VERIFIED: RefCell<Vec<Verified>> = const { RefCell::new(Vec::new()) };
}

fn recently_verified(token: &str) -> Option<jwt::Claims> {
    let (kid, secret, claims) = VERIFIED.with(|v| {
        v.borrow()
            .iter()
            .find(|entry| &*entry.token == token)
            .map(|entry| (entry.kid.clone(), entry.secret.clone(), entry.claims.clone()))
    })?;
    // The key lookups query nothing while their caches are current.
    if key_for(kid.as_deref()).ok()? != secret || jwt::check_times(&claims, jwt::now()).is_err() {
        // Verified the long way again, which also says why it is refused.
        return None;
    }
    Some(claims)
}

fn remember_verified(token: &str, kid: Option<String>, secret: Vec<u8>, claims: &jwt::Claims) {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.iter().any(|entry| &*entry.token == token) {
            return;
        }
        if v.len() >= VERIFIED_TOKENS {
            v.remove(0);
        }
        v.push(Verified {
            token: token.into(),
            kid,
            secret,
            claims: claims.clone(),
        });
    });
}

fn verified_or_raise(token: &str) -> (jwt::Claims, UserState) {
    match verify(token) {
        Ok(verified) => verified,
        Err(why) => {
            forget_identities();
            errors::server_log(format!("secumon: token refused: {why}"));
            errors::token_invalid()
        }
    }
}

fn set_identity_handle(handle: &str, local: bool) {
    let value = CString::new(handle).expect("handles are hex digits");
    // SAFETY: PGC_SUSET is the context of a superuser's SET; it is what lets this function,
    // and nothing a client can call, change the SUSET GUC. Errors are raised as ERROR.
    unsafe {
        pg_sys::set_config_option(
            gucs::SESSION_IDENTITY_NAME.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            if local {
                pg_sys::GucAction::GUC_ACTION_LOCAL
            } else {
                pg_sys::GucAction::GUC_ACTION_SET
            },
            true,
            pg_sys::PGERROR as i32,
            false,
        );
    }
}

/// Forgets every identity of this backend, at once and for good (not undone by ROLLBACK).
pub fn forget_identities() {
    IDENTITIES.with(|ids| ids.borrow_mut().clear());
    bump_identity_epoch();
    if gucs::SESSION_IDENTITY.get().is_some_and(|h| !h.as_bytes().is_empty()) {
        set_identity_handle("", false);
    }
}

/// The session's identity, if it has a current one.
pub fn current() -> Option<Current> {
    let handle = gucs::SESSION_IDENTITY.get()?;
    let handle = handle.to_str().ok().filter(|h| !h.is_empty())?;
    let (user_id, token_version, expires) = IDENTITIES.with(|ids| {
        ids.borrow()
            .iter()
            .find(|id| id.handle == handle)
            .map(|id| (id.user_id.clone(), id.token_version, id.expires))
    })?;
    if expires <= transaction_time() {
        return None;
    }
    let state = user_state(&user_id)?;
    if !state.active || state.token_version != token_version {
        return None;
    }
    Some(Current {
        user_id,
        tenant_id: state.tenant_id,
        role: state.role,
    })
}

fn claims_json(claims: &jwt::Claims) -> JsonB {
    JsonB(serde_json::to_value(claims).unwrap_or(serde_json::Value::Null))
}

/// Verifies a SecuMon access token and returns its claims; raises SQLSTATE 28000 with one
/// generic message for every kind of invalid token.
#[pg_extern(volatile, parallel_unsafe)]
fn verify_token(token: Option<&str>) -> JsonB {
    let (claims, _) = verified_or_raise(token.unwrap_or(""));
    claims_json(&claims)
}

/// Makes `token`'s user the session's identity (for row-level security) and returns its
/// claims; NULL forgets the identity. `local => true` keeps it only until the transaction ends.
#[pg_extern(volatile, parallel_unsafe)]
fn authenticate(token: Option<&str>, local: default!(bool, false)) -> Option<JsonB> {
    let Some(token) = token else {
        forget_identities();
        return None;
    };
    let (claims, _) = verified_or_raise(token);
    let handle = keys::hex(&keys::random_bytes::<16>());
    IDENTITIES.with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.len() >= REMEMBERED_IDENTITIES {
            ids.remove(0);
        }
        ids.push(Identity {
            handle: handle.clone(),
            user_id: claims.user_id.clone(),
            token_version: claims.ver,
            expires: claims.exp,
        });
    });
    set_identity_handle(&handle, local);
    bump_identity_epoch();
    Some(claims_json(&claims))
}

/// Id of the session's SecuMon user, or NULL.
#[pg_extern(stable, parallel_restricted)]
fn current_user_id() -> Option<pgrx::Uuid> {
    current().and_then(|c| parse_uuid(&c.user_id))
}

/// Tenant of the session's SecuMon user, or NULL.
#[pg_extern(stable, parallel_restricted)]
fn current_tenant() -> Option<String> {
    current().map(|c| c.tenant_id)
}

/// SecuMon role (admin, user, readonly) of the session's user, or NULL.
#[pg_extern(stable, parallel_restricted, name = "current_role")]
fn current_secumon_role() -> Option<String> {
    current().map(|c| c.role)
}

/// For policies: true when an unauthenticated session may see every tenant, i.e. it has no
/// identity and `secumon.auth_required` is off.
#[pg_extern(stable, parallel_restricted)]
fn _rls_open() -> bool {
    !gucs::AUTH_REQUIRED.get() && current().is_none()
}

/// For policies: whether the session may write rows of its tenant — role admin, or role user
/// when `admin_only` is false (readonly never). Unauthenticated sessions are covered by
/// `_rls_open()`.
#[pg_extern(stable, parallel_restricted)]
fn _rls_may_write(admin_only: bool) -> bool {
    match current() {
        Some(c) => c.role == "admin" || (!admin_only && c.role == "user"),
        None => false,
    }
}

/// Whether row-level security lets the current role through without any policy, as it does for
/// a superuser and a role with BYPASSRLS, or through policy secumon_operator (the privileges of
/// secumon_admin). The views of the timescaledb backend filter with it where the plain tables
/// have policies (docs/timescaledb.md).
#[pg_extern(stable, parallel_safe)]
fn _rls_bypassed() -> bool {
    rls_bypassed()
}

fn rls_bypassed() -> bool {
    // SAFETY: GetUserId reads the backend's current role; has_bypassrls_privilege looks it up
    // in the role cache and raises (never returns garbage) if the catalogs cannot be read.
    let user = unsafe { pg_sys::GetUserId() };
    // SAFETY: see the comment above: the role cache lookup raises on failure instead of returning
    // garbage.
    let bypassrls = unsafe { pg_sys::has_bypassrls_privilege(user) };
    bypassrls || has_operator_rights(user)
}

/// The timescaledb backend's stand-in for the policies' `WITH CHECK ((SELECT secumon._rls_open()))`:
/// a statement trigger on each hypertable (sql/tenancy.sql, secumon._enable_agent_rls). Whatever
/// rights a DBA grants on the views, a session acting for a tenant writes no metric row, as
/// row-level security refuses it on the plain backend. In Rust, as it runs for every statement
/// of every report.
#[pg_trigger]
fn _refuse_tenant_writes<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::PgTriggerError> {
    if !(_rls_open() || rls_bypassed()) {
        let table = trigger.table_name()?;
        crate::errors::raise_report(
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("new row violates row-level security policy for table \"{table}\""),
                "secumon._refuse_tenant_writes",
            )
            .set_hint("Metric rows are written by agents through secumon.ingest(), not by sessions acting for a tenant."),
        );
    }
    Ok(None)
}

/// Whether whoever called the surrounding SECURITY DEFINER function is a SecuMon operator:
/// a superuser or a role with the privileges of secumon_admin (after SET ROLE, before any
/// SECURITY DEFINER switch).
#[pg_extern(stable, parallel_restricted)]
fn _caller_is_operator() -> bool {
    caller_is_operator()
}

pub fn caller_is_operator() -> bool {
    // SAFETY: reads the role the session acts as outside any SECURITY DEFINER function.
    has_operator_rights(unsafe { pg_sys::GetOuterUserId() })
}

/// Whether `role` is a superuser or has the privileges of secumon_admin.
fn has_operator_rights(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups by role OID and name; PostgreSQL raises (never returns garbage)
    // if the catalogs cannot be read, and a missing secumon_admin yields InvalidOid.
    unsafe {
        if pg_sys::superuser_arg(role) {
            return true;
        }
        let admin = pg_sys::get_role_oid(c"secumon_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(role, admin)
    }
}

/// Forgets the session's identity (used by secumon.logout()).
#[pg_extern(volatile, parallel_unsafe)]
fn _forget_identity() {
    forget_identities();
}
