//! The storage interface. [`crate::Accounts`] holds an `Arc<dyn Store>`; two backends implement
//! it: [`SqliteStore`] (one file, the embedded default) and [`PgStore`] (PostgreSQL, shared by
//! several web app instances). The same behaviour tests run against both
//! (`accounts/tests/store_conformance.rs`).
//!
//! The store keeps data and enforces the invariants that need atomicity (unique names, the last
//! administrator, compare-and-set of the password version); policy (hashing, expiry, throttling
//! thresholds) lives in [`crate::Accounts`], which passes every timestamp in, so stores never read
//! a clock.

mod postgres;
mod sqlite;

pub use postgres::{PG_SCHEMA_VERSION, PgStore};
#[cfg(test)]
pub(crate) use sqlite::migrate;
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

use crate::error::Result;
use crate::model::{DeletedUser, Role, User, UserId};

/// A user with the stored password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user.
    pub user: User,
    /// PHC string of the password hash.
    pub password_hash: String,
}

/// A user to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUserRecord {
    /// Already validated username.
    pub username: String,
    /// Already validated email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// PHC string.
    pub password_hash: String,
    /// Whether the user must choose a new password.
    pub must_change_password: bool,
    /// Creation time.
    pub created_at: i64,
}

/// A password replacement, applied only if the stored password version still equals
/// `expected_version` (so two uses of one token cannot both succeed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordChange {
    /// Whose password.
    pub user_id: UserId,
    /// The new PHC string.
    pub password_hash: String,
    /// The version the caller read; the update is skipped if it changed since.
    pub expected_version: i64,
    /// The new value of `must_change_password`.
    pub must_change_password: bool,
    /// Delete all of the user's sessions except the one with this id hash.
    pub keep_session_hash: Option<String>,
}

/// A stored session (the id itself is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Hex SHA-256 of the session id.
    pub id_hash: String,
    /// Owner.
    pub user_id: UserId,
    /// Anti-CSRF token.
    pub csrf_token: String,
    /// Creation time.
    pub created_at: i64,
    /// Last use.
    pub last_seen_at: i64,
}

/// Persistence for users, sessions and login failures. Implementations must be safe to call
/// from many threads at once.
pub trait Store: Send + Sync {
    /// Checks that the database answers (a trivial query), for health checks.
    fn ping(&self) -> Result<()>;
    /// Inserts a user.
    ///
    /// # Errors
    /// [`crate::Error::UsernameTaken`] / [`crate::Error::EmailTaken`] when another user has
    /// the same username / email ignoring ASCII case; [`crate::Error::Storage`] on backend failure.
    fn insert_user(&self, new: &NewUserRecord) -> Result<User>;
    /// A user by id.
    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>>;
    /// A user by username, ignoring ASCII case.
    fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>>;
    /// A user by email, ignoring ASCII case.
    fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>>;
    /// Users ordered by id, and the total count.
    fn list_users(&self, offset: u64, limit: u32) -> Result<(Vec<User>, u64)>;
    /// How many administrators exist.
    fn count_admins(&self) -> Result<u64>;
    /// Deletes a user and their sessions atomically.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`]; [`crate::Error::LastAdmin`] if they are the only administrator.
    fn delete_user(&self, id: UserId) -> Result<DeletedUser>;
    /// Changes a user's role atomically.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`]; [`crate::Error::LastAdmin`] when demoting the only administrator.
    fn set_role(&self, id: UserId, role: Role) -> Result<User>;
    /// Replaces the password hash, increments the password version and deletes the user's other
    /// sessions, atomically. Returns `None` if the version no longer matches.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] if the user does not exist.
    fn set_password(&self, change: &PasswordChange) -> Result<Option<(User, u64)>>;
    /// Replaces the hash of the same password (re-hash with new parameters) without changing the
    /// password version; skipped if the version changed meanwhile.
    fn replace_password_hash(&self, id: UserId, hash: &str, expected_version: i64) -> Result<()>;
    /// Records a successful login time.
    fn record_login(&self, id: UserId, at: i64) -> Result<()>;
    /// Stores a new session.
    fn insert_session(&self, session: &SessionRecord) -> Result<()>;
    /// A session by id hash.
    fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>>;
    /// Updates a session's last use.
    fn touch_session(&self, id_hash: &str, at: i64) -> Result<()>;
    /// Deletes one session; `false` if it did not exist.
    fn delete_session(&self, id_hash: &str) -> Result<bool>;
    /// Deletes all of a user's sessions except `except` (an id hash); returns how many.
    fn delete_user_sessions(&self, id: UserId, except: Option<&str>) -> Result<u64>;
    /// Deletes sessions last used before `idle_before` or created before `created_before`.
    fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64>;
    /// Records one failed login under each key, and forgets failures older than `prune_before`.
    fn record_login_failure(&self, keys: &[&str], at: i64, prune_before: i64) -> Result<()>;
    /// The number of failures under `key` at or after `since`, and the oldest of them.
    fn login_failures(&self, key: &str, since: i64) -> Result<(u64, Option<i64>)>;
    /// Forgets all failures under `key`.
    fn clear_login_failures(&self, key: &str) -> Result<()>;
}
