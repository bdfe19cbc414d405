//! The domain types: users, roles, pages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A user's database id. Ids are never reused after deletion, so a caller may key files by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Manages users; at least one always exists once bootstrapped.
    Admin,
    /// An ordinary user.
    User,
}

impl Role {
    /// The stored and serialized name: `"admin"` or `"user"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    /// Parses `"admin"` or `"user"` (exactly); anything else is [`Error::Validation`] on `role`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            other => Err(Error::validation(
                "role",
                format!("unknown role {other:?} (expected \"admin\" or \"user\")"),
            )),
        }
    }
}

/// A user, without the password hash (safe to serialize and show).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The database id.
    pub id: UserId,
    /// The login name, as entered at creation (lookups ignore case).
    pub username: String,
    /// The email address, as entered at creation (lookups ignore case).
    pub email: String,
    /// Admin or ordinary user.
    pub role: Role,
    /// Incremented on every password change; tokens carry it so they stop working afterwards.
    pub password_version: i64,
    /// Set when the password was generated or set by an administrator; the web app should ask
    /// the user to choose a new one.
    pub must_change_password: bool,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
    /// Last successful login, seconds since the Unix epoch.
    pub last_login_at: Option<i64>,
}

impl User {
    /// Whether the user is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Input for [`crate::Accounts::create_user`].
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// 1-64 ASCII letters, digits, `.`, `_` or `-`.
    pub username: String,
    /// A plausible email address of at most 254 characters.
    pub email: String,
    /// The role to give.
    pub role: Role,
    /// The initial password; `None` generates one (returned once by `create_user`) and sets
    /// `must_change_password`.
    pub password: Option<String>,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which page of users to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// 1-based page number.
    pub page: u32,
    /// Users per page, 1 to [`PageRequest::MAX_PER_PAGE`].
    pub per_page: u32,
}

impl PageRequest {
    /// The largest accepted page size.
    pub const MAX_PER_PAGE: u32 = 500;
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: 50,
        }
    }
}

/// One page of users, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPage {
    /// The users on this page.
    pub users: Vec<User>,
    /// The total number of users.
    pub total: u64,
    /// The page number that was requested.
    pub page: u32,
    /// The page size that was requested.
    pub per_page: u32,
}

impl UserPage {
    /// The number of pages at this page size (at least 1).
    pub fn page_count(&self) -> u64 {
        self.total.div_ceil(u64::from(self.per_page.max(1))).max(1)
    }
}

/// What [`crate::Accounts::delete_user`] removed, so the caller can remove the user's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedUser {
    /// The user as it was just before deletion.
    pub user: User,
    /// How many sessions were deleted with it.
    pub sessions_deleted: u64,
}

/// The outcome of [`crate::Accounts::ensure_admin`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminBootstrap {
    /// An administrator already existed; nothing was changed.
    Existing,
    /// An administrator was created.
    Created {
        /// The new administrator.
        user: User,
        /// The generated password, when none was given: show it to the operator once.
        generated_password: Option<String>,
    },
}

impl fmt::Debug for AdminBootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminBootstrap::Existing => f.write_str("Existing"),
            AdminBootstrap::Created {
                user,
                generated_password,
            } => f
                .debug_struct("Created")
                .field("user", user)
                .field(
                    "generated_password",
                    &generated_password.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}
