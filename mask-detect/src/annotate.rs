//! Drawing the detection onto a copy of the image.

use font8x8::legacy::BASIC_LEGACY;
use image::{DynamicImage, Rgb, RgbImage};

use crate::{Detection, Label};

const GREEN: Rgb<u8> = Rgb([0, 200, 0]);
const RED: Rgb<u8> = Rgb([220, 0, 0]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// Draw every face of `detection` onto a copy of `image`: a green box for `mask`, red for
/// `no_mask`, and a label with the probability (`mask 97%`, `no mask 88%`, a `?` when uncertain).
///
/// Line width and text size grow with the image, so the marks stay readable on a 300 px thumbnail
/// and on a 4000 px phone photo alike.
pub fn annotate(image: &DynamicImage, detection: &Detection) -> RgbImage {
    let mut out = image.to_rgb8();
    let (w, h) = out.dimensions();
    let short = w.min(h).max(1);
    let thickness = (short / 250).clamp(1, 12);
    let text_scale = (short / 300).clamp(1, 8);
    for face in &detection.faces {
        let colour = match face.label {
            Label::Mask => GREEN,
            Label::NoMask => RED,
        };
        let [x1, y1, x2, y2] = face.bbox.map(|v| v.max(0.0).round() as i64);
        draw_rect(&mut out, x1, y1, x2, y2, thickness as i64, colour);
        let word = match face.label {
            Label::Mask => "mask",
            Label::NoMask => "no mask",
        };
        let p = match face.label {
            Label::Mask => face.mask_probability,
            Label::NoMask => 1.0 - face.mask_probability,
        };
        let text = format!(
            "{word} {:.0}%{}",
            p * 100.0,
            if face.uncertain { "?" } else { "" }
        );
        let th = 8 * text_scale as i64 + 2;
        let ty = if y1 - th >= 0 { y1 - th } else { y2 };
        draw_label(&mut out, x1, ty, &text, text_scale as i64, colour);
    }
    out
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u64) < img.width() as u64 && (y as u64) < img.height() as u64 {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn fill(img: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, c: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in y1.max(0)..y2.min(h) {
        for x in x1.max(0)..x2.min(w) {
            img.put_pixel(x as u32, y as u32, c);
        }
    }
}

fn draw_rect(img: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, t: i64, c: Rgb<u8>) {
    fill(img, x1, y1, x2, y1 + t, c);
    fill(img, x1, y2 - t, x2, y2, c);
    fill(img, x1, y1, x1 + t, y2, c);
    fill(img, x2 - t, y1, x2, y2, c);
}

/// White 8x8 bitmap text on a coloured band.
fn draw_label(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: i64, bg: Rgb<u8>) {
    let glyph_w = 8 * scale;
    let width = glyph_w * text.chars().count() as i64 + 2;
    fill(img, x, y, x + width, y + 8 * scale + 2, bg);
    for (i, ch) in text.chars().enumerate() {
        let glyph = BASIC_LEGACY
            .get(ch as usize)
            .copied()
            .unwrap_or(BASIC_LEGACY[b'?' as usize]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = x + 1 + i as i64 * glyph_w + col * scale;
                    let py = y + 1 + row as i64 * scale;
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(img, px + dx, py + dy, WHITE);
                        }
                    }
                }
            }
        }
    }
}
