//! The service: every operation a web app needs, on top of a [`Store`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::model::{
    AdminBootstrap, DeletedUser, NewUser, PageRequest, Role, User, UserId, UserPage,
};
use crate::password::{PasswordHasher, PasswordParams, generate_password, random_hex};
use crate::session::{Session, SessionId};
use crate::store::{NewUserRecord, PasswordChange, SessionRecord, SqliteStore, Store};
use crate::token::{TokenPurpose, TokenSigner};
use crate::validate::{check_password_policy, validate_email, validate_username};

/// The shortest accepted token secret.
pub const MIN_SECRET_LEN: usize = 32;

/// Sessions are re-stamped at most this often, so reading a session is not a write per request.
/// The idle timeout is therefore exact to within this interval.
const TOUCH_INTERVAL_SECS: i64 = 60;

/// Longest throttling key part kept (usernames and addresses come from the network).
const MAX_KEY_LEN: usize = 256;

/// Login throttling limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures per username within `window` after which logins for it are refused (5).
    pub max_failures_per_username: u32,
    /// Failures per client address within `window` after which logins from it are refused (20).
    pub max_failures_per_address: u32,
    /// The sliding window (15 minutes).
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures_per_username: 5,
            max_failures_per_address: 20,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Settings, validated by [`Accounts::open`]. `Debug` does not print the secret.
#[derive(Clone)]
pub struct AccountsConfig {
    /// HS256 key for reset and invitation tokens, at least 32 bytes. There is no usable default:
    /// the empty default is refused, so a deployment cannot run with a guessable key. Keep it
    /// stable across restarts, or outstanding links stop working.
    pub token_secret: Vec<u8>,
    /// argon2id cost for new hashes.
    pub password_params: PasswordParams,
    /// argon2 computations (hash or verify) that may run at once; more wait their turn. Each
    /// holds `password_params.memory_kib` of memory while it runs, so this bounds that memory
    /// however many logins arrive together. Default: the number of cores.
    pub max_concurrent_hashes: usize,
    /// Lifetime of password-reset tokens (10 minutes).
    pub reset_token_ttl: Duration,
    /// Lifetime of invitation tokens (72 hours).
    pub invite_token_ttl: Duration,
    /// A session unused for this long ends (30 minutes).
    pub session_idle_timeout: Duration,
    /// A session ends this long after login however much it is used (12 hours).
    pub session_lifetime: Duration,
    /// Login throttling.
    pub throttle: ThrottleConfig,
    /// Where "now" comes from; tests use a [`crate::ManualClock`].
    pub clock: Arc<dyn Clock>,
}

impl AccountsConfig {
    /// The defaults with the given token secret.
    pub fn with_secret(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            token_secret: secret.into(),
            ..Self::default()
        }
    }

    /// Checks every value; [`Accounts::open`] calls it too.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::Config { message });
        if self.token_secret.len() < MIN_SECRET_LEN {
            return fail(format!(
                "token_secret must be at least {MIN_SECRET_LEN} bytes (got {})",
                self.token_secret.len()
            ));
        }
        for (name, d) in [
            ("reset_token_ttl", self.reset_token_ttl),
            ("invite_token_ttl", self.invite_token_ttl),
            ("session_idle_timeout", self.session_idle_timeout),
            ("session_lifetime", self.session_lifetime),
            ("throttle.window", self.throttle.window),
        ] {
            if d.as_secs() == 0 {
                return fail(format!("{name} must be at least one second"));
            }
        }
        if self.throttle.max_failures_per_username == 0
            || self.throttle.max_failures_per_address == 0
        {
            return fail("throttle limits must be at least 1".into());
        }
        if self.max_concurrent_hashes == 0 {
            return fail("max_concurrent_hashes must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            token_secret: Vec::new(),
            password_params: PasswordParams::default(),
            max_concurrent_hashes: std::thread::available_parallelism().map_or(2, |n| n.get()),
            reset_token_ttl: Duration::from_secs(10 * 60),
            invite_token_ttl: Duration::from_secs(72 * 3600),
            session_idle_timeout: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            throttle: ThrottleConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for AccountsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountsConfig")
            .field(
                "token_secret",
                &format_args!("<{} bytes>", self.token_secret.len()),
            )
            .field("password_params", &self.password_params)
            .field("max_concurrent_hashes", &self.max_concurrent_hashes)
            .field("reset_token_ttl", &self.reset_token_ttl)
            .field("invite_token_ttl", &self.invite_token_ttl)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("session_lifetime", &self.session_lifetime)
            .field("throttle", &self.throttle)
            .field("clock", &self.clock)
            .finish()
    }
}

/// The accounts service: cheap to clone, `Send + Sync`. Every method blocks (database and
/// argon2), so call it from `tokio::task::spawn_blocking` in async code.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: AccountsConfig,
    hasher: PasswordHasher,
    signer: TokenSigner,
    /// Verified against when the username is unknown, so that case costs the same time.
    dummy_hash: String,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn throttle_key(prefix: &str, value: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + value.len().min(MAX_KEY_LEN));
    key.push_str(prefix);
    // ASCII lowercase matches SQLite's NOCASE, so "Bob" and "bob" share a counter.
    key.extend(
        value
            .chars()
            .take(MAX_KEY_LEN)
            .map(|c| c.to_ascii_lowercase()),
    );
    key
}

impl Accounts {
    /// Opens (creating and migrating as needed) the SQLite database at `path`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration; [`Error::SchemaTooNew`] if the database
    /// was written by a newer build; [`Error::Storage`] if it cannot be opened or migrated.
    pub fn open(path: impl AsRef<Path>, config: AccountsConfig) -> Result<Self> {
        config.validate()?;
        let store = SqliteStore::open(path)?;
        Self::with_store(Arc::new(store), config)
    }

    /// Uses any [`Store`] implementation.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration.
    pub fn with_store(store: Arc<dyn Store>, config: AccountsConfig) -> Result<Self> {
        config.validate()?;
        let hasher =
            PasswordHasher::with_concurrency(config.password_params, config.max_concurrent_hashes)?;
        let dummy_hash = hasher.hash(&generate_password())?;
        let signer = TokenSigner::new(&config.token_secret);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                hasher,
                signer,
                dummy_hash,
            }),
        })
    }

    /// The configuration in use (e.g. for the cookie's `Max-Age`).
    pub fn config(&self) -> &AccountsConfig {
        &self.inner.config
    }

    fn now(&self) -> i64 {
        self.inner.config.clock.now()
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    // ---- users -------------------------------------------------------------------------------

    /// Creates a user. With `password: None` a password is generated, returned once, and the
    /// user is marked `must_change_password`.
    ///
    /// # Errors
    /// [`Error::Validation`] for a bad username, email or password (policy: 8-1024 characters,
    /// not the username); [`Error::UsernameTaken`] / [`Error::EmailTaken`];
    /// [`Error::Storage`].
    pub fn create_user(&self, new: NewUser) -> Result<(User, Option<String>)> {
        validate_username(&new.username)?;
        validate_email(&new.email)?;
        let (password, generated) = match new.password {
            Some(p) => {
                check_password_policy(&p, &new.username)?;
                (p, false)
            }
            None => (generate_password(), true),
        };
        let password_hash = self.inner.hasher.hash(&password)?;
        let user = self.store().insert_user(&NewUserRecord {
            username: new.username,
            email: new.email,
            role: new.role,
            password_hash,
            must_change_password: generated,
            created_at: self.now(),
        })?;
        Ok((user, generated.then_some(password)))
    }

    /// A user by id.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Storage`].
    pub fn user(&self, id: UserId) -> Result<User> {
        self.store()
            .user_by_id(id)?
            .map(|r| r.user)
            .ok_or(Error::NotFound { id })
    }

    /// A user by username, ignoring case.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        Ok(self.store().user_by_username(username)?.map(|r| r.user))
    }

    /// A user by email, ignoring case.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        Ok(self.store().user_by_email(email)?.map(|r| r.user))
    }

    /// One page of users, ordered by id.
    ///
    /// # Errors
    /// [`Error::Validation`] on field `page` if `page` is 0 or `per_page` is not in
    /// 1..=[`PageRequest::MAX_PER_PAGE`]; [`Error::Storage`].
    pub fn list_users(&self, page: PageRequest) -> Result<UserPage> {
        if page.page == 0 {
            return Err(Error::validation("page", "page numbers start at 1"));
        }
        if page.per_page == 0 || page.per_page > PageRequest::MAX_PER_PAGE {
            return Err(Error::validation(
                "page",
                format!("per_page must be 1 to {}", PageRequest::MAX_PER_PAGE),
            ));
        }
        let offset = u64::from(page.page - 1) * u64::from(page.per_page);
        let (users, total) = self.store().list_users(offset, page.per_page)?;
        Ok(UserPage {
            users,
            total,
            page: page.page,
            per_page: page.per_page,
        })
    }

    /// Deletes a user and all their sessions; returns what was deleted so the caller can remove
    /// the user's files.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::LastAdmin`] if the user is the only administrator;
    /// [`Error::Storage`].
    pub fn delete_user(&self, id: UserId) -> Result<DeletedUser> {
        self.store().delete_user(id)
    }

    /// Changes a user's role. Sessions are kept: roles are read from the user on every request.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::LastAdmin`] when demoting the only administrator;
    /// [`Error::Storage`].
    pub fn set_role(&self, id: UserId, role: Role) -> Result<User> {
        self.store().set_role(id, role)
    }

    /// Makes sure an administrator exists. If one does, nothing changes. Otherwise one is
    /// created with `username`, `email` and `password`, or a generated password (returned once,
    /// to show to the operator, with `must_change_password` set).
    ///
    /// An existing non-admin user with that name is never promoted (the name might have been
    /// chosen by anyone); that is [`Error::UsernameTaken`].
    ///
    /// # Errors
    /// As [`Accounts::create_user`].
    pub fn ensure_admin(
        &self,
        username: &str,
        email: &str,
        password: Option<String>,
    ) -> Result<AdminBootstrap> {
        if self.store().count_admins()? > 0 {
            return Ok(AdminBootstrap::Existing);
        }
        let created = self.create_user(NewUser {
            username: username.to_owned(),
            email: email.to_owned(),
            role: Role::Admin,
            password,
        });
        match created {
            Ok((user, generated_password)) => Ok(AdminBootstrap::Created {
                user,
                generated_password,
            }),
            // Another process bootstrapped at the same moment.
            Err(Error::UsernameTaken { .. } | Error::EmailTaken { .. })
                if self.store().count_admins()? > 0 =>
            {
                Ok(AdminBootstrap::Existing)
            }
            Err(e) => Err(e),
        }
    }

    // ---- passwords ---------------------------------------------------------------------------

    /// A user changes their own password. All their sessions are deleted except `keep_session`
    /// (the one they are using). Wrong old passwords count towards the username's login
    /// throttle.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Throttled`]; [`Error::InvalidCredentials`] if `old` is
    /// wrong; [`Error::Validation`] if `new` breaks the policy; [`Error::Storage`].
    pub fn change_password(
        &self,
        id: UserId,
        old: &str,
        new: &str,
        keep_session: Option<&SessionId>,
    ) -> Result<User> {
        let record = self.store().user_by_id(id)?.ok_or(Error::NotFound { id })?;
        let now = self.now();
        let user_key = throttle_key("user:", &record.user.username);
        self.check_throttle(
            &[(
                &user_key,
                self.inner.config.throttle.max_failures_per_username,
            )],
            now,
        )?;
        if !self.inner.hasher.verify(old, &record.password_hash)? {
            self.record_failure(&[&user_key], now)?;
            return Err(Error::InvalidCredentials);
        }
        check_password_policy(new, &record.user.username)?;
        let change = PasswordChange {
            user_id: id,
            password_hash: self.inner.hasher.hash(new)?,
            expected_version: record.user.password_version,
            must_change_password: false,
            keep_session_hash: keep_session.map(SessionId::hash),
        };
        // A concurrent change means `old` is no longer the password.
        let (user, _) = self
            .store()
            .set_password(&change)?
            .ok_or(Error::InvalidCredentials)?;
        Ok(user)
    }

    /// An administrator sets a user's password (or a generated one when `None`, returned once).
    /// The user is marked `must_change_password` and all their sessions are deleted.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Validation`]; [`Error::Storage`].
    pub fn set_password(&self, id: UserId, password: Option<String>) -> Result<Option<String>> {
        let record = self.store().user_by_id(id)?.ok_or(Error::NotFound { id })?;
        let (password, generated) = match password {
            Some(p) => {
                check_password_policy(&p, &record.user.username)?;
                (p, false)
            }
            None => (generate_password(), true),
        };
        let change = PasswordChange {
            user_id: id,
            password_hash: self.inner.hasher.hash(&password)?,
            expected_version: record.user.password_version,
            must_change_password: true,
            keep_session_hash: None,
        };
        self.store()
            .set_password(&change)?
            .ok_or_else(|| Error::storage("set a password", "changed concurrently; retry"))?;
        Ok(generated.then_some(password))
    }

    // ---- tokens ------------------------------------------------------------------------------

    /// Issues a password-reset token for the user with this email (ignoring case), or `None` if
    /// there is none. Show the same message either way, so the form does not reveal who has an
    /// account.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn issue_reset_token(&self, email: &str) -> Result<Option<(User, String)>> {
        let Some(record) = self.store().user_by_email(email)? else {
            return Ok(None);
        };
        let token = self.issue(&record.user, TokenPurpose::Reset)?;
        Ok(Some((record.user, token)))
    }

    /// Issues an invitation token with which a new user sets their first password.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Storage`].
    pub fn issue_invite_token(&self, id: UserId) -> Result<String> {
        let user = self.user(id)?;
        self.issue(&user, TokenPurpose::Invite)
    }

    fn issue(&self, user: &User, purpose: TokenPurpose) -> Result<String> {
        let ttl = match purpose {
            TokenPurpose::Reset => self.inner.config.reset_token_ttl,
            TokenPurpose::Invite => self.inner.config.invite_token_ttl,
        };
        self.inner.signer.issue(
            user.id,
            purpose,
            user.password_version,
            self.now(),
            secs(ttl),
        )
    }

    /// Checks a token without using it (e.g. before showing the "choose a password" form) and
    /// returns its user.
    ///
    /// # Errors
    /// [`Error::TokenInvalid`] if malformed, tampered, or its user was deleted;
    /// [`Error::TokenWrongPurpose`]; [`Error::TokenExpired`]; [`Error::TokenUsed`] if the password
    /// changed since it was issued (including by using this token); [`Error::Storage`].
    pub fn verify_token(&self, purpose: TokenPurpose, token: &str) -> Result<User> {
        let claims = self.inner.signer.check(token, purpose, self.now())?;
        let user = self
            .store()
            .user_by_id(UserId(claims.sub))?
            .ok_or(Error::TokenInvalid)?
            .user;
        if user.password_version != claims.pwv {
            return Err(Error::TokenUsed);
        }
        Ok(user)
    }

    /// Uses a reset or invitation token to set a new password. The token works once: the
    /// password version it carries no longer matches afterwards (checked atomically, so two
    /// simultaneous uses cannot both succeed). Clears `must_change_password` and deletes all of
    /// the user's sessions.
    ///
    /// # Errors
    /// As [`Accounts::verify_token`], plus [`Error::Validation`] if `new` breaks the policy.
    pub fn set_password_with_token(
        &self,
        purpose: TokenPurpose,
        token: &str,
        new: &str,
    ) -> Result<User> {
        let user = self.verify_token(purpose, token)?;
        check_password_policy(new, &user.username)?;
        let change = PasswordChange {
            user_id: user.id,
            password_hash: self.inner.hasher.hash(new)?,
            expected_version: user.password_version,
            must_change_password: false,
            keep_session_hash: None,
        };
        match self.store().set_password(&change) {
            Ok(Some((user, _))) => Ok(user),
            Ok(None) => Err(Error::TokenUsed),
            Err(Error::NotFound { .. }) => Err(Error::TokenInvalid),
            Err(e) => Err(e),
        }
    }

    // ---- login and sessions ------------------------------------------------------------------

    /// Checks that the database answers, for health checks.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn ping(&self) -> Result<()> {
        self.store().ping()
    }

    /// Checks a username and password and starts a session: [`Accounts::check_credentials`],
    /// then the login time is recorded and a new session begins.
    ///
    /// # Errors
    /// As [`Accounts::check_credentials`].
    pub fn login(
        &self,
        username: &str,
        password: &str,
        client_addr: &str,
    ) -> Result<(User, Session)> {
        let mut user = self.check_credentials(username, password, client_addr)?;
        let now = self.now();
        self.store().record_login(user.id, now)?;
        user.last_login_at = Some(now);
        let session = self.start_session(user.id, now)?;
        Ok((user, session))
    }

    /// Checks a username and password without starting a session or touching the user's last
    /// login time: for stateless API requests that carry credentials each time.
    ///
    /// Refused without checking the password after 5 failures for the username (known or not)
    /// or 20 from `client_addr` within 15 minutes (configurable). A success clears the username's
    /// failures but not the address's, so one valid account cannot launder guesses at others.
    /// Unknown usernames cost one argon2 verification like known ones. Passwords hashed with old
    /// parameters are re-hashed.
    ///
    /// # Errors
    /// [`Error::Throttled`]; [`Error::InvalidCredentials`] for an unknown user or a wrong
    /// password (indistinguishable); [`Error::Hashing`] if the stored hash is corrupt;
    /// [`Error::Storage`].
    pub fn check_credentials(
        &self,
        username: &str,
        password: &str,
        client_addr: &str,
    ) -> Result<User> {
        let now = self.now();
        let throttle = self.inner.config.throttle;
        let user_key = throttle_key("user:", username);
        let addr_key = throttle_key("addr:", client_addr);
        self.check_throttle(
            &[
                (&user_key, throttle.max_failures_per_username),
                (&addr_key, throttle.max_failures_per_address),
            ],
            now,
        )?;
        let record = self.store().user_by_username(username)?;
        let verified = match &record {
            Some(r) => self.inner.hasher.verify(password, &r.password_hash)?,
            None => {
                // Same work as for a real user; the outcome is irrelevant.
                let _ = self.inner.hasher.verify(password, &self.inner.dummy_hash);
                false
            }
        };
        let Some(record) = record.filter(|_| verified) else {
            self.record_failure(&[&user_key, &addr_key], now)?;
            return Err(Error::InvalidCredentials);
        };
        self.store().clear_login_failures(&user_key)?;
        if self.inner.hasher.needs_rehash(&record.password_hash) {
            let rehashed = self.inner.hasher.hash(password)?;
            self.store().replace_password_hash(
                record.user.id,
                &rehashed,
                record.user.password_version,
            )?;
        }
        Ok(record.user)
    }

    fn start_session(&self, user_id: UserId, now: i64) -> Result<Session> {
        let id = SessionId::generate();
        let record = SessionRecord {
            id_hash: id.hash(),
            user_id,
            csrf_token: random_hex(32),
            created_at: now,
            last_seen_at: now,
        };
        self.store().insert_session(&record)?;
        Ok(self.session_view(id, &record))
    }

    fn session_view(&self, id: SessionId, r: &SessionRecord) -> Session {
        let expires_at = r
            .created_at
            .saturating_add(secs(self.inner.config.session_lifetime));
        let idle_expires_at = r
            .last_seen_at
            .saturating_add(secs(self.inner.config.session_idle_timeout))
            .min(expires_at);
        Session {
            id,
            user_id: r.user_id,
            csrf_token: r.csrf_token.clone(),
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            idle_expires_at,
            expires_at,
        }
    }

    /// Looks up the session for a cookie value and its user, and records the use (extending the
    /// idle timeout). An expired session is deleted.
    ///
    /// # Errors
    /// [`Error::SessionInvalid`] if unknown, logged out, idle too long or past its lifetime;
    /// [`Error::Storage`].
    pub fn session(&self, id: &SessionId) -> Result<(User, Session)> {
        let now = self.now();
        let hash = id.hash();
        let mut record = self.store().session(&hash)?.ok_or(Error::SessionInvalid)?;
        let view = self.session_view(id.clone(), &record);
        if now >= view.idle_expires_at {
            self.store().delete_session(&hash)?;
            return Err(Error::SessionInvalid);
        }
        let user = self
            .store()
            .user_by_id(record.user_id)?
            .ok_or(Error::SessionInvalid)?
            .user;
        let touch_every = TOUCH_INTERVAL_SECS.min(secs(self.inner.config.session_idle_timeout) / 2);
        if now - record.last_seen_at >= touch_every {
            self.store().touch_session(&hash, now)?;
            record.last_seen_at = now;
        }
        Ok((user, self.session_view(id.clone(), &record)))
    }

    /// Ends a session. Returns whether it existed.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn logout(&self, id: &SessionId) -> Result<bool> {
        self.store().delete_session(&id.hash())
    }

    /// Deletes expired sessions; returns how many. Expired sessions are refused anyway, so
    /// this only reclaims space: call it now and then (e.g. hourly).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn purge_expired_sessions(&self) -> Result<u64> {
        let now = self.now();
        self.store().delete_expired_sessions(
            now.saturating_sub(secs(self.inner.config.session_idle_timeout)),
            now.saturating_sub(secs(self.inner.config.session_lifetime)),
        )
    }

    fn check_throttle(&self, keys: &[(&str, u32)], now: i64) -> Result<()> {
        let window = secs(self.inner.config.throttle.window);
        let since = now.saturating_sub(window) + 1;
        let mut retry_after: Option<i64> = None;
        for (key, limit) in keys {
            let (failures, oldest) = self.store().login_failures(key, since)?;
            if failures >= u64::from(*limit) {
                let wait = oldest.map_or(window, |t| t + window - now).max(1);
                retry_after = Some(retry_after.map_or(wait, |w| w.max(wait)));
            }
        }
        match retry_after {
            Some(s) => Err(Error::Throttled {
                retry_after: Duration::from_secs(u64::try_from(s).unwrap_or(1)),
            }),
            None => Ok(()),
        }
    }

    fn record_failure(&self, keys: &[&str], now: i64) -> Result<()> {
        let window = secs(self.inner.config.throttle.window);
        self.store()
            .record_login_failure(keys, now, now.saturating_sub(window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{SCHEMA_VERSION, migrate};

    #[test]
    fn previous_schema_version_upgrades_and_its_users_can_log_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("previous.db");
        let hash = PasswordHasher::new(PasswordParams::default())
            .unwrap()
            .hash("legacy password")
            .unwrap();
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            migrate(&mut conn, SCHEMA_VERSION - 1).unwrap();
            conn.execute(
                "INSERT INTO users (username, email, role, password_hash, created_at)
                 VALUES ('legacy', 'legacy@example.com', 'admin', ?1, 100)",
                [&hash],
            )
            .unwrap();
        }
        let clock = ManualClock::new(1_000);
        let config = AccountsConfig {
            clock: Arc::new(clock),
            ..AccountsConfig::with_secret(*b"0123456789abcdef0123456789abcdef")
        };
        let accounts = Accounts::open(&path, config).unwrap();
        let (user, session) = accounts
            .login("legacy", "legacy password", "10.0.0.1")
            .unwrap();
        assert!(user.is_admin());
        assert_eq!(user.created_at, 100);
        accounts.session(&session.id).unwrap();
        // Throttling needs the table the last step added.
        assert!(matches!(
            accounts.login("legacy", "wrong", "10.0.0.1"),
            Err(Error::InvalidCredentials)
        ));
        assert!(matches!(
            accounts.ensure_admin("x", "x@example.com", None).unwrap(),
            AdminBootstrap::Existing
        ));
    }

    #[test]
    fn throttle_keys_ignore_case_and_are_bounded() {
        assert_eq!(throttle_key("user:", "BoB"), "user:bob");
        assert_eq!(
            throttle_key("addr:", &"x".repeat(10_000)).len(),
            5 + MAX_KEY_LEN
        );
    }
}
