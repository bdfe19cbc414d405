//! Configuration: built-in defaults, then an optional TOML file in sections (`[server]`,
//! `[accounts]`, `[mail]`, `[history]`, `[storage]`, `[detector]`), then `MASK_WEB_*`
//! environment variables.
//!
//! The schema is the section structs below; nothing else lists the keys. Every key is unique
//! across sections, and its environment variable is `MASK_WEB_` and the key in upper case
//! (`[server] addr` is `MASK_WEB_ADDR`, `[detector] detect_workers` is `MASK_WEB_DETECT_WORKERS`).
//! Unknown keys, unknown variables and bad values stop startup with a message naming them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::ProxyNet;

/// A secret string that never appears in `Debug` output or logs.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// SMTP connection security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRegistration {
    /// Anyone (the original application's behaviour).
    Open,
    /// Only requests that also carry an administrator's credentials.
    Admin,
    /// Disabled.
    Off,
}

/// `[server]`: listening, URLs, cookies, request limits, who the clients are.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Listen address.
    pub addr: SocketAddr,
    /// SQLite files, images, the mail outbox and the generated secret live here.
    pub data_dir: PathBuf,
    /// Base of links in email; defaults to `http://ADDR`.
    pub public_url: Option<String>,
    /// Name shown in pages and email.
    pub product_name: String,
    /// Mark cookies `Secure` (serve over https).
    pub secure_cookies: bool,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client.
    /// Empty: the connection's peer is the client and the header is ignored.
    pub trusted_proxies: Vec<ProxyNet>,
    /// Who may register through the API.
    pub api_registration: ApiRegistration,
    /// Let URL uploads reach private and loopback addresses (tests only).
    pub allow_private_urls: bool,
    /// Largest upload in bytes.
    pub max_upload_bytes: u64,
}

/// `[accounts]`: the administrator ensured at startup, the token key, sessions, throttling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    /// Administrator user name ensured at startup.
    pub admin_user: String,
    /// Administrator email address.
    pub admin_email: String,
    /// Administrator password; generated and shown once when unset and no admin exists.
    pub admin_password: Option<Secret>,
    /// Token signing and cookie key; generated and stored in the data dir when unset.
    pub secret: Option<Secret>,
    /// A session unused for this long ends.
    pub session_idle_minutes: u64,
    /// A session ends this long after login however much it is used.
    pub session_lifetime_hours: u64,
    /// Lifetime of password-reset links.
    pub reset_token_minutes: u64,
    /// Lifetime of invitation links.
    pub invite_token_hours: u64,
    /// Failed logins for one user name within the window before it is refused.
    pub login_failures_per_user: u32,
    /// Failed logins from one client address within the window before it is refused.
    pub login_failures_per_address: u32,
    /// The login throttling window.
    pub login_window_minutes: u64,
}

/// `[mail]`: how invitation and reset email leaves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// SMTP host; unset means the local outbox (`DATA_DIR/outbox`).
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
}

/// `[history]`: how long uploads are kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Uploads older than this many days are deleted by the periodic job; 0 keeps everything.
    pub retention_days: u64,
    /// How often the periodic job (retention, expired sessions) runs.
    pub maintenance_interval_minutes: u64,
    /// Store originals without their metadata (EXIF with GPS position, XMP, IPTC, comments).
    pub strip_metadata: bool,
    /// Blur the faces in the stored annotated copies (and so in the thumbnails).
    pub blur_faces: bool,
}

/// `[storage]`: where accounts, history rows and images live. Unset (the default): SQLite
/// files and image files under `data_dir`, for one instance. With `database_url`: PostgreSQL
/// for accounts, sessions, throttling and history rows, and the S3-compatible bucket below for
/// images, so any number of instances can serve the same users.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// PostgreSQL URL, `postgres://user:password@host:port/database`.
    pub database_url: Option<Secret>,
    /// Connections each instance keeps to PostgreSQL at most.
    pub database_pool_size: usize,
    /// The S3 service's URL (`https://...`, or `http://` for a server on a private network).
    pub s3_endpoint: Option<String>,
    /// The bucket for images (it must exist).
    pub s3_bucket: Option<String>,
    /// The bucket's region.
    pub s3_region: String,
    /// The access key id.
    pub s3_access_key_id: Option<String>,
    /// The secret access key.
    pub s3_secret_access_key: Option<Secret>,
    /// A key prefix inside the bucket (empty for none).
    pub s3_prefix: String,
    /// Objects without a row are removed by the periodic job once they are this old (an
    /// upload in flight writes its objects moments before its row).
    pub orphan_grace_minutes: u64,
}

/// `[detector]`: the models, the detection pool and the detector's tunables.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSettings {
    /// Directory with the ONNX models.
    pub models_dir: PathBuf,
    /// Detections running at once (default: the number of cores).
    pub detect_workers: usize,
    /// Detections waiting at most; beyond this, requests get 503.
    pub detect_queue: usize,
    /// Detection places (running or waiting, body still arriving included) one client address
    /// may hold; beyond this it gets 429.
    pub detect_per_client: usize,
    /// `fast` (one CenterFace run) or `accurate` (three runs and the face verifier: more faces
    /// found, about three times the cost per photo; ACCURACY.md).
    pub preset: mask_detect::Preset,
    /// The face detector's input size (longer side, pixels).
    pub input_long_side: u32,
    /// Minimum face score.
    pub face_threshold: f32,
    /// Overlap above which boxes are merged.
    pub nms_iou: f32,
    /// Faces narrower than this (pixels) are dropped.
    pub min_face_size: f32,
    /// Margin around a face for the mask classifier, as a fraction of its size.
    pub crop_margin: f32,
    /// Mask probability from which a face counts as masked.
    pub mask_threshold: f32,
    /// Faces narrower than this (pixels) are flagged uncertain.
    pub uncertain_face_size: f32,
    /// Mask probabilities this close to the threshold are flagged uncertain.
    pub uncertain_margin: f32,
    /// Largest image accepted, in pixels.
    pub max_pixels: u64,
}

/// The web app's settings, one struct per section of the TOML file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[server]`
    pub server: ServerSettings,
    /// `[accounts]`
    pub accounts: AccountSettings,
    /// `[mail]`
    pub mail: MailSettings,
    /// `[history]`
    pub history: HistorySettings,
    /// `[storage]`
    pub storage: StorageSettings,
    /// `[detector]`
    pub detector: DetectorSettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("data"),
            public_url: None,
            product_name: "Mask Detect".into(),
            secure_cookies: false,
            trusted_proxies: Vec::new(),
            api_registration: ApiRegistration::Open,
            allow_private_urls: false,
            max_upload_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for AccountSettings {
    fn default() -> Self {
        let d = accounts::AccountsConfig::default();
        AccountSettings {
            admin_user: "admin".into(),
            admin_email: "admin@localhost.localdomain".into(),
            admin_password: None,
            secret: None,
            session_idle_minutes: d.session_idle_timeout.as_secs() / 60,
            session_lifetime_hours: d.session_lifetime.as_secs() / 3600,
            reset_token_minutes: d.reset_token_ttl.as_secs() / 60,
            invite_token_hours: d.invite_token_ttl.as_secs() / 3600,
            login_failures_per_user: d.throttle.max_failures_per_username,
            login_failures_per_address: d.throttle.max_failures_per_address,
            login_window_minutes: d.throttle.window.as_secs() / 60,
        }
    }
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            smtp_host: None,
            smtp_port: None,
            smtp_user: None,
            smtp_password: None,
            smtp_security: SmtpSecurity::Starttls,
            mail_from: "Mask Detect <no-reply@localhost.localdomain>".into(),
        }
    }
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            retention_days: 0,
            maintenance_interval_minutes: 60,
            strip_metadata: true,
            blur_faces: false,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            database_url: None,
            database_pool_size: 16,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_prefix: String::new(),
            orphan_grace_minutes: 60,
        }
    }
}

impl Default for DetectorSettings {
    fn default() -> Self {
        let d = mask_detect::Config::default();
        DetectorSettings {
            models_dir: PathBuf::from("models"),
            detect_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            detect_queue: 16,
            detect_per_client: 4,
            preset: d.preset,
            input_long_side: d.input_long_side,
            face_threshold: d.face_threshold,
            nms_iou: d.nms_iou,
            min_face_size: d.min_face_size,
            crop_margin: d.crop_margin,
            mask_threshold: d.mask_threshold,
            uncertain_face_size: d.uncertain_face_size,
            uncertain_margin: d.uncertain_margin,
            max_pixels: d.max_pixels,
        }
    }
}

/// A configuration problem, naming the key, variable or file.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

const PREFIX: &str = "MASK_WEB_";

/// The sections' names and their keys, in file order: the one schema that both the TOML file
/// and the environment variables follow.
pub fn schema() -> [(&'static str, &'static [&'static str]); 6] {
    [
        ("server", fields::<ServerSettings>()),
        ("accounts", fields::<AccountSettings>()),
        ("mail", fields::<MailSettings>()),
        ("history", fields::<HistorySettings>()),
        ("storage", fields::<StorageSettings>()),
        ("detector", fields::<DetectorSettings>()),
    ]
}

/// The environment variable that sets `key`.
pub fn env_name(key: &str) -> String {
    format!("{PREFIX}{}", key.to_ascii_uppercase())
}

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
            check_sections(&table, path)?;
        }
        let vars: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .collect();
        for (var, value) in vars {
            let key = var[PREFIX.len()..].to_ascii_lowercase();
            let Some((section, _)) = schema()
                .into_iter()
                .find(|(_, keys)| keys.contains(&key.as_str()))
            else {
                return Err(ConfigError(format!("unknown environment variable {var}")));
            };
            let typed = match section {
                "server" => typed_env_value::<ServerSettings>(&key, &value),
                "accounts" => typed_env_value::<AccountSettings>(&key, &value),
                "mail" => typed_env_value::<MailSettings>(&key, &value),
                "history" => typed_env_value::<HistorySettings>(&key, &value),
                "storage" => typed_env_value::<StorageSettings>(&key, &value),
                _ => typed_env_value::<DetectorSettings>(&key, &value),
            }
            .map_err(|m| ConfigError(format!("{var}: {m}")))?;
            let slot = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = slot {
                t.insert(key, typed);
            }
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.message().to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.server.public_url
            && url::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .is_none()
        {
            return Err(ConfigError(format!(
                "public_url must be an http:// or https:// URL, got {url:?}"
            )));
        }
        if self.detector.detect_workers == 0 {
            return Err(ConfigError("detect_workers must be at least 1".into()));
        }
        if self.server.max_upload_bytes == 0 {
            return Err(ConfigError("max_upload_bytes must be at least 1".into()));
        }
        if self.mail.smtp_host.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError("smtp_host is empty".into()));
        }
        if self.history.maintenance_interval_minutes == 0 {
            return Err(ConfigError(
                "maintenance_interval_minutes must be at least 1".into(),
            ));
        }
        self.clustered_storage()?;
        self.detector_config()
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        self.accounts_config(vec![0; accounts::MIN_SECRET_LEN])
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok(())
    }

    /// Base URL for links in email, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.server.addr))
            .trim_end_matches('/')
            .to_string()
    }

    /// The detector's configuration: its defaults with the `[detector]` values.
    pub fn detector_config(&self) -> mask_detect::Config {
        let d = &self.detector;
        mask_detect::Config {
            preset: d.preset,
            input_long_side: d.input_long_side,
            face_threshold: d.face_threshold,
            nms_iou: d.nms_iou,
            min_face_size: d.min_face_size,
            crop_margin: d.crop_margin,
            mask_threshold: d.mask_threshold,
            uncertain_face_size: d.uncertain_face_size,
            uncertain_margin: d.uncertain_margin,
            max_pixels: d.max_pixels,
            ..mask_detect::Config::default()
        }
    }

    /// The accounts configuration: `secret` as the token key, the `[accounts]` lifetimes and
    /// throttling limits.
    pub fn accounts_config(&self, secret: Vec<u8>) -> accounts::AccountsConfig {
        let a = &self.accounts;
        let minutes = |m: u64| Duration::from_secs(m.saturating_mul(60));
        accounts::AccountsConfig {
            session_idle_timeout: minutes(a.session_idle_minutes),
            session_lifetime: minutes(a.session_lifetime_hours.saturating_mul(60)),
            reset_token_ttl: minutes(a.reset_token_minutes),
            invite_token_ttl: minutes(a.invite_token_hours.saturating_mul(60)),
            throttle: accounts::ThrottleConfig {
                max_failures_per_username: a.login_failures_per_user,
                max_failures_per_address: a.login_failures_per_address,
                window: minutes(a.login_window_minutes),
            },
            ..accounts::AccountsConfig::with_secret(secret)
        }
    }

    /// The PostgreSQL URL and the bucket, when `[storage]` names them; `None` for the embedded
    /// SQLite and files. Half a configuration (a database without a bucket, or the reverse, or
    /// a bucket without its keys) is an error naming what is missing.
    pub fn clustered_storage(
        &self,
    ) -> Result<Option<(String, history_store::S3Config)>, ConfigError> {
        let s = &self.storage;
        let s3_keys = [
            ("s3_endpoint", s.s3_endpoint.is_some()),
            ("s3_bucket", s.s3_bucket.is_some()),
            ("s3_access_key_id", s.s3_access_key_id.is_some()),
            ("s3_secret_access_key", s.s3_secret_access_key.is_some()),
        ];
        let Some(url) = &s.database_url else {
            if let Some((key, _)) = s3_keys.iter().find(|(_, set)| *set) {
                return Err(ConfigError(format!(
                    "{key} is set but database_url is not: images go to S3 only together with \
                     PostgreSQL (set both, or neither for the embedded storage)"
                )));
            }
            return Ok(None);
        };
        if let Some((key, _)) = s3_keys.iter().find(|(_, set)| !*set) {
            return Err(ConfigError(format!(
                "database_url is set but {key} is not: several instances need the images in a \
                 shared S3-compatible bucket"
            )));
        }
        if !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://")) {
            return Err(ConfigError(
                "database_url must be a postgres:// or postgresql:// URL".into(),
            ));
        }
        if s.database_pool_size == 0 {
            return Err(ConfigError("database_pool_size must be at least 1".into()));
        }
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Ok(Some((
            url.0.clone(),
            history_store::S3Config {
                endpoint: text(&s.s3_endpoint),
                bucket: text(&s.s3_bucket),
                region: s.s3_region.clone(),
                access_key_id: text(&s.s3_access_key_id),
                secret_access_key: s
                    .s3_secret_access_key
                    .as_ref()
                    .map(|k| k.0.clone())
                    .unwrap_or_default(),
                prefix: s.s3_prefix.clone(),
            },
        )))
    }

    /// How long uploads are kept (`None`: for ever).
    pub fn retention(&self) -> Option<Duration> {
        (self.history.retention_days > 0)
            .then(|| Duration::from_secs(self.history.retention_days.saturating_mul(86_400)))
    }
}

/// Top-level keys must be sections; a key that belongs in one says which.
fn check_sections(table: &toml::Table, path: &Path) -> Result<(), ConfigError> {
    for (key, value) in table {
        let schema = schema();
        if schema.iter().any(|(s, _)| s == key) {
            if !value.is_table() {
                return Err(ConfigError(format!(
                    "{}: [{key}] must be a section",
                    path.display()
                )));
            }
            continue;
        }
        let hint = schema
            .iter()
            .find(|(_, keys)| keys.contains(&key.as_str()))
            .map(|(s, _)| format!(": it belongs in the [{s}] section"))
            .unwrap_or_default();
        return Err(ConfigError(format!(
            "{}: unknown key `{key}`{hint}",
            path.display()
        )));
    }
    Ok(())
}

/// An environment variable's text as the TOML value its key takes: the section is read with
/// that one key set (numbers, booleans, lists and enums parsed as the field's type asks), and
/// the key's value taken back out.
fn typed_env_value<T>(key: &str, value: &str) -> Result<toml::Value, String>
where
    T: DeserializeOwned + Serialize,
{
    let one = std::iter::once((key.to_string(), env::EnvStr(value.to_string())));
    let section: T = T::deserialize(serde::de::value::MapDeserializer::new(one))
        .map_err(|e: serde::de::value::Error| e.to_string())?;
    toml::Value::try_from(&section)
        .map_err(|e| e.to_string())?
        .get(key)
        .cloned()
        .ok_or_else(|| "no value".to_string())
}

/// The field names of a struct with derived `Deserialize`, read from what the derive passes to
/// `deserialize_struct`.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut found = None;
    let _ = T::deserialize(introspect::Probe(&mut found));
    found.unwrap_or(&[])
}

mod introspect {
    use serde::de::{self, Deserializer, Visitor};

    /// A deserializer that only records the field names it is asked for.
    pub struct Probe<'a>(pub &'a mut Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("introspection only"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(de::Error::custom("introspection only"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
}

mod env {
    use serde::de::value::{Error, SeqDeserializer};
    use serde::de::{self, Deserializer, IntoDeserializer, Visitor};

    /// An environment variable's text, parsed as the field it is read into asks: numbers,
    /// booleans (`true/false`, `1/0`, `yes/no`, `on/off`), comma-separated lists, enum names;
    /// anything else as the string itself.
    pub struct EnvStr(pub String);

    impl<'de> IntoDeserializer<'de, Error> for EnvStr {
        type Deserializer = Self;
        fn into_deserializer(self) -> Self {
            self
        }
    }

    fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, Error> {
        s.trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected {what}, got {s:?}")))
    }

    impl<'de> Deserializer<'de> for EnvStr {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_string(self.0)
        }

        fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            match self.0.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => v.visit_bool(true),
                "0" | "false" | "no" | "off" | "" => v.visit_bool(false),
                _ => Err(de::Error::custom(format!(
                    "expected true or false, got {:?}",
                    self.0
                ))),
            }
        }

        fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_u64(parse(&self.0, "a whole number")?)
        }

        fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_u64(v)
        }

        fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_u64(v)
        }

        fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_u64(v)
        }

        fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_i64(parse(&self.0, "a whole number")?)
        }

        fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_i64(v)
        }

        fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_f64(parse(&self.0, "a number")?)
        }

        fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_f64(v)
        }

        fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            if self.0.is_empty() {
                v.visit_none()
            } else {
                v.visit_some(self)
            }
        }

        fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            let items: Vec<EnvStr> = self
                .0
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| EnvStr(s.to_string()))
                .collect();
            v.visit_seq(SeqDeserializer::new(items.into_iter()))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Error> {
            v.visit_enum(self.0.into_deserializer())
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            v: V,
        ) -> Result<V::Value, Error> {
            v.visit_newtype_struct(self)
        }

        serde::forward_to_deserialize_any! {
            i8 i16 i128 u128 char str string bytes byte_buf unit unit_struct tuple
            tuple_struct map struct identifier ignored_any
        }
    }
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
        assert_eq!(s.server.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(s.server.data_dir, PathBuf::from("data"));
        assert_eq!(s.public_url(), "http://127.0.0.1:5000");
        assert!(s.mail.smtp_host.is_none());
        assert!(s.server.trusted_proxies.is_empty());
        assert_eq!(s.server.api_registration, ApiRegistration::Open);
        assert_eq!(s.retention(), None);
        assert_eq!(
            s.accounts_config(vec![0; 32]).session_lifetime,
            accounts::AccountsConfig::default().session_lifetime
        );
    }

    #[test]
    fn storage_is_embedded_by_default_and_clustered_only_when_complete() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert!(s.clustered_storage().unwrap().is_none());

        let full = [
            (
                "MASK_WEB_DATABASE_URL",
                "postgres://mask:pw@db.internal/mask",
            ),
            ("MASK_WEB_S3_ENDPOINT", "https://s3.example.com"),
            ("MASK_WEB_S3_BUCKET", "images"),
            ("MASK_WEB_S3_ACCESS_KEY_ID", "AKID"),
            ("MASK_WEB_S3_SECRET_ACCESS_KEY", "shh"),
        ];
        let s = Settings::load(None, env(&full)).unwrap();
        let (url, s3) = s.clustered_storage().unwrap().unwrap();
        assert_eq!(url, "postgres://mask:pw@db.internal/mask");
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str()),
            ("images", "us-east-1")
        );
        // Passwords and keys stay out of logs.
        let debug = format!("{s:?}");
        assert!(!debug.contains("pw@") && !debug.contains("shh"), "{debug}");

        // Half a configuration names what is missing.
        for missing in 0..full.len() {
            let partial: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, kv)| *kv)
                .collect();
            let err = Settings::load(None, env(&partial)).unwrap_err().0;
            let key = full[missing].0[PREFIX.len()..].to_ascii_lowercase();
            assert!(err.contains(&key), "{err}");
        }
        let mut wrong = full.to_vec();
        wrong[0] = ("MASK_WEB_DATABASE_URL", "mysql://db/mask");
        let err = Settings::load(None, env(&wrong)).unwrap_err().0;
        assert!(err.contains("postgres://"), "{err}");
    }

    #[test]
    fn every_key_is_unique_across_sections_so_its_variable_is_too() {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for (section, keys) in schema() {
            assert!(!keys.is_empty(), "{section} has no keys");
            for key in keys {
                assert!(seen.insert(*key), "{key} appears in two sections");
                total += 1;
            }
        }
        // Every variable the README documents is still a key.
        for var in [
            "MASK_WEB_ADDR",
            "MASK_WEB_DATA_DIR",
            "MASK_WEB_MODELS_DIR",
            "MASK_WEB_PUBLIC_URL",
            "MASK_WEB_ADMIN_USER",
            "MASK_WEB_ADMIN_EMAIL",
            "MASK_WEB_ADMIN_PASSWORD",
            "MASK_WEB_SMTP_HOST",
            "MASK_WEB_SMTP_PORT",
            "MASK_WEB_SMTP_USER",
            "MASK_WEB_SMTP_PASSWORD",
            "MASK_WEB_SMTP_SECURITY",
            "MASK_WEB_MAIL_FROM",
            "MASK_WEB_SECRET",
            "MASK_WEB_SECURE_COOKIES",
            "MASK_WEB_API_REGISTRATION",
            "MASK_WEB_ALLOW_PRIVATE_URLS",
            "MASK_WEB_MAX_UPLOAD_BYTES",
            "MASK_WEB_DETECT_WORKERS",
            "MASK_WEB_DETECT_QUEUE",
            "MASK_WEB_DETECT_PER_CLIENT",
            "MASK_WEB_TRUSTED_PROXIES",
        ] {
            let key = var[PREFIX.len()..].to_ascii_lowercase();
            assert!(seen.contains(key.as_str()), "{var}");
            assert_eq!(env_name(&key), var);
        }
        assert!(total > 30, "{total}");
    }

    #[test]
    fn environment_overrides_the_sectioned_file_with_typed_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\naddr = \"127.0.0.1:6000\"\n[mail]\nsmtp_host = \"mail.example.invalid\"\n\
             [detector]\nface_threshold = 0.4\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("MASK_WEB_ADDR", "127.0.0.1:7000"),
                ("MASK_WEB_SECURE_COOKIES", "true"),
                ("MASK_WEB_SMTP_PORT", "2525"),
                ("MASK_WEB_ADMIN_PASSWORD", "123456789012"),
                ("MASK_WEB_TRUSTED_PROXIES", "127.0.0.2, 10.0.0.0/8"),
                ("MASK_WEB_INPUT_LONG_SIDE", "640"),
                ("MASK_WEB_PRESET", "accurate"),
                ("MASK_WEB_RETENTION_DAYS", "30"),
                ("MASK_WEB_SESSION_LIFETIME_HOURS", "2"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.addr.to_string(), "127.0.0.1:7000");
        assert_eq!(s.mail.smtp_host.as_deref(), Some("mail.example.invalid"));
        assert_eq!(s.mail.smtp_port, Some(2525));
        assert!(s.server.secure_cookies);
        assert_eq!(
            s.accounts.admin_password.as_ref().map(|p| p.0.as_str()),
            Some("123456789012")
        );
        assert_eq!(
            s.server.trusted_proxies,
            vec![
                "127.0.0.2".parse::<ProxyNet>().unwrap(),
                "10.0.0.0/8".parse().unwrap()
            ]
        );
        let d = s.detector_config();
        assert_eq!(d.input_long_side, 640);
        assert_eq!(d.preset, mask_detect::Preset::Accurate);
        assert!((d.face_threshold - 0.4).abs() < 1e-6);
        assert_eq!(s.retention(), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(
            s.accounts_config(vec![0; 32]).session_lifetime,
            Duration::from_secs(2 * 3600)
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Settings::load(None, env(&[("MASK_WEB_NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("MASK_WEB_NOPE"), "{e}");
        let e = Settings::load(None, env(&[("MASK_WEB_ADDR", "not an address")])).unwrap_err();
        assert!(e.to_string().contains("MASK_WEB_ADDR"), "{e}");
        let e = Settings::load(None, env(&[("MASK_WEB_SMTP_SECURITY", "ssl")])).unwrap_err();
        assert!(
            e.to_string().contains("MASK_WEB_SMTP_SECURITY") && e.to_string().contains("ssl"),
            "{e}"
        );
        let e = Settings::load(None, env(&[("MASK_WEB_PRESET", "best")])).unwrap_err();
        assert!(e.to_string().contains("MASK_WEB_PRESET"), "{e}");
        let e = Settings::load(None, env(&[("MASK_WEB_DETECT_QUEUE", "many")])).unwrap_err();
        assert!(e.to_string().contains("MASK_WEB_DETECT_QUEUE"), "{e}");
        let e =
            Settings::load(None, env(&[("MASK_WEB_TRUSTED_PROXIES", "10.0.0.0/99")])).unwrap_err();
        assert!(e.to_string().contains("MASK_WEB_TRUSTED_PROXIES"), "{e}");
        let e = Settings::load(None, env(&[("MASK_WEB_FACE_THRESHOLD", "1.5")])).unwrap_err();
        assert!(e.to_string().contains("face_threshold"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\ncolour = \"blue\"\n").unwrap();
        let e = Settings::load(Some(&file), env(&[])).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        std::fs::write(&file, "addr = \"127.0.0.1:6000\"\n").unwrap();
        let e = Settings::load(Some(&file), env(&[])).unwrap_err();
        assert!(
            e.to_string().contains("`addr`") && e.to_string().contains("[server]"),
            "{e}"
        );
        std::fs::write(&file, "[smtp]\nhost = \"x\"\n").unwrap();
        let e = Settings::load(Some(&file), env(&[])).unwrap_err();
        assert!(e.to_string().contains("smtp"), "{e}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Settings::load(
            None,
            env(&[
                ("MASK_WEB_SECRET", "hunter2hunter2"),
                ("MASK_WEB_SMTP_PASSWORD", "swordfish"),
            ]),
        )
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("swordfish"));
    }
}
