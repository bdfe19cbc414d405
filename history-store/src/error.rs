//! The crate's one error type.

use std::path::PathBuf;

use crate::types::Kind;

/// Everything that can go wrong in this crate.
///
/// Variants carry the context needed to act on them; the web app maps
/// [`Error::NotFound`], [`Error::InvalidEntryId`] and [`Error::InvalidCursor`] to 404/400,
/// the input-validation variants to 400/413/415, and the rest to 500.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No entry with this id belongs to this owner. Returned identically whether the id does not
    /// exist or belongs to someone else, so ids cannot be probed.
    #[error("history entry not found")]
    NotFound,

    /// A string offered as an entry id is not one this crate generates (32 lowercase hex digits).
    #[error("invalid entry id {input:?}")]
    InvalidEntryId {
        /// The rejected input (truncated to 64 characters).
        input: String,
    },

    /// A pagination cursor was not produced by this crate.
    #[error("invalid pagination cursor {input:?}")]
    InvalidCursor {
        /// The rejected input (truncated to 64 characters).
        input: String,
    },

    /// A string is not one of the image kinds.
    #[error("unknown image kind {input:?} (expected original, annotated or thumb)")]
    InvalidKind {
        /// The rejected input (truncated to 64 characters).
        input: String,
    },

    /// An image is larger than [`crate::StoreConfig::max_image_bytes`].
    #[error("{kind} image is {size} bytes, more than the limit of {limit}")]
    ImageTooLarge {
        /// Which image.
        kind: Kind,
        /// Its size in bytes.
        size: u64,
        /// The configured limit.
        limit: u64,
    },

    /// An image is empty, not a recognised format, or (for the annotated image) not PNG or JPEG.
    #[error("{kind} image: {reason}")]
    UnsupportedImage {
        /// Which image.
        kind: Kind,
        /// Why it was refused.
        reason: String,
    },

    /// The annotated image could not be decoded to make the thumbnail.
    #[error("could not decode the {kind} image")]
    Decode {
        /// Which image.
        kind: Kind,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },

    /// The thumbnail could not be encoded.
    #[error("could not encode the thumbnail")]
    Encode {
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },

    /// A field of a new entry is out of bounds (for example a URL longer than the limit).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The configuration is unusable; reported by `open`.
    #[error("invalid configuration {field}: {reason}")]
    InvalidConfig {
        /// The configuration field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A file system operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done ("write", "rename", "remove", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A database operation failed.
    #[error("database error during {op}")]
    Database {
        /// What was being done.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A PostgreSQL operation failed (the clustered backend).
    #[error("PostgreSQL: {0}")]
    Postgres(#[source] pg_pool::Error),

    /// An object store operation failed (the clustered backend).
    #[error("object store: {op} {key}")]
    ObjectStore {
        /// What was being done ("put", "get", "delete", "list").
        op: &'static str,
        /// The object's key.
        key: String,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },

    /// The result JSON could not be serialised.
    #[error("could not serialise the result JSON")]
    Json {
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored row does not parse; the database was modified by something else.
    #[error("corrupt history row {id}: {detail}")]
    Corrupt {
        /// The row's id as stored.
        id: String,
        /// What did not parse.
        detail: String,
    },

    /// A row exists but one of its image files is missing on disk.
    #[error("{kind} image file of entry {id} is missing at {path}")]
    MissingFile {
        /// The entry's id.
        id: String,
        /// Which image.
        kind: Kind,
        /// Where it should be.
        path: PathBuf,
    },

    /// The database was created by a newer version of this crate; refusing to touch it.
    #[error("database schema version {found} is newer than the supported {supported}")]
    SchemaTooNew {
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
}

impl From<pg_pool::Error> for Error {
    fn from(e: pg_pool::Error) -> Self {
        match e {
            pg_pool::Error::SchemaTooNew {
                found, supported, ..
            } => Error::SchemaTooNew { found, supported },
            other => Error::Postgres(other),
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn truncate_input(input: &str) -> String {
    input.chars().take(64).collect()
}

pub(crate) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Database { op, source }
}

pub(crate) fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}
