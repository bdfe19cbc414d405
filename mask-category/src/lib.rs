//! The image-level verdict of a mask detection: one type shared by the detector
//! (`mask-detect`, which decides it) and the upload history (`history-store`, which stores and
//! filters by it), so neither converts through strings.
//!
//! ```
//! use mask_category::Category;
//! let c = Category::from_counts(2, 1);
//! assert_eq!(c, Category::SomeMasked);
//! assert_eq!(c.as_str(), "some_masked");
//! assert_eq!("some_masked".parse::<Category>(), Ok(c));
//! assert_eq!(serde_json::to_string(&c).unwrap(), "\"some_masked\"");
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The image-level verdict: exactly the four categories of the original application.
///
/// Deliberately exhaustive: the history keeps a count per category and the web app a tab per
/// category, so a new one must make every `match` over it fail to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// No face was found.
    NoFace,
    /// Every face wears a mask.
    AllMasked,
    /// No face wears a mask.
    NoneMasked,
    /// Some faces wear a mask and some do not.
    SomeMasked,
}

/// A string that is not one of the four category names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {input:?} (expected no_face, all_masked, none_masked or some_masked)")]
pub struct UnknownCategory {
    /// The rejected input, cut to 64 characters.
    pub input: String,
}

impl Category {
    /// All categories, in the order the web app shows its history tabs.
    pub const ALL: [Category; 4] = [
        Category::NoFace,
        Category::AllMasked,
        Category::NoneMasked,
        Category::SomeMasked,
    ];

    /// The category for these counts of masked and unmasked faces.
    pub fn from_counts(masked: usize, unmasked: usize) -> Category {
        match (masked, unmasked) {
            (0, 0) => Category::NoFace,
            (_, 0) => Category::AllMasked,
            (0, _) => Category::NoneMasked,
            _ => Category::SomeMasked,
        }
    }

    /// The schema's string: `no_face`, `all_masked`, `none_masked` or `some_masked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::NoFace => "no_face",
            Category::AllMasked => "all_masked",
            Category::NoneMasked => "none_masked",
            Category::SomeMasked => "some_masked",
        }
    }

    /// The sentence the original application showed for this category.
    pub fn message(self) -> &'static str {
        match self {
            Category::NoFace => "no face detected",
            Category::AllMasked => "all wearing masks",
            Category::NoneMasked => "no one wears mask",
            Category::SomeMasked => "some faces wearing masks",
        }
    }
}

impl FromStr for Category {
    type Err = UnknownCategory;

    /// Errors with [`UnknownCategory`] for anything but the four snake_case names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCategory {
                input: s.chars().take(64).collect(),
            })
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
            let json = serde_json::to_string(&c).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        let long = "x".repeat(200);
        let e = long.parse::<Category>().unwrap_err();
        assert_eq!(e.input.len(), 64);
        assert!("All_Masked".parse::<Category>().is_err());
    }

    #[test]
    fn counts_give_the_four_categories() {
        assert_eq!(Category::from_counts(0, 0), Category::NoFace);
        assert_eq!(Category::from_counts(3, 0), Category::AllMasked);
        assert_eq!(Category::from_counts(0, 2), Category::NoneMasked);
        assert_eq!(Category::from_counts(1, 1), Category::SomeMasked);
    }
}
