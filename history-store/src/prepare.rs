//! Backend-independent work done before anything is stored: validation, hashing, thumbnail.

use std::io::Cursor as IoCursor;

use image::ImageReader;
use image::codecs::jpeg::JpegEncoder;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::types::{
    Category, Entry, EntryId, ImageMeta, ImageType, Kind, MAX_FILE_NAME_CHARS, MAX_URL_BYTES,
    NewEntry, Source, UserId,
};

/// Limits applied while preparing an entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrepareLimits {
    pub max_image_bytes: u64,
    pub thumbnail_size: u32,
    pub thumbnail_quality: u8,
    pub max_pixels: u64,
}

/// An entry ready to be written: everything computed, nothing stored yet.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub id: EntryId,
    pub owner: UserId,
    pub created_at_ms: i64,
    pub category: Category,
    pub faces: u32,
    pub masked: u32,
    pub unmasked: u32,
    pub source: Source,
    pub file_name: Option<String>,
    pub result_json: String,
    pub result: serde_json::Value,
    /// Indexed like [`Kind::ALL`]: original, annotated, thumb.
    pub images: [(ImageMeta, Vec<u8>); 3],
}

impl Prepared {
    /// The entry as stored, once every part of it is.
    pub(crate) fn into_entry(self) -> Entry {
        let [(original, _), (annotated, _), (thumb, _)] = self.images;
        Entry {
            id: self.id,
            owner: self.owner,
            created_at_ms: self.created_at_ms,
            category: self.category,
            faces: self.faces,
            masked: self.masked,
            unmasked: self.unmasked,
            source: self.source,
            file_name: self.file_name,
            result: self.result,
            original,
            annotated,
            thumb,
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn check_image(kind: Kind, bytes: &[u8], limits: &PrepareLimits) -> Result<ImageType> {
    let size = bytes.len() as u64;
    if size > limits.max_image_bytes {
        return Err(Error::ImageTooLarge {
            kind,
            size,
            limit: limits.max_image_bytes,
        });
    }
    if bytes.is_empty() {
        return Err(Error::UnsupportedImage {
            kind,
            reason: "empty".into(),
        });
    }
    ImageType::detect(bytes).ok_or_else(|| Error::UnsupportedImage {
        kind,
        reason: "not a JPEG, PNG, WebP, BMP, GIF or TIFF image".into(),
    })
}

fn meta(image_type: ImageType, bytes: &[u8]) -> ImageMeta {
    ImageMeta {
        image_type,
        bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

/// Decodes the annotated image (bounded) and encodes a JPEG that fits in `size`×`size`.
pub(crate) fn make_thumbnail(
    annotated: &[u8],
    image_type: ImageType,
    limits: &PrepareLimits,
) -> Result<Vec<u8>> {
    let decode_err = |source| Error::Decode {
        kind: Kind::Annotated,
        source,
    };
    let mut reader =
        ImageReader::with_format(IoCursor::new(annotated), image_type.to_image_format());
    let mut decode_limits = image::Limits::default();
    // A decompression bomb must not exhaust memory: bound the allocation by the pixel budget.
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(4));
    reader.limits(decode_limits);
    let image = reader.decode().map_err(decode_err)?;
    let size = limits.thumbnail_size;
    let image = if image.width() > size || image.height() > size {
        image.thumbnail(size, size)
    } else {
        image
    };
    let rgb = image.to_rgb8();
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, limits.thumbnail_quality)
        .encode_image(&rgb)
        .map_err(|source| Error::Encode { source })?;
    Ok(out)
}

/// Validates and completes a new entry. Pure CPU work; safe to run outside any lock.
pub(crate) fn prepare(entry: NewEntry, limits: &PrepareLimits, now_ms: i64) -> Result<Prepared> {
    let original_type = check_image(Kind::Original, &entry.original, limits)?;
    let annotated_type = check_image(Kind::Annotated, &entry.annotated, limits)?;
    if !matches!(annotated_type, ImageType::Png | ImageType::Jpeg) {
        return Err(Error::UnsupportedImage {
            kind: Kind::Annotated,
            reason: format!("must be PNG or JPEG, got {}", annotated_type.as_str()),
        });
    }
    if let Source::Url(url) = &entry.source
        && url.len() > MAX_URL_BYTES
    {
        return Err(Error::InvalidInput {
            field: "source url",
            reason: format!("{} bytes, more than {MAX_URL_BYTES}", url.len()),
        });
    }
    let file_name = entry.file_name.map(|name| {
        if name.chars().count() > MAX_FILE_NAME_CHARS {
            name.chars().take(MAX_FILE_NAME_CHARS).collect()
        } else {
            name
        }
    });
    let result_json =
        serde_json::to_string(&entry.result).map_err(|source| Error::Json { source })?;
    let thumb = make_thumbnail(&entry.annotated, annotated_type, limits)?;

    let images = [
        (meta(original_type, &entry.original), entry.original),
        (meta(annotated_type, &entry.annotated), entry.annotated),
        (meta(ImageType::Jpeg, &thumb), thumb),
    ];
    Ok(Prepared {
        id: EntryId::generate(),
        owner: entry.owner,
        created_at_ms: now_ms,
        category: entry.category,
        faces: entry.faces,
        masked: entry.masked,
        unmasked: entry.unmasked,
        source: entry.source,
        file_name,
        result_json,
        result: entry.result,
        images,
    })
}
