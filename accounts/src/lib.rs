//! Everything about who a user is: users and roles, argon2id passwords, single-use signed
//! tokens for password reset and invitations, server-side sessions with CSRF tokens, and login
//! throttling, stored behind the [`Store`] trait in SQLite ([`SqliteStore`], the embedded default)
//! or PostgreSQL ([`PgStore`], for several instances sharing one database).
//!
//! The web app holds one [`Accounts`] (cheap to clone, `Send + Sync`) and calls it from
//! `spawn_blocking`: every method does blocking I/O, and logins spend tens of milliseconds in
//! argon2 on purpose.
//!
//! ```
//! use accounts::{Accounts, AccountsConfig, AdminBootstrap, NewUser, Role, TokenPurpose};
//!
//! # fn main() -> Result<(), accounts::Error> {
//! let dir = tempfile::tempdir().map_err(|e| accounts::Error::storage("make a temp dir", e))?;
//! let accounts = Accounts::open(
//!     dir.path().join("accounts.db"),
//!     AccountsConfig::with_secret(*b"a secret of at least 32 bytes!!!"),
//! )?;
//!
//! // First start: make sure someone can administer the site.
//! if let AdminBootstrap::Created { generated_password: Some(pw), .. } =
//!     accounts.ensure_admin("admin", "admin@example.com", None)?
//! {
//!     println!("administrator password (shown once): {pw}");
//! }
//!
//! // The administrator creates a user and emails them an invitation link.
//! let (alice, _unused_generated) = accounts.create_user(NewUser {
//!     username: "alice".into(),
//!     email: "alice@example.com".into(),
//!     role: Role::User,
//!     password: None,
//! })?;
//! let invite = accounts.issue_invite_token(alice.id)?;
//! accounts.set_password_with_token(TokenPurpose::Invite, &invite, "a long passphrase")?;
//!
//! // Alice logs in; the session id goes into a cookie, the CSRF token into forms.
//! let (user, session) = accounts.login("alice", "a long passphrase", "203.0.113.9")?;
//! assert_eq!(user.id, alice.id);
//!
//! // On each request: the cookie gives the session (and extends its idle timeout).
//! let (user, session) = accounts.session(&session.id)?;
//! assert!(session.csrf_matches(&session.csrf_token.clone()));
//! assert!(!user.is_admin());
//!
//! // The invitation link worked once.
//! assert!(matches!(
//!     accounts.set_password_with_token(TokenPurpose::Invite, &invite, "another passphrase"),
//!     Err(accounts::Error::TokenUsed)
//! ));
//!
//! accounts.logout(&session.id)?;
//! assert!(matches!(accounts.session(&session.id), Err(accounts::Error::SessionInvalid)));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod accounts;
mod clock;
mod error;
mod model;
pub mod password;
mod session;
pub mod store;
mod token;
mod validate;

pub use accounts::{Accounts, AccountsConfig, MIN_SECRET_LEN, ThrottleConfig};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use model::{AdminBootstrap, DeletedUser, NewUser, PageRequest, Role, User, UserId, UserPage};
pub use password::{PasswordParams, generate_password};
pub use pg_pool::PgPool;
pub use session::{Session, SessionId};
pub use store::{PgStore, SqliteStore, Store};
pub use token::TokenPurpose;
pub use validate::{
    EMAIL_MAX_LEN, PASSWORD_MAX_LEN, PASSWORD_MIN_LEN, USERNAME_MAX_LEN, check_password_policy,
    validate_email, validate_username,
};
