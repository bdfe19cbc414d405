//! What both backends read back from their rows the same way: per-category counts, counts per
//! day, the images a deleted row names, and the entry id in an image's file or object name.

use crate::error::{Error, Result};
use crate::types::{Category, Counts, DayCount, EntryId, ImageType, Kind, UserId};

fn category(stored: &str, whose: impl FnOnce() -> String) -> Result<Category> {
    stored.parse().map_err(|_| Error::Corrupt {
        id: whose(),
        detail: format!("unknown category {stored:?}"),
    })
}

/// `(category, count)` rows of one owner as [`Counts`].
pub(crate) fn counts(owner: UserId, rows: Vec<(String, i64)>) -> Result<Counts> {
    let mut counts = Counts::default();
    for (stored, n) in rows {
        let category = category(&stored, || format!("owner {owner}"))?;
        *counts.slot(category) = u64::try_from(n).unwrap_or(0);
    }
    Ok(counts)
}

/// `(day, category, count)` rows as [`DayCount`]s, in their order.
pub(crate) fn day_counts(rows: Vec<(i64, String, i64)>) -> Result<Vec<DayCount>> {
    rows.into_iter()
        .map(|(day, stored, n)| {
            Ok(DayCount {
                day,
                category: category(&stored, || format!("day {day}"))?,
                count: u64::try_from(n).unwrap_or(0),
            })
        })
        .collect()
}

/// The entry and its three images (kind and stored type) that a deleted row named, or `None`
/// for a row this crate did not write, which names nothing that could safely be removed.
pub(crate) fn images_of(
    id: &str,
    types: &[String; 3],
) -> Option<(EntryId, [(Kind, ImageType); 3])> {
    let id = id.parse::<EntryId>().ok()?;
    let [o, a, t] = types;
    let [ko, ka, kt] = Kind::ALL;
    Some((
        id,
        [
            (ko, ImageType::parse_stored(o)?),
            (ka, ImageType::parse_stored(a)?),
            (kt, ImageType::parse_stored(t)?),
        ],
    ))
}

/// The entry an image's file or object name (`<id>-<kind>.<ext>`) belongs to, if it is one this
/// crate would generate.
pub(crate) fn entry_of_name(name: &str) -> Option<EntryId> {
    name.split_once('-')?.0.parse().ok()
}
