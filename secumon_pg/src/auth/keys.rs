//! Signing keys. The superuser-only GUC `secumon.jwt_secret` wins when set; otherwise keys are
//! generated (256 bits) into secumon._jwt_keys, which only superusers can read. Every token
//! names its key in the `kid` header, so rotation keeps earlier tokens valid until they expire.

use pgrx::pg_sys;
use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::ffi::CStr;

use super::{cache, errors};
use crate::gucs;

struct TableKey {
    kid: String,
    secret: Vec<u8>,
    /// Unix seconds; None while the key is the current one.
    retired_at: Option<i64>,
}

struct KeyRing {
    generation: u64,
    keys: Vec<TableKey>, // newest first
}

thread_local! {
    static RING: RefCell<Option<KeyRing>> = const { RefCell::new(None) };
    /// (secret, kid) of the last GUC secret seen, so its kid is hashed once.
    static GUC_KEY: RefCell<Option<(Vec<u8>, String)>> = const { RefCell::new(None) };
}

/// The GUC secret and its kid, when `secumon.jwt_secret` is set.
fn guc_key() -> Option<(String, Vec<u8>)> {
    let secret = gucs::JWT_SECRET.get()?.into_bytes();
    if secret.is_empty() {
        return None;
    }
    if secret.len() < gucs::MIN_SECRET_BYTES {
        // Only reachable if the check hook was bypassed (e.g. a placeholder set before loading).
        errors::invalid_parameter(
            "secumon.jwt_secret must be at least 32 bytes long".into(),
            "Set a longer secret, or unset it to use generated keys.",
        );
    }
    GUC_KEY.with(|cached| {
        let mut cached = cached.borrow_mut();
        if let Some((s, kid)) = cached.as_ref() {
            if *s == secret {
                return Some((kid.clone(), secret));
            }
        }
        let digest = Sha256::digest(&secret);
        let kid = format!("guc-{}", hex(&digest[..8]));
        *cached = Some((secret.clone(), kid.clone()));
        Some((kid, secret))
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_ring() -> KeyRing {
    let generation = cache::generation(cache::Table::Keys);
    cache::watch_tables();
    let keys = cache::as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT kid, secret, pg_catalog.floor(pg_catalog.date_part('epoch', retired_at))::pg_catalog.int8 \
                   FROM secumon._jwt_keys ORDER BY created_at DESC",
                None,
                &[],
            )?;
            let mut keys = Vec::new();
            for row in rows {
                let kid: Option<String> = row.get(1)?;
                let secret: Option<Vec<u8>> = row.get(2)?;
                let retired_at: Option<i64> = row.get(3)?;
                if let (Some(kid), Some(secret)) = (kid, secret) {
                    keys.push(TableKey {
                        kid,
                        secret,
                        retired_at,
                    });
                }
            }
            Ok::<_, pgrx::spi::Error>(keys)
        })
    });
    KeyRing {
        generation,
        keys: keys.unwrap_or_default(),
    }
}

fn with_ring<R>(f: impl FnOnce(&KeyRing) -> R) -> R {
    let fresh = RING.with(|r| {
        r.borrow()
            .as_ref()
            .is_some_and(|ring| ring.generation == cache::generation(cache::Table::Keys))
    });
    if !fresh {
        // Filled outside the borrow: the SPI query may deliver invalidations.
        let ring = load_ring();
        RING.with(|r| *r.borrow_mut() = Some(ring));
    }
    RING.with(|r| f(r.borrow().as_ref().expect("key ring filled above")))
}

/// (kid, secret) that signs new tokens.
pub fn signing_key() -> (String, Vec<u8>) {
    if let Some(key) = guc_key() {
        return key;
    }
    let current_key = || {
        with_ring(|ring| {
            ring.keys
                .iter()
                .find(|k| k.retired_at.is_none())
                .map(|k| (k.kid.clone(), k.secret.clone()))
        })
    };
    let mut current = current_key();
    if current.is_none() {
        // The first key is made when the first token is signed, not by CREATE EXTENSION, so a
        // restored database holds exactly the keys of its dump.
        let created = cache::as_extension_owner(|| Spi::run("SELECT secumon._create_first_signing_key()"));
        if let Err(e) = created {
            crate::errors::raise_report(pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("could not create the first signing key: {e}"),
                "secumon.login",
            ));
        }
        current = current_key();
    }
    match current {
        Some(key) => key,
        None => crate::errors::raise_report(
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "SecuMon has no signing key",
                "secumon.login",
            )
            .set_hint("Set secumon.jwt_secret, or create a key with SELECT secumon.rotate_jwt_secret()."),
        ),
    }
}

/// The secret of key `kid` if it may still verify tokens at unix time `now`: the GUC key, the
/// current table key, or a retired one whose tokens may not have expired yet.
pub fn verification_key(kid: &str, now: i64) -> Option<Vec<u8>> {
    if let Some((guc_kid, secret)) = guc_key() {
        if guc_kid == kid {
            return Some(secret);
        }
    }
    let lifetime = i64::from(gucs::TOKEN_LIFETIME.get());
    with_ring(|ring| {
        ring.keys
            .iter()
            .find(|k| k.kid == kid)
            .filter(|k| k.retired_at.is_none_or(|retired| retired + lifetime > now))
            .map(|k| k.secret.clone())
    })
}

/// `secumon.jwt_secret` as the configuration file (postgresql.conf or ALTER SYSTEM) sets it, if
/// it does: the current value when it comes from there, else the value the session returns to
/// on RESET when that does. A session's own `SET` never counts. Tokens without a `kid`, as
/// other services sharing the secret issue them, are checked against this key only.
pub fn configuration_file_key() -> Option<Vec<u8>> {
    let name = c"secumon.jwt_secret";
    // SAFETY: PostgreSQL 15's GUC array has GetNumConfigOptions() entries, each a valid
    // config_generic whose name is a NUL-terminated string; a PGC_STRING entry is the first
    // member of a config_string, whose variable points at the current value and whose
    // reset_val is the RESET value (either may be NULL). Main thread only, as every pgrx call.
    unsafe {
        let variables = pg_sys::get_guc_variables();
        let count = usize::try_from(pg_sys::GetNumConfigOptions()).unwrap_or(0);
        if variables.is_null() {
            return None;
        }
        for i in 0..count {
            let variable = *variables.add(i);
            if variable.is_null() || (*variable).name.is_null() || CStr::from_ptr((*variable).name) != name {
                continue;
            }
            if (*variable).vartype != pg_sys::config_type::PGC_STRING {
                return None;
            }
            let string = variable.cast::<pg_sys::config_string>();
            let value = if (*variable).source == pg_sys::GucSource::PGC_S_FILE {
                (*string).variable.as_ref().map_or(std::ptr::null_mut(), |v| *v)
            } else if (*variable).reset_source == pg_sys::GucSource::PGC_S_FILE {
                (*string).reset_val
            } else {
                std::ptr::null_mut()
            };
            if value.is_null() {
                return None;
            }
            let bytes = CStr::from_ptr(value).to_bytes();
            return (bytes.len() >= gucs::MIN_SECRET_BYTES).then(|| bytes.to_vec());
        }
    }
    None
}

/// N random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(e) = getrandom::fill(&mut bytes) {
        crate::errors::raise_report(pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
            format!("could not read random bytes from the operating system: {e}"),
            "secumon.auth",
        ));
    }
    bytes
}

/// A fresh 256-bit key and its kid, for secumon.rotate_jwt_secret().
#[pg_extern(volatile, parallel_unsafe)]
fn _generate_jwt_key() -> TableIterator<'static, (name!(kid, String), name!(secret, Vec<u8>))> {
    let kid = hex(&random_bytes::<8>());
    TableIterator::once((kid, random_bytes::<32>().to_vec()))
}
