//! The application state: the four libraries, opened and wired together at startup, on the
//! embedded storage (SQLite and files) or the clustered one (PostgreSQL and S3).

use std::path::Path;
use std::sync::Arc;

use accounts::{Accounts, AdminBootstrap, PgPool, PgStore};
use history_store::{HistoryBackend, HistoryStore, PgHistory, StoreConfig};
use mailer::{Mailer, MailerConfig, SmtpConfig, TransportConfig};
use mask_detect::Detector;

use crate::client::TrustedProxies;
use crate::config::{Settings, SmtpSecurity};
use crate::fetch::FetchLimits;
use crate::pool::Pool;

/// Everything a request handler may use. Shared as `Arc<App>`.
pub struct App {
    /// The validated settings.
    pub settings: Settings,
    /// Users, passwords, tokens, sessions.
    pub accounts: Accounts,
    /// Upload history, behind the storage trait.
    pub history: Arc<dyn HistoryBackend>,
    /// Outgoing email.
    pub mailer: Mailer,
    /// The detector, shared by the pool's threads.
    pub detector: Arc<Detector>,
    /// Bounded detection pool.
    pub pool: Pool,
    /// Limits for URL uploads.
    pub fetch_limits: FetchLimits,
    /// The reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Where the state lives: this instance's files, or a database and bucket shared by many.
    pub storage: Storage,
}

/// The storage the app runs on (`[storage]`).
pub enum Storage {
    /// SQLite files and image files under the data directory: one instance.
    Embedded,
    /// PostgreSQL and an S3-compatible bucket, shared by every instance.
    Clustered {
        /// The connection pool (also used for the periodic job's cluster-wide lock).
        pg: PgPool,
        /// The history backend, for its orphan sweep.
        history: PgHistory,
    },
}

/// Clocks that tests replace to move time forward without sleeping.
#[derive(Default)]
pub struct Clocks {
    /// For sessions, tokens and throttling.
    pub accounts: Option<Arc<dyn accounts::Clock>>,
    /// For the history's timestamps and retention.
    pub history: Option<Arc<dyn history_store::Clock>>,
}

/// What startup has to tell the operator once.
#[derive(Debug, Default)]
pub struct Startup {
    /// The administrator's generated password, when one was created just now.
    pub generated_admin_password: Option<String>,
}

/// A startup failure, with a message that names what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

impl App {
    /// Open every library under the data directory, ensure an administrator exists, and start
    /// the periodic maintenance job ([`crate::jobs`]). Must run inside a tokio runtime (the
    /// mailer and the job are tasks).
    pub async fn start(settings: Settings) -> Result<(Arc<App>, Startup), StartupError> {
        App::start_with_clocks(settings, Clocks::default()).await
    }

    /// As [`App::start`], with clocks replaced (tests move time forward to expire tokens,
    /// sessions and old uploads without sleeping).
    pub async fn start_with_clocks(
        settings: Settings,
        clocks: Clocks,
    ) -> Result<(Arc<App>, Startup), StartupError> {
        let data = settings.server.data_dir.clone();
        std::fs::create_dir_all(&data).map_err(|e| {
            StartupError(format!(
                "cannot create data directory {}: {e}",
                data.display()
            ))
        })?;
        let store_config = StoreConfig {
            max_image_bytes: settings.server.max_upload_bytes.max(32 * 1024 * 1024),
            ..StoreConfig::default()
        };
        let clustered = settings
            .clustered_storage()
            .map_err(|e| StartupError(e.to_string()))?;
        let (accounts, history, storage): (Accounts, Arc<dyn HistoryBackend>, Storage) =
            match clustered {
                None => {
                    let secret = match &settings.accounts.secret {
                        Some(s) => s.0.clone().into_bytes(),
                        None => load_or_create_secret(&data)?,
                    };
                    let mut accounts_config = settings.accounts_config(secret);
                    if let Some(clock) = clocks.accounts {
                        accounts_config.clock = clock;
                    }
                    let accounts = Accounts::open(data.join("accounts.sqlite"), accounts_config)
                        .map_err(|e| StartupError(format!("accounts database: {e}")))?;
                    let history_dir = data.join("history");
                    let history = match clocks.history {
                        Some(clock) => {
                            HistoryStore::open_with_clock(history_dir, store_config, clock)
                        }
                        None => HistoryStore::open(history_dir, store_config),
                    }
                    .map_err(|e| StartupError(format!("history store: {e}")))?;
                    (accounts, Arc::new(history), Storage::Embedded)
                }
                Some((url, s3)) => {
                    let pool_size = settings.storage.database_pool_size;
                    let secret = settings.accounts.secret.as_ref().map(|s| s.0.clone());
                    let history_clock = clocks.history;
                    let accounts_clock = clocks.accounts;
                    let settings2 = settings.clone();
                    // Connecting and migrating block: off the async threads.
                    tokio::task::spawn_blocking(move || {
                        open_clustered(
                            &settings2,
                            &url,
                            pool_size,
                            &s3,
                            store_config,
                            secret,
                            accounts_clock,
                            history_clock,
                        )
                    })
                    .await
                    .map_err(|e| StartupError(e.to_string()))??
                }
            };
        let detector =
            Detector::from_dir(&settings.detector.models_dir, settings.detector_config())
                .map_err(|e| StartupError(format!("detector: {e} (run `make models`)")))?;
        let mailer = Mailer::start(mailer_config(&settings))
            .map_err(|e| StartupError(format!("mailer: {e}")))?;
        if !mailer.is_outbox() {
            let m = mailer.clone();
            tokio::spawn(async move {
                if let Err(e) = m.verify().await {
                    tracing::error!(error = %e, "SMTP server check failed: email will not be delivered until this is fixed");
                }
            });
        }
        let accounts2 = accounts.clone();
        let (user, email, password) = (
            settings.accounts.admin_user.clone(),
            settings.accounts.admin_email.clone(),
            settings
                .accounts
                .admin_password
                .as_ref()
                .map(|p| p.0.clone()),
        );
        let bootstrap =
            tokio::task::spawn_blocking(move || accounts2.ensure_admin(&user, &email, password))
                .await
                .map_err(|e| StartupError(e.to_string()))?
                .map_err(|e| StartupError(format!("creating the administrator: {e}")))?;
        let mut startup = Startup::default();
        if let AdminBootstrap::Created {
            generated_password: Some(p),
            ..
        } = bootstrap
        {
            write_private(&data.join("initial-admin-password"), &format!("{p}\n"))?;
            startup.generated_admin_password = Some(p);
        }
        let fetch_limits = FetchLimits {
            max_bytes: settings.server.max_upload_bytes,
            allow_private: settings.server.allow_private_urls,
            ..FetchLimits::default()
        };
        let pool = Pool::new(
            settings.detector.detect_workers,
            settings.detector.detect_queue,
            settings.detector.detect_per_client,
        )
        .map_err(|e| StartupError(format!("starting detection threads: {e}")))?;
        let app = Arc::new(App {
            trusted_proxies: TrustedProxies::new(&settings.server.trusted_proxies),
            settings,
            accounts,
            history,
            storage,
            mailer,
            detector: Arc::new(detector),
            pool,
            fetch_limits,
        });
        crate::jobs::start(&app);
        Ok((app, startup))
    }
}

/// Accounts and history on PostgreSQL and the bucket. The token key is `[accounts] secret` if
/// set, else the one kept in the database (the first instance to start stores it), so every
/// instance signs and checks the same links and cookies without a hand step.
#[allow(clippy::too_many_arguments)]
fn open_clustered(
    settings: &Settings,
    url: &str,
    pool_size: usize,
    s3: &history_store::S3Config,
    store_config: StoreConfig,
    secret: Option<String>,
    accounts_clock: Option<Arc<dyn accounts::Clock>>,
    history_clock: Option<Arc<dyn history_store::Clock>>,
) -> Result<(Accounts, Arc<dyn HistoryBackend>, Storage), StartupError> {
    let pg =
        PgPool::connect(url, pool_size).map_err(|e| StartupError(format!("PostgreSQL: {e}")))?;
    let store = PgStore::open(pg.clone())
        .map_err(|e| StartupError(format!("accounts database on {}: {e}", pg.target())))?;
    let secret = match secret {
        Some(s) => s,
        None => store
            .shared_secret("token key", &new_secret())
            .map_err(|e| StartupError(format!("reading the shared token key: {e}")))?,
    };
    let mut accounts_config = settings.accounts_config(secret.into_bytes());
    if let Some(clock) = accounts_clock {
        accounts_config.clock = clock;
    }
    let accounts = Accounts::with_store(Arc::new(store), accounts_config)
        .map_err(|e| StartupError(format!("accounts: {e}")))?;
    let history = match history_clock {
        Some(clock) => PgHistory::open_with_clock(pg.clone(), s3, store_config, clock),
        None => PgHistory::open(pg.clone(), s3, store_config),
    }
    .map_err(|e| StartupError(format!("history store (bucket {:?}): {e}", s3.bucket)))?;
    Ok((
        accounts,
        Arc::new(history.clone()),
        Storage::Clustered { pg, history },
    ))
}

fn new_secret() -> String {
    accounts::generate_password() + &accounts::generate_password() + &accounts::generate_password()
}

fn mailer_config(settings: &Settings) -> MailerConfig {
    let s = &settings.mail;
    let transport = match &s.smtp_host {
        None => TransportConfig::Outbox {
            dir: settings.server.data_dir.join("outbox"),
        },
        Some(host) => {
            let security = match s.smtp_security {
                SmtpSecurity::Starttls => mailer::Security::Starttls,
                SmtpSecurity::Tls => mailer::Security::Tls,
                SmtpSecurity::None => mailer::Security::None,
            };
            let port = s.smtp_port.unwrap_or(match s.smtp_security {
                SmtpSecurity::Starttls => 587,
                SmtpSecurity::Tls => 465,
                SmtpSecurity::None => 25,
            });
            TransportConfig::Smtp(SmtpConfig {
                host: host.clone(),
                port,
                username: s.smtp_user.clone(),
                password: s
                    .smtp_password
                    .as_ref()
                    .map(|p| mailer::Secret::new(p.0.clone())),
                security,
                ..SmtpConfig::default()
            })
        }
    };
    MailerConfig {
        product_name: settings.server.product_name.clone(),
        base_url: settings.public_url(),
        from: s.mail_from.clone(),
        transport,
        ..MailerConfig::default()
    }
}

/// The token and cookie key: from the data directory, or made once and kept there (mode 0600),
/// so links in email keep working across restarts.
fn load_or_create_secret(data: &Path) -> Result<Vec<u8>, StartupError> {
    let path = data.join("secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= accounts::MIN_SECRET_LEN => Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => Err(StartupError(format!(
            "{} is too short: delete it to make a new one",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = new_secret();
            write_private(&path, &secret)?;
            Ok(secret.into_bytes())
        }
        Err(e) => Err(StartupError(format!("cannot read {}: {e}", path.display()))),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), StartupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| StartupError(format!("cannot write {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    f.write_all(contents.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)
}
