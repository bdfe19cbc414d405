//! Resizing RGB8 images for the two models, on `fast_image_resize`'s SIMD convolution kernels
//! (several times faster than `image`'s generic `imageops::resize`; PERFORMANCE.md).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::{Error, Result};

/// The region `[left, top, width, height]` of `image` resized to `width x height`, with a
/// triangle (bilinear) filter whose support widens when shrinking, as PIL's `BILINEAR` and
/// `image`'s `FilterType::Triangle`. [`Error::Inference`] when the region does not lie inside
/// the image or a size is zero.
pub(crate) fn resize_region(
    image: &RgbImage,
    [left, top, region_width, region_height]: [u32; 4],
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    let fail = |e: &dyn std::fmt::Display| Error::Inference(format!("resizing for a model: {e}"));
    let (w, h) = image.dimensions();
    if width == 0
        || height == 0
        || region_width == 0
        || region_height == 0
        || u64::from(left) + u64::from(region_width) > u64::from(w)
        || u64::from(top) + u64::from(region_height) > u64::from(h)
    {
        return Err(fail(&format!(
            "region {left},{top} {region_width}x{region_height} of a {w}x{h} image to {width}x{height}"
        )));
    }
    let src = ImageRef::new(w, h, image.as_raw(), PixelType::U8x3).map_err(|e| fail(&e))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(
            f64::from(left),
            f64::from(top),
            f64::from(region_width),
            f64::from(region_height),
        );
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| fail(&e))?;
    RgbImage::from_raw(width, height, dst.into_vec())
        .ok_or_else(|| fail(&"the resized buffer has the wrong size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth gradient resized, shrunk and cropped agrees with `image`'s triangle filter
    /// within rounding; a region outside the image and a zero size are errors, not panics.
    #[test]
    fn agrees_with_the_triangle_filter_and_rejects_bad_regions() {
        let image = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 4) as u8, ((x + y) % 256) as u8])
        });
        for (region, size) in [
            ([0, 0, 97, 61], (160, 100)),
            ([0, 0, 97, 61], (40, 25)),
            ([10, 5, 50, 40], (224, 224)),
        ] {
            let [l, t, rw, rh] = region;
            let crop = image::imageops::crop_imm(&image, l, t, rw, rh).to_image();
            let want = image::imageops::resize(
                &crop,
                size.0,
                size.1,
                image::imageops::FilterType::Triangle,
            );
            let got = resize_region(&image, region, size.0, size.1).unwrap();
            assert_eq!(got.dimensions(), want.dimensions());
            let worst = got
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(
                worst <= 2,
                "{region:?} to {size:?}: differs by up to {worst}"
            );
        }
        assert!(resize_region(&image, [90, 0, 10, 10], 8, 8).is_err());
        assert!(resize_region(&image, [0, 0, 97, 61], 0, 8).is_err());
        assert!(resize_region(&image, [0, 0, 0, 61], 8, 8).is_err());
        let empty = RgbImage::new(0, 0);
        assert!(crate::crop_face(&empty, &[0.0, 0.0, 4.0, 4.0], 0.2).is_err());
    }
}
