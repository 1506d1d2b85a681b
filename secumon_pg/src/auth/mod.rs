//! Authentication and tenancy: who a session is, and which tenant's rows it may see.
//!
//! sql/auth.sql holds the tables (users, refresh tokens, signing keys), login / refresh /
//! logout and the admin functions; sql/tenancy.sql the row-level security policies. This module does what SQL
//! cannot: JWT signing and verification (`jwt`, `keys`), bcrypt (`password`), the session's
//! unforgeable identity (`identity`), login throttling in shared memory (`throttle`) and the
//! worker that revokes a reused refresh token's family (`revoke`). See docs/auth.md.

mod cache;
mod errors;
pub mod identity;
mod jwt;
pub mod keys;
mod password;
mod revoke;
mod tenancy;
mod throttle;
mod tokens;

/// Call from _PG_init in every backend that loads the library.
pub fn init() {
    errors::install_log_hook();
}

/// Reserves shared memory; call from _PG_init while shared_preload_libraries is processed.
pub fn init_shared_memory() {
    throttle::init();
}
