//! Random and mutated bytes through the detector's entry point never panic; they give typed errors.

// Test helpers panic on broken fixtures: that is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use mask_detect::{Config, Detector};
use proptest::prelude::*;

fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR
        .get_or_init(|| Detector::from_dir("../models", Config::default()).expect("make models"))
}

fn seed_png() -> &'static [u8] {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| std::fs::read("../fixtures/photos/maksssksksss1.png").unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        // Random bytes are (almost surely) not an image: the answer is a typed input error,
        // and if they happen to decode, a well-formed detection.
        match detector().detect_bytes(&bytes) {
            Err(e) => prop_assert!(e.is_input_error(), "{e:?}"),
            Ok(d) => prop_assert_eq!(d.num_faces, d.faces.len()),
        }
    }

    #[test]
    fn mutated_png_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16),
                                cut in any::<usize>()) {
        let mut bytes = seed_png().to_vec();
        for (i, x) in flips {
            let n = bytes.len();
            bytes[i % n] ^= x;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Err(e) = detector().detect_bytes(&bytes) {
            prop_assert!(e.is_input_error(), "{e:?}");
        }
    }
}
