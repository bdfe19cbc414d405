//! Configuration: a plain struct with defaults, validated once by [`MailerConfig::validate`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use serde::Deserialize;

use crate::Error;

/// Everything the mailer needs, with an embedded default that writes into a local outbox.
///
/// Deserializes from TOML/JSON (every field optional); durations are written as whole seconds
/// (`30`) or as a string with a unit (`"500ms"`, `"15s"`, `"2m"`, `"1h"`).
///
/// ```toml
/// product_name = "Mask Detect"
/// base_url = "https://masks.example.org"
/// from = "Mask Detect <no-reply@example.org>"
///
/// [transport]
/// kind = "smtp"
/// host = "smtp.example.org"
/// port = 587
/// security = "starttls"
/// username = "no-reply@example.org"
/// password = "app-password"
/// timeout = "30s"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailerConfig {
    /// Product name used in subjects, greetings and signatures.
    pub product_name: String,
    /// Base URL of the web app (`http://` or `https://`), shown in every message; relative links
    /// (starting with `/`) passed to the `send_*` methods are joined to it.
    pub base_url: String,
    /// The `From:` mailbox, e.g. `Mask Detect <no-reply@example.org>`.
    pub from: String,
    /// Where messages go.
    pub transport: TransportConfig,
    /// How many messages may wait for the background task; beyond that sending fails with
    /// [`Error::QueueFull`].
    pub queue_capacity: usize,
    /// How many messages the background task delivers at the same time (a message waiting
    /// between retries counts).
    pub max_in_flight: usize,
    /// How many entries the delivery log keeps (the oldest are dropped first).
    pub log_capacity: usize,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl Default for MailerConfig {
    fn default() -> Self {
        Self {
            product_name: "Mask Detect".to_owned(),
            base_url: "http://127.0.0.1:8080".to_owned(),
            from: "Mask Detect <no-reply@localhost>".to_owned(),
            transport: TransportConfig::default(),
            queue_capacity: 100,
            max_in_flight: 4,
            log_capacity: 200,
            retry: RetryPolicy::default(),
        }
    }
}

impl MailerConfig {
    /// Checks every field once, at startup.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field and what is wrong with it;
    /// [`Error::InvalidAddress`] if `from` is not a mailbox.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &'static str, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.product_name.trim().is_empty() {
            return invalid("product_name", "must not be empty");
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return invalid("base_url", "must start with http:// or https://");
        }
        if self.base_url.chars().any(char::is_whitespace) {
            return invalid("base_url", "must not contain whitespace");
        }
        self.sender_mailbox()?;
        if self.queue_capacity == 0 {
            return invalid("queue_capacity", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1");
        }
        if self.log_capacity == 0 {
            return invalid("log_capacity", "must be at least 1");
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts", "must be at least 1");
        }
        if self.retry.factor == 0 {
            return invalid("retry.factor", "must be at least 1");
        }
        match &self.transport {
            TransportConfig::Outbox { dir } => {
                if dir.as_os_str().is_empty() {
                    return invalid("transport.dir", "must not be empty");
                }
            }
            TransportConfig::Smtp(smtp) => smtp.validate()?,
        }
        Ok(())
    }

    pub(crate) fn sender_mailbox(&self) -> Result<Mailbox, Error> {
        self.from
            .parse()
            .map_err(|e: lettre::address::AddressError| Error::InvalidAddress {
                address: self.from.clone(),
                reason: e.to_string(),
            })
    }
}

/// Where messages go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum TransportConfig {
    /// A real SMTP server (a provider's submission port, or a local relay).
    Smtp(SmtpConfig),
    /// The embedded default: each message becomes an `.eml` file in `dir` and its links are
    /// logged at info level, so someone trying the app locally can follow them.
    Outbox {
        /// Directory for the `.eml` files (created at startup).
        dir: PathBuf,
    },
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self::Outbox {
            dir: PathBuf::from("outbox"),
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Security {
    /// Plain connection upgraded with STARTTLS before anything is sent; refused if the server
    /// does not offer it (submission port 587).
    Starttls,
    /// TLS from the first byte (implicit TLS, "SMTPS", port 465).
    Tls,
    /// No encryption at all: only allowed for a server on the loopback interface.
    None,
}

/// An SMTP server.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Host name; with TLS it is also the name the certificate must carry.
    pub host: String,
    /// Port: 587 for STARTTLS, 465 for implicit TLS, 25 or anything for local relays.
    pub port: u16,
    /// Login, if the server requires authentication.
    pub username: Option<String>,
    /// Password for `username`; never printed by `Debug`.
    pub password: Option<Secret>,
    /// Connection security.
    pub security: Security,
    /// Timeout for connecting and for each SMTP command.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Extra PEM file of root certificates to trust besides the built-in web PKI roots
    /// (for a relay with a private CA, or tests with a self-signed certificate).
    pub extra_root_certificates: Option<PathBuf>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            username: None,
            password: None,
            security: Security::Starttls,
            timeout: Duration::from_secs(30),
            extra_root_certificates: None,
        }
    }
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("security", &self.security)
            .field("timeout", &self.timeout)
            .field("extra_root_certificates", &self.extra_root_certificates)
            .finish()
    }
}

impl SmtpConfig {
    fn validate(&self) -> Result<(), Error> {
        let invalid =
            |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.host.trim().is_empty() {
            return invalid("transport.host", "must not be empty".to_owned());
        }
        if self.port == 0 {
            return invalid("transport.port", "must not be 0".to_owned());
        }
        if self.timeout.is_zero() {
            return invalid("transport.timeout", "must be more than zero".to_owned());
        }
        if self.security == Security::None && !is_loopback(&self.host) {
            return invalid(
                "transport.security",
                format!(
                    "\"none\" sends mail and passwords in clear text and is only allowed for a \
                     server on this machine (localhost, 127.0.0.1, ::1), not {:?}; use \
                     \"starttls\" (port 587) or \"tls\" (port 465)",
                    self.host
                ),
            );
        }
        if self.password.is_some() && self.username.is_none() {
            return invalid(
                "transport.username",
                "a password is set but no username".to_owned(),
            );
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A secret string (an SMTP password) that `Debug` never prints.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for handing to the SMTP client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

/// Retries of transient failures (4xx replies, refused or dropped connections, timeouts).
///
/// Attempt `n` that fails transiently is followed by a wait of `base_delay * factor^(n-1)`;
/// permanent failures (5xx replies) are never retried. The default, 3 attempts waiting 15 s then
/// 45 s, spreads the tries over a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait after the first failed attempt.
    #[serde(deserialize_with = "duration::deserialize")]
    pub base_delay: Duration,
    /// Each further wait is this many times the previous one (at least 1).
    pub factor: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(15),
            factor: 3,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based), at most a day.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1);
        let multiplier = self.factor.checked_pow(exponent).unwrap_or(u32::MAX);
        // Capped, so a misconfigured factor cannot park a message for years.
        let cap = Duration::from_secs(24 * 3600);
        self.base_delay
            .checked_mul(multiplier)
            .unwrap_or(cap)
            .min(cap)
    }
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error as _};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Duration::from_secs(s)),
            Raw::Text(text) => parse(&text).ok_or_else(|| {
                D::Error::custom(format!(
                    "invalid duration {text:?}: expected e.g. \"500ms\", \"15s\", \"2m\", \"1h\""
                ))
            }),
        }
    }

    pub(super) fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().ok()?;
        match unit.trim() {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" | "min" => Some(Duration::from_secs(n.checked_mul(60)?)),
            "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_units() {
            assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
            assert_eq!(parse("15s"), Some(Duration::from_secs(15)));
            assert_eq!(parse("2m"), Some(Duration::from_secs(120)));
            assert_eq!(parse("1h"), Some(Duration::from_secs(3600)));
            assert_eq!(parse("15"), None);
            assert_eq!(parse("s"), None);
            assert_eq!(parse("3 weeks"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(host: &str, security: Security) -> MailerConfig {
        MailerConfig {
            transport: TransportConfig::Smtp(SmtpConfig {
                host: host.to_owned(),
                port: 25,
                security,
                ..SmtpConfig::default()
            }),
            ..MailerConfig::default()
        }
    }

    #[test]
    fn default_is_valid_outbox() {
        let config = MailerConfig::default();
        config.validate().unwrap();
        assert!(matches!(config.transport, TransportConfig::Outbox { .. }));
    }

    #[test]
    fn cleartext_only_for_loopback() {
        smtp("localhost", Security::None).validate().unwrap();
        smtp("127.0.0.1", Security::None).validate().unwrap();
        smtp("[::1]", Security::None).validate().unwrap();
        let err = smtp("smtp.example.org", Security::None)
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "transport.security",
                    ..
                }
            ),
            "{err}"
        );
        smtp("smtp.example.org", Security::Starttls)
            .validate()
            .unwrap();
    }

    #[test]
    fn rejects_bad_fields() {
        let bad_from = MailerConfig {
            from: "not an address".to_owned(),
            ..MailerConfig::default()
        };
        assert!(matches!(
            bad_from.validate(),
            Err(Error::InvalidAddress { .. })
        ));
        let bad_url = MailerConfig {
            base_url: "ftp://x".to_owned(),
            ..MailerConfig::default()
        };
        assert!(matches!(
            bad_url.validate(),
            Err(Error::InvalidConfig {
                field: "base_url",
                ..
            })
        ));
        let no_queue = MailerConfig {
            queue_capacity: 0,
            ..MailerConfig::default()
        };
        assert!(matches!(
            no_queue.validate(),
            Err(Error::InvalidConfig {
                field: "queue_capacity",
                ..
            })
        ));
    }

    #[test]
    fn debug_hides_password() {
        let config = SmtpConfig {
            host: "smtp.example.org".to_owned(),
            username: Some("me".to_owned()),
            password: Some(Secret::new("hunter2-very-secret")),
            ..SmtpConfig::default()
        };
        let printed = format!(
            "{config:?} {:?}",
            MailerConfig {
                transport: TransportConfig::Smtp(config.clone()),
                ..MailerConfig::default()
            }
        );
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("smtp.example.org"));
    }

    #[test]
    fn deserializes_with_defaults_and_humane_durations() {
        let config: MailerConfig = serde_json::from_str(
            r#"{
                "base_url": "https://masks.example.org",
                "transport": {
                    "kind": "smtp", "host": "smtp.example.org", "port": 465,
                    "security": "tls", "username": "me", "password": "s3cret", "timeout": "10s"
                },
                "retry": { "base_delay": "500ms" }
            }"#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.product_name, "Mask Detect");
        let TransportConfig::Smtp(smtp) = &config.transport else {
            panic!("{config:?}")
        };
        assert_eq!(smtp.security, Security::Tls);
        assert_eq!(smtp.timeout, Duration::from_secs(10));
        assert_eq!(smtp.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(config.retry.base_delay, Duration::from_millis(500));
        assert_eq!(config.retry.max_attempts, 3);

        let outbox: MailerConfig =
            serde_json::from_str(r#"{"transport": {"kind": "outbox", "dir": "/tmp/x"}}"#).unwrap();
        assert!(matches!(outbox.transport, TransportConfig::Outbox { .. }));
        let typo = serde_json::from_str::<MailerConfig>(
            r#"{"transport": {"kind": "smtp", "host": "h", "passwrd": "x"}}"#,
        );
        assert!(typo.is_err(), "unknown field accepted");
    }

    #[test]
    fn retry_delays_grow() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_after(1), Duration::from_secs(15));
        assert_eq!(policy.delay_after(2), Duration::from_secs(45));
        let huge = RetryPolicy {
            factor: 1000,
            ..policy
        };
        assert!(huge.delay_after(40) <= Duration::from_secs(24 * 3600));
    }
}
