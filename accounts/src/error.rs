//! The crate's one error type.

use std::time::Duration;

use crate::model::UserId;
use crate::token::TokenPurpose;

/// Everything that can go wrong in this crate.
///
/// Variants that a web app shows to an end user ([`Error::InvalidCredentials`],
/// [`Error::Throttled`]) deliberately carry no detail that would reveal whether an account exists.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Wrong username or password. Also returned for unknown usernames, so callers cannot
    /// tell the two apart.
    #[error("invalid username or password")]
    InvalidCredentials,

    /// Too many failed logins for this username or client address; the attempt was refused
    /// without checking the password. `retry_after` is when the oldest counted failure leaves
    /// the window (suitable for a `Retry-After` header).
    #[error("too many failed attempts, try again later")]
    Throttled {
        /// How long until another attempt can be made.
        retry_after: Duration,
    },

    /// Another user already has this username (compared case-insensitively).
    #[error("username {username:?} is already taken")]
    UsernameTaken {
        /// The rejected username.
        username: String,
    },

    /// Another user already has this email address (compared case-insensitively).
    #[error("email address {email:?} is already in use")]
    EmailTaken {
        /// The rejected email address.
        email: String,
    },

    /// An input failed validation (username, email or password policy).
    #[error("invalid {field}: {message}")]
    Validation {
        /// Which input: `"username"`, `"email"`, `"password"`, `"role"` or `"page"`.
        field: &'static str,
        /// A sentence suitable for showing to the user.
        message: String,
    },

    /// The token's signature was valid but it is past its expiry time.
    #[error("the link has expired")]
    TokenExpired,

    /// The token is malformed or its signature does not match (tampered, or signed with
    /// another secret).
    #[error("the link is invalid")]
    TokenInvalid,

    /// The token is genuine but was issued for another purpose (e.g. a reset token presented
    /// as an invitation).
    #[error("the link was issued for {found}, not for {expected}")]
    TokenWrongPurpose {
        /// The purpose the caller asked for.
        expected: TokenPurpose,
        /// The purpose written in the token.
        found: TokenPurpose,
    },

    /// The token was already used, or the password changed since it was issued.
    #[error("the link has already been used")]
    TokenUsed,

    /// The session id is unknown, expired (idle or absolute timeout) or was logged out.
    #[error("the session is invalid or has expired")]
    SessionInvalid,

    /// The operation would leave the system without an administrator.
    #[error("the last administrator cannot be deleted or demoted")]
    LastAdmin,

    /// No user has this id.
    #[error("user {id} not found")]
    NotFound {
        /// The id that was looked up.
        id: UserId,
    },

    /// The configuration is unusable (e.g. a token secret shorter than 32 bytes).
    #[error("invalid accounts configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },

    /// The database was written by a newer version of this crate; refusing to touch it.
    #[error("database schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },

    /// A stored password hash could not be parsed, or hashing failed.
    #[error("password hashing failed: {message}")]
    Hashing {
        /// What argon2 reported.
        message: String,
    },

    /// The storage backend failed.
    #[error("storage error while trying to {operation}: {source}")]
    Storage {
        /// What was being done, e.g. `"insert user"`.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a backend error with the operation that failed.
    pub fn storage(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Storage {
            operation,
            source: source.into(),
        }
    }

    pub(crate) fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }
}
