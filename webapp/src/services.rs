//! The service layer: what composes several libraries, without warp or HTTP types, so handlers
//! only parse, call one of these, and render. Each function is tested directly
//! (`webapp/tests/services.rs`).
//!
//! The blocking functions (database, argon2, email queueing, detection) must run off the async
//! executor: handlers call them through [`crate::web::blocking`] or the detection pool.

use accounts::{NewUser, Role, TokenPurpose, User, UserId};
use history_store::{Entry, NewEntry, Source};
use mask_detect::Detection;

use crate::app::App;
use crate::client::ClientAddr;
use crate::error::AppError;
use crate::fetch::{FetchError, fetch};
use crate::pool::Ticket;

/// Why a service call failed: the library error, unchanged, for the one mapping to HTTP in
/// [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Users, passwords, tokens, sessions.
    #[error(transparent)]
    Accounts(#[from] accounts::Error),
    /// The upload history.
    #[error(transparent)]
    History(#[from] history_store::Error),
    /// Decoding or detection.
    #[error(transparent)]
    Detect(#[from] mask_detect::Error),
    /// Fetching an image by URL.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Queueing an email.
    #[error(transparent)]
    Mail(#[from] mailer::Error),
    /// Encoding the annotated copy.
    #[error("encoding the annotated image")]
    Encode(#[source] mask_detect::image::ImageError),
    /// Serialising the detection for the history.
    #[error("serialising the detection")]
    Json(#[from] serde_json::Error),
    /// The detection pool is gone or a detection panicked.
    #[error("detection pool: {0}")]
    Pool(String),
}

impl From<ServiceError> for AppError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Accounts(e) => e.into(),
            ServiceError::History(e) => e.into(),
            ServiceError::Detect(e) => e.into(),
            ServiceError::Fetch(e) => e.into(),
            ServiceError::Mail(e) => e.into(),
            other => AppError::internal("running a detection", other),
        }
    }
}

type Result<T> = std::result::Result<T, ServiceError>;

/// A user just created by an administrator.
#[derive(Debug)]
pub struct Invited {
    /// The new user.
    pub user: User,
    /// Whether the invitation email was queued (a failure is logged; the user exists anyway
    /// and the administrator can resend it).
    pub mail_queued: bool,
}

/// Create a user with a generated password and queue their invitation: the password and a
/// link to choose their own.
pub fn invite_user(app: &App, username: &str, email: &str, role: Role) -> Result<Invited> {
    let (user, password) = app.accounts.create_user(NewUser {
        username: username.to_string(),
        email: email.to_string(),
        role,
        password: None,
    })?;
    let mail_queued = match send_invitation(app, &user, password.as_deref().unwrap_or("")) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(user = %user.username, error = %crate::error::chain(&e), "invitation not queued");
            false
        }
    };
    Ok(Invited { user, mail_queued })
}

/// Give a user a new generated password and send a new invitation with a new link.
pub fn resend_invitation(app: &App, id: UserId) -> Result<User> {
    let user = app.accounts.user(id)?;
    let password = app
        .accounts
        .set_password(user.id, None)?
        .unwrap_or_default();
    send_invitation(app, &user, &password)?;
    Ok(user)
}

fn send_invitation(app: &App, user: &User, password: &str) -> Result<()> {
    let token = app.accounts.issue_invite_token(user.id)?;
    let link = format!("{}/password/reset?token={token}", app.settings.public_url());
    app.mailer
        .send_invitation(&user.email, &user.username, password, &link)?;
    Ok(())
}

/// Delete a user with their sessions, then their whole upload history; returns how many
/// entries went. The account goes first, so a user whose history removal fails can no longer
/// log in; deleting again (the account now "not found") still removes the history, then
/// reports the account as not found.
pub fn delete_user(app: &App, id: UserId) -> Result<usize> {
    let history = history_store::UserId(id.0);
    match app.accounts.delete_user(id) {
        Ok(_) => Ok(app.history.delete_user(history)?),
        Err(e @ accounts::Error::NotFound { .. }) => {
            app.history.delete_user(history)?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Queue a password-reset link for the account with this email address, if there is one.
/// The caller answers the same either way; a mail failure is logged, not returned, for the
/// same reason.
pub fn request_password_reset(app: &App, email: &str) -> Result<()> {
    if let Some((user, token)) = app.accounts.issue_reset_token(email)? {
        let link = format!("{}/password/reset?token={token}", app.settings.public_url());
        let ttl = app.accounts.config().reset_token_ttl;
        if let Err(e) = app
            .mailer
            .send_password_reset(&user.email, &user.username, &link, ttl)
        {
            tracing::error!(error = %crate::error::chain(&e), "could not queue a password reset email");
        }
    }
    Ok(())
}

/// What a link from an email is for: reset links and invitations share one page.
pub fn check_link(app: &App, token: &str) -> Result<TokenPurpose> {
    match app.accounts.verify_token(TokenPurpose::Reset, token) {
        Err(accounts::Error::TokenWrongPurpose { .. }) => {
            app.accounts.verify_token(TokenPurpose::Invite, token)?;
            Ok(TokenPurpose::Invite)
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(TokenPurpose::Reset),
    }
}

/// Set a new password with a reset or invitation link (single use).
pub fn use_link(app: &App, token: &str, new_password: &str) -> Result<User> {
    let purpose = check_link(app, token)?;
    Ok(app
        .accounts
        .set_password_with_token(purpose, token, new_password)?)
}

/// Register a user through the original API. It has no email field: a user registered without
/// one gets a unique address under the reserved `.invalid` domain, which no mail is ever sent to,
/// made from a hash of the user name so that any valid user name gives a valid address.
pub fn register(app: &App, username: &str, password: &str, email: Option<&str>) -> Result<User> {
    accounts::validate_username(username)?;
    let email = match email {
        Some(e) => e.to_string(),
        None => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(username.to_ascii_lowercase().as_bytes());
            format!("u-{}@users.invalid", &hex::encode(digest)[..32])
        }
    };
    let (user, _) = app.accounts.create_user(NewUser {
        username: username.to_string(),
        email,
        role: Role::User,
        password: Some(password.to_string()),
    })?;
    Ok(user)
}

/// Where the image of an upload comes from.
pub enum Input {
    /// A file's bytes and its client-side name.
    File(Option<String>, Vec<u8>),
    /// A URL to fetch (through the guarded fetcher).
    Url(String),
}

/// Fetch (for a URL), then on the detection pool: decode, detect, annotate and record for
/// `owner`. The entry exists once this returns `Ok`.
pub async fn detect_and_record(
    app: &std::sync::Arc<App>,
    ticket: &Ticket,
    owner: UserId,
    input: Input,
) -> Result<(Entry, Detection)> {
    let (bytes, file_name, source) = match input {
        Input::File(name, bytes) => (bytes, name, Source::File),
        Input::Url(url) => {
            let bytes = fetch(&url, &app.fetch_limits).await?;
            let name = url
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            (bytes.to_vec(), name, Source::Url(url))
        }
    };
    let app2 = app.clone();
    app.pool
        .run(ticket, move || {
            record_detection(&app2, owner, bytes, file_name, source)
        })
        .await
        .map_err(ServiceError::Pool)?
}

/// Decode, detect, annotate and record one image for `owner` (blocking; runs on the pool).
pub fn record_detection(
    app: &App,
    owner: UserId,
    bytes: Vec<u8>,
    file_name: Option<String>,
    source: Source,
) -> Result<(Entry, Detection)> {
    let image = mask_detect::decode_image(&bytes, app.detector.config())?;
    let detection = app.detector.detect(&image)?;
    let annotated = mask_detect::annotate(&image, &detection);
    let mut jpeg = Vec::new();
    mask_detect::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&annotated)
        .map_err(ServiceError::Encode)?;
    let entry = app.history.record(NewEntry {
        owner: history_store::UserId(owner.0),
        original: bytes,
        annotated: jpeg,
        result: serde_json::to_value(&detection)?,
        faces: count(detection.num_faces),
        masked: count(detection.num_masked),
        unmasked: count(detection.num_unmasked),
        category: detection.category,
        source,
        file_name,
    })?;
    Ok((entry, detection))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Check a user name and password for an API request: throttled like the login form, but
/// without a session or a last-login update.
pub fn authenticate(app: &App, username: &str, password: &str, client: ClientAddr) -> Result<User> {
    Ok(app
        .accounts
        .check_credentials(username, password, &client.to_string())?)
}

/// Whether every database and store answers, for `/healthz`: the name of the first that does
/// not, with why.
pub fn health(app: &App) -> std::result::Result<(), String> {
    app.accounts
        .ping()
        .map_err(|e| format!("accounts database: {e}"))?;
    app.history
        .ping()
        .map_err(|e| format!("history store: {e}"))?;
    Ok(())
}
