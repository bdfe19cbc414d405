//! The background side: transports, the queue worker, retries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, info, warn};

use crate::compose::Composed;
use crate::config::{RetryPolicy, Security, SmtpConfig};
use crate::log::DeliveryLog;
use crate::{DeliveryStatus, Error, MessageId, MessageKind};

/// A queued message.
pub(crate) struct Job {
    pub(crate) id: MessageId,
    pub(crate) kind: MessageKind,
    pub(crate) to: String,
    pub(crate) message: Composed,
}

pub(crate) enum Backend {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        host: String,
        port: u16,
    },
    Outbox {
        dir: PathBuf,
    },
}

/// Why one attempt failed, and whether trying again could help.
struct Failure {
    permanent: bool,
    reason: String,
}

impl Backend {
    pub(crate) fn smtp(config: &SmtpConfig) -> Result<Self, Error> {
        let host = config.host.trim().to_owned();
        let tls_error = |reason: String| Error::Tls {
            host: host.clone(),
            reason,
        };
        let tls_parameters = || -> Result<TlsParameters, Error> {
            let mut builder = TlsParameters::builder(host.clone());
            if let Some(path) = &config.extra_root_certificates {
                let pem = std::fs::read(path)
                    .map_err(|e| tls_error(format!("cannot read {}: {e}", path.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
                builder = builder.add_root_certificate(cert);
            }
            builder.build().map_err(|e| tls_error(e.to_string()))
        };
        let tls = match config.security {
            Security::Starttls => Tls::Required(tls_parameters()?),
            Security::Tls => Tls::Wrapper(tls_parameters()?),
            Security::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some(username) = &config.username {
            let password = config
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(username.clone(), password));
        }
        Ok(Backend::Smtp {
            transport: builder.build(),
            host,
            port: config.port,
        })
    }

    pub(crate) fn outbox(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Outbox {
            dir: dir.to_owned(),
            source,
        })?;
        Ok(Backend::Outbox {
            dir: dir.to_owned(),
        })
    }

    /// Opens a connection and exchanges NOOP, so a wrong host, port, TLS mode or password shows
    /// at startup rather than at the first invitation.
    pub(crate) async fn verify(&self) -> Result<(), Error> {
        let Backend::Smtp {
            transport,
            host,
            port,
        } = self
        else {
            return Err(Error::NotSmtp);
        };
        let smtp_error = |reason: String| Error::Smtp {
            host: host.clone(),
            port: *port,
            reason,
        };
        match transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(smtp_error("the server did not answer NOOP".to_owned())),
            Err(e) => Err(smtp_error(e.to_string())),
        }
    }

    async fn attempt(&self, job: &Job) -> Result<(), Failure> {
        match self {
            Backend::Smtp { transport, .. } => transport
                .send_raw(&job.message.envelope, &job.message.bytes)
                .await
                .map(|_| ())
                .map_err(|e| Failure {
                    // Only a 5xx reply is final; refused connections, timeouts and 4xx may heal.
                    permanent: e.is_permanent(),
                    reason: e.to_string(),
                }),
            Backend::Outbox { dir } => {
                let path = write_outbox(dir, job).await.map_err(|e| Failure {
                    permanent: false,
                    reason: format!("cannot write to the outbox {}: {e}", dir.display()),
                })?;
                info!(
                    id = %job.id, kind = %job.kind, to = %job.to, file = %path.display(),
                    "outbox: message written (not sent; no SMTP server configured)"
                );
                for link in &job.message.links {
                    info!(id = %job.id, kind = %job.kind, to = %job.to, %link, "outbox: link in message");
                }
                Ok(())
            }
        }
    }
}

async fn write_outbox(dir: &Path, job: &Job) -> std::io::Result<PathBuf> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = format!("{millis}-{}-{}.eml", job.id, job.kind.slug());
    let path = dir.join(&name);
    // Written aside and renamed, so a reader never sees half a message.
    let partial = dir.join(format!(".{name}.partial"));
    tokio::fs::write(&partial, &job.message.bytes).await?;
    tokio::fs::rename(&partial, &path).await?;
    Ok(path)
}

/// Serves the queue until every sender is gone; each message is delivered in its own task so a
/// message waiting to be retried does not hold up the others (at most `max_in_flight` at once).
pub(crate) async fn run(
    mut queue: mpsc::Receiver<Job>,
    backend: Arc<Backend>,
    log: Arc<DeliveryLog>,
    retry: RetryPolicy,
    max_in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let Some(job) = queue.recv().await else {
            break;
        };
        let backend = Arc::clone(&backend);
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            deliver(job, &backend, &log, retry).await;
            drop(slot);
        });
    }
}

async fn deliver(job: Job, backend: &Backend, log: &DeliveryLog, retry: RetryPolicy) {
    let max_attempts = retry.max_attempts.max(1);
    for attempt in 1..=max_attempts {
        match backend.attempt(&job).await {
            Ok(()) => {
                log.update(job.id, DeliveryStatus::Sent, attempt);
                if matches!(backend, Backend::Smtp { .. }) {
                    info!(id = %job.id, kind = %job.kind, to = %job.to, attempt, "message sent");
                }
                return;
            }
            Err(failure) if failure.permanent || attempt == max_attempts => {
                error!(
                    id = %job.id, kind = %job.kind, to = %job.to, attempt,
                    reason = %failure.reason, "message not delivered; giving up"
                );
                log.update(
                    job.id,
                    DeliveryStatus::Failed {
                        reason: failure.reason,
                    },
                    attempt,
                );
                return;
            }
            Err(failure) => {
                let wait = retry.delay_after(attempt);
                warn!(
                    id = %job.id, kind = %job.kind, to = %job.to, attempt,
                    reason = %failure.reason, retry_in = ?wait, "message not delivered; will retry"
                );
                log.update(
                    job.id,
                    DeliveryStatus::Retrying {
                        attempt,
                        reason: failure.reason,
                    },
                    attempt,
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}
