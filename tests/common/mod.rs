//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod reference;

use std::path::PathBuf;

use ndarray::Array2;
use tacit_rm::feedback::flip::FlipRates;
use tacit_rm::feedback::{Examples, Pair};
use tacit_rm::head::{Head, HeadConfig};
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind};
use tacit_rm::rng::Rng;

/// The real fixture shipped in `tests/data` (see its README for the source and licences).
/// Its absence is a failure, not a skip.
pub fn fixture() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/hh_harmless_dev512.safetensors");
    assert!(
        p.exists(),
        "fixture {} is missing from the checkout",
        p.display()
    );
    p
}

pub fn random_matrix(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut r = Rng::new(seed);
    Array2::from_shape_fn((n, d), |_| r.normal() as f32)
}

/// `a` within `rel` of `b` (relative to |b|, absolute below 1).
pub fn close(a: f32, b: f32, rel: f32) -> bool {
    (a - b).abs() <= rel * b.abs().max(1.0)
}

/// A head for `kind` and the objective with fixed flip rates (no auxiliary anchor fit).
pub fn setup(
    kind: ObjectiveKind,
    dim: usize,
    hidden: usize,
    rho01: f64,
    seed: u64,
) -> (Head, ObjectiveConfig) {
    let cfg = HeadConfig {
        outputs: kind.head_outputs(),
        ..HeadConfig::new(dim, &[hidden])
    };
    let objective = ObjectiveConfig {
        flip: Some(FlipRates { rho10: 0.1, rho01 }),
        ..ObjectiveConfig::new(kind)
    };
    (Head::init(&cfg, seed).unwrap(), objective)
}

/// A feedback set exercising every field an objective reads.
pub fn feedback(n: usize, dim: usize, seed: u64) -> Examples {
    let mut r = Rng::new(seed);
    let emb = random_matrix(n, dim, seed);
    let truth: Vec<f32> = emb
        .rows()
        .into_iter()
        .map(|x| (x[0] + 0.5 * x[1] > 0.0) as u8 as f32)
        .collect();
    let feedback: Vec<f32> = (0..n).map(|_| r.bernoulli(0.6) as u8 as f32).collect();
    let explicit: Vec<f32> = (0..n)
        .map(|i| {
            if feedback[i] > 0.0 {
                if r.bernoulli(0.1) {
                    1.0 - truth[i]
                } else {
                    truth[i]
                }
            } else {
                0.0
            }
        })
        .collect();
    let propensity: Vec<f32> = (0..n).map(|_| (0.2 + 0.7 * r.uniform()) as f32).collect();
    let exposure = random_matrix(n, 3, seed + 1);
    let pairs = (0..n / 2)
        .map(|g| {
            let (a, b) = (2 * g, 2 * g + 1);
            let mut p = if truth[a] >= truth[b] {
                Pair::new(a, b)
            } else {
                Pair::new(b, a)
            };
            if g % 3 == 0 {
                p.logp_new = Some([-(r.uniform() * 3.0) as f32, -(r.uniform() * 3.0) as f32]);
                p.logp_old = Some([-(r.uniform() * 3.0) as f32, -(r.uniform() * 3.0) as f32]);
            }
            p
        })
        .collect();
    Examples {
        emb,
        observed: explicit.clone(),
        feedback,
        explicit,
        propensity,
        exposure,
        pairs,
        offset: Vec::new(),
    }
}
