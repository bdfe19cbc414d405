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
    /// Removing the original's metadata failed.
    #[error("removing the photo's metadata: {0}")]
    Metadata(String),
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

/// Fetch (for a URL), then on the detection pool: decode, detect and annotate; then, off the
/// pool, encode the annotated copy and record it for `owner`. The entry exists once this returns
/// `Ok`. The request's ticket covers both steps; only the first holds a detection thread, so a
/// thread is not left idle while the entry's files or objects are written and synced.
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
    let detected = app
        .pool
        .run(ticket, move || detect_for_history(&app2, bytes))
        .await
        .map_err(ServiceError::Pool)??;
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || store_detection(&app2, owner, detected, file_name, source))
        .await
        .map_err(|e| ServiceError::Pool(format!("recording a detection: {e}")))?
}

/// What a detection leaves to be stored: the result, the annotated image, and the original as
/// it will be kept (without its metadata when `[history] strip_metadata` is on).
pub struct Detected {
    /// The detector's result.
    pub detection: Detection,
    /// The photo with the boxes drawn (faces blurred when `[history] blur_faces` is on).
    pub annotated: mask_detect::image::RgbImage,
    /// The original's bytes to store.
    pub original: Vec<u8>,
}

/// Decode, detect and annotate one image (blocking, CPU-bound: runs on the detection pool).
pub fn detect_for_history(app: &App, bytes: Vec<u8>) -> Result<Detected> {
    let image = mask_detect::decode_image(&bytes, app.detector.config())?;
    let detection = app.detector.detect(&image)?;
    let annotated = if app.settings.history.blur_faces {
        mask_detect::annotate(&crate::privacy::blur_faces(&image, &detection), &detection)
    } else {
        mask_detect::annotate(&image, &detection)
    };
    let original = if app.settings.history.strip_metadata {
        crate::privacy::strip_metadata(&bytes, &image).map_err(ServiceError::Metadata)?
    } else {
        bytes
    };
    Ok(Detected {
        detection,
        annotated,
        original,
    })
}

/// Encode the annotated copy and record the entry for `owner` (blocking: encoding, then the
/// history's writes and syncs).
pub fn store_detection(
    app: &App,
    owner: UserId,
    detected: Detected,
    file_name: Option<String>,
    source: Source,
) -> Result<(Entry, Detection)> {
    let Detected {
        detection,
        annotated,
        original,
    } = detected;
    let mut jpeg = Vec::new();
    mask_detect::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&annotated)
        .map_err(ServiceError::Encode)?;
    let entry = app.history.record(NewEntry {
        owner: history_store::UserId(owner.0),
        original,
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

/// Decode, detect, annotate and record one image for `owner` (blocking, both steps in turn).
pub fn record_detection(
    app: &App,
    owner: UserId,
    bytes: Vec<u8>,
    file_name: Option<String>,
    source: Source,
) -> Result<(Entry, Detection)> {
    let detected = detect_for_history(app, bytes)?;
    store_detection(app, owner, detected, file_name, source)
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

/// A bearer token for API clients, after one password check (throttled like the login form).
/// The token is a server-side session without a cookie: it ends when unused for the session
/// idle time, at the session lifetime, when the password changes, or when revoked, and each
/// request that carries it costs a hash and a lookup instead of an argon2 verification.
pub fn issue_api_token(
    app: &App,
    username: &str,
    password: &str,
    client: ClientAddr,
) -> Result<(User, accounts::Session)> {
    Ok(app
        .accounts
        .login(username, password, &client.to_string())?)
}

/// The user a bearer token (from [`issue_api_token`]) belongs to, extending its idle time.
pub fn bearer_user(app: &App, token: &str) -> Result<User> {
    let (user, _) = app
        .accounts
        .session(&accounts::SessionId::new(token.to_owned()))?;
    Ok(user)
}

/// Ends a bearer token; `false` if it was not valid.
pub fn revoke_api_token(app: &App, token: &str) -> Result<bool> {
    let id = accounts::SessionId::new(token.to_owned());
    if app.accounts.session(&id).is_err() {
        return Ok(false);
    }
    app.accounts.logout(&id)?;
    Ok(true)
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

/// Delete every upload of `owner` ("delete all my uploads"); returns how many went.
pub fn delete_all_uploads(app: &App, owner: UserId) -> Result<usize> {
    Ok(app.history.delete_user(history_store::UserId(owner.0))?)
}

/// Every entry of `owner` (of one category, or all), newest first, for export.
pub fn all_entries(
    app: &App,
    owner: UserId,
    category: Option<history_store::Category>,
) -> Result<Vec<Entry>> {
    let owner = history_store::UserId(owner.0);
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = app
            .history
            .list(owner, category, after.as_ref(), usize::MAX)?;
        out.extend(page.entries);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// Uploads per day and category over a range of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trend {
    /// The first day (days since the Unix epoch, UTC).
    pub first_day: i64,
    /// One row per day from `first_day`, counts in [`history_store::Category::ALL`] order.
    pub days: Vec<[u64; 4]>,
}

/// Uploads per UTC day and category from `first_day` to `last_day` (inclusive; days since the
/// epoch), of `owner` or, with `None`, of every user.
pub fn trend(app: &App, owner: Option<UserId>, first_day: i64, last_day: i64) -> Result<Trend> {
    const DAY_MS: i64 = 86_400_000;
    let n = usize::try_from(last_day - first_day + 1).unwrap_or(0);
    let mut days = vec![[0u64; 4]; n];
    let counts = app.history.daily_counts(
        owner.map(|o| history_store::UserId(o.0)),
        first_day.saturating_mul(DAY_MS),
        (last_day + 1).saturating_mul(DAY_MS),
    )?;
    for c in counts {
        let slot = history_store::Category::ALL
            .iter()
            .position(|k| *k == c.category)
            .unwrap_or(0);
        if let Some(day) = usize::try_from(c.day - first_day)
            .ok()
            .and_then(|i| days.get_mut(i))
        {
            day[slot] += c.count;
        }
    }
    Ok(Trend { first_day, days })
}

/// Decode and detect one image on the detection pool, recording nothing (`POST /api/detect`,
/// the camera page).
pub async fn detect_only(
    app: &std::sync::Arc<App>,
    ticket: &Ticket,
    bytes: Vec<u8>,
) -> Result<Detection> {
    let app2 = app.clone();
    app.pool
        .run(ticket, move || {
            let image = mask_detect::decode_image(&bytes, app2.detector.config())?;
            Ok(app2.detector.detect(&image)?)
        })
        .await
        .map_err(ServiceError::Pool)?
}

/// Limits on a zip of photos in a batch upload, checked from the central directory and again
/// while inflating, so a header that lies about its sizes gets no further.
#[derive(Debug, Clone, Copy)]
pub struct ZipLimits {
    /// Most entries (files and folders) one zip may hold.
    pub max_entries: usize,
    /// Most bytes all its entries may inflate to together.
    pub max_total_bytes: u64,
    /// Largest inflated size per compressed byte of one entry.
    pub max_ratio: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_entries: 100,
            max_total_bytes: 256 * 1024 * 1024,
            max_ratio: 100,
        }
    }
}

/// Why a zip of photos was refused as a whole; nothing of it was recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZipRefused {
    /// More entries than [`ZipLimits::max_entries`].
    #[error("the zip holds {found} entries: the limit is {limit}")]
    TooManyEntries {
        /// Entries in the central directory.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// The entries inflate (or say they inflate) to more than [`ZipLimits::max_total_bytes`].
    #[error("the zip's photos take more than {limit_mib} MiB uncompressed")]
    TooLarge {
        /// The limit in MiB.
        limit_mib: u64,
    },
    /// One entry is compressed more than [`ZipLimits::max_ratio`] to one.
    #[error("entry {name:?} is compressed more than {limit}:1 (a zip bomb?)")]
    Ratio {
        /// The entry's name.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// One entry inflates to more than its header says.
    #[error("entry {name:?} inflates to more than its header declares")]
    SizeMismatch {
        /// The entry's name.
        name: String,
    },
    /// Not a zip, or one this server cannot read (encrypted, an unsupported method, corrupt).
    #[error("not a readable zip: {0}")]
    Unreadable(String),
}

/// A file of a batch upload: a photo, or a zip of photos (by its `PK\x03\x04` signature).
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// One photo in a zip: its name inside the zip and its inflated bytes.
pub struct ZipPhoto {
    /// The entry's path inside the zip.
    pub name: String,
    /// The inflated bytes.
    pub bytes: Vec<u8>,
}

/// Check a zip of photos against `limits` (its central directory, then every entry inflated
/// into nothing, so lying headers are caught), then inflate it: the photos, in order, skipping
/// folders and macOS resource forks. Blocking: run it on the detection pool.
pub fn unzip_photos(
    zip_bytes: &[u8],
    limits: &ZipLimits,
) -> std::result::Result<Vec<ZipPhoto>, ZipRefused> {
    let unreadable = |e: zip::result::ZipError| ZipRefused::Unreadable(e.to_string());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).map_err(unreadable)?;
    if archive.len() > limits.max_entries {
        return Err(ZipRefused::TooManyEntries {
            found: archive.len(),
            limit: limits.max_entries,
        });
    }
    let too_large = ZipRefused::TooLarge {
        limit_mib: limits.max_total_bytes / (1024 * 1024),
    };
    // From the central directory: declared sizes and ratios.
    let mut declared_total: u64 = 0;
    let mut photos = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(unreadable)?;
        let name = entry.name().map_err(unreadable)?.into_owned();
        declared_total = declared_total.saturating_add(entry.size());
        if declared_total > limits.max_total_bytes {
            return Err(too_large);
        }
        if entry.size() > entry.compressed_size().saturating_mul(limits.max_ratio) {
            return Err(ZipRefused::Ratio {
                name,
                limit: limits.max_ratio,
            });
        }
        if entry.is_file() && !name.starts_with("__MACOSX/") {
            photos.push((i, name, entry.size(), entry.compressed_size()));
        }
    }
    // While inflating: never more than declared (so never beyond the total or the ratio).
    let mut out = Vec::with_capacity(photos.len());
    for (i, name, declared, _) in photos {
        let mut entry = archive.by_index(i).map_err(unreadable)?;
        let mut bytes = Vec::new();
        let read = std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut entry, declared.saturating_add(1)),
            &mut bytes,
        )
        .map_err(|e| ZipRefused::Unreadable(format!("entry {name:?}: {e}")))?;
        if read as u64 > declared {
            return Err(ZipRefused::SizeMismatch { name });
        }
        out.push(ZipPhoto { name, bytes });
    }
    Ok(out)
}

/// What became of one photo of a batch upload.
pub struct BatchItem {
    /// The file name (for a photo in a zip: `zip name/entry name`).
    pub name: String,
    /// The recorded entry and its detection, or why this photo was not recorded.
    pub outcome: std::result::Result<(Entry, Detection), AppError>,
}

/// Why a batch upload was refused as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A zip broke its limits: nothing of the batch was recorded.
    #[error("{file}: {reason}")]
    Zip {
        /// The zip's file name.
        file: String,
        /// Which limit.
        #[source]
        reason: ZipRefused,
    },
    /// More photos than [`ZipLimits::max_entries`] in one batch.
    #[error("too many photos in one batch: the limit is {limit}")]
    TooManyPhotos {
        /// The limit.
        limit: usize,
    },
    /// The detection pool is gone or a job panicked.
    #[error("detection pool: {0}")]
    Pool(String),
}

impl From<BatchError> for AppError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Zip {
                reason: ZipRefused::Unreadable(_),
                ..
            } => AppError::BadRequest(e.to_string()),
            BatchError::Zip { .. } | BatchError::TooManyPhotos { .. } => {
                AppError::TooLarge(e.to_string())
            }
            BatchError::Pool(_) => AppError::internal("running a batch", e),
        }
    }
}

/// Record each photo of a batch upload for `owner` as its own history entry, on the detection
/// pool: zips are opened and checked first (all of them, before anything is recorded, so a zip
/// bomb leaves nothing behind), then each photo is detected and recorded in turn. A photo that
/// cannot be read is reported in its [`BatchItem`] and the others go on.
pub async fn record_batch(
    app: &std::sync::Arc<App>,
    ticket: &Ticket,
    owner: UserId,
    files: Vec<(String, Vec<u8>)>,
    limits: ZipLimits,
) -> std::result::Result<Vec<BatchItem>, BatchError> {
    let app2 = app.clone();
    app.pool
        .run(ticket, move || {
            let mut photos = Vec::new();
            for (file, bytes) in files {
                if is_zip(&bytes) {
                    let inner =
                        unzip_photos(&bytes, &limits).map_err(|reason| BatchError::Zip {
                            file: file.clone(),
                            reason,
                        })?;
                    photos.extend(
                        inner
                            .into_iter()
                            .map(|p| (format!("{file}/{}", p.name), p.bytes)),
                    );
                } else {
                    photos.push((file, bytes));
                }
                if photos.len() > limits.max_entries {
                    return Err(BatchError::TooManyPhotos {
                        limit: limits.max_entries,
                    });
                }
            }
            Ok(photos
                .into_iter()
                .map(|(name, bytes)| {
                    let short = name.rsplit('/').next().unwrap_or(&name).to_string();
                    let outcome = record_detection(&app2, owner, bytes, Some(short), Source::File)
                        .map_err(AppError::from);
                    BatchItem { name, outcome }
                })
                .collect())
        })
        .await
        .map_err(BatchError::Pool)?
}
