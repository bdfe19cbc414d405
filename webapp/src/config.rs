//! Configuration: built-in defaults, then an optional TOML file, then `MASK_WEB_*` environment
//! variables. Unknown keys and bad values stop startup with a message naming them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret string that never appears in `Debug` output or logs.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// SMTP connection security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS upgrade (port 587).
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
    /// Plain text: for a server on localhost only.
    None,
}

/// Who may use `POST /api/register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRegistration {
    /// Anyone (the original application's behaviour).
    Open,
    /// Only requests that also carry an administrator's credentials.
    Admin,
    /// Disabled.
    Off,
}

/// The web app's settings. Field names are the TOML keys; `MASK_WEB_<KEY>` (upper case)
/// overrides each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Listen address.
    pub addr: SocketAddr,
    /// SQLite file, images and the mail outbox live here.
    pub data_dir: PathBuf,
    /// Directory with the ONNX models.
    pub models_dir: PathBuf,
    /// Base of links in email; defaults to `http://ADDR`.
    pub public_url: Option<String>,
    /// Name shown in pages and email.
    pub product_name: String,
    /// Administrator user name ensured at startup.
    pub admin_user: String,
    /// Administrator email address.
    pub admin_email: String,
    /// Administrator password; generated and shown once when unset and no admin exists.
    pub admin_password: Option<Secret>,
    /// SMTP host; unset means the local outbox.
    pub smtp_host: Option<String>,
    /// SMTP port (default by security: 587, 465 or 25).
    pub smtp_port: Option<u16>,
    /// SMTP user name.
    pub smtp_user: Option<String>,
    /// SMTP password.
    pub smtp_password: Option<Secret>,
    /// SMTP connection security.
    pub smtp_security: SmtpSecurity,
    /// Sender address of every email.
    pub mail_from: String,
    /// Token signing and cookie key; generated and stored in the data dir when unset.
    pub secret: Option<Secret>,
    /// Mark cookies `Secure` (serve over https).
    pub secure_cookies: bool,
    /// Who may register through the API.
    pub api_registration: ApiRegistration,
    /// Let URL uploads reach private and loopback addresses (tests only).
    pub allow_private_urls: bool,
    /// Largest upload in bytes.
    pub max_upload_bytes: u64,
    /// Detections running at once (default: the number of cores).
    pub detect_workers: usize,
    /// Detections waiting at most; beyond this, requests get 503.
    pub detect_queue: usize,
    /// Detection places (running or waiting, body still arriving included) one client address
    /// may hold; beyond this it gets 429. Behind a reverse proxy every client shares its address.
    pub detect_per_client: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("data"),
            models_dir: PathBuf::from("models"),
            public_url: None,
            product_name: "Mask Detect".into(),
            admin_user: "admin".into(),
            admin_email: "admin@localhost.localdomain".into(),
            admin_password: None,
            smtp_host: None,
            smtp_port: None,
            smtp_user: None,
            smtp_password: None,
            smtp_security: SmtpSecurity::Starttls,
            mail_from: "Mask Detect <no-reply@localhost.localdomain>".into(),
            secret: None,
            secure_cookies: false,
            api_registration: ApiRegistration::Open,
            allow_private_urls: false,
            max_upload_bytes: 64 * 1024 * 1024,
            detect_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            detect_queue: 16,
            detect_per_client: 4,
        }
    }
}

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

const PREFIX: &str = "MASK_WEB_";

impl Settings {
    /// Load defaults, then `file` (if given), then the `MASK_WEB_*` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            table = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        }
        let known = Settings::keys();
        let vars: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .collect();
        for (var, value) in vars {
            let key = var[PREFIX.len()..].to_ascii_lowercase();
            if !known.contains(&key.as_str()) {
                return Err(ConfigError(format!("unknown environment variable {var}")));
            }
            table.insert(
                key.clone(),
                env_value(&key, &value).map_err(|m| ConfigError(format!("{var}: {m}")))?,
            );
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.message().to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn keys() -> [&'static str; 22] {
        [
            "addr",
            "data_dir",
            "models_dir",
            "public_url",
            "product_name",
            "admin_user",
            "admin_email",
            "admin_password",
            "smtp_host",
            "smtp_port",
            "smtp_user",
            "smtp_password",
            "smtp_security",
            "mail_from",
            "secret",
            "secure_cookies",
            "api_registration",
            "allow_private_urls",
            "max_upload_bytes",
            "detect_workers",
            "detect_queue",
            "detect_per_client",
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "public_url must start with http:// or https://, got {url:?}"
            )));
        }
        if self.detect_workers == 0 {
            return Err(ConfigError("detect_workers must be at least 1".into()));
        }
        if self.max_upload_bytes == 0 {
            return Err(ConfigError("max_upload_bytes must be at least 1".into()));
        }
        if self.smtp_host.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError("smtp_host is empty".into()));
        }
        Ok(())
    }

    /// Base URL for links in email, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.addr))
            .trim_end_matches('/')
            .to_string()
    }
}

/// Environment values are strings; give TOML the type each key wants.
fn env_value(key: &str, value: &str) -> Result<toml::Value, String> {
    Ok(match key {
        "secure_cookies" | "allow_private_urls" => match value.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
            "0" | "false" | "no" | "off" | "" => toml::Value::Boolean(false),
            _ => return Err(format!("expected true or false, got {value:?}")),
        },
        "smtp_port" | "max_upload_bytes" | "detect_workers" | "detect_queue"
        | "detect_per_client" => value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a number, got {value:?}"))?,
        _ => toml::Value::String(value.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_out_of_the_box() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(s.data_dir, PathBuf::from("data"));
        assert_eq!(s.public_url(), "http://127.0.0.1:5000");
        assert!(s.smtp_host.is_none());
        assert_eq!(s.api_registration, ApiRegistration::Open);
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "addr = \"127.0.0.1:6000\"\nsmtp_host = \"mail.example.invalid\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("MASK_WEB_ADDR", "127.0.0.1:7000"),
                ("MASK_WEB_SECURE_COOKIES", "true"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:7000");
        assert_eq!(s.smtp_host.as_deref(), Some("mail.example.invalid"));
        assert!(s.secure_cookies);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Settings::load(None, env(&[("MASK_WEB_NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("MASK_WEB_NOPE"), "{e}");
        let e = Settings::load(None, env(&[("MASK_WEB_ADDR", "not an address")])).unwrap_err();
        assert!(
            e.to_string().contains("addr") || e.to_string().contains("address"),
            "{e}"
        );
        let e = Settings::load(None, env(&[("MASK_WEB_SMTP_SECURITY", "ssl")])).unwrap_err();
        assert!(
            e.to_string().contains("ssl") || e.to_string().contains("variant"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "colour = \"blue\"\n").unwrap();
        let e = Settings::load(Some(&file), env(&[])).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Settings::load(None, env(&[("MASK_WEB_SECRET", "hunter2hunter2")])).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
