//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading models, decoding images or running inference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file could not be read from disk.
    #[error("cannot read model file {path}: {source}")]
    ModelRead {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A model file was read but is not a model this crate can run (corrupt or wrong file).
    #[error("invalid model {name}: {message}")]
    ModelInvalid {
        /// Which model: a path or a descriptive name.
        name: String,
        /// What tract reported.
        message: String,
    },
    /// The input holds no bytes at all.
    #[error("empty input: no image data")]
    EmptyInput,
    /// The bytes are not in an image format this crate decodes.
    #[error(
        "unsupported or unrecognised image format (supported: JPEG, PNG, WebP, BMP, GIF, TIFF)"
    )]
    UnsupportedFormat,
    /// The bytes look like an image but could not be decoded (corrupt or truncated).
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The image is larger than the configured limits; nothing large was allocated.
    #[error(
        "image too large: {width}x{height} pixels exceeds the limit of {max_pixels} pixels ({max_side} per side)"
    )]
    TooLarge {
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
        /// Configured limit on width x height.
        max_pixels: u64,
        /// Configured limit on either side.
        max_side: u32,
    },
    /// Decoding would need more memory than the configured allocation limit.
    #[error("image needs more memory to decode than the limit allows: {0}")]
    MemoryLimit(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// tract failed while running a model.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the error is about the caller's image (bad input), false when it is about the
    /// models, the configuration or the runtime (a server problem). Web frontends map the first to
    /// 4xx and the second to 5xx.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Error::EmptyInput
                | Error::UnsupportedFormat
                | Error::Decode(_)
                | Error::TooLarge { .. }
                | Error::MemoryLimit(_)
        )
    }
}
