//! Safe decoding of untrusted image bytes.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::{Config, Error, Result};

/// Formats this crate decodes; anything else is [`Error::UnsupportedFormat`].
const SUPPORTED: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Gif,
    ImageFormat::Tiff,
];

/// Decode image bytes the way a server should treat untrusted input.
///
/// The format is sniffed from the content (never from a file name); the declared dimensions are
/// checked against `config.max_pixels` / `config.max_side` before any pixel buffer is allocated, and
/// the decoder runs under `image::Limits` so a decompression bomb fails with [`Error::TooLarge`] or
/// [`Error::MemoryLimit`] instead of exhausting memory. EXIF orientation is applied, so the result is
/// upright the way a phone shows it. GIF gives its first frame.
pub fn decode_image(bytes: &[u8], config: &Config) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(Error::EmptyInput);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Decode(e.to_string()))?;
    match reader.format() {
        Some(f) if SUPPORTED.contains(&f) => {}
        _ => return Err(Error::UnsupportedFormat),
    }
    let mut reader = reader;
    // Width and height are checked by `check_dimensions` (so the error can name them); the
    // decoder's own limit guards every allocation it makes.
    let mut limits = Limits::default();
    limits.max_alloc = Some(config.max_decode_alloc);
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, config))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, config)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, config))?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Refuse images whose declared size exceeds the configured limits.
pub(crate) fn check_dimensions(width: u32, height: u32, config: &Config) -> Result<()> {
    let too_large = width > config.max_side
        || height > config.max_side
        || u64::from(width) * u64::from(height) > config.max_pixels;
    if too_large {
        return Err(Error::TooLarge {
            width,
            height,
            max_pixels: config.max_pixels,
            max_side: config.max_side,
        });
    }
    if width == 0 || height == 0 {
        return Err(Error::Decode(format!(
            "image has no pixels ({width}x{height})"
        )));
    }
    Ok(())
}

fn map_image_error(e: image::ImageError, config: &Config) -> Error {
    use image::error::{ImageError, LimitErrorKind};
    match e {
        ImageError::Limits(l) if l.kind() == LimitErrorKind::DimensionError => {
            Error::Decode(format!("{l} (limit {} per side)", config.max_side))
        }
        ImageError::Limits(l) => Error::MemoryLimit(l.to_string()),
        ImageError::Unsupported(u) => Error::Decode(u.to_string()),
        other => Error::Decode(other.to_string()),
    }
}
