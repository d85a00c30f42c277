//! Unbiasedness on the simulator's observation model: at fixed logits, the mean of each
//! debiased objective's loss over many simulated observation draws equals the
//! full-information loss (every true label known) within sampling error, and `naive`'s does
//! not. Propensities are the true ones here: the property under test is the estimator's,
//! not the propensity model's. The non-negative correction is off: it trades this exact
//! unbiasedness for boundedness on purpose.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use ndarray::Array2;
use tacit_rm::feedback::flip::FlipRates;
use tacit_rm::feedback::Examples;
use tacit_rm::math::sigmoid;
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind, Prepared};
use tacit_rm::rng::Rng;

const N: usize = 400;
const DRAWS: usize = 3000;

struct World {
    z: Array2<f32>,
    truth: Vec<f32>,
    propensity: Vec<f32>,
}

fn world() -> World {
    let mut r = Rng::new(42);
    let z = common::random_matrix(N, 1, 1) * 2.0;
    // Preference correlated with the logit, propensity with both (missing not at random
    // given z, as in the confounded protocol): a biased `naive` is then guaranteed.
    let truth: Vec<f32> = (0..N)
        .map(|i| r.bernoulli(sigmoid(z[[i, 0]] as f64)) as u8 as f32)
        .collect();
    let propensity: Vec<f32> = (0..N)
        .map(|i| (0.15 + 0.7 * sigmoid(-1.5 * z[[i, 0]] as f64 + r.normal())) as f32)
        .collect();
    World {
        z,
        truth,
        propensity,
    }
}

/// One observation draw: reactions with the true propensities, flips of revealed labels.
fn draw(w: &World, flip: FlipRates, all_revealed: bool, rng: &mut Rng) -> Examples {
    let emb = Array2::zeros((N, 1));
    let mut ex = Examples::fully_labelled(emb, w.truth.clone());
    for i in 0..N {
        let reacted = all_revealed || rng.bernoulli(w.propensity[i] as f64);
        let y = w.truth[i];
        let noisy = if rng.bernoulli(if y > 0.5 { flip.rho10 } else { flip.rho01 }) {
            1.0 - y
        } else {
            y
        };
        ex.feedback[i] = reacted as u8 as f32;
        ex.explicit[i] = if reacted { noisy } else { 0.0 };
        ex.observed[i] = ex.explicit[i];
        ex.propensity[i] = if all_revealed { 1.0 } else { w.propensity[i] };
    }
    ex
}

fn full_information_loss(w: &World) -> f64 {
    let ex = Examples::fully_labelled(Array2::zeros((N, 1)), w.truth.clone());
    let cfg = ObjectiveConfig {
        kind: ObjectiveKind::Naive,
        nonneg: false,
        ..ObjectiveConfig::default()
    };
    let rows: Vec<usize> = (0..N).collect();
    Prepared::new(&cfg, &ex, FlipRates::NONE, None)
        .unwrap()
        .batch_loss(&rows, &[], w.z.view(), None)
        .unwrap()
        .loss
}

/// Mean and standard error of an objective's loss over draws.
fn mean_over_draws(
    w: &World,
    kind: ObjectiveKind,
    flip: FlipRates,
    all_revealed: bool,
) -> (f64, f64) {
    let mut rng = Rng::new(7 + kind as u64);
    let cfg = ObjectiveConfig {
        kind,
        nonneg: false,
        flip: Some(flip),
        propensity_clip: 0.1,
        ..ObjectiveConfig::default()
    };
    let rows: Vec<usize> = (0..N).collect();
    // DR stays unbiased whatever the imputation; a deliberately poor one proves it.
    let imputed: Vec<f32> = (0..N).map(|i| if i % 2 == 0 { 0.8 } else { 0.1 }).collect();
    let losses: Vec<f64> = (0..DRAWS)
        .map(|_| {
            let ex = draw(w, flip, all_revealed, &mut rng);
            let p = Prepared::new(&cfg, &ex, flip, Some(&imputed)).unwrap();
            p.batch_loss(&rows, &[], w.z.view(), None).unwrap().loss
        })
        .collect();
    let m = losses.iter().sum::<f64>() / DRAWS as f64;
    let sd = (losses.iter().map(|l| (l - m).powi(2)).sum::<f64>() / (DRAWS - 1) as f64).sqrt();
    (m, sd / (DRAWS as f64).sqrt())
}

#[test]
fn debiased_objectives_are_unbiased_and_naive_is_not() {
    let w = world();
    let full = full_information_loss(&w);
    let noisy = FlipRates {
        rho10: 0.2,
        rho01: 0.1,
    };
    let cases = [
        (ObjectiveKind::Ips, FlipRates::NONE, false),
        (ObjectiveKind::NoiseIps, noisy, false),
        (ObjectiveKind::Dr, noisy, false),
        // `noise` corrects label noise only: unbiased where every label is revealed.
        (ObjectiveKind::Noise, noisy, true),
    ];
    for (kind, flip, all) in cases {
        let (m, se) = mean_over_draws(&w, kind, flip, all);
        assert!(
            (m - full).abs() < 4.0 * se + 1e-9,
            "{kind}: mean {m:.5} vs full-information {full:.5} (se {se:.5})"
        );
    }
    // SNIPS is a ratio estimator: consistent, with an O(1/n) bias, so compare with a
    // tolerance of the order of that bias as well as the sampling error.
    let (m, se) = mean_over_draws(&w, ObjectiveKind::Snips, FlipRates::NONE, false);
    assert!(
        (m - full).abs() < 4.0 * se + 5.0 / N as f64,
        "snips: mean {m:.5} vs {full:.5} (se {se:.5})"
    );

    let (m, se) = mean_over_draws(&w, ObjectiveKind::Naive, FlipRates::NONE, false);
    assert!(
        (m - full).abs() > 20.0 * se,
        "naive should be biased: mean {m:.5} vs {full:.5} (se {se:.5})"
    );
}

#[test]
fn beta_likelihood_term_is_unbiased() {
    // With λ = 0 the Beta objective is linear in the effective target, so IPS targets keep
    // it unbiased for the Beta likelihood of the true labels.
    let w = world();
    let mut r = Rng::new(3);
    let out = Array2::from_shape_fn((N, 2), |(i, j)| {
        if j == 0 {
            w.z[[i, 0]]
        } else {
            r.normal() as f32
        }
    });
    let cfg = |kind| ObjectiveConfig {
        kind,
        nonneg: false,
        beta: tacit_rm::objective::BetaParams {
            lambda: 0.0,
            ..Default::default()
        },
        ..ObjectiveConfig::new(kind)
    };
    let rows: Vec<usize> = (0..N).collect();
    let full_ex = Examples::fully_labelled(Array2::zeros((N, 1)), w.truth.clone());
    let full = Prepared::new(&cfg(ObjectiveKind::Beta), &full_ex, FlipRates::NONE, None)
        .unwrap()
        .batch_loss(&rows, &[], out.view(), None)
        .unwrap()
        .loss;
    let mut rng = Rng::new(9);
    let losses: Vec<f64> = (0..DRAWS)
        .map(|_| {
            let ex = draw(&w, FlipRates::NONE, false, &mut rng);
            Prepared::new(&cfg(ObjectiveKind::Beta), &ex, FlipRates::NONE, None)
                .unwrap()
                .batch_loss(&rows, &[], out.view(), None)
                .unwrap()
                .loss
        })
        .collect();
    let m = losses.iter().sum::<f64>() / DRAWS as f64;
    let se = (losses.iter().map(|l| (l - m).powi(2)).sum::<f64>() / (DRAWS - 1) as f64).sqrt()
        / (DRAWS as f64).sqrt();
    assert!(
        (m - full).abs() < 4.0 * se,
        "beta: {m:.5} vs {full:.5} (se {se:.5})"
    );
}
