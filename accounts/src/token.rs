//! Signed single-purpose tokens (password reset, invitation), as HS256 JWTs.

use std::collections::HashSet;
use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::UserId;

/// What a token may be used for. A token of one purpose is refused for the other
/// ([`Error::TokenWrongPurpose`]); session ids are not tokens at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TokenPurpose {
    /// "Forgot my password" link.
    Reset,
    /// Invitation to a new user to set a first password.
    Invite,
}

impl fmt::Display for TokenPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenPurpose::Reset => "password reset",
            TokenPurpose::Invite => "invitation",
        })
    }
}

/// The JWT payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub sub: i64,
    pub purpose: TokenPurpose,
    /// The user's password version when issued: any password change makes the token stale.
    pub pwv: i64,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and checks tokens with a shared secret.
#[derive(Clone)]
pub(crate) struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the injected clock after the signature, so that a
        // tampered token is reported as invalid rather than expired.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.required_spec_claims = HashSet::new();
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(
        &self,
        user: UserId,
        purpose: TokenPurpose,
        password_version: i64,
        now: i64,
        ttl_secs: i64,
    ) -> Result<String> {
        let claims = Claims {
            sub: user.0,
            purpose,
            pwv: password_version,
            iat: now,
            exp: now.saturating_add(ttl_secs),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| {
            Error::Hashing {
                message: format!("signing token: {e}"),
            }
        })
    }

    /// Checks signature, purpose and expiry (in that order); the password version is checked
    /// by the caller against the stored user.
    pub fn check(&self, token: &str, expected: TokenPurpose, now: i64) -> Result<Claims> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => Error::TokenExpired,
                _ => Error::TokenInvalid,
            })?
            .claims;
        if claims.purpose != expected {
            return Err(Error::TokenWrongPurpose {
                expected,
                found: claims.purpose,
            });
        }
        if now >= claims.exp {
            return Err(Error::TokenExpired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_errors() {
        let s = TokenSigner::new(SECRET);
        let t = s
            .issue(UserId(7), TokenPurpose::Reset, 3, 1000, 600)
            .unwrap();
        let c = s.check(&t, TokenPurpose::Reset, 1599).unwrap();
        assert_eq!((c.sub, c.pwv, c.exp), (7, 3, 1600));
        assert!(matches!(
            s.check(&t, TokenPurpose::Reset, 1600),
            Err(Error::TokenExpired)
        ));
        assert!(matches!(
            s.check(&t, TokenPurpose::Invite, 1000),
            Err(Error::TokenWrongPurpose {
                expected: TokenPurpose::Invite,
                found: TokenPurpose::Reset
            })
        ));
        let other = TokenSigner::new(b"another secret, also 32 bytes!!!");
        assert!(matches!(
            other.check(&t, TokenPurpose::Reset, 1000),
            Err(Error::TokenInvalid)
        ));
        assert!(matches!(
            s.check("garbage", TokenPurpose::Reset, 1000),
            Err(Error::TokenInvalid)
        ));
        assert!(matches!(
            s.check("", TokenPurpose::Reset, 1000),
            Err(Error::TokenInvalid)
        ));
    }
}
