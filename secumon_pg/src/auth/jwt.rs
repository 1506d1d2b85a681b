//! SecuMon access tokens: HS256 JWTs with issuer `secumon-api` and a `kid` header naming the
//! key (tokens of other services sharing `secumon.jwt_secret` may have none). Pure Rust (no PostgreSQL calls), so the attack matrix can be reasoned about in one place.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

pub const ISSUER: &str = "secumon-api";

/// Longer "tokens" are refused before any parsing: ours are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The claims SecuMon signs. `role` is the SecuMon role (admin, user, readonly); `ver` is the
/// user's token_version, bumped to revoke every token issued before (logout, password change...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    pub role: String,
    pub tenant_id: String,
    /// Absent from tokens other services issue: 0, the token_version of a user whose tokens
    /// were never revoked, so a logout still ends them.
    #[serde(default)]
    pub ver: i64,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// Why a token was refused. Only for the server log: clients get one generic error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    TooLong,
    Malformed,
    MissingKeyId,
    UnknownKeyId,
    Refused(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::TooLong => write!(f, "token longer than {MAX_TOKEN_BYTES} bytes"),
            Rejection::Malformed => write!(f, "malformed token"),
            Rejection::MissingKeyId => {
                write!(f, "token header has no kid, and secumon.jwt_secret is not set in the configuration file")
            }
            Rejection::UnknownKeyId => write!(f, "token signed with an unknown or expired key"),
            Rejection::Refused(why) => write!(f, "{why}"),
        }
    }
}

pub fn sign(claims: &Claims, kid: &str, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
}

/// The `kid` of a token's header, read without trusting anything else in it.
pub fn key_id(token: &str) -> Result<String, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::TooLong);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    header.kid.filter(|kid| !kid.is_empty()).ok_or(Rejection::MissingKeyId)
}

fn validation() -> &'static Validation {
    static VALIDATION: OnceLock<Validation> = OnceLock::new();
    VALIDATION.get_or_init(|| {
        // HS256 only: `alg: none`, HS384/512 and every asymmetric algorithm are refused before
        // the signature is looked at. No leeway: the same database issues and checks tokens.
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss"]);
        v
    })
}

/// Checks a token's time claims again at `now` (Unix seconds), exactly as [`verify`] does: for a
/// token whose signature was verified before and is presented again.
pub fn check_times(claims: &Claims, now: i64) -> Result<(), Rejection> {
    if claims.exp < now {
        return Err(Rejection::Refused("ExpiredSignature".into()));
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(Rejection::Refused("ImmatureSignature".into()));
    }
    Ok(())
}

/// The clock [`verify`] checks `exp` and `nbf` against.
pub fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX)
}

/// Checks signature, algorithm, issuer, expiry and not-before with `secret`, and returns the claims.
pub fn verify(token: &str, secret: &[u8]) -> Result<Claims, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::TooLong);
    }
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), validation())
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                Rejection::Malformed
            }
            other => Rejection::Refused(format!("{other:?}")),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64, nbf: Option<i64>) -> Claims {
        Claims {
            user_id: "00000000-0000-0000-0000-000000000001".into(),
            email: None,
            role: "admin".into(),
            tenant_id: "default".into(),
            ver: 0,
            iat: 1_000,
            exp,
            iss: ISSUER.into(),
            nbf,
        }
    }

    /// check_times must refuse exactly what verify refuses, at the same instant.
    #[test]
    fn check_times_agrees_with_verify() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let now = now();
        // No case on a second's boundary: verify reads the clock again.
        for (exp, nbf) in [(now + 60, None), (now - 5, None), (now + 60, Some(now - 5)), (now + 60, Some(now + 5))] {
            let c = claims(exp, nbf);
            let token = sign(&c, "k1", secret).expect("signs");
            let full = verify(&token, secret).map(|_| ());
            assert_eq!(check_times(&c, now).is_ok(), full.is_ok(), "exp {exp} nbf {nbf:?}: {full:?}");
        }
    }
}
