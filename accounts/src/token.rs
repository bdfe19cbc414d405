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

    /// Token fuzzing: whatever string arrives in a reset or invitation link, `check` answers
    /// with an error (never a panic), and no single-character change of a genuine token, nor any
    /// token signed otherwise, is accepted.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

        fn genuine() -> String {
            TokenSigner::new(SECRET)
                .issue(UserId(7), TokenPurpose::Reset, 3, 1000, 600)
                .unwrap()
        }

        /// Unpadded base64url, to build hand-made JWTs.
        fn b64(bytes: &[u8]) -> String {
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    out.push(B64URL.as_bytes()[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

            #[test]
            fn arbitrary_strings_are_invalid(token in ".{0,600}") {
                let s = TokenSigner::new(SECRET);
                prop_assert!(s.check(&token, TokenPurpose::Reset, 1000).is_err());
            }

            #[test]
            fn jwt_shaped_junk_is_invalid(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,80}") {
                let s = TokenSigner::new(SECRET);
                let token = format!("{a}.{b}.{c}");
                prop_assert!(matches!(s.check(&token, TokenPurpose::Reset, 1000), Err(Error::TokenInvalid)));
            }

            #[test]
            fn every_single_character_change_is_refused(index in 0usize..400, replacement in 0usize..64) {
                let s = TokenSigner::new(SECRET);
                let token = genuine();
                let index = index % token.len();
                let new = B64URL.as_bytes()[replacement] as char;
                prop_assume!(token.as_bytes()[index] != b'.' && token.as_bytes()[index] as char != new);
                let mut tampered = token.into_bytes();
                tampered[index] = new as u8;
                let tampered = String::from_utf8(tampered).unwrap();
                prop_assert!(s.check(&tampered, TokenPurpose::Reset, 1000).is_err(), "{tampered}");
            }

            #[test]
            fn truncations_and_extensions_are_refused(cut in 0usize..400, tail in "[A-Za-z0-9_.=-]{1,20}") {
                let s = TokenSigner::new(SECRET);
                let token = genuine();
                let cut = cut % token.len();
                prop_assert!(s.check(&token[..cut], TokenPurpose::Reset, 1000).is_err());
                let extended = format!("{token}{tail}");
                prop_assert!(s.check(&extended, TokenPurpose::Reset, 1000).is_err());
            }
        }

        #[test]
        fn unsigned_and_foreign_tokens_are_refused() {
            let s = TokenSigner::new(SECRET);
            let claims = br#"{"sub":7,"purpose":"reset","pwv":3,"iat":1000,"exp":999999}"#;
            for header in [
                &br#"{"alg":"none","typ":"JWT"}"#[..],
                br#"{"alg":"HS512","typ":"JWT"}"#,
                br#"{"alg":"RS256","typ":"JWT"}"#,
            ] {
                for sig in ["", "AAAA"] {
                    let token = format!("{}.{}.{sig}", b64(header), b64(claims));
                    assert!(
                        s.check(&token, TokenPurpose::Reset, 1000).is_err(),
                        "{token}"
                    );
                }
            }
            let foreign = TokenSigner::new(b"another secret, same length, 32b")
                .issue(UserId(7), TokenPurpose::Reset, 3, 1000, 600)
                .unwrap();
            assert!(matches!(
                s.check(&foreign, TokenPurpose::Reset, 1000),
                Err(Error::TokenInvalid)
            ));
            let huge = format!(
                "{}.{}.{}",
                "a".repeat(100_000),
                "b".repeat(100_000),
                "c".repeat(100_000)
            );
            assert!(s.check(&huge, TokenPurpose::Reset, 1000).is_err());
            // And the genuine token still passes, so the refusals above mean something.
            assert!(s.check(&genuine(), TokenPurpose::Reset, 1000).is_ok());
        }
    }
}
