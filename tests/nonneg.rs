//! The non-negative correction keeps the training loss bounded on an adversarial batch
//! where the uncorrected unbiased loss runs to −∞.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::ops::ControlFlow;

use tacit_rm::feedback::flip::FlipRates;
use tacit_rm::feedback::Examples;
use tacit_rm::head::{Head, HeadConfig};
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind};
use tacit_rm::trainer::{train, TrainConfig, TrainRequest};

/// A few positives observed with tiny propensities (targets 1/π̂ = 10) among silent rows:
/// `sp(z) − 10·z` decreases without bound in z, and an MLP can raise exactly those logits.
fn adversarial() -> Examples {
    let n = 64;
    let emb = common::random_matrix(n, 8, 5);
    let observed: Vec<f32> = (0..n).map(|i| (i % 4 == 0) as u8 as f32).collect();
    let mut ex = Examples::implicit_only(emb, observed);
    ex.feedback = vec![1.0; n];
    ex.explicit = ex.observed.clone();
    ex.propensity = (0..n).map(|i| if i % 4 == 0 { 0.1 } else { 0.9 }).collect();
    ex
}

fn losses(kind: ObjectiveKind, nonneg: bool) -> Vec<f64> {
    let ex = adversarial();
    let hc = HeadConfig {
        outputs: kind.head_outputs(),
        ..HeadConfig::new(8, &[32])
    };
    let head = Head::init(&hc, 1).unwrap();
    // A generous logit clip, so that only the correction can stop the descent.
    let obj = ObjectiveConfig {
        kind,
        nonneg,
        logit_clip: 100.0,
        flip: Some(FlipRates::NONE),
        ..ObjectiveConfig::default()
    };
    let cfg = TrainConfig {
        epochs: 150,
        batch_size: 64,
        ..TrainConfig::default()
    };
    let trained = train(&TrainRequest::new(&head, &obj, &ex, &cfg), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    trained.report.epochs.iter().map(|e| e.train_loss).collect()
}

#[test]
fn uncorrected_ips_runs_away_and_the_correction_bounds_it() {
    let raw = losses(ObjectiveKind::Ips, false);
    let last = *raw.last().unwrap();
    assert!(
        last < -20.0,
        "uncorrected IPS loss should run toward −∞, ended at {last}"
    );
    assert!(
        raw.windows(10)
            .last()
            .unwrap()
            .iter()
            .all(|&l| l <= raw[raw.len() - 10] + 1e-9),
        "and still be falling"
    );

    let corrected = losses(ObjectiveKind::Ips, true);
    assert!(
        corrected.iter().all(|&l| (0.0..10.0).contains(&l)),
        "corrected loss must stay in [0, 10): {corrected:?}"
    );
}

#[test]
fn correction_also_bounds_the_beta_objective() {
    let corrected = losses(ObjectiveKind::Beta, true);
    assert!(
        corrected
            .iter()
            .all(|&l| l.is_finite() && (0.0..10.0).contains(&l)),
        "{corrected:?}"
    );
    let raw = losses(ObjectiveKind::Beta, false);
    assert!(
        *raw.last().unwrap() < -5.0,
        "uncorrected beta should run away: {:?}",
        raw.last()
    );
}
