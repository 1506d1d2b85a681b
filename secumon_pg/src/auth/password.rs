//! Password hashing with bcrypt. Verification costs the same whether or not the user exists:
//! an unknown user's password is hashed once at the current cost with a fixed salt.

use pgrx::prelude::*;

use super::errors;
use crate::gucs;

/// bcrypt only reads the first 72 bytes; longer passwords are refused rather than truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;

const DUMMY_SALT: [u8; 16] = *b"secumon-no-user!";

/// Why `password` may not be set, if it may not.
pub fn policy_violation(password: &str, min_chars: usize) -> Option<String> {
    if password.is_empty() {
        return Some("password must not be empty".into());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(format!(
            "password is {} bytes long; at most {MAX_PASSWORD_BYTES} bytes are allowed",
            password.len()
        ));
    }
    let chars = password.chars().count();
    if chars < min_chars {
        return Some(format!(
            "password is {chars} characters long; at least {min_chars} are required"
        ));
    }
    None
}

fn cost() -> u32 {
    u32::try_from(gucs::BCRYPT_COST.get()).unwrap_or(10).max(10)
}

/// The cost a bcrypt hash was made with.
fn hash_cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

/// bcrypt hash of a password at cost `secumon.bcrypt_cost`. With `enforce_policy`, raises
/// 22023 for a password the policy refuses (empty, over 72 bytes, shorter than
/// `secumon.password_min_length`); without, it re-hashes a password that was accepted before.
#[pg_extern(volatile, parallel_safe)]
fn _password_hash(password: Option<&str>, enforce_policy: bool) -> String {
    let password = password.unwrap_or("");
    let min_chars = if enforce_policy {
        usize::try_from(gucs::PASSWORD_MIN_LENGTH.get()).unwrap_or(8)
    } else {
        1
    };
    if let Some(why) = policy_violation(password, min_chars) {
        errors::raise_hiding_statement(
            pgrx::pg_sys::panic::ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, why, "secumon.auth")
                .set_hint("Choose a password of secumon.password_min_length characters or more and at most 72 bytes."),
        );
    }
    match bcrypt::hash(password, cost()) {
        Ok(hash) => hash,
        Err(e) => crate::errors::raise_report(pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("could not hash the password: {e}"),
            "secumon.auth",
        )),
    }
}

/// Whether `password` matches `hash`. A NULL or unusable hash (unknown user) and passwords
/// over 72 bytes cost one bcrypt computation at the current cost too, and are false.
#[pg_extern(volatile, parallel_safe)]
fn _password_verify(password: Option<&str>, hash: Option<&str>) -> bool {
    let password = password.unwrap_or("");
    if password.len() <= MAX_PASSWORD_BYTES {
        if let Some(Ok(matches)) = hash.map(|h| bcrypt::verify(password, h)) {
            return matches;
        }
    }
    let _ = bcrypt::hash_with_salt(password, cost(), DUMMY_SALT);
    false
}

/// Whether `hash` was made with a lower cost than `secumon.bcrypt_cost` (login upgrades it).
#[pg_extern(stable, parallel_safe)]
fn _password_needs_rehash(hash: &str) -> bool {
    hash_cost(hash).is_none_or(|c| c < cost())
}
