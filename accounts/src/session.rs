//! Server-side sessions: the id the browser holds, and what the server knows about it.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::UserId;
use crate::password::random_hex;

/// A session id as held by the browser (the cookie value): 256 random bits as 64 hex characters.
///
/// Only its SHA-256 is stored, so a leaked database does not hand out live sessions. `Debug`
/// does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// Wraps a cookie value. No check is made here; an unknown or malformed id is simply not
    /// found by [`crate::Accounts::session`].
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub(crate) fn generate() -> Self {
        Self(random_hex(32))
    }

    /// The cookie value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stored form: hex SHA-256 of the id.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// A live session, as returned by [`crate::Accounts::login`] and [`crate::Accounts::session`].
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The id to put in the session cookie.
    pub id: SessionId,
    /// Whose session it is.
    pub user_id: UserId,
    /// The anti-CSRF token of this session (64 hex characters): embed it in forms and compare
    /// it with [`Session::csrf_matches`] on every state-changing request.
    pub csrf_token: String,
    /// When the session was created (seconds since the Unix epoch).
    pub created_at: i64,
    /// When the session was last used.
    pub last_seen_at: i64,
    /// When the session ends if unused (`last_seen_at` + idle timeout, capped at `expires_at`).
    pub idle_expires_at: i64,
    /// When the session ends regardless of use (`created_at` + absolute lifetime).
    pub expires_at: i64,
}

impl Session {
    /// Compares a submitted CSRF token with this session's, in constant time.
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        self.csrf_token
            .as_bytes()
            .ct_eq(submitted.as_bytes())
            .into()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("csrf_token", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("idle_expires_at", &self.idle_expires_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_hashed() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 64);
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.as_str());
        assert_eq!(a.hash(), SessionId::new(a.as_str()).hash());
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn csrf_comparison() {
        let s = Session {
            id: SessionId::generate(),
            user_id: UserId(1),
            csrf_token: "abc".into(),
            created_at: 0,
            last_seen_at: 0,
            idle_expires_at: 0,
            expires_at: 0,
        };
        assert!(s.csrf_matches("abc"));
        assert!(!s.csrf_matches("abd"));
        assert!(!s.csrf_matches("ab"));
        assert!(!s.csrf_matches(""));
    }
}
