//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use ndarray::Array2;
use tacit_rm::rng::Rng;

/// The real fixture in `../shared/data` (never copied into the repo). Its absence is a
/// failure, not a skip: CI always has `../shared` beside the checkout.
pub fn fixture() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/hh_harmless_dev512.safetensors");
    assert!(
        p.exists(),
        "fixture {} is missing: the tests need ../shared beside the checkout",
        p.display()
    );
    p
}

pub fn random_matrix(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut r = Rng::new(seed);
    Array2::from_shape_fn((n, d), |_| r.normal() as f32)
}
