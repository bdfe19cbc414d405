//! Durable, per-user history of mask detections.
//!
//! Every detection a user runs is kept: the original image, the annotated image, a JPEG
//! thumbnail made at record time, the detector's result JSON (stored as given), the face counts
//! and [`Category`], the [`Source`] (upload or URL), the user's file name (as data only), the
//! SHA-256 and size of each image, and the time.
//!
//! [`HistoryStore`] keeps rows in SQLite (WAL mode) and images as files under one data directory.
//! [`HistoryStore::record`] writes the files under temporary names, fsyncs and renames them before
//! the row commits, so a crash leaves either a complete entry or nothing visible; opening the store
//! sweeps files left behind. File names are built only from generated [`EntryId`]s, never from
//! user input, so no path can escape the data directory. Every query takes the owner's
//! [`UserId`]; someone else's entry is [`Error::NotFound`], exactly like a missing one.
//!
//! [`PgHistory`] is the clustered backend: rows in PostgreSQL, images in an S3-compatible object
//! store, with the same promise (objects written before the row commits; rows deleted before
//! their objects) for any number of processes. The web app depends on the [`HistoryBackend`]
//! trait, which both implement; `history-store/tests/store.rs` runs the same
//! behaviour tests against both. The store is independent of the detector crate: the caller passes
//! what the detector produced.
//!
//! # Example
//!
//! ```
//! use history_store::{Category, HistoryStore, Kind, NewEntry, Source, StoreConfig, UserId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = HistoryStore::open(dir.path(), StoreConfig::default())?;
//!
//! let photo = std::fs::read("../fixtures/photos/maksssksksss0.png")?;
//! let alice = UserId(1);
//! let entry = store.record(NewEntry {
//!     owner: alice,
//!     original: photo.clone(),
//!     annotated: photo, // normally the detector's annotated PNG or JPEG
//!     result: serde_json::json!({"faces": [{"label": "with_mask", "score": 0.97}]}),
//!     faces: 1,
//!     masked: 1,
//!     unmasked: 0,
//!     category: Category::AllMasked,
//!     source: Source::File,
//!     file_name: Some("office.png".into()),
//! })?;
//!
//! // Newest first, 20 per page; `page.next` continues the listing.
//! let page = store.list(alice, Some(Category::AllMasked), None, 20)?;
//! assert_eq!(page.entries[0].id, entry.id);
//! assert_eq!(store.counts(alice)?.all_masked, 1);
//!
//! let thumb = store.read_image(alice, &entry.id, Kind::Thumb)?;
//! assert_eq!(thumb.image_type.content_type(), "image/jpeg");
//!
//! // Another user cannot see, read or delete it.
//! assert!(matches!(store.get(UserId(2), &entry.id), Err(history_store::Error::NotFound)));
//!
//! assert!(store.delete(alice, &entry.id)?);
//! assert_eq!(store.bytes_used(alice)?, 0);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod backend;
mod clock;
mod error;
mod pg;
mod prepare;
mod rows;
mod store;
mod types;

pub use backend::HistoryBackend;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use pg::{PgHistory, S3Config};
pub use pg_pool::PgPool;
pub use store::{HistoryStore, StoreConfig, SweepReport};
pub use types::{
    Category, Counts, Cursor, DayCount, Entry, EntryId, ImageData, ImageMeta, ImageType, Kind,
    MAX_FILE_NAME_CHARS, MAX_URL_BYTES, NewEntry, Page, Source, UnknownCategory, UserId,
};
