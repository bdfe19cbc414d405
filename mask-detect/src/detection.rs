//! The result types, and the one JSON schema they serialise to.

use serde::{Deserialize, Serialize};

/// Whether one face wears a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Label {
    /// The mask probability is at or above the configured threshold.
    Mask,
    /// The mask probability is below the threshold.
    NoMask,
}

impl Label {
    /// The schema's string for this label: `mask` or `no_mask`.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Mask => "mask",
            Label::NoMask => "no_mask",
        }
    }
}

/// Why a face's label should not be trusted blindly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UncertainReason {
    /// The face is narrower than `Config::uncertain_face_size`: too few pixels to judge.
    SmallFace,
    /// The mask probability is within `Config::uncertain_margin` of the threshold.
    NearThreshold,
}

pub use mask_category::{Category, UnknownCategory};

/// One face found in the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// `[x1, y1, x2, y2]` in pixels of the (EXIF-oriented) image; x right, y down.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Face detector confidence in [0, 1].
    pub score: f32,
    /// Five landmarks `[x, y]`: left eye, right eye, nose, left and right mouth corner.
    pub landmarks: [[f32; 2]; 5],
    /// Probability in [0, 1] that the face wears a mask.
    pub mask_probability: f32,
    /// `mask` when `mask_probability >= Config::mask_threshold`, else `no_mask`.
    pub label: Label,
    /// True when the label should not be trusted blindly; see `uncertain_reason`.
    pub uncertain: bool,
    /// Why the face is uncertain, or `null`.
    pub uncertain_reason: Option<UncertainReason>,
}

impl Face {
    /// Box width in pixels.
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
    /// Box height in pixels.
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
}

/// Everything found in one image. Serialises to the schema documented at the crate root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Width of the (oriented) image in pixels.
    pub width: u32,
    /// Height of the (oriented) image in pixels.
    pub height: u32,
    /// The faces, highest detector score first.
    pub faces: Vec<Face>,
    /// The image-level category.
    pub category: Category,
    /// `faces.len()`.
    pub num_faces: usize,
    /// Faces labelled `mask`.
    pub num_masked: usize,
    /// Faces labelled `no_mask`.
    pub num_unmasked: usize,
}

impl Detection {
    /// Build a detection from its faces, computing the counts and the category.
    pub fn new(width: u32, height: u32, faces: Vec<Face>) -> Detection {
        let num_masked = faces.iter().filter(|f| f.label == Label::Mask).count();
        let num_unmasked = faces.len() - num_masked;
        Detection {
            width,
            height,
            category: Category::from_counts(num_masked, num_unmasked),
            num_faces: faces.len(),
            num_masked,
            num_unmasked,
            faces,
        }
    }
}
