//! The values stored and returned by the store.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, truncate_input};

/// The owner of an entry: an opaque user id assigned by the accounts system.
///
/// The store never interprets it; it only filters by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl From<i64> for UserId {
    fn from(id: i64) -> Self {
        UserId(id)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A generated entry id: 128 random bits as 32 lowercase hex digits (URL-safe).
///
/// Ids are never derived from user input. Parsing (`FromStr`) accepts exactly the generated shape,
/// so an id taken from a URL can be used to build a file path without any escaping concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntryId(String);

impl EntryId {
    const HEX_LEN: usize = 32;

    /// A fresh random id.
    pub(crate) fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        EntryId(hex::encode(bytes))
    }

    /// The id as a string (32 lowercase hex digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_valid(s: &str) -> bool {
        s.len() == Self::HEX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl FromStr for EntryId {
    type Err = Error;

    /// Errors with [`Error::InvalidEntryId`] unless `s` is 32 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self> {
        if Self::is_valid(s) {
            Ok(EntryId(s.to_owned()))
        } else {
            Err(Error::InvalidEntryId {
                input: truncate_input(s),
            })
        }
    }
}

impl TryFrom<String> for EntryId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<EntryId> for String {
    fn from(id: EntryId) -> Self {
        id.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use mask_category::{Category, UnknownCategory};

/// How many entries of one category were recorded on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayCount {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// The category.
    pub category: Category,
    /// Entries of that category that day.
    pub count: u64,
}

/// Where the original image came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "url", rename_all = "snake_case")]
pub enum Source {
    /// Uploaded as a file.
    File,
    /// Fetched from this URL (kept as data, never fetched by the store).
    Url(String),
}

/// Which of an entry's three images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The image as the user supplied it.
    Original,
    /// The image with the detector's boxes drawn on it.
    Annotated,
    /// A small JPEG of the annotated image, made at record time.
    Thumb,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Original, Kind::Annotated, Kind::Thumb];

    /// `original`, `annotated` or `thumb`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Original => "original",
            Kind::Annotated => "annotated",
            Kind::Thumb => "thumb",
        }
    }
}

impl FromStr for Kind {
    type Err = Error;

    /// Errors with [`Error::InvalidKind`] for anything but `original`, `annotated`, `thumb`.
    fn from_str(s: &str) -> Result<Self> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::InvalidKind {
                input: truncate_input(s),
            })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The format of a stored image, detected from its bytes (never from a file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImageType {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
    /// BMP.
    Bmp,
    /// GIF.
    Gif,
    /// TIFF.
    Tiff,
}

impl ImageType {
    const ALL: [ImageType; 6] = [
        ImageType::Jpeg,
        ImageType::Png,
        ImageType::Webp,
        ImageType::Bmp,
        ImageType::Gif,
        ImageType::Tiff,
    ];

    /// The short name stored in the database (`jpeg`, `png`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::Jpeg => "jpeg",
            ImageType::Png => "png",
            ImageType::Webp => "webp",
            ImageType::Bmp => "bmp",
            ImageType::Gif => "gif",
            ImageType::Tiff => "tiff",
        }
    }

    /// The MIME type for a `Content-Type` header.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageType::Jpeg => "image/jpeg",
            ImageType::Png => "image/png",
            ImageType::Webp => "image/webp",
            ImageType::Bmp => "image/bmp",
            ImageType::Gif => "image/gif",
            ImageType::Tiff => "image/tiff",
        }
    }

    /// The file extension used on disk.
    pub fn extension(self) -> &'static str {
        match self {
            ImageType::Jpeg => "jpg",
            ImageType::Png => "png",
            ImageType::Webp => "webp",
            ImageType::Bmp => "bmp",
            ImageType::Gif => "gif",
            ImageType::Tiff => "tiff",
        }
    }

    /// Detects the format from the first bytes; `None` if it is none of the supported formats.
    pub fn detect(bytes: &[u8]) -> Option<ImageType> {
        match image::guess_format(bytes).ok()? {
            image::ImageFormat::Jpeg => Some(ImageType::Jpeg),
            image::ImageFormat::Png => Some(ImageType::Png),
            image::ImageFormat::WebP => Some(ImageType::Webp),
            image::ImageFormat::Bmp => Some(ImageType::Bmp),
            image::ImageFormat::Gif => Some(ImageType::Gif),
            image::ImageFormat::Tiff => Some(ImageType::Tiff),
            _ => None,
        }
    }

    pub(crate) fn to_image_format(self) -> image::ImageFormat {
        match self {
            ImageType::Jpeg => image::ImageFormat::Jpeg,
            ImageType::Png => image::ImageFormat::Png,
            ImageType::Webp => image::ImageFormat::WebP,
            ImageType::Bmp => image::ImageFormat::Bmp,
            ImageType::Gif => image::ImageFormat::Gif,
            ImageType::Tiff => image::ImageFormat::Tiff,
        }
    }

    pub(crate) fn parse_stored(s: &str) -> Option<ImageType> {
        ImageType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A detection to record. Everything is stored as given; the store only checks sizes and image
/// formats.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Who ran the detection.
    pub owner: UserId,
    /// The image as supplied (any of [`ImageType`]'s formats).
    pub original: Vec<u8>,
    /// The annotated image: PNG or JPEG. The thumbnail is made from it.
    pub annotated: Vec<u8>,
    /// The detector's result JSON, stored verbatim.
    pub result: serde_json::Value,
    /// Number of faces detected.
    pub faces: u32,
    /// Number of faces with a mask.
    pub masked: u32,
    /// Number of faces without a mask.
    pub unmasked: u32,
    /// The overall category.
    pub category: Category,
    /// Upload or URL.
    pub source: Source,
    /// The user's file name, kept only as data (never used for a path). Longer names are cut to
    /// [`MAX_FILE_NAME_CHARS`] characters.
    pub file_name: Option<String>,
}

/// File names longer than this many characters are truncated when recorded.
pub const MAX_FILE_NAME_CHARS: usize = 255;

/// URLs longer than this many bytes are refused when recorded.
pub const MAX_URL_BYTES: usize = 8192;

/// Facts about one stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// Its format.
    pub image_type: ImageType,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// A recorded detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The generated id.
    pub id: EntryId,
    /// Who owns it.
    pub owner: UserId,
    /// When it was recorded, in milliseconds since the Unix epoch (from the store's clock).
    pub created_at_ms: i64,
    /// The overall category.
    pub category: Category,
    /// Faces detected.
    pub faces: u32,
    /// Faces with a mask.
    pub masked: u32,
    /// Faces without a mask.
    pub unmasked: u32,
    /// Upload or URL.
    pub source: Source,
    /// The user's file name, as data.
    pub file_name: Option<String>,
    /// The detector's result JSON, as given.
    pub result: serde_json::Value,
    /// The original image (its SHA-256 is the content hash of the upload).
    pub original: ImageMeta,
    /// The annotated image.
    pub annotated: ImageMeta,
    /// The thumbnail (always JPEG).
    pub thumb: ImageMeta,
}

impl Entry {
    /// The recording time as a [`SystemTime`].
    pub fn created_at(&self) -> SystemTime {
        let ms = Duration::from_millis(self.created_at_ms.unsigned_abs());
        if self.created_at_ms >= 0 {
            UNIX_EPOCH + ms
        } else {
            UNIX_EPOCH - ms
        }
    }

    /// Facts about one of the three images.
    pub fn image(&self, kind: Kind) -> &ImageMeta {
        match kind {
            Kind::Original => &self.original,
            Kind::Annotated => &self.annotated,
            Kind::Thumb => &self.thumb,
        }
    }

    /// Bytes the entry occupies on disk (the three images).
    pub fn total_bytes(&self) -> u64 {
        self.original.bytes + self.annotated.bytes + self.thumb.bytes
    }

    /// The cursor that continues a listing after this entry.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at_ms: self.created_at_ms,
            id: self.id.clone(),
        }
    }
}

/// The bytes of one image and how to label them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageData {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Its format; [`ImageType::content_type`] gives the header value.
    pub image_type: ImageType,
}

/// A position in a newest-first listing: opaque to callers, stable across equal timestamps.
///
/// Its string form (`Display`/`FromStr`) can be put in a URL query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub(crate) created_at_ms: i64,
    pub(crate) id: EntryId,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.created_at_ms, self.id)
    }
}

impl FromStr for Cursor {
    type Err = Error;

    /// Errors with [`Error::InvalidCursor`] for strings this crate did not produce.
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidCursor {
            input: truncate_input(s),
        };
        let (ms, id) = s.split_once('_').ok_or_else(invalid)?;
        let created_at_ms = ms.parse::<i64>().map_err(|_| invalid())?;
        let id = id.parse::<EntryId>().map_err(|_| invalid())?;
        Ok(Cursor { created_at_ms, id })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Entries, newest first (ties broken by id, descending).
    pub entries: Vec<Entry>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// How many entries an owner has in each category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Entries with no face.
    pub no_face: u64,
    /// Entries where every face is masked.
    pub all_masked: u64,
    /// Entries where no face is masked.
    pub none_masked: u64,
    /// Entries with masked and unmasked faces.
    pub some_masked: u64,
}

impl Counts {
    /// The count for one category.
    pub fn get(&self, category: Category) -> u64 {
        match category {
            Category::NoFace => self.no_face,
            Category::AllMasked => self.all_masked,
            Category::NoneMasked => self.none_masked,
            Category::SomeMasked => self.some_masked,
        }
    }

    /// All entries.
    pub fn total(&self) -> u64 {
        self.no_face + self.all_masked + self.none_masked + self.some_masked
    }

    pub(crate) fn slot(&mut self, category: Category) -> &mut u64 {
        match category {
            Category::NoFace => &mut self.no_face,
            Category::AllMasked => &mut self.all_masked,
            Category::NoneMasked => &mut self.none_masked,
            Category::SomeMasked => &mut self.some_masked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_generated_hex_and_parse_rejects_everything_else() {
        let id = EntryId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(id.as_str().parse::<EntryId>().unwrap(), id);
        assert_ne!(EntryId::generate(), id);
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789abcdef0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef/123456789abcdef",
            "0123456789abcdef.123456789abcdef",
        ] {
            assert!(
                matches!(bad.parse::<EntryId>(), Err(Error::InvalidEntryId { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at_ms: -5,
            id: EntryId::generate(),
        };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        for bad in [
            "",
            "12",
            "x_0123456789abcdef0123456789abcdef",
            "12_nothex",
            "12_../a",
        ] {
            assert!(
                matches!(bad.parse::<Cursor>(), Err(Error::InvalidCursor { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn source_and_kind_serialise_as_documented() {
        assert_eq!(
            serde_json::to_value(Source::File).unwrap(),
            serde_json::json!({"kind": "file"})
        );
        assert_eq!(
            serde_json::to_value(Source::Url("http://x/a.png".into())).unwrap(),
            serde_json::json!({"kind": "url", "url": "http://x/a.png"})
        );
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        assert!("../thumb".parse::<Kind>().is_err());
    }
}
