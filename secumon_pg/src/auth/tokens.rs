//! Issuing tokens: signed access tokens and opaque refresh tokens. sql/auth.sql decides when.

use base64::Engine;
use pgrx::prelude::*;
use pgrx::JsonB;

use super::{errors, identity, jwt, keys};
use crate::gucs;

fn timestamp(unix: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from((unix - 946_684_800) * 1_000_000)
        .unwrap_or_else(|_| TimestampWithTimeZone::positive_infinity())
}

/// Signs an access token for `user` (jsonb with id, email, role, tenant_id, token_version),
/// valid from now for `secumon.token_lifetime`.
#[pg_extern(volatile, parallel_unsafe)]
fn _sign_access_token(
    user: JsonB,
) -> TableIterator<'static, (name!(token, String), name!(expires_at, TimestampWithTimeZone))> {
    let field = |name: &str| user.0.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(user_id), Some(role), Some(tenant_id), Some(ver)) = (
        field("id"),
        field("role"),
        field("tenant_id"),
        user.0.get("token_version").and_then(|v| v.as_i64()),
    ) else {
        errors::invalid_parameter(
            "an access token needs id, role, tenant_id and token_version".into(),
            "Pass a secumon.users row as jsonb.",
        );
    };
    let iat = identity::transaction_time();
    let exp = iat + i64::from(gucs::TOKEN_LIFETIME.get());
    let claims = jwt::Claims {
        user_id,
        email: field("email"),
        role,
        tenant_id,
        ver,
        iat,
        exp,
        iss: jwt::ISSUER.to_string(),
        nbf: None,
    };
    let (kid, secret) = keys::signing_key();
    match jwt::sign(&claims, &kid, &secret) {
        Ok(token) => TableIterator::once((token, timestamp(exp))),
        Err(e) => crate::errors::raise_report(pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("could not sign the access token: {e}"),
            "secumon.login",
        )),
    }
}

/// A new refresh token: 256 random bits, URL-safe base64. Only its SHA-256 is stored.
#[pg_extern(volatile, parallel_unsafe)]
fn _new_refresh_token() -> TableIterator<'static, (name!(token, String), name!(expires_at, TimestampWithTimeZone))> {
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(keys::random_bytes::<32>());
    let expires = identity::transaction_time() + i64::from(gucs::REFRESH_TOKEN_LIFETIME.get());
    TableIterator::once((token, timestamp(expires)))
}
