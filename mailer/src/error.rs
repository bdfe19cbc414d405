//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong when starting the mailer or queueing a message.
///
/// Delivery failures are not errors of the `send_*` calls (those only queue): they are recorded in
/// the delivery log as [`DeliveryStatus::Failed`](crate::DeliveryStatus::Failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field has an unusable value; `field` is its path, e.g. `transport.port`.
    #[error("invalid mailer configuration: {field} {reason}")]
    InvalidConfig {
        /// The field, as written in the configuration file.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An email address (a recipient, or the configured sender) does not parse.
    #[error("invalid email address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// A link to put in a message is neither absolute `http(s)://` nor relative to the base URL.
    #[error("invalid link {url:?}: {reason}")]
    InvalidUrl {
        /// The link as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The queue already holds `capacity` messages: this one was not queued and will not be sent.
    #[error("the mail queue is full ({capacity} messages waiting); the message was not queued")]
    QueueFull {
        /// The configured queue capacity.
        capacity: usize,
    },
    /// The background task is gone (its runtime shut down), so nothing can be queued.
    #[error("the mailer's background task has stopped; the message was not queued")]
    Stopped,
    /// [`Mailer::start`](crate::Mailer::start) was called outside a tokio runtime.
    #[error("Mailer::start must be called from inside a tokio runtime")]
    NoRuntime,
    /// The outbox directory cannot be created.
    #[error("cannot create the outbox directory {}: {source}", dir.display())]
    Outbox {
        /// The configured directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The extra root certificate file cannot be read or parsed, or TLS cannot be set up.
    #[error("cannot set up TLS for {host}: {reason}")]
    Tls {
        /// The SMTP host.
        host: String,
        /// What failed (includes the certificate path when it is the cause).
        reason: String,
    },
    /// A template failed to render (a bug in the crate's templates).
    #[error("cannot render the {template} template: {source}")]
    Template {
        /// The template's file name.
        template: &'static str,
        /// The underlying error.
        source: askama::Error,
    },
    /// The message could not be assembled (e.g. a header value lettre refuses).
    #[error("cannot build the message: {reason}")]
    Message {
        /// lettre's explanation.
        reason: String,
    },
    /// [`Mailer::verify`](crate::Mailer::verify) could not talk to the SMTP server.
    #[error("SMTP server {host}:{port} is not usable: {reason}")]
    Smtp {
        /// Configured host.
        host: String,
        /// Configured port.
        port: u16,
        /// The client's or the server's explanation.
        reason: String,
    },
    /// [`Mailer::verify`](crate::Mailer::verify) was called in outbox mode.
    #[error("no SMTP server is configured (outbox mode)")]
    NotSmtp,
}
