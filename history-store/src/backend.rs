//! The storage interface the web app depends on.

use std::fmt::Debug;
use std::time::Duration;

use crate::error::Result;
use crate::types::{
    Category, Counts, Cursor, DayCount, Entry, EntryId, ImageData, Kind, NewEntry, Page, UserId,
};

/// A place to keep detection history.
///
/// [`crate::HistoryStore`] (SQLite rows plus files under a data directory) is the one
/// implementation today; a PostgreSQL + object-store backend can implement the same trait so the
/// web app (which holds an `Arc<dyn HistoryBackend>`) does not change. Every method is blocking;
/// call it from `tokio::task::spawn_blocking` in async code.
///
/// Contract for implementors: `record` makes an entry visible only once all its images are
/// durably stored; every per-entry method returns [`crate::Error::NotFound`] for an id that
/// exists but belongs to another owner, exactly as for one that does not exist; deletions are
/// idempotent.
pub trait HistoryBackend: Send + Sync + Debug {
    /// Stores the images, a thumbnail made from the annotated image, and the row.
    ///
    /// Errors: input-validation variants (`ImageTooLarge`, `UnsupportedImage`, `Decode`,
    /// `InvalidInput`) leave nothing stored; `Io`/`Database` mean the store failed and nothing
    /// was made visible.
    fn record(&self, entry: NewEntry) -> Result<Entry>;

    /// The owner's entries, newest first, optionally of one category, starting after `after`.
    /// `limit` is clamped to `1..=max_page_size`.
    fn list(
        &self,
        owner: UserId,
        category: Option<Category>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page>;

    /// Number of the owner's entries per category.
    fn counts(&self, owner: UserId) -> Result<Counts>;

    /// Entries per UTC day and category recorded in `[from_ms, to_ms)`, of one owner or of
    /// everyone (`None`), ordered by day.
    fn daily_counts(
        &self,
        owner: Option<UserId>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DayCount>>;

    /// One entry; [`crate::Error::NotFound`] unless it exists and belongs to `owner`.
    fn get(&self, owner: UserId, id: &EntryId) -> Result<Entry>;

    /// The bytes of one of an entry's images; [`crate::Error::NotFound`] as for [`Self::get`].
    fn read_image(&self, owner: UserId, id: &EntryId, kind: Kind) -> Result<ImageData>;

    /// Deletes one entry and its files. `Ok(false)` if there was nothing of `owner`'s to delete.
    fn delete(&self, owner: UserId, id: &EntryId) -> Result<bool>;

    /// Deletes every entry and file of `owner` (account deletion). Returns how many entries went.
    fn delete_user(&self, owner: UserId) -> Result<usize>;

    /// Deletes every entry recorded more than `age` ago. Returns how many entries went.
    fn purge_older_than(&self, age: Duration) -> Result<usize>;

    /// Bytes of image data the owner's entries occupy.
    fn bytes_used(&self, owner: UserId) -> Result<u64>;

    /// Checks that the database answers and the image storage is reachable, for health checks.
    fn ping(&self) -> Result<()>;
}
