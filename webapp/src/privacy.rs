//! What a deployment keeps of each photo (`[history]` settings, shown to users on `/privacy`):
//! originals without their metadata (EXIF with GPS position, camera serial numbers, XMP, IPTC,
//! comments), and optionally annotated copies with the faces blurred.

use img_parts::ImageEXIF;
use img_parts::jpeg::markers;
use mask_detect::Detection;
use mask_detect::image::{DynamicImage, GenericImageView, ImageFormat, RgbImage, imageops};

/// The original's bytes without metadata. JPEG, PNG and WebP keep their encoded pixels (and
/// ICC colour profile) byte for byte, with only metadata segments dropped. A photo whose EXIF
/// turned it upright loses that instruction with the rest, so it is stored re-encoded from the
/// upright pixels (`oriented`, as decoded) instead. Other formats (BMP, GIF, TIFF) are stored
/// re-encoded as PNG, which carries no camera metadata.
pub fn strip_metadata(bytes: &[u8], oriented: &DynamicImage) -> Result<Vec<u8>, String> {
    let format = mask_detect::image::guess_format(bytes).map_err(|e| e.to_string())?;
    let upright =
        oriented.dimensions() == raw_dimensions(bytes).unwrap_or_default() && !has_rotation(bytes);
    match format {
        ImageFormat::Jpeg if upright => {
            let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(bytes.to_vec().into())
                .map_err(|e| e.to_string())?;
            jpeg.set_exif(None);
            // APP1 also carries XMP, APP13 IPTC, COM free text.
            jpeg.segments_mut()
                .retain(|s| !matches!(s.marker(), markers::APP1 | markers::APP13 | markers::COM));
            Ok(jpeg.encoder().bytes().to_vec())
        }
        ImageFormat::Png if upright => {
            let mut png = img_parts::png::Png::from_bytes(bytes.to_vec().into())
                .map_err(|e| e.to_string())?;
            png.set_exif(None);
            png.chunks_mut()
                .retain(|c| !matches!(&c.kind(), b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME"));
            Ok(png.encoder().bytes().to_vec())
        }
        ImageFormat::WebP if upright => {
            let mut webp = img_parts::webp::WebP::from_bytes(bytes.to_vec().into())
                .map_err(|e| e.to_string())?;
            webp.set_exif(None);
            webp.remove_chunks_by_id(*b"XMP ");
            Ok(webp.encoder().bytes().to_vec())
        }
        ImageFormat::Jpeg => reencode(oriented, ImageFormat::Jpeg),
        _ => reencode(oriented, ImageFormat::Png),
    }
}

fn reencode(image: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, String> {
    let mut out = std::io::Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => {
            let rgb = image.to_rgb8();
            mask_detect::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
                .encode_image(&rgb)
                .map_err(|e| e.to_string())?;
        }
        _ => image
            .write_to(&mut out, ImageFormat::Png)
            .map_err(|e| e.to_string())?,
    }
    Ok(out.into_inner())
}

/// The width and height the file declares, before any EXIF orientation.
fn raw_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    mask_detect::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// Whether the file's EXIF asks for a rotation or flip.
fn has_rotation(bytes: &[u8]) -> bool {
    use mask_detect::image::ImageDecoder;
    mask_detect::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_decoder().ok())
        .and_then(|mut d| d.orientation().ok())
        .is_some_and(|o| o != mask_detect::image::metadata::Orientation::NoTransforms)
}

/// Blur every detected face of `image` (for the annotated copy), strongly enough that it cannot
/// be recognised: the blur radius grows with the face.
pub fn blur_faces(image: &DynamicImage, detection: &Detection) -> DynamicImage {
    let mut out: RgbImage = image.to_rgb8();
    let (w, h) = out.dimensions();
    for face in &detection.faces {
        let [x1, y1, x2, y2] = face.bbox;
        let x = (x1.max(0.0) as u32).min(w);
        let y = (y1.max(0.0) as u32).min(h);
        let fw = ((x2.min(w as f32) - x as f32).max(0.0) as u32).min(w - x);
        let fh = ((y2.min(h as f32) - y as f32).max(0.0) as u32).min(h - y);
        if fw == 0 || fh == 0 {
            continue;
        }
        let region = imageops::crop_imm(&out, x, y, fw, fh).to_image();
        let sigma = (fw.max(fh) as f32 / 6.0).max(2.0);
        let blurred = imageops::fast_blur(&region, sigma);
        imageops::replace(&mut out, &blurred, i64::from(x), i64::from(y));
    }
    DynamicImage::ImageRgb8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> Vec<u8> {
        std::fs::read("../fixtures/photos/maksssksksss0.png").unwrap()
    }

    #[test]
    fn png_text_chunks_go_and_pixels_stay() {
        let original = photo();
        let decoded = mask_detect::image::load_from_memory(&original).unwrap();
        // Add a text chunk, as cameras and editors do.
        let mut png = img_parts::png::Png::from_bytes(original.clone().into()).unwrap();
        let chunk = img_parts::png::PngChunk::new(*b"tEXt", b"GPS\x0052.1,4.3".to_vec().into());
        let at = png.chunks().len() - 1;
        png.chunks_mut().insert(at, chunk);
        let tagged = png.encoder().bytes().to_vec();
        assert!(tagged.windows(8).any(|w| w == b"GPS\x0052.1"));
        let stripped = strip_metadata(&tagged, &decoded).unwrap();
        assert!(!stripped.windows(8).any(|w| w == b"GPS\x0052.1"));
        let back = mask_detect::image::load_from_memory(&stripped).unwrap();
        assert_eq!(back.to_rgb8(), decoded.to_rgb8());
    }

    #[test]
    fn jpeg_exif_goes() {
        let decoded = mask_detect::image::load_from_memory(&photo()).unwrap();
        let jpeg_bytes = reencode(&decoded, ImageFormat::Jpeg).unwrap();
        let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(jpeg_bytes.into()).unwrap();
        jpeg.set_exif(Some(b"Exif\0\0MM\0*GPSDATA".to_vec().into()));
        let tagged = jpeg.encoder().bytes().to_vec();
        assert!(tagged.windows(7).any(|w| w == b"GPSDATA"));
        let oriented = mask_detect::image::load_from_memory(&tagged).unwrap();
        let stripped = strip_metadata(&tagged, &oriented).unwrap();
        assert!(!stripped.windows(7).any(|w| w == b"GPSDATA"));
        assert!(mask_detect::image::load_from_memory(&stripped).is_ok());
    }

    #[test]
    fn blurred_faces_change_and_the_rest_does_not() {
        let image = mask_detect::image::load_from_memory(&photo()).unwrap();
        let detection: Detection = serde_json::from_value(serde_json::json!({
            "width": image.width(), "height": image.height(),
            "num_faces": 1, "num_masked": 1, "num_unmasked": 0, "category": "all_masked",
            "faces": [{"box": [10.0, 10.0, 60.0, 60.0], "score": 0.9, "label": "mask",
                       "landmarks": [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
                       "mask_probability": 0.9, "uncertain": false}]
        }))
        .unwrap();
        let blurred = blur_faces(&image, &detection).to_rgb8();
        let before = image.to_rgb8();
        let face_changed =
            (10..60).any(|y| (10..60).any(|x| before.get_pixel(x, y) != blurred.get_pixel(x, y)));
        assert!(face_changed);
        assert_eq!(before.get_pixel(100, 100), blurred.get_pixel(100, 100));
    }
}
