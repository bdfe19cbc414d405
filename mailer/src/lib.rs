//! Invitation and password-reset email for the web app, sent from a bounded background queue.
//!
//! The web app calls [`Mailer::send_invitation`] or [`Mailer::send_password_reset`]; the call
//! renders the message (multipart text + HTML, templates compiled into the crate), puts it on a
//! bounded queue and returns a [`MessageId`] at once, so a web request never waits for a mail
//! server. A background task on the tokio runtime delivers it:
//!
//! - over SMTP ([`TransportConfig::Smtp`]: STARTTLS, implicit TLS or, on localhost only, plain),
//!   retrying transient failures with backoff ([`RetryPolicy`]) and giving up at once on a
//!   permanent (5xx) reply; the connection is verified at startup and a problem is logged as an
//!   error without stopping the app;
//! - or, the embedded default, into an outbox directory ([`TransportConfig::Outbox`]) as `.eml`
//!   files, logging the links at info level so someone trying the app locally can follow them.
//!
//! Every outcome goes into a bounded delivery log ([`Mailer::deliveries`]) for an admin page. A
//! full queue is an error the caller sees ([`Error::QueueFull`]), never a silent drop. Logs never
//! contain passwords (neither the SMTP password nor the default password in an invitation) and,
//! in SMTP mode, never the links (they carry tokens).
//!
//! ```
//! use std::time::Duration;
//! use mailer::{DeliveryStatus, Mailer, MailerConfig, TransportConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let outbox = tempfile::tempdir()?;
//! let mailer = Mailer::start(MailerConfig {
//!     product_name: "Mask Detect".into(),
//!     base_url: "https://masks.example.org".into(),
//!     from: "Mask Detect <no-reply@example.org>".into(),
//!     transport: TransportConfig::Outbox { dir: outbox.path().to_owned() },
//!     ..MailerConfig::default()
//! })?;
//!
//! // Relative links are joined to the base URL.
//! let id = mailer.send_invitation("ada@example.org", "ada", "tmp-Pa55", "/invite?token=abc")?;
//! let delivery = mailer.wait_for_outcome(id, Duration::from_secs(5)).await.expect("settled");
//! assert_eq!(delivery.status, DeliveryStatus::Sent);
//! assert_eq!(std::fs::read_dir(outbox.path())?.count(), 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod compose;
mod config;
mod deliver;
mod error;
mod log;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

pub use config::{MailerConfig, RetryPolicy, Secret, Security, SmtpConfig, TransportConfig};
pub use error::Error;
pub use log::{Delivery, DeliveryStatus, MessageId, MessageKind};

use compose::{Branding, Composed};
use deliver::{Backend, Job};
use log::DeliveryLog;

/// Convenience alias for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Handle to the running mailer: cheap to clone, `Send + Sync`; the `send_*` methods never block
/// and may be called from any thread, including `spawn_blocking`.
///
/// The background task ends once every clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    branding: Branding,
    queue: mpsc::Sender<Job>,
    queue_capacity: usize,
    log: Arc<DeliveryLog>,
    backend: Arc<Backend>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &*self.inner.backend {
            Backend::Smtp { host, port, .. } => format!("smtp {host}:{port}"),
            Backend::Outbox { dir } => format!("outbox {}", dir.display()),
        };
        f.debug_struct("Mailer")
            .field("transport", &transport)
            .field("queue_capacity", &self.inner.queue_capacity)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Validates `config`, creates the outbox directory or the SMTP client, and spawns the
    /// background task on the current tokio runtime. With SMTP, a second task verifies the
    /// connection and logs the outcome (an unreachable server is an `error!`, not a failure here:
    /// the app should still start, and messages are retried).
    ///
    /// # Errors
    /// [`Error::NoRuntime`] outside a tokio runtime; [`Error::InvalidConfig`] /
    /// [`Error::InvalidAddress`] for a bad configuration; [`Error::Outbox`] if the outbox
    /// directory cannot be created; [`Error::Tls`] if the extra root certificate is unusable.
    pub fn start(config: MailerConfig) -> Result<Mailer> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        config.validate()?;
        let branding = Branding {
            product: config.product_name.trim().to_owned(),
            base_url: config.base_url.clone(),
            from: config.sender_mailbox()?,
        };
        let backend = Arc::new(match &config.transport {
            TransportConfig::Smtp(smtp) => Backend::smtp(smtp)?,
            TransportConfig::Outbox { dir } => Backend::outbox(dir)?,
        });
        let log = Arc::new(DeliveryLog::new(config.log_capacity));
        let (queue, receiver) = mpsc::channel(config.queue_capacity);
        runtime.spawn(deliver::run(
            receiver,
            Arc::clone(&backend),
            Arc::clone(&log),
            config.retry,
            config.max_in_flight,
        ));
        match &*backend {
            Backend::Smtp { host, port, .. } => {
                let (host, port) = (host.clone(), *port);
                let backend = Arc::clone(&backend);
                runtime.spawn(async move {
                    match backend.verify().await {
                        Ok(()) => info!(%host, port, "mailer: SMTP server reachable"),
                        Err(e) => error!(
                            %host, port, error = %e,
                            "mailer: cannot use the SMTP server; email will fail until this is fixed \
                             (check transport host, port, security and credentials)"
                        ),
                    }
                });
            }
            Backend::Outbox { dir } => info!(
                dir = %dir.display(),
                "mailer: no SMTP server configured; messages go to the outbox directory"
            ),
        }
        Ok(Mailer {
            inner: Arc::new(Inner {
                branding,
                queue,
                queue_capacity: config.queue_capacity,
                log,
                backend,
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// Queues an invitation to a new user: their username, the default password, and a link to
    /// set a password of their own. `set_password_url` is used as given if absolute, or joined to
    /// the base URL if it starts with `/`.
    ///
    /// The password appears in the message body (by design) but never in logs.
    ///
    /// # Errors
    /// [`Error::InvalidAddress`] for a bad `to`; [`Error::InvalidUrl`] for a bad link;
    /// [`Error::QueueFull`] if the queue is full (the message is not sent);
    /// [`Error::Stopped`] if the background task is gone.
    pub fn send_invitation(
        &self,
        to: &str,
        username: &str,
        default_password: &str,
        set_password_url: &str,
    ) -> Result<MessageId> {
        let mailbox = compose::recipient(to)?;
        let message = self.inner.branding.invitation(
            &mailbox,
            username,
            default_password,
            set_password_url,
        )?;
        self.enqueue(MessageKind::Invitation, &mailbox, message)
    }

    /// Queues a password-reset message with a link valid for `valid_for` (stated in the message
    /// as e.g. "30 minutes"; the crate does not enforce it, the token's issuer does).
    ///
    /// # Errors
    /// As [`send_invitation`](Self::send_invitation).
    pub fn send_password_reset(
        &self,
        to: &str,
        username: &str,
        reset_url: &str,
        valid_for: Duration,
    ) -> Result<MessageId> {
        let mailbox = compose::recipient(to)?;
        let message = self
            .inner
            .branding
            .password_reset(&mailbox, username, reset_url, valid_for)?;
        self.enqueue(MessageKind::PasswordReset, &mailbox, message)
    }

    /// Queues a short test message, for an admin's "send test email" button.
    ///
    /// # Errors
    /// [`Error::InvalidAddress`], [`Error::QueueFull`], [`Error::Stopped`].
    pub fn send_test(&self, to: &str) -> Result<MessageId> {
        let mailbox = compose::recipient(to)?;
        let message = self.inner.branding.test_message(&mailbox)?;
        self.enqueue(MessageKind::Test, &mailbox, message)
    }

    fn enqueue(
        &self,
        kind: MessageKind,
        to: &lettre::message::Mailbox,
        message: Composed,
    ) -> Result<MessageId> {
        let id = MessageId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let to = to.email.to_string();
        let now = SystemTime::now();
        // Logged before queueing so the worker never updates an entry that is not there yet.
        self.inner.log.push(Delivery {
            id,
            to: to.clone(),
            kind,
            status: DeliveryStatus::Queued,
            attempts: 0,
            queued: now,
            updated: now,
        });
        let job = Job {
            id,
            kind,
            to: to.clone(),
            message,
        };
        match self.inner.queue.try_send(job) {
            Ok(()) => {
                info!(%id, %kind, %to, "mailer: message queued");
                Ok(id)
            }
            Err(e) => {
                self.inner.log.remove(id);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        warn!(%kind, %to, capacity = self.inner.queue_capacity, "mailer: queue full; message not queued");
                        Err(Error::QueueFull {
                            capacity: self.inner.queue_capacity,
                        })
                    }
                    mpsc::error::TrySendError::Closed(_) => Err(Error::Stopped),
                }
            }
        }
    }

    /// The delivery log, newest first (bounded by [`MailerConfig::log_capacity`]).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.log.snapshot()
    }

    /// One entry of the delivery log, if it is still there.
    pub fn delivery(&self, id: MessageId) -> Option<Delivery> {
        self.inner.log.get(id)
    }

    /// Waits until message `id` is [`Sent`](DeliveryStatus::Sent) or
    /// [`Failed`](DeliveryStatus::Failed) and returns its entry; `None` if `timeout` passes first
    /// or the id is not in the log.
    pub async fn wait_for_outcome(&self, id: MessageId, timeout: Duration) -> Option<Delivery> {
        let mut changes = self.inner.log.subscribe();
        let settled = async {
            loop {
                let delivery = self.inner.log.get(id)?;
                if delivery.status.is_final() {
                    return Some(delivery);
                }
                if changes.changed().await.is_err() {
                    return self.inner.log.get(id).filter(|d| d.status.is_final());
                }
            }
        };
        tokio::time::timeout(timeout, settled).await.ok().flatten()
    }

    /// Connects to the configured SMTP server and exchanges a NOOP (what `start` does in the
    /// background), for an admin page's "check connection" button.
    ///
    /// # Errors
    /// [`Error::Smtp`] with the client's or server's explanation; [`Error::NotSmtp`] in outbox
    /// mode.
    pub async fn verify(&self) -> Result<()> {
        self.inner.backend.verify().await
    }

    /// True when messages go to the outbox directory rather than an SMTP server.
    pub fn is_outbox(&self) -> bool {
        matches!(*self.inner.backend, Backend::Outbox { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_needs_a_runtime() {
        assert!(matches!(
            Mailer::start(MailerConfig::default()),
            Err(Error::NoRuntime)
        ));
    }

    #[test]
    fn mailer_is_send_sync() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Mailer>();
        check::<Delivery>();
    }
}
